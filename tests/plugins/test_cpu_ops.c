/*
 * test_cpu_ops.c — the CPU backend's per-vector primitives (plugins/cpu/ops.c,
 * kv.c) built straight into the test: norms, activations, softcap, RoPE modes
 * and scalings (properties that hold whatever the implementation), and
 * single-query attention over the KV cache with causal / window bounds,
 * against direct formulas.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kv.h"
#include "ops.h"

static float close_to(float a, float b) { return fabsf(a - b) <= 1e-5f * (1.0f + fabsf(b)); }

Test(cpu_ops, rmsnorm_and_layernorm)
{
    float x[4] = {1, -2, 3, -4}, w[4] = {1, 2, 1, 0.5f}, b[4] = {0, 1, 0, -1}, y[4];
    cpu_rmsnorm(y, x, w, 4, 0.0f);
    float r = 1.0f / sqrtf((1 + 4 + 9 + 16) / 4.0f);
    for (int i = 0; i < 4; i++)
        cr_assert(close_to(y[i], x[i] * r * w[i]), "rms %d: %g", i, y[i]);
    cpu_layernorm(y, x, w, b, 4, 0.0f);
    float mean = -0.5f, var = 0;
    for (int i = 0; i < 4; i++)
        var += (x[i] - mean) * (x[i] - mean) / 4;
    for (int i = 0; i < 4; i++)
        cr_assert(close_to(y[i], (x[i] - mean) / sqrtf(var) * w[i] + b[i]), "ln %d: %g", i, y[i]);
    cpu_rmsnorm(x, x, NULL, 4, 0.0f);   /* in place, no weight */
    cr_assert(close_to(x[2], 3 * r));
}

Test(cpu_ops, activations_softcap_softmax)
{
    cr_assert(close_to(cpu_silu(2.0f), 2.0f / (1.0f + expf(-2.0f))));
    cr_assert(close_to(cpu_gelu(1.0f), 0.8411920f), "%g", cpu_gelu(1.0f));   /* tanh approximation */
    cr_assert(close_to(cpu_gelu(-3.0f), -0.0036374f), "%g", cpu_gelu(-3.0f));
    float v[3] = {100.0f, -100.0f, 1.0f};
    cpu_softcap(v, 3, 30.0f);
    cr_assert(close_to(v[0], 30.0f * tanhf(100.0f / 30.0f)));
    cr_assert(v[0] < 30.0f && v[1] > -30.0f);
    float u[3] = {1.0f, 1.0f, 1.0f};
    cpu_softcap(u, 3, 0.0f);   /* cap 0: untouched */
    cr_assert_eq(u[0], 1.0f);
    float s[3] = {1.0f, 2.0f, 3.0f};
    cpu_softmax(s, 3);
    float z = expf(1) + expf(2) + expf(3);
    cr_assert(close_to(s[2], expf(3) / z));
    float g[2] = {1.0f, -1.0f}, up[2] = {2.0f, 3.0f};
    cpu_gated_act(g, up, 2, 0);
    cr_assert(close_to(g[0], cpu_silu(1.0f) * 2.0f) && close_to(g[1], cpu_silu(-1.0f) * 3.0f));
}

static struct aarmd_model_desc rope_desc(uint32_t kind, uint32_t n_rot)
{
    struct aarmd_model_desc d = {0};
    d.rope_kind = kind;
    d.n_rot = n_rot;
    d.head_dim = 8;
    d.rope_freq_base = 10000.0f;
    d.rope_scale = 1.0f;
    d.n_ctx_train = 4096;
    return d;
}

static void rotate(const struct cpu_rope *r, int32_t pos, float *v, int heads)
{
    float cs[8];
    cpu_rope_cos_sin(r, pos, cs);
    cpu_rope_apply(r, cs, v, heads, 8);
}

