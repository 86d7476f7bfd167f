/*
 * attn_fa.cu — tensor-core flash attention over the paged F16 KV cache for
 * forwards of several tokens (prefill chunks, batched decode). Not the
 * single-token decode kernel nor the scalar split-K kernels (attn_dec.cu).
 *
 * A block takes one tile (consecutive tokens of one sequence, host list) x the
 * query heads of one kv head: 64 rows, 16 per warp (row r: token r / group,
 * head r % group). Keys stream through shared memory in tiles of BK rows
 * (cp.async, two stages) read through the block table; S = Q K^T and O += P V
 * run on mma.sync m16n8k16 (F16 in, F32 accumulators) with an online softmax in
 * F32 (base 2). gridDim.z > 1 splits each tile's keys (split-K): the chunks
 * write (m, s, acc[D]) partial rows that cuk_attn_combine (attn_dec.cu) merges.
 * Batched decode (every tile <= 16 rows, no split) runs k_attn_fa1 instead: the
 * same products, each warp streaming its own KV blocks, the warps merged at the end.
 */
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../plugins/cuda/launch.h"
#include "cp_async.cuh"
#include "mma.cuh"
#include "pdl.cuh"

#define FA_WARPS 4
#define FA_THREADS (FA_WARPS * 32)
#define FA_ROWS (FA_WARPS * 16)
#define FA_LOG2E 1.4426950408889634f
#define FA_LN2 0.6931471805599453f

static_assert(FA_ROWS == CUK_FA_ROWS, "launch.h CUK_FA_ROWS is the rows of one block");

template <int D> struct fa_cfg {
    static constexpr int BK = D > 128 ? 32 : 64;   /* keys per shared-memory stage */
    static constexpr int LD = D + 8;               /* row stride in halfs: 16 B pad, ldmatrix without conflicts */
    static constexpr size_t SMEM = (size_t)(FA_ROWS + 4 * BK) * LD * sizeof(__half);   /* Q, 2 x (K, V) */
};

/* ldmatrix .x4 from shared memory: four 8x8 F16 tiles into the mma fragment registers (TRANS:
 * transposed, the V operand of P V) */
template <bool TRANS>
__device__ __forceinline__ void ldsm_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const __half *p)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                     : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                     : "r"(a));
#else
    (void)p;
    r0 = r1 = r2 = r3 = 0;
#endif
}

__device__ __forceinline__ uint32_t pack_h2(float lo, float hi)
{
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}

/* F16 offset of position j's K row (+ CUK_KV_BLOCK * kv_dim: its V row) in the paged cache (rope_kv.cuh kv_row). */
__device__ __forceinline__ size_t fa_kv_row(const struct cuk_kv &kv, const int32_t *tab, int32_t j, int kv_dim)
{
    size_t b = (size_t)tab[j / CUK_KV_BLOCK];
    return b * kv.block_halfs + kv.layer_off + (size_t)(j % CUK_KV_BLOCK) * kv_dim;
}

/*
 * One warp's part of a key stage: NB blocks of 16 keys at shared rows K, V
 * (position kb0 first) against the warp's 16 query rows at sqw: S = Q K^T,
 * softcap, the mask (keys >= ke, after the row's position or before its
 * window), the online softmax (base 2), O += P V. prow/plo: the thread's rows
 * g and g + 8 (position, first visible key).
 */
