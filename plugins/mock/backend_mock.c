/*
 * backend_mock.c — a fake backend for tests and CI: deterministic, peaked
 * logits from (seed, position, recent tokens) and injectable faults, driven by
 * --backend-opt knobs. It computes no model; it needs only n_vocab (and eos_id).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aarmd_backend.h"

#define MOCK_EXPORT __attribute__((visibility("default")))

MOCK_EXPORT const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host);
MOCK_EXPORT int aarmd_backend_probe(const struct aarmd_host *host, char *err, size_t errlen);

/* Preferred tokens come from [vocab_lo, vocab_hi); the defaults avoid the low
 * ids where byte-level vocabularies keep control and byte tokens. */
#define MOCK_VOCAB_LO 256u
#define MOCK_VOCAB_HI 1000u
#define MOCK_PEAK 10.0f          /* preferred token's lead over the background */
#define MOCK_HISTORY 4u          /* recent tokens that feed the hash */
#define MOCK_MAX_CTX (1u << 24)  /* seq_new refuses more (64 MiB of token ids) */

struct mock_opts {
    uint64_t delay_ms;
    uint64_t eos_after;     /* UINT64_MAX = off */
    uint64_t fail_load;
    uint64_t fail_at_step;  /* 0 = off */
    uint64_t oom_at_step;   /* 0 = off */
    uint64_t abi_minor;
    uint64_t struct_size;   /* 0 = sizeof(struct aarmd_backend) */
    uint64_t probe;
    uint64_t memory_bytes;
    uint64_t max_seqs;
    uint64_t seed;
    uint64_t vocab_lo;      /* UINT64_MAX = default */
    uint64_t vocab_hi;      /* UINT64_MAX = default */
};

struct aarmd_backend_ctx {
    const struct aarmd_host *host;
    int32_t device;
    struct mock_opts o;
    uint64_t n_steps;       /* step calls so far, all models of this ctx */
    uint64_t bytes_loaded;  /* sum of model_bytes of live models */
    struct aarmd_backend_model *models;   /* live models: ctx_free frees them */
};

struct aarmd_backend_model {
    struct aarmd_backend_ctx *ctx;
    uint32_t n_vocab;
    int32_t eos_id;
    uint32_t lo, hi;        /* preferred ids come from [lo, hi) */
    struct aarmd_backend_model *prev, *next;
    struct aarmd_backend_seq *seqs;        /* live sequences: model_free frees them */
};

struct aarmd_backend_seq {
    struct aarmd_backend_model *model;
    uint32_t n_ctx;
    uint32_t len;
    uint32_t prompt_len;    /* length when logits were first asked for; UINT32_MAX before */
    int32_t *tokens;        /* n_ctx */
    struct aarmd_backend_seq *prev, *next;
};

