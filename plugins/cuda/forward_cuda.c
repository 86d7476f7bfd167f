/*
 * forward_cuda.c — the CUDA backend's decoder forward pass (the generic
 * decoder of aarmd_backend.h) as kernel launches on the model's stream, and
 * the CUDA graph that replays a batch-1 decode. Loading is cuda_load.c.
 */
#include <string.h>

#include "cuda_model.h"

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
    if (m->blas && n_tok >= GEMM_MIN_TOK && (size_t)(w->n_in * w->n_out) <= m->w16_elems) {
        const void *w16 = w->d;
        if (w->type != AARMD_TYPE_F16) {
            cuk_dequant_f16(s, w->type, w->d, w->n_in, w->n_out, m->w16);
            w16 = m->w16;
        }
        cuk_f32_to_f16(s, x, m->a16, (int64_t)n_tok * w->n_in);
        if (cuda_blas_gemm(m->blas, w16, m->a16, y, (int)w->n_in, (int)w->n_out, (int)n_tok) == 0)
            return;
    }
    if (m->use_q8 && n_tok <= CUK_Q8_MAX_TOK && cuk_type_q8(w->type)) {
        if (m->q8_src != x) {
            cuk_quantize_q8(s, x, (int64_t)n_tok * w->n_in, m->xq, m->xd);
            m->q8_src = x;
        }
        cuk_matvec_q8(s, w->type, w->d, w->n_in, w->n_out, m->xq, m->xd, (int)n_tok, y);
        return;
    }
    cuk_matmul(s, w->type, w->d, w->n_in, w->n_out, x, (int)n_tok, y);
}

/* 1 when matmul() takes w through the Q8 matvec for n_tok rows (a producer may quantize for it). */
static int q8_for(const struct aarmd_backend_model *m, const struct cuda_mat *w, uint32_t n_tok)
{
    return w && w->d && m->use_q8 && n_tok <= CUK_Q8_MAX_TOK && cuk_type_q8(w->type) && w->n_in % 32 == 0;
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

/* Split-K chunks for the attention of n_tok tokens whose last key is at most p_max. */
static int attn_chunks(const struct aarmd_backend_model *m, uint32_t n_tok, uint32_t p_max, int graph)
{
    const struct cuda_hparams *hp = &m->hp;
    if (graph)
        return CUK_ATTN_MAX_CHUNKS;   /* the graph is replayed at growing positions */
    size_t per = (size_t)n_tok * hp->n_head * (size_t)(hp->head_dim + 2);
    size_t fit = m->partial_floats / per;
    size_t want = (p_max + 1 + 63) / 64;   /* ~64 keys per chunk at least */
    size_t n = want < fit ? want : fit;
    if (n > CUK_ATTN_MAX_CHUNKS)
        n = CUK_ATTN_MAX_CHUNKS;
    return n ? (int)n : 1;
}

/* Everything between the upload of tokens/positions and the logits copy. */
static void forward_body(struct aarmd_backend_model *m, struct aarmd_backend_seq *seq, uint32_t n_tok, int nch,
                         int want_logits)
{
    const struct cuda_hparams *hp = &m->hp;
    cudaStream_t s = m->stream;
    const int E = hp->n_embd, Q = hp->q_dim, KV = hp->kv_dim, F = hp->n_ff, D = hp->head_dim;
    const size_t layer_kv = (size_t)seq->n_ctx * (size_t)KV * 2;

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
        char *kc = (char *)seq->k + (size_t)il * layer_kv, *vc = (char *)seq->v + (size_t)il * layer_kv;
        cuk_rope_store(s, q, k, v, (int)n_tok, hp->n_head, hp->n_head_kv, D, &L->rope, m->d_pos, kc, vc);
        cuk_attention(s, q, kc, vc, m->d_pos, (int)n_tok, hp->n_head, hp->n_head_kv, D, hp->attn_scale,
                      hp->attn_softcap, L->is_swa ? hp->sliding_window : 0, nch, m->partial, m->att);
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
        } else if (want_logits)
            add_norm(m, n_tok == 1 ? &m->output : NULL, n_tok, m->output_norm, m->output_norm_b);
        else
            cuk_add(s, m->x, m->xb2, (int64_t)n_tok * E);
    }

    if (want_logits) {                                                             /* last token only */
        matmul(m, &m->output, m->xb + (size_t)(n_tok - 1) * E, 1, m->logits, n_tok == 1);
        if (hp->final_softcap > 0.0f)
            cuk_softcap(s, m->logits, hp->n_vocab, hp->final_softcap);
        cudaMemcpyAsync(m->h_logits, m->logits, (size_t)hp->n_vocab * sizeof(float), cudaMemcpyDeviceToHost, s);
    }
}

/* Captures the batch-1 decode of `seq` (logits included) into seq->graph_exec. */
static int capture(struct aarmd_backend_model *m, struct aarmd_backend_seq *seq)
{
    cudaGraph_t g = NULL;
    if (cudaStreamBeginCapture(m->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
        goto fail;
    forward_body(m, seq, 1, CUK_ATTN_MAX_CHUNKS, 1);
    if (cudaStreamEndCapture(m->stream, &g) != cudaSuccess || !g)
        goto fail;
    if (cudaGraphInstantiate(&seq->graph_exec, g, 0) != cudaSuccess) {
        seq->graph_exec = NULL;
        goto fail;
    }
    cudaGraphDestroy(g);
    return 0;
fail:
    if (g)
        cudaGraphDestroy(g);
    cudaGetLastError();
    seq->graph_failed = 1;
    cuda_log(m->ctx->host, AARMD_LOG_WARN, "cuda: graph capture failed; decoding without graphs");
    return -1;
}

int cuda_forward(struct aarmd_backend_model *m, struct aarmd_backend_seq *seq, const int32_t *tokens, uint32_t n,
                 float *logits, char *err, size_t errlen)
{
    cudaStream_t s = m->stream;
    for (uint32_t t = 0; t < n; t++) {
        m->h_tok[t] = tokens[t];
        m->h_pos[t] = (int32_t)(seq->n_past + t);
    }
    cudaMemcpyAsync(m->d_tok, m->h_tok, n * sizeof(int32_t), cudaMemcpyHostToDevice, s);
    cudaMemcpyAsync(m->d_pos, m->h_pos, n * sizeof(int32_t), cudaMemcpyHostToDevice, s);

    cuk_set_tuning(m->ctx->prop.major >= 9 ? m->ctx->use_pdl : 0, m->ctx->use_mvf);
    int graph = n == 1 && logits && m->ctx->use_graphs && !seq->graph_failed;
    if (graph && !seq->graph_exec)
        capture(m, seq);
    if (graph && seq->graph_exec) {
        cudaError_t e = cudaGraphLaunch(seq->graph_exec, s);
        if (e != cudaSuccess)
            return cuda_err(err, errlen, AARMD_EDEVICE, "cudaGraphLaunch: %s", cudaGetErrorString(e));
    } else {
        forward_body(m, seq, n, attn_chunks(m, n, seq->n_past + n - 1, 0), logits != NULL);
    }
    cudaError_t e = cudaStreamSynchronize(s);
    if (e == cudaSuccess)
        e = cudaGetLastError();
    if (e != cudaSuccess)
        return cuda_err(err, errlen, AARMD_EDEVICE, "CUDA: %s", cudaGetErrorString(e));
    if (logits)
        memcpy(logits, m->h_logits, (size_t)m->hp.n_vocab * sizeof(float));
    return AARMD_OK;
}
