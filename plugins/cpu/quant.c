/*
 * quant.c — weight formats of the CPU backend in plain C: per-type facts,
 * F16/BF16 conversion, dequantization, activation quantization and the plain
 * dot products that every SIMD path is checked against. No SIMD here.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"

_Static_assert(sizeof(struct cpu_block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(struct cpu_block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(struct cpu_block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(struct cpu_block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(struct cpu_block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(struct cpu_block_q4_k) == 144, "q4_K layout");
_Static_assert(sizeof(struct cpu_block_q5_k) == 176, "q5_K layout");
_Static_assert(sizeof(struct cpu_block_q6_k) == 210, "q6_K layout");
_Static_assert(sizeof(struct cpu_block_q8a) == 40, "q8a layout");
_Static_assert(sizeof(struct cpu_block_q8k) == 292, "q8k layout");

/* ---- per-type facts ------------------------------------------------------ */

struct type_info {
    const char *name;
    int64_t blck;
    size_t bytes;
    enum cpu_act_kind act;
};

static const struct type_info *type_info(uint32_t type)
{
    static const struct type_info f32 = {"F32", 1, 4, CPU_ACT_F32};
    static const struct type_info f16 = {"F16", 1, 2, CPU_ACT_F32};
    static const struct type_info bf16 = {"BF16", 1, 2, CPU_ACT_F32};
    static const struct type_info q4_0 = {"Q4_0", CPU_QK, sizeof(struct cpu_block_q4_0), CPU_ACT_Q8A};
    static const struct type_info q4_1 = {"Q4_1", CPU_QK, sizeof(struct cpu_block_q4_1), CPU_ACT_Q8A};
    static const struct type_info q5_0 = {"Q5_0", CPU_QK, sizeof(struct cpu_block_q5_0), CPU_ACT_Q8A};
    static const struct type_info q5_1 = {"Q5_1", CPU_QK, sizeof(struct cpu_block_q5_1), CPU_ACT_Q8A};
    static const struct type_info q8_0 = {"Q8_0", CPU_QK, sizeof(struct cpu_block_q8_0), CPU_ACT_Q8A};
    static const struct type_info q4_k = {"Q4_K", CPU_QK_K, sizeof(struct cpu_block_q4_k), CPU_ACT_Q8K};
    static const struct type_info q5_k = {"Q5_K", CPU_QK_K, sizeof(struct cpu_block_q5_k), CPU_ACT_Q8K};
    static const struct type_info q6_k = {"Q6_K", CPU_QK_K, sizeof(struct cpu_block_q6_k), CPU_ACT_Q8K};

    switch (type) {
    case AARMD_TYPE_F32: return &f32;
    case AARMD_TYPE_F16: return &f16;
    case AARMD_TYPE_BF16: return &bf16;
    case AARMD_TYPE_Q4_0: return &q4_0;
    case AARMD_TYPE_Q4_1: return &q4_1;
    case AARMD_TYPE_Q5_0: return &q5_0;
    case AARMD_TYPE_Q5_1: return &q5_1;
    case AARMD_TYPE_Q8_0: return &q8_0;
    case AARMD_TYPE_Q4_K: return &q4_k;
    case AARMD_TYPE_Q5_K: return &q5_k;
    case AARMD_TYPE_Q6_K: return &q6_k;
    default: return NULL;
    }
}

int cpu_type_supported(uint32_t type) { return type_info(type) != NULL; }

int64_t cpu_type_block_elems(uint32_t type)
{
    const struct type_info *ti = type_info(type);
    return ti ? ti->blck : 0;
}

size_t cpu_type_block_bytes(uint32_t type)
{
    const struct type_info *ti = type_info(type);
    return ti ? ti->bytes : 0;
}

const char *cpu_type_name(uint32_t type)
{
    const struct type_info *ti = type_info(type);
    return ti ? ti->name : "?";
}

size_t cpu_type_row_bytes(uint32_t type, int64_t n)
{
    const struct type_info *ti = type_info(type);
    if (!ti || n <= 0 || n % ti->blck != 0)
        return 0;
    return (size_t)(n / ti->blck) * ti->bytes;
}

enum cpu_act_kind cpu_type_act(uint32_t type)
{
    const struct type_info *ti = type_info(type);
    return ti ? ti->act : CPU_ACT_NONE;
}

