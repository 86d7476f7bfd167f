#!/bin/sh
# device-run.sh — the recipe to check and measure the CUDA backend on the GPU machine.
#
#   tools/device-run.sh build [BUILDDIR]   (here) configure + build aarmd-cli, backend_cpu
#                                          and backend_cuda (sm_90 only) with libevent and
#                                          json-c linked statically, and copy them to .device/
#   tools/device-run.sh check              (there) synthetic model of every arch x weight type,
#                                          plugin-check --reference cpu on each, the weight-kernel
#                                          check, memcheck once
#   tools/device-run.sh serve              (there) the real aarmd + loadgen at 1..64 streams
#                                          (LOADGEN_MODES="burst steady sustained", STREAMS, SERVE_SHAPE;
#                                          SERVE_NCU="SKIP COUNT": kernels timed by Nsight Compute)
#   tools/device-run.sh bench              (there) copy bandwidth + aarmd-cli bench on the
#                                          SmolLM2/Llama-1B/Llama-8B-shaped synthetic models
#                                          (BENCH_FRESH=1: also tg from an empty context)
#   tools/device-run.sh seqs               (there) aggregate decode of 1..64 streams through the plugin
#                                          (SEQS="shape:type:1,8,32,64 ...", PP, TG, SEQS_OPTS)
#   tools/device-run.sh mm                 (there) weight-kernel check (every type, awkward
#                                          shapes, 1..64 tokens), then its decode-shape
#                                          micro-benchmark (MM_TYPES="Q4_K Q8_0 F16 BF16"; MM_ATTN=1
#                                          also times the one-token decode attention in a graph)
#   tools/device-run.sh wg                 (there) the Q4_K GEMMs of served steps: the wg and k (mmq_k)
#                                          kernel checks, then all Q4_K matmuls of an 8B step at 32..256
#                                          tokens against cuBLAS (MM_K_CFG="0 128": a column per mmq_k cfg;
#                                          MM_WG_TOKS; WG_TIMEOUT s, default 300: a hung kernel ends it)
#   tools/device-run.sh ncu                (there) Nsight Compute on one launch of each 8B
#                                          decode matvec (v5 and v6), summary in $OUT/ncu.txt
#   tools/device-run.sh stage-models [MB]  (here) the two real models of models/ cut into
#                                          .device-models/K/ folders of <= MB MiB (default 48): a
#                                          call carries one folder (tree + carried <= 64 MiB); the
#                                          folder of the smallest part also gets the built binaries
#                                          of the device folder, stripped and gzipped (~4 MB)
#   tools/device-run.sh take-models        (there) appends the parts a call carried to
#                                          /tmp/models (kept while the machine stays warm: make
#                                          the calls back to back, nobody else's in between),
#                                          sha256-checks whole files, unpacks carried binaries
#                                          into /tmp/aarmd-dev
#   tools/device-run.sh real               (there) the CPU's greedy continuation of 3 prompts on
#                                          each whole real model, teacher-forced through CUDA and
#                                          the CPU's plain-C path (plugin-check --prompt), $OUT/real.txt;
#                                          the device folder's binaries, else /tmp/aarmd-dev's
#   tools/device-run.sh prof               (there) every kernel of a bench run timed by Nsight
#                                          Compute, summed per kernel name and per step (PROF="shape:type ...",
#                                          PROF_ARGS="--pp 512 --tg 0", PROF_NCU="--launch-skip N ..."),
#                                          in $OUT/prof.txt
#
# .device/ (or $AARMD_DEVICE_DIR, a .device-* folder) is ignored by .gitignore and carried by the
# device tool (carry: [".device"]); set AARMD_DEVICE_DIR the same way on both sides. Logs go to $OUT (or .device/out when OUT is unset).
set -u
cmd=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)
dev="$root/${AARMD_DEVICE_DIR:-.device}"   # AARMD_DEVICE_DIR: a folder name under the root, e.g. .device-NAME
out=${OUT:-$dev/out}

