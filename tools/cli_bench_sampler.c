/*
 * cli_bench_sampler.c — `aarmd-cli bench-sampler`: samples per second of
 * core/sampler.c on one core, over random logits shaped like a model's
 * (Gaussian bulk plus a few peaked tokens). Reports CPU time (fair on a shared
 * machine) and wall time. No sampling logic lives here.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "rng.h"
#include "sampler.h"


struct bench_opts {
    uint32_t vocab, n, peaks, sets;
    double sigma, peak;
    struct aarmd_sampler_params sp;
};

static int usage(void)
{
    fprintf(stderr,
            "usage: aarmd-cli bench-sampler [--vocab 151936] [--n 20000] [--temperature 0.8]\n"
            "         [--top-p 0.9] [--top-k 0] [--min-p 0] [--repetition-penalty 1] [--logprobs 0]\n"
            "         [--seed 1] [--sigma 2.0] [--peak 14.0] [--peaks 8] [--sets 4]\n"
            "Logits: N(0, sigma^2) per token, plus `peaks` tokens at peak, peak-1, ...;\n"
            "`sets` distinct logit vectors are cycled (1 = one cache-hot vector).\n");
    return 2;
}

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = v ? strtod(v, &end) : 0;
    if (!v || errno || end == v || *end || !(d >= lo && d <= hi)) {
        fprintf(stderr, "bench-sampler: %s needs a number in %g..%g (got %s)\n", flag, lo, hi, v ? v : "nothing");
        return -1;
    }
    *out = d;
    return 0;
}

static int parse_args(int argc, char **argv, struct bench_opts *o)
{
    *o = (struct bench_opts){.vocab = 151936, .n = 20000, .peaks = 8, .sets = 4, .sigma = 2.0, .peak = 14.0,
                             .sp = {.temperature = 0.8f, .top_p = 0.9f, .top_k = 0, .min_p = 0.0f,
                                    .repetition_penalty = 1.0f, .seed = 1, .n_logprobs = 0}};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        if (!strcmp(f, "-h") || !strcmp(f, "--help"))
            return usage(), 1;
#define NUM(name, lo, hi, dst)                                  \
    else if (!strcmp(f, name)) {                                \
        if (parse_num(f, v, lo, hi, &d) < 0)                    \
            return -1;                                          \
        dst;                                                    \
        i++;                                                    \
    }
        if (0) {
        }
        NUM("--vocab", 1, 2147483647.0, o->vocab = (uint32_t)d)
        NUM("--n", 1, 1e9, o->n = (uint32_t)d)
        NUM("--temperature", 0, 2, o->sp.temperature = (float)d)
        NUM("--top-p", 0, 1, o->sp.top_p = (float)d)
        NUM("--top-k", 0, 2147483647.0, o->sp.top_k = (int32_t)d)
        NUM("--min-p", 0, 1, o->sp.min_p = (float)d)
        NUM("--repetition-penalty", 0, 2, o->sp.repetition_penalty = (float)d)
        NUM("--logprobs", 0, 20, o->sp.n_logprobs = (uint32_t)d)
        NUM("--seed", 0, 1.8e19, o->sp.seed = (uint64_t)d)
        NUM("--sigma", 0, 100, o->sigma = d)
        NUM("--peak", -100, 100, o->peak = d)
        NUM("--peaks", 0, 1000, o->peaks = (uint32_t)d)
        NUM("--sets", 1, 64, o->sets = (uint32_t)d)
        else {
            fprintf(stderr, "bench-sampler: unknown option '%s'\n", f);
            return -1;
        }
#undef NUM
    }
    return 0;
}

static double now_s(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Box-Muller over the documented RNG: reproducible logits for a given seed. */
static void fill_logits(float *l, const struct bench_opts *o, struct aarmd_rng *r)
{
    for (uint32_t i = 0; i < o->vocab; i++) {
        double u1 = 1.0 - aarmd_rng_uniform(r), u2 = aarmd_rng_uniform(r);
        l[i] = (float)(o->sigma * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
    for (uint32_t j = 0; j < o->peaks && j < o->vocab; j++)
        l[aarmd_rng_below(r, o->vocab)] = (float)(o->peak - j);
}

int aarmd_cli_bench_sampler(int argc, char **argv)
{
    struct bench_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? usage() : 0;
    char err[160];
    if (aarmd_sampler_params_check(&o.sp, err, sizeof err)) {
        fprintf(stderr, "bench-sampler: %s\n", err);
        return 2;
    }
    int ret = 1;
    float *sets = malloc((size_t)o.sets * o.vocab * sizeof *sets);
    float *work = malloc((size_t)o.vocab * sizeof *work);
    struct aarmd_sampler *s = aarmd_sampler_new(&o.sp, o.vocab);
    if (!sets || !work || !s) {
        fprintf(stderr, "bench-sampler: out of memory for vocab %u\n", o.vocab);
        goto done;
    }
    struct aarmd_rng r;
    aarmd_rng_seed(&r, o.sp.seed ^ 0x5EEDull);
    for (uint32_t k = 0; k < o.sets; k++)
        fill_logits(sets + (size_t)k * o.vocab, &o, &r);

    /* the penalty rewrites logits in place: then each draw works on a fresh copy */
    int copy = o.sp.repetition_penalty != 1.0f;
    if (copy) {
        int32_t hist[64];
        for (int k = 0; k < 64; k++)
            hist[k] = (int32_t)aarmd_rng_below(&r, o.vocab);
        aarmd_sampler_accept(s, hist, 64);
    }
    uint64_t checksum = 0;
    struct aarmd_sample out;
    double t0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    for (uint32_t i = 0; i < o.n; i++) {
        float *l = sets + (size_t)(i % o.sets) * o.vocab;
        if (copy) {
            memcpy(work, l, (size_t)o.vocab * sizeof *work);
            l = work;
        }
        if (aarmd_sampler_sample(s, l, &out) != 0) {
            fprintf(stderr, "bench-sampler: sample %u failed\n", i);
            goto done;
        }
        checksum = checksum * 31 + (uint64_t)out.id;
    }
    double dt = now_s(CLOCK_MONOTONIC) - t0, ct = now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    printf("bench-sampler: vocab %u sets %u temperature %.2f top_p %.2f top_k %d min_p %.2f rep %.2f logprobs %u%s"
           " (%s loops)\n",
           o.vocab, o.sets, o.sp.temperature, o.sp.top_p, (int)o.sp.top_k, o.sp.min_p, o.sp.repetition_penalty,
           o.sp.n_logprobs, copy ? " (+copy)" : "", aarmd_sampler_simd(s));
    printf("%u samples: cpu %.3f s = %.0f samples/s (%.2f us/sample); wall %.3f s = %.0f samples/s "
           "(checksum %016llx)\n",
           o.n, ct, o.n / ct, ct * 1e6 / o.n, dt, o.n / dt, (unsigned long long)checksum);
    ret = 0;
done:
    aarmd_sampler_free(s);
    free(work);
    free(sets);
    return ret;
}