size_t cpu_act_row_bytes(uint32_t type, int64_t n)
{
    switch (cpu_type_act(type)) {
    case CPU_ACT_Q8A: return (size_t)(n / CPU_QK) * sizeof(struct cpu_block_q8a);
    case CPU_ACT_Q8K: return (size_t)(n / CPU_QK_K) * sizeof(struct cpu_block_q8k);
    default: return 0;
    }
}

int cpu_weight_check(const struct aarmd_tensor *w, char *err, size_t errlen)
{
    const char *name = w && w->name ? w->name : "(unnamed)";
    if (!w) {
        snprintf(err, errlen, "weight check: NULL tensor");
        return AARMD_EINVAL;
    }
    const struct type_info *ti = type_info(w->type);
    if (!ti) {
        snprintf(err, errlen, "tensor %s: type %u is not supported by the CPU kernels "
                 "(F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)", name, w->type);
        return AARMD_EUNSUPPORTED;
    }
    int64_t rows = 1;
    for (int i = 0; i < 4; i++) {
        if (w->ne[i] <= 0) {
            snprintf(err, errlen, "tensor %s: ne[%d] = %lld must be >= 1", name, i, (long long)w->ne[i]);
            return AARMD_EINVAL;
        }
        if (i > 0)
            rows *= w->ne[i];
    }
    if (w->ne[0] % ti->blck != 0) {
        snprintf(err, errlen, "tensor %s: row length %lld is not a multiple of the %s block (%lld)",
                 name, (long long)w->ne[0], ti->name, (long long)ti->blck);
        return AARMD_EINVAL;
    }
    if (!w->data) {
        snprintf(err, errlen, "tensor %s: no data", name);
        return AARMD_EINVAL;
    }
    uint64_t need = (uint64_t)cpu_type_row_bytes(w->type, w->ne[0]) * (uint64_t)rows;
    if (w->nbytes < need) {
        snprintf(err, errlen, "tensor %s: %llu bytes, %s {%lld x %lld} needs %llu", name,
                 (unsigned long long)w->nbytes, ti->name, (long long)w->ne[0], (long long)rows,
                 (unsigned long long)need);
        return AARMD_EINVAL;
    }
    return AARMD_OK;
}

/* ---- F16 / BF16 ------------------------------------------------------------ */

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float cpu_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0) {
        if (mant == 0)
            return bits_f32(sign);
        uint32_t e = 113;   /* subnormal: normalise (value = mant * 2^-24) */
        while (!(mant & 0x400)) {
            mant <<= 1;
            e--;
        }
        return bits_f32(sign | (e << 23) | ((mant & 0x3ff) << 13));
    }
    if (exp == 31)
        return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t cpu_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u)   /* inf, NaN (quiet) */
        return (uint16_t)(sign | 0x7c00 | (x > 0x7f800000u ? 0x200 : 0));
    if (x >= 0x477ff000u)   /* >= 65520 rounds to inf */
        return (uint16_t)(sign | 0x7c00);
    if (x < 0x38800000u) {  /* below 2^-14: subnormal half or zero */
        if (x < 0x33000000u)   /* <= 2^-25 exclusive: rounds to 0 */
            return sign;
        uint32_t e = x >> 23;
        uint32_t m = (x & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;   /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (x - 0x38000000u) >> 13, rem = x & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1)))
        r++;
    return (uint16_t)(sign | r);
}

float cpu_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

#define F16(h) cpu_f16_to_f32(h)

/* ---- dequantization --------------------------------------------------------- */
/* Operation order matches ggml / gguf-py exactly (d*q + m, (d*sc)*q - dmin*mn),
 * so results are bit-exact when the compiler does not contract to FMA. */

