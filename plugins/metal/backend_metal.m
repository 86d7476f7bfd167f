/*
 * backend_metal.m — the Metal backend plugin (Apple Silicon): the table, options,
 * device, weights in place over the GGUF mmap, the paged F16 KV pool (ABI 1.1;
 * block bookkeeping in metal_kv.c), sequences, steps cut into chunks of one
 * command buffer each (encoded by metal_forward.m). Host code only (manual
 * retain/release); kernels in shaders/metal; rope tables and checks from plugins/cpu.
 */
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels.h"
#include "metal_model.h"

#define MTL_VERSION "0.1.0"
#define MTL_DEFAULT_BATCH 512
#define MTL_MAX_BATCH 8192
#define MTL_VEC_ALIGN 64    /* bytes between converted vectors */
#define MTL_KV_BLOCK 16     /* default tokens per KV block (option kv_block) */
#define MTL_KV_MAX_MB (1ul << 24)   /* option kv_mb bound (16 TiB) */
#define MTL_ADVISED_SEQS 4  /* device_info's advice; the default KV pool holds this many full contexts */

/* Built from shaders/metal at build time (plugins/metal/include.am): the
 * compiled metallib (length 0 when the toolchain made none) and the
 * concatenated source, NUL-terminated, compiled at run time as the fallback. */
extern const unsigned char aarmd_metal_lib[];
extern const size_t aarmd_metal_lib_len;
extern const char aarmd_metal_src[];

/* ---- kernels -------------------------------------------------------------- */

/* The weight types, in slot order. */
static const uint32_t mtl_types[11] = {
    AARMD_TYPE_F32, AARMD_TYPE_F16, AARMD_TYPE_BF16, AARMD_TYPE_Q4_0, AARMD_TYPE_Q4_1, AARMD_TYPE_Q5_0,
    AARMD_TYPE_Q5_1, AARMD_TYPE_Q8_0, AARMD_TYPE_Q4_K, AARMD_TYPE_Q5_K, AARMD_TYPE_Q6_K,
};
static const char *const mtl_type_suffix[11] = {
    "f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k",
};

int mtl_type_slot(uint32_t type)
{
    for (int i = 0; i < 11; i++)
        if (mtl_types[i] == type)
            return i;
    return -1;
}

/* ---- logging -------------------------------------------------------------- */

