/*
 * matvec1.cu — the v9 one-token decode matvecs of the CUDA backend (docs/cuda-notes.md
 * v9-q4k): k_mv1_q4k (Q4_K, weights in registers, activations staged in shared memory)
 * and k_mvt (Q4_K, Q8_0, F16, BF16: whole rows copied into shared memory by the bulk
 * copy engine). cuk_mv1_q8 / cuk_mv1_f choose and launch them; matvec.cu and matmul.cu
 * route one-token products here; cuk_mv1_fused (v10-dec) runs k_mvt with the norm in its
 * prologue and/or the gated activation in its epilogue. No multi-token kernels.
 */
#include <cuda_fp16.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../plugins/cuda/launch.h"
#include "pdl.cuh"
#include "dequant.cuh"
#include "matvec_io.cuh"
#include "../../core/abi/aarmd_backend.h"

#define WARP 32

/*
 * Weights are never written by any kernel after the upload, so the kernels
 * here start copying them before pdl_enter() (griddepcontrol.wait); the
 * activations, outputs and everything else are touched only after it.
 */

static __device__ __forceinline__ float h2f_lo(uint32_t w)
{
    return __half2float(__ushort_as_half((unsigned short)(w & 0xFFFFu)));
}

static __device__ __forceinline__ float h2f_hi(uint32_t w)
{
    return __half2float(__ushort_as_half((unsigned short)(w >> 16)));
}

/* The early release of the next kernel under pdl=2: every kernel of this file through this file's
 * copy of pdl.cuh's flag when AARMD_CUDA_MV1_EARLY=1 (a measurement knob), or per type through
 * k_mvt's own argument (mv1_early, v10: the default) when it is unset; cuk_set_tuning calls
 * cuk_mv1_set_pdl. */
static int mv1_pdl = 2;           /* cuk_set_tuning's pdl */
static int mv1_early_env = -2;    /* AARMD_CUDA_MV1_EARLY: 1 every kernel here, 0 none, unset (-1): per type */

static int mv1_early_knob(void)
{
    if (mv1_early_env == -2) {
        const char *e = getenv("AARMD_CUDA_MV1_EARLY");
        mv1_early_env = e && *e ? atoi(e) == 1 : -1;
    }
    return mv1_early_env;
}

/* 1 when a k_mvt launch of `type` releases the next kernel right after its wait under pdl=2 (v10,
 * docs/cuda-notes.md v10-dec: Q4_K gained 2.3% on the 8B decode, Q8_0 lost 5.7% while its down
 * matvec was the v5 kernel, floats even; v11-lead: with down on this kernel too, Q8_0 gains) */
static int mv1_early(uint32_t type)
{
    return cuk_pdl_on && mv1_pdl == 2 && mv1_early_knob() < 0 &&
           (type == AARMD_TYPE_Q4_K || type == AARMD_TYPE_Q8_0);
}

extern "C" void cuk_mv1_set_pdl(int pdl)
{
    static int cur = -1;
    mv1_pdl = pdl;
    int early = (pdl == 2 && mv1_early_knob() == 1) || pdl == 3;
    if (early != cur) {
        pdl_set_early(early);
        cur = early;
    }
}

/* ---- v9: one-token Q4_K matvec with staged activations (k_mv1_q4k) ------------ */
/*
 * The 1-token decode of Q4_K rows (docs/cuda-notes.md v9-q4k). A lane owns one
 * 16-byte quant chunk of a super-block (8 lanes per super-block, a warp step is
 * 4 super-blocks = 576 contiguous bytes) and one 4-byte word of the super-block's
 * 16-byte header (shuffled to its 8 lanes at use: 16-byte header loads spilled at
 * 64 registers). U steps per
 * warp are loaded before griddepcontrol.wait (a 4096-wide row in one go), so
 * each warp waits for DRAM about once per row. Each block then stages the Q8
 * activations in shared memory in lane order (the two 16-byte pieces a lane
 * needs sit at conflict-free addresses) with, per sub-block j, {dx_j, S_j = dx_j
 * * sum(xq_j)}: the Q4_K min term of a sub-block is then one FMA (m_j * S_j)
 * instead of 8 dp4a over the activations. Scale/min unpacking is branch-free.
 * KS warps split a row's steps (long rows: down) and add through shared memory.
 */
#define MV1_MAX_SMEM (48 * 1024)   /* staged activations per block at most (n_in <= 39,321 at Q4_K) */

