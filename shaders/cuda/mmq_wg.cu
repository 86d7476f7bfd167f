/*
 * mmq_wg.cu — a Hopper GEMM for Q4_K weights and steps of 1..256 tokens (sm_90a: warpgroup MMA,
 * tensor copies): warpgroups 1-2 of a block decode the Q4_K weights into F16 tiles in shared
 * memory, warpgroup 0 multiplies them with the step's F16 activation rows (copied straight from
 * the rows the cuBLAS path reads) through wgmma, F32 sums, K split over a cluster with the ordered
 * DSMEM reduction of the other GEMMs (deterministic). Entered through cuk_mmqwg_q4k (launch.h).
 *
 * Measured (docs/cuda-notes.md v12-lead): correct (kernel check within 7e-4 of the F16 reference),
 * but all Q4_K matmuls of an 8B step take 11.7 ms at 128 tokens against 6.2 ms through cuBLAS on
 * the F16 copies and 7.4 vs 4.2 ms at 32 tokens against the v9 / int8 route: every block re-reads
 * its token tile from L2 (16 GB a step at 128 tokens), so the forward sends it nothing unless
 * AARMD_CUDA_WG_FROM asks (A/B, and the base for tiles shared across a cluster).
 */
#include <cuda.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../plugins/cuda/launch.h"
#include "mma.cuh"
#include "mmq_common.cuh"
#include "pdl.cuh"
#include "../../core/abi/aarmd_backend.h"

#define WG_UK 256        /* elements of K per unit (one Q4_K super-block) */
#define WG_UB 144        /* Q4_K bytes of a row per unit */
#define WG_UBP 160       /* a row's stride in the weight ring (the tensor copy's box: 16-byte multiple) */

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_ON 1
#else
#define WG_ON 0
#endif

/* ---- wgmma wrappers (sm_90a) ------------------------------------------------------------------ */

