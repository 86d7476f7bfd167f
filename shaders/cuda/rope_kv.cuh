/*
 * rope_kv.cuh — what the RoPE kernels (ops.cu) and the decode attention
 * (attn_dec.cu) share: a pair's rotary angles (from the layer's table, or
 * computed as the CPU backend computes them), one rotated element rounded as
 * the CPU rounds it, and the address of a position's row in the paged F16
 * KV cache. Device helpers only.
 */
#ifndef AARMD_CUDA_ROPE_KV_CUH
#define AARMD_CUDA_ROPE_KV_CUH

#include <math.h>
#include <stdint.h>

#include "../../plugins/cuda/launch.h"

/* cos/sin of pair i at position p, as the CPU backend's cpu_rope_cos_sin (double precision). */
static __device__ void rope_cs_calc(const struct cuk_rope &r, int32_t p, int i, float *c, float *sn)
{
    double extrap = (double)p * pow((double)r.freq_base, -2.0 * i / (double)r.n_rot);
    if (r.freq_factors)
        extrap /= r.freq_factors[i];
    double theta = r.freq_scale * extrap;
    double mscale = r.attn_factor;
    if (r.ext_factor != 0.0f) {
        double span = r.corr_high - r.corr_low;
        double y = (i - r.corr_low) / (span > 0.001 ? span : 0.001);
        double ramp = 1.0 - fmin(1.0, fmax(0.0, y));
        double mix = ramp * r.ext_factor;
        theta = theta * (1.0 - mix) + extrap * mix;
        mscale *= 1.0 + 0.1 * log(1.0 / r.freq_scale);
    }
    *c = (float)(cos(theta) * mscale);
    *sn = (float)(sin(theta) * mscale);
}

/* rope_cs_calc's values: from the layer's table (cuk_rope_table) at positions it covers, one load
 * instead of ~150 dependent double-precision operations (v15) */
static __device__ __forceinline__ void rope_cs(const struct cuk_rope &r, int32_t p, int i, float *c, float *sn)
{
    if (p < r.n_cs) {
        float2 v = __ldg((const float2 *)r.cs + (size_t)p * (r.n_rot / 2) + i);
        *c = v.x;
        *sn = v.y;
    } else {
        rope_cs_calc(r, p, i, c, sn);
    }
}

/* One rotated element: the pair's first (x0 c - x1 s) or second (x0 s + x1 c), each product
 * rounded before the sum, as the CPU backend (C, no contraction) computes it. */
static __device__ __forceinline__ float rope_rot(int first, float x0, float x1, float c, float sn)
{
    return first ? __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, sn)) : __fadd_rn(__fmul_rn(x0, sn), __fmul_rn(x1, c));
}

/* F16 row of position j of token t's sequence in the paged cache (K, or V when v != 0). */
static __device__ __forceinline__ size_t kv_row(const struct cuk_kv &kv, const int32_t *tab, int32_t j, int kv_dim, int v)
{
    size_t b = (size_t)tab[j / CUK_KV_BLOCK];
    return b * kv.block_halfs + kv.layer_off + ((size_t)v * CUK_KV_BLOCK + (size_t)(j % CUK_KV_BLOCK)) * kv_dim;
}

#endif
