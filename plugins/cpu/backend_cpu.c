/*
 * backend_cpu.c — the CPU backend plugin's table (aarmd_backend.h): options,
 * device info, models and their KV block pools, sequences (block tables,
 * forks) and step validation/chunking. The decoder itself is forward.c, the
 * paged cache kv.c; the kernels are kernels.h.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aarmd_backend.h"
#include "forward.h"
#include "kernels.h"
#include "kv.h"
#include "tune.h"

#define CPU_VERSION "0.1.0"
#define CPU_DEFAULT_BATCH 512
#define CPU_MAX_BATCH 65536
#define CPU_MAX_THREADS 1024
#define CPU_ADVISED_SEQS 4
#define CPU_MAX_KV_MB (1ul << 24)       /* 16 TiB: a bound on the option, not a promise */
#define CPU_CTX_FALLBACK 4096           /* context assumed for sizing when the model states none */

struct aarmd_backend_ctx {
    const struct aarmd_host *host;
    struct cpu_pool *pool;
    enum cpu_simd simd;
    uint32_t kv_type;           /* AARMD_TYPE_F16 or AARMD_TYPE_F32 */
    uint32_t batch;             /* max tokens per forward chunk */
    int n_threads;
    int autothreads;            /* option autothreads: let tune.h pick 1 or n_threads per pass */
    uint32_t kv_block;          /* tokens per KV block (option kv_block, a power of two) */
    uint64_t kv_mb;             /* KV pool per model in MiB (option kv_mb); 0 = sized from the model */
    struct cpu_tune tune;
};

struct aarmd_backend_model {
    struct aarmd_backend_ctx *ctx;
    struct cpu_model *fw;
    struct cpu_kv_pool *kv;     /* the KV block pool every sequence of the model draws from */
    uint32_t n_seqs;            /* live sequences (model_free expects 0) */
    /* one chunk's tokens, assembled by step: [batch] each */
    int32_t *tok;
    int32_t *pos;
    struct cpu_kv **kv_of;
    float **logits;
};

struct aarmd_backend_seq {
    struct aarmd_backend_model *model;
    struct cpu_kv kv;           /* block table into model->kv */
    uint32_t n_ctx;
    uint32_t n_past;            /* tokens cached; the table holds exactly the blocks covering them */
};

static int set_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static void logf_host(const struct aarmd_host *host, int level, const char *fmt, ...)
{
    if (!host || !host->log)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    host->log(host->log_user, level, buf);
}

/* ---- machine facts -------------------------------------------------------- */

static int read_long(const char *path, long *out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int ok = fscanf(f, "%ld", out) == 1;
    fclose(f);
    return ok ? 0 : -1;
}

/* Physical cores: distinct (package, core) pairs under sysfs; else online CPUs. */
static int physical_cores(void)
{
    long pairs[1024][2];
    int n = 0;
    DIR *dir = opendir("/sys/devices/system/cpu");
    if (dir) {
        struct dirent *de;
        while ((de = readdir(dir)) != NULL && n < 1024) {
            if (strncmp(de->d_name, "cpu", 3) || !isdigit((unsigned char)de->d_name[3]))
                continue;
            char path[512];
            long core, pkg;
            snprintf(path, sizeof path, "/sys/devices/system/cpu/%s/topology/core_id", de->d_name);
            if (read_long(path, &core))
                continue;
            snprintf(path, sizeof path, "/sys/devices/system/cpu/%s/topology/physical_package_id", de->d_name);
            if (read_long(path, &pkg))
                pkg = 0;
            int seen = 0;
            for (int i = 0; i < n && !seen; i++)
                seen = pairs[i][0] == pkg && pairs[i][1] == core;
            if (!seen) {
                pairs[n][0] = pkg;
                pairs[n][1] = core;
                n++;
            }
        }
        closedir(dir);
    }
    if (n > 0)
        return n;
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
}

/* MemTotal / MemAvailable from /proc/meminfo, bytes; 0 when unknown. */
static void meminfo(uint64_t *total, uint64_t *avail)
{
    *total = *avail = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
            *total = (uint64_t)kb * 1024;
        else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            *avail = (uint64_t)kb * 1024;
    }
    fclose(f);
}