/* ---- options ------------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void mock_log(const struct aarmd_host *host, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void mock_log(const struct aarmd_host *host, int level, const char *fmt, ...)
{
    if (!host || !host->log)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    host->log(host->log_user, level, line);
}

static const struct {
    const char *key;
    size_t offset;
    uint64_t max;
} knobs[] = {
    {"delay_ms", offsetof(struct mock_opts, delay_ms), 3600u * 1000u},
    {"eos_after", offsetof(struct mock_opts, eos_after), UINT32_MAX},
    {"fail_load", offsetof(struct mock_opts, fail_load), 1},
    {"fail_at_step", offsetof(struct mock_opts, fail_at_step), UINT64_MAX},
    {"oom_at_step", offsetof(struct mock_opts, oom_at_step), UINT64_MAX},
    {"abi_minor", offsetof(struct mock_opts, abi_minor), UINT32_MAX},
    {"struct_size", offsetof(struct mock_opts, struct_size), UINT32_MAX},
    {"probe", offsetof(struct mock_opts, probe), 1},
    {"memory_bytes", offsetof(struct mock_opts, memory_bytes), UINT64_MAX},
    {"max_seqs", offsetof(struct mock_opts, max_seqs), UINT32_MAX},
    {"seed", offsetof(struct mock_opts, seed), UINT64_MAX},
    {"vocab_lo", offsetof(struct mock_opts, vocab_lo), UINT32_MAX},
    {"vocab_hi", offsetof(struct mock_opts, vocab_hi), UINT32_MAX},
};
#define N_KNOBS (sizeof knobs / sizeof knobs[0])
#define KNOB_LIST "delay_ms, eos_after, fail_load, fail_at_step, oom_at_step, abi_minor, " \
                  "struct_size, probe, memory_bytes, max_seqs, seed, vocab_lo, vocab_hi"

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Parses host->opts into o; on a bad option returns AARMD_EINVAL naming it. */
static int parse_opts(const struct aarmd_host *host, struct mock_opts *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->eos_after = UINT64_MAX;
    o->abi_minor = AARMD_ABI_MINOR;
    o->probe = 1;
    o->max_seqs = 8;
    o->vocab_lo = UINT64_MAX;
    o->vocab_hi = UINT64_MAX;
    if (!host)
        return AARMD_OK;
    for (uint32_t i = 0; i < host->n_opts && host->opts; i++) {
        const struct aarmd_opt *opt = &host->opts[i];
        if (!opt->key) {
            set_err(err, errlen, "mock: --backend-opt #%u has no key", (unsigned)i + 1);
            return AARMD_EINVAL;
        }
        size_t k = 0;
        while (k < N_KNOBS && strcmp(knobs[k].key, opt->key))
            k++;
        if (k == N_KNOBS) {
            set_err(err, errlen, "mock: unknown option '%s' (known: " KNOB_LIST ")", opt->key);
            return AARMD_EINVAL;
        }
        uint64_t v;
        if (parse_u64(opt->value, knobs[k].max, &v)) {
            set_err(err, errlen, "mock: option %s=%s: expected a non-negative integer <= %" PRIu64, opt->key,
                    opt->value ? opt->value : "(none)", knobs[k].max);
            return AARMD_EINVAL;
        }
        memcpy((char *)o + knobs[k].offset, &v, sizeof v);
    }
    return AARMD_OK;
}

/* ---- hashing -------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Hash of (seed, position of the last token, the last MOCK_HISTORY tokens). */
static uint64_t history_hash(const struct aarmd_backend_seq *s, uint64_t seed)
{
    uint64_t h = mix64(seed ^ 0x6d6f636b00000000ull);
    h = mix64(h ^ (uint64_t)(s->len - 1));
    for (uint32_t i = 0; i < MOCK_HISTORY && i < s->len; i++)
        h = mix64(h ^ (uint32_t)s->tokens[s->len - 1 - i]);
    return h;
}

/* Background in [-1, 1), the preferred token MOCK_PEAK above it. */
static void fill_logits(const struct aarmd_backend_seq *s, float *logits)
{
    const struct aarmd_backend_model *m = s->model;
    const struct mock_opts *o = &m->ctx->o;
    uint64_t h = history_hash(s, o->seed);
    for (uint32_t i = 0; i < m->n_vocab; i++) {
        uint64_t r = mix64(h + i);
        logits[i] = (float)(r >> 40) * (2.0f / 16777216.0f) - 1.0f;
    }
    uint32_t preferred = m->lo + (uint32_t)(mix64(h ^ 0x7072656600000000ull) % (m->hi - m->lo));
    if (o->eos_after != UINT64_MAX && s->prompt_len != UINT32_MAX && s->len - s->prompt_len >= o->eos_after)
        preferred = (uint32_t)m->eos_id;
    logits[preferred] += MOCK_PEAK;
}

/* ---- the table's methods --------------------------------------------------- */

static int mock_ctx_new(const struct aarmd_host *host, int32_t device, struct aarmd_backend_ctx **out,
                        char *err, size_t errlen)
{
    struct aarmd_backend_ctx *ctx = NULL;
    struct mock_opts o;
    int rc = parse_opts(host, &o, err, errlen);
    if (rc != AARMD_OK)
        return rc;
    if (device < 0) {
        set_err(err, errlen, "mock: device %d is invalid", (int)device);
        return AARMD_EINVAL;
    }
    if (o.vocab_lo != UINT64_MAX && o.vocab_hi != UINT64_MAX && o.vocab_lo >= o.vocab_hi) {
        set_err(err, errlen, "mock: vocab_lo %" PRIu64 " must be below vocab_hi %" PRIu64, o.vocab_lo, o.vocab_hi);
        return AARMD_EINVAL;
    }
    ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        set_err(err, errlen, "mock: out of memory");
        return AARMD_ENOMEM;
    }
    ctx->host = host;
    ctx->device = device;
    ctx->o = o;
    mock_log(host, AARMD_LOG_DEBUG, "mock: context on device %d, seed %" PRIu64, (int)device, o.seed);
    *out = ctx;
    return AARMD_OK;
}

