//! Kernel structure offsets from the running kernel's BTF.
//!
//! The BPF programs read `task_struct`, `vm_area_struct`, `file` and friends
//! through plain probe reads. Their layouts change between kernel builds, so
//! each offset is looked up by name in `/sys/kernel/btf/vmlinux` at start-up
//! and handed to the programs as read-only data. Anonymous structs and
//! unions (e.g. `vm_start` inside `vm_area_struct`'s first union) are
//! searched through.

use std::path::Path;

use tracer_common::KernelOffsets;

use super::{btf::Btf, kernel::KernelCaps};

/// Where the kernel exposes its own type information.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error(
        "kernel BTF not found at {VMLINUX_BTF}: this kernel was built without CONFIG_DEBUG_INFO_BTF, which crashtrace needs"
    )]
    NoBtf,
    #[error("cannot read kernel BTF at {VMLINUX_BTF}: {0}")]
    Read(std::io::Error),
    #[error("cannot parse kernel BTF at {VMLINUX_BTF}: {0}")]
    Parse(#[from] super::btf::BtfError),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("kernel BTF: {0}")]
    Layout(String),
}

struct Resolver {
    btf: Btf,
}

impl Resolver {
    /// The struct (or union) named `name` that has members.
    fn strukt(&self, name: &str) -> Result<u32, OffsetError> {
        self.btf
            .structs_named(name)
            .into_iter()
            .next()
            .ok_or_else(|| OffsetError::NoStruct(name.to_string()))
    }

    /// Byte offset and type of `member` in struct `id`, searching anonymous
    /// members too.
    fn member_in(
        &self,
        id: u32,
        member: &str,
        depth: u32,
    ) -> Result<Option<(u32, u32)>, OffsetError> {
        if depth > 8 {
            return Ok(None);
        }
        for m in self.btf.members(id)? {
            let ty = self.btf.resolve(m.type_id);
            if m.name == member {
                return Ok(Some((m.bit_offset / 8, ty)));
            }
            if m.name.is_empty()
                && self.btf.is_struct(ty)
                && let Some((o, t)) = self.member_in(ty, member, depth + 1)?
            {
                return Ok(Some((m.bit_offset / 8 + o, t)));
            }
        }
        Ok(None)
    }

    /// Offset of a dotted member path such as `["context", "vdso"]`.
    fn offset(&self, strukt: &str, path: &[&str]) -> Result<u32, OffsetError> {
        let mut id = self.strukt(strukt)?;
        let mut total = 0;
        let mut current = strukt.to_string();
        for (i, member) in path.iter().enumerate() {
            let (offset, ty) =
                self.member_in(id, member, 0)?
                    .ok_or_else(|| OffsetError::NoMember {
                        strukt: current.clone(),
                        member: (*member).to_string(),
                    })?;
            total += offset;
            if i + 1 < path.len() {
                if !self.btf.is_struct(ty) {
                    return Err(OffsetError::Layout(format!(
                        "{current}.{member} is not a struct"
                    )));
                }
                id = ty;
                current = format!("{current}.{member}");
            }
        }
        Ok(total)
    }

    fn size(&self, strukt: &str) -> Result<u32, OffsetError> {
        let id = self.strukt(strukt)?;
        self.btf
            .size(id)
            .ok_or_else(|| OffsetError::NoStruct(strukt.to_string()))
    }
}

/// Resolves every offset the BPF programs use, and what the kernel
/// offers them (one read of its BTF for both).
pub fn resolve() -> Result<(KernelOffsets, KernelCaps), OffsetError> {
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(OffsetError::NoBtf);
    }
    let data = std::fs::read(VMLINUX_BTF).map_err(OffsetError::Read)?;
    let resolver = Resolver {
        btf: Btf::parse(data)?,
    };
    let caps = KernelCaps::from_btf(&resolver.btf);
    Ok((resolve_with(&resolver)?, caps))
}

