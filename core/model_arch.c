/*
 * model_arch.c — per-architecture tensor tables and fixed choices, checked
 * against llama.cpp's LLM_TENSOR_NAMES / load_tensors / llama_model_rope_type.
 * Data only: model.c does the reading and checking.
 */
#include <string.h>

#include "aarmd_backend.h"
#include "model_arch.h"

#define G(role, name, d0, d1, fl) {role, name, d0, d1, fl}
#define L(role, name, d0, d1, fl) {role, name, d0, d1, (fl) | AARMD_T_LAYER}
#define REQ AARMD_T_REQ
#define OPT 0
#define SPLIT AARMD_T_SPLIT
#define FUSED AARMD_T_FUSED
#define N(t) (sizeof(t) / sizeof((t)[0]))

enum {
    E = AARMD_DIM_EMBD, V = AARMD_DIM_VOCAB, Q = AARMD_DIM_Q, KV = AARMD_DIM_KV,
    QKV = AARMD_DIM_QKV, FF = AARMD_DIM_FF, FF2 = AARMD_DIM_FF2, HD = AARMD_DIM_HEAD,
    CTX = AARMD_DIM_CTX, R2 = AARMD_DIM_ROT2, NO = AARMD_DIM_NONE,
};

/* llama: Llama 2/3, SmolLM2, TinyLlama, Mistral. Biases are optional (some
 * fine-tunes carry them); rope_freqs holds Llama-3.1 frequency factors. */
