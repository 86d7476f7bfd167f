/*
 * test_cpu_kernels.c — the CPU backend's kernels (plugins/cpu/{quant,matmul,pool,simd_*}.c)
 * built straight into this program: dequantization bit-exact against gguf-py
 * fixtures, every SIMD level against plain C, matmul against an F32 reference
 * within the activation-quantization bound, the thread pool, bad inputs.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"
#include "gguf.h"
#include "quant_write.h"

static const uint32_t all_types[] = {
    AARMD_TYPE_F32, AARMD_TYPE_F16, AARMD_TYPE_BF16, AARMD_TYPE_Q4_0, AARMD_TYPE_Q4_1, AARMD_TYPE_Q5_0,
    AARMD_TYPE_Q5_1, AARMD_TYPE_Q8_0, AARMD_TYPE_Q4_K, AARMD_TYPE_Q5_K, AARMD_TYPE_Q6_K,
};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static float rng_unit(void) { return (float)((rng_next() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

static void *read_file(const char *dir_env, const char *name, size_t *len)
{
    const char *dir = getenv(dir_env);
    cr_assert(dir != NULL, "%s is not set (run through make check)", dir_env);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    cr_assert(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)n + 1);
    cr_assert(buf != NULL);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n, "short read of %s", path);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Byte offsets of the f16 scale fields of each block type. */
static void scale_fields(uint32_t type, int *off, int *n)
{
    *n = 0;
    switch (type) {
    case AARMD_TYPE_Q4_0: case AARMD_TYPE_Q5_0: case AARMD_TYPE_Q8_0:
        off[(*n)++] = 0; break;
    case AARMD_TYPE_Q4_1: case AARMD_TYPE_Q5_1: case AARMD_TYPE_Q4_K: case AARMD_TYPE_Q5_K:
        off[(*n)++] = 0; off[(*n)++] = 2; break;
    case AARMD_TYPE_Q6_K:
        off[(*n)++] = 208; break;
    default: break;
    }
}

/* Random weights {n_in, n_out}: random bytes (every byte pattern is a valid
 * block) with finite f16 scales; float types get values in [-1, 1]. */
static void *random_weights(uint32_t type, int64_t n_in, int64_t n_out, size_t *nbytes)
{
    size_t rb = cpu_type_row_bytes(type, n_in);
    cr_assert(rb > 0);
    *nbytes = rb * (size_t)n_out;
    uint8_t *w = malloc(*nbytes);
    cr_assert(w != NULL);
    int64_t n = n_in * n_out;
    if (type == AARMD_TYPE_F32) {
        for (int64_t i = 0; i < n; i++)
            ((float *)w)[i] = rng_unit();
    } else if (type == AARMD_TYPE_F16) {
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)w)[i] = cpu_f32_to_f16(rng_unit());
    } else if (type == AARMD_TYPE_BF16) {
        for (int64_t i = 0; i < n; i++) {
            float f = rng_unit();
            uint32_t u;
            memcpy(&u, &f, 4);
            ((uint16_t *)w)[i] = (uint16_t)(u >> 16);
        }
    } else {
        for (size_t i = 0; i < *nbytes; i++)
            w[i] = (uint8_t)rng_next();
        int off[2], nf;
        scale_fields(type, off, &nf);
        size_t bb = cpu_type_block_bytes(type);
        for (size_t b = 0; b < *nbytes / bb; b++)
            for (int k = 0; k < nf; k++) {
                uint16_t h = cpu_f32_to_f16(rng_unit() * 0.05f);
                memcpy(w + b * bb + (size_t)off[k], &h, 2);
            }
    }
    return w;
}

static float *random_x(int64_t n)
{
    float *x = malloc((size_t)n * sizeof *x);
    cr_assert(x != NULL);
    for (int64_t i = 0; i < n; i++)
        x[i] = rng_unit() * 2.0f;
    /* a few outliers and a zero block, as real activations have */
    x[n / 3] = 9.0f;
    if (n >= 512)
        memset(x + 256, 0, 32 * sizeof *x);
    return x;
}

static struct aarmd_tensor tensor(uint32_t type, int64_t n_in, int64_t n_out, const void *data, size_t nbytes)
{
    struct aarmd_tensor t = {.name = "test.weight", .type = type, .n_dims = 2,
                             .ne = {n_in, n_out, 1, 1}, .data = data, .nbytes = nbytes};
    return t;
}

static const enum cpu_simd simd_levels[] = {CPU_SIMD_AVX2, CPU_SIMD_AVX512, CPU_SIMD_NEON};

/* ---- F16 / BF16 ------------------------------------------------------------------ */

Test(cpu_f16, roundtrip_every_half)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = cpu_f16_to_f32((uint16_t)h);
        bool nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF);
        if (nan) {
            cr_assert(isnan(f), "0x%04x should be NaN", h);
            cr_assert(isnan(cpu_f16_to_f32(cpu_f32_to_f16(f))));
            continue;
        }
        cr_assert_eq(cpu_f32_to_f16(f), h, "0x%04x -> %g -> 0x%04x", h, (double)f, cpu_f32_to_f16(f));
    }
}

