/*
 * test_tokenizer.c — core/tokenizer.c: special tokens and their ids, the EOG
 * set, parse_special, pieces, the streaming detokenizer, and one error per kind
 * of bad vocabulary (built in memory with core/gguf_write.h).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "gguf_write.h"
#include "pretokenize.h"
#include "tokenizer.h"

static char err[1024];

struct loaded {
    struct aarmd_gguf *g;
    struct aarmd_tokenizer *t;
    void *buf;
};

static struct loaded load_path(const char *path)
{
    struct loaded l = {0};
    cr_assert_eq(aarmd_gguf_open(path, &l.g, err, sizeof err), 0, "%s", err);
    cr_assert_eq(aarmd_tokenizer_from_gguf(l.g, path, false, &l.t, err, sizeof err), 0, "%s", err);
    return l;
}

static struct loaded load_vocab(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf", getenv("AARMD_TEST_DATA"), name);
    return load_path(path);
}

static struct loaded load_model(const char *file)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", getenv("AARMD_TEST_MODELS"), file);
    return load_path(path);
}

static void unload(struct loaded *l)
{
    aarmd_tokenizer_free(l->t);
    aarmd_gguf_free(l->g);
    free(l->buf);
}

static size_t encode(const struct aarmd_tokenizer *t, const char *s, bool add, bool parse, int32_t *out, size_t cap)
{
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(aarmd_tokenizer_encode(t, s, strlen(s), add, parse, &ids, &n, err, sizeof err), 0, "%s", err);
    cr_assert_leq(n, cap);
    memcpy(out, ids, n * sizeof *ids);
    free(ids);
    return n;
}

static bool contains(const int32_t *v, size_t n, int32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == id)
            return true;
    return false;
}

/* ---- special ids, EOG, parse_special ---------------------------------------- */

Test(tokenizer, llama_spm_bos_and_ids)
{
    struct loaded l = load_vocab("llama-spm");
    cr_assert_str_eq(aarmd_tokenizer_kind(l.t), "gguf-spm");
    cr_assert_eq(aarmd_tokenizer_n_vocab(l.t), 32000);
    cr_assert_eq(aarmd_tokenizer_bos(l.t), 1);
    cr_assert_eq(aarmd_tokenizer_eos(l.t), 2);
    cr_assert(aarmd_tokenizer_add_bos(l.t));
    int32_t ids[64];
    size_t n = encode(l.t, "Hello world", true, false, ids, 64);
    cr_assert_eq(n, 3);
    cr_assert_eq(ids[0], 1);
    cr_assert_str_eq(aarmd_tokenizer_token_text(l.t, ids[1]), "\xe2\x96\x81Hello");
    cr_assert_str_eq(aarmd_tokenizer_token_text(l.t, ids[2]), "\xe2\x96\x81world");
    cr_assert(aarmd_tokenizer_is_eog(l.t, 2));
    cr_assert_not(aarmd_tokenizer_is_eog(l.t, ids[1]));
    cr_assert(aarmd_tokenizer_is_control(l.t, 1));
    cr_assert_null(aarmd_tokenizer_token_text(l.t, 32000));
    cr_assert_null(aarmd_tokenizer_token_text(l.t, -1));
    /* empty text: nothing, or just BOS */
    cr_assert_eq(encode(l.t, "", false, false, ids, 64), 0);
    cr_assert_eq(encode(l.t, "", true, false, ids, 64), 1);
    unload(&l);
}

