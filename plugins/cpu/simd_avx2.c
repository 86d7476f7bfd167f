/*
 * simd_avx2.c — AVX2/FMA/F16C dot kernels of the CPU backend (x86-64 only;
 * built with -mavx2 -mfma -mf16c, called only after run-time detection).
 * Each kernel takes 1..CPU_DOT_MAX_TOK tokens so a weight block is decoded once per token tile.
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

/* The 32 nibbles of 16 bytes in element order: low nibbles 0..15, high 16..31. */
INLINE __m256i nibbles32(const uint8_t *qs)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m128i m = _mm_set1_epi8(0xF);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

/* Byte j is 0xFF where bit j of the little-endian 32-bit word at qh is set. */
INLINE __m256i bits32(const uint8_t *qh)
{
    uint32_t v;
    memcpy(&v, qh, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303ll, 0x0202020202020202ll, 0x0101010101010101ll, 0);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)v), shuf);
    return _mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit);
}

INLINE __m256i bit4_32(const uint8_t *qh) { return _mm256_and_si256(bits32(qh), _mm256_set1_epi8(0x10)); }

/* Sums of 4 products of unsigned u (<= 63) and signed s bytes, as 8 int32. */
INLINE __m256i dot_u8i8(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* Same for two signed vectors (y never -128: activations are clamped to +-127). */
INLINE __m256i dot_i8i8(__m256i x, __m256i y)
{
    return dot_u8i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

INLINE const void *act_at(const void *a, size_t stride, int t) { return (const uint8_t *)a + (size_t)t * stride; }

/* ---- 32-element formats against Q8A activations -------------------------------- */

enum q32_kind { K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0 };

INLINE void q32_block(enum q32_kind k, const uint8_t *wp, const void *va, size_t as, const int nt, int64_t i,
                      __m256 *acc, float *accm)
{
    __m256i q;
    float d, m = 0.0f;
    if (k == K_Q4_0) {
        const struct cpu_block_q4_0 *b = (const void *)wp;
        q = _mm256_sub_epi8(nibbles32(b->qs), _mm256_set1_epi8(8));
        d = f16(b->d);
    } else if (k == K_Q4_1) {
        const struct cpu_block_q4_1 *b = (const void *)wp;
        q = nibbles32(b->qs);
        d = f16(b->d);
        m = f16(b->m);
    } else if (k == K_Q5_0) {
        const struct cpu_block_q5_0 *b = (const void *)wp;
        q = _mm256_sub_epi8(_mm256_or_si256(nibbles32(b->qs), bit4_32(b->qh)), _mm256_set1_epi8(16));
        d = f16(b->d);
    } else if (k == K_Q5_1) {
        const struct cpu_block_q5_1 *b = (const void *)wp;
        q = _mm256_or_si256(nibbles32(b->qs), bit4_32(b->qh));
        d = f16(b->d);
        m = f16(b->m);
    } else {
        const struct cpu_block_q8_0 *b = (const void *)wp;
        q = _mm256_loadu_si256((const __m256i *)b->qs);
        d = f16(b->d);
    }
    UNROLL
    for (int t = 0; t < nt; t++) {
        const struct cpu_block_q8a *x = (const struct cpu_block_q8a *)act_at(va, as, t) + i;
        __m256i xq = _mm256_loadu_si256((const __m256i *)x->qs);
        __m256i p = (k == K_Q4_1 || k == K_Q5_1) ? dot_u8i8(q, xq) : dot_i8i8(q, xq);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x->d), _mm256_cvtepi32_ps(p), acc[t]);
        if (k == K_Q4_1 || k == K_Q5_1)
            accm[t] += m * x->s;
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
    float accm0[CPU_DOT_MAX_TOK], accm1[CPU_DOT_MAX_TOK];
    UNROLL
    for (int t = 0; t < nt; t++) {
        acc0[t] = acc1[t] = _mm256_setzero_ps();
        accm0[t] = accm1[t] = 0.0f;
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
        out[t] = hsum8(_mm256_add_ps(acc0[t], acc1[t])) + (accm0[t] + accm1[t]);
}

/* ---- K-quants against Q8K activations -------------------------------------------- */

enum qk_kind { K_Q4_K, K_Q5_K };

/* sum_j mn[j] * (bsums[2j] + bsums[2j+1]) as 4 int32 partial sums. */
INLINE __m128i mins_dot(const int16_t *bsums, __m128i mn16)
{
    __m256i bs = _mm256_loadu_si256((const __m256i *)bsums);
    __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    return _mm_madd_epi16(pairs, mn16);
}

INLINE void q45k_impl(enum qk_kind k, int64_t n, const void *vw, const void *va, size_t as, const int nt, float *out)
{
    __m256 acc[CPU_DOT_MAX_TOK];   /* the mins are folded in too: 4 fewer live registers */
    UNROLL
    for (int t = 0; t < nt; t++)
        acc[t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1);
    const size_t bb = k == K_Q4_K ? sizeof(struct cpu_block_q4_k) : sizeof(struct cpu_block_q5_k);
    const uint8_t *wp = vw;
    for (int64_t i = 0; i < n / CPU_QK_K; i++, wp += bb) {
        /* q4_k and q5_k share d, dmin, scales at the same offsets */
        const struct cpu_block_q4_k *b = (const void *)wp;
        const uint8_t *qs = k == K_Q4_K ? b->qs : ((const struct cpu_block_q5_k *)wp)->qs;
        __m256i hb = k == K_Q5_K ? _mm256_loadu_si256((const __m256i *)((const struct cpu_block_q5_k *)wp)->qh)
                                 : _mm256_setzero_si256();
        uint32_t sm[4];
        cpu_scales_k4_unpack(b->scales, sm);
        __m256i sumi[CPU_DOT_MAX_TOK];
        UNROLL
        for (int t = 0; t < nt; t++)
            sumi[t] = _mm256_setzero_si256();
        UNROLL
        for (int j = 0; j < 4; j++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            if (k == K_Q5_K) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), one), 4));
            }
            __m256i s_lo = _mm256_set1_epi16((short)CPU_K4_SC(sm, 2 * j)),
                    s_hi = _mm256_set1_epi16((short)CPU_K4_SC(sm, 2 * j + 1));
            UNROLL
            for (int t = 0; t < nt; t++) {
                const int8_t *x = ((const struct cpu_block_q8k *)act_at(va, as, t))[i].qs + 64 * j;
                __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)x)), s_lo);
                __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 32))), s_hi);
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p0, p1));
            }
        }
        float d = f16(b->d), dmin = f16(b->dmin);
        __m128i mn16 = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)sm[3], (int)sm[2]));
        UNROLL
        for (int t = 0; t < nt; t++) {
            const struct cpu_block_q8k *x = (const struct cpu_block_q8k *)act_at(va, as, t) + i;
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x->d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
            acc[t] = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * x->d),
                                      _mm256_cvtepi32_ps(_mm256_zextsi128_si256(mins_dot(x->bsums, mn16))), acc[t]);
        }
    }
    UNROLL
    for (int t = 0; t < nt; t++)
        out[t] = hsum8(acc[t]);
}