template <int D, int NB>
__device__ __forceinline__ void fa_keys(const __half *sqw, const __half *K, const __half *V, int32_t kb0, int32_t ke,
                                        const int32_t (&prow)[2], const int32_t (&plo)[2], float scale, float softcap,
                                        float (&o)[D / 8][4], float (&mrow)[2], float (&lrow)[2])
{
    constexpr int LD = fa_cfg<D>::LD, NT = 2 * NB, ND = D / 8;
    const int lane = threadIdx.x & 31, qd = lane & 3;
    const float sl2 = scale * FA_LOG2E;
    float s[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++)
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {   /* S = Q K^T */
        uint32_t a0, a1, a2, a3;
        ldsm_x4<false>(a0, a1, a2, a3, sqw + (lane & 15) * LD + kk * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int nn = 0; nn < NB; nn++) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4<false>(b0, b1, b2, b3,
                    K + (nn * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
            mma_f16(s[2 * nn], a0, a1, a2, a3, b0, b1);
            mma_f16(s[2 * nn + 1], a0, a1, a2, a3, b2, b3);
        }
    }
    float mx[2] = {mrow[0], mrow[1]};
#pragma unroll
    for (int n = 0; n < NT; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int r = e >> 1;
            int32_t j = kb0 + n * 8 + 2 * qd + (e & 1);
            float x;
            if (softcap > 0.0f)
                x = softcap * tanhf(s[n][e] * scale / softcap) * FA_LOG2E;
            else
                x = s[n][e] * sl2;
            if (j >= ke || j > prow[r] || j < plo[r])
                x = -INFINITY;
            s[n][e] = x;
            mx[r] = fmaxf(mx[r], x);
        }
    }
    float alpha[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        base[r] = mx[r] == -INFINITY ? 0.0f : mx[r];
        alpha[r] = exp2f(mrow[r] - base[r]);
        mrow[r] = mx[r];
        lrow[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < NT; n++) {
        s[n][0] = exp2f(s[n][0] - base[0]);
        s[n][1] = exp2f(s[n][1] - base[0]);
        s[n][2] = exp2f(s[n][2] - base[1]);
        s[n][3] = exp2f(s[n][3] - base[1]);
        lrow[0] += s[n][0] + s[n][1];
        lrow[1] += s[n][2] + s[n][3];
    }
#pragma unroll
    for (int n = 0; n < ND; n++) {
        o[n][0] *= alpha[0];
        o[n][1] *= alpha[0];
        o[n][2] *= alpha[1];
        o[n][3] *= alpha[1];
    }
#pragma unroll
    for (int kk = 0; kk < NB; kk++) {   /* O += P V (P from the S accumulators, F16) */
        uint32_t a0 = pack_h2(s[2 * kk][0], s[2 * kk][1]), a1 = pack_h2(s[2 * kk][2], s[2 * kk][3]);
        uint32_t a2 = pack_h2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        uint32_t a3 = pack_h2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int dn = 0; dn < D / 16; dn++) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4<true>(b0, b1, b2, b3,
                      V + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + dn * 16 + (lane >> 4) * 8);
            mma_f16(o[2 * dn], a0, a1, a2, a3, b0, b1);
            mma_f16(o[2 * dn + 1], a0, a1, a2, a3, b2, b3);
        }
    }
}

/* The tile's query rows 0..ROWS-1 as F16 into sq (stride LD; zeros past nrow), by the block's NT
 * threads: row r = (token t0 + r / group, head kvh * group + r % group). */
template <int D, int ROWS, int NT>
__device__ __forceinline__ void fa_q_rows(__half *sq, const float *__restrict__ q, int nrow, int t0, int group,
                                          int kvh, int n_head)
{
    constexpr int LD = fa_cfg<D>::LD;
    for (int i = threadIdx.x; i < ROWS * (D / 2); i += NT) {
        int row = i / (D / 2), d = (i % (D / 2)) * 2;
        float2 x = make_float2(0.0f, 0.0f);
        if (row < nrow) {
            int t = t0 + row / group, h = kvh * group + row % group;
            x = *reinterpret_cast<const float2 *>(q + ((size_t)t * n_head + h) * D + d);
        }
        *reinterpret_cast<__half2 *>(sq + row * LD + d) = __floats2half2_rn(x.x, x.y);
    }
}

/*
 * The (m, l, O) of rows 0..15 that W warps hold for disjoint keys, merged through shared memory
 * `red` (W x (32 + 16 D) floats, free once every warp is past its keys: the barrier here). Every
 * thread of the block calls it; warp 0 returns true holding the merged rows, the others false.
 */
template <int D, int W>
__device__ __forceinline__ bool fa_merge_warps(float *red, float (&o)[D / 8][4], float (&mrow)[2], float (&lrow)[2])
{
    constexpr int ND = D / 8;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, qd = lane & 3;
    __syncthreads();
    float *mine = red + w * (32 + 16 * D);
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = g + 8 * r;
        if (qd == 0) {
            mine[row] = mrow[r];
            mine[16 + row] = lrow[r];
        }
#pragma unroll
        for (int n = 0; n < ND; n++)
            *reinterpret_cast<float2 *>(mine + 32 + row * D + n * 8 + 2 * qd) =
                make_float2(o[n][2 * r], o[n][2 * r + 1]);
    }
    __syncthreads();
    if (w != 0)
        return false;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = g + 8 * r;
        float M = -INFINITY;
        for (int v = 0; v < W; v++)
            M = fmaxf(M, red[v * (32 + 16 * D) + row]);
        float f[W];
        lrow[r] = 0.0f;
