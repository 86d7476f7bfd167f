/*
 * matvec.cu — the v6 decode weight kernels of the CUDA backend: a streaming
 * matvec (1..8 tokens; cp.async ring per warp; Q4_K, Q8_0, F32, F16, BF16)
 * and the small-batch GEMMs for 9..64 tokens of every Q8-path type (int8 or
 * F16 mma.sync, each weight byte read once per call). Which runs when:
 * cuk_mm_set_variant (defaults from runs M1-M4 of docs/cuda-notes.md; the v8 GEMM of
 * Q4_0/Q4_1/Q8_0/Q4_K is in mmq.cu; one token goes to the v9 kernels of matvec1.cu where they
 * take it). Prefill GEMMs, embedding and dequantization stay in matmul.cu.
 */
#include <cuda_fp16.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/cuda/launch.h"
#include "pdl.cuh"
#include "cp_async.cuh"
#include "mma.cuh"
#include "dequant.cuh"
#include "../../core/abi/aarmd_backend.h"

/* pdl=3: this file's kernels also release the next launch at entry (pdl.cuh's flag is one per .cu) */
extern "C" void cuk_matvec_set_pdl_early(int early)
{
    pdl_set_early(early);
}

#define WARP 32

/*
 * Weights are never written by any kernel after the upload, so the kernels
 * here start copying them before pdl_enter() (griddepcontrol.wait): the
 * copies overlap the previous kernel's tail. Activations, outputs and
 * everything else are touched only after pdl_enter(), as pdl.cuh requires.
 */

__device__ __forceinline__ float h2f_lo(uint32_t w)
{
    return __half2float(__ushort_as_half((unsigned short)(w & 0xFFFFu)));
}

__device__ __forceinline__ float h2f_hi(uint32_t w)
{
    return __half2float(__ushort_as_half((unsigned short)(w >> 16)));
}

/* ---- streaming matvec: per-type tiles ------------------------------------------ */
/*
 * A row is a sequence of blocks (BLK bytes, BEL elements); a tile is BPT
 * blocks (CH 16-byte chunks), the unit copied into one ring slot. Rows must
 * be 16-byte aligned with a whole number of chunks (mvs_ok checks).
 * dot() adds the tile's products with each token's activations to acc.
 */
template <uint32_t T> struct mvs;

template <> struct mvs<AARMD_TYPE_Q4_K> {
    enum { BLK = 144, BEL = 256, BPT = 4, CH = 36, SS = 6, Q8 = 1 };
    /* lane: super-block l/8, 16-byte quant chunk l%8 = 16 weights of sub-blocks 2g and 2g+1 */
    template <int NT>
    static __device__ __forceinline__ void dot(const uint4 *tile, int nb, int e0, int lane, const float *, const int8_t *xq,
                                               const float *xd, int n_in, int n_items, int nt, float *acc)
    {
        int b = lane >> 3, c = lane & 7;
        if (b >= nb)
            return;
        uint4 hdr = tile[b * 9], q = tile[b * 9 + 1 + c];
        int g = c >> 1, h = c & 1, sh = 16 * (g & 1);
        uint32_t sc0, sc1, mn0, mn1;
        if (g < 2) {
            uint32_t s = hdr.y >> sh, m = hdr.z >> sh;
            sc0 = s & 63; sc1 = (s >> 8) & 63;
            mn0 = m & 63; mn1 = (m >> 8) & 63;
        } else {
            uint32_t a = hdr.w >> sh, s = hdr.y >> sh, m = hdr.z >> sh;
            sc0 = (a & 0xF) | ((s >> 2) & 0x30);
            sc1 = ((a >> 8) & 0xF) | ((s >> 10) & 0x30);
            mn0 = ((a >> 4) & 0xF) | ((m >> 2) & 0x30);
            mn1 = ((a >> 12) & 0xF) | ((m >> 10) & 0x30);
        }
        float d = h2f_lo(hdr.x), dm = h2f_hi(hdr.x);
        float dl = d * (float)sc0, ml = dm * (float)mn0, dh = d * (float)sc1, mh = dm * (float)mn1;
        int e = e0 + b * 256 + g * 64 + h * 16;
        uint32_t u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < nt) {
                const int8_t *xr = xq + (size_t)t * n_in + e;
                int4 xl = __ldg(reinterpret_cast<const int4 *>(xr)), xh = __ldg(reinterpret_cast<const int4 *>(xr + 32));
                int xlv[4] = {xl.x, xl.y, xl.z, xl.w}, xhv[4] = {xh.x, xh.y, xh.z, xh.w};
                int sl = 0, shh = 0, cl = 0, ch = 0;
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    sl = __dp4a((int)(u[k] & 0x0F0F0F0Fu), xlv[k], sl);
                    shh = __dp4a((int)((u[k] >> 4) & 0x0F0F0F0Fu), xhv[k], shh);
                    cl = __dp4a(0x01010101, xlv[k], cl);
                    ch = __dp4a(0x01010101, xhv[k], ch);
                }
                const float *dxr = xd + (size_t)t * n_items + (e >> 5);
                float dxl = __ldg(dxr), dxh = __ldg(dxr + 1);
                acc[t] += dxl * (dl * (float)sl - ml * (float)cl) + dxh * (dh * (float)shh - mh * (float)ch);
            }
        }
    }
};

template <> struct mvs<AARMD_TYPE_Q8_0> {
    enum { BLK = 34, BEL = 32, BPT = 16, CH = 34, SS = 6, Q8 = 1 };
    /* lane: block l/2, quants 16*(l%2) .. +15 (2-byte aligned: funnel-shifted words) */
    template <int NT>
    static __device__ __forceinline__ void dot(const uint4 *tile, int nb, int e0, int lane, const float *, const int8_t *xq,
                                               const float *xd, int n_in, int n_items, int nt, float *acc)
    {
        int b = lane >> 1, h = lane & 1;
        if (b >= nb)
            return;
        const uint32_t *tw = reinterpret_cast<const uint32_t *>(tile);
        int off = b * 34 + 2 + 16 * h, w0 = off >> 2;
        uint32_t r[5];
#pragma unroll
        for (int k = 0; k < 5; k++)
            r[k] = tw[w0 + k];
        int q[4];
        if (off & 2) {
#pragma unroll
            for (int k = 0; k < 4; k++)
                q[k] = (int)__funnelshift_r(r[k], r[k + 1], 16);
        } else {
#pragma unroll
            for (int k = 0; k < 4; k++)
                q[k] = (int)r[k];
        }
        float d = __half2float(reinterpret_cast<const __half *>(tile)[b * 17]);
        int e = e0 + b * 32 + 16 * h;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < nt) {
                int4 xv = __ldg(reinterpret_cast<const int4 *>(xq + (size_t)t * n_in + e));
                int s = __dp4a(q[0], xv.x, 0);
                s = __dp4a(q[1], xv.y, s);
                s = __dp4a(q[2], xv.z, s);
                s = __dp4a(q[3], xv.w, s);
                acc[t] += d * __ldg(xd + (size_t)t * n_items + (e >> 5)) * (float)s;
            }
        }
    }
};

