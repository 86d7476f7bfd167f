/*
 * attn_dec.cu — the split-K attention of the CUDA backend over the paged F16
 * KV cache, with GQA, for every sequence of a step through block tables:
 * k_attn / k_attn_g and their chunk merge (prefill without the flash
 * attention), and k_attn_dec, the one-token-per-sequence decode attention
 * that also rotates q and its own k, stores the K/V row, merges its chunks
 * (or runs as one chunk of 16 warps) and writes wo's Q8 rows
 * (docs/cuda-notes.md v8-fuse, v10-dec, v14-lead, v15-lead).
 */
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../plugins/cuda/launch.h"
#include "pdl.cuh"
#include "matvec_io.cuh"
#include "rope_kv.cuh"
#include "warp.cuh"
#include "../../core/abi/aarmd_backend.h"

extern "C" void cuk_attn_set_pdl_early(int early)
{
    pdl_set_early(early);
}

/* ---- attention ------------------------------------------------------------------ */

#define ATTN_WARPS 4
#define ATTN_WIDE 16   /* warps of the one-chunk decode attention (v14) */
#define ATTN_MERGE_BATCH_DEFAULT 1   /* v10 batched merge loads: +0.6-2% tg128 on every row (docs/cuda-notes.md v10-dec) */
#define ATTN_PER_LANE (CUK_MAX_HEAD_DIM / WARP)

/* The keys [*a, *e) of chunk c of nch of a token at position p: its visible keys (the last
 * `window` of them when window > 0) cut into nch equal runs, the last ones possibly short or empty. */
static __device__ __forceinline__ void attn_chunk(int32_t p, int window, int c, int nch, int32_t *a, int32_t *e)
{
    int32_t j0 = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    int32_t chunk = (p - j0 + 1 + nch - 1) / nch;
    *a = j0 + c * chunk;
    *e = min(p + 1, *a + chunk);
}

/* A warp's query row (lanes hold dims lane, lane+32, ...; 0 past D) and its zeroed accumulator. */
template <int N>
static __device__ __forceinline__ void attn_q_load(const float *qr, int D, int lane, float (&qv)[N], float (&acc)[N])
{
#pragma unroll
    for (int i = 0; i < N; i++) {
        int d = lane + WARP * i;
        qv[i] = d < D ? qr[d] : 0.0f;
        acc[i] = 0.0f;
    }
}

/* One key of a warp's online softmax, its K and V values in registers (lane's dims lane + 32 i,
 * i < N; those past D unused): score q·k, optional softcap, rescale the running sum and
 * accumulator when the max grows, then add the key's weight and weighted V row. The v10 decode
 * kernel loads a batch of keys at once and takes them one by one; attn_key loads one. */
template <int N>
static __device__ __forceinline__ void attn_key_r(const float (&qv)[N], const __half (&kr)[N], const __half (&vr)[N],
                                                  int D, int lane, float scale, float softcap, float *m, float *s,
                                                  float (&acc)[N])
{
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int d = lane + WARP * i;
        if (d < D)
            dot += qv[i] * __half2float(kr[i]);
    }
    float sc = warp_sum(dot) * scale;
    if (softcap > 0.0f)
        sc = softcap * tanhf(sc / softcap);
    if (sc > *m) {
        float f = expf(*m - sc);
        *s *= f;
#pragma unroll
        for (int i = 0; i < N; i++)
            acc[i] *= f;
        *m = sc;
    }
    float wgt = expf(sc - *m);
    *s += wgt;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int d = lane + WARP * i;
        if (d < D)
            acc[i] += wgt * __half2float(vr[i]);
    }
}

