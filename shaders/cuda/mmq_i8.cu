/*
 * mmq_i8.cu — the int8 tensor-core GEMM of the CUDA backend for 2..64-token quantized steps (Q8_0,
 * Q4_K): the step's Q8 activations go as they are into int8 mma.sync (m16n8k32: one Q8 block per
 * mma) against weights unpacked to int8 (no float decode, no activation conversion), and the
 * per-32 scales are applied in F32 to each int32 result. Not the F16 GEMMs (mmq.cu) nor the
 * dispatch (matvec.cu's mmq_t and cuk_mmqv_small, its only callers).
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
#define I8_UI 8      /* items (32 elements: one Q8 block) per unit; a unit is one stage of K */
#define I8_UK 256    /* elements per unit */
/* An int32 mma that starts from I8_MAGIC (the bits of the float 1.5 * 2^23) ends with the bits of
 * the float 12582912 + dot, exactly, for |dot| < 2^22 (every type here: <= 32 * 128 * 127). */
#define I8_MAGIC 0x4B400000
#define I8_MAGICF 12582912.0f

/*
 * Design (docs/cuda-notes.md v10-i8). Block = NC consumer warps (16 weight rows each) + 1 producer
 * warp; K runs in units of 256 elements through a ring of ns stages. Per stage the producer issues
 * one 2D tensor copy of the weights (BM rows x the unit's bytes, zero past the matrix) and two of
 * the activations' int8 (box 128 bytes x NTOK tokens, 128-byte swizzle: conflict-free ldmatrix;
 * zero past the last token), all completing on `full`; it writes each stage's scale table (per
 * item and token: dx and -dx * I8_MAGICF; K-quants: dx * sum(xq) / 32 as a pair of halves, the
 * sums read from the activations in L2) one stage ahead of the consumers and arrives on `ready`. Consumers wait on both, unpack their rows' A fragments (Q8_0: the bytes;
 * Q4_K: the nibbles, one AND / shift each), take B with one ldmatrix.x4 per two items and token
 * tile, run one m16n8k32 per item and tile from I8_MAGIC, and fold each result in as
 *   acc = fma(dw, fma(dx, F, -dx * I8_MAGICF), acc)     (F: the result's bits as a float)
 * (the product dw*dx*dot to ~1 unit of dx of the rounding of dx * I8_MAGICF). Q4_K's minimum term
 * -dmin*m * dx*sum(xq) is an F16 m16n8k8 per unit and tile over its 8 items, the operands split
 * into high and low halves (3 mma: ~2^-22 relative). K split over a cluster and the ordered DSMEM
 * reduction are v8's (mmq_common.cuh): deterministic. sm_90 only; rows of whole units, 16-byte
 * aligned rows and activations; else the launcher refuses.
 */

template <uint32_t T> struct i8t { enum { OK = 0 }; };

template <> struct i8t<AARMD_TYPE_Q8_0> {
    enum { OK = 1, UB = 8 * 34, MIN = 0 };
    /* items 2p, 2p+1 of row g (rw) and row g + 8: A fragments a[item][4] and scales dw[item][row] */
    static __device__ __forceinline__ void frags(const uint8_t *rw, int p, int t4, uint32_t (&a)[2][4],
                                                 float (&dw)[2][2])
    {
        const uint32_t *w = reinterpret_cast<const uint32_t *>(rw) + 17 * p + t4;
        const uint32_t *v = reinterpret_cast<const uint32_t *>(rw + 8 * UB) + 17 * p + t4;
        /* item 2p: qs at byte 68p + 2 (2 mod 4): two words, one funnel shift */
        a[0][0] = __funnelshift_r(w[0], w[1], 16);
        a[0][1] = __funnelshift_r(v[0], v[1], 16);
        a[0][2] = __funnelshift_r(w[4], w[5], 16);
        a[0][3] = __funnelshift_r(v[4], v[5], 16);
        /* item 2p+1: qs at byte 68p + 36 (aligned) */
        a[1][0] = w[9];
        a[1][1] = v[9];
        a[1][2] = w[13];
        a[1][3] = v[13];
        dw[0][0] = __half2float(*reinterpret_cast<const __half *>(rw + 68 * p));
        dw[0][1] = __half2float(*reinterpret_cast<const __half *>(rw + 8 * UB + 68 * p));
        dw[1][0] = __half2float(*reinterpret_cast<const __half *>(rw + 68 * p + 34));
        dw[1][1] = __half2float(*reinterpret_cast<const __half *>(rw + 8 * UB + 68 * p + 34));
    }
};

