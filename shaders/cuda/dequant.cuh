/*
 * dequant.cuh — per-type decoding of one item (32 elements) of a GGUF row for
 * the CUDA weight kernels: dec<T> to 32 floats, decq<T> to 32 int8-range
 * values with affine coefficients (the Q8-activation path). Device-only,
 * header-only; no kernels here.
 */
#ifndef AARMD_CUDA_DEQUANT_CUH
#define AARMD_CUDA_DEQUANT_CUH

#include <cuda_fp16.h>
#include <stdint.h>

#include "../../core/abi/aarmd_backend.h"

/* ---- decoding 32 elements (item `it` of a row) ------------------------------ */

__device__ __forceinline__ float ld_f16(const uint8_t *p)
{
    return __half2float(*reinterpret_cast<const __half *>(p));
}

__device__ __forceinline__ void scale_min_k4(int j, const uint8_t *q, float *sc, float *mn)
{
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *mn = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *mn = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

template <uint32_t T> struct dec;

template <> struct dec<AARMD_TYPE_F32> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, float *w)
    {
        const float4 *p = reinterpret_cast<const float4 *>(row) + it * 8;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float4 v = p[i];
            w[4 * i] = v.x; w[4 * i + 1] = v.y; w[4 * i + 2] = v.z; w[4 * i + 3] = v.w;
        }
    }
};

template <> struct dec<AARMD_TYPE_F16> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, float *w)
    {
        const uint4 *p = reinterpret_cast<const uint4 *>(row) + it * 4;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint4 v = p[i];
            const __half2 *h = reinterpret_cast<const __half2 *>(&v);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float2 f = __half22float2(h[j]);
                w[8 * i + 2 * j] = f.x;
                w[8 * i + 2 * j + 1] = f.y;
            }
        }
    }
};

template <> struct dec<AARMD_TYPE_BF16> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, float *w)
    {
        const uint4 *p = reinterpret_cast<const uint4 *>(row) + it * 4;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint4 v = p[i];
            uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                w[8 * i + 2 * j] = __uint_as_float(u[j] << 16);
                w[8 * i + 2 * j + 1] = __uint_as_float(u[j] & 0xFFFF0000u);
            }
        }
    }
};

template <> struct dec<AARMD_TYPE_Q4_0> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, float *w)
    {
        const uint8_t *b = row + (size_t)it * 18;
        float d = ld_f16(b);
        const uint16_t *qs = reinterpret_cast<const uint16_t *>(b + 2);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            uint32_t q = qs[j];
            w[2 * j] = (float)((int)(q & 0xF) - 8) * d;
            w[2 * j + 1] = (float)((int)((q >> 8) & 0xF) - 8) * d;
            w[2 * j + 16] = (float)((int)((q >> 4) & 0xF) - 8) * d;
            w[2 * j + 17] = (float)((int)((q >> 12) & 0xF) - 8) * d;
        }
    }
};

template <> struct dec<AARMD_TYPE_Q4_1> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, float *w)
    {
        const uint8_t *b = row + (size_t)it * 20;
        float d = ld_f16(b), m = ld_f16(b + 2);
        const uint32_t *qs = reinterpret_cast<const uint32_t *>(b + 4);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint32_t q = qs[j];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                w[4 * j + k] = (float)((q >> (8 * k)) & 0xF) * d + m;
                w[4 * j + k + 16] = (float)((q >> (8 * k + 4)) & 0xF) * d + m;
            }
        }
    }
};

__device__ __forceinline__ uint32_t ld_qh(const uint8_t *p)
{
    const uint16_t *h = reinterpret_cast<const uint16_t *>(p);
    return (uint32_t)h[0] | ((uint32_t)h[1] << 16);
}

template <> struct dec<AARMD_TYPE_Q5_0> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, float *w)
    {
        const uint8_t *b = row + (size_t)it * 22;
        float d = ld_f16(b);
        uint32_t qh = ld_qh(b + 2);
        const uint16_t *qs = reinterpret_cast<const uint16_t *>(b + 6);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            uint32_t q = qs[j];
#pragma unroll
            for (int k = 0; k < 2; k++) {
                int e = 2 * j + k;
                uint32_t byte = (q >> (8 * k)) & 0xFF;
                int q0 = (int)((byte & 0xF) | (((qh >> e) & 1) << 4));
                int q1 = (int)((byte >> 4) | (((qh >> (e + 16)) & 1) << 4));
                w[e] = (float)(q0 - 16) * d;
                w[e + 16] = (float)(q1 - 16) * d;
            }
        }
    }
};

