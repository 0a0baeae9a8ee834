#!/bin/sh
# Fills fuzz/corpus/ with seed inputs: real ELF files for elf_symbolize
# (a system binary, and test programs built here with and without debug
# info, compressed debug sections, stripped with a debug link, with
# MiniDebugInfo, with mangled names, as a shared library and as an object),
# a captured abort() state for unwind (needs gdb), one record of each
# kind for decode, and a stripped Go program and its pclntab for go_tables.
# Usage: fuzz/seed.sh   (CC overrides cc)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
programs="$here/../tests/programs"
cc=${CC:-cc}
elf="$here/corpus/elf_symbolize"
mkdir -p "$elf" "$here/corpus/unwind" "$here/corpus/decode"

for bin in /bin/true /usr/bin/true; do
    if [ -f "$bin" ]; then
        cp "$bin" "$elf/true"
        break
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if command -v "$cc" >/dev/null 2>&1; then
    "$cc" -g -O0 -o "$elf/null_deref" "$programs/null_deref.c"
    "$cc" -g -O2 -fomit-frame-pointer -o "$elf/o2_nofp" "$programs/o2_nofp.c"
    "$cc" -g -O2 -c -o "$elf/o2_nofp.o" "$programs/o2_nofp.c"
    "$cc" -g -O0 -no-pie -o "$elf/null_deref_nopie" "$programs/null_deref.c"
    "$cc" -g -O0 -fPIC -shared -o "$elf/libcrashy.so" "$programs/libcrashy.c"
    if "$cc" -g -gz -O0 -o "$work/gz" "$programs/null_deref.c" 2>/dev/null; then
        cp "$work/gz" "$elf/null_deref_gz"
    fi
    # Stripped, with its debug info split off and linked.
    "$cc" -g -O2 -o "$work/split" "$programs/o2_nofp.c"
    if command -v objcopy >/dev/null 2>&1; then
        (cd "$work" &&
            objcopy --only-keep-debug split split.debug &&
            objcopy --strip-all --add-gnu-debuglink=split.debug split split.stripped)
        cp "$work/split.stripped" "$elf/o2_nofp_stripped"
        cp "$work/split.debug" "$elf/o2_nofp.debug"
    fi
    # Functions with C++, legacy Rust and v0 Rust mangled names.
    cat >"$work/mangled.c" <<'C'
int cpp(int x) __asm__("_ZN2ns5outerIiE5innerERKSt6vectorIiSaIiEE");
int cpp(int x) { return x + 1; }
int rust_legacy(int x) __asm__("_ZN4core9panicking5panic17h0123456789abcdefE");
int rust_legacy(int x) { return cpp(x) * 2; }
int rust_v0(int x) __asm__("_RNvNtCs1234_7mycrate6module4func");
int rust_v0(int x) { return rust_legacy(x) - 3; }
int main(int argc, char **argv) { (void)argv; return rust_v0(argc); }
C
    "$cc" -g -O0 -o "$elf/mangled" "$work/mangled.c"
    # MiniDebugInfo: a stripped binary whose function symbols are kept in
    # an xz-compressed ELF file in .gnu_debugdata.
    if command -v xz >/dev/null 2>&1 && command -v objcopy >/dev/null 2>&1 &&
        command -v nm >/dev/null 2>&1; then
        (
            cd "$work"
            cp "$elf/mangled" mini
            nm -D mini --format=posix --defined-only | awk '{print $1}' | sort >dynsyms
            nm mini --format=posix --defined-only |
                awk '$2 == "T" || $2 == "t" {print $1}' | sort >funcsyms
            comm -13 dynsyms funcsyms >keep
            objcopy --only-keep-debug mini mini.full
            objcopy -S --remove-section .comment --keep-symbols=keep mini.full mini.debug
            xz -f mini.debug
            objcopy --strip-all --remove-section .comment \
                --add-section .gnu_debugdata=mini.debug.xz mini mini.out
        ) && cp "$work/mini.out" "$elf/minidebuginfo"
    fi
    if command -v c++ >/dev/null 2>&1; then
        c++ -g -O1 -o "$elf/cpp_templates" "$programs/cpp_templates.cpp"
    fi
else
    echo "seed.sh: no C compiler ($cc); only system binaries seeded" >&2
fi

# go_tables: a stripped Go program and its bare pclntab (needs Go 1.19 as
# the test setup installs it).
go=/usr/lib/go-1.19/bin/go
if [ -x "$go" ]; then
    gt="$here/corpus/go_tables"
    mkdir -p "$gt"
    (cd "$programs/go/symbols" &&
        GOCACHE="$work/gocache" GOPATH="$work/gopath" GOFLAGS= \
            "$go" build -ldflags="-s -w" -o "$gt/symbols_stripped" .) &&
        if command -v objcopy >/dev/null 2>&1; then
            objcopy -O binary --only-section=.gopclntab "$gt/symbols_stripped" "$gt/pclntab"
        fi
else
    echo "seed.sh: no $go; go_tables not seeded" >&2
fi

# decode: each record kind's word, zero-filled; the target pads them.
printf '\001\000\000\000' >"$here/corpus/decode/signal"
printf '\002\000\000\000' >"$here/corpus/decode/exit"
printf '\003\000\000\000\010\000\000\000' >"$here/corpus/decode/state"

# unwind: 168 bytes of registers, then a page of zero stack; and, with gdb,
# the real state of a program stopped in abort().
head -c 4264 /dev/zero >"$here/corpus/unwind/zeros"
if command -v gdb >/dev/null 2>&1 && command -v "$cc" >/dev/null 2>&1; then
    "$cc" -g -O0 -o "$work/abort" "$programs/abort.c"
    SEED_OUT="$here/corpus/unwind/abort" \
        gdb -q -batch -nx -x "$here/unwind_seed.py" "$work/abort" >/dev/null 2>&1 ||
        echo "seed.sh: gdb could not capture the abort() state" >&2
fi

ls -l "$here/corpus"/*
