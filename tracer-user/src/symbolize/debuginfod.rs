//! Fetching separate debug files from debuginfod servers.
//!
//! Hosts rarely have debuginfo packages installed, but distributions run
//! debuginfod servers that hand out the debug file of any binary they
//! shipped, keyed by build-id (`GET <url>/buildid/<hex>/debuginfo`). This is
//! the last resort after every local place has been searched, configured the
//! way elfutils is (`DEBUGINFOD_URLS` and friends), so that a host already
//! set up for gdb works unchanged.
//!
//! A crash storm must not turn into a download storm, and a server is as
//! untrusted as any other input, so:
//!
//! * downloads are kept on disk as `<cache>/<build-id>/debuginfo`, written
//!   to a temporary file and renamed only once complete and verified;
//! * a file is used only if its build-id is the one asked for;
//! * build-ids no server has are not asked for again for a while, and a
//!   server that fails to answer is left alone for a while;
//! * every request has connect and idle timeouts, and downloads a size cap.

use std::{
    collections::HashMap,
    ffi::OsString,
    fmt,
    fs::{DirBuilder, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{SymbolizeError, elf::hex, file::MAX_FILE_SIZE, module::ObjectFile};

/// Connect and idle timeout when `DEBUGINFOD_TIMEOUT` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest download when `DEBUGINFOD_MAXSIZE` is not set.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;
/// How long a build-id that no server has is not asked for again.
pub const DEFAULT_MISS_TTL: Duration = Duration::from_secs(600);
/// How long a server that failed to answer is skipped.
const SERVER_BACKOFF: Duration = Duration::from_secs(60);
/// Most build-ids remembered as missing.
const MAX_MISSES: usize = 4096;
/// Longest build-id accepted (GNU ld writes 16 or 20 bytes).
const MAX_BUILD_ID: usize = 64;
/// Name of the cached file inside a build-id's directory.
const CACHED_NAME: &str = "debuginfo";

/// Which debuginfod servers to ask and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebuginfodConfig {
    /// Base URLs (`http://` or `https://`), tried in order.
    pub urls: Vec<String>,
    /// Downloads are kept as `<cache_dir>/<build-id hex>/debuginfo`.
    pub cache_dir: PathBuf,
    /// Limit for connecting and for each read or write once connected.
    pub timeout: Duration,
    /// Limit for a whole request, body included; `None` for no limit.
    pub max_time: Option<Duration>,
    /// Largest file downloaded, in bytes.
    pub max_size: u64,
    /// How long a build-id that no server has is not asked for again.
    pub miss_ttl: Duration,
}

impl DebuginfodConfig {
    /// Servers `urls` with cache `cache_dir` and default limits.
    pub fn new(urls: Vec<String>, cache_dir: PathBuf) -> Self {
        Self {
            urls,
            cache_dir,
            timeout: DEFAULT_TIMEOUT,
            max_time: None,
            max_size: DEFAULT_MAX_SIZE,
            miss_ttl: DEFAULT_MISS_TTL,
        }
    }

    /// The configuration elfutils would use: servers from `DEBUGINFOD_URLS`
    /// (space-separated), limits from `DEBUGINFOD_TIMEOUT` and
    /// `DEBUGINFOD_MAXTIME` (seconds) and `DEBUGINFOD_MAXSIZE` (bytes), cache
    /// in `DEBUGINFOD_CACHE_PATH`, else `$XDG_CACHE_HOME/crashtrace/debuginfod`,
    /// else `$HOME/.cache/crashtrace/debuginfod`, else (for root)
    /// `/var/cache/crashtrace/debuginfod`. `None` when no usable server is
    /// configured.
    pub fn from_env() -> Option<Self> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        Self::from_vars(|name| std::env::var_os(name), root)
    }

    fn from_vars(var: impl Fn(&str) -> Option<OsString>, root: bool) -> Option<Self> {
        let text = |name: &str| var(name).and_then(|v| v.into_string().ok());
        let urls: Vec<String> = text("DEBUGINFOD_URLS")?
            .split_whitespace()
            .filter(|url| {
                let ok = url.starts_with("http://") || url.starts_with("https://");
                if !ok {
                    log::warn!(
                        "ignoring debuginfod url {url:?}: only http and https are supported"
                    );
                }
                ok
            })
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return None;
        }
        let dir = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let cache_dir = dir("DEBUGINFOD_CACHE_PATH")
            .or_else(|| dir("XDG_CACHE_HOME").map(|d| d.join("crashtrace/debuginfod")))
            .or_else(|| dir("HOME").map(|d| d.join(".cache/crashtrace/debuginfod")))
            .or_else(|| root.then(|| PathBuf::from("/var/cache/crashtrace/debuginfod")));
        let Some(cache_dir) = cache_dir else {
            log::warn!("not using debuginfod: no cache directory (set DEBUGINFOD_CACHE_PATH)");
            return None;
        };
        let number = |name: &str| {
            let value = text(name)?;
            let parsed = value.trim().parse::<u64>().ok().filter(|n| *n > 0);
            if parsed.is_none() {
                log::warn!("ignoring {name}={value:?}: not a positive integer");
            }
            parsed
        };
        let mut config = Self::new(urls, cache_dir);
        if let Some(secs) = number("DEBUGINFOD_TIMEOUT") {
            config.timeout = Duration::from_secs(secs);
        }
        config.max_time = number("DEBUGINFOD_MAXTIME").map(Duration::from_secs);
        if let Some(bytes) = number("DEBUGINFOD_MAXSIZE") {
            config.max_size = bytes;
        }
        Some(config)
    }
}