static void mock_model_free(struct aarmd_backend_model *m);

static void mock_ctx_free(struct aarmd_backend_ctx *ctx)
{
    if (!ctx)
        return;
    while (ctx->models)
        mock_model_free(ctx->models);
    free(ctx);
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src);
}

static int mock_device_info(struct aarmd_backend_ctx *ctx, struct aarmd_device_info *info, char *err, size_t errlen)
{
    if (info->struct_size < offsetof(struct aarmd_device_info, advised_seqs) + sizeof info->advised_seqs) {
        set_err(err, errlen, "mock: device_info struct_size %u is too small", (unsigned)info->struct_size);
        return AARMD_EINVAL;
    }
    snprintf(info->name, sizeof info->name, "mock device %d", (int)ctx->device);
    info->memory_total = ctx->o.memory_bytes;
    info->memory_free = ctx->o.memory_bytes > ctx->bytes_loaded ? ctx->o.memory_bytes - ctx->bytes_loaded : 0;
    copy_str(info->memory_architecture, sizeof info->memory_architecture, "mock");
    copy_str(info->worker_type, sizeof info->worker_type, "mock");
    info->advised_seqs = (uint32_t)ctx->o.max_seqs;
    return AARMD_OK;
}

static int mock_model_load(struct aarmd_backend_ctx *ctx, const struct aarmd_model_desc *desc,
                           aarmd_progress_fn progress, void *progress_user, struct aarmd_backend_model **out,
                           char *err, size_t errlen)
{
    const struct mock_opts *o = &ctx->o;
    if (desc->struct_size < offsetof(struct aarmd_model_desc, eos_id) + sizeof desc->eos_id) {
        set_err(err, errlen, "mock: model description struct_size %u is too small", (unsigned)desc->struct_size);
        return AARMD_EINVAL;
    }
    if (o->fail_load) {
        set_err(err, errlen, "mock: model load failed on request (fail_load=1)");
        return AARMD_EIO;
    }
    if (desc->n_vocab == 0) {
        set_err(err, errlen, "mock: the model has no vocabulary (n_vocab 0)");
        return AARMD_EINVAL;
    }
    uint64_t lo = o->vocab_lo, hi = o->vocab_hi;
    if (hi == UINT64_MAX)
        hi = desc->n_vocab < MOCK_VOCAB_HI ? desc->n_vocab : MOCK_VOCAB_HI;
    if (lo == UINT64_MAX)
        lo = hi > MOCK_VOCAB_LO ? MOCK_VOCAB_LO : 0;
    if (lo >= hi || hi > desc->n_vocab) {
        set_err(err, errlen, "mock: preferred-token range [%" PRIu64 ", %" PRIu64 ") does not fit n_vocab %u", lo, hi,
                (unsigned)desc->n_vocab);
        return AARMD_EINVAL;
    }
    if (o->eos_after != UINT64_MAX && (desc->eos_id < 0 || (uint32_t)desc->eos_id >= desc->n_vocab)) {
        set_err(err, errlen, "mock: eos_after given but the model's eos_id %d is not a token", (int)desc->eos_id);
        return AARMD_EINVAL;
    }
    if (progress && progress(progress_user, 0.0f)) {
        set_err(err, errlen, "mock: model load cancelled");
        return AARMD_ECANCELLED;
    }
    struct aarmd_backend_model *m = calloc(1, sizeof *m);
    if (!m) {
        set_err(err, errlen, "mock: out of memory");
        return AARMD_ENOMEM;
    }
    m->ctx = ctx;
    m->n_vocab = desc->n_vocab;
    m->eos_id = desc->eos_id;
    m->lo = (uint32_t)lo;
    m->hi = (uint32_t)hi;
    if (progress && progress(progress_user, 1.0f)) {
        free(m);
        set_err(err, errlen, "mock: model load cancelled");
        return AARMD_ECANCELLED;
    }
    ctx->bytes_loaded += o->memory_bytes;
    m->next = ctx->models;
    if (ctx->models)
        ctx->models->prev = m;
    ctx->models = m;
    mock_log(ctx->host, AARMD_LOG_DEBUG, "mock: model '%s' loaded, n_vocab %u", desc->name ? desc->name : "?",
             (unsigned)m->n_vocab);
    *out = m;
    return AARMD_OK;
}

