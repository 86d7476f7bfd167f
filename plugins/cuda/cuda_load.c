/*
 * cuda_load.c — the CUDA backend's model load: checks a description, uploads
 * each tensor once into one device arena through a pinned staging buffer and
 * allocates the run state. The forward pass is forward_cuda.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_model.h"

#define ALIGN 256u
#define N_STAGE 2

static const char *type_name(uint32_t t)
{
    switch (t) {
    case AARMD_TYPE_F32: return "F32";
    case AARMD_TYPE_F16: return "F16";
    case AARMD_TYPE_BF16: return "BF16";
    case AARMD_TYPE_Q4_0: return "Q4_0";
    case AARMD_TYPE_Q4_1: return "Q4_1";
    case AARMD_TYPE_Q5_0: return "Q5_0";
    case AARMD_TYPE_Q5_1: return "Q5_1";
    case AARMD_TYPE_Q8_0: return "Q8_0";
    case AARMD_TYPE_Q2_K: return "Q2_K";
    case AARMD_TYPE_Q3_K: return "Q3_K";
    case AARMD_TYPE_Q4_K: return "Q4_K";
    case AARMD_TYPE_Q5_K: return "Q5_K";
    case AARMD_TYPE_Q6_K: return "Q6_K";
    default: return "unsupported";
    }
}

static const char *tname(const struct aarmd_tensor *t)
{
    return t->name ? t->name : "(unnamed)";
}

static int is_vector_role(int role)
{
    switch (role) {
    case AARMD_ROLE_OUTPUT_NORM: case AARMD_ROLE_OUTPUT_NORM_B: case AARMD_ROLE_ROPE_FREQS:
    case AARMD_ROLE_ATTN_NORM: case AARMD_ROLE_ATTN_NORM_B: case AARMD_ROLE_ATTN_Q_B:
    case AARMD_ROLE_ATTN_K_B: case AARMD_ROLE_ATTN_V_B: case AARMD_ROLE_ATTN_QKV_B:
    case AARMD_ROLE_ATTN_Q_NORM: case AARMD_ROLE_ATTN_K_NORM: case AARMD_ROLE_ATTN_OUT_B:
    case AARMD_ROLE_ATTN_POST_NORM: case AARMD_ROLE_FFN_NORM: case AARMD_ROLE_FFN_NORM_B:
    case AARMD_ROLE_FFN_UP_B: case AARMD_ROLE_FFN_DOWN_B: case AARMD_ROLE_FFN_POST_NORM:
        return 1;
    default:
        return 0;
    }
}

static size_t align_up(size_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

static int64_t n_elems(const struct aarmd_tensor *t)
{
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

static float f16_to_f32(uint16_t h)
{
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1F, m = h & 0x3FF, u;
    if (e == 0) {
        if (m == 0) {
            u = s;
        } else {
            float f = ldexpf((float)m, -24);
            memcpy(&u, &f, 4);
            u |= s;
        }
    } else if (e == 31) {
        u = s | 0x7F800000u | (m << 13);
    } else {
        u = s | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- upload through pinned staging ------------------------------------------ */

struct loader {
    struct aarmd_backend_model *m;
    const struct aarmd_model_desc *d;
    char *arena;
    size_t used, size;
    char *stage;                /* pinned, N_STAGE halves */
    size_t half;
    cudaEvent_t ev[N_STAGE];
    int cur;
    uint64_t done, total;       /* bytes uploaded / to upload, for progress */
    aarmd_progress_fn progress;
    void *progress_user;
    int cancelled;
};

static int upload(struct loader *ld, const void *src, size_t bytes, void **out, char *err, size_t errlen)
{
    size_t need = align_up(bytes);
    if (ld->used + need > ld->size)
        return cuda_err(err, errlen, AARMD_EINTERNAL, "weight arena overflow (%zu + %zu > %zu)", ld->used, need,
                        ld->size);
    char *dst = ld->arena + ld->used;
    ld->used += need;
    for (size_t off = 0; off < bytes; off += ld->half) {
        size_t n = bytes - off < ld->half ? bytes - off : ld->half;
        char *st = ld->stage + (size_t)ld->cur * ld->half;
        cudaError_t e = cudaEventSynchronize(ld->ev[ld->cur]);
        if (e == cudaSuccess) {
            memcpy(st, (const char *)src + off, n);
            e = cudaMemcpyAsync(dst + off, st, n, cudaMemcpyHostToDevice, ld->m->stream);
        }
        if (e == cudaSuccess)
            e = cudaEventRecord(ld->ev[ld->cur], ld->m->stream);
        if (e != cudaSuccess)
            return cuda_err(err, errlen, AARMD_EDEVICE, "upload: %s", cudaGetErrorString(e));
        ld->cur = (ld->cur + 1) % N_STAGE;
        ld->done += n;
        if (ld->progress && ld->progress(ld->progress_user, ld->total ? (float)ld->done / (float)ld->total : 1.0f)) {
            ld->cancelled = 1;
            return cuda_err(err, errlen, AARMD_ECANCELLED, "model load cancelled");
        }
    }
    *out = dst;
    return AARMD_OK;
}

