/*
 * test_cli_plugin_check_kvbreak.c — backend_kvbreak, a test-only plugin that
 * wraps another backend (--backend-opt inner=PATH, normally the mock) and
 * breaks one rule of the paged-KV contract (--backend-opt kvbreak=MODE), so
 * the test of `plugin-check` can see each kv check fail. Not a real backend.
 *
 * Modes: none (forward everything), info (blocks_free above the total),
 * leak (every 4th seq_free keeps the inner sequence), advance (a step refused
 * with AARMD_ENOMEM first steps its first entry alone), fork-round (seq_fork
 * rounds n down to a multiple of block_tokens instead of refusing it),
 * batch (a step of several entries swaps the first two entries' logits).
 * Every other option goes to the inner backend.
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aarmd_backend.h"

#define EXPORT __attribute__((visibility("default")))

enum kv_break { BREAK_NONE, BREAK_INFO, BREAK_LEAK, BREAK_ADVANCE, BREAK_FORK_ROUND, BREAK_BATCH };

struct aarmd_backend_ctx {
    void *dl;
    const struct aarmd_backend *in;
    struct aarmd_backend_ctx *inner;
    struct aarmd_host host;          /* the host, less our options */
    struct aarmd_opt *opts;
    int mode;
    unsigned n_freed;
};

struct aarmd_backend_model {
    struct aarmd_backend_ctx *ctx;
    struct aarmd_backend_model *inner;
};

struct aarmd_backend_seq {
    struct aarmd_backend_model *m;
    struct aarmd_backend_seq *inner;
};

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

static void kb_ctx_free(struct aarmd_backend_ctx *c)
{
    if (!c)
        return;
    if (c->inner)
        c->in->ctx_free(c->inner);
    if (c->dl)
        dlclose(c->dl);
    free(c->opts);
    free(c);
}

static int kb_ctx_new(const struct aarmd_host *host, int32_t device, struct aarmd_backend_ctx **out, char *err,
                      size_t errlen)
{
    static const char *const modes[] = {"none", "info", "leak", "advance", "fork-round", "batch"};
    const char *inner = NULL;
    int rc = AARMD_EINVAL;
    struct aarmd_backend_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return fail(err, errlen, AARMD_ENOMEM, "kvbreak: out of memory");
    c->opts = calloc(host->n_opts + 1, sizeof *c->opts);
    if (!c->opts) {
        rc = fail(err, errlen, AARMD_ENOMEM, "kvbreak: out of memory");
        goto fail;
    }
    c->host = *host;
    c->host.opts = c->opts;
    c->host.n_opts = 0;
    for (uint32_t i = 0; i < host->n_opts; i++) {
        const struct aarmd_opt *o = &host->opts[i];
        if (!strcmp(o->key, "inner")) {
            inner = o->value;
        } else if (!strcmp(o->key, "kvbreak")) {
            c->mode = -1;
            for (int k = 0; k < (int)(sizeof modes / sizeof modes[0]); k++)
                if (!strcmp(o->value, modes[k]))
                    c->mode = k;
            if (c->mode < 0) {
                fail(err, errlen, AARMD_EINVAL, "kvbreak: unknown mode '%s'", o->value);
                goto fail;
            }
        } else {
            c->opts[c->host.n_opts++] = *o;
        }
    }
    if (!inner) {
        fail(err, errlen, AARMD_EINVAL, "kvbreak: give the wrapped backend with inner=PATH");
        goto fail;
    }
    c->dl = dlopen(inner, RTLD_NOW | RTLD_LOCAL);
    aarmd_backend_entry_fn entry = c->dl ? (aarmd_backend_entry_fn)dlsym(c->dl, AARMD_BACKEND_ENTRY_SYMBOL) : NULL;
    c->in = entry ? entry(&c->host) : NULL;
    if (!c->in) {
        fail(err, errlen, AARMD_EINVAL, "kvbreak: cannot load %s: %s", inner, c->dl ? "no table" : dlerror());
        goto fail;
    }
    if (c->in->abi_minor < 1 || !c->in->kv_info || !c->in->seq_fork) {
        fail(err, errlen, AARMD_EINVAL, "kvbreak: %s has no ABI 1.1 kv_info and seq_fork", inner);
        goto fail;
    }
    rc = c->in->ctx_new(&c->host, device, &c->inner, err, errlen);
    if (rc != AARMD_OK)
        goto fail;
    *out = c;
    return AARMD_OK;
fail:
    kb_ctx_free(c);
    return rc;
}

static int kb_model_load(struct aarmd_backend_ctx *c, const struct aarmd_model_desc *d, aarmd_progress_fn progress,
                         void *user, struct aarmd_backend_model **out, char *err, size_t errlen)
{
    struct aarmd_backend_model *m = calloc(1, sizeof *m);
    if (!m)
        return fail(err, errlen, AARMD_ENOMEM, "kvbreak: out of memory");
    m->ctx = c;
    int rc = c->in->model_load(c->inner, d, progress, user, &m->inner, err, errlen);
    if (rc != AARMD_OK) {
        free(m);
        return rc;
    }
    *out = m;
    return AARMD_OK;
}

