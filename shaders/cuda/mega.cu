/*
 * mega.cu — the persistent decode kernel (option mega): one cooperative launch
 * runs the forward of one token of one sequence through every layer of a
 * llama-family model and the logits, with a grid-wide barrier between phases.
 * It is not a general forward: no biases, post norms, softcaps or windows.
 *
 * Phases of a layer (5 barriers):
 *   P1 attn norm (every block, redundantly, into shared memory) + q/k rotation pairs and v rows,
 *      RoPE, K/V rows of the position into the paged cache
 *   P2 attention: warp per (head, key chunk), lanes over keys; partial softmax rows, merged by
 *      the last warp of each head to finish (threadfence + counter)
 *   P3 the merged row (every block) + wo rows + residual
 *   P4 ffn norm (every block) + gate/up rows + SiLU gate
 *   P5 down rows + residual
 * then output norm + logits rows. Activations are quantized per 32 into
 * shared memory (Q8, as the launch-per-op path) for quantized weights, F32
 * for float weights. Data written in this launch by other blocks is read with
 * ld.global.cg (L2; L1 is not coherent). The next phase's matrices are
 * prefetched into L2 by the whole grid, and each warp's own rows of the next
 * phase into L1 before it waits at the barrier. Measurements and history:
 * docs/cuda-notes.md v8-mega.
 */
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include "../../plugins/cuda/mega.h"
#include "dequant.cuh"
#include "../../core/abi/aarmd_backend.h"

#define WARP 32
#define NWARPS (CUK_MEGA_THREADS / WARP)
#define SLOT_WORDS 32   /* barrier counters 128 bytes apart */
#define TAB_SMEM 2048   /* block-table entries kept in shared memory (32K positions) */
/* A/B switches (args.flags, env AARMD_MEGA_FLAGS): prefetches off */
#define FLAG_NO_L1W 1   /* weight rows of the next phase into L1 */
#define FLAG_NO_L2 2    /* next phases' matrices into L2 */
#define FLAG_NO_KV 4    /* the attention chunk's K/V rows into L1/L2 */

/* ---- grid barrier ------------------------------------------------------------ */

__device__ __forceinline__ unsigned ld_acquire(const unsigned *p)
{
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ void red_release(unsigned *p, unsigned v)
{
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

/*
 * Barrier k of a launch (k = 1, 2, ...). The blocks arrive on nslot counters
 * (block b on counter b % nslot, 128 bytes apart): thread 0 of each block
 * adds 1 with release semantics (cumulative over the block's writes, which
 * bar.sync made visible to it) once all its threads are done, then waits
 * until it reads (acquire) k times the number of blocks of every counter.
 * Counts only grow during a launch; the last block to leave resets them
 * (grid_exit), so the next launch starts from 0.
 * bar: (CUK_MEGA_MAX_SLOTS + 1) * SLOT_WORDS words. prof (block 0): the clock
 * at arrival and at release, prof[4k] and prof[4k + 1].
 */
__device__ __forceinline__ void grid_sync(unsigned *bar, unsigned &k, int nslot, long long *prof)
{
    __syncthreads();
    k++;
    if (threadIdx.x == 0) {
        if (prof && blockIdx.x == 0)
            prof[4 * k] = clock64();
        red_release(bar + (blockIdx.x % nslot) * SLOT_WORDS, 1u);
        for (int i = 0; i < nslot; i++) {
            unsigned n = gridDim.x / nslot + ((unsigned)i < gridDim.x % nslot ? 1u : 0u);
            while (ld_acquire(bar + i * SLOT_WORDS) < k * n)
                ;
        }
        if (prof && blockIdx.x == 0)
            prof[4 * k + 1] = clock64();
    }
    __syncthreads();
}

/* block 0 notes the clock at slot i of prof (profiling) */
__device__ __forceinline__ void stamp(long long *prof, int i)
{
    if (prof && blockIdx.x == 0 && threadIdx.x == 0)
        prof[i] = clock64();
}

/* Called once by every block after its last barrier: the last one out zeroes the counters. */
__device__ __forceinline__ void grid_exit(unsigned *bar, int nslot)
{
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned *done = bar + CUK_MEGA_MAX_SLOTS * SLOT_WORDS;
        __threadfence();
        if (atomicAdd(done, 1u) == gridDim.x - 1) {
            for (int i = 0; i < nslot; i++)
                atomicExch(bar + i * SLOT_WORDS, 0u);
            atomicExch(done, 0u);
        }
    }
}

/* Prefetches bytes [0, n) of p into L2, spread over every thread of the grid. */
__device__ __forceinline__ void prefetch_l2(const void *p, size_t n)
{
    if (!p)
        return;
    /* consecutive lines on consecutive blocks: every block issues a few */
    size_t nt = (size_t)gridDim.x * blockDim.x, t = (size_t)threadIdx.x * gridDim.x + blockIdx.x;
    const char *c = (const char *)p;
    for (size_t o = t * 128; o < n; o += nt * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(c + o));
}

/* ---- block reductions ---------------------------------------------------------- */

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

static __device__ float block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0)
        red[wid] = v;
    __syncthreads();
    float t = lane < NWARPS ? red[lane] : 0.0f;
    return warp_sum(t);
}

/* ---- the shared activation row ------------------------------------------------- */

