/*
 * kv.c — the paged KV cache of the CPU backend (kv.h): the block pool, block
 * tables, sharing and copy-on-write, row writes. It does not compute
 * attention (ops.c does) nor decide positions or pool sizes (forward.c and
 * backend_cpu.c do).
 */
#include "kv.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

float cpu_f16_lut[65536];
static pthread_once_t lut_once = PTHREAD_ONCE_INIT;

static void lut_fill(void)
{
    for (uint32_t i = 0; i < 65536; i++)
        cpu_f16_lut[i] = cpu_f16_to_f32((uint16_t)i);
}

/* ---- the pool --------------------------------------------------------------- */

static int log2_exact(uint32_t v)
{
    if (v == 0 || (v & (v - 1)))
        return -1;
    int s = 0;
    while ((1u << s) != v)
        s++;
    return s;
}

size_t cpu_kv_block_bytes(uint32_t type, int n_layer, int kv_dim, uint32_t block_tokens)
{
    size_t elt = type == AARMD_TYPE_F16 ? 2 : 4;
    return 2 * (size_t)n_layer * (size_t)block_tokens * (size_t)kv_dim * elt;
}

int cpu_kv_pool_new(uint32_t type, int n_layer, int kv_dim, uint32_t block_tokens, uint32_t n_blocks,
                    struct cpu_kv_pool **out)
{
    *out = NULL;
    int shift = log2_exact(block_tokens);
    if (type != AARMD_TYPE_F16 && type != AARMD_TYPE_F32)
        return AARMD_EINVAL;
    if (n_layer <= 0 || kv_dim <= 0 || shift < 0 || block_tokens > CPU_KV_BLOCK_MAX || n_blocks == 0)
        return AARMD_EINVAL;
    pthread_once(&lut_once, lut_fill);
    struct cpu_kv_pool *p = calloc(1, sizeof *p);
    if (!p)
        return AARMD_ENOMEM;
    p->type = type;
    p->elt = type == AARMD_TYPE_F16 ? 2 : 4;
    p->n_layer = n_layer;
    p->kv_dim = kv_dim;
    p->block_tokens = block_tokens;
    p->block_shift = shift;
    p->n_blocks = n_blocks;
    p->row_bytes = (size_t)kv_dim * p->elt;
    p->plane_bytes = (size_t)block_tokens * p->row_bytes;
    p->block_bytes = 2 * (size_t)n_layer * p->plane_bytes;
    if (p->block_bytes > SIZE_MAX / n_blocks)
        goto nomem;
    /* calloc of this size maps zero pages: a block costs memory when first written */
    p->data = calloc(n_blocks, p->block_bytes);
    p->refs = calloc(n_blocks, sizeof *p->refs);
    p->free_ids = malloc((size_t)n_blocks * sizeof *p->free_ids);
    if (!p->data || !p->refs || !p->free_ids)
        goto nomem;
    /* the top of the stack is block 0: low blocks are used (and paged in) first,
     * and a freed block, pushed on top, is the next one reused */
    for (uint32_t i = 0; i < n_blocks; i++)
        p->free_ids[i] = n_blocks - 1 - i;
    p->n_free = n_blocks;
    *out = p;
    return AARMD_OK;
nomem:
    cpu_kv_pool_free(p);
    return AARMD_ENOMEM;
}

void cpu_kv_pool_free(struct cpu_kv_pool *pool)
{
    if (!pool)
        return;
    free(pool->data);
    free(pool->refs);
    free(pool->free_ids);
    free(pool);
}

static uint32_t block_take(struct cpu_kv_pool *p)
{
    uint32_t b = p->free_ids[--p->n_free];
    p->refs[b] = 1;
    return b;
}

static void block_drop(struct cpu_kv_pool *p, uint32_t b)
{
    if (--p->refs[b] == 0)
        p->free_ids[p->n_free++] = b;
}

/* ---- a sequence's table ------------------------------------------------------ */

static void view_init(struct cpu_kv *kv, struct cpu_kv_pool *pool, int32_t n_ctx)
{
    memset(kv, 0, sizeof *kv);
    kv->type = pool->type;
    kv->elt = pool->elt;
    kv->n_layer = pool->n_layer;
    kv->kv_dim = pool->kv_dim;
    kv->block_shift = pool->block_shift;
    kv->block_mask = pool->block_tokens - 1;
    kv->row_bytes = pool->row_bytes;
    kv->plane_bytes = pool->plane_bytes;
    kv->block_bytes = pool->block_bytes;
    kv->data = pool->data;
    kv->n_ctx = n_ctx;
    kv->pool = pool;
}

/* Blocks covering n positions. */
static uint32_t blocks_for(const struct cpu_kv *kv, int64_t n)
{
    return (uint32_t)((n + kv->block_mask) >> kv->block_shift);
}

int cpu_kv_seq_init(struct cpu_kv *kv, struct cpu_kv_pool *pool, int32_t n_ctx)
{
    memset(kv, 0, sizeof *kv);
    if (!pool || n_ctx <= 0)
        return AARMD_EINVAL;
    view_init(kv, pool, n_ctx);
    /* a sequence can never hold more blocks than the pool has */
    uint32_t need = blocks_for(kv, n_ctx);
    kv->cap = need < pool->n_blocks ? need : pool->n_blocks;
    kv->table = malloc((size_t)kv->cap * sizeof *kv->table);
    if (!kv->table) {
        memset(kv, 0, sizeof *kv);
        return AARMD_ENOMEM;
    }
    return AARMD_OK;
}

