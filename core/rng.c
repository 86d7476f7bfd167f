/*
 * rng.c — splitmix64-seeded xoshiro256** and the OS seed source (see rng.h).
 * Not the sampler: the sampler only asks this file for uniforms.
 */
#include "config.h"
#include "rng.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

uint64_t aarmd_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void aarmd_rng_seed(struct aarmd_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = aarmd_splitmix64(&x);
}

static inline uint64_t rotl(uint64_t v, int k)
{
    return (v << k) | (v >> (64 - k));
}

uint64_t aarmd_rng_next(struct aarmd_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double aarmd_rng_uniform(struct aarmd_rng *r)
{
    return (double)(aarmd_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t aarmd_rng_below(struct aarmd_rng *r, uint64_t n)
{
    /* Lemire 2019: the high word of x*n, rejecting the few low words that bias it */
    unsigned __int128 m = (unsigned __int128)aarmd_rng_next(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t thresh = (0 - n) % n;
        while (lo < thresh) {
            m = (unsigned __int128)aarmd_rng_next(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

static int read_urandom(uint64_t *v)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, v, sizeof *v);
    close(fd);
    return n == (ssize_t)sizeof *v ? 0 : -1;
}

uint64_t aarmd_seed_from_os(void)
{
    uint64_t v = 0;
    ssize_t n;
    do
        n = getrandom(&v, sizeof v, 0);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof v)
        return v;
    if (read_urandom(&v) == 0)
        return v;
    /* last resort: never fail a job for want of entropy */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 32);
    return aarmd_splitmix64(&x);
}
