/*
 * test_cpu_backend.c — the CPU plugin's table through the real loader:
 * options, device info, model_load refusals, step validation, sequence
 * bookkeeping and batching invariants, on a tiny hand-built F32 llama-style
 * description (no GGUF involved). Numerics against an independent reference
 * are in test_cpu_reference.c.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aarmd_backend.h"
#include "plugin.h"
#include "tiny_llama.h"

/* ---- a tiny model ----------------------------------------------------------- */

enum { E = 32, NH = 4, NKV = 2, HD = 8, FF = 64, V = 50, NL = 2 };

static const struct tiny_llama_shape TINY = {.name = "tiny", .n_embd = E, .n_head = NH, .n_head_kv = NKV,
                                             .head_dim = HD, .n_ff = FF, .n_vocab = V, .n_layer = NL,
                                             .n_ctx_train = 64, .attn_out_amp = 0.3f, .seed = 88172645463325252ull};

/* ---- plugin plumbing -------------------------------------------------------- */

struct rig {
    struct aarmd_host host;
    struct aarmd_opt opts[8];
    struct aarmd_plugin *p;
    struct aarmd_backend_ctx *ctx;
    struct tiny_llama *tiny;
    struct aarmd_backend_model *model;
    char err[512];
};

/* Loads the plugin with options "k=v" (NULL-terminated) and makes a context; returns ctx_new's status. */
static int rig_open(struct rig *r, const char *const *kv)
{
    memset(r, 0, sizeof *r);
    uint32_t n = 0;
    static char keys[8][32], vals[8][32];
    for (; kv && kv[n]; n++) {
        const char *eq = strchr(kv[n], '=');
        snprintf(keys[n], sizeof keys[n], "%.*s", (int)(eq - kv[n]), kv[n]);
        snprintf(vals[n], sizeof vals[n], "%s", eq + 1);
        r->opts[n] = (struct aarmd_opt){keys[n], vals[n]};
    }
    aarmd_plugin_host_init(&r->host, r->opts, n, 0);
    int rc = aarmd_plugin_load("cpu", NULL, &r->host, &r->p, r->err, sizeof r->err);
    cr_assert_eq(rc, AARMD_OK, "load: %s", r->err);
    return aarmd_plugin_ctx_new(r->p, 0, &r->ctx, r->err, sizeof r->err);
}

static void rig_model(struct rig *r)
{
    r->tiny = tiny_llama_new(&TINY);
    int rc = aarmd_plugin_model_load(r->p, r->ctx, &r->tiny->d, NULL, NULL, &r->model, r->err, sizeof r->err);
    cr_assert_eq(rc, AARMD_OK, "model_load: %s", r->err);
}

static void rig_close(struct rig *r)
{
    aarmd_plugin_model_free(r->p, r->model);
    aarmd_plugin_ctx_free(r->p, r->ctx);
    aarmd_plugin_free(r->p);
    if (r->tiny)
        tiny_llama_free(r->tiny);
}

static struct aarmd_backend_seq *seq(struct rig *r, uint32_t n_ctx)
{
    struct aarmd_backend_seq *s = NULL;
    int rc = aarmd_plugin_seq_new(r->p, r->model, n_ctx, &s, r->err, sizeof r->err);
    cr_assert_eq(rc, AARMD_OK, "seq_new: %s", r->err);
    return s;
}

/* One entry; logits of the last token into out (may be NULL). */
static int step1(struct rig *r, struct aarmd_backend_seq *s, const int32_t *tok, uint32_t n, float *out)
{
    struct aarmd_batch_entry e = {.seq = s, .tokens = tok, .n_tokens = n, .want_logits = out != NULL, .logits = out};
    return aarmd_plugin_step(r->p, r->model, &e, 1, r->err, sizeof r->err);
}

