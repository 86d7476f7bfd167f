/*
 * tokenizer.c — what every vocabulary shares: loading tokens, scores, types and
 * special ids from GGUF, llama.cpp's special-token rules (EOG set, control
 * overrides, longest-first partition of the text), pieces, decoding and the
 * streaming detokenizer. The merge algorithms live in tokenizer_spm.c / _bpe.c.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "log.h"
#include "tokenizer_internal.h"
#include "unicode.h"

/* ---- string table ------------------------------------------------------- */

static uint64_t str_hash(const char *s, size_t len)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (len * 0xFF51AFD7ED558CCDull);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    memcpy(&w, s + i, len - i);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
    return h;
}

static int strtab_rehash(struct tok_strtab *t, uint32_t nslots)
{
    int32_t *slots = malloc((size_t)nslots * sizeof *slots);
    if (!slots)
        return -1;
    memset(slots, 0xFF, (size_t)nslots * sizeof *slots);
    uint32_t mask = nslots - 1;
    for (uint32_t id = 0; id < t->n; id++) {
        size_t len;
        const char *s = tok_strtab_str(t, (int32_t)id, &len);
        uint32_t h = (uint32_t)str_hash(s, len) & mask;
        while (slots[h] >= 0)
            h = (h + 1) & mask;
        slots[h] = (int32_t)id;
    }
    free(t->slots);
    t->slots = slots;
    t->mask = mask;
    return 0;
}

int tok_strtab_init(struct tok_strtab *t, uint32_t n_hint)
{
    memset(t, 0, sizeof *t);
    uint32_t nslots = 1024;
    while (nslots < n_hint * 2u + 16)
        nslots <<= 1;
    return strtab_rehash(t, nslots);
}

void tok_strtab_fini(struct tok_strtab *t)
{
    free(t->arena);
    free(t->off_len);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

int32_t tok_strtab_find(const struct tok_strtab *t, const char *s, size_t len)
{
    uint32_t h = (uint32_t)str_hash(s, len) & t->mask;
    for (;;) {
        int32_t id = t->slots[h];
        if (id < 0)
            return -1;
        size_t l;
        const char *p = tok_strtab_str(t, id, &l);
        if (l == len && !memcmp(p, s, len))
            return id;
        h = (h + 1) & t->mask;
    }
}

int32_t tok_strtab_add(struct tok_strtab *t, const char *s, size_t len)
{
    if (len > 0xFFFFFF)
        return -1;
    if (t->n == t->cap) {
        uint32_t nc = t->cap ? t->cap * 2 : 1024;
        uint64_t *v = realloc(t->off_len, (size_t)nc * sizeof *v);
        if (!v)
            return -1;
        t->off_len = v;
        t->cap = nc;
    }
    if (t->arena_len + len + 1 > t->arena_cap) {
        size_t nc = t->arena_cap ? t->arena_cap * 2 : 65536;
        while (nc < t->arena_len + len + 1)
            nc *= 2;
        char *a = realloc(t->arena, nc);
        if (!a)
            return -1;
        t->arena = a;
        t->arena_cap = nc;
    }
    memcpy(t->arena + t->arena_len, s, len);
    t->arena[t->arena_len + len] = '\0';   /* token_text() hands out C strings */
    t->off_len[t->n] = ((uint64_t)t->arena_len << 24) | len;
    t->arena_len += len + 1;
    int32_t id = (int32_t)t->n++;
    if ((uint64_t)t->n * 2 > (uint64_t)t->mask + 1) {
        if (strtab_rehash(t, (t->mask + 1) * 2))
            return -1;
    } else {
        uint32_t h = (uint32_t)str_hash(s, len) & t->mask;
        while (t->slots[h] >= 0)
            h = (h + 1) & t->mask;
        t->slots[h] = id;
    }
    return id;
}

int tok_ids_push(struct tok_ids *o, int32_t id)
{
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap * 2 : 64;
        int32_t *v = realloc(o->v, nc * sizeof *v);
        if (!v)
            return -1;
        o->v = v;
        o->cap = nc;
    }
    o->v[o->n++] = id;
    return 0;
}

/* ---- special tokens ------------------------------------------------------ */

static bool text_is(const struct aarmd_tokenizer *t, int32_t id, const char *const *list)
{
    size_t len;
    const char *s = tok_strtab_str(&t->strs, id, &len);
    for (; *list; list++)
        if (strlen(*list) == len && !memcmp(*list, s, len))
            return true;
    return false;
}

static int32_t find_text(const struct aarmd_tokenizer *t, const char *s)
{
    int32_t id = tok_strtab_find(&t->strs, s, strlen(s));
    return (id >= 0 && (uint32_t)id < t->n_vocab) ? id : -1;
}

static void force_control(struct aarmd_tokenizer *t, int32_t id)
{
    if (!(t->attr[id] & TOK_ATTR_CONTROL)) {
        aarmd_log(AARMD_LOG_DEBUG, "tokenizer_control_override",
                  "control-looking token %d '%s' was not control-type; treating it as control", (int)id,
                  aarmd_tokenizer_token_text(t, id));
        t->attr[id] |= TOK_ATTR_CONTROL;
    }
}