template <> struct dec<AARMD_TYPE_Q5_1> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, float *w)
    {
        const uint8_t *b = row + (size_t)it * 24;
        float d = ld_f16(b), m = ld_f16(b + 2);
        uint32_t qh = ld_qh(b + 4);
        const uint32_t *qs = reinterpret_cast<const uint32_t *>(b + 8);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint32_t q = qs[j];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                int e = 4 * j + k;
                uint32_t byte = (q >> (8 * k)) & 0xFF;
                uint32_t q0 = (byte & 0xF) | (((qh >> e) & 1) << 4);
                uint32_t q1 = (byte >> 4) | (((qh >> (e + 16)) & 1) << 4);
                w[e] = (float)q0 * d + m;
                w[e + 16] = (float)q1 * d + m;
            }
        }
    }
};

template <> struct dec<AARMD_TYPE_Q8_0> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, float *w)
    {
        const uint8_t *b = row + (size_t)it * 34;
        float d = ld_f16(b);
        const uint16_t *qs = reinterpret_cast<const uint16_t *>(b + 2);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            uint32_t q = qs[j];
            w[2 * j] = (float)(int8_t)(q & 0xFF) * d;
            w[2 * j + 1] = (float)(int8_t)(q >> 8) * d;
        }
    }
};

/* K-quants: item `it` is sub-block it % 8 of super-block it / 8. */
template <> struct dec<AARMD_TYPE_Q4_K> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, float *w)
    {
        const uint8_t *b = row + (size_t)(it >> 3) * 144;
        int s = it & 7;
        float d = ld_f16(b), dmin = ld_f16(b + 2), sc, mn;
        scale_min_k4(s, b + 4, &sc, &mn);
        float d1 = d * sc, m1 = dmin * mn;
        const uint4 *qs = reinterpret_cast<const uint4 *>(b + 16 + 32 * (s >> 1));
        int sh = (s & 1) * 4;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            uint4 v = qs[i];
            uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int k = 0; k < 4; k++)
                    w[16 * i + 4 * j + k] = d1 * (float)((u[j] >> (8 * k + sh)) & 0xF) - m1;
        }
    }
};

template <> struct dec<AARMD_TYPE_Q5_K> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, float *w)
    {
        const uint8_t *b = row + (size_t)(it >> 3) * 176;
        int s = it & 7;
        float d = ld_f16(b), dmin = ld_f16(b + 2), sc, mn;
        scale_min_k4(s, b + 4, &sc, &mn);
        float d1 = d * sc, m1 = dmin * mn;
        const uint4 *qh = reinterpret_cast<const uint4 *>(b + 16);
        const uint4 *qs = reinterpret_cast<const uint4 *>(b + 48 + 32 * (s >> 1));
        int sh = (s & 1) * 4;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            uint4 v = qs[i], h = qh[i];
            uint32_t u[4] = {v.x, v.y, v.z, v.w};
            uint32_t hh[4] = {h.x, h.y, h.z, h.w};
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    uint32_t q = ((u[j] >> (8 * k + sh)) & 0xF) | (((hh[j] >> (8 * k + s)) & 1) << 4);
                    w[16 * i + 4 * j + k] = d1 * (float)q - m1;
                }
        }
    }
};

template <> struct dec<AARMD_TYPE_Q6_K> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, float *w)
    {
        const uint8_t *b = row + (size_t)(it >> 3) * 210;
        int s = it & 7, h = s >> 2, k = s & 3;
        float d = ld_f16(b + 208);
        const int8_t *sc = reinterpret_cast<const int8_t *>(b + 192) + 8 * h + 2 * k;
        const uint16_t *ql = reinterpret_cast<const uint16_t *>(b + 64 * h + 32 * (k & 1));
        const uint16_t *qh = reinterpret_cast<const uint16_t *>(b + 128 + 32 * h);
        int shl = (k >> 1) * 4, shh = 2 * k;
        float d0 = d * (float)sc[0], d1 = d * (float)sc[1];
#pragma unroll
        for (int j = 0; j < 16; j++) {
            uint32_t l = ql[j], hb = qh[j];
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int q = (int)(((l >> (8 * e + shl)) & 0xF) | (((hb >> (8 * e + shh)) & 3) << 4)) - 32;
                int idx = 2 * j + e;
                w[idx] = (idx < 16 ? d0 : d1) * (float)q;
            }
        }
    }
};

