/*
 * quant_write.c — round-to-nearest encoders for the ggml block formats that
 * gguf-synth writes (layouts in quant_write.h). Not a dequantizer and not an
 * optimizing quantizer: scales are chosen so every element is in range.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "aarmd_backend.h"
#include "quant_write.h"

#define QK 32
#define QK_K 256

uint16_t aarmd_fp32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xFFu;
    uint32_t mant = x & 0x7FFFFFu;
    if (exp == 0xFF)
        return (uint16_t)(sign | 0x7C00u | (mant ? 0x200u | (mant >> 13) : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7C00u);
    if (e <= 0) {
        /* subnormal half: value = M * 2^-24 with M the shifted 24-bit mantissa */
        if (e < -10)
            return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t h = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1FFFu;
    /* a carry out of the mantissa correctly bumps the exponent (up to inf) */
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

float aarmd_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    uint32_t x;
    if (exp == 0) {
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    if (exp == 31)
        x = sign | 0x7F800000u | (mant << 13);
    else
        x = sign | ((exp + 112) << 23) | (mant << 13);
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

uint16_t aarmd_fp32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)((x >> 16) | 0x40u);   /* quiet NaN */
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

float aarmd_bf16_to_fp32(uint16_t h)
{
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

/* The fp16 that will be stored, read back: quantize against what the decoder sees. */
static float f16_round(float f)
{
    return aarmd_fp16_to_fp32(aarmd_fp32_to_fp16(f));
}

static void put_f16(uint8_t *p, float f)
{
    uint16_t h = aarmd_fp32_to_fp16(f);
    p[0] = (uint8_t)(h & 0xFF);
    p[1] = (uint8_t)(h >> 8);
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---- 32-element formats ------------------------------------------------- */

static void q8_0_block(const float *x, uint8_t *b)
{
    float amax = 0;
    for (int i = 0; i < QK; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    float d = f16_round(amax / 127.0f);
    float id = d > 0 ? 1.0f / d : 0.0f;
    put_f16(b, d);
    for (int i = 0; i < QK; i++)
        b[2 + i] = (uint8_t)(int8_t)clampi((int)lrintf(x[i] * id), -127, 127);
}

/* Symmetric 4/5-bit (Q4_0, Q5_0): the largest-magnitude value maps to -2^(bits-1). */
static void qx_0_block(const float *x, uint8_t *b, int bits)
{
    float amax = 0, vmax = 0;
    for (int i = 0; i < QK; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            vmax = x[i];
        }
    }
    const int half = 1 << (bits - 1), top = (1 << bits) - 1;
    float d = f16_round(vmax / (float)-half);
    float id = d != 0 ? 1.0f / d : 0.0f;
    put_f16(b, d);
    uint8_t *qs = b + (bits == 5 ? 6 : 2);
    uint32_t qh = 0;
    for (int i = 0; i < QK / 2; i++) {
        int q0 = clampi((int)lrintf(x[i] * id) + half, 0, top);
        int q1 = clampi((int)lrintf(x[i + QK / 2] * id) + half, 0, top);
        qs[i] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
        qh |= (uint32_t)((q0 >> 4) & 1) << i;
        qh |= (uint32_t)((q1 >> 4) & 1) << (i + QK / 2);
    }
    if (bits == 5)
        for (int k = 0; k < 4; k++)
            b[2 + k] = (uint8_t)(qh >> (8 * k));
}

/* Asymmetric 4/5-bit (Q4_1, Q5_1): y = d*q + m with m the block minimum. */
static void qx_1_block(const float *x, uint8_t *b, int bits)
{
    float mn = x[0], mx = x[0];
    for (int i = 1; i < QK; i++) {
        mn = fminf(mn, x[i]);
        mx = fmaxf(mx, x[i]);
    }
    const int top = (1 << bits) - 1;
    float m = f16_round(mn);
    float d = f16_round((mx - m) / (float)top);
    float id = d > 0 ? 1.0f / d : 0.0f;
    put_f16(b, d);
    put_f16(b + 2, m);
    uint8_t *qs = b + (bits == 5 ? 8 : 4);
    uint32_t qh = 0;
    for (int i = 0; i < QK / 2; i++) {
        int q0 = clampi((int)lrintf((x[i] - m) * id), 0, top);
        int q1 = clampi((int)lrintf((x[i + QK / 2] - m) * id), 0, top);
        qs[i] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
        qh |= (uint32_t)((q0 >> 4) & 1) << i;
        qh |= (uint32_t)((q1 >> 4) & 1) << (i + QK / 2);
    }
    if (bits == 5)
        for (int k = 0; k < 4; k++)
            b[4 + k] = (uint8_t)(qh >> (8 * k));
}

/* ---- K-quants ----------------------------------------------------------- */

/* Q4_K / Q5_K: 8 sub-blocks of 32 with 6-bit scale and min. Mins are rounded
 * up and scales chosen from the rounded mins so every element is in range. */
static void qx_k_block(const float *x, uint8_t *b, int bits)
{
    const int top = (1 << bits) - 1;
    float minv[8], maxv[8], max_min = 0;
    for (int j = 0; j < 8; j++) {
        float mn = 0, mx = 0;   /* the range always includes 0 (mins are >= 0) */
        for (int l = 0; l < 32; l++) {
            mn = fminf(mn, x[32 * j + l]);
            mx = fmaxf(mx, x[32 * j + l]);
        }
        minv[j] = -mn;
        maxv[j] = mx;
        max_min = fmaxf(max_min, minv[j]);
    }
    float dmin = f16_round(max_min / 63.0f);
    int lm[8], ls[8];
    float req[8], max_req = 0;
    for (int j = 0; j < 8; j++) {
        lm[j] = dmin > 0 ? clampi((int)ceilf(minv[j] / dmin), 0, 63) : 0;
        req[j] = (maxv[j] + dmin * (float)lm[j]) / (float)top;
        max_req = fmaxf(max_req, req[j]);
    }
    float d = f16_round(max_req / 63.0f);
    for (int j = 0; j < 8; j++)
        ls[j] = d > 0 ? clampi((int)ceilf(req[j] / d), 0, 63) : 0;

    put_f16(b, d);
    put_f16(b + 2, dmin);
    uint8_t *scales = b + 4;
    memset(scales, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            scales[j] = (uint8_t)ls[j];
            scales[j + 4] = (uint8_t)lm[j];
        } else {
            scales[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            scales[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            scales[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
    uint8_t L[QK_K];
    for (int j = 0; j < 8; j++) {
        float dd = d * (float)ls[j], dm = dmin * (float)lm[j];
        float id = dd > 0 ? 1.0f / dd : 0.0f;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)clampi((int)lrintf((x[32 * j + l] + dm) * id), 0, top);
    }
    uint8_t *qh = bits == 5 ? b + 16 : NULL;
    uint8_t *qs = b + 16 + (bits == 5 ? 32 : 0);
    if (qh)
        memset(qh, 0, 32);
    for (int p = 0; p < 4; p++) {
        for (int l = 0; l < 32; l++) {
            int lo = L[64 * p + l], hi = L[64 * p + 32 + l];
            qs[32 * p + l] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
            if (qh)
                qh[l] |= (uint8_t)((((lo >> 4) & 1) << (2 * p)) | (((hi >> 4) & 1) << (2 * p + 1)));
        }
    }
}

/* Q6_K: 16 sub-blocks of 16, symmetric 6-bit, int8 sub-scales, f16 d. */
static void q6_k_block(const float *x, uint8_t *b)
{
    float sub[16], max_sub = 0;
    for (int j = 0; j < 16; j++) {
        float amax = 0;
        for (int l = 0; l < 16; l++)
            amax = fmaxf(amax, fabsf(x[16 * j + l]));
        sub[j] = amax / 31.0f;
        max_sub = fmaxf(max_sub, sub[j]);
    }
    float d = f16_round(max_sub / 127.0f);
    int8_t sc[16];
    uint8_t L[QK_K];
    for (int j = 0; j < 16; j++) {
        sc[j] = (int8_t)(d > 0 ? clampi((int)ceilf(sub[j] / d), 0, 127) : 0);
        float dd = d * (float)sc[j];
        float id = dd > 0 ? 1.0f / dd : 0.0f;
        for (int l = 0; l < 16; l++)
            L[16 * j + l] = (uint8_t)(clampi((int)lrintf(x[16 * j + l] * id), -32, 31) + 32);
    }
    uint8_t *ql = b, *qh = b + 128;
    for (int h = 0; h < 2; h++) {
        const uint8_t *Lh = L + 128 * h;
        for (int l = 0; l < 32; l++) {
            ql[64 * h + l] = (uint8_t)((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
            ql[64 * h + l + 32] = (uint8_t)((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
            qh[32 * h + l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                       ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
        }
    }
    memcpy(b + 192, sc, 16);
    put_f16(b + 208, d);
}

bool aarmd_quant_can_write(uint32_t type)
{
    switch (type) {
    case AARMD_TYPE_F32: case AARMD_TYPE_F16: case AARMD_TYPE_BF16:
    case AARMD_TYPE_Q8_0: case AARMD_TYPE_Q4_0: case AARMD_TYPE_Q4_1:
    case AARMD_TYPE_Q5_0: case AARMD_TYPE_Q5_1:
    case AARMD_TYPE_Q4_K: case AARMD_TYPE_Q5_K: case AARMD_TYPE_Q6_K:
        return true;
    default:
        return false;
    }
}

int aarmd_quantize_row(uint32_t type, const float *src, void *dst, int64_t n)
{
    uint8_t *out = dst;
    if (!src || !dst || n < 0 || !aarmd_quant_can_write(type))
        return AARMD_EINVAL;
    switch (type) {
    case AARMD_TYPE_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return AARMD_OK;
    case AARMD_TYPE_F16:
    case AARMD_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = type == AARMD_TYPE_F16 ? aarmd_fp32_to_fp16(src[i]) : aarmd_fp32_to_bf16(src[i]);
            out[2 * i] = (uint8_t)(h & 0xFF);
            out[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return AARMD_OK;
    default:
        break;
    }
    const int64_t blk = (type == AARMD_TYPE_Q4_K || type == AARMD_TYPE_Q5_K || type == AARMD_TYPE_Q6_K) ? QK_K : QK;
    if (n % blk)
        return AARMD_EINVAL;
    for (int64_t i = 0; i < n / blk; i++) {
        const float *x = src + i * blk;
        switch (type) {
        case AARMD_TYPE_Q8_0: q8_0_block(x, out + 34 * i); break;
        case AARMD_TYPE_Q4_0: qx_0_block(x, out + 18 * i, 4); break;
        case AARMD_TYPE_Q5_0: qx_0_block(x, out + 22 * i, 5); break;
        case AARMD_TYPE_Q4_1: qx_1_block(x, out + 20 * i, 4); break;
        case AARMD_TYPE_Q5_1: qx_1_block(x, out + 24 * i, 5); break;
        case AARMD_TYPE_Q4_K: qx_k_block(x, out + 144 * i, 4); break;
        case AARMD_TYPE_Q5_K: qx_k_block(x, out + 176 * i, 5); break;
        case AARMD_TYPE_Q6_K: q6_k_block(x, out + 210 * i); break;
        default: return AARMD_EINVAL;
        }
    }
    return AARMD_OK;
}