struct smem_t {
    float *x;       /* [max_in] F32 activations (also the queries in P2) */
    float *pw;      /* [NWARPS][32] a warp's key weights in P2 */
    float *rc, *rs; /* [CUK_MAX_HEAD_DIM / 2] cos, sin of this position's rotation pairs */
    int32_t *tab;   /* [TAB_SMEM] the sequence's block table (when it fits) */
    int8_t *xq;     /* [max_in] Q8 activations */
    float *xd;      /* [max_in / 32] their scales */
    float *red;     /* [NWARPS] */
};

/* x[i] = norm(x) * w[i] (RMS), in place, as k_add_norm computes it. */
static __device__ void stage_norm(const smem_t &s, int n, const float *w, float eps)
{
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        ss += s.x[i] * s.x[i];
    float r = rsqrtf(block_sum(ss, s.red) / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float y = s.x[i] * r;
        s.x[i] = y * w[i];
    }
    __syncthreads();
}

/* xq/xd = Q8 of x per 32 (n % 32 == 0), as k_quantize_q8. */
static __device__ void stage_q8(const smem_t &s, int n)
{
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    for (int g = wid; g < n / 32; g += NWARPS) {
        float v = s.x[g * 32 + lane];
        float a = warp_max(fabsf(v));
        float d = a / 127.0f;
        s.xq[g * 32 + lane] = (int8_t)(d > 0.0f ? __float2int_rn(v / d) : 0);
        if (lane == 0)
            s.xd[g] = d;
    }
    __syncthreads();
}

/* x[i] = src[i] (written in this launch: L2 loads). */
static __device__ void stage_load(const smem_t &s, const float *src, int n)
{
    for (int i0 = threadIdx.x; i0 < n; i0 += 4 * blockDim.x) {   /* 4 loads in flight a thread */
        float v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int i = i0 + u * blockDim.x;
            v[u] = i < n ? __ldcg(src + i) : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int i = i0 + u * blockDim.x;
            if (i < n)
                s.x[i] = v[u];
        }
    }
    __syncthreads();
}

/* ---- row dots ---------------------------------------------------------------------- */

/* a (+ b) = rows ra (and rb, may be NULL) . the Q8 activations, items sl, sl + G, ... */
template <uint32_t T>
__device__ __forceinline__ void dot2_q8(const uint8_t *ra, const uint8_t *rb, int n_items, int sl, int G,
                                        const smem_t &s, float &a, float &b)
{
#pragma unroll 2
    for (int it = sl; it < n_items; it += G) {
        const int4 *xp = reinterpret_cast<const int4 *>(s.xq + it * 32);
        int4 x0 = xp[0], x1 = xp[1];
        int xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        float dx = s.xd[it];
        int c0 = 0, c1 = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            c0 = __dp4a(0x01010101, xw[k], c0);
            c1 = __dp4a(0x01010101, xw[k + 4], c1);
        }
        q8item o;
        decq<T>::run(ra, it, o);
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            s0 = __dp4a(o.q[k], xw[k], s0);
            s1 = __dp4a(o.q[k + 4], xw[k + 4], s1);
        }
        a += dx * (o.a0 * (float)s0 + o.a1 * (float)s1 + o.b0 * (float)c0 + o.b1 * (float)c1);
        if (rb) {
            q8item p;
            decq<T>::run(rb, it, p);
            int t0 = 0, t1 = 0;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                t0 = __dp4a(p.q[k], xw[k], t0);
                t1 = __dp4a(p.q[k + 4], xw[k + 4], t1);
            }
            b += dx * (p.a0 * (float)t0 + p.a1 * (float)t1 + p.b0 * (float)c0 + p.b1 * (float)c1);
        }
    }
}

/* the same with F32 activations for float weights */
template <uint32_t T>
__device__ __forceinline__ void dot2_f(const uint8_t *ra, const uint8_t *rb, int n_items, int sl, int G,
                                       const smem_t &s, float &a, float &b)
{
#pragma unroll 2
    for (int it = sl; it < n_items; it += G) {
        const float *xp = s.x + it * 32;
        float w[32];
        dec<T>::run(ra, it, w);
        float acc = 0.0f;
#pragma unroll
        for (int j = 0; j < 32; j++)
            acc += w[j] * xp[j];
        a += acc;
        if (rb) {
            dec<T>::run(rb, it, w);
            float bcc = 0.0f;
#pragma unroll
            for (int j = 0; j < 32; j++)
                bcc += w[j] * xp[j];
            b += bcc;
        }
    }
}

/* One or two rows (b may be NULL) of one type and row size, as a unit of work sees them. */
struct urow {
    const uint8_t *a, *b;
    uint32_t type, rb;
};

__device__ __forceinline__ urow mat_rows(const cuk_mega_mat &m, int ra, int rb)
{
    const uint8_t *w = (const uint8_t *)m.w;
    urow r = {w + (size_t)ra * m.rb, rb >= 0 ? w + (size_t)rb * m.rb : NULL, m.type, m.rb};
    return r;
}

