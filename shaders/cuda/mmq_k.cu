/*
 * mmq_k.cu — the Q4_K GEMM of the CUDA backend for steps of tens to hundreds of tokens (a served
 * step's decode tokens plus prefill chunks): int8 tensor-core products on the raw nibbles against
 * activations quantized per 256 (one scale per Q4_K super-block, cuk_quantize_q8_256), the 6-bit
 * sub-block scales applied as integers so that a super-block's dot stays one int32 and one F32
 * multiply per super-block and token applies d * dx. Correct (within 1e-5 of the Q8 route) and,
 * as of v17, slower than cuBLAS on the F16 copies at every token count measured, so the forward
 * sends it nothing unless AARMD_CUDA_K_FROM asks (docs/cuda-notes.md v17-lead: the weight stream
 * alone, no products, runs at 0.6-2 TB/s in this block structure). v4 (k_mmqk2, cfg bit 7 or
 * AARMD_CUDA_K_CFG=128) gives the weights a ring of their own: correct, and 2-6% slower than v3 on
 * an H200 (v19-lead: the consumers, not the weight feed, hold both).
 * Not the 1..64-token GEMMs (mmq.cu, mmq_i8.cu: per-32 activation scales, F32 per sub-block) nor
 * the dispatch (forward_cuda.c).
 */
#include <cuda.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/cuda/launch.h"
#include "mma.cuh"
#include "mmq_common.cuh"
#include "pdl.cuh"
#include "../../core/abi/aarmd_backend.h"

#define WARP 32
#define K_UK 256   /* elements per unit: one Q4_K super-block, one activation scale */
#define K_UB 144   /* bytes of a Q4_K super-block: d, dmin (F16), 12 bytes of 6-bit scales, 128 of nibbles
                    * (q4k_s8_frags, mmq_common.cuh, steps 8 rows by it too) */
#define K_BM 128   /* weight rows per block */
#define K_NC 8     /* consumer warps: 4 row groups of 32 rows x 2 token halves */

/*
 * Design (docs/cuda-notes.md v17-lead). Why: at 32..256 tokens the int8 GEMM of mmq_i8.cu spends
 * two FFMA and a 16-byte shared-memory load of scales per int32 result (per 32 elements and token),
 * and its 64-row x <= 64-token blocks read the step's activations from L2 once per 64 rows.
 * Here a work unit is 128 rows x NTOK tokens x a slice of K; one persistent block per SM walks
 * work units b, b + grid, ... with its ring running on across them, and stores each unit's sums
 * (to y, or with K slices to a part that k_k_sum adds in slice order: deterministic). One
 * producer warp moves each unit of K (256 elements) into a ring of ns stages: one 2D tensor copy
 * of the weights (128 rows x 144 bytes), two of the activations (128 bytes x NTOK tokens, 128-byte swizzle: conflict-free
 * ldmatrix; zeros past the last token) and the unit's token table (k_k_tab: dx per token, and the
 * minimum's halves); once a stage lands it decodes the 128 rows' scales into the stage's row table
 * (sc bytes, d, -32 dmin m as F16 high and low halves) and arrives on `ready`. Consumer warp w
 * (4 row groups x TG token groups) takes rows 32 (w % 4).. and NT token tiles of 8 at
 * 8 NT (w / 4)..: per pair of sub-blocks (2p: low nibbles, 2p + 1: high, the same 32 bytes) and
 * token tile one ldmatrix.x4 and, for each of its two 16-row tiles, two m16n8k32 from zero and
 *   S += sc[2p] * c0 + sc[2p + 1] * c1        (int32, exact: |S| <= 8 * 63 * 32 * 15 * 127)
 * and at the unit's end acc += (float)S * (d * dx), then the minimum
 *   acc += (-32 dmin m)[row][sub-block] x (dx sum(xq) / 32)[sub-block][token]
 * as three F16 m16n8k8 on high and low halves (mmq_i8.cu's: ~2^-22 relative).
 */

template <int TG, int NT> struct kk {
    enum {
        NC = 4 * TG,                      /* consumer warps */
        NTOK = 8 * NT * TG,               /* tokens of a block */
        ABOX = NTOK * 128,                /* one activation box: 128 bytes of K x NTOK tokens */
        WOFF = 2 * ABOX,                  /* the weight box */
        TOFF = WOFF + K_BM * K_UB,        /* the unit's token table */
        TABB = 36 * NTOK,                 /* its bytes: dx [NTOK] F32, then [NTOK][8] halves high, low */
        ROFF = TOFF + TABB,               /* the row table: sc [128][8] bytes, d [128], min halves [128][8] x 2 */
        STAGE = (ROFF + K_BM * 44 + 1023) / 1024 * 1024,
        NTH = (NC + 1) * WARP
    };
    static constexpr size_t smem(int ns) { return 1024 + (size_t)ns * STAGE + 3 * ns * 8; }
};

