/*
 * matmul.cu — weight kernels of the CUDA backend: per-type decoding of 32
 * elements of a GGUF row (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
 * Q5_K, Q6_K), the dequantize-matvec/matmul (for one token also with a
 * residual/bias epilogue or a norm/activation prologue), embedding lookup and
 * dequantization to F16 for the cuBLAS prefill path. No attention.
 */
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../plugins/cuda/launch.h"
#include "pdl.cuh"
#include "dequant.cuh"
#include "matvec_io.cuh"
#include "../../core/abi/aarmd_backend.h"

#define WARP 32
#define MM_WARPS 8          /* rows (warps) per block of the matmul */
#define MM_NT 8             /* tokens per block of the matmul (prefill) */
#define Q8V_MAX_TOK 8       /* tokens per launch of the v4/v5 Q8 matvecs */

int cuk_pdl_on = 0;         /* pdl.cuh */
extern "C" void cuk_ops_set_pdl_early(int early);   /* ops.cu */
extern "C" void cuk_attn_set_pdl_early(int early);  /* attn_dec.cu */
extern "C" void cuk_matvec_set_pdl_early(int early);   /* matvec.cu */
extern "C" void cuk_fa_set_pdl_early(int early);       /* attn_fa.cu */
static int cuk_mv_f_on = 1; /* F32/F16/BF16 decode through k_matvec_f / k_mvs (mvf bit 1) */
static int cuk_v6_on = 1;   /* decode through the v6 kernels of matvec.cu (mvf bit 2 clear) */
static int cuk_q80_on = 0;  /* v5: Q8_0 decode through k_matvec_q8_0 (mvf bits 2 and 4) */
static int cuk_q8_unroll = 0;   /* v5: Q8 matvec with Q8_UNROLL items in flight (mvf bits 2 and 4) */
static int cuk_fuse = CUK_FUSE_DEFAULT;   /* v8 fusions (cuk_fuse_on); mvf 0, 2, 4, 5, 6: 0 */
extern "C" void cuk_ops_set_v8(int on);   /* ops.cu: the one-pass norms */
static int cuk_pre = 1;         /* v8: decode matvecs load their first weights before griddepcontrol.wait */

extern "C" int cuk_fuse_on(void)
{
    return cuk_fuse;
}

/* The fusions in use: CUK_FUSE_DEFAULT, or the mask in AARMD_CUDA_V8 (A/B of single fusions, read once). */
static int fuse_mask(void)
{
    static int mask = -1;
    if (mask < 0) {
        const char *e = getenv("AARMD_CUDA_V8");
        mask = e && *e ? (int)(strtol(e, NULL, 0) & CUK_FUSE_ALL) : CUK_FUSE_DEFAULT;
    }
    return mask;
}

