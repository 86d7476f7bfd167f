/*
 * cli_bench.c — `aarmd-cli bench BACKEND`: prefill (ppN) and decode (tgN)
 * throughput of one backend plugin at batch 1, or (--seqs) of N streams
 * decoding together, on a GGUF file or on a synthetic model shape built in
 * memory (no server, no tokenizer, no scheduler).
 */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli.h"
#include "gguf.h"
#include "log.h"
#include "model.h"
#include "plugin.h"

static const char bench_help[] =
    "usage: aarmd-cli bench BACKEND [--model FILE.gguf | --shape S --type T] [--pp|-p N] [--tg|-n N]\n"
    "                       [--reps|-r R] [--bw GBPS|host] [--json] [--backend-opt k=v ...]\n"
    "                       [--plugin-dir DIR] [--device N] [--seqs N[,N...] [--mixed C]] [--tg-fresh]\n"
    "       (also: aarmd-cli bench --backend BACKEND --model FILE ...)\n"
    "\n"
    "Times a prefill of N tokens (pp, default 512) and N single-token decodes after\n"
    "it (tg, default 128) at batch 1 and prints tokens/s (best of --reps, default 3).\n"
    "--tg-fresh: the decodes start from an empty sequence instead (llama-bench's tg test:\n"
    "its keys are the decoded tokens alone), timed apart from the prefill.\n"
    "--shape builds a llama-architecture model in memory with filler weights of type T\n"
    "(F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K):\n"
    "  smollm2-135m  576 x 30 layers, 9/3 heads, ff 1536, vocab 49152, tied\n"
    "  llama-1b      2048 x 16, 32/8 heads, ff 8192, vocab 128256, tied\n"
    "  llama-8b      4096 x 32, 32/8 heads, ff 14336, vocab 128256\n"
    "--bw GBPS (device copy bandwidth, bytes read + written) adds the decode roofline:\n"
    "(weight bytes + KV bytes read per token) / bandwidth. --bw host measures the host's\n"
    "read bandwidth in this run (a read loop over 256 MB, best of 3; use it for the cpu backend).\n"
    "Every rep is kept: the table gives best, mean and standard deviation over the reps\n"
    "(the warm-up rep excluded); --json prints the same as one JSON object.\n"
    "--seqs N[,N...] (1..256 each, up to 8 values) measures multi-stream decode instead,\n"
    "for each N in turn in this one run: N sequences are each prefilled with pp tokens\n"
    "(one step per sequence), then tg steps each carry one token of every sequence.\n"
    "It reports the aggregate decode rate (N x tg tokens / time), the per-stream rate and\n"
    "the ratio to the first N's aggregate, the mean step time, the same per second of\n"
    "process CPU time, and the load average before and after.\n"
    "--mixed C (with --seqs): each decode step also carries the next C tokens of one more\n"
    "sequence's pp-token prompt (started again once it is whole), as a served step mixes a new\n"
    "prompt's chunk into the running streams' decode; the rates count the N decode tokens.\n";

#define BENCH_MAX_SEQS 256
#define BENCH_MAX_SEQ_LIST 8

struct shape {
    const char *name;
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, tied;
};

static const struct shape shapes[] = {
    {"smollm2-135m", 576, 30, 9, 3, 1536, 49152, 1},
    {"llama-1b", 2048, 16, 32, 8, 8192, 128256, 1},
    {"llama-8b", 4096, 32, 32, 8, 14336, 128256, 0},
};

struct type_row {
    const char *name;
    uint32_t type;
    uint32_t blck, bytes;
    uint32_t f16_at[2];     /* byte offsets of F16 scale fields in a block; 0xFFFF = none */
};

