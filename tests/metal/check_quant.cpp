/*
 * check_quant.cpp — shaders/metal/quant.metal run through the CPU harness:
 * every weight type's matvec and embedding lookup against the CPU backend's
 * own dequantization (plugins/cpu/quant.c) on random blocks of awkward sizes.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "metal_test_util.h"

extern "C" {
#include "kernels.h"
}

#include "quant.metal"

struct qcase {
    uint32_t type;
    int64_t n_in;   /* a multiple of the block size, not of 32 lanes' worth */
};

/* Bytes offsets of the F16 scale fields of one block (filled with sane values). */
static void fix_scales(uint32_t type, uint8_t *blk, mt_rng &r)
{
    int offs[2] = {-1, -1};
    switch (type) {
    case AARMD_TYPE_Q4_0: case AARMD_TYPE_Q5_0: case AARMD_TYPE_Q8_0: offs[0] = 0; break;
    case AARMD_TYPE_Q4_1: case AARMD_TYPE_Q5_1: case AARMD_TYPE_Q4_K: case AARMD_TYPE_Q5_K:
        offs[0] = 0;
        offs[1] = 2;
        break;
    case AARMD_TYPE_Q6_K: offs[0] = 208; break;
    default: break;
    }
    for (int k = 0; k < 2; k++) {
        if (offs[k] < 0)
            continue;
        uint16_t h = cpu_f32_to_f16(r.uniform(-0.05f, 0.05f));
        memcpy(blk + offs[k], &h, 2);
    }
}

static std::vector<uint8_t> random_weights(uint32_t type, int64_t n_in, int64_t n_out, mt_rng &r)
{
    size_t row = cpu_type_row_bytes(type, n_in);
    std::vector<uint8_t> w(row * (size_t)n_out);
    if (type == AARMD_TYPE_F32) {
        for (size_t i = 0; i < w.size() / 4; i++) {
            float f = r.uniform(-1, 1);
            memcpy(&w[4 * i], &f, 4);
        }
    } else if (type == AARMD_TYPE_F16 || type == AARMD_TYPE_BF16) {
        for (size_t i = 0; i < w.size() / 2; i++) {
            float f = r.uniform(-1, 1);
            uint32_t u;
            memcpy(&u, &f, 4);
            uint16_t h = type == AARMD_TYPE_F16 ? cpu_f32_to_f16(f) : (uint16_t)(u >> 16);
            memcpy(&w[2 * i], &h, 2);
        }
    } else {
        for (auto &b : w)
            b = r.byte();
        size_t bb = cpu_type_block_bytes(type);
        for (size_t off = 0; off < w.size(); off += bb)
            fix_scales(type, &w[off], r);
    }
    return w;
}

static void blk_params(uint32_t type, uint32_t *blk_bytes, uint32_t *blk_chunks)
{
    int64_t be = cpu_type_block_elems(type);
    if (be == 1) {   /* float types: 8 elements make a "block" */
        *blk_bytes = (uint32_t)(8 * cpu_type_block_bytes(type));
        *blk_chunks = 1;
    } else {
        *blk_bytes = (uint32_t)cpu_type_block_bytes(type);
        *blk_chunks = (uint32_t)(be / 8);
    }
}

/* Calls the kernels of `type` directly: their position parameters are default
 * arguments, which a call through a function pointer would lose. */
#define QUANT_SWITCH(type, PREFIX, ...)                                  \
    switch (type) {                                                      \
    case AARMD_TYPE_F32: PREFIX##f32(__VA_ARGS__); break;                \
    case AARMD_TYPE_F16: PREFIX##f16(__VA_ARGS__); break;                \
    case AARMD_TYPE_BF16: PREFIX##bf16(__VA_ARGS__); break;              \
    case AARMD_TYPE_Q4_0: PREFIX##q4_0(__VA_ARGS__); break;              \
    case AARMD_TYPE_Q4_1: PREFIX##q4_1(__VA_ARGS__); break;              \
    case AARMD_TYPE_Q5_0: PREFIX##q5_0(__VA_ARGS__); break;              \
    case AARMD_TYPE_Q5_1: PREFIX##q5_1(__VA_ARGS__); break;              \
    case AARMD_TYPE_Q8_0: PREFIX##q8_0(__VA_ARGS__); break;              \
    case AARMD_TYPE_Q4_K: PREFIX##q4_k(__VA_ARGS__); break;              \
    case AARMD_TYPE_Q5_K: PREFIX##q5_k(__VA_ARGS__); break;              \
    case AARMD_TYPE_Q6_K: PREFIX##q6_k(__VA_ARGS__); break;              \
    default: break;                                                      \
    }