/* attn_key_r for the key whose K and V rows are at kr, vr (the split-K kernels below). */
static __device__ __forceinline__ void attn_key(const float (&qv)[ATTN_PER_LANE], const __half *kr, const __half *vr,
                                                int D, int lane, float scale, float softcap, float *m, float *s,
                                                float (&acc)[ATTN_PER_LANE])
{
    __half kk[ATTN_PER_LANE], vv[ATTN_PER_LANE];
#pragma unroll
    for (int i = 0; i < ATTN_PER_LANE; i++) {
        int d = lane + WARP * i;
        kk[i] = d < D ? kr[d] : __float2half_rn(0.0f);
        vv[i] = d < D ? vr[d] : __float2half_rn(0.0f);
    }
    attn_key_r(qv, kk, vv, D, lane, scale, softcap, m, s, acc);
}

/*
 * The end of a split-K attention block: its W warps merge their online-softmax
 * states (m, s, acc[D]; acc in lanes d = lane + 32 i) in shared memory and
 * write the chunk's (M, S, acc[D]) to out. out == NULL (the launch's only
 * chunk): the normalized row orow[0..D) = acc / S instead (+ element i0 + d of
 * the Q8 rows when xq != NULL, D % 32 == 0), as attn_merge would make it from
 * that one partial row (bit-identical), without the round trip through it.
 * Every thread calls it.
 */
template <int W, int N>
static __device__ __forceinline__ void attn_warps_merge(float m, float s, const float (&acc)[N], int D, float *sm,
                                                        float *ss, float (*sacc)[CUK_MAX_HEAD_DIM], float *out,
                                                        float *orow = NULL, size_t i0 = 0, int8_t *xq = NULL,
                                                        float *xd = NULL)
{
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    if (lane == 0) {
        sm[wid] = m;
        ss[wid] = s;
    }
#pragma unroll
    for (int i = 0; i < N; i++) {
        int d = lane + WARP * i;
        if (d < D)
            sacc[wid][d] = acc[i];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < W; w++)
        M = fmaxf(M, sm[w]);
    __shared__ float wf[W];   /* each warp's weight exp(m_w - M), computed once (v14) */
    if (threadIdx.x < W)
        wf[threadIdx.x] = sm[threadIdx.x] == -INFINITY ? 0.0f : expf(sm[threadIdx.x] - M);
    __syncthreads();
    float S = 0.0f;
    for (int w = 0; w < W; w++)
        S += sm[w] == -INFINITY ? 0.0f : ss[w] * wf[w];
    if (out && threadIdx.x == 0) {
        out[0] = M;
        out[1] = S;
    }
    const float inv = S > 0.0f ? 1.0f / S : 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {   /* warp-uniform when D % 32 == 0 */
        float v = 0.0f;
        for (int w = 0; w < W; w++)
            if (sm[w] != -INFINITY)
                v += sacc[w][d] * wf[w];
        if (out) {
            out[2 + d] = v;
        } else {
            orow[d] = v * inv;
            if (xq)
                q8_store1(v * inv, i0 + d, xq, xd);
        }
    }
}

/* The online softmax of query head h of token t over its keys j, j + stride, ... < e (kv head kvh's
 * rows of the cache through the token's block table), one key at a time: the warp's (m, s, acc). */
static __device__ __forceinline__ void attn_walk(const float *q, const struct cuk_kv &kv, int t, int h, int kvh,
                                                 int n_head, int D, int kv_dim, int32_t j, int32_t e, int stride,
                                                 float scale, float softcap, float *m, float *s,
                                                 float (&acc)[ATTN_PER_LANE])
{
    const int lane = threadIdx.x & 31;
    const int32_t *tab = kv.btab + kv.tok_bt[t];
    const __half *pool = (const __half *)kv.pool + (size_t)kvh * D;
    float qv[ATTN_PER_LANE];
    attn_q_load(q + ((size_t)t * n_head + h) * D, D, lane, qv, acc);
    *m = -INFINITY;
    *s = 0.0f;
    for (; j < e; j += stride) {
        size_t kro = kv_row(kv, tab, j, kv_dim, 0);
        attn_key(qv, pool + kro, pool + kro + (size_t)CUK_KV_BLOCK * kv_dim, D, lane, scale, softcap, m, s, acc);
    }
}