static void cpu_model_name(char *buf, size_t cap)
{
    snprintf(buf, cap, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10))
            continue;
        const char *v = strchr(line, ':');
        if (!v)
            break;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        snprintf(buf, cap, "%s", v);
        buf[strcspn(buf, "\n")] = '\0';
        break;
    }
    fclose(f);
}

/* ---- options -------------------------------------------------------------- */

static int parse_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    if (!s || !*s || !isdigit((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_simd(const char *v, enum cpu_simd *out, char *err, size_t errlen)
{
    enum cpu_simd have = cpu_simd_detect();
    if (!strcmp(v, "auto")) {
        *out = have;
        return AARMD_OK;
    }
    if (!strcmp(v, "0") || !strcmp(v, "none")) {
        *out = CPU_SIMD_NONE;
        return AARMD_OK;
    }
    enum cpu_simd want;
    int ok;
    if (!strcmp(v, "avx2")) {
        want = CPU_SIMD_AVX2;
        ok = have == CPU_SIMD_AVX2 || have == CPU_SIMD_AVX512;
    } else if (!strcmp(v, "avx512")) {
        want = CPU_SIMD_AVX512;
        ok = have == CPU_SIMD_AVX512;
    } else if (!strcmp(v, "neon")) {
        want = CPU_SIMD_NEON;
        ok = have == CPU_SIMD_NEON;
    } else {
        return set_err(err, errlen, AARMD_EINVAL, "option simd=%s: expected 0, avx2, avx512, neon or auto", v);
    }
    if (!ok)
        return set_err(err, errlen, AARMD_EUNSUPPORTED, "option simd=%s: this CPU supports only %s", v,
                       cpu_simd_name(have));
    *out = want;
    return AARMD_OK;
}

static int parse_opts(struct aarmd_backend_ctx *c, const struct aarmd_host *host, char *err, size_t errlen)
{
    c->n_threads = physical_cores();
    c->simd = cpu_simd_detect();
    c->kv_type = AARMD_TYPE_F16;
    c->batch = CPU_DEFAULT_BATCH;
    c->autothreads = 1;
    c->kv_block = CPU_KV_BLOCK_DEFAULT;
    c->kv_mb = 0;
    for (uint32_t i = 0; host && i < host->n_opts; i++) {
        const char *k = host->opts[i].key ? host->opts[i].key : "";
        const char *v = host->opts[i].value ? host->opts[i].value : "";
        unsigned long u;
        if (!strcmp(k, "threads")) {
            if (parse_uint(v, 1, CPU_MAX_THREADS, &u))
                return set_err(err, errlen, AARMD_EINVAL, "option threads=%s: expected an integer in [1, %d]", v,
                               CPU_MAX_THREADS);
            c->n_threads = (int)u;
        } else if (!strcmp(k, "simd")) {
            int rc = parse_simd(v, &c->simd, err, errlen);
            if (rc)
                return rc;
        } else if (!strcmp(k, "kv_type")) {
            if (!strcmp(v, "f16"))
                c->kv_type = AARMD_TYPE_F16;
            else if (!strcmp(v, "f32"))
                c->kv_type = AARMD_TYPE_F32;
            else
                return set_err(err, errlen, AARMD_EINVAL, "option kv_type=%s: expected f16 or f32", v);
        } else if (!strcmp(k, "batch")) {
            if (parse_uint(v, 1, CPU_MAX_BATCH, &u))
                return set_err(err, errlen, AARMD_EINVAL, "option batch=%s: expected an integer in [1, %d]", v,
                               CPU_MAX_BATCH);
            c->batch = (uint32_t)u;
        } else if (!strcmp(k, "autothreads")) {
            if (!strcmp(v, "1") || !strcmp(v, "on"))
                c->autothreads = 1;
            else if (!strcmp(v, "0") || !strcmp(v, "off"))
                c->autothreads = 0;
            else
                return set_err(err, errlen, AARMD_EINVAL, "option autothreads=%s: expected 0, 1, off or on", v);
        } else if (!strcmp(k, "kv_block")) {
            if (parse_uint(v, 1, CPU_KV_BLOCK_MAX, &u) || (u & (u - 1)))
                return set_err(err, errlen, AARMD_EINVAL,
                               "option kv_block=%s: expected a power of two in [1, %d] (tokens per KV block)", v,
                               CPU_KV_BLOCK_MAX);
            c->kv_block = (uint32_t)u;
        } else if (!strcmp(k, "kv_mb")) {
            if (parse_uint(v, 1, CPU_MAX_KV_MB, &u))
                return set_err(err, errlen, AARMD_EINVAL,
                               "option kv_mb=%s: expected an integer in [1, %lu] (MiB of KV blocks per model)", v,
                               CPU_MAX_KV_MB);
            c->kv_mb = u;
        } else {
            return set_err(err, errlen, AARMD_EINVAL,
                           "unknown option '%s' (cpu backend knows threads, simd, kv_type, kv_block, kv_mb, batch, "
                           "autothreads)", k);
        }
    }
    return AARMD_OK;
}

/* ---- context -------------------------------------------------------------- */

static void cpu_ctx_free(struct aarmd_backend_ctx *ctx)
{
    if (!ctx)
        return;
    cpu_pool_free(ctx->pool);
    free(ctx);
}

static int cpu_ctx_new(const struct aarmd_host *host, int32_t device, struct aarmd_backend_ctx **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    if (device > 0)
        return set_err(err, errlen, AARMD_EINVAL, "cpu backend has only device 0 (asked for %d)", device);
    struct aarmd_backend_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return set_err(err, errlen, AARMD_ENOMEM, "out of memory");
    c->host = host;
    int rc = parse_opts(c, host, err, errlen);
    if (rc)
        goto fail;
    c->pool = cpu_pool_new(c->n_threads);
    if (!c->pool) {
        rc = set_err(err, errlen, AARMD_ENOMEM, "cannot start %d threads", c->n_threads);
        goto fail;
    }
    cpu_tune_init(&c->tune, c->n_threads, c->autothreads);
    logf_host(host, AARMD_LOG_INFO, "cpu backend: threads=%d%s simd=%s kv_type=%s kv_block=%u batch=%u",
              c->n_threads,
              c->autothreads && c->n_threads > 1 ? " (auto: 1 when faster)" : "", cpu_simd_name(c->simd),
              c->kv_type == AARMD_TYPE_F16 ? "f16" : "f32", c->kv_block, c->batch);
    *out = c;
    return AARMD_OK;
fail:
    cpu_ctx_free(c);
    return rc;
}

static int cpu_device_info(struct aarmd_backend_ctx *ctx, struct aarmd_device_info *info, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct aarmd_device_info d;
    memset(&d, 0, sizeof d);
    char model[96];
    cpu_model_name(model, sizeof model);
    snprintf(d.name, sizeof d.name, "%s (%d threads, %s)", model, ctx->n_threads, cpu_simd_name(ctx->simd));
    meminfo(&d.memory_total, &d.memory_free);
    snprintf(d.memory_architecture, sizeof d.memory_architecture, "host");
    snprintf(d.worker_type, sizeof d.worker_type, "cpu");
    d.advised_seqs = CPU_ADVISED_SEQS;
    size_t n = info->struct_size < sizeof d ? info->struct_size : sizeof d;
    uint32_t keep = info->struct_size;
    if (n > sizeof d.struct_size)
        memcpy((char *)info + sizeof d.struct_size, (char *)&d + sizeof d.struct_size, n - sizeof d.struct_size);
    info->struct_size = keep;
    return AARMD_OK;
}

/* ---- model ---------------------------------------------------------------- */

static void cpu_model_free_(struct aarmd_backend_model *model)
{
    if (!model)
        return;
    cpu_model_free(model->fw);
    cpu_kv_pool_free(model->kv);
    free(model->tok);
    free(model->pos);
    free(model->kv_of);
    free(model->logits);
    free(model);
}

/* Keeps the page reads of prefault from being optimised away. */
static volatile unsigned prefault_sink;

static int d_has_no_tensors(const struct aarmd_model_desc *d) { return d->n_tensors == 0 || !d->tensors; }

/* Reads every page of the weights once, tensor by tensor, so the first step
 * does not pay for the page faults (and a load from a cold disk is a load), and
 * reports the fraction of weight bytes read after each tensor. Non-zero when
 * the callback cancels. */
static int prefault(const struct aarmd_model_desc *d, aarmd_progress_fn progress, void *user)
{
    uint64_t total = 0, done = 0;
    long pg = sysconf(_SC_PAGESIZE);
    size_t page = pg > 0 ? (size_t)pg : 4096;
    for (uint32_t i = 0; i < d->n_tensors; i++)
        total += d->tensors[i].nbytes;
    unsigned acc = 0;
    for (uint32_t i = 0; i < d->n_tensors; i++) {
        const struct aarmd_tensor *t = &d->tensors[i];
        const unsigned char *p = t->data;
        if (p && t->nbytes) {
            uintptr_t a0 = (uintptr_t)p & ~(uintptr_t)(page - 1);
            posix_madvise((void *)a0, (size_t)((uintptr_t)p + t->nbytes - a0), POSIX_MADV_WILLNEED);
            for (uint64_t off = 0; off < t->nbytes; off += page)
                acc += p[off];
            acc += p[t->nbytes - 1];
        }
        done += t->nbytes;
        if (progress && progress(user, total ? (float)((double)done / (double)total) : 1.0f))
            return 1;
    }
    prefault_sink = acc;
    return 0;
}

/*
 * The model's KV block pool: kv_mb MiB when set, else room for
 * max(4, advised_seqs) sequences of the model's trained context (4096 when
 * it states none), at most a quarter of physical memory; at least one block.
 */
static int kv_pool_new(const struct aarmd_backend_ctx *ctx, const struct aarmd_model_desc *d,
                       struct cpu_kv_pool **out, char *err, size_t errlen)
{
    int kv_dim = (int)(d->n_head_kv * d->head_dim);
    uint64_t bb = cpu_kv_block_bytes(ctx->kv_type, (int)d->n_layer, kv_dim, ctx->kv_block);
    uint64_t n_blocks;
    if (ctx->kv_mb) {
        n_blocks = (ctx->kv_mb << 20) / bb;
        if (n_blocks == 0)
            return set_err(err, errlen, AARMD_EINVAL, "option kv_mb=%llu holds no KV block of %llu bytes for model %s",
                           (unsigned long long)ctx->kv_mb, (unsigned long long)bb, d->name ? d->name : "?");
    } else {
        uint64_t per_seq = d->n_ctx_train ? d->n_ctx_train : CPU_CTX_FALLBACK;
        uint64_t seqs = CPU_ADVISED_SEQS > 4 ? CPU_ADVISED_SEQS : 4;
        n_blocks = seqs * ((per_seq + ctx->kv_block - 1) / ctx->kv_block);
        uint64_t total, avail;
        meminfo(&total, &avail);
        if (total && n_blocks > total / 4 / bb)
            n_blocks = total / 4 / bb;
        if (n_blocks == 0)
            n_blocks = 1;
    }
    if (n_blocks > UINT32_MAX)
        n_blocks = UINT32_MAX;
    int rc = cpu_kv_pool_new(ctx->kv_type, (int)d->n_layer, kv_dim, ctx->kv_block, (uint32_t)n_blocks, out);
    if (rc)
        return set_err(err, errlen, rc, "cannot allocate a KV pool of %llu blocks of %llu bytes",
                       (unsigned long long)n_blocks, (unsigned long long)bb);
    return AARMD_OK;
}

static int cpu_model_load(struct aarmd_backend_ctx *ctx, const struct aarmd_model_desc *desc,
                          aarmd_progress_fn progress, void *progress_user, struct aarmd_backend_model **out,
                          char *err, size_t errlen)
{
    *out = NULL;
    if (!desc)
        return set_err(err, errlen, AARMD_EINVAL, "no model description");
    if (progress && progress(progress_user, 0.0f))
        return set_err(err, errlen, AARMD_ECANCELLED, "model load cancelled");
    struct aarmd_backend_model *m = calloc(1, sizeof *m);
    if (!m)
        return set_err(err, errlen, AARMD_ENOMEM, "out of memory");
    m->ctx = ctx;
    int rc = cpu_model_new(desc, ctx->pool, ctx->simd, ctx->batch, &m->fw, err, errlen);
    if (rc)
        goto fail;
    m->tok = malloc(ctx->batch * sizeof *m->tok);
    m->pos = malloc(ctx->batch * sizeof *m->pos);
    m->kv_of = malloc(ctx->batch * sizeof *m->kv_of);
    m->logits = malloc(ctx->batch * sizeof *m->logits);
    if (!m->tok || !m->pos || !m->kv_of || !m->logits) {
        rc = set_err(err, errlen, AARMD_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = kv_pool_new(ctx, desc, &m->kv, err, errlen)))
        goto fail;
    if (d_has_no_tensors(desc) ? progress && progress(progress_user, 1.0f) : prefault(desc, progress, progress_user)) {
        rc = set_err(err, errlen, AARMD_ECANCELLED, "model load cancelled");
        goto fail;
    }
    logf_host(ctx->host, AARMD_LOG_INFO,
              "cpu backend: model %s (%s) loaded: %llu weight bytes in place, %llu scratch bytes, "
              "KV pool %u blocks of %u tokens (%.1f MiB)",
              desc->name ? desc->name : "?", desc->arch ? desc->arch : "?",
              (unsigned long long)cpu_model_weight_bytes(m->fw), (unsigned long long)cpu_model_scratch_bytes(m->fw),
              m->kv->n_blocks, m->kv->block_tokens, (double)m->kv->n_blocks * (double)m->kv->block_bytes / 1048576.0);
    *out = m;
    return AARMD_OK;
fail:
    cpu_model_free_(m);
    return rc;
}

static uint64_t cpu_model_bytes(struct aarmd_backend_model *model)
{
    return cpu_model_weight_bytes(model->fw) + cpu_model_scratch_bytes(model->fw) +
           (uint64_t)model->kv->n_blocks * model->kv->block_bytes;
}

static int cpu_kv_info(struct aarmd_backend_model *model, struct aarmd_kv_info *info, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    const struct cpu_kv_pool *p = model->kv;
    struct aarmd_kv_info k = {.struct_size = info->struct_size, .block_tokens = p->block_tokens,
                              .blocks_total = p->n_blocks, .blocks_free = p->n_free, .block_bytes = p->block_bytes};
    size_t n = info->struct_size < sizeof k ? info->struct_size : sizeof k;
    memcpy(info, &k, n);
    return AARMD_OK;
}

/* ---- sequences ------------------------------------------------------------- */

static int cpu_seq_new(struct aarmd_backend_model *model, uint32_t n_ctx, struct aarmd_backend_seq **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    const struct cpu_hparams *hp = cpu_model_hparams(model->fw);
    if (n_ctx == 0 || n_ctx > INT32_MAX)
        return set_err(err, errlen, AARMD_EINVAL, "n_ctx %u out of range", n_ctx);
    if (hp->has_pos_embd && n_ctx > hp->n_ctx_train)
        return set_err(err, errlen, AARMD_EINVAL, "n_ctx %u exceeds the model's %u learned positions", n_ctx,
                       hp->n_ctx_train);
    struct aarmd_backend_seq *s = calloc(1, sizeof *s);
    if (!s)
        return set_err(err, errlen, AARMD_ENOMEM, "out of memory");
    int rc = cpu_kv_seq_init(&s->kv, model->kv, (int32_t)n_ctx);   /* a block table; no block yet */
    if (rc) {
        free(s);
        return set_err(err, errlen, rc, "cannot allocate the block table for %u tokens", n_ctx);
    }
    s->model = model;
    s->n_ctx = n_ctx;
    model->n_seqs++;
    *out = s;
    return AARMD_OK;
}

static void cpu_seq_free(struct aarmd_backend_seq *seq)
{
    if (!seq)
        return;
    seq->model->n_seqs--;
    cpu_kv_fini(&seq->kv);
    free(seq);
}

static int cpu_seq_truncate(struct aarmd_backend_seq *seq, uint32_t n, char *err, size_t errlen)
{
    if (!seq)
        return set_err(err, errlen, AARMD_EINVAL, "no sequence");
    if (n > seq->n_past)
        return set_err(err, errlen, AARMD_EINVAL, "cannot truncate to %u tokens: the sequence holds %u", n, seq->n_past);
    seq->n_past = n;
    cpu_kv_truncate(&seq->kv, (int32_t)n);   /* blocks past n go back to the pool now */
    return AARMD_OK;
}

static int cpu_seq_fork(struct aarmd_backend_seq *src, uint32_t n_tokens, uint32_t n_ctx,
                        struct aarmd_backend_seq **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!src)
        return set_err(err, errlen, AARMD_EINVAL, "no source sequence");
    struct aarmd_backend_model *model = src->model;
    const struct cpu_hparams *hp = cpu_model_hparams(model->fw);
    uint32_t bt = model->kv->block_tokens;
    if (n_ctx == 0 || n_ctx > INT32_MAX)
        return set_err(err, errlen, AARMD_EINVAL, "n_ctx %u out of range", n_ctx);
    if (hp->has_pos_embd && n_ctx > hp->n_ctx_train)
        return set_err(err, errlen, AARMD_EINVAL, "n_ctx %u exceeds the model's %u learned positions", n_ctx,
                       hp->n_ctx_train);
    if (n_tokens % bt)
        return set_err(err, errlen, AARMD_EINVAL, "fork of %u tokens: not a multiple of the block size %u", n_tokens,
                       bt);
    if (n_tokens > src->n_past)
        return set_err(err, errlen, AARMD_EINVAL, "fork of %u tokens: the source holds %u", n_tokens, src->n_past);
    if (n_tokens > n_ctx)
        return set_err(err, errlen, AARMD_EINVAL, "fork of %u tokens into n_ctx %u", n_tokens, n_ctx);
    struct aarmd_backend_seq *s = calloc(1, sizeof *s);
    if (!s)
        return set_err(err, errlen, AARMD_ENOMEM, "out of memory");
    int rc = cpu_kv_fork(&s->kv, &src->kv, (int32_t)n_tokens, (int32_t)n_ctx);
    if (rc) {
        free(s);
        return set_err(err, errlen, rc, rc == AARMD_ENOMEM ? "out of memory" : "fork of %u tokens refused", n_tokens);
    }
    s->model = model;
    s->n_ctx = n_ctx;
    s->n_past = n_tokens;
    model->n_seqs++;
    *out = s;
    return AARMD_OK;
}

/* ---- step ------------------------------------------------------------------ */

static int validate_step(const struct aarmd_backend_model *model, const struct aarmd_batch_entry *entries,
                         uint32_t n_entries, char *err, size_t errlen)
{
    const struct cpu_hparams *hp = cpu_model_hparams(model->fw);
    if (n_entries && !entries)
        return set_err(err, errlen, AARMD_EINVAL, "no entries");
    for (uint32_t e = 0; e < n_entries; e++) {
        const struct aarmd_batch_entry *en = &entries[e];
        if (!en->seq)
            return set_err(err, errlen, AARMD_EINVAL, "entry %u: no sequence", e);
        if (en->seq->model != model)
            return set_err(err, errlen, AARMD_EINVAL, "entry %u: sequence belongs to another model", e);
        if (en->n_tokens == 0 || !en->tokens)
            return set_err(err, errlen, AARMD_EINVAL, "entry %u: no tokens", e);
        if (en->want_logits && !en->logits)
            return set_err(err, errlen, AARMD_EINVAL, "entry %u: wants logits but has no buffer", e);
        if ((uint64_t)en->seq->n_past + en->n_tokens > en->seq->n_ctx)
            return set_err(err, errlen, AARMD_EINVAL, "entry %u: context full (%u cached + %u new > n_ctx %u)", e,
                           en->seq->n_past, en->n_tokens, en->seq->n_ctx);
        for (uint32_t i = 0; i < en->n_tokens; i++)
            if (en->tokens[i] < 0 || en->tokens[i] >= hp->n_vocab)
                return set_err(err, errlen, AARMD_EINVAL, "entry %u: token %u is %d, outside [0, %d)", e, i,
                               en->tokens[i], hp->n_vocab);
        for (uint32_t f = 0; f < e; f++)
            if (entries[f].seq == en->seq)
                return set_err(err, errlen, AARMD_EINVAL, "entries %u and %u share a sequence", f, e);
    }
    return AARMD_OK;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One forward pass, on as many threads as tune.h finds faster right now. */
static void forward_tuned(struct aarmd_backend_model *model, uint32_t n)
{
    struct aarmd_backend_ctx *c = model->ctx;
    cpu_pool_set_active(c->pool, cpu_tune_pick(&c->tune, n));
    double t0 = now_s();
    cpu_forward(model->fw, n, model->tok, model->kv_of, model->pos, model->logits);
    cpu_tune_done(&c->tune, n, now_s() - t0);
}

static int cpu_step(struct aarmd_backend_model *model, const struct aarmd_batch_entry *entries, uint32_t n_entries,
                    char *err, size_t errlen)
{
    int rc = validate_step(model, entries, n_entries, err, errlen);
    if (rc)
        return rc;
    /* Blocks for the whole step first, so it either runs or changes nothing. (A
     * block shared by two of the step's sequences is counted as copied by both:
     * at worst a refusal one block early.) */
    uint64_t need = 0;
    for (uint32_t e = 0; e < n_entries; e++)
        need += cpu_kv_blocks_needed(&entries[e].seq->kv, (int32_t)entries[e].seq->n_past,
                                     (int32_t)entries[e].n_tokens);
    if (need > model->kv->n_free)
        return set_err(err, errlen, AARMD_ENOMEM, "KV pool: the step needs %llu blocks, %u of %u are free",
                       (unsigned long long)need, model->kv->n_free, model->kv->n_blocks);
    for (uint32_t e = 0; e < n_entries; e++)
        if ((rc = cpu_kv_reserve(&entries[e].seq->kv, (int32_t)entries[e].seq->n_past, (int32_t)entries[e].n_tokens)))
            return set_err(err, errlen, AARMD_EINTERNAL, "KV pool: reserve failed after the count (entry %u)", e);
    /* All entries' tokens in order, cut into chunks of at most `batch`: one
     * matmul per weight per chunk covers every sequence in it. */
    uint32_t max_tok = cpu_model_max_tok(model->fw);
    uint32_t n = 0;
    for (uint32_t e = 0; e < n_entries; e++) {
        const struct aarmd_batch_entry *en = &entries[e];
        for (uint32_t i = 0; i < en->n_tokens; i++) {
            model->tok[n] = en->tokens[i];
            model->pos[n] = (int32_t)(en->seq->n_past + i);
            model->kv_of[n] = &en->seq->kv;
            model->logits[n] = en->want_logits && i + 1 == en->n_tokens ? en->logits : NULL;
            if (++n == max_tok) {
                forward_tuned(model, n);
                n = 0;
            }
        }
    }
    if (n)
        forward_tuned(model, n);
    for (uint32_t e = 0; e < n_entries; e++)
        entries[e].seq->n_past += entries[e].n_tokens;
    return AARMD_OK;
}

/* ---- the table ------------------------------------------------------------- */

static const struct aarmd_backend cpu_backend = {
    .abi_major = AARMD_ABI_MAJOR,
    .abi_minor = AARMD_ABI_MINOR,
    .struct_size = sizeof(struct aarmd_backend),
    .name = "cpu",
    .version = CPU_VERSION,
    .ctx_new = cpu_ctx_new,
    .ctx_free = cpu_ctx_free,
    .device_info = cpu_device_info,
    .model_load = cpu_model_load,
    .model_free = cpu_model_free_,
    .model_bytes = cpu_model_bytes,
    .seq_new = cpu_seq_new,
    .seq_free = cpu_seq_free,
    .seq_truncate = cpu_seq_truncate,
    .step = cpu_step,
    .kv_info = cpu_kv_info,
    .seq_fork = cpu_seq_fork,
};

__attribute__((visibility("default"))) const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host);

__attribute__((visibility("default"))) const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host)
{
    (void)host;
    return &cpu_backend;
}
