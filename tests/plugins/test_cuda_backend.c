/*
 * test_cuda_backend.c — the CUDA plugin through the real loader. Without a
 * GPU: the probe refuses with "no CUDA device" (checked) and every GPU test
 * skips. With one: logits against the CPU backend on synthetic models of
 * every arch and weight type, and each bad input refused with a clear error.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aarmd_backend.h"
#include "plugins/backend_compare.h"
#include "gguf.h"
#include "gguf_synth.h"
#include "model.h"
#include "plugin.h"

static char load_err[1024];

/* Each loaded plugin keeps a pointer to its host and options: one slot per load. */
static struct {
    struct aarmd_host host;
    struct aarmd_opt opts[16];
} slots[8];
static unsigned next_slot;

/* The CUDA plugin, or NULL with load_err set (no plugin built, or no device). Unless
 * opts set kv_mb, each model's KV pool is 256 MiB: the tests run in parallel
 * processes, and the default (80% of free memory) would starve the later ones. */
static struct aarmd_plugin *load_cuda(const struct aarmd_opt *opts, uint32_t n_opts)
{
    struct aarmd_plugin *p = NULL;
    int has_kv = 0;
    struct aarmd_host *host = &slots[next_slot % 8].host;
    struct aarmd_opt *ob = slots[next_slot++ % 8].opts;
    if (n_opts > 15)
        n_opts = 15;
    for (uint32_t i = 0; i < n_opts; i++) {
        ob[i] = opts[i];
        has_kv |= !strcmp(opts[i].key, "kv_mb");
    }
    if (!has_kv)
        ob[n_opts++] = (struct aarmd_opt){"kv_mb", "256"};
    aarmd_plugin_host_init(host, ob, n_opts, 0);
    if (aarmd_plugin_load("cuda", NULL, host, &p, load_err, sizeof load_err) != AARMD_OK)
        return NULL;
    return p;
}

static int plugin_missing(void)
{
    return strstr(load_err, "not found") != NULL || strstr(load_err, "No such file") != NULL;
}

/* Loads the plugin or skips the test with the reason. */
#define NEED_GPU(p)                                                              \
    do {                                                                         \
        if (!(p)) {                                                              \
            if (plugin_missing())                                                \
                cr_skip_test("CUDA plugin not built: %s", load_err);             \
            cr_skip_test("no CUDA device: %s", load_err);                        \
        }                                                                        \
    } while (0)

Test(cuda_backend, probe_refuses_without_a_device)
{
    struct aarmd_plugin *p = load_cuda(NULL, 0);
    if (p) {
        aarmd_plugin_free(p);
        cr_skip_test("a CUDA device is present: the refusal cannot be observed here");
    }
    if (plugin_missing())
        cr_skip_test("CUDA plugin not built: %s", load_err);
    cr_assert(strstr(load_err, "no CUDA device") != NULL, "refusal should say 'no CUDA device': %s", load_err);
}

Test(cuda_backend, table_and_device_info)
{
    struct aarmd_plugin *p = load_cuda(NULL, 0);
    NEED_GPU(p);
    const struct aarmd_backend *t = aarmd_plugin_table(p);
    cr_assert_str_eq(t->name, "cuda");
    cr_assert(aarmd_plugin_has_method(p, "seq_truncate"));
    cr_assert(aarmd_plugin_has_method(p, "kv_info") && aarmd_plugin_has_method(p, "seq_fork"), "paged KV (ABI 1.1)");
    struct aarmd_backend_ctx *ctx = NULL;
    char err[512];
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_device_info info;
    cr_assert_eq(aarmd_plugin_device_info(p, ctx, &info, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_str_eq(info.memory_architecture, "vram-only");
    cr_assert_str_eq(info.worker_type, "bespoke-cuda");
    cr_assert_eq(info.advised_seqs, 64u);
    cr_assert(info.memory_total > 0 && info.memory_free <= info.memory_total);
    cr_assert(strlen(info.name) > 0);
    /* a device index that does not exist */
    struct aarmd_backend_ctx *bad = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 4096, &bad, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "does not exist"), "%s", err);
    aarmd_plugin_ctx_free(p, ctx);
    aarmd_plugin_free(p);
}

Test(cuda_backend, unknown_and_bad_options_refused)
{
    static const struct {
        struct aarmd_opt opt;
        const char *msg;
    } bad[] = {
        {{"no_such_option", "1"}, "unknown backend option no_such_option"},
        {{"batch", "0"}, "batch=0"},
        {{"pdl", "4"}, "pdl=4"},   /* the kernel-choice switches take their listed values only */
        {{"mvf", "8"}, "mvf=8"},
        {{"short_keys", "-1"}, "short_keys=-1: expected 0 (off)..8192"},
        {{"direct_logits", "2"}, "direct_logits=2: expected 0 or 1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[512];
        struct aarmd_opt o = bad[i].opt;
        struct aarmd_plugin *p = load_cuda(&o, 1);
        if (i == 0)
            NEED_GPU(p);
        cr_assert_not_null(p);
        struct aarmd_backend_ctx *ctx = NULL;
        cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_EINVAL, "%s=%s", o.key, o.value);
        cr_assert(strstr(err, bad[i].msg), "%s", err);
        aarmd_plugin_free(p);
    }
}

/* ---- models from gguf-synth ---------------------------------------------------- */

static struct bc_case cases[] = {BC_CASES};

ParameterizedTestParameters(cuda_backend, matches_cpu)
{
    return cr_make_param_array(struct bc_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bc_case *c, cuda_backend, matches_cpu)
{
    struct aarmd_plugin *p = load_cuda(NULL, 0);
    NEED_GPU(p);
    bc_match_cpu(p, c);
    aarmd_plugin_free(p);
}

/* AARMD_CUDA_GEMM16=1: cuBLAS writes the prompt's [gate | up] products as F16 and the activation
 * reads them so (v19); the same bounds against the CPU (SiLU and GELU gates, fused rows). */
static struct bc_case g16_cases[] = {
    {"llama", AARMD_TYPE_F16, 0.01}, {"llama", AARMD_TYPE_Q4_K, 0.06}, {"qwen3", AARMD_TYPE_Q8_0, 0.05},
    {"phi3", AARMD_TYPE_Q4_K, 0.06}, {"gemma3", AARMD_TYPE_BF16, 0.01},
};

ParameterizedTestParameters(cuda_backend, gemm16_matches_cpu)
{
    return cr_make_param_array(struct bc_case, g16_cases, sizeof g16_cases / sizeof g16_cases[0]);
}

ParameterizedTest(struct bc_case *c, cuda_backend, gemm16_matches_cpu)
{
    setenv("AARMD_CUDA_GEMM16", "1", 1);   /* read at the first forward, in this test's process */
    struct aarmd_plugin *p = load_cuda(NULL, 0);
    NEED_GPU(p);
    bc_match_cpu(p, c);
    aarmd_plugin_free(p);
}

/* ---- refusals ------------------------------------------------------------------- */

Test(cuda_backend, bad_steps_refused)
{
    struct aarmd_plugin *p = load_cuda(NULL, 0);
    NEED_GPU(p);
    char err[512];
    struct bc_model l;
    bc_model_synth(&l, "llama", AARMD_TYPE_Q4_0);
    struct bc_side a;
    bc_side_open(&a, p, l.d, 4);
    float *lg = malloc(l.d->n_vocab * sizeof(float));
    int32_t bad = (int32_t)l.d->n_vocab, neg = -1, ok[5] = {1, 2, 3, 4, 5};
    struct aarmd_batch_entry e = {a.s, &bad, 1, 1, lg};
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "outside the vocabulary"), "%s", err);
    e.tokens = &neg;
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_EINVAL);
    e.tokens = ok;
    e.n_tokens = 5;   /* n_ctx is 4 */
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "exceed the sequence's n_ctx"), "%s", err);
    struct aarmd_batch_entry two[2] = {{a.s, ok, 1, 0, NULL}, {a.s, ok, 1, 0, NULL}};
    cr_assert_eq(aarmd_plugin_step(p, a.m, two, 2, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "same sequence"), "%s", err);
    e.n_tokens = 2;
    e.logits = NULL;
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "logits"), "%s", err);   /* the host wrapper or the plugin refuses */
    /* nothing advanced: four tokens still fit, and truncation past the length is refused */
    e.n_tokens = 4;
    e.logits = lg;
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_truncate(p, a.s, 5, err, sizeof err), AARMD_EINVAL);
    cr_assert_eq(aarmd_plugin_seq_truncate(p, a.s, 2, err, sizeof err), AARMD_OK, "%s", err);
    free(lg);
    bc_side_close(&a);
    bc_model_free(&l);
    aarmd_plugin_free(p);
}

