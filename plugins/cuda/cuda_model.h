/*
 * cuda_model.h — the CUDA backend's objects (context, model, sequence), its
 * paged KV pool (cuda_kv.c) and its decoder: weight upload (cuda_load.c) and
 * the forward pass of every sequence of a step as one sequence of kernel
 * launches on one stream (forward_cuda.c). Internal to plugins/cuda.
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
#define CUDA_DEFAULT_PDL 2
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
    uint32_t q8_rows;           /* option q8rows: tokens (0..64) on the Q8 kernels, not cuBLAS; CUDA_Q8_ROWS_AUTO */
    int use_wf16;               /* option wf16: F16 weight copies for GEMMs of >= 16 tokens: 0, 1, CUDA_WF16_AUTO */
    int attn_kind;              /* option attn: the attention of forwards of >= 4 tokens, CUDA_ATTN_* */
    uint64_t kv_mb;             /* option kv_mb: KV pool size in MiB; 0: CUDA_KV_FRACTION of free memory */
    uint32_t graph_chunks;      /* option graph_chunks: attention split-K of decode graphs, 0 = the most */
    uint32_t short_keys;        /* option short_keys: decode steps whose keys all number at most this many
                                 * replay a second graph with the attention in one chunk (graph1), 0: never */
    int direct_logits;          /* option direct_logits: logits_alloc gives pinned buffers the logits are
                                 * copied into straight from the device (1, default); 0: host malloc */
};

/* Option attn: forwards of >= 4 tokens run the flash attention (attn_fa.cu, default), one block
 * per (kv head, token, chunk) (grouped) or one per (head, token, chunk) (heads, also below 4 tokens). */
#define CUDA_SHORT_KEYS 128   /* option short_keys' default (docs/cuda-notes.md v14-lead) */
#define CUDA_SHORT_KEYS_MAX 8192
/* Rotary (cos, sin) tables (struct cuk_rope's cs): positions covered, and distinct rope
 * configurations that get one (gemma3's local and global layers: 2; beyond: computed per use). */
#define CUDA_ROPE_TAB_POS 32768
#define CUDA_ROPE_TABS 4
#define CUDA_ATTN_HEADS 0
#define CUDA_ATTN_GROUPED 1
#define CUDA_ATTN_FA 2

/* Option values "auto": wf16 when the F16 copies take at most half the free memory;
 * q8rows per matrix: with F16 copies 32 for what the v8 GEMM takes, else 8 (cuBLAS
 * from 16 tokens); without copies CUDA_Q8_ROWS (H100, docs/cuda-notes.md v7, v8-gemm). */
#define CUDA_WF16_AUTO 2
#define CUDA_Q8_ROWS_AUTO 0xffffffffu
/* Tokens per KV block. */
#define CUDA_KV_BLOCK CUK_KV_BLOCK
/* Default KV pool: this share of the device memory free after weights and run state. */
#define CUDA_KV_FRACTION 0.80
/* Logit rows one forward produces at most (a step with more is split). */
#define CUDA_MAX_LOGIT_ROWS 64u
/* Tokens per forward that take the Q8 (dp4a) matvec, CUK_Q8_MAX_TOK rows per launch. */
#define CUDA_Q8_ROWS 64u
/* Decode-token buckets captured as CUDA graphs: 1, 2, 4, ..., 64. */
#define CUDA_N_BUCKETS 7

/*
 * The paged KV pool of a model: n_blocks blocks of block_bytes (K and V of
 * every layer for CUDA_KV_BLOCK tokens, F16, layout in launch.h struct
 * cuk_kv) plus one scratch block (id n_blocks) that padded graph tokens write.
 * refs[b]: sequences holding block b (0: on the free list).
 */
struct cuda_kv {
    void *pool;
    uint32_t bt, n_blocks, n_free, scratch;
    size_t layer_halfs, block_halfs, block_bytes;
    uint32_t *refs, *free_list;
};

/* A weight matrix {n_in, n_out} in its GGUF type, on the device. d == NULL: absent. */
struct cuda_mat {
    uint32_t type;
    int64_t n_in, n_out;
    const void *d;
    const void *d16;   /* F16 copy [n_out][n_in] for batched GEMMs (option wf16), NULL: none */
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
    uint32_t q8_gemm_max;       /* quantized matmuls of up to this many tokens: Q8 kernels, not cuBLAS;
                                 * CUDA_Q8_ROWS_AUTO: chosen per matrix (forward_cuda.c) */
    cudaStream_t stream;
    struct cuda_blas *blas;

