/*
 * forward_cuda.c — the CUDA backend's decoder forward pass (the generic
 * decoder of aarmd_backend.h) over the tokens of every sequence of a step as
 * one batch of kernel launches on the model's stream. The step around it
 * (upload, graphs, logits) is step_cuda.c; loading cuda_load.c; KV block
 * bookkeeping cuda_kv.c.
 */
#include <stdlib.h>
#include <string.h>

#include "cuda_model.h"

/* Forwards of at least this many tokens use the flash attention (option attn=fa, the default) or
 * the grouped one (attn=grouped); fewer tokens: the per-head split-K kernels (decode). */
#define ATTN_GROUPED_MIN_TOK 4u
/* Prefill chunks at least this long go through cuBLAS when it is loaded. */
#define GEMM_MIN_TOK 16

/*
 * y = x @ w for n_tok rows. Decode-sized batches of quantized weights go
 * through the Q8 (dp4a) matvec: x is quantized once and reused while
 * `reuse` says the caller passes the same rows again (q, k, v; gate, up).
 */
/*
 * Tokens up to which quantized w goes through the Q8 kernels, not cuBLAS: the
 * option q8rows; auto: all CUDA_Q8_ROWS without F16 copies; with them 32 for
 * the matrices the v8 GEMM takes (Q4_0/Q4_1/Q8_0/Q4_K of >= 4M weights: ahead
 * of cuBLAS on the copies up to 32 tokens, docs/cuda-notes.md v8-gemm), else 8.
 */
static uint32_t q8_max(const struct aarmd_backend_model *m, const struct cuda_mat *w)
{
    if (m->q8_gemm_max != CUDA_Q8_ROWS_AUTO)
        return m->q8_gemm_max;
    if (!m->arena16)
        return CUDA_Q8_ROWS;
    int v8 = w->type == AARMD_TYPE_Q4_0 || w->type == AARMD_TYPE_Q4_1 || w->type == AARMD_TYPE_Q8_0 ||
             w->type == AARMD_TYPE_Q4_K;
    return v8 && (int64_t)w->n_in * w->n_out >= ((int64_t)1 << 22) ? 32u : 8u;
}

/* 1 when matmul() sends w to the Q4_K GEMM of mmq_k.cu for n_tok rows (from cuk_mmqk_min_tok). */
static int k_for(const struct aarmd_backend_model *m, const struct cuda_mat *w, uint32_t n_tok)
{
    return w && w->d && w->type == AARMD_TYPE_Q4_K && m->xqk && (int)n_tok >= cuk_mmqk_min_tok() &&
           n_tok <= CUK_MMQK_MAX_TOK && n_tok <= m->max_tok && w->n_in % 256 == 0;
}

/* 1 when matmul() takes w through cuBLAS for n_tok rows (its input then goes through a16 as F16). */
static int blas_for(const struct aarmd_backend_model *m, const struct cuda_mat *w, uint32_t n_tok)
{
    if (!w || !w->d || !m->blas || n_tok < GEMM_MIN_TOK || k_for(m, w, n_tok))
        return 0;
    int q8 = m->use_q8 && n_tok <= CUDA_Q8_ROWS && cuk_type_q8(w->type);
    return !(q8 && n_tok <= q8_max(m, w)) &&
           (w->type == AARMD_TYPE_F16 || w->d16 || (size_t)(w->n_in * w->n_out) <= m->w16_elems);
}

/* y (F32, or F16 when y16) = x @ w through cuBLAS on w's F16 copy (x converted into a16 unless a
 * producer wrote it there); 0 when enqueued. */
