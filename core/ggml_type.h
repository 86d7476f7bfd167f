/*
 * ggml_type.h — facts about ggml tensor types: name, elements per block,
 * bytes per block. Row byte size = ne0 / block_elems * block_bytes.
 */
#ifndef AARMD_GGML_TYPE_H
#define AARMD_GGML_TYPE_H

#include <stdbool.h>
#include <stdint.h>

#include "aarmd_backend.h"

struct aarmd_type_info {
    const char *name;        /* "Q4_K", ... */
    uint32_t block_elems;    /* elements per block (1 for plain types) */
    uint32_t block_bytes;    /* bytes per block */
};

/* NULL for an unknown or removed type id. */
const struct aarmd_type_info *aarmd_type_info(uint32_t type);
const char *aarmd_type_name(uint32_t type);    /* "?" when unknown */
/* Bytes of a tensor with ne[0..n_dims-1]; false on overflow, unknown type or
 * ne[0] not a multiple of the block size. */
bool aarmd_type_nbytes(uint32_t type, const int64_t *ne, uint32_t n_dims, uint64_t *out);
/* Type id from a name (case-insensitive), -1 when unknown. */
int aarmd_type_from_name(const char *name);

#endif
