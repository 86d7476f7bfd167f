/*
 * matmul.c — SIMD level detection, the kernel tables per level, and
 * cpu_matmul: activations quantized once per call, then weight rows × token
 * tiles split over the pool. The dot kernels themselves live in quant.c and simd_*.c.
 */
#include <pthread.h>
#include <string.h>

#include "kernels.h"

/* ---- levels and tables ----------------------------------------------------- */

static pthread_once_t tabs_once = PTHREAD_ONCE_INIT;
static struct cpu_kernel_tab tabs[4];
static int avail[4];

static void tabs_init(void)
{
    avail[CPU_SIMD_NONE] = 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    avail[CPU_SIMD_AVX2] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    avail[CPU_SIMD_AVX512] = avail[CPU_SIMD_AVX2] && __builtin_cpu_supports("avx512f") &&
                             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                             __builtin_cpu_supports("avx512vnni");
#endif
#if defined(__aarch64__)
    avail[CPU_SIMD_NEON] = 1;   /* Advanced SIMD is mandatory on AArch64 */
#endif
    cpu_kernels_plain(&tabs[CPU_SIMD_NONE]);
    tabs[CPU_SIMD_AVX2] = tabs[CPU_SIMD_NONE];
    tabs[CPU_SIMD_NEON] = tabs[CPU_SIMD_NONE];
#if defined(__x86_64__)
    cpu_kernels_avx2(&tabs[CPU_SIMD_AVX2]);
    tabs[CPU_SIMD_AVX512] = tabs[CPU_SIMD_AVX2];
    cpu_kernels_avx512(&tabs[CPU_SIMD_AVX512]);
#else
    tabs[CPU_SIMD_AVX512] = tabs[CPU_SIMD_NONE];
#endif
#if defined(__aarch64__)
    cpu_kernels_neon(&tabs[CPU_SIMD_NEON]);
#endif
}

int cpu_simd_available(enum cpu_simd s)
{
    pthread_once(&tabs_once, tabs_init);
    return (unsigned)s < 4 && avail[s];
}

enum cpu_simd cpu_simd_detect(void)
{
    if (cpu_simd_available(CPU_SIMD_AVX512))
        return CPU_SIMD_AVX512;
    if (cpu_simd_available(CPU_SIMD_AVX2))
        return CPU_SIMD_AVX2;
    if (cpu_simd_available(CPU_SIMD_NEON))
        return CPU_SIMD_NEON;
    return CPU_SIMD_NONE;
}

const char *cpu_simd_name(enum cpu_simd s)
{
    switch (s) {
    case CPU_SIMD_NONE: return "none";
    case CPU_SIMD_AVX2: return "avx2";
    case CPU_SIMD_AVX512: return "avx512";
    case CPU_SIMD_NEON: return "neon";
    }
    return "?";
}

const struct cpu_kernel_tab *cpu_kernels_get(enum cpu_simd s)
{
    pthread_once(&tabs_once, tabs_init);
    if ((unsigned)s >= 4)
        s = CPU_SIMD_NONE;
    if (s == CPU_SIMD_AVX512 && !avail[s])
        s = CPU_SIMD_AVX2;
    if (!avail[s])
        s = CPU_SIMD_NONE;
    return &tabs[s];
}

/* ---- matmul ----------------------------------------------------------------- */

/* Tiling: work is cut into chunks of rows x a super-block of TOK_SUPER tokens
 * (whose quantized activations stay in L2: 2048 x 64 Q8_K = 150 KB); inside a
 * chunk rows go in tiles of ROW_TILE, and each weight row meets CPU_DOT_MAX_TOK
 * tokens at a time, so a kernel decodes a weight block once for several tokens. */
#define ROW_TILE 16
#define TOK_SUPER 64

struct mm_job {
    cpu_vec_dot_fn dot;
    cpu_vec_dot_multi_fn multi;
    uint32_t type;
    int64_t n_in, n_out;
    uint32_t n_tok;
    const uint8_t *w;
    size_t w_rb;
    const float *x;
    uint8_t *act;        /* quantized activations, or x itself for float weights */
    size_t a_rb;
    float *y;
    int64_t rows_per_chunk, n_row_chunks;
};

static void mm_quant_cb(void *arg, int64_t t)
{
    struct mm_job *j = arg;
    cpu_quantize_act(j->type, j->x + (size_t)t * (size_t)j->n_in, j->act + (size_t)t * j->a_rb, j->n_in);
}