__device__ __forceinline__ void wg_fence()
{
#if WG_ON
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wg_commit()
{
#if WG_ON
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

template <int N> __device__ __forceinline__ void wg_wait()
{
#if WG_ON
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

/*
 * wgs_mma<NT>: d (64 x NT F32, NT / 2 per thread: fragment n8 tile j = d[4j..4j+3]) += A (desc) x
 * B (desc), both from shared memory, one m64nNTk16 (NT 32, 64, 96, 128). The asm operand lists:
 * accumulators %0.. in groups of 16 (WGS_R*), then the two descriptors and the scale-d flag.
 */
#define WGS_R0 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
#define WGS_R16 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define WGS_R32 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47"
#define WGS_R48 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define WGS_D8(b) "+f"(d[b]), "+f"(d[b + 1]), "+f"(d[b + 2]), "+f"(d[b + 3]), "+f"(d[b + 4]), "+f"(d[b + 5]), \
                  "+f"(d[b + 6]), "+f"(d[b + 7])
#define WGS_D16(b) WGS_D8(b), WGS_D8(b + 8)
#if WG_ON
#define WGS_ASM(N, REGS, DA, DB, P, ...)                                                                    \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " P ", 0;\n"                                           \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32.f16.f16 {" REGS "}, " DA ", " DB            \
                 ", p, 1, 1, 0, 0;\n}\n"                                                                   \
                 : __VA_ARGS__                                                                             \
                 : "l"(da), "l"(db), "r"(1))
#else
#define WGS_ASM(N, REGS, DA, DB, P, ...) ((void)d, (void)da, (void)db)
#endif
#define WGS_DEF(N, REGS, DA, DB, P, ...)                                                                    \
    template <> __device__ __forceinline__ void wgs_mma<N>(float *d, uint64_t da, uint64_t db)              \
    {                                                                                                       \
        WGS_ASM(N, REGS, DA, DB, P, __VA_ARGS__);                                                           \
    }

template <int NT> __device__ __forceinline__ void wgs_mma(float *d, uint64_t da, uint64_t db);
WGS_DEF(32, WGS_R0, "%16", "%17", "%18", WGS_D16(0))
WGS_DEF(64, WGS_R0 ", " WGS_R16, "%32", "%33", "%34", WGS_D16(0), WGS_D16(16))
WGS_DEF(96, WGS_R0 ", " WGS_R16 ", " WGS_R32, "%48", "%49", "%50", WGS_D16(0), WGS_D16(16), WGS_D16(32))
WGS_DEF(128, WGS_R0 ", " WGS_R16 ", " WGS_R32 ", " WGS_R48, "%64", "%65", "%66", WGS_D16(0), WGS_D16(16),
        WGS_D16(32), WGS_D16(48))

/* a K-major operand with 128-byte swizzle at shared address a (rows of 128 bytes, 8-row groups 1024 apart) */
__device__ __forceinline__ uint64_t wg_sw128(uint32_t a)
{
    return (uint64_t)((a & 0x3FFFF) >> 4) | (1ull << 16) | ((uint64_t)(1024 >> 4) << 32) | (1ull << 62);
}

/* ---- the GEMM with dequantizing warpgroups (SS: both operands from shared memory) ------------- */
/*
 * Block: warpgroup 0 issues the products, warpgroups 1-2 decode the weights. Per unit (256 of K)
 * one tensor copy of the 128 rows' Q4_K bytes into a ring of WR slots; per half unit (128 of K)
 * the decoding threads (one per row and 64-element sub-block pair) write the F16 weights into one
 * of two A tiles (K-major, 128-byte swizzle), and two tensor copies bring the token tile's F16
 * activations straight from the step's rows (128-byte swizzle; tokens past n_tok are zeros) into
 * a ring of WB slots. The product warpgroup runs 8 k-steps x 2 row halves of m64nNTk16 per half
 * unit with one commit, and releases the previous half's tiles once they are read. No register
 * operands: the products of one half run while the next is decoded.
 */
template <int NT>
struct wgs {
    enum { BM = 128, NTH = 384, NTT = NT / 8, RB = BM * WG_UBP, AH = BM * 128 * 2, BH = NT * 256, WR = 3,
           WB = NT <= 64 ? 4 : 3, RST = NT + 1 };
    static constexpr size_t smem()
    {
        return 1024 + (size_t)WR * RB + 2 * (size_t)AH + (size_t)WB * BH + 8 * (WR + 4 + WB);
    }
};

template <int NT>
__global__ void __launch_bounds__(384, 1)
k_wgs(int n_items, int n_out, int n_tok, float *__restrict__ y, int kun, int ks, const __grid_constant__ CUtensorMap tmw,
      const __grid_constant__ CUtensorMap tmx)
{
    typedef wgs<NT> K;
    enum { BM = K::BM, NTT = K::NTT, RB = K::RB, AH = K::AH, BH = K::BH, WR = K::WR, WB = K::WB, RST = K::RST };
    static_assert(BM * RST * 4 <= WR * RB + 2 * AH, "the reduction fits the weight rings");
    extern __shared__ __align__(16) uint8_t smraw[];
    uint8_t *sm = smraw + ((1024u - (smem_u32(smraw) & 1023u)) & 1023u);
    uint8_t *raw = sm, *at = sm + WR * RB, *bt = at + 2 * AH;
    uint64_t *raw_full = reinterpret_cast<uint64_t *>(bt + WB * BH);
    uint64_t *a_full = raw_full + WR, *a_empty = a_full + 2, *b_full = a_empty + 2;
    float *red = reinterpret_cast<float *>(sm);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2;
    const int nu = n_items / 8;
    const ksplit_part kp = ksplit_of(ks, BM, nu, kun);
    const int rank = kp.rank, r0 = kp.r0, u0 = kp.u0, nst = kp.nst, nh = 2 * kp.nst;
    const int tt = (int)blockIdx.y, tok_here = min(NT, n_tok - tt * NT);

    if (tid == 0) {
        for (int i = 0; i < WR; i++)
            mb_init(&raw_full[i], 1);
        for (int i = 0; i < 2; i++) {
            mb_init(&a_full[i], 8);
            mb_init(&a_empty[i], 1);
        }
        for (int i = 0; i < WB; i++)
            mb_init(&b_full[i], 1);
#if WG_ON
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
    }
    __syncthreads();
    /* the half unit q's activations: two 64-wide boxes of the token tile */
    auto acts = [&](int q) {
        uint8_t *dst = bt + (q % WB) * BH;
        const int k0 = (u0 + q / 2) * WG_UK + (q & 1) * 128;
        mb_arrive_tx(&b_full[q % WB], BH);
        tma_2d(dst, &tmx, k0, tt * NT, &b_full[q % WB]);
        tma_2d(dst + NT * 128, &tmx, k0 + 64, tt * NT, &b_full[q % WB]);
    };
    auto weights = [&](int i) {
        mb_arrive_tx(&raw_full[i % WR], RB);
        tma_2d(raw + (i % WR) * RB, &tmw, (u0 + i) * (WG_UB / 2), r0, &raw_full[i % WR]);
    };
    if (tid == 0)
        for (int i = 0; i < WR && i < nst; i++)   /* weights are never written: before the wait */
            weights(i);
    pdl_enter();
    if (tid == 0)
        for (int q = 0; q < WB && q < nh; q++)
            acts(q);

    float acc[2][NTT][4];
    frag_zero(acc[0]);
    frag_zero(acc[1]);

    if (warp < 4) {
        /* products: per half unit 8 k-steps (two 64-wide atoms of 4) x two 64-row halves */
        for (int q = 0; q < nh; q++) {
            mb_wait(&a_full[q & 1], (q >> 1) & 1);
            mb_wait(&b_full[q % WB], (q / WB) & 1);
            const uint32_t ab = smem_u32(at + (q & 1) * AH), bb = smem_u32(bt + (q % WB) * BH);
            wg_fence();
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const uint32_t ao = (k >> 2) * (BM * 128) + (k & 3) * 32, bo = (k >> 2) * (NT * 128) + (k & 3) * 32;
#pragma unroll
                for (int m = 0; m < 2; m++)
                    wgs_mma<NT>(&acc[m][0][0], wg_sw128(ab + ao + m * 64 * 128), wg_sw128(bb + bo));
            }
            wg_commit();
            wg_wait<1>();   /* half q - 1 read: its A tile and activation slot are free */
            if (q > 0 && tid == 0) {
                mb_arrive(&a_empty[(q - 1) & 1]);
                if (q - 1 + WB < nh)
                    acts(q - 1 + WB);
            }
        }
        wg_wait<0>();
    } else {
        /* decoding: thread = (row, sub-block pair of the half unit): 64 weights, one 128-byte A row */
        const int dt = tid - 128, row = dt >> 1, pr = dt & 1;
        for (int q = 0; q < nh; q++) {
            const int i = q >> 1, h = q & 1;
            if (!h)
                mb_wait(&raw_full[i % WR], (i / WR) & 1);
            if (q >= 2)
                mb_wait(&a_empty[q & 1], ((q >> 1) - 1) & 1);
            const uint8_t *rr = raw + (i % WR) * RB + row * WG_UBP;
            const int p = 2 * h + pr;   /* sub-blocks 2p, 2p + 1 of the unit */
            const uint4 hd = *reinterpret_cast<const uint4 *>(rr);
            uint32_t sc, mn;
            q4k_half_scales(hd, p >> 1, &sc, &mn);
            const float2 dd = __half22float2(u2h(hd.x));
            const int k = 2 * (p & 1);
            const __half2 a0 = __float2half2_rn(dd.x * (float)((sc >> (8 * k)) & 0xFF));
            const __half2 b0 = __float2half2_rn(-dd.y * (float)((mn >> (8 * k)) & 0xFF));
            const __half2 a1 = __float2half2_rn(dd.x * (float)((sc >> (8 * k + 8)) & 0xFF));
            const __half2 b1 = __float2half2_rn(-dd.y * (float)((mn >> (8 * k + 8)) & 0xFF));
            const uint4 *qs = reinterpret_cast<const uint4 *>(rr + 16 + 32 * p);
            uint8_t *dst = at + (q & 1) * AH + pr * (BM * 128) + row * 128;
#pragma unroll
            for (int c = 0; c < 2; c++) {   /* 16 bytes of nibbles: elements 16c .. 16c + 15 of both sub-blocks */
                const uint4 v = qs[c];
                const uint32_t w[4] = {v.x, v.y, v.z, v.w};
                uint32_t lo[8], hi[8];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const uint32_t x01 = __byte_perm(w[j], 0, 0x4140), x23 = __byte_perm(w[j], 0, 0x4342);
                    lo[2 * j] = nib2(x01, a0, b0);
                    lo[2 * j + 1] = nib2(x23, a0, b0);
                    hi[2 * j] = nib2(x01 >> 4, a1, b1);
                    hi[2 * j + 1] = nib2(x23 >> 4, a1, b1);
                }
                /* chunk (8 elements) 2c, 2c + 1 of sub-block 2p at 0..3, of 2p + 1 at 4..7; swizzled */
                const int sw = row & 7;
                *reinterpret_cast<uint4 *>(dst + (((2 * c) ^ sw) << 4)) = make_uint4(lo[0], lo[1], lo[2], lo[3]);
                *reinterpret_cast<uint4 *>(dst + (((2 * c + 1) ^ sw) << 4)) = make_uint4(lo[4], lo[5], lo[6], lo[7]);
                *reinterpret_cast<uint4 *>(dst + (((4 + 2 * c) ^ sw) << 4)) = make_uint4(hi[0], hi[1], hi[2], hi[3]);
                *reinterpret_cast<uint4 *>(dst + (((5 + 2 * c) ^ sw) << 4)) = make_uint4(hi[4], hi[5], hi[6], hi[7]);
            }
#if WG_ON
            asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
            __syncwarp();
            if (lane == 0)
                mb_arrive(&a_full[q & 1]);
            if (h) {   /* unit i decoded by every thread: its slot takes unit i + WR */
                asm volatile("bar.sync 1, 256;\n" ::: "memory");
                if (dt == 0 && i + WR < nst)
                    weights(i + WR);
            }
        }
    }

    __syncthreads();   /* every tile consumed: the rings are free for the partial sums */
    if (warp < 4) {
#pragma unroll
        for (int m = 0; m < 2; m++)
            splitk_put<NTT, RST>(red, acc[m], m * 64 + warp * 16, g, lane & 3);
    }
    splitk_reduce<BM, NT, RST>(red, tid, K::NTH, ks, rank, tok_here, r0, n_out, y + (size_t)tt * NT * n_out);
}

