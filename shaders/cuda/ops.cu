/*
 * ops.cu — per-row kernels of the CUDA backend: norms, residual and bias adds,
 * rotary embedding fused with the paged F16 KV-cache write, split-K attention
 * with GQA over every sequence of a step (block tables; for decode also with
 * the rope, the store and the chunk merge inside), gated activations and
 * softcap. Weight kernels live in matmul.cu.
 */
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../plugins/cuda/launch.h"
#include "pdl.cuh"
#include "matvec_io.cuh"
#include "../../core/abi/aarmd_backend.h"

#define WARP 32

extern "C" void cuk_ops_set_pdl_early(int early)
{
    pdl_set_early(early);
}

static __device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
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

__global__ void k_act_gated(float *out, const float *g, int gs, const float *u, int us, int n_tok, int n, int gelu,
                            int8_t *xq, float *xd, __half *o16)
{
    pdl_enter();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n_tok * n)
        return;
    int t = (int)(i / n), c = (int)(i % n);
    float a = g[(size_t)t * gs + c];
    a = gelu ? gelu_f(a) : silu_f(a);
    float y = a * u[(size_t)t * us + c];
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
    pdl_launch(k_act_gated, (unsigned)((tot + 255) / 256), 256, s, out, gate, gs, up, us, n_tok, n, gelu,
               (int8_t *)NULL, (float *)NULL, (__half *)NULL);
}

extern "C" void cuk_act_gated_q8(cudaStream_t s, float *out, const float *gate, int gs, const float *up, int us,
                                 int n_tok, int n, int gelu, void *xq, float *xd, void *o16)
{
    int64_t tot = (int64_t)n_tok * n;
    if (n % 32)
        xq = NULL, xd = NULL;
    pdl_launch(k_act_gated, (unsigned)((tot + 255) / 256), 256, s, out, gate, gs, up, us, n_tok, n, gelu,
               (int8_t *)xq, xd, (__half *)o16);
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

/* cos/sin of pair i at position p, as the CPU backend's cpu_rope_cos_sin (double precision). */
static __device__ void rope_cs_calc(const struct cuk_rope &r, int32_t p, int i, float *c, float *sn)
{
    double extrap = (double)p * pow((double)r.freq_base, -2.0 * i / (double)r.n_rot);
    if (r.freq_factors)
        extrap /= r.freq_factors[i];
    double theta = r.freq_scale * extrap;
    double mscale = r.attn_factor;
    if (r.ext_factor != 0.0f) {
        double span = r.corr_high - r.corr_low;
        double y = (i - r.corr_low) / (span > 0.001 ? span : 0.001);
        double ramp = 1.0 - fmin(1.0, fmax(0.0, y));
        double mix = ramp * r.ext_factor;
        theta = theta * (1.0 - mix) + extrap * mix;
        mscale *= 1.0 + 0.1 * log(1.0 / r.freq_scale);
    }
    *c = (float)(cos(theta) * mscale);
    *sn = (float)(sin(theta) * mscale);
}

/* rope_cs_calc's values: from the layer's table (cuk_rope_table) at positions it covers, one load
 * instead of ~150 dependent double-precision operations (v15) */
static __device__ __forceinline__ void rope_cs(const struct cuk_rope &r, int32_t p, int i, float *c, float *sn)
{
    if (p < r.n_cs) {
        float2 v = __ldg((const float2 *)r.cs + (size_t)p * (r.n_rot / 2) + i);
        *c = v.x;
        *sn = v.y;
    } else {
        rope_cs_calc(r, p, i, c, sn);
    }
}

/* One rotated element: the pair's first (x0 c - x1 s) or second (x0 s + x1 c), each product
 * rounded before the sum, as the CPU backend (C, no contraction) computes it. */
static __device__ __forceinline__ float rope_rot(int first, float x0, float x1, float c, float sn)
{
    return first ? __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn)) : __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, c));
}

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