case "$cmd" in
build)
    b=${2:-/tmp/b-cuda-dev}
    lib=/usr/lib/x86_64-linux-gnu
    mkdir -p "$b" "$dev" || exit 1
    cd "$b" || exit 1
    if [ ! -f Makefile ]; then
        "$root/configure" -q JSONC_LIBS="$lib/libjson-c.a" \
            LIBEVENT_LIBS="$lib/libevent.a $lib/libevent_pthreads.a" || exit 1
    fi
    # libtool drops the .a files from the core convenience library's deps: add them last
    make -j2 aarmd aarmd-cli plugins/cpu/backend_cpu.la plugins/cuda/backend_cuda.la \
        NVCC_ARCHS='-gencode arch=compute_90,code=sm_90' \
        LIBS="-lm $lib/libjson-c.a $lib/libevent.a $lib/libevent_pthreads.a -lpthread" || exit 1
    cp aarmd aarmd-cli plugins/cpu/.libs/backend_cpu.so plugins/cuda/.libs/backend_cuda.so "$dev/" || exit 1
    cp "$root/tools/cuda_bw.cu" "$dev/" || exit 1
    # the weight-kernel check / micro-benchmark, linked with the plugin's kernel objects
    nvcc -O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -o "$dev/cuda_matmul_check" \
        "$root/tests/plugins/cuda_matmul_check.cu" shaders/cuda/matmul.o shaders/cuda/ops.o shaders/cuda/matvec.o shaders/cuda/matvec1.o \
        shaders/cuda/mmq.o shaders/cuda/mmq_i8.o shaders/cuda/mmq_k.o shaders/cuda/mmq_wg.o shaders/cuda/attn_fa.o shaders/cuda/attn_dec.o -ldl || exit 1
    # the Criterion test and the libraries the GPU machine lacks (it has no Criterion)
    if make -j2 tests/plugins/test_cuda_backend LIBS="-lm $lib/libjson-c.a $lib/libevent.a $lib/libevent_pthreads.a -lpthread"; then
        t=tests/plugins/test_cuda_backend
        [ -x tests/plugins/.libs/test_cuda_backend ] && t=tests/plugins/.libs/test_cuda_backend
        mkdir -p "$dev/testlib" && cp "$t" "$dev/test_cuda_backend" &&
            ldd "$t" | awk '/criterion|nanomsg|libgit2|mbed|http_parser|libssh2/ {print $3}' |
            xargs -r cp -L -t "$dev/testlib/"
    fi
    ls -la "$dev"
    ;;
stage-models)
    mb=${2:-48}
    st="$root/.device-models"
    rm -rf "$st" && mkdir -p "$st" || exit 1
    : >"$st/manifest"
    for f in "$root"/models/*.gguf; do
        [ -f "$f" ] || continue
        n=$(basename "$f")
        echo "$(sha256sum <"$f" | cut -d' ' -f1) $n" >>"$st/manifest"
        split -b "${mb}M" -d -a 3 "$f" "$st/$n.part-" || exit 1
    done
    k=0   # one folder per call: each part alone (parts are mb MiB)
    for p in "$st"/*.part-*; do
        k=$((k + 1))
        mkdir -p "$st/$k" && mv "$p" "$st/$k/" && cp "$st/manifest" "$st/$k/"
    done
    rm -f "$st/manifest"
    # the binaries ride with the smallest part: the first call can then run nothing else
    small=$(ls -S "$st"/*/*.part-* | tail -1)
    if [ -x "$dev/aarmd-cli" ] && [ -f "$dev/backend_cuda.so" ]; then
        b=$(mktemp -d) || exit 1
        cp "$dev/aarmd" "$dev/aarmd-cli" "$dev/backend_cpu.so" "$dev/backend_cuda.so" "$b/" &&
            strip "$b"/* && tar czf "$(dirname "$small")/bin.tgz" -C "$b" . || { rm -rf "$b"; exit 1; }
        rm -rf "$b"
        echo "binaries of $dev in $(dirname "$small")/bin.tgz"
    else
        echo "no built binaries in $dev (tools/device-run.sh build first): real will need them carried"
    fi
    echo "$k calls: carry [\".device-models/K\"] (K = 1..$k), each running: tools/device-run.sh take-models"
    exit 0
    ;;
take-models)
    mkdir -p /tmp/models
    for d in "$root"/.device-models/*/; do
        [ -f "$d/manifest" ] && cp "$d/manifest" /tmp/models/manifest
        [ -f "$d/bin.tgz" ] && mkdir -p /tmp/aarmd-dev && tar xzf "$d/bin.tgz" -C /tmp/aarmd-dev &&
            echo "take-models: binaries in /tmp/aarmd-dev"
        for p in "$d"*.part-*; do
            [ -f "$p" ] && cp "$p" /tmp/models/
        done
    done
    [ -f /tmp/models/manifest ] || { echo "take-models: no manifest carried"; exit 1; }
    while read -r sum n; do
        parts=$(ls /tmp/models/"$n".part-* 2>/dev/null)
        cat $parts >/tmp/models/"$n".tmp 2>/dev/null
        if [ "$(sha256sum </tmp/models/"$n".tmp | cut -d' ' -f1)" = "$sum" ]; then
            mv /tmp/models/"$n".tmp /tmp/models/"$n"; echo "take-models: $n complete"
        else
            rm -f /tmp/models/"$n".tmp; echo "take-models: $n $(echo "$parts" | wc -w) part(s) so far"
        fi
    done </tmp/models/manifest
    exit 0
    ;;
