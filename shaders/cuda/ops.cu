/*
 * ops.cu — per-row kernels of the CUDA backend: norms, residual and bias adds,
 * rotary embedding fused with the paged F16 KV-cache write (and the rotary
 * tables), gated activations, softcap, row gather. Weight kernels live in
 * matmul.cu, the split-K attention in attn_dec.cu.
 */
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../plugins/cuda/launch.h"
#include "pdl.cuh"
#include "matvec_io.cuh"
#include "rope_kv.cuh"
#include "warp.cuh"
#include "../../core/abi/aarmd_backend.h"

extern "C" void cuk_ops_set_pdl_early(int early)
{
    pdl_set_early(early);
}

/* Sum over a block of blockDim.x (a multiple of 32, <= 1024) threads; every thread gets it. */
static __device__ float block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0)
        sh[wid] = v;
    __syncthreads();
    float t = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(t);
}

/* ---- norms ------------------------------------------------------------------ */

__global__ void k_norm(float *out, const float *x, const float *w, const float *b, int n, float eps, int layer)
{
    pdl_enter();
    __shared__ float sh[32];
    const float *xr = x + (size_t)blockIdx.x * n;
    float *orow = out + (size_t)blockIdx.x * n;
    float mean = 0.0f;
    if (layer) {
        float s = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            s += xr[i];
        mean = block_sum(s, sh) / (float)n;
    }
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float d = xr[i] - mean;
        ss += d * d;
    }
    float r = rsqrtf(block_sum(ss, sh) / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float y = (xr[i] - mean) * r;
        if (w)
            y *= w[i];
        if (b)
            y += b[i];
        orow[i] = y;
    }
}

/*
 * The one-pass norm (v8): a block per row keeps its float4s in registers
 * (NV per thread), so x (+ a), w and b are each read once with all loads in
 * flight together, one block reduction for RMS (two for layer norm, still in
 * registers), then out and the Q8 rows. x += a first when a != NULL (written
 * back). n % 4 == 0 and n / 4 <= NV * blockDim.x; xq needs n % 32 == 0. A run
 * of 32 elements is 8 neighbouring lanes' float4s (blockDim.x % 32 == 0),
 * quantized as k_quantize_q8 does (bit-identical).
 */
#define NORM1_THREADS 512   /* at most, so NV = 4 keeps its 48 floats in registers */

template <int NV>
__global__ void __launch_bounds__(NORM1_THREADS)
k_norm1(float *out, float *x, const float *a, const float *w, const float *b, int n, float eps, int layer,
        int8_t *xq, float *xd, unsigned *zero, int n_zero, __half *o16)
{
    pdl_enter();
    if (zero && blockIdx.x == 0)
        for (int i = threadIdx.x; i < n_zero; i += blockDim.x)
            zero[i] = 0;
    __shared__ float sh[32];
    const int n4 = n >> 2;
    const size_t ro = (size_t)blockIdx.x * n;
    float4 *xr = reinterpret_cast<float4 *>(x + ro);
    const float4 *ar = a ? reinterpret_cast<const float4 *>(a + ro) : NULL;
    const float4 *wr = reinterpret_cast<const float4 *>(w), *br = reinterpret_cast<const float4 *>(b);
    float4 v[NV], u[NV], wv[NV], bv[NV];
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {   /* every load first (no store in between: all in flight together) */
        int f = threadIdx.x + k * blockDim.x;
        v[k] = u[k] = bv[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        wv[k] = make_float4(1.0f, 1.0f, 1.0f, 1.0f);
        if (f < n4) {
            v[k] = xr[f];
            if (ar)
                u[k] = ar[f];
            if (w)
                wv[k] = __ldg(wr + f);
            if (b)
                bv[k] = __ldg(br + f);
        }
    }
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int f = threadIdx.x + k * blockDim.x;
        if (f < n4) {
            if (ar) {
                v[k].x += u[k].x, v[k].y += u[k].y, v[k].z += u[k].z, v[k].w += u[k].w;
                xr[f] = v[k];
            }
            s += v[k].x + v[k].y + v[k].z + v[k].w;
        }
    }
    float mean = layer ? block_sum(s, sh) / (float)n : 0.0f;
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        if (threadIdx.x + k * blockDim.x < n4) {
            float d0 = v[k].x - mean, d1 = v[k].y - mean, d2 = v[k].z - mean, d3 = v[k].w - mean;
            ss += d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;
        }
    }
    float r = rsqrtf(block_sum(ss, sh) / (float)n + eps);
    float4 *orow = reinterpret_cast<float4 *>(out + ro);
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int f = threadIdx.x + k * blockDim.x;
        float4 y;
        y.x = (v[k].x - mean) * r * wv[k].x + bv[k].x;
        y.y = (v[k].y - mean) * r * wv[k].y + bv[k].y;
        y.z = (v[k].z - mean) * r * wv[k].z + bv[k].z;
        y.w = (v[k].w - mean) * r * wv[k].w + bv[k].w;
        if (f < n4) {
            orow[f] = y;
            if (o16) {   /* the F16 rows a cuBLAS GEMM reads next (no conversion launch) */
                __half2 *h = reinterpret_cast<__half2 *>(o16 + ro) + 2 * f;
                h[0] = __floats2half2_rn(y.x, y.y);
                h[1] = __floats2half2_rn(y.z, y.w);
            }
        }
        if (xq && k * blockDim.x < n4)   /* block-uniform; a run of 32 is 8 lanes, all valid or none */
            q8_store4(y, f < n4, f, xq + ro, xd + (ro >> 5));
    }
}

