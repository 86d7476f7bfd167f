/*
 * matmul.c — SIMD level detection, the kernel tables per level, and
 * cpu_matmul / cpu_matmul_group: activations quantized once per call (per
 * activation kind for a group), then weight rows × token tiles of all the
 * group's weights split over the pool in one run. The dot kernels themselves
 * live in quant.c and simd_*.c.
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
    cpu_tile_fn tile;
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

/* One pool run over all the weights of a group (cpu_matmul is a group of one):
 * chunks are numbered weight by weight, chunk_end[g] the end of weight g's range. */
struct mm_group {
    int n_w;
    struct mm_job jobs[CPU_MM_GROUP_MAX];
    int64_t chunk_end[CPU_MM_GROUP_MAX];
    /* activation quantization: one region per activation kind, not per weight */
    int n_q;
    uint32_t q_type[CPU_MM_GROUP_MAX];
    uint8_t *q_dst[CPU_MM_GROUP_MAX];
    size_t q_rb[CPU_MM_GROUP_MAX];
    const float *x;
    int64_t n_in;
    uint32_t n_tok;
};

/* Chunk c = (kind c / n_tok, token c % n_tok). */
static void mm_quant_cb(void *arg, int64_t c)
{
    struct mm_group *g = arg;
    int k = (int)(c / g->n_tok);
    int64_t t = c % g->n_tok;
    cpu_quantize_act(g->q_type[k], g->x + (size_t)t * (size_t)g->n_in, g->q_dst[k] + (size_t)t * g->q_rb[k], g->n_in);
}

/* With a tile kernel: tiles of CPU_TILE_ROWS rows x CPU_TILE_MAX_TOK tokens (the kernel
 * gives every (row, token) the same bits whatever the tile, so any cut is fine). */
static void mm_tile_rows(const struct mm_job *j, int64_t r0, int64_t r1, uint32_t t0, uint32_t t1)
{
    for (int64_t rc = r0; rc < r1; rc += CPU_TILE_ROWS) {
        int nr = (int)(r1 - rc < CPU_TILE_ROWS ? r1 - rc : CPU_TILE_ROWS);
        const uint8_t *w = j->w + (size_t)rc * j->w_rb;
        for (uint32_t ts = t0; ts < t1; ts += CPU_TILE_MAX_TOK) {
            int nt = (int)(t1 - ts < CPU_TILE_MAX_TOK ? t1 - ts : CPU_TILE_MAX_TOK);
            j->tile(j->n_in, w, j->w_rb, nr, j->act + (size_t)ts * j->a_rb, j->a_rb, nt,
                    j->y + (size_t)ts * (size_t)j->n_out + (size_t)rc, (size_t)j->n_out);
        }
    }
}

