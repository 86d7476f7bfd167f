/*
 * test_backend_metal.c — the Metal plugin through the real loader (macOS):
 * device info, options, logits against the CPU backend on synthetic models of
 * every arch and weight type, bad inputs refused. Off macOS the plugin found
 * is tests/metal/fake's build of the same backend_metal.m over a CPU stand-in
 * for Metal (kernels through the harness); nothing here has yet run on a Mac.
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

/* The Metal plugin, or NULL with load_err set (not built, or no device). */
static struct aarmd_plugin *load_metal(const struct aarmd_opt *opts, uint32_t n_opts)
{
    struct aarmd_plugin *p = NULL;
    aarmd_plugin_host_init(&host, opts, n_opts, 0);
    if (aarmd_plugin_load("metal", NULL, &host, &p, load_err, sizeof load_err) != AARMD_OK)
        return NULL;
    return p;
}

static int plugin_missing(void)
{
    return strstr(load_err, "not found") != NULL || strstr(load_err, "No such file") != NULL;
}

#define NEED_GPU(p)                                                              \
    do {                                                                         \
        if (!(p)) {                                                              \
            if (plugin_missing())                                                \
                cr_skip_test("Metal plugin not built (macOS only): %s", load_err); \
            cr_skip_test("no Metal device: %s", load_err);                       \
        }                                                                        \
    } while (0)

/* The probe's refusal: observable with the fake device (it honours
 * AARMD_FAKE_METAL_NO_DEVICE); on a Mac with a GPU the test skips. */
Test(metal_backend, probe_refuses_without_a_device)
{
    setenv("AARMD_FAKE_METAL_NO_DEVICE", "1", 1);
    struct aarmd_plugin *p = load_metal(NULL, 0);
    unsetenv("AARMD_FAKE_METAL_NO_DEVICE");
    if (p) {
        aarmd_plugin_free(p);
        cr_skip_test("a Metal device is present: the refusal cannot be observed here");
    }
    if (plugin_missing())
        cr_skip_test("Metal plugin not built: %s", load_err);
    cr_assert(strstr(load_err, "no Metal device") != NULL, "refusal should say 'no Metal device': %s", load_err);
}

Test(metal_backend, table_and_device_info)
{
    struct aarmd_plugin *p = load_metal(NULL, 0);
    NEED_GPU(p);
    const struct aarmd_backend *t = aarmd_plugin_table(p);
    cr_assert_str_eq(t->name, "metal");
    cr_assert(aarmd_plugin_has_method(p, "seq_truncate"));
    struct aarmd_backend_ctx *ctx = NULL;
    char err[512];
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_device_info info;
    cr_assert_eq(aarmd_plugin_device_info(p, ctx, &info, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_str_eq(info.memory_architecture, "unified");
    cr_assert_str_eq(info.worker_type, "apple-metal");
    cr_assert(info.memory_total > 0 && info.memory_free <= info.memory_total);
    cr_assert(strlen(info.name) > 0);
    struct aarmd_backend_ctx *bad = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 4096, &bad, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "does not exist"), "%s", err);
    aarmd_plugin_ctx_free(p, ctx);
    aarmd_plugin_free(p);
}

Test(metal_backend, unknown_and_bad_options_refused)
{
    char err[512];
    struct aarmd_opt o1[] = {{"no_such_option", "1"}};
    struct aarmd_plugin *p = load_metal(o1, 1);
    NEED_GPU(p);
    struct aarmd_backend_ctx *ctx = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "no_such_option"), "%s", err);
    aarmd_plugin_free(p);
    struct aarmd_opt o2[] = {{"batch", "0"}};
    p = load_metal(o2, 1);
    cr_assert_not_null(p);
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "batch=0"), "%s", err);
    aarmd_plugin_free(p);
    struct aarmd_opt o3[] = {{"weights", "sideways"}};
    p = load_metal(o3, 1);
    cr_assert_not_null(p);
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "weights=sideways"), "%s", err);
    aarmd_plugin_free(p);
}

/* ---- models from gguf-synth ---------------------------------------------------- */

/* The CUDA test's cases and bounds (backend_compare.h): NOT YET MEASURED on
 * Apple hardware; the Metal matvec uses F32 activations and an F16 KV cache. */
static struct bc_case cases[] = {BC_CASES};

