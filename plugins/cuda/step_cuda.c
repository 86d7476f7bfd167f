/*
 * step_cuda.c — one forward of the CUDA backend as the host sees it: the step
 * data upload (tokens, positions, block tables), the CUDA graphs that replay
 * decode batches of 1..64 tokens, and the logits copied back to the host.
 * The kernels between upload and logits are forward_cuda.c.
 */
#include <stdlib.h>
#include <string.h>

#include "cuda_model.h"

/* Logit rows per device-to-host slice (the host copies one out while the next transfers). */
#define LOGIT_SLICE 8u

/* ---- the host's logits buffers (ABI 1.2) ---------------------------------- */

void *cuda_logits_alloc(struct aarmd_backend_model *m, size_t bytes)
{
    if (!m->ctx->direct_logits || bytes == 0)
        return NULL;
    if (m->n_pinned == m->cap_pinned) {
        uint32_t cap = m->cap_pinned ? 2 * m->cap_pinned : 16;
        struct cuda_pinned *n = realloc(m->pinned, cap * sizeof *n);
        if (!n)
            return NULL;
        m->pinned = n;
        m->cap_pinned = cap;
    }
    cudaSetDevice(m->ctx->device);
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    m->pinned[m->n_pinned].p = p;
    m->pinned[m->n_pinned].bytes = bytes;
    m->n_pinned++;
    return p;
}

void cuda_logits_free(struct aarmd_backend_model *m, void *p)
{
    for (uint32_t i = 0; i < m->n_pinned; i++) {
        if (m->pinned[i].p == p) {
            cudaFreeHost(p);
            m->pinned[i] = m->pinned[--m->n_pinned];
            return;
        }
    }
    cuda_log(m->ctx->host, AARMD_LOG_ERROR, "cuda: logits_free of a buffer logits_alloc did not give");
}

void cuda_logits_free_all(struct aarmd_backend_model *m)
{
    for (uint32_t i = 0; i < m->n_pinned; i++)
        cudaFreeHost(m->pinned[i].p);
    free(m->pinned);
    m->pinned = NULL;
    m->n_pinned = m->cap_pinned = 0;
}

/* 1 when [p, p + bytes) lies inside one pinned logits buffer. */
static int is_pinned(const struct aarmd_backend_model *m, const void *p, size_t bytes)
{
    const char *c = p;
    for (uint32_t i = 0; i < m->n_pinned; i++)
        if (c >= m->pinned[i].p && c + bytes <= m->pinned[i].p + m->pinned[i].bytes)
            return 1;
    return 0;
}

void cuda_graphs_free(struct aarmd_backend_model *m)
{
    for (int i = 0; i < CUDA_N_BUCKETS; i++) {
        if (m->graph[i])
            cudaGraphExecDestroy(m->graph[i]);
        if (m->graph1[i])
            cudaGraphExecDestroy(m->graph1[i]);
        m->graph[i] = m->graph1[i] = NULL;
    }
}

int cuda_step_bufs(struct aarmd_backend_model *m, size_t btab_cap, char *err, size_t errlen)
{
    size_t T = m->max_tok, L = CUDA_MAX_LOGIT_ROWS, n = 4 * T + 1 + L + btab_cap;
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
    m->d_fa_tiles = m->d_step + 3 * T;
    m->d_lrow = m->d_step + 4 * T + 1;
    m->d_btab = m->d_step + 4 * T + 1 + L;
    m->btab_cap = btab_cap;
    return AARMD_OK;
}

/* Captures the decode of `n_tok` tokens (logits of all) into *ge: the attention split into
 * cuda_graph_chunks, or (one) in one chunk, for steps of at most short_keys keys a row. */
