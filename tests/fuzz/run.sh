#!/bin/sh
# run.sh — build tests/fuzz/fuzz_gguf with clang's libFuzzer + ASan + UBSan and
# run it over tests/fuzz/corpus for SECONDS (default 60), one job.
#
#   tests/fuzz/run.sh [SECONDS] [extra libFuzzer args...]
#
# New interesting inputs go to $FUZZ_WORK/corpus (default /tmp/aarmd-fuzz-gguf),
# not into the committed seeds; crashes to $FUZZ_WORK/crash-*. Copy a crasher
# into tests/fuzz/corpus/ once fixed: `make check` replays every file there.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
work=${FUZZ_WORK:-/tmp/aarmd-fuzz-gguf}
CLANG=${CLANG:-clang}
command -v "$CLANG" >/dev/null || { echo "run.sh: $CLANG not found (apt-get install -y clang)" >&2; exit 1; }
mkdir -p "$work/corpus"
"$CLANG" -std=gnu11 -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$top/core" -I"$top/core/abi" \
    "$here/fuzz_gguf.c" "$top/core/gguf.c" "$top/core/ggml_type.c" -lm \
    -o "$work/fuzz_gguf"
echo "run.sh: built $work/fuzz_gguf; fuzzing for ${secs}s"
cd "$work"
exec ./fuzz_gguf -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$work/" "$@" "$work/corpus" "$here/corpus"