static const struct aarmd_tensor *find(const struct aarmd_model_desc *d, int role, int layer)
{
    for (uint32_t i = 0; i < d->n_tensors; i++)
        if (d->tensors[i].role == role && d->tensors[i].layer == layer)
            return &d->tensors[i];
    return NULL;
}

/* A vector of n floats for (role, layer), converted to F32 and uploaded. */
static int get_vec(struct loader *ld, int role, int layer, int64_t n, int required, const char *what,
                   const float **out, char *err, size_t errlen)
{
    *out = NULL;
    const struct aarmd_tensor *t = find(ld->d, role, layer);
    if (!t) {
        if (required)
            return cuda_err(err, errlen, AARMD_EINVAL, "missing tensor %s (layer %d)", what, layer);
        return AARMD_OK;
    }
    if (n_elems(t) != n)
        return cuda_err(err, errlen, AARMD_EINVAL, "tensor %s has %lld elements, expected %lld", tname(t),
                        (long long)n_elems(t), (long long)n);
    size_t esz = t->type == AARMD_TYPE_F32 ? 4 : 2;
    if (t->type != AARMD_TYPE_F32 && t->type != AARMD_TYPE_F16 && t->type != AARMD_TYPE_BF16)
        return cuda_err(err, errlen, AARMD_EUNSUPPORTED, "tensor %s: type %s not supported for a vector (F32, F16, BF16)",
                        tname(t), type_name(t->type));
    if (!t->data || t->nbytes < (uint64_t)n * esz)
        return cuda_err(err, errlen, AARMD_EINVAL, "tensor %s: %llu bytes of data for %lld elements", tname(t),
                        (unsigned long long)t->nbytes, (long long)n);
    float *tmp = malloc((size_t)n * sizeof(float));
    if (!tmp)
        return cuda_err(err, errlen, AARMD_ENOMEM, "out of host memory converting %s", tname(t));
    for (int64_t i = 0; i < n; i++) {
        if (t->type == AARMD_TYPE_F32) {
            memcpy(&tmp[i], (const char *)t->data + i * 4, 4);
        } else {
            uint16_t h;
            memcpy(&h, (const char *)t->data + i * 2, 2);
            if (t->type == AARMD_TYPE_F16) {
                tmp[i] = f16_to_f32(h);
            } else {
                uint32_t u = (uint32_t)h << 16;
                memcpy(&tmp[i], &u, 4);
            }
        }
    }
    void *dp;
    int rc = upload(ld, tmp, (size_t)n * sizeof(float), &dp, err, errlen);
    free(tmp);
    if (rc == AARMD_OK)
        *out = dp;
    return rc;
}

/* A weight matrix {n_in, n_out} for (role, layer), uploaded in its type. */
static int get_mat(struct loader *ld, int role, int layer, int64_t n_in, int64_t n_out, int required,
                   const char *what, struct cuda_mat *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const struct aarmd_tensor *t = find(ld->d, role, layer);
    if (!t) {
        if (required)
            return cuda_err(err, errlen, AARMD_EINVAL, "missing tensor %s (layer %d)", what, layer);
        return AARMD_OK;
    }
    if (t->ne[0] != n_in || (n_out >= 0 && t->ne[1] != n_out) || t->ne[2] != 1 || t->ne[3] != 1)
        return cuda_err(err, errlen, AARMD_EINVAL, "tensor %s has shape {%lld, %lld}, expected {%lld, %lld}", tname(t),
                        (long long)t->ne[0], (long long)t->ne[1], (long long)n_in, (long long)n_out);
    if (!cuk_row_bytes(t->type, n_in))
        return cuda_err(err, errlen, AARMD_EUNSUPPORTED, "tensor %s has type %s, which the CUDA backend cannot run",
                        tname(t), type_name(t->type));
    if (!cuk_type_ok(t->type, n_in))
        return cuda_err(err, errlen, AARMD_EUNSUPPORTED,
                        "tensor %s: rows of %lld elements; the CUDA backend needs a multiple of %d", tname(t),
                        (long long)n_in, CUK_ITEM);
    size_t bytes = cuk_row_bytes(t->type, n_in) * (size_t)t->ne[1];
    if (!t->data || t->nbytes < bytes)
        return cuda_err(err, errlen, AARMD_EINVAL, "tensor %s: %llu bytes of data, %zu needed", tname(t),
                        (unsigned long long)t->nbytes, bytes);
    void *dp;
    int rc = upload(ld, t->data, bytes, &dp, err, errlen);
    if (rc != AARMD_OK)
        return rc;
    out->type = t->type;
    out->n_in = n_in;
    out->n_out = t->ne[1];
    out->d = dp;
    return AARMD_OK;
}

