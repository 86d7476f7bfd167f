/*
 * pdl.cuh — programmatic dependent launch (Hopper, sm_90) for the CUDA
 * backend's kernels: the next kernel in the stream is launched while the
 * previous one still runs and waits on the device, which hides most of the
 * launch gap between the many short decode kernels. Not a scheduler.
 *
 * Contract: every kernel of shaders/cuda calls pdl_enter() as its first
 * statement, before touching any global memory; then a launch through
 * pdl_launch is ordered after all earlier work in the stream exactly as a
 * plain launch is (griddepcontrol.wait returns once the previous grid has
 * completed and its writes are visible; that grid itself waited for its
 * predecessor, so the order is transitive).
 */
#ifndef AARMD_CUDA_PDL_CUH
#define AARMD_CUDA_PDL_CUH

#include <cuda_runtime.h>

/* nonzero: launch with the programmatic-serialization attribute (matmul.cu, cuk_set_pdl) */
extern int cuk_pdl_on;
/* nonzero: each kernel lets the next one launch as soon as it has started
 * (else at its blocks' exit); one copy per .cu, set by pdl_set_early */
static __constant__ int cuk_pdl_early;

static inline void pdl_set_early(int early)
{
    cudaMemcpyToSymbol(cuk_pdl_early, &early, sizeof early);
}

__device__ __forceinline__ void pdl_enter()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    if (cuk_pdl_early)
        asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* A launch of k with smem bytes of dynamic shared memory, programmatic when cuk_pdl_on. */
template <typename... KA, typename... A>
static inline cudaError_t pdl_launch_smem(void (*k)(KA...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                                          A... args)
{
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = at;
    cfg.numAttrs = cuk_pdl_on ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, k, static_cast<KA>(args)...);
}

template <typename... KA, typename... A>
static inline void pdl_launch(void (*k)(KA...), dim3 grid, dim3 block, cudaStream_t s, A... args)
{
    pdl_launch_smem(k, grid, block, 0, s, args...);
}

#endif
