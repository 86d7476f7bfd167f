/*
 * tma_feed.cu — a stand-alone probe of how fast one persistent block per SM can stream a Q4_K
 * matrix's weights into a shared-memory ring, the feed of the int8 GEMM (shaders/cuda/mmq_k.cu),
 * with nothing computed: the consumer warps only release each stage. Two feeds of the same
 * bytes (gate_up of the Llama-3.1-8B shape: 28,672 rows x 16 super-blocks of 144 bytes):
 *   2d   the GEMM's: one tensor copy a stage, 128 rows x 144 bytes of the row-major matrix;
 *   bulk one 1D bulk copy a stage of 18,432 contiguous bytes: the matrix laid out again as
 *        [row tile][super-block][128 rows x 144 bytes] (what a load-time copy would hold).
 * Each with rings of 2..8 stages. Built and run on the GPU machine (docs/cuda-notes.md v19-lead):
 *   nvcc -O3 -std=c++17 -arch=sm_90 -I. -o /tmp/tma_feed tools/tma_feed.cu && /tmp/tma_feed
 */
#include <stdio.h>

#include "shaders/cuda/mmq_common.cuh"

#define ROWS 128
#define UB 144
#define SLAB (ROWS * UB)
#define MAX_NS 8

/* grid: one block per SM, warp 0 the producer, warps 1.. consumers; stage i = work unit
 * blockIdx.x + i * gridDim.x of n_units (row tile = unit / nu, super-block = unit % nu) */
__global__ void __launch_bounds__(160, 1) k_feed(int bulk, int ns, int nu, int n_units,
                                                 const __grid_constant__ CUtensorMap tmw, const uint8_t *slabs,
                                                 unsigned *sink)
{
    extern __shared__ __align__(128) uint8_t sm[];
    uint64_t *full = reinterpret_cast<uint64_t *>(sm + (size_t)ns * SLAB), *empty = full + ns;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nc = blockDim.x / 32 - 1;
    mb_ring_init<false>(full, empty, NULL, ns, nc);
    const int mine = n_units > (int)blockIdx.x ? (n_units - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
    if (warp == 0) {
        if (lane == 0)
            for (int i = 0; i < mine; i++) {
                const int s = i % ns, unit = (int)blockIdx.x + i * (int)gridDim.x;
                if (i >= ns)
                    mb_wait(&empty[s], ((i - ns) / ns) & 1);
                mb_arrive_tx(&full[s], SLAB);
                if (bulk)
                    bulk_g2s(sm + (size_t)s * SLAB, slabs + (size_t)unit * SLAB, SLAB, &full[s]);
                else
                    tma_2d(sm + (size_t)s * SLAB, &tmw, (unit % nu) * (UB / 2), (unit / nu) * ROWS, &full[s]);
            }
        return;
    }
    unsigned x = 0;
    for (int i = 0; i < mine; i++) {
        const int s = i % ns;
        mb_wait(&full[s], (i / ns) & 1);
        x += sm[(size_t)s * SLAB + lane * 4 + warp];   /* one byte read: the stage is used */
        __syncwarp();
        if (lane == 0)
            mb_arrive(&empty[s]);
    }
    if (x == 0xFFFFFFFFu)
        *sink = x;
}

int main(void)
{
    const int n_out = 28672, nu = 16, n_units = n_out / ROWS * nu;
    const size_t bytes = (size_t)n_out * nu * UB;
    uint8_t *w = NULL, *slabs = NULL;
    unsigned *sink = NULL;
    int sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    if (cudaMalloc(&w, bytes) != cudaSuccess || cudaMalloc(&slabs, bytes) != cudaSuccess ||
        cudaMalloc(&sink, 4) != cudaSuccess) {
        fprintf(stderr, "tma_feed: %s\n", cudaGetErrorString(cudaGetLastError()));
        return 1;
    }
    cudaMemset(w, 0x5A, bytes);
    cudaMemset(slabs, 0x5A, bytes);
    CUtensorMap tmw;
    memset(&tmw, 0, sizeof tmw);
    if (!mmq_tmap_2d(&tmw, CU_TENSOR_MAP_DATA_TYPE_UINT16, w, (uint64_t)nu * UB / 2, (uint64_t)n_out,
                     (uint64_t)nu * UB, UB / 2, ROWS, CU_TENSOR_MAP_SWIZZLE_NONE)) {
        fprintf(stderr, "tma_feed: no tensor map\n");
        return 1;
    }
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    printf("weights %.1f MB, %d units of %d bytes, %d SMs (one block each)\n", bytes / 1e6, n_units, SLAB, sms);
    for (int nc = 1; nc <= 4; nc *= 4)
        for (int bulk = 0; bulk < 2; bulk++)
            for (int ns = 2; ns <= MAX_NS; ns *= 2) {
                size_t smem = (size_t)ns * SLAB + 2 * ns * 8;
                cudaFuncSetAttribute(k_feed, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
                float best = 1e30f;
                for (int r = 0; r < 12; r++) {
                    cudaEventRecord(e0);
                    k_feed<<<sms, 32 * (nc + 1), smem>>>(bulk, ns, nu, n_units, tmw, slabs, sink);
                    cudaEventRecord(e1);
                    cudaEventSynchronize(e1);
                    float ms = 0;
                    cudaEventElapsedTime(&ms, e0, e1);
                    if (r >= 2 && ms < best)
                        best = ms;
                }
                cudaError_t err = cudaGetLastError();
                printf("%-4s stages %d consumers %d: %8.2f us  %7.1f GB/s%s%s\n", bulk ? "bulk" : "2d", ns, nc,
                       best * 1e3, bytes / (best * 1e-3) / 1e9, err ? "  " : "", err ? cudaGetErrorString(err) : "");
            }
    return 0;
}