ParameterizedTestParameters(metal_quant, matvec)
{
    static struct qcase cases[] = {
        {AARMD_TYPE_F32, 8 * 45},    {AARMD_TYPE_F16, 8 * 45},    {AARMD_TYPE_BF16, 8 * 71},
        {AARMD_TYPE_Q4_0, 32 * 37},  {AARMD_TYPE_Q4_1, 32 * 37},  {AARMD_TYPE_Q5_0, 32 * 37},
        {AARMD_TYPE_Q5_1, 32 * 37},  {AARMD_TYPE_Q8_0, 32 * 37},  {AARMD_TYPE_Q4_0, 32 * 3},
        {AARMD_TYPE_Q4_K, 256 * 3},  {AARMD_TYPE_Q5_K, 256 * 3},  {AARMD_TYPE_Q6_K, 256 * 3},
        {AARMD_TYPE_Q4_K, 256 * 5},  {AARMD_TYPE_Q6_K, 256 * 1},
    };
    return cr_make_param_array(struct qcase, cases, sizeof cases / sizeof cases[0]);
}

/* y = W x for 13 rows (not a multiple of the 4 rows per threadgroup) and 3 tokens. */
ParameterizedTest(struct qcase *c, metal_quant, matvec)
{
    const int64_t n_out = 13;
    const uint32_t n_tok = 3;
    mt_rng r(c->type * 1000 + (uint64_t)c->n_in);
    std::vector<uint8_t> w = random_weights(c->type, c->n_in, n_out, r);
    std::vector<float> x = mt_random_floats(r, (size_t)(c->n_in * n_tok), -1, 1);
    std::vector<float> y(n_out * n_tok, NAN), want(n_out * n_tok), row((size_t)c->n_in);
    std::vector<double> mag(n_out * n_tok);
    size_t rb = cpu_type_row_bytes(c->type, c->n_in);
    for (int64_t o = 0; o < n_out; o++) {
        cpu_dequant(c->type, &w[rb * (size_t)o], row.data(), c->n_in);
        for (uint32_t t = 0; t < n_tok; t++) {
            double s = 0, m = 0;
            for (int64_t i = 0; i < c->n_in; i++) {
                s += (double)row[i] * x[t * c->n_in + i];
                m += fabs((double)row[i] * x[t * c->n_in + i]);
            }
            want[t * n_out + o] = (float)s;
            mag[t * n_out + o] = m;
        }
    }
    aarmd_mtl_mv_args a = {};
    a.n_in = (uint32_t)c->n_in;
    a.n_out = (uint32_t)n_out;
    a.n_tok = n_tok;
    a.row_bytes = (uint32_t)rb;
    blk_params(c->type, &a.blk_bytes, &a.blk_chunks);
    a.x_stride = a.n_in;
    a.y_stride = a.n_out;
    int rc = metal_sim::dispatch({(uint)(n_out + AARMD_MTL_MV_NSG - 1) / AARMD_MTL_MV_NSG, n_tok, 1},
                                 {32 * AARMD_MTL_MV_NSG, 1, 1},
                                 [&] { QUANT_SWITCH(c->type, aarmd_mv_, a, w.data(), x.data(), y.data()) });
    cr_assert_eq(rc, 0, "harness: %s", metal_sim::last_error());
    for (size_t i = 0; i < y.size(); i++)
        cr_assert(fabs((double)y[i] - want[i]) <= 2e-6 * mag[i] + 1e-6,
                  "%s n_in=%lld: y[%zu] = %.7g, want %.7g", cpu_type_name(c->type), (long long)c->n_in, i,
                  (double)y[i], (double)want[i]);
}

ParameterizedTestParameters(metal_quant, get_rows)
{
    static struct qcase cases[] = {
        {AARMD_TYPE_F32, 8 * 9},    {AARMD_TYPE_F16, 8 * 9},     {AARMD_TYPE_BF16, 8 * 9},
        {AARMD_TYPE_Q4_0, 32 * 11}, {AARMD_TYPE_Q4_1, 32 * 11},  {AARMD_TYPE_Q5_0, 32 * 11},
        {AARMD_TYPE_Q5_1, 32 * 11}, {AARMD_TYPE_Q8_0, 32 * 11},  {AARMD_TYPE_Q4_K, 256 * 2},
        {AARMD_TYPE_Q5_K, 256 * 2}, {AARMD_TYPE_Q6_K, 256 * 2},
    };
    return cr_make_param_array(struct qcase, cases, sizeof cases / sizeof cases[0]);
}