/* float weights: a tile is 64 chunks, lane takes chunks l and l+32 (chunk16<T> in dequant.cuh) */
template <uint32_t T> struct mvs_float {
    enum { BLK = 16, BEL = chunk16<T>::N, BPT = 64, CH = 64, SS = 4, Q8 = 0 };
    template <int NT>
    static __device__ __forceinline__ void dot(const uint4 *tile, int nb, int e0, int lane, const float *x, const int8_t *,
                                               const float *, int n_in, int, int nt, float *acc)
    {
        enum { N = chunk16<T>::N };
#pragma unroll
        for (int k = 0; k < 2; k++) {
            int c = lane + 32 * k;
            if (c < nb) {
                float w[N];
                chunk16<T>::run(tile[c], w);
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    if (t < nt) {
                        const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)t * n_in + e0 + c * N);
                        float s = 0.0f;
#pragma unroll
                        for (int i = 0; i < N / 4; i++) {
                            float4 a = __ldg(xp + i);
                            s += w[4 * i] * a.x + w[4 * i + 1] * a.y + w[4 * i + 2] * a.z + w[4 * i + 3] * a.w;
                        }
                        acc[t] += s;
                    }
                }
            }
        }
    }
};
template <> struct mvs<AARMD_TYPE_F32> : mvs_float<AARMD_TYPE_F32> {};
template <> struct mvs<AARMD_TYPE_F16> : mvs_float<AARMD_TYPE_F16> {};
template <> struct mvs<AARMD_TYPE_BF16> : mvs_float<AARMD_TYPE_BF16> {};

/* ---- streaming matvec: the kernel ---------------------------------------------- */
/*
 * Warp w of the grid takes rows w, w + nw, ... (nw warps in all) and streams
 * their tiles, in order, through its own ring of SS slots: the copy of tile
 * t + SS - 1 is issued before tile t is used, so SS - 1 tiles per warp are
 * always in flight without holding registers.
 */
#define MVS_WARPS 8

template <uint32_t T, int NT>
__global__ void __launch_bounds__(MVS_WARPS * WARP)
k_mvs(const uint8_t *__restrict__ W, size_t rb, int nblk, int n_out, const float *__restrict__ x,
      const int8_t *__restrict__ xq, const float *__restrict__ xd, int n_in, int n_tok, float *__restrict__ y)
{
    typedef mvs<T> M;
    enum { SLOT = M::CH + 1 };   /* + 16 bytes: the Q8_0 decoder reads one word past a tile */
    __shared__ uint4 ring_all[MVS_WARPS * M::SS * SLOT];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    uint4 *ring = ring_all + warp * M::SS * SLOT;
    const int gw = blockIdx.x * MVS_WARPS + warp, nw = gridDim.x * MVS_WARPS;
    const int tpr = (nblk + M::BPT - 1) / M::BPT;                   /* tiles per row */
    const int my_rows = gw < n_out ? (n_out - gw + nw - 1) / nw : 0;
    const int total = my_rows * tpr;
    const int n_items = n_in / 32;

    /* the copies are issued in stream order: tile ij of the warp's row ir into slot is */
    int ir = 0, ij = 0, is = 0;
    auto issue = [&]() {
        if (ir < my_rows) {
            int r = gw + ir * nw;
            int nb = min((int)M::BPT, nblk - ij * M::BPT);
            int nch = nb * M::BLK / 16;
            const uint4 *src = reinterpret_cast<const uint4 *>(W + (size_t)r * rb + (size_t)ij * M::BPT * M::BLK);
            uint4 *dst = ring + is * SLOT;
            for (int c = lane; c < nch; c += WARP)
                cp16(dst + c, src + c);
            if (++ij == tpr) {
                ij = 0;
                ir++;
            }
            if (++is == M::SS)
                is = 0;
        }
        cp_commit();
    };
#pragma unroll
    for (int t = 0; t < M::SS - 1; t++)
        issue();
    pdl_enter();

    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = 0.0f;
    const int nt = min(NT, n_tok);
    int cr = 0, cj = 0, cs = 0;   /* the tile being used: row cr, tile cj, slot cs */
    for (int t = 0; t < total; t++) {
        issue();
        cp_wait<M::SS - 1>();
        __syncwarp();
        int nb = min((int)M::BPT, nblk - cj * M::BPT);
        M::template dot<NT>(ring + cs * SLOT, nb, cj * M::BPT * M::BEL, lane, x, xq, xd, n_in, n_items, nt, acc);
        if (++cs == M::SS)
            cs = 0;
        if (++cj == tpr) {
            int r = gw + cr * nw;
#pragma unroll
            for (int k = 0; k < NT; k++) {
                float v = acc[k];
#pragma unroll
                for (int o = 16; o > 0; o >>= 1)
                    v += __shfl_xor_sync(0xffffffffu, v, o);
                if (lane == 0 && k < nt)
                    y[(size_t)k * n_out + r] = v;
                acc[k] = 0.0f;
            }
            cj = 0;
            cr++;
        }
        __syncwarp();
    }
    cp_wait<0>();
}

/* token counts (bit n: n tokens) the streaming matvec takes; run 2 (notes v6): it beats the v5
 * item matvec only at 2 tokens, for Q4_K and Q8_0 */
static int mvs_q8_toks = 1 << 2, mvs_f_toks = 0;
/* 1 k_mmq, 2 k_mmq2, 3 k_mmqh (F16 mma), 4-7 mixes (mmq_wm), 8-14 the v8 GEMM, 15-19 v9 (mmq_t, mmq.cu),
 * 20-24 the int8 GEMM (mmq_i8.cu; what it does not take as 15); -1: not chosen yet, the
 * environment's AARMD_CUDA_MMQ (a measurement knob) else the default 20: the int8 GEMM for Q8_0
 * matrices of >= 4M weights at 3..64 tokens and Q4_K ones at 3..8, v9 for the Q4_K matrices it
 * takes, v8 for the rest (docs/cuda-notes.md v9-mmq, v9-lead, v10-i8) */
static int mmq_version = -1;

static int mmq_ver(void)
{
    if (mmq_version < 0) {
        const char *e = getenv("AARMD_CUDA_MMQ");
        int v = e ? atoi(e) : 0;
        mmq_version = v >= 1 && v <= 29 ? v : 20;
    }
    return mmq_version;
}

extern "C" void cuk_mm_set_variant(int mmq, int mvs_q8_tok_mask, int mvs_f_tok_mask)
{
    mmq_version = mmq;
    mvs_q8_toks = mvs_q8_tok_mask;
    mvs_f_toks = mvs_f_tok_mask;
}

static int mvs_sms = 0;     /* multiprocessors of the current device (0: not read yet) */
static int mvs_bps = 0;     /* blocks per SM the grid is sized for; 0: rows / 8 blocks, no cap */

extern "C" void cuk_mv_set_grid(int blocks_per_sm)
{
    mvs_bps = blocks_per_sm;
}

