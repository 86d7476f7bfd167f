/*
 * tokenizer.h — text <-> token ids for the vocabularies GGUF files carry:
 *   "gguf-spm"  tokenizer.ggml.model = llama (SentencePiece: scores, ▁, byte fallback <0xNN>)
 *   "gguf-bpe"  tokenizer.ggml.model = gpt2 (byte-level BPE, merges, tokenizer.ggml.pre splits)
 *   "hf-json"   a tokenizer.json beside the model file (BPE), loaded with json-c
 * A tokenizer is immutable after creation and safe to use from many threads.
 */
#ifndef AARMD_TOKENIZER_H
#define AARMD_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aarmd_gguf;
struct aarmd_tokenizer;

/* Builds the tokenizer of a GGUF file. When `model_path` is non-NULL and a
 * tokenizer.json lies beside it and prefer_hf_json, that is used instead.
 * Copies what it needs: the result does not reference `g`. */
int aarmd_tokenizer_from_gguf(const struct aarmd_gguf *g, const char *model_path, bool prefer_hf_json,
                              struct aarmd_tokenizer **out, char *err, size_t errlen);
void aarmd_tokenizer_free(struct aarmd_tokenizer *t);   /* accepts NULL */

/* Builds an "hf-json" tokenizer from a tokenizer.json file (a BPE model with
 * vocab, merges, added_tokens and a ByteLevel pre-tokenizer, optionally behind
 * a Split regex). BOS/EOS ids and add_bos/add_eos come from `g` when non-NULL
 * (tokenizer.json does not carry them); g may be NULL. */
int aarmd_tokenizer_from_hf_json(const char *json_path, const struct aarmd_gguf *g,
                                 struct aarmd_tokenizer **out, char *err, size_t errlen);

/* "gguf-spm", "gguf-bpe" or "hf-json". */
const char *aarmd_tokenizer_kind(const struct aarmd_tokenizer *t);
uint32_t aarmd_tokenizer_n_vocab(const struct aarmd_tokenizer *t);
int32_t aarmd_tokenizer_bos(const struct aarmd_tokenizer *t);   /* -1 when none */
int32_t aarmd_tokenizer_eos(const struct aarmd_tokenizer *t);   /* -1 when none */
int32_t aarmd_tokenizer_eot(const struct aarmd_tokenizer *t);   /* -1 when none */
/* Whether encode(add_special = true) prepends BOS. */
bool aarmd_tokenizer_add_bos(const struct aarmd_tokenizer *t);
/* The id whose raw text is exactly text[0..len), or -1. */
int aarmd_tokenizer_find_token(const struct aarmd_tokenizer *t, const char *text, size_t len);
/* True for EOS, EOT, EOM and every other end-of-generation id of the vocab. */
bool aarmd_tokenizer_is_eog(const struct aarmd_tokenizer *t, int32_t id);
/* True for control/special tokens (never printed by detokenize unless asked). */
bool aarmd_tokenizer_is_control(const struct aarmd_tokenizer *t, int32_t id);
/* The vocabulary's raw text of a token (as stored in the file); NULL when out of range. */
const char *aarmd_tokenizer_token_text(const struct aarmd_tokenizer *t, int32_t id);

/*
 * Encodes `len` bytes of UTF-8 `text`. add_special: prepend BOS / append EOS
 * as the vocab's add_bos_token / add_eos_token say. parse_special: special
 * tokens written in the text (e.g. "<|im_start|>") become their ids;
 * otherwise they are tokenized as plain text.
 * On success *ids is malloc'd (caller frees) with *n ids.
 */
int aarmd_tokenizer_encode(const struct aarmd_tokenizer *t, const char *text, size_t len,
                           bool add_special, bool parse_special,
                           int32_t **ids, size_t *n, char *err, size_t errlen);

/*
 * The bytes one token contributes to output text (▁ -> space, <0x41> -> 'A',
 * byte-level BPE chars -> bytes). Control tokens give 0 bytes. Writes at most
 * cap bytes and returns the full length (like snprintf, no NUL; buf may be NULL
 * when cap is 0). -1 when out of range. Pieces follow llama.cpp's token_to_piece
 * with special = false: control/unknown/unused tokens give nothing, user-defined
 * tokens give their raw text, byte tokens their byte.
 */
int aarmd_tokenizer_piece(const struct aarmd_tokenizer *t, int32_t id, char *buf, size_t cap);

/* Decodes ids to text (malloc'd, NUL-terminated; caller frees). The result is
 * the concatenation of the pieces (aarmd_tokenizer_piece), except that, when the
 * vocabulary adds a dummy-prefix space (SPM, tokenizer.ggml.add_space_prefix),
 * one leading ' ' is removed from the first non-empty piece: control tokens such
 * as BOS print nothing and do not count. So decode(encode(s)) == s for text
 * without special tokens, with or without add_special. This is llama.cpp's
 * llama_detokenize(remove_special = false, unparse_special = false) except that
 * llama.cpp lets a leading BOS use up the strip; no clean_up_tokenization_spaces.
 * Invalid UTF-8 is kept as bytes. An id out of range is AARMD_EINVAL. */
int aarmd_tokenizer_decode(const struct aarmd_tokenizer *t, const int32_t *ids, size_t n,
                           char **text, size_t *len, char *err, size_t errlen);

/*
 * Incremental detokenizer for streaming: push ids one at a time, get back the
 * bytes that are now complete UTF-8 characters. Concatenating every push's
 * output and the final flush equals aarmd_tokenizer_decode of all the ids.
 */
struct aarmd_detok {
    const struct aarmd_tokenizer *tok;
    size_t n_pushed;
    unsigned char pending[8];   /* bytes of an unfinished UTF-8 character */
    size_t n_pending;
};
void aarmd_detok_init(struct aarmd_detok *d, const struct aarmd_tokenizer *t);
/* Same, for ids that continue a text (generated tokens after a prompt): no
 * dummy-prefix space is stripped, as in llama.cpp's token_to_piece streaming. */
void aarmd_detok_init_continue(struct aarmd_detok *d, const struct aarmd_tokenizer *t);
/* Writes the completed text to out (cap bytes); returns bytes written, or -1 if
 * cap is too small or id is out of range (the state is then unchanged). The
 * output needs at most 3 pending bytes + the piece's length (most pieces are
 * < 64 bytes; aarmd_tokenizer_piece(t, id, NULL, 0) + 3 bounds it exactly). */
int aarmd_detok_push(struct aarmd_detok *d, int32_t id, char *out, size_t cap);
/* Emits whatever is pending (an incomplete character's bytes, as they are). */
int aarmd_detok_flush(struct aarmd_detok *d, char *out, size_t cap);

#endif
