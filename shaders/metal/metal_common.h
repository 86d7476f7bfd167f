/*
 * metal_common.h — the prelude of every shaders/metal (.metal files) file: Metal's
 * standard library and the parameter-attribute macros on Apple's compiler,
 * the C++ CPU harness (tests/metal/metal_shim.h) everywhere else.
 *
 * Kernel signature convention (so one source compiles both ways): buffers
 * first, each `T name AARMD_BUFFER(i)`; then position parameters, each
 * `type name AARMD_TG_POS` (or another AARMD_* position macro below). On
 * Metal the macros are the [[...]] attributes; in the harness they become
 * default arguments read from the running fiber. Threadgroup arrays are
 * declared at kernel scope (`threadgroup float a[N];`); a helper takes them
 * as `AARMD_TG float *a` (the harness cannot spell `threadgroup` there).
 */
#ifndef AARMD_METAL_COMMON_H
#define AARMD_METAL_COMMON_H

#if defined(__METAL_VERSION__)
#include <metal_stdlib>
using namespace metal;
#define AARMD_BUFFER(n) [[buffer(n)]]
#define AARMD_TG_POS [[threadgroup_position_in_grid]]
#define AARMD_TGS_IN_GRID [[threadgroups_per_grid]]
#define AARMD_TG_SIZE [[threads_per_threadgroup]]
#define AARMD_TID_IN_TG [[thread_index_in_threadgroup]]
#define AARMD_TPOS_IN_TG [[thread_position_in_threadgroup]]
#define AARMD_TPOS_IN_GRID [[thread_position_in_grid]]
#define AARMD_SIMD_LANE [[thread_index_in_simdgroup]]
#define AARMD_SIMD_GROUP [[simdgroup_index_in_threadgroup]]
#define AARMD_SIMDS_PER_TG [[simdgroups_per_threadgroup]]
#define AARMD_TG threadgroup   /* address space of a threadgroup pointer parameter */
#else
#include "metal_shim.h"
#endif

#include "metal_args.h"

#endif