/* ---- launch ------------------------------------------------------------------------------------ */

/* token tiles of at most 128 with the least padding: 32, 64, 96 or 128 tokens a tile */
static int wg_tile(int n_tok)
{
    const int ntt = (n_tok + 127) / 128, per = (n_tok + ntt - 1) / ntt;
    return (per + 31) / 32 * 32;
}

template <int NT>
static int wgs_launch(cudaStream_t s, const void *w, size_t rb, int64_t n_in, int64_t n_out, const void *x16,
                      int n_tok, float *y)
{
    typedef wgs<NT> K;
    auto kern = k_wgs<NT>;
    static int attr = 0;
    if (mmq_smem_limit(kern, K::smem(), &attr) < 0 || K::smem() > (size_t)attr)
        return 0;
    CUtensorMap tmw, tmx;
    memset(&tmw, 0, sizeof tmw);
    memset(&tmx, 0, sizeof tmx);
    if (!mmq_tmap_2d(&tmw, CU_TENSOR_MAP_DATA_TYPE_UINT16, w, rb / 2, (uint64_t)n_out, rb, WG_UBP / 2, K::BM,
                     CU_TENSOR_MAP_SWIZZLE_NONE) ||
        !mmq_tmap_2d(&tmx, CU_TENSOR_MAP_DATA_TYPE_UINT16, x16, (uint64_t)n_in, (uint64_t)n_tok, (uint64_t)n_in * 2, 64,
                     NT, CU_TENSOR_MAP_SWIZZLE_128B))
        return 0;
    const int ntt = (n_tok + NT - 1) / NT, nu = (int)(n_in / WG_UK);
    const int tiles = (int)((n_out + K::BM - 1) / K::BM);
    int ks = 1;
    const int kun = split_k(nu, tiles * ntt, v8_sms, 8, &ks);   /* toward a block per SM */
    cudaLaunchConfig_t cfg;
    cudaLaunchAttribute at[2];
    cluster_cfg(&cfg, at, tiles, ks, K::NTH, K::smem(), s);
    cfg.gridDim.y = (unsigned)ntt;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kern, (int)(n_in / 32), (int)n_out, n_tok, y, kun, ks, tmw, tmx);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return 1;
}

