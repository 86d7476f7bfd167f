/*
 * rng.h — the job's random number generator: one documented, portable 64-bit
 * generator so that a seed gives the same draws on every machine.
 *
 * Algorithm (exactly; docs/SAMPLING.md repeats it):
 *   seeding:  splitmix64 run from x = seed; the state words s[0..3] are its
 *             first four outputs, where one splitmix64 step is
 *               x += 0x9E3779B97F4A7C15;
 *               z = x;
 *               z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
 *               z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
 *               out = z ^ (z >> 31);
 *             (splitmix64 never yields four zero words, so the state is valid.)
 *   next:     xoshiro256** 1.0 (Blackman & Vigna, 2018):
 *               out = rotl(s[1] * 5, 7) * 9;
 *               t = s[1] << 17;
 *               s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
 *               s[2] ^= t; s[3] = rotl(s[3], 45);
 *   uniform:  (next() >> 11) * 2^-53, a double in [0, 1) from the top 53 bits.
 *
 * Not cryptographic. Not thread-safe: one generator per job. The struct is
 * plain data, embedded by value; nothing to free.
 */
#ifndef AARMD_RNG_H
#define AARMD_RNG_H

#include <stdint.h>

struct aarmd_rng {
    uint64_t s[4];
};

/* Seeds r from seed through splitmix64 (any seed, 0 included, is fine). */
void aarmd_rng_seed(struct aarmd_rng *r, uint64_t seed);

/* The next 64-bit output of xoshiro256**. */
uint64_t aarmd_rng_next(struct aarmd_rng *r);

/* A double uniform in [0, 1): the top 53 bits of aarmd_rng_next times 2^-53. */
double aarmd_rng_uniform(struct aarmd_rng *r);

/* An integer uniform in [0, n) (n > 0; Lemire's multiply-and-reject, unbiased). */
uint64_t aarmd_rng_below(struct aarmd_rng *r, uint64_t n);

/* One splitmix64 step on *x (advances *x); exposed for tests and seeding. */
uint64_t aarmd_splitmix64(uint64_t *x);

/*
 * A seed from the OS: getrandom(2) (declared in sampler.h as well). Falls back
 * to /dev/urandom, then to the clock mixed with the process id, so it always
 * returns a value.
 */
uint64_t aarmd_seed_from_os(void);

#endif
