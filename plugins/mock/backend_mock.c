/*
 * backend_mock.c — a fake backend for tests and CI: deterministic, peaked
 * logits from (seed, the sequence's whole token history), injectable faults
 * and an optional simulated paged KV pool (mock_kv.c), driven by
 * --backend-opt knobs. It computes no model; it needs only n_vocab (and eos_id).
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aarmd_backend.h"
#include "mock_kv.h"

#define MOCK_EXPORT __attribute__((visibility("default")))

MOCK_EXPORT const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host);
MOCK_EXPORT int aarmd_backend_probe(const struct aarmd_host *host, char *err, size_t errlen);

/* Preferred tokens come from [vocab_lo, vocab_hi); the defaults avoid the low
 * ids where byte-level vocabularies keep control and byte tokens. */
#define MOCK_VOCAB_LO 256u
#define MOCK_VOCAB_HI 1000u
#define MOCK_PEAK 10.0f          /* preferred token's lead over the background */
#define MOCK_MAX_CTX (1u << 24)  /* seq_new refuses more (128 MiB of history hashes) */
#define MOCK_MAX_POOL (1u << 24) /* positions in a paged pool, at most (128 MiB) */
#define MOCK_BLOCK_TOKENS 16u    /* kv_block_tokens default */
#define MOCK_BLOCK_BYTES 65536u  /* kv_block_bytes default */

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
    uint64_t kv_blocks;     /* 0 = not paged (unless kv_mb) */
    uint64_t kv_block_tokens;
    uint64_t kv_block_bytes;
    uint64_t kv_mb;         /* 0 = off; else kv_blocks = kv_mb MiB / kv_block_bytes */
    uint64_t logits_alloc;  /* 1: logits_alloc hands out buffers; 0: it returns NULL (host mallocs) */
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
    int paged;              /* 1: sequences live in kv's blocks */
    struct mock_kv kv;
    struct aarmd_backend_model *prev, *next;
    struct aarmd_backend_seq *seqs;        /* live sequences: model_free frees them */
    uint64_t logits_live;   /* buffers from logits_alloc not yet freed */
    uint64_t logits_given;  /* buffers logits_alloc handed out in all (a host that reuses them asks rarely) */
};

struct aarmd_backend_seq {
    struct aarmd_backend_model *model;
    uint32_t n_ctx;
    uint32_t len;
    uint32_t prompt_len;    /* length when logits were first asked for; UINT32_MAX before */
    uint64_t *hist;         /* not paged: [n_ctx] rolling history hash per position */
    struct mock_kv_table tbl;   /* paged: the same values, in the model's blocks */
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
    {"kv_blocks", offsetof(struct mock_opts, kv_blocks), UINT32_MAX},
    {"kv_block_tokens", offsetof(struct mock_opts, kv_block_tokens), 4096},
    {"kv_block", offsetof(struct mock_opts, kv_block_tokens), 4096},   /* the CPU/Metal name */
    {"kv_block_bytes", offsetof(struct mock_opts, kv_block_bytes), UINT64_MAX},
    {"kv_mb", offsetof(struct mock_opts, kv_mb), UINT32_MAX},
    {"logits_alloc", offsetof(struct mock_opts, logits_alloc), 1},
};
#define N_KNOBS (sizeof knobs / sizeof knobs[0])
#define KNOB_LIST "delay_ms, eos_after, fail_load, fail_at_step, oom_at_step, abi_minor, " \
                  "struct_size, probe, memory_bytes, max_seqs, seed, vocab_lo, vocab_hi, kv_blocks, " \
                  "kv_block_tokens (alias kv_block), kv_block_bytes, kv_mb, logits_alloc"

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

