/*
 * cuda_matmul_check.cu — stand-alone check and micro-benchmark of the CUDA
 * backend's weight kernels (shaders/cuda/matmul.cu, matvec.cu, mmq.cu), linked
 * with their objects by tools/device-run.sh. Default: every kernel path against
 * the v4 reference kernels on random weights of awkward shapes for every
 * type (exit 0 pass, 1 fail, 77 skip without a device). --bench: the
 * Llama-8B / 1B / SmolLM2-135M decode shapes per kernel version. Not the plugin.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <initializer_list>
#include <vector>
#include <algorithm>

#include "../../plugins/cuda/launch.h"
#include "../../core/abi/aarmd_backend.h"

/* shaders/cuda/mmq.cu: the v8 GEMM (declared where it is called, matvec.cu) */
extern "C" int cuk_mmqv_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                           const float *xd, int n_tok, float *y, int cfg);
/* shaders/cuda/mmq.cu: the v9 GEMM (F16 activations once per launch, producer warp, mbarriers) */
extern "C" int cuk_mmq9_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                           const float *xd, int n_tok, float *y, int cfg);
/* shaders/cuda/mmq_i8.cu: the int8 GEMM (int8 mma straight on the Q8 activations) */
extern "C" int cuk_mmqi8_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out,
                            const void *xq, const float *xd, int n_tok, float *y, int cfg);

#define CK(x)                                                                              \
    do {                                                                                   \
        cudaError_t e_ = (x);                                                              \
        if (e_ != cudaSuccess) {                                                           \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(2);                                                                       \
        }                                                                                  \
    } while (0)

struct tinfo {
    uint32_t type;
    const char *name;
    int bel, bb;          /* elements and bytes per block */
    int h[2];             /* byte offsets of F16 scale fields (-1: none) */
};

static const tinfo TYPES[] = {
    {AARMD_TYPE_F32, "F32", 1, 4, {-1, -1}},      {AARMD_TYPE_F16, "F16", 1, 2, {-1, -1}},
    {AARMD_TYPE_BF16, "BF16", 1, 2, {-1, -1}},    {AARMD_TYPE_Q4_0, "Q4_0", 32, 18, {0, -1}},
    {AARMD_TYPE_Q4_1, "Q4_1", 32, 20, {0, 2}},    {AARMD_TYPE_Q5_0, "Q5_0", 32, 22, {0, -1}},
    {AARMD_TYPE_Q5_1, "Q5_1", 32, 24, {0, 2}},    {AARMD_TYPE_Q8_0, "Q8_0", 32, 34, {0, -1}},
    {AARMD_TYPE_Q4_K, "Q4_K", 256, 144, {0, 2}},  {AARMD_TYPE_Q5_K, "Q5_K", 256, 176, {0, 2}},
    {AARMD_TYPE_Q6_K, "Q6_K", 256, 210, {208, -1}},
};

__device__ __forceinline__ uint32_t hash32(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
    return (uint32_t)x;
}

__device__ __forceinline__ float urand(uint64_t k) { return (float)(hash32(k) >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f; }

/* random weights: floats in [-1, 1) (scaled), quant bytes random with F16 scales in [-s, s) */
__global__ void k_fill(uint8_t *p, int64_t n_blocks, int bb, int kind, int h0, int h1, float scale, uint64_t seed)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_blocks)
        return;
    uint8_t *b = p + i * bb;
    uint64_t k = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)i * 1315423911ULL;
    if (kind == 0) { *reinterpret_cast<float *>(b) = urand(k) * scale; return; }
    if (kind == 1) { *reinterpret_cast<__half *>(b) = __float2half(urand(k) * scale); return; }
    if (kind == 2) {
        float f = urand(k) * scale;
        *reinterpret_cast<uint16_t *>(b) = (uint16_t)(__float_as_uint(f) >> 16);
        return;
    }
    for (int j = 0; j < bb; j++)
        b[j] = (uint8_t)(hash32(k + 7 * (uint64_t)j + 1) >> 13);
    if (h0 >= 0) *reinterpret_cast<__half *>(b + h0) = __float2half(urand(k + 1000) * scale);
    if (h1 >= 0) *reinterpret_cast<__half *>(b + h1) = __float2half(urand(k + 2000) * scale);
}

__global__ void k_fill_f32(float *x, int64_t n, uint64_t seed)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] = urand(seed * 77 + (uint64_t)i);
}

static void fill_w(const tinfo &t, void *d, int64_t n_in, int64_t n_out, uint64_t seed)
{
    int64_t nb = n_out * (n_in / t.bel);
    int kind = t.type == AARMD_TYPE_F32 ? 0 : t.type == AARMD_TYPE_F16 ? 1 : t.type == AARMD_TYPE_BF16 ? 2 : 3;
    float scale = kind == 3 ? 0.02f : 0.05f;
    k_fill<<<(unsigned)((nb + 255) / 256), 256>>>((uint8_t *)d, nb, t.bb, kind, t.h[0], t.h[1], scale, seed);
    CK(cudaGetLastError());
}

static std::vector<float> get(const float *d, size_t n)
{
    std::vector<float> h(n);
    CK(cudaMemcpy(h.data(), d, n * 4, cudaMemcpyDeviceToHost));
    return h;
}

/* ||a - b|| / ||b||; inf when a holds a non-finite value */
static double relerr(const std::vector<float> &a, const std::vector<float> &b)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int n_fail = 0;

static void report(const char *what, const tinfo &t, int64_t n_in, int64_t n_out, int nt, double e, double tol)
{
    int ok = e <= tol;
    if (!ok)
        n_fail++;
    printf("%s %-18s %-5s n_in %6lld n_out %6lld tok %2d  err %.3e (tol %.0e)\n", ok ? "OK  " : "FAIL", what, t.name,
           (long long)n_in, (long long)n_out, nt, e, tol);
}

/* the v9 1-token kernels (cuk_mv1_q8) of every configuration, plain and with the residual/bias
 * epilogue, called directly and through cuk_matvec_q8 / cuk_matvec_q8_acc, against the v4 Q8
 * matvec (ref8); they must take exactly Q4_K rows of whole super-blocks */
/* register kernel (k_mv1_q4k): NW KS U in hex digits; bulk-copy kernel (k_mvt): 0x1000 | NW KS S, bit 16+ cap */
static const int MV1_CFGS[] = {0,      0x841,  0x441,  0x842,  0x844,  0x442,  0x444,  0x821,   0x822,
                               0x824,  0x881,  0x882,  0x1811, 0x1821, 0x1822, 0x1421, 0x1411, 0x1812,
                               0x1824, 0x1422, 0x1831, 0x11821};

static void check_mv1(const tinfo &t, void *w, int64_t n_in, int64_t n_out, void *xq, float *xd, const float *x,
                      float *y, const std::vector<float> &ref8)
{
    /* x != NULL: float weights (cuk_mv1_f, ref8 is then the v4 float reference) */
    cudaStream_t s = 0;
    const int whole = n_in % 256 == 0;   /* rows of whole 16-byte multiples for every kernel here */
    float *yi = NULL, *b = NULL;
    CK(cudaMalloc(&yi, n_out * 4));
    CK(cudaMalloc(&b, n_out * 4));
    k_fill_f32<<<(unsigned)((n_out + 255) / 256), 256>>>(yi, n_out, 91);
    k_fill_f32<<<(unsigned)((n_out + 255) / 256), 256>>>(b, n_out, 92);
    std::vector<float> hyi = get(yi, n_out), hb = get(b, n_out), want_acc(n_out), want_accb(n_out);
    for (int64_t i = 0; i < n_out; i++) {
        want_acc[i] = hyi[i] + ref8[i];
        want_accb[i] = hyi[i] + ref8[i] + hb[i];
    }
    const double tol = x ? 2e-5 : 1e-4;   /* int8 dot products exact; F32 arithmetic in another order */
    auto mv1 = [&](const float *bb, int acc, int cfg) {
        return x ? cuk_mv1_f(s, t.type, w, n_in, n_out, x, bb, acc, y, cfg)
                 : cuk_mv1_q8(s, t.type, w, n_in, n_out, xq, xd, bb, acc, y, cfg);
    };
    const int tma_types = t.type == AARMD_TYPE_Q8_0 || t.type == AARMD_TYPE_F16 || t.type == AARMD_TYPE_BF16;
    /* the bulk-copy kernel refuses a configuration whose shared memory (activations + stages of rows)
     * exceeds the device's opt-in limit: the 8B down row in 8-row sets, for one */
    int smem_max = 0, dev = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    auto tma_fits = [&](int cfg) {
        size_t ks = cfg & 15, st = (cfg >> 4) & 15, nw = (cfg >> 8) & 15, rb = cuk_row_bytes(t.type, n_in);
        size_t act = t.type == AARMD_TYPE_Q4_K   ? (size_t)n_in + (size_t)n_in / 32 * 8
                     : t.type == AARMD_TYPE_Q8_0 ? (size_t)n_in + (size_t)n_in / 32 * 4
                                                 : (size_t)n_in * 4;
        auto up = [](size_t n) { return (n + 127) & ~(size_t)127; };
        return 128 + up(act) + st * up(nw / ks * rb + 16) <= (size_t)smem_max;
    };
    for (int cfg : MV1_CFGS) {
        for (int pdl : {0, 1, 2}) {
            cuk_set_tuning(pdl, 1);
            for (int mode = 0; mode < 3; mode++) {   /* 0 y = Wx, 1 y += Wx, 2 y += Wx + b */
                if (mode == 0)
                    CK(cudaMemset(y, 0xFF, n_out * 4));
                else
                    CK(cudaMemcpy(y, yi, n_out * 4, cudaMemcpyDeviceToDevice));
                int took = mv1(mode == 2 ? b : NULL, mode != 0, cfg);
                CK(cudaDeviceSynchronize());
                CK(cudaGetLastError());
                char what[40];
                snprintf(what, sizeof what, "v9 mv1 %#x m%d pdl=%d", cfg, mode, pdl);
                /* Q4_K: every configuration; Q8_0, F16, BF16: the bulk-copy kernel (automatic: either) */
                int tma = (cfg >> 12 & 15) == 1;
                int want = whole && (tma ? (t.type == AARMD_TYPE_Q4_K || tma_types) && tma_fits(cfg)
                                         : t.type == AARMD_TYPE_Q4_K);
                if (cfg == 0 && whole && tma_types)
                    want = took;
                if (took != want) {
                    n_fail++;
                    printf("FAIL %s %s n_in %lld: took %d, expected %d\n", what, t.name, (long long)n_in, took, want);
                } else if (took) {
                    report(what, t, n_in, n_out, 1, relerr(get(y, n_out), mode == 0 ? ref8 : mode == 1 ? want_acc
                                                                                               : want_accb), tol);
                }
            }
        }
    }
    /* the routes: the process default (automatic) through the dispatchers; then off */
    cuk_set_tuning(2, 1);
    cuk_mm_set_variant(5, 1 << 2, 0);
    cuk_mv1_set(0);
    CK(cudaMemset(y, 0xFF, n_out * 4));
    if (x)
        cuk_matmul(s, t.type, w, n_in, n_out, x, 1, y);
    else
        cuk_matvec_q8(s, t.type, w, n_in, n_out, xq, xd, 1, y);
    CK(cudaDeviceSynchronize());
    report("v9 route matvec", t, n_in, n_out, 1, relerr(get(y, n_out), ref8), whole ? tol : 2e-5);
    CK(cudaMemcpy(y, yi, n_out * 4, cudaMemcpyDeviceToDevice));
    int took = x ? cuk_matvec_f_acc(s, t.type, w, n_in, n_out, x, b, y)
                 : cuk_matvec_q8_acc(s, t.type, w, n_in, n_out, xq, xd, b, y);
    if (!took && !(x && n_in * cuk_row_bytes(t.type, 1) % 16)) {
        n_fail++;
        printf("FAIL cuk_matvec_*_acc refused %s n_in %lld\n", t.name, (long long)n_in);
    }
    CK(cudaDeviceSynchronize());
    if (took)
        report("v9 route matvec_acc", t, n_in, n_out, 1, relerr(get(y, n_out), want_accb), whole ? tol : 2e-5);
    /* refusals: off, unknown configurations */
    if (mv1(NULL, 0, -1) || mv1(NULL, 0, 0x333)) {
        n_fail++;
        printf("FAIL cuk_mv1 took cfg -1 or 0x333 (%s)\n", t.name);
    }
    cuk_mv1_set(CUK_MV1_DEFAULT);
    cudaFree(yi);
    cudaFree(b);
}

