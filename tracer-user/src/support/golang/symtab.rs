//! Source positions of Go code: the function at a pc, its file and line,
//! and the calls the compiler inlined there.
//!
//! The pcfile and pcln tables of a function give the position of the
//! innermost inlined call at each pc. The inline tree (funcdata 3) and its
//! index table (pcdata 2) say which inlined call, if any, a pc belongs to;
//! each tree node names the inlined function and a `parentPc`, an
//! instruction of the caller whose position is the call site. Following
//! those outward gives the chain Go's own tracebacks print, innermost
//! first.
//!
//! From Go 1.18 funcdata are offsets from `moduledata.gofunc`, a field of
//! the runtime's `firstmoduledata`, which is not in the pclntab (see
//! `moduledata`).

use super::{
    GoBinary,
    image::Memory,
    pclntab::{Layout, Pclntab},
};

const FUNCDATA_INL_TREE: u8 = 3;
const PCDATA_INL_TREE_INDEX: u32 = 2;
/// Deepest inline chain followed.
const MAX_INLINE_DEPTH: usize = 64;
/// Largest inline-tree index accepted.
const MAX_INLINE_INDEX: i32 = 1 << 20;

/// A Go function, as the pclntab knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub entry: u64,
    /// First address after the function.
    pub end: u64,
}

/// One source-level frame at a pc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// True for calls the compiler inlined: every frame but the last.
    pub inlined: bool,
}

impl GoBinary {
    /// The function whose code holds ELF virtual address `pc`.
    pub fn function(&self, pc: u64) -> Option<Function> {
        let tab = self.tab();
        let func = self.table.find(tab, pc)?;
        Some(Function {
            name: self.table.name(tab, &func).unwrap_or("?").to_owned(),
            entry: func.entry,
            end: func.end,
        })
    }

    /// Frames at ELF virtual address `pc`, innermost first: inlined calls
    /// (marked `inlined`), then the function that holds `pc`. `None` when no
    /// Go function holds `pc`.
    pub fn frames(&self, pc: u64) -> Option<Vec<GoFrame>> {
        let (table, tab) = (&self.table, self.tab());
        let func = table.find(tab, pc)?;
        let position = |at: u64| {
            (
                table.file(tab, &func, at).map(str::to_owned),
                table.line(tab, &func, at),
            )
        };
        let mut frames = Vec::new();
        let mut at = pc;
        let tree = table.funcdata(tab, &func, FUNCDATA_INL_TREE, self.gofunc);
        if let Some(tree) = tree {
            while frames.len() < MAX_INLINE_DEPTH {
                let Some(index) = table
                    .pcdata(tab, &func, PCDATA_INL_TREE_INDEX, at)
                    .filter(|i| (0..MAX_INLINE_INDEX).contains(i))
                else {
                    break;
                };
                let Some(call) = inlined_call(&self.memory, table, tree, index) else {
                    break;
                };
                let (file, line) = position(at);
                frames.push(GoFrame {
                    function: table.name_at(tab, call.name_off).map(str::to_owned),
                    file,
                    line,
                    inlined: true,
                });
                let Some(parent) = func.entry.checked_add(u64::from(call.parent_pc)) else {
                    break;
                };
                if parent >= func.end {
                    break;
                }
                at = parent;
            }
        }
        let (file, line) = position(at);
        frames.push(GoFrame {
            function: table.name(tab, &func).map(str::to_owned),
            file,
            line,
            inlined: false,
        });
        Some(frames)
    }
}

/// The fields of an inline-tree node that are read.
struct InlinedCall {
    name_off: u32,
    parent_pc: u32,
}

/// Node `index` of the inline tree at `tree`.
fn inlined_call(memory: &Memory, table: &Pclntab, tree: u64, index: i32) -> Option<InlinedCall> {
    // 1.16-1.19: parent i16, funcID u8, pad, file i32, line i32, func_ i32,
    // parentPc i32. 1.20: funcID u8, pad [3], nameOff i32, parentPc i32,
    // startLine i32.
    let (size, name_at, parent_at) = match table.layout {
        Layout::Go116 | Layout::Go118 => (20u64, 12, 16),
        Layout::Go120 => (16, 4, 8),
    };
    let at = tree.checked_add(u64::try_from(index).ok()?.checked_mul(size)?)?;
    let node = memory.read(at, size)?;
    let word = |i: usize| u32::from_le_bytes([node[i], node[i + 1], node[i + 2], node[i + 3]]);
    Some(InlinedCall {
        name_off: word(name_at),
        parent_pc: word(parent_at),
    })
}