/* F16 row of position j of token t's sequence in the paged cache (K, or V when v != 0). */
static __device__ __forceinline__ size_t kv_row(const struct cuk_kv &kv, const int32_t *tab, int32_t j, int kv_dim, int v)
{
    size_t b = (size_t)tab[j / CUK_KV_BLOCK];
    return b * kv.block_halfs + kv.layer_off + ((size_t)v * CUK_KV_BLOCK + (size_t)(j % CUK_KV_BLOCK)) * kv_dim;
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

/* ---- attention ------------------------------------------------------------------ */

#define ATTN_WARPS 4
#define ATTN_WIDE 16   /* warps of the one-chunk decode attention (v14) */
#define ATTN_MERGE_BATCH_DEFAULT 1   /* v10 batched merge loads: +0.6-2% tg128 on every row (docs/cuda-notes.md v10-dec) */
#define ATTN_PER_LANE (CUK_MAX_HEAD_DIM / WARP)

/* A warp's query row (lanes hold dims lane, lane+32, ...; 0 past D) and its zeroed accumulator. */
template <int N>
static __device__ __forceinline__ void attn_q_load(const float *qr, int D, int lane, float (&qv)[N], float (&acc)[N])
{
#pragma unroll
    for (int i = 0; i < N; i++) {
        int d = lane + WARP * i;
        qv[i] = d < D ? qr[d] : 0.0f;
        acc[i] = 0.0f;
    }
}

/* One key of a warp's online softmax, its K and V values in registers (lane's dims lane + 32 i,
 * i < N; those past D unused): score q·k, optional softcap, rescale the running sum and
 * accumulator when the max grows, then add the key's weight and weighted V row. The v10 decode
 * kernel loads a batch of keys at once and takes them one by one; attn_key loads one. */
template <int N>
static __device__ __forceinline__ void attn_key_r(const float (&qv)[N], const __half (&kr)[N], const __half (&vr)[N],
                                                  int D, int lane, float scale, float softcap, float *m, float *s,
                                                  float (&acc)[N])
{
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int d = lane + WARP * i;
        if (d < D)
            dot += qv[i] * __half2float(kr[i]);
    }
    float sc = warp_sum(dot) * scale;
    if (softcap > 0.0f)
        sc = softcap * tanhf(sc / softcap);
    if (sc > *m) {
        float f = expf(*m - sc);
        *s *= f;
#pragma unroll
        for (int i = 0; i < N; i++)
            acc[i] *= f;
        *m = sc;
    }
    float wgt = expf(sc - *m);
    *s += wgt;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int d = lane + WARP * i;
        if (d < D)
            acc[i] += wgt * __half2float(vr[i]);
    }
}

/* attn_key_r for the key whose K and V rows are at kr, vr (the split-K kernels below). */
static __device__ __forceinline__ void attn_key(const float (&qv)[ATTN_PER_LANE], const __half *kr, const __half *vr,
                                                int D, int lane, float scale, float softcap, float *m, float *s,
                                                float (&acc)[ATTN_PER_LANE])
{
    __half kk[ATTN_PER_LANE], vv[ATTN_PER_LANE];
#pragma unroll
    for (int i = 0; i < ATTN_PER_LANE; i++) {
        int d = lane + WARP * i;
        kk[i] = d < D ? kr[d] : __float2half_rn(0.0f);
        vv[i] = d < D ? vr[d] : __float2half_rn(0.0f);
    }
    attn_key_r(qv, kk, vv, D, lane, scale, softcap, m, s, acc);
}

/*
 * The end of a split-K attention block: its W warps merge their online-softmax
 * states (m, s, acc[D]; acc in lanes d = lane + 32 i) in shared memory and
 * write the chunk's (M, S, acc[D]) to out. out == NULL (the launch's only
 * chunk): the normalized row orow[0..D) = acc / S instead (+ element i0 + d of
 * the Q8 rows when xq != NULL, D % 32 == 0), as attn_merge would make it from
 * that one partial row (bit-identical), without the round trip through it.
 * Every thread calls it.
 */
