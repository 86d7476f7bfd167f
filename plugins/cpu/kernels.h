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
/* Chunked runs use only the first n threads (clamped to 1..n_threads; the
 * caller is one of them); the others stay asleep. With 1 a chunked run is a
 * plain loop on the caller: no hand-off at all. Static runs (cpu_pool_run)
 * always use every thread. Set between runs, from the caller's thread. */
void cpu_pool_set_active(struct cpu_pool *pool, int n);
int cpu_pool_active(const struct cpu_pool *pool);   /* n_threads until set; 1 for NULL */
/* Runs fn(arg, ith, nth) for ith in 0..nth-1 on the pool's threads and waits. */
void cpu_pool_run(struct cpu_pool *pool, void (*fn)(void *arg, int ith, int nth), void *arg);
/*
 * Runs fn(arg, chunk) once for every chunk in 0..n_chunks-1, handed out one at
 * a time to whichever threads come (the caller included), and returns when all
 * are done. A worker that is not scheduled in time is not waited for: on a
 * busy machine the caller does the work instead of sleeping on a straggler.
 * fn must not depend on which thread runs a chunk. One run at a time per pool.
 */
void cpu_pool_run_chunks(struct cpu_pool *pool, void (*fn)(void *arg, int64_t chunk), void *arg, int64_t n_chunks);

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
 * scratch must be 4-byte aligned (malloc'd memory is); NULL is fine when the
 * scratch size is 0 (F32, F16, BF16 weights). Results do not depend on the
 * pool's thread count: the same bits come out with 1 thread or 16.
 */
void cpu_matmul(struct cpu_pool *pool, enum cpu_simd simd, const struct aarmd_tensor *w,
                const float *x, uint32_t n_tok, float *y, void *scratch);
size_t cpu_matmul_scratch_bytes(uint32_t type, int64_t n_in, uint32_t n_tok);

/*
 * Several weights that share one input x (q/k/v, gate/up): y[i] = x @ w[i]
 * for i < n_w (1..CPU_MM_GROUP_MAX), bit for bit what cpu_matmul gives for
 * each, but as one pool run over the rows of all of them (one hand-off
 * instead of n_w), with the activations quantized once per activation kind.
 * All w[i] have the same ne[0]. scratch holds
 * cpu_matmul_group_scratch_bytes(n_w, w, n_tok) bytes, 4-byte aligned.
 * cpu_matmul(w) is cpu_matmul_group of the one weight (and its scratch size
 * is never larger than the group's).
 */
#define CPU_MM_GROUP_MAX 3
void cpu_matmul_group(struct cpu_pool *pool, enum cpu_simd simd, int n_w, const struct aarmd_tensor *const *w,
                      const float *x, uint32_t n_tok, float *const *y, void *scratch);
size_t cpu_matmul_group_scratch_bytes(int n_w, const struct aarmd_tensor *const *w, uint32_t n_tok);

/*
 * Checks that `w` can go through cpu_matmul / cpu_dequant_row: a supported
 * type, ne[0] a whole number of blocks, data non-NULL and nbytes covering
 * ne[1]*ne[2]*ne[3] rows. AARMD_OK, or AARMD_EUNSUPPORTED (type) / AARMD_EINVAL
 * (shape, size) with a message naming the tensor. Call it at model load:
 * cpu_matmul and cpu_dequant_row do not re-check (they write zeros for an
 * unsupported type rather than read out of bounds).
 */
int cpu_weight_check(const struct aarmd_tensor *w, char *err, size_t errlen);

/* ---- F16 / BF16 conversion ---------------------------------------------- */
float cpu_f16_to_f32(uint16_t h);
uint16_t cpu_f32_to_f16(float f);       /* round to nearest even; overflow -> inf */
float cpu_bf16_to_f32(uint16_t h);

/* ====================================================================== */
/* Below: the kernels' own layer, used by matmul.c, the simd_*.c files and  */
/* tests/plugins/test_cpu_kernels.c. The forward pass needs only the above. */
/* ====================================================================== */

/* ---- block layouts (ggml's, byte for byte; little-endian hosts) ---------- */
#define CPU_QK 32      /* elements per block of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 */
#define CPU_QK_K 256   /* elements per K-quant super-block */

struct cpu_block_q4_0 { uint16_t d; uint8_t qs[16]; };            /* (nib - 8) * d; low nibbles 0..15, high 16..31 */
struct cpu_block_q4_1 { uint16_t d, m; uint8_t qs[16]; };         /* nib * d + m */
struct cpu_block_q5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };    /* ((nib | bit j of qh << 4) - 16) * d */
struct cpu_block_q5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; }; /* (nib | bit << 4) * d + m */
struct cpu_block_q8_0 { uint16_t d; int8_t qs[32]; };             /* q * d */
/* 8 sub-blocks of 32: element 64*j + l (l < 32) is the low nibble of qs[32*j + l]
 * with sub-block 2j, element 64*j + 32 + l the high nibble with sub-block 2j+1;
 * value = d*sc[s] * q - dmin*mn[s], 6-bit sc/mn packed in scales[12]. */
