/*
 * tokenizer_bpe.c — byte-level BPE encoding of one raw fragment, as llama.cpp's
 * llm_tokenizer_bpe does it: pre-tokenizer split, GPT-2 byte alphabet, then the
 * adjacent pair with the lowest merge rank is merged first (ties: leftmost).
 * Fast path: every string is interned, so merges are a hash of two ints, and a
 * per-call word cache skips words already seen. No allocation per word.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aarmd_backend.h"
#include "tokenizer_internal.h"
#include "unicode.h"

#define EMPTY_KEY UINT64_MAX

static uint64_t mix64(uint64_t k)
{
    k *= 0x9E3779B97F4A7C15ull;
    return k ^ (k >> 32);
}

static int merges_grow(struct tok_merges *m)
{
    uint64_t ncap = m->mask ? (m->mask + 1) * 2 : 4096;
    uint64_t *keys = malloc(ncap * sizeof *keys), *vals = malloc(ncap * sizeof *vals);
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return -1;
    }
    memset(keys, 0xFF, ncap * sizeof *keys);
    for (uint64_t i = 0; m->mask && i <= m->mask; i++) {
        if (m->keys[i] == EMPTY_KEY)
            continue;
        uint64_t h = mix64(m->keys[i]) & (ncap - 1);
        while (keys[h] != EMPTY_KEY)
            h = (h + 1) & (ncap - 1);
        keys[h] = m->keys[i];
        vals[h] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->mask = ncap - 1;
    return 0;
}

/* (rank << 32 | result) or EMPTY_KEY */
static inline uint64_t merges_get(const struct tok_merges *m, int32_t l, int32_t r)
{
    if (!m->keys)
        return EMPTY_KEY;
    uint64_t k = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint64_t h = mix64(k) & m->mask;
    for (;;) {
        uint64_t kk = m->keys[h];
        if (kk == k)
            return m->vals[h];
        if (kk == EMPTY_KEY)
            return EMPTY_KEY;
        h = (h + 1) & m->mask;
    }
}

static int32_t intern(struct aarmd_tokenizer *t, const char *s, size_t len)
{
    int32_t id = tok_strtab_find(&t->strs, s, len);
    return id >= 0 ? id : tok_strtab_add(&t->strs, s, len);
}

int tok_bpe_add_merge(struct aarmd_tokenizer *t, const char *left, size_t llen, const char *right, size_t rlen,
                      uint32_t rank, char *err, size_t errlen)
{
    char stack[256];
    char *cat = (llen + rlen <= sizeof stack) ? stack : malloc(llen + rlen);
    if (!cat)
        goto nomem;
    memcpy(cat, left, llen);
    memcpy(cat + llen, right, rlen);
    int32_t l = intern(t, left, llen), r = intern(t, right, rlen), res = intern(t, cat, llen + rlen);
    if (cat != stack)
        free(cat);
    if (l < 0 || r < 0 || res < 0)
        goto nomem;
    struct tok_merges *m = &t->merges;
    if (!m->keys || (m->n + 1) * 2 > m->mask + 1) {
        if (merges_grow(m))
            goto nomem;
    }
    uint64_t k = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint64_t h = mix64(k) & m->mask;
    while (m->keys[h] != EMPTY_KEY) {
        if (m->keys[h] == k)
            return AARMD_OK;   /* a repeated pair keeps its first rank, like llama.cpp's emplace */
        h = (h + 1) & m->mask;
    }
    m->keys[h] = k;
    m->vals[h] = ((uint64_t)rank << 32) | (uint32_t)res;
    m->n++;
    return AARMD_OK;
nomem:
    snprintf(err, errlen, "tokenizer: out of memory");
    return AARMD_ENOMEM;
}

int tok_bpe_prepare(struct aarmd_tokenizer *t, char *err, size_t errlen)
{
    for (int b = 0; b < 256; b++) {
        char buf[4];
        size_t n = aarmd_gpt2_byte_to_utf8((unsigned char)b, buf);
        t->byte_sym[b] = tok_strtab_find(&t->strs, buf, n);
        char c = (char)b;
        int32_t id = tok_strtab_find(&t->strs, &c, 1);
        t->single_byte_token[b] = (id >= 0 && (uint32_t)id < t->n_vocab) ? id : -1;
    }
    (void)err;
    (void)errlen;
    return AARMD_OK;
}

/* ---- per-call state ------------------------------------------------------ */

struct bsym {
    int32_t sym;        /* interned string id, -1 for a byte outside the table */
    int32_t prev, next;
    uint32_t start, n;  /* bytes of the word; n == 0 once merged away */
};

struct bbigram {
    int32_t rank, left, right, lsym, rsym, res;
};

struct cache_entry {
    uint32_t key_off, key_len, ids_off, ids_n;
    uint64_t hash;
};

#define CACHE_MAX_WORD 48
#define CACHE_MAX_ENTRIES (1u << 20)

