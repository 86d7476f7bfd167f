/*
 * sampler.h — turns one step's logits into the next token of a job.
 * Order: repetition penalty (over the job's prompt and generated tokens:
 * positive logits divided, negative multiplied), temperature, top-k, top-p,
 * min-p, then a draw from the job's RNG. temperature 0 is argmax (ties → lowest id).
 * One sampler per job; not thread-safe; nothing allocated per token.
 */
#ifndef AARMD_SAMPLER_H
#define AARMD_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

struct aarmd_sampler_params {
    float temperature;        /* 0..2; 0 = greedy */
    float top_p;              /* 0..1; 1 = off */
    int32_t top_k;            /* 0 = off */
    float min_p;              /* 0..1; 0 = off */
    float repetition_penalty; /* 1 = off */
    uint64_t seed;            /* the job's seed (always concrete here) */
    uint32_t n_logprobs;      /* 0..20: top alternatives reported per token */
};

struct aarmd_token_logprob { int32_t id; float logprob; };

/* Result of one draw. */
struct aarmd_sample {
    int32_t id;
    float logprob;                          /* of the chosen token, under the final distribution (after temperature; 0 when greedy) */
    uint32_t n_top;                         /* entries used in top[] (= n_logprobs) */
    struct aarmd_token_logprob top[20];
};

struct aarmd_sampler;

/* NULL on allocation failure. n_vocab > 0. */
struct aarmd_sampler *aarmd_sampler_new(const struct aarmd_sampler_params *params, uint32_t n_vocab);
void aarmd_sampler_free(struct aarmd_sampler *s);   /* accepts NULL */

/* Records tokens the repetition penalty looks at (prompt, then each sampled token). */
void aarmd_sampler_accept(struct aarmd_sampler *s, const int32_t *ids, size_t n);

/* Samples from logits[n_vocab] (modified in place). */
int aarmd_sampler_sample(struct aarmd_sampler *s, float *logits, struct aarmd_sample *out);

/* A seed from the OS (getrandom), for jobs whose seed is null. */
uint64_t aarmd_seed_from_os(void);

#endif
