//! Who sent a signal: the sender's identity, command line and user stack.
//!
//! The kernel records the sender's frame-pointer stack at the moment it
//! generated the signal. The sender usually outlives its victim, so its
//! mappings and command line are read from /proc when the report is built;
//! a sender that is gone by then keeps its identity and raw addresses.

use std::path::PathBuf;

use super::{
    Frame, Sender,
    frames::{locate_file, symbolize_frames},
};
use crate::{
    events::{Mapping, SignalRecord, Task},
    support::procfs::{self, MapsEntry},
    symbolize::Symbolizer,
    unwind::RawFrame,
};

/// Most mappings read from a sender's /proc/PID/maps.
const MAX_MAPPINGS: usize = 65536;

pub(crate) fn describe_sender(
    symbolizer: &mut Symbolizer,
    signal: &SignalRecord,
    task: &Task,
    diagnostics: &mut Vec<String>,
) -> Sender {
    let pid = task.pid;
    let stack = &signal.sender_stack;
    let mappings = read_maps(pid);
    let raw: Vec<RawFrame> = stack
        .iter()
        .enumerate()
        .map(|(i, &address)| RawFrame {
            address,
            is_return: i > 0,
        })
        .collect();
    let frames: Vec<Frame> = if mappings.is_empty() {
        raw.iter().map(|r| Frame::unknown(r.address)).collect()
    } else {
        let mut notes = Vec::new();
        let located: Vec<_> = mappings
            .iter()
            .map(|m| locate_file(pid, m, &mut notes))
            .collect();
        let files: Vec<Option<PathBuf>> = located
            .iter()
            .map(|l| l.as_ref().map(|l| l.path()))
            .collect();
        symbolize_frames(&mut symbolizer.batch(), &raw, &mappings, &files, &mut notes)
    };
    if mappings.is_empty() && !stack.is_empty() {
        diagnostics.push(format!(
            "the sender (pid {pid}) was gone before its stack could be symbolized"
        ));
    }
    // What the kernel captured is exact; /proc is the fallback for older
    // records, and may already belong to a successor with the same pid.
    let cmdline = if signal.sender_cmdline.is_empty() {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                raw.split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    } else {
        signal.sender_cmdline.clone()
    };
    let exe = match &signal.sender_exe {
        Some(exe) => Some(exe.display().to_string()),
        None => std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .map(|p| p.display().to_string()),
    };
    Sender {
        pid,
        tid: task.tid,
        uid: task.uid,
        comm: task.comm.clone(),
        exe,
        cmdline,
        frames,
    }
}

/// The executable mappings of a live process, from /proc/PID/maps.
fn read_maps(pid: u32) -> Vec<Mapping> {
    procfs::maps(pid)
        .unwrap_or_default()
        .iter()
        .take(MAX_MAPPINGS)
        .filter_map(mapping)
        .collect()
}

/// A maps line as the kernel's mapping record, if it is executable.
fn mapping(m: &MapsEntry) -> Option<Mapping> {
    m.executable().then(|| Mapping::from(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_maps_lines_become_mappings() {
        let line = |l: &str| mapping(&procfs::parse_maps_line(l).unwrap());
        let m = line("7f00a000-7f00b000 r-xp 00002000 fe:00 1234   /usr/lib/libc.so.6").unwrap();
        assert_eq!(
            (m.start, m.end, m.file_offset, m.ino),
            (0x7f00a000, 0x7f00b000, 0x2000, 1234)
        );
        assert_eq!(m.path, Some(PathBuf::from("/usr/lib/libc.so.6")));
        assert!(line("7f00a000-7f00b000 rw-p 00000000 00:00 0").is_none());
        let v = line("7ffd1000-7ffd3000 r-xp 00000000 00:00 0   [vdso]").unwrap();
        assert!(v.vdso && v.path.is_none());
    }

    #[test]
    fn our_own_stack_symbolizes() {
        let me = Task {
            pid: std::process::id(),
            tid: std::process::id(),
            ppid: 0,
            uid: 0,
            comm: "t".into(),
        };
        let here = mapping as fn(&MapsEntry) -> Option<Mapping> as usize as u64;
        let signal = SignalRecord {
            boot_ns: 0,
            signo: 9,
            code: 0,
            errno: 0,
            fault_addr: 0,
            si_pid: me.pid,
            si_uid: 0,
            target: me.clone(),
            sender: Some(me.clone()),
            from_kernel: false,
            handled: false,
            blocked: false,
            fault_region: None,
            sender_stack: vec![here],
            sender_exe: None,
            sender_cmdline: Vec::new(),
        };
        let mut notes = Vec::new();
        let s = describe_sender(&mut Symbolizer::new(Vec::new()), &signal, &me, &mut notes);
        assert_eq!(s.frames.len(), 1);
        assert!(s.frames[0].module.is_some(), "{:?} {notes:?}", s.frames);
        assert!(!s.cmdline.is_empty());
    }
}