ParameterizedTestParameters(metal_backend, matches_cpu)
{
    return cr_make_param_array(struct bc_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bc_case *c, metal_backend, matches_cpu)
{
    struct aarmd_plugin *p = load_metal(NULL, 0);
    NEED_GPU(p);
    bc_match_cpu(p, c);
    aarmd_plugin_free(p);
}

/* Weights copied instead of used in place, and kernels compiled from the
 * embedded source instead of the metallib: the same logits as the default. */
Test(metal_backend, copy_and_source_paths_agree)
{
    struct aarmd_plugin *p = load_metal(NULL, 0);
    NEED_GPU(p);
    aarmd_plugin_free(p);
    struct aarmd_opt o[] = {{"weights", "copy"}, {"library", "source"}};
    struct aarmd_plugin *pa = load_metal(NULL, 0);
    cr_assert_not_null(pa, "%s", load_err);
    struct aarmd_host host_b;
    struct aarmd_plugin *pb = NULL;
    char err[512];
    aarmd_plugin_host_init(&host_b, o, 2, 0);
    cr_assert_eq(aarmd_plugin_load("metal", NULL, &host_b, &pb, err, sizeof err), AARMD_OK, "%s", err);
    struct bc_model l;
    bc_model_synth(&l, "llama", AARMD_TYPE_Q4_K);
    struct bc_side a, b;
    bc_side_open(&a, pa, l.d, 16);
    bc_side_open(&b, pb, l.d, 16);
    uint32_t nv = l.d->n_vocab;
    float *la = malloc(nv * sizeof(float)), *lb = malloc(nv * sizeof(float));
    int32_t prompt[7] = {1, 9, 30, 4, 77, 5, 2};
    struct aarmd_batch_entry ea = {a.s, prompt, 7, 1, la}, eb = {b.s, prompt, 7, 1, lb};
    cr_assert_eq(aarmd_plugin_step(pa, a.m, &ea, 1, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_step(pb, b.m, &eb, 1, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert(memcmp(la, lb, nv * sizeof(float)) == 0, "weights=copy library=source changed the logits");
    free(la);
    free(lb);
    bc_side_close(&a);
    bc_side_close(&b);
    bc_model_free(&l);
    aarmd_plugin_free(pa);
    aarmd_plugin_free(pb);
}

/* Two sequences in one step (decode of one, prefill of the other) equal each run alone. */
Test(metal_backend, batched_step_matches_single)
{
    struct aarmd_plugin *p = load_metal(NULL, 0);
    NEED_GPU(p);
    char err[512];
    struct bc_model l;
    bc_model_synth(&l, "qwen2", AARMD_TYPE_Q8_0);
    struct bc_side a, b;
    bc_side_open(&a, p, l.d, 32);
    b = a;   /* a second sequence of the same model */
    cr_assert_eq(aarmd_plugin_seq_new(p, a.m, 32, &b.s, err, sizeof err), AARMD_OK, "%s", err);
    uint32_t nv = l.d->n_vocab;
    float *l1 = malloc(nv * sizeof(float)), *l2 = malloc(nv * sizeof(float));
    float *r1 = malloc(nv * sizeof(float)), *r2 = malloc(nv * sizeof(float));
    int32_t pa[3] = {3, 1, 4}, pb[5] = {1, 5, 9, 2, 6}, nxt = 7;
    struct aarmd_batch_entry e = {a.s, pa, 3, 0, NULL};
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_batch_entry both[2] = {{a.s, &nxt, 1, 1, l1}, {b.s, pb, 5, 1, l2}};
    cr_assert_eq(aarmd_plugin_step(p, a.m, both, 2, err, sizeof err), AARMD_OK, "%s", err);
    /* the same work one sequence at a time, on fresh sequences */
    cr_assert_eq(aarmd_plugin_seq_truncate(p, a.s, 0, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_truncate(p, b.s, 0, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_batch_entry s1 = {a.s, pa, 3, 0, NULL}, s2 = {a.s, &nxt, 1, 1, r1}, s3 = {b.s, pb, 5, 1, r2};
    cr_assert_eq(aarmd_plugin_step(p, a.m, &s1, 1, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_step(p, a.m, &s2, 1, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_step(p, a.m, &s3, 1, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert(memcmp(l1, r1, nv * sizeof(float)) == 0, "decode logits changed by batching");
    cr_assert(memcmp(l2, r2, nv * sizeof(float)) == 0, "prefill logits changed by batching");
    free(l1);
    free(l2);
    free(r1);
    free(r2);
    aarmd_plugin_seq_free(p, b.s);
    bc_side_close(&a);
    bc_model_free(&l);
    aarmd_plugin_free(p);
}

Test(metal_backend, bad_inputs_refused)
{
    struct aarmd_plugin *p = load_metal(NULL, 0);
    NEED_GPU(p);
    char err[512];
    struct bc_model l;
    bc_model_synth(&l, "llama", AARMD_TYPE_F32);
    struct bc_side a;
    bc_side_open(&a, p, l.d, 4);
    float *lg = malloc(l.d->n_vocab * sizeof(float));
    int32_t bad = (int32_t)l.d->n_vocab, ok[5] = {1, 2, 3, 4, 5};
    struct aarmd_batch_entry e = {a.s, &bad, 1, 1, lg};
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_EINVAL);
    e.tokens = ok;
    e.n_tokens = 5;   /* n_ctx is 4 */
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_EINVAL);
    e.n_tokens = 4;   /* nothing advanced: four tokens still fit */
    cr_assert_eq(aarmd_plugin_step(p, a.m, &e, 1, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_truncate(p, a.s, 5, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "holds 4"), "%s", err);
    /* models */
    struct aarmd_backend_ctx *ctx = NULL;
    struct aarmd_backend_model *m = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_model_desc d = *l.d;
    struct aarmd_tensor *t = malloc(d.n_tensors * sizeof *t);
    memcpy(t, l.d->tensors, d.n_tensors * sizeof *t);
    d.tensors = t;
    uint32_t qi = 0;
    while (t[qi].role != AARMD_ROLE_ATTN_Q)
        qi++;
    t[qi].type = AARMD_TYPE_Q2_K;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EUNSUPPORTED);
    cr_assert(strstr(err, t[qi].name), "%s", err);
    t[qi] = l.d->tensors[qi];
    d.n_tensors = qi;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "missing tensor"), "%s", err);
    d.n_tensors = l.d->n_tensors;
    d.head_dim = 512;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EUNSUPPORTED);
    cr_assert(strstr(err, "head_dim 512"), "%s", err);
    d.head_dim = l.d->head_dim;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert(aarmd_plugin_model_bytes(p, m) > 0);
    aarmd_plugin_model_free(p, m);
    free(t);
    aarmd_plugin_ctx_free(p, ctx);
    free(lg);
    bc_side_close(&a);
    bc_model_free(&l);
    aarmd_plugin_free(p);
}
