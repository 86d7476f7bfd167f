/*
 * test_model.c — core/model.c: descriptions of the two real models, of
 * synthetic models of every architecture (core/gguf_synth.c), quant_kind,
 * and every error path, on small files built here with the GGUF writer.
 * Expected values are written out independently of core/model_arch.c.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ggml_type.h"
#include "gguf.h"
#include "gguf_synth.h"
#include "gguf_write.h"
#include "model.h"

static char err[512];

static bool open_model(const char *file, struct aarmd_gguf **g)
{
    char path[4096];
    const char *dir = getenv("AARMD_TEST_MODELS");
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "models", file);
    struct stat st;
    if (stat(path, &st) != 0)
        return false;
    cr_assert_eq(aarmd_gguf_open(path, g, err, sizeof err), AARMD_OK, "%s", err);
    return true;
}

static void expect_layer_roles(const struct aarmd_model_desc *d, const int *roles, size_t n)
{
    for (uint32_t il = 0; il < d->n_layer; il++) {
        for (size_t r = 0; r < n; r++) {
            const struct aarmd_tensor *t = aarmd_model_tensor(d, roles[r], (int)il);
            cr_assert_not_null(t, "layer %u role %s missing", il, aarmd_role_name(roles[r]));
            cr_expect_eq(t->layer, (int32_t)il);
            cr_expect_eq(t->role, roles[r]);
            cr_expect_not_null(t->data);
            uint64_t nb;
            cr_assert(aarmd_type_nbytes(t->type, t->ne, t->n_dims, &nb));
            cr_expect_eq(t->nbytes, nb, "%s", t->name);
        }
    }
}

/* ---- real models -------------------------------------------------------- */

Test(model, smollm2_describes_as_llama)
{
    struct aarmd_gguf *g;
    if (!open_model("SmolLM2-135M-Instruct.Q4_1.gguf", &g))
        cr_skip_test("models/SmolLM2-135M-Instruct.Q4_1.gguf not fetched");
    struct aarmd_model_desc *d;
    cr_assert_eq(aarmd_model_desc_from_gguf(g, &d, err, sizeof err), AARMD_OK, "%s", err);
    cr_expect_eq(d->struct_size, sizeof *d);
    cr_expect_str_eq(d->arch, "llama");
    cr_expect_str_eq(d->name, "Smollm2 135M 8k Lc100K Mix1 Ep2");
    cr_expect_eq(d->n_layer, 30);
    cr_expect_eq(d->n_embd, 576);
    cr_expect_eq(d->n_head, 9);
    cr_expect_eq(d->n_head_kv, 3);
    cr_expect_eq(d->head_dim, 64);
    cr_expect_eq(d->n_ff, 1536);
    cr_expect_eq(d->n_vocab, 49152);
    cr_expect_eq(d->n_ctx_train, 8192);
    cr_expect_eq(d->rope_kind, AARMD_ROPE_NORMAL);
    cr_expect_eq(d->n_rot, 64);
    cr_expect_eq(d->rope_freq_base, 100000.0f);
    cr_expect_eq(d->rope_freq_base_swa, 100000.0f);
    cr_expect_eq(d->rope_scaling, AARMD_ROPE_SCALING_NONE);
    cr_expect_eq(d->rope_scale, 1.0f);
    cr_expect_eq(d->norm_kind, AARMD_NORM_RMS);
    cr_expect_float_eq(d->norm_eps, 1e-5f, 1e-9f);
    cr_expect_eq(d->act, AARMD_ACT_SILU_GATED);
    cr_expect_float_eq(d->attn_scale, 0.125f, 1e-7f);
    cr_expect_eq(d->attn_logit_softcap, 0.0f);
    cr_expect_eq(d->final_logit_softcap, 0.0f);
    cr_expect_eq(d->sliding_window, 0);
    cr_expect_null(d->layer_is_swa);
    cr_expect_eq(d->tied_embeddings, 1);
    cr_expect_eq(d->embd_scale, 1.0f);
    cr_expect_eq(d->bos_id, 1);
    cr_expect_eq(d->eos_id, 2);
    cr_expect_eq(d->n_tensors, 272);
    cr_expect_null(aarmd_model_tensor(d, AARMD_ROLE_OUTPUT, -1));
    const struct aarmd_tensor *emb = aarmd_model_tensor(d, AARMD_ROLE_TOKEN_EMBD, -1);
    cr_assert_not_null(emb);
    cr_expect_str_eq(emb->name, "token_embd.weight");
    cr_expect_eq(emb->type, AARMD_TYPE_Q8_0);
    cr_expect_eq(emb->ne[0], 576);
    cr_expect_eq(emb->ne[1], 49152);
    cr_expect_eq(emb->layer, -1);
    const struct aarmd_tensor *k = aarmd_model_tensor(d, AARMD_ROLE_ATTN_K, 29);
    cr_assert_not_null(k);
    cr_expect_str_eq(k->name, "blk.29.attn_k.weight");
    cr_expect_eq(k->type, AARMD_TYPE_Q4_1);
    cr_expect_eq(k->ne[1], 192);
    static const int roles[] = {AARMD_ROLE_ATTN_NORM, AARMD_ROLE_ATTN_Q, AARMD_ROLE_ATTN_K, AARMD_ROLE_ATTN_V,
                                AARMD_ROLE_ATTN_OUT, AARMD_ROLE_FFN_NORM, AARMD_ROLE_FFN_GATE,
                                AARMD_ROLE_FFN_UP, AARMD_ROLE_FFN_DOWN};
    expect_layer_roles(d, roles, sizeof roles / sizeof roles[0]);
    cr_expect_null(aarmd_model_tensor(d, AARMD_ROLE_ATTN_Q_B, 0));
    cr_expect_null(aarmd_model_tensor(d, AARMD_ROLE_ATTN_Q, 30));
    cr_expect_null(aarmd_model_tensor(d, AARMD_ROLE_ATTN_Q, -2));
    cr_expect_null(aarmd_model_tensor(d, AARMD_ROLE_COUNT, 0));
    /* each tensor exactly once */
    for (uint32_t i = 0; i < d->n_tensors; i++)
        for (uint32_t j = i + 1; j < d->n_tensors; j++)
            cr_assert(strcmp(d->tensors[i].name, d->tensors[j].name), "%s twice", d->tensors[i].name);

    char q[32];
    aarmd_model_quant_kind(g, q, sizeof q);
    cr_expect_str_eq(q, "Q4_1");
    aarmd_model_desc_free(d);
    aarmd_gguf_free(g);
}

