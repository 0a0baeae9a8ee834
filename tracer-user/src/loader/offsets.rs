//! Kernel structure offsets from the running kernel's BTF.
//!
//! The BPF programs read `task_struct`, `vm_area_struct`, `file` and friends
//! through plain probe reads. Their layouts change between kernel builds, so
//! each offset is looked up by name in `/sys/kernel/btf/vmlinux` at start-up
//! and handed to the programs as read-only data. Anonymous structs and
//! unions (e.g. `vm_start` inside `vm_area_struct`'s first union) are
//! searched through.

use std::path::Path;

use btf_rs::{Btf, Type};
use tracer_common::KernelOffsets;

/// Where the kernel exposes its own type information.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error(
        "kernel BTF not found at {VMLINUX_BTF}: this kernel was built without CONFIG_DEBUG_INFO_BTF, which crashtrace needs"
    )]
    NoBtf,
    #[error("cannot parse kernel BTF at {VMLINUX_BTF}: {0}")]
    Parse(String),
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
    /// The struct (or union) named `name` that has members (skipping
    /// forward declarations).
    fn strukt(&self, name: &str) -> Result<btf_rs::Struct, OffsetError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| OffsetError::NoStruct(name.to_string()))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) | Type::Union(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| OffsetError::NoStruct(name.to_string()))
    }

    /// Strips typedefs and qualifiers down to a struct or union, if any.
    fn as_struct(&self, mut ty: Type) -> Option<btf_rs::Struct> {
        for _ in 0..16 {
            ty = match ty {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(t) => self.btf.resolve_chained_type(&t).ok()?,
                Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                    self.btf.resolve_chained_type(&t).ok()?
                }
                Type::TypeTag(t) => self.btf.resolve_chained_type(&t).ok()?,
                _ => return None,
            };
        }
        None
    }

    /// Byte offset of `member` in `s`, searching anonymous members too.
    fn member_in(&self, s: &btf_rs::Struct, member: &str, depth: u32) -> Option<(u32, Type)> {
        if depth > 8 {
            return None;
        }
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let ty = self.btf.resolve_chained_type(m).ok()?;
            let offset = m.bit_offset() / 8;
            if name == member {
                return Some((offset, ty));
            }
            if name.is_empty()
                && let Some(inner) = self.as_struct(ty)
                && let Some((o, t)) = self.member_in(&inner, member, depth + 1)
            {
                return Some((offset + o, t));
            }
        }
        None
    }

    /// Offset of a dotted member path such as `["context", "vdso"]`.
    fn offset(&self, strukt: &str, path: &[&str]) -> Result<u32, OffsetError> {
        let mut s = self.strukt(strukt)?;
        let mut total = 0;
        let mut current = strukt.to_string();
        for (i, member) in path.iter().enumerate() {
            let (offset, ty) =
                self.member_in(&s, member, 0)
                    .ok_or_else(|| OffsetError::NoMember {
                        strukt: current.clone(),
                        member: (*member).to_string(),
                    })?;
            total += offset;
            if i + 1 < path.len() {
                s = self.as_struct(ty).ok_or_else(|| {
                    OffsetError::Layout(format!("{current}.{member} is not a struct"))
                })?;
                current = format!("{current}.{member}");
            }
        }
        Ok(total)
    }

    fn size(&self, strukt: &str) -> Result<u32, OffsetError> {
        Ok(self.strukt(strukt)?.size() as u32)
    }
}

/// Resolves every offset the BPF programs use.
pub fn resolve() -> Result<KernelOffsets, OffsetError> {
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(OffsetError::NoBtf);
    }
    let btf = Btf::from_file(VMLINUX_BTF).map_err(|e| OffsetError::Parse(e.to_string()))?;
    resolve_with(&Resolver { btf })
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_on_this_kernel() {
        let offsets = resolve().expect("this machine's kernel has BTF");
        // `tgid` follows `pid` in every kernel since 2.6.
        assert_eq!(offsets.task_tgid, offsets.task_pid + 4);
        assert!(offsets.k_sigaction_size >= 24);
        assert!(offsets.vma_end > offsets.vma_start || offsets.vma_end == offsets.vma_start + 8);
    }
}
