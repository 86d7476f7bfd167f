/*
 * matmul.cu — weight kernels of the CUDA backend: per-type decoding of 32
 * elements of a GGUF row (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
 * Q5_K, Q6_K), the dequantize-matvec/matmul, embedding lookup and
 * dequantization to F16 for the cuBLAS prefill path. No attention or norms.
 */
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include "../../plugins/cuda/launch.h"
#include "pdl.cuh"
#include "dequant.cuh"
#include "../../core/abi/aarmd_backend.h"

#define WARP 32
#define MM_WARPS 8          /* rows (warps) per block of the matmul */
#define MM_NT 8             /* tokens per block of the matmul (prefill) */
#define Q8V_MAX_TOK 8       /* tokens per launch of the v4/v5 Q8 matvecs */

int cuk_pdl_on = 0;         /* pdl.cuh */
extern "C" void cuk_ops_set_pdl_early(int early);   /* ops.cu */
static int cuk_mv_f_on = 1; /* F32/F16/BF16 decode through k_matvec_f / k_mvs (mvf bit 1) */
static int cuk_v6_on = 1;   /* decode through the v6 kernels of matvec.cu (mvf bit 2 clear) */
static int cuk_q80_on = 0;  /* v5: Q8_0 decode through k_matvec_q8_0 (mvf bits 2 and 4) */
static int cuk_q8_unroll = 0;   /* v5: Q8 matvec with Q8_UNROLL items in flight (mvf bits 2 and 4) */

extern "C" void cuk_set_tuning(int pdl, int matvec_f)
{
    static int dev_pdl = -1;
    cuk_pdl_on = pdl != 0;
    if (pdl != dev_pdl) {   /* pdl 2: trigger the next launch at kernel entry (pdl.cuh) */
        pdl_set_early(pdl == 2);
        cuk_ops_set_pdl_early(pdl == 2);
        dev_pdl = pdl;
    }
    cuk_mv_f_on = (matvec_f & 1) != 0;
    cuk_v6_on = (matvec_f & 3) == 1;
    cuk_q80_on = (matvec_f & 6) == 6;
    cuk_q8_unroll = (matvec_f & 6) == 6;
}

/* ---- per-type facts ------------------------------------------------------- */

/* bytes of a block and elements per block; 0 when unsupported */
static void type_block(uint32_t type, size_t *bytes, int *elems)
{
    switch (type) {
    case AARMD_TYPE_F32: *bytes = 4; *elems = 1; return;
    case AARMD_TYPE_F16: case AARMD_TYPE_BF16: *bytes = 2; *elems = 1; return;
    case AARMD_TYPE_Q4_0: *bytes = 18; *elems = 32; return;
    case AARMD_TYPE_Q4_1: *bytes = 20; *elems = 32; return;
    case AARMD_TYPE_Q5_0: *bytes = 22; *elems = 32; return;
    case AARMD_TYPE_Q5_1: *bytes = 24; *elems = 32; return;
    case AARMD_TYPE_Q8_0: *bytes = 34; *elems = 32; return;
    case AARMD_TYPE_Q4_K: *bytes = 144; *elems = 256; return;
    case AARMD_TYPE_Q5_K: *bytes = 176; *elems = 256; return;
    case AARMD_TYPE_Q6_K: *bytes = 210; *elems = 256; return;
    default: *bytes = 0; *elems = 0; return;
    }
}

extern "C" size_t cuk_row_bytes(uint32_t type, int64_t n_in)
{
    size_t b;
    int e;
    type_block(type, &b, &e);
    if (!e || n_in % e)
        return 0;
    return (size_t)(n_in / e) * b;
}

extern "C" int cuk_type_ok(uint32_t type, int64_t n_in)
{
    return n_in > 0 && n_in % CUK_ITEM == 0 && cuk_row_bytes(type, n_in) != 0;
}

/* ---- matmul: one warp per weight row, MM_NT tokens per block ---------------- */