Test(cuda_backend, bad_models_refused)
{
    struct aarmd_plugin *p = load_cuda(NULL, 0);
    NEED_GPU(p);
    char err[512];
    struct bc_model l;
    bc_model_synth(&l, "llama", AARMD_TYPE_F32);
    struct aarmd_backend_ctx *ctx = NULL;
    struct aarmd_backend_model *m = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_model_desc d = *l.d;
    struct aarmd_tensor *t = malloc(d.n_tensors * sizeof *t);
    memcpy(t, l.d->tensors, d.n_tensors * sizeof *t);
    d.tensors = t;

    /* a weight type the kernels do not run */
    uint32_t qi = 0;
    while (t[qi].role != AARMD_ROLE_ATTN_Q)
        qi++;
    t[qi].type = AARMD_TYPE_Q2_K;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EUNSUPPORTED);
    cr_assert(strstr(err, "cannot run") && strstr(err, t[qi].name), "%s", err);
    t[qi] = l.d->tensors[qi];
    /* truncated data */
    t[qi].nbytes /= 2;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "bytes of data"), "%s", err);
    t[qi] = l.d->tensors[qi];
    /* a missing tensor */
    d.n_tensors = qi;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "missing tensor"), "%s", err);
    d.n_tensors = l.d->n_tensors;
    /* shapes */
    d.n_head_kv = 3;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "not a multiple"), "%s", err);
    d.n_head_kv = l.d->n_head_kv;
    d.head_dim = 512;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EUNSUPPORTED);
    cr_assert(strstr(err, "head_dim 512"), "%s", err);
    d.head_dim = l.d->head_dim;
    d.n_tensors = 0;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "no weights"), "%s", err);
    d.n_tensors = l.d->n_tensors;
    /* the unmodified copy loads */
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert(aarmd_plugin_model_bytes(p, m) > 0);
    aarmd_plugin_model_free(p, m);
    free(t);
    aarmd_plugin_ctx_free(p, ctx);
    bc_model_free(&l);
    aarmd_plugin_free(p);
}

/* ---- batching invariants ------------------------------------------------------------ */

/* Logits of the last of n prompt tokens through `p` with options opts. */
static void run_prompt(struct aarmd_plugin *p, const struct aarmd_model_desc *d, const int32_t *toks, uint32_t n,
                       float *out)
{
    struct bc_side a;
    char err[512];
    bc_side_open(&a, p, d, 64);
    struct aarmd_batch_entry e = {a.s, toks, n, 1, out};
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_OK, "%s", err);
    bc_side_close(&a);
}

static double max_rel(const float *a, const float *b, uint32_t n)
{
    double md = 0.0, sc = 0.0;
    for (uint32_t k = 0; k < n; k++) {
        md = fmax(md, fabs((double)a[k] - b[k]));
        sc = fmax(sc, fabs((double)b[k]));
    }
    return sc > 0.0 ? md / sc : md;
}

Test(cuda_backend, chunked_prefill_matches_one_chunk)
{
    struct aarmd_opt small[] = {{"batch", "7"}};
    struct aarmd_plugin *p1 = load_cuda(NULL, 0);
    NEED_GPU(p1);
    struct bc_model l;
    bc_model_synth(&l, "qwen3", AARMD_TYPE_Q8_0);
    uint32_t nv = l.d->n_vocab;
    int32_t toks[30];
    for (int i = 0; i < 30; i++)
        toks[i] = (int32_t)((i * 53 + 3) % (int)nv);
    float *a = malloc(nv * sizeof(float)), *b = malloc(nv * sizeof(float));
    run_prompt(p1, l.d, toks, 30, a);           /* one chunk of 30 (cuBLAS) */
    aarmd_plugin_free(p1);
    struct aarmd_plugin *p2 = load_cuda(small, 1);
    cr_assert_not_null(p2);
    run_prompt(p2, l.d, toks, 30, b);           /* chunks of 7, 7, 7, 7, 2 (matvec kernels) */
    double r = max_rel(a, b, nv);
    cr_expect(r < 0.03, "chunked prefill differs: rel %g", r);
    aarmd_plugin_free(p2);
    free(a);
    free(b);
    bc_model_free(&l);
}

Test(cuda_backend, two_entries_in_one_step_match_separate_steps)
{
    struct aarmd_plugin *p = load_cuda(NULL, 0);
    NEED_GPU(p);
    char err[512];
    struct bc_model l;
    bc_model_synth(&l, "gemma3", AARMD_TYPE_Q4_K);
    uint32_t nv = l.d->n_vocab;
    struct bc_side a;
    bc_side_open(&a, p, l.d, 64);
    struct aarmd_backend_seq *s2 = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(p, a.m, 64, &s2, err, sizeof err), AARMD_OK, "%s", err);
    int32_t t1[5] = {3, 9, 27, 81, 243}, t2[3] = {7, 49, 343 % 512};
    float *l1 = malloc(nv * sizeof(float)), *l2 = malloc(nv * sizeof(float));
    float *r1 = malloc(nv * sizeof(float)), *r2 = malloc(nv * sizeof(float));
    struct aarmd_batch_entry both[2] = {{a.s, t1, 5, 1, l1}, {s2, t2, 3, 1, l2}};
    cr_assert_eq(aarmd_plugin_step(p, a.m, both, 2, err, sizeof err), AARMD_OK, "%s", err);
    /* then one decode token each, in one step */
    int32_t d1 = 11, d2 = 13;
    struct aarmd_batch_entry dec[2] = {{a.s, &d1, 1, 1, l1}, {s2, &d2, 1, 1, l2}};
    cr_assert_eq(aarmd_plugin_step(p, a.m, dec, 2, err, sizeof err), AARMD_OK, "%s", err);
    aarmd_plugin_seq_free(p, s2);
    bc_side_close(&a);
    /* the same tokens, one sequence per session */
    int32_t u1[6] = {3, 9, 27, 81, 243, 11}, u2[4] = {7, 49, 343 % 512, 13};
    run_prompt(p, l.d, u1, 6, r1);
    run_prompt(p, l.d, u2, 4, r2);
    cr_expect(max_rel(l1, r1, nv) < 0.03, "entry 1 differs: rel %g", max_rel(l1, r1, nv));
    cr_expect(max_rel(l2, r2, nv) < 0.03, "entry 2 differs: rel %g", max_rel(l2, r2, nv));
    cr_expect(max_rel(l1, l2, nv) > 1e-4, "two different sequences gave the same logits");
    free(l1);
    free(l2);
    free(r1);
    free(r2);
    bc_model_free(&l);
    aarmd_plugin_free(p);
}

