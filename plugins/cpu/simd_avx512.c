/*
 * simd_avx512.c — AVX-512 (F, BW, VL, VNNI) dot kernels of the CPU backend
 * (x86-64 only; built with -mavx512*, called only after run-time detection).
 * Q6_K and float weights run 64 elements per zmm (Q4_K, Q5_K inherit AVX2); the 32-element formats
 * keep one block per ymm and use VNNI (vpdpbusd) for the byte products.
 */
#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))
/* token loops must unroll so per-token accumulators live in registers */
#if defined(__clang__)
#define UNROLL _Pragma("unroll")
#else
#define UNROLL _Pragma("GCC unroll 4")
#endif

INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE float f16(uint16_t h) { return _cvtsh_ss(h); }

INLINE const void *act_at(const void *a, size_t stride, int t) { return (const uint8_t *)a + (size_t)t * stride; }

INLINE __m512i join256(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

/* ---- 32-element formats against Q8A activations (ymm + VNNI) ------------------------ */

INLINE __m256i nibbles32(const uint8_t *qs)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m128i m = _mm_set1_epi8(0xF);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

/* 0x10 in byte j where bit j of the 32-bit word at qh is set. */
INLINE __m256i bit4_32(const uint8_t *qh)
{
    uint32_t v;
    memcpy(&v, qh, 4);
    return _mm256_maskz_set1_epi8((__mmask32)v, 0x10);
}

INLINE __m256i dot_u8i8(__m256i u, __m256i s) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s); }

INLINE __m256i dot_i8i8(__m256i x, __m256i y)
{
    return dot_u8i8(_mm256_abs_epi8(x), _mm256_sign_epi8(y, x));
}

enum q32_kind { K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0 };

/* Q4_1/Q5_1 keep d and m side by side, and so does an activation block its d and s:
 * one vcvtph2ps and one vmulps give [d*xd, m*xs] (the block's scale in lane 0, its
 * min term in lane 1, summed in a vector and read once at the end) instead of two
 * scalar F16 conversions, two products and a scalar add per block. */
INLINE __m128 dm_pair(const void *b)
{
    uint32_t v;
    memcpy(&v, b, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)v));
}

INLINE __m128 ds_pair(const struct cpu_block_q8a *x) { return _mm_castpd_ps(_mm_load_sd((const double *)(const void *)x)); }

INLINE void q32_block(enum q32_kind k, const uint8_t *wp, const void *va, size_t as, const int nt, int64_t i,
                      __m256 *acc, __m128 *accm)
{
    __m256i q;
    float d = 0.0f;
    __m128 dm = _mm_setzero_ps();
    if (k == K_Q4_0) {
        const struct cpu_block_q4_0 *b = (const void *)wp;
        q = _mm256_sub_epi8(nibbles32(b->qs), _mm256_set1_epi8(8));
        d = f16(b->d);
    } else if (k == K_Q4_1) {
        const struct cpu_block_q4_1 *b = (const void *)wp;
        q = nibbles32(b->qs);
        dm = dm_pair(b);
    } else if (k == K_Q5_0) {
        const struct cpu_block_q5_0 *b = (const void *)wp;
        q = _mm256_sub_epi8(_mm256_or_si256(nibbles32(b->qs), bit4_32(b->qh)), _mm256_set1_epi8(16));
        d = f16(b->d);
    } else if (k == K_Q5_1) {
        const struct cpu_block_q5_1 *b = (const void *)wp;
        q = _mm256_or_si256(nibbles32(b->qs), bit4_32(b->qh));
        dm = dm_pair(b);
    } else {
        const struct cpu_block_q8_0 *b = (const void *)wp;
        q = _mm256_loadu_si256((const __m256i *)b->qs);
        d = f16(b->d);
    }
    UNROLL
    for (int t = 0; t < nt; t++) {
        const struct cpu_block_q8a *x = (const struct cpu_block_q8a *)act_at(va, as, t) + i;
        __m256i xq = _mm256_loadu_si256((const __m256i *)x->qs);
        if (k == K_Q4_1 || k == K_Q5_1) {
            __m128 sc = _mm_mul_ps(dm, ds_pair(x));   /* [d*xd, m*xs, 0, 0] */
            acc[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(sc), _mm256_cvtepi32_ps(dot_u8i8(q, xq)), acc[t]);
            accm[t] = _mm_add_ps(accm[t], sc);
        } else {
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x->d), _mm256_cvtepi32_ps(dot_i8i8(q, xq)), acc[t]);
        }
    }
}

