/*
 * forward.c — the CPU backend's decoder forward pass, laid out like llama2.c's
 * run.c: hyperparameters, weights and run state in separate structs, one
 * function per primitive (ops.c, kernels.c), forward() top to bottom. It does
 * not validate steps or split them into chunks (backend_cpu.c does).
 */
#include "forward.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* Tokens whose logits are computed by one output matmul. */
#define LOGIT_GROUP 8
/* Attention below this many multiply-adds runs on the calling thread. */
#define ATTN_INLINE_WORK (1u << 20)

/* ---- weights: pointers into the mmap (vectors possibly converted) --------- */

struct cpu_layer {
    const float *attn_norm, *attn_norm_b;       /* [n_embd]; _b NULL unless LayerNorm with bias */
    const struct aarmd_tensor *wq, *wk, *wv;    /* {n_embd, q_dim}, {n_embd, kv_dim} x2; NULL when fused */
    const struct aarmd_tensor *wqkv;            /* {n_embd, q_dim + 2 kv_dim}; NULL when separate */
    const float *bq, *bk, *bv;                  /* [q_dim], [kv_dim] x2, or NULL */
    const float *bqkv;                          /* [q_dim + 2 kv_dim] or NULL */
    const float *q_norm, *k_norm;               /* [head_dim] or NULL (qwen3, gemma3) */
    const struct aarmd_tensor *wo;              /* {q_dim, n_embd} */
    const float *bo;                            /* [n_embd] or NULL */
    const float *attn_post_norm;                /* [n_embd] or NULL (gemma3) */
    const float *ffn_norm, *ffn_norm_b;         /* [n_embd] */
    const struct aarmd_tensor *w_gate, *w_up;   /* {n_embd, n_ff}; w_gate NULL for ACT_GELU */
    const struct aarmd_tensor *w_up_gate;       /* {n_embd, 2 n_ff}: gate rows then up rows (phi3) */
    const float *b_up;                          /* [n_ff] or NULL */
    const struct aarmd_tensor *w_down;          /* {n_ff, n_embd} */
    const float *b_down;                        /* [n_embd] or NULL */
    const float *ffn_post_norm;                 /* [n_embd] or NULL (gemma3) */
    int is_swa;                                 /* sliding-window layer */
    struct cpu_rope rope;                       /* this layer's rotary parameters */
};

struct cpu_weights {
    struct aarmd_tensor *tensors;               /* model-owned copies of the descriptions */
    uint32_t n_tensors;
    const struct aarmd_tensor *token_embd;      /* {n_embd, n_vocab} */
    const struct aarmd_tensor *pos_embd;        /* {n_embd, n_ctx_train} or NULL (gpt2) */
    const struct aarmd_tensor *output;          /* {n_embd, n_vocab}; token_embd when tied */
    const float *output_norm, *output_norm_b;   /* [n_embd] */
    const float *rope_freqs;                    /* [n_rot/2] or NULL (llama3) */
    struct cpu_layer *layers;                   /* [n_layer] */
    float *vecs;                                /* owned F32 copies of non-F32 vectors */
    float *llama3_ff;                           /* owned [n_rot/2] llama3 factors when no rope_freqs */
    size_t n_vecs, cap_vecs;                    /* floats used / allocated in vecs */
};

/* ---- run state: scratch for up to max_tok tokens, allocated once --------- */

struct cpu_run_state {
    uint32_t max_tok;
    float *x;       /* [max_tok][n_embd] residual stream */
    float *xb;      /* [max_tok][n_embd] normed input of a sublayer */
    float *xb2;     /* [max_tok][n_embd] output of a sublayer */
    float *q;       /* [max_tok][q_dim] */
    float *k, *v;   /* [max_tok][kv_dim] */
    float *qkv;     /* [max_tok][q_dim + 2 kv_dim] fused projection (phi3) */
    float *att;     /* [max_tok][q_dim] attention output, heads concatenated */
    float *hb;      /* [max_tok][2 n_ff] ffn gate (or gate|up when fused) */
    float *hb2;     /* [max_tok][n_ff] ffn up */
    float *cs;      /* [n_rot] cos/sin pairs of one position */
    float *lx;      /* [LOGIT_GROUP][n_embd] final hidden of tokens wanting logits */
    float *lo;      /* [LOGIT_GROUP][n_vocab] their logits */
    uint32_t lidx[LOGIT_GROUP]; /* token index of each lx row */
    void *mm;       /* matmul scratch: quantized activations */
    size_t mm_bytes;
};

struct cpu_model {
    struct cpu_hparams hp;
    struct cpu_weights w;
    struct cpu_run_state s;
    struct cpu_pool *pool;      /* borrowed from the context */
    enum cpu_simd simd;
    uint64_t weight_bytes;
    uint64_t scratch_bytes;
};

/* ---- loading -------------------------------------------------------------- */

