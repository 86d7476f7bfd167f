/*
 * backend_cuda.c — the CUDA backend plugin's table (aarmd_backend.h): device
 * context, weight upload, sequences over the paged KV pool (kv_info,
 * seq_fork), step validation, block reservation and packing of a step's
 * entries into batched forwards. The kernel launches are forward_cuda.c, the
 * block bookkeeping cuda_kv.c; kernels are in shaders/cuda/.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "aarmd_backend.h"
#include "cuda_model.h"

#define CUDA_VERSION_STR "0.1.0"
#define CUDA_DEFAULT_BATCH 512u
#define CUDA_MAX_BATCH 8192u
#define STAGE_BYTES ((size_t)64 << 20)   /* pinned staging buffer for uploads */

int cuda_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

void cuda_log(const struct aarmd_host *host, int level, const char *fmt, ...)
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

/* ---- context --------------------------------------------------------------- */

static int parse_opts(struct aarmd_backend_ctx *c, const struct aarmd_host *host, char *err, size_t errlen)
{
    for (uint32_t i = 0; host && i < host->n_opts; i++) {
        const char *k = host->opts[i].key, *v = host->opts[i].value;
        if (!strcmp(k, "batch")) {
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (!*v || *end || n < 1 || n > CUDA_MAX_BATCH)
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option batch=%s: expected 1..%u", v,
                                CUDA_MAX_BATCH);
            c->batch = (uint32_t)n;
        } else if (!strcmp(k, "graph_chunks")) {
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (!*v || *end || n > CUK_ATTN_MAX_CHUNKS)
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option graph_chunks=%s: expected 0 (the most)..%u", v,
                                CUK_ATTN_MAX_CHUNKS);
            c->graph_chunks = (uint32_t)n;
        } else if (!strcmp(k, "short_keys")) {
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (!*v || *v == '-' || *end || n > CUDA_SHORT_KEYS_MAX)
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option short_keys=%s: expected 0 (off)..%u", v,
                                CUDA_SHORT_KEYS_MAX);
            c->short_keys = (uint32_t)n;
        } else if (!strcmp(k, "direct_logits")) {
            if (strcmp(v, "0") && strcmp(v, "1"))
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option direct_logits=%s: expected 0 or 1", v);
            c->direct_logits = v[0] == '1';
        } else if (!strcmp(k, "graphs")) {
            if (strcmp(v, "0") && strcmp(v, "1"))
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option graphs=%s: expected 0 or 1", v);
            c->use_graphs = v[0] == '1';
        } else if (!strcmp(k, "cublas")) {
            if (strcmp(v, "0") && strcmp(v, "1"))
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option cublas=%s: expected 0 or 1", v);
            c->use_cublas = v[0] == '1';
        } else if (!strcmp(k, "q8")) {
            if (strcmp(v, "0") && strcmp(v, "1"))
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option q8=%s: expected 0 or 1", v);
            c->use_q8 = v[0] == '1';
        } else if (!strcmp(k, "pdl")) {
            if (strcmp(v, "0") && strcmp(v, "1") && strcmp(v, "2") && strcmp(v, "3"))
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option pdl=%s: expected 0, 1, 2 or 3", v);
            c->use_pdl = v[0] - '0';
        } else if (!strcmp(k, "mvf")) {
            if (v[0] < '0' || v[0] > '7' || v[1])
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option mvf=%s: expected 0..7 (kernel bits)", v);
            c->use_mvf = v[0] - '0';
        } else if (!strcmp(k, "wf16")) {
            if (strcmp(v, "0") && strcmp(v, "1") && strcmp(v, "auto"))
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option wf16=%s: expected 0, 1 or auto", v);
            c->use_wf16 = v[0] == 'a' ? CUDA_WF16_AUTO : v[0] == '1';
        } else if (!strcmp(k, "attn")) {
            if (strcmp(v, "heads") && strcmp(v, "grouped") && strcmp(v, "fa"))
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option attn=%s: expected fa, grouped or heads",
                                v);
            c->attn_kind = v[0] == 'f' ? CUDA_ATTN_FA : v[0] == 'g' ? CUDA_ATTN_GROUPED : CUDA_ATTN_HEADS;
        } else if (!strcmp(k, "kv_mb")) {
            char *end;
            unsigned long long n = strtoull(v, &end, 10);
            if (!*v || *v == '-' || *end || n < 1 || n > (1ull << 24))
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option kv_mb=%s: expected 1..%llu (MiB)", v,
                                1ull << 24);
            c->kv_mb = n;
        } else if (!strcmp(k, "q8rows")) {
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (!strcmp(v, "auto"))
                n = CUDA_Q8_ROWS_AUTO;
            else if (!*v || *v == '-' || *end || n > CUDA_Q8_ROWS)
                return cuda_err(err, errlen, AARMD_EINVAL, "backend option q8rows=%s: expected 0..%u or auto", v,
                                CUDA_Q8_ROWS);
            c->q8_rows = (uint32_t)n;
        } else {
            return cuda_err(err, errlen, AARMD_EINVAL,
                            "unknown backend option %s (known: batch, graphs, cublas, q8, pdl, mvf, kv_mb, q8rows, "
                            "wf16, attn, direct_logits, graph_chunks, short_keys)",
                            k);
        }
    }
    return AARMD_OK;
}

