/*
 * mmq.cu — the v8 and v9 small-batch quantized GEMMs of the CUDA backend (9..64 tokens; Q4_0,
 * Q4_1, Q8_0, Q4_K): raw weight tiles stream through a shared-memory ring and are decoded
 * straight into F16 mma.sync fragments, and K is split over the blocks of a thread-block cluster
 * whose partial sums are added in a fixed order through distributed shared memory
 * (deterministic). v8: cp.async ring, activations converted to F16 in every block; v9: the
 * activations converted once per launch, a producer warp of tensor copies, mbarriers. Entered
 * through cuk_mmq_q8 (matvec.cu) when its variant selects it; other types stay with matvec.cu.
 */
#include <cooperative_groups.h>
#include <cuda.h>
#include <pthread.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <string.h>

#include "../../plugins/cuda/launch.h"
#include "cp_async.cuh"
#include "mma.cuh"
#include "mmq_common.cuh"
#include "pdl.cuh"
#include "../../core/abi/aarmd_backend.h"

namespace cg = cooperative_groups;

#define WARP 32
#define V8_UI 8               /* items (32 elements) per unit; a unit is one stage of K */
#define V8_UK (V8_UI * 32)    /* elements per unit */
#define V8_TS (V8_UK + 32)    /* halves per token of the F16 activation tile (+64 bytes: conflict-free) */
#define V8_NS 4               /* stages of the weight ring at most (ns: 2..4) */

/*
 * The k order inside an mma is free as long as A and B agree. Here every 4-element word
 * (elements e0..e3) of the activations and of a weight row feeds one lane quad slot:
 * lane t4 of step 2i+h takes word 2*t4+h of item i, its pair k = 2t4, 2t4+1 holding
 * (e0, e2) and its pair k = 2t4+8, 2t4+9 holding (e1, e3). So a quant word decodes with
 * two byte-pair masks (no shuffles), and the F16 activation tile stores, per (item, t4),
 * 16 bytes: (e0,e2),(e1,e3) of word 2t4 then of word 2t4+1, read with one 16-byte load.
 */

/* ---- small helpers ------------------------------------------------------------------ */

/* 4 signed bytes -> (b0, b2) * a and (b1, b3) * a: exact integers, one rounding */
__device__ __forceinline__ void i8w(uint32_t w, __half2 a, uint32_t &lo, uint32_t &hi)
{
    uint32_t v = w ^ 0x80808080u;                     /* b + 128 */
    const __half2 off = u2h(0x64806480u);             /* 1152 = 1024 + 128 */
    lo = h2u(__hmul2(__hsub2(u2h(__byte_perm(v, 0x64646464u, 0x4240)), off), a));
    hi = h2u(__hmul2(__hsub2(u2h(__byte_perm(v, 0x64646464u, 0x4341)), off), a));
}

/* bytes (a multiple of 16, 16-byte aligned) of global memory into L2, no completion to wait for */
__device__ __forceinline__ void l2_prefetch(const void *p, uint32_t bytes)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#else
    (void)p; (void)bytes;
#endif
}

/* ---- per-type decoding of one item of a row (unit bytes in shared memory) ------------ */
/*
 * UB: bytes of a row per unit (8 items), UBP: the row's stride in the ring (padded against
 * bank conflicts), TAB: 1 when the per-item (scale, offset) pairs come from a table built once
 * per stage (K-quants), frag(): lane t4's four A half2s of item `it` of one row:
 * [0] (e0,e2) and [1] (e1,e3) of word 2t4, [2], [3] the same of word 2t4+1.
 */
template <uint32_t T> struct v8t { enum { OK = 0 }; };

template <> struct v8t<AARMD_TYPE_Q4_0> {
    enum { OK = 1, UB = 8 * 18, UBP = 160, TAB = 0 };
    static __device__ __forceinline__ void frag(const uint8_t *rw, int it, int t4, const uint2 *, uint32_t *o)
    {
        const uint8_t *ib = rw + 18 * it;
        __half d = *reinterpret_cast<const __half *>(ib);
        __half2 a = __half2half2(d), b = __hmul2(a, u2h(0xC800C800u));   /* -8 d */
        const int base = (18 * it + 2) & ~3, sh = ((18 * it + 2) & 3) * 8;
        const uint32_t *wp = reinterpret_cast<const uint32_t *>(rw + base + 8 * (t4 & 1));
        uint32_t w0 = wp[0], w1 = wp[1], u0 = w0, u1 = w1;
        if (sh) {
            uint32_t w2 = wp[2];
            u0 = __funnelshift_r(w0, w1, sh);
            u1 = __funnelshift_r(w1, w2, sh);
        }
        const int ns = 4 * (t4 >> 1);   /* elements 16..31 are the high nibbles */
        u0 >>= ns;
        u1 >>= ns;
        o[0] = nib2(u0, a, b); o[1] = nib2(u0 >> 8, a, b);
        o[2] = nib2(u1, a, b); o[3] = nib2(u1 >> 8, a, b);
    }
};