static int wgs_tok(cudaStream_t s, const void *w, size_t rb, int64_t n_in, int64_t n_out, const void *x16, int n_tok,
                   float *y)
{
    switch (wg_tile(n_tok)) {
    case 32: return wgs_launch<32>(s, w, rb, n_in, n_out, x16, n_tok, y);
    case 64: return wgs_launch<64>(s, w, rb, n_in, n_out, x16, n_tok, y);
    case 96: return wgs_launch<96>(s, w, rb, n_in, n_out, x16, n_tok, y);
    default: return wgs_launch<128>(s, w, rb, n_in, n_out, x16, n_tok, y);
    }
}


static int wg_min_tok = -1;

extern "C" void cuk_mmqwg_set(int min_tok)
{
    wg_min_tok = min_tok;
}

extern "C" int cuk_mmqwg_min_tok(void)
{
    if (wg_min_tok < 0)
        wg_min_tok = mmq_env_from("AARMD_CUDA_WG_FROM", CUK_WG_MAX_TOK + 1);
    return wg_min_tok;
}

extern "C" int cuk_mmqwg_q4k(cudaStream_t s, uint32_t type, const void *w, int64_t n_in, int64_t n_out,
                             const void *x16, int n_tok, float *y)
{
    if (type != AARMD_TYPE_Q4_K || n_tok < 1 || n_tok > CUK_WG_MAX_TOK || n_out < 1 || n_in % WG_UK ||
        ((uintptr_t)w & 15) || ((uintptr_t)x16 & 15))
        return 0;
    v8_device();
    if (v8_cc != 9)   /* the sm_90a image runs on sm_90 devices only */
        return 0;
    return wgs_tok(s, w, cuk_row_bytes(type, n_in), n_in, n_out, x16, n_tok, y);
}