static void mock_seq_free(struct aarmd_backend_seq *s);

static void mock_model_free(struct aarmd_backend_model *m)
{
    if (!m)
        return;
    while (m->seqs)
        mock_seq_free(m->seqs);
    if (m->prev)
        m->prev->next = m->next;
    else
        m->ctx->models = m->next;
    if (m->next)
        m->next->prev = m->prev;
    m->ctx->bytes_loaded -= m->ctx->o.memory_bytes < m->ctx->bytes_loaded ? m->ctx->o.memory_bytes
                                                                          : m->ctx->bytes_loaded;
    free(m);
}

static uint64_t mock_model_bytes(struct aarmd_backend_model *m)
{
    return m->ctx->o.memory_bytes;
}

static int mock_seq_new(struct aarmd_backend_model *m, uint32_t n_ctx, struct aarmd_backend_seq **out, char *err,
                        size_t errlen)
{
    if (n_ctx == 0 || n_ctx > MOCK_MAX_CTX) {
        set_err(err, errlen, "mock: n_ctx %u is out of range (1..%u)", (unsigned)n_ctx, MOCK_MAX_CTX);
        return AARMD_EINVAL;
    }
    struct aarmd_backend_seq *s = calloc(1, sizeof *s);
    if (!s)
        goto oom;
    s->tokens = malloc((size_t)n_ctx * sizeof *s->tokens);
    if (!s->tokens)
        goto oom;
    s->model = m;
    s->n_ctx = n_ctx;
    s->prompt_len = UINT32_MAX;
    s->next = m->seqs;
    if (m->seqs)
        m->seqs->prev = s;
    m->seqs = s;
    *out = s;
    return AARMD_OK;
oom:
    free(s);
    set_err(err, errlen, "mock: out of memory for a sequence of %u tokens", (unsigned)n_ctx);
    return AARMD_ENOMEM;
}

static void mock_seq_free(struct aarmd_backend_seq *s)
{
    if (!s)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        s->model->seqs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s->tokens);
    free(s);
}

