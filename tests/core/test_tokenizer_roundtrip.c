/*
 * test_tokenizer_roundtrip.c — property: decode(encode(s)) == s for random valid
 * UTF-8 (emoji, CJK, combining marks, control characters, runs of spaces, ...)
 * with every vocabulary, and the streaming detokenizer's chunks, concatenated,
 * equal decode() and never cut a character. Deterministic seed per vocabulary.
 * Excluded by definition: U+2581 in SPM text (SentencePiece's space stand-in
 * decodes to ' '), special-token texts (not parsed here, but user-defined
 * tokens of SPM vocabs with a dummy prefix would re-add a space), and for
 * byte-level BPE any byte whose GPT-2 character is not in the vocabulary
 * (SmolLM2 lacks e.g. 0xF1: llama.cpp drops such bytes, and so do we).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"
#include "unicode.h"

static uint64_t rng;

static uint32_t next_u32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static uint32_t pick(uint32_t lo, uint32_t hi)
{
    return lo + next_u32() % (hi - lo + 1);
}

static size_t put_cp(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A random string of `parts` pieces of assorted kinds; returns its length. */
static size_t random_text(char *o, int parts)
{
    size_t n = 0;
    for (int p = 0; p < parts; p++) {
        switch (next_u32() % 13) {
        case 0: for (uint32_t k = pick(1, 8); k; k--) o[n++] = (char)pick('a', 'z'); break;
        case 1: for (uint32_t k = pick(1, 6); k; k--) o[n++] = (char)pick('0', '9'); break;
        case 2: o[n++] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"[next_u32() % 32]; break;
        case 3: for (uint32_t k = pick(1, 12); k; k--) o[n++] = ' '; break;
        case 4: for (uint32_t k = pick(1, 4); k; k--) o[n++] = "\t\n\r "[next_u32() % 4]; break;
        case 5: o[n++] = (char)(next_u32() % 3 ? pick(1, 0x1F) : 0x7F); break;
        case 6: n += put_cp(o + n, pick(0xA0, 0x24F)); break;
        case 7: o[n++] = (char)pick('A', 'Z'); for (uint32_t k = pick(1, 3); k; k--) n += put_cp(o + n, pick(0x300, 0x36F)); break;
        case 8: for (uint32_t k = pick(1, 5); k; k--) n += put_cp(o + n, pick(0x4E00, 0x9FFF)); break;
        case 9:
            n += put_cp(o + n, pick(0x1F300, 0x1FAFF));
            if (next_u32() % 2) {
                n += put_cp(o + n, 0x200D);
                n += put_cp(o + n, pick(0x1F300, 0x1FAFF));
                n += put_cp(o + n, 0xFE0F);
            }
            break;
        case 10: for (uint32_t k = pick(1, 6); k; k--) n += put_cp(o + n, pick(0x600, 0x6FF)); break;
        case 11: {
            uint32_t cp;
            do
                cp = pick(0x80, 0xFFFD);
            while ((cp >= 0xD800 && cp <= 0xDFFF) || cp == 0x2581);
            n += put_cp(o + n, cp);
            break;
        }
        default: n += put_cp(o + n, pick(0x10000, 0x10FFFF)); break;
        }
    }
    return n;
}

/* Byte-level BPE can only give back bytes whose stand-in character is a token. */
static bool representable(const struct aarmd_tokenizer *t, const char *s, size_t len)
{
    if (!strcmp(aarmd_tokenizer_kind(t), "gguf-spm"))
        return true;
    for (size_t i = 0; i < len; i++) {
        char buf[4];
        size_t n = aarmd_gpt2_byte_to_utf8((unsigned char)s[i], buf);
        if (aarmd_tokenizer_find_token(t, buf, n) < 0)
            return false;
    }
    return true;
}

