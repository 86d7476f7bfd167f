/*
 * metal_args.h — argument structs of the Metal kernels (shaders/metal (.metal files)),
 * shared byte for byte by the host (plugins/metal/backend_metal.m, C) and the
 * shaders (Metal Shading Language, or C++ in the Linux harness). Only 32-bit
 * fields, so the layout is the same in every language. Not for CUDA.
 *
 * Each struct travels by setBytes:length:atIndex: into buffer index 0.
 */
#ifndef AARMD_METAL_ARGS_H
#define AARMD_METAL_ARGS_H

#if defined(__METAL_VERSION__)
typedef uint aarmd_u32;
typedef int aarmd_i32;
#else
#include <stdint.h>
typedef uint32_t aarmd_u32;
typedef int32_t aarmd_i32;
#endif

/* Weight type ids as in GGUF (enum aarmd_type); the kernels are named for them. */
#define AARMD_MTL_F32 0
#define AARMD_MTL_F16 1
#define AARMD_MTL_Q4_0 2
#define AARMD_MTL_Q4_1 3
#define AARMD_MTL_Q5_0 6
#define AARMD_MTL_Q5_1 7
#define AARMD_MTL_Q8_0 8
#define AARMD_MTL_Q4_K 12
#define AARMD_MTL_Q5_K 13
#define AARMD_MTL_Q6_K 14
#define AARMD_MTL_BF16 30

/* Simdgroups (rows) per threadgroup of the matvec kernels; 32 lanes each. */
#define AARMD_MTL_MV_NSG 4
/* Threads per threadgroup of the row kernels (norms, softmax, attention). */
#define AARMD_MTL_ROW_THREADS 256
/* Largest head_dim the attention kernel takes (8 values per lane). */
#define AARMD_MTL_MAX_HEAD_DIM 256

/*
 * y[t*y_stride + r] = sum_c W[r, c] * x[t*x_stride + c], r < n_out, t < n_tok.
 * W rows are row_bytes apart; a row is n_in/8 chunks of 8 elements; a block is
 * blk_bytes and holds blk_chunks chunks (F32/F16/BF16: a "block" of 8 elements).
 * n_in must be a multiple of 8 and of the block size.
 * Grid: (ceil(n_out / AARMD_MTL_MV_NSG), n_tok), threadgroups of 32*AARMD_MTL_MV_NSG.
 */
struct aarmd_mtl_mv_args {
    aarmd_u32 n_in, n_out, n_tok;
    aarmd_u32 row_bytes, blk_bytes, blk_chunks;
    aarmd_u32 x_stride, y_stride;
};

/*
 * The same product as a tiled matrix-matrix multiply (prefill): each
 * threadgroup of 32*AARMD_MTL_MM_NSG threads computes a tile of 32 weight rows
 * x 32 tokens, dequantizing the weight tile once into threadgroup memory and
 * multiplying with 8x8 simdgroup matrices. Same aarmd_mtl_mv_args; n_in must
 * be a multiple of 32. Grid: (ceil(n_out / 32), ceil(n_tok / 32)).
 */
#define AARMD_MTL_MM_NSG 4
#define AARMD_MTL_MM_TILE 32
/* Tokens from which the host uses the tiled kernel instead of the matvec. */
#define AARMD_MTL_MM_MIN_TOK 8

/* out[t*n + i] = W[tok[t], i] * scale. Grid (n_tok), threadgroups of 256. */
struct aarmd_mtl_get_rows_args {
    aarmd_u32 n, n_tok, row_bytes, blk_bytes, blk_chunks;
    float scale;
};

/*
 * Norm of each of `rows` rows of n floats (row r at x + r*stride, written to
 * out + r*stride; out may alias x): kind 0 RMS, 1 layer norm; times w[i] when
 * has_w, plus b[i] when has_b. Grid (rows), threadgroups of AARMD_MTL_ROW_THREADS.
 */
struct aarmd_mtl_norm_args {
    aarmd_u32 n, rows, stride, kind, has_w, has_b;
    float eps;
};