Test(model, gemma3_270m_describes_as_gemma3)
{
    struct aarmd_gguf *g;
    if (!open_model("gemma-3-270m-q4_k_m.gguf", &g))
        cr_skip_test("models/gemma-3-270m-q4_k_m.gguf not fetched");
    struct aarmd_model_desc *d;
    cr_assert_eq(aarmd_model_desc_from_gguf(g, &d, err, sizeof err), AARMD_OK, "%s", err);
    cr_expect_str_eq(d->arch, "gemma3");
    cr_expect_str_eq(d->name, "Gemma 3 270m");
    cr_expect_eq(d->n_layer, 18);
    cr_expect_eq(d->n_embd, 640);
    cr_expect_eq(d->n_head, 4);
    cr_expect_eq(d->n_head_kv, 1);
    cr_expect_eq(d->head_dim, 256);        /* attention.key_length, not 640/4 */
    cr_expect_eq(d->n_ff, 2048);
    cr_expect_eq(d->n_vocab, 262144);
    cr_expect_eq(d->n_ctx_train, 32768);
    cr_expect_eq(d->rope_kind, AARMD_ROPE_NEOX);
    cr_expect_eq(d->n_rot, 256);
    cr_expect_eq(d->rope_freq_base, 1000000.0f);
    cr_expect_eq(d->rope_freq_base_swa, 10000.0f);
    cr_expect_eq(d->norm_kind, AARMD_NORM_RMS);
    cr_expect_float_eq(d->norm_eps, 1e-6f, 1e-10f);
    cr_expect_eq(d->act, AARMD_ACT_GELU_GATED);
    cr_expect_float_eq(d->attn_scale, 1.0f / 16.0f, 1e-7f);
    cr_expect_eq(d->sliding_window, 512);
    cr_assert_not_null(d->layer_is_swa);
    for (uint32_t il = 0; il < 18; il++)
        cr_expect_eq(d->layer_is_swa[il], (il % 6 == 5) ? 0 : 1, "layer %u", il);
    cr_expect_eq(d->tied_embeddings, 1);
    cr_expect_float_eq(d->embd_scale, sqrtf(640.0f), 1e-4f);
    cr_expect_eq(d->bos_id, 2);
    cr_expect_eq(d->eos_id, 1);
    cr_expect_eq(d->n_tensors, 236);
    static const int roles[] = {AARMD_ROLE_ATTN_NORM, AARMD_ROLE_ATTN_Q, AARMD_ROLE_ATTN_K, AARMD_ROLE_ATTN_V,
                                AARMD_ROLE_ATTN_Q_NORM, AARMD_ROLE_ATTN_K_NORM, AARMD_ROLE_ATTN_OUT,
                                AARMD_ROLE_ATTN_POST_NORM, AARMD_ROLE_FFN_NORM, AARMD_ROLE_FFN_GATE,
                                AARMD_ROLE_FFN_UP, AARMD_ROLE_FFN_DOWN, AARMD_ROLE_FFN_POST_NORM};
    expect_layer_roles(d, roles, sizeof roles / sizeof roles[0]);
    const struct aarmd_tensor *qn = aarmd_model_tensor(d, AARMD_ROLE_ATTN_Q_NORM, 3);
    cr_expect_eq(qn->ne[0], 256);
    cr_expect_eq(qn->n_dims, 1);
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_ATTN_OUT, 0)->ne[0], 1024);
    char q[32];
    aarmd_model_quant_kind(g, q, sizeof q);
    cr_expect_str_eq(q, "Q4_K_M");
    aarmd_model_desc_free(d);
    aarmd_gguf_free(g);
}

/* ---- synthetic models of every architecture ------------------------------ */

struct arch_case {
    char arch[8];
    uint32_t type;
    uint32_t rope_kind, norm_kind, act;
    int fused_qkv, qkv_bias, all_bias, qk_norm, post_norms, pos_embd, up_gate, swa_pattern;
    float embd_scale_sqrt;   /* 1: sqrt(n_embd) */
};

static struct arch_case arch_cases[] = {
    {"llama", AARMD_TYPE_F32, AARMD_ROPE_NORMAL, AARMD_NORM_RMS, AARMD_ACT_SILU_GATED, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"llama", AARMD_TYPE_Q4_K, AARMD_ROPE_NORMAL, AARMD_NORM_RMS, AARMD_ACT_SILU_GATED, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"qwen2", AARMD_TYPE_Q8_0, AARMD_ROPE_NEOX, AARMD_NORM_RMS, AARMD_ACT_SILU_GATED, 0, 1, 0, 0, 0, 0, 0, 0, 0},
    {"qwen3", AARMD_TYPE_BF16, AARMD_ROPE_NEOX, AARMD_NORM_RMS, AARMD_ACT_SILU_GATED, 0, 0, 0, 1, 0, 0, 0, 0, 0},
    {"phi3", AARMD_TYPE_Q4_0, AARMD_ROPE_NEOX, AARMD_NORM_RMS, AARMD_ACT_SILU_GATED, 1, 0, 0, 0, 0, 0, 1, 0, 0},
    {"gpt2", AARMD_TYPE_F16, AARMD_ROPE_NONE, AARMD_NORM_LAYER, AARMD_ACT_GELU, 1, 0, 1, 0, 0, 1, 0, 0, 0},
    {"gemma3", AARMD_TYPE_Q6_K, AARMD_ROPE_NEOX, AARMD_NORM_RMS, AARMD_ACT_GELU_GATED, 0, 0, 0, 1, 1, 0, 0, 1, 1},
    {"gemma3", AARMD_TYPE_Q5_1, AARMD_ROPE_NEOX, AARMD_NORM_RMS, AARMD_ACT_GELU_GATED, 0, 0, 0, 1, 1, 0, 0, 1, 1},
};

