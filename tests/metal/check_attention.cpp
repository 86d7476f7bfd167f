/*
 * check_attention.cpp — shaders/metal/attention.metal through the CPU harness
 * against cpu_attend (plugins/cpu/ops.c) over the same F16 cache: GQA and
 * MHA, head sizes that are not multiples of 32, sliding window, softcap.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "metal_test_util.h"

extern "C" {
#include "kernels.h"
#include "kv.h"
#include "ops.h"
}

#include "attention.metal"

struct attn_case {
    uint32_t head_dim, n_head, n_head_kv, n_tok, pos0, window;
    float cap;
};

ParameterizedTestParameters(metal_attention, vs_cpu)
{
    static struct attn_case cases[] = {
        {64, 6, 2, 3, 37, 0, 0.0f},  {80, 4, 4, 2, 0, 0, 0.0f},   {64, 9, 3, 4, 50, 7, 0.0f},
        {256, 4, 1, 1, 20, 0, 50.0f}, {48, 2, 1, 5, 3, 3, 30.0f}, {128, 3, 3, 1, 300, 0, 0.0f},
    };
    return cr_make_param_array(struct attn_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct attn_case *c, metal_attention, vs_cpu)
{
    int kv_dim = (int)(c->n_head_kv * c->head_dim);
    int32_t n_ctx = (int32_t)(c->pos0 + c->n_tok + 4);
    struct cpu_kv kv;
    memset(&kv, 0, sizeof kv);
    cr_assert_eq(cpu_kv_init(&kv, AARMD_TYPE_F16, 1, n_ctx, kv_dim), AARMD_OK);
    mt_rng r(c->head_dim * 31 + c->pos0);
    for (int32_t p = 0; p < (int32_t)(c->pos0 + c->n_tok); p++) {
        std::vector<float> k = mt_random_floats(r, kv_dim, -1, 1), v = mt_random_floats(r, kv_dim, -1, 1);
        cpu_kv_store(&kv, 0, p, k.data(), v.data());
    }
    uint32_t q_stride = c->n_head * c->head_dim + 8, out_stride = c->n_head * c->head_dim + 4;
    std::vector<float> q = mt_random_floats(r, (size_t)q_stride * c->n_tok, -1, 1);
    std::vector<float> out((size_t)out_stride * c->n_tok, 0.0f), want = out;
    float scale = 1.0f / sqrtf((float)c->head_dim) * 2.5f;
    uint32_t group = c->n_head / c->n_head_kv;
    for (uint32_t t = 0; t < c->n_tok; t++) {
        int32_t p = (int32_t)(c->pos0 + t), j0 = 0;
        if (c->window && p - (int32_t)c->window + 1 > 0)
            j0 = p - (int32_t)c->window + 1;
        for (uint32_t h = 0; h < c->n_head; h++)
            cpu_attend(&kv, 0, (int)(h / group), &q[(size_t)t * q_stride + h * c->head_dim], (int)c->head_dim, j0, p,
                       scale, c->cap, 0, &want[(size_t)t * out_stride + h * c->head_dim]);
    }
    aarmd_mtl_attn_args a = {c->head_dim, c->n_head, c->n_head_kv, c->n_tok, q_stride, out_stride, c->pos0, c->window,
                             scale, c->cap};
    const half *kc = (const half *)kv.k, *vc = (const half *)kv.v;
    int rc = metal_sim::dispatch({c->n_head, c->n_tok, 1}, {AARMD_MTL_ROW_THREADS, 1, 1},
                                 [&] { aarmd_attention(a, q.data(), kc, vc, out.data()); });
    cr_assert_eq(rc, 0, "harness: %s", metal_sim::last_error());
    long bad = mt_first_mismatch(out.data(), want.data(), out.size(), 2e-6f, 2e-5f);
    cr_assert(bad < 0, "hd=%u heads=%u/%u: out[%ld] = %.8g, want %.8g", c->head_dim, c->n_head, c->n_head_kv, bad,
              bad < 0 ? 0.0 : (double)out[bad], bad < 0 ? 0.0 : (double)want[bad]);
    cpu_kv_fini(&kv);
}