static int check_hparams(const struct aarmd_model_desc *d, char *err, size_t errlen)
{
    if (!d->n_embd || !d->n_layer || !d->n_head || !d->n_head_kv || !d->head_dim || !d->n_ff || !d->n_vocab)
        return cuda_err(err, errlen, AARMD_EINVAL,
                        "model shape has a zero (n_embd %u n_layer %u n_head %u n_head_kv %u head_dim %u n_ff %u n_vocab %u)",
                        d->n_embd, d->n_layer, d->n_head, d->n_head_kv, d->head_dim, d->n_ff, d->n_vocab);
    if (d->n_head % d->n_head_kv)
        return cuda_err(err, errlen, AARMD_EINVAL, "n_head %u is not a multiple of n_head_kv %u", d->n_head,
                        d->n_head_kv);
    if (d->head_dim > CUK_MAX_HEAD_DIM)
        return cuda_err(err, errlen, AARMD_EUNSUPPORTED, "head_dim %u exceeds the CUDA backend's %d", d->head_dim,
                        CUK_MAX_HEAD_DIM);
    if (d->rope_kind > AARMD_ROPE_NEOX)
        return cuda_err(err, errlen, AARMD_EINVAL, "unknown rope_kind %u", d->rope_kind);
    if (d->rope_kind != AARMD_ROPE_NONE && (d->n_rot == 0 || d->n_rot % 2 || d->n_rot > d->head_dim))
        return cuda_err(err, errlen, AARMD_EINVAL, "n_rot %u must be even and in [2, head_dim %u]", d->n_rot,
                        d->head_dim);
    if (d->rope_kind != AARMD_ROPE_NONE && !(d->rope_freq_base > 0.0f))
        return cuda_err(err, errlen, AARMD_EINVAL, "rope_freq_base %g must be > 0", (double)d->rope_freq_base);
    if (d->rope_scaling > AARMD_ROPE_SCALING_LLAMA3)
        return cuda_err(err, errlen, AARMD_EUNSUPPORTED, "unknown rope_scaling %u", d->rope_scaling);
    if (d->norm_kind > AARMD_NORM_LAYER)
        return cuda_err(err, errlen, AARMD_EINVAL, "unknown norm_kind %u", d->norm_kind);
    if (d->act > AARMD_ACT_GELU)
        return cuda_err(err, errlen, AARMD_EINVAL, "unknown activation %u", d->act);
    return AARMD_OK;
}

/* ---- rotary parameters (as the CPU backend's ops.c) ------------------------- */

static float yarn_corr_dim(int n_rot, uint32_t n_ctx_orig, float beta, float base)
{
    return (float)n_rot * logf((float)n_ctx_orig / (beta * 2.0f * (float)M_PI)) / (2.0f * logf(base));
}

static void rope_init(struct cuk_rope *r, const struct aarmd_model_desc *d, float base, const float *ff)
{
    memset(r, 0, sizeof *r);
    r->kind = (int)d->rope_kind;
    r->n_rot = (int)d->n_rot;
    r->freq_base = base;
    r->freq_scale = 1.0f;
    r->attn_factor = 1.0f;
    r->freq_factors = ff;
    if ((d->rope_scaling == AARMD_ROPE_SCALING_LINEAR || d->rope_scaling == AARMD_ROPE_SCALING_YARN) &&
        d->rope_scale > 0.0f)
        r->freq_scale = 1.0f / d->rope_scale;
    if (d->rope_scaling == AARMD_ROPE_SCALING_YARN) {
        r->ext_factor = d->yarn_ext_factor;
        r->attn_factor = d->yarn_attn_factor > 0.0f ? d->yarn_attn_factor : 1.0f;
        uint32_t orig = d->rope_orig_ctx ? d->rope_orig_ctx : d->n_ctx_train;
        float lo = floorf(yarn_corr_dim(r->n_rot, orig, d->yarn_beta_fast, base));
        float hi = ceilf(yarn_corr_dim(r->n_rot, orig, d->yarn_beta_slow, base));
        r->corr_low = lo > 0.0f ? lo : 0.0f;
        r->corr_high = hi < (float)(r->n_rot - 1) ? hi : (float)(r->n_rot - 1);
    }
}

static int rope_same(const struct cuk_rope *a, const struct cuk_rope *b)
{
    return a->kind == b->kind && a->n_rot == b->n_rot && a->freq_base == b->freq_base &&
           a->freq_scale == b->freq_scale && a->attn_factor == b->attn_factor && a->ext_factor == b->ext_factor &&
           a->corr_low == b->corr_low && a->corr_high == b->corr_high && a->freq_factors == b->freq_factors;
}

/* The layers' (cos, sin) tables of positions < CUDA_ROPE_TAB_POS (cuk_rope.cs), one per distinct
 * configuration, CUDA_ROPE_TABS at most (the layers of any further one compute theirs per use). */