/* the compute capability's major number of the current device (9: sm_90, what the bulk-copy
 * GEMMs need) */
static int cc_major(void)
{
    int dev = 0, cc = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, dev));
    return cc;
}

/* One configuration of a GEMM entry called directly (`gemm` enqueues and returns whether it took
 * the product): it must take it exactly when `expect`, then write every output (NaN poison),
 * match the int8 reference within tol and give bit-identical results when run again. */
template <class F>
static void check_gemm_run(const char *what, const tinfo &t, int64_t n_in, int64_t n_out, int nt, float *y,
                           const std::vector<float> &ref8, double tol, int expect, F gemm)
{
    const size_t ny = (size_t)nt * n_out;
    CK(cudaMemset(y, 0xFF, ny * 4));
    int took = gemm();
    CK(cudaDeviceSynchronize());
    CK(cudaGetLastError());
    if (took != expect) {
        n_fail++;
        printf("FAIL %s %s n_in %lld tok %d: took %d, expected %d\n", what, t.name, (long long)n_in, nt, took, expect);
        return;
    }
    if (!took)
        return;
    std::vector<float> a = get(y, ny);
    report(what, t, n_in, n_out, nt, relerr(a, ref8), tol);
    CK(cudaMemset(y, 0xFF, ny * 4));
    gemm();
    CK(cudaDeviceSynchronize());
    std::vector<float> b = get(y, ny);
    if (memcmp(a.data(), b.data(), ny * 4)) {
        n_fail++;
        printf("FAIL %s %s n_in %lld n_out %lld tok %d: a second run differs\n", what, t.name, (long long)n_in,
               (long long)n_out, nt);
    }
}

/* the v9 GEMM called directly (cuk_mmq9_q8) in several configurations: it must take
 * Q4_0/Q4_1/Q8_0/Q4_K rows of whole 256-element units and 16-byte multiples (sm_90), refuse the
 * rest, match the int8 reference (F16 rounding: 3e-3), write every output (NaN poison) and give
 * bit-identical results when run again (no order-dependent sums) */
static void check_v9(const tinfo &t, void *w, int64_t n_in, int64_t n_out, int nt, void *xq, float *xd, float *y,
                     const std::vector<float> &ref8)
{
    cudaStream_t s = 0;
    const int cc = cc_major();
    const size_t rb = cuk_row_bytes(t.type, n_in);
    const int want = (t.type == AARMD_TYPE_Q4_0 || t.type == AARMD_TYPE_Q4_1 || t.type == AARMD_TYPE_Q8_0 ||
                      t.type == AARMD_TYPE_Q4_K) && rb % 16 == 0 && n_in % 256 == 0 && cc >= 9;
    /* cfg: bits 0-1 stages - 2, 2-5 cluster cap, 6-7 K-split target, 8 128-row blocks, 9 row copies */
    for (int cfg : {0, 1, 2, 1 << 2, 2 << 2 | 3 << 6, 1 << 8, 1 << 8 | 1, 1 << 8 | 2, 3 << 6, 1 << 6, 1 << 9,
                    1 << 9 | 1 << 8}) {
        for (int pdl : {0, 1}) {
            cuk_set_tuning(pdl, 1);
            char what[40];
            snprintf(what, sizeof what, "v9 cfg %d pdl=%d vs q8 v4", cfg, pdl);
            /* 4 stages of 128 Q8_0 rows and 64 tokens (278 KB) exceed the shared memory: refused */
            const int fits = !((cfg & 3) == 2 && (cfg & (1 << 8)) && t.type == AARMD_TYPE_Q8_0 && nt > 32);
            check_gemm_run(what, t, n_in, n_out, nt, y, ref8, 3e-3, want && fits,
                           [&] { return cuk_mmq9_q8(s, t.type, w, n_in, n_out, xq, xd, nt, y, cfg); });
        }
    }
}

/* the int8 GEMM called directly (cuk_mmqi8_q8) in several configurations: it must take Q8_0 /
 * Q4_K rows of whole 256-element units and 16-byte multiples (sm_90), refuse the rest (and
 * activations not 16-byte aligned), match the int8 reference closely (int32 dots, F32 scales:
 * 3e-4, measured 1.2e-4; the F16 GEMMs' bound is 3e-3), write every output (NaN poison) and give bit-identical
 * results when run again */
static void check_i8(const tinfo &t, void *w, int64_t n_in, int64_t n_out, int nt, void *xq, float *xd, float *y,
                     const std::vector<float> &ref8)
{
    cudaStream_t s = 0;
    const int cc = cc_major();
    const size_t rb = cuk_row_bytes(t.type, n_in);
    const int want = (t.type == AARMD_TYPE_Q8_0 || t.type == AARMD_TYPE_Q4_K) && rb % 16 == 0 && n_in % 256 == 0 &&
                     cc >= 9;
    /* the EARLY producer (cfg bit 8) runs only with AARMD_CUDA_I8_EARLY=1 */
    const char *ee = getenv("AARMD_CUDA_I8_EARLY");
    const int early = ee && !strcmp(ee, "1");
    /* cfg: bits 0-1 stages - 2, 2-5 cluster cap, 6-7 K-split target, 8 EARLY producer, 9 TAB (tables
     * precomputed) */
    for (int cfg : {0, 1, 2, 1 << 2, 2 << 2 | 3 << 6, 3 << 6, 1 << 6, 1 | 3 << 6, 1 << 8, 1 << 8 | 1 | 2 << 6, 1 << 9,
                    1 << 9 | 1, 1 << 9 | 3 << 6}) {
        const int want_cfg = want && (!(cfg & (1 << 8)) || early);
        for (int pdl : {0, 1}) {
            cuk_set_tuning(pdl, 1);
            char what[40];
            snprintf(what, sizeof what, "i8 cfg %d pdl=%d vs q8 v4", cfg, pdl);
            check_gemm_run(what, t, n_in, n_out, nt, y, ref8, 3e-4, want_cfg,
                           [&] { return cuk_mmqi8_q8(s, t.type, w, n_in, n_out, xq, xd, nt, y, cfg); });
        }
    }
    /* activations at an 8-byte offset: refused */
    if (want && cuk_mmqi8_q8(s, t.type, w, n_in, n_out, (char *)xq + 8, xd, nt > 1 ? nt - 1 : 1, y, 0)) {
        n_fail++;
        printf("FAIL i8 took activations of 8-byte alignment (%s)\n", t.name);
    }
    CK(cudaDeviceSynchronize());
}

/* one shape of one type at nt tokens: every path against the v4 kernels */
static void check_one(const tinfo &t, int64_t n_in, int64_t n_out, int nt, uint64_t seed)
{
    size_t rb = cuk_row_bytes(t.type, n_in);
    void *w = NULL, *xq = NULL;
    float *x = NULL, *xd = NULL, *y = NULL;
    size_t ny = (size_t)nt * n_out;
    /* + 16: an offset copy checks the kernels' refusal of unaligned rows */
    CK(cudaMalloc(&w, rb * n_out + 16));
    CK(cudaMalloc(&x, (size_t)nt * n_in * 4));
    CK(cudaMalloc(&xq, (size_t)nt * n_in));
    CK(cudaMalloc(&xd, (size_t)nt * n_in / 32 * 4));
    CK(cudaMalloc(&y, ny * 4));
    fill_w(t, w, n_in, n_out, seed);
    k_fill_f32<<<(unsigned)((nt * n_in + 255) / 256), 256>>>(x, nt * n_in, seed + 1);
    cudaStream_t s = 0;
    /* float reference: the v4 one-warp-per-row matmul with F32 activations */
    cuk_set_tuning(0, 0);
    CK(cudaMemset(y, 0xFF, ny * 4));
    cuk_matmul(s, t.type, w, n_in, n_out, x, nt, y);
    CK(cudaDeviceSynchronize());
    std::vector<float> ref = get(y, ny);
    int q8 = cuk_type_q8(t.type);
    cuk_mm_set_variant(3, 0x1fe, 0x1fe);   /* the streaming matvec at every token count it takes */
    if (!q8) {
        for (int mvf : {3, 1}) {
            cuk_set_tuning(mvf == 1, mvf);
            CK(cudaMemset(y, 0xFF, ny * 4));
            cuk_matmul(s, t.type, w, n_in, n_out, x, nt, y);
            CK(cudaDeviceSynchronize());
            CK(cudaGetLastError());
            report(mvf == 1 ? "v6 vs v4 (float)" : "v5 vs v4 (float)", t, n_in, n_out, nt, relerr(get(y, ny), ref), 1e-5);
        }
        if (nt == 1)
            check_mv1(t, w, n_in, n_out, NULL, NULL, x, y, ref);
    } else {
        cuk_quantize_q8(s, x, (int64_t)nt * n_in, xq, xd);
        /* the v4 item matvec on Q8 activations, 8 tokens a launch */
        cuk_set_tuning(0, 0);
        CK(cudaMemset(y, 0xFF, ny * 4));
        cuk_matvec_q8(s, t.type, w, n_in, n_out, xq, xd, nt, y);
        CK(cudaDeviceSynchronize());
        std::vector<float> ref8 = get(y, ny);
        report("q8 v4 vs float v4", t, n_in, n_out, nt, relerr(ref8, ref), 3e-2);
        /* v6 with each GEMM version (1..7 for > 8 tokens, 8..10 the v8 GEMM), v5 (99) */
        for (int vv : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 99}) {   /* 99: v5 */
            if (vv != 1 && vv != 99 && nt <= 8 && vv < 20)   /* 20-24: also the 3..8-token route */
                continue;
            for (int pdl : {0, 1}) {
                int mvf = vv == 99 ? 7 : 1;
                cuk_set_tuning(pdl, mvf);
                cuk_mm_set_variant(vv == 99 ? 5 : vv, 0x1fe, 0x1fe);
                CK(cudaMemset(y, 0xFF, ny * 4));
                cuk_matvec_q8(s, t.type, w, n_in, n_out, xq, xd, nt, y);
                CK(cudaDeviceSynchronize());
                CK(cudaGetLastError());
                char what[40];
                snprintf(what, sizeof what, "%s%d pdl=%d vs q8 v4", vv == 99 ? "v5" : nt <= 8 ? "v6" : "v6 mmq", vv, pdl);
                /* the F16 GEMMs (3, 5-14) round weights and activations to F16 */
                int f16 = nt > 8 && (vv == 3 || (vv >= 5 && vv <= 19));
                if (vv >= 20 && vv <= 24 && nt >= 3)   /* the int8 GEMM, or v9/v8 (F16) for other types */
                    f16 = 1;
                report(what, t, n_in, n_out, nt, relerr(get(y, ny), ref8), f16 ? 3e-3 : 2e-5);
            }
        }
        /* the v8 GEMM called directly (any token count): it must take Q4_0/Q4_1/Q8_0/Q4_K rows
         * of 4-byte multiples, refuse the rest, and match the int8 reference */
        {
            int want = (t.type == AARMD_TYPE_Q4_0 || t.type == AARMD_TYPE_Q4_1 || t.type == AARMD_TYPE_Q8_0 ||
                        t.type == AARMD_TYPE_Q4_K) && rb % 4 == 0;
            /* cfg: bits 1-4 cluster cap, 5-8 L2 prefetch units, 9-10 ring of 4 - v slots (>= 2),
             * 11-12 K-split target */
            for (int cfg : {0, 1 << 1 | 2 << 9, 4 << 5 | 1 << 9, 2 << 9, 3 << 1 | 1 << 5 | 3 << 9, 1 << 9 | 3 << 11}) {
                cuk_set_tuning(1, 1);
                CK(cudaMemset(y, 0xFF, ny * 4));
                int took = cuk_mmqv_q8(s, t.type, w, n_in, n_out, xq, xd, nt, y, cfg);
                CK(cudaDeviceSynchronize());
                CK(cudaGetLastError());
                char what[40];
                snprintf(what, sizeof what, "v8 cfg %d vs q8 v4", cfg);
                if (took != want) {
                    n_fail++;
                    printf("FAIL %s %s n_in %lld: took %d, expected %d\n", what, t.name, (long long)n_in, took, want);
                } else if (took) {
                    report(what, t, n_in, n_out, nt, relerr(get(y, ny), ref8), 3e-3);
                }
            }
        }
        check_v9(t, w, n_in, n_out, nt, xq, xd, y, ref8);
        check_i8(t, w, n_in, n_out, nt, xq, xd, y, ref8);
        if (nt == 1)
            check_mv1(t, w, n_in, n_out, xq, xd, NULL, y, ref8);
        cuk_mm_set_variant(5, 1 << 2, 0);
        /* unaligned weights: the v6 launchers must refuse them (and the dispatcher still be right) */
        if (rb % 16 == 0) {
            cuk_mm_set_variant(3, 0x1fe, 0x1fe);
            CK(cudaMemcpy((char *)w + 2, w, rb * n_out, cudaMemcpyDeviceToDevice));
            int took = nt <= 8 ? cuk_mvs_q8(s, t.type, (char *)w + 2, n_in, n_out, xq, xd, nt, y) : 0;
            if (took) {
                n_fail++;
                printf("FAIL unaligned rows taken by cuk_mvs_q8 (%s)\n", t.name);
            }
            if (cuk_mmqv_q8(s, t.type, (char *)w + 2, n_in, n_out, xq, xd, nt, y, 0) ||
                cuk_mmq9_q8(s, t.type, (char *)w + 2, n_in, n_out, xq, xd, nt, y, 0)) {
                n_fail++;
                printf("FAIL rows of 2-byte alignment taken by cuk_mmqv_q8 (%s)\n", t.name);
            }
            if (nt == 1 && cuk_mv1_q8(s, t.type, (char *)w + 2, n_in, n_out, xq, xd, NULL, 0, y, 0)) {
                n_fail++;
                printf("FAIL rows of 2-byte alignment taken by cuk_mv1_q8 (%s)\n", t.name);
            }
        }
    }
    cuk_mm_set_variant(5, 1 << 2, 0);
    cudaFree(w); cudaFree(x); cudaFree(xq); cudaFree(xd); cudaFree(y);
}

