/*
 * ggml_type.c — the table of ggml tensor types (name, block elements, block
 * bytes) and overflow-checked tensor byte counts. No quantisation code here.
 */
#include <stddef.h>
#include <stdint.h>
#include <strings.h>

#include "ggml_type.h"

/* Block layouts as in ggml-common.h (QK_K = 256). Ids 4, 5 and 31..33,
 * 36..38 were removed from ggml and stay unknown. */
static const struct aarmd_type_info type_table[] = {
    [AARMD_TYPE_F32] = {"F32", 1, 4},
    [AARMD_TYPE_F16] = {"F16", 1, 2},
    [AARMD_TYPE_Q4_0] = {"Q4_0", 32, 18},       /* f16 d, 16 B nibbles */
    [AARMD_TYPE_Q4_1] = {"Q4_1", 32, 20},       /* f16 d, f16 m, 16 B */
    [AARMD_TYPE_Q5_0] = {"Q5_0", 32, 22},       /* f16 d, 4 B qh, 16 B */
    [AARMD_TYPE_Q5_1] = {"Q5_1", 32, 24},       /* f16 d, m, 4 B qh, 16 B */
    [AARMD_TYPE_Q8_0] = {"Q8_0", 32, 34},       /* f16 d, 32 i8 */
    [AARMD_TYPE_Q8_1] = {"Q8_1", 32, 36},       /* f16 d, s, 32 i8 */
    [AARMD_TYPE_Q2_K] = {"Q2_K", 256, 84},
    [AARMD_TYPE_Q3_K] = {"Q3_K", 256, 110},
    [AARMD_TYPE_Q4_K] = {"Q4_K", 256, 144},
    [AARMD_TYPE_Q5_K] = {"Q5_K", 256, 176},
    [AARMD_TYPE_Q6_K] = {"Q6_K", 256, 210},
    [AARMD_TYPE_Q8_K] = {"Q8_K", 256, 292},     /* f32 d, 256 i8, 16 i16 bsums */
    [AARMD_TYPE_IQ2_XXS] = {"IQ2_XXS", 256, 66},
    [AARMD_TYPE_IQ2_XS] = {"IQ2_XS", 256, 74},
    [AARMD_TYPE_IQ3_XXS] = {"IQ3_XXS", 256, 98},
    [AARMD_TYPE_IQ1_S] = {"IQ1_S", 256, 50},
    [AARMD_TYPE_IQ4_NL] = {"IQ4_NL", 32, 18},
    [AARMD_TYPE_IQ3_S] = {"IQ3_S", 256, 110},
    [AARMD_TYPE_IQ2_S] = {"IQ2_S", 256, 82},
    [AARMD_TYPE_IQ4_XS] = {"IQ4_XS", 256, 136},
    [AARMD_TYPE_I8] = {"I8", 1, 1},
    [AARMD_TYPE_I16] = {"I16", 1, 2},
    [AARMD_TYPE_I32] = {"I32", 1, 4},
    [AARMD_TYPE_I64] = {"I64", 1, 8},
    [AARMD_TYPE_F64] = {"F64", 1, 8},
    [AARMD_TYPE_IQ1_M] = {"IQ1_M", 256, 56},
    [AARMD_TYPE_BF16] = {"BF16", 1, 2},
    [AARMD_TYPE_TQ1_0] = {"TQ1_0", 256, 54},
    [AARMD_TYPE_TQ2_0] = {"TQ2_0", 256, 66},
    [AARMD_TYPE_MXFP4] = {"MXFP4", 32, 17},     /* e8m0 scale, 16 B fp4 */
};

#define N_TYPES (sizeof type_table / sizeof type_table[0])

const struct aarmd_type_info *aarmd_type_info(uint32_t type)
{
    if (type >= N_TYPES || !type_table[type].name)
        return NULL;
    return &type_table[type];
}

const char *aarmd_type_name(uint32_t type)
{
    const struct aarmd_type_info *ti = aarmd_type_info(type);
    return ti ? ti->name : "?";
}

bool aarmd_type_nbytes(uint32_t type, const int64_t *ne, uint32_t n_dims, uint64_t *out)
{
    const struct aarmd_type_info *ti = aarmd_type_info(type);
    if (!ti || !ne || n_dims < 1 || n_dims > 4)
        return false;
    /* The element count must fit int64 too (ggml's own limit). */
    uint64_t elems = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        if (ne[i] < 0)
            return false;
        if (ne[i] && elems > (uint64_t)INT64_MAX / (uint64_t)ne[i])
            return false;
        elems *= (uint64_t)ne[i];
    }
    if ((uint64_t)ne[0] % ti->block_elems)
        return false;
    /* Rows of whole blocks, then the other dims; every step checked. */
    uint64_t n = (uint64_t)ne[0] / ti->block_elems;
    if (n && ti->block_bytes > UINT64_MAX / n)
        return false;
    n *= ti->block_bytes;
    for (uint32_t i = 1; i < n_dims; i++) {
        uint64_t d = (uint64_t)ne[i];
        if (d && n > UINT64_MAX / d)
            return false;
        n *= d;
    }
    if (n > (uint64_t)INT64_MAX)
        return false;
    *out = n;
    return true;
}

int aarmd_type_from_name(const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < N_TYPES; i++)
        if (type_table[i].name && !strcasecmp(type_table[i].name, name))
            return (int)i;
    return -1;
}
