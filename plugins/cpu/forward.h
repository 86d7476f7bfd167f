/*
 * forward.h — the CPU backend's decoder forward pass over one chunk of
 * tokens from any number of sequences (the generic decoder of
 * aarmd_backend.h). Validation of a step and its split into chunks is the
 * caller's (backend_cpu.c). Internal to plugins/cpu.
 */
#ifndef AARMD_CPU_FORWARD_H
#define AARMD_CPU_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "aarmd_backend.h"
#include "kernels.h"
#include "kv.h"

struct cpu_model;

/* Hyperparameters, from the description (shapes in elements). */
struct cpu_hparams {
    int n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab;
    int q_dim;                  /* n_head * head_dim */
    int kv_dim;                 /* n_head_kv * head_dim */
    uint32_t n_ctx_train;
    int norm_kind;              /* enum aarmd_norm_kind */
    float norm_eps;
    int act;                    /* enum aarmd_act_kind */
    float attn_scale, attn_softcap, final_softcap;
    int32_t sliding_window;     /* 0 = none */
    float embd_scale;
    int has_pos_embd;           /* gpt2: positions limited to n_ctx_train */
};

/*
 * Checks `d` (every tensor the decoder needs present, shapes consistent,
 * types runnable by the kernels) and builds the model: weights stay in the
 * mmap `d` points to (only 1-D norm/bias vectors that are not F32 are
 * converted), scratch is sized for chunks of up to `max_tok` tokens.
 * `pool` is borrowed (must outlive the model). Errors: AARMD_EINVAL for a
 * malformed description (message names the tensor), AARMD_EUNSUPPORTED for a
 * tensor type the kernels cannot run (names tensor and type), AARMD_ENOMEM.
 * On success *out is owned by the caller: free with cpu_model_free.
 */
int cpu_model_new(const struct aarmd_model_desc *d, struct cpu_pool *pool, enum cpu_simd simd,
                  uint32_t max_tok, struct cpu_model **out, char *err, size_t errlen);
void cpu_model_free(struct cpu_model *m);   /* accepts NULL */

/* Bytes of host memory the model owns (scratch; the mapped weights excluded). */
uint64_t cpu_model_scratch_bytes(const struct cpu_model *m);
/* Bytes of the weights it reads from the mmap. */
uint64_t cpu_model_weight_bytes(const struct cpu_model *m);
/* Largest chunk cpu_forward accepts. */
uint32_t cpu_model_max_tok(const struct cpu_model *m);
const struct cpu_hparams *cpu_model_hparams(const struct cpu_model *m);

/*
 * Runs n_tok (1..max_tok) tokens through the decoder. Token i has id
 * tokens[i] (already checked in [0, n_vocab)), belongs to the sequence cache
 * kv[i] and sits at position pos[i] (< kv[i]->n_ctx) in a block the caller
 * made writable (cpu_kv_reserve); the tokens of one sequence appear in
 * increasing position order and every earlier position of that sequence is
 * already cached. The K/V rows of every token are written through the
 * sequence's block table, and attention reads through it. Each token's
 * result depends only on its own sequence's rows and id, not on the other
 * tokens of the chunk (the matmul kernels keep each row's and token's
 * accumulation order whatever n_tok is).
 * When logits[i] is non-NULL the n_vocab logits of token i are written there.
 * Allocates nothing.
 */
void cpu_forward(struct cpu_model *m, uint32_t n_tok, const int32_t *tokens, struct cpu_kv *const *kv,
                 const int32_t *pos, float *const *logits);

#endif
