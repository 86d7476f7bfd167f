/*
 * attention.metal — attention of query tokens over one layer of a paged F16
 * KV cache (block tables: metal_args.h), every sequence of a step in one
 * dispatch (causal, optional sliding window and logit softcap, GQA), one
 * threadgroup per (head, token), single pass with a running max per
 * simdgroup, simdgroups merged through threadgroup memory. Semantics of
 * cpu_attend (plugins/cpu/ops.c); not a tiled flash-attention for long prefills.
 */
#include "metal_common.h"

#define AARMD_ATTN_NSG (AARMD_MTL_ROW_THREADS / 32)
#define AARMD_ATTN_PER_LANE (AARMD_MTL_MAX_HEAD_DIM / 32)

kernel void aarmd_attention(constant aarmd_mtl_attn_args &a AARMD_BUFFER(0), device const float *q AARMD_BUFFER(1),
                            device const half *kc AARMD_BUFFER(2), device const half *vc AARMD_BUFFER(3),
                            device float *out AARMD_BUFFER(4), device const aarmd_mtl_kv_tok *tok AARMD_BUFFER(5),
                            device const uint *table AARMD_BUFFER(6), uint3 tg AARMD_TG_POS, uint tid AARMD_TID_IN_TG,
                            uint sg AARMD_SIMD_GROUP, uint lane AARMD_SIMD_LANE)
{
    threadgroup float s_m[AARMD_ATTN_NSG];
    threadgroup float s_l[AARMD_ATTN_NSG];
    threadgroup float s_acc[AARMD_ATTN_NSG * AARMD_MTL_MAX_HEAD_DIM];
    uint h = tg.x, t = tg.y;
    if (h >= a.n_head || t >= a.n_tok)
        return;
    uint kvh = h / (a.n_head / a.n_head_kv), kv_dim = a.n_head_kv * a.head_dim;
    int pos = int(tok[t].pos);
    device const uint *blocks = table + tok[t].table_off;   /* this token's sequence */
    int j0 = a.window > 0 ? max(0, pos + 1 - int(a.window)) : 0;
    device const float *qh = q + (ulong)t * a.q_stride + (ulong)h * a.head_dim;

    float qv[AARMD_ATTN_PER_LANE], acc[AARMD_ATTN_PER_LANE];
    for (uint k = 0; k < AARMD_ATTN_PER_LANE; k++) {
        uint d = lane + 32 * k;
        qv[k] = d < a.head_dim ? qh[d] : 0.0f;
        acc[k] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    /* key j = j0 + sg + i*NSG sits at row r of table entry bi: one division per
     * thread, then stepped (uniform across the simdgroup) */
    uint bi = uint(j0 + int(sg)) / a.block_tokens, r = uint(j0 + int(sg)) % a.block_tokens;
    for (int j = j0 + int(sg); j <= pos; j += AARMD_ATTN_NSG) {
        ulong row = (ulong)blocks[bi] * a.block_tokens + r;
        for (r += AARMD_ATTN_NSG; r >= a.block_tokens; r -= a.block_tokens)
            bi++;
        device const half *kr = kc + row * kv_dim + (ulong)kvh * a.head_dim;
        device const half *vr = vc + row * kv_dim + (ulong)kvh * a.head_dim;
        float s = 0.0f;
        for (uint k = 0; k < AARMD_ATTN_PER_LANE; k++) {
            uint d = lane + 32 * k;
            if (d < a.head_dim)
                s += qv[k] * float(kr[d]);
        }
        s = simd_sum(s) * a.scale;
        if (a.cap > 0.0f)
            s = a.cap * tanh(s / a.cap);
        float m_new = max(m, s);
        float corr = exp(m - m_new), p = exp(s - m_new);
        l = l * corr + p;
        for (uint k = 0; k < AARMD_ATTN_PER_LANE; k++) {
            uint d = lane + 32 * k;
            acc[k] = acc[k] * corr + (d < a.head_dim ? p * float(vr[d]) : 0.0f);
        }
        m = m_new;
    }
    for (uint k = 0; k < AARMD_ATTN_PER_LANE; k++)
        s_acc[sg * AARMD_MTL_MAX_HEAD_DIM + lane + 32 * k] = acc[k];
    if (lane == 0) {
        s_m[sg] = m;
        s_l[sg] = l;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (tid < a.head_dim) {
        float mm = -INFINITY;
        for (uint g = 0; g < AARMD_ATTN_NSG; g++)
            mm = max(mm, s_m[g]);
        float num = 0.0f, den = 0.0f;
        for (uint g = 0; g < AARMD_ATTN_NSG; g++) {
            if (s_l[g] == 0.0f)
                continue;   /* a simdgroup that saw no key */
            float wgt = exp(s_m[g] - mm);
            num += wgt * s_acc[g * AARMD_MTL_MAX_HEAD_DIM + tid];
            den += wgt * s_l[g];
        }
        out[(ulong)t * a.out_stride + (ulong)h * a.head_dim + tid] = num / den;
    }
}