INLINE void q6k_impl(int64_t n, const void *vw, const void *va, size_t as, const int nt, float *out)
{
    __m256 acc[CPU_DOT_MAX_TOK];
    UNROLL
    for (int t = 0; t < nt; t++)
        acc[t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0xF), m2 = _mm256_set1_epi8(3);
    const struct cpu_block_q6_k *w = vw;
    for (int64_t i = 0; i < n / CPU_QK_K; i++) {
        __m256i sumi[CPU_DOT_MAX_TOK];
        UNROLL
        for (int t = 0; t < nt; t++)
            sumi[t] = _mm256_setzero_si256();
        UNROLL
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w[i].ql + 64 * h;
            const int8_t *sc = w[i].scales + 8 * h;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i hb = _mm256_loadu_si256((const __m256i *)(w[i].qh + 32 * h));
            UNROLL
            for (int c = 0; c < 4; c++) {   /* chunk c: elements 128h + 32c .. +31, built one at a time */
                __m256i base = (c & 1) ? l1 : l0;
                __m256i lo4 = c < 2 ? _mm256_and_si256(base, m4) : _mm256_and_si256(_mm256_srli_epi16(base, 4), m4);
                __m256i q = _mm256_or_si256(lo4, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), m2), 4));
                /* elements 0..15 of a chunk take scale 2c, 16..31 scale 2c+1 */
                __m256i sc16 = _mm256_set_m128i(_mm_set1_epi16(sc[2 * c + 1]), _mm_set1_epi16(sc[2 * c]));
                UNROLL
                for (int t = 0; t < nt; t++) {
                    const int8_t *x = ((const struct cpu_block_q8k *)act_at(va, as, t))[i].qs + 128 * h + 32 * c;
                    __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)x));
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, sc16));
                }
            }
        }
        float d = f16(w[i].d);
        UNROLL
        for (int t = 0; t < nt; t++) {
            /* the -32 offset: sum over groups g of scale[g] * 32 * bsums[g] */
            const struct cpu_block_q8k *x = (const struct cpu_block_q8k *)act_at(va, as, t) + i;
            __m256i bs = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums),
                                           _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[i].scales)));
            sumi[t] = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(bs, 5));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x->d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        }
    }
    UNROLL
    for (int t = 0; t < nt; t++)
        out[t] = hsum8(acc[t]);
}

