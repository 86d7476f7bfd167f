/*
 * metal_shim.h — runs Metal kernels (shaders/metal (.metal files)) as C++ on the CPU
 * for the Linux tests. Each threadgroup's threads are cooperative fibers
 * (ucontext) that switch at threadgroup barriers and simdgroup operations.
 * It covers only the subset of the Metal Shading Language that docs/METAL.md
 * lists; it is not a Metal implementation and says nothing about speed.
 *
 * Include it (through a .metal file, which includes it when __METAL_VERSION__
 * is undefined) AFTER every system and test header: it defines the address
 * space words (device, constant, thread, threadgroup) and `kernel` as macros.
 *
 * Usage:
 *     metal_sim::dispatch({gx, gy, gz}, {tx, ty, tz}, [&] { my_kernel(args, bufs...); });
 * runs gx*gy*gz threadgroups of tx*ty*tz threads (simdgroups of 32 lanes);
 * the kernel's position parameters take their values from the running fiber
 * through default arguments (AARMD_TG_POS and friends, see below). Returns
 * 0, or -1 with metal_sim::last_error() saying what went wrong (divergent
 * barrier or simdgroup operation, deadlock, too many threads).
 */
#ifndef AARMD_METAL_SHIM_H
#define AARMD_METAL_SHIM_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <setjmp.h>
#include <string.h>
#if defined(__APPLE__) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 600   /* macOS hides the (deprecated) ucontext calls otherwise */
#endif
#include <ucontext.h>

#include <functional>
#include <string>
#include <vector>

/* ---- scalar and vector types ------------------------------------------- */
typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned int uint;
typedef unsigned long ulong;
typedef _Float16 half;

template <class T> struct metal_vec2 {
    T x, y;
};
template <class T> struct metal_vec3 {
    T x, y, z;
};
template <class T> struct metal_vec4 {
    T x, y, z, w;
    metal_vec4 operator+(const metal_vec4 &o) const { return {x + o.x, y + o.y, z + o.z, w + o.w}; }
    metal_vec4 operator-(const metal_vec4 &o) const { return {x - o.x, y - o.y, z - o.z, w - o.w}; }
    metal_vec4 operator*(const metal_vec4 &o) const { return {x * o.x, y * o.y, z * o.z, w * o.w}; }
    metal_vec4 operator*(T s) const { return {x * s, y * s, z * s, w * s}; }
    metal_vec4 &operator+=(const metal_vec4 &o) { return *this = *this + o; }
};
typedef metal_vec2<float> float2;
typedef metal_vec4<float> float4;
typedef metal_vec2<uint> uint2;
typedef metal_vec3<uint> uint3;

namespace metal {
/* the math the kernels use, as Metal's float overloads */
static inline float rsqrt(float x) { return 1.0f / sqrtf(x); }
static inline float dot(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }
template <class T> static inline T max(T a, T b) { return a > b ? a : b; }
template <class T> static inline T min(T a, T b) { return a < b ? a : b; }
template <class To, class From> static inline To as_type(From f)
{
    static_assert(sizeof(To) == sizeof(From), "as_type needs equal sizes");
    To t;
    memcpy(&t, &f, sizeof t);
    return t;
}
enum class mem_flags { mem_none = 0, mem_device = 1, mem_threadgroup = 2 };
} // namespace metal
using namespace metal;

