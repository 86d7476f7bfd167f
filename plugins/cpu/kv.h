/*
 * kv.h — one sequence's key/value cache in the CPU backend: per layer,
 * n_ctx rows of n_head_kv*head_dim elements for K and for V, stored as F16
 * (default) or F32 (option kv_type=f32). Rows are written once per token
 * and read by cpu_attend (ops.h). Internal to plugins/cpu.
 */
#ifndef AARMD_CPU_KV_H
#define AARMD_CPU_KV_H

#include <stddef.h>
#include <stdint.h>

#include "aarmd_backend.h"

struct cpu_kv {
    uint32_t type;      /* AARMD_TYPE_F16 or AARMD_TYPE_F32 */
    int n_layer;
    int32_t n_ctx;      /* rows per layer */
    int kv_dim;         /* n_head_kv * head_dim: elements per row */
    size_t elt;         /* bytes per element (2 or 4) */
    void *k;            /* [n_layer][n_ctx][kv_dim] */
    void *v;            /* [n_layer][n_ctx][kv_dim] */
};

/* Allocates the cache; AARMD_ENOMEM on failure (kv left empty), AARMD_EINVAL on a bad type. */
int cpu_kv_init(struct cpu_kv *kv, uint32_t type, int n_layer, int32_t n_ctx, int kv_dim);
void cpu_kv_fini(struct cpu_kv *kv);   /* frees the rows; accepts a zeroed kv */
size_t cpu_kv_bytes(const struct cpu_kv *kv);

/* dst[i] = cpu_f32_to_f16(src[i]) for i < n (F16C where the CPU has it: the same bits for any non-NaN). */
void cpu_kv_f32_to_f16(uint16_t *dst, const float *src, int n);

/* Writes the K and V rows (kv_dim floats each) of `layer` at position `pos`. */
void cpu_kv_store(struct cpu_kv *kv, int layer, int32_t pos, const float *k, const float *v);

/* Start of the K (V) row of `layer` at `pos`: kv_dim elements of kv->type. */
static inline const void *cpu_kv_k_row(const struct cpu_kv *kv, int layer, int32_t pos)
{
    return (const char *)kv->k + ((size_t)layer * (size_t)kv->n_ctx + (size_t)pos) * (size_t)kv->kv_dim * kv->elt;
}
static inline const void *cpu_kv_v_row(const struct cpu_kv *kv, int layer, int32_t pos)
{
    return (const char *)kv->v + ((size_t)layer * (size_t)kv->n_ctx + (size_t)pos) * (size_t)kv->kv_dim * kv->elt;
}

/* F16 -> F32 by table (filled by cpu_kv_init on first use). */
extern float cpu_f16_lut[65536];

#endif
