/*
 * ops.c — per-vector primitives of the CPU decoder (ops.h): norms, rotary
 * embedding, activations, softcap and single-query attention. No matmuls
 * (kernels.c) and no knowledge of layers or batches (forward.c).
 */
#include "ops.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

void cpu_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / n + eps));
    if (w) {
        for (int i = 0; i < n; i++)
            out[i] = x[i] * r * w[i];
    } else {
        for (int i = 0; i < n; i++)
            out[i] = x[i] * r;
    }
}

void cpu_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps)
{
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < n; i++)
        mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) {
        double d = x[i] - mean;
        var += d * d;
    }
    var /= n;
    float r = (float)(1.0 / sqrt(var + eps));
    float m = (float)mean;
    for (int i = 0; i < n; i++) {
        float y = (x[i] - m) * r;
        if (w)
            y *= w[i];
        if (b)
            y += b[i];
        out[i] = y;
    }
}

void cpu_add(float *y, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += x[i];
}

void cpu_scale(float *x, float s, int n)
{
    for (int i = 0; i < n; i++)
        x[i] *= s;
}

void cpu_softcap(float *x, int n, float cap)
{
    if (cap <= 0.0f)
        return;
    for (int i = 0; i < n; i++)
        x[i] = cap * tanhf(x[i] / cap);
}

void cpu_softmax(float *x, int n)
{
    float m = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > m)
            m = x[i];
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    float r = (float)(1.0 / s);
    for (int i = 0; i < n; i++)
        x[i] *= r;
}

float cpu_gelu(float x)
{
    const float c = 0.7978845608028654f;   /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}

float cpu_silu(float x)
{
    return x / (1.0f + expf(-x));
}

#if defined(__x86_64__)
/* AVX2 activations: exp by range reduction to [-ln2/2, ln2/2] and Cephes'
 * degree-6 polynomial (about 1 ulp), tanh as 1 - 2/(e^2u + 1). The scalar
 * expf/tanhf calls were 7% of a prefill profile; gelu is written as
 * x / (1 + e^-2u), the same function without tanh's cancellation near -1. Results differ from the
 * scalar ones in the last bits only (tests bound it). */
#define ACT_TARGET __attribute__((target("avx2,fma")))

ACT_TARGET static inline __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);   /* ln2 in two parts */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));   /* n in [-126, 127]: a normal power of two */
}

ACT_TARGET static inline __m256 silu8(__m256 x)
{
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

ACT_TARGET static inline __m256 gelu8(__m256 x)
{
    const __m256 k = _mm256_set1_ps(0.044715f);
    /* 0.5 x (1 + tanh u) = x / (1 + e^-2u): no cancellation where tanh u is near -1 */
    __m256 m2c = _mm256_set1_ps(-2.0f * 0.7978845608028654f);
    __m256 m2u = _mm256_mul_ps(m2c, _mm256_fmadd_ps(_mm256_mul_ps(k, x), _mm256_mul_ps(x, x), x));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(m2u)));
}

/* Elements [0, n - n % 8) of g = act(g) * u (u NULL: g = act(g)); returns how many it did. */
ACT_TARGET static int act_avx2(float *g, const float *u, int n, int gelu)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 a = gelu ? gelu8(x) : silu8(x);
        if (u)
            a = _mm256_mul_ps(a, _mm256_loadu_ps(u + i));
        _mm256_storeu_ps(g + i, a);
    }
    return i;
}

/* x[i] = exp(x[i] - m) for the whole vectors of x; returns how many it did. */
ACT_TARGET static int exp_sub_avx2(float *x, int n, float m)
{
    __m256 vm = _mm256_set1_ps(m);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm)));
    return i;
}

static int ops_have_avx2(void)
{
    static int v = -1;   /* racy but idempotent */
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return v;
}
#endif

void cpu_gated_act(float *g, const float *u, int n, int gelu)
{
#if defined(__x86_64__)
    if (ops_have_avx2()) {
        int done = act_avx2(g, u, n, gelu);
        g += done;
        u += done;
        n -= done;
    }
#endif
    if (gelu) {
        for (int i = 0; i < n; i++)
            g[i] = cpu_gelu(g[i]) * u[i];
    } else {
        for (int i = 0; i < n; i++)
            g[i] = cpu_silu(g[i]) * u[i];
    }
}