/* ---- the fiber scheduler -------------------------------------------------- */
namespace metal_sim {

enum fiber_state { F_READY, F_WAIT_SIMD, F_WAIT_BAR, F_DONE };

/*
 * A fiber starts once through setcontext (its own stack) and from then on
 * switches with _setjmp/_longjmp, which, unlike swapcontext, make no system
 * call (no signal mask). Build without _FORTIFY_SOURCE: glibc's checked
 * longjmp refuses to jump onto another stack.
 */
struct fiber {
    ucontext_t ctx;
    jmp_buf env;
    int started;
    char *stack;         /* owned by the dispatch, reused by each threadgroup */
    fiber_state state;
    uint tid;            /* index in threadgroup */
    uint3 local;         /* thread position in threadgroup */
    uint simd_ops;       /* simdgroup operations done so far */
    uint bars;           /* barriers passed so far */
};

struct group_state {
    uint3 tg_pos, tg_size, grid_tg;
    std::vector<fiber> fibers;
    /* simdgroup exchange: [simdgroup][parity][lane] of 16 bytes */
    std::vector<unsigned char> xchg;
    jmp_buf sched;
    ucontext_t ctx_template;   /* one getcontext per dispatch, copied into each fiber */
    fiber *cur;
    const std::function<void()> *body;
};

inline group_state *&gs()
{
    static group_state *g = nullptr;
    return g;
}
inline std::string &err_str()
{
    static std::string s;
    return s;
}
inline const char *last_error() { return err_str().c_str(); }

inline uint3 tg_pos() { return gs()->tg_pos; }
inline uint3 tg_size() { return gs()->tg_size; }
inline uint3 grid_tg() { return gs()->grid_tg; }
inline uint tid_in_tg() { return gs()->cur->tid; }
inline uint simd_lane() { return gs()->cur->tid % 32u; }
inline uint simd_group() { return gs()->cur->tid / 32u; }
inline uint n_simdgroups()
{
    uint3 s = gs()->tg_size;
    return (s.x * s.y * s.z + 31u) / 32u;
}
inline uint3 tpos_in_tg() { return gs()->cur->local; }
inline uint3 tpos_in_grid()
{
    group_state *g = gs();
    return {g->tg_pos.x * g->tg_size.x + g->cur->local.x, g->tg_pos.y * g->tg_size.y + g->cur->local.y,
            g->tg_pos.z * g->tg_size.z + g->cur->local.z};
}

inline void yield_to_sched()
{
    group_state *g = gs();
    if (!_setjmp(g->cur->env))
        _longjmp(g->sched, 1);
}

inline void fiber_entry()
{
    group_state *g = gs();
    (*g->body)();
    g->cur->state = F_DONE;
    _longjmp(g->sched, 1);   /* never returns: the stack is reused */
}

/* Simdgroup exchange: deposit v, wait for the simdgroup, return a pointer to the lanes' values. */
template <class T> inline const T *simd_exchange(T v, uint *n_lanes)
{
    static_assert(sizeof(T) <= 16, "simdgroup values up to 16 bytes");
    group_state *g = gs();
    fiber *f = g->cur;
    uint sg = f->tid / 32u, lane = f->tid % 32u, par = f->simd_ops & 1u;
    unsigned char *slot = &g->xchg[((sg * 2u + par) * 32u) * 16u];
    memcpy(slot + lane * 16u, &v, sizeof v);
    f->state = F_WAIT_SIMD;
    yield_to_sched();
    f->simd_ops++;
    uint total = (uint)g->fibers.size();
    uint first = sg * 32u;
    *n_lanes = total - first < 32u ? total - first : 32u;
    static thread_local T vals[32];
    for (uint i = 0; i < *n_lanes; i++)
        memcpy(&vals[i], slot + i * 16u, sizeof(T));
    return vals;
}

inline size_t stack_bytes() { return 128 * 1024; }

/* Runs fiber f until it waits or finishes. Its own frame holds the _setjmp,
 * so the caller's loop variables are not clobbered by the _longjmp back. */
__attribute__((noinline)) inline void resume(group_state &g, fiber *f)
{
    g.cur = f;
    if (!_setjmp(g.sched)) {
        if (!f->started) {
            f->started = 1;
            setcontext(&f->ctx);
        }
        _longjmp(f->env, 1);
    }
}

/* Runs one threadgroup to completion; 0 or -1 with err_str() set. */
inline int run_group(group_state &g)
{
    uint n = g.tg_size.x * g.tg_size.y * g.tg_size.z;
    for (uint i = 0; i < n; i++) {
        fiber &f = g.fibers[i];
        f.state = F_READY;
        f.tid = i;
        f.local = {i % g.tg_size.x, (i / g.tg_size.x) % g.tg_size.y, i / (g.tg_size.x * g.tg_size.y)};
        f.simd_ops = f.bars = 0;
        f.started = 0;
        f.ctx = g.ctx_template;
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = stack_bytes();
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, (void (*)())fiber_entry, 0);
    }
    for (;;) {
        bool ran = false;
        for (uint i = 0; i < n; i++) {
            if (g.fibers[i].state != F_READY)
                continue;
            resume(g, &g.fibers[i]);
            ran = true;
        }
        /* release complete simdgroups */
        uint n_sg = (n + 31u) / 32u, done = 0, at_bar = 0;
        for (uint sg = 0; sg < n_sg; sg++) {
            uint lo = sg * 32u, hi = lo + 32u < n ? lo + 32u : n, waiting = 0, fin = 0;
            for (uint i = lo; i < hi; i++) {
                waiting += g.fibers[i].state == F_WAIT_SIMD;
                fin += g.fibers[i].state == F_DONE;
            }
            if (waiting && waiting != hi - lo) {
                err_str() = "simdgroup operation not reached by every lane of simdgroup " + std::to_string(sg);
                return -1;
            }
            if (waiting) {
                for (uint i = lo; i < hi; i++)
                    g.fibers[i].state = F_READY;
                ran = true;
            }
            done += fin;
        }
        for (uint i = 0; i < n; i++)
            at_bar += g.fibers[i].state == F_WAIT_BAR;
        if (done == n)
            return 0;
        if (at_bar && at_bar + done == n) {
            if (done) {
                err_str() = "threadgroup_barrier not reached by every thread (some returned)";
                return -1;
            }
            for (uint i = 0; i < n; i++)
                g.fibers[i].state = F_READY;
            ran = true;
        }
        if (!ran) {
            err_str() = "deadlock: threads wait at different synchronisation points";
            return -1;
        }
    }
}