/* llama.cpp's lists of texts that mark end-of-turn, end-of-message, fill-in-the-middle
 * and end-of-generation tokens (applied when the file does not name the ids). */
static const char *const eot_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                        "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
                                        "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                        "<end_of_utterance>", NULL};
static const char *const eom_texts[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_texts[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
                                            "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", "<PRE>",
                                            "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>", NULL};
static const char *const fim_suf_texts[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
                                            "<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>", "<SUF>",
                                            "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>", NULL};
static const char *const fim_mid_texts[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
                                            "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", "<MID>",
                                            "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", NULL};
static const char *const fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
static const char *const fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL};
static const char *const fim_sep_texts[] = {"<|file_sep|>", NULL};
static const char *const eog_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
                                        "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>",
                                        "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
                                        "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
                                        "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                        "[e~[", NULL};
static const char *const render_texts[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL};

static int32_t detect(struct aarmd_tokenizer *t, const char *const *list)
{
    for (uint32_t id = 0; id < t->n_vocab; id++) {
        if (text_is(t, (int32_t)id, list)) {
            force_control(t, (int32_t)id);
            return (int32_t)id;
        }
    }
    return -1;
}

static int trie_add(struct tok_trie *tr, const char *s, size_t len, int32_t token)
{
    if (len == 0)
        return 0;
    int32_t *link = &tr->root[(unsigned char)s[0]];
    int32_t node = -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)s[i];
        int32_t c = *link;
        while (c >= 0 && tr->nodes[c].byte != b)
            c = tr->nodes[c].sibling;
        if (c < 0) {
            if (tr->n == tr->cap) {
                uint32_t nc = tr->cap ? tr->cap * 2 : 1024;
                struct tok_trie_node *nn = realloc(tr->nodes, (size_t)nc * sizeof *nn);
                if (!nn)
                    return -1;
                tr->nodes = nn;
                tr->cap = nc;
                /* link may point into the old array */
                link = (node < 0) ? &tr->root[b] : &tr->nodes[node].child;
            }
            c = (int32_t)tr->n++;
            tr->nodes[c] = (struct tok_trie_node){.child = -1, .sibling = *link, .token = -1, .byte = b};
            *link = c;
        }
        node = c;
        if (i + 1 < len)
            link = &tr->nodes[node].child;
    }
    if (tr->nodes[node].token < 0)
        tr->nodes[node].token = token;
    return 0;
}

struct special_key {
    size_t len;
    int32_t id;
};

/* Longest text first; equal lengths by id (llama.cpp's std::sort leaves them unordered). */
static int cmp_special(const void *a, const void *b)
{
    const struct special_key *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static size_t compute_piece(const struct aarmd_tokenizer *t, int32_t id, char *out)
{
    uint16_t a = t->attr[id];
    size_t len;
    const char *s = tok_strtab_str(&t->strs, id, &len);
    if (a & (TOK_ATTR_UNKNOWN | TOK_ATTR_CONTROL))
        return 0;
    if (a & TOK_ATTR_USER_DEFINED) {
        memcpy(out, s, len);
        return len;
    }
    if (a & TOK_ATTR_NORMAL) {
        size_t o = 0;
        if (t->algo == TOK_ALGO_SPM) {
            for (size_t i = 0; i < len;) {
                if (i + 3 <= len && !memcmp(s + i, "\xe2\x96\x81", 3)) {
                    out[o++] = ' ';
                    i += 3;
                } else {
                    out[o++] = s[i++];
                }
            }
            return o;
        }
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            size_t k = aarmd_utf8_decode((const unsigned char *)s + i, len - i, &cp);
            if (k == 0) {
                out[o++] = s[i++];
                continue;
            }
            int b = aarmd_gpt2_cp_to_byte(cp);
            if (b >= 0) {
                out[o++] = (char)b;
            } else {
                /* not GPT-2's alphabet: keep the character as it is */
                memcpy(out + o, s + i, k);
                o += k;
            }
            i += k;
        }
        return o;
    }
    if (a & TOK_ATTR_BYTE) {
        if (len == 6 && !memcmp(s, "<0x", 3) && s[5] == '>') {
            out[0] = (char)strtol((char[3]){s[3], s[4], 0}, NULL, 16);
            return 1;
        }
        return 0;
    }
    return 0;   /* unused / undefined print nothing */
}