INLINE void q32_impl(enum q32_kind k, int64_t n, const void *vw, const void *va, size_t as, const int nt,
                     float *out)
{
    const size_t bb = k == K_Q4_0 ? sizeof(struct cpu_block_q4_0) : k == K_Q4_1 ? sizeof(struct cpu_block_q4_1)
                    : k == K_Q5_0 ? sizeof(struct cpu_block_q5_0) : k == K_Q5_1 ? sizeof(struct cpu_block_q5_1)
                    : sizeof(struct cpu_block_q8_0);
    /* two accumulator sets (even and odd blocks) so the FMA latency does not serialise a matvec */
    __m256 acc0[CPU_DOT_MAX_TOK], acc1[CPU_DOT_MAX_TOK];
    __m128 accm0[CPU_DOT_MAX_TOK], accm1[CPU_DOT_MAX_TOK];   /* lane 1: the min terms */
    UNROLL
    for (int t = 0; t < nt; t++) {
        acc0[t] = acc1[t] = _mm256_setzero_ps();
        accm0[t] = accm1[t] = _mm_setzero_ps();
    }
    const uint8_t *wp = vw;
    const int64_t nb = n / CPU_QK;
    int64_t i = 0;
    for (; i + 1 < nb; i += 2) {
        q32_block(k, wp + (size_t)i * bb, va, as, nt, i, acc0, accm0);
        q32_block(k, wp + (size_t)(i + 1) * bb, va, as, nt, i + 1, acc1, accm1);
    }
    if (i < nb)
        q32_block(k, wp + (size_t)i * bb, va, as, nt, i, acc0, accm0);
    UNROLL
    for (int t = 0; t < nt; t++)
        out[t] = hsum8(_mm256_add_ps(acc0[t], acc1[t])) +
                 _mm_cvtss_f32(_mm_movehdup_ps(_mm_add_ps(accm0[t], accm1[t])));
}

/* ---- Q6_K against Q8K activations (zmm: 64 elements in element order) ------------------ */
/* Q4_K and Q5_K have no AVX-512 kernels: the level inherits AVX2's. On the Zen 4 dev VM
 * zmm versions (vpdpwssd, 64 elements per op) were no faster for 1 token and ~10% slower
 * for 16-64 (zmm integer multiplies are double-pumped there); Q6_K's gained ~30%. */

INLINE void q6k_impl(int64_t n, const void *vw, const void *va, size_t as, const int nt, float *out)
{
    __m512 acc[CPU_DOT_MAX_TOK];
    UNROLL
    for (int t = 0; t < nt; t++)
        acc[t] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0xF), m2 = _mm512_set1_epi8(3);
    /* byte indices that spread scales 4c..4c+3 over 4 groups of 8 i16 lanes */
    const __m256i spread0 = _mm256_set_epi64x(0x0303030303030303ll, 0x0202020202020202ll,
                                              0x0101010101010101ll, 0x0000000000000000ll);
    const __m256i spread1 = _mm256_add_epi8(spread0, _mm256_set1_epi8(4));
    const struct cpu_block_q6_k *w = vw;
    for (int64_t i = 0; i < n / CPU_QK_K; i++) {
        __m512i sumi[CPU_DOT_MAX_TOK], sumi1[CPU_DOT_MAX_TOK];   /* two dpwssd chains */
        UNROLL
        for (int t = 0; t < nt; t++)
            sumi[t] = sumi1[t] = _mm512_setzero_si512();
        UNROLL
        for (int h = 0; h < 2; h++) {
            __m512i l = _mm512_loadu_si512((const void *)(w[i].ql + 64 * h));
            __m256i hb = _mm256_loadu_si256((const __m256i *)(w[i].qh + 32 * h));
            __m512i hh = join256(hb, _mm256_srli_epi16(hb, 2));
            /* elements 128h + 0..63 and 128h + 64..127 */
            __m512i q0 = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_slli_epi16(_mm512_and_si512(hh, m2), 4));
            __m512i q1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                         _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hh, 4), m2), 4));
            __m256i scb = _mm256_broadcastsi128_si256(_mm_loadl_epi64((const __m128i *)(w[i].scales + 8 * h)));
            __m512i s0 = _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(scb, spread0));
            __m512i s1 = _mm512_cvtepi8_epi16(_mm256_shuffle_epi8(scb, spread1));
            UNROLL
            for (int t = 0; t < nt; t++) {
                const int8_t *x = ((const struct cpu_block_q8k *)act_at(va, as, t))[i].qs + 128 * h;
                __m512i p0 = _mm512_maddubs_epi16(q0, _mm512_loadu_si512((const void *)x));
                __m512i p1 = _mm512_maddubs_epi16(q1, _mm512_loadu_si512((const void *)(x + 64)));
                sumi[t] = _mm512_dpwssd_epi32(sumi[t], p0, s0);
                sumi1[t] = _mm512_dpwssd_epi32(sumi1[t], p1, s1);
            }
        }
        float d = f16(w[i].d);
        __m256i scw = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[i].scales));
        UNROLL
        for (int t = 0; t < nt; t++) {
            /* the -32 offset: sum over groups g of scale[g] * 32 * bsums[g] */
            const struct cpu_block_q8k *x = (const struct cpu_block_q8k *)act_at(va, as, t) + i;
            __m256i bs = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), scw);
            __m512i corr = _mm512_castsi256_si512(_mm256_slli_epi32(bs, 5));
            corr = _mm512_inserti64x4(corr, _mm256_setzero_si256(), 1);
            __m512i tot = _mm512_sub_epi32(_mm512_add_epi32(sumi[t], sumi1[t]), corr);
            acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(d * x->d), _mm512_cvtepi32_ps(tot),
                                     acc[t]);
        }
    }
    UNROLL
    for (int t = 0; t < nt; t++)
        out[t] = _mm512_reduce_add_ps(acc[t]);
}

