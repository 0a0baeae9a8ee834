//! The layering check on small hand-written crates, each breaking (or
//! keeping) one rule, and on the real `tracer-user`.

use std::path::Path;

use super::{Violation, check, check_dir};

/// Checks files given as `(path relative to src, text)`.
fn run(files: &[(&str, &str)]) -> Vec<Violation> {
    let files: Vec<(&str, &Path, &str)> = files
        .iter()
        .map(|&(rel, text)| (rel, Path::new(rel), text))
        .collect();
    check(&files)
}

fn places(violations: &[Violation]) -> Vec<String> {
    violations
        .iter()
        .map(|v| format!("{}:{}", v.file, v.line))
        .collect()
}

#[test]
fn downward_imports_pass() {
    let v = run(&[
        ("lib.rs", "pub mod events;\npub mod report;\n"),
        (
            "report/mod.rs",
            "use crate::{\n    events::{Mapping, Task},\n    support::{frame::Frame, signals},\n};\n",
        ),
        (
            "engine.rs",
            "use crate::pipeline::Pipeline;\nfn f() { crate::report::x(); }\n",
        ),
        (
            "frontends/daemon/mod.rs",
            "use crate::frontends::cli::DaemonArgs;\n",
        ),
    ]);
    assert_eq!(v, []);
}

#[test]
fn an_upward_import_fails_at_its_line() {
    let v = run(&[(
        "support/procfs.rs",
        "//! Reading /proc.\n\nuse crate::events::Mapping;\nuse crate::tracker::Death;\n",
    )]);
    assert_eq!(places(&v), ["support/procfs.rs:4"]);
    assert!(v[0].message.contains("upward import"), "{}", v[0]);
    assert!(v[0].message.contains("crate::tracker::Death"), "{}", v[0]);
}

#[test]
fn use_trees_are_read_to_their_leaves() {
    let v = run(&[(
        "unwind/walk.rs",
        "use crate::{\n    events::reg,\n    support::{golang, lru::Lru},\n    report::{\n        Frame,\n    },\n};\n",
    )]);
    assert_eq!(places(&v), ["unwind/walk.rs:1"]);
    assert!(v[0].message.contains("crate::report::Frame"), "{}", v[0]);
}

#[test]
fn paths_in_expressions_count() {
    let v = run(&[(
        "classify.rs",
        "fn f() {\n    let x = crate::engine::GRACE;\n}\n",
    )]);
    assert_eq!(places(&v), ["classify.rs:2"]);
}

#[test]
fn comments_and_strings_are_not_code() {
    let v = run(&[(
        "support/activity.rs",
        concat!(
            "//! Shown by [`crate::frontends::activity_top`].\n",
            "/* crate::engine::x /* nested */ crate::engine::y */\n",
            "const A: &str = \"crate::engine::z\";\n",
            "const B: &str = r#\"crate::engine::\"w\"#;\n",
            "const C: char = '\"';\n",
            "fn f<'a>(x: &'a str) -> &'a str { x }\n",
            "macro_rules! m { () => { $crate::support::x() }; }\n",
        ),
    )]);
    assert_eq!(v, []);
}

#[test]
fn super_paths_are_resolved() {
    // From a top-level file, `super` is the crate root.
    let v = run(&[("tracker.rs", "use super::engine::Engine;\n")]);
    assert_eq!(places(&v), ["tracker.rs:1"]);
    // Inside a module's own files and test modules, it stays there.
    let v = run(&[
        ("tracker.rs", "mod tests {\n    use super::*;\n}\n"),
        (
            "report/build.rs",
            "use super::{CrashReport, oom};\nuse super::super::events::Task;\n",
        ),
        (
            "report/mod.rs",
            "mod a {\n    mod b {\n        use super::super::super::frontends::cli;\n    }\n}\n",
        ),
    ]);
    assert_eq!(places(&v), ["report/mod.rs:3"]);
}

#[test]
fn a_circle_inside_a_group_fails() {
    let v = run(&[
        ("support/locate.rs", "use crate::support::procfs::pids;\n"),
        (
            "support/procfs.rs",
            "fn f() {}\n\nuse crate::support::{locate::Located, lru};\n",
        ),
        ("support/lru.rs", "use crate::support::locate;\n"),
    ]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].message.starts_with("import circle: "), "{}", v[0]);
    for step in [
        "support::locate -> support::procfs (support/locate.rs:1)",
        "support::procfs -> support::locate (support/procfs.rs:3)",
    ] {
        assert!(v[0].message.contains(step), "{}", v[0]);
    }
    // Without the way back there is no circle.
    let v = run(&[
        ("support/locate.rs", "use crate::support::procfs::pids;\n"),
        ("support/lru.rs", "use crate::support::locate;\n"),
    ]);
    assert_eq!(v, []);
}

#[test]
fn a_module_without_a_layer_fails() {
    let v = run(&[
        ("newthing.rs", "use crate::events::Event;\n"),
        ("engine.rs", "use crate::newthing::Thing;\n"),
    ]);
    assert_eq!(places(&v), ["newthing.rs:1", "engine.rs:1"]);
    assert!(v[0].message.contains("has no layer"), "{}", v[0]);
    assert!(v[1].message.contains("not a layer"), "{}", v[1]);
}

#[test]
fn tracer_user_keeps_its_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer-user/src");
    let v = check_dir(&src, "tracer-user/src").expect("read tracer-user/src");
    let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
    assert!(shown.is_empty(), "{}", shown.join("\n"));
}