/* ---- float weights against F32 activations ------------------------------------------ */

enum fk_kind { K_F32, K_F16, K_BF16 };

INLINE __m256 load8(enum fk_kind k, const void *w, int64_t i)
{
    if (k == K_F32)
        return _mm256_loadu_ps((const float *)w + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (k == K_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INLINE float load1(enum fk_kind k, const void *w, int64_t i)
{
    if (k == K_F32)
        return ((const float *)w)[i];
    uint16_t h = ((const uint16_t *)w)[i];
    if (k == K_F16)
        return f16(h);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

INLINE void f_impl(enum fk_kind k, int64_t n, const void *w, const void *va, size_t as, const int nt, float *out)
{
    __m256 acc0[CPU_DOT_MAX_TOK], acc1[CPU_DOT_MAX_TOK];
    UNROLL
    for (int t = 0; t < nt; t++)
        acc0[t] = acc1[t] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 w0 = load8(k, w, i), w1 = load8(k, w, i + 8);
        UNROLL
        for (int t = 0; t < nt; t++) {
            const float *x = act_at(va, as, t);
            acc0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), acc0[t]);
            acc1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), acc1[t]);
        }
    }
    UNROLL
    for (int t = 0; t < nt; t++) {
        const float *x = act_at(va, as, t);
        float s = hsum8(_mm256_add_ps(acc0[t], acc1[t]));
        for (int64_t j = i; j < n; j++)
            s += load1(k, w, j) * x[j];
        out[t] = s;
    }
}

/* ---- entry points: one token, and a tile of tokens ------------------------------------- */

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
KERNELS(q4_k, q45k_impl(K_Q4_K, n, w, a, as, nt, out))
KERNELS(q5_k, q45k_impl(K_Q5_K, n, w, a, as, nt, out))
KERNELS(q6_k, q6k_impl(n, w, a, as, nt, out))
KERNELS(f32, f_impl(K_F32, n, w, a, as, nt, out))
KERNELS(f16, f_impl(K_F16, n, w, a, as, nt, out))
KERNELS(bf16, f_impl(K_BF16, n, w, a, as, nt, out))

void cpu_kernels_avx2(struct cpu_kernel_tab *tab)
{
#define SET(T, name)                      \
    tab->dot[T] = name##_dot;             \
    tab->dot_multi[T] = name##_multi
    SET(AARMD_TYPE_Q4_0, q4_0);
    SET(AARMD_TYPE_Q4_1, q4_1);
    SET(AARMD_TYPE_Q5_0, q5_0);
    SET(AARMD_TYPE_Q5_1, q5_1);
    SET(AARMD_TYPE_Q8_0, q8_0);
    SET(AARMD_TYPE_Q4_K, q4_k);
    SET(AARMD_TYPE_Q5_K, q5_k);
    SET(AARMD_TYPE_Q6_K, q6_k);
    SET(AARMD_TYPE_F32, f32);
    SET(AARMD_TYPE_F16, f16);
    SET(AARMD_TYPE_BF16, bf16);
#undef SET
}
#else
typedef int cpu_simd_avx2_empty;   /* ISO C wants a non-empty translation unit */
#endif