static float max_diff(const float *a, const float *b, int n)
{
    float m = 0.0f;
    for (int i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (d > m || isnan(d))
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static const int32_t PROMPT[] = {3, 17, 42, 8, 8, 29, 1, 49, 0, 33};
#define NP ((uint32_t)(sizeof PROMPT / sizeof PROMPT[0]))

/* ---- options and device ------------------------------------------------------ */

Test(cpu_backend, unknown_option_is_named)
{
    struct rig r;
    const char *o[] = {"threads=1", "turbo=yes", NULL};
    cr_assert_eq(rig_open(&r, o), AARMD_EINVAL);
    cr_assert(strstr(r.err, "turbo"), "%s", r.err);
    rig_close(&r);
}

Test(cpu_backend, bad_option_values)
{
    const char *bad[][2] = {{"threads=0", "threads"}, {"threads=two", "threads"}, {"kv_type=f64", "kv_type"},
                            {"batch=0", "batch"}, {"batch=-3", "batch"}, {"simd=sse9", "simd"},
                            {"autothreads=maybe", "autothreads"}, {"autothreads=", "autothreads"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct rig r;
        const char *o[] = {bad[i][0], NULL};
        cr_assert_eq(rig_open(&r, o), AARMD_EINVAL, "%s accepted", bad[i][0]);
        cr_assert(strstr(r.err, bad[i][1]), "%s: %s", bad[i][0], r.err);
        rig_close(&r);
    }
}

Test(cpu_backend, device_info)
{
    struct rig r;
    const char *o[] = {"threads=2", NULL};
    cr_assert_eq(rig_open(&r, o), AARMD_OK, "%s", r.err);
    struct aarmd_device_info info = {.struct_size = sizeof info};
    cr_assert_eq(aarmd_plugin_device_info(r.p, r.ctx, &info, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
    cr_assert_str_eq(info.memory_architecture, "host");
    cr_assert_str_eq(info.worker_type, "cpu");
    cr_assert_gt(info.memory_total, 0);
    cr_assert_leq(info.memory_free, info.memory_total);
    cr_assert_eq(info.advised_seqs, 4);
    cr_assert(strstr(info.name, "2 threads"), "%s", info.name);
    rig_close(&r);
}

/* ---- model_load refusals ----------------------------------------------------- */

Test(cpu_backend, no_tensors_is_vocab_only)
{
    struct rig r;
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    r.tiny = tiny_llama_new(&TINY);
    struct aarmd_model_desc d = r.tiny->d;
    d.n_tensors = 0;
    cr_assert_eq(aarmd_plugin_model_load(r.p, r.ctx, &d, NULL, NULL, &r.model, r.err, sizeof r.err), AARMD_EINVAL);
    cr_assert(strstr(r.err, "no weights"), "%s", r.err);
    rig_close(&r);
}

Test(cpu_backend, unsupported_type_names_tensor_and_type)
{
    struct rig r;
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    r.tiny = tiny_llama_new(&TINY);
    tiny_llama_find(r.tiny, "blk.1.attn_k.weight")->type = AARMD_TYPE_IQ2_XXS;
    cr_assert_eq(aarmd_plugin_model_load(r.p, r.ctx, &r.tiny->d, NULL, NULL, &r.model, r.err, sizeof r.err),
                 AARMD_EUNSUPPORTED);
    cr_assert(strstr(r.err, "blk.1.attn_k.weight") && strstr(r.err, "IQ2_XXS"), "%s", r.err);
    rig_close(&r);
}

Test(cpu_backend, missing_and_misshaped_tensors)
{
    struct rig r;
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    r.tiny = tiny_llama_new(&TINY);
    struct aarmd_tensor *t = tiny_llama_find(r.tiny, "blk.0.ffn_down.weight");
    t->role = AARMD_ROLE_COUNT + 5;   /* no longer ffn_down */
    cr_assert_eq(aarmd_plugin_model_load(r.p, r.ctx, &r.tiny->d, NULL, NULL, &r.model, r.err, sizeof r.err),
                 AARMD_EINVAL);
    cr_assert(strstr(r.err, "ffn_down"), "%s", r.err);
    t->role = AARMD_ROLE_FFN_DOWN;
    t = tiny_llama_find(r.tiny, "blk.1.attn_q.weight");
    t->ne[1] = NH * HD - 1;
    cr_assert_eq(aarmd_plugin_model_load(r.p, r.ctx, &r.tiny->d, NULL, NULL, &r.model, r.err, sizeof r.err),
                 AARMD_EINVAL);
    cr_assert(strstr(r.err, "blk.1.attn_q.weight"), "%s", r.err);
    rig_close(&r);
}

static int cancel_cb(void *user, float f)
{
    (void)f;
    ++*(int *)user;
    return 1;
}

Test(cpu_backend, progress_can_cancel)
{
    struct rig r;
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    r.tiny = tiny_llama_new(&TINY);
    int calls = 0;
    cr_assert_eq(aarmd_plugin_model_load(r.p, r.ctx, &r.tiny->d, cancel_cb, &calls, &r.model, r.err, sizeof r.err),
                 AARMD_ECANCELLED);
    cr_assert_eq(calls, 1);
    cr_assert_null(r.model);
    rig_close(&r);
}

struct progress_log {
    float f[256];
    int n;
    int cancel_at;   /* return non-zero on this call (1-based); 0 = never */
};

static int log_cb(void *user, float f)
{
    struct progress_log *l = user;
    if (l->n < 256)
        l->f[l->n] = f;
    l->n++;
    return l->cancel_at && l->n == l->cancel_at;
}

Test(cpu_backend, progress_reports_each_tensor_and_can_cancel_midway)
{
    struct rig r;
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    r.tiny = tiny_llama_new(&TINY);
    struct progress_log l = {.n = 0};
    cr_assert_eq(aarmd_plugin_model_load(r.p, r.ctx, &r.tiny->d, log_cb, &l, &r.model, r.err, sizeof r.err),
                 AARMD_OK, "%s", r.err);
    /* 0 first, then one report per tensor (fraction of weight bytes read), ending at 1 */
    cr_assert_eq(l.n, 1 + (int)r.tiny->d.n_tensors, "%d calls for %u tensors", l.n, r.tiny->d.n_tensors);
    cr_assert_float_eq(l.f[0], 0.0f, 0.0f);
    cr_assert_float_eq(l.f[l.n - 1], 1.0f, 1e-6f);
    int mid = 0;
    for (int i = 1; i < l.n; i++) {
        cr_assert_geq(l.f[i], l.f[i - 1], "call %d went back: %g after %g", i, l.f[i], l.f[i - 1]);
        mid += l.f[i] > 0.1f && l.f[i] < 0.9f;
    }
    cr_assert_gt(mid, 0, "no report between 0.1 and 0.9");
    aarmd_plugin_model_free(r.p, r.model);
    r.model = NULL;

    struct progress_log c = {.cancel_at = 4};   /* cancelled on the third tensor */
    cr_assert_eq(aarmd_plugin_model_load(r.p, r.ctx, &r.tiny->d, log_cb, &c, &r.model, r.err, sizeof r.err),
                 AARMD_ECANCELLED);
    cr_assert_eq(c.n, 4);
    cr_assert_null(r.model);
    cr_assert(strstr(r.err, "cancel"), "%s", r.err);
    rig_close(&r);
}

/* ---- step ----------------------------------------------------------------------- */

Test(cpu_backend, bad_token_and_context_full_advance_nothing)
{
    struct rig r;
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    rig_model(&r);
    struct aarmd_backend_seq *a = seq(&r, 8), *b = seq(&r, 4);
    float ref[V], got[V];
    cr_assert_eq(step1(&r, a, PROMPT, 3, ref), AARMD_OK, "%s", r.err);

    int32_t bad[] = {1, V, 2};
    cr_assert_eq(step1(&r, b, bad, 3, got), AARMD_EINVAL);
    cr_assert(strstr(r.err, "outside"), "%s", r.err);
    int32_t neg[] = {-1};
    cr_assert_eq(step1(&r, b, neg, 1, got), AARMD_EINVAL);
    cr_assert_eq(step1(&r, b, PROMPT, 5, got), AARMD_EINVAL);
    cr_assert(strstr(r.err, "context full"), "%s", r.err);

    /* a good entry and a bad one in one step: neither sequence moves */
    struct aarmd_batch_entry e[2] = {{.seq = b, .tokens = PROMPT, .n_tokens = 3},
                                     {.seq = a, .tokens = PROMPT, .n_tokens = 6}};
    cr_assert_eq(aarmd_plugin_step(r.p, r.model, e, 2, r.err, sizeof r.err), AARMD_EINVAL);
    cr_assert(strstr(r.err, "context full"), "%s", r.err);

    /* b is still empty: the same 3 tokens give a's logits */
    cr_assert_eq(step1(&r, b, PROMPT, 3, got), AARMD_OK, "%s", r.err);
    cr_assert_lt(max_diff(ref, got, V), 1e-6f);
    /* a holds 3: 5 more fit exactly, a 6th does not */
    cr_assert_eq(step1(&r, a, PROMPT, 5, got), AARMD_OK, "%s", r.err);
    cr_assert_eq(step1(&r, a, PROMPT, 1, got), AARMD_EINVAL);

    struct aarmd_batch_entry dup[2] = {{.seq = b, .tokens = PROMPT, .n_tokens = 1},
                                       {.seq = b, .tokens = PROMPT, .n_tokens = 1}};
    cr_assert_eq(aarmd_plugin_step(r.p, r.model, dup, 2, r.err, sizeof r.err), AARMD_EINVAL);
    aarmd_plugin_seq_free(r.p, a);
    aarmd_plugin_seq_free(r.p, b);
    rig_close(&r);
}

Test(cpu_backend, prefill_equals_token_by_token)
{
    struct rig r;
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    rig_model(&r);
    struct aarmd_backend_seq *a = seq(&r, 32), *b = seq(&r, 32);
    float pre[V], one[V];
    cr_assert_eq(step1(&r, a, PROMPT, NP, pre), AARMD_OK, "%s", r.err);
    for (uint32_t i = 0; i < NP; i++)
        cr_assert_eq(step1(&r, b, &PROMPT[i], 1, one), AARMD_OK, "%s", r.err);
    cr_assert_lt(max_diff(pre, one, V), 1e-3f, "max diff %g", max_diff(pre, one, V));
    aarmd_plugin_seq_free(r.p, a);
    aarmd_plugin_seq_free(r.p, b);
    rig_close(&r);
}

Test(cpu_backend, two_sequences_in_one_step_equal_each_alone)
{
    struct rig r;
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    rig_model(&r);
    struct aarmd_backend_seq *a = seq(&r, 32), *b = seq(&r, 32), *c = seq(&r, 32), *d = seq(&r, 32);
    float la[V], lb[V], ja[V], jb[V];
    /* alone: a gets PROMPT[0..6), then 1 token; b gets PROMPT[4..10) */
    cr_assert_eq(step1(&r, a, PROMPT, 6, NULL), AARMD_OK, "%s", r.err);
    cr_assert_eq(step1(&r, a, &PROMPT[6], 1, la), AARMD_OK, "%s", r.err);
    cr_assert_eq(step1(&r, b, &PROMPT[4], 6, lb), AARMD_OK, "%s", r.err);
    /* together: c's decode token and d's prefill share one step */
    cr_assert_eq(step1(&r, c, PROMPT, 6, NULL), AARMD_OK, "%s", r.err);
    struct aarmd_batch_entry e[2] = {{.seq = c, .tokens = &PROMPT[6], .n_tokens = 1, .want_logits = 1, .logits = ja},
                                     {.seq = d, .tokens = &PROMPT[4], .n_tokens = 6, .want_logits = 1, .logits = jb}};
    cr_assert_eq(aarmd_plugin_step(r.p, r.model, e, 2, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
    cr_assert_lt(max_diff(la, ja, V), 1e-4f);
    cr_assert_lt(max_diff(lb, jb, V), 1e-4f);
    cr_assert_gt(max_diff(la, lb, V), 1e-2f, "different prompts should give different logits");
    aarmd_plugin_seq_free(r.p, a);
    aarmd_plugin_seq_free(r.p, b);
    aarmd_plugin_seq_free(r.p, c);
    aarmd_plugin_seq_free(r.p, d);
    rig_close(&r);
}

/* A step bigger than `batch` runs in chunks and matches one big chunk. */
Test(cpu_backend, chunked_steps_match)
{
    float big[V], small1[V], small2[V];
    for (int pass = 0; pass < 2; pass++) {
        struct rig r;
        const char *o[] = {pass ? "batch=3" : "batch=512", NULL};
        cr_assert_eq(rig_open(&r, o), AARMD_OK, "%s", r.err);
        rig_model(&r);
        struct aarmd_backend_seq *a = seq(&r, 32), *b = seq(&r, 32);
        struct aarmd_batch_entry e[2] = {{.seq = a, .tokens = PROMPT, .n_tokens = NP, .want_logits = 1,
                                          .logits = pass ? small1 : big},
                                         {.seq = b, .tokens = &PROMPT[2], .n_tokens = 4, .want_logits = 1,
                                          .logits = small2}};
        cr_assert_eq(aarmd_plugin_step(r.p, r.model, e, pass ? 2 : 1, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
        aarmd_plugin_seq_free(r.p, a);
        aarmd_plugin_seq_free(r.p, b);
        rig_close(&r);
    }
    cr_assert_lt(max_diff(big, small1, V), 1e-4f);
}

Test(cpu_backend, truncate_then_redecode)
{
    struct rig r;
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    rig_model(&r);
    struct aarmd_backend_seq *a = seq(&r, 16);
    float first[V], again[V], other[V];
    cr_assert_eq(step1(&r, a, PROMPT, 6, first), AARMD_OK, "%s", r.err);
    cr_assert_eq(aarmd_plugin_seq_truncate(r.p, a, 3, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
    int32_t alt[] = {9, 9, 9};
    cr_assert_eq(step1(&r, a, alt, 3, other), AARMD_OK, "%s", r.err);
    cr_assert_gt(max_diff(first, other, V), 1e-2f);
    cr_assert_eq(aarmd_plugin_seq_truncate(r.p, a, 3, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
    cr_assert_eq(step1(&r, a, &PROMPT[3], 3, again), AARMD_OK, "%s", r.err);
    cr_assert_lt(max_diff(first, again, V), 1e-5f);
    cr_assert_eq(aarmd_plugin_seq_truncate(r.p, a, 7, r.err, sizeof r.err), AARMD_EINVAL);
    aarmd_plugin_seq_free(r.p, a);
    rig_close(&r);
}

/* kv_type=f32 and simd=0 change rounding only. */
Test(cpu_backend, kv_f32_and_plain_c_agree)
{
    const char *variants[][2] = {{"kv_type=f16", NULL}, {"kv_type=f32", NULL}, {"simd=0", NULL}};
    float out[3][V];
    for (int v = 0; v < 3; v++) {
        struct rig r;
        cr_assert_eq(rig_open(&r, variants[v]), AARMD_OK, "%s", r.err);
        rig_model(&r);
        struct aarmd_backend_seq *a = seq(&r, 16);
        cr_assert_eq(step1(&r, a, PROMPT, NP, out[v]), AARMD_OK, "%s", r.err);
        aarmd_plugin_seq_free(r.p, a);
        rig_close(&r);
    }
    cr_assert_lt(max_diff(out[0], out[1], V), 2e-2f, "f16 vs f32 kv: %g", max_diff(out[0], out[1], V));
    cr_assert_lt(max_diff(out[0], out[2], V), 1e-3f, "simd vs plain: %g", max_diff(out[0], out[2], V));
}

/* The thread count (fixed, or picked per pass by autothreads) never changes a bit
 * of the result: prefill then decodes, each compared exactly with threads=1. */
Test(cpu_backend, thread_choice_does_not_change_results)
{
    const char *variants[][3] = {{"threads=1", NULL, NULL},
                                 {"threads=3", "autothreads=0", NULL},
                                 {"threads=2", "autothreads=on", NULL}};
    float out[3][4][V];
    for (int v = 0; v < 3; v++) {
        struct rig r;
        cr_assert_eq(rig_open(&r, variants[v]), AARMD_OK, "%s", r.err);
        rig_model(&r);
        struct aarmd_backend_seq *a = seq(&r, 16);
        cr_assert_eq(step1(&r, a, PROMPT, NP, out[v][0]), AARMD_OK, "%s", r.err);
        for (int d = 1; d < 4; d++)
            cr_assert_eq(step1(&r, a, &PROMPT[d], 1, out[v][d]), AARMD_OK, "%s", r.err);
        aarmd_plugin_seq_free(r.p, a);
        rig_close(&r);
    }
    for (int v = 1; v < 3; v++)
        for (int d = 0; d < 4; d++)
            cr_assert_eq(memcmp(out[0][d], out[v][d], sizeof out[0][d]), 0, "%s, step %d differs from threads=1",
                         variants[v][0], d);
}

Test(cpu_backend, model_bytes_and_seq_limits)
{
    struct rig r;
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    rig_model(&r);
    uint64_t w = (uint64_t)(E * V + E + NL * (2 * E + 2 * E * NH * HD + 2 * E * NKV * HD + 3 * E * FF)) * 4;
    cr_assert_geq(aarmd_plugin_model_bytes(r.p, r.model), w);
    struct aarmd_backend_seq *s = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(r.p, r.model, 0, &s, r.err, sizeof r.err), AARMD_EINVAL);
    cr_assert_null(s);
    rig_close(&r);
}

Test(cpu_backend, unavailable_simd_and_bad_device)
{
    struct rig r;
#if defined(__x86_64__)
    const char *o[] = {"simd=neon", NULL};
#else
    const char *o[] = {"simd=avx2", NULL};
#endif
    cr_assert_eq(rig_open(&r, o), AARMD_EUNSUPPORTED);
    cr_assert(strstr(r.err, "simd"), "%s", r.err);
    rig_close(&r);
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    struct aarmd_backend_ctx *c2 = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(r.p, 1, &c2, r.err, sizeof r.err), AARMD_EINVAL);
    cr_assert_null(c2);
    cr_assert(strstr(r.err, "device"), "%s", r.err);
    rig_close(&r);
}

Test(cpu_backend, foreign_sequence_and_missing_logits_buffer)
{
    struct rig r;
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    rig_model(&r);
    struct aarmd_backend_model *other = NULL;
    cr_assert_eq(aarmd_plugin_model_load(r.p, r.ctx, &r.tiny->d, NULL, NULL, &other, r.err, sizeof r.err), AARMD_OK,
                 "%s", r.err);
    struct aarmd_backend_seq *s = seq(&r, 8), *t = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(r.p, other, 8, &t, r.err, sizeof r.err), AARMD_OK, "%s", r.err);
    struct aarmd_batch_entry e = {.seq = t, .tokens = PROMPT, .n_tokens = 1};
    cr_assert_eq(aarmd_plugin_step(r.p, r.model, &e, 1, r.err, sizeof r.err), AARMD_EINVAL);
    cr_assert(strstr(r.err, "another model"), "%s", r.err);
    struct aarmd_batch_entry f = {.seq = s, .tokens = PROMPT, .n_tokens = 1, .want_logits = 1, .logits = NULL};
    cr_assert_eq(aarmd_plugin_step(r.p, r.model, &f, 1, r.err, sizeof r.err), AARMD_EINVAL);
    aarmd_plugin_seq_free(r.p, s);
    aarmd_plugin_seq_free(r.p, t);
    aarmd_plugin_model_free(r.p, other);
    rig_close(&r);
}

/* Learned positions (gpt2) bound the context, and change the logits. */
Test(cpu_backend, learned_positions_limit_context)
{
    struct rig r;
    cr_assert_eq(rig_open(&r, NULL), AARMD_OK, "%s", r.err);
    r.tiny = tiny_llama_new(&TINY);
    float plain[V], with_pos[V];
    cr_assert_eq(aarmd_plugin_model_load(r.p, r.ctx, &r.tiny->d, NULL, NULL, &r.model, r.err, sizeof r.err),
                 AARMD_OK, "%s", r.err);
    struct aarmd_backend_seq *s = seq(&r, 8);
    cr_assert_eq(step1(&r, s, PROMPT, 4, plain), AARMD_OK, "%s", r.err);
    aarmd_plugin_seq_free(r.p, s);
    aarmd_plugin_model_free(r.p, r.model);
    r.model = NULL;

    tiny_llama_add(r.tiny, "position_embd.weight", AARMD_ROLE_POS_EMBD, -1, E, 16, 0.0f, 1.0f);
    cr_assert_eq(aarmd_plugin_model_load(r.p, r.ctx, &r.tiny->d, NULL, NULL, &r.model, r.err, sizeof r.err),
                 AARMD_OK, "%s", r.err);
    s = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(r.p, r.model, 17, &s, r.err, sizeof r.err), AARMD_EINVAL);
    cr_assert(strstr(r.err, "learned positions"), "%s", r.err);
    s = seq(&r, 16);
    cr_assert_eq(step1(&r, s, PROMPT, 4, with_pos), AARMD_OK, "%s", r.err);
    cr_assert_gt(max_diff(plain, with_pos, V), 1e-2f);
    aarmd_plugin_seq_free(r.p, s);
    rig_close(&r);
}
