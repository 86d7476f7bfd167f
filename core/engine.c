/*
 * engine.c — builds one loaded model in the contract's startup order (plugin,
 * device context, GGUF, tokenizer, description, weights). It does not run
 * jobs: that is the scheduler's (core/scheduler.c).
 */
#include "config.h"
#include "engine.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "log.h"
#include "model.h"
#include "plugin.h"
#include "tokenizer.h"

/* The public struct plus what only this file sees; aarmd_engine_free finds it
 * again from the public pointer (it is the first member). */
struct engine_impl {
    struct aarmd_engine pub;
    struct aarmd_opt *opts;      /* copy of the --backend-opt list: host.opts points here */
    uint32_t n_opts;
    char *opt_strings;           /* keys and values of opts, NUL-separated */
    int desc_is_local;           /* 1: desc built by vocab_only_desc, freed with free() */
    char arch[64];               /* the vocab-only description's arch */
    void (*progress)(void *user, int percent);
    void *progress_user;
    int next_percent;            /* next of 0/25/50/75/100 to report */
};

static void report_percent(struct engine_impl *ei, int upto)
{
    while (ei->next_percent <= upto && ei->next_percent <= 100) {
        int p = ei->next_percent;
        const char *extra[] = {"percent", NULL, NULL};
        char num[16];
        snprintf(num, sizeof num, "%d", p);
        extra[1] = num;
        struct aarmd_log_ctx lc = {.extra = extra};
        aarmd_log_ctx(AARMD_LOG_INFO, "model_load_progress", &lc, NULL);
        if (ei->progress)
            ei->progress(ei->progress_user, p);
        ei->next_percent += 25;
    }
}

static int load_progress_cb(void *user, float fraction)
{
    struct engine_impl *ei = user;
    if (!(fraction >= 0.0f))        /* NaN or negative: ignore */
        return 0;
    if (fraction > 1.0f)
        fraction = 1.0f;
    /* 100 is reported once the load has returned, never from inside it. */
    int upto = (int)(fraction * 100.0f);
    if (upto >= 100)
        upto = 75;
    report_percent(ei, upto);
    return 0;
}

static int copy_opts(struct engine_impl *ei, const struct aarmd_opt *opts, uint32_t n)
{
    if (n == 0)
        return AARMD_OK;
    size_t bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!opts[i].key || !opts[i].value)
            return AARMD_EINVAL;
        bytes += strlen(opts[i].key) + strlen(opts[i].value) + 2;
    }
    ei->opts = calloc(n, sizeof *ei->opts);
    ei->opt_strings = malloc(bytes);
    if (!ei->opts || !ei->opt_strings)
        return AARMD_ENOMEM;
    char *at = ei->opt_strings;
    for (uint32_t i = 0; i < n; i++) {
        size_t kl = strlen(opts[i].key) + 1, vl = strlen(opts[i].value) + 1;
        memcpy(at, opts[i].key, kl);
        ei->opts[i].key = at;
        at += kl;
        memcpy(at, opts[i].value, vl);
        ei->opts[i].value = at;
        at += vl;
    }
    ei->n_opts = n;
    return AARMD_OK;
}

/* general.name, else the file's base name without ".gguf". */
static void find_model_name(const struct aarmd_gguf *g, const char *path, char *buf, size_t cap)
{
    if (aarmd_gguf_get_cstr(g, "general.name", buf, cap) == AARMD_OK && buf[0])
        return;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, base, n);
    buf[n] = '\0';
    if (n > 5 && !strcmp(buf + n - 5, ".gguf"))
        buf[n - 5] = '\0';
}

/*
 * A file without tensors (a vocab-only GGUF) has no decoder to describe; the
 * description then carries only the architecture, the vocabulary size and the
 * special ids, and the backend decides (the mock accepts it; a real backend
 * refuses "no tensors").
 */
static struct aarmd_model_desc *vocab_only_desc(struct engine_impl *ei)
{
    struct aarmd_engine *e = &ei->pub;
    struct aarmd_model_desc *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->struct_size = sizeof *d;
    if (aarmd_gguf_get_cstr(e->gguf, "general.architecture", ei->arch, sizeof ei->arch) != AARMD_OK)
        snprintf(ei->arch, sizeof ei->arch, "none");
    d->arch = ei->arch;
    d->name = e->model_name;
    d->n_vocab = aarmd_tokenizer_n_vocab(e->tok);
    char key[96];
    snprintf(key, sizeof key, "%s.context_length", ei->arch);
    if (aarmd_gguf_get_u32(e->gguf, key, &d->n_ctx_train) != AARMD_OK)
        d->n_ctx_train = 0;
    d->rope_freq_base = 10000.0f;
    d->rope_freq_base_swa = 10000.0f;
    d->rope_scale = 1.0f;
    d->embd_scale = 1.0f;
    d->norm_eps = 1e-5f;
    d->bos_id = aarmd_tokenizer_bos(e->tok);
    d->eos_id = aarmd_tokenizer_eos(e->tok);
    d->tensors = NULL;
    d->n_tensors = 0;
    return d;
}

