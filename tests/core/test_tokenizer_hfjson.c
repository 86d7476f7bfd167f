/*
 * test_tokenizer_hfjson.c — core/tokenizer_hfjson.c: a tokenizer.json written
 * from the gpt-2 vocab test file (make_fixtures.py) must tokenize llama.cpp's
 * golden texts exactly as the gguf-bpe tokenizer does, be picked up beside a
 * model when prefer_hf_json, and bad files must give clear errors.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

static char err[1024];

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    b[n] = '\0';
    *len = (size_t)n;
    return b;
}

Test(tokenizer_hfjson, same_as_gguf_on_golden_texts)
{
    const char *data = getenv("AARMD_TEST_DATA");
    char gpath[1024], model_path[1024], inp_path[1100];
    snprintf(gpath, sizeof gpath, "%s/vocab/ggml-vocab-gpt-2.gguf", data);
    /* a model path beside tokenizer.json: only its directory matters */
    snprintf(model_path, sizeof model_path, "%s/tokenizer/hf-gpt-2/model.gguf", data);
    snprintf(inp_path, sizeof inp_path, "%s.inp", gpath);
    struct aarmd_gguf *g = NULL;
    struct aarmd_tokenizer *hf = NULL, *gg = NULL;
    cr_assert_eq(aarmd_gguf_open(gpath, &g, err, sizeof err), 0, "%s", err);
    cr_assert_eq(aarmd_tokenizer_from_gguf(g, model_path, true, &hf, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(aarmd_tokenizer_kind(hf), "hf-json");
    cr_assert_eq(aarmd_tokenizer_from_gguf(g, model_path, false, &gg, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(aarmd_tokenizer_kind(gg), "gguf-bpe");
    cr_assert_eq(aarmd_tokenizer_n_vocab(hf), aarmd_tokenizer_n_vocab(gg));
    cr_assert_eq(aarmd_tokenizer_eos(hf), 50256);
    cr_assert(aarmd_tokenizer_is_eog(hf, 50256));

    size_t len;
    char *inp = slurp(inp_path, &len);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t pos = 0, n_texts = 0;
    while (pos < len) {
        char *next = strstr(inp + pos, sep);
        if (!next)
            break;
        size_t tl = (size_t)(next - inp) - pos;
        int32_t *a = NULL, *b = NULL;
        size_t na, nb;
        cr_assert_eq(aarmd_tokenizer_encode(hf, inp + pos, tl, false, false, &a, &na, err, sizeof err), 0, "%s", err);
        cr_assert_eq(aarmd_tokenizer_encode(gg, inp + pos, tl, false, false, &b, &nb, err, sizeof err), 0, "%s", err);
        cr_assert_eq(na, nb, "text %zu", n_texts);
        cr_assert_arr_eq(a, b, na * sizeof *a, "text %zu", n_texts);
        char *dec;
        size_t dl;
        cr_assert_eq(aarmd_tokenizer_decode(hf, a, na, &dec, &dl, err, sizeof err), 0);
        cr_assert(dl == tl && !memcmp(dec, inp + pos, tl), "text %zu does not round-trip", n_texts);
        free(dec);
        free(a);
        free(b);
        n_texts++;
        pos = (size_t)(next - inp) + sizeof sep - 1;
    }
    cr_assert_gt(n_texts, 40);
    /* special token parsing uses added_tokens */
    int32_t *ids;
    size_t n;
    cr_assert_eq(aarmd_tokenizer_encode(hf, "a<|endoftext|>", 14, false, true, &ids, &n, err, sizeof err), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(ids[1], 50256);
    free(ids);
    free(inp);
    aarmd_tokenizer_free(hf);
    aarmd_tokenizer_free(gg);
    aarmd_gguf_free(g);
}

static int load_json_text(const char *json, struct aarmd_tokenizer **t)
{
    char path[] = "/tmp/aarmd-test-tokenizer-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs(json, f);
    fclose(f);
    err[0] = '\0';
    int rc = aarmd_tokenizer_from_hf_json(path, NULL, t, err, sizeof err);
    remove(path);
    return rc;
}

#define TINY_VOCAB "\"vocab\":{\"a\":0,\"b\":1,\"ab\":2}"

Test(tokenizer_hfjson, tiny_valid)
{
    struct aarmd_tokenizer *t = NULL;
    cr_assert_eq(load_json_text("{\"model\":{\"type\":\"BPE\"," TINY_VOCAB ",\"merges\":[[\"a\",\"b\"]]},"
                                "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}", &t), 0, "%s", err);
    int32_t *ids;
    size_t n;
    cr_assert_eq(aarmd_tokenizer_encode(t, "abab", 4, false, false, &ids, &n, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_assert_eq(ids[0], 2);
    free(ids);
    aarmd_tokenizer_free(t);
}

Test(tokenizer_hfjson, errors)
{
    struct aarmd_tokenizer *t = NULL;
    cr_assert_eq(aarmd_tokenizer_from_hf_json("/nonexistent/tokenizer.json", NULL, &t, err, sizeof err), -5);
    cr_assert(strstr(err, "cannot open"), "%s", err);
    cr_assert_eq(load_json_text("{\"model\": [", &t), -1);
    cr_assert(strstr(err, "not a JSON object"), "%s", err);
    cr_assert_eq(load_json_text("{\"model\":{\"type\":\"WordPiece\"," TINY_VOCAB "}}", &t), -4);
    cr_assert(strstr(err, "'WordPiece'"), "%s", err);
    cr_assert_eq(load_json_text("{\"model\":{\"type\":\"BPE\"," TINY_VOCAB "},\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}",
                                &t), -1);
    cr_assert(strstr(err, "model.merges"), "%s", err);
    cr_assert_eq(load_json_text("{\"model\":{\"type\":\"BPE\"," TINY_VOCAB ",\"merges\":[\"ab\"]},"
                                "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}", &t), -1);
    cr_assert(strstr(err, "merges[0]"), "%s", err);
    cr_assert_eq(load_json_text("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]},"
                                "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}", &t), -1);
    cr_assert(strstr(err, "non-negative id"), "%s", err);
    cr_assert_eq(load_json_text("{\"model\":{\"type\":\"BPE\"," TINY_VOCAB ",\"merges\":[]}}", &t), -4);
    cr_assert(strstr(err, "no pre_tokenizer"), "%s", err);
    cr_assert_eq(load_json_text("{\"model\":{\"type\":\"BPE\"," TINY_VOCAB ",\"merges\":[]},"
                                "\"pre_tokenizer\":{\"type\":\"Metaspace\"}}", &t), -4);
    cr_assert(strstr(err, "'Metaspace'"), "%s", err);
    cr_assert_eq(load_json_text("{\"model\":{\"type\":\"BPE\"," TINY_VOCAB ",\"merges\":[]},"
                                "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                                "\"pattern\":{\"Regex\":\"(oops\"}},{\"type\":\"ByteLevel\",\"use_regex\":false}]}}",
                                &t), -1);
    cr_assert(strstr(err, "(oops"), "%s", err);
    cr_assert_null(t);
}