/* 16 bytes of weights read once per token: no L1 allocation (activations keep L1 and shared memory) */
__device__ __forceinline__ uint4 ld_stream16(const void *p)
{
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

__device__ __forceinline__ uint32_t ld_stream4(const void *p)
{
    uint32_t v;
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}

/* pdl_launch with dynamic shared memory; 1 when enqueued (a refused launch's error is cleared) */
template <typename... KA, typename... A>
static int mv1_launch(void (*k)(KA...), unsigned grid, unsigned block, size_t smem, cudaStream_t s, A... args)
{
    if (pdl_launch_smem(k, dim3(grid), dim3(block), smem, s, args...) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return 1;
}

/* bytes of staged activations for n_in elements: xq in lane order + {dx, S} per 32 */
static size_t mv1_smem(int64_t n_in)
{
    return (size_t)n_in + (size_t)(n_in / 32) * 8;
}

/* a staged activation load: from global memory through the read-only path, or (SH: the v10 norm
 * prologue quantized them in shared memory) a plain load */
template <bool SH, typename V>
static __device__ __forceinline__ V ld_act(const V *p)
{
    if constexpr (SH)
        return *p;
    else
        return __ldg(p);
}

/*
 * Shared layout: xs[sb * 16 + c] = activation bytes 64g + 16h .. +15 of super-block sb for lane
 * c = 2g + h (the low nibbles' partners), xs[sb * 16 + 8 + c] = bytes 64g + 32 + 16h .. +15 (the
 * high nibbles'); then ds[j] = {dx_j, dx_j * sum of xq over sub-block j}.
 */
template <int NW, bool SH = false>
static __device__ __forceinline__ void mv1_stage(const int8_t *__restrict__ xq, const float *__restrict__ xd, int n_sub,
                                                 uint4 *xs, float2 *ds)
{
    for (int j = threadIdx.x; j < n_sub; j += NW * WARP) {
        const int4 *p = reinterpret_cast<const int4 *>(xq) + 2 * j;
        int4 a = ld_act<SH>(p), b = ld_act<SH>(p + 1);
        float dx = ld_act<SH>(xd + j);
        int s = 0;
        s = __dp4a(a.x, 0x01010101, s); s = __dp4a(a.y, 0x01010101, s);
        s = __dp4a(a.z, 0x01010101, s); s = __dp4a(a.w, 0x01010101, s);
        s = __dp4a(b.x, 0x01010101, s); s = __dp4a(b.y, 0x01010101, s);
        s = __dp4a(b.z, 0x01010101, s); s = __dp4a(b.w, 0x01010101, s);
        int sb = j >> 3, sj = j & 7, g = sj >> 1;
        int slot = (sj & 1) ? 8 + 2 * g : 2 * g;   /* chunks 2sj, 2sj+1 of the super-block */
        xs[sb * 16 + slot] = *reinterpret_cast<uint4 *>(&a);
        xs[sb * 16 + slot + 1] = *reinterpret_cast<uint4 *>(&b);
        ds[j] = make_float2(dx, dx * (float)s);
    }
}

/*
 * A row's dot product from its KS warps' partial sums (warps warp..warp+KS-1 when ks == 0):
 * the warp's lanes summed, then (KS > 1) the other warps' sums added through red[] by the
 * row's first warp; valid in lane 0 of the warp with ks == 0. Every thread of the block calls it
 * (a block barrier when KS > 1).
 */
template <int KS>
__device__ __forceinline__ float mv1_row_sum(float acc, float *red, int warp, int lane, int ks)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (KS > 1) {
        if (lane == 0)
            red[warp] = acc;
        __syncthreads();
        if (ks == 0) {
#pragma unroll
            for (int k = 1; k < KS; k++)
                acc += red[warp + k];
        }
    }
    return acc;
}

/*
 * Chunk c (0..7: 16 bytes, 32 weights of sub-blocks 2(c>>1) and 2(c>>1)+1, low and high nibbles)
 * of a Q4_K super-block whose 16-byte header is hd (d, dmin, 12 bytes of 6-bit scales and mins),
 * against that super-block's staged activations (xs: 16 uint4 of Q8, the chunk's low-nibble
 * partners at c and high at 8 + c; ds: per 32 (dx, dx * sum of the Q8 values)): its share of the
 * row's dot product, the min term from the precomputed sums.
 */
__device__ __forceinline__ float q4k_chunk_dot(uint4 hd, uint4 q, int c, const uint4 *xs, const float2 *ds)
{
    const int g = c >> 1, h = c & 1;
    int sh = 16 * (g & 1);
    uint32_t s = hd.y >> sh, m = hd.z >> sh, a = hd.w >> sh;
    uint32_t scp = g >= 2 ? ((a & 0x0F0Fu) | ((s >> 2) & 0x3030u)) : (s & 0x3F3Fu);
    uint32_t mnp = g >= 2 ? (((a >> 4) & 0x0F0Fu) | ((m >> 2) & 0x3030u)) : (m & 0x3F3Fu);
    int sc0 = (int)(scp & 0xFF), sc1 = (int)((scp >> 8) & 0xFF);
    float mn = (float)((mnp >> (8 * h)) & 0xFF);
    int4 xl = *reinterpret_cast<const int4 *>(xs + c);
    int4 xh = *reinterpret_cast<const int4 *>(xs + 8 + c);
    float4 dd = *reinterpret_cast<const float4 *>(ds + 2 * g);   /* dx, S of 2g and 2g+1 */
    int sl = 0, su = 0;
    sl = __dp4a((int)(q.x & 0x0F0F0F0Fu), xl.x, sl);
    su = __dp4a((int)((q.x >> 4) & 0x0F0F0F0Fu), xh.x, su);
    sl = __dp4a((int)(q.y & 0x0F0F0F0Fu), xl.y, sl);
    su = __dp4a((int)((q.y >> 4) & 0x0F0F0F0Fu), xh.y, su);
    sl = __dp4a((int)(q.z & 0x0F0F0F0Fu), xl.z, sl);
    su = __dp4a((int)((q.z >> 4) & 0x0F0F0F0Fu), xh.z, su);
    sl = __dp4a((int)(q.w & 0x0F0F0F0Fu), xl.w, sl);
    su = __dp4a((int)((q.w >> 4) & 0x0F0F0F0Fu), xh.w, su);
    float d = h2f_lo(hd.x), dm = h2f_hi(hd.x);
    float sm = h ? dd.w : dd.y;   /* the lane pair's min terms: h = 0 the low sub-block, 1 the high */
    return d * (dd.x * (float)(sc0 * sl) + dd.z * (float)(sc1 * su)) - dm * mn * sm;
}

/* 64 registers (U <= 4): 32 warps per SM, so a 4096-row matrix is one wave of one-row warps */
template <int NW, int KS, int U>
__global__ void __launch_bounds__(NW * WARP, (U <= 4 ? 32 : 16) / NW)
k_mv1_q4k(const uint8_t *__restrict__ W, size_t rb, int nsb, int n_out, const int8_t *__restrict__ xq,
          const float *__restrict__ xd, float *__restrict__ y, const float *__restrict__ bias, int accum)
{
    extern __shared__ __align__(16) uint4 mv1_sh[];
    uint4 *xs = mv1_sh;
    float2 *ds = reinterpret_cast<float2 *>(mv1_sh + nsb * 16);
    __shared__ float red[NW];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r = blockIdx.x * (NW / KS) + warp / KS, ks = warp % KS;
    const bool valid = r < n_out;
    const uint8_t *row = W + (size_t)(valid ? r : 0) * rb;
    const int sbl = lane >> 3, c = lane & 7;
    const int nstep = (nsb + 3) >> 2;
    uint32_t hq[U];   /* header word c % 4 of the lane's super-block (shuffled to its 8 lanes at use) */
    uint4 qq[U];
    auto load = [&](int st0) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            int sb = (st0 + u * KS) * 4 + sbl;
            if (valid && st0 + u * KS < nstep && sb < nsb) {
                const uint8_t *b = row + (size_t)sb * 144;
                hq[u] = ld_stream4(b + 4 * (c & 3));
                qq[u] = ld_stream16(b + 16 + 16 * c);
            } else {
                hq[u] = 0;
            }
        }
    };
    load(ks);   /* weights are never written while kernels run: safe before the wait */
    pdl_enter();
    float y0, b0;
    mv_epilogue_load(valid && lane == 0 && ks == 0, accum, y, bias, r, &y0, &b0);
    mv1_stage<NW>(xq, xd, nsb * 8, xs, ds);
    __syncthreads();
    float acc = 0.0f;
    for (int st0 = ks;;) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            int sb = (st0 + u * KS) * 4 + sbl;
            uint4 hd;   /* all lanes shuffle (lanes of a partial step hold garbage they do not use) */
            const int l0 = lane & ~7;
            hd.x = __shfl_sync(0xffffffffu, hq[u], l0);
            hd.y = __shfl_sync(0xffffffffu, hq[u], l0 + 1);
            hd.z = __shfl_sync(0xffffffffu, hq[u], l0 + 2);
            hd.w = __shfl_sync(0xffffffffu, hq[u], l0 + 3);
            if (valid && st0 + u * KS < nstep && sb < nsb) {
                acc += q4k_chunk_dot(hd, qq[u], c, xs + sb * 16, ds + sb * 8);
            }
        }
        st0 += U * KS;
        if (st0 >= nstep)
            break;
        load(st0);
    }
    acc = mv1_row_sum<KS>(acc, red, warp, lane, ks);
    if (valid && lane == 0 && ks == 0)
        y[r] = y0 + (bias ? acc + b0 : acc);
}

