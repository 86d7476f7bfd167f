/*
 * gguf_synth.c — writes synthetic models (see gguf_synth.h) from the same
 * architecture tables the model adapter checks against. Not a converter: no
 * real weights are read, only a vocabulary.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aarmd_backend.h"
#include "ggml_type.h"
#include "gguf.h"
#include "gguf_synth.h"
#include "gguf_write.h"
#include "model_arch.h"
#include "quant_write.h"
#include "workers.h"

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

/* ---- deterministic normal numbers (splitmix64 + Box-Muller) -------------- */

struct rng {
    uint64_t s;
    bool have;
    float spare;
};

static uint64_t rng_u64(struct rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float rng_normal(struct rng *r)
{
    if (r->have) {
        r->have = false;
        return r->spare;
    }
    double u = ((double)(rng_u64(r) >> 11) + 0.5) / 9007199254740992.0;   /* (0, 1) */
    double v = (double)(rng_u64(r) >> 11) / 9007199254740992.0;
    double m = sqrt(-2.0 * log(u));
    r->spare = (float)(m * sin(6.283185307179586 * v));
    r->have = true;
    return (float)(m * cos(6.283185307179586 * v));
}

/* ---- options ------------------------------------------------------------ */

static uint32_t ftype_of(uint32_t type)
{
    switch (type) {
    case AARMD_TYPE_F32: return 0;
    case AARMD_TYPE_F16: return 1;
    case AARMD_TYPE_Q4_0: return 2;
    case AARMD_TYPE_Q4_1: return 3;
    case AARMD_TYPE_Q8_0: return 7;
    case AARMD_TYPE_Q5_0: return 8;
    case AARMD_TYPE_Q5_1: return 9;
    case AARMD_TYPE_Q4_K: return 14;
    case AARMD_TYPE_Q5_K: return 16;
    case AARMD_TYPE_Q6_K: return 18;
    case AARMD_TYPE_BF16: return 32;
    default: return 0;
    }
}

/* Copies tokenizer.* keys; *n_vocab = the token count. */
static int copy_vocab(struct aarmd_gguf_writer *w, const char *path, uint32_t *n_vocab, char *err, size_t errlen)
{
    struct aarmd_gguf *g = NULL;
    int rc = aarmd_gguf_open(path, &g, err, errlen);
    if (rc)
        return rc;
    const struct aarmd_gguf_value *toks;
    if (aarmd_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks) || toks->v.arr.elem_type != AARMD_GGUF_STRING ||
        toks->v.arr.n == 0 || toks->v.arr.n > INT32_MAX) {
        set_err(err, errlen, "%s: no tokenizer.ggml.tokens string array to copy", path);
        rc = AARMD_EINVAL;
        goto fail;
    }
    *n_vocab = (uint32_t)toks->v.arr.n;
    char key[256];
    for (uint64_t i = 0; i < aarmd_gguf_n_kv(g); i++) {
        const struct aarmd_gguf_kv *kv = aarmd_gguf_kv_at(g, i);
        if (kv->key.len < 10 || kv->key.len >= sizeof key || memcmp(kv->key.data, "tokenizer.", 10))
            continue;
        memcpy(key, kv->key.data, (size_t)kv->key.len);
        key[kv->key.len] = '\0';
        if ((rc = aarmd_gguf_writer_set_value(w, key, &kv->value))) {
            set_err(err, errlen, "%s: copying %s: %s", path, key, aarmd_gguf_writer_error(w));
            goto fail;
        }
    }
    rc = AARMD_OK;
fail:
    aarmd_gguf_free(g);
    return rc;
}

/* The generator as it is after `n` more normals drawn from `start` one by one:
 * normals come in pairs from two 64-bit draws each (the second kept as the
 * spare), so the state is a jump of the counter plus at most one pair. */
static struct rng rng_seek(const struct rng *start, uint64_t n)
{
    struct rng r = *start;
    if (n == 0)
        return r;
    if (start->have)   /* the spare is normal 0; pairs start at normal 1 */
        n--;
    r.have = false;
    r.s = start->s + 2 * (n / 2) * 0x9E3779B97F4A7C15ull;
    if (n % 2)
        (void)rng_normal(&r);   /* draws the pair, keeps its second normal as the spare */
    return r;
}

