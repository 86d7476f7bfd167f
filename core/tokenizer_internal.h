/*
 * tokenizer_internal.h — the tokenizer's shared state, for tokenizer*.c only.
 * Token attributes are llama.cpp's bit flags (a token can be CONTROL|UNUSED).
 */
#ifndef AARMD_TOKENIZER_INTERNAL_H
#define AARMD_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pretokenize.h"
#include "tokenizer.h"

enum {
    TOK_ATTR_UNDEFINED = 0,
    TOK_ATTR_UNKNOWN = 1 << 0,
    TOK_ATTR_UNUSED = 1 << 1,
    TOK_ATTR_NORMAL = 1 << 2,
    TOK_ATTR_CONTROL = 1 << 3,
    TOK_ATTR_USER_DEFINED = 1 << 4,
    TOK_ATTR_BYTE = 1 << 5,
    TOK_ATTR_LSTRIP = 1 << 7,
    TOK_ATTR_RSTRIP = 1 << 8,
};

enum tok_algo { TOK_ALGO_SPM = 0, TOK_ALGO_BPE = 1 };

/* An interned string: texts of tokens come first (string id == token id), then
 * strings that only merges produce (BPE). */
struct tok_strtab {
    char *arena;
    size_t arena_len, arena_cap;
    uint64_t *off_len;      /* (offset << 24) | len, per string */
    uint32_t n, cap;
    int32_t *slots;         /* open addressing: string id or -1 */
    uint32_t mask;
};

/* (left sym << 32 | right sym) -> (rank << 32 | result sym), open addressing. */
struct tok_merges {
    uint64_t *keys;
    uint64_t *vals;
    uint64_t mask;
    uint64_t n;
};

/* Byte trie over the special tokens (for the text partition). */
struct tok_trie_node {
    int32_t child;    /* first child, -1 none */
    int32_t sibling;  /* next sibling, -1 none */
    int32_t token;    /* token ending here, -1 none */
    unsigned char byte;
};
struct tok_trie {
    struct tok_trie_node *nodes;
    uint32_t n, cap;
    int32_t root[256];          /* child of the root per first byte */
};

struct aarmd_tokenizer {
    enum tok_algo algo;
    const char *kind;           /* "gguf-spm", "gguf-bpe", "hf-json" */
    uint32_t n_vocab;
    struct tok_strtab strs;     /* token texts (+ merge-only strings) */
    float *scores;              /* n_vocab */
    uint16_t *attr;             /* n_vocab, TOK_ATTR_* */
    bool *eog;                  /* n_vocab */
    int32_t *special_rank;      /* n_vocab: position in the longest-first special list, -1 when not special */
    struct tok_trie trie;       /* special tokens (control, user-defined, unknown) */
    bool has_user_defined;

    int32_t bos, eos, eot, eom, unk, pad;
    bool add_bos, add_eos, add_space_prefix, ignore_merges;

    /* decoded pieces (llama.cpp token_to_piece with special = false) */
    char *piece_arena;
    uint32_t *piece_off;        /* n_vocab + 1 */

    /* SPM: byte fallback id per byte (<0xXX>, else the 1-char token, else unk) */
    int32_t byte_token[256];

    /* BPE */
    struct aarmd_pretok *pretok;
    struct tok_merges merges;
    int32_t byte_sym[256];      /* string id of GPT-2's stand-in for each byte, -1 none */
    int32_t single_byte_token[256]; /* token whose text is that single raw byte, -1 none */
    bool hf_add_prefix_space;   /* tokenizer.json ByteLevel add_prefix_space */
};

/* strtab */
int tok_strtab_init(struct tok_strtab *t, uint32_t n_hint);
void tok_strtab_fini(struct tok_strtab *t);
/* Adds s (must be absent); returns its id or -1 on no memory. */
int32_t tok_strtab_add(struct tok_strtab *t, const char *s, size_t len);
int32_t tok_strtab_find(const struct tok_strtab *t, const char *s, size_t len);
static inline const char *tok_strtab_str(const struct tok_strtab *t, int32_t id, size_t *len)
{
    uint64_t ol = t->off_len[id];
    *len = (size_t)(ol & 0xFFFFFF);
    return t->arena + (ol >> 24);
}

/* Finishes a tokenizer whose vocab (strs, scores, attr, n_vocab, algo, special
 * ids, add_* flags) is filled: auto-detected EOG/control tokens, special-token
 * trie, pieces, byte tables. model_name/arch: general.name / general.architecture, may be NULL. */
int tok_finish(struct aarmd_tokenizer *t, const char *model_name, char *err, size_t errlen);

/* BPE: builds the merge table from "left right" strings (rank = index). */
int tok_bpe_add_merge(struct aarmd_tokenizer *t, const char *left, size_t llen, const char *right, size_t rlen,
                      uint32_t rank, char *err, size_t errlen);
int tok_bpe_prepare(struct aarmd_tokenizer *t, char *err, size_t errlen);

/* Growable id list. */
struct tok_ids {
    int32_t *v;
    size_t n, cap;
};
int tok_ids_push(struct tok_ids *o, int32_t id);

/* Encoders of one raw-text fragment (no special tokens inside), appending to out.
 * The scratch pointer is owned by the caller's encode call and freed by tok_*_scratch_free. */
struct tok_spm_scratch;
struct tok_bpe_scratch;
int tok_spm_encode(const struct aarmd_tokenizer *t, const char *text, size_t len, bool prefix_space,
                   struct tok_spm_scratch **s, struct tok_ids *out, char *err, size_t errlen);
void tok_spm_scratch_free(struct tok_spm_scratch *s);
int tok_bpe_encode(const struct aarmd_tokenizer *t, const char *text, size_t len,
                   struct tok_bpe_scratch **s, struct tok_ids *out, char *err, size_t errlen);
void tok_bpe_scratch_free(struct tok_bpe_scratch *s);

/* A piece of prompt text: raw (token = -1) or one special token. */
struct tok_frag {
    size_t off, len;
    int32_t token;
};
/* Splits text around the special tokens that apply (control/unknown only with
 * parse_special, user-defined always), longest first; *out is malloc'd. */
int tok_partition(const struct aarmd_tokenizer *t, const char *text, size_t len, bool parse_special,
                  struct tok_frag **out, size_t *nout);

/* hf-json: fills t from a tokenizer.json file (everything before tok_finish). */
int tok_hfjson_load(struct aarmd_tokenizer *t, const char *path, char *err, size_t errlen);

#endif