/* ---- v9: one-token matvec fed by the bulk copy engine (k_mvt) ------------------- */
/*
 * Rows are copied whole into shared memory by cp.async.bulk (the Hopper copy
 * engine, completing on an mbarrier), so bytes in flight cost no registers
 * and no per-chunk load instructions. A block owns sets of R = NW / KS
 * consecutive rows (one bulk copy per set: the rows are contiguous) in a ring
 * of S stages: sets b, b + G, ... of grid G, the copy of set k + S issued as
 * soon as set k is consumed. The first S sets are issued before
 * griddepcontrol.wait (weights are never written while kernels run). The Q8
 * activations are staged once per block as in k_mv1_q4k (Q4_K: lane order and
 * per-sub-block {dx, S}; Q8_0: first and second 16 bytes of each block in two
 * arrays), then KS warps per row dot from shared memory. Types: Q4_K, Q8_0
 * (rows of whole 16-byte multiples).
 */
__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void mbar_init(uint64_t *bar, uint32_t count)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900   /* the copy engine: sm_90 (mvt_go checks) */
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count) : "memory");
#else
    (void)bar, (void)count;
    __trap();
#endif
}

/* the barrier's init visible to the copy engine (async proxy) */
__device__ __forceinline__ void mbar_fence_init()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900   /* the copy engine: sm_90 (mvt_go checks) */
    asm volatile("fence.mbarrier_init.release.cluster;\n\tfence.proxy.async.shared::cta;" ::: "memory");
#else
    __trap();
#endif
}

/* one arrival on bar that also expects `bytes` of copies (completed by bulk_copy) */
__device__ __forceinline__ void mbar_expect(uint64_t *bar, uint32_t bytes)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900   /* the copy engine: sm_90 (mvt_go checks) */
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
#else
    (void)bar, (void)bytes;
    __trap();
#endif
}

/* the copy of `bytes` from global src into shared dst, completing on bar */
__device__ __forceinline__ void bulk_copy(void *dst, const void *src, uint32_t bytes, uint64_t *bar)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900   /* the copy engine: sm_90 (mvt_go checks) */
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(smem_u32(dst)), "l"(src), "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
#else
    (void)dst, (void)src, (void)bytes, (void)bar;
    __trap();
#endif
}

/* one arrival that also expects `bytes` of copies, then the copy of `bytes` from global src into dst */
__device__ __forceinline__ void bulk_load(void *dst, const void *src, uint32_t bytes, uint64_t *bar)
{
    mbar_expect(bar, bytes);
    bulk_copy(dst, src, bytes, bar);
}

__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900   /* the copy engine: sm_90 (mvt_go checks) */
    uint32_t done;
    do {
        asm volatile("{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
                     "selp.u32 %0, 1, 0, p;\n\t}"
                     : "=r"(done)
                     : "r"(smem_u32(bar)), "r"(parity)
                     : "memory");
    } while (!done);
#else
    (void)bar, (void)parity;
    __trap();
#endif
}

/* per-type: staged activation bytes, staging, and one lane-unit's dot from a row in shared memory */
template <uint32_t T> struct mvt;

template <> struct mvt<AARMD_TYPE_Q4_K> {
    enum { UB = 16, UPS = 32 };   /* unit: a 16-byte quant chunk; a warp step: 32 units (4 super-blocks) */
    static __host__ __device__ size_t act_bytes(int n_in) { return (size_t)n_in + (size_t)(n_in / 32) * 8; }
    static __host__ __device__ int units(int n_in) { return n_in / 256 * 8; }
    template <int NW, bool SH = false>
    static __device__ __forceinline__ void stage(const int8_t *xq, const float *xd, int n_in, uint4 *sh)
    {
        mv1_stage<NW, SH>(xq, xd, n_in / 32, sh, reinterpret_cast<float2 *>(sh + n_in / 16));
    }
    /* unit u (< units) of a row at rowp */
    static __device__ __forceinline__ float dot(const uint8_t *rowp, int u, const uint4 *sh, int n_in)
    {
        const int sb = u >> 3, c = u & 7;
        const float2 *ds = reinterpret_cast<const float2 *>(sh + n_in / 16);
        uint4 hd = *reinterpret_cast<const uint4 *>(rowp + sb * 144);
        uint4 q = *reinterpret_cast<const uint4 *>(rowp + sb * 144 + 16 + 16 * c);
        return q4k_chunk_dot(hd, q, c, sh + sb * 16, ds + sb * 8);
    }
};

template <> struct mvt<AARMD_TYPE_Q8_0> {
    enum { UB = 34, UPS = 32 };   /* unit: a 34-byte block */
    /* xa[i] = xq[32i .. 32i+15], xb[i] = xq[32i+16 ..], dx[i] (lanes read consecutive 16-byte slots) */
    static __host__ __device__ size_t act_bytes(int n_in) { return (size_t)n_in + (size_t)(n_in / 32) * 4; }
    static __host__ __device__ int units(int n_in) { return n_in / 32; }
    template <int NW, bool SH = false>
    static __device__ __forceinline__ void stage(const int8_t *xq, const float *xd, int n_in, uint4 *sh)
    {
        const int nb = n_in / 32;
        float *dx = reinterpret_cast<float *>(sh + 2 * nb);
        for (int i = threadIdx.x; i < 2 * nb; i += NW * WARP)   /* 16-byte halves, coalesced */
            sh[(i & 1) * nb + (i >> 1)] = ld_act<SH>(reinterpret_cast<const uint4 *>(xq) + i);
        for (int i = threadIdx.x; i < nb; i += NW * WARP)
            dx[i] = ld_act<SH>(xd + i);
    }
    static __device__ __forceinline__ float dot(const uint8_t *rowp, int u, const uint4 *sh, int n_in)
    {
        const int nb = n_in / 32;
        const uint32_t *wp = reinterpret_cast<const uint32_t *>(rowp + ((34 * u) & ~3));
        uint32_t w[9];
#pragma unroll
        for (int k = 0; k < 9; k++)
            w[k] = wp[k];
        const int odd = u & 1;   /* block start 2 mod 4: scale in the high half of w[0], quants from w[1] */
        const uint32_t sh16 = odd ? 32u : 16u;
        int4 xa = *reinterpret_cast<const int4 *>(sh + u), xb = *reinterpret_cast<const int4 *>(sh + nb + u);
        float dx = reinterpret_cast<const float *>(sh + 2 * nb)[u];
        int s = 0;
        s = __dp4a((int)__funnelshift_rc(w[0], w[1], sh16), xa.x, s);
        s = __dp4a((int)__funnelshift_rc(w[1], w[2], sh16), xa.y, s);
        s = __dp4a((int)__funnelshift_rc(w[2], w[3], sh16), xa.z, s);
        s = __dp4a((int)__funnelshift_rc(w[3], w[4], sh16), xa.w, s);
        s = __dp4a((int)__funnelshift_rc(w[4], w[5], sh16), xb.x, s);
        s = __dp4a((int)__funnelshift_rc(w[5], w[6], sh16), xb.y, s);
        s = __dp4a((int)__funnelshift_rc(w[6], w[7], sh16), xb.z, s);
        s = __dp4a((int)__funnelshift_rc(w[7], w[8], sh16), xb.w, s);
        float d = odd ? h2f_hi(w[0]) : h2f_lo(w[0]);
        return d * dx * (float)s;
    }
};