template <int W, int N>
static __device__ __forceinline__ void attn_warps_merge(float m, float s, const float (&acc)[N], int D, float *sm,
                                                        float *ss, float (*sacc)[CUK_MAX_HEAD_DIM], float *out,
                                                        float *orow = NULL, size_t i0 = 0, int8_t *xq = NULL,
                                                        float *xd = NULL)
{
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    if (lane == 0) {
        sm[wid] = m;
        ss[wid] = s;
    }
#pragma unroll
    for (int i = 0; i < N; i++) {
        int d = lane + WARP * i;
        if (d < D)
            sacc[wid][d] = acc[i];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < W; w++)
        M = fmaxf(M, sm[w]);
    __shared__ float wf[W];   /* each warp's weight exp(m_w - M), computed once (v14) */
    if (threadIdx.x < W)
        wf[threadIdx.x] = sm[threadIdx.x] == -INFINITY ? 0.0f : expf(sm[threadIdx.x] - M);
    __syncthreads();
    float S = 0.0f;
    for (int w = 0; w < W; w++)
        S += sm[w] == -INFINITY ? 0.0f : ss[w] * wf[w];
    if (out && threadIdx.x == 0) {
        out[0] = M;
        out[1] = S;
    }
    const float inv = S > 0.0f ? 1.0f / S : 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {   /* warp-uniform when D % 32 == 0 */
        float v = 0.0f;
        for (int w = 0; w < W; w++)
            if (sm[w] != -INFINITY)
                v += sacc[w][d] * wf[w];
        if (out) {
            out[2 + d] = v;
        } else {
            orow[d] = v * inv;
            if (xq)
                q8_store1(v * inv, i0 + d, xq, xd);
        }
    }
}

/*
 * grid (n_head, n_tok, n_chunks), ATTN_WARPS warps: the block takes chunk c of
 * the token's visible keys, a warp one key at a time (lanes over dims) with an
 * online softmax; the warps merge in shared memory and write (m, s, acc[D]) to
 * the partial row, which k_attn_combine merges over the chunks.
 */
__global__ void __launch_bounds__(ATTN_WARPS * WARP)
k_attn(const float *__restrict__ q, struct cuk_kv kv, const int32_t *pos, int n_head, int group, int D, int kv_dim,
       float scale, float softcap, int window, float *partial)
{
    pdl_enter();
    __shared__ float sm[ATTN_WARPS], ss[ATTN_WARPS];
    __shared__ float sacc[ATTN_WARPS][CUK_MAX_HEAD_DIM];
    int h = blockIdx.x, t = blockIdx.y, c = blockIdx.z, nch = gridDim.z;
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    int32_t p = pos[t];
    int32_t j0 = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    int32_t nk = p - j0 + 1;
    int32_t chunk = (nk + nch - 1) / nch;
    int32_t a = j0 + c * chunk, e = min(p + 1, a + chunk);
    int kvh = h / group;
    const int32_t *tab = kv.btab + kv.tok_bt[t];
    const __half *pool = (const __half *)kv.pool + (size_t)kvh * D;
    const float *qr = q + ((size_t)t * n_head + h) * D;
    float qv[ATTN_PER_LANE], acc[ATTN_PER_LANE];
    attn_q_load(qr, D, lane, qv, acc);
    float m = -INFINITY, s = 0.0f;
    for (int32_t j = a + wid; j < e; j += ATTN_WARPS) {
        size_t kro = kv_row(kv, tab, j, kv_dim, 0);
        attn_key(qv, pool + kro, pool + kro + (size_t)CUK_KV_BLOCK * kv_dim, D, lane, scale, softcap, &m, &s, acc);
    }
    float *pr = partial + (((size_t)t * n_head + h) * nch + c) * (size_t)(D + 2);
    attn_warps_merge<ATTN_WARPS>(m, s, acc, D, sm, ss, sacc, pr);
}

/*
 * Merges the nch chunks' (m, s, acc[D]) of one (token, head) at pr into
 * orow[0..D) (element i0 of the Q8 rows when xq != NULL, D % 32 == 0): the
 * chunk weights exp(m_c - M) come from warp 0 (nch <= 32) through shared wc.
 * Called by every thread of a block; partial rows read through L2 (another
 * block of the same launch may have written them). MB (v10): every chunk's
 * value of a dimension is loaded before the first is used (the loads behind
 * `wc[c] != 0` ran one L2 round trip after another: 32 in a row at 32 chunks),
 * then summed in the same order: bit-identical.
 */