int tok_finish(struct aarmd_tokenizer *t, const char *model_name, char *err, size_t errlen)
{
    uint32_t n = t->n_vocab;
    int32_t fim_pad = -1, fim_rep = -1, fim_sep = -1;

    /* auto-detection by text, as llama.cpp does when the file does not say */
    if (t->eot < 0)
        t->eot = detect(t, eot_texts);
    if (t->eom < 0)
        t->eom = detect(t, eom_texts);
    detect(t, fim_pre_texts);
    detect(t, fim_suf_texts);
    detect(t, fim_mid_texts);
    fim_pad = detect(t, fim_pad_texts);
    fim_rep = detect(t, fim_rep_texts);
    fim_sep = detect(t, fim_sep_texts);

    for (uint32_t id = 0; id < n; id++) {
        size_t len;
        const char *s = tok_strtab_str(&t->strs, (int32_t)id, &len);
        if ((t->attr[id] & TOK_ATTR_CONTROL) && memmem(s, len, "unused", 6))
            t->attr[id] |= TOK_ATTR_UNUSED;
    }

    t->eog = calloc(n ? n : 1, sizeof *t->eog);
    t->special_rank = malloc((n ? n : 1) * sizeof *t->special_rank);
    t->piece_off = malloc(((size_t)n + 1) * sizeof *t->piece_off);
    if (!t->eog || !t->special_rank || !t->piece_off)
        goto nomem;
    if (fim_pad >= 0)
        t->eog[fim_pad] = true;
    if (fim_rep >= 0)
        t->eog[fim_rep] = true;
    if (fim_sep >= 0)
        t->eog[fim_sep] = true;
    for (uint32_t id = 0; id < n; id++) {
        if (text_is(t, (int32_t)id, eog_texts)) {
            t->eog[id] = true;
            force_control(t, (int32_t)id);
        }
        if (text_is(t, (int32_t)id, render_texts))
            t->attr[id] = TOK_ATTR_USER_DEFINED;
    }
    if (t->eos >= 0)
        t->eog[t->eos] = true;
    if (t->eot >= 0)
        t->eog[t->eot] = true;
    if (t->eom >= 0)
        t->eog[t->eom] = true;
    {
        /* o200k_harmony / solar-open: "<|end|>" ends a message, not the generation */
        int32_t ret = find_text(t, "<|return|>"), call = find_text(t, "<|call|>"), calls = find_text(t, "<|calls|>");
        int32_t flush = find_text(t, "<|flush|>"), end = find_text(t, "<|end|>");
        bool has_call = (call >= 0 && t->eog[call]) || (calls >= 0 && t->eog[calls]);
        bool has_ret = ret >= 0 && t->eog[ret], has_flush = flush >= 0 && t->eog[flush];
        if (end >= 0 && t->eog[end] && has_call && (has_ret || has_flush)) {
            t->eog[end] = false;
            t->attr[end] = TOK_ATTR_USER_DEFINED;
        }
        /* gemma4 / paddleocr: "</s>" is not an end of generation there */
        int32_t tool = find_text(t, "<|tool_response>"), s = find_text(t, "</s>");
        if (tool >= 0 && t->eog[tool] && s >= 0 && t->eog[s]) {
            t->eog[s] = false;
            t->attr[s] = TOK_ATTR_NORMAL;
        }
    }

    /* special tokens, longest text first: the order the partition tries them */
    {
        struct special_key *list = malloc((n ? n : 1) * sizeof *list);
        uint32_t ns = 0;
        if (!list)
            goto nomem;
        for (uint32_t id = 0; id < n; id++) {
            t->special_rank[id] = -1;
            if (t->attr[id] & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN)) {
                tok_strtab_str(&t->strs, (int32_t)id, &list[ns].len);
                list[ns++].id = (int32_t)id;
            }
        }
        qsort(list, ns, sizeof *list, cmp_special);
        for (int32_t i = 0; i < 256; i++)
            t->trie.root[i] = -1;
        for (uint32_t i = 0; i < ns; i++) {
            size_t len;
            int32_t id = list[i].id;
            const char *s = tok_strtab_str(&t->strs, id, &len);
            t->special_rank[id] = (int32_t)i;
            if (t->attr[id] & TOK_ATTR_USER_DEFINED)
                t->has_user_defined = true;
            if (trie_add(&t->trie, s, len, id)) {
                free(list);
                goto nomem;
            }
        }
        free(list);
    }

    /* per-model attributes llama.cpp sets by name */
    if (model_name) {
        char lower[256];
        size_t i = 0;
        for (; model_name[i] && i + 1 < sizeof lower; i++)
            lower[i] = (char)((model_name[i] >= 'A' && model_name[i] <= 'Z') ? model_name[i] + 32 : model_name[i]);
        lower[i] = '\0';
        if (strstr(lower, "phi-3") || strstr(lower, "phi3")) {
            for (uint32_t id = 0; id < n; id++)
                if (t->special_rank[id] >= 0)
                    t->attr[id] |= TOK_ATTR_RSTRIP;
            static const char *const no_rstrip[] = {"<unk>", "<s>", "<|endoftext|>"};
            int32_t s = find_text(t, "</s>");
            if (s >= 0)
                t->attr[s] |= TOK_ATTR_RSTRIP;
            for (size_t k = 0; k < 3; k++) {
                int32_t id = find_text(t, no_rstrip[k]);
                if (id >= 0)
                    t->attr[id] &= (uint16_t)~TOK_ATTR_RSTRIP;
            }
        }
    }

    /* pieces */
    {
        size_t cap = 0;
        for (uint32_t id = 0; id < n; id++) {
            size_t len;
            tok_strtab_str(&t->strs, (int32_t)id, &len);
            cap += len;
        }
        t->piece_arena = malloc(cap + 1);
        if (!t->piece_arena)
            goto nomem;
        size_t o = 0;
        for (uint32_t id = 0; id < n; id++) {
            t->piece_off[id] = (uint32_t)o;
            o += compute_piece(t, (int32_t)id, t->piece_arena + o);
        }
        t->piece_off[n] = (uint32_t)o;
    }

    /* byte fallback */
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        int32_t id = find_text(t, buf);
        if (id < 0) {
            char c = (char)b;
            id = tok_strtab_find(&t->strs, &c, 1);
            if (id >= 0 && (uint32_t)id >= t->n_vocab)
                id = -1;
        }
        t->byte_token[b] = id >= 0 ? id : t->unk;
    }
    if (t->algo == TOK_ALGO_BPE)
        return tok_bpe_prepare(t, err, errlen);
    return AARMD_OK;