struct cpu_block_q4_k { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
/* As q4_k plus a 5th bit: bit 2j of qh[l] for element 64*j + l, bit 2j+1 for 64*j + 32 + l. */
struct cpu_block_q5_k { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
/* Two halves of 128; in half h, for l < 32: element 128h + l + 32*k (k = 0..3) has
 * low 4 bits from ql[64h + l] (k=0), ql[64h + 32 + l] (k=1), their high nibbles
 * (k=2, 3), and bits 2k..2k+1 of qh[32h + l] on top; value = d * scales[8h + l/16 + 2k] * (q - 32). */
struct cpu_block_q6_k { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };

/* Activation blocks (this backend's own, not GGUF formats). */
struct cpu_block_q8a { float d; float s; int8_t qs[32]; };   /* x ~ d*qs; s = d * sum(qs) (for Q4_1/Q5_1 mins) */
struct cpu_block_q8k { float d; int8_t qs[256]; int16_t bsums[16]; };   /* bsums[g] = sum of qs[16g..16g+15] */

/* Unpacks K-quant 6-bit scale and min j (0..7) from scales[12]. */
static inline void cpu_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* All 8 scales and mins at once, packed 4 per word: sc[k] is byte k%4 of u[k/4],
 * mn[k] byte k%4 of u[2 + k/4] (the same values as cpu_scale_min_k4, with 32-bit
 * masks instead of 16 branches, and no byte stores for SIMD code to reload). */
static inline void cpu_scales_k4_unpack(const uint8_t *scales, uint32_t u[4])
{
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    for (int i = 0; i < 3; i++)
        u[i] = (uint32_t)scales[4 * i] | ((uint32_t)scales[4 * i + 1] << 8) |
               ((uint32_t)scales[4 * i + 2] << 16) | ((uint32_t)scales[4 * i + 3] << 24);
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);   /* mn[4..7] */
    uint32_t mn03 = u[1] & k1;                               /* mn[0..3] */
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);          /* sc[4..7] */
    u[2] = mn03;
    u[0] &= k1;                                              /* sc[0..3] */
}

#define CPU_K4_SC(u, k) ((int)(((u)[(k) / 4] >> (8 * ((k) % 4))) & 0xFF))
#define CPU_K4_MN(u, k) ((int)(((u)[2 + (k) / 4] >> (8 * ((k) % 4))) & 0xFF))

/* ---- per-type facts ------------------------------------------------------ */
enum cpu_act_kind { CPU_ACT_NONE = 0, CPU_ACT_F32, CPU_ACT_Q8A, CPU_ACT_Q8K };
int64_t cpu_type_block_elems(uint32_t type);      /* 1 for F32/F16/BF16; 0 if unsupported */
size_t cpu_type_block_bytes(uint32_t type);       /* 0 if unsupported */
const char *cpu_type_name(uint32_t type);         /* "Q4_K", ...; "?" if unsupported */
/* Bytes of one row of n elements (n a multiple of the block), 0 otherwise. */
size_t cpu_type_row_bytes(uint32_t type, int64_t n);
enum cpu_act_kind cpu_type_act(uint32_t type);    /* what the activations become */
/* Bytes of one token's activations for this weight type (0 for F32 kinds: x is used as is). */
size_t cpu_act_row_bytes(uint32_t type, int64_t n);