static int rope_tables(struct aarmd_backend_model *m, char *err, size_t errlen)
{
    int n = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        struct cuk_rope *r = &m->layers[il].rope;
        for (int j = 0; j < il && r->kind != AARMD_ROPE_NONE && !r->cs; j++)
            if (m->layers[j].rope.cs && rope_same(&m->layers[j].rope, r)) {
                r->cs = m->layers[j].rope.cs;
                r->n_cs = m->layers[j].rope.n_cs;
            }
        if (r->kind == AARMD_ROPE_NONE || r->cs || n == CUDA_ROPE_TABS)
            continue;
        size_t bytes = (size_t)CUDA_ROPE_TAB_POS * (size_t)(r->n_rot / 2) * 2 * sizeof(float);
        if (cudaMalloc((void **)&m->rope_tab[n], bytes) != cudaSuccess) {
            size_t fr = 0, tot = 0;
            m->rope_tab[n] = NULL;
            cudaGetLastError();
            cudaMemGetInfo(&fr, &tot);
            return cuda_err(err, errlen, AARMD_ENOMEM, "rotary table needs %zu bytes of device memory, %zu free", bytes,
                            fr);
        }
        cuk_rope_table(m->stream, r, CUDA_ROPE_TAB_POS, m->rope_tab[n]);
        r->cs = m->rope_tab[n++];
        r->n_cs = CUDA_ROPE_TAB_POS;
        m->scratch_bytes += bytes;
    }
    return AARMD_OK;
}

static void llama3_factors(const struct aarmd_model_desc *d, float *out)
{
    int half = (int)d->n_rot / 2;
    double factor = d->rope_scale > 0.0f ? d->rope_scale : 1.0;
    double lo_f = d->llama3_low_freq_factor > 0.0f ? d->llama3_low_freq_factor : 1.0;
    double hi_f = d->llama3_high_freq_factor > 0.0f ? d->llama3_high_freq_factor : 4.0;
    double orig = d->rope_orig_ctx ? d->rope_orig_ctx : 8192;
    double low_wavelen = orig / lo_f, high_wavelen = orig / hi_f;
    for (int i = 0; i < half; i++) {
        double freq = pow(d->rope_freq_base, -2.0 * i / (double)d->n_rot);
        double wavelen = 2.0 * M_PI / freq;
        double f;
        if (wavelen < high_wavelen)
            f = 1.0;
        else if (wavelen > low_wavelen)
            f = factor;
        else {
            double smooth = (orig / wavelen - lo_f) / (hi_f - lo_f);
            f = 1.0 / ((1.0 - smooth) / factor + smooth);
        }
        out[i] = (float)f;
    }
}

/* ---- layers ------------------------------------------------------------------- */

/* b starts where a ends, in the same type and row length. */
static int adjacent(const struct cuda_mat *a, const struct cuda_mat *b)
{
    return a->d && b->d && a->type == b->type && a->n_in == b->n_in &&
           (const char *)a->d + cuk_row_bytes(a->type, a->n_in) * (size_t)a->n_out == (const char *)b->d;
}

