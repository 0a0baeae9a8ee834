//! Finding the core dump a crash left: reading the kernel's core pattern,
//! matching core file names against it, and raising the core-size limit of
//! the process that will crash.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the kernel writes core dumps: `/proc/sys/kernel/core_pattern` and
/// `core_uses_pid`.
#[derive(Clone, Debug)]
pub struct CorePattern {
    pub pattern: String,
    pub uses_pid: bool,
}

impl CorePattern {
    /// The system's setting. Panics, saying why, if it does not name a
    /// file (a `|program` pipe, or empty).
    pub fn system() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("reading {path}: {e}"))
                .trim_end_matches('\n')
                .to_owned()
        };
        let pattern = read("/proc/sys/kernel/core_pattern");
        let uses_pid = read("/proc/sys/kernel/core_uses_pid").trim() != "0";
        let this = Self { pattern, uses_pid };
        if let Err(why) = this.check() {
            panic!(
                "these tests compare against a core dump, but {why}. They do not change \
                 system settings; set kernel.core_pattern to a file pattern (e.g. `core`) \
                 to run them."
            );
        }
        this
    }

    fn check(&self) -> Result<(), String> {
        let p = &self.pattern;
        if p.starts_with('|') {
            return Err(format!(
                "/proc/sys/kernel/core_pattern is {p:?}: core dumps are piped to a program, \
                 not written to a file"
            ));
        }
        if p.trim().is_empty() {
            return Err("/proc/sys/kernel/core_pattern is empty: no core dumps are written".into());
        }
        if Path::new(p)
            .parent()
            .is_some_and(|d| d.to_string_lossy().contains('%'))
        {
            return Err(format!(
                "/proc/sys/kernel/core_pattern is {p:?}: its directory part has % specifiers, \
                 which this harness does not expand"
            ));
        }
        Ok(())
    }

    /// The directory the core of a process whose working directory is
    /// `cwd` goes to.
    pub fn directory(&self, cwd: &Path) -> PathBuf {
        let parent = Path::new(&self.pattern)
            .parent()
            .filter(|p| !p.as_os_str().is_empty());
        match parent {
            Some(dir) if dir.is_absolute() => dir.to_owned(),
            Some(dir) => cwd.join(dir),
            None => cwd.to_owned(),
        }
    }

    /// Whether `file_name` is the name of a core of process `pid`: `%p` and
    /// `%%` are matched exactly, any other specifier matches anything.
    pub fn matches(&self, file_name: &str, pid: i64) -> bool {
        let name = Path::new(&self.pattern)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut pieces: Vec<Option<String>> = Vec::new();
        let mut literal = String::new();
        let mut chars = name.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => literal.push('%'),
                Some('p' | 'P') => literal.push_str(&pid.to_string()),
                Some(_) => {
                    pieces.push(Some(std::mem::take(&mut literal)));
                    pieces.push(None);
                }
                None => {}
            }
        }
        if self.uses_pid && !self.pattern.contains("%p") {
            literal.push_str(&format!(".{pid}"));
        }
        pieces.push(Some(literal));
        glob_match(&pieces, file_name)
    }
}

/// Matches `text` against literal pieces (`Some`) and wildcards (`None`).
fn glob_match(pieces: &[Option<String>], text: &str) -> bool {
    match pieces.split_first() {
        None => text.is_empty(),
        Some((Some(literal), rest)) => text
            .strip_prefix(literal.as_str())
            .is_some_and(|t| glob_match(rest, t)),
        Some((None, rest)) => text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .any(|i| glob_match(rest, &text[i..])),
    }
}

/// The core file of process `pid` written since `since`.
pub(super) fn find_core(
    pattern: &CorePattern,
    cwd: &Path,
    pid: i64,
    since: SystemTime,
) -> Result<PathBuf, String> {
    let dir = pattern.directory(cwd);
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    let since = since - Duration::from_secs(2);
    let mut seen = Vec::new();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let fresh = entry
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .is_some_and(|t| t >= since);
        if fresh && pattern.matches(&name, pid) {
            found.push(entry.path());
        } else if fresh {
            seen.push(name);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "no core file of pid {pid} matching core_pattern {:?} (core_uses_pid={}) in {} \
             (other new files there: {seen:?})",
            pattern.pattern,
            pattern.uses_pid,
            dir.display()
        )),
        _ => Err(format!(
            "several core files match core_pattern {:?} for pid {pid} in {}: {found:?}",
            pattern.pattern,
            dir.display()
        )),
    }
}

/// Raises RLIMIT_CORE as far as allowed; runs between fork and exec.
pub(super) fn raise_core_limit() -> std::io::Result<()> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_CORE, &unlimited) == 0 {
            return Ok(());
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_CORE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if limit.rlim_max == 0 || libc::setrlimit(libc::RLIMIT_CORE, &limit) != 0 {
            return Err(std::io::Error::other(
                "cannot raise RLIMIT_CORE above 0 (the hard limit is 0)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_core_file_names() {
        let p = |pattern: &str, uses_pid: bool| CorePattern {
            pattern: pattern.to_owned(),
            uses_pid,
        };
        assert!(p("core", false).matches("core", 42));
        assert!(!p("core", false).matches("core.42", 42));
        assert!(p("core", true).matches("core.42", 42));
        assert!(!p("core", true).matches("core.43", 42));
        assert!(p("core.%e.%p", false).matches("core.worker-crash.42", 42));
        assert!(!p("core.%e.%p", false).matches("core.worker-crash.43", 42));
        assert!(p("/var/crash/core-%t-%%", true).matches("core-1700000000-%.42", 42));
        assert!(
            p("|/usr/lib/systemd/systemd-coredump %P", false)
                .check()
                .is_err()
        );
        assert!(p("", false).check().is_err());
        assert!(p("/tmp/%u/core", false).check().is_err());
        assert!(p("core.%p", false).check().is_ok());
        assert_eq!(p("core", false).directory(Path::new("/w")), Path::new("/w"));
        assert_eq!(
            p("cores/core", false).directory(Path::new("/w")),
            Path::new("/w/cores")
        );
        assert_eq!(
            p("/var/crash/core", false).directory(Path::new("/w")),
            Path::new("/var/crash")
        );
    }
}