static void logf_host(const struct aarmd_host *host, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
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

static int parse_opts(struct aarmd_backend_ctx *c, const struct aarmd_host *host, char *err, size_t errlen)
{
    c->batch = MTL_DEFAULT_BATCH;
    c->kv_block = MTL_KV_BLOCK;
    for (uint32_t i = 0; host && i < host->n_opts; i++) {
        const char *k = host->opts[i].key ? host->opts[i].key : "";
        const char *v = host->opts[i].value ? host->opts[i].value : "";
        unsigned long u;
        if (!strcmp(k, "batch")) {
            if (parse_uint(v, 1, MTL_MAX_BATCH, &u))
                return set_err(err, errlen, AARMD_EINVAL, "option batch=%s: expected an integer in [1, %d]", v,
                               MTL_MAX_BATCH);
            c->batch = (uint32_t)u;
        } else if (!strcmp(k, "weights")) {
            if (!strcmp(v, "mmap"))
                c->weights_copy = 0;
            else if (!strcmp(v, "copy"))
                c->weights_copy = 1;
            else
                return set_err(err, errlen, AARMD_EINVAL, "option weights=%s: expected mmap or copy", v);
        } else if (!strcmp(k, "library")) {
            if (!strcmp(v, "embedded"))
                c->from_source = 0;
            else if (!strcmp(v, "source"))
                c->from_source = 1;
            else
                return set_err(err, errlen, AARMD_EINVAL, "option library=%s: expected embedded or source", v);
        } else if (!strcmp(k, "kv_block")) {
            if (parse_uint(v, 1, MTL_KV_MAX_BLOCK_TOKENS, &u) || (u & (u - 1)))
                return set_err(err, errlen, AARMD_EINVAL,
                               "option kv_block=%s: expected a power of two in [1, %u] (tokens per KV block)", v,
                               MTL_KV_MAX_BLOCK_TOKENS);
            c->kv_block = (uint32_t)u;
        } else if (!strcmp(k, "kv_mb")) {
            if (parse_uint(v, 1, MTL_KV_MAX_MB, &u))
                return set_err(err, errlen, AARMD_EINVAL, "option kv_mb=%s: expected an integer in [1, %lu]", v,
                               MTL_KV_MAX_MB);
            c->kv_mb = u;
        } else if (!strcmp(k, "kv_blocks")) {
            if (parse_uint(v, 1, UINT32_MAX - 1, &u))
                return set_err(err, errlen, AARMD_EINVAL, "option kv_blocks=%s: expected an integer in [1, %u]", v,
                               UINT32_MAX - 1);
            c->kv_blocks = (uint32_t)u;
        } else {
            return set_err(err, errlen, AARMD_EINVAL,
                           "unknown option '%s' (metal backend knows batch, weights, library, kv_block, kv_mb, "
                           "kv_blocks)", k);
        }
    }
    return AARMD_OK;
}

/* ---- context -------------------------------------------------------------- */

static id<MTLDevice> pick_device(int32_t index)
{
    if (index <= 0)
        return MTLCreateSystemDefaultDevice();   /* +1 */
    NSArray *all = MTLCopyAllDevices();           /* +1 */
    id<MTLDevice> d = nil;
    if (all && (NSUInteger)index < [all count])
        d = [[all objectAtIndex:(NSUInteger)index] retain];
    release_obj(all);
    return d;
}

static int load_library(struct aarmd_backend_ctx *c, char *err, size_t errlen)
{
    NSError *e = nil;
    if (!c->from_source && aarmd_metal_lib_len > 0) {
        dispatch_data_t data = dispatch_data_create(aarmd_metal_lib, aarmd_metal_lib_len, NULL,
                                                    DISPATCH_DATA_DESTRUCTOR_DEFAULT);
        c->library = [c->device newLibraryWithData:data error:&e];
        dispatch_release(data);
        if (!c->library)
            logf_host(c->host, AARMD_LOG_WARN, "metal backend: embedded metallib rejected (%s); compiling the source",
                      err_text(e));
    }
    if (!c->library) {
        c->from_source = 1;
        NSString *src = [NSString stringWithUTF8String:aarmd_metal_src];
        e = nil;
        c->library = [c->device newLibraryWithSource:src options:nil error:&e];
        if (!c->library)
            return set_err(err, errlen, AARMD_EDEVICE, "cannot compile the Metal kernels: %s", err_text(e));
    }
    for (int k = 0; k < K_COUNT; k++) {
        char name[64];
        static const char *const fixed[K_MV_FIRST] = {"aarmd_norm", "aarmd_rope", "aarmd_softmax",
                                                      "aarmd_eltwise", "aarmd_kv_store", "aarmd_attention"};
        if (k < K_MV_FIRST)
            snprintf(name, sizeof name, "%s", fixed[k]);
        else if (k < K_MV_FIRST + 11)
            snprintf(name, sizeof name, "aarmd_mv_%s", mtl_type_suffix[k - K_MV_FIRST]);
        else if (k < K_MV_FIRST + 22)
            snprintf(name, sizeof name, "aarmd_get_rows_%s", mtl_type_suffix[k - K_MV_FIRST - 11]);
        else
            snprintf(name, sizeof name, "aarmd_mm_%s", mtl_type_suffix[k - K_MV_FIRST - 22]);
        id<MTLFunction> fn = [c->library newFunctionWithName:[NSString stringWithUTF8String:name]];
        if (!fn)
            return set_err(err, errlen, AARMD_EINTERNAL, "Metal library has no kernel %s", name);
        e = nil;
        c->pipes[k] = [c->device newComputePipelineStateWithFunction:fn error:&e];
        [fn release];
        if (!c->pipes[k])
            return set_err(err, errlen, AARMD_EDEVICE, "cannot build the pipeline of %s: %s", name, err_text(e));
        NSUInteger need = k >= K_MV_FIRST + 22 ? 32 * AARMD_MTL_MM_NSG
                          : k >= K_MV_FIRST && k < K_MV_FIRST + 11 ? 32 * AARMD_MTL_MV_NSG : AARMD_MTL_ROW_THREADS;
        if ([c->pipes[k] maxTotalThreadsPerThreadgroup] < need)
            return set_err(err, errlen, AARMD_EUNSUPPORTED, "kernel %s allows %lu threads per threadgroup, needs %lu",
                           name, (unsigned long)[c->pipes[k] maxTotalThreadsPerThreadgroup], (unsigned long)need);
    }
    return AARMD_OK;
}

static void mtl_ctx_free(struct aarmd_backend_ctx *ctx)
{
    if (!ctx)
        return;
    for (int k = 0; k < K_COUNT; k++)
        release_obj(ctx->pipes[k]);
    release_obj(ctx->library);
    release_obj(ctx->queue);
    release_obj(ctx->device);
    free(ctx);
}

static int mtl_ctx_new(const struct aarmd_host *host, int32_t device, struct aarmd_backend_ctx **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    struct aarmd_backend_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return set_err(err, errlen, AARMD_ENOMEM, "out of memory");
    c->host = host;
    int rc = parse_opts(c, host, err, errlen);
    if (rc)
        goto fail;
    @autoreleasepool {
        c->device = pick_device(device);
        if (!c->device) {
            rc = device > 0 ? set_err(err, errlen, AARMD_EINVAL, "Metal device %d does not exist", device)
                            : set_err(err, errlen, AARMD_EDEVICE, "no Metal device");
            goto fail;
        }
        c->queue = [c->device newCommandQueue];
        if (!c->queue) {
            rc = set_err(err, errlen, AARMD_EDEVICE, "cannot create a Metal command queue");
            goto fail;
        }
        rc = load_library(c, err, errlen);
        if (rc)
            goto fail;
        logf_host(host, AARMD_LOG_INFO, "metal backend: %s, unified=%d, kernels from %s, batch=%u, weights=%s",
                  ns_cstr([c->device name]), (int)[c->device hasUnifiedMemory],
                  c->from_source ? "source" : "metallib", c->batch, c->weights_copy ? "copy" : "mmap");
    }
    *out = c;
    return AARMD_OK;
fail:
    mtl_ctx_free(c);
    return rc;
}

static int mtl_device_info(struct aarmd_backend_ctx *ctx, struct aarmd_device_info *info, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct aarmd_device_info d;
    memset(&d, 0, sizeof d);
    @autoreleasepool {
        snprintf(d.name, sizeof d.name, "%s", ns_cstr([ctx->device name]));
        uint64_t total = (uint64_t)[ctx->device recommendedMaxWorkingSetSize];
        uint64_t used = (uint64_t)[ctx->device currentAllocatedSize];
        d.memory_total = total;
        d.memory_free = total > used ? total - used : 0;
    }
    snprintf(d.memory_architecture, sizeof d.memory_architecture, "unified");
    snprintf(d.worker_type, sizeof d.worker_type, "apple-metal");
    d.advised_seqs = MTL_ADVISED_SEQS;
    size_t n = info->struct_size < sizeof d ? info->struct_size : sizeof d;
    uint32_t keep = info->struct_size;
    if (n > sizeof d.struct_size)
        memcpy((char *)info + sizeof d.struct_size, (char *)&d + sizeof d.struct_size, n - sizeof d.struct_size);
    info->struct_size = keep;
    return AARMD_OK;
}

/* ---- model: weights ------------------------------------------------------- */

static const char *tname(const struct aarmd_tensor *t)
{
    return t->name ? t->name : "(unnamed)";
}

static const struct aarmd_tensor *find(const struct aarmd_model_desc *d, int role, int layer)
{
    for (uint32_t i = 0; i < d->n_tensors; i++)
        if (d->tensors[i].role == role && d->tensors[i].layer == layer)
            return &d->tensors[i];
    return NULL;
}

static int is_matrix_role(int role)
{
    switch (role) {
    case AARMD_ROLE_TOKEN_EMBD: case AARMD_ROLE_POS_EMBD: case AARMD_ROLE_OUTPUT: case AARMD_ROLE_ATTN_Q:
    case AARMD_ROLE_ATTN_K: case AARMD_ROLE_ATTN_V: case AARMD_ROLE_ATTN_QKV: case AARMD_ROLE_ATTN_OUT:
    case AARMD_ROLE_FFN_GATE: case AARMD_ROLE_FFN_UP: case AARMD_ROLE_FFN_UP_GATE: case AARMD_ROLE_FFN_DOWN:
        return 1;
    default:
        return 0;
    }
}

/*
 * Weight buffers. In place: one no-copy buffer over the page-rounded span of
 * all matrices (the mmap starts on a page, so the rounded span stays inside
 * it); when that is refused (alignment, maxBufferLength) or weights=copy,
 * one shared buffer per matrix, copied once.
 */
static int map_weights(struct aarmd_backend_model *m, const struct aarmd_model_desc *d, id<MTLBuffer> *bufs,
                       uint64_t *offs, char *err, size_t errlen)
{
    id<MTLDevice> dev = m->ctx->device;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (uint32_t i = 0; i < d->n_tensors; i++) {
        const struct aarmd_tensor *t = &d->tensors[i];
        if (!is_matrix_role(t->role) || !t->data)
            continue;
        lo = (uintptr_t)t->data < lo ? (uintptr_t)t->data : lo;
        hi = (uintptr_t)t->data + t->nbytes > hi ? (uintptr_t)t->data + t->nbytes : hi;
    }
    if (hi == 0)
        return set_err(err, errlen, AARMD_EINVAL, "model has no weight matrices");
    uintptr_t page = (uintptr_t)getpagesize();
    uintptr_t start = lo & ~(page - 1), end = (hi + page - 1) & ~(page - 1);
    id<MTLBuffer> whole = nil;
    if (!m->ctx->weights_copy && (uint64_t)(end - start) <= (uint64_t)[dev maxBufferLength])
        whole = [dev newBufferWithBytesNoCopy:(void *)start length:(NSUInteger)(end - start)
                                      options:MTLResourceStorageModeShared deallocator:nil];
    if (whole) {
        m->in_place = 1;
        m->wbufs[m->n_wbufs++] = whole;
        for (uint32_t i = 0; i < d->n_tensors; i++) {
            bufs[i] = whole;
            offs[i] = d->tensors[i].data ? (uint64_t)((uintptr_t)d->tensors[i].data - start) : 0;
        }
        return AARMD_OK;
    }
    for (uint32_t i = 0; i < d->n_tensors; i++) {
        const struct aarmd_tensor *t = &d->tensors[i];
        bufs[i] = nil;
        offs[i] = 0;
        if (!is_matrix_role(t->role) || !t->data)
            continue;
        id<MTLBuffer> b = [dev newBufferWithBytes:t->data length:(NSUInteger)t->nbytes
                                          options:MTLResourceStorageModeShared];
        if (!b)
            return set_err(err, errlen, AARMD_ENOMEM, "cannot copy tensor %s (%llu bytes) to the GPU", tname(t),
                           (unsigned long long)t->nbytes);
        m->wbufs[m->n_wbufs++] = b;
        bufs[i] = b;
    }
    return AARMD_OK;
}

/* A matrix {n_in, n_out} for (role, layer), optionally only rows [row0, row0 + n_rows). */
static int get_mat(struct aarmd_backend_model *m, const struct aarmd_model_desc *d, id<MTLBuffer> *bufs,
                   const uint64_t *offs, int role, int layer, int64_t n_in, int64_t n_out, int64_t row0,
                   int64_t n_rows, int required, const char *what, struct mtl_mat *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const struct aarmd_tensor *t = find(d, role, layer);
    if (!t) {
        if (required)
            return set_err(err, errlen, AARMD_EINVAL, "missing tensor %s (layer %d)", what, layer);
        return AARMD_OK;
    }
    if (n_out > 0 && (t->ne[0] != n_in || t->ne[1] != n_out || t->ne[2] != 1 || t->ne[3] != 1))
        return set_err(err, errlen, AARMD_EINVAL, "tensor %s has shape {%lld, %lld}, expected {%lld, %lld}", tname(t),
                       (long long)t->ne[0], (long long)t->ne[1], (long long)n_in, (long long)n_out);
    int rc = cpu_weight_check(t, err, errlen);
    if (rc)
        return rc;
    int slot = mtl_type_slot(t->type);
    if (slot < 0)
        return set_err(err, errlen, AARMD_EUNSUPPORTED, "tensor %s: type %s has no Metal kernel", tname(t),
                       cpu_type_name(t->type));
    if (t->ne[0] % 8)
        return set_err(err, errlen, AARMD_EUNSUPPORTED, "tensor %s: rows of %lld elements (Metal kernels need a multiple of 8)",
                       tname(t), (long long)t->ne[0]);
    if (t->ne[1] > UINT32_MAX || cpu_type_row_bytes(t->type, t->ne[0]) > UINT32_MAX)
        return set_err(err, errlen, AARMD_EUNSUPPORTED, "tensor %s is too large", tname(t));
    uint32_t i = (uint32_t)(t - d->tensors);
    out->buf = bufs[i];
    out->type = t->type;
    out->n_in = (uint32_t)t->ne[0];
    out->n_out = (uint32_t)(n_rows > 0 ? n_rows : t->ne[1]);
    out->row_bytes = (uint32_t)cpu_type_row_bytes(t->type, t->ne[0]);
    out->off = offs[i] + (uint64_t)row0 * out->row_bytes;
    int64_t be = cpu_type_block_elems(t->type);
    out->blk_bytes = (uint32_t)(be == 1 ? 8 * cpu_type_block_bytes(t->type) : cpu_type_block_bytes(t->type));
    out->blk_chunks = (uint32_t)(be == 1 ? 1 : be / 8);
    return AARMD_OK;
}

/* A vector of n floats for (role, layer), converted into the vecs buffer; part [e0, e0+n) of it when split. */
static int get_vec(struct aarmd_backend_model *m, const struct aarmd_model_desc *d, int role, int layer, int64_t n_total,
                   int64_t e0, int64_t n, int required, const char *what, struct mtl_vec *out, char *err, size_t errlen)
{
    out->off = UINT64_MAX;
    const struct aarmd_tensor *t = find(d, role, layer);
    if (!t) {
        if (required)
            return set_err(err, errlen, AARMD_EINVAL, "missing tensor %s (layer %d)", what, layer);
        return AARMD_OK;
    }
    int64_t count = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    if (count != n_total)
        return set_err(err, errlen, AARMD_EINVAL, "tensor %s has %lld elements, expected %lld", tname(t),
                       (long long)count, (long long)n_total);
    if (t->type != AARMD_TYPE_F32 && t->type != AARMD_TYPE_F16 && t->type != AARMD_TYPE_BF16)
        return set_err(err, errlen, AARMD_EUNSUPPORTED, "tensor %s: type %s not supported for a vector (F32, F16, BF16)",
                       tname(t), cpu_type_name(t->type));
    if (!t->data || t->nbytes < (uint64_t)count * (t->type == AARMD_TYPE_F32 ? 4 : 2))
        return set_err(err, errlen, AARMD_EINVAL, "tensor %s: data shorter than its shape", tname(t));
    uint64_t bytes = ((uint64_t)n * 4 + MTL_VEC_ALIGN - 1) / MTL_VEC_ALIGN * MTL_VEC_ALIGN;
    if (m->vec_bytes_used + bytes > (uint64_t)[m->vecs length])
        return set_err(err, errlen, AARMD_EINTERNAL, "vector buffer overflow at %s", tname(t));
    float *dst = (float *)((char *)[m->vecs contents] + m->vec_bytes_used);
    for (int64_t i = 0; i < n; i++) {
        int64_t s = e0 + i;
        if (t->type == AARMD_TYPE_F32) {
            memcpy(&dst[i], (const char *)t->data + s * 4, 4);
        } else {
            uint16_t h;
            memcpy(&h, (const char *)t->data + s * 2, 2);
            dst[i] = t->type == AARMD_TYPE_F16 ? cpu_f16_to_f32(h) : cpu_bf16_to_f32(h);
        }
    }
    out->off = m->vec_bytes_used;
    m->vec_bytes_used += bytes;
    return AARMD_OK;
}

static int check_hparams(const struct aarmd_model_desc *d, char *err, size_t errlen)
{
    if (!d->n_embd || !d->n_layer || !d->n_head || !d->n_head_kv || !d->head_dim || !d->n_ff || !d->n_vocab)
        return set_err(err, errlen, AARMD_EINVAL, "model shape has a zero (n_embd %u n_layer %u n_head %u n_head_kv %u "
                       "head_dim %u n_ff %u n_vocab %u)", d->n_embd, d->n_layer, d->n_head, d->n_head_kv,
                       d->head_dim, d->n_ff, d->n_vocab);
    if (d->n_head % d->n_head_kv)
        return set_err(err, errlen, AARMD_EINVAL, "n_head %u is not a multiple of n_head_kv %u", d->n_head, d->n_head_kv);
    if (d->head_dim > AARMD_MTL_MAX_HEAD_DIM)
        return set_err(err, errlen, AARMD_EUNSUPPORTED, "head_dim %u exceeds the Metal attention kernel's %d",
                       d->head_dim, AARMD_MTL_MAX_HEAD_DIM);
    if (d->rope_kind > AARMD_ROPE_NEOX)
        return set_err(err, errlen, AARMD_EINVAL, "unknown rope_kind %u", d->rope_kind);
    if (d->rope_kind != AARMD_ROPE_NONE && (d->n_rot == 0 || d->n_rot % 2 || d->n_rot > d->head_dim))
        return set_err(err, errlen, AARMD_EINVAL, "n_rot %u must be even and in [2, head_dim %u]", d->n_rot, d->head_dim);
    if (d->rope_kind != AARMD_ROPE_NONE && !(d->rope_freq_base > 0.0f))
        return set_err(err, errlen, AARMD_EINVAL, "rope_freq_base %g must be > 0", (double)d->rope_freq_base);
    if (d->rope_scaling > AARMD_ROPE_SCALING_LLAMA3)
        return set_err(err, errlen, AARMD_EUNSUPPORTED, "unknown rope_scaling %u", d->rope_scaling);
    if (d->norm_kind > AARMD_NORM_LAYER)
        return set_err(err, errlen, AARMD_EINVAL, "unknown norm_kind %u", d->norm_kind);
    if (d->act > AARMD_ACT_GELU)
        return set_err(err, errlen, AARMD_EINVAL, "unknown activation %u", d->act);
    return AARMD_OK;
}

static int load_layer(struct aarmd_backend_model *m, const struct aarmd_model_desc *d, id<MTLBuffer> *bufs,
                      const uint64_t *offs, uint32_t il, char *err, size_t errlen)
{
    struct mtl_layer *L = &m->layers[il];
    int64_t E = m->n_embd, Q = m->q_dim, KV = m->kv_dim, F = m->n_ff;
    int l = (int)il, rc;
#define TRY(x) do { if ((rc = (x)) != AARMD_OK) return rc; } while (0)
    TRY(get_vec(m, d, AARMD_ROLE_ATTN_NORM, l, E, 0, E, 1, "attn_norm", &L->attn_norm, err, errlen));
    TRY(get_vec(m, d, AARMD_ROLE_ATTN_NORM_B, l, E, 0, E, 0, "attn_norm_b", &L->attn_norm_b, err, errlen));
    if (find(d, AARMD_ROLE_ATTN_QKV, l)) {   /* fused: q, k, v are row ranges of one matrix */
        TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_ATTN_QKV, l, E, Q + 2 * KV, 0, Q, 1, "attn_qkv", &L->wq, err, errlen));
        TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_ATTN_QKV, l, E, Q + 2 * KV, Q, KV, 1, "attn_qkv", &L->wk, err, errlen));
        TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_ATTN_QKV, l, E, Q + 2 * KV, Q + KV, KV, 1, "attn_qkv", &L->wv, err, errlen));
        TRY(get_vec(m, d, AARMD_ROLE_ATTN_QKV_B, l, Q + 2 * KV, 0, Q, 0, "attn_qkv_b", &L->bq, err, errlen));
        TRY(get_vec(m, d, AARMD_ROLE_ATTN_QKV_B, l, Q + 2 * KV, Q, KV, 0, "attn_qkv_b", &L->bk, err, errlen));
        TRY(get_vec(m, d, AARMD_ROLE_ATTN_QKV_B, l, Q + 2 * KV, Q + KV, KV, 0, "attn_qkv_b", &L->bv, err, errlen));
    } else {
        TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_ATTN_Q, l, E, Q, 0, 0, 1, "attn_q", &L->wq, err, errlen));
        TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_ATTN_K, l, E, KV, 0, 0, 1, "attn_k", &L->wk, err, errlen));
        TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_ATTN_V, l, E, KV, 0, 0, 1, "attn_v", &L->wv, err, errlen));
        TRY(get_vec(m, d, AARMD_ROLE_ATTN_Q_B, l, Q, 0, Q, 0, "attn_q_b", &L->bq, err, errlen));
        TRY(get_vec(m, d, AARMD_ROLE_ATTN_K_B, l, KV, 0, KV, 0, "attn_k_b", &L->bk, err, errlen));
        TRY(get_vec(m, d, AARMD_ROLE_ATTN_V_B, l, KV, 0, KV, 0, "attn_v_b", &L->bv, err, errlen));
    }
    TRY(get_vec(m, d, AARMD_ROLE_ATTN_Q_NORM, l, m->head_dim, 0, m->head_dim, 0, "attn_q_norm", &L->q_norm, err, errlen));
    TRY(get_vec(m, d, AARMD_ROLE_ATTN_K_NORM, l, m->head_dim, 0, m->head_dim, 0, "attn_k_norm", &L->k_norm, err, errlen));
    TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_ATTN_OUT, l, Q, E, 0, 0, 1, "attn_output", &L->wo, err, errlen));
    TRY(get_vec(m, d, AARMD_ROLE_ATTN_OUT_B, l, E, 0, E, 0, "attn_output_b", &L->bo, err, errlen));
    TRY(get_vec(m, d, AARMD_ROLE_ATTN_POST_NORM, l, E, 0, E, 0, "attn_post_norm", &L->attn_post_norm, err, errlen));
    TRY(get_vec(m, d, AARMD_ROLE_FFN_NORM, l, E, 0, E, 1, "ffn_norm", &L->ffn_norm, err, errlen));
    TRY(get_vec(m, d, AARMD_ROLE_FFN_NORM_B, l, E, 0, E, 0, "ffn_norm_b", &L->ffn_norm_b, err, errlen));
    if (m->act == AARMD_ACT_GELU) {
        TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_FFN_UP, l, E, F, 0, 0, 1, "ffn_up", &L->w_up, err, errlen));
    } else if (find(d, AARMD_ROLE_FFN_UP_GATE, l)) {   /* phi3: gate rows then up rows */
        TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_FFN_UP_GATE, l, E, 2 * F, 0, F, 1, "ffn_up_gate", &L->w_gate, err, errlen));
        TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_FFN_UP_GATE, l, E, 2 * F, F, F, 1, "ffn_up_gate", &L->w_up, err, errlen));
    } else {
        TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_FFN_GATE, l, E, F, 0, 0, 1, "ffn_gate", &L->w_gate, err, errlen));
        TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_FFN_UP, l, E, F, 0, 0, 1, "ffn_up", &L->w_up, err, errlen));
    }
    TRY(get_vec(m, d, AARMD_ROLE_FFN_UP_B, l, F, 0, F, 0, "ffn_up_b", &L->b_up, err, errlen));
    TRY(get_mat(m, d, bufs, offs, AARMD_ROLE_FFN_DOWN, l, F, E, 0, 0, 1, "ffn_down", &L->w_down, err, errlen));
    TRY(get_vec(m, d, AARMD_ROLE_FFN_DOWN_B, l, E, 0, E, 0, "ffn_down_b", &L->b_down, err, errlen));
    TRY(get_vec(m, d, AARMD_ROLE_FFN_POST_NORM, l, E, 0, E, 0, "ffn_post_norm", &L->ffn_post_norm, err, errlen));