#pragma unroll
        for (int v = 0; v < W; v++) {
            float mv = red[v * (32 + 16 * D) + row];
            f[v] = mv == -INFINITY ? 0.0f : exp2f(mv - M);
            lrow[r] += f[v] * red[v * (32 + 16 * D) + 16 + row];
        }
        mrow[r] = M;
#pragma unroll
        for (int n = 0; n < ND; n++) {
            float2 acc = make_float2(0.0f, 0.0f);
#pragma unroll
            for (int v = 0; v < W; v++) {
                const float *rv = red + v * (32 + 16 * D) + 32 + row * D;
                float2 x = *reinterpret_cast<const float2 *>(rv + n * 8 + 2 * qd);
                acc.x += f[v] * x.x;
                acc.y += f[v] * x.y;
            }
            o[n][2 * r] = acc.x;
            o[n][2 * r + 1] = acc.y;
        }
    }
    return true;
}

/*
 * The end of a block's rows, in warp 0 after fa_merge_warps or in each warp of a tile of more rows:
 * the warp's rows wrow0 + g and wrow0 + g + 8 of the tile's nrow. nch > 1: this chunk's (m, s, acc)
 * partial rows; else out = O / l (and the Q8 rows when xq != NULL and D % 32 == 0).
 */
template <int D>
__device__ __forceinline__ void fa_finish(float (&o)[D / 8][4], const float (&mrow)[2], const float (&lrow)[2],
                                          int wrow0, int nrow, int t0, int group, int n_head, int kvh, int nch, int c,
                                          float *partial, float *out, int8_t *xq, float *xd)
{
    constexpr int ND = D / 8;
    const int lane = threadIdx.x & 31, g = lane >> 2, qd = lane & 3;
    if (wrow0 >= nrow)
        return;   /* warp-uniform: no valid row */
    size_t ro[2];
    bool ok[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = wrow0 + g + 8 * r;
        ok[r] = row < nrow;
        ro[r] = ok[r] ? (size_t)(t0 + row / group) * n_head + kvh * group + row % group : 0;   /* (token, head) */
    }
    if (nch > 1) {   /* this chunk's (m, s, acc) per row, natural-log units as attn_dec.cu's merge reads them */
#pragma unroll
        for (int r = 0; r < 2; r++) {
            if (!ok[r])
                continue;
            float *pr = partial + (ro[r] * nch + c) * (size_t)(D + 2);
            if (qd == 0) {
                pr[0] = mrow[r] == -INFINITY ? -INFINITY : mrow[r] * FA_LN2;
                pr[1] = lrow[r];
            }
#pragma unroll
            for (int n = 0; n < ND; n++)
                *reinterpret_cast<float2 *>(pr + 2 + n * 8 + 2 * qd) = make_float2(o[n][2 * r], o[n][2 * r + 1]);
        }
        return;
    }
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; r++)
        inv[r] = lrow[r] > 0.0f ? 1.0f / lrow[r] : 0.0f;
#pragma unroll
    for (int n = 0; n < ND; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            o[n][e] *= inv[e >> 1];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (!ok[r])
            continue;
        float *orow = out + ro[r] * D;
#pragma unroll
        for (int n = 0; n < ND; n++)
            *reinterpret_cast<float2 *>(orow + n * 8 + 2 * qd) = make_float2(o[n][2 * r], o[n][2 * r + 1]);
    }
    if (!xq || D % 32)
        return;
#pragma unroll
    for (int gq = 0; gq < D / 32; gq++) {   /* Q8 rows per 32 (a quad holds 32 columns of a row), as q8_store */
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float am = 0.0f;
#pragma unroll
            for (int n = 4 * gq; n < 4 * gq + 4; n++)
                am = fmaxf(am, fmaxf(fabsf(o[n][2 * r]), fabsf(o[n][2 * r + 1])));
            am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 1));
            am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 2));
            float d = am / 127.0f;
            if (!ok[r])
                continue;
            size_t i0 = ro[r] * D;
#pragma unroll
            for (int n = 4 * gq; n < 4 * gq + 4; n++) {
                char2 v;
                v.x = (signed char)(d > 0.0f ? __float2int_rn(o[n][2 * r] / d) : 0);
                v.y = (signed char)(d > 0.0f ? __float2int_rn(o[n][2 * r + 1] / d) : 0);
                *reinterpret_cast<char2 *>(xq + i0 + n * 8 + 2 * qd) = v;
            }
            if (qd == 0)
                xd[(i0 >> 5) + gq] = d;
        }
    }
}