template <> struct v8t<AARMD_TYPE_Q4_1> {
    enum { OK = 1, UB = 8 * 20, UBP = 176, TAB = 0 };
    static __device__ __forceinline__ void frag(const uint8_t *rw, int it, int t4, const uint2 *, uint32_t *o)
    {
        const uint8_t *ib = rw + 20 * it;
        __half2 dm = u2h(*reinterpret_cast<const uint32_t *>(ib));
        __half2 a = __low2half2(dm), b = __high2half2(dm);
        const uint32_t *wp = reinterpret_cast<const uint32_t *>(ib + 4 + 8 * (t4 & 1));
        const int ns = 4 * (t4 >> 1);
        uint32_t u0 = wp[0] >> ns, u1 = wp[1] >> ns;
        o[0] = nib2(u0, a, b); o[1] = nib2(u0 >> 8, a, b);
        o[2] = nib2(u1, a, b); o[3] = nib2(u1 >> 8, a, b);
    }
};

template <> struct v8t<AARMD_TYPE_Q8_0> {
    enum { OK = 1, UB = 8 * 34, UBP = 288, TAB = 0 };
    static __device__ __forceinline__ void frag(const uint8_t *rw, int it, int t4, const uint2 *, uint32_t *o)
    {
        const uint8_t *ib = rw + 34 * it;
        __half2 a = __half2half2(*reinterpret_cast<const __half *>(ib));
        const int base = (34 * it + 2) & ~3, sh = ((34 * it + 2) & 3) * 8;
        const uint32_t *wp = reinterpret_cast<const uint32_t *>(rw + base + 8 * t4);
        uint32_t w0 = wp[0], w1 = wp[1], u0 = w0, u1 = w1;
        if (sh) {
            uint32_t w2 = wp[2];
            u0 = __funnelshift_r(w0, w1, sh);
            u1 = __funnelshift_r(w1, w2, sh);
        }
        i8w(u0, a, o[0], o[1]);
        i8w(u1, a, o[2], o[3]);
    }
};

template <> struct v8t<AARMD_TYPE_Q4_K> {
    enum { OK = 1, UB = 144, UBP = 160, TAB = 1 };
    /* one (row, half of the 8 sub-blocks) per thread: (d*sc, d*sc), (-dmin*mn, -dmin*mn) */
    static __device__ __forceinline__ void table(const uint8_t *st, uint2 *tab, int tid)
    {
        const int row = tid >> 1, hf = tid & 1;
        uint4 hd = *reinterpret_cast<const uint4 *>(st + row * UBP);
        float2 dd = __half22float2(u2h(hd.x));
        uint32_t sc, mn;
        q4k_half_scales(hd, hf, &sc, &mn);
        uint2 *o = tab + row * V8_UI + hf * 4;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float a = dd.x * (float)((sc >> (8 * k)) & 0xFF), b = -dd.y * (float)((mn >> (8 * k)) & 0xFF);
            o[k] = make_uint2(h2u(__float2half2_rn(a)), h2u(__float2half2_rn(b)));
        }
    }
    static __device__ __forceinline__ void frag(const uint8_t *rw, int it, int t4, const uint2 *tr, uint32_t *o)
    {
        uint2 s = tr[it];
        frag_ab(rw, it, t4, u2h(s.x), u2h(s.y), o);
    }
    /* the same with the item's (scale, offset) given */
    static __device__ __forceinline__ void frag_ab(const uint8_t *rw, int it, int t4, __half2 a, __half2 b, uint32_t *o)
    {
        q4k_frag_ab(rw, it, t4, a, b, o);
    }
};

/* ---- the kernel (its split-K store: mmq_common.cuh) ------------------------------------------ */
/*
 * Block: NW warps (4: the only size launched; 8 measured no better, run G7); warp w owns rows
 * r0 + 16w .. +15 of the tile (BM = 16 NW rows) and every token (NTT tiles of 8). K runs in
 * units of 256 elements; cluster rank q of ks takes units [q*kun, (q+1)*kun). Weights stream
 * through a ring of ns slots (cp.async, issued ns - 1 units ahead); activations are loaded into
 * registers a unit ahead and converted to F16 in shared memory; K-quants get a per-stage table of
 * the items' (scale, offset). Per unit: barrier, convert, barrier, then each warp decodes its
 * rows item by item into A fragments and runs 2 mma per item and token tile. Units past the
 * row's end are zero-filled by the copies (and their activations are zeros), so every unit runs
 * all 8 items. (A double-buffered tile with one barrier a unit lost to the occupancy it costs,
 * run G4.) pf > 0: each row's next pf units are prefetched into L2 as one contiguous run every
 * pf units (needs 16-byte aligned rows, CP == 16; run G2: a loss, kept for A/B).
 */