template <uint32_t T, int NT>
__global__ void __launch_bounds__(MM_WARPS * WARP)
k_matmul(const uint8_t *__restrict__ W, size_t row_bytes, int n_items, int n_out, const float *__restrict__ x,
         int n_in, int n_tok, float *__restrict__ y)
{
    pdl_enter();
    int r = blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    int t0 = blockIdx.y * NT;
    if (r >= n_out)
        return;
    int nt = min(NT, n_tok - t0);
    const uint8_t *row = W + (size_t)r * row_bytes;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = 0.0f;
#pragma unroll 2
    for (int it = lane; it < n_items; it += WARP) {
        float w[32];
        dec<T>::run(row, it, w);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < nt) {
                const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)(t0 + t) * n_in) + it * 8;
                float s = 0.0f;
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    float4 v = __ldg(xp + i);
                    s += w[4 * i] * v.x + w[4 * i + 1] * v.y + w[4 * i + 2] * v.z + w[4 * i + 3] * v.w;
                }
                acc[t] += s;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float v = acc[t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0 && t < nt)
            y[(size_t)(t0 + t) * n_out + r] = v;
    }
}

/* ---- float-weight matvec (F32, F16, BF16) for decode-sized batches ---------- */
/*
 * One warp per row; lane l reads 16-byte chunks l, l+32, ... of the row, so
 * each load instruction of the warp is 512 contiguous bytes, and the matching
 * activations (8 or 4 floats per chunk) are contiguous too. Four chunks per
 * lane are loaded before the first is used (bytes in flight).
 */
/* chunk16<T> (dequant.cuh) turns one 16-byte chunk into N floats. */

#define MVF_UNROLL 4

template <uint32_t T, int NT>
__global__ void __launch_bounds__(MM_WARPS * WARP)
k_matvec_f(const uint8_t *__restrict__ W, size_t row_bytes, int n_chunks, int n_out, const float *__restrict__ x,
           int n_in, int n_tok, float *__restrict__ y)
{
    pdl_enter();
    enum { N = chunk16<T>::N };
    int r = blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= n_out)
        return;
    const uint4 *row = reinterpret_cast<const uint4 *>(W + (size_t)r * row_bytes);
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = 0.0f;
    int c = lane;
    for (; c + (MVF_UNROLL - 1) * WARP < n_chunks; c += MVF_UNROLL * WARP) {
        uint4 v[MVF_UNROLL];
#pragma unroll
        for (int u = 0; u < MVF_UNROLL; u++)
            v[u] = __ldcs(row + c + u * WARP);   /* streamed once per token: evict first */
#pragma unroll
        for (int u = 0; u < MVF_UNROLL; u++) {
            float w[N];
            chunk16<T>::run(v[u], w);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t < n_tok) {
                    const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)t * n_in) + (size_t)(c + u * WARP) * (N / 4);
                    float s = 0.0f;
#pragma unroll
                    for (int i = 0; i < N / 4; i++) {
                        float4 a = __ldg(xp + i);
                        s += w[4 * i] * a.x + w[4 * i + 1] * a.y + w[4 * i + 2] * a.z + w[4 * i + 3] * a.w;
                    }
                    acc[t] += s;
                }
            }
        }
    }
    for (; c < n_chunks; c += WARP) {
        float w[N];
        chunk16<T>::run(__ldcs(row + c), w);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < n_tok) {
                const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)t * n_in) + (size_t)c * (N / 4);
                float s = 0.0f;
#pragma unroll
                for (int i = 0; i < N / 4; i++) {
                    float4 a = __ldg(xp + i);
                    s += w[4 * i] * a.x + w[4 * i + 1] * a.y + w[4 * i + 2] * a.z + w[4 * i + 3] * a.w;
                }
                acc[t] += s;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float v = acc[t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0 && t < n_tok)
            y[(size_t)t * n_out + r] = v;
    }
}

template <uint32_t T>
static void matvec_f_t(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const float *x, int n_tok, float *y)
{
    size_t rb = cuk_row_bytes(T, n_in);
    int chunks = (int)(rb / 16);
    dim3 grid((unsigned)((n_out + MM_WARPS - 1) / MM_WARPS)), block(MM_WARPS * WARP);
    if (n_tok == 1)
        pdl_launch(k_matvec_f<T, 1>, grid, block, s, (const uint8_t *)w, rb, chunks, (int)n_out, x, (int)n_in, n_tok, y);
    else if (n_tok <= 4)
        pdl_launch(k_matvec_f<T, 4>, grid, block, s, (const uint8_t *)w, rb, chunks, (int)n_out, x, (int)n_in, n_tok, y);
    else
        pdl_launch(k_matvec_f<T, MM_NT>, grid, block, s, (const uint8_t *)w, rb, chunks, (int)n_out, x, (int)n_in,
                   n_tok, y);
}

