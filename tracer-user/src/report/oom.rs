//! OOM kills: the report's `oom` object and the `oom-kill` class.
//!
//! The kernel side records the OOM killer's choice just before it sends
//! SIGKILL (see `tracer-ebpf/src/oom.rs`), so a SIGKILL from the kernel
//! that follows such a record is the OOM killer's, and the record's
//! figures are the evidence: what the victim held, and which limit, a
//! memory cgroup's or the whole system's, ran out.

use serde::{Deserialize, Serialize};

use crate::{
    classify::Classification,
    events::{OomCgroup, OomRecord, SignalRecord},
};

/// The OOM killer's view of its victim, sizes in KiB as in the kernel's
/// "Killed process" log line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OomInfo {
    pub total_vm_kib: Option<u64>,
    pub anon_rss_kib: Option<u64>,
    pub file_rss_kib: Option<u64>,
    pub shmem_rss_kib: Option<u64>,
    pub swap_kib: Option<u64>,
    pub pgtables_kib: Option<u64>,
    pub oom_score_adj: i32,
    /// The victim's nearest memory cgroup that had reached its limit; null
    /// when none had (a system-wide OOM, or a cpuset or memory policy).
    pub cgroup: Option<OomCgroupInfo>,
    /// The task whose allocation invoked the OOM killer.
    pub invoker: OomInvoker,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OomCgroupInfo {
    /// Path relative to the root of its cgroup hierarchy.
    pub path: String,
    pub path_truncated: bool,
    pub id: u64,
    /// `memory.max` (`memory.limit_in_bytes` on cgroup v1).
    pub limit_bytes: u64,
    pub usage_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OomInvoker {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

pub fn describe(oom: &OomRecord) -> OomInfo {
    let page = page_size();
    let kib = |pages: u64| pages.saturating_mul(page) / 1024;
    let m = oom.memory.as_ref();
    OomInfo {
        total_vm_kib: m.map(|m| kib(m.total_vm)),
        anon_rss_kib: m.map(|m| kib(m.rss_anon)),
        file_rss_kib: m.map(|m| kib(m.rss_file)),
        shmem_rss_kib: m.map(|m| kib(m.rss_shmem)),
        swap_kib: m.map(|m| kib(m.swap_entries)),
        pgtables_kib: m.map(|m| m.pgtables_bytes / 1024),
        oom_score_adj: oom.oom_score_adj,
        cgroup: oom.memcg.as_ref().map(|g: &OomCgroup| OomCgroupInfo {
            path: g.path.clone(),
            path_truncated: g.path_truncated,
            id: g.id,
            limit_bytes: g.max_pages.saturating_mul(page),
            usage_bytes: g.usage_pages.saturating_mul(page),
        }),
        invoker: OomInvoker {
            pid: oom.invoker_pid,
            tid: oom.invoker_tid,
            comm: oom.invoker_comm.clone(),
        },
    }
}

/// `oom-kill` when the deciding signal is the kernel's SIGKILL and the OOM
/// killer had chosen this process.
pub fn classify(oom: &OomRecord, cause: Option<&SignalRecord>) -> Option<Classification> {
    let cause = cause?;
    if cause.signo != libc::SIGKILL || !cause.from_kernel {
        return None;
    }
    let info = describe(oom);
    let mut evidence = vec![format!(
        "SIGKILL sent by the kernel, and the OOM killer marked pid {} ({}) as its victim",
        oom.victim.pid, oom.victim.comm
    )];
    if oom.memory.is_some() {
        evidence.push(format!(
            "the victim held total-vm {} KiB, anon-rss {} KiB, file-rss {} KiB, shmem-rss {} KiB, swap {} KiB, page tables {} KiB; oom_score_adj {}",
            info.total_vm_kib.unwrap_or(0),
            info.anon_rss_kib.unwrap_or(0),
            info.file_rss_kib.unwrap_or(0),
            info.shmem_rss_kib.unwrap_or(0),
            info.swap_kib.unwrap_or(0),
            info.pgtables_kib.unwrap_or(0),
            oom.oom_score_adj
        ));
    }
    evidence.push(match &info.cgroup {
        Some(g) => format!(
            "its memory cgroup {} had reached its limit: {} of {} in use",
            g.path,
            mib(g.usage_bytes),
            mib(g.limit_bytes),
        ),
        None => "none of the victim's memory cgroups was at its limit: the system (or the victim's cpuset or memory policy) ran out of memory".into(),
    });
    let i = &info.invoker;
    evidence.push(if i.pid == oom.victim.pid {
        "the victim's own allocation invoked the OOM killer".to_string()
    } else {
        format!(
            "the allocation of pid {} ({}) invoked the OOM killer",
            i.pid, i.comm
        )
    });
    Some(Classification {
        class: "oom-kill",
        evidence,
        message: None,
    })
}

/// One line for the report's summary.
pub fn summary(oom: &OomRecord) -> String {
    let info = describe(oom);
    match info.cgroup {
        Some(g) => format!(
            "killed by the OOM killer: memory cgroup {} reached its limit of {}",
            g.path,
            mib(g.limit_bytes)
        ),
        None => "killed by the OOM killer: out of memory".into(),
    }
}

/// The `oom` line of the text report.
pub fn text_line(info: &OomInfo) -> String {
    let mut parts = Vec::new();
    if let Some(g) = &info.cgroup {
        parts.push(format!(
            "cgroup {} limit {} usage {}",
            g.path,
            mib(g.limit_bytes),
            mib(g.usage_bytes)
        ));
    }
    if let (Some(vm), Some(anon), Some(file), Some(shmem)) = (
        info.total_vm_kib,
        info.anon_rss_kib,
        info.file_rss_kib,
        info.shmem_rss_kib,
    ) {
        parts.push(format!(
            "total-vm {vm} KiB, anon-rss {anon} KiB, file-rss {file} KiB, shmem-rss {shmem} KiB"
        ));
    }
    parts.push(format!("oom_score_adj {}", info.oom_score_adj));
    parts.join("; ")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{OomMemory, Task};

    fn record(memcg: Option<OomCgroup>) -> OomRecord {
        OomRecord {
            boot_ns: 1,
            victim: Task {
                pid: 50,
                tid: 50,
                ppid: 1,
                uid: 0,
                comm: "hog".into(),
            },
            invoker_pid: 50,
            invoker_tid: 50,
            invoker_comm: "hog".into(),
            memory: Some(OomMemory {
                total_vm: 10_000,
                rss_anon: 8192,
                rss_file: 100,
                rss_shmem: 0,
                swap_entries: 0,
                pgtables_bytes: 81920,
            }),
            oom_score_adj: 0,
            memcg,
        }
    }

    fn kill(from_kernel: bool) -> SignalRecord {
        SignalRecord {
            boot_ns: 0,
            signo: libc::SIGKILL,
            code: 0x80,
            errno: 0,
            fault_addr: 0,
            si_pid: 0,
            si_uid: 0,
            target: record(None).victim,
            sender: None,
            from_kernel,
            handled: false,
            blocked: false,
            fault_region: None,
            sender_stack: Vec::new(),
            sender_exe: None,
            sender_cmdline: Vec::new(),
        }
    }

    #[test]
    fn memcg_kill_names_the_cgroup_and_limit() {
        let oom = record(Some(OomCgroup {
            id: 7,
            path: "/test/box".into(),
            path_truncated: false,
            max_pages: 8192,
            usage_pages: 8190,
        }));
        let c = classify(&oom, Some(&kill(true))).unwrap();
        assert_eq!(c.class, "oom-kill");
        assert!(c.evidence.iter().any(|e| e.contains("/test/box")), "{c:?}");
        let info = describe(&oom);
        assert_eq!(info.cgroup.unwrap().limit_bytes, 8192 * page_size());
        assert_eq!(info.anon_rss_kib, Some(8192 * page_size() / 1024));
        assert!(summary(&oom).contains("/test/box"));
        assert!(text_line(&describe(&oom)).contains("cgroup /test/box"));
        // A SIGKILL from a process is not the OOM killer's.
        assert!(classify(&oom, Some(&kill(false))).is_none());
        assert!(classify(&oom, None).is_none());
    }

    #[test]
    fn without_a_limited_cgroup_the_system_ran_out() {
        let c = classify(&record(None), Some(&kill(true))).unwrap();
        assert!(
            c.evidence
                .iter()
                .any(|e| e.contains("none of the victim's memory cgroups"))
        );
        assert!(summary(&record(None)).contains("out of memory"));
    }
}