/*
 * Two plugin instances (different kernel options) against each other: for each
 * weight type a synthetic model (arch_even / arch_odd by the type's index), a
 * prompt of n_prompt tokens then 4 decodes, the logits of every step finite and
 * within `bound` (max relative difference) of each other.
 */
static void same_logits(struct aarmd_plugin *pa, struct aarmd_plugin *pb, const char *arch_even, const char *arch_odd,
                        const uint32_t *types, size_t n_types, uint32_t n_prompt, double bound, const char *what)
{
    char err[512];
    for (size_t ti = 0; ti < n_types; ti++) {
        struct bc_model l;
        bc_model_synth(&l, ti % 2 ? arch_odd : arch_even, types[ti]);
        uint32_t nv = l.d->n_vocab;
        float *a = malloc(nv * sizeof(float)), *b = malloc(nv * sizeof(float));
        int32_t *toks = malloc(n_prompt * sizeof *toks);
        cr_assert(a && b && toks);
        struct bc_side sa, sb;
        uint32_t n_ctx = n_prompt + 8 > 64 ? n_prompt + 8 : 64;
        bc_side_open(&sa, pa, l.d, n_ctx);
        bc_side_open(&sb, pb, l.d, n_ctx);
        for (uint32_t i = 0; i < n_prompt; i++)
            toks[i] = (int32_t)((i * 71 + 9) % nv);
        for (int step = 0; step < 5; step++) {   /* the prompt, then 4 decodes */
            int32_t next = (int32_t)((step * 113 + 1) % (int)nv);
            struct aarmd_batch_entry ea = {sa.s, step ? &next : toks, step ? 1u : n_prompt, 1, a};
            struct aarmd_batch_entry eb = {sb.s, step ? &next : toks, step ? 1u : n_prompt, 1, b};
            cr_assert_eq(aarmd_plugin_step(pa, sa.m, &ea, 1, err, sizeof err), AARMD_OK, "%s", err);
            cr_assert_eq(aarmd_plugin_step(pb, sb.m, &eb, 1, err, sizeof err), AARMD_OK, "%s", err);
            for (uint32_t k = 0; k < nv; k++)
                cr_assert(isfinite(a[k]), "type %u step %d: logit %u not finite", types[ti], step, k);
            double r = max_rel(a, b, nv);
            cr_expect(r < bound, "type %u step %d: %s rel %g", types[ti], step, what, r);
        }
        bc_side_close(&sa);
        bc_side_close(&sb);
        free(toks);
        free(a);
        free(b);
        bc_model_free(&l);
    }
}

/*
 * The decode kernels of v5 (coalesced F32/F16/BF16 and Q8_0 matvecs, the
 * unrolled Q8 matvec, programmatic dependent launch released at kernel entry,
 * Q8 quantization fused into add_norm and the gated activation: pdl=2 mvf=7)
 * against the v4 kernels (pdl=0, mvf=0) on the same model:
 * chunks of at most 3 tokens (batch=3) and then single-token decodes through
 * the CUDA graph. Only the summation order differs, so the logits agree far
 * below the CPU bounds.
 */
Test(cuda_backend, v5_decode_kernels_match_v4)
{
    struct aarmd_opt fast[] = {{"batch", "3"}, {"pdl", "2"}, {"mvf", "7"}};
    struct aarmd_opt old[] = {{"batch", "3"}, {"pdl", "0"}, {"mvf", "0"}};
    static const uint32_t types[] = {AARMD_TYPE_F16, AARMD_TYPE_BF16, AARMD_TYPE_F32, AARMD_TYPE_Q8_0,
                                     AARMD_TYPE_Q4_K};
    struct aarmd_plugin *pf = load_cuda(fast, 3);
    NEED_GPU(pf);
    struct aarmd_plugin *po = load_cuda(old, 3);
    cr_assert_not_null(po);
    /* a prompt of 11 in chunks of 3,3,3,2, then 4 decodes */
    same_logits(pf, po, "llama", "qwen3", types, sizeof types / sizeof types[0], 11, 2e-3, "v5 vs v4 kernels");
    aarmd_plugin_free(pf);
    aarmd_plugin_free(po);
}

/*
 * Decode graphs of short contexts (v14): at most short_keys keys a row replay a graph whose
 * attention is one chunk of 16 warps that writes the row itself, no partial rows to merge;
 * short_keys=0 keeps the 32-chunk graph. Prompts of 11 (short) and 150 tokens (past 128: the
 * split graph again) then 4 graph decodes: the same logits up to the summation order (and the
 * Q8 roundings of the attention rows it can flip).
 */
Test(cuda_backend, one_chunk_decode_graph_matches_split)
{
    struct aarmd_opt one[] = {{"short_keys", "128"}};
    struct aarmd_opt split[] = {{"short_keys", "0"}};
    static const uint32_t types[] = {AARMD_TYPE_Q4_K, AARMD_TYPE_F16, AARMD_TYPE_Q8_0};
    struct aarmd_plugin *po = load_cuda(one, 1);
    NEED_GPU(po);
    struct aarmd_plugin *ps = load_cuda(split, 1);
    cr_assert_not_null(ps);
    same_logits(po, ps, "llama", "gemma3", types, sizeof types / sizeof types[0], 11, 2e-3, "one chunk vs 32");
    same_logits(po, ps, "llama", "gemma3", types, sizeof types / sizeof types[0], 150, 2e-3, "past short_keys");
    aarmd_plugin_free(po);
    aarmd_plugin_free(ps);
}

/*
 * pdl=3 lets every kernel file's kernels release the next launch at entry
 * (pdl=2: matmul.cu and ops.cu only); the launch order is all that changes,
 * so a 40-token prompt (flash attention, cuBLAS) and graph decodes give the
 * same logits as plain launches (pdl=0), to the bit on a deterministic path.
 */
Test(cuda_backend, pdl3_matches_plain_launches)
{
    struct aarmd_opt early[] = {{"pdl", "3"}};
    struct aarmd_opt plain[] = {{"pdl", "0"}};
    static const uint32_t types[] = {AARMD_TYPE_Q4_K, AARMD_TYPE_F16};
    struct aarmd_plugin *pe = load_cuda(early, 1);
    NEED_GPU(pe);
    struct aarmd_plugin *pp = load_cuda(plain, 1);
    cr_assert_not_null(pp);
    same_logits(pe, pp, "llama", "llama", types, sizeof types / sizeof types[0], 40, 1e-6, "pdl=3 vs pdl=0");
    aarmd_plugin_free(pe);
    aarmd_plugin_free(pp);
}

/*
 * The v8 fused forward (default, mvf=1: residual adds in the wo/down matvec
 * epilogues, one-pass norms, Q8 rows from the attention merge, rope + KV
 * store + chunk merge inside the decode attention) against the v7 kernel
 * sequence (mvf=5), with and without graphs, on archs that exercise each
 * exception (biases, GELU + learned positions, per-head q/k norms, post norms,
 * sliding window): two sequences (11 and 6 prompt tokens in one step), four
 * steps decoding both (2 tokens a forward), two decoding one (1 token). Only
 * the summation order differs: float weights agree within 2e-3; for quantized
 * ones a last-bit change of a norm output can round a Q8 activation the other
 * way (measured up to 1.4e-2 on an H100, both paths then ~2e-2 from the CPU),
 * so those are held to 3e-2 between the paths and the CPU bound (6e-2) each.
 */