fn resolve_with(r: &Resolver) -> Result<KernelOffsets, OffsetError> {
    let o = |s: &str, m: &str| r.offset(s, &[m]);
    // The BPF side reads `sa_handler` at offset 0 of each `k_sigaction`.
    if r.offset("k_sigaction", &["sa", "sa_handler"])? != 0 {
        return Err(OffsetError::Layout(
            "k_sigaction.sa.sa_handler is not at offset 0".into(),
        ));
    }
    Ok(KernelOffsets {
        task_tgid: o("task_struct", "tgid")?,
        task_pid: o("task_struct", "pid")?,
        task_comm: o("task_struct", "comm")?,
        task_real_parent: o("task_struct", "real_parent")?,
        task_real_cred: o("task_struct", "real_cred")?,
        task_sighand: o("task_struct", "sighand")?,
        task_signal: o("task_struct", "signal")?,
        task_blocked: o("task_struct", "blocked")?,
        task_exit_code: o("task_struct", "exit_code")?,
        task_mm: o("task_struct", "mm")?,
        mm_exe_file: o("mm_struct", "exe_file")?,
        mm_mmap_lock: o("mm_struct", "mmap_lock")?,
        mm_arg_start: o("mm_struct", "arg_start")?,
        mm_arg_end: o("mm_struct", "arg_end")?,
        mm_vdso: r.offset("mm_struct", &["context", "vdso"])?,
        cred_uid: o("cred", "uid")?,
        sighand_action: o("sighand_struct", "action")?,
        k_sigaction_size: r.size("k_sigaction")?,
        signal_live: o("signal_struct", "live")?,
        vma_start: o("vm_area_struct", "vm_start")?,
        vma_end: o("vm_area_struct", "vm_end")?,
        vma_pgoff: o("vm_area_struct", "vm_pgoff")?,
        vma_file: o("vm_area_struct", "vm_file")?,
        vma_flags: o("vm_area_struct", "vm_flags")?,
        file_path: o("file", "f_path")?,
        file_inode: o("file", "f_inode")?,
        path_mnt: o("path", "mnt")?,
        path_dentry: o("path", "dentry")?,
        dentry_parent: o("dentry", "d_parent")?,
        dentry_name: o("dentry", "d_name")?,
        qstr_name: o("qstr", "name")?,
        inode_ino: o("inode", "i_ino")?,
        inode_sb: o("inode", "i_sb")?,
        sb_dev: o("super_block", "s_dev")?,
        mount_mnt: o("mount", "mnt")?,
        mount_parent: o("mount", "mnt_parent")?,
        mount_mountpoint: o("mount", "mnt_mountpoint")?,
        vfsmount_root: o("vfsmount", "mnt_root")?,
        ..oom_offsets(r)
    })
}

/// Offsets for the OOM-kill record. Each is optional: a kernel that lacks
/// one reports OOM kills with fewer figures (a zero offset is not read).
fn oom_offsets(r: &Resolver) -> KernelOffsets {
    let o = |s: &str, path: &[&str]| r.offset(s, path).unwrap_or(0);
    // Since 6.2 `rss_stat` is an array of per-CPU counters; before, a
    // `struct mm_rss_stat` holding an array of `atomic_long_t`, which the
    // BPF side reads as counters of 8 bytes whose value is at offset 0.
    let percpu_rss = r.size("mm_rss_stat").is_err();
    let (counter_count, counter_size) = if percpu_rss {
        (
            o("percpu_counter", &["count"]),
            r.size("percpu_counter").unwrap_or(0),
        )
    } else {
        (0, 8)
    };
    KernelOffsets {
        mm_total_vm: o("mm_struct", &["total_vm"]),
        mm_rss_stat: if percpu_rss {
            o("mm_struct", &["rss_stat"])
        } else {
            o("mm_struct", &["rss_stat", "count"])
        },
        mm_pgtables_bytes: o("mm_struct", &["pgtables_bytes"]),
        percpu_counter_count: counter_count,
        percpu_counter_size: counter_size,
        signal_oom_score_adj: o("signal_struct", &["oom_score_adj"]),
        task_cgroups: o("task_struct", &["cgroups"]),
        css_set_subsys: o("css_set", &["subsys"]),
        memory_cgrp_id: r.btf.enumerator("memory_cgrp_id").unwrap_or(0),
        css_parent: o("cgroup_subsys_state", &["parent"]),
        memcg_css: o("mem_cgroup", &["css"]),
        memcg_memory: o("mem_cgroup", &["memory"]),
        page_counter_usage: o("page_counter", &["usage"]),
        page_counter_max: o("page_counter", &["max"]),
        css_cgroup: o("cgroup_subsys_state", &["cgroup"]),
        cgroup_kn: o("cgroup", &["kn"]),
        // Renamed `__parent` in 6.15.
        kn_parent: r
            .offset("kernfs_node", &["__parent"])
            .or_else(|_| r.offset("kernfs_node", &["parent"]))
            .unwrap_or(0),
        kn_name: o("kernfs_node", &["name"]),
        kn_id: o("kernfs_node", &["id"]),
        task_stack: o("task_struct", &["stack"]),
        mm_rb: o("mm_struct", &["mm_rb"]),
        vma_rb: o("vm_area_struct", &["vm_rb"]),
        mm_mmap: o("mm_struct", &["mmap"]),
        vma_next: o("vm_area_struct", &["vm_next"]),
        rb_left: o("rb_node", &["rb_left"]),
        rb_right: o("rb_node", &["rb_right"]),
        ..KernelOffsets::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_on_this_kernel() {
        let (offsets, _) = resolve().expect("this machine's kernel has BTF");
        // `tgid` follows `pid` in every kernel since 2.6.
        assert_eq!(offsets.task_tgid, offsets.task_pid + 4);
        assert!(offsets.k_sigaction_size >= 24);
        assert!(offsets.vma_end > offsets.vma_start || offsets.vma_end == offsets.vma_start + 8);
        // The OOM figures resolve on the kernels this project runs on.
        assert!(offsets.mm_rss_stat > 0 && offsets.percpu_counter_size >= 16);
        assert!(offsets.kn_parent > 0 && offsets.kn_name > 0 && offsets.cgroup_kn > 0);
        assert!(offsets.memcg_memory > 0 && offsets.page_counter_max > 0);
        assert!(offsets.task_cgroups > 0);
    }
}