check|bench|all|mm|wg|ncu|serve|seqs|prof|real)
    [ "$cmd" = real ] && [ ! -x "$dev/aarmd-cli" ] && [ -x /tmp/aarmd-dev/aarmd-cli ] && dev=/tmp/aarmd-dev
    mkdir -p "$out" /tmp/synth
    export AARMD_PLUGIN_PATH="$dev"
    # cuBLAS: the system toolkit's, else the one PyTorch ships
    cub=$(ls /usr/local/cuda/lib64/libcublas.so.13 2>/dev/null ||
          find / -name 'libcublas.so.13' -not -path '/proc/*' 2>/dev/null | head -1)
    [ -n "$cub" ] && export LD_LIBRARY_PATH="$(dirname "$cub")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "cublas: ${cub:-none}" | tee "$out/env.txt"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >>"$out/env.txt" 2>&1
    cli="$dev/aarmd-cli"
    ;;
*)
    sed -n '2,48p' "$0"
    exit 2
    ;;
esac

if [ "$cmd" = check ] || [ "$cmd" = all ]; then
    pass=0; fail=0
    : >"$out/check.txt"
    for arch in llama qwen2 qwen3 phi3 gpt2 gemma3; do
        for type in F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K; do
            f=/tmp/synth/$arch-$type.gguf
            "$cli" gguf-synth --arch "$arch" --type "$type" --vocab-size 1024 --out "$f" >/dev/null || {
                echo "SYNTH-FAIL $arch $type" >>"$out/check.txt"; fail=$((fail + 1)); continue; }
            if "$cli" plugin-check cuda --reference cpu --model "$f" --prompt-len 40 --steps 24 \
                   --tol "${TOL:-0.05}" >"/tmp/synth/$arch-$type.log" 2>&1; then
                pass=$((pass + 1)); v=OK
            else
                fail=$((fail + 1)); v=FAIL
                cat "/tmp/synth/$arch-$type.log" >>"$out/check-failures.txt"
            fi
            echo "$v $arch $type $(grep '^COMPARE' "/tmp/synth/$arch-$type.log")" | tee -a "$out/check.txt"
        done
    done
    # long context (split-K over > 64 keys, cuBLAS prefill) and the matmul-kernel prefill
    "$cli" gguf-synth --arch llama --type Q4_K --vocab-size 1024 --ctx 1024 --out /tmp/synth/long.gguf >/dev/null
    for o in cublas=1 cublas=0 q8=0; do
        "$cli" plugin-check cuda --reference cpu --model /tmp/synth/long.gguf --prompt-len 300 --steps 40 \
            --backend-opt $o --tol "${TOL:-0.05}" >"/tmp/synth/long-$o.log" 2>&1 && v=OK || v=FAIL
        echo "$v long $o $(grep '^COMPARE' "/tmp/synth/long-$o.log")" | tee -a "$out/check.txt"
        [ $v = FAIL ] && cat "/tmp/synth/long-$o.log" >>"$out/check-failures.txt"
    done
    echo "check: $pass passed, $fail failed" | tee -a "$out/check.txt"
    if [ -x "$dev/cuda_matmul_check" ]; then   # every weight kernel vs the v4 kernels, awkward shapes
        "$dev/cuda_matmul_check" >"$out/mm-check.txt" 2>&1
        echo "cuda_matmul_check exit $? ($(grep -c '^OK' "$out/mm-check.txt") OK lines)" | tee -a "$out/check.txt"
    fi
    if [ -x "$dev/test_cuda_backend" ]; then
        LD_LIBRARY_PATH="$dev/testlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$dev/test_cuda_backend" --verbose \
            >"$out/test_cuda_backend.txt" 2>&1
        echo "test_cuda_backend exit $? $(grep Synthesis "$out/test_cuda_backend.txt")" | tee -a "$out/check.txt"
    fi
    if command -v compute-sanitizer >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
        cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
        "$cs" --tool memcheck --error-exitcode 9 "$cli" plugin-check cuda --model /tmp/synth/gemma3-Q4_K.gguf --tol "${TOL:-0.05}" \
            >"$out/memcheck.txt" 2>&1
        echo "memcheck exit $? $(tail -2 "$out/memcheck.txt" | tr '\n' ' ')" | tee -a "$out/check.txt"
        # RACECHECK=1: shared-memory hazards of every kernel a generate runs (flash attention in the
        # prefill and in a 4-sequence step: gemma3 = window + softcap, head_dim 256; llama = GQA 4)
        if [ "${RACECHECK:-0}" = 1 ]; then
            for f in gemma3-Q4_K llama-Q4_K llama-F16; do
                "$cs" --tool racecheck --racecheck-report hazard --error-exitcode 9 "$cli" plugin-check cuda \
                    --model "/tmp/synth/$f.gguf" --prompt-len 40 --steps 8 --tol "${TOL:-0.05}" \
                    >"$out/racecheck-$f.txt" 2>&1
                echo "racecheck $f exit $? $(grep -E 'RACECHECK SUMMARY|hazard' "$out/racecheck-$f.txt" | tail -1)" |
                    tee -a "$out/check.txt"
            done
        fi
    else
        echo "memcheck: compute-sanitizer not found" | tee -a "$out/check.txt"
    fi