nomem:
    snprintf(err, errlen, "tokenizer: out of memory");
    return AARMD_ENOMEM;
}

/* ---- loading from GGUF ------------------------------------------------- */

static int get_opt_bool(const struct aarmd_gguf *g, const char *key, bool *v, char *err, size_t errlen)
{
    if (!aarmd_gguf_find(g, key))
        return AARMD_OK;
    if (aarmd_gguf_get_bool(g, key, v) != AARMD_OK) {
        snprintf(err, errlen, "%s: %s is not a bool", aarmd_gguf_path(g), key);
        return AARMD_EINVAL;
    }
    return AARMD_OK;
}

static int get_opt_id(const struct aarmd_gguf *g, const char *key, uint32_t n_vocab, int32_t *id,
                      char *err, size_t errlen)
{
    if (!aarmd_gguf_find(g, key))
        return AARMD_OK;
    int64_t v;
    if (aarmd_gguf_get_i64(g, key, &v) != AARMD_OK) {
        snprintf(err, errlen, "%s: %s is not an integer", aarmd_gguf_path(g), key);
        return AARMD_EINVAL;
    }
    if (v < 0) {
        *id = -1;
        return AARMD_OK;
    }
    if ((uint64_t)v >= n_vocab) {
        snprintf(err, errlen, "%s: %s = %lld is out of range (vocabulary has %u tokens)", aarmd_gguf_path(g), key,
                 (long long)v, n_vocab);
        return AARMD_EINVAL;
    }
    *id = (int32_t)v;
    return AARMD_OK;
}

static struct aarmd_tokenizer *tok_alloc(void)
{
    struct aarmd_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->bos = t->eos = t->eot = t->eom = t->unk = t->pad = -1;
    for (int i = 0; i < 256; i++)
        t->byte_token[i] = t->byte_sym[i] = t->single_byte_token[i] = t->trie.root[i] = -1;
    return t;
}

