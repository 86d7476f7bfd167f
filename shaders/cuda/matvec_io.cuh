/*
 * matvec_io.cuh — what the kernels around a matvec share: the Q8 rows of its
 * input (int8 per element, one F32 scale per 32, bit-identical to
 * k_quantize_q8 in matmul.cu) written by the kernels that produce it, and the
 * operands of its epilogue. Device helpers only.
 */
#ifndef AARMD_CUDA_MATVEC_IO_CUH
#define AARMD_CUDA_MATVEC_IO_CUH

#include <stdint.h>

/*
 * A run of 32 values held as float4 by 8 neighbouring lanes (y: elements 4f..4f+3 of the row):
 * the run's scale max|y| / 127 from shuffles among those lanes, each value rounded to y / scale
 * into xq[4f..4f+3] and the scale into xd[f / 8] by the run's first lane. All 8 lanes call it
 * (the shuffles); valid = 0 (a lane past the row's end) does the shuffles only.
 */
static __device__ __forceinline__ void q8_store4(float4 y, int valid, int f, int8_t *xq, float *xd)
{
    float am = fmaxf(fmaxf(fabsf(y.x), fabsf(y.y)), fmaxf(fabsf(y.z), fabsf(y.w)));
    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 1));
    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 2));
    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, 4));
    float d = am / 127.0f;
    if (valid) {
        char4 q;
        q.x = (signed char)(d > 0.0f ? __float2int_rn(y.x / d) : 0);
        q.y = (signed char)(d > 0.0f ? __float2int_rn(y.y / d) : 0);
        q.z = (signed char)(d > 0.0f ? __float2int_rn(y.z / d) : 0);
        q.w = (signed char)(d > 0.0f ? __float2int_rn(y.w / d) : 0);
        reinterpret_cast<char4 *>(xq)[f] = q;
        if ((f & 7) == 0)
            xd[f >> 3] = d;
    }
}

/*
 * Quantizes y (this lane's element i of a warp-aligned run of 32) per 32 into xq/xd exactly as
 * k_quantize_q8 (matmul.cu) does: the run's scale from a shuffle max over the warp, written by
 * lane 0. Every lane of the warp calls it.
 */
static __device__ __forceinline__ void q8_store1(float y, size_t i, int8_t *xq, float *xd)
{
    float a = fabsf(y);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
    float d = a / 127.0f;
    xq[i] = (int8_t)(d > 0.0f ? __float2int_rn(y / d) : 0);
    if ((threadIdx.x & 31) == 0)
        xd[i / 32] = d;
}

/*
 * The epilogue's operands of output row r, loaded by the thread that will store it (take) right
 * after the wait on the previous kernel, so their latency hides under the dot product: y0 =
 * y[r] when the product accumulates, b0 = bias[r] when there is a bias; 0 otherwise.
 */
static __device__ __forceinline__ void mv_epilogue_load(int take, int accum, const float *y, const float *bias, int r,
                                                        float *y0, float *b0)
{
    *y0 = 0.0f;
    *b0 = 0.0f;
    if (take) {
        if (accum)
            *y0 = y[r];
        if (bias)
            *b0 = bias[r];
    }
}

#endif