static void check_v10(void);
static void check_v10_attn(void);
static void check_v15_rope(void);
static int run_attn_bench(void);
static void check_wg(void);
static void check_k(void);
static int run_wg(void);
static int run_check(void)
{
    const int toks[] = {1, 3, 8, 9, 17, 33, 64};
    uint64_t seed = 1;
    const char *only = getenv("MM_CHECK_TYPES");   /* e.g. "Q4_K Q8_0": those types alone */
    for (const tinfo &t : TYPES) {
        if (only && *only && !strstr(only, t.name))
            continue;
        /* awkward shapes: n_out not a multiple of 8/16/32/64, K-quants 1..5 super-blocks, odd Q8_0 block counts */
        std::vector<std::pair<int64_t, int64_t>> shapes;
        if (t.bel == 256)   /* 4608: a partial 4-super-block step, 14336: the 8B down row (split warps) */
            shapes = {{256, 37}, {1280, 77}, {768, 129}, {4608, 35}, {14336, 21}};
        else
            shapes = {{96, 45}, {576, 130}, {1056, 19}, {4096, 67}, {2560, 21}, {14336, 13}};   /* 8B down */
        for (auto &sh : shapes)
            for (int nt : toks)
                check_one(t, sh.first, sh.second, nt, seed++);
    }
    /* refusals: too many tokens, unsupported types */
    if (cuk_mmq_q8(0, AARMD_TYPE_Q4_K, NULL, 256, 1, NULL, NULL, 65, NULL) ||
        cuk_mmq_q8(0, AARMD_TYPE_F16, NULL, 256, 1, NULL, NULL, 9, NULL) ||
        cuk_mvs_q8(0, AARMD_TYPE_Q4_K, NULL, 256, 1, NULL, NULL, 9, NULL) ||
        cuk_mvs_f(0, AARMD_TYPE_Q4_K, NULL, 256, 1, NULL, 1, NULL) ||
        cuk_mmqv_q8(0, AARMD_TYPE_Q4_K, NULL, 256, 1, NULL, NULL, 65, NULL, 0) ||
        cuk_mmqv_q8(0, AARMD_TYPE_Q6_K, NULL, 256, 1, NULL, NULL, 16, NULL, 0) ||
        cuk_mmqv_q8(0, AARMD_TYPE_F16, NULL, 256, 1, NULL, NULL, 16, NULL, 0) ||
        cuk_mmqv_q8(0, AARMD_TYPE_Q4_K, NULL, 256, 1, NULL, NULL, 16, NULL, 1 << 13) ||
        cuk_mmqv_q8(0, AARMD_TYPE_Q4_K, NULL, 100, 1, NULL, NULL, 16, NULL, 0) ||
        cuk_mmqv_q8(0, AARMD_TYPE_Q4_K, NULL, 288, 1, NULL, NULL, 16, NULL, 0) ||
        cuk_mmq9_q8(0, AARMD_TYPE_Q4_K, NULL, 256, 1, NULL, NULL, 16, NULL, 1 << 10) ||
        cuk_mmq9_q8(0, AARMD_TYPE_Q4_0, NULL, 288, 1, NULL, NULL, 16, NULL, 0) ||
        cuk_mmqi8_q8(0, AARMD_TYPE_Q4_0, NULL, 256, 1, NULL, NULL, 16, NULL, 0) ||
        cuk_mmqi8_q8(0, AARMD_TYPE_Q4_K, NULL, 256, 1, NULL, NULL, 16, NULL, 1 << 10) ||
        cuk_mmqi8_q8(0, AARMD_TYPE_Q4_K, NULL, 256, 1, NULL, NULL, 16, NULL, 3 << 8) ||
        cuk_mmqi8_q8(0, AARMD_TYPE_Q8_0, NULL, 288, 1, NULL, NULL, 16, NULL, 0)) {
        printf("FAIL a launcher took a case it must refuse\n");
        n_fail++;
    }
    /* what both sm_90 small-batch GEMMs (v9, int8) refuse: too many or no tokens, other types, a bad
     * cfg, no rows, rows not of whole 256-element units */
    typedef int (*gemm_fn)(cudaStream_t, uint32_t, const void *, int64_t, int64_t, const void *, const float *, int,
                           float *, int);
    const struct { uint32_t type; int64_t n_in, n_out; int n_tok, cfg; } refused[] = {
        {AARMD_TYPE_Q4_K, 256, 1, 65, 0}, {AARMD_TYPE_Q4_K, 256, 1, 0, 0},  {AARMD_TYPE_Q6_K, 256, 1, 16, 0},
        {AARMD_TYPE_F16, 256, 1, 16, 0},  {AARMD_TYPE_Q4_K, 256, 1, 16, -1}, {AARMD_TYPE_Q4_K, 256, 0, 16, 0},
        {AARMD_TYPE_Q8_0, 160, 1, 16, 0}};
    for (gemm_fn f : {cuk_mmq9_q8, cuk_mmqi8_q8})
        for (const auto &r : refused)
            if (f(0, r.type, NULL, r.n_in, r.n_out, NULL, NULL, r.n_tok, NULL, r.cfg)) {
                printf("FAIL %s took type %u n_in %lld n_out %lld tok %d cfg %d: it must refuse\n",
                       f == cuk_mmq9_q8 ? "cuk_mmq9_q8" : "cuk_mmqi8_q8", r.type, (long long)r.n_in,
                       (long long)r.n_out, r.n_tok, r.cfg);
                n_fail++;
            }
    check_v10();        /* dec: the fused one-token kernels (end of this file) */
    check_v10_attn();   /* dec: the decode attention's batched keys and merge (end of this file) */
    check_v15_rope();   /* the decode attention's own rotation against k_rope_store (end of this file) */
    check_wg();         /* wg: the warpgroup-MMA GEMM for Q4_K steps (end of this file) */
    check_k();          /* k: the Q4_K GEMM for served steps (end of this file) */
    printf("check: %d failures\n", n_fail);
    return n_fail ? 1 : 0;
}

/* ---- bench: decode shapes --------------------------------------------------------- */

struct mat { int64_t n_in, n_out; const char *name; };

/* Captures `per` calls of launch(i) on s in one graph and replays it 12 times: the median
 * replay, us per call (the first 2 replays left out). */