static void roundtrip(const char *path, uint64_t seed, int n_strings)
{
    char err[512] = "";
    struct aarmd_gguf *g = NULL;
    struct aarmd_tokenizer *t = NULL;
    cr_assert_eq(aarmd_gguf_open(path, &g, err, sizeof err), 0, "%s", err);
    cr_assert_eq(aarmd_tokenizer_from_gguf(g, path, false, &t, err, sizeof err), 0, "%s", err);
    rng = seed;
    char text[4096];
    int n_tested = 0;
    for (int i = 0; i < n_strings; i++) {
        size_t len = random_text(text, (int)pick(1, 40));
        if (!representable(t, text, len))
            continue;
        n_tested++;
        for (int add = 0; add < 2; add++) {
            int32_t *ids = NULL;
            size_t n = 0;
            cr_assert_eq(aarmd_tokenizer_encode(t, text, len, add, false, &ids, &n, err, sizeof err), 0, "%s", err);
            char *dec = NULL;
            size_t dlen = 0;
            cr_assert_eq(aarmd_tokenizer_decode(t, ids, n, &dec, &dlen, err, sizeof err), 0, "%s", err);
            cr_assert(dlen == len && !memcmp(dec, text, len), "%s: string %d (add_special %d) does not round-trip:\n"
                      "  in:  '%.*s'\n  out: '%.*s'", path, i, add, (int)len, text, (int)dlen, dec);
            /* streaming */
            struct aarmd_detok d;
            aarmd_detok_init(&d, t);
            char *all = malloc(dlen + 1), out[1024];
            size_t total = 0;
            for (size_t k = 0; k < n; k++) {
                int w = aarmd_detok_push(&d, ids[k], out, sizeof out);
                cr_assert_geq(w, 0);
                /* valid input: every chunk is whole characters */
                for (int j = 0; j < w;) {
                    unsigned char c = (unsigned char)out[j];
                    int need = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
                    cr_assert(c < 0x80 || c >= 0xC0, "chunk starts inside a character");
                    cr_assert_leq(j + need, w, "chunk cuts a character");
                    j += need;
                }
                cr_assert_leq(total + (size_t)w, dlen);
                memcpy(all + total, out, (size_t)w);
                total += (size_t)w;
            }
            int w = aarmd_detok_flush(&d, out, sizeof out);
            cr_assert_eq(w, 0, "valid text leaves nothing pending");
            cr_assert_eq(total, dlen);
            cr_assert_arr_eq(all, dec, dlen);
            free(all);
            free(dec);
            free(ids);
        }
    }
    cr_assert_gt(n_tested, n_strings / 3, "%s: only %d of %d strings were representable", path, n_tested, n_strings);
    aarmd_tokenizer_free(t);
    aarmd_gguf_free(g);
}

static void vocab(const char *name, uint64_t seed)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf", getenv("AARMD_TEST_DATA"), name);
    roundtrip(path, seed, 300);
}

static void model(const char *file, uint64_t seed)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", getenv("AARMD_TEST_MODELS"), file);
    roundtrip(path, seed, 200);
}

Test(tokenizer_roundtrip, gpt_2) { vocab("gpt-2", 0x1234567u); }
Test(tokenizer_roundtrip, llama_spm) { vocab("llama-spm", 0x2345678u); }
Test(tokenizer_roundtrip, phi_3) { vocab("phi-3", 0x3456789u); }
Test(tokenizer_roundtrip, smollm2) { model("SmolLM2-135M-Instruct.Q4_1.gguf", 0x456789Au); }
Test(tokenizer_roundtrip, gemma3) { model("gemma-3-270m-q4_k_m.gguf", 0x56789ABu); }

Test(tokenizer_roundtrip, spm_keeps_invalid_utf8)
{
    /* SPM byte fallback carries any bytes through unchanged */
    char err[512], path[1024];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-llama-spm.gguf", getenv("AARMD_TEST_DATA"));
    struct aarmd_gguf *g = NULL;
    struct aarmd_tokenizer *t = NULL;
    cr_assert_eq(aarmd_gguf_open(path, &g, err, sizeof err), 0, "%s", err);
    cr_assert_eq(aarmd_tokenizer_from_gguf(g, path, false, &t, err, sizeof err), 0, "%s", err);
    /* (a lead byte before a space would swallow part of the escaped U+2581: llama.cpp
     * cuts symbols by lead byte, so such text does not round-trip there either) */
    const char text[] = "\x80\x81 a\xbf b\xc3";
    int32_t *ids = NULL;
    size_t n;
    cr_assert_eq(aarmd_tokenizer_encode(t, text, sizeof text - 1, false, false, &ids, &n, err, sizeof err), 0);
    char *dec;
    size_t dlen;
    cr_assert_eq(aarmd_tokenizer_decode(t, ids, n, &dec, &dlen, err, sizeof err), 0);
    cr_assert_eq(dlen, sizeof text - 1);
    cr_assert_arr_eq(dec, text, dlen);
    free(dec);
    free(ids);
    aarmd_tokenizer_free(t);
    aarmd_gguf_free(g);
}

Test(tokenizer_roundtrip, bpe_replaces_invalid_utf8)
{
    /* byte-level BPE sees U+FFFD for a byte that starts no valid character, like llama.cpp */
    char err[512], path[1024];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-gpt-2.gguf", getenv("AARMD_TEST_DATA"));
    struct aarmd_gguf *g = NULL;
    struct aarmd_tokenizer *t = NULL;
    cr_assert_eq(aarmd_gguf_open(path, &g, err, sizeof err), 0, "%s", err);
    cr_assert_eq(aarmd_tokenizer_from_gguf(g, path, false, &t, err, sizeof err), 0, "%s", err);
    int32_t *ids = NULL;
    size_t n;
    cr_assert_eq(aarmd_tokenizer_encode(t, "a\xff" "b", 3, false, false, &ids, &n, err, sizeof err), 0);
    char *dec;
    size_t dlen;
    cr_assert_eq(aarmd_tokenizer_decode(t, ids, n, &dec, &dlen, err, sizeof err), 0);
    cr_assert_str_eq(dec, "a\xef\xbf\xbd" "b");
    free(dec);
    free(ids);
    aarmd_tokenizer_free(t);
    aarmd_gguf_free(g);
}