Test(tokenizer, smollm_special_tokens)
{
    struct loaded l = load_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    cr_assert_str_eq(aarmd_tokenizer_kind(l.t), "gguf-bpe");
    int32_t im_start = aarmd_tokenizer_find_token(l.t, "<|im_start|>", 12);
    int32_t im_end = aarmd_tokenizer_find_token(l.t, "<|im_end|>", 10);
    int32_t eot = aarmd_tokenizer_find_token(l.t, "<|endoftext|>", 13);
    cr_assert_eq(im_start, 1);
    cr_assert_eq(im_end, 2);
    cr_assert_eq(eot, 0);
    cr_assert(aarmd_tokenizer_is_eog(l.t, im_end));
    cr_assert(aarmd_tokenizer_is_eog(l.t, eot));
    cr_assert_not(aarmd_tokenizer_is_eog(l.t, im_start));
    cr_assert_eq(aarmd_tokenizer_eos(l.t), 2);
    cr_assert_not(aarmd_tokenizer_add_bos(l.t));   /* the file says add_bos_token = false */

    int32_t a[64], b[64];
    const char *chat = "<|im_start|>user\nHi<|im_end|>";
    size_t na = encode(l.t, chat, true, true, a, 64);
    cr_assert_eq(a[0], im_start, "no BOS may precede: add_bos_token is false");
    cr_assert_eq(a[na - 1], im_end);
    size_t nb = encode(l.t, chat, false, false, b, 64);
    cr_assert_not(contains(b, nb, im_start), "control tokens are text without parse_special");
    cr_assert_gt(nb, na);
    /* control tokens print nothing */
    char buf[64];
    cr_assert_eq(aarmd_tokenizer_piece(l.t, im_start, buf, sizeof buf), 0);
    cr_assert_eq(aarmd_tokenizer_piece(l.t, -5, buf, sizeof buf), -1);
    unload(&l);
}

Test(tokenizer, gemma_special_tokens)
{
    struct loaded l = load_model("gemma-3-270m-q4_k_m.gguf");
    cr_assert_str_eq(aarmd_tokenizer_kind(l.t), "gguf-spm");
    cr_assert_eq(aarmd_tokenizer_n_vocab(l.t), 262144);
    cr_assert_eq(aarmd_tokenizer_bos(l.t), 2);
    cr_assert_eq(aarmd_tokenizer_eos(l.t), 1);
    int32_t eot = aarmd_tokenizer_find_token(l.t, "<end_of_turn>", 13);
    int32_t sot = aarmd_tokenizer_find_token(l.t, "<start_of_turn>", 15);
    cr_assert_geq(eot, 0);
    cr_assert_eq(aarmd_tokenizer_eot(l.t), eot, "EOT found by its text, as llama.cpp does");
    cr_assert(aarmd_tokenizer_is_eog(l.t, eot));
    cr_assert(aarmd_tokenizer_is_eog(l.t, 1));
    cr_assert_not(aarmd_tokenizer_is_eog(l.t, sot));
    int32_t ids[64];
    size_t n = encode(l.t, "<start_of_turn>user\nHi<end_of_turn>", true, true, ids, 64);
    cr_assert_eq(ids[0], 2);
    cr_assert_eq(ids[1], sot);
    cr_assert_eq(ids[n - 1], eot);
    /* user-defined tokens (runs of spaces) are matched even without parse_special */
    int32_t spaces3 = aarmd_tokenizer_find_token(l.t, "   ", 3);
    cr_assert_geq(spaces3, 0);
    n = encode(l.t, "a   b", false, false, ids, 64);
    cr_assert(contains(ids, n, spaces3));
    unload(&l);
}

Test(tokenizer, phi3_rstrip_after_special)
{
    /* llama.cpp marks Phi-3's special tokens RSTRIP: spaces after them vanish */
    struct loaded l = load_vocab("phi-3");
    int32_t a[64], b[64];
    size_t na = encode(l.t, "<|user|>\n  Hi", false, true, a, 64);
    size_t nb = encode(l.t, "<|user|>Hi", false, true, b, 64);
    cr_assert_eq(a[0], aarmd_tokenizer_find_token(l.t, "<|user|>", 8));
    cr_assert_eq(na, nb);
    cr_assert_arr_eq(a, b, na * sizeof *a);
    /* <s> keeps its spaces (its RSTRIP is cleared) */
    na = encode(l.t, "<s>  Hi", false, true, a, 64);
    nb = encode(l.t, "<s>Hi", false, true, b, 64);
    cr_assert_neq(na, nb);
    unload(&l);
}

