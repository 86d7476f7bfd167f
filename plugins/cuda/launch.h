/*
 * launch.h — the CUDA backend's kernel launchers (the .cu files of shaders/cuda), callable
 * from C. Every launcher enqueues on `stream` and returns at once; pointers
 * are device pointers unless said otherwise. Internal to plugins/cuda.
 */
#ifndef AARMD_CUDA_LAUNCH_H
#define AARMD_CUDA_LAUNCH_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Elements decoded per work item by every weight kernel: rows must hold a
 * whole number of them (cuk_type_ok says so per type). */
#define CUK_ITEM 32
/* Key chunks per (token, head) of the attention kernel at most. */
#define CUK_ATTN_MAX_CHUNKS 32
/* head_dim the attention kernel handles at most. */
#define CUK_MAX_HEAD_DIM 256

/* Rotary parameters of one layer (the CPU backend's cpu_rope, for the device). */
struct cuk_rope {
    int kind;               /* enum aarmd_rope_kind */
    int n_rot;
    float freq_base, freq_scale, attn_factor, ext_factor, corr_low, corr_high;
    const float *freq_factors;   /* device [n_rot/2] or NULL */
    /* device [n_cs][n_rot/2][2]: (cos, sin) of pair i at positions p < n_cs, as computed at p
     * (cuk_rope_table); NULL / 0: computed at every use */
    const float *cs;
    int n_cs;
};

/* out[p][i] = (cos, sin) of pair i at position p < n_pos for r (r->cs ignored): the table of
 * struct cuk_rope's cs, the same float values the kernels compute without it. */
void cuk_rope_table(cudaStream_t s, const struct cuk_rope *r, int n_pos, float *out);

/* 1 when the weight kernels run `type` with rows of n_in elements. */
int cuk_type_ok(uint32_t type, int64_t n_in);
/* Bytes of one row of n_in elements of `type` (0 when unsupported). */
size_t cuk_row_bytes(uint32_t type, int64_t n_in);

/* y[t][r] = sum_c W[r][c] x[t][c] for t < n_tok, r < n_out; W in its GGUF type. */
void cuk_matmul(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const float *x,
                int n_tok, float *y);
/* Tokens the Q8 matvec takes at most per call (1..8: matvec kernels; 9..64: the int8-mma GEMM). */
#define CUK_Q8_MAX_TOK 64
/* 1 when `type` runs through the Q8-activation (dp4a) matvec. */
int cuk_type_q8(uint32_t type);
/* Quantizes n activations (n % 32 == 0) per 32: xq int8 [n], xd F32 [n/32]. */
void cuk_quantize_q8(cudaStream_t s, const float *x, int64_t n, void *xq, float *xd);
/* y[t][r] = W[r] . dequant(xq[t], xd[t]) for t < n_tok <= CUK_Q8_MAX_TOK; W quantized (cuk_type_q8). */
void cuk_matvec_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                   const float *xd, int n_tok, float *y);
/*
 * The v6 decode kernels (matvec.cu); each returns 1 when it enqueued the
 * product and 0, enqueuing nothing, when it does not take this type, shape,
 * alignment or token count (callers then use the kernels above).
 * cuk_mvs_q8 / cuk_mvs_f: streaming matvec for 1..8 tokens (Q4_K and Q8_0 with
 * Q8 activations; F32/F16/BF16 with float x). cuk_mmq_q8: 1..64 tokens of any
 * cuk_type_q8 type through int8 or F16 mma.sync, each weight byte read once per call
 * (the F16 versions round weights and activations to F16: ~4e-4 relative; the int8
 * GEMM of mmq_i8.cu keeps the Q8 activations: ~1e-4).
 * cuk_matvec_q8 and cuk_matmul already route through them (cuk_set_tuning).
 */
int cuk_mvs_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
               const float *xd, int n_tok, float *y);
int cuk_mvs_f(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const float *x, int n_tok,
              float *y);
int cuk_mmq_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
               const float *xd, int n_tok, float *y);
/* The GEMMs for a decode of 3..8 tokens where they beat the matvecs (>= 4M weights;
 * AARMD_CUDA_MMQ_FROM=N: from N tokens, 9 = never): the int8 GEMM (mmq_i8.cu) for Q8_0 and
 * Q4_K (int32 dots, F32 scales: ~1e-4 relative), the v8 GEMM (mmq.cu, F16) for the rest it takes. */