/* one warp per 256 elements: xq = round(x / d), d = max|x| / 127, written to the 8 per-32 scales
 * of the unit (the Q8 row format of cuk_quantize_q8 with one scale per 256) */
__global__ void k_quantize_q8_256(const float *__restrict__ x, int64_t n_units, int8_t *__restrict__ xq,
                                  float *__restrict__ xd)
{
    pdl_enter();
    const int64_t u = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (u >= n_units)
        return;
    const float4 *src = reinterpret_cast<const float4 *>(x + u * K_UK) + 2 * lane;
    const float4 v0 = src[0], v1 = src[1];
    float a = fmaxf(fmaxf(fmaxf(fabsf(v0.x), fabsf(v0.y)), fmaxf(fabsf(v0.z), fabsf(v0.w))),
                    fmaxf(fmaxf(fabsf(v1.x), fabsf(v1.y)), fmaxf(fabsf(v1.z), fabsf(v1.w))));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
    const float d = a / 127.0f;
    const float e[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
    uint32_t q[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int qi = d > 0.0f ? __float2int_rn(e[i] / d) : 0;
        q[i >> 2] |= (uint32_t)(qi & 0xFF) << (8 * (i & 3));
    }
    reinterpret_cast<uint2 *>(xq + u * K_UK)[lane] = make_uint2(q[0], q[1]);
    if (lane < 8)
        xd[u * 8 + lane] = d;
}

extern "C" void cuk_quantize_q8_256(cudaStream_t s, const float *x, int64_t n, void *xq, float *xd)
{
    const int64_t nu = n / K_UK;
    pdl_launch(k_quantize_q8_256, dim3((unsigned)((nu * 32 + 255) / 256)), dim3(256), s, x, nu, (int8_t *)xq, xd);
}

/* The token tables of a launch, one per (token tile, unit): dx of the unit per token, then the
 * Q4_K minimum's activation side dx * sum(xq of the sub-block) / 32 as F16 high and low halves
 * [token][sub-block]; zeros past n_tok. One thread per (token, sub-block). */
__global__ void k_k_tab(const int8_t *__restrict__ xq, const float *__restrict__ xd, int n_in, int n_tok, int ntok,
                        int ntt, uint8_t *__restrict__ tab)
{
    pdl_enter();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
    const int items = n_in / 32, nu = n_in / K_UK;
    const int v = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (v >= items * ntok * ntt)
        return;
    const int tok = v / items, item = v % items, tt = tok / ntok, tl = tok % ntok, u = item / 8, it = item % 8;
    uint8_t *t = tab + ((size_t)tt * nu + u) * 36 * ntok;
    float dx = 0.0f;
    int sum = 0;
    if (tok < n_tok) {
        dx = __ldg(xd + (size_t)tok * items + item);
        const int4 *src = reinterpret_cast<const int4 *>(xq + (size_t)tok * n_in + (size_t)item * 32);
        const int4 q0 = __ldg(src), q1 = __ldg(src + 1);
        const int w[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
        for (int i = 0; i < 8; i++)
            sum = __dp4a(w[i], 0x01010101, sum);
    }
    if (it == 0)
        reinterpret_cast<float *>(t)[tl] = dx;
    const float xs = dx * (float)sum * (1.0f / 32.0f);
    const __half hi = __float2half_rn(xs);
    reinterpret_cast<__half *>(t + 4 * ntok)[tl * 8 + it] = hi;
    reinterpret_cast<__half *>(t + 20 * ntok)[tl * 8 + it] = __float2half_rn(xs - __half2float(hi));
}

/* the producer's row table of a landed stage: lane = rows lane + 32 j; sc bytes, d, -32 dmin m as
 * F16 high and low halves (the minimum's weight side) */
__device__ __forceinline__ void k_row_table(uint8_t *st, int woff, int roff, int lane)
{
#pragma unroll
    for (int j = 0; j < K_BM / WARP; j++) {
        const int r = lane + WARP * j;
        const uint4 hd = *reinterpret_cast<const uint4 *>(st + woff + r * K_UB);
        const float2 dd = __half22float2(*reinterpret_cast<const __half2 *>(&hd.x));
        uint32_t sc[2], mn[2];
        q4k_half_scales(hd, 0, &sc[0], &mn[0]);
        q4k_half_scales(hd, 1, &sc[1], &mn[1]);
        uint32_t mh[4], ml[4];
#pragma unroll
        for (int k = 0; k < 8; k += 2) {
            const float m0 = -32.0f * dd.y * (float)((mn[k >> 2] >> (8 * (k & 3))) & 0xFF);
            const float m1 = -32.0f * dd.y * (float)((mn[k >> 2] >> (8 * (k & 3) + 8)) & 0xFF);
            const __half2 h = __floats2half2_rn(m0, m1);
            const float2 hf = __half22float2(h);
            mh[k >> 1] = h2u(h);
            ml[k >> 1] = h2u(__floats2half2_rn(m0 - hf.x, m1 - hf.y));
        }
        uint8_t *t = st + roff;
        reinterpret_cast<uint2 *>(t)[r] = make_uint2(sc[0], sc[1]);
        reinterpret_cast<float *>(t + 8 * K_BM)[r] = dd.x;
        reinterpret_cast<uint4 *>(t + 12 * K_BM)[r] = make_uint4(mh[0], mh[1], mh[2], mh[3]);
        reinterpret_cast<uint4 *>(t + 28 * K_BM)[r] = make_uint4(ml[0], ml[1], ml[2], ml[3]);
    }
}

/* The walk of a persistent block: work unit w = (row tile, token tile, K slice rank), its stages
 * the units [u0, u0 + nst) of K; block b takes w = b, b + grid, ... and its ring runs on across them. */
struct k_cur {
    int w, i, rank, tt, r0, t0, u0, nst;
};

struct k_walk {
    int nu, ntt, ntok, kun, ks, step;
    __device__ __forceinline__ k_cur at(int w) const
    {
        k_cur c;
        c.w = w;
        c.i = 0;
        c.rank = w % ks;
        const int rest = w / ks;
        c.tt = rest % ntt;
        c.r0 = rest / ntt * K_BM;
        c.t0 = c.tt * ntok;
        c.u0 = min(nu, c.rank * kun);
        c.nst = min(nu, c.u0 + kun) - c.u0;
        return c;
    }
    __device__ __forceinline__ void next(k_cur &c) const
    {
        if (++c.i >= c.nst)
            c = at(c.w + step);
    }
};

/*
 * One consumer warp's unit (256 of K): w the stage's 128 weight rows, rt their row table
 * (k_row_table), a the unit's first activation box (the second at + ABOX), tt its token table;
 * rows wr.. (32) x token tiles tn.. (NT) into acc.
 */
template <int TG, int NT>
__device__ __forceinline__ void k_unit(const uint8_t *w, const uint8_t *rt, const uint8_t *a, const uint8_t *tt,
                                       float (&acc)[2][NT][4], int wr, int tn, int lane)
{
    typedef kk<TG, NT> K;
    enum { NTOK = K::NTOK, ABOX = K::ABOX };
    const int g = lane >> 2, t4 = lane & 3;
    /* ldmatrix rows: lane = (matrix j, row i): token i of the tile, chunk (4 (p & 1) + j) ^ i */
    const int lj = lane >> 3, li = lane & 7;
    const uint8_t *wb = w + wr * K_UB;   /* the warp's 32 rows */
    const uint2 *tsc = reinterpret_cast<const uint2 *>(rt) + wr;
    uint32_t sw[2][2][2];   /* [row tile][row g, g + 8][sub-blocks 0-3, 4-7] */
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const uint2 v = tsc[mt * 16 + h * 8 + g];
            sw[mt][h][0] = v.x;
            sw[mt][h][1] = v.y;
        }
    int S[2][NT][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int n = 0; n < NT; n++)
            S[mt][n][0] = S[mt][n][1] = S[mt][n][2] = S[mt][n][3] = 0;
    const uint32_t abase = smem_u32(a) + li * 128 + tn * 1024;
#pragma unroll
    for (int p = 0; p < 4; p++) {
        uint32_t af[2][2][4];
        int sc[2][2][2];   /* [row tile][sub-block 2p, 2p + 1][row g, g + 8] */
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            q4k_s8_frags(wb + (mt * 16 + g) * K_UB, p, t4, af[mt]);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const uint32_t v = sw[mt][h][p >> 1] >> (16 * (p & 1));
                sc[mt][0][h] = (int)(v & 0xFF);
                sc[mt][1][h] = (int)((v >> 8) & 0xFF);
            }
        }
        const uint32_t ap = abase + (p >> 1) * ABOX + ((((p & 1) * 4 + lj) ^ li) << 4);
#pragma unroll
        for (int n = 0; n < NT; n++) {
            uint32_t b[4];
            ldsm4(b, ap + n * 1024);
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                int c0[4], c1[4];
                mma_s8(c0, af[mt][0], b[0], b[1], 0);
                mma_s8(c1, af[mt][1], b[2], b[3], 0);
                S[mt][n][0] += sc[mt][0][0] * c0[0] + sc[mt][1][0] * c1[0];
                S[mt][n][1] += sc[mt][0][0] * c0[1] + sc[mt][1][0] * c1[1];
                S[mt][n][2] += sc[mt][0][1] * c0[2] + sc[mt][1][1] * c1[2];
                S[mt][n][3] += sc[mt][0][1] * c0[3] + sc[mt][1][1] * c1[3];
            }
        }
    }
    /* the unit's scales: acc += S * d * dx, then the minimum through F16 products */
    const float *tdx = reinterpret_cast<const float *>(tt);
    const uint32_t *xh = reinterpret_cast<const uint32_t *>(tt + 4 * NTOK);
    const uint32_t *xl = reinterpret_cast<const uint32_t *>(tt + 20 * NTOK);
    const float *tdd = reinterpret_cast<const float *>(rt + 8 * K_BM) + wr;
    const uint32_t *mh32 = reinterpret_cast<const uint32_t *>(rt + 12 * K_BM) + 4 * wr;
    const uint32_t *ml32 = reinterpret_cast<const uint32_t *>(rt + 28 * K_BM) + 4 * wr;
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
        const float d0 = tdd[mt * 16 + g], d1 = tdd[mt * 16 + g + 8];
        const uint32_t ah0 = mh32[(mt * 16 + g) * 4 + t4], ah1 = mh32[(mt * 16 + g + 8) * 4 + t4];
        const uint32_t al0 = ml32[(mt * 16 + g) * 4 + t4], al1 = ml32[(mt * 16 + g + 8) * 4 + t4];
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const float2 dx = *reinterpret_cast<const float2 *>(tdx + (tn + n) * 8 + 2 * t4);
            acc[mt][n][0] = fmaf((float)S[mt][n][0], d0 * dx.x, acc[mt][n][0]);
            acc[mt][n][1] = fmaf((float)S[mt][n][1], d0 * dx.y, acc[mt][n][1]);
            acc[mt][n][2] = fmaf((float)S[mt][n][2], d1 * dx.x, acc[mt][n][2]);
            acc[mt][n][3] = fmaf((float)S[mt][n][3], d1 * dx.y, acc[mt][n][3]);
            const int tok = (tn + n) * 8 + g;
            const uint32_t bh = xh[tok * 4 + t4], bl = xl[tok * 4 + t4];
            mma_h8(acc[mt][n], ah0, ah1, bh);
            mma_h8(acc[mt][n], al0, al1, bh);
            mma_h8(acc[mt][n], ah0, ah1, bl);
        }
    }
}

