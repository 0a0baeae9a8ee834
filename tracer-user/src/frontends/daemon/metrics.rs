//! Prometheus metrics: the daemon's counters in the text exposition
//! format, served at `/metrics` by a deliberately tiny HTTP/1.x server
//! (one request per connection, bounded request size and time), because
//! one GET does not justify a web framework in a root daemon.
//!
//! Label sets are bounded: past [`MAX_SERIES`] distinct (class, exe,
//! unit) combinations, new ones are counted under `exe="other"`,
//! `unit="other"`, so a host full of distinct binaries cannot grow the
//! daemon's memory or a scrape without limit.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const MAX_SERIES: usize = 1000;
const MAX_REQUEST: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Histogram buckets for symbolization time, in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    crashes: BTreeMap<(String, String, String), u64>,
    suppressed: BTreeMap<String, u64>,
    filtered: u64,
    lost: BTreeMap<String, u64>,
    attach_failures: u64,
    symbolize: Histogram,
    store_size: u64,
    leaks: BTreeMap<(String, String), u64>,
    /// The latest sample, replaced whole each second.
    goroutines: BTreeMap<(String, String), u64>,
}

pub type SharedMetrics = Arc<Mutex<Metrics>>;

impl Metrics {
    pub fn crash(&mut self, class: &str, exe: &str, unit: &str) {
        let mut key = (class.to_string(), exe.to_string(), unit.to_string());
        if !self.crashes.contains_key(&key) && self.crashes.len() >= MAX_SERIES {
            key = (class.to_string(), "other".into(), "other".into());
        }
        *self.crashes.entry(key).or_default() += 1;
    }

    pub fn suppressed(&mut self, key: &str) {
        let key = if self.suppressed.len() >= MAX_SERIES && !self.suppressed.contains_key(key) {
            "other"
        } else {
            key
        };
        *self.suppressed.entry(key.to_string()).or_default() += 1;
    }

    pub fn filtered(&mut self) {
        self.filtered += 1;
    }

    /// Sets the total of lost events for a cause.
    pub fn set_lost(&mut self, cause: &str, total: u64) {
        self.lost.insert(cause.to_string(), total);
    }

    pub fn add_lost(&mut self, cause: &str, n: u64) {
        *self.lost.entry(cause.to_string()).or_default() += n;
    }

    pub fn set_attach_failures(&mut self, n: u64) {
        self.attach_failures = n;
    }

