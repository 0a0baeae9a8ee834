//! Goroutine leaks in the store: one row per `{"type": "leak"}` record the
//! daemon wrote, with the record itself, so that `list --type leak` and
//! `show --type leak` read them as they read crashes. The store's age limit
//! applies to them as to crashes; leaks are rare (one per process that
//! starts leaking), so they take no share of the count and size limits.

use rusqlite::params;
use serde::Serialize;

use super::{Store, StoreError, full_or};

/// A leak ready to be written.
pub struct NewLeak {
    pub time_us: i64,
    pub host: String,
    pub pid: u32,
    pub exe: String,
    pub comm: String,
    pub unit: Option<String>,
    pub live: u64,
    pub per_minute: f64,
    pub summary: String,
    pub json: String,
}

/// A stored leak, as `list --type leak` shows it.
#[derive(Debug, Serialize)]
pub struct LeakRow {
    pub id: i64,
    pub time_us: i64,
    pub host: String,
    pub pid: u32,
    pub exe: String,
    pub comm: String,
    pub unit: Option<String>,
    pub live: u64,
    pub per_minute: f64,
    pub summary: String,
}

impl Store {
    pub fn insert_leak(&mut self, l: &NewLeak) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO leaks (time_us, host, pid, exe, comm, unit, live, per_minute,
                    summary, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    l.time_us,
                    l.host,
                    l.pid,
                    l.exe,
                    l.comm,
                    l.unit,
                    l.live as i64,
                    l.per_minute,
                    l.summary,
                    l.json
                ],
            )
            .map_err(full_or)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The newest `limit` leaks (all without one), oldest first.
    pub fn leaks(&self, limit: Option<u64>) -> Result<Vec<LeakRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, time_us, host, pid, exe, comm, unit, live, per_minute, summary
             FROM (SELECT * FROM leaks ORDER BY id DESC LIMIT ?1) ORDER BY id",
        )?;
        let limit = limit.map_or(-1, |n| n.min(i64::MAX as u64) as i64);
        let rows = stmt.query_map([limit], |r| {
            Ok(LeakRow {
                id: r.get(0)?,
                time_us: r.get(1)?,
                host: r.get(2)?,
                pid: r.get(3)?,
                exe: r.get(4)?,
                comm: r.get(5)?,
                unit: r.get(6)?,
                live: r.get::<_, i64>(7)? as u64,
                per_minute: r.get(8)?,
                summary: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored record of leak `id` (a number, or `latest`).
    pub fn leak_json(&self, id: &str) -> Result<(i64, String), StoreError> {
        let row = if id == "latest" {
            self.conn.query_row(
                "SELECT id, json FROM leaks ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        } else {
            let n: i64 = id
                .parse()
                .map_err(|_| StoreError::NoSuchLeak(id.to_string()))?;
            self.conn
                .query_row("SELECT id, json FROM leaks WHERE id = ?1", [n], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
        };
        row.map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NoSuchLeak(id.to_string()),
            e => StoreError::Sqlite(e),
        })
    }
}
