//! Stock Debian kernels for the VM matrix, fetched with apt and cached
//! under `target/vm/kernels/`.
//!
//! Why apt and Debian's packages: they are the kernels users run, with the
//! configuration (BTF, ftrace, module layout) distributions ship, and apt
//! verifies them against Debian's archive keys. apt runs with a private
//! sources list, state and cache under `target/vm/apt/`, so the machine's own
//! apt configuration and package lists are never touched. The archive host
//! is the one the machine's own sources name.
//!
//! A kernel is downloaded once: its package is unpacked with `dpkg-deb -x`
//! into `target/vm/kernels/PACKAGE/root/` and its module index built with
//! `depmod -b`, under a temporary name renamed at the end, so a present
//! `root/` is a complete one. Later runs reuse the newest package present
//! for each line without asking the archive; `--refresh-kernels` asks again.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::check_output;

/// A line of Debian kernels: the packages `PREFIX<N>SUFFIX`, newest = highest N.
pub struct Line {
    /// What `--kernel` takes and the reports show.
    pub label: &'static str,
    /// Who ships this line.
    pub shipped_by: &'static str,
    prefix: &'static str,
    suffix: &'static str,
}

/// The kernel lines of the matrix, oldest first.
pub const LINES: &[Line] = &[
    Line {
        label: "5.10",
        shipped_by: "Debian 11 (bullseye)",
        prefix: "linux-image-5.10.0-",
        suffix: "-amd64",
    },
    Line {
        label: "6.1",
        shipped_by: "Debian 12 (bookworm)",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64",
    },
    Line {
        label: "6.12",
        shipped_by: "Debian 12 backports; Debian 13's line",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64",
    },
];

/// The suites that carry those lines; `true` for the security archive.
const SUITES: &[(&str, bool)] = &[
    ("bullseye", false),
    ("bullseye-updates", false),
    ("bullseye-security", true),
    ("bookworm", false),
    ("bookworm-updates", false),
    ("bookworm-security", true),
    ("bookworm-backports", false),
];

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Used only when the machine's sources name no Debian archive.
const DEFAULT_ARCHIVE: &str = "http://deb.debian.org/debian";

impl Line {
    pub fn find(label: &str) -> Option<&'static Line> {
        LINES.iter().find(|line| line.label == label)
    }

    /// The number that orders this line's packages, if `package` is one of them
    /// (`linux-image-5.10.0-46-rt-amd64` and `-dbg` packages are not).
    fn rank(&self, package: &str) -> Option<u32> {
        let n = package
            .strip_prefix(self.prefix)?
            .strip_suffix(self.suffix)?;
        n.parse().ok()
    }
}

/// An unpacked kernel package.
pub struct Kernel {
    pub line: &'static Line,
    pub package: String,
    /// The Debian package version, e.g. `6.12.118-1~deb12u1`.
    pub version: String,
    /// The kernel release (`uname -r`), the name of its modules directory.
    pub release: String,
    /// The compressed kernel image, `root/boot/vmlinuz-RELEASE`.
    pub image: PathBuf,
}

/// Fetches kernels: one private apt state, updated at most once per run.
pub struct Fetcher {
    dir: PathBuf,
    apt_dir: PathBuf,
    updated: bool,
}

impl Fetcher {
    pub fn new(vm_dir: &Path) -> Self {
        Self {
            dir: vm_dir.join("kernels"),
            apt_dir: vm_dir.join("apt"),
            updated: false,
        }
    }

    /// The newest kernel of `line`: the newest one cached unless `refresh`,
    /// else the newest the archive has (downloaded and unpacked if need be).
    pub fn kernel(&mut self, line: &'static Line, refresh: bool) -> Result<Kernel> {
        if !refresh && let Some(package) = self.newest_cached(line)? {
            return self.load(line, &package);
        }
        let package = self.newest_in_archive(line)?;
        if !self.dir.join(&package).join("root").is_dir() {
            self.download(&package)?;
        }
        self.load(line, &package)
    }

