/*
 * sampler_kern.h — the sampler's loops over the whole vocabulary, written
 * once for any vector width. Private to core/sampler.c, which includes it
 * once per width after defining KW (lanes: 4, 8 or 16), KSUF (name suffix) and
 * KTARGET (a target attribute or nothing). No include guard on purpose.
 *
 * Every loop walks the vocabulary in steps of 16 floats (16 / KW vectors), and
 * sums keep 16 logical lanes (two sets of them in block_mass) reduced in one
 * fixed order (hsum16), so each width computes bit-identical results: a
 * machine with AVX2 or AVX-512 draws the same tokens as one without. The
 * polynomial and the accumulation of weights use fused multiply-adds on every
 * width (K(fma)); nothing else may be contracted (see sampler.c). Where one
 * width uses a different instruction (VREDUCEPS on AVX-512), it computes the
 * same exact value as the others.
 */

#define KCAT_(a, b) a##_##b
#define KCAT(a, b) KCAT_(a, b)
#define K(name) KCAT(name, KSUF)
#define KN (16 / KW)

typedef float K(vf) __attribute__((vector_size(KW * 4)));
typedef int32_t K(vi) __attribute__((vector_size(KW * 4)));
typedef uint32_t K(vu) __attribute__((vector_size(KW * 4)));

KTARGET static inline __attribute__((always_inline)) K(vf) K(load)(const float *p)
{
    K(vf) v;
    memcpy(&v, p, sizeof v);
    return v;
}

KTARGET static inline __attribute__((always_inline)) bool K(any)(const K(vi) *m)
{
#if KW == 16 && defined(__x86_64__)
    __m512i x;
    memcpy(&x, m, sizeof x);
    return _mm512_test_epi32_mask(x, x) != 0;
#elif KW == 8 && defined(__x86_64__)
    __m256 x;
    memcpy(&x, m, sizeof x);
    return _mm256_movemask_ps(x) != 0;
#elif KW == 4 && defined(__SSE2__)
    __m128 x;
    memcpy(&x, m, sizeof x);
    return _mm_movemask_ps(x) != 0;
#else
    int32_t o = 0;
    for (int j = 0; j < KW; j++)
        o |= (*m)[j];
    return o != 0;
#endif
}

/* Bit j set when lane j of m is set (m from a comparison: lanes are 0 or -1). */
KTARGET static inline __attribute__((always_inline)) uint32_t K(bits)(const K(vi) *m)
{
#if KW == 16 && defined(__x86_64__)
    __m512i x;
    memcpy(&x, m, sizeof x);
    return _mm512_test_epi32_mask(x, x);
#elif KW == 8 && defined(__x86_64__)
    __m256 x;
    memcpy(&x, m, sizeof x);
    return (uint32_t)_mm256_movemask_ps(x);
#elif KW == 4 && defined(__SSE2__)
    __m128 x;
    memcpy(&x, m, sizeof x);
    return (uint32_t)_mm_movemask_ps(x);
#else
    uint32_t b = 0;
    for (int j = 0; j < KW; j++)
        b |= (uint32_t)((*m)[j] & 1) << j;
    return b;
#endif
}

/*
 * a*b + c rounded once (fused) in every lane, on every width: the hardware
 * FMA where the target has one, else C99 fmaf (exact, slower) per lane.
 */
KTARGET static inline __attribute__((always_inline)) K(vf) K(fma)(K(vf) a, K(vf) b, K(vf) c)
{
#if KW == 16 && defined(__x86_64__)
    return (K(vf))_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif KW == 8 && defined(__x86_64__)
    return (K(vf))_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#elif KW == 4 && defined(__aarch64__)
    return (K(vf))vfmaq_f32((float32x4_t)c, (float32x4_t)a, (float32x4_t)b);
#else
    K(vf) r;
    for (int j = 0; j < KW; j++)
        r[j] = fmaf(a[j], b[j], c[j]);
    return r;
#endif
}