int aarmd_engine_new(const struct aarmd_engine_opts *o, struct aarmd_engine **out, char *err, size_t errlen)
{
    char msg[1024] = "";
    int rc = AARMD_OK;
    struct engine_impl *ei = NULL;
    struct aarmd_engine *e = NULL;

    if (out)
        *out = NULL;
    if (!o || !out) {
        snprintf(err, errlen, "engine: invalid arguments");
        return AARMD_EINVAL;
    }
    if (!o->model_path || !o->model_path[0]) {
        snprintf(err, errlen, "model: no model file given");
        return AARMD_EINVAL;
    }
    ei = calloc(1, sizeof *ei);
    if (!ei) {
        snprintf(err, errlen, "engine: out of memory");
        return AARMD_ENOMEM;
    }
    e = &ei->pub;
    ei->progress = o->progress;
    ei->progress_user = o->progress_user;

    /* 1. the plugin, over a host that outlives it (options copied: the caller's may go) */
    rc = copy_opts(ei, o->opts, o->n_opts);
    if (rc != AARMD_OK) {
        snprintf(err, errlen, "plugin: %s", rc == AARMD_ENOMEM ? "out of memory" : "backend option without key or value");
        goto fail;
    }
    aarmd_plugin_host_init(&e->host, ei->opts, ei->n_opts, o->device);
    const char *backend = o->backend && o->backend[0] ? o->backend : "cpu";
    rc = aarmd_plugin_load(backend, o->plugin_dir, &e->host, &e->plugin, msg, sizeof msg);
    if (rc != AARMD_OK) {
        snprintf(err, errlen, "plugin: %s", msg);
        goto fail;
    }

    /* 2. the device */
    rc = aarmd_plugin_ctx_new(e->plugin, o->device, &e->ctx, msg, sizeof msg);
    if (rc != AARMD_OK) {
        snprintf(err, errlen, "device %d: %s", (int)o->device, msg);
        goto fail;
    }
    memset(&e->device, 0, sizeof e->device);
    e->device.struct_size = sizeof e->device;
    rc = aarmd_plugin_device_info(e->plugin, e->ctx, &e->device, msg, sizeof msg);
    if (rc != AARMD_OK) {
        snprintf(err, errlen, "device %d: device_info: %s", (int)o->device, msg);
        goto fail;
    }

    /* 3. the file: GGUF, tokenizer, description */
    if (!realpath(o->model_path, e->model_path)) {
        snprintf(err, errlen, "model: %s: %s", o->model_path, strerror(errno));
        rc = errno == ENOMEM ? AARMD_ENOMEM : AARMD_EIO;
        goto fail;
    }
    rc = aarmd_gguf_open(e->model_path, &e->gguf, msg, sizeof msg);
    if (rc != AARMD_OK) {
        /* gguf's messages start with the path already */
        snprintf(err, errlen, "model: %s", msg);
        goto fail;
    }
    find_model_name(e->gguf, e->model_path, e->model_name, sizeof e->model_name);
    aarmd_model_quant_kind(e->gguf, e->quant_kind, sizeof e->quant_kind);
    rc = aarmd_tokenizer_from_gguf(e->gguf, e->model_path, false, &e->tok, msg, sizeof msg);
    if (rc != AARMD_OK) {
        snprintf(err, errlen, "model: %s: tokenizer: %s", e->model_path, msg);
        goto fail;
    }
    if (aarmd_gguf_n_tensors(e->gguf) == 0) {
        e->desc = vocab_only_desc(ei);
        ei->desc_is_local = 1;
        if (!e->desc) {
            rc = AARMD_ENOMEM;
            snprintf(err, errlen, "model: %s: out of memory", e->model_path);
            goto fail;
        }
    } else {
        rc = aarmd_model_desc_from_gguf(e->gguf, &e->desc, msg, sizeof msg);
        if (rc != AARMD_OK) {
            snprintf(err, errlen, "model: %s: %s", e->model_path, msg);
            goto fail;
        }
    }

    /* 4. the weights */
    {
        const char *extra[] = {"model_ref", NULL, NULL};
        char ref[sizeof e->model_path + 8];
        snprintf(ref, sizeof ref, "\"%s\"", e->model_path);
        extra[1] = ref;
        struct aarmd_log_ctx lc = {.extra = extra};
        aarmd_log_ctx(AARMD_LOG_INFO, "model_load_start", &lc, "loading %s on %s", e->model_name,
                      aarmd_plugin_table(e->plugin)->name);
    }
    ei->next_percent = 0;
    report_percent(ei, 0);
    rc = aarmd_plugin_model_load(e->plugin, e->ctx, e->desc, load_progress_cb, ei, &e->model, msg, sizeof msg);
    if (rc != AARMD_OK) {
        snprintf(err, errlen, "model: %s: load: %s", e->model_path, msg);
        goto fail;
    }
    report_percent(ei, 100);
    e->model_bytes = aarmd_plugin_model_bytes(e->plugin, e->model);
    aarmd_log(AARMD_LOG_INFO, "model_load_complete", "%s: %llu bytes", e->model_name,
              (unsigned long long)e->model_bytes);

    *out = e;
    return AARMD_OK;

fail:
    if (rc == AARMD_OK)
        rc = AARMD_EINTERNAL;
    aarmd_engine_free(e);
    return rc;
}

void aarmd_engine_free(struct aarmd_engine *e)
{
    if (!e)
        return;
    struct engine_impl *ei = (struct engine_impl *)e;
    if (e->plugin) {
        if (e->model)
            aarmd_plugin_model_free(e->plugin, e->model);
        if (e->ctx)
            aarmd_plugin_ctx_free(e->plugin, e->ctx);
    }
    if (ei->desc_is_local)
        free(e->desc);
    else
        aarmd_model_desc_free(e->desc);
    aarmd_tokenizer_free(e->tok);
    aarmd_gguf_free(e->gguf);
    aarmd_plugin_free(e->plugin);
    free(ei->opts);
    free(ei->opt_strings);
    free(ei);
}