/* Runs the whole grid, threadgroups in order. */
inline int dispatch(uint3 grid, uint3 tg, const std::function<void()> &body)
{
    uint n = tg.x * tg.y * tg.z;
    if (n == 0 || n > 1024) {
        err_str() = "threads per threadgroup must be 1..1024";
        return -1;
    }
    group_state g;
    g.tg_size = tg;
    g.grid_tg = grid;
    g.body = &body;
    g.fibers.assign(n, fiber());
    /* stacks persist across dispatches (not zeroed, not returned): a fiber
     * touches a few pages of its stack, and faulting them in again on every
     * dispatch would dominate the run time */
    static char *stacks = nullptr;
    static uint n_stacks = 0;
    if (n > n_stacks) {
        free(stacks);
        stacks = (char *)malloc((size_t)n * stack_bytes());
        n_stacks = stacks ? n : 0;
        if (!stacks) {
            err_str() = "out of memory for fiber stacks";
            return -1;
        }
    }
    for (uint i = 0; i < n; i++)
        g.fibers[i].stack = stacks + (size_t)i * stack_bytes();
    getcontext(&g.ctx_template);
    g.xchg.assign((size_t)((n + 31u) / 32u) * 2u * 32u * 16u, 0);
    group_state *saved = gs();
    gs() = &g;
    int rc = 0;
    for (uint z = 0; z < grid.z && rc == 0; z++)
        for (uint y = 0; y < grid.y && rc == 0; y++)
            for (uint x = 0; x < grid.x && rc == 0; x++) {
                g.tg_pos = {x, y, z};
                rc = run_group(g);
            }
    gs() = saved;
    return rc;
}

} // namespace metal_sim

