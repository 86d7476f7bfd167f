/*
 * mega_cuda.c — host side of the persistent decode kernel (shaders/cuda/mega.cu,
 * option mega): decides whether a loaded model takes it, builds its device
 * layer table and buffers, and enqueues it for single-token, single-sequence
 * steps. The step around it (upload, logits copy) stays in step_cuda.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_model.h"
#include "mega.h"

/* Barrier counters of the launches (measured on the H100: docs/cuda-notes.md v8-mega). */
#define CUDA_MEGA_SLOTS 1

struct cuda_mega {
    struct cuk_mega_layer *d_layers;   /* device [n_layer] */
    float *q, *h, *partial, *att;
    unsigned *bar;                     /* [CUK_MEGA_BAR_WORDS] */
    unsigned *hcnt;                    /* [n_head] */
    int blocks;
    int failed;                        /* a launch failed: logged once, the usual path from then on */
    /* profiling (env AARMD_MEGA_PROFILE): block 0's clock at each barrier, summed per phase */
    long long *d_prof, *h_prof;
    double khz, sum[19];               /* [3 * j + 0..2]: phase j (P1..P5, logits) prologue, rest, barrier
                                        * wait (cycles); [18]: whole launch */
    long n_prof;
    const struct aarmd_host *host;
    struct cuk_mega_args args;         /* everything but the logits pointer */
};

static struct cuk_mega_mat mat_of(const struct cuda_mat *w, int64_t row0)
{
    struct cuk_mega_mat r = {NULL, 0, 0};
    size_t rb = cuk_row_bytes(w->type, w->n_in);
    r.w = (const uint8_t *)w->d + (size_t)row0 * rb;
    r.type = w->type;
    r.rb = (uint32_t)rb;
    return r;
}

/* NULL when the model fits the kernel, else why not. */
static const char *why_not(const struct aarmd_backend_model *m)
{
    const struct cuda_hparams *hp = &m->hp;
    const int E = hp->n_embd, Q = hp->q_dim, KV = hp->kv_dim, F = hp->n_ff, D = hp->head_dim;
    if (!m->ctx->prop.cooperativeLaunch)
        return "the device has no cooperative launch";
    if (hp->norm_kind != AARMD_NORM_RMS || hp->act != AARMD_ACT_SILU_GATED)
        return "not RMS norm with a SiLU-gated FFN";
    if (hp->has_pos_embd || hp->attn_softcap > 0.0f || hp->final_softcap > 0.0f)
        return "position embeddings or softcaps";
    if (D > CUK_MAX_HEAD_DIM || D < 8 || (D & (D - 1)) || hp->n_head % hp->n_head_kv || E % 32 || Q % 32 || F % 32 || KV % 2)
        return "head or row sizes";
    if (!m->output_norm || m->output_norm_b || !m->output.d || !m->token_embd.d)
        return "output norm or matrices";
    if (!cuk_mega_type_ok(m->output.type, E) || !cuk_mega_type_ok(m->token_embd.type, E))
        return "output or embedding type";
    for (int il = 0; il < hp->n_layer; il++) {
        const struct cuda_layer *L = &m->layers[il];
        if (!L->attn_norm || L->attn_norm_b || !L->ffn_norm || L->ffn_norm_b || L->q_norm || L->k_norm ||
            L->attn_post_norm || L->ffn_post_norm)
            return "a norm the kernel does not run";
        if (L->bq || L->bk || L->bv || L->bqkv || L->bo || L->b_up || L->b_down)
            return "biases";
        if (L->is_swa)
            return "sliding-window layers";
        if (L->rope.kind != AARMD_ROPE_NONE && L->rope.n_rot != D)
            return "partial rotary";
        if (memcmp(&L->rope, &m->layers[0].rope, sizeof L->rope))
            return "layers of different rotary parameters";
        const struct cuda_mat *qkv = L->wqkv.d ? &L->wqkv : &L->wq;
        const struct cuda_mat *ug = L->w_up_gate.d ? &L->w_up_gate : &L->w_gate;
        if (!qkv->d || !cuk_mega_type_ok(qkv->type, E) || !L->wo.d || !cuk_mega_type_ok(L->wo.type, Q) ||
            !ug->d || !cuk_mega_type_ok(ug->type, E) || !L->w_down.d || !cuk_mega_type_ok(L->w_down.type, F))
            return "a weight type or shape";
        if (!L->wqkv.d && (!L->wk.d || !L->wv.d || !cuk_mega_type_ok(L->wk.type, E) || !cuk_mega_type_ok(L->wv.type, E)))
            return "a weight type or shape";
        if (!L->w_up_gate.d && (!L->w_up.d || L->w_up.type != L->w_gate.type))
            return "gate and up of different types";
    }
    return NULL;
}