void cpu_gelu_vec(float *x, int n)
{
#if defined(__x86_64__)
    if (ops_have_avx2()) {
        int done = act_avx2(x, NULL, n, 1);
        x += done;
        n -= done;
    }
#endif
    for (int i = 0; i < n; i++)
        x[i] = cpu_gelu(x[i]);
}

/* ---- rotary embedding ---------------------------------------------------- */

static float yarn_corr_dim(int n_rot, uint32_t n_ctx_orig, float beta, float base)
{
    return (float)n_rot * logf((float)n_ctx_orig / (beta * 2.0f * (float)M_PI)) / (2.0f * logf(base));
}

void cpu_rope_init(struct cpu_rope *r, const struct aarmd_model_desc *d, float freq_base,
                   const float *freq_factors)
{
    memset(r, 0, sizeof *r);
    r->kind = (int)d->rope_kind;
    r->n_rot = (int)d->n_rot;
    r->freq_base = freq_base;
    r->freq_scale = 1.0f;
    r->attn_factor = 1.0f;
    r->freq_factors = freq_factors;
    if ((d->rope_scaling == AARMD_ROPE_SCALING_LINEAR || d->rope_scaling == AARMD_ROPE_SCALING_YARN) &&
        d->rope_scale > 0.0f)
        r->freq_scale = 1.0f / d->rope_scale;
    if (d->rope_scaling == AARMD_ROPE_SCALING_YARN) {
        r->ext_factor = d->yarn_ext_factor;
        r->attn_factor = d->yarn_attn_factor > 0.0f ? d->yarn_attn_factor : 1.0f;
        uint32_t orig = d->rope_orig_ctx ? d->rope_orig_ctx : d->n_ctx_train;
        float lo = floorf(yarn_corr_dim(r->n_rot, orig, d->yarn_beta_fast, freq_base));
        float hi = ceilf(yarn_corr_dim(r->n_rot, orig, d->yarn_beta_slow, freq_base));
        r->corr_low = lo > 0.0f ? lo : 0.0f;
        r->corr_high = hi < (float)(r->n_rot - 1) ? hi : (float)(r->n_rot - 1);
    }
}

void cpu_rope_llama3_factors(const struct aarmd_model_desc *d, float *out)
{
    int half = (int)d->n_rot / 2;
    double factor = d->rope_scale > 0.0f ? d->rope_scale : 1.0;
    double lo_f = d->llama3_low_freq_factor > 0.0f ? d->llama3_low_freq_factor : 1.0;
    double hi_f = d->llama3_high_freq_factor > 0.0f ? d->llama3_high_freq_factor : 4.0;
    double orig = d->rope_orig_ctx ? d->rope_orig_ctx : 8192;
    double low_wavelen = orig / lo_f, high_wavelen = orig / hi_f;
    for (int i = 0; i < half; i++) {
        double freq = pow(d->rope_freq_base, -2.0 * i / (double)d->n_rot);
        double wavelen = 2.0 * M_PI / freq;
        double f;
        if (wavelen < high_wavelen) {
            f = 1.0;
        } else if (wavelen > low_wavelen) {
            f = factor;
        } else {
            double smooth = (orig / wavelen - lo_f) / (hi_f - lo_f);
            f = 1.0 / ((1.0 - smooth) / factor + smooth);
        }
        out[i] = (float)f;
    }
}

void cpu_rope_cos_sin(const struct cpu_rope *r, int32_t pos, float *cs)
{
    int half = r->n_rot / 2;
    for (int i = 0; i < half; i++) {
        double extrap = (double)pos * pow(r->freq_base, -2.0 * i / (double)r->n_rot);
        if (r->freq_factors)
            extrap /= r->freq_factors[i];
        double theta = r->freq_scale * extrap;
        double mscale = r->attn_factor;
        if (r->ext_factor != 0.0f) {
            double span = r->corr_high - r->corr_low;
            double y = (i - r->corr_low) / (span > 0.001 ? span : 0.001);
            double ramp = 1.0 - fmin(1.0, fmax(0.0, y));
            double mix = ramp * r->ext_factor;
            theta = theta * (1.0 - mix) + extrap * mix;
            mscale *= 1.0 + 0.1 * log(1.0 / r->freq_scale);
        }
        cs[2 * i] = (float)(cos(theta) * mscale);
        cs[2 * i + 1] = (float)(sin(theta) * mscale);
    }
}

