/*
 * kernels.h — the CPU backend's compute primitives over weights kept in their
 * GGUF types (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K).
 * Quantized weights multiply against activations quantized on the fly (Q8_0
 * blocks for the 32-element formats, Q8_K for the K-quants), as the formats
 * are meant to run. Each kernel has a plain-C path (the oracle) and SIMD
 * paths picked at run time (AVX2, AVX-512 on x86-64; NEON on arm64).
 * Internal to plugins/cpu: not part of the plugin ABI.
 */
#ifndef AARMD_CPU_KERNELS_H
#define AARMD_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "aarmd_backend.h"

/* ---- thread pool (persistent; created once per context) ---------------- */
struct cpu_pool;
/* NULL on failure. n_threads >= 1 (the caller thread is worker 0). */
struct cpu_pool *cpu_pool_new(int n_threads);
void cpu_pool_free(struct cpu_pool *pool);   /* accepts NULL */
int cpu_pool_threads(const struct cpu_pool *pool);
/* Runs fn(arg, ith, nth) for ith in 0..nth-1 on the pool's threads and waits. */
void cpu_pool_run(struct cpu_pool *pool, void (*fn)(void *arg, int ith, int nth), void *arg);

/* ---- SIMD level ----------------------------------------------------------- */
enum cpu_simd { CPU_SIMD_NONE = 0, CPU_SIMD_AVX2 = 1, CPU_SIMD_AVX512 = 2, CPU_SIMD_NEON = 3 };
/* Best level this machine supports. */
enum cpu_simd cpu_simd_detect(void);
const char *cpu_simd_name(enum cpu_simd s);

/* ---- weights ------------------------------------------------------------- */
/* True when the kernels handle this weight type. */
int cpu_type_supported(uint32_t type);

/* Dequantizes row `row` of a weight {n_in, n_out} into out[n_in] (embedding lookup). */
void cpu_dequant_row(const struct aarmd_tensor *w, int64_t row, float *out);

/*
 * y[t * n_out + r] = sum_c W[r, c] * x[t * n_in + c]   for t < n_tok, r < n_out
 * W has ne = {n_in, n_out} (ggml layout). x and y are F32, row-major by token.
 * scratch must hold cpu_matmul_scratch_bytes(w->type, n_in, n_tok) bytes
 * (the quantized activations). Splits rows (and tokens) across the pool.
 * A batch of tokens runs as a matrix-matrix product (each weight row read once
 * per block of tokens), not n_tok matvecs.
 */
void cpu_matmul(struct cpu_pool *pool, enum cpu_simd simd, const struct aarmd_tensor *w,
                const float *x, uint32_t n_tok, float *y, void *scratch);
size_t cpu_matmul_scratch_bytes(uint32_t type, int64_t n_in, uint32_t n_tok);

/* ---- F16 / BF16 conversion ---------------------------------------------- */
float cpu_f16_to_f32(uint16_t h);
uint16_t cpu_f32_to_f16(float f);
float cpu_bf16_to_f32(uint16_t h);

#endif
