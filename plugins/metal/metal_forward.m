/*
 * metal_forward.m — the Metal backend's forward pass: one chunk of a step
 * encoded as kernel dispatches into one command buffer (embedding, per layer
 * norms, projections, RoPE, paged KV store and attention for every sequence
 * of the chunk, FFN; logits of the rows that want them), run and waited on.
 * Host code only; no sequence bookkeeping (backend_metal.m).
 */
#include <string.h>

#include "metal_model.h"

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
    use(en, (enum mtl_kernel)(K_MV_FIRST + (tiled ? 22 : 0) + mtl_type_slot(w->type)));
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
    use(en, (enum mtl_kernel)(K_MV_FIRST + 11 + mtl_type_slot(w->type)));
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

/*
 * Encodes one chunk: n_tok tokens (model->tok / pos_tok / kvtok / ktable
 * filled), nl rows wanting logits (model->lidx filled). Order and math
 * follow plugins/cpu/forward.c step for step.
 */
static void encode_chunk(struct enc *en, uint32_t n_tok, uint32_t nl)
{
    struct aarmd_backend_model *m = en->m;
    const uint32_t E = m->n_embd, Q = m->q_dim, KV = m->kv_dim, F = m->n_ff, D = m->head_dim;
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
        /* every sequence of the chunk at once: K/V rows into the pool, attention through the block tables */
        struct aarmd_mtl_kv_store_args ka = {KV, n_tok, KV, m->pool.block_tokens};
        use(en, K_KV_STORE);
        [en->e setBytes:&ka length:sizeof ka atIndex:0];
        arg(en, m->k, 0, 1);
        arg(en, m->v, 0, 2);
        arg(en, m->kc[il], 0, 3);
        arg(en, m->vc[il], 0, 4);
        arg(en, m->kvtok, 0, 5);
        arg(en, m->ktable, 0, 6);
        grid(en, (KV + AARMD_MTL_ROW_THREADS - 1) / AARMD_MTL_ROW_THREADS, n_tok, 1, AARMD_MTL_ROW_THREADS);
        struct aarmd_mtl_attn_args aa = {D, m->n_head, m->n_head_kv, n_tok, Q, Q, L->is_swa ? m->sliding_window : 0,
                                         m->pool.block_tokens, m->attn_scale, m->attn_softcap};
        use(en, K_ATTENTION);
        [en->e setBytes:&aa length:sizeof aa atIndex:0];
        arg(en, m->q, 0, 1);
        arg(en, m->kc[il], 0, 2);
        arg(en, m->vc[il], 0, 3);
        arg(en, m->att, 0, 4);
        arg(en, m->kvtok, 0, 5);
        arg(en, m->ktable, 0, 6);
        grid(en, m->n_head, n_tok, 1, AARMD_MTL_ROW_THREADS);
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

/* The chunk's block tables, flat in ktable, and each token's (position,
 * table offset) in kvtok. The tables already cover every position written. */
static int fill_kv_tables(struct aarmd_backend_model *m, const struct mtl_seg *segs, uint32_t n_segs, char *err,
                          size_t errlen)
{
    uint64_t total = 0;
    for (uint32_t s = 0; s < n_segs; s++) {
        uint32_t nb = mtl_kv_blocks_for(&m->pool, (uint64_t)segs[s].pos0 + segs[s].n);
        if (nb > segs[s].seq->tab.n)
            return set_err(err, errlen, AARMD_EINTERNAL, "block table of %u blocks, position %u needs %u",
                           segs[s].seq->tab.n, segs[s].pos0 + segs[s].n - 1, nb);
        total += nb;
    }
    if (total > UINT32_MAX)
        return set_err(err, errlen, AARMD_EINTERNAL, "block tables of %llu entries", (unsigned long long)total);
    if (total > m->ktable_cap) {   /* the previous command buffer has completed: replace the buffer */
        uint64_t cap = 2ull * m->ktable_cap > total ? 2ull * m->ktable_cap : total;
        if (cap > UINT32_MAX)
            cap = UINT32_MAX;
        id<MTLBuffer> b = [m->ctx->device newBufferWithLength:(NSUInteger)(cap * 4) options:MTLResourceStorageModeShared];
        if (!b)
            return set_err(err, errlen, AARMD_ENOMEM, "cannot allocate block tables of %llu entries",
                           (unsigned long long)cap);
        m->scratch_bytes += (cap - m->ktable_cap) * 4;
        release_obj(m->ktable);
        m->ktable = b;
        m->ktable_cap = (uint32_t)cap;
    }
    uint32_t *tab = (uint32_t *)[m->ktable contents], off = 0;
    struct aarmd_mtl_kv_tok *kt = (struct aarmd_mtl_kv_tok *)[m->kvtok contents];
    for (uint32_t s = 0; s < n_segs; s++) {
        const struct mtl_seg *g = &segs[s];
        uint32_t nb = mtl_kv_blocks_for(&m->pool, (uint64_t)g->pos0 + g->n);
        memcpy(tab + off, g->seq->tab.ids, (size_t)nb * sizeof *tab);
        for (uint32_t i = 0; i < g->n; i++)
            kt[g->t0 + i] = (struct aarmd_mtl_kv_tok){g->pos0 + i, off};
        off += nb;
    }
    return AARMD_OK;
}

/* Runs one chunk as one command buffer and copies its logits out (metal_model.h). */
int mtl_run_chunk(struct aarmd_backend_model *m, uint32_t n_tok, const struct mtl_seg *segs, uint32_t n_segs,
                  uint32_t nl, float *const *dst, char *err, size_t errlen)
{
    int rc = fill_kv_tables(m, segs, n_segs, err, errlen);
    if (rc)
        return rc;
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
        encode_chunk(&en, n_tok, nl);
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
