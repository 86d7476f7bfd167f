/* test_ggml_type.c — the ggml type table (block sizes from ggml-common.h) and
 * overflow-checked byte counts of core/ggml_type.c. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdint.h>
#include <string.h>

#include "ggml_type.h"

struct type_case {
    uint32_t id;
    char name[12];     /* an array, not a pointer: Criterion re-executes the test binary */
    uint32_t block_elems, block_bytes;
};

/* Independent restatement of ggml's block structs: sizeof(block_x) per QK. */
static struct type_case cases[] = {
    {AARMD_TYPE_F32, "F32", 1, 4},          {AARMD_TYPE_F16, "F16", 1, 2},
    {AARMD_TYPE_BF16, "BF16", 1, 2},        {AARMD_TYPE_Q4_0, "Q4_0", 32, 2 + 16},
    {AARMD_TYPE_Q4_1, "Q4_1", 32, 4 + 16},  {AARMD_TYPE_Q5_0, "Q5_0", 32, 2 + 4 + 16},
    {AARMD_TYPE_Q5_1, "Q5_1", 32, 4 + 4 + 16}, {AARMD_TYPE_Q8_0, "Q8_0", 32, 2 + 32},
    {AARMD_TYPE_Q8_1, "Q8_1", 32, 4 + 32},
    {AARMD_TYPE_Q2_K, "Q2_K", 256, 16 + 64 + 4},
    {AARMD_TYPE_Q3_K, "Q3_K", 256, 32 + 64 + 12 + 2},
    {AARMD_TYPE_Q4_K, "Q4_K", 256, 4 + 12 + 128},
    {AARMD_TYPE_Q5_K, "Q5_K", 256, 4 + 12 + 32 + 128},
    {AARMD_TYPE_Q6_K, "Q6_K", 256, 128 + 64 + 16 + 2},
    {AARMD_TYPE_Q8_K, "Q8_K", 256, 4 + 256 + 32},
    {AARMD_TYPE_IQ2_XXS, "IQ2_XXS", 256, 2 + 64},
    {AARMD_TYPE_IQ2_XS, "IQ2_XS", 256, 2 + 64 + 8},
    {AARMD_TYPE_IQ3_XXS, "IQ3_XXS", 256, 2 + 96},
    {AARMD_TYPE_IQ1_S, "IQ1_S", 256, 2 + 32 + 16},
    {AARMD_TYPE_IQ4_NL, "IQ4_NL", 32, 2 + 16},
    {AARMD_TYPE_IQ3_S, "IQ3_S", 256, 2 + 64 + 8 + 32 + 4},
    {AARMD_TYPE_IQ2_S, "IQ2_S", 256, 2 + 64 + 8 + 8},
    {AARMD_TYPE_IQ4_XS, "IQ4_XS", 256, 2 + 2 + 4 + 128},
    {AARMD_TYPE_IQ1_M, "IQ1_M", 256, 32 + 16 + 8},
    {AARMD_TYPE_TQ1_0, "TQ1_0", 256, 48 + 4 + 2},
    {AARMD_TYPE_TQ2_0, "TQ2_0", 256, 64 + 2},
    {AARMD_TYPE_MXFP4, "MXFP4", 32, 1 + 16},
    {AARMD_TYPE_I8, "I8", 1, 1},            {AARMD_TYPE_I16, "I16", 1, 2},
    {AARMD_TYPE_I32, "I32", 1, 4},          {AARMD_TYPE_I64, "I64", 1, 8},
    {AARMD_TYPE_F64, "F64", 1, 8},
};

