/*
 * test_cpu_paged.c — the CPU backend's paged KV cache (ABI 1.1 kv_info,
 * seq_fork) through the real loader: block accounting, ENOMEM that leaves
 * every sequence as it was, sharing and copy-on-write, truncation, free
 * order, option errors; and batch invariance (one-chunk vs 7-token chunks vs
 * token by token vs forked prefix vs mixed into other sequences' steps: the
 * logits bitwise equal) on a hand-built model, on synthetic GGUF models and
 * on the real SmolLM2 and Gemma-3 files.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aarmd_backend.h"
#include "ggml_type.h"
#include "gguf.h"
#include "gguf_synth.h"
#include "model.h"
#include "plugin.h"
#include "tiny_llama.h"

/* ---- a small model with a wide KV row, so a MiB holds few blocks ------------ */

/* kv_dim = NKV * HD = 256: one F16 block of 16 tokens over NL layers is
 * 2 * NL * 16 * 256 * 2 = 64 KiB, so kv_mb=1 is a pool of 16 blocks. */
enum { E = 64, NH = 4, NKV = 4, HD = 64, FF = 128, V = 64, NL = 4, BT = 16 };
#define BLOCK_BYTES(bt, elt) ((uint64_t)2 * NL * (bt) * NKV * HD * (elt))

static const struct tiny_llama_shape SMALL = {.name = "small", .n_embd = E, .n_head = NH, .n_head_kv = NKV,
                                              .head_dim = HD, .n_ff = FF, .n_vocab = V, .n_layer = NL,
                                              .n_ctx_train = 256, .attn_out_amp = 0.2f,
                                              .seed = 0x2545F4914F6CDD1Dull};

/* ---- plugin plumbing ---------------------------------------------------------- */

struct rig {
    struct aarmd_host host;
    struct aarmd_opt opts[8];
    char keys[8][32], vals[8][32];
    struct aarmd_plugin *p;
    struct aarmd_backend_ctx *ctx;
    struct tiny_llama *small;
    struct aarmd_gguf *g;               /* file models */
    struct aarmd_model_desc *desc;      /* file models */
    struct aarmd_backend_model *model;
    int n_vocab;
    char err[512];
};

/* Loads the plugin with options "k=v" (NULL-terminated) and makes a context; returns ctx_new's status. */
static int rig_open(struct rig *r, const char *const *kv)
{
    memset(r, 0, sizeof *r);
    uint32_t n = 0;
    for (; kv && kv[n]; n++) {
        const char *eq = strchr(kv[n], '=');
        cr_assert_not_null(eq);
        snprintf(r->keys[n], sizeof r->keys[n], "%.*s", (int)(eq - kv[n]), kv[n]);
        snprintf(r->vals[n], sizeof r->vals[n], "%s", eq + 1);
        r->opts[n] = (struct aarmd_opt){r->keys[n], r->vals[n]};
    }
    aarmd_plugin_host_init(&r->host, r->opts, n, 0);
    cr_assert_eq(aarmd_plugin_load("cpu", NULL, &r->host, &r->p, r->err, sizeof r->err), AARMD_OK, "load: %s", r->err);
    return aarmd_plugin_ctx_new(r->p, 0, &r->ctx, r->err, sizeof r->err);
}

/* rig_open + the small model; asserts both work. */
static void rig_small(struct rig *r, const char *const *kv)
{
    cr_assert_eq(rig_open(r, kv), AARMD_OK, "ctx_new: %s", r->err);
    r->small = tiny_llama_new(&SMALL);
    cr_assert_eq(aarmd_plugin_model_load(r->p, r->ctx, &r->small->d, NULL, NULL, &r->model, r->err, sizeof r->err),
                 AARMD_OK, "model_load: %s", r->err);
    r->n_vocab = V;
}

/* rig_open + a GGUF file; a temporary file is unlinked once mapped (the mapping outlives the name). */
static void rig_file(struct rig *r, const char *path, const char *const *kv, bool temporary)
{
    int rc = rig_open(r, kv);
    if (rc == AARMD_OK)
        rc = aarmd_gguf_open(path, &r->g, r->err, sizeof r->err);
    if (temporary)
        unlink(path);
    cr_assert_eq(rc, AARMD_OK, "%s: %s", path, r->err);
    cr_assert_eq(aarmd_model_desc_from_gguf(r->g, &r->desc, r->err, sizeof r->err), AARMD_OK, "%s", r->err);
    cr_assert_eq(aarmd_plugin_model_load(r->p, r->ctx, r->desc, NULL, NULL, &r->model, r->err, sizeof r->err),
                 AARMD_OK, "%s: %s", path, r->err);
    r->n_vocab = (int)r->desc->n_vocab;
}