/* A work unit's sums from the consumer warp's registers to y, or with K slices to its slice's
 * part (k_k_sum adds them); acc zeroed for the next work unit. */
template <int NT>
__device__ __forceinline__ void k_store(float (&acc)[2][NT][4], const k_cur &c, int ks, int n_out, int n_tok,
                                        float *y, float *part, int wr, int tn, int lane)
{
    const int g = lane >> 2, t4 = lane & 3;
    float *dst = ks > 1 ? part + (size_t)c.rank * n_tok * n_out : y;
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const int r = c.r0 + wr + mt * 16 + g, t = c.t0 + (tn + n) * 8 + 2 * t4;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int rr = r + (e >> 1) * 8, tk = t + (e & 1);
                if (rr < n_out && tk < n_tok)
                    dst[(size_t)tk * n_out + rr] = acc[mt][n][e];
                acc[mt][n][e] = 0.0f;
            }
        }
}

/* v3: one ring of ns stages, each the unit's weights, activations, token table and row table,
 * filled by one producer warp (the weights of the first ns stages before the wait). */
template <int TG, int NT>
__global__ void __launch_bounds__((4 * TG + 1) * WARP, 1)
k_mmqk(int nu, int n_out, int n_tok, int ntt, float *__restrict__ y, float *__restrict__ part, int kun, int ks,
       int nwork, int ns, const __grid_constant__ CUtensorMap tmw, const __grid_constant__ CUtensorMap tmx,
       const uint8_t *__restrict__ gtab)
{
    typedef kk<TG, NT> K;
    enum { NC = K::NC, NTOK = K::NTOK, ABOX = K::ABOX, WOFF = K::WOFF, TOFF = K::TOFF, TABB = K::TABB,
           ROFF = K::ROFF, STAGE = K::STAGE };
    static_assert(ABOX % 1024 == 0 && STAGE % 1024 == 0, "swizzled activation boxes: 1024-byte aligned");
    static_assert(TOFF % 16 == 0 && TABB % 16 == 0 && ROFF % 16 == 0, "tables: whole 16-byte chunks");
    extern __shared__ __align__(16) uint8_t smraw[];
    uint8_t *sm = smraw + ((1024u - (smem_u32(smraw) & 1023u)) & 1023u);
    uint64_t *full = reinterpret_cast<uint64_t *>(sm + ns * STAGE);
    uint64_t *ready = full + ns;
    uint64_t *empty = ready + ns;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const k_walk kw = {nu, ntt, NTOK, kun, ks, (int)gridDim.x};

    mb_ring_init<true>(full, empty, ready, ns, NC);

    float acc[2][NT][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
        frag_zero(acc[mt]);
    const int wr = (warp & 3) * 32, tn = (warp >> 2) * NT;   /* the warp's first row, first token tile */

    if (warp == NC) {
        /* producer: the weights of the first stages may go before the wait (never written) */
        const uint32_t bytes = (uint32_t)(K_BM * K_UB + 2 * ABOX + TABB);
        auto acts = [&](int gi, const k_cur &c) {
            if (lane == 0) {
                uint8_t *st = sm + (gi % ns) * STAGE;
                const int u = c.u0 + c.i;
                tma_2d(st, &tmx, u * K_UK, c.t0, &full[gi % ns]);
                tma_2d(st + ABOX, &tmx, u * K_UK + 128, c.t0, &full[gi % ns]);
                bulk_g2s(st + TOFF, gtab + ((size_t)c.tt * nu + u) * TABB, TABB, &full[gi % ns]);
            }
        };
        auto wcopy = [&](int gi, const k_cur &c) {   /* the weights of stage gi into its slot: one tensor copy */
            if (lane == 0) {
                mb_arrive_tx(&full[gi % ns], bytes);
                tma_2d(sm + (gi % ns) * STAGE + WOFF, &tmw, (c.u0 + c.i) * (K_UB / 2), c.r0, &full[gi % ns]);
            }
        };
        k_cur ic = kw.at((int)blockIdx.x);   /* the next stage to issue */
        int pre = 0;
        for (; pre < ns && ic.w < nwork; pre++, kw.next(ic))
            wcopy(pre, ic);
        pdl_enter();
        {
            k_cur c = kw.at((int)blockIdx.x);
            for (int gi = 0; gi < pre; gi++, kw.next(c))
                acts(gi, c);
        }
        int gi = 0;
        for (k_cur dc = kw.at((int)blockIdx.x); dc.w < nwork; kw.next(dc), gi++) {
            /* stage gi landed: its row table, then (stage gi - 1 consumed) that slot takes the next stage */
            mb_wait(&full[gi % ns], (gi / ns) & 1);
            k_row_table(sm + (gi % ns) * STAGE, WOFF, ROFF, lane);
            mb_arrive(&ready[gi % ns]);
            const int j = gi - 1;
            if (j >= 0 && ic.w < nwork) {
                mb_wait(&empty[j % ns], (j / ns) & 1);
                wcopy(j + ns, ic);
                acts(j + ns, ic);
                kw.next(ic);
            }
        }
    } else {
        pdl_enter();
        int i = 0;   /* the stage */
        for (k_cur cc = kw.at((int)blockIdx.x); cc.w < nwork; kw.next(cc), i++) {
            uint8_t *st = sm + (i % ns) * STAGE;
            mb_wait(&full[i % ns], (i / ns) & 1);
            mb_wait(&ready[i % ns], (i / ns) & 1);
            k_unit<TG, NT>(st + WOFF, st + ROFF, st, st + TOFF, acc, wr, tn, lane);
            __syncwarp();
            if (lane == 0)
                mb_arrive(&empty[i % ns]);
            if (cc.i == cc.nst - 1)   /* the work unit's last stage */
                k_store<NT>(acc, cc, ks, n_out, n_tok, y, part, wr, tn, lane);
        }
    }
}

/*
 * v4 (docs/cuda-notes.md v18-lead, "Open"; written in session 13, not yet run on a GPU). v3's
 * weight stream alone ran at 1.3 TB/s: one producer refilled a slot only after the next stage had
 * landed and its row table was decoded. Here the weights have a ring of their own (ws slots of
 * 128 rows + their row table), filled by warp NC by tensor copies that never wait on the previous
 * kernel (weights are never written) and refilled as soon as the consumers release a slot
 * (wempty); the activations have another (as slots: two boxes + the token table), filled by warp
 * NC + 1 after griddepcontrol.wait, which also decodes each weight slot's row table once it lands
 * (wready, all 32 lanes). The consumers (k_unit, k_store) and the walk are v3's.
 */
enum { K_WROWS = K_BM * K_UB, K_WSLOT = K_WROWS + K_BM * 44 };   /* v4's weight slot, then its row table: 24,064 B */

template <int TG, int NT> struct kk4 {
    enum {
        ASLOT = (2 * kk<TG, NT>::ABOX + kk<TG, NT>::TABB + 1023) / 1024 * 1024,   /* boxes, then the token table */
        NTH = (4 * TG + 2) * WARP
    };
    static constexpr size_t smem(int ws, int as)
    {
        return 1024 + (size_t)as * ASLOT + (size_t)ws * K_WSLOT + (size_t)(3 * ws + 2 * as) * 8;
    }
};

template <int TG, int NT>
__global__ void __launch_bounds__((4 * TG + 2) * WARP, 1)
k_mmqk2(int nu, int n_out, int n_tok, int ntt, float *__restrict__ y, float *__restrict__ part, int kun, int ks,
        int nwork, int ws, int as, const __grid_constant__ CUtensorMap tmw, const __grid_constant__ CUtensorMap tmx,
        const uint8_t *__restrict__ gtab)
{
    typedef kk<TG, NT> K;
    enum { NC = K::NC, NTOK = K::NTOK, ABOX = K::ABOX, TABB = K::TABB, ASLOT = kk4<TG, NT>::ASLOT,
           WROWS = K_WROWS, WSLOT = K_WSLOT };
    static_assert(ABOX % 1024 == 0 && ASLOT % 1024 == 0, "swizzled activation boxes: 1024-byte aligned");
    static_assert(WSLOT % 128 == 0 && WROWS % 16 == 0 && TABB % 16 == 0, "tensor-copy and table alignment");
    extern __shared__ __align__(16) uint8_t smraw[];
    uint8_t *sa = smraw + ((1024u - (smem_u32(smraw) & 1023u)) & 1023u);   /* activation slots */
    uint8_t *sw = sa + (size_t)as * ASLOT;                                  /* weight slots */
    uint64_t *wfull = reinterpret_cast<uint64_t *>(sw + (size_t)ws * WSLOT);
    uint64_t *wready = wfull + ws, *wempty = wready + ws;
    uint64_t *afull = wempty + ws, *aempty = afull + as;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const k_walk kw = {nu, ntt, NTOK, kun, ks, (int)gridDim.x};

    mb_ring_init<true>(wfull, wempty, wready, ws, NC);
    mb_ring_init<false>(afull, aempty, NULL, as, NC);

    if (warp == NC) {   /* the weights, ahead of everything, as far as the ring allows */
        if (lane == 0) {
            int gi = 0;
            for (k_cur c = kw.at((int)blockIdx.x); c.w < nwork; kw.next(c), gi++) {
                const int s = gi % ws;
                if (gi >= ws)   /* stage gi - ws released the slot */
                    mb_wait(&wempty[s], ((gi - ws) / ws) & 1);
                mb_arrive_tx(&wfull[s], (uint32_t)WROWS);
                tma_2d(sw + (size_t)s * WSLOT, &tmw, (c.u0 + c.i) * (K_UB / 2), c.r0, &wfull[s]);
            }
        }
        return;
    }
    if (warp == NC + 1) {   /* the activations after the wait; each landed weight slot's row table */
        pdl_enter();
        auto acts = [&](int gi, const k_cur &c) {
            if (lane == 0) {
                const int s = gi % as;
                uint8_t *st = sa + (size_t)s * ASLOT;
                const int u = c.u0 + c.i;
                mb_arrive_tx(&afull[s], (uint32_t)(2 * ABOX + TABB));
                tma_2d(st, &tmx, u * K_UK, c.t0, &afull[s]);
                tma_2d(st + ABOX, &tmx, u * K_UK + 128, c.t0, &afull[s]);
                bulk_g2s(st + 2 * ABOX, gtab + ((size_t)c.tt * nu + u) * TABB, TABB, &afull[s]);
            }
        };
        k_cur ic = kw.at((int)blockIdx.x);   /* the next activation stage to issue: ia */
        int ia = 0;
        for (; ia < as && ic.w < nwork; ia++, kw.next(ic))
            acts(ia, ic);
        int gi = 0;
        for (k_cur dc = kw.at((int)blockIdx.x); dc.w < nwork; kw.next(dc), gi++) {
            const int s = gi % ws;
            mb_wait(&wfull[s], (gi / ws) & 1);
            k_row_table(sw + (size_t)s * WSLOT, 0, WROWS, lane);
            mb_arrive(&wready[s]);
            if (gi >= 1 && ic.w < nwork) {   /* stage gi - 1 consumed: its slot takes stage ia = gi - 1 + as */
                const int j = gi - 1;
                mb_wait(&aempty[j % as], (j / as) & 1);
                acts(ia, ic);
                ia++;
                kw.next(ic);
            }
        }
        return;
    }
    pdl_enter();
    float acc[2][NT][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
        frag_zero(acc[mt]);
    const int wr = (warp & 3) * 32, tn = (warp >> 2) * NT;   /* the warp's first row, first token tile */
    int i = 0;   /* the stage */
    for (k_cur cc = kw.at((int)blockIdx.x); cc.w < nwork; kw.next(cc), i++) {
        const int s = i % ws, a = i % as;
        mb_wait(&afull[a], (i / as) & 1);
        mb_wait(&wfull[s], (i / ws) & 1);
        mb_wait(&wready[s], (i / ws) & 1);
        const uint8_t *wslot = sw + (size_t)s * WSLOT, *aslot = sa + (size_t)a * ASLOT;
        k_unit<TG, NT>(wslot, wslot + WROWS, aslot, aslot + 2 * ABOX, acc, wr, tn, lane);
        __syncwarp();
        if (lane == 0) {
            mb_arrive(&wempty[s]);
            mb_arrive(&aempty[a]);
        }
        if (cc.i == cc.nst - 1)   /* the work unit's last stage */
            k_store<NT>(acc, cc, ks, n_out, n_tok, y, part, wr, tn, lane);
    }
}

/* y[i] = part[0][i] + part[1][i] + ... (ks K slices, in order: deterministic) */
__global__ void k_k_sum(const float *__restrict__ part, int ks, int64_t n, float *__restrict__ y)
{
    pdl_enter();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    float s = part[i];
    for (int r = 1; r < ks; r++)
        s += part[(size_t)r * n + i];
    y[i] = s;
}

/* ---- launch ------------------------------------------------------------------------------ */

/* One launch of v3 (v4 = 0: ns stages) or v4 (ns activation slots, ws weight slots, 0: as many as
 * fit, at most 8) after the launch's token tables (k_k_tab), and with K slices their sum (k_k_sum). */
template <int TG, int NT>
static int k_launch(cudaStream_t s, const void *w, size_t rb, int64_t n_in, int64_t n_out, const void *xq,
                    const float *xd, int n_tok, float *y, int ns, int ks_max, int v4, int ws)
{
    typedef kk<TG, NT> K;
    typedef kk4<TG, NT> K4;
    static int attr3 = 0, attr4 = 0;   /* per instantiation: the shared memory limit raised to (bytes), -1 refused */
    size_t smem;
    if (!v4) {
        smem = K::smem(ns);
        if (mmq_smem_limit(k_mmqk<TG, NT>, K::smem(4), &attr3) < 0 || smem > (size_t)attr3)
            return 0;
    } else {
        if (mmq_smem_limit(k_mmqk2<TG, NT>, K4::smem(8, 4), &attr4) < 0)
            return 0;
        if (!ws)
            for (ws = 8; ws > 2 && K4::smem(ws, ns) > (size_t)attr4; ws--)
                ;
        smem = K4::smem(ws, ns);
        if (smem > (size_t)attr4)
            return 0;
    }
    CUtensorMap tmw, tmx;
    if (!mmq_i8_maps(&tmw, &tmx, w, rb, n_out, K_UB, K_BM, xq, n_in, n_tok, K::NTOK))
        return 0;
    const int nu = (int)(n_in / K_UK), ntt = (n_tok + K::NTOK - 1) / K::NTOK;
    const int items = (int)((n_out + K_BM - 1) / K_BM) * ntt, G = v8_sms;
    /* the K split: work units of ceil(nu / ks) units, the most any block takes as few as can be */
    int ks = 1, kun = nu;
    long best = -1;
    for (int k = 1; k <= ks_max && k <= nu; k++) {
        const int ku = (nu + k - 1) / k, kn = (nu + ku - 1) / ku;
        const long cost = (long)((items * kn + G - 1) / G) * ku;
        if (best < 0 || cost < best) {
            best = cost;
            ks = kn;
            kun = ku;
        }
    }
    const int nwork = items * ks, grid = nwork < G ? nwork : G;
    const size_t tab_bytes = ((size_t)ntt * nu * K::TABB + 255) / 256 * 256;
    const size_t part_n = ks > 1 ? (size_t)ks * n_tok * n_out : 0;
    uint8_t *scr = (uint8_t *)mmq_scratch(s, tab_bytes + part_n * 4);
    if (!scr)
        return 0;
    uint8_t *gtab = scr;
    float *part = ks > 1 ? (float *)(scr + tab_bytes) : NULL;
    const int nt = (int)(n_in / 32) * K::NTOK * ntt;
    if (pdl_launch_smem(k_k_tab, dim3((unsigned)((nt + 255) / 256)), dim3(256), 0, s, (const int8_t *)xq, xd,
                        (int)n_in, n_tok, (int)K::NTOK, ntt, gtab) != cudaSuccess ||
        (v4 ? pdl_launch_smem(k_mmqk2<TG, NT>, dim3((unsigned)grid), dim3(K4::NTH), smem, s, nu, (int)n_out, n_tok,
                              ntt, y, part, kun, ks, nwork, ws, ns, tmw, tmx, (const uint8_t *)gtab)
            : pdl_launch_smem(k_mmqk<TG, NT>, dim3((unsigned)grid), dim3(K::NTH), smem, s, nu, (int)n_out, n_tok,
                              ntt, y, part, kun, ks, nwork, ns, tmw, tmx, (const uint8_t *)gtab)) != cudaSuccess ||
        (ks > 1 && pdl_launch_smem(k_k_sum, dim3((unsigned)((n_tok * n_out + 255) / 256)), dim3(256), 0, s,
                                   (const float *)part, ks, (int64_t)n_tok * n_out, y) != cudaSuccess)) {
        cudaGetLastError();
        return 0;
    }
    return 1;
}

/* block shapes (token groups TG x NT token tiles of 8 per warp: NTOK = 8 TG NT tokens); cfg bits
 * 8-11 pick one (1-based), else the one padding n_tok least (the first on a tie) */
static const struct { int tg, nt; } k_shapes[] = {{2, 5}, {4, 3}, {3, 4}, {4, 2}, {3, 3}, {4, 4}};
enum { K_SHAPES = sizeof k_shapes / sizeof k_shapes[0] };

static int k_shape_for(int n_tok)
{
    int best = 0, best_pad = 1 << 30;
    for (int i = 0; i < K_SHAPES - 1; i++) {   /* the last (128 tokens, spills) only when asked */
        const int tile = 8 * k_shapes[i].tg * k_shapes[i].nt, pad = (n_tok + tile - 1) / tile * tile;
        if (pad < best_pad) {
            best = i;
            best_pad = pad;
        }
    }
    return best;
}

/* the fewest tokens the forward sends to cuk_mmqk_q4k: AARMD_CUDA_K_FROM (1..512; above: never),
 * else never (v17-lead: slower than cuBLAS on the F16 copies and than the Q8 route at every token
 * count measured); cuk_mmqk_set overrides it (tests, benchmarks) */
#define K_FROM_DEFAULT (CUK_MMQK_MAX_TOK + 1)
static int k_min_tok = -1;

extern "C" void cuk_mmqk_set(int min_tok)
{
    k_min_tok = min_tok;
}

extern "C" int cuk_mmqk_min_tok(void)
{
    if (k_min_tok < 0)
        k_min_tok = mmq_env_from("AARMD_CUDA_K_FROM", K_FROM_DEFAULT);
    return k_min_tok;
}

/*
 * y[t][r] = W[r] . x[t] for Q4_K rows W and 1 <= n_tok <= CUK_MMQK_MAX_TOK tokens of activations
 * quantized by cuk_quantize_q8_256 (xq int8 [n_tok][n_in], xd the per-32 scales, equal within each
 * 256). cfg (0: AARMD_CUDA_K_CFG's, read once, else 0): bits 0-1 ring stages - 1 (0: 3; v4: the
 * activation slots), bits 2-5 K slices a row tile splits into at most (0: 8), bit 6 zero, bit 7
 * v4 (k_mmqk2: the weights in a ring of their own; correct, slower than v3: v19-lead), bits 8-11 the block shape
 * (k_shapes, 1-based; 0: the one padding n_tok least), bits 12-14 v4's weight slots (2..7; 0: as
 * many as fit, at most 8; only with bit 7), nothing above. Returns 1 when it enqueued the
 * product, 0 (nothing enqueued) for other types, rows not of whole super-blocks, unaligned
 * pointers, devices before sm_90, bad arguments or a launch the device refuses.
 */
extern "C" int cuk_mmqk_q4k(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                            const float *xd, int n_tok, float *y, int cfg)
{
    static int env_cfg = -1;
    if (env_cfg < 0) {
        const char *e = getenv("AARMD_CUDA_K_CFG");
        env_cfg = e && *e ? atoi(e) : 0;
    }
    if (!cfg)
        cfg = env_cfg;
    const int v4 = (cfg >> 7) & 1, ws = (cfg >> 12) & 7;
    if (type != AARMD_TYPE_Q4_K || n_tok < 1 || n_tok > CUK_MMQK_MAX_TOK || n_in <= 0 || n_in % K_UK ||
        n_out < 1 || n_out > (1 << 30) || cfg < 0 || cfg >= 1 << 15 || (cfg & (1 << 6)) || (ws && !v4) ||
        ws == 1 || ((uintptr_t)w & 15) || ((uintptr_t)xq & 15) || ((uintptr_t)xd & 3) || !w || !xq || !xd || !y)
        return 0;
    v8_device();
    if (v8_cc < 9)
        return 0;
    const size_t rb = cuk_row_bytes(type, n_in);
    const int ns = cfg & 3 ? 1 + (cfg & 3) : 3;
    const int ks_max = (cfg >> 2) & 15 ? (cfg >> 2) & 15 : 8;
    const int shape = (cfg >> 8) & 15 ? ((cfg >> 8) & 15) - 1 : k_shape_for(n_tok);
    if (shape >= K_SHAPES)
        return 0;
#define K_ARGS s, w, rb, n_in, n_out, xq, xd, n_tok, y, ns, ks_max > 8 ? 8 : ks_max, v4, ws
    switch (shape) {
    case 0: return k_launch<2, 5>(K_ARGS);
    case 1: return k_launch<4, 3>(K_ARGS);
    case 2: return k_launch<3, 4>(K_ARGS);
    case 3: return k_launch<4, 2>(K_ARGS);
    case 4: return k_launch<3, 3>(K_ARGS);
    default: return k_launch<4, 4>(K_ARGS);
    }
#undef K_ARGS
}