template <> struct i8t<AARMD_TYPE_Q4_K> {
    enum { OK = 1, UB = 144, MIN = 1 };
    /* sub-blocks 2p (low nibbles) and 2p+1 (high) share the 32 bytes at 16 + 32p */
    static __device__ __forceinline__ void frags(const uint8_t *rw, int p, int t4, uint32_t (&a)[2][4])
    {
        q4k_s8_frags(rw, p, t4, a);
    }
};

/* stage layout (bytes): the two activation boxes (1024-aligned for the 128-byte swizzle), the
 * weight box, the scale table [item][token] float2 (dx, -dx * I8_MAGICF), then (K-quants) the
 * halves [token][item] of dx * sum(xq) / 32, high and low */
template <uint32_t T, int NC, int NTT>
struct i8k {
    typedef i8t<T> Tr;
    enum { BM = 16 * NC, NTH = (NC + 1) * WARP, NTOK = 8 * NTT, ABOX = NTOK * 128, WOFF = 2 * ABOX,
           XSC = WOFF + BM * Tr::UB, XSH = XSC + 64 * NTOK, XSL = XSH + 16 * NTOK,
           STAGE = (XSL + 16 * NTOK + 1023) / 1024 * 1024, RST = NTOK + 1,
           TABW = Tr::MIN ? NC * 16 * I8_UI * 8 : 0,   /* per row: 8 floats dw, 8 + 8 halves of the minimum */
           MINB = NTT == 8 ? 2 : 4 };
    static constexpr size_t smem(int ns)
    {
        return 1024 + (size_t)ns * STAGE + TABW + 3 * ns * 8;   /* + 1024: the ring aligned to 1024 bytes */
    }
};

__device__ __forceinline__ uint32_t i8_h2(__half lo, __half hi)
{
    return (uint32_t)__half_as_ushort(lo) | (uint32_t)__half_as_ushort(hi) << 16;
}

/* d * b for the byte b at position k of u, exactly as d * (float)b (no int-to-float conversion) */
__device__ __forceinline__ float i8_byte_mul(float d, uint32_t u, int k)
{
    return fmaf(d, __int_as_float((int)__byte_perm(u, 0x4B000000u, 0x7540 | k)), -d * 8388608.0f);
}

/* the sum of the 32 int8 in v0, v1 */
__device__ __forceinline__ int i8_sum32(int4 v0, int4 v1)
{
    int s = __dp4a(v0.x, 0x01010101, 0);
    s = __dp4a(v0.y, 0x01010101, s);
    s = __dp4a(v0.z, 0x01010101, s);
    s = __dp4a(v0.w, 0x01010101, s);
    s = __dp4a(v1.x, 0x01010101, s);
    s = __dp4a(v1.y, 0x01010101, s);
    s = __dp4a(v1.z, 0x01010101, s);
    return __dp4a(v1.w, 0x01010101, s);
}

/* dx * s / 32 (an item's share of the Q4_K minimum) as a high and a low half */
__device__ __forceinline__ void i8_min_halves(float dx, int s, __half *hi, __half *lo)
{
    const float xs = dx * (float)s * (1.0f / 32.0f);
    *hi = __float2half_rn(xs);
    *lo = __float2half_rn(xs - __half2float(*hi));
}

/*
 * TAB (cfg bit 9): the scale tables of every unit computed once per launch by k_i8_tab into a
 * per-stream scratch laid out as a stage's table region (per unit: [item][NTOK] float2 (dx, -dx *
 * I8_MAGICF), then for K-quants [NTOK][item] halves of dx * sum(xq) / 32, high, then low; zeros
 * past n_tok), copied by the producer with the stage's other copies: no L2 round trip on the
 * producer's path and no `ready` barrier. Same arithmetic as the producer's tables.
 */