/// Why one server did not provide a usable file.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("not found")]
    NotFound,
    #[error("server answered with http status {0}")]
    Status(u16),
    #[error("request failed: {0}")]
    Http(#[from] ureq::Error),
    #[error("download failed: {0}")]
    Body(#[source] io::Error),
    #[error("file is over the {0}-byte limit")]
    TooLarge(u64),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("downloaded file is unusable: {0}")]
    Unusable(#[source] SymbolizeError),
    #[error("downloaded file has build-id {found}")]
    Mismatch { found: String },
}

impl FetchError {
    /// Whether the server, rather than the file, is the problem.
    fn server_trouble(&self) -> bool {
        match self {
            FetchError::Http(_) | FetchError::Body(_) => true,
            FetchError::Status(status) => *status >= 500,
            _ => false,
        }
    }
}

/// Deletes a temporary file unless it was kept.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[derive(Default)]
struct Memory {
    /// Build-ids no server had, and when that was learned.
    misses: HashMap<Vec<u8>, Instant>,
    /// Per server (by index in the configuration): skipped until then.
    down_until: HashMap<usize, Instant>,
}

/// A debuginfod client with its disk cache and memory of failures.
pub(crate) struct Debuginfod {
    config: DebuginfodConfig,
    agent: ureq::Agent,
    memory: Mutex<Memory>,
}

impl fmt::Debug for Debuginfod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Debuginfod")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Debuginfod {
    pub fn new(mut config: DebuginfodConfig) -> Self {
        // A larger file could not be read anyway.
        config.max_size = config.max_size.min(MAX_FILE_SIZE);
        let timeout = Some(config.timeout);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(5)
            .user_agent(concat!("crashtrace/", env!("CARGO_PKG_VERSION")))
            .timeout_resolve(timeout)
            .timeout_connect(timeout)
            .timeout_per_read(timeout)
            .timeout_per_write(timeout)
            .timeout_global(config.max_time)
            .build()
            .into();
        Self {
            config,
            agent,
            memory: Mutex::new(Memory::default()),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The debug file with `build_id`, from the cache or a server.
    pub fn find(&self, build_id: &[u8]) -> Option<ObjectFile> {
        if build_id.is_empty() || build_id.len() > MAX_BUILD_ID {
            return None;
        }
        let id = hex(build_id);
        let dir = self.config.cache_dir.join(&id);
        let cached = dir.join(CACHED_NAME);
        match ObjectFile::open(&cached) {
            Ok(file) if file.info.build_id.as_deref() == Some(build_id) => return Some(file),
            Ok(_) | Err(SymbolizeError::Elf { .. } | SymbolizeError::NotElf { .. }) => {
                log::warn!("removing bad cached debug file {}", cached.display());
                let _ = std::fs::remove_file(&cached);
            }
            Err(_) => {}
        }
        let now = Instant::now();
        if self
            .memory()
            .misses
            .get(build_id)
            .is_some_and(|at| now.duration_since(*at) < self.config.miss_ttl)
        {
            return None;
        }
        let mut definite = true;
        for (index, base) in self.config.urls.iter().enumerate() {
            if self
                .memory()
                .down_until
                .get(&index)
                .is_some_and(|until| now < *until)
            {
                definite = false;
                continue;
            }
            let url = format!("{}/buildid/{id}/debuginfo", base.trim_end_matches('/'));
            match self.download(&url, &dir, &cached, build_id) {
                Ok(file) => {
                    log::info!("fetched debug info for build-id {id} from {base}");
                    return Some(file);
                }
                Err(FetchError::NotFound) => log::debug!("{url}: not found"),
                Err(e) => {
                    log::warn!("cannot fetch {url}: {e}");
                    if e.server_trouble() {
                        definite = false;
                        self.memory()
                            .down_until
                            .insert(index, Instant::now() + SERVER_BACKOFF);
                    }
                }
            }
        }
        if definite {
            self.remember_miss(build_id.to_vec());
        }
        None
    }

    fn remember_miss(&self, build_id: Vec<u8>) {
        let ttl = self.config.miss_ttl;
        let mut memory = self.memory();
        let now = Instant::now();
        if memory.misses.len() >= MAX_MISSES {
            memory.misses.retain(|_, at| now.duration_since(*at) < ttl);
        }
        if memory.misses.len() >= MAX_MISSES {
            let oldest = memory
                .misses
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                memory.misses.remove(&id);
            }
        }
        memory.misses.insert(build_id, now);
    }

    /// Downloads `url` into `dir` and, if it is the debug file with
    /// `build_id`, moves it to `cached` and returns it.
    fn download(
        &self,
        url: &str,
        dir: &Path,
        cached: &Path,
        build_id: &[u8],
    ) -> Result<ObjectFile, FetchError> {
        let response = self.agent.get(url).call()?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(FetchError::NotFound),
            status => return Err(FetchError::Status(status)),
        }
        let max = self.config.max_size;
        let declared = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return Err(FetchError::TooLarge(max));
        }
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| FetchError::Write { path, source }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(write_err(dir))?;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let temp_path = dir.join(format!(
            ".{CACHED_NAME}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&temp_path)
            .map_err(write_err(&temp_path))?;
        let mut temp = TempFile(Some(temp_path.clone()));
        let mut body = response.into_body().into_reader();
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FetchError::Body(e)),
            };
            total += n as u64;
            if total > max {
                return Err(FetchError::TooLarge(max));
            }
            out.write_all(&buf[..n]).map_err(write_err(&temp_path))?;
        }
        drop(out);
        let mut file = ObjectFile::open(&temp_path).map_err(FetchError::Unusable)?;
        if file.info.build_id.as_deref() != Some(build_id) {
            return Err(FetchError::Mismatch {
                found: file
                    .info
                    .build_id_hex()
                    .map_or_else(|| "none".to_owned(), |id| id.to_string()),
            });
        }
        std::fs::rename(&temp_path, cached).map_err(write_err(cached))?;
        temp.0 = None;
        file.path = cached.to_owned();
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)], root: bool) -> Option<DebuginfodConfig> {
        DebuginfodConfig::from_vars(
            |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            },
            root,
        )
    }

    #[test]
    fn configuration_follows_elfutils_variables() {
        assert_eq!(config(&[("HOME", "/h")], true), None);
        assert_eq!(config(&[("DEBUGINFOD_URLS", " ftp://x ")], true), None);
        let c = config(
            &[
                ("DEBUGINFOD_URLS", "http://a:8002  ftp://b https://c/ "),
                ("HOME", "/h"),
                ("DEBUGINFOD_TIMEOUT", "12"),
                ("DEBUGINFOD_MAXSIZE", "1000"),
                ("DEBUGINFOD_MAXTIME", "nonsense"),
            ],
            false,
        )
        .expect("configured");
        assert_eq!(c.urls, ["http://a:8002", "https://c/"]);
        assert_eq!(c.cache_dir, Path::new("/h/.cache/crashtrace/debuginfod"));
        assert_eq!(c.timeout, Duration::from_secs(12));
        assert_eq!(c.max_size, 1000);
        assert_eq!(c.max_time, None);
        let c = config(
            &[
                ("DEBUGINFOD_URLS", "http://a"),
                ("HOME", "/h"),
                ("XDG_CACHE_HOME", "/x"),
            ],
            false,
        )
        .expect("configured");
        assert_eq!(c.cache_dir, Path::new("/x/crashtrace/debuginfod"));
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        let c = config(
            &[
                ("DEBUGINFOD_URLS", "http://a"),
                ("XDG_CACHE_HOME", "/x"),
                ("DEBUGINFOD_CACHE_PATH", "/c"),
            ],
            false,
        )
        .expect("configured");
        assert_eq!(c.cache_dir, Path::new("/c"));
        let c = config(&[("DEBUGINFOD_URLS", "http://a")], true).expect("root default");
        assert_eq!(c.cache_dir, Path::new("/var/cache/crashtrace/debuginfod"));
        assert_eq!(config(&[("DEBUGINFOD_URLS", "http://a")], false), None);
    }
}
