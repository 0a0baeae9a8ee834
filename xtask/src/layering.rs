//! The layering check of `cargo xtask lint`: no module of `tracer-user`
//! imports upward, and no import circles.
//!
//! The crate's top-level modules are layers, lowest first ([`LAYERS`]). A
//! module may use what a layer below it defines, never what a layer above
//! it defines: `support` never reaches into `report`, `report` never into
//! `pipeline`. Inside the two folders that hold several independent
//! modules ([`GROUPS`]: `support` and `frontends`), each child module is a
//! unit of its own, and those units must not import each other in a
//! circle. Paths are read from the code itself, `use` trees included
//! (`crate::…`, and `super::…` resolved against the module it is written
//! in); comments and string literals are not code. Test code counts like
//! any other code.
//!
//! A top-level module that is missing from [`LAYERS`] is an error too, so
//! that a new module is given its place on purpose.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// The top-level modules of `tracer-user/src`, lowest layer first: the
/// data path of a crash, with the shared modules below it and the front
/// ends on top. See docs/design.md.
pub const LAYERS: &[&str] = &[
    "events",
    "support",
    "loader",
    "tracker",
    "unwind",
    "symbolize",
    "classify",
    "report",
    "store",
    "pipeline",
    "engine",
    "frontends",
];

/// Layers whose child modules are checked for circles among themselves.
pub const GROUPS: &[&str] = &["support", "frontends"];

/// Crate roots: `lib.rs` only declares the layers, `main.rs` is the
/// binary above all of them.
const ROOTS: &[&str] = &["lib.rs", "main.rs"];

/// One broken rule, at the line that breaks it.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Checks the crate whose sources are under `src` (files named relative
/// to `shown`, for messages).
pub fn check_dir(src: &Path, shown: &str) -> Result<Vec<Violation>> {
    let mut files = Vec::new();
    collect(src, src, &mut files)?;
    let sources = files
        .iter()
        .map(|rel| {
            let text = std::fs::read_to_string(src.join(rel))
                .with_context(|| format!("cannot read {}", src.join(rel).display()))?;
            Ok((format!("{shown}/{}", rel.display()), rel.clone(), text))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(check(
        &sources
            .iter()
            .map(|(shown, rel, text)| (shown.as_str(), rel.as_path(), text.as_str()))
            .collect::<Vec<_>>(),
    ))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
    Ok(())
}

/// Checks `(shown name, path relative to src, text)` of every file.
pub fn check(files: &[(&str, &Path, &str)]) -> Vec<Violation> {
    let mut violations = Vec::new();
    // Unit graph for the circle check: from -> to -> first place.
    let mut edges: Edges = BTreeMap::new();
    let mut unranked = BTreeSet::new();
    for &(shown, rel, text) in files {
        let module = module_of(rel);
        let Some(top) = module.first() else { continue };
        let Some(from_rank) = rank(top) else {
            if unranked.insert(top.clone()) {
                violations.push(Violation {
                    file: shown.to_owned(),
                    line: 1,
                    message: format!(
                        "module `{top}` has no layer: add it to LAYERS in xtask/src/layering.rs"
                    ),
                });
            }
            continue;
        };
        for (line, path) in imports(text, &module) {
            let Some(target) = path.first() else { continue };
            let Some(to_rank) = rank(target) else {
                violations.push(Violation {
                    file: shown.to_owned(),
                    line,
                    message: format!("`crate::{}` is not a layer", path.join("::")),
                });
                continue;
            };
            if to_rank > from_rank {
                // Reported here, and left out of the circle check, where
                // it would only be reported again.
                violations.push(Violation {
                    file: shown.to_owned(),
                    line,
                    message: format!(
                        "upward import: `{top}` (layer {from_rank}) uses `crate::{}` (layer {to_rank})",
                        path.join("::")
                    ),
                });
                continue;
            }
            let (from, to) = (unit(&module), unit(&path));
            if from != to {
                edges
                    .entry(from)
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| (shown.to_owned(), line));
            }
        }
    }
    for circle in circles(&edges) {
        let (file, line) = edges[&circle[0]][&circle[1]].clone();
        let steps = circle
            .windows(2)
            .map(|w| {
                let (f, l) = &edges[&w[0]][&w[1]];
                format!("{} -> {} ({f}:{l})", w[0], w[1])
            })
            .collect::<Vec<_>>();
        violations.push(Violation {
            file,
            line,
            message: format!("import circle: {}", steps.join(", ")),
        });
    }
    violations
}

fn rank(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == top)
}