template <uint32_t T, int NW, int NTT>
struct v8k {
    typedef v8t<T> Tr;
    enum { BM = 16 * NW, NTH = NW * WARP, NTOK = 8 * NTT, STAGE = BM * Tr::UBP,
           NV = NTOK * (V8_UK / 16) / NTH, RST = NTOK + 1, ACT = NTOK * V8_TS * 2,
           TABB = Tr::TAB ? BM * V8_UI * 8 : 0 };
    static constexpr size_t smem(int ns)
    {
        return (size_t)ns * STAGE + ACT + TABB;
    }
};

template <uint32_t T, int NW, int NTT, int CP>
__global__ void __launch_bounds__(NW * WARP)
k_mmqv(const uint8_t *__restrict__ W, size_t rb, int n_items, int n_out, const int8_t *__restrict__ xq,
       const float *__restrict__ xd, int n_in, int n_tok, float *__restrict__ y, int kun, int ks, int ns, int pf)
{
    typedef v8t<T> Tr;
    typedef v8k<T, NW, NTT> K;
    enum { BM = K::BM, NTH = K::NTH, NTOK = K::NTOK, UB = Tr::UB, UBP = Tr::UBP, CPR = UB / CP,
           STAGE = K::STAGE, NV = K::NV, RST = K::RST, ACT = K::ACT, TABB = K::TABB };
    static_assert(UB % CP == 0, "unit bytes must be whole copies");
    static_assert(NV >= 1 && NV * NTH == NTOK * (V8_UK / 16), "activation split");
    static_assert(!Tr::TAB || 2 * BM == NTH, "one table task per thread");
    extern __shared__ __align__(16) uint8_t sm[];
    uint8_t *ring = sm;
    __half *act = reinterpret_cast<__half *>(sm + ns * STAGE);    /* [NTOK][V8_TS] F16 activations */
    uint2 *tab = reinterpret_cast<uint2 *>(sm + ns * STAGE + ACT); /* [BM][V8_UI] (K-quants) */
    float *red = reinterpret_cast<float *>(sm);        /* [BM][RST] partial sums, after the ring is drained */

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int nu = (n_items + V8_UI - 1) / V8_UI;
    const ksplit_part kp = ksplit_of(ks, BM, nu, kun);
    const int rank = kp.rank, r0 = kp.r0, u0 = kp.u0, nst = kp.nst;

    /* stage i (unit u0 + i) into slot i % ns; weights are never written, so this may run
     * before pdl_enter */
    auto issue = [&](int i) {
        if (i < nst) {
            const size_t ub = (size_t)(u0 + i) * UB;
            const int valid = (int)min((size_t)UB, rb - ub);
            uint8_t *dst = ring + (i % ns) * STAGE;
            for (int c = tid; c < BM * CPR; c += NTH) {
                const int row = c / CPR, off = (c - row * CPR) * CP, r = r0 + row;
                const bool ok = r < n_out && off < valid;
                cpa<CP>(dst + row * UBP + off, ok ? W + (size_t)r * rb + ub + off : W, ok);
            }
        }
        cp_commit();
    };
    /* L2 prefetch of units [a, b) of this thread's row (threads < BM) */
    auto prefetch = [&](int a, int b) {
        b = min(b, nst);
        if (CP == 16 && pf > 0 && tid < BM && a < b && r0 + tid < n_out) {
            const size_t off = (size_t)(u0 + a) * UB;   /* clamped to the row: no bytes past the matrix */
            l2_prefetch(W + (size_t)(r0 + tid) * rb + off, (uint32_t)min((size_t)(b - a) * UB, rb - off));
        }
    };
    prefetch(0, 2 * pf);
    for (int i = 0; i < ns - 1; i++)
        issue(i);
    pdl_enter();

    uint4 av[NV];
    float ad[NV];
    auto load_act = [&](int i) {
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int v = tid + NTH * j, tk = v / (V8_UK / 16), c16 = v % (V8_UK / 16);
            const int it = (u0 + i) * V8_UI + (c16 >> 1);
            av[j] = make_uint4(0, 0, 0, 0);
            ad[j] = 0.0f;
            if (i < nst && tk < n_tok && it < n_items) {
                av[j] = __ldg(reinterpret_cast<const uint4 *>(xq + (size_t)tk * n_in + (size_t)it * 32 + (c16 & 1) * 16));
                ad[j] = __ldg(xd + (size_t)tk * n_items + it);
            }
        }
    };
    /* the registers' activations -> the F16 tile; the table of the unit in slot `st` */
    auto convert = [&](const uint8_t *st) {
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int v = tid + NTH * j, tk = v / (V8_UK / 16), c16 = v % (V8_UK / 16);
            const __half2 d2 = __float2half2_rn(ad[j]);
            uint32_t o[8];
            i8w(av[j].x, d2, o[0], o[1]);
            i8w(av[j].y, d2, o[2], o[3]);
            i8w(av[j].z, d2, o[4], o[5]);
            i8w(av[j].w, d2, o[6], o[7]);
            uint4 *dst = reinterpret_cast<uint4 *>(act + tk * V8_TS + (c16 >> 1) * 32 + (c16 & 1) * 16);
            dst[0] = make_uint4(o[0], o[1], o[2], o[3]);
            dst[1] = make_uint4(o[4], o[5], o[6], o[7]);
        }
        if constexpr (Tr::TAB)
            Tr::table(st, tab, tid);
    };

    float acc[NTT][4];
    frag_zero(acc);
    /* the products of the unit in slot st */
    auto products = [&](const uint8_t *st) {
        const uint8_t *rw = st + (warp * 16 + g) * UBP;
        const uint2 *tr = tab + (warp * 16 + g) * V8_UI;
        const __half *xa = act + g * V8_TS + t4 * 8;
#pragma unroll
        for (int it = 0; it < V8_UI; it++) {
            uint32_t a[4], c[4];
            Tr::frag(rw, it, t4, tr, a);
            Tr::frag(rw + 8 * UBP, it, t4, tr + 8 * V8_UI, c);
#pragma unroll
            for (int n = 0; n < NTT; n++) {
                uint4 x = *reinterpret_cast<const uint4 *>(xa + n * 8 * V8_TS + it * 32);
                mma_f16(acc[n], a[0], c[0], a[1], c[1], x.x, x.y);
                mma_f16(acc[n], a[2], c[2], a[3], c[3], x.z, x.w);
            }
        }
    };

    load_act(0);
    for (int i = 0; i < nst; i++) {
        if (ns == 4)
            cp_wait<2>();
        else if (ns == 3)
            cp_wait<1>();
        else
            cp_wait<0>();
        __syncthreads();   /* stage i landed (every thread's copies); stage i-1 fully consumed */
        issue(i + ns - 1);
        if (pf > 0 && i > 0 && i % pf == 0)
            prefetch(i + pf, i + 2 * pf);
        const uint8_t *st = ring + (i % ns) * STAGE;
        convert(st);
        load_act(i + 1);   /* in flight during the products */
        __syncthreads();
        products(st);
    }

    /* partial sums to shared memory, then rank q adds rows q*chunk.. of every rank in rank order */
    cp_wait<0>();
    __syncthreads();
    splitk_store<BM, NTOK, NTT, RST>(red, acc, true, warp, g, t4, tid, NTH, ks, rank, n_tok, r0, n_out, y);
}