/*
 * grid (n_tiles, n_kv, n_chunks), FA_THREADS threads, fa_cfg<D>::SMEM bytes of
 * dynamic shared memory. tiles[i]..tiles[i+1]-1: the tokens of tile i (one
 * sequence, consecutive positions, at most FA_ROWS / group tokens). n_chunks
 * == 1: out (and the Q8 rows when xq != NULL) written here; else partial rows
 * (t, h, c) of D + 2 floats as attn_dec.cu's split-K kernels write them. ksplit !=
 * 0 and every row in the first 16 (decode tiles): the 4 warps take those rows
 * with 16 keys each of every stage and merge in shared memory at the end.
 * skip_small != 0: the blocks of such tiles exit at once (k_attn_fa1 takes them).
 */
template <int D, int BK>
__device__ __forceinline__ void fa_body(unsigned char *smem, const float *__restrict__ q, const struct cuk_kv &kv,
                                        const int32_t *__restrict__ pos, int t0, int cnt, int n_head, int group,
                                        int kv_dim, float scale, float softcap, int window, int ksplit, float *partial,
                                        float *out, int8_t *xq, float *xd)
{
    constexpr int LD = fa_cfg<D>::LD, ND = D / 8;
    static_assert(FA_WARPS * (32 + 16 * D) * sizeof(float) <= 4 * BK * LD * sizeof(__half), "merge fits K/V");
    __half *sq = reinterpret_cast<__half *>(smem);   /* [FA_ROWS][LD] */
    __half *sk = sq + FA_ROWS * LD;                  /* [2][BK][LD] */
    __half *sv = sk + 2 * BK * LD;                   /* [2][BK][LD] */
    const int kvh = blockIdx.y, c = blockIdx.z, nch = gridDim.z;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2;
    const int nrow = cnt * group;
    const int32_t p_first = pos[t0], p_last = pos[t0 + cnt - 1];
    const int32_t j0 = window > 0 && p_first - window + 1 > 0 ? p_first - window + 1 : 0;
    const int n_kt = (p_last + 1 - j0 + BK - 1) / BK;   /* key tiles of the whole range */
    const int per = (n_kt + nch - 1) / nch;             /* ... of this chunk */
    const int32_t ka = j0 + c * per * BK;
    const int32_t ke = min(p_last + 1, ka + per * BK);
    const int nt = ka < ke ? (ke - ka + BK - 1) / BK : 0;
    const int32_t *tab = kv.btab + kv.tok_bt[t0];
    const __half *pool = (const __half *)kv.pool + (size_t)kvh * D;
    const bool ks = ksplit && nrow <= 16;   /* block-uniform: the warps split the keys, not the rows */

    /* the two rows this thread holds (g and g + 8 of its warp's 16): position, first visible key */
    const int wrow0 = ks ? 0 : 16 * w, wrow1 = min(nrow - 1, wrow0 + 15);
    int32_t prow[2], plo[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = wrow0 + g + 8 * r;
        prow[r] = row < nrow ? pos[t0 + row / group] : -1;   /* -1: padding, every key masked */
        plo[r] = window > 0 ? prow[r] - window + 1 : INT32_MIN;
    }
    const int32_t w_hi = wrow0 < nrow ? pos[t0 + wrow1 / group] : -1;   /* the warp's last row's position */
    const int32_t w_lo = wrow0 < nrow && window > 0 ? pos[t0 + wrow0 / group] - window + 1 : INT32_MIN;

    auto load = [&](int buf, int32_t kb) {
        constexpr int CH = D / 8;   /* 16-byte pieces per row */
        for (int i = threadIdx.x; i < BK * CH; i += FA_THREADS) {
            int r = i / CH, ch = i % CH;
            int32_t j = kb + r;
            bool ok = j < ke;
            const __half *src = pool + (ok ? fa_kv_row(kv, tab, j, kv_dim) : 0) + ch * 8;
            cpa<16>(sk + (buf * BK + r) * LD + ch * 8, src, ok);
            cpa<16>(sv + (buf * BK + r) * LD + ch * 8, src + (size_t)CUK_KV_BLOCK * kv_dim, ok);
        }
    };
    if (nt > 0)
        load(0, ka);
    cp_commit();

    fa_q_rows<D, FA_ROWS, FA_THREADS>(sq, q, nrow, t0, group, kvh, n_head);

    float o[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};

    for (int it = 0; it < nt; it++) {
        const int32_t kb = ka + it * BK;
        if (it + 1 < nt)
            load((it + 1) & 1, kb + BK);
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const __half *K = sk + (it & 1) * BK * LD, *V = sv + (it & 1) * BK * LD;
        if (!ks) {
            if (!(wrow0 >= nrow || kb > w_hi || kb + BK - 1 < w_lo))   /* else every key masked for this warp */
                fa_keys<D, BK / 16>(sq + wrow0 * LD, K, V, kb, ke, prow, plo, scale, softcap, o, mrow, lrow);
        } else {
            const int32_t kw = kb + 16 * w;   /* this warp's 16 keys of the stage */
            if (!(16 * w >= BK || kw > w_hi || kw + 15 < w_lo))
                fa_keys<D, 1>(sq, K + 16 * w * LD, V + 16 * w * LD, kw, ke, prow, plo, scale, softcap, o, mrow,
                              lrow);
        }
        __syncthreads();   /* every warp done with this stage before the next load overwrites it */
    }
    cp_wait<0>();

#pragma unroll
    for (int r = 0; r < 2; r++) {
        lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 1);
        lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 2);
    }
    if (ks && !fa_merge_warps<D, FA_WARPS>(reinterpret_cast<float *>(sk), o, mrow, lrow))
        return;
    fa_finish<D>(o, mrow, lrow, wrow0, nrow, t0, group, n_head, kvh, nch, c, partial, out, xq, xd);
}

