/*
 * metal_kv.h — block bookkeeping of the Metal backend's paged KV cache (ABI 1.1
 * paging): a pool of fixed-size blocks with reference counts and per-sequence
 * block tables. Plain C, no Metal: the caller owns the K/V buffers and copies
 * a block's rows when told to (copy on write). Internal to plugins/metal.
 *
 * Invariants: a block is free (refs 0, on the free stack) or held by refs >= 1
 * tables, at most once per table; a block with refs > 1 is never written: a
 * table about to write into a shared block gets a private copy first.
 */
#ifndef AARMD_METAL_KV_H
#define AARMD_METAL_KV_H

#include <stddef.h>
#include <stdint.h>

#define MTL_KV_MAX_BLOCK_TOKENS 1024u

struct mtl_kv_pool {
    uint32_t block_tokens;   /* positions per block, 1..MTL_KV_MAX_BLOCK_TOKENS */
    uint32_t n_blocks;       /* blocks in the pool */
    uint32_t n_free;         /* blocks on the free stack */
    uint32_t *free_ids;      /* [n_blocks]; entries [0, n_free) are free, the top is taken first */
    uint32_t *refs;          /* [n_blocks] reference counts */
};

/* One sequence's blocks: ids[i] holds positions [i*B, (i+1)*B). */
struct mtl_kv_table {
    uint32_t *ids;           /* [cap] */
    uint32_t n;              /* blocks held */
    uint32_t cap;            /* most blocks the table may hold */
};

/* Called for each copy on write: the caller copies block src's rows (every
 * layer, K and V) into block dst. */
typedef void (*mtl_kv_copy_fn)(void *user, uint32_t src, uint32_t dst);

/* A pool of n_blocks (>= 1, < UINT32_MAX) blocks of block_tokens positions,
 * all free. AARMD_OK, AARMD_EINVAL (bad sizes; message in err) or AARMD_ENOMEM
 * (pool left zeroed; fini accepts it). */
int mtl_kv_pool_init(struct mtl_kv_pool *p, uint32_t n_blocks, uint32_t block_tokens, char *err, size_t errlen);
void mtl_kv_pool_fini(struct mtl_kv_pool *p);   /* accepts a zeroed pool */

/* Blocks that cover n_tokens positions (rounded up; saturates at UINT32_MAX). */
uint32_t mtl_kv_blocks_for(const struct mtl_kv_pool *p, uint64_t n_tokens);

/* An empty table for up to n_ctx tokens (cap = min(blocks for n_ctx, pool
 * size): a table never holds a block twice). AARMD_OK or AARMD_ENOMEM. */
int mtl_kv_table_init(const struct mtl_kv_pool *p, struct mtl_kv_table *t, uint32_t n_ctx);
/* Releases every block of t and frees its array; accepts a zeroed table. */
void mtl_kv_table_fini(struct mtl_kv_pool *p, struct mtl_kv_table *t);

/* Free blocks that writing positions [len, new_len) of t takes: blocks it does
 * not hold yet, plus one per held block of that range that is shared (copied
 * on write). Conservative when several tables of one step share a block. */
uint32_t mtl_kv_grow_need(const struct mtl_kv_pool *p, const struct mtl_kv_table *t, uint32_t len, uint32_t new_len);
/* Makes t cover new_len positions and every block of [len, new_len) private,
 * calling copy for each shared block replaced. The caller has checked
 * mtl_kv_grow_need(...) <= p->n_free. */
void mtl_kv_grow(struct mtl_kv_pool *p, struct mtl_kv_table *t, uint32_t len, uint32_t new_len, mtl_kv_copy_fn copy,
                 void *user);
/* Keeps the blocks that cover new_len positions; the rest are released at once. */
void mtl_kv_shrink(struct mtl_kv_pool *p, struct mtl_kv_table *t, uint32_t new_len);
/* dst (empty, cap >= n) takes a reference on src's first n blocks. */
void mtl_kv_share(struct mtl_kv_pool *p, struct mtl_kv_table *dst, const struct mtl_kv_table *src, uint32_t n);

#endif
