/*
 * ops.metal — the decoder's per-row primitives on the GPU: RMS and layer
 * norm, rotary embedding (cos/sin from the host), softmax, gated activations,
 * add / bias, scale and softcap, and the F16 KV-cache store. Semantics are
 * those of plugins/cpu/ops.c; matmuls live in quant.metal, attention in
 * attention.metal.
 */
#include "metal_common.h"

/* Sum of v over the threadgroup; every thread gets it. part holds >= nsg floats. */
inline float aarmd_tg_sum(float v, AARMD_TG float *part, uint sg, uint lane, uint nsg)
{
    v = simd_sum(v);
    threadgroup_barrier(mem_flags::mem_threadgroup);   /* part may still be read from a previous call */
    if (lane == 0)
        part[sg] = v;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    return simd_sum(lane < nsg ? part[lane] : 0.0f);
}

inline float aarmd_tg_max(float v, AARMD_TG float *part, uint sg, uint lane, uint nsg)
{
    v = simd_max(v);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (lane == 0)
        part[sg] = v;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    return simd_max(lane < nsg ? part[lane] : -INFINITY);
}

kernel void aarmd_norm(constant aarmd_mtl_norm_args &a AARMD_BUFFER(0), device const float *x AARMD_BUFFER(1),
                       device float *out AARMD_BUFFER(2), device const float *w AARMD_BUFFER(3),
                       device const float *b AARMD_BUFFER(4), uint3 tg AARMD_TG_POS, uint tid AARMD_TID_IN_TG,
                       uint3 ntg AARMD_TG_SIZE, uint sg AARMD_SIMD_GROUP, uint lane AARMD_SIMD_LANE,
                       uint nsg AARMD_SIMDS_PER_TG)
{
    threadgroup float part[32];
    if (tg.x >= a.rows)
        return;
    device const float *xr = x + (ulong)tg.x * a.stride;
    device float *yr = out + (ulong)tg.x * a.stride;
    float mean = 0.0f;
    if (a.kind == 1) {
        float s = 0.0f;
        for (uint i = tid; i < a.n; i += ntg.x)
            s += xr[i];
        mean = aarmd_tg_sum(s, part, sg, lane, nsg) / float(a.n);
    }
    float ss = 0.0f;
    for (uint i = tid; i < a.n; i += ntg.x) {
        float d = xr[i] - mean;
        ss += d * d;
    }
    float r = rsqrt(aarmd_tg_sum(ss, part, sg, lane, nsg) / float(a.n) + a.eps);
    /* every thread has read its inputs above before anyone writes (out may alias x) */
    threadgroup_barrier(mem_flags::mem_device);
    for (uint i = tid; i < a.n; i += ntg.x) {
        float v = (xr[i] - mean) * r;
        if (a.has_w)
            v *= w[i];
        if (a.has_b)
            v += b[i];
        yr[i] = v;
    }
}

kernel void aarmd_rope(constant aarmd_mtl_rope_args &a AARMD_BUFFER(0), device float *x AARMD_BUFFER(1),
                       device const float *cs AARMD_BUFFER(2), uint3 tg AARMD_TG_POS,
                       uint3 gp AARMD_TPOS_IN_GRID)
{
    uint i = gp.x, h = tg.y, t = tg.z, half_rot = a.n_rot / 2;
    if (i >= half_rot || h >= a.n_heads || t >= a.n_tok)
        return;
    device float *v = x + (ulong)t * a.stride + (ulong)h * a.head_dim;
    uint p0 = a.kind == 2 ? i : 2 * i, p1 = a.kind == 2 ? i + half_rot : 2 * i + 1;
    float c = cs[(ulong)t * a.n_rot + 2 * i], s = cs[(ulong)t * a.n_rot + 2 * i + 1];
    float x0 = v[p0], x1 = v[p1];
    v[p0] = x0 * c - x1 * s;
    v[p1] = x0 * s + x1 * c;
}

kernel void aarmd_softmax(constant aarmd_mtl_softmax_args &a AARMD_BUFFER(0), device float *x AARMD_BUFFER(1),
                          uint3 tg AARMD_TG_POS, uint tid AARMD_TID_IN_TG, uint3 ntg AARMD_TG_SIZE,
                          uint sg AARMD_SIMD_GROUP, uint lane AARMD_SIMD_LANE, uint nsg AARMD_SIMDS_PER_TG)
{
    threadgroup float part[32];
    if (tg.x >= a.rows)
        return;
    device float *xr = x + (ulong)tg.x * a.stride;
    float m = -INFINITY;
    for (uint i = tid; i < a.n; i += ntg.x)
        m = max(m, xr[i]);
    m = aarmd_tg_max(m, part, sg, lane, nsg);
    float s = 0.0f;
    for (uint i = tid; i < a.n; i += ntg.x) {
        float e = exp(xr[i] - m);
        xr[i] = e;   /* each thread rewrites only its own elements */
        s += e;
    }
    float r = 1.0f / aarmd_tg_sum(s, part, sg, lane, nsg);
    for (uint i = tid; i < a.n; i += ntg.x)
        xr[i] *= r;
}

inline float aarmd_gelu(float x)
{
    const float c = 0.7978845608028654f;   /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanh(c * (x + 0.044715f * x * x * x)));
}

inline float aarmd_silu(float x) { return x / (1.0f + exp(-x)); }

kernel void aarmd_eltwise(constant aarmd_mtl_eltwise_args &a AARMD_BUFFER(0), device float *g AARMD_BUFFER(1),
                          device const float *u AARMD_BUFFER(2), uint3 gp AARMD_TPOS_IN_GRID)
{
    uint i = gp.x, t = gp.y;
    if (i >= a.n || t >= a.n_tok)
        return;
    device float *gi = g + (ulong)t * a.g_stride + i;
    float v = *gi;
    switch (a.op) {
    case AARMD_MTL_OP_SILU_GATED: v = aarmd_silu(v) * u[(ulong)t * a.u_stride + i]; break;
    case AARMD_MTL_OP_GELU_GATED: v = aarmd_gelu(v) * u[(ulong)t * a.u_stride + i]; break;
    case AARMD_MTL_OP_GELU: v = aarmd_gelu(v); break;
    case AARMD_MTL_OP_ADD: v += u[(ulong)t * a.u_stride + i]; break;
    case AARMD_MTL_OP_SCALE_CAP:
        v *= a.scale;
        if (a.cap > 0.0f)
            v = a.cap * tanh(v / a.cap);
        break;
    default: break;
    }
    *gi = v;
}

/* K/V rows of the step's tokens into the paged cache (metal_args.h: paged KV). */
kernel void aarmd_kv_store(constant aarmd_mtl_kv_store_args &a AARMD_BUFFER(0), device const float *k AARMD_BUFFER(1),
                           device const float *v AARMD_BUFFER(2), device half *kc AARMD_BUFFER(3),
                           device half *vc AARMD_BUFFER(4), device const aarmd_mtl_kv_tok *tok AARMD_BUFFER(5),
                           device const uint *table AARMD_BUFFER(6), uint3 gp AARMD_TPOS_IN_GRID)
{
    uint i = gp.x, t = gp.y;
    if (i >= a.kv_dim || t >= a.n_tok)
        return;
    uint pos = tok[t].pos;
    ulong row = (ulong)table[tok[t].table_off + pos / a.block_tokens] * a.block_tokens + pos % a.block_tokens;
    ulong dst = row * a.kv_dim + i;
    kc[dst] = half(k[(ulong)t * a.src_stride + i]);
    vc[dst] = half(v[(ulong)t * a.src_stride + i]);
}
