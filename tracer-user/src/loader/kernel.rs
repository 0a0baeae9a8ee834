//! What the running kernel offers the programs, read from its BTF.
//!
//! Distribution kernels from 5.10 on differ in where a dying thread can
//! still be seen whole, in what their tracepoints pass, and in which BPF
//! helpers they know. Version numbers say little about that (distributions
//! backport), so every decision is made from the kernel's own type
//! information: a tracepoint's prototype, and the `BPF_FUNC_*` enumerators
//! of `enum bpf_func_id`, which list exactly the helpers it knows.

use super::btf::Btf;

/// The capabilities the loader chooses programs by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCaps {
    /// `sched_process_exit` passes `group_dead`: it runs before `exit_mm()`
    /// (Linux 6.16 and later), so the exiting thread's memory is still
    /// attached there.
    pub exit_tracepoint_has_mm: bool,
    /// `mark_victim` passes the victim's `task_struct` (newer kernels and
    /// backports), not only its pid.
    pub mark_victim_task: bool,
    /// `mark_victim` exists at all.
    pub mark_victim: bool,
    /// Helpers the programs use that older kernels lack, by name.
    pub helpers: Vec<&'static str>,
}

/// Set to `1`, crashtrace uses its programs for kernels without
/// [`LEGACY_REPLACES`] even where the kernel has them (for tests).
pub const FALLBACKS_ENV: &str = "CRASHTRACE_KERNEL_FALLBACKS";

/// The helpers the `_legacy` programs do without.
const LEGACY_REPLACES: &[&str] = &["get_current_task_btf", "task_pt_regs", "find_vma", "loop"];

/// Helpers newer than 5.10 that the full-featured programs call.
pub const MODERN_HELPERS: &[&str] = &[
    "get_current_task_btf",
    "task_pt_regs",
    "find_vma",
    "loop",
    "get_attach_cookie",
];

impl KernelCaps {
    pub fn from_btf(btf: &Btf) -> Self {
        let exit = btf.tracepoint_params("sched_process_exit");
        let victim = btf.tracepoint_params("mark_victim");
        // The fallbacks for older kernels, chosen on a kernel that does not
        // need them, so that the test suite exercises them on any host.
        let fallbacks = std::env::var_os(FALLBACKS_ENV).is_some_and(|v| v == "1");
        Self {
            // (void *ctx, struct task_struct *p, bool group_dead)
            exit_tracepoint_has_mm: exit.is_some_and(|p| p.len() >= 3),
            // (void *ctx, struct task_struct *task, uid_t uid) versus
            // (void *ctx, int pid)
            mark_victim_task: victim
                .as_ref()
                .is_some_and(|p| p.len() >= 2 && btf.is_pointer(p[1])),
            mark_victim: victim.is_some(),
            helpers: MODERN_HELPERS
                .iter()
                .copied()
                .filter(|h| btf.enumerator(&format!("BPF_FUNC_{h}")).is_some())
                .filter(|h| !fallbacks || !LEGACY_REPLACES.contains(h))
                .collect(),
        }
    }

    /// Whether the full-featured capture programs load here: they read the
    /// registers with `bpf_task_pt_regs` and the mappings with
    /// `bpf_find_vma` inside `bpf_loop`. Elsewhere the `_legacy` programs
    /// do the same with plain reads and bounded loops.
    pub fn has_full_capture_helpers(&self) -> bool {
        LEGACY_REPLACES.iter().all(|h| self.has_helper(h))
    }

    pub fn has_helper(&self, name: &str) -> bool {
        self.helpers.contains(&name)
    }

    /// The helpers of [`MODERN_HELPERS`] this kernel lacks (the attach
    /// cookie only matters to the uprobes).
    pub fn missing_helpers(&self) -> Vec<&'static str> {
        MODERN_HELPERS
            .iter()
            .copied()
            .filter(|h| !self.has_helper(h))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_is_read() {
        let data = std::fs::read(super::super::offsets::VMLINUX_BTF).expect("kernel BTF");
        let caps = KernelCaps::from_btf(&Btf::parse(data).unwrap());
        // Every kernel crashtrace supports has these tracepoints.
        assert!(caps.mark_victim, "{caps:?}");
        // The host the suite runs on is 6.16 or later (it has every helper
        // and the tracepoint that runs before exit_mm()).
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().unwrap().parse().unwrap();
        let minor: u32 = parts.next().unwrap().parse().unwrap();
        assert_eq!(
            caps.exit_tracepoint_has_mm,
            (major, minor) >= (6, 16),
            "{caps:?}"
        );
        if (major, minor) >= (5, 17) {
            assert!(caps.missing_helpers().is_empty(), "{caps:?}");
        }
    }
}
