/*
 * forward_cuda.c — the CUDA backend's decoder forward pass (the generic
 * decoder of aarmd_backend.h) over the tokens of every sequence of a step as
 * one batch of kernel launches on the model's stream, and the CUDA graphs that
 * replay decode batches. Loading is cuda_load.c; KV block bookkeeping cuda_kv.c.
 */
#include <string.h>

#include "cuda_model.h"

/* Logit rows per device-to-host slice (the host copies one out while the next transfers). */
#define LOGIT_SLICE 8u
/* Forwards of at least this many tokens use the grouped attention (option attn=grouped, the
 * default); fewer tokens: too few warps in flight for its serial walk over a chunk's keys. */
#define ATTN_GROUPED_MIN_TOK 4u
/* Prefill chunks at least this long go through cuBLAS when it is loaded. */
#define GEMM_MIN_TOK 16

/*
 * y = x @ w for n_tok rows. Decode-sized batches of quantized weights go
 * through the Q8 (dp4a) matvec: x is quantized once and reused while
 * `reuse` says the caller passes the same rows again (q, k, v; gate, up).
 */
static void matmul(struct aarmd_backend_model *m, const struct cuda_mat *w, const float *x, uint32_t n_tok, float *y,
                   int reuse)
{
    cudaStream_t s = m->stream;
    if (!reuse)
        m->q8_src = NULL;
    int q8 = m->use_q8 && n_tok <= CUDA_Q8_ROWS && cuk_type_q8(w->type);
    if (m->blas && n_tok >= GEMM_MIN_TOK && !(q8 && n_tok <= m->q8_gemm_max) &&
        (w->type == AARMD_TYPE_F16 || w->d16 || (size_t)(w->n_in * w->n_out) <= m->w16_elems)) {
        const void *w16 = w->type == AARMD_TYPE_F16 ? w->d : w->d16;
        if (!w16) {
            cuk_dequant_f16(s, w->type, w->d, w->n_in, w->n_out, m->w16);
            w16 = m->w16;
        }
        cuk_f32_to_f16(s, x, m->a16, (int64_t)n_tok * w->n_in);
        if (cuda_blas_gemm(m->blas, w16, m->a16, y, (int)w->n_in, (int)w->n_out, (int)n_tok) == 0)
            return;
    }
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
    if (!w || !w->d || !m->use_q8 || n_tok > CUDA_Q8_ROWS || !cuk_type_q8(w->type) || w->n_in % 32)
        return 0;
    return n_tok < GEMM_MIN_TOK || !m->blas || n_tok <= m->q8_gemm_max;
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
    cuk_add_norm_q8(m->stream, m->xb, m->x, m->xb2, w, b, (int)n_tok, hp->n_embd, hp->norm_eps,
                    hp->norm_kind == AARMD_NORM_LAYER, q ? m->xq : NULL, q ? m->xd : NULL);
    m->q8_src = q ? m->xb : NULL;
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

/* Split-K chunks for the attention of n_tok tokens whose last key is at most p_max (graphs use all). */
static int attn_chunks(const struct aarmd_backend_model *m, uint32_t n_tok, uint32_t p_max)
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

/* The paged cache of layer il for this forward's tokens. */
static struct cuk_kv layer_kv(const struct aarmd_backend_model *m, int il)
{
    struct cuk_kv kv = {m->kv.pool, m->kv.block_halfs, (size_t)il * m->kv.layer_halfs, m->d_btab, m->d_tok_bt};
    return kv;
}

/*
 * Everything between the upload of the step data and the logits copy: n_tok
 * tokens (d_tok, d_pos, d_tok_bt), then the logits of n_rows rows into
 * m->logits: rows d_lrow[..] of the batch, or the first n_rows tokens when
 * `direct` (then n_rows == n_tok).
 */
static void forward_body(struct aarmd_backend_model *m, uint32_t n_tok, int nch, uint32_t n_rows, int direct)
{
    const struct cuda_hparams *hp = &m->hp;
    cudaStream_t s = m->stream;
    const int E = hp->n_embd, Q = hp->q_dim, KV = hp->kv_dim, F = hp->n_ff, D = hp->head_dim;

    /* x = token_embd[tok] * embd_scale (+ pos_embd[pos]) */
    cuk_get_rows(s, m->token_embd.type, m->token_embd.d, E, m->d_tok, (int)n_tok, m->x, hp->embd_scale, 0);
    if (m->pos_embd.d)
        cuk_get_rows(s, m->pos_embd.type, m->pos_embd.d, E, m->d_pos, (int)n_tok, m->x, 1.0f, 1);

    norm(m, m->xb, m->x, m->layers[0].attn_norm, m->layers[0].attn_norm_b, (int)n_tok);   /* xb = norm(x) * attn_norm */
    m->q8_src = NULL;   /* xq holds nothing of this pass yet */
    for (int il = 0; il < hp->n_layer; il++) {
        const struct cuda_layer *L = &m->layers[il];
        float *q = m->q, *k = m->k, *v = m->v;
        if (L->wqkv.d) {                                                           /* q|k|v = xb @ wqkv, split */
            int QKV = Q + 2 * KV;
            matmul(m, &L->wqkv, m->xb, n_tok, m->qkv, 1);   /* reuse: add_norm may have quantized xb */
            bias(m, m->qkv, L->bqkv, n_tok, QKV);
            if (n_tok == 1) {                                                      /* one row: use it in place */
                q = m->qkv;
                k = m->qkv + Q;
                v = m->qkv + Q + KV;
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
        cuk_rope_store(s, q, k, v, (int)n_tok, hp->n_head, hp->n_head_kv, D, &L->rope, m->d_pos, &kv);
        cuk_attention(s, q, &kv, m->d_pos, (int)n_tok, hp->n_head, hp->n_head_kv, D, hp->attn_scale,
                      hp->attn_softcap, L->is_swa ? hp->sliding_window : 0, nch,
                      m->ctx->attn_grouped && n_tok >= ATTN_GROUPED_MIN_TOK, m->partial, m->att);
        matmul(m, &L->wo, m->att, n_tok, m->xb2, 0);                               /* xb2 = att @ wo (+ b) */
        bias(m, m->xb2, L->bo, n_tok, E);
        if (L->attn_post_norm)
            norm(m, m->xb2, m->xb2, L->attn_post_norm, NULL, (int)n_tok);
        /* x += a; xb = norm(x) * ffn_norm (+ b) */
        const struct cuda_mat *ffn_in = hp->act == AARMD_ACT_GELU ? &L->w_up
                                        : L->w_up_gate.d          ? &L->w_up_gate
                                                                  : &L->w_gate;
        add_norm(m, ffn_in, n_tok, L->ffn_norm, L->ffn_norm_b);

        int gelu = hp->act != AARMD_ACT_SILU_GATED;
        float *ffn = m->hb;                                                        /* [T][F] input of down */
        if (hp->act == AARMD_ACT_GELU) {                                           /* hb = gelu(xb @ up + b) */
            matmul(m, &L->w_up, m->xb, n_tok, m->hb, 1);
            bias(m, m->hb, L->b_up, n_tok, F);
            cuk_gelu(s, m->hb, (int64_t)n_tok * F);
            m->q8_src = NULL;
        } else if (L->w_up_gate.d) {                                               /* [gate|up] = xb @ up_gate */
            int qd = q8_for(m, &L->w_down, n_tok);
            matmul(m, &L->w_up_gate, m->xb, n_tok, m->hb, 1);
            cuk_act_gated_q8(s, m->hb2, m->hb, 2 * F, m->hb + F, 2 * F, (int)n_tok, F, gelu, qd ? m->xq : NULL,
                             qd ? m->xd : NULL);
            ffn = m->hb2;
            m->q8_src = qd && F % 32 == 0 ? ffn : NULL;
        } else {                                                                   /* act(xb @ gate) * (xb @ up) */
            int qd = q8_for(m, &L->w_down, n_tok);
            matmul(m, &L->w_gate, m->xb, n_tok, m->hb, 1);
            matmul(m, &L->w_up, m->xb, n_tok, m->hb2, 1);
            bias(m, m->hb2, L->b_up, n_tok, F);
            cuk_act_gated_q8(s, m->hb, m->hb, F, m->hb2, F, (int)n_tok, F, gelu, qd ? m->xq : NULL, qd ? m->xd : NULL);
            m->q8_src = qd && F % 32 == 0 ? m->hb : NULL;
        }
        matmul(m, &L->w_down, ffn, n_tok, m->xb2, 1);                              /* xb2 = hb @ down (+ b) */
        bias(m, m->xb2, L->b_down, n_tok, E);
        if (L->ffn_post_norm)
            norm(m, m->xb2, m->xb2, L->ffn_post_norm, NULL, (int)n_tok);
        /* x += f; xb = norm(x) * (next layer's attn_norm | output_norm) */
        if (il + 1 < hp->n_layer) {
            const struct cuda_layer *N = &m->layers[il + 1];
            add_norm(m, N->wqkv.d ? &N->wqkv : &N->wq, n_tok, N->attn_norm, N->attn_norm_b);
        } else if (n_rows)
            add_norm(m, direct ? &m->output : NULL, n_tok, m->output_norm, m->output_norm_b);
        else
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

void cuda_graphs_free(struct aarmd_backend_model *m)
{
    for (int i = 0; i < CUDA_N_BUCKETS; i++) {
        if (m->graph[i])
            cudaGraphExecDestroy(m->graph[i]);
        m->graph[i] = NULL;
    }
}

int cuda_step_bufs(struct aarmd_backend_model *m, size_t btab_cap, char *err, size_t errlen)
{
    size_t T = m->max_tok, L = CUDA_MAX_LOGIT_ROWS, n = 3 * T + L + btab_cap;
    cudaStreamSynchronize(m->stream);
    cuda_graphs_free(m);   /* they captured the old pointers */
    if (m->d_step)
        cudaFree(m->d_step);
    if (m->h_step)
        cudaFreeHost(m->h_step);
    m->d_step = m->h_step = NULL;
    m->btab_cap = 0;
    if (cudaMalloc((void **)&m->d_step, n * sizeof(int32_t)) != cudaSuccess ||
        cudaHostAlloc((void **)&m->h_step, n * sizeof(int32_t), cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        if (m->d_step)
            cudaFree(m->d_step);
        m->d_step = NULL;
        return cuda_err(err, errlen, AARMD_ENOMEM, "step buffers of %zu bytes: out of device or pinned memory",
                        n * sizeof(int32_t));
    }
    m->d_tok = m->d_step;
    m->d_pos = m->d_step + T;
    m->d_tok_bt = m->d_step + 2 * T;
    m->d_lrow = m->d_step + 3 * T;
    m->d_btab = m->d_step + 3 * T + L;
    m->btab_cap = btab_cap;
    return AARMD_OK;
}

/* Captures the decode of `n_tok` tokens (logits of all) into m->graph[b]. */
static int capture(struct aarmd_backend_model *m, int b, uint32_t n_tok)
{
    cudaGraph_t g = NULL;
    if (cudaStreamBeginCapture(m->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
        goto fail;
    forward_body(m, n_tok, CUK_ATTN_MAX_CHUNKS, n_tok, 1);   /* the graph is replayed at growing positions */
    if (cudaStreamEndCapture(m->stream, &g) != cudaSuccess || !g)
        goto fail;
    if (cudaGraphInstantiate(&m->graph[b], g, 0) != cudaSuccess) {
        m->graph[b] = NULL;
        goto fail;
    }
    cudaGraphDestroy(g);
    return 0;
fail:
    if (g)
        cudaGraphDestroy(g);
    cudaGetLastError();
    m->graph_failed = 1;
    cuda_log(m->ctx->host, AARMD_LOG_WARN, "cuda: graph capture failed; decoding without graphs");
    return -1;
}

/* Graph bucket of a decode batch of n tokens: the smallest power of two >= n that fits; -1: none. */
static int bucket_of(const struct aarmd_backend_model *m, uint32_t n)
{
    for (int b = 0; b < CUDA_N_BUCKETS; b++)
        if ((1u << b) >= n)
            return (1u << b) <= m->max_tok ? b : -1;
    return -1;
}

int cuda_forward(struct aarmd_backend_model *m, const struct cuda_piece *pc, uint32_t n_pc, char *err,
                 size_t errlen)
{
    cudaStream_t s = m->stream;
    const struct cuda_kv *kv = &m->kv;
    size_t T = m->max_tok, L = CUDA_MAX_LOGIT_ROWS, nbt = 1;
    uint32_t n_tok = 0, p_max = 0;
    int decode = 1;
    for (uint32_t i = 0; i < n_pc; i++) {
        nbt += cuda_kv_blocks_for(kv, pc[i].seq->n_past + pc[i].n);
        n_tok += pc[i].n;
        decode &= pc[i].n == 1;
        if (pc[i].seq->n_past + pc[i].n - 1 > p_max)
            p_max = pc[i].seq->n_past + pc[i].n - 1;
    }
    if (nbt > m->btab_cap) {
        int rc = cuda_step_bufs(m, 2 * nbt, err, errlen);
        if (rc != AARMD_OK)
            return rc;
    }
    int b = decode && m->ctx->use_graphs && !m->graph_failed ? bucket_of(m, n_pc) : -1;

    /* the step data: tokens, positions, each token's table, logit rows, tables (scratch block first) */
    int32_t *tok = m->h_step, *pos = tok + T, *tbt = tok + 2 * T, *lrow = tok + 3 * T, *btab = lrow + L;
    btab[0] = (int32_t)kv->scratch;
    size_t bo = 1;
    uint32_t t = 0, n_rows = 0;
    for (uint32_t i = 0; i < n_pc; i++) {
        const struct aarmd_backend_seq *sq = pc[i].seq;
        uint32_t nb = cuda_kv_blocks_for(kv, sq->n_past + pc[i].n);
        for (uint32_t j = 0; j < nb; j++)
            btab[bo + j] = (int32_t)sq->blocks[j];
        for (uint32_t j = 0; j < pc[i].n; j++, t++) {
            tok[t] = pc[i].tokens[j];
            pos[t] = (int32_t)(sq->n_past + j);
            tbt[t] = (int32_t)bo;
        }
        if (pc[i].logits)
            lrow[n_rows++] = (int32_t)(t - 1);
        bo += nb;
    }
    uint32_t run_tok = n_tok;
    if (b >= 0) {   /* padded tokens write the scratch block at position 0 */
        run_tok = 1u << b;
        for (; t < run_tok; t++)
            tok[t] = pos[t] = tbt[t] = 0;
    }
    cudaMemcpyAsync(m->d_step, m->h_step, (3 * T + L + bo) * sizeof(int32_t), cudaMemcpyHostToDevice, s);

    cuk_set_tuning(m->ctx->prop.major >= 9 ? m->ctx->use_pdl : 0, m->ctx->use_mvf);
    if (b >= 0 && !m->graph[b])
        capture(m, b, run_tok);
    uint32_t copy_rows;   /* logit rows to bring back */
    if (b >= 0 && m->graph[b]) {
        cudaError_t e = cudaGraphLaunch(m->graph[b], s);
        if (e != cudaSuccess)
            return cuda_err(err, errlen, AARMD_EDEVICE, "cudaGraphLaunch: %s", cudaGetErrorString(e));
        copy_rows = n_rows ? n_pc : 0;   /* piece i's logits are row i */
    } else {
        int direct = n_rows == n_tok;   /* every token wants logits: piece i is row i */
        forward_body(m, n_tok, attn_chunks(m, n_tok, p_max), n_rows, direct);
        copy_rows = n_rows;
    }
    /* logits back in slices of LOGIT_SLICE rows: the host copies a slice out while the next one transfers */
    size_t nv = (size_t)m->hp.n_vocab;
    int by_piece = b >= 0 && m->graph[b] != NULL;   /* row of piece i: i; else the count of earlier logit pieces */
    uint32_t n_sl = (copy_rows + LOGIT_SLICE - 1) / LOGIT_SLICE;
    for (uint32_t k = 0; k < n_sl; k++) {
        uint32_t r0 = k * LOGIT_SLICE, nr = copy_rows - r0 < LOGIT_SLICE ? copy_rows - r0 : LOGIT_SLICE;
        cudaMemcpyAsync(m->h_logits + r0 * nv, m->logits + r0 * nv, nr * nv * sizeof(float), cudaMemcpyDeviceToHost,
                        s);
        cudaEventRecord(m->ev_logits[k], s);
    }
    uint32_t r = 0, k_done = 0;
    for (uint32_t i = 0; i < n_pc; i++) {
        uint32_t row = by_piece ? i : r;
        r += pc[i].logits != NULL;
        if (!pc[i].logits)
            continue;
        while (k_done <= row / LOGIT_SLICE) {   /* the slice holding this row has arrived */
            cudaError_t e = cudaEventSynchronize(m->ev_logits[k_done++]);
            if (e != cudaSuccess)
                return cuda_err(err, errlen, AARMD_EDEVICE, "CUDA: %s", cudaGetErrorString(e));
        }
        memcpy(pc[i].logits, m->h_logits + row * nv, nv * sizeof(float));
    }
    cudaError_t e = cudaStreamSynchronize(s);
    if (e == cudaSuccess)
        e = cudaGetLastError();
    if (e != cudaSuccess)
        return cuda_err(err, errlen, AARMD_EDEVICE, "CUDA: %s", cudaGetErrorString(e));
    return AARMD_OK;
}