int cuk_mmqv_small(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                   const float *xd, int n_tok, float *y);
/*
 * The Hopper GEMM for Q4_K steps (mmq_wg.cu, sm_90 devices only): y[t][r] = W[r] . x16[t] for
 * 1 <= n_tok <= CUK_WG_MAX_TOK, x16 the step's F16 activation rows [n_tok][n_in] (what the
 * cuBLAS path reads), weights decoded to F16 in shared memory, wgmma with F32 sums
 * (deterministic K split). Returns 1 when it enqueued the product, 0 (nothing enqueued) for
 * other types, n_in not a multiple of 256, unaligned pointers, other devices or a launch the
 * device refuses. Slower than the routes the forward takes (docs/cuda-notes.md v12-lead), so
 * cuk_mmqwg_min_tok (the fewest tokens the forward sends it) is AARMD_CUDA_WG_FROM when set
 * (1..256), else CUK_WG_MAX_TOK + 1 (never); cuk_mmqwg_set overrides it (tests, benchmarks).
 */
/*
 * The Q4_K GEMM for steps of tens to hundreds of tokens (mmq_k.cu, sm_90 devices only): y[t][r] =
 * W[r] . x[t], 1 <= n_tok <= CUK_MMQK_MAX_TOK, x quantized by cuk_quantize_q8_256 (int8 rows
 * [n_tok][n_in] and per-32 scales equal within each 256: one scale per Q4_K super-block); int8
 * products with the sub-block scales as integers, F32 per super-block (deterministic K split).
 * cfg: 0 for the defaults (mmq_k.cu documents the knobs). Returns 1 when it enqueued the
 * product, 0 (nothing enqueued) for other types, n_in not a multiple of 256, unaligned pointers,
 * other devices or a launch the device refuses.
 */
#define CUK_MMQK_MAX_TOK 512
int cuk_mmqk_q4k(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                 const float *xd, int n_tok, float *y, int cfg);
/* The fewest tokens the forward sends to cuk_mmqk_q4k (AARMD_CUDA_K_FROM, else the measured default);
 * cuk_mmqk_set overrides it (tests, benchmarks). */
int cuk_mmqk_min_tok(void);
void cuk_mmqk_set(int min_tok);
/* Q8 rows of x[n] (n a multiple of 256) with one scale per 256 elements, written to the 8 per-32
 * scales of each (the format of cuk_quantize_q8): the activations of cuk_mmqk_q4k. */
void cuk_quantize_q8_256(cudaStream_t s, const float *x, int64_t n, void *xq, float *xd);
#define CUK_WG_MAX_TOK 256
int cuk_mmqwg_q4k(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *x16,
                  int n_tok, float *y);
int cuk_mmqwg_min_tok(void);
void cuk_mmqwg_set(int min_tok);
/*
 * y[r] += W[r] . x (+ b[r]) for one token (the residual add in the matvec's
 * epilogue: each row's sum is owned by one warp, no atomics); b may be NULL.
 * _q8: x as Q8 rows xq/xd, W quantized (cuk_type_q8); _f: F32 x, W F32/F16/BF16.
 * Each returns 1 when it enqueued the product, 0 (nothing enqueued) when it
 * does not take this type or shape; the caller then runs the plain path.
 */
int cuk_matvec_q8_acc(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                      const float *xd, const float *b, float *y);
int cuk_matvec_f_acc(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const float *x,
                     const float *b, float *y);
/*
 * y[r] = W[r] . q8(norm(x) * nw (+ nb)) for one token (x [n_in] F32, RMS norm
 * unless layer != 0; nw, nb may be NULL): every block normalizes and
 * quantizes x itself, so no norm kernel runs before it. Returns 0 (nothing
 * enqueued) unless CUK_FUSE_NORM_IN is on, W is quantized (cuk_type_q8),
 * n_in <= 4096 and the blocks' rereads of x and nw stay under 6 MB.
 */
int cuk_matvec_q8_norm(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const float *x,
                       const float *nw, const float *nb, float eps, int layer, float *y);
