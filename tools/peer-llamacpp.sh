#!/bin/sh
# peer-llamacpp.sh — llama.cpp's CPU backend side by side with ours (issue 4):
# fetches llama.cpp's source as vendored in the llama-cpp-python sdist from PyPI,
# builds llama-bench (CPU only, -DGGML_NATIVE=ON) outside the tree, then runs
# llama-bench and `aarmd-cli bench --backend cpu` on each model, interleaved
# (peer, ours, peer, ours), with the load average before each run.
# It does not install anything and writes only under --dir.
#
# usage: tools/peer-llamacpp.sh [--dir DIR] [--version V] [--rounds N] [--threads T]
#                               [--build-only] [--cli PATH] [--plugin-dir DIR] MODEL.gguf...
#   --dir DIR        work folder (default /tmp/aarmd-peer-llamacpp)
#   --version V      llama-cpp-python version whose vendored llama.cpp is built (default 0.3.16)
#   --rounds N       peer/ours pairs per model (default 2)
#   --threads T      llama-bench -t (default 2); ours uses its default (physical cores)
#   --cli PATH       aarmd-cli to run (default ./aarmd-cli, the build folder's)
#   --plugin-dir DIR where backend_cpu.so is (default plugins/cpu/.libs next to --cli)
# Output: a log under DIR/runs/ and a summary table on stdout.
set -eu

dir=/tmp/aarmd-peer-llamacpp
version=0.3.16
rounds=2
threads=2
build_only=0
cli=./aarmd-cli
plugin_dir=
while [ $# -gt 0 ]; do
    case "$1" in
    --dir) dir=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --cli) cli=$2; shift 2 ;;
    --plugin-dir) plugin_dir=$2; shift 2 ;;
    --build-only) build_only=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "peer-llamacpp: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
case "$rounds" in ''|*[!0-9]*) echo "peer-llamacpp: --rounds wants a number, not '$rounds'" >&2; exit 2 ;; esac
case "$threads" in ''|*[!0-9]*) echo "peer-llamacpp: --threads wants a number, not '$threads'" >&2; exit 2 ;; esac
if [ "$build_only" = 0 ] && [ $# -eq 0 ]; then
    echo "peer-llamacpp: no model given (usage: tools/peer-llamacpp.sh [options] MODEL.gguf...)" >&2
    exit 2
fi
for m in "$@"; do
    [ -r "$m" ] || { echo "peer-llamacpp: cannot read model $m" >&2; exit 2; }
done
for t in pip3 cmake tar; do
    command -v "$t" >/dev/null 2>&1 || { echo "peer-llamacpp: $t is needed" >&2; exit 2; }
done

mkdir -p "$dir"
src="$dir/llama_cpp_python-$version/vendor/llama.cpp"
bench="$src/build/bin/llama-bench"

# ---- fetch and build (once) -------------------------------------------------
if [ ! -x "$bench" ]; then
    if [ ! -f "$src/CMakeLists.txt" ]; then
        echo "peer-llamacpp: fetching llama-cpp-python==$version (sdist) from PyPI" >&2
        pip3 download --no-deps --no-binary :all: -d "$dir" "llama-cpp-python==$version" >&2
        tar -xzf "$dir/llama_cpp_python-$version.tar.gz" -C "$dir"
    fi
    [ -f "$src/CMakeLists.txt" ] || { echo "peer-llamacpp: no vendored llama.cpp in the sdist ($src)" >&2; exit 1; }
    echo "peer-llamacpp: building llama-bench (nice, -j2; a few minutes)" >&2
    nice -n 10 cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >"$dir/cmake.log" 2>&1 ||
        { echo "peer-llamacpp: cmake failed, see $dir/cmake.log" >&2; exit 1; }
    nice -n 10 cmake --build "$src/build" --target llama-bench -j2 >"$dir/build.log" 2>&1 ||
        { echo "peer-llamacpp: build failed, see $dir/build.log" >&2; exit 1; }
fi
echo "peer-llamacpp: $bench (llama-cpp-python $version, $(grep -m1 'ggml commit' "$dir/cmake.log" 2>/dev/null | sed 's/^-- *//'))" >&2
[ "$build_only" = 1 ] && exit 0

# ---- side by side -----------------------------------------------------------
[ -x "$cli" ] || { echo "peer-llamacpp: no aarmd-cli at $cli (run from the build folder or pass --cli)" >&2; exit 2; }
[ -n "$plugin_dir" ] || plugin_dir="$(dirname "$cli")/plugins/cpu/.libs"
mkdir -p "$dir/runs"
log="$dir/runs/$(date -u +%Y%m%dT%H%M%SZ).log"
echo "peer-llamacpp: log $log" >&2
{
    echo "# $(date -u) $(uname -m) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
    echo "# llama-cpp-python $version; llama-bench -p 512 -n 128 -r 5 -t $threads; aarmd-cli bench --backend cpu -p 512 -n 128 -r 5 --bw host"
} >"$log"
for m in "$@"; do
    r=1
    while [ "$r" -le "$rounds" ]; do
        echo "== peer round $r $(basename "$m") load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log" >&2
        "$bench" -m "$m" -p 512 -n 128 -r 5 -t "$threads" -o md 2>/dev/null | tee -a "$log" | grep -E '(pp|tg)[0-9]' >&2 || true
        echo "== ours round $r $(basename "$m") load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log" >&2
        "$cli" bench --backend cpu --plugin-dir "$plugin_dir" --model "$m" -p 512 -n 128 -r 5 --bw host 2>&1 |
            tee -a "$log" | grep -E '^ *(pp|tg)[0-9]|roofline|bandwidth' >&2 || true
        r=$((r + 1))
    done
done
echo "peer-llamacpp: done; full output in $log" >&2
