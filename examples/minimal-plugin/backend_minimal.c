/*
 * backend_minimal.c — the smallest complete aarmd backend, built outside the
 * aarmd tree against the installed <aarmd_backend.h> only. It runs no network:
 * after token t it predicts t+1 (mod n_vocab). Copy it to start a real backend.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <aarmd_backend.h>

/* Build with -fvisibility=hidden: only these two symbols leave the .so. */
#define MINIMAL_EXPORT __attribute__((visibility("default")))
MINIMAL_EXPORT const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host);
MINIMAL_EXPORT int aarmd_backend_probe(const struct aarmd_host *host, char *err, size_t errlen);

struct aarmd_backend_ctx {
    const struct aarmd_host *host;
};

struct aarmd_backend_model {
    uint32_t n_vocab;
};

struct aarmd_backend_seq {
    struct aarmd_backend_model *model;
    uint32_t n_ctx, len;
    int32_t last;   /* the last token appended */
};

static int minimal_ctx_new(const struct aarmd_host *host, int32_t device, struct aarmd_backend_ctx **out,
                           char *err, size_t errlen)
{
    /* every option is somebody's typo here: refuse what we do not know */
    if (host->n_opts > 0) {
        snprintf(err, errlen, "minimal: unknown option '%s' (this backend has none)", host->opts[0].key);
        return AARMD_EINVAL;
    }
    if (device != 0) {
        snprintf(err, errlen, "minimal: device %d does not exist (only device 0)", (int)device);
        return AARMD_EINVAL;
    }
    struct aarmd_backend_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        snprintf(err, errlen, "minimal: out of memory");
        return AARMD_ENOMEM;
    }
    ctx->host = host;
    if (host->log)
        host->log(host->log_user, AARMD_LOG_DEBUG, "minimal: context created");
    *out = ctx;
    return AARMD_OK;
}

static void minimal_ctx_free(struct aarmd_backend_ctx *ctx)
{
    free(ctx);
}

static int minimal_model_load(struct aarmd_backend_ctx *ctx, const struct aarmd_model_desc *desc,
                              aarmd_progress_fn progress, void *progress_user, struct aarmd_backend_model **out,
                              char *err, size_t errlen)
{
    /* read only what the host's description is large enough to hold */
    if (desc->struct_size < offsetof(struct aarmd_model_desc, n_vocab) + sizeof desc->n_vocab || desc->n_vocab == 0) {
        snprintf(err, errlen, "minimal: the model has no vocabulary");
        return AARMD_EINVAL;
    }
    if (progress && progress(progress_user, 1.0f)) {
        snprintf(err, errlen, "minimal: load cancelled");
        return AARMD_ECANCELLED;
    }
    struct aarmd_backend_model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "minimal: out of memory");
        return AARMD_ENOMEM;
    }
    m->n_vocab = desc->n_vocab;
    *out = m;
    return AARMD_OK;
}

static void minimal_model_free(struct aarmd_backend_model *m)
{
    free(m);
}

static int minimal_seq_new(struct aarmd_backend_model *m, uint32_t n_ctx, struct aarmd_backend_seq **out, char *err,
                           size_t errlen)
{
    struct aarmd_backend_seq *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "minimal: out of memory");
        return AARMD_ENOMEM;
    }
    s->model = m;
    s->n_ctx = n_ctx;
    *out = s;
    return AARMD_OK;
}

static void minimal_seq_free(struct aarmd_backend_seq *s)
{
    free(s);
}

static int minimal_step(struct aarmd_backend_model *m, const struct aarmd_batch_entry *entries, uint32_t n_entries,
                        char *err, size_t errlen)
{
    /* check the whole batch first: on EINVAL no sequence may move */
    for (uint32_t i = 0; i < n_entries; i++) {
        const struct aarmd_batch_entry *e = &entries[i];
        if (e->n_tokens > e->seq->n_ctx - e->seq->len) {
            snprintf(err, errlen, "minimal: entry %u: context full", (unsigned)i);
            return AARMD_EINVAL;
        }
        for (uint32_t t = 0; t < e->n_tokens; t++) {
            if (e->tokens[t] < 0 || (uint32_t)e->tokens[t] >= m->n_vocab) {
                snprintf(err, errlen, "minimal: entry %u: token %d is out of range", (unsigned)i, (int)e->tokens[t]);
                return AARMD_EINVAL;
            }
        }
    }
    for (uint32_t i = 0; i < n_entries; i++) {
        const struct aarmd_batch_entry *e = &entries[i];
        e->seq->len += e->n_tokens;
        e->seq->last = e->tokens[e->n_tokens - 1];
        if (e->want_logits) {
            for (uint32_t v = 0; v < m->n_vocab; v++)
                e->logits[v] = 0.0f;
            e->logits[((uint32_t)e->seq->last + 1) % m->n_vocab] = 1.0f;
        }
    }
    return AARMD_OK;
}

/* Designated initializers: an omitted optional slot (device_info,
 * model_bytes, seq_truncate, and ABI 1.1's kv_info and seq_fork: no paged
 * KV cache, see docs/PLUGINS.md) is NULL and the host supplies its default. */
static const struct aarmd_backend minimal_table = {
    .abi_major = AARMD_ABI_MAJOR,
    .abi_minor = AARMD_ABI_MINOR,
    .struct_size = sizeof(struct aarmd_backend),
    .name = "minimal",
    .version = "1.0",
    .ctx_new = minimal_ctx_new,
    .ctx_free = minimal_ctx_free,
    .model_load = minimal_model_load,
    .model_free = minimal_model_free,
    .seq_new = minimal_seq_new,
    .seq_free = minimal_seq_free,
    .step = minimal_step,
};

const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host)
{
    (void)host;
    return &minimal_table;
}

int aarmd_backend_probe(const struct aarmd_host *host, char *err, size_t errlen)
{
    /* a host with another major would misread our table: say so early */
    if (host->abi_major != AARMD_ABI_MAJOR) {
        snprintf(err, errlen, "minimal: built for ABI %d, host has %u", AARMD_ABI_MAJOR, (unsigned)host->abi_major);
        return AARMD_EUNSUPPORTED;
    }
    return AARMD_OK;
}