void cpu_rope_apply(const struct cpu_rope *r, const float *cs, float *v, int n_heads, int head_dim)
{
    int half = r->n_rot / 2;
    for (int h = 0; h < n_heads; h++) {
        float *x = v + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            int a = r->kind == AARMD_ROPE_NEOX ? i : 2 * i;
            int b = r->kind == AARMD_ROPE_NEOX ? i + half : 2 * i + 1;
            float c = cs[2 * i], s = cs[2 * i + 1];
            float x0 = x[a], x1 = x[b];
            x[a] = x0 * c - x1 * s;
            x[b] = x0 * s + x1 * c;
        }
    }
}

/* ---- attention ------------------------------------------------------------ */

static float dot_row(const struct cpu_kv *kv, const void *row, const float *q, int n)
{
    float s = 0.0f;
    if (kv->type == AARMD_TYPE_F16) {
        const uint16_t *h = row;
        for (int i = 0; i < n; i++)
            s += q[i] * cpu_f16_lut[h[i]];
    } else {
        const float *f = row;
        for (int i = 0; i < n; i++)
            s += q[i] * f[i];
    }
    return s;
}

static void axpy_row(const struct cpu_kv *kv, const void *row, float w, float *acc, int n)
{
    if (kv->type == AARMD_TYPE_F16) {
        const uint16_t *h = row;
        for (int i = 0; i < n; i++)
            acc[i] += w * cpu_f16_lut[h[i]];
    } else {
        const float *f = row;
        for (int i = 0; i < n; i++)
            acc[i] += w * f[i];
    }
}

#if defined(__x86_64__)
/* AVX2 + F16C versions (8 lanes; a scalar tail for head_dim % 8). Compiled
 * for those extensions only here and called only when the context's SIMD
 * level says the CPU has them. */
#define CPU_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

CPU_TARGET_AVX2 static inline __m256 load8(const struct cpu_kv *kv, const void *row, int i)
{
    if (kv->type == AARMD_TYPE_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    return _mm256_loadu_ps((const float *)row + i);
}

CPU_TARGET_AVX2 static float dot_row_avx2(const struct cpu_kv *kv, const void *row, const float *q, int n)
{
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8(kv, row, i), acc);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    float s = _mm_cvtss_f32(s4);
    for (; i < n; i++)
        s += q[i] * (kv->type == AARMD_TYPE_F16 ? cpu_f16_lut[((const uint16_t *)row)[i]] : ((const float *)row)[i]);
    return s;
}

CPU_TARGET_AVX2 static void axpy_row_avx2(const struct cpu_kv *kv, const void *row, float w, float *acc, int n)
{
    __m256 vw = _mm256_set1_ps(w);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(vw, load8(kv, row, i), _mm256_loadu_ps(acc + i)));
    for (; i < n; i++)
        acc[i] += w * (kv->type == AARMD_TYPE_F16 ? cpu_f16_lut[((const uint16_t *)row)[i]] : ((const float *)row)[i]);
}
#endif

/* Keys are scored a block at a time: one max and one rescale per block, and
 * the exponentials of a block in one vector pass, instead of an expf (and a
 * possible rescale of out) per key. */
#define ATT_BLOCK 64

/* x[i] = exp(x[i] - m) for i < n; returns their sum. */
static float exp_sub_sum(float *x, int n, float m, int vec)
{
    float sum = 0.0f;
    int i = 0;
#if defined(__x86_64__)
    if (vec && ops_have_avx2())
        i = exp_sub_avx2(x, n, m);
#else
    (void)vec;
#endif
    for (; i < n; i++)
        x[i] = expf(x[i] - m);
    for (i = 0; i < n; i++)
        sum += x[i];
    return sum;
}