/*
 * grid (n_head, n_tok, n_chunks), ATTN_WARPS warps: the block takes chunk c of
 * the token's visible keys, a warp one key at a time (lanes over dims) with an
 * online softmax; the warps merge in shared memory and write (m, s, acc[D]) to
 * the partial row, which k_attn_combine merges over the chunks.
 */
__global__ void __launch_bounds__(ATTN_WARPS * WARP)
k_attn(const float *__restrict__ q, struct cuk_kv kv, const int32_t *pos, int n_head, int group, int D, int kv_dim,
       float scale, float softcap, int window, float *partial)
{
    pdl_enter();
    __shared__ float sm[ATTN_WARPS], ss[ATTN_WARPS];
    __shared__ float sacc[ATTN_WARPS][CUK_MAX_HEAD_DIM];
    int h = blockIdx.x, t = blockIdx.y, c = blockIdx.z, nch = gridDim.z;
    int wid = threadIdx.x >> 5;
    int32_t p = pos[t];
    int32_t a, e;
    attn_chunk(p, window, c, nch, &a, &e);
    float m, s, acc[ATTN_PER_LANE];
    attn_walk(q, kv, t, h, h / group, n_head, D, kv_dim, a + wid, e, ATTN_WARPS, scale, softcap, &m, &s, acc);
    float *pr = partial + (((size_t)t * n_head + h) * nch + c) * (size_t)(D + 2);
    attn_warps_merge<ATTN_WARPS>(m, s, acc, D, sm, ss, sacc, pr);
}

/*
 * Merges the nch chunks' (m, s, acc[D]) of one (token, head) at pr into
 * orow[0..D) (element i0 of the Q8 rows when xq != NULL, D % 32 == 0): the
 * chunk weights exp(m_c - M) come from warp 0 (nch <= 32) through shared wc.
 * Called by every thread of a block; partial rows read through L2 (another
 * block of the same launch may have written them). MB (v10): every chunk's
 * value of a dimension is loaded before the first is used (the loads behind
 * `wc[c] != 0` ran one L2 round trip after another: 32 in a row at 32 chunks),
 * then summed in the same order: bit-identical.
 */
template <bool MB>
static __device__ void attn_merge(const float *pr, int nch, int D, float *orow, size_t i0, int8_t *xq, float *xd)
{
    __shared__ float wc[CUK_ATTN_MAX_CHUNKS];
    __shared__ float inv_s;
    if (threadIdx.x < WARP) {
        int c = threadIdx.x;
        float m = c < nch ? __ldcg(pr + (size_t)c * (D + 2)) : -INFINITY;
        float sc = MB && c < nch ? __ldcg(pr + (size_t)c * (D + 2) + 1) : 0.0f;   /* in flight with m */
        float M = m;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
        float f = m == -INFINITY ? 0.0f : expf(m - M);
        float S = warp_sum(c < nch ? (MB ? sc : __ldcg(pr + (size_t)c * (D + 2) + 1)) * f : 0.0f);
        wc[c] = f;
        if (c == 0)
            inv_s = S > 0.0f ? 1.0f / S : 0.0f;
    }
    __syncthreads();
    float inv = inv_s;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {   /* warp-uniform when D % 32 == 0 */
        float v = 0.0f;
        if (MB) {
            float pv[CUK_ATTN_MAX_CHUNKS];
#pragma unroll
            for (int c = 0; c < CUK_ATTN_MAX_CHUNKS; c++)
                pv[c] = c < nch ? __ldcg(pr + (size_t)c * (D + 2) + 2 + d) : 0.0f;
#pragma unroll
            for (int c = 0; c < CUK_ATTN_MAX_CHUNKS; c++)
                if (c < nch && wc[c] != 0.0f)
                    v += pv[c] * wc[c];
        } else {
            for (int c = 0; c < nch; c++)
                if (wc[c] != 0.0f)
                    v += __ldcg(pr + (size_t)c * (D + 2) + 2 + d) * wc[c];
        }
        orow[d] = v * inv;
        if (xq)
            q8_store1(v * inv, i0 + d, xq, xd);
    }
}