static void dequant_q4_0(const struct cpu_block_q4_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += CPU_QK) {
        float d = F16(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((b[i].qs[j] & 0xF) - 8) * d;
            y[j + 16] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_1(const struct cpu_block_q4_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += CPU_QK) {
        float d = F16(b[i].d), m = F16(b[i].m);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(b[i].qs[j] & 0xF) * d + m;
            y[j + 16] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

static uint32_t load_qh(const uint8_t qh[4])
{
    return (uint32_t)qh[0] | ((uint32_t)qh[1] << 8) | ((uint32_t)qh[2] << 16) | ((uint32_t)qh[3] << 24);
}

static void dequant_q5_0(const struct cpu_block_q5_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += CPU_QK) {
        float d = F16(b[i].d);
        uint32_t qh = load_qh(b[i].qh);
        for (int j = 0; j < 16; j++) {
            int q0 = (b[i].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int q1 = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            y[j] = (float)(q0 - 16) * d;
            y[j + 16] = (float)(q1 - 16) * d;
        }
    }
}

static void dequant_q5_1(const struct cpu_block_q5_1 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += CPU_QK) {
        float d = F16(b[i].d), m = F16(b[i].m);
        uint32_t qh = load_qh(b[i].qh);
        for (int j = 0; j < 16; j++) {
            int q0 = (b[i].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int q1 = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            y[j] = (float)q0 * d + m;
            y[j + 16] = (float)q1 * d + m;
        }
    }
}

static void dequant_q8_0(const struct cpu_block_q8_0 *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, y += CPU_QK) {
        float d = F16(b[i].d);
        for (int j = 0; j < 32; j++)
            y[j] = (float)b[i].qs[j] * d;
    }
}

static void dequant_q4_k(const struct cpu_block_q4_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = F16(b[i].d), dmin = F16(b[i].dmin);
        const uint8_t *q = b[i].qs;
        for (int j = 0; j < 4; j++, q += 32) {
            uint8_t sc, mn;
            cpu_scale_min_k4(2 * j, b[i].scales, &sc, &mn);
            float d1 = d * sc, m1 = dmin * mn;
            cpu_scale_min_k4(2 * j + 1, b[i].scales, &sc, &mn);
            float d2 = d * sc, m2 = dmin * mn;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static void dequant_q5_k(const struct cpu_block_q5_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = F16(b[i].d), dmin = F16(b[i].dmin);
        const uint8_t *q = b[i].qs, *qh = b[i].qh;
        for (int j = 0; j < 4; j++, q += 32) {
            uint8_t sc, mn;
            cpu_scale_min_k4(2 * j, b[i].scales, &sc, &mn);
            float d1 = d * sc, m1 = dmin * mn;
            cpu_scale_min_k4(2 * j + 1, b[i].scales, &sc, &mn);
            float d2 = d * sc, m2 = dmin * mn;
            uint8_t u1 = (uint8_t)(1u << (2 * j)), u2 = (uint8_t)(2u << (2 * j));
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((q[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((q[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

static void dequant_q6_k(const struct cpu_block_q6_k *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        float d = F16(b[i].d);
        for (int h = 0; h < 2; h++, y += 128) {
            const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            const int8_t *sc = b[i].scales + 8 * h;
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

void cpu_dequant(uint32_t type, const void *src, float *dst, int64_t n)
{
    const struct type_info *ti = type_info(type);
    if (!ti) {
        memset(dst, 0, (size_t)n * sizeof *dst);
        return;
    }
    int64_t nb = n / ti->blck;
    switch (type) {
    case AARMD_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof *dst); break;
    case AARMD_TYPE_F16: {
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = cpu_f16_to_f32(h[i]);
        break;
    }
    case AARMD_TYPE_BF16: {
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = cpu_bf16_to_f32(h[i]);
        break;
    }
    case AARMD_TYPE_Q4_0: dequant_q4_0(src, dst, nb); break;
    case AARMD_TYPE_Q4_1: dequant_q4_1(src, dst, nb); break;
    case AARMD_TYPE_Q5_0: dequant_q5_0(src, dst, nb); break;
    case AARMD_TYPE_Q5_1: dequant_q5_1(src, dst, nb); break;
    case AARMD_TYPE_Q8_0: dequant_q8_0(src, dst, nb); break;
    case AARMD_TYPE_Q4_K: dequant_q4_k(src, dst, nb); break;
    case AARMD_TYPE_Q5_K: dequant_q5_k(src, dst, nb); break;
    case AARMD_TYPE_Q6_K: dequant_q6_k(src, dst, nb); break;
    default: break;
    }
}

void cpu_dequant_row(const struct aarmd_tensor *w, int64_t row, float *out)
{
    size_t rb = cpu_type_row_bytes(w->type, w->ne[0]);
    if (rb == 0) {
        memset(out, 0, (size_t)w->ne[0] * sizeof *out);
        return;
    }
    cpu_dequant(w->type, (const uint8_t *)w->data + (size_t)row * rb, out, w->ne[0]);
}

/* ---- activation quantization ------------------------------------------------ */
/* nearbyintf: round half to even, the same as the SIMD rounding mode, though
 * every level uses these very functions anyway. */

static void quantize_q8a(const float *x, struct cpu_block_q8a *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += CPU_QK) {
        float amax = 0.0f;
        for (int j = 0; j < CPU_QK; j++) {
            float a = fabsf(x[j]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < CPU_QK; j++) {
            int q = (int)nearbyintf(x[j] * id);
            q = q > 127 ? 127 : q < -127 ? -127 : q;
            y[i].qs[j] = (int8_t)q;
            sum += q;
        }
        y[i].d = d;
        y[i].s = d * (float)sum;
    }
}

static void quantize_q8k(const float *x, struct cpu_block_q8k *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += CPU_QK_K) {
        float amax = 0.0f;
        for (int j = 0; j < CPU_QK_K; j++) {
            float a = fabsf(x[j]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < CPU_QK_K; j++) {
            int q = (int)nearbyintf(x[j] * id);
            y[i].qs[j] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
        }
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++)
                s += y[i].qs[16 * g + j];
            y[i].bsums[g] = (int16_t)s;
        }
        y[i].d = d;
    }
}

#if defined(__x86_64__)
/* AVX2 versions of the two above, byte for byte the same output: max, the
 * scalar d and 1/d, one product per element, round-to-nearest-even and integer
 * sums are all exact or identically rounded in either form. They were 8% of a
 * prefill profile as scalar loops. */
#include <immintrin.h>
#define QTARGET __attribute__((target("avx2,fma")))

QTARGET static inline float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* n (a multiple of 32) floats to int8 at q, with scale 1/d = id; returns nothing, sums left to the caller */
QTARGET static inline __m256i round_pack32(const float *x, __m256 vid)
{
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    __m256i i[4];
    for (int k = 0; k < 4; k++) {
        __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        i[k] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(r), lo), hi);
    }
    /* packs work per 128-bit lane: undo the interleave with one permute */
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

QTARGET static float amax_n(const float *x, int n)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 8)
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
    return hmax8(m);
}

QTARGET static void quantize_q8a_avx2(const float *x, struct cpu_block_q8a *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += CPU_QK) {
        float amax = amax_n(x, CPU_QK);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256i q = round_pack32(x, _mm256_set1_ps(id));
        _mm256_storeu_si256((__m256i *)y[i].qs, q);
        /* sum of the 32 int8: maddubs with ones would treat q as unsigned, so widen */
        __m256i s16 = _mm256_add_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(q)),
                                       _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1)));
        __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
        y[i].d = d;
        y[i].s = d * (float)_mm_cvtsi128_si32(t);
    }
}

QTARGET static void quantize_q8k_avx2(const float *x, struct cpu_block_q8k *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += CPU_QK_K) {
        float amax = amax_n(x, CPU_QK_K);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        for (int c = 0; c < CPU_QK_K / 32; c++) {
            __m256i q = round_pack32(x + 32 * c, vid);
            _mm256_storeu_si256((__m256i *)(y[i].qs + 32 * c), q);
            /* two groups of 16: widen each half and reduce to one i16 per group */
            __m256i a = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q));
            __m256i b = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1));
            __m256i sa = _mm256_madd_epi16(a, _mm256_set1_epi16(1)), sb = _mm256_madd_epi16(b, _mm256_set1_epi16(1));
            __m256i h = _mm256_hadd_epi32(sa, sb);   /* [a01 a23 b01 b23 | a45 a67 b45 b67] */
            h = _mm256_hadd_epi32(h, h);             /* [a0-3 b0-3 .. | a4-7 b4-7 ..] */
            __m128i r = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            y[i].bsums[2 * c] = (int16_t)_mm_cvtsi128_si32(r);
            y[i].bsums[2 * c + 1] = (int16_t)_mm_extract_epi32(r, 1);
        }
        y[i].d = d;
    }
}