__device__ __forceinline__ void dot_rows(const urow &r, int n_items, int sl, int G, const smem_t &s, float &a, float &b)
{
    switch (r.type) {
    case AARMD_TYPE_Q4_0: dot2_q8<AARMD_TYPE_Q4_0>(r.a, r.b, n_items, sl, G, s, a, b); break;
    case AARMD_TYPE_Q4_1: dot2_q8<AARMD_TYPE_Q4_1>(r.a, r.b, n_items, sl, G, s, a, b); break;
    case AARMD_TYPE_Q5_0: dot2_q8<AARMD_TYPE_Q5_0>(r.a, r.b, n_items, sl, G, s, a, b); break;
    case AARMD_TYPE_Q5_1: dot2_q8<AARMD_TYPE_Q5_1>(r.a, r.b, n_items, sl, G, s, a, b); break;
    case AARMD_TYPE_Q8_0: dot2_q8<AARMD_TYPE_Q8_0>(r.a, r.b, n_items, sl, G, s, a, b); break;
    case AARMD_TYPE_Q4_K: dot2_q8<AARMD_TYPE_Q4_K>(r.a, r.b, n_items, sl, G, s, a, b); break;
    case AARMD_TYPE_Q5_K: dot2_q8<AARMD_TYPE_Q5_K>(r.a, r.b, n_items, sl, G, s, a, b); break;
    case AARMD_TYPE_Q6_K: dot2_q8<AARMD_TYPE_Q6_K>(r.a, r.b, n_items, sl, G, s, a, b); break;
    case AARMD_TYPE_F32: dot2_f<AARMD_TYPE_F32>(r.a, r.b, n_items, sl, G, s, a, b); break;
    case AARMD_TYPE_F16: dot2_f<AARMD_TYPE_F16>(r.a, r.b, n_items, sl, G, s, a, b); break;
    case AARMD_TYPE_BF16: dot2_f<AARMD_TYPE_BF16>(r.a, r.b, n_items, sl, G, s, a, b); break;
    default: break;
    }
}

/*
 * The grid's warps numbered across the blocks first (warp w of block b is
 * w * gridDim.x + b): a phase of few units spreads over every SM rather than
 * filling the first blocks (their L1/L2 paths, not the grid's, set its time).
 */
__device__ __forceinline__ int vwarp()
{
    return (int)((threadIdx.x >> 5) * gridDim.x + blockIdx.x);
}

/* Lanes per unit for n_units units of rows of n_items items: one item a lane when the grid's
 * lanes take every unit in one pass, else down to about 2 items a lane; a power of two <= 32. */
__device__ __forceinline__ int lanes_for(int n_items, int n_units)
{
    int lo = 1;
    while (lo < 32 && 2 * lo < n_items)
        lo <<= 1;
    int g = lo;
    while (g < 32 && g < n_items && (long)n_units * (2 * g) <= (long)gridDim.x * NWARPS * WARP)
        g <<= 1;
    return g;
}

/*
 * A phase's units of work spread over every warp of the grid, G lanes per
 * unit (32 / G units per warp pass). rows(u) names the unit's one or two
 * rows; pre(u), run on the unit's lane 0 before its dots, loads what the
 * epilogue needs (float2); the dots are reduced over the unit's lanes and
 * epi(u, a, b, pre) runs on its lane 0.
 */
template <class Rows, class Pre, class Epi>
__device__ __forceinline__ void run_units(int n_units, int G, int ni, const smem_t &s, Rows rows, Pre pre, Epi epi)
{
    const int lane = threadIdx.x & 31;
    const int gw = vwarp(), nw = gridDim.x * NWARPS;
    const int upw = 32 / G, sub = lane / G, sl = lane % G;
    for (int base = gw * upw; base < n_units; base += nw * upw) {   /* warp-uniform */
        int u = base + sub;
        float a = 0.0f, b = 0.0f;
        float2 c = make_float2(0.0f, 0.0f);
        if (u < n_units) {
            if (sl == 0)
                c = pre(u);
            dot_rows(rows(u), ni, sl, G, s, a, b);
        }
        for (int o = G / 2; o > 0; o >>= 1) {
            a += __shfl_xor_sync(0xffffffffu, a, o);
            b += __shfl_xor_sync(0xffffffffu, b, o);
        }
        if (u < n_units && sl == 0)
            epi(u, a, b, c);
    }
}

/* The same walk over this warp's units: their rows' bytes into L1 (weights are never written). */
template <class Rows>
__device__ __forceinline__ void prefetch_units(int n_units, int G, Rows rows)
{
    const int lane = threadIdx.x & 31;
    const int gw = vwarp(), nw = gridDim.x * NWARPS;
    const int upw = 32 / G, sub = lane / G, sl = lane % G;
    for (int u = gw * upw + sub; u < n_units; u += nw * upw) {
        urow r = rows(u);
        for (uint32_t o = (uint32_t)sl * 128; o < r.rb; o += (uint32_t)G * 128) {
            asm volatile("prefetch.global.L1 [%0];" ::"l"(r.a + o));
            if (r.b)
                asm volatile("prefetch.global.L1 [%0];" ::"l"(r.b + o));
        }
    }
}

/* Units of a matrix phase of n_out rows: one row a unit, or rows u and u + half when the rows
 * outnumber the grid's lane groups (both rows' loads in flight at once). */
__device__ __forceinline__ int pair_half(int n_out, int G)
{
    const int cap = gridDim.x * NWARPS * (WARP / G);
    return n_out > cap ? (n_out + 1) / 2 : n_out;
}

/* ---- rotary embedding (ops.cu's rope_cs: the CPU backend's angles, double precision) ---- */

static __device__ void mega_rope_cs(const struct cuk_rope &r, int32_t p, int i, float *c, float *sn)
{
    double extrap = (double)p * pow((double)r.freq_base, -2.0 * i / (double)r.n_rot);
    if (r.freq_factors)
        extrap /= r.freq_factors[i];
    double theta = r.freq_scale * extrap;
    double mscale = r.attn_factor;
    if (r.ext_factor != 0.0f) {
        double span = r.corr_high - r.corr_low;
        double y = (i - r.corr_low) / (span > 0.001 ? span : 0.001);
        double ramp = 1.0 - fmin(1.0, fmax(0.0, y));
        double mix = ramp * r.ext_factor;
        theta = theta * (1.0 - mix) + extrap * mix;
        mscale *= 1.0 + 0.1 * log(1.0 / r.freq_scale);
    }
    *c = (float)(cos(theta) * mscale);
    *sn = (float)(sin(theta) * mscale);
}

