//! The `bpf-linker` setup step.
//!
//! With no prebuilt `bpf-linker` at hand, it is built against the LLVM library
//! that the nightly toolchain ships, through a persistent prefix directory,
//! `${XDG_DATA_HOME:-$HOME/.local/share}/crashtrace/llvm-prefix`, whose `lib/`
//! links to that library. The linker records that `lib/` as its run path, so
//! the links are refreshed whenever the linker stops running (for example
//! after a nightly update), and the linker is rebuilt only if that is not
//! enough.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use crate::setup::{Result, capture, cargo_program, command, fail, find_on_path, run_visible};

const WHAT: &str = "bpf-linker";

pub fn ensure() -> Result<()> {
    let problem = match find_on_path("bpf-linker") {
        Some(path) => match version(&path) {
            Ok(version) => {
                println!("ok: {version} ({})", path.display());
                return Ok(());
            }
            Err(reason) => format!("{} does not run: {reason}", path.display()),
        },
        None => "not on PATH".to_string(),
    };

    let llvm = LlvmPrefix::prepare()?;
    if let Some(path) = find_on_path("bpf-linker")
        && let Ok(version) = version(&path)
    {
        println!("ok: {version} ({}, LLVM links refreshed)", path.display());
        return Ok(());
    }

    let feature = format!("llvm-{}", llvm.major);
    let args = format!("install bpf-linker --no-default-features --features {feature}");
    let fix = format!("LLVM_PREFIX={} cargo {args}", llvm.dir.display());
    println!("installing: bpf-linker ({problem}): {fix}");
    // --force replaces a bpf-linker that no longer runs.
    let mut install = command(cargo_program(), &args);
    install.arg("--force").env("LLVM_PREFIX", &llvm.dir);
    run_visible(&mut install).or_else(|reason| fail(WHAT, reason, &fix))?;

    let Some(path) = find_on_path("bpf-linker") else {
        return fail(
            WHAT,
            "cargo installed it into a directory that is not on PATH",
            "export PATH=\"${CARGO_HOME:-$HOME/.cargo}/bin:$PATH\"",
        );
    };
    match version(&path) {
        Ok(version) => {
            println!("ok: {version} ({})", path.display());
            Ok(())
        }
        Err(reason) => fail(
            WHAT,
            format!("the new {} does not run: {reason}", path.display()),
            fix,
        ),
    }
}

/// `bpf-linker --version`, run without the LD_LIBRARY_PATH that rustup or
/// cargo may have set, so that the check holds wherever the linker starts.
fn version(path: &Path) -> std::result::Result<String, String> {
    let out = capture(
        Command::new(path)
            .arg("--version")
            .env_remove("LD_LIBRARY_PATH"),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

struct LlvmPrefix {
    dir: PathBuf,
    /// LLVM's major version, as in bpf-linker's `llvm-NN` features.
    major: String,
}

impl LlvmPrefix {
    /// Creates the prefix directory and points its links at the nightly
    /// toolchain's `libLLVM.so.<major>.<minor>-rust-<version>-nightly`.
    fn prepare() -> Result<Self> {
        let dir = data_home()?.join("crashtrace/llvm-prefix");
        let out = capture(&mut command("rustc", "+nightly --print sysroot")).or_else(|reason| {
            let reason = format!("cannot locate the nightly sysroot: {reason}");
            fail(
                WHAT,
                reason,
                "rustup toolchain install nightly --profile minimal",
            )
        })?;
        let sysroot_lib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("lib");

        let mut candidates: Vec<String> = fs::read_dir(&sysroot_lib)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| {
                name.starts_with("libLLVM.so.")
                    && name.contains("-rust-")
                    && name.ends_with("-nightly")
            })
            .collect();
        candidates.sort();
        let Some(file_name) = candidates.pop() else {
            let reason = format!(
                "no libLLVM.so.*-rust-*-nightly in {}",
                sysroot_lib.display()
            );
            return fail(WHAT, reason, "rustup update nightly");
        };
        let version = &file_name["libLLVM.so.".len()..];
        let major: String = version.chars().take_while(char::is_ascii_digit).collect();
        if major.is_empty() {
            let reason = format!("cannot read the LLVM version from {file_name}");
            return fail(WHAT, reason, "cargo install bpf-linker");
        }

        let lib = dir.join("lib");
        let library = sysroot_lib.join(&file_name);
        let link_fix = format!(
            "mkdir -p {0} && ln -sf {1} {0}/libLLVM.so",
            lib.display(),
            library.display()
        );
        if let Err(e) = fs::create_dir_all(&lib) {
            return fail(
                WHAT,
                format!("cannot create {}: {e}", lib.display()),
                link_fix,
            );
        }
        // The build links against lib/libLLVM.so; at run time the loader
        // looks for the library's soname, which is its file name.
        for link in [lib.join("libLLVM.so"), lib.join(&file_name)] {
            match ensure_symlink(&link, &library) {
                Ok(true) => println!(
                    "installing: link {} -> {}",
                    link.display(),
                    library.display()
                ),
                Ok(false) => {}
                Err(e) => {
                    return fail(
                        WHAT,
                        format!("cannot link {}: {e}", link.display()),
                        link_fix,
                    );
                }
            }
        }
        Ok(LlvmPrefix { dir, major })
    }
}

/// `$XDG_DATA_HOME`, else `$HOME/.local/share`.
fn data_home() -> Result<PathBuf> {
    let xdg = env::var_os("XDG_DATA_HOME").map(PathBuf::from);
    if let Some(dir) = xdg.filter(|d| d.is_absolute()) {
        return Ok(dir);
    }
    match env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share")),
        None => fail(
            WHAT,
            "neither XDG_DATA_HOME nor HOME is set",
            "export HOME=<your home directory>",
        ),
    }
}

/// Makes `link` a symlink to `target`; returns whether anything changed.
fn ensure_symlink(link: &Path, target: &Path) -> std::io::Result<bool> {
    if fs::read_link(link).is_ok_and(|current| current == target) {
        return Ok(false);
    }
    if fs::symlink_metadata(link).is_ok() {
        fs::remove_file(link)?;
    }
    symlink(target, link)?;
    Ok(true)
}