ParameterizedTestParameters(model, synthetic_models_describe)
{
    return cr_make_param_array(struct arch_case, arch_cases, sizeof arch_cases / sizeof arch_cases[0]);
}

static struct aarmd_gguf *synth_mem(const struct aarmd_synth_opts *o, void **buf)
{
    struct aarmd_gguf_writer *w = NULL;
    cr_assert_eq(aarmd_gguf_synth_build(o, &w, err, sizeof err), AARMD_OK, "%s", err);
    size_t size;
    cr_assert_eq(aarmd_gguf_writer_to_mem(w, buf, &size, err, sizeof err), AARMD_OK, "%s", err);
    aarmd_gguf_writer_free(w);
    struct aarmd_gguf *g = NULL;
    cr_assert_eq(aarmd_gguf_open_mem(*buf, size, "synth", &g, err, sizeof err), AARMD_OK, "%s", err);
    return g;
}

ParameterizedTest(struct arch_case *c, model, synthetic_models_describe)
{
    bool kq = aarmd_type_info(c->type)->block_elems == 256;
    struct aarmd_synth_opts o = {
        .arch = c->arch, .type = c->type, .n_layer = 7, .n_embd = kq ? 256 : 96, .n_head = 4,
        .n_head_kv = 2, .n_ff = kq ? 512 : 160, .n_ctx = 64, .n_vocab = 40, .seed = 7,
    };
    if (!strcmp(c->arch, "gpt2"))
        o.n_head_kv = 4;
    void *buf;
    struct aarmd_gguf *g = synth_mem(&o, &buf);
    struct aarmd_model_desc *d;
    cr_assert_eq(aarmd_model_desc_from_gguf(g, &d, err, sizeof err), AARMD_OK, "%s: %s", c->arch, err);
    cr_expect_str_eq(d->arch, c->arch);
    cr_expect_eq(d->n_layer, 7);
    cr_expect_eq(d->n_embd, o.n_embd);
    cr_expect_eq(d->n_head, 4);
    cr_expect_eq(d->n_head_kv, o.n_head_kv);
    cr_expect_eq(d->head_dim, o.n_embd / 4);
    cr_expect_eq(d->n_ff, o.n_ff);
    cr_expect_eq(d->n_vocab, 40);
    cr_expect_eq(d->n_ctx_train, 64);
    cr_expect_eq(d->rope_kind, c->rope_kind);
    cr_expect_eq(d->n_rot, c->rope_kind == AARMD_ROPE_NONE ? 0 : o.n_embd / 4);
    cr_expect_eq(d->norm_kind, c->norm_kind);
    cr_expect_eq(d->act, c->act);
    cr_expect_float_eq(d->attn_scale, 1.0f / sqrtf((float)(o.n_embd / 4)), 1e-6f);
    cr_expect_eq(d->tied_embeddings, strcmp(c->arch, "phi3") ? 1 : 0);
    cr_expect_float_eq(d->embd_scale, c->embd_scale_sqrt ? sqrtf((float)o.n_embd) : 1.0f, 1e-5f);
    cr_expect_eq(d->bos_id, -1);
    cr_expect_eq(d->eos_id, -1);

    const int L = 0;
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_ATTN_QKV, L) != NULL, c->fused_qkv, "%s qkv", c->arch);
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_ATTN_Q, L) != NULL, !c->fused_qkv, "%s q", c->arch);
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_ATTN_Q_B, L) != NULL, c->qkv_bias, "%s q bias", c->arch);
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_ATTN_QKV_B, L) != NULL, c->all_bias, "%s qkv bias", c->arch);
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_FFN_DOWN_B, L) != NULL, c->all_bias, "%s down bias", c->arch);
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_ATTN_NORM_B, L) != NULL, c->all_bias, "%s norm bias", c->arch);
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_ATTN_Q_NORM, L) != NULL, c->qk_norm, "%s q norm", c->arch);
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_ATTN_POST_NORM, L) != NULL, c->post_norms, "%s", c->arch);
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_FFN_POST_NORM, L) != NULL, c->post_norms, "%s", c->arch);
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_POS_EMBD, -1) != NULL, c->pos_embd, "%s", c->arch);
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_FFN_UP_GATE, L) != NULL, c->up_gate, "%s", c->arch);
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_FFN_GATE, L) != NULL, !c->up_gate && c->act != AARMD_ACT_GELU,
                 "%s gate", c->arch);
    if (c->fused_qkv) {
        const struct aarmd_tensor *t = aarmd_model_tensor(d, AARMD_ROLE_ATTN_QKV, 6);
        cr_expect_eq(t->ne[1], (4 + 2 * o.n_head_kv) * (o.n_embd / 4));
    }
    if (c->up_gate)
        cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_FFN_UP_GATE, 6)->ne[1], 2 * o.n_ff);
    const struct aarmd_tensor *q = aarmd_model_tensor(d, c->fused_qkv ? AARMD_ROLE_ATTN_QKV : AARMD_ROLE_ATTN_Q, 3);
    cr_expect_eq(q->type, c->type, "weights in the requested type");
    cr_expect_eq(aarmd_model_tensor(d, AARMD_ROLE_ATTN_NORM, 3)->type, AARMD_TYPE_F32);
    if (c->swa_pattern) {
        cr_expect_eq(d->sliding_window, 32);   /* ctx 64 / 2 */
        cr_assert_not_null(d->layer_is_swa);
        for (uint32_t il = 0; il < 7; il++)
            cr_expect_eq(d->layer_is_swa[il], il == 5 ? 0 : 1, "layer %u", il);
    } else {
        cr_expect_eq(d->sliding_window, 0);
        cr_expect_null(d->layer_is_swa);
    }
    char qk[32];
    aarmd_model_quant_kind(g, qk, sizeof qk);
    const char *want = c->type == AARMD_TYPE_Q4_K ? "Q4_K_S" : aarmd_type_name(c->type);
    cr_expect_str_eq(qk, want);
    aarmd_model_desc_free(d);
    aarmd_gguf_free(g);
    free(buf);
}