/*
 * y[r] += W[r] . q8(act(gate) * up) (+ b[r]) for one token (gate, up [n_in]
 * F32; act GELU when gelu != 0, else SiLU, as cuk_act_gated): every block
 * computes and quantizes the activations itself, so no activation kernel runs
 * before it. Returns 0 (nothing enqueued) under the conditions of
 * cuk_matvec_q8_norm (bit CUK_FUSE_ACT_IN).
 */
int cuk_matvec_q8_act_acc(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out,
                          const float *gate, const float *up, int gelu, const float *b, float *y);
/* The v8 fusions the forward uses now (bits below; CUK_FUSE_DEFAULT, or the
 * mask in the environment variable AARMD_CUDA_V8, read once, for A/B), 0 (the
 * v7 kernel sequence) for the mvf values cuk_set_tuning says. */
#define CUK_FUSE_RESIDUAL 1   /* x += W a in the wo/down matvec epilogue (1 token) */
#define CUK_FUSE_ATT_Q8 2     /* the attention merge writes wo's Q8 rows */
#define CUK_FUSE_MERGE 4      /* decode attention merges its chunks itself (cuk_attention_dec) */
#define CUK_FUSE_ROPE 8       /* ... and rotates q/k and stores K/V itself (with CUK_FUSE_MERGE) */
#define CUK_FUSE_NORM 16      /* one-pass norms (registers, float4, Q8 out) */
#define CUK_FUSE_PREWAIT 32   /* decode matvecs load their first weights before griddepcontrol.wait */
#define CUK_FUSE_NORM_IN 64   /* the norm in the prologue of the qkv / gate|up matvec (cuk_matvec_q8_norm) */
#define CUK_FUSE_ACT_IN 128   /* the gated activation in the prologue of down (cuk_matvec_q8_act_acc; off by
                               * default: measured neutral on the 135M shape, docs/cuda-notes.md v8-fuse) */
#define CUK_FUSE_MV1_NORM 256   /* v10: the norm in the prologue of the v9 qkv / gate|up kernels (cuk_mv1_fused) */
#define CUK_FUSE_MV1_ACT 512    /* v10: the gated activation (+ Q8) in the epilogue of the v9 gate|up kernel */
#define CUK_FUSE_MV1_NORM_Q80 1024   /* v16: CUK_FUSE_MV1_NORM for Q8_0 weights only (8B Q8_0 tg128 +3.9%; Q4_K
                                      * -6.5%: docs/cuda-notes.md v16-lead) */
#define CUK_FUSE_MV1_NORM_Q4K 2048   /* v17: CUK_FUSE_MV1_NORM for Q4_K rows of >= 4096 inputs, on the grid
                                      * of up to the resident blocks (0x1822; v16's 2 blocks per SM lost 6.5%):
                                      * 8B Q4_K tg128 +1.8%, 1B-shaped Q4_K (2048 inputs) -3.8% without the
                                      * bound (docs/cuda-notes.md v17-lead) */
#define CUK_FUSE_ALL 4095
#define CUK_FUSE_DEFAULT (127 | CUK_FUSE_MV1_NORM_Q80 | CUK_FUSE_MV1_NORM_Q4K)   /* all but ACT_IN and the v10
                                      * bits but the quantized norms (measured slower, docs/cuda-notes.md v10-dec,
                                      * v16-lead) */
int cuk_fuse_on(void);
/* Grid of the streaming matvec: at most blocks_per_sm blocks of 8 warps per SM, rows per warp
 * evened out (0, the default: one row per warp, no cap). */
void cuk_mv_set_grid(int blocks_per_sm);
/* Kernel variants for A/B measurements (tests/plugins/cuda_matmul_check.cu). mmq, the GEMM of
 * 9..64 tokens: 1 int8 mma, blocks of 32/64 rows; 2 int8 mma, K split over the warps of a
 * 16-row block; 3 as 2 with F16 mma; 4: 1 above 8192 rows, else 2; 5 (default): 1 above 8192
 * rows at <= 32 tokens, else 3; 6, 7: 5 and 3 with 4 items a stage. mvs_*_tok_mask: bit n lets
 * the streaming matvec take n tokens (default 1 << 2 for Q4_K/Q8_0, 0 for floats; elsewhere
 * the v5 kernels run). Process-wide, set before capturing graphs. */
void cuk_mm_set_variant(int mmq, int mvs_q8_tok_mask, int mvs_f_tok_mask);
/*
 * v9 (matvec1.cu, docs/cuda-notes.md v9-q4k): y[r] = W[r] . x for ONE token of Q8 activations
 * (accum != 0: y[r] += ...; b[r] added when b != NULL) through the 1-token kernels with staged
 * activations; Q4_K and Q8_0 rows (n_in % 256 == 0, w 16-byte aligned). cfg: CUK_MV1_DEFAULT the process
 * default (cuk_mv1_set, else the environment's AARMD_CUDA_MV1, a measurement knob, else 0),
 * 0 automatic, -1 none, > 0 one kernel configuration (matvec1.cu, mv1_q4k_run / mvt_run). Returns 1 when it
 * enqueued the product, 0 (nothing enqueued) when it does not take it. cuk_matvec_q8 (1 token)
 * and cuk_matvec_q8_acc route through it while the v6 kernels are on (cuk_set_tuning).
 */
#define CUK_MV1_DEFAULT (-2)
int cuk_mv1_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
               const float *xd, const float *b, int accum, float *y, int cfg);
