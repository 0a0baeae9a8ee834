//! The config's include/exclude filters, applied in userspace once a
//! death is complete (the kernel already filters by signal, and by
//! whether the process handles it).
//!
//! Filtering here, rather than in the kernel, lets a reload change the
//! filters without touching the probes. Patterns are shell-style: `*`
//! matches any run of characters (including `/`), `?` one character.

use super::config::Filter;

/// What a filter looks at.
pub struct Subject<'a> {
    pub exe: Option<&'a str>,
    pub comm: &'a str,
    pub unit: Option<&'a str>,
    pub uid: u32,
}

impl Filter {
    /// True when the crash should be kept.
    pub fn admits(&self, s: &Subject<'_>) -> bool {
        fn included(patterns: &[String], value: Option<&str>) -> bool {
            patterns.is_empty() || value.is_some_and(|v| patterns.iter().any(|p| glob(p, v)))
        }
        fn excluded(patterns: &[String], value: Option<&str>) -> bool {
            value.is_some_and(|v| patterns.iter().any(|p| glob(p, v)))
        }
        included(&self.include_exe, s.exe)
            && included(&self.include_comm, Some(s.comm))
            && included(&self.include_unit, s.unit)
            && (self.include_uid.is_empty() || self.include_uid.contains(&s.uid))
            && !excluded(&self.exclude_exe, s.exe)
            && !excluded(&self.exclude_comm, Some(s.comm))
            && !excluded(&self.exclude_unit, s.unit)
            && !self.exclude_uid.contains(&s.uid)
    }
}

/// Shell-style match of `text` against `pattern` (`*`, `?`), iterative so
/// hostile patterns cannot blow the stack or take exponential time.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("/usr/bin/*", "/usr/bin/python3"));
        assert!(glob("*.service", "nginx.service"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*", ""));
        assert!(!glob("*.service", "session-1.scope"));
        assert!(!glob("abc", "abcd"));
        assert!(glob("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!glob(&"*a".repeat(20), &"a".repeat(19)));
    }

    #[test]
    fn include_and_exclude() {
        let f = Filter {
            include_exe: vec!["/opt/*".into()],
            exclude_comm: vec!["test-*".into()],
            exclude_uid: vec![65534],
            ..Default::default()
        };
        let s = |exe, comm, uid| Subject {
            exe,
            comm,
            unit: None,
            uid,
        };
        assert!(f.admits(&s(Some("/opt/app/server"), "server", 0)));
        assert!(!f.admits(&s(Some("/usr/bin/ls"), "ls", 0)));
        assert!(
            !f.admits(&s(None, "server", 0)),
            "unknown exe is not included"
        );
        assert!(!f.admits(&s(Some("/opt/x"), "test-run", 0)));
        assert!(!f.admits(&s(Some("/opt/x"), "x", 65534)));
        assert!(Filter::default().admits(&s(None, "", 0)));
    }
}