template <class F>
static double time_graph(cudaStream_t s, int per, F launch)
{
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < per; i++)
        launch(i);
    CK(cudaStreamEndCapture(s, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> ms;
    for (int r = 0; r < 12; r++) {
        CK(cudaEventRecord(e0, s));
        CK(cudaGraphLaunch(ge, s));
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        float m = 0;
        CK(cudaEventElapsedTime(&m, e0, e1));
        if (r >= 2)
            ms.push_back(m);
    }
    CK(cudaGetLastError());
    std::sort(ms.begin(), ms.end());
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return ms[ms.size() / 2] * 1000.0 / per;
}

/* times `reps` rounds of calls over `nb` rotating weight copies through a captured graph; us per call */
static double time_calls(uint32_t type, std::vector<void *> &ws, int64_t n_in, int64_t n_out, const float *x,
                         const void *xq, const float *xd, int nt, float *y, int q8)
{
    static cudaStream_t s = NULL;   /* one stream for every call: the v9 GEMM keeps a scratch per stream */
    if (!s)
        CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return time_graph(s, 24, [&](int i) {
        void *w = ws[i % ws.size()];
        if (q8)
            cuk_matvec_q8(s, type, w, n_in, n_out, xq, xd, nt, y);
        else
            cuk_matmul(s, type, w, n_in, n_out, x, nt, y);
    });
}

/* the integers listed in environment variable `name` ("1 16 32"), or `dflt` when it is unset */
static std::vector<int> env_ints(const char *name, std::vector<int> dflt)
{
    const char *p = getenv(name);
    if (!p)
        return dflt;
    std::vector<int> v;
    while (*p) {
        char *e;
        long x = strtol(p, &e, 10);
        if (e == p)
            break;
        v.push_back((int)x);
        p = e;
    }
    return v;
}

/* MM_VARS="v9 i8 ...": the bench runs the variants named there alone (unset: all) */
static int var_selected(const char *name)
{
    const char *sel = getenv("MM_VARS");
    if (!sel || !*sel)
        return 1;
    const size_t n = strlen(name);
    for (const char *p = strstr(sel, name); p; p = strstr(p + 1, name))
        if ((p == sel || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0))
            return 1;
    return 0;
}

static int run_bench(int argc, char **argv)
{
    const mat m8b[] = {{4096, 6144, "qkv"}, {4096, 4096, "wo"}, {4096, 28672, "gate_up"}, {14336, 4096, "down"},
                       {4096, 128256, "output"}};
    const mat m1b[] = {{2048, 3072, "qkv"}, {2048, 2048, "wo"}, {2048, 16384, "gate_up"}, {8192, 2048, "down"},
                       {2048, 128256, "output"}};
    double bw = argc > 0 ? atof(argv[0]) : 3000.0;
    const char *only = argc > 1 ? argv[1] : "";
    const mat m135[] = {{576, 960, "qkv"}, {576, 576, "wo"}, {576, 3072, "gate_up"}, {1536, 576, "down"},
                        {576, 49152, "output"}};
    struct { const char *type; const mat *m; int n_layer; } cases[] = {
        {"Q4_K", m8b, 32}, {"Q8_0", m8b, 32}, {"F16", m8b, 32}, {"BF16", m1b, 16}, {"Q4_1", m135, 30}};
    printf("bandwidth for %% columns: %.0f GB/s\n", bw);
    for (auto &c : cases) {
        if (*only && !strstr(only, c.type))
            continue;
        const tinfo *t = NULL;
        for (const tinfo &tt : TYPES)
            if (!strcmp(tt.name, c.type))
                t = &tt;
        int q8 = cuk_type_q8(t->type);
        std::vector<int> toks = env_ints("MM_TOKS", q8 ? std::vector<int>{1, 2, 4, 8, 16, 32, 64}
                                                       : std::vector<int>{1, 4, 8});   /* e.g. "1 16 32 64" */
        /* variants: pdl, mvf (kernel generation), grid cap, GEMM version; small: for <= 8 tokens, big: > 8 */
        /* mv1: the v9 1-token kernel configuration (cuk_mv1_q8; -1 off), run at 1 token only (small 2) */
        struct var { int pdl, mvf, grid, mmq, small, big; const char *name; int mv1; };
        const var vars[] = {{1, 3, 0, 5, 1, 0, "v5", -1},   {1, 1, 0, 5, 0, 0, "mmq1h", -1},
                            {1, 1, 0, 8, 0, 1, "v8", -1},   {1, 1, 0, 9, 0, 0, "v8k1", -1},
                            {1, 1, 0, 10, 0, 0, "v8n3", -1}, {2, 3, 0, 5, 2, 0, "v5p2", -1},
                            {1, 1, 0, 15, 0, 1, "v9", -1},  {1, 1, 0, 16, 0, 1, "v9k2", -1},
                            {1, 1, 0, 17, 0, 1, "v9n3", -1}, {1, 1, 0, 18, 0, 1, "v9w8", -1},
                            {1, 1, 0, 19, 0, 0, "v9row", -1},
                            {1, 1, 0, 5, 2, 0, "mv1", 0},   {2, 1, 0, 5, 2, 0, "mv1p2", 0},
                            {1, 1, 0, 5, 2, 0, "841", 0x841}, {1, 1, 0, 5, 2, 0, "822", 0x822},
                            {1, 1, 0, 5, 2, 0, "t811", 0x1811}, {1, 1, 0, 5, 2, 0, "t821", 0x1821},
                            {1, 1, 0, 5, 2, 0, "t822", 0x1822}, {1, 1, 0, 5, 2, 0, "t421", 0x1421},
                            {1, 1, 0, 5, 2, 0, "t411", 0x1411}, {1, 1, 0, 5, 2, 0, "t812", 0x1812},
                            {1, 1, 0, 5, 2, 0, "t831", 0x1831}, {1, 1, 0, 5, 2, 0, "t824", 0x1824},
                            {1, 1, 0, 5, 2, 0, "t821b2", 0x21821}, {2, 1, 0, 5, 2, 0, "t821p2", 0x1821},
                            {2, 1, 0, 5, 2, 0, "t811p2", 0x1811},
                            {1, 1, 0, 15, 1, 0, "v9s", -1}, {1, 1, 0, 20, 1, 1, "i8", -1},
                            {1, 1, 0, 22, 0, 1, "i8n3", -1}, {1, 1, 0, 23, 0, 1, "i8k3", -1},
                            {1, 1, 0, 21, 0, 1, "i8all", -1}, {1, 1, 0, 24, 1, 1, "i8r", -1},
                            {1, 1, 0, 26, 1, 1, "i8t", -1}, {1, 1, 0, 27, 0, 1, "i8t3", -1},
                            {1, 1, 0, 28, 0, 1, "i8tk2", -1}, {1, 1, 0, 29, 0, 1, "i8tk1", -1}};
        const int NV = (int)(sizeof vars / sizeof vars[0]);
        printf("\n== %s (%s shapes): us per call (GB/s of weights)\n", c.type,
               c.m == m8b ? "8B" : c.m == m1b ? "1B" : "135M");
        std::vector<double> tok_total(toks.size() * NV, 0.0);
        for (int mi = 0; mi < 5; mi++) {
            const mat &m = c.m[mi];
            size_t bytes = cuk_row_bytes(t->type, m.n_in) * m.n_out;
            int nb = (int)std::max<size_t>(2, std::min<size_t>(8, (size_t)400e6 / bytes + 1));
            std::vector<void *> ws(nb);
            for (int i = 0; i < nb; i++) {
                CK(cudaMalloc(&ws[i], bytes));
                fill_w(*t, ws[i], m.n_in, m.n_out, 100 + i);
            }
            float *x, *xd, *y;
            void *xq;
            CK(cudaMalloc(&x, 64 * m.n_in * 4));
            CK(cudaMalloc(&xq, 64 * m.n_in));
            CK(cudaMalloc(&xd, 64 * m.n_in / 32 * 4));
            CK(cudaMalloc(&y, 64 * m.n_out * 4));
            k_fill_f32<<<(unsigned)((64 * m.n_in + 255) / 256), 256>>>(x, 64 * m.n_in, 5);
            cuk_quantize_q8(0, x, 64 * m.n_in, xq, xd);
            CK(cudaDeviceSynchronize());
            for (size_t ti = 0; ti < toks.size(); ti++) {
                int nt = toks[ti];
                printf("%-8s tok %2d:", m.name, nt);
                for (int v = 0; v < NV; v++) {
                    if (!(nt > 8 ? vars[v].big : vars[v].small) || (vars[v].small == 2 && nt != 1))
                        continue;
                    if (!var_selected(vars[v].name))
                        continue;
                    cuk_set_tuning(vars[v].pdl, vars[v].mvf);
                    cuk_mv_set_grid(vars[v].grid);
                    int mask = vars[v].small == 2 ? 0x1fc : 0x1fe;   /* mv1 variants: no streaming matvec at 1 */
                    cuk_mm_set_variant(vars[v].mmq, mask, mask);
                    cuk_mv1_set(vars[v].mv1);
                    double us = time_calls(t->type, ws, m.n_in, m.n_out, x, xq, xd, nt, y, q8);
                    tok_total[ti * NV + v] += us * (mi == 4 ? 1 : c.n_layer);
                    printf("  %s %8.2f (%5.0f)", vars[v].name, us, bytes / us / 1e3);
                }
                printf("\n");
            }
            cuk_mv_set_grid(0);
            cuk_mm_set_variant(5, 1 << 2, 0);
            cuk_mv1_set(CUK_MV1_DEFAULT);
            for (void *w : ws)
                cudaFree(w);
            cudaFree(x); cudaFree(xq); cudaFree(xd); cudaFree(y);
        }
        double wbytes = 0;
        for (int mi = 0; mi < 5; mi++)
            wbytes += (double)cuk_row_bytes(t->type, c.m[mi].n_in) * c.m[mi].n_out * (mi == 4 ? 1 : c.n_layer);
        printf("-- %s all matmuls of one step (%d layers + output, %.2f GB, floor %.3f ms at %.0f GB/s):\n", c.type,
               c.n_layer, wbytes / 1e9, wbytes / bw / 1e6, bw);
        for (size_t ti = 0; ti < toks.size(); ti++) {
            printf("   tok %2d:", toks[ti]);
            for (int v = 0; v < NV; v++)
                if (tok_total[ti * NV + v] > 0)
                    printf("  %s %.3f ms (%3.0f%%)", vars[v].name, tok_total[ti * NV + v] / 1e3,
                           100.0 * wbytes / bw / 1e6 / (tok_total[ti * NV + v] / 1e3));
            printf("\n");
        }
    }
    return 0;
}

/* one launch of each 8B decode kernel of interest, for ncu */
static int run_ncu(void)
{
    const char *types[] = {"Q4_K", "Q8_0", "F16"};
    for (const char *tn : types) {
        const tinfo *t = NULL;
        for (const tinfo &tt : TYPES)
            if (!strcmp(tt.name, tn))
                t = &tt;
        const mat ms[] = {{4096, 6144, "qkv"}, {4096, 28672, "gate_up"}, {14336, 4096, "down"}};
        for (const mat &m : ms) {
            size_t bytes = cuk_row_bytes(t->type, m.n_in) * m.n_out;
            void *w, *xq;
            float *x, *xd, *y;
            CK(cudaMalloc(&w, bytes));
            fill_w(*t, w, m.n_in, m.n_out, 3);
            CK(cudaMalloc(&x, 64 * m.n_in * 4));
            CK(cudaMalloc(&xq, 64 * m.n_in));
            CK(cudaMalloc(&xd, 64 * m.n_in / 32 * 4));
            CK(cudaMalloc(&y, 64 * m.n_out * 4));
            k_fill_f32<<<(unsigned)((64 * m.n_in + 255) / 256), 256>>>(x, 64 * m.n_in, 5);
            cuk_quantize_q8(0, x, 64 * m.n_in, xq, xd);
            for (int mvf : {3, 1}) {
                cuk_set_tuning(0, mvf);
                if (cuk_type_q8(t->type)) {
                    cuk_matvec_q8(0, t->type, w, m.n_in, m.n_out, xq, xd, 1, y);
                    if (mvf == 1)
                        cuk_matvec_q8(0, t->type, w, m.n_in, m.n_out, xq, xd, 32, y);
                } else {
                    cuk_matmul(0, t->type, w, m.n_in, m.n_out, x, 1, y);
                }
            }
            CK(cudaDeviceSynchronize());
            cudaFree(w); cudaFree(x); cudaFree(xq); cudaFree(xd); cudaFree(y);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("skip: no CUDA device (%s)\n", cudaGetErrorString(cudaGetLastError()));
        return 77;
    }
    if (argc > 1 && !strcmp(argv[1], "--bench"))
        return run_bench(argc - 2, argv + 2);
    if (argc > 1 && !strcmp(argv[1], "--ncu"))
        return run_ncu();
    if (argc > 1 && !strcmp(argv[1], "--attn"))
        return run_attn_bench();
    if (argc > 1 && !strcmp(argv[1], "--wg"))
        return run_wg();
    return run_check();
}

/* ---- dec (v10): the fused one-token kernels (cuk_mv1_fused) -------------------------------- */
/*
 * The norm in the prologue and the gated activation in the epilogue of the v9 bulk-copy kernel
 * must give exactly what the kernels they replace give: cuk_norm_q8 (or cuk_norm) then the same
 * configuration unfused, then cuk_act_gated_q8. Outputs poisoned first, compared bit for bit
 * (y, h, h's Q8 rows and scales), RMS and layer norm, with and without norm weights / bias, SiLU
 * and GELU, pdl 0 and 2, several configurations; then the cases it must refuse.
 */
static int same_bits(const void *dev_a, const void *dev_b, size_t bytes)
{
    std::vector<uint8_t> a(bytes), b(bytes);
    CK(cudaMemcpy(a.data(), dev_a, bytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(b.data(), dev_b, bytes, cudaMemcpyDeviceToHost));
    return memcmp(a.data(), b.data(), bytes) == 0;
}

static void check_v10_one(const tinfo &t, int64_t n_in, int64_t n_out, int norm, int gated, int layer, int wb, int gelu,
                          int cfg, int pdl, uint64_t seed)
{
    cudaStream_t s = 0;
    int flt = t.type == AARMD_TYPE_F16 || t.type == AARMD_TYPE_BF16;
    int64_t half = n_out / 2;
    size_t wbytes = (size_t)(n_in / t.bel) * t.bb * n_out;
    void *w, *xq, *xq2, *hq, *hq2;
    float *x, *nw, *nb, *xb, *xd, *xd2, *y, *y2, *h, *h2, *hd, *hd2;
    CK(cudaMalloc(&w, wbytes));
    CK(cudaMalloc(&x, n_in * 4)); CK(cudaMalloc(&nw, n_in * 4)); CK(cudaMalloc(&nb, n_in * 4));
    CK(cudaMalloc(&xb, n_in * 4)); CK(cudaMalloc(&xq, n_in)); CK(cudaMalloc(&xd, n_in / 8));
    CK(cudaMalloc(&xq2, n_in)); CK(cudaMalloc(&xd2, n_in / 8));
    CK(cudaMalloc(&y, n_out * 4)); CK(cudaMalloc(&y2, n_out * 4));
    CK(cudaMalloc(&h, n_out * 2)); CK(cudaMalloc(&h2, n_out * 2));
    CK(cudaMalloc(&hq, n_out)); CK(cudaMalloc(&hq2, n_out)); CK(cudaMalloc(&hd, n_out / 8)); CK(cudaMalloc(&hd2, n_out / 8));
    fill_w(t, w, n_in, n_out, seed);
    k_fill_f32<<<(unsigned)((n_in + 255) / 256), 256>>>(x, n_in, seed + 1);
    k_fill_f32<<<(unsigned)((n_in + 255) / 256), 256>>>(nw, n_in, seed + 2);
    k_fill_f32<<<(unsigned)((n_in + 255) / 256), 256>>>(nb, n_in, seed + 3);
    CK(cudaGetLastError());
    const float *nwp = wb ? nw : NULL, *nbp = wb == 2 ? nb : NULL;
    cuk_set_tuning(pdl, 1);
    /* reference: the kernels the fusion replaces */
    CK(cudaMemset(y, 0xFF, n_out * 4)); CK(cudaMemset(h, 0xFF, n_out * 2));
    CK(cudaMemset(hq, 0x7F, n_out)); CK(cudaMemset(hd, 0xFF, n_out / 8));
    CK(cudaMemset(y2, 0xFF, n_out * 4)); CK(cudaMemset(h2, 0xFF, n_out * 2));
    CK(cudaMemset(hq2, 0x7F, n_out)); CK(cudaMemset(hd2, 0xFF, n_out / 8));
    const float eps = 1e-5f;
    const float *in = x;
    if (norm) {
        cuk_norm_q8(s, xb, x, nwp, nbp, 1, (int)n_in, eps, layer, flt ? NULL : xq, flt ? NULL : xd, NULL, 0, NULL);
        in = xb;
    } else if (!flt) {
        cuk_quantize_q8(s, x, n_in, xq, xd);
    }
    int took = flt ? cuk_mv1_f(s, t.type, w, n_in, n_out, in, NULL, 0, y, cfg & 0xFFFFF)
                   : cuk_mv1_q8(s, t.type, w, n_in, n_out, xq, xd, NULL, 0, y, cfg & 0xFFFFF);
    if (gated)
        cuk_act_gated_q8(s, h, y, (int)n_out, y + half, (int)n_out, 1, (int)half, gelu, flt ? NULL : hq,
                         flt ? NULL : hd, NULL);
    CK(cudaDeviceSynchronize());
    /* fused */
    struct cuk_mv1_fuse f = {};
    f.x = norm ? x : NULL;
    f.nw = nwp;
    f.nb = nbp;
    f.eps = eps;
    f.layer = layer;
    f.gated = gated;
    f.gelu = gelu;
    f.h = gated ? h2 : NULL;
    f.hq = gated && !flt ? hq2 : NULL;
    f.hd = gated && !flt ? hd2 : NULL;
    if (!norm && !flt) {   /* the Q8 input: xq2 as xq */
        CK(cudaMemcpy(xq2, xq, n_in, cudaMemcpyDeviceToDevice));
        CK(cudaMemcpy(xd2, xd, n_in / 8, cudaMemcpyDeviceToDevice));
    }
    int took2 = cuk_mv1_fused(s, t.type, w, n_in, n_out, xq2, flt ? x : xd2, &f, y2, cfg);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    char what[96];
    snprintf(what, sizeof what, "v10 mv1f %#x n%d g%d l%d w%d a%d pdl=%d", cfg, norm, gated, layer, wb, gelu, pdl);
    int ok = took && took2 && same_bits(y2, y, n_out * 4);
    if (ok && gated)
        ok = same_bits(h2, h, half * 4) && (flt || (same_bits(hq2, hq, half) && same_bits(hd2, hd, half / 8)));
    if (!ok)
        n_fail++;
    printf("%s %-40s %-5s n_in %6lld n_out %6lld took %d/%d %s\n", ok ? "OK  " : "FAIL", what, t.name,
           (long long)n_in, (long long)n_out, took, took2, ok ? "bit-identical" : "differs");
    cudaFree(w); cudaFree(x); cudaFree(nw); cudaFree(nb); cudaFree(xb); cudaFree(xq); cudaFree(xd);
    cudaFree(xq2); cudaFree(xd2); cudaFree(y); cudaFree(y2); cudaFree(h); cudaFree(h2);
    cudaFree(hq); cudaFree(hq2); cudaFree(hd); cudaFree(hd2);
}

static void check_v10(void)
{
    uint64_t seed = 9001;
    for (const tinfo &t : TYPES) {
        if (t.type != AARMD_TYPE_Q4_K && t.type != AARMD_TYPE_Q8_0 && t.type != AARMD_TYPE_F16 &&
            t.type != AARMD_TYPE_BF16)
            continue;
        int flt = t.type == AARMD_TYPE_F16 || t.type == AARMD_TYPE_BF16;
        const int cfgs[] = {0x21822, 0x1822, 0x21821, 0x1824, 0x11821};
        for (int cfg : cfgs) {
            if (cfg == 0x11821)   /* 1 block per SM, R 8: several groups per block in the big gated case */
                continue;
            /* the norm alone: n_in 256 (64 k_norm1 threads), 1280 (320), 3072 (512, a partial second float4), 4096 */
            check_v10_one(t, 256, 37, 1, 0, 0, 1, 0, cfg, 2, seed++);
            check_v10_one(t, 1280, 200, 1, 0, 1, 2, 0, cfg, 0, seed++);
            check_v10_one(t, 3072, 67, 1, 0, 0, 0, 0, cfg, 2, seed++);
            check_v10_one(t, 4096, 333, 1, 0, 0, 1, 0, cfg, 2, seed++);
            /* norm + gated activation: one group, 17 groups, SiLU and GELU */
            check_v10_one(t, 4096, 64, 1, 1, 0, 1, 0, cfg, 2, seed++);
            check_v10_one(t, 1280, 1088, 1, 1, 1, 2, 1, cfg, 0, seed++);
            if (flt)   /* floats: the activation alone (F32 input) */
                check_v10_one(t, 2560, 320, 0, 1, 0, 0, 0, cfg, 2, seed++);
        }
        /* many groups per block: 300 groups over 1 block per SM */
        check_v10_one(t, 256, 19200, 1, 1, 0, 1, 0, 0x11821, 2, seed++);
    }
    /* refusals: nothing enqueued */
    struct cuk_mv1_fuse f = {};
    float *p;
    CK(cudaMalloc(&p, 64 * 1024));
    f.x = p;
    struct cuk_mv1_fuse g = f;
    g.gated = 1;
    g.h = p;
    g.hq = p;
    g.hd = p;
    struct cuk_mv1_fuse g0 = g;   /* gated, quantized, no norm: hq would overwrite xq */
    g0.x = NULL;
    struct cuk_mv1_fuse fu = f;   /* unaligned x */
    fu.x = p + 1;
    if (cuk_mv1_fused(0, AARMD_TYPE_Q4_K, p, 4352, 8, p, p, &f, p, 0x21822) ||    /* n_in > 4096 with the norm */
        cuk_mv1_fused(0, AARMD_TYPE_Q4_1, p, 256, 8, p, p, &f, p, 0x21822) ||     /* type */
        cuk_mv1_fused(0, AARMD_TYPE_Q4_K, p, 320, 8, p, p, &f, p, 0x21822) ||     /* n_in % 256 */
        cuk_mv1_fused(0, AARMD_TYPE_Q4_K, p, 256, 8, p, p, &f, p, 0x1411) ||      /* not a fused configuration */
        cuk_mv1_fused(0, AARMD_TYPE_Q4_K, p, 256, 8, p, p, &f, p, 0x841) ||       /* the register kernel */
        cuk_mv1_fused(0, AARMD_TYPE_Q4_K, p, 256, 96, p, p, &g, p, 0x21822) ||    /* half 48: not whole groups */
        cuk_mv1_fused(0, AARMD_TYPE_Q4_K, p, 256, 65, p, p, &g, p, 0x21822) ||    /* odd rows */
        cuk_mv1_fused(0, AARMD_TYPE_Q4_K, p, 256, 64, p, p, &g0, p, 0x21822) ||   /* Q8 in and out */
        cuk_mv1_fused(0, AARMD_TYPE_Q4_K, p, 256, 64, p, p, &fu, p, 0x21822) ||   /* unaligned */
        cuk_mv1_fused(0, AARMD_TYPE_F16, p, 256, 64, p, p, &f, p, -1) ||          /* off */
        cuk_mv1_fused(0, AARMD_TYPE_Q4_K, p, 256, 64, p, p, NULL, p, 0x21822)) {  /* no fusion asked */
        printf("FAIL cuk_mv1_fused took a case it must refuse\n");
        n_fail++;
    } else {
        printf("OK   cuk_mv1_fused refusals\n");
    }
    cudaFree(p);
    cuk_set_tuning(2, 1);
}

/*
 * dec (v10): the decode attention (cuk_attention_dec, last-block merge and the combine launch)
 * with its keys batched and its merge loads batched must give bit for bit what one key / one load
 * at a time gives: one sequence of P tokens in a paged F16 cache (random K/V), one token at
 * position P - 1, head_dim 64 / 128 / 256, groups of 4, 32 key chunks, out and its Q8 rows.
 */
__global__ void k_fill_h(__half *p, int64_t n, uint64_t seed)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        p[i] = __float2half(urand(seed * 131 + (uint64_t)i));
}

/* One token at position P - 1 of one sequence of P keys in a paged F16 cache (random K/V, blocks
 * out of order), its query rows, and what cuk_attention_dec writes besides its outputs. */
struct attn_fix {
    int D, n_head, n_kv, P;
    __half *pool;
    float *q, *partial;
    unsigned *cnt;
    int32_t *btab, *tok_bt, *pos;
    struct cuk_kv kv;
    struct cuk_rope r;
};

static void attn_fix_init(attn_fix &f, int D, int n_head, int n_kv, int P)
{
    f.D = D, f.n_head = n_head, f.n_kv = n_kv, f.P = P;
    const int kv_dim = n_kv * D, nblk = (P + CUK_KV_BLOCK - 1) / CUK_KV_BLOCK;
    const size_t block_halfs = (size_t)2 * CUK_KV_BLOCK * kv_dim;
    CK(cudaMalloc(&f.pool, nblk * block_halfs * 2));
    CK(cudaMalloc(&f.q, (size_t)n_head * D * 4));
    CK(cudaMalloc(&f.partial, (size_t)n_head * CUK_ATTN_MAX_CHUNKS * (D + 2) * 4));
    CK(cudaMalloc(&f.cnt, n_head * sizeof(unsigned)));
    CK(cudaMemset(f.cnt, 0, n_head * sizeof(unsigned)));
    std::vector<int32_t> tab(nblk);
    for (int b = 0; b < nblk; b++)   /* blocks out of order */
        tab[b] = (b * 7 + 3) % nblk;
    int32_t zero = 0, p = P - 1;
    CK(cudaMalloc(&f.btab, nblk * 4));
    CK(cudaMalloc(&f.tok_bt, 4));
    CK(cudaMalloc(&f.pos, 4));
    CK(cudaMemcpy(f.btab, tab.data(), nblk * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(f.tok_bt, &zero, 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(f.pos, &p, 4, cudaMemcpyHostToDevice));
    int64_t nh = (int64_t)nblk * block_halfs;
    k_fill_h<<<(unsigned)((nh + 255) / 256), 256>>>(f.pool, nh, 4242 + D);
    k_fill_f32<<<(unsigned)((n_head * D + 255) / 256), 256>>>(f.q, (int64_t)n_head * D, 77 + D);
    CK(cudaGetLastError());
    f.kv = {f.pool, block_halfs, 0, f.btab, f.tok_bt};
    f.r = {};
    f.r.kind = AARMD_ROPE_NONE;
}

/* cuk_attention_dec over the fixture, nch key chunks (32 unless said); the chunks merged by the last
 * block, or by the combine launch when merge_launch. */
static void attn_fix_run(const attn_fix &f, cudaStream_t s, int merge_launch, float *out, int8_t *xq, float *xd,
                         int nch = CUK_ATTN_MAX_CHUNKS)
{
    cuk_attention_dec(s, f.q, NULL, NULL, 0, &f.r, &f.kv, f.pos, 1, f.n_head, f.n_kv, f.D, 0.125f, 0.0f, 0, nch,
                      f.partial, merge_launch ? NULL : f.cnt, out, xq, xd);
}

static void attn_fix_free(attn_fix &f)
{
    cudaFree(f.pool); cudaFree(f.q); cudaFree(f.partial); cudaFree(f.cnt);
    cudaFree(f.btab); cudaFree(f.tok_bt); cudaFree(f.pos);
}

static void check_v10_attn_one(int D, int n_head, int n_kv, int P, int merge_launch)
{
    attn_fix f;
    attn_fix_init(f, D, n_head, n_kv, P);
    float *out[4];
    int8_t *xq[4];
    float *xd[4];
    for (int v = 0; v < 4; v++) {
        CK(cudaMalloc(&out[v], (size_t)n_head * D * 4));
        CK(cudaMalloc(&xq[v], (size_t)n_head * D));
        CK(cudaMalloc(&xd[v], (size_t)n_head * D / 8));
        CK(cudaMemset(out[v], 0xFF, (size_t)n_head * D * 4));
        CK(cudaMemset(xq[v], 0x7F, (size_t)n_head * D));
        CK(cudaMemset(xd[v], 0xFF, (size_t)n_head * D / 8));
    }
    for (int v = 0; v < 4; v++) {   /* kb = v & 1, mb = v >> 1 */
        cuk_attn_dec_set(v & 1, v >> 1);
        attn_fix_run(f, 0, merge_launch, out[v], xq[v], xd[v]);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
    }
    cuk_attn_dec_set(-1, -1);
    int ok = 1;
    for (int v = 1; v < 4; v++)
        ok = ok && same_bits(out[v], out[0], (size_t)n_head * D * 4) && same_bits(xq[v], xq[0], (size_t)n_head * D) &&
             same_bits(xd[v], xd[0], (size_t)n_head * D / 8);
    std::vector<float> o = get(out[0], (size_t)n_head * D);
    for (float x : o)
        ok = ok && isfinite(x);   /* every element written (poisoned NaN before) */
    if (!ok)
        n_fail++;
    printf("%s v10 attn_dec kb/mb D %3d heads %d/%d P %4d %s: %s\n", ok ? "OK  " : "FAIL", D, n_head, n_kv, P,
           merge_launch ? "combine launch" : "last-block merge", ok ? "bit-identical" : "differs");
    if (!merge_launch) {   /* v14: one chunk of 16 warps writing its rows itself, against the 32 chunks */
        attn_fix_run(f, 0, 0, out[1], xq[1], xd[1], 1);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        std::vector<float> w = get(out[1], (size_t)n_head * D);
        double md = 0.0, mr = 0.0;
        for (size_t i = 0; i < o.size(); i++) {
            md = std::max(md, (double)fabsf(w[i] - o[i]));
            mr = std::max(mr, (double)fabsf(o[i]));
        }
        int ok1 = md <= 1e-5 * std::max(mr, 1e-30) && md == md;
        if (!ok1)
            n_fail++;
        printf("%s v14 attn_dec one chunk D %3d heads %d/%d P %4d: max|d| %.3g of max %.3g\n", ok1 ? "OK  " : "FAIL", D,
               n_head, n_kv, P, md, mr);
    }
    attn_fix_free(f);
    for (int v = 0; v < 4; v++) {
        cudaFree(out[v]); cudaFree(xq[v]); cudaFree(xd[v]);
    }
}

/*
 * --attn: the one-token decode attention timed as a decode runs it: 30 launches captured in one
 * graph (PDL on, the last block merging, wo's Q8 rows written), us per launch, median of 10
 * replays, for the bench models' shapes at 128 / 512 / 2048 keys, with its keys and merge loads
 * batched (the default) or one at a time.
 */
static int run_attn_bench(void)
{
    const struct { const char *name; int D, n_head, n_kv; } shapes[] = {
        {"smollm2-135m", 64, 9, 3}, {"llama-1b", 64, 32, 8}, {"llama-8b", 128, 32, 8}};
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cuk_set_tuning(2, 1);
    for (const auto &sh : shapes) {
        for (int P : {128, 512, 2048}) {
            attn_fix f;
            attn_fix_init(f, sh.D, sh.n_head, sh.n_kv, P);
            float *out, *xd;
            int8_t *xq;
            CK(cudaMalloc(&out, (size_t)sh.n_head * sh.D * 4));
            CK(cudaMalloc(&xq, (size_t)sh.n_head * sh.D));
            CK(cudaMalloc(&xd, (size_t)sh.n_head * sh.D / 8));
            printf("attn_dec %-13s D %3d heads %2d/%d keys %4d:", sh.name, sh.D, sh.n_head, sh.n_kv, P);
            for (int v : {3, 0}) {   /* keys and merge batched (default), one at a time */
                cuk_attn_dec_set(v & 1, v >> 1);
                const double us = time_graph(s, 30, [&](int) { attn_fix_run(f, s, 0, out, xq, xd); });
                printf("  %s %6.2f us", v ? "batched" : "one-by-one", us);
            }
            printf("\n");
            cuk_attn_dec_set(-1, -1);
            cudaFree(out); cudaFree(xq); cudaFree(xd);
            attn_fix_free(f);
        }
    }
    cudaStreamDestroy(s);
    return 0;
}

static void check_v10_attn(void)
{
    check_v10_attn_one(64, 8, 2, 517, 0);
    check_v10_attn_one(128, 8, 2, 600, 0);
    check_v10_attn_one(128, 8, 2, 20, 0);     /* fewer keys than chunks: empty chunks */
    check_v10_attn_one(256, 4, 1, 300, 0);
    check_v10_attn_one(64, 8, 2, 517, 1);
    check_v10_attn_one(128, 8, 2, 1000, 1);
}

/* ---- wg: the warpgroup-MMA GEMM for Q4_K steps (cuk_mmqwg_q4k, mmq_wg.cu) ------------------ */
/*
 * Reference: W dequantized to F16 (cuk_dequant_f16, the copy cuBLAS reads), x rounded to F16,
 * sums in F32 by a plain kernel; the GEMM decodes the weights itself (half2 scale and offset: a
 * rounding of its own) and must match within 3e-3, write every output (NaN poison), run twice
 * bit-identically, take Q4_K rows of whole super-blocks on sm_90 at 1..256 tokens and refuse the
 * rest.
 */
__global__ void k_ref16(const __half *__restrict__ w16, const __half *__restrict__ x16, int n_in, int n_out, int n_tok,
                        float *__restrict__ y)
{
    const int r = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (r >= n_out || t >= n_tok)
        return;
    float s = 0.0f;
    for (int k = 0; k < n_in; k++)
        s += __half2float(w16[(size_t)r * n_in + k]) * __half2float(x16[(size_t)t * n_in + k]);
    y[(size_t)t * n_out + r] = s;
}

static void check_wg_one(int64_t n_in, int64_t n_out, int nt, uint64_t seed)
{

    const tinfo &t = TYPES[8];   /* Q4_K */
    const size_t wbytes = cuk_row_bytes(t.type, n_in) * n_out;
    void *w, *w16, *x16;
    float *x, *y, *yr;
    CK(cudaMalloc(&w, wbytes));
    CK(cudaMalloc(&w16, (size_t)n_in * n_out * 2));
    CK(cudaMalloc(&x, (size_t)nt * n_in * 4));
    CK(cudaMalloc(&x16, (size_t)nt * n_in * 2));
    CK(cudaMalloc(&y, (size_t)nt * n_out * 4));
    CK(cudaMalloc(&yr, (size_t)nt * n_out * 4));
    fill_w(t, w, n_in, n_out, seed);
    k_fill_f32<<<(unsigned)((nt * n_in + 255) / 256), 256>>>(x, nt * n_in, seed + 5);
    cuk_dequant_f16(0, t.type, w, n_in, n_out, w16);
    cuk_f32_to_f16(0, x, x16, (int64_t)nt * n_in);
    k_ref16<<<dim3((unsigned)((n_out + 127) / 128), (unsigned)nt), 128>>>((const __half *)w16, (const __half *)x16,
                                                                          (int)n_in, (int)n_out, nt, yr);
    CK(cudaDeviceSynchronize());
    std::vector<float> ref = get(yr, (size_t)nt * n_out);
    const int want = cc_major() == 9;
    for (int pdl : {0, 1}) {
        cuk_set_tuning(pdl, 1);
        char what[40];
        snprintf(what, sizeof what, "wg pdl=%d vs f16", pdl);
        check_gemm_run(what, t, n_in, n_out, nt, y, ref, 3e-3, want,
                       [&] { return cuk_mmqwg_q4k(0, t.type, w, n_in, n_out, x16, nt, y); });
    }
    cuk_set_tuning(1, 1);
    cudaFree(w); cudaFree(w16); cudaFree(x); cudaFree(x16); cudaFree(y); cudaFree(yr);
}

/* one(n_in, n_out, tokens, seed) over the Q4_K GEMM shapes (partial row tiles; K of 1, 3, 16 and
 * 56 super-blocks) and the token counts toks, a seed each */
template <class F>
static void each_q4k_gemm(uint64_t seed, std::initializer_list<int> toks, F one)
{
    const std::pair<int64_t, int64_t> shapes[] = {{256, 37}, {768, 129}, {4096, 200}, {14336, 70}};
    for (auto &sh : shapes)
        for (int nt : toks)
            one(sh.first, sh.second, nt, seed++);
}

static void check_wg(void)
{
    each_q4k_gemm(900, {1, 17, 32, 33, 64, 65, 96, 100, 128, 147, 200, 256}, check_wg_one);
    /* refusals: other types, K not of whole super-blocks, no or too many tokens, misaligned rows */
    uint8_t *p = NULL;
    CK(cudaMalloc(&p, 4096));
    if (cuk_mmqwg_q4k(0, AARMD_TYPE_Q8_0, p, 256, 1, p, 16, (float *)p) ||
        cuk_mmqwg_q4k(0, AARMD_TYPE_Q4_K, p, 288, 1, p, 16, (float *)p) ||
        cuk_mmqwg_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p, 0, (float *)p) ||
        cuk_mmqwg_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p, CUK_WG_MAX_TOK + 1, (float *)p) ||
        cuk_mmqwg_q4k(0, AARMD_TYPE_Q4_K, p, 256, 0, p, 16, (float *)p) ||
        cuk_mmqwg_q4k(0, AARMD_TYPE_Q4_K, p + 8, 256, 1, p, 16, (float *)p) ||
        cuk_mmqwg_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p + 8, 16, (float *)p)) {
        printf("FAIL cuk_mmqwg_q4k took a case it must refuse\n");
        n_fail++;
    }
    cudaFree(p);
}

/* ---- k: the Q4_K GEMM for served steps (cuk_mmqk_q4k, mmq_k.cu) ---------------------------- */
/*
 * cuk_quantize_q8_256 against the same arithmetic on the host (bit for bit); then the GEMM on its
 * rows against the Q8 route of the same rows (cuk_matvec_q8, v4 tuning, 64 tokens a call: the
 * per-32 scales are equal within each 256): integer sub-block sums, F32 per super-block, the
 * minimum through F16 halves (~2^-22): within 1e-5; every output written (NaN poison), a second
 * run bit-identical, every knob (the six block shapes, 2-4 stages, 1-3 K slices at most; v4's
 * two rings with each shape, 2-4 activation slots, 2-4 weight slots and as many as fit) on
 * shapes with partial row tiles, 1..512 tokens; then the cases it must refuse.
 */
static void check_q8_256(const float *x, int64_t n, const void *xq, const float *xd)
{
    std::vector<float> hx = get(x, (size_t)n), hd = get(xd, (size_t)n / 32);
    std::vector<int8_t> hq((size_t)n);
    CK(cudaMemcpy(hq.data(), xq, (size_t)n, cudaMemcpyDeviceToHost));
    int64_t bad = 0;
    for (int64_t u = 0; u < n / 256; u++) {
        float a = 0.0f;
        for (int i = 0; i < 256; i++)
            a = fmaxf(a, fabsf(hx[u * 256 + i]));
        const float d = a / 127.0f;
        for (int i = 0; i < 8; i++)
            bad += memcmp(&hd[u * 8 + i], &d, 4) != 0;
        for (int i = 0; i < 256; i++)
            bad += hq[u * 256 + i] != (int8_t)(d > 0.0f ? (int)rintf(hx[u * 256 + i] / d) : 0);
    }
    if (bad) {
        n_fail++;
        printf("FAIL cuk_quantize_q8_256: %lld values differ from the host's\n", (long long)bad);
    }
}

static void check_k_one(int64_t n_in, int64_t n_out, int nt, uint64_t seed)
{
    const tinfo &t = TYPES[8];   /* Q4_K */
    const size_t wbytes = cuk_row_bytes(t.type, n_in) * n_out, ny = (size_t)nt * n_out;
    void *w, *xq;
    float *x, *xd, *y, *yr;
    CK(cudaMalloc(&w, wbytes));
    CK(cudaMalloc(&x, (size_t)nt * n_in * 4));
    CK(cudaMalloc(&xq, (size_t)nt * n_in));
    CK(cudaMalloc(&xd, (size_t)nt * n_in / 32 * 4));
    CK(cudaMalloc(&y, ny * 4));
    CK(cudaMalloc(&yr, ny * 4));
    fill_w(t, w, n_in, n_out, seed);
    k_fill_f32<<<(unsigned)((nt * n_in + 255) / 256), 256>>>(x, nt * n_in, seed + 5);
    cuk_quantize_q8_256(0, x, (int64_t)nt * n_in, xq, xd);
    CK(cudaDeviceSynchronize());
    if (nt <= 3)
        check_q8_256(x, (int64_t)nt * n_in, xq, xd);
    cuk_set_tuning(0, 0);
    for (int t0 = 0; t0 < nt; t0 += CUK_Q8_MAX_TOK)
        cuk_matvec_q8(0, t.type, w, n_in, n_out, (const int8_t *)xq + (size_t)t0 * n_in, xd + (size_t)t0 * n_in / 32,
                      std::min(CUK_Q8_MAX_TOK, nt - t0), yr + (size_t)t0 * n_out);
    CK(cudaDeviceSynchronize());
    std::vector<float> ref = get(yr, ny);
    const int want = cc_major() == 9;
    const int v4 = 1 << 7;   /* k_mmqk2: the weights in a ring of their own */
    for (int cfg : {0, 1 << 8, 2 << 8, 3 << 8, 4 << 8, 5 << 8, 6 << 8, 1, 3, 1 << 2, 2 << 2, 3 << 2, v4, v4 | 1 << 8,
                    v4 | 2 << 8, v4 | 3 << 8, v4 | 4 << 8, v4 | 5 << 8, v4 | 6 << 8, v4 | 1, v4 | 3, v4 | 2 << 12,
                    v4 | 4 << 12, v4 | 1 | 3 << 12, v4 | 1 << 2, v4 | 3 << 2}) {
        for (int pdl : {0, 1}) {
            if (pdl && cfg)
                continue;
            cuk_set_tuning(pdl, 1);
            char what[40];
            snprintf(what, sizeof what, "k cfg %d pdl=%d vs q8", cfg, pdl);
            check_gemm_run(what, t, n_in, n_out, nt, y, ref, 1e-5, want,
                           [&] { return cuk_mmqk_q4k(0, t.type, w, n_in, n_out, xq, xd, nt, y, cfg); });
        }
    }
    cuk_set_tuning(1, 1);
    cudaFree(w); cudaFree(x); cudaFree(xq); cudaFree(xd); cudaFree(y); cudaFree(yr);
}

static void check_k(void)
{
    each_q4k_gemm(1900, {1, 3, 17, 64, 65, 80, 100, 147, 200, 256, 300, 512}, check_k_one);
    /* refusals: other types, K not of whole super-blocks, no or too many tokens, misaligned rows
     * or activations, unknown knobs */
    uint8_t *p = NULL;
    CK(cudaMalloc(&p, 4096));
    float *f = (float *)p;
    if (cuk_mmqk_q4k(0, AARMD_TYPE_Q8_0, p, 256, 1, p, f, 16, f, 0) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p, 288, 1, p, f, 16, f, 0) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p, f, 0, f, 0) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p, f, CUK_MMQK_MAX_TOK + 1, f, 0) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p, 256, 0, p, f, 16, f, 0) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p + 8, 256, 1, p, f, 16, f, 0) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p + 8, f, 16, f, 0) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p, f, 16, f, 7 << 8) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p, f, 16, f, 15 << 8) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p, f, 16, f, 1 << 12) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p, f, 16, f, 1 << 6) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p, f, 16, f, 1 << 15) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p, f, 16, f, 3 << 12) ||
        cuk_mmqk_q4k(0, AARMD_TYPE_Q4_K, p, 256, 1, p, f, 16, f, 1 << 7 | 1 << 12)) {
        printf("FAIL cuk_mmqk_q4k took a case it must refuse\n");
        n_fail++;
    }
    cudaFree(p);
}

