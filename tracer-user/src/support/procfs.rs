//! The one reader of `/proc`: process ids, `/proc/PID/stat` and
//! `/proc/PID/maps`, parsed by one set of rules.
//!
//! Several stages read the same files (the libc probe looks for the libcs
//! a process maps, the report symbolizes a signal sender's stack from its
//! mappings, the unwinder finds its own vDSO, `record --pid` walks the
//! process tree, the tracker asks whether a process is still alive). Each
//! used to carry its own parser, and they disagreed: some cut a path at
//! its first space. Here a maps path is everything after the inode field,
//! spaces included, with the kernel's ` (deleted)` suffix taken off and
//! remembered; `stat` fields are counted from the last `)`, so that a
//! command name with spaces or parentheses cannot shift them.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::events::Mapping;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("malformed {}: {line:?}", path.display())]
    Malformed { path: PathBuf, line: String },
}

/// The ids of the processes (thread-group leaders) that exist now.
pub fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// The fields of `/proc/PID/stat` crashtrace uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// One letter: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    pub ppid: u32,
    /// `num_threads`, when the line is complete.
    pub threads: Option<u32>,
    /// `starttime` (clock ticks after boot): with the pid, names one
    /// process even when pids are reused.
    pub start_time: Option<u64>,
}

impl Stat {
    /// Neither a zombie nor dead: the process has not exited.
    pub fn is_alive(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// `/proc/PID/stat` of process `pid`.
pub fn stat(pid: u32) -> Result<Stat, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = read(&path)?;
    parse_stat(&text).ok_or_else(|| ProcError::Malformed {
        line: text.trim_end().to_string(),
        path,
    })
}

/// `pid (comm) state ppid ...`; the comm may hold spaces and `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    // Fields 5 to 19, then num_threads (20), itrealvalue, starttime (22).
    let mut rest = fields.skip(15);
    let threads = rest.next().and_then(|f| f.parse().ok());
    let start_time = rest.nth(1).and_then(|f| f.parse().ok());
    Some(Stat {
        state,
        ppid,
        threads,
        start_time,
    })
}

/// True when `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    stat(pid).is_ok_and(|s| s.is_alive())
}

/// What a mapping maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapsPath {
    /// Anonymous memory.
    None,
    /// A kernel-named region: `[vdso]`, `[stack]`, `[heap]`, ...
    Special(String),
    /// A file, by the path the process opened it with.
    File {
        path: PathBuf,
        /// The file was deleted or replaced since (` (deleted)`).
        deleted: bool,
    },
}

/// Another process's memory, read through `/proc/PID/mem` (one `pread`
/// per range; the process keeps running).
#[derive(Debug)]
pub struct ProcessMemory {
    file: fs::File,
}

impl ProcessMemory {
    pub fn open(pid: u32) -> Result<Self, ProcError> {
        let path = PathBuf::from(format!("/proc/{pid}/mem"));
        fs::File::open(&path)
            .map(|file| Self { file })
            .map_err(|source| ProcError::Read { path, source })
    }

    /// Fills `buf` from address `addr`; `false` unless all of it was read.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        use std::os::unix::fs::FileExt;
        // Addresses above i64::MAX are not user memory; pread takes an off_t.
        addr <= i64::MAX as u64 && self.file.read_exact_at(buf, addr).is_ok()
    }
}

/// One thread of a process: `/proc/PID/task/TID/stat`'s state and, when it
/// sleeps in a system call, `/proc/PID/task/TID/syscall`'s number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadState {
    pub tid: u32,
    /// `R`, `S`, `D`, ...
    pub state: char,
    /// The system call it is blocked in, when the kernel says.
    pub syscall: Option<u64>,
}