template <bool MB>
static __device__ void attn_merge(const float *pr, int nch, int D, float *orow, size_t i0, int8_t *xq, float *xd)
{
    __shared__ float wc[CUK_ATTN_MAX_CHUNKS];
    __shared__ float inv_s;
    if (threadIdx.x < WARP) {
        int c = threadIdx.x;
        float m = c < nch ? __ldcg(pr + (size_t)c * (D + 2)) : -INFINITY;
        float sc = MB && c < nch ? __ldcg(pr + (size_t)c * (D + 2) + 1) : 0.0f;   /* in flight with m */
        float M = m;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
        float f = m == -INFINITY ? 0.0f : expf(m - M);
        float S = warp_sum(c < nch ? (MB ? sc : __ldcg(pr + (size_t)c * (D + 2) + 1)) * f : 0.0f);
        wc[c] = f;
        if (c == 0)
            inv_s = S > 0.0f ? 1.0f / S : 0.0f;
    }
    __syncthreads();
    float inv = inv_s;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {   /* warp-uniform when D % 32 == 0 */
        float v = 0.0f;
        if (MB) {
            float pv[CUK_ATTN_MAX_CHUNKS];
#pragma unroll
            for (int c = 0; c < CUK_ATTN_MAX_CHUNKS; c++)
                pv[c] = c < nch ? __ldcg(pr + (size_t)c * (D + 2) + 2 + d) : 0.0f;
#pragma unroll
            for (int c = 0; c < CUK_ATTN_MAX_CHUNKS; c++)
                if (c < nch && wc[c] != 0.0f)
                    v += pv[c] * wc[c];
        } else {
            for (int c = 0; c < nch; c++)
                if (wc[c] != 0.0f)
                    v += __ldcg(pr + (size_t)c * (D + 2) + 2 + d) * wc[c];
        }
        orow[d] = v * inv;
        if (xq)
            q8_store1(v * inv, i0 + d, xq, xd);
    }
}

/* the v10 decode-attention variants: -1 = the environment's (measurement knobs read once) */
static int attn_dec_kb = -1, attn_dec_mb = -1;

extern "C" void cuk_attn_dec_set(int kb, int mb)
{
    attn_dec_kb = kb < 0 ? -1 : kb != 0;
    attn_dec_mb = mb < 0 ? -1 : mb != 0;
}

/* A decode-attention measurement knob: the integer in environment variable `name`, else dflt when
 * it is unset or empty. Each reader below keeps its value (read once per process). */
static int attn_env(const char *name, int dflt)
{
    const char *e = getenv(name);
    return e && *e ? atoi(e) : dflt;
}

/* AARMD_CUDA_DEC_MERGE: 1 the merge's loads batched (MB), 0 one by one; unset: ATTN_MERGE_BATCH_DEFAULT (batched) */
static int attn_merge_batch(void)
{
    static int env = -1;
    if (env < 0)
        env = attn_env("AARMD_CUDA_DEC_MERGE", ATTN_MERGE_BATCH_DEFAULT) == 1;
    return attn_dec_mb >= 0 ? attn_dec_mb : env;
}

/* AARMD_CUDA_DEC_PF=0: the batched decode attention loads its first keys after the wait, as v10 (else
 * before it, for head_dim <= 64: docs/cuda-notes.md v11-lead) */
static int attn_prefetch(void)
{
    static int env = -1;
    if (env < 0)
        env = attn_env("AARMD_CUDA_DEC_PF", 1) != 0;
    return env;
}

/* AARMD_CUDA_DEC_WIDE=0: a one-chunk decode attention with ATTN_WARPS warps as the split ones (a
 * measurement knob; else ATTN_WIDE warps share its keys: docs/cuda-notes.md v14-lead) */
static int attn_wide(void)
{
    static int env = -1;
    if (env < 0)
        env = attn_env("AARMD_CUDA_DEC_WIDE", 1) != 0;
    return env;
}

/* AARMD_CUDA_DEC_KB=1: the decode attention's keys one at a time (else batched) */
static int attn_keys_batch(void)
{
    static int env = -1;
    if (env < 0)
        env = attn_env("AARMD_CUDA_DEC_KB", 0) != 1;
    return attn_dec_kb >= 0 ? attn_dec_kb : env;
}

/*
 * block per (head, token): merge the chunks' (m, s, acc). When xq != NULL
 * (D % 32 == 0) the output rows are also quantized per 32 for the wo matvec,
 * as k_quantize_q8 would (bit-identical), so no quantize launch follows.
 */
template <bool MB>
__global__ void k_attn_combine(const float *partial, int n_head, int D, int nch, float *out, int8_t *xq, float *xd)
{
    pdl_enter();
    int h = blockIdx.x, t = blockIdx.y;
    size_t i0 = ((size_t)t * n_head + h) * D;
    attn_merge<MB>(partial + ((size_t)t * n_head + h) * nch * (size_t)(D + 2), nch, D, out + i0, i0, xq, xd);
}