template <uint32_t T, int NT>
static void mvs_launch(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const float *x, const void *xq,
                       const float *xd, int n_tok, float *y)
{
    typedef mvs<T> M;
    size_t rb = cuk_row_bytes(T, n_in);
    int nblk = (int)(rb / M::BLK);
    long blocks = (n_out + MVS_WARPS - 1) / MVS_WARPS;
    if (mvs_bps > 0) {
        if (!mvs_sms) {
            int dev = 0;
            cudaGetDevice(&dev);
            cudaDeviceGetAttribute(&mvs_sms, cudaDevAttrMultiProcessorCount, dev);
            if (mvs_sms <= 0)
                mvs_sms = 1;
        }
        long cap = (long)mvs_sms * mvs_bps;
        if (blocks > cap) {   /* rows per warp evened out over the capped grid */
            long rpw = (blocks + cap - 1) / cap;
            blocks = (blocks + rpw - 1) / rpw;
        }
    }
    pdl_launch(k_mvs<T, NT>, dim3((unsigned)blocks), dim3(MVS_WARPS * WARP), s, (const uint8_t *)w, rb, nblk, (int)n_out,
               x, (const int8_t *)xq, xd, (int)n_in, n_tok, y);
}

template <uint32_t T>
static void mvs_tok(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const float *x, const void *xq,
                    const float *xd, int n_tok, float *y)
{
    if (n_tok == 1)
        mvs_launch<T, 1>(s, w, n_in, n_out, x, xq, xd, n_tok, y);
    else if (n_tok == 2)
        mvs_launch<T, 2>(s, w, n_in, n_out, x, xq, xd, n_tok, y);
    else if (n_tok <= 4)
        mvs_launch<T, 4>(s, w, n_in, n_out, x, xq, xd, n_tok, y);
    else
        mvs_launch<T, 8>(s, w, n_in, n_out, x, xq, xd, n_tok, y);
}

/* 1 when the streaming matvec takes `type` with rows of n_in at w (alignment included) */
static int mvs_ok(uint32_t type, const void *w, int64_t n_in)
{
    size_t rb = cuk_row_bytes(type, n_in);
    if (!rb || rb % 16 || ((uintptr_t)w & 15) || n_in % 32)
        return 0;
    switch (type) {
    case AARMD_TYPE_Q4_K: case AARMD_TYPE_Q8_0: case AARMD_TYPE_F32: case AARMD_TYPE_F16: case AARMD_TYPE_BF16:
        return 1;
    default:
        return 0;
    }
}

extern "C" int cuk_mvs_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                          const float *xd, int n_tok, float *y)
{
    /* one token: the v9 kernel (k_mv1_q4k) unless the streaming matvec is asked for it */
    if (n_tok == 1 && !(mvs_q8_toks & 2) && cuk_mv1_q8(s, type, w, n_in, n_out, xq, xd, NULL, 0, y, CUK_MV1_DEFAULT))
        return 1;
    if (n_tok < 1 || n_tok > 8 || !(mvs_q8_toks >> n_tok & 1) || !mvs_ok(type, w, n_in))
        return 0;
    switch (type) {
    case AARMD_TYPE_Q4_K: mvs_tok<AARMD_TYPE_Q4_K>(s, w, n_in, n_out, NULL, xq, xd, n_tok, y); return 1;
    case AARMD_TYPE_Q8_0: mvs_tok<AARMD_TYPE_Q8_0>(s, w, n_in, n_out, NULL, xq, xd, n_tok, y); return 1;
    default: return 0;
    }
}

extern "C" int cuk_mvs_f(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const float *x,
                         int n_tok, float *y)
{
    /* one token: the v9 kernel (k_mvt) unless the streaming matvec is asked for it */
    if (n_tok == 1 && !(mvs_f_toks & 2) && cuk_mv1_f(s, type, w, n_in, n_out, x, NULL, 0, y, CUK_MV1_DEFAULT))
        return 1;
    if (n_tok < 1 || n_tok > 8 || !(mvs_f_toks >> n_tok & 1) || !mvs_ok(type, w, n_in))
        return 0;
    switch (type) {
    case AARMD_TYPE_F32: mvs_tok<AARMD_TYPE_F32>(s, w, n_in, n_out, x, NULL, NULL, n_tok, y); return 1;
    case AARMD_TYPE_F16: mvs_tok<AARMD_TYPE_F16>(s, w, n_in, n_out, x, NULL, NULL, n_tok, y); return 1;
    case AARMD_TYPE_BF16: mvs_tok<AARMD_TYPE_BF16>(s, w, n_in, n_out, x, NULL, NULL, n_tok, y); return 1;
    default: return 0;
    }
}

/* ---- small-batch quantized GEMM (9..64 tokens): int8 mma.sync ---------------- */
/*
 * A block of WM warps takes 16*WM weight rows and all tokens (NTT tiles of 8).
 * Per k-stage of MMQ_BK items (32 elements each) the block decodes its rows'
 * items with decq<T> into int8 + per-half affine coefficients in shared
 * memory (each weight byte read once per step, for every token), stages the
 * tokens' Q8 activations with their scales and sums, then each warp runs one
 * m16n8k32 mma per (item, token tile) (Q6_K, whose halves have different
 * scales: two m16n8k16) and folds the int32 result into F32 accumulators:
 *   y += a * dx * S + b * dx * X   (S = q.xq, X = sum xq, per half).
 */
#define MMQ_BK 4
#define MMQ_RS (MMQ_BK * 32 + 16)   /* bytes per shared row: 16 bytes pad = conflict-free fragments */

template <uint32_t T> struct mmq_halves { enum { V = 0 }; };
template <> struct mmq_halves<AARMD_TYPE_Q6_K> { enum { V = 1 }; };

__device__ __forceinline__ void mma_k32(int *c, int a0, int a1, int a2, int a3, int b0, int b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ void mma_k16(int *c, int a0, int a1, int b0)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(b0));
#endif
}