    pub fn observe_symbolization(&mut self, seconds: f64) {
        let h = &mut self.symbolize;
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        for (i, &le) in BUCKETS.iter().enumerate() {
            if seconds <= le {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    pub fn set_store_size(&mut self, bytes: u64) {
        self.store_size = bytes;
    }

    pub fn leak(&mut self, exe: &str, unit: &str) {
        let mut key = (exe.to_string(), unit.to_string());
        if !self.leaks.contains_key(&key) && self.leaks.len() >= MAX_SERIES {
            key = ("other".into(), "other".into());
        }
        *self.leaks.entry(key).or_default() += 1;
    }

    /// Goroutines by executable and unit, summed over their processes;
    /// past the series limit the rest is summed under "other".
    pub fn set_goroutines(&mut self, samples: impl IntoIterator<Item = ((String, String), u64)>) {
        self.goroutines.clear();
        for (mut key, n) in samples {
            if !self.goroutines.contains_key(&key) && self.goroutines.len() >= MAX_SERIES {
                key = ("other".into(), "other".into());
            }
            *self.goroutines.entry(key).or_default() += n;
        }
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut o = String::new();
        header(
            &mut o,
            "crashtrace_leaks_total",
            "counter",
            "Goroutine leaks recorded, by executable and systemd unit.",
        );
        for ((exe, unit), n) in &self.leaks {
            let _ = writeln!(
                o,
                "crashtrace_leaks_total{{exe=\"{}\",unit=\"{}\"}} {n}",
                escape(exe),
                escape(unit)
            );
        }
        header(
            &mut o,
            "crashtrace_go_goroutines",
            "gauge",
            "Goroutines the Go runtime has allocated (allglen), summed by executable and systemd unit.",
        );
        for ((exe, unit), n) in &self.goroutines {
            let _ = writeln!(
                o,
                "crashtrace_go_goroutines{{exe=\"{}\",unit=\"{}\"}} {n}",
                escape(exe),
                escape(unit)
            );
        }
        header(
            &mut o,
            "crashtrace_crashes_total",
            "counter",
            "Crashes recorded, by root-cause class, executable and systemd unit.",
        );
        for ((class, exe, unit), n) in &self.crashes {
            let _ = writeln!(
                o,
                "crashtrace_crashes_total{{class=\"{}\",exe=\"{}\",unit=\"{}\"}} {n}",
                escape(class),
                escape(exe),
                escape(unit)
            );
        }
        header(
            &mut o,
            "crashtrace_crashes_suppressed_total",
            "counter",
            "Crashes past a rate limit, counted instead of recorded, by rate-limit key.",
        );
        for (key, n) in &self.suppressed {
            let _ = writeln!(
                o,
                "crashtrace_crashes_suppressed_total{{key=\"{}\"}} {n}",
                escape(key)
            );
        }
        header(
            &mut o,
            "crashtrace_crashes_filtered_total",
            "counter",
            "Crashes left out by the configured include/exclude filters.",
        );
        let _ = writeln!(o, "crashtrace_crashes_filtered_total {}", self.filtered);
        header(
            &mut o,
            "crashtrace_events_lost_total",
            "counter",
            "Events lost or degraded, by cause (kernel ring buffer, map limits, malformed records, store writes).",
        );
        for (cause, n) in &self.lost {
            let _ = writeln!(
                o,
                "crashtrace_events_lost_total{{cause=\"{}\"}} {n}",
                escape(cause)
            );
        }
        header(
            &mut o,
            "crashtrace_probe_attach_failures_total",
            "counter",
            "Probes that could not be loaded or attached since the daemon started.",
        );
        let _ = writeln!(
            o,
            "crashtrace_probe_attach_failures_total {}",
            self.attach_failures
        );
        header(
            &mut o,
            "crashtrace_symbolization_duration_seconds",
            "histogram",
            "Time to unwind, symbolize and classify one crash.",
        );
        let h = &self.symbolize;
        for (i, le) in BUCKETS.iter().enumerate() {
            let n = h.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                o,
                "crashtrace_symbolization_duration_seconds_bucket{{le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "crashtrace_symbolization_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(o, "crashtrace_symbolization_duration_seconds_sum {}", h.sum);
        let _ = writeln!(
            o,
            "crashtrace_symbolization_duration_seconds_count {}",
            h.count
        );
        header(
            &mut o,
            "crashtrace_store_size_bytes",
            "gauge",
            "Size of the crash store on disk (database and write-ahead log).",
        );
        let _ = writeln!(o, "crashtrace_store_size_bytes {}", self.store_size);
        o
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Binds the listener (so a bad address fails at start, not later).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: SharedMetrics) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, metrics)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: SharedMetrics) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || request.len() + n > MAX_REQUEST {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut parts = line.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = metrics.lock().unwrap_or_else(|e| e.into_inner()).render();
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        }
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_escapes_labels() {
        let mut m = Metrics::default();
        m.crash("null-pointer-dereference", "/opt/a \"b\"\\c", "");
        m.suppressed("/opt/a");
        m.set_lost("ringbuf_full_exit", 3);
        m.observe_symbolization(0.003);
        m.observe_symbolization(20.0);
        let text = m.render();
        assert!(text.contains(
            r#"crashtrace_crashes_total{class="null-pointer-dereference",exe="/opt/a \"b\"\\c",unit=""} 1"#
        ), "{text}");
        assert!(text.contains("crashtrace_symbolization_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("crashtrace_symbolization_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("crashtrace_events_lost_total{cause=\"ringbuf_full_exit\"} 3"));
        assert!(text.contains("crashtrace_store_size_bytes 0"));
    }

    #[test]
    fn series_are_bounded() {
        let mut m = Metrics::default();
        for i in 0..(MAX_SERIES + 50) {
            m.crash("abort", &format!("/bin/{i}"), "");
        }
        assert_eq!(m.crashes.len(), MAX_SERIES + 1);
        assert_eq!(
            m.crashes[&("abort".into(), "other".into(), "other".into())],
            50
        );
    }
}