extern "C" void cuk_attn_combine(cudaStream_t s, const float *partial, int n_tok, int n_head, int D, int n_chunks,
                                 float *out, void *xq, float *xd)
{
    if (D % 32)
        xq = NULL, xd = NULL;
    dim3 g2((unsigned)n_head, (unsigned)n_tok);
    if (attn_merge_batch())
        pdl_launch(k_attn_combine<true>, g2, 128, s, partial, n_head, D, n_chunks, out, (int8_t *)xq, xd);
    else
        pdl_launch(k_attn_combine<false>, g2, 128, s, partial, n_head, D, n_chunks, out, (int8_t *)xq, xd);
}

/*
 * The rotary factors of a warp's lanes (dims d = lane + 32 i, i < N): cos and
 * sin of d's pair at position p; (1, 0) past n_rot. Global loads of the table
 * (or the double-precision math past it), no shared memory: made before the
 * attention's wait.
 */
template <int N>
static __device__ __forceinline__ void rope_lane(const struct cuk_rope &r, int32_t p, int lane, float (&c)[N],
                                                 float (&sn)[N])
{
    int half = r.n_rot / 2, neox = r.kind == AARMD_ROPE_NEOX;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int d = lane + WARP * i;
        c[i] = 1.0f;
        sn[i] = 0.0f;
        if (d < 2 * half)
            rope_cs(r, p, neox ? (d < half ? d : d - half) : d / 2, &c[i], &sn[i]);
    }
}

/* x (the warp's row, lanes' dims as rope_lane's) rotated in place by rope_lane's factors as
 * k_rope_store rotates it: the pair's other element through the warp's scratch row scr[D] of
 * shared memory (no block barrier). */
template <int N>
static __device__ __forceinline__ void rope_warp(float (&x)[N], const float (&c)[N], const float (&sn)[N],
                                                 const struct cuk_rope &r, int D, int lane, float *scr)
{
    int half = r.n_rot / 2, neox = r.kind == AARMD_ROPE_NEOX;
#pragma unroll
    for (int i = 0; i < N; i++)
        if (lane + WARP * i < D)
            scr[lane + WARP * i] = x[i];
    __syncwarp();
#pragma unroll
    for (int i = 0; i < N; i++) {
        int d = lane + WARP * i;
        if (d < 2 * half) {
            int first = neox ? d < half : !(d & 1);
            float o = scr[neox ? (first ? d + half : d - half) : d ^ 1];
            x[i] = first ? rope_rot(1, x[i], o, c[i], sn[i]) : rope_rot(0, o, x[i], c[i], sn[i]);
        }
    }
    __syncwarp();
}

/*
 * The v8 decode attention: grid (n_head, n_tok, n_chunks) as k_attn, for
 * tokens of distinct sequences (so no token reads a key another token of the
 * launch writes). rope != 0: q and k arrive unrotated (q [n_tok][n_head*D],
 * k and v [n_tok][kv_dim] F32): each warp takes its lanes' rotary factors
 * before the wait on the previous kernel (pos[] comes from the step upload,
 * complete by then) and rotates q in registers (v15: no shared rows, no block
 * barrier before the keys); the warps of the block whose chunk holds the
 * token's own position rotate k too and round k and v to F16 in registers,
 * used for that key; the group's first head's block also stores them in the
 * cache (no block of the launch reads that cache row, so there is no race).
 * rope == 0: q, k already rotated and stored (k_rope_store). cnt != NULL
 * ([n_tok*n_head], zero at launch, left zero): the last block of each
 * (token, head) to finish merges the chunks into out (+ Q8 rows): no combine
 * launch; with one chunk (v14) the block writes its row itself, no partial
 * row or counter. W warps per block (ATTN_WARPS; ATTN_WIDE for one chunk: the
 * warps share the keys). PF: the warp's first KB keys (but the token's own)
 * are loaded before the wait, so their round trip overlaps the previous
 * kernel (earlier steps wrote those rows).
 */