static int load_vocab(struct aarmd_tokenizer *t, const struct aarmd_gguf *g, char *err, size_t errlen)
{
    const char *path = aarmd_gguf_path(g);
    const struct aarmd_gguf_value *toks = NULL, *scores = NULL, *types = NULL;
    if (!aarmd_gguf_find(g, "tokenizer.ggml.tokens")) {
        snprintf(err, errlen, "%s: no tokenizer.ggml.tokens (the file has no vocabulary)", path);
        return AARMD_EINVAL;
    }
    if (aarmd_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks) != AARMD_OK || toks->v.arr.elem_type != AARMD_GGUF_STRING) {
        snprintf(err, errlen, "%s: tokenizer.ggml.tokens is not an array of strings", path);
        return AARMD_EINVAL;
    }
    uint64_t n = toks->v.arr.n;
    if (n == 0 || n > INT32_MAX) {
        snprintf(err, errlen, "%s: tokenizer.ggml.tokens has %llu tokens", path, (unsigned long long)n);
        return AARMD_EINVAL;
    }
    if (aarmd_gguf_find(g, "tokenizer.ggml.scores")) {
        if (aarmd_gguf_get_arr(g, "tokenizer.ggml.scores", &scores) != AARMD_OK ||
            (scores->v.arr.elem_type != AARMD_GGUF_F32 && scores->v.arr.elem_type != AARMD_GGUF_I32)) {
            snprintf(err, errlen, "%s: tokenizer.ggml.scores is not an array of f32 or i32", path);
            return AARMD_EINVAL;
        }
        if (scores->v.arr.n < n) {
            snprintf(err, errlen, "%s: tokenizer.ggml.scores has %llu entries for %llu tokens", path,
                     (unsigned long long)scores->v.arr.n, (unsigned long long)n);
            return AARMD_EINVAL;
        }
    }
    if (aarmd_gguf_find(g, "tokenizer.ggml.token_type")) {
        if (aarmd_gguf_get_arr(g, "tokenizer.ggml.token_type", &types) != AARMD_OK ||
            types->v.arr.elem_type != AARMD_GGUF_I32) {
            snprintf(err, errlen, "%s: tokenizer.ggml.token_type is not an array of i32", path);
            return AARMD_EINVAL;
        }
        if (types->v.arr.n < n) {
            snprintf(err, errlen, "%s: tokenizer.ggml.token_type has %llu entries for %llu tokens", path,
                     (unsigned long long)types->v.arr.n, (unsigned long long)n);
            return AARMD_EINVAL;
        }
    }
    t->n_vocab = (uint32_t)n;
    t->scores = calloc(n, sizeof *t->scores);
    t->attr = calloc(n, sizeof *t->attr);
    if (!t->scores || !t->attr || tok_strtab_init(&t->strs, (uint32_t)n)) {
        snprintf(err, errlen, "tokenizer: out of memory");
        return AARMD_ENOMEM;
    }
    for (uint64_t i = 0; i < n; i++) {
        const struct aarmd_gguf_str *s = &toks->v.arr.items[i].v.str;
        char empty[32];
        const char *txt = s->data;
        size_t len = (size_t)s->len;
        if (len == 0) {
            /* llama.cpp names empty tokens so that every text stays unique */
            len = (size_t)snprintf(empty, sizeof empty, "[EMPTY_%llu]", (unsigned long long)i);
            txt = empty;
        }
        int32_t dup = tok_strtab_find(&t->strs, txt, len);
        if (dup >= 0) {
            snprintf(err, errlen, "%s: duplicate token in vocabulary: '%.*s' has ids %d and %llu", path,
                     (int)(len > 64 ? 64 : len), txt, (int)dup, (unsigned long long)i);
            return AARMD_EINVAL;
        }
        if (tok_strtab_add(&t->strs, txt, len) < 0) {
            snprintf(err, errlen, "tokenizer: out of memory");
            return AARMD_ENOMEM;
        }
        if (scores)
            t->scores[i] = (float)aarmd_gguf_arr_f64(scores, i);
        uint16_t attr = TOK_ATTR_NORMAL;
        if (types) {
            int64_t ty = aarmd_gguf_arr_i64(types, i);
            static const uint16_t map[7] = {TOK_ATTR_UNDEFINED, TOK_ATTR_NORMAL, TOK_ATTR_UNKNOWN, TOK_ATTR_CONTROL,
                                            TOK_ATTR_USER_DEFINED, TOK_ATTR_UNUSED, TOK_ATTR_BYTE};
            if (ty < 0 || ty > 6) {
                snprintf(err, errlen, "%s: tokenizer.ggml.token_type[%llu] = %lld is not a token type (0..6)", path,
                         (unsigned long long)i, (long long)ty);
                return AARMD_EINVAL;
            }
            attr = map[ty];
        }
        t->attr[i] = attr;
    }
    return AARMD_OK;
}

static int load_merges(struct aarmd_tokenizer *t, const struct aarmd_gguf *g, char *err, size_t errlen)
{
    const char *path = aarmd_gguf_path(g);
    const struct aarmd_gguf_value *m = NULL;
    if (!aarmd_gguf_find(g, "tokenizer.ggml.merges")) {
        snprintf(err, errlen, "%s: tokenizer.ggml.model is gpt2 but tokenizer.ggml.merges is missing", path);
        return AARMD_EINVAL;
    }
    if (aarmd_gguf_get_arr(g, "tokenizer.ggml.merges", &m) != AARMD_OK || m->v.arr.elem_type != AARMD_GGUF_STRING) {
        snprintf(err, errlen, "%s: tokenizer.ggml.merges is not an array of strings", path);
        return AARMD_EINVAL;
    }
    for (uint64_t i = 0; i < m->v.arr.n; i++) {
        const struct aarmd_gguf_str *s = &m->v.arr.items[i].v.str;
        const char *sp = s->len > 1 ? memchr(s->data + 1, ' ', (size_t)s->len - 1) : NULL;
        if (!sp) {
            snprintf(err, errlen, "%s: tokenizer.ggml.merges[%llu] = '%.*s' is not \"left right\"", path,
                     (unsigned long long)i, (int)(s->len > 64 ? 64 : s->len), s->data);
            return AARMD_EINVAL;
        }
        size_t ll = (size_t)(sp - s->data);
        int rc = tok_bpe_add_merge(t, s->data, ll, sp + 1, (size_t)s->len - ll - 1, (uint32_t)i, err, errlen);
        if (rc)
            return rc;
    }
    return AARMD_OK;
}

static int file_exists(const char *p)
{
    FILE *f = fopen(p, "rb");
    if (!f)
        return 0;
    fclose(f);
    return 1;
}

