/*
 * backend_metal.m — the Metal backend plugin (Apple Silicon): weights in place over
 * the GGUF mmap, F16 KV caches, one command buffer per step. Host code only (manual
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

#include "aarmd_backend.h"
#include "kernels.h"
#include "metal_args.h"
#include "ops.h"

#define MTL_VERSION "0.1.0"
#define MTL_DEFAULT_BATCH 512
#define MTL_MAX_BATCH 8192
#define MTL_LOGIT_ROWS 32   /* tokens wanting logits per command buffer */
#define MTL_VEC_ALIGN 64    /* bytes between converted vectors */
#define MTL_MAX_SEGS 64     /* sequences per command buffer */

/* Built from shaders/metal at build time (plugins/metal/include.am): the
 * compiled metallib (length 0 when the toolchain made none) and the
 * concatenated source, NUL-terminated, compiled at run time as the fallback. */
extern const unsigned char aarmd_metal_lib[];
extern const size_t aarmd_metal_lib_len;
extern const char aarmd_metal_src[];

/* ---- kernels -------------------------------------------------------------- */

enum mtl_kernel {
    K_NORM = 0, K_ROPE, K_SOFTMAX, K_ELTWISE, K_KV_STORE, K_ATTENTION,
    K_MV_FIRST,                        /* + type slot: matvec; + 11: get_rows; + 22: tiled matmul */
    K_COUNT = K_MV_FIRST + 3 * 11
};

/* The weight types, in slot order. */
static const uint32_t mtl_types[11] = {
    AARMD_TYPE_F32, AARMD_TYPE_F16, AARMD_TYPE_BF16, AARMD_TYPE_Q4_0, AARMD_TYPE_Q4_1, AARMD_TYPE_Q5_0,
    AARMD_TYPE_Q5_1, AARMD_TYPE_Q8_0, AARMD_TYPE_Q4_K, AARMD_TYPE_Q5_K, AARMD_TYPE_Q6_K,
};
static const char *const mtl_type_suffix[11] = {
    "f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k",
};

static int type_slot(uint32_t type)
{
    for (int i = 0; i < 11; i++)
        if (mtl_types[i] == type)
            return i;
    return -1;
}

/* ---- objects -------------------------------------------------------------- */

struct aarmd_backend_ctx {
    const struct aarmd_host *host;
    id<MTLDevice> device;
    id<MTLCommandQueue> queue;
    id<MTLLibrary> library;
    id<MTLComputePipelineState> pipes[K_COUNT];
    uint32_t batch;             /* max tokens per command buffer */
    int weights_copy;           /* option weights=copy: never use the mmap in place */
    int from_source;            /* option library=source, or the metallib failed */
};

/* A weight matrix {n_in, n_out} as the kernels see it: a buffer and an offset. */
struct mtl_mat {
    id<MTLBuffer> buf;          /* borrowed from the model */
    uint64_t off;
    uint32_t type, n_in, n_out;
    uint32_t row_bytes, blk_bytes, blk_chunks;
};

/* A converted F32 vector inside the model's vecs buffer; off == UINT64_MAX when absent. */
struct mtl_vec {
    uint64_t off;
};

struct mtl_layer {
    struct mtl_vec attn_norm, attn_norm_b;
    struct mtl_mat wq, wk, wv;              /* rows of attn_qkv when fused */
    struct mtl_vec bq, bk, bv;              /* parts of attn_qkv_b when fused */
    struct mtl_vec q_norm, k_norm;
    struct mtl_mat wo;
    struct mtl_vec bo, attn_post_norm;
    struct mtl_vec ffn_norm, ffn_norm_b;
    struct mtl_mat w_gate, w_up;            /* rows of ffn_up_gate when fused; no gate for ACT_GELU */
    struct mtl_vec b_up;
    struct mtl_mat w_down;
    struct mtl_vec b_down, ffn_post_norm;
    int is_swa;
    int rope_slot;                          /* 0: base rope, 1: sliding-window rope */
};

