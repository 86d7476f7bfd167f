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
    float logprob;                          /* of the chosen token: raw log-softmax, see below; 0 when n_logprobs is 0 */
    uint32_t n_top;                         /* entries used in top[]: min(n_logprobs, finite logits) */
    struct aarmd_token_logprob top[20];
};

struct aarmd_sampler;

/* NULL on allocation failure. n_vocab > 0. */
struct aarmd_sampler *aarmd_sampler_new(const struct aarmd_sampler_params *params, uint32_t n_vocab);
void aarmd_sampler_free(struct aarmd_sampler *s);   /* accepts NULL */

/* Records tokens the repetition penalty looks at (prompt, then each sampled token). */
void aarmd_sampler_accept(struct aarmd_sampler *s, const int32_t *ids, size_t n);

/*
 * Samples from logits[n_vocab] (modified in place: penalty applied, NaN ->
 * -inf). A token whose weight exp((l - max) / T) is at most 2^-126.5 (tempered
 * log-weight -87.68 or less) has probability 0; a temperature below 1e-38
 * acts as 1e-38. Returns AARMD_OK, or AARMD_EINVAL when logits is NULL, the
 * params fail aarmd_sampler_params_check, or every logit is -inf/NaN.
 * Draws exactly one uniform from the job's RNG per call unless greedy
 * (temperature 0 draws none), so a seed fixes the whole token sequence.
 *
 * Logits: NaN counts as -inf; -inf tokens are never drawn. If any logit is
 * +inf, the +inf tokens share all probability equally (others get 0).
 *
 * Logprobs (n_logprobs > 0): `logprob` and `top` are the RAW model
 * log-probabilities: log-softmax at temperature 1 of the logits after the
 * repetition penalty, before temperature/top-k/top-p/min-p (as OpenAI
 * reports them; llama.cpp's server reports post-filter probabilities
 * instead). top[] holds the n_logprobs highest, best first, ties by lower id;
 * the chosen token need not be among them.
 */
int aarmd_sampler_sample(struct aarmd_sampler *s, float *logits, struct aarmd_sample *out);

/*
 * AARMD_OK when params are in the contract's ranges (temperature 0..2, top_p
 * 0..1, top_k >= 0, min_p 0..1, repetition_penalty 0..2, n_logprobs 0..20),
 * else AARMD_EINVAL with a message naming the field. top_k above n_vocab
 * means off. aarmd_sampler_new accepts bad params (the sampler then refuses
 * to sample) so that NULL from _new always means out of memory.
 */
int aarmd_sampler_params_check(const struct aarmd_sampler_params *params, char *err, size_t errlen);

/*
 * For tests and tools: runs the same pipeline as aarmd_sampler_sample on
 * logits (modified the same way) without drawing, and writes the final
 * distribution the draw would use: ids[i], probs[i] for i < *n, highest
 * probability first (ties by lower id), tokens of probability 0 left out.
 * ids and probs must hold n_vocab entries. Greedy gives the argmax with 1.0.
 * Consumes no randomness. Errors as aarmd_sampler_sample.
 */
int aarmd_sampler_probs(struct aarmd_sampler *s, float *logits, int32_t *ids, double *probs, size_t *n);

/*
 * Which vector loops this sampler runs: "v4" (SSE2/NEON), "avx2" or "avx512",
 * the widest the CPU has unless AARMD_SAMPLER_SIMD=v4|avx2 caps it. All give
 * bit-identical results; for benchmarks and tests.
 */
const char *aarmd_sampler_simd(const struct aarmd_sampler *s);

/* A seed from the OS (getrandom), for jobs whose seed is null. */
uint64_t aarmd_seed_from_os(void);

#endif
