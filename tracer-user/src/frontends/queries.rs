//! `list`, `show`, `groups`, `stats` and `import`: the crash store from
//! the command line, in the habits of `coredumpctl` (a compact table,
//! newest last; `show latest`).
//!
//! The reading commands open the store read-only, so they need no root
//! when the store is group-readable, and say clearly when it is not.

use std::{
    fmt::Write as _,
    io::{self, BufRead, BufReader, IsTerminal, Write},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Deserialize;

use crate::{
    frontends::{
        cli::{GroupsArgs, ImportArgs, ListArgs, ShowArgs, StatsArgs, StoreArgs},
        daemon::config::{Config, DEFAULT_CONFIG},
        goroutine_top,
    },
    report::{CrashReport, render_text},
    store::{CrashFilter, NewCrash, Store, timefmt},
    support::context::{self, Context},
};

/// Reports written per transaction by `import`.
const IMPORT_BATCH: usize = 1000;

fn store_path(args: &StoreArgs) -> PathBuf {
    match &args.store {
        Some(p) => p.clone(),
        None => match Config::load(Path::new(DEFAULT_CONFIG), false) {
            Ok(config) => config.store_path(),
            Err(e) => {
                eprintln!("crashtrace: warning: {e}; using the default store path");
                Config::default().store_path()
            }
        },
    }
}

fn open(args: &StoreArgs) -> anyhow::Result<Store> {
    Ok(Store::open_ro(&store_path(args))?)
}

/// Writes to stdout, treating a closed pipe (`| head`) as the end.
fn emit(text: &str) -> anyhow::Result<()> {
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub fn list(args: ListArgs) -> anyhow::Result<u8> {
    if args.kind == "leak" {
        return list_leaks(&args);
    }
    let now = timefmt::now_us();
    let when = |s: &Option<String>, flag: &str| -> anyhow::Result<Option<i64>> {
        s.as_deref()
            .map(|t| timefmt::parse_when(t, now).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
            .transpose()
    };
    let filter = CrashFilter {
        since_us: when(&args.since, "--since")?,
        until_us: when(&args.until, "--until")?,
        class: args.class,
        exe: args.exe,
        comm: args.comm,
        unit: args.unit,
        fingerprint: args.fingerprint,
        limit: args.limit,
    };
    let rows = open(&args.store)?.list(&filter)?;
    let mut out = String::new();
    if args.json {
        for r in &rows {
            let mut v = serde_json::to_value(r)?;
            v["time"] = timefmt::format_seconds(r.time_us).into();
            let _ = writeln!(out, "{v}");
        }
        return emit(&out).map(|_| 0);
    }
    let _ = writeln!(
        out,
        "{:>7} {:<20} {:>7} {:>5} {:<7} {:<27} {:<20} EXE",
        "ID", "TIME", "PID", "UID", "SIG", "CLASS", "UNIT"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:>7} {:<20} {:>7} {:>5} {:<7} {:<27} {:<20} {}",
            r.id,
            timefmt::format_seconds(r.time_us),
            r.pid,
            r.uid,
            r.signal.as_deref().unwrap_or("-"),
            r.class,
            r.unit.as_deref().unwrap_or("-"),
            r.exe.as_deref().unwrap_or(&r.comm),
        );
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no crashes)");
    }
    emit(&out).map(|_| 0)
}

/// The daemon's context fields, as they appear in a stored report.
#[derive(Default, Deserialize)]
struct StoredContext {
    boot_id: Option<String>,
    cgroup: Option<String>,
    cgroup_source: Option<String>,
}

impl StoredContext {
    fn context(self) -> Context {
        let mut ctx = context::describe(self.boot_id, self.cgroup);
        if self.cgroup_source.as_deref() == Some("parent") {
            ctx.cgroup_source = Some("parent");
        }
        ctx
    }
}