ParameterizedTestParameters(ggml_type, table)
{
    return cr_make_param_array(struct type_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct type_case *c, ggml_type, table)
{
    const struct aarmd_type_info *ti = aarmd_type_info(c->id);
    cr_assert_not_null(ti, "type %u (%s) unknown", c->id, c->name);
    cr_assert_str_eq(ti->name, c->name);
    cr_assert_eq(ti->block_elems, c->block_elems, "%s block elems %u", c->name, ti->block_elems);
    cr_assert_eq(ti->block_bytes, c->block_bytes, "%s block bytes %u", c->name, ti->block_bytes);
    cr_assert_str_eq(aarmd_type_name(c->id), c->name);
    cr_assert_eq(aarmd_type_from_name(c->name), (int)c->id);
}

Test(ggml_type, removed_and_unknown_ids)
{
    uint32_t bad[] = {4, 5, 31, 32, 33, 36, 37, 38, 40, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_null(aarmd_type_info(bad[i]), "id %u", bad[i]);
        cr_assert_str_eq(aarmd_type_name(bad[i]), "?");
        uint64_t n = 7;
        int64_t ne[1] = {32};
        cr_assert(!aarmd_type_nbytes(bad[i], ne, 1, &n));
    }
    cr_assert_eq(aarmd_type_from_name("Q4_2"), -1);
    cr_assert_eq(aarmd_type_from_name(""), -1);
    cr_assert_eq(aarmd_type_from_name(NULL), -1);
}

Test(ggml_type, from_name_is_case_insensitive)
{
    cr_assert_eq(aarmd_type_from_name("q4_k"), AARMD_TYPE_Q4_K);
    cr_assert_eq(aarmd_type_from_name("bf16"), AARMD_TYPE_BF16);
    cr_assert_eq(aarmd_type_from_name("Iq2_Xxs"), AARMD_TYPE_IQ2_XXS);
}

Test(ggml_type, nbytes_of_real_shapes)
{
    uint64_t n = 0;
    int64_t emb[2] = {576, 49152};     /* SmolLM2 token_embd, Q8_0 */
    cr_assert(aarmd_type_nbytes(AARMD_TYPE_Q8_0, emb, 2, &n));
    cr_assert_eq(n, 576ull / 32 * 34 * 49152);
    int64_t ffn[2] = {640, 2048};      /* 640 is not a multiple of 256: Q4_K can't hold it */
    cr_assert(!aarmd_type_nbytes(AARMD_TYPE_Q4_K, ffn, 2, &n));
    int64_t k[2] = {1024, 3};
    cr_assert(aarmd_type_nbytes(AARMD_TYPE_Q6_K, k, 2, &n));
    cr_assert_eq(n, 4 * 210 * 3);
    int64_t v[4] = {7, 3, 2, 5};
    cr_assert(aarmd_type_nbytes(AARMD_TYPE_F32, v, 4, &n));
    cr_assert_eq(n, 7 * 3 * 2 * 5 * 4);
}

Test(ggml_type, nbytes_zero_dims_give_zero)
{
    uint64_t n = 99;
    int64_t ne[3] = {0, 5, 5};
    cr_assert(aarmd_type_nbytes(AARMD_TYPE_Q4_0, ne, 3, &n));
    cr_assert_eq(n, 0);
    int64_t ne2[2] = {32, 0};
    cr_assert(aarmd_type_nbytes(AARMD_TYPE_Q4_0, ne2, 2, &n));
    cr_assert_eq(n, 0);
}

Test(ggml_type, nbytes_refuses_bad_shapes)
{
    uint64_t n = 0;
    int64_t odd[1] = {33};
    cr_assert(!aarmd_type_nbytes(AARMD_TYPE_Q8_0, odd, 1, &n), "33 not a multiple of 32");
    int64_t neg[2] = {32, -1};
    cr_assert(!aarmd_type_nbytes(AARMD_TYPE_F32, neg, 2, &n));
    int64_t ok[1] = {32};
    cr_assert(!aarmd_type_nbytes(AARMD_TYPE_F32, ok, 0, &n), "0 dims");
    cr_assert(!aarmd_type_nbytes(AARMD_TYPE_F32, ok, 5, &n), "5 dims");
    cr_assert(!aarmd_type_nbytes(AARMD_TYPE_F32, NULL, 1, &n));
}

Test(ggml_type, nbytes_refuses_overflow)
{
    uint64_t n = 0;
    /* bytes overflow u64 in the last multiplication */
    int64_t big[2] = {INT64_C(1) << 40, INT64_C(1) << 30};
    cr_assert(!aarmd_type_nbytes(AARMD_TYPE_F32, big, 2, &n));
    /* elements overflow int64 even though the Q4_K byte count would fit */
    int64_t elems[4] = {INT64_C(1) << 32, INT64_C(1) << 16, INT64_C(1) << 15, 1};
    cr_assert(aarmd_type_nbytes(AARMD_TYPE_Q4_K, elems, 3, &n) == false);
    /* one row of INT64_MAX-ish F64 elements: bytes > INT64_MAX */
    int64_t row[1] = {INT64_MAX / 4};
    cr_assert(!aarmd_type_nbytes(AARMD_TYPE_F64, row, 1, &n));
    /* the largest that fits is accepted */
    int64_t fits[1] = {INT64_MAX / 8};
    cr_assert(aarmd_type_nbytes(AARMD_TYPE_F64, fits, 1, &n));
    cr_assert_eq(n, (uint64_t)(INT64_MAX / 8) * 8);
}