template <uint32_t T>
static void matmul_t(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const float *x, int n_tok, float *y)
{
    size_t rb = cuk_row_bytes(T, n_in);
    int items = (int)(n_in / CUK_ITEM);
    dim3 block(MM_WARPS * WARP);
    if (n_tok == 1) {
        dim3 grid((unsigned)((n_out + MM_WARPS - 1) / MM_WARPS), 1);
        pdl_launch(k_matmul<T, 1>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out, x, (int)n_in, n_tok, y);
    } else if (n_tok <= 4) {
        dim3 grid((unsigned)((n_out + MM_WARPS - 1) / MM_WARPS), 1);
        pdl_launch(k_matmul<T, 4>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out, x, (int)n_in, n_tok, y);
    } else {
        dim3 grid((unsigned)((n_out + MM_WARPS - 1) / MM_WARPS), (unsigned)((n_tok + MM_NT - 1) / MM_NT));
        pdl_launch(k_matmul<T, MM_NT>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out, x, (int)n_in, n_tok, y);
    }
}

/* ---- Q8 activations and the dp4a matvec (decq<T>: dequant.cuh) ----------------- */

/* one warp per 32-element block: xq = round(x / d), d = max|x| / 127 */
__global__ void k_quantize_q8(const float *x, int64_t n_blocks, int8_t *xq, float *xd)
{
    pdl_enter();
    int64_t blk = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (blk >= n_blocks)
        return;
    float v = x[blk * 32 + lane];
    float a = fabsf(v);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
    float d = a / 127.0f;
    xq[blk * 32 + lane] = (int8_t)(d > 0.0f ? __float2int_rn(v / d) : 0);
    if (lane == 0)
        xd[blk] = d;
}

extern "C" void cuk_quantize_q8(cudaStream_t s, const float *x, int64_t n, void *xq, float *xd)
{
    int64_t nb = n / 32;
    pdl_launch(k_quantize_q8, (unsigned)((nb * 32 + 255) / 256), 256, s, x, nb, (int8_t *)xq, xd);
}

/* acc[t] += the item's dot with token t's Q8 activations (item `it` of the row) */
template <int NT>
__device__ __forceinline__ void q8_dot(const q8item &o, int it, const int8_t *__restrict__ xq,
                                       const float *__restrict__ xd, int n_in, int n_items, int n_tok, float *acc)
{
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t < n_tok) {
            const int4 *xp = reinterpret_cast<const int4 *>(xq + (size_t)t * n_in) + it * 2;
            int4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
            int xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
            int s0 = 0, s1 = 0, c0 = 0, c1 = 0;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                s0 = __dp4a(o.q[k], xw[k], s0);
                s1 = __dp4a(o.q[k + 4], xw[k + 4], s1);
                c0 = __dp4a(0x01010101, xw[k], c0);
                c1 = __dp4a(0x01010101, xw[k + 4], c1);
            }
            float dx = __ldg(xd + (size_t)t * n_items + it);
            acc[t] += dx * (o.a0 * (float)s0 + o.a1 * (float)s1 + o.b0 * (float)c0 + o.b1 * (float)c1);
        }
    }
}

/* items decoded per lane before the first dot (bytes in flight); 1 = the v4 loop */
#define Q8_UNROLL 4

template <uint32_t T, int NT, int U>
__global__ void __launch_bounds__(MM_WARPS * WARP)
k_matvec_q8(const uint8_t *__restrict__ W, size_t row_bytes, int n_items, int n_out, const int8_t *__restrict__ xq,
            const float *__restrict__ xd, int n_in, int n_tok, float *__restrict__ y)
{
    pdl_enter();
    int r = blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= n_out)
        return;
    int nt = min(NT, n_tok);
    const uint8_t *row = W + (size_t)r * row_bytes;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = 0.0f;
    int it = lane;
    if (U > 1) {
        for (; it + (U - 1) * WARP < n_items; it += U * WARP) {
            q8item o[U];
#pragma unroll
            for (int u = 0; u < U; u++)
                decq<T>::run(row, it + u * WARP, o[u]);
#pragma unroll
            for (int u = 0; u < U; u++)
                q8_dot<NT>(o[u], it + u * WARP, xq, xd, n_in, n_items, nt, acc);
        }
    }