/* F16/BF16 rows: a unit is a 16-byte chunk (8 weights); the F32 activations x (passed as xd) are staged
 * as xa[i] = x[8i .. 8i+3], xb[i] = x[8i+4 .. 8i+7] (lanes read consecutive 16-byte slots) */
template <uint32_t T> struct mvt_float {
    enum { UB = 16, UPS = 32 };
    static __host__ __device__ size_t act_bytes(int n_in) { return (size_t)n_in * 4; }
    static __host__ __device__ int units(int n_in) { return n_in / 8; }
    template <int NW, bool SH = false>
    static __device__ __forceinline__ void stage(const int8_t *, const float *x, int n_in, uint4 *sh)
    {
        const int n8 = n_in / 8;
        for (int i = threadIdx.x; i < 2 * n8; i += NW * WARP)
            sh[(i & 1) * n8 + (i >> 1)] = __ldg(reinterpret_cast<const uint4 *>(x) + i);
    }
    static __device__ __forceinline__ float dot(const uint8_t *rowp, int u, const uint4 *sh, int n_in)
    {
        float w[8];
        chunk16<T>::run(*reinterpret_cast<const uint4 *>(rowp + 16 * u), w);
        float4 a = reinterpret_cast<const float4 *>(sh)[u], b = reinterpret_cast<const float4 *>(sh)[n_in / 8 + u];
        return w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z + w[7] * b.w;
    }
};
template <> struct mvt<AARMD_TYPE_F16> : mvt_float<AARMD_TYPE_F16> {};
template <> struct mvt<AARMD_TYPE_BF16> : mvt_float<AARMD_TYPE_BF16> {};

#define MVT_ALIGN 128
static __host__ __device__ size_t mvt_up(size_t n)
{
    return (n + MVT_ALIGN - 1) & ~(size_t)(MVT_ALIGN - 1);
}

/*
 * v10 fusions of k_mvt (docs/cuda-notes.md v10-dec), template bits FU:
 * MVT_NORM: the RMS/layer norm of the previous kernels' residual row is computed by every block
 * in its prologue (xb = norm(x) * nw (+ nb), then quantized per 32 for Q4_K/Q8_0 or staged as F32
 * for F16/BF16), exactly as k_norm1 (ops.cu) computes it: the same k_norm1 geometry (T threads of
 * NV float4s each) is emulated thread for thread, so the sums, the norm and the Q8 rows are
 * bit-identical to the norm kernel's, which no longer runs. The norm weights are loaded before
 * griddepcontrol.wait (never written by kernels).
 * MVT_GATED: W = [gate rows (half) | up rows (half)]; a set is H = R / 2 gate rows and the same H
 * up rows (two bulk copies), a block owns whole groups of 32 consecutive outputs of h = act(gate)
 * * up (32 / H sets each), so its first warp computes the group's h, writes it (F32) and its Q8
 * run (as k_act_gated and k_quantize_q8: bit-identical): no activation kernel runs.
 */
#define MVT_NORM 1
#define MVT_GATED 2
#define MVT_NORM_T 512   /* k_norm1's threads at most (ops.cu NORM1_THREADS) */
#define MVT_NORM_MAX 4096   /* rows the norm prologue takes at most (NV <= 2 float4s per k_norm1 thread) */

struct mvt_fu {
    const float *x, *nw, *nb;   /* MVT_NORM: x [n_in] the residual row, norm weight and bias (may be NULL) */
    float eps;
    int layer;                  /* layer norm (else RMS) */
    int half;                   /* MVT_GATED: gate rows, then as many up rows */
    int gelu;                   /* act GELU, else SiLU */
    float *h;                   /* [half] act(gate) * up */
    int8_t *hq;                 /* its Q8 rows (NULL: none) */
    float *hd;
    int early;                  /* griddepcontrol.launch_dependents right after the wait (all kernels) */
};

/* bytes after the stages: the norm prologue's Q8 rows of x before they are staged (Q4_K, Q8_0) */
template <uint32_t T, int FU>
static __host__ __device__ size_t mvt_tmp(int n_in)
{
    return (FU & MVT_NORM) && T != AARMD_TYPE_F16 && T != AARMD_TYPE_BF16 ? mvt_up((size_t)n_in + (size_t)n_in / 8) : 0;
}

/* dynamic shared memory: S barriers, staged activations, S stages of R rows (+16: Q8_0 reads a word past) */
template <uint32_t T, int FU = 0>
static __host__ __device__ size_t mvt_smem(int n_in, size_t rb, int R, int S)
{
    return MVT_ALIGN + mvt_up(mvt<T>::act_bytes(n_in)) + (size_t)S * mvt_up((size_t)R * rb + 16) + mvt_tmp<T, FU>(n_in);
}

static __device__ __forceinline__ float mvt_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ops.cu's block_sum over nt = T / 32 warps of k_norm1, each real warp holding J of them (p[j]:
 * the partial of virtual thread threadIdx.x + j * NT); every thread gets the sum */
template <int NT, int J>
static __device__ __forceinline__ float mvt_vblock_sum(const float (&p)[J], float *sh, int T)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    float w[J];
#pragma unroll
    for (int j = 0; j < J; j++)
        w[j] = mvt_warp_sum(p[j]);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < J; j++)
        if (lane == 0 && (wid + j * (NT / 32)) * 32 < T)
            sh[wid + j * (NT / 32)] = w[j];
    __syncthreads();
    float t = lane < T / 32 ? sh[lane] : 0.0f;
    return mvt_warp_sum(t);
}

