use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    os::unix::fs::MetadataExt,
    process::{Command, Stdio},
};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::*;
use crate::support::{
    golang::test_toolchains::{GoProgram, toolchains},
    procfs,
};

#[test]
fn the_two_rip_relative_loads_are_found() {
    // mov 0x10(%rip),%rcx ; nop ; mov -0x20(%rip),%rbx ; mov 0x30(%rip),%rdx
    let code = [
        0x48, 0x8b, 0x0d, 0x10, 0, 0, 0, 0x90, 0x48, 0x8b, 0x1d, 0xe0, 0xff, 0xff, 0xff, 0x48,
        0x8b, 0x15, 0x30, 0, 0, 0,
    ];
    assert_eq!(
        allgs_from_code(0x1000, &code),
        Some(AllGs {
            allglen: 0x1000 + 7 + 0x10,
            allgptr: 0x1000 + 15 - 0x20,
        })
    );
    assert_eq!(allgs_from_code(0x1000, &code[..10]), None);
    assert_eq!(allgs_from_code(0x1000, &[]), None);
}

#[test]
fn releases_map_to_layouts() {
    assert_eq!(minor_of("go1.25.5"), Some(25));
    assert_eq!(minor_of("go1.27rc1"), Some(27));
    assert_eq!(minor_of("devel"), None);
    assert_eq!(g_layout(20), None);
    assert_eq!(g_layout(28), None);
    assert_eq!(g_layout(24), Some(GO_1_23));
}