#pragma unroll 2
    for (; it < n_items; it += WARP) {
        q8item o;
        decq<T>::run(row, it, o);
        q8_dot<NT>(o, it, xq, xd, n_in, n_items, nt, acc);
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float v = acc[t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0 && t < nt)
            y[(size_t)t * n_out + r] = v;
    }
}

/*
 * Q8_0 rows (34-byte blocks, 2-byte aligned) for decode: eight lanes per
 * block, each taking 4 quants (two 16-bit loads) and the matching 4 bytes of
 * activations, so a warp's load instruction covers 4 neighbouring blocks (136
 * contiguous bytes) instead of 32 blocks at a 34-byte stride; 4 groups of
 * blocks per lane are loaded before use.
 */
#define Q80_UNROLL 16

template <int NT>
__global__ void __launch_bounds__(MM_WARPS * WARP)
k_matvec_q8_0(const uint8_t *__restrict__ W, size_t row_bytes, int n_items, int n_out, const int8_t *__restrict__ xq,
              const float *__restrict__ xd, int n_in, int n_tok, float *__restrict__ y)
{
    pdl_enter();
    int r = blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31, sub = lane & 7;
    if (r >= n_out)
        return;
    const uint8_t *row = W + (size_t)r * row_bytes;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = 0.0f;
    int blk = lane >> 3;
    for (; blk + 4 * (Q80_UNROLL - 1) < n_items; blk += 4 * Q80_UNROLL) {
        uint32_t q[Q80_UNROLL];
        float d[Q80_UNROLL];
#pragma unroll
        for (int u = 0; u < Q80_UNROLL; u++) {
            const uint8_t *b = row + (size_t)(blk + 4 * u) * 34;
            d[u] = ld_f16(b);
            q[u] = ld_u32_2(b + 2 + 4 * sub);
        }
#pragma unroll
        for (int u = 0; u < Q80_UNROLL; u++) {
            int bi = blk + 4 * u;
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t < n_tok) {
                    int xv = __ldg(reinterpret_cast<const int *>(xq + (size_t)t * n_in + (size_t)bi * 32) + sub);
                    float dx = __ldg(xd + (size_t)t * n_items + bi);
                    acc[t] += d[u] * dx * (float)__dp4a((int)q[u], xv, 0);
                }
            }
        }
    }
    for (; blk < n_items; blk += 4) {
        const uint8_t *b = row + (size_t)blk * 34;
        float d = ld_f16(b);
        uint32_t q = ld_u32_2(b + 2 + 4 * sub);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < n_tok) {
                int xv = __ldg(reinterpret_cast<const int *>(xq + (size_t)t * n_in + (size_t)blk * 32) + sub);
                float dx = __ldg(xd + (size_t)t * n_items + blk);
                acc[t] += d * dx * (float)__dp4a((int)q, xv, 0);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float v = acc[t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0 && t < n_tok)
            y[(size_t)t * n_out + r] = v;
    }
}

template <uint32_t T>
static void matvec_q8_t(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const void *xq, const float *xd,
                        int n_tok, float *y)
{
    size_t rb = cuk_row_bytes(T, n_in);
    int items = (int)(n_in / CUK_ITEM);
    dim3 grid((unsigned)((n_out + MM_WARPS - 1) / MM_WARPS)), block(MM_WARPS * WARP);
    if (T == AARMD_TYPE_Q8_0 && cuk_q80_on) {
        if (n_tok == 1)
            pdl_launch(k_matvec_q8_0<1>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out,
                       (const int8_t *)xq, xd, (int)n_in, n_tok, y);
        else
            pdl_launch(k_matvec_q8_0<Q8V_MAX_TOK>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out,
                       (const int8_t *)xq, xd, (int)n_in, n_tok, y);
        return;
    }
    if (n_tok == 1 && cuk_q8_unroll)
        pdl_launch(k_matvec_q8<T, 1, Q8_UNROLL>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out,
                   (const int8_t *)xq, xd, (int)n_in, n_tok, y);
    else if (n_tok == 1)
        pdl_launch(k_matvec_q8<T, 1, 1>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out, (const int8_t *)xq, xd,
                                                 (int)n_in, n_tok, y);
    else
        pdl_launch(k_matvec_q8<T, Q8V_MAX_TOK, 1>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out,
                                                              (const int8_t *)xq, xd, (int)n_in, n_tok, y);
}

