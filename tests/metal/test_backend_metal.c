/*
 * test_backend_metal.c — the Metal plugin through the real loader (macOS):
 * device info, options, logits against the CPU backend on synthetic models of
 * every arch and weight type, bad inputs refused, the paged KV cache (kv_info
 * accounting, ENOMEM advancing nothing, seq_fork sharing blocks, copy on
 * write). Off macOS the plugin found is tests/metal/fake's build of the same
 * backend_metal.m over a CPU stand-in for Metal (kernels through the
 * harness); nothing here has yet run on a Mac.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stddef.h>
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

/* ---- paged KV (ABI 1.1) ---------------------------------------------------------- */

/* The Metal plugin with options, a context and `arch`/`type` loaded on it. */
struct pg {
    struct aarmd_plugin *p;
    struct aarmd_host host;
    struct aarmd_backend_ctx *ctx;
    struct aarmd_backend_model *m;
    struct bc_model l;
    uint32_t nv;
};

static int pg_open(struct pg *g, const struct aarmd_opt *opts, uint32_t n_opts, const char *arch, uint32_t type)
{
    char err[512];
    memset(g, 0, sizeof *g);
    aarmd_plugin_host_init(&g->host, opts, n_opts, 0);
    if (aarmd_plugin_load("metal", NULL, &g->host, &g->p, load_err, sizeof load_err) != AARMD_OK)
        return -1;
    cr_assert_eq(aarmd_plugin_ctx_new(g->p, 0, &g->ctx, err, sizeof err), AARMD_OK, "%s", err);
    bc_model_synth(&g->l, arch, type);
    unlink(g->l.path);   /* mapped already: nothing is left behind if an assertion ends the test */
    cr_assert_eq(aarmd_plugin_model_load(g->p, g->ctx, g->l.d, NULL, NULL, &g->m, err, sizeof err), AARMD_OK, "%s", err);
    g->nv = g->l.d->n_vocab;
    return 0;
}

static void pg_close(struct pg *g)
{
    aarmd_plugin_model_free(g->p, g->m);
    aarmd_plugin_ctx_free(g->p, g->ctx);
    bc_model_free(&g->l);
    aarmd_plugin_free(g->p);
}

static struct aarmd_kv_info pg_info(struct pg *g)
{
    char err[512];
    struct aarmd_kv_info k;
    cr_assert_eq(aarmd_plugin_kv_info(g->p, g->m, &k, err, sizeof err), AARMD_OK, "%s", err);
    return k;
}

static struct aarmd_backend_seq *pg_seq(struct pg *g, uint32_t n_ctx)
{
    char err[512];
    struct aarmd_backend_seq *s = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(g->p, g->m, n_ctx, &s, err, sizeof err), AARMD_OK, "%s", err);
    return s;
}

/* One entry's step; logits into `lg` when non-NULL. Returns the status. */
static int pg_step(struct pg *g, struct aarmd_backend_seq *s, const int32_t *tok, uint32_t n, float *lg, char *err)
{
    struct aarmd_batch_entry e = {s, tok, n, lg != NULL, lg};
    return aarmd_plugin_step(g->p, g->m, &e, 1, err, 512);
}

#define PG_STEP_OK(g, s, tok, n, lg)                                                 \
    do {                                                                             \
        char e_[512];                                                                \
        cr_assert_eq(pg_step((g), (s), (tok), (n), (lg), e_), AARMD_OK, "%s", e_);   \
    } while (0)

