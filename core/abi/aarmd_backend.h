/*
 * aarmd_backend.h — the one header an aarmd backend plugin includes (ABI v1).
 *
 * A plugin is a shared object exporting
 *
 *     const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host);
 *
 * and optionally
 *
 *     int aarmd_backend_probe(const struct aarmd_host *host, char *err, size_t errlen);
 *
 * The entry returns a table (usually `static const`) that lives as long as the
 * plugin is loaded. The probe returns AARMD_OK when this machine can run the
 * plugin, else an error code and a message ("no CUDA device", ...).
 *
 * Versioning (append-only, SQLite io_methods style):
 *   - abi_major, abi_minor, struct_size come first and never move;
 *   - methods are only appended; a method added in minor N is called only when
 *     the plugin's abi_minor >= N and its struct_size covers the slot;
 *   - a different abi_major is refused by the host;
 *   - a NULL slot of an optional method means "absent"; the host supplies a
 *     default (documented per method). Required methods are marked REQUIRED.
 *
 * Errors are values: every method that can fail returns an `int` status
 * (AARMD_OK or a negative AARMD_E* code) and writes a NUL-terminated message
 * into the caller-owned buffer `err` of `errlen` bytes. A plugin never aborts,
 * exits or prints to stdout; it logs through host->log.
 *
 * Threads: the host calls every method of one context from one thread at a
 * time (the scheduler thread); a plugin may run its own worker threads.
 *
 * System headers only; no other aarmd header is needed.
 */
#ifndef AARMD_BACKEND_H
#define AARMD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AARMD_ABI_MAJOR 1
#define AARMD_ABI_MINOR 2

/* ---- status codes ------------------------------------------------------ */
enum aarmd_status {
    AARMD_OK = 0,
    AARMD_EINVAL = -1,       /* invalid argument or malformed model */
    AARMD_ENOMEM = -2,       /* out of (device or host) memory; retriable */
    AARMD_EDEVICE = -3,      /* device error (driver, lost device, ...) */
    AARMD_EUNSUPPORTED = -4, /* valid but not supported by this backend */
    AARMD_EIO = -5,          /* file or I/O error */
    AARMD_EINTERNAL = -6,    /* bug: a broken invariant inside the plugin */
    AARMD_ECANCELLED = -7,   /* operation interrupted on request */
};

/* ---- ggml tensor types (ids as in GGUF files) ---------------------------- */
enum aarmd_type {
    AARMD_TYPE_F32 = 0,
    AARMD_TYPE_F16 = 1,
    AARMD_TYPE_Q4_0 = 2,
    AARMD_TYPE_Q4_1 = 3,
    AARMD_TYPE_Q5_0 = 6,
    AARMD_TYPE_Q5_1 = 7,
    AARMD_TYPE_Q8_0 = 8,
    AARMD_TYPE_Q8_1 = 9,
    AARMD_TYPE_Q2_K = 10,
    AARMD_TYPE_Q3_K = 11,
    AARMD_TYPE_Q4_K = 12,
    AARMD_TYPE_Q5_K = 13,
    AARMD_TYPE_Q6_K = 14,
    AARMD_TYPE_Q8_K = 15,
    AARMD_TYPE_IQ2_XXS = 16,
    AARMD_TYPE_IQ2_XS = 17,
    AARMD_TYPE_IQ3_XXS = 18,
    AARMD_TYPE_IQ1_S = 19,
    AARMD_TYPE_IQ4_NL = 20,
    AARMD_TYPE_IQ3_S = 21,
    AARMD_TYPE_IQ2_S = 22,
    AARMD_TYPE_IQ4_XS = 23,
    AARMD_TYPE_I8 = 24,
    AARMD_TYPE_I16 = 25,
    AARMD_TYPE_I32 = 26,
    AARMD_TYPE_I64 = 27,
    AARMD_TYPE_F64 = 28,
    AARMD_TYPE_IQ1_M = 29,
    AARMD_TYPE_BF16 = 30,
    AARMD_TYPE_TQ1_0 = 34,
    AARMD_TYPE_TQ2_0 = 35,
    AARMD_TYPE_MXFP4 = 39,
};

