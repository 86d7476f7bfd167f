/*
 * model.c — builds the generic decoder description (struct aarmd_model_desc)
 * from a GGUF file: hyperparameters from `<arch>.*` keys, tensors checked
 * against the architecture table (model_arch.c) for presence, shape and type.
 * Also quant_kind and role names. Not a loader: no tensor data is read.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml_type.h"
#include "gguf.h"
#include "log.h"
#include "model.h"
#include "model_arch.h"

#define MAX_LAYERS 4096
#define KEY_MAX 160

/* The description plus everything it points to, freed together. */
struct model_store {
    struct aarmd_model_desc d;      /* first: the public pointer is &store->d */
    struct aarmd_tensor *tensors;
    uint8_t *swa;
    int32_t *index;                 /* (n_layer + 1) * ROLE_COUNT: tensor index + 1, 0 = absent */
    char *arch;
    char *name;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- roles -------------------------------------------------------------- */

static const char *const role_names[AARMD_ROLE_COUNT] = {
    [AARMD_ROLE_TOKEN_EMBD] = "token_embd",
    [AARMD_ROLE_POS_EMBD] = "pos_embd",
    [AARMD_ROLE_OUTPUT_NORM] = "output_norm",
    [AARMD_ROLE_OUTPUT_NORM_B] = "output_norm_b",
    [AARMD_ROLE_OUTPUT] = "output",
    [AARMD_ROLE_ROPE_FREQS] = "rope_freqs",
    [AARMD_ROLE_ATTN_NORM] = "attn_norm",
    [AARMD_ROLE_ATTN_NORM_B] = "attn_norm_b",
    [AARMD_ROLE_ATTN_Q] = "attn_q",
    [AARMD_ROLE_ATTN_K] = "attn_k",
    [AARMD_ROLE_ATTN_V] = "attn_v",
    [AARMD_ROLE_ATTN_QKV] = "attn_qkv",
    [AARMD_ROLE_ATTN_Q_B] = "attn_q_b",
    [AARMD_ROLE_ATTN_K_B] = "attn_k_b",
    [AARMD_ROLE_ATTN_V_B] = "attn_v_b",
    [AARMD_ROLE_ATTN_QKV_B] = "attn_qkv_b",
    [AARMD_ROLE_ATTN_Q_NORM] = "attn_q_norm",
    [AARMD_ROLE_ATTN_K_NORM] = "attn_k_norm",
    [AARMD_ROLE_ATTN_OUT] = "attn_out",
    [AARMD_ROLE_ATTN_OUT_B] = "attn_out_b",
    [AARMD_ROLE_ATTN_POST_NORM] = "attn_post_norm",
    [AARMD_ROLE_FFN_NORM] = "ffn_norm",
    [AARMD_ROLE_FFN_NORM_B] = "ffn_norm_b",
    [AARMD_ROLE_FFN_GATE] = "ffn_gate",
    [AARMD_ROLE_FFN_UP] = "ffn_up",
    [AARMD_ROLE_FFN_UP_GATE] = "ffn_up_gate",
    [AARMD_ROLE_FFN_UP_B] = "ffn_up_b",
    [AARMD_ROLE_FFN_DOWN] = "ffn_down",
    [AARMD_ROLE_FFN_DOWN_B] = "ffn_down_b",
    [AARMD_ROLE_FFN_POST_NORM] = "ffn_post_norm",
};

const char *aarmd_role_name(int role)
{
    if (role < 0 || role >= AARMD_ROLE_COUNT || !role_names[role])
        return "?";
    return role_names[role];
}

const char *aarmd_model_supported_archs(void)
{
    return aarmd_arch_list();
}

/* ---- keys --------------------------------------------------------------- */

struct keys {
    const struct aarmd_gguf *g;
    const char *arch;
    char buf[KEY_MAX];
};

static const char *akey(struct keys *k, const char *suffix)
{
    snprintf(k->buf, sizeof k->buf, "%s.%s", k->arch, suffix);
    return k->buf;
}

/* A u32 key that may also be an array of one repeated value (per-layer form). */
static int get_u32_any(const struct aarmd_gguf *g, const char *key, uint32_t *out, char *err, size_t errlen)
{
    const struct aarmd_gguf_value *v = aarmd_gguf_find(g, key);
    if (!v)
        return AARMD_EINVAL;
    if (v->type == AARMD_GGUF_ARRAY && v->v.arr.n > 0 && !v->v.arr.items) {
        int64_t first = aarmd_gguf_arr_i64(v, 0);
        for (uint64_t i = 1; i < v->v.arr.n; i++) {
            if (aarmd_gguf_arr_i64(v, i) != first) {
                set_err(err, errlen, "key %s: per-layer values differ (layer %" PRIu64 "); not supported", key, i);
                return AARMD_EUNSUPPORTED;
            }
        }
        if (first < 0 || first > UINT32_MAX)
            goto bad;
        *out = (uint32_t)first;
        return AARMD_OK;
    }
    if (!aarmd_gguf_get_u32(g, key, out))
        return AARMD_OK;
bad:
    set_err(err, errlen, "key %s: expected an unsigned 32-bit integer, found %s", key,
            aarmd_gguf_vtype_name(v->type));
    return AARMD_EINVAL;
}

static int req_u32(struct keys *k, const char *suffix, uint32_t *out, char *err, size_t errlen)
{
    const char *key = akey(k, suffix);
    if (!aarmd_gguf_find(k->g, key)) {
        set_err(err, errlen, "missing key %s", key);
        return AARMD_EINVAL;
    }
    int rc = get_u32_any(k->g, key, out, err, errlen);
    if (rc)
        return rc;
    if (*out == 0) {
        set_err(err, errlen, "key %s must be > 0", key);
        return AARMD_EINVAL;
    }
    return AARMD_OK;
}

/* Optional u32: absent keeps *out; present but malformed is an error. */
static int opt_u32(struct keys *k, const char *suffix, uint32_t *out, char *err, size_t errlen)
{
    const char *key = akey(k, suffix);
    if (!aarmd_gguf_find(k->g, key))
        return AARMD_OK;
    return get_u32_any(k->g, key, out, err, errlen);
}

static int opt_f32(struct keys *k, const char *suffix, float *out, char *err, size_t errlen)
{
    const char *key = akey(k, suffix);
    const struct aarmd_gguf_value *v = aarmd_gguf_find(k->g, key);
    if (!v)
        return AARMD_OK;
    float f;
    if (aarmd_gguf_get_f32(k->g, key, &f) || !isfinite(f)) {
        set_err(err, errlen, "key %s: expected a finite number, found %s", key, aarmd_gguf_vtype_name(v->type));
        return AARMD_EINVAL;
    }
    *out = f;
    return AARMD_OK;
}

static int32_t token_id(const struct aarmd_gguf *g, const char *key)
{
    int64_t v;
    if (aarmd_gguf_get_i64(g, key, &v) || v < 0 || v > INT32_MAX)
        return -1;
    return (int32_t)v;
}

/* ---- hyperparameters ---------------------------------------------------- */

static int read_rope_scaling(struct keys *k, struct aarmd_model_desc *d, char *err, size_t errlen)
{
    int rc;
    char type[32] = "";
    float factor = 0;
    aarmd_gguf_get_cstr(k->g, akey(k, "rope.scaling.type"), type, sizeof type);
    if ((rc = opt_f32(k, "rope.scaling.factor", &factor, err, errlen)))
        return rc;
    d->rope_scaling = AARMD_ROPE_SCALING_NONE;
    d->rope_scale = 1.0f;
    d->rope_orig_ctx = d->n_ctx_train;
    if ((rc = opt_u32(k, "rope.scaling.original_context_length", &d->rope_orig_ctx, err, errlen)))
        return rc;
    if (!*type) {
        float lin = 0;   /* the older key, a linear factor */
        if ((rc = opt_f32(k, "rope.scale_linear", &lin, err, errlen)))
            return rc;
        if (lin > 0 && lin != 1.0f) {
            d->rope_scaling = AARMD_ROPE_SCALING_LINEAR;
            d->rope_scale = lin;
        }
        return AARMD_OK;
    }
    if (!strcmp(type, "none"))
        return AARMD_OK;
    if (!strcmp(type, "linear") || !strcmp(type, "yarn")) {
        if (!(factor > 0)) {
            set_err(err, errlen, "key %s: rope scaling '%s' needs a factor > 0", akey(k, "rope.scaling.factor"), type);
            return AARMD_EINVAL;
        }
        d->rope_scale = factor;
        d->rope_scaling = !strcmp(type, "linear") ? AARMD_ROPE_SCALING_LINEAR : AARMD_ROPE_SCALING_YARN;
        if (factor == 1.0f)
            d->rope_scaling = AARMD_ROPE_SCALING_NONE;
        return AARMD_OK;
    }
    if (!strcmp(type, "longrope") && !strcmp(k->arch, "phi3"))
        return AARMD_OK;   /* factors come as tensors (rope_factors_short) */
    set_err(err, errlen, "key %s: rope scaling '%s' is not supported (none, linear, yarn)",
            akey(k, "rope.scaling.type"), type);
    return AARMD_EUNSUPPORTED;
}

static int read_hparams(struct keys *k, const struct aarmd_arch *a, struct aarmd_model_desc *d,
                        char *err, size_t errlen)
{
    int rc;
    if ((rc = req_u32(k, "embedding_length", &d->n_embd, err, errlen)) ||
        (rc = req_u32(k, "block_count", &d->n_layer, err, errlen)) ||
        (rc = req_u32(k, "attention.head_count", &d->n_head, err, errlen)) ||
        (rc = req_u32(k, "feed_forward_length", &d->n_ff, err, errlen)) ||
        (rc = req_u32(k, "context_length", &d->n_ctx_train, err, errlen)))
        return rc;
    if (d->n_layer > MAX_LAYERS) {
        set_err(err, errlen, "key %s: %" PRIu32 " layers is more than %d", akey(k, "block_count"), d->n_layer, MAX_LAYERS);
        return AARMD_EINVAL;
    }
    d->n_head_kv = d->n_head;
    if ((rc = opt_u32(k, "attention.head_count_kv", &d->n_head_kv, err, errlen)))
        return rc;
    if (d->n_head_kv == 0 || d->n_head % d->n_head_kv) {
        set_err(err, errlen, "key %s: %" PRIu32 " kv heads do not divide %" PRIu32 " heads",
                akey(k, "attention.head_count_kv"), d->n_head_kv, d->n_head);
        return AARMD_EINVAL;
    }
    d->head_dim = 0;
    if ((rc = opt_u32(k, "attention.key_length", &d->head_dim, err, errlen)))
        return rc;
    if (!d->head_dim) {
        if (d->n_embd % d->n_head) {
            set_err(err, errlen, "n_embd %" PRIu32 " is not a multiple of n_head %" PRIu32 " and %s is absent",
                    d->n_embd, d->n_head, akey(k, "attention.key_length"));
            return AARMD_EINVAL;
        }
        d->head_dim = d->n_embd / d->n_head;
    }
    uint32_t vlen = d->head_dim;
    if ((rc = opt_u32(k, "attention.value_length", &vlen, err, errlen)))
        return rc;
    if (vlen != d->head_dim) {
        set_err(err, errlen, "key %s: value length %" PRIu32 " differs from key length %" PRIu32 "; not supported",
                akey(k, "attention.value_length"), vlen, d->head_dim);
        return AARMD_EUNSUPPORTED;
    }

    /* rotary */
    d->rope_kind = a->rope_kind;
    d->n_rot = a->rope_kind == AARMD_ROPE_NONE ? 0 : d->head_dim;
    if (a->rope_kind != AARMD_ROPE_NONE) {
        if ((rc = opt_u32(k, "rope.dimension_count", &d->n_rot, err, errlen)))
            return rc;
        if (d->n_rot > d->head_dim || d->n_rot % 2) {
            set_err(err, errlen, "key %s: %" PRIu32 " rotary dims must be even and <= head_dim %" PRIu32,
                    akey(k, "rope.dimension_count"), d->n_rot, d->head_dim);
            return AARMD_EINVAL;
        }
    }
    d->rope_freq_base = 10000.0f;
    if ((rc = opt_f32(k, "rope.freq_base", &d->rope_freq_base, err, errlen)))
        return rc;
    d->rope_freq_base_swa = a->rope_base_swa > 0 ? a->rope_base_swa : d->rope_freq_base;
    if ((rc = opt_f32(k, "rope.freq_base_swa", &d->rope_freq_base_swa, err, errlen)))
        return rc;
    if (!(d->rope_freq_base > 0) || !(d->rope_freq_base_swa > 0)) {
        set_err(err, errlen, "key %s must be > 0", akey(k, "rope.freq_base"));
        return AARMD_EINVAL;
    }
    if ((rc = read_rope_scaling(k, d, err, errlen)))
        return rc;
    d->yarn_ext_factor = d->rope_scaling == AARMD_ROPE_SCALING_YARN ? 1.0f : 0.0f;
    d->yarn_attn_factor = 1.0f;
    d->yarn_beta_fast = 32.0f;
    d->yarn_beta_slow = 1.0f;
    if ((rc = opt_f32(k, "rope.scaling.yarn_ext_factor", &d->yarn_ext_factor, err, errlen)) ||
        (rc = opt_f32(k, "rope.scaling.yarn_attn_factor", &d->yarn_attn_factor, err, errlen)) ||
        (rc = opt_f32(k, "rope.scaling.attn_factor", &d->yarn_attn_factor, err, errlen)) ||
        (rc = opt_f32(k, "rope.scaling.yarn_beta_fast", &d->yarn_beta_fast, err, errlen)) ||
        (rc = opt_f32(k, "rope.scaling.yarn_beta_slow", &d->yarn_beta_slow, err, errlen)))
        return rc;
    d->llama3_low_freq_factor = 0;
    d->llama3_high_freq_factor = 0;

    /* norm and activation */
    d->norm_kind = a->norm_kind;
    d->act = a->act;
    const char *eps_key = a->norm_kind == AARMD_NORM_RMS ? "attention.layer_norm_rms_epsilon"
                                                         : "attention.layer_norm_epsilon";
    if (!aarmd_gguf_find(k->g, akey(k, eps_key))) {
        set_err(err, errlen, "missing key %s", akey(k, eps_key));
        return AARMD_EINVAL;
    }
    if ((rc = opt_f32(k, eps_key, &d->norm_eps, err, errlen)))
        return rc;
    if (!(d->norm_eps > 0) || d->norm_eps > 1.0f) {
        set_err(err, errlen, "key %s: epsilon %g is not in (0, 1]", akey(k, eps_key), (double)d->norm_eps);
        return AARMD_EINVAL;
    }

    /* attention */
    d->attn_scale = 1.0f / sqrtf((float)d->head_dim);
    if (a->gemma_27b_scale && d->n_layer == 62)
        d->attn_scale = 1.0f / sqrtf((float)(d->n_embd / d->n_head));
    if ((rc = opt_f32(k, "attention.scale", &d->attn_scale, err, errlen)))
        return rc;
    d->attn_logit_softcap = 0;
    d->final_logit_softcap = 0;
    if ((rc = opt_f32(k, "attn_logit_softcapping", &d->attn_logit_softcap, err, errlen)) ||
        (rc = opt_f32(k, "final_logit_softcapping", &d->final_logit_softcap, err, errlen)))
        return rc;
    if (d->attn_logit_softcap < 0 || d->final_logit_softcap < 0) {
        set_err(err, errlen, "key %s: soft-caps must be >= 0", akey(k, "attn_logit_softcapping"));
        return AARMD_EINVAL;
    }
    d->sliding_window = 0;
    if ((rc = opt_u32(k, "attention.sliding_window", &d->sliding_window, err, errlen)))
        return rc;
    if (a->swa == AARMD_SWA_OFF && d->sliding_window) {
        aarmd_log(AARMD_LOG_DEBUG, "model_swa_ignored", "%s: sliding window %" PRIu32 " ignored for %s",
                  akey(k, "attention.sliding_window"), d->sliding_window, a->name);
        d->sliding_window = 0;
    }

    d->embd_scale = a->embd_scale_sqrt ? sqrtf((float)d->n_embd) : 1.0f;
    d->bos_id = token_id(k->g, "tokenizer.ggml.bos_token_id");
    d->eos_id = token_id(k->g, "tokenizer.ggml.eos_token_id");
    return AARMD_OK;
}

/* Which layers slide: all (Mistral) or a period/array pattern (gemma3). */
static int fill_swa(struct keys *k, const struct aarmd_arch *a, struct aarmd_model_desc *d, uint8_t *swa,
                    char *err, size_t errlen)
{
    if (!d->sliding_window)
        return AARMD_OK;
    if (a->swa == AARMD_SWA_ALL) {
        memset(swa, 1, d->n_layer);
        return AARMD_OK;
    }
    const char *key = akey(k, "attention.sliding_window_pattern");
    const struct aarmd_gguf_value *v = aarmd_gguf_find(k->g, key);
    if (v && v->type == AARMD_GGUF_ARRAY && !v->v.arr.items) {
        if (v->v.arr.n != d->n_layer) {
            set_err(err, errlen, "key %s: %" PRIu64 " entries for %" PRIu32 " layers", key, v->v.arr.n, d->n_layer);
            return AARMD_EINVAL;
        }
        for (uint32_t il = 0; il < d->n_layer; il++)
            swa[il] = aarmd_gguf_arr_i64(v, il) != 0;
        return AARMD_OK;
    }
    uint32_t period = a->swa_period;
    if (v) {
        int rc = get_u32_any(k->g, key, &period, err, errlen);
        if (rc)
            return rc;
    }
    if (period == 0) {
        set_err(err, errlen, "key %s must be > 0", key);
        return AARMD_EINVAL;
    }
    for (uint32_t il = 0; il < d->n_layer; il++)
        swa[il] = period > 1 && il % period < period - 1;
    return AARMD_OK;
}

/* ---- tensors ------------------------------------------------------------ */

/* Weight matrices may use any type the backends decode; 1-D tensors are F32. */
static bool weight_type_ok(uint32_t t)
{
    switch (t) {
    case AARMD_TYPE_F32: case AARMD_TYPE_F16: case AARMD_TYPE_BF16:
    case AARMD_TYPE_Q4_0: case AARMD_TYPE_Q4_1: case AARMD_TYPE_Q5_0: case AARMD_TYPE_Q5_1:
    case AARMD_TYPE_Q8_0: case AARMD_TYPE_Q2_K: case AARMD_TYPE_Q3_K: case AARMD_TYPE_Q4_K:
    case AARMD_TYPE_Q5_K: case AARMD_TYPE_Q6_K:
        return true;
    default:
        return false;
    }
}

static void fmt_dims(char *buf, size_t cap, const int64_t *ne, uint32_t n_dims)
{
    size_t off = 0;
    off += (size_t)snprintf(buf, cap, "{");
    for (uint32_t i = 0; i < n_dims && off < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%" PRId64, i ? ", " : "", ne[i]);
    if (off < cap)
        snprintf(buf + off, cap - off, "}");
}

/* Checks one named tensor against its spec; *found is NULL when absent. */
static int check_tensor(const struct aarmd_gguf *g, const struct aarmd_model_desc *d,
                        const struct aarmd_arch_tensor *spec, const char *name, bool required,
                        const struct aarmd_gguf_tensor **found, char *err, size_t errlen)
{
    int64_t want[2] = {aarmd_arch_dim(d, spec->dim0), aarmd_arch_dim(d, spec->dim1)};
    uint32_t want_dims = spec->dim1 == AARMD_DIM_NONE ? 1 : 2;
    char ws[64], hs[96];
    fmt_dims(ws, sizeof ws, want, want_dims);
    const struct aarmd_gguf_tensor *t = aarmd_gguf_find_tensor(g, name);
    *found = t;
    if (!t) {
        if (!required)
            return AARMD_OK;
        set_err(err, errlen, "missing tensor %s (expected %s)", name, ws);
        return AARMD_EINVAL;
    }
    bool ok = t->ne[0] == want[0] && (want_dims == 1 || t->ne[1] == want[1]);
    for (uint32_t i = want_dims; i < 4; i++)
        ok = ok && t->ne[i] == 1;
    if (!ok) {
        fmt_dims(hs, sizeof hs, t->ne, t->n_dims);
        set_err(err, errlen, "tensor %s has shape %s, expected %s", name, hs, ws);
        return AARMD_EINVAL;
    }
    if (want_dims == 1 && t->type != AARMD_TYPE_F32) {
        set_err(err, errlen, "tensor %s has type %s, expected F32", name, aarmd_type_name(t->type));
        return AARMD_EUNSUPPORTED;
    }
    if (want_dims == 2 && !weight_type_ok(t->type)) {
        set_err(err, errlen, "tensor %s has type %s, not supported (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, "
                "Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)", name, aarmd_type_name(t->type));
        return AARMD_EUNSUPPORTED;
    }
    return AARMD_OK;
}

static int add_tensors(const struct aarmd_gguf *g, const struct aarmd_arch *a, struct model_store *s,
                       char *err, size_t errlen)
{
    struct aarmd_model_desc *d = &s->d;
    char name[128];
    for (int64_t layer = -1; layer < (int64_t)d->n_layer; layer++) {
        /* fused or separate q/k/v for this layer */
        uint32_t mode = a->qkv;
        if (mode == AARMD_QKV_EITHER && layer >= 0) {
            for (size_t i = 0; i < a->n_tensors; i++) {
                if (a->tensors[i].flags & AARMD_T_FUSED) {
                    snprintf(name, sizeof name, "blk.%d.%s", (int)layer, a->tensors[i].name);
                    mode = aarmd_gguf_find_tensor(g, name) ? AARMD_QKV_FUSED : AARMD_QKV_SPLIT;
                    break;
                }
            }
        }
        for (size_t i = 0; i < a->n_tensors; i++) {
            const struct aarmd_arch_tensor *spec = &a->tensors[i];
            bool per_layer = spec->flags & AARMD_T_LAYER;
            if (per_layer != (layer >= 0))
                continue;
            if ((spec->flags & AARMD_T_FUSED) && mode != AARMD_QKV_FUSED)
                continue;
            if ((spec->flags & AARMD_T_SPLIT) && mode != AARMD_QKV_SPLIT)
                continue;
            if (per_layer)
                snprintf(name, sizeof name, "blk.%d.%s", (int)layer, spec->name);
            else
                snprintf(name, sizeof name, "%s", spec->name);
            const struct aarmd_gguf_tensor *t;
            int rc = check_tensor(g, d, spec, name, spec->flags & AARMD_T_REQ, &t, err, errlen);
            if (rc)
                return rc;
            if (!t)
                continue;
            struct aarmd_tensor *o = &s->tensors[d->n_tensors];
            o->name = t->name;
            o->role = spec->role;
            o->layer = (int32_t)layer;
            o->type = t->type;
            o->n_dims = t->n_dims;
            memcpy(o->ne, t->ne, sizeof o->ne);
            o->data = t->data;
            o->nbytes = t->nbytes;
            s->index[(size_t)(layer + 1) * AARMD_ROLE_COUNT + (size_t)spec->role] = (int32_t)d->n_tensors + 1;
            d->n_tensors++;
        }
    }
    return AARMD_OK;
}

/* token_embd first: it gives n_vocab, cross-checked with the vocabulary. */
static int read_vocab(const struct aarmd_gguf *g, struct aarmd_model_desc *d, char *err, size_t errlen)
{
    const struct aarmd_gguf_tensor *t = aarmd_gguf_find_tensor(g, "token_embd.weight");
    if (!t) {
        set_err(err, errlen, "missing tensor token_embd.weight (expected {%" PRIu32 ", n_vocab})", d->n_embd);
        return AARMD_EINVAL;
    }
    if (t->n_dims != 2 || t->ne[0] != d->n_embd || t->ne[1] < 1 || t->ne[1] > INT32_MAX) {
        char hs[96];
        fmt_dims(hs, sizeof hs, t->ne, t->n_dims);
        set_err(err, errlen, "tensor token_embd.weight has shape %s, expected {%" PRIu32 ", n_vocab}", hs, d->n_embd);
        return AARMD_EINVAL;
    }
    d->n_vocab = (uint32_t)t->ne[1];
    const struct aarmd_gguf_value *toks = NULL;
    if (!aarmd_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks)) {
        if (toks->v.arr.n > d->n_vocab) {
            set_err(err, errlen, "tokenizer.ggml.tokens has %" PRIu64 " tokens but token_embd.weight only %" PRIu32 " rows",
                    toks->v.arr.n, d->n_vocab);
            return AARMD_EINVAL;
        }
        if (toks->v.arr.n < d->n_vocab)
            aarmd_log(AARMD_LOG_DEBUG, "model_vocab_padded", "%" PRIu64 " tokens, %" PRIu32 " embedding rows",
                      toks->v.arr.n, d->n_vocab);
    }
    return AARMD_OK;
}

static const char *base_name(const char *path)
{
    if (!path)
        return "model";
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ---- public ------------------------------------------------------------- */

int aarmd_model_desc_from_gguf(const struct aarmd_gguf *g, struct aarmd_model_desc **out,
                               char *err, size_t errlen)
{
    struct model_store *s = NULL;
    int rc = AARMD_EINVAL;
    if (out)
        *out = NULL;
    if (!g || !out) {
        set_err(err, errlen, "model: NULL argument");
        return AARMD_EINVAL;
    }
    char arch[64];
    struct aarmd_gguf_str as;
    if (aarmd_gguf_get_str(g, "general.architecture", &as)) {
        set_err(err, errlen, "missing key general.architecture");
        return AARMD_EINVAL;
    }
    if (as.len >= sizeof arch || memchr(as.data, '\0', (size_t)as.len)) {
        set_err(err, errlen, "unknown architecture '%.*s' (supported: %s)", (int)(as.len < 48 ? as.len : 48),
                as.data, aarmd_arch_list());
        return AARMD_EUNSUPPORTED;
    }
    memcpy(arch, as.data, (size_t)as.len);
    arch[as.len] = '\0';
    const struct aarmd_arch *a = aarmd_arch_find(arch);
    if (!a) {
        set_err(err, errlen, "unknown architecture '%s' (supported: %s)", arch, aarmd_arch_list());
        return AARMD_EUNSUPPORTED;
    }

    s = calloc(1, sizeof *s);
    if (!s)
        goto oom;
    struct aarmd_model_desc *d = &s->d;
    d->struct_size = sizeof *d;
    struct keys k = {.g = g, .arch = a->name};
    if ((rc = read_hparams(&k, a, d, err, errlen)))
        goto fail;
    if ((rc = read_vocab(g, d, err, errlen)))
        goto fail;

    s->arch = strdup(a->name);
    char nm[256];
    if (aarmd_gguf_get_cstr(g, "general.name", nm, sizeof nm) || !*nm)
        snprintf(nm, sizeof nm, "%s", base_name(aarmd_gguf_path(g)));
    s->name = strdup(nm);
    size_t max_tensors = a->n_tensors * ((size_t)d->n_layer + 1);
    s->tensors = calloc(max_tensors, sizeof *s->tensors);
    s->index = calloc(((size_t)d->n_layer + 1) * AARMD_ROLE_COUNT, sizeof *s->index);
    s->swa = calloc(d->n_layer ? d->n_layer : 1, 1);
    if (!s->arch || !s->name || !s->tensors || !s->index || !s->swa)
        goto oom;
    d->arch = s->arch;
    d->name = s->name;

    if ((rc = fill_swa(&k, a, d, s->swa, err, errlen)))
        goto fail;
    d->layer_is_swa = d->sliding_window ? s->swa : NULL;

    if ((rc = add_tensors(g, a, s, err, errlen)))
        goto fail;
    d->tensors = s->tensors;
    d->tied_embeddings = aarmd_model_tensor(d, AARMD_ROLE_OUTPUT, -1) == NULL;

    /* Tensors no role claims are ignored (e.g. rope_factors_long, vision towers). */
    for (uint64_t i = 0; i < aarmd_gguf_n_tensors(g); i++) {
        const struct aarmd_gguf_tensor *t = aarmd_gguf_tensor_at(g, i);
        bool used = false;
        for (uint32_t j = 0; j < d->n_tensors && !used; j++)
            used = d->tensors[j].name == t->name;
        if (!used)
            aarmd_log(AARMD_LOG_DEBUG, "model_tensor_unused", "%s: tensor %s not used by %s",
                      base_name(aarmd_gguf_path(g)), t->name, a->name);
    }
    *out = d;
    return AARMD_OK;
oom:
    set_err(err, errlen, "model: out of memory");
    rc = AARMD_ENOMEM;
fail:
    aarmd_model_desc_free(s ? &s->d : NULL);
    return rc;
}

void aarmd_model_desc_free(struct aarmd_model_desc *d)
{
    if (!d)
        return;
    struct model_store *s = (struct model_store *)d;
    free(s->tensors);
    free(s->swa);
    free(s->index);
    free(s->arch);
    free(s->name);
    free(s);
}

const struct aarmd_tensor *aarmd_model_tensor(const struct aarmd_model_desc *d, int role, int layer)
{
    if (!d || role < 0 || role >= AARMD_ROLE_COUNT || layer < -1 || (layer >= 0 && (uint32_t)layer >= d->n_layer))
        return NULL;
    const struct model_store *s = (const struct model_store *)d;
    int32_t idx = s->index[(size_t)(layer + 1) * AARMD_ROLE_COUNT + (size_t)role];
    return idx ? &s->tensors[idx - 1] : NULL;
}

/* ---- quant kind --------------------------------------------------------- */

/* llama.cpp's llama_ftype values (general.file_type); gaps were removed. */
static const char *const ftype_names[] = {
    [0] = "F32", [1] = "F16", [2] = "Q4_0", [3] = "Q4_1", [4] = "Q4_1_SOME_F16",
    [7] = "Q8_0", [8] = "Q5_0", [9] = "Q5_1", [10] = "Q2_K", [11] = "Q3_K_S", [12] = "Q3_K_M",
    [13] = "Q3_K_L", [14] = "Q4_K_S", [15] = "Q4_K_M", [16] = "Q5_K_S", [17] = "Q5_K_M",
    [18] = "Q6_K", [19] = "IQ2_XXS", [20] = "IQ2_XS", [21] = "Q2_K_S", [22] = "IQ3_XS",
    [23] = "IQ3_XXS", [24] = "IQ1_S", [25] = "IQ4_NL", [26] = "IQ3_S", [27] = "IQ3_M",
    [28] = "IQ2_S", [29] = "IQ2_M", [30] = "IQ4_XS", [31] = "IQ1_M", [32] = "BF16",
    [36] = "TQ1_0", [37] = "TQ2_0", [38] = "MXFP4_MOE",
};

#define FTYPE_GUESSED 1024u

void aarmd_model_quant_kind(const struct aarmd_gguf *g, char *buf, size_t cap)
{
    if (!buf || !cap)
        return;
    buf[0] = '\0';
    uint32_t ft;
    if (g && !aarmd_gguf_get_u32(g, "general.file_type", &ft)) {
        ft &= ~FTYPE_GUESSED;
        if (ft < sizeof ftype_names / sizeof ftype_names[0] && ftype_names[ft]) {
            snprintf(buf, cap, "%s", ftype_names[ft]);
            return;
        }
    }
    /* dominant tensor type by bytes */
    uint64_t bytes[64] = {0};
    for (uint64_t i = 0; g && i < aarmd_gguf_n_tensors(g); i++) {
        const struct aarmd_gguf_tensor *t = aarmd_gguf_tensor_at(g, i);
        if (t->type < 64)
            bytes[t->type] += t->nbytes;
    }
    int best = -1;
    for (int t = 0; t < 64; t++)
        if (bytes[t] && (best < 0 || bytes[t] > bytes[best]))
            best = t;
    snprintf(buf, cap, "%s", best < 0 ? "unknown" : aarmd_type_name((uint32_t)best));
}