/// Offsets of the named members of the named structures, from DWARF.
fn dwarf_members(elf: &object::File<'_>) -> BTreeMap<String, u64> {
    let load = |name: &str| {
        elf.section_by_name(name)
            .map(|s| s.uncompressed_data().unwrap().into_owned())
            .unwrap_or_default()
    };
    let (info, abbrev, strs) = (
        load(".debug_info"),
        load(".debug_abbrev"),
        load(".debug_str"),
    );
    let e = gimli::LittleEndian;
    let dwarf = gimli::Dwarf {
        debug_info: gimli::DebugInfo::new(&info, e),
        debug_abbrev: gimli::DebugAbbrev::new(&abbrev, e),
        debug_str: gimli::DebugStr::new(&strs, e),
        ..Default::default()
    };
    let wanted = ["runtime.g", "runtime.gobuf", "runtime.stack"];
    let mut out = BTreeMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next().unwrap() {
        let abbrevs = dwarf.abbreviations(&header).unwrap();
        let mut entries = header.entries(&abbrevs);
        let mut inside: Option<(String, isize)> = None;
        while let Some(entry) = entries.next_dfs().unwrap() {
            let depth = entry.depth();
            if inside.as_ref().is_some_and(|(_, d)| depth <= *d) {
                inside = None;
            }
            let name = entry.attr_value(gimli::DW_AT_name).and_then(|v| match v {
                gimli::AttributeValue::String(r) => Some(r.to_string_lossy().into_owned()),
                gimli::AttributeValue::DebugStrRef(o) => dwarf
                    .debug_str
                    .get_str(o)
                    .ok()
                    .map(|r| r.to_string_lossy().into_owned()),
                _ => None,
            });
            match (entry.tag(), name) {
                (gimli::DW_TAG_structure_type, Some(n)) if wanted.contains(&n.as_str()) => {
                    inside = Some((n, depth));
                }
                (gimli::DW_TAG_member, Some(n)) => {
                    if let Some((s, _)) = &inside {
                        let offset = entry
                            .attr_value(gimli::DW_AT_data_member_location)
                            .and_then(|v| v.udata_value());
                        if let Some(o) = offset {
                            out.insert(format!("{s}.{n}"), o);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The layout as each release's DWARF describes it.
fn layout_from_dwarf(members: &BTreeMap<String, u64>) -> GLayout {
    let get = |k: &str| -> u16 {
        let v = *members.get(k).unwrap_or_else(|| panic!("{k} not in DWARF"));
        v as u16
    };
    let sched = get("runtime.g.sched");
    let stack = get("runtime.g.stack");
    GLayout {
        stack_lo: stack + get("runtime.stack.lo"),
        stack_hi: stack + get("runtime.stack.hi"),
        m: get("runtime.g.m"),
        sched_sp: sched + get("runtime.gobuf.sp"),
        sched_pc: sched + get("runtime.gobuf.pc"),
        sched_bp: sched + get("runtime.gobuf.bp"),
        syscallsp: get("runtime.g.syscallsp"),
        syscallpc: get("runtime.g.syscallpc"),
        atomicstatus: get("runtime.g.atomicstatus"),
        goid: get("runtime.g.goid"),
        waitsince: get("runtime.g.waitsince"),
        waitreason: get("runtime.g.waitreason"),
        gopc: get("runtime.g.gopc"),
        startpc: get("runtime.g.startpc"),
    }
}

/// The test suite's `goleak` program: `goleak hold 40` parks 40 goroutines
/// in a channel send, created by `main.fanOut`, 6 waiting for a mutex and 3
/// asleep, prints `runtime.Stack(all)`, then "ready", and waits for its
/// standard input to close.
const PROGRAM: &str = include_str!("../../../../tests/programs/go/goleak/main.go");

/// `runtime.Stack(all)`'s goroutines: id to (status, first function of
/// package main).
fn parse_stack_dump(text: &str) -> BTreeMap<u64, (String, String)> {
    let mut out = BTreeMap::new();
    for block in text.split("\n\n") {
        let mut lines = block.lines();
        let Some(head) = lines.next() else { continue };
        let Some(rest) = head.strip_prefix("goroutine ") else {
            continue;
        };
        let (id, status) = rest.split_once(" [").unwrap();
        let status = status.split([']', ',']).next().unwrap().to_owned();
        let top = lines
            .filter(|l| !l.starts_with('\t') && !l.starts_with("created by"))
            .map(|l| l.rsplit_once('(').map_or(l, |(f, _)| f).to_owned())
            .find(|f| f.starts_with("main."))
            .unwrap_or_default();
        out.insert(id.parse().unwrap(), (status, top));
    }
    out
}

/// For every release, plain, stripped and PIE: the layout table matches
/// the DWARF, the goroutine list is found where the symbol table says,
/// and a snapshot of the running program agrees with its own
/// `runtime.Stack(all)` on the user goroutines and their top functions.
#[test]
fn goroutines_of_a_live_process_in_every_release() {
    for tc in toolchains() {
        let program = GoProgram::new("live", PROGRAM, &tc);
        let plain = program.build("plain", &[]);
        let data = std::fs::read(&plain).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let binary = GoBinary::parse(&*data).unwrap().unwrap();
        let version = binary.go_version().unwrap().to_owned();
        let layout = g_layout(minor_of(&version).unwrap()).expect("a layout for the release");
        assert_eq!(
            layout_from_dwarf(&dwarf_members(&elf)),
            layout,
            "Go {version}"
        );

        let symbol = |name: &str| {
            elf.symbols()
                .find(|s| s.name() == Ok(name))
                .unwrap_or_else(|| panic!("{name} in Go {version}"))
                .address()
        };
        let entry = binary.entry_of("runtime.forEachGRace").unwrap();
        let text = elf.section_by_name(".text").unwrap();
        let code = &text.data().unwrap()[(entry - text.address()) as usize..][..256];
        assert_eq!(
            allgs_from_code(entry, code),
            Some(AllGs {
                allglen: symbol("runtime.allglen"),
                allgptr: symbol("runtime.allgptr"),
            }),
            "Go {version}"
        );

        for (kind, args) in [
            ("plain", &[][..]),
            ("stripped", &["-ldflags=-s -w"][..]),
            ("pie", &["-buildmode=pie", "-ldflags=-s -w"][..]),
        ] {
            let exe = if kind == "plain" {
                plain.clone()
            } else {
                program.build(kind, args)
            };
            check_live(&exe, &format!("Go {version} {kind}"));
        }
    }
}

fn check_live(exe: &std::path::Path, what: &str) {
    let mut child = Command::new(exe)
        .args(["hold", "40"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut dump = String::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && line != "ready\n" {
        dump.push_str(&line);
        line.clear();
    }
    let expected = parse_stack_dump(&dump);
    let pid = child.id();
    let data = std::fs::read(exe).unwrap();
    let binary = GoBinary::parse(&*data).unwrap().unwrap();
    let meta = std::fs::metadata(exe).unwrap();
    let maps = procfs::maps(pid).unwrap();
    let bias = load_bias(&binary, &maps, meta.dev(), meta.ino()).expect("the exe's mapping");
    let memory = procfs::ProcessMemory::open(pid).unwrap();
    let layout = g_layout(minor_of(binary.go_version().unwrap()).unwrap()).unwrap();
    let allgs = find_allgs(&binary, &memory, bias).unwrap();
    let snap = snapshot(&binary, &layout, &memory, allgs, bias, 1 << 20).unwrap();
    drop(child.stdin.take());
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let _ = child.wait();

    // Every function at a pc, inlined calls first.
    let names = |pc: u64, exact: bool| -> Vec<String> {
        let at = pc - bias - u64::from(!exact);
        binary
            .frames(at)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|f| f.function)
            .collect()
    };
    let name = |pc: u64, exact: bool| names(pc, exact).pop().unwrap_or_default();
    let mut seen = BTreeMap::new();
    for g in &snap.goroutines {
        let start = name(g.startpc, true);
        if start.starts_with("runtime.") && start != "runtime.main" {
            continue; // the runtime's own goroutines, which Stack(all) hides
        }
        let top = snap.stacks[g.stack as usize]
            .iter()
            .enumerate()
            .flat_map(|(i, &pc)| names(pc, i == 0))
            .find(|f| f.starts_with("main."))
            .unwrap_or_default();
        assert!(
            g.error.is_none(),
            "{what}: goroutine {} ({top}): {:?}",
            g.id,
            g.error
        );
        seen.insert(g.id, (status_name(g.status).to_owned(), top));
    }
    let ids = |m: &BTreeMap<u64, (String, String)>| m.keys().copied().collect::<Vec<_>>();
    assert_eq!(ids(&seen), ids(&expected), "{what}: goroutine ids");
    for (id, (_, top)) in &expected {
        assert_eq!(&seen[id].1, top, "{what}: goroutine {id}'s top user frame");
    }
    let workers = seen.values().filter(|(_, f)| f == "main.worker").count();
    assert_eq!(workers, 40, "{what}: {seen:?}");
    assert_eq!(
        seen.values()
            .filter(|(_, f)| f == "main.lockWaiter")
            .count(),
        6,
        "{what}"
    );
    assert_eq!(
        seen.values().filter(|(_, f)| f == "main.sleeper").count(),
        3,
        "{what}"
    );
    let creators: Vec<String> = snap
        .goroutines
        .iter()
        .filter(|g| seen.get(&g.id).is_some_and(|(_, top)| top == "main.worker"))
        .map(|g| name(g.gopc, false))
        .collect();
    assert!(
        creators.len() == 40 && creators.iter().all(|c| c == "main.fanOut"),
        "{what}: {creators:?}"
    );
    assert_eq!(snap.over_limit, 0, "{what}");
}