Test(cpu_f16, rounding_edges)
{
    cr_assert_eq(cpu_f32_to_f16(1.0f), 0x3C00);
    cr_assert_eq(cpu_f32_to_f16(-2.0f), 0xC000);
    cr_assert_eq(cpu_f32_to_f16(65504.0f), 0x7BFF);
    cr_assert_eq(cpu_f32_to_f16(65519.99f), 0x7BFF);
    cr_assert_eq(cpu_f32_to_f16(65520.0f), 0x7C00);          /* ties to even: inf */
    cr_assert_eq(cpu_f32_to_f16(1e10f), 0x7C00);
    cr_assert_eq(cpu_f32_to_f16(ldexpf(1.0f, -24)), 0x0001); /* smallest subnormal */
    cr_assert_eq(cpu_f32_to_f16(ldexpf(1.0f, -25)), 0x0000); /* tie to even: 0 */
    cr_assert_eq(cpu_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    cr_assert_eq(cpu_f32_to_f16(ldexpf(3.0f, -25)), 0x0002); /* 1.5 ulp: tie to even 2 */
    cr_assert_eq(cpu_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3C00);                        /* tie: even */
    cr_assert_eq(cpu_f32_to_f16(1.0f + ldexpf(3.0f, -11)), 0x3C02);                        /* tie: even */
    cr_assert_eq(cpu_f32_to_f16(1.0f + ldexpf(1.0f, -11) + ldexpf(1.0f, -20)), 0x3C01);    /* above tie */
    cr_assert_eq(cpu_f32_to_f16(-0.0f), 0x8000);
    cr_assert_eq(cpu_f32_to_f16(ldexpf(1.0f, -14)), 0x0400); /* smallest normal */
    cr_assert_eq(cpu_f32_to_f16(ldexpf(1023.5f, -24)), 0x0400); /* subnormal rounding up to normal */
    cr_assert_eq(cpu_bf16_to_f32(0x3F80), 1.0f);
    cr_assert_eq(cpu_bf16_to_f32(0xC040), -3.0f);
}

/* ---- per-type facts and bad input --------------------------------------------------------- */

Test(cpu_types, facts)
{
    struct { uint32_t t; int64_t blck; size_t bytes; enum cpu_act_kind act; } want[] = {
        {AARMD_TYPE_F32, 1, 4, CPU_ACT_F32},        {AARMD_TYPE_F16, 1, 2, CPU_ACT_F32},
        {AARMD_TYPE_BF16, 1, 2, CPU_ACT_F32},       {AARMD_TYPE_Q4_0, 32, 18, CPU_ACT_Q8A},
        {AARMD_TYPE_Q4_1, 32, 20, CPU_ACT_Q8A},     {AARMD_TYPE_Q5_0, 32, 22, CPU_ACT_Q8A},
        {AARMD_TYPE_Q5_1, 32, 24, CPU_ACT_Q8A},     {AARMD_TYPE_Q8_0, 32, 34, CPU_ACT_Q8A},
        {AARMD_TYPE_Q4_K, 256, 144, CPU_ACT_Q8K},   {AARMD_TYPE_Q5_K, 256, 176, CPU_ACT_Q8K},
        {AARMD_TYPE_Q6_K, 256, 210, CPU_ACT_Q8K},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert(cpu_type_supported(want[i].t));
        cr_assert_eq(cpu_type_block_elems(want[i].t), want[i].blck, "%s", cpu_type_name(want[i].t));
        cr_assert_eq(cpu_type_block_bytes(want[i].t), want[i].bytes, "%s", cpu_type_name(want[i].t));
        cr_assert_eq(cpu_type_act(want[i].t), want[i].act);
        cr_assert_eq(cpu_type_row_bytes(want[i].t, 512), (size_t)(512 / want[i].blck) * want[i].bytes);
    }
    cr_assert_eq(cpu_type_row_bytes(AARMD_TYPE_Q4_K, 288), 0, "288 is not whole Q4_K blocks");
    cr_assert_eq(cpu_type_row_bytes(AARMD_TYPE_Q4_0, 33), 0);
    cr_assert_eq(cpu_type_row_bytes(AARMD_TYPE_Q4_0, 0), 0);
    uint32_t unsupported[] = {AARMD_TYPE_Q2_K, AARMD_TYPE_Q3_K, AARMD_TYPE_Q8_1, AARMD_TYPE_Q8_K,
                              AARMD_TYPE_IQ4_NL, AARMD_TYPE_I8, AARMD_TYPE_MXFP4, 9999};
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        cr_assert_not(cpu_type_supported(unsupported[i]));
        cr_assert_eq(cpu_type_row_bytes(unsupported[i], 256), 0);
        cr_assert_str_eq(cpu_type_name(unsupported[i]), "?");
    }
    cr_assert_eq(cpu_matmul_scratch_bytes(AARMD_TYPE_Q4_0, 64, 3), 3 * 2 * sizeof(struct cpu_block_q8a));
    cr_assert_eq(cpu_matmul_scratch_bytes(AARMD_TYPE_Q6_K, 512, 2), 2 * 2 * sizeof(struct cpu_block_q8k));
    cr_assert_eq(cpu_matmul_scratch_bytes(AARMD_TYPE_F16, 512, 2), 0);
}

Test(cpu_types, weight_check_errors)
{
    char err[256];
    uint8_t data[4096] = {0};
    struct aarmd_tensor t = tensor(AARMD_TYPE_Q4_0, 64, 4, data, 4 * 36);
    cr_assert_eq(cpu_weight_check(&t, err, sizeof err), AARMD_OK, "%s", err);

    t.type = AARMD_TYPE_Q2_K;
    cr_assert_eq(cpu_weight_check(&t, err, sizeof err), AARMD_EUNSUPPORTED);
    cr_assert(strstr(err, "test.weight") && strstr(err, "not supported"), "message: %s", err);

    t = tensor(AARMD_TYPE_Q4_K, 300, 2, data, sizeof data);
    cr_assert_eq(cpu_weight_check(&t, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "not a multiple") && strstr(err, "Q4_K"), "message: %s", err);

    t = tensor(AARMD_TYPE_Q8_0, 64, 4, data, 4 * 68 - 1);
    cr_assert_eq(cpu_weight_check(&t, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "bytes"), "message: %s", err);

    t = tensor(AARMD_TYPE_F32, 64, 4, NULL, 1024);
    cr_assert_eq(cpu_weight_check(&t, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "no data"), "message: %s", err);

    t = tensor(AARMD_TYPE_F32, 64, 0, data, 1024);
    cr_assert_eq(cpu_weight_check(&t, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "ne[1]"), "message: %s", err);

    cr_assert_eq(cpu_weight_check(NULL, err, sizeof err), AARMD_EINVAL);
}

Test(cpu_types, unsupported_type_gives_zeros)
{
    uint8_t data[1024];
    memset(data, 0x55, sizeof data);
    struct aarmd_tensor t = tensor(AARMD_TYPE_Q2_K, 256, 2, data, sizeof data);
    float x[256], y[2] = {1.0f, 1.0f}, row[256];
    for (int i = 0; i < 256; i++)
        x[i] = 1.0f, row[i] = 1.0f;
    cpu_matmul(NULL, CPU_SIMD_NONE, &t, x, 1, y, NULL);
    cr_assert(y[0] == 0.0f && y[1] == 0.0f);
    cpu_dequant_row(&t, 1, row);
    cr_assert(row[0] == 0.0f && row[255] == 0.0f);
}