    /* weights: one device arena */
    void *arena;
    void *arena16;              /* F16 weight copies (option wf16), NULL: none */
    uint64_t weight_bytes, scratch_bytes, wf16_bytes;
    struct cuda_mat token_embd, pos_embd, output;
    const float *output_norm, *output_norm_b, *rope_freqs;
    float *rope_tab[CUDA_ROPE_TABS];   /* the layers' cuk_rope.cs, one per distinct configuration */
    struct cuda_layer *layers;

    /* run state (device), sized for max_tok tokens */
    float *x, *xb, *xb2;        /* [T][E] */
    float *q, *k, *v;           /* [T][Q], [T][KV] x2 */
    float *qkv;                 /* [T][Q+2KV] */
    float *att;                 /* [T][Q] */
    float *hb, *hb2;            /* [T][2F], [T][F] */
    float *logits;              /* [CUDA_MAX_LOGIT_ROWS][n_vocab] */
    float *xl;                  /* [CUDA_MAX_LOGIT_ROWS][E]: the rows that want logits */
    float *partial;             /* attention split-K scratch */
    size_t partial_floats;
    void *w16, *a16;            /* cuBLAS path: F16 weight tile [max n_in*n_out], F16 activations [T][max n_in] */
    size_t w16_elems;
    void *xq;                   /* Q8 activations: int8 [CUDA_Q8_ROWS][max n_in] */
    float *xd;                  /* their scales [CUDA_Q8_ROWS][max n_in / 32] */
    const float *q8_src;        /* the F32 rows xq holds now (forward_cuda.c), NULL: none */
    void *xqk;                  /* Q8 activations with one scale per 256 (cuk_mmqk_q4k): int8 [min(T, 512)][max n_in] */
    float *xdk;                 /* their scales, per 32 as xd */
    const float *xqk_src;       /* the F32 rows xqk holds: set by the last matmul() when it took mmq_k, else NULL */
    int64_t xqk_n;              /* ... and their element count */
    const float *a16_src;       /* the F32 rows a16 holds as F16 now (forward_cuda.c), NULL: none */
    /* per-forward data, one upload: [tok T][pos T][tok_bt T][fa tiles T+1][logit rows L][block tables btab_cap] */
    int32_t *d_step, *h_step;   /* device; pinned host mirror */
    int32_t *d_tok, *d_pos, *d_tok_bt, *d_lrow, *d_btab;   /* into d_step */
    int32_t *d_fa_tiles;        /* into d_step after tok_bt: [T + 1] flash-attention tile starts (launch.h
                                 * cuk_attention_fa), n_fa_tiles of them + the end */
    uint32_t n_fa_tiles;        /* tiles of this forward's tokens (step_cuda.c) */
    uint32_t n_fa_small;        /* ... of them of at most 16 rows (tokens x group: decode tokens) */
    size_t btab_cap;            /* int32 entries of the block-table segment */
    float *h_logits;            /* pinned [CUDA_MAX_LOGIT_ROWS][n_vocab] */
    cudaEvent_t ev_logits[CUDA_MAX_LOGIT_ROWS];   /* one per slice of logit rows copied back */

    /* the host's logits buffers from logits_alloc (pinned): step copies into them directly */
    struct cuda_pinned {
        char *p;
        size_t bytes;
    } *pinned;
    uint32_t n_pinned, cap_pinned;

    struct cuda_kv kv;
    cudaGraphExec_t graph[CUDA_N_BUCKETS];   /* decode of 1 << i tokens, captured on first use */
    cudaGraphExec_t graph1[CUDA_N_BUCKETS];  /* the same with the attention in one chunk (short_keys) */
    int graph_failed;
};

struct aarmd_backend_seq {
    struct aarmd_backend_model *model;
    uint32_t n_ctx, n_past;
    uint32_t *blocks;           /* block table: ids of positions [i*bt, (i+1)*bt) */
    uint32_t n_blocks;          /* held; capacity ceil(n_ctx / bt) */
};

