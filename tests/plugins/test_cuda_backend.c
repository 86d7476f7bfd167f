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

static struct aarmd_host host;
static char load_err[1024];

/* The CUDA plugin, or NULL with load_err set (no plugin built, or no device). */
static struct aarmd_plugin *load_cuda(const struct aarmd_opt *opts, uint32_t n_opts)
{
    struct aarmd_plugin *p = NULL;
    aarmd_plugin_host_init(&host, opts, n_opts, 0);
    if (aarmd_plugin_load("cuda", NULL, &host, &p, load_err, sizeof load_err) != AARMD_OK)
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
    struct aarmd_backend_ctx *ctx = NULL;
    char err[512];
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_device_info info;
    cr_assert_eq(aarmd_plugin_device_info(p, ctx, &info, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_str_eq(info.memory_architecture, "vram-only");
    cr_assert_str_eq(info.worker_type, "bespoke-cuda");
    cr_assert_eq(info.advised_seqs, 8u);
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
    char err[512];
    struct aarmd_opt o1[] = {{"no_such_option", "1"}};
    struct aarmd_plugin *p = load_cuda(o1, 1);
    NEED_GPU(p);
    struct aarmd_backend_ctx *ctx = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "unknown backend option no_such_option"), "%s", err);
    aarmd_plugin_free(p);
    struct aarmd_opt o2[] = {{"batch", "0"}};
    p = load_cuda(o2, 1);
    cr_assert_not_null(p);
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "batch=0"), "%s", err);
    aarmd_plugin_free(p);
    /* the kernel-choice switches take 0 or 1 only */
    struct aarmd_opt o3[] = {{"pdl", "3"}};
    p = load_cuda(o3, 1);
    cr_assert_not_null(p);
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "pdl=3"), "%s", err);
    aarmd_plugin_free(p);
    struct aarmd_opt o4[] = {{"mvf", "8"}};
    p = load_cuda(o4, 1);
    cr_assert_not_null(p);
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "mvf=8"), "%s", err);
    aarmd_plugin_free(p);
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
    char err[512];
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        struct bc_model l;
        bc_model_synth(&l, ti % 2 ? "qwen3" : "llama", types[ti]);
        uint32_t nv = l.d->n_vocab;
        float *a = malloc(nv * sizeof(float)), *b = malloc(nv * sizeof(float));
        cr_assert(a && b);
        struct bc_side sf, so;
        bc_side_open(&sf, pf, l.d, 64);
        bc_side_open(&so, po, l.d, 64);
        int32_t toks[11];
        for (int i = 0; i < 11; i++)
            toks[i] = (int32_t)((i * 71 + 9) % (int)nv);
        for (int step = 0; step < 5; step++) {   /* a prompt of 11 (chunks 3,3,3,2), then 4 decodes */
            int32_t next = (int32_t)((step * 113 + 1) % (int)nv);
            struct aarmd_batch_entry ef = {sf.s, step ? &next : toks, step ? 1u : 11u, 1, a};
            struct aarmd_batch_entry eo = {so.s, step ? &next : toks, step ? 1u : 11u, 1, b};
            cr_assert_eq(aarmd_plugin_step(pf, sf.m, &ef, 1, err, sizeof err), AARMD_OK, "%s", err);
            cr_assert_eq(aarmd_plugin_step(po, so.m, &eo, 1, err, sizeof err), AARMD_OK, "%s", err);
            for (uint32_t k = 0; k < nv; k++)
                cr_assert(isfinite(a[k]), "type %u step %d: logit %u not finite", types[ti], step, k);
            double r = max_rel(a, b, nv);
            cr_expect(r < 2e-3, "type %u step %d: v5 vs v4 kernels rel %g", types[ti], step, r);
        }
        bc_side_close(&sf);
        bc_side_close(&so);
        free(a);
        free(b);
        bc_model_free(&l);
    }
    aarmd_plugin_free(pf);
    aarmd_plugin_free(po);
}
