/*
 * check_ops.cpp — shaders/metal/ops.metal run through the CPU harness, each
 * kernel against the CPU backend's own primitive (plugins/cpu/ops.c) on
 * awkward sizes: rows not a multiple of the threadgroup, strides > n,
 * partial rotary, both rope kinds.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "metal_test_util.h"

extern "C" {
#include "kernels.h"
#include "ops.h"
}

#include "ops.metal"

static const uint ROW = AARMD_MTL_ROW_THREADS;

static void check_close(const float *got, const float *want, size_t n, float atol, float rtol, const char *what)
{
    long bad = mt_first_mismatch(got, want, n, atol, rtol);
    cr_assert(bad < 0, "%s: element %ld = %.8g, want %.8g", what, bad, bad < 0 ? 0.0 : (double)got[bad],
              bad < 0 ? 0.0 : (double)want[bad]);
}

struct norm_case {
    uint32_t kind, n, rows, has_w, has_b;
};

ParameterizedTestParameters(metal_ops, norm)
{
    static struct norm_case cases[] = {
        {0, 577, 3, 1, 0}, {0, 64, 5, 0, 0}, {0, 2049, 2, 1, 0}, {1, 577, 3, 1, 1}, {1, 31, 4, 0, 0},
    };
    return cr_make_param_array(struct norm_case, cases, sizeof cases / sizeof cases[0]);
}

/* In place (out aliases x), rows `stride` = n + 3 apart. */
ParameterizedTest(struct norm_case *c, metal_ops, norm)
{
    mt_rng r(c->n * 7 + c->kind);
    uint32_t stride = c->n + 3;
    std::vector<float> x = mt_random_floats(r, (size_t)stride * c->rows, -2, 3);
    std::vector<float> w = mt_random_floats(r, c->n, 0.5f, 1.5f), b = mt_random_floats(r, c->n, -1, 1);
    std::vector<float> want = x;
    for (uint32_t i = 0; i < c->rows; i++) {
        float *row = &want[(size_t)i * stride];
        if (c->kind == 0)
            cpu_rmsnorm(row, row, c->has_w ? w.data() : nullptr, (int)c->n, 1e-5f);
        else
            cpu_layernorm(row, row, c->has_w ? w.data() : nullptr, c->has_b ? b.data() : nullptr, (int)c->n, 1e-5f);
    }
    aarmd_mtl_norm_args a = {c->n, c->rows, stride, c->kind, c->has_w, c->has_b, 1e-5f};
    int rc = metal_sim::dispatch({c->rows + 1, 1, 1}, {ROW, 1, 1},   /* one idle extra threadgroup */
                                 [&] { aarmd_norm(a, x.data(), x.data(), w.data(), b.data()); });
    cr_assert_eq(rc, 0, "harness: %s", metal_sim::last_error());
    check_close(x.data(), want.data(), x.size(), 1e-5f, 1e-5f, c->kind ? "layernorm" : "rmsnorm");
}

struct rope_case {
    int kind, n_heads, head_dim, n_rot, n_tok;
};