static int fail_msg(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static const char *type_name(uint32_t t)
{
    static const char *const names[] = {
        [AARMD_TYPE_F32] = "F32",     [AARMD_TYPE_F16] = "F16",       [AARMD_TYPE_Q4_0] = "Q4_0",
        [AARMD_TYPE_Q4_1] = "Q4_1",   [AARMD_TYPE_Q5_0] = "Q5_0",     [AARMD_TYPE_Q5_1] = "Q5_1",
        [AARMD_TYPE_Q8_0] = "Q8_0",   [AARMD_TYPE_Q8_1] = "Q8_1",     [AARMD_TYPE_Q2_K] = "Q2_K",
        [AARMD_TYPE_Q3_K] = "Q3_K",   [AARMD_TYPE_Q4_K] = "Q4_K",     [AARMD_TYPE_Q5_K] = "Q5_K",
        [AARMD_TYPE_Q6_K] = "Q6_K",   [AARMD_TYPE_Q8_K] = "Q8_K",     [AARMD_TYPE_IQ2_XXS] = "IQ2_XXS",
        [AARMD_TYPE_IQ2_XS] = "IQ2_XS", [AARMD_TYPE_IQ3_XXS] = "IQ3_XXS", [AARMD_TYPE_IQ1_S] = "IQ1_S",
        [AARMD_TYPE_IQ4_NL] = "IQ4_NL", [AARMD_TYPE_IQ3_S] = "IQ3_S", [AARMD_TYPE_IQ2_S] = "IQ2_S",
        [AARMD_TYPE_IQ4_XS] = "IQ4_XS", [AARMD_TYPE_I8] = "I8",       [AARMD_TYPE_I16] = "I16",
        [AARMD_TYPE_I32] = "I32",     [AARMD_TYPE_I64] = "I64",       [AARMD_TYPE_F64] = "F64",
        [AARMD_TYPE_IQ1_M] = "IQ1_M", [AARMD_TYPE_BF16] = "BF16",     [AARMD_TYPE_TQ1_0] = "TQ1_0",
        [AARMD_TYPE_TQ2_0] = "TQ2_0", [AARMD_TYPE_MXFP4] = "MXFP4",
    };
    if (t < sizeof names / sizeof names[0] && names[t])
        return names[t];
    return "unknown";
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

static const struct aarmd_tensor *find(const struct cpu_model *m, int role, int layer)
{
    for (uint32_t i = 0; i < m->w.n_tensors; i++)
        if (m->w.tensors[i].role == role && m->w.tensors[i].layer == layer)
            return &m->w.tensors[i];
    return NULL;
}

/* A vector of n floats for (role, layer): in place when F32, else converted. */
static int get_vec(struct cpu_model *m, int role, int layer, int64_t n, int required, const char *what,
                   const float **out, char *err, size_t errlen)
{
    *out = NULL;
    const struct aarmd_tensor *t = find(m, role, layer);
    if (!t) {
        if (required)
            return fail_msg(err, errlen, AARMD_EINVAL, "missing tensor %s (layer %d)", what, layer);
        return AARMD_OK;
    }
    int64_t count = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    if (count != n)
        return fail_msg(err, errlen, AARMD_EINVAL, "tensor %s has %lld elements, expected %lld", tname(t),
                        (long long)count, (long long)n);
    if (t->type == AARMD_TYPE_F32) {
        if ((uintptr_t)t->data % sizeof(float) == 0) {
            *out = t->data;
            return AARMD_OK;
        }
    } else if (t->type != AARMD_TYPE_F16 && t->type != AARMD_TYPE_BF16) {
        return fail_msg(err, errlen, AARMD_EUNSUPPORTED, "tensor %s: type %s not supported for a vector (F32, F16, BF16)",
                        tname(t), type_name(t->type));
    }
    if (m->w.n_vecs + (size_t)n > m->w.cap_vecs)
        return fail_msg(err, errlen, AARMD_EINTERNAL, "vector arena overflow at %s", tname(t));
    float *dst = m->w.vecs + m->w.n_vecs;
    m->w.n_vecs += (size_t)n;
    for (int64_t i = 0; i < n; i++) {
        if (t->type == AARMD_TYPE_F32) {
            memcpy(&dst[i], (const char *)t->data + i * 4, 4);
        } else {
            uint16_t h;
            memcpy(&h, (const char *)t->data + i * 2, 2);
            dst[i] = t->type == AARMD_TYPE_F16 ? cpu_f16_to_f32(h) : cpu_bf16_to_f32(h);
        }
    }
    *out = dst;
    return AARMD_OK;
}

/* A weight matrix {n_in, n_out} for (role, layer). */
static int get_mat(const struct cpu_model *m, int role, int layer, int64_t n_in, int64_t n_out, int required,
                   const char *what, const struct aarmd_tensor **out, char *err, size_t errlen)
{
    *out = find(m, role, layer);
    if (!*out) {
        if (required)
            return fail_msg(err, errlen, AARMD_EINVAL, "missing tensor %s (layer %d)", what, layer);
        return AARMD_OK;
    }
    const struct aarmd_tensor *t = *out;
    if (t->ne[0] != n_in || t->ne[1] != n_out || t->ne[2] != 1 || t->ne[3] != 1)
        return fail_msg(err, errlen, AARMD_EINVAL, "tensor %s has shape {%lld, %lld}, expected {%lld, %lld}", tname(t),
                        (long long)t->ne[0], (long long)t->ne[1], (long long)n_in, (long long)n_out);
    return cpu_weight_check(t, err, errlen);   /* type, whole blocks, data and nbytes */
}

static int check_hparams(const struct aarmd_model_desc *d, char *err, size_t errlen)
{
    if (!d->n_embd || !d->n_layer || !d->n_head || !d->n_head_kv || !d->head_dim || !d->n_ff || !d->n_vocab)
        return fail_msg(err, errlen, AARMD_EINVAL,
                        "model shape has a zero (n_embd %u n_layer %u n_head %u n_head_kv %u head_dim %u n_ff %u n_vocab %u)",
                        d->n_embd, d->n_layer, d->n_head, d->n_head_kv, d->head_dim, d->n_ff, d->n_vocab);
    if (d->n_head % d->n_head_kv)
        return fail_msg(err, errlen, AARMD_EINVAL, "n_head %u is not a multiple of n_head_kv %u", d->n_head, d->n_head_kv);
    if (d->rope_kind > AARMD_ROPE_NEOX)
        return fail_msg(err, errlen, AARMD_EINVAL, "unknown rope_kind %u", d->rope_kind);
    if (d->rope_kind != AARMD_ROPE_NONE && (d->n_rot == 0 || d->n_rot % 2 || d->n_rot > d->head_dim))
        return fail_msg(err, errlen, AARMD_EINVAL, "n_rot %u must be even and in [2, head_dim %u]", d->n_rot, d->head_dim);
    if (d->rope_kind != AARMD_ROPE_NONE && !(d->rope_freq_base > 0.0f))
        return fail_msg(err, errlen, AARMD_EINVAL, "rope_freq_base %g must be > 0", d->rope_freq_base);
    if (d->rope_scaling > AARMD_ROPE_SCALING_LLAMA3)
        return fail_msg(err, errlen, AARMD_EUNSUPPORTED, "unknown rope_scaling %u", d->rope_scaling);
    if (d->norm_kind > AARMD_NORM_LAYER)
        return fail_msg(err, errlen, AARMD_EINVAL, "unknown norm_kind %u", d->norm_kind);
    if (d->act > AARMD_ACT_GELU)
        return fail_msg(err, errlen, AARMD_EINVAL, "unknown activation %u", d->act);
    return AARMD_OK;
}

static int load_layer(struct cpu_model *m, const struct aarmd_model_desc *d, int il, char *err, size_t errlen)
{
    const struct cpu_hparams *hp = &m->hp;
    struct cpu_layer *L = &m->w.layers[il];
    int rc;
    int64_t E = hp->n_embd, Q = hp->q_dim, KV = hp->kv_dim, F = hp->n_ff;

#define TRY(x) do { if ((rc = (x)) != AARMD_OK) return rc; } while (0)
    TRY(get_vec(m, AARMD_ROLE_ATTN_NORM, il, E, 1, "attn_norm", &L->attn_norm, err, errlen));
    TRY(get_vec(m, AARMD_ROLE_ATTN_NORM_B, il, E, 0, "attn_norm_b", &L->attn_norm_b, err, errlen));
    TRY(get_mat(m, AARMD_ROLE_ATTN_QKV, il, E, Q + 2 * KV, 0, "attn_qkv", &L->wqkv, err, errlen));
    if (L->wqkv) {
        TRY(get_vec(m, AARMD_ROLE_ATTN_QKV_B, il, Q + 2 * KV, 0, "attn_qkv_b", &L->bqkv, err, errlen));
    } else {
        TRY(get_mat(m, AARMD_ROLE_ATTN_Q, il, E, Q, 1, "attn_q", &L->wq, err, errlen));
        TRY(get_mat(m, AARMD_ROLE_ATTN_K, il, E, KV, 1, "attn_k", &L->wk, err, errlen));
        TRY(get_mat(m, AARMD_ROLE_ATTN_V, il, E, KV, 1, "attn_v", &L->wv, err, errlen));
        TRY(get_vec(m, AARMD_ROLE_ATTN_Q_B, il, Q, 0, "attn_q_b", &L->bq, err, errlen));
        TRY(get_vec(m, AARMD_ROLE_ATTN_K_B, il, KV, 0, "attn_k_b", &L->bk, err, errlen));
        TRY(get_vec(m, AARMD_ROLE_ATTN_V_B, il, KV, 0, "attn_v_b", &L->bv, err, errlen));
    }
    TRY(get_vec(m, AARMD_ROLE_ATTN_Q_NORM, il, hp->head_dim, 0, "attn_q_norm", &L->q_norm, err, errlen));
    TRY(get_vec(m, AARMD_ROLE_ATTN_K_NORM, il, hp->head_dim, 0, "attn_k_norm", &L->k_norm, err, errlen));
    TRY(get_mat(m, AARMD_ROLE_ATTN_OUT, il, Q, E, 1, "attn_output", &L->wo, err, errlen));
    TRY(get_vec(m, AARMD_ROLE_ATTN_OUT_B, il, E, 0, "attn_output_b", &L->bo, err, errlen));
    TRY(get_vec(m, AARMD_ROLE_ATTN_POST_NORM, il, E, 0, "attn_post_norm", &L->attn_post_norm, err, errlen));
    TRY(get_vec(m, AARMD_ROLE_FFN_NORM, il, E, 1, "ffn_norm", &L->ffn_norm, err, errlen));
    TRY(get_vec(m, AARMD_ROLE_FFN_NORM_B, il, E, 0, "ffn_norm_b", &L->ffn_norm_b, err, errlen));
    if (hp->act == AARMD_ACT_GELU) {
        TRY(get_mat(m, AARMD_ROLE_FFN_UP, il, E, F, 1, "ffn_up", &L->w_up, err, errlen));
    } else {
        TRY(get_mat(m, AARMD_ROLE_FFN_UP_GATE, il, E, 2 * F, 0, "ffn_up_gate", &L->w_up_gate, err, errlen));
        if (!L->w_up_gate) {
            TRY(get_mat(m, AARMD_ROLE_FFN_GATE, il, E, F, 1, "ffn_gate", &L->w_gate, err, errlen));
            TRY(get_mat(m, AARMD_ROLE_FFN_UP, il, E, F, 1, "ffn_up", &L->w_up, err, errlen));
        }
    }
    TRY(get_vec(m, AARMD_ROLE_FFN_UP_B, il, F, 0, "ffn_up_b", &L->b_up, err, errlen));
    TRY(get_mat(m, AARMD_ROLE_FFN_DOWN, il, F, E, 1, "ffn_down", &L->w_down, err, errlen));
    TRY(get_vec(m, AARMD_ROLE_FFN_DOWN_B, il, E, 0, "ffn_down_b", &L->b_down, err, errlen));
    TRY(get_vec(m, AARMD_ROLE_FFN_POST_NORM, il, E, 0, "ffn_post_norm", &L->ffn_post_norm, err, errlen));
#undef TRY
    L->is_swa = d->layer_is_swa && d->layer_is_swa[il] && d->sliding_window > 0;
    float base = L->is_swa && d->rope_freq_base_swa > 0.0f ? d->rope_freq_base_swa : d->rope_freq_base;
    cpu_rope_init(&L->rope, d, base, m->w.rope_freqs);
    return AARMD_OK;
}

static size_t mm_scratch(const struct aarmd_tensor *t, uint32_t n_tok)
{
    return t ? cpu_matmul_scratch_bytes(t->type, t->ne[0], n_tok) : 0;
}

static float *alloc_f(size_t n, uint64_t *total)
{
    *total += n * sizeof(float);
    return malloc((n ? n : 1) * sizeof(float));
}

static int alloc_state(struct cpu_model *m, uint32_t max_tok)
{
    struct cpu_run_state *s = &m->s;
    const struct cpu_hparams *hp = &m->hp;
    size_t T = max_tok;
    uint64_t *tot = &m->scratch_bytes;
    s->max_tok = max_tok;
    s->x = alloc_f(T * hp->n_embd, tot);
    s->xb = alloc_f(T * hp->n_embd, tot);
    s->xb2 = alloc_f(T * hp->n_embd, tot);
    s->q = alloc_f(T * hp->q_dim, tot);
    s->k = alloc_f(T * hp->kv_dim, tot);
    s->v = alloc_f(T * hp->kv_dim, tot);
    s->qkv = alloc_f(T * (hp->q_dim + 2 * hp->kv_dim), tot);
    s->att = alloc_f(T * hp->q_dim, tot);
    s->hb = alloc_f(T * 2 * hp->n_ff, tot);
    s->hb2 = alloc_f(T * hp->n_ff, tot);
    s->cs = alloc_f((size_t)hp->head_dim, tot);
    s->lx = alloc_f((size_t)LOGIT_GROUP * hp->n_embd, tot);
    s->lo = alloc_f((size_t)LOGIT_GROUP * hp->n_vocab, tot);

    size_t mm = mm_scratch(m->w.output, LOGIT_GROUP);
    for (int il = 0; il < hp->n_layer; il++) {
        const struct cpu_layer *L = &m->w.layers[il];
        const struct aarmd_tensor *ts[] = {L->wq, L->wk, L->wv, L->wqkv, L->wo, L->w_gate, L->w_up, L->w_up_gate, L->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            size_t b = mm_scratch(ts[i], max_tok);
            if (b > mm)
                mm = b;
        }
        if (L->wq) {   /* q/k/v and gate/up run as groups (cpu_matmul_group) */
            const struct aarmd_tensor *qkv[] = {L->wq, L->wk, L->wv};
            size_t b = cpu_matmul_group_scratch_bytes(3, qkv, max_tok);
            mm = b > mm ? b : mm;
        }
        if (L->w_gate && L->w_up) {
            const struct aarmd_tensor *gu[] = {L->w_gate, L->w_up};
            size_t b = cpu_matmul_group_scratch_bytes(2, gu, max_tok);
            mm = b > mm ? b : mm;
        }
    }
    s->mm_bytes = mm;
    s->mm = malloc(mm ? mm : 1);
    *tot += mm;
    if (!s->x || !s->xb || !s->xb2 || !s->q || !s->k || !s->v || !s->qkv || !s->att || !s->hb || !s->hb2 ||
        !s->cs || !s->lx || !s->lo || !s->mm)
        return AARMD_ENOMEM;
    return AARMD_OK;
}

int cpu_model_new(const struct aarmd_model_desc *d, struct cpu_pool *pool, enum cpu_simd simd,
                  uint32_t max_tok, struct cpu_model **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc;
    if (!d->tensors || d->n_tensors == 0)
        return fail_msg(err, errlen, AARMD_EINVAL, "model has no weights (vocab-only file?)");
    if ((rc = check_hparams(d, err, errlen)) != AARMD_OK)
        return rc;
    if (max_tok == 0)
        return fail_msg(err, errlen, AARMD_EINVAL, "batch must be >= 1");

    /* every tensor must be runnable before anything is allocated */
    size_t vec_floats = 0;
    uint64_t weight_bytes = 0;
    for (uint32_t i = 0; i < d->n_tensors; i++) {
        const struct aarmd_tensor *t = &d->tensors[i];
        weight_bytes += t->nbytes;
        if (is_vector_role(t->role)) {
            vec_floats += (size_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
            continue;
        }
        if (!cpu_type_supported(t->type))
            return fail_msg(err, errlen, AARMD_EUNSUPPORTED,
                            "tensor %s has type %s, which the CPU backend cannot run", tname(t), type_name(t->type));
    }

    struct cpu_model *m = calloc(1, sizeof *m);
    if (!m)
        return fail_msg(err, errlen, AARMD_ENOMEM, "out of memory");
    m->pool = pool;
    m->simd = simd;
    m->weight_bytes = weight_bytes;

    struct cpu_hparams *hp = &m->hp;
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

    m->w.n_tensors = d->n_tensors;
    m->w.tensors = malloc(d->n_tensors * sizeof *m->w.tensors);
    m->w.layers = calloc(d->n_layer, sizeof *m->w.layers);
    m->w.cap_vecs = vec_floats;
    m->w.vecs = malloc((vec_floats ? vec_floats : 1) * sizeof(float));
    if (!m->w.tensors || !m->w.layers || !m->w.vecs) {
        rc = fail_msg(err, errlen, AARMD_ENOMEM, "out of memory");
        goto fail;
    }
    memcpy(m->w.tensors, d->tensors, d->n_tensors * sizeof *m->w.tensors);

    int64_t E = hp->n_embd;
    if ((rc = get_mat(m, AARMD_ROLE_TOKEN_EMBD, -1, E, hp->n_vocab, 1, "token_embd", &m->w.token_embd, err, errlen)))
        goto fail;
    if (d->tied_embeddings) {
        m->w.output = m->w.token_embd;
    } else if ((rc = get_mat(m, AARMD_ROLE_OUTPUT, -1, E, hp->n_vocab, 1, "output", &m->w.output, err, errlen))) {
        goto fail;
    }
    const struct aarmd_tensor *pe = find(m, AARMD_ROLE_POS_EMBD, -1);
    if (pe && (rc = get_mat(m, AARMD_ROLE_POS_EMBD, -1, E, pe->ne[1], 1, "pos_embd", &m->w.pos_embd, err, errlen)))
        goto fail;
    if (m->w.pos_embd) {
        hp->has_pos_embd = 1;
        hp->n_ctx_train = (uint32_t)m->w.pos_embd->ne[1];
    }
    if ((rc = get_vec(m, AARMD_ROLE_OUTPUT_NORM, -1, E, 1, "output_norm", &m->w.output_norm, err, errlen)) ||
        (rc = get_vec(m, AARMD_ROLE_OUTPUT_NORM_B, -1, E, 0, "output_norm_b", &m->w.output_norm_b, err, errlen)))
        goto fail;
    if (d->rope_kind != AARMD_ROPE_NONE) {
        if ((rc = get_vec(m, AARMD_ROLE_ROPE_FREQS, -1, d->n_rot / 2, 0, "rope_freqs", &m->w.rope_freqs, err, errlen)))
            goto fail;
    }
    if (!m->w.rope_freqs && d->rope_scaling == AARMD_ROPE_SCALING_LLAMA3) {
        /* no rope_freqs tensor: derive the llama3 factors from the hyperparameters */
        float *ff = malloc((d->n_rot / 2 + 1) * sizeof(float));
        if (!ff) {
            rc = fail_msg(err, errlen, AARMD_ENOMEM, "out of memory");
            goto fail;
        }
        cpu_rope_llama3_factors(d, ff);
        m->w.llama3_ff = ff;
        m->w.rope_freqs = ff;
    }
    for (int il = 0; il < hp->n_layer; il++)
        if ((rc = load_layer(m, d, il, err, errlen)))
            goto fail;
    if ((rc = alloc_state(m, max_tok))) {
        fail_msg(err, errlen, rc, "out of memory for scratch of %u tokens", max_tok);
        goto fail;
    }
    *out = m;
    return AARMD_OK;
fail:
    cpu_model_free(m);
    return rc;
}

void cpu_model_free(struct cpu_model *m)
{
    if (!m)
        return;
    struct cpu_run_state *s = &m->s;
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->qkv);
    free(s->att);
    free(s->hb);
    free(s->hb2);
    free(s->cs);
    free(s->lx);
    free(s->lo);
    free(s->mm);
    free(m->w.llama3_ff);
    free(m->w.vecs);
    free(m->w.layers);
    free(m->w.tensors);
    free(m);
}

uint64_t cpu_model_scratch_bytes(const struct cpu_model *m) { return m->scratch_bytes; }
uint64_t cpu_model_weight_bytes(const struct cpu_model *m) { return m->weight_bytes; }
uint32_t cpu_model_max_tok(const struct cpu_model *m) { return m->s.max_tok; }
const struct cpu_hparams *cpu_model_hparams(const struct cpu_model *m) { return &m->hp; }

/* ---- forward -------------------------------------------------------------- */

static void matmul(struct cpu_model *m, const struct aarmd_tensor *w, const float *x, uint32_t n_tok, float *y)
{
    cpu_matmul(m->pool, m->simd, w, x, n_tok, y, m->s.mm);
}

/* y[t][i] += b[i] for each of n_tok rows of n */
static void add_bias(float *y, const float *b, uint32_t n_tok, int n)
{
    if (!b)
        return;
    for (uint32_t t = 0; t < n_tok; t++)
        cpu_add(y + (size_t)t * n, b, n);
}

/* The model's norm (RMS or LayerNorm) of one row, times w (+ b). */
static void norm_row(const struct cpu_hparams *hp, float *out, const float *x, const float *w, const float *b)
{
    if (hp->norm_kind == AARMD_NORM_LAYER)
        cpu_layernorm(out, x, w, b, hp->n_embd, hp->norm_eps);
    else
        cpu_rmsnorm(out, x, w, hp->n_embd, hp->norm_eps);
}

/* Attention of every (token, head) of the chunk, split across the pool. */
struct attn_job {
    struct cpu_model *m;
    int layer;
    uint32_t n_tok;
    struct cpu_kv *const *kv;
    const int32_t *pos;
    int vec;                    /* AVX2 attention (x86-64 with simd >= avx2) */
};

/* Item `it` = (token it / n_head_kv, kv head it % n_head_kv): the `group` query
 * heads sharing that kv head, so each K/V row is read once for all of them. */
static void attn_item(const struct attn_job *j, size_t it)
{
    const struct cpu_hparams *hp = &j->m->hp;
    const struct cpu_layer *L = &j->m->w.layers[j->layer];
    int group = hp->n_head / hp->n_head_kv;
    uint32_t t = (uint32_t)(it / (size_t)hp->n_head_kv);
    int kvh = (int)(it % (size_t)hp->n_head_kv);
    int32_t p = j->pos[t];
    int32_t j0 = 0;
    if (L->is_swa && p - hp->sliding_window + 1 > 0)
        j0 = p - hp->sliding_window + 1;   /* a key is visible while q_pos - k_pos < window */
    size_t h0 = (size_t)kvh * (size_t)group;
    const float *q = j->m->s.q + (size_t)t * hp->q_dim + h0 * hp->head_dim;
    float *out = j->m->s.att + (size_t)t * hp->q_dim + h0 * hp->head_dim;
    cpu_attend_group(j->kv[t], j->layer, kvh, q, group, hp->head_dim, j0, p, hp->attn_scale, hp->attn_softcap, j->vec,
                     out);
}

/* Pool chunk: one (token, kv head) item, claimed by whichever thread comes. */
static void attn_chunk_cb(void *arg, int64_t chunk)
{
    attn_item(arg, (size_t)chunk);
}

/* Multiply-adds of a chunk's attention (keys visited x heads x head_dim x 2). */
static uint64_t attn_work(const struct cpu_hparams *hp, uint32_t n_tok, const int32_t *pos)
{
    uint64_t keys = 0;
    for (uint32_t t = 0; t < n_tok; t++)
        keys += (uint64_t)pos[t] + 1;
    return keys * (uint64_t)hp->n_head * (uint64_t)hp->head_dim * 2;
}

/* Logits of up to LOGIT_GROUP tokens whose final hidden rows are in s->lx. */
static void flush_logits(struct cpu_model *m, uint32_t n, float *const *logits)
{
    const struct cpu_hparams *hp = &m->hp;
    struct cpu_run_state *s = &m->s;
    if (n == 0)
        return;
    matmul(m, m->w.output, s->lx, n, s->lo);                     /* lo = lx @ output   [n][n_vocab] */
    for (uint32_t g = 0; g < n; g++) {
        float *row = s->lo + (size_t)g * hp->n_vocab;
        cpu_softcap(row, hp->n_vocab, hp->final_softcap);
        memcpy(logits[s->lidx[g]], row, (size_t)hp->n_vocab * sizeof(float));
    }
}

void cpu_forward(struct cpu_model *m, uint32_t n_tok, const int32_t *tokens, struct cpu_kv *const *kv,
                 const int32_t *pos, float *const *logits)
{
    const struct cpu_hparams *hp = &m->hp;
    const struct cpu_weights *w = &m->w;
    struct cpu_run_state *s = &m->s;
    const int E = hp->n_embd, Q = hp->q_dim, KV = hp->kv_dim, F = hp->n_ff, D = hp->head_dim;

    /* x = token_embd[tok] * embd_scale (+ pos_embd[pos]) */
    for (uint32_t t = 0; t < n_tok; t++) {
        float *x = s->x + (size_t)t * E;
        cpu_dequant_row(w->token_embd, tokens[t], x);
        if (hp->embd_scale != 1.0f)
            cpu_scale(x, hp->embd_scale, E);
        if (w->pos_embd) {
            cpu_dequant_row(w->pos_embd, pos[t], s->xb);
            cpu_add(x, s->xb, E);
        }
    }

    for (int il = 0; il < hp->n_layer; il++) {
        const struct cpu_layer *L = &w->layers[il];

        /* ---- attention block ---- */
        for (uint32_t t = 0; t < n_tok; t++)                         /* xb = norm(x) * attn_norm (+ b) */
            norm_row(hp, s->xb + (size_t)t * E, s->x + (size_t)t * E, L->attn_norm, L->attn_norm_b);

        if (L->wqkv) {                                               /* q|k|v = xb @ wqkv (+ b), split */
            int QKV = Q + 2 * KV;
            matmul(m, L->wqkv, s->xb, n_tok, s->qkv);
            add_bias(s->qkv, L->bqkv, n_tok, QKV);
            for (uint32_t t = 0; t < n_tok; t++) {
                const float *r = s->qkv + (size_t)t * QKV;
                memcpy(s->q + (size_t)t * Q, r, (size_t)Q * sizeof(float));
                memcpy(s->k + (size_t)t * KV, r + Q, (size_t)KV * sizeof(float));
                memcpy(s->v + (size_t)t * KV, r + Q + KV, (size_t)KV * sizeof(float));
            }
        } else {                                                     /* q, k, v = xb @ wq, wk, wv (+ b) */
            const struct aarmd_tensor *ws[] = {L->wq, L->wk, L->wv};  /* one pool run for all three */
            float *ys[] = {s->q, s->k, s->v};
            cpu_matmul_group(m->pool, m->simd, 3, ws, s->xb, n_tok, ys, s->mm);
            add_bias(s->q, L->bq, n_tok, Q);
            add_bias(s->k, L->bk, n_tok, KV);
            add_bias(s->v, L->bv, n_tok, KV);
        }

        for (uint32_t t = 0; t < n_tok; t++) {
            float *q = s->q + (size_t)t * Q, *k = s->k + (size_t)t * KV;
            if (L->q_norm)                                           /* per-head rms_norm(q|k) * weight */
                for (int h = 0; h < hp->n_head; h++)
                    cpu_rmsnorm(q + h * D, q + h * D, L->q_norm, D, hp->norm_eps);
            if (L->k_norm)
                for (int h = 0; h < hp->n_head_kv; h++)
                    cpu_rmsnorm(k + h * D, k + h * D, L->k_norm, D, hp->norm_eps);
            if (L->rope.kind != AARMD_ROPE_NONE) {                   /* rotate the first n_rot dims per head */
                cpu_rope_cos_sin(&L->rope, pos[t], s->cs);
                cpu_rope_apply(&L->rope, s->cs, q, hp->n_head, D);
                cpu_rope_apply(&L->rope, s->cs, k, hp->n_head_kv, D);
            }
            cpu_kv_store(kv[t], il, pos[t], k, s->v + (size_t)t * KV); /* cache k, v at pos */
        }

        struct attn_job job = {.m = m, .layer = il, .n_tok = n_tok, .kv = kv, .pos = pos,
                               .vec = m->simd == CPU_SIMD_AVX2 || m->simd == CPU_SIMD_AVX512};
        size_t items = (size_t)n_tok * (size_t)hp->n_head_kv;      /* att = softmax(q·k * scale) · v */
        if (attn_work(hp, n_tok, pos) < ATTN_INLINE_WORK) {
            for (size_t it = 0; it < items; it++)                    /* too small to pay for a pool hand-off */
                attn_item(&job, it);
        } else {
            cpu_pool_run_chunks(m->pool, attn_chunk_cb, &job, (int64_t)items);
        }

        matmul(m, L->wo, s->att, n_tok, s->xb2);                     /* xb2 = att @ wo (+ b) */
        add_bias(s->xb2, L->bo, n_tok, E);
        for (uint32_t t = 0; t < n_tok; t++) {
            float *a = s->xb2 + (size_t)t * E;
            if (L->attn_post_norm)                                   /* gemma3: norm(a) * post_norm */
                norm_row(hp, a, a, L->attn_post_norm, NULL);
            cpu_add(s->x + (size_t)t * E, a, E);                     /* x += a */
        }

        /* ---- feed-forward block ---- */
        for (uint32_t t = 0; t < n_tok; t++)                         /* xb = norm(x) * ffn_norm (+ b) */
            norm_row(hp, s->xb + (size_t)t * E, s->x + (size_t)t * E, L->ffn_norm, L->ffn_norm_b);

        int gelu = hp->act != AARMD_ACT_SILU_GATED;
        if (hp->act == AARMD_ACT_GELU) {                             /* hb = gelu(xb @ up + b) */
            matmul(m, L->w_up, s->xb, n_tok, s->hb);
            add_bias(s->hb, L->b_up, n_tok, F);
            cpu_gelu_vec(s->hb, (int)(n_tok * (uint32_t)F));
        } else if (L->w_up_gate) {                                   /* phi3: [gate|up] = xb @ up_gate */
            matmul(m, L->w_up_gate, s->xb, n_tok, s->hb);
            for (uint32_t t = 0; t < n_tok; t++) {                   /* compact to hb[t] = act(gate) * up */
                const float *r = s->hb + (size_t)t * 2 * F;
                float *g = s->hb2 + (size_t)t * F;
                memcpy(g, r, (size_t)F * sizeof(float));
                cpu_gated_act(g, r + F, F, gelu);
            }
            memcpy(s->hb, s->hb2, (size_t)n_tok * F * sizeof(float));
        } else {                                                     /* hb = act(xb @ gate) * (xb @ up) */
            const struct aarmd_tensor *ws[] = {L->w_gate, L->w_up};   /* one pool run for both */
            float *ys[] = {s->hb, s->hb2};
            cpu_matmul_group(m->pool, m->simd, 2, ws, s->xb, n_tok, ys, s->mm);
            add_bias(s->hb2, L->b_up, n_tok, F);
            cpu_gated_act(s->hb, s->hb2, (int)(n_tok * (uint32_t)F), gelu);
        }

        matmul(m, L->w_down, s->hb, n_tok, s->xb2);                  /* xb2 = hb @ down (+ b) */
        add_bias(s->xb2, L->b_down, n_tok, E);
        for (uint32_t t = 0; t < n_tok; t++) {
            float *f = s->xb2 + (size_t)t * E;
            if (L->ffn_post_norm)                                    /* gemma3: norm(f) * post_norm */
                norm_row(hp, f, f, L->ffn_post_norm, NULL);
            cpu_add(s->x + (size_t)t * E, f, E);                     /* x += f */
        }
    }

    /* logits = softcap((norm(x) * output_norm (+ b)) @ output), wanting tokens only */
    uint32_t n = 0;
    for (uint32_t t = 0; t < n_tok; t++) {
        if (!logits[t])
            continue;
        norm_row(hp, s->lx + (size_t)n * E, s->x + (size_t)t * E, w->output_norm, w->output_norm_b);
        s->lidx[n++] = t;
        if (n == LOGIT_GROUP) {
            flush_logits(m, n, logits);
            n = 0;
        }
    }
    flush_logits(m, n, logits);
}