template <int D>
__global__ void __launch_bounds__(FA_THREADS)
k_attn_fa(const float *__restrict__ q, struct cuk_kv kv, const int32_t *__restrict__ pos,
          const int32_t *__restrict__ tiles, int n_head, int group, int kv_dim, float scale, float softcap, int window,
          int ksplit, int skip_small, float *partial, float *out, int8_t *xq, float *xd)
{
    extern __shared__ __align__(16) unsigned char fa_smem[];
    pdl_enter();
    const int ti = gridDim.x - 1 - blockIdx.x;   /* later tiles (more keys) first */
    const int t0 = tiles[ti], cnt = tiles[ti + 1] - t0;
    if (skip_small && cnt * group <= 16)
        return;   /* block-uniform: k_attn_fa1's tile */
    fa_body<D, fa_cfg<D>::BK>(fa_smem, q, kv, pos, t0, cnt, n_head, group, kv_dim, scale, softcap, window, ksplit,
                              partial, out, xq, xd);
}

/*
 * Tiles of at most 16 rows (decode tokens: 16 / group tokens of one sequence), one block per (tile,
 * kv head), no key split. v18 (docs/cuda-notes.md v18-lead): k_attn_fa on such tiles ran at ~1.6 TB/s
 * with 8 warps per SM, each executing ~780 instructions per 16 keys between two block barriers.
 * Here each of W warps streams its own KV blocks (16 keys: b0 + w, b0 + w + W, ... of the range)
 * through a ring of NS stages of its own: one block-table read per KV block, row addresses by
 * adds, no block barrier per stage; the warps' rows are merged at the end (fa_merge_warps).
 * Blocks of larger tiles exit at once (k_attn_fa takes them with skip_small).
 */
template <int D, int NS_ = (D >= 256 ? 2 : 3)> struct fa1_cfg {
    static constexpr int W = 4, NS = NS_, LD = fa_cfg<D>::LD;
    static constexpr int STAGE = 2 * CUK_KV_BLOCK * LD;   /* halfs: the K, then the V rows of one KV block */
    static constexpr size_t SMEM = (size_t)(16 * LD + W * NS * STAGE) * sizeof(__half);
};

