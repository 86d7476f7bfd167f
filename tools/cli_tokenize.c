/*
 * cli_tokenize.c — `aarmd-cli tokenize` (stdin text -> ids, or --bench for
 * encode throughput) and `aarmd-cli detokenize` (stdin ids -> text).
 * Thin wrappers over core/tokenizer.h; no tokenizer logic lives here.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "gguf.h"
#include "tokenizer.h"

struct tok_opts {
    const char *model;
    bool add_special, parse_special, hf_json, bench;
    double bench_mb;
    size_t bench_chunk;
};

static int read_all(FILE *f, char **out, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *b = malloc(cap + 1);
    if (!b)
        return -1;
    for (;;) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (n < cap)
            break;
        char *nb = realloc(b, cap * 2 + 1);
        if (!nb) {
            free(b);
            return -1;
        }
        b = nb;
        cap *= 2;
    }
    if (ferror(f)) {
        free(b);
        return -1;
    }
    b[n] = '\0';
    *out = b;
    *len = n;
    return 0;
}

static int usage(const char *cmd)
{
    if (!strcmp(cmd, "detokenize"))
        fprintf(stderr, "usage: aarmd-cli detokenize --model FILE [--hf-json] < ids\n");
    else
        fprintf(stderr, "usage: aarmd-cli tokenize --model FILE [--add-special] [--parse-special] [--hf-json]\n"
                        "                          [--bench [--bench-mb N] [--bench-chunk BYTES]] < text\n");
    return 1;
}

static int parse_opts(int argc, char **argv, struct tok_opts *o)
{
    memset(o, 0, sizeof *o);
    o->bench_mb = 16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--model") && i + 1 < argc) {
            o->model = argv[++i];
        } else if (!strcmp(a, "--add-special")) {
            o->add_special = true;
        } else if (!strcmp(a, "--parse-special")) {
            o->parse_special = true;
        } else if (!strcmp(a, "--hf-json")) {
            o->hf_json = true;
        } else if (!strcmp(a, "--bench")) {
            o->bench = true;
        } else if (!strcmp(a, "--bench-mb") && i + 1 < argc) {
            o->bench_mb = atof(argv[++i]);
        } else if (!strcmp(a, "--bench-chunk") && i + 1 < argc) {
            o->bench_chunk = (size_t)strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "aarmd-cli %s: unknown or incomplete option '%s'\n", argv[0], a);
            return -1;
        }
    }
    if (!o->model) {
        fprintf(stderr, "aarmd-cli %s: --model FILE is required\n", argv[0]);
        return -1;
    }
    return 0;
}

static int open_tokenizer(const struct tok_opts *o, const char *cmd, struct aarmd_gguf **g,
                          struct aarmd_tokenizer **t)
{
    char err[512] = "";
    if (aarmd_gguf_open(o->model, g, err, sizeof err) != 0) {
        fprintf(stderr, "aarmd-cli %s: %s\n", cmd, err);
        return -1;
    }
    if (aarmd_tokenizer_from_gguf(*g, o->model, o->hf_json, t, err, sizeof err) != 0) {
        fprintf(stderr, "aarmd-cli %s: %s\n", cmd, err);
        aarmd_gguf_free(*g);
        *g = NULL;
        return -1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Encodes the input repeated up to bench_mb, in one call or in chunks, and
 * prints throughput. Chunks are cut at spaces so that words stay whole. */
static int bench(const struct tok_opts *o, const struct aarmd_tokenizer *t, const char *text, size_t len)
{
    if (len == 0) {
        fprintf(stderr, "aarmd-cli tokenize --bench: no text on stdin\n");
        return 1;
    }
    size_t target = (size_t)(o->bench_mb * 1024 * 1024);
    if (target < len)
        target = len;
    char *buf = malloc(target + 1);
    if (!buf) {
        fprintf(stderr, "aarmd-cli tokenize --bench: out of memory\n");
        return 1;
    }
    size_t n = 0;
    while (n < target) {
        size_t k = len < target - n ? len : target - n;
        memcpy(buf + n, text, k);
        n += k;
    }
    char err[512] = "";
    size_t total_ids = 0;
    double t0 = now_s();
    size_t chunk = o->bench_chunk ? o->bench_chunk : n;
    for (size_t off = 0; off < n;) {
        size_t end = off + chunk < n ? off + chunk : n;
        while (end < n && end > off + 1 && buf[end] != ' ')
            end--;
        int32_t *ids = NULL;
        size_t nids = 0;
        if (aarmd_tokenizer_encode(t, buf + off, end - off, false, false, &ids, &nids, err, sizeof err) != 0) {
            fprintf(stderr, "aarmd-cli tokenize --bench: %s\n", err);
            free(buf);
            return 1;
        }
        total_ids += nids;
        free(ids);
        off = end;
    }
    double dt = now_s() - t0;
    printf("bench: kind=%s bytes=%zu tokens=%zu chunk=%zu seconds=%.3f MB/s=%.2f tokens/s=%.0f\n",
           aarmd_tokenizer_kind(t), n, total_ids, chunk, dt, (double)n / (1024.0 * 1024.0) / dt,
           (double)total_ids / dt);
    free(buf);
    return 0;
}