/* Rows (within a head of D) of rotation pair i. */
__device__ __forceinline__ void rope_pair(int kind, int D, int i, int *ia, int *ib)
{
    if (kind == AARMD_ROPE_NEOX) {
        *ia = i;
        *ib = i + D / 2;
    } else {
        *ia = 2 * i;
        *ib = 2 * i + 1;
    }
}

/* ---- the kernel ----------------------------------------------------------------------- */

/* prefetches the bytes of n_out rows of m into L2 */
__device__ __forceinline__ void prefetch_mat(const cuk_mega_mat &m, int n_out)
{
    prefetch_l2(m.w, (size_t)n_out * m.rb);
}


/* Decodes item `it` of an embedding row of any supported type into w[32]. */
__device__ __forceinline__ void dec_any(uint32_t type, const uint8_t *row, int it, float *w)
{
    switch (type) {
    case AARMD_TYPE_Q4_0: dec<AARMD_TYPE_Q4_0>::run(row, it, w); break;
    case AARMD_TYPE_Q4_1: dec<AARMD_TYPE_Q4_1>::run(row, it, w); break;
    case AARMD_TYPE_Q5_0: dec<AARMD_TYPE_Q5_0>::run(row, it, w); break;
    case AARMD_TYPE_Q5_1: dec<AARMD_TYPE_Q5_1>::run(row, it, w); break;
    case AARMD_TYPE_Q8_0: dec<AARMD_TYPE_Q8_0>::run(row, it, w); break;
    case AARMD_TYPE_Q4_K: dec<AARMD_TYPE_Q4_K>::run(row, it, w); break;
    case AARMD_TYPE_Q5_K: dec<AARMD_TYPE_Q5_K>::run(row, it, w); break;
    case AARMD_TYPE_Q6_K: dec<AARMD_TYPE_Q6_K>::run(row, it, w); break;
    case AARMD_TYPE_F32: dec<AARMD_TYPE_F32>::run(row, it, w); break;
    case AARMD_TYPE_F16: dec<AARMD_TYPE_F16>::run(row, it, w); break;
    case AARMD_TYPE_BF16: dec<AARMD_TYPE_BF16>::run(row, it, w); break;
    default:
        for (int j = 0; j < 32; j++)
            w[j] = 0.0f;
    }
}