/* ---- the generic decoder description ------------------------------------ */
/*
 * Every architecture the core knows (llama, qwen2, qwen3, phi3, gpt2, gemma3)
 * is described by one aarmd_model_desc. A backend implements this one
 * decoder, driven by the fields below, and never looks at GGUF keys.
 *
 * Per layer, with x the residual stream [n_embd]:
 *
 *   h = norm(x) * attn_norm (+ attn_norm_b)
 *   q,k,v = h @ attn_q/k/v (+ biases)      or split(h @ attn_qkv (+ b)): rows
 *                                           [q: n_head*head_dim | k: n_head_kv*head_dim | v: n_head_kv*head_dim]
 *   q,k = rms_norm(q|k per head) * attn_q_norm|attn_k_norm   (when present)
 *   q,k = rope(q,k, pos)                    (rope_kind != NONE; first n_rot dims of each head)
 *   a = softmax(softcap(q·k * attn_scale) + causal/sliding mask) · v   (GQA: head h uses kv head h / (n_head/n_head_kv))
 *   a = a @ attn_out (+ attn_out_b)
 *   a = norm(a) * attn_post_norm            (when present: gemma3)
 *   x = x + a
 *   h = norm(x) * ffn_norm (+ ffn_norm_b)
 *   f = act(h @ ffn_gate) * (h @ ffn_up)    (gated activations)
 *       or split(h @ ffn_up_gate): rows [gate: n_ff | up: n_ff]   (phi3)
 *       or act(h @ ffn_up + ffn_up_b)       (ACT_GELU, gpt2)
 *   f = f @ ffn_down (+ ffn_down_b)
 *   f = norm(f) * ffn_post_norm             (when present: gemma3)
 *   x = x + f
 *
 * Input:  x = token_embd[tok] * embd_scale (+ pos_embd[pos] for gpt2).
 * Output: logits = (norm(x) * output_norm (+ b)) @ output (or token_embd when
 *         tied), then final_logit_softcap when > 0.
 *
 * Tensor layout is ggml's: ne[0] is the contiguous (input) dimension. A weight
 * of a projection from n_in to n_out has ne = {n_in, n_out}, rows of n_in
 * elements quantized in blocks along ne[0]. token_embd is {n_embd, n_vocab}.
 */

enum aarmd_rope_kind { AARMD_ROPE_NONE = 0, AARMD_ROPE_NORMAL = 1, AARMD_ROPE_NEOX = 2 };
enum aarmd_rope_scaling { AARMD_ROPE_SCALING_NONE = 0, AARMD_ROPE_SCALING_LINEAR = 1,
                          AARMD_ROPE_SCALING_YARN = 2, AARMD_ROPE_SCALING_LLAMA3 = 3 };
enum aarmd_norm_kind { AARMD_NORM_RMS = 0, AARMD_NORM_LAYER = 1 };
enum aarmd_act_kind { AARMD_ACT_SILU_GATED = 0, AARMD_ACT_GELU_GATED = 1, AARMD_ACT_GELU = 2 };