static int load_special_ids(struct aarmd_tokenizer *t, const struct aarmd_gguf *g, char *err, size_t errlen)
{
    static const struct {
        const char *key;
        size_t off;
    } keys[] = {
        {"tokenizer.ggml.bos_token_id", offsetof(struct aarmd_tokenizer, bos)},
        {"tokenizer.ggml.eos_token_id", offsetof(struct aarmd_tokenizer, eos)},
        {"tokenizer.ggml.eot_token_id", offsetof(struct aarmd_tokenizer, eot)},
        {"tokenizer.ggml.eom_token_id", offsetof(struct aarmd_tokenizer, eom)},
        {"tokenizer.ggml.unknown_token_id", offsetof(struct aarmd_tokenizer, unk)},
        {"tokenizer.ggml.padding_token_id", offsetof(struct aarmd_tokenizer, pad)},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        int32_t *id = (int32_t *)((char *)t + keys[i].off);
        if (*id >= 0 && (uint32_t)*id >= t->n_vocab)
            *id = -1;   /* a default beyond a small vocab */
        int rc = get_opt_id(g, keys[i].key, t->n_vocab, id, err, errlen);
        if (rc)
            return rc;
    }
    int rc = get_opt_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos, err, errlen);
    if (!rc)
        rc = get_opt_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos, err, errlen);
    if (rc)
        return rc;
    if (t->add_bos && t->bos < 0) {
        snprintf(err, errlen, "%s: tokenizer.ggml.add_bos_token is true but there is no BOS token", aarmd_gguf_path(g));
        return AARMD_EINVAL;
    }
    if (t->add_eos && t->eos < 0) {
        snprintf(err, errlen, "%s: tokenizer.ggml.add_eos_token is true but there is no EOS token", aarmd_gguf_path(g));
        return AARMD_EINVAL;
    }
    return AARMD_OK;
}

int aarmd_tokenizer_from_hf_json(const char *json_path, const struct aarmd_gguf *g,
                                 struct aarmd_tokenizer **out, char *err, size_t errlen)
{
    *out = NULL;
    struct aarmd_tokenizer *t = tok_alloc();
    if (!t) {
        snprintf(err, errlen, "tokenizer: out of memory");
        return AARMD_ENOMEM;
    }
    t->kind = "hf-json";
    t->algo = TOK_ALGO_BPE;
    int rc = tok_hfjson_load(t, json_path, err, errlen);
    if (rc)
        goto fail;
    if (g) {
        /* tokenizer.json does not carry BOS/EOS policy; the GGUF beside it does */
        rc = load_special_ids(t, g, err, errlen);
        if (rc)
            goto fail;
    }
    char name[256] = "";
    if (g)
        aarmd_gguf_get_cstr(g, "general.name", name, sizeof name);
    rc = tok_finish(t, name, err, errlen);
    if (rc)
        goto fail;
    *out = t;
    return AARMD_OK;
fail:
    aarmd_tokenizer_free(t);
    return rc;
}

int aarmd_tokenizer_from_gguf(const struct aarmd_gguf *g, const char *model_path, bool prefer_hf_json,
                              struct aarmd_tokenizer **out, char *err, size_t errlen)
{
    *out = NULL;
    if (prefer_hf_json && model_path) {
        size_t l = strlen(model_path);
        char *jp = malloc(l + 32);
        if (!jp) {
            snprintf(err, errlen, "tokenizer: out of memory");
            return AARMD_ENOMEM;
        }
        const char *slash = strrchr(model_path, '/');
        size_t dl = slash ? (size_t)(slash - model_path) + 1 : 0;
        memcpy(jp, model_path, dl);
        strcpy(jp + dl, "tokenizer.json");
        if (file_exists(jp)) {
            int rc = aarmd_tokenizer_from_hf_json(jp, g, out, err, errlen);
            free(jp);
            return rc;
        }
        free(jp);
    }

    const char *path = aarmd_gguf_path(g);
    char model[64] = "", pre[128] = "";
    if (!aarmd_gguf_find(g, "tokenizer.ggml.model")) {
        snprintf(err, errlen, "%s: no tokenizer.ggml.model (the file has no vocabulary)", path);
        return AARMD_EINVAL;
    }
    if (aarmd_gguf_get_cstr(g, "tokenizer.ggml.model", model, sizeof model) != AARMD_OK) {
        snprintf(err, errlen, "%s: tokenizer.ggml.model is not a string", path);
        return AARMD_EINVAL;
    }
    if (aarmd_gguf_find(g, "tokenizer.ggml.pre") &&
        aarmd_gguf_get_cstr(g, "tokenizer.ggml.pre", pre, sizeof pre) != AARMD_OK) {
        snprintf(err, errlen, "%s: tokenizer.ggml.pre is not a string", path);
        return AARMD_EINVAL;
    }