static int blas_mm(struct aarmd_backend_model *m, const struct cuda_mat *w, const float *x, uint32_t n_tok, void *y,
                   int y16)
{
    cudaStream_t s = m->stream;
    if (m->a16_src != x) {   /* a producer (norm, activation) may have written the F16 rows already */
        cuk_f32_to_f16(s, x, m->a16, (int64_t)n_tok * w->n_in);
        m->a16_src = x;
    }
    /* the Hopper Q4_K GEMM on the same F16 rows, when AARMD_CUDA_WG_FROM asks (off: slower) */
    if (!y16 && (int)n_tok >= cuk_mmqwg_min_tok() &&
        cuk_mmqwg_q4k(s, w->type, w->d, w->n_in, w->n_out, m->a16, (int)n_tok, y))
        return 0;
    const void *w16 = w->type == AARMD_TYPE_F16 ? w->d : w->d16;
    if (!w16) {
        cuk_dequant_f16(s, w->type, w->d, w->n_in, w->n_out, m->w16);
        w16 = m->w16;
    }
    return cuda_blas_gemm(m->blas, w16, m->a16, y, y16, (int)w->n_in, (int)w->n_out, (int)n_tok);
}

/* Whether cuBLAS writes the [gate | up] product as F16 for the activation to read (AARMD_CUDA_GEMM16,
 * read once; docs/cuda-notes.md v19-lead). */
static int gemm16_on(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("AARMD_CUDA_GEMM16");
        on = e && *e ? atoi(e) != 0 : 0;
    }
    return on;
}

static void matmul(struct aarmd_backend_model *m, const struct cuda_mat *w, const float *x, uint32_t n_tok, float *y,
                   int reuse)
{
    cudaStream_t s = m->stream;
    if (!reuse)
        m->q8_src = m->a16_src = NULL;
    if (m->q8_src == y)   /* y is about to change */
        m->q8_src = NULL;
    if (m->a16_src == y)
        m->a16_src = NULL;
    /* mmq_k's rows (one scale per 256) are reused only by the next matmul() on the same x: every
     * producer writes between two matmuls on different inputs (docs/cuda-notes.md v17-lead) */
    const float *kprev = m->xqk_src;
    m->xqk_src = NULL;
    if (k_for(m, w, n_tok)) {
        const int64_t n = (int64_t)n_tok * w->n_in;
        if (!(reuse && kprev == x && m->xqk_n == n))
            cuk_quantize_q8_256(s, x, n, m->xqk, m->xdk);
        if (cuk_mmqk_q4k(s, w->type, w->d, w->n_in, w->n_out, m->xqk, m->xdk, (int)n_tok, y, 0)) {
            m->xqk_src = x;
            m->xqk_n = n;
            return;
        }
    }
    int q8 = m->use_q8 && n_tok <= CUDA_Q8_ROWS && cuk_type_q8(w->type);
    if (blas_for(m, w, n_tok) && blas_mm(m, w, x, n_tok, y, 0) == 0)
        return;
    if (q8) {
        if (m->q8_src != x) {
            cuk_quantize_q8(s, x, (int64_t)n_tok * w->n_in, m->xq, m->xd);
            m->q8_src = x;
        }
        for (uint32_t t = 0; t < n_tok; t += CUK_Q8_MAX_TOK) {   /* the weight once per CUK_Q8_MAX_TOK rows */
            uint32_t n = n_tok - t < CUK_Q8_MAX_TOK ? n_tok - t : CUK_Q8_MAX_TOK;
            cuk_matvec_q8(s, w->type, w->d, w->n_in, w->n_out, (const int8_t *)m->xq + (size_t)t * w->n_in,
                          m->xd + (size_t)t * w->n_in / 32, (int)n, y + (size_t)t * w->n_out);
        }
        return;
    }
    cuk_matmul(s, w->type, w->d, w->n_in, w->n_out, x, (int)n_tok, y);
}

/* 1 when matmul() takes w through the Q8 matvec for n_tok rows (a producer may quantize for it). */
static int q8_for(const struct aarmd_backend_model *m, const struct cuda_mat *w, uint32_t n_tok)
{
    if (!w || !w->d || !m->use_q8 || n_tok > CUDA_Q8_ROWS || !cuk_type_q8(w->type) || w->n_in % 32 ||
        k_for(m, w, n_tok))
        return 0;
    return n_tok < GEMM_MIN_TOK || !m->blas || n_tok <= q8_max(m, w);
}