Test(model, synth_copies_a_vocabulary_and_is_deterministic)
{
    char vocab[4096];
    snprintf(vocab, sizeof vocab, "%s/vocab/ggml-vocab-llama-spm.gguf", getenv("AARMD_TEST_DATA"));
    struct aarmd_synth_opts o = {.arch = "llama", .type = AARMD_TYPE_Q8_0, .vocab_from = vocab, .seed = 3};
    void *b1, *b2;
    struct aarmd_gguf *g1 = synth_mem(&o, &b1), *g2 = synth_mem(&o, &b2);
    struct aarmd_model_desc *d;
    cr_assert_eq(aarmd_model_desc_from_gguf(g1, &d, err, sizeof err), AARMD_OK, "%s", err);
    cr_expect_eq(d->n_vocab, 32000);
    cr_expect_eq(d->n_layer, 2);
    cr_expect_eq(d->n_embd, 64);
    cr_expect_eq(d->bos_id, 1);
    cr_expect_eq(d->eos_id, 2);
    char model[32];
    cr_assert_eq(aarmd_gguf_get_cstr(g1, "tokenizer.ggml.model", model, sizeof model), AARMD_OK);
    cr_expect_str_eq(model, "llama");
    const struct aarmd_gguf_tensor *t1 = aarmd_gguf_find_tensor(g1, "blk.1.ffn_down.weight");
    const struct aarmd_gguf_tensor *t2 = aarmd_gguf_find_tensor(g2, "blk.1.ffn_down.weight");
    cr_assert_eq(t1->nbytes, t2->nbytes);
    cr_expect(!memcmp(t1->data, t2->data, t1->nbytes), "same seed, same weights");
    aarmd_model_desc_free(d);
    aarmd_gguf_free(g2);
    free(b2);
    o.seed = 4;
    g2 = synth_mem(&o, &b2);
    t2 = aarmd_gguf_find_tensor(g2, "blk.1.ffn_down.weight");
    cr_expect(memcmp(t1->data, t2->data, t1->nbytes), "another seed, other weights");
    /* weights look like N(0, 0.02), norms like 1 */
    const float *norm = aarmd_gguf_find_tensor(g2, "blk.0.attn_norm.weight")->data;
    for (int i = 0; i < 64; i++)
        cr_expect(fabsf(norm[i] - 1.0f) < 0.15f, "norm[%d] = %g", i, (double)norm[i]);
    aarmd_gguf_free(g1);
    aarmd_gguf_free(g2);
    free(b1);
    free(b2);
}

Test(model, synth_errors)
{
    struct aarmd_gguf_writer *w = NULL;
    struct aarmd_synth_opts o = {.arch = "mamba", .type = AARMD_TYPE_F32};
    cr_expect_eq(aarmd_gguf_synth_build(&o, &w, err, sizeof err), AARMD_EINVAL);
    cr_expect_str_eq(err, "unknown architecture 'mamba' (supported: llama, qwen2, qwen3, phi3, gpt2, gemma3)");
    o.arch = "llama";
    o.type = AARMD_TYPE_Q2_K;
    cr_expect_eq(aarmd_gguf_synth_build(&o, &w, err, sizeof err), AARMD_EINVAL);
    cr_expect(strstr(err, "cannot write type Q2_K"), "%s", err);
    o.type = AARMD_TYPE_Q4_K;
    o.n_embd = 128;
    cr_expect_eq(aarmd_gguf_synth_build(&o, &w, err, sizeof err), AARMD_EINVAL);
    cr_expect(strstr(err, "tensor token_embd.weight: ne[0] = 128 is not a multiple of Q4_K's block size 256"),
              "%s", err);
    o.type = AARMD_TYPE_F32;
    o.n_embd = 66;
    cr_expect_eq(aarmd_gguf_synth_build(&o, &w, err, sizeof err), AARMD_EINVAL);
    cr_expect(strstr(err, "n_embd 66 must be a multiple of n_head 4"), "%s", err);
    o.n_embd = 0;
    o.vocab_from = "/nonexistent.gguf";
    cr_expect_eq(aarmd_gguf_synth_build(&o, &w, err, sizeof err), AARMD_EIO);
    cr_expect(strstr(err, "/nonexistent.gguf"), "%s", err);
    cr_expect_null(w);
}

/* ---- hand-built files for the error paths -------------------------------- */

/* A 1-layer llama-shaped file: embd 32, 4 heads, 2 kv heads, ff 64, vocab 16.
 * `edit` may change it before it is serialized. */
struct mini {
    const char *arch;
    const char *skip_key;
    const char *skip_tensor;
    const char *reshape;       /* tensor to give shape {ne0, ne1} */
    int64_t ne0, ne1;
    const char *retype;        /* tensor to store as `type` */
    uint32_t type;
    void (*edit)(struct aarmd_gguf_writer *w);
};

static void add_zero(struct aarmd_gguf_writer *w, const struct mini *m, const char *name, int64_t ne0, int64_t ne1)
{
    if (m->skip_tensor && !strcmp(name, m->skip_tensor))
        return;
    uint32_t type = AARMD_TYPE_F32;
    if (m->reshape && !strcmp(name, m->reshape)) {
        ne0 = m->ne0;
        ne1 = m->ne1;
    }
    if (m->retype && !strcmp(name, m->retype))
        type = m->type;
    int64_t ne[2] = {ne0, ne1};
    void *data;
    cr_assert_eq(aarmd_gguf_writer_add_tensor_buf(w, name, type, ne1 ? 2 : 1, ne, &data), AARMD_OK,
                 "%s", aarmd_gguf_writer_error(w));
}