fi

# ncu_sum REPORT: the kernels of an Nsight Compute report summed per name, and per step (a step
# starts with its embedding rows, k_get_rows)
ncu_sum() {
    "$ncu" --import "$1" --csv --page raw --metrics gpu__time_duration.sum >"$1.csv" 2>&1
    python3 - "$1.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
if len(rows) < 3: sys.exit(print("no kernels recorded"))
h = rows[0]; ki = h.index("Kernel Name"); ti = h.index("gpu__time_duration.sum")
unit = rows[1][ti]; scale = {"us": 1e-3, "usecond": 1e-3, "ms": 1.0, "msecond": 1.0}.get(unit, 1e-6)
tot = collections.Counter(); n = collections.Counter(); steps = []
for r in rows[2:]:
    try: v = float(r[ti].replace(",", "")) * scale
    except ValueError: continue
    k = r[ki].split("(")[0].split("<")[0][:60]
    if k.startswith("k_get_rows") or k.startswith("void k_get_rows"): steps.append(0.0)
    if steps: steps[-1] += v
    tot[k] += v; n[k] += 1
all_ms = sum(tot.values())
whole = steps[1:-1]   # the first and last may be cut
print("kernels %d, device time %.2f ms; whole steps %d, kernel ms a step: %s" %
      (sum(n.values()), all_ms, len(whole), " ".join("%.2f" % s for s in whole)))
for k, v in tot.most_common(30):
    print("%8.3f ms %5.1f%% %6d  %s" % (v, 100 * v / all_ms, n[k], k))
PY
}

bw_probe() {
    bw=
    if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
        nv=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
        "$nv" -O2 -o /tmp/cuda_bw "$dev/cuda_bw.cu" && /tmp/cuda_bw | tee "$out/bw.txt"
        bw=$(sed -n 's/^BW_GBPS=//p' "$out/bw.txt")
    fi
}