/*
 * x += xb2; xb = norm(x) * w (+ b); when `next` (the matrix xb feeds) takes
 * the Q8 path, xb is quantized in the same kernel and marked as xq's rows.
 */
static void add_norm(struct aarmd_backend_model *m, const struct cuda_mat *next, uint32_t n_tok, const float *w,
                     const float *b)
{
    const struct cuda_hparams *hp = &m->hp;
    int q = q8_for(m, next, n_tok) && hp->n_embd % 32 == 0;
    int h = cuk_add_norm_q8(m->stream, m->xb, m->x, m->xb2, w, b, (int)n_tok, hp->n_embd, hp->norm_eps,
                            hp->norm_kind == AARMD_NORM_LAYER, q ? m->xq : NULL, q ? m->xd : NULL,
                            blas_for(m, next, n_tok) ? m->a16 : NULL);
    m->q8_src = q ? m->xb : NULL;
    m->a16_src = h ? m->xb : NULL;
}

/* xb = norm(x) * w (+ b), x already holding the residual sum (v8: added in the matvec epilogue);
 * zero[0..n_zero) = 0 on the way (the attention's counters). */
static void norm_next(struct aarmd_backend_model *m, const struct cuda_mat *next, uint32_t n_tok, const float *w,
                      const float *b, unsigned *zero, size_t n_zero)
{
    const struct cuda_hparams *hp = &m->hp;
    int q = q8_for(m, next, n_tok) && hp->n_embd % 32 == 0;
    int h = cuk_norm_q8(m->stream, m->xb, m->x, w, b, (int)n_tok, hp->n_embd, hp->norm_eps,
                        hp->norm_kind == AARMD_NORM_LAYER, q ? m->xq : NULL, q ? m->xd : NULL, zero, (int)n_zero,
                        blas_for(m, next, n_tok) ? m->a16 : NULL);
    m->q8_src = q ? m->xb : NULL;
    m->a16_src = h ? m->xb : NULL;
}

/*
 * y += x @ w (+ b) for one token, the residual add in the matvec's epilogue;
 * 0 (nothing enqueued) when w does not go through a kernel that has one.
 */
static int matvec_acc(struct aarmd_backend_model *m, const struct cuda_mat *w, const float *x, const float *b, float *y)
{
    if (q8_for(m, w, 1)) {
        if (m->q8_src != x) {
            cuk_quantize_q8(m->stream, x, w->n_in, m->xq, m->xd);
            m->q8_src = x;
        }
        return cuk_matvec_q8_acc(m->stream, w->type, w->d, w->n_in, w->n_out, m->xq, m->xd, b, y);
    }
    if (w->type == AARMD_TYPE_F32 || w->type == AARMD_TYPE_F16 || w->type == AARMD_TYPE_BF16)
        return cuk_matvec_f_acc(m->stream, w->type, w->d, w->n_in, w->n_out, x, b, y);
    return 0;
}

static int is_float16(const struct cuda_mat *w)
{
    return w->type == AARMD_TYPE_F16 || w->type == AARMD_TYPE_BF16;
}

/*
 * v10, one token: y = xb @ w through the v9 bulk-copy kernel with its fusions (cuk_mv1_fused):
 * pend: xb = norm(x) * nw (+ nb) computed in the kernel's prologue (no norm kernel; xb is not
 * written), else xb's Q8 rows (or F32 xb for F16/BF16 weights) as now; act (w = [gate | up], bit
 * CUK_FUSE_MV1_ACT): also hb2 = act(gate) * up and, when qd (down takes Q8 rows) and w is
 * quantized, its Q8 rows in xq (no activation kernel). Returns 0 (nothing enqueued) when the kernel
 * does not take it, 1 when it ran without the activation, 2 with it.
 */