template <int NPL, int KB, bool MB, bool PF, int W>
__global__ void __launch_bounds__(W * WARP, W == ATTN_WIDE ? 1 : 32 / W)   /* one chunk: a block per head */
k_attn_dec(const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v, int rope,
           struct cuk_rope r, struct cuk_kv kv, const int32_t *pos, int n_head, int group, int D, int kv_dim,
           float scale, float softcap, int window, float *partial, unsigned *cnt, float *out, int8_t *xq, float *xd)
{
    __shared__ float sm[W], ss[W];
    __shared__ float sacc[W][CUK_MAX_HEAD_DIM];   /* also each warp's rotary scratch row before the merge */
    __shared__ unsigned last;
    int h = blockIdx.x, t = blockIdx.y, c = blockIdx.z, nch = gridDim.z;
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    int32_t p = pos[t];   /* the step upload: complete before the previous kernel started (pdl.cuh) */
    int32_t j0 = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    int32_t nk = p - j0 + 1;
    int32_t chunk = (nk + nch - 1) / nch;
    int32_t a = j0 + c * chunk, e = min(p + 1, a + chunk);
    int own = rope && a <= p && p < e;   /* this chunk holds the token's own key, unstored (block-uniform) */
    int rot = rope && r.kind != AARMD_ROPE_NONE;
    float rc[NPL], rs[NPL];
    if (rot)
        rope_lane(r, p, lane, rc, rs);
    int kvh = h / group;
    const int32_t *tab = kv.btab + kv.tok_bt[t];   /* step upload, as pos */
    const __half *pool = (const __half *)kv.pool + (size_t)kvh * D;
    /* key jj of this warp's batch slot b into kk[b], vv[b] from the cache */
    __half kk[KB][NPL], vv[KB][NPL];
    auto load_key = [&](int b, int32_t jj) {
        const __half *kp = pool + kv_row(kv, tab, jj, kv_dim, 0), *vp = kp + (size_t)CUK_KV_BLOCK * kv_dim;
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            int d = lane + WARP * i;
            kk[b][i] = d < D ? kp[d] : __float2half_rn(0.0f);
            vv[b][i] = d < D ? vp[d] : __float2half_rn(0.0f);
        }
    };
    /* the warp's keys j1, j1 + W, ... < ek from the cache; the token's own (own: p = e - 1, the last key
     * of whichever warp it falls to) after them from registers */
    const int32_t j1 = a + wid, ek = own ? p : e;
    if (PF) {   /* v11: the first batch's keys before the wait, but the token's own (this launch's) */
#pragma unroll
        for (int b = 0; b < KB; b++)
            if (j1 + b * W < ek && j1 + b * W != p)
                load_key(b, j1 + b * W);
    }
    pdl_enter();
    float qv[NPL], acc[NPL], kx[NPL], vx[NPL];
    attn_q_load(q + ((size_t)t * n_head + h) * D, D, lane, qv, acc);
    if (own) {   /* block-uniform: the token's k and v rows, in flight with q */
        const float *kr = k + (size_t)t * kv_dim + (size_t)kvh * D, *vr = v + (size_t)t * kv_dim + (size_t)kvh * D;
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            int d = lane + WARP * i;
            kx[i] = d < D ? kr[d] : 0.0f;
            vx[i] = d < D ? vr[d] : 0.0f;
        }
    }
    if (rot) {
        rope_warp(qv, rc, rs, r, D, lane, sacc[wid]);
        if (own)
            rope_warp(kx, rc, rs, r, D, lane, sacc[wid]);
    }
    __half *own_h = (__half *)sacc[wid];   /* own: the F16 k and v rows, until the merge */
    if (own) {
        int st = h % group == 0 && wid == 0;   /* one warp per (token, kv head) stores the rows */
        __half *kc = (__half *)kv.pool + kv_row(kv, tab, p, kv_dim, 0) + (size_t)kvh * D;
        __half *vc = (__half *)kv.pool + kv_row(kv, tab, p, kv_dim, 1) + (size_t)kvh * D;
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            int d = lane + WARP * i;
            if (d < D) {
                own_h[d] = __float2half_rn(kx[i]);
                own_h[D + d] = __float2half_rn(vx[i]);
                if (st) {
                    kc[d] = own_h[d];
                    vc[d] = own_h[D + d];
                }
            }
        }
        __syncwarp();
    }
    float m = -INFINITY, sum = 0.0f;
    /* a warp's keys j = a + wid + W i in order, KB at a time: every K/V (and block-table) load of a
     * batch is issued before the first key's dot, so a warp waits for memory about once per batch */
    for (int32_t j = j1; j < ek; j += W * KB) {
#pragma unroll
        for (int b = 0; b < KB; b++) {
            int32_t jj = j + b * W;
            if (jj < ek && (!PF || j != j1 || jj == p))   /* PF: the first batch is in, but the key at p */
                load_key(b, jj);
        }
#pragma unroll
        for (int b = 0; b < KB; b++)
            if (j + b * W < ek)
                attn_key_r(qv, kk[b], vv[b], D, lane, scale, softcap, &m, &sum, acc);
    }
    if (own && (p - j1) % W == 0) {   /* warp-uniform: the own key is this warp's (p >= j1: p >= a) */
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            int d = lane + WARP * i;
            kk[0][i] = d < D ? own_h[d] : __float2half_rn(0.0f);
            vv[0][i] = d < D ? own_h[D + d] : __float2half_rn(0.0f);
        }
        attn_key_r(qv, kk[0], vv[0], D, lane, scale, softcap, &m, &sum, acc);
    }
    __syncwarp();   /* own_h read before the merge writes the warp's row over it */
    if (cnt && nch == 1) {   /* the only chunk: the row itself, no partial row to merge */
        size_t i0 = ((size_t)t * n_head + h) * D;
        attn_warps_merge<W>(m, sum, acc, D, sm, ss, sacc, NULL, out + i0, i0, xq, xd);
        return;
    }
    float *pr = partial + ((size_t)t * n_head + h) * nch * (size_t)(D + 2);
    attn_warps_merge<W>(m, sum, acc, D, sm, ss, sacc, pr + (size_t)c * (D + 2));
    if (!cnt)
        return;
    __syncthreads();   /* the block's partial row written; thread 0's fence is cumulative over it */
    if (threadIdx.x == 0) {
        unsigned *ct = cnt + (size_t)t * n_head + h;
        __threadfence();
        last = atomicAdd(ct, 1u) == (unsigned)nch - 1;
        if (last) {
            *ct = 0;   /* zero again for the next layer's launch */
            __threadfence();   /* acquire: the other blocks' rows, read below through L2 */
        }
    }
    __syncthreads();
    if (!last)
        return;
    size_t i0 = ((size_t)t * n_head + h) * D;
    attn_merge<MB>(pr, nch, D, out + i0, i0, xq, xd);
}