/*
 * Rotary embedding in place: token t's heads h < n_heads start at
 * x + t*stride + h*head_dim; pair i < n_rot/2 rotates by cs[t*n_rot + 2i] (cos),
 * cs[t*n_rot + 2i + 1] (sin); kind 1 normal (2i, 2i+1), 2 neox (i, i + n_rot/2).
 * Grid: (ceil(n_rot/2 / 32), n_heads, n_tok), threadgroups of 32.
 */
struct aarmd_mtl_rope_args {
    aarmd_u32 n_heads, head_dim, n_rot, kind, n_tok, stride;
};

/* In-place softmax of `rows` rows of n floats, stride apart. Grid (rows), 256 threads. */
struct aarmd_mtl_softmax_args {
    aarmd_u32 n, rows, stride;
};

/*
 * Elementwise on n_tok rows of n: op 0: g = silu(g) * u; 1: g = gelu(g) * u;
 * 2: g = gelu(g); 3: g += u (u_stride 0 broadcasts one row: bias);
 * 4: g = cap * tanh(g * scale / cap) (cap > 0) else g *= scale.
 * Rows at g + t*g_stride, u + t*u_stride. Grid (ceil(n/256), n_tok), 256 threads.
 */
#define AARMD_MTL_OP_SILU_GATED 0
#define AARMD_MTL_OP_GELU_GATED 1
#define AARMD_MTL_OP_GELU 2
#define AARMD_MTL_OP_ADD 3
#define AARMD_MTL_OP_SCALE_CAP 4
struct aarmd_mtl_eltwise_args {
    aarmd_u32 n, n_tok, g_stride, u_stride, op;
    float scale, cap;
};

/*
 * Paged KV cache (ABI 1.1). Each layer's K and V caches are pools of blocks of
 * block_tokens rows of kv_dim F16 values ([block][row][kv_dim], one buffer per
 * layer and per K/V). A step's sequences are described by one flat block
 * table (uint block ids) and one aarmd_mtl_kv_tok per token: position pos of
 * that token's sequence lives in block table[table_off + pos / block_tokens],
 * row pos % block_tokens. Every sequence of a step (or of a chunk of it) goes
 * through one dispatch of each kernel below.
 */
struct aarmd_mtl_kv_tok {
    aarmd_u32 pos;        /* the token's position in its sequence */
    aarmd_u32 table_off;  /* index in the block table of its sequence's first block */
};

/*
 * Stores n_tok K and V rows (kv_dim floats at k + t*src_stride, v + t*src_stride)
 * as F16 at position tok[t].pos of token t's sequence (through the block table).
 * Grid (ceil(kv_dim/256), n_tok), 256 threads.
 * Buffers: 0 args, 1 k, 2 v, 3 K cache, 4 V cache, 5 tok, 6 table.
 */
struct aarmd_mtl_kv_store_args {
    aarmd_u32 kv_dim, n_tok, src_stride, block_tokens;
};

/*
 * Attention of n_tok query tokens (token t at position pos = tok[t].pos of its
 * sequence, its head h at q + t*q_stride + h*head_dim) over that sequence's
 * F16 K/V rows (kv_dim = n_head_kv*head_dim) found through the block table:
 * keys j in [j0, pos], j0 = max(0, pos + 1 - window) when window > 0;
 * s = q·k * scale, s = cap*tanh(s/cap) when cap > 0; out row t, head h at
 * out + t*out_stride + h*head_dim. Head h reads kv head h / (n_head / n_head_kv).
 * Grid: (n_head, n_tok), threadgroups of AARMD_MTL_ROW_THREADS (8 simdgroups).
 * Buffers: 0 args, 1 q, 2 K cache, 3 V cache, 4 out, 5 tok, 6 table.
 */
struct aarmd_mtl_attn_args {
    aarmd_u32 head_dim, n_head, n_head_kv, n_tok, q_stride, out_stride, window, block_tokens;
    float scale, cap;
};

#endif