/* The paged-KV knobs together: resolves kv_mb into kv_blocks and bounds the pool. */
static int check_kv_opts(struct mock_opts *o, char *err, size_t errlen)
{
    if (o->kv_block_tokens == 0) {
        set_err(err, errlen, "mock: kv_block_tokens must be 1..4096 (got 0)");
        return AARMD_EINVAL;
    }
    if (o->kv_block_bytes == 0) {
        set_err(err, errlen, "mock: kv_block_bytes must be at least 1 (got 0)");
        return AARMD_EINVAL;
    }
    if (o->kv_mb) {
        if (o->kv_blocks) {
            set_err(err, errlen, "mock: give kv_blocks=%" PRIu64 " or kv_mb=%" PRIu64 ", not both", o->kv_blocks,
                    o->kv_mb);
            return AARMD_EINVAL;
        }
        o->kv_blocks = (o->kv_mb << 20) / o->kv_block_bytes;
        if (o->kv_blocks == 0) {
            set_err(err, errlen, "mock: kv_mb=%" PRIu64 " holds no block of kv_block_bytes=%" PRIu64, o->kv_mb,
                    o->kv_block_bytes);
            return AARMD_EINVAL;
        }
    }
    if (o->kv_blocks * o->kv_block_tokens > MOCK_MAX_POOL) {
        set_err(err, errlen,
                "mock: a pool of %" PRIu64 " blocks of %" PRIu64 " tokens exceeds the mock's %u positions",
                o->kv_blocks, o->kv_block_tokens, MOCK_MAX_POOL);
        return AARMD_EINVAL;
    }
    return AARMD_OK;
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
    o->kv_block_tokens = MOCK_BLOCK_TOKENS;
    o->kv_block_bytes = MOCK_BLOCK_BYTES;
    o->logits_alloc = 1;
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
    return check_kv_opts(o, err, errlen);
}

/* ---- hashing -------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The history value of position pos: in the sequence's own array or its blocks.
 * Position p holds mix64(value of p-1 ^ token p), so it is a function of the
 * seed and tokens 0..p alone; a forked sequence reads the same values. */
static uint64_t *hist_slot(const struct aarmd_backend_seq *s, uint32_t pos)
{
    if (s->model->paged)
        return mock_kv_slot(&s->model->kv, &s->tbl, pos);
    return &s->hist[pos];
}

static uint64_t hist_root(uint64_t seed)
{
    return mix64(seed ^ 0x6d6f636b00000000ull);
}

/* Background in [-1, 1), the preferred token MOCK_PEAK above it; both depend
 * on (seed, history) alone. */
static void fill_logits(const struct aarmd_backend_seq *s, float *logits)
{
    const struct aarmd_backend_model *m = s->model;
    const struct mock_opts *o = &m->ctx->o;
    uint64_t h = mix64(*hist_slot(s, s->len - 1));
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
    int rc = AARMD_ENOMEM;
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
    if (o->kv_blocks) {
        if (mock_kv_init(&m->kv, (uint32_t)o->kv_blocks, (uint32_t)o->kv_block_tokens, o->kv_block_bytes)) {
            set_err(err, errlen, "mock: out of memory for a KV pool of %" PRIu64 " blocks", o->kv_blocks);
            goto fail;
        }
        m->paged = 1;
    }
    if (progress && progress(progress_user, 1.0f)) {
        set_err(err, errlen, "mock: model load cancelled");
        rc = AARMD_ECANCELLED;
        goto fail;
    }
    ctx->bytes_loaded += o->memory_bytes;
    m->next = ctx->models;
    if (ctx->models)
        ctx->models->prev = m;
    ctx->models = m;
    mock_log(ctx->host, AARMD_LOG_DEBUG, "mock: model '%s' loaded, n_vocab %u, %s", desc->name ? desc->name : "?",
             (unsigned)m->n_vocab, m->paged ? "paged KV" : "KV not paged");
    *out = m;
    return AARMD_OK;
fail:
    mock_kv_fini(&m->kv);
    free(m);
    return rc;
}

static void mock_seq_free(struct aarmd_backend_seq *s);

static void mock_model_free(struct aarmd_backend_model *m)
{
    if (!m)
        return;
    while (m->seqs)
        mock_seq_free(m->seqs);
    if (m->logits_live)   /* ABI 1.2: the host frees its logits buffers before the model */
        mock_log(m->ctx->host, AARMD_LOG_ERROR, "mock: model freed with %" PRIu64 " logits buffers not freed",
                 m->logits_live);
    mock_log(m->ctx->host, AARMD_LOG_INFO, "mock: model freed; %" PRIu64 " logits buffers handed out in all",
             m->logits_given);
    if (m->prev)
        m->prev->next = m->next;
    else
        m->ctx->models = m->next;
    if (m->next)
        m->next->prev = m->prev;
    m->ctx->bytes_loaded -= m->ctx->o.memory_bytes < m->ctx->bytes_loaded ? m->ctx->o.memory_bytes
                                                                          : m->ctx->bytes_loaded;
    mock_kv_fini(&m->kv);
    free(m);
}

static uint64_t mock_model_bytes(struct aarmd_backend_model *m)
{
    return m->ctx->o.memory_bytes;
}