/* ---- float weights against F32 activations -------------------------------------------- */

enum fk_kind { K_F32, K_F16, K_BF16 };

INLINE __m512 load16(enum fk_kind k, const void *w, int64_t i, __mmask16 m)
{
    if (k == K_F32)
        return _mm512_maskz_loadu_ps(m, (const float *)w + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i);
    if (k == K_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE void f_impl(enum fk_kind k, int64_t n, const void *w, const void *va, size_t as, const int nt, float *out)
{
    __m512 acc0[CPU_DOT_MAX_TOK], acc1[CPU_DOT_MAX_TOK];
    UNROLL
    for (int t = 0; t < nt; t++)
        acc0[t] = acc1[t] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 w0 = load16(k, w, i, 0xFFFF), w1 = load16(k, w, i + 16, 0xFFFF);
        UNROLL
        for (int t = 0; t < nt; t++) {
            const float *x = act_at(va, as, t);
            acc0[t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), acc1[t]);
        }
    }
    for (; i < n; i += 16) {   /* masked tail */
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 w0 = load16(k, w, i, m);
        UNROLL
        for (int t = 0; t < nt; t++) {
            const float *x = act_at(va, as, t);
            acc0[t] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + i), acc0[t]);
        }
    }
    UNROLL
    for (int t = 0; t < nt; t++)
        out[t] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[t], acc1[t]));
}

/* ---- 16-row tiles of the 32-element formats (rows in lanes, VNNI) -------------------------- */
/* The 16 rows' block b is unpacked once into 8 zmm of unsigned bytes: lane L of vector k holds
 * elements 4k..4k+3 of row L (Q4_0/Q5_0 keep the unsigned nibble, Q8_0 adds 128). Each token's
 * block then costs 8 vpdpbusd against its bytes 4k..4k+3 broadcast, giving the 16 rows' exact
 * integer block sums in one vector, and per block and row
 *     acc = fma(d * xd, isum, acc);  acc = fma(m, xs, acc)
 * with m the block's min (Q4_1/Q5_1) or its offset folded in (-8d, -16d, -128d) and
 * xs = xd * sum(xq) from the activation block. Lanes never mix, so a row's result does not
 * depend on its lane, the tile's row count or the number of tokens. */

enum t_kind { T_Q4_0, T_Q4_1, T_Q5_0, T_Q5_1, T_Q8_0 };

struct tile_w {
    __m512i q[8];
    __m512 d, m;
};

INLINE int32_t ld32(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* 128-bit lane j = the 16 bytes at blk + ro[4j + g] + off. */
INLINE __m512i rows4(const uint8_t *blk, const size_t *ro, int g, size_t off)
{
    __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(blk + ro[g] + off)));
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(blk + ro[4 + g] + off)), 1);
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(blk + ro[8 + g] + off)), 2);
    return _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(blk + ro[12 + g] + off)), 3);
}

