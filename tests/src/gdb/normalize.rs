//! The one name both sides are compared by: gdb and crashtrace name the
//! same function differently (argument lists, template arguments, GCC
//! clone suffixes, glibc's internal aliases, the signal trampoline).

use super::backtrace::operator_token_len;

/// glibc functions that gdb and a symbol table may name differently:
/// (any of these names, the one both sides become).
const GLIBC_ALIASES: &[(&[&str], &str)] = &[
    (&["raise", "__raise", "gsignal"], "raise"),
    (&["abort"], "abort"),
    (
        &[
            "__pthread_kill_implementation",
            "__pthread_kill_internal",
            "__pthread_kill",
            "pthread_kill",
        ],
        "pthread_kill",
    ),
    (
        &[
            "__libc_start_call_main",
            "__libc_start_main_impl",
            "__libc_start_main",
            "__libc_start_main_alias_2",
        ],
        "__libc_start_main",
    ),
];

/// How gdb shows a signal frame in a backtrace.
pub(super) const GDB_SIGNAL_FRAME: &str = "<signal handler called>";
/// The name both sides give a signal frame: gdb's `<signal handler
/// called>` and the sigreturn trampoline crashtrace names.
pub const SIGNAL_FRAME: &str = "<signal frame>";

/// GCC clone suffixes (`f.constprop.0`, `f.part.1`, `f.cold`): the same
/// source function.
const CLONE_SUFFIXES: &[&str] = &[
    "constprop",
    "isra",
    "part",
    "cold",
    "lto_priv",
    "localalias",
];

/// The name both sides are compared by: without an argument list,
/// qualifiers, template arguments, ABI tags, `(anonymous namespace)::`,
/// GCC clone suffixes and glibc's `__GI_` prefix, with glibc aliases
/// merged; the sigreturn trampoline becomes [`SIGNAL_FRAME`]. Unknown
/// functions become `??`.
pub fn normalize_function(name: &str) -> String {
    let mut name = name.trim().to_owned();
    if name.is_empty() || name == "??" {
        return "??".to_owned();
    }
    name = strip_arguments(&name);
    for noise in ["(anonymous namespace)::", "{anonymous}::"] {
        name = name.replace(noise, "");
    }
    name = strip_brackets(&name);
    name = strip_clone_suffix(&name);
    while let Some(rest) = name.strip_prefix("__GI_") {
        name = rest.to_owned();
    }
    for (aliases, canonical) in GLIBC_ALIASES {
        if aliases.contains(&name.as_str()) {
            return (*canonical).to_owned();
        }
    }
    if name == crate::expect::SIGRETURN_TRAMPOLINE {
        return SIGNAL_FRAME.to_owned();
    }
    if name.is_empty() {
        "??".to_owned()
    } else {
        name
    }
}

/// Drops a trailing `(params)` and the qualifiers after it (` const`,
/// ` &`, ` noexcept`, ...), but not the `()` of `operator()`.
fn strip_arguments(name: &str) -> String {
    let mut name = name.trim_end();
    loop {
        let before = name;
        for qualifier in [" const", " volatile", " noexcept", " &&", " &"] {
            name = name.strip_suffix(qualifier).unwrap_or(name).trim_end();
        }
        if name == before {
            break;
        }
    }
    if !name.ends_with(')') {
        return name.to_owned();
    }
    let bytes = name.as_bytes();
    let mut depth = 0usize;
    for i in (0..bytes.len()).rev() {
        match bytes[i] {
            b')' => depth += 1,
            b'(' => {
                depth -= 1;
                if depth == 0 {
                    let head = &name[..i];
                    let is_operator_call = head.ends_with("operator") && &name[i..] == "()";
                    if i == 0 || is_operator_call {
                        return name.to_owned();
                    }
                    return head.trim_end().to_owned();
                }
            }
            _ => {}
        }
    }
    name.to_owned()
}

/// Removes `<...>` template arguments and `[abi:...]` tags, keeping
/// operator symbols such as `operator<<` and `operator[]`.
fn strip_brackets(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    let mut i = 0;
    while i < name.len() {
        if depth == 0
            && let Some(len) = operator_token_len(name, i)
        {
            out.push_str(&name[i..i + len]);
            i += len;
            continue;
        }
        let c = name[i..].chars().next().expect("in bounds");
        match c {
            '<' | '[' => depth += 1,
            '>' | ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
        i += c.len_utf8();
    }
    out
}

fn strip_clone_suffix(name: &str) -> String {
    let last = name.rfind("::").map_or(0, |i| i + 2);
    if let Some(dot) = name[last..].find('.').map(|d| last + d) {
        let clone = name[dot + 1..].split('.').all(|part| {
            CLONE_SUFFIXES.contains(&part)
                || (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        });
        if clone {
            return name[..dot].to_owned();
        }
    }
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_both_sides_alike() {
        let same = [
            ("store::Box<int>::get() const", "store::Box<int>::get"),
            ("fetch<int>", "(anonymous namespace)::fetch<int>"),
            (
                "(anonymous namespace)::fetch<int>(store::Box<int> const&, int)",
                "(anonymous namespace)::fetch<int>",
            ),
            ("store::detail::run(int*)", "store::detail::run"),
            ("__GI_raise", "raise"),
            ("raise", "__GI_raise"),
            ("abort", "__GI_abort"),
            ("__pthread_kill_implementation", "pthread_kill"),
            ("__pthread_kill_internal", "__pthread_kill_implementation"),
            ("__libc_start_call_main", "__libc_start_main"),
            ("__libc_start_main_impl", "__libc_start_call_main"),
            ("inner.constprop.0", "inner"),
            ("inner.part.0.cold", "inner"),
            ("getppid@plt", "getppid@plt"),
            (
                "std::__cxx11::basic_string<char>::size[abi:cxx11]() const",
                "std::__cxx11::basic_string::size",
            ),
            ("Foo::operator()() const", "Foo::operator()"),
            ("Foo::operator<<(int)", "Foo::operator<<"),
            (
                "Foo<int>::operator<(Foo<int> const&)",
                "Foo<int>::operator<",
            ),
        ];
        for (a, b) in same {
            assert_eq!(normalize_function(a), normalize_function(b), "{a} vs {b}");
        }
        assert_eq!(
            normalize_function("store::Box<int>::get() const"),
            "store::Box::get"
        );
        assert_eq!(normalize_function(""), "??");
        assert_ne!(normalize_function("raise"), normalize_function("abort"));
        assert_ne!(normalize_function("inner"), normalize_function("middle"));
    }
}