/// The threads of process `pid` (at most `limit`), in tid order.
pub fn threads(pid: u32, limit: usize) -> Result<Vec<ThreadState>, ProcError> {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    let entries = fs::read_dir(&dir).map_err(|source| ProcError::Read {
        path: dir.clone(),
        source,
    })?;
    let mut tids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids.truncate(limit);
    Ok(tids
        .into_iter()
        .filter_map(|tid| {
            let base = dir.join(tid.to_string());
            let stat = fs::read_to_string(base.join("stat")).ok()?;
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            // "202 0x... ..." while blocked; "running" or "-1 ..." otherwise.
            let syscall = fs::read_to_string(base.join("syscall"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok());
            Some(ThreadState {
                tid,
                state,
                syscall,
            })
        })
        .collect())
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    /// `rwxp`-style permissions.
    pub perms: String,
    pub offset: u64,
    pub major: u32,
    pub minor: u32,
    pub ino: u64,
    pub path: MapsPath,
}

impl MapsEntry {
    pub fn executable(&self) -> bool {
        self.perms.contains('x')
    }

    /// The device in userspace (`st_dev`) encoding.
    pub fn dev(&self) -> u64 {
        libc::makedev(self.major, self.minor)
    }

    /// The file's path, if a file is mapped.
    pub fn file(&self) -> Option<&Path> {
        match &self.path {
            MapsPath::File { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// `/proc/PID/maps` of process `pid`.
pub fn maps(pid: u32) -> Result<Vec<MapsEntry>, ProcError> {
    read_maps(Path::new(&format!("/proc/{pid}/maps")))
}

/// This process's own mappings.
pub fn own_maps() -> Result<Vec<MapsEntry>, ProcError> {
    read_maps(Path::new("/proc/self/maps"))
}

fn read_maps(path: &Path) -> Result<Vec<MapsEntry>, ProcError> {
    Ok(read(path)?.lines().filter_map(parse_maps_line).collect())
}

/// `start-end perms offset major:minor inode   path`.
pub fn parse_maps_line(line: &str) -> Option<MapsEntry> {
    let mut rest = line;
    let mut field = || {
        let trimmed = rest.trim_start_matches(' ');
        let (f, tail) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
        rest = tail;
        f
    };
    let (start, end) = field().split_once('-')?;
    let perms = field().to_string();
    let offset = u64::from_str_radix(field(), 16).ok()?;
    let (major, minor) = field().split_once(':')?;
    let ino = field().parse().ok()?;
    let name = rest.trim_start_matches(' ');
    let path = if name.is_empty() {
        MapsPath::None
    } else if name.starts_with('/') {
        match name.strip_suffix(" (deleted)") {
            Some(kept) => MapsPath::File {
                path: PathBuf::from(kept),
                deleted: true,
            },
            None => MapsPath::File {
                path: PathBuf::from(name),
                deleted: false,
            },
        }
    } else {
        MapsPath::Special(name.to_string())
    };
    Some(MapsEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms,
        offset,
        major: u32::from_str_radix(major, 16).ok()?,
        minor: u32::from_str_radix(minor, 16).ok()?,
        ino,
        path,
    })
}

/// The mount points of the overlayfs mounts in `pid`'s mount namespace
/// (`self` for this process's), as that namespace sees them; at most
/// `limit`.
pub fn overlay_mounts(pid: &str, limit: usize) -> Result<Vec<PathBuf>, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/mountinfo"));
    Ok(read(&path)?
        .lines()
        .filter_map(parse_mountinfo_line)
        .filter(|(_, fstype)| fstype == "overlay")
        .map(|(mount_point, _)| mount_point)
        .take(limit)
        .collect())
}

/// `id parent major:minor root MOUNT_POINT options [optional...] - FSTYPE
/// source super_options` → (mount point, file system type). The kernel
/// writes a space, tab, newline or backslash in a path as `\ooo`.
pub fn parse_mountinfo_line(line: &str) -> Option<(PathBuf, String)> {
    let (before, after) = line.split_once(" - ")?;
    let mount_point = before.split(' ').nth(4)?;
    let fstype = after.split(' ').next()?;
    Some((
        PathBuf::from(unescape_octal(mount_point)),
        fstype.to_string(),
    ))
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A maps line as the kernel's captures describe a mapping.
impl From<&MapsEntry> for Mapping {
    fn from(m: &MapsEntry) -> Self {
        Mapping {
            start: m.start,
            end: m.end,
            file_offset: m.offset,
            ino: m.ino,
            dev: m.dev(),
            path: m.file().map(Path::to_path_buf),
            path_truncated: false,
            executable: m.executable(),
            vdso: m.path == MapsPath::Special("[vdso]".into()),
        }
    }
}

fn read(path: &Path) -> Result<String, ProcError> {
    fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_mount_point_and_type() {
        let line = "52 30 0:45 / /var/lib/docker/overlay2/a\\040b/merged rw,relatime shared:25 - overlay overlay rw,lowerdir=/l";
        assert_eq!(
            parse_mountinfo_line(line),
            Some((
                PathBuf::from("/var/lib/docker/overlay2/a b/merged"),
                "overlay".into()
            ))
        );
        let own = overlay_mounts("self", 10).expect("this process's mountinfo");
        assert!(own.len() <= 10);
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }

    #[test]
    fn maps_lines_keep_paths_with_spaces() {
        let m = parse_maps_line(
            "7f00a000-7f00b000 r-xp 00002000 fe:01 1234                       /opt/my app/lib x.so",
        )
        .unwrap();
        assert_eq!(
            (m.start, m.end, m.offset, m.ino, m.major, m.minor),
            (0x7f00a000, 0x7f00b000, 0x2000, 1234, 0xfe, 1)
        );
        assert!(m.executable());
        assert_eq!(m.file(), Some(Path::new("/opt/my app/lib x.so")));
        assert_eq!(m.dev(), libc::makedev(0xfe, 1));
    }

    #[test]
    fn maps_lines_mark_deleted_files() {
        let m =
            parse_maps_line("400000-401000 r-xp 00000000 08:02 77   /tmp/a b (deleted)").unwrap();
        assert_eq!(
            m.path,
            MapsPath::File {
                path: PathBuf::from("/tmp/a b"),
                deleted: true
            }
        );
        // Only the kernel's suffix is taken off.
        let m = parse_maps_line("400000-401000 r-xp 00000000 08:02 77 /tmp/(deleted)").unwrap();
        assert_eq!(m.file(), Some(Path::new("/tmp/(deleted)")));
    }

    #[test]
    fn maps_lines_without_files() {
        let anon = parse_maps_line("7f00a000-7f00b000 rw-p 00000000 00:00 0").unwrap();
        assert_eq!((&anon.path, anon.executable()), (&MapsPath::None, false));
        let vdso = parse_maps_line("7ffd1000-7ffd3000 r-xp 00000000 00:00 0   [vdso]").unwrap();
        assert_eq!(vdso.path, MapsPath::Special("[vdso]".into()));
        assert_eq!(vdso.file(), None);
        assert!(parse_maps_line("garbage").is_none());
        assert!(parse_maps_line("").is_none());
    }

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let s = parse_stat("42 (my (odd) prog) S 7 42 42 0 -1").unwrap();
        assert_eq!(
            s,
            Stat {
                state: 'S',
                ppid: 7,
                threads: None,
                start_time: None,
            }
        );
        let full = "7 (a b) S 1 7 7 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 12 0 4242 1000 50";
        let s = parse_stat(full).unwrap();
        assert_eq!((s.threads, s.start_time), (Some(12), Some(4242)));
        assert!(s.is_alive());
        assert!(!parse_stat("9 (z) Z 1 9").unwrap().is_alive());
        assert!(parse_stat("no parenthesis").is_none());
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(pids().contains(&me));
        assert!(is_alive(me));
        assert_eq!(stat(me).unwrap().ppid, std::os::unix::process::parent_id());
        let own = own_maps().unwrap();
        assert!(
            own.iter()
                .any(|m| m.path == MapsPath::Special("[vdso]".into()))
        );
        assert!(own.iter().any(|m| m.executable() && m.file().is_some()));
        assert!(!maps(me).unwrap().is_empty());
        assert!(matches!(stat(u32::MAX), Err(ProcError::Read { .. })));
    }
}