/* the v10 decode-attention variants: -1 = the environment's (measurement knobs read once) */
static int attn_dec_kb = -1, attn_dec_mb = -1;

extern "C" void cuk_attn_dec_set(int kb, int mb)
{
    attn_dec_kb = kb < 0 ? -1 : kb != 0;
    attn_dec_mb = mb < 0 ? -1 : mb != 0;
}

/* A decode-attention measurement knob: the integer in environment variable `name`, else dflt when
 * it is unset or empty. Each reader below keeps its value (read once per process). */
static int attn_env(const char *name, int dflt)
{
    const char *e = getenv(name);
    return e && *e ? atoi(e) : dflt;
}

/* AARMD_CUDA_DEC_MERGE: 1 the merge's loads batched (MB), 0 one by one; unset: ATTN_MERGE_BATCH_DEFAULT (batched) */
static int attn_merge_batch(void)
{
    static int env = -1;
    if (env < 0)
        env = attn_env("AARMD_CUDA_DEC_MERGE", ATTN_MERGE_BATCH_DEFAULT) == 1;
    return attn_dec_mb >= 0 ? attn_dec_mb : env;
}

/* AARMD_CUDA_DEC_PF=0: the batched decode attention loads its first keys after the wait, as v10 (else
 * before it, for head_dim <= 64: docs/cuda-notes.md v11-lead) */
static int attn_prefetch(void)
{
    static int env = -1;
    if (env < 0)
        env = attn_env("AARMD_CUDA_DEC_PF", 1) != 0;
    return env;
}

/* AARMD_CUDA_DEC_WIDE=0: a one-chunk decode attention with ATTN_WARPS warps as the split ones (a
 * measurement knob; else ATTN_WIDE warps share its keys: docs/cuda-notes.md v14-lead) */
static int attn_wide(void)
{
    static int env = -1;
    if (env < 0)
        env = attn_env("AARMD_CUDA_DEC_WIDE", 1) != 0;
    return env;
}

/* AARMD_CUDA_DEC_KB=1: the decode attention's keys one at a time (else batched) */
static int attn_keys_batch(void)
{
    static int env = -1;
    if (env < 0)
        env = attn_env("AARMD_CUDA_DEC_KB", 0) != 1;
    return attn_dec_kb >= 0 ? attn_dec_kb : env;
}

/*
 * block per (head, token): merge the chunks' (m, s, acc). When xq != NULL
 * (D % 32 == 0) the output rows are also quantized per 32 for the wo matvec,
 * as k_quantize_q8 would (bit-identical), so no quantize launch follows.
 */
template <bool MB>
__global__ void k_attn_combine(const float *partial, int n_head, int D, int nch, float *out, int8_t *xq, float *xd)
{
    pdl_enter();
    int h = blockIdx.x, t = blockIdx.y;
    size_t i0 = ((size_t)t * n_head + h) * D;
    attn_merge<MB>(partial + ((size_t)t * n_head + h) * nch * (size_t)(D + 2), nch, D, out + i0, i0, xq, xd);
}

extern "C" void cuk_attn_combine(cudaStream_t s, const float *partial, int n_tok, int n_head, int D, int n_chunks,
                                 float *out, void *xq, float *xd)
{
    if (D % 32)
        xq = NULL, xd = NULL;
    dim3 g2((unsigned)n_head, (unsigned)n_tok);
    if (attn_merge_batch())
        pdl_launch(k_attn_combine<true>, g2, 128, s, partial, n_head, D, n_chunks, out, (int8_t *)xq, xd);
    else
        pdl_launch(k_attn_combine<false>, g2, 128, s, partial, n_head, D, n_chunks, out, (int8_t *)xq, xd);
}

/*
 * The rotary factors of a warp's lanes (dims d = lane + 32 i, i < N): cos and
 * sin of d's pair at position p; (1, 0) past n_rot. Global loads of the table
 * (or the double-precision math past it), no shared memory: made before the
 * attention's wait.
 */