#undef TRY
    L->is_swa = d->layer_is_swa && d->layer_is_swa[il] && d->sliding_window > 0;
    L->rope_slot = L->is_swa ? 1 : 0;
    return AARMD_OK;
}

static id<MTLBuffer> scratch(struct aarmd_backend_model *m, uint64_t bytes)
{
    m->scratch_bytes += bytes;
    return [m->ctx->device newBufferWithLength:(NSUInteger)(bytes ? bytes : 16) options:MTLResourceStorageModeShared];
}

static uint64_t mtl_kv_blocks_ctx(uint64_t n_tokens, uint32_t block_tokens)
{
    return (n_tokens + block_tokens - 1) / block_tokens;
}

/*
 * The model's KV pool: option kv_blocks blocks, else kv_mb MiB, else room for
 * MTL_ADVISED_SEQS sequences of the model's trained context (4096 tokens when
 * it states none) as the CPU backend sizes it, at most half of the working set
 * left once the weights and scratch are in (recommendedMaxWorkingSetSize -
 * max(currentAllocatedSize, this model's weight + scratch bytes)) and at most
 * what one layer's K (V) buffer of maxBufferLength holds. One K and one V
 * buffer per layer; nothing is zeroed (a row is written before any read of it).
 */
static int make_kv_pool(struct aarmd_backend_model *m, char *err, size_t errlen)
{
    struct aarmd_backend_ctx *c = m->ctx;
    id<MTLDevice> dev = c->device;
    uint64_t blk_layer = (uint64_t)c->kv_block * m->kv_dim * 2;   /* one block in one K (V) buffer */
    uint64_t block_bytes = 2 * blk_layer * m->n_layer;            /* K and V of every layer */
    uint64_t max_blocks = (uint64_t)[dev maxBufferLength] / blk_layer, n;
    if (max_blocks > UINT32_MAX - 1)
        max_blocks = UINT32_MAX - 1;
    if (c->kv_blocks) {
        n = c->kv_blocks;
    } else if (c->kv_mb) {
        n = (c->kv_mb << 20) / block_bytes;
        if (n == 0)
            return set_err(err, errlen, AARMD_EINVAL, "option kv_mb=%llu holds no KV block (%llu bytes with kv_block=%u)",
                           (unsigned long long)c->kv_mb, (unsigned long long)block_bytes, c->kv_block);
    } else {
        uint64_t rec = (uint64_t)[dev recommendedMaxWorkingSetSize], used = (uint64_t)[dev currentAllocatedSize];
        if (used < m->weight_bytes + m->scratch_bytes)
            used = m->weight_bytes + m->scratch_bytes;   /* no-copy weights may not count as allocated */
        uint64_t room = rec > used ? (rec - used) / 2 / block_bytes : 0;
        n = (uint64_t)MTL_ADVISED_SEQS * mtl_kv_blocks_ctx(m->n_ctx_train ? m->n_ctx_train : 4096, c->kv_block);
        if (n > room)
            n = room;
        if (n > max_blocks)
            n = max_blocks;
        if (n == 0)
            return set_err(err, errlen, AARMD_ENOMEM, "no memory left for a KV pool (working set %llu bytes, %llu in "
                           "use, a block is %llu bytes); set the option kv_mb", (unsigned long long)rec,
                           (unsigned long long)used, (unsigned long long)block_bytes);
    }
    if (n > max_blocks)
        return set_err(err, errlen, AARMD_EUNSUPPORTED, "KV pool of %llu blocks: one layer's K buffer would be %llu "
                       "bytes, over the device's maxBufferLength %llu", (unsigned long long)n,
                       (unsigned long long)(n * blk_layer), (unsigned long long)[dev maxBufferLength]);
    int rc = mtl_kv_pool_init(&m->pool, (uint32_t)n, c->kv_block, err, errlen);
    if (rc)
        return rc;
    m->kc = calloc(m->n_layer, sizeof *m->kc);
    m->vc = calloc(m->n_layer, sizeof *m->vc);
    if (!m->kc || !m->vc)
        return set_err(err, errlen, AARMD_ENOMEM, "out of memory");
    m->kv_layer_bytes = n * blk_layer;
    for (uint32_t il = 0; il < m->n_layer; il++) {
        m->kc[il] = [dev newBufferWithLength:(NSUInteger)m->kv_layer_bytes options:MTLResourceStorageModeShared];
        m->vc[il] = [dev newBufferWithLength:(NSUInteger)m->kv_layer_bytes options:MTLResourceStorageModeShared];
        if (!m->kc[il] || !m->vc[il])
            return set_err(err, errlen, AARMD_ENOMEM, "cannot allocate a KV pool of %llu blocks (%llu bytes)",
                           (unsigned long long)n, (unsigned long long)(n * block_bytes));
        m->kv_bytes += 2 * m->kv_layer_bytes;
    }
    m->ktable_cap = 16;   /* grows (doubling) on the first chunk that needs more */
    m->kvtok = scratch(m, (uint64_t)c->batch * sizeof(struct aarmd_mtl_kv_tok));
    m->ktable = scratch(m, (uint64_t)m->ktable_cap * 4);
    if (!m->kvtok || !m->ktable)
        return set_err(err, errlen, AARMD_ENOMEM, "cannot allocate GPU scratch for block tables");
    return AARMD_OK;
}

