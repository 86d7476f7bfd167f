/*
 * mmq_common.cuh — what the sm_90 GEMMs of mmq.cu (v8, v9), mmq_i8.cu (int8), mmq_k.cu and mmq_wg.cu share:
 * mbarrier and bulk/tensor-copy wrappers, the ordered split-K store through distributed shared
 * memory, the K-split and cluster launch configuration, and the tensor-map encoder looked up
 * from the driver. Included by those .cu files only (static copies per file); not a kernel.
 */
#ifndef AARMD_MMQ_COMMON_CUH
#define AARMD_MMQ_COMMON_CUH

#include <cooperative_groups.h>
#include <cuda.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pdl.cuh"

namespace cg = cooperative_groups;

/*
 * The end of a K-split GEMM block (v8, v9): the writer warps put their mma accumulators (16 rows
 * x NTOK tokens a warp, fragment layout of mma.cuh) in red [BM][RST]; then the ks ranks of the
 * row tile's cluster (one block when ks == 1; before sm_90 the launchers never split) each add
 * rows rank*chunk.. of every rank's red in rank order (deterministic) and store y [n_tok][n_out].
 * Every thread of the block calls it.
 */
/* The writer warps' part of splitk_store: accumulators of rows r0w + g, r0w + g + 8 into red. */
template <int NTT, int RST>
__device__ __forceinline__ void splitk_put(float *red, const float (&acc)[NTT][4], int r0w, int g, int t4)
{
    float *rr = red + (r0w + g) * RST + 2 * t4;
#pragma unroll
    for (int n = 0; n < NTT; n++) {
        rr[8 * n] = acc[n][0];
        rr[8 * n + 1] = acc[n][1];
        rr[8 * RST + 8 * n] = acc[n][2];
        rr[8 * RST + 8 * n + 1] = acc[n][3];
    }
}

/* The rest of splitk_store once red holds this block's partial sums: every thread calls it. */
template <int BM, int NTOK, int RST>
__device__ __forceinline__ void splitk_reduce(float *red, int tid, int nth, int ks, int rank, int n_tok, int r0,
                                              int n_out, float *__restrict__ y)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cg::cluster_group cl = cg::this_cluster();
    if (ks > 1)
        cl.sync();
    else
        __syncthreads();
#else
    __syncthreads();
#endif
    const int chunk = (BM + ks - 1) / ks;
    for (int e = tid; e < NTOK * chunk; e += nth) {
        const int tk = e / chunk, row = rank * chunk + e % chunk;
        if (tk >= n_tok || row >= BM || r0 + row >= n_out)
            continue;
        float s = 0.0f;
        for (int p = 0; p < ks; p++) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            const float *rp = ks > 1 ? cl.map_shared_rank(red, p) : red;
#else
            const float *rp = red;
#endif
            s += rp[row * RST + tk];
        }
        y[(size_t)tk * n_out + r0 + row] = s;
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (ks > 1)
        cl.sync();   /* peers may still read this block's partial sums */
#endif
}

/*
 * The end of a K-split GEMM block (v8, v9): the writer warps put their mma accumulators (16 rows
 * x NTOK tokens a warp, fragment layout of mma.cuh) in red [BM][RST]; then the ks ranks of the
 * row tile's cluster (one block when ks == 1; before sm_90 the launchers never split) each add
 * rows rank*chunk.. of every rank's red in rank order (deterministic) and store y [n_tok][n_out].
 * Every thread of the block calls it.
 */
template <int BM, int NTOK, int NTT, int RST>
__device__ __forceinline__ void splitk_store(float *red, const float (&acc)[NTT][4], bool writer, int warp, int g,
                                             int t4, int tid, int nth, int ks, int rank, int n_tok, int r0,
                                             int n_out, float *__restrict__ y)
{
    if (writer)
        splitk_put<NTT, RST>(red, acc, warp * 16, g, t4);
    splitk_reduce<BM, NTOK, RST>(red, tid, nth, ks, rank, n_tok, r0, n_out, y);
}

/* ---- launch helpers ------------------------------------------------------------------------ */

static int v8_sms = 0, v8_cc = 0;   /* multiprocessors and compute capability major of the device */

static inline void v8_device(void)
{
    if (!v8_sms) {
        int dev = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&v8_sms, cudaDevAttrMultiProcessorCount, dev);
        cudaDeviceGetAttribute(&v8_cc, cudaDevAttrComputeCapabilityMajor, dev);
        if (v8_sms <= 0)
            v8_sms = 1;
    }
}