struct aarmd_backend_model {
    struct aarmd_backend_ctx *ctx;
    uint32_t n_seqs;
    /* hyperparameters */
    uint32_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, q_dim, kv_dim, n_ctx_train;
    uint32_t norm_kind, act, sliding_window, has_pos_embd;
    float norm_eps, attn_scale, attn_softcap, final_softcap, embd_scale;
    struct cpu_rope rope[2];
    float *rope_ff;                         /* owned rope frequency factors [n_rot/2] or NULL */
    /* weights */
    id<MTLBuffer> *wbufs;                   /* in-place or copied weight buffers */
    uint32_t n_wbufs;
    id<MTLBuffer> vecs;                     /* converted F32 vectors */
    uint64_t vec_bytes_used;
    struct mtl_mat token_embd, pos_embd, output;
    struct mtl_vec output_norm, output_norm_b;
    struct mtl_layer *layers;
    uint64_t weight_bytes, scratch_bytes;
    int in_place;
    /* scratch, shared storage, for up to `batch` tokens */
    id<MTLBuffer> x, xb, xb2, q, k, v, att, hb, hb2, lx, lo, tok, pos_tok, lidx, cs;
};

struct aarmd_backend_seq {
    struct aarmd_backend_model *model;
    id<MTLBuffer> k, v;         /* [n_layer][n_ctx][kv_dim] F16 */
    uint32_t n_ctx, n_past;
};

static int set_err(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
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

static const char *ns_cstr(NSString *s)
{
    const char *c = s ? [s UTF8String] : NULL;
    return c ? c : "(no message)";
}

static const char *err_text(NSError *e)
{
    return e ? ns_cstr([e localizedDescription]) : "(no message)";
}

static void release_obj(id o)
{
    if (o)
        [o release];
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
        } else {
            return set_err(err, errlen, AARMD_EINVAL,
                           "unknown option '%s' (metal backend knows batch, weights, library)", k);
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
    d.advised_seqs = 4;
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
    int slot = type_slot(t->type);
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

static void mtl_model_free(struct aarmd_backend_model *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < m->n_wbufs; i++)
        release_obj(m->wbufs[i]);
    id<MTLBuffer> bs[] = {m->vecs, m->x, m->xb, m->xb2, m->q, m->k, m->v, m->att, m->hb, m->hb2,
                          m->lx, m->lo, m->tok, m->pos_tok, m->lidx, m->cs};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++)
        release_obj(bs[i]);
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
    }
    if (progress && progress(progress_user, 1.0f)) {
        rc = set_err(err, errlen, AARMD_ECANCELLED, "model load cancelled");
        goto fail;
    }
    logf_host(ctx->host, AARMD_LOG_INFO, "metal backend: model %s (%s): %llu weight bytes %s, %llu scratch bytes",
              desc->name ? desc->name : "?", desc->arch ? desc->arch : "?", (unsigned long long)m->weight_bytes,
              m->in_place ? "in place (no copy)" : "copied", (unsigned long long)m->scratch_bytes);
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
    return model->weight_bytes + model->scratch_bytes;   /* in place or not, the weights occupy unified memory */
}

/* ---- sequences ------------------------------------------------------------- */