/* ---- dequantization against gguf-py fixtures ---------------------------------------------- */

ParameterizedTestParameters(cpu_dequant, fixtures)
{
    static uint32_t types[] = {AARMD_TYPE_F16, AARMD_TYPE_BF16, AARMD_TYPE_Q4_0, AARMD_TYPE_Q4_1,
                               AARMD_TYPE_Q5_0, AARMD_TYPE_Q5_1, AARMD_TYPE_Q8_0, AARMD_TYPE_Q4_K,
                               AARMD_TYPE_Q5_K, AARMD_TYPE_Q6_K};
    return cr_make_param_array(uint32_t, types, sizeof types / sizeof types[0]);
}

ParameterizedTest(uint32_t *type, cpu_dequant, fixtures)
{
    char name[64], lower[16];
    const char *tn = cpu_type_name(*type);
    size_t i;
    for (i = 0; tn[i] && i + 1 < sizeof lower; i++)
        lower[i] = (char)(tn[i] >= 'A' && tn[i] <= 'Z' ? tn[i] - 'A' + 'a' : tn[i]);
    lower[i] = 0;
    size_t nb, nf;
    snprintf(name, sizeof name, "quant/%s.blocks", lower);
    uint8_t *blocks = read_file("AARMD_TEST_DATA", name, &nb);
    snprintf(name, sizeof name, "quant/%s.f32", lower);
    float *want = read_file("AARMD_TEST_DATA", name, &nf);

    size_t bb = cpu_type_block_bytes(*type);
    int64_t be = cpu_type_block_elems(*type);
    cr_assert(nb > 0 && nb % bb == 0, "%s: %zu bytes is not whole blocks", name, nb);
    int64_t n = (int64_t)(nb / bb) * be;
    cr_assert_eq(nf, (size_t)n * sizeof(float), "%s: float count does not match the blocks", name);

    float *got = malloc((size_t)n * sizeof *got);
    cpu_dequant(*type, blocks, got, n);
    for (int64_t k = 0; k < n; k++)
        cr_assert(memcmp(&got[k], &want[k], 4) == 0, "%s element %lld: got %.9g want %.9g", tn, (long long)k,
                  (double)got[k], (double)want[k]);

    /* cpu_dequant_row picks the right row out of a tensor */
    if (nb / bb >= 2 && be > 1) {
        struct aarmd_tensor t = tensor(*type, be, (int64_t)(nb / bb), blocks, nb);
        cpu_dequant_row(&t, 1, got);
        cr_assert(memcmp(got, want + be, (size_t)be * 4) == 0, "%s: dequant_row(1)", tn);
    }
    free(got);
    free(blocks);
    free(want);
}

/* ---- cross-check against core/quant_write.c (an independent encoder) ---------------------- */

/* Worst-case error per element of each format's round-to-nearest encoder, as a
 * multiple of the block's spread (amax for the symmetric formats, max-min for
 * the ones with a min; for K-quants per 32-element sub-block, since 6-bit
 * sub-block scales and mins may round against you). */
static double encode_bound(uint32_t type)
{
    switch (type) {
    case AARMD_TYPE_Q8_0: return 0.6 / 127;
    case AARMD_TYPE_Q4_0: return 1.01 / 8;   /* +amax clamps from 8 to 7: a full step */
    case AARMD_TYPE_Q5_0: return 1.01 / 16;
    case AARMD_TYPE_Q4_1: return 0.6 / 15;
    case AARMD_TYPE_Q5_1: return 0.6 / 31;
    case AARMD_TYPE_Q4_K: return 1.5 / 15;
    case AARMD_TYPE_Q5_K: return 1.5 / 31;
    case AARMD_TYPE_Q6_K: return 1.5 / 32;
    case AARMD_TYPE_F16: return 1.0 / 1024;
    case AARMD_TYPE_BF16: return 1.0 / 128;
    default: return 0;
    }
}

ParameterizedTestParameters(cpu_dequant, quant_write_roundtrip)
{
    static uint32_t types[] = {AARMD_TYPE_F16, AARMD_TYPE_BF16, AARMD_TYPE_Q4_0, AARMD_TYPE_Q4_1,
                               AARMD_TYPE_Q5_0, AARMD_TYPE_Q5_1, AARMD_TYPE_Q8_0, AARMD_TYPE_Q4_K,
                               AARMD_TYPE_Q5_K, AARMD_TYPE_Q6_K};
    return cr_make_param_array(uint32_t, types, sizeof types / sizeof types[0]);
}

ParameterizedTest(uint32_t *type, cpu_dequant, quant_write_roundtrip)
{
    const int64_t n = 4096;
    float *x = random_x(n), *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 2048; i < 2048 + 256; i++)
        x[i] = 5.0f + 0.25f * x[i];   /* one all-positive super-block */
    void *q = malloc(cpu_type_row_bytes(*type, n));
    cr_assert(aarmd_quant_can_write(*type));
    cr_assert_eq(aarmd_quantize_row(*type, x, q, n), AARMD_OK);
    cpu_dequant(*type, q, y, n);

    int64_t grp = cpu_type_block_elems(*type);
    if (grp == CPU_QK_K || grp == 1)
        grp = 32;
    double bound = encode_bound(*type), sq_err = 0, sq_x = 0;
    for (int64_t b = 0; b < n; b += grp) {
        double lo = x[b], hi = x[b], amax = 0;
        for (int64_t i = b; i < b + grp; i++) {
            lo = fmin(lo, x[i]);
            hi = fmax(hi, x[i]);
            amax = fmax(amax, fabs(x[i]));
        }
        int asym = *type == AARMD_TYPE_Q4_1 || *type == AARMD_TYPE_Q5_1 || *type == AARMD_TYPE_Q4_K ||
                   *type == AARMD_TYPE_Q5_K;
        double spread = asym ? hi - lo : amax;
        for (int64_t i = b; i < b + grp; i++) {
            double e = fabs((double)y[i] - x[i]);
            double lim = *type == AARMD_TYPE_F16 || *type == AARMD_TYPE_BF16 ? bound * fabs(x[i]) : bound * spread;
            /* K-quant mins are >= 0 offsets: a sub-block wholly above 0 still spans [0, hi] */
            if ((*type == AARMD_TYPE_Q4_K || *type == AARMD_TYPE_Q5_K) && lo > 0)
                lim = bound * hi;
            cr_assert(e <= lim + 1e-6, "%s element %lld: x %g decoded %g (error %g > %g)", cpu_type_name(*type),
                      (long long)i, (double)x[i], (double)y[i], e, lim);
            sq_err += e * e;
            sq_x += (double)x[i] * x[i];
        }
    }
    cr_log_info("%s: encode/decode rms error %.4f of rms x", cpu_type_name(*type), sqrt(sq_err / sq_x));
    free(q);
    free(x);
    free(y);
}