/* An empty sequence of m (not linked yet); NULL when out of memory. */
static struct aarmd_backend_seq *seq_alloc(struct aarmd_backend_model *m, uint32_t n_ctx)
{
    struct aarmd_backend_seq *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (m->paged ? mock_kv_table_init(&m->kv, &s->tbl, n_ctx) != 0
                 : (s->hist = malloc((size_t)n_ctx * sizeof *s->hist)) == NULL) {
        free(s->tbl.ids);
        free(s);
        return NULL;
    }
    s->model = m;
    s->n_ctx = n_ctx;
    s->prompt_len = UINT32_MAX;
    return s;
}

static void seq_link(struct aarmd_backend_seq *s)
{
    struct aarmd_backend_model *m = s->model;
    s->next = m->seqs;
    if (m->seqs)
        m->seqs->prev = s;
    m->seqs = s;
}

static int mock_seq_new(struct aarmd_backend_model *m, uint32_t n_ctx, struct aarmd_backend_seq **out, char *err,
                        size_t errlen)
{
    if (n_ctx == 0 || n_ctx > MOCK_MAX_CTX) {
        set_err(err, errlen, "mock: n_ctx %u is out of range (1..%u)", (unsigned)n_ctx, MOCK_MAX_CTX);
        return AARMD_EINVAL;
    }
    struct aarmd_backend_seq *s = seq_alloc(m, n_ctx);
    if (!s) {
        set_err(err, errlen, "mock: out of memory for a sequence of %u tokens", (unsigned)n_ctx);
        return AARMD_ENOMEM;
    }
    seq_link(s);
    *out = s;
    return AARMD_OK;
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
    if (s->model->paged)
        mock_kv_table_fini(&s->model->kv, &s->tbl);
    free(s->hist);
    free(s);
}

static int mock_seq_truncate(struct aarmd_backend_seq *s, uint32_t n, char *err, size_t errlen)
{
    if (n > s->len) {
        set_err(err, errlen, "mock: cannot truncate a sequence of %u tokens to %u", (unsigned)s->len, (unsigned)n);
        return AARMD_EINVAL;
    }
    s->len = n;
    if (s->model->paged)
        mock_kv_shrink(&s->model->kv, &s->tbl, n);
    if (s->prompt_len != UINT32_MAX && n < s->prompt_len)
        s->prompt_len = UINT32_MAX;
    return AARMD_OK;
}

static int mock_seq_fork(struct aarmd_backend_seq *src, uint32_t n_tokens, uint32_t n_ctx,
                         struct aarmd_backend_seq **out, char *err, size_t errlen)
{
    struct aarmd_backend_model *m = src->model;
    if (!m->paged) {
        set_err(err, errlen, "mock: seq_fork needs a paged KV cache (set kv_blocks=N or kv_mb=M)");
        return AARMD_EUNSUPPORTED;
    }
    uint32_t bt = m->kv.block_tokens;
    if (n_ctx == 0 || n_ctx > MOCK_MAX_CTX) {
        set_err(err, errlen, "mock: seq_fork: n_ctx %u is out of range (1..%u)", (unsigned)n_ctx, MOCK_MAX_CTX);
        return AARMD_EINVAL;
    }
    if (n_tokens % bt) {
        set_err(err, errlen, "mock: seq_fork: %u tokens is not a multiple of the block size %u", (unsigned)n_tokens,
                (unsigned)bt);
        return AARMD_EINVAL;
    }
    if (n_tokens > src->len) {
        set_err(err, errlen, "mock: seq_fork: %u tokens asked but the source sequence holds %u", (unsigned)n_tokens,
                (unsigned)src->len);
        return AARMD_EINVAL;
    }
    if (n_tokens > n_ctx) {
        set_err(err, errlen, "mock: seq_fork: %u tokens do not fit n_ctx %u", (unsigned)n_tokens, (unsigned)n_ctx);
        return AARMD_EINVAL;
    }
    struct aarmd_backend_seq *s = seq_alloc(m, n_ctx);
    if (!s) {
        set_err(err, errlen, "mock: out of memory for a sequence of %u tokens", (unsigned)n_ctx);
        return AARMD_ENOMEM;
    }
    mock_kv_share(&m->kv, &s->tbl, &src->tbl, n_tokens / bt);
    s->len = n_tokens;
    seq_link(s);
    *out = s;
    return AARMD_OK;
}