ParameterizedTestParameters(metal_ops, rope)
{
    static struct rope_case cases[] = {
        {AARMD_ROPE_NORMAL, 3, 64, 64, 2}, {AARMD_ROPE_NEOX, 3, 64, 64, 2},
        {AARMD_ROPE_NORMAL, 5, 80, 40, 3}, {AARMD_ROPE_NEOX, 5, 80, 40, 3},
        {AARMD_ROPE_NEOX, 2, 256, 256, 1},
    };
    return cr_make_param_array(struct rope_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct rope_case *c, metal_ops, rope)
{
    struct cpu_rope rp;
    memset(&rp, 0, sizeof rp);
    rp.kind = c->kind;
    rp.n_rot = c->n_rot;
    rp.freq_base = 10000.0f;
    rp.freq_scale = 1.0f;
    rp.attn_factor = 1.0f;
    mt_rng r(c->head_dim + c->kind);
    uint32_t stride = (uint32_t)(c->n_heads * c->head_dim + 16);
    std::vector<float> x = mt_random_floats(r, (size_t)stride * c->n_tok, -1, 1), want = x;
    std::vector<float> cs((size_t)c->n_rot * c->n_tok);
    for (int t = 0; t < c->n_tok; t++) {
        cpu_rope_cos_sin(&rp, 17 + 100 * t, &cs[(size_t)t * c->n_rot]);
        cpu_rope_apply(&rp, &cs[(size_t)t * c->n_rot], &want[(size_t)t * stride], c->n_heads, c->head_dim);
    }
    aarmd_mtl_rope_args a = {(uint32_t)c->n_heads, (uint32_t)c->head_dim, (uint32_t)c->n_rot, (uint32_t)c->kind,
                             (uint32_t)c->n_tok, stride};
    int rc = metal_sim::dispatch({(uint)(c->n_rot / 2 + 31) / 32, (uint)c->n_heads, (uint)c->n_tok}, {32, 1, 1},
                                 [&] { aarmd_rope(a, x.data(), cs.data()); });
    cr_assert_eq(rc, 0, "harness: %s", metal_sim::last_error());
    /* same float operations in the same order: exact */
    cr_assert(memcmp(x.data(), want.data(), x.size() * sizeof(float)) == 0, "rope kind %d differs", c->kind);
}

Test(metal_ops, softmax)
{
    mt_rng r(5);
    const uint32_t n = 1000, rows = 3, stride = 1003;
    std::vector<float> x = mt_random_floats(r, (size_t)stride * rows, -20, 20), want = x;
    for (uint32_t i = 0; i < rows; i++)
        cpu_softmax(&want[(size_t)i * stride], (int)n);
    aarmd_mtl_softmax_args a = {n, rows, stride};
    int rc = metal_sim::dispatch({rows, 1, 1}, {ROW, 1, 1}, [&] { aarmd_softmax(a, x.data()); });
    cr_assert_eq(rc, 0, "harness: %s", metal_sim::last_error());
    check_close(x.data(), want.data(), x.size(), 1e-7f, 1e-5f, "softmax");
}

ParameterizedTestParameters(metal_ops, eltwise)
{
    static uint32_t ops[] = {AARMD_MTL_OP_SILU_GATED, AARMD_MTL_OP_GELU_GATED, AARMD_MTL_OP_GELU, AARMD_MTL_OP_ADD,
                             AARMD_MTL_OP_SCALE_CAP};
    return cr_make_param_array(uint32_t, ops, sizeof ops / sizeof ops[0]);
}

/* 300 elements (not a multiple of 256) x 2 tokens; ADD broadcasts one bias row. */
ParameterizedTest(uint32_t *op, metal_ops, eltwise)
{
    mt_rng r(11 + *op);
    const uint32_t n = 300, n_tok = 2, gs = 310;
    uint32_t us = *op == AARMD_MTL_OP_ADD ? 0 : 305;
    std::vector<float> g = mt_random_floats(r, (size_t)gs * n_tok, -6, 6), want = g;
    std::vector<float> u = mt_random_floats(r, (size_t)305 * n_tok, -2, 2);
    const float scale = 1.7f, cap = 5.0f;
    for (uint32_t t = 0; t < n_tok; t++) {
        float *gr = &want[(size_t)t * gs];
        const float *ur = &u[(size_t)t * us];
        switch (*op) {
        case AARMD_MTL_OP_SILU_GATED: cpu_gated_act(gr, ur, (int)n, 0); break;
        case AARMD_MTL_OP_GELU_GATED: cpu_gated_act(gr, ur, (int)n, 1); break;
        case AARMD_MTL_OP_GELU: cpu_gelu_vec(gr, (int)n); break;
        case AARMD_MTL_OP_ADD: cpu_add(gr, ur, (int)n); break;
        default:
            cpu_scale(gr, scale, (int)n);
            cpu_softcap(gr, (int)n, cap);
            break;
        }
    }
    aarmd_mtl_eltwise_args a = {n, n_tok, gs, us, *op, scale, cap};
    int rc = metal_sim::dispatch({(n + ROW - 1) / ROW, n_tok, 1}, {ROW, 1, 1},
                                 [&] { aarmd_eltwise(a, g.data(), u.data()); });
    cr_assert_eq(rc, 0, "harness: %s", metal_sim::last_error());
    check_close(g.data(), want.data(), g.size(), 1e-6f, 1e-5f, "eltwise");
}

/* K/V rows of tokens of three sequences land, through shuffled block tables,
 * at their positions as F16 rounded like cpu_f32_to_f16; every other row of
 * the pool keeps its sentinel. */
Test(metal_ops, kv_store_paged)
{
    mt_rng r(3);
    const uint32_t kv_dim = 300, bt = 5, n_blocks = 13, src_stride = 320;
    const uint16_t sentinel = 0x7e01;   /* a NaN no conversion produces */
    /* sequence s: tokens at positions [p0[s], p0[s] + n[s]) through table ts[s] */
    const uint32_t p0[3] = {7, 0, 12}, n[3] = {4, 3, 1};
    const std::vector<uint32_t> ts[3] = {{9, 2, 11}, {4}, {0, 6, 12}};
    std::vector<uint32_t> table;
    std::vector<aarmd_mtl_kv_tok> tok;
    std::vector<uint32_t> tok_seq;
    for (uint32_t s = 0; s < 3; s++) {
        uint32_t off = (uint32_t)table.size();
        table.insert(table.end(), ts[s].begin(), ts[s].end());
        for (uint32_t i = 0; i < n[s]; i++) {
            tok.push_back({p0[s] + i, off});
            tok_seq.push_back(s);
        }
    }
    const uint32_t n_tok = (uint32_t)tok.size();
    std::vector<float> k = mt_random_floats(r, (size_t)src_stride * n_tok, -70000, 70000);
    std::vector<float> v = mt_random_floats(r, (size_t)src_stride * n_tok, -1e-6f, 1e-6f);
    std::vector<uint16_t> kc((size_t)n_blocks * bt * kv_dim, sentinel), vc = kc;
    aarmd_mtl_kv_store_args a = {kv_dim, n_tok, src_stride, bt};
    int rc = metal_sim::dispatch({(kv_dim + ROW - 1) / ROW, n_tok, 1}, {ROW, 1, 1}, [&] {
        aarmd_kv_store(a, k.data(), v.data(), (half *)kc.data(), (half *)vc.data(), tok.data(), table.data());
    });
    cr_assert_eq(rc, 0, "harness: %s", metal_sim::last_error());
    std::vector<int> writer((size_t)n_blocks * bt, -1);   /* pool row -> token stored there */
    for (uint32_t t = 0; t < n_tok; t++) {
        uint32_t pos = tok[t].pos;
        writer[(size_t)ts[tok_seq[t]][pos / bt] * bt + pos % bt] = (int)t;
    }
    uint32_t stored = 0;
    for (uint32_t row = 0; row < n_blocks * bt; row++) {
        int t = writer[row];
        stored += t >= 0;
        for (uint32_t i = 0; i < kv_dim; i++) {
            uint16_t hk = kc[(size_t)row * kv_dim + i], hv = vc[(size_t)row * kv_dim + i];
            uint16_t wk = t >= 0 ? cpu_f32_to_f16(k[(size_t)t * src_stride + i]) : sentinel;
            uint16_t wv = t >= 0 ? cpu_f32_to_f16(v[(size_t)t * src_stride + i]) : sentinel;
            cr_assert(hk == wk && hv == wv, "pool row %u col %u: k %04x v %04x, want %04x %04x", row, i, hk, hv, wk, wv);
        }
    }
    cr_assert_eq(stored, n_tok, "every token has its own row");
}
