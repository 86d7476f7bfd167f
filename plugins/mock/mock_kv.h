/*
 * mock_kv.h — the mock backend's paged KV pool (ABI 1.1 paging, simulated):
 * fixed-size blocks with reference counts, and per-sequence block tables.
 * Plugin-internal (hidden symbols); no attention, only bookkeeping and one
 * 64-bit "KV" value per position (the mock's rolling history hash).
 *
 * Invariants: a block is free (refs 0, on the free stack) or held by refs >= 1
 * block tables; a block with refs > 1 is never written: a table whose partial
 * last block is shared copies it before appending (copy on write).
 */
#ifndef AARMD_MOCK_KV_H
#define AARMD_MOCK_KV_H

#include <stddef.h>
#include <stdint.h>

struct mock_kv {
    uint32_t block_tokens;   /* positions per block, 1..4096 */
    uint32_t n_blocks;       /* blocks in the pool */
    uint32_t n_free;         /* blocks on the free stack */
    uint64_t block_bytes;    /* reported by kv_info; nothing is allocated for it */
    uint32_t *free_ids;      /* [n_blocks] stack; the top n_free entries are free */
    uint32_t *refs;          /* [n_blocks] reference counts */
    uint64_t *vals;          /* [n_blocks * block_tokens] one value per position */
};

/* One sequence's blocks: ids[i] holds positions [i*B, (i+1)*B). */
struct mock_kv_table {
    uint32_t *ids;           /* [cap] */
    uint32_t n;              /* blocks held */
    uint32_t cap;            /* blocks for n_ctx tokens */
};

/* Sets up a pool of n_blocks blocks of block_tokens positions, all free.
 * Returns 0, or -1 when out of memory (kv left zeroed; fini accepts it). */
int mock_kv_init(struct mock_kv *kv, uint32_t n_blocks, uint32_t block_tokens, uint64_t block_bytes);
void mock_kv_fini(struct mock_kv *kv);   /* accepts a zeroed kv */

/* Blocks that cover n_tokens positions. */
uint32_t mock_kv_blocks_for(const struct mock_kv *kv, uint64_t n_tokens);

/* An empty table able to hold n_ctx tokens. Returns 0 or -1 (out of memory). */
int mock_kv_table_init(const struct mock_kv *kv, struct mock_kv_table *t, uint32_t n_ctx);
/* Releases every block of t and frees it; accepts a zeroed table. */
void mock_kv_table_fini(struct mock_kv *kv, struct mock_kv_table *t);

/* Free blocks that growing t from len to new_len positions takes: the new
 * blocks plus one when the partial last block is shared (copied on write).
 * Summed over a step it may count one copy too many (every holder of one
 * shared partial block appending in the same step): safe, never too few. */
uint32_t mock_kv_grow_need(const struct mock_kv *kv, const struct mock_kv_table *t, uint32_t len, uint32_t new_len);
/* Makes t cover new_len positions, copying a shared partial last block. The
 * caller has checked mock_kv_grow_need(...) <= kv->n_free and new_len <= cap. */
void mock_kv_grow(struct mock_kv *kv, struct mock_kv_table *t, uint32_t len, uint32_t new_len);
/* Keeps the blocks that cover new_len positions; the rest are released at once. */
void mock_kv_shrink(struct mock_kv *kv, struct mock_kv_table *t, uint32_t new_len);
/* dst (empty) takes a reference on src's first n_blocks blocks. */
void mock_kv_share(struct mock_kv *kv, struct mock_kv_table *dst, const struct mock_kv_table *src, uint32_t n_blocks);

/* The value slot of position pos (< t->n * block_tokens). */
static inline uint64_t *mock_kv_slot(const struct mock_kv *kv, const struct mock_kv_table *t, uint32_t pos)
{
    return kv->vals + (size_t)t->ids[pos / kv->block_tokens] * kv->block_tokens + pos % kv->block_tokens;
}
/* 1 when the block holding pos may be written (held by this table alone). */
static inline int mock_kv_writable(const struct mock_kv *kv, const struct mock_kv_table *t, uint32_t pos)
{
    return kv->refs[t->ids[pos / kv->block_tokens]] == 1;
}

#endif