/* ---- every SIMD level against plain C ---------------------------------------------------- */

/* Scale of the dot products: sum |w_i x_i| with the exact (dequantized) weights. */
static void abs_dot(uint32_t type, const void *w, int64_t n_in, int64_t n_out, const float *x, uint32_t n_tok,
                    double *out /* [n_tok * n_out] */)
{
    float *row = malloc((size_t)n_in * sizeof *row);
    size_t rb = cpu_type_row_bytes(type, n_in);
    for (int64_t r = 0; r < n_out; r++) {
        cpu_dequant(type, (const uint8_t *)w + (size_t)r * rb, row, n_in);
        for (uint32_t t = 0; t < n_tok; t++) {
            double s = 0;
            for (int64_t c = 0; c < n_in; c++)
                s += fabs((double)row[c] * x[(size_t)t * (size_t)n_in + (size_t)c]);
            out[(size_t)t * (size_t)n_out + (size_t)r] = s;
        }
    }
    free(row);
}

struct mm_case { uint32_t type; int64_t n_in; int64_t n_out; uint32_t n_tok; };

ParameterizedTestParameters(cpu_simd, matches_plain)
{
    static struct mm_case cases[N_TYPES * 3 + 3];
    static const int64_t shapes[3][2] = {{256, 7}, {768, 33}, {2304, 9}};
    static const uint32_t toks[3] = {1, 3, 17};
    size_t k = 0;
    for (size_t i = 0; i < N_TYPES; i++)
        for (int s = 0; s < 3; s++)
            cases[k++] = (struct mm_case){all_types[i], shapes[s][0], shapes[s][1], toks[(i + (size_t)s) % 3]};
    /* float rows of any length: the SIMD tails */
    cases[k++] = (struct mm_case){AARMD_TYPE_F32, 100, 7, 3};
    cases[k++] = (struct mm_case){AARMD_TYPE_F16, 37, 5, 2};
    cases[k++] = (struct mm_case){AARMD_TYPE_BF16, 250, 3, 5};
    return cr_make_param_array(struct mm_case, cases, k);
}

ParameterizedTest(struct mm_case *c, cpu_simd, matches_plain)
{
    rng_state = 0x1234567ull + c->type * 977u + (uint64_t)c->n_in;
    size_t nbytes;
    void *w = random_weights(c->type, c->n_in, c->n_out, &nbytes);
    struct aarmd_tensor t = tensor(c->type, c->n_in, c->n_out, w, nbytes);
    float *x = random_x(c->n_in * c->n_tok);
    size_t ny = (size_t)c->n_out * c->n_tok;
    float *y0 = malloc(ny * sizeof *y0), *y1 = malloc(ny * sizeof *y1);
    double *scale = malloc(ny * sizeof *scale);
    void *scratch = malloc(cpu_matmul_scratch_bytes(c->type, c->n_in, c->n_tok) + 1);
    abs_dot(c->type, w, c->n_in, c->n_out, x, c->n_tok, scale);

    cpu_matmul(NULL, CPU_SIMD_NONE, &t, x, c->n_tok, y0, scratch);
    double tol = cpu_type_act(c->type) == CPU_ACT_F32 ? 1e-5 : 1e-4;
    int tried = 0;
    for (size_t l = 0; l < sizeof simd_levels / sizeof simd_levels[0]; l++) {
        enum cpu_simd s = simd_levels[l];
        if (!cpu_simd_available(s))
            continue;
        tried++;
        memset(y1, 0xff, ny * sizeof *y1);
        cpu_matmul(NULL, s, &t, x, c->n_tok, y1, scratch);
        double worst = 0;
        for (size_t i = 0; i < ny; i++) {
            double rel = fabs((double)y1[i] - y0[i]) / (scale[i] > 0 ? scale[i] : 1.0);
            worst = fmax(worst, rel);
            cr_assert(rel <= tol, "%s %s n_in %lld out %zu: simd %.9g plain %.9g (rel %g of sum|wx| %g)",
                      cpu_simd_name(s), cpu_type_name(c->type), (long long)c->n_in, i, (double)y1[i],
                      (double)y0[i], rel, scale[i]);
        }
        cr_log_info("%s %s: worst error %.3g of sum|wx|", cpu_simd_name(s), cpu_type_name(c->type), worst);

        /* the single-token kernel and the multi-token kernel agree */
        const struct cpu_kernel_tab *tab = cpu_kernels_get(s);
        if (tab->dot_multi[c->type] && c->n_tok >= 2) {
            const void *a = cpu_type_act(c->type) == CPU_ACT_F32 ? (const void *)x : scratch;
            size_t a_rb = cpu_type_act(c->type) == CPU_ACT_F32 ? (size_t)c->n_in * 4 : cpu_act_row_bytes(c->type, c->n_in);
            float out[CPU_DOT_MAX_TOK];
            int nt = c->n_tok < CPU_DOT_MAX_TOK ? (int)c->n_tok : CPU_DOT_MAX_TOK;
            tab->dot_multi[c->type](c->n_in, w, a, a_rb, nt, out);
            for (int k = 0; k < nt; k++) {
                float one = tab->dot[c->type](c->n_in, w, (const uint8_t *)a + (size_t)k * a_rb);
                cr_assert(fabs((double)out[k] - one) <= 1e-6 * scale[(size_t)k * (size_t)c->n_out],
                          "%s %s dot_multi token %d: %g vs %g", cpu_simd_name(s), cpu_type_name(c->type), k,
                          (double)out[k], (double)one);
            }
        }
    }
    if (!tried)
        cr_log_warn("no SIMD level on this machine: only plain C was checked");
    free(w); free(x); free(y0); free(y1); free(scale); free(scratch);
}