static int cuda_probe(const struct aarmd_host *host, char *err, size_t errlen)
{
    (void)host;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess)
        return cuda_err(err, errlen, AARMD_EDEVICE, "no CUDA device: %s", cudaGetErrorString(e));
    if (n == 0)
        return cuda_err(err, errlen, AARMD_EDEVICE, "no CUDA device: the driver reports 0 devices");
    return AARMD_OK;
}

static int cuda_ctx_new(const struct aarmd_host *host, int32_t device, struct aarmd_backend_ctx **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    int n = 0, rc;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return cuda_err(err, errlen, AARMD_EDEVICE, "no CUDA device: %s",
                        e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports 0 devices");
    if (device < 0 || device >= n)
        return cuda_err(err, errlen, AARMD_EINVAL, "device %d does not exist (%d CUDA device%s)", (int)device, n,
                        n == 1 ? "" : "s");
    struct aarmd_backend_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return cuda_err(err, errlen, AARMD_ENOMEM, "out of memory");
    c->host = host;
    c->device = device;
    c->batch = CUDA_DEFAULT_BATCH;
    c->use_graphs = 1;
    c->direct_logits = 1;
    c->short_keys = CUDA_SHORT_KEYS;
    c->use_cublas = 1;
    c->use_q8 = 1;
    c->use_pdl = CUDA_DEFAULT_PDL;
    c->use_mvf = CUDA_DEFAULT_MVF;
    c->q8_rows = CUDA_Q8_ROWS_AUTO;
    c->use_wf16 = CUDA_WF16_AUTO;
    c->attn_kind = CUDA_ATTN_FA;
    if ((rc = parse_opts(c, host, err, errlen)) != AARMD_OK)
        goto fail;
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&c->prop, device)) != cudaSuccess) {
        rc = cuda_err(err, errlen, AARMD_EDEVICE, "CUDA device %d: %s", (int)device, cudaGetErrorString(e));
        goto fail;
    }
    cuda_log(host, AARMD_LOG_INFO, "cuda: device %d %s, sm_%d%d, %d SMs, %.1f GiB", (int)device, c->prop.name,
             c->prop.major, c->prop.minor, c->prop.multiProcessorCount,
             (double)c->prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    *out = c;
    return AARMD_OK;
fail:
    free(c);
    return rc;
}

static void cuda_ctx_free(struct aarmd_backend_ctx *ctx)
{
    free(ctx);
}