/* ---- Q8 activations and the dp4a matvec ----------------------------------------- */
/*
 * Decode-time path for quantized weights: activations are quantized per 32
 * (int8 + F32 scale, as the CPU backend's Q8 activations) and each item of 32
 * weights becomes 8 words of bytes q with affine coefficients, so
 *   dot = dx * (a0*S0 + a1*S1 + b0*X0 + b1*X1)
 * with S_h = sum q*xq and X_h = sum xq over the item's halves (16 elements).
 */
struct q8item {
    int q[8];
    float a0, a1, b0, b1;
};

__device__ __forceinline__ uint32_t ld_u32_2(const uint8_t *p)
{
    const uint16_t *h = reinterpret_cast<const uint16_t *>(p);
    return (uint32_t)h[0] | ((uint32_t)h[1] << 16);
}

__device__ __forceinline__ uint32_t spread4(uint32_t h)
{
    return ((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25);
}

template <uint32_t T> struct decq;

template <> struct decq<AARMD_TYPE_Q4_0> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, q8item &o)
    {
        const uint8_t *b = row + (size_t)it * 18;
        float d = ld_f16(b);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t w = ld_u32_2(b + 2 + 4 * k);
            o.q[k] = (int)(w & 0x0F0F0F0Fu);
            o.q[k + 4] = (int)((w >> 4) & 0x0F0F0F0Fu);
        }
        o.a0 = o.a1 = d;
        o.b0 = o.b1 = -8.0f * d;
    }
};

template <> struct decq<AARMD_TYPE_Q4_1> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, q8item &o)
    {
        const uint8_t *b = row + (size_t)it * 20;
        float d = ld_f16(b), m = ld_f16(b + 2);
        const uint32_t *p = reinterpret_cast<const uint32_t *>(b + 4);
        uint32_t w[4] = {p[0], p[1], p[2], p[3]};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            o.q[k] = (int)(w[k] & 0x0F0F0F0Fu);
            o.q[k + 4] = (int)((w[k] >> 4) & 0x0F0F0F0Fu);
        }
        o.a0 = o.a1 = d;
        o.b0 = o.b1 = m;
    }
};

template <> struct decq<AARMD_TYPE_Q5_0> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, q8item &o)
    {
        const uint8_t *b = row + (size_t)it * 22;
        float d = ld_f16(b);
        uint32_t qh = ld_u32_2(b + 2);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t w = ld_u32_2(b + 6 + 4 * k);
            o.q[k] = (int)((w & 0x0F0F0F0Fu) | spread4((qh >> (4 * k)) & 0xF));
            o.q[k + 4] = (int)(((w >> 4) & 0x0F0F0F0Fu) | spread4((qh >> (16 + 4 * k)) & 0xF));
        }
        o.a0 = o.a1 = d;
        o.b0 = o.b1 = -16.0f * d;
    }
};

template <> struct decq<AARMD_TYPE_Q5_1> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, q8item &o)
    {
        const uint8_t *b = row + (size_t)it * 24;
        float d = ld_f16(b), m = ld_f16(b + 2);
        uint32_t qh = *reinterpret_cast<const uint32_t *>(b + 4);
        const uint32_t *p = reinterpret_cast<const uint32_t *>(b + 8);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t w = p[k];
            o.q[k] = (int)((w & 0x0F0F0F0Fu) | spread4((qh >> (4 * k)) & 0xF));
            o.q[k + 4] = (int)(((w >> 4) & 0x0F0F0F0Fu) | spread4((qh >> (16 + 4 * k)) & 0xF));
        }
        o.a0 = o.a1 = d;
        o.b0 = o.b1 = m;
    }
};

template <> struct decq<AARMD_TYPE_Q8_0> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, q8item &o)
    {
        const uint8_t *b = row + (size_t)it * 34;
        float d = ld_f16(b);
#pragma unroll
        for (int k = 0; k < 8; k++)
            o.q[k] = (int)ld_u32_2(b + 2 + 4 * k);
        o.a0 = o.a1 = d;
        o.b0 = o.b1 = 0.0f;
    }
};