Test(tokenizer, longest_special_first)
{
    /* "<|im_start|>" must win over any shorter special token inside it */
    struct loaded l = load_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    int32_t ids[64];
    size_t n = encode(l.t, "x<|im_start|><|im_start|>y", false, true, ids, 64);
    cr_assert_eq(n, 4);
    cr_assert_eq(ids[1], 1);
    cr_assert_eq(ids[2], 1);
    unload(&l);
}

/* ---- decode and streaming --------------------------------------------------- */

static char *decode(const struct aarmd_tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    char *s = NULL;
    cr_assert_eq(aarmd_tokenizer_decode(t, ids, n, &s, len, err, sizeof err), 0, "%s", err);
    return s;
}

Test(tokenizer, decode_strips_dummy_prefix_once)
{
    struct loaded l = load_vocab("llama-spm");
    int32_t ids[64];
    size_t n = encode(l.t, "  two spaces", true, false, ids, 64);
    size_t len;
    char *s = decode(l.t, ids, n, &len);
    cr_assert_str_eq(s, "  two spaces", "BOS prints nothing and does not use up the strip");
    free(s);
    /* continuing a stream: no strip */
    struct aarmd_detok d;
    aarmd_detok_init_continue(&d, l.t);
    char out[300];
    int k = aarmd_detok_push(&d, ids[1], out, sizeof out);
    cr_assert_gt(k, 0);
    cr_assert_eq(out[0], ' ');
    unload(&l);
}

Test(tokenizer, decode_errors)
{
    struct loaded l = load_vocab("gpt-2");
    int32_t bad[] = {15496, 50257};
    char *s = NULL;
    size_t len;
    cr_assert_eq(aarmd_tokenizer_decode(l.t, bad, 2, &s, &len, err, sizeof err), -1);
    cr_assert(strstr(err, "50257") && strstr(err, "out of range"), "%s", err);
    cr_assert_null(s);
    struct aarmd_detok d;
    aarmd_detok_init(&d, l.t);
    char out[300];
    cr_assert_eq(aarmd_detok_push(&d, -1, out, sizeof out), -1);
    cr_assert_eq(aarmd_detok_push(&d, 50257, out, sizeof out), -1);
    unload(&l);
}

Test(tokenizer, detok_never_splits_a_character)
{
    /* byte-fallback tokens give one byte each: "é" is <0xC3><0xA9> in pieces */
    struct loaded l = load_vocab("llama-spm");
    const char *text = "x\xf0\x9f\xa6\x99y\xc3\xa9\xe4\xb8\xad";   /* x🦙yé中 */
    int32_t ids[64];
    size_t n = encode(l.t, text, false, false, ids, 64);
    struct aarmd_detok d;
    aarmd_detok_init(&d, l.t);
    char all[256] = "", out[300];
    size_t total = 0;
    bool saw_partial_hold = false;
    for (size_t i = 0; i < n; i++) {
        int k = aarmd_detok_push(&d, ids[i], out, sizeof out);
        cr_assert_geq(k, 0);
        if (k == 0 && d.n_pending > 0)
            saw_partial_hold = true;
        /* every chunk is whole characters */
        for (int j = 0; j < k; j++) {
            unsigned char c = (unsigned char)out[j];
            if (c >= 0xC0) {
                int need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
                cr_assert_leq(j + need, k, "chunk %zu cuts a character", i);
            }
        }
        memcpy(all + total, out, (size_t)k);
        total += (size_t)k;
    }
    int k = aarmd_detok_flush(&d, out, sizeof out);
    cr_assert_eq(k, 0);
    cr_assert(saw_partial_hold, "the emoji's byte tokens should have been held back");
    size_t len;
    char *s = decode(l.t, ids, n, &len);
    cr_assert_eq(total, len);
    cr_assert_arr_eq(all, s, len);
    cr_assert_str_eq(s, text);
    free(s);
    unload(&l);
}