template <int D, int NS>
__device__ __forceinline__ void fa1_body(unsigned char *smem, const float *__restrict__ q, const struct cuk_kv &kv,
                                         const int32_t *__restrict__ pos, int t0, int cnt, int n_head, int group,
                                         int kv_dim, float scale, float softcap, int window, float *out, int8_t *xq,
                                         float *xd)
{
    typedef fa1_cfg<D, NS> C;
    constexpr int W = C::W, LD = C::LD, ND = D / 8, CH = D / 8, KB = CUK_KV_BLOCK;
    static_assert(KB == 16, "a stage is one KV block of 16 keys: one fa_keys<D, 1> call");
    static_assert(W * (32 + 16 * D) * sizeof(float) <= (size_t)W * NS * C::STAGE * sizeof(__half),
                  "the merge fits the rings");
    __half *sq = reinterpret_cast<__half *>(smem);   /* [16][LD] */
    __half *ring = sq + 16 * LD;                     /* [W][NS][2 x KB][LD] */
    const int kvh = blockIdx.y;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2;
    const int nrow = cnt * group;
    const int32_t p_first = pos[t0], p_last = pos[t0 + cnt - 1];
    const int32_t j0 = window > 0 && p_first - window + 1 > 0 ? p_first - window + 1 : 0, ke = p_last + 1;
    const int32_t *tab = kv.btab + kv.tok_bt[t0];
    const __half *pool = (const __half *)kv.pool + (size_t)kvh * D;
    int32_t prow[2], plo[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = g + 8 * r;
        prow[r] = row < nrow ? pos[t0 + row / group] : -1;   /* -1: padding, every key masked */
        plo[r] = window > 0 ? prow[r] - window + 1 : INT32_MIN;
    }
    const int b0 = j0 / KB, b1 = p_last / KB;                     /* the KV blocks of the keys */
    const int nb = b1 - b0 >= w ? (b1 - b0 - w) / W + 1 : 0;     /* this warp's: b0 + w + W i */
    __half *mine = ring + (size_t)w * NS * C::STAGE;
    auto issue = [&](int i) {   /* the warp's i-th KV block into its slot i % NS; a group either way */
        if (i < nb) {
            const int b = b0 + w + W * i;
            const __half *src = pool + (size_t)tab[b] * kv.block_halfs + kv.layer_off;
            __half *dst = mine + (i % NS) * C::STAGE;
#pragma unroll
            for (int k = lane; k < KB * CH; k += 32) {
                const int r = k / CH, ch = k % CH;
                const int32_t j = b * KB + r;
                const bool ok = j >= j0 && j < ke;   /* zeros past the last key (V rows not yet written) */
                const __half *kr = ok ? src + (size_t)r * kv_dim + ch * 8 : pool;
                cpa<16>(dst + r * LD + ch * 8, kr, ok);
                cpa<16>(dst + (KB + r) * LD + ch * 8, ok ? kr + (size_t)KB * kv_dim : pool, ok);
            }
        }
        cp_commit();
    };
#pragma unroll
    for (int i = 0; i < NS - 1; i++)
        issue(i);
    fa_q_rows<D, 16, W * 32>(sq, q, nrow, t0, group, kvh, n_head);
    __syncthreads();

    float o[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};
    for (int i = 0; i < nb; i++) {
        issue(i + NS - 1);   /* into the slot block i - 1 left (the __syncwarp below it) */
        cp_wait<NS - 1>();
        __syncwarp();        /* every lane's copies of block i landed */
        const __half *K = mine + (i % NS) * C::STAGE;
        fa_keys<D, 1>(sq, K, K + KB * LD, (b0 + w + W * i) * KB, ke, prow, plo, scale, softcap, o, mrow, lrow);
        __syncwarp();        /* every lane done reading the slot before it is refilled */
    }
    cp_wait<0>();
#pragma unroll
    for (int r = 0; r < 2; r++) {
        lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 1);
        lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 2);
    }
    if (!fa_merge_warps<D, W>(reinterpret_cast<float *>(ring), o, mrow, lrow))
        return;
    fa_finish<D>(o, mrow, lrow, 0, nrow, t0, group, n_head, kvh, 1, 0, NULL, out, xq, xd);
}

template <int D>
__global__ void __launch_bounds__(fa1_cfg<D>::W * 32)
k_attn_fa1(const float *__restrict__ q, struct cuk_kv kv, const int32_t *__restrict__ pos,
           const int32_t *__restrict__ tiles, int n_head, int group, int kv_dim, float scale, float softcap,
           int window, float *out, int8_t *xq, float *xd)
{
    extern __shared__ __align__(16) unsigned char fa_smem[];
    pdl_enter();
    const int ti = gridDim.x - 1 - blockIdx.x;
    const int t0 = tiles[ti], cnt = tiles[ti + 1] - t0;
    if (cnt * group > 16)
        return;   /* block-uniform: k_attn_fa's tile */
    fa1_body<D, fa1_cfg<D>::NS>(fa_smem, q, kv, pos, t0, cnt, n_head, group, kv_dim, scale, softcap, window, out, xq,
                                xd);
}

/*
 * A mixed step's tiles (decode tokens beside prefill chunks) in one launch of three blocks per SM
 * (v19, docs/cuda-notes.md v19-lead): the two kernels above each fit two, so a 32-stream step with a
 * 113-token chunk (320 blocks) ran in two waves. Tiles of <= 16 rows take k_attn_fa1's path with
 * rings of 2 stages, the others k_attn_fa's with 32 keys a stage; no key split.
 */