/* The K split of a GEMM of `tiles` row tiles and nu units: ranks added until the grid has `want`
 * blocks, each rank >= 2 units (1 for short rows), at most ks_max; no empty ranks. Sets *ks;
 * returns the units per rank. */
static inline int split_k(int nu, int tiles, int want, int ks_max, int *ks)
{
    const int min_units = nu >= 8 ? 2 : 1;
    int k = 1;
    while (k < ks_max && tiles * k < want && nu / (k + 1) >= min_units)
        k++;
    const int kun = (nu + k - 1) / k;
    *ks = (nu + kun - 1) / kun;
    return kun;
}

/* The launch of tiles x ks blocks of nth threads, the ks ranks of a row tile one thread-block
 * cluster (sm_90; ks 1: none), programmatic dependent launch when on; at[2] backs cfg. */
static inline void cluster_cfg(cudaLaunchConfig_t *cfg, cudaLaunchAttribute *at, int tiles, int ks, int nth, size_t smem,
                        cudaStream_t s)
{
    int na = 0;
    if (cuk_pdl_on) {
        at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[na].val.programmaticStreamSerializationAllowed = 1;
        na++;
    }
    if (ks > 1) {
        at[na].id = cudaLaunchAttributeClusterDimension;
        at[na].val.clusterDim.x = (unsigned)ks;
        at[na].val.clusterDim.y = 1;
        at[na].val.clusterDim.z = 1;
        na++;
    }
    memset(cfg, 0, sizeof *cfg);
    cfg->gridDim = dim3((unsigned)(tiles * ks));
    cfg->blockDim = dim3((unsigned)nth);
    cfg->dynamicSmemBytes = smem;
    cfg->stream = s;
    cfg->attrs = at;
    cfg->numAttrs = (unsigned)na;
}

/*
 * A device scratch per stream (a stream's launches are ordered, so one buffer serves all its
 * launches; graphs captured on it keep its address), at least `bytes`, never freed (a graph may
 * still use it; a replaced smaller one stays too). Allocated on first use, also inside a stream
 * capture: the thread's capture mode is relaxed around cudaMalloc (which enqueues nothing). One
 * table per .cu file (static); at most MMQ_STREAMS streams, beyond that NULL (callers refuse).
 */
#define MMQ_STREAMS 64
static pthread_mutex_t mmq_scr_mu = PTHREAD_MUTEX_INITIALIZER;
static struct { cudaStream_t s; void *p; size_t bytes; } mmq_scr[MMQ_STREAMS];
static int mmq_nscr = 0;

static inline void *mmq_scratch(cudaStream_t s, size_t bytes)
{
    void *p = NULL;
    pthread_mutex_lock(&mmq_scr_mu);
    int i = 0;
    while (i < mmq_nscr && mmq_scr[i].s != s)
        i++;
    if (i < mmq_nscr && mmq_scr[i].bytes >= bytes) {
        p = mmq_scr[i].p;
    } else if (i < MMQ_STREAMS) {
        cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
        cudaThreadExchangeStreamCaptureMode(&mode);
        if (cudaMalloc(&p, bytes) == cudaSuccess) {
            mmq_scr[i].s = s;
            mmq_scr[i].p = p;
            mmq_scr[i].bytes = bytes;
            if (i == mmq_nscr)
                mmq_nscr++;
        } else {
            p = NULL;
            cudaGetLastError();
        }
        cudaThreadExchangeStreamCaptureMode(&mode);
    }
    pthread_mutex_unlock(&mmq_scr_mu);
    return p;
}

/* ---- mbarriers and bulk copies (sm_90) ------------------------------------------------------ */

__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void mb_init(uint64_t *b, uint32_t count)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(b)), "r"(count) : "memory");
#else
    (void)b; (void)count;
#endif
}

/* A block's share of a K-split GEMM (ks consecutive blocks per tile of bm output rows): its K slice
 * rank, the tile's first row r0 and its units [u0, u0 + nst) of the nu units of K (kun a slice). */
/* A GEMM version's launch knobs (cuk_mm_set_variant's cfg): bits 0-1 stages past 2 (at most 4),
 * 2-5 the largest K split (0: 8), 6-7 blocks per SM the split aims at (0: the caller's choice). */