/* ---- launch (helpers: mmq_common.cuh) ------------------------------------------------------ */

template <uint32_t T, int NW, int NTT, int CP>
static int v8_launch(cudaStream_t s, const void *w, size_t rb, int items, int64_t n_in, int64_t n_out,
                     const void *xq, const float *xd, int n_tok, float *y, int ks_max, int ns, int pf, int wm)
{
    typedef v8k<T, NW, NTT> K;
    auto kern = k_mmqv<T, NW, NTT, CP>;
    const size_t smem = K::smem(ns);
    static int attr = 0;   /* per instantiation: 1 raised (for the 4-slot ring, the largest), -1 refused */
    if (!attr) {
        attr = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)K::smem(V8_NS)) ==
                       cudaSuccess ? 1 : -1;
        if (attr < 0)
            cudaGetLastError();
    }
    if (attr < 0)
        return 0;
    const int tiles = (int)((n_out + K::BM - 1) / K::BM);
    const int nu = (items + V8_UI - 1) / V8_UI;
    /* split K until ~2 blocks per SM, each split >= 2 units (1 for short rows), clusters <= 8 */
    int ks = 1;
    v8_device();
    if (v8_cc < 9)
        ks_max = 1;   /* clusters: sm_90 */
    const int kun = split_k(nu, tiles, wm * v8_sms, ks_max, &ks);
    cudaLaunchConfig_t cfg;
    cudaLaunchAttribute at[2];
    cluster_cfg(&cfg, at, tiles, ks, K::NTH, smem, s);
    cudaError_t e = cudaLaunchKernelEx(&cfg, kern, (const uint8_t *)w, rb, items, (int)n_out, (const int8_t *)xq, xd,
                                       (int)n_in, n_tok, y, kun, ks, ns, CP == 16 ? pf : 0);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return 1;
}

#define V8_ARGS s, w, n_in, n_out, xq, xd, n_tok, y, cfg
#define V8_PARAMS cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const void *xq, const float *xd, \
                  int n_tok, float *y, int cfg