static int mv1_fused(struct aarmd_backend_model *m, const struct cuda_mat *w, int pend, const float *nw,
                     const float *nb, int act, int gelu, int qd, float *y)
{
    const struct cuda_hparams *hp = &m->hp;
    int fuse = cuk_fuse_on(), q8 = q8_for(m, w, 1);
    pend = pend && ((fuse & CUK_FUSE_MV1_NORM) || ((fuse & CUK_FUSE_MV1_NORM_Q80) && w->type == AARMD_TYPE_Q8_0) ||
                    ((fuse & CUK_FUSE_MV1_NORM_Q4K) && w->type == AARMD_TYPE_Q4_K && w->n_in >= 4096));
    act = act && (fuse & CUK_FUSE_MV1_ACT);
    if ((!pend && !act) || !w->d || (!q8 && !is_float16(w)))
        return 0;
    struct cuk_mv1_fuse f = {.x = pend ? m->x : NULL, .nw = nw, .nb = nb, .eps = hp->norm_eps,
                             .layer = hp->norm_kind == AARMD_NORM_LAYER, .gated = act, .gelu = gelu,
                             .h = act ? m->hb2 : NULL, .hq = act && qd && q8 ? m->xq : NULL,
                             .hd = act && qd && q8 ? m->xd : NULL};
    if (!pend && q8 && m->q8_src != m->xb)
        return 0;   /* xb's Q8 rows are not in xq (the fused kernels do not quantize a plain input) */
    if (!cuk_mv1_fused(m->stream, w->type, w->d, w->n_in, w->n_out, m->xq, q8 ? m->xd : m->xb, &f, y,
                       CUK_MV1_DEFAULT))
        return 0;
    if (act)
        m->q8_src = f.hq ? m->hb2 : NULL;   /* xq holds hb2's rows now, or nothing of this layer */
    else if (pend)
        m->q8_src = NULL;
    return act ? 2 : 1;
}

/*
 * y = norm(x) * nw (+ nb) @ w for one token: the norm in the prologue of the v9 kernel (v10,
 * mv1_fused: with act also the gated activation in its epilogue) or of the v8 matvec when they
 * take this matrix, else the norm kernel, then the matmul. Returns mv1_fused's 2 when hb2 (and
 * its Q8 rows when qd) hold act(gate) * up, else 0.
 */
static int norm_matmul(struct aarmd_backend_model *m, const struct cuda_mat *w, const float *nw, const float *nb,
                       int act, int gelu, int qd, float *y)
{
    const struct cuda_hparams *hp = &m->hp;
    int r = mv1_fused(m, w, 1, nw, nb, act, gelu, qd, y);
    if (r)
        return r == 2 ? 2 : 0;
    if (cuk_matvec_q8_norm(m->stream, w->type, w->d, w->n_in, w->n_out, m->x, nw, nb, hp->norm_eps,
                           hp->norm_kind == AARMD_NORM_LAYER, y)) {
        m->q8_src = NULL;   /* xq and xb were not written */
        return 0;
    }
    norm_next(m, w, 1, nw, nb, NULL, 0);
    matmul(m, w, m->xb, 1, y, 1);
    return 0;
}

/* 1 when the norm before w can wait for w's matvec (norm_matmul): one token, Q8 path (v8 prologue,
 * or v10's), or F16/BF16 weights with v10's (norm_matmul falls back to the norm kernel). */
static int norm_in(const struct aarmd_backend_model *m, const struct cuda_mat *w, int fuse)
{
    if (!w->d)
        return 0;
    if ((fuse & (CUK_FUSE_NORM_IN | CUK_FUSE_MV1_NORM)) && q8_for(m, w, 1))
        return 1;
    return (fuse & CUK_FUSE_MV1_NORM) && is_float16(w);
}

static void norm(struct aarmd_backend_model *m, float *out, const float *x, const float *w, const float *b, int rows)
{
    cuk_norm(m->stream, out, x, w, b, rows, m->hp.n_embd, m->hp.norm_eps, m->hp.norm_kind == AARMD_NORM_LAYER);
}

static void bias(struct aarmd_backend_model *m, float *y, const float *b, uint32_t n_tok, int n)
{
    if (b)
        cuk_add_bias(m->stream, y, b, (int)n_tok, n);
}

