/*
 * metal_model.h — what the Metal backend's host files share (backend_metal.m:
 * the plugin table, loading, sequences, steps; metal_forward.m: the forward
 * pass as kernel dispatches): the context, model and sequence objects, the
 * kernel slots, small helpers. Objective-C (manual retain/release); internal
 * to plugins/metal.
 */
#ifndef AARMD_METAL_MODEL_H
#define AARMD_METAL_MODEL_H

#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "aarmd_backend.h"
#include "metal_args.h"
#include "metal_kv.h"
#include "ops.h"

#define MTL_LOGIT_ROWS 32   /* tokens wanting logits per command buffer */
#define MTL_MAX_SEGS 64     /* sequences per command buffer */

/* ---- kernels -------------------------------------------------------------- */

enum mtl_kernel {
    K_NORM = 0, K_ROPE, K_SOFTMAX, K_ELTWISE, K_KV_STORE, K_ATTENTION,
    K_MV_FIRST,                        /* + type slot: matvec; + 11: get_rows; + 22: tiled matmul */
    K_COUNT = K_MV_FIRST + 3 * 11
};

/* Slot of a weight type among the 11 with kernels (F32 F16 BF16 Q4_0 Q4_1 Q5_0
 * Q5_1 Q8_0 Q4_K Q5_K Q6_K), or -1. */
int mtl_type_slot(uint32_t type);

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
    uint32_t kv_block;          /* option kv_block: tokens per KV block */
    uint64_t kv_mb;             /* option kv_mb: KV pool MiB per model; 0 = default */
    uint32_t kv_blocks;         /* option kv_blocks: KV pool blocks per model (wins over kv_mb); 0 = unset */
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
    /* paged KV: per layer a K and a V pool [n_blocks][block_tokens][kv_dim] F16 */
    struct mtl_kv_pool pool;
    id<MTLBuffer> *kc, *vc;                 /* [n_layer] */
    uint64_t kv_layer_bytes;                /* bytes of one kc/vc buffer */
    uint64_t kv_bytes;                      /* all of them */
    id<MTLBuffer> kvtok;                    /* [batch] struct aarmd_mtl_kv_tok of a chunk */
    id<MTLBuffer> ktable;                   /* a chunk's block tables, flat; ktable_cap ids */
    uint32_t ktable_cap;
};

struct aarmd_backend_seq {
    struct aarmd_backend_model *model;
    struct mtl_kv_table tab;    /* blocks of positions [0, n_past) (more only inside a step) */
    uint32_t n_ctx, n_past;
};
/* A contiguous run of one sequence's tokens inside a chunk. */
struct mtl_seg {
    struct aarmd_backend_seq *seq;
    uint32_t t0, n, pos0;
};

/*
 * Runs one chunk as one command buffer: n_tok tokens (model->tok and pos_tok
 * filled), `segs` runs of sequences whose block tables already cover every
 * position written, nl rows wanting logits (model->lidx filled; their logits
 * copied to dst[0..nl) after completion). AARMD_EDEVICE when the command
 * buffer fails, AARMD_ENOMEM when the block-table buffer cannot grow.
 * metal_forward.m.
 */
int mtl_run_chunk(struct aarmd_backend_model *m, uint32_t n_tok, const struct mtl_seg *segs, uint32_t n_segs,
                  uint32_t nl, float *const *dst, char *err, size_t errlen);

/* ---- helpers ---------------------------------------------------------------- */

static inline int set_err(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static inline int set_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static inline const char *ns_cstr(NSString *s)
{
    const char *c = s ? [s UTF8String] : NULL;
    return c ? c : "(no message)";
}

static inline const char *err_text(NSError *e)
{
    return e ? ns_cstr([e localizedDescription]) : "(no message)";
}

static inline void release_obj(id o)
{
    if (o)
        [o release];
}

#endif