static int mtl_seq_new(struct aarmd_backend_model *model, uint32_t n_ctx, struct aarmd_backend_seq **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    if (n_ctx == 0 || n_ctx > INT32_MAX)
        return set_err(err, errlen, AARMD_EINVAL, "n_ctx %u out of range", n_ctx);
    if (model->has_pos_embd && n_ctx > model->n_ctx_train)
        return set_err(err, errlen, AARMD_EINVAL, "n_ctx %u exceeds the model's %u learned positions", n_ctx,
                       model->n_ctx_train);
    struct aarmd_backend_seq *s = calloc(1, sizeof *s);
    if (!s)
        return set_err(err, errlen, AARMD_ENOMEM, "out of memory");
    uint64_t bytes = (uint64_t)model->n_layer * n_ctx * model->kv_dim * 2;
    @autoreleasepool {
        id<MTLDevice> dev = model->ctx->device;
        if (bytes <= (uint64_t)[dev maxBufferLength]) {
            s->k = [dev newBufferWithLength:(NSUInteger)bytes options:MTLResourceStorageModeShared];
            s->v = [dev newBufferWithLength:(NSUInteger)bytes options:MTLResourceStorageModeShared];
        }
    }
    if (!s->k || !s->v) {
        release_obj(s->k);
        release_obj(s->v);
        free(s);
        return set_err(err, errlen, AARMD_ENOMEM, "cannot allocate the KV cache for %u tokens (%llu bytes)", n_ctx,
                       (unsigned long long)(2 * bytes));
    }
    s->model = model;
    s->n_ctx = n_ctx;
    model->n_seqs++;
    *out = s;
    return AARMD_OK;
}

static void mtl_seq_free(struct aarmd_backend_seq *seq)
{
    if (!seq)
        return;
    seq->model->n_seqs--;
    release_obj(seq->k);
    release_obj(seq->v);
    free(seq);
}

static int mtl_seq_truncate(struct aarmd_backend_seq *seq, uint32_t n, char *err, size_t errlen)
{
    if (!seq)
        return set_err(err, errlen, AARMD_EINVAL, "no sequence");
    if (n > seq->n_past)
        return set_err(err, errlen, AARMD_EINVAL, "cannot truncate to %u tokens: the sequence holds %u", n, seq->n_past);
    seq->n_past = n;   /* rows past n are overwritten later */
    return AARMD_OK;
}

/* ---- encoding helpers ------------------------------------------------------ */

struct enc {
    struct aarmd_backend_model *m;
    id<MTLComputeCommandEncoder> e;
};

static void use(struct enc *en, enum mtl_kernel k)
{
    [en->e setComputePipelineState:en->m->ctx->pipes[k]];
}

static void arg(struct enc *en, id<MTLBuffer> b, uint64_t off, NSUInteger index)
{
    [en->e setBuffer:b offset:(NSUInteger)off atIndex:index];
}

static void grid(struct enc *en, NSUInteger gx, NSUInteger gy, NSUInteger gz, NSUInteger tx)
{
    [en->e dispatchThreadgroups:MTLSizeMake(gx, gy, gz) threadsPerThreadgroup:MTLSizeMake(tx, 1, 1)];
}

/* y[t*y_stride + r] = W x_t, r < W.n_out: the tiled simdgroup-matrix kernel
 * from AARMD_MTL_MM_MIN_TOK tokens on (rows of a multiple of 32), else the matvec. */
static void enc_mv(struct enc *en, const struct mtl_mat *w, id<MTLBuffer> x, uint64_t x_off, uint32_t x_stride,
                   uint32_t n_tok, id<MTLBuffer> y, uint64_t y_off, uint32_t y_stride)
{
    struct aarmd_mtl_mv_args a = {w->n_in, w->n_out, n_tok, w->row_bytes, w->blk_bytes, w->blk_chunks, x_stride, y_stride};
    int tiled = n_tok >= AARMD_MTL_MM_MIN_TOK && w->n_in % AARMD_MTL_MM_TILE == 0;
    use(en, (enum mtl_kernel)(K_MV_FIRST + (tiled ? 22 : 0) + type_slot(w->type)));
    [en->e setBytes:&a length:sizeof a atIndex:0];
    arg(en, w->buf, w->off, 1);
    arg(en, x, x_off, 2);
    arg(en, y, y_off, 3);
    if (tiled)
        grid(en, (w->n_out + AARMD_MTL_MM_TILE - 1) / AARMD_MTL_MM_TILE,
             (n_tok + AARMD_MTL_MM_TILE - 1) / AARMD_MTL_MM_TILE, 1, 32 * AARMD_MTL_MM_NSG);
    else
        grid(en, (w->n_out + AARMD_MTL_MV_NSG - 1) / AARMD_MTL_MV_NSG, n_tok, 1, 32 * AARMD_MTL_MV_NSG);
}

