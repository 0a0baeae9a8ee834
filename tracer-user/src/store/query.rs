//! Reading the store: the rows behind `list`, `show`, `groups` and
//! `stats`. Every query filters or groups on an indexed column, so they
//! stay fast on a store at its default size limit (see the README for
//! timings on 100,000 crashes).

use std::collections::HashMap;

use rusqlite::{ToSql, params};
use serde::Serialize;

use super::{Store, StoreError};

#[derive(Clone, Debug, Default)]
pub struct CrashFilter {
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub class: Option<String>,
    pub exe: Option<String>,
    pub comm: Option<String>,
    pub unit: Option<String>,
    pub fingerprint: Option<String>,
    /// Only the newest N.
    pub limit: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CrashRow {
    pub id: i64,
    pub time_us: i64,
    pub host: String,
    pub pid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub unit: Option<String>,
    pub container_id: Option<String>,
    pub signal: Option<String>,
    pub class: String,
    pub fingerprint: String,
    pub summary: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupRow {
    pub fingerprint: String,
    pub class: String,
    pub top_frames: String,
    /// Crashes recorded in the store.
    pub count: u64,
    /// Crashes a rate limit counted instead of recording.
    pub suppressed: u64,
    pub executables: u64,
    pub hosts: u64,
    pub containers: u64,
    pub first_us: i64,
    pub last_us: i64,
    pub example_id: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub label: &'static str,
    pub total: u64,
    pub by_class: Vec<(String, u64)>,
    pub by_exe: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub crashes: u64,
    pub oldest_us: Option<i64>,
    pub newest_us: Option<i64>,
    pub windows: Vec<Window>,
    pub suppressed: u64,
    /// Persistent counters: `lost.<cause>`, `store_write_failures`, ...
    pub counters: Vec<(String, u64)>,
    /// The daemon's last recorded health.
    pub daemon: Vec<(String, String)>,
}

/// Rows per window in `stats`.
const STATS_TOP: i64 = 10;

impl Store {
    /// Crashes matching `f`, oldest first.
    pub fn list(&self, f: &CrashFilter) -> Result<Vec<CrashRow>, StoreError> {
        let mut clauses = Vec::new();
        let mut args: Vec<&dyn ToSql> = Vec::new();
        if let Some(v) = &f.since_us {
            clauses.push("time_us >= ?");
            args.push(v);
        }
        if let Some(v) = &f.until_us {
            clauses.push("time_us <= ?");
            args.push(v);
        }
        for (column, value) in [
            ("class = ?", &f.class),
            ("exe = ?", &f.exe),
            ("comm = ?", &f.comm),
            ("unit = ?", &f.unit),
            ("fingerprint = ?", &f.fingerprint),
        ] {
            if let Some(v) = value {
                clauses.push(column);
                args.push(v);
            }
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let columns = "id, time_us, host, pid, uid, comm, exe, unit, container_id, signal, \
                       class, fingerprint, summary";
        // The newest N, shown oldest first.
        let sql = match f.limit {
            Some(n) => format!(
                "SELECT * FROM (SELECT {columns} FROM crashes {filter}
                    ORDER BY time_us DESC, id DESC LIMIT {n}) ORDER BY time_us, id"
            ),
            None => format!("SELECT {columns} FROM crashes {filter} ORDER BY time_us, id"),
        };
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(args.as_slice(), |r| {
            Ok(CrashRow {
                id: r.get(0)?,
                time_us: r.get(1)?,
                host: r.get(2)?,
                pid: r.get(3)?,
                uid: r.get(4)?,
                comm: r.get(5)?,
                exe: r.get(6)?,
                unit: r.get(7)?,
                container_id: r.get(8)?,
                signal: r.get(9)?,
                class: r.get(10)?,
                fingerprint: r.get(11)?,
                summary: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored JSON of crash `id`, or of the newest crash for `latest`.
    pub fn report_json(&self, id: &str) -> Result<(i64, String), StoreError> {
        let row = if id == "latest" {
            self.conn.query_row(
                "SELECT r.id, r.json FROM reports r
                 WHERE r.id = (SELECT id FROM crashes ORDER BY time_us DESC, id DESC LIMIT 1)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        } else {
            let n: i64 = id.parse().map_err(|_| StoreError::NoSuchCrash(id.into()))?;
            self.conn.query_row(
                "SELECT id, json FROM reports WHERE id = ?1",
                params![n],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        };
        match row {
            Err(rusqlite::Error::QueryReturnedNoRows) => Err(StoreError::NoSuchCrash(id.into())),
            other => Ok(other?),
        }
    }

    /// Crashes grouped by fingerprint, most recently seen last.
    pub fn groups(&self) -> Result<Vec<GroupRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT g.fingerprint, c.class, c.top_frames, g.n, g.exes, g.hosts, g.containers,
                    g.first, g.last, g.example
             FROM (SELECT fingerprint, count(*) AS n, count(DISTINCT exe) AS exes,
                          count(DISTINCT host) AS hosts,
                          count(DISTINCT container_id) AS containers,
                          min(time_us) AS first, max(time_us) AS last, max(id) AS example
                   FROM crashes GROUP BY fingerprint) g
             JOIN crashes c ON c.id = g.example",
        )?;
        let mut groups: Vec<GroupRow> = stmt
            .query_map([], |r| {
                Ok(GroupRow {
                    fingerprint: r.get(0)?,
                    class: r.get(1)?,
                    top_frames: r.get(2)?,
                    count: r.get::<_, i64>(3)? as u64,
                    suppressed: 0,
                    executables: r.get::<_, i64>(4)? as u64,
                    hosts: r.get::<_, i64>(5)? as u64,
                    containers: r.get::<_, i64>(6)? as u64,
                    first_us: r.get(7)?,
                    last_us: r.get(8)?,
                    example_id: r.get(9)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut index: HashMap<String, usize> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.fingerprint.clone(), i))
            .collect();
        let mut stmt = self.conn.prepare(
            "SELECT fingerprint, sum(count), min(first_us), max(last_us)
             FROM suppressed GROUP BY fingerprint",
        )?;
        let suppressed = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in suppressed {
            let (fingerprint, n, first, last) = row?;
            let i = *index.entry(fingerprint.clone()).or_insert_with(|| {
                groups.push(GroupRow {
                    fingerprint,
                    class: "unknown".into(),
                    top_frames: String::new(),
                    count: 0,
                    suppressed: 0,
                    executables: 0,
                    hosts: 0,
                    containers: 0,
                    first_us: first,
                    last_us: last,
                    example_id: None,
                });
                groups.len() - 1
            });
            let g = &mut groups[i];
            g.suppressed += n;
            g.first_us = g.first_us.min(first);
            g.last_us = g.last_us.max(last);
        }
        groups.sort_by_key(|g| (g.last_us, g.example_id));
        Ok(groups)
    }

    /// Totals over the last hour, day and week, and the daemon's health.
    pub fn stats(&self, now_us: i64) -> Result<Stats, StoreError> {
        let (crashes, oldest_us, newest_us): (i64, Option<i64>, Option<i64>) =
            self.conn.query_row(
                "SELECT count(*), min(time_us), max(time_us) FROM crashes",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
        let mut windows = Vec::new();
        for (label, secs) in [("1h", 3600i64), ("24h", 86_400), ("7d", 7 * 86_400)] {
            let since = now_us - secs * 1_000_000;
            let total: i64 = self.conn.query_row(
                "SELECT count(*) FROM crashes WHERE time_us >= ?1",
                params![since],
                |r| r.get(0),
            )?;
            windows.push(Window {
                label,
                total: total as u64,
                by_class: self.top_by("class", since)?,
                by_exe: self.top_by("coalesce(exe, comm)", since)?,
            });
        }
        let suppressed: i64 =
            self.conn
                .query_row("SELECT coalesce(sum(count), 0) FROM suppressed", [], |r| {
                    r.get(0)
                })?;
        let mut stmt = self
            .conn
            .prepare("SELECT name, value FROM counters ORDER BY name")?;
        let counters = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<_, _>>()?;
        let mut stmt = self
            .conn
            .prepare("SELECT name, value FROM daemon_state ORDER BY name")?;
        let daemon = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(Stats {
            crashes: crashes as u64,
            oldest_us,
            newest_us,
            windows,
            suppressed: suppressed as u64,
            counters,
            daemon,
        })
    }

    fn top_by(&self, column: &str, since: i64) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {column} AS k, count(*) AS n FROM crashes WHERE time_us >= ?1
             GROUP BY k ORDER BY n DESC, k LIMIT {STATS_TOP}"
        ))?;
        let rows = stmt.query_map(params![since], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_else(|| "?".into()),
                r.get::<_, i64>(1)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