# The real server on the GPU: a SmolLM2-135M-shaped Q4_1 model (gpt-2 vocabulary), aarmd with
# the CUDA backend, then aarmd-cli loadgen closed loop at each of $STREAMS clients with
# 512-token prompts and 128 generated tokens (prefix reuse off, so every prompt is computed).
if [ "$cmd" = serve ]; then
    # SERVE_SHAPE=llama-8b: the Llama-3.1-8B shape in Q4_K instead (4.6 GB; ~3 min to write)
    case "${SERVE_SHAPE:-smollm2-135m}" in
    llama-8b) shape="--type Q4_K --layers 32 --embd 4096 --heads 32 --heads-kv 8 --ff 14336 --ctx 4096 --untied" ;;
    *) shape="--type Q4_1 --layers 30 --embd 576 --heads 9 --heads-kv 3 --ff 1536 --ctx 2048" ;;
    esac
    m=/tmp/synth/serve-${SERVE_SHAPE:-smollm2-135m}.gguf
    [ -f "$m" ] || "$cli" gguf-synth --arch llama $shape \
        --vocab-from "$root/tests/data/vocab/ggml-vocab-gpt-2.gguf" --out "$m" >/dev/null || exit 1
    : >"$out/serve.txt"
    # SERVE_VARIANTS: "new" (defaults) and/or "old" (tokens drawn on the scheduler thread alone,
    # logits through the staging copy: the host path before ABI 1.2), each its own server
    for variant in ${SERVE_VARIANTS:-new}; do
        vo=
        [ "$variant" = old ] && vo="--sample-threads 1 --backend-opt direct_logits=0"
        # SERVE_NCU="SKIP COUNT": aarmd under Nsight Compute, which times COUNT kernels after the first
        # SKIP (~350 kernels a step of the 8B); $out/serve-ncu.txt sums them. ncu's interception slows
        # aarmd ~10x, so a sustained load's steady steps are hard to reach: bench --mixed with prof is
        # the served step's profile (docs/cuda-notes.md v19-lead)
        pre=
        if [ -n "${SERVE_NCU:-}" ]; then
            ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
            pre="$ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum -f -o /tmp/serve-ncu"
            pre="$pre --launch-skip ${SERVE_NCU% *} --launch-count ${SERVE_NCU#* }"
        fi
        $pre "$dev/aarmd" --backend "${SERVE_BACKEND:-cuda}" --plugin-dir "$dev" --model "$m" --port 0 --log-format json \
            --max-jobs 64 --queue-depth 1024 --prefix-cache-blocks 0 $vo ${SERVE_OPTS:-} 2>"$out/serve-log.txt" &
        pid=$!
        port=
        for _ in $(seq 1 300); do
            port=$(sed -n 's/.*"event":"ready".*"port":\([0-9]*\).*/\1/p' "$out/serve-log.txt" | head -1)
            [ -n "$port" ] && break
            sleep 0.2
        done
        [ -z "$port" ] && { echo "aarmd did not start"; tail -5 "$out/serve-log.txt"; kill $pid; exit 1; }
        for n in ${STREAMS:-1 8 32 64}; do
            # burst: n clients at once, one request each (prompts prefilled, then decoded together:
            # decode_tokens_s is what llama.cpp's batched bench calls S_TG); steady: clients started
            # over RAMP_S seconds, ROUNDS requests each, the first n left out (TTFT of a loaded server);
            # sustained: back to back for SUST_S seconds, tokens counted from SETTLE_S on (n streams kept busy)
            for mode in ${LOADGEN_MODES:-burst steady}; do
                echo "== $variant $mode $n streams ${SERVE_OPTS:-}" | tee -a "$out/serve.txt"
                case "$mode" in
                burst) lo="--requests $n" ;;
                sustained) lo="--duration ${SUST_S:-10} --settle ${SETTLE_S:-3} --ramp ${RAMP_S:-1} --warmup $n" ;;
                *) lo="--requests $((n * ${ROUNDS:-4})) --ramp ${RAMP_S:-1} --warmup $n" ;;
                esac
                "$cli" loadgen --url "http://127.0.0.1:$port" --clients "$n" $lo \
                    --max-tokens 128 --prompt-tokens 512 2>&1 | tee -a "$out/serve.txt"
                curl -s "http://127.0.0.1:$port/metrics" |
                    grep -E '^worker_(step|sample)_seconds_total|^worker_step_tokens_(sum|count)' | tee -a "$out/serve.txt"
            done
        done
        curl -s "http://127.0.0.1:$port/health" >"$out/serve-health-$variant.json" 2>/dev/null
        kill -TERM $pid; [ -n "$pre" ] && pkill -TERM -x aarmd; wait $pid; echo "aarmd exit $?" | tee -a "$out/serve.txt"
        [ -n "$pre" ] && ncu_sum /tmp/serve-ncu.ncu-rep | tee "$out/serve-ncu.txt"
    done
fi

