#!/bin/sh
# check.sh — installs aarmd into a temporary DESTDIR, builds the minimal
# plugin out of tree against the installed header (pkg-config), and runs
# `aarmd-cli plugin-check` on it. Run from a configured, built build dir
# (make check does), or set AARMD_BUILDDIR.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
builddir=${AARMD_BUILDDIR:-$(pwd)}
test -f "$builddir/Makefile" || { echo "check.sh: $builddir is not a configured aarmd build dir" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aarmd-minimal.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
# a make of our own, not the jobserver of the make check that runs us
unset MAKEFLAGS MFLAGS MAKELEVEL || true

echo "installing aarmd into $tmp/root"
if ! make -C "$builddir" install DESTDIR="$tmp/root" >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log" >&2
    echo "check.sh: make install failed" >&2
    exit 1
fi
pc=$(find "$tmp/root" -name aarmd-backend.pc | head -n 1)
cli=$(find "$tmp/root" -name aarmd-cli -type f | head -n 1)
test -n "$pc" || { echo "check.sh: aarmd-backend.pc was not installed" >&2; exit 1; }
test -n "$cli" || { echo "check.sh: aarmd-cli was not installed" >&2; exit 1; }

# the example builds from a copy: nothing of the aarmd tree is on its include path
mkdir "$tmp/ex"
cp "$here/backend_minimal.c" "$here/Makefile" "$tmp/ex/"
PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR="$tmp/root" make -C "$tmp/ex"

"$cli" plugin-check "$tmp/ex/backend_minimal.so"

# and a refusal: the minimal backend has no options
if "$cli" plugin-check "$tmp/ex/backend_minimal.so" --backend-opt colour=red >"$tmp/out" 2>&1; then
    cat "$tmp/out"
    echo "check.sh: an unknown option was accepted" >&2
    exit 1
fi
grep -q "unknown option 'colour'" "$tmp/out" || { cat "$tmp/out"; echo "check.sh: no message for colour=red" >&2; exit 1; }
echo "check.sh: minimal plugin OK"