/* out[k] lane L = dword k of the 16 bytes at blk + ro[L] + off (k < nk, nk 1, 2 or 4). */
INLINE void rows_dwords(const uint8_t *blk, const size_t *ro, size_t off, const int nk, __m512i *out)
{
    __m512i z0 = rows4(blk, ro, 0, off), z1 = rows4(blk, ro, 1, off);
    __m512i z2 = rows4(blk, ro, 2, off), z3 = rows4(blk, ro, 3, off);
    __m512i t0 = _mm512_unpacklo_epi32(z0, z1), t2 = _mm512_unpacklo_epi32(z2, z3);
    out[0] = _mm512_unpacklo_epi64(t0, t2);
    if (nk > 1)
        out[1] = _mm512_unpackhi_epi64(t0, t2);
    if (nk > 2) {
        __m512i t1 = _mm512_unpackhi_epi32(z0, z1), t3 = _mm512_unpackhi_epi32(z2, z3);
        out[2] = _mm512_unpacklo_epi64(t1, t3);
        out[3] = _mm512_unpackhi_epi64(t1, t3);
    }
}

INLINE __m512 half_lo(__m512i v) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v)); }
INLINE __m512 half_hi(__m512i v) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16))); }

/* Adds 0x10 to byte j of lane L of q[k] where bit 4k + j of lane L of qh is set. */
INLINE void add_bit4(__m512i qh, __m512i *q)
{
    const __m512i c16 = _mm512_set1_epi8(0x10);
    /* byte j of each lane <- qh byte 0 (k = 0, 1), 1 (k = 2, 3), ...; bits 4(k % 2) + j */
    const __m512i bits_lo = _mm512_set1_epi32(0x08040201), bits_hi = _mm512_set1_epi32((int)0x80402010u);
    UNROLL
    for (int h = 0; h < 4; h++) {
        /* every byte of dword d (of a 128-bit lane) <- byte h of that dword */
        const __m512i sel = _mm512_add_epi32(_mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0),
                                             _mm512_set1_epi32(0x01010101 * h));
        __m512i b = _mm512_shuffle_epi8(qh, sel);
        q[2 * h] = _mm512_mask_add_epi8(q[2 * h], _mm512_test_epi8_mask(b, bits_lo), q[2 * h], c16);
        q[2 * h + 1] = _mm512_mask_add_epi8(q[2 * h + 1], _mm512_test_epi8_mask(b, bits_hi), q[2 * h + 1], c16);
    }
}

INLINE void tile_unpack(enum t_kind k, const uint8_t *blk, const size_t *ro, struct tile_w *tw)
{
    const __m512i m4 = _mm512_set1_epi8(0xF);
    __m512i hd[2], qs[4];
    if (k == T_Q8_0) {
        rows_dwords(blk, ro, 0, 1, hd);
        rows_dwords(blk, ro, 2, 4, qs);
        rows_dwords(blk, ro, 18, 4, tw->q + 4);
        const __m512i x80 = _mm512_set1_epi8((char)0x80);
        for (int i = 0; i < 4; i++) {
            tw->q[i] = _mm512_xor_si512(qs[i], x80);
            tw->q[4 + i] = _mm512_xor_si512(tw->q[4 + i], x80);
        }
        tw->d = half_lo(hd[0]);
        tw->m = _mm512_mul_ps(tw->d, _mm512_set1_ps(-128.0f));
        return;
    }
    const size_t qoff = k == T_Q4_0 ? 2 : k == T_Q4_1 ? 4 : k == T_Q5_0 ? 6 : 8;
    rows_dwords(blk, ro, 0, (k == T_Q5_0 || k == T_Q5_1) ? 2 : 1, hd);
    rows_dwords(blk, ro, qoff, 4, qs);
    for (int i = 0; i < 4; i++) {
        tw->q[i] = _mm512_and_si512(qs[i], m4);
        tw->q[4 + i] = _mm512_and_si512(_mm512_srli_epi16(qs[i], 4), m4);
    }
    tw->d = half_lo(hd[0]);
    if (k == T_Q4_1 || k == T_Q5_1)
        tw->m = half_hi(hd[0]);
    else
        tw->m = _mm512_mul_ps(tw->d, _mm512_set1_ps(k == T_Q4_0 ? -8.0f : -16.0f));
    if (k == T_Q5_0)   /* qh: the 4 bytes after d, across dwords 0 and 1 */
        add_bit4(_mm512_or_si512(_mm512_srli_epi32(hd[0], 16), _mm512_slli_epi32(hd[1], 16)), tw->q);
    if (k == T_Q5_1)
        add_bit4(hd[1], tw->q);
}