/* One entry's chunk in a forward: n tokens of seq at its n_past; logits of the last when non-NULL. */
struct cuda_piece {
    struct aarmd_backend_seq *seq;
    const int32_t *tokens;
    uint32_t n;
    float *logits;
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
 * Runs the pieces (distinct sequences, at most max_tok tokens and
 * CUDA_MAX_LOGIT_ROWS logits in all) through the decoder as one batch: every
 * matmul once over all their tokens, one attention launch for all sequences.
 * Each piece's sequence must hold the blocks for n_past + n tokens
 * (cuda_kv_grow). Writes their K/V rows and the wanted logits; does not
 * advance n_past. A batch of single-token pieces (<= 64) replays a CUDA graph
 * captured per power-of-two bucket. AARMD_EDEVICE on a CUDA error.
 */
int cuda_forward(struct aarmd_backend_model *m, const struct cuda_piece *pc, uint32_t n_pc, char *err,
                 size_t errlen);   /* step_cuda.c */
/*
 * forward_cuda.c: everything between the upload of the step data and the
 * logits copy: n_tok tokens (d_tok, d_pos, d_tok_bt), then the logits of
 * n_rows rows into m->logits: rows d_lrow[..] of the batch, or the first
 * n_rows tokens when `direct` (then n_rows == n_tok). nch: attention chunks.
 */
void cuda_forward_body(struct aarmd_backend_model *m, uint32_t n_tok, int nch, uint32_t n_rows, int direct);
/* Split-K chunks for the attention of n_tok tokens whose last key is at most p_max. */
int cuda_attn_chunks(const struct aarmd_backend_model *m, uint32_t n_tok, uint32_t p_max);
/* Split-K chunks of a decode graph of n_tok tokens (replayed at every position, so fixed):
 * option graph_chunks, else CUK_ATTN_MAX_CHUNKS. */
int cuda_graph_chunks(const struct aarmd_backend_model *m, uint32_t n_tok);
/* (Re)allocates the per-forward upload buffers for btab_cap block-table entries (destroys the graphs). */
int cuda_step_bufs(struct aarmd_backend_model *m, size_t btab_cap, char *err, size_t errlen);
/* Destroys the captured graphs (they hold run-state pointers). */
void cuda_graphs_free(struct aarmd_backend_model *m);
/* ABI 1.2 logits buffers (step_cuda.c): pinned host memory registered in m->pinned;
 * NULL when the option is off or pinned memory runs out. */
void *cuda_logits_alloc(struct aarmd_backend_model *m, size_t bytes);
void cuda_logits_free(struct aarmd_backend_model *m, void *p);
/* Frees every buffer still registered (model teardown). */
void cuda_logits_free_all(struct aarmd_backend_model *m);

/* ---- the paged KV pool (cuda_kv.c) ---- */
/* Allocates m->kv: as many blocks as kv_bytes holds (>= 1) plus the scratch block. AARMD_ENOMEM names bytes. */
int cuda_kv_new(struct aarmd_backend_model *m, uint64_t kv_bytes, char *err, size_t errlen);
void cuda_kv_free(struct cuda_kv *kv);   /* zeroes kv; accepts a zeroed one */
uint32_t cuda_kv_blocks_for(const struct cuda_kv *kv, uint32_t n_tokens);
/* Free blocks s needs to append n_new tokens (new blocks + a copy of a shared partial block). */
uint32_t cuda_kv_need(const struct cuda_kv *kv, const struct aarmd_backend_seq *s, uint32_t n_new);
/* Takes those blocks (copying a shared partial block on m's stream first). AARMD_ENOMEM when too few are free. */
int cuda_kv_grow(struct aarmd_backend_model *m, struct aarmd_backend_seq *s, uint32_t n_new, char *err,
                 size_t errlen);
/* Gives back the blocks beyond the first n_tokens' at once. */
void cuda_kv_shrink(struct cuda_kv *kv, struct aarmd_backend_seq *s, uint32_t n_tokens);
/* dst (no blocks) shares src's blocks of its first n_tokens (reference counted). */
void cuda_kv_share(struct cuda_kv *kv, const struct aarmd_backend_seq *src, struct aarmd_backend_seq *dst,
                   uint32_t n_tokens);

/* cuBLAS through dlopen (cuda_blas.c). NULL when the library is not found. */
struct cuda_blas *cuda_blas_new(const struct aarmd_host *host, cudaStream_t stream);
void cuda_blas_free(struct cuda_blas *b);   /* accepts NULL */
/* y[T][n_out] (F32, or F16 when y16) = a16[T][n_in] (F16) x w16[n_out][n_in]^T (F16), F32 sums.
 * 0 on success. */
int cuda_blas_gemm(struct cuda_blas *b, const void *w16, const void *a16, void *y, int y16, int n_in, int n_out,
                   int n_tok);

#endif
