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

void cpu_gated_act(float *g, const float *u, int n, int gelu)
{
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

void cpu_attend(const struct cpu_kv *kv, int layer, int kvh, const float *q, int head_dim,
                int32_t j0, int32_t j1, float scale, float softcap, int vec, float *out)
{
    size_t off = (size_t)kvh * (size_t)head_dim * kv->elt;
    float m = -INFINITY, sum = 0.0f;
#if defined(__x86_64__)
    float (*dot)(const struct cpu_kv *, const void *, const float *, int) = vec ? dot_row_avx2 : dot_row;
    void (*axpy)(const struct cpu_kv *, const void *, float, float *, int) = vec ? axpy_row_avx2 : axpy_row;
#else
    (void)vec;
    float (*dot)(const struct cpu_kv *, const void *, const float *, int) = dot_row;
    void (*axpy)(const struct cpu_kv *, const void *, float, float *, int) = axpy_row;
#endif
    memset(out, 0, (size_t)head_dim * sizeof(float));
    for (int32_t j = j0; j <= j1; j++) {
        float s = dot(kv, (const char *)cpu_kv_k_row(kv, layer, j) + off, q, head_dim) * scale;
        if (softcap > 0.0f)
            s = softcap * tanhf(s / softcap);
        if (s > m) {
            /* new running max: rescale what was accumulated under the old one */
            float c = expf(m - s);
            sum *= c;
            cpu_scale(out, c, head_dim);
            m = s;
        }
        float w = expf(s - m);
        sum += w;
        axpy(kv, (const char *)cpu_kv_v_row(kv, layer, j) + off, w, out, head_dim);
    }
    if (sum > 0.0f)
        cpu_scale(out, 1.0f / sum, head_dim);
}