template <uint32_t T, int WM, int NTT>
__global__ void __launch_bounds__(WM * WARP)
k_mmq(const uint8_t *__restrict__ W, size_t rb, int n_items, int n_out, const int8_t *__restrict__ xq,
      const float *__restrict__ xd, int n_in, int n_tok, float *__restrict__ y)
{
    enum { BM = 16 * WM, NTOK = 8 * NTT, NTH = WM * WARP, H = mmq_halves<T>::V };
    __shared__ __align__(16) int8_t w8[BM * MMQ_RS];
    __shared__ __align__(16) int8_t x8[NTOK * MMQ_RS];
    __shared__ float2 wa[BM][MMQ_BK], wb[BM][MMQ_BK];   /* a0,a1 and b0,b1 of each item */
    __shared__ float xdx[NTOK][MMQ_BK];                  /* dx */
    __shared__ float2 xsx[NTOK][MMQ_BK];                 /* dx * sum of xq, per half */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int r0 = blockIdx.x * BM;
    float acc[NTT][4];
    frag_zero(acc);
    pdl_enter();
    const int nst = (n_items + MMQ_BK - 1) / MMQ_BK;
    for (int st = 0; st < nst; st++) {
        const int it0 = st * MMQ_BK;
        __syncthreads();   /* the previous stage's fragments are consumed */
        for (int i = tid; i < BM * MMQ_BK; i += NTH) {
            int rr = i / MMQ_BK, k = i % MMQ_BK, r = r0 + rr, it = it0 + k;
            q8item o;
            if (r < n_out && it < n_items) {
                decq<T>::run(W + (size_t)r * rb, it, o);
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++)
                    o.q[j] = 0;
                o.a0 = o.a1 = o.b0 = o.b1 = 0.0f;
            }
            uint4 *dst = reinterpret_cast<uint4 *>(w8 + rr * MMQ_RS + k * 32);
            dst[0] = make_uint4((unsigned)o.q[0], (unsigned)o.q[1], (unsigned)o.q[2], (unsigned)o.q[3]);
            dst[1] = make_uint4((unsigned)o.q[4], (unsigned)o.q[5], (unsigned)o.q[6], (unsigned)o.q[7]);
            wa[rr][k] = make_float2(o.a0, o.a1);
            wb[rr][k] = make_float2(o.b0, o.b1);
        }
        for (int i = tid; i < NTOK * MMQ_BK; i += NTH) {
            int tk = i / MMQ_BK, k = i % MMQ_BK, it = it0 + k;
            int4 v0 = make_int4(0, 0, 0, 0), v1 = v0;
            float dx = 0.0f;
            if (tk < n_tok && it < n_items) {
                const int4 *p = reinterpret_cast<const int4 *>(xq + (size_t)tk * n_in + (size_t)it * 32);
                v0 = __ldg(p);
                v1 = __ldg(p + 1);
                dx = __ldg(xd + (size_t)tk * n_items + it);
            }
            int4 *dst = reinterpret_cast<int4 *>(x8 + tk * MMQ_RS + k * 32);
            dst[0] = v0;
            dst[1] = v1;
            int s0 = __dp4a(0x01010101, v0.x, 0), s1 = __dp4a(0x01010101, v1.x, 0);
            s0 = __dp4a(0x01010101, v0.y, s0); s1 = __dp4a(0x01010101, v1.y, s1);
            s0 = __dp4a(0x01010101, v0.z, s0); s1 = __dp4a(0x01010101, v1.z, s1);
            s0 = __dp4a(0x01010101, v0.w, s0); s1 = __dp4a(0x01010101, v1.w, s1);
            xdx[tk][k] = dx;
            xsx[tk][k] = make_float2(dx * (float)s0, dx * (float)s1);
        }
        __syncthreads();
        const int wr = warp * 16;
        const int8_t *wp = w8 + (wr + g) * MMQ_RS + t4 * 4;
#pragma unroll
        for (int k = 0; k < MMQ_BK; k++) {
            int a0 = *reinterpret_cast<const int *>(wp + k * 32);
            int a1 = *reinterpret_cast<const int *>(wp + 8 * MMQ_RS + k * 32);
            int a2 = *reinterpret_cast<const int *>(wp + k * 32 + 16);
            int a3 = *reinterpret_cast<const int *>(wp + 8 * MMQ_RS + k * 32 + 16);
            float2 fa0 = wa[wr + g][k], fa1 = wa[wr + g + 8][k], fb0 = wb[wr + g][k], fb1 = wb[wr + g + 8][k];
#pragma unroll
            for (int n = 0; n < NTT; n++) {
                const int8_t *xp = x8 + (n * 8 + g) * MMQ_RS + k * 32 + t4 * 4;
                int b0 = *reinterpret_cast<const int *>(xp), b1 = *reinterpret_cast<const int *>(xp + 16);
                int tk = n * 8 + t4 * 2;
                float dx0 = xdx[tk][k], dx1 = xdx[tk + 1][k];
                float2 s0 = xsx[tk][k], s1 = xsx[tk + 1][k];
                if (!H) {
                    int c[4] = {0, 0, 0, 0};
                    mma_k32(c, a0, a1, a2, a3, b0, b1);
                    float x0 = s0.x + s0.y, x1 = s1.x + s1.y;
                    acc[n][0] += fa0.x * dx0 * (float)c[0] + fb0.x * x0;
                    acc[n][1] += fa0.x * dx1 * (float)c[1] + fb0.x * x1;
                    acc[n][2] += fa1.x * dx0 * (float)c[2] + fb1.x * x0;
                    acc[n][3] += fa1.x * dx1 * (float)c[3] + fb1.x * x1;
                } else {
                    int c[4] = {0, 0, 0, 0}, e[4] = {0, 0, 0, 0};
                    mma_k16(c, a0, a1, b0);
                    mma_k16(e, a2, a3, b1);
                    acc[n][0] += dx0 * (fa0.x * (float)c[0] + fa0.y * (float)e[0]) + fb0.x * s0.x + fb0.y * s0.y;
                    acc[n][1] += dx1 * (fa0.x * (float)c[1] + fa0.y * (float)e[1]) + fb0.x * s1.x + fb0.y * s1.y;
                    acc[n][2] += dx0 * (fa1.x * (float)c[2] + fa1.y * (float)e[2]) + fb1.x * s0.x + fb1.y * s0.y;
                    acc[n][3] += dx1 * (fa1.x * (float)c[3] + fa1.y * (float)e[3]) + fb1.x * s1.x + fb1.y * s1.y;
                }
            }
        }
    }
    const int ra = r0 + warp * 16 + g, rb8 = ra + 8;
#pragma unroll
    for (int n = 0; n < NTT; n++) {
        int tk = n * 8 + t4 * 2;
        if (tk < n_tok) {
            if (ra < n_out) y[(size_t)tk * n_out + ra] = acc[n][0];
            if (rb8 < n_out) y[(size_t)tk * n_out + rb8] = acc[n][2];
        }
        if (tk + 1 < n_tok) {
            if (ra < n_out) y[(size_t)(tk + 1) * n_out + ra] = acc[n][1];
            if (rb8 < n_out) y[(size_t)(tk + 1) * n_out + rb8] = acc[n][3];
        }
    }
}

/*
 * k_mmq2: the same product with the K range split over the KW warps of a
 * block (16 rows a block, each warp its own stages, no block barrier until
 * the final sum), so a matrix of n_out rows gives n_out / 16 * KW warps.
 * Per stage a warp decodes 16 rows x MMQ_BK items into its own shared slot
 * and the tokens' dx and dx * sum(xq) into a small table; B fragments are
 * read from global memory (L1).
 */
template <uint32_t T> struct mmq_meta { enum { W = 2 }; };            /* dx, dx*X */
template <> struct mmq_meta<AARMD_TYPE_Q6_K> { enum { W = 4 }; };     /* dx, dx*X0, dx*X1, - */