/* The same for F16/BF16 weights and F32 x (the bulk-copy kernel only); cuk_matmul (1 token) and
 * cuk_matvec_f_acc route through it while the v6 kernels are on. */
int cuk_mv1_f(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const float *x,
              const float *b, int accum, float *y, int cfg);
/*
 * v10 (matvec1.cu, docs/cuda-notes.md v10-dec): y = W x for ONE token through the bulk-copy kernel
 * with fusions (f): x != NULL: the input is norm(x) * nw (+ nb) (RMS, or layer norm when layer != 0;
 * x [n_in] F32, nw / nb may be NULL), computed by every block in its prologue exactly as
 * cuk_norm_q8 would (bit-identical, then quantized per 32 for Q4_K/Q8_0), so no norm kernel runs;
 * xq/xd (Q8 rows; F16/BF16: xd the F32 input) are then not read. gated != 0: W holds n_out / 2 gate
 * rows then as many up rows, and besides y the kernel writes h = act(gate) * up (GELU when gelu,
 * else SiLU; [n_out / 2] F32) and, when hq != NULL (quantized W), its Q8 rows hq/hd as
 * cuk_act_gated_q8 would. cfg: CUK_MV1_DEFAULT (or 0) the process default (AARMD_CUDA_MV1F, a
 * measurement knob, else Q4_K 0x21822, Q8_0 0x21821, F16/BF16 none), else a configuration of
 * cuk_mv1_q8's encoding with (NW, KS, S) one of (8, 1, 2), (8, 2, 2), (8, 4, 2). Returns 1 when it
 * enqueued the product, 0 (nothing enqueued) when it does not take it: other types, n_in % 256,
 * n_in > 4096 with the norm, unaligned pointers, gated with n_out / 2 not a multiple of 32 or a
 * quantized W without the norm (hq would overwrite the xq being read).
 */
struct cuk_mv1_fuse {
    const float *x, *nw, *nb;
    float eps;
    int layer;
    int gated, gelu;
    float *h;
    void *hq;
    float *hd;
};
int cuk_mv1_fused(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                  const float *xd, const struct cuk_mv1_fuse *f, float *y, int cfg);
/* cuk_set_tuning's pdl for the v9 kernels (release at entry with pdl 3, or 2 and AARMD_CUDA_MV1_EARLY=1;
 * with pdl 2 and the knob unset the Q4_K kernels release right after their wait, docs/cuda-notes.md v10-dec). */
void cuk_mv1_set_pdl(int pdl);
/* The process default of cuk_mv1_q8's cfg (-1: off, the v5 kernels; 0: automatic; CUK_MV1_DEFAULT:
 * the environment's AARMD_CUDA_MV1 again, else 0). */
void cuk_mv1_set(int cfg);
/* Dequantizes W (n_out rows of n_in, any supported type) into F16 dst [n_out][n_in]. */
void cuk_dequant_f16(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, void *dst);
/* dst[i] = (half) src[i], i < n. */
void cuk_f32_to_f16(cudaStream_t s, const float *src, void *dst, int64_t n);
/* out[i][:] (+)= scale * W[ids[i]][:] for i < n (embedding lookup; add != 0 accumulates). */
void cuk_get_rows(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, const int32_t *ids, int n,
                  float *out, float scale, int add);
