//! The daemon's configuration file (TOML), documented key by key in
//! `docs/daemon.md`.
//!
//! Every section and key is optional and unknown keys are errors, so a
//! typo never silently falls back to a default: the error names the key
//! and its line. A missing file at the default path means all defaults,
//! because a host that installs the unit without writing a config should
//! still record crashes.

use std::{
    collections::BTreeSet,
    io,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{
    loader::{DEFAULT_SIGNALS, LastWordsMode},
    support::signals::parse_signal,
};

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/crashtrace/config.toml";
/// The store's file name inside the state directory.
pub const STORE_FILE: &str = "crashes.db";
/// The state directory when systemd does not name one.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/crashtrace";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("invalid config file {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub capture: Capture,
    pub filter: Filter,
    pub store: StoreConfig,
    pub retention: Retention,
    pub rate_limit: RateLimit,
    pub metrics: Metrics,
    pub sinks: Sinks,
    pub leaks: Leaks,
}

/// Goroutine leak detection (as `watch --goroutines`): every Go process is
/// sampled once a second, and a sustained growth over `window` is stored as
/// a leak record.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Leaks {
    pub enabled: bool,
    /// `90s`, `5m`, `1h`.
    pub window: String,
}

impl Default for Leaks {
    fn default() -> Self {
        Self {
            enabled: true,
            window: "5m".into(),
        }
    }
}

impl Leaks {
    /// The window as a duration (checked when the file is parsed).
    pub fn window(&self) -> std::time::Duration {
        crate::frontends::cli::parse_duration(&self.window)
            .unwrap_or(std::time::Duration::from_secs(300))
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Capture {
    /// Signal names or numbers; empty means the default set.
    pub signals: Vec<String>,
    pub include_survived: bool,
    pub debug_dirs: Vec<PathBuf>,
    pub stack_bytes: u32,
    pub ring_buffer_mib: u32,
    /// Probe Go's fatal paths and Rust's panic handler in executables.
    pub runtime_probes: bool,
    /// How native programs' last words are kept: "auto", "syscalls" or
    /// "runtime" (as `--last-words`).
    pub last_words: LastWordsMode,
}

impl Default for Capture {
    fn default() -> Self {
        Self {
            signals: Vec::new(),
            include_survived: false,
            debug_dirs: Vec::new(),
            stack_bytes: tracer_common::STACK_SNAPSHOT_DEFAULT,
            ring_buffer_mib: 16,
            runtime_probes: true,
            last_words: LastWordsMode::Auto,
        }
    }
}

/// Include and exclude lists; patterns may use `*` and `?`. A crash is
/// kept when every non-empty include list matches it and no exclude list
/// does.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    pub include_exe: Vec<String>,
    pub exclude_exe: Vec<String>,
    pub include_comm: Vec<String>,
    pub exclude_comm: Vec<String>,
    pub include_unit: Vec<String>,
    pub exclude_unit: Vec<String>,
    pub include_uid: Vec<u32>,
    pub exclude_uid: Vec<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The database file; default `$STATE_DIRECTORY/crashes.db`, else
    /// `/var/lib/crashtrace/crashes.db`.
    pub path: Option<PathBuf>,
    /// A group allowed to read the store (mode 0640 instead of 0600).
    pub group: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    pub max_age_days: u32,
    pub max_count: u64,
    pub max_size_mib: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age_days: 30,
            max_count: 100_000,
            max_size_mib: 512,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RateKey {
    /// The systemd unit when the crash came from a service, else the
    /// executable.
    Auto,
    Unit,
    Exe,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    pub key: RateKey,
    /// Crashes recorded at once before the limit applies.
    pub burst: u32,
    /// Crashes recorded per minute after the burst is spent.
    pub per_minute: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            key: RateKey::Auto,
            burst: 10,
            per_minute: 6.0,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// `ADDRESS:PORT` for the Prometheus endpoint; none by default.
    pub listen: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sinks {
    /// Files that receive every stored crash as one JSON line; `-` is
    /// stdout.
    pub json_lines: Vec<PathBuf>,
}

impl Config {
    /// Reads `path`; when `explicit` is false a missing file means the
    /// defaults.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !explicit => {
                return Ok(Self::default());
            }
            Err(error) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    error,
                });
            }
        };
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })
    }

    /// Parses and checks a config text; the error names the offending key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        config.signal_set()?;
        crate::frontends::cli::parse_duration(&config.leaks.window)
            .map_err(|e| format!("leaks.window: {e}"))?;
        let c = &config.capture;
        if c.stack_bytes > 16384 {
            return Err("capture.stack_bytes: at most 16384".into());
        }
        if !(1..=1024).contains(&c.ring_buffer_mib) || !c.ring_buffer_mib.is_power_of_two() {
            return Err(
                "capture.ring_buffer_mib: must be a power of two between 1 and 1024".into(),
            );
        }
        let r = &config.rate_limit;
        if !(r.per_minute.is_finite() && r.per_minute >= 0.0) {
            return Err("rate_limit.per_minute: must be a non-negative number".into());
        }
        if let Some(listen) = &config.metrics.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(format!(
                "metrics.listen: {listen:?} is not ADDRESS:PORT (e.g. 127.0.0.1:9464)"
            ));
        }
        Ok(config)
    }

    /// The signals to watch.
    pub fn signal_set(&self) -> Result<BTreeSet<i32>, String> {
        if self.capture.signals.is_empty() {
            return Ok(DEFAULT_SIGNALS.iter().copied().collect());
        }
        self.capture
            .signals
            .iter()
            .map(|s| {
                parse_signal(s).ok_or_else(|| format!("capture.signals: unknown signal {s:?}"))
            })
            .collect()
    }

    /// The store file: the configured path, else the state directory
    /// systemd gives (`STATE_DIRECTORY`, first entry), else the default.
    pub fn store_path(&self) -> PathBuf {
        if let Some(p) = &self.store.path {
            return p.clone();
        }
        let state = std::env::var("STATE_DIRECTORY").ok();
        let dir = state
            .as_deref()
            .and_then(|s| s.split(':').next())
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_STATE_DIR);
        Path::new(dir).join(STORE_FILE)
    }
}