static void put_u32(struct aarmd_gguf_writer *w, const struct mini *m, const char *key, uint32_t v)
{
    if (!m->skip_key || strcmp(key, m->skip_key))
        aarmd_gguf_writer_set_u32(w, key, v);
}

static int describe_mini(const struct mini *m, struct aarmd_model_desc **d, struct aarmd_gguf **g, void **buf)
{
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    const char *a = m->arch ? m->arch : "llama";
    char k[128];
    if (!m->skip_key || strcmp(m->skip_key, "general.architecture"))
        aarmd_gguf_writer_set_str(w, "general.architecture", a);
#define K(s) (snprintf(k, sizeof k, "llama.%s", s), k)
    put_u32(w, m, K("context_length"), 128);
    put_u32(w, m, K("embedding_length"), 32);
    put_u32(w, m, K("block_count"), 1);
    put_u32(w, m, K("feed_forward_length"), 64);
    put_u32(w, m, K("attention.head_count"), 4);
    put_u32(w, m, K("attention.head_count_kv"), 2);
    if (!m->skip_key || strcmp(m->skip_key, K("attention.layer_norm_rms_epsilon")))
        aarmd_gguf_writer_set_f32(w, K("attention.layer_norm_rms_epsilon"), 1e-5f);
#undef K
    add_zero(w, m, "token_embd.weight", 32, 16);
    add_zero(w, m, "output_norm.weight", 32, 0);
    add_zero(w, m, "blk.0.attn_norm.weight", 32, 0);
    add_zero(w, m, "blk.0.attn_q.weight", 32, 32);
    add_zero(w, m, "blk.0.attn_k.weight", 32, 16);
    add_zero(w, m, "blk.0.attn_v.weight", 32, 16);
    add_zero(w, m, "blk.0.attn_output.weight", 32, 32);
    add_zero(w, m, "blk.0.ffn_norm.weight", 32, 0);
    add_zero(w, m, "blk.0.ffn_gate.weight", 32, 64);
    add_zero(w, m, "blk.0.ffn_up.weight", 32, 64);
    add_zero(w, m, "blk.0.ffn_down.weight", 64, 32);
    if (m->edit)
        m->edit(w);
    size_t size;
    cr_assert_eq(aarmd_gguf_writer_to_mem(w, buf, &size, err, sizeof err), AARMD_OK, "%s", err);
    aarmd_gguf_writer_free(w);
    cr_assert_eq(aarmd_gguf_open_mem(*buf, size, "mini.gguf", g, err, sizeof err), AARMD_OK, "%s", err);
    err[0] = '\0';
    return aarmd_model_desc_from_gguf(*g, d, err, sizeof err);
}

static void done_mini(struct aarmd_model_desc *d, struct aarmd_gguf *g, void *buf)
{
    aarmd_model_desc_free(d);
    aarmd_gguf_free(g);
    free(buf);
}

Test(model, mini_file_is_valid)
{
    struct mini m = {0};
    struct aarmd_model_desc *d;
    struct aarmd_gguf *g;
    void *buf;
    cr_assert_eq(describe_mini(&m, &d, &g, &buf), AARMD_OK, "%s", err);
    cr_expect_eq(d->n_vocab, 16);
    cr_expect_eq(d->head_dim, 8);
    cr_expect_eq(d->n_tensors, 11);
    cr_expect_eq(d->rope_freq_base, 10000.0f);   /* default */
    cr_expect_eq(d->n_rot, 8);                   /* default: head_dim */
    cr_expect_str_eq(d->name, "mini.gguf");      /* no general.name: the file name */
    done_mini(d, g, buf);
}

struct err_case {
    char skip_key[64];
    char skip_tensor[40];
    char reshape[40];
    int64_t ne0, ne1;
    char retype[40];
    uint32_t type;
    char arch[16];
    int rc;
    char msg[160];
};

static struct err_case err_cases[] = {
    {.skip_tensor = "blk.0.attn_k.weight", .rc = AARMD_EINVAL,
     .msg = "missing tensor blk.0.attn_k.weight (expected {32, 16})"},
    {.skip_tensor = "output_norm.weight", .rc = AARMD_EINVAL, .msg = "missing tensor output_norm.weight (expected {32})"},
    {.skip_tensor = "token_embd.weight", .rc = AARMD_EINVAL,
     .msg = "missing tensor token_embd.weight (expected {32, n_vocab})"},
    {.skip_tensor = "blk.0.ffn_down.weight", .rc = AARMD_EINVAL,
     .msg = "missing tensor blk.0.ffn_down.weight (expected {64, 32})"},
    {.reshape = "blk.0.attn_q.weight", .ne0 = 32, .ne1 = 24, .rc = AARMD_EINVAL,
     .msg = "tensor blk.0.attn_q.weight has shape {32, 24}, expected {32, 32}"},
    {.reshape = "blk.0.ffn_down.weight", .ne0 = 32, .ne1 = 64, .rc = AARMD_EINVAL,
     .msg = "tensor blk.0.ffn_down.weight has shape {32, 64}, expected {64, 32}"},
    {.reshape = "blk.0.attn_norm.weight", .ne0 = 32, .ne1 = 2, .rc = AARMD_EINVAL,
     .msg = "tensor blk.0.attn_norm.weight has shape {32, 2}, expected {32}"},
    {.reshape = "token_embd.weight", .ne0 = 16, .ne1 = 16, .rc = AARMD_EINVAL,
     .msg = "tensor token_embd.weight has shape {16, 16}, expected {32, n_vocab}"},
    {.retype = "blk.0.ffn_norm.weight", .type = AARMD_TYPE_F16, .rc = AARMD_EUNSUPPORTED,
     .msg = "tensor blk.0.ffn_norm.weight has type F16, expected F32"},
    {.retype = "blk.0.attn_v.weight", .type = AARMD_TYPE_I32, .rc = AARMD_EUNSUPPORTED,
     .msg = "tensor blk.0.attn_v.weight has type I32, not supported"},
    {.arch = "mamba", .rc = AARMD_EUNSUPPORTED,
     .msg = "unknown architecture 'mamba' (supported: llama, qwen2, qwen3, phi3, gpt2, gemma3)"},
    {.skip_key = "general.architecture", .rc = AARMD_EINVAL, .msg = "missing key general.architecture"},
    {.skip_key = "llama.block_count", .rc = AARMD_EINVAL, .msg = "missing key llama.block_count"},
    {.skip_key = "llama.embedding_length", .rc = AARMD_EINVAL, .msg = "missing key llama.embedding_length"},
    {.skip_key = "llama.attention.head_count", .rc = AARMD_EINVAL, .msg = "missing key llama.attention.head_count"},
    {.skip_key = "llama.feed_forward_length", .rc = AARMD_EINVAL, .msg = "missing key llama.feed_forward_length"},
    {.skip_key = "llama.context_length", .rc = AARMD_EINVAL, .msg = "missing key llama.context_length"},
    {.skip_key = "llama.attention.layer_norm_rms_epsilon", .rc = AARMD_EINVAL,
     .msg = "missing key llama.attention.layer_norm_rms_epsilon"},
    /* kv heads default to heads: then attn_k must be {32, 32} */
    {.skip_key = "llama.attention.head_count_kv", .rc = AARMD_EINVAL,
     .msg = "tensor blk.0.attn_k.weight has shape {32, 16}, expected {32, 32}"},
};