/*
 * Per lane a > b ? a : b, x86 maxps exactly: when either is NaN, b. So
 * sel_max(v, m) skips a NaN v, and sel_max(c, x) lets a NaN x through.
 */
KTARGET static inline __attribute__((always_inline)) K(vf) K(sel_max)(K(vf) a, K(vf) b)
{
#if KW == 16 && defined(__x86_64__)
    return (K(vf))_mm512_max_ps((__m512)a, (__m512)b);
#elif KW == 8 && defined(__x86_64__)
    return (K(vf))_mm256_max_ps((__m256)a, (__m256)b);
#elif KW == 4 && defined(__SSE2__)
    return (K(vf))_mm_max_ps((__m128)a, (__m128)b);
#else
    K(vf) r;
    for (int j = 0; j < KW; j++)
        r[j] = a[j] > b[j] ? a[j] : b[j];
    return r;
#endif
}

/*
 * 2^t for t <= 0 (-inf included; a NaN stays NaN so that it shows in sums):
 * t is clamped at -127 and rounded to the nearest integer k (ties to even) by
 * adding 1.5 * 2^23 + 127, whose low mantissa bits then hold k + 127, i.e. the
 * exponent field of 2^k; f = t - k in [-1/2, 1/2] goes through a degree-5
 * near-minimax polynomial for 2^f with p(0) = 1 (fit 9e-8, 1.8e-7 relative as
 * evaluated in float, Horner with FMAs). k = -127 gives the float 0, so every
 * t <= -126.5 gives exactly 0 (weights under 2^-126.5 = 8.4e-39 never matter
 * next to the top token's 1); -126.5 < t <= -125.5 may give a subnormal.
 * Callers form t = (l - max) * a, a = log2(e) / T rounded to float; the
 * error bound (3e-7 of the top token's weight) is in docs/SAMPLING.md.
 */
KTARGET static inline __attribute__((always_inline)) K(vf) K(exp2_split)(K(vf) t, K(vf) *scale)
{
    const K(vf) zero = {0}, magic = zero + 12583039.0f;   /* 1.5 * 2^23 + 127 */
    t = K(sel_max)(zero - 127.0f, t);
    K(vf) y = t + magic;
#if KW == 16 && defined(__x86_64__)
    K(vf) f = (K(vf))_mm512_reduce_ps((__m512)t, 0);   /* VREDUCEPS: t - round(t), one instruction */
#else
    K(vf) f = t - (y - magic);   /* both exact, so the same f as VREDUCEPS */
#endif
    K(vf) p = K(fma)(f, zero + 1.32671e-3f, zero + 9.67151e-3f);
    p = K(fma)(p, f, zero + 5.550726e-2f);
    p = K(fma)(p, f, zero + 2.4022242e-1f);
    p = K(fma)(p, f, zero + 6.9314698e-1f);
    p = K(fma)(p, f, zero + 1.0f);
    K(vu) bits;
    memcpy(&bits, &y, sizeof bits);
    bits <<= 23;   /* the bits of 1.5 * 2^23 shift out; (k + 127) << 23 is left */
    memcpy(scale, &bits, sizeof *scale);
    return p;
}

/* The polynomial times 2^k, rounded: 2^t. */
KTARGET static inline __attribute__((always_inline)) K(vf) K(exp2)(K(vf) t)
{
    K(vf) scale, p = K(exp2_split)(t, &scale);
    return p * scale;
}

/* acc + 2^t with one rounding (FMA of the polynomial and 2^k), for sums. */
KTARGET static inline __attribute__((always_inline)) K(vf) K(exp2_acc)(K(vf) t, K(vf) acc)
{
    K(vf) scale, p = K(exp2_split)(t, &scale);
    return K(fma)(p, scale, acc);
}

KTARGET static inline float K(sexp2)(float t)
{
    K(vf) v = K(exp2)((K(vf)){0} + t);
    return v[0];
}