template <uint32_t T, int KW, int NTT>
__global__ void __launch_bounds__(KW * WARP)
k_mmq2(const uint8_t *__restrict__ W, size_t rb, int n_items, int n_out, const int8_t *__restrict__ xq,
       const float *__restrict__ xd, int n_in, int n_tok, float *__restrict__ y)
{
    enum { H = mmq_halves<T>::V, MW = mmq_meta<T>::W, NTOK = 8 * NTT };
    __shared__ __align__(16) int8_t w8[KW][16 * MMQ_RS];
    __shared__ float4 wc[KW][16][MMQ_BK];                      /* a0, a1, b0, b1 */
    __shared__ __align__(16) float meta[KW][MMQ_BK][NTOK * MW];
    __shared__ float red[NTT * 4][WARP];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int r0 = blockIdx.x * 16;
    float acc[NTT][4];
    frag_zero(acc);
    for (int i = threadIdx.x; i < NTT * 4 * WARP; i += KW * WARP)
        (&red[0][0])[i] = 0.0f;
    pdl_enter();
    const int nst = (n_items + MMQ_BK - 1) / MMQ_BK;
    int8_t *mw = w8[warp];
    for (int st = warp; st < nst; st += KW) {
        const int it0 = st * MMQ_BK;
        /* weights: lane -> item lane % 4 of rows lane / 4 and lane / 4 + 8 */
#pragma unroll
        for (int h2 = 0; h2 < 2; h2++) {
            int rr = g + 8 * h2, k = t4, r = r0 + rr, it = it0 + k;
            q8item o;
            if (r < n_out && it < n_items) {
                decq<T>::run(W + (size_t)r * rb, it, o);
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++)
                    o.q[j] = 0;
                o.a0 = o.a1 = o.b0 = o.b1 = 0.0f;
            }
            uint4 *dst = reinterpret_cast<uint4 *>(mw + rr * MMQ_RS + k * 32);
            dst[0] = make_uint4((unsigned)o.q[0], (unsigned)o.q[1], (unsigned)o.q[2], (unsigned)o.q[3]);
            dst[1] = make_uint4((unsigned)o.q[4], (unsigned)o.q[5], (unsigned)o.q[6], (unsigned)o.q[7]);
            wc[warp][rr][k] = make_float4(o.a0, o.a1, o.b0, o.b1);
        }
        /* activations: dx and dx * sums per (item, token) */
        for (int i = lane; i < MMQ_BK * NTOK; i += WARP) {
            int k = i / NTOK, tk = i % NTOK, it = it0 + k;
            float dx = 0.0f;
            int s0 = 0, s1 = 0;
            if (tk < n_tok && it < n_items) {
                const int4 *p = reinterpret_cast<const int4 *>(xq + (size_t)tk * n_in + (size_t)it * 32);
                int4 v0 = __ldg(p), v1 = __ldg(p + 1);
                dx = __ldg(xd + (size_t)tk * n_items + it);
                s0 = __dp4a(0x01010101, v0.x, __dp4a(0x01010101, v0.y, __dp4a(0x01010101, v0.z, __dp4a(0x01010101, v0.w, 0))));
                s1 = __dp4a(0x01010101, v1.x, __dp4a(0x01010101, v1.y, __dp4a(0x01010101, v1.z, __dp4a(0x01010101, v1.w, 0))));
            }
            float *mt = &meta[warp][k][tk * MW];
            if (MW == 2) {
                *reinterpret_cast<float2 *>(mt) = make_float2(dx, dx * (float)(s0 + s1));
            } else {
                *reinterpret_cast<float4 *>(mt) = make_float4(dx, dx * (float)s0, dx * (float)s1, 0.0f);
            }
        }
        __syncwarp();
#pragma unroll
        for (int k = 0; k < MMQ_BK; k++) {
            const int it = it0 + k;
            const int8_t *wp = mw + g * MMQ_RS + k * 32 + t4 * 4;
            int a0 = *reinterpret_cast<const int *>(wp);
            int a1 = *reinterpret_cast<const int *>(wp + 8 * MMQ_RS);
            int a2 = *reinterpret_cast<const int *>(wp + 16);
            int a3 = *reinterpret_cast<const int *>(wp + 8 * MMQ_RS + 16);
            float4 c0 = wc[warp][g][k], c1 = wc[warp][g + 8][k];
            const bool kin = it < n_items;
#pragma unroll
            for (int n = 0; n < NTT; n++) {
                const int tg = n * 8 + g;
                int b0 = 0, b1 = 0;
                if (kin && tg < n_tok) {
                    const int8_t *xp = xq + (size_t)tg * n_in + (size_t)it * 32 + t4 * 4;
                    b0 = __ldg(reinterpret_cast<const int *>(xp));
                    b1 = __ldg(reinterpret_cast<const int *>(xp + 16));
                }
                const float *mt = &meta[warp][k][(n * 8 + 2 * t4) * MW];
                if (!H) {
                    float4 mm = *reinterpret_cast<const float4 *>(mt);   /* dx0, X0, dx1, X1 of tokens 2t4, 2t4+1 */
                    int c[4] = {0, 0, 0, 0};
                    mma_k32(c, a0, a1, a2, a3, b0, b1);
                    acc[n][0] += c0.x * mm.x * (float)c[0] + c0.z * mm.y;
                    acc[n][1] += c0.x * mm.z * (float)c[1] + c0.z * mm.w;
                    acc[n][2] += c1.x * mm.x * (float)c[2] + c1.z * mm.y;
                    acc[n][3] += c1.x * mm.z * (float)c[3] + c1.z * mm.w;
                } else {
                    float4 m0 = *reinterpret_cast<const float4 *>(mt), m1 = *reinterpret_cast<const float4 *>(mt + 4);
                    int c[4] = {0, 0, 0, 0}, e[4] = {0, 0, 0, 0};
                    mma_k16(c, a0, a1, b0);
                    mma_k16(e, a2, a3, b1);
                    acc[n][0] += m0.x * (c0.x * (float)c[0] + c0.y * (float)e[0]) + c0.z * m0.y + c0.w * m0.z;
                    acc[n][1] += m1.x * (c0.x * (float)c[1] + c0.y * (float)e[1]) + c0.z * m1.y + c0.w * m1.z;
                    acc[n][2] += m0.x * (c1.x * (float)c[2] + c1.y * (float)e[2]) + c1.z * m0.y + c1.w * m0.z;
                    acc[n][3] += m1.x * (c1.x * (float)c[3] + c1.y * (float)e[3]) + c1.z * m1.y + c1.w * m1.z;
                }
            }
        }
        __syncwarp();   /* this warp's slot is rewritten by its next stage */
    }
    __syncthreads();    /* red is zeroed */
#pragma unroll
    for (int n = 0; n < NTT; n++)
#pragma unroll
        for (int j = 0; j < 4; j++)
            atomicAdd(&red[n * 4 + j][lane], acc[n][j]);
    __syncthreads();
    if (warp == 0) {
        const int ra = r0 + g, rb8 = ra + 8;
#pragma unroll
        for (int n = 0; n < NTT; n++) {
            int tk = n * 8 + t4 * 2;
            if (tk < n_tok) {
                if (ra < n_out) y[(size_t)tk * n_out + ra] = red[n * 4 + 0][lane];
                if (rb8 < n_out) y[(size_t)tk * n_out + rb8] = red[n * 4 + 2][lane];
            }
            if (tk + 1 < n_tok) {
                if (ra < n_out) y[(size_t)(tk + 1) * n_out + ra] = red[n * 4 + 1][lane];
                if (rb8 < n_out) y[(size_t)(tk + 1) * n_out + rb8] = red[n * 4 + 3][lane];
            }
        }
    }
}

/*
 * k_mmqh: the same split-K layout as k_mmq2, but each warp dequantizes its
 * 16 rows x BK items to F16 (dec<T>) and the tokens' Q8 activations to
 * F16 (xq * dx), then runs F16 m16n8k16 mma with F32 accumulation: no
 * per-item scale epilogue (by instruction count most of k_mmq2's issue slots).
 * Weights as F16 carry ~2^-11 relative rounding (the cuBLAS prefill path
 * rounds them the same way).
 */
/* BK items per stage; shared rows of BK * 32 + 8 halves (+8: conflict-free fragments) */