/* ---- matmul against an F32 reference --------------------------------------------------- */

ParameterizedTestParameters(cpu_matmul, matches_f32_reference)
{
    static struct mm_case cases[N_TYPES * 2];
    size_t k = 0;
    for (size_t i = 0; i < N_TYPES; i++) {
        cases[k++] = (struct mm_case){all_types[i], 512, 33, 17};
        cases[k++] = (struct mm_case){all_types[i], 1024, 7, 3};
    }
    return cr_make_param_array(struct mm_case, cases, k);
}

/* Every level and 1-3 threads against dequantized weights x the unquantized x,
 * within the activation-quantization bound; thread counts must agree bit for bit. */
static void check_reference(const struct aarmd_tensor *t, uint32_t n_tok)
{
    struct mm_case cc = {t->type, t->ne[0], t->ne[1], n_tok}, *c = &cc;
    float *x = random_x(c->n_in * c->n_tok);
    size_t ny = (size_t)c->n_out * c->n_tok;

    /* reference: dequantized weights times the unquantized x, in double; and the
     * bound: each x_i moves by at most half its activation block's step d/2, so
     * |y - ref| <= sum_i |w_i| * step_i / 2 (plus float rounding, 1e-5 sum|w x|). */
    double *ref = calloc(ny, sizeof *ref), *bound = calloc(ny, sizeof *bound);
    float *row = malloc((size_t)c->n_in * sizeof *row);
    int64_t ab = cpu_type_act(c->type) == CPU_ACT_Q8A ? CPU_QK : cpu_type_act(c->type) == CPU_ACT_Q8K ? CPU_QK_K : 0;
    for (int64_t r = 0; r < c->n_out; r++) {
        cpu_dequant_row(t, r, row);
        for (uint32_t tk = 0; tk < c->n_tok; tk++) {
            const float *xt = x + (size_t)tk * (size_t)c->n_in;
            double s = 0, sabs = 0, q = 0;
            for (int64_t i = 0; i < c->n_in; i++) {
                s += (double)row[i] * xt[i];
                sabs += fabs((double)row[i] * xt[i]);
            }
            for (int64_t b = 0; ab && b < c->n_in; b += ab) {
                double amax = 0, wabs = 0;
                for (int64_t i = b; i < b + ab; i++) {
                    amax = fmax(amax, fabs(xt[i]));
                    wabs += fabs(row[i]);
                }
                q += wabs * (amax / 127.0) * 0.5 * (1 + 1e-6);
            }
            ref[(size_t)tk * (size_t)c->n_out + (size_t)r] = s;
            bound[(size_t)tk * (size_t)c->n_out + (size_t)r] = q + 1e-5 * sabs;
        }
    }

    float *y = malloc(ny * sizeof *y), *y_first = malloc(ny * sizeof *y_first);
    void *scratch = malloc(cpu_matmul_scratch_bytes(c->type, c->n_in, c->n_tok) + 1);
    enum cpu_simd levels[] = {CPU_SIMD_NONE, CPU_SIMD_AVX2, CPU_SIMD_AVX512, CPU_SIMD_NEON};
    int threads[] = {1, 2, 3};
    for (size_t l = 0; l < 4; l++) {
        if (!cpu_simd_available(levels[l]))
            continue;
        for (size_t th = 0; th < 3; th++) {
            struct cpu_pool *pool = cpu_pool_new(threads[th]);
            cr_assert(pool != NULL);
            memset(y, 0xff, ny * sizeof *y);
            cpu_matmul(pool, levels[l], t, x, c->n_tok, y, scratch);
            cpu_pool_free(pool);
            double worst = 0;
            for (size_t i = 0; i < ny; i++) {
                double e = fabs((double)y[i] - ref[i]);
                worst = fmax(worst, e / bound[i]);
                cr_assert(e <= bound[i], "%s %s %d threads, out %zu: got %.9g want %.9g (error %g > bound %g)",
                          cpu_simd_name(levels[l]), cpu_type_name(c->type), threads[th], i, (double)y[i], ref[i], e,
                          bound[i]);
            }
            /* the split over threads does not change a single bit */
            if (th == 0)
                memcpy(y_first, y, ny * sizeof *y);
            else
                cr_assert(memcmp(y, y_first, ny * sizeof *y) == 0, "%s %s: %d threads differ from 1 thread",
                          cpu_simd_name(levels[l]), cpu_type_name(c->type), threads[th]);
            if (th == 0)
                cr_log_info("%s %s: worst error %.3f of the bound", cpu_simd_name(levels[l]), cpu_type_name(c->type),
                            worst);
        }
    }
    free(x); free(ref); free(bound); free(row); free(y); free(y_first); free(scratch);
}

ParameterizedTest(struct mm_case *c, cpu_matmul, matches_f32_reference)
{
    rng_state = 0xABCDEFull + c->type * 131u + (uint64_t)c->n_out;
    size_t nbytes;
    void *w = random_weights(c->type, c->n_in, c->n_out, &nbytes);
    struct aarmd_tensor t = tensor(c->type, c->n_in, c->n_out, w, nbytes);
    char err[256];
    cr_assert_eq(cpu_weight_check(&t, err, sizeof err), AARMD_OK, "%s", err);
    check_reference(&t, c->n_tok);
    free(w);
}

/* ---- activation quantization: the vector path gives the plain path's bytes ----------- */

Test(cpu_quantize, vector_path_matches_plain_bytes)
{
    const int64_t n = 4 * CPU_QK_K;
    float *x = malloc((size_t)n * sizeof *x);
    rng_state = 0xfeedull;
    for (int pass = 0; pass < 6; pass++) {
        for (int64_t i = 0; i < n; i++) {
            float r = (float)((int64_t)(rng_next() % 2000001) - 1000000) / 1000000.0f;
            switch (pass) {
            case 0: x[i] = r; break;                                   /* plain noise */
            case 1: x[i] = r * 1e4f; break;                            /* large */
            case 2: x[i] = (i % 97 == 0) ? 50.0f : r * 1e-3f; break;   /* spikes */
            case 3: x[i] = 0.0f; break;                                /* all zero: d = 0 */
            case 4: x[i] = (float)((i % 255) - 127); break;            /* exact integers and halves below */
            default: x[i] = ((float)(i % 64) - 31.5f) * (127.0f / 31.5f) * 0.5f; break;
            }
        }
        static const uint32_t types[] = {AARMD_TYPE_Q4_1, AARMD_TYPE_Q4_K};
        for (int k = 0; k < 2; k++) {
            size_t nb = cpu_act_row_bytes(types[k], n);
            unsigned char *a = malloc(nb), *b = malloc(nb);
            memset(a, 0x5a, nb);
            memset(b, 0xa5, nb);
            cpu_quantize_act(types[k], x, a, n);
            cpu_quantize_act_plain(types[k], x, b, n);
            cr_assert(memcmp(a, b, nb) == 0, "pass %d, %s activations differ", pass, cpu_type_name(types[k]));
            free(a);
            free(b);
        }
    }
    free(x);
}

