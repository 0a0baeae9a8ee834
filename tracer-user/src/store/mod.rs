//! The crash store: one SQLite file (bundled SQLite, no system library)
//! that the daemon writes and the query commands read.
//!
//! Each crash keeps its full JSON report next to the columns queries
//! filter and group on. Writes go in one transaction per batch of crashes
//! in WAL mode with `synchronous=FULL`, so a crash is *acknowledged* only
//! once its transaction is durable: killing the daemon, or the machine,
//! loses nothing acknowledged and cannot corrupt the file. When the disk
//! is full SQLite rolls the transaction back; the daemon logs it and
//! counts the crash as lost.
//!
//! The schema is versioned with `PRAGMA user_version` and upgraded by the
//! ordered [`MIGRATIONS`] on open; a store newer than this binary is
//! refused rather than misread.

pub mod leaks;
mod query;
mod retention;
pub mod timefmt;

use std::{
    fs,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rusqlite::{Connection, OpenFlags, params};

pub use query::{CrashFilter, CrashRow, GroupRow, Stats};
pub use retention::RetentionLimits;

use crate::{
    report::CrashReport,
    support::{context::Context, frame::on_abort_path},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no crash store at {} (is the daemon running? --store names another file)", .0.display())]
    Missing(PathBuf),
    #[error(
        "cannot read the crash store {}: permission denied (run as root, or set store.group in the daemon's config to a group you are in)",
        .0.display()
    )]
    Denied(PathBuf),
    // The I/O error is part of the message, not a `source`, so that
    // anyhow's chain does not print it twice.
    #[error("cannot prepare the store's directory {}: {error}", path.display())]
    Directory {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot set the store's owner or mode on {}: {error}", path.display())]
    Permissions {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("unknown group {0:?} in store.group")]
    UnknownGroup(String),
    #[error(
        "the crash store {} has schema version {found}, newer than this crashtrace (version {known})",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("the store is full (disk or size limit): {0}")]
    Full(rusqlite::Error),
    #[error("crash store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("no crash with id {0} in the store")]
    NoSuchCrash(String),
    #[error("no leak with id {0} in the store")]
    NoSuchLeak(String),
}

/// Schema migrations; migration `i` upgrades version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE crashes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time_us INTEGER NOT NULL,
        boot_id TEXT,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        exe TEXT,
        comm TEXT NOT NULL,
        uid INTEGER NOT NULL,
        unit TEXT,
        cgroup TEXT,
        container_id TEXT,
        container_runtime TEXT,
        class TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        signal TEXT,
        outcome TEXT NOT NULL,
        summary TEXT NOT NULL,
        top_frames TEXT NOT NULL
    );
    -- The full reports, apart: a few KiB each, they would otherwise make
    -- every scan of the columns above read the whole store.
    CREATE TABLE reports (id INTEGER PRIMARY KEY, json TEXT NOT NULL);
    CREATE TRIGGER crashes_delete AFTER DELETE ON crashes
        BEGIN DELETE FROM reports WHERE id = old.id; END;
    -- Covering indexes: `stats` reads only the first, `groups` only the
    -- second, never the table.
    CREATE INDEX crashes_time ON crashes(time_us, class, exe, comm);
    CREATE INDEX crashes_fingerprint ON crashes(fingerprint, time_us, exe, host, container_id);
    CREATE INDEX crashes_exe ON crashes(exe, time_us);
    CREATE INDEX crashes_unit ON crashes(unit, time_us);
    CREATE INDEX crashes_class ON crashes(class, time_us);
    CREATE INDEX crashes_comm ON crashes(comm, time_us);
    -- Crashes past a rate limit: counted in their group, not recorded.
    CREATE TABLE suppressed (
        fingerprint TEXT NOT NULL,
        rate_key TEXT NOT NULL,
        count INTEGER NOT NULL,
        first_us INTEGER NOT NULL,
        last_us INTEGER NOT NULL,
        PRIMARY KEY (fingerprint, rate_key)
    );
    -- Totals that outlive a daemon run: lost events by cause, ...
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    -- The daemon's health as of its last update (start time, probes, ...).
    CREATE TABLE daemon_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 1 -> 2: goroutine leaks (`{"type": "leak"}` records), see `leaks`.
    "CREATE TABLE leaks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time_us INTEGER NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        exe TEXT NOT NULL,
        comm TEXT NOT NULL,
        unit TEXT,
        live INTEGER NOT NULL,
        per_minute REAL NOT NULL,
        summary TEXT NOT NULL,
        json TEXT NOT NULL
    );
    CREATE INDEX leaks_time ON leaks(time_us);",
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How many frames a group shows.
const TOP_FRAMES: usize = 3;

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// One crash ready to be written.
pub struct NewCrash {
    pub time_us: i64,
    pub report: CrashReport,
    pub context: Context,
}