/* 4 signed bytes of w -> 2 half2 (exact integers), times d */
__device__ __forceinline__ void i8x4_to_h2(uint32_t w, __half2 d, __half2 *o)
{
    uint32_t u = w ^ 0x80808080u;                  /* b + 128, unsigned */
    uint32_t lo = __byte_perm(u, 0x64646464u, 0x5140), hi = __byte_perm(u, 0x64646464u, 0x7362);
    const __half2 off = __floats2half2_rn(1152.0f, 1152.0f);   /* 1024 + 128 */
    o[0] = __hmul2(__hsub2(*reinterpret_cast<__half2 *>(&lo), off), d);
    o[1] = __hmul2(__hsub2(*reinterpret_cast<__half2 *>(&hi), off), d);
}

template <uint32_t T, int KW, int NTT, int BK>
__global__ void __launch_bounds__(KW * WARP)
k_mmqh(const uint8_t *__restrict__ W, size_t rb, int n_items, int n_out, const int8_t *__restrict__ xq,
       const float *__restrict__ xd, int n_in, int n_tok, float *__restrict__ y)
{
    enum { NTOK = 8 * NTT, RS = BK * 32 + 8, NA = (NTOK * BK + WARP - 1) / WARP, PRE = BK > 2 && NTT <= 4 };
    __shared__ __align__(16) __half wh[KW][16 * RS];
    __shared__ __align__(16) __half xh[KW][NTOK * RS];
    float(*red)[WARP] = reinterpret_cast<float(*)[WARP]>(&xh[0][0]);   /* after the stages: the sums */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const int r0 = blockIdx.x * 16;
    float acc[NTT][4];
    frag_zero(acc);
    pdl_enter();
    const int nst = (n_items + BK - 1) / BK;
    __half *mw = wh[warp], *mx = xh[warp];
    for (int st = warp; st < nst; st += KW) {
        const int it0 = st * BK;
        /* with PRE, the activations' raw loads go first: their latency hides under the weights' */
        int4 av0[PRE ? NA : 1], av1[PRE ? NA : 1];
        float adx[PRE ? NA : 1];
        if (PRE) {
#pragma unroll
            for (int j = 0; j < NA; j++) {
                int i = lane + WARP * j, tk = i / BK, it = it0 + i % BK;
                av0[j] = av1[j] = make_int4(0, 0, 0, 0);
                adx[j] = 0.0f;
                if (i < NTOK * BK && tk < n_tok && it < n_items) {
                    const int4 *p = reinterpret_cast<const int4 *>(xq + (size_t)tk * n_in + (size_t)it * 32);
                    av0[j] = __ldg(p);
                    av1[j] = __ldg(p + 1);
                    adx[j] = __ldg(xd + (size_t)tk * n_items + it);
                }
            }
        }
        /* weights: 16 rows x BK items over the lanes */
#pragma unroll
        for (int i = lane; i < 16 * BK; i += WARP) {
            int rr = i / BK, k = i % BK, r = r0 + rr, it = it0 + k;
            float w[32];
            if (r < n_out && it < n_items) {
                dec<T>::run(W + (size_t)r * rb, it, w);
            } else {
#pragma unroll
                for (int j = 0; j < 32; j++)
                    w[j] = 0.0f;
            }
            uint4 *dst = reinterpret_cast<uint4 *>(mw + rr * RS + k * 32);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                __half2 h[4];
#pragma unroll
                for (int e = 0; e < 4; e++)
                    h[e] = __floats2half2_rn(w[8 * j + 2 * e], w[8 * j + 2 * e + 1]);
                dst[j] = *reinterpret_cast<uint4 *>(h);
            }
        }
        /* activations: (token, item) pairs -> F16 xq * dx */
#pragma unroll
        for (int j = 0; j < NA; j++) {
            int i = lane + WARP * j;
            if (i >= NTOK * BK)
                break;
            int tk = i / BK, k = i % BK, it = it0 + k;
            uint4 *dst = reinterpret_cast<uint4 *>(mx + tk * RS + k * 32);
            int4 v0 = make_int4(0, 0, 0, 0), v1 = v0;
            float dxf = 0.0f;
            if (PRE) {
                v0 = av0[j];
                v1 = av1[j];
                dxf = adx[j];
            } else if (tk < n_tok && it < n_items) {
                const int4 *p = reinterpret_cast<const int4 *>(xq + (size_t)tk * n_in + (size_t)it * 32);
                v0 = __ldg(p);
                v1 = __ldg(p + 1);
                dxf = __ldg(xd + (size_t)tk * n_items + it);
            }
            __half2 d2 = __floats2half2_rn(dxf, dxf);
            uint32_t wv[8] = {(uint32_t)v0.x, (uint32_t)v0.y, (uint32_t)v0.z, (uint32_t)v0.w,
                              (uint32_t)v1.x, (uint32_t)v1.y, (uint32_t)v1.z, (uint32_t)v1.w};
#pragma unroll
            for (int q = 0; q < 4; q++) {
                __half2 h[4];
                i8x4_to_h2(wv[2 * q], d2, h);
                i8x4_to_h2(wv[2 * q + 1], d2, h + 2);
                dst[q] = *reinterpret_cast<uint4 *>(h);
            }
        }
        __syncwarp();
#pragma unroll
        for (int kk = 0; kk < BK * 2; kk++) {   /* 16-element k steps */
            const __half *ap = mw + g * RS + kk * 16 + 2 * t4;
            uint32_t a0 = *reinterpret_cast<const uint32_t *>(ap);
            uint32_t a1 = *reinterpret_cast<const uint32_t *>(ap + 8 * RS);
            uint32_t a2 = *reinterpret_cast<const uint32_t *>(ap + 8);
            uint32_t a3 = *reinterpret_cast<const uint32_t *>(ap + 8 * RS + 8);
#pragma unroll
            for (int n = 0; n < NTT; n++) {
                const __half *bp = mx + (n * 8 + g) * RS + kk * 16 + 2 * t4;
                mma_f16(acc[n], a0, a1, a2, a3, *reinterpret_cast<const uint32_t *>(bp),
                        *reinterpret_cast<const uint32_t *>(bp + 8));
            }
        }
        __syncwarp();   /* this warp's slots are rewritten by its next stage */
    }
    __syncthreads();    /* every warp is done with its slots: red reuses them */
    for (int i = threadIdx.x; i < NTT * 4 * WARP; i += KW * WARP)
        (&red[0][0])[i] = 0.0f;
    __syncthreads();
#pragma unroll
    for (int n = 0; n < NTT; n++)
#pragma unroll
        for (int j = 0; j < 4; j++)
            atomicAdd(&red[n * 4 + j][lane], acc[n][j]);
    __syncthreads();
    if (warp == 0) {
        const int ra = r0 + g, rb8 = ra + 8;
#pragma unroll
        for (int n = 0; n < NTT; n++) {
            int tk = n * 8 + t4 * 2;
            if (tk < n_tok) {
                if (ra < n_out) y[(size_t)tk * n_out + ra] = red[n * 4 + 0][lane];
                if (rb8 < n_out) y[(size_t)tk * n_out + rb8] = red[n * 4 + 2][lane];
            }
            if (tk + 1 < n_tok) {
                if (ra < n_out) y[(size_t)(tk + 1) * n_out + ra] = red[n * 4 + 1][lane];
                if (rb8 < n_out) y[(size_t)(tk + 1) * n_out + rb8] = red[n * 4 + 3][lane];
            }
        }
    }
}