static void rig_close(struct rig *r)
{
    aarmd_plugin_model_free(r->p, r->model);
    aarmd_plugin_ctx_free(r->p, r->ctx);
    aarmd_plugin_free(r->p);
    aarmd_model_desc_free(r->desc);
    aarmd_gguf_free(r->g);
    tiny_llama_free(r->small);
}

static struct aarmd_backend_seq *seq(struct rig *r, uint32_t n_ctx)
{
    struct aarmd_backend_seq *s = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(r->p, r->model, n_ctx, &s, r->err, sizeof r->err), AARMD_OK, "seq_new: %s",
                 r->err);
    return s;
}

static struct aarmd_backend_seq *fork_of(struct rig *r, struct aarmd_backend_seq *src, uint32_t n, uint32_t n_ctx)
{
    struct aarmd_backend_seq *s = NULL;
    cr_assert_eq(aarmd_plugin_seq_fork(r->p, src, n, n_ctx, &s, r->err, sizeof r->err), AARMD_OK, "seq_fork: %s",
                 r->err);
    cr_assert_not_null(s);
    return s;
}

static int step1(struct rig *r, struct aarmd_backend_seq *s, const int32_t *tok, uint32_t n, float *out)
{
    struct aarmd_batch_entry e = {.seq = s, .tokens = tok, .n_tokens = n, .want_logits = out != NULL, .logits = out};
    return aarmd_plugin_step(r->p, r->model, &e, 1, r->err, sizeof r->err);
}

#define STEP_OK(r, s, tok, n, out) cr_assert_eq(step1(r, s, tok, n, out), AARMD_OK, "step: %s", (r)->err)

static struct aarmd_kv_info kvi(struct rig *r)
{
    struct aarmd_kv_info info;
    cr_assert_eq(aarmd_plugin_kv_info(r->p, r->model, &info, r->err, sizeof r->err), AARMD_OK, "kv_info: %s", r->err);
    return info;
}

static uint64_t kv_free(struct rig *r)
{
    return kvi(r).blocks_free;
}

/* n deterministic token ids below n_vocab, different per seed */
static int32_t *tokens(int n, int n_vocab, uint32_t seed)
{
    int32_t *t = malloc((size_t)n * sizeof *t);
    cr_assert_not_null(t);
    uint64_t s = 0x9E3779B97F4A7C15ull ^ seed;
    for (int i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        t[i] = (int32_t)(s % (uint64_t)n_vocab);
    }
    return t;
}

static float *logits_buf(const struct rig *r)
{
    float *l = malloc((size_t)r->n_vocab * sizeof *l);
    cr_assert_not_null(l);
    return l;
}

/* the number of blocks covering n tokens */
static uint64_t blocks(uint64_t n, uint64_t bt)
{
    return (n + bt - 1) / bt;
}

/* ---- kv_info and accounting ----------------------------------------------------- */

Test(cpu_paged, kv_info_reports_the_pool)
{
    const char *cases[][3] = {{"kv_mb=1", NULL, NULL}, {"kv_mb=3", "kv_type=f32", NULL},
                              {"kv_mb=2", "kv_block=32", NULL}, {"kv_mb=1", "kv_block=1", NULL}};
    const uint64_t bt[] = {BT, BT, 32, 1}, elt[] = {2, 4, 2, 2}, mb[] = {1, 3, 2, 1};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct rig r;
        rig_small(&r, cases[c]);
        cr_assert(aarmd_plugin_has_method(r.p, "kv_info") && aarmd_plugin_has_method(r.p, "seq_fork"));
        struct aarmd_kv_info k = kvi(&r);
        cr_assert_eq(k.block_tokens, bt[c], "%s: block_tokens %u", cases[c][0], k.block_tokens);
        cr_assert_eq(k.block_bytes, BLOCK_BYTES(bt[c], elt[c]), "case %zu: block_bytes %llu", c,
                     (unsigned long long)k.block_bytes);
        cr_assert_eq(k.blocks_total, (mb[c] << 20) / k.block_bytes, "case %zu: %llu blocks", c,
                     (unsigned long long)k.blocks_total);
        cr_assert_eq(k.blocks_free, k.blocks_total);
        /* the pool is part of what the model holds */
        cr_assert_geq(aarmd_plugin_model_bytes(r.p, r.model), k.blocks_total * k.block_bytes);
        rig_close(&r);
    }
}