extern "C" void cuk_set_tuning(int pdl, int matvec_f)
{
    static int dev_pdl = -1;
    cuk_pdl_on = pdl != 0;
    if (pdl != dev_pdl) {   /* pdl 2: trigger the next launch at kernel entry (pdl.cuh) in matmul.cu,
                             * ops.cu and attn_dec.cu; 3: in every kernel file */
        pdl_set_early(pdl >= 2);
        cuk_ops_set_pdl_early(pdl >= 2);
        cuk_attn_set_pdl_early(pdl >= 2);
        cuk_matvec_set_pdl_early(pdl == 3);
        cuk_fa_set_pdl_early(pdl == 3);
        cuk_mv1_set_pdl(pdl);   /* matvec1.cu (its early release is a measurement knob at 2) */
        dev_pdl = pdl;
    }
    cuk_fuse = (matvec_f & 1) && (matvec_f & 6) != 4 ? fuse_mask() : 0;   /* 1, 3, 7; 5: v7 forward */
    cuk_ops_set_v8((cuk_fuse & CUK_FUSE_NORM) != 0);
    cuk_pre = (cuk_fuse & CUK_FUSE_PREWAIT) != 0;
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
           int n_in, int n_tok, float *__restrict__ y, const float *__restrict__ bias, int accum, int pre)
{
    enum { N = chunk16<T>::N };
    int r = blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= n_out)
        return;
    const uint4 *row = reinterpret_cast<const uint4 *>(W + (size_t)r * row_bytes);
    int c = lane;
    uint4 v[MVF_UNROLL];
    int first = pre && c + (MVF_UNROLL - 1) * WARP < n_chunks;   /* v8: the first chunks before the wait */
    if (first) {   /* weights are never written while kernels run: safe before griddepcontrol.wait */
#pragma unroll
        for (int u = 0; u < MVF_UNROLL; u++)
            v[u] = __ldcs(row + c + u * WARP);
    }
    pdl_enter();
    float y0, b0;
    mv_epilogue_load(lane == 0, accum, y, bias, r, &y0, &b0);
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = 0.0f;
    for (; c + (MVF_UNROLL - 1) * WARP < n_chunks; c += MVF_UNROLL * WARP) {
        if (!first) {
#pragma unroll
            for (int u = 0; u < MVF_UNROLL; u++)
                v[u] = __ldcs(row + c + u * WARP);   /* streamed once per token: evict first */
        }
        first = 0;
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
        if (lane == 0 && t < n_tok) {   /* bias and residual in the epilogue (v8) */
            size_t o = (size_t)t * n_out + r;
            y[o] = (t == 0 ? y0 : accum ? y[o] : 0.0f) + (bias ? v + b0 : v);
        }
    }
}

template <uint32_t T>
static void matvec_f_t(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const float *x, int n_tok, float *y)
{
    size_t rb = cuk_row_bytes(T, n_in);
    int chunks = (int)(rb / 16);
    dim3 grid((unsigned)((n_out + MM_WARPS - 1) / MM_WARPS)), block(MM_WARPS * WARP);
    if (n_tok == 1)
        pdl_launch(k_matvec_f<T, 1>, grid, block, s, (const uint8_t *)w, rb, chunks, (int)n_out, x, (int)n_in, n_tok, y,
                   (const float *)NULL, 0, cuk_pre);
    else if (n_tok <= 4)
        pdl_launch(k_matvec_f<T, 4>, grid, block, s, (const uint8_t *)w, rb, chunks, (int)n_out, x, (int)n_in, n_tok, y,
                   (const float *)NULL, 0, cuk_pre);
    else
        pdl_launch(k_matvec_f<T, MM_NT>, grid, block, s, (const uint8_t *)w, rb, chunks, (int)n_out, x, (int)n_in,
                   n_tok, y, (const float *)NULL, 0, cuk_pre);
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

/* acc[t] += the item's dot with token t's Q8 activations (item `it` of the row); SH: they are in
 * shared memory (k_matvec_q8n), else global (read through the non-coherent cache) */
template <int NT, bool SH = false>
static __device__ __forceinline__ void q8_dot(const q8item &o, int it, const int8_t *__restrict__ xq,
                                       const float *__restrict__ xd, int n_in, int n_items, int n_tok, float *acc)
{
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t < n_tok) {
            const int4 *xp = reinterpret_cast<const int4 *>(xq + (size_t)t * n_in) + it * 2;
            int4 x0 = SH ? xp[0] : __ldg(xp), x1 = SH ? xp[1] : __ldg(xp + 1);
            int xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
            int s0 = 0, s1 = 0, c0 = 0, c1 = 0;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                s0 = __dp4a(o.q[k], xw[k], s0);
                s1 = __dp4a(o.q[k + 4], xw[k + 4], s1);
                c0 = __dp4a(0x01010101, xw[k], c0);
                c1 = __dp4a(0x01010101, xw[k + 4], c1);
            }
            float dx = SH ? xd[(size_t)t * n_items + it] : __ldg(xd + (size_t)t * n_items + it);
            acc[t] += dx * (o.a0 * (float)s0 + o.a1 * (float)s1 + o.b0 * (float)c0 + o.b1 * (float)c1);
        }
    }
}