static int load_layer(struct loader *ld, int il, char *err, size_t errlen)
{
    struct aarmd_backend_model *m = ld->m;
    const struct aarmd_model_desc *d = ld->d;
    const struct cuda_hparams *hp = &m->hp;
    struct cuda_layer *L = &m->layers[il];
    int64_t E = hp->n_embd, Q = hp->q_dim, KV = hp->kv_dim, F = hp->n_ff;
    int rc;
#define TRY(x) do { if ((rc = (x)) != AARMD_OK) return rc; } while (0)
    TRY(get_vec(ld, AARMD_ROLE_ATTN_NORM, il, E, 1, "attn_norm", &L->attn_norm, err, errlen));
    TRY(get_vec(ld, AARMD_ROLE_ATTN_NORM_B, il, E, 0, "attn_norm_b", &L->attn_norm_b, err, errlen));
    TRY(get_mat(ld, AARMD_ROLE_ATTN_QKV, il, E, Q + 2 * KV, 0, "attn_qkv", &L->wqkv, err, errlen));
    if (L->wqkv.d) {
        TRY(get_vec(ld, AARMD_ROLE_ATTN_QKV_B, il, Q + 2 * KV, 0, "attn_qkv_b", &L->bqkv, err, errlen));
    } else {
        TRY(get_mat(ld, AARMD_ROLE_ATTN_Q, il, E, Q, 1, "attn_q", &L->wq, err, errlen));
        TRY(get_mat(ld, AARMD_ROLE_ATTN_K, il, E, KV, 1, "attn_k", &L->wk, err, errlen));
        TRY(get_mat(ld, AARMD_ROLE_ATTN_V, il, E, KV, 1, "attn_v", &L->wv, err, errlen));
        TRY(get_vec(ld, AARMD_ROLE_ATTN_Q_B, il, Q, 0, "attn_q_b", &L->bq, err, errlen));
        TRY(get_vec(ld, AARMD_ROLE_ATTN_K_B, il, KV, 0, "attn_k_b", &L->bk, err, errlen));
        TRY(get_vec(ld, AARMD_ROLE_ATTN_V_B, il, KV, 0, "attn_v_b", &L->bv, err, errlen));
    }
    TRY(get_vec(ld, AARMD_ROLE_ATTN_Q_NORM, il, hp->head_dim, 0, "attn_q_norm", &L->q_norm, err, errlen));
    TRY(get_vec(ld, AARMD_ROLE_ATTN_K_NORM, il, hp->head_dim, 0, "attn_k_norm", &L->k_norm, err, errlen));
    TRY(get_mat(ld, AARMD_ROLE_ATTN_OUT, il, Q, E, 1, "attn_output", &L->wo, err, errlen));
    TRY(get_vec(ld, AARMD_ROLE_ATTN_OUT_B, il, E, 0, "attn_output_b", &L->bo, err, errlen));
    TRY(get_vec(ld, AARMD_ROLE_ATTN_POST_NORM, il, E, 0, "attn_post_norm", &L->attn_post_norm, err, errlen));
    TRY(get_vec(ld, AARMD_ROLE_FFN_NORM, il, E, 1, "ffn_norm", &L->ffn_norm, err, errlen));
    TRY(get_vec(ld, AARMD_ROLE_FFN_NORM_B, il, E, 0, "ffn_norm_b", &L->ffn_norm_b, err, errlen));
    if (hp->act == AARMD_ACT_GELU) {
        TRY(get_mat(ld, AARMD_ROLE_FFN_UP, il, E, F, 1, "ffn_up", &L->w_up, err, errlen));
    } else {
        TRY(get_mat(ld, AARMD_ROLE_FFN_UP_GATE, il, E, 2 * F, 0, "ffn_up_gate", &L->w_up_gate, err, errlen));
        if (!L->w_up_gate.d) {
            TRY(get_mat(ld, AARMD_ROLE_FFN_GATE, il, E, F, 1, "ffn_gate", &L->w_gate, err, errlen));
            TRY(get_mat(ld, AARMD_ROLE_FFN_UP, il, E, F, 1, "ffn_up", &L->w_up, err, errlen));
        }
    }
    TRY(get_vec(ld, AARMD_ROLE_FFN_UP_B, il, F, 0, "ffn_up_b", &L->b_up, err, errlen));
    TRY(get_mat(ld, AARMD_ROLE_FFN_DOWN, il, F, E, 1, "ffn_down", &L->w_down, err, errlen));
    TRY(get_vec(ld, AARMD_ROLE_FFN_DOWN_B, il, E, 0, "ffn_down_b", &L->b_down, err, errlen));
    TRY(get_vec(ld, AARMD_ROLE_FFN_POST_NORM, il, E, 0, "ffn_post_norm", &L->ffn_post_norm, err, errlen));
#undef TRY
    /* q,k,v (gate,up) uploaded back to back in one type and without biases run as one
     * fused matrix: one launch instead of three (two) */
    if (!L->wqkv.d && !L->bq && !L->bk && !L->bv && adjacent(&L->wq, &L->wk) && adjacent(&L->wk, &L->wv)) {
        L->wqkv = L->wq;
        L->wqkv.n_out = Q + 2 * KV;
    }
    if (hp->act != AARMD_ACT_GELU && !L->w_up_gate.d && !L->b_up && adjacent(&L->w_gate, &L->w_up)) {
        L->w_up_gate = L->w_gate;
        L->w_up_gate.n_out = 2 * F;
    }
    L->is_swa = d->layer_is_swa && d->layer_is_swa[il] && d->sliding_window > 0;
    float base = L->is_swa && d->rope_freq_base_swa > 0.0f ? d->rope_freq_base_swa : d->rope_freq_base;
    rope_init(&L->rope, d, base, m->rope_freqs);
    return AARMD_OK;
}

/* ---- run state ------------------------------------------------------------------ */

static size_t mat_elems(const struct cuda_mat *w)
{
    return w->d ? (size_t)(w->n_in * w->n_out) : 0;
}