INLINE void tile_impl(enum t_kind k, int64_t n, const void *vw, size_t w_rb, int nr, const void *va, size_t as,
                      const int nt, float *y, size_t ys)
{
    const size_t bb = k == T_Q4_0 ? sizeof(struct cpu_block_q4_0) : k == T_Q4_1 ? sizeof(struct cpu_block_q4_1)
                    : k == T_Q5_0 ? sizeof(struct cpu_block_q5_0) : k == T_Q5_1 ? sizeof(struct cpu_block_q5_1)
                    : sizeof(struct cpu_block_q8_0);
    size_t ro[CPU_TILE_ROWS];
    for (int l = 0; l < CPU_TILE_ROWS; l++)   /* a short tile repeats its last row in the spare lanes */
        ro[l] = (size_t)(l < nr ? l : nr - 1) * w_rb;
    __m512 acc[CPU_TILE_MAX_TOK];
    UNROLL
    for (int t = 0; t < nt; t++)
        acc[t] = _mm512_setzero_ps();
    const uint8_t *w = vw;
    const int64_t nb = n / CPU_QK;
    /* The tile reads its rows across, 16 streams at once, which the hardware prefetchers do
     * not follow: fetch the rows two tiles ahead (one contiguous range; usually this thread's
     * tile after next), 16 blocks' bytes per block. Prefetches never fault. Q8_0 (9 lines per
     * block) goes to L2 only: into L1 it runs out of fill buffers. Measured on 576 x 49152 at
     * 1 token from DRAM (ms, one thread): Q8_0 row by row 1.59; tiles without prefetch 4.3,
     * next tile to L1 3.0, next tile to L2 1.62, two ahead to L2 1.17, three 1.57; Q4_1 row
     * by row 1.30, tiles next to L1 0.86, two ahead 0.89. */
    const uint8_t *next = w + 2 * (size_t)CPU_TILE_ROWS * w_rb;
    const size_t pf = (size_t)CPU_TILE_ROWS * bb;
    for (int64_t i = 0; i < nb; i++) {
        struct tile_w tw;
        for (size_t o = 0; o < pf; o += 64)
            if (k == T_Q8_0)
                _mm_prefetch((const char *)next + (size_t)i * pf + o, _MM_HINT_T1);
            else
                _mm_prefetch((const char *)next + (size_t)i * pf + o, _MM_HINT_T0);
        tile_unpack(k, w + (size_t)i * bb, ro, &tw);
        UNROLL
        for (int t = 0; t < nt; t++) {
            const struct cpu_block_q8a *x = (const struct cpu_block_q8a *)act_at(va, as, t) + i;
            __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), tw.q[0], _mm512_set1_epi32(ld32(x->qs)));
            __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), tw.q[1], _mm512_set1_epi32(ld32(x->qs + 4)));
            s0 = _mm512_dpbusd_epi32(s0, tw.q[2], _mm512_set1_epi32(ld32(x->qs + 8)));
            s1 = _mm512_dpbusd_epi32(s1, tw.q[3], _mm512_set1_epi32(ld32(x->qs + 12)));
            s0 = _mm512_dpbusd_epi32(s0, tw.q[4], _mm512_set1_epi32(ld32(x->qs + 16)));
            s1 = _mm512_dpbusd_epi32(s1, tw.q[5], _mm512_set1_epi32(ld32(x->qs + 20)));
            s0 = _mm512_dpbusd_epi32(s0, tw.q[6], _mm512_set1_epi32(ld32(x->qs + 24)));
            s1 = _mm512_dpbusd_epi32(s1, tw.q[7], _mm512_set1_epi32(ld32(x->qs + 28)));
            __m512 dx = _mm512_mul_ps(tw.d, _mm512_set1_ps(x->d));
            acc[t] = _mm512_fmadd_ps(dx, _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc[t]);
            acc[t] = _mm512_fmadd_ps(tw.m, _mm512_set1_ps(x->s), acc[t]);
        }
    }
    const __mmask16 mk = nr >= CPU_TILE_ROWS ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
    UNROLL
    for (int t = 0; t < nt; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * ys, mk, acc[t]);
}