/* Embedding rows come out bit for bit as cpu_dequant makes them (times the scale 1). */
ParameterizedTest(struct qcase *c, metal_quant, get_rows)
{
    const int64_t n_rows = 7;
    mt_rng r(77 + c->type);
    std::vector<uint8_t> w = random_weights(c->type, c->n_in, n_rows, r);
    std::vector<int> tok = {3, 0, 6, 3, 5};
    std::vector<float> out(tok.size() * c->n_in, NAN), want(c->n_in);
    aarmd_mtl_get_rows_args a = {};
    a.n = (uint32_t)c->n_in;
    a.n_tok = (uint32_t)tok.size();
    a.row_bytes = (uint32_t)cpu_type_row_bytes(c->type, c->n_in);
    blk_params(c->type, &a.blk_bytes, &a.blk_chunks);
    a.scale = 1.0f;
    int rc = metal_sim::dispatch({(uint)tok.size(), 1, 1}, {64, 1, 1},
                                 [&] { QUANT_SWITCH(c->type, aarmd_get_rows_, a, w.data(), tok.data(), out.data()) });
    cr_assert_eq(rc, 0, "harness: %s", metal_sim::last_error());
    for (size_t t = 0; t < tok.size(); t++) {
        cpu_dequant(c->type, &w[a.row_bytes * (size_t)tok[t]], want.data(), c->n_in);
        cr_assert(memcmp(&out[t * c->n_in], want.data(), want.size() * sizeof(float)) == 0,
                  "%s: row of token %zu differs from cpu_dequant", cpu_type_name(c->type), t);
    }
}

ParameterizedTestParameters(metal_quant, matmul_tiled)
{
    static struct qcase cases[] = {
        {AARMD_TYPE_F32, 32 * 3},   {AARMD_TYPE_F16, 32 * 3},   {AARMD_TYPE_BF16, 32 * 5},  {AARMD_TYPE_Q4_0, 32 * 5},
        {AARMD_TYPE_Q4_1, 32 * 5},  {AARMD_TYPE_Q5_0, 32 * 5},  {AARMD_TYPE_Q5_1, 32 * 5},  {AARMD_TYPE_Q8_0, 32 * 5},
        {AARMD_TYPE_Q4_K, 256 * 2}, {AARMD_TYPE_Q5_K, 256 * 1}, {AARMD_TYPE_Q6_K, 256 * 2},
    };
    return cr_make_param_array(struct qcase, cases, sizeof cases / sizeof cases[0]);
}

/* The simdgroup-matrix kernel: 45 rows x 37 tokens (neither a multiple of the
 * 32 x 32 tile), strided x and y, against the same reference as the matvec. */
ParameterizedTest(struct qcase *c, metal_quant, matmul_tiled)
{
    const int64_t n_out = 45;
    const uint32_t n_tok = 37, xs = (uint32_t)c->n_in + 5, ys = (uint32_t)n_out + 3;
    mt_rng r(c->type * 7919 + (uint64_t)c->n_in);
    std::vector<uint8_t> w = random_weights(c->type, c->n_in, n_out, r);
    std::vector<float> x = mt_random_floats(r, (size_t)xs * n_tok, -1, 1);
    std::vector<float> y((size_t)ys * n_tok, -7.0f), row((size_t)c->n_in);
    std::vector<double> want((size_t)ys * n_tok, -7.0), mag((size_t)ys * n_tok, 0.0);
    size_t rb = cpu_type_row_bytes(c->type, c->n_in);
    for (int64_t o = 0; o < n_out; o++) {
        cpu_dequant(c->type, &w[rb * (size_t)o], row.data(), c->n_in);
        for (uint32_t t = 0; t < n_tok; t++) {
            double s = 0, m = 0;
            for (int64_t i = 0; i < c->n_in; i++) {
                s += (double)row[i] * x[(size_t)t * xs + i];
                m += fabs((double)row[i] * x[(size_t)t * xs + i]);
            }
            want[(size_t)t * ys + o] = s;
            mag[(size_t)t * ys + o] = m;
        }
    }
    aarmd_mtl_mv_args a = {};
    a.n_in = (uint32_t)c->n_in;
    a.n_out = (uint32_t)n_out;
    a.n_tok = n_tok;
    a.row_bytes = (uint32_t)rb;
    blk_params(c->type, &a.blk_bytes, &a.blk_chunks);
    a.x_stride = xs;
    a.y_stride = ys;
    const uint TL = AARMD_MTL_MM_TILE;
    int rc = metal_sim::dispatch({(uint)(n_out + TL - 1) / TL, (n_tok + TL - 1) / TL, 1}, {32 * AARMD_MTL_MM_NSG, 1, 1},
                                 [&] { QUANT_SWITCH(c->type, aarmd_mm_, a, w.data(), x.data(), y.data()) });
    cr_assert_eq(rc, 0, "harness: %s", metal_sim::last_error());
    for (size_t i = 0; i < y.size(); i++)   /* padding between rows stays untouched (-7) */
        cr_assert(fabs((double)y[i] - want[i]) <= 1e-5 * mag[i] + 1e-6, "%s n_in=%lld: y[%zu] = %.7g, want %.7g",
                  cpu_type_name(c->type), (long long)c->n_in, i, (double)y[i], want[i]);
}
