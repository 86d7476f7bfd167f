/*
 * sampler_kern.h — the sampler's loops over the whole vocabulary, written
 * once for any vector width. Private to core/sampler.c, which includes it
 * once per width after defining KW (lanes: 4 or 8), KSUF (name suffix) and
 * KTARGET (a target attribute or nothing). No include guard on purpose.
 *
 * Every loop walks the vocabulary in steps of 16 floats (16 / KW vectors), and
 * sums keep 16 logical lanes reduced in lane order, so each width computes
 * bit-identical results: a machine with AVX2 or AVX-512 draws the same tokens
 * as one without. The polynomial uses fused multiply-adds on every width
 * (K(fma)); nothing else may be contracted (see sampler.c).
 */

#define KCAT_(a, b) a##_##b
#define KCAT(a, b) KCAT_(a, b)
#define K(name) KCAT(name, KSUF)
#define KN (16 / KW)

typedef float K(vf) __attribute__((vector_size(KW * 4)));
typedef int32_t K(vi) __attribute__((vector_size(KW * 4)));

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
 * exp(x) for x <= 0 (-inf included) as 2^t, t = x log2(e) = k + f with
 * |f| <= 1/2: a degree-5 near-minimax polynomial for 2^f with p(0) = 1 (fit
 * 9e-8, 1.8e-7 relative as evaluated in float; one FMA less than Cephes' degree 6),
 * times 2^k through the exponent bits. The rounding of t costs up to |t|
 * 6e-8 relative, so the absolute error stays below 3e-7 of the top token's
 * weight, which is exactly 1. 0 below -87, where float would go subnormal (weights under e^-87
 * never matter next to the top token's 1).
 */
KTARGET static inline __attribute__((always_inline)) void K(exp)(K(vf) *px)
{
    K(vf) x = *px, lo = (K(vf)){0} - 87.0f;
    K(vi) under = x < lo;
    x = (K(vf))(((K(vi))x & ~under) | ((K(vi))lo & under));
    K(vf) t = x * 1.44269504088896341f;
    K(vi) k = __builtin_convertvector(t - 0.5f, K(vi)); /* t <= 0: truncation rounds to nearest */
    K(vf) f = t - __builtin_convertvector(k, K(vf));      /* exact */
    const K(vf) zero = {0};
    K(vf) p = K(fma)(f, zero + 1.32671e-3f, zero + 9.67151e-3f);
    p = K(fma)(p, f, zero + 5.550726e-2f);
    p = K(fma)(p, f, zero + 2.4022242e-1f);
    p = K(fma)(p, f, zero + 6.9314698e-1f);
    p = K(fma)(p, f, zero + 1.0f);
    K(vi) bits = (k + 127) << 23;
    K(vf) scale;
    memcpy(&scale, &bits, sizeof scale);
    K(vf) y = p * scale;
    *px = (K(vf))((K(vi))y & ~under);
}

KTARGET static inline float K(sexp)(float x)
{
    K(vf) v = (K(vf)){0} + x;
    K(exp)(&v);
    return v[0];
}

/* Max over l[0..n), NaN skipped; *has_nan when any. */
KTARGET static float K(clean_max)(const float *l, uint32_t n, bool *has_nan)
{
    enum { A = 32 / KW };   /* independent accumulators: 32 floats per iteration */
    K(vf) m[A];
    K(vi) nan_any = {0};
    for (int a = 0; a < A; a++)
        m[a] = (K(vf)){0} - INFINITY;
    uint32_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int a = 0; a < A; a++) {
            K(vf) v = K(load)(l + i + (uint32_t)a * KW);
            K(vi) gt = v > m[a];   /* NaN compares false: skipped */
            nan_any |= v != v;
            m[a] = (K(vf))(((K(vi))v & gt) | ((K(vi))m[a] & ~gt));
        }
    float max = -INFINITY;
    for (int a = 0; a < A; a++)
        for (int j = 0; j < KW; j++)
            max = m[a][j] > max ? m[a][j] : max;
    bool nan = K(any)(&nan_any);
    for (; i < n; i++) {
        if (l[i] != l[i])
            nan = true;
        else if (l[i] > max)
            max = l[i];
    }
    *has_nan = nan;
    return max;
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

/* blocks[b] (when not NULL) = sum of weights of block b; returns their sum. */
KTARGET static double K(total_mass)(const float *l, uint32_t n, float max, float inv_t, double *blocks)
{
    double z = 0;
    for (uint32_t b = 0, i0 = 0; i0 < n; b++, i0 += BLOCK) {
        uint32_t i1 = n - i0 < BLOCK ? n : i0 + BLOCK;
        K(vf) acc[KN];
        for (int a = 0; a < KN; a++)
            acc[a] = (K(vf)){0};
        uint32_t i = i0;
        for (; i + 16 <= i1; i += 16)
            for (int a = 0; a < KN; a++) {
                K(vf) y = (K(load)(l + i + (uint32_t)a * KW) - max) * inv_t;
                K(exp)(&y);
                acc[a] += y;
            }
        double bs = 0;
        for (int a = 0; a < KN; a++)   /* logical lanes 0..15 in order */
            for (int j = 0; j < KW; j++)
                bs += acc[a][j];
        for (; i < i1; i++)
            bs += K(sexp)((l[i] - max) * inv_t);
        if (blocks)
            blocks[b] = bs;
        z += bs;
    }
    return z;
}

/*
 * total_mass(l, n, max, inv_t, NULL) that also collects, like collect(), the
 * tokens with l >= thr into c (*m of them): one pass over memory, not two.
 */
KTARGET static double K(mass_collect)(const float *l, uint32_t n, float max, float inv_t, float thr,
                                      struct cand *c, uint32_t *m)
{
    double z = 0;
    uint32_t got = 0;
    for (uint32_t i0 = 0; i0 < n; i0 += BLOCK) {
        uint32_t i1 = n - i0 < BLOCK ? n : i0 + BLOCK;
        K(vf) acc[KN];
        for (int a = 0; a < KN; a++)
            acc[a] = (K(vf)){0};
        uint32_t i = i0;
        for (; i + 16 <= i1; i += 16) {
            uint32_t bits = 0;
            for (int a = 0; a < KN; a++) {
                K(vf) v = K(load)(l + i + (uint32_t)a * KW);
                K(vi) ge = v >= thr;
                bits |= K(bits)(&ge) << (a * KW);
                K(vf) y = (v - max) * inv_t;
                K(exp)(&y);
                acc[a] += y;
            }
            got = append_bits(l, i, bits, c, got);
        }
        double bs = 0;
        for (int a = 0; a < KN; a++)
            for (int j = 0; j < KW; j++)
                bs += acc[a][j];
        for (; i < i1; i++) {
            bs += K(sexp)((l[i] - max) * inv_t);
            if (l[i] >= thr)
                c[got++] = (struct cand){.l = l[i], .id = (int32_t)i};
        }
        z += bs;
    }
    *m = got;
    return z;
}

/* c[i].w for i < n; returns their sum, added in candidate order in double. */
KTARGET static double K(cand_weights)(struct cand *c, uint32_t n, float max, float inv_t)
{
    double z = 0;
    uint32_t i = 0;
    for (; i + KW <= n; i += KW) {
        K(vf) y;
        for (int j = 0; j < KW; j++)
            y[j] = c[i + (uint32_t)j].l;
        y = (y - max) * inv_t;
        K(exp)(&y);
        for (int j = 0; j < KW; j++) {
            c[i + (uint32_t)j].w = y[j];
            z += y[j];
        }
    }
    for (; i < n; i++) {
        c[i].w = K(sexp)((c[i].l - max) * inv_t);
        z += c[i].w;
    }
    return z;
}

/* Weights of l[i0..i1) into w[0..i1-i0). */
KTARGET static void K(block_weights)(const float *l, uint32_t i0, uint32_t i1, float max, float inv_t, float *w)
{
    uint32_t i = i0;
    for (; i + KW <= i1; i += KW) {
        K(vf) y = (K(load)(l + i) - max) * inv_t;
        K(exp)(&y);
        memcpy(w + (i - i0), &y, sizeof y);
    }
    for (; i < i1; i++)
        w[i - i0] = K(sexp)((l[i] - max) * inv_t);
}

/* Tokens with l >= thr, ascending id, into c (weights not set); returns how many. */
KTARGET static uint32_t K(collect)(const float *l, uint32_t n, float thr, struct cand *c)
{
    uint32_t m = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        uint32_t bits = 0;
        for (int a = 0; a < KN; a++) {
            K(vi) ge = K(load)(l + i + (uint32_t)a * KW) >= thr;
            bits |= K(bits)(&ge) << (a * KW);
        }
        m = append_bits(l, i, bits, c, m);
    }
    for (; i < n; i++)
        if (l[i] >= thr)
            c[m++] = (struct cand){.l = l[i], .id = (int32_t)i};
    return m;
}

static const struct kern K(kern) = {
    .name = KNAME,
    .clean_max = K(clean_max),
    .find_eq = K(find_eq),
    .total_mass = K(total_mass),
    .block_weights = K(block_weights),
    .collect = K(collect),
    .mass_collect = K(mass_collect),
    .cand_weights = K(cand_weights),
};

#undef K
#undef KN
#undef KCAT
#undef KCAT_
