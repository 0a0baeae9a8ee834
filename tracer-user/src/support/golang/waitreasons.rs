//! The Go runtime's wait reasons (`g.waitreason`), release by release.
//!
//! A goroutine's wait reason is a small integer whose meaning is the order
//! of a `const` block in `runtime/runtime2.go`, and releases insert and
//! reorder reasons (1.26 moved the blocking ones together). A stripped
//! binary keeps the strings, but nothing that finds them without
//! disassembly, so the tables here were taken from each release's source;
//! `tests::tables_match_the_sources` checks them against the source of
//! every toolchain the test suite installs. A release not listed gets
//! "wait reason N" rather than a name that may be wrong.

/// Go 1.19.
const GO_1_19: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "select",
    "select (no cases)",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "chan receive",
    "chan send",
    "finalizer wait",
    "force gc (idle)",
    "semacquire",
    "sleep",
    "sync.Cond.Wait",
    "timer goroutine (idle)",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "preempted",
    "debug call",
];

/// Go 1.21.
const GO_1_21: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "select",
    "select (no cases)",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "chan receive",
    "chan send",
    "finalizer wait",
    "force gc (idle)",
    "semacquire",
    "sleep",
    "sync.Cond.Wait",
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "GC worker (active)",
    "preempted",
    "debug call",
    "GC mark termination",
    "stopping the world",
];

/// Go 1.22.
const GO_1_22: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "select",
    "select (no cases)",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "chan receive",
    "chan send",
    "finalizer wait",
    "force gc (idle)",
    "semacquire",
    "sleep",
    "sync.Cond.Wait",
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "GC worker (active)",
    "preempted",
    "debug call",
    "GC mark termination",
    "stopping the world",
    "flushing proc caches",
    "trace goroutine status",
    "trace proc status",
    "page trace flush",
    "coroutine",
];

/// Go 1.23.
const GO_1_23: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "select",
    "select (no cases)",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "chan receive",
    "chan send",
    "finalizer wait",
    "force gc (idle)",
    "semacquire",
    "sleep",
    "sync.Cond.Wait",
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "GC worker (active)",
    "preempted",
    "debug call",
    "GC mark termination",
    "stopping the world",
    "flushing proc caches",
    "trace goroutine status",
    "trace proc status",
    "page trace flush",
    "coroutine",
    "GC weak to strong wait",
];

/// Go 1.24.
const GO_1_24: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "select",
    "select (no cases)",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "chan receive",
    "chan send",
    "finalizer wait",
    "force gc (idle)",
    "semacquire",
    "sleep",
    "sync.Cond.Wait",
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "sync.WaitGroup.Wait",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "GC worker (active)",
    "preempted",
    "debug call",
    "GC mark termination",
    "stopping the world",
    "flushing proc caches",
    "trace goroutine status",
    "trace proc status",
    "page trace flush",
    "coroutine",
    "GC weak to strong wait",
    "synctest.Run",
    "synctest.Wait",
    "chan receive (synctest)",
    "chan send (synctest)",
    "select (synctest)",
];

/// Go 1.25.
const GO_1_25: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "select",
    "select (no cases)",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "chan receive",
    "chan send",
    "finalizer wait",
    "force gc (idle)",
    "GOMAXPROCS updater (idle)",
    "semacquire",
    "sleep",
    "sync.Cond.Wait",
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "sync.WaitGroup.Wait",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "GC worker (active)",
    "preempted",
    "debug call",
    "GC mark termination",
    "stopping the world",
    "flushing proc caches",
    "trace goroutine status",
    "trace proc status",
    "page trace flush",
    "coroutine",
    "GC weak to strong wait",
    "synctest.Run",
    "synctest.Wait",
    "chan receive (durable)",
    "chan send (durable)",
    "select (durable)",
    "sync.WaitGroup.Wait (durable)",
    "cleanup wait",
];