template <int D> struct famix_cfg {
    static constexpr int BK = 32, NS = 2;
    static constexpr size_t A = (size_t)(FA_ROWS + 4 * BK) * fa_cfg<D>::LD * sizeof(__half), B = fa1_cfg<D, NS>::SMEM;
    static constexpr size_t SMEM = A > B ? A : B;
};

template <int D>
__global__ void __launch_bounds__(FA_THREADS, 3)
k_attn_famix(const float *__restrict__ q, struct cuk_kv kv, const int32_t *__restrict__ pos,
             const int32_t *__restrict__ tiles, int n_head, int group, int kv_dim, float scale, float softcap,
             int window, float *out, int8_t *xq, float *xd)
{
    static_assert(fa1_cfg<D>::W * 32 == FA_THREADS, "one block size for both paths");
    extern __shared__ __align__(16) unsigned char fa_smem[];
    pdl_enter();
    const int ti = gridDim.x - 1 - blockIdx.x;   /* later tiles (the prefill chunks, more rows) first */
    const int t0 = tiles[ti], cnt = tiles[ti + 1] - t0;
    if (cnt * group <= 16)
        fa1_body<D, famix_cfg<D>::NS>(fa_smem, q, kv, pos, t0, cnt, n_head, group, kv_dim, scale, softcap, window,
                                      out, xq, xd);
    else
        fa_body<D, famix_cfg<D>::BK>(fa_smem, q, kv, pos, t0, cnt, n_head, group, kv_dim, scale, softcap, window, 0,
                                     NULL, out, xq, xd);
}

template <int D>
static void fa_run(cudaStream_t s, const float *q, const struct cuk_kv *kv, const int32_t *pos,
                   const int32_t *tiles, int n_tiles, int n_small, int mix, int n_head, int n_kv, float scale,
                   float softcap, int window, int nch, float *partial, float *out, int8_t *xq, float *xd)
{
    static int ksplit = -1;   /* AARMD_CUDA_FA_KSPLIT=0: one-token tiles on one warp (the first version), for A/B */
    if (ksplit < 0) {
        const char *e = getenv("AARMD_CUDA_FA_KSPLIT");
        ksplit = e && *e ? atoi(e) != 0 : 1;
    }
    if constexpr (D <= 128) {
        if (mix) {
            pdl_launch_smem(k_attn_famix<D>, dim3((unsigned)n_tiles, (unsigned)n_kv), dim3(FA_THREADS),
                            famix_cfg<D>::SMEM, s, q, *kv, pos, tiles, n_head, n_head / n_kv, n_kv * D, scale,
                            softcap, window, out, xq, xd);
            return;
        }
    }
    const int one = n_small > 0 && nch == 1;   /* the small tiles to k_attn_fa1 (cuk_attention_fa decides) */
    if (one)
        pdl_launch_smem(k_attn_fa1<D>, dim3((unsigned)n_tiles, (unsigned)n_kv), dim3(fa1_cfg<D>::W * 32),
                        fa1_cfg<D>::SMEM, s, q, *kv, pos, tiles, n_head, n_head / n_kv, n_kv * D, scale, softcap,
                        window, out, xq, xd);
    if (!one || n_small < n_tiles)
        pdl_launch_smem(k_attn_fa<D>, dim3((unsigned)n_tiles, (unsigned)n_kv, (unsigned)nch), dim3(FA_THREADS),
                        fa_cfg<D>::SMEM, s, q, *kv, pos, tiles, n_head, n_head / n_kv, n_kv * D, scale, softcap,
                        window, ksplit, one, partial, out, xq, xd);
}

template <int D> static void fa_prepare()
{
    static int done;   /* once per D: above 48 KB of shared memory a block needs the opt-in */
    if (!done) {
        cudaFuncSetAttribute(k_attn_fa<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)fa_cfg<D>::SMEM);
        cudaFuncSetAttribute(k_attn_fa1<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)fa1_cfg<D>::SMEM);
        if constexpr (D <= 128)
            cudaFuncSetAttribute(k_attn_famix<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)famix_cfg<D>::SMEM);
    }
    done = 1;
}

/* pdl=3: this file's kernels also release the next launch at entry (pdl.cuh's flag is one per .cu) */
extern "C" void cuk_fa_set_pdl_early(int early)
{
    pdl_set_early(early);
}

extern "C" void cuk_fa_prepare(int D)
{
    switch (D) {
    case 16: fa_prepare<16>(); break;
    case 32: fa_prepare<32>(); break;
    case 64: fa_prepare<64>(); break;
    case 128: fa_prepare<128>(); break;
    case 256: fa_prepare<256>(); break;
    default: break;
    }
}

