/*
 * tokenizer_hfjson.c — reads a Hugging Face tokenizer.json (BPE model with
 * vocab, merges, added_tokens; ByteLevel pre-tokenizer, optionally behind a
 * Split regex or Digits) into the same tables a gguf-bpe vocabulary fills.
 * Other models (WordPiece, Unigram) and normalizers are refused, not guessed.
 */
#include "config.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aarmd_backend.h"
#include "tokenizer_internal.h"

#define R_BYTELEVEL "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static struct json_object *get(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

static const char *get_str(struct json_object *o, const char *key)
{
    struct json_object *v = get(o, key);
    return (v && json_object_is_type(v, json_type_string)) ? json_object_get_string(v) : NULL;
}

static bool get_bool(struct json_object *o, const char *key, bool dflt)
{
    struct json_object *v = get(o, key);
    return (v && json_object_is_type(v, json_type_boolean)) ? json_object_get_boolean(v) : dflt;
}

/* Collects split regexes from a pre_tokenizer node. */
static int walk_pre(struct json_object *pt, const char **regex, size_t *nregex, char **owned, size_t *nowned,
                    bool *byte_level, const char *path, char *err, size_t errlen)
{
    const char *type = get_str(pt, "type");
    if (!type) {
        snprintf(err, errlen, "%s: pre_tokenizer without a type", path);
        return AARMD_EINVAL;
    }
    if (!strcmp(type, "Sequence")) {
        struct json_object *list = get(pt, "pretokenizers");
        if (!list || !json_object_is_type(list, json_type_array)) {
            snprintf(err, errlen, "%s: pre_tokenizer Sequence without a pretokenizers array", path);
            return AARMD_EINVAL;
        }
        for (size_t i = 0; i < json_object_array_length(list); i++) {
            int rc = walk_pre(json_object_array_get_idx(list, i), regex, nregex, owned, nowned, byte_level, path,
                              err, errlen);
            if (rc)
                return rc;
        }
        return AARMD_OK;
    }
    if (*nregex >= 6) {
        snprintf(err, errlen, "%s: pre_tokenizer has more than 6 steps", path);
        return AARMD_EUNSUPPORTED;
    }
    if (!strcmp(type, "ByteLevel")) {
        *byte_level = true;
        if (get_bool(pt, "add_prefix_space", false)) {
            snprintf(err, errlen, "%s: ByteLevel add_prefix_space = true is not supported", path);
            return AARMD_EUNSUPPORTED;
        }
        if (get_bool(pt, "use_regex", true))
            regex[(*nregex)++] = R_BYTELEVEL;
        return AARMD_OK;
    }
    if (!strcmp(type, "Digits")) {
        regex[(*nregex)++] = get_bool(pt, "individual_digits", false) ? "\\p{N}" : "\\p{N}+";
        return AARMD_OK;
    }
    if (!strcmp(type, "Split")) {
        struct json_object *pat = get(pt, "pattern");
        const char *behavior = get_str(pt, "behavior");
        if (behavior && strcmp(behavior, "Isolated") && strcmp(behavior, "Removed")) {
            snprintf(err, errlen, "%s: Split behavior '%s' is not supported (Isolated)", path, behavior);
            return AARMD_EUNSUPPORTED;
        }
        if (get_bool(pt, "invert", false)) {
            snprintf(err, errlen, "%s: Split invert = true is not supported", path);
            return AARMD_EUNSUPPORTED;
        }
        const char *re = get_str(pat, "Regex");
        const char *lit = get_str(pat, "String");
        if (re) {
            regex[(*nregex)++] = re;
            return AARMD_OK;
        }
        if (lit) {
            /* a literal: quote it for PCRE2 */
            size_t l = strlen(lit);
            char *q = malloc(l + 5);
            if (!q) {
                snprintf(err, errlen, "tokenizer: out of memory");
                return AARMD_ENOMEM;
            }
            snprintf(q, l + 5, "\\Q%s\\E", lit);
            owned[(*nowned)++] = q;
            regex[(*nregex)++] = q;
            return AARMD_OK;
        }
        snprintf(err, errlen, "%s: Split without a Regex or String pattern", path);
        return AARMD_EINVAL;
    }
    snprintf(err, errlen, "%s: pre_tokenizer type '%s' is not supported", path, type);
    return AARMD_EUNSUPPORTED;
}

static int read_file(const char *path, char **buf, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return AARMD_EIO;
    }
    size_t cap = 1 << 20, n = 0;
    char *b = malloc(cap + 1);
    while (b) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (n < cap)
            break;
        cap *= 2;
        char *nb = realloc(b, cap + 1);
        if (!nb) {
            free(b);
            b = NULL;
        } else {
            b = nb;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!b) {
        snprintf(err, errlen, "%s: out of memory", path);
        return AARMD_ENOMEM;
    }
    if (bad) {
        free(b);
        snprintf(err, errlen, "%s: read error", path);
        return AARMD_EIO;
    }
    b[n] = '\0';
    *buf = b;
    return AARMD_OK;
}