/// Go 1.26 and 1.27 (1.26 reordered the blocking reasons).
const GO_1_26: &[&str] = &[
    "",
    "GC assist marking",
    "IO wait",
    "dumping heap",
    "garbage collection",
    "garbage collection scan",
    "panicwait",
    "GC assist wait",
    "GC sweep wait",
    "GC scavenge wait",
    "finalizer wait",
    "force gc (idle)",
    "GOMAXPROCS updater (idle)",
    "semacquire",
    "sleep",
    "chan receive (nil chan)",
    "chan send (nil chan)",
    "select (no cases)",
    "select",
    "chan receive",
    "chan send",
    "sync.Cond.Wait",
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "sync.WaitGroup.Wait",
    "trace reader (blocked)",
    "wait for GC cycle",
    "GC worker (idle)",
    "GC worker (active)",
    "preempted",
    "debug call",
    "GC mark termination",
    "stopping the world",
    "flushing proc caches",
    "trace goroutine status",
    "trace proc status",
    "page trace flush",
    "coroutine",
    "GC weak to strong wait",
    "synctest.Run",
    "synctest.Wait",
    "chan receive (durable)",
    "chan send (durable)",
    "select (durable)",
    "sync.WaitGroup.Wait (durable)",
    "cleanup wait",
];

/// The table of Go minor release `minor`.
fn table(minor: u32) -> Option<&'static [&'static str]> {
    Some(match minor {
        19 => GO_1_19,
        21 => GO_1_21,
        22 => GO_1_22,
        23 => GO_1_23,
        24 => GO_1_24,
        25 => GO_1_25,
        26 | 27 => GO_1_26,
        _ => return None,
    })
}

/// The name of wait reason `reason` in Go minor release `minor` (`None`
/// for reason 0, "not waiting").
pub fn name(minor: Option<u32>, reason: u8) -> Option<String> {
    if reason == 0 {
        return None;
    }
    let known = minor
        .and_then(table)
        .and_then(|t| t.get(usize::from(reason)));
    Some(match known {
        Some(s) if !s.is_empty() => (*s).to_owned(),
        _ => format!("wait reason {reason}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::golang::test_toolchains::toolchains;

    /// The `waitReason` constants' order and strings in a release's source.
    fn from_source(runtime2: &str) -> Vec<String> {
        let start = runtime2
            .find("\twaitReasonZero ")
            .expect("waitReasonZero in runtime2.go");
        let block = &runtime2[start..];
        let block = &block[..block.find("\n)").unwrap()];
        let names: Vec<&str> = block
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("waitReason"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let strings = &runtime2[runtime2.find("var waitReasonStrings").unwrap()..];
        let strings = &strings[..strings.find("\n}").unwrap()];
        names
            .iter()
            .map(|n| {
                strings
                    .lines()
                    .map(str::trim)
                    .find_map(|l| l.strip_prefix(&format!("{n}:")))
                    .map(|v| v.trim().trim_end_matches(',').trim_matches('"').to_owned())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn tables_match_the_sources() {
        for tc in toolchains() {
            let goroot = tc.go.parent().and_then(|bin| bin.parent()).unwrap();
            let path = goroot.join("src/runtime/runtime2.go");
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let minor: u32 = tc.version.split('.').nth(1).unwrap().parse().unwrap();
            let table = table(minor).unwrap_or_else(|| panic!("no table for Go {}", tc.version));
            assert_eq!(from_source(&source), table, "Go {}", tc.version);
        }
    }

    #[test]
    fn unknown_reasons_and_releases_are_numbered_not_guessed() {
        assert_eq!(name(Some(25), 0), None);
        assert_eq!(name(Some(25), 14).as_deref(), Some(GO_1_25[14]));
        assert_eq!(name(Some(26), 20).as_deref(), Some("chan send"));
        assert_eq!(name(Some(25), 200).as_deref(), Some("wait reason 200"));
        assert_eq!(name(Some(40), 3).as_deref(), Some("wait reason 3"));
        assert_eq!(name(None, 3).as_deref(), Some("wait reason 3"));
    }
}
