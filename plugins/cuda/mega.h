/*
 * mega.h — the persistent decode kernel of the CUDA backend (option mega):
 * the whole forward of one token of one sequence (every layer and the logits)
 * as one cooperative launch with grid-wide barriers between its phases
 * (shaders/cuda/mega.cu), and its host side (mega_cuda.c). Llama-family
 * models only (RMS norm, SiLU-gated FFN, no biases); everything else keeps
 * the launch-per-op path of forward_cuda.c. Internal to plugins/cuda.
 */
#ifndef AARMD_CUDA_MEGA_H
#define AARMD_CUDA_MEGA_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "launch.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default of the backend option mega (0: off; docs/cuda-notes.md v8-mega). */
#define CUDA_DEFAULT_MEGA 0
/* Key chunks of the attention phase at most (each chunk one warp's partial softmax). */
#define CUK_MEGA_MAX_CHUNKS 64
/* Barrier counters at most (CUDA_MEGA_SLOTS in mega_cuda.c, env AARMD_MEGA_SLOTS for A/B). */
#define CUK_MEGA_MAX_SLOTS 32
/* Device words of the barrier state (zeroed once; every launch leaves it zeroed). */
#define CUK_MEGA_BAR_WORDS ((CUK_MEGA_MAX_SLOTS + 1) * 32)
/* Threads per block of the persistent kernel (one block per SM). */
#define CUK_MEGA_THREADS 384

/* A weight matrix for the kernel: rows of rb bytes in GGUF type `type`. */
struct cuk_mega_mat {
    const void *w;
    uint32_t type;
    uint32_t rb;
};

/* One layer: norms (F32 [E]), matrices {n_in, n_out} as in cuda_layer, rotary parameters. */
struct cuk_mega_layer {
    const float *attn_norm, *ffn_norm;
    struct cuk_mega_mat q, k, v, o, gate, up, down;
    struct cuk_rope rope;
};

/*
 * Everything one launch needs; device pointers unless said otherwise. The
 * token, its position and its block table are read on the device (tok[0],
 * pos[0], btab + tok_bt[0]), as the step upload leaves them.
 */
struct cuk_mega_args {
    const struct cuk_mega_layer *layers;   /* device [n_layer] */
    int n_layer, E, Q, KV, F, D, n_head, n_kv, n_vocab;
    float eps, attn_scale, embd_scale;
    struct cuk_mega_mat embd, out;
    const float *out_norm;
    const int32_t *tok, *pos, *btab, *tok_bt;
    void *kv_pool;                         /* F16 paged cache (launch.h struct cuk_kv layout) */
    size_t block_halfs, layer_halfs;
    float *x;                              /* [E] residual */
    float *q;                              /* [Q] rotated queries */
    float *h;                              /* [F] gated FFN activations */
    float *partial;                        /* [n_head][CUK_MEGA_MAX_CHUNKS][D + 2] */
    float *att;                            /* [Q] merged attention output */
    unsigned *hcnt;                        /* [n_head] zeroed chunk counters (reset by the kernel) */
    int flags;                             /* A/B switches of the prefetches (mega.cu FLAG_*), 0: all on */
    float *logits;                         /* [n_vocab]; NULL: no logits phase */
    unsigned *bar;                         /* [CUK_MEGA_BAR_WORDS] zeroed barrier state (reset by the kernel) */
    int nslot;                             /* barrier counters, 1..CUK_MEGA_MAX_SLOTS */
    long long *prof;                       /* NULL, or [4 * (5 * n_layer + 2)] clock64 of block 0 (profiling,
                                            * env AARMD_MEGA_PROFILE): [1] start, [4k] arrival at barrier k,
                                            * [4k + 1] its release, [4k + 2] end of the next phase's prologue,
                                            * [4K + 4] the end (K = 5 * n_layer barriers) */
    int max_in;                            /* max(E, Q, F): floats of the shared activation row */
};

/* 1 when the kernel decodes `type` (the Q8-activation types and F32/F16/BF16) with rows of n_in. */
int cuk_mega_type_ok(uint32_t type, int64_t n_in);
/* Dynamic shared memory bytes of a launch for max_in and n_head; blocks per SM the device
 * co-schedules with it (0: cannot; also sets the kernel's shared-memory limit). */
size_t cuk_mega_smem(int max_in, int n_head);
int cuk_mega_occupancy(int max_in, int n_head);
/* Enqueues the decode on s as a cooperative launch of `blocks` blocks. cudaError_t of the launch. */
int cuk_mega_launch(cudaStream_t s, const struct cuk_mega_args *a, int blocks);
/* Times n grid barriers of `blocks` blocks on nslot counters (bar: CUK_MEGA_BAR_WORDS zeroed
 * device words); microseconds per barrier, < 0 on error. */
double cuk_mega_time_barrier(cudaStream_t s, unsigned *bar, int blocks, int n, int nslot);

/* ---- host side (mega_cuda.c) ---- */
struct aarmd_backend_model;
struct cuda_mega;

/*
 * Prepares the persistent kernel for m (device layer table, its buffers,
 * the barrier words). AARMD_EUNSUPPORTED (with the reason in err) when the
 * model or device does not take it: the caller keeps the usual path.
 */
int cuda_mega_new(struct aarmd_backend_model *m, struct cuda_mega **out, char *err, size_t errlen);
void cuda_mega_free(struct cuda_mega *g);   /* accepts NULL */
/*
 * Enqueues the forward of the one token of the step data m->d_tok[0] (its
 * position and block table uploaded as cuda_forward does) on m->stream;
 * logits into m->logits row 0 when want_logits. 0, or -1 when the launch
 * failed (nothing enqueued; the caller runs the usual path).
 */
int cuda_mega_decode(struct aarmd_backend_model *m, struct cuda_mega *g, int want_logits);

#ifdef __cplusplus
}
#endif
#endif