/*
 * The grouped variant: grid (n_kv, n_tok, n_chunks), one warp per query head
 * of the kv head's group, every warp walking the same keys of chunk c, so
 * each K/V row comes from DRAM/L2 once per group and from L1 for the other
 * warps (k_attn reads it once per query head). Writes the same partial rows.
 */
__global__ void __launch_bounds__(CUK_ATTN_MAX_GROUP * WARP)
k_attn_g(const float *__restrict__ q, struct cuk_kv kv, const int32_t *pos, int n_head, int group, int D, int kv_dim,
         float scale, float softcap, int window, float *partial)
{
    pdl_enter();
    int kvh = blockIdx.x, t = blockIdx.y, c = blockIdx.z, nch = gridDim.z;
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    int h = kvh * group + wid;
    int32_t p = pos[t];
    int32_t j0 = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    int32_t nk = p - j0 + 1;
    int32_t chunk = (nk + nch - 1) / nch;
    int32_t a = j0 + c * chunk, e = min(p + 1, a + chunk);
    const int32_t *tab = kv.btab + kv.tok_bt[t];
    const __half *pool = (const __half *)kv.pool + (size_t)kvh * D;
    const float *qr = q + ((size_t)t * n_head + h) * D;
    float qv[ATTN_PER_LANE], acc[ATTN_PER_LANE];
    attn_q_load(qr, D, lane, qv, acc);
    float m = -INFINITY, sum = 0.0f;
    for (int32_t j = a; j < e; j++) {
        size_t kro = kv_row(kv, tab, j, kv_dim, 0);
        attn_key(qv, pool + kro, pool + kro + (size_t)CUK_KV_BLOCK * kv_dim, D, lane, scale, softcap, &m, &sum, acc);
    }
    float *out = partial + (((size_t)t * n_head + h) * nch + c) * (size_t)(D + 2);
    if (lane == 0) {
        out[0] = m;
        out[1] = sum;
    }
#pragma unroll
    for (int i = 0; i < ATTN_PER_LANE; i++) {
        int d = lane + WARP * i;
        if (d < D)
            out[2 + d] = acc[i];
    }
}

