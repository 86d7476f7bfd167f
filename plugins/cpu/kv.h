/*
 * kv.h — the CPU backend's paged key/value cache (ABI 1.1, aarmd_backend.h):
 * one pool per model of fixed-size blocks, each holding K and V of
 * `block_tokens` positions for every layer, stored as F16 (default) or F32
 * (option kv_type=f32); and per sequence a block table into the pool
 * (struct cpu_kv). Blocks are reference counted so sequences can share a
 * prefix (cpu_kv_fork); a block held by more than one sequence is never
 * written: cpu_kv_reserve copies it first. Rows are written by forward.c
 * (cpu_kv_store) and read by ops.c through cpu_kv_k_row / cpu_kv_v_row.
 * Not thread-safe: the backend calls these from the model's one step thread.
 * Internal to plugins/cpu.
 */
#ifndef AARMD_CPU_KV_H
#define AARMD_CPU_KV_H

#include <stddef.h>
#include <stdint.h>

#include "aarmd_backend.h"

/* Default tokens per block (option kv_block). */
#define CPU_KV_BLOCK_DEFAULT 16
/* Largest kv_block accepted; block sizes are powers of two in [1, this]. */
#define CPU_KV_BLOCK_MAX 1024

/*
 * The block pool. Block b lies at data + b * block_bytes and holds, layer by
 * layer, the layer's K rows then its V rows:
 *   [n_layer][2 (K, V)][block_tokens][kv_dim] elements of `type`.
 */
struct cpu_kv_pool {
    uint32_t type;          /* AARMD_TYPE_F16 or AARMD_TYPE_F32 */
    size_t elt;             /* bytes per element (2 or 4) */
    int n_layer;
    int kv_dim;             /* n_head_kv * head_dim: elements per row */
    uint32_t block_tokens;  /* a power of two */
    int block_shift;        /* log2(block_tokens) */
    uint32_t n_blocks;
    size_t row_bytes;       /* kv_dim * elt */
    size_t plane_bytes;     /* block_tokens * row_bytes: one layer's K (or V) rows of a block */
    size_t block_bytes;     /* 2 * n_layer * plane_bytes */
    unsigned char *data;    /* [n_blocks][block_bytes], zeroed pages touched as blocks are first used */
    uint32_t *refs;         /* [n_blocks] sequences holding each block; 0 = free */
    uint32_t *free_ids;     /* [n_blocks] stack of free block ids; the top is taken next */
    uint32_t n_free;
};

/*
 * Creates a pool of n_blocks blocks (none held). AARMD_EINVAL for a bad type,
 * shape, block size (not a power of two in [1, CPU_KV_BLOCK_MAX]) or
 * n_blocks == 0; AARMD_ENOMEM when the memory is not there. On success *out
 * is the caller's: free with cpu_kv_pool_free after every sequence on it.
 */
int cpu_kv_pool_new(uint32_t type, int n_layer, int kv_dim, uint32_t block_tokens, uint32_t n_blocks,
                    struct cpu_kv_pool **out);
void cpu_kv_pool_free(struct cpu_kv_pool *pool);   /* accepts NULL */
/* Bytes of one block (K and V of every layer). */
size_t cpu_kv_block_bytes(uint32_t type, int n_layer, int kv_dim, uint32_t block_tokens);

/*
 * One sequence's view of the pool: table[i] is the block holding positions
 * [i * block_tokens, (i + 1) * block_tokens). The sequence holds exactly the
 * blocks of its first n_held entries. The hot fields are copied from the pool
 * so the row accessors read one struct.
 */
struct cpu_kv {
    uint32_t type;          /* as the pool's */
    size_t elt;
    int n_layer;
    int kv_dim;
    int block_shift;
    uint32_t block_mask;    /* block_tokens - 1 */
    size_t row_bytes, plane_bytes, block_bytes;
    unsigned char *data;    /* the pool's */
    int32_t n_ctx;          /* positions the sequence may hold */
    uint32_t *table;        /* [cap] block ids */
    uint32_t cap;           /* min(blocks for n_ctx, pool blocks) */
    uint32_t n_held;        /* blocks held: table[0 .. n_held) */
    struct cpu_kv_pool *pool;
    struct cpu_kv_pool *own;    /* the private pool of cpu_kv_init, else NULL */
};

