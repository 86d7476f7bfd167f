/*
 * quant.metal — weight dequantization on the GPU: matrix-vector products
 * (one simdgroup per weight row, simd_sum reduction), tiled matrix-matrix
 * products with 8x8 simdgroup matrices (prefill) and embedding lookup,
 * for F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
 * Block layouts are ggml's (plugins/cpu/kernels.h); values match cpu_dequant.
 */
#include "metal_common.h"

inline float aarmd_ld_f16(device const uchar *p)
{
    return float(as_type<half>(ushort(uint(p[0]) | (uint(p[1]) << 8))));
}

inline uint aarmd_ld_u32(device const uchar *p)
{
    return uint(p[0]) | (uint(p[1]) << 8) | (uint(p[2]) << 16) | (uint(p[3]) << 24);
}

/* K-quant 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes at q. */
inline void aarmd_scale_min_k4(uint j, device const uchar *q, thread float &sc, thread float &mn)
{
    if (j < 4) {
        sc = float(q[j] & 63);
        mn = float(q[j + 4] & 63);
    } else {
        sc = float((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        mn = float((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/*
 * deq8<T>(blk, sub, out): the 8 elements 8*sub .. 8*sub+7 of the block at blk.
 * Operation order as in cpu_dequant, so values are exact f32 (no FMA needed).
 */
template <int T> inline void aarmd_deq8(device const uchar *blk, uint sub, thread float *out);

template <> inline void aarmd_deq8<AARMD_MTL_F32>(device const uchar *blk, uint sub, thread float *out)
{
    (void)sub;
    device const float *p = (device const float *)blk;
    for (uint i = 0; i < 8; i++)
        out[i] = p[i];
}

template <> inline void aarmd_deq8<AARMD_MTL_F16>(device const uchar *blk, uint sub, thread float *out)
{
    (void)sub;
    device const half *p = (device const half *)blk;
    for (uint i = 0; i < 8; i++)
        out[i] = float(p[i]);
}

template <> inline void aarmd_deq8<AARMD_MTL_BF16>(device const uchar *blk, uint sub, thread float *out)
{
    (void)sub;
    device const ushort *p = (device const ushort *)blk;
    for (uint i = 0; i < 8; i++)
        out[i] = as_type<float>(uint(p[i]) << 16);
}

template <> inline void aarmd_deq8<AARMD_MTL_Q4_0>(device const uchar *blk, uint sub, thread float *out)
{
    float d = aarmd_ld_f16(blk);
    device const uchar *qs = blk + 2 + 8 * (sub & 1);
    uint sh = sub >= 2 ? 4 : 0;
    for (uint i = 0; i < 8; i++)
        out[i] = float(int((qs[i] >> sh) & 0xF) - 8) * d;
}

template <> inline void aarmd_deq8<AARMD_MTL_Q4_1>(device const uchar *blk, uint sub, thread float *out)
{
    float d = aarmd_ld_f16(blk), m = aarmd_ld_f16(blk + 2);
    device const uchar *qs = blk + 4 + 8 * (sub & 1);
    uint sh = sub >= 2 ? 4 : 0;
    for (uint i = 0; i < 8; i++)
        out[i] = float((qs[i] >> sh) & 0xF) * d + m;
}

template <> inline void aarmd_deq8<AARMD_MTL_Q5_0>(device const uchar *blk, uint sub, thread float *out)
{
    float d = aarmd_ld_f16(blk);
    uint qh = aarmd_ld_u32(blk + 2);
    device const uchar *qs = blk + 6 + 8 * (sub & 1);
    uint sh = sub >= 2 ? 4 : 0;
    for (uint i = 0; i < 8; i++) {
        uint e = 8 * sub + i;
        int q = int(((qs[i] >> sh) & 0xF) | (((qh >> e) & 1) << 4));
        out[i] = float(q - 16) * d;
    }
}

template <> inline void aarmd_deq8<AARMD_MTL_Q5_1>(device const uchar *blk, uint sub, thread float *out)
{
    float d = aarmd_ld_f16(blk), m = aarmd_ld_f16(blk + 2);
    uint qh = aarmd_ld_u32(blk + 4);
    device const uchar *qs = blk + 8 + 8 * (sub & 1);
    uint sh = sub >= 2 ? 4 : 0;
    for (uint i = 0; i < 8; i++) {
        uint e = 8 * sub + i;
        uint q = ((qs[i] >> sh) & 0xF) | (((qh >> e) & 1) << 4);
        out[i] = float(q) * d + m;
    }
}

template <> inline void aarmd_deq8<AARMD_MTL_Q8_0>(device const uchar *blk, uint sub, thread float *out)
{
    float d = aarmd_ld_f16(blk);
    device const char *qs = (device const char *)(blk + 2) + 8 * sub;
    for (uint i = 0; i < 8; i++)
        out[i] = float(qs[i]) * d;
}

/* Q4_K / Q5_K: element e = 8*sub + i; j = e/64, l = e%32, high nibble when e%64 >= 32. */
template <> inline void aarmd_deq8<AARMD_MTL_Q4_K>(device const uchar *blk, uint sub, thread float *out)
{
    float d = aarmd_ld_f16(blk), dmin = aarmd_ld_f16(blk + 2);
    uint e0 = 8 * sub, j = e0 / 64, hi = (e0 % 64) >= 32 ? 1 : 0, l0 = e0 % 32;
    float sc, mn;
    aarmd_scale_min_k4(2 * j + hi, blk + 4, sc, mn);
    float d1 = d * sc, m1 = dmin * mn;
    device const uchar *qs = blk + 16 + 32 * j + l0;
    uint sh = hi ? 4 : 0;
    for (uint i = 0; i < 8; i++)
        out[i] = d1 * float((qs[i] >> sh) & 0xF) - m1;
}

template <> inline void aarmd_deq8<AARMD_MTL_Q5_K>(device const uchar *blk, uint sub, thread float *out)
{
    float d = aarmd_ld_f16(blk), dmin = aarmd_ld_f16(blk + 2);
    uint e0 = 8 * sub, j = e0 / 64, hi = (e0 % 64) >= 32 ? 1 : 0, l0 = e0 % 32;
    float sc, mn;
    aarmd_scale_min_k4(2 * j + hi, blk + 4, sc, mn);
    float d1 = d * sc, m1 = dmin * mn;
    device const uchar *qh = blk + 16 + l0;
    device const uchar *qs = blk + 48 + 32 * j + l0;
    uint sh = hi ? 4 : 0, hb = 2 * j + hi;
    for (uint i = 0; i < 8; i++)
        out[i] = d1 * float(((qs[i] >> sh) & 0xF) + (((qh[i] >> hb) & 1) << 4)) - m1;
}

/* Q6_K: element e = 128h + 32k + l; low bits from ql, 2 high bits from qh. */
template <> inline void aarmd_deq8<AARMD_MTL_Q6_K>(device const uchar *blk, uint sub, thread float *out)
{
    float d = aarmd_ld_f16(blk + 208);
    uint e0 = 8 * sub, h = e0 / 128, k = (e0 % 128) / 32, l0 = e0 % 32;
    device const uchar *ql = blk + 64 * h + 32 * (k & 1) + l0;
    device const uchar *qh = blk + 128 + 32 * h + l0;
    device const char *scales = (device const char *)(blk + 192);
    float sc = float(scales[8 * h + l0 / 16 + 2 * k]);
    uint sh = k >= 2 ? 4 : 0;
    for (uint i = 0; i < 8; i++) {
        int q = int(((ql[i] >> sh) & 0xF) | (((qh[i] >> (2 * k)) & 3) << 4)) - 32;
        out[i] = d * sc * float(q);
    }
}

template <int T>
inline void aarmd_mv_body(constant aarmd_mtl_mv_args &a, device const uchar *w, device const float *x,
                          device float *y, uint3 tg, uint sg, uint lane)
{
    uint r = tg.x * AARMD_MTL_MV_NSG + sg, t = tg.y;
    if (r >= a.n_out || t >= a.n_tok)
        return;   /* uniform across the simdgroup */
    device const uchar *row = w + (ulong)r * a.row_bytes;
    device const float *xt = x + (ulong)t * a.x_stride;
    uint n_chunks = a.n_in / 8;
    float acc = 0.0f;
    for (uint c = lane; c < n_chunks; c += 32) {
        float v[8];
        aarmd_deq8<T>(row + (ulong)(c / a.blk_chunks) * a.blk_bytes, c % a.blk_chunks, v);
        device const float *xc = xt + 8 * c;
        for (uint i = 0; i < 8; i++)
            acc += v[i] * xc[i];
    }
    acc = simd_sum(acc);
    if (lane == 0)
        y[(ulong)t * a.y_stride + r] = acc;
}

template <int T>
inline void aarmd_get_rows_body(constant aarmd_mtl_get_rows_args &a, device const uchar *w,
                                device const int *tok, device float *out, uint t, uint tid, uint nt)
{
    device const uchar *row = w + (ulong)tok[t] * a.row_bytes;
    for (uint c = tid; c < a.n / 8; c += nt) {
        float v[8];
        aarmd_deq8<T>(row + (ulong)(c / a.blk_chunks) * a.blk_bytes, c % a.blk_chunks, v);
        for (uint i = 0; i < 8; i++)
            out[(ulong)t * a.n + 8 * c + i] = v[i] * a.scale;
    }
}

/*
 * Tile of 32 weight rows x 32 tokens; 4 simdgroups, each 16 rows x 16 tokens
 * as 2 x 2 blocks of 8x8. Per 32-wide step of n_in: the weight tile is
 * dequantized into sw[row][k], the activations transposed into sx[k][token],
 * then C += A(sw) * B(sx) in 8x8 blocks. Out-of-range rows and tokens are zeros
 * in the tiles and not written.
 */
template <int T>
inline void aarmd_mm_body(constant aarmd_mtl_mv_args &a, device const uchar *w, device const float *x,
                          device float *y, uint3 tg, uint tid, uint sg, AARMD_TG float *sw, AARMD_TG float *sx,
                          AARMD_TG float *sc)
{
    const uint TL = AARMD_MTL_MM_TILE;
    uint r0 = tg.x * TL, t0 = tg.y * TL;
    uint rb = (sg / 2) * 16, tb = (sg % 2) * 16;
    simdgroup_float8x8 c[2][2];
    for (uint i = 0; i < 2; i++)
        for (uint j = 0; j < 2; j++)
            c[i][j] = make_filled_simdgroup_matrix<float, 8>(0.0f);
    uint lr = tid / 4, lc = tid % 4;   /* this thread's row (or token) and 8-wide chunk of the tile */
    for (uint k0 = 0; k0 < a.n_in; k0 += TL) {
        float v[8];
        uint r = r0 + lr;
        if (r < a.n_out) {
            uint ch = k0 / 8 + lc;
            aarmd_deq8<T>(w + (ulong)r * a.row_bytes + (ulong)(ch / a.blk_chunks) * a.blk_bytes, ch % a.blk_chunks, v);
        } else {
            for (uint i = 0; i < 8; i++)
                v[i] = 0.0f;
        }
        for (uint i = 0; i < 8; i++)
            sw[lr * TL + lc * 8 + i] = v[i];
        uint t = t0 + lr;
        for (uint i = 0; i < 8; i++)
            sx[(lc * 8 + i) * TL + lr] = t < a.n_tok ? x[(ulong)t * a.x_stride + k0 + lc * 8 + i] : 0.0f;
        threadgroup_barrier(mem_flags::mem_threadgroup);
        for (uint kk = 0; kk < TL; kk += 8) {
            simdgroup_float8x8 ma[2], mb[2];
            for (uint i = 0; i < 2; i++)
                simdgroup_load(ma[i], sw + (rb + 8 * i) * TL + kk, TL);
            for (uint j = 0; j < 2; j++)
                simdgroup_load(mb[j], sx + kk * TL + tb + 8 * j, TL);
            for (uint i = 0; i < 2; i++)
                for (uint j = 0; j < 2; j++)
                    simdgroup_multiply_accumulate(c[i][j], ma[i], mb[j], c[i][j]);
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    for (uint i = 0; i < 2; i++)
        for (uint j = 0; j < 2; j++)
            simdgroup_store(c[i][j], sc + (rb + 8 * i) * TL + tb + 8 * j, TL);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint idx = tid; idx < TL * TL; idx += 32 * AARMD_MTL_MM_NSG) {
        uint t = idx / TL, r = idx % TL;   /* consecutive threads write consecutive rows of one token */
        if (r0 + r < a.n_out && t0 + t < a.n_tok)
            y[(ulong)(t0 + t) * a.y_stride + r0 + r] = sc[r * TL + t];
    }
}

#define AARMD_QUANT_KERNELS(NAME, T)                                                            \
    kernel void aarmd_mv_##NAME(constant aarmd_mtl_mv_args &a AARMD_BUFFER(0),                  \
                                device const uchar *w AARMD_BUFFER(1),                          \
                                device const float *x AARMD_BUFFER(2),                          \
                                device float *y AARMD_BUFFER(3), uint3 tg AARMD_TG_POS,         \
                                uint sg AARMD_SIMD_GROUP, uint lane AARMD_SIMD_LANE)            \
    {                                                                                           \
        aarmd_mv_body<T>(a, w, x, y, tg, sg, lane);                                             \
    }                                                                                           \
    kernel void aarmd_get_rows_##NAME(constant aarmd_mtl_get_rows_args &a AARMD_BUFFER(0),      \
                                      device const uchar *w AARMD_BUFFER(1),                    \
                                      device const int *tok AARMD_BUFFER(2),                    \
                                      device float *out AARMD_BUFFER(3), uint3 tg AARMD_TG_POS, \
                                      uint tid AARMD_TID_IN_TG, uint3 ntg AARMD_TG_SIZE)        \
    {                                                                                           \
        aarmd_get_rows_body<T>(a, w, tok, out, tg.x, tid, ntg.x);                               \
    }                                                                                           \
    kernel void aarmd_mm_##NAME(constant aarmd_mtl_mv_args &a AARMD_BUFFER(0),                  \
                                device const uchar *w AARMD_BUFFER(1),                          \
                                device const float *x AARMD_BUFFER(2),                          \
                                device float *y AARMD_BUFFER(3), uint3 tg AARMD_TG_POS,         \
                                uint tid AARMD_TID_IN_TG, uint sg AARMD_SIMD_GROUP)             \
    {                                                                                           \
        threadgroup float sw[AARMD_MTL_MM_TILE * AARMD_MTL_MM_TILE];                            \
        threadgroup float sx[AARMD_MTL_MM_TILE * AARMD_MTL_MM_TILE];                            \
        threadgroup float sc[AARMD_MTL_MM_TILE * AARMD_MTL_MM_TILE];                            \
        aarmd_mm_body<T>(a, w, x, y, tg, tid, sg, sw, sx, sc);                                  \
    }

AARMD_QUANT_KERNELS(f32, AARMD_MTL_F32)
AARMD_QUANT_KERNELS(f16, AARMD_MTL_F16)
AARMD_QUANT_KERNELS(bf16, AARMD_MTL_BF16)
AARMD_QUANT_KERNELS(q4_0, AARMD_MTL_Q4_0)
AARMD_QUANT_KERNELS(q4_1, AARMD_MTL_Q4_1)
AARMD_QUANT_KERNELS(q5_0, AARMD_MTL_Q5_0)
AARMD_QUANT_KERNELS(q5_1, AARMD_MTL_Q5_1)
AARMD_QUANT_KERNELS(q8_0, AARMD_MTL_Q8_0)
AARMD_QUANT_KERNELS(q4_k, AARMD_MTL_Q4_K)
AARMD_QUANT_KERNELS(q5_k, AARMD_MTL_Q5_K)
AARMD_QUANT_KERNELS(q6_k, AARMD_MTL_Q6_K)
