//! Decoding ring-buffer records into owned, typed events.
//!
//! The kernel side writes fixed-size `#[repr(C)]` records; this module
//! checks each record's kind and size before reading it, and turns the raw
//! buffers (NUL-separated path components, command lines, comm arrays) into
//! Rust values. A malformed record is an error for that record only.

mod go_stack;

use std::{ffi::OsString, os::unix::ffi::OsStringExt, path::PathBuf};

use tracer_common::{
    EvidenceEvent, ExecEvent, ExitEvent, GoStackEvent, LAST_WORDS_CHUNK, LastWordsHeader, Module,
    OomEvent, REGS_LEN, SignalEvent, StateEvent, TaskIdentity, VmaSummary, kind, last_words_flags,
    module_flags, oom_flags, signal_flags,
};

pub use go_stack::GoStackRecord;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short to hold a kind")]
    Empty(usize),
    #[error("record of kind {kind} has {len} bytes, expected {expected}")]
    Size {
        kind: u32,
        len: usize,
        expected: usize,
    },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("signal record has invalid signal number {0}")]
    BadSignal(u32),
}

/// A task's identity at event time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
}

/// A mapping captured by the kernel for one of the event's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`, in bytes.
    pub file_offset: u64,
    pub ino: u64,
    /// Device number in userspace (`st_dev`) encoding.
    pub dev: u64,
    pub path: Option<PathBuf>,
    pub path_truncated: bool,
    pub executable: bool,
    pub vdso: bool,
}

/// The mapping that held a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub vm_flags: u64,
    pub has_file: bool,
}

/// x86_64 `struct pt_regs` word indices.
pub mod reg {
    pub const BP: usize = 4;
    pub const IP: usize = 16;
    pub const SP: usize = 19;
}

/// A watched signal as the kernel generated it.
#[derive(Clone, Debug)]
pub struct SignalRecord {
    pub boot_ns: u64,
    pub signo: i32,
    pub code: i32,
    pub errno: i32,
    pub fault_addr: u64,
    pub si_pid: u32,
    pub si_uid: u32,
    pub target: Task,
    /// The generating task, when it is another process.
    pub sender: Option<Task>,
    pub from_kernel: bool,
    pub handled: bool,
    pub blocked: bool,
    pub fault_region: Option<Region>,
    /// The sender's user stack (frame-pointer walk), innermost first.
    pub sender_stack: Vec<u64>,
    /// The sender's executable and arguments, captured as it sent.
    pub sender_exe: Option<PathBuf>,
    pub sender_cmdline: Vec<String>,
}

/// A dying thread's user state, captured as it exited.
#[derive(Clone, Debug)]
pub struct StateRecord {
    pub boot_ns: u64,
    pub thread: Task,
    pub regs: Option<[u64; REGS_LEN]>,
    /// Kernel frame-pointer walk, innermost first.
    pub kstack: Vec<u64>,
    pub snapshot_base: u64,
    pub snapshot: Vec<u8>,
    pub snapshot_short: bool,
    pub exe: Option<PathBuf>,
    pub cmdline: Vec<String>,
    pub sp_region: Option<Region>,
    pub mappings: Vec<Mapping>,
    pub mappings_truncated: bool,
    /// Some mapping lookup was refused for a busy mmap lock.
    pub mappings_busy: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRecord {
    pub boot_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// Wait status as `waitpid` reports it.
    pub status: u32,
    /// The first run of an executable not probed yet, which exited
    /// non-zero with no signal and no runtime probe seen: a candidate, not
    /// yet a crash (see `tracer_common::Doom::provisional`).
    pub provisional: bool,
}

/// A call into one of libc's fatal paths (see `tracer_common::evidence_source`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidenceRecord {
    pub boot_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub source: u32,
    pub line: u32,
    /// The message (or assertion), the file and the function, when given.
    pub text: Option<String>,
    pub file: Option<String>,
    pub function: Option<String>,
    /// A code address in the process the source names, else 0: for an
    /// uncaught C++ exception at `abort()`, the function in the `what()`
    /// slot of the exception's vtable.
    pub code: u64,
}

/// Bytes a dying process wrote to stderr in one `write`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastWordsRecord {
    pub pid: u32,
    pub tid: u32,
    pub bytes: Vec<u8>,
    /// The write asked for more than was kept.
    pub cut: bool,
    /// Written before the process was known to be dying; when cut, the
    /// bytes are the end of the write, not its start.
    pub from_tail: bool,
}