template <uint32_t T, int NW, int NTT>
static int v8_cp(V8_PARAMS)
{
    size_t rb = cuk_row_bytes(T, n_in);   /* 0: n_in not whole blocks (K-quants: 256) */
    int items = (int)(n_in / CUK_ITEM);
    uintptr_t al = (uintptr_t)w | (uintptr_t)rb;
    if (!rb)
        return 0;
    int ks_max = (cfg >> 1) & 15, pf = (cfg >> 5) & 15, ns = 4 - ((cfg >> 9) & 3), wm = (cfg >> 11) & 3;
    if (!ks_max || ks_max > 8)
        ks_max = 8;

    if (ns < 2)
        ns = 2;
    if (!wm)
        wm = 2;
    if (!(al & 15))
        return v8_launch<T, NW, NTT, 16>(s, w, rb, items, n_in, n_out, xq, xd, n_tok, y, ks_max, ns, pf, wm);
    if (!(al & 7))
        return v8_launch<T, NW, NTT, 8>(s, w, rb, items, n_in, n_out, xq, xd, n_tok, y, ks_max, ns, pf, wm);
    if (!(al & 3))
        return v8_launch<T, NW, NTT, 4>(s, w, rb, items, n_in, n_out, xq, xd, n_tok, y, ks_max, ns, pf, wm);
    return 0;
}

template <uint32_t T>
static int v8_type(V8_PARAMS)
{
    if (n_tok <= 16)
        return v8_cp<T, 4, 2>(V8_ARGS);
    if (n_tok <= 32)
        return v8_cp<T, 4, 4>(V8_ARGS);
    return v8_cp<T, 4, 8>(V8_ARGS);
}

/*
 * y[t][r] = W[r] . dequant(xq[t], xd[t]) for 9 <= n_tok <= 64 (smaller counts work too) through
 * the v8 GEMM. cfg (mmqv_cfg in matvec.cu): bit 0 unused; bits 1-4 blocks of a cluster
 * splitting K at most (0: 8); bits 5-8 L2 prefetch window in units (0: none); bits 9-10 ring
 * slots 4 - v (at least 2); bits 11-12 K is split until the grid has v (0: 2) blocks per SM. Returns 0, enqueuing nothing, for other
 * types, unaligned rows (4 bytes at least) or a launch the device refuses. Declared in
 * matvec.cu, its only caller.
 */
extern "C" int cuk_mmqv_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                           const float *xd, int n_tok, float *y, int cfg)
{
    if (n_tok < 1 || n_tok > 64 || n_in % 32 || n_out < 1 || cfg < 0 || cfg >= 1 << 13)
        return 0;
    switch (type) {
    case AARMD_TYPE_Q4_0: return v8_type<AARMD_TYPE_Q4_0>(V8_ARGS);
    case AARMD_TYPE_Q4_1: return v8_type<AARMD_TYPE_Q4_1>(V8_ARGS);
    case AARMD_TYPE_Q8_0: return v8_type<AARMD_TYPE_Q8_0>(V8_ARGS);
    case AARMD_TYPE_Q4_K: return v8_type<AARMD_TYPE_Q4_K>(V8_ARGS);
    default: return 0;
    }
}

/* ==== v9: F16 activations once per launch, a producer warp of bulk copies, mbarriers ========= */
/*
 * The v8 GEMM spent 25-37% of its instructions (32-64 tokens) converting the Q8 activations to
 * F16 in every block, held them in registers a unit ahead (194 registers at 64 tokens: 2 blocks
 * per SM) and ran every unit between two block barriers. v9:
 * - k_mmq9_xh converts them once per launch (the same exact i8w arithmetic: bit-identical to v8)
 *   into a per-stream scratch laid out [unit][token][256 halves] in v8's permuted order, the
 *   16-byte chunks of odd tokens XOR-swizzled by 4 (conflict-free fragment loads, no padding);
 * - k_mmq9: warp NC of a block is the producer: per unit it issues 1D bulk copies
 *   (cp.async.bulk) of each row's unit bytes and of the unit's activation tile into a ring of ns
 *   stages, completing on the stage's `full` mbarrier; consumer warps 0..NC-1 wait on it, build
 *   the scales table of their own 16 rows (K-quants; __syncwarp only), decode + mma as v8, and
 *   arrive on the stage's `empty` mbarrier. No block barrier inside the K loop.
 * K split over a cluster and the ordered DSMEM reduction are v8's (deterministic).
 * Needs sm_90, rows of whole units (n_in % 256 == 0), 16-byte aligned rows; else refuses.
 */

