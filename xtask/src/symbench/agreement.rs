//! How far crashtrace's answers agree with binutils `addr2line`'s: the
//! function names of each address's inline chain, compared untimed.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    fs::File,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use serde_json::Value;

/// Runs crashtrace (`--json`) and `addr2line -a -f -i -C` over `input`
/// (untimed) and counts the addresses where both name the same innermost
/// function, and where their inline chains name the same functions.
pub(super) fn agreement(
    bin: &Path,
    input: &Path,
    addrs: &[u64],
    out: &Path,
) -> Result<(usize, usize, usize)> {
    let run = |program: &Path, args: &[OsString], name: &str| -> Result<PathBuf> {
        let output = out.join(format!("symbench-agree-{name}.out"));
        let status = Command::new(program)
            .args(args)
            .stdin(File::open(input).with_context(|| format!("cannot open {}", input.display()))?)
            .stdout(File::create(&output)?)
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", program.display()))?;
        if !status.success() {
            bail!("{name} failed ({status})");
        }
        Ok(output)
    };
    let mut ct_args: Vec<OsString> = ["symbolize", "--json", "--exe"].map(OsString::from).into();
    ct_args.push(bin.into());
    let ct = run(&crate::crashtrace_bin(), &ct_args, "crashtrace")?;
    let mut a2l_args: Vec<OsString> = ["-a", "-f", "-i", "-C", "-e"].map(OsString::from).into();
    a2l_args.push(bin.into());
    let a2l_program = crate::setup::find_on_path("addr2line").context("addr2line not found")?;
    let a2l = run(&a2l_program, &a2l_args, "addr2line")?;

    let ct_chains = crashtrace_chains(&ct)?;
    let a2l_chains = addr2line_chains(&a2l)?;
    if ct_chains.len() != addrs.len() || a2l_chains.len() != addrs.len() {
        bail!(
            "{} addresses asked, crashtrace answered {}, addr2line {}",
            addrs.len(),
            ct_chains.len(),
            a2l_chains.len()
        );
    }
    let (mut innermost, mut chain) = (0, 0);
    let mut shown = BTreeSet::new();
    for ((addr, ct), a2l) in addrs.iter().zip(&ct_chains).zip(&a2l_chains) {
        let same_innermost = ct.first() == a2l.first();
        innermost += usize::from(same_innermost);
        chain += usize::from(ct == a2l);
        if !same_innermost && shown.len() < 3 && shown.insert(addr) {
            eprintln!("bench: names differ at {addr:#x}: crashtrace {ct:?}, addr2line {a2l:?}");
        }
    }
    Ok((innermost, chain, addrs.len()))
}

/// Function names per address from `crashtrace symbolize --json`,
/// innermost first; `??` for an unknown name.
fn crashtrace_chains(path: &Path) -> Result<Vec<Vec<String>>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut chains = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let value = serde_json::from_str::<Value>(&line)
            .with_context(|| format!("bad JSON line: {line}"))?;
        let frames = value.get("frames").and_then(Value::as_array);
        chains.push(
            frames
                .into_iter()
                .flatten()
                .map(|f| {
                    f.get("function")
                        .and_then(Value::as_str)
                        .unwrap_or("??")
                        .to_owned()
                })
                .collect(),
        );
    }
    Ok(chains)
}

/// Function names per address from `addr2line -a -f -i`: each address
/// line (`0x` and 16 hex digits) starts a block of FUNCTION and
/// FILE:LINE line pairs. An unknown address (`??` alone) is an empty chain,
/// as crashtrace has it.
fn addr2line_chains(path: &Path) -> Result<Vec<Vec<String>>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let is_address = |l: &str| {
        l.len() == 18 && l.starts_with("0x") && l[2..].bytes().all(|b| b.is_ascii_hexdigit())
    };
    let mut chains: Vec<Vec<String>> = Vec::new();
    let lines: Vec<String> = BufReader::new(file).lines().collect::<io::Result<_>>()?;
    let mut i = 0;
    while i < lines.len() {
        if is_address(&lines[i]) {
            chains.push(Vec::new());
            i += 1;
            continue;
        }
        let chain = chains
            .last_mut()
            .context("addr2line output before an address")?;
        chain.push(lines[i].clone());
        // Skip the FILE:LINE line.
        i += 2;
    }
    for chain in &mut chains {
        if chain.len() == 1 && chain[0] == "??" {
            chain.clear();
        }
    }
    Ok(chains)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn splits_addr2line_output_per_address() {
        let dir = std::env::temp_dir().join(format!("xtask-symbench-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a2l.out");
        fs::write(
            &path,
            "0x0000000000001139\ninner\na.c:3\nouter\na.c:9\n\
             0x0000000000000000\n??\n??:0\n\
             0x00000000000011a0\nmain\nb.c:?\n",
        )
        .unwrap();
        let chains = addr2line_chains(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            chains,
            vec![
                vec!["inner".to_owned(), "outer".into()],
                vec![],
                vec!["main".into()]
            ]
        );
    }
}