/* ---- barriers and simdgroup functions ------------------------------------ */
namespace metal {
static inline void threadgroup_barrier(mem_flags)
{
    metal_sim::gs()->cur->state = metal_sim::F_WAIT_BAR;
    metal_sim::yield_to_sched();
    metal_sim::gs()->cur->bars++;
}
static inline void simdgroup_barrier(mem_flags)
{
    uint n;
    (void)metal_sim::simd_exchange<int>(0, &n);
}
template <class T> static inline T simd_sum(T v)
{
    uint n;
    const T *a = metal_sim::simd_exchange(v, &n);
    /* pairwise, as a reduction tree would */
    T buf[32];
    for (uint i = 0; i < n; i++)
        buf[i] = a[i];
    for (uint w = 1; w < n; w *= 2)
        for (uint i = 0; i + w < n; i += 2 * w)
            buf[i] = buf[i] + buf[i + w];
    return buf[0];
}
template <class T> static inline T simd_max(T v)
{
    uint n;
    const T *a = metal_sim::simd_exchange(v, &n);
    T m = a[0];
    for (uint i = 1; i < n; i++)
        m = a[i] > m ? a[i] : m;
    return m;
}
template <class T> static inline T simd_min(T v)
{
    uint n;
    const T *a = metal_sim::simd_exchange(v, &n);
    T m = a[0];
    for (uint i = 1; i < n; i++)
        m = a[i] < m ? a[i] : m;
    return m;
}
template <class T> static inline T simd_shuffle(T v, ushort lane)
{
    uint n;
    const T *a = metal_sim::simd_exchange(v, &n);
    return lane < n ? a[lane] : v;
}
template <class T> static inline T simd_shuffle_xor(T v, ushort mask)
{
    uint n;
    uint me = metal_sim::simd_lane();
    const T *a = metal_sim::simd_exchange(v, &n);
    uint l = me ^ mask;
    return l < n ? a[l] : v;
}
template <class T> static inline T simd_shuffle_down(T v, ushort delta)
{
    uint n;
    uint me = metal_sim::simd_lane();
    const T *a = metal_sim::simd_exchange(v, &n);
    return me + delta < n ? a[me + delta] : v;
}
template <class T> static inline T simd_broadcast(T v, ushort lane) { return simd_shuffle(v, lane); }
template <class T> static inline T simd_broadcast_first(T v) { return simd_shuffle(v, 0); }

/*
 * simdgroup matrices (8x8): every lane holds the whole matrix and computes the
 * whole result (redundant, but the values are the simdgroup's). Only
 * simdgroup_store is a synchronisation point (a lane that skips it is
 * reported like any divergent simdgroup operation); loads and multiplies are
 * lane-local, which keeps the harness fast. Loads and stores take
 * elements_per_row only (no origin, no transpose).
 */
template <class T, int Cols, int Rows = Cols> struct simdgroup_matrix {
    T m[Rows * Cols];
};
typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;

template <class T, int Cols, int Rows = Cols> static inline simdgroup_matrix<T, Cols, Rows> make_filled_simdgroup_matrix(T v)
{
    simdgroup_matrix<T, Cols, Rows> r;
    for (int i = 0; i < Rows * Cols; i++)
        r.m[i] = v;
    return r;
}

template <class T, class S, int C, int R>
static inline void simdgroup_load(simdgroup_matrix<T, C, R> &d, const S *src, ulong elements_per_row = C)
{
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            d.m[r * C + c] = (T)src[(ulong)r * elements_per_row + (ulong)c];
}

template <class T, class S, int C, int R>
static inline void simdgroup_store(const simdgroup_matrix<T, C, R> &a, S *dst, ulong elements_per_row = C)
{
    simdgroup_barrier(mem_flags::mem_none);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            dst[(ulong)r * elements_per_row + (ulong)c] = (S)a.m[r * C + c];
}

/* d = a * b + c */
template <class T, int N>
static inline void simdgroup_multiply_accumulate(simdgroup_matrix<T, N, N> &d, const simdgroup_matrix<T, N, N> &a,
                                                 const simdgroup_matrix<T, N, N> &b, const simdgroup_matrix<T, N, N> &c)
{
    simdgroup_matrix<T, N, N> r;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            T acc = c.m[i * N + j];
            for (int k = 0; k < N; k++)
                acc += a.m[i * N + k] * b.m[k * N + j];
            r.m[i * N + j] = acc;
        }
    d = r;
}
} // namespace metal

/* ---- attribute and address-space mapping ---------------------------------- */
#define kernel
#define device
#define constant const
#define thread
#define threadgroup static
#define AARMD_TG
#define AARMD_BUFFER(n)
#define AARMD_TG_POS = metal_sim::tg_pos()
#define AARMD_TGS_IN_GRID = metal_sim::grid_tg()
#define AARMD_TG_SIZE = metal_sim::tg_size()
#define AARMD_TID_IN_TG = metal_sim::tid_in_tg()
#define AARMD_TPOS_IN_TG = metal_sim::tpos_in_tg()
#define AARMD_TPOS_IN_GRID = metal_sim::tpos_in_grid()
#define AARMD_SIMD_LANE = metal_sim::simd_lane()
#define AARMD_SIMD_GROUP = metal_sim::simd_group()
#define AARMD_SIMDS_PER_TG = metal_sim::n_simdgroups()

#endif