/* A 16-byte load through L1 (data older than this launch). */
__device__ __forceinline__ uint4 ld_ca(const uint4 *p)
{
    uint4 v;
    asm("ld.global.ca.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}

/* The F16 row of position j (K, or V when v) of layer offset loff in the paged cache; block ids from
 * the shared copy of the table when it fits. */
__device__ __forceinline__ const __half *kv_at(const cuk_mega_args &A, const smem_t &s, const int32_t *tab, int nbl,
                                               int j, int v, size_t loff, int KV)
{
    int32_t b = nbl <= TAB_SMEM ? s.tab[j / CUK_KV_BLOCK] : __ldg(tab + j / CUK_KV_BLOCK);
    return (const __half *)A.kv_pool + (size_t)b * A.block_halfs + loff +
           (size_t)(v * CUK_KV_BLOCK + j % CUK_KV_BLOCK) * KV;
}

/* Prefetches bytes [0, n) of p into this SM's L1, spread over the block's threads. */
__device__ __forceinline__ void prefetch_block_l1(const void *p, size_t n)
{
    for (size_t o = (size_t)threadIdx.x * 128; o < n; o += (size_t)blockDim.x * 128)
        asm volatile("prefetch.global.L1 [%0];" ::"l"((const char *)p + o));
}

__global__ void __launch_bounds__(CUK_MEGA_THREADS, 1) k_mega(const struct cuk_mega_args A)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    smem_t s;
    s.x = reinterpret_cast<float *>(smem_raw);
    s.pw = s.x + A.max_in;
    s.rc = s.pw + NWARPS * WARP;
    s.rs = s.rc + CUK_MAX_HEAD_DIM / 2;
    s.tab = reinterpret_cast<int32_t *>(s.rs + CUK_MAX_HEAD_DIM / 2);
    s.xq = reinterpret_cast<int8_t *>(s.tab + TAB_SMEM);
    s.xd = reinterpret_cast<float *>(s.xq + A.max_in);
    s.red = s.xd + A.max_in / 32;

    unsigned k = 0;
    const int E = A.E, Q = A.Q, KV = A.KV, F = A.F, D = A.D, H = A.n_head, group = A.n_head / A.n_kv;
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const int gw = vwarp(), nw = gridDim.x * NWARPS;
    const int32_t tok = __ldg(A.tok), p = __ldg(A.pos);
    const int32_t *tab = A.btab + __ldg(A.tok_bt);
    const int nk = p + 1;
    int nch = (nk + 31) / 32;   /* key chunks: at least 32 keys each, one warp per (head, chunk) */
    int cap = nw / H > 0 ? nw / H : 1;
    if (nch > cap)
        nch = cap;
    if (nch > CUK_MEGA_MAX_CHUNKS)
        nch = CUK_MEGA_MAX_CHUNKS;
    const int cl = (nk + nch - 1) / nch;
    const int nbl = (nk + CUK_KV_BLOCK - 1) / CUK_KV_BLOCK;
    __half *pool = (__half *)A.kv_pool;
    const int ne = E / 32, nq = Q / 32, nf = F / 32;
    const int hq = Q / 2, hk = KV / 2, half = D / 2, n1 = hq + hk + KV;
    const int G1 = lanes_for(ne, n1), G4 = lanes_for(ne, F), Gq = lanes_for(nq, E), Gf = lanes_for(nf, E),
              Ge = lanes_for(ne, A.n_vocab);
    const int rkind = A.layers[0].rope.kind;
    const int ho = pair_half(E, Gq), hd = pair_half(E, Gf), hv = pair_half(A.n_vocab, Ge);

    /* the rows of each phase's units */
    auto qkv_rows = [&](const cuk_mega_layer &Ly, int u) -> urow {
        if (u < hq + hk) {   /* a q or k rotation pair */
            int v = u < hq ? u : u - hq, h = v / half, ia, ib;
            rope_pair(rkind, D, v % half, &ia, &ib);
            return mat_rows(u < hq ? Ly.q : Ly.k, h * D + ia, h * D + ib);
        }
        return mat_rows(Ly.v, u - hq - hk, -1);
    };
    auto gu_rows = [&](const cuk_mega_layer &Ly, int u) -> urow {
        urow r = mat_rows(Ly.gate, u, -1);
        r.b = (const uint8_t *)Ly.up.w + (size_t)u * Ly.up.rb;
        return r;
    };
    auto x_pair = [&](int u, int hh) -> float2 {
        return make_float2(__ldcg(A.x + u), u + hh < E ? __ldcg(A.x + u + hh) : 0.0f);
    };

    if (A.prof && blockIdx.x == 0 && threadIdx.x == 0)
        A.prof[1] = clock64();
    if (!(A.flags & FLAG_NO_L2)) {
        prefetch_mat(A.layers[0].q, Q);
        prefetch_mat(A.layers[0].k, KV);
        prefetch_mat(A.layers[0].v, KV);
    }
    if (!(A.flags & FLAG_NO_L1W))
        prefetch_units(n1, G1, [&](int u) { return qkv_rows(A.layers[0], u); });
    if (nbl <= TAB_SMEM)
        for (int i = threadIdx.x; i < nbl; i += blockDim.x)
            s.tab[i] = __ldg(tab + i);
    if (threadIdx.x < half) {   /* the rotation of this position (every layer's rope is the same: mega_cuda.c) */
        if (rkind != AARMD_ROPE_NONE)
            mega_rope_cs(A.layers[0].rope, p, threadIdx.x, &s.rc[threadIdx.x], &s.rs[threadIdx.x]);
        else
            s.rc[threadIdx.x] = 1.0f, s.rs[threadIdx.x] = 0.0f;
    }

    for (int il = 0; il < A.n_layer; il++) {
        const cuk_mega_layer &L = A.layers[il];
        const size_t loff = (size_t)il * A.layer_halfs;

        /* ---- P1: attn norm; q, k, v rows; RoPE; K and V rows into the cache ---- */
        if (!(A.flags & FLAG_NO_L2))
            prefetch_mat(L.o, E);
        if (!(A.flags & FLAG_NO_KV)) {   /* this layer's K/V rows of the sequence's blocks into L2 */
            const int per = 2 * CUK_KV_BLOCK * KV * 2;   /* bytes of K and V rows of a block */
            for (int b = blockIdx.x; b < nbl; b += gridDim.x) {
                const char *c = (const char *)(pool + (size_t)__ldg(tab + b) * A.block_halfs + loff);
                for (int o = threadIdx.x * 128; o < per; o += blockDim.x * 128)
                    asm volatile("prefetch.global.L2 [%0];" ::"l"(c + o));
            }
        }
        if (il == 0) {   /* the embedding row, decoded by every block; block 0 writes x */
            const uint8_t *row = (const uint8_t *)A.embd.w + (size_t)tok * A.embd.rb;
            for (int it = threadIdx.x; it < ne; it += blockDim.x) {
                float w[32];
                dec_any(A.embd.type, row, it, w);
#pragma unroll
                for (int j = 0; j < 32; j++) {
                    float v = w[j] * A.embd_scale;
                    s.x[it * 32 + j] = v;
                    if (blockIdx.x == 0)
                        A.x[it * 32 + j] = v;
                }
            }
            __syncthreads();
        } else {
            stage_load(s, A.x, E);
        }
        stage_norm(s, E, L.attn_norm, A.eps);
        stage_q8(s, E);
        stamp(A.prof, 4 * k + 2);
        run_units(
            n1, G1, ne, s, [&](int u) { return qkv_rows(L, u); }, [&](int) { return make_float2(0.0f, 0.0f); },
            [&](int u, float a, float b, float2) {
                if (u < hq + hk) {
                    int v = u < hq ? u : u - hq, h = v / half, i = v % half, ia, ib;
                    rope_pair(rkind, D, i, &ia, &ib);
                    float c = s.rc[i], sn = s.rs[i];
                    float x0 = a * c - b * sn, x1 = a * sn + b * c;
                    if (u < hq) {
                        A.q[h * D + ia] = x0;
                        A.q[h * D + ib] = x1;
                    } else {
                        __half *kr = (__half *)kv_at(A, s, tab, nbl, p, 0, loff, KV) + (size_t)h * D;
                        kr[ia] = __float2half_rn(x0);
                        kr[ib] = __float2half_rn(x1);
                    }
                } else {
                    int r = u - hq - hk;
                    __half *vr = (__half *)kv_at(A, s, tab, nbl, p, 1, loff, KV);
                    vr[r] = __float2half_rn(a);
                }
            });
        if (!(A.flags & FLAG_NO_KV)) {   /* the K/V rows of this warp's attention chunk into L1 (all but p: older) */
            for (int wu = gw; wu < H * nch; wu += nw) {
                int kvh = (wu / nch) / group, a0 = (wu % nch) * cl, e0 = min(nk, a0 + cl);
                for (int j = a0 + lane; j < e0; j += WARP)
                    for (int o = 0; o < D * 2; o += 128) {
                        asm volatile("prefetch.global.L1 [%0];" ::"l"((const char *)(kv_at(A, s, tab, nbl, j, 0, loff,
                                                                                       KV) + (size_t)kvh * D) + o));
                        asm volatile("prefetch.global.L1 [%0];" ::"l"((const char *)(kv_at(A, s, tab, nbl, j, 1, loff,
                                                                                       KV) + (size_t)kvh * D) + o));
                    }
            }
        }
        grid_sync(A.bar, k, A.nslot, A.prof);

        /* ---- P2: attention, one warp per (head, key chunk), lanes over 32 keys at a time; the
         * last warp of a head to finish merges its chunks into att ---- */
        if (!(A.flags & FLAG_NO_L2)) {
            prefetch_mat(L.gate, F);
            prefetch_mat(L.up, F);
        }
        if (!(A.flags & FLAG_NO_L1W))
            prefetch_units(ho, Gq, [&](int u) { return mat_rows(L.o, u, u + ho < E ? u + ho : -1); });
        stage_load(s, A.q, Q);
        stamp(A.prof, 4 * k + 2);
        for (int wu = gw; wu < H * nch; wu += nw) {
            int h = wu / nch, c = wu % nch, kvh = h / group;
            int a0 = c * cl, e0 = min(nk, a0 + cl);
            const float *qh = s.x + h * D;
            /* V: D / 8 lanes per row (a uint4 of 8 halfs each), 32 / (D / 8) keys at once */
            const int lpr = D / 8, ng = WARP / lpr, grp = lane / lpr, dl = lane % lpr;
            float *sp = s.pw + wid * WARP;
            float m = -INFINITY, sum = 0.0f, acc[8];
#pragma unroll
            for (int i = 0; i < 8; i++)
                acc[i] = 0.0f;
            for (int j0 = a0; j0 < e0; j0 += 32) {
                int j = j0 + lane, nv = min(32, e0 - j0);
                float sc = -INFINITY;
                if (j < e0) {
                    const uint4 *kr = reinterpret_cast<const uint4 *>(kv_at(A, s, tab, nbl, j, 0, loff, KV) +
                                                                      (size_t)kvh * D);
                    float dot = 0.0f;
                    for (int d0 = 0; d0 < D; d0 += 32) {   /* 4 loads in flight */
                        uint4 kk[4];
#pragma unroll
                        for (int i = 0; i < 4; i++)
                            if (d0 + 8 * i < D)   /* position p was written in P1: from L2 */
                                kk[i] = j < p ? ld_ca(kr + d0 / 8 + i) : __ldcg(kr + d0 / 8 + i);
#pragma unroll
                        for (int i = 0; i < 4; i++) {
                            if (d0 + 8 * i < D) {
                                const __half2 *h2 = reinterpret_cast<const __half2 *>(&kk[i]);
#pragma unroll
                                for (int e = 0; e < 4; e++) {
                                    float2 f = __half22float2(h2[e]);
                                    int d = d0 + 8 * i + 2 * e;
                                    dot += qh[d] * f.x + qh[d + 1] * f.y;
                                }
                            }
                        }
                    }
                    sc = dot * A.attn_scale;
                }
                float mn = fmaxf(m, warp_max(sc));   /* finite: key j0 is valid */
                float f = expf(m - mn);
                float pw = j < e0 ? expf(sc - mn) : 0.0f;
                sum = sum * f + warp_sum(pw);
                m = mn;
                sp[lane] = pw;
                __syncwarp();
                float a8[8];
#pragma unroll
                for (int i = 0; i < 8; i++)
                    a8[i] = 0.0f;
                for (int t0 = grp; t0 < nv; t0 += 4 * ng) {   /* 4 keys' loads in flight */
                    uint4 vv[4];
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        int jj = t0 + i * ng, jk = j0 + jj;
                        if (jj < nv) {
                            const uint4 *vr = reinterpret_cast<const uint4 *>(kv_at(A, s, tab, nbl, jk, 1, loff, KV) +
                                                                              (size_t)kvh * D) + dl;
                            vv[i] = jk < p ? ld_ca(vr) : __ldcg(vr);
                        }
                    }
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        int jj = t0 + i * ng;
                        if (jj < nv) {
                            float wgt = sp[jj];
                            const __half2 *h2 = reinterpret_cast<const __half2 *>(&vv[i]);
#pragma unroll
                            for (int e = 0; e < 4; e++) {
                                float2 fv = __half22float2(h2[e]);
                                a8[2 * e] += wgt * fv.x;
                                a8[2 * e + 1] += wgt * fv.y;
                            }
                        }
                    }
                }
                __syncwarp();   /* sp is rewritten by the next pass */
                for (int o = lpr; o < WARP; o <<= 1)
#pragma unroll
                    for (int i = 0; i < 8; i++)
                        a8[i] += __shfl_xor_sync(0xffffffffu, a8[i], o);
#pragma unroll
                for (int i = 0; i < 8; i++)
                    acc[i] = acc[i] * f + a8[i];
            }
            float *pbase = A.partial + (size_t)h * CUK_MEGA_MAX_CHUNKS * (size_t)(D + 2);
            float *out = pbase + (size_t)c * (D + 2);
            if (lane == 0) {
                out[0] = m;
                out[1] = sum;
            }
            if (grp == 0)
#pragma unroll
                for (int i = 0; i < 8; i++)
                    out[2 + dl * 8 + i] = acc[i];
            /* the last chunk of head h to finish merges them all (threadfence reduction) */
            __threadfence();
            __syncwarp();
            unsigned last = 0;
            if (lane == 0)
                last = atomicAdd(A.hcnt + h, 1u) == (unsigned)nch - 1;
            last = __shfl_sync(0xffffffffu, last, 0);
            if (last) {   /* online merge, 16 chunks' loads in flight a batch; lanes over dims */
                __threadfence();
                for (int d0 = 0; d0 < D; d0 += 2 * WARP) {
                    const int da = d0 + lane, db = d0 + WARP + lane;
                    float M = -INFINITY, S = 0.0f, va = 0.0f, vb = 0.0f;
                    for (int c0 = 0; c0 < nch; c0 += 16) {
                        float mm[16], ss[16], xa[16], xb[16];
#pragma unroll
                        for (int i = 0; i < 16; i++) {
                            const float *pr = pbase + (size_t)(c0 + i) * (D + 2);
                            bool in = c0 + i < nch;
                            mm[i] = in ? __ldcg(pr) : -INFINITY;
                            ss[i] = in ? __ldcg(pr + 1) : 0.0f;
                            xa[i] = in && da < D ? __ldcg(pr + 2 + da) : 0.0f;
                            xb[i] = in && db < D ? __ldcg(pr + 2 + db) : 0.0f;
                        }
#pragma unroll
                        for (int i = 0; i < 16; i++) {
                            if (mm[i] == -INFINITY)
                                continue;
                            float Mn = fmaxf(M, mm[i]);
                            float f = expf(M - Mn), g = expf(mm[i] - Mn);
                            S = S * f + ss[i] * g;
                            va = va * f + xa[i] * g;
                            vb = vb * f + xb[i] * g;
                            M = Mn;
                        }
                    }
                    float inv = S > 0.0f ? 1.0f / S : 0.0f;
                    if (da < D)
                        A.att[h * D + da] = va * inv;
                    if (db < D)
                        A.att[h * D + db] = vb * inv;
                }
                if (lane == 0)
                    A.hcnt[h] = 0u;   /* every chunk of head h has counted: ready for the next layer */
            }
        }
        grid_sync(A.bar, k, A.nslot, A.prof);

        /* ---- P3: wo rows on the merged attention, residual ---- */
        if (!(A.flags & FLAG_NO_L2))
            prefetch_mat(L.down, E);
        stage_load(s, A.att, Q);
        stage_q8(s, Q);
        stamp(A.prof, 4 * k + 2);
        run_units(
            ho, Gq, nq, s, [&](int u) { return mat_rows(L.o, u, u + ho < E ? u + ho : -1); },
            [&](int u) { return x_pair(u, ho); },
            [&](int u, float a, float b, float2 c) {
                A.x[u] = c.x + a;
                if (u + ho < E)
                    A.x[u + ho] = c.y + b;
            });
        if (!(A.flags & FLAG_NO_L1W)) {
            prefetch_units(F, G4, [&](int u) { return gu_rows(L, u); });
            prefetch_block_l1(L.ffn_norm, (size_t)E * 4);
        }
        grid_sync(A.bar, k, A.nslot, A.prof);

        /* ---- P4: ffn norm; gate and up rows; SiLU(gate) * up ---- */
        if (A.flags & FLAG_NO_L2) {
        } else if (il + 1 < A.n_layer) {
            const cuk_mega_layer &N = A.layers[il + 1];
            prefetch_mat(N.q, Q);
            prefetch_mat(N.k, KV);
            prefetch_mat(N.v, KV);
        } else if (A.logits) {
            prefetch_mat(A.out, A.n_vocab);
        }
        stage_load(s, A.x, E);
        stage_norm(s, E, L.ffn_norm, A.eps);
        stage_q8(s, E);
        stamp(A.prof, 4 * k + 2);
        run_units(
            F, G4, ne, s, [&](int u) { return gu_rows(L, u); }, [&](int) { return make_float2(0.0f, 0.0f); },
            [&](int u, float a, float b, float2) { A.h[u] = a / (1.0f + expf(-a)) * b; });
        if (!(A.flags & FLAG_NO_L1W))
            prefetch_units(hd, Gf, [&](int u) { return mat_rows(L.down, u, u + hd < E ? u + hd : -1); });
        grid_sync(A.bar, k, A.nslot, A.prof);

        /* ---- P5: down rows, residual ---- */
        if (il + 1 < A.n_layer && !(A.flags & FLAG_NO_L2))
            prefetch_mat(A.layers[il + 1].o, E);
        stage_load(s, A.h, F);
        stage_q8(s, F);
        stamp(A.prof, 4 * k + 2);
        run_units(
            hd, Gf, nf, s, [&](int u) { return mat_rows(L.down, u, u + hd < E ? u + hd : -1); },
            [&](int u) { return x_pair(u, hd); },
            [&](int u, float a, float b, float2 c) {
                A.x[u] = c.x + a;
                if (u + hd < E)
                    A.x[u + hd] = c.y + b;
            });
        if (A.flags & FLAG_NO_L1W) {
        } else if (il + 1 < A.n_layer) {
            prefetch_units(n1, G1, [&](int u) { return qkv_rows(A.layers[il + 1], u); });
            prefetch_block_l1(A.layers[il + 1].attn_norm, (size_t)E * 4);
        } else if (A.logits) {
            prefetch_units(hv, Ge, [&](int u) { return mat_rows(A.out, u, u + hv < A.n_vocab ? u + hv : -1); });
            prefetch_block_l1(A.out_norm, (size_t)E * 4);
        }
        grid_sync(A.bar, k, A.nslot, A.prof);
    }

    /* ---- output norm and logits ---- */
    if (A.logits) {
        stage_load(s, A.x, E);
        stage_norm(s, E, A.out_norm, A.eps);
        stage_q8(s, E);
        stamp(A.prof, 4 * k + 2);
        run_units(
            hv, Ge, ne, s, [&](int u) { return mat_rows(A.out, u, u + hv < A.n_vocab ? u + hv : -1); },
            [&](int) { return make_float2(0.0f, 0.0f); },
            [&](int u, float a, float b, float2) {
                A.logits[u] = a;
                if (u + hv < A.n_vocab)
                    A.logits[u + hv] = b;
            });
    } else {
        stamp(A.prof, 4 * k + 2);
    }
    if (A.prof && blockIdx.x == 0) {
        __syncthreads();
        stamp(A.prof, 4 * k + 4);
    }
    grid_exit(A.bar, A.nslot);
}