template <int N>
static __device__ __forceinline__ void rope_lane(const struct cuk_rope &r, int32_t p, int lane, float (&c)[N],
                                                 float (&sn)[N])
{
    int half = r.n_rot / 2, neox = r.kind == AARMD_ROPE_NEOX;
#pragma unroll
    for (int i = 0; i < N; i++) {
        int d = lane + WARP * i;
        c[i] = 1.0f;
        sn[i] = 0.0f;
        if (d < 2 * half)
            rope_cs(r, p, neox ? (d < half ? d : d - half) : d / 2, &c[i], &sn[i]);
    }
}

/* x (the warp's row, lanes' dims as rope_lane's) rotated in place by rope_lane's factors as
 * k_rope_store rotates it: the pair's other element through the warp's scratch row scr[D] of
 * shared memory (no block barrier). */
template <int N>
static __device__ __forceinline__ void rope_warp(float (&x)[N], const float (&c)[N], const float (&sn)[N],
                                                 const struct cuk_rope &r, int D, int lane, float *scr)
{
    int half = r.n_rot / 2, neox = r.kind == AARMD_ROPE_NEOX;
#pragma unroll
    for (int i = 0; i < N; i++)
        if (lane + WARP * i < D)
            scr[lane + WARP * i] = x[i];
    __syncwarp();
#pragma unroll
    for (int i = 0; i < N; i++) {
        int d = lane + WARP * i;
        if (d < 2 * half) {
            int first = neox ? d < half : !(d & 1);
            float o = scr[neox ? (first ? d + half : d - half) : d ^ 1];
            x[i] = first ? rope_rot(1, x[i], o, c[i], sn[i]) : rope_rot(0, o, x[i], c[i], sn[i]);
        }
    }
    __syncwarp();
}

/*
 * The v8 decode attention: grid (n_head, n_tok, n_chunks) as k_attn, for
 * tokens of distinct sequences (so no token reads a key another token of the
 * launch writes). rope != 0: q and k arrive unrotated (q [n_tok][n_head*D],
 * k and v [n_tok][kv_dim] F32): each warp takes its lanes' rotary factors
 * before the wait on the previous kernel (pos[] comes from the step upload,
 * complete by then) and rotates q in registers (v15: rope_warp, no block
 * barrier before the keys); the warps of the block whose chunk holds the
 * token's own position rotate k too and keep k and v as F16 in their own
 * shared rows, used for that key after their other keys; the group's first
 * head's block also stores them in the cache (no block of the launch reads
 * that cache row, so there is no race).
 * rope == 0: q, k already rotated and stored (k_rope_store). cnt != NULL
 * ([n_tok*n_head], zero at launch, left zero): the last block of each
 * (token, head) to finish merges the chunks into out (+ Q8 rows): no combine
 * launch; with one chunk (v14) the block writes its row itself, no partial
 * row or counter. W warps per block (ATTN_WARPS; ATTN_WIDE for one chunk: the
 * warps share the keys). PF: the warp's first KB keys (but the token's own)
 * are loaded before the wait, so their round trip overlaps the previous
 * kernel (earlier steps wrote those rows).
 */
