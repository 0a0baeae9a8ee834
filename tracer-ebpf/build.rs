//! Rebuild the BPF object when the linker changes: a different bpf-linker
//! can emit different BTF, and cargo cannot see that on its own.
use which::which;

fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
