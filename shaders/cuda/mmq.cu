/*
 * mmq.cu — the v8 small-batch quantized GEMM of the CUDA backend (9..64 tokens; Q4_0, Q4_1,
 * Q8_0, Q4_K): raw weight tiles stream through a shared-memory cp.async ring and are decoded
 * straight into F16 mma.sync fragments, the activations are converted to F16 once per block,
 * and K is split over the blocks of a thread-block cluster whose partial sums are added in a
 * fixed order through distributed shared memory (deterministic). Entered through
 * cuk_mmq_q8 (matvec.cu) when its variant selects it; other types stay with matvec.cu.
 */
#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "../../plugins/cuda/launch.h"
#include "cp_async.cuh"
#include "mma.cuh"
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

__device__ __forceinline__ uint32_t h2u(__half2 h)
{
    return *reinterpret_cast<uint32_t *>(&h);
}

__device__ __forceinline__ __half2 u2h(uint32_t u)
{
    return *reinterpret_cast<__half2 *>(&u);
}

/* the nibbles at bits 0-3 and 16-19 of u (exact small integers q) -> a * q + b */
__device__ __forceinline__ uint32_t nib2(uint32_t u, __half2 a, __half2 b)
{
    __half2 q = __hsub2(u2h((u & 0x000F000Fu) | 0x64006400u), u2h(0x64006400u));
    return h2u(__hfma2(q, a, b));
}

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
        const uint32_t sc = hf ? (hd.w & 0x0F0F0F0Fu) | ((hd.y >> 2) & 0x30303030u) : hd.y & 0x3F3F3F3Fu;
        const uint32_t mn = hf ? ((hd.w >> 4) & 0x0F0F0F0Fu) | ((hd.z >> 2) & 0x30303030u) : hd.z & 0x3F3F3F3Fu;
        uint2 *o = tab + row * V8_UI + hf * 4;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float a = dd.x * (float)((sc >> (8 * k)) & 0xFF), b = -dd.y * (float)((mn >> (8 * k)) & 0xFF);
            o[k] = make_uint2(h2u(__float2half2_rn(a)), h2u(__float2half2_rn(b)));
        }
    }
    static __device__ __forceinline__ void frag(const uint8_t *rw, int it, int t4, const uint2 *tr, uint32_t *o)
    {
        uint2 q = *reinterpret_cast<const uint2 *>(rw + 16 + 32 * (it >> 1) + 8 * t4);
        uint2 s = tr[it];
        __half2 a = u2h(s.x), b = u2h(s.y);
        const int sh = 4 * (it & 1);   /* odd sub-blocks are the high nibbles */
        o[0] = nib2(q.x >> sh, a, b); o[1] = nib2(q.x >> (sh + 8), a, b);
        o[2] = nib2(q.y >> sh, a, b); o[3] = nib2(q.y >> (sh + 8), a, b);
    }
};

/* ---- the kernel -------------------------------------------------------------------------- */
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
    const int rank = ks > 1 ? (int)(blockIdx.x % (unsigned)ks) : 0;
    const int r0 = (int)(blockIdx.x / (unsigned)ks) * BM;
    const int nu = (n_items + V8_UI - 1) / V8_UI;
    const int u0 = min(nu, rank * kun), nst = min(nu, u0 + kun) - u0;

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
#pragma unroll
    for (int n = 0; n < NTT; n++)
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
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
    {
        float *rr = red + (warp * 16 + g) * RST + 2 * t4;
#pragma unroll
        for (int n = 0; n < NTT; n++) {
            rr[8 * n] = acc[n][0];
            rr[8 * n + 1] = acc[n][1];
            rr[8 * RST + 8 * n] = acc[n][2];
            rr[8 * RST + 8 * n + 1] = acc[n][3];
        }
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cg::cluster_group cl = cg::this_cluster();
    if (ks > 1)
        cl.sync();
    else
        __syncthreads();
#else
    __syncthreads();   /* before sm_90 the launcher never splits K (ks == 1) */
#endif
    const int chunk = (BM + ks - 1) / ks;
    for (int e = tid; e < NTOK * chunk; e += NTH) {
        const int tk = e / chunk, row = rank * chunk + e % chunk;
        if (tk >= n_tok || row >= BM || r0 + row >= n_out)
            continue;
        float s = 0.0f;
        for (int p = 0; p < ks; p++) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            const float *rp = ks > 1 ? cl.map_shared_rank(red, p) : red;
#else
            const float *rp = red;
#endif
            s += rp[row * RST + tk];
        }
        y[(size_t)tk * n_out + r0 + row] = s;
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (ks > 1)
        cl.sync();   /* peers may still read this block's partial sums */
#endif
}

/* ---- launch ------------------------------------------------------------------------------ */

static int v8_sms = 0, v8_cc = 0;   /* multiprocessors and compute capability major of the device */

static void v8_device(void)
{
    if (!v8_sms) {
        int dev = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&v8_sms, cudaDevAttrMultiProcessorCount, dev);
        cudaDeviceGetAttribute(&v8_cc, cudaDevAttrComputeCapabilityMajor, dev);
        if (v8_sms <= 0)
            v8_sms = 1;
    }
}

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
    const int want = wm * v8_sms, min_units = nu >= 8 ? 2 : 1;
    while (ks < ks_max && tiles * ks < want && nu / (ks + 1) >= min_units)
        ks++;
    const int kun = (nu + ks - 1) / ks;
    ks = (nu + kun - 1) / kun;   /* no empty ranks */
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[2];
    int na = 0;
    if (cuk_pdl_on) {
        at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[na].val.programmaticStreamSerializationAllowed = 1;
        na++;
    }
    if (ks > 1) {
        at[na].id = cudaLaunchAttributeClusterDimension;
        at[na].val.clusterDim.x = (unsigned)ks;
        at[na].val.clusterDim.y = 1;
        at[na].val.clusterDim.z = 1;
        na++;
    }
    cfg.gridDim = dim3((unsigned)(tiles * ks));
    cfg.blockDim = dim3(K::NTH);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = at;
    cfg.numAttrs = (unsigned)na;
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