/* First i with l[i] == v (n when none). */
KTARGET static uint32_t K(find_eq)(const float *l, uint32_t n, float v)
{
    uint32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        K(vi) eq = {0};
        for (int a = 0; a < KN; a++)
            eq |= K(load)(l + i + (uint32_t)a * KW) == v;
        if (K(any)(&eq))
            break;
    }
    for (; i < n; i++)
        if (l[i] == v)
            return i;
    return n;
}

/* Max of the 16 logical lanes of m[] (exact whatever the order: no NaN here). */
KTARGET static inline __attribute__((always_inline)) float K(hmax16)(const K(vf) *m)
{
#if KW == 16 && defined(__x86_64__)
    return _mm512_reduce_max_ps((__m512)m[0]);
#elif KW == 8 && defined(__x86_64__)
    __m256 v = _mm256_max_ps((__m256)m[0], (__m256)m[1]);
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
#else
    K(vf) v = m[0];
    for (int q = 1; q < KN; q++)
        v = K(sel_max)(m[q], v);
    float x = v[0];
    for (int j = 1; j < KW; j++)
        x = v[j] > x ? v[j] : x;
    return x;
#endif
}

/*
 * Sum of the 16 logical lanes x[0..16) of acc[] in double, pairwise:
 * d[j] = x[j] + x[j+8], then d[j] += d[j+4], d[j+2], d[j+1]. Every width
 * performs these same additions, so the result is the same bit for bit.
 */
KTARGET static inline __attribute__((always_inline)) double K(hsum16)(const K(vf) *acc)
{
#if KW == 16 && defined(__x86_64__)
    __m512 v = (__m512)acc[0];
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m512d d8 = _mm512_add_pd(lo, hi);
    __m256d d4 = _mm256_add_pd(_mm512_castpd512_pd256(d8), _mm512_extractf64x4_pd(d8, 1));
#elif KW == 8 && defined(__x86_64__)
    __m256 a = (__m256)acc[0], b = (__m256)acc[1];
    __m256d d8lo = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)),
                                 _mm256_cvtps_pd(_mm256_castps256_ps128(b)));
    __m256d d8hi = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)),
                                 _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)));
    __m256d d4 = _mm256_add_pd(d8lo, d8hi);
#endif
#if (KW == 16 || KW == 8) && defined(__x86_64__)
    __m128d d2 = _mm_add_pd(_mm256_castpd256_pd128(d4), _mm256_extractf128_pd(d4, 1));
    return _mm_cvtsd_f64(d2) + _mm_cvtsd_f64(_mm_unpackhi_pd(d2, d2));
#else
    float x[16];
    double d[8];
    memcpy(x, acc, sizeof x);
    for (int j = 0; j < 8; j++)
        d[j] = (double)x[j] + (double)x[j + 8];
    for (int h = 4; h > 0; h /= 2)
        for (int j = 0; j < h; j++)
            d[j] += d[j + h];
    return d[0];
#endif
}

/*
 * One read of the vocabulary from memory: for each block b of BLOCK logits,
 * bmax[b] = its max (NaN skipped; -inf when it has no other value) and, while
 * the block is in L1, bsum[b] = sum of 2^((l - bmax[b]) a) over it (0 when
 * bmax[b] is -inf). A NaN or +inf logit in a block with a finite max makes
 * bsum[b] NaN; *nan_in_empty is set when a block whose max is -inf holds a
 * NaN. Returns the max over all blocks. The caller rescales the sums to the
 * overall max (rescale()); the max is thus found without a separate pass.
 *
 * Summation order (the same on every width): 16-float group g of a block
 * adds into float accumulator set g & 1 (16 lanes each; two sets keep two
 * exponentials in flight); at the block's end set 1 is added to set 0 lane by
 * lane, hsum16 reduces that in double, and the block's last n % 16 logits (the
 * vocabulary's tail) are added one by one.
 */