/* ---- matmul groups (q/k/v, gate/up in one pool run) ---------------------------------- */

/* A group gives each weight's product bit for bit as cpu_matmul alone does, for mixed
 * types (two activation kinds and float in one group), any thread count and pool
 * activity, and token counts on both sides of the tiles. */
Test(cpu_matmul, group_equals_separate_matmuls)
{
    static const uint32_t types[][3] = {{AARMD_TYPE_Q4_1, AARMD_TYPE_Q4_1, AARMD_TYPE_Q4_1},
                                        {AARMD_TYPE_Q5_0, AARMD_TYPE_Q4_K, AARMD_TYPE_Q8_0},
                                        {AARMD_TYPE_Q6_K, AARMD_TYPE_F32, AARMD_TYPE_Q4_0}};
    static const int64_t n_out[3] = {96, 40, 40};
    const int64_t n_in = 512;
    static const uint32_t toks[] = {1, 5, 70};
    rng_state = 0x5eedull;
    for (size_t g = 0; g < 3; g++) {
        struct aarmd_tensor t[3];
        void *w[3];
        const struct aarmd_tensor *tp[3];
        for (int i = 0; i < 3; i++) {
            size_t nb;
            w[i] = random_weights(types[g][i], n_in, n_out[i], &nb);
            t[i] = tensor(types[g][i], n_in, n_out[i], w[i], nb);
            tp[i] = &t[i];
        }
        for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++) {
            uint32_t nt = toks[k];
            float *x = random_x(n_in * nt);
            size_t sb = cpu_matmul_group_scratch_bytes(3, tp, nt);
            for (int i = 0; i < 3; i++)
                cr_assert_geq(sb, cpu_matmul_scratch_bytes(types[g][i], n_in, nt));
            void *scratch = malloc(sb + 1);
            float *ref[3], *got[3];
            for (int i = 0; i < 3; i++) {
                ref[i] = malloc((size_t)nt * (size_t)n_out[i] * sizeof(float));
                got[i] = malloc((size_t)nt * (size_t)n_out[i] * sizeof(float));
                cpu_matmul(NULL, cpu_simd_detect(), tp[i], x, nt, ref[i], scratch);
            }
            for (int th = 1; th <= 3; th++) {
                struct cpu_pool *pool = cpu_pool_new(th);
                for (int act = th; act >= 1; act--) {
                    cpu_pool_set_active(pool, act);
                    cr_assert_eq(cpu_pool_active(pool), act);
                    for (int n_w = 1; n_w <= 3; n_w++) {
                        for (int i = 0; i < n_w; i++)
                            memset(got[i], 0xff, (size_t)nt * (size_t)n_out[i] * sizeof(float));
                        cpu_matmul_group(pool, cpu_simd_detect(), n_w, tp, x, nt, got, scratch);
                        for (int i = 0; i < n_w; i++)
                            cr_assert(memcmp(got[i], ref[i], (size_t)nt * (size_t)n_out[i] * sizeof(float)) == 0,
                                      "group %zu (%d weights), weight %d (%s), %u tokens, %d of %d threads differs",
                                      g, n_w, i, cpu_type_name(types[g][i]), nt, act, th);
                    }
                }
                cpu_pool_free(pool);
            }
            for (int i = 0; i < 3; i++) {
                free(ref[i]);
                free(got[i]);
            }
            free(scratch);
            free(x);
        }
        for (int i = 0; i < 3; i++)
            free(w[i]);
    }
}

/* Batch invariance (the prefix cache relies on it): at every level and for every type, a
 * token's outputs are the same bits whether it is multiplied alone or at any place in a
 * batch of 2..37 tokens, and a row's the same whether the weight has 37 rows or only the
 * first few (other row tiles), with 1 or 2 threads. Inputs random, outputs compared by memcmp. */
ParameterizedTestParameters(cpu_matmul, batch_invariant)
{
    return cr_make_param_array(uint32_t, (void *)all_types, N_TYPES);
}

ParameterizedTest(uint32_t *type, cpu_matmul, batch_invariant)
{
    const int64_t n_in = 512, n_out = 37, n_sub = 5;
    const uint32_t n_tok = 37;
    rng_state = 0xba7c4ull + *type * 131u;
    size_t nb;
    void *w = random_weights(*type, n_in, n_out, &nb);
    struct aarmd_tensor t = tensor(*type, n_in, n_out, w, nb);
    struct aarmd_tensor sub = tensor(*type, n_in, n_sub, w, nb / (size_t)n_out * (size_t)n_sub);
    float *x = random_x(n_in * n_tok);
    float *full = malloc((size_t)n_tok * n_out * sizeof *full), *part = malloc((size_t)n_tok * n_out * sizeof *part);
    void *scratch = malloc(cpu_matmul_scratch_bytes(*type, n_in, n_tok) + 1);
    struct cpu_pool *pool = cpu_pool_new(2);
    cr_assert(full && part && scratch && pool);
    for (int l = 0; l < 4; l++) {
        enum cpu_simd s = (enum cpu_simd)l;
        if (!cpu_simd_available(s))
            continue;
        cpu_matmul(pool, s, &t, x, n_tok, full, scratch);
        int differs = 0;
        for (uint32_t b = 1; b <= n_tok; b++) {
            uint32_t t0 = (b * 7u) % (n_tok - b + 1);   /* a window of b tokens somewhere in the batch */
            memset(part, 0xff, (size_t)b * n_out * sizeof *part);
            cpu_matmul(b % 2 ? NULL : pool, s, &t, x + (size_t)t0 * n_in, b, part, scratch);
            cr_assert(memcmp(part, full + (size_t)t0 * n_out, (size_t)b * n_out * sizeof *part) == 0,
                      "%s %s: tokens %u..%u as a batch of %u differ from the batch of %u", cpu_simd_name(s),
                      cpu_type_name(*type), t0, t0 + b - 1, b, n_tok);
            memset(part, 0xff, (size_t)b * n_out * sizeof *part);
            cpu_matmul(pool, s, &sub, x + (size_t)t0 * n_in, b, part, scratch);
            for (uint32_t k = 0; k < b; k++)
                differs |= memcmp(part + (size_t)k * n_sub, full + (size_t)(t0 + k) * n_out, n_sub * sizeof(float));
        }
        cr_assert(!differs, "%s %s: the first %lld rows differ when the weight has only them", cpu_simd_name(s),
                  cpu_type_name(*type), (long long)n_sub);
    }
    cpu_pool_free(pool);
    free(w); free(x); free(full); free(part); free(scratch);
}