# Decode of N streams at once straight through the plugin (the peer's batched-bench setup:
# N prompts of PP tokens prefilled, then TG steps of N tokens): aggregate decode tok/s.
if [ "$cmd" = seqs ]; then
    : >"$out/seqs.txt"
    for st in ${SEQS:-smollm2-135m:Q4_1:1,8,32,64 llama-8b:Q4_K:1,8,32,64}; do
        s=${st%%:*}; rest=${st#*:}; t=${rest%%:*}; n=${rest#*:}
        echo "== $s $t seqs $n ${SEQS_OPTS:-}" | tee -a "$out/seqs.txt"
        "$cli" bench cuda --shape "$s" --type "$t" --pp "${PP:-512}" --tg "${TG:-128}" --seqs "$n" --reps 1 \
            ${SEQS_OPTS:-} 2>&1 | tee -a "$out/seqs.txt"
    done
fi

if [ "$cmd" = mm ]; then
    "$dev/cuda_matmul_check" >"$out/mm-check.txt" 2>&1
    echo "cuda_matmul_check exit $? ($(grep -c '^OK' "$out/mm-check.txt") OK lines)"; grep -v '^OK' "$out/mm-check.txt" | tail -20
    bw_probe
    "$dev/cuda_matmul_check" --bench "${bw:-3000}" "${MM_TYPES:-Q4_K Q8_0 F16 BF16}" 2>&1 | tee "$out/mm-bench.txt"
    # MM_ATTN=1: the one-token decode attention, 30 launches in a graph as a decode runs them
    [ "${MM_ATTN:-0}" = 1 ] && "$dev/cuda_matmul_check" --attn 2>&1 | tee "$out/attn-bench.txt"
fi

if [ "$cmd" = wg ]; then
    timeout "${WG_TIMEOUT:-300}" "$dev/cuda_matmul_check" --wg >"$out/wg.txt" 2>&1
    rc=$?
    grep -E '^(FAIL|wg check|--|   tok)' "$out/wg.txt"
    echo "cuda_matmul_check --wg exit $rc (124: timed out; every line in $out/wg.txt)"
fi

if [ "$cmd" = ncu ]; then
    ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
    "$ncu" --version | tee "$out/ncu.txt"
    "$ncu" --clock-control none -k regex:'k_matvec|k_mvs|k_mmq' \
        --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
        --section MemoryWorkloadAnalysis --section SchedulerStats --csv --page details \
        --metrics smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_drain_per_issue_active.ratio,smsp__average_warps_issue_stalled_membar_per_issue_active.ratio,smsp__average_warps_issue_stalled_imc_miss_per_issue_active.ratio,smsp__average_warps_issue_stalled_tex_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_dispatch_stall_per_issue_active.ratio,smsp__average_warps_issue_stalled_branch_resolving_per_issue_active.ratio,smsp__average_warps_issue_stalled_sleeping_per_issue_active.ratio \
        "$dev/cuda_matmul_check" --ncu >"$out/ncu.csv" 2>"$out/ncu.err"
    echo "ncu exit $?" | tee -a "$out/ncu.txt"
    python3 - "$out/ncu.csv" >>"$out/ncu.txt" <<'PY'
import csv, sys
want = ["Duration", "DRAM Throughput", "Memory Throughput", "Achieved Occupancy", "Theoretical Occupancy",
        "Registers Per Thread", "Block Limit Registers", "Block Limit Shared Mem", "Eligible Warps Per Scheduler",
        "Issued Warp Per Scheduler", "Warp Cycles Per Issued Instruction", "L1/TEX Hit Rate", "L2 Hit Rate",
        "Grid Size", "Waves Per SM", "Compute (SM) Throughput"]
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 14]
if not rows: sys.exit(0)
h = rows[0]; ki = h.index("Kernel Name"); ii = h.index("ID"); mi = h.index("Metric Name"); ui = h.index("Metric Unit"); vi = h.index("Metric Value")
seen = {}
for r in rows[1:]:
    k = (r[ii], r[ki][:60])
    if r[mi] in want or r[mi].startswith("Stall") or "stall" in r[mi].lower():
        seen.setdefault(k, []).append("%s=%s%s" % (r[mi], r[vi], r[ui] if r[ui] not in ("", "%") else ("%" if r[ui] == "%" else "")))
for k, v in seen.items():
    print("==", k[0], k[1]); print("   " + "; ".join(v))
PY
    tail -c 6000 "$out/ncu.txt"