/* cublasGemmEx from libcublas, looked up at run time (as plugins/cuda/cuda_blas.c does) */
#include <dlfcn.h>
typedef int (*blas_create_fn)(void **);
typedef int (*blas_gemm_fn)(void *, int, int, int, int, int, const void *, const void *, int, int, const void *, int,
                            int, const void *, void *, int, int, int, int);
static void *blas_h = NULL;
static blas_gemm_fn blas_gemm = NULL;

static int blas_open(void)
{
    if (blas_gemm)
        return 1;
    void *lib = dlopen("libcublas.so.13", RTLD_NOW);
    if (!lib)
        lib = dlopen("libcublas.so.12", RTLD_NOW);
    if (!lib)
        return 0;
    blas_create_fn create = (blas_create_fn)dlsym(lib, "cublasCreate_v2");
    blas_gemm = (blas_gemm_fn)dlsym(lib, "cublasGemmEx");
    if (!create || !blas_gemm || create(&blas_h) != 0) {
        blas_gemm = NULL;
        return 0;
    }
    return 1;
}

/* y [n_tok][n_out] F32 = w16 [n_out][n_in] . a16 [n_tok][n_in], as the plugin calls it (CUBLAS_OP_T = 1,
 * OP_N = 0, CUDA_R_16F = 2, CUDA_R_32F = 0, CUBLAS_COMPUTE_32F = 68, CUBLAS_GEMM_DEFAULT = -1) */