template <int MIN>
__global__ void k_i8_tab(const int8_t *__restrict__ xq, const float *__restrict__ xd, int n_in, int n_tok, int ntok,
                         uint8_t *__restrict__ tab)
{
    pdl_enter();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
    const int items = n_in / 32, v = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (v >= items * ntok)
        return;
    const int tok = v % ntok, item = v / ntok, u = item / I8_UI, it = item % I8_UI;
    uint8_t *t = tab + (size_t)u * 96 * ntok;
    const float dx = tok < n_tok ? __ldg(xd + (size_t)tok * items + item) : 0.0f;
    reinterpret_cast<float2 *>(t)[it * ntok + tok] = make_float2(dx, -dx * I8_MAGICF);
    if (MIN) {
        int s = 0;
        if (tok < n_tok) {
            const int4 *src = reinterpret_cast<const int4 *>(xq + (size_t)tok * n_in + (size_t)item * 32);
            s = i8_sum32(__ldg(src), __ldg(src + 1));
        }
        i8_min_halves(dx, s, reinterpret_cast<__half *>(t + 64 * ntok) + tok * I8_UI + it,
                      reinterpret_cast<__half *>(t + 80 * ntok) + tok * I8_UI + it);
    }
}

/* EARLY (cfg bit 8, experimental, off unless AARMD_CUDA_I8_EARLY=1): the producer refills a slot
 * as soon as its stage is consumed and writes that stage's scale table right after, instead of
 * writing the next stage's table first (runs I1-I2: the table ahead of the refill put an L2
 * round trip on the refill's path). Correct on the H100 but slower at 16-64 tokens
 * (docs/cuda-notes.md v10-i8): kept as a knob. */