Test(metal_backend, kv_info_and_options)
{
    struct pg g;
    if (pg_open(&g, NULL, 0, "llama", AARMD_TYPE_F32))
        NEED_GPU(NULL);
    cr_assert(aarmd_plugin_has_method(g.p, "kv_info"));
    cr_assert(aarmd_plugin_has_method(g.p, "seq_fork"));
    const struct aarmd_model_desc *d = g.l.d;
    uint64_t kv_dim = (uint64_t)d->n_head_kv * d->head_dim;
    struct aarmd_kv_info k = pg_info(&g);
    cr_assert_eq(k.block_tokens, 16u, "default block");
    cr_assert_eq(k.block_bytes, 2ull * d->n_layer * 16 * kv_dim * 2, "F16 K and V of every layer");
    /* default pool: 4 sequences of the trained context (the fake device's working set is ample) */
    cr_assert_eq(k.blocks_total, 4ull * ((d->n_ctx_train + 15) / 16), "blocks %llu, n_ctx_train %u",
                 (unsigned long long)k.blocks_total, d->n_ctx_train);
    cr_assert_eq(k.blocks_free, k.blocks_total);
    cr_assert(aarmd_plugin_model_bytes(g.p, g.m) >= k.blocks_total * k.block_bytes, "model_bytes counts the pool");
    /* a struct_size smaller than ours is filled only that far */
    struct aarmd_kv_info small;
    memset(&small, 0xab, sizeof small);
    small.struct_size = offsetof(struct aarmd_kv_info, blocks_total);
    char err[512];
    const struct aarmd_backend *t = aarmd_plugin_table(g.p);
    cr_assert_eq(t->kv_info(g.m, &small, err, sizeof err), AARMD_OK);
    cr_assert_eq(small.block_tokens, 16u);
    cr_assert_eq(small.blocks_total, 0xababababababababull, "wrote past struct_size");
    pg_close(&g);

    struct aarmd_opt o1[] = {{"kv_block", "8"}, {"kv_mb", "1"}};
    cr_assert_eq(pg_open(&g, o1, 2, "llama", AARMD_TYPE_F32), 0, "%s", load_err);
    k = pg_info(&g);
    cr_assert_eq(k.block_tokens, 8u);
    cr_assert_eq(k.block_bytes, 2ull * d->n_layer * 8 * kv_dim * 2);
    cr_assert_eq(k.blocks_total, (1ull << 20) / k.block_bytes);
    pg_close(&g);
    struct aarmd_opt o2[] = {{"kv_mb", "1"}, {"kv_blocks", "5"}};
    cr_assert_eq(pg_open(&g, o2, 2, "llama", AARMD_TYPE_F32), 0, "%s", load_err);
    cr_assert_eq(pg_info(&g).blocks_total, 5u, "kv_blocks wins over kv_mb");
    pg_close(&g);

    /* bad values: refused at ctx_new, naming the option */
    static const struct aarmd_opt bad[] = {{"kv_block", "3"},  {"kv_block", "0"},   {"kv_block", "2048"},
                                           {"kv_mb", "0"},     {"kv_mb", "many"},   {"kv_blocks", "0"},
                                           {"kv_blocks", "-1"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct aarmd_host h;
        struct aarmd_plugin *p = NULL;
        struct aarmd_backend_ctx *ctx = NULL;
        aarmd_plugin_host_init(&h, &bad[i], 1, 0);
        cr_assert_eq(aarmd_plugin_load("metal", NULL, &h, &p, err, sizeof err), AARMD_OK, "%s", err);
        cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_EINVAL, "%s=%s accepted", bad[i].key,
                     bad[i].value);
        char want[64];
        snprintf(want, sizeof want, "%s=%s", bad[i].key, bad[i].value);
        cr_assert(strstr(err, want), "'%s' should name %s", err, want);
        aarmd_plugin_free(p);
    }
}

/* Pools that cannot be made are refused at model load, saying why. */
Test(metal_backend, kv_pool_refusals)
{
    char err[512];
    struct aarmd_opt big[] = {{"kv_blocks", "4294967294"}};
    struct aarmd_plugin *p = load_metal(big, 1);
    NEED_GPU(p);
    struct bc_model l;
    bc_model_synth(&l, "llama", AARMD_TYPE_F32);
    unlink(l.path);
    struct aarmd_backend_ctx *ctx = NULL;
    struct aarmd_backend_model *m = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, l.d, NULL, NULL, &m, err, sizeof err), AARMD_EUNSUPPORTED);
    cr_assert(strstr(err, "maxBufferLength"), "%s", err);
    cr_assert_null(m);
    aarmd_plugin_ctx_free(p, ctx);
    aarmd_plugin_free(p);
    bc_model_free(&l);
    /* 1 MiB cannot hold one 1024-token block of a 4-layer model with kv_dim 128 (2 MiB) */
    struct aarmd_opt small[] = {{"kv_mb", "1"}, {"kv_block", "1024"}};
    p = load_metal(small, 2);
    cr_assert_not_null(p, "%s", load_err);
    struct aarmd_synth_opts so;
    memset(&so, 0, sizeof so);
    so.arch = "llama";
    so.type = AARMD_TYPE_F16;
    so.n_layer = 4;
    so.n_embd = 256;
    so.n_vocab = 64;
    so.seed = 3;
    snprintf(l.path, sizeof l.path, "/tmp/aarmd-test-%d-kvmb.gguf", (int)getpid());
    cr_assert_eq(aarmd_gguf_synth(&so, l.path, err, sizeof err), AARMD_OK, "%s", err);
    int orc = aarmd_gguf_open(l.path, &l.g, err, sizeof err);
    unlink(l.path);
    cr_assert_eq(orc, AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_model_desc_from_gguf(l.g, &l.d, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(l.d->n_head_kv * l.d->head_dim, 128u);
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, l.d, NULL, NULL, &m, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "kv_mb=1 holds no KV block"), "%s", err);
    aarmd_plugin_ctx_free(p, ctx);
    aarmd_plugin_free(p);
    bc_model_free(&l);
}