/// A process started an executable crashtrace had not seen yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    pub pid: u32,
    pub ino: u64,
    /// Device number in userspace (`st_dev`) encoding.
    pub dev: u64,
}

/// The OOM killer chose this process (see `tracer_common::OomEvent`).
/// Sizes are in pages, except `pgtables_bytes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomRecord {
    pub boot_ns: u64,
    pub victim: Task,
    /// The task whose allocation invoked the OOM killer.
    pub invoker_pid: u32,
    pub invoker_tid: u32,
    pub invoker_comm: String,
    /// Memory figures of the victim, when its `mm` was readable.
    pub memory: Option<OomMemory>,
    pub oom_score_adj: i32,
    /// The victim's nearest memory cgroup that had reached its limit.
    pub memcg: Option<OomCgroup>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomMemory {
    pub total_vm: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
    pub swap_entries: u64,
    pub pgtables_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomCgroup {
    pub id: u64,
    /// Relative to the root of its cgroup hierarchy, `/` for the root.
    pub path: String,
    pub path_truncated: bool,
    pub max_pages: u64,
    pub usage_pages: u64,
}

#[derive(Clone, Debug)]
pub enum Event {
    Signal(SignalRecord),
    State(Box<StateRecord>),
    Exit(ExitRecord),
    Evidence(EvidenceRecord),
    LastWords(LastWordsRecord),
    Exec(ExecRecord),
    Oom(OomRecord),
    GoStack(Box<GoStackRecord>),
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let kind = bytes
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DecodeError::Empty(bytes.len()))?;
    match kind {
        kind::SIGNAL => {
            let raw: Box<SignalEvent> = read_boxed(bytes, kind)?;
            decode_signal(&raw).map(Event::Signal)
        }
        kind::STATE => {
            let raw: Box<StateEvent> = read_boxed(bytes, kind)?;
            Ok(Event::State(Box::new(decode_state(&raw))))
        }
        kind::EXIT => {
            let raw: Box<ExitEvent> = read_boxed(bytes, kind)?;
            Ok(Event::Exit(ExitRecord {
                boot_ns: raw.boot_ns,
                pid: raw.tgid,
                tid: raw.tid,
                status: raw.exit_code,
                provisional: raw.flags & tracer_common::exit_flags::PROVISIONAL != 0,
            }))
        }
        kind::EVIDENCE => {
            let raw: Box<EvidenceEvent> = read_boxed(bytes, kind)?;
            let text = |i: usize| Some(c_string(&raw.texts[i])).filter(|t| !t.is_empty());
            Ok(Event::Evidence(EvidenceRecord {
                boot_ns: raw.boot_ns,
                pid: raw.tgid,
                tid: raw.tid,
                source: raw.source,
                line: raw.line,
                text: text(0),
                file: text(1),
                function: text(2),
                code: raw.code,
            }))
        }
        kind::LAST_WORDS => {
            let header: Box<LastWordsHeader> = read_boxed(bytes, kind)?;
            let len = header.len as usize;
            let start = size_of::<LastWordsHeader>();
            let data = bytes
                .get(start..start + len)
                .filter(|_| len <= LAST_WORDS_CHUNK)
                .ok_or(DecodeError::Size {
                    kind,
                    len: bytes.len(),
                    expected: start + len,
                })?;
            Ok(Event::LastWords(LastWordsRecord {
                pid: header.tgid,
                tid: header.tid,
                bytes: data.to_vec(),
                cut: header.asked > len as u64,
                from_tail: header.flags & last_words_flags::FROM_TAIL != 0,
            }))
        }
        kind::EXEC => {
            let raw: Box<ExecEvent> = read_boxed(bytes, kind)?;
            Ok(Event::Exec(ExecRecord {
                pid: raw.tgid,
                ino: raw.ino,
                dev: kernel_dev_to_user(raw.dev),
            }))
        }
        kind::OOM => {
            let raw: Box<OomEvent> = read_boxed(bytes, kind)?;
            Ok(Event::Oom(decode_oom(&raw)))
        }
        kind::GO_STACK => {
            let raw: Box<GoStackEvent> = read_boxed(bytes, kind)?;
            Ok(Event::GoStack(Box::new(go_stack::decode(&raw))))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// Copies a plain-data record out of the buffer after checking its size.
fn read_boxed<T: Copy>(bytes: &[u8], kind: u32) -> Result<Box<T>, DecodeError> {
    let expected = size_of::<T>();
    if bytes.len() < expected {
        return Err(DecodeError::Size {
            kind,
            len: bytes.len(),
            expected,
        });
    }
    let mut out = Box::<T>::new_uninit();
    // SAFETY: the length is checked above and `T` is plain `#[repr(C)]`
    // data for which every bit pattern is valid.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr().cast::<u8>(), expected);
        Ok(out.assume_init())
    }
}

fn decode_signal(e: &SignalEvent) -> Result<SignalRecord, DecodeError> {
    if e.signo == 0 || e.signo >= 65 {
        return Err(DecodeError::BadSignal(e.signo));
    }
    let flags = e.flags;
    Ok(SignalRecord {
        boot_ns: e.boot_ns,
        signo: e.signo as i32,
        code: e.code,
        errno: e.errno,
        fault_addr: e.fault_addr,
        si_pid: e.si_pid,
        si_uid: e.si_uid,
        target: task(&e.target),
        sender: (flags & signal_flags::REMOTE_SENDER != 0).then(|| task(&e.sender)),
        from_kernel: flags & signal_flags::KERNEL_SENDER != 0,
        handled: flags & signal_flags::HANDLED != 0,
        blocked: flags & signal_flags::BLOCKED != 0,
        fault_region: region(&e.fault_vma),
        sender_stack: e.sender_stack[..(e.sender_stack_len as usize).min(e.sender_stack.len())]
            .to_vec(),
        sender_exe: path_from_components(&e.sender_exe, e.sender_exe_len as usize),
        sender_cmdline: split_cmdline(&e.sender_cmdline, e.sender_cmdline_len as usize),
    })
}

fn decode_state(e: &StateEvent) -> StateRecord {
    let flags = e.flags;
    let snapshot_len = (e.snapshot_len as usize).min(e.snapshot.len());
    let kstack_len = (e.kstack_len as usize).min(e.kstack.len());
    let modules_len = (e.modules_len as usize).min(e.modules.len());
    StateRecord {
        boot_ns: e.boot_ns,
        thread: task(&e.thread),
        regs: (flags & signal_flags::REGS_VALID != 0).then_some(e.regs),
        kstack: e.kstack[..kstack_len].to_vec(),
        snapshot_base: e.snapshot_base,
        snapshot: e.snapshot[..snapshot_len].to_vec(),
        snapshot_short: flags & signal_flags::SNAPSHOT_SHORT != 0,
        exe: path_from_components(&e.exe, e.exe_len as usize),
        cmdline: split_cmdline(&e.cmdline, e.cmdline_len as usize),
        sp_region: region(&e.sp_vma),
        mappings: e.modules[..modules_len].iter().map(mapping).collect(),
        mappings_truncated: flags & signal_flags::MODULES_TRUNCATED != 0,
        mappings_busy: flags & signal_flags::MAPPINGS_BUSY != 0,
    }
}

fn decode_oom(e: &OomEvent) -> OomRecord {
    let flags = e.flags;
    OomRecord {
        boot_ns: e.boot_ns,
        victim: task(&e.victim),
        invoker_pid: e.invoker_tgid,
        invoker_tid: e.invoker_tid,
        invoker_comm: c_string(&e.invoker_comm),
        memory: (flags & oom_flags::MM_VALID != 0).then_some(OomMemory {
            total_vm: e.total_vm,
            rss_anon: e.rss_anon,
            rss_file: e.rss_file,
            rss_shmem: e.rss_shmem,
            swap_entries: e.swap_entries,
            pgtables_bytes: e.pgtables_bytes,
        }),
        oom_score_adj: e.oom_score_adj,
        memcg: (flags & oom_flags::MEMCG != 0).then(|| OomCgroup {
            id: e.cgroup_id,
            path: path_from_components(&e.cgroup_path, e.cgroup_path_len as usize)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "/".into()),
            path_truncated: flags & oom_flags::CGROUP_PATH_TRUNCATED != 0,
            max_pages: e.memcg_max,
            usage_pages: e.memcg_usage,
        }),
    }
}

fn task(t: &TaskIdentity) -> Task {
    Task {
        pid: t.tgid,
        tid: t.tid,
        ppid: t.ppid,
        uid: t.uid,
        comm: c_string(&t.comm),
    }
}

fn region(v: &VmaSummary) -> Option<Region> {
    (v.found != 0).then_some(Region {
        start: v.start,
        end: v.end,
        vm_flags: v.vm_flags,
        has_file: v.has_file != 0,
    })
}

fn mapping(m: &Module) -> Mapping {
    let has_file = m.flags & module_flags::FILE != 0;
    Mapping {
        start: m.start,
        end: m.end,
        file_offset: m.pgoff.saturating_mul(4096),
        ino: m.ino,
        dev: kernel_dev_to_user(m.dev),
        path: if has_file {
            path_from_components(&m.path, m.path_len as usize)
        } else {
            None
        },
        path_truncated: m.flags & module_flags::PATH_TRUNCATED != 0,
        executable: m.flags & module_flags::EXEC != 0,
        vdso: m.flags & module_flags::VDSO != 0,
    }
}

/// The kernel's internal `dev_t` (major << 20 | minor) as `st_dev`.
pub fn kernel_dev_to_user(dev: u32) -> u64 {
    libc::makedev(dev >> 20, dev & 0xfffff)
}

/// Text up to the first NUL, lossily decoded.
pub fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Rebuilds a path from NUL-terminated components stored file name first.
pub fn path_from_components(buf: &[u8], len: usize) -> Option<PathBuf> {
    let used = &buf[..len.min(buf.len())];
    let parts: Vec<&[u8]> = used.split(|&b| b == 0).filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return None;
    }
    let mut path = Vec::with_capacity(used.len() + 1);
    for part in parts.iter().rev() {
        path.push(b'/');
        path.extend_from_slice(part);
    }
    Some(PathBuf::from(OsString::from_vec(path)))
}