static void kb_model_free(struct aarmd_backend_model *m)
{
    if (!m)
        return;
    m->ctx->in->model_free(m->inner);   /* also every inner sequence left behind */
    free(m);
}

static int kb_seq_new(struct aarmd_backend_model *m, uint32_t n_ctx, struct aarmd_backend_seq **out, char *err,
                      size_t errlen)
{
    struct aarmd_backend_seq *s = calloc(1, sizeof *s);
    if (!s)
        return fail(err, errlen, AARMD_ENOMEM, "kvbreak: out of memory");
    s->m = m;
    int rc = m->ctx->in->seq_new(m->inner, n_ctx, &s->inner, err, errlen);
    if (rc != AARMD_OK) {
        free(s);
        return rc;
    }
    *out = s;
    return AARMD_OK;
}

static void kb_seq_free(struct aarmd_backend_seq *s)
{
    if (!s)
        return;
    struct aarmd_backend_ctx *c = s->m->ctx;
    if (!(c->mode == BREAK_LEAK && ++c->n_freed % 4 == 0))
        c->in->seq_free(s->inner);
    free(s);
}

static int kb_seq_truncate(struct aarmd_backend_seq *s, uint32_t n, char *err, size_t errlen)
{
    return s->m->ctx->in->seq_truncate(s->inner, n, err, errlen);
}

static int kb_step(struct aarmd_backend_model *m, const struct aarmd_batch_entry *entries, uint32_t n, char *err,
                   size_t errlen)
{
    struct aarmd_backend_ctx *c = m->ctx;
    if (n == 0)
        return fail(err, errlen, AARMD_EINVAL, "kvbreak: empty step");
    struct aarmd_batch_entry *in = malloc((size_t)n * sizeof *in);
    if (!in)
        return fail(err, errlen, AARMD_ENOMEM, "kvbreak: out of memory");
    for (uint32_t i = 0; i < n; i++) {
        in[i] = entries[i];
        in[i].seq = entries[i].seq->inner;
    }
    if (c->mode == BREAK_BATCH && n > 1 && in[0].want_logits && in[1].want_logits) {
        float *l = in[0].logits;
        in[0].logits = in[1].logits;
        in[1].logits = l;
    }
    int rc = c->in->step(m->inner, in, n, err, errlen);
    if (rc == AARMD_ENOMEM && c->mode == BREAK_ADVANCE && n > 1) {
        char ignored[256];
        c->in->step(m->inner, in, 1, ignored, sizeof ignored);   /* the first entry moves after all */
    }
    free(in);
    return rc;
}

static int kb_kv_info(struct aarmd_backend_model *m, struct aarmd_kv_info *info, char *err, size_t errlen)
{
    int rc = m->ctx->in->kv_info(m->inner, info, err, errlen);
    if (rc == AARMD_OK && m->ctx->mode == BREAK_INFO)
        info->blocks_free = info->blocks_total + 1;
    return rc;
}

static int kb_seq_fork(struct aarmd_backend_seq *src, uint32_t n_tokens, uint32_t n_ctx,
                       struct aarmd_backend_seq **out, char *err, size_t errlen)
{
    struct aarmd_backend_model *m = src->m;
    if (m->ctx->mode == BREAK_FORK_ROUND) {
        struct aarmd_kv_info info = {.struct_size = sizeof info};
        if (m->ctx->in->kv_info(m->inner, &info, err, errlen) == AARMD_OK && info.block_tokens)
            n_tokens -= n_tokens % info.block_tokens;
    }
    struct aarmd_backend_seq *s = calloc(1, sizeof *s);
    if (!s)
        return fail(err, errlen, AARMD_ENOMEM, "kvbreak: out of memory");
    s->m = m;
    int rc = m->ctx->in->seq_fork(src->inner, n_tokens, n_ctx, &s->inner, err, errlen);
    if (rc != AARMD_OK) {
        free(s);
        *out = NULL;
        return rc;
    }
    *out = s;
    return AARMD_OK;
}

static const struct aarmd_backend kvbreak_table = {
    .abi_major = AARMD_ABI_MAJOR,
    .abi_minor = AARMD_ABI_MINOR,
    .struct_size = sizeof(struct aarmd_backend),
    .name = "kvbreak",
    .version = "test",
    .ctx_new = kb_ctx_new,
    .ctx_free = kb_ctx_free,
    .model_load = kb_model_load,
    .model_free = kb_model_free,
    .seq_new = kb_seq_new,
    .seq_free = kb_seq_free,
    .seq_truncate = kb_seq_truncate,
    .step = kb_step,
    .kv_info = kb_kv_info,
    .seq_fork = kb_seq_fork,
};

EXPORT const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host);
const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host)
{
    (void)host;
    return &kvbreak_table;
}