/* the gated activations of ops.cu (k_act_gated), same arithmetic */
static __device__ __forceinline__ float mvt_act(float g, int gelu)
{
    if (gelu) {
        const float c = 0.7978845608028654f;
        return 0.5f * g * (1.0f + tanhf(c * (g + 0.044715f * g * g * g)));
    }
    return g / (1.0f + expf(-g));
}

template <uint32_t T, int NW, int KS, int S, int FU = 0>
__global__ void __launch_bounds__(NW * WARP)
k_mvt(const uint8_t *__restrict__ W, size_t rb, int n_in, int n_out, const int8_t *__restrict__ xq,
      const float *__restrict__ xd, float *__restrict__ y, const float *__restrict__ bias, int accum, mvt_fu fu)
{
    typedef mvt<T> M;
    enum { R = NW / KS, H = R / 2, FN = FU & MVT_NORM, FG = (FU & MVT_GATED) != 0, SPG = FG ? 32 / H : 1 };
    enum { NT = NW * WARP, J = FN ? (MVT_NORM_T + NT - 1) / NT : 1, FLT = T == AARMD_TYPE_F16 || T == AARMD_TYPE_BF16 };
    extern __shared__ __align__(MVT_ALIGN) uint8_t mvt_sh[];
    __shared__ float red[2 * NW];   /* mv1_row_sum's, by set parity: a warp writing set k + 1's partial sum
                                     * never overwrites one its row's first warp has still to read (racecheck) */
    uint64_t *bar = reinterpret_cast<uint64_t *>(mvt_sh);
    uint4 *act = reinterpret_cast<uint4 *>(mvt_sh + MVT_ALIGN);
    uint8_t *stg = mvt_sh + MVT_ALIGN + mvt_up(M::act_bytes(n_in));
    const size_t sbytes = mvt_up((size_t)R * rb + 16);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, rl = warp / KS, ks = warp % KS;
    /* the block's sets: k = 0, 1, ... < nk; gated: whole groups of SPG sets (group blockIdx.x + i * grid) */
    const int nsets = FG ? fu.half / H : (n_out + R - 1) / R;
    const int nk = FG ? SPG * ((fu.half / 32 - (int)blockIdx.x + (int)gridDim.x - 1) / (int)gridDim.x)
                      : (nsets - (int)blockIdx.x + (int)gridDim.x - 1) / (int)gridDim.x;
    auto set_of = [&](int k) {
        return FG ? ((int)blockIdx.x + k / SPG * (int)gridDim.x) * SPG + k % SPG : (int)blockIdx.x + k * (int)gridDim.x;
    };
    auto issue = [&](int set, int st) {   /* thread 0: the rows of `set` into stage st */
        if (FG) {   /* H gate rows, then the same H up rows */
            uint32_t hb = (uint32_t)(H * rb);
            mbar_expect(bar + st, 2 * hb);
            bulk_copy(stg + st * sbytes, W + (size_t)set * H * rb, hb, bar + st);
            bulk_copy(stg + st * sbytes + hb, W + ((size_t)fu.half + (size_t)set * H) * rb, hb, bar + st);
        } else {
            int rows = min(R, n_out - set * R);
            bulk_load(stg + st * sbytes, W + (size_t)set * R * rb, (uint32_t)(rows * rb), bar + st);
        }
    };
    if (threadIdx.x == 0) {
#pragma unroll
        for (int st = 0; st < S; st++)
            mbar_init(bar + st, 1);
        mbar_fence_init();
#pragma unroll
        for (int st = 0; st < S; st++)
            if (st < nk)
                issue(set_of(st), st);
    }
    /* the norm prologue: k_norm1's T threads of NV float4s, virtual thread threadIdx.x + j * NT */
    const int n4 = n_in >> 2;
    const int Tn = FN ? min(MVT_NORM_T, (n4 + 31) / 32 * 32) : 0;
    const int NVn = FN ? (n4 + Tn - 1) / Tn : 0;
    float4 nwv[J][2], nbv[J][2];
    if constexpr (FN != 0) {   /* weights before the wait: never written by kernels */
#pragma unroll
        for (int j = 0; j < J; j++)
#pragma unroll
            for (int k = 0; k < 2; k++) {
                int vt = threadIdx.x + j * NT, f = vt + k * Tn;
                nwv[j][k] = make_float4(1.0f, 1.0f, 1.0f, 1.0f);
                nbv[j][k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (vt < Tn && k < NVn && f < n4) {
                    if (fu.nw)
                        nwv[j][k] = __ldg(reinterpret_cast<const float4 *>(fu.nw) + f);
                    if (fu.nb)
                        nbv[j][k] = __ldg(reinterpret_cast<const float4 *>(fu.nb) + f);
                }
            }
    }
    pdl_enter();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (fu.early)   /* release the next kernel now (per type: mv1_early) */
        asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
    if constexpr (FN != 0) {
        __shared__ float nsh[32];
        int8_t *tq = reinterpret_cast<int8_t *>(stg + S * sbytes);
        float *td = reinterpret_cast<float *>(tq + n_in);
        float4 v[J][2];
        float sp[J];
#pragma unroll
        for (int j = 0; j < J; j++) {   /* every load first, as k_norm1 */
            sp[j] = 0.0f;
#pragma unroll
            for (int k = 0; k < 2; k++) {
                int vt = threadIdx.x + j * NT, f = vt + k * Tn;
                v[j][k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (vt < Tn && k < NVn && f < n4)
                    v[j][k] = reinterpret_cast<const float4 *>(fu.x)[f];
            }
        }
#pragma unroll
        for (int j = 0; j < J; j++)
#pragma unroll
            for (int k = 0; k < 2; k++) {
                int vt = threadIdx.x + j * NT, f = vt + k * Tn;
                if (vt < Tn && k < NVn && f < n4)
                    sp[j] += v[j][k].x + v[j][k].y + v[j][k].z + v[j][k].w;
            }
        float mean = fu.layer ? mvt_vblock_sum<NT, J>(sp, nsh, Tn) / (float)n_in : 0.0f;
#pragma unroll
        for (int j = 0; j < J; j++) {
            sp[j] = 0.0f;
#pragma unroll
            for (int k = 0; k < 2; k++) {
                int vt = threadIdx.x + j * NT;
                if (vt < Tn && k < NVn && vt + k * Tn < n4) {
                    float d0 = v[j][k].x - mean, d1 = v[j][k].y - mean, d2 = v[j][k].z - mean, d3 = v[j][k].w - mean;
                    sp[j] += d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;
                }
            }
        }
        float r = rsqrtf(mvt_vblock_sum<NT, J>(sp, nsh, Tn) / (float)n_in + fu.eps);
#pragma unroll
        for (int j = 0; j < J; j++)
#pragma unroll
            for (int k = 0; k < 2; k++) {
                int vt = threadIdx.x + j * NT, f = vt + k * Tn;
                if (vt >= Tn || k >= NVn)   /* warp-uniform (Tn, NT multiples of 32) */
                    continue;
                float4 yv;
                yv.x = (v[j][k].x - mean) * r * nwv[j][k].x + nbv[j][k].x;
                yv.y = (v[j][k].y - mean) * r * nwv[j][k].y + nbv[j][k].y;
                yv.z = (v[j][k].z - mean) * r * nwv[j][k].z + nbv[j][k].z;
                yv.w = (v[j][k].w - mean) * r * nwv[j][k].w + nbv[j][k].w;
                if (FLT) {   /* F32 x staged as the float stage() lays it out */
                    if (f < n4)
                        reinterpret_cast<float4 *>(act)[(f & 1) * (n_in / 8) + (f >> 1)] = yv;
                } else if (k * Tn < n4) {   /* a run of 32 is 8 lanes, all valid or none */
                    q8_store4(yv, f < n4, f, tq, td);
                }
            }
        if (!FLT) {
            __syncthreads();   /* the Q8 rows in tq/td */
            M::template stage<NW, true>(tq, td, n_in, act);
        }
    } else {
        M::template stage<NW>(xq, xd, n_in, act);
    }
    __syncthreads();   /* activations staged, barriers initialized */
    const int nu = M::units(n_in);
    __shared__ float gu[FG ? 64 : 1];   /* gated: the group's 32 gate and 32 up outputs */
    for (int k = 0; k < nk; k++) {
        const int set = set_of(k);
        const int st = k % S;
        int r;   /* the output row of this warp */
        if (FG)
            r = rl < H ? set * H + rl : fu.half + set * H + rl - H;
        else
            r = set * R + rl;
        const bool valid = r < n_out;
        float y0, b0;
        mv_epilogue_load(valid && lane == 0 && ks == 0, accum, y, bias, r, &y0, &b0);
        mbar_wait(bar + st, (uint32_t)(k / S) & 1u);
        float acc = 0.0f;
        if (valid) {
            const uint8_t *rowp = stg + st * sbytes + (size_t)rl * rb;
            for (int u = ks * WARP + lane; u < nu; u += KS * WARP)
                acc += M::dot(rowp, u, act, n_in);
        }
        acc = mv1_row_sum<KS>(acc, red + (k & 1) * NW, warp, lane, ks);
        if (valid && lane == 0 && ks == 0) {
            float o = y0 + (bias ? acc + b0 : acc);
            y[r] = o;
            if (FG)
                gu[(rl < H ? 0 : 32) + (k % SPG) * H + (rl < H ? rl : rl - H)] = o;
        }
        if (k + S < nk || (FG && k % SPG == SPG - 1))
            __syncthreads();   /* every warp is done with stage st (and with red); gated: gu complete */
        if (FG && k % SPG == SPG - 1) {   /* the group's h = act(gate) * up and its Q8 run */
            if (warp == 0) {
                const int i = (set / SPG) * 32 + lane;
                float a = mvt_act(gu[lane], fu.gelu);
                float hv = a * gu[32 + lane];
                fu.h[i] = hv;
                if (fu.hq)
                    q8_store1(hv, (size_t)i, fu.hq, fu.hd);
            }
        }
        if (k + S < nk && threadIdx.x == 0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
            issue(set_of(k + S), st);
        }
        if (FG && k % SPG == SPG - 1 && k + 1 < nk)
            __syncthreads();   /* gu read by warp 0 before the next group's sets write it */
    }
}

/* 1 when the device has the bulk-copy engine (sm_90+): the kernels of k_mvt need it */
static int mvt_sm90(void)
{
    static int v = -1;
    if (v < 0) {
        int dev = 0, major = 0;
        cudaGetDevice(&dev);
        v = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9;
    }
    return v;
}

/* the largest dynamic shared memory a block may opt in to on this device */
static size_t mvt_smem_max(void)
{
    static int v = -1;
    if (v < 0) {
        int dev = 0;
        cudaGetDevice(&dev);
        if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess || v < 0)
            v = 48 * 1024;
    }
    return (size_t)v;
}

/* launches one configuration; 0 (nothing enqueued) when its shared memory does not fit the device.
 * Occupancy is cached per instantiation and shared-memory size. */
template <uint32_t T, int NW, int KS, int S, int FU = 0>
static int mvt_go(cudaStream_t s, const void *w, size_t rb, int64_t n_in, int64_t n_out, const void *xq, const float *xd,
                   float *y, const float *b, int accum, int bps, const mvt_fu &fu)
{
    enum { R = NW / KS };
    static size_t attr_smem = 0;
    static size_t occ_smem = 0;
    static int occ = 1, sms = 0;
    size_t smem = mvt_smem<T, FU>((int)n_in, rb, R, S);
    if (!mvt_sm90() || smem > mvt_smem_max())
        return 0;
    if (smem > 48 * 1024 && smem > attr_smem) {
        if (cudaFuncSetAttribute(k_mvt<T, NW, KS, S, FU>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) !=
            cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
        attr_smem = smem;
    }
    if (!sms) {
        int dev = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
        if (sms <= 0)
            sms = 1;
    }
    if (smem != occ_smem) {
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k_mvt<T, NW, KS, S, FU>, NW * WARP, smem) !=
                cudaSuccess ||
            occ < 1)
            occ = 1;
        occ_smem = smem;
    }
    long cap = (long)sms * (bps > 0 && bps < occ ? bps : occ);
    long nsets = (FU & MVT_GATED) ? fu.half / 32 : (n_out + R - 1) / R;   /* gated: groups of 32 outputs */
    long grid = nsets;
    if ((S > 1 || (FU & MVT_GATED)) && grid > cap) {   /* persistent: at most the resident blocks (or bps per SM) */
        long per = (nsets + cap - 1) / cap;
        grid = (nsets + per - 1) / per;
    }
    return mv1_launch(k_mvt<T, NW, KS, S, FU>, (unsigned)grid, NW * WARP, smem, s, (const uint8_t *)w, rb, (int)n_in,
                      (int)n_out, (const int8_t *)xq, xd, y, b, accum, fu);
}