int cuda_attn_chunks(const struct aarmd_backend_model *m, uint32_t n_tok, uint32_t p_max)
{
    const struct cuda_hparams *hp = &m->hp;
    size_t per = (size_t)n_tok * hp->n_head * (size_t)(hp->head_dim + 2);
    size_t fit = m->partial_floats / per;
    size_t want = (p_max + 1 + 63) / 64;   /* ~64 keys per chunk at least */
    size_t n = want < fit ? want : fit;
    if (n > CUK_ATTN_MAX_CHUNKS)
        n = CUK_ATTN_MAX_CHUNKS;
    return n ? (int)n : 1;
}

int cuda_graph_chunks(const struct aarmd_backend_model *m, uint32_t n_tok)
{
    (void)n_tok;   /* every bucket: fewer chunks (~4 blocks per SM) lost 16-45% at 32-64 streams (v8-lead) */
    uint32_t n = m->ctx->graph_chunks;
    return n < 1 || n > CUK_ATTN_MAX_CHUNKS ? CUK_ATTN_MAX_CHUNKS : (int)n;
}

/* The paged cache of layer il for this forward's tokens. */
static struct cuk_kv layer_kv(const struct aarmd_backend_model *m, int il)
{
    struct cuk_kv kv = {m->kv.pool, m->kv.block_halfs, (size_t)il * m->kv.layer_halfs, m->d_btab, m->d_tok_bt};
    return kv;
}