/*
 * An empty sequence of up to n_ctx positions on `pool`: allocates the block
 * table only, takes no block. AARMD_EINVAL for n_ctx <= 0, AARMD_ENOMEM.
 * Undo with cpu_kv_fini.
 */
int cpu_kv_seq_init(struct cpu_kv *kv, struct cpu_kv_pool *pool, int32_t n_ctx);

/*
 * A sequence of up to n_ctx positions whose first n_tokens positions share
 * src's blocks (reference counted; nothing copied, no block taken).
 * n_tokens must be a multiple of block_tokens, at most the positions src's
 * held blocks cover and at most n_ctx: else AARMD_EINVAL. The caller checks
 * that src really holds n_tokens positions.
 */
int cpu_kv_fork(struct cpu_kv *kv, struct cpu_kv *src, int32_t n_tokens, int32_t n_ctx);

/*
 * A standalone cache of n_ctx positions with a private pool of
 * CPU_KV_BLOCK_DEFAULT-token blocks, all of them held (for tests and tools
 * that want a plain cache). AARMD_EINVAL on a bad type or shape (kv left
 * zeroed), AARMD_ENOMEM.
 */
int cpu_kv_init(struct cpu_kv *kv, uint32_t type, int n_layer, int32_t n_ctx, int kv_dim);

/* Gives every held block back to the pool, frees the table (and a private
 * pool); accepts a zeroed kv and may be called twice. */
void cpu_kv_fini(struct cpu_kv *kv);

/* Bytes of the K and V rows of n_ctx positions (what a contiguous cache of this view would take). */
size_t cpu_kv_bytes(const struct cpu_kv *kv);

/*
 * Blocks the pool must give for this sequence, now holding n_past positions,
 * to append n_new: blocks past those held, plus one when the block the first
 * new position falls in is partly filled and shared (it is copied first).
 * The caller keeps n_past + n_new <= n_ctx.
 */
uint32_t cpu_kv_blocks_needed(const struct cpu_kv *kv, int32_t n_past, int32_t n_new);

/*
 * Makes positions [n_past, n_past + n_new) writable: copies a shared partly
 * filled block, takes the blocks past those held. AARMD_ENOMEM, with the
 * sequence unchanged, when the pool has fewer than cpu_kv_blocks_needed free.
 */
int cpu_kv_reserve(struct cpu_kv *kv, int32_t n_past, int32_t n_new);

/* Keeps the blocks of the first n positions, gives the rest back at once. */
void cpu_kv_truncate(struct cpu_kv *kv, int32_t n);

/* dst[i] = cpu_f32_to_f16(src[i]) for i < n (F16C where the CPU has it: the same bits for any non-NaN). */
void cpu_kv_f32_to_f16(uint16_t *dst, const float *src, int n);

/* Start of the K (V) row of `layer` at `pos`: kv_dim elements of kv->type.
 * pos must lie in a held block. */
static inline const void *cpu_kv_k_row(const struct cpu_kv *kv, int layer, int32_t pos)
{
    return kv->data + (size_t)kv->table[(uint32_t)pos >> kv->block_shift] * kv->block_bytes +
           (size_t)(2 * layer) * kv->plane_bytes + (size_t)((uint32_t)pos & kv->block_mask) * kv->row_bytes;
}
static inline const void *cpu_kv_v_row(const struct cpu_kv *kv, int layer, int32_t pos)
{
    return (const unsigned char *)cpu_kv_k_row(kv, layer, pos) + kv->plane_bytes;
}

/* Writes the K and V rows (kv_dim floats each) of `layer` at position `pos`
 * (in a block cpu_kv_reserve made writable). */
void cpu_kv_store(struct cpu_kv *kv, int layer, int32_t pos, const float *k, const float *v);

/* F16 -> F32 by table (filled by cpu_kv_pool_new on first use). */
extern float cpu_f16_lut[65536];

#endif