#define TILE_KERNEL(name, kind)                                                                              \
    static void name##_tile(int64_t n, const void *w, size_t w_rb, int nr, const void *a, size_t as, int ntok, \
                            float *y, size_t ys)                                                             \
    {                                                                                                        \
        switch (ntok) {                                                                                      \
        case 1: tile_impl(kind, n, w, w_rb, nr, a, as, 1, y, ys); break;                                     \
        case 2: tile_impl(kind, n, w, w_rb, nr, a, as, 2, y, ys); break;                                     \
        case 3: tile_impl(kind, n, w, w_rb, nr, a, as, 3, y, ys); break;                                     \
        case 4: tile_impl(kind, n, w, w_rb, nr, a, as, 4, y, ys); break;                                     \
        case 5: tile_impl(kind, n, w, w_rb, nr, a, as, 5, y, ys); break;                                     \
        case 6: tile_impl(kind, n, w, w_rb, nr, a, as, 6, y, ys); break;                                     \
        case 7: tile_impl(kind, n, w, w_rb, nr, a, as, 7, y, ys); break;                                     \
        default: tile_impl(kind, n, w, w_rb, nr, a, as, 8, y, ys); break;                                    \
        }                                                                                                    \
    }

TILE_KERNEL(q4_0, T_Q4_0)
TILE_KERNEL(q4_1, T_Q4_1)
TILE_KERNEL(q5_0, T_Q5_0)
TILE_KERNEL(q5_1, T_Q5_1)
TILE_KERNEL(q8_0, T_Q8_0)

/* ---- entry points: one token, and a tile of tokens --------------------------------------- */

#define KERNELS(name, call)                                                                       \
    static float name##_dot(int64_t n, const void *w, const void *a)                               \
    {                                                                                             \
        float o;                                                                                  \
        const size_t as = 0;                                                                      \
        float *out = &o;                                                                          \
        const int nt = 1;                                                                         \
        call;                                                                                     \
        return o;                                                                                 \
    }                                                                                             \
    static void name##_multi(int64_t n, const void *w, const void *a, size_t as, int ntok, float *out) \
    {                                                                                             \
        switch (ntok) {                                                                           \
        case 1: { const int nt = 1; call; break; }                                                \
        case 2: { const int nt = 2; call; break; }                                                \
        case 3: { const int nt = 3; call; break; }                                                \
        default: { const int nt = 4; call; break; }                                               \
        }                                                                                         \
    }

KERNELS(q4_0, q32_impl(K_Q4_0, n, w, a, as, nt, out))
KERNELS(q4_1, q32_impl(K_Q4_1, n, w, a, as, nt, out))
KERNELS(q5_0, q32_impl(K_Q5_0, n, w, a, as, nt, out))
KERNELS(q5_1, q32_impl(K_Q5_1, n, w, a, as, nt, out))
KERNELS(q8_0, q32_impl(K_Q8_0, n, w, a, as, nt, out))
KERNELS(q6_k, q6k_impl(n, w, a, as, nt, out))
KERNELS(f32, f_impl(K_F32, n, w, a, as, nt, out))
KERNELS(f16, f_impl(K_F16, n, w, a, as, nt, out))
KERNELS(bf16, f_impl(K_BF16, n, w, a, as, nt, out))

void cpu_kernels_avx512(struct cpu_kernel_tab *tab)
{
#define SET(T, name)                      \
    tab->dot[T] = name##_dot;             \
    tab->dot_multi[T] = name##_multi
    SET(AARMD_TYPE_Q4_0, q4_0);
    SET(AARMD_TYPE_Q4_1, q4_1);
    SET(AARMD_TYPE_Q5_0, q5_0);
    SET(AARMD_TYPE_Q5_1, q5_1);
    SET(AARMD_TYPE_Q8_0, q8_0);
    SET(AARMD_TYPE_Q6_K, q6_k);
    SET(AARMD_TYPE_F32, f32);
    SET(AARMD_TYPE_F16, f16);
    SET(AARMD_TYPE_BF16, bf16);
#undef SET
    tab->tile[AARMD_TYPE_Q4_0] = q4_0_tile;
    tab->tile[AARMD_TYPE_Q4_1] = q4_1_tile;
    tab->tile[AARMD_TYPE_Q5_0] = q5_0_tile;
    tab->tile[AARMD_TYPE_Q5_1] = q5_1_tile;
    tab->tile[AARMD_TYPE_Q8_0] = q8_0_tile;
}
#else
typedef int cpu_simd_avx512_empty;   /* ISO C wants a non-empty translation unit */
#endif