static void mm_tile(const struct mm_job *j, int64_t r0, int64_t r1, uint32_t t0, uint32_t t1)
{
    for (uint32_t tb = t0; tb < t1; tb += TOK_SUPER) {
        uint32_t te = tb + TOK_SUPER < t1 ? tb + TOK_SUPER : t1;
        for (int64_t rc = r0; rc < r1; rc += ROW_TILE) {
            int64_t re = rc + ROW_TILE < r1 ? rc + ROW_TILE : r1;
            for (uint32_t ts = tb; ts < te; ts += CPU_DOT_MAX_TOK) {
                int nt = (int)(te - ts < CPU_DOT_MAX_TOK ? te - ts : CPU_DOT_MAX_TOK);
                const uint8_t *a = j->act + (size_t)ts * j->a_rb;
                for (int64_t r = rc; r < re; r++) {
                    const uint8_t *w = j->w + (size_t)r * j->w_rb;
                    float *y = j->y + (size_t)ts * (size_t)j->n_out + (size_t)r;
                    /* multi even for one token: a token's result then never depends on the tiling
                     * (nor on the thread count), since every kernel treats each token alike */
                    if (j->multi) {
                        float out[CPU_DOT_MAX_TOK];
                        j->multi(j->n_in, w, a, j->a_rb, nt, out);
                        for (int t = 0; t < nt; t++)
                            y[(size_t)t * (size_t)j->n_out] = out[t];
                    } else {
                        for (int t = 0; t < nt; t++)
                            y[(size_t)t * (size_t)j->n_out] = j->dot(j->n_in, w, a + (size_t)t * j->a_rb);
                    }
                }
            }
        }
    }
}

/* Chunk c covers rows [rc * rows_per_chunk, +rows_per_chunk) of token super-block
 * tb = c / n_row_chunks: threads sweep one super-block together, so its
 * activations stay hot in the shared cache, and each weight row is read by one thread. */
static void mm_chunk_cb(void *arg, int64_t c)
{
    struct mm_job *j = arg;
    int64_t tb = c / j->n_row_chunks, rc = c % j->n_row_chunks;
    int64_t r0 = rc * j->rows_per_chunk, r1 = r0 + j->rows_per_chunk < j->n_out ? r0 + j->rows_per_chunk : j->n_out;
    uint32_t t0 = (uint32_t)tb * TOK_SUPER, t1 = t0 + TOK_SUPER < j->n_tok ? t0 + TOK_SUPER : j->n_tok;
    mm_tile(j, r0, r1, t0, t1);
}

size_t cpu_matmul_scratch_bytes(uint32_t type, int64_t n_in, uint32_t n_tok)
{
    return cpu_act_row_bytes(type, n_in) * n_tok;
}

void cpu_matmul(struct cpu_pool *pool, enum cpu_simd simd, const struct aarmd_tensor *w,
                const float *x, uint32_t n_tok, float *y, void *scratch)
{
    struct mm_job j = {0};
    j.type = w->type;
    j.n_in = w->ne[0];
    j.n_out = w->ne[1];
    j.n_tok = n_tok;
    j.w_rb = cpu_type_row_bytes(w->type, w->ne[0]);
    if (j.w_rb == 0 || n_tok == 0) {
        memset(y, 0, (size_t)n_tok * (size_t)j.n_out * sizeof *y);
        return;
    }
    const struct cpu_kernel_tab *tab = cpu_kernels_get(simd);
    j.dot = tab->dot[w->type];
    j.multi = tab->dot_multi[w->type];
    j.w = w->data;
    j.x = x;
    j.y = y;
    if (cpu_type_act(w->type) == CPU_ACT_F32) {
        j.act = (uint8_t *)(uintptr_t)x;
        j.a_rb = (size_t)j.n_in * sizeof(float);
    } else {
        j.act = scratch;
        j.a_rb = cpu_act_row_bytes(w->type, j.n_in);
        cpu_pool_run_chunks(pool, mm_quant_cb, &j, n_tok);
    }
    /* about 8 chunks per thread for balance on a shared machine, 4..64 rows each */
    int nth = cpu_pool_threads(pool);
    int64_t rpc = (j.n_out + 8 * nth - 1) / (8 * nth);
    rpc = (rpc + 3) & ~(int64_t)3;
    j.rows_per_chunk = rpc < 4 ? 4 : rpc > 64 ? 64 : rpc;
    j.n_row_chunks = (j.n_out + j.rows_per_chunk - 1) / j.rows_per_chunk;
    int64_t n_tok_blocks = ((int64_t)n_tok + TOK_SUPER - 1) / TOK_SUPER;
    cpu_pool_run_chunks(pool, mm_chunk_cb, &j, j.n_row_chunks * n_tok_blocks);
}