Test(tokenizer, detok_flush_emits_broken_tail)
{
    struct loaded l = load_vocab("llama-spm");
    /* an unfinished 3-byte character at the end: bytes come out at flush */
    const char *text = "ab\xe4\xb8";
    int32_t ids[64];
    size_t n = encode(l.t, text, false, false, ids, 64);
    struct aarmd_detok d;
    aarmd_detok_init(&d, l.t);
    char all[64], out[300];
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int k = aarmd_detok_push(&d, ids[i], out, sizeof out);
        memcpy(all + total, out, (size_t)k);
        total += (size_t)k;
    }
    cr_assert_eq(total, 2);
    int k = aarmd_detok_flush(&d, out, sizeof out);
    cr_assert_eq(k, 2);
    memcpy(all + total, out, 2);
    cr_assert_arr_eq(all, text, 4);
    /* cap too small: -1 and nothing lost */
    aarmd_detok_init(&d, l.t);
    cr_assert_eq(aarmd_detok_push(&d, ids[0], out, 0), -1);
    cr_assert_gt(aarmd_detok_push(&d, ids[0], out, sizeof out), 0);
    unload(&l);
}

/* ---- pre-tokenizer table ------------------------------------------------------ */

Test(tokenizer, pretok_names)
{
    static const char *const names[] = {"default", "gpt-2", "llama-bpe", "qwen2", "smollm", "deepseek-llm",
                                        "deepseek-coder", "falcon", "mpt", "starcoder", "refact", "command-r",
                                        "gpt-4o", "tekken", "olmo", "dbrx", "smaug-bpe", "poro-chat", "jais",
                                        "stablelm2", "bloom", "gpt3-finnish", "exaone", "chameleon", "minerva-7b",
                                        "viking", "codeshell", "chatglm-bpe", "bailingmoe", "seed-coder",
                                        "superbpe", "trillion", "kimi-k2", "deepseek-v3"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct aarmd_pretok *p = NULL;
        struct aarmd_pretok_info info;
        cr_assert_eq(aarmd_pretok_new(names[i], &p, &info, err, sizeof err), 0, "%s: %s", names[i], err);
        cr_assert(info.known, "%s", names[i]);
        cr_assert_gt(aarmd_pretok_n_regexes(p), 0);
        /* every regex set splits a mixed text into pieces that cover it exactly */
        const char *text = "Hello, y'all! 12345 \xe6\x88\x91\xe6\x83\xb3 \xf0\x9f\x98\x81  \n\tend";
        struct aarmd_pretok_scratch s = {0};
        const struct aarmd_span *sp;
        size_t n;
        cr_assert_eq(aarmd_pretok_split(p, text, strlen(text), &s, &sp, &n, err, sizeof err), 0, "%s", err);
        size_t pos = 0;
        for (size_t k = 0; k < n; k++) {
            cr_assert_eq(sp[k].off, pos, "%s: gap before piece %zu", names[i], k);
            cr_assert_gt(sp[k].len, 0);
            pos += sp[k].len;
        }
        cr_assert_eq(pos, strlen(text), "%s", names[i]);
        aarmd_pretok_scratch_fini(&s);
        aarmd_pretok_free(p);
    }
}

Test(tokenizer, pretok_unknown_name_falls_back)
{
    struct aarmd_pretok *p = NULL;
    struct aarmd_pretok_info info;
    cr_assert_eq(aarmd_pretok_new("no-such-pre", &p, &info, err, sizeof err), 0, "%s", err);
    cr_assert_not(info.known);
    aarmd_pretok_free(p);
    const char *bad[] = {"(unclosed"};
    cr_assert_eq(aarmd_pretok_new_regexes(bad, 1, &p, err, sizeof err), -1);
    cr_assert(strstr(err, "(unclosed"), "%s", err);
}

