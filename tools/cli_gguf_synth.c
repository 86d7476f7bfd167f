/*
 * cli_gguf_synth.c — `aarmd-cli gguf-synth`: writes a synthetic GGUF model of
 * any supported architecture and weight type (core/gguf_synth.c does the work;
 * this file parses options and picks the default vocabulary).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "ggml_type.h"
#include "gguf_synth.h"
#include "model.h"

static const char synth_help[] =
    "usage: aarmd-cli gguf-synth --arch A --type T --out FILE [--layers N] [--embd E]\n"
    "         [--heads H] [--heads-kv K] [--ff F] [--ctx C] [--vocab-from FILE | --vocab-size N]\n"
    "         [--seed S] [--untied]\n"
    "\n"
    "Writes a GGUF model with deterministic random weights (N(0, 0.02); norms ~1).\n"
    "  --arch A        llama, qwen2, qwen3, phi3, gpt2, gemma3\n"
    "  --type T        weight type: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K\n"
    "  --layers N      blocks (default 2)\n"
    "  --embd E        n_embd (default 64; 256 for K-quants)\n"
    "  --heads H       attention heads (default 4)\n"
    "  --heads-kv K    kv heads (default H/2 when H is even, else H; gpt2: H)\n"
    "  --ff F          feed-forward size (default 4*E)\n"
    "  --ctx C         training context (default 512)\n"
    "  --vocab-from F  copy the tokenizer of GGUF file F (default: models/SmolLM2-135M-Instruct.Q4_1.gguf\n"
    "                  or $AARMD_TEST_MODELS/..., else tests/data/vocab/ggml-vocab-gpt-2.gguf)\n"
    "  --vocab-size N  no tokenizer, N embedding rows (for shape tests only)\n"
    "  --seed S        random seed (default 1)\n"
    "  --untied        write output.weight (default: tied to token_embd; phi3 always writes it)\n"
    "\n"
    "K-quants need n_embd, n_ff and n_head*head_dim to be multiples of 256; the\n"
    "32-element formats, multiples of 32.\n";

static int parse_u64(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-') {
        fprintf(stderr, "gguf-synth: %s needs a non-negative integer\n", opt);
        return -1;
    }
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || v > max) {
        fprintf(stderr, "gguf-synth: %s: '%s' is not an integer in 0..%" PRIu64 "\n", opt, s, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_u32(const char *opt, const char *s, uint32_t *out)
{
    uint64_t v;
    if (parse_u64(opt, s, UINT32_MAX, &v))
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int file_exists(const char *p)
{
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* First existing default vocabulary; buf holds the path. */
static const char *default_vocab(char *buf, size_t cap)
{
    const char *models = getenv("AARMD_TEST_MODELS");
    const char *data = getenv("AARMD_TEST_DATA");
    if (models) {
        snprintf(buf, cap, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", models);
        if (file_exists(buf))
            return buf;
    }
    snprintf(buf, cap, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if (file_exists(buf))
        return buf;
    if (data) {
        snprintf(buf, cap, "%s/vocab/ggml-vocab-gpt-2.gguf", data);
        if (file_exists(buf))
            return buf;
    }
    snprintf(buf, cap, "tests/data/vocab/ggml-vocab-gpt-2.gguf");
    return file_exists(buf) ? buf : NULL;
}

int aarmd_cli_gguf_synth(int argc, char **argv)
{
    struct aarmd_synth_opts o = {.seed = 1, .type = (uint32_t)-1};
    const char *out = NULL;
    int have_vocab_size = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(synth_help, stdout);
            return 0;
        }
        if (!strcmp(a, "--untied")) {
            o.untied = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "gguf-synth: %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--arch")) {
            o.arch = v;
        } else if (!strcmp(a, "--type")) {
            int t = aarmd_type_from_name(v);
            if (t < 0) {
                fprintf(stderr, "gguf-synth: unknown type '%s' (F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K)\n", v);
                return 2;
            }
            o.type = (uint32_t)t;
        } else if (!strcmp(a, "--out")) {
            out = v;
        } else if (!strcmp(a, "--vocab-from")) {
            o.vocab_from = v;
        } else if (!strcmp(a, "--layers")) {
            bad = parse_u32(a, v, &o.n_layer);
        } else if (!strcmp(a, "--embd")) {
            bad = parse_u32(a, v, &o.n_embd);
        } else if (!strcmp(a, "--heads")) {
            bad = parse_u32(a, v, &o.n_head);
        } else if (!strcmp(a, "--heads-kv")) {
            bad = parse_u32(a, v, &o.n_head_kv);
        } else if (!strcmp(a, "--ff")) {
            bad = parse_u32(a, v, &o.n_ff);
        } else if (!strcmp(a, "--ctx")) {
            bad = parse_u32(a, v, &o.n_ctx);
        } else if (!strcmp(a, "--vocab-size")) {
            bad = parse_u32(a, v, &o.n_vocab);
            have_vocab_size = 1;
        } else if (!strcmp(a, "--seed")) {
            bad = parse_u64(a, v, UINT64_MAX, &o.seed);
        } else {
            fprintf(stderr, "gguf-synth: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (!o.arch || o.type == (uint32_t)-1 || !out) {
        fprintf(stderr, "gguf-synth: --arch, --type and --out are required (see --help)\n");
        return 2;
    }
    if (have_vocab_size && o.vocab_from) {
        fprintf(stderr, "gguf-synth: --vocab-from and --vocab-size exclude each other\n");
        return 2;
    }
    char vbuf[4096];
    if (!have_vocab_size && !o.vocab_from) {
        o.vocab_from = default_vocab(vbuf, sizeof vbuf);
        if (!o.vocab_from) {
            fprintf(stderr, "gguf-synth: no default vocabulary found; pass --vocab-from FILE or --vocab-size N\n");
            return 1;
        }
    }
    char err[512];
    if (aarmd_gguf_synth(&o, out, err, sizeof err)) {
        fprintf(stderr, "gguf-synth: %s\n", err);
        return 1;
    }
    struct stat st;
    long long size = stat(out, &st) == 0 ? (long long)st.st_size : -1;
    printf("%s: %s %s, %lld bytes, vocabulary %s\n", out, o.arch, aarmd_type_name(o.type), size,
           o.vocab_from ? o.vocab_from : "none");
    return 0;
}