void cuda_forward_body(struct aarmd_backend_model *m, uint32_t n_tok, int nch, uint32_t n_rows, int direct)
{
    const struct cuda_hparams *hp = &m->hp;
    cudaStream_t s = m->stream;
    const int E = hp->n_embd, Q = hp->q_dim, KV = hp->kv_dim, F = hp->n_ff, D = hp->head_dim;
    const int fuse = cuk_fuse_on();              /* v8 fusions (launch.h CUK_FUSE_*); 0: the v7 sequence (mvf=5) */
    const int fuse1 = (fuse & CUK_FUSE_RESIDUAL) && n_tok == 1;   /* residual adds in the wo/down matvecs */
    /* Tokens of distinct sequences (every token wants logits) in the per-head attention: the chunk
     * merge (and rope + KV store) inside the attention kernel (cuk_attention_dec); the merge needs
     * n_tok * n_head counters, kept past the split-K rows at the end of m->partial and zeroed by the
     * first norm of the forward (they are left zero by each launch). */
    const int dec = (fuse & CUK_FUSE_MERGE) && direct && n_tok < ATTN_GROUPED_MIN_TOK;
    unsigned *cnt = NULL;
    size_t n_cnt = (size_t)n_tok * hp->n_head;
    if (dec && n_cnt * ((size_t)nch * (size_t)(D + 2) + 1) <= m->partial_floats)
        cnt = (unsigned *)(m->partial + m->partial_floats - n_cnt);
    /* Forwards of >= ATTN_GROUPED_MIN_TOK tokens: the flash attention (attn_fa.cu) over the step's
     * tiles (it splits the keys into at most nch chunks while its blocks would leave SMs idle). */
    const int fa = !dec && m->ctx->attn_kind == CUDA_ATTN_FA && n_tok >= ATTN_GROUPED_MIN_TOK;

    /* x = token_embd[tok] * embd_scale (+ pos_embd[pos]) */
    cuk_get_rows(s, m->token_embd.type, m->token_embd.d, E, m->d_tok, (int)n_tok, m->x, hp->embd_scale, 0);
    if (m->pos_embd.d)
        cuk_get_rows(s, m->pos_embd.type, m->pos_embd.d, E, m->d_pos, (int)n_tok, m->x, 1.0f, 1);

    m->q8_src = m->a16_src = m->xqk_src = NULL;   /* xq, a16 and xqk hold nothing of this pass yet */
    int pend = 0;       /* 1 token: x holds the residual sum and the next matvec does the norm (norm_matmul) */
    if (fuse) {                                                                    /* xb = norm(x) * attn_norm (+ Q8) */
        const struct cuda_layer *L0 = &m->layers[0];
        norm_next(m, L0->wqkv.d ? &L0->wqkv : &L0->wq, n_tok, L0->attn_norm, L0->attn_norm_b, cnt, cnt ? n_cnt : 0);
    } else
        norm(m, m->xb, m->x, m->layers[0].attn_norm, m->layers[0].attn_norm_b, (int)n_tok);
    for (int il = 0; il < hp->n_layer; il++) {
        const struct cuda_layer *L = &m->layers[il];
        float *q = m->q, *k = m->k, *v = m->v;
        int rope_in = dec && (fuse & CUK_FUSE_ROPE) && !L->q_norm && !L->k_norm;   /* rope + KV store in there */
        const float *split = NULL;   /* the fused rows rope_store splits into q, k (and the cache) itself */
        if (L->wqkv.d) {                                                           /* q|k|v = xb @ wqkv, split */
            int QKV = Q + 2 * KV;
            if (pend)
                norm_matmul(m, &L->wqkv, L->attn_norm, L->attn_norm_b, 0, 0, 0, m->qkv);
            else
                matmul(m, &L->wqkv, m->xb, n_tok, m->qkv, 1);   /* reuse: add_norm may have quantized xb */
            pend = 0;
            bias(m, m->qkv, L->bqkv, n_tok, QKV);
            if (n_tok == 1) {                                                      /* one row: use it in place */
                q = m->qkv;
                k = m->qkv + Q;
                v = m->qkv + Q + KV;
            } else if (!rope_in && !L->q_norm && !L->k_norm) {
                split = m->qkv;
            } else {
                cuk_copy_rows(s, q, Q, m->qkv, QKV, (int)n_tok, Q);
                cuk_copy_rows(s, k, KV, m->qkv + Q, QKV, (int)n_tok, KV);
                cuk_copy_rows(s, v, KV, m->qkv + Q + KV, QKV, (int)n_tok, KV);
            }
        } else {
            matmul(m, &L->wq, m->xb, n_tok, q, 1);
            matmul(m, &L->wk, m->xb, n_tok, k, 1);
            matmul(m, &L->wv, m->xb, n_tok, v, 1);
            bias(m, q, L->bq, n_tok, Q);
            bias(m, k, L->bk, n_tok, KV);
            bias(m, v, L->bv, n_tok, KV);
        }
        if (L->q_norm)                                                             /* per-head rms_norm */
            cuk_norm(s, q, q, L->q_norm, NULL, (int)n_tok * hp->n_head, D, hp->norm_eps, 0);
        if (L->k_norm)
            cuk_norm(s, k, k, L->k_norm, NULL, (int)n_tok * hp->n_head_kv, D, hp->norm_eps, 0);
        struct cuk_kv kv = layer_kv(m, il);
        int qo = (fuse & CUK_FUSE_ATT_Q8) && q8_for(m, &L->wo, n_tok) && D % 32 == 0;   /* merge writes wo's Q8 */
        int window = L->is_swa ? hp->sliding_window : 0;
        if (split)
            cuk_rope_store_qkv(s, split, q, k, (int)n_tok, hp->n_head, hp->n_head_kv, D, &L->rope, m->d_pos, &kv);
        else if (!rope_in)
            cuk_rope_store(s, q, k, v, (int)n_tok, hp->n_head, hp->n_head_kv, D, &L->rope, m->d_pos, &kv);
        if (dec)
            cuk_attention_dec(s, q, k, v, rope_in, &L->rope, &kv, m->d_pos, (int)n_tok, hp->n_head, hp->n_head_kv, D,
                              hp->attn_scale, hp->attn_softcap, window, nch, m->partial, cnt, m->att,
                              qo ? m->xq : NULL, qo ? m->xd : NULL);
        else if (!(fa && cuk_attention_fa(s, q, &kv, m->d_pos, m->d_fa_tiles, (int)m->n_fa_tiles,
                                          (int)m->n_fa_small, (int)n_tok,
                                          hp->n_head, hp->n_head_kv, D, hp->attn_scale, hp->attn_softcap, window,
                                          nch, m->partial, m->att, qo ? m->xq : NULL, qo ? m->xd : NULL)))
            cuk_attention(s, q, &kv, m->d_pos, (int)n_tok, hp->n_head, hp->n_head_kv, D, hp->attn_scale,
                          hp->attn_softcap, window, nch,
                          m->ctx->attn_kind != CUDA_ATTN_HEADS && n_tok >= ATTN_GROUPED_MIN_TOK, m->partial, m->att,
                          qo ? m->xq : NULL, qo ? m->xd : NULL);
        m->q8_src = qo ? m->att : NULL;
        if (m->a16_src == m->att)   /* written just now */
            m->a16_src = NULL;
        const struct cuda_mat *ffn_in = hp->act == AARMD_ACT_GELU ? &L->w_up
                                        : L->w_up_gate.d          ? &L->w_up_gate
                                                                  : &L->w_gate;
        if (fuse1 && !L->attn_post_norm && matvec_acc(m, &L->wo, m->att, L->bo, m->x)) {   /* x += att @ wo + b */
            pend = hp->act != AARMD_ACT_GELU && L->w_up_gate.d && norm_in(m, &L->w_up_gate, fuse);
            if (!pend)
                norm_next(m, ffn_in, n_tok, L->ffn_norm, L->ffn_norm_b, NULL, 0);  /* xb = norm(x) */
        } else {
            matmul(m, &L->wo, m->att, n_tok, m->xb2, 1);                           /* xb2 = att @ wo (+ b) */
            bias(m, m->xb2, L->bo, n_tok, E);
            if (L->attn_post_norm)
                norm(m, m->xb2, m->xb2, L->attn_post_norm, NULL, (int)n_tok);
            add_norm(m, ffn_in, n_tok, L->ffn_norm, L->ffn_norm_b);                /* x += a; xb = norm(x) (+ b) */
        }

        int gelu = hp->act != AARMD_ACT_SILU_GATED;
        int res = 0;                                                               /* x += f done */
        float *ffn = m->hb;                                                        /* [T][F] input of down */
        if (hp->act == AARMD_ACT_GELU) {                                           /* hb = gelu(xb @ up + b) */
            matmul(m, &L->w_up, m->xb, n_tok, m->hb, 1);
            bias(m, m->hb, L->b_up, n_tok, F);
            cuk_gelu(s, m->hb, (int64_t)n_tok * F);
            m->q8_src = NULL;
        } else if (L->w_up_gate.d) {                                               /* [gate|up] = xb @ up_gate */
            int qd = q8_for(m, &L->w_down, n_tok);
            int acted = 0;   /* v10: hb2 = act(gate) * up (+ Q8) in the matvec's epilogue */
            /* v19: [gate | up] from cuBLAS as F16 into hb, read so by the activation (AARMD_CUDA_GEMM16) */
            int g16 = !pend && n_tok > 1 && gemm16_on() && blas_for(m, &L->w_up_gate, n_tok) &&
                      (int)n_tok < cuk_mmqwg_min_tok() && blas_mm(m, &L->w_up_gate, m->xb, n_tok, m->hb, 1) == 0;
            if (g16) {
                int h = blas_for(m, &L->w_down, n_tok);
                const uint16_t *hb16 = (const uint16_t *)m->hb;   /* [T][2F] F16 */
                m->xqk_src = NULL;
                cuk_act_gated16_q8(s, m->hb2, hb16, 2 * F, hb16 + F, 2 * F, (int)n_tok, F, gelu, qd ? m->xq : NULL,
                                   qd ? m->xd : NULL, h ? m->a16 : NULL);
                ffn = m->hb2;
                m->q8_src = qd && F % 32 == 0 ? ffn : NULL;
                m->a16_src = h ? ffn : NULL;
                acted = 1;
            } else if (pend)
                acted = norm_matmul(m, &L->w_up_gate, L->ffn_norm, L->ffn_norm_b, 1, gelu, qd, m->hb);
            else if (!(n_tok == 1 && (acted = mv1_fused(m, &L->w_up_gate, 0, NULL, NULL, 1, gelu, qd, m->hb))))
                matmul(m, &L->w_up_gate, m->xb, n_tok, m->hb, 1);
            pend = 0;
            if (acted)
                ffn = m->hb2;   /* q8_src set by mv1_fused or the F16 activation above */
            /* one token: x += (act(gate) * up) @ down (+ b) in one kernel when down takes it */
            res = !acted && fuse1 && !L->ffn_post_norm && qd && (fuse & CUK_FUSE_ACT_IN) &&
                  cuk_matvec_q8_act_acc(s, L->w_down.type, L->w_down.d, L->w_down.n_in, L->w_down.n_out, m->hb,
                                        m->hb + F, gelu, L->b_down, m->x);
            if (!res && !acted) {
                int h = blas_for(m, &L->w_down, n_tok);
                cuk_act_gated_q8(s, m->hb2, m->hb, 2 * F, m->hb + F, 2 * F, (int)n_tok, F, gelu, qd ? m->xq : NULL,
                                 qd ? m->xd : NULL, h ? m->a16 : NULL);
                ffn = m->hb2;
                m->q8_src = qd && F % 32 == 0 ? ffn : NULL;
                m->a16_src = h ? ffn : NULL;
            }
        } else {                                                                   /* act(xb @ gate) * (xb @ up) */
            int qd = q8_for(m, &L->w_down, n_tok);
            matmul(m, &L->w_gate, m->xb, n_tok, m->hb, 1);
            matmul(m, &L->w_up, m->xb, n_tok, m->hb2, 1);
            bias(m, m->hb2, L->b_up, n_tok, F);
            int h = blas_for(m, &L->w_down, n_tok);
            cuk_act_gated_q8(s, m->hb, m->hb, F, m->hb2, F, (int)n_tok, F, gelu, qd ? m->xq : NULL, qd ? m->xd : NULL,
                             h ? m->a16 : NULL);
            m->q8_src = qd && F % 32 == 0 ? m->hb : NULL;
            m->a16_src = h ? m->hb : NULL;
        }
        /* x += f; xb = norm(x) * (next layer's attn_norm | output_norm) */
        if (!res)                                                                  /* x += hb @ down (+ b) */
            res = fuse1 && !L->ffn_post_norm && matvec_acc(m, &L->w_down, ffn, L->b_down, m->x);
        if (!res) {
            matmul(m, &L->w_down, ffn, n_tok, m->xb2, 1);                          /* xb2 = hb @ down (+ b) */
            bias(m, m->xb2, L->b_down, n_tok, E);
            if (L->ffn_post_norm)
                norm(m, m->xb2, m->xb2, L->ffn_post_norm, NULL, (int)n_tok);
        }
        if (il + 1 < hp->n_layer) {
            const struct cuda_layer *N = &m->layers[il + 1];
            const struct cuda_mat *nx = N->wqkv.d ? &N->wqkv : &N->wq;
            pend = res && N->wqkv.d && norm_in(m, &N->wqkv, fuse);
            if (res && !pend)
                norm_next(m, nx, n_tok, N->attn_norm, N->attn_norm_b, NULL, 0);
            else if (!res)
                add_norm(m, nx, n_tok, N->attn_norm, N->attn_norm_b);
        } else if (n_rows) {
            if (res)
                norm_next(m, direct ? &m->output : NULL, n_tok, m->output_norm, m->output_norm_b, NULL, 0);
            else
                add_norm(m, direct ? &m->output : NULL, n_tok, m->output_norm, m->output_norm_b);
        } else if (!res)
            cuk_add(s, m->x, m->xb2, (int64_t)n_tok * E);
    }

    if (n_rows) {
        const float *xo = m->xb;
        if (!direct) {                                                             /* the rows that want logits */
            cuk_gather_rows(s, m->xl, m->xb, m->d_lrow, (int)n_rows, E);
            xo = m->xl;
        }
        matmul(m, &m->output, xo, n_rows, m->logits, direct);
        if (hp->final_softcap > 0.0f)
            cuk_softcap(s, m->logits, (int64_t)n_rows * hp->n_vocab, hp->final_softcap);
    }
}