template <uint32_t T, int NC, int NTT, int EARLY, int TAB>
__global__ void __launch_bounds__((NC + 1) * WARP, (i8k<T, NC, NTT>::MINB))
k_mmqi8(int n_items, int n_out, const int8_t *__restrict__ xq, const float *__restrict__ xd, int n_tok,
        float *__restrict__ y, int kun, int ks, int ns, const __grid_constant__ CUtensorMap tmw,
        const __grid_constant__ CUtensorMap tmx, const uint8_t *__restrict__ gtab)
{
    typedef i8t<T> Tr;
    typedef i8k<T, NC, NTT> K;
    enum { BM = K::BM, NTOK = K::NTOK, UB = Tr::UB, ABOX = K::ABOX, WOFF = K::WOFF, XSC = K::XSC, XSH = K::XSH,
           XSL = K::XSL, STAGE = K::STAGE, RST = K::RST };
    static_assert(UB % 16 == 0 && (BM * UB) % 128 == 0, "weight boxes: whole 16-byte rows, 128-byte aligned");
    static_assert(ABOX % 1024 == 0 && STAGE % 1024 == 0, "swizzled activation boxes: 1024-byte aligned");
    static_assert(BM * RST * 4 <= 2 * STAGE, "the reduction fits the ring");
    extern __shared__ __align__(16) uint8_t smraw[];
    uint8_t *sm = smraw + ((1024u - (smem_u32(smraw) & 1023u)) & 1023u);
    uint8_t *tab = sm + ns * STAGE;                                         /* [NC][16][8] x (dw, mh, ml) */
    uint64_t *full = reinterpret_cast<uint64_t *>(sm + ns * STAGE + K::TABW);
    uint64_t *ready = full + ns;
    uint64_t *empty = ready + ns;
    float *red = reinterpret_cast<float *>(sm);   /* [BM][RST] partial sums, after the ring is drained */

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int nu = n_items / I8_UI, n_in = n_items * 32;
    const ksplit_part kp = ksplit_of(ks, BM, nu, kun);
    const int rank = kp.rank, r0 = kp.r0, u0 = kp.u0, nst = kp.nst;

    mb_ring_init<true>(full, empty, ready, ns, NC);

    float acc[NTT][4];
    frag_zero(acc);

    if (warp == NC) {
        /* producer: the weights of the first stages may go before the wait (never written) */
        const uint32_t bytes = (uint32_t)(BM * UB + 2 * ABOX + (TAB ? 96 * NTOK : 0));
        auto acts = [&](int i) {
            if (lane == 0) {
                uint8_t *st = sm + (i % ns) * STAGE;
                tma_2d(st, &tmx, (u0 + i) * I8_UK, 0, &full[i % ns]);
                tma_2d(st + ABOX, &tmx, (u0 + i) * I8_UK + 128, 0, &full[i % ns]);
                if (TAB)   /* the unit's scale table, computed by k_i8_tab */
                    bulk_g2s(st + XSC, gtab + (size_t)(u0 + i) * 96 * NTOK, 96 * NTOK, &full[i % ns]);
            }
        };
        /* the scale table of stage i (its activations landed, for the sums) */
        auto scales = [&](int i) {
            uint8_t *st = sm + (i % ns) * STAGE;
            float2 *xsc = reinterpret_cast<float2 *>(st + XSC);
            const int it0 = (u0 + i) * I8_UI;
            float dx[2 * NTT];
#pragma unroll
            for (int j = 0; j < 2 * NTT; j++) {
                const int p = lane + WARP * j, tok = p % NTOK, it = p / NTOK;
                dx[j] = tok < n_tok ? __ldg(xd + (size_t)tok * n_items + it0 + it) : 0.0f;
            }
#pragma unroll
            for (int j = 0; j < 2 * NTT; j++) {
                const int p = lane + WARP * j, tok = p % NTOK, it = p / NTOK;
                xsc[it * NTOK + tok] = make_float2(dx[j], -dx[j] * I8_MAGICF);
            }
            if constexpr (Tr::MIN) {
                /* the sums from the activations in global memory (L2): waiting for the stage's copies
                 * (the weights come from DRAM) made the table late (call 1) */
                __half *xsh = reinterpret_cast<__half *>(st + XSH), *xsl = reinterpret_cast<__half *>(st + XSL);
                enum { JB = 2 * NTT < 4 ? 2 * NTT : 4 };   /* pairs in flight per lane (registers) */
#pragma unroll
                for (int j0 = 0; j0 < 2 * NTT; j0 += JB) {
                int4 q[JB][2];
#pragma unroll
                for (int jj = 0; jj < JB; jj++) {
                    const int p = lane + WARP * (j0 + jj), tok = p % NTOK, it = p / NTOK;
                    q[jj][0] = q[jj][1] = make_int4(0, 0, 0, 0);
                    if (tok < n_tok) {
                        const int4 *src =
                            reinterpret_cast<const int4 *>(xq + (size_t)tok * n_in + (size_t)(it0 + it) * 32);
                        q[jj][0] = __ldg(src);
                        q[jj][1] = __ldg(src + 1);
                    }
                }
#pragma unroll
                for (int jj = 0; jj < JB; jj++) {
                    const int j = j0 + jj, p = lane + WARP * j, tok = p % NTOK, it = p / NTOK;
                    i8_min_halves(dx[j], i8_sum32(q[jj][0], q[jj][1]), xsh + tok * I8_UI + it, xsl + tok * I8_UI + it);
                }
                }
            }
            mb_arrive(&ready[i % ns]);   /* each lane: its own stores are released */
        };
        const int pre = min(ns, nst);
        for (int i = 0; i < pre; i++) {
            if (lane == 0) {
                mb_arrive_tx(&full[i], bytes);
                tma_2d(sm + i * STAGE + WOFF, &tmw, (u0 + i) * (UB / 2), r0, &full[i]);
            }
        }
        pdl_enter();
        for (int i = 0; i < pre; i++)
            acts(i);
        auto refill = [&](int i) {   /* stage i consumed: its slot takes stage i + ns */
            mb_wait(&empty[i % ns], (i / ns) & 1);
            if (lane == 0) {
                mb_arrive_tx(&full[i % ns], bytes);
                tma_2d(sm + (i % ns) * STAGE + WOFF, &tmw, (u0 + i + ns) * (UB / 2), r0, &full[i % ns]);
            }
            acts(i + ns);
        };
        if constexpr (TAB) {
            for (int i = 0; i + ns < nst; i++)
                refill(i);
        } else if constexpr (EARLY) {
            for (int i = 0; i < pre; i++)
                scales(i);
            for (int i = 0; i + ns < nst; i++) {
                refill(i);
                scales(i + ns);   /* consumers need it a unit later (they are on stage i + 1) */
            }
        } else {
            if (nst > 0)
                scales(0);
            for (int i = 0; i < nst; i++) {
                if (i + 1 < nst)
                    scales(i + 1);   /* issued already (ns >= 2): ready before the consumers finish stage i */
                if (i + ns < nst)
                    refill(i);
            }
        }
    } else {
        pdl_enter();
        const int wr = warp * 16;
        float *tdw = reinterpret_cast<float *>(tab + warp * 16 * I8_UI * 8);   /* [16][8] dw */
        __half *tmh = reinterpret_cast<__half *>(tdw + 16 * I8_UI);            /* [16][8] -32 dmin m, high */
        __half *tml = tmh + 16 * I8_UI;                                         /* low */
        /* ldmatrix rows: lane = (matrix j, row i): token i of the tile, chunk (4 (p & 1) + j) ^ i */
        const int lj = lane >> 3, li = lane & 7;
        for (int i = 0; i < nst; i++) {
            uint8_t *st = sm + (i % ns) * STAGE;
            mb_wait(&full[i % ns], (i / ns) & 1);
            if (!TAB)
                mb_wait(&ready[i % ns], (i / ns) & 1);
            const uint8_t *rw = st + WOFF + (wr + g) * UB;
            const float *xsc = reinterpret_cast<const float *>(st + XSC);
            if constexpr (Tr::MIN) {
                /* this warp's rows: lane = (row, half of the 8 sub-blocks) */
                const int row = lane >> 1, hf = lane & 1;
                const uint4 hd = *reinterpret_cast<const uint4 *>(st + WOFF + (wr + row) * UB);
                const float2 dd = __half22float2(*reinterpret_cast<const __half2 *>(&hd.x));
                uint32_t sc, mn;
                q4k_half_scales(hd, hf, &sc, &mn);
                float dw[4];
                __half mh[4], ml[4];
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    dw[k] = i8_byte_mul(dd.x, sc, k);
                    const float m = i8_byte_mul(-32.0f * dd.y, mn, k);
                    mh[k] = __float2half_rn(m);
                    ml[k] = __float2half_rn(m - __half2float(mh[k]));
                }
                __syncwarp();   /* every lane done with the previous unit's table */
                *reinterpret_cast<float4 *>(tdw + row * I8_UI + 4 * hf) = make_float4(dw[0], dw[1], dw[2], dw[3]);
                *reinterpret_cast<uint2 *>(tmh + row * I8_UI + 4 * hf) =
                    make_uint2(i8_h2(mh[0], mh[1]), i8_h2(mh[2], mh[3]));
                *reinterpret_cast<uint2 *>(tml + row * I8_UI + 4 * hf) =
                    make_uint2(i8_h2(ml[0], ml[1]), i8_h2(ml[2], ml[3]));
                __syncwarp();
            }
            const uint32_t abase = smem_u32(st) + li * 128;
#pragma unroll
            for (int p = 0; p < 4; p++) {
                uint32_t a[2][4];
                float dw[2][2];
                if constexpr (Tr::MIN) {
                    Tr::frags(rw, p, t4, a);
                    const float2 d0 = *reinterpret_cast<const float2 *>(tdw + g * I8_UI + 2 * p);
                    const float2 d1 = *reinterpret_cast<const float2 *>(tdw + (g + 8) * I8_UI + 2 * p);
                    dw[0][0] = d0.x; dw[1][0] = d0.y; dw[0][1] = d1.x; dw[1][1] = d1.y;
                } else {
                    Tr::frags(rw, p, t4, a, dw);
                }
                const uint32_t ap = abase + (p >> 1) * ABOX + ((((p & 1) * 4 + lj) ^ li) << 4);
#pragma unroll
                for (int n = 0; n < NTT; n++) {
                    uint32_t b[4];
                    ldsm4(b, ap + n * 8 * 128);
                    int c0[4], c1[4];
                    mma_s8(c0, a[0], b[0], b[1], I8_MAGIC);
                    mma_s8(c1, a[1], b[2], b[3], I8_MAGIC);
                    const float4 s0 = *reinterpret_cast<const float4 *>(xsc + 2 * ((2 * p) * NTOK + n * 8 + 2 * t4));
                    const float4 s1 = *reinterpret_cast<const float4 *>(xsc + 2 * ((2 * p + 1) * NTOK + n * 8 + 2 * t4));
                    acc[n][0] = fmaf(dw[0][0], fmaf(s0.x, __int_as_float(c0[0]), s0.y), acc[n][0]);
                    acc[n][1] = fmaf(dw[0][0], fmaf(s0.z, __int_as_float(c0[1]), s0.w), acc[n][1]);
                    acc[n][2] = fmaf(dw[0][1], fmaf(s0.x, __int_as_float(c0[2]), s0.y), acc[n][2]);
                    acc[n][3] = fmaf(dw[0][1], fmaf(s0.z, __int_as_float(c0[3]), s0.w), acc[n][3]);
                    acc[n][0] = fmaf(dw[1][0], fmaf(s1.x, __int_as_float(c1[0]), s1.y), acc[n][0]);
                    acc[n][1] = fmaf(dw[1][0], fmaf(s1.z, __int_as_float(c1[1]), s1.w), acc[n][1]);
                    acc[n][2] = fmaf(dw[1][1], fmaf(s1.x, __int_as_float(c1[2]), s1.y), acc[n][2]);
                    acc[n][3] = fmaf(dw[1][1], fmaf(s1.z, __int_as_float(c1[3]), s1.w), acc[n][3]);
                }
            }
            if constexpr (Tr::MIN) {
                /* the minimum: acc += (-32 dmin m)[row][item] x (dx sum(xq) / 32)[item][token], hi/lo */
                const uint32_t *mh32 = reinterpret_cast<const uint32_t *>(tmh);
                const uint32_t *ml32 = reinterpret_cast<const uint32_t *>(tml);
                const uint32_t ah0 = mh32[g * 4 + t4], ah1 = mh32[(g + 8) * 4 + t4];
                const uint32_t al0 = ml32[g * 4 + t4], al1 = ml32[(g + 8) * 4 + t4];
                const uint32_t *xh = reinterpret_cast<const uint32_t *>(st + XSH);
                const uint32_t *xl = reinterpret_cast<const uint32_t *>(st + XSL);
#pragma unroll
                for (int n = 0; n < NTT; n++) {
                    const uint32_t bh = xh[(n * 8 + g) * 4 + t4], bl = xl[(n * 8 + g) * 4 + t4];
                    mma_h8(acc[n], ah0, ah1, bh);
                    mma_h8(acc[n], al0, al1, bh);
                    mma_h8(acc[n], ah0, ah1, bl);
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

/* ---- launch ------------------------------------------------------------------------------ */

template <uint32_t T, int NC, int NTT, int EARLY, int TAB>
static int i8_launch(cudaStream_t s, const void *w, size_t rb, int items, int64_t n_in, int64_t n_out, const void *xq,
                     const float *xd, int n_tok, float *y, int ks_max, int ns, int wm)
{
    typedef i8k<T, NC, NTT> K;
    auto kern = k_mmqi8<T, NC, NTT, EARLY, TAB>;
    const size_t smem = K::smem(ns);
    static int attr = 0;   /* per instantiation: the shared memory limit raised to (bytes), -1 refused */
    if (mmq_smem_limit(kern, K::smem(4), &attr) < 0 || smem > (size_t)attr)
        return 0;
    CUtensorMap tmw, tmx;
    if (!mmq_i8_maps(&tmw, &tmx, w, rb, n_out, i8t<T>::UB, K::BM, xq, n_in, n_tok, K::NTOK))
        return 0;
    const int tiles = (int)((n_out + K::BM - 1) / K::BM);
    const int nu = items / I8_UI;
    int ks = 1;
    const int kun = split_k(nu, tiles, wm * v8_sms, ks_max, &ks);
    uint8_t *gtab = NULL;
    if (TAB) {   /* every unit's scale table, once per launch */
        gtab = (uint8_t *)mmq_scratch(s, (size_t)nu * 96 * K::NTOK);
        if (!gtab)
            return 0;
        const int nt = items * K::NTOK;
        pdl_launch(k_i8_tab<i8t<T>::MIN>, dim3((unsigned)((nt + 255) / 256)), dim3(256), s, (const int8_t *)xq, xd,
                   (int)n_in, n_tok, (int)K::NTOK, gtab);
    }
    cudaLaunchConfig_t cfg;
    cudaLaunchAttribute at[2];
    cluster_cfg(&cfg, at, tiles, ks, K::NTH, smem, s);
    cudaError_t e = cudaLaunchKernelEx(&cfg, kern, items, (int)n_out, (const int8_t *)xq, xd, n_tok, y, kun, ks, ns, tmw,
                                       tmx, (const uint8_t *)gtab);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return 1;
}

template <uint32_t T, int EARLY, int TAB>
static int i8_tok(cudaStream_t s, const void *w, size_t rb, int items, int64_t n_in, int64_t n_out, const void *xq,
                  const float *xd, int n_tok, float *y, int ks_max, int ns, int wm)
{
#define I8_TOK_ARGS s, w, rb, items, n_in, n_out, xq, xd, n_tok, y, ks_max, ns, wm
    if (n_tok <= 8)
        return i8_launch<T, 4, 1, EARLY, TAB>(I8_TOK_ARGS);
    if (n_tok <= 16)
        return i8_launch<T, 4, 2, EARLY, TAB>(I8_TOK_ARGS);
    if (n_tok <= 32)
        return i8_launch<T, 4, 4, EARLY, TAB>(I8_TOK_ARGS);
    return i8_launch<T, 4, 8, EARLY, TAB>(I8_TOK_ARGS);
#undef I8_TOK_ARGS
}

template <uint32_t T>
static int i8_type(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const void *xq, const float *xd,
                   int n_tok, float *y, int cfg)
{
    const size_t rb = cuk_row_bytes(T, n_in);
    if (!rb || rb % 16 || ((uintptr_t)w & 15) || ((uintptr_t)xq & 15) || ((uintptr_t)xd & 3) || n_in % I8_UK)
        return 0;
    const int items = (int)(n_in / CUK_ITEM);
    const gemm_knobs kn = gemm_knobs_of(cfg);
    const int ns = kn.ns, ks_max = kn.ks_max;
    int wm = kn.wm;
    if (!wm)   /* runs I1, I2: Q8_0 K split to 2 blocks per SM up to 32 tokens, else (and Q4_K) 3 */
        wm = T == AARMD_TYPE_Q4_K || n_tok > 32 ? 3 : 2;
#define I8_ARGS s, w, rb, items, n_in, n_out, xq, xd, n_tok, y, ks_max, ns, wm
    if (cfg & (1 << 8))
        return i8_tok<T, 1, 0>(I8_ARGS);
    if (cfg & (1 << 9))
        return i8_tok<T, 0, 1>(I8_ARGS);
    return i8_tok<T, 0, 0>(I8_ARGS);
#undef I8_ARGS
}

/*
 * The int8 GEMM: y[t][r] = W[r] . dequant(xq[t], xd[t]) for 1 <= n_tok <= 64 (int32 dot products
 * per Q8 block, F32 scaling; Q4_K's minimum through F16 hi/lo pairs: measured <= 1.2e-4 relative
 * to the exact int8 reference, from the rounding of -dx * I8_MAGICF). cfg: bits 0-1 ring stages
 * - 2 (2..4); bits 2-5 blocks of a cluster splitting K at most (0: 8); bits 6-7 K is split until
 * the grid has v blocks per SM (0: Q8_0 2 up to 32 tokens, else 3); bit 8 the EARLY producer
 * (refused unless the environment has AARMD_CUDA_I8_EARLY=1: measured slower); bit 9 TAB, the scale
 * tables precomputed once per launch (not with bit 8). Returns 0,
 * enqueuing nothing, for types other than Q8_0 / Q4_K, rows not of whole 256-element units or not
 * 16-byte aligned, activations not 16-byte aligned, devices before sm_90, bad arguments, or a
 * launch the device refuses. Declared in matvec.cu, its caller.
 */
extern "C" int cuk_mmqi8_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                            const float *xd, int n_tok, float *y, int cfg)
{
    if (n_tok < 1 || n_tok > 64 || n_in % 32 || n_in <= 0 || n_out < 1 || n_out > (1 << 30) || cfg < 0 ||
        cfg >= 1 << 10 || (cfg & (3 << 8)) == 3 << 8)
        return 0;
    static int early_ok = -1;   /* AARMD_CUDA_I8_EARLY=1: the EARLY producer may run (read once) */
    if (early_ok < 0) {
        const char *e = getenv("AARMD_CUDA_I8_EARLY");
        early_ok = e && !strcmp(e, "1");
    }
    if ((cfg & (1 << 8)) && !early_ok)
        return 0;
    v8_device();
    if (v8_cc < 9)
        return 0;
    switch (type) {
    case AARMD_TYPE_Q8_0: return i8_type<AARMD_TYPE_Q8_0>(s, w, n_in, n_out, xq, xd, n_tok, y, cfg);
    case AARMD_TYPE_Q4_K: return i8_type<AARMD_TYPE_Q4_K>(s, w, n_in, n_out, xq, xd, n_tok, y, cfg);
    default: return 0;
    }
}
