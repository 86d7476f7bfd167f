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

template <typename... KA, typename... A>
static inline void pdl_launch(void (*k)(KA...), dim3 grid, dim3 block, cudaStream_t s, A... args)
{
    if (!cuk_pdl_on) {
        k<<<grid, block, 0, s>>>(args...);
        return;
    }
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = 0;
    cfg.stream = s;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    cudaLaunchKernelEx(&cfg, k, static_cast<KA>(args)...);
}

#endif