fn split_cmdline(buf: &[u8], len: usize) -> Vec<String> {
    let used = &buf[..len.min(buf.len())];
    let used = used.strip_suffix(&[0]).unwrap_or(used);
    if used.is_empty() {
        return Vec::new();
    }
    used.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components_are_reversed() {
        let buf = b"libc.so.6\0x86_64-linux-gnu\0lib\0usr\0";
        assert_eq!(
            path_from_components(buf, buf.len()),
            Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"))
        );
        assert_eq!(path_from_components(b"\0\0", 2), None);
        assert_eq!(
            path_from_components(b"abc", 100),
            Some(PathBuf::from("/abc"))
        );
    }

    #[test]
    fn cmdline_splits_on_nul() {
        assert_eq!(split_cmdline(b"./a\0-x\0\0junk", 7), vec!["./a", "-x"]);
        assert!(split_cmdline(b"", 0).is_empty());
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert_eq!(decode(&[1, 0]).unwrap_err(), DecodeError::Empty(2));
        assert_eq!(
            decode(&9u32.to_ne_bytes()).unwrap_err(),
            DecodeError::UnknownKind(9)
        );
        let err = decode(&kind::SIGNAL.to_ne_bytes()).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Size {
                kind: kind::SIGNAL,
                len: 4,
                ..
            }
        ));
    }

    #[test]
    fn exit_record_round_trips() {
        let raw = ExitEvent {
            kind: kind::EXIT,
            _pad: 0,
            boot_ns: 5,
            tgid: 10,
            tid: 11,
            exit_code: 0x8b,
            flags: 0,
        };
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const raw).cast::<u8>(), size_of::<ExitEvent>())
        };
        match decode(bytes).unwrap() {
            Event::Exit(e) => assert_eq!((e.pid, e.tid, e.status), (10, 11, 0x8b)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn evidence_record_round_trips() {
        // The layout both sides agree on: no implicit padding.
        assert_eq!(
            size_of::<EvidenceEvent>(),
            40 + 3 * tracer_common::EVIDENCE_TEXT
        );
        assert_eq!(std::mem::offset_of!(EvidenceEvent, code), 32);
        let mut raw = EvidenceEvent {
            kind: kind::EVIDENCE,
            source: tracer_common::evidence_source::ABORT,
            boot_ns: 7,
            tgid: 10,
            tid: 12,
            line: 0,
            _pad: 0,
            code: 0x7f00_1234_5670,
            texts: [[0; tracer_common::EVIDENCE_TEXT]; 3],
        };
        raw.texts[1][..17].copy_from_slice(b"St13runtime_error");
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const raw).cast::<u8>(), size_of::<EvidenceEvent>())
        };
        match decode(bytes).unwrap() {
            Event::Evidence(e) => {
                assert_eq!((e.pid, e.tid, e.code), (10, 12, 0x7f00_1234_5670));
                assert_eq!(e.text, None);
                assert_eq!(e.file.as_deref(), Some("St13runtime_error"));
                assert_eq!(e.function, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn kernel_dev_encoding() {
        // 8:1 (sda1) is 0x800001 inside the kernel.
        assert_eq!(kernel_dev_to_user((8 << 20) | 1), libc::makedev(8, 1));
    }
}