/* items decoded per lane before the first dot (bytes in flight); 1 = the v4 loop */
#define Q8_UNROLL 4

template <uint32_t T, int NT, int U>
__global__ void __launch_bounds__(MM_WARPS * WARP)
k_matvec_q8(const uint8_t *__restrict__ W, size_t row_bytes, int n_items, int n_out, const int8_t *__restrict__ xq,
            const float *__restrict__ xd, int n_in, int n_tok, float *__restrict__ y, const float *__restrict__ bias,
            int accum, int pre)
{
    int r = blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= n_out)
        return;
    int nt = min(NT, n_tok);
    const uint8_t *row = W + (size_t)r * row_bytes;
    int it = lane;
    q8item o0;
    int first = U == 1 && pre && it < n_items;   /* v8: the first item before the wait (weights are never */
    if (first)                                   /* written while kernels run) */
        decq<T>::run(row, it, o0);
    pdl_enter();
    float y0, b0;
    mv_epilogue_load(lane == 0, accum, y, bias, r, &y0, &b0);
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        acc[t] = 0.0f;
    if (first) {
        q8_dot<NT>(o0, it, xq, xd, n_in, n_items, nt, acc);
        it += WARP;
    }
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
        if (lane == 0 && t < nt) {   /* bias and residual in the epilogue (v8) */
            size_t o = (size_t)t * n_out + r;
            y[o] = (t == 0 ? y0 : accum ? y[o] : 0.0f) + (bias ? v + b0 : v);
        }
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
    const float *nb = NULL;
    if (n_tok == 1 && cuk_q8_unroll)
        pdl_launch(k_matvec_q8<T, 1, Q8_UNROLL>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out,
                   (const int8_t *)xq, xd, (int)n_in, n_tok, y, nb, 0, cuk_pre);
    else if (n_tok == 1)
        pdl_launch(k_matvec_q8<T, 1, 1>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out, (const int8_t *)xq,
                   xd, (int)n_in, n_tok, y, nb, 0, cuk_pre);
    else
        pdl_launch(k_matvec_q8<T, Q8V_MAX_TOK, 1>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out,
                   (const int8_t *)xq, xd, (int)n_in, n_tok, y, nb, 0, cuk_pre);
}

/* y += W x (+ b), one token, through the item matvec (the v5 1-token kernel, v8 epilogue) */
template <uint32_t T>
static void matvec_q8_acc_t(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const void *xq, const float *xd,
                            const float *b, float *y)
{
    size_t rb = cuk_row_bytes(T, n_in);
    int items = (int)(n_in / CUK_ITEM);
    dim3 grid((unsigned)((n_out + MM_WARPS - 1) / MM_WARPS)), block(MM_WARPS * WARP);
    pdl_launch(k_matvec_q8<T, 1, 1>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out, (const int8_t *)xq, xd,
               (int)n_in, 1, y, b, 1, cuk_pre);
}

/* ---- v8: one-token matvec whose prologue makes its input (norm, gated activation) ---- */
/*
 * Each block builds the Q8 activations itself in shared memory, then runs
 * the item matvec of k_matvec_q8<T, 1, 1> from there, so the kernel that made
 * them (and its launch) disappears. KIND 0: norm(x) * nw (+ nb), RMS or layer
 * norm (the norm between the residual add and the qkv / gate|up matvec);
 * KIND 1: act(x) * x2 with act SiLU, or GELU when `layer` != 0 (the gated
 * activation before down). Worth it while the input is small (every block
 * rereads it from L2): n_in <= PRO_MAX and the rereads <= PRO_L2_BYTES (the
 * 135M shape: yes; 8B: no). Quantization as k_quantize_q8 (per 32, d =
 * max|y| / 127, y / d rounded); epilogue as k_matvec_q8 (bias, accumulate).
 */
