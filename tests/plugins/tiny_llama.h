/* tiny_llama.h — a hand-built F32 llama-style model description for backend
 * tests (no GGUF file): tied embeddings, RMS norm, SiLU-gated FFN, weights
 * drawn from a fixed xorshift seed, so one shape and seed give the same
 * weights every time. Not a model of anything; numerics are checked against
 * the reference backend elsewhere. */
#ifndef AARMD_TESTS_TINY_LLAMA_H
#define AARMD_TESTS_TINY_LLAMA_H

#include <stdint.h>

#include "aarmd_backend.h"

#define TINY_LLAMA_MAX_TENSORS 64

struct tiny_llama_shape {
    const char *name;           /* desc.name */
    int n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_layer;
    uint32_t n_ctx_train;
    float attn_out_amp;         /* attn_output weights in [-amp, amp) */
    uint64_t seed;              /* xorshift64 state; nonzero */
};

/* desc.tensors points into t; every tensor is F32 with its own malloc'd data in bufs.
 * Tests may change a tensor's fields (type, ne) before model_load. */
struct tiny_llama {
    struct aarmd_model_desc d;
    struct aarmd_tensor t[TINY_LLAMA_MAX_TENSORS];
    float *bufs[TINY_LLAMA_MAX_TENSORS];
    char names[TINY_LLAMA_MAX_TENSORS][48];
    uint64_t rng;               /* the weights' generator, where the last tensor left it */
};

/* A model of shape s (2 + 9 * n_layer tensors, at most 64): token_embd
 * [n_embd, n_vocab] in [-1, 1), norms 1 +- 0.1, projections +- 0.3 (attn_output
 * +- attn_out_amp). Fails the current Criterion test on out of memory or a
 * shape with too many tensors. Free with tiny_llama_free. */
struct tiny_llama *tiny_llama_new(const struct tiny_llama_shape *s);

/* Appends an F32 tensor [ne0, ne1] (1-D when ne1 == 1) of base + amp * [-1, 1),
 * drawn on from m->rng; fails the current test past 64 tensors. */
void tiny_llama_add(struct tiny_llama *m, const char *name, int role, int layer, int64_t ne0, int64_t ne1,
                    float base, float amp);

void tiny_llama_free(struct tiny_llama *m);     /* accepts NULL */

/* The tensor named `name`, or NULL. */
struct aarmd_tensor *tiny_llama_find(struct tiny_llama *m, const char *name);

#endif