/// toml's messages already name the key for type errors and unknown
/// fields; this adds the line number.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_all_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::default().rate_limit.burst, 10);
    }

    #[test]
    fn a_full_config_parses() {
        let c = Config::parse(
            r#"
            [capture]
            signals = ["SIGSEGV", "6"]
            [filter]
            exclude_exe = ["/usr/bin/*"]
            include_uid = [1000]
            [store]
            path = "/tmp/x.db"
            group = "adm"
            [retention]
            max_age_days = 7
            [rate_limit]
            key = "exe"
            burst = 3
            per_minute = 0.5
            [metrics]
            listen = "127.0.0.1:9464"
            [sinks]
            json_lines = ["-"]
            "#,
        )
        .unwrap();
        assert_eq!(c.signal_set().unwrap(), BTreeSet::from([6, 11]));
        assert_eq!(c.rate_limit.key, RateKey::Exe);
        assert_eq!(c.store_path(), PathBuf::from("/tmp/x.db"));
        assert_eq!(c.retention.max_count, 100_000);
    }

    #[test]
    fn last_words_modes_parse_by_name() {
        let c = Config::parse("[capture]\nlast_words = \"syscalls\"\n").unwrap();
        assert_eq!(c.capture.last_words, LastWordsMode::Syscalls);
        assert_eq!(Config::default().capture.last_words, LastWordsMode::Auto);
        let e = Config::parse("[capture]\nlast_words = \"always\"\n").unwrap_err();
        assert!(e.contains("always") && e.contains("syscalls"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[retention]\nmax_age = 3\n").unwrap_err();
        assert!(e.contains("max_age") && e.contains("line 2"), "{e}");
        let e = Config::parse("[rate_limit]\nburst = \"x\"\n").unwrap_err();
        assert!(e.contains("burst") || e.contains("line 2"), "{e}");
        let e = Config::parse("[capture]\nsignals = [\"SIGNOPE\"]\n").unwrap_err();
        assert!(
            e.contains("capture.signals") && e.contains("SIGNOPE"),
            "{e}"
        );
        let e = Config::parse("[metrics]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(e.contains("metrics.listen"), "{e}");
        let e = Config::parse("[bogus]\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }
}
