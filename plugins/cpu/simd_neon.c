/*
 * simd_neon.c — NEON (AArch64 Advanced SIMD) dot kernels of the CPU backend.
 * Compiled on every host, empty except on aarch64.
 */
#include "kernels.h"

#if defined(__aarch64__)
void cpu_kernels_neon(struct cpu_kernel_tab *tab)
{
    (void)tab;
}
#else
typedef int cpu_simd_neon_empty;   /* ISO C wants a non-empty translation unit */
#endif