static int cuda_device_info(struct aarmd_backend_ctx *ctx, struct aarmd_device_info *info, char *err, size_t errlen)
{
    size_t fr = 0, tot = 0;
    cudaSetDevice(ctx->device);
    cudaError_t e = cudaMemGetInfo(&fr, &tot);
    if (e != cudaSuccess)
        return cuda_err(err, errlen, AARMD_EDEVICE, "cudaMemGetInfo: %s", cudaGetErrorString(e));
    struct aarmd_device_info di;
    memset(&di, 0, sizeof di);
    di.struct_size = info->struct_size;
    snprintf(di.name, sizeof di.name, "%.127s", ctx->prop.name);
    di.memory_total = tot;
    di.memory_free = fr;
    snprintf(di.memory_architecture, sizeof di.memory_architecture, "vram-only");
    snprintf(di.worker_type, sizeof di.worker_type, "bespoke-cuda");
    /* decode graphs exist for up to 64 tokens per step and the KV is paged:
     * admission by free blocks keeps 64 concurrent jobs safe */
    di.advised_seqs = 64;
    size_t n = info->struct_size < sizeof di ? info->struct_size : sizeof di;
    memcpy(info, &di, n);
    info->struct_size = di.struct_size;
    return AARMD_OK;
}

/* ---- models ---------------------------------------------------------------- */

static int cuda_model_load(struct aarmd_backend_ctx *ctx, const struct aarmd_model_desc *desc,
                           aarmd_progress_fn progress, void *progress_user, struct aarmd_backend_model **out,
                           char *err, size_t errlen)
{
    cudaSetDevice(ctx->device);
    return cuda_model_new(ctx, desc, progress, progress_user, STAGE_BYTES, out, err, errlen);
}

static void cuda_model_free_m(struct aarmd_backend_model *m)
{
    cuda_model_free(m);
}

static uint64_t cuda_model_bytes(struct aarmd_backend_model *m)
{
    return m ? m->weight_bytes + m->wf16_bytes + m->scratch_bytes + (uint64_t)m->kv.n_blocks * m->kv.block_bytes : 0;
}

static int cuda_kv_info(struct aarmd_backend_model *m, struct aarmd_kv_info *info, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct aarmd_kv_info ki;
    memset(&ki, 0, sizeof ki);
    ki.struct_size = info->struct_size;
    ki.block_tokens = m->kv.bt;
    ki.blocks_total = m->kv.n_blocks;
    ki.blocks_free = m->kv.n_free;
    ki.block_bytes = m->kv.block_bytes;
    size_t n = info->struct_size < sizeof ki ? info->struct_size : sizeof ki;
    memcpy(info, &ki, n);
    info->struct_size = ki.struct_size;
    return AARMD_OK;
}

/* ---- sequences ------------------------------------------------------------- */

static int seq_alloc(struct aarmd_backend_model *m, uint32_t n_ctx, struct aarmd_backend_seq **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    if (n_ctx == 0)
        return cuda_err(err, errlen, AARMD_EINVAL, "n_ctx must be >= 1");
    if (m->hp.has_pos_embd && n_ctx > m->hp.n_ctx_train)
        return cuda_err(err, errlen, AARMD_EINVAL, "n_ctx %u exceeds the %u positions of the model's pos_embd", n_ctx,
                        m->hp.n_ctx_train);
    struct aarmd_backend_seq *s = calloc(1, sizeof *s);
    if (s)
        s->blocks = malloc((size_t)cuda_kv_blocks_for(&m->kv, n_ctx) * sizeof *s->blocks);
    if (!s || !s->blocks) {
        free(s);
        return cuda_err(err, errlen, AARMD_ENOMEM, "out of memory (block table of %u tokens)", n_ctx);
    }
    s->model = m;
    s->n_ctx = n_ctx;
    m->n_seqs++;
    *out = s;
    return AARMD_OK;
}

/* Takes no blocks: the sequence draws them from the pool as it grows. */
static int cuda_seq_new(struct aarmd_backend_model *m, uint32_t n_ctx, struct aarmd_backend_seq **out, char *err,
                        size_t errlen)
{
    return seq_alloc(m, n_ctx, out, err, errlen);
}