/* out[r] = norm(x[r]) * w (+ b) for `rows` rows of n; RMS unless layer != 0; w, b may be NULL; out may be x. */
void cuk_norm(cudaStream_t s, float *out, const float *x, const float *w, const float *b, int rows, int n,
              float eps, int layer);
/* cuk_norm, and when xq != NULL and n % 32 == 0 also quantizes out per 32 into xq/xd
 * as cuk_quantize_q8(out, rows * n) would (bit-identical); out may be x. Also sets
 * zero[0..n_zero) to 0 (the counters of cuk_attention_dec), in the same kernel when it can.
 * o16 != NULL: also writes out as F16 into o16 ([rows][n], as cuk_f32_to_f16 would) when
 * the one-pass kernel takes the rows; returns 1 when o16 was written, else 0. */
int cuk_norm_q8(cudaStream_t s, float *out, const float *x, const float *w, const float *b, int rows, int n,
                float eps, int layer, void *xq, float *xd, unsigned *zero, int n_zero, void *o16);
/* x[r] += a[r], then out[r] = norm(x[r]) * w (+ b), for `rows` rows of n (out != x). */
void cuk_add_norm(cudaStream_t s, float *out, float *x, const float *a, const float *w, const float *b, int rows,
                  int n, float eps, int layer);
/* cuk_add_norm, and when xq != NULL and n % 32 == 0 also quantizes out per 32 into
 * xq/xd as cuk_quantize_q8(out, rows * n) would (bit-identical); o16 and the result as
 * cuk_norm_q8's. */
int cuk_add_norm_q8(cudaStream_t s, float *out, float *x, const float *a, const float *w, const float *b, int rows,
                    int n, float eps, int layer, void *xq, float *xd, void *o16);
/* y[i] += x[i], i < n. */
void cuk_add(cudaStream_t s, float *y, const float *x, int64_t n);
/* y[r][i] += b[i] for `rows` rows of n. */
void cuk_add_bias(cudaStream_t s, float *y, const float *b, int rows, int n);
/* dst[r][0..n) = src[r][0..n) with row strides (floats). */
void cuk_copy_rows(cudaStream_t s, float *dst, int dst_stride, const float *src, int src_stride, int rows, int n);
/* Tokens per block of the paged KV cache. */
#define CUK_KV_BLOCK 16

/*
 * One layer of the paged F16 KV cache: block b holds, for every layer, K rows
 * [CUK_KV_BLOCK][kv_dim] then V rows [CUK_KV_BLOCK][kv_dim]; this layer's K
 * rows start layer_off halfs into the block. Token t of a launch belongs to the
 * sequence whose block table (block ids, position j in block j / CUK_KV_BLOCK)
 * starts at btab + tok_bt[t]. All pointers device pointers.
 */
struct cuk_kv {
    void *pool;             /* F16 blocks */
    size_t block_halfs;     /* halfs per block (all layers) */
    size_t layer_off;       /* halfs from a block's start to this layer's K rows */
    const int32_t *btab;    /* block ids of every sequence of the launch */
    const int32_t *tok_bt;  /* [n_tok] offset of each token's table in btab */
};

/*
 * Rotates q [n_tok][n_head*D] and k [n_tok][n_kv*D] in place at positions
 * pos[t] (when r->kind != NONE), then stores k and v rows of token t as F16
 * at position pos[t] of its sequence in the paged cache `kv` (one layer).
 */
void cuk_rope_store(cudaStream_t s, float *q, float *k, const float *v, int n_tok, int n_head, int n_kv, int D,
                    const struct cuk_rope *r, const int32_t *pos, const struct cuk_kv *kv);
/* cuk_rope_store with q, k and v read from the rows of a fused projection, qkv [n_tok][q | k | v]
 * (n_head*D + 2*n_kv*D floats a row, not written): the rotated q and k land in q and k (dense,
 * as cuk_rope_store leaves them), k and v in the cache; so no copy splits the rows first. */
void cuk_rope_store_qkv(cudaStream_t s, const float *qkv, float *q, float *k, int n_tok, int n_head, int n_kv, int D,
                        const struct cuk_rope *r, const int32_t *pos, const struct cuk_kv *kv);