pub fn show(args: ShowArgs) -> anyhow::Result<u8> {
    let store = open(&args.store)?;
    if args.kind == "leak" {
        let (id, json) = store.leak_json(&args.id)?;
        if args.json {
            return emit(&(json + "\n")).map(|_| 0);
        }
        let leak: goroutine_top::Leak = serde_json::from_str(&json)
            .with_context(|| format!("leak {id}: the stored record cannot be read"))?;
        let mut text = goroutine_top::text(&leak);
        let _ = writeln!(text, "  {:<9}{id}", "id");
        let _ = writeln!(text, "  {:<9}{}", "time", leak.time);
        return emit(&text).map(|_| 0);
    }
    let (id, json) = store.report_json(&args.id)?;
    if args.json {
        return emit(&(json + "\n")).map(|_| 0);
    }
    let report: CrashReport = serde_json::from_str(&json)
        .with_context(|| format!("crash {id}: the stored report cannot be read"))?;
    let context: StoredContext = serde_json::from_str(&json).unwrap_or_default();
    let ctx = context.context();
    let color = match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut text = render_text(&report, color);
    text.push_str(&context_lines(id, &ctx));
    emit(&text).map(|_| 0)
}

/// `list --type leak`.
fn list_leaks(args: &ListArgs) -> anyhow::Result<u8> {
    let rows = open(&args.store)?.leaks(args.limit)?;
    let mut out = String::new();
    if args.json {
        for r in &rows {
            let mut v = serde_json::to_value(r)?;
            v["time"] = timefmt::format_seconds(r.time_us).into();
            let _ = writeln!(out, "{v}");
        }
        return emit(&out).map(|_| 0);
    }
    let _ = writeln!(
        out,
        "{:>7} {:<20} {:>7} {:>9} {:<20} EXE",
        "ID", "TIME", "PID", "LIVE", "UNIT"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:>7} {:<20} {:>7} {:>9} {:<20} {}\n        {}",
            r.id,
            timefmt::format_seconds(r.time_us),
            r.pid,
            r.live,
            r.unit.as_deref().unwrap_or("-"),
            r.exe,
            r.summary
        );
    }
    emit(&out).map(|_| 0)
}

fn context_lines(id: i64, ctx: &Context) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  {:<9}{id}", "id");
    if let Some(u) = &ctx.unit {
        let _ = writeln!(out, "  {:<9}{u}", "unit");
    }
    if let Some(c) = &ctx.container {
        let _ = writeln!(
            out,
            "  {:<9}{} ({})",
            "container",
            c.id,
            c.runtime.unwrap_or("runtime unknown")
        );
    }
    if let Some(c) = &ctx.cgroup {
        let from = if ctx.cgroup_source == Some("parent") {
            " (the parent's)"
        } else {
            ""
        };
        let _ = writeln!(out, "  {:<9}{c}{from}", "cgroup");
    }
    if let Some(b) = &ctx.boot_id {
        let _ = writeln!(out, "  {:<9}{b}", "boot");
    }
    out
}

pub fn groups(args: GroupsArgs) -> anyhow::Result<u8> {
    let groups = open(&args.store)?.groups()?;
    let mut out = String::new();
    if args.json {
        for g in &groups {
            let mut v = serde_json::to_value(g)?;
            v["first_seen"] = timefmt::format_seconds(g.first_us).into();
            v["last_seen"] = timefmt::format_seconds(g.last_us).into();
            let _ = writeln!(out, "{v}");
        }
        return emit(&out).map(|_| 0);
    }
    let _ = writeln!(
        out,
        "{:<16} {:>6} {:>6} {:>4} {:>5} {:>4} {:<20} {:<20} {:>7} CLASS: TOP FRAMES",
        "FINGERPRINT", "COUNT", "SUPPR", "EXES", "HOSTS", "CTRS", "FIRST", "LAST", "EXAMPLE"
    );
    for g in &groups {
        let _ = writeln!(
            out,
            "{:<16} {:>6} {:>6} {:>4} {:>5} {:>4} {:<20} {:<20} {:>7} {}: {}",
            g.fingerprint,
            g.count,
            g.suppressed,
            g.executables,
            g.hosts,
            g.containers,
            timefmt::format_seconds(g.first_us),
            timefmt::format_seconds(g.last_us),
            g.example_id.map(|i| i.to_string()).unwrap_or("-".into()),
            g.class,
            if g.top_frames.is_empty() {
                "?"
            } else {
                &g.top_frames
            },
        );
    }
    if groups.is_empty() {
        let _ = writeln!(out, "(no crashes)");
    }
    emit(&out).map(|_| 0)
}