static void blas_run(cudaStream_t s, const void *w16, const void *a16, float *y, int n_in, int n_out, int n_tok)
{
    typedef int (*set_stream_fn)(void *, cudaStream_t);
    static set_stream_fn set_stream = (set_stream_fn)dlsym(RTLD_DEFAULT, "cublasSetStream_v2");
    if (!set_stream) {
        void *lib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_NOLOAD);
        if (!lib)
            lib = dlopen("libcublas.so.12", RTLD_NOW | RTLD_NOLOAD);
        set_stream = (set_stream_fn)dlsym(lib, "cublasSetStream_v2");
    }
    set_stream(blas_h, s);
    const float one = 1.0f, zero = 0.0f;
    blas_gemm(blas_h, 1, 0, n_out, n_tok, n_in, &one, w16, 2, n_in, a16, 2, n_in, &zero, y, 0, n_out, 68, -1);
}

/* --wg: the check above alone, then all Q4_K matmuls of an 8B step at 32..256 tokens: the wg GEMM
 * against cuBLAS on the F16 copy (what the forward runs past 64 tokens) and, up to 64, the default
 * route (v9 / int8). MM_WG_TOKS overrides the token counts. */
static int run_wg(void)
{
    if (!getenv("MM_WG_NOCHECK")) {   /* set: the bench alone (profiling) */
        check_wg();
        check_k();
    }
    printf("wg check: %d failures\n", n_fail);
    if (getenv("MM_PDL"))   /* programmatic dependent launch for the timed launches (0, 1, 2) */
        cuk_set_tuning(atoi(getenv("MM_PDL")), 1);
    const mat m8b[] = {{4096, 6144, "qkv"}, {4096, 4096, "wo"}, {4096, 28672, "gate_up"}, {14336, 4096, "down"},
                       {4096, 128256, "output"}};
    const tinfo &t = TYPES[8];
    const std::vector<int> toks = env_ints("MM_WG_TOKS", {32, 64, 96, 128, 147, 160, 192, 256});
    const int have_blas = blas_open();
    static cudaStream_t s = NULL;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    std::vector<double> tot(toks.size() * 5, 0.0);
    const std::vector<int> kcfgs = env_ints("MM_K_CFG", {0});   /* a k[cfg] column each (v4: 128 | ...) */
    std::vector<double> totk(toks.size() * kcfgs.size(), 0.0);
    for (int mi = 0; mi < 5; mi++) {
        const mat &m = m8b[mi];
        const size_t bytes = cuk_row_bytes(t.type, m.n_in) * m.n_out;
        const int nb = (int)std::max<size_t>(2, std::min<size_t>(4, (size_t)400e6 / bytes + 1));
        std::vector<void *> ws(nb), w16s(nb);
        for (int i = 0; i < nb; i++) {
            CK(cudaMalloc(&ws[i], bytes));
            fill_w(t, ws[i], m.n_in, m.n_out, 300 + i);
            CK(cudaMalloc(&w16s[i], (size_t)m.n_in * m.n_out * 2));
            cuk_dequant_f16(0, t.type, ws[i], m.n_in, m.n_out, w16s[i]);
        }
        const int maxt = 256;
        float *x, *xd, *xdk, *y;
        void *xq, *xqk, *x16;
        CK(cudaMalloc(&xqk, (size_t)maxt * m.n_in));
        CK(cudaMalloc(&xdk, (size_t)maxt * m.n_in / 32 * 4));
        CK(cudaMalloc(&x, (size_t)maxt * m.n_in * 4));
        CK(cudaMalloc(&x16, (size_t)maxt * m.n_in * 2));
        CK(cudaMalloc(&xq, (size_t)maxt * m.n_in));
        CK(cudaMalloc(&xd, (size_t)maxt * m.n_in / 32 * 4));
        CK(cudaMalloc(&y, (size_t)maxt * m.n_out * 4));
        k_fill_f32<<<(unsigned)((maxt * m.n_in + 255) / 256), 256>>>(x, maxt * m.n_in, 5);
        cuk_f32_to_f16(0, x, x16, (int64_t)maxt * m.n_in);
        cuk_quantize_q8(0, x, (int64_t)maxt * m.n_in, xq, xd);
        cuk_quantize_q8_256(0, x, (int64_t)maxt * m.n_in, xqk, xdk);
        CK(cudaDeviceSynchronize());
        for (size_t ti = 0; ti < toks.size(); ti++) {
            const int nt = toks[ti];
            printf("%-8s tok %3d:", m.name, nt);
            const double wg = getenv("MM_WG_SKIP") ? 0.0 : time_graph(s, 24, [&](int i) {   /* set: k and cuBLAS only */
                cuk_mmqwg_q4k(s, t.type, ws[i % nb], m.n_in, m.n_out, x16, nt, y);
            });
            printf("  wg %8.2f (%5.0f GB/s)", wg, bytes / wg / 1e3);
            tot[ti * 5] += wg * (mi == 4 ? 1 : 32);
            for (size_t ki = 0; ki < kcfgs.size(); ki++) {
                const double kk = time_graph(s, 24, [&](int i) {
                    cuk_mmqk_q4k(s, t.type, ws[i % nb], m.n_in, m.n_out, xqk, xdk, nt, y, kcfgs[ki]);
                });
                printf("  k[%d] %8.2f", kcfgs[ki], kk);
                totk[ti * kcfgs.size() + ki] += kk * (mi == 4 ? 1 : 32);
            }
            const double kq = time_graph(s, 24, [&](int) {
                cuk_quantize_q8_256(s, x, (int64_t)nt * m.n_in, xqk, xdk);
            });
            printf(" (+quant %5.2f)", kq);
            tot[ti * 5 + 4] += kq * (mi == 4 ? 1 : 32);
            if (have_blas) {
                const double bl = time_graph(s, 24, [&](int i) {
                    blas_run(s, w16s[i % nb], x16, y, (int)m.n_in, (int)m.n_out, nt);
                });
                printf("  cublas %8.2f", bl);
                tot[ti * 5 + 1] += bl * (mi == 4 ? 1 : 32);
            }
            if (nt <= 64) {
                const double q = time_graph(s, 24, [&](int i) {
                    cuk_matvec_q8(s, t.type, ws[i % nb], m.n_in, m.n_out, xq, xd, nt, y);
                });
                printf("  q8route %8.2f", q);
                tot[ti * 5 + 2] += q * (mi == 4 ? 1 : 32);
            }
            printf("\n");
        }
        for (int i = 0; i < nb; i++) {
            cudaFree(ws[i]);
            cudaFree(w16s[i]);
        }
        cudaFree(x); cudaFree(x16); cudaFree(xq); cudaFree(xd); cudaFree(xqk); cudaFree(xdk); cudaFree(y);
    }
    printf("-- Q4_K all matmuls of one 8B step (32 layers + output), ms:\n");
    for (size_t ti = 0; ti < toks.size(); ti++) {
        printf("   tok %3d: wg %.3f  cublas-f16 %.3f  q8route %.3f ", toks[ti], tot[ti * 5] / 1e3, tot[ti * 5 + 1] / 1e3,
               tot[ti * 5 + 2] / 1e3);
        for (size_t ki = 0; ki < kcfgs.size(); ki++)
            printf(" k[%d] %.3f", kcfgs[ki], totk[ti * kcfgs.size() + ki] / 1e3);
        printf(" (+quant %.3f)\n", tot[ti * 5 + 4] / 1e3);
    }
    return n_fail ? 1 : 0;
}