static void mtl_model_free(struct aarmd_backend_model *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < m->n_wbufs; i++)
        release_obj(m->wbufs[i]);
    id<MTLBuffer> bs[] = {m->vecs, m->x, m->xb, m->xb2, m->q, m->k, m->v, m->att, m->hb, m->hb2,
                          m->lx, m->lo, m->tok, m->pos_tok, m->lidx, m->cs, m->kvtok, m->ktable};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++)
        release_obj(bs[i]);
    for (uint32_t il = 0; il < m->n_layer; il++) {
        if (m->kc)
            release_obj(m->kc[il]);
        if (m->vc)
            release_obj(m->vc[il]);
    }
    free(m->kc);
    free(m->vc);
    mtl_kv_pool_fini(&m->pool);
    free(m->wbufs);
    free(m->layers);
    free(m->rope_ff);
    free(m);
}

static int mtl_model_load(struct aarmd_backend_ctx *ctx, const struct aarmd_model_desc *desc,
                          aarmd_progress_fn progress, void *progress_user, struct aarmd_backend_model **out,
                          char *err, size_t errlen)
{
    *out = NULL;
    if (!desc)
        return set_err(err, errlen, AARMD_EINVAL, "no model description");
    if (!desc->tensors || desc->n_tensors == 0)
        return set_err(err, errlen, AARMD_EINVAL, "model has no weights (vocab-only file?)");
    int rc = check_hparams(desc, err, errlen);
    if (rc)
        return rc;
    if (progress && progress(progress_user, 0.0f))
        return set_err(err, errlen, AARMD_ECANCELLED, "model load cancelled");
    id<MTLBuffer> *bufs = calloc(desc->n_tensors, sizeof *bufs);
    uint64_t *offs = calloc(desc->n_tensors, sizeof *offs);
    struct aarmd_backend_model *m = calloc(1, sizeof *m);
    if (!bufs || !offs || !m) {
        free(bufs);
        free(offs);
        free(m);
        return set_err(err, errlen, AARMD_ENOMEM, "out of memory");
    }
    m->ctx = ctx;
    m->n_embd = desc->n_embd;
    m->n_layer = desc->n_layer;
    m->n_head = desc->n_head;
    m->n_head_kv = desc->n_head_kv;
    m->head_dim = desc->head_dim;
    m->n_ff = desc->n_ff;
    m->n_vocab = desc->n_vocab;
    m->q_dim = desc->n_head * desc->head_dim;
    m->kv_dim = desc->n_head_kv * desc->head_dim;
    m->n_ctx_train = desc->n_ctx_train;
    m->norm_kind = desc->norm_kind;
    m->norm_eps = desc->norm_eps > 0.0f ? desc->norm_eps : 1e-5f;
    m->act = desc->act;
    m->attn_scale = desc->attn_scale > 0.0f ? desc->attn_scale : 1.0f / sqrtf((float)desc->head_dim);
    m->attn_softcap = desc->attn_logit_softcap;
    m->final_softcap = desc->final_logit_softcap;
    m->sliding_window = desc->sliding_window;
    m->embd_scale = desc->embd_scale > 0.0f ? desc->embd_scale : 1.0f;
    m->wbufs = calloc(desc->n_tensors + 1, sizeof *m->wbufs);
    m->layers = calloc(desc->n_layer, sizeof *m->layers);
    uint64_t vec_bytes = 0;
    for (uint32_t i = 0; i < desc->n_tensors; i++) {
        const struct aarmd_tensor *t = &desc->tensors[i];
        m->weight_bytes += t->nbytes;
        if (!is_matrix_role(t->role))
            vec_bytes += ((uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]) * 4 + MTL_VEC_ALIGN - 1) /
                         MTL_VEC_ALIGN * MTL_VEC_ALIGN + 3 * MTL_VEC_ALIGN;   /* room for split parts */
    }
    if (!m->wbufs || !m->layers) {
        rc = set_err(err, errlen, AARMD_ENOMEM, "out of memory");
        goto fail;
    }
    @autoreleasepool {
        m->vecs = scratch(m, vec_bytes);
        if (!m->vecs) {
            rc = set_err(err, errlen, AARMD_ENOMEM, "cannot allocate %llu bytes of vectors", (unsigned long long)vec_bytes);
            goto fail;
        }
        if ((rc = map_weights(m, desc, bufs, offs, err, errlen)))
            goto fail;
        int64_t E = m->n_embd;
        if ((rc = get_mat(m, desc, bufs, offs, AARMD_ROLE_TOKEN_EMBD, -1, E, m->n_vocab, 0, 0, 1, "token_embd",
                          &m->token_embd, err, errlen)))
            goto fail;
        if (desc->tied_embeddings)
            m->output = m->token_embd;
        else if ((rc = get_mat(m, desc, bufs, offs, AARMD_ROLE_OUTPUT, -1, E, m->n_vocab, 0, 0, 1, "output", &m->output,
                               err, errlen)))
            goto fail;
        const struct aarmd_tensor *pe = find(desc, AARMD_ROLE_POS_EMBD, -1);
        if (pe) {
            if ((rc = get_mat(m, desc, bufs, offs, AARMD_ROLE_POS_EMBD, -1, E, pe->ne[1], 0, 0, 1, "pos_embd",
                              &m->pos_embd, err, errlen)))
                goto fail;
            m->has_pos_embd = 1;
            m->n_ctx_train = (uint32_t)pe->ne[1];
        }
        if ((rc = get_vec(m, desc, AARMD_ROLE_OUTPUT_NORM, -1, E, 0, E, 1, "output_norm", &m->output_norm, err, errlen)) ||
            (rc = get_vec(m, desc, AARMD_ROLE_OUTPUT_NORM_B, -1, E, 0, E, 0, "output_norm_b", &m->output_norm_b, err,
                          errlen)))
            goto fail;
        if (desc->rope_kind != AARMD_ROPE_NONE) {
            uint32_t half_rot = desc->n_rot / 2;
            const struct aarmd_tensor *rf = find(desc, AARMD_ROLE_ROPE_FREQS, -1);
            if (rf || desc->rope_scaling == AARMD_ROPE_SCALING_LLAMA3) {
                m->rope_ff = malloc((half_rot + 1) * sizeof(float));
                if (!m->rope_ff) {
                    rc = set_err(err, errlen, AARMD_ENOMEM, "out of memory");
                    goto fail;
                }
                if (rf) {
                    if (rf->type != AARMD_TYPE_F32 || rf->ne[0] * rf->ne[1] * rf->ne[2] * rf->ne[3] != half_rot ||
                        !rf->data || rf->nbytes < half_rot * 4) {
                        rc = set_err(err, errlen, AARMD_EINVAL, "tensor %s must be F32 with n_rot/2 = %u elements",
                                     tname(rf), half_rot);
                        goto fail;
                    }
                    memcpy(m->rope_ff, rf->data, half_rot * sizeof(float));
                } else {
                    cpu_rope_llama3_factors(desc, m->rope_ff);
                }
            }
            float swa_base = desc->rope_freq_base_swa > 0.0f ? desc->rope_freq_base_swa : desc->rope_freq_base;
            cpu_rope_init(&m->rope[0], desc, desc->rope_freq_base, m->rope_ff);
            cpu_rope_init(&m->rope[1], desc, swa_base, m->rope_ff);
        }
        for (uint32_t il = 0; il < m->n_layer; il++) {
            if ((rc = load_layer(m, desc, bufs, offs, il, err, errlen)))
                goto fail;
            if (progress && progress(progress_user, 0.9f * (float)(il + 1) / (float)m->n_layer)) {
                rc = set_err(err, errlen, AARMD_ECANCELLED, "model load cancelled");
                goto fail;
            }
        }
        uint64_t T = ctx->batch, F4 = sizeof(float);
        uint64_t n_rot = desc->n_rot ? desc->n_rot : 2;
        m->x = scratch(m, T * m->n_embd * F4);
        m->xb = scratch(m, T * m->n_embd * F4);
        m->xb2 = scratch(m, T * m->n_embd * F4);
        m->q = scratch(m, T * m->q_dim * F4);
        m->k = scratch(m, T * m->kv_dim * F4);
        m->v = scratch(m, T * m->kv_dim * F4);
        m->att = scratch(m, T * m->q_dim * F4);
        m->hb = scratch(m, T * m->n_ff * F4);
        m->hb2 = scratch(m, T * m->n_ff * F4);
        m->lx = scratch(m, (uint64_t)MTL_LOGIT_ROWS * m->n_embd * F4);
        m->lo = scratch(m, (uint64_t)MTL_LOGIT_ROWS * m->n_vocab * F4);
        m->tok = scratch(m, T * 4);
        m->pos_tok = scratch(m, T * 4);
        m->lidx = scratch(m, MTL_LOGIT_ROWS * 4);
        m->cs = scratch(m, 2 * T * n_rot * F4);
        if (!m->x || !m->xb || !m->xb2 || !m->q || !m->k || !m->v || !m->att || !m->hb || !m->hb2 || !m->lx ||
            !m->lo || !m->tok || !m->pos_tok || !m->lidx || !m->cs) {
            rc = set_err(err, errlen, AARMD_ENOMEM, "cannot allocate GPU scratch for %u tokens", ctx->batch);
            goto fail;
        }
        if ((rc = make_kv_pool(m, err, errlen)))
            goto fail;
    }
    if (progress && progress(progress_user, 1.0f)) {
        rc = set_err(err, errlen, AARMD_ECANCELLED, "model load cancelled");
        goto fail;
    }
    logf_host(ctx->host, AARMD_LOG_INFO, "metal backend: model %s (%s): %llu weight bytes %s, %llu scratch bytes, "
              "KV pool %u blocks of %u tokens (%llu bytes)", desc->name ? desc->name : "?",
              desc->arch ? desc->arch : "?", (unsigned long long)m->weight_bytes,
              m->in_place ? "in place (no copy)" : "copied", (unsigned long long)m->scratch_bytes, m->pool.n_blocks,
              m->pool.block_tokens, (unsigned long long)m->kv_bytes);
    free(bufs);
    free(offs);
    *out = m;
    return AARMD_OK;