/* seq_new takes nothing; steps take blocks as sequences grow; truncate and
 * free give them back; a step the pool cannot hold is ENOMEM and advances no
 * sequence of it, and the same work succeeds once blocks are freed. */
Test(metal_backend, kv_accounting_and_enomem)
{
    struct pg g;
    struct aarmd_opt o[] = {{"kv_block", "4"}, {"kv_blocks", "6"}};
    if (pg_open(&g, o, 2, "llama", AARMD_TYPE_F32))
        NEED_GPU(NULL);
    char err[512];
    int32_t toks[32];
    for (int i = 0; i < 32; i++)
        toks[i] = (i * 37 + 11) % (int)g.nv;
    struct aarmd_backend_seq *a = pg_seq(&g, 64), *b = pg_seq(&g, 64);
    cr_assert_eq(pg_info(&g).blocks_free, 6u, "seq_new takes no blocks");
    PG_STEP_OK(&g, a, toks, 5, NULL);
    cr_assert_eq(pg_info(&g).blocks_free, 4u, "5 tokens: 2 blocks");
    PG_STEP_OK(&g, a, toks + 5, 3, NULL);
    cr_assert_eq(pg_info(&g).blocks_free, 4u, "8 tokens still 2 blocks");
    PG_STEP_OK(&g, a, toks + 8, 1, NULL);
    cr_assert_eq(pg_info(&g).blocks_free, 3u);
    /* b wants 4 blocks, 3 are free: ENOMEM; in a step with a, neither advances */
    cr_assert_eq(pg_step(&g, b, toks, 13, NULL, err), AARMD_ENOMEM);
    cr_assert(strstr(err, "KV pool"), "%s", err);
    struct aarmd_batch_entry both[2] = {{a, toks + 9, 1, 0, NULL}, {b, toks, 13, 0, NULL}};
    cr_assert_eq(aarmd_plugin_step(g.p, g.m, both, 2, err, sizeof err), AARMD_ENOMEM);
    cr_assert_eq(pg_info(&g).blocks_free, 3u, "a refused step takes nothing");
    /* a is still at 9 tokens: truncating to 9 is fine, to 10 is not */
    cr_assert_eq(aarmd_plugin_seq_truncate(g.p, a, 10, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "holds 9"), "%s", err);
    /* and its next logits are those of a sequence that never saw the refusal */
    float *la = malloc(g.nv * sizeof(float)), *lr = malloc(g.nv * sizeof(float));
    PG_STEP_OK(&g, a, toks + 9, 1, la);   /* 10 tokens: 3 blocks */
    cr_assert_eq(pg_info(&g).blocks_free, 3u);
    aarmd_plugin_seq_truncate(g.p, a, 4, err, sizeof err);
    cr_assert_eq(pg_info(&g).blocks_free, 5u, "truncate to 4 keeps 1 block");
    aarmd_plugin_seq_free(g.p, a);
    cr_assert_eq(pg_info(&g).blocks_free, 6u, "free gives every block back");
    struct aarmd_backend_seq *r = pg_seq(&g, 64);
    PG_STEP_OK(&g, r, toks, 5, NULL);
    PG_STEP_OK(&g, r, toks + 5, 3, NULL);
    PG_STEP_OK(&g, r, toks + 8, 1, NULL);
    PG_STEP_OK(&g, r, toks + 9, 1, lr);
    cr_assert(memcmp(la, lr, g.nv * sizeof(float)) == 0, "the refused steps changed a's cache");
    aarmd_plugin_seq_free(g.p, r);
    /* b's 13 tokens fit now; 24 more would not (n_ctx allows it, the pool does not) */
    PG_STEP_OK(&g, b, toks, 13, NULL);
    cr_assert_eq(pg_info(&g).blocks_free, 2u);
    cr_assert_eq(pg_step(&g, b, toks, 24, NULL, err), AARMD_ENOMEM);
    cr_assert_eq(pg_info(&g).blocks_free, 2u);
    PG_STEP_OK(&g, b, toks, 11, NULL);   /* exactly 24 tokens: all 6 blocks */
    cr_assert_eq(pg_info(&g).blocks_free, 0u);
    cr_assert_eq(pg_step(&g, b, toks, 1, NULL, err), AARMD_ENOMEM);
    aarmd_plugin_seq_free(g.p, b);
    cr_assert_eq(pg_info(&g).blocks_free, 6u);
    free(la);
    free(lr);
    pg_close(&g);
}