ParameterizedTestParameters(model, bad_files_give_clear_errors)
{
    return cr_make_param_array(struct err_case, err_cases, sizeof err_cases / sizeof err_cases[0]);
}

ParameterizedTest(struct err_case *c, model, bad_files_give_clear_errors)
{
    struct mini m = {
        .arch = c->arch[0] ? c->arch : NULL,
        .skip_key = c->skip_key[0] ? c->skip_key : NULL,
        .skip_tensor = c->skip_tensor[0] ? c->skip_tensor : NULL,
        .reshape = c->reshape[0] ? c->reshape : NULL, .ne0 = c->ne0, .ne1 = c->ne1,
        .retype = c->retype[0] ? c->retype : NULL, .type = c->type,
    };
    struct aarmd_model_desc *d = (void *)1;
    struct aarmd_gguf *g;
    void *buf;
    cr_expect_eq(describe_mini(&m, &d, &g, &buf), c->rc, "%s", err);
    cr_expect_null(d);
    cr_expect(!strncmp(err, c->msg, strlen(c->msg)), "got \"%s\", want \"%s\"", err, c->msg);
    done_mini(NULL, g, buf);
}

/* ---- key variants -------------------------------------------------------- */

static void edit_bad_kv(struct aarmd_gguf_writer *w) { aarmd_gguf_writer_set_u32(w, "llama.attention.head_count_kv", 3); }
static void edit_too_many_tokens(struct aarmd_gguf_writer *w)
{
    const char *toks[17];
    for (int i = 0; i < 17; i++)
        toks[i] = "t";
    aarmd_gguf_writer_set_str_arr(w, "tokenizer.ggml.tokens", toks, 17);
}
static void edit_longrope(struct aarmd_gguf_writer *w) { aarmd_gguf_writer_set_str(w, "llama.rope.scaling.type", "longrope"); }
static void edit_uneven_heads(struct aarmd_gguf_writer *w)
{
    uint32_t heads[1] = {4};
    int32_t bad[2] = {4, 8};
    aarmd_gguf_writer_set_arr(w, "llama.attention.head_count", AARMD_GGUF_U32, heads, 1);
    aarmd_gguf_writer_set_arr(w, "llama.attention.head_count_kv", AARMD_GGUF_I32, bad, 2);
}
static void edit_str_layers(struct aarmd_gguf_writer *w) { aarmd_gguf_writer_set_str(w, "llama.block_count", "one"); }
static void edit_rot(struct aarmd_gguf_writer *w) { aarmd_gguf_writer_set_u32(w, "llama.rope.dimension_count", 9); }

Test(model, bad_keys_give_clear_errors)
{
    const struct {
        void (*edit)(struct aarmd_gguf_writer *);
        int rc;
        const char *msg;
    } cases[] = {
        {edit_bad_kv, AARMD_EINVAL, "key llama.attention.head_count_kv: 3 kv heads do not divide 4 heads"},
        {edit_too_many_tokens, AARMD_EINVAL, "tokenizer.ggml.tokens has 17 tokens but token_embd.weight only 16 rows"},
        {edit_longrope, AARMD_EUNSUPPORTED, "key llama.rope.scaling.type: rope scaling 'longrope' is not supported"},
        {edit_uneven_heads, AARMD_EUNSUPPORTED, "key llama.attention.head_count_kv: per-layer values differ (layer 1)"},
        {edit_str_layers, AARMD_EINVAL, "key llama.block_count: expected an unsigned 32-bit integer, found string"},
        {edit_rot, AARMD_EINVAL, "key llama.rope.dimension_count: 9 rotary dims must be even and <= head_dim 8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct mini m = {.edit = cases[i].edit};
        struct aarmd_model_desc *d;
        struct aarmd_gguf *g;
        void *buf;
        cr_expect_eq(describe_mini(&m, &d, &g, &buf), cases[i].rc, "case %zu: %s", i, err);
        cr_expect(!strncmp(err, cases[i].msg, strlen(cases[i].msg)), "got \"%s\", want \"%s\"", err, cases[i].msg);
        done_mini(d, g, buf);
    }
}

static void edit_features(struct aarmd_gguf_writer *w)
{
    aarmd_gguf_writer_set_str(w, "general.name", "Mistral-ish");
    aarmd_gguf_writer_set_f32(w, "llama.rope.freq_base", 500000.0f);
    aarmd_gguf_writer_set_u32(w, "llama.rope.dimension_count", 4);
    aarmd_gguf_writer_set_str(w, "llama.rope.scaling.type", "yarn");
    aarmd_gguf_writer_set_f32(w, "llama.rope.scaling.factor", 4.0f);
    aarmd_gguf_writer_set_u32(w, "llama.rope.scaling.original_context_length", 32);
    aarmd_gguf_writer_set_f32(w, "llama.rope.scaling.yarn_beta_fast", 16.0f);
    aarmd_gguf_writer_set_u32(w, "llama.attention.sliding_window", 8);
    aarmd_gguf_writer_set_f32(w, "llama.attention.scale", 0.5f);
    aarmd_gguf_writer_set_f32(w, "llama.attn_logit_softcapping", 50.0f);
    aarmd_gguf_writer_set_f32(w, "llama.final_logit_softcapping", 30.0f);
    aarmd_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 5);
    aarmd_gguf_writer_set_i32(w, "tokenizer.ggml.eos_token_id", 6);
    const char *toks[12];
    for (int i = 0; i < 12; i++)
        toks[i] = "t";
    aarmd_gguf_writer_set_str_arr(w, "tokenizer.ggml.tokens", toks, 12);   /* fewer than rows: padded vocab */
    int64_t ne[2] = {32, 16}, ne_b[1] = {32}, ne_f[1] = {2};
    void *p;
    aarmd_gguf_writer_add_tensor_buf(w, "output.weight", AARMD_TYPE_Q8_0, 2, ne, &p);
    aarmd_gguf_writer_add_tensor_buf(w, "blk.0.attn_q.bias", AARMD_TYPE_F32, 1, ne_b, &p);
    aarmd_gguf_writer_add_tensor_buf(w, "rope_freqs.weight", AARMD_TYPE_F32, 1, ne_f, &p);
    aarmd_gguf_writer_add_tensor_buf(w, "blk.0.something_else.weight", AARMD_TYPE_F32, 1, ne_b, &p);
}