/*
 * v15: the decode attention's own rotation (rope = 1: q, k, v of the token unrotated, the k and v
 * rows stored by the launch, q and k rotated in registers) against k_rope_store then the launch
 * with rope = 0: outputs and the whole cache bit for bit, for both rotary kinds, partial rotation
 * (n_rot < D), 1 and 32 chunks, the (cos, sin) table (cuk_rope_table) covering the position and
 * not (n_cs 0: computed in the kernel).
 */
static void check_v15_rope_one(int D, int n_rot, int kind, int n_cs, int nch)
{
    const int n_head = 8, n_kv = 2, P = 150, kv_dim = n_kv * D;
    attn_fix f;
    attn_fix_init(f, D, n_head, n_kv, P);
    f.r.kind = kind;
    f.r.n_rot = n_rot;
    f.r.freq_base = 10000.0f;
    f.r.freq_scale = 1.0f;
    f.r.attn_factor = 1.0f;
    float *tab = NULL, *k0, *v0, *q1, *k1, *out[2];
    if (n_cs) {
        CK(cudaMalloc(&tab, (size_t)n_cs * n_rot * 4));
        cuk_rope_table(0, &f.r, n_cs, tab);
        f.r.cs = tab;
        f.r.n_cs = n_cs;
    }
    CK(cudaMalloc(&k0, kv_dim * 4));
    CK(cudaMalloc(&v0, kv_dim * 4));
    CK(cudaMalloc(&q1, (size_t)n_head * D * 4));
    CK(cudaMalloc(&k1, kv_dim * 4));
    k_fill_f32<<<(kv_dim + 255) / 256, 256>>>(k0, kv_dim, 5 + D);
    k_fill_f32<<<(kv_dim + 255) / 256, 256>>>(v0, kv_dim, 6 + D);
    for (int i = 0; i < 2; i++) {
        CK(cudaMalloc(&out[i], (size_t)n_head * D * 4));
        CK(cudaMemset(out[i], 0xFF, (size_t)n_head * D * 4));
    }
    const size_t pool_bytes = (size_t)((P + CUK_KV_BLOCK - 1) / CUK_KV_BLOCK) * f.kv.block_halfs * 2;
    /* in the attention */
    cuk_attention_dec(0, f.q, k0, v0, 1, &f.r, &f.kv, f.pos, 1, n_head, n_kv, D, 0.125f, 0.0f, 0, nch, f.partial, f.cnt,
                      out[0], NULL, NULL);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    std::vector<uint8_t> pool_a(pool_bytes), pool_b(pool_bytes);
    CK(cudaMemcpy(pool_a.data(), f.pool, pool_bytes, cudaMemcpyDeviceToHost));
    /* the cache as before, k_rope_store, then the attention over stored keys */
    k_fill_h<<<(unsigned)((pool_bytes / 2 + 255) / 256), 256>>>(f.pool, (int64_t)(pool_bytes / 2), 4242 + D);
    CK(cudaMemcpy(q1, f.q, (size_t)n_head * D * 4, cudaMemcpyDeviceToDevice));
    CK(cudaMemcpy(k1, k0, kv_dim * 4, cudaMemcpyDeviceToDevice));
    cuk_rope_store(0, q1, k1, v0, 1, n_head, n_kv, D, &f.r, f.pos, &f.kv);
    cuk_attention_dec(0, q1, NULL, NULL, 0, &f.r, &f.kv, f.pos, 1, n_head, n_kv, D, 0.125f, 0.0f, 0, nch, f.partial,
                      f.cnt, out[1], NULL, NULL);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(pool_b.data(), f.pool, pool_bytes, cudaMemcpyDeviceToHost));
    std::vector<float> a = get(out[0], (size_t)n_head * D), b = get(out[1], (size_t)n_head * D);
    int fin = 1;
    for (float x : a)
        fin = fin && isfinite(x);
    int ok = fin && memcmp(a.data(), b.data(), a.size() * 4) == 0 && pool_a == pool_b;
    if (!ok)
        n_fail++;
    printf("%s v15 attn_dec rope in the launch D %3d n_rot %3d %s table %5d chunks %2d: %s\n", ok ? "OK  " : "FAIL",
           D, n_rot, kind == AARMD_ROPE_NEOX ? "neox" : "norm", n_cs, nch,
           ok ? "outputs and cache bit-identical to k_rope_store + the launch" : "differs");
    attn_fix_free(f);
    cudaFree(tab); cudaFree(k0); cudaFree(v0); cudaFree(q1); cudaFree(k1); cudaFree(out[0]); cudaFree(out[1]);
}

static void check_v15_rope(void)
{
    for (int kind : {AARMD_ROPE_NORMAL, AARMD_ROPE_NEOX})
        for (int nch : {1, 32}) {
            check_v15_rope_one(64, 64, kind, 4096, nch);
            check_v15_rope_one(64, 64, kind, 0, nch);
            check_v15_rope_one(128, 128, kind, 149, nch);   /* the token's position (149) past the table */
            check_v15_rope_one(128, 64, kind, 4096, nch);  /* partial rotation */
            check_v15_rope_one(256, 256, kind, 4096, nch);
            check_v15_rope_one(64, 40, kind, 4096, nch);   /* half = 20: pairs across lanes */
        }
}