/* activations -> F16 scratch: one thread per 16 int8 (one half of an item) of one token */
__global__ void k_mmq9_xh(const int8_t *__restrict__ xq, const float *__restrict__ xd, int n_in, int n_tok,
                          __half *__restrict__ xh)
{
    pdl_enter();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    /* let the GEMM start its weight copies now: its griddepcontrol.wait still waits for this grid */
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
    const int per = n_in / 16;
    const int v = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (v >= per * n_tok)
        return;
    const int tk = v / per, c16 = v - tk * per, item = c16 >> 1, u = item / V8_UI, it = item % V8_UI;
    const uint4 q = __ldg(reinterpret_cast<const uint4 *>(xq + (size_t)tk * n_in) + c16);
    const __half2 d2 = __float2half2_rn(__ldg(xd + (size_t)tk * (n_in / 32) + item));
    uint32_t o[8];
    i8w(q.x, d2, o[0], o[1]);
    i8w(q.y, d2, o[2], o[3]);
    i8w(q.z, d2, o[4], o[5]);
    i8w(q.w, d2, o[6], o[7]);
    const int ch = (it * 4 + (c16 & 1) * 2) ^ ((tk & 1) << 2);   /* 16-byte chunk in the token's row */
    uint4 *dst = reinterpret_cast<uint4 *>(xh + ((size_t)u * n_tok + tk) * V8_UK) + ch;
    dst[0] = make_uint4(o[0], o[1], o[2], o[3]);
    dst[1] = make_uint4(o[4], o[5], o[6], o[7]);
}

template <uint32_t T, int NC, int NTT>
struct v9k {
    typedef v8t<T> Tr;
    enum { BM = 16 * NC, NTH = (NC + 1) * WARP, NTOK = 8 * NTT, WST = BM * Tr::UBP, AST = NTOK * V8_UK * 2,
           STAGE = WST + AST, RST = NTOK + 1, TABB = Tr::TAB ? BM * V8_UI * 4 : 0,
           MINB = NTT == 8 ? 1 : NTT == 4 ? (NC == 4 ? 4 : 2) : (NC == 4 ? 5 : 3) };
    static constexpr size_t smem(int ns)
    {
        return 128 + (size_t)ns * STAGE + TABB + 2 * ns * 8;   /* + 128: the ring aligned to 128 bytes */
    }
};