/* Launches k_norm1 for rows of n; 0 when n does not fit it (n % 4, n > 8192): the caller falls back. */
static int norm1_launch(cudaStream_t s, float *out, float *x, const float *a, const float *w, const float *b, int rows,
                        int n, float eps, int layer, int8_t *xq, float *xd, unsigned *zero = NULL, int n_zero = 0,
                        __half *o16 = NULL)
{
    int n4 = n / 4;
    if (n % 4 || n4 > 4 * NORM1_THREADS || rows < 1)
        return 0;
    int threads = (n4 + 31) / 32 * 32;   /* one float4 a thread while it can: the quantization's divisions */
    if (threads > NORM1_THREADS)         /* run in parallel rather than in series */
        threads = NORM1_THREADS;
    int nv = (n4 + threads - 1) / threads;
    if (n % 32)
        xq = NULL, xd = NULL;
    switch (nv) {
    case 1: pdl_launch(k_norm1<1>, rows, threads, s, out, x, a, w, b, n, eps, layer, xq, xd, zero, n_zero, o16); return 1;
    case 2: pdl_launch(k_norm1<2>, rows, threads, s, out, x, a, w, b, n, eps, layer, xq, xd, zero, n_zero, o16); return 1;
    case 3: pdl_launch(k_norm1<3>, rows, threads, s, out, x, a, w, b, n, eps, layer, xq, xd, zero, n_zero, o16); return 1;
    case 4: pdl_launch(k_norm1<4>, rows, threads, s, out, x, a, w, b, n, eps, layer, xq, xd, zero, n_zero, o16); return 1;
    default: return 0;
    }
}

static int cuk_norm_v8 = 1;   /* the one-pass norms (k_norm1); 0: the v7 kernels (cuk_set_tuning's mvf) */

extern "C" void cuk_ops_set_v8(int on)
{
    cuk_norm_v8 = on;
}

extern "C" void cuk_norm(cudaStream_t s, float *out, const float *x, const float *w, const float *b, int rows, int n,
                         float eps, int layer)
{
    if (cuk_norm_v8 && norm1_launch(s, out, (float *)x, NULL, w, b, rows, n, eps, layer, NULL, NULL))
        return;   /* x is only read when a == NULL */
    int threads = n >= 1024 ? 1024 : ((n + 31) / 32) * 32;
    pdl_launch(k_norm, rows, threads, s, out, x, w, b, n, eps, layer);
}

extern "C" int cuk_norm_q8(cudaStream_t s, float *out, const float *x, const float *w, const float *b, int rows,
                           int n, float eps, int layer, void *xq, float *xd, unsigned *zero, int n_zero, void *o16)
{
    if (cuk_norm_v8 && norm1_launch(s, out, (float *)x, NULL, w, b, rows, n, eps, layer, (int8_t *)xq, xd, zero,
                                    n_zero, (__half *)o16))
        return o16 != NULL;
    if (zero && n_zero > 0)
        cudaMemsetAsync(zero, 0, (size_t)n_zero * sizeof(unsigned), s);
    cuk_norm(s, out, x, w, b, rows, n, eps, layer);
    if (xq && n % 32 == 0)
        cuk_quantize_q8(s, out, (int64_t)rows * n, xq, xd);
    return 0;
}

/* x[r] += a[r], then out[r] = norm(x[r]) * w (+ b): the residual add fused with the next norm */