template <int NPL, int KB, bool MB, bool PF, int W>
__global__ void __launch_bounds__(W * WARP, W == ATTN_WIDE ? 1 : 32 / W)   /* one chunk: a block per head */
k_attn_dec(const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v, int rope,
           struct cuk_rope r, struct cuk_kv kv, const int32_t *pos, int n_head, int group, int D, int kv_dim,
           float scale, float softcap, int window, float *partial, unsigned *cnt, float *out, int8_t *xq, float *xd)
{
    __shared__ float sm[W], ss[W];
    __shared__ float sacc[W][CUK_MAX_HEAD_DIM];   /* also each warp's rotary scratch row before the merge */
    __shared__ unsigned last;
    int h = blockIdx.x, t = blockIdx.y, c = blockIdx.z, nch = gridDim.z;
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    int32_t p = pos[t];   /* the step upload: complete before the previous kernel started (pdl.cuh) */
    int32_t a, e;
    attn_chunk(p, window, c, nch, &a, &e);
    int own = rope && a <= p && p < e;   /* this chunk holds the token's own key, unstored (block-uniform) */
    int rot = rope && r.kind != AARMD_ROPE_NONE;
    float rc[NPL], rs[NPL];
    if (rot)
        rope_lane(r, p, lane, rc, rs);
    int kvh = h / group;
    const int32_t *tab = kv.btab + kv.tok_bt[t];   /* step upload, as pos */
    const __half *pool = (const __half *)kv.pool + (size_t)kvh * D;
    /* key jj of this warp's batch slot b into kk[b], vv[b] from the cache */
    __half kk[KB][NPL], vv[KB][NPL];
    auto load_key = [&](int b, int32_t jj) {
        const __half *kp = pool + kv_row(kv, tab, jj, kv_dim, 0), *vp = kp + (size_t)CUK_KV_BLOCK * kv_dim;
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            int d = lane + WARP * i;
            kk[b][i] = d < D ? kp[d] : __float2half_rn(0.0f);
            vv[b][i] = d < D ? vp[d] : __float2half_rn(0.0f);
        }
    };
    /* the warp's keys j1, j1 + W, ... < ek from the cache; the token's own (own: p = e - 1, the last key
     * of whichever warp it falls to) after them from the warp's shared row (own_h) */
    const int32_t j1 = a + wid, ek = own ? p : e;
    if (PF) {   /* v11: the first batch's keys before the wait, but the token's own (this launch's) */
#pragma unroll
        for (int b = 0; b < KB; b++)
            if (j1 + b * W < ek && j1 + b * W != p)
                load_key(b, j1 + b * W);
    }
    pdl_enter();
    float qv[NPL], acc[NPL], kx[NPL], vx[NPL];
    attn_q_load(q + ((size_t)t * n_head + h) * D, D, lane, qv, acc);
    if (own) {   /* block-uniform: the token's k and v rows, in flight with q */
        const float *kr = k + (size_t)t * kv_dim + (size_t)kvh * D, *vr = v + (size_t)t * kv_dim + (size_t)kvh * D;
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            int d = lane + WARP * i;
            kx[i] = d < D ? kr[d] : 0.0f;
            vx[i] = d < D ? vr[d] : 0.0f;
        }
    }
    if (rot) {
        rope_warp(qv, rc, rs, r, D, lane, sacc[wid]);
        if (own)
            rope_warp(kx, rc, rs, r, D, lane, sacc[wid]);
    }
    __half *own_h = (__half *)sacc[wid];   /* own: the F16 k and v rows, until the merge */
    if (own) {
        int st = h % group == 0 && wid == 0;   /* one warp per (token, kv head) stores the rows */
        __half *kc = (__half *)kv.pool + kv_row(kv, tab, p, kv_dim, 0) + (size_t)kvh * D;
        __half *vc = (__half *)kv.pool + kv_row(kv, tab, p, kv_dim, 1) + (size_t)kvh * D;
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            int d = lane + WARP * i;
            if (d < D) {
                own_h[d] = __float2half_rn(kx[i]);
                own_h[D + d] = __float2half_rn(vx[i]);
                if (st) {
                    kc[d] = own_h[d];
                    vc[d] = own_h[D + d];
                }
            }
        }
        __syncwarp();
    }
    float m = -INFINITY, sum = 0.0f;
    /* a warp's keys j = a + wid + W i in order, KB at a time: every K/V (and block-table) load of a
     * batch is issued before the first key's dot, so a warp waits for memory about once per batch */
    for (int32_t j = j1; j < ek; j += W * KB) {
#pragma unroll
        for (int b = 0; b < KB; b++) {
            int32_t jj = j + b * W;
            if (jj < ek && (!PF || j != j1 || jj == p))   /* PF: the first batch is in, but the key at p */
                load_key(b, jj);
        }
#pragma unroll
        for (int b = 0; b < KB; b++)
            if (j + b * W < ek)
                attn_key_r(qv, kk[b], vv[b], D, lane, scale, softcap, &m, &sum, acc);
    }
    if (own && (p - j1) % W == 0) {   /* warp-uniform: the own key is this warp's (p >= j1: p >= a) */
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            int d = lane + WARP * i;
            kk[0][i] = d < D ? own_h[d] : __float2half_rn(0.0f);
            vv[0][i] = d < D ? own_h[D + d] : __float2half_rn(0.0f);
        }
        attn_key_r(qv, kk[0], vv[0], D, lane, scale, softcap, &m, &sum, acc);
    }
    __syncwarp();   /* own_h read before the merge writes the warp's row over it */
    if (cnt && nch == 1) {   /* the only chunk: the row itself, no partial row to merge */
        size_t i0 = ((size_t)t * n_head + h) * D;
        attn_warps_merge<W>(m, sum, acc, D, sm, ss, sacc, NULL, out + i0, i0, xq, xd);
        return;
    }
    float *pr = partial + ((size_t)t * n_head + h) * nch * (size_t)(D + 2);
    attn_warps_merge<W>(m, sum, acc, D, sm, ss, sacc, pr + (size_t)c * (D + 2));
    if (!cnt)
        return;
    __syncthreads();   /* the block's partial row written; thread 0's fence is cumulative over it */
    if (threadIdx.x == 0) {
        unsigned *ct = cnt + (size_t)t * n_head + h;
        __threadfence();
        last = atomicAdd(ct, 1u) == (unsigned)nch - 1;
        if (last) {
            *ct = 0;   /* zero again for the next layer's launch */
            __threadfence();   /* acquire: the other blocks' rows, read below through L2 */
        }
    }
    __syncthreads();
    if (!last)
        return;
    size_t i0 = ((size_t)t * n_head + h) * D;
    attn_merge<MB>(pr, nch, D, out + i0, i0, xq, xd);
}