static const struct aarmd_arch_tensor llama_tensors[] = {
    G(AARMD_ROLE_TOKEN_EMBD, "token_embd.weight", E, V, REQ),
    G(AARMD_ROLE_OUTPUT_NORM, "output_norm.weight", E, NO, REQ),
    G(AARMD_ROLE_OUTPUT, "output.weight", E, V, OPT),
    G(AARMD_ROLE_ROPE_FREQS, "rope_freqs.weight", R2, NO, OPT),
    L(AARMD_ROLE_ATTN_NORM, "attn_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_ATTN_Q, "attn_q.weight", E, Q, REQ),
    L(AARMD_ROLE_ATTN_K, "attn_k.weight", E, KV, REQ),
    L(AARMD_ROLE_ATTN_V, "attn_v.weight", E, KV, REQ),
    L(AARMD_ROLE_ATTN_Q_B, "attn_q.bias", Q, NO, OPT),
    L(AARMD_ROLE_ATTN_K_B, "attn_k.bias", KV, NO, OPT),
    L(AARMD_ROLE_ATTN_V_B, "attn_v.bias", KV, NO, OPT),
    L(AARMD_ROLE_ATTN_OUT, "attn_output.weight", Q, E, REQ),
    L(AARMD_ROLE_ATTN_OUT_B, "attn_output.bias", E, NO, OPT),
    L(AARMD_ROLE_FFN_NORM, "ffn_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_FFN_GATE, "ffn_gate.weight", E, FF, REQ),
    L(AARMD_ROLE_FFN_UP, "ffn_up.weight", E, FF, REQ),
    L(AARMD_ROLE_FFN_DOWN, "ffn_down.weight", FF, E, REQ),
};

/* qwen2: q/k/v carry biases, the output projection does not. */
static const struct aarmd_arch_tensor qwen2_tensors[] = {
    G(AARMD_ROLE_TOKEN_EMBD, "token_embd.weight", E, V, REQ),
    G(AARMD_ROLE_OUTPUT_NORM, "output_norm.weight", E, NO, REQ),
    G(AARMD_ROLE_OUTPUT, "output.weight", E, V, OPT),
    L(AARMD_ROLE_ATTN_NORM, "attn_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_ATTN_Q, "attn_q.weight", E, Q, REQ),
    L(AARMD_ROLE_ATTN_K, "attn_k.weight", E, KV, REQ),
    L(AARMD_ROLE_ATTN_V, "attn_v.weight", E, KV, REQ),
    L(AARMD_ROLE_ATTN_Q_B, "attn_q.bias", Q, NO, REQ),
    L(AARMD_ROLE_ATTN_K_B, "attn_k.bias", KV, NO, REQ),
    L(AARMD_ROLE_ATTN_V_B, "attn_v.bias", KV, NO, REQ),
    L(AARMD_ROLE_ATTN_OUT, "attn_output.weight", Q, E, REQ),
    L(AARMD_ROLE_FFN_NORM, "ffn_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_FFN_GATE, "ffn_gate.weight", E, FF, REQ),
    L(AARMD_ROLE_FFN_UP, "ffn_up.weight", E, FF, REQ),
    L(AARMD_ROLE_FFN_DOWN, "ffn_down.weight", FF, E, REQ),
};

/* qwen3: no biases; per-head RMS norms on q and k. */
static const struct aarmd_arch_tensor qwen3_tensors[] = {
    G(AARMD_ROLE_TOKEN_EMBD, "token_embd.weight", E, V, REQ),
    G(AARMD_ROLE_OUTPUT_NORM, "output_norm.weight", E, NO, REQ),
    G(AARMD_ROLE_OUTPUT, "output.weight", E, V, OPT),
    L(AARMD_ROLE_ATTN_NORM, "attn_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_ATTN_Q, "attn_q.weight", E, Q, REQ),
    L(AARMD_ROLE_ATTN_K, "attn_k.weight", E, KV, REQ),
    L(AARMD_ROLE_ATTN_V, "attn_v.weight", E, KV, REQ),
    L(AARMD_ROLE_ATTN_Q_NORM, "attn_q_norm.weight", HD, NO, REQ),
    L(AARMD_ROLE_ATTN_K_NORM, "attn_k_norm.weight", HD, NO, REQ),
    L(AARMD_ROLE_ATTN_OUT, "attn_output.weight", Q, E, REQ),
    L(AARMD_ROLE_FFN_NORM, "ffn_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_FFN_GATE, "ffn_gate.weight", E, FF, REQ),
    L(AARMD_ROLE_FFN_UP, "ffn_up.weight", E, FF, REQ),
    L(AARMD_ROLE_FFN_DOWN, "ffn_down.weight", FF, E, REQ),
};

/* phi3: fused qkv (or separate q/k/v), ffn_up holds gate and up rows
 * ({n_embd, 2*n_ff}); output is never tied. rope_factors_short (LongRoPE
 * models) is served as the frequency-factor tensor: right for contexts up to
 * the original one. */
static const struct aarmd_arch_tensor phi3_tensors[] = {
    G(AARMD_ROLE_TOKEN_EMBD, "token_embd.weight", E, V, REQ),
    G(AARMD_ROLE_OUTPUT_NORM, "output_norm.weight", E, NO, REQ),
    G(AARMD_ROLE_OUTPUT, "output.weight", E, V, REQ),
    G(AARMD_ROLE_ROPE_FREQS, "rope_factors_short.weight", R2, NO, OPT),
    L(AARMD_ROLE_ATTN_NORM, "attn_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_ATTN_QKV, "attn_qkv.weight", E, QKV, REQ | FUSED),
    L(AARMD_ROLE_ATTN_Q, "attn_q.weight", E, Q, REQ | SPLIT),
    L(AARMD_ROLE_ATTN_K, "attn_k.weight", E, KV, REQ | SPLIT),
    L(AARMD_ROLE_ATTN_V, "attn_v.weight", E, KV, REQ | SPLIT),
    L(AARMD_ROLE_ATTN_OUT, "attn_output.weight", Q, E, REQ),
    L(AARMD_ROLE_FFN_NORM, "ffn_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_FFN_UP_GATE, "ffn_up.weight", E, FF2, REQ),
    L(AARMD_ROLE_FFN_DOWN, "ffn_down.weight", FF, E, REQ),
};

/* gpt2: learned positions, LayerNorm with biases everywhere, fused qkv, GELU MLP. */
static const struct aarmd_arch_tensor gpt2_tensors[] = {
    G(AARMD_ROLE_TOKEN_EMBD, "token_embd.weight", E, V, REQ),
    G(AARMD_ROLE_POS_EMBD, "position_embd.weight", E, CTX, REQ),
    G(AARMD_ROLE_OUTPUT_NORM, "output_norm.weight", E, NO, REQ),
    G(AARMD_ROLE_OUTPUT_NORM_B, "output_norm.bias", E, NO, REQ),
    G(AARMD_ROLE_OUTPUT, "output.weight", E, V, OPT),
    L(AARMD_ROLE_ATTN_NORM, "attn_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_ATTN_NORM_B, "attn_norm.bias", E, NO, REQ),
    L(AARMD_ROLE_ATTN_QKV, "attn_qkv.weight", E, QKV, REQ),
    L(AARMD_ROLE_ATTN_QKV_B, "attn_qkv.bias", QKV, NO, REQ),
    L(AARMD_ROLE_ATTN_OUT, "attn_output.weight", Q, E, REQ),
    L(AARMD_ROLE_ATTN_OUT_B, "attn_output.bias", E, NO, REQ),
    L(AARMD_ROLE_FFN_NORM, "ffn_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_FFN_NORM_B, "ffn_norm.bias", E, NO, REQ),
    L(AARMD_ROLE_FFN_UP, "ffn_up.weight", E, FF, REQ),
    L(AARMD_ROLE_FFN_UP_B, "ffn_up.bias", FF, NO, REQ),
    L(AARMD_ROLE_FFN_DOWN, "ffn_down.weight", FF, E, REQ),
    L(AARMD_ROLE_FFN_DOWN_B, "ffn_down.bias", E, NO, REQ),
};

/* gemma3: q/k norms, post-attention and post-FFN norms (weights already
 * hold 1 + w, as llama.cpp's converter writes them), usually tied output. */
static const struct aarmd_arch_tensor gemma3_tensors[] = {
    G(AARMD_ROLE_TOKEN_EMBD, "token_embd.weight", E, V, REQ),
    G(AARMD_ROLE_OUTPUT_NORM, "output_norm.weight", E, NO, REQ),
    G(AARMD_ROLE_OUTPUT, "output.weight", E, V, OPT),
    L(AARMD_ROLE_ATTN_NORM, "attn_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_ATTN_Q, "attn_q.weight", E, Q, REQ),
    L(AARMD_ROLE_ATTN_K, "attn_k.weight", E, KV, REQ),
    L(AARMD_ROLE_ATTN_V, "attn_v.weight", E, KV, REQ),
    L(AARMD_ROLE_ATTN_Q_NORM, "attn_q_norm.weight", HD, NO, REQ),
    L(AARMD_ROLE_ATTN_K_NORM, "attn_k_norm.weight", HD, NO, REQ),
    L(AARMD_ROLE_ATTN_OUT, "attn_output.weight", Q, E, REQ),
    L(AARMD_ROLE_ATTN_POST_NORM, "post_attention_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_FFN_NORM, "ffn_norm.weight", E, NO, REQ),
    L(AARMD_ROLE_FFN_GATE, "ffn_gate.weight", E, FF, REQ),
    L(AARMD_ROLE_FFN_UP, "ffn_up.weight", E, FF, REQ),
    L(AARMD_ROLE_FFN_DOWN, "ffn_down.weight", FF, E, REQ),
    L(AARMD_ROLE_FFN_POST_NORM, "post_ffw_norm.weight", E, NO, REQ),
};

static const struct aarmd_arch archs[] = {
    {
        .name = "llama", .rope_kind = AARMD_ROPE_NORMAL, .norm_kind = AARMD_NORM_RMS,
        .act = AARMD_ACT_SILU_GATED, .qkv = AARMD_QKV_SPLIT, .swa = AARMD_SWA_ALL,
        .tensors = llama_tensors, .n_tensors = N(llama_tensors),
    },
    {
        .name = "qwen2", .rope_kind = AARMD_ROPE_NEOX, .norm_kind = AARMD_NORM_RMS,
        .act = AARMD_ACT_SILU_GATED, .qkv = AARMD_QKV_SPLIT, .swa = AARMD_SWA_OFF,
        .tensors = qwen2_tensors, .n_tensors = N(qwen2_tensors),
    },
    {
        .name = "qwen3", .rope_kind = AARMD_ROPE_NEOX, .norm_kind = AARMD_NORM_RMS,
        .act = AARMD_ACT_SILU_GATED, .qkv = AARMD_QKV_SPLIT, .swa = AARMD_SWA_OFF,
        .tensors = qwen3_tensors, .n_tensors = N(qwen3_tensors),
    },
    {
        /* llama.cpp disables phi3's sliding window (conversions misreport it). */
        .name = "phi3", .rope_kind = AARMD_ROPE_NEOX, .norm_kind = AARMD_NORM_RMS,
        .act = AARMD_ACT_SILU_GATED, .qkv = AARMD_QKV_EITHER, .swa = AARMD_SWA_OFF,
        .tensors = phi3_tensors, .n_tensors = N(phi3_tensors),
    },
    {
        .name = "gpt2", .rope_kind = AARMD_ROPE_NONE, .norm_kind = AARMD_NORM_LAYER,
        .act = AARMD_ACT_GELU, .qkv = AARMD_QKV_FUSED, .swa = AARMD_SWA_OFF,
        .tensors = gpt2_tensors, .n_tensors = N(gpt2_tensors),
    },
    {
        .name = "gemma3", .rope_kind = AARMD_ROPE_NEOX, .norm_kind = AARMD_NORM_RMS,
        .act = AARMD_ACT_GELU_GATED, .qkv = AARMD_QKV_SPLIT, .swa = AARMD_SWA_PATTERN,
        .swa_period = 6, .rope_base_swa = 10000.0f, .embd_scale_sqrt = 1, .gemma_27b_scale = 1,
        .tensors = gemma3_tensors, .n_tensors = N(gemma3_tensors),
    },
};

const struct aarmd_arch *aarmd_arch_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < N(archs); i++)
        if (!strcmp(archs[i].name, name))
            return &archs[i];
    return NULL;
}

const struct aarmd_arch *aarmd_arch_at(size_t i)
{
    return i < N(archs) ? &archs[i] : NULL;
}

const char *aarmd_arch_list(void)
{
    return "llama, qwen2, qwen3, phi3, gpt2, gemma3";
}

int64_t aarmd_arch_dim(const struct aarmd_model_desc *d, int sym)
{
    switch (sym) {
    case AARMD_DIM_EMBD: return d->n_embd;
    case AARMD_DIM_VOCAB: return d->n_vocab;
    case AARMD_DIM_Q: return (int64_t)d->n_head * d->head_dim;
    case AARMD_DIM_KV: return (int64_t)d->n_head_kv * d->head_dim;
    case AARMD_DIM_QKV: return ((int64_t)d->n_head + 2 * (int64_t)d->n_head_kv) * d->head_dim;
    case AARMD_DIM_FF: return d->n_ff;
    case AARMD_DIM_FF2: return 2 * (int64_t)d->n_ff;
    case AARMD_DIM_HEAD: return d->head_dim;
    case AARMD_DIM_CTX: return d->n_ctx_train;
    case AARMD_DIM_ROT2: return d->n_rot / 2;
    default: return 1;
    }
}