/* A fork shares the source's blocks (no block taken) and continues exactly as
 * a sequence that computed the prefix itself; the source keeps growing, is
 * truncated into a shared block (copy on write: the fork is unaffected) and
 * freed before the fork. */
Test(metal_backend, fork_shares_blocks)
{
    struct pg g;
    struct aarmd_opt o[] = {{"kv_block", "4"}, {"kv_blocks", "64"}};
    if (pg_open(&g, o, 2, "qwen3", AARMD_TYPE_Q8_0))
        NEED_GPU(NULL);
    char err[512];
    const int32_t pre[8] = {3, 14, 15, 92, 65, 35, 89, 79};
    const int32_t x = 32, y = 38, z[3] = {46, 26, 43}, w = 83;
    float *lb = malloc(g.nv * sizeof(float)), *lc = malloc(g.nv * sizeof(float));
    struct aarmd_backend_seq *a = pg_seq(&g, 40), *b = NULL, *c = pg_seq(&g, 40), *dd = pg_seq(&g, 40);
    PG_STEP_OK(&g, a, pre, 8, NULL);
    PG_STEP_OK(&g, c, pre, 8, NULL);   /* the reference computes the prefix itself */
    uint64_t free0 = pg_info(&g).blocks_free;
    /* refusals */
    cr_assert_eq(aarmd_plugin_seq_fork(g.p, a, 6, 40, &b, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "multiple"), "%s", err);
    cr_assert_eq(aarmd_plugin_seq_fork(g.p, a, 12, 40, &b, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "holds 8"), "%s", err);
    cr_assert_eq(aarmd_plugin_seq_fork(g.p, a, 8, 4, &b, err, sizeof err), AARMD_EINVAL);
    cr_assert_eq(aarmd_plugin_seq_fork(g.p, a, 8, 0, &b, err, sizeof err), AARMD_EINVAL);
    cr_assert_null(b);
    cr_assert_eq(pg_info(&g).blocks_free, free0);
    cr_assert_eq(aarmd_plugin_seq_fork(g.p, a, 8, 40, &b, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(pg_info(&g).blocks_free, free0, "a fork takes no block");
    PG_STEP_OK(&g, b, &x, 1, lb);
    PG_STEP_OK(&g, c, &x, 1, lc);
    cr_assert(memcmp(lb, lc, g.nv * sizeof(float)) == 0, "fork's first decode differs from the reference");
    cr_assert_eq(pg_info(&g).blocks_free, free0 - 2, "fork and reference each took a block for position 8");
    /* the source grows past the fork point with other tokens */
    PG_STEP_OK(&g, a, z, 3, NULL);
    PG_STEP_OK(&g, b, &y, 1, lb);
    PG_STEP_OK(&g, c, &y, 1, lc);
    cr_assert(memcmp(lb, lc, g.nv * sizeof(float)) == 0, "the source's growth changed the fork");
    /* the source truncated into its shared second block, then written: copy on write */
    cr_assert_eq(aarmd_plugin_seq_truncate(g.p, a, 6, err, sizeof err), AARMD_OK, "%s", err);
    uint64_t before = pg_info(&g).blocks_free;
    float *la = malloc(g.nv * sizeof(float)), *ld = malloc(g.nv * sizeof(float));
    PG_STEP_OK(&g, a, z, 3, la);
    cr_assert_eq(pg_info(&g).blocks_free, before - 2, "a private copy of block 1 and a new block 2");
    PG_STEP_OK(&g, dd, pre, 8, NULL);   /* the same history without sharing */
    aarmd_plugin_seq_truncate(g.p, dd, 6, err, sizeof err);
    PG_STEP_OK(&g, dd, z, 3, ld);
    cr_assert(memcmp(la, ld, g.nv * sizeof(float)) == 0, "copy on write lost the source's rows");
    PG_STEP_OK(&g, b, &w, 1, lb);
    PG_STEP_OK(&g, c, &w, 1, lc);
    cr_assert(memcmp(lb, lc, g.nv * sizeof(float)) == 0, "the source's write reached the fork's shared block");
    /* the source freed first: the fork keeps its blocks */
    aarmd_plugin_seq_free(g.p, a);
    PG_STEP_OK(&g, b, &x, 1, lb);
    PG_STEP_OK(&g, c, &x, 1, lc);
    cr_assert(memcmp(lb, lc, g.nv * sizeof(float)) == 0, "freeing the source changed the fork");
    aarmd_plugin_seq_free(g.p, b);
    aarmd_plugin_seq_free(g.p, c);
    aarmd_plugin_seq_free(g.p, dd);
    cr_assert_eq(pg_info(&g).blocks_free, 64u, "every block back");
    free(la);
    free(ld);
    free(lb);
    free(lc);
    pg_close(&g);
}

/* One step holding a source and two forks, both forks truncated into the same
 * shared block (each copies it on write): every entry's logits equal the same
 * work on unshared sequences one at a time (fewer than 8 tokens in all, so the
 * matvec path either way and the bits must match). */
Test(metal_backend, forks_in_one_step)
{
    struct pg g;
    struct aarmd_opt o[] = {{"kv_block", "4"}, {"kv_blocks", "32"}};
    if (pg_open(&g, o, 2, "llama", AARMD_TYPE_Q4_K))
        NEED_GPU(NULL);
    char err[512];
    const int32_t pre[8] = {2, 71, 82, 81, 82, 84, 59, 4}, za[2] = {52, 35}, zb[3] = {36, 2, 87}, x = 47;
    struct aarmd_backend_seq *s = pg_seq(&g, 32), *a = NULL, *b = NULL;
    PG_STEP_OK(&g, s, pre, 8, NULL);
    cr_assert_eq(aarmd_plugin_seq_fork(g.p, s, 8, 32, &a, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_fork(g.p, s, 8, 32, &b, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_truncate(g.p, a, 6, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_truncate(g.p, b, 6, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(pg_info(&g).blocks_free, 30u, "three sequences on two blocks");
    uint32_t nv = g.nv;
    float *l = malloc(6 * nv * sizeof(float));
    struct aarmd_batch_entry e[3] = {{a, za, 2, 1, l}, {s, &x, 1, 1, l + nv}, {b, zb, 3, 1, l + 2 * nv}};
    cr_assert_eq(aarmd_plugin_step(g.p, g.m, e, 3, err, sizeof err), AARMD_OK, "%s", err);
    /* a: copy of block 1; b: copy of block 1 + block 2; s: block 2 */
    cr_assert_eq(pg_info(&g).blocks_free, 26u);
    /* the same on private sequences, one at a time */
    const int32_t *toks[3] = {za, &x, zb};
    const uint32_t n[3] = {2, 1, 3}, keep[3] = {6, 8, 6};
    for (int i = 0; i < 3; i++) {
        struct aarmd_backend_seq *r = pg_seq(&g, 32);
        PG_STEP_OK(&g, r, pre, 8, NULL);
        cr_assert_eq(aarmd_plugin_seq_truncate(g.p, r, keep[i], err, sizeof err), AARMD_OK, "%s", err);
        PG_STEP_OK(&g, r, toks[i], n[i], l + (3 + i) * nv);
        cr_assert(memcmp(l + i * nv, l + (3 + i) * nv, nv * sizeof(float)) == 0, "entry %d differs", i);
        aarmd_plugin_seq_free(g.p, r);
    }
    aarmd_plugin_seq_free(g.p, s);
    aarmd_plugin_seq_free(g.p, a);
    aarmd_plugin_seq_free(g.p, b);
    cr_assert_eq(pg_info(&g).blocks_free, 32u);
    free(l);
    pg_close(&g);
}

/*
 * Random new/step/truncate/fork/free on a 14-block pool of 2-token blocks,
 * against a model of the spec: each sequence's blocks as ids, shared after a
 * fork, replaced when written while shared. After every operation kv_info's
 * free count is the model's; a step is ENOMEM exactly when the model says the
 * pool is short; and every step's logits are bit-equal to those of a fresh
 * sequence (on a second, unshared model instance) fed the same history.
 * Steps stay under 8 tokens, so the matvec path runs either way.
 */
#define RW_SEQS 3
#define RW_CTX 24
#define RW_OPS 70
#define RW_BLOCKS 14
struct rw_seq {
    struct aarmd_backend_seq *s;
    int32_t tok[RW_CTX];
    uint32_t len, n_ids, ids[RW_CTX];
};

static int rw_shared(const struct rw_seq *q, int self, uint32_t id)
{
    for (int i = 0; i < RW_SEQS; i++)
        for (uint32_t b = 0; i != self && q[i].s && b < q[i].n_ids; b++)
            if (q[i].ids[b] == id)
                return 1;
    return 0;
}

static uint32_t rw_used(const struct rw_seq *q)
{
    uint32_t n = 0;
    for (int i = 0; i < RW_SEQS; i++)
        for (uint32_t b = 0; q[i].s && b < q[i].n_ids; b++) {
            int seen = 0;
            for (int j = 0; j < i && !seen; j++)
                for (uint32_t c = 0; q[j].s && c < q[j].n_ids; c++)
                    seen |= q[j].ids[c] == q[i].ids[b];
            n += !seen;
        }
    return n;
}

Test(metal_backend, random_paging_matches_recompute)
{
    struct pg g, ref;
    struct aarmd_opt o[] = {{"kv_block", "2"}, {"kv_blocks", "14"}};
    if (pg_open(&g, o, 2, "llama", AARMD_TYPE_F16))
        NEED_GPU(NULL);
    cr_assert_eq(pg_open(&ref, NULL, 0, "llama", AARMD_TYPE_F16), 0, "%s", load_err);
    char err[512];
    struct rw_seq q[RW_SEQS];
    memset(q, 0, sizeof q);
    float *l = malloc(g.nv * sizeof(float)), *lr = malloc(g.nv * sizeof(float));
    uint32_t next_id = 1, n_enomem = 0, n_forks = 0, n_steps = 0, n_cow = 0;
    uint64_t x = 99;
    for (int it = 0; it < RW_OPS; it++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r = (uint32_t)(x >> 33);
        int i = (int)(r % RW_SEQS);
        struct rw_seq *sq = &q[i];
        uint32_t op = (r >> 4) % 8;
        if (op >= 6 && sq->s && sq->len >= 2) {   /* fork of sq's full blocks into another slot */
            int j = (i + 1 + (int)((r >> 8) % (RW_SEQS - 1))) % RW_SEQS;
            if (q[j].s)
                aarmd_plugin_seq_free(g.p, q[j].s);   /* make room: a free as well */
            uint32_t n = 2 * (1 + (r >> 12) % (sq->len / 2));
            cr_assert_eq(aarmd_plugin_seq_fork(g.p, sq->s, n, RW_CTX, &q[j].s, err, sizeof err), AARMD_OK, "%s", err);
            memcpy(q[j].tok, sq->tok, n * sizeof(int32_t));
            memcpy(q[j].ids, sq->ids, n / 2 * sizeof(uint32_t));
            q[j].len = n;
            q[j].n_ids = n / 2;
            n_forks++;
        } else if (!sq->s) {
            sq->s = pg_seq(&g, RW_CTX);
            sq->len = sq->n_ids = 0;
        } else if (op < 3 || op == 5) {   /* step of 1..7 tokens */
            uint32_t n = 1 + (r >> 8) % 7;
            if (sq->len + n > RW_CTX)
                n = RW_CTX - sq->len;
            if (n == 0)
                continue;
            uint32_t want = (sq->len + n + 1) / 2, need = want > sq->n_ids ? want - sq->n_ids : 0;
            for (uint32_t b = sq->len / 2; b < sq->n_ids && b < want; b++)
                need += rw_shared(q, i, sq->ids[b]);
            uint32_t free_now = RW_BLOCKS - rw_used(q);
            int32_t tk[7];
            for (uint32_t k = 0; k < n; k++)
                tk[k] = (int32_t)((r >> (k % 4)) * 2654435761u % g.nv);
            int rc = pg_step(&g, sq->s, tk, n, l, err);
            if (need > free_now) {
                cr_assert_eq(rc, AARMD_ENOMEM, "step of %u on %u needs %u, %u free: %s", n, sq->len, need, free_now,
                             err);
                n_enomem++;
            } else {
                cr_assert_eq(rc, AARMD_OK, "step of %u on %u needs %u, %u free: %s", n, sq->len, need, free_now, err);
                for (uint32_t b = sq->len / 2; b < sq->n_ids && b < want; b++)
                    if (rw_shared(q, i, sq->ids[b])) {
                        sq->ids[b] = next_id++;   /* copied on write */
                        n_cow++;
                    }
                while (sq->n_ids < want)
                    sq->ids[sq->n_ids++] = next_id++;
                memcpy(sq->tok + sq->len, tk, n * sizeof(int32_t));
                sq->len += n;
                n_steps++;
                /* the same history on a fresh, unshared sequence */
                struct aarmd_backend_seq *fresh = pg_seq(&ref, RW_CTX);
                for (uint32_t k = 0; k < sq->len; k += 7) {
                    uint32_t m = sq->len - k < 7 ? sq->len - k : 7;
                    PG_STEP_OK(&ref, fresh, sq->tok + k, m, k + m == sq->len ? lr : NULL);
                }
                aarmd_plugin_seq_free(ref.p, fresh);
                cr_assert(memcmp(l, lr, g.nv * sizeof(float)) == 0, "op %d: sequence %d of %u tokens differs", it, i,
                          sq->len);
            }
        } else if (op < 5) {   /* truncate (often into a shared block) */
            uint32_t n = sq->len ? (r >> 8) % (sq->len + 1) : 0;
            n -= n > 0 && n % 2 == 0;   /* odd: the last kept block is partly cut */
            cr_assert_eq(aarmd_plugin_seq_truncate(g.p, sq->s, n, err, sizeof err), AARMD_OK, "%s", err);
            sq->len = n;
            sq->n_ids = (n + 1) / 2;
        } else if (op == 6) {
            aarmd_plugin_seq_free(g.p, sq->s);
            sq->s = NULL;
        }
        cr_assert_eq(pg_info(&g).blocks_free, RW_BLOCKS - rw_used(q), "op %d: free blocks", it);
    }
    cr_assert(n_enomem > 0 && n_forks > 0 && n_cow > 0 && n_steps > 10,
              "the walk missed a path: %u ENOMEM, %u forks, %u copies on write, %u steps", n_enomem, n_forks, n_cow,
              n_steps);
    cr_log_info("random paging: %u steps, %u ENOMEM, %u forks, %u copies on write", n_steps, n_enomem, n_forks, n_cow);
    for (int i = 0; i < RW_SEQS; i++)
        aarmd_plugin_seq_free(g.p, q[i].s);
    cr_assert_eq(pg_info(&g).blocks_free, RW_BLOCKS);
    free(l);
    free(lr);
    pg_close(&ref);
    pg_close(&g);
}

/* One-token blocks and short chunks (a step cut into several command buffers,
 * the block-table buffer outgrowing its first 16 entries) still match the CPU backend. */
Test(metal_backend, small_blocks_and_chunks_match_cpu)
{
    struct aarmd_opt o[] = {{"kv_block", "1"}, {"batch", "7"}};
    struct aarmd_plugin *p = load_metal(o, 2);
    NEED_GPU(p);
    struct bc_case c = {"gemma3", AARMD_TYPE_BF16, 0.01};
    bc_match_cpu(p, &c);
    aarmd_plugin_free(p);
}