struct tok_bpe_scratch {
    char *fixed;                 /* repaired text */
    size_t fixed_cap;
    struct aarmd_pretok_scratch split;
    struct bsym *syms;
    size_t syms_cap;
    struct bbigram *heap;
    size_t heap_n, heap_cap;
    char *enc;                   /* GPT-2 encoded word (ignore_merges) */
    size_t enc_cap;
    /* word cache */
    int32_t *slots;
    uint32_t slot_mask;
    struct cache_entry *ent;
    uint32_t n_ent, cap_ent;
    char *keys;
    size_t keys_n, keys_cap;
    int32_t *cids;
    size_t cids_n, cids_cap;
};

void tok_bpe_scratch_free(struct tok_bpe_scratch *s)
{
    if (!s)
        return;
    free(s->fixed);
    aarmd_pretok_scratch_fini(&s->split);
    free(s->syms);
    free(s->heap);
    free(s->enc);
    free(s->slots);
    free(s->ent);
    free(s->keys);
    free(s->cids);
    free(s);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np)
        return -1;
    *p = np;
    *cap = nc;
    return 0;
}

static inline int bg_before(const struct bbigram *a, const struct bbigram *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static int bheap_push(struct tok_bpe_scratch *s, struct bbigram b)
{
    if (grow((void **)&s->heap, &s->heap_cap, s->heap_n + 1, sizeof *s->heap))
        return -1;
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bg_before(&b, &s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = b;
    return 0;
}

static struct bbigram bheap_pop(struct tok_bpe_scratch *s)
{
    struct bbigram top = s->heap[0];
    struct bbigram last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct bbigram *best = &last;
        if (l < n && bg_before(&s->heap[l], best)) {
            m = l;
            best = &s->heap[l];
        }
        if (r < n && bg_before(&s->heap[r], best))
            m = r;
        if (m == i)
            break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n > 0)
        s->heap[i] = last;
    return top;
}

static int add_bigram(const struct aarmd_tokenizer *t, struct tok_bpe_scratch *s, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return 0;
    int32_t ls = s->syms[l].sym, rs = s->syms[r].sym;
    if (ls < 0 || rs < 0)
        return 0;
    uint64_t v = merges_get(&t->merges, ls, rs);
    if (v == EMPTY_KEY)
        return 0;
    return bheap_push(s, (struct bbigram){(int32_t)(v >> 32), l, r, ls, rs, (int32_t)(uint32_t)v});
}

/* A final symbol that is not a token: llama.cpp emits, for each byte of its
 * (GPT-2 encoded) text, the token whose text is that single byte, if any. */
static int emit_unknown(const struct aarmd_tokenizer *t, const struct bsym *y, const unsigned char *word,
                        struct tok_ids *out)
{
    char buf[4];
    const char *txt;
    size_t len;
    if (y->sym >= 0) {
        txt = tok_strtab_str(&t->strs, y->sym, &len);
    } else {
        len = aarmd_gpt2_byte_to_utf8(word[y->start], buf);
        txt = buf;
    }
    for (size_t i = 0; i < len; i++) {
        int32_t id = t->single_byte_token[(unsigned char)txt[i]];
        if (id >= 0 && tok_ids_push(out, id))
            return -1;
    }
    return 0;
}

static int bpe_word(const struct aarmd_tokenizer *t, struct tok_bpe_scratch *s, const unsigned char *w, size_t len,
                    struct tok_ids *out)
{
    if (t->ignore_merges) {
        if (grow((void **)&s->enc, &s->enc_cap, 2 * len, 1))
            return -1;
        size_t el = 0;
        for (size_t i = 0; i < len; i++)
            el += aarmd_gpt2_byte_to_utf8(w[i], s->enc + el);
        int32_t id = tok_strtab_find(&t->strs, s->enc, el);
        if (id >= 0 && (uint32_t)id < t->n_vocab)
            return tok_ids_push(out, id);
    }
    if (grow((void **)&s->syms, &s->syms_cap, len, sizeof *s->syms))
        return -1;
    for (size_t i = 0; i < len; i++)
        s->syms[i] = (struct bsym){t->byte_sym[w[i]], (int32_t)i - 1, i + 1 < len ? (int32_t)i + 1 : -1,
                                   (uint32_t)i, 1};
    s->heap_n = 0;
    for (size_t i = 1; i < len; i++)
        if (add_bigram(t, s, (int32_t)i - 1, (int32_t)i))
            return -1;
    while (s->heap_n > 0) {
        struct bbigram b = bheap_pop(s);
        struct bsym *l = &s->syms[b.left], *r = &s->syms[b.right];
        if (l->n == 0 || r->n == 0 || l->sym != b.lsym || r->sym != b.rsym)
            continue;   /* stale */
        l->sym = b.res;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s->syms[r->next].prev = b.left;
        if (add_bigram(t, s, l->prev, b.left) || add_bigram(t, s, b.left, l->next))
            return -1;
    }
    for (int32_t i = 0; i != -1; i = s->syms[i].next) {
        const struct bsym *y = &s->syms[i];
        if (y->sym >= 0 && (uint32_t)y->sym < t->n_vocab) {
            if (tok_ids_push(out, y->sym))
                return -1;
        } else if (emit_unknown(t, y, w, out)) {
            return -1;
        }
    }
    return 0;
}

static uint64_t word_hash(const unsigned char *s, size_t n)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001B3ull;
    return h ^ (h >> 29);
}