/* Dequantizes n elements (whole blocks) of `type` at src into dst (plain C, exact in f32). */
void cpu_dequant(uint32_t type, const void *src, float *dst, int64_t n);
/* Quantizes n activations into the kind cpu_type_act(type) needs (no-op for F32 kinds).
 * Every SIMD level sees identical activations (one function, the same bytes on any CPU). */
void cpu_quantize_act(uint32_t type, const float *x, void *dst, int64_t n);
/* The plain-C loops cpu_quantize_act is checked against: it uses AVX2 where the
 * CPU has it, with byte-identical output (tests compare the two). */
void cpu_quantize_act_plain(uint32_t type, const float *x, void *dst, int64_t n);

/* ---- dot products -------------------------------------------------------- */
/* Dot of one weight row (n elements of its type) with one token's activations
 * (as cpu_quantize_act made them, or the F32 x for F32/F16/BF16). */
typedef float (*cpu_vec_dot_fn)(int64_t n, const void *w, const void *a);
/* One weight row against nt <= CPU_DOT_MAX_TOK tokens' activations a + t*a_stride;
 * out[t] = dot. Lets a kernel decode the weight block once for several tokens. */
#define CPU_DOT_MAX_TOK 4
typedef void (*cpu_vec_dot_multi_fn)(int64_t n, const void *w, const void *a, size_t a_stride,
                                     int nt, float *out);

/*
 * A tile: nr (1..CPU_TILE_ROWS) consecutive weight rows (row r at w + r * w_rb)
 * against nt (1..CPU_TILE_MAX_TOK) tokens' activations (a + t * a_stride);
 * y[t * y_stride + r] = dot of row r and token t. The weight blocks of the
 * rows are unpacked once for all nt tokens. Where a level has a tile kernel
 * for a type, cpu_matmul uses it for every product of that type, one token
 * or many, and a (row, token) result depends on neither nr, nt nor the row's
 * place in the tile: a token's output is the same bits alone or in any batch.
 */
#define CPU_TILE_ROWS 16
#define CPU_TILE_MAX_TOK 8
typedef void (*cpu_tile_fn)(int64_t n, const void *w, size_t w_rb, int nr, const void *a, size_t a_stride,
                            int nt, float *y, size_t y_stride);

#define CPU_TYPE_SLOTS 31   /* type ids 0..30 (BF16) */
struct cpu_kernel_tab {
    cpu_vec_dot_fn dot[CPU_TYPE_SLOTS];
    cpu_vec_dot_multi_fn dot_multi[CPU_TYPE_SLOTS];   /* optional; NULL = loop over dot */
    cpu_tile_fn tile[CPU_TYPE_SLOTS];                 /* optional; when set, matmul uses only it */
};
/* Fill the entries a level implements and leave the rest as they are. */
void cpu_kernels_plain(struct cpu_kernel_tab *tab);
#if defined(__x86_64__)
void cpu_kernels_avx2(struct cpu_kernel_tab *tab);
void cpu_kernels_avx512(struct cpu_kernel_tab *tab);
#endif
#if defined(__aarch64__)
void cpu_kernels_neon(struct cpu_kernel_tab *tab);
#endif

/* True when this machine can run level s (NONE always). */
int cpu_simd_available(enum cpu_simd s);
/* The kernels of level s, every slot filled from lower levels where s has no
 * kernel of its own (plain C in the end). A level the machine cannot run
 * gives the best level below it that it can. Never NULL. */
const struct cpu_kernel_tab *cpu_kernels_get(enum cpu_simd s);

#endif
