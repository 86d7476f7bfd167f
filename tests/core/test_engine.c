/* test_engine.c — core/engine.c through the real plugin loader and the mock backend:
 * startup order, load progress, fields, and every failing step's message. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "gguf.h"
#include "log.h"
#include "tokenizer.h"

static char path_buf[PATH_MAX];

static const char *data_path(const char *rel)
{
    const char *d = getenv("AARMD_TEST_DATA");
    cr_assert_not_null(d, "AARMD_TEST_DATA is not set");
    snprintf(path_buf, sizeof path_buf, "%s/%s", d, rel);
    return path_buf;
}

static const char *model_path(const char *name)
{
    const char *d = getenv("AARMD_TEST_MODELS");
    cr_assert_not_null(d, "AARMD_TEST_MODELS is not set");
    snprintf(path_buf, sizeof path_buf, "%s/%s", d, name);
    return path_buf;
}

static void quiet(void)
{
    aarmd_log_setup(AARMD_LOG_TEXT, "test", AARMD_LOG_ERROR);
}

struct progress_rec {
    int n;
    int seen[16];
};

static void progress_cb(void *user, int percent)
{
    struct progress_rec *p = user;
    if (p->n < 16)
        p->seen[p->n] = percent;
    p->n++;
}

static int build(const char *model, const struct aarmd_opt *opts, uint32_t n_opts, struct aarmd_engine **e,
                 char *err, size_t errlen, struct progress_rec *pr)
{
    struct aarmd_engine_opts o = {
        .backend = "mock",
        .model_path = model,
        .opts = opts,
        .n_opts = n_opts,
        .progress = pr ? progress_cb : NULL,
        .progress_user = pr,
    };
    return aarmd_engine_new(&o, e, err, errlen);
}

Test(engine, vocab_only_file_with_mock, .init = quiet)
{
    struct aarmd_opt opts[] = {{"memory_bytes", "123456"}};
    struct aarmd_engine *e = NULL;
    char err[1024] = "";
    struct progress_rec pr = {0};
    char rel[] = "vocab/ggml-vocab-gpt-2.gguf";
    int rc = build(data_path(rel), opts, 1, &e, err, sizeof err, &pr);
    cr_assert_eq(rc, AARMD_OK, "engine_new failed: %s", err);
    cr_assert_not_null(e);
    cr_assert_eq(e->model_path[0], '/', "model_path is not absolute: %s", e->model_path);
    char *real = realpath(data_path(rel), NULL);
    cr_assert_str_eq(e->model_path, real);
    free(real);
    cr_assert(strlen(e->model_name) > 0);
    cr_assert_str_eq(e->device.worker_type, "mock");
    cr_assert_eq(e->model_bytes, 123456u);
    cr_assert_not_null(e->tok);
    cr_assert_not_null(e->desc);
    cr_assert_eq(e->desc->n_tensors, 0u);
    cr_assert_eq(e->desc->n_vocab, aarmd_tokenizer_n_vocab(e->tok));
    cr_assert_eq(e->desc->eos_id, aarmd_tokenizer_eos(e->tok));
    /* progress: 0, 25, 50, 75, 100, each once, in order, even from a backend that reports nothing */
    cr_assert_eq(pr.n, 5, "progress reported %d times", pr.n);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(pr.seen[i], i * 25, "progress #%d was %d", i, pr.seen[i]);
    aarmd_engine_free(e);
}

Test(engine, model_name_from_general_name_or_base_name, .init = quiet)
{
    struct aarmd_engine *e = NULL;
    char err[1024] = "";
    int rc = build(data_path("vocab/ggml-vocab-gpt-2.gguf"), NULL, 0, &e, err, sizeof err, NULL);
    cr_assert_eq(rc, AARMD_OK, "%s", err);
    char name[256] = "";
    if (aarmd_gguf_get_cstr(e->gguf, "general.name", name, sizeof name) == AARMD_OK && name[0])
        cr_assert_str_eq(e->model_name, name);
    else
        cr_assert_str_eq(e->model_name, "ggml-vocab-gpt-2");
    aarmd_engine_free(e);
}

Test(engine, real_model_file_with_mock, .init = quiet)
{
    struct aarmd_engine *e = NULL;
    char err[1024] = "";
    int rc = build(model_path("SmolLM2-135M-Instruct.Q4_1.gguf"), NULL, 0, &e, err, sizeof err, NULL);
    cr_assert_eq(rc, AARMD_OK, "%s", err);
    cr_assert_str_eq(e->desc->arch, "llama");
    cr_assert_gt(e->desc->n_tensors, 0u);
    cr_assert_str_eq(e->quant_kind[0] ? "set" : "empty", "set");
    char name[256] = "";
    cr_assert_eq(aarmd_gguf_get_cstr(e->gguf, "general.name", name, sizeof name), AARMD_OK);
    cr_assert_str_eq(e->model_name, name);
    aarmd_engine_free(e);
}

