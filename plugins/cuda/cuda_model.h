/*
 * cuda_model.h — the CUDA backend's objects (context, model, sequence) and
 * its decoder: weight upload (cuda_load.c) and the forward pass as a sequence
 * of kernel launches on one stream (forward_cuda.c). Internal to plugins/cuda.
 */
#ifndef AARMD_CUDA_MODEL_H
#define AARMD_CUDA_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "aarmd_backend.h"
#include "launch.h"

struct cuda_blas;   /* cuBLAS loaded at run time (cuda_blas.c); NULL when absent */

/* Defaults of the options pdl and mvf (measured best on the H100, docs/cuda-notes.md v5). */
#define CUDA_DEFAULT_PDL 1
#define CUDA_DEFAULT_MVF 1

struct aarmd_backend_ctx {
    const struct aarmd_host *host;
    int32_t device;
    struct cudaDeviceProp prop;
    uint32_t batch;             /* max tokens per forward chunk (option batch) */
    int use_graphs;             /* option graphs: capture batch-1 decode as a CUDA graph */
    int use_cublas;             /* option cublas: prefill through cublasGemmEx when loadable */
    int use_q8;                 /* option q8: decode matvec on Q8 activations (dp4a) for quantized weights */
    int use_pdl;                /* option pdl: 0 off, 1/2 programmatic dependent launch (cuk_set_tuning) */
    int use_mvf;                /* option mvf: decode matvec kernel bits (cuk_set_tuning) */
};

/* A weight matrix {n_in, n_out} in its GGUF type, on the device. d == NULL: absent. */
struct cuda_mat {
    uint32_t type;
    int64_t n_in, n_out;
    const void *d;
};

struct cuda_hparams {
    int n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab;
    int q_dim, kv_dim;
    uint32_t n_ctx_train;
    int norm_kind, act;
    float norm_eps, attn_scale, attn_softcap, final_softcap, embd_scale;
    int32_t sliding_window;
    int has_pos_embd;
};

/* Device pointers; vectors are F32, NULL when absent. */
struct cuda_layer {
    const float *attn_norm, *attn_norm_b;        /* [E] */
    struct cuda_mat wq, wk, wv, wqkv;             /* {E, Q}, {E, KV} x2 | {E, Q+2KV} */
    const float *bq, *bk, *bv, *bqkv;
    const float *q_norm, *k_norm;                 /* [head_dim] */
    struct cuda_mat wo;                           /* {Q, E} */
    const float *bo, *attn_post_norm;
    const float *ffn_norm, *ffn_norm_b;
    struct cuda_mat w_gate, w_up, w_up_gate;      /* {E, F} x2 | {E, 2F} */
    const float *b_up;
    struct cuda_mat w_down;                       /* {F, E} */
    const float *b_down, *ffn_post_norm;
    int is_swa;
    struct cuk_rope rope;
};

struct aarmd_backend_model {
    struct aarmd_backend_ctx *ctx;
    struct cuda_hparams hp;
    uint32_t max_tok;
    uint32_t n_seqs;
    int use_q8;                 /* from the context */
    cudaStream_t stream;
    struct cuda_blas *blas;

    /* weights: one device arena */
    void *arena;
    uint64_t weight_bytes, scratch_bytes;
    struct cuda_mat token_embd, pos_embd, output;
    const float *output_norm, *output_norm_b, *rope_freqs;
    struct cuda_layer *layers;

    /* run state (device), sized for max_tok tokens */
    float *x, *xb, *xb2;        /* [T][E] */
    float *q, *k, *v;           /* [T][Q], [T][KV] x2 */
    float *qkv;                 /* [T][Q+2KV] */
    float *att;                 /* [T][Q] */
    float *hb, *hb2;            /* [T][2F], [T][F] */
    float *logits;              /* [n_vocab] */
    float *partial;             /* attention split-K scratch */
    size_t partial_floats;
    void *w16, *a16;            /* cuBLAS path: F16 weight tile [max n_in*n_out], F16 activations [T][max n_in] */
    size_t w16_elems;
    void *xq;                   /* Q8 activations: int8 [CUK_Q8_MAX_TOK][max n_in] */
    float *xd;                  /* their scales [CUK_Q8_MAX_TOK][max n_in / 32] */
    const float *q8_src;        /* the F32 rows xq holds now (forward_cuda.c), NULL: none */
    int32_t *d_tok, *d_pos;     /* [T] */
    int32_t *h_tok, *h_pos;     /* pinned [T] */
    float *h_logits;            /* pinned [n_vocab] */
};

struct aarmd_backend_seq {
    struct aarmd_backend_model *model;
    uint32_t n_ctx, n_past;
    void *k, *v;                /* F16 [n_layer][n_ctx][kv_dim] each */
    size_t kv_bytes;
    cudaGraphExec_t graph_exec; /* batch-1 decode graph, captured on first use */
    int graph_failed;
};

/* Writes a message to err and returns code. */
int cuda_err(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void cuda_log(const struct aarmd_host *host, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Checks `d` and uploads every tensor once (kept in its GGUF type; vectors as
 * F32) through a pinned staging buffer of stage_bytes, then allocates the run
 * state for ctx->batch tokens. Errors: AARMD_EINVAL (malformed description,
 * names the tensor), AARMD_EUNSUPPORTED (type or shape the kernels cannot
 * run), AARMD_ENOMEM (names bytes needed and free), AARMD_ECANCELLED
 * (progress returned non-zero), AARMD_EDEVICE. *out is freed by cuda_model_free.
 */
int cuda_model_new(struct aarmd_backend_ctx *ctx, const struct aarmd_model_desc *d, aarmd_progress_fn progress,
                   void *progress_user, size_t stage_bytes, struct aarmd_backend_model **out, char *err,
                   size_t errlen);
void cuda_model_free(struct aarmd_backend_model *m);   /* accepts NULL */

/*
 * Runs n (1..max_tok) tokens of `s` at positions s->n_past.. through the
 * decoder, writing their K/V rows; when logits is non-NULL copies the last
 * token's n_vocab logits there. Does not advance s->n_past. AARMD_EDEVICE on
 * a CUDA error (message from the runtime).
 */
int cuda_forward(struct aarmd_backend_model *m, struct aarmd_backend_seq *s, const int32_t *tokens, uint32_t n,
                 float *logits, char *err, size_t errlen);

/* cuBLAS through dlopen (cuda_blas.c). NULL when the library is not found. */
struct cuda_blas *cuda_blas_new(const struct aarmd_host *host, cudaStream_t stream);
void cuda_blas_free(struct cuda_blas *b);   /* accepts NULL */
/* y[T][n_out] (F32) = a16[T][n_in] (F16) x w16[n_out][n_in]^T (F16). 0 on success. */
int cuda_blas_gemm(struct cuda_blas *b, const void *w16, const void *a16, float *y, int n_in, int n_out, int n_tok);

#endif