Test(tokenizer, pretok_smollm_splits_digits)
{
    struct aarmd_pretok *p = NULL;
    cr_assert_eq(aarmd_pretok_new("smollm", &p, NULL, err, sizeof err), 0, "%s", err);
    struct aarmd_pretok_scratch s = {0};
    const struct aarmd_span *sp;
    size_t n;
    cr_assert_eq(aarmd_pretok_split(p, "ab 123", 6, &s, &sp, &n, err, sizeof err), 0);
    cr_assert_eq(n, 5);   /* "ab" " " "1" "2" "3" */
    cr_assert_eq(sp[2].len, 1);
    aarmd_pretok_scratch_fini(&s);
    aarmd_pretok_free(p);
}

/* ---- bad vocabularies ----------------------------------------------------------- */

static const char *const small_tokens[] = {"<unk>", "<s>", "</s>", "a", "b", "ab", "\xe2\x96\x81", "\xe2\x96\x81" "a"};

static struct aarmd_gguf_writer *small_writer(const char *model)
{
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    cr_assert_not_null(w);
    if (model)
        aarmd_gguf_writer_set_str(w, "tokenizer.ggml.model", model);
    aarmd_gguf_writer_set_str_arr(w, "tokenizer.ggml.tokens", small_tokens, 8);
    return w;
}

/* Builds the tokenizer of the writer's file; returns the status (err holds the message). */
static int try_build(struct aarmd_gguf_writer *w)
{
    void *buf = NULL;
    size_t size = 0;
    char werr[256];
    cr_assert_eq(aarmd_gguf_writer_to_mem(w, &buf, &size, werr, sizeof werr), 0, "%s", werr);
    aarmd_gguf_writer_free(w);
    struct aarmd_gguf *g = NULL;
    cr_assert_eq(aarmd_gguf_open_mem(buf, size, "mem.gguf", &g, err, sizeof err), 0, "%s", err);
    struct aarmd_tokenizer *t = NULL;
    err[0] = '\0';
    int rc = aarmd_tokenizer_from_gguf(g, NULL, false, &t, err, sizeof err);
    if (rc == 0) {
        cr_assert_not_null(t);
        int32_t *ids = NULL;
        size_t n = 0;
        cr_assert_eq(aarmd_tokenizer_encode(t, "ab a", 4, true, false, &ids, &n, err, sizeof err), 0, "%s", err);
        free(ids);
    } else {
        cr_assert_null(t);
    }
    aarmd_tokenizer_free(t);
    aarmd_gguf_free(g);
    free(buf);
    return rc;
}

Test(tokenizer_bad, small_valid_spm_works)
{
    cr_assert_eq(try_build(small_writer("llama")), 0, "%s", err);
}

Test(tokenizer_bad, no_model_key)
{
    cr_assert_eq(try_build(small_writer(NULL)), -1);
    cr_assert(strstr(err, "tokenizer.ggml.model"), "%s", err);
}

Test(tokenizer_bad, unsupported_model)
{
    cr_assert_eq(try_build(small_writer("bert")), -4);
    cr_assert(strstr(err, "'bert'"), "%s", err);
}

Test(tokenizer_bad, model_not_a_string)
{
    struct aarmd_gguf_writer *w = small_writer(NULL);
    aarmd_gguf_writer_set_u32(w, "tokenizer.ggml.model", 7);
    cr_assert_eq(try_build(w), -1);
    cr_assert(strstr(err, "not a string"), "%s", err);
}

Test(tokenizer_bad, no_tokens)
{
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    aarmd_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    cr_assert_eq(try_build(w), -1);
    cr_assert(strstr(err, "tokenizer.ggml.tokens"), "%s", err);
}

Test(tokenizer_bad, tokens_not_strings)
{
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    aarmd_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    uint32_t v[3] = {1, 2, 3};
    aarmd_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", 4 /* u32 */, v, 3);
    cr_assert_eq(try_build(w), -1);
    cr_assert(strstr(err, "not an array of strings"), "%s", err);
}