/* ---- the barrier alone (its cost: cuk_mega_time_barrier) ---- */

__global__ void __launch_bounds__(CUK_MEGA_THREADS, 1) k_mega_bar(unsigned *bar, int n, int nslot)
{
    unsigned k = 0;
    for (int i = 0; i < n; i++)
        grid_sync(bar, k, nslot, NULL);
    grid_exit(bar, nslot);
}

/* ---- launchers ---- */

extern "C" int cuk_mega_type_ok(uint32_t type, int64_t n_in)
{
    if (n_in <= 0 || n_in % 32)
        return 0;
    switch (type) {
    case AARMD_TYPE_Q4_0: case AARMD_TYPE_Q4_1: case AARMD_TYPE_Q5_0: case AARMD_TYPE_Q5_1: case AARMD_TYPE_Q8_0:
    case AARMD_TYPE_F32: case AARMD_TYPE_F16: case AARMD_TYPE_BF16:
        return 1;
    case AARMD_TYPE_Q4_K: case AARMD_TYPE_Q5_K: case AARMD_TYPE_Q6_K:
        return n_in % 256 == 0;
    default:
        return 0;
    }
}

extern "C" size_t cuk_mega_smem(int max_in, int n_head)
{
    (void)n_head;
    return (size_t)max_in * 4 + NWARPS * WARP * 4 + CUK_MAX_HEAD_DIM * 4 + TAB_SMEM * 4 + (size_t)max_in +
           (size_t)max_in / 32 * 4 + NWARPS * 4;
}