static int cuda_seq_fork(struct aarmd_backend_seq *src, uint32_t n_tokens, uint32_t n_ctx,
                         struct aarmd_backend_seq **out, char *err, size_t errlen)
{
    *out = NULL;
    struct aarmd_backend_model *m = src->model;
    if (n_tokens % m->kv.bt)
        return cuda_err(err, errlen, AARMD_EINVAL, "fork of %u tokens: not a multiple of the block size %u", n_tokens,
                        m->kv.bt);
    if (n_tokens > src->n_past)
        return cuda_err(err, errlen, AARMD_EINVAL, "fork of %u tokens: the source holds %u", n_tokens, src->n_past);
    if (n_tokens > n_ctx)
        return cuda_err(err, errlen, AARMD_EINVAL, "fork of %u tokens exceeds the new sequence's n_ctx %u", n_tokens,
                        n_ctx);
    struct aarmd_backend_seq *s;
    int rc = seq_alloc(m, n_ctx, &s, err, errlen);
    if (rc != AARMD_OK)
        return rc;
    cuda_kv_share(&m->kv, src, s, n_tokens);
    s->n_past = n_tokens;
    *out = s;
    return AARMD_OK;
}

static void cuda_seq_free(struct aarmd_backend_seq *s)
{
    if (!s)
        return;
    cuda_kv_shrink(&s->model->kv, s, 0);
    s->model->n_seqs--;
    free(s->blocks);
    free(s);
}

static int cuda_seq_truncate(struct aarmd_backend_seq *s, uint32_t n, char *err, size_t errlen)
{
    if (n > s->n_past)
        return cuda_err(err, errlen, AARMD_EINVAL, "cannot truncate to %u tokens: the sequence holds %u", n, s->n_past);
    s->n_past = n;
    cuda_kv_shrink(&s->model->kv, s, n);
    return AARMD_OK;
}

/* ---- step ------------------------------------------------------------------ */

static int validate_step(const struct aarmd_backend_model *m, const struct aarmd_batch_entry *entries,
                         uint32_t n_entries, char *err, size_t errlen)
{
    if (!entries && n_entries)
        return cuda_err(err, errlen, AARMD_EINVAL, "entries is NULL");
    for (uint32_t i = 0; i < n_entries; i++) {
        const struct aarmd_batch_entry *e = &entries[i];
        if (!e->seq || e->seq->model != m)
            return cuda_err(err, errlen, AARMD_EINVAL, "entry %u: sequence missing or of another model", i);
        if (!e->tokens || e->n_tokens == 0)
            return cuda_err(err, errlen, AARMD_EINVAL, "entry %u: no tokens", i);
        if (e->want_logits && !e->logits)
            return cuda_err(err, errlen, AARMD_EINVAL, "entry %u: want_logits without a logits buffer", i);
        if ((uint64_t)e->seq->n_past + e->n_tokens > e->seq->n_ctx)
            return cuda_err(err, errlen, AARMD_EINVAL, "entry %u: %u + %u tokens exceed the sequence's n_ctx %u", i,
                            e->seq->n_past, e->n_tokens, e->seq->n_ctx);
        for (uint32_t t = 0; t < e->n_tokens; t++)
            if (e->tokens[t] < 0 || e->tokens[t] >= m->hp.n_vocab)
                return cuda_err(err, errlen, AARMD_EINVAL, "entry %u: token %d at %u is outside the vocabulary [0, %d)",
                                i, (int)e->tokens[t], t, m->hp.n_vocab);
        for (uint32_t j = 0; j < i; j++)
            if (entries[j].seq == e->seq)
                return cuda_err(err, errlen, AARMD_EINVAL, "entries %u and %u name the same sequence", j, i);
    }
    return AARMD_OK;
}

