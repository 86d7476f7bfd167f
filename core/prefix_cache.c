/*
 * prefix_cache.c — the block index behind prefix reuse: chain-hashed blocks
 * with parent links and reference counts, cached sequences in LRU order.
 * Not the backend side: forking and freeing sequences are the caller's.
 */
#include "config.h"
#include "prefix_cache.h"

#include <stdlib.h>
#include <string.h>

/* One physical block the cache knows. In the index while an entry holds it. */
struct pblock {
    struct pblock *next;          /* index bucket chain */
    struct pblock *parent;        /* the block before it in the sequence; NULL at depth 0 */
    uint64_t hash;                /* chain hash up to and including this block */
    uint32_t depth;               /* block index in the sequence */
    uint32_t cache_refs;          /* entries holding it */
    uint32_t job_refs;            /* refs holding it */
    int32_t tokens[];             /* block_tokens */
};

struct aarmd_prefix_ref {
    uint32_t n;
    struct pblock *pb[];          /* n blocks, depth 0..n-1 */
};

struct entry {
    struct entry *next;
    void *seq;
    uint64_t used;                /* LRU stamp */
    uint32_t n;
    struct pblock **pb;           /* n blocks */
};

struct aarmd_prefix_cache {
    uint32_t B;
    uint64_t max_blocks;
    aarmd_prefix_seq_free_fn free_seq;
    void *user;
    struct pblock **buckets;
    size_t n_buckets;             /* power of two */
    uint64_t n_blocks;            /* blocks in the index */
    struct entry *entries;
    uint32_t n_entries;
    uint64_t clock;
};

uint64_t aarmd_prefix_hash_block(uint64_t prev, const int32_t *tokens, uint32_t n_tokens)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 8; i++) {
        h ^= (prev >> (8 * i)) & 0xff;
        h *= 0x100000001b3ull;
    }
    for (uint32_t t = 0; t < n_tokens; t++) {
        uint32_t v = (uint32_t)tokens[t];
        for (int i = 0; i < 4; i++) {
            h ^= (v >> (8 * i)) & 0xff;
            h *= 0x100000001b3ull;
        }
    }
    /* splitmix64 finaliser: FNV's low bits are weak */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

/* ---- blocks ------------------------------------------------------------- */

static void index_add(struct aarmd_prefix_cache *c, struct pblock *p)
{
    size_t b = (size_t)p->hash & (c->n_buckets - 1);
    p->next = c->buckets[b];
    c->buckets[b] = p;
    c->n_blocks++;
}

static void index_remove(struct aarmd_prefix_cache *c, struct pblock *p)
{
    for (struct pblock **q = &c->buckets[(size_t)p->hash & (c->n_buckets - 1)]; *q; q = &(*q)->next)
        if (*q == p) {
            *q = p->next;
            c->n_blocks--;
            return;
        }
}

/* Doubles the bucket array when blocks outnumber buckets; best effort. */
static void index_grow(struct aarmd_prefix_cache *c)
{
    if (c->n_blocks < c->n_buckets)
        return;
    size_t nb = c->n_buckets * 2;
    struct pblock **nbk = calloc(nb, sizeof *nbk);
    if (!nbk)
        return;
    for (size_t i = 0; i < c->n_buckets; i++)
        for (struct pblock *p = c->buckets[i], *nx; p; p = nx) {
            nx = p->next;
            size_t b = (size_t)p->hash & (nb - 1);
            p->next = nbk[b];
            nbk[b] = p;
        }
    free(c->buckets);
    c->buckets = nbk;
    c->n_buckets = nb;
}

static void pblock_maybe_free(struct pblock *p)
{
    if (p->cache_refs == 0 && p->job_refs == 0)
        free(p);
}

static void cache_ref(struct aarmd_prefix_cache *c, struct pblock *p)
{
    if (p->cache_refs++ == 0) {
        index_grow(c);
        index_add(c, p);
    }
}

static void cache_unref(struct aarmd_prefix_cache *c, struct pblock *p)
{
    if (--p->cache_refs == 0) {
        index_remove(c, p);
        pblock_maybe_free(p);
    }
}

