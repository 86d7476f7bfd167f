/*
 * cuda_bw.cu — a stand-alone probe of the card's device-to-device copy
 * bandwidth (cudaMemcpy of 1 GiB, bytes read + written), the roofline that
 * `aarmd-cli bench --bw` takes. Built by tools/device-run.sh, not by make.
 */
#include <cuda_runtime.h>
#include <stdio.h>

int main(void)
{
    const size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0, e1;
    cudaDeviceProp prop;
    int drv = 0;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || cudaMalloc(&a, bytes) != cudaSuccess ||
        cudaMalloc(&b, bytes) != cudaSuccess) {
        fprintf(stderr, "cuda_bw: %s\n", cudaGetErrorString(cudaGetLastError()));
        return 1;
    }
    cudaDriverGetVersion(&drv);
    cudaMemset(a, 1, bytes);
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int i = 0; i < 3; i++)
        cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    const int reps = 20;
    cudaEventRecord(e0);
    for (int i = 0; i < reps; i++)
        cudaMemcpy(i & 1 ? a : b, i & 1 ? b : a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, e0, e1);
    double gbps = 2.0 * (double)bytes * reps / (ms * 1e-3) / 1e9;
    printf("device %s, CUDA driver %d, %d SMs\n", prop.name, drv, prop.multiProcessorCount);
    printf("d2d copy of 1 GiB: %.1f GB/s (bytes read + written)\n", gbps);
    printf("BW_GBPS=%.0f\n", gbps);
    cudaFree(a);
    cudaFree(b);
    return 0;
}