Test(cpu_ops, rope_normal_neox_partial)
{
    struct aarmd_model_desc d = rope_desc(AARMD_ROPE_NORMAL, 8);
    struct cpu_rope r;
    cpu_rope_init(&r, &d, d.rope_freq_base, NULL);
    float v[8] = {1, 0, 0, 1, 1, 1, 2, 0};
    float w[8];
    memcpy(w, v, sizeof v);
    rotate(&r, 3, v, 1);
    /* normal: pair (0,1) rotates by 3 * base^0 = 3 rad */
    cr_assert(close_to(v[0], cosf(3.0f)) && close_to(v[1], sinf(3.0f)), "%g %g", v[0], v[1]);
    /* pair (6,7) by 3 * base^(-6/8) */
    float th = 3.0f * powf(10000.0f, -0.75f);
    cr_assert(close_to(v[6], 2 * cosf(th)) && close_to(v[7], 2 * sinf(th)));
    /* rotations preserve each pair's norm and position 0 is the identity */
    rotate(&r, 0, w, 1);
    cr_assert(close_to(w[4], 1.0f) && close_to(w[5], 1.0f));

    struct aarmd_model_desc dn = rope_desc(AARMD_ROPE_NEOX, 4);   /* partial: dims 4..7 untouched */
    cpu_rope_init(&r, &dn, dn.rope_freq_base, NULL);
    float x[16] = {1, 0, 0, 5, 7, 8, 9, 10, 1, 0, 0, 5, 7, 8, 9, 10};
    rotate(&r, 2, x, 2);
    /* neox pairs (0,2), (1,3); pair 0 by 2 rad, pair 1 by 2 * base^(-2/4) = 0.02 rad */
    cr_assert(close_to(x[0], cosf(2.0f)) && close_to(x[2], sinf(2.0f)));
    float t1 = 2.0f * powf(10000.0f, -0.5f);
    cr_assert(close_to(x[1], -5 * sinf(t1)) && close_to(x[3], 5 * cosf(t1)));
    cr_assert(x[4] == 7 && x[5] == 8 && x[6] == 9 && x[7] == 10, "dims past n_rot moved");
    cr_assert(x[8] == x[0] && x[11] == x[3], "second head rotated differently");
}

Test(cpu_ops, rope_linear_scaling_is_position_division)
{
    struct aarmd_model_desc d = rope_desc(AARMD_ROPE_NEOX, 8);
    d.rope_scaling = AARMD_ROPE_SCALING_LINEAR;
    d.rope_scale = 4.0f;
    struct aarmd_model_desc plain = rope_desc(AARMD_ROPE_NEOX, 8);
    struct cpu_rope rs, rp;
    cpu_rope_init(&rs, &d, 10000.0f, NULL);
    cpu_rope_init(&rp, &plain, 10000.0f, NULL);
    float a[8], b[8];
    for (int i = 0; i < 8; i++)
        a[i] = b[i] = (float)(i + 1);
    rotate(&rs, 40, a, 1);
    rotate(&rp, 10, b, 1);
    for (int i = 0; i < 8; i++)
        cr_assert(close_to(a[i], b[i]), "dim %d: %g vs %g", i, a[i], b[i]);
}

Test(cpu_ops, rope_yarn_ramp_and_magnitude)
{
    struct aarmd_model_desc d = rope_desc(AARMD_ROPE_NEOX, 8);
    d.rope_scaling = AARMD_ROPE_SCALING_YARN;
    d.rope_scale = 4.0f;
    d.rope_orig_ctx = 4096;
    d.yarn_ext_factor = 1.0f;
    d.yarn_attn_factor = 1.0f;
    d.yarn_beta_fast = 32.0f;
    d.yarn_beta_slow = 1.0f;
    struct cpu_rope r;
    cpu_rope_init(&r, &d, 10000.0f, NULL);
    cr_assert(r.corr_low <= r.corr_high && r.corr_high <= 7.0f, "corr %g %g", r.corr_low, r.corr_high);
    float cs[8];
    cpu_rope_cos_sin(&r, 100, cs);
    float mscale = 1.0f + 0.1f * logf(4.0f);
    /* pair 0 is below the ramp: extrapolated (unscaled) angle, magnitude mscale */
    cr_assert(close_to(cs[0], mscale * cosf(100.0f)) && close_to(cs[1], mscale * sinf(100.0f)), "%g %g", cs[0], cs[1]);
    /* the last pair is past the ramp: interpolated angle pos/scale */
    float th = 100.0f * powf(10000.0f, -6.0f / 8.0f) / 4.0f;
    cr_assert(close_to(cs[6], mscale * cosf(th)) && close_to(cs[7], mscale * sinf(th)), "%g vs %g", cs[6], mscale * cosf(th));
    /* ext_factor 0: plain interpolation, no magnitude change */
    d.yarn_ext_factor = 0.0f;
    cpu_rope_init(&r, &d, 10000.0f, NULL);
    cpu_rope_cos_sin(&r, 100, cs);
    cr_assert(close_to(cs[0], cosf(25.0f)));
}