static void enc_get_rows(struct enc *en, const struct mtl_mat *w, id<MTLBuffer> idx, uint32_t n_tok, float scale,
                         id<MTLBuffer> out)
{
    struct aarmd_mtl_get_rows_args a = {w->n_in, n_tok, w->row_bytes, w->blk_bytes, w->blk_chunks, scale};
    use(en, (enum mtl_kernel)(K_MV_FIRST + 11 + type_slot(w->type)));
    [en->e setBytes:&a length:sizeof a atIndex:0];
    arg(en, w->buf, w->off, 1);
    arg(en, idx, 0, 2);
    arg(en, out, 0, 3);
    grid(en, n_tok, 1, 1, AARMD_MTL_ROW_THREADS);
}

/* Norm of `rows` rows of n (stride apart) from src into dst (may be the same
 * buffer): the model's norm kind, or RMS when `rms` (per-head q/k norms). */
static void enc_norm(struct enc *en, id<MTLBuffer> src, id<MTLBuffer> dst, uint32_t n, uint32_t rows, uint32_t stride,
                     int rms, struct mtl_vec w, struct mtl_vec b)
{
    struct aarmd_mtl_norm_args a = {n, rows, stride, rms ? 0u : en->m->norm_kind, w.off != UINT64_MAX,
                                    b.off != UINT64_MAX, en->m->norm_eps};
    use(en, K_NORM);
    [en->e setBytes:&a length:sizeof a atIndex:0];
    arg(en, src, 0, 1);
    arg(en, dst, 0, 2);
    arg(en, en->m->vecs, w.off != UINT64_MAX ? w.off : 0, 3);
    arg(en, en->m->vecs, b.off != UINT64_MAX ? b.off : 0, 4);
    grid(en, rows, 1, 1, AARMD_MTL_ROW_THREADS);
}

static void enc_eltwise(struct enc *en, uint32_t op, id<MTLBuffer> g, uint32_t n, uint32_t n_tok, uint32_t g_stride,
                        id<MTLBuffer> u, uint64_t u_off, uint32_t u_stride, float scale, float cap)
{
    struct aarmd_mtl_eltwise_args a = {n, n_tok, g_stride, u_stride, op, scale, cap};
    use(en, K_ELTWISE);
    [en->e setBytes:&a length:sizeof a atIndex:0];
    arg(en, g, 0, 1);
    arg(en, u ? u : g, u_off, 2);
    grid(en, (n + AARMD_MTL_ROW_THREADS - 1) / AARMD_MTL_ROW_THREADS, n_tok, 1, AARMD_MTL_ROW_THREADS);
}

static void enc_bias(struct enc *en, id<MTLBuffer> y, uint32_t n, uint32_t n_tok, struct mtl_vec b)
{
    if (b.off != UINT64_MAX)
        enc_eltwise(en, AARMD_MTL_OP_ADD, y, n, n_tok, n, en->m->vecs, b.off, 0, 1.0f, 0.0f);
}

static void enc_rope(struct enc *en, id<MTLBuffer> x, uint32_t n_heads, uint32_t n_tok, int slot)
{
    struct aarmd_backend_model *m = en->m;
    const struct cpu_rope *r = &m->rope[slot];
    struct aarmd_mtl_rope_args a = {n_heads, m->head_dim, (uint32_t)r->n_rot, (uint32_t)r->kind, n_tok,
                                    n_heads * m->head_dim};
    use(en, K_ROPE);
    [en->e setBytes:&a length:sizeof a atIndex:0];
    arg(en, x, 0, 1);
    arg(en, m->cs, (uint64_t)slot * m->ctx->batch * (uint64_t)r->n_rot * sizeof(float), 2);
    grid(en, ((uint32_t)r->n_rot / 2 + 31) / 32, n_heads, n_tok, 32);
}