struct gemm_knobs {
    int ns, ks_max, wm;
};
static inline gemm_knobs gemm_knobs_of(int cfg)
{
    gemm_knobs k = {2 + (cfg & 3), (cfg >> 2) & 15, (cfg >> 6) & 3};
    if (k.ns > 4)
        k.ns = 4;
    if (!k.ks_max || k.ks_max > 8)
        k.ks_max = 8;
    return k;
}

struct ksplit_part {
    int rank, r0, u0, nst;
};
__device__ __forceinline__ ksplit_part ksplit_of(int ks, int bm, int nu, int kun)
{
    ksplit_part p;
    p.rank = ks > 1 ? (int)(blockIdx.x % (unsigned)ks) : 0;
    p.r0 = (int)(blockIdx.x / (unsigned)ks) * bm;
    p.u0 = min(nu, p.rank * kun);
    p.nst = min(nu, p.u0 + kun) - p.u0;
    return p;
}

/* Thread 0 initializes a ring of ns stages: full[s] (one arrival plus the copies' bytes), empty[s]
 * (n_cons consumer warps) and, with READY, ready[s] (a warp's 32 lanes), fenced for the cluster;
 * then the block's barrier. Every thread calls it. */
template <bool READY>
__device__ __forceinline__ void mb_ring_init(uint64_t *full, uint64_t *empty, uint64_t *ready, int ns, uint32_t n_cons)
{
    if (threadIdx.x == 0) {
        for (int s = 0; s < ns; s++) {
            mb_init(&full[s], 1);
            if (READY)
                mb_init(&ready[s], 32);
            mb_init(&empty[s], n_cons);
        }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
    }
    __syncthreads();
}

__device__ __forceinline__ void mb_arrive(uint64_t *b)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(b)) : "memory");
#else
    (void)b;
#endif
}

__device__ __forceinline__ void mb_arrive_tx(uint64_t *b, uint32_t bytes)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(b)), "r"(bytes)
                 : "memory");
#else
    (void)b; (void)bytes;
#endif
}

__device__ __forceinline__ void mb_wait(uint64_t *b, uint32_t parity)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t ok = 0;
    do {
        asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     " selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(ok)
                     : "r"(smem_u32(b)), "r"(parity)
                     : "memory");
    } while (!ok);
#else
    (void)b; (void)parity;
#endif
}

/* bytes (a multiple of 16; both addresses 16-byte aligned) global -> this block's shared memory,
 * completing on mbarrier b */
__device__ __forceinline__ void bulk_g2s(void *dst, const void *src, uint32_t bytes, uint64_t *b)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                     smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(b))
                 : "memory");
#else
    (void)dst; (void)src; (void)bytes; (void)b;
#endif
}

/* the box at (c0, c1) of 2D tensor map tm -> this block's shared memory (128-byte aligned),
 * completing on mbarrier b */
__device__ __forceinline__ void tma_2d(void *dst, const CUtensorMap *tm, int c0, int c1, uint64_t *b)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
                 "[%4];\n" ::"r"(smem_u32(dst)),
                 "l"(reinterpret_cast<uint64_t>(tm)), "r"(c0), "r"(c1), "r"(smem_u32(b))
                 : "memory");
#else
    (void)dst; (void)tm; (void)c0; (void)c1; (void)b;
#endif
}

