#!/bin/sh
# objc_syntax.sh — compiles plugins/metal/backend_metal.m and metal_forward.m with clang
# -fsyntax-only against the declaration-only Metal/Foundation stubs in
# tests/metal/stubs, warnings as errors (an unknown selector is only a warning
# in Objective-C). Catches type and syntax errors off macOS; proves nothing
# about running on a Mac. Also checks that plugins/metal/embed.sh makes a C
# file that compiles and a concatenated kernel source that compiles as one
# translation unit (through the CPU harness header). Exit 77 (skip) when
# clang is missing.
srcdir=${srcdir:-.}
CLANG=${CLANG:-clang}
if ! command -v "$CLANG" >/dev/null 2>&1; then
    echo "SKIP: clang not found (install clang: the Metal plugin's syntax check needs it)"
    exit 77
fi
for src in "$srcdir/plugins/metal/backend_metal.m" "$srcdir/plugins/metal/metal_forward.m"; do
    if [ ! -f "$src" ]; then
        echo "FAIL: $src not found"
        exit 1
    fi
    set -x
    "$CLANG" -fsyntax-only -x objective-c -fobjc-runtime=gnustep-2.0 -fblocks -std=gnu11 \
        -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wno-unused-parameter \
        -Wpointer-arith -Wformat=2 -Wobjc-method-access -Werror \
        -I"$srcdir/tests/metal/stubs" -I"$srcdir/core/abi" -I"$srcdir/core" -I"$srcdir/shaders/common" \
        -I"$srcdir/plugins/cpu" "$src" || exit 1
    { set +x; } 2>/dev/null
done
# the embedded source: one translation unit, as newLibraryWithSource sees it
tmpd=$(mktemp -d "${TMPDIR:-/tmp}/aarmd-metal.XXXXXX") || exit 1
trap 'rm -rf "$tmpd"' EXIT
EMBED_KEEP_SRC="$tmpd/all.metal" sh "$srcdir/plugins/metal/embed.sh" "$tmpd/embed.c" /dev/null "$srcdir" || exit 1
"$CLANG" -std=gnu11 -Wall -Wextra -Werror -c "$tmpd/embed.c" -o "$tmpd/embed.o" || exit 1
# the harness needs _Float16 in C++ (g++ >= 12, clang >= 15): use the C++ compiler configure found
CXX=${CXX:-c++}
if echo '_Float16 h;' | "$CXX" -x c++ -fsyntax-only - 2>/dev/null; then
    "$CXX" -x c++ -std=c++17 -fsyntax-only -Wall -Werror -Wno-unused-function -I"$srcdir/tests/metal" \
        -include "$srcdir/tests/metal/metal_shim.h" "$tmpd/all.metal" || { echo "FAIL: embedded kernel source"; exit 1; }
else
    echo "note: $CXX has no _Float16; embedded kernel source not compiled"
fi
echo "OK: backend_metal.m, metal_forward.m, embed.sh output and the embedded kernel source compile"