void cpu_attend(const struct cpu_kv *kv, int layer, int kvh, const float *q, int head_dim,
                int32_t j0, int32_t j1, float scale, float softcap, int vec, float *out)
{
    size_t off = (size_t)kvh * (size_t)head_dim * kv->elt;
    float m = -INFINITY, sum = 0.0f;
    float sc[ATT_BLOCK];
#if defined(__x86_64__)
    float (*dot)(const struct cpu_kv *, const void *, const float *, int) = vec ? dot_row_avx2 : dot_row;
    void (*axpy)(const struct cpu_kv *, const void *, float, float *, int) = vec ? axpy_row_avx2 : axpy_row;
#else
    float (*dot)(const struct cpu_kv *, const void *, const float *, int) = dot_row;
    void (*axpy)(const struct cpu_kv *, const void *, float, float *, int) = axpy_row;
#endif
    memset(out, 0, (size_t)head_dim * sizeof(float));
    for (int32_t jb = j0; jb <= j1; jb += ATT_BLOCK) {
        int nb = j1 - jb + 1 < ATT_BLOCK ? (int)(j1 - jb + 1) : ATT_BLOCK;
        float bm = -INFINITY;
        for (int b = 0; b < nb; b++) {
            float s = dot(kv, (const char *)cpu_kv_k_row(kv, layer, jb + b) + off, q, head_dim) * scale;
            if (softcap > 0.0f)
                s = softcap * tanhf(s / softcap);
            sc[b] = s;
            bm = s > bm ? s : bm;
        }
        if (bm > m) {
            /* new running max: rescale what was accumulated under the old one */
            float c = expf(m - bm);
            sum *= c;
            cpu_scale(out, c, head_dim);
            m = bm;
        }
        sum += exp_sub_sum(sc, nb, m, vec);
        for (int b = 0; b < nb; b++)
            axpy(kv, (const char *)cpu_kv_v_row(kv, layer, jb + b) + off, sc[b], out, head_dim);
    }
    if (sum > 0.0f)
        cpu_scale(out, 1.0f / sum, head_dim);
}

/* ---- grouped-query attention ------------------------------------------------ */

#if defined(__x86_64__)
#define ATT_GROUP_MAX 8
#define GRP_TARGET __attribute__((target("avx2,fma,f16c")))