fail:
    free(bufs);
    free(offs);
    mtl_model_free(m);
    return rc;
}

static uint64_t mtl_model_bytes(struct aarmd_backend_model *model)
{
    /* in place or not, the weights occupy unified memory; the KV pool is the model's */
    return model->weight_bytes + model->scratch_bytes + model->kv_bytes;
}

/* ---- sequences ------------------------------------------------------------- */

static int check_n_ctx(const struct aarmd_backend_model *model, uint32_t n_ctx, char *err, size_t errlen)
{
    if (n_ctx == 0 || n_ctx > INT32_MAX)
        return set_err(err, errlen, AARMD_EINVAL, "n_ctx %u out of range", n_ctx);
    if (model->has_pos_embd && n_ctx > model->n_ctx_train)
        return set_err(err, errlen, AARMD_EINVAL, "n_ctx %u exceeds the model's %u learned positions", n_ctx,
                       model->n_ctx_train);
    return AARMD_OK;
}

/* A sequence with an empty block table: it takes blocks as steps grow it. */
static int seq_alloc(struct aarmd_backend_model *model, uint32_t n_ctx, struct aarmd_backend_seq **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    struct aarmd_backend_seq *s = calloc(1, sizeof *s);
    if (!s || mtl_kv_table_init(&model->pool, &s->tab, n_ctx) != AARMD_OK) {
        free(s);
        return set_err(err, errlen, AARMD_ENOMEM, "out of memory for a sequence of %u tokens", n_ctx);
    }
    s->model = model;
    s->n_ctx = n_ctx;
    model->n_seqs++;
    *out = s;
    return AARMD_OK;
}