/*
 * out[t][h*D..] = softmax(softcap(q.k * scale)) . v over the keys j of token
 * t's sequence with max(0, pos[t]-window+1) <= j <= pos[t] (window 0: from 0),
 * head h using kv head h / (n_head/n_kv); tokens of different sequences in
 * one launch. `partial` is scratch of n_tok*n_head*n_chunks*(D+2) floats;
 * n_chunks in 1..CUK_ATTN_MAX_CHUNKS splits each row's keys (split-K).
 * grouped != 0 (and n_head / n_kv <= CUK_ATTN_MAX_GROUP): one block per kv
 * head whose warps take the group's query heads, each K/V row read once per
 * group; else one block of 4 warps per query head splitting the keys.
 * xq != NULL (and D % 32 == 0): out is also quantized per 32 into xq/xd as
 * cuk_quantize_q8(out, n_tok * n_head * D) would.
 */
#define CUK_ATTN_MAX_GROUP 8
void cuk_attention(cudaStream_t s, const float *q, const struct cuk_kv *kv, const int32_t *pos, int n_tok,
                   int n_head, int n_kv, int D, float scale, float softcap, int window, int n_chunks, int grouped,
                   float *partial, float *out, void *xq, float *xd);
/* Merges the n_chunks split-K rows (m, s, acc[D]) of each (token, head) in partial (layout of
 * cuk_attention) into out [n_tok][n_head*D] (+ the Q8 rows as cuk_attention, D % 32 == 0). */
void cuk_attn_combine(cudaStream_t s, const float *partial, int n_tok, int n_head, int D, int n_chunks, float *out,
                      void *xq, float *xd);
/*
 * The v8 decode attention, for n_tok tokens of distinct sequences (no token
 * reads a key another token of the launch writes); output as cuk_attention
 * with one block of 4 warps per query head. rope != 0: q [n_tok][n_head*D] and
 * k, v [n_tok][n_kv*D] arrive unrotated and unstored: the kernel rotates them
 * (r) and stores the K/V rows at pos[t] as cuk_rope_store would (q, k are not
 * written back); rope == 0: cuk_rope_store ran. cnt != NULL: n_tok * n_head
 * counters, zero at launch and left zero, let the last block of each
 * (token, head) merge the chunks (no second launch); partial must then not
 * overlap them; with n_chunks == 1 and cnt != NULL one block of 16 warps per
 * (token, head) writes the row itself (v14: no partial row, cnt untouched).
 * xq as in cuk_attention.
 */
void cuk_attention_dec(cudaStream_t s, const float *q, const float *k, const float *v, int rope,
                       const struct cuk_rope *r, const struct cuk_kv *kv, const int32_t *pos, int n_tok, int n_head,
                       int n_kv, int D, float scale, float softcap, int window, int n_chunks, float *partial,
                       unsigned *cnt, float *out, void *xq, float *xd);
/* The v10 variants of the decode attention (docs/cuda-notes.md v10-dec), process-wide, set before
 * capturing graphs: kb 1 a warp's keys loaded in batches, 0 one at a time; mb 1 the chunk merge's
 * loads all in flight, 0 one after another (cuk_attn_combine too); -1 the environment's
 * (AARMD_CUDA_DEC_KB=1: one key at a time; AARMD_CUDA_DEC_MERGE=0: one load after another; both
 * batched by default). Same results either way. */
void cuk_attn_dec_set(int kb, int mb);
/* dst[r][0..n) = src[idx[r]][0..n) for r < rows (idx device). */
void cuk_gather_rows(cudaStream_t s, float *dst, const float *src, const int32_t *idx, int rows, int n);
/* out[t][i] = act(gate[t*gs + i]) * up[t*us + i], t < n_tok, i < n; act GELU when gelu != 0 else SiLU. */
void cuk_act_gated(cudaStream_t s, float *out, const float *gate, int gs, const float *up, int us, int n_tok, int n,
                   int gelu);
/* cuk_act_gated with out dense ([n_tok][n]); when xq != NULL and n % 32 == 0 also quantizes out
 * as cuk_quantize_q8(out, n_tok * n) would; o16 != NULL: out also as F16 there ([n_tok][n]). */
void cuk_act_gated_q8(cudaStream_t s, float *out, const float *gate, int gs, const float *up, int us, int n_tok,
                      int n, int gelu, void *xq, float *xd, void *o16);