Test(model, optional_keys_and_tensors)
{
    struct mini m = {.edit = edit_features};
    struct aarmd_model_desc *d;
    struct aarmd_gguf *g;
    void *buf;
    cr_assert_eq(describe_mini(&m, &d, &g, &buf), AARMD_OK, "%s", err);
    cr_expect_str_eq(d->name, "Mistral-ish");
    cr_expect_eq(d->rope_freq_base, 500000.0f);
    cr_expect_eq(d->rope_freq_base_swa, 500000.0f);
    cr_expect_eq(d->n_rot, 4);
    cr_expect_eq(d->rope_scaling, AARMD_ROPE_SCALING_YARN);
    cr_expect_eq(d->rope_scale, 4.0f);
    cr_expect_eq(d->rope_orig_ctx, 32);
    cr_expect_eq(d->yarn_ext_factor, 1.0f);
    cr_expect_eq(d->yarn_attn_factor, 1.0f);
    cr_expect_eq(d->yarn_beta_fast, 16.0f);
    cr_expect_eq(d->yarn_beta_slow, 1.0f);
    cr_expect_eq(d->sliding_window, 8);
    cr_assert_not_null(d->layer_is_swa);
    cr_expect_eq(d->layer_is_swa[0], 1);   /* llama: every layer slides */
    cr_expect_eq(d->attn_scale, 0.5f);
    cr_expect_eq(d->attn_logit_softcap, 50.0f);
    cr_expect_eq(d->final_logit_softcap, 30.0f);
    cr_expect_eq(d->bos_id, 5);
    cr_expect_eq(d->eos_id, 6);
    cr_expect_eq(d->n_vocab, 16);
    cr_expect_eq(d->tied_embeddings, 0);
    cr_expect_eq(d->n_tensors, 14);        /* 11 + output, q bias, rope_freqs; the stray one ignored */
    cr_expect_not_null(aarmd_model_tensor(d, AARMD_ROLE_OUTPUT, -1));
    cr_expect_not_null(aarmd_model_tensor(d, AARMD_ROLE_ATTN_Q_B, 0));
    cr_expect_not_null(aarmd_model_tensor(d, AARMD_ROLE_ROPE_FREQS, -1));
    done_mini(d, g, buf);
}

static void edit_linear(struct aarmd_gguf_writer *w)
{
    aarmd_gguf_writer_set_str(w, "llama.rope.scaling.type", "linear");
    aarmd_gguf_writer_set_f32(w, "llama.rope.scaling.factor", 2.0f);
}

static void edit_old_linear(struct aarmd_gguf_writer *w) { aarmd_gguf_writer_set_f32(w, "llama.rope.scale_linear", 8.0f); }

Test(model, linear_rope_scaling)
{
    void (*edits[])(struct aarmd_gguf_writer *) = {edit_linear, edit_old_linear};
    float factors[] = {2.0f, 8.0f};
    for (int i = 0; i < 2; i++) {
        struct mini m = {.edit = edits[i]};
        struct aarmd_model_desc *d;
        struct aarmd_gguf *g;
        void *buf;
        cr_assert_eq(describe_mini(&m, &d, &g, &buf), AARMD_OK, "%s", err);
        cr_expect_eq(d->rope_scaling, AARMD_ROPE_SCALING_LINEAR);
        cr_expect_eq(d->rope_scale, factors[i]);
        cr_expect_eq(d->rope_orig_ctx, 128);
        done_mini(d, g, buf);
    }
}

/* ---- quant kind ---------------------------------------------------------- */

static void edit_no_ftype(struct aarmd_gguf_writer *w)
{
    (void)w;   /* the mini file has no general.file_type: F32 tensors dominate */
}

static void edit_ftype_guessed(struct aarmd_gguf_writer *w)
{
    aarmd_gguf_writer_set_u32(w, "general.file_type", 1024 + 17);
}

static void edit_ftype_unknown(struct aarmd_gguf_writer *w)
{
    aarmd_gguf_writer_set_u32(w, "general.file_type", 99);
    int64_t ne[2] = {256, 256};
    void *p;
    aarmd_gguf_writer_add_tensor_buf(w, "big", AARMD_TYPE_Q6_K, 2, ne, &p);   /* 53,760 B > 39,296 B of F32 */
}

