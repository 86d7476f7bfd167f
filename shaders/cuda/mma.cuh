/*
 * mma.cuh — the tensor-core product the quantized GEMMs use (matvec.cu's
 * k_mmqh, mmq.cu's v8 GEMM): c[4] += A (16x16 F16, row) x B (16x8 F16, col)
 * with F32 accumulators, mma.sync m16n8k16, one warp. Nothing below sm_80
 * (callers there take other kernels). Device code only.
 */
#ifndef AARMD_MMA_CUH
#define AARMD_MMA_CUH

#include <stdint.h>

__device__ __forceinline__ void mma_f16(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

/* Zeroes n accumulator fragments of mma_f16 (or of the int8 product's F32 sums). */
template <int N> __device__ __forceinline__ void frag_zero(float (&c)[N][4])
{
#pragma unroll
    for (int n = 0; n < N; n++)
        c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.0f;
}

#endif /* AARMD_MMA_CUH */