template <uint32_t T, int NC, int NTT>
__global__ void __launch_bounds__((NC + 1) * WARP, (v9k<T, NC, NTT>::MINB))
k_mmq9(const uint8_t *__restrict__ W, size_t rb, int n_items, int n_out, const __half *__restrict__ xh, int n_tok,
       float *__restrict__ y, int kun, int ks, int ns, const __grid_constant__ CUtensorMap tm, int use_tm)
{
    typedef v8t<T> Tr;
    typedef v9k<T, NC, NTT> K;
    enum { BM = K::BM, NTOK = K::NTOK, UB = Tr::UB, UBP = Tr::UBP, WST = K::WST, STAGE = K::STAGE, RST = K::RST };
    static_assert(UB % 16 == 0 && UBP % 16 == 0, "bulk copies of whole 16-byte pieces");
    static_assert(BM * RST * 4 <= 2 * STAGE, "the reduction fits the ring");
    static_assert(STAGE % 128 == 0 && K::WST % 128 == 0, "tensor copies land 128-byte aligned");
    extern __shared__ __align__(16) uint8_t smraw[];
    uint8_t *sm = smraw + ((128u - (smem_u32(smraw) & 127u)) & 127u);   /* tensor copies: 128-byte aligned */
    uint32_t *tab = reinterpret_cast<uint32_t *>(sm + ns * STAGE);           /* [BM][V8_UI] (K-quants) */
    uint64_t *full = reinterpret_cast<uint64_t *>(sm + ns * STAGE + K::TABB);
    uint64_t *empty = full + ns;
    float *red = reinterpret_cast<float *>(sm);   /* [BM][RST] partial sums, after the ring is drained */

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int nu = n_items / V8_UI;
    const ksplit_part kp = ksplit_of(ks, BM, nu, kun);
    const int rank = kp.rank, r0 = kp.r0, u0 = kp.u0, nst = kp.nst;
    const int rows = min(BM, n_out - r0);

    mb_ring_init<false>(full, empty, nullptr, ns, NC);

    float acc[NTT][4];
    frag_zero(acc);

    if (warp == NC) {
        /* producer: weights of the first ns stages may go before the wait (never written) */
        /* a tensor copy writes its whole box (BM rows x UBP bytes; past the matrix: zeros) */
        const uint32_t abytes = (uint32_t)n_tok * V8_UK * 2,
                       bytes = (use_tm ? (uint32_t)BM * UBP : (uint32_t)rows * UB) + abytes;
        auto weights = [&](int i) {
            uint8_t *st = sm + (i % ns) * STAGE;
            if (use_tm) {   /* one copy of every row's unit (+ the next unit's first UBP - UB bytes) */
                if (lane == 0)
                    tma_2d(st, &tm, (u0 + i) * (UB / 2), r0, &full[i % ns]);
                return;
            }
            const size_t ub = (size_t)(u0 + i) * UB;
            for (int row = lane; row < rows; row += WARP)   /* one bulk copy per row (run 1: slow) */
                bulk_g2s(st + row * UBP, W + (size_t)(r0 + row) * rb + ub, UB, &full[i % ns]);
        };
        auto acts = [&](int i) {
            if (lane == 0)
                bulk_g2s(sm + (i % ns) * STAGE + WST, xh + (size_t)(u0 + i) * n_tok * V8_UK, abytes, &full[i % ns]);
        };
        const int pre = min(ns, nst);
        for (int i = 0; i < pre; i++) {
            if (lane == 0)
                mb_arrive_tx(&full[i], bytes);
            __syncwarp();
            weights(i);
        }
        pdl_enter();
        for (int i = 0; i < pre; i++)
            acts(i);
        for (int i = pre; i < nst; i++) {
            mb_wait(&empty[i % ns], ((i / ns) + 1) & 1);   /* stage i - ns consumed */
            if (lane == 0)
                mb_arrive_tx(&full[i % ns], bytes);
            __syncwarp();
            weights(i);
            acts(i);
        }
    } else {
        pdl_enter();
        const int wr = warp * 16;
        uint32_t *tw = tab + wr * V8_UI;
        for (int i = 0; i < nst; i++) {
            const uint8_t *st = sm + (i % ns) * STAGE;
            mb_wait(&full[i % ns], (i / ns) & 1);
            if constexpr (Tr::TAB) {
                q4k_warp_table(st + wr * UBP, UBP, tw, lane);
            }
            const uint8_t *rw = st + (wr + g) * UBP;
            /* activation rows n*8+g; odd tokens have each item's 4 chunks in the other half of 128 bytes */
            const __half *xa = reinterpret_cast<const __half *>(st + WST) + g * V8_UK + t4 * 8;
            const int sw = (g & 1) ? 32 : 0;   /* halves */
#pragma unroll
            for (int it = 0; it < V8_UI; it++) {
                uint32_t a[4], c[4];
                if constexpr (Tr::TAB) {
                    __half2 sa, sb;
                    tab2(tw[g * V8_UI + it], sa, sb);
                    Tr::frag_ab(rw, it, t4, sa, sb, a);
                    tab2(tw[(g + 8) * V8_UI + it], sa, sb);
                    Tr::frag_ab(rw + 8 * UBP, it, t4, sa, sb, c);
                } else {
                    Tr::frag(rw, it, t4, nullptr, a);
                    Tr::frag(rw + 8 * UBP, it, t4, nullptr, c);
                }
                const __half *xi = xa + it * 32 + ((it & 1) ? -sw : sw);
#pragma unroll
                for (int n = 0; n < NTT; n++) {
                    uint4 x = *reinterpret_cast<const uint4 *>(xi + n * 8 * V8_UK);
                    mma_f16(acc[n], a[0], c[0], a[1], c[1], x.x, x.y);
                    mma_f16(acc[n], a[2], c[2], a[3], c[3], x.z, x.w);
                }
            }
            __syncwarp();
            if (lane == 0)
                mb_arrive(&empty[i % ns]);
        }
    }

    /* every stage consumed (so every copy landed): partial sums over the ring, then v8's reduction */
    __syncthreads();
    splitk_store<BM, NTOK, NTT, RST>(red, acc, warp < NC, warp, g, t4, tid, K::NTH, ks, rank, n_tok, r0, n_out, y);
}

/* ---- v9 launch ------------------------------------------------------------------------------ */

/* the F16 activations' scratch (mmq_scratch, mmq_common.cuh): 64 tokens of rows up to 16384 at least */
#define V9_MIN_SCRATCH ((size_t)64 * 16384 * 2)

static void *v9_scratch(cudaStream_t s, size_t bytes)
{
    return mmq_scratch(s, bytes > V9_MIN_SCRATCH ? bytes : V9_MIN_SCRATCH);
}

/* the map of W as rows of rb / 2 16-bit elements, boxes of bw bytes x bh rows; 0 on failure */
static int v9_tmap(CUtensorMap *tm, const void *w, size_t rb, int64_t n_out, int bw, int bh)
{
    return mmq_tmap_2d(tm, CU_TENSOR_MAP_DATA_TYPE_UINT16, w, rb / 2, (uint64_t)n_out, rb, (uint32_t)(bw / 2),
                       (uint32_t)bh, CU_TENSOR_MAP_SWIZZLE_NONE);
}