static int mtl_seq_new(struct aarmd_backend_model *model, uint32_t n_ctx, struct aarmd_backend_seq **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    int rc = check_n_ctx(model, n_ctx, err, errlen);
    return rc ? rc : seq_alloc(model, n_ctx, out, err, errlen);
}

static void mtl_seq_free(struct aarmd_backend_seq *seq)
{
    if (!seq)
        return;
    seq->model->n_seqs--;
    mtl_kv_table_fini(&seq->model->pool, &seq->tab);   /* blocks back to the pool at once */
    free(seq);
}

static int mtl_seq_truncate(struct aarmd_backend_seq *seq, uint32_t n, char *err, size_t errlen)
{
    if (!seq)
        return set_err(err, errlen, AARMD_EINVAL, "no sequence");
    if (n > seq->n_past)
        return set_err(err, errlen, AARMD_EINVAL, "cannot truncate to %u tokens: the sequence holds %u", n, seq->n_past);
    mtl_kv_shrink(&seq->model->pool, &seq->tab, n);   /* rows past n in a kept block are overwritten later */
    seq->n_past = n;
    return AARMD_OK;
}

static int mtl_seq_fork(struct aarmd_backend_seq *src, uint32_t n_tokens, uint32_t n_ctx, struct aarmd_backend_seq **out,
                        char *err, size_t errlen)
{
    *out = NULL;
    if (!src)
        return set_err(err, errlen, AARMD_EINVAL, "no source sequence");
    struct aarmd_backend_model *m = src->model;
    int rc = check_n_ctx(m, n_ctx, err, errlen);
    if (rc)
        return rc;
    if (n_tokens % m->pool.block_tokens)
        return set_err(err, errlen, AARMD_EINVAL, "fork of %u tokens: not a multiple of the KV block (%u tokens)",
                       n_tokens, m->pool.block_tokens);
    if (n_tokens > src->n_past)
        return set_err(err, errlen, AARMD_EINVAL, "fork of %u tokens: the source holds %u", n_tokens, src->n_past);
    if (n_tokens > n_ctx)
        return set_err(err, errlen, AARMD_EINVAL, "fork of %u tokens into a sequence of n_ctx %u", n_tokens, n_ctx);
    struct aarmd_backend_seq *s;
    if ((rc = seq_alloc(m, n_ctx, &s, err, errlen)))
        return rc;
    mtl_kv_share(&m->pool, &s->tab, &src->tab, n_tokens / m->pool.block_tokens);   /* no copy */
    s->n_past = n_tokens;
    *out = s;
    return AARMD_OK;
}