extern "C" int cuk_type_q8(uint32_t type)
{
    switch (type) {
    case AARMD_TYPE_Q4_0: case AARMD_TYPE_Q4_1: case AARMD_TYPE_Q5_0: case AARMD_TYPE_Q5_1: case AARMD_TYPE_Q8_0:
    case AARMD_TYPE_Q4_K: case AARMD_TYPE_Q5_K: case AARMD_TYPE_Q6_K:
        return 1;
    default:
        return 0;
    }
}

#define DISPATCH_Q(type, fn, ...)                                      \
    switch (type) {                                                    \
    case AARMD_TYPE_Q4_0: fn<AARMD_TYPE_Q4_0>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q4_1: fn<AARMD_TYPE_Q4_1>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q5_0: fn<AARMD_TYPE_Q5_0>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q5_1: fn<AARMD_TYPE_Q5_1>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q8_0: fn<AARMD_TYPE_Q8_0>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q4_K: fn<AARMD_TYPE_Q4_K>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q5_K: fn<AARMD_TYPE_Q5_K>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q6_K: fn<AARMD_TYPE_Q6_K>(__VA_ARGS__); break;     \
    default: break;                                                    \
    }

extern "C" void cuk_matvec_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out,
                              const void *xq, const float *xd, int n_tok, float *y)
{
    if (cuk_v6_on && n_tok <= Q8V_MAX_TOK && cuk_mvs_q8(s, type, w, n_in, n_out, xq, xd, n_tok, y))
        return;
    if (cuk_v6_on && n_tok > Q8V_MAX_TOK && cuk_mmq_q8(s, type, w, n_in, n_out, xq, xd, n_tok, y))
        return;
    for (int t0 = 0; t0 < n_tok; t0 += Q8V_MAX_TOK) {   /* the item matvec, 8 tokens a launch */
        int nt = n_tok - t0 < Q8V_MAX_TOK ? n_tok - t0 : Q8V_MAX_TOK;
        DISPATCH_Q(type, matvec_q8_t, s, w, n_in, n_out, (const int8_t *)xq + (size_t)t0 * n_in,
                   xd + (size_t)t0 * (n_in / CUK_ITEM), nt, y + (size_t)t0 * n_out);
    }
}

/* ---- embedding lookup and F16 dequantization: one thread per item ---------- */

template <uint32_t T>
__global__ void k_get_rows(const uint8_t *__restrict__ W, size_t row_bytes, int n_items, const int32_t *ids, int n,
                           float *out, float scale, int add)
{
    pdl_enter();
    int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (int64_t)n * n_items)
        return;
    int i = (int)(g / n_items), it = (int)(g % n_items);
    float w[32];
    dec<T>::run(W + (size_t)ids[i] * row_bytes, it, w);
    float *o = out + (size_t)i * n_items * CUK_ITEM + (size_t)it * CUK_ITEM;
#pragma unroll
    for (int j = 0; j < 32; j++)
        o[j] = add ? o[j] + w[j] * scale : w[j] * scale;
}

template <uint32_t T>
__global__ void k_dequant_f16(const uint8_t *__restrict__ W, size_t row_bytes, int n_items, int64_t n_rows,
                              __half *dst)
{
    pdl_enter();
    int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= n_rows * n_items)
        return;
    int64_t r = g / n_items;
    int it = (int)(g % n_items);
    float w[32];
    dec<T>::run(W + (size_t)r * row_bytes, it, w);
    uint4 *o = reinterpret_cast<uint4 *>(dst + (size_t)r * n_items * CUK_ITEM + (size_t)it * CUK_ITEM);