/*
 * Reserves the blocks of the whole step first (AARMD_ENOMEM, nothing taken or
 * advanced, when the pool cannot cover it), then packs the entries in order
 * into forwards of at most max_tok tokens and CUDA_MAX_LOGIT_ROWS logit rows:
 * an entry longer than the room left continues in the next forward.
 */
static int cuda_step(struct aarmd_backend_model *m, const struct aarmd_batch_entry *entries, uint32_t n_entries,
                     char *err, size_t errlen)
{
    int rc = validate_step(m, entries, n_entries, err, errlen);
    if (rc != AARMD_OK)
        return rc;
    uint64_t need = 0;
    for (uint32_t i = 0; i < n_entries; i++)
        need += cuda_kv_need(&m->kv, entries[i].seq, entries[i].n_tokens);
    if (need > m->kv.n_free)
        return cuda_err(err, errlen, AARMD_ENOMEM, "KV pool exhausted: the step needs %llu blocks, %u of %u free",
                        (unsigned long long)need, m->kv.n_free, m->kv.n_blocks);
    cudaSetDevice(m->ctx->device);
    for (uint32_t i = 0; i < n_entries; i++)
        if ((rc = cuda_kv_grow(m, entries[i].seq, entries[i].n_tokens, err, errlen)) != AARMD_OK)
            return rc;

    struct cuda_piece pcs[64];
    uint32_t n_pc = 0, n_tok = 0, n_rows = 0, i = 0, done = 0;
    while (i < n_entries) {
        const struct aarmd_batch_entry *e = &entries[i];
        uint32_t n = e->n_tokens - done;
        if (n > m->max_tok - n_tok)
            n = m->max_tok - n_tok;
        int last = done + n == e->n_tokens;
        float *lg = last && e->want_logits ? e->logits : NULL;
        pcs[n_pc++] = (struct cuda_piece){e->seq, e->tokens + done, n, lg};
        n_tok += n;
        n_rows += lg != NULL;
        done += n;
        if (last) {
            i++;
            done = 0;
        }
        /* flush when no token, logit row or piece slot is left, or at the end */
        if (i == n_entries || n_tok == m->max_tok || n_rows == CUDA_MAX_LOGIT_ROWS ||
            n_pc == sizeof pcs / sizeof pcs[0]) {
            if ((rc = cuda_forward(m, pcs, n_pc, err, errlen)) != AARMD_OK)
                return rc;
            for (uint32_t k = 0; k < n_pc; k++)
                pcs[k].seq->n_past += pcs[k].n;
            n_pc = n_tok = n_rows = 0;
        }
    }
    return AARMD_OK;
}

/* ---- the table ------------------------------------------------------------- */

static const struct aarmd_backend cuda_backend = {
    .abi_major = AARMD_ABI_MAJOR,
    .abi_minor = AARMD_ABI_MINOR,
    .struct_size = sizeof(struct aarmd_backend),
    .name = "cuda",
    .version = CUDA_VERSION_STR,
    .ctx_new = cuda_ctx_new,
    .ctx_free = cuda_ctx_free,
    .device_info = cuda_device_info,
    .model_load = cuda_model_load,
    .model_free = cuda_model_free_m,
    .model_bytes = cuda_model_bytes,
    .seq_new = cuda_seq_new,
    .seq_free = cuda_seq_free,
    .seq_truncate = cuda_seq_truncate,
    .step = cuda_step,
    .kv_info = cuda_kv_info,
    .seq_fork = cuda_seq_fork,
    .logits_alloc = cuda_logits_alloc,
    .logits_free = cuda_logits_free,
};

__attribute__((visibility("default"))) const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host);
__attribute__((visibility("default"))) int aarmd_backend_probe(const struct aarmd_host *host, char *err,
                                                               size_t errlen);

const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host)
{
    (void)host;
    return &cuda_backend;
}

int aarmd_backend_probe(const struct aarmd_host *host, char *err, size_t errlen)
{
    return cuda_probe(host, err, errlen);
}
