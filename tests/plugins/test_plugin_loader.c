/* test_plugin_loader.c — core/plugin.c through real plugins: name and path
 * resolution, every refusal, and the wrappers' checks and defaults. */
#include "config.h"

#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mock_fixture.h"
#include "plugin.h"

#define END_OF_STEP (offsetof(struct aarmd_backend, step) + sizeof(void *))
#define END_OF_SEQ_FORK (offsetof(struct aarmd_backend, seq_fork) + sizeof(void *))
#define END_OF_LOGITS_FREE (offsetof(struct aarmd_backend, logits_free) + sizeof(void *))

static struct aarmd_host host;
static char err[1024];

static void host_opts(const struct aarmd_opt *opts, uint32_t n)
{
    aarmd_plugin_host_init(&host, opts, n, 0);
    memset(err, 0, sizeof err);
}

static void setup(void)
{
    host_opts(NULL, 0);
    cr_assert_not_null(getenv("AARMD_PLUGIN_PATH"), "AARMD_PLUGIN_PATH is not set: run through make check");
}

static const char *builddir(void)
{
    const char *b = getenv("AARMD_BUILDDIR");
    cr_assert_not_null(b, "AARMD_BUILDDIR is not set: run through make check");
    return b;
}

/* Loads and expects a refusal with `status`; returns the message. */
static const char *refused(const char *name, int status)
{
    struct aarmd_plugin *p = (struct aarmd_plugin *)1;
    int rc = aarmd_plugin_load(name, NULL, &host, &p, err, sizeof err);
    cr_assert_eq(rc, status, "load %s: rc %d, want %d (%s)", name, rc, status, err);
    cr_assert_null(p, "a refused load leaves *out NULL");
    cr_assert_gt(strlen(err), 0);
    return err;
}

TestSuite(loader, .init = setup);

Test(loader, resolves_by_name)
{
    struct aarmd_plugin *p = NULL;
    int rc = aarmd_plugin_load("mock", NULL, &host, &p, err, sizeof err);
    cr_assert_eq(rc, AARMD_OK, "%s", err);
    const char *path = aarmd_plugin_path(p);
    cr_assert(strstr(path, "/backend_mock.so") || strstr(path, "/backend_mock.dylib"), "path %s", path);
    const struct aarmd_backend *t = aarmd_plugin_table(p);
    cr_assert_str_eq(t->name, "mock");
    cr_assert_eq(t->abi_major, AARMD_ABI_MAJOR);
    cr_assert_eq(t->abi_minor, AARMD_ABI_MINOR);
    cr_assert_eq(t->struct_size, sizeof(struct aarmd_backend));
    aarmd_plugin_free(p);
}