static struct pblock *pblock_new(const struct aarmd_prefix_cache *c, struct pblock *parent, uint32_t depth,
                                 const int32_t *tokens)
{
    struct pblock *p = calloc(1, sizeof *p + (size_t)c->B * sizeof(int32_t));
    if (!p)
        return NULL;
    p->parent = parent;
    p->depth = depth;
    p->hash = aarmd_prefix_hash_block(parent ? parent->hash : 0, tokens, c->B);
    memcpy(p->tokens, tokens, (size_t)c->B * sizeof(int32_t));
    return p;
}

/* The indexed child of parent holding these tokens at depth, else NULL. */
static struct pblock *find_block(const struct aarmd_prefix_cache *c, struct pblock *parent, uint32_t depth,
                                 const int32_t *tokens)
{
    uint64_t h = aarmd_prefix_hash_block(parent ? parent->hash : 0, tokens, c->B);
    for (struct pblock *p = c->buckets[(size_t)h & (c->n_buckets - 1)]; p; p = p->next)
        if (p->hash == h && p->parent == parent && p->depth == depth &&
            !memcmp(p->tokens, tokens, (size_t)c->B * sizeof(int32_t)))
            return p;
    return NULL;
}

/* ---- refs --------------------------------------------------------------- */

static struct aarmd_prefix_ref *ref_new(struct pblock *const *pb, uint32_t n)
{
    struct aarmd_prefix_ref *r = malloc(sizeof *r + (size_t)n * sizeof r->pb[0]);
    if (!r)
        return NULL;
    r->n = n;
    for (uint32_t i = 0; i < n; i++) {
        r->pb[i] = pb[i];
        pb[i]->job_refs++;
    }
    return r;
}

uint32_t aarmd_prefix_ref_blocks(const struct aarmd_prefix_ref *r)
{
    return r ? r->n : 0;
}

void aarmd_prefix_ref_free(struct aarmd_prefix_cache *c, struct aarmd_prefix_ref *r)
{
    (void)c;
    if (!r)
        return;
    for (uint32_t i = 0; i < r->n; i++) {
        r->pb[i]->job_refs--;
        pblock_maybe_free(r->pb[i]);
    }
    free(r);
}

/* ---- entries ------------------------------------------------------------ */

static void entry_drop(struct aarmd_prefix_cache *c, struct entry *e)
{
    for (struct entry **q = &c->entries; *q; q = &(*q)->next)
        if (*q == e) {
            *q = e->next;
            c->n_entries--;
            break;
        }
    for (uint32_t i = 0; i < e->n; i++)
        cache_unref(c, e->pb[i]);
    if (e->seq)
        c->free_seq(c->user, e->seq);
    free(e->pb);
    free(e);
}

/* true when a's blocks are b's first blocks (the same physical blocks). */
static bool is_prefix(const struct entry *a, const struct entry *b)
{
    if (a->n > b->n)
        return false;
    for (uint32_t i = 0; i < a->n; i++)
        if (a->pb[i] != b->pb[i])
            return false;
    return true;
}