template <uint32_t T, int NTT>
static void mmq_wm(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const void *xq, const float *xd,
                   int n_tok, float *y)
{
    size_t rb = cuk_row_bytes(T, n_in);
    int items = (int)(n_in / CUK_ITEM);
    /* 5 (default): k_mmq for many rows at <= 32 tokens, else k_mmqh; 6: the same with k_mmqh of
     * 4 items a stage (activation loads first); 7: k_mmqh of 4 items alone (run 4, notes v6) */
    int ver = mmq_ver() >= 8 ? 5 : mmq_ver();
    if ((ver == 5 || ver == 6) && n_out > 8192 && n_tok <= 32)
        goto v1;
    if (ver == 6 || ver == 7) {   /* warps per block: what fits 48 KB of shared memory */
        unsigned blocks = (unsigned)((n_out + 15) / 16);
        constexpr int KW = NTT <= 2 ? 4 : NTT <= 4 ? 3 : 2;
        pdl_launch(k_mmqh<T, KW, NTT, 4>, dim3(blocks), dim3(KW * WARP), s, (const uint8_t *)w, rb, items,
                   (int)n_out, (const int8_t *)xq, xd, (int)n_in, n_tok, y);
        return;
    }
    if (ver == 3 || ver == 5) {   /* F16 mma; 4 warps (8 for <= 16 tokens where rows are few) */
        unsigned blocks = (unsigned)((n_out + 15) / 16);
        if constexpr (NTT <= 2) {
            if (n_out <= 8192) {
                pdl_launch(k_mmqh<T, 8, NTT, 2>, dim3(blocks), dim3(8 * WARP), s, (const uint8_t *)w, rb, items,
                           (int)n_out, (const int8_t *)xq, xd, (int)n_in, n_tok, y);
                return;
            }
        }
        pdl_launch(k_mmqh<T, 4, NTT, 2>, dim3(blocks), dim3(4 * WARP), s, (const uint8_t *)w, rb, items, (int)n_out,
                   (const int8_t *)xq, xd, (int)n_in, n_tok, y);
        return;
    }
    if (ver == 4 && n_out > 8192)   /* k_mmq for many rows, k_mmq2 for few */
        goto v1;
    if (ver == 2 || ver == 4) {
        /* 16 rows a block; 8 warps splitting K where rows are few (and shared memory allows) */
        unsigned blocks = (unsigned)((n_out + 15) / 16);
        if constexpr (!mmq_halves<T>::V) {
            if (n_out <= 8192) {
                pdl_launch(k_mmq2<T, 8, NTT>, dim3(blocks), dim3(8 * WARP), s, (const uint8_t *)w, rb, items,
                           (int)n_out, (const int8_t *)xq, xd, (int)n_in, n_tok, y);
                return;
            }
        }
        pdl_launch(k_mmq2<T, 4, NTT>, dim3(blocks), dim3(4 * WARP), s, (const uint8_t *)w, rb, items, (int)n_out,
                   (const int8_t *)xq, xd, (int)n_in, n_tok, y);
        return;
    }
v1:
    /* 64 rows a block when that still gives ~2 blocks per SM of an H100, else 32 */
    if (n_out >= 64 * 264) {
        pdl_launch(k_mmq<T, 4, NTT>, dim3((unsigned)((n_out + 63) / 64)), dim3(4 * WARP), s, (const uint8_t *)w, rb,
                   items, (int)n_out, (const int8_t *)xq, xd, (int)n_in, n_tok, y);
    } else {
        pdl_launch(k_mmq<T, 2, NTT>, dim3((unsigned)((n_out + 31) / 32)), dim3(2 * WARP), s, (const uint8_t *)w, rb,
                   items, (int)n_out, (const int8_t *)xq, xd, (int)n_in, n_tok, y);
    }
}

/* the v8 GEMM (mmq.cu): 1 when it enqueued the product; cfg bits: see mmqv_cfg */
extern "C" int cuk_mmqv_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                           const float *xd, int n_tok, float *y, int cfg);

/* the v8 GEMM's configuration of each variant (-1: not a v8 variant); bits 1-4 cluster size cap
 * (0: 8), bits 5-8 L2 prefetch window (units of 256), bits 9-10 weight ring of 4 - v slots,
 * bits 11-12 K split until v (0: 2) blocks per SM (runs G1-G7 of docs/cuda-notes.md) */
static int mmqv_cfg(int ver)
{
    switch (ver) {
    case 8: return 2 << 9;                 /* default: 2 slots, K split to 2 blocks per SM */
    case 9: return 2 << 9 | 1 << 1;        /* no K split */
    case 10: return 1 << 9;                /* 3 slots */
    case 11: return 0;                     /* 4 slots */
    case 12: return 2 << 9 | 1 << 11;      /* K split to 1 block per SM */
    case 13: return 2 << 9 | 3 << 11;      /* K split to 3 blocks per SM */
    case 14: return 4 << 5;                /* 4 slots, L2 prefetch of 4 units (run G2: a loss) */
    default: return -1;
    }
}

/* the v9 GEMM (mmq.cu): 1 when it enqueued the product; cfg bits: see mmq9_cfg */
extern "C" int cuk_mmq9_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                           const float *xd, int n_tok, float *y, int cfg);

/* v9 variants (-1: not one): bits 0-1 ring stages - 2, bits 6-7 K split until v blocks per SM
 * (0: 2), bit 8 128-row blocks (else 64), bit 9 a bulk copy per row instead of one tensor copy
 * per unit (docs/cuda-notes.md v9-mmq) */
static int mmq9_cfg(int ver)
{
    switch (ver) {
    case 15: return 3 << 6;          /* the v9 GEMM: 2 stages, 64-row blocks, K split to 3 blocks per SM */
    case 16: return 0;               /* K split to 2 blocks per SM */
    case 17: return 1 | 3 << 6;      /* 3 stages */
    case 18: return 1 << 8 | 3 << 6; /* 128-row blocks */
    case 19: return 1 << 9 | 3 << 6; /* a bulk copy per row (run 1's kernel) */
    default: return -1;
    }
}

/* the int8 GEMM (mmq_i8.cu): 1 when it enqueued the product; cfg bits: see mmqi8_cfg */
extern "C" int cuk_mmqi8_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out,
                            const void *xq, const float *xd, int n_tok, float *y, int cfg);

/* int8 GEMM variants (-1: not one): bits 0-1 ring stages - 2, bits 6-7 K split until v blocks per
 * SM (0: per type), bit 8 the EARLY producer (mmq_i8.cu: runs only with AARMD_CUDA_I8_EARLY=1)
 * (docs/cuda-notes.md v10-i8); 20 takes matrices of >= 4M weights and Q4_K steps of <=
 * mmqi8_q4k_max tokens (TAB past 8 tokens: mmqi8_cfg_for), 21-24 every size and token count,
 * 26-29 (TAB) every token count of matrices of >= 4M weights */
static int mmqi8_cfg(int ver)
{
    switch (ver) {
    case 20: return 0;               /* 2 stages, K split to 2 blocks per SM (Q8_0 <= 32 tokens) or 3 */
    case 21: return 0;               /* the same for every matrix size and token count */
    case 22: return 1;               /* 3 stages */
    case 23: return 3 << 6;          /* K split to 3 blocks per SM for every type */
    case 24: return 1 << 8;          /* 21 with the EARLY producer (slower: v10-i8) */
    case 26: return 1 << 9;          /* TAB: the scale tables precomputed (v12-lead), Q4_K at 3..64 tokens too */
    case 27: return 1 << 9 | 1;      /* 26 with 3 stages */
    case 28: return 1 << 9 | 2 << 6; /* 26 with K split to 2 blocks per SM */
    case 29: return 1 << 9 | 1 << 6; /* 26 with K split to 1 block per SM */
    default: return -1;
    }
}