extern "C" int cuk_mega_occupancy(int max_in, int n_head)
{
    size_t smem = cuk_mega_smem(max_in, n_head);
    /* as much L1 as possible: each block's rows of the next phase are prefetched into it */
    cudaFuncSetAttribute(k_mega, cudaFuncAttributePreferredSharedMemoryCarveout, (int)cudaSharedmemCarveoutMaxL1);
    cudaGetLastError();
    if (cudaFuncSetAttribute(k_mega, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k_mega, CUK_MEGA_THREADS, smem) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" int cuk_mega_launch(cudaStream_t s, const struct cuk_mega_args *a, int blocks)
{
    struct cuk_mega_args arg = *a;
    void *params[] = {&arg};
    cudaError_t e = cudaLaunchCooperativeKernel((const void *)k_mega, dim3((unsigned)blocks), dim3(CUK_MEGA_THREADS),
                                                params, cuk_mega_smem(a->max_in, a->n_head), s);
    return (int)e;
}

extern "C" double cuk_mega_time_barrier(cudaStream_t s, unsigned *bar, int blocks, int n, int nslot)
{
    cudaEvent_t e0 = NULL, e1 = NULL, e2 = NULL;
    double us = -1.0;
    float t0 = 0.0f, t1 = 0.0f;
    int zero = 0;
    void *p0[] = {&bar, &zero, &nslot}, *p1[] = {&bar, &n, &nslot};
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess || cudaEventCreate(&e2) != cudaSuccess)
        goto done;
    for (int rep = 0; rep < 2; rep++) {   /* the first round warms up */
        cudaEventRecord(e0, s);
        if (cudaLaunchCooperativeKernel((const void *)k_mega_bar, dim3((unsigned)blocks), dim3(CUK_MEGA_THREADS), p0, 0,
                                        s) != cudaSuccess)
            goto done;
        cudaEventRecord(e1, s);
        if (cudaLaunchCooperativeKernel((const void *)k_mega_bar, dim3((unsigned)blocks), dim3(CUK_MEGA_THREADS), p1, 0,
                                        s) != cudaSuccess)
            goto done;
        cudaEventRecord(e2, s);
        if (cudaEventSynchronize(e2) != cudaSuccess)
            goto done;
    }
    cudaEventElapsedTime(&t0, e0, e1);
    cudaEventElapsedTime(&t1, e1, e2);
    us = n > 0 ? ((double)t1 - (double)t0) * 1000.0 / n : 0.0;
done:
    cudaGetLastError();
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (e2) cudaEventDestroy(e2);
    return us;
}