/* Rows of one tensor, filled in parallel: row i continues the generator where
 * i * ne0 normals drawn one by one would leave it, so the file is the same
 * as a single thread's (bit for bit; tests hold references computed from it). */
struct fill {
    uint8_t *data;
    size_t row_bytes;
    int64_t ne0, n_rows, rows_per_item;
    uint32_t type;
    bool is_norm;
    struct rng start;           /* the generator before the tensor's first row */
    float *scratch;             /* [items][ne0] */
};

static void fill_rows(void *ctx, uint32_t item)
{
    const struct fill *f = ctx;
    float *row = f->scratch + (size_t)item * (size_t)f->ne0;
    int64_t end = ((int64_t)item + 1) * f->rows_per_item;
    for (int64_t i = (int64_t)item * f->rows_per_item; i < end && i < f->n_rows; i++) {
        struct rng r = rng_seek(&f->start, (uint64_t)i * (uint64_t)f->ne0);
        for (int64_t j = 0; j < f->ne0; j++)
            row[j] = (f->is_norm ? 1.0f : 0.0f) + 0.02f * rng_normal(&r);
        aarmd_quantize_row(f->type, row, f->data + (size_t)i * f->row_bytes, f->ne0);
    }
}

/* One tensor of random values: matrices in `type`, 1-D in F32. */
static int write_tensor(struct aarmd_gguf_writer *w, struct rng *r, struct aarmd_workers *wk, const char *name,
                        int role, uint32_t type, int64_t ne0, int64_t ne1, char *err, size_t errlen)
{
    bool is_norm = role == AARMD_ROLE_OUTPUT_NORM || role == AARMD_ROLE_ATTN_NORM ||
                   role == AARMD_ROLE_FFN_NORM || role == AARMD_ROLE_ATTN_Q_NORM ||
                   role == AARMD_ROLE_ATTN_K_NORM || role == AARMD_ROLE_ATTN_POST_NORM ||
                   role == AARMD_ROLE_FFN_POST_NORM;
    uint32_t n_dims = ne1 > 0 ? 2 : 1;
    if (n_dims == 1 || role == AARMD_ROLE_POS_EMBD)
        type = AARMD_TYPE_F32;
    const struct aarmd_type_info *ti = aarmd_type_info(type);
    if (ne0 % ti->block_elems) {
        set_err(err, errlen, "tensor %s: ne[0] = %" PRId64 " is not a multiple of %s's block size %" PRIu32
                " (choose --embd, --ff and --heads so that n_embd, n_ff and n_head*head_dim are)",
                name, ne0, ti->name, ti->block_elems);
        return AARMD_EINVAL;
    }
    int64_t ne[2] = {ne0, n_dims == 2 ? ne1 : 1};
    void *data;
    int rc = aarmd_gguf_writer_add_tensor_buf(w, name, type, n_dims, ne, &data);
    if (rc) {
        set_err(err, errlen, "%s", aarmd_gguf_writer_error(w));
        return rc;
    }
    /* about 4 items per thread, at least 16 rows an item */
    int64_t per = ne[1] / (4 * (int64_t)aarmd_workers_count(wk));
    per = per < 16 ? 16 : per;
    struct fill f = {.data = data, .row_bytes = (size_t)(ne0 / ti->block_elems) * ti->block_bytes, .ne0 = ne0,
                     .n_rows = ne[1], .rows_per_item = per, .type = type, .is_norm = is_norm, .start = *r};
    uint32_t items = (uint32_t)((ne[1] + per - 1) / per);
    f.scratch = malloc((size_t)items * (size_t)ne0 * sizeof *f.scratch);
    if (!f.scratch) {
        set_err(err, errlen, "gguf-synth: out of memory");
        return AARMD_ENOMEM;
    }
    aarmd_workers_run(wk, items, fill_rows, &f);
    free(f.scratch);
    *r = rng_seek(r, (uint64_t)ne[1] * (uint64_t)ne0);
    return AARMD_OK;
}