Test(cpu_ops, rope_llama3_factors)
{
    struct aarmd_model_desc d = rope_desc(AARMD_ROPE_NORMAL, 128);
    d.head_dim = 128;
    d.rope_freq_base = 500000.0f;
    d.rope_scaling = AARMD_ROPE_SCALING_LLAMA3;
    d.rope_scale = 8.0f;
    d.rope_orig_ctx = 8192;
    d.llama3_low_freq_factor = 1.0f;
    d.llama3_high_freq_factor = 4.0f;
    float f[64];
    cpu_rope_llama3_factors(&d, f);
    cr_assert_eq(f[0], 1.0f);                     /* short wavelengths: untouched */
    cr_assert(close_to(f[63], 8.0f), "%g", f[63]); /* long wavelengths: the full factor */
    for (int i = 1; i < 64; i++)
        cr_assert(f[i] >= f[i - 1] && f[i] >= 1.0f && f[i] <= 8.0f, "factor %d = %g", i, f[i]);
    /* factors divide the angle */
    struct cpu_rope r;
    cpu_rope_init(&r, &d, d.rope_freq_base, f);
    float cs[128];
    cpu_rope_cos_sin(&r, 1000, cs);
    float th = 1000.0f * powf(500000.0f, -2.0f * 63 / 128.0f) / f[63];
    cr_assert(close_to(cs[126], cosf(th)) && close_to(cs[127], sinf(th)));
}

/* Attention against a direct two-pass softmax over the same cached rows;
 * head_dim 12 exercises the 8-lane loop and the scalar tail of the SIMD path. */
Test(cpu_ops, attend_matches_direct_softmax_with_window)
{
    enum { HD = 12, NKV = 2 };
    int n_vec = cpu_simd_detect() == CPU_SIMD_AVX2 || cpu_simd_detect() == CPU_SIMD_AVX512 ? 2 : 1;
    for (int run = 0; run < 2 * n_vec; run++) {
        int ty = run & 1, vec = run >> 1;
        struct cpu_kv kv;
        uint32_t type = ty ? AARMD_TYPE_F32 : AARMD_TYPE_F16;
        cr_assert_eq(cpu_kv_init(&kv, type, 2, 16, NKV * HD), AARMD_OK);
        float k[NKV * HD], v[NKV * HD];
        for (int p = 0; p < 10; p++) {
            for (int i = 0; i < NKV * HD; i++) {
                k[i] = sinf((float)(p * NKV * HD + i));
                v[i] = cosf((float)(p * 3 + i));
            }
            cpu_kv_store(&kv, 1, p, k, v);
        }
        float q[HD], out[HD];
        for (int i = 0; i < HD; i++)
            q[i] = 0.3f * (float)(i % 5) - 0.5f;
        int kvh = 1, j0 = 4, j1 = 9;
        float scale = 0.5f, cap = 3.0f;
        cpu_attend(&kv, 1, kvh, q, HD, j0, j1, scale, cap, vec, out);
        double sc[16], mx = -1e30, z = 0, want[HD] = {0};
        for (int j = j0; j <= j1; j++) {
            double s = 0;
            for (int i = 0; i < HD; i++)
                s += q[i] * sin((double)(j * NKV * HD + kvh * HD + i));
            s *= scale;
            s = cap * tanh(s / cap);
            sc[j] = s;
            mx = s > mx ? s : mx;
        }
        for (int j = j0; j <= j1; j++)
            z += exp(sc[j] - mx);
        for (int j = j0; j <= j1; j++)
            for (int i = 0; i < HD; i++)
                want[i] += exp(sc[j] - mx) / z * cos((double)(j * 3 + kvh * HD + i));
        float tol = ty ? 1e-5f : 2e-3f;   /* F16 cache rounds k and v */
        for (int i = 0; i < HD; i++)
            cr_assert(fabs(out[i] - want[i]) < tol, "type %u vec %d dim %d: %g vs %g", type, vec, i, out[i], want[i]);
        cpu_kv_fini(&kv);
    }
}

/* Long spans: several score blocks, a max that moves from block to block (scores
 * drift upwards, then one spike), the vector exponentials; against double. */