/* version 20: Q4_K steps of more tokens go to v9 (v10-i8 runs: the int8 GEMM wins at 4 and 8
 * tokens; v12-lead: with its tables precomputed (TAB) it also wins at 9..16, loses at 32, 64) */
static const int mmqi8_q4k_max = 16;

/* 1 when version `ver` sends this product to the int8 GEMM first */
static int mmqi8_takes(int ver, uint32_t type, int64_t n_in, int64_t n_out, int n_tok)
{
    if (mmqi8_cfg(ver) < 0)
        return 0;
    if (ver >= 26)
        return n_in * n_out >= (1 << 22);
    return ver != 20 || (n_in * n_out >= (1 << 22) && (type != AARMD_TYPE_Q4_K || n_tok <= mmqi8_q4k_max));
}

/*
 * Version 20's int8 configuration for a product it takes: the scale tables precomputed once per
 * launch (TAB, cfg bit 9) where that measured faster on the H100 (v12-lead: Q4_K at 9..16 tokens,
 * Q8_0 at 33..64; below 9 tokens the extra table launch costs more than it saves);
 * AARMD_CUDA_I8_TAB=0 keeps the producer's tables everywhere (A/B).
 */
static int mmqi8_tab = -1;

static int mmqi8_cfg_for(int ver, uint32_t type, int n_tok)
{
    int c = mmqi8_cfg(ver);
    if (ver != 20 || c < 0)
        return c;
    if (mmqi8_tab < 0) {
        const char *e = getenv("AARMD_CUDA_I8_TAB");
        mmqi8_tab = !(e && !strcmp(e, "0"));
    }
    const int tab = type == AARMD_TYPE_Q4_K ? n_tok > 8 : n_tok > 32;
    return mmqi8_tab && tab ? c | 1 << 9 : c;
}

template <uint32_t T>
static void mmq_t(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const void *xq, const float *xd,
                  int n_tok, float *y)
{
    /* 20-23: the int8 GEMM (Q8_0, Q4_K; 20 for >= 4M weights); what it refuses goes as version 15 */
    const int ci = mmqi8_cfg(mmq_ver());
    if (mmqi8_takes(mmq_ver(), T, n_in, n_out, n_tok) &&
        cuk_mmqi8_q8(s, T, w, n_in, n_out, xq, xd, n_tok, y, mmqi8_cfg_for(mmq_ver(), T, n_tok)))
        return;
    const int v = ci >= 0 ? 15 : mmq_ver();
    /* 15 takes what it was measured on (Q4_K, >= 4M weights; v8 for the rest); 16-19 everything */
    const int c9 = mmq9_cfg(v);
    if (c9 >= 0 && (v != 15 || (T == AARMD_TYPE_Q4_K && n_in * n_out >= (1 << 22))) &&
        cuk_mmq9_q8(s, T, w, n_in, n_out, xq, xd, n_tok, y, c9))
        return;
    /* 8-14: the v8 GEMM (mmqv_cfg); types or rows it does not take run version 5, and the
     * default (8) leaves matrices of < 4M weights (SmolLM2's: latency-bound, runs G1, G4) to it */
    const int ver = c9 >= 0 ? 8 : v, cfg = mmqv_cfg(ver);   /* v9 refused: v8 */
    if (cfg >= 0 && (ver != 8 || n_in * n_out >= (1 << 22)) && cuk_mmqv_q8(s, T, w, n_in, n_out, xq, xd, n_tok, y, cfg))
        return;
    if (n_tok <= 16)
        mmq_wm<T, 2>(s, w, n_in, n_out, xq, xd, n_tok, y);
    else if (n_tok <= 32)
        mmq_wm<T, 4>(s, w, n_in, n_out, xq, xd, n_tok, y);
    else
        mmq_wm<T, 8>(s, w, n_in, n_out, xq, xd, n_tok, y);
}

static int mmqv_from = -1;   /* the fewest tokens cuk_mmqv_small takes */

extern "C" int cuk_mmqv_small(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out,
                              const void *xq, const float *xd, int n_tok, float *y)
{
    if (mmqv_from < 0) {
        const char *e = getenv("AARMD_CUDA_MMQ_FROM");
        int v = e ? atoi(e) : 0;
        mmqv_from = v >= 2 && v <= 9 ? v : 3;
    }
    /* 20-23: the int8 GEMM where it takes the matrix (20: >= 4M weights), else v8 as for 15 */
    const int ci = mmqi8_cfg(mmq_ver());
    if (n_tok >= mmqv_from && n_tok <= 8 && mmqi8_takes(mmq_ver(), type, n_in, n_out, n_tok) &&
        cuk_mmqi8_q8(s, type, w, n_in, n_out, xq, xd, n_tok, y, ci))
        return 1;
    if ((mmq_ver() != 8 && mmq9_cfg(mmq_ver()) < 0 && ci < 0) || n_tok < mmqv_from || n_tok > 8 || n_in % 32 ||
        n_in * n_out < (1 << 22) || !cuk_row_bytes(type, n_in))
        return 0;
    return cuk_mmqv_q8(s, type, w, n_in, n_out, xq, xd, n_tok, y, mmqv_cfg(8));
}

extern "C" int cuk_mmq_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                          const float *xd, int n_tok, float *y)
{
    if (n_tok < 1 || n_tok > 64 || n_in % 32 || !cuk_row_bytes(type, n_in))
        return 0;
    switch (type) {
    case AARMD_TYPE_Q4_0: mmq_t<AARMD_TYPE_Q4_0>(s, w, n_in, n_out, xq, xd, n_tok, y); return 1;
    case AARMD_TYPE_Q4_1: mmq_t<AARMD_TYPE_Q4_1>(s, w, n_in, n_out, xq, xd, n_tok, y); return 1;
    case AARMD_TYPE_Q5_0: mmq_t<AARMD_TYPE_Q5_0>(s, w, n_in, n_out, xq, xd, n_tok, y); return 1;
    case AARMD_TYPE_Q5_1: mmq_t<AARMD_TYPE_Q5_1>(s, w, n_in, n_out, xq, xd, n_tok, y); return 1;
    case AARMD_TYPE_Q8_0: mmq_t<AARMD_TYPE_Q8_0>(s, w, n_in, n_out, xq, xd, n_tok, y); return 1;
    case AARMD_TYPE_Q4_K: mmq_t<AARMD_TYPE_Q4_K>(s, w, n_in, n_out, xq, xd, n_tok, y); return 1;
    case AARMD_TYPE_Q5_K: mmq_t<AARMD_TYPE_Q5_K>(s, w, n_in, n_out, xq, xd, n_tok, y); return 1;
    case AARMD_TYPE_Q6_K: mmq_t<AARMD_TYPE_Q6_K>(s, w, n_in, n_out, xq, xd, n_tok, y); return 1;
    default: return 0;
    }
}