extern "C" void cuk_attention(cudaStream_t s, const float *q, const struct cuk_kv *kv, const int32_t *pos, int n_tok,
                              int n_head, int n_kv, int D, float scale, float softcap, int window, int n_chunks,
                              int grouped, float *partial, float *out, void *xq, float *xd)
{
    if (D % 32)
        xq = NULL, xd = NULL;
    int group = n_head / n_kv;
    if (grouped && group <= CUK_ATTN_MAX_GROUP) {
        dim3 grid((unsigned)n_kv, (unsigned)n_tok, (unsigned)n_chunks);
        pdl_launch(k_attn_g, grid, group * WARP, s, q, *kv, pos, n_head, group, D, n_kv * D, scale, softcap, window,
                   partial);
    } else {
        dim3 grid((unsigned)n_head, (unsigned)n_tok, (unsigned)n_chunks);
        pdl_launch(k_attn, grid, ATTN_WARPS * WARP, s, q, *kv, pos, n_head, group, D, n_kv * D, scale, softcap,
                   window, partial);
    }
    cuk_attn_combine(s, partial, n_tok, n_head, D, n_chunks, out, xq, xd);
}

/* One launch of k_attn_dec: wide (the launch's only chunk, v14) with ATTN_WIDE warps sharing the
 * keys, KBW at a time, PFW loaded before the wait (it merges nothing: no merge variant), else
 * ATTN_WARPS with KB and PF, the merge's loads batched or not */
template <int NPL, int KB, bool PF, int KBW, bool PFW, typename... A>
static void attn_dec_go(bool wide, bool mb, dim3 grid, cudaStream_t s, A... a)
{
    if (wide)
        pdl_launch(k_attn_dec<NPL, KBW, false, PFW, ATTN_WIDE>, grid, ATTN_WIDE * WARP, s, a...);
    else if (mb)
        pdl_launch(k_attn_dec<NPL, KB, true, PF, ATTN_WARPS>, grid, ATTN_WARPS * WARP, s, a...);
    else
        pdl_launch(k_attn_dec<NPL, KB, false, PF, ATTN_WARPS>, grid, ATTN_WARPS * WARP, s, a...);
}

extern "C" void cuk_attention_dec(cudaStream_t s, const float *q, const float *k, const float *v, int rope,
                                  const struct cuk_rope *r, const struct cuk_kv *kv, const int32_t *pos, int n_tok,
                                  int n_head, int n_kv, int D, float scale, float softcap, int window, int n_chunks,
                                  float *partial, unsigned *cnt, float *out, void *xq, float *xd)
{
    if (D % 32)
        xq = NULL, xd = NULL;
    dim3 grid((unsigned)n_head, (unsigned)n_tok, (unsigned)n_chunks);
    /* dims per lane (D / 32 rounded up to 1, 2, 4, 8), keys a warp loads at once and the merge's
     * loads (v10: attn_keys_batch, attn_merge_batch) */
    const int one = !attn_keys_batch(), pf = attn_prefetch();
    const bool mb = attn_merge_batch(), wide = cnt && n_chunks == 1 && attn_wide();
#define ATTN_DEC(NPL_, KB_, PF_, KBW_, PFW_)                                                                        \
    attn_dec_go<NPL_, KB_, PF_, KBW_, PFW_>(wide, mb, grid, s, q, k, v, rope, *r, *kv, pos, n_head, n_head / n_kv, D,  \
                                            n_kv * D, scale, softcap, window, partial, cnt, out, (int8_t *)xq, xd)
    /* v15: the one-chunk launch (a block per head and token: up to 128 registers) loads 8 keys a warp
     * before the wait at every head_dim <= 128 (its 16 warps: 128 keys, short_keys' default, in one batch) */
    if (D <= 32)
        one ? ATTN_DEC(1, 1, false, 1, false) : pf ? ATTN_DEC(1, 8, true, 8, true) : ATTN_DEC(1, 8, false, 8, false);
    else if (D <= 64)
        one ? ATTN_DEC(2, 1, false, 1, false) : pf ? ATTN_DEC(2, 8, true, 8, true) : ATTN_DEC(2, 8, false, 8, false);
    else if (D <= 128)   /* split: no prefetch (at 64 registers it spilled and lost 1.2% on 8B Q4_K tg128) */
        one ? ATTN_DEC(4, 1, false, 1, false) : pf ? ATTN_DEC(4, 4, false, 8, true) : ATTN_DEC(4, 4, false, 8, false);
    else
        ATTN_DEC(8, 1, false, 1, false);   /* 2 keys spill at 64 registers */
#undef ATTN_DEC
    if (!cnt)
        cuk_attn_combine(s, partial, n_tok, n_head, D, n_chunks, out, xq, xd);
}