static int have_avx2(void)
{
    static int v = -1;   /* racy but idempotent: every thread computes the same value */
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return v;
}
#endif

void cpu_quantize_act(uint32_t type, const float *x, void *dst, int64_t n)
{
#if defined(__x86_64__)
    if (have_avx2()) {
        switch (cpu_type_act(type)) {
        case CPU_ACT_Q8A: quantize_q8a_avx2(x, dst, n / CPU_QK); return;
        case CPU_ACT_Q8K: quantize_q8k_avx2(x, dst, n / CPU_QK_K); return;
        default: return;
        }
    }
#endif
    cpu_quantize_act_plain(type, x, dst, n);
}

void cpu_quantize_act_plain(uint32_t type, const float *x, void *dst, int64_t n)
{
    switch (cpu_type_act(type)) {
    case CPU_ACT_Q8A: quantize_q8a(x, dst, n / CPU_QK); break;
    case CPU_ACT_Q8K: quantize_q8k(x, dst, n / CPU_QK_K); break;
    default: break;
    }
}

/* ---- plain dot products (the oracle) ----------------------------------------- */
/* Float weights accumulate in double; quantized ones sum exact integers per
 * block and scale once per block, as every SIMD path does. */

static float dot_f32(int64_t n, const void *vw, const void *va)
{
    const float *w = vw, *x = va;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)w[i] * x[i];
    return (float)s;
}

