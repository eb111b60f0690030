//! Turning raw symbol names into the names people read.
//!
//! This module owns [`demangle`]: symbol version suffixes (`memcpy@@GLIBC_2.14`) are dropped,
//! Rust names (legacy and v0) are demangled without their hash, C++ Itanium names (`_Z...`)
//! without return types, and anything else is returned as is. It never fails: a name that does
//! not demangle is shown raw.

use std::borrow::Cow;

use cpp_demangle::{DemangleOptions, Symbol};

/// The readable form of a raw ELF or kallsyms symbol name.
pub fn demangle(name: &str) -> Cow<'_, str> {
    let name = strip_version(name);
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        // `{:#}` leaves out the `::h0123456789abcdef` hash.
        return Cow::Owned(format!("{rust:#}"));
    }
    if name.starts_with("_Z") {
        if let Some(cpp) = demangle_cpp(name) {
            return Cow::Owned(cpp);
        }
    }
    Cow::Borrowed(name)
}

/// Drops an ELF symbol version (`name@VERSION` or `name@@VERSION`); no mangling scheme uses `@`.
pub(crate) fn strip_version(name: &str) -> &str {
    match name.find('@') {
        Some(at) if at > 0 => &name[..at],
        _ => name,
    }
}

fn demangle_cpp(name: &str) -> Option<String> {
    let symbol = Symbol::new(name).ok()?;
    let options = DemangleOptions::new().no_return_type();
    symbol.demangle(&options).ok().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_borrowed() {
        for name in [
            "main",
            "do_syscall_64",
            "_start",
            "__libc_start_main",
            "_Zfoo",
            "",
            "@",
        ] {
            assert!(
                matches!(demangle(name), Cow::Borrowed(n) if n == name),
                "{name}"
            );
        }
    }

    #[test]
    fn versions_are_stripped() {
        assert_eq!(demangle("memcpy@@GLIBC_2.14"), "memcpy");
        assert_eq!(demangle("malloc@GLIBC_2.2.5"), "malloc");
        assert_eq!(
            demangle("_ZNSt6vectorIiSaIiEE9push_backERKi@@GLIBCXX_3.4"),
            "std::vector<int, std::allocator<int> >::push_back(int const&)"
        );
    }

    #[test]
    fn rust_legacy_without_hash() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(
            demangle("_ZN3std2rt10lang_start28_$u7b$$u7b$closure$u7d$$u7d$17h1f8c1d5e2a3b4c6dE.llvm.1234"),
            "std::rt::lang_start::{{closure}}"
        );
    }

    #[test]
    fn rust_v0() {
        assert_eq!(demangle("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
        assert_eq!(
            demangle("_RNvNtCs1234_7mycrate3bar3baz"),
            "mycrate::bar::baz"
        );
    }

    #[test]
    fn cpp_itanium() {
        assert_eq!(demangle("_ZN3foo3barEv"), "foo::bar()");
        assert_eq!(demangle("_Z3addii"), "add(int, int)");
        assert_eq!(demangle("_ZNK3Foo3getEv"), "Foo::get() const");
        assert_eq!(demangle("_Z3maxIiET_S0_S0_"), "max<int>(int, int)");
    }

    #[test]
    fn cpp_clone_suffixes() {
        let name = demangle("_Z3addii.cold");
        assert!(name.starts_with("add(int, int)"), "{name}");
    }

    #[test]
    fn malformed_mangled_names_stay_raw() {
        for name in [
            "_Z",
            "_ZN",
            "_ZN3fo",
            "_R",
            "_RNv",
            "_ZZZZ",
            "_Z999999999999x",
        ] {
            assert_eq!(demangle(name), name);
        }
    }
}