extern "C" int cuk_fa_ok(int n_head, int n_kv, int D)
{
    if (n_kv < 1 || n_head % n_kv || n_head / n_kv > CUK_FA_ROWS)
        return 0;
    return D == 16 || D == 32 || D == 64 || D == 128 || D == 256;
}

/* Blocks per SM the key split aims at (AARMD_CUDA_FA_SPLIT, read once; 0: never split). */
static int fa_split_target(void)
{
    static int per_sm = -1, sms;
    if (per_sm < 0) {
        const char *e = getenv("AARMD_CUDA_FA_SPLIT");
        int dev = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        per_sm = e && *e ? atoi(e) : 1;   /* 1 beat 2 and 4 on pp512 and 8-64 stream decode (v9-fa) */
    }
    return per_sm * sms;
}

/* An integer knob from the environment, read once into *cache (-1: not yet read), else def. */
static int fa_knob(const char *name, int def, int *cache)
{
    if (*cache < 0) {
        const char *e = getenv(name);
        *cache = e && *e ? atoi(e) : def;
    }
    return *cache;
}

/* Whether tiles of <= 16 rows go to k_attn_fa1 (AARMD_CUDA_FA1): 1 (default) when every tile is one
 * (batched decode) and the launch splits no keys; 0 never (k_attn_fa's four warps a stage, for
 * A/B); 2 whenever a tile is one, without key split (tests: a mixed step then takes two launches,
 * which measured no faster served than one; docs/cuda-notes.md v18-lead). A mixed step (small and
 * large tiles, no key split) takes k_attn_famix instead while fa_mix_mode() says so. */
static int fa1_mode(void)
{
    static int mode = -1;
    return fa_knob("AARMD_CUDA_FA1", 1, &mode);
}

/* Whether mixed steps take k_attn_famix (AARMD_CUDA_FA_MIX): 1 (default) when the launch splits no
 * keys, 0 never (for A/B), 2 whenever a step mixes small and large tiles, without key split (tests:
 * their few tiles would be split). */
static int fa_mix_mode(void)
{
    static int mode = -1;
    return fa_knob("AARMD_CUDA_FA_MIX", 1, &mode);
}

extern "C" int cuk_attention_fa(cudaStream_t s, const float *q, const struct cuk_kv *kv, const int32_t *pos,
                                const int32_t *tiles, int n_tiles, int n_small, int n_tok, int n_head, int n_kv,
                                int D, float scale, float softcap, int window, int n_chunks, float *partial,
                                float *out, void *xq, float *xd)
{
    if (!cuk_fa_ok(n_head, n_kv, D) || n_tiles < 1 || n_small < 0 || n_small > n_tiles || n_chunks < 1 ||
        n_chunks > CUK_ATTN_MAX_CHUNKS)
        return 0;
    if (D % 32)
        xq = NULL, xd = NULL;
    const int mode = fa1_mode(), mixed = n_small > 0 && n_small < n_tiles && D <= 128;
    int blocks = n_tiles * n_kv, want = fa_split_target();   /* split the keys only while SMs would idle */
    if (blocks < want && n_chunks > 1 && !(mode == 2 && n_small > 0) && !(mixed && fa_mix_mode() == 2))
        n_chunks = min(n_chunks, (want + blocks - 1) / blocks);
    else
        n_chunks = 1;
    const int mix = mixed && n_chunks == 1 && (fa_mix_mode() == 2 || (fa_mix_mode() == 1 && mode == 1));
    if (!mode || (mode == 1 && n_small < n_tiles))
        n_small = 0;
    cuk_fa_prepare(D);   /* no-op after step_cuda.c's call (outside graph capture) */
    int8_t *q8 = (int8_t *)xq;
#define FA_RUN(d) fa_run<d>(s, q, kv, pos, tiles, n_tiles, n_small, mix, n_head, n_kv, scale, softcap, window, \
                            n_chunks, partial, out, q8, xd)
    switch (D) {
    case 16: FA_RUN(16); break;
    case 32: FA_RUN(32); break;
    case 64: FA_RUN(64); break;
    case 128: FA_RUN(128); break;
    default: FA_RUN(256); break;
    }
#undef FA_RUN
    if (n_chunks > 1) {
        cuk_attn_combine(s, partial, n_tok, n_head, D, n_chunks, out, q8, xd);
    }
    return 1;
}