fi

# The real models (take-models put them in /tmp/models): CUDA against the CPU backend, teacher-forced
# logits and top-1 agreement (plugin-check), then greedy generation on each backend, same tokens.
if [ "$cmd" = real ]; then
    : >"$out/real.txt"
    for f in /tmp/models/*.gguf; do
        [ -f "$f" ] || { echo "real: no whole model in /tmp/models" | tee -a "$out/real.txt"; break; }
        n=$(basename "$f")
        "$cli" plugin-check cuda --reference cpu --model "$f" --prompt-len 40 --steps 32 --tol "${TOL:-0.15}" \
            >"/tmp/real-$n.log" 2>&1 && v=OK || v=FAIL
        echo "$v plugin-check $n $(grep '^COMPARE' "/tmp/real-$n.log")" | tee -a "$out/real.txt"
        # the reference's greedy continuation of each prompt, teacher-forced: cuda's top-1 must equal
        # the CPU's except at near ties; the CPU's own plain-C path (simd=0) beside it as the yardstick
        for p in "The capital of France is" "def fibonacci(n):" "Once upon a time, in a small village,"; do
            for t in "cuda" "cpu --backend-opt simd=0"; do
                "$cli" plugin-check $t --reference cpu --model "$f" --prompt "$p" --steps 48 --tol "${TOL:-0.15}" \
                    >/tmp/real-greedy.log 2>&1 && v=OK || v=FAIL
                echo "$v ${t%% *} $n $(grep -E '^GREEDY' /tmp/real-greedy.log | cut -c1-160)" | tee -a "$out/real.txt"
                [ $v = FAIL ] && grep '^FAIL' /tmp/real-greedy.log | head -3 | tee -a "$out/real.txt"
            done
        done
    done
fi

# Where a bench run's device time goes: each kernel's duration (ncu, clocks unlocked, one pass
# per kernel), summed by name; the warm-up and the measured repetition are both in the sums.
if [ "$cmd" = prof ]; then
    ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
    : >"$out/prof.txt"
    # PROF_NCU: more ncu options, e.g. "--launch-skip 12000 --launch-count 2000" (a range of steps)
    for st in ${PROF:-llama-8b:F16}; do
        s=${st%%:*}; rest=${st#*:}; t=${rest%%:*}; o=
        [ "$rest" != "$t" ] && o="--backend-opt ${rest#*:}"
        "$ncu" --clock-control none --cache-control none --metrics gpu__time_duration.sum ${PROF_NCU:-} \
            -f -o "/tmp/prof-$s-$t" "$cli" bench cuda --shape "$s" --type "$t" ${PROF_ARGS:---pp 512 --tg 0} \
            --reps 1 $o >"$out/prof-$s-$t.log" 2>&1
        echo "== $s $t $o (ncu exit $?)" | tee -a "$out/prof.txt"
        ncu_sum "/tmp/prof-$s-$t.ncu-rep" | tee -a "$out/prof.txt"
    done
fi

if [ "$cmd" = bench ] || [ "$cmd" = all ]; then
    bw=
    if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
        nv=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
        "$nv" -O2 -o /tmp/cuda_bw "$dev/cuda_bw.cu" && /tmp/cuda_bw | tee "$out/bw.txt"
        bw=$(sed -n 's/^BW_GBPS=//p' "$out/bw.txt")
    fi
    : >"$out/bench.txt"
    for st in ${BENCH:-smollm2-135m:Q4_1 llama-1b:BF16 llama-8b:Q4_K llama-8b:Q8_0 llama-8b:F16 llama-8b:Q4_K:q8=0}; do
        s=${st%%:*}; rest=${st#*:}; t=${rest%%:*}; o=
        [ "$rest" != "$t" ] && o="--backend-opt ${rest#*:}"
        # BENCH_FRESH=1: each row also with --tg-fresh (tg from an empty context, llama-bench's tg)
        for f in "" ${BENCH_FRESH:+--tg-fresh}; do
            echo "== $s $t $o $f" | tee -a "$out/bench.txt"
            "$cli" bench cuda --shape "$s" --type "$t" --pp 512 --tg 128 --reps "${REPS:-2}" \
                ${bw:+--bw $bw} $o $f ${BENCH_OPTS:-} 2>&1 | tee -a "$out/bench.txt"
        done
    done
fi