__global__ void k_add_norm(float *out, float *x, const float *a, const float *w, const float *b, int n, float eps,
                           int layer, int8_t *xq, float *xd)
{
    pdl_enter();
    __shared__ float sh[32];
    float *xr = x + (size_t)blockIdx.x * n;
    const float *ar = a + (size_t)blockIdx.x * n;
    float *orow = out + (size_t)blockIdx.x * n;
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {   /* each thread rereads only what it wrote */
        float v = xr[i] + ar[i];
        xr[i] = v;
        s += v;
    }
    float mean = layer ? block_sum(s, sh) / (float)n : 0.0f;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float d = xr[i] - mean;
        ss += d * d;
    }
    float r = rsqrtf(block_sum(ss, sh) / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float y = (xr[i] - mean) * r;
        if (w)
            y *= w[i];
        if (b)
            y += b[i];
        orow[i] = y;
        if (xq)   /* warp-uniform: n % 32 == 0, blockDim.x % 32 == 0 */
            q8_store1(y, (size_t)blockIdx.x * n + i, xq, xd);
    }
}

extern "C" void cuk_add_norm(cudaStream_t s, float *out, float *x, const float *a, const float *w, const float *b,
                             int rows, int n, float eps, int layer)
{
    int threads = n >= 1024 ? 1024 : ((n + 31) / 32) * 32;
    pdl_launch(k_add_norm, rows, threads, s, out, x, a, w, b, n, eps, layer, (int8_t *)NULL, (float *)NULL);
}

extern "C" int cuk_add_norm_q8(cudaStream_t s, float *out, float *x, const float *a, const float *w, const float *b,
                               int rows, int n, float eps, int layer, void *xq, float *xd, void *o16)
{
    if (cuk_norm_v8 && norm1_launch(s, out, x, a, w, b, rows, n, eps, layer, (int8_t *)xq, xd, NULL, 0, (__half *)o16))
        return o16 != NULL;
    int threads = n >= 1024 ? 1024 : ((n + 31) / 32) * 32;
    if (n % 32)
        xq = NULL, xd = NULL;
    pdl_launch(k_add_norm, rows, threads, s, out, x, a, w, b, n, eps, layer, (int8_t *)xq, xd);
    return 0;
}

/* ---- elementwise -------------------------------------------------------------- */

__global__ void k_add(float *y, const float *x, int64_t n)
{
    pdl_enter();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] += x[i];
}

extern "C" void cuk_add(cudaStream_t s, float *y, const float *x, int64_t n)
{
    pdl_launch(k_add, (unsigned)((n + 255) / 256), 256, s, y, x, n);
}

__global__ void k_add_bias(float *y, const float *b, int rows, int n)
{
    pdl_enter();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (int64_t)rows * n)
        y[i] += b[i % n];
}

extern "C" void cuk_add_bias(cudaStream_t s, float *y, const float *b, int rows, int n)
{
    int64_t tot = (int64_t)rows * n;
    pdl_launch(k_add_bias, (unsigned)((tot + 255) / 256), 256, s, y, b, rows, n);
}

__global__ void k_copy_rows(float *dst, int ds, const float *src, int ss, int rows, int n)
{
    pdl_enter();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)rows * n)
        return;
    int r = (int)(i / n), c = (int)(i % n);
    dst[(size_t)r * ds + c] = src[(size_t)r * ss + c];
}

extern "C" void cuk_copy_rows(cudaStream_t s, float *dst, int dst_stride, const float *src, int src_stride, int rows,
                              int n)
{
    int64_t tot = (int64_t)rows * n;
    pdl_launch(k_copy_rows, (unsigned)((tot + 255) / 256), 256, s, dst, dst_stride, src, src_stride, rows, n);
}

static __device__ __forceinline__ float gelu_f(float x)
{
    const float c = 0.7978845608028654f;
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}

static __device__ __forceinline__ float silu_f(float x)
{
    return x / (1.0f + expf(-x));
}

static __device__ __forceinline__ float act_in(const float *p, size_t i)
{
    return p[i];
}

static __device__ __forceinline__ float act_in(const __half *p, size_t i)
{
    return __half2float(p[i]);
}

template <typename T>
__global__ void k_act_gated(float *out, const T *g, int gs, const T *u, int us, int n_tok, int n, int gelu,
                            int8_t *xq, float *xd, __half *o16)
{
    pdl_enter();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n_tok * n)
        return;
    int t = (int)(i / n), c = (int)(i % n);
    float a = act_in(g, (size_t)t * gs + c);
    a = gelu ? gelu_f(a) : silu_f(a);
    float y = a * act_in(u, (size_t)t * us + c);
    out[i] = y;
    if (o16)
        o16[i] = __float2half_rn(y);
    if (xq)   /* warp-uniform: n % 32 == 0, blocks of 256 */
        q8_store1(y, (size_t)i, xq, xd);
}