static int capture(struct aarmd_backend_model *m, cudaGraphExec_t *ge, uint32_t n_tok, int one)
{
    cudaGraph_t g = NULL;
    if (cudaStreamBeginCapture(m->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
        goto fail;
    cuda_forward_body(m, n_tok, one ? 1 : cuda_graph_chunks(m, n_tok), n_tok, 1);   /* replayed at growing positions */
    if (cudaStreamEndCapture(m->stream, &g) != cudaSuccess || !g)
        goto fail;
    if (cudaGraphInstantiate(ge, g, 0) != cudaSuccess) {
        *ge = NULL;
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

    /* the step data: tokens, positions, each token's table, flash-attention tiles (runs of at most
     * tq tokens of one sequence), logit rows, tables (scratch block first) */
    int32_t *tok = m->h_step, *pos = tok + T, *tbt = tok + 2 * T, *tiles = tok + 3 * T, *lrow = tiles + T + 1;
    int32_t *btab = lrow + L;
    uint32_t group = m->hp.n_head_kv > 0 ? (uint32_t)(m->hp.n_head / m->hp.n_head_kv) : 1;
    uint32_t tq = group >= 1 && group <= CUK_FA_ROWS ? CUK_FA_ROWS / group : 1, n_tiles = 0;
    btab[0] = (int32_t)kv->scratch;
    size_t bo = 1;
    uint32_t t = 0, n_rows = 0;
    for (uint32_t i = 0; i < n_pc; i++) {
        const struct aarmd_backend_seq *sq = pc[i].seq;
        uint32_t nb = cuda_kv_blocks_for(kv, sq->n_past + pc[i].n);
        for (uint32_t j = 0; j < nb; j++)
            btab[bo + j] = (int32_t)sq->blocks[j];
        for (uint32_t j = 0; j < pc[i].n; j++, t++) {
            if (j % tq == 0)
                tiles[n_tiles++] = (int32_t)t;
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
        for (; t < run_tok; t++) {
            tok[t] = pos[t] = tbt[t] = 0;
            tiles[n_tiles++] = (int32_t)t;
        }
    }
    tiles[n_tiles] = (int32_t)t;
    m->n_fa_tiles = n_tiles;
    m->n_fa_small = 0;
    for (uint32_t i = 0; i < n_tiles; i++)
        m->n_fa_small += (uint32_t)(tiles[i + 1] - tiles[i]) * group <= 16;
    cudaMemcpyAsync(m->d_step, m->h_step, (4 * T + 1 + L + bo) * sizeof(int32_t), cudaMemcpyHostToDevice, s);

    cuk_set_tuning(m->ctx->prop.major >= 9 ? m->ctx->use_pdl : 0, m->ctx->use_mvf);
    cuk_fa_prepare(m->hp.head_dim);   /* before any capture: the flash attention's shared-memory opt-in */
    /* contexts of at most short_keys keys: the graph whose attention is one chunk (no merge) */
    int one = p_max + 1 <= m->ctx->short_keys;
    cudaGraphExec_t *ge = b >= 0 ? (one ? &m->graph1[b] : &m->graph[b]) : NULL;
    if (ge && !*ge)
        capture(m, ge, run_tok, one);
    uint32_t copy_rows;   /* logit rows to bring back */
    if (ge && *ge) {
        cudaError_t e = cudaGraphLaunch(*ge, s);
        if (e != cudaSuccess)
            return cuda_err(err, errlen, AARMD_EDEVICE, "cudaGraphLaunch: %s", cudaGetErrorString(e));
        copy_rows = n_rows ? n_pc : 0;   /* piece i's logits are row i */
    } else {
        int direct = n_rows == n_tok;   /* every token wants logits: piece i is row i */
        cuda_forward_body(m, n_tok, cuda_attn_chunks(m, n_tok, p_max), n_rows, direct);
        copy_rows = n_rows;
    }
    size_t nv = (size_t)m->hp.n_vocab;
    int by_piece = ge && *ge;   /* row of piece i: i; else the count of earlier logit pieces */
    int direct = m->n_pinned > 0;   /* every wanted row goes straight into a pinned host buffer */
    for (uint32_t i = 0; i < n_pc && direct; i++)
        direct = !pc[i].logits || is_pinned(m, pc[i].logits, nv * sizeof(float));
    if (direct) {
        for (uint32_t i = 0, r = 0; i < n_pc; i++) {
            if (!pc[i].logits)
                continue;
            uint32_t row = by_piece ? i : r++;
            cudaMemcpyAsync(pc[i].logits, m->logits + row * nv, nv * sizeof(float), cudaMemcpyDeviceToHost, s);
        }
        copy_rows = 0;
    }
    /* else logits back in slices of LOGIT_SLICE rows: the host copies a slice out while the next one transfers */
    uint32_t n_sl = (copy_rows + LOGIT_SLICE - 1) / LOGIT_SLICE;
    for (uint32_t k = 0; k < n_sl; k++) {
        uint32_t r0 = k * LOGIT_SLICE, nr = copy_rows - r0 < LOGIT_SLICE ? copy_rows - r0 : LOGIT_SLICE;
        cudaMemcpyAsync(m->h_logits + r0 * nv, m->logits + r0 * nv, nr * nv * sizeof(float), cudaMemcpyDeviceToHost,
                        s);
        cudaEventRecord(m->ev_logits[k], s);
    }
    uint32_t r = 0, k_done = 0;
    for (uint32_t i = 0; i < n_pc && !direct; i++) {
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