static int cache_rehash(struct tok_bpe_scratch *s, uint32_t nslots)
{
    int32_t *slots = malloc((size_t)nslots * sizeof *slots);
    if (!slots)
        return -1;
    memset(slots, 0xFF, (size_t)nslots * sizeof *slots);
    for (uint32_t e = 0; e < s->n_ent; e++) {
        uint32_t h = (uint32_t)s->ent[e].hash & (nslots - 1);
        while (slots[h] >= 0)
            h = (h + 1) & (nslots - 1);
        slots[h] = (int32_t)e;
    }
    free(s->slots);
    s->slots = slots;
    s->slot_mask = nslots - 1;
    return 0;
}

/* Encodes one word through the cache. */
static int cached_word(const struct aarmd_tokenizer *t, struct tok_bpe_scratch *s, const unsigned char *w,
                       size_t len, struct tok_ids *out)
{
    if (len == 1) {
        int32_t y = t->byte_sym[w[0]];
        if (y >= 0 && (uint32_t)y < t->n_vocab)
            return tok_ids_push(out, y);
        return bpe_word(t, s, w, len, out);
    }
    if (len > CACHE_MAX_WORD)
        return bpe_word(t, s, w, len, out);
    uint64_t h = word_hash(w, len);
    if (s->slots) {
        uint32_t i = (uint32_t)h & s->slot_mask;
        for (;;) {
            int32_t e = s->slots[i];
            if (e < 0)
                break;
            const struct cache_entry *ce = &s->ent[e];
            if (ce->hash == h && ce->key_len == len && !memcmp(s->keys + ce->key_off, w, len)) {
                for (uint32_t k = 0; k < ce->ids_n; k++)
                    if (tok_ids_push(out, s->cids[ce->ids_off + k]))
                        return -1;
                return 0;
            }
            i = (i + 1) & s->slot_mask;
        }
    }
    size_t before = out->n;
    if (bpe_word(t, s, w, len, out))
        return -1;
    if (s->n_ent >= CACHE_MAX_ENTRIES)
        return 0;
    size_t nids = out->n - before;
    if (s->n_ent == s->cap_ent) {
        uint32_t nc = s->cap_ent ? s->cap_ent * 2 : 1024;
        struct cache_entry *ne = realloc(s->ent, (size_t)nc * sizeof *ne);
        if (!ne)
            return -1;
        s->ent = ne;
        s->cap_ent = nc;
    }
    if (!s->slots || (s->n_ent + 1) * 2 > s->slot_mask + 1) {
        if (cache_rehash(s, s->slots ? (s->slot_mask + 1) * 2 : 2048))
            return -1;
    }
    if (grow((void **)&s->keys, &s->keys_cap, s->keys_n + len, 1) ||
        grow((void **)&s->cids, &s->cids_cap, s->cids_n + nids, sizeof *s->cids))
        return -1;
    memcpy(s->keys + s->keys_n, w, len);
    memcpy(s->cids + s->cids_n, out->v + before, nids * sizeof *s->cids);
    s->ent[s->n_ent] = (struct cache_entry){(uint32_t)s->keys_n, (uint32_t)len, (uint32_t)s->cids_n, (uint32_t)nids, h};
    s->keys_n += len;
    s->cids_n += nids;
    uint32_t i = (uint32_t)h & s->slot_mask;
    while (s->slots[i] >= 0)
        i = (i + 1) & s->slot_mask;
    s->slots[i] = (int32_t)s->n_ent++;
    return 0;
}

int tok_bpe_encode(const struct aarmd_tokenizer *t, const char *text, size_t len,
                   struct tok_bpe_scratch **sp, struct tok_ids *out, char *err, size_t errlen)
{
    struct tok_bpe_scratch *s = *sp;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            goto nomem;
        *sp = s;
    }
    /* invalid UTF-8 becomes U+FFFD before splitting, as in llama.cpp */
    if (!aarmd_utf8_valid(text, len)) {
        if (grow((void **)&s->fixed, &s->fixed_cap, 3 * len, 1))
            goto nomem;
        len = aarmd_utf8_repair(text, len, s->fixed);
        text = s->fixed;
    }
    const struct aarmd_span *sp_words;
    size_t nw;
    int rc = aarmd_pretok_split(t->pretok, text, len, &s->split, &sp_words, &nw, err, errlen);
    if (rc)
        return rc;
    for (size_t i = 0; i < nw; i++) {
        if (cached_word(t, s, (const unsigned char *)text + sp_words[i].off, sp_words[i].len, out))
            goto nomem;
    }
    return AARMD_OK;
nomem:
    snprintf(err, errlen, "tokenizer: out of memory");
    return AARMD_ENOMEM;
}