struct fuse_case {
    char arch[16];
    uint32_t type;
    char graphs[2];
};

static struct fuse_case fuse_cases[] = {
    {"llama", AARMD_TYPE_Q4_K, "1"}, {"llama", AARMD_TYPE_F16, "0"},  {"gpt2", AARMD_TYPE_Q8_0, "1"},
    {"qwen2", AARMD_TYPE_Q5_K, "1"}, {"qwen3", AARMD_TYPE_BF16, "1"}, {"gemma3", AARMD_TYPE_Q4_0, "1"},
    {"phi3", AARMD_TYPE_Q6_K, "0"},  {"gemma3", AARMD_TYPE_F32, "0"},
};

ParameterizedTestParameters(cuda_backend, v8_fused_forward_matches_v7)
{
    return cr_make_param_array(struct fuse_case, fuse_cases, sizeof fuse_cases / sizeof fuse_cases[0]);
}

ParameterizedTest(struct fuse_case *fc, cuda_backend, v8_fused_forward_matches_v7)
{
    struct aarmd_opt fused[] = {{"mvf", "1"}, {"graphs", fc->graphs}};
    struct aarmd_opt v7[] = {{"mvf", "5"}, {"graphs", fc->graphs}};
    struct aarmd_plugin *pf = load_cuda(fused, 2);
    NEED_GPU(pf);
    struct aarmd_plugin *po = load_cuda(v7, 2);
    cr_assert_not_null(po);
    char err[512];
    struct aarmd_plugin *cpu = NULL;   /* the reference both must stay near */
    struct aarmd_host cpu_host;
    aarmd_plugin_host_init(&cpu_host, NULL, 0, 0);
    cr_assert_eq(aarmd_plugin_load("cpu", NULL, &cpu_host, &cpu, err, sizeof err), AARMD_OK, "%s", err);
    struct bc_model l;
    bc_model_synth(&l, fc->arch, fc->type);
    uint32_t nv = l.d->n_vocab;
    int qw = fc->type != AARMD_TYPE_F32 && fc->type != AARMD_TYPE_F16 && fc->type != AARMD_TYPE_BF16;
    float *lf[2], *lo[2], *lc[2];
    for (int i = 0; i < 2; i++) {
        lf[i] = malloc(nv * sizeof(float));
        lo[i] = malloc(nv * sizeof(float));
        lc[i] = malloc(nv * sizeof(float));
        cr_assert(lf[i] && lo[i] && lc[i]);
    }
    struct bc_side sf, so, sc;
    bc_side_open(&sf, pf, l.d, 64);
    bc_side_open(&so, po, l.d, 64);
    bc_side_open(&sc, cpu, l.d, 64);
    struct aarmd_backend_seq *f2 = NULL, *o2 = NULL, *c2 = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(pf, sf.m, 64, &f2, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_new(po, so.m, 64, &o2, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_new(cpu, sc.m, 64, &c2, err, sizeof err), AARMD_OK, "%s", err);
    int32_t toks[2][11];
    for (int i = 0; i < 11; i++) {
        toks[0][i] = (int32_t)((i * 71 + 9) % (int)nv);
        toks[1][i] = (int32_t)((i * 29 + 4) % (int)nv);
    }
    for (int step = 0; step < 7; step++) {   /* prompts, 4 steps of both decoding, 2 of the first alone */
        int32_t next[2] = {(int32_t)((step * 113 + 1) % (int)nv), (int32_t)((step * 61 + 5) % (int)nv)};
        uint32_t ne = step <= 4 ? 2 : 1;
        struct aarmd_batch_entry ef[2], eo[2], ec[2];
        for (uint32_t e = 0; e < ne; e++) {
            const int32_t *tk = step ? &next[e] : toks[e];
            uint32_t n = step ? 1u : (e ? 6u : 11u);
            ef[e] = (struct aarmd_batch_entry){e ? f2 : sf.s, tk, n, 1, lf[e]};
            eo[e] = (struct aarmd_batch_entry){e ? o2 : so.s, tk, n, 1, lo[e]};
            ec[e] = (struct aarmd_batch_entry){e ? c2 : sc.s, tk, n, 1, lc[e]};
        }
        cr_assert_eq(aarmd_plugin_step(pf, sf.m, ef, ne, err, sizeof err), AARMD_OK, "%s", err);
        cr_assert_eq(aarmd_plugin_step(po, so.m, eo, ne, err, sizeof err), AARMD_OK, "%s", err);
        cr_assert_eq(aarmd_plugin_step(cpu, sc.m, ec, ne, err, sizeof err), AARMD_OK, "%s", err);
        for (uint32_t e = 0; e < ne; e++) {
            for (uint32_t k = 0; k < nv; k++)
                cr_assert(isfinite(lf[e][k]), "%s type %u step %d: logit %u not finite", fc->arch, fc->type, step, k);
            double r = max_rel(lf[e], lo[e], nv), rf = max_rel(lf[e], lc[e], nv), ro = max_rel(lo[e], lc[e], nv);
            cr_log_info("%s type %u graphs=%s step %d seq %u: v8-v7 %.3g v8-cpu %.3g v7-cpu %.3g", fc->arch,
                        fc->type, fc->graphs, step, e, r, rf, ro);
            cr_expect(r < (qw ? 3e-2 : 2e-3), "%s type %u graphs=%s step %d seq %u: v8 vs v7 rel %g (v8-cpu %g, "
                      "v7-cpu %g)", fc->arch, fc->type, fc->graphs, step, e, r, rf, ro);
            cr_expect(rf < 0.06, "%s type %u graphs=%s step %d seq %u: v8 vs cpu rel %g", fc->arch, fc->type,
                      fc->graphs, step, e, rf);
        }
    }
    cr_expect(max_rel(lf[0], lf[1], nv) > 1e-4, "two different sequences gave the same logits");
    aarmd_plugin_seq_free(pf, f2);
    aarmd_plugin_seq_free(po, o2);
    aarmd_plugin_seq_free(cpu, c2);
    bc_side_close(&sf);
    bc_side_close(&so);
    bc_side_close(&sc);
    for (int i = 0; i < 2; i++) {
        free(lf[i]);
        free(lo[i]);
        free(lc[i]);
    }
    bc_model_free(&l);
    aarmd_plugin_free(pf);
    aarmd_plugin_free(po);
    aarmd_plugin_free(cpu);
}

/* ---- paged KV: one forward for every sequence of a step, fork, pool exhaustion ---------- */

/* Logits after `n` prompt tokens then each of `nd` decode tokens, the sequence alone in its model. */
static void run_alone(struct aarmd_plugin *p, const struct aarmd_model_desc *d, const int32_t *toks, uint32_t n,
                      const int32_t *dec, uint32_t nd, float *out)
{
    struct bc_side a;
    char err[512];
    bc_side_open(&a, p, d, 128);
    struct aarmd_batch_entry e = {a.s, toks, n, 1, out};
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_OK, "%s", err);
    for (uint32_t i = 0; i < nd; i++) {
        struct aarmd_batch_entry e1 = {a.s, &dec[i], 1, 1, out};
        cr_assert_eq(aarmd_plugin_step(p, a.m, &e1, 1, err, sizeof err), AARMD_OK, "%s", err);
    }
    bc_side_close(&a);
}

static struct aarmd_kv_info kv_info_of(struct aarmd_plugin *p, struct aarmd_backend_model *m)
{
    struct aarmd_kv_info ki;
    char err[512];
    memset(&ki, 0, sizeof ki);
    ki.struct_size = sizeof ki;
    cr_assert_eq(aarmd_plugin_kv_info(p, m, &ki, err, sizeof err), AARMD_OK, "%s", err);
    return ki;
}

