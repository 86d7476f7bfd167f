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
                int want = whole && (t.type == AARMD_TYPE_Q4_K || (tma && tma_types));
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

/* the v9 GEMM called directly (cuk_mmq9_q8) in several configurations: it must take
 * Q4_0/Q4_1/Q8_0/Q4_K rows of whole 256-element units and 16-byte multiples (sm_90), refuse the
 * rest, match the int8 reference (F16 rounding: 3e-3), write every output (NaN poison) and give
 * bit-identical results when run again (no order-dependent sums) */
static void check_v9(const tinfo &t, void *w, int64_t n_in, int64_t n_out, int nt, void *xq, float *xd, float *y,
                     const std::vector<float> &ref8)
{
    cudaStream_t s = 0;
    int dev = 0, cc = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, dev));
    const size_t rb = cuk_row_bytes(t.type, n_in), ny = (size_t)nt * n_out;
    const int want = (t.type == AARMD_TYPE_Q4_0 || t.type == AARMD_TYPE_Q4_1 || t.type == AARMD_TYPE_Q8_0 ||
                      t.type == AARMD_TYPE_Q4_K) && rb % 16 == 0 && n_in % 256 == 0 && cc >= 9;
    /* cfg: bits 0-1 stages - 2, 2-5 cluster cap, 6-7 K-split target, 8 128-row blocks, 9 row copies */
    for (int cfg : {0, 1, 2, 1 << 2, 2 << 2 | 3 << 6, 1 << 8, 1 << 8 | 1, 1 << 8 | 2, 3 << 6, 1 << 6, 1 << 9,
                    1 << 9 | 1 << 8}) {
        for (int pdl : {0, 1}) {
            cuk_set_tuning(pdl, 1);
            CK(cudaMemset(y, 0xFF, ny * 4));
            int took = cuk_mmq9_q8(s, t.type, w, n_in, n_out, xq, xd, nt, y, cfg);
            CK(cudaDeviceSynchronize());
            CK(cudaGetLastError());
            char what[40];
            snprintf(what, sizeof what, "v9 cfg %d pdl=%d vs q8 v4", cfg, pdl);
            /* 4 stages of 128 Q8_0 rows and 64 tokens (278 KB) exceed the shared memory: refused */
            const int fits = !((cfg & 3) == 2 && (cfg & (1 << 8)) && t.type == AARMD_TYPE_Q8_0 && nt > 32);
            if (took != (want && fits)) {
                n_fail++;
                printf("FAIL %s %s n_in %lld tok %d: took %d, expected %d\n", what, t.name, (long long)n_in, nt, took,
                       want && fits);
                continue;
            }
            if (!took)
                continue;
            std::vector<float> a = get(y, ny);
            report(what, t, n_in, n_out, nt, relerr(a, ref8), 3e-3);
            CK(cudaMemset(y, 0xFF, ny * 4));
            cuk_mmq9_q8(s, t.type, w, n_in, n_out, xq, xd, nt, y, cfg);
            CK(cudaDeviceSynchronize());
            std::vector<float> b = get(y, ny);
            if (memcmp(a.data(), b.data(), ny * 4)) {
                n_fail++;
                printf("FAIL %s %s n_in %lld n_out %lld tok %d: a second run differs\n", what, t.name,
                       (long long)n_in, (long long)n_out, nt);
            }
        }
    }
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
        for (int vv : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 99}) {   /* 99: v5 */
            if (vv != 1 && vv != 99 && nt <= 8)
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

static int run_check(void)
{
    const int toks[] = {1, 3, 8, 9, 17, 33, 64};
    uint64_t seed = 1;
    for (const tinfo &t : TYPES) {
        /* awkward shapes: n_out not a multiple of 8/16/32/64, K-quants 1..5 super-blocks, odd Q8_0 block counts */
        std::vector<std::pair<int64_t, int64_t>> shapes;
        if (t.bel == 256)   /* 4608: a partial 4-super-block step, 14336: the 8B down row (split warps) */
            shapes = {{256, 37}, {1280, 77}, {768, 129}, {4608, 35}, {14336, 21}};
        else
            shapes = {{96, 45}, {576, 130}, {1056, 19}, {4096, 67}, {2560, 21}};
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
        cuk_mmq9_q8(0, AARMD_TYPE_Q4_K, NULL, 256, 1, NULL, NULL, 65, NULL, 0) ||
        cuk_mmq9_q8(0, AARMD_TYPE_Q4_K, NULL, 256, 1, NULL, NULL, 0, NULL, 0) ||
        cuk_mmq9_q8(0, AARMD_TYPE_Q6_K, NULL, 256, 1, NULL, NULL, 16, NULL, 0) ||
        cuk_mmq9_q8(0, AARMD_TYPE_F16, NULL, 256, 1, NULL, NULL, 16, NULL, 0) ||
        cuk_mmq9_q8(0, AARMD_TYPE_Q4_K, NULL, 256, 1, NULL, NULL, 16, NULL, 1 << 10) ||
        cuk_mmq9_q8(0, AARMD_TYPE_Q4_K, NULL, 256, 1, NULL, NULL, 16, NULL, -1) ||
        cuk_mmq9_q8(0, AARMD_TYPE_Q4_K, NULL, 256, 0, NULL, NULL, 16, NULL, 0) ||
        cuk_mmq9_q8(0, AARMD_TYPE_Q8_0, NULL, 160, 1, NULL, NULL, 16, NULL, 0) ||
        cuk_mmq9_q8(0, AARMD_TYPE_Q4_0, NULL, 288, 1, NULL, NULL, 16, NULL, 0)) {
        printf("FAIL a launcher took a case it must refuse\n");
        n_fail++;
    }
    printf("check: %d failures\n", n_fail);
    return n_fail ? 1 : 0;
}

/* ---- bench: decode shapes --------------------------------------------------------- */

struct mat { int64_t n_in, n_out; const char *name; };

/* times `reps` rounds of calls over `nb` rotating weight copies through a captured graph; us per call */
static double time_calls(uint32_t type, std::vector<void *> &ws, int64_t n_in, int64_t n_out, const float *x,
                         const void *xq, const float *xd, int nt, float *y, int q8)
{
    static cudaStream_t s = NULL;   /* one stream for every call: the v9 GEMM keeps a scratch per stream */
    if (!s)
        CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const int per = 24;
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < per; i++) {
        void *w = ws[i % ws.size()];
        if (q8)
            cuk_matvec_q8(s, type, w, n_in, n_out, xq, xd, nt, y);
        else
            cuk_matmul(s, type, w, n_in, n_out, x, nt, y);
    }
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
        std::vector<int> toks = q8 ? std::vector<int>{1, 2, 4, 8, 16, 32, 64} : std::vector<int>{1, 4, 8};
        if (getenv("MM_TOKS"))   /* e.g. "1 16 32 64" */
            toks.clear();
        for (const char *p = getenv("MM_TOKS"); p && *p;) {
            char *e;
            long v = strtol(p, &e, 10);
            if (e == p)
                break;
            toks.push_back((int)v);
            p = e;
        }
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
                            {2, 1, 0, 5, 2, 0, "t811p2", 0x1811}};
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
    return run_check();
}