impl NewCrash {
    /// The JSON kept in the store and sent to sinks: the report with the
    /// daemon's context as extra top-level fields.
    pub fn json(&self) -> String {
        let mut value = serde_json::to_value(&self.report).expect("reports serialize");
        if let (Some(map), Ok(serde_json::Value::Object(extra))) =
            (value.as_object_mut(), serde_json::to_value(&self.context))
        {
            map.extend(extra);
        }
        value.to_string()
    }
}

impl Store {
    /// Opens (creating if needed) the store for writing, as the daemon
    /// does: owner-only (0600), or 0640 with `group` as its group.
    pub fn open_rw(path: &Path, group: Option<&str>) -> Result<Self, StoreError> {
        let gid = group.map(group_id).transpose()?;
        let mode = if gid.is_some() { 0o640 } else { 0o600 };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let made = !dir.exists();
            fs::create_dir_all(dir).map_err(|error| StoreError::Directory {
                path: dir.into(),
                error,
            })?;
            if made {
                let dir_mode = if gid.is_some() { 0o750 } else { 0o700 };
                set_owner_mode(dir, gid, dir_mode)?;
            } else if gid.is_some() {
                // The group must be able to reach the file, also in a
                // directory systemd (StateDirectory=) recreates as 0700.
                let mode = fs::metadata(dir)
                    .map_err(|error| StoreError::Directory {
                        path: dir.into(),
                        error,
                    })?
                    .permissions()
                    .mode();
                set_owner_mode(dir, gid, (mode & 0o7777) | 0o050)?;
            }
        }
        // Create the file with its final mode before SQLite opens it: the
        // WAL and shared-memory files inherit it.
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(mode)
            .open(path)
            .map_err(|error| StoreError::Permissions {
                path: path.into(),
                error,
            })?;
        set_owner_mode(path, gid, mode)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;",
        )?;
        persist_wal(&conn);
        let mut store = Self {
            conn,
            path: path.into(),
        };
        store.migrate()?;
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", path.display()));
            if side.exists() {
                set_owner_mode(&side, gid, mode)?;
            }
        }
        Ok(store)
    }

    /// Opens an existing store read-only, as the query commands do (no
    /// root needed when the store is readable).
    pub fn open_ro(path: &Path) -> Result<Self, StoreError> {
        match fs::File::open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(path.into()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(StoreError::Denied(path.into()));
            }
            _ => {}
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Queries read many pages once: map them rather than copy each
        // through a read(2).
        conn.execute_batch("PRAGMA mmap_size = 268435456")?;
        let store = Self {
            conn,
            path: path.into(),
        };
        let version = store.version().map_err(|e| match e {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::CannotOpen
                    || f.code == rusqlite::ErrorCode::ReadOnly =>
            {
                StoreError::Denied(path.into())
            }
            other => other,
        })?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.into(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version = self.version()?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Writes crashes in one transaction and returns their ids; when this
    /// returns, they are durable.
    pub fn insert(&mut self, crashes: &[NewCrash]) -> Result<Vec<i64>, StoreError> {
        let tx = self.conn.transaction().map_err(full_or)?;
        let mut ids = Vec::with_capacity(crashes.len());
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO crashes (time_us, boot_id, host, pid, exe, comm, uid, unit,
                    cgroup, container_id, container_runtime, class, fingerprint, signal,
                    outcome, summary, top_frames)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                    ?15, ?16, ?17)",
            )?;
            let mut report_stmt =
                tx.prepare_cached("INSERT INTO reports (id, json) VALUES (?1, ?2)")?;
            for c in crashes {
                let r = &c.report;
                let outcome = serde_json::to_value(r.outcome.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                stmt.execute(params![
                    c.time_us,
                    c.context.boot_id,
                    r.host,
                    r.pid,
                    r.exe,
                    r.comm,
                    r.uid,
                    c.context.unit,
                    c.context.cgroup,
                    c.context.container.as_ref().map(|c| &c.id),
                    c.context.container.as_ref().and_then(|c| c.runtime),
                    r.class,
                    r.fingerprint,
                    r.signal.as_ref().map(|s| &s.name),
                    outcome,
                    r.summary,
                    top_frames(r),
                ])
                .map_err(full_or)?;
                let id = tx.last_insert_rowid();
                report_stmt
                    .execute(params![id, c.json()])
                    .map_err(full_or)?;
                ids.push(id);
            }
        }
        tx.commit().map_err(full_or)?;
        Ok(ids)
    }

    /// Counts crashes that a rate limit kept out of the store, in the group
    /// they were attributed to.
    pub fn add_suppressed(
        &mut self,
        counts: &[(String, String, u64, i64, i64)],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(full_or)?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO suppressed (fingerprint, rate_key, count, first_us, last_us)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (fingerprint, rate_key) DO UPDATE SET
                    count = count + excluded.count, last_us = max(last_us, excluded.last_us)",
            )?;
            for (fingerprint, key, n, first, last) in counts {
                stmt.execute(params![fingerprint, key, *n as i64, first, last])
                    .map_err(full_or)?;
            }
        }
        tx.commit().map_err(full_or)
    }

    /// Adds to persistent counters (lost events by cause, ...).
    pub fn add_counters(&mut self, deltas: &[(String, u64)]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(full_or)?;
        for (name, delta) in deltas {
            tx.execute(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                params![name, *delta as i64],
            )
            .map_err(full_or)?;
        }
        tx.commit().map_err(full_or)
    }

    /// Replaces the daemon's recorded health.
    pub fn set_state(&mut self, entries: &[(&str, String)]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(full_or)?;
        for (name, value) in entries {
            tx.execute(
                "INSERT OR REPLACE INTO daemon_state (name, value) VALUES (?1, ?2)",
                params![name, value],
            )
            .map_err(full_or)?;
        }
        tx.commit().map_err(full_or)
    }

    /// Bytes on disk: the database and its write-ahead log.
    pub fn size_bytes(&self) -> u64 {
        ["", "-wal"]
            .iter()
            .filter_map(|s| fs::metadata(format!("{}{s}", self.path.display())).ok())
            .map(|m| m.len())
            .sum()
    }

    /// `PRAGMA integrity_check`: `ok`, or SQLite's list of problems.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    #[cfg(test)]
    fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// The top frames of a report as groups show them: function names (or