static void mm_tile(const struct mm_job *j, int64_t r0, int64_t r1, uint32_t t0, uint32_t t1)
{
    if (j->tile) {
        mm_tile_rows(j, r0, r1, t0, t1);
        return;
    }
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

/* Chunk c of a weight covers rows [rc * rows_per_chunk, +rows_per_chunk) of token super-block
 * tb = c / n_row_chunks: threads sweep one super-block together, so its
 * activations stay hot in the shared cache, and each weight row is read by one thread. */
static void mm_chunk_cb(void *arg, int64_t c)
{
    struct mm_group *grp = arg;
    int gi = 0;
    while (c >= grp->chunk_end[gi])
        gi++;
    if (gi > 0)
        c -= grp->chunk_end[gi - 1];
    const struct mm_job *j = &grp->jobs[gi];
    int64_t tb = c / j->n_row_chunks, rc = c % j->n_row_chunks;
    int64_t r0 = rc * j->rows_per_chunk, r1 = r0 + j->rows_per_chunk < j->n_out ? r0 + j->rows_per_chunk : j->n_out;
    uint32_t t0 = (uint32_t)tb * TOK_SUPER, t1 = t0 + TOK_SUPER < j->n_tok ? t0 + TOK_SUPER : j->n_tok;
    mm_tile(j, r0, r1, t0, t1);
}

/* The activation kinds of a group in first-seen order, with one type standing for each. */
static int act_kinds(int n_w, const struct aarmd_tensor *const *w, uint32_t *kind_type, int *kind_of)
{
    int n = 0;
    for (int i = 0; i < n_w; i++) {
        enum cpu_act_kind k = cpu_type_act(w[i]->type);
        kind_of[i] = -1;
        if (k != CPU_ACT_Q8A && k != CPU_ACT_Q8K)
            continue;
        for (int e = 0; e < n; e++)
            if (cpu_type_act(kind_type[e]) == k)
                kind_of[i] = e;
        if (kind_of[i] < 0) {
            kind_type[n] = w[i]->type;
            kind_of[i] = n++;
        }
    }
    return n;
}

size_t cpu_matmul_group_scratch_bytes(int n_w, const struct aarmd_tensor *const *w, uint32_t n_tok)
{
    uint32_t kt[CPU_MM_GROUP_MAX];
    int ko[CPU_MM_GROUP_MAX];
    if (n_w < 1 || n_w > CPU_MM_GROUP_MAX)
        return 0;
    int n = act_kinds(n_w, w, kt, ko);
    size_t b = 0;
    for (int e = 0; e < n; e++)
        b += cpu_matmul_scratch_bytes(kt[e], w[0]->ne[0], n_tok);   /* row sizes are multiples of 4 */
    return b;
}

size_t cpu_matmul_scratch_bytes(uint32_t type, int64_t n_in, uint32_t n_tok)
{
    return cpu_act_row_bytes(type, n_in) * n_tok;
}

void cpu_matmul_group(struct cpu_pool *pool, enum cpu_simd simd, int n_w, const struct aarmd_tensor *const *w,
                      const float *x, uint32_t n_tok, float *const *y, void *scratch)
{
    struct mm_group g;
    int kind_of[CPU_MM_GROUP_MAX];
    memset(&g, 0, sizeof g);
    if (n_w < 1 || n_w > CPU_MM_GROUP_MAX || n_tok == 0)
        return;
    const struct cpu_kernel_tab *tab = cpu_kernels_get(simd);
    g.n_w = n_w;
    g.x = x;
    g.n_in = w[0]->ne[0];
    g.n_tok = n_tok;
    g.n_q = act_kinds(n_w, w, g.q_type, kind_of);
    uint8_t *sp = scratch;
    for (int e = 0; e < g.n_q; e++) {
        g.q_dst[e] = sp;
        g.q_rb[e] = cpu_act_row_bytes(g.q_type[e], g.n_in);
        sp += g.q_rb[e] * n_tok;
    }
    /* about 8 chunks per thread for balance on a shared machine, 4..64 rows each */
    int nth = cpu_pool_threads(pool);
    int64_t n_tok_blocks = ((int64_t)n_tok + TOK_SUPER - 1) / TOK_SUPER;
    int64_t chunks = 0;
    for (int i = 0; i < n_w; i++) {
        struct mm_job *j = &g.jobs[i];
        j->type = w[i]->type;
        j->n_in = w[i]->ne[0];
        j->n_out = w[i]->ne[1];
        j->n_tok = n_tok;
        j->w_rb = cpu_type_row_bytes(w[i]->type, w[i]->ne[0]);
        j->dot = tab->dot[w[i]->type];
        j->multi = tab->dot_multi[w[i]->type];
        j->tile = tab->tile[w[i]->type];
        j->w = w[i]->data;
        j->x = x;
        j->y = y[i];
        if (j->w_rb == 0 || w[i]->ne[0] != g.n_in) {   /* unsupported type: zeros, as documented */
            memset(y[i], 0, (size_t)n_tok * (size_t)j->n_out * sizeof(float));
            j->n_row_chunks = 0;
            g.chunk_end[i] = chunks;
            continue;
        }
        if (kind_of[i] < 0) {
            j->act = (uint8_t *)(uintptr_t)x;
            j->a_rb = (size_t)j->n_in * sizeof(float);
        } else {
            j->act = g.q_dst[kind_of[i]];
            j->a_rb = g.q_rb[kind_of[i]];
        }
        int64_t rpc = (j->n_out + 8 * nth - 1) / (8 * nth);
        rpc = (rpc + 3) & ~(int64_t)3;
        j->rows_per_chunk = rpc < 4 ? 4 : rpc > 64 ? 64 : rpc;
        if (j->tile)   /* whole tiles: 16..64 rows */
            j->rows_per_chunk = (j->rows_per_chunk + CPU_TILE_ROWS - 1) / CPU_TILE_ROWS * CPU_TILE_ROWS;
        j->n_row_chunks = (j->n_out + j->rows_per_chunk - 1) / j->rows_per_chunk;
        chunks += j->n_row_chunks * n_tok_blocks;
        g.chunk_end[i] = chunks;
    }
    if (g.n_q)
        cpu_pool_run_chunks(pool, mm_quant_cb, &g, (int64_t)g.n_q * n_tok);
    cpu_pool_run_chunks(pool, mm_chunk_cb, &g, chunks);
}

void cpu_matmul(struct cpu_pool *pool, enum cpu_simd simd, const struct aarmd_tensor *w,
                const float *x, uint32_t n_tok, float *y, void *scratch)
{
    cpu_matmul_group(pool, simd, 1, &w, x, n_tok, &y, scratch);
}
