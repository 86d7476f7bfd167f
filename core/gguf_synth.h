/*
 * gguf_synth.h — synthetic models: a GGUF of any supported architecture with
 * deterministic random weights (N(0, 0.02) matrices and biases, norms
 * 1 + N(0, 0.02)), for tests and benchmarks of the backends. Backs
 * `aarmd-cli gguf-synth`.
 *
 * What is written: general.architecture, general.name ("synthetic ARCH TYPE"),
 * general.file_type (the llama_ftype of TYPE: F32 0, F16 1, Q4_0 2, Q4_1 3,
 * Q8_0 7, Q5_0 8, Q5_1 9, Q4_K 14 (Q4_K_S), Q5_K 16 (Q5_K_S), Q6_K 18, BF16 32),
 * general.alignment 32, the architecture's keys (context_length,
 * embedding_length, block_count, feed_forward_length, attention.head_count,
 * attention.head_count_kv, the norm epsilon, rope.freq_base and
 * rope.dimension_count unless gpt2, attention.key_length/value_length for
 * qwen3 and gemma3, attention.sliding_window for gemma3), every tokenizer.*
 * key of the vocabulary file, and every required tensor of the architecture
 * (model_arch.c; phi3 with fused attn_qkv). Weight matrices, token_embd
 * included, are in TYPE; position_embd, norms and biases are F32. Output is
 * tied unless `untied` (phi3 always writes output.weight).
 */
#ifndef AARMD_GGUF_SYNTH_H
#define AARMD_GGUF_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aarmd_gguf_writer;

struct aarmd_synth_opts {
    const char *arch;        /* llama, qwen2, qwen3, phi3, gpt2, gemma3 */
    uint32_t type;           /* enum aarmd_type of the weight matrices (see aarmd_quant_can_write) */
    uint32_t n_layer;        /* 0 = 2 */
    uint32_t n_embd;         /* 0 = 64, or 256 for K-quants */
    uint32_t n_head;         /* 0 = 4 */
    uint32_t n_head_kv;      /* 0 = n_head / 2 when even, else n_head (gpt2: n_head) */
    uint32_t n_ff;           /* 0 = 4 * n_embd */
    uint32_t n_ctx;          /* 0 = 512 */
    uint32_t n_vocab;        /* rows of token_embd when vocab_from is NULL (0 = 256); no tokenizer is written then */
    const char *vocab_from;  /* GGUF whose tokenizer.* keys are copied; n_vocab = its token count */
    uint64_t seed;
    bool untied;             /* write output.weight */
};

/* Builds the model in a writer (caller frees with aarmd_gguf_writer_free). */
int aarmd_gguf_synth_build(const struct aarmd_synth_opts *o, struct aarmd_gguf_writer **out,
                           char *err, size_t errlen);
/* Builds and writes `path`. */
int aarmd_gguf_synth(const struct aarmd_synth_opts *o, const char *path, char *err, size_t errlen);

#endif