    fn newest_cached(&self, line: &Line) -> Result<Option<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        let mut best: Option<(u32, String)> = None;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", self.dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rank) = line.rank(&name)
                && entry.path().join("root").is_dir()
                && best.as_ref().is_none_or(|(r, _)| rank > *r)
            {
                best = Some((rank, name));
            }
        }
        Ok(best.map(|(_, name)| name))
    }

    fn load(&self, line: &'static Line, package: &str) -> Result<Kernel> {
        let dir = self.dir.join(package);
        let root = dir.join("root");
        let version = fs::read_to_string(dir.join("version"))
            .with_context(|| format!("reading {}", dir.join("version").display()))?
            .trim()
            .to_owned();
        let release = single_release(&root)?;
        let image = root.join("boot").join(format!("vmlinuz-{release}"));
        if !image.is_file() {
            bail!("{package} has no kernel image at {}", image.display());
        }
        Ok(Kernel {
            line,
            package: package.to_owned(),
            version,
            release,
            image,
        })
    }

    /// `apt-get` with the private sources list, state and cache.
    fn apt(&self, program: &str) -> Command {
        let d = &self.apt_dir;
        let mut cmd = Command::new(program);
        for (key, value) in [
            ("Dir::Etc::SourceList", d.join("sources.list")),
            ("Dir::Etc::SourceParts", PathBuf::from("/dev/null")),
            ("Dir::State::Lists", d.join("lists")),
            ("Dir::Cache", d.join("cache")),
        ] {
            cmd.arg("-o").arg(format!("{key}={}", value.display()));
        }
        // Only amd64 indexes; no AppStream metadata; apt's download sandbox
        // user cannot write under target/, so downloads run as the caller.
        cmd.args([
            "-o",
            "APT::Architectures=amd64",
            "-o",
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
            "-o",
            "APT::Sandbox::User=root",
            "-q",
        ]);
        cmd
    }

    fn update(&mut self) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        let (archive, security) = archives()?;
        let mut list =
            String::from("# Written by `cargo xtask vm-test`; see xtask/src/vm/kernels.rs.\n");
        for (suite, is_security) in SUITES {
            let uri = if *is_security { &security } else { &archive };
            list.push_str(&format!("deb [signed-by={KEYRING}] {uri} {suite} main\n"));
        }
        for dir in ["lists/partial", "cache/archives/partial"] {
            let dir = self.apt_dir.join(dir);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let path = self.apt_dir.join("sources.list");
        fs::write(&path, list).with_context(|| format!("writing {}", path.display()))?;
        println!("vm-test: updating the private apt lists ({archive}, {security})");
        check_output(self.apt("apt-get").arg("update"))?;
        self.updated = true;
        Ok(())
    }

    fn newest_in_archive(&mut self, line: &Line) -> Result<String> {
        self.update()?;
        let names = check_output(self.apt("apt-cache").args(["pkgnames", "linux-image-"]))?;
        let newest = names
            .lines()
            .filter_map(|name| Some((line.rank(name.trim())?, name.trim())))
            .max();
        match newest {
            Some((_, name)) => Ok(name.to_owned()),
            None => bail!(
                "the archive offers no {}N{} package for the {} kernel line (sources: {})",
                line.prefix,
                line.suffix,
                line.label,
                self.apt_dir.join("sources.list").display()
            ),
        }
    }

    fn download(&mut self, package: &str) -> Result<()> {
        let dir = self.dir.join(package);
        let partial = dir.join("root.partial");
        if partial.exists() {
            fs::remove_dir_all(&partial)
                .with_context(|| format!("removing {}", partial.display()))?;
        }
        fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let show = check_output(
            self.apt("apt-cache")
                .args(["show", "--no-all-versions"])
                .arg(package),
        )?;
        let version = show
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .with_context(|| format!("`apt-cache show {package}` names no version"))?
            .trim()
            .to_owned();
        println!("vm-test: downloading {package} {version}");
        check_output(
            self.apt("apt-get")
                .arg("download")
                .arg(package)
                .current_dir(&dir),
        )?;
        let deb = find_deb(&dir, package)?;
        check_output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        let release = single_release(&partial)?;
        check_output(Command::new("depmod").arg("-b").arg(&partial).arg(&release))?;
        fs::write(dir.join("version"), format!("{version}\n"))
            .with_context(|| format!("writing {}", dir.join("version").display()))?;
        fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;
        fs::rename(&partial, dir.join("root"))
            .with_context(|| format!("renaming {}", partial.display()))?;
        Ok(())
    }
}

/// The one `PACKAGE_*.deb` that `apt-get download` left in `dir`.
fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(path);
        }
    }
    bail!(
        "apt-get download left no {prefix}*.deb in {}",
        dir.display()
    )
}

/// The kernel release of an unpacked package: its one `lib/modules/` entry.
fn single_release(root: &Path) -> Result<String> {
    let modules = root.join("lib/modules");
    let mut names = Vec::new();
    for entry in fs::read_dir(&modules).with_context(|| format!("reading {}", modules.display()))? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {names:?}",
            modules.display()
        ),
    }
}

/// The Debian archive and security archive URIs that the machine's own apt
/// sources use (`/etc/apt/sources.list` and `sources.list.d`, one-line and
/// deb822 formats).
fn archives() -> Result<(String, String)> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        more.sort();
        files.extend(more);
    }
    let mut uris = Vec::new();
    for file in files {
        let name = file.to_string_lossy();
        if !(name.ends_with(".list") || name.ends_with(".sources")) {
            continue;
        }
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("URIs:") {
                uris.extend(rest.split_whitespace().map(str::to_owned));
            } else if let Some(rest) = line.strip_prefix("deb ") {
                let mut words = rest.split_whitespace();
                let mut word = words.next();
                if word.is_some_and(|w| w.starts_with('[')) {
                    while word.is_some_and(|w| !w.ends_with(']')) {
                        word = words.next();
                    }
                    word = words.next();
                }
                uris.extend(word.map(str::to_owned));
            }
        }
    }
    let uris: Vec<String> = uris
        .into_iter()
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect();
    let archive = uris.iter().find(|u| u.ends_with("/debian")).cloned();
    let archive = archive.unwrap_or_else(|| {
        println!(
            "vm-test: the machine's apt sources name no Debian archive; using {DEFAULT_ARCHIVE}"
        );
        DEFAULT_ARCHIVE.to_owned()
    });
    let security = uris
        .iter()
        .find(|u| u.ends_with("/debian-security"))
        .cloned();
    let security = security.unwrap_or_else(|| format!("{archive}-security"));
    if !Path::new(KEYRING).is_file() {
        bail!("{KEYRING} is missing (Debian package debian-archive-keyring)");
    }
    Ok((archive, security))
}