template <uint32_t T, int NC, int NTT>
static int v9_launch(cudaStream_t s, const void *w, size_t rb, int items, int64_t n_in, int64_t n_out, const void *xq,
                     const float *xd, int n_tok, float *y, int ks_max, int ns, int wm, int rowcopy)
{
    typedef v9k<T, NC, NTT> K;
    auto kern = k_mmq9<T, NC, NTT>;
    const size_t smem = K::smem(ns);
    static int attr = 0;   /* per instantiation: the shared memory limit raised to (bytes), -1 refused */
    if (mmq_smem_limit(kern, K::smem(4), &attr) < 0 || smem > (size_t)attr)
        return 0;
    CUtensorMap tm;
    memset(&tm, 0, sizeof tm);
    if (!rowcopy && !v9_tmap(&tm, w, rb, n_out, v8t<T>::UBP, K::BM))
        return 0;
    __half *xh = (__half *)v9_scratch(s, (size_t)n_tok * n_in * 2);
    if (!xh)
        return 0;
    const int tiles = (int)((n_out + K::BM - 1) / K::BM);
    const int nu = items / V8_UI;
    int ks = 1;
    const int kun = split_k(nu, tiles, wm * v8_sms, ks_max, &ks);

    const int nx = (int)(n_in / 16) * n_tok;
    pdl_launch(k_mmq9_xh, dim3((unsigned)((nx + 255) / 256)), dim3(256), s, (const int8_t *)xq, xd, (int)n_in, n_tok,
               xh);

    cudaLaunchConfig_t cfg;
    cudaLaunchAttribute at[2];
    cluster_cfg(&cfg, at, tiles, ks, K::NTH, smem, s);
    cudaError_t e = cudaLaunchKernelEx(&cfg, kern, (const uint8_t *)w, rb, items, (int)n_out, (const __half *)xh,
                                       n_tok, y, kun, ks, ns, tm, rowcopy ? 0 : 1);
    if (e != cudaSuccess) {   /* the conversion ran for nothing; the caller takes another kernel */
        cudaGetLastError();
        return 0;
    }
    return 1;
}

#define V9_ARGS s, w, rb, items, n_in, n_out, xq, xd, n_tok, y, ks_max, ns, wm, rowcopy

template <uint32_t T, int NC>
static int v9_tok(cudaStream_t s, const void *w, size_t rb, int items, int64_t n_in, int64_t n_out, const void *xq,
                  const float *xd, int n_tok, float *y, int ks_max, int ns, int wm, int rowcopy)
{
    if (n_tok <= 16)
        return v9_launch<T, NC, 2>(V9_ARGS);
    if (n_tok <= 32)
        return v9_launch<T, NC, 4>(V9_ARGS);
    return v9_launch<T, NC, 8>(V9_ARGS);
}

template <uint32_t T>
static int v9_type(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const void *xq, const float *xd,
                   int n_tok, float *y, int cfg)
{
    const size_t rb = cuk_row_bytes(T, n_in);
    if (!rb || rb % 16 || ((uintptr_t)w & 15) || n_in % V8_UK)
        return 0;
    const int items = (int)(n_in / CUK_ITEM);
    const gemm_knobs kn = gemm_knobs_of(cfg);
    const int ns = kn.ns, ks_max = kn.ks_max, wm = kn.wm ? kn.wm : 2;
    const int rowcopy = (cfg >> 9) & 1;
    if (cfg & (1 << 8))
        return v9_tok<T, 8>(V9_ARGS);
    return v9_tok<T, 4>(V9_ARGS);
}

/*
 * The v9 GEMM: y[t][r] = W[r] . dequant(xq[t], xd[t]) for 1 <= n_tok <= 64, the same rounding as
 * v8 (weights and activations in F16, F32 accumulation; bit-identical to v8 up to the order of
 * the F32 sums). cfg: bits 0-1 ring stages - 2 (2..4, 4 at most); bits 2-5 blocks of a cluster
 * splitting K at most (0: 8); bits 6-7 K is split until the grid has v (0: 2) blocks per SM;
 * bit 8: 8 consumer warps (128-row blocks; else 4, 64 rows); bit 9: one bulk copy per row and
 * unit instead of one tensor copy per unit (much slower: notes v9-mmq). Returns 0,
 * enqueuing nothing of the product, for other types, rows not of whole 256-element units or not
 * 16-byte aligned, devices before sm_90, or a launch the device refuses. Declared in matvec.cu.
 */
extern "C" int cuk_mmq9_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                           const float *xd, int n_tok, float *y, int cfg)
{
    if (n_tok < 1 || n_tok > 64 || n_in % 32 || n_out < 1 || cfg < 0 || cfg >= 1 << 10)
        return 0;
    v8_device();
    if (v8_cc < 9)
        return 0;
    switch (type) {
    case AARMD_TYPE_Q4_0: return v9_type<AARMD_TYPE_Q4_0>(s, w, n_in, n_out, xq, xd, n_tok, y, cfg);
    case AARMD_TYPE_Q4_1: return v9_type<AARMD_TYPE_Q4_1>(s, w, n_in, n_out, xq, xd, n_tok, y, cfg);
    case AARMD_TYPE_Q8_0: return v9_type<AARMD_TYPE_Q8_0>(s, w, n_in, n_out, xq, xd, n_tok, y, cfg);
    case AARMD_TYPE_Q4_K: return v9_type<AARMD_TYPE_Q4_K>(s, w, n_in, n_out, xq, xd, n_tok, y, cfg);
    default: return 0;
    }
}