pub fn stats(args: StatsArgs) -> anyhow::Result<u8> {
    let stats = open(&args.store)?.stats(timefmt::now_us())?;
    if args.json {
        return emit(&(serde_json::to_string(&stats)? + "\n")).map(|_| 0);
    }
    let mut out = String::new();
    let span = match (stats.oldest_us, stats.newest_us) {
        (Some(a), Some(b)) => format!(
            " from {} to {}",
            timefmt::format_seconds(a),
            timefmt::format_seconds(b)
        ),
        _ => String::new(),
    };
    let _ = writeln!(out, "{} crash(es) stored{span}", stats.crashes);
    for w in &stats.windows {
        let _ = writeln!(out, "\nlast {}: {} crash(es)", w.label, w.total);
        for (title, rows) in [("by class", &w.by_class), ("by executable", &w.by_exe)] {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {title}");
            for (name, n) in rows.iter() {
                let _ = writeln!(out, "    {n:>7}  {name}");
            }
        }
    }
    let _ = writeln!(
        out,
        "\nsuppressed by rate limits: {} crash(es)",
        stats.suppressed
    );
    let lost: Vec<String> = stats
        .counters
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("lost.").map(|k| format!("{k} {v}")))
        .collect();
    let _ = writeln!(
        out,
        "lost events: {}",
        if lost.is_empty() {
            "none".into()
        } else {
            lost.join(", ")
        }
    );
    let _ = writeln!(out, "daemon");
    for (k, v) in &stats.daemon {
        if !v.is_empty() {
            let _ = writeln!(out, "  {k:<10}{v}");
        }
    }
    emit(&out).map(|_| 0)
}

pub fn import(args: ImportArgs) -> anyhow::Result<u8> {
    let path = store_path(&args.store);
    let mut store = Store::open_rw(&path, None)
        .with_context(|| format!("opening the crash store {}", path.display()))?;
    let (mut imported, mut skipped) = (0u64, 0u64);
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    for file in &args.files {
        let reader: Box<dyn BufRead> = if file == Path::new("-") {
            Box::new(BufReader::new(io::stdin()))
        } else {
            Box::new(BufReader::new(
                std::fs::File::open(file)
                    .with_context(|| format!("cannot open {}", file.display()))?,
            ))
        };
        for (n, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", file.display()))?;
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                eprintln!(
                    "crashtrace: {}:{}: not JSON, skipped",
                    file.display(),
                    n + 1
                );
                skipped += 1;
                continue;
            };
            if value.get("type").and_then(|t| t.as_str()) != Some("crash") {
                continue;
            }
            let report: CrashReport = match serde_json::from_value(value.clone()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!(
                        "crashtrace: {}:{}: not a crash report ({e}), skipped",
                        file.display(),
                        n + 1
                    );
                    skipped += 1;
                    continue;
                }
            };
            let ctx: StoredContext = serde_json::from_value(value).unwrap_or_default();
            batch.push(NewCrash {
                time_us: timefmt::parse_rfc3339(&report.time).unwrap_or_else(timefmt::now_us),
                report,
                context: ctx.context(),
            });
            if batch.len() == IMPORT_BATCH {
                imported += store.insert(&batch)?.len() as u64;
                batch.clear();
            }
        }
    }
    imported += store.insert(&batch)?.len() as u64;
    eprintln!(
        "crashtrace: imported {imported} crash(es) into {}{}",
        path.display(),
        if skipped > 0 {
            format!(" ({skipped} line(s) skipped)")
        } else {
            String::new()
        }
    );
    Ok(0)
}