GRP_TARGET static inline __m256 kv_load8(const int f16, const void *row, int i)
{
    if (f16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    return _mm256_loadu_ps((const float *)row + i);
}

#define GRP_UNROLL _Pragma("GCC unroll 8")
#define GRP_KEYS_MAX 4   /* keys scored at once (kb) */
#define GRP_LANES_MAX 4  /* 8-lane chunks of out accumulated at once (ni) */

/* A key's score from its 8-lane dot accumulator: the same reduction, scale
 * and softcap for every key, whichever loop scored it. */
GRP_TARGET static inline __attribute__((always_inline)) float score8(__m256 acc, float scale, float softcap)
{
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    float s = _mm_cvtss_f32(s4) * scale;
    if (softcap > 0.0f)
        s = softcap * tanhf(s / softcap);
    return s;
}

/* score8 of four accumulators at once, into out[0..3]: the same additions in
 * the same pairing as score8 ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)), done for
 * four keys side by side, so the same bits in a quarter of the shuffles. */
GRP_TARGET static inline __attribute__((always_inline)) void score8x4(__m256 a, __m256 b, __m256 c, __m256 d,
                                                                     float scale, float softcap, float *out)
{
    __m256 ab = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
    __m256 cd = _mm256_add_ps(_mm256_permute2f128_ps(c, d, 0x20), _mm256_permute2f128_ps(c, d, 0x31));
    /* ab = [a lo+hi | b lo+hi], cd likewise; pair element k with k + 2 */
    __m256 r = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    r = _mm256_hadd_ps(r, r);                        /* lo: [a, c, a, c], hi: [b, d, b, d] */
    __m128 s4 = _mm_unpacklo_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
    _mm_storeu_ps(out, _mm_mul_ps(s4, _mm_set1_ps(scale)));
    if (softcap > 0.0f)
        for (int u = 0; u < 4; u++)
            out[u] = softcap * tanhf(out[u] / softcap);
}

/* nq and f16 are constants at every call site (the switch below) and the head
 * loops are unrolled, so a key's per-head accumulators live in registers. */
GRP_TARGET static inline __attribute__((always_inline)) void
attend_group_avx2(const struct cpu_kv *kv, int layer, int kvh, const float *q, const int nq, const int f16, int hd,
                  int32_t j0, int32_t j1, float scale, float softcap, float *out)
{
    size_t off = (size_t)kvh * (size_t)hd * kv->elt;
    float m[ATT_GROUP_MAX], sum[ATT_GROUP_MAX];
    float sc[ATT_GROUP_MAX][ATT_BLOCK];
    /* register budget (16 ymm): kb * nq score and ni * nq output accumulators */
    const int kb = nq <= 3 ? 4 : nq == 4 ? 3 : nq <= 6 ? 2 : 1;
    const int ni = nq <= 2 ? 4 : nq <= 5 ? 2 : 1;
    GRP_UNROLL
    for (int g = 0; g < nq; g++) {
        m[g] = -INFINITY;
        sum[g] = 0.0f;
    }
    memset(out, 0, (size_t)nq * (size_t)hd * sizeof(float));
    for (int32_t jb = j0; jb <= j1; jb += ATT_BLOCK) {
        int nb = j1 - jb + 1 < ATT_BLOCK ? (int)(j1 - jb + 1) : ATT_BLOCK;
        /* scores kb keys at a time: each q vector load feeds kb keys and the
         * kb * nq accumulators are independent chains (one per (key, head),
         * each summed over i in the same order as a key alone: same bits) */
        int bk = 0;
        for (; bk + kb <= nb; bk += kb) {
            const void *kr[GRP_KEYS_MAX];
            __m256 acc[GRP_KEYS_MAX][ATT_GROUP_MAX];
            GRP_UNROLL
            for (int u = 0; u < kb; u++) {
                kr[u] = (const char *)cpu_kv_k_row(kv, layer, jb + bk + u) + off;
                GRP_UNROLL
                for (int g = 0; g < nq; g++)
                    acc[u][g] = _mm256_setzero_ps();
            }
            for (int i = 0; i < hd; i += 8) {
                __m256 kk[GRP_KEYS_MAX];
                GRP_UNROLL
                for (int u = 0; u < kb; u++)
                    kk[u] = kv_load8(f16, kr[u], i);
                GRP_UNROLL
                for (int g = 0; g < nq; g++) {
                    __m256 qv = _mm256_loadu_ps(q + (size_t)g * (size_t)hd + i);
                    GRP_UNROLL
                    for (int u = 0; u < kb; u++)
                        acc[u][g] = _mm256_fmadd_ps(qv, kk[u], acc[u][g]);
                }
            }
            if (kb == 4) {
                GRP_UNROLL
                for (int g = 0; g < nq; g++)
                    score8x4(acc[0][g], acc[1][g], acc[2][g], acc[3][g], scale, softcap, &sc[g][bk]);
            } else {
                GRP_UNROLL
                for (int u = 0; u < kb; u++) {
                    GRP_UNROLL
                    for (int g = 0; g < nq; g++)
                        sc[g][bk + u] = score8(acc[u][g], scale, softcap);
                }
            }
        }
        for (; bk < nb; bk++) {
            const void *kr = (const char *)cpu_kv_k_row(kv, layer, jb + bk) + off;
            __m256 acc[ATT_GROUP_MAX];
            GRP_UNROLL
            for (int g = 0; g < nq; g++)
                acc[g] = _mm256_setzero_ps();
            for (int i = 0; i < hd; i += 8) {
                __m256 kk = kv_load8(f16, kr, i);
                GRP_UNROLL
                for (int g = 0; g < nq; g++)
                    acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)g * (size_t)hd + i), kk, acc[g]);
            }
            GRP_UNROLL
            for (int g = 0; g < nq; g++)
                sc[g][bk] = score8(acc[g], scale, softcap);
        }
        /* block max and sum with the heads interleaved (nq independent chains
         * instead of one after another); each head's own order is unchanged */
        float bm[ATT_GROUP_MAX];
        GRP_UNROLL
        for (int g = 0; g < nq; g++)
            bm[g] = -INFINITY;
        for (int b = 0; b < nb; b++) {
            GRP_UNROLL
            for (int g = 0; g < nq; g++)
                bm[g] = sc[g][b] > bm[g] ? sc[g][b] : bm[g];
        }
        for (int g = 0; g < nq; g++) {
            if (bm[g] > m[g]) {
                float c = expf(m[g] - bm[g]);
                sum[g] *= c;
                cpu_scale(out + (size_t)g * (size_t)hd, c, hd);
                m[g] = bm[g];
            }
            int done = exp_sub_avx2(sc[g], nb, m[g]);
            for (int b = done; b < nb; b++)
                sc[g][b] = expf(sc[g][b] - m[g]);
        }
        for (int b = 0; b < nb; b++) {
            GRP_UNROLL
            for (int g = 0; g < nq; g++)
                sum[g] += sc[g][b];
        }
        /* out += sum_b w_b v_b: the V rows of the block through the block table
         * once, then 8 lanes of every head at a time over all nb keys in
         * registers (each lane still sums the keys in order: the same bits as
         * one key at a time, without a load and store of out per key) */
        const char *vr[ATT_BLOCK];
        for (int b = 0; b < nb; b++)
            vr[b] = (const char *)cpu_kv_v_row(kv, layer, jb + b) + off;
        /* ni chunks of 8 lanes at once: ni * nq independent chains (each lane
         * still one chain over the keys in order) */
        int i = 0;
        for (; i + 8 * ni <= hd; i += 8 * ni) {
            __m256 acc[GRP_LANES_MAX][ATT_GROUP_MAX];
            GRP_UNROLL
            for (int c = 0; c < ni; c++) {
                GRP_UNROLL
                for (int g = 0; g < nq; g++)
                    acc[c][g] = _mm256_loadu_ps(out + (size_t)g * (size_t)hd + i + 8 * c);
            }
            for (int b2 = 0; b2 < nb; b2++) {
                __m256 vv[GRP_LANES_MAX];
                GRP_UNROLL
                for (int c = 0; c < ni; c++)
                    vv[c] = kv_load8(f16, vr[b2], i + 8 * c);
                GRP_UNROLL
                for (int g = 0; g < nq; g++) {
                    __m256 w = _mm256_broadcast_ss(&sc[g][b2]);
                    GRP_UNROLL
                    for (int c = 0; c < ni; c++)
                        acc[c][g] = _mm256_fmadd_ps(w, vv[c], acc[c][g]);
                }
            }
            GRP_UNROLL
            for (int c = 0; c < ni; c++) {
                GRP_UNROLL
                for (int g = 0; g < nq; g++)
                    _mm256_storeu_ps(out + (size_t)g * (size_t)hd + i + 8 * c, acc[c][g]);
            }
        }
        for (; i < hd; i += 8) {
            __m256 acc[ATT_GROUP_MAX];
            GRP_UNROLL
            for (int g = 0; g < nq; g++)
                acc[g] = _mm256_loadu_ps(out + (size_t)g * (size_t)hd + i);
            for (int b2 = 0; b2 < nb; b2++) {
                __m256 vv = kv_load8(f16, vr[b2], i);
                GRP_UNROLL
                for (int g = 0; g < nq; g++)
                    acc[g] = _mm256_fmadd_ps(_mm256_broadcast_ss(&sc[g][b2]), vv, acc[g]);
            }
            GRP_UNROLL
            for (int g = 0; g < nq; g++)
                _mm256_storeu_ps(out + (size_t)g * (size_t)hd + i, acc[g]);
        }
    }
    for (int g = 0; g < nq; g++)
        if (sum[g] > 0.0f)
            cpu_scale(out + (size_t)g * (size_t)hd, 1.0f / sum[g], hd);
}

