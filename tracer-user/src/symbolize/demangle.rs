//! Demangling of Rust and C++ names, so crash reports show `ns::func(int)`
//! instead of `_ZN2ns4funcEi`.
//!
//! Names come from binaries we do not control, so absurdly long names are
//! returned unchanged rather than fed to the demanglers.

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
}