Test(tokenizer_bad, scores_too_short)
{
    struct aarmd_gguf_writer *w = small_writer("llama");
    float sc[3] = {0, 0, 0};
    aarmd_gguf_writer_set_arr(w, "tokenizer.ggml.scores", 6 /* f32 */, sc, 3);
    cr_assert_eq(try_build(w), -1);
    cr_assert(strstr(err, "scores has 3 entries for 8 tokens"), "%s", err);
}

Test(tokenizer_bad, scores_wrong_type)
{
    struct aarmd_gguf_writer *w = small_writer("llama");
    aarmd_gguf_writer_set_str(w, "tokenizer.ggml.scores", "nope");
    cr_assert_eq(try_build(w), -1);
    cr_assert(strstr(err, "tokenizer.ggml.scores"), "%s", err);
}

Test(tokenizer_bad, token_type_out_of_range)
{
    struct aarmd_gguf_writer *w = small_writer("llama");
    int32_t ty[8] = {2, 3, 3, 1, 1, 9, 1, 1};
    aarmd_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", 5 /* i32 */, ty, 8);
    cr_assert_eq(try_build(w), -1);
    cr_assert(strstr(err, "token_type[5] = 9"), "%s", err);
}

Test(tokenizer_bad, bos_out_of_range)
{
    struct aarmd_gguf_writer *w = small_writer("llama");
    aarmd_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 8);
    cr_assert_eq(try_build(w), -1);
    cr_assert(strstr(err, "bos_token_id = 8 is out of range"), "%s", err);
}

Test(tokenizer_bad, add_bos_without_bos)
{
    struct aarmd_gguf_writer *w = small_writer("gpt2");
    const char *merges[] = {"a b"};
    aarmd_gguf_writer_set_str_arr(w, "tokenizer.ggml.merges", merges, 1);
    aarmd_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);   /* gpt2's default BOS 11 > vocab */
    cr_assert_eq(try_build(w), -1);
    cr_assert(strstr(err, "no BOS"), "%s", err);
}

Test(tokenizer_bad, gpt2_without_merges)
{
    cr_assert_eq(try_build(small_writer("gpt2")), -1);
    cr_assert(strstr(err, "merges is missing"), "%s", err);
}

Test(tokenizer_bad, malformed_merge)
{
    struct aarmd_gguf_writer *w = small_writer("gpt2");
    const char *merges[] = {"a b", "ab"};
    aarmd_gguf_writer_set_str_arr(w, "tokenizer.ggml.merges", merges, 2);
    cr_assert_eq(try_build(w), -1);
    cr_assert(strstr(err, "merges[1] = 'ab'"), "%s", err);
}

Test(tokenizer_bad, small_valid_bpe_works)
{
    struct aarmd_gguf_writer *w = small_writer("gpt2");
    const char *merges[] = {"a b"};
    aarmd_gguf_writer_set_str_arr(w, "tokenizer.ggml.merges", merges, 1);
    aarmd_gguf_writer_set_str(w, "tokenizer.ggml.pre", "made-up-name");   /* falls back to gpt-2 rules */
    cr_assert_eq(try_build(w), 0, "%s", err);
}

Test(tokenizer_bad, duplicate_token)
{
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    aarmd_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    const char *toks[] = {"<unk>", "<s>", "</s>", "a", "a"};
    aarmd_gguf_writer_set_str_arr(w, "tokenizer.ggml.tokens", toks, 5);
    cr_assert_eq(try_build(w), -1);
    cr_assert(strstr(err, "duplicate token") && strstr(err, "ids 3 and 4"), "%s", err);
}

Test(tokenizer_bad, add_bos_not_bool)
{
    struct aarmd_gguf_writer *w = small_writer("llama");
    aarmd_gguf_writer_set_str(w, "tokenizer.ggml.add_bos_token", "yes");
    cr_assert_eq(try_build(w), -1);
    cr_assert(strstr(err, "add_bos_token is not a bool"), "%s", err);
}