void cuda_mega_free(struct cuda_mega *g)
{
    if (!g)
        return;
    if (g->n_prof > 0) {
        static const char *nm[] = {"P1 qkv", "P2 attn", "P3 wo", "P4 gate/up", "P5 down", "logits"};
        double us = 1e3 / g->khz / (double)g->n_prof;
        char line[512];
        size_t o = 0;
        for (int j = 0; j < 6 && o < sizeof line; j++)
            o += (size_t)snprintf(line + o, sizeof line - o, " %s %.1f+%.1f+%.1f", nm[j], g->sum[3 * j] * us,
                                  g->sum[3 * j + 1] * us, g->sum[3 * j + 2] * us);
        cuda_log(g->host, AARMD_LOG_WARN, "cuda: mega profile, us per token (block 0, all layers: prologue+rest+"
                 "barrier wait), %ld tokens:%s; launch %.1f", g->n_prof, line, g->sum[18] * us);
    }
    free(g->h_prof);
    void *dev[] = {g->d_layers, g->q, g->h, g->partial, g->att, g->bar, g->hcnt, g->d_prof};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i])
            cudaFree(dev[i]);
    free(g);
}

int cuda_mega_new(struct aarmd_backend_model *m, struct cuda_mega **out, char *err, size_t errlen)
{
    const struct cuda_hparams *hp = &m->hp;
    const int E = hp->n_embd, Q = hp->q_dim, KV = hp->kv_dim, F = hp->n_ff, D = hp->head_dim;
    struct cuk_mega_layer *hl = NULL;
    int rc = AARMD_OK;
    *out = NULL;
    const char *why = why_not(m);
    if (why)
        return cuda_err(err, errlen, AARMD_EUNSUPPORTED, "persistent decode kernel: %s", why);
    int max_in = E > Q ? E : Q;
    if (F > max_in)
        max_in = F;
    int per_sm = cuk_mega_occupancy(max_in, hp->n_head);
    if (per_sm < 1)
        return cuda_err(err, errlen, AARMD_EUNSUPPORTED, "persistent decode kernel: no block fits an SM (%zu bytes "
                        "of shared memory)", cuk_mega_smem(max_in, hp->n_head));
    struct cuda_mega *g = calloc(1, sizeof *g);
    hl = calloc((size_t)hp->n_layer, sizeof *hl);
    if (!g || !hl) {
        rc = cuda_err(err, errlen, AARMD_ENOMEM, "out of host memory");
        goto fail;
    }
    for (int il = 0; il < hp->n_layer; il++) {
        const struct cuda_layer *L = &m->layers[il];
        struct cuk_mega_layer *o = &hl[il];
        o->attn_norm = L->attn_norm;
        o->ffn_norm = L->ffn_norm;
        if (L->wqkv.d) {
            o->q = mat_of(&L->wqkv, 0);
            o->k = mat_of(&L->wqkv, Q);
            o->v = mat_of(&L->wqkv, Q + KV);
        } else {
            o->q = mat_of(&L->wq, 0);
            o->k = mat_of(&L->wk, 0);
            o->v = mat_of(&L->wv, 0);
        }
        o->o = mat_of(&L->wo, 0);
        if (L->w_up_gate.d) {   /* rows [gate F | up F] */
            o->gate = mat_of(&L->w_up_gate, 0);
            o->up = mat_of(&L->w_up_gate, F);
        } else {
            o->gate = mat_of(&L->w_gate, 0);
            o->up = mat_of(&L->w_up, 0);
        }
        o->down = mat_of(&L->w_down, 0);
        o->rope = L->rope;
    }
    size_t part = (size_t)hp->n_head * CUK_MEGA_MAX_CHUNKS * (size_t)(D + 2) * 4;
    if (cudaMalloc((void **)&g->d_layers, (size_t)hp->n_layer * sizeof *hl) != cudaSuccess ||
        cudaMalloc((void **)&g->q, (size_t)Q * 4) != cudaSuccess || cudaMalloc((void **)&g->h, (size_t)F * 4) != cudaSuccess ||
        cudaMalloc((void **)&g->partial, part) != cudaSuccess || cudaMalloc((void **)&g->att, (size_t)Q * 4) != cudaSuccess ||
        cudaMalloc((void **)&g->hcnt, (size_t)hp->n_head * sizeof(unsigned)) != cudaSuccess ||
        cudaMalloc((void **)&g->bar, CUK_MEGA_BAR_WORDS * sizeof(unsigned)) != cudaSuccess) {
        cudaGetLastError();
        rc = cuda_err(err, errlen, AARMD_ENOMEM, "persistent decode kernel: out of device memory");
        goto fail;
    }
    if (cudaMemcpy(g->d_layers, hl, (size_t)hp->n_layer * sizeof *hl, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemset(g->bar, 0, CUK_MEGA_BAR_WORDS * sizeof(unsigned)) != cudaSuccess ||
        cudaMemset(g->hcnt, 0, (size_t)hp->n_head * sizeof(unsigned)) != cudaSuccess) {
        cudaGetLastError();
        rc = cuda_err(err, errlen, AARMD_EDEVICE, "persistent decode kernel: upload failed");
        goto fail;
    }
    g->blocks = m->ctx->prop.multiProcessorCount;   /* one block per SM (a grid barrier per phase) */
    struct cuk_mega_args *a = &g->args;
    a->layers = g->d_layers;
    a->n_layer = hp->n_layer;
    a->E = E;
    a->Q = Q;
    a->KV = KV;
    a->F = F;
    a->D = D;
    a->n_head = hp->n_head;
    a->n_kv = hp->n_head_kv;
    a->n_vocab = hp->n_vocab;
    a->eps = hp->norm_eps;
    a->attn_scale = hp->attn_scale;
    a->embd_scale = hp->embd_scale;
    a->embd = mat_of(&m->token_embd, 0);
    a->out = mat_of(&m->output, 0);
    a->out_norm = m->output_norm;
    a->x = m->x;
    a->q = g->q;
    a->h = g->h;
    a->partial = g->partial;
    a->att = g->att;
    a->hcnt = g->hcnt;
    a->bar = g->bar;
    a->max_in = max_in;
    a->nslot = CUDA_MEGA_SLOTS;
    const char *ev = getenv("AARMD_MEGA_SLOTS");   /* A/B of the barrier (docs/cuda-notes.md v8-mega) */
    if (ev && atoi(ev) >= 1 && atoi(ev) <= CUK_MEGA_MAX_SLOTS)
        a->nslot = atoi(ev);
    if ((ev = getenv("AARMD_MEGA_FLAGS")))   /* prefetch A/B switches (mega.cu FLAG_*) */
        a->flags = atoi(ev);
    free(hl);
    g->host = m->ctx->host;
    const char *pe = getenv("AARMD_MEGA_PROFILE");
    if (pe && *pe && strcmp(pe, "0")) {
        size_t n = 4 * (5 * (size_t)hp->n_layer + 2);
        int khz = 0;
        cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, m->ctx->device);
        g->khz = khz > 0 ? khz : 1;
        g->h_prof = calloc(n, sizeof *g->h_prof);
        if (!g->h_prof || cudaMalloc((void **)&g->d_prof, n * sizeof *g->h_prof) != cudaSuccess) {
            cudaGetLastError();
            free(g->h_prof);
            g->h_prof = NULL;
            g->d_prof = NULL;
        }
        a->prof = g->d_prof;
    }
    if (getenv("AARMD_MEGA_BARRIER")) {   /* the barrier's cost, logged once per load */
        static const int ns[] = {1, 4, 8, 16, 32};
        char line[256];
        size_t o = 0;
        for (size_t i = 0; i < sizeof ns / sizeof ns[0] && o < sizeof line; i++)
            o += (size_t)snprintf(line + o, sizeof line - o, " %d:%.3f", ns[i],
                                  cuk_mega_time_barrier(m->stream, g->bar, g->blocks, 2000, ns[i]));
        cuda_log(m->ctx->host, AARMD_LOG_WARN, "cuda: mega: %d blocks x %d threads, %zu B shared, %d counters; "
                 "grid barrier us by counters%s", g->blocks, CUK_MEGA_THREADS, cuk_mega_smem(max_in, hp->n_head),
                 a->nslot, line);
    }
    *out = g;
    return AARMD_OK;
fail:
    free(hl);
    cuda_mega_free(g);
    return rc;
}