#define PRO_MAX 4096
#define PRO_NV (PRO_MAX / 4 / (MM_WARPS * WARP))   /* float4s per thread at most */
#define PRO_L2_BYTES (6 << 20)                     /* rereads of the input by all blocks at most (~1 us of L2) */

static __device__ __forceinline__ float mm_block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0)
        sh[wid] = v;
    __syncthreads();
    float t = lane < MM_WARPS ? sh[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        t += __shfl_xor_sync(0xffffffffu, t, o);
    return t;
}

/* the gated activations of ops.cu (k_act_gated), same arithmetic */
static __device__ __forceinline__ float mm_act(float g, int gelu)
{
    if (gelu) {
        const float c = 0.7978845608028654f;
        return 0.5f * g * (1.0f + tanhf(c * (g + 0.044715f * g * g * g)));
    }
    return g / (1.0f + expf(-g));
}

template <uint32_t T, int NV, int KIND>
__global__ void __launch_bounds__(MM_WARPS * WARP)
k_matvec_q8p(const uint8_t *__restrict__ W, size_t row_bytes, int n_items, int n_out, const float *__restrict__ x,
             const float *__restrict__ x2, const float *__restrict__ nw, const float *__restrict__ nb, float eps,
             int layer, int n_in, float *__restrict__ y, const float *__restrict__ bias, int accum, int pre)
{
    __shared__ __align__(16) int8_t xs[PRO_MAX];
    __shared__ float ds[PRO_MAX / 32];
    __shared__ float sh[32];
    const int step = MM_WARPS * WARP;
    int r = blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    int valid = r < n_out;
    const uint8_t *row = W + (size_t)(valid ? r : 0) * row_bytes;
    int it = lane;
    q8item o0;
    int first = valid && pre && it < n_items;   /* the first item before the wait (weights are never written) */
    if (first)
        decq<T>::run(row, it, o0);
    pdl_enter();
    float y0, b0;
    mv_epilogue_load(valid && lane == 0, accum, y, bias, r, &y0, &b0);
    /* the prologue: every thread of the block, the input in registers */
    const int n4 = n_in >> 2;
    float4 v[NV], u[NV], bv[NV];
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int f = threadIdx.x + k * step;
        v[k] = bv[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        u[k] = make_float4(1.0f, 1.0f, 1.0f, 1.0f);
        if (f < n4) {
            v[k] = reinterpret_cast<const float4 *>(x)[f];
            if (KIND == 1)
                u[k] = reinterpret_cast<const float4 *>(x2)[f];
            else if (nw)
                u[k] = __ldg(reinterpret_cast<const float4 *>(nw) + f);
            if (KIND == 0 && nb)
                bv[k] = __ldg(reinterpret_cast<const float4 *>(nb) + f);
        }
    }
    float mean = 0.0f, rn = 1.0f;
    if (KIND == 0) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < NV; k++)
            s += v[k].x + v[k].y + v[k].z + v[k].w;   /* zero beyond n4 */
        mean = layer ? mm_block_sum(s, sh) / (float)n_in : 0.0f;
        float ss = 0.0f;
#pragma unroll
        for (int k = 0; k < NV; k++) {
            if (threadIdx.x + k * step < n4) {
                float d0 = v[k].x - mean, d1 = v[k].y - mean, d2 = v[k].z - mean, d3 = v[k].w - mean;
                ss += d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;
            }
        }
        rn = rsqrtf(mm_block_sum(ss, sh) / (float)n_in + eps);
    }
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int f = threadIdx.x + k * step;
        if (k * step < n4) {   /* block-uniform; a run of 32 is 8 lanes, all valid or none */
            float4 q;
            if (KIND == 0) {
                q.x = (v[k].x - mean) * rn * u[k].x + bv[k].x;
                q.y = (v[k].y - mean) * rn * u[k].y + bv[k].y;
                q.z = (v[k].z - mean) * rn * u[k].z + bv[k].z;
                q.w = (v[k].w - mean) * rn * u[k].w + bv[k].w;
            } else {
                q.x = mm_act(v[k].x, layer) * u[k].x;
                q.y = mm_act(v[k].y, layer) * u[k].y;
                q.z = mm_act(v[k].z, layer) * u[k].z;
                q.w = mm_act(v[k].w, layer) * u[k].w;
            }
            q8_store4(q, f < n4, f, xs, ds);
        }
    }
    __syncthreads();
    if (!valid)
        return;
    float acc = 0.0f;
    if (first) {
        q8_dot<1, true>(o0, it, xs, ds, n_in, n_items, 1, &acc);
        it += WARP;
    }
