/*
 * simd_neon.c — NEON (AArch64 Advanced SIMD) dot kernels of the CPU backend:
 * one token at a time, baseline ARMv8.0 (vdotq_s32 when the compiler targets
 * +dotprod). Compiled on every host, empty except on aarch64.
 */
#include "kernels.h"

#if defined(__aarch64__)
#include <arm_neon.h>

static inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b)
{
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
#endif
}

static inline float f16(uint16_t h) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0); }

/* 0x10 in byte j of a 16-byte vector where bit j of the 16-bit value is set. */
static inline int8x16_t bit4_16(uint32_t bits16)
{
    static const uint8_t pos[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint8x16_t v = vcombine_u8(vdup_n_u8((uint8_t)bits16), vdup_n_u8((uint8_t)(bits16 >> 8)));
    return vreinterpretq_s8_u8(vandq_u8(vtstq_u8(v, vld1q_u8(pos)), vdupq_n_u8(0x10)));
}

static inline uint32_t load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---- 32-element formats -------------------------------------------------------------- */

static float q4_0_dot(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q4_0 *w = vw;
    const struct cpu_block_q8a *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK; i++) {
        uint8x16_t q = vld1q_u8(w[i].qs);
        int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0xF))), vdupq_n_s8(8));
        int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), vdupq_n_s8(8));
        int32x4_t p = dot16(dot16(vdupq_n_s32(0), lo, vld1q_s8(a[i].qs)), hi, vld1q_s8(a[i].qs + 16));
        sum += f16(w[i].d) * a[i].d * (float)vaddvq_s32(p);
    }
    return sum;
}

static float q4_1_dot(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q4_1 *w = vw;
    const struct cpu_block_q8a *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK; i++) {
        uint8x16_t q = vld1q_u8(w[i].qs);
        int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0xF)));
        int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
        int32x4_t p = dot16(dot16(vdupq_n_s32(0), lo, vld1q_s8(a[i].qs)), hi, vld1q_s8(a[i].qs + 16));
        sum += f16(w[i].d) * a[i].d * (float)vaddvq_s32(p) + f16(w[i].m) * a[i].s;
    }
    return sum;
}

static float q5_0_dot(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q5_0 *w = vw;
    const struct cpu_block_q8a *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK; i++) {
        uint32_t qh = load_u32(w[i].qh);
        uint8x16_t q = vld1q_u8(w[i].qs);
        int8x16_t lo = vorrq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0xF))), bit4_16(qh & 0xFFFF));
        int8x16_t hi = vorrq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), bit4_16(qh >> 16));
        lo = vsubq_s8(lo, vdupq_n_s8(16));
        hi = vsubq_s8(hi, vdupq_n_s8(16));
        int32x4_t p = dot16(dot16(vdupq_n_s32(0), lo, vld1q_s8(a[i].qs)), hi, vld1q_s8(a[i].qs + 16));
        sum += f16(w[i].d) * a[i].d * (float)vaddvq_s32(p);
    }
    return sum;
}

static float q5_1_dot(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q5_1 *w = vw;
    const struct cpu_block_q8a *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK; i++) {
        uint32_t qh = load_u32(w[i].qh);
        uint8x16_t q = vld1q_u8(w[i].qs);
        int8x16_t lo = vorrq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0xF))), bit4_16(qh & 0xFFFF));
        int8x16_t hi = vorrq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), bit4_16(qh >> 16));
        int32x4_t p = dot16(dot16(vdupq_n_s32(0), lo, vld1q_s8(a[i].qs)), hi, vld1q_s8(a[i].qs + 16));
        sum += f16(w[i].d) * a[i].d * (float)vaddvq_s32(p) + f16(w[i].m) * a[i].s;
    }
    return sum;
}

static float q8_0_dot(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q8_0 *w = vw;
    const struct cpu_block_q8a *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK; i++) {
        int32x4_t p = dot16(vdupq_n_s32(0), vld1q_s8(w[i].qs), vld1q_s8(a[i].qs));
        p = dot16(p, vld1q_s8(w[i].qs + 16), vld1q_s8(a[i].qs + 16));
        sum += f16(w[i].d) * a[i].d * (float)vaddvq_s32(p);
    }
    return sum;
}

/* ---- K-quants -------------------------------------------------------------------------- */

