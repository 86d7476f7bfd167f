/*
 * pretokenize.h — the word splitter of byte-level BPE vocabularies: the
 * regexes that `tokenizer.ggml.pre` names (llama.cpp's table), compiled with
 * PCRE2 (UTF + UCP). Each regex of the list is applied in turn to every piece
 * the previous one left; text a regex does not match stays a piece of its own,
 * and no match looks past the end of its piece.
 * A splitter is immutable once built and may be shared between threads.
 */
#ifndef AARMD_PRETOKENIZE_H
#define AARMD_PRETOKENIZE_H

#include <stdbool.h>
#include <stddef.h>

struct aarmd_pretok;

/* What a pre-tokenizer name implies besides its regexes (llama.cpp's load()). */
struct aarmd_pretok_info {
    bool known;           /* false: the name was not in the table (gpt-2 rules were used) */
    bool ignore_merges;   /* a word that is itself a token is emitted whole (llama3, tekken) */
    bool add_bos;         /* default of add_bos_token for this family */
    bool no_bos;          /* the family has no BOS token (chatglm) */
};

/* Builds the splitter for `name` (NULL or "" = "default"). An unknown name falls
 * back to the gpt-2 regex, logs a warning, and sets info->known = false.
 * info may be NULL. Errors only on a regex PCRE2 refuses (a bug) or no memory. */
int aarmd_pretok_new(const char *name, struct aarmd_pretok **out, struct aarmd_pretok_info *info,
                     char *err, size_t errlen);

/* Builds a splitter from explicit regexes (e.g. a tokenizer.json Split). A regex
 * PCRE2 cannot compile is an error naming it and the offset PCRE2 reports. */
int aarmd_pretok_new_regexes(const char *const *regexes, size_t n, struct aarmd_pretok **out,
                             char *err, size_t errlen);

void aarmd_pretok_free(struct aarmd_pretok *p);   /* accepts NULL */

/* Number of regexes (0 means: the text is one piece). */
size_t aarmd_pretok_n_regexes(const struct aarmd_pretok *p);

/* A piece: text[off, off + len). */
struct aarmd_span {
    size_t off;
    size_t len;
};

/* Scratch a caller reuses between calls so that splitting allocates rarely.
 * Zero-initialise it; free with aarmd_pretok_scratch_fini. */
struct aarmd_pretok_scratch {
    struct aarmd_span *a, *b;
    size_t cap_a, cap_b;
    void *match_data;
};
void aarmd_pretok_scratch_fini(struct aarmd_pretok_scratch *s);

/*
 * Splits `text` (len bytes, must be valid UTF-8: repair it first) into pieces
 * that cover it in order without gaps or empty pieces. On success *spans points
 * into the scratch (valid until its next use) and *n is the count.
 */
int aarmd_pretok_split(const struct aarmd_pretok *p, const char *text, size_t len,
                       struct aarmd_pretok_scratch *s, const struct aarmd_span **spans, size_t *n,
                       char *err, size_t errlen);

#endif