/* A struct_size smaller than today's struct: only what fits is written. */
Test(cpu_paged, kv_info_respects_struct_size)
{
    struct rig r;
    const char *o[] = {"kv_mb=1", NULL};
    rig_small(&r, o);
    struct {
        struct aarmd_kv_info k;
        unsigned char guard[8];
    } x;
    memset(&x, 0xAB, sizeof x);
    x.k.struct_size = (uint32_t)offsetof(struct aarmd_kv_info, blocks_free);
    cr_assert_eq(aarmd_plugin_table(r.p)->kv_info(r.model, &x.k, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
    cr_assert_eq(x.k.block_tokens, BT);
    cr_assert_eq(x.k.blocks_total, 16);
    unsigned char *tail = (unsigned char *)&x.k + offsetof(struct aarmd_kv_info, blocks_free);
    for (size_t i = 0; i < sizeof x - offsetof(struct aarmd_kv_info, blocks_free); i++)
        cr_assert_eq(tail[i], 0xAB, "byte %zu past struct_size written", i);
    rig_close(&r);
}

Test(cpu_paged, blocks_follow_growth_truncate_and_free)
{
    struct rig r;
    const char *o[] = {"kv_mb=1", NULL};
    rig_small(&r, o);
    uint64_t total = kvi(&r).blocks_total;
    int32_t *t = tokens(100, V, 1);
    struct aarmd_backend_seq *a = seq(&r, 4096);   /* more than the pool: n_ctx only bounds the length */
    cr_assert_eq(kv_free(&r), total, "seq_new took blocks");
    STEP_OK(&r, a, t, 17, NULL);
    cr_assert_eq(kv_free(&r), total - 2);
    STEP_OK(&r, a, t + 17, 15, NULL);              /* 32: exactly two blocks */
    cr_assert_eq(kv_free(&r), total - 2);
    STEP_OK(&r, a, t + 32, 1, NULL);
    cr_assert_eq(kv_free(&r), total - 3);
    cr_assert_eq(aarmd_plugin_seq_truncate(r.p, a, 32, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
    cr_assert_eq(kv_free(&r), total - 2, "truncate to a block boundary gives the third block back");
    cr_assert_eq(aarmd_plugin_seq_truncate(r.p, a, 20, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
    cr_assert_eq(kv_free(&r), total - 2, "the block of positions 16..19 is kept");
    cr_assert_eq(aarmd_plugin_seq_truncate(r.p, a, 0, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
    cr_assert_eq(kv_free(&r), total);
    STEP_OK(&r, a, t, 100, NULL);
    cr_assert_eq(kv_free(&r), total - blocks(100, BT));
    aarmd_plugin_seq_free(r.p, a);
    cr_assert_eq(kv_free(&r), total, "seq_free gives every block back");
    free(t);
    rig_close(&r);
}

/* ---- ENOMEM ------------------------------------------------------------------------ */

Test(cpu_paged, enomem_advances_nothing_and_a_smaller_step_works)
{
    struct rig r;
    const char *o[] = {"kv_mb=1", NULL};   /* 16 blocks of 16 */
    rig_small(&r, o);
    cr_assert_eq(kvi(&r).blocks_total, 16);
    int32_t *t = tokens(256, V, 2);
    float *ref = logits_buf(&r), *got = logits_buf(&r), *ref_b = logits_buf(&r);
    int32_t x = 5;
    /* references first, while the pool is empty: a = t[0..200) + x, b = t[0..40) + t[200..210) */
    struct aarmd_backend_seq *s = seq(&r, 256);
    STEP_OK(&r, s, t, 200, NULL);
    STEP_OK(&r, s, &x, 1, ref);
    aarmd_plugin_seq_free(r.p, s);
    s = seq(&r, 256);
    STEP_OK(&r, s, t, 40, NULL);
    STEP_OK(&r, s, t + 200, 10, ref_b);
    aarmd_plugin_seq_free(r.p, s);
    cr_assert_eq(kv_free(&r), 16);

    struct aarmd_backend_seq *a = seq(&r, 256), *b = seq(&r, 256);
    STEP_OK(&r, a, t, 200, NULL);                  /* 13 blocks */
    STEP_OK(&r, b, t, 40, NULL);                   /* 3 blocks: the pool is full */
    cr_assert_eq(kv_free(&r), 0);

    /* a's token fits in its last block, b's 10 need a new one: the step is refused whole */
    struct aarmd_batch_entry e[2] = {{.seq = a, .tokens = &x, .n_tokens = 1, .want_logits = 1, .logits = got},
                                     {.seq = b, .tokens = t + 200, .n_tokens = 10, .want_logits = 1, .logits = got}};
    cr_assert_eq(aarmd_plugin_step(r.p, r.model, e, 2, r.err, sizeof r.err), AARMD_ENOMEM);
    cr_assert(strstr(r.err, "block"), "%s", r.err);
    cr_assert_eq(kv_free(&r), 0);
    /* a sequence alone asking for more than the pool */
    struct aarmd_backend_seq *c = seq(&r, 4096);
    cr_assert_eq(step1(&r, c, t, 1, NULL), AARMD_ENOMEM);

    /* the smaller step works, and a was not advanced by the refused one */
    STEP_OK(&r, a, &x, 1, got);
    cr_assert_eq(memcmp(got, ref, V * sizeof(float)), 0, "a moved during the refused step");
    /* freeing c (no blocks) changes nothing; truncating a frees room for b's step */
    aarmd_plugin_seq_free(r.p, c);
    cr_assert_eq(kv_free(&r), 0);
    cr_assert_eq(aarmd_plugin_seq_truncate(r.p, a, 192, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
    cr_assert_eq(kv_free(&r), 1);
    STEP_OK(&r, b, t + 200, 10, got);
    cr_assert_eq(memcmp(got, ref_b, V * sizeof(float)), 0, "b moved during the refused step");
    cr_assert_eq(kv_free(&r), 0);
    aarmd_plugin_seq_free(r.p, a);
    aarmd_plugin_seq_free(r.p, b);
    cr_assert_eq(kv_free(&r), 16);
    free(t);
    free(ref);
    free(got);
    free(ref_b);
    rig_close(&r);
}

/* ---- fork ------------------------------------------------------------------------------- */

Test(cpu_paged, fork_shares_blocks_and_computes_the_same)
{
    struct rig r;
    const char *o[] = {"kv_mb=1", NULL};
    rig_small(&r, o);
    int32_t *t = tokens(64, V, 3);
    float *la = logits_buf(&r), *lf = logits_buf(&r);
    struct aarmd_backend_seq *a = seq(&r, 128);
    STEP_OK(&r, a, t, 40, NULL);                   /* 3 blocks */
    uint64_t f0 = kv_free(&r);
    struct aarmd_backend_seq *f = fork_of(&r, a, 32, 128);
    cr_assert_eq(kv_free(&r), f0, "a fork copies no block");
    /* the fork continues the prefix with a's own tokens 32..40: a new block, same logits */
    STEP_OK(&r, f, t + 32, 8, lf);
    cr_assert_eq(kv_free(&r), f0 - 1, "the fork's third block is its own");
    STEP_OK(&r, a, t + 40, 1, la);
    STEP_OK(&r, f, t + 40, 1, lf);
    cr_assert_eq(memcmp(la, lf, V * sizeof(float)), 0, "forked sequence's logits differ");
    /* a keeps growing after the fork; the fork is unaffected */
    STEP_OK(&r, a, t + 41, 20, NULL);
    STEP_OK(&r, f, t + 41, 20, lf);
    struct aarmd_backend_seq *g = seq(&r, 128);
    STEP_OK(&r, g, t, 61, la);
    cr_assert_eq(memcmp(la, lf, V * sizeof(float)), 0);
    /* a fork of 0 tokens is an empty sequence */
    struct aarmd_backend_seq *z = fork_of(&r, a, 0, 8);
    STEP_OK(&r, z, t, 3, NULL);
    aarmd_plugin_seq_free(r.p, z);
    aarmd_plugin_seq_free(r.p, g);
    aarmd_plugin_seq_free(r.p, a);
    aarmd_plugin_seq_free(r.p, f);
    cr_assert_eq(kv_free(&r), kvi(&r).blocks_total);
    free(t);
    free(la);
    free(lf);
    rig_close(&r);
}

Test(cpu_paged, fork_validates_n)
{
    struct rig r;
    const char *o[] = {"kv_mb=1", NULL};
    rig_small(&r, o);
    int32_t *t = tokens(40, V, 4);
    struct aarmd_backend_seq *a = seq(&r, 128), *f = NULL;
    STEP_OK(&r, a, t, 40, NULL);
    uint64_t f0 = kv_free(&r);
    cr_assert_eq(aarmd_plugin_seq_fork(r.p, a, 20, 128, &f, r.err, sizeof r.err), AARMD_EINVAL);
    cr_assert(strstr(r.err, "multiple of the block size"), "%s", r.err);
    cr_assert_eq(aarmd_plugin_seq_fork(r.p, a, 48, 128, &f, r.err, sizeof r.err), AARMD_EINVAL);
    cr_assert(strstr(r.err, "holds 40"), "%s", r.err);
    cr_assert_eq(aarmd_plugin_seq_fork(r.p, a, 32, 16, &f, r.err, sizeof r.err), AARMD_EINVAL);
    cr_assert(strstr(r.err, "n_ctx 16"), "%s", r.err);
    cr_assert_eq(aarmd_plugin_seq_fork(r.p, a, 16, 0, &f, r.err, sizeof r.err), AARMD_EINVAL);
    cr_assert_null(f);
    cr_assert_eq(kv_free(&r), f0, "a refused fork holds nothing");
    /* the fork's n_ctx bounds it like seq_new's */
    f = fork_of(&r, a, 32, 34);
    cr_assert_eq(step1(&r, f, t, 3, NULL), AARMD_EINVAL);
    cr_assert(strstr(r.err, "context full"), "%s", r.err);
    STEP_OK(&r, f, t, 2, NULL);
    aarmd_plugin_seq_free(r.p, f);
    aarmd_plugin_seq_free(r.p, a);
    free(t);
    rig_close(&r);
}

/* Truncating into a shared block, then writing, copies the block: the other
 * holder's rows stay as they were. Checked on both sides, source and fork. */
Test(cpu_paged, truncate_into_a_shared_block_copies_on_write)
{
    struct rig r;
    const char *o[] = {"kv_mb=1", NULL};
    rig_small(&r, o);
    int32_t *t = tokens(64, V, 5), *u = tokens(8, V, 6);
    float *want = logits_buf(&r), *got = logits_buf(&r);
    for (int side = 0; side < 2; side++) {
        struct aarmd_backend_seq *a = seq(&r, 128);
        STEP_OK(&r, a, t, 48, NULL);                 /* 3 full blocks */
        struct aarmd_backend_seq *f = fork_of(&r, a, 48, 128);
        struct aarmd_backend_seq *w = side ? a : f, *keep = side ? f : a;   /* w is cut and rewritten */
        uint64_t f0 = kv_free(&r);
        cr_assert_eq(aarmd_plugin_seq_truncate(r.p, w, 40, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
        cr_assert_eq(kv_free(&r), f0, "the shared third block is still held by the other");
        STEP_OK(&r, w, u, 3, got);                   /* rows 40..42 into a copy of the shared block */
        cr_assert_eq(kv_free(&r), f0 - 1, "copy-on-write takes exactly one block");
        struct aarmd_backend_seq *ref = seq(&r, 128);
        int32_t mixed[43];
        memcpy(mixed, t, 40 * sizeof *t);
        memcpy(mixed + 40, u, 3 * sizeof *u);
        STEP_OK(&r, ref, mixed, 43, want);
        cr_assert_eq(memcmp(got, want, V * sizeof(float)), 0, "side %d: the rewritten sequence is wrong", side);
        aarmd_plugin_seq_free(r.p, ref);
        /* the other holder still sees t[40..48) */
        ref = seq(&r, 128);
        STEP_OK(&r, ref, t, 49, want);
        STEP_OK(&r, keep, t + 48, 1, got);
        cr_assert_eq(memcmp(got, want, V * sizeof(float)), 0, "side %d: the shared block was written", side);
        aarmd_plugin_seq_free(r.p, ref);
        aarmd_plugin_seq_free(r.p, a);
        aarmd_plugin_seq_free(r.p, f);
        cr_assert_eq(kv_free(&r), kvi(&r).blocks_total);
    }
    free(t);
    free(u);
    free(want);
    free(got);
    rig_close(&r);
}

/* Source freed before its forks or after; forks of forks: every block comes back. */
Test(cpu_paged, free_order_returns_every_block)
{
    struct rig r;
    const char *o[] = {"kv_mb=1", NULL};
    rig_small(&r, o);
    uint64_t total = kvi(&r).blocks_total;
    int32_t *t = tokens(64, V, 7);
    float *la = logits_buf(&r), *lb = logits_buf(&r);
    for (int order = 0; order < 2; order++) {
        struct aarmd_backend_seq *a = seq(&r, 128);
        STEP_OK(&r, a, t, 50, NULL);                 /* 4 blocks */
        struct aarmd_backend_seq *f = fork_of(&r, a, 48, 128);
        struct aarmd_backend_seq *ff = fork_of(&r, f, 32, 128);
        cr_assert_eq(kv_free(&r), total - 4);
        if (order == 0) {
            aarmd_plugin_seq_free(r.p, a);           /* source first: the forks keep the shared blocks */
            cr_assert_eq(kv_free(&r), total - 3);
            STEP_OK(&r, f, t + 48, 2, la);           /* and can still use them */
            struct aarmd_backend_seq *g = seq(&r, 128);
            STEP_OK(&r, g, t, 50, lb);
            cr_assert_eq(memcmp(la, lb, V * sizeof(float)), 0);
            aarmd_plugin_seq_free(r.p, g);
            aarmd_plugin_seq_free(r.p, f);
            cr_assert_eq(kv_free(&r), total - 2);
            aarmd_plugin_seq_free(r.p, ff);
        } else {
            aarmd_plugin_seq_free(r.p, ff);          /* forks first: the source keeps all */
            aarmd_plugin_seq_free(r.p, f);
            cr_assert_eq(kv_free(&r), total - 4);
            aarmd_plugin_seq_free(r.p, a);
        }
        cr_assert_eq(kv_free(&r), total, "order %d: blocks leaked", order);
    }
    free(t);
    free(la);
    free(lb);
    rig_close(&r);
}

/* ---- options -------------------------------------------------------------------------------- */

Test(cpu_paged, bad_kv_options_are_named)
{
    const char *bad[][2] = {{"kv_mb=0", "kv_mb"},        {"kv_mb=-1", "kv_mb"},      {"kv_mb=1.5", "kv_mb"},
                            {"kv_mb=", "kv_mb"},         {"kv_mb=lots", "kv_mb"},    {"kv_mb=99999999999", "kv_mb"},
                            {"kv_block=0", "kv_block"},  {"kv_block=3", "kv_block"}, {"kv_block=2048", "kv_block"},
                            {"kv_block=16k", "kv_block"}, {"kv_block=-16", "kv_block"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct rig r;
        const char *o[] = {bad[i][0], NULL};
        cr_assert_eq(rig_open(&r, o), AARMD_EINVAL, "%s accepted", bad[i][0]);
        cr_assert(strstr(r.err, bad[i][1]), "%s: %s", bad[i][0], r.err);
        rig_close(&r);
    }
    /* a pool too small for one block of this model is refused at load, naming the option */
    struct rig r;
    const char *o[] = {"kv_mb=1", "kv_block=1024", NULL};   /* one block is 4 MiB */
    cr_assert_eq(rig_open(&r, o), AARMD_OK, "%s", r.err);
    r.small = tiny_llama_new(&SMALL);
    cr_assert_eq(aarmd_plugin_model_load(r.p, r.ctx, &r.small->d, NULL, NULL, &r.model, r.err, sizeof r.err),
                 AARMD_EINVAL);
    cr_assert(strstr(r.err, "kv_mb") && strstr(r.err, "block"), "%s", r.err);
    cr_assert_null(r.model);
    rig_close(&r);
}

/* Without kv_mb the pool holds max(4, advised_seqs) sequences of the trained context. */
Test(cpu_paged, default_pool_holds_four_full_contexts)
{
    struct rig r;
    rig_small(&r, NULL);
    struct aarmd_device_info di = {.struct_size = sizeof di};
    cr_assert_eq(aarmd_plugin_device_info(r.p, r.ctx, &di, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
    uint64_t seqs = di.advised_seqs > 4 ? di.advised_seqs : 4;
    struct aarmd_kv_info k = kvi(&r);
    cr_assert_eq(k.block_tokens, BT);
    cr_assert_eq(k.blocks_total, seqs * blocks(r.small->d.n_ctx_train, BT), "%llu blocks",
                 (unsigned long long)k.blocks_total);
    /* and that many full contexts do fit, in one step */
    uint32_t n = r.small->d.n_ctx_train;
    int32_t *t = tokens((int)n, V, 8);
    struct aarmd_backend_seq *s[8];
    struct aarmd_batch_entry e[8];
    for (uint64_t i = 0; i < seqs; i++) {
        s[i] = seq(&r, n);
        e[i] = (struct aarmd_batch_entry){.seq = s[i], .tokens = t, .n_tokens = n};
    }
    cr_assert_eq(aarmd_plugin_step(r.p, r.model, e, (uint32_t)seqs, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
    cr_assert_eq(kv_free(&r), 0);
    for (uint64_t i = 0; i < seqs; i++)
        aarmd_plugin_seq_free(r.p, s[i]);
    free(t);
    rig_close(&r);
}

/* ---- batch invariance --------------------------------------------------------------------- */

/*
 * The logits of a prompt's last token and of the decodes after it must be
 * bitwise the same however the prompt was fed: one step, 7-token chunks,
 * token by token, as the continuation of a fork of a sequence that computed
 * the prefix, or inside steps shared with other sequences (a decode of one,
 * the prefill of another). Returns after asserting; `label` names the model.
 */
enum { N_PROMPT = 45, N_DEC = 3 };

struct run {
    float *last;            /* prompt's last token */
    float *dec[N_DEC];      /* each decode after it */
};

static void run_alloc(const struct rig *r, struct run *x)
{
    x->last = logits_buf(r);
    for (int d = 0; d < N_DEC; d++)
        x->dec[d] = logits_buf(r);
}

static void run_free(struct run *x)
{
    free(x->last);
    for (int d = 0; d < N_DEC; d++)
        free(x->dec[d]);
}

static void decodes(struct rig *r, struct aarmd_backend_seq *s, const int32_t *dec, struct run *x)
{
    for (int d = 0; d < N_DEC; d++)
        STEP_OK(r, s, &dec[d], 1, x->dec[d]);
}

static void same_run(const struct rig *r, const struct run *want, const struct run *got, const char *label,
                     const char *how)
{
    size_t bytes = (size_t)r->n_vocab * sizeof(float);
    cr_assert_eq(memcmp(want->last, got->last, bytes), 0, "%s: prompt logits differ (%s vs one step)", label, how);
    for (int d = 0; d < N_DEC; d++)
        cr_assert_eq(memcmp(want->dec[d], got->dec[d], bytes), 0, "%s: decode %d differs (%s vs one step)", label, d,
                     how);
}

/* Prefill in chunks of `chunk` tokens, logits on the last chunk. */
static void prefill_chunks(struct rig *r, struct aarmd_backend_seq *s, const int32_t *p, uint32_t n, uint32_t chunk,
                           float *last)
{
    for (uint32_t i = 0; i < n; i += chunk) {
        uint32_t k = n - i < chunk ? n - i : chunk;
        STEP_OK(r, s, p + i, k, i + k == n ? last : NULL);
    }
}

static void check_invariance(struct rig *r, const char *label)
{
    int nv = r->n_vocab;
    int32_t *p = tokens(N_PROMPT, nv, 11), *dec = tokens(N_DEC, nv, 12), *other = tokens(N_PROMPT, nv, 13);
    uint32_t bt = kvi(r).block_tokens;
    uint32_t n_ctx = N_PROMPT + N_DEC + 8;
    struct run one, got;
    run_alloc(r, &one);
    run_alloc(r, &got);
    float *scratch = logits_buf(r);

    /* one step */
    struct aarmd_backend_seq *a = seq(r, n_ctx);
    STEP_OK(r, a, p, N_PROMPT, one.last);
    decodes(r, a, dec, &one);

    /* chunks of 7, and token by token */
    const uint32_t chunks[] = {7, 1};
    for (size_t c = 0; c < 2; c++) {
        struct aarmd_backend_seq *b = seq(r, n_ctx);
        prefill_chunks(r, b, p, N_PROMPT, chunks[c], got.last);
        decodes(r, b, dec, &got);
        same_run(r, &one, &got, label, c ? "token by token" : "chunks of 7");
        aarmd_plugin_seq_free(r->p, b);
    }

    /* forked from a, which computed the prefix: only the rest is computed */
    uint32_t shared = (N_PROMPT - 1) / bt * bt;
    cr_assert_gt(shared, 0, "%s: block of %u tokens leaves nothing to share", label, bt);
    struct aarmd_backend_seq *f = fork_of(r, a, shared, n_ctx);
    STEP_OK(r, f, p + shared, N_PROMPT - shared, got.last);
    decodes(r, f, dec, &got);
    same_run(r, &one, &got, label, "forked prefix");
    aarmd_plugin_seq_free(r->p, f);

    /* inside steps shared with others: c decodes and d prefills alongside */
    struct aarmd_backend_seq *c = seq(r, n_ctx), *d = seq(r, n_ctx), *e = seq(r, n_ctx);
    STEP_OK(r, c, other, 20, NULL);
    STEP_OK(r, d, other, 5, NULL);
    struct aarmd_batch_entry en[3] = {
        {.seq = c, .tokens = other + 20, .n_tokens = 1, .want_logits = 1, .logits = scratch},
        {.seq = e, .tokens = p, .n_tokens = N_PROMPT, .want_logits = 1, .logits = got.last},
        {.seq = d, .tokens = other + 5, .n_tokens = 9}};
    cr_assert_eq(aarmd_plugin_step(r->p, r->model, en, 3, r->err, sizeof r->err), AARMD_OK, "%s", r->err);
    for (int k = 0; k < N_DEC; k++) {
        struct aarmd_batch_entry de[3] = {
            {.seq = d, .tokens = other + 14 + k, .n_tokens = 1, .want_logits = 1, .logits = scratch},
            {.seq = e, .tokens = &dec[k], .n_tokens = 1, .want_logits = 1, .logits = got.dec[k]},
            {.seq = c, .tokens = other + 21 + k, .n_tokens = 2, .want_logits = 1, .logits = scratch}};
        cr_assert_eq(aarmd_plugin_step(r->p, r->model, de, 3, r->err, sizeof r->err), AARMD_OK, "%s", r->err);
    }
    same_run(r, &one, &got, label, "mixed into other sequences' steps");

    /* sanity: a different prompt gives different logits (the comparisons can fail) */
    struct aarmd_backend_seq *o = seq(r, n_ctx);
    STEP_OK(r, o, other, N_PROMPT, scratch);
    cr_assert_neq(memcmp(scratch, one.last, (size_t)nv * sizeof(float)), 0, "%s: logits ignore the prompt", label);
    aarmd_plugin_seq_free(r->p, o);

    aarmd_plugin_seq_free(r->p, a);
    aarmd_plugin_seq_free(r->p, c);
    aarmd_plugin_seq_free(r->p, d);
    aarmd_plugin_seq_free(r->p, e);
    cr_assert_eq(kv_free(r), kvi(r).blocks_total, "%s: blocks leaked", label);
    run_free(&one);
    run_free(&got);
    free(scratch);
    free(p);
    free(dec);
    free(other);
}

Test(cpu_paged, invariance_small_model)
{
    const char *variants[][3] = {{NULL}, {"kv_block=4", NULL}, {"simd=0", "kv_block=32", NULL}, {"kv_type=f32", NULL},
                                 {"batch=8", NULL}};
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        struct rig r;
        rig_small(&r, variants[v]);
        char label[64];
        snprintf(label, sizeof label, "small %s %s", variants[v][0] ? variants[v][0] : "",
                 variants[v][0] && variants[v][1] ? variants[v][1] : "");
        check_invariance(&r, label);
        rig_close(&r);
    }
}

static void model_file(const char *name, char *out, size_t cap)
{
    const char *dir = getenv("AARMD_TEST_MODELS");
    cr_assert_not_null(dir, "AARMD_TEST_MODELS not set");
    snprintf(out, cap, "%s/%s", dir, name);
    cr_assert_eq(access(out, R_OK), 0, "%s missing (models/ is fetched by ./quickstart)", out);
}

Test(cpu_paged, invariance_smollm2, .timeout = 300)
{
    char path[1024];
    model_file("SmolLM2-135M-Instruct.Q4_1.gguf", path, sizeof path);
    const char *variants[][3] = {{"threads=2", NULL}, {"threads=1", "simd=0", NULL}};
    for (size_t v = 0; v < 2; v++) {
        struct rig r;
        rig_file(&r, path, variants[v], false);
        check_invariance(&r, variants[v][1] ? "SmolLM2 simd=0" : "SmolLM2");
        rig_close(&r);
    }
}

Test(cpu_paged, invariance_gemma3, .timeout = 300)
{
    char path[1024];
    model_file("gemma-3-270m-q4_k_m.gguf", path, sizeof path);
    struct rig r;
    const char *o[] = {"threads=2", NULL};
    rig_file(&r, path, o, false);
    check_invariance(&r, "Gemma-3-270M");
    rig_close(&r);
}

/* Synthetic GGUF models: K-quants with a sliding window shorter than the
 * prompt (gemma3), and the 32-element formats. */
Test(cpu_paged, invariance_synthetic, .timeout = 300)
{
    const struct {
        const char *arch;
        uint32_t type;
        uint32_t n_ctx;
    } cases[] = {{"gemma3", AARMD_TYPE_Q4_K, 64}, {"qwen2", AARMD_TYPE_Q5_1, 0}, {"phi3", AARMD_TYPE_Q8_0, 0},
                 {"gpt2", AARMD_TYPE_Q4_0, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct aarmd_synth_opts so = {.arch = cases[i].arch, .type = cases[i].type, .n_ctx = cases[i].n_ctx,
                                      .seed = 42 + i};
        char path[1024], err[512], label[64];
        const char *dir = getenv("AARMD_BUILDDIR");
        snprintf(path, sizeof path, "%s/paged_synth_%s_%d.gguf", dir ? dir : "/tmp", cases[i].arch, (int)getpid());
        cr_assert_eq(aarmd_gguf_synth(&so, path, err, sizeof err), AARMD_OK, "gguf-synth: %s", err);
        struct rig r;
        rig_file(&r, path, NULL, true);
        snprintf(label, sizeof label, "synthetic %s", cases[i].arch);
        check_invariance(&r, label);
        rig_close(&r);
    }
}