    struct aarmd_tokenizer *t = tok_alloc();
    if (!t) {
        snprintf(err, errlen, "tokenizer: out of memory");
        return AARMD_ENOMEM;
    }
    int rc;
    if (!strcmp(model, "llama")) {
        t->algo = TOK_ALGO_SPM;
        t->kind = "gguf-spm";
        t->bos = 1;
        t->eos = 2;
        t->unk = 0;
        t->add_space_prefix = true;
        t->add_bos = true;
    } else if (!strcmp(model, "gpt2")) {
        t->algo = TOK_ALGO_BPE;
        t->kind = "gguf-bpe";
        t->bos = t->eos = 11;   /* llama.cpp's defaults for gpt2 vocabularies */
    } else {
        snprintf(err, errlen, "%s: tokenizer.ggml.model '%s' is not supported (llama, gpt2)", path, model);
        rc = AARMD_EUNSUPPORTED;
        goto fail;
    }
    rc = get_opt_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err, errlen);
    if (rc)
        goto fail;
    if (t->algo == TOK_ALGO_BPE) {
        struct aarmd_pretok_info info;
        rc = aarmd_pretok_new(pre, &t->pretok, &info, err, errlen);
        if (rc)
            goto fail;
        t->ignore_merges = info.ignore_merges;
        t->add_bos = info.add_bos;
        if (info.no_bos)
            t->bos = -1;
        t->add_space_prefix = false;   /* llama.cpp ignores it for BPE */
    }
    rc = load_vocab(t, g, err, errlen);
    if (!rc && t->algo == TOK_ALGO_BPE)
        rc = load_merges(t, g, err, errlen);
    if (!rc)
        rc = load_special_ids(t, g, err, errlen);
    if (rc)
        goto fail;
    char name[256] = "";
    aarmd_gguf_get_cstr(g, "general.name", name, sizeof name);
    rc = tok_finish(t, name, err, errlen);
    if (rc)
        goto fail;
    *out = t;
    return AARMD_OK;
fail:
    aarmd_tokenizer_free(t);
    return rc;
}

void aarmd_tokenizer_free(struct aarmd_tokenizer *t)
{
    if (!t)
        return;
    tok_strtab_fini(&t->strs);
    free(t->scores);
    free(t->attr);
    free(t->eog);
    free(t->special_rank);
    free(t->trie.nodes);
    free(t->piece_arena);
    free(t->piece_off);
    aarmd_pretok_free(t->pretok);
    free(t->merges.keys);
    free(t->merges.vals);
    free(t);
}

/* ---- accessors ------------------------------------------------------------ */

const char *aarmd_tokenizer_kind(const struct aarmd_tokenizer *t) { return t->kind; }
uint32_t aarmd_tokenizer_n_vocab(const struct aarmd_tokenizer *t) { return t->n_vocab; }
int32_t aarmd_tokenizer_bos(const struct aarmd_tokenizer *t) { return t->bos; }
int32_t aarmd_tokenizer_eos(const struct aarmd_tokenizer *t) { return t->eos; }
int32_t aarmd_tokenizer_eot(const struct aarmd_tokenizer *t) { return t->eot; }
bool aarmd_tokenizer_add_bos(const struct aarmd_tokenizer *t) { return t->add_bos; }

bool aarmd_tokenizer_is_eog(const struct aarmd_tokenizer *t, int32_t id)
{
    return id >= 0 && (uint32_t)id < t->n_vocab && t->eog[id];
}

bool aarmd_tokenizer_is_control(const struct aarmd_tokenizer *t, int32_t id)
{
    return id >= 0 && (uint32_t)id < t->n_vocab && (t->attr[id] & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN));
}

const char *aarmd_tokenizer_token_text(const struct aarmd_tokenizer *t, int32_t id)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return NULL;
    size_t len;
    return tok_strtab_str(&t->strs, id, &len);
}

int aarmd_tokenizer_find_token(const struct aarmd_tokenizer *t, const char *text, size_t len)
{
    int32_t id = tok_strtab_find(&t->strs, text, len);
    return (id >= 0 && (uint32_t)id < t->n_vocab) ? id : -1;
}

/* ---- encode ----------------------------------------------------------------- */

int aarmd_tokenizer_encode(const struct aarmd_tokenizer *t, const char *text, size_t len,
                           bool add_special, bool parse_special,
                           int32_t **ids, size_t *n, char *err, size_t errlen)
{
    struct tok_ids out = {0};
    struct tok_frag *fr = NULL;
    size_t nfr = 0;
    struct tok_spm_scratch *spm = NULL;
    struct tok_bpe_scratch *bpe = NULL;
    int rc;

    *ids = NULL;
    *n = 0;
    if (!text && len > 0) {
        snprintf(err, errlen, "tokenizer: NULL text");
        return AARMD_EINVAL;
    }
    rc = tok_partition(t, text, len, parse_special, &fr, &nfr);
    if (rc)
        goto nomem;
    if (add_special && t->add_bos) {
        if (tok_ids_push(&out, t->bos))
            goto nomem;
    }
    bool prev_special = true;   /* SPM: a dummy-prefix space starts the text and follows each special token */
    for (size_t i = 0; i < nfr; i++) {
        if (fr[i].token >= 0) {
            if (tok_ids_push(&out, fr[i].token))
                goto nomem;
            prev_special = true;
            continue;
        }
        if (t->algo == TOK_ALGO_SPM)
            rc = tok_spm_encode(t, text + fr[i].off, fr[i].len, t->add_space_prefix && prev_special, &spm, &out,
                                err, errlen);
        else
            rc = tok_bpe_encode(t, text + fr[i].off, fr[i].len, &bpe, &out, err, errlen);
        if (rc)
            goto fail;
        prev_special = false;
    }
    if (add_special && t->add_eos) {
        if (tok_ids_push(&out, t->eos))
            goto nomem;
    }
    free(fr);
    tok_spm_scratch_free(spm);
    tok_bpe_scratch_free(bpe);
    if (!out.v) {
        out.v = malloc(sizeof *out.v);   /* a valid pointer even for no ids */
        if (!out.v)
            return AARMD_ENOMEM;
    }
    *ids = out.v;
    *n = out.n;
    return AARMD_OK;
nomem:
    rc = AARMD_ENOMEM;
    snprintf(err, errlen, "tokenizer: out of memory");
fail:
    free(fr);
    free(out.v);
    tok_spm_scratch_free(spm);
    tok_bpe_scratch_free(bpe);
    return rc;
}