static int mtl_kv_info(struct aarmd_backend_model *model, struct aarmd_kv_info *info, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    struct aarmd_kv_info k;
    memset(&k, 0, sizeof k);
    k.block_tokens = model->pool.block_tokens;
    k.blocks_total = model->pool.n_blocks;
    k.blocks_free = model->pool.n_free;
    k.block_bytes = 2ull * model->n_layer * model->pool.block_tokens * model->kv_dim * 2;
    size_t n = info->struct_size < sizeof k ? info->struct_size : sizeof k;
    uint32_t keep = info->struct_size;
    if (n > sizeof k.struct_size)
        memcpy((char *)info + sizeof k.struct_size, (char *)&k + sizeof k.struct_size, n - sizeof k.struct_size);
    info->struct_size = keep;
    return AARMD_OK;
}

/* ---- step ------------------------------------------------------------------ */

static int validate_step(const struct aarmd_backend_model *model, const struct aarmd_batch_entry *entries,
                         uint32_t n_entries, char *err, size_t errlen)
{
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
            if (en->tokens[i] < 0 || (uint32_t)en->tokens[i] >= model->n_vocab)
                return set_err(err, errlen, AARMD_EINVAL, "entry %u: token %u is %d, outside [0, %u)", e, i,
                               en->tokens[i], model->n_vocab);
        for (uint32_t f = 0; f < e; f++)
            if (entries[f].seq == en->seq)
                return set_err(err, errlen, AARMD_EINVAL, "entries %u and %u share a sequence", f, e);
    }
    return AARMD_OK;
}