int cpu_kv_fork(struct cpu_kv *kv, struct cpu_kv *src, int32_t n_tokens, int32_t n_ctx)
{
    memset(kv, 0, sizeof *kv);
    if (!src || !src->pool || n_tokens < 0 || n_tokens > n_ctx || ((uint32_t)n_tokens & src->block_mask))
        return AARMD_EINVAL;
    uint32_t nb = (uint32_t)n_tokens >> src->block_shift;
    if (nb > src->n_held)
        return AARMD_EINVAL;
    int rc = cpu_kv_seq_init(kv, src->pool, n_ctx);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < nb; i++) {
        kv->table[i] = src->table[i];
        src->pool->refs[src->table[i]]++;
    }
    kv->n_held = nb;
    return AARMD_OK;
}

int cpu_kv_init(struct cpu_kv *kv, uint32_t type, int n_layer, int32_t n_ctx, int kv_dim)
{
    memset(kv, 0, sizeof *kv);
    if (n_ctx <= 0)
        return AARMD_EINVAL;
    uint32_t nb = (uint32_t)(((int64_t)n_ctx + CPU_KV_BLOCK_DEFAULT - 1) / CPU_KV_BLOCK_DEFAULT);
    struct cpu_kv_pool *pool = NULL;
    int rc = cpu_kv_pool_new(type, n_layer, kv_dim, CPU_KV_BLOCK_DEFAULT, nb, &pool);
    if (rc)
        return rc;
    if ((rc = cpu_kv_seq_init(kv, pool, n_ctx))) {
        cpu_kv_pool_free(pool);
        return rc;
    }
    kv->own = pool;
    cpu_kv_reserve(kv, 0, n_ctx);   /* cannot fail: the pool was sized for it */
    return AARMD_OK;
}

void cpu_kv_fini(struct cpu_kv *kv)
{
    if (!kv)
        return;
    cpu_kv_truncate(kv, 0);
    free(kv->table);
    cpu_kv_pool_free(kv->own);
    memset(kv, 0, sizeof *kv);
}

size_t cpu_kv_bytes(const struct cpu_kv *kv)
{
    return 2 * (size_t)kv->n_layer * (size_t)kv->n_ctx * (size_t)kv->kv_dim * kv->elt;
}

uint32_t cpu_kv_blocks_needed(const struct cpu_kv *kv, int32_t n_past, int32_t n_new)
{
    uint32_t want = blocks_for(kv, (int64_t)n_past + n_new);
    uint32_t need = want > kv->n_held ? want - kv->n_held : 0;
    uint32_t first = (uint32_t)n_past >> kv->block_shift;
    if (n_new > 0 && ((uint32_t)n_past & kv->block_mask) && first < kv->n_held &&
        kv->pool->refs[kv->table[first]] > 1)
        need++;   /* copy-on-write of the shared block the first new row goes into */
    return need;
}

int cpu_kv_reserve(struct cpu_kv *kv, int32_t n_past, int32_t n_new)
{
    struct cpu_kv_pool *p = kv->pool;
    uint32_t need = cpu_kv_blocks_needed(kv, n_past, n_new);
    if (need > p->n_free)
        return AARMD_ENOMEM;
    uint32_t first = (uint32_t)n_past >> kv->block_shift;
    if (n_new > 0 && ((uint32_t)n_past & kv->block_mask) && first < kv->n_held && p->refs[kv->table[first]] > 1) {
        /* the rows before n_past stay as they are for the other holders; ours move to a copy */
        uint32_t old = kv->table[first], b = block_take(p);
        memcpy(p->data + (size_t)b * p->block_bytes, p->data + (size_t)old * p->block_bytes, p->block_bytes);
        kv->table[first] = b;
        block_drop(p, old);
    }
    uint32_t want = blocks_for(kv, (int64_t)n_past + n_new);
    while (kv->n_held < want)
        kv->table[kv->n_held++] = block_take(p);
    return AARMD_OK;
}

void cpu_kv_truncate(struct cpu_kv *kv, int32_t n)
{
    if (!kv->pool)
        return;
    uint32_t keep = blocks_for(kv, n);
    while (kv->n_held > keep)
        block_drop(kv->pool, kv->table[--kv->n_held]);
}

/* ---- rows -------------------------------------------------------------------- */

#if defined(__x86_64__)
#include <immintrin.h>

/* F16C conversion: round to nearest even with overflow to inf and exact
 * subnormals, the same bits as cpu_f32_to_f16 for every non-NaN input (a
 * test compares them); the scalar loop was 1-1.5% of a prefill profile. */
__attribute__((target("avx,f16c"))) static int f32_to_f16_f16c(uint16_t *dst, const float *src, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return i;
}

static int have_f16c(void)
{
    static int v = -1;   /* racy but idempotent */
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
    }
    return v;
}
#endif

void cpu_kv_f32_to_f16(uint16_t *dst, const float *src, int n)
{
    int i = 0;
#if defined(__x86_64__)
    if (have_f16c())
        i = f32_to_f16_f16c(dst, src, n);
#endif
    for (; i < n; i++)
        dst[i] = cpu_f32_to_f16(src[i]);
}

void cpu_kv_store(struct cpu_kv *kv, int layer, int32_t pos, const float *k, const float *v)
{
    void *kr = (void *)cpu_kv_k_row(kv, layer, pos);
    void *vr = (void *)cpu_kv_v_row(kv, layer, pos);
    if (kv->type == AARMD_TYPE_F32) {
        memcpy(kr, k, (size_t)kv->kv_dim * sizeof(float));
        memcpy(vr, v, (size_t)kv->kv_dim * sizeof(float));
        return;
    }
    cpu_kv_f32_to_f16(kr, k, kv->kv_dim);
    cpu_kv_f32_to_f16(vr, v, kv->kv_dim);
}
