//! `cargo xtask store-bench`: how fast the crash store answers on a store
//! of realistic size.
//!
//! Fills a fresh store through `crashtrace import` with synthetic reports
//! shaped like real ones (10 symbolized frames, evidence, a cgroup with a
//! systemd unit or a container; 200 executables on 3 hosts, 400 crash
//! sites, times spread over the past week), then times each query as a
//! user runs it: a whole `crashtrace` process, output to /dev/null. Prints
//! medians of wall and CPU time; no pass/fail.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Args)]
pub struct StoreBenchArgs {
    /// Crashes in the store.
    #[arg(long, default_value_t = 100_000)]
    crashes: u32,
    /// Runs of each query; the median is shown.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

const EXES: u32 = 200;
const SITES: u32 = 400;
const HOSTS: u32 = 3;
const CLASSES: &[(&str, &str, i32)] = &[
    ("null-pointer-dereference", "SIGSEGV", 11),
    ("invalid-memory-access", "SIGSEGV", 11),
    ("stack-overflow", "SIGSEGV", 11),
    ("abort", "SIGABRT", 6),
    ("assertion-failure", "SIGABRT", 6),
    ("double-free", "SIGABRT", 6),
    ("divide-by-zero", "SIGFPE", 8),
    ("killed-by-signal", "SIGKILL", 9),
];

pub fn run(args: &StoreBenchArgs) -> Result<()> {
    let bin = crate::crashtrace_bin();
    if !bin.is_file() {
        bail!(
            "{} not found: run `cargo build --release` first",
            bin.display()
        );
    }
    let dir = crate::target_dir().join("store-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let input = dir.join("reports.jsonl");
    let store = dir.join("crashes.db");

    let started = Instant::now();
    write_reports(&input, args.crashes)?;
    println!(
        "generated {} reports ({:.1} MB) in {:.1}s",
        args.crashes,
        std::fs::metadata(&input)?.len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let import = time(&bin, &["import", &input.display().to_string()], &store)?;
    let size: u64 = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", store.display())).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "imported into {} in {:.1}s ({:.0} crashes/s), store {:.1} MB",
        store.display(),
        import.as_secs_f64(),
        f64::from(args.crashes) / import.as_secs_f64(),
        size as f64 / 1e6
    );

    let queries: &[&[&str]] = &[
        &["list"],
        &["list", "-n", "20"],
        &["list", "--exe", "/opt/app7/bin/server7"],
        &["list", "--since", "1h"],
        &["list", "--class", "double-free", "--json"],
        &["show", "latest"],
        &["show", "4242", "--json"],
        &["groups"],
        &["stats"],
    ];
    println!(
        "\n| query on {} crashes | median wall ms | min wall ms | median CPU ms |",
        args.crashes
    );
    println!("|---|---:|---:|---:|");
    for argv in queries {
        let mut wall = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..args.rounds {
            let before = children_cpu();
            wall.push(time(&bin, argv, &store)?);
            cpu.push(children_cpu().saturating_sub(before));
        }
        wall.sort();
        cpu.sort();
        println!(
            "| `crashtrace {}` | {:.1} | {:.1} | {:.1} |",
            argv.join(" "),
            ms(wall[wall.len() / 2]),
            ms(wall[0]),
            ms(cpu[cpu.len() / 2])
        );
    }
    Ok(())
}

/// User plus system CPU time of every waited-for child so far: on a busy
/// machine it varies much less than wall time.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Wall time of `crashtrace ARGS --store STORE`, output discarded.
fn time(bin: &Path, argv: &[&str], store: &Path) -> Result<Duration> {
    let start = Instant::now();
    let status = Command::new(bin)
        .args(argv)
        .arg("--store")
        .arg(store)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running crashtrace {}", argv.join(" ")))?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("crashtrace {} failed: {status}", argv.join(" "));
    }
    Ok(elapsed)
}

/// A small deterministic generator (xorshift), so every run builds the
/// same store.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n)) as u32
    }
}

fn write_reports(path: &Path, n: u32) -> Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let week = 7 * 86_400;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..n {
        // Older first, as a store fills.
        let t = now - week + u64::from(i) * week / u64::from(n.max(1)) + u64::from(rng.next(60));
        let site = rng.next(SITES);
        let exe = site % EXES;
        let host = rng.next(HOSTS);
        let (class, signal, signo) = CLASSES[(site as usize) % CLASSES.len()];
        let pid = 1000 + rng.next(4_000_000);
        let cgroup = if exe.is_multiple_of(5) {
            format!("/system.slice/docker-{:064x}.scope", u64::from(exe) * 7919)
        } else {
            format!("/system.slice/app{exe}.service")
        };
        let mut line = String::with_capacity(4096);
        let _ = write!(
            line,
            r#"{{"schema":1,"type":"crash","time":"{}","host":"host{host}","pid":{pid},"tid":{pid},"ppid":1,"uid":{uid},"comm":"server{exe}","exe":"/opt/app{exe}/bin/server{exe}","cmdline":["/opt/app{exe}/bin/server{exe}","--port","80{exe}"],"runtime":"native","signal":{{"number":{signo},"name":"{signal}","code":1,"code_name":"SEGV_MAPERR","errno":0,"fault_address":"0x0","sender":null}},"outcome":{{"kind":"killed","exit_code":null,"signal":{signo},"core_dumped":false}},"class":"{class}","summary":"{class} in handler_{site} at src/handler{site}.c:42","evidence":["{signal} at fault address 0x0","crashing frame: handler_{site} at src/handler{site}.c:42"],"message":null,"tags":[],"frames":["#,
            rfc3339(t),
            uid = exe % 7 * 1000,
        );
        for depth in 0..10u32 {
            let function = match depth {
                0 => format!("handler_{site}"),
                9 => "_start".to_string(),
                d => format!("layer{d}_{}", site % 37),
            };
            let _ = write!(
                line,
                r#"{}{{"address":"0x55d0c0{depth:02x}{site:04x}","module":"/opt/app{exe}/bin/server{exe}","build_id":"{:040x}","offset":"0x{depth:x}{site:03x}","function":"{function}","file":"src/layer{depth}.c","line":{},"column":null,"inlined":false}}"#,
                if depth == 0 { "" } else { "," },
                u64::from(exe) * 104_729,
                10 + depth * 7,
            );
        }
        let _ = writeln!(
            line,
            r#"],"frames_truncated":false,"unwind_error":null,"unsymbolized_frames":0,"diagnostics":[],"fingerprint":"{:016x}","boot_id":"{:032x}","cgroup":"{cgroup}"}}"#,
            u64::from(site).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            u64::from(host) + 1,
        );
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SS.000000Z`.
fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
