/*
 * simd_avx512.c — AVX-512 (F, BW, VL, VNNI) dot kernels of the CPU backend
 * (x86-64 only; built with -mavx512*, called only after run-time detection).
 */
#include "kernels.h"

#if defined(__x86_64__)
void cpu_kernels_avx512(struct cpu_kernel_tab *tab)
{
    (void)tab;
}
#else
typedef int cpu_simd_avx512_empty;   /* ISO C wants a non-empty translation unit */
#endif