/* cfg (bits 12-15 == 1): bits 0-3 KS, 4-7 S (stages), 8-11 NW, 16-19 blocks per SM cap (0: occupancy);
 * fused (FU != 0): only (NW, KS, S) = (8, 1, 2), (8, 2, 2), (8, 4, 2) */
template <uint32_t T, int FU = 0>
static int mvt_run(int cfg, cudaStream_t s, const void *w, size_t rb, int64_t n_in, int64_t n_out, const void *xq,
                   const float *xd, float *y, const float *b, int accum, const mvt_fu &fu)
{
    int ks = cfg & 15, st = (cfg >> 4) & 15, nw = (cfg >> 8) & 15, bps = (cfg >> 16) & 15;
#define MVT_CASE(NW_, KS_, S_)                                                                  \
    if (nw == NW_ && ks == KS_ && st == S_) {                                                   \
        return mvt_go<T, NW_, KS_, S_, FU>(s, w, rb, n_in, n_out, xq, xd, y, b, accum, bps, fu); \
    }
    MVT_CASE(8, 1, 2) MVT_CASE(8, 2, 2) MVT_CASE(8, 4, 2)
    if constexpr (FU == 0) {
        MVT_CASE(8, 1, 1) MVT_CASE(4, 1, 2) MVT_CASE(4, 1, 1) MVT_CASE(8, 2, 1) MVT_CASE(4, 2, 2) MVT_CASE(8, 1, 3)
    }
#undef MVT_CASE
    return 0;
}