/* Copy on write of one block (every layer, K and V): the GPU is idle between
 * steps and the pool is shared storage, so the host copies. */
static void copy_block(void *user, uint32_t src, uint32_t dst)
{
    struct aarmd_backend_model *m = user;
    size_t bytes = (size_t)m->pool.block_tokens * m->kv_dim * 2;
    for (uint32_t il = 0; il < m->n_layer; il++) {
        char *k = (char *)[m->kc[il] contents], *v = (char *)[m->vc[il] contents];
        memcpy(k + (size_t)dst * bytes, k + (size_t)src * bytes, bytes);
        memcpy(v + (size_t)dst * bytes, v + (size_t)src * bytes, bytes);
    }
}

static int mtl_step(struct aarmd_backend_model *model, const struct aarmd_batch_entry *entries, uint32_t n_entries,
                    char *err, size_t errlen)
{
    int rc = validate_step(model, entries, n_entries, err, errlen);
    if (rc)
        return rc;
    /* KV blocks for every entry first: too few free is ENOMEM before anything changes */
    uint64_t need = 0;
    for (uint32_t e = 0; e < n_entries; e++) {
        const struct aarmd_backend_seq *sq = entries[e].seq;
        need += mtl_kv_grow_need(&model->pool, &sq->tab, sq->n_past, sq->n_past + entries[e].n_tokens);
    }
    if (need > model->pool.n_free)
        return set_err(err, errlen, AARMD_ENOMEM, "KV pool exhausted: the step needs %llu blocks, %u of %u are free",
                       (unsigned long long)need, model->pool.n_free, model->pool.n_blocks);
    for (uint32_t e = 0; e < n_entries; e++) {
        struct aarmd_backend_seq *sq = entries[e].seq;
        mtl_kv_grow(&model->pool, &sq->tab, sq->n_past, sq->n_past + entries[e].n_tokens, copy_block, model);
    }
    /* All entries' tokens in order, cut into chunks of at most `batch` tokens
     * and MTL_LOGIT_ROWS logit rows; each chunk is one command buffer. */
    int32_t *tok = (int32_t *)[model->tok contents], *pos = (int32_t *)[model->pos_tok contents];
    int32_t *lidx = (int32_t *)[model->lidx contents];
    struct mtl_seg segs[MTL_MAX_SEGS];
    float *dst[MTL_LOGIT_ROWS];
    uint32_t n = 0, n_segs = 0, nl = 0;
    for (uint32_t e = 0; e < n_entries; e++) {
        const struct aarmd_batch_entry *be = &entries[e];
        for (uint32_t i = 0; i < be->n_tokens; i++) {
            if (n_segs == 0 || segs[n_segs - 1].seq != be->seq) {
                segs[n_segs] = (struct mtl_seg){be->seq, n, 0, be->seq->n_past + i};
                n_segs++;
            }
            tok[n] = be->tokens[i];
            pos[n] = (int32_t)(be->seq->n_past + i);
            segs[n_segs - 1].n++;
            if (be->want_logits && i + 1 == be->n_tokens) {
                lidx[nl] = (int32_t)n;
                dst[nl++] = be->logits;
            }
            n++;
            int last = e + 1 == n_entries && i + 1 == be->n_tokens;
            if (last || n == model->ctx->batch || nl == MTL_LOGIT_ROWS || n_segs == MTL_MAX_SEGS) {
                if ((rc = mtl_run_chunk(model, n, segs, n_segs, nl, dst, err, errlen)))
                    goto undo;
                n = n_segs = nl = 0;
            }
        }
    }
    for (uint32_t e = 0; e < n_entries; e++)
        entries[e].seq->n_past += entries[e].n_tokens;
    return AARMD_OK;
undo:   /* no sequence advanced: the blocks taken for this step go back */
    for (uint32_t e = 0; e < n_entries; e++)
        mtl_kv_shrink(&model->pool, &entries[e].seq->tab, entries[e].seq->n_past);
    return rc;
}

/* ---- the table ------------------------------------------------------------- */

static const struct aarmd_backend metal_backend = {
    .abi_major = AARMD_ABI_MAJOR,
    .abi_minor = AARMD_ABI_MINOR,
    .struct_size = sizeof(struct aarmd_backend),
    .name = "metal",
    .version = MTL_VERSION,
    .ctx_new = mtl_ctx_new,
    .ctx_free = mtl_ctx_free,
    .device_info = mtl_device_info,
    .model_load = mtl_model_load,
    .model_free = mtl_model_free,
    .model_bytes = mtl_model_bytes,
    .seq_new = mtl_seq_new,
    .seq_free = mtl_seq_free,
    .seq_truncate = mtl_seq_truncate,
    .step = mtl_step,
    .kv_info = mtl_kv_info,
    .seq_fork = mtl_seq_fork,
};

__attribute__((visibility("default"))) const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host);
__attribute__((visibility("default"))) int aarmd_backend_probe(const struct aarmd_host *host, char *err, size_t errlen);

__attribute__((visibility("default"))) const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host)
{
    (void)host;
    return &metal_backend;
}

__attribute__((visibility("default"))) int aarmd_backend_probe(const struct aarmd_host *host, char *err, size_t errlen)
{
    (void)host;
    int rc = AARMD_OK;
    @autoreleasepool {
        id<MTLDevice> d = MTLCreateSystemDefaultDevice();
        if (!d)
            rc = set_err(err, errlen, AARMD_EDEVICE, "no Metal device");
        release_obj(d);
    }
    return rc;
}