Test(cpu_ops, attend_long_span_matches_direct_softmax)
{
    enum { HD = 16, N = 300 };
    int n_vec = cpu_simd_detect() == CPU_SIMD_AVX2 || cpu_simd_detect() == CPU_SIMD_AVX512 ? 2 : 1;
    struct cpu_kv kv;
    cr_assert_eq(cpu_kv_init(&kv, AARMD_TYPE_F32, 1, N, HD), AARMD_OK);
    float k[HD], v[HD], q[HD];
    for (int i = 0; i < HD; i++)
        q[i] = 1.0f / HD;
    for (int p = 0; p < N; p++) {
        for (int i = 0; i < HD; i++) {
            k[i] = 0.02f * (float)p + 0.5f * sinf((float)(p * 7 + i)) + (p == 150 ? 4.0f : 0.0f);
            v[i] = cosf((float)(p * 5 + i));
        }
        cpu_kv_store(&kv, 0, p, k, v);
    }
    int spans[][2] = {{0, N - 1}, {20, 250}, {63, 64}, {100, 100}};
    for (int vec = 0; vec < n_vec; vec++) {
        for (size_t sp = 0; sp < sizeof spans / sizeof spans[0]; sp++) {
            int j0 = spans[sp][0], j1 = spans[sp][1];
            float out[HD];
            cpu_attend(&kv, 0, 0, q, HD, j0, j1, 2.0f, 0.0f, vec, out);
            double sc[N], mx = -1e30, z = 0, want[HD] = {0};
            for (int j = j0; j <= j1; j++) {
                const float *kr = cpu_kv_k_row(&kv, 0, j);
                double s = 0;
                for (int i = 0; i < HD; i++)
                    s += (double)q[i] * kr[i];
                sc[j] = 2.0 * s;
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (int j = j0; j <= j1; j++)
                z += exp(sc[j] - mx);
            for (int j = j0; j <= j1; j++) {
                const float *vr = cpu_kv_v_row(&kv, 0, j);
                for (int i = 0; i < HD; i++)
                    want[i] += exp(sc[j] - mx) / z * vr[i];
            }
            for (int i = 0; i < HD; i++)
                cr_assert(fabs(out[i] - want[i]) < 2e-6, "vec %d span [%d, %d] dim %d: %.9g vs %.9g", vec, j0, j1, i,
                          out[i], want[i]);
        }
    }
    cpu_kv_fini(&kv);
}

/* Grouped heads against one cpu_attend per head: group sizes on both sides of the
 * kernel's limit, F16 and F32 caches, a head_dim the kernel takes and one it does not. */
Test(cpu_ops, attend_group_matches_per_head)
{
    enum { N = 150, NKV = 2 };
    int n_vec = cpu_simd_detect() == CPU_SIMD_AVX2 || cpu_simd_detect() == CPU_SIMD_AVX512 ? 2 : 1;
    static const int hds[] = {64, 12};
    static const int groups[] = {1, 3, 4, 8, 9};
    for (size_t h = 0; h < 2; h++) {
        int hd = hds[h];
        for (int ty = 0; ty < 2; ty++) {
            struct cpu_kv kv;
            uint32_t type = ty ? AARMD_TYPE_F32 : AARMD_TYPE_F16;
            cr_assert_eq(cpu_kv_init(&kv, type, 2, N, NKV * hd), AARMD_OK);
            float k[NKV * 64], v[NKV * 64];
            for (int p = 0; p < N; p++) {
                for (int i = 0; i < NKV * hd; i++) {
                    k[i] = sinf((float)(p * 13 + i) * 0.37f) + 0.01f * (float)p;
                    v[i] = cosf((float)(p * 5 + i) * 0.21f);
                }
                cpu_kv_store(&kv, 1, p, k, v);
            }
            float q[9 * 64], want[9 * 64], got[9 * 64];
            for (int i = 0; i < 9 * hd; i++)
                q[i] = 0.25f * sinf((float)i * 0.7f);
            for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++) {
                int nq = groups[gi];
                for (int vec = 0; vec < n_vec; vec++) {
                    for (int g = 0; g < nq; g++)
                        cpu_attend(&kv, 1, 1, q + g * hd, hd, 10, N - 1, 0.125f, g == 2 ? 5.0f : 0.0f, vec,
                                   want + g * hd);
                    /* softcap is one value per call: check the capped head separately */
                    cpu_attend_group(&kv, 1, 1, q, nq, hd, 10, N - 1, 0.125f, 0.0f, vec, got);
                    for (int g = 0; g < nq; g++) {
                        if (g == 2)
                            continue;
                        for (int i = 0; i < hd; i++)
                            cr_assert(fabsf(got[g * hd + i] - want[g * hd + i]) <= 1e-5f,
                                      "hd %d type %u group %d vec %d head %d dim %d: %.9g vs %.9g", hd, type, nq, vec,
                                      g, i, got[g * hd + i], want[g * hd + i]);
                    }
                    if (nq > 2) {
                        cpu_attend_group(&kv, 1, 1, q + 2 * hd, 1, hd, 10, N - 1, 0.125f, 5.0f, vec, got);
                        for (int i = 0; i < hd; i++)
                            cr_assert(fabsf(got[i] - want[2 * hd + i]) <= 1e-5f, "softcap hd %d dim %d", hd, i);
                    }
                }
            }
            cpu_kv_fini(&kv);
        }
    }
}

