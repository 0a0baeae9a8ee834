//! A minimal reader for the kernel's BTF: struct and union layouts only.
//!
//! crashtrace needs the byte offsets of a few dozen fields. A general BTF
//! library decodes every one of the kernel's ~100,000 types, which costs
//! hundreds of milliseconds at every start; this reader makes one pass that
//! records where each type is and indexes structs and unions by name, then
//! decodes only the members it is asked about. Input is bounds-checked
//! throughout: a malformed file is an error, never a panic.

use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF data (bad magic)")]
    BadMagic,
    #[error("BTF data is truncated at byte {0}")]
    Truncated(usize),
    #[error("BTF type {id} has unknown kind {kind}")]
    UnknownKind { id: u32, kind: u32 },
}

#[derive(Clone, Copy, Debug)]
struct TypeEntry {
    /// Offset of the type record in `types`.
    at: usize,
    info: u32,
    size_or_type: u32,
}

impl TypeEntry {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
}

/// One member of a struct or union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub type_id: u32,
    /// Offset from the start of the struct, in bits.
    pub bit_offset: u32,
}

pub struct Btf {
    data: Vec<u8>,
    types_start: usize,
    types_end: usize,
    strings_start: usize,
    strings_end: usize,
    /// Index 0 is the implicit `void`.
    entries: Vec<TypeEntry>,
    by_name: HashMap<String, Vec<u32>>,
    /// Typedefs of tracepoint handlers (`btf_trace_*`), by name: their
    /// prototypes say what each tracepoint passes on this kernel.
    trace_typedefs: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    let bytes = data.get(at..at + 4).ok_or(BtfError::Truncated(at))?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl Btf {
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let magic = data.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if magic != Some(MAGIC) {
            return Err(BtfError::BadMagic);
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let field = |at: usize| -> Result<usize, BtfError> { Ok(u32_at(&data, at)? as usize) };
        let (type_off, type_len, str_off, str_len) =
            (field(8)?, field(12)?, field(16)?, field(20)?);
        let types_start = hdr_len
            .checked_add(type_off)
            .ok_or(BtfError::Truncated(8))?;
        let types_end = types_start
            .checked_add(type_len)
            .ok_or(BtfError::Truncated(12))?;
        let strings_start = hdr_len
            .checked_add(str_off)
            .ok_or(BtfError::Truncated(16))?;
        let strings_end = strings_start
            .checked_add(str_len)
            .ok_or(BtfError::Truncated(20))?;
        if types_end > data.len() || strings_end > data.len() {
            return Err(BtfError::Truncated(data.len()));
        }
        let mut btf = Self {
            data,
            types_start,
            types_end,
            strings_start,
            strings_end,
            entries: vec![TypeEntry {
                at: 0,
                info: 0,
                size_or_type: 0,
            }],
            by_name: HashMap::new(),
            trace_typedefs: HashMap::new(),
        };
        btf.index()?;
        Ok(btf)
    }

    fn index(&mut self) -> Result<(), BtfError> {
        let mut at = self.types_start;
        while at < self.types_end {
            let id = self.entries.len() as u32;
            let name_off = u32_at(&self.data, at)?;
            let entry = TypeEntry {
                at,
                info: u32_at(&self.data, at + 4)?,
                size_or_type: u32_at(&self.data, at + 8)?,
            };
            let vlen = entry.vlen();
            let extra = match entry.kind() {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                kind => return Err(BtfError::UnknownKind { id, kind }),
            };
            if matches!(entry.kind(), KIND_STRUCT | KIND_UNION) && name_off != 0 {
                let name = self.string(name_off)?.to_string();
                self.by_name.entry(name).or_default().push(id);
            } else if entry.kind() == KIND_TYPEDEF && name_off != 0 {
                let name = self.string(name_off)?;
                if name.starts_with("btf_trace_") {
                    self.trace_typedefs.insert(name.to_string(), id);
                }
            }
            self.entries.push(entry);
            at += 12 + extra;
        }
        if at != self.types_end {
            return Err(BtfError::Truncated(at));
        }
        Ok(())
    }

    fn string(&self, offset: u32) -> Result<&str, BtfError> {
        let start = self.strings_start + offset as usize;
        let strings = self
            .data
            .get(start..self.strings_end)
            .ok_or(BtfError::Truncated(start))?;
        let end = strings
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(strings.len());
        Ok(std::str::from_utf8(&strings[..end]).unwrap_or(""))
    }

    /// Ids of the structs and unions called `name` (with members first).
    pub fn structs_named(&self, name: &str) -> Vec<u32> {
        let mut ids = self.by_name.get(name).cloned().unwrap_or_default();
        ids.sort_by_key(|&id| std::cmp::Reverse(self.entries[id as usize].vlen()));
        ids
    }

    /// True for struct and union ids.
    pub fn is_struct(&self, id: u32) -> bool {
        self.entries
            .get(id as usize)
            .is_some_and(|e| matches!(e.kind(), KIND_STRUCT | KIND_UNION))
    }

    /// Size in bytes of a struct or union.
    pub fn size(&self, id: u32) -> Option<u32> {
        self.is_struct(id)
            .then(|| self.entries[id as usize].size_or_type)
    }

    /// Members of a struct or union.
    pub fn members(&self, id: u32) -> Result<Vec<Member>, BtfError> {
        let Some(entry) = self.entries.get(id as usize).filter(|_| self.is_struct(id)) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(entry.vlen());
        for i in 0..entry.vlen() {
            let at = entry.at + 12 + 12 * i;
            let raw_offset = u32_at(&self.data, at + 8)?;
            out.push(Member {
                name: self.string(u32_at(&self.data, at)?)?.to_string(),
                type_id: u32_at(&self.data, at + 4)?,
                bit_offset: if entry.kind_flag() {
                    raw_offset & 0xff_ffff
                } else {
                    raw_offset
                },
            });
        }
        Ok(out)
    }

    /// The value of the enumerator called `name` (such as
    /// `memory_cgrp_id`), in whichever enum defines it.
    pub fn enumerator(&self, name: &str) -> Option<u32> {
        self.entries
            .iter()
            .filter(|e| e.kind() == KIND_ENUM)
            .flat_map(|e| (0..e.vlen()).map(move |i| e.at + 12 + 8 * i))
            .find(|&at| {
                u32_at(&self.data, at)
                    .ok()
                    .and_then(|off| self.string(off).ok())
                    == Some(name)
            })
            .and_then(|at| u32_at(&self.data, at + 4).ok())
    }

    /// The parameter types of tracepoint `name`'s handler (the
    /// `btf_trace_NAME` typedef's prototype), the leading context pointer
    /// included; `None` when this kernel has no such tracepoint.
    pub fn tracepoint_params(&self, name: &str) -> Option<Vec<u32>> {
        let typedef = *self.trace_typedefs.get(&format!("btf_trace_{name}"))?;
        let ptr = self.resolve(typedef);
        let ptr_entry = self.entries.get(ptr as usize)?;
        if ptr_entry.kind() != KIND_PTR {
            return None;
        }
        let proto = self.resolve(ptr_entry.size_or_type);
        let entry = self.entries.get(proto as usize)?;
        if entry.kind() != KIND_FUNC_PROTO {
            return None;
        }
        (0..entry.vlen())
            .map(|i| u32_at(&self.data, entry.at + 12 + 8 * i + 4).ok())
            .collect()
    }

    /// True when type `id` (after typedefs and qualifiers) is a pointer.
    pub fn is_pointer(&self, id: u32) -> bool {
        self.entries
            .get(self.resolve(id) as usize)
            .is_some_and(|e| e.kind() == KIND_PTR)
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    pub fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.entries.get(id as usize) {
                Some(e)
                    if matches!(
                        e.kind(),
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = e.size_or_type
                }
                _ => return id,
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `struct s { int a; union { int b; }; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0s\0a\0b\0int\0".to_vec();
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            words
                .iter()
                .for_each(|w| types.extend_from_slice(&w.to_le_bytes()))
        };
        push(&[9, KIND_INT << 24, 4, 32]); // 1: int
        push(&[1, (KIND_STRUCT << 24) | 2, 8, 3, 1, 0, 0, 3, 32]); // 2: struct s { a; <anon> }
        push(&[0, (KIND_UNION << 24) | 1, 4, 5, 1, 0]); // 3: union { b }
        let mut data = Vec::new();
        for w in [
            u32::from(MAGIC) | (1 << 16),
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend_from_slice(&w.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn reads_structs_and_members() {
        let btf = Btf::parse(sample()).unwrap();
        let ids = btf.structs_named("s");
        assert_eq!(ids, vec![2]);
        let members = btf.members(2).unwrap();
        assert_eq!(
            members[0],
            Member {
                name: "a".into(),
                type_id: 1,
                bit_offset: 0
            }
        );
        assert_eq!(members[1].name, "");
        assert!(btf.is_struct(members[1].type_id));
        assert_eq!(btf.members(3).unwrap()[0].name, "b");
        assert_eq!(btf.size(2), Some(8));
    }

    /// `typedef void (*btf_trace_NAME)(void *, struct s *[, int])`: the
    /// shape the kernel gives every tracepoint's handler.
    fn tracepoint_blob(name: &str, with_third: bool) -> Vec<u8> {
        let strings = format!("\0s\0int\0btf_trace_{name}\0").into_bytes();
        let (s_name, int_name, td_name) = (1, 3, 7);
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            words
                .iter()
                .for_each(|w| types.extend_from_slice(&w.to_le_bytes()))
        };
        push(&[int_name, KIND_INT << 24, 4, 32]); // 1: int
        push(&[s_name, KIND_STRUCT << 24, 0]); // 2: struct s {}
        push(&[0, KIND_PTR << 24, 2]); // 3: struct s *
        push(&[0, KIND_PTR << 24, 0]); // 4: void *
        let params = if with_third { 3 } else { 2 };
        let mut proto = vec![0, (KIND_FUNC_PROTO << 24) | params, 0, 0, 4, 0, 3];
        if with_third {
            proto.extend([0, 1]);
        }
        push(&proto); // 5: void (void *, struct s *[, int])
        push(&[0, KIND_PTR << 24, 5]); // 6: pointer to it
        push(&[td_name, KIND_TYPEDEF << 24, 6]); // 7: the typedef
        let mut data = Vec::new();
        for w in [
            u32::from(MAGIC) | (1 << 16),
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend_from_slice(&w.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn reads_tracepoint_prototypes() {
        let btf = Btf::parse(tracepoint_blob("sched_process_exit", true)).unwrap();
        let params = btf.tracepoint_params("sched_process_exit").unwrap();
        assert_eq!(params, vec![4, 3, 1]);
        assert!(btf.is_pointer(params[1]));
        assert!(!btf.is_pointer(params[2]));
        assert_eq!(btf.tracepoint_params("mark_victim"), None);
        let older = Btf::parse(tracepoint_blob("sched_process_exit", false)).unwrap();
        assert_eq!(
            older.tracepoint_params("sched_process_exit").unwrap().len(),
            2
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(Btf::parse(vec![0; 10]).err(), Some(BtfError::BadMagic));
        let mut data = sample();
        data.truncate(40);
        assert!(Btf::parse(data).is_err());
        let mut data = sample();
        data[24 + 7] = 0x1f; // first type's kind becomes 31
        assert!(matches!(
            Btf::parse(data),
            Err(BtfError::UnknownKind { .. })
        ));
    }
}