/*
 * The grouped variant: grid (n_kv, n_tok, n_chunks), one warp per query head
 * of the kv head's group, every warp walking the same keys of chunk c, so
 * each K/V row comes from DRAM/L2 once per group and from L1 for the other
 * warps (k_attn reads it once per query head). Writes the same partial rows.
 */
__global__ void __launch_bounds__(CUK_ATTN_MAX_GROUP * WARP)
k_attn_g(const float *__restrict__ q, struct cuk_kv kv, const int32_t *pos, int n_head, int group, int D, int kv_dim,
         float scale, float softcap, int window, float *partial)
{
    pdl_enter();
    int kvh = blockIdx.x, t = blockIdx.y, c = blockIdx.z, nch = gridDim.z;
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    int h = kvh * group + wid;
    int32_t p = pos[t];
    int32_t a, e;
    attn_chunk(p, window, c, nch, &a, &e);
    float m, sum, acc[ATTN_PER_LANE];
    attn_walk(q, kv, t, h, kvh, n_head, D, kv_dim, a, e, 1, scale, softcap, &m, &sum, acc);
    float *out = partial + (((size_t)t * n_head + h) * nch + c) * (size_t)(D + 2);
    if (lane == 0) {
        out[0] = m;
        out[1] = sum;
    }
#pragma unroll
    for (int i = 0; i < ATTN_PER_LANE; i++) {
        int d = lane + WARP * i;
        if (d < D)
            out[2 + d] = acc[i];
    }
}

extern "C" void cuk_attention(cudaStream_t s, const float *q, const struct cuk_kv *kv, const int32_t *pos, int n_tok,
                              int n_head, int n_kv, int D, float scale, float softcap, int window, int n_chunks,
                              int grouped, float *partial, float *out, void *xq, float *xd)
{
    if (D % 32)
        xq = NULL, xd = NULL;
    int group = n_head / n_kv;
    if (grouped && group <= CUK_ATTN_MAX_GROUP) {
        dim3 grid((unsigned)n_kv, (unsigned)n_tok, (unsigned)n_chunks);
        pdl_launch(k_attn_g, grid, group * WARP, s, q, *kv, pos, n_head, group, D, n_kv * D, scale, softcap, window,
                   partial);
    } else {
        dim3 grid((unsigned)n_head, (unsigned)n_tok, (unsigned)n_chunks);
        pdl_launch(k_attn, grid, ATTN_WARPS * WARP, s, q, *kv, pos, n_head, group, D, n_kv * D, scale, softcap,
                   window, partial);
    }
    cuk_attn_combine(s, partial, n_tok, n_head, D, n_chunks, out, xq, xd);
}

