/*
 * test_tokenizer_models.c — the two real models against ids from independent
 * implementations (tests/data/tokenizer/fixtures.json, written by
 * make_fixtures.py): SmolLM2 (gpt2 BPE, pre "smollm") vs Hugging Face
 * tokenizers, Gemma 3 (SentencePiece, 262k vocab) vs Google's sentencepiece.
 */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

static void check_model(const char *file)
{
    char path[1024], fx[1024], err[512] = "";
    snprintf(fx, sizeof fx, "%s/tokenizer/fixtures.json", getenv("AARMD_TEST_DATA"));
    struct json_object *root = json_object_from_file(fx);
    cr_assert_not_null(root, "cannot read %s", fx);
    struct json_object *models = NULL, *cases = NULL;
    cr_assert(json_object_object_get_ex(root, "models", &models));
    for (size_t i = 0; i < json_object_array_length(models); i++) {
        struct json_object *m = json_object_array_get_idx(models, i), *f;
        if (json_object_object_get_ex(m, "file", &f) && !strcmp(json_object_get_string(f), file))
            json_object_object_get_ex(m, "cases", &cases);
    }
    cr_assert_not_null(cases, "%s has no cases for %s", fx, file);

    snprintf(path, sizeof path, "%s/%s", getenv("AARMD_TEST_MODELS"), file);
    struct aarmd_gguf *g = NULL;
    struct aarmd_tokenizer *t = NULL;
    cr_assert_eq(aarmd_gguf_open(path, &g, err, sizeof err), 0, "%s", err);
    cr_assert_eq(aarmd_tokenizer_from_gguf(g, path, false, &t, err, sizeof err), 0, "%s", err);
    size_t n_cases = json_object_array_length(cases), n_bad = 0;
    cr_assert_geq(n_cases, 15);
    for (size_t i = 0; i < n_cases; i++) {
        struct json_object *c = json_object_array_get_idx(cases, i), *jt, *jp, *ji;
        cr_assert(json_object_object_get_ex(c, "text", &jt) && json_object_object_get_ex(c, "ids", &ji) &&
                  json_object_object_get_ex(c, "parse_special", &jp));
        const char *text = json_object_get_string(jt);
        size_t len = (size_t)json_object_get_string_len(jt);
        int32_t *ids = NULL;
        size_t n = 0;
        cr_assert_eq(aarmd_tokenizer_encode(t, text, len, false, json_object_get_boolean(jp), &ids, &n, err,
                                            sizeof err), 0, "%s", err);
        size_t nw = json_object_array_length(ji);
        bool same = n == nw;
        for (size_t k = 0; same && k < n; k++)
            same = ids[k] == json_object_get_int(json_object_array_get_idx(ji, k));
        if (!same) {
            n_bad++;
            fprintf(stderr, "%s case %zu '%s':\n  want %s\n  got ", file, i, text, json_object_to_json_string(ji));
            for (size_t k = 0; k < n; k++)
                fprintf(stderr, " %d", ids[k]);
            fprintf(stderr, "\n");
        }
        free(ids);
    }
    cr_expect_eq(n_bad, 0, "%s: %zu of %zu fixture texts differ", file, n_bad, n_cases);
    aarmd_tokenizer_free(t);
    aarmd_gguf_free(g);
    json_object_put(root);
}

Test(tokenizer_models, smollm2_vs_hf_tokenizers) { check_model("SmolLM2-135M-Instruct.Q4_1.gguf"); }
Test(tokenizer_models, gemma3_vs_sentencepiece) { check_model("gemma-3-270m-q4_k_m.gguf"); }