extern "C" void cuk_act_gated(cudaStream_t s, float *out, const float *gate, int gs, const float *up, int us,
                              int n_tok, int n, int gelu)
{
    int64_t tot = (int64_t)n_tok * n;
    pdl_launch(k_act_gated<float>, (unsigned)((tot + 255) / 256), 256, s, out, gate, gs, up, us, n_tok, n, gelu,
               (int8_t *)NULL, (float *)NULL, (__half *)NULL);
}

extern "C" void cuk_act_gated_q8(cudaStream_t s, float *out, const float *gate, int gs, const float *up, int us,
                                 int n_tok, int n, int gelu, void *xq, float *xd, void *o16)
{
    int64_t tot = (int64_t)n_tok * n;
    if (n % 32)
        xq = NULL, xd = NULL;
    pdl_launch(k_act_gated<float>, (unsigned)((tot + 255) / 256), 256, s, out, gate, gs, up, us, n_tok, n, gelu,
               (int8_t *)xq, xd, (__half *)o16);
}

extern "C" void cuk_act_gated16_q8(cudaStream_t s, float *out, const void *gate, int gs, const void *up, int us,
                                   int n_tok, int n, int gelu, void *xq, float *xd, void *o16)
{
    int64_t tot = (int64_t)n_tok * n;
    if (n % 32)
        xq = NULL, xd = NULL;
    pdl_launch(k_act_gated<__half>, (unsigned)((tot + 255) / 256), 256, s, out, (const __half *)gate, gs,
               (const __half *)up, us, n_tok, n, gelu, (int8_t *)xq, xd, (__half *)o16);
}

__global__ void k_gelu(float *x, int64_t n)
{
    pdl_enter();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] = gelu_f(x[i]);
}

extern "C" void cuk_gelu(cudaStream_t s, float *x, int64_t n)
{
    pdl_launch(k_gelu, (unsigned)((n + 255) / 256), 256, s, x, n);
}

__global__ void k_softcap(float *x, int64_t n, float cap)
{
    pdl_enter();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] = cap * tanhf(x[i] / cap);
}

extern "C" void cuk_softcap(cudaStream_t s, float *x, int64_t n, float cap)
{
    pdl_launch(k_softcap, (unsigned)((n + 255) / 256), 256, s, x, n, cap);
}

/* ---- rotary embedding + KV store --------------------------------------------- */

__global__ void k_rope_table(struct cuk_rope r, int n_pos, float2 *out)
{
    pdl_enter();
    int half = r.n_rot / 2;
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= (int64_t)n_pos * half)
        return;
    float c, sn;
    rope_cs_calc(r, (int32_t)(e / half), (int)(e % half), &c, &sn);
    out[e] = make_float2(c, sn);
}

extern "C" void cuk_rope_table(cudaStream_t s, const struct cuk_rope *r, int n_pos, float *out)
{
    int64_t n = (int64_t)n_pos * (r->n_rot / 2);
    pdl_launch(k_rope_table, (unsigned)((n + 255) / 256), 256, s, *r, n_pos, (float2 *)out);
}

/*
 * grid (token, group of ROPE_HEADS heads of the n_head q heads then the n_kv
 * k heads), a warp per head: the block computes the token's cos/sin once into
 * shared memory (double precision, as the CPU backend; v5b computed them in
 * every head's block), then each warp rotates its head from the input rows
 * (qi/ki/vi, row strides qs/ks/vs: in place, or the fused qkv rows) into q / k
 * ([n_tok][n_head*D], [n_tok][kv_dim]) and, for a k head, stores that kv
 * head's k and v rows as F16 at position pos[t] of the token's sequence in
 * the paged cache.
 */
#define ROPE_HEADS 8

