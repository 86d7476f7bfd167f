/*
 * check_shim.cpp — the CPU harness itself (tests/metal/metal_shim.h): fibers,
 * threadgroup memory and barriers, simdgroup functions with 32-wide and
 * partial simdgroups, and the errors it reports for kernels Metal would
 * hang or misrun on (divergent barriers and simdgroup operations).
 */
#include <criterion/criterion.h>

#include "metal_common.h"

/* Each thread writes its id, the threadgroup reverses the array through a barrier. */
kernel void shim_reverse(device uint *out AARMD_BUFFER(0), uint3 tg AARMD_TG_POS, uint tid AARMD_TID_IN_TG,
                         uint3 ntg AARMD_TG_SIZE)
{
    threadgroup uint buf[1024];
    buf[tid] = tid * 10 + tg.x;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[tg.x * ntg.x + tid] = buf[ntg.x - 1 - tid];
}

kernel void shim_simd(device float *out AARMD_BUFFER(0), uint tid AARMD_TID_IN_TG, uint sg AARMD_SIMD_GROUP,
                      uint lane AARMD_SIMD_LANE, uint nsg AARMD_SIMDS_PER_TG)
{
    float v = float(tid + 1);
    out[5 * tid + 0] = simd_sum(v);
    out[5 * tid + 1] = simd_max(v);
    out[5 * tid + 2] = simd_shuffle_xor(v, 1);
    out[5 * tid + 3] = simd_broadcast(v, 3);
    out[5 * tid + 4] = float(sg * 1000 + lane + 100000 * nsg);
}

kernel void shim_bad_barrier(device uint *out AARMD_BUFFER(0), uint tid AARMD_TID_IN_TG)
{
    if (tid == 3)
        return;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[tid] = 1;
}

kernel void shim_bad_simd(device float *out AARMD_BUFFER(0), uint lane AARMD_SIMD_LANE)
{
    if (lane < 16)
        out[lane] = simd_sum(1.0f);
}

kernel void shim_grid(device uint *out AARMD_BUFFER(0), uint3 gp AARMD_TPOS_IN_GRID, uint3 ng AARMD_TGS_IN_GRID,
                      uint3 lp AARMD_TPOS_IN_TG)
{
    uint w = ng.x * 4;
    out[(gp.z * ng.y * 2 + gp.y) * w + gp.x] = lp.x + 10 * lp.y + 100 * lp.z;
}

Test(metal_shim, barrier_shares_threadgroup_memory)
{
    const uint n = 100, groups = 3;
    std::vector<uint> out(n * groups, 0);
    cr_assert_eq(metal_sim::dispatch({groups, 1, 1}, {n, 1, 1}, [&] { shim_reverse(out.data()); }), 0, "%s",
                 metal_sim::last_error());
    for (uint g = 0; g < groups; g++)
        for (uint i = 0; i < n; i++)
            cr_assert_eq(out[g * n + i], (n - 1 - i) * 10 + g, "group %u thread %u", g, i);
}

/* 72 threads: simdgroups of 32, 32 and a partial one of 8. */
Test(metal_shim, simdgroup_functions)
{
    const uint n = 72;
    std::vector<float> out(5 * n, -1.0f);
    cr_assert_eq(metal_sim::dispatch({1, 1, 1}, {n, 1, 1}, [&] { shim_simd(out.data()); }), 0, "%s",
                 metal_sim::last_error());
    for (uint t = 0; t < n; t++) {
        uint sg = t / 32, lo = sg * 32, hi = lo + 32 < n ? lo + 32 : n;
        float sum = 0;
        for (uint i = lo; i < hi; i++)
            sum += (float)(i + 1);
        cr_assert_float_eq(out[5 * t + 0], sum, 0, "simd_sum at %u", t);
        cr_assert_float_eq(out[5 * t + 1], (float)hi, 0, "simd_max at %u", t);
        cr_assert_float_eq(out[5 * t + 2], (float)((t ^ 1) + 1), 0, "simd_shuffle_xor at %u", t);
        cr_assert_float_eq(out[5 * t + 3], (float)(lo + 3 + 1), 0, "simd_broadcast at %u", t);
        cr_assert_float_eq(out[5 * t + 4], (float)(sg * 1000 + t % 32 + 100000 * 3), 0, "ids at %u", t);
    }
}

Test(metal_shim, positions_in_3d_grid)
{
    std::vector<uint> out(4 * 3 * 2 * 2 * 2, 9999);
    cr_assert_eq(metal_sim::dispatch({2, 3, 2}, {2, 2, 1}, [&] { shim_grid(out.data()); }), 0, "%s",
                 metal_sim::last_error());
    for (uint z = 0; z < 2; z++)
        for (uint y = 0; y < 6; y++)
            for (uint x = 0; x < 4; x++)
                cr_assert_eq(out[(z * 6 + y) * 8 + x], x % 2 + 10 * (y % 2), "(%u,%u,%u)", x, y, z);
}

Test(metal_shim, divergent_barrier_is_an_error)
{
    std::vector<uint> out(64, 0);
    cr_assert_eq(metal_sim::dispatch({1, 1, 1}, {64, 1, 1}, [&] { shim_bad_barrier(out.data()); }), -1);
    cr_assert(strstr(metal_sim::last_error(), "barrier") != nullptr, "message: %s", metal_sim::last_error());
}

Test(metal_shim, divergent_simdgroup_op_is_an_error)
{
    std::vector<float> out(32, 0);
    cr_assert_eq(metal_sim::dispatch({1, 1, 1}, {32, 1, 1}, [&] { shim_bad_simd(out.data()); }), -1);
    cr_assert(strstr(metal_sim::last_error(), "simdgroup") != nullptr, "message: %s", metal_sim::last_error());
}

Test(metal_shim, bad_threadgroup_size_is_an_error)
{
    std::vector<uint> out(2048, 0);
    cr_assert_eq(metal_sim::dispatch({1, 1, 1}, {1025, 1, 1}, [&] { shim_reverse(out.data()); }), -1);
    cr_assert_eq(metal_sim::dispatch({1, 1, 1}, {0, 1, 1}, [&] { shim_reverse(out.data()); }), -1);
    cr_assert(strstr(metal_sim::last_error(), "1..1024") != nullptr, "message: %s", metal_sim::last_error());
}