/* Tensor roles. Global roles have layer == -1. Append only. */
enum aarmd_role {
    AARMD_ROLE_TOKEN_EMBD = 0,   /* {n_embd, n_vocab} */
    AARMD_ROLE_POS_EMBD,         /* {n_embd, n_ctx_train} (gpt2) */
    AARMD_ROLE_OUTPUT_NORM,      /* {n_embd} */
    AARMD_ROLE_OUTPUT_NORM_B,    /* {n_embd} */
    AARMD_ROLE_OUTPUT,           /* {n_embd, n_vocab}; absent when tied */
    AARMD_ROLE_ROPE_FREQS,       /* {n_rot/2} frequency factors (llama3), F32 */
    AARMD_ROLE_ATTN_NORM,        /* {n_embd} */
    AARMD_ROLE_ATTN_NORM_B,      /* {n_embd} */
    AARMD_ROLE_ATTN_Q,           /* {n_embd, n_head*head_dim} */
    AARMD_ROLE_ATTN_K,           /* {n_embd, n_head_kv*head_dim} */
    AARMD_ROLE_ATTN_V,           /* {n_embd, n_head_kv*head_dim} */
    AARMD_ROLE_ATTN_QKV,         /* {n_embd, (n_head+2*n_head_kv)*head_dim} */
    AARMD_ROLE_ATTN_Q_B,         /* biases: {n_out} */
    AARMD_ROLE_ATTN_K_B,
    AARMD_ROLE_ATTN_V_B,
    AARMD_ROLE_ATTN_QKV_B,
    AARMD_ROLE_ATTN_Q_NORM,      /* {head_dim} (qwen3, gemma3) */
    AARMD_ROLE_ATTN_K_NORM,      /* {head_dim} */
    AARMD_ROLE_ATTN_OUT,         /* {n_head*head_dim, n_embd} */
    AARMD_ROLE_ATTN_OUT_B,       /* {n_embd} */
    AARMD_ROLE_ATTN_POST_NORM,   /* {n_embd} (gemma3) */
    AARMD_ROLE_FFN_NORM,         /* {n_embd} */
    AARMD_ROLE_FFN_NORM_B,       /* {n_embd} */
    AARMD_ROLE_FFN_GATE,         /* {n_embd, n_ff} */
    AARMD_ROLE_FFN_UP,           /* {n_embd, n_ff} */
    AARMD_ROLE_FFN_UP_GATE,      /* {n_embd, 2*n_ff}: gate rows then up rows (phi3) */
    AARMD_ROLE_FFN_UP_B,         /* {n_ff} */
    AARMD_ROLE_FFN_DOWN,         /* {n_ff, n_embd} */
    AARMD_ROLE_FFN_DOWN_B,       /* {n_embd} */
    AARMD_ROLE_FFN_POST_NORM,    /* {n_embd} (gemma3) */
    AARMD_ROLE_COUNT
};

struct aarmd_tensor {
    const char *name;   /* GGUF tensor name, e.g. "blk.3.attn_q.weight" */
    int32_t role;       /* enum aarmd_role */
    int32_t layer;      /* 0..n_layer-1, or -1 for global tensors */
    uint32_t type;      /* enum aarmd_type */
    uint32_t n_dims;    /* 1..4 */
    int64_t ne[4];      /* elements per dim, ne[0] contiguous; unused dims are 1 */
    const void *data;   /* points into the read-only mmap of the GGUF file */
    uint64_t nbytes;    /* bytes at data */
};

struct aarmd_model_desc {
    uint32_t struct_size;       /* sizeof(struct aarmd_model_desc) of the host */
    const char *arch;           /* "llama", "qwen2", "qwen3", "phi3", "gpt2", "gemma3" */
    const char *name;           /* general.name or the file's base name */

    /* shape */
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim;          /* per-head size of q and k (and v) */
    uint32_t n_ff;
    uint32_t n_vocab;
    uint32_t n_ctx_train;

    /* rotary embedding */
    uint32_t rope_kind;         /* enum aarmd_rope_kind */
    uint32_t n_rot;             /* rotated dims per head (<= head_dim; partial rotary) */
    float rope_freq_base;
    float rope_freq_base_swa;   /* base for sliding-window layers (gemma3); = rope_freq_base otherwise */
    uint32_t rope_scaling;      /* enum aarmd_rope_scaling */
    float rope_scale;           /* linear / yarn factor (>= 1); 1 = none */
    uint32_t rope_orig_ctx;     /* yarn / llama3 original context */
    float yarn_ext_factor, yarn_attn_factor, yarn_beta_fast, yarn_beta_slow;
    float llama3_low_freq_factor, llama3_high_freq_factor;

    /* normalisation and activation */
    uint32_t norm_kind;         /* enum aarmd_norm_kind */
    float norm_eps;
    uint32_t act;               /* enum aarmd_act_kind */

    /* attention */
    float attn_scale;           /* multiplier of q·k; the adapter sets it (1/sqrt(head_dim) unless the model says) */
    float attn_logit_softcap;   /* 0 = none; else s = cap * tanh(s / cap) */
    float final_logit_softcap;  /* 0 = none */
    uint32_t sliding_window;    /* tokens; 0 = none */
    const uint8_t *layer_is_swa;/* n_layer flags: 1 = sliding-window layer; NULL = none */

    /* embeddings */
    uint32_t tied_embeddings;   /* 1: output uses token_embd */
    float embd_scale;           /* multiply embeddings by this (gemma: sqrt(n_embd)); 1 otherwise */

    /* tokens the backend may want (e.g. to warm up); -1 when absent */
    int32_t bos_id, eos_id;