static const struct type_row types[] = {
    {"F32", AARMD_TYPE_F32, 1, 4, {0xFFFF, 0xFFFF}},   {"F16", AARMD_TYPE_F16, 1, 2, {0xFFFF, 0xFFFF}},
    {"BF16", AARMD_TYPE_BF16, 1, 2, {0xFFFF, 0xFFFF}}, {"Q8_0", AARMD_TYPE_Q8_0, 32, 34, {0, 0xFFFF}},
    {"Q4_0", AARMD_TYPE_Q4_0, 32, 18, {0, 0xFFFF}},    {"Q4_1", AARMD_TYPE_Q4_1, 32, 20, {0, 2}},
    {"Q5_0", AARMD_TYPE_Q5_0, 32, 22, {0, 0xFFFF}},    {"Q5_1", AARMD_TYPE_Q5_1, 32, 24, {0, 2}},
    {"Q4_K", AARMD_TYPE_Q4_K, 256, 144, {0, 2}},       {"Q5_K", AARMD_TYPE_Q5_K, 256, 176, {0, 2}},
    {"Q6_K", AARMD_TYPE_Q6_K, 256, 210, {208, 0xFFFF}},
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Filler data valid for `t`: small finite values (F16 0.05-ish scale fields). */
static void fill(const struct type_row *t, uint8_t *buf, size_t bytes)
{
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < bytes; i += 8) {
        uint64_t r = rng_next(&s);
        memcpy(buf + i, &r, bytes - i < 8 ? bytes - i : 8);
    }
    if (t->type == AARMD_TYPE_F32) {
        for (size_t i = 0; i + 4 <= bytes; i += 4) {
            float f = (float)((int)(buf[i] % 200) - 100) * 5e-4f;
            memcpy(buf + i, &f, 4);
        }
    } else if (t->type == AARMD_TYPE_F16 || t->type == AARMD_TYPE_BF16) {
        for (size_t i = 0; i + 2 <= bytes; i += 2) {
            /* sign | exponent around 2^-5 | random mantissa */
            uint16_t h = t->type == AARMD_TYPE_F16 ? (uint16_t)(((buf[i] & 1) << 15) | (0x0A << 10) | (buf[i + 1] << 2))
                                                   : (uint16_t)(((buf[i] & 1) << 15) | (0x7A << 7) | (buf[i + 1] & 0x7F));
            memcpy(buf + i, &h, 2);
        }
    } else {
        const uint16_t scale = 0x1C00;   /* F16 0.0039 */
        for (size_t b = 0; b + t->bytes <= bytes; b += t->bytes)
            for (int k = 0; k < 2; k++)
                if (t->f16_at[k] != 0xFFFF)
                    memcpy(buf + b + t->f16_at[k], &scale, 2);
    }
}

struct synth {
    struct aarmd_model_desc d;
    struct aarmd_tensor *t;
    uint8_t *wbuf;
    float *ones;
};

static void synth_free(struct synth *s)
{
    free(s->t);
    free(s->wbuf);
    free(s->ones);
}

static int synth_build(struct synth *s, const struct shape *sh, const struct type_row *ty)
{
    memset(s, 0, sizeof *s);
    uint32_t E = sh->n_embd, L = sh->n_layer, H = sh->n_head, KV = sh->n_head_kv, D = E / H, F = sh->n_ff;
    uint32_t n_t = 3 + 9 * L;
    s->t = calloc(n_t, sizeof *s->t);
    size_t maxrow = (size_t)(F > E ? F : E) / ty->blck * ty->bytes;
    size_t maxrows = sh->n_vocab > F ? sh->n_vocab : F;
    s->wbuf = malloc(maxrow * maxrows);
    s->ones = malloc((size_t)(F > E ? F : E) * sizeof(float));
    if (!s->t || !s->wbuf || !s->ones)
        return -1;
    fill(ty, s->wbuf, maxrow * maxrows);
    for (uint32_t i = 0; i < (F > E ? F : E); i++)
        s->ones[i] = 1.0f;
    uint32_t n = 0;
#define MAT(role_, layer_, nin, nout)                                                          \
    do {                                                                                       \
        struct aarmd_tensor *x = &s->t[n++];                                                   \
        x->name = #role_;                                                                      \
        x->role = role_;                                                                       \
        x->layer = layer_;                                                                     \
        x->type = ty->type;                                                                    \
        x->n_dims = 2;                                                                         \
        x->ne[0] = nin; x->ne[1] = nout; x->ne[2] = 1; x->ne[3] = 1;                           \
        x->data = s->wbuf;                                                                     \
        x->nbytes = (uint64_t)(nin) / ty->blck * ty->bytes * (uint64_t)(nout);                 \
    } while (0)
#define VEC(role_, layer_, nn)                                                                 \
    do {                                                                                       \
        struct aarmd_tensor *x = &s->t[n++];                                                   \
        x->name = #role_;                                                                      \
        x->role = role_;                                                                       \
        x->layer = layer_;                                                                     \
        x->type = AARMD_TYPE_F32;                                                              \
        x->n_dims = 1;                                                                         \
        x->ne[0] = nn; x->ne[1] = 1; x->ne[2] = 1; x->ne[3] = 1;                               \
        x->data = s->ones;                                                                     \
        x->nbytes = (uint64_t)(nn) * 4;                                                        \
    } while (0)
    MAT(AARMD_ROLE_TOKEN_EMBD, -1, E, sh->n_vocab);
    VEC(AARMD_ROLE_OUTPUT_NORM, -1, E);
    if (!sh->tied)
        MAT(AARMD_ROLE_OUTPUT, -1, E, sh->n_vocab);
    for (int l = 0; l < (int)L; l++) {
        VEC(AARMD_ROLE_ATTN_NORM, l, E);
        MAT(AARMD_ROLE_ATTN_Q, l, E, H * D);
        MAT(AARMD_ROLE_ATTN_K, l, E, KV * D);
        MAT(AARMD_ROLE_ATTN_V, l, E, KV * D);
        MAT(AARMD_ROLE_ATTN_OUT, l, H * D, E);
        VEC(AARMD_ROLE_FFN_NORM, l, E);
        MAT(AARMD_ROLE_FFN_GATE, l, E, F);
        MAT(AARMD_ROLE_FFN_UP, l, E, F);
        MAT(AARMD_ROLE_FFN_DOWN, l, F, E);
    }
#undef MAT
#undef VEC
    struct aarmd_model_desc *d = &s->d;
    d->struct_size = sizeof *d;
    d->arch = "llama";
    d->name = sh->name;
    d->n_embd = E;
    d->n_layer = L;
    d->n_head = H;
    d->n_head_kv = KV;
    d->head_dim = D;
    d->n_ff = F;
    d->n_vocab = sh->n_vocab;
    d->n_ctx_train = 8192;
    d->rope_kind = AARMD_ROPE_NORMAL;
    d->n_rot = D;
    d->rope_freq_base = 500000.0f;
    d->rope_freq_base_swa = 500000.0f;
    d->rope_scale = 1.0f;
    d->norm_kind = AARMD_NORM_RMS;
    d->norm_eps = 1e-5f;
    d->act = AARMD_ACT_SILU_GATED;
    d->attn_scale = 1.0f / sqrtf((float)D);
    d->tied_embeddings = sh->tied;
    d->embd_scale = 1.0f;
    d->bos_id = 1;
    d->eos_id = 2;
    d->tensors = s->t;
    d->n_tensors = n;
    return 0;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Host read bandwidth in GB/s: a read loop over a buffer far larger than the caches, best of 3. */
static double host_read_bw(void)
{
    const size_t n = (size_t)256 << 20;
    uint64_t *buf = malloc(n);
    if (!buf)
        return 0.0;
    memset(buf, 1, n);
    double best = 0.0;
    volatile uint64_t sink = 0;
    for (int r = 0; r < 3; r++) {
        double a = now_s();
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = 0; i < n / sizeof *buf; i += 4) {
            s0 += buf[i];
            s1 += buf[i + 1];
            s2 += buf[i + 2];
            s3 += buf[i + 3];
        }
        sink += s0 + s1 + s2 + s3;
        double t = now_s() - a;
        if (t > 0 && (double)n / t / 1e9 > best)
            best = (double)n / t / 1e9;
    }
    (void)sink;
    free(buf);
    return best;
}