int aarmd_cli_tokenize(int argc, char **argv)
{
    struct tok_opts o;
    if (parse_opts(argc, argv, &o))
        return usage("tokenize");
    struct aarmd_gguf *g = NULL;
    struct aarmd_tokenizer *t = NULL;
    if (open_tokenizer(&o, "tokenize", &g, &t))
        return 1;
    char *text = NULL;
    size_t len = 0;
    int rc = 1;
    if (read_all(stdin, &text, &len)) {
        fprintf(stderr, "aarmd-cli tokenize: cannot read stdin: %s\n", strerror(errno));
        goto done;
    }
    if (o.bench) {
        rc = bench(&o, t, text, len);
        goto done;
    }
    char err[512] = "";
    int32_t *ids = NULL;
    size_t n = 0;
    if (aarmd_tokenizer_encode(t, text, len, o.add_special, o.parse_special, &ids, &n, err, sizeof err) != 0) {
        fprintf(stderr, "aarmd-cli tokenize: %s\n", err);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", (int)ids[i]);
    printf("\n");
    free(ids);
    rc = 0;
done:
    free(text);
    aarmd_tokenizer_free(t);
    aarmd_gguf_free(g);
    return rc;
}

int aarmd_cli_detokenize(int argc, char **argv)
{
    struct tok_opts o;
    if (parse_opts(argc, argv, &o))
        return usage("detokenize");
    struct aarmd_gguf *g = NULL;
    struct aarmd_tokenizer *t = NULL;
    if (open_tokenizer(&o, "detokenize", &g, &t))
        return 1;
    char *in = NULL, *text = NULL;
    int32_t *ids = NULL;
    size_t len = 0, n = 0, cap = 0, tlen = 0;
    int rc = 1;
    if (read_all(stdin, &in, &len)) {
        fprintf(stderr, "aarmd-cli detokenize: cannot read stdin: %s\n", strerror(errno));
        goto done;
    }
    for (char *p = in;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',')
            p++;
        if (!*p)
            break;
        char *e;
        errno = 0;
        long long v = strtoll(p, &e, 10);
        if (e == p || errno || v < 0 || v > INT32_MAX || (*e && *e != ' ' && *e != '\t' && *e != '\n' &&
                                                          *e != '\r' && *e != ',')) {
            fprintf(stderr, "aarmd-cli detokenize: '%.20s' is not a token id\n", p);
            goto done;
        }
        if (v >= aarmd_tokenizer_n_vocab(t)) {
            fprintf(stderr, "aarmd-cli detokenize: id %lld is out of range (vocabulary has %u tokens)\n", v,
                    aarmd_tokenizer_n_vocab(t));
            goto done;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            int32_t *ni = realloc(ids, cap * sizeof *ni);
            if (!ni) {
                fprintf(stderr, "aarmd-cli detokenize: out of memory\n");
                goto done;
            }
            ids = ni;
        }
        ids[n++] = (int32_t)v;
        p = e;
    }
    char err[512] = "";
    if (aarmd_tokenizer_decode(t, ids, n, &text, &tlen, err, sizeof err) != 0) {
        fprintf(stderr, "aarmd-cli detokenize: %s\n", err);
        goto done;
    }
    fwrite(text, 1, tlen, stdout);
    rc = 0;
done:
    free(in);
    free(ids);
    free(text);
    aarmd_tokenizer_free(t);
    aarmd_gguf_free(g);
    return rc;
}