/* configuration of the 1-token kernels: -1 off (the v5 kernel), 0 auto, else bits 0-3 KS (warps per
 * row: 1, 2, 4), bits 4-7 U (steps per load group: 2, 4, 8), bits 8-11 NW (warps per block: 4, 8);
 * the process default comes from AARMD_CUDA_MV1 (a measurement knob; unset: 0, auto) */
static int mv1_default = -2;

static int mv1_cfg_default(void)
{
    if (mv1_default == -2) {
        const char *e = getenv("AARMD_CUDA_MV1");
        mv1_default = e && *e ? (int)strtol(e, NULL, 0) : 0;
        if (mv1_default < -1)
            mv1_default = -1;
    }
    return mv1_default;
}

extern "C" void cuk_mv1_set(int cfg)
{
    mv1_default = cfg == CUK_MV1_DEFAULT ? -2 : cfg < -1 ? -1 : cfg;   /* -2: the environment's again */
}

template <int NW, int KS, int U>
static int mv1_q4k_go(cudaStream_t s, const void *w, size_t rb, int nsb, int64_t n_out, const void *xq, const float *xd,
                       float *y, const float *b, int accum)
{
    unsigned grid = (unsigned)((n_out + NW / KS - 1) / (NW / KS));
    size_t smem = mv1_smem((int64_t)nsb * 256);   /* <= MV1_MAX_SMEM (48 KB): no attribute needed */
    return mv1_launch(k_mv1_q4k<NW, KS, U>, grid, NW * WARP, smem, s, (const uint8_t *)w, rb, nsb, (int)n_out,
                      (const int8_t *)xq, xd, y, b, accum);
}

/* the instantiated (NW, KS, U) triples; 0 when cfg names none */
static int mv1_q4k_run(int cfg, cudaStream_t s, const void *w, size_t rb, int nsb, int64_t n_out, const void *xq,
                       const float *xd, float *y, const float *b, int accum)
{
    int ks = cfg & 15, u = (cfg >> 4) & 15, nw = (cfg >> 8) & 15;
#define MV1_CASE(NW_, KS_, U_)                                                     \
    if (nw == NW_ && ks == KS_ && u == U_) {                                       \
        return mv1_q4k_go<NW_, KS_, U_>(s, w, rb, nsb, n_out, xq, xd, y, b, accum); \
    }
    MV1_CASE(8, 1, 4) MV1_CASE(4, 1, 4) MV1_CASE(8, 2, 4) MV1_CASE(8, 4, 4) MV1_CASE(4, 2, 4) MV1_CASE(4, 4, 4)
    MV1_CASE(8, 1, 2) MV1_CASE(8, 2, 2) MV1_CASE(8, 4, 2) MV1_CASE(8, 1, 8) MV1_CASE(8, 2, 8)
#undef MV1_CASE
    return 0;
}

/*
 * The automatic choice (runs 1-3 of docs/cuda-notes.md v9-q4k, 8B shapes on the H100): the
 * bulk-copy kernel; Q4_K matrices of < 32M weights (qkv, wo) in sets of 4 rows, one stage, a
 * block per set (0x1411), larger ones in persistent blocks of 4-row sets (2 warps a row) in 2
 * stages (0x1822); Q8_0 rows up to 8192 wide in 8-row sets, 2 stages, at most 2 blocks per SM
 * (0x21821). Run 3 (tg128 after pp512, same call): 8B Q4_K 384.0 -> 413.7 tok/s, Q8_0 247.0 ->
 * 266.2. Wider Q8_0 rows (down: 15 KB a row; 8 rows in 2 stages do not fit) stayed on the v5
 * kernel until v11: 2-row sets, 4 warps a row, 2 stages (0x1824), 8B Q8_0 tg128 from an empty
 * context 275.7 -> 284.1 (docs/cuda-notes.md v11-lead).
 */
static int mv1_auto(uint32_t type, int64_t n_in, int64_t n_out)
{
    static int wide = -2;   /* Q8_0 rows over 8192: AARMD_CUDA_MV1_WIDE (a measurement knob; -1: the v5 kernel) */
    if (wide == -2) {
        const char *e = getenv("AARMD_CUDA_MV1_WIDE");
        wide = e && *e ? (int)strtol(e, NULL, 0) : 0x1824;
    }
    if (type == AARMD_TYPE_Q4_K)
        return n_in * n_out < ((int64_t)32 << 20) ? 0x1411 : 0x1822;
    if (type == AARMD_TYPE_Q8_0)
        return n_in <= 8192 ? 0x21821 : wide;
    /* F16/BF16: off (run 3: the Q4_K choice lost 2% on 8B F16 and 6% on 1B BF16 decode; 0x1824 was
     * 3% ahead of the v5 kernel in the micro-benchmark; v10-dec tried it in a decode: 1B BF16 -1.3%,
     * 8B F16 +0.2%) */
    return -1;
}

