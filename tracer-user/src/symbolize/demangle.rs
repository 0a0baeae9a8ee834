//! Demangling of Rust and C++ names, so crash reports show `ns::func(int)`
//! instead of `_ZN2ns4funcEi`.
//!
//! Names come from binaries we do not control, so absurdly long names are
//! returned unchanged rather than fed to the demanglers.
//!
//! Demangling costs more than the DWARF lookup that finds the name, and a
//! crash stack, or a batch of addresses, names the same functions again and
//! again, so [`Names`] keeps each file's demangled names.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::Arc,
};

use gimli::DwLang;

/// Names longer than this are not demangled.
const MAX_DEMANGLE_LEN: usize = 64 * 1024;

/// Demangles `name`, using the compile unit's language when DWARF gives one.
/// Names that are not mangled (plain C) come back unchanged.
pub(crate) fn demangle(name: &str, language: Option<DwLang>) -> String {
    if name.len() > MAX_DEMANGLE_LEN {
        return name.to_owned();
    }
    let demangled = match language {
        Some(gimli::DW_LANG_Rust) => rust(name).or_else(|| cpp(name)),
        Some(
            gimli::DW_LANG_C_plus_plus
            | gimli::DW_LANG_C_plus_plus_03
            | gimli::DW_LANG_C_plus_plus_11
            | gimli::DW_LANG_C_plus_plus_14,
        ) => cpp(name),
        _ => rust_certain(name).or_else(|| cpp(name)),
    };
    demangled.unwrap_or_else(|| name.to_owned())
}

/// Most names one [`Names`] keeps; it starts over when full.
const MAX_NAMES: usize = 1 << 16;

/// Demangled function names of one file, keyed by where their raw bytes lie
/// in the file's parsed debug data or symbol tables.
///
/// The key is the address and length of the raw string: DWARF names a
/// function by pointing into its string section, so every mention of a
/// function shares one key, and the bytes stay put as long as the parsed
/// data does, which owns this cache. A key is never dereferenced.
#[derive(Default)]
pub(crate) struct Names {
    functions: HashMap<(usize, usize), Arc<str>, PlaceHash>,
    heap_bytes: u64,
}

/// Keys are addresses chosen by our own allocator and parser, not by the
/// input, so a multiplicative hash is enough and much cheaper than SipHash.
type PlaceHash = BuildHasherDefault<PlaceHasher>;

#[derive(Default)]
pub(crate) struct PlaceHasher(u64);

impl Hasher for PlaceHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

fn key_of(raw: &[u8]) -> (usize, usize) {
    (raw.as_ptr() as usize, raw.len())
}

impl Names {
    /// The demangled name of the function whose raw name is `raw`.
    pub fn function(&mut self, raw: &[u8], language: Option<DwLang>) -> Arc<str> {
        let key = key_of(raw);
        if let Some(name) = self.functions.get(&key) {
            return Arc::clone(name);
        }
        let name: Arc<str> = demangle(&String::from_utf8_lossy(raw), language).into();
        self.make_room();
        self.heap_bytes += Self::entry_bytes(&name);
        self.functions.insert(key, Arc::clone(&name));
        name
    }

    fn entry_bytes(name: &str) -> u64 {
        (name.len() + 4 * std::mem::size_of::<usize>()) as u64
    }

    fn make_room(&mut self) {
        if self.functions.len() >= MAX_NAMES {
            *self = Self::default();
        }
    }

    /// Heap bytes the kept names take, roughly.
    pub fn heap_bytes(&self) -> u64 {
        self.heap_bytes
    }
}

fn rust(name: &str) -> Option<String> {
    rustc_demangle::try_demangle(name)
        .ok()
        .map(|d| format!("{d:#}"))
}

/// Rust demangling only for names that cannot be C++: v0 names (`_R`), and
/// legacy `_ZN...E` names that end in Rust's hash component.
fn rust_certain(name: &str) -> Option<String> {
    let demangled = rustc_demangle::try_demangle(name).ok()?;
    let without_hash = format!("{demangled:#}");
    let rust_only = name.starts_with("_R") || format!("{demangled}") != without_hash;
    rust_only.then_some(without_hash)
}

fn cpp(name: &str) -> Option<String> {
    if !name.starts_with("_Z") {
        return None;
    }
    cpp_demangle::Symbol::new(name).ok()?.demangle().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_by_kind() {
        assert_eq!(demangle("_ZN2ns4funcEi", None), "ns::func(int)");
        assert_eq!(
            demangle("_ZN2ns4funcEi", Some(gimli::DW_LANG_C_plus_plus)),
            "ns::func(int)"
        );
        assert_eq!(
            demangle("_ZN4core9panicking5panic17h0123456789abcdefE", None),
            "core::panicking::panic"
        );
        assert_eq!(
            demangle("_RNvCs1234_7mycrate3foo", Some(gimli::DW_LANG_Rust)),
            "mycrate::foo"
        );
        assert_eq!(demangle("main", None), "main");
        assert_eq!(demangle("_Zgarbage", None), "_Zgarbage");
        let long = format!("_ZN{}E", "a".repeat(MAX_DEMANGLE_LEN));
        assert_eq!(demangle(&long, None), long);
    }

    #[test]
    fn names_are_kept_by_where_they_lie() {
        let strings = b"_ZN2ns4funcEi\0main\0_ZN2ns4funcEi\0";
        let mut names = Names::default();
        let first = names.function(&strings[..13], None);
        assert_eq!(&*first, "ns::func(int)");
        assert!(Arc::ptr_eq(&first, &names.function(&strings[..13], None)));
        assert_eq!(&*names.function(&strings[14..18], None), "main");
        let copy = names.function(&strings[19..32], None);
        assert_eq!(copy, first);
        assert!(!Arc::ptr_eq(&copy, &first), "another place is another key");
        assert!(names.heap_bytes() > 0);
        let text = "x".repeat(MAX_NAMES + 10);
        for i in 0..MAX_NAMES + 10 {
            names.function(&text.as_bytes()[i..=i], None);
        }
        assert!(names.functions.len() < MAX_NAMES, "bounded");
    }
}
