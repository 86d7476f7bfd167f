/*
 * cp_async.cuh — asynchronous global-to-shared copies (cp.async, sm_80+) for
 * the kernels that stream weights through shared memory (matvec.cu, mmq.cu).
 * Below sm_80 cp16 copies synchronously and cpa does nothing (callers there
 * take other kernels). Device code only.
 */
#ifndef AARMD_CP_ASYNC_CUH
#define AARMD_CP_ASYNC_CUH

__device__ __forceinline__ void cp16(void *smem, const void *gmem)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
#else
    *reinterpret_cast<uint4 *>(smem) = *reinterpret_cast<const uint4 *>(gmem);
#endif
}

/* cp.async of CP bytes (16: .cg, 4/8: .ca); ok == false writes zeros and reads nothing */
template <int CP> __device__ __forceinline__ void cpa(void *smem, const void *gmem, bool ok)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int n = ok ? CP : 0;
    if (CP == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(s), "l"(gmem), "n"(CP), "r"(n)
                     : "memory");
#else
    (void)smem; (void)gmem; (void)ok;
#endif
}

__device__ __forceinline__ void cp_commit()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N> __device__ __forceinline__ void cp_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

#endif /* AARMD_CP_ASYNC_CUH */