Test(cpu_matmul, group_bad_sizes_do_nothing)
{
    const struct aarmd_tensor *none[1] = {NULL};
    float y = 7.0f, *yp = &y;
    cr_assert_eq(cpu_matmul_group_scratch_bytes(0, none, 4), 0);
    cr_assert_eq(cpu_matmul_group_scratch_bytes(CPU_MM_GROUP_MAX + 1, none, 4), 0);
    cpu_matmul_group(NULL, CPU_SIMD_NONE, 0, none, &y, 1, &yp, NULL);
    cpu_matmul_group(NULL, CPU_SIMD_NONE, CPU_MM_GROUP_MAX + 1, none, &y, 1, &yp, NULL);
    cr_assert_float_eq(y, 7.0f, 0.0f, "a refused group wrote its output");
}

Test(cpu_pool, set_active_clamps_and_null)
{
    struct cpu_pool *pool = cpu_pool_new(3);
    cr_assert_eq(cpu_pool_active(pool), 3);
    cpu_pool_set_active(pool, 0);
    cr_assert_eq(cpu_pool_active(pool), 1);
    cpu_pool_set_active(pool, 99);
    cr_assert_eq(cpu_pool_active(pool), 3);
    cpu_pool_free(pool);
    cpu_pool_set_active(NULL, 2);   /* ignored */
    cr_assert_eq(cpu_pool_active(NULL), 1);
}

/* ---- real weights from the test models ----------------------------------------------- */

/* arrays, not pointers: Criterion may run a test in a fresh process (other addresses) */
struct model_case { char file[64]; char tensor[48]; uint32_t type; };

ParameterizedTestParameters(cpu_matmul, real_model_tensors)
{
    static struct model_case cases[] = {
        {"SmolLM2-135M-Instruct.Q4_1.gguf", "blk.0.ffn_down.weight", AARMD_TYPE_Q4_1},
        {"SmolLM2-135M-Instruct.Q4_1.gguf", "token_embd.weight", AARMD_TYPE_Q8_0},
        {"SmolLM2-135M-Instruct.Q4_1.gguf", "blk.0.attn_norm.weight", AARMD_TYPE_F32},
        {"gemma-3-270m-q4_k_m.gguf", "blk.0.attn_output.weight", AARMD_TYPE_Q4_K},
        {"gemma-3-270m-q4_k_m.gguf", "blk.0.ffn_down.weight", AARMD_TYPE_Q6_K},
        {"gemma-3-270m-q4_k_m.gguf", "blk.0.attn_k.weight", AARMD_TYPE_Q5_0},
    };
    return cr_make_param_array(struct model_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct model_case *mc, cpu_matmul, real_model_tensors)
{
    const char *dir = getenv("AARMD_TEST_MODELS");
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "models", mc->file);
    struct aarmd_gguf *g = NULL;
    if (aarmd_gguf_open(path, &g, err, sizeof err) != AARMD_OK)
        cr_skip_test("model not available (%s): run tools/fetch-models.sh", err);
    const struct aarmd_gguf_tensor *gt = aarmd_gguf_find_tensor(g, mc->tensor);
    cr_assert_not_null(gt, "%s has no %s", mc->file, mc->tensor);
    cr_assert_eq(gt->type, mc->type, "%s is %s, expected %s", mc->tensor, cpu_type_name(gt->type),
                 cpu_type_name(mc->type));
    struct aarmd_tensor t = {.name = gt->name, .type = gt->type, .n_dims = gt->n_dims,
                             .ne = {gt->ne[0], gt->ne[1], gt->ne[2], gt->ne[3]}, .data = gt->data,
                             .nbytes = gt->nbytes};
    cr_assert_eq(cpu_weight_check(&t, err, sizeof err), AARMD_OK, "%s", err);
    /* a slice of rows keeps the reference cheap: 1-D tensors become one row */
    int64_t rows = t.ne[1] < 40 ? t.ne[1] : 40;
    t.ne[1] = rows;
    t.ne[2] = t.ne[3] = 1;
    t.nbytes = cpu_type_row_bytes(t.type, t.ne[0]) * (uint64_t)rows;
    rng_state = 0x5151ull + mc->type;
    check_reference(&t, 6);
    aarmd_gguf_free(g);
}

/* ---- thread pool -------------------------------------------------------------------- */

struct count_job {
    atomic_int hits[8];
    atomic_int nth_seen;
};

static void count_cb(void *arg, int ith, int nth)
{
    struct count_job *j = arg;
    atomic_fetch_add(&j->hits[ith], 1);
    atomic_store(&j->nth_seen, nth);
}

Test(cpu_pool, runs_every_worker_once_per_run)
{
    for (int n = 1; n <= 4; n++) {
        struct cpu_pool *pool = cpu_pool_new(n);
        cr_assert(pool != NULL);
        cr_assert_eq(cpu_pool_threads(pool), n);
        struct count_job j;
        for (int i = 0; i < 8; i++)
            atomic_init(&j.hits[i], 0);
        atomic_init(&j.nth_seen, 0);
        for (int run = 0; run < 2000; run++)
            cpu_pool_run(pool, count_cb, &j);
        for (int i = 0; i < 8; i++)
            cr_assert_eq(atomic_load(&j.hits[i]), i < n ? 2000 : 0, "n %d worker %d", n, i);
        cr_assert_eq(atomic_load(&j.nth_seen), n);
        cpu_pool_free(pool);
    }
}