/// module file names), innermost first, joined by ` < `.
fn top_frames(r: &CrashReport) -> String {
    let names: Vec<String> = r
        .frames
        .iter()
        .filter(|f| !f.inlined || f.function.is_some())
        .map(|f| match &f.function {
            Some(name) => name.clone(),
            None => f
                .module
                .as_deref()
                .and_then(|m| Path::new(m).file_name())
                .map(|n| format!("?? ({})", n.to_string_lossy()))
                .unwrap_or_else(|| "??".into()),
        })
        .collect();
    // libc's abort machinery is not where the problem is.
    let start = names.iter().position(|n| !on_abort_path(n)).unwrap_or(0);
    names[start..]
        .iter()
        .take(TOP_FRAMES)
        .cloned()
        .collect::<Vec<_>>()
        .join(" < ")
}

pub(crate) fn full_or(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            StoreError::Full(e)
        }
        _ => StoreError::Sqlite(e),
    }
}

/// Keeps the WAL and shared-memory files after the daemon closes the
/// store, so a reader without write access to the directory can still
/// open it (it cannot create them).
fn persist_wal(conn: &Connection) {
    let mut on: libc::c_int = 1;
    // SAFETY: the handle is open for the duration of the call, "main" is a
    // NUL-terminated schema name, and PERSIST_WAL takes a pointer to int.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut libc::c_int).cast(),
        );
    }
}

fn group_id(name: &str) -> Result<u32, StoreError> {
    let text = fs::read_to_string("/etc/group").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(n, _)| *n == name)
        .and_then(|(_, gid)| gid.parse().ok())
        .or_else(|| name.parse().ok())
        .ok_or_else(|| StoreError::UnknownGroup(name.into()))
}

fn set_owner_mode(path: &Path, gid: Option<u32>, mode: u32) -> Result<(), StoreError> {
    let err = |error| StoreError::Permissions {
        path: path.into(),
        error,
    };
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(err)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)
}

#[cfg(test)]
mod tests;