/* s as a JSON string body (quotes, backslashes and control characters escaped) */
static void json_puts(const char *s)
{
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
}

/* mean and sample standard deviation of n rates */
static void mean_sd(const double *v, long n, double *mean, double *sd)
{
    double s = 0.0, q = 0.0;
    for (long i = 0; i < n; i++)
        s += v[i];
    *mean = n ? s / (double)n : 0.0;
    for (long i = 0; i < n; i++)
        q += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(q / (double)(n - 1)) : 0.0;
}

/* "1,4,8" -> up to BENCH_MAX_SEQ_LIST values in [1, BENCH_MAX_SEQS]; -1 on anything else. */
static int parse_seq_list(const char *v, long *out, int *n)
{
    *n = 0;
    char buf[128];
    if (strlen(v) >= sizeof buf)
        return -1;
    snprintf(buf, sizeof buf, "%s", v);
    for (char *tok = buf;;) {   /* every element non-empty: "1,,2" and "4," are refused */
        char *comma = strchr(tok, ',');
        if (comma)
            *comma = '\0';
        if (*n == BENCH_MAX_SEQ_LIST || parse_long(tok, 1, BENCH_MAX_SEQS, &out[*n]))
            return -1;
        (*n)++;
        if (!comma)
            return 0;
        tok = comma + 1;
    }
}