/* cuk_mv1_q8 and cuk_mv1_f: xd is the F32 activations x for F16/BF16 */
static int mv1_any(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                   const float *xd, const float *b, int accum, float *y, int cfg)
{
    if (cfg == CUK_MV1_DEFAULT)
        cfg = mv1_cfg_default();
    size_t rb = cuk_row_bytes(type, n_in);
    if (cfg < 0 || n_in <= 0 || n_out < 1 || !rb || rb % 16 || n_in % 256 || ((uintptr_t)w & 15))
        return 0;
    if (!cfg && (cfg = mv1_auto(type, n_in, n_out)) < 0)
        return 0;
    if ((cfg >> 12 & 15) == 1) {   /* the bulk-copy kernel; 64 KB of activations at most */
        if (n_in > 32768)
            return 0;
        mvt_fu fu = {};
        fu.early = mv1_early(type);
        switch (type) {
        case AARMD_TYPE_Q4_K: return mvt_run<AARMD_TYPE_Q4_K>(cfg, s, w, rb, n_in, n_out, xq, xd, y, b, accum, fu);
        case AARMD_TYPE_Q8_0: return mvt_run<AARMD_TYPE_Q8_0>(cfg, s, w, rb, n_in, n_out, xq, xd, y, b, accum, fu);
        case AARMD_TYPE_F16: return mvt_run<AARMD_TYPE_F16>(cfg, s, w, rb, n_in, n_out, NULL, xd, y, b, accum, fu);
        case AARMD_TYPE_BF16: return mvt_run<AARMD_TYPE_BF16>(cfg, s, w, rb, n_in, n_out, NULL, xd, y, b, accum, fu);
        default: return 0;
        }
    }
    if (type != AARMD_TYPE_Q4_K || mv1_smem(n_in) > MV1_MAX_SMEM || (cfg >> 12 & 15))
        return 0;
    return mv1_q4k_run(cfg, s, w, rb, (int)(n_in / 256), n_out, xq, xd, y, b, accum);
}

extern "C" int cuk_mv1_q8(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                          const float *xd, const float *b, int accum, float *y, int cfg)
{
    if (type != AARMD_TYPE_Q4_K && type != AARMD_TYPE_Q8_0)
        return 0;
    return mv1_any(s, type, w, n_in, n_out, xq, xd, b, accum, y, cfg);
}

extern "C" int cuk_mv1_f(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const float *x,
                         const float *b, int accum, float *y, int cfg)
{
    if (type != AARMD_TYPE_F16 && type != AARMD_TYPE_BF16)
        return 0;
    return mv1_any(s, type, w, n_in, n_out, NULL, x, b, accum, y, cfg);
}

/*
 * The fused kernels' configuration: AARMD_CUDA_MV1F (a measurement knob, read once; with
 * AARMD_CUDA_MV1F_SMALL for matrices of < 32M weights), else Q4_K 0x1822 (persistent blocks of 4-row
 * sets, 2 warps a row, 2 stages, up to the resident blocks: v17 measured 8B Q4_K decode +2% with the
 * norm prologue where v10's 2 blocks per SM, 0x21822, lost 6.5%), Q8_0 its automatic 0x21821,
 * F16/BF16 off.
 */
static int mv1f_cfg(uint32_t type, int64_t n_in, int64_t n_out)
{
    static int env = -2, env_small = -2;
    if (env == -2) {
        const char *e = getenv("AARMD_CUDA_MV1F");
        env = e && *e ? (int)strtol(e, NULL, 0) : 0;
        e = getenv("AARMD_CUDA_MV1F_SMALL");   /* matrices of < 32M weights (qkv) */
        env_small = e && *e ? (int)strtol(e, NULL, 0) : 0;
    }
    if (env_small && n_in * n_out < ((int64_t)32 << 20))
        return env_small;
    if (env)
        return env;
    return type == AARMD_TYPE_Q4_K ? 0x1822 : type == AARMD_TYPE_Q8_0 ? 0x21821 : -1;
}

template <uint32_t T>
static int mv1_fused_t(int cfg, cudaStream_t s, const void *w, size_t rb, int64_t n_in, int64_t n_out, const void *xq,
                       const float *xd, const mvt_fu &fu, float *y)
{
    if (fu.x && fu.half)
        return mvt_run<T, MVT_NORM | MVT_GATED>(cfg, s, w, rb, n_in, n_out, xq, xd, y, NULL, 0, fu);
    if (fu.x)
        return mvt_run<T, MVT_NORM>(cfg, s, w, rb, n_in, n_out, xq, xd, y, NULL, 0, fu);
    return mvt_run<T, MVT_GATED>(cfg, s, w, rb, n_in, n_out, xq, xd, y, NULL, 0, fu);
}

extern "C" int cuk_mv1_fused(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out, const void *xq,
                             const float *xd, const struct cuk_mv1_fuse *f, float *y, int cfg)
{
    int flt = type == AARMD_TYPE_F16 || type == AARMD_TYPE_BF16;
    if ((type != AARMD_TYPE_Q4_K && type != AARMD_TYPE_Q8_0 && !flt) || !f || (!f->x && !f->gated))
        return 0;
    if (cfg == CUK_MV1_DEFAULT || cfg == 0)
        cfg = mv1f_cfg(type, n_in, n_out);
    size_t rb = cuk_row_bytes(type, n_in);
    if (cfg <= 0 || (cfg >> 12 & 15) != 1 || n_in <= 0 || n_in % 256 || n_out < 1 || !rb || rb % 16 ||
        ((uintptr_t)w & 15))
        return 0;
    if (f->x && (n_in > MVT_NORM_MAX || ((uintptr_t)f->x & 15) || ((uintptr_t)f->nw & 15) || ((uintptr_t)f->nb & 15)))
        return 0;
    int half = 0;
    if (f->gated) {
        int nw = (cfg >> 8) & 15, ks = cfg & 15, hr = ks ? nw / ks / 2 : 0;   /* gate rows a set */
        half = (int)(n_out / 2);
        if (n_out % 2 || half % 32 || hr < 1 || 32 % hr || !f->h)
            return 0;
        if (!flt && f->hq && !f->x)   /* the Q8 input xq would be overwritten while blocks still stage it */
            return 0;
    }
    mvt_fu fu = {};
    fu.x = f->x;
    fu.nw = f->nw;
    fu.nb = f->nb;
    fu.eps = f->eps;
    fu.layer = f->layer;
    fu.half = half;
    fu.gelu = f->gelu;
    fu.h = f->h;
    fu.hq = flt ? NULL : (int8_t *)f->hq;
    fu.hd = flt ? NULL : f->hd;
    fu.early = mv1_early(type);
    switch (type) {
    case AARMD_TYPE_Q4_K: return mv1_fused_t<AARMD_TYPE_Q4_K>(cfg, s, w, rb, n_in, n_out, xq, xd, fu, y);
    case AARMD_TYPE_Q8_0: return mv1_fused_t<AARMD_TYPE_Q8_0>(cfg, s, w, rb, n_in, n_out, xq, xd, fu, y);
    case AARMD_TYPE_F16: return mv1_fused_t<AARMD_TYPE_F16>(cfg, s, w, rb, n_in, n_out, NULL, xd, fu, y);
    case AARMD_TYPE_BF16: return mv1_fused_t<AARMD_TYPE_BF16>(cfg, s, w, rb, n_in, n_out, NULL, xd, fu, y);
    default: return 0;
    }
}