/// The module a file defines, as path segments (`report/mod.rs` is
/// `report`, `report/build.rs` is `report::build`); empty for the roots.
fn module_of(rel: &Path) -> Vec<String> {
    let mut segments: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = segments.pop().unwrap_or_default();
    if segments.is_empty() && ROOTS.contains(&last.as_str()) {
        return Vec::new();
    }
    if last != "mod.rs" {
        segments.push(last.trim_end_matches(".rs").to_owned());
    }
    segments
}

/// The unit a module belongs to for the circle check: its layer, or in a
/// group, the group's child (`support::procfs`).
fn unit(path: &[String]) -> String {
    match path {
        [group, child, ..] if GROUPS.contains(&group.as_str()) => format!("{group}::{child}"),
        [top, ..] => top.clone(),
        [] => String::new(),
    }
}

type Edges = BTreeMap<String, BTreeMap<String, (String, usize)>>;

/// One circle per set of units that import each other in a circle (a
/// strongly connected set), the shortest through its first unit: the
/// units in order, the first repeated at the end.
fn circles(edges: &Edges) -> Vec<Vec<String>> {
    let mut reversed: Edges = BTreeMap::new();
    for (from, tos) in edges {
        for (to, place) in tos {
            reversed
                .entry(to.clone())
                .or_default()
                .insert(from.clone(), place.clone());
        }
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for start in edges.keys() {
        if done.contains(start) {
            continue;
        }
        let forward = reach(edges, start);
        let set: BTreeSet<String> = reach(&reversed, start)
            .intersection(&forward)
            .cloned()
            .collect();
        done.extend(set.iter().cloned());
        if set.len() < 2 {
            continue;
        }
        // Breadth-first inside the set, back to `start`.
        let mut parent: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        'search: while let Some(node) = queue.pop_front() {
            for next in edges.get(&node).into_iter().flat_map(|m| m.keys()) {
                if next == start {
                    let mut circle = vec![start.clone()];
                    let mut at = node.clone();
                    while at != *start {
                        circle.push(at.clone());
                        at = parent[&at].clone();
                    }
                    circle.push(start.clone());
                    circle.reverse();
                    found.push(circle);
                    break 'search;
                }
                if set.contains(next) && !parent.contains_key(next) {
                    parent.insert(next.clone(), node.clone());
                    queue.push_back(next.clone());
                }
            }
        }
    }
    found
}