/* ---- pieces and decode ---------------------------------------------------- */

static const char *piece_of(const struct aarmd_tokenizer *t, int32_t id, size_t *len)
{
    *len = t->piece_off[id + 1] - t->piece_off[id];
    return t->piece_arena + t->piece_off[id];
}

int aarmd_tokenizer_piece(const struct aarmd_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return -1;
    size_t len;
    const char *p = piece_of(t, id, &len);
    if (buf && cap > 0)
        memcpy(buf, p, len < cap ? len : cap);
    return (int)len;
}

int aarmd_tokenizer_decode(const struct aarmd_tokenizer *t, const int32_t *ids, size_t n,
                           char **text, size_t *len, char *err, size_t errlen)
{
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= t->n_vocab) {
            snprintf(err, errlen, "decode: id %d at position %zu is out of range (vocabulary has %u tokens)",
                     (int)ids[i], i, t->n_vocab);
            return AARMD_EINVAL;
        }
        total += t->piece_off[ids[i] + 1] - t->piece_off[ids[i]];
    }
    char *out = malloc(total + 1);
    if (!out) {
        snprintf(err, errlen, "decode: out of memory");
        return AARMD_ENOMEM;
    }
    size_t o = 0;
    bool strip = t->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        size_t pl;
        const char *p = piece_of(t, ids[i], &pl);
        if (pl == 0)
            continue;
        if (strip && p[0] == ' ') {
            p++;
            pl--;
        }
        strip = false;
        memcpy(out + o, p, pl);
        o += pl;
    }
    out[o] = '\0';
    *text = out;
    *len = o;
    return AARMD_OK;
}

/* ---- streaming detokenizer -------------------------------------------------- */

void aarmd_detok_init(struct aarmd_detok *d, const struct aarmd_tokenizer *t)
{
    memset(d, 0, sizeof *d);
    d->tok = t;
}

void aarmd_detok_init_continue(struct aarmd_detok *d, const struct aarmd_tokenizer *t)
{
    aarmd_detok_init(d, t);
    d->n_pushed = 1;
}

/* Bytes of buf[0..n) that form complete characters (or bytes that can never
 * become one); the rest (a valid but unfinished sequence at the end) stays pending. */
static size_t complete_prefix(const unsigned char *b, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = b[i];
        size_t need = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 1;
        if (need == 1) {
            i++;
            continue;
        }
        size_t k = 1;
        while (k < need && i + k < n && (b[i + k] & 0xC0) == 0x80)
            k++;
        if (k == need || i + k < n) {
            /* complete, or broken by a non-continuation byte: emit as is */
            i += (k == need) ? need : 1;
            continue;
        }
        return i;   /* unfinished at the end */
    }
    return n;
}

int aarmd_detok_push(struct aarmd_detok *d, int32_t id, char *out, size_t cap)
{
    const struct aarmd_tokenizer *t = d->tok;
    if (id < 0 || (uint32_t)id >= t->n_vocab)
        return -1;
    size_t pl;
    const char *p = piece_of(t, id, &pl);
    if (pl == 0)
        return 0;
    if (d->n_pushed == 0 && t->add_space_prefix && p[0] == ' ') {
        p++;
        pl--;
    }
    if (d->n_pending + pl > cap)
        return -1;
    d->n_pushed++;
    /* pending bytes first, then the piece; emit the complete prefix */
    unsigned char tmp[sizeof d->pending];
    size_t np = d->n_pending;
    memcpy(tmp, d->pending, np);
    memcpy(out, tmp, np);
    memcpy(out + np, p, pl);
    size_t total = np + pl;
    size_t done = complete_prefix((const unsigned char *)out, total);
    d->n_pending = total - done;
    memcpy(d->pending, out + done, d->n_pending);
    return (int)done;
}

int aarmd_detok_flush(struct aarmd_detok *d, char *out, size_t cap)
{
    if (d->n_pending > cap)
        return -1;
    memcpy(out, d->pending, d->n_pending);
    int n = (int)d->n_pending;
    d->n_pending = 0;
    return n;
}