Test(model, quant_kind_from_file_type_or_dominant_type)
{
    const struct {
        void (*edit)(struct aarmd_gguf_writer *);
        const char *want;
    } cases[] = {
        {edit_no_ftype, "F32"},
        {edit_ftype_guessed, "Q5_K_M"},
        {edit_ftype_unknown, "Q6_K"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct mini m = {.edit = cases[i].edit};
        struct aarmd_model_desc *d;
        struct aarmd_gguf *g;
        void *buf;
        describe_mini(&m, &d, &g, &buf);
        char q[32];
        aarmd_model_quant_kind(g, q, sizeof q);
        cr_expect_str_eq(q, cases[i].want, "case %zu", i);
        done_mini(d, g, buf);
    }
    /* every llama_ftype name llama.cpp's table gives */
    const struct {
        uint32_t ft;
        const char *name;
    } names[] = {{0, "F32"}, {1, "F16"}, {2, "Q4_0"}, {3, "Q4_1"}, {7, "Q8_0"}, {8, "Q5_0"}, {9, "Q5_1"},
                 {10, "Q2_K"}, {11, "Q3_K_S"}, {12, "Q3_K_M"}, {13, "Q3_K_L"}, {14, "Q4_K_S"},
                 {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"}, {18, "Q6_K"}, {19, "IQ2_XXS"},
                 {20, "IQ2_XS"}, {21, "Q2_K_S"}, {22, "IQ3_XS"}, {23, "IQ3_XXS"}, {24, "IQ1_S"},
                 {25, "IQ4_NL"}, {26, "IQ3_S"}, {27, "IQ3_M"}, {28, "IQ2_S"}, {29, "IQ2_M"},
                 {30, "IQ4_XS"}, {31, "IQ1_M"}, {32, "BF16"}, {36, "TQ1_0"}, {37, "TQ2_0"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
        aarmd_gguf_writer_set_u32(w, "general.file_type", names[i].ft);
        void *buf;
        size_t size;
        cr_assert_eq(aarmd_gguf_writer_to_mem(w, &buf, &size, err, sizeof err), AARMD_OK);
        struct aarmd_gguf *g;
        cr_assert_eq(aarmd_gguf_open_mem(buf, size, "ft", &g, err, sizeof err), AARMD_OK, "%s", err);
        char q[32];
        aarmd_model_quant_kind(g, q, sizeof q);
        cr_expect_str_eq(q, names[i].name, "file_type %u", names[i].ft);
        aarmd_gguf_free(g);
        free(buf);
        aarmd_gguf_writer_free(w);
    }
    char small[3];
    aarmd_model_quant_kind(NULL, small, sizeof small);
    cr_expect_str_eq(small, "un");   /* truncated "unknown" */
}

/* ---- names --------------------------------------------------------------- */

Test(model, role_names_are_unique)
{
    for (int r = 0; r < AARMD_ROLE_COUNT; r++) {
        cr_assert_str_neq(aarmd_role_name(r), "?", "role %d has no name", r);
        for (int s = r + 1; s < AARMD_ROLE_COUNT; s++)
            cr_expect_str_neq(aarmd_role_name(r), aarmd_role_name(s));
    }
    cr_expect_str_eq(aarmd_role_name(AARMD_ROLE_ATTN_Q), "attn_q");
    cr_expect_str_eq(aarmd_role_name(-1), "?");
    cr_expect_str_eq(aarmd_role_name(AARMD_ROLE_COUNT), "?");
    cr_expect_str_eq(aarmd_model_supported_archs(), "llama, qwen2, qwen3, phi3, gpt2, gemma3");
    aarmd_model_desc_free(NULL);
    struct aarmd_model_desc *d = (void *)1;
    cr_expect_eq(aarmd_model_desc_from_gguf(NULL, &d, err, sizeof err), AARMD_EINVAL);
    cr_expect_null(d);
}

/* gemma3's sliding-window pattern may come as a period or a per-layer array. */
Test(model, gemma3_sliding_window_pattern_keys)
{
    struct aarmd_synth_opts o = {.arch = "gemma3", .type = AARMD_TYPE_F32, .n_layer = 6, .n_vocab = 8, .n_ctx = 64};
    const bool flags[6] = {true, false, true, false, false, true};
    for (int variant = 0; variant < 3; variant++) {
        struct aarmd_gguf_writer *w = NULL;
        cr_assert_eq(aarmd_gguf_synth_build(&o, &w, err, sizeof err), AARMD_OK, "%s", err);
        if (variant == 0)
            aarmd_gguf_writer_set_u32(w, "gemma3.attention.sliding_window_pattern", 3);
        else if (variant == 1)
            aarmd_gguf_writer_set_arr(w, "gemma3.attention.sliding_window_pattern", AARMD_GGUF_BOOL, flags, 6);
        else
            aarmd_gguf_writer_set_arr(w, "gemma3.attention.sliding_window_pattern", AARMD_GGUF_BOOL, flags, 5);
        void *buf;
        size_t size;
        cr_assert_eq(aarmd_gguf_writer_to_mem(w, &buf, &size, err, sizeof err), AARMD_OK, "%s", err);
        aarmd_gguf_writer_free(w);
        struct aarmd_gguf *g;
        cr_assert_eq(aarmd_gguf_open_mem(buf, size, "swa", &g, err, sizeof err), AARMD_OK, "%s", err);
        struct aarmd_model_desc *d = NULL;
        int rc = aarmd_model_desc_from_gguf(g, &d, err, sizeof err);
        if (variant == 2) {
            cr_expect_eq(rc, AARMD_EINVAL);
            cr_expect_str_eq(err, "key gemma3.attention.sliding_window_pattern: 5 entries for 6 layers");
        } else {
            cr_assert_eq(rc, AARMD_OK, "%s", err);
            cr_expect_eq(d->sliding_window, 32);
            for (int il = 0; il < 6; il++) {
                int want = variant == 0 ? il % 3 != 2 : flags[il];
                cr_expect_eq(d->layer_is_swa[il], want, "variant %d layer %d", variant, il);
            }
        }
        aarmd_model_desc_free(d);
        aarmd_gguf_free(g);
        free(buf);
    }
}