/* cuTensorMapEncodeTiled from the driver (the runtime is linked statically; no -lcuda) */
typedef CUresult (*mmq_encode_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                  const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                                  CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static pthread_mutex_t mmq_encode_mu = PTHREAD_MUTEX_INITIALIZER;
static mmq_encode_fn mmq_encode = NULL;
static int mmq_encode_state = 0;   /* 0 not looked up, 1 found, -1 absent */

/* a 2D tensor map of `base`: dim0 elements of type dt per row (contiguous), dim1 rows of stride
 * bytes, boxes of box0 x box1 elements (zero-filled past the edges); 1 on success, 0 on failure */
static inline int mmq_tmap_2d(CUtensorMap *tm, CUtensorMapDataType dt, const void *base, uint64_t dim0, uint64_t dim1,
                              uint64_t stride, uint32_t box0, uint32_t box1, CUtensorMapSwizzle sw)
{
    pthread_mutex_lock(&mmq_encode_mu);
    if (!mmq_encode_state) {
        void *fn = NULL;
        cudaDriverEntryPointQueryResult q;
        mmq_encode_state = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                                            &q) == cudaSuccess && fn && q == cudaDriverEntryPointSuccess
                                   ? 1 : -1;
        if (mmq_encode_state > 0)
            mmq_encode = (mmq_encode_fn)fn;
        else
            cudaGetLastError();
    }
    pthread_mutex_unlock(&mmq_encode_mu);
    if (mmq_encode_state < 0)
        return 0;
    cuuint64_t dim[2] = {(cuuint64_t)dim0, (cuuint64_t)dim1}, str[1] = {(cuuint64_t)stride};
    cuuint32_t box[2] = {(cuuint32_t)box0, (cuuint32_t)box1}, es[2] = {1, 1};
    return mmq_encode(tm, dt, 2, const_cast<void *>(base), dim, str, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE, sw,
                      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* The 6-bit scales (sc) and mins (mn) of half hf of a Q4_K super-block (sub-blocks 4 hf .. 4 hf + 3,
 * byte k of each = sub-block 4 hf + k) from the block's first 16 bytes hd = (d | dmin, scales[12]). */
__device__ __forceinline__ void q4k_half_scales(uint4 hd, int hf, uint32_t *sc, uint32_t *mn)
{
    *sc = hf ? (hd.w & 0x0F0F0F0Fu) | ((hd.y >> 2) & 0x30303030u) : hd.y & 0x3F3F3F3Fu;
    *mn = hf ? ((hd.w >> 4) & 0x0F0F0F0Fu) | ((hd.z >> 2) & 0x30303030u) : hd.z & 0x3F3F3F3Fu;
}

/* The int8 mma A fragments (mma.m16n8k32, row) of Q4_K sub-blocks 2p (a[0], low nibbles) and
 * 2p + 1 (a[1], high nibbles) of the super-block at rw (row g) and rw + 8 * 144 (row g + 8): their
 * 32 bytes of nibbles at 16 + 32p, one AND / shift per 4 weights (mmq_i8.cu, mmq_k.cu) */
__device__ __forceinline__ void q4k_s8_frags(const uint8_t *rw, int p, int t4, uint32_t (&a)[2][4])
{
    const uint32_t *w = reinterpret_cast<const uint32_t *>(rw + 16 + 32 * p) + t4;
    const uint32_t *v = reinterpret_cast<const uint32_t *>(rw + 8 * 144 + 16 + 32 * p) + t4;
    const uint32_t w0 = w[0], w1 = w[4], v0 = v[0], v1 = v[4], m = 0x0F0F0F0Fu;
    a[0][0] = w0 & m;
    a[0][1] = v0 & m;
    a[0][2] = w1 & m;
    a[0][3] = v1 & m;
    a[1][0] = (w0 >> 4) & m;
    a[1][1] = (v0 >> 4) & m;
    a[1][2] = (w1 >> 4) & m;
    a[1][3] = (v1 >> 4) & m;
}

/* Host: the two tensor maps of the int8 GEMMs (mmq_i8.cu, mmq_k.cu): the weights as rows of rb / 2
 * 16-bit elements in boxes of one unit (ub bytes) x bm rows; the step's int8 activations as n_tok
 * rows of n_in bytes in boxes of 128 bytes x ntok tokens, 128-byte swizzle (conflict-free ldmatrix;
 * zeros past the last token). 0 when the driver refuses either. */
static inline int mmq_i8_maps(CUtensorMap *tmw, CUtensorMap *tmx, const void *w, size_t rb, int64_t n_out, int ub,
                              int bm, const void *xq, int64_t n_in, int n_tok, int ntok)
{
    memset(tmw, 0, sizeof *tmw);
    memset(tmx, 0, sizeof *tmx);
    return mmq_tmap_2d(tmw, CU_TENSOR_MAP_DATA_TYPE_UINT16, w, rb / 2, (uint64_t)n_out, rb, (uint32_t)ub / 2,
                       (uint32_t)bm, CU_TENSOR_MAP_SWIZZLE_NONE) &&
           mmq_tmap_2d(tmx, CU_TENSOR_MAP_DATA_TYPE_UINT8, xq, (uint64_t)n_in, (uint64_t)n_tok, (uint64_t)n_in, 128,
                       (uint32_t)ntok, CU_TENSOR_MAP_SWIZZLE_128B);
}

/* Host: the fewest tokens a forward sends to an optional GEMM, from the environment variable
 * `name` (>= 1), else `never` (mmq_wg.cu's AARMD_CUDA_WG_FROM, mmq_k.cu's AARMD_CUDA_K_FROM) */
static inline int mmq_env_from(const char *name, int never)
{
    const char *e = getenv(name);
    const int v = e ? atoi(e) : 0;
    return v >= 1 ? v : never;
}

/* ---- F16 decoding of Q4_K words (the F16 GEMMs: v8 and v9 of mmq.cu, mmq_wg.cu) ------------------ */

__device__ __forceinline__ uint32_t h2u(__half2 h)
{
    return *reinterpret_cast<uint32_t *>(&h);
}

__device__ __forceinline__ __half2 u2h(uint32_t u)
{
    return *reinterpret_cast<__half2 *>(&u);
}

/* the nibbles at bits 0-3 and 16-19 of u (exact small integers q) -> a * q + b */
__device__ __forceinline__ uint32_t nib2(uint32_t u, __half2 a, __half2 b)
{
    __half2 q = __hsub2(u2h((u & 0x000F000Fu) | 0x64006400u), u2h(0x64006400u));
    return h2u(__hfma2(q, a, b));
}

/* the (scale, offset) halves of one row-item of a K-quant table entry, duplicated into half2s */
__device__ __forceinline__ void tab2(uint32_t e, __half2 &a, __half2 &b)
{
    a = u2h(__byte_perm(e, 0, 0x1010));
    b = u2h(__byte_perm(e, 0, 0x3232));
}

/*
 * Lane t4's four A half2s of item `it` (sub-block, 32 elements) of a Q4_K row whose unit (144
 * bytes) starts at rw, scale a and offset b given: [0] (e0,e2) and [1] (e1,e3) of word 2t4 of the
 * item, [2], [3] the same of word 2t4+1 (the k order of mmq.cu's F16 GEMMs: the activations are
 * laid out to match).
 */
__device__ __forceinline__ void q4k_frag_ab(const uint8_t *rw, int it, int t4, __half2 a, __half2 b, uint32_t *o)
{
    uint2 q = *reinterpret_cast<const uint2 *>(rw + 16 + 32 * (it >> 1) + 8 * t4);
    const int sh = 4 * (it & 1);   /* odd sub-blocks are the high nibbles */
    o[0] = nib2(q.x >> sh, a, b); o[1] = nib2(q.x >> (sh + 8), a, b);
    o[2] = nib2(q.y >> sh, a, b); o[3] = nib2(q.y >> (sh + 8), a, b);
}

/*
 * One warp's Q4_K table of a stage: for its 16 rows (row r's unit at rows + r * ubp) and their 8
 * sub-blocks, tw[r * 8 + sub] = the half2 (d * scale, -dmin * min); lane = (row, half of the
 * sub-blocks). Brackets the writes with __syncwarp (the previous unit's readers are done first).
 */
__device__ __forceinline__ void q4k_warp_table(const uint8_t *rows, int ubp, uint32_t *tw, int lane)
{
    const int row = lane >> 1, hf = lane & 1;
    uint4 hd = *reinterpret_cast<const uint4 *>(rows + row * ubp);
    float2 dd = __half22float2(u2h(hd.x));
    uint32_t sc, mn;
    q4k_half_scales(hd, hf, &sc, &mn);
    __syncwarp();   /* every lane done with the previous unit's table */
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float a = dd.x * (float)((sc >> (8 * k)) & 0xFF), b = -dd.y * (float)((mn >> (8 * k)) & 0xFF);
        tw[row * 8 + hf * 4 + k] = h2u(__floats2half2_rn(a, b));
    }
    __syncwarp();
}

/* Host: the dynamic shared memory kern may use, raised once to want (capped by the device's
 * opt-in limit) and kept in *attr (0: not asked yet; -1: the device refused). */
template <class F>
static inline int mmq_smem_limit(F kern, size_t want, int *attr)
{
    if (!*attr) {
        int dev = 0, optin = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
        const int lim = (int)want < optin ? (int)want : optin;
        *attr = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, lim) == cudaSuccess ? lim : -1;
        if (*attr < 0)
            cudaGetLastError();
    }
    return *attr;
}

#endif /* AARMD_MMQ_COMMON_CUH */