Test(loader, resolves_by_path)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/plugins/mock/.libs/backend_mock.so", builddir());
    struct aarmd_plugin *p = NULL;
    cr_assert_eq(aarmd_plugin_load(path, NULL, &host, &p, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_str_eq(aarmd_plugin_path(p), path);
    cr_assert_str_eq(aarmd_plugin_table(p)->name, "mock");
    aarmd_plugin_free(p);
}

/* Makes a temp dir holding a copy of the mock named backend_quiet.so, so that
 * a load of "quiet" tells which directory won: "mock" here, "quiet" from
 * $AARMD_PLUGIN_PATH. Writes the dir (no trailing slash) to dir. */
static void shadow_dir(char *dir, size_t cap)
{
    char tmpl[] = "/tmp/aarmd-plugin-dir.XXXXXX";
    cr_assert_not_null(mkdtemp(tmpl));
    snprintf(dir, cap, "%s", tmpl);
    char from[4096], to[4200];
    snprintf(from, sizeof from, "%s/plugins/mock/.libs/backend_mock.so", builddir());
    snprintf(to, sizeof to, "%s/backend_quiet%s", dir, AARMD_PLUGIN_SUFFIX);
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    cr_assert(in && out, "copy %s to %s", from, to);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        cr_assert_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    fclose(out);
}

static void unshadow(const char *dir)
{
    char f[4200];
    snprintf(f, sizeof f, "%s/backend_quiet%s", dir, AARMD_PLUGIN_SUFFIX);
    remove(f);
    rmdir(dir);
}

Test(loader, plugin_dir_comes_first)
{
    char dir[4096];
    shadow_dir(dir, sizeof dir);
    struct aarmd_plugin *p = NULL;
    int rc = aarmd_plugin_load("quiet", dir, &host, &p, err, sizeof err);
    cr_expect_eq(rc, AARMD_OK, "%s", err);
    if (rc == AARMD_OK) {
        cr_expect_str_eq(aarmd_plugin_table(p)->name, "mock", "loaded %s", aarmd_plugin_path(p));
        cr_expect(!strncmp(aarmd_plugin_path(p), dir, strlen(dir)), "%s", aarmd_plugin_path(p));
    }
    aarmd_plugin_free(p);
    /* without plugin_dir the same name comes from $AARMD_PLUGIN_PATH */
    p = NULL;
    cr_expect_eq(aarmd_plugin_load("quiet", NULL, &host, &p, err, sizeof err), AARMD_OK, "%s", err);
    if (p)
        cr_expect_str_eq(aarmd_plugin_table(p)->name, "quiet");
    aarmd_plugin_free(p);
    unshadow(dir);
}

Test(loader, plugin_dir_with_trailing_slash)
{
    char dir[4096], slashed[4200];
    shadow_dir(dir, sizeof dir);
    snprintf(slashed, sizeof slashed, "%s/", dir);
    struct aarmd_plugin *p = NULL;
    int rc = aarmd_plugin_load("quiet", slashed, &host, &p, err, sizeof err);
    cr_expect_eq(rc, AARMD_OK, "%s", err);
    if (rc == AARMD_OK) {
        cr_expect_str_eq(aarmd_plugin_table(p)->name, "mock");
        char want[4300];
        snprintf(want, sizeof want, "%s/backend_quiet%s", dir, AARMD_PLUGIN_SUFFIX);
        cr_expect_str_eq(aarmd_plugin_path(p), want);
    }
    aarmd_plugin_free(p);
    unshadow(dir);
}

Test(loader, missing_name_lists_every_place_searched)
{
    struct aarmd_plugin *p = NULL;
    int rc = aarmd_plugin_load("nonexistent", "/tmp/aarmd-no-such-dir", &host, &p, err, sizeof err);
    cr_assert_eq(rc, AARMD_EIO);
    cr_assert_null(p);
    cr_assert(strstr(err, "/tmp/aarmd-no-such-dir/backend_nonexistent" AARMD_PLUGIN_SUFFIX), "%s", err);
    char *env = strdup(getenv("AARMD_PLUGIN_PATH"));
    int n_dirs = 0;
    for (char *save = NULL, *d = strtok_r(env, ":", &save); d; d = strtok_r(NULL, ":", &save), n_dirs++) {
        char want[4200];
        snprintf(want, sizeof want, "%s/backend_nonexistent%s", d, AARMD_PLUGIN_SUFFIX);
        cr_assert(strstr(err, want), "'%s' not in: %s", want, err);
    }
    free(env);
    cr_assert_gt(n_dirs, 0);
    cr_assert(strstr(err, AARMD_PLUGIN_DIR "/backend_nonexistent" AARMD_PLUGIN_SUFFIX), "%s", err);
}

Test(loader, missing_path)
{
    refused("/nonexistent/dir/backend_x.so", AARMD_EIO);
    cr_assert(strstr(err, "/nonexistent/dir/backend_x.so"), "%s", err);
    cr_assert(strstr(err, "no such file"), "%s", err);
}

Test(loader, bad_name)
{
    refused("two words", AARMD_EINVAL);
    cr_assert(strstr(err, "two words"), "%s", err);
    refused("", AARMD_EINVAL);
}

Test(loader, not_a_shared_object)
{
    /* a bare "x.so" is a file in the working directory, not a library search */
    char name[64], want[128];
    snprintf(name, sizeof name, "not_a_plugin_%d.so", (int)getpid());
    FILE *f = fopen(name, "w");
    cr_assert_not_null(f);
    fputs("this is text\n", f);
    fclose(f);
    refused(name, AARMD_EIO);
    remove(name);
    snprintf(want, sizeof want, "./%s: cannot load: ", name);
    cr_assert(strstr(err, want), "%s", err);
}

Test(loader, other_major_is_refused)
{
    refused("badmajor", AARMD_EUNSUPPORTED);
    cr_assert(strstr(err, "backend_badmajor"), "%s", err);
    char want[128];
    snprintf(want, sizeof want, ": ABI major 2 is not supported (host ABI %d.%d)", AARMD_ABI_MAJOR, AARMD_ABI_MINOR);
    cr_assert(strstr(err, want), "%s", err);
}

Test(loader, missing_entry_symbol)
{
    refused("nosym", AARMD_EINVAL);
    cr_assert(strstr(err, "backend_nosym"), "%s", err);
    cr_assert(strstr(err, "no aarmd_backend_entry symbol"), "%s", err);
    cr_assert(strstr(err, "undefined symbol") || strstr(err, "symbol not found"), "no dlerror text: %s", err);
}

Test(loader, missing_required_method)
{
    refused("noreq", AARMD_EINVAL);
    cr_assert(strstr(err, "backend_noreq"), "%s", err);
    cr_assert(strstr(err, "required method step"), "%s", err);
}

Test(loader, entry_returning_null)
{
    refused("null", AARMD_EINVAL);
    cr_assert(strstr(err, "backend_null"), "%s", err);
    cr_assert(strstr(err, "aarmd_backend_entry returned NULL"), "%s", err);
}

Test(loader, struct_too_small_for_minor)
{
    const struct aarmd_opt opts[] = {{"abi_minor", "0"}, {"struct_size", "40"}};
    host_opts(opts, 2);
    refused("mock", AARMD_EUNSUPPORTED);
    char want[128];
    snprintf(want, sizeof want, "struct_size 40 is too small for ABI 1.0 (needs at least %zu bytes",
             (size_t)END_OF_STEP);
    cr_assert(strstr(err, want), "'%s' not in: %s", want, err);
}

/* The mock loaded with its table cut to `minor` and `size` bytes (the loader must accept it). */
static struct aarmd_plugin *load_cut(unsigned minor, size_t size)
{
    char m[16], sz[32];
    snprintf(m, sizeof m, "%u", minor);
    snprintf(sz, sizeof sz, "%zu", size);
    const struct aarmd_opt opts[] = {{"abi_minor", m}, {"struct_size", sz}};
    host_opts(opts, 2);
    struct aarmd_plugin *p = NULL;
    cr_assert_eq(aarmd_plugin_load("mock", NULL, &host, &p, err, sizeof err), AARMD_OK, "%s", err);
    return p;
}

Test(loader, struct_exactly_minimal_is_accepted)
{
    struct aarmd_plugin *p = load_cut(0, END_OF_STEP);
    cr_assert_eq(aarmd_plugin_table(p)->struct_size, END_OF_STEP);
    cr_assert(aarmd_plugin_has_method(p, "step"));
    cr_assert(aarmd_plugin_has_method(p, "seq_truncate"));
    /* a 1.0 table has no 1.1 slots: they are never read */
    cr_assert_not(aarmd_plugin_has_method(p, "kv_info"));
    cr_assert_not(aarmd_plugin_has_method(p, "seq_fork"));
    aarmd_plugin_free(p);
}

/* A table of `minor` that ends at `size` is refused, naming the size that minor needs. */
static void refused_too_small(unsigned minor, size_t size, size_t need)
{
    char m[16], sz[32];
    snprintf(m, sizeof m, "%u", minor);
    snprintf(sz, sizeof sz, "%zu", size);
    const struct aarmd_opt opts[] = {{"abi_minor", m}, {"struct_size", sz}};
    host_opts(opts, 2);
    refused("mock", AARMD_EUNSUPPORTED);
    char want[160];
    snprintf(want, sizeof want, "struct_size %zu is too small for ABI 1.%u (needs at least %zu bytes", size, minor,
             need);
    cr_assert(strstr(err, want), "'%s' not in: %s", want, err);
}

Test(loader, minor_1_table_must_reach_seq_fork)
{
    refused_too_small(1, END_OF_STEP, END_OF_SEQ_FORK);
}

Test(loader, minor_2_table_must_reach_logits_free)
{
    refused_too_small(2, END_OF_SEQ_FORK, END_OF_LOGITS_FREE);
}

Test(loader, minor_1_table_has_no_logits_slots)
{
    /* a 1.1 plugin ends at seq_fork: logits_alloc/free are never read */
    struct aarmd_plugin *p = load_cut(1, END_OF_SEQ_FORK);
    cr_assert(aarmd_plugin_has_method(p, "seq_fork"));
    cr_assert_not(aarmd_plugin_has_method(p, "logits_alloc"));
    cr_assert_not(aarmd_plugin_has_method(p, "logits_free"));
    aarmd_plugin_free(p);
}

Test(loader, probe_refusal_carries_its_message)
{
    const struct aarmd_opt opts[] = {{"probe", "0"}};
    host_opts(opts, 1);
    refused("mock", AARMD_EUNSUPPORTED);
    cr_assert(strstr(err, "backend_mock"), "%s", err);
    cr_assert(strstr(err, "refusing to run on request (probe=0)"), "%s", err);
}

Test(loader, newer_minor_is_accepted)
{
    const struct aarmd_opt opts[] = {{"abi_minor", "5"}};
    host_opts(opts, 1);
    struct aarmd_plugin *p = NULL;
    cr_assert_eq(aarmd_plugin_load("mock", NULL, &host, &p, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_table(p)->abi_minor, 5);
    /* it is still usable */
    struct aarmd_backend_ctx *ctx = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);
    aarmd_plugin_ctx_free(p, ctx);
    aarmd_plugin_free(p);
}

Test(loader, larger_table_from_a_newer_header_is_accepted)
{
    /* a plugin built against a future 1.3 header: bigger table, more methods we never call */
    const struct aarmd_opt opts[] = {{"abi_minor", "3"}, {"struct_size", "200"}};
    host_opts(opts, 2);
    struct aarmd_plugin *p = NULL;
    cr_assert_eq(aarmd_plugin_load("mock", NULL, &host, &p, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_table(p)->struct_size, 200);
    cr_assert(aarmd_plugin_has_method(p, "seq_truncate"));
    aarmd_plugin_free(p);
}

Test(loader, two_variants_loaded_at_once_keep_their_tables)
{
    static struct aarmd_host h3, h5;
    const struct aarmd_opt o3[] = {{"abi_minor", "3"}}, o5[] = {{"abi_minor", "5"}};
    aarmd_plugin_host_init(&h3, o3, 1, 0);
    aarmd_plugin_host_init(&h5, o5, 1, 0);
    struct aarmd_plugin *p3 = NULL, *p5 = NULL;
    cr_assert_eq(aarmd_plugin_load("mock", NULL, &h3, &p3, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_load("mock", NULL, &h5, &p5, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_table(p3)->abi_minor, 3);
    cr_assert_eq(aarmd_plugin_table(p5)->abi_minor, 5);
    aarmd_plugin_free(p3);
    aarmd_plugin_free(p5);
}

Test(loader, null_arguments)
{
    struct aarmd_plugin *p = NULL;
    cr_assert_eq(aarmd_plugin_load(NULL, NULL, &host, &p, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "name_or_path"), "%s", err);
    cr_assert_eq(aarmd_plugin_load("mock", NULL, NULL, &p, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "host"), "%s", err);
    aarmd_plugin_free(NULL);
    cr_assert_null(aarmd_plugin_path(NULL));
    cr_assert_null(aarmd_plugin_table(NULL));
}

/* ---- wrappers ------------------------------------------------------------ */

/* a vocabulary-only model the mock loads (eos 2) */
static struct aarmd_model_desc tiny_desc(uint32_t n_vocab)
{
    return mock_fx_desc(n_vocab, 2);
}

Test(wrappers, defaults_of_absent_optional_methods)
{
    struct aarmd_plugin *p = NULL;
    cr_assert_eq(aarmd_plugin_load("quiet", NULL, &host, &p, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_not(aarmd_plugin_has_method(p, "device_info"));
    cr_assert_not(aarmd_plugin_has_method(p, "model_bytes"));
    cr_assert_not(aarmd_plugin_has_method(p, "seq_truncate"));
    cr_assert(aarmd_plugin_has_method(p, "step"));
    cr_assert_not(aarmd_plugin_has_method(p, "no_such_method"));

    struct aarmd_backend_ctx *ctx = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_device_info info;
    memset(&info, 0xab, sizeof info);
    cr_assert_eq(aarmd_plugin_device_info(p, ctx, &info, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(info.struct_size, sizeof info);
    cr_assert_str_eq(info.name, "quiet");
    cr_assert_str_eq(info.worker_type, "quiet");
    cr_assert_str_eq(info.memory_architecture, "host");
    cr_assert_eq(info.memory_total, 0);
    cr_assert_eq(info.memory_free, 0);
    cr_assert_eq(info.advised_seqs, 1);

    struct aarmd_model_desc d = tiny_desc(300);
    struct aarmd_backend_model *m = NULL;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_model_bytes(p, m), 0);
    struct aarmd_backend_seq *s = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(p, m, 16, &s, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_truncate(p, s, 0, err, sizeof err), AARMD_EUNSUPPORTED);
    cr_assert(strstr(err, "quiet does not support seq_truncate"), "%s", err);
    aarmd_plugin_seq_free(p, s);
    aarmd_plugin_model_free(p, m);
    aarmd_plugin_ctx_free(p, ctx);
    aarmd_plugin_free(p);
}

/* logits buffers (ABI 1.2): the backend's when it gives one, else malloc; freed the matching way */
static void logits_buffers(const char *alloc_knob, bool want_backend)
{
    const struct aarmd_opt opts[] = {{"logits_alloc", alloc_knob}};
    host_opts(opts, 1);
    struct aarmd_plugin *p = NULL;
    cr_assert_eq(aarmd_plugin_load("mock", NULL, &host, &p, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert(aarmd_plugin_has_method(p, "logits_alloc"));
    struct aarmd_backend_ctx *ctx = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_model_desc d = tiny_desc(300);
    struct aarmd_backend_model *m = NULL;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_OK, "%s", err);
    bool by[3];
    float *b[3];
    for (int i = 0; i < 3; i++) {
        b[i] = aarmd_plugin_logits_alloc(p, m, 300 * sizeof(float), &by[i]);
        cr_assert_not_null(b[i]);
        cr_assert_eq(by[i], want_backend, "buffer %d: by_backend %d", i, by[i]);
        for (int k = 0; k < 300; k++)   /* all of it is writable */
            b[i][k] = (float)k;
    }
    /* a step writes the logits into them */
    struct aarmd_backend_seq *s = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(p, m, 16, &s, err, sizeof err), AARMD_OK, "%s", err);
    int32_t tok = 5;
    struct aarmd_batch_entry e = {.seq = s, .tokens = &tok, .n_tokens = 1, .want_logits = 1, .logits = b[1]};
    cr_assert_eq(aarmd_plugin_step(p, m, &e, 1, err, sizeof err), AARMD_OK, "%s", err);
    aarmd_plugin_seq_free(p, s);
    for (int i = 0; i < 3; i++)
        aarmd_plugin_logits_free(p, m, b[i], by[i]);
    aarmd_plugin_logits_free(p, m, NULL, true);   /* NULL is a no-op */
    aarmd_plugin_model_free(p, m);
    aarmd_plugin_ctx_free(p, ctx);
    aarmd_plugin_free(p);
}

Test(wrappers, logits_buffers_from_the_backend)
{
    logits_buffers("1", true);
}

Test(wrappers, logits_buffers_fall_back_to_malloc)
{
    logits_buffers("0", false);
}

Test(wrappers, logits_buffers_of_a_plugin_without_the_slots)
{
    struct aarmd_plugin *p = NULL;
    cr_assert_eq(aarmd_plugin_load("quiet", NULL, &host, &p, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_not(aarmd_plugin_has_method(p, "logits_alloc"));
    bool by = true;
    void *q = aarmd_plugin_logits_alloc(p, NULL, 64, &by);
    cr_assert_not_null(q);
    cr_assert_not(by);
    aarmd_plugin_logits_free(p, NULL, q, by);
    aarmd_plugin_free(p);
}

Test(wrappers, silent_or_lying_methods_get_messages)
{
    struct aarmd_plugin *p = NULL;
    cr_assert_eq(aarmd_plugin_load("quiet", NULL, &host, &p, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_backend_ctx *ctx = (struct aarmd_backend_ctx *)1;

    cr_assert_eq(aarmd_plugin_ctx_new(p, 7, &ctx, err, sizeof err), AARMD_EDEVICE);
    cr_assert_null(ctx);
    cr_assert_str_eq(err, "backend quiet: ctx_new returned -3 (device error) without a message");

    cr_assert_eq(aarmd_plugin_ctx_new(p, 8, &ctx, err, sizeof err), AARMD_EINTERNAL);
    cr_assert(strstr(err, "ctx_new returned OK without a context"), "%s", err);

    cr_assert_eq(aarmd_plugin_ctx_new(p, 9, &ctx, err, sizeof err), AARMD_EINTERNAL);
    cr_assert(strstr(err, "returned 5, which is not a status code"), "%s", err);

    /* a NULL or empty error buffer is allowed */
    cr_assert_eq(aarmd_plugin_ctx_new(p, 7, &ctx, NULL, 0), AARMD_EDEVICE);

    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_model_desc d = tiny_desc(13);
    struct aarmd_backend_model *m = NULL;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EINTERNAL);
    cr_assert(strstr(err, "model_load returned OK without a model"), "%s", err);
    d.n_vocab = 300;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_backend_seq *s = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(p, m, 8, &s, err, sizeof err), AARMD_OK, "%s", err);

    /* the plugin fills err without a terminator: it comes back terminated */
    char small[16];
    int32_t tok = 1;
    struct aarmd_batch_entry e = {.seq = s, .tokens = &tok, .n_tokens = 1};
    cr_assert_eq(aarmd_plugin_step(p, m, &e, 1, small, sizeof small), AARMD_EINTERNAL);
    cr_assert_eq(strlen(small), sizeof small - 1);

    aarmd_plugin_seq_free(p, s);
    aarmd_plugin_model_free(p, m);
    aarmd_plugin_ctx_free(p, ctx);
    aarmd_plugin_free(p);
}

Test(wrappers, argument_checks)
{
    struct aarmd_plugin *p = NULL;
    cr_assert_eq(aarmd_plugin_load("mock", NULL, &host, &p, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_backend_ctx *ctx = NULL;
    cr_assert_eq(aarmd_plugin_ctx_new(NULL, 0, &ctx, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "plugin is NULL"), "%s", err);
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, NULL, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "out is NULL"), "%s", err);
    cr_assert_eq(aarmd_plugin_ctx_new(p, -1, &ctx, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "device -1 is invalid"), "%s", err);
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &ctx, err, sizeof err), AARMD_OK, "%s", err);

    cr_assert_eq(aarmd_plugin_device_info(p, ctx, NULL, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "info is NULL"), "%s", err);

    struct aarmd_backend_model *m = NULL;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, NULL, NULL, NULL, &m, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "desc is NULL"), "%s", err);
    struct aarmd_model_desc d = tiny_desc(0);
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "no vocabulary"), "%s", err);
    d = tiny_desc(300);
    d.struct_size = 8;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "struct_size 8"), "%s", err);
    d = tiny_desc(300);
    d.n_tensors = 3;
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "tensors is NULL"), "%s", err);
    d = tiny_desc(300);
    cr_assert_eq(aarmd_plugin_model_load(p, ctx, &d, NULL, NULL, &m, err, sizeof err), AARMD_OK, "%s", err);

    struct aarmd_backend_seq *s = NULL, *s2 = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(p, m, 0, &s, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "n_ctx"), "%s", err);
    cr_assert_eq(aarmd_plugin_seq_new(p, NULL, 8, &s, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "model is NULL"), "%s", err);
    cr_assert_eq(aarmd_plugin_seq_new(p, m, 8, &s, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_new(p, m, 8, &s2, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_truncate(p, NULL, 0, err, sizeof err), AARMD_EINVAL);

    int32_t toks[2] = {300 - 1, 5};
    float logits[300];
    struct aarmd_batch_entry e[2] = {
        {.seq = s, .tokens = toks, .n_tokens = 2, .want_logits = 1, .logits = logits},
        {.seq = s, .tokens = toks, .n_tokens = 1},
    };
    cr_assert_eq(aarmd_plugin_step(p, m, e, 0, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "no entries"), "%s", err);
    cr_assert_eq(aarmd_plugin_step(p, m, NULL, 1, err, sizeof err), AARMD_EINVAL);
    cr_assert_eq(aarmd_plugin_step(p, m, e, 2, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "entries 0 and 1 name the same sequence"), "%s", err);
    e[1].seq = s2;
    e[1].n_tokens = 0;
    cr_assert_eq(aarmd_plugin_step(p, m, e, 2, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "entry 1 has n_tokens 0"), "%s", err);
    e[1].n_tokens = 1;
    e[1].want_logits = 1;
    cr_assert_eq(aarmd_plugin_step(p, m, e, 2, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "entry 1 has want_logits but no logits buffer"), "%s", err);
    e[1].want_logits = 0;
    e[0].seq = NULL;
    cr_assert_eq(aarmd_plugin_step(p, m, e, 2, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "entry 0 has no sequence"), "%s", err);
    e[0].seq = s;
    cr_assert_eq(aarmd_plugin_step(p, m, e, 2, err, sizeof err), AARMD_OK, "%s", err);

    aarmd_plugin_seq_free(p, s);
    aarmd_plugin_seq_free(p, s2);
    aarmd_plugin_seq_free(p, NULL);
    aarmd_plugin_model_free(p, m);
    aarmd_plugin_model_free(p, NULL);
    aarmd_plugin_ctx_free(p, ctx);
    aarmd_plugin_ctx_free(p, NULL);
    aarmd_plugin_free(p);
}

/* ---- host --------------------------------------------------------------- */

Test(host, init_fills_version_and_options)
{
    const struct aarmd_opt opts[] = {{"a", "1"}, {"b", "2"}};
    struct aarmd_host h;
    memset(&h, 0xcd, sizeof h);
    aarmd_plugin_host_init(&h, opts, 2, 3);
    cr_assert_eq(h.abi_major, AARMD_ABI_MAJOR);
    cr_assert_eq(h.abi_minor, AARMD_ABI_MINOR);
    cr_assert_eq(h.struct_size, sizeof h);
    cr_assert_not_null(h.log);
    cr_assert_eq(h.opts, opts);
    cr_assert_eq(h.n_opts, 2);
    cr_assert_eq(h.device, 3);
}

static void redirect(void) { cr_redirect_stderr(); }

Test(host, log_goes_to_aarmd_log_as_backend_event, .init = redirect)
{
    struct aarmd_host h;
    aarmd_plugin_host_init(&h, NULL, 0, 0);
    h.log(h.log_user, AARMD_LOG_WARN, "plugin says \"hi\"");
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    char line[4096] = "";
    cr_assert(fgets(line, sizeof line, f));
    cr_assert(strstr(line, "\"event\":\"backend\""), "%s", line);
    cr_assert(strstr(line, "plugin says \\\"hi\\\""), "%s", line);
    cr_assert(strstr(line, "warn"), "%s", line);
}

Test(status, names)
{
    cr_assert_str_eq(aarmd_status_str(AARMD_OK), "ok");
    cr_assert_str_eq(aarmd_status_str(AARMD_ENOMEM), "out of memory");
    cr_assert_str_eq(aarmd_status_str(AARMD_ECANCELLED), "cancelled");
    cr_assert_str_eq(aarmd_status_str(-99), "unknown status");
}
