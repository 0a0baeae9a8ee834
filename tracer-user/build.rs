//! Builds the BPF programs (tracer-ebpf) for the bpfel target with the
//! nightly toolchain and bpf-linker, and puts the object in OUT_DIR where
//! the loader embeds it. `cargo xtask setup` installs what this needs.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("reading cargo metadata")?;
    // The BPF programs are built from tracer-common's types too: a change
    // there must rebuild them, not only the userspace side.
    for shared in packages
        .iter()
        .filter(|p| p.name.as_str() == "tracer-common")
    {
        if let Some(dir) = shared.manifest_path.parent() {
            println!("cargo:rerun-if-changed={dir}");
        }
    }
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("tracer-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