    /* the tensors, each exactly once */
    const struct aarmd_tensor *tensors;
    uint32_t n_tensors;
};

/* ---- host services ------------------------------------------------------ */

enum aarmd_log_level { AARMD_LOG_DEBUG = 0, AARMD_LOG_INFO = 1, AARMD_LOG_WARN = 2, AARMD_LOG_ERROR = 3 };

struct aarmd_opt { const char *key; const char *value; };   /* one --backend-opt k=v */

struct aarmd_host {
    uint32_t abi_major, abi_minor, struct_size;   /* the host's */
    /* Logs one line (no trailing newline needed). Thread-safe. */
    void (*log)(void *user, int level, const char *msg);
    void *log_user;
    /* --backend-opt list, verbatim, in command-line order; valid until the plugin is unloaded. */
    const struct aarmd_opt *opts;
    uint32_t n_opts;
    int32_t device;                                /* --device */
};

/* ---- opaque plugin-owned objects ---------------------------------------- */
struct aarmd_backend_ctx;     /* one device */
struct aarmd_backend_model;   /* weights resident for one model */
struct aarmd_backend_seq;     /* one sequence: its KV cache and position */

struct aarmd_device_info {
    uint32_t struct_size;         /* set by the host; a plugin fills only what fits */
    char name[128];               /* e.g. "NVIDIA H100 80GB HBM3" */
    uint64_t memory_total;        /* bytes */
    uint64_t memory_free;         /* bytes */
    char memory_architecture[16]; /* "vram-only", "unified", "host", "mock" */
    char worker_type[32];         /* "bespoke-cuda", "apple-metal", "cpu", "mock" */
    uint32_t advised_seqs;        /* concurrent sequences this device serves well; 0 = no advice */
};

/*
 * Paged KV cache (ABI 1.1). A paged backend keeps the KV of every sequence of a
 * model in fixed-size blocks of `block_tokens` tokens drawn from one pool:
 *   - seq_new takes no blocks; n_ctx only bounds the sequence's length;
 *   - a step takes blocks as its sequences grow and fails with AARMD_ENOMEM,
 *     advancing no sequence, when the pool has too few free blocks for it;
 *   - seq_free and seq_truncate give blocks back at once;
 *   - seq_fork makes a sequence share another's full blocks (reference counted);
 *     a block held by more than one sequence is never written again.
 * The host admits jobs by free blocks, so a pool that is never over-committed
 * never fails a step. Pool size is a backend option (docs/PLUGINS.md: kv_mb).
 */
struct aarmd_kv_info {
    uint32_t struct_size;     /* set by the host; a plugin fills only what fits */
    uint32_t block_tokens;    /* tokens per block, > 0 */
    uint64_t blocks_total;    /* blocks in the pool */
    uint64_t blocks_free;     /* blocks no sequence holds */
    uint64_t block_bytes;     /* bytes of one block: K and V of every layer */
};

/* Progress of a model load, fraction 0..1. Return non-zero to cancel the load. */
typedef int (*aarmd_progress_fn)(void *user, float fraction);

/*
 * One entry of a step. The backend appends `tokens` to `seq` (positions
 * continue from the sequence's current length) and, when want_logits is
 * non-zero, writes the n_vocab logits of the entry's last token to `logits`.
 * Prefill chunks and single-token decodes of different sequences share one
 * step; a sequence appears at most once per step.
 */
struct aarmd_batch_entry {
    struct aarmd_backend_seq *seq;
    const int32_t *tokens;
    uint32_t n_tokens;      /* >= 1 */
    uint32_t want_logits;
    float *logits;          /* caller-owned, n_vocab floats; used when want_logits */
};

/* ---- the table ---------------------------------------------------------- */
struct aarmd_backend {
    uint32_t abi_major;     /* AARMD_ABI_MAJOR the plugin was built with */
    uint32_t abi_minor;
    uint32_t struct_size;   /* sizeof(struct aarmd_backend) the plugin was built with */
    const char *name;       /* "cpu", "cuda", ... */
    const char *version;    /* plugin version string */