int tok_hfjson_load(struct aarmd_tokenizer *t, const char *path, char *err, size_t errlen)
{
    char *buf = NULL;
    struct json_object *root = NULL;
    char *owned[6] = {0};
    size_t nowned = 0;
    int32_t *vocab_ids = NULL;
    const char **vocab_txt = NULL;
    int rc = read_file(path, &buf, err, errlen);
    if (rc)
        return rc;

    enum json_tokener_error jerr;
    root = json_tokener_parse_verbose(buf, &jerr);
    if (!root || !json_object_is_type(root, json_type_object)) {
        snprintf(err, errlen, "%s: not a JSON object: %s", path, root ? "wrong type" : json_tokener_error_desc(jerr));
        rc = AARMD_EINVAL;
        goto done;
    }
    struct json_object *model = get(root, "model");
    const char *mtype = get_str(model, "type");
    if (!model || (mtype && strcmp(mtype, "BPE"))) {
        snprintf(err, errlen, "%s: model type '%s' is not supported (BPE)", path, mtype ? mtype : "(none)");
        rc = AARMD_EUNSUPPORTED;
        goto done;
    }
    struct json_object *norm = get(root, "normalizer");
    if (norm && !json_object_is_type(norm, json_type_null)) {
        snprintf(err, errlen, "%s: normalizers are not supported", path);
        rc = AARMD_EUNSUPPORTED;
        goto done;
    }
    struct json_object *vocab = get(model, "vocab"), *merges = get(model, "merges");
    if (!vocab || !json_object_is_type(vocab, json_type_object)) {
        snprintf(err, errlen, "%s: model.vocab is not an object", path);
        rc = AARMD_EINVAL;
        goto done;
    }
    if (!merges || !json_object_is_type(merges, json_type_array)) {
        snprintf(err, errlen, "%s: model.merges is not an array", path);
        rc = AARMD_EINVAL;
        goto done;
    }
    struct json_object *added = get(root, "added_tokens");
    if (added && !json_object_is_type(added, json_type_array) && !json_object_is_type(added, json_type_null)) {
        snprintf(err, errlen, "%s: added_tokens is not an array", path);
        rc = AARMD_EINVAL;
        goto done;
    }

    /* the id space: the largest id of vocab and added_tokens */
    int64_t max_id = -1;
    json_object_object_foreach(vocab, key0, val0) {
        (void)key0;
        if (!json_object_is_type(val0, json_type_int) || json_object_get_int64(val0) < 0 ||
            json_object_get_int64(val0) > INT32_MAX - 1) {
            snprintf(err, errlen, "%s: model.vocab['%.64s'] is not a non-negative id", path, key0);
            rc = AARMD_EINVAL;
            goto done;
        }
        if (json_object_get_int64(val0) > max_id)
            max_id = json_object_get_int64(val0);
    }
    size_t nadded = added && json_object_is_type(added, json_type_array) ? json_object_array_length(added) : 0;
    for (size_t i = 0; i < nadded; i++) {
        struct json_object *a = json_object_array_get_idx(added, i), *idv = get(a, "id");
        if (!idv || !json_object_is_type(idv, json_type_int) || !get_str(a, "content") ||
            json_object_get_int64(idv) < 0 || json_object_get_int64(idv) > INT32_MAX - 1) {
            snprintf(err, errlen, "%s: added_tokens[%zu] needs an id and a content", path, i);
            rc = AARMD_EINVAL;
            goto done;
        }
        if (json_object_get_int64(idv) > max_id)
            max_id = json_object_get_int64(idv);
    }
    if (max_id < 0) {
        snprintf(err, errlen, "%s: empty vocabulary", path);
        rc = AARMD_EINVAL;
        goto done;
    }
    uint32_t n = (uint32_t)max_id + 1;
    vocab_txt = calloc(n, sizeof *vocab_txt);
    vocab_ids = malloc(n * sizeof *vocab_ids);
    t->scores = calloc(n, sizeof *t->scores);
    t->attr = calloc(n, sizeof *t->attr);
    if (!vocab_txt || !vocab_ids || !t->scores || !t->attr || tok_strtab_init(&t->strs, n)) {
        snprintf(err, errlen, "tokenizer: out of memory");
        rc = AARMD_ENOMEM;
        goto done;
    }
    {
        json_object_object_foreach(vocab, key, val) {
            int64_t id = json_object_get_int64(val);
            if (vocab_txt[id]) {
                snprintf(err, errlen, "%s: id %lld is used by '%.64s' and '%.64s'", path, (long long)id,
                         vocab_txt[id], key);
                rc = AARMD_EINVAL;
                goto done;
            }
            vocab_txt[id] = key;
            t->attr[id] = TOK_ATTR_NORMAL;
        }
    }
    for (size_t i = 0; i < nadded; i++) {
        struct json_object *a = json_object_array_get_idx(added, i);
        int64_t id = json_object_get_int64(get(a, "id"));
        const char *content = get_str(a, "content");
        if (vocab_txt[id] && strcmp(vocab_txt[id], content)) {
            snprintf(err, errlen, "%s: added token %lld '%.64s' differs from the vocab's '%.64s'", path,
                     (long long)id, content, vocab_txt[id]);
            rc = AARMD_EINVAL;
            goto done;
        }
        vocab_txt[id] = content;
        uint16_t attr = get_bool(a, "special", false) ? TOK_ATTR_CONTROL : TOK_ATTR_USER_DEFINED;
        if (get_bool(a, "lstrip", false))
            attr |= TOK_ATTR_LSTRIP;
        if (get_bool(a, "rstrip", false))
            attr |= TOK_ATTR_RSTRIP;
        t->attr[id] = attr;
    }
    t->n_vocab = n;
    for (uint32_t id = 0; id < n; id++) {
        char hole[32];
        const char *txt = vocab_txt[id];
        if (!txt) {
            /* ids nobody uses: unique placeholders that print nothing */
            snprintf(hole, sizeof hole, "[UNUSED_%u]", id);
            txt = hole;
            t->attr[id] = TOK_ATTR_UNUSED;
        }
        size_t len = strlen(txt);
        if (tok_strtab_find(&t->strs, txt, len) >= 0) {
            snprintf(err, errlen, "%s: duplicate token text '%.64s' (id %u)", path, txt, id);
            rc = AARMD_EINVAL;
            goto done;
        }
        if (tok_strtab_add(&t->strs, txt, len) < 0) {
            snprintf(err, errlen, "tokenizer: out of memory");
            rc = AARMD_ENOMEM;
            goto done;
        }
    }
    for (size_t i = 0; i < json_object_array_length(merges); i++) {
        struct json_object *m = json_object_array_get_idx(merges, i);
        const char *l = NULL, *r = NULL;
        size_t ll = 0, rl = 0;
        if (json_object_is_type(m, json_type_string)) {
            const char *s = json_object_get_string(m);
            size_t sl = strlen(s);
            const char *sp = sl > 1 ? memchr(s + 1, ' ', sl - 1) : NULL;
            if (sp) {
                l = s;
                ll = (size_t)(sp - s);
                r = sp + 1;
                rl = sl - ll - 1;
            }
        } else if (json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2 &&
                   json_object_is_type(json_object_array_get_idx(m, 0), json_type_string) &&
                   json_object_is_type(json_object_array_get_idx(m, 1), json_type_string)) {
            l = json_object_get_string(json_object_array_get_idx(m, 0));
            r = json_object_get_string(json_object_array_get_idx(m, 1));
            ll = strlen(l);
            rl = strlen(r);
        }
        if (!l) {
            snprintf(err, errlen, "%s: model.merges[%zu] is neither \"left right\" nor [left, right]", path, i);
            rc = AARMD_EINVAL;
            goto done;
        }
        rc = tok_bpe_add_merge(t, l, ll, r, rl, (uint32_t)i, err, errlen);
        if (rc)
            goto done;
    }

    /* pre-tokenizer */
    {
        const char *regex[6];
        size_t nregex = 0;
        bool byte_level = false;
        struct json_object *pt = get(root, "pre_tokenizer");
        if (!pt || json_object_is_type(pt, json_type_null)) {
            snprintf(err, errlen, "%s: no pre_tokenizer (a ByteLevel one is required)", path);
            rc = AARMD_EUNSUPPORTED;
            goto done;
        }
        rc = walk_pre(pt, regex, &nregex, owned, &nowned, &byte_level, path, err, errlen);
        if (rc)
            goto done;
        if (!byte_level) {
            snprintf(err, errlen, "%s: the pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)",
                     path);
            rc = AARMD_EUNSUPPORTED;
            goto done;
        }
        rc = aarmd_pretok_new_regexes(regex, nregex, &t->pretok, err, errlen);
        if (rc)
            goto done;
    }
    t->ignore_merges = get_bool(model, "ignore_merges", false);
    t->add_space_prefix = false;
    rc = AARMD_OK;
done:
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    free(vocab_txt);
    free(vocab_ids);
    json_object_put(root);
    free(buf);
    return rc;
}