int cuda_mega_decode(struct aarmd_backend_model *m, struct cuda_mega *g, int want_logits)
{
    struct cuk_mega_args a = g->args;
    a.tok = m->d_tok;
    a.pos = m->d_pos;
    a.btab = m->d_btab;
    a.tok_bt = m->d_tok_bt;
    a.kv_pool = m->kv.pool;
    a.block_halfs = m->kv.block_halfs;
    a.layer_halfs = m->kv.layer_halfs;
    a.logits = want_logits ? m->logits : NULL;
    if (g->failed)
        return -1;
    int e = cuk_mega_launch(m->stream, &a, g->blocks);
    if (e != 0) {
        cudaGetLastError();
        g->failed = 1;
        cuda_log(m->ctx->host, AARMD_LOG_WARN, "cuda: persistent decode kernel: launch of %d blocks failed (%s); "
                 "decoding without it", g->blocks, cudaGetErrorString((cudaError_t)e));
        return -1;
    }
    if (g->d_prof && cudaMemcpyAsync(g->h_prof, g->d_prof, 4 * (5 * (size_t)a.n_layer + 2) * sizeof *g->h_prof,
                                     cudaMemcpyDeviceToHost, m->stream) == cudaSuccess &&
        cudaStreamSynchronize(m->stream) == cudaSuccess) {
        /* [1] start; barrier k: [4k] arrival, [4k + 1] release; [4k + 2] end of the next phase's prologue */
        const long long *p = g->h_prof;
        int K = 5 * a.n_layer;
        for (int k = 1; k <= K; k++) {
            int j = (k - 1) % 5;
            g->sum[3 * j] += (double)(p[4 * (k - 1) + 2] - p[4 * (k - 1) + 1]);
            g->sum[3 * j + 1] += (double)(p[4 * k] - p[4 * (k - 1) + 2]);
            g->sum[3 * j + 2] += (double)(p[4 * k + 1] - p[4 * k]);
        }
        g->sum[15] += (double)(p[4 * K + 2] - p[4 * K + 1]);
        g->sum[16] += (double)(p[4 * K + 4] - p[4 * K + 2]);
        g->sum[18] += (double)(p[4 * K + 4] - p[1]);
        g->n_prof++;
    }
    return 0;
}