/* Max over l[0..n), NaN skipped; *has_nan when any; bmax[b] (when not NULL) = max of block b. */
KTARGET static float K(clean_max)(const float *l, uint32_t n, bool *has_nan, float *bmax)
{
    enum { A = 32 / KW };   /* independent accumulators: 32 floats per iteration */
    K(vi) nan_any = {0};
    float max = -INFINITY;
    bool nan = false;
    for (uint32_t b = 0, i0 = 0; i0 < n; b++, i0 += BLOCK) {
        uint32_t i1 = n - i0 < BLOCK ? n : i0 + BLOCK, i = i0;
        K(vf) m[A];
        for (int a = 0; a < A; a++)
            m[a] = (K(vf)){0} - INFINITY;
        for (; i + 32 <= i1; i += 32)
            for (int a = 0; a < A; a++) {
                K(vf) v = K(load)(l + i + (uint32_t)a * KW);
                nan_any |= v != v;
                m[a] = K(sel_max)(v, m[a]);
            }
        float bm = K(hmax16)(m);
        float bm2 = K(hmax16)(m + KN);
        bm = bm2 > bm ? bm2 : bm;
        for (; i < i1; i++) {
            if (l[i] != l[i])
                nan = true;
            else if (l[i] > bm)
                bm = l[i];
        }
        if (bmax)
            bmax[b] = bm;
        max = bm > max ? bm : max;
    }
    *has_nan = nan || K(any)(&nan_any);
    return max;
}

/* Max of l[i0..i1), NaN skipped (-inf when nothing else). */
KTARGET static float K(range_max)(const float *l, uint32_t i0, uint32_t i1)
{
    K(vf) m[KN];
    for (int q = 0; q < KN; q++)
        m[q] = (K(vf)){0} - INFINITY;
    uint32_t i = i0;
    for (; i + 16 <= i1; i += 16)
        for (int q = 0; q < KN; q++)
            m[q] = K(sel_max)(K(load)(l + i + (uint32_t)q * KW), m[q]);
    float bm = K(hmax16)(m);
    for (; i < i1; i++)
        bm = l[i] > bm ? l[i] : bm;
    return bm;
}

KTARGET static float K(block_mass)(const float *l, uint32_t n, float a, float *bmax, double *bsum,
                                   bool *nan_in_empty)
{
    float gmax = -INFINITY, bm_next = K(range_max)(l, 0, n < BLOCK ? n : BLOCK);
    bool nan_empty = false;
    for (uint32_t b = 0, i0 = 0; i0 < n; b++, i0 += BLOCK) {
        uint32_t i1 = n - i0 < BLOCK ? n : i0 + BLOCK, j1 = n - i1 < BLOCK ? n : i1 + BLOCK, i;
        float bm = bm_next;
        bmax[b] = bm;
        if (bm == -INFINITY) {
            for (i = i0; i < i1; i++)
                nan_empty |= l[i] != l[i];
            bsum[b] = 0;
            bm_next = K(range_max)(l, i1, j1);
            continue;
        }
        gmax = bm > gmax ? bm : gmax;
        K(vf) acc0[KN], acc1[KN];
        for (int q = 0; q < KN; q++)
            acc0[q] = acc1[q] = (K(vf)){0};
        if (j1 - i1 == BLOCK) {
            /* a full block follows: its max is taken here, its loads overlapping this block's arithmetic */
            K(vf) m[KN];
            for (int q = 0; q < KN; q++)
                m[q] = (K(vf)){0} - INFINITY;
            for (i = i0; i < i1; i += 32)
                for (int q = 0; q < KN; q++) {
                    acc0[q] = K(exp2_acc)((K(load)(l + i + (uint32_t)q * KW) - bm) * a, acc0[q]);
                    acc1[q] = K(exp2_acc)((K(load)(l + i + 16 + (uint32_t)q * KW) - bm) * a, acc1[q]);
                    m[q] = K(sel_max)(K(load)(l + i + BLOCK + (uint32_t)q * KW), m[q]);
                    m[q] = K(sel_max)(K(load)(l + i + BLOCK + 16 + (uint32_t)q * KW), m[q]);
                }
            bm_next = K(hmax16)(m);
        } else {
            for (i = i0; i + 32 <= i1; i += 32)
                for (int q = 0; q < KN; q++) {
                    acc0[q] = K(exp2_acc)((K(load)(l + i + (uint32_t)q * KW) - bm) * a, acc0[q]);
                    acc1[q] = K(exp2_acc)((K(load)(l + i + 16 + (uint32_t)q * KW) - bm) * a, acc1[q]);
                }
            for (; i + 16 <= i1; i += 16)
                for (int q = 0; q < KN; q++)
                    acc0[q] = K(exp2_acc)((K(load)(l + i + (uint32_t)q * KW) - bm) * a, acc0[q]);
            bm_next = K(range_max)(l, i1, j1);
        }
        for (int q = 0; q < KN; q++)
            acc0[q] += acc1[q];
        double bs = K(hsum16)(acc0);
        for (; i < i1; i++)
            bs += K(sexp2)((l[i] - bm) * a);
        bsum[b] = bs;
    }
    *nan_in_empty = nan_empty;
    return gmax;
}