/// The units reachable from `start` along `edges`, itself included.
fn reach(edges: &Edges, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::from([start.to_owned()]);
    let mut stack = vec![start.to_owned()];
    while let Some(node) = stack.pop() {
        for next in edges.get(&node).into_iter().flat_map(|m| m.keys()) {
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    seen
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// The code of `text` as tokens with their line numbers: comments,
/// string, character and byte literals left out, lifetimes kept as
/// punctuation.
fn tokens(text: &str) -> Vec<(usize, Token)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let skip_to = |from: usize, to: usize, line: &mut usize| {
        *line += chars[from..to.min(chars.len())]
            .iter()
            .filter(|&&c| c == '\n')
            .count();
        to
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let (mut depth, mut j) = (0, i);
            while j < chars.len() {
                if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            i = skip_to(i, j, &mut line);
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            i = skip_to(i, j + 1, &mut line);
        } else if (c == 'r' || c == 'b') && raw_string_start(&chars, i).is_some() {
            let (open, hashes) = raw_string_start(&chars, i).expect("checked");
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let mut j = open + 1;
            while j < chars.len() && !chars[j..].starts_with(&close) {
                j += 1;
            }
            i = skip_to(i, j + close.len(), &mut line);
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}') or a lifetime ('a).
            let end = if next == Some('\\') {
                (i + 2..chars.len()).find(|&j| chars[j] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => i = skip_to(i, end + 1, &mut line),
                None => {
                    out.push((line, Token::Punct('\'')));
                    i += 1;
                }
            }
        } else if c == 'b' && next == Some('\'') {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((line, Token::Ident(chars[start..i].iter().collect())));
        } else if c == ':' && next == Some(':') {
            out.push((line, Token::PathSep));
            i += 2;
        } else {
            out.push((line, Token::Punct(c)));
            i += 1;
        }
    }
    out
}

/// Where a raw string literal (`r"…"`, `r#"…"#`, `br"…"`) starting at `i`
/// opens its quote, and its number of `#`.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') || (i > 0 && is_ident_char(chars[i - 1])) {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    (chars.get(j + hashes) == Some(&'"')).then_some((j + hashes, hashes))
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The crate paths `text` (the file of `module`) names, with their lines:
/// `crate::a::b`, the leaves of `use crate::{a, b::{c, d}}`, and
/// `super::` paths resolved to the crate root. Paths stop at their first
/// two segments, which is all the check looks at.
fn imports(text: &str, module: &[String]) -> Vec<(usize, Vec<String>)> {
    let toks = tokens(text);
    let mut out = Vec::new();
    // Inline `mod name { … }` blocks: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < toks.len() {
        let (line, tok) = &toks[i];
        let after_sep = i > 0 && matches!(toks[i - 1].1, Token::PathSep);
        let after_dollar = i > 0 && toks[i - 1].1 == Token::Punct('$');
        match tok {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                if inline.last().is_some_and(|&(_, d)| d == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            Token::Ident(word)
                if word == "mod"
                    && matches!(toks.get(i + 2), Some((_, Token::Punct('{'))))
                    && !after_sep =>
            {
                if let Some((_, Token::Ident(name))) = toks.get(i + 1) {
                    inline.push((name.clone(), depth + 1));
                }
            }
            Token::Ident(word)
                if (word == "crate" || word == "super")
                    && !after_sep
                    && !after_dollar
                    && toks.get(i + 1).is_some_and(|t| t.1 == Token::PathSep) =>
            {
                let mut base: Vec<String> = if word == "crate" {
                    Vec::new()
                } else {
                    let mut here = module.to_vec();
                    here.extend(inline.iter().map(|(n, _)| n.clone()));
                    here.pop();
                    here
                };
                let mut j = i + 2;
                // Further `super::` steps.
                while word == "super"
                    && matches!(&toks.get(j), Some((_, Token::Ident(w))) if w == "super")
                    && toks.get(j + 1).is_some_and(|t| t.1 == Token::PathSep)
                {
                    base.pop();
                    j += 2;
                }
                let mut paths = Vec::new();
                let end = use_tree(&toks, j, base, &mut paths);
                for path in paths {
                    out.push((*line, path.into_iter().take(2).collect()));
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Reads a path or use tree from `toks[i..]` below `prefix`, pushing each
/// leaf path; returns the index after it.
fn use_tree(
    toks: &[(usize, Token)],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match toks.get(i).map(|t| &t.1) {
            Some(Token::Ident(name)) if name != "as" => {
                if name != "self" {
                    prefix.push(name.clone());
                }
                i += 1;
                if toks.get(i).is_some_and(|t| t.1 == Token::PathSep) {
                    i += 1;
                    continue;
                }
                out.push(prefix);
                return i;
            }
            Some(Token::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.1) {
                        Some(Token::Punct('}')) | None => return i + 1,
                        Some(Token::Punct(',')) => i += 1,
                        Some(_) => {
                            let before = i;
                            i = use_tree(toks, i, prefix.clone(), out);
                            // Skip what a tree does not consume (`as x`).
                            while let Some((_, t)) = toks.get(i) {
                                if matches!(t, Token::Punct(',') | Token::Punct('}')) {
                                    break;
                                }
                                i += 1;
                            }
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => {
                // `*`, or a path that ends at a `<`, `(`, `;`...
                out.push(prefix);
                return i;
            }
        }
    }
}

#[cfg(test)]
mod tests;