/* One launch of k_attn_dec: wide (the launch's only chunk, v14) with ATTN_WIDE warps sharing the
 * keys, KBW at a time, PFW loaded before the wait (it merges nothing: no merge variant), else
 * ATTN_WARPS with KB and PF, the merge's loads batched or not */
template <int NPL, int KB, bool PF, int KBW, bool PFW, typename... A>
static void attn_dec_go(bool wide, bool mb, dim3 grid, cudaStream_t s, A... a)
{
    if (wide)
        pdl_launch(k_attn_dec<NPL, KBW, false, PFW, ATTN_WIDE>, grid, ATTN_WIDE * WARP, s, a...);
    else if (mb)
        pdl_launch(k_attn_dec<NPL, KB, true, PF, ATTN_WARPS>, grid, ATTN_WARPS * WARP, s, a...);
    else
        pdl_launch(k_attn_dec<NPL, KB, false, PF, ATTN_WARPS>, grid, ATTN_WARPS * WARP, s, a...);
}

extern "C" void cuk_attention_dec(cudaStream_t s, const float *q, const float *k, const float *v, int rope,
                                  const struct cuk_rope *r, const struct cuk_kv *kv, const int32_t *pos, int n_tok,
                                  int n_head, int n_kv, int D, float scale, float softcap, int window, int n_chunks,
                                  float *partial, unsigned *cnt, float *out, void *xq, float *xd)
{
    if (D % 32)
        xq = NULL, xd = NULL;
    dim3 grid((unsigned)n_head, (unsigned)n_tok, (unsigned)n_chunks);
    /* dims per lane (D / 32 rounded up to 1, 2, 4, 8), keys a warp loads at once and the merge's
     * loads (v10: attn_keys_batch, attn_merge_batch) */
    const int one = !attn_keys_batch(), pf = attn_prefetch();
    const bool mb = attn_merge_batch(), wide = cnt && n_chunks == 1 && attn_wide();
#define ATTN_DEC(NPL_, KB_, PF_, KBW_, PFW_)                                                                        \
    attn_dec_go<NPL_, KB_, PF_, KBW_, PFW_>(wide, mb, grid, s, q, k, v, rope, *r, *kv, pos, n_head, n_head / n_kv, D,  \
                                            n_kv * D, scale, softcap, window, partial, cnt, out, (int8_t *)xq, xd)
    /* v15: the one-chunk launch (a block per head and token: up to 128 registers) loads 8 keys a warp
     * before the wait at every head_dim <= 128 (its 16 warps: 128 keys, short_keys' default, in one batch) */
    if (D <= 32)
        one ? ATTN_DEC(1, 1, false, 1, false) : pf ? ATTN_DEC(1, 8, true, 8, true) : ATTN_DEC(1, 8, false, 8, false);
    else if (D <= 64)
        one ? ATTN_DEC(2, 1, false, 1, false) : pf ? ATTN_DEC(2, 8, true, 8, true) : ATTN_DEC(2, 8, false, 8, false);
    else if (D <= 128)   /* split: no prefetch (at 64 registers it spilled and lost 1.2% on 8B Q4_K tg128) */
        one ? ATTN_DEC(4, 1, false, 1, false) : pf ? ATTN_DEC(4, 4, false, 8, true) : ATTN_DEC(4, 4, false, 8, false);
    else
        ATTN_DEC(8, 1, false, 1, false);   /* 2 keys spill at 64 registers */
#undef ATTN_DEC
    if (!cnt)
        cuk_attn_combine(s, partial, n_tok, n_head, D, n_chunks, out, xq, xd);
}
