/*
 * cuda_kv.c — the CUDA backend's paged KV cache: one pool of fixed-size F16
 * blocks per model in VRAM, reference-counted, and each sequence's host block
 * table. Bookkeeping only (host side); the kernels address blocks through the
 * tables forward_cuda.c uploads. Not the attention itself.
 */
#include <stdlib.h>
#include <string.h>

#include "cuda_model.h"

int cuda_kv_new(struct aarmd_backend_model *m, uint64_t kv_bytes, char *err, size_t errlen)
{
    struct cuda_kv *kv = &m->kv;
    const struct cuda_hparams *hp = &m->hp;
    kv->bt = CUDA_KV_BLOCK;
    kv->layer_halfs = (size_t)2 * kv->bt * (size_t)hp->kv_dim;
    kv->block_halfs = kv->layer_halfs * (size_t)hp->n_layer;
    kv->block_bytes = kv->block_halfs * 2;
    uint64_t n = kv_bytes / kv->block_bytes;
    if (n < 1)
        return cuda_err(err, errlen, AARMD_ENOMEM,
                        "KV pool of %llu bytes holds no block of %zu bytes (%u tokens of %d layers)",
                        (unsigned long long)kv_bytes, kv->block_bytes, kv->bt, hp->n_layer);
    if (n > 0x7ffffff0u)
        n = 0x7ffffff0u;
    kv->n_blocks = (uint32_t)n;
    kv->refs = calloc(n + 1, sizeof *kv->refs);
    kv->free_list = malloc(n * sizeof *kv->free_list);
    if (!kv->refs || !kv->free_list)
        return cuda_err(err, errlen, AARMD_ENOMEM, "out of memory (KV block lists of %u blocks)", kv->n_blocks);
    /* one block more than counted: the scratch block that padded graph tokens write to */
    size_t bytes = (size_t)(n + 1) * kv->block_bytes;
    if (cudaMalloc(&kv->pool, bytes) != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        kv->pool = NULL;
        return cuda_err(err, errlen, AARMD_ENOMEM, "KV pool of %u blocks needs %zu bytes of device memory, %zu free",
                        kv->n_blocks, bytes, fr);
    }
    for (uint32_t i = 0; i < kv->n_blocks; i++)   /* pop order: block 0 first */
        kv->free_list[i] = kv->n_blocks - 1 - i;
    kv->n_free = kv->n_blocks;
    kv->scratch = kv->n_blocks;
    return AARMD_OK;
}

void cuda_kv_free(struct cuda_kv *kv)
{
    if (kv->pool)
        cudaFree(kv->pool);
    free(kv->refs);
    free(kv->free_list);
    memset(kv, 0, sizeof *kv);
}

uint32_t cuda_kv_blocks_for(const struct cuda_kv *kv, uint32_t n_tokens)
{
    return (n_tokens + kv->bt - 1) / kv->bt;
}

uint32_t cuda_kv_need(const struct cuda_kv *kv, const struct aarmd_backend_seq *s, uint32_t n_new)
{
    uint32_t have = s->n_blocks, want = cuda_kv_blocks_for(kv, s->n_past + n_new);
    uint32_t need = want > have ? want - have : 0;
    /* the block the first new token lands in is shared: it is copied first */
    if (n_new && s->n_past % kv->bt && kv->refs[s->blocks[s->n_past / kv->bt]] > 1)
        need++;
    return need;
}

static uint32_t take(struct cuda_kv *kv)
{
    uint32_t b = kv->free_list[--kv->n_free];
    kv->refs[b] = 1;
    return b;
}

static void drop(struct cuda_kv *kv, uint32_t b)
{
    if (--kv->refs[b] == 0)
        kv->free_list[kv->n_free++] = b;
}

int cuda_kv_grow(struct aarmd_backend_model *m, struct aarmd_backend_seq *s, uint32_t n_new, char *err, size_t errlen)
{
    struct cuda_kv *kv = &m->kv;
    if (cuda_kv_need(kv, s, n_new) > kv->n_free)
        return cuda_err(err, errlen, AARMD_ENOMEM, "KV pool exhausted: %u more blocks needed, %u of %u free",
                        cuda_kv_need(kv, s, n_new), kv->n_free, kv->n_blocks);
    if (n_new && s->n_past % kv->bt) {   /* copy on write: never write a block another sequence holds */
        uint32_t i = s->n_past / kv->bt, old = s->blocks[i];
        if (kv->refs[old] > 1) {
            uint32_t nb = take(kv);
            cudaError_t e = cudaMemcpyAsync((char *)kv->pool + (size_t)nb * kv->block_bytes,
                                            (char *)kv->pool + (size_t)old * kv->block_bytes, kv->block_bytes,
                                            cudaMemcpyDeviceToDevice, m->stream);
            if (e != cudaSuccess) {
                drop(kv, nb);
                return cuda_err(err, errlen, AARMD_EDEVICE, "KV block copy: %s", cudaGetErrorString(e));
            }
            drop(kv, old);
            s->blocks[i] = nb;
        }
    }
    uint32_t want = cuda_kv_blocks_for(kv, s->n_past + n_new);
    while (s->n_blocks < want)
        s->blocks[s->n_blocks++] = take(kv);
    return AARMD_OK;
}

void cuda_kv_shrink(struct cuda_kv *kv, struct aarmd_backend_seq *s, uint32_t n_tokens)
{
    uint32_t keep = cuda_kv_blocks_for(kv, n_tokens);
    while (s->n_blocks > keep)
        drop(kv, s->blocks[--s->n_blocks]);
}

void cuda_kv_share(struct cuda_kv *kv, const struct aarmd_backend_seq *src, struct aarmd_backend_seq *dst,
                   uint32_t n_tokens)
{
    uint32_t n = cuda_kv_blocks_for(kv, n_tokens);
    for (uint32_t i = 0; i < n; i++) {
        dst->blocks[i] = src->blocks[i];
        kv->refs[dst->blocks[i]]++;
    }
    dst->n_blocks = n;
}