/*
 * Three sequences of different lengths (5, 17 and 40 prompt tokens: inside one
 * block, just past one, several) prefilled in one step, then three decode steps
 * of all three (a padded graph bucket of 4), against each sequence alone.
 */
struct paged_case {
    char arch[16];
    uint32_t type;
    char opt[16], val[8];   /* one backend option, "" for none */
};

/* Default kernels; the batch through cuBLAS on F16 weight copies; without graphs; attention by head or by group. */
static struct paged_case paged_cases[] = {
    {"llama", AARMD_TYPE_Q4_K, "", ""},         {"gemma3", AARMD_TYPE_F16, "", ""},
    {"qwen3", AARMD_TYPE_Q8_0, "q8rows", "0"},  {"llama", AARMD_TYPE_Q6_K, "wf16", "1"},
    {"phi3", AARMD_TYPE_Q4_0, "graphs", "0"},   {"llama", AARMD_TYPE_Q4_K, "attn", "grouped"},
    {"gemma3", AARMD_TYPE_Q8_0, "attn", "heads"},
};

ParameterizedTestParameters(cuda_backend, three_sequences_in_one_step_match_each_alone)
{
    return cr_make_param_array(struct paged_case, paged_cases, sizeof paged_cases / sizeof paged_cases[0]);
}

ParameterizedTest(struct paged_case *pc, cuda_backend, three_sequences_in_one_step_match_each_alone)
{
    struct aarmd_opt o[2] = {{pc->opt, pc->val}, {"q8rows", "0"}};
    uint32_t no = pc->opt[0] ? 1 : 0;
    if (!strcmp(pc->opt, "wf16"))
        no = 2;   /* the F16 copies are used where cuBLAS runs */
    struct aarmd_plugin *p = load_cuda(o, no);
    NEED_GPU(p);
    char err[512];
    const uint32_t types[] = {pc->type};
    const char *const archs[] = {pc->arch};
    for (size_t ti = 0; ti < 1; ti++) {
        struct bc_model l;
        bc_model_synth(&l, archs[ti], types[ti]);
        uint32_t nv = l.d->n_vocab;
        static const uint32_t len[3] = {5, 17, 40};
        int32_t toks[3][40], dec[3][3];
        for (int s = 0; s < 3; s++) {
            for (int i = 0; i < 40; i++)
                toks[s][i] = (int32_t)((i * 37 + s * 101 + 5) % (int)nv);
            for (int i = 0; i < 3; i++)
                dec[s][i] = (int32_t)((i * 59 + s * 13 + 2) % (int)nv);
        }
        float *got[3], *want[3];
        for (int s = 0; s < 3; s++) {
            got[s] = malloc(nv * sizeof(float));
            want[s] = malloc(nv * sizeof(float));
            cr_assert(got[s] && want[s]);
        }
        struct bc_side a;
        bc_side_open(&a, p, l.d, 128);
        struct aarmd_backend_seq *sq[3] = {a.s, NULL, NULL};
        for (int s = 1; s < 3; s++)
            cr_assert_eq(aarmd_plugin_seq_new(p, a.m, 128, &sq[s], err, sizeof err), AARMD_OK, "%s", err);
        struct aarmd_kv_info k0 = kv_info_of(p, a.m);
        cr_assert_eq(k0.block_tokens, 16u);
        cr_assert_eq(k0.blocks_free, k0.blocks_total, "new sequences take no blocks");
        struct aarmd_batch_entry pre[3];
        for (int s = 0; s < 3; s++)   /* the middle one wants no logits */
            pre[s] = (struct aarmd_batch_entry){sq[s], toks[s], len[s], s != 1, s != 1 ? got[s] : NULL};
        cr_assert_eq(aarmd_plugin_step(p, a.m, pre, 3, err, sizeof err), AARMD_OK, "%s", err);
        struct aarmd_kv_info k1 = kv_info_of(p, a.m);
        cr_assert_eq(k1.blocks_total - k1.blocks_free, 1u + 2u + 3u, "blocks for 5, 17, 40 tokens");
        for (int i = 0; i < 3; i++) {
            struct aarmd_batch_entry de[3];
            for (int s = 0; s < 3; s++)
                de[s] = (struct aarmd_batch_entry){sq[s], &dec[s][i], 1, 1, got[s]};
            cr_assert_eq(aarmd_plugin_step(p, a.m, de, 3, err, sizeof err), AARMD_OK, "%s", err);
        }
        for (int s = 1; s < 3; s++)
            aarmd_plugin_seq_free(p, sq[s]);
        cr_assert_eq(aarmd_plugin_seq_truncate(p, a.s, 0, err, sizeof err), AARMD_OK, "%s", err);
        struct aarmd_kv_info k2 = kv_info_of(p, a.m);
        cr_assert_eq(k2.blocks_free, k2.blocks_total, "blocks back after free and truncate");
        bc_side_close(&a);
        for (int s = 0; s < 3; s++) {
            run_alone(p, l.d, toks[s], len[s], dec[s], 3, want[s]);
            double r = max_rel(got[s], want[s], nv);
            cr_expect(r < 0.03, "%s type %u: sequence %d batched vs alone: rel %g", archs[ti], types[ti], s, r);
        }
        cr_expect(max_rel(got[0], got[2], nv) > 1e-4, "two different sequences gave the same logits");
        for (int s = 0; s < 3; s++) {
            free(got[s]);
            free(want[s]);
        }
        bc_model_free(&l);
    }
    aarmd_plugin_free(p);
}

/*
 * seq_fork shares full blocks: a fork of 32 of a 40-token sequence, fed the
 * source's tokens 32..39 and one more, gives the source's logits; a fork
 * truncated into a shared block copies it before writing (the source's later
 * logits are unchanged); blocks are counted once and all come back.
 */