GRP_TARGET static void attend_group_switch(const struct cpu_kv *kv, int layer, int kvh, const float *q, int nq, int hd,
                                           int32_t j0, int32_t j1, float scale, float softcap, float *out)
{
    int f16 = kv->type == AARMD_TYPE_F16;
    switch (nq * 2 + f16) {
#define CASE(N) \
    case 2 * N: attend_group_avx2(kv, layer, kvh, q, N, 0, hd, j0, j1, scale, softcap, out); break; \
    case 2 * N + 1: attend_group_avx2(kv, layer, kvh, q, N, 1, hd, j0, j1, scale, softcap, out); break;
    CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
    default: break;
    }
}
#endif

void cpu_attend_group(const struct cpu_kv *kv, int layer, int kvh, const float *q, int n_q, int head_dim,
                      int32_t j0, int32_t j1, float scale, float softcap, int vec, float *out)
{
#if defined(__x86_64__)
    if (vec && n_q >= 1 && n_q <= ATT_GROUP_MAX && head_dim % 8 == 0 && ops_have_avx2()) {
        attend_group_switch(kv, layer, kvh, q, n_q, head_dim, j0, j1, scale, softcap, out);
        return;
    }
#endif
    for (int g = 0; g < n_q; g++)
        cpu_attend(kv, layer, kvh, q + (size_t)g * (size_t)head_dim, head_dim, j0, j1, scale, softcap, vec,
                   out + (size_t)g * (size_t)head_dim);
}
