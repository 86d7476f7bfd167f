/* test_rng.c — core/rng.c: splitmix64 and xoshiro256** against published vectors, uniforms, OS seeds. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "rng.h"

/* splitmix64 from 1234567 and from 0: published reference outputs (Vigna's splitmix64.c;
 * the same vectors appear in Rust rand_xoshiro's tests). */
Test(rng, splitmix64_reference_vectors)
{
    uint64_t x = 1234567;
    const uint64_t want[] = {6457827717110365317ull, 3203168211198807973ull, 9817491932198370423ull,
                             4593380528125082431ull, 16408922859458223821ull};
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(aarmd_splitmix64(&x), want[i], "output %zu", i);
    x = 0;
    cr_assert_eq(aarmd_splitmix64(&x), 0xe220a8397b1dcdafull);
    cr_assert_eq(aarmd_splitmix64(&x), 0x6e789e6aa1b965f4ull);
}

/* xoshiro256** from state {1,2,3,4}: the reference implementation's first outputs. */
Test(rng, xoshiro256starstar_reference_vector)
{
    struct aarmd_rng r = {.s = {1, 2, 3, 4}};
    const uint64_t want[] = {11520ull, 0ull, 1509978240ull, 1215971899390074240ull, 1216172134540287360ull,
                             607988272756665600ull};
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(aarmd_rng_next(&r), want[i], "output %zu", i);
}

/* Seeding = four splitmix64 outputs as the state (values from an independent Python
 * implementation of the algorithm written out in rng.h). */
Test(rng, seeding_is_splitmix64_into_xoshiro)
{
    struct aarmd_rng r;
    aarmd_rng_seed(&r, 0);
    uint64_t x = 0;
    for (int i = 0; i < 4; i++)
        cr_assert_eq(r.s[i], aarmd_splitmix64(&x));
    const uint64_t want0[] = {11091344671253066420ull, 13793997310169335082ull, 1900383378846508768ull,
                              7684712102626143532ull};
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(aarmd_rng_next(&r), want0[i], "seed 0 output %zu", i);
    aarmd_rng_seed(&r, 42);
    const uint64_t want42[] = {1546998764402558742ull, 6990951692964543102ull, 12544586762248559009ull,
                               17057574109182124193ull};
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(aarmd_rng_next(&r), want42[i], "seed 42 output %zu", i);
}

Test(rng, same_seed_same_sequence_other_seed_differs)
{
    struct aarmd_rng a, b, c;
    aarmd_rng_seed(&a, 777);
    aarmd_rng_seed(&b, 777);
    aarmd_rng_seed(&c, 778);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t va = aarmd_rng_next(&a);
        cr_assert_eq(va, aarmd_rng_next(&b));
        same_c += va == aarmd_rng_next(&c);
    }
    cr_assert_lt(same_c, 2);
}

Test(rng, uniform_is_top_53_bits)
{
    struct aarmd_rng a, b;
    aarmd_rng_seed(&a, 5);
    b = a;
    for (int i = 0; i < 1000; i++) {
        double u = aarmd_rng_uniform(&a);
        uint64_t v = aarmd_rng_next(&b);
        cr_assert_eq(u, (double)(v >> 11) / 9007199254740992.0);
        cr_assert(u >= 0.0 && u < 1.0);
    }
    /* the largest output maps below 1 */
    cr_assert_lt((double)(UINT64_MAX >> 11) * 0x1.0p-53, 1.0);
}

/* Mean and variance of 10^6 uniforms: 1/2 and 1/12 within 6 standard errors. */
Test(rng, uniform_moments)
{
    struct aarmd_rng r;
    aarmd_rng_seed(&r, 2024);
    const int n = 1000000;
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) {
        double u = aarmd_rng_uniform(&r);
        s += u;
        s2 += u * u;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    cr_assert_lt(fabs(mean - 0.5), 6 * sqrt(1.0 / 12 / n), "mean %g", mean);
    /* Var(U^2) = 1/5 - 1/9 = 4/45 */
    cr_assert_lt(fabs(var - 1.0 / 12), 6 * sqrt(4.0 / 45 / n), "var %g", var);
}

/* aarmd_rng_below: in range, and 10 bins pass chi-square (df 9, 99.99% point 33.7). */
Test(rng, below_is_uniform)
{
    struct aarmd_rng r;
    aarmd_rng_seed(&r, 99);
    long cnt[10] = {0};
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        uint64_t v = aarmd_rng_below(&r, 10);
        cr_assert_lt(v, 10);
        cnt[v]++;
    }
    double chi = 0, e = n / 10.0;
    for (int k = 0; k < 10; k++)
        chi += (cnt[k] - e) * (cnt[k] - e) / e;
    cr_assert_lt(chi, 33.7, "chi2 %g", chi);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(aarmd_rng_below(&r, 1), 0);
    /* a bound near 2^64 exercises the rejection path without bias to the top */
    for (int i = 0; i < 1000; i++)
        cr_assert_lt(aarmd_rng_below(&r, (UINT64_MAX / 3) * 2), (UINT64_MAX / 3) * 2);
}

Test(rng, seed_from_os_varies)
{
    uint64_t a = aarmd_seed_from_os(), b = aarmd_seed_from_os(), c = aarmd_seed_from_os();
    cr_assert(a != b || b != c, "three equal OS seeds: %llu", (unsigned long long)a);
}
