/*
 * warp.cuh — the warp width and a warp's butterfly sum (every lane gets it),
 * for the per-row kernels (ops.cu, attn_dec.cu). Device helpers only.
 */
#ifndef AARMD_CUDA_WARP_CUH
#define AARMD_CUDA_WARP_CUH

#define WARP 32

static __device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

#endif
