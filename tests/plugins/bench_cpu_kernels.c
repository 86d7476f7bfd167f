/*
 * bench_cpu_kernels.c — times cpu_matmul for one weight shape over SIMD levels
 * and thread counts (built by make check, not run by it).
 * usage: bench_cpu_kernels TYPE N_IN N_OUT N_TOK [THREADS...]   e.g. Q4_K 2048 8192 1 1 2
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

static double clock_s(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now_s(void) { return clock_s(CLOCK_MONOTONIC); }

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s TYPE N_IN N_OUT N_TOK [THREADS...]\n", argv[0]);
        return 2;
    }
    uint32_t type = 0;
    for (; type < CPU_TYPE_SLOTS; type++)
        if (cpu_type_supported(type) && strcmp(cpu_type_name(type), argv[1]) == 0)
            break;
    if (type == CPU_TYPE_SLOTS) {
        fprintf(stderr, "unknown or unsupported type %s\n", argv[1]);
        return 2;
    }
    int64_t n_in = atoll(argv[2]), n_out = atoll(argv[3]);
    uint32_t n_tok = (uint32_t)atoi(argv[4]);
    size_t rb = cpu_type_row_bytes(type, n_in);
    if (rb == 0 || n_out <= 0 || n_tok == 0) {
        fprintf(stderr, "bad shape: n_in must be whole %s blocks, n_out and n_tok >= 1\n", argv[1]);
        return 2;
    }
    size_t nbytes = rb * (size_t)n_out;
    uint8_t *w = malloc(nbytes);
    float *x = malloc((size_t)n_in * n_tok * sizeof *x), *y = malloc((size_t)n_out * n_tok * sizeof *y);
    void *scratch = malloc(cpu_matmul_scratch_bytes(type, n_in, n_tok) + 1);
    if (!w || !x || !y || !scratch)
        return 1;
    uint32_t s = 12345;
    for (size_t i = 0; i < nbytes; i++)
        w[i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 16);
    if (type == AARMD_TYPE_F32)
        for (int64_t i = 0; i < n_in * n_out; i++)
            ((float *)w)[i] = 0.01f;
    for (size_t i = 0; i < (size_t)n_in * n_tok; i++)
        x[i] = (float)((int)(i % 17) - 8) * 0.1f;
    struct aarmd_tensor t = {.name = "bench", .type = type, .n_dims = 2, .ne = {n_in, n_out, 1, 1},
                             .data = w, .nbytes = nbytes};
    double flop = 2.0 * (double)n_in * (double)n_out * n_tok;
    printf("%s %lld x %lld, n_tok %u, weights %.1f MB\n", argv[1], (long long)n_in, (long long)n_out, n_tok,
           nbytes / 1e6);
    int nthreads = argc > 5 ? argc - 5 : 1;
    for (int ti = 0; ti < nthreads; ti++) {
        int th = argc > 5 ? atoi(argv[5 + ti]) : 1;
        struct cpu_pool *pool = cpu_pool_new(th);
        if (!pool)
            return 1;
        for (int l = 0; l < 4; l++) {
            enum cpu_simd simd = (enum cpu_simd)l;
            if (!cpu_simd_available(simd))
                continue;
            cpu_matmul(pool, simd, &t, x, n_tok, y, scratch);   /* warm up */
            /* best of 7 batches of ~0.15 s: the machine is shared, the minimum is the kernel */
            double per = 1e30, cpu = 1e30;
            for (int batch = 0; batch < 7; batch++) {
                int iters = 0;
                double t0 = now_s(), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID), el;
                do {
                    cpu_matmul(pool, simd, &t, x, n_tok, y, scratch);
                    iters++;
                    el = now_s() - t0;
                } while (el < 0.15 && iters < 10000);
                if (el / iters < per)
                    per = el / iters;
                double c = (clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0) / iters;
                if (c < cpu)
                    cpu = c;
            }
            printf("  %-7s %d thr: %8.3f ms (cpu %8.3f ms)  %7.2f GFLOP/s  %6.2f GB/s weights  %8.1f tok/s\n",
                   cpu_simd_name(simd), th, per * 1e3, cpu * 1e3, flop / per / 1e9, nbytes / per / 1e9, n_tok / per);
        }
        cpu_pool_free(pool);
    }
    free(w); free(x); free(y); free(scratch);
    return 0;
}