static int mock_kv_info(struct aarmd_backend_model *m, struct aarmd_kv_info *info, char *err, size_t errlen)
{
    if (!m->paged) {
        set_err(err, errlen, "mock: the KV cache is not paged (set kv_blocks=N or kv_mb=M)");
        return AARMD_EUNSUPPORTED;
    }
#define KV_FITS(field) (info->struct_size >= offsetof(struct aarmd_kv_info, field) + sizeof info->field)
    if (KV_FITS(block_tokens))
        info->block_tokens = m->kv.block_tokens;
    if (KV_FITS(blocks_total))
        info->blocks_total = m->kv.n_blocks;
    if (KV_FITS(blocks_free))
        info->blocks_free = m->kv.n_free;
    if (KV_FITS(block_bytes))
        info->block_bytes = m->kv.block_bytes;
#undef KV_FITS
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
    if (m->paged) {
        /* the whole step's blocks or none: on ENOMEM no sequence moves */
        uint64_t need = 0;
        for (uint32_t i = 0; i < n_entries; i++) {
            const struct aarmd_backend_seq *s = entries[i].seq;
            need += mock_kv_grow_need(&m->kv, &s->tbl, s->len, s->len + entries[i].n_tokens);
        }
        if (need > m->kv.n_free) {
            set_err(err, errlen, "mock: KV pool exhausted: the step needs %" PRIu64 " blocks, %u of %u free", need,
                    (unsigned)m->kv.n_free, (unsigned)m->kv.n_blocks);
            return AARMD_ENOMEM;
        }
        for (uint32_t i = 0; i < n_entries; i++) {
            struct aarmd_backend_seq *s = entries[i].seq;
            mock_kv_grow(&m->kv, &s->tbl, s->len, s->len + entries[i].n_tokens);
        }
    }
    uint64_t root = hist_root(ctx->o.seed);
    for (uint32_t i = 0; i < n_entries; i++) {
        const struct aarmd_batch_entry *e = &entries[i];
        struct aarmd_backend_seq *s = e->seq;
        uint64_t h = s->len ? *hist_slot(s, s->len - 1) : root;
        for (uint32_t t = 0; t < e->n_tokens; t++) {
            /* only full blocks are shared, and a shared partial tail was copied above */
            assert(!m->paged || mock_kv_writable(&m->kv, &s->tbl, s->len + t));
            h = mix64(h ^ (uint32_t)e->tokens[t]);
            *hist_slot(s, s->len + t) = h;
        }
        s->len += e->n_tokens;
        if (e->want_logits) {
            if (s->prompt_len == UINT32_MAX)
                s->prompt_len = s->len;
            fill_logits(s, e->logits);
        }
    }
    return AARMD_OK;
}

/* ---- logits buffers (ABI 1.2) ----------------------------------------------- */

/* A header before each buffer proves logits_free gets only what logits_alloc gave. */
#define MOCK_LOGITS_MAGIC 0x6c6f67697473ull   /* "logits" */
struct mock_logits_hdr {
    uint64_t magic;
    uint64_t bytes;
};

static void *mock_logits_alloc(struct aarmd_backend_model *m, size_t bytes)
{
    if (!m->ctx->o.logits_alloc || bytes > SIZE_MAX - sizeof(struct mock_logits_hdr))
        return NULL;
    struct mock_logits_hdr *h = malloc(sizeof *h + bytes);
    if (!h)
        return NULL;
    h->magic = MOCK_LOGITS_MAGIC;
    h->bytes = bytes;
    m->logits_live++;
    m->logits_given++;
    return h + 1;
}

static void mock_logits_free(struct aarmd_backend_model *m, void *p)
{
    if (!p)
        return;
    struct mock_logits_hdr *h = (struct mock_logits_hdr *)p - 1;
    if (h->magic != MOCK_LOGITS_MAGIC) {
        mock_log(m->ctx->host, AARMD_LOG_ERROR, "mock: logits_free of a buffer logits_alloc did not give");
        return;
    }
    h->magic = 0;
    m->logits_live--;
    free(h);
}

/* ---- entry and probe ------------------------------------------------------ */

static const struct aarmd_backend mock_table = {
    .abi_major = AARMD_ABI_MAJOR,
    .abi_minor = AARMD_ABI_MINOR,
    .struct_size = sizeof(struct aarmd_backend),
    .name = "mock",
    .version = "1.1.0",
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
    .kv_info = mock_kv_info,
    .seq_fork = mock_seq_fork,
    .logits_alloc = mock_logits_alloc,
    .logits_free = mock_logits_free,
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