/*
 * bsum[b] *= 2^((bmax[b] - max) a) for b < nb: block sums relative to the
 * overall max (finite); returns their total, added in block order in double.
 */
KTARGET static double K(rescale)(const float *bmax, double *bsum, uint32_t nb, float max, float a)
{
    double z = 0;
    uint32_t b = 0;
    for (; b + KW <= nb; b += KW) {
        K(vf) s = K(exp2)((K(load)(bmax + b) - max) * a);
        for (int j = 0; j < KW; j++) {
            bsum[b + (uint32_t)j] *= (double)s[j];
            z += bsum[b + (uint32_t)j];
        }
    }
    for (; b < nb; b++) {
        bsum[b] *= (double)K(sexp2)((bmax[b] - max) * a);
        z += bsum[b];
    }
    return z;
}

/* c[i].w for i < n; returns their sum, added in candidate order in double. */
KTARGET static double K(cand_weights)(struct cand *c, uint32_t n, float max, float a)
{
    double z = 0;
    uint32_t i = 0;
    for (; i + KW <= n; i += KW) {
        K(vf) y;
        for (int j = 0; j < KW; j++)
            y[j] = c[i + (uint32_t)j].l;
        y = K(exp2)((y - max) * a);
        for (int j = 0; j < KW; j++) {
            c[i + (uint32_t)j].w = y[j];
            z += y[j];
        }
    }
    for (; i < n; i++) {
        c[i].w = K(sexp2)((c[i].l - max) * a);
        z += c[i].w;
    }
    return z;
}

/* Weights of l[i0..i1) into w[0..i1-i0). */
KTARGET static void K(block_weights)(const float *l, uint32_t i0, uint32_t i1, float max, float a, float *w)
{
    uint32_t i = i0;
    for (; i + KW <= i1; i += KW) {
        K(vf) y = K(exp2)((K(load)(l + i) - max) * a);
        memcpy(w + (i - i0), &y, sizeof y);
    }
    for (; i < i1; i++)
        w[i - i0] = K(sexp2)((l[i] - max) * a);
}

/*
 * append_bits for the 16 logits at l + i: on AVX-512 without a branch per
 * token (VCOMPRESSPS/D, then four stores of four candidates each; c needs 16
 * entries of slack past the last candidate). Same candidates, same order.
 */
KTARGET static inline __attribute__((always_inline)) uint32_t K(append16)(const float *l, uint32_t i, uint32_t bits,
                                                                         struct cand *c, uint32_t m)
{
#if KW == 16 && defined(__x86_64__)
    _Static_assert(sizeof(struct cand) == 16 && offsetof(struct cand, l) == 0 && offsetof(struct cand, id) == 8,
                   "append16 writes candidates as {l, 0, id, 0}");
    if (!bits)
        return m;
    __mmask16 k = (__mmask16)bits;
    __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512 lv = _mm512_maskz_compress_ps(k, _mm512_loadu_ps(l + i));
    __m512 iv = _mm512_castsi512_ps(_mm512_maskz_compress_epi32(k, _mm512_add_epi32(_mm512_set1_epi32((int)i), iota)));
    for (int q = 0; q < 4; q++) {
        /* dword 4r = l of candidate 4q + r, dword 4r + 2 = its id (index 16 + ... picks from iv), others 0 */
        __m512i idx = _mm512_set_epi32(0, 16 + 4 * q + 3, 0, 4 * q + 3, 0, 16 + 4 * q + 2, 0, 4 * q + 2,
                                       0, 16 + 4 * q + 1, 0, 4 * q + 1, 0, 16 + 4 * q, 0, 4 * q);
        _mm512_storeu_ps(c + m + 4 * q, _mm512_maskz_permutex2var_ps(0x5555, lv, idx, iv));
    }
    return m + (uint32_t)__builtin_popcount(bits);
#else
    return append_bits(l, i, bits, c, m);
#endif
}