#pragma unroll
    for (int j = 0; j < 4; j++) {   /* 16-byte stores */
        __half2 h[4];
#pragma unroll
        for (int k = 0; k < 4; k++)
            h[k] = __floats2half2_rn(w[8 * j + 2 * k], w[8 * j + 2 * k + 1]);
        o[j] = *reinterpret_cast<uint4 *>(h);
    }
}

template <uint32_t T>
static void get_rows_t(cudaStream_t s, const void *w, int64_t n_in, const int32_t *ids, int n, float *out, float scale,
                       int add)
{
    int items = (int)(n_in / CUK_ITEM);
    int64_t total = (int64_t)n * items;
    pdl_launch(k_get_rows<T>, (unsigned)((total + 127) / 128), 128, s, (const uint8_t *)w, cuk_row_bytes(T, n_in), items,
                                                                   ids, n, out, scale, add);
}

template <uint32_t T>
static void dequant_t(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, void *dst)
{
    int items = (int)(n_in / CUK_ITEM);
    int64_t total = n_out * items;
    pdl_launch(k_dequant_f16<T>, (unsigned)((total + 127) / 128), 128, s, (const uint8_t *)w, cuk_row_bytes(T, n_in), items,
                                                                      n_out, (__half *)dst);
}

#define DISPATCH(type, fn, ...)                                        \
    switch (type) {                                                    \
    case AARMD_TYPE_F32: fn<AARMD_TYPE_F32>(__VA_ARGS__); break;       \
    case AARMD_TYPE_F16: fn<AARMD_TYPE_F16>(__VA_ARGS__); break;       \
    case AARMD_TYPE_BF16: fn<AARMD_TYPE_BF16>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q4_0: fn<AARMD_TYPE_Q4_0>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q4_1: fn<AARMD_TYPE_Q4_1>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q5_0: fn<AARMD_TYPE_Q5_0>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q5_1: fn<AARMD_TYPE_Q5_1>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q8_0: fn<AARMD_TYPE_Q8_0>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q4_K: fn<AARMD_TYPE_Q4_K>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q5_K: fn<AARMD_TYPE_Q5_K>(__VA_ARGS__); break;     \
    case AARMD_TYPE_Q6_K: fn<AARMD_TYPE_Q6_K>(__VA_ARGS__); break;     \
    default: break;                                                    \
    }

extern "C" void cuk_matmul(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const float *x,
                           int n_tok, float *y)
{
    if (n_tok <= MM_NT && cuk_mv_f_on && cuk_v6_on && cuk_mvs_f(s, type, w, n_in, n_out, x, n_tok, y))
        return;
    if (n_tok <= MM_NT && cuk_mv_f_on) {
        switch (type) {
        case AARMD_TYPE_F32: matvec_f_t<AARMD_TYPE_F32>(s, w, n_in, n_out, x, n_tok, y); return;
        case AARMD_TYPE_F16: matvec_f_t<AARMD_TYPE_F16>(s, w, n_in, n_out, x, n_tok, y); return;
        case AARMD_TYPE_BF16: matvec_f_t<AARMD_TYPE_BF16>(s, w, n_in, n_out, x, n_tok, y); return;
        default: break;
        }
    }
    DISPATCH(type, matmul_t, s, w, n_in, n_out, x, n_tok, y);
}

extern "C" void cuk_get_rows(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, const int32_t *ids, int n,
                             float *out, float scale, int add)
{
    DISPATCH(type, get_rows_t, s, w, n_in, ids, n, out, scale, add);
}

extern "C" void cuk_dequant_f16(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, void *dst)
{
    DISPATCH(type, dequant_t, s, w, n_in, n_out, dst);
}

__global__ void k_f32_to_f16(const float *src, __half *dst, int64_t n)
{
    pdl_enter();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        dst[i] = __float2half_rn(src[i]);
}

extern "C" void cuk_f32_to_f16(cudaStream_t s, const float *src, void *dst, int64_t n)
{
    pdl_launch(k_f32_to_f16, (unsigned)((n + 255) / 256), 256, s, src, (__half *)dst, n);
}