/* Batch invariance of the group kernel: a head's output must not depend on how
 * many heads share the call (the kernel scores 1..4 keys at once and sums 1..4
 * 8-lane chunks of out at once depending on the group size), so every group size
 * gives each head the same bits as that head alone, for every span end (all key
 * tail lengths of a 64-key block), F16 and F32, head_dims with and without a
 * leftover 8-lane chunk. */
Test(cpu_ops, attend_group_bitwise_independent_of_group_size)
{
    enum { N = 140, NKV = 2, MAXG = 8, MAXHD = 256 };
    static const int hds[] = {64, 256, 24, 40};
    static const int groups[] = {2, 3, 4, 5, 6, 7, 8};
    int n_vec = cpu_simd_detect() == CPU_SIMD_AVX2 || cpu_simd_detect() == CPU_SIMD_AVX512 ? 2 : 1;
    float *k = malloc(NKV * MAXHD * sizeof(float)), *v = malloc(NKV * MAXHD * sizeof(float));
    float *q = malloc(MAXG * MAXHD * sizeof(float)), *want = malloc(MAXG * MAXHD * sizeof(float));
    float *got = malloc(MAXG * MAXHD * sizeof(float));
    cr_assert(k && v && q && want && got);
    for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++) {
        int hd = hds[h];
        for (int ty = 0; ty < 2; ty++) {
            struct cpu_kv kv;
            uint32_t type = ty ? AARMD_TYPE_F32 : AARMD_TYPE_F16;
            cr_assert_eq(cpu_kv_init(&kv, type, 1, N, NKV * hd), AARMD_OK);
            for (int p = 0; p < N; p++) {
                for (int i = 0; i < NKV * hd; i++) {
                    k[i] = sinf((float)(p * 17 + i) * 0.29f) + 0.02f * (float)(p % 9);
                    v[i] = cosf((float)(p * 7 + i) * 0.13f);
                }
                cpu_kv_store(&kv, 0, p, k, v);
            }
            for (int i = 0; i < MAXG * hd; i++)
                q[i] = 0.3f * sinf((float)i * 0.61f) + 0.05f * cosf((float)i * 0.07f);
            for (int vec = 0; vec < n_vec; vec++) {
                for (int32_t j1 = 60; j1 < N; j1 += 3) {          /* nb of the last block: 61..76 % 64 */
                    int32_t j0 = j1 > 100 ? 7 : 0;
                    for (int g = 0; g < MAXG; g++)
                        cpu_attend_group(&kv, 0, 1, q + g * hd, 1, hd, j0, j1, 0.125f, 0.0f, vec, want + g * hd);
                    for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++) {
                        int nq = groups[gi];
                        memset(got, 0xff, (size_t)nq * (size_t)hd * sizeof(float));
                        cpu_attend_group(&kv, 0, 1, q, nq, hd, j0, j1, 0.125f, 0.0f, vec, got);
                        cr_assert(memcmp(got, want, (size_t)nq * (size_t)hd * sizeof(float)) == 0,
                                  "hd %d type %u vec %d j1 %d group %d differs from one head at a time", hd, type,
                                  vec, (int)j1, nq);
                    }
                    /* and a capped head: the same bits alone and in a group of 4 */
                    cpu_attend_group(&kv, 0, 1, q, 1, hd, j0, j1, 0.125f, 3.0f, vec, want);
                    cpu_attend_group(&kv, 0, 1, q, 4, hd, j0, j1, 0.125f, 3.0f, vec, got);
                    cr_assert(memcmp(got, want, (size_t)hd * sizeof(float)) == 0, "softcap hd %d j1 %d", hd, (int)j1);
                }
            }
            cpu_kv_fini(&kv);
        }
    }
    free(k);
    free(v);
    free(q);
    free(want);
    free(got);
}

