/*
 * mma.cuh — the tensor-core products the quantized GEMMs use, one warp each, fragment layouts
 * of the PTX ISA's mma.sync (lane = 4 g + t4): mma_f16 (matvec.cu's k_mmqh, mmq.cu's v8 GEMM)
 * c[4] += A (16x16 F16, row) x B (16x8 F16, col) with F32 sums; mma_s8 (mmq_i8.cu, mmq_k.cu)
 * the int8 m16n8k32 with int32 sums from a given start; mma_h8 the F16 m16n8k8; ldsm4 four 8x8
 * b16 matrices from shared memory (ldmatrix). Nothing below sm_80 (callers there take other
 * kernels). Device code only.
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

/* c[i] = c0 + (A x B)[i]: A 16x32 int8 (row: a[0] row g k 4t4.., a[1] row g+8, a[2] / a[3] the
 * same rows at k 16 + 4t4..), B 32x8 int8 (col: b0 k 4t4.. of column g, b1 k 16 + 4t4..);
 * c[0], c[1] row g columns 2t4, 2t4 + 1, c[2], c[3] row g + 8. */
__device__ __forceinline__ void mma_s8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1, int c0)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%10,%10,%10};\n"
        : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(c0));
#else
    c[0] = c[1] = c[2] = c[3] = c0;
    (void)a; (void)b0; (void)b1;
#endif
}

/* c[4] += A (16x8 F16: a0 row g, a1 row g + 8, k 2t4..) x B (8x8 F16: b0 k 2t4.. of column g) */
__device__ __forceinline__ void mma_h8(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t b0)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(b0));
#else
    (void)c; (void)a0; (void)a1; (void)b0;
#endif
}

/* ldmatrix .x4: lanes 8j..8j+7 give the shared-memory addresses of matrix j's 8 rows of 16 bytes;
 * r[j] = this lane's fragment of matrix j (row g, bytes 4t4..4t4+3) */
__device__ __forceinline__ void ldsm4(uint32_t (&r)[4], uint32_t addr)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#else
    r[0] = r[1] = r[2] = r[3] = 0;
    (void)addr;
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