/* The 1-minute load average, or -1 when unknown. */
static double load1(void)
{
    double l[1];
    return getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

struct seqs_run {
    struct aarmd_plugin *p;
    struct aarmd_backend_model *m;
    const struct aarmd_model_desc *desc;
    const char *target, *type;
    long pp, tg, reps;
    long mixed;             /* prompt tokens of one more sequence in every decode step (0: none) */
    int json;
    double t_load;
};

struct seqs_result {
    long n;
    double pp_best;         /* tokens/s, prefill of one sequence */
    double tg_best, tg_mean, tg_sd;   /* aggregate decode tokens/s over the N streams */
    double step_ms;         /* mean decode step of the best rep */
    double step_tokens;     /* mean tokens a decode step holds (N, plus the mixed-in prompt's chunks) */
    double tg_cpu;          /* aggregate decode tokens per second of process CPU time (best rep) */
};

/* CPU time of the whole process (all threads), seconds. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The prompt of stream i: a different one per stream. */
static void seq_prompt(int32_t *prompt, long pp, long i, uint32_t nv)
{
    for (long k = 0; k < pp; k++)
        prompt[k] = (int32_t)(((uint64_t)k * 7919u + 13u + (uint64_t)i * 104729u) % nv);
}

/* One N: N sequences prefilled one by one, then tg steps of N one-token entries (with sr->mixed,
 * sequence N's prompt chunk beside them). */
static int bench_seqs_one(const struct seqs_run *sr, long n, struct seqs_result *res)
{
    int rc = -1;
    uint32_t nv = sr->desc->n_vocab, n_ctx = (uint32_t)(sr->pp + sr->tg + 1);
    long ns = n + (sr->mixed > 0);   /* sequences: the streams, and the mixed-in prompt's */
    char err[1024];
    struct aarmd_backend_seq **seqs = calloc((size_t)ns, sizeof *seqs);
    struct aarmd_batch_entry *e = calloc((size_t)ns, sizeof *e);
    int32_t *prompt = malloc((size_t)sr->pp * sizeof *prompt);
    int32_t *mprompt = malloc((size_t)sr->pp * sizeof *mprompt);
    int32_t *dtok = malloc((size_t)n * sizeof *dtok);
    /* one logits buffer per stream from the backend's logits_alloc, as the server has */
    float **logits = calloc((size_t)ns, sizeof *logits);
    bool *by_backend = calloc((size_t)ns, sizeof *by_backend);
    double *rate = calloc((size_t)sr->reps, sizeof *rate);
    memset(res, 0, sizeof *res);
    res->n = n;
    if (!seqs || !e || !prompt || !mprompt || !dtok || !logits || !by_backend || !rate) {
        fprintf(stderr, "bench: out of memory\n");
        goto out;
    }
    seq_prompt(mprompt, sr->pp, n, nv);
    for (long i = 0; i < ns; i++)
        if (!(logits[i] = aarmd_plugin_logits_alloc(sr->p, sr->m, (size_t)nv * sizeof(float), &by_backend[i]))) {
            fprintf(stderr, "bench: out of memory\n");
            goto out;
        }
    for (long i = 0; i < ns; i++)
        if (aarmd_plugin_seq_new(sr->p, sr->m, n_ctx, &seqs[i], err, sizeof err) != AARMD_OK) {
            fprintf(stderr, "bench: seq_new %ld of %ld: %s\n", i + 1, n, err);
            goto out;
        }
    double best_pp = 1e30, best_tg = 1e30, best_cpu = 1e30;
    for (long r = 0; r <= sr->reps; r++) {   /* r == 0 warms up */
        double t_pp = 0.0;
        for (long i = 0; i < n; i++) {
            if (aarmd_plugin_seq_truncate(sr->p, seqs[i], 0, err, sizeof err) != AARMD_OK) {
                fprintf(stderr, "bench: truncate: %s\n", err);
                goto out;
            }
            seq_prompt(prompt, sr->pp, i, nv);
            struct aarmd_batch_entry pe = {.seq = seqs[i], .tokens = prompt, .n_tokens = (uint32_t)sr->pp,
                                           .want_logits = 1, .logits = logits[i]};
            double a = now_s();
            if (aarmd_plugin_step(sr->p, sr->m, &pe, 1, err, sizeof err) != AARMD_OK) {
                fprintf(stderr, "bench: prefill of stream %ld: %s\n", i + 1, err);
                goto out;
            }
            t_pp += now_s() - a;
        }
        long moff = 0, mtok = 0;   /* tokens of the mixed-in prompt computed so far, in all */
        double b = now_s(), cb = cpu_s();
        for (long k = 0; k < sr->tg; k++) {
            for (long i = 0; i < n; i++) {
                dtok[i] = (int32_t)(((uint64_t)k * 31u + 7u + (uint64_t)i * 131u) % nv);
                e[i] = (struct aarmd_batch_entry){.seq = seqs[i], .tokens = &dtok[i], .n_tokens = 1,
                                                  .want_logits = 1, .logits = logits[i]};
            }
            if (sr->mixed) {
                if (moff == sr->pp)
                    moff = 0;
                if (moff == 0 && aarmd_plugin_seq_truncate(sr->p, seqs[n], 0, err, sizeof err) != AARMD_OK) {
                    fprintf(stderr, "bench: truncate: %s\n", err);
                    goto out;
                }
                long c = sr->pp - moff < sr->mixed ? sr->pp - moff : sr->mixed;
                e[n] = (struct aarmd_batch_entry){.seq = seqs[n], .tokens = mprompt + moff, .n_tokens = (uint32_t)c,
                                                  .want_logits = moff + c == sr->pp, .logits = logits[n]};
                moff += c;
                mtok += c;
            }
            if (aarmd_plugin_step(sr->p, sr->m, e, (uint32_t)ns, err, sizeof err) != AARMD_OK) {
                fprintf(stderr, "bench: decode step of %ld streams: %s\n", n, err);
                goto out;
            }
        }
        double c = now_s(), cc = cpu_s();
        res->step_tokens = sr->tg > 0 ? (double)n + (double)mtok / (double)sr->tg : 0.0;
        if (r > 0) {
            rate[r - 1] = c > b ? (double)(n * sr->tg) / (c - b) : 0.0;
            if (cc - cb < best_cpu)
                best_cpu = cc - cb;
            if (c - b < best_tg)
                best_tg = c - b;
            if (t_pp / (double)n < best_pp)
                best_pp = t_pp / (double)n;
        }
    }
    res->pp_best = (double)sr->pp / best_pp;
    res->tg_best = sr->tg > 0 ? (double)(n * sr->tg) / best_tg : 0.0;
    res->tg_cpu = sr->tg > 0 && best_cpu > 0 ? (double)(n * sr->tg) / best_cpu : 0.0;
    res->step_ms = sr->tg > 0 ? best_tg * 1e3 / (double)sr->tg : 0.0;
    mean_sd(rate, sr->reps, &res->tg_mean, &res->tg_sd);
    rc = 0;
out:
    for (long i = 0; seqs && i < ns; i++)
        aarmd_plugin_seq_free(sr->p, seqs[i]);
    free(seqs);
    free(e);
    free(prompt);
    free(mprompt);
    free(dtok);
    for (long i = 0; logits && i < ns; i++)
        aarmd_plugin_logits_free(sr->p, sr->m, logits[i], by_backend[i]);
    free(logits);
    free(by_backend);
    free(rate);
    return rc;
}

/* Every N of the list in turn, then one table (or JSON object). */
static int bench_seqs(const struct seqs_run *sr, const long *list, int n_list)
{
    struct seqs_result res[BENCH_MAX_SEQ_LIST];
    double la0 = load1();
    for (int i = 0; i < n_list; i++)
        if (bench_seqs_one(sr, list[i], &res[i]))
            return -1;
    double la1 = load1();
    const char *name = sr->desc->name ? sr->desc->name : "?";
    double base = res[0].tg_best;
    if (sr->json) {
        printf("{\"backend\":\"");
        json_puts(sr->target);
        printf("\",\"model\":\"");
        json_puts(name);
        printf("\",\"type\":\"%s\",\"load_ms\":%.3f,\"reps\":%ld,\"pp\":%ld,\"tg\":%ld,"
               "\"mixed\":%ld,\"loadavg_before\":%.2f,\"loadavg_after\":%.2f,\"seqs\":[",
               sr->type, sr->t_load * 1e3, sr->reps, sr->pp, sr->tg, sr->mixed, la0, la1);
        for (int i = 0; i < n_list; i++)
            printf("%s{\"n\":%ld,\"pp_best_tok_s\":%.3f,\"tg_best_tok_s\":%.3f,\"tg_mean_tok_s\":%.3f,"
                   "\"tg_sd_tok_s\":%.3f,\"tg_per_stream_tok_s\":%.3f,\"ratio_to_first\":%.4f,"
                   "\"step_ms\":%.4f,\"step_tokens\":%.4f,"
                   "\"tg_tok_per_cpu_s\":%.3f,\"cpu_ratio_to_first\":%.4f}",
                   i ? "," : "", res[i].n, res[i].pp_best, res[i].tg_best, res[i].tg_mean, res[i].tg_sd,
                   res[i].tg_best / (double)res[i].n, base > 0 ? res[i].tg_best / base : 0.0, res[i].step_ms,
                   res[i].step_tokens, res[i].tg_cpu, res[0].tg_cpu > 0 ? res[i].tg_cpu / res[0].tg_cpu : 0.0);
        printf("]}\n");
        return 0;
    }
    printf("bench backend=%s model=%s type=%s load=%.1f ms pp=%ld tg=%ld reps=%ld mixed=%ld loadavg %.2f -> %.2f\n",
           sr->target, name, sr->type, sr->t_load * 1e3, sr->pp, sr->tg, sr->reps, sr->mixed, la0, la1);
    printf("  %5s %10s %13s %12s %8s %11s %8s %8s %14s %8s\n", "seqs", "pp tok/s", "tg agg tok/s", "tg agg mean",
           "sd", "per-stream", "x first", "step ms", "tg tok/cpu-s", "x first");
    for (int i = 0; i < n_list; i++)
        printf("  %5ld %10.1f %13.1f %12.1f %8.1f %11.1f %8.2f %8.3f %14.1f %8.2f\n", res[i].n, res[i].pp_best,
               res[i].tg_best, res[i].tg_mean, res[i].tg_sd, res[i].tg_best / (double)res[i].n,
               base > 0 ? res[i].tg_best / base : 0.0, res[i].step_ms, res[i].tg_cpu,
               res[0].tg_cpu > 0 ? res[i].tg_cpu / res[0].tg_cpu : 0.0);
    printf("  (tok/cpu-s: decode tokens per second of this process's CPU time, all threads: steadier than wall\n"
           "   time on a shared machine; with threads > 1 it counts the workers' spinning too)\n");
    return 0;
}

int aarmd_cli_bench(int argc, char **argv)
{
    const char *target = NULL, *plugin_dir = NULL, *model_path = NULL, *shape_name = NULL, *type_name = NULL;
    long pp = 512, tg = 128, reps = 3, device = 0, mixed = 0;
    long seq_list[BENCH_MAX_SEQ_LIST];
    int n_seq_list = 0;
    double bw = 0.0;
    int bw_host = 0, json = 0, tg_fresh = 0;
    double *pp_rate = NULL, *tg_rate = NULL;
    int status = 2;
    struct aarmd_opt *opts = calloc((size_t)argc + 1, sizeof *opts);
    char **keys = calloc((size_t)argc + 1, sizeof *keys);
    uint32_t n_opts = 0;
    struct aarmd_plugin *p = NULL;
    struct aarmd_backend_ctx *ctx = NULL;
    struct aarmd_backend_model *m = NULL;
    struct aarmd_backend_seq *seq = NULL;
    struct aarmd_gguf *g = NULL;
    struct aarmd_model_desc *file_desc = NULL;
    struct synth sy;
    int32_t *toks = NULL;
    float *logits = NULL;
    bool logits_by_backend = false;
    char err[2048];
    memset(&sy, 0, sizeof sy);

    if (!opts || !keys)
        goto out;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(bench_help, stdout);
            status = 0;
            goto out;
        }
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(a, "--tg-fresh")) {
            tg_fresh = 1;
            continue;
        }
        if (a[0] != '-') {
            if (target) {
                fprintf(stderr, "bench: one backend at a time (got %s and %s)\n", target, a);
                goto out;
            }
            target = a;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench: %s needs a value\n", a);
            goto out;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--backend")) {
            if (target) {
                fprintf(stderr, "bench: one backend at a time (got %s and %s)\n", target, v);
                goto out;
            }
            target = v;
        } else if (!strcmp(a, "--model") || !strcmp(a, "-m")) model_path = v;
        else if (!strcmp(a, "--shape")) shape_name = v;
        else if (!strcmp(a, "--type")) type_name = v;
        else if (!strcmp(a, "--plugin-dir")) plugin_dir = v;
        else if (!strcmp(a, "--pp") || !strcmp(a, "-p")) bad = parse_long(v, 1, 65536, &pp);
        else if (!strcmp(a, "--tg") || !strcmp(a, "-n")) bad = parse_long(v, 0, 65536, &tg);
        else if (!strcmp(a, "--reps") || !strcmp(a, "-r")) bad = parse_long(v, 1, 100, &reps);
        else if (!strcmp(a, "--device")) bad = parse_long(v, 0, INT32_MAX, &device);
        else if (!strcmp(a, "--seqs")) bad = parse_seq_list(v, seq_list, &n_seq_list);
        else if (!strcmp(a, "--mixed")) bad = parse_long(v, 1, 65536, &mixed);
        else if (!strcmp(a, "--bw") && !strcmp(v, "host")) bw_host = 1;
        else if (!strcmp(a, "--bw")) {
            char *end;
            bw = strtod(v, &end);
            bad = *end || !(bw > 0.0);
        } else if (!strcmp(a, "--backend-opt")) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v) {
                fprintf(stderr, "bench: --backend-opt %s: expected KEY=VALUE\n", v);
                goto out;
            }
            keys[n_opts] = strndup(v, (size_t)(eq - v));
            if (!keys[n_opts])
                goto out;
            opts[n_opts].key = keys[n_opts];
            opts[n_opts].value = eq + 1;
            n_opts++;
        } else {
            fprintf(stderr, "bench: unknown option %s\n%s", a, bench_help);
            goto out;
        }
        if (bad) {
            fprintf(stderr, "bench: %s %s: bad value\n", a, v);
            goto out;
        }
    }
    if (tg_fresh && n_seq_list) {
        fprintf(stderr, "bench: --tg-fresh is for the batch-1 test, not --seqs (whose streams decode after their prompts)\n");
        goto out;
    }
    if (mixed && !n_seq_list) {
        fprintf(stderr, "bench: --mixed adds a prompt chunk to --seqs' decode steps: give --seqs too\n");
        goto out;
    }
    if (mixed > pp) {
        fprintf(stderr, "bench: --mixed %ld: more than the prompt's %ld tokens (--pp)\n", mixed, pp);
        goto out;
    }
    if (!target || (!model_path && !shape_name) || (model_path && shape_name)) {
        fprintf(stderr, "bench: need BACKEND and one of --model or --shape\n%s", bench_help);
        goto out;
    }
    const struct aarmd_model_desc *desc = NULL;
    if (shape_name) {
        const struct shape *sh = NULL;
        const struct type_row *ty = NULL;
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            if (!strcmp(shapes[i].name, shape_name))
                sh = &shapes[i];
        for (size_t i = 0; type_name && i < sizeof types / sizeof types[0]; i++)
            if (!strcasecmp(types[i].name, type_name))
                ty = &types[i];
        if (!sh || !ty) {
            fprintf(stderr, "bench: unknown %s %s\n%s", sh ? "--type" : "--shape", sh ? (type_name ? type_name : "(none)")
                                                                                      : shape_name, bench_help);
            goto out;
        }
        if (sh->n_embd % ty->blck || sh->n_ff % ty->blck) {
            fprintf(stderr, "bench: shape %s (n_embd %u, n_ff %u) does not fit %s blocks of %u\n", sh->name,
                    sh->n_embd, sh->n_ff, ty->name, ty->blck);
            goto out;
        }
        if (synth_build(&sy, sh, ty)) {
            fprintf(stderr, "bench: out of memory\n");
            status = 1;
            goto out;
        }
        desc = &sy.d;
    } else {
        if (aarmd_gguf_open(model_path, &g, err, sizeof err) != AARMD_OK ||
            aarmd_model_desc_from_gguf(g, &file_desc, err, sizeof err) != AARMD_OK) {
            fprintf(stderr, "bench: %s: %s\n", model_path, err);
            status = 1;
            goto out;
        }
        desc = file_desc;
    }
    status = 1;
    aarmd_log_setup(AARMD_LOG_TEXT, "bench", AARMD_LOG_WARN);
    struct aarmd_host host;
    aarmd_plugin_host_init(&host, opts, n_opts, (int32_t)device);
    uint64_t wbytes = 0;
    for (uint32_t i = 0; i < desc->n_tensors; i++)
        wbytes += desc->tensors[i].nbytes;
    uint32_t n_ctx = (uint32_t)(pp + tg + 1);
    double t0 = now_s();
    if (aarmd_plugin_load(target, plugin_dir, &host, &p, err, sizeof err) != AARMD_OK ||
        aarmd_plugin_ctx_new(p, (int32_t)device, &ctx, err, sizeof err) != AARMD_OK ||
        aarmd_plugin_model_load(p, ctx, desc, NULL, NULL, &m, err, sizeof err) != AARMD_OK ||
        (!n_seq_list && aarmd_plugin_seq_new(p, m, n_ctx, &seq, err, sizeof err) != AARMD_OK)) {
        fprintf(stderr, "bench: %s: %s\n", target, err);
        goto out;
    }
    double t_load = now_s() - t0;
    if (n_seq_list) {
        struct seqs_run sr = {.p = p, .m = m, .desc = desc, .target = target, .pp = pp, .tg = tg, .reps = reps,
                              .mixed = mixed, .json = json, .t_load = t_load,
                              .type = shape_name ? type_name : "file"};
        status = bench_seqs(&sr, seq_list, n_seq_list) ? 1 : 0;
        goto out;
    }
    toks = malloc((size_t)pp * sizeof *toks);
    logits = aarmd_plugin_logits_alloc(p, m, (size_t)desc->n_vocab * sizeof *logits, &logits_by_backend);
    pp_rate = calloc((size_t)reps, sizeof *pp_rate);
    tg_rate = calloc((size_t)reps, sizeof *tg_rate);
    if (!toks || !logits || !pp_rate || !tg_rate)
        goto out;
    if (bw_host)
        bw = host_read_bw();   /* in the same run as the timings, so under the same load */
    for (long i = 0; i < pp; i++)
        toks[i] = (int32_t)(((uint64_t)i * 7919u + 13u) % desc->n_vocab);

    double best_pp = 1e30, best_tg = 1e30;
    for (long r = 0; r <= reps; r++) {   /* r == 0 warms up (graph capture, cuBLAS init) */
        if (aarmd_plugin_seq_truncate(p, seq, 0, err, sizeof err) != AARMD_OK) {
            fprintf(stderr, "bench: truncate: %s\n", err);
            goto out;
        }
        struct aarmd_batch_entry e = {.seq = seq, .tokens = toks, .n_tokens = (uint32_t)pp, .want_logits = 1,
                                      .logits = logits};
        double a = now_s();
        if (aarmd_plugin_step(p, m, &e, 1, err, sizeof err) != AARMD_OK) {
            fprintf(stderr, "bench: prefill: %s\n", err);
            goto out;
        }
        double b = now_s();   /* the prefill's end; b0 the decodes' start */
        if (tg_fresh && aarmd_plugin_seq_truncate(p, seq, 0, err, sizeof err) != AARMD_OK) {
            fprintf(stderr, "bench: truncate: %s\n", err);
            goto out;
        }
        double b0 = tg_fresh ? now_s() : b;
        for (long i = 0; i < tg; i++) {
            int32_t tok = (int32_t)((i * 31 + 7) % desc->n_vocab);
            struct aarmd_batch_entry d1 = {.seq = seq, .tokens = &tok, .n_tokens = 1, .want_logits = 1,
                                           .logits = logits};
            if (aarmd_plugin_step(p, m, &d1, 1, err, sizeof err) != AARMD_OK) {
                fprintf(stderr, "bench: decode: %s\n", err);
                goto out;
            }
        }
        double c = now_s();
        if (r > 0) {
            pp_rate[r - 1] = (double)pp / (b - a);
            tg_rate[r - 1] = c > b0 ? (double)tg / (c - b0) : 0.0;
            if (b - a < best_pp)
                best_pp = b - a;
            if (c - b0 < best_tg)
                best_tg = c - b0;
        }
    }
    uint32_t kv_dim = desc->n_head_kv * desc->head_dim;
    double ctx_mean = (tg_fresh ? 0.0 : (double)pp) + (double)tg / 2.0;   /* keys a decode reads, on average */
    double kv_per_tok = (double)desc->n_layer * kv_dim * 2.0 * 2.0 * ctx_mean;   /* F16 K+V */
    double pp_mean, pp_sd, tg_mean, tg_sd;
    mean_sd(pp_rate, reps, &pp_mean, &pp_sd);
    mean_sd(tg_rate, reps, &tg_mean, &tg_sd);
    if (json) {
        printf("{\"backend\":\"");
        json_puts(target);
        printf("\",\"model\":\"");
        json_puts(desc->name ? desc->name : "?");
        printf("\",\"type\":\"%s\",\"weight_bytes\":%" PRIu64
               ",\"load_ms\":%.3f,\"reps\":%ld,"
               "\"pp\":{\"n\":%ld,\"best_tok_s\":%.3f,\"mean_tok_s\":%.3f,\"sd_tok_s\":%.3f},"
               "\"tg\":{\"n\":%ld,\"fresh\":%s,\"best_tok_s\":%.3f,\"mean_tok_s\":%.3f,\"sd_tok_s\":%.3f}",
               shape_name ? type_name : "file", wbytes, t_load * 1e3, reps,
               pp, (double)pp / best_pp, pp_mean, pp_sd, tg, tg_fresh ? "true" : "false",
               tg > 0 ? (double)tg / best_tg : 0.0, tg_mean, tg_sd);
    } else {
        printf("bench backend=%s model=%s type=%s weights=%.3f GB load=%.2f s (%.1f ms)\n", target,
               desc->name ? desc->name : "?", shape_name ? type_name : "file", (double)wbytes / 1e9, t_load,
               t_load * 1e3);
        printf("  %-8s %12s %14s %14s\n", "test", "best tok/s", "mean tok/s", "sd");
        printf("  pp%-6ld %12.1f %14.1f %14.1f   (best %.2f ms, %ld reps)\n", pp, (double)pp / best_pp, pp_mean, pp_sd,
               best_pp * 1e3, reps);
    }
    if (tg > 0) {
        double ms = best_tg * 1e3 / (double)tg;
        if (!json)
            printf("  tg%-6ld %12.1f %14.1f %14.1f   (best %.3f ms/token%s)\n", tg, (double)tg / best_tg, tg_mean, tg_sd,
                   ms, tg_fresh ? ", from an empty context" : "");
        if (bw > 0.0) {
            /* roofline: bytes read per token (an untied token_embd is read one row at a time, so not
             * counted) over the copy bandwidth (bytes read + written per second) */
            double bytes = (double)wbytes + kv_per_tok;
            for (uint32_t i = 0; i < desc->n_tensors && !desc->tied_embeddings; i++)
                if (desc->tensors[i].role == AARMD_ROLE_TOKEN_EMBD)
                    bytes -= (double)desc->tensors[i].nbytes;
            double roof_ms = bytes / (bw * 1e9) * 1e3;
            if (json)
                printf(",\"bw_gb_s\":%.3f,\"bw_measured\":%s,\"roofline_gb_per_tok\":%.4f,\"roofline_tok_s\":%.3f,"
                       "\"tg_fraction_of_roofline\":%.4f",
                       bw, bw_host ? "true" : "false", bytes / 1e9, 1e3 / roof_ms, roof_ms / ms);
            else
                printf("  roofline: %.3f GB/token at %.1f GB/s%s -> %.3f ms/token (%.1f tok/s); tg at %.0f%% of it\n",
                       bytes / 1e9, bw, bw_host ? " (host read, measured now)" : "", roof_ms, 1e3 / roof_ms,
                       100.0 * roof_ms / ms);
        }
    }
    if (json)
        printf("}\n");
    status = 0;
out:
    free(pp_rate);
    free(tg_rate);
    free(toks);
    if (p && m)
        aarmd_plugin_logits_free(p, m, logits, logits_by_backend);
    else
        free(logits);
    if (p) {
        aarmd_plugin_seq_free(p, seq);
        aarmd_plugin_model_free(p, m);
        aarmd_plugin_ctx_free(p, ctx);
        aarmd_plugin_free(p);
    }
    synth_free(&sy);
    aarmd_model_desc_free(file_desc);
    aarmd_gguf_free(g);
    for (uint32_t i = 0; keys && i < n_opts; i++)
        free(keys[i]);
    free(keys);
    free(opts);
    return status;
}