#pragma unroll 2
    for (; it < n_items; it += WARP) {
        q8item o;
        decq<T>::run(row, it, o);
        q8_dot<1, true>(o, it, xs, ds, n_in, n_items, 1, &acc);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0)
        y[r] = y0 + (bias ? acc + b0 : acc);
}

template <uint32_t T, int KIND>
static void matvec_q8p_t(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const float *x, const float *x2,
                         const float *nw, const float *nb, float eps, int layer, float *y, const float *bias, int accum)
{
    size_t rb = cuk_row_bytes(T, n_in);
    int items = (int)(n_in / CUK_ITEM);
    dim3 grid((unsigned)((n_out + MM_WARPS - 1) / MM_WARPS)), block(MM_WARPS * WARP);
    int nv = (int)((n_in / 4 + MM_WARPS * WARP - 1) / (MM_WARPS * WARP));
    if (nv <= 1)
        pdl_launch(k_matvec_q8p<T, 1, KIND>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out, x, x2, nw, nb,
                   eps, layer, (int)n_in, y, bias, accum, cuk_pre);
    else if (nv <= 2)
        pdl_launch(k_matvec_q8p<T, 2, KIND>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out, x, x2, nw, nb,
                   eps, layer, (int)n_in, y, bias, accum, cuk_pre);
    else
        pdl_launch(k_matvec_q8p<T, PRO_NV, KIND>, grid, block, s, (const uint8_t *)w, rb, items, (int)n_out, x, x2, nw,
                   nb, eps, layer, (int)n_in, y, bias, accum, cuk_pre);
}

template <uint32_t T>
static void matvec_q8n_t(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const float *x, const float *nw,
                         const float *nb, float eps, int layer, float *y)
{
    matvec_q8p_t<T, 0>(s, w, n_in, n_out, x, NULL, nw, nb, eps, layer, y, NULL, 0);
}

template <uint32_t T>
static void matvec_q8a_t(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const float *gate,
                         const float *up, int gelu, const float *b, float *y)
{
    matvec_q8p_t<T, 1>(s, w, n_in, n_out, gate, up, NULL, NULL, 0.0f, gelu, y, b, 1);
}