static int alloc_state(struct aarmd_backend_model *m, char *err, size_t errlen)
{
    const struct cuda_hparams *hp = &m->hp;
    size_t T = m->max_tok, max_in = (size_t)hp->n_embd;
    /* the rows of mmq_k (forward_cuda.c k_for) when the forward may send it a step */
    size_t TK = cuk_mmqk_min_tok() > (int)T ? 0 : T < CUK_MMQK_MAX_TOK ? T : CUK_MMQK_MAX_TOK;
    if ((size_t)hp->q_dim > max_in)
        max_in = (size_t)hp->q_dim;
    if ((size_t)hp->n_ff > max_in)
        max_in = (size_t)hp->n_ff;
    size_t w16 = 0;
    for (int il = 0; il < hp->n_layer; il++) {
        const struct cuda_layer *L = &m->layers[il];
        const struct cuda_mat *ws[] = {&L->wq, &L->wk, &L->wv, &L->wqkv, &L->wo, &L->w_gate, &L->w_up, &L->w_up_gate,
                                       &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            if (mat_elems(ws[i]) > w16)
                w16 = mat_elems(ws[i]);
    }
    int nch = CUK_ATTN_MAX_CHUNKS;
    size_t L = CUDA_MAX_LOGIT_ROWS, G = T < L ? T : L;   /* logit rows; tokens of the largest graph */
    m->partial_floats = T * (size_t)hp->n_head * (size_t)(hp->head_dim + 2) * 4;   /* prefill uses <= 4 chunks */
    size_t dec = G * (size_t)hp->n_head * (size_t)(hp->head_dim + 2) * (size_t)nch;  /* graphs: all chunks */
    if (dec > m->partial_floats)
        m->partial_floats = dec;
    m->w16_elems = m->blas ? w16 : 0;
    struct { void **p; size_t bytes; } a[] = {
        {(void **)&m->x, T * hp->n_embd * 4},       {(void **)&m->xb, T * hp->n_embd * 4},
        {(void **)&m->xb2, T * hp->n_embd * 4},     {(void **)&m->q, T * hp->q_dim * 4},
        {(void **)&m->k, T * hp->kv_dim * 4},       {(void **)&m->v, T * hp->kv_dim * 4},
        {(void **)&m->qkv, T * (hp->q_dim + 2 * hp->kv_dim) * 4},
        {(void **)&m->att, T * hp->q_dim * 4},      {(void **)&m->hb, T * 2 * hp->n_ff * 4},
        {(void **)&m->hb2, T * hp->n_ff * 4},       {(void **)&m->logits, L * (size_t)hp->n_vocab * 4},
        {(void **)&m->xl, L * hp->n_embd * 4},       {(void **)&m->partial, m->partial_floats * 4},
        {&m->xq, (size_t)CUDA_Q8_ROWS * max_in},     {(void **)&m->xd, (size_t)CUDA_Q8_ROWS * max_in / 32 * 4},
        {&m->xqk, TK * max_in},                     {(void **)&m->xdk, TK * max_in / 32 * 4},
        {&m->w16, m->w16_elems * 2},                {&m->a16, m->blas ? T * max_in * 2 : 0},
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++)
        total += a[i].bytes;
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) {
        if (!a[i].bytes)
            continue;
        if (cudaMalloc(a[i].p, a[i].bytes) != cudaSuccess) {
            size_t fr = 0, tot = 0;
            cudaGetLastError();
            cudaMemGetInfo(&fr, &tot);
            return cuda_err(err, errlen, AARMD_ENOMEM,
                            "run state for %u tokens needs %zu bytes of device memory, %zu free", m->max_tok, total, fr);
        }
    }
    m->scratch_bytes = total;
    if (cudaHostAlloc((void **)&m->h_logits, L * (size_t)hp->n_vocab * 4, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        return cuda_err(err, errlen, AARMD_ENOMEM, "out of pinned host memory");
    }
    for (size_t i = 0; i < L; i++)
        if (cudaEventCreateWithFlags(&m->ev_logits[i], cudaEventDisableTiming) != cudaSuccess) {
            m->ev_logits[i] = NULL;
            cudaGetLastError();
            return cuda_err(err, errlen, AARMD_EDEVICE, "cudaEventCreate failed");
        }
    return AARMD_OK;
}

/* The model's matrices (NULL entries where absent), for walks over all of them. */
static size_t all_mats(struct aarmd_backend_model *m, struct cuda_mat **out, size_t cap)
{
    size_t n = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        struct cuda_layer *L = &m->layers[il];
        struct cuda_mat *ws[] = {&L->wq, &L->wk, &L->wv, &L->wqkv, &L->wo, &L->w_gate, &L->w_up, &L->w_up_gate,
                                 &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            if (ws[i]->d && n < cap)
                out[n++] = ws[i];
    }
    if (m->output.d && n < cap)
        out[n++] = &m->output;
    return n;
}

/*
 * Option wf16: F16 copies of every non-F16 matrix, dequantized once, so that
 * GEMMs of many tokens (prefill, decode of >= 16 streams) skip the per-call
 * dequantization. Costs 2 bytes per weight; skipped with a notice when the
 * device lacks the memory.
 */
static void alloc_wf16(struct aarmd_backend_model *m, int only_if_roomy)
{
    size_t cap = (size_t)m->hp.n_layer * 9 + 1, total = 0;
    struct cuda_mat **ms = malloc(cap * sizeof *ms);
    if (!ms)
        return;
    size_t n = all_mats(m, ms, cap);
    for (size_t i = 0; i < n; i++)
        if (ms[i]->type != AARMD_TYPE_F16)
            total += align_up((size_t)(ms[i]->n_in * ms[i]->n_out) * 2);
    size_t fr = 0, tot = 0;
    if (only_if_roomy && (cudaMemGetInfo(&fr, &tot) != cudaSuccess || total > fr / 2)) {
        cuda_log(m->ctx->host, AARMD_LOG_INFO, "cuda: wf16=auto: %zu bytes of F16 weights exceed half the %zu free; "
                 "not kept", total, fr);
        free(ms);
        return;
    }
    if (total && cudaMalloc(&m->arena16, total) != cudaSuccess) {
        cudaGetLastError();
        m->arena16 = NULL;
        cuda_log(m->ctx->host, AARMD_LOG_WARN, "cuda: wf16: no room for %zu bytes of F16 weights; not used", total);
        free(ms);
        return;
    }
    size_t off = 0;
    for (size_t i = 0; i < n && total; i++) {
        struct cuda_mat *w = ms[i];
        if (w->type == AARMD_TYPE_F16)
            continue;
        void *dst = (char *)m->arena16 + off;
        cuk_dequant_f16(m->stream, w->type, w->d, w->n_in, w->n_out, dst);
        w->d16 = dst;
        off += align_up((size_t)(w->n_in * w->n_out) * 2);
    }
    m->wf16_bytes = total;
    free(ms);
}

/* ---- the model ----------------------------------------------------------------- */

int cuda_model_new(struct aarmd_backend_ctx *ctx, const struct aarmd_model_desc *d, aarmd_progress_fn progress,
                   void *progress_user, size_t stage_bytes, struct aarmd_backend_model **out, char *err,
                   size_t errlen)
{
    *out = NULL;
    int rc;
    if (!d->tensors || d->n_tensors == 0)
        return cuda_err(err, errlen, AARMD_EINVAL, "model has no weights (vocab-only file?)");
    if ((rc = check_hparams(d, err, errlen)) != AARMD_OK)
        return rc;

    size_t arena = 0;
    for (uint32_t i = 0; i < d->n_tensors; i++) {
        const struct aarmd_tensor *t = &d->tensors[i];
        if (is_vector_role(t->role))
            arena += align_up((size_t)n_elems(t) * sizeof(float));
        else
            arena += align_up((size_t)t->nbytes);
    }
    arena += align_up((d->n_rot / 2 + 1) * sizeof(float));

    struct aarmd_backend_model *m = calloc(1, sizeof *m);
    struct loader ld;
    memset(&ld, 0, sizeof ld);
    if (!m)
        return cuda_err(err, errlen, AARMD_ENOMEM, "out of memory");
    m->ctx = ctx;
    m->max_tok = ctx->batch;
    m->use_q8 = ctx->use_q8;
    struct cuda_hparams *hp = &m->hp;
    hp->n_embd = (int)d->n_embd;
    hp->n_layer = (int)d->n_layer;
    hp->n_head = (int)d->n_head;
    hp->n_head_kv = (int)d->n_head_kv;
    hp->head_dim = (int)d->head_dim;
    hp->n_ff = (int)d->n_ff;
    hp->n_vocab = (int)d->n_vocab;
    hp->q_dim = hp->n_head * hp->head_dim;
    hp->kv_dim = hp->n_head_kv * hp->head_dim;
    hp->n_ctx_train = d->n_ctx_train;
    hp->norm_kind = (int)d->norm_kind;
    hp->norm_eps = d->norm_eps > 0.0f ? d->norm_eps : 1e-5f;
    hp->act = (int)d->act;
    hp->attn_scale = d->attn_scale > 0.0f ? d->attn_scale : 1.0f / sqrtf((float)d->head_dim);
    hp->attn_softcap = d->attn_logit_softcap;
    hp->final_softcap = d->final_logit_softcap;
    hp->sliding_window = (int32_t)d->sliding_window;
    hp->embd_scale = d->embd_scale > 0.0f ? d->embd_scale : 1.0f;

    m->layers = calloc(d->n_layer, sizeof *m->layers);
    if (!m->layers) {
        rc = cuda_err(err, errlen, AARMD_ENOMEM, "out of memory");
        goto fail;
    }
    cudaError_t e = cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        rc = cuda_err(err, errlen, AARMD_EDEVICE, "cudaStreamCreate: %s", cudaGetErrorString(e));
        goto fail;
    }
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    if (cudaMalloc(&m->arena, arena) != cudaSuccess) {
        cudaGetLastError();
        rc = cuda_err(err, errlen, AARMD_ENOMEM, "weights need %zu bytes of device memory, %zu free of %zu", arena, fr,
                      tot);
        goto fail;
    }
    m->weight_bytes = arena;

    ld.m = m;
    ld.d = d;
    ld.arena = m->arena;
    ld.size = arena;
    ld.half = stage_bytes / N_STAGE;
    ld.progress = progress;
    ld.progress_user = progress_user;
    for (uint32_t i = 0; i < d->n_tensors; i++)
        ld.total += d->tensors[i].nbytes;
    if (cudaHostAlloc((void **)&ld.stage, stage_bytes, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        rc = cuda_err(err, errlen, AARMD_ENOMEM, "out of pinned host memory (%zu bytes of staging)", stage_bytes);
        goto fail;
    }
    for (int i = 0; i < N_STAGE; i++)
        cudaEventCreateWithFlags(&ld.ev[i], cudaEventDisableTiming);

    int64_t E = hp->n_embd;
#define TRY(x) do { if ((rc = (x)) != AARMD_OK) goto fail; } while (0)
    TRY(get_mat(&ld, AARMD_ROLE_TOKEN_EMBD, -1, E, hp->n_vocab, 1, "token_embd", &m->token_embd, err, errlen));
    if (d->tied_embeddings)
        m->output = m->token_embd;
    else
        TRY(get_mat(&ld, AARMD_ROLE_OUTPUT, -1, E, hp->n_vocab, 1, "output", &m->output, err, errlen));
    if (find(d, AARMD_ROLE_POS_EMBD, -1)) {
        TRY(get_mat(&ld, AARMD_ROLE_POS_EMBD, -1, E, -1, 1, "pos_embd", &m->pos_embd, err, errlen));
        hp->has_pos_embd = 1;
        hp->n_ctx_train = (uint32_t)m->pos_embd.n_out;
    }
    TRY(get_vec(&ld, AARMD_ROLE_OUTPUT_NORM, -1, E, 1, "output_norm", &m->output_norm, err, errlen));
    TRY(get_vec(&ld, AARMD_ROLE_OUTPUT_NORM_B, -1, E, 0, "output_norm_b", &m->output_norm_b, err, errlen));
    if (d->rope_kind != AARMD_ROPE_NONE)
        TRY(get_vec(&ld, AARMD_ROLE_ROPE_FREQS, -1, d->n_rot / 2, 0, "rope_freqs", &m->rope_freqs, err, errlen));
    if (!m->rope_freqs && d->rope_kind != AARMD_ROPE_NONE && d->rope_scaling == AARMD_ROPE_SCALING_LLAMA3) {
        float ff[CUK_MAX_HEAD_DIM / 2 + 1];
        void *dp;
        llama3_factors(d, ff);
        TRY(upload(&ld, ff, (d->n_rot / 2) * sizeof(float), &dp, err, errlen));
        m->rope_freqs = dp;
    }
    for (int il = 0; il < hp->n_layer; il++)
        TRY(load_layer(&ld, il, err, errlen));
#undef TRY
    if ((e = cudaStreamSynchronize(m->stream)) != cudaSuccess) {
        rc = cuda_err(err, errlen, AARMD_EDEVICE, "upload: %s", cudaGetErrorString(e));
        goto fail;
    }
    if (ctx->use_cublas)
        m->blas = cuda_blas_new(ctx->host, m->stream);
    if ((rc = alloc_state(m, err, errlen)) != AARMD_OK || (rc = rope_tables(m, err, errlen)) != AARMD_OK)
        goto fail;
    if (ctx->use_wf16 && m->blas)
        alloc_wf16(m, ctx->use_wf16 == CUDA_WF16_AUTO);
    /* quantized batches: Q8 kernels up to q8rows tokens, cuBLAS beyond (from GEMM_MIN_TOK) */
    m->q8_gemm_max = ctx->q8_rows;   /* CUDA_Q8_ROWS_AUTO: per matrix (forward_cuda.c) */
    uint64_t kv_bytes = ctx->kv_mb << 20;
    if (!kv_bytes) {   /* default: a share of what is free now, headroom left for cuBLAS and graphs */
        cudaMemGetInfo(&fr, &tot);
        kv_bytes = (uint64_t)((double)fr * CUDA_KV_FRACTION);
    }
    if ((rc = cuda_kv_new(m, kv_bytes, err, errlen)) != AARMD_OK ||
        (rc = cuda_step_bufs(m, (size_t)m->kv.n_blocks + 2 * (size_t)m->max_tok + CUDA_MAX_LOGIT_ROWS, err,
                             errlen)) != AARMD_OK)
        goto fail;
    for (int i = 0; i < N_STAGE; i++)
        cudaEventDestroy(ld.ev[i]);
    cudaFreeHost(ld.stage);
    cuda_log(ctx->host, AARMD_LOG_INFO,
             "cuda: model %s loaded: %.1f MiB weights (+%.1f MiB F16 copies), %.1f MiB run state, KV pool %u "
             "blocks of %u tokens (%.1f MiB), cuBLAS %s",
             d->name ? d->name : "?", (double)m->weight_bytes / 1048576.0, (double)m->wf16_bytes / 1048576.0,
             (double)m->scratch_bytes / 1048576.0,
             m->kv.n_blocks, m->kv.bt, (double)m->kv.n_blocks * (double)m->kv.block_bytes / 1048576.0,
             m->blas ? "yes" : "no");
    *out = m;
    return AARMD_OK;
fail:
    if (ld.stage) {
        cudaStreamSynchronize(m->stream);
        for (int i = 0; i < N_STAGE; i++)
            if (ld.ev[i])
                cudaEventDestroy(ld.ev[i]);
        cudaFreeHost(ld.stage);
    }
    cuda_model_free(m);
    return rc;
}

void cuda_model_free(struct aarmd_backend_model *m)
{
    if (!m)
        return;
    if (m->stream)
        cudaStreamSynchronize(m->stream);
    cuda_graphs_free(m);
    cuda_kv_free(&m->kv);
    for (size_t i = 0; i < CUDA_MAX_LOGIT_ROWS; i++)
        if (m->ev_logits[i])
            cudaEventDestroy(m->ev_logits[i]);
    void *dev[] = {m->x,      m->xb,      m->xb2,     m->q,       m->k,      m->v,     m->qkv,
                   m->att,    m->hb,      m->hb2,     m->logits,  m->xl,     m->partial, m->d_step,
                   m->w16,    m->a16,     m->xq,      m->xd,      m->arena,  m->arena16};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i])
            cudaFree(dev[i]);
    for (int i = 0; i < CUDA_ROPE_TABS; i++)
        if (m->rope_tab[i])
            cudaFree(m->rope_tab[i]);
    if (m->h_step)
        cudaFreeHost(m->h_step);
    if (m->h_logits)
        cudaFreeHost(m->h_logits);
    cuda_logits_free_all(m);
    cuda_blas_free(m->blas);
    if (m->stream)
        cudaStreamDestroy(m->stream);
    free(m->layers);
    free(m);
}
