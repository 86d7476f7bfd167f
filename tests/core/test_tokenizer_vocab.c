/*
 * test_tokenizer_vocab.c — conformance with llama.cpp's tokenizer golden files:
 * every text of the .inp files in tests/data/vocab must encode (no BOS, no special parsing)
 * to exactly the ids on the same line of the .out file.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    b[n] = '\0';
    *len = (size_t)n;
    return b;
}

static void check_vocab(const char *name)
{
    const char *dir = getenv("AARMD_TEST_DATA");
    cr_assert_not_null(dir, "AARMD_TEST_DATA is not set");
    char path[1024], inp_path[1100], out_path[1100], err[512] = "";
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf", dir, name);
    snprintf(inp_path, sizeof inp_path, "%s.inp", path);
    snprintf(out_path, sizeof out_path, "%s.out", path);

    struct aarmd_gguf *g = NULL;
    cr_assert_eq(aarmd_gguf_open(path, &g, err, sizeof err), 0, "%s", err);
    struct aarmd_tokenizer *t = NULL;
    cr_assert_eq(aarmd_tokenizer_from_gguf(g, path, false, &t, err, sizeof err), 0, "%s", err);

    size_t inp_len, out_len;
    char *inp = slurp(inp_path, &inp_len);
    char *out = slurp(out_path, &out_len);
    /* llama.cpp's test-tokenizer-0: texts end where "\n__ggml_vocab_test__\n" begins */
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t pos = 0, n_texts = 0, n_bad = 0;
    char *line = out, *line_end;
    while (pos < inp_len) {
        char *next = strstr(inp + pos, sep);
        if (!next)
            break;
        size_t tlen = (size_t)(next - (inp + pos));
        cr_assert(line < out + out_len, "%s: more texts than lines in .out", name);
        line_end = strchr(line, '\n');
        cr_assert_not_null(line_end, "%s: .out line %zu unterminated", name, n_texts + 1);
        *line_end = '\0';

        int32_t want[4096];
        size_t nwant = 0;
        char *p = line;
        for (;;) {
            char *e;
            long v = strtol(p, &e, 10);
            if (e == p)
                break;
            cr_assert_lt(nwant, 4096);
            want[nwant++] = (int32_t)v;
            p = e;
        }

        int32_t *ids = NULL;
        size_t n = 0;
        cr_assert_eq(aarmd_tokenizer_encode(t, inp + pos, tlen, false, false, &ids, &n, err, sizeof err), 0,
                     "%s", err);
        bool same = n == nwant && (n == 0 || !memcmp(ids, want, n * sizeof *ids));
        if (!same) {
            n_bad++;
            fprintf(stderr, "%s text %zu '%.*s':\n  want:", name, n_texts + 1, (int)tlen, inp + pos);
            for (size_t i = 0; i < nwant; i++)
                fprintf(stderr, " %d", want[i]);
            fprintf(stderr, "\n  got: ");
            for (size_t i = 0; i < n; i++)
                fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n");
        }
        free(ids);
        n_texts++;
        line = line_end + 1;
        pos = (size_t)(next - inp) + sizeof sep - 1;
    }
    cr_assert_gt(n_texts, 10, "%s: only %zu texts parsed", name, n_texts);
    cr_expect_eq(n_bad, 0, "%s: %zu of %zu texts differ from llama.cpp", name, n_bad, n_texts);
    free(inp);
    free(out);
    aarmd_tokenizer_free(t);
    aarmd_gguf_free(g);
}

Test(tokenizer_vocab, gpt_2) { check_vocab("gpt-2"); }
Test(tokenizer_vocab, llama_spm) { check_vocab("llama-spm"); }
Test(tokenizer_vocab, phi_3) { check_vocab("phi-3"); }