/* The vectorised silu/gelu (and their scalar tails) against the scalar formulas, over a wide range. */
Test(cpu_ops, gated_activations_over_a_range)
{
    enum { N = 1003 };   /* not a multiple of 8: the tail too */
    static float g[N], u[N], g0[N];
    for (int gelu = 0; gelu < 2; gelu++) {
        for (int i = 0; i < N; i++) {
            g0[i] = g[i] = -40.0f + 80.0f * (float)i / (N - 1) + (i % 3 == 0 ? 1e-3f * (float)(i % 7) : 0.0f);
            u[i] = 0.5f + (float)(i % 11) * 0.25f;
        }
        g0[500] = g[500] = 0.0f;
        cpu_gated_act(g, u, N, gelu);
        for (int i = 0; i < N; i++) {
            double x = g0[i];
            double a = gelu ? 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
                            : x / (1.0 + exp(-x));
            double want = a * u[i];
            cr_assert(fabs(g[i] - want) <= 4e-6 * fabs(want) + 1e-7, "%s(%g) * %g: %.9g vs %.9g",
                      gelu ? "gelu" : "silu", x, (double)u[i], g[i], want);
        }
        for (int i = 0; i < N; i++)
            g[i] = g0[i];
        cpu_gelu_vec(g, N);
        for (int i = 0; i < N; i++) {
            double x = g0[i];
            double want = 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
            cr_assert(fabs(g[i] - want) <= 4e-6 * fabs(want) + 1e-7, "gelu(%g): %.9g vs %.9g", x, g[i], want);
        }
    }
}

/* The vector F32 -> F16 of the KV store gives cpu_f32_to_f16's bits: normal values,
 * ties, subnormals, overflow to inf, zeros of both signs. */
Test(cpu_ops, kv_f16_conversion_matches_scalar)
{
    enum { N = 4099 };
    static float src[N];
    static uint16_t got[N];
    uint32_t r = 12345u;
    for (int i = 0; i < N; i++) {
        r = r * 1664525u + 1013904223u;
        switch (i % 8) {
        case 0: src[i] = (float)((int32_t)r) / 2147483648.0f; break;          /* [-1, 1) */
        case 1: src[i] = ldexpf((float)(r % 2048u) + 0.5f, -24 - (int)(r % 4u)); break; /* subnormal range, ties */
        case 2: src[i] = (float)((int32_t)r) * 1e-4f; break;                   /* up to 2e5: overflow */
        case 3: src[i] = ldexpf(1.0f + (float)(r % 1024u) / 1024.0f + 1.0f / 4096.0f, (int)(r % 30u) - 15); break;
        case 4: src[i] = (i % 16 == 4) ? -0.0f : 0.0f; break;
        case 5: src[i] = 65504.0f + (float)(r % 64u); break;                   /* around the largest half */
        case 6: src[i] = -ldexpf(1.0f, -(int)(r % 30u)); break;
        default: src[i] = (float)(r % 100000u) / 7.0f; break;
        }
    }
    cpu_kv_f32_to_f16(got, src, N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(got[i], cpu_f32_to_f16(src[i]), "%.9g: 0x%04x vs 0x%04x", (double)src[i], got[i],
                     cpu_f32_to_f16(src[i]));
}

Test(cpu_ops, kv_rejects_bad_shapes)
{
    struct cpu_kv kv;
    cr_assert_eq(cpu_kv_init(&kv, AARMD_TYPE_Q8_0, 1, 4, 4), AARMD_EINVAL);
    cr_assert_eq(cpu_kv_init(&kv, AARMD_TYPE_F16, 0, 4, 4), AARMD_EINVAL);
    cr_assert_eq(cpu_kv_init(&kv, AARMD_TYPE_F16, 1, 4, 4), AARMD_OK);
    cr_assert_eq(cpu_kv_bytes(&kv), 2 * 4 * 4 * 2);
    cpu_kv_fini(&kv);
    cpu_kv_fini(&kv);   /* idempotent */
}
