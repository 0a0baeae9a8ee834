//! The pclntab layouts this machine's Go cannot produce (1.16-1.17 and
//! 1.20+), and 1.18's for comparison, checked on small tables written here
//! by hand: two functions, their pc-value tables, one inlined call.

use super::{
    GoBinary,
    image::{Copied, Load, Memory},
    pclntab::{Layout, Pclntab},
};

const TABLE: u64 = 0x50_0000;
const TREE: u64 = 0x60_0000;
const TEXT: u64 = 0x40_1000;

fn align8(t: &mut Vec<u8>) {
    while !t.len().is_multiple_of(8) {
        t.push(0);
    }
}

fn put32(t: &mut [u8], at: usize, v: u32) {
    t[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(t: &mut [u8], at: usize, v: u64) {
    t[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn u32_of(v: usize) -> u32 {
    u32::try_from(v).unwrap()
}

/// `main.f` at TEXT (16 bytes: SP delta 0 then 16; line 10 then 12; the
/// second half inlined from `main.inl`, called at f+2) and `main.g` after
/// it (16 bytes, delta 0).
fn synthetic(layout: Layout) -> GoBinary {
    let (magic, words) = match layout {
        Layout::Go116 => (0xffff_fffau32, 7),
        Layout::Go118 => (0xffff_fff0, 8),
        Layout::Go120 => (0xffff_fff1, 8),
    };
    let mut t = vec![0u8; 8 + 8 * words];
    let funcname = t.len();
    t.extend_from_slice(b"main.f\0main.g\0main.inl\0");
    let cutab = t.len();
    t.extend_from_slice(&0u32.to_le_bytes());
    let filetab = t.len();
    t.extend_from_slice(b"/src/a.go\0");
    let pctab = t.len();
    t.push(0);
    let mut table = |bytes: &[u8]| {
        let at = t.len() - pctab;
        t.extend_from_slice(bytes);
        u32_of(at)
    };
    let sp_f = table(&[0x02, 0x04, 0x20, 0x0c, 0x00]);
    let file = table(&[0x02, 0x10, 0x00]);
    let line = table(&[0x16, 0x08, 0x04, 0x08, 0x00]);
    let inline_index = table(&[0x00, 0x08, 0x02, 0x08, 0x00]);
    let sp_g = table(&[0x02, 0x10, 0x00]);
    align8(&mut t);
    let functab = t.len();
    let entry_size = if layout == Layout::Go116 { 16 } else { 8 };
    t.resize(functab + 3 * entry_size, 0);
    align8(&mut t);
    let (record_size, base) = match layout {
        Layout::Go116 => (44, 8),
        Layout::Go118 => (40, 4),
        Layout::Go120 => (44, 4),
    };
    let mut records = Vec::new();
    for (i, (name, sp, npcdata)) in [(0u32, sp_f, 3u32), (7, sp_g, 0)].into_iter().enumerate() {
        align8(&mut t);
        let at = t.len();
        records.push(at);
        t.resize(at + record_size, 0);
        let entry_off = 16 * i as u64;
        match layout {
            Layout::Go116 => put64(&mut t, at, TEXT + entry_off),
            _ => put32(&mut t, at, u32::try_from(entry_off).unwrap()),
        }
        put32(&mut t, at + base, name);
        put32(&mut t, at + base + 12, sp);
        put32(&mut t, at + base + 16, file);
        put32(&mut t, at + base + 20, line);
        put32(&mut t, at + base + 24, npcdata);
        if npcdata == 0 {
            continue;
        }
        t[at + record_size - 1] = 4; // nfuncdata: the inline tree is 3
        for pcdata in [0, 0, inline_index] {
            t.extend_from_slice(&pcdata.to_le_bytes());
        }
        match layout {
            Layout::Go116 => {
                align8(&mut t);
                for pointer in [0, 0, 0, TREE] {
                    t.extend_from_slice(&pointer.to_le_bytes());
                }
            }
            _ => {
                for off in [u32::MAX, u32::MAX, u32::MAX, 0] {
                    t.extend_from_slice(&off.to_le_bytes());
                }
            }
        }
    }
    for (i, record) in [records[0], records[1], 0].into_iter().enumerate() {
        let at = functab + i * entry_size;
        let funcoff = record.saturating_sub(functab);
        let entry_off = 16 * i as u64;
        match layout {
            Layout::Go116 => {
                put64(&mut t, at, TEXT + entry_off);
                put64(&mut t, at + 8, funcoff as u64);
            }
            _ => {
                put32(&mut t, at, u32::try_from(entry_off).unwrap());
                put32(&mut t, at + 4, u32_of(funcoff));
            }
        }
    }
    put32(&mut t, 0, magic);
    t[6] = 1;
    t[7] = 8;
    let mut header = vec![2, 1];
    if layout != Layout::Go116 {
        header.push(TEXT);
    }
    header.extend([funcname, cutab, filetab, pctab, functab].map(|o| o as u64));
    for (i, word) in header.into_iter().enumerate() {
        put64(&mut t, 8 + 8 * i, word);
    }
    // One inline-tree node: main.inl (name offset 14), called at f+2.
    let mut tree = vec![0u8; 20];
    match layout {
        Layout::Go116 | Layout::Go118 => {
            tree[0..2].copy_from_slice(&(-1i16).to_le_bytes());
            put32(&mut tree, 12, 14);
            put32(&mut tree, 16, 2);
        }
        Layout::Go120 => {
            put32(&mut tree, 4, 14);
            put32(&mut tree, 8, 2);
        }
    }
    let load = |vaddr: u64, len: usize| Load {
        vaddr,
        offset: vaddr - 0x40_0000,
        filesz: len as u64,
        executable: false,
        writable: false,
    };
    let table = Pclntab::parse(&t, TABLE).expect("a valid table");
    assert_eq!(table.layout, layout);
    GoBinary {
        build: None,
        memory: Memory {
            loads: vec![load(TABLE, t.len()), load(TREE, tree.len())],
            copies: vec![
                Copied {
                    vaddr: TABLE,
                    writable: false,
                    data: t,
                },
                Copied {
                    vaddr: TREE,
                    writable: false,
                    data: tree,
                },
            ],
        },
        table,
        gofunc: (layout != Layout::Go116).then_some(TREE),
        incomplete: None,
    }
}

#[test]
fn every_layout_reads_the_same_program() {
    for layout in [Layout::Go116, Layout::Go118, Layout::Go120] {
        let go = synthetic(layout);
        let what = format!("{layout:?}");
        assert_eq!(go.text_range(), Some((TEXT, TEXT + 32)), "{what}");
        assert_eq!(go.function(TEXT + 3).unwrap().name, "main.f", "{what}");
        assert_eq!(go.function(TEXT + 16).unwrap().name, "main.g", "{what}");
        assert_eq!(go.function(TEXT + 32), None, "{what}");
        assert_eq!(go.function(TEXT - 1), None, "{what}");
        assert_eq!(go.entry_of("main.g"), Some(TEXT + 16), "{what}");
        assert_eq!(
            go.entries_of(&["main.g", "x", "main.f"]),
            [Some(TEXT + 16), None, Some(TEXT)]
        );
        assert_eq!(go.sp_delta(TEXT), Some(0), "{what}");
        assert_eq!(go.sp_delta(TEXT + 4), Some(16), "{what}");
        assert_eq!(go.sp_delta(TEXT + 17), Some(0), "{what}");

        let outer = go.frames(TEXT + 3).unwrap();
        assert_eq!(outer.len(), 1, "{what}: {outer:?}");
        assert_eq!(outer[0].function.as_deref(), Some("main.f"));
        assert_eq!(outer[0].file.as_deref(), Some("/src/a.go"));
        assert_eq!(outer[0].line, Some(10));

        let chain = go.frames(TEXT + 9).unwrap();
        let names: Vec<_> = chain
            .iter()
            .map(|f| f.function.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["main.inl", "main.f"], "{what}");
        assert_eq!(
            chain.iter().map(|f| f.line).collect::<Vec<_>>(),
            [Some(12), Some(10)]
        );
        assert_eq!(
            chain.iter().map(|f| f.inlined).collect::<Vec<_>>(),
            [true, false]
        );
    }
}

#[test]
fn broken_headers_are_errors() {
    let go = synthetic(Layout::Go118);
    let good = go.memory.copies[0].data.clone();
    assert!(Pclntab::parse(&good, TABLE).is_ok());
    for (at, value) in [(0, 0x12u8), (4, 1), (6, 3), (7, 5)] {
        let mut bad = good.clone();
        bad[at] = value;
        assert!(Pclntab::parse(&bad, TABLE).is_err(), "byte {at} = {value}");
    }
    // Function count and offsets beyond the table.
    for word in [0usize, 3, 7] {
        let mut bad = good.clone();
        put64(&mut bad, 8 + 8 * word, 1 << 40);
        assert!(Pclntab::parse(&bad, TABLE).is_err(), "word {word}");
    }
    for len in 0..16 {
        assert!(Pclntab::parse(&good[..len], TABLE).is_err());
    }
    assert!(GoBinary::from_pclntab(good, TABLE).is_ok());
}