Test(engine, unknown_backend_names_the_plugin_step, .init = quiet)
{
    struct aarmd_engine_opts o = {.backend = "no-such-backend", .model_path = data_path("vocab/ggml-vocab-gpt-2.gguf")};
    struct aarmd_engine *e = (struct aarmd_engine *)0x1;
    char err[1024] = "";
    int rc = aarmd_engine_new(&o, &e, err, sizeof err);
    cr_assert_neq(rc, AARMD_OK);
    cr_assert_null(e);
    cr_assert(!strncmp(err, "plugin: ", 8), "message does not name the step: %s", err);
    cr_assert(strstr(err, "no-such-backend"), "message does not name the backend: %s", err);
}

Test(engine, bad_backend_option_names_the_device_step, .init = quiet)
{
    struct aarmd_opt opts[] = {{"no_such_knob", "1"}};
    struct aarmd_engine *e = NULL;
    char err[1024] = "";
    int rc = build(data_path("vocab/ggml-vocab-gpt-2.gguf"), opts, 1, &e, err, sizeof err, NULL);
    cr_assert_neq(rc, AARMD_OK);
    cr_assert_null(e);
    cr_assert(!strncmp(err, "device 0: ", 10), "message does not name the step: %s", err);
    cr_assert(strstr(err, "no_such_knob"), "%s", err);
}

Test(engine, missing_model_file, .init = quiet)
{
    struct aarmd_engine *e = NULL;
    char err[1024] = "";
    int rc = build("/nonexistent/dir/model.gguf", NULL, 0, &e, err, sizeof err, NULL);
    cr_assert_neq(rc, AARMD_OK);
    cr_assert_null(e);
    cr_assert(strstr(err, "model: /nonexistent/dir/model.gguf"), "%s", err);
    cr_assert(strstr(err, "No such file"), "%s", err);
}

Test(engine, not_a_gguf_file, .init = quiet)
{
    struct aarmd_engine *e = NULL;
    char err[1024] = "";
    int rc = build(data_path("vocab/ggml-vocab-gpt-2.gguf.inp"), NULL, 0, &e, err, sizeof err, NULL);
    cr_assert_neq(rc, AARMD_OK);
    cr_assert_null(e);
    cr_assert(!strncmp(err, "model: ", 7), "%s", err);
    cr_assert(strstr(err, "ggml-vocab-gpt-2.gguf.inp"), "message does not name the file: %s", err);
}

Test(engine, failed_load_names_the_load_step_and_stops_progress, .init = quiet)
{
    struct aarmd_opt opts[] = {{"fail_load", "1"}};
    struct aarmd_engine *e = NULL;
    char err[1024] = "";
    struct progress_rec pr = {0};
    int rc = build(data_path("vocab/ggml-vocab-gpt-2.gguf"), opts, 1, &e, err, sizeof err, &pr);
    cr_assert_neq(rc, AARMD_OK);
    cr_assert_null(e);
    cr_assert(strstr(err, ": load: "), "%s", err);
    cr_assert(strstr(err, "fail_load"), "%s", err);
    cr_assert_geq(pr.n, 1);
    cr_assert_eq(pr.seen[0], 0);
    for (int i = 0; i < pr.n && i < 16; i++)
        cr_assert_neq(pr.seen[i], 100, "100%% reported for a failed load");
}

Test(engine, options_are_copied, .init = quiet)
{
    char key[] = "memory_bytes", val[] = "777";
    struct aarmd_opt opts[] = {{key, val}};
    struct aarmd_engine *e = NULL;
    char err[1024] = "";
    int rc = build(data_path("vocab/ggml-vocab-gpt-2.gguf"), opts, 1, &e, err, sizeof err, NULL);
    cr_assert_eq(rc, AARMD_OK, "%s", err);
    memset(key, 'x', sizeof key - 1);
    memset(val, '9', sizeof val - 1);
    cr_assert_eq(e->host.n_opts, 1u);
    cr_assert_str_eq(e->host.opts[0].key, "memory_bytes");
    cr_assert_str_eq(e->host.opts[0].value, "777");
    aarmd_engine_free(e);
}

Test(engine, null_arguments)
{
    struct aarmd_engine *e = NULL;
    char err[256] = "";
    cr_assert_eq(aarmd_engine_new(NULL, &e, err, sizeof err), AARMD_EINVAL);
    struct aarmd_engine_opts o = {.backend = "mock"};
    cr_assert_eq(aarmd_engine_new(&o, &e, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "model"), "%s", err);
    aarmd_engine_free(NULL);
}
