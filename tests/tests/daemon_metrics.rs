//! The daemon's Prometheus endpoint, scraped by a real Prometheus server
//! (Debian's `prometheus`) and checked by `promtool check metrics`.

use std::{
    io::Write,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crashtrace_tests::{
    Harness,
    daemon::{Daemon, ScratchDir, config_in, crash, free_port, http_get, url_encode},
    require_bpf,
};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_the_crash_counter() {
    require_bpf!();
    let dir = ScratchDir::new("daemon-metrics");
    let program = dir.copy_program(
        &Harness::new(env!("CARGO_TARGET_TMPDIR")).program("null_deref"),
        "null_deref_metrics",
    );
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let daemon = Daemon::start(
        dir.path(),
        &config_in(dir.path(), "", ""),
        &["--metrics-listen", &listen],
    );

    // The exposition is valid before and after a crash.
    let before = http_get(metrics_port, "/metrics").expect("metrics endpoint answers");
    promtool_check(&before);
    assert!(http_get(metrics_port, "/other").is_none());

    let prom_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: crashtrace\n    static_configs:\n      - targets: ['{listen}']\n"
        ),
    )
    .unwrap();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus (Debian package prometheus)"),
    );

    let pid = crash(&program);
    daemon.wait_ack(pid, Duration::from_secs(30));
    let exe = program.display().to_string();
    let after = http_get(metrics_port, "/metrics").unwrap();
    promtool_check(&after);
    let series = format!(
        "crashtrace_crashes_total{{class=\"null-pointer-dereference\",exe=\"{exe}\",unit=\"\"}} 1"
    );
    assert!(after.contains(&series), "{series} not in:\n{after}");
    assert!(after.contains("crashtrace_symbolization_duration_seconds_count"));
    assert!(
        !after.contains("crashtrace_store_size_bytes 0\n"),
        "store size is zero"
    );

    // Prometheus sees the crash through its own scrape.
    let query = format!("crashtrace_crashes_total{{exe=\"{exe}\"}}");
    let target = format!("/api/v1/query?query={}", url_encode(&query));
    let deadline = Instant::now() + Duration::from_secs(90);
    let value = loop {
        let answer = http_get(prom_port, &target)
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok());
        let value = answer.as_ref().and_then(|a| {
            a["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_string)
        });
        if let Some(v) = value {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never reported {query}; last answer {answer:?}"
        );
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(value, "1");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

fn promtool_check(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