static float q4_k_dot(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q4_k *w = vw;
    const struct cpu_block_q8k *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK_K; i++) {
        uint8_t sc[8], mn[8];
        for (int j = 0; j < 8; j++)
            cpu_scale_min_k4(j, w[i].scales, &sc[j], &mn[j]);
        int sumi = 0, summ = 0;
        for (int j = 0; j < 4; j++) {
            const uint8_t *q = w[i].qs + 32 * j;
            const int8_t *x = a[i].qs + 64 * j;
            uint8x16_t q0 = vld1q_u8(q), q1 = vld1q_u8(q + 16);
            int32x4_t lo = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(q0, vdupq_n_u8(0xF))), vld1q_s8(x));
            lo = dot16(lo, vreinterpretq_s8_u8(vandq_u8(q1, vdupq_n_u8(0xF))), vld1q_s8(x + 16));
            int32x4_t hi = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vshrq_n_u8(q0, 4)), vld1q_s8(x + 32));
            hi = dot16(hi, vreinterpretq_s8_u8(vshrq_n_u8(q1, 4)), vld1q_s8(x + 48));
            sumi += sc[2 * j] * vaddvq_s32(lo) + sc[2 * j + 1] * vaddvq_s32(hi);
        }
        for (int j = 0; j < 8; j++)
            summ += mn[j] * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
        sum += f16(w[i].d) * a[i].d * (float)sumi - f16(w[i].dmin) * a[i].d * (float)summ;
    }
    return sum;
}

static float q6_k_dot(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q6_k *w = vw;
    const struct cpu_block_q8k *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK_K; i++) {
        int sumi = 0;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w[i].ql + 64 * h, *qh = w[i].qh + 32 * h;
            const int8_t *sc = w[i].scales + 8 * h, *x = a[i].qs + 128 * h;
            for (int s = 0; s < 2; s++) {   /* elements l = 16s .. 16s+15 of each chunk */
                uint8x16_t l0 = vld1q_u8(ql + 16 * s), l1 = vld1q_u8(ql + 32 + 16 * s);
                uint8x16_t hb = vld1q_u8(qh + 16 * s);
                uint8x16_t m4 = vdupq_n_u8(0xF), m2 = vdupq_n_u8(3);
                uint8x16_t q[4];
                q[0] = vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(hb, m2), 4));
                q[1] = vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), m2), 4));
                q[2] = vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), m2), 4));
                q[3] = vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4));
                for (int k = 0; k < 4; k++) {
                    int8x16_t v = vsubq_s8(vreinterpretq_s8_u8(q[k]), vdupq_n_s8(32));
                    int32x4_t p = dot16(vdupq_n_s32(0), v, vld1q_s8(x + 32 * k + 16 * s));
                    sumi += sc[2 * k + s] * vaddvq_s32(p);
                }
            }
        }
        sum += f16(w[i].d) * a[i].d * (float)sumi;
    }
    return sum;
}

/* ---- float weights ------------------------------------------------------------------------ */

static float f32_dot(int64_t n, const void *vw, const void *va)
{
    const float *w = vw, *x = va;
    float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = vfmaq_f32(s0, vld1q_f32(w + i), vld1q_f32(x + i));
        s1 = vfmaq_f32(s1, vld1q_f32(w + i + 4), vld1q_f32(x + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; i++)
        s += w[i] * x[i];
    return s;
}

static float f16_dot(int64_t n, const void *vw, const void *va)
{
    const uint16_t *w = vw;
    const float *x = va;
    float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vld1q_u16(w + i);
        s0 = vfmaq_f32(s0, vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h))), vld1q_f32(x + i));
        s1 = vfmaq_f32(s1, vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h))), vld1q_f32(x + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; i++)
        s += f16(w[i]) * x[i];
    return s;
}

static float bf16_dot(int64_t n, const void *vw, const void *va)
{
    const uint16_t *w = vw;
    const float *x = va;
    float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vld1q_u16(w + i);
        s0 = vfmaq_f32(s0, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)), vld1q_f32(x + i));
        s1 = vfmaq_f32(s1, vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(h), 16)), vld1q_f32(x + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; i++)
        s += vgetq_lane_f32(vreinterpretq_f32_u32(vshll_n_u16(vdup_n_u16(w[i]), 16)), 0) * x[i];
    return s;
}

void cpu_kernels_neon(struct cpu_kernel_tab *tab)
{
    tab->dot[AARMD_TYPE_Q4_0] = q4_0_dot;
    tab->dot[AARMD_TYPE_Q4_1] = q4_1_dot;
    tab->dot[AARMD_TYPE_Q5_0] = q5_0_dot;
    tab->dot[AARMD_TYPE_Q5_1] = q5_1_dot;
    tab->dot[AARMD_TYPE_Q8_0] = q8_0_dot;
    tab->dot[AARMD_TYPE_Q4_K] = q4_k_dot;
    tab->dot[AARMD_TYPE_Q6_K] = q6_k_dot;
    tab->dot[AARMD_TYPE_F32] = f32_dot;
    tab->dot[AARMD_TYPE_F16] = f16_dot;
    tab->dot[AARMD_TYPE_BF16] = bf16_dot;
}
#else
typedef int cpu_simd_neon_empty;   /* ISO C wants a non-empty translation unit */
#endif