struct aarmd_prefix_cache *aarmd_prefix_cache_new(uint32_t block_tokens, uint64_t max_blocks,
                                                  aarmd_prefix_seq_free_fn free_seq, void *user)
{
    if (block_tokens < 1 || max_blocks < 1 || !free_seq)
        return NULL;
    struct aarmd_prefix_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->B = block_tokens;
    c->max_blocks = max_blocks;
    c->free_seq = free_seq;
    c->user = user;
    c->n_buckets = 64;
    c->buckets = calloc(c->n_buckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    return c;
}

void aarmd_prefix_cache_free(struct aarmd_prefix_cache *c)
{
    if (!c)
        return;
    aarmd_prefix_cache_flush(c);
    free(c->buckets);
    free(c);
}

uint32_t aarmd_prefix_cache_lookup(struct aarmd_prefix_cache *c, const int32_t *tokens, size_t n_tokens,
                                   uint32_t max_blocks, void **seq_out, struct aarmd_prefix_ref **ref_out)
{
    *seq_out = NULL;
    *ref_out = NULL;
    size_t full = n_tokens / c->B;
    uint32_t limit = full < max_blocks ? (uint32_t)full : max_blocks;
    if (limit == 0 || c->n_entries == 0)
        return 0;
    struct pblock **path = malloc((size_t)limit * sizeof *path);
    if (!path)
        return 0;
    uint32_t k = 0;
    struct pblock *parent = NULL;
    while (k < limit) {
        struct pblock *p = find_block(c, parent, k, tokens + (size_t)k * c->B);
        if (!p)
            break;
        path[k++] = p;
        parent = p;
    }
    struct entry *src = NULL;
    if (k > 0)   /* an indexed block is held by an entry, which holds its whole chain */
        for (struct entry *e = c->entries; e && !src; e = e->next)
            if (e->n >= k && e->pb[k - 1] == path[k - 1])
                src = e;
    if (!src || !(*ref_out = ref_new(path, k))) {
        free(path);
        return 0;
    }
    free(path);
    src->used = ++c->clock;
    *seq_out = src->seq;
    return k;
}

int aarmd_prefix_cache_insert(struct aarmd_prefix_cache *c, const int32_t *tokens, uint32_t n_blocks, void *seq,
                              struct aarmd_prefix_ref **ref_io)
{
    if (n_blocks == 0) {
        c->free_seq(c->user, seq);
        return 0;
    }
    struct aarmd_prefix_ref *old = ref_io ? *ref_io : NULL;
    uint32_t inherited = old ? (old->n < n_blocks ? old->n : n_blocks) : 0;
    struct entry *e = calloc(1, sizeof *e);
    struct pblock **pb = calloc(n_blocks, sizeof *pb);
    uint32_t made = 0;
    if (!e || !pb)
        goto fail;
    for (uint32_t i = 0; i < inherited; i++)
        pb[i] = old->pb[i];
    for (made = inherited; made < n_blocks; made++) {
        pb[made] = pblock_new(c, made ? pb[made - 1] : NULL, made, tokens + (size_t)made * c->B);
        if (!pb[made])
            goto fail;
    }
    struct aarmd_prefix_ref *r = ref_io ? ref_new(pb, n_blocks) : NULL;
    if (ref_io && !r)
        goto fail;
    e->seq = seq;
    e->n = n_blocks;
    e->pb = pb;
    e->used = ++c->clock;
    for (uint32_t i = 0; i < n_blocks; i++)
        cache_ref(c, pb[i]);
    if (ref_io) {
        aarmd_prefix_ref_free(c, old);
        *ref_io = r;
    }
    /* drop entries this one covers, or this one when another covers it */
    for (struct entry *o = c->entries, *nx; o; o = nx) {
        nx = o->next;
        if (is_prefix(o, e)) {
            entry_drop(c, o);
        } else if (is_prefix(e, o)) {
            o->used = e->used;
            e->next = c->entries;   /* entry_drop unlinks it and counts it down */
            c->entries = e;
            c->n_entries++;
            entry_drop(c, e);
            return 0;
        }
    }
    e->next = c->entries;
    c->entries = e;
    c->n_entries++;
    while (c->n_blocks > c->max_blocks && aarmd_prefix_cache_evict_lru(c)) {
    }
    return 0;

fail:
    for (uint32_t i = inherited; i < made; i++)
        free(pb[i]);
    free(pb);
    free(e);
    c->free_seq(c->user, seq);
    return -1;
}

bool aarmd_prefix_cache_evict_lru(struct aarmd_prefix_cache *c)
{
    struct entry *lru = NULL;
    for (struct entry *e = c->entries; e; e = e->next)
        if (!lru || e->used < lru->used)
            lru = e;
    if (!lru)
        return false;
    entry_drop(c, lru);
    return true;
}

void aarmd_prefix_cache_flush(struct aarmd_prefix_cache *c)
{
    while (c->entries)
        entry_drop(c, c->entries);
}

uint64_t aarmd_prefix_cache_blocks(const struct aarmd_prefix_cache *c)
{
    return c ? c->n_blocks : 0;
}

uint32_t aarmd_prefix_cache_entries(const struct aarmd_prefix_cache *c)
{
    return c ? c->n_entries : 0;
}

uint64_t aarmd_prefix_cache_max_blocks(const struct aarmd_prefix_cache *c)
{
    return c ? c->max_blocks : 0;
}
