//! The crash store on real SQLite files: crashes round-trip through the
//! queries, the file's mode and version, retention by count, age and
//! size, and a full disk.

use std::os::unix::fs::MetadataExt;

use super::*;
use crate::support::context::{Container, describe};

/// A report as `watch --json` writes it, trimmed.
pub(crate) const SAMPLE: &str = r#"{"schema":1,"type":"crash","time":"2026-11-22T02:14:58.297279Z","host":"vm","pid":2088,"tid":2088,"ppid":1,"uid":0,"comm":"nullc","exe":"/tmp/nullc","cmdline":["/tmp/nullc"],"runtime":"native","signal":{"number":11,"name":"SIGSEGV","code":1,"code_name":"SEGV_MAPERR","errno":0,"fault_address":"0x0","sender":null},"outcome":{"kind":"killed","exit_code":null,"signal":11,"core_dumped":false},"class":"null-pointer-dereference","summary":"NULL pointer dereference in crash at /tmp/null.c:2","evidence":["SIGSEGV (SEGV_MAPERR) at fault address 0x0"],"message":null,"tags":[],"frames":[{"address":"0x55ad4e9bf135","module":"/tmp/nullc","build_id":null,"offset":"0x1135","function":"crash","file":"/tmp/null.c","line":2,"column":null,"inlined":false},{"address":"0x55ad4e9bf14c","module":"/tmp/nullc","build_id":null,"offset":"0x114c","function":"main","file":"/tmp/null.c","line":3,"column":null,"inlined":false}],"frames_truncated":false,"unwind_error":null,"unsymbolized_frames":0,"diagnostics":[],"fingerprint":"609fbb2e173673fb"}"#;

pub(crate) fn sample(pid: u32, exe: &str, fingerprint: &str, time_us: i64) -> NewCrash {
    let mut report: CrashReport = serde_json::from_str(SAMPLE).unwrap();
    report.pid = pid;
    report.exe = Some(exe.into());
    report.fingerprint = fingerprint.into();
    NewCrash {
        time_us,
        report,
        context: describe(
            Some("b".repeat(32)),
            Some("/system.slice/demo.service".into()),
        ),
    }
}

fn temp_store(name: &str) -> (PathBuf, Store) {
    let dir = std::env::temp_dir().join(format!("crashtrace-store-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let path = dir.join("sub/crashes.db");
    let store = Store::open_rw(&path, None).unwrap();
    (path, store)
}

#[test]
fn crashes_round_trip_through_the_queries() {
    let (path, mut store) = temp_store("roundtrip");
    let now = timefmt::now_us();
    let mut c = sample(10, "/a", "f1", now - 10);
    c.context.container = Some(Container {
        id: "c".repeat(64),
        runtime: Some("docker"),
    });
    let ids = store
        .insert(&[
            c,
            sample(11, "/a", "f1", now - 5),
            sample(12, "/b", "f2", now),
        ])
        .unwrap();
    assert_eq!(ids.len(), 3);
    store
        .add_suppressed(&[("f1".into(), "/a".into(), 40, now, now)])
        .unwrap();
    store
        .add_counters(&[("lost.ringbuf_full_exit".into(), 2)])
        .unwrap();
    drop(store);

    let ro = Store::open_ro(&path).unwrap();
    let all = ro.list(&CrashFilter::default()).unwrap();
    assert_eq!(all.iter().map(|r| r.pid).collect::<Vec<_>>(), [10, 11, 12]);
    assert_eq!(all[0].unit.as_deref(), Some("demo.service"));
    let only_a = ro
        .list(&CrashFilter {
            exe: Some("/a".into()),
            limit: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(only_a.iter().map(|r| r.pid).collect::<Vec<_>>(), [11]);

    let groups = ro.groups().unwrap();
    let f1 = groups.iter().find(|g| g.fingerprint == "f1").unwrap();
    assert_eq!((f1.count, f1.suppressed, f1.executables), (2, 40, 1));
    assert_eq!((f1.containers, f1.example_id), (1, Some(ids[1])));
    assert_eq!(f1.top_frames, "crash < main");
    assert_eq!(groups.last().unwrap().fingerprint, "f2");

    let stats = ro.stats(now).unwrap();
    assert_eq!((stats.crashes, stats.suppressed), (3, 40));
    assert_eq!(stats.windows[0].by_exe[0], ("/a".into(), 2));
    assert_eq!(stats.counters, [("lost.ringbuf_full_exit".into(), 2)]);

    let (id, json) = ro.report_json("latest").unwrap();
    assert_eq!(id, ids[2]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["unit"], "demo.service");
    assert_eq!(value["pid"], 12);
    let back: CrashReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.class, "null-pointer-dereference");
    assert!(matches!(
        ro.report_json("99999"),
        Err(StoreError::NoSuchCrash(_))
    ));
    // A reader cannot write.
    assert!(ro.connection().execute("DELETE FROM crashes", []).is_err());
}

#[test]
fn the_file_is_private_and_versioned() {
    let (path, store) = temp_store("mode");
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    assert_eq!(store.version().unwrap(), SCHEMA_VERSION);
    let journal: String = store
        .connection()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    store
        .connection()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(store);
    assert!(matches!(
        Store::open_rw(&path, None),
        Err(StoreError::TooNew { .. })
    ));
    assert!(matches!(
        Store::open_ro(&path.with_extension("nope")),
        Err(StoreError::Missing(_))
    ));
}

#[test]
fn retention_keeps_the_newest_within_count_and_age() {
    let (_path, mut store) = temp_store("retention");
    let now = timefmt::now_us();
    let day = 86_400 * 1_000_000;
    let crashes: Vec<NewCrash> = (0..50)
        .map(|i| sample(i, "/a", "f", now - (50 - i as i64) * day / 10))
        .collect();
    store.insert(&crashes).unwrap();
    let limits = RetentionLimits {
        max_age_days: 3,
        max_count: 1000,
        max_size_bytes: 0,
    };
    assert_eq!(store.enforce_retention(&limits).unwrap(), 21);
    let limits = RetentionLimits {
        max_count: 10,
        ..limits
    };
    assert_eq!(store.enforce_retention(&limits).unwrap(), 19);
    let left = store.list(&CrashFilter::default()).unwrap();
    assert_eq!(left.first().unwrap().pid, 40);
    assert_eq!(left.len(), 10);
}

#[test]
fn size_limit_and_a_full_disk_never_corrupt() {
    let (_path, mut store) = temp_store("full");
    let now = timefmt::now_us();
    // Make room for a few hundred pages only: SQLite reports SQLITE_FULL,
    // as on a full file system.
    store
        .connection()
        .execute_batch("PRAGMA max_page_count = 120")
        .unwrap();
    let mut stored = 0;
    let mut full = false;
    for i in 0..2000 {
        match store.insert(&[sample(i, "/a", "f", now + i64::from(i))]) {
            Ok(_) => stored += 1,
            Err(StoreError::Full(_)) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(full && stored > 10, "stored {stored}");
    assert_eq!(store.integrity_check().unwrap(), "ok");
    assert_eq!(
        store.list(&CrashFilter::default()).unwrap().len(),
        stored as usize
    );
    let limits = RetentionLimits {
        max_age_days: 0,
        max_count: 0,
        max_size_bytes: 100 * 4096,
    };
    assert!(store.enforce_retention(&limits).unwrap() > 0);
    assert!(store.used_bytes().unwrap() <= 100 * 4096);
    store.insert(&[sample(1, "/a", "f", now)]).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
}
