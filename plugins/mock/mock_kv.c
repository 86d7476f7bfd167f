/*
 * mock_kv.c — block pool and block tables of the mock's simulated paged KV
 * cache (see mock_kv.h). Bookkeeping only; the mock's step decides policy.
 */
#include <stdlib.h>
#include <string.h>

#include "mock_kv.h"

int mock_kv_init(struct mock_kv *kv, uint32_t n_blocks, uint32_t block_tokens, uint64_t block_bytes)
{
    memset(kv, 0, sizeof *kv);
    kv->free_ids = malloc((size_t)(n_blocks ? n_blocks : 1) * sizeof *kv->free_ids);
    kv->refs = calloc(n_blocks ? n_blocks : 1, sizeof *kv->refs);
    kv->vals = calloc((size_t)(n_blocks ? n_blocks : 1) * block_tokens, sizeof *kv->vals);
    if (!kv->free_ids || !kv->refs || !kv->vals)
        goto fail;
    kv->block_tokens = block_tokens;
    kv->n_blocks = n_blocks;
    kv->n_free = n_blocks;
    kv->block_bytes = block_bytes;
    /* low ids on top: handed out first */
    for (uint32_t i = 0; i < n_blocks; i++)
        kv->free_ids[i] = n_blocks - 1 - i;
    return 0;
fail:
    mock_kv_fini(kv);
    return -1;
}

void mock_kv_fini(struct mock_kv *kv)
{
    if (!kv)
        return;
    free(kv->free_ids);
    free(kv->refs);
    free(kv->vals);
    memset(kv, 0, sizeof *kv);
}

uint32_t mock_kv_blocks_for(const struct mock_kv *kv, uint64_t n_tokens)
{
    return (uint32_t)((n_tokens + kv->block_tokens - 1) / kv->block_tokens);
}

static uint32_t block_alloc(struct mock_kv *kv)
{
    uint32_t id = kv->free_ids[--kv->n_free];
    kv->refs[id] = 1;
    return id;
}

static void block_unref(struct mock_kv *kv, uint32_t id)
{
    if (--kv->refs[id] == 0)
        kv->free_ids[kv->n_free++] = id;
}

int mock_kv_table_init(const struct mock_kv *kv, struct mock_kv_table *t, uint32_t n_ctx)
{
    memset(t, 0, sizeof *t);
    t->cap = mock_kv_blocks_for(kv, n_ctx);
    t->ids = malloc((size_t)(t->cap ? t->cap : 1) * sizeof *t->ids);
    return t->ids ? 0 : -1;
}

void mock_kv_table_fini(struct mock_kv *kv, struct mock_kv_table *t)
{
    if (!t)
        return;
    mock_kv_shrink(kv, t, 0);
    free(t->ids);
    memset(t, 0, sizeof *t);
}

/* 1 when appending at len writes into a partial block other tables hold too. */
static int partial_tail_shared(const struct mock_kv *kv, const struct mock_kv_table *t, uint32_t len)
{
    return len % kv->block_tokens != 0 && kv->refs[t->ids[len / kv->block_tokens]] > 1;
}

uint32_t mock_kv_grow_need(const struct mock_kv *kv, const struct mock_kv_table *t, uint32_t len, uint32_t new_len)
{
    uint32_t want = mock_kv_blocks_for(kv, new_len);
    uint32_t need = want > t->n ? want - t->n : 0;
    if (new_len > len && partial_tail_shared(kv, t, len))
        need++;
    return need;
}

void mock_kv_grow(struct mock_kv *kv, struct mock_kv_table *t, uint32_t len, uint32_t new_len)
{
    if (new_len > len && partial_tail_shared(kv, t, len)) {
        uint32_t i = len / kv->block_tokens;
        uint32_t old = t->ids[i], copy = block_alloc(kv);
        memcpy(kv->vals + (size_t)copy * kv->block_tokens, kv->vals + (size_t)old * kv->block_tokens,
               (size_t)(len % kv->block_tokens) * sizeof *kv->vals);
        t->ids[i] = copy;
        block_unref(kv, old);
    }
    uint32_t want = mock_kv_blocks_for(kv, new_len);
    while (t->n < want)
        t->ids[t->n++] = block_alloc(kv);
}

void mock_kv_shrink(struct mock_kv *kv, struct mock_kv_table *t, uint32_t new_len)
{
    uint32_t keep = mock_kv_blocks_for(kv, new_len);
    while (t->n > keep)
        block_unref(kv, t->ids[--t->n]);
}

void mock_kv_share(struct mock_kv *kv, struct mock_kv_table *dst, const struct mock_kv_table *src, uint32_t n_blocks)
{
    for (uint32_t i = 0; i < n_blocks; i++) {
        dst->ids[i] = src->ids[i];
        kv->refs[src->ids[i]]++;
    }
    dst->n = n_blocks;
}