__global__ void __launch_bounds__(ROPE_HEADS * WARP)
k_rope_store(const float *qi, int qs, const float *ki, int ks, const float *vi, int vs, float *q, float *k, int n_head,
             int n_kv, int D, struct cuk_rope r, const int32_t *pos, struct cuk_kv kv)
{
    __shared__ float cs[CUK_MAX_HEAD_DIM / 2], sn[CUK_MAX_HEAD_DIM / 2];
    int t = blockIdx.x, lane = threadIdx.x & 31;
    int h = blockIdx.y * ROPE_HEADS + (threadIdx.x >> 5);
    int rot = r.kind != AARMD_ROPE_NONE, half = rot ? r.n_rot / 2 : 0;
    int32_t p = pos[t];   /* the step upload: complete before the previous kernel started (pdl.cuh) */
    for (int i = threadIdx.x; i < half; i += blockDim.x)
        rope_cs(r, p, i, &cs[i], &sn[i]);
    pdl_enter();
    __syncthreads();
    if (h >= n_head + n_kv)
        return;
    int kv_dim = n_kv * D;
    const float *xi = h < n_head ? qi + (size_t)t * qs + (size_t)h * D : ki + (size_t)t * ks + (size_t)(h - n_head) * D;
    float *x = h < n_head ? q + (size_t)t * n_head * D + (size_t)h * D
                          : k + (size_t)t * kv_dim + (size_t)(h - n_head) * D;
    for (int i = lane; i < half; i += WARP) {   /* each lane reads only the pair it writes: in place is fine */
        int a = r.kind == AARMD_ROPE_NEOX ? i : 2 * i;
        int b = r.kind == AARMD_ROPE_NEOX ? i + half : 2 * i + 1;
        float x0 = xi[a], x1 = xi[b];
        x[a] = rope_rot(1, x0, x1, cs[i], sn[i]);
        x[b] = rope_rot(0, x0, x1, cs[i], sn[i]);
    }
    if (xi != x)   /* warp-uniform: the dimensions past the rotated ones */
        for (int d = 2 * half + lane; d < D; d += WARP)
            x[d] = xi[d];
    __syncwarp();   /* the k row, written by this warp's lanes */
    if (h >= n_head) {   /* warp-uniform */
        const int32_t *tab = kv.btab + kv.tok_bt[t];
        size_t o = (size_t)(h - n_head) * D;
        __half *kc = (__half *)kv.pool + kv_row(kv, tab, p, kv_dim, 0) + o;
        __half *vc = (__half *)kv.pool + kv_row(kv, tab, p, kv_dim, 1) + o;
        for (int d = lane; d < D; d += WARP) {
            kc[d] = __float2half_rn(x[d]);
            vc[d] = __float2half_rn(vi[(size_t)t * vs + o + d]);
        }
    }
}

static void rope_store_launch(cudaStream_t s, const float *qi, int qs, const float *ki, int ks, const float *vi, int vs,
                              float *q, float *k, int n_tok, int n_head, int n_kv, int D, const struct cuk_rope *r,
                              const int32_t *pos, const struct cuk_kv *kv)
{
    int heads = n_head + n_kv;
    dim3 grid((unsigned)n_tok, (unsigned)((heads + ROPE_HEADS - 1) / ROPE_HEADS));
    pdl_launch(k_rope_store, grid, ROPE_HEADS * WARP, s, qi, qs, ki, ks, vi, vs, q, k, n_head, n_kv, D, *r, pos, *kv);
}

extern "C" void cuk_rope_store(cudaStream_t s, float *q, float *k, const float *v, int n_tok, int n_head, int n_kv,
                               int D, const struct cuk_rope *r, const int32_t *pos, const struct cuk_kv *kv)
{
    rope_store_launch(s, q, n_head * D, k, n_kv * D, v, n_kv * D, q, k, n_tok, n_head, n_kv, D, r, pos, kv);
}

extern "C" void cuk_rope_store_qkv(cudaStream_t s, const float *qkv, float *q, float *k, int n_tok, int n_head,
                                   int n_kv, int D, const struct cuk_rope *r, const int32_t *pos,
                                   const struct cuk_kv *kv)
{
    int Q = n_head * D, KV = n_kv * D, st = Q + 2 * KV;
    rope_store_launch(s, qkv, st, qkv + Q, st, qkv + Q + KV, st, q, k, n_tok, n_head, n_kv, D, r, pos, kv);
}

/* dst[r][0..n) = src[idx[r]][0..n), r < rows */
__global__ void k_gather_rows(float *dst, const float *src, const int32_t *idx, int n)
{
    pdl_enter();
    const float *sr = src + (size_t)idx[blockIdx.x] * n;
    float *dr = dst + (size_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        dr[i] = sr[i];
}

extern "C" void cuk_gather_rows(cudaStream_t s, float *dst, const float *src, const int32_t *idx, int rows, int n)
{
    pdl_launch(k_gather_rows, (unsigned)rows, 256, s, dst, src, idx, n);
}