/* Appends the tokens of l[i0..i1) with l >= thr, ascending id, to c[m..); returns the new count. */
KTARGET static inline uint32_t K(collect_range)(const float *l, uint32_t i0, uint32_t i1, float thr,
                                                struct cand *c, uint32_t m)
{
    uint32_t i = i0;
    for (; i + 16 <= i1; i += 16) {
        uint32_t bits = 0;
        for (int q = 0; q < KN; q++) {
            K(vi) ge = K(load)(l + i + (uint32_t)q * KW) >= thr;
            bits |= K(bits)(&ge) << (q * KW);
        }
        m = K(append16)(l, i, bits, c, m);
    }
    for (; i < i1; i++)
        if (l[i] >= thr)
            c[m++] = (struct cand){.l = l[i], .id = (int32_t)i};
    return m;
}

/*
 * Appends the tokens with lo <= l < hi, ascending id, to c[m..) (weights not
 * set), reading only the blocks whose max (bmax[]) reaches lo; returns the new count.
 */
KTARGET static uint32_t K(collect_band)(const float *l, uint32_t n, const float *bmax, float lo, float hi,
                                        struct cand *c, uint32_t m)
{
    for (uint32_t b = 0, i0 = 0; i0 < n; b++, i0 += BLOCK) {
        if (!(bmax[b] >= lo))
            continue;
        uint32_t i1 = n - i0 < BLOCK ? n : i0 + BLOCK, i = i0;
        for (; i + 16 <= i1; i += 16) {
            uint32_t bits = 0;
            for (int q = 0; q < KN; q++) {
                K(vf) v = K(load)(l + i + (uint32_t)q * KW);
                K(vi) in = (v >= lo) & (v < hi);
                bits |= K(bits)(&in) << (q * KW);
            }
            m = K(append16)(l, i, bits, c, m);
        }
        for (; i < i1; i++)
            if (l[i] >= lo && l[i] < hi)
                c[m++] = (struct cand){.l = l[i], .id = (int32_t)i};
    }
    return m;
}

/* Tokens with l >= thr, ascending id, into c (weights not set); returns how many. */
KTARGET static uint32_t K(collect)(const float *l, uint32_t n, float thr, struct cand *c)
{
    return K(collect_range)(l, 0, n, thr, c, 0);
}

/* collect(), reading only the blocks whose max (bmax[], from block_mass) reaches thr. */
KTARGET static uint32_t K(collect_blocks)(const float *l, uint32_t n, const float *bmax, float thr, struct cand *c)
{
    uint32_t m = 0;
    for (uint32_t b = 0, i0 = 0; i0 < n; b++, i0 += BLOCK)
        if (bmax[b] >= thr)
            m = K(collect_range)(l, i0, n - i0 < BLOCK ? n : i0 + BLOCK, thr, c, m);
    return m;
}

static const struct kern K(kern) = {
    .name = KNAME,
    .clean_max = K(clean_max),
    .find_eq = K(find_eq),
    .block_weights = K(block_weights),
    .collect = K(collect),
    .block_mass = K(block_mass),
    .rescale = K(rescale),
    .collect_blocks = K(collect_blocks),
    .collect_band = K(collect_band),
    .cand_weights = K(cand_weights),
};

#undef K
#undef KN
#undef KCAT
#undef KCAT_
