//! Naming the kernel feature that is missing when the BPF programs do not
//! load.
//!
//! The programs call BPF helpers that only recent kernels have (see
//! [`HELPERS`]). On an older kernel the verifier refuses the program with a
//! line such as `invalid func unknown#180`: the helper's number, not its
//! name, because that kernel has never heard of it. A user can do nothing
//! with that line, so the failure is translated into the helper's name, what
//! crashtrace needs it for, and the first kernel release that has it.

/// A BPF helper the programs call that older kernels lack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Helper {
    /// The helper's number in the kernel's UAPI (`BPF_FUNC_*`).
    pub id: u32,
    pub name: &'static str,
    /// The first Linux release that offers it to tracing programs.
    pub since: &'static str,
    /// What crashtrace needs it for.
    pub used_for: &'static str,
}

/// Helpers newer than the kernels with BTF tracepoints (5.5) and the BPF
/// ring buffer (5.8), which crashtrace needs as well.
pub const HELPERS: &[Helper] = &[
    Helper {
        id: 158,
        name: "bpf_get_current_task_btf",
        since: "5.11",
        used_for: "reading the dying task's state",
    },
    Helper {
        id: 173,
        name: "bpf_get_func_ip",
        since: "5.15",
        used_for: "the libc abort() probe",
    },
    Helper {
        id: 174,
        name: "bpf_get_attach_cookie",
        since: "5.15",
        used_for: "the libc abort() probe",
    },
    Helper {
        id: 175,
        name: "bpf_task_pt_regs",
        since: "5.15",
        used_for: "capturing the crashing thread's registers",
    },
    Helper {
        id: 180,
        name: "bpf_find_vma",
        since: "5.17",
        used_for: "recording the file behind each stack address, so that stacks are symbolized \
                   after the process is gone",
    },
    Helper {
        id: 181,
        name: "bpf_loop",
        since: "5.17",
        used_for: "walking the stack snapshot for code addresses",
    },
];

/// The helper a verifier log says is missing: from its last line of the
/// form `invalid func NAME#ID` (an ID the kernel does not know at all) or
/// `unknown func NAME#ID` (one it does not offer to this program type).
pub fn missing_helper(verifier_log: &str) -> Option<&'static Helper> {
    verifier_log.lines().rev().find_map(|line| {
        let rest = ["invalid func ", "unknown func "]
            .iter()
            .find_map(|prefix| line.find(prefix).map(|at| &line[at + prefix.len()..]))?;
        let (_, id) = rest.split_whitespace().next()?.rsplit_once('#')?;
        let id: u32 = id.parse().ok()?;
        HELPERS.iter().find(|h| h.id == id)
    })
}

/// A sentence for the user about `helper` missing from the running kernel.
pub fn explain(helper: &Helper) -> String {
    let release = uname_release().unwrap_or_else(|| "this kernel".into());
    format!(
        "the running kernel ({release}) lacks the BPF helper {}, which crashtrace needs for {}; \
         it needs Linux {} or later",
        helper.name, helper.used_for, helper.since
    )
}

fn uname_release() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    Some(text.trim().to_owned()).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_helper_an_older_verifier_refuses() {
        let log = "func#0 @0\n0: R1=ctx() R10=fp0\n; let vma = find(task, addr);\n\
                   12: (85) call unknown#180\ninvalid func unknown#180\n\
                   processed 12 insns (limit 1000000)";
        assert_eq!(missing_helper(log).map(|h| h.name), Some("bpf_find_vma"));
        let log = "27: (85) call bpf_loop#181\nunknown func bpf_loop#181\n";
        assert_eq!(missing_helper(log).map(|h| h.since), Some("5.17"));
        assert_eq!(missing_helper("invalid func unknown#9999"), None);
        assert_eq!(missing_helper("R1 invalid mem access 'scalar'"), None);
        assert_eq!(missing_helper("invalid func unknown#"), None);
        let text = explain(&HELPERS[4]);
        assert!(
            text.contains("bpf_find_vma") && text.contains("5.17"),
            "{text}"
        );
    }

    #[test]
    fn helper_ids_are_the_kernel_s() {
        use aya_obj::generated::bpf_func_id as id;
        for helper in HELPERS {
            let expected = match helper.name {
                "bpf_get_current_task_btf" => id::BPF_FUNC_get_current_task_btf,
                "bpf_get_func_ip" => id::BPF_FUNC_get_func_ip,
                "bpf_get_attach_cookie" => id::BPF_FUNC_get_attach_cookie,
                "bpf_task_pt_regs" => id::BPF_FUNC_task_pt_regs,
                "bpf_find_vma" => id::BPF_FUNC_find_vma,
                "bpf_loop" => id::BPF_FUNC_loop,
                other => panic!("no expected id for {other}"),
            };
            assert_eq!(helper.id, expected as u32, "{}", helper.name);
        }
    }
}
