/*
 * metal_test_util.h — random inputs and comparisons shared by the Metal
 * kernel tests (tests/metal/test_*.cpp). Test-only; C++.
 */
#ifndef AARMD_METAL_TEST_UTIL_H
#define AARMD_METAL_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <vector>

/* xorshift64*: deterministic per seed */
struct mt_rng {
    uint64_t s;
    explicit mt_rng(uint64_t seed) : s(seed * 2685821657736338717ull + 1) {}
    uint64_t next()
    {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 2685821657736338717ull;
    }
    float uniform(float lo, float hi) { return lo + (hi - lo) * (float)((next() >> 40) / 16777216.0); }
    uint8_t byte() { return (uint8_t)(next() >> 56); }
};

static inline std::vector<float> mt_random_floats(mt_rng &r, size_t n, float lo, float hi)
{
    std::vector<float> v(n);
    for (auto &f : v)
        f = r.uniform(lo, hi);
    return v;
}

/* |got - want| <= atol + rtol * |want| for every element; returns the first bad index or -1. */
static inline long mt_first_mismatch(const float *got, const float *want, size_t n, float atol, float rtol)
{
    for (size_t i = 0; i < n; i++) {
        if (!(fabsf(got[i] - want[i]) <= atol + rtol * fabsf(want[i])))
            return (long)i;
    }
    return -1;
}

#endif