Test(cuda_backend, fork_shares_blocks_and_copies_on_write)
{
    struct aarmd_plugin *p = load_cuda(NULL, 0);
    NEED_GPU(p);
    char err[512];
    struct bc_model l;
    bc_model_synth(&l, "qwen3", AARMD_TYPE_Q8_0);
    uint32_t nv = l.d->n_vocab;
    int32_t toks[42];
    for (int i = 0; i < 42; i++)
        toks[i] = (int32_t)((i * 41 + 7) % (int)nv);
    float *ref = malloc(nv * sizeof(float)), *ref2 = malloc(nv * sizeof(float)), *lg = malloc(nv * sizeof(float));
    cr_assert(ref && ref2 && lg);
    run_alone(p, l.d, toks, 41, NULL, 0, ref);    /* 41 tokens: the fork's answer */
    run_alone(p, l.d, toks, 42, NULL, 0, ref2);   /* 42: the source's after the forks */

    struct bc_side a;
    bc_side_open(&a, p, l.d, 128);
    struct aarmd_batch_entry e = {a.s, toks, 40, 0, NULL};
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_kv_info k0 = kv_info_of(p, a.m);
    cr_assert_eq(k0.blocks_total - k0.blocks_free, 3u);
    struct aarmd_backend_seq *f = NULL, *g = NULL;
    cr_assert_eq(aarmd_plugin_seq_fork(p, a.s, 20, 128, &f, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "multiple of the block size"), "%s", err);
    cr_assert_eq(aarmd_plugin_seq_fork(p, a.s, 48, 128, &f, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "source holds 40"), "%s", err);
    cr_assert_eq(aarmd_plugin_seq_fork(p, a.s, 32, 16, &f, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "n_ctx"), "%s", err);
    cr_assert_eq(aarmd_plugin_seq_fork(p, a.s, 32, 128, &f, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_fork(p, a.s, 32, 128, &g, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(kv_info_of(p, a.m).blocks_free, k0.blocks_free, "a fork copies no block");

    /* f: the source's tokens 32..40 after the shared 32 */
    struct aarmd_batch_entry ef = {f, toks + 32, 9, 1, lg};
    cr_assert_eq(aarmd_plugin_step(p, a.m, &ef, 1, err, sizeof err), AARMD_OK, "%s", err);
    double r = max_rel(lg, ref, nv);
    cr_expect(r < 0.03, "fork after 32 + 9 tokens vs 41 alone: rel %g", r);
    cr_assert_eq(kv_info_of(p, a.m).blocks_free, k0.blocks_free - 1, "the fork took one block of its own");

    /* g: truncated into the shared second block, then written: copy on write */
    cr_assert_eq(aarmd_plugin_seq_truncate(p, g, 20, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(kv_info_of(p, a.m).blocks_free, k0.blocks_free - 1, "both of g's blocks are still shared");
    struct aarmd_batch_entry eg = {g, toks + 20, 21, 1, lg};
    cr_assert_eq(aarmd_plugin_step(p, a.m, &eg, 1, err, sizeof err), AARMD_OK, "%s", err);
    r = max_rel(lg, ref, nv);
    cr_expect(r < 0.03, "fork truncated to 20 + 21 tokens vs 41 alone: rel %g", r);
    cr_assert_eq(kv_info_of(p, a.m).blocks_free, k0.blocks_free - 1 - 2, "g copied block 1 and took block 2");

    /* the source, untouched by both forks, goes on: tokens 40, 41 */
    struct aarmd_batch_entry ea = {a.s, toks + 40, 2, 1, lg};
    cr_assert_eq(aarmd_plugin_step(p, a.m, &ea, 1, err, sizeof err), AARMD_OK, "%s", err);
    r = max_rel(lg, ref2, nv);
    cr_expect(r < 0.03, "source after the forks wrote vs 42 alone: rel %g", r);

    aarmd_plugin_seq_free(p, a.s);   /* the forks outlive their source */
    a.s = NULL;
    struct aarmd_batch_entry ef2 = {f, toks, 1, 1, lg};
    cr_assert_eq(aarmd_plugin_step(p, a.m, &ef2, 1, err, sizeof err), AARMD_OK, "%s", err);
    aarmd_plugin_seq_free(p, f);
    aarmd_plugin_seq_free(p, g);
    struct aarmd_kv_info k3 = kv_info_of(p, a.m);
    cr_assert_eq(k3.blocks_free, k3.blocks_total, "every block back");
    bc_side_close(&a);
    free(ref);
    free(ref2);
    free(lg);
    bc_model_free(&l);
    aarmd_plugin_free(p);
}

/* kv_mb sizes the pool; a step the pool cannot cover is AARMD_ENOMEM and advances nothing. */
Test(cuda_backend, pool_exhaustion_is_enomem_and_blocks_come_back)
{
    struct aarmd_opt small[] = {{"kv_mb", "1"}};
    struct aarmd_plugin *p = load_cuda(small, 1);
    NEED_GPU(p);
    char err[512];
    struct bc_model l;
    bc_model_synth(&l, "llama", AARMD_TYPE_Q4_0);
    uint32_t nv = l.d->n_vocab;
    struct bc_side a;
    bc_side_open(&a, p, l.d, 65536);
    struct aarmd_kv_info ki = kv_info_of(p, a.m);
    uint64_t per = (uint64_t)l.d->n_layer * 2 * 16 * l.d->n_head_kv * l.d->head_dim * 2;
    cr_assert_eq(ki.block_bytes, per, "block bytes: K and V of every layer for 16 tokens, F16");
    cr_assert_eq(ki.blocks_total, (1u << 20) / per, "kv_mb=1 holds %llu blocks",
                 (unsigned long long)((1u << 20) / per));
    cr_assert(ki.blocks_total >= 2 && ki.blocks_total <= 4096, "test assumes a small pool (%llu blocks)",
              (unsigned long long)ki.blocks_total);
    uint32_t cap = (uint32_t)ki.blocks_total * 16;
    int32_t *toks = malloc((cap + 16) * sizeof(int32_t));
    float *lg = malloc(nv * sizeof(float));
    cr_assert(toks && lg);
    for (uint32_t i = 0; i < cap + 16; i++)
        toks[i] = (int32_t)((i * 29 + 1) % nv);
    /* one token more than the pool holds: refused, nothing taken */
    struct aarmd_batch_entry e = {a.s, toks, cap + 1, 1, lg};
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_ENOMEM);
    cr_assert(strstr(err, "KV pool exhausted"), "%s", err);
    cr_assert_eq(kv_info_of(p, a.m).blocks_free, ki.blocks_total);
    /* exactly the pool: fits */
    e.n_tokens = cap;
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(kv_info_of(p, a.m).blocks_free, 0u);
    /* a second sequence cannot start: refused; both sequences keep their lengths */
    struct aarmd_backend_seq *s2 = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(p, a.m, 64, &s2, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_batch_entry two[2] = {{a.s, toks, 1, 1, lg}, {s2, toks, 1, 1, lg}};
    cr_assert_eq(aarmd_plugin_step(p, a.m, two, 2, err, sizeof err), AARMD_ENOMEM);
    cr_assert_eq(aarmd_plugin_seq_truncate(p, a.s, cap + 1, err, sizeof err), AARMD_EINVAL, "a.s advanced");
    /* truncation gives blocks back at once: now both fit */
    cr_assert_eq(aarmd_plugin_seq_truncate(p, a.s, cap - 16, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(kv_info_of(p, a.m).blocks_free, 1u);
    two[0].n_tokens = 16;
    cr_assert_eq(aarmd_plugin_step(p, a.m, two, 2, err, sizeof err), AARMD_ENOMEM, "needs 2 blocks, 1 free");
    two[0].n_tokens = 1;
    two[1].n_tokens = 1;
    cr_assert_eq(aarmd_plugin_step(p, a.m, two, 2, err, sizeof err), AARMD_ENOMEM, "a.s needs a new block too");
    two[0].n_tokens = 0;
    cr_assert_eq(aarmd_plugin_step(p, a.m, &two[1], 1, err, sizeof err), AARMD_OK, "%s", err);
    aarmd_plugin_seq_free(p, s2);
    cr_assert_eq(kv_info_of(p, a.m).blocks_free, 1u);
    bc_side_close(&a);
    free(toks);
    free(lg);
    bc_model_free(&l);
    aarmd_plugin_free(p);
}

Test(cuda_backend, bad_kv_options_refused)
{
    static const char *const bad[][2] = {{"kv_mb", "0"}, {"kv_mb", "-1"}, {"kv_mb", "x"},
                                         {"q8rows", "65"}, {"wf16", "2"}, {"attn", "x"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct aarmd_opt o[] = {{bad[i][0], bad[i][1]}};
        struct aarmd_plugin *p = load_cuda(o, 1);
        NEED_GPU(p);
        struct aarmd_backend_ctx *ctx = NULL;
        char err[512], want[64];
        cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_EINVAL, "%s=%s", bad[i][0], bad[i][1]);
        snprintf(want, sizeof want, "%s=%s", bad[i][0], bad[i][1]);
        cr_assert(strstr(err, want), "%s", err);
        aarmd_plugin_free(p);
    }
}

/* ABI 1.2: logits buffers from logits_alloc are page-locked and filled straight
 * from the device; they must get exactly what malloc'd buffers get (same
 * batch composition: the forward is the same), in decode graphs, prefill
 * forwards and a step mixing both kinds of buffer. direct_logits=0: none. */
static void three_steps(struct aarmd_plugin *p, struct aarmd_backend_model *m, float *const lg[3], const int32_t *toks,
                        uint32_t nv, float *out)
{
    char err[512];
    struct aarmd_backend_seq *s[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(aarmd_plugin_seq_new(p, m, 64, &s[i], err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_batch_entry e[3];
    for (int i = 0; i < 3; i++)   /* prefill: 5, 6, 7 tokens in one forward */
        e[i] = (struct aarmd_batch_entry){s[i], toks + i, (uint32_t)(5 + i), 1, lg[i]};
    cr_assert_eq(aarmd_plugin_step(p, m, e, 3, err, sizeof err), AARMD_OK, "%s", err);
    for (int i = 0; i < 3; i++)
        memcpy(out + (size_t)i * nv, lg[i], nv * sizeof(float));
    for (int k = 0; k < 4; k++) {   /* decodes: a graph of 3 (bucket 4) */
        for (int i = 0; i < 3; i++)
            e[i] = (struct aarmd_batch_entry){s[i], toks + 10 + k + i, 1, 1, lg[i]};
        cr_assert_eq(aarmd_plugin_step(p, m, e, 3, err, sizeof err), AARMD_OK, "%s", err);
        for (int i = 0; i < 3; i++)
            memcpy(out + (size_t)(3 + 3 * k + i) * nv, lg[i], nv * sizeof(float));
    }
    for (int i = 0; i < 3; i++)
        aarmd_plugin_seq_free(p, s[i]);
}

Test(cuda_backend, pinned_logits_buffers_match_malloc_ones)
{
    struct aarmd_plugin *p = load_cuda(NULL, 0);
    NEED_GPU(p);
    struct bc_model l;
    bc_model_synth(&l, "llama", AARMD_TYPE_Q4_0);
    uint32_t nv = l.d->n_vocab;
    struct bc_side a;
    bc_side_open(&a, p, l.d, 64);
    cr_assert(aarmd_plugin_has_method(p, "logits_alloc"));
    int32_t toks[32];
    for (int i = 0; i < 32; i++)
        toks[i] = (i * 37 + 3) % (int32_t)nv;
    float *pin[3], *heap[3], *mixed[3];
    bool by[3];
    for (int i = 0; i < 3; i++) {
        pin[i] = aarmd_plugin_logits_alloc(p, a.m, nv * sizeof(float), &by[i]);
        cr_assert(pin[i] && by[i], "buffer %d not from the backend", i);
        heap[i] = malloc(nv * sizeof(float));
        cr_assert_not_null(heap[i]);
        mixed[i] = i == 1 ? heap[i] : pin[i];
    }
    size_t n = 15 * (size_t)nv;
    float *want = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
    cr_assert(want && got);
    three_steps(p, a.m, heap, toks, nv, want);
    three_steps(p, a.m, pin, toks, nv, got);
    cr_assert_eq(memcmp(want, got, n * sizeof(float)), 0, "pinned buffers got other logits");
    three_steps(p, a.m, mixed, toks, nv, got);
    cr_assert_eq(memcmp(want, got, n * sizeof(float)), 0, "a step mixing buffers got other logits");
    for (int i = 0; i < 3; i++) {
        aarmd_plugin_logits_free(p, a.m, pin[i], by[i]);
        free(heap[i]);
    }
    free(want);
    free(got);
    bc_side_close(&a);
    bc_model_free(&l);
    aarmd_plugin_free(p);

    struct aarmd_opt off[] = {{"direct_logits", "0"}};
    p = load_cuda(off, 1);
    NEED_GPU(p);
    bc_model_synth(&l, "llama", AARMD_TYPE_Q4_0);
    bc_side_open(&a, p, l.d, 64);
    bool b = true;
    float *q = aarmd_plugin_logits_alloc(p, a.m, 64, &b);
    cr_assert(q && !b, "direct_logits=0 still hands out pinned buffers");
    aarmd_plugin_logits_free(p, a.m, q, b);
    bc_side_close(&a);
    bc_model_free(&l);
    aarmd_plugin_free(p);
}

/* ---- flash attention (attn=fa, attn_fa.cu) against the grouped kernel and the CPU ------------ */

/*
 * Four sequences of 5, 37, 70 and 300 prompt tokens prefilled in one step (tiles
 * of 64 / group tokens, the last one partial; keys split over chunks past 64),
 * a decode step of all four (4 one-token tiles: a graph bucket), then a step
 * mixing 9 more tokens of the first (continuing inside a KV block) with one of
 * each other: attn=fa against attn=grouped and the CPU backend, on shapes with
 * head_dim 16, 32, 64, 128 and 256, groups of 1 to 8 query heads per kv head,
 * gemma3's sliding window (256 of the 300) and an attention softcap. fa1: the same with
 * AARMD_CUDA_FA1=2, every tile of <= 16 rows (the decode step's, the short tail tiles, the
 * one-token tiles of the mixed step) through k_attn_fa1 without a key split; mix: the mixed step
 * in one launch of k_attn_famix (AARMD_CUDA_FA_MIX=2: no key split; head_dim <= 128).
 */
struct fa_case {
    char arch[16];
    uint32_t type;
    uint32_t n_embd, n_head, n_head_kv;   /* 0: gguf-synth's defaults */
    float softcap;                        /* set on the description, 0: none */
    int fa1;                              /* 1: AARMD_CUDA_FA1=2; 2: AARMD_CUDA_FA_MIX=2 */
};

static struct fa_case fa_cases[] = {
    {"llama", AARMD_TYPE_F16, 256, 4, 1, 0.0f, 0},     /* D 64, group 4 */
    {"llama", AARMD_TYPE_F16, 512, 4, 2, 0.0f, 0},     /* D 128, group 2 */
    {"qwen3", AARMD_TYPE_BF16, 256, 8, 2, 0.0f, 0},    /* D 32, group 4, q/k norms */
    {"gemma3", AARMD_TYPE_F32, 0, 0, 0, 8.0f, 0},      /* D 16, sliding window, softcap */
    {"gpt2", AARMD_TYPE_Q8_0, 0, 0, 0, 0.0f, 0},       /* D 16, group 1 (64-token tiles) */
    {"llama", AARMD_TYPE_Q4_K, 512, 2, 1, 0.0f, 0},    /* D 256, group 2 */
    {"llama", AARMD_TYPE_F16, 192, 6, 2, 0.0f, 0},     /* D 32, group 3 (21-token tiles, 63 rows) */
    {"qwen2", AARMD_TYPE_Q8_0, 256, 8, 1, 0.0f, 0},    /* D 32, group 8 (8-token tiles), biases */
    {"llama", AARMD_TYPE_F16, 256, 4, 1, 0.0f, 1},     /* k_attn_fa1: D 64, group 4 */
    {"llama", AARMD_TYPE_F16, 1024, 8, 2, 0.0f, 1},    /* D 128, group 4 (the 8B's) */
    {"gemma3", AARMD_TYPE_F32, 0, 0, 0, 8.0f, 1},      /* D 16, sliding window, softcap */
    {"gpt2", AARMD_TYPE_Q8_0, 0, 0, 0, 0.0f, 1},       /* D 16, group 1: the 5-token tile too */
    {"llama", AARMD_TYPE_Q4_K, 512, 2, 1, 0.0f, 1},    /* D 256, group 2 */
    {"qwen2", AARMD_TYPE_Q8_0, 256, 8, 1, 0.0f, 1},    /* D 32, group 8: two-token tiles of 16 rows */
    {"llama", AARMD_TYPE_F16, 256, 4, 1, 0.0f, 2},     /* k_attn_famix: D 64, group 4 */
    {"llama", AARMD_TYPE_F16, 1024, 8, 2, 0.0f, 2},    /* D 128, group 4 (the 8B's) */
    {"gemma3", AARMD_TYPE_F32, 0, 0, 0, 8.0f, 2},      /* D 16, sliding window, softcap */
    {"gpt2", AARMD_TYPE_Q8_0, 0, 0, 0, 0.0f, 2},       /* D 16, group 1 */
    {"qwen2", AARMD_TYPE_Q8_0, 256, 8, 1, 0.0f, 2},    /* D 32, group 8 */
    {"llama", AARMD_TYPE_Q4_K, 512, 2, 1, 0.0f, 2},    /* D 256: not famix's, the two kernels as before */
};

ParameterizedTestParameters(cuda_backend, fa_attention_matches_grouped_and_cpu)
{
    return cr_make_param_array(struct fa_case, fa_cases, sizeof fa_cases / sizeof fa_cases[0]);
}

ParameterizedTest(struct fa_case *fc, cuda_backend, fa_attention_matches_grouped_and_cpu)
{
    struct aarmd_opt o_fa[] = {{"attn", "fa"}}, o_gr[] = {{"attn", "grouped"}};
    if (fc->fa1)   /* read at the first launch, in this test's process */
        setenv(fc->fa1 == 2 ? "AARMD_CUDA_FA_MIX" : "AARMD_CUDA_FA1", "2", 1);
    struct aarmd_plugin *pl[3] = {load_cuda(o_fa, 1), NULL, NULL};
    NEED_GPU(pl[0]);
    pl[1] = load_cuda(o_gr, 1);
    cr_assert_not_null(pl[1]);
    char err[512];
    struct aarmd_host cpu_host;
    aarmd_plugin_host_init(&cpu_host, NULL, 0, 0);
    cr_assert_eq(aarmd_plugin_load("cpu", NULL, &cpu_host, &pl[2], err, sizeof err), AARMD_OK, "%s", err);

    struct bc_model l;
    struct aarmd_synth_opts so;
    memset(&so, 0, sizeof so);
    so.arch = fc->arch;
    so.type = fc->type;
    so.n_embd = fc->n_embd;
    so.n_head = fc->n_head;
    so.n_head_kv = fc->n_head_kv;
    so.n_vocab = 512;
    so.seed = 11;
    snprintf(l.path, sizeof l.path, "/tmp/aarmd-test-%d-fa-%s-%u.gguf", (int)getpid(), fc->arch, fc->type);
    cr_assert_eq(aarmd_gguf_synth(&so, l.path, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_gguf_open(l.path, &l.g, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_model_desc_from_gguf(l.g, &l.d, err, sizeof err), AARMD_OK, "%s", err);
    l.d->attn_logit_softcap = fc->softcap;
    uint32_t nv = l.d->n_vocab;

    enum { NS = 4, MAXP = 300 };
    static const uint32_t len[NS] = {5, 37, 70, 300};
    static int32_t toks[NS][MAXP];
    for (int s = 0; s < NS; s++)
        for (int i = 0; i < MAXP; i++)
            toks[s][i] = (int32_t)((i * 37 + s * 101 + 5) % (int)nv);
    struct bc_side side[3];
    struct aarmd_backend_seq *sq[3][NS];
    float *lg[3][NS];
    for (int b = 0; b < 3; b++) {
        bc_side_open(&side[b], pl[b], l.d, 320);
        sq[b][0] = side[b].s;
        for (int s = 1; s < NS; s++)
            cr_assert_eq(aarmd_plugin_seq_new(pl[b], side[b].m, 320, &sq[b][s], err, sizeof err), AARMD_OK, "%s",
                         err);
        for (int s = 0; s < NS; s++) {
            lg[b][s] = malloc(nv * sizeof(float));
            cr_assert_not_null(lg[b][s]);
        }
    }
    const char *name[3] = {"fa", "grouped", "cpu"};
    for (int step = 0; step < 3; step++) {
        for (int b = 0; b < 3; b++) {
            struct aarmd_batch_entry e[NS];
            for (int s = 0; s < NS; s++) {
                const int32_t *tk = toks[s];
                uint32_t n = len[s];
                if (step == 1) {
                    tk = &toks[s][(s * 7 + 1) % MAXP];
                    n = 1;
                } else if (step == 2) {
                    tk = &toks[(s + 1) % NS][20];
                    n = s == 0 ? 9 : 1;
                }
                e[s] = (struct aarmd_batch_entry){sq[b][s], tk, n, 1, lg[b][s]};
            }
            cr_assert_eq(aarmd_plugin_step(pl[b], side[b].m, e, NS, err, sizeof err), AARMD_OK, "%s: %s", name[b],
                         err);
        }
        for (int s = 0; s < NS; s++) {
            for (uint32_t k = 0; k < nv; k++)
                cr_assert(isfinite(lg[0][s][k]), "%s: step %d seq %d: logit %u not finite", fc->arch, step, s, k);
            double rg = max_rel(lg[0][s], lg[1][s], nv), rc = max_rel(lg[0][s], lg[2][s], nv);
            double gc = max_rel(lg[1][s], lg[2][s], nv);
            cr_log_info("fa%s %s type %u D %u: step %d seq %d: fa-grouped %.3g fa-cpu %.3g grouped-cpu %.3g",
                        fc->fa1 == 2 ? "mix" : fc->fa1 ? "1" : "", fc->arch, fc->type, l.d->head_dim, step, s, rg,
                        rc, gc);
            cr_expect(rg < 0.03, "%s type %u step %d seq %d: fa vs grouped rel %g (grouped-cpu %g)", fc->arch,
                      fc->type, step, s, rg, gc);
            cr_expect(rc < 0.06, "%s type %u step %d seq %d: fa vs cpu rel %g", fc->arch, fc->type, step, s, rc);
        }
    }
    cr_expect(max_rel(lg[0][0], lg[0][3], nv) > 1e-4, "two different sequences gave the same logits");
    for (int b = 0; b < 3; b++) {
        for (int s = 1; s < NS; s++)
            aarmd_plugin_seq_free(pl[b], sq[b][s]);
        bc_side_close(&side[b]);
        for (int s = 0; s < NS; s++)
            free(lg[b][s]);
        aarmd_plugin_free(pl[b]);
    }
    bc_model_free(&l);
}

/* attn=fa is accepted; a misspelt value is refused with a message naming the three kinds. */
Test(cuda_backend, attn_option_values)
{
    char err[512];
    struct aarmd_opt good[] = {{"attn", "fa"}}, bad[] = {{"attn", "flash"}};
    struct aarmd_plugin *p = load_cuda(good, 1);
    NEED_GPU(p);
    struct aarmd_backend_ctx *ctx = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);
    aarmd_plugin_ctx_free(p, ctx);
    aarmd_plugin_free(p);
    p = load_cuda(bad, 1);
    cr_assert_not_null(p);
    ctx = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_EINVAL);
    cr_expect(strstr(err, "attn=flash: expected fa, grouped or heads") != NULL, "%s", err);
    aarmd_plugin_free(p);
}
