/*
 * metal_kv.c — the Metal backend's KV block pool and block tables (see
 * metal_kv.h). Bookkeeping only: no Metal, no K/V data (backend_metal.m owns
 * the buffers and does the copies on write).
 */
#include "metal_kv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aarmd_backend.h"

static int kv_err(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int kv_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

int mtl_kv_pool_init(struct mtl_kv_pool *p, uint32_t n_blocks, uint32_t block_tokens, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    if (block_tokens == 0 || block_tokens > MTL_KV_MAX_BLOCK_TOKENS)
        return kv_err(err, errlen, AARMD_EINVAL, "KV block of %u tokens: expected 1..%u", block_tokens,
                      MTL_KV_MAX_BLOCK_TOKENS);
    if (n_blocks == 0 || n_blocks == UINT32_MAX)
        return kv_err(err, errlen, AARMD_EINVAL, "KV pool of %u blocks: expected 1..%u", n_blocks, UINT32_MAX - 1);
    p->free_ids = malloc((size_t)n_blocks * sizeof *p->free_ids);
    p->refs = calloc(n_blocks, sizeof *p->refs);
    if (!p->free_ids || !p->refs) {
        free(p->free_ids);
        free(p->refs);
        memset(p, 0, sizeof *p);
        return kv_err(err, errlen, AARMD_ENOMEM, "out of memory for a KV pool of %u blocks", n_blocks);
    }
    /* block 0 on top: a fresh pool hands out 0, 1, 2, ... */
    for (uint32_t i = 0; i < n_blocks; i++)
        p->free_ids[i] = n_blocks - 1 - i;
    p->block_tokens = block_tokens;
    p->n_blocks = n_blocks;
    p->n_free = n_blocks;
    return AARMD_OK;
}

void mtl_kv_pool_fini(struct mtl_kv_pool *p)
{
    if (!p)
        return;
    free(p->free_ids);
    free(p->refs);
    memset(p, 0, sizeof *p);
}

uint32_t mtl_kv_blocks_for(const struct mtl_kv_pool *p, uint64_t n_tokens)
{
    if (p->block_tokens == 0)
        return 0;   /* a zeroed pool */
    uint64_t b = (n_tokens + p->block_tokens - 1) / p->block_tokens;
    return b > UINT32_MAX ? UINT32_MAX : (uint32_t)b;
}

int mtl_kv_table_init(const struct mtl_kv_pool *p, struct mtl_kv_table *t, uint32_t n_ctx)
{
    memset(t, 0, sizeof *t);
    uint32_t cap = mtl_kv_blocks_for(p, n_ctx);
    if (cap > p->n_blocks)
        cap = p->n_blocks;
    t->ids = malloc((size_t)(cap ? cap : 1) * sizeof *t->ids);
    if (!t->ids)
        return AARMD_ENOMEM;
    t->cap = cap;
    return AARMD_OK;
}

static void release(struct mtl_kv_pool *p, uint32_t b)
{
    if (--p->refs[b] == 0)
        p->free_ids[p->n_free++] = b;
}

static uint32_t take(struct mtl_kv_pool *p)
{
    uint32_t b = p->free_ids[--p->n_free];
    p->refs[b] = 1;
    return b;
}

void mtl_kv_table_fini(struct mtl_kv_pool *p, struct mtl_kv_table *t)
{
    if (!t)
        return;
    mtl_kv_shrink(p, t, 0);
    free(t->ids);
    memset(t, 0, sizeof *t);
}

uint32_t mtl_kv_grow_need(const struct mtl_kv_pool *p, const struct mtl_kv_table *t, uint32_t len, uint32_t new_len)
{
    if (new_len <= len)
        return 0;
    uint32_t want = mtl_kv_blocks_for(p, new_len);
    uint32_t need = want > t->n ? want - t->n : 0;
    uint32_t last = want < t->n ? want : t->n;   /* held blocks that positions [len, new_len) touch */
    for (uint32_t i = len / p->block_tokens; i < last; i++)
        if (p->refs[t->ids[i]] > 1)
            need++;
    return need;
}

void mtl_kv_grow(struct mtl_kv_pool *p, struct mtl_kv_table *t, uint32_t len, uint32_t new_len, mtl_kv_copy_fn copy,
                 void *user)
{
    if (new_len <= len)
        return;
    uint32_t want = mtl_kv_blocks_for(p, new_len);
    uint32_t last = want < t->n ? want : t->n;
    for (uint32_t i = len / p->block_tokens; i < last; i++) {
        uint32_t b = t->ids[i];
        if (p->refs[b] > 1) {   /* shared: write into a private copy */
            uint32_t nb = take(p);
            if (copy)
                copy(user, b, nb);
            release(p, b);
            t->ids[i] = nb;
        }
    }
    while (t->n < want)
        t->ids[t->n++] = take(p);
}

void mtl_kv_shrink(struct mtl_kv_pool *p, struct mtl_kv_table *t, uint32_t new_len)
{
    uint32_t keep = mtl_kv_blocks_for(p, new_len);
    while (t->n > keep)
        release(p, t->ids[--t->n]);
}

void mtl_kv_share(struct mtl_kv_pool *p, struct mtl_kv_table *dst, const struct mtl_kv_table *src, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        dst->ids[i] = src->ids[i];
        p->refs[src->ids[i]]++;
    }
    dst->n = n;
}
