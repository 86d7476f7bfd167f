/*
 * tokenizer_spm.c — SentencePiece-style encoding of one raw fragment, as
 * llama.cpp's llm_tokenizer_spm does it: spaces become U+2581, characters are
 * symbols, the adjacent pair whose concatenation is the best-scoring token is
 * merged first (ties: leftmost), and what never became a token falls back to
 * <0xNN> byte tokens. Special tokens are not this file's business.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aarmd_backend.h"
#include "tokenizer_internal.h"
#include "unicode.h"

struct sym {
    uint32_t start, n;   /* bytes in the escaped text; n == 0 once merged away */
    int32_t prev, next;
};

struct bigram {
    float score;
    int32_t left, right;
    uint32_t size;
};

struct tok_spm_scratch {
    char *text;
    size_t text_cap;
    struct sym *syms;
    size_t syms_cap;
    struct bigram *heap;
    size_t heap_n, heap_cap;
};

void tok_spm_scratch_free(struct tok_spm_scratch *s)
{
    if (!s)
        return;
    free(s->text);
    free(s->syms);
    free(s->heap);
    free(s);
}

/* a before b in the queue: higher score, then smaller left index */
static int before(const struct bigram *a, const struct bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int heap_push(struct tok_spm_scratch *s, struct bigram b)
{
    if (s->heap_n == s->heap_cap) {
        size_t nc = s->heap_cap ? s->heap_cap * 2 : 256;
        struct bigram *h = realloc(s->heap, nc * sizeof *h);
        if (!h)
            return -1;
        s->heap = h;
        s->heap_cap = nc;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&b, &s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = b;
    return 0;
}

static struct bigram heap_pop(struct tok_spm_scratch *s)
{
    struct bigram top = s->heap[0];
    struct bigram last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct bigram *best = &last;
        if (l < n && before(&s->heap[l], best)) {
            m = l;
            best = &s->heap[l];
        }
        if (r < n && before(&s->heap[r], best))
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

static int try_add(const struct aarmd_tokenizer *t, struct tok_spm_scratch *s, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return 0;
    const struct sym *l = &s->syms[left], *r = &s->syms[right];
    uint32_t size = l->n + r->n;
    int32_t id = tok_strtab_find(&t->strs, s->text + l->start, size);
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return 0;
    return heap_push(s, (struct bigram){t->scores[id], left, right, size});
}

int tok_spm_encode(const struct aarmd_tokenizer *t, const char *text, size_t len, bool prefix_space,
                   struct tok_spm_scratch **sp, struct tok_ids *out, char *err, size_t errlen)
{
    struct tok_spm_scratch *s = *sp;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            goto nomem;
        *sp = s;
    }
    /* escape: optional dummy prefix, ' ' -> U+2581 */
    size_t need = 3 * (len + 1);
    if (need > s->text_cap) {
        char *nt = realloc(s->text, need);
        if (!nt)
            goto nomem;
        s->text = nt;
        s->text_cap = need;
    }
    size_t tl = 0;
    if (prefix_space) {
        memcpy(s->text, "\xe2\x96\x81", 3);
        tl = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(s->text + tl, "\xe2\x96\x81", 3);
            tl += 3;
        } else {
            s->text[tl++] = text[i];
        }
    }
    if (tl == 0)
        return AARMD_OK;
    if (tl > s->syms_cap) {
        struct sym *ns = realloc(s->syms, tl * sizeof *ns);
        if (!ns)
            goto nomem;
        s->syms = ns;
        s->syms_cap = tl;
    }
    /* characters, cut by their lead byte like llama.cpp (no validation) */
    int32_t nsym = 0;
    for (size_t off = 0; off < tl;) {
        size_t cl = aarmd_utf8_len((unsigned char)s->text[off]);
        if (cl > tl - off)
            cl = tl - off;
        s->syms[nsym] = (struct sym){(uint32_t)off, (uint32_t)cl, nsym - 1, -1};
        off += cl;
        if (off < tl)
            s->syms[nsym].next = nsym + 1;
        nsym++;
    }
    s->heap_n = 0;
    for (int32_t i = 1; i < nsym; i++)
        if (try_add(t, s, i - 1, i))
            goto nomem;
    while (s->heap_n > 0) {
        struct bigram b = heap_pop(s);
        struct sym *l = &s->syms[b.left], *r = &s->syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue;   /* stale: one side changed since it was queued */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s->syms[r->next].prev = b.left;
        if (try_add(t, s, l->prev, b.left) || try_add(t, s, b.left, l->next))
            goto nomem;
    }
    for (int32_t i = 0; i != -1; i = s->syms[i].next) {
        const struct sym *y = &s->syms[i];
        int32_t id = tok_strtab_find(&t->strs, s->text + y->start, y->n);
        if (id >= 0 && (uint32_t)id < t->n_vocab) {
            if (tok_ids_push(out, id))
                goto nomem;
            continue;
        }
        for (uint32_t k = 0; k < y->n; k++) {
            int32_t bid = t->byte_token[(unsigned char)s->text[y->start + k]];
            if (bid < 0) {
                snprintf(err, errlen, "tokenizer: byte 0x%02X has no token and the vocabulary has no <unk>",
                         (unsigned char)s->text[y->start + k]);
                return AARMD_EINVAL;
            }
            if (tok_ids_push(out, bid))
                goto nomem;
        }
    }
    return AARMD_OK;
nomem:
    snprintf(err, errlen, "tokenizer: out of memory");
    return AARMD_ENOMEM;
}