template <> struct decq<AARMD_TYPE_Q4_K> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, q8item &o)
    {
        const uint8_t *b = row + (size_t)(it >> 3) * 144;
        int s = it & 7;
        float d = ld_f16(b), dmin = ld_f16(b + 2), sc, mn;
        scale_min_k4(s, b + 4, &sc, &mn);
        const uint4 *qs = reinterpret_cast<const uint4 *>(b + 16 + 32 * (s >> 1));
        int sh = (s & 1) * 4;
        uint4 v0 = qs[0], v1 = qs[1];
        uint32_t u[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
#pragma unroll
        for (int k = 0; k < 8; k++)
            o.q[k] = (int)((u[k] >> sh) & 0x0F0F0F0Fu);
        o.a0 = o.a1 = d * sc;
        o.b0 = o.b1 = -(dmin * mn);
    }
};

template <> struct decq<AARMD_TYPE_Q5_K> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, q8item &o)
    {
        const uint8_t *b = row + (size_t)(it >> 3) * 176;
        int s = it & 7;
        float d = ld_f16(b), dmin = ld_f16(b + 2), sc, mn;
        scale_min_k4(s, b + 4, &sc, &mn);
        const uint4 *qh = reinterpret_cast<const uint4 *>(b + 16);
        const uint4 *qs = reinterpret_cast<const uint4 *>(b + 48 + 32 * (s >> 1));
        int sh = (s & 1) * 4;
        uint4 v0 = qs[0], v1 = qs[1], h0 = qh[0], h1 = qh[1];
        uint32_t u[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
        uint32_t hh[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
#pragma unroll
        for (int k = 0; k < 8; k++)
            o.q[k] = (int)(((u[k] >> sh) & 0x0F0F0F0Fu) | (((hh[k] >> s) & 0x01010101u) << 4));
        o.a0 = o.a1 = d * sc;
        o.b0 = o.b1 = -(dmin * mn);
    }
};

template <> struct decq<AARMD_TYPE_Q6_K> {
    static __device__ __forceinline__ void run(const uint8_t *row, int it, q8item &o)
    {
        const uint8_t *b = row + (size_t)(it >> 3) * 210;
        int s = it & 7, h = s >> 2, k = s & 3;
        float d = ld_f16(b + 208);
        const int8_t *sc = reinterpret_cast<const int8_t *>(b + 192) + 8 * h + 2 * k;
        const uint8_t *ql = b + 64 * h + 32 * (k & 1);
        const uint8_t *qh = b + 128 + 32 * h;
        int shl = (k >> 1) * 4, shh = 2 * k;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            uint32_t l = ld_u32_2(ql + 4 * j), hb = ld_u32_2(qh + 4 * j);
            o.q[j] = (int)(((l >> shl) & 0x0F0F0F0Fu) | (((hb >> shh) & 0x03030303u) << 4));
        }
        o.a0 = d * (float)sc[0];
        o.a1 = d * (float)sc[1];
        o.b0 = -32.0f * o.a0;
        o.b1 = -32.0f * o.a1;
    }
};

/* One 16-byte chunk of a float-weight row (F32: 4 weights, F16/BF16: 8) as floats;
 * shared by the float matvecs of matmul.cu and the streaming matvec of matvec.cu. */
template <uint32_t T> struct chunk16;

template <> struct chunk16<AARMD_TYPE_F32> {
    enum { N = 4 };
    static __device__ __forceinline__ void run(uint4 v, float *w)
    {
        w[0] = __uint_as_float(v.x); w[1] = __uint_as_float(v.y);
        w[2] = __uint_as_float(v.z); w[3] = __uint_as_float(v.w);
    }
};

template <> struct chunk16<AARMD_TYPE_F16> {
    enum { N = 8 };
    static __device__ __forceinline__ void run(uint4 v, float *w)
    {
        const __half2 *h = reinterpret_cast<const __half2 *>(&v);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float2 f = __half22float2(h[j]);
            w[2 * j] = f.x;
            w[2 * j + 1] = f.y;
        }
    }
};

template <> struct chunk16<AARMD_TYPE_BF16> {
    enum { N = 8 };
    static __device__ __forceinline__ void run(uint4 v, float *w)
    {
        uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            w[2 * j] = __uint_as_float(u[j] << 16);
            w[2 * j + 1] = __uint_as_float(u[j] & 0xFFFF0000u);
        }
    }
};

#endif