/* 1 when a prologue matvec takes this matrix (fusion bit on, quantized, small enough input) */
static int pro_ok(int bit, uint32_t type, int64_t n_in, int64_t n_out)
{
    return (cuk_fuse & bit) && cuk_type_q8(type) && cuk_type_ok(type, n_in) && n_out >= 1 && n_in <= PRO_MAX &&
           (n_out + MM_WARPS - 1) / MM_WARPS * n_in * 8 <= PRO_L2_BYTES;
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
    if (cuk_v6_on && n_tok <= Q8V_MAX_TOK && cuk_mmqv_small(s, type, w, n_in, n_out, xq, xd, n_tok, y))
        return;
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

extern "C" int cuk_matvec_q8_acc(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out,
                                 const void *xq, const float *xd, const float *b, float *y)
{
    if (!cuk_type_q8(type) || !cuk_type_ok(type, n_in) || n_out < 1)
        return 0;
    if (cuk_v6_on && cuk_mv1_q8(s, type, w, n_in, n_out, xq, xd, b, 1, y, CUK_MV1_DEFAULT))   /* v9 (matvec1.cu) */
        return 1;
    DISPATCH_Q(type, matvec_q8_acc_t, s, w, n_in, n_out, xq, xd, b, y);
    return 1;
}

extern "C" int cuk_matvec_q8_norm(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out,
                                  const float *x, const float *nw, const float *nb, float eps, int layer, float *y)
{
    if (!pro_ok(CUK_FUSE_NORM_IN, type, n_in, n_out))
        return 0;
    DISPATCH_Q(type, matvec_q8n_t, s, w, n_in, n_out, x, nw, nb, eps, layer, y);
    return 1;
}

extern "C" int cuk_matvec_q8_act_acc(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out,
                                     const float *gate, const float *up, int gelu, const float *b, float *y)
{
    if (!pro_ok(CUK_FUSE_ACT_IN, type, n_in, n_out))
        return 0;
    DISPATCH_Q(type, matvec_q8a_t, s, w, n_in, n_out, gate, up, gelu, b, y);
    return 1;
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

/* four elements a thread: one 16-byte load, one 8-byte store (n4 = n / 4) */
__global__ void k_f32_to_f16_v4(const float4 *src, uint2 *dst, int64_t n4)
{
    pdl_enter();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4)
        return;
    float4 v = src[i];
    __half2 a = __floats2half2_rn(v.x, v.y), b = __floats2half2_rn(v.z, v.w);
    uint2 o;
    o.x = *reinterpret_cast<unsigned *>(&a);
    o.y = *reinterpret_cast<unsigned *>(&b);
    dst[i] = o;
}

extern "C" void cuk_f32_to_f16(cudaStream_t s, const float *src, void *dst, int64_t n)
{
    if (n % 4 == 0 && (uintptr_t)src % 16 == 0 && (uintptr_t)dst % 8 == 0) {
        int64_t n4 = n / 4;
        pdl_launch(k_f32_to_f16_v4, (unsigned)((n4 + 255) / 256), 256, s, (const float4 *)src, (uint2 *)dst, n4);
        return;
    }
    pdl_launch(k_f32_to_f16, (unsigned)((n + 255) / 256), 256, s, src, (__half *)dst, n);
}

/* y += W x (+ b), one token, float weights: k_matvec_f with the v8 epilogue */
template <uint32_t T>
static void matvec_f_acc_t(cudaStream_t s, const void *w, int64_t n_in, int64_t n_out, const float *x, const float *b,
                           float *y)
{
    size_t rb = cuk_row_bytes(T, n_in);
    dim3 grid((unsigned)((n_out + MM_WARPS - 1) / MM_WARPS)), block(MM_WARPS * WARP);
    pdl_launch(k_matvec_f<T, 1>, grid, block, s, (const uint8_t *)w, rb, (int)(rb / 16), (int)n_out, x, (int)n_in, 1,
               y, b, 1, cuk_pre);
}

extern "C" int cuk_matvec_f_acc(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out,
                                const float *x, const float *b, float *y)
{
    if (!cuk_type_ok(type, n_in) || n_out < 1 || cuk_row_bytes(type, n_in) % 16)
        return 0;
    if (cuk_v6_on && cuk_mv1_f(s, type, w, n_in, n_out, x, b, 1, y, CUK_MV1_DEFAULT))   /* v9 (matvec1.cu) */
        return 1;
    switch (type) {
    case AARMD_TYPE_F32: matvec_f_acc_t<AARMD_TYPE_F32>(s, w, n_in, n_out, x, b, y); return 1;
    case AARMD_TYPE_F16: matvec_f_acc_t<AARMD_TYPE_F16>(s, w, n_in, n_out, x, b, y); return 1;
    case AARMD_TYPE_BF16: matvec_f_acc_t<AARMD_TYPE_BF16>(s, w, n_in, n_out, x, b, y); return 1;
    default: return 0;
    }
}