static float dot_f16(int64_t n, const void *vw, const void *va)
{
    const uint16_t *w = vw;
    const float *x = va;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)cpu_f16_to_f32(w[i]) * x[i];
    return (float)s;
}

static float dot_bf16(int64_t n, const void *vw, const void *va)
{
    const uint16_t *w = vw;
    const float *x = va;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)cpu_bf16_to_f32(w[i]) * x[i];
    return (float)s;
}

static float dot_q4_0(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q4_0 *w = vw;
    const struct cpu_block_q8a *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK; i++) {
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += ((w[i].qs[j] & 0xF) - 8) * a[i].qs[j] + ((w[i].qs[j] >> 4) - 8) * a[i].qs[j + 16];
        sum += F16(w[i].d) * a[i].d * (float)s;
    }
    return sum;
}

static float dot_q4_1(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q4_1 *w = vw;
    const struct cpu_block_q8a *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK; i++) {
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += (w[i].qs[j] & 0xF) * a[i].qs[j] + (w[i].qs[j] >> 4) * a[i].qs[j + 16];
        sum += F16(w[i].d) * a[i].d * (float)s + F16(w[i].m) * a[i].s;
    }
    return sum;
}

static float dot_q5_0(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q5_0 *w = vw;
    const struct cpu_block_q8a *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK; i++) {
        uint32_t qh = load_qh(w[i].qh);
        int s = 0;
        for (int j = 0; j < 16; j++) {
            int q0 = ((w[i].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4)) - 16;
            int q1 = ((w[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - 16;
            s += q0 * a[i].qs[j] + q1 * a[i].qs[j + 16];
        }
        sum += F16(w[i].d) * a[i].d * (float)s;
    }
    return sum;
}

static float dot_q5_1(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q5_1 *w = vw;
    const struct cpu_block_q8a *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK; i++) {
        uint32_t qh = load_qh(w[i].qh);
        int s = 0;
        for (int j = 0; j < 16; j++) {
            int q0 = (w[i].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int q1 = (w[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            s += q0 * a[i].qs[j] + q1 * a[i].qs[j + 16];
        }
        sum += F16(w[i].d) * a[i].d * (float)s + F16(w[i].m) * a[i].s;
    }
    return sum;
}

static float dot_q8_0(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q8_0 *w = vw;
    const struct cpu_block_q8a *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK; i++) {
        int s = 0;
        for (int j = 0; j < 32; j++)
            s += w[i].qs[j] * a[i].qs[j];
        sum += F16(w[i].d) * a[i].d * (float)s;
    }
    return sum;
}

static float dot_q4_k(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q4_k *w = vw;
    const struct cpu_block_q8k *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK_K; i++) {
        const uint8_t *q = w[i].qs;
        const int8_t *x = a[i].qs;
        int sumi = 0, summ = 0;
        for (int j = 0; j < 4; j++, q += 32, x += 64) {
            uint8_t sc1, m1, sc2, m2;
            cpu_scale_min_k4(2 * j, w[i].scales, &sc1, &m1);
            cpu_scale_min_k4(2 * j + 1, w[i].scales, &sc2, &m2);
            int s1 = 0, s2 = 0;
            for (int l = 0; l < 32; l++) {
                s1 += (q[l] & 0xF) * x[l];
                s2 += (q[l] >> 4) * x[l + 32];
            }
            sumi += sc1 * s1 + sc2 * s2;
            summ += m1 * (a[i].bsums[4 * j] + a[i].bsums[4 * j + 1]) +
                    m2 * (a[i].bsums[4 * j + 2] + a[i].bsums[4 * j + 3]);
        }
        sum += F16(w[i].d) * a[i].d * (float)sumi - F16(w[i].dmin) * a[i].d * (float)summ;
    }
    return sum;
}

static float dot_q5_k(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q5_k *w = vw;
    const struct cpu_block_q8k *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK_K; i++) {
        const uint8_t *q = w[i].qs, *qh = w[i].qh;
        const int8_t *x = a[i].qs;
        int sumi = 0, summ = 0;
        for (int j = 0; j < 4; j++, q += 32, x += 64) {
            uint8_t sc1, m1, sc2, m2;
            cpu_scale_min_k4(2 * j, w[i].scales, &sc1, &m1);
            cpu_scale_min_k4(2 * j + 1, w[i].scales, &sc2, &m2);
            int s1 = 0, s2 = 0;
            for (int l = 0; l < 32; l++) {
                s1 += ((q[l] & 0xF) | (((qh[l] >> (2 * j)) & 1) << 4)) * x[l];
                s2 += ((q[l] >> 4) | (((qh[l] >> (2 * j + 1)) & 1) << 4)) * x[l + 32];
            }
            sumi += sc1 * s1 + sc2 * s2;
            summ += m1 * (a[i].bsums[4 * j] + a[i].bsums[4 * j + 1]) +
                    m2 * (a[i].bsums[4 * j + 2] + a[i].bsums[4 * j + 3]);
        }
        sum += F16(w[i].d) * a[i].d * (float)sumi - F16(w[i].dmin) * a[i].d * (float)summ;
    }
    return sum;
}

static float dot_q6_k(int64_t n, const void *vw, const void *va)
{
    const struct cpu_block_q6_k *w = vw;
    const struct cpu_block_q8k *a = va;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / CPU_QK_K; i++) {
        int sumi = 0;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w[i].ql + 64 * h, *qh = w[i].qh + 32 * h;
            const int8_t *sc = w[i].scales + 8 * h, *x = a[i].qs + 128 * h;
            int s[8] = {0};
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                s[is + 0] += (((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32) * x[l];
                s[is + 2] += (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32) * x[l + 32];
                s[is + 4] += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * x[l + 64];
                s[is + 6] += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * x[l + 96];
            }
            for (int k = 0; k < 8; k++)
                sumi += sc[k] * s[k];
        }
        sum += F16(w[i].d) * a[i].d * (float)sumi;
    }
    return sum;
}

void cpu_kernels_plain(struct cpu_kernel_tab *tab)
{
    tab->dot[AARMD_TYPE_F32] = dot_f32;
    tab->dot[AARMD_TYPE_F16] = dot_f16;
    tab->dot[AARMD_TYPE_BF16] = dot_bf16;
    tab->dot[AARMD_TYPE_Q4_0] = dot_q4_0;
    tab->dot[AARMD_TYPE_Q4_1] = dot_q4_1;
    tab->dot[AARMD_TYPE_Q5_0] = dot_q5_0;
    tab->dot[AARMD_TYPE_Q5_1] = dot_q5_1;
    tab->dot[AARMD_TYPE_Q8_0] = dot_q8_0;
    tab->dot[AARMD_TYPE_Q4_K] = dot_q4_k;
    tab->dot[AARMD_TYPE_Q5_K] = dot_q5_k;
    tab->dot[AARMD_TYPE_Q6_K] = dot_q6_k;
}