int aarmd_gguf_synth_build(const struct aarmd_synth_opts *o, struct aarmd_gguf_writer **out,
                           char *err, size_t errlen)
{
    struct aarmd_gguf_writer *w = NULL;
    struct aarmd_workers *wk = NULL;
    int rc = AARMD_EINVAL;
    if (out)
        *out = NULL;
    if (!o || !out || !o->arch) {
        set_err(err, errlen, "gguf-synth: an architecture is required (%s)", aarmd_arch_list());
        return AARMD_EINVAL;
    }
    const struct aarmd_arch *a = aarmd_arch_find(o->arch);
    if (!a) {
        set_err(err, errlen, "unknown architecture '%s' (supported: %s)", o->arch, aarmd_arch_list());
        return AARMD_EINVAL;
    }
    if (!aarmd_quant_can_write(o->type)) {
        set_err(err, errlen, "gguf-synth: cannot write type %s (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, "
                "Q4_K, Q5_K, Q6_K)", aarmd_type_name(o->type));
        return AARMD_EINVAL;
    }
    const struct aarmd_type_info *ti = aarmd_type_info(o->type);

    /* shape, in a description so the arch table's symbolic dims resolve */
    struct aarmd_model_desc d = {0};
    d.n_layer = o->n_layer ? o->n_layer : 2;
    d.n_embd = o->n_embd ? o->n_embd : (ti->block_elems == 256 ? 256 : 64);
    d.n_head = o->n_head ? o->n_head : 4;
    bool is_gpt2 = !strcmp(a->name, "gpt2");
    d.n_head_kv = o->n_head_kv ? o->n_head_kv : (is_gpt2 || d.n_head % 2 ? d.n_head : d.n_head / 2);
    d.n_ff = o->n_ff ? o->n_ff : 4 * d.n_embd;
    d.n_ctx_train = o->n_ctx ? o->n_ctx : 512;
    if (d.n_layer > 1024 || d.n_embd > 65536 || d.n_ff > 262144 || d.n_ctx_train > (1u << 24)) {
        set_err(err, errlen, "gguf-synth: shape too large (layers <= 1024, embd <= 65536, ff <= 262144)");
        return AARMD_EINVAL;
    }
    if (d.n_embd % d.n_head || d.n_head % d.n_head_kv) {
        set_err(err, errlen, "gguf-synth: n_embd %" PRIu32 " must be a multiple of n_head %" PRIu32
                ", and n_head of n_head_kv %" PRIu32, d.n_embd, d.n_head, d.n_head_kv);
        return AARMD_EINVAL;
    }
    d.head_dim = d.n_embd / d.n_head;
    d.n_rot = d.head_dim;
    if (d.head_dim % 2) {
        set_err(err, errlen, "gguf-synth: head_dim %" PRIu32 " must be even", d.head_dim);
        return AARMD_EINVAL;
    }

    w = aarmd_gguf_writer_new();
    if (!w) {
        set_err(err, errlen, "gguf-synth: out of memory");
        return AARMD_ENOMEM;
    }
    d.n_vocab = o->n_vocab ? o->n_vocab : 256;

    char name[160], key[160];
#define AK(suffix) (snprintf(key, sizeof key, "%s.%s", a->name, suffix), key)
    aarmd_gguf_writer_set_str(w, "general.architecture", a->name);
    snprintf(name, sizeof name, "synthetic %s %s", a->name, ti->name);
    aarmd_gguf_writer_set_str(w, "general.name", name);
    aarmd_gguf_writer_set_u32(w, "general.file_type", ftype_of(o->type));
    aarmd_gguf_writer_set_u32(w, "general.quantization_version", 2);
    aarmd_gguf_writer_set_alignment(w, 32);
    aarmd_gguf_writer_set_u32(w, AK("context_length"), d.n_ctx_train);
    aarmd_gguf_writer_set_u32(w, AK("embedding_length"), d.n_embd);
    aarmd_gguf_writer_set_u32(w, AK("block_count"), d.n_layer);
    aarmd_gguf_writer_set_u32(w, AK("feed_forward_length"), d.n_ff);
    aarmd_gguf_writer_set_u32(w, AK("attention.head_count"), d.n_head);
    aarmd_gguf_writer_set_u32(w, AK("attention.head_count_kv"), d.n_head_kv);
    if (a->norm_kind == AARMD_NORM_RMS)
        aarmd_gguf_writer_set_f32(w, AK("attention.layer_norm_rms_epsilon"), 1e-6f);
    else
        aarmd_gguf_writer_set_f32(w, AK("attention.layer_norm_epsilon"), 1e-5f);
    if (a->rope_kind != AARMD_ROPE_NONE) {
        bool big_base = !strcmp(a->name, "qwen2") || !strcmp(a->name, "qwen3") || !strcmp(a->name, "gemma3");
        aarmd_gguf_writer_set_f32(w, AK("rope.freq_base"), big_base ? 1e6f : 10000.0f);
        aarmd_gguf_writer_set_u32(w, AK("rope.dimension_count"), d.n_rot);
    }
    if (!strcmp(a->name, "qwen3") || !strcmp(a->name, "gemma3")) {
        aarmd_gguf_writer_set_u32(w, AK("attention.key_length"), d.head_dim);
        aarmd_gguf_writer_set_u32(w, AK("attention.value_length"), d.head_dim);
    }
    if (a->swa == AARMD_SWA_PATTERN)
        aarmd_gguf_writer_set_u32(w, AK("attention.sliding_window"), d.n_ctx_train >= 1024 ? 512 : d.n_ctx_train / 2);
#undef AK
    if (*aarmd_gguf_writer_error(w)) {
        set_err(err, errlen, "%s", aarmd_gguf_writer_error(w));
        rc = AARMD_EINVAL;
        goto fail;
    }
    if (o->vocab_from && (rc = copy_vocab(w, o->vocab_from, &d.n_vocab, err, errlen)))
        goto fail;

    struct rng r = {.s = o->seed ^ 0x5EED5EED5EED5EEDull};
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    char werr[128];
    wk = aarmd_workers_new(cpus > 16 ? 16 : cpus > 1 ? (uint32_t)cpus : 1, werr, sizeof werr);   /* NULL: inline */
    for (int64_t layer = -1; layer < (int64_t)d.n_layer; layer++) {
        for (size_t i = 0; i < a->n_tensors; i++) {
            const struct aarmd_arch_tensor *spec = &a->tensors[i];
            bool per_layer = spec->flags & AARMD_T_LAYER;
            if (per_layer != (layer >= 0) || (spec->flags & AARMD_T_SPLIT))
                continue;
            bool want = (spec->flags & AARMD_T_REQ) || (spec->role == AARMD_ROLE_OUTPUT && o->untied);
            if (!want)
                continue;
            if (per_layer)
                snprintf(name, sizeof name, "blk.%d.%s", (int)layer, spec->name);
            else
                snprintf(name, sizeof name, "%s", spec->name);
            int64_t ne1 = spec->dim1 == AARMD_DIM_NONE ? 0 : aarmd_arch_dim(&d, spec->dim1);
            if ((rc = write_tensor(w, &r, wk, name, spec->role, o->type, aarmd_arch_dim(&d, spec->dim0), ne1,
                                   err, errlen)))
                goto fail;
        }
    }
    aarmd_workers_free(wk);
    *out = w;
    return AARMD_OK;
fail:
    aarmd_workers_free(wk);
    aarmd_gguf_writer_free(w);
    return rc;
}

int aarmd_gguf_synth(const struct aarmd_synth_opts *o, const char *path, char *err, size_t errlen)
{
    struct aarmd_gguf_writer *w = NULL;
    int rc = aarmd_gguf_synth_build(o, &w, err, errlen);
    if (rc)
        return rc;
    rc = aarmd_gguf_writer_write(w, path, err, errlen);
    aarmd_gguf_writer_free(w);
    return rc;
}