/* ---- the forward pass ------------------------------------------------------ */

/* A contiguous run of one sequence's tokens inside a chunk. */
struct seg {
    struct aarmd_backend_seq *seq;
    uint32_t t0, n, pos0;
};

/*
 * Encodes one chunk: n_tok tokens (model->tok / pos_tok filled), `segs` runs
 * of sequences, nl rows wanting logits (model->lidx filled). Order and math
 * follow plugins/cpu/forward.c step for step.
 */
static void encode_chunk(struct enc *en, uint32_t n_tok, const struct seg *segs, uint32_t n_segs, uint32_t nl)
{
    struct aarmd_backend_model *m = en->m;
    const uint32_t E = m->n_embd, Q = m->q_dim, KV = m->kv_dim, F = m->n_ff, D = m->head_dim;
    const uint64_t F4 = sizeof(float);
    const struct mtl_vec none = {UINT64_MAX};

    enc_get_rows(en, &m->token_embd, m->tok, n_tok, m->embd_scale, m->x);      /* x = embd[tok] * embd_scale */
    if (m->has_pos_embd) {                                                     /* (+ pos_embd[pos]) */
        enc_get_rows(en, &m->pos_embd, m->pos_tok, n_tok, 1.0f, m->xb);
        enc_eltwise(en, AARMD_MTL_OP_ADD, m->x, E, n_tok, E, m->xb, 0, E, 1.0f, 0.0f);
    }
    for (uint32_t il = 0; il < m->n_layer; il++) {
        const struct mtl_layer *L = &m->layers[il];
        /* ---- attention block ---- */
        enc_norm(en, m->x, m->xb, E, n_tok, E, 0, L->attn_norm, L->attn_norm_b);   /* xb = norm(x) * w (+ b) */
        enc_mv(en, &L->wq, m->xb, 0, E, n_tok, m->q, 0, Q);                        /* q, k, v = xb @ w (+ b) */
        enc_mv(en, &L->wk, m->xb, 0, E, n_tok, m->k, 0, KV);
        enc_mv(en, &L->wv, m->xb, 0, E, n_tok, m->v, 0, KV);
        enc_bias(en, m->q, Q, n_tok, L->bq);
        enc_bias(en, m->k, KV, n_tok, L->bk);
        enc_bias(en, m->v, KV, n_tok, L->bv);
        if (L->q_norm.off != UINT64_MAX)                                           /* per-head rms_norm * w */
            enc_norm(en, m->q, m->q, D, n_tok * m->n_head, D, 1, L->q_norm, none);
        if (L->k_norm.off != UINT64_MAX)
            enc_norm(en, m->k, m->k, D, n_tok * m->n_head_kv, D, 1, L->k_norm, none);
        if (m->rope[L->rope_slot].kind != AARMD_ROPE_NONE) {                       /* rotate first n_rot dims */
            enc_rope(en, m->q, m->n_head, n_tok, L->rope_slot);
            enc_rope(en, m->k, m->n_head_kv, n_tok, L->rope_slot);
        }
        uint64_t layer_off = (uint64_t)il * KV * 2;
        for (uint32_t s = 0; s < n_segs; s++) {                                    /* per sequence: cache, attend */
            const struct seg *g = &segs[s];
            uint64_t kv_off = layer_off * g->seq->n_ctx;
            struct aarmd_mtl_kv_store_args ka = {KV, g->n, g->pos0, KV};
            use(en, K_KV_STORE);
            [en->e setBytes:&ka length:sizeof ka atIndex:0];
            arg(en, m->k, (uint64_t)g->t0 * KV * F4, 1);
            arg(en, m->v, (uint64_t)g->t0 * KV * F4, 2);
            arg(en, g->seq->k, kv_off, 3);
            arg(en, g->seq->v, kv_off, 4);
            grid(en, (KV + AARMD_MTL_ROW_THREADS - 1) / AARMD_MTL_ROW_THREADS, g->n, 1, AARMD_MTL_ROW_THREADS);
            struct aarmd_mtl_attn_args aa = {D, m->n_head, m->n_head_kv, g->n, Q, Q, g->pos0,
                                             L->is_swa ? m->sliding_window : 0, m->attn_scale, m->attn_softcap};
            use(en, K_ATTENTION);
            [en->e setBytes:&aa length:sizeof aa atIndex:0];
            arg(en, m->q, (uint64_t)g->t0 * Q * F4, 1);
            arg(en, g->seq->k, kv_off, 2);
            arg(en, g->seq->v, kv_off, 3);
            arg(en, m->att, (uint64_t)g->t0 * Q * F4, 4);
            grid(en, m->n_head, g->n, 1, AARMD_MTL_ROW_THREADS);
        }
        enc_mv(en, &L->wo, m->att, 0, Q, n_tok, m->xb2, 0, E);                     /* xb2 = att @ wo (+ b) */
        enc_bias(en, m->xb2, E, n_tok, L->bo);
        if (L->attn_post_norm.off != UINT64_MAX)                                   /* gemma3: norm(a) * w */
            enc_norm(en, m->xb2, m->xb2, E, n_tok, E, 0, L->attn_post_norm, none);
        enc_eltwise(en, AARMD_MTL_OP_ADD, m->x, E, n_tok, E, m->xb2, 0, E, 1.0f, 0.0f);   /* x += a */
        /* ---- feed-forward block ---- */
        enc_norm(en, m->x, m->xb, E, n_tok, E, 0, L->ffn_norm, L->ffn_norm_b);     /* xb = norm(x) * w (+ b) */
        if (m->act == AARMD_ACT_GELU) {                                            /* hb = gelu(xb @ up + b) */
            enc_mv(en, &L->w_up, m->xb, 0, E, n_tok, m->hb, 0, F);
            enc_bias(en, m->hb, F, n_tok, L->b_up);
            enc_eltwise(en, AARMD_MTL_OP_GELU, m->hb, F, n_tok, F, nil, 0, 0, 1.0f, 0.0f);
        } else {                                                                   /* hb = act(xb @ gate) * (xb @ up + b) */
            enc_mv(en, &L->w_gate, m->xb, 0, E, n_tok, m->hb, 0, F);
            enc_mv(en, &L->w_up, m->xb, 0, E, n_tok, m->hb2, 0, F);
            enc_bias(en, m->hb2, F, n_tok, L->b_up);
            enc_eltwise(en, m->act == AARMD_ACT_GELU_GATED ? AARMD_MTL_OP_GELU_GATED : AARMD_MTL_OP_SILU_GATED, m->hb, F,
                        n_tok, F, m->hb2, 0, F, 1.0f, 0.0f);
        }
        enc_mv(en, &L->w_down, m->hb, 0, F, n_tok, m->xb2, 0, E);                  /* xb2 = hb @ down (+ b) */
        enc_bias(en, m->xb2, E, n_tok, L->b_down);
        if (L->ffn_post_norm.off != UINT64_MAX)                                    /* gemma3: norm(f) * w */
            enc_norm(en, m->xb2, m->xb2, E, n_tok, E, 0, L->ffn_post_norm, none);
        enc_eltwise(en, AARMD_MTL_OP_ADD, m->x, E, n_tok, E, m->xb2, 0, E, 1.0f, 0.0f);   /* x += f */
    }
    if (nl == 0)
        return;
    /* logits = softcap((norm(x) * output_norm (+ b)) @ output) for the rows wanting them */
    struct mtl_mat xrows = {m->x, 0, AARMD_TYPE_F32, E, 1, E * 4, 32, 1};
    enc_get_rows(en, &xrows, m->lidx, nl, 1.0f, m->lx);                       /* gather: lx = x[lidx] */
    enc_norm(en, m->lx, m->lx, E, nl, E, 0, m->output_norm, m->output_norm_b);
    enc_mv(en, &m->output, m->lx, 0, E, nl, m->lo, 0, m->n_vocab);
    if (m->final_softcap > 0.0f)
        enc_eltwise(en, AARMD_MTL_OP_SCALE_CAP, m->lo, m->n_vocab, nl, m->n_vocab, nil, 0, 0, 1.0f, m->final_softcap);
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

/* Runs one chunk as one command buffer and copies its logits out. */
static int run_chunk(struct aarmd_backend_model *m, uint32_t n_tok, const struct seg *segs, uint32_t n_segs,
                     uint32_t nl, float *const *dst, char *err, size_t errlen)
{
    int rc = AARMD_OK;
    /* host-side inputs: rotary tables per token for both rope slots */
    const int32_t *pos = (const int32_t *)[m->pos_tok contents];
    for (int slot = 0; slot < 2; slot++) {
        const struct cpu_rope *r = &m->rope[slot];
        if (r->kind == AARMD_ROPE_NONE)
            continue;
        float *cs = (float *)[m->cs contents] + (size_t)slot * m->ctx->batch * (size_t)r->n_rot;
        for (uint32_t t = 0; t < n_tok; t++)
            cpu_rope_cos_sin(r, pos[t], cs + (size_t)t * (size_t)r->n_rot);
    }
    @autoreleasepool {
        id<MTLCommandBuffer> cb = [m->ctx->queue commandBuffer];
        id<MTLComputeCommandEncoder> e = cb ? [cb computeCommandEncoder] : nil;
        if (!cb || !e)
            return set_err(err, errlen, AARMD_EDEVICE, "cannot create a Metal command buffer");
        struct enc en = {m, e};
        encode_chunk(&en, n_tok, segs, n_segs, nl);
        [e endEncoding];
        [cb commit];
        [cb waitUntilCompleted];
        if ([cb status] != MTLCommandBufferStatusCompleted)
            rc = set_err(err, errlen, AARMD_EDEVICE, "Metal command buffer failed: %s", err_text([cb error]));
    }
    if (rc)
        return rc;
    const float *lo = (const float *)[m->lo contents];
    for (uint32_t g = 0; g < nl; g++)
        memcpy(dst[g], lo + (size_t)g * m->n_vocab, (size_t)m->n_vocab * sizeof(float));
    return AARMD_OK;
}

static int mtl_step(struct aarmd_backend_model *model, const struct aarmd_batch_entry *entries, uint32_t n_entries,
                    char *err, size_t errlen)
{
    int rc = validate_step(model, entries, n_entries, err, errlen);
    if (rc)
        return rc;
    /* All entries' tokens in order, cut into chunks of at most `batch` tokens
     * and MTL_LOGIT_ROWS logit rows; each chunk is one command buffer. */
    int32_t *tok = (int32_t *)[model->tok contents], *pos = (int32_t *)[model->pos_tok contents];
    int32_t *lidx = (int32_t *)[model->lidx contents];
    struct seg segs[MTL_MAX_SEGS];
    float *dst[MTL_LOGIT_ROWS];
    uint32_t n = 0, n_segs = 0, nl = 0;
    for (uint32_t e = 0; e < n_entries; e++) {
        const struct aarmd_batch_entry *be = &entries[e];
        for (uint32_t i = 0; i < be->n_tokens; i++) {
            if (n_segs == 0 || segs[n_segs - 1].seq != be->seq) {
                segs[n_segs] = (struct seg){be->seq, n, 0, be->seq->n_past + i};
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
                if ((rc = run_chunk(model, n, segs, n_segs, nl, dst, err, errlen)))
                    return rc;   /* ENOMEM / EDEVICE: the host frees or truncates these sequences */
                n = n_segs = nl = 0;
            }
        }
    }
    for (uint32_t e = 0; e < n_entries; e++)
        entries[e].seq->n_past += entries[e].n_tokens;
    return AARMD_OK;
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
