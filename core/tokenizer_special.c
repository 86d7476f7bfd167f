/*
 * tokenizer_special.c — cutting prompt text around special tokens before the
 * merge algorithms see it (llama.cpp's tokenizer_st_partition). It does not
 * decide which tokens are special: tokenizer.c's tok_finish does.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "aarmd_backend.h"
#include "tokenizer_internal.h"

struct occ {
    int32_t rank;
    int32_t token;
    size_t pos;
};

static int cmp_occ(const void *a, const void *b)
{
    const struct occ *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static int cmp_occ_pos(const void *a, const void *b)
{
    const struct occ *x = a, *y = b;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static bool c_isspace(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static bool special_active(const struct aarmd_tokenizer *t, int32_t id, bool parse_special)
{
    uint16_t a = t->attr[id];
    if (a & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN))
        return parse_special;
    return (a & TOK_ATTR_USER_DEFINED) != 0;
}

/*
 * llama.cpp's tokenizer_st_partition: each special token, longest text first,
 * cuts every still-raw fragment at its non-overlapping occurrences, left to
 * right. Control and unknown tokens take part only with parse_special;
 * user-defined tokens always do. LSTRIP/RSTRIP drop ASCII spaces beside a match.
 * Same result, less work: all occurrences are found in one pass over a trie,
 * then accepted in (rank, position) order against a map of covered bytes.
 */
int tok_partition(const struct aarmd_tokenizer *t, const char *text, size_t len, bool parse_special,
                  struct tok_frag **out, size_t *nout)
{
    struct occ *occ = NULL;
    size_t nocc = 0, capocc = 0, nacc = 0;
    unsigned char *state = NULL;   /* 0 raw, 1 token start, 2 token body, 3 stripped */
    struct tok_frag *fr = NULL;
    size_t nfr = 0;
    bool any = parse_special ? t->trie.n > 0 : t->has_user_defined;

    if (any) {
        const unsigned char *u = (const unsigned char *)text;
        for (size_t p = 0; p < len; p++) {
            int32_t node = t->trie.root[u[p]];
            size_t q = p;
            while (node >= 0) {
                const struct tok_trie_node *nd = &t->trie.nodes[node];
                if (nd->token >= 0 && special_active(t, nd->token, parse_special)) {
                    if (nocc == capocc) {
                        size_t nc = capocc ? capocc * 2 : 64;
                        struct occ *no = realloc(occ, nc * sizeof *no);
                        if (!no)
                            goto nomem;
                        occ = no;
                        capocc = nc;
                    }
                    occ[nocc++] = (struct occ){t->special_rank[nd->token], nd->token, p};
                }
                if (++q >= len)
                    break;
                int32_t c = nd->child;
                while (c >= 0 && t->trie.nodes[c].byte != u[q])
                    c = t->trie.nodes[c].sibling;
                node = c;
            }
        }
    }
    if (nocc > 0) {
        qsort(occ, nocc, sizeof *occ, cmp_occ);
        state = calloc(len, 1);
        if (!state)
            goto nomem;
        size_t last_end = 0;
        int32_t cur_rank = -1;
        for (size_t i = 0; i < nocc; i++) {
            struct occ *o = &occ[i];
            size_t tl;
            tok_strtab_str(&t->strs, o->token, &tl);
            if (o->rank != cur_rank) {
                cur_rank = o->rank;
                last_end = 0;
            }
            if (o->pos < last_end)
                continue;
            bool free_span = true;
            for (size_t k = o->pos; k < o->pos + tl; k++) {
                if (state[k]) {
                    free_span = false;
                    break;
                }
            }
            if (!free_span)
                continue;
            state[o->pos] = 1;
            memset(state + o->pos + 1, 2, tl - 1);
            last_end = o->pos + tl;
            if (t->attr[o->token] & TOK_ATTR_LSTRIP)
                for (size_t k = o->pos; k > 0 && state[k - 1] == 0 && c_isspace((unsigned char)text[k - 1]); k--)
                    state[k - 1] = 3;
            if (t->attr[o->token] & TOK_ATTR_RSTRIP)
                for (size_t k = o->pos + tl; k < len && state[k] == 0 && c_isspace((unsigned char)text[k]); k++)
                    state[k] = 3;
            occ[nacc++] = *o;   /* accepted ones compact to the front (nacc <= i) */
        }
        qsort(occ, nacc, sizeof *occ, cmp_occ_pos);
    }
    fr = malloc((2 * nacc + 1) * sizeof *fr);
    if (!fr)
        goto nomem;
    if (nacc == 0) {
        if (len > 0)
            fr[nfr++] = (struct tok_frag){0, len, -1};
    } else {
        size_t p = 0, a = 0;
        while (p < len) {
            if (state[p] == 0) {
                size_t s = p;
                while (p < len && state[p] == 0)
                    p++;
                fr[nfr++] = (struct tok_frag){s, p - s, -1};
            } else if (state[p] == 1) {
                while (occ[a].pos != p)
                    a++;
                size_t tl;
                tok_strtab_str(&t->strs, occ[a].token, &tl);
                fr[nfr++] = (struct tok_frag){p, tl, occ[a].token};
                p += tl;
            } else {
                p++;
            }
        }
    }
    free(occ);
    free(state);
    *out = fr;
    *nout = nfr;
    return AARMD_OK;
nomem:
    free(occ);
    free(state);
    free(fr);
    return AARMD_ENOMEM;
}