static int mock_seq_truncate(struct aarmd_backend_seq *s, uint32_t n, char *err, size_t errlen)
{
    if (n > s->len) {
        set_err(err, errlen, "mock: cannot truncate a sequence of %u tokens to %u", (unsigned)s->len, (unsigned)n);
        return AARMD_EINVAL;
    }
    s->len = n;
    if (s->prompt_len != UINT32_MAX && n < s->prompt_len)
        s->prompt_len = UINT32_MAX;
    return AARMD_OK;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

static int mock_step(struct aarmd_backend_model *m, const struct aarmd_batch_entry *entries, uint32_t n_entries,
                     char *err, size_t errlen)
{
    struct aarmd_backend_ctx *ctx = m->ctx;
    uint64_t step_no = ++ctx->n_steps;

    if (ctx->o.delay_ms)
        sleep_ms(ctx->o.delay_ms);
    if (ctx->o.fail_at_step && step_no == ctx->o.fail_at_step) {
        set_err(err, errlen, "mock: injected device error at step %" PRIu64 " (fail_at_step)", step_no);
        return AARMD_EDEVICE;
    }
    if (ctx->o.oom_at_step && step_no == ctx->o.oom_at_step) {
        set_err(err, errlen, "mock: injected out of memory at step %" PRIu64 " (oom_at_step)", step_no);
        return AARMD_ENOMEM;
    }
    /* validate everything first: on EINVAL no sequence moves */
    for (uint32_t i = 0; i < n_entries; i++) {
        const struct aarmd_batch_entry *e = &entries[i];
        if (e->seq->model != m) {
            set_err(err, errlen, "mock: entry %u: the sequence belongs to another model", (unsigned)i);
            return AARMD_EINVAL;
        }
        if (e->n_tokens > e->seq->n_ctx - e->seq->len) {
            set_err(err, errlen, "mock: entry %u: context full (%u of %u tokens used, %u more asked)", (unsigned)i,
                    (unsigned)e->seq->len, (unsigned)e->seq->n_ctx, (unsigned)e->n_tokens);
            return AARMD_EINVAL;
        }
        for (uint32_t t = 0; t < e->n_tokens; t++) {
            if (e->tokens[t] < 0 || (uint32_t)e->tokens[t] >= m->n_vocab) {
                set_err(err, errlen, "mock: entry %u: token %d is out of range (n_vocab %u)", (unsigned)i,
                        (int)e->tokens[t], (unsigned)m->n_vocab);
                return AARMD_EINVAL;
            }
        }
    }
    for (uint32_t i = 0; i < n_entries; i++) {
        const struct aarmd_batch_entry *e = &entries[i];
        struct aarmd_backend_seq *s = e->seq;
        memcpy(s->tokens + s->len, e->tokens, (size_t)e->n_tokens * sizeof *e->tokens);
        s->len += e->n_tokens;
        if (e->want_logits) {
            if (s->prompt_len == UINT32_MAX)
                s->prompt_len = s->len;
            fill_logits(s, e->logits);
        }
    }
    return AARMD_OK;
}

/* ---- entry and probe ------------------------------------------------------ */

static const struct aarmd_backend mock_table = {
    .abi_major = AARMD_ABI_MAJOR,
    .abi_minor = AARMD_ABI_MINOR,
    .struct_size = sizeof(struct aarmd_backend),
    .name = "mock",
    .version = "1.0.0",
    .ctx_new = mock_ctx_new,
    .ctx_free = mock_ctx_free,
    .device_info = mock_device_info,
    .model_load = mock_model_load,
    .model_free = mock_model_free,
    .model_bytes = mock_model_bytes,
    .seq_new = mock_seq_new,
    .seq_free = mock_seq_free,
    .seq_truncate = mock_seq_truncate,
    .step = mock_step,
};

/* Tables whose abi_minor / struct_size were overridden by knobs (loader
 * tests). Each variant is made once and lives until unload, so plugins loaded
 * at the same time with different knobs do not overwrite each other. */
#define MOCK_VARIANTS 16
static struct aarmd_backend variants[MOCK_VARIANTS];
static unsigned n_variants;
static pthread_mutex_t variants_lock = PTHREAD_MUTEX_INITIALIZER;

const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host)
{
    struct mock_opts o;
    char err[256];
    if (parse_opts(host, &o, err, sizeof err) != AARMD_OK) {
        /* ctx_new reports the same error; the table itself is still valid */
        return &mock_table;
    }
    if (o.abi_minor == AARMD_ABI_MINOR && o.struct_size == 0)
        return &mock_table;
    uint32_t minor = (uint32_t)o.abi_minor;
    uint32_t size = o.struct_size ? (uint32_t)o.struct_size : (uint32_t)sizeof(struct aarmd_backend);
    const struct aarmd_backend *found = NULL;
    pthread_mutex_lock(&variants_lock);
    for (unsigned i = 0; i < n_variants && !found; i++)
        if (variants[i].abi_minor == minor && variants[i].struct_size == size)
            found = &variants[i];
    if (!found && n_variants < MOCK_VARIANTS) {
        variants[n_variants] = mock_table;
        variants[n_variants].abi_minor = minor;
        variants[n_variants].struct_size = size;
        found = &variants[n_variants++];
    }
    pthread_mutex_unlock(&variants_lock);
    if (!found)
        mock_log(host, AARMD_LOG_ERROR, "mock: more than %d abi_minor/struct_size variants", MOCK_VARIANTS);
    return found;
}

int aarmd_backend_probe(const struct aarmd_host *host, char *err, size_t errlen)
{
    struct mock_opts o;
    if (parse_opts(host, &o, err, errlen) != AARMD_OK)
        return AARMD_OK;   /* ctx_new names the bad option */
    if (!o.probe) {
        set_err(err, errlen, "mock: refusing to run on request (probe=0)");
        return AARMD_EUNSUPPORTED;
    }
    return AARMD_OK;
}