static void slow_cb(void *arg, int ith, int nth)
{
    (void)nth;
    struct count_job *j = arg;
    if (ith == 1) {   /* outlast the spin so the caller has to sleep */
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_fetch_add(&j->hits[ith], 1);
}

Test(cpu_pool, waits_for_slow_workers_and_sleeping_workers)
{
    struct cpu_pool *pool = cpu_pool_new(3);
    struct count_job j;
    for (int i = 0; i < 8; i++)
        atomic_init(&j.hits[i], 0);
    for (int run = 0; run < 5; run++) {
        cpu_pool_run(pool, slow_cb, &j);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(atomic_load(&j.hits[i]), run + 1, "run %d worker %d", run, i);
        struct timespec ts = {0, 30 * 1000 * 1000};   /* let the workers go to sleep */
        nanosleep(&ts, NULL);
    }
    cpu_pool_free(pool);
}

Test(cpu_pool, bad_sizes_and_null)
{
    cr_assert_null(cpu_pool_new(0));
    cr_assert_null(cpu_pool_new(-3));
    cpu_pool_free(NULL);
    cr_assert_eq(cpu_pool_threads(NULL), 1);
    struct count_job j;
    for (int i = 0; i < 8; i++)
        atomic_init(&j.hits[i], 0);
    cpu_pool_run(NULL, count_cb, &j);   /* NULL pool: the caller runs it alone */
    cr_assert_eq(atomic_load(&j.hits[0]), 1);
}

Test(cpu_simd, names_and_detection)
{
    cr_assert_str_eq(cpu_simd_name(CPU_SIMD_NONE), "none");
    cr_assert_str_eq(cpu_simd_name(CPU_SIMD_AVX2), "avx2");
    cr_assert_str_eq(cpu_simd_name(CPU_SIMD_AVX512), "avx512");
    cr_assert_str_eq(cpu_simd_name(CPU_SIMD_NEON), "neon");
    cr_assert(cpu_simd_available(CPU_SIMD_NONE));
    cr_assert(cpu_simd_available(cpu_simd_detect()));
    /* a level the machine lacks falls back instead of crashing */
    for (int s = 0; s < 4; s++)
        for (size_t i = 0; i < N_TYPES; i++)
            cr_assert_not_null(cpu_kernels_get((enum cpu_simd)s)->dot[all_types[i]]);
#if defined(__x86_64__)
    cr_assert_not(cpu_simd_available(CPU_SIMD_NEON));
#endif
    cr_log_info("best SIMD level here: %s", cpu_simd_name(cpu_simd_detect()));
}

Test(cpu_types, k4_scale_unpack_matches_reference)
{
    uint8_t scales[12];
    uint32_t got[4];
    for (int it = 0; it < 20000; it++) {
        for (int i = 0; i < 12; i++)
            scales[i] = (uint8_t)rng_next();
        if (it == 0)
            memset(scales, 0xFF, sizeof scales);
        cpu_scales_k4_unpack(scales, got);
        for (int j = 0; j < 8; j++) {
            uint8_t sc, mn;
            cpu_scale_min_k4(j, scales, &sc, &mn);
            cr_assert(CPU_K4_SC(got, j) == sc && CPU_K4_MN(got, j) == mn, "iteration %d sub-block %d: %d/%d vs %u/%u",
                      it, j, CPU_K4_SC(got, j), CPU_K4_MN(got, j), sc, mn);
        }
    }
}

struct chunk_job {
    atomic_int hits[257];
    atomic_int total;
};

static void chunk_cb(void *arg, int64_t c)
{
    struct chunk_job *j = arg;
    atomic_fetch_add(&j->hits[c], 1);
    atomic_fetch_add(&j->total, 1);
}

Test(cpu_pool, chunks_each_run_exactly_once_mixed_with_static_runs)
{
    for (int n = 1; n <= 4; n++) {
        struct cpu_pool *pool = cpu_pool_new(n);
        cr_assert(pool != NULL);
        for (int run = 0; run < 600; run++) {
            struct chunk_job j;
            int64_t nc = (run * 37) % 258;   /* 0..257 chunks, including none and one */
            for (int i = 0; i < 257; i++)
                atomic_init(&j.hits[i], 0);
            atomic_init(&j.total, 0);
            cpu_pool_run_chunks(pool, chunk_cb, &j, nc > 257 ? 257 : nc);
            int64_t want = nc > 257 ? 257 : nc;
            cr_assert_eq(atomic_load(&j.total), want, "n %d run %d", n, run);
            for (int64_t i = 0; i < want; i++)
                cr_assert_eq(atomic_load(&j.hits[i]), 1, "n %d run %d chunk %lld", n, run, (long long)i);
            if (run % 3 == 0) {   /* static runs in between still reach every worker */
                struct count_job cj;
                for (int i = 0; i < 8; i++)
                    atomic_init(&cj.hits[i], 0);
                atomic_init(&cj.nth_seen, 0);
                cpu_pool_run(pool, count_cb, &cj);
                for (int i = 0; i < n; i++)
                    cr_assert_eq(atomic_load(&cj.hits[i]), 1, "n %d run %d worker %d", n, run, i);
            }
        }
        cpu_pool_free(pool);
    }
}

static void slow_chunk_cb(void *arg, int64_t c)
{
    struct chunk_job *j = arg;
    if (c == 0) {   /* one slow chunk: the others must still all be done, once */
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_fetch_add(&j->hits[c], 1);
}

Test(cpu_pool, chunks_wait_for_a_slow_chunk)
{
    struct cpu_pool *pool = cpu_pool_new(3);
    for (int run = 0; run < 5; run++) {
        struct chunk_job j;
        for (int i = 0; i < 257; i++)
            atomic_init(&j.hits[i], 0);
        cpu_pool_run_chunks(pool, slow_chunk_cb, &j, 64);
        for (int i = 0; i < 64; i++)
            cr_assert_eq(atomic_load(&j.hits[i]), 1, "run %d chunk %d", run, i);
        struct timespec ts = {0, 25 * 1000 * 1000};   /* let the workers go to sleep */
        nanosleep(&ts, NULL);
    }
    cpu_pool_free(pool);
}