/* cuk_act_gated_q8 with gate and up as F16 (a cuBLAS product written as F16: half the bytes). */
void cuk_act_gated16_q8(cudaStream_t s, float *out, const void *gate, int gs, const void *up, int us, int n_tok,
                        int n, int gelu, void *xq, float *xd, void *o16);
/* Process-wide kernel choices, set before capturing graphs. pdl: 0 plain launches,
 * 1 programmatic dependent launch (sm_90) with the next kernel released at block
 * exit, 2 released at kernel entry by the kernels of matmul.cu, ops.cu and attn_dec.cu, 3 by
 * every kernel file's (matvec.cu too; pdl.cuh's flag is one per .cu). matvec_f: 0 the v4 kernels (float weights
 * through the one-warp-per-row matmul, Q8 matvec 8 tokens a launch); 1 (default)
 * the v6 kernels of matvec.cu; 3 the v5 kernels (coalesced float matvec, item
 * Q8 matvec); 7 v5 with its Q8_0 and 4-items-in-flight variants.
 * The v8 fused forward (cuk_fuse_on) runs with 1, 3 and 7; 5 is 1 with the
 * v7 (unfused) forward, for A/B; 0, 2, 4, 6 are unfused too. */
void cuk_set_tuning(int pdl, int matvec_f);
/* x[i] = gelu(x[i]). */
void cuk_gelu(cudaStream_t s, float *x, int64_t n);
/* x[i] = cap * tanh(x[i] / cap) (cap > 0). */
void cuk_softcap(cudaStream_t s, float *x, int64_t n, float cap);

/* --- fa: tensor-core flash attention over the paged cache (shaders/cuda/attn_fa.cu) */
/* Rows (tokens x the query heads of one kv head) of one flash-attention tile: a tile holds
 * at most CUK_FA_ROWS / (n_head / n_kv) consecutive tokens of one sequence. */
#define CUK_FA_ROWS 64
/* 1 when cuk_attention_fa takes this shape: head_dim 16, 32, 64, 128 or 256, n_head a multiple
 * of n_kv with n_head / n_kv <= CUK_FA_ROWS. */
int cuk_fa_ok(int n_head, int n_kv, int D);
/* Raises the kernel's shared-memory limit for head_dim D (once per D; call outside graph capture). */
void cuk_fa_prepare(int D);
/*
 * cuk_attention's result (out, and the Q8 rows when xq != NULL and D % 32 == 0) for n_tok
 * tokens grouped in n_tiles tiles: tiles[i]..tiles[i+1]-1 (device, n_tiles + 1 entries,
 * tiles[0] = 0, tiles[n_tiles] = n_tok) are consecutive tokens of one sequence with
 * consecutive positions, at most CUK_FA_ROWS / (n_head / n_kv) of them. One block per
 * (tile, kv head, chunk) of 4 warps; S = QK^T and PV on mma.sync (Q, P rounded to F16),
 * F32 online softmax. n_chunks (1..CUK_ATTN_MAX_CHUNKS) bounds the split of each tile's keys
 * (split only while n_tiles * n_kv blocks stay under 1 per SM, AARMD_CUDA_FA_SPLIT=N: N per SM,
 * read once); split rows go through `partial` (n_tok * n_head * n_chunks * (D + 2) floats) and
 * a merge launch. n_small: how many tiles hold at most 16 rows (tokens x group: decode tokens);
 * when all do and the launch splits no keys they go to a kernel of their own (k_attn_fa1: each
 * warp streams its own KV blocks; AARMD_CUDA_FA1=0 never, 2 whenever some do, without key split);
 * when some do and others not (a mixed step), head_dim <= 128 and no key split, every tile goes
 * to one launch of three blocks per SM (k_attn_famix; AARMD_CUDA_FA_MIX=0 never, 2 without split).
 * Returns 0, enqueuing nothing, when the shape is not taken (cuk_fa_ok) or n_small is out of
 * 0..n_tiles.
 */
int cuk_attention_fa(cudaStream_t s, const float *q, const struct cuk_kv *kv, const int32_t *pos,
                     const int32_t *tiles, int n_tiles, int n_small, int n_tok, int n_head, int n_kv, int D,
                     float scale, float softcap, int window, int n_chunks, float *partial, float *out, void *xq,
                     float *xd);

#ifdef __cplusplus
}
#endif
#endif
