/*
 * ops.h — the CPU backend's per-vector primitives of the decoder: norms,
 * rotary embedding, softcap, activations, attention of one query over one
 * sequence's KV cache. Plain C on F32 activations (attention also has an
 * AVX2/F16C path on x86-64); the heavy matmuls live in kernels.h. Internal
 * to plugins/cpu.
 */
#ifndef AARMD_CPU_OPS_H
#define AARMD_CPU_OPS_H

#include <stdint.h>

#include "kv.h"

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]; w may be NULL (no scale). out may alias x. */
void cpu_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* out[i] = (x[i] - mean) / sqrt(var + eps) * w[i] + b[i]; w, b may be NULL. out may alias x. */
void cpu_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps);

/* y[i] += x[i] */
void cpu_add(float *y, const float *x, int n);
/* x[i] *= s */
void cpu_scale(float *x, float s, int n);
/* x[i] = cap * tanh(x[i] / cap); no-op when cap <= 0. */
void cpu_softcap(float *x, int n, float cap);
/* In-place softmax over x[0..n). */
void cpu_softmax(float *x, int n);

/* gelu with the tanh approximation (ggml, gpt2 "gelu_new", gemma "gelu_pytorch_tanh"). */
float cpu_gelu(float x);
float cpu_silu(float x);
/* g[i] = act(g[i]) * u[i], act = silu or gelu (gelu != 0). */
void cpu_gated_act(float *g, const float *u, int n, int gelu);
/* x[i] = gelu(x[i]) */
void cpu_gelu_vec(float *x, int n);

/*
 * Rotary embedding parameters, ggml semantics (ggml_rope_ext): pair i of the
 * first n_rot dims of a head rotates by theta_i = pos * base^(-2i/n_rot),
 * divided by freq_factors[i] when given (llama3), then scaled by freq_scale
 * with YaRN's ramp mix when ext_factor != 0; cos/sin are multiplied by mscale.
 * NORMAL rotates (x[2i], x[2i+1]); NEOX rotates (x[i], x[i + n_rot/2]).
 */
struct cpu_rope {
    int kind;                   /* enum aarmd_rope_kind */
    int n_rot;                  /* even, <= head_dim */
    float freq_base;
    float freq_scale;           /* 1 / rope_scale for linear and yarn; 1 otherwise */
    float ext_factor;           /* yarn: ramp mix weight; 0 = plain interpolation */
    float attn_factor;          /* yarn magnitude scale (1 = none) */
    float corr_low, corr_high;  /* yarn correction dims */
    const float *freq_factors;  /* [n_rot/2] or NULL */
};

/* Fills r for base `freq_base` from the model's scaling fields. */
void cpu_rope_init(struct cpu_rope *r, const struct aarmd_model_desc *d, float freq_base,
                   const float *freq_factors);
/* llama3 frequency factors computed from the description (when the GGUF has no rope_freqs). */
void cpu_rope_llama3_factors(const struct aarmd_model_desc *d, float *out /* [n_rot/2] */);
/* cs[2i] = cos, cs[2i+1] = sin of pair i at `pos`; cs holds n_rot floats. */
void cpu_rope_cos_sin(const struct cpu_rope *r, int32_t pos, float *cs);
/* Rotates the first n_rot dims of each of n_heads heads (head_dim apart) of v. */
void cpu_rope_apply(const struct cpu_rope *r, const float *cs, float *v, int n_heads, int head_dim);

/*
 * One query head over a sequence's cached keys/values of one layer:
 * out[head_dim] = softmax_j(softcap(q·k_j * scale)) · v_j for j in [j0, j1],
 * keys of kv head `kvh`. One pass over the keys, scored in blocks of 64 with
 * a running max (a 64-float score buffer on the stack).
 * vec != 0 uses the AVX2/F16C dot and axpy (x86-64 only; the caller checks
 * the CPU has them); 0 is plain C.
 */
void cpu_attend(const struct cpu_kv *kv, int layer, int kvh, const float *q, int head_dim,
                int32_t j0, int32_t j1, float scale, float softcap, int vec, float *out);

/*
 * The n_q query heads that share kv head `kvh` (grouped-query attention), at
 * once: q and out hold n_q rows of head_dim, one after the other. The same
 * as n_q calls of cpu_attend up to float rounding, but each K and V row is
 * read and converted from F16 once for the whole group. With vec and
 * 1 <= n_q <= 8 and head_dim % 8 == 0 it runs the AVX2 group kernel; otherwise
 * it is those n_q calls. Either way each head's output has the same bits
 * whatever n_q is (a head alone or in any group; test_cpu_ops checks it).
 */
void cpu_attend_group(const struct cpu_kv *kv, int layer, int kvh, const float *q, int n_q, int head_dim,
                      int32_t j0, int32_t j1, float scale, float softcap, int vec, float *out);

#endif