    /* REQUIRED. Create a context on `device`; options in host->opts. On success
     * *out owns everything the plugin allocates until ctx_free. */
    int (*ctx_new)(const struct aarmd_host *host, int32_t device,
                   struct aarmd_backend_ctx **out, char *err, size_t errlen);
    /* REQUIRED. Frees a context and everything in it; accepts NULL. */
    void (*ctx_free)(struct aarmd_backend_ctx *ctx);
    /* Optional (default: name = backend name, memory 0, "host", name, advice 1).
     * Fills `info` up to info->struct_size. */
    int (*device_info)(struct aarmd_backend_ctx *ctx, struct aarmd_device_info *info,
                       char *err, size_t errlen);

    /* REQUIRED. Load weights described by `desc` (tensors point into the mmap,
     * which outlives the model). Calls progress between 0 and 1 when non-NULL. */
    int (*model_load)(struct aarmd_backend_ctx *ctx, const struct aarmd_model_desc *desc,
                      aarmd_progress_fn progress, void *progress_user,
                      struct aarmd_backend_model **out, char *err, size_t errlen);
    /* REQUIRED. Frees a model; accepts NULL. Every sequence of it is freed first. */
    void (*model_free)(struct aarmd_backend_model *model);
    /* Optional (default 0). Bytes of device/host memory the model holds. */
    uint64_t (*model_bytes)(struct aarmd_backend_model *model);

    /* REQUIRED. New empty sequence holding up to n_ctx tokens. */
    int (*seq_new)(struct aarmd_backend_model *model, uint32_t n_ctx,
                   struct aarmd_backend_seq **out, char *err, size_t errlen);
    /* REQUIRED. Frees a sequence and its KV memory; accepts NULL. */
    void (*seq_free)(struct aarmd_backend_seq *seq);
    /* Optional (default: AARMD_EUNSUPPORTED). Keep the first n tokens' KV, drop the rest. */
    int (*seq_truncate)(struct aarmd_backend_seq *seq, uint32_t n, char *err, size_t errlen);

    /* REQUIRED. Decode one batch (see struct aarmd_batch_entry). On error no
     * entry's sequence is advanced, except AARMD_ENOMEM / AARMD_EDEVICE which
     * may leave the step's sequences at any length: the host frees or truncates them. */
    int (*step)(struct aarmd_backend_model *model, const struct aarmd_batch_entry *entries,
                uint32_t n_entries, char *err, size_t errlen);

    /* ---- added in ABI 1.1 ---- */
    /* Optional (default: the backend is not paged; the host admits by --max-jobs
     * alone). Fills `info` up to info->struct_size with the model's block pool. */
    int (*kv_info)(struct aarmd_backend_model *model, struct aarmd_kv_info *info, char *err, size_t errlen);
    /* Optional (default: AARMD_EUNSUPPORTED, no prefix reuse). A new sequence of up
     * to n_ctx tokens whose first n_tokens positions are src's, sharing src's blocks
     * (no copy). n_tokens is a multiple of block_tokens, at most src's length and at
     * most n_ctx. src is not changed, may keep growing, and may be freed before or
     * after the new sequence. */
    int (*seq_fork)(struct aarmd_backend_seq *src, uint32_t n_tokens, uint32_t n_ctx,
                    struct aarmd_backend_seq **out, char *err, size_t errlen);

    /* ---- added in ABI 1.2 ---- */
    /* Optional (default: the host allocates logits buffers with malloc). Host
     * memory of `bytes` bytes the backend can write a step's logits into fastest,
     * e.g. page-locked memory a device copies to directly. The host allocates
     * the logits buffers it passes to step with it, reuses them across steps and
     * jobs, and frees each with logits_free before model_free. NULL when it
     * cannot (the host falls back to malloc). Called from the step thread only. */
    void *(*logits_alloc)(struct aarmd_backend_model *model, size_t bytes);
    /* Optional; required with logits_alloc. Frees what logits_alloc returned. */
    void (*logits_free)(struct aarmd_backend_model *model, void *p);
};

typedef const struct aarmd_backend *(*aarmd_backend_entry_fn)(const struct aarmd_host *host);
typedef int (*aarmd_backend_probe_fn)(const struct aarmd_host *host, char *err, size_t errlen);

#define AARMD_BACKEND_ENTRY_SYMBOL "aarmd_backend_entry"
#define AARMD_BACKEND_PROBE_SYMBOL "aarmd_backend_probe"

#ifdef __cplusplus
}
#endif
#endif /* AARMD_BACKEND_H */
