/*
 * backend_compare.h — what the GPU backends' tests share: synthetic models
 * from gguf-synth, one opened sequence per plugin, and the check that a
 * backend's logits match the CPU backend's on a prompt plus greedy decode.
 * Helpers fail the running Criterion test on any error.
 */
#ifndef AARMD_TEST_BACKEND_COMPARE_H
#define AARMD_TEST_BACKEND_COMPARE_H

#include <stdint.h>

#include "aarmd_backend.h"

struct aarmd_gguf;
struct aarmd_plugin;

/* A gguf-synth model (512-token vocab, seed 7) in a temporary file. */
struct bc_model {
    char path[256];
    struct aarmd_gguf *g;
    struct aarmd_model_desc *d;
};
void bc_model_synth(struct bc_model *m, const char *arch, uint32_t type);
void bc_model_free(struct bc_model *m);   /* also removes the file */

/* A context, the model loaded on it, and one sequence of n_ctx tokens. */
struct bc_side {
    struct aarmd_plugin *p;
    struct aarmd_backend_ctx *ctx;
    struct aarmd_backend_model *m;
    struct aarmd_backend_seq *s;
};
void bc_side_open(struct bc_side *s, struct aarmd_plugin *p, const struct aarmd_model_desc *d, uint32_t n_ctx);
void bc_side_close(struct bc_side *s);

/* One arch × weight type and its bound on max|Δlogit| / max|CPU logit|.
 * arch is inline: Criterion copies parameters into the test's process. */
struct bc_case {
    char arch[16];
    uint32_t type;
    double tol;
};

/*
 * The cases both GPU tests run. Bounds: the CPU backend quantizes activations
 * to Q8 for quantized weights; measured worst relative differences on an H100
 * were ~2e-4 (float weights), ~1e-2 (32-element quants), ~3e-2 (K-quants, gemma3).
 */
#define BC_CASES                                                                                        \
    {"llama", AARMD_TYPE_F32, 0.01}, {"llama", AARMD_TYPE_F16, 0.01}, {"llama", AARMD_TYPE_BF16, 0.01},   \
    {"llama", AARMD_TYPE_Q8_0, 0.05}, {"llama", AARMD_TYPE_Q4_0, 0.05}, {"llama", AARMD_TYPE_Q4_1, 0.05}, \
    {"llama", AARMD_TYPE_Q5_0, 0.05}, {"llama", AARMD_TYPE_Q5_1, 0.05}, {"llama", AARMD_TYPE_Q4_K, 0.06}, \
    {"llama", AARMD_TYPE_Q5_K, 0.06}, {"llama", AARMD_TYPE_Q6_K, 0.06}, {"qwen2", AARMD_TYPE_Q4_0, 0.05}, \
    {"qwen3", AARMD_TYPE_Q8_0, 0.05}, {"phi3", AARMD_TYPE_Q4_K, 0.06}, {"gpt2", AARMD_TYPE_F16, 0.01},    \
    {"gpt2", AARMD_TYPE_Q5_1, 0.05}, {"gemma3", AARMD_TYPE_BF16, 0.01}, {"gemma3", AARMD_TYPE_Q6_K, 0.06}

/* Runs a 20-token prompt then 5 greedy steps (fed the CPU's choice) on `p` and
 * on the CPU backend; expects every step within c->tol and top-1 agreement on
 * all steps but one. */
void bc_match_cpu(struct aarmd_plugin *p, const struct bc_case *c);

#endif
