/*
 * model_arch.h — internal to the model adapter (model.c): one table per
 * supported architecture saying which tensors it has, their shapes in
 * symbolic dimensions, and the fixed choices (RoPE kind, norm, activation,
 * sliding-window pattern) that GGUF keys do not carry.
 */
#ifndef AARMD_MODEL_ARCH_H
#define AARMD_MODEL_ARCH_H

#include <stddef.h>
#include <stdint.h>

/* Symbolic dimensions, resolved from the hyperparameters. */
enum aarmd_dim {
    AARMD_DIM_NONE = 0,   /* unused (1-D tensor) */
    AARMD_DIM_EMBD,       /* n_embd */
    AARMD_DIM_VOCAB,      /* n_vocab */
    AARMD_DIM_Q,          /* n_head * head_dim */
    AARMD_DIM_KV,         /* n_head_kv * head_dim */
    AARMD_DIM_QKV,        /* (n_head + 2 * n_head_kv) * head_dim */
    AARMD_DIM_FF,         /* n_ff */
    AARMD_DIM_FF2,        /* 2 * n_ff */
    AARMD_DIM_HEAD,       /* head_dim */
    AARMD_DIM_CTX,        /* n_ctx_train */
    AARMD_DIM_ROT2,       /* n_rot / 2 */
};

enum aarmd_tflag {
    AARMD_T_REQ = 1,        /* required (else optional) */
    AARMD_T_LAYER = 2,      /* per layer: the name follows "blk.N." */
    AARMD_T_SPLIT = 4,      /* part of separate q/k/v (+ biases) */
    AARMD_T_FUSED = 8,      /* part of fused qkv (+ bias) */
};

struct aarmd_arch_tensor {
    int32_t role;           /* enum aarmd_role */
    const char *name;       /* "output_norm.weight"; per layer "attn_q.weight" (after "blk.N.") */
    uint8_t dim0, dim1;     /* enum aarmd_dim; dim1 NONE for 1-D */
    uint8_t flags;          /* enum aarmd_tflag */
};

enum aarmd_qkv_mode { AARMD_QKV_SPLIT = 0, AARMD_QKV_FUSED = 1, AARMD_QKV_EITHER = 2 };
enum aarmd_swa_mode {
    AARMD_SWA_OFF = 0,      /* sliding_window key ignored */
    AARMD_SWA_ALL = 1,      /* every layer slides when the key is > 0 (Mistral) */
    AARMD_SWA_PATTERN = 2,  /* layer il slides unless il % swa_period == swa_period - 1 (gemma3) */
};

struct aarmd_arch {
    const char *name;
    uint32_t rope_kind;     /* enum aarmd_rope_kind */
    uint32_t norm_kind;     /* enum aarmd_norm_kind */
    uint32_t act;           /* enum aarmd_act_kind */
    uint32_t qkv;           /* enum aarmd_qkv_mode */
    uint32_t swa;           /* enum aarmd_swa_mode */
    uint32_t swa_period;    /* AARMD_SWA_PATTERN default when no sliding_window_pattern key */
    float rope_base_swa;    /* default base for sliding layers; 0 = rope_freq_base */
    int embd_scale_sqrt;    /* embeddings scaled by sqrt(n_embd) */
    int gemma_27b_scale;    /* attn scale 1/sqrt(n_embd/n_head) at 62 layers (llama.cpp's rule) */
    const struct aarmd_arch_tensor *tensors;
    size_t n_tensors;
};

/* The table of `name`, NULL when unsupported. */
const struct aarmd_arch *aarmd_arch_find(const char *name);
/* "llama, qwen2, qwen3, phi3, gpt2, gemma3" */
const char *aarmd_arch_list(void);
struct aarmd_model_desc;
/* Value of a symbolic dimension for the shape fields of d (NONE gives 1). */
int64_t aarmd_arch_dim(const struct aarmd_model_desc *d, int sym);

/* The i-th architecture (NULL past the end): for tools and tests. */
const struct aarmd_arch *aarmd_arch_at(size_t i);

#endif
