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
}
#else
typedef int cpu_simd_avx512_empty;   /* ISO C wants a non-empty translation unit */
#endif
