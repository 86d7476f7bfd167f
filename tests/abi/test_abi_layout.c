/* test_abi_layout.c — freezes ABI v1: every struct member's offset and size,
 * every enum value and the method signatures of aarmd_backend.h. A failure
 * here means a plugin built against an older header would break: append
 * instead, or bump AARMD_ABI_MAJOR (and then update these numbers). */
#include <criterion/criterion.h>
#include <stddef.h>
#include <string.h>

#include "aarmd_backend.h"

#define SIZE(s, n) cr_expect_eq(sizeof(struct s), (size_t)(n), "sizeof(struct " #s ") is %zu, frozen at %zu", \
                                sizeof(struct s), (size_t)(n))
#define MEMBER(s, m, off, sz)                                                                        \
    do {                                                                                             \
        cr_expect_eq(offsetof(struct s, m), (size_t)(off), "offsetof(" #s ", " #m ") is %zu, frozen at %zu", \
                     offsetof(struct s, m), (size_t)(off));                                          \
        cr_expect_eq(sizeof(((struct s *)0)->m), (size_t)(sz), "sizeof(" #s "." #m ") is %zu, frozen at %zu", \
                     sizeof(((struct s *)0)->m), (size_t)(sz));                                      \
    } while (0)
#define SAME_TYPE(expr, type) \
    cr_expect(__builtin_types_compatible_p(__typeof__(expr), type), #expr " is no longer " #type)

#if defined(__LP64__)

Test(abi_layout, aarmd_tensor)
{
    SIZE(aarmd_tensor, 72);
    MEMBER(aarmd_tensor, name, 0, 8);
    MEMBER(aarmd_tensor, role, 8, 4);
    MEMBER(aarmd_tensor, layer, 12, 4);
    MEMBER(aarmd_tensor, type, 16, 4);
    MEMBER(aarmd_tensor, n_dims, 20, 4);
    MEMBER(aarmd_tensor, ne, 24, 32);
    MEMBER(aarmd_tensor, data, 56, 8);
    MEMBER(aarmd_tensor, nbytes, 64, 8);
}

Test(abi_layout, aarmd_model_desc)
{
    SIZE(aarmd_model_desc, 176);
    MEMBER(aarmd_model_desc, struct_size, 0, 4);
    MEMBER(aarmd_model_desc, arch, 8, 8);
    MEMBER(aarmd_model_desc, name, 16, 8);
    MEMBER(aarmd_model_desc, n_embd, 24, 4);
    MEMBER(aarmd_model_desc, n_layer, 28, 4);
    MEMBER(aarmd_model_desc, n_head, 32, 4);
    MEMBER(aarmd_model_desc, n_head_kv, 36, 4);
    MEMBER(aarmd_model_desc, head_dim, 40, 4);
    MEMBER(aarmd_model_desc, n_ff, 44, 4);
    MEMBER(aarmd_model_desc, n_vocab, 48, 4);
    MEMBER(aarmd_model_desc, n_ctx_train, 52, 4);
    MEMBER(aarmd_model_desc, rope_kind, 56, 4);
    MEMBER(aarmd_model_desc, n_rot, 60, 4);
    MEMBER(aarmd_model_desc, rope_freq_base, 64, 4);
    MEMBER(aarmd_model_desc, rope_freq_base_swa, 68, 4);
    MEMBER(aarmd_model_desc, rope_scaling, 72, 4);
    MEMBER(aarmd_model_desc, rope_scale, 76, 4);
    MEMBER(aarmd_model_desc, rope_orig_ctx, 80, 4);
    MEMBER(aarmd_model_desc, yarn_ext_factor, 84, 4);
    MEMBER(aarmd_model_desc, yarn_attn_factor, 88, 4);
    MEMBER(aarmd_model_desc, yarn_beta_fast, 92, 4);
    MEMBER(aarmd_model_desc, yarn_beta_slow, 96, 4);
    MEMBER(aarmd_model_desc, llama3_low_freq_factor, 100, 4);
    MEMBER(aarmd_model_desc, llama3_high_freq_factor, 104, 4);
    MEMBER(aarmd_model_desc, norm_kind, 108, 4);
    MEMBER(aarmd_model_desc, norm_eps, 112, 4);
    MEMBER(aarmd_model_desc, act, 116, 4);
    MEMBER(aarmd_model_desc, attn_scale, 120, 4);
    MEMBER(aarmd_model_desc, attn_logit_softcap, 124, 4);
    MEMBER(aarmd_model_desc, final_logit_softcap, 128, 4);
    MEMBER(aarmd_model_desc, sliding_window, 132, 4);
    MEMBER(aarmd_model_desc, layer_is_swa, 136, 8);
    MEMBER(aarmd_model_desc, tied_embeddings, 144, 4);
    MEMBER(aarmd_model_desc, embd_scale, 148, 4);
    MEMBER(aarmd_model_desc, bos_id, 152, 4);
    MEMBER(aarmd_model_desc, eos_id, 156, 4);
    MEMBER(aarmd_model_desc, tensors, 160, 8);
    MEMBER(aarmd_model_desc, n_tensors, 168, 4);
}

Test(abi_layout, aarmd_opt)
{
    SIZE(aarmd_opt, 16);
    MEMBER(aarmd_opt, key, 0, 8);
    MEMBER(aarmd_opt, value, 8, 8);
}

Test(abi_layout, aarmd_host)
{
    SIZE(aarmd_host, 48);
    MEMBER(aarmd_host, abi_major, 0, 4);
    MEMBER(aarmd_host, abi_minor, 4, 4);
    MEMBER(aarmd_host, struct_size, 8, 4);
    MEMBER(aarmd_host, log, 16, 8);
    MEMBER(aarmd_host, log_user, 24, 8);
    MEMBER(aarmd_host, opts, 32, 8);
    MEMBER(aarmd_host, n_opts, 40, 4);
    MEMBER(aarmd_host, device, 44, 4);
}

Test(abi_layout, aarmd_device_info)
{
    SIZE(aarmd_device_info, 208);
    MEMBER(aarmd_device_info, struct_size, 0, 4);
    MEMBER(aarmd_device_info, name, 4, 128);
    MEMBER(aarmd_device_info, memory_total, 136, 8);
    MEMBER(aarmd_device_info, memory_free, 144, 8);
    MEMBER(aarmd_device_info, memory_architecture, 152, 16);
    MEMBER(aarmd_device_info, worker_type, 168, 32);
    MEMBER(aarmd_device_info, advised_seqs, 200, 4);
}

Test(abi_layout, aarmd_batch_entry)
{
    SIZE(aarmd_batch_entry, 32);
    MEMBER(aarmd_batch_entry, seq, 0, 8);
    MEMBER(aarmd_batch_entry, tokens, 8, 8);
    MEMBER(aarmd_batch_entry, n_tokens, 16, 4);
    MEMBER(aarmd_batch_entry, want_logits, 20, 4);
    MEMBER(aarmd_batch_entry, logits, 24, 8);
}

Test(abi_layout, aarmd_backend)
{
    SIZE(aarmd_backend, 144);
    MEMBER(aarmd_backend, abi_major, 0, 4);
    MEMBER(aarmd_backend, abi_minor, 4, 4);
    MEMBER(aarmd_backend, struct_size, 8, 4);
    MEMBER(aarmd_backend, name, 16, 8);
    MEMBER(aarmd_backend, version, 24, 8);
    MEMBER(aarmd_backend, ctx_new, 32, 8);
    MEMBER(aarmd_backend, ctx_free, 40, 8);
    MEMBER(aarmd_backend, device_info, 48, 8);
    MEMBER(aarmd_backend, model_load, 56, 8);
    MEMBER(aarmd_backend, model_free, 64, 8);
    MEMBER(aarmd_backend, model_bytes, 72, 8);
    MEMBER(aarmd_backend, seq_new, 80, 8);
    MEMBER(aarmd_backend, seq_free, 88, 8);
    MEMBER(aarmd_backend, seq_truncate, 96, 8);
    MEMBER(aarmd_backend, step, 104, 8);
    /* 1.1 */
    MEMBER(aarmd_backend, kv_info, 112, 8);
    MEMBER(aarmd_backend, seq_fork, 120, 8);
    /* 1.2 */
    MEMBER(aarmd_backend, logits_alloc, 128, 8);
    MEMBER(aarmd_backend, logits_free, 136, 8);
}

Test(abi_layout, aarmd_kv_info)
{
    SIZE(aarmd_kv_info, 32);
    MEMBER(aarmd_kv_info, struct_size, 0, 4);
    MEMBER(aarmd_kv_info, block_tokens, 4, 4);
    MEMBER(aarmd_kv_info, blocks_total, 8, 8);
    MEMBER(aarmd_kv_info, blocks_free, 16, 8);
    MEMBER(aarmd_kv_info, block_bytes, 24, 8);
}

#endif /* __LP64__ */

Test(abi_layout, header_invariants_on_every_platform)
{
    /* the three version fields come first in the table and the host */
    cr_expect_eq(offsetof(struct aarmd_backend, abi_major), 0);
    cr_expect_eq(offsetof(struct aarmd_backend, abi_minor), 4);
    cr_expect_eq(offsetof(struct aarmd_backend, struct_size), 8);
    cr_expect_eq(offsetof(struct aarmd_host, abi_major), 0);
    cr_expect_eq(offsetof(struct aarmd_host, abi_minor), 4);
    cr_expect_eq(offsetof(struct aarmd_host, struct_size), 8);
    cr_expect_eq(offsetof(struct aarmd_device_info, struct_size), 0);
    cr_expect_eq(offsetof(struct aarmd_model_desc, struct_size), 0);
    /* logits_free is the last method (1.2) */
    cr_expect_eq(sizeof(struct aarmd_backend), offsetof(struct aarmd_backend, logits_free) + sizeof(void *));
    cr_expect_eq(offsetof(struct aarmd_kv_info, struct_size), 0);
    cr_expect_eq(AARMD_ABI_MAJOR, 1);
    cr_expect_geq(AARMD_ABI_MINOR, 0);
    cr_expect_str_eq(AARMD_BACKEND_ENTRY_SYMBOL, "aarmd_backend_entry");
    cr_expect_str_eq(AARMD_BACKEND_PROBE_SYMBOL, "aarmd_backend_probe");
}

Test(abi_layout, method_signatures)
{
    const struct aarmd_backend *t = NULL;
    const struct aarmd_host *h = NULL;
    SAME_TYPE(t->ctx_new, int (*)(const struct aarmd_host *, int32_t, struct aarmd_backend_ctx **, char *, size_t));
    SAME_TYPE(t->ctx_free, void (*)(struct aarmd_backend_ctx *));
    SAME_TYPE(t->device_info, int (*)(struct aarmd_backend_ctx *, struct aarmd_device_info *, char *, size_t));
    SAME_TYPE(t->model_load, int (*)(struct aarmd_backend_ctx *, const struct aarmd_model_desc *, aarmd_progress_fn,
                                     void *, struct aarmd_backend_model **, char *, size_t));
    SAME_TYPE(t->model_free, void (*)(struct aarmd_backend_model *));
    SAME_TYPE(t->model_bytes, uint64_t (*)(struct aarmd_backend_model *));
    SAME_TYPE(t->seq_new, int (*)(struct aarmd_backend_model *, uint32_t, struct aarmd_backend_seq **, char *, size_t));
    SAME_TYPE(t->seq_free, void (*)(struct aarmd_backend_seq *));
    SAME_TYPE(t->seq_truncate, int (*)(struct aarmd_backend_seq *, uint32_t, char *, size_t));
    SAME_TYPE(t->step, int (*)(struct aarmd_backend_model *, const struct aarmd_batch_entry *, uint32_t, char *, size_t));
    SAME_TYPE(t->kv_info, int (*)(struct aarmd_backend_model *, struct aarmd_kv_info *, char *, size_t));
    SAME_TYPE(t->seq_fork, int (*)(struct aarmd_backend_seq *, uint32_t, uint32_t, struct aarmd_backend_seq **,
                                   char *, size_t));
    SAME_TYPE(t->logits_alloc, void *(*)(struct aarmd_backend_model *, size_t));
    SAME_TYPE(t->logits_free, void (*)(struct aarmd_backend_model *, void *));
    SAME_TYPE(h->log, void (*)(void *, int, const char *));
    SAME_TYPE(aarmd_progress_fn, int (*)(void *, float));
    SAME_TYPE(aarmd_backend_entry_fn, const struct aarmd_backend *(*)(const struct aarmd_host *));
    SAME_TYPE(aarmd_backend_probe_fn, int (*)(const struct aarmd_host *, char *, size_t));
    (void)t;
    (void)h;
}

#define ENUM(v, n) cr_expect_eq((long)(v), (long)(n), #v " is %ld, frozen at %ld", (long)(v), (long)(n))

Test(abi_enums, status)
{
    ENUM(AARMD_OK, 0);
    ENUM(AARMD_EINVAL, -1);
    ENUM(AARMD_ENOMEM, -2);
    ENUM(AARMD_EDEVICE, -3);
    ENUM(AARMD_EUNSUPPORTED, -4);
    ENUM(AARMD_EIO, -5);
    ENUM(AARMD_EINTERNAL, -6);
    ENUM(AARMD_ECANCELLED, -7);
}

Test(abi_enums, types_match_ggml)
{
    ENUM(AARMD_TYPE_F32, 0);
    ENUM(AARMD_TYPE_F16, 1);
    ENUM(AARMD_TYPE_Q4_0, 2);
    ENUM(AARMD_TYPE_Q4_1, 3);
    ENUM(AARMD_TYPE_Q5_0, 6);
    ENUM(AARMD_TYPE_Q5_1, 7);
    ENUM(AARMD_TYPE_Q8_0, 8);
    ENUM(AARMD_TYPE_Q8_1, 9);
    ENUM(AARMD_TYPE_Q2_K, 10);
    ENUM(AARMD_TYPE_Q3_K, 11);
    ENUM(AARMD_TYPE_Q4_K, 12);
    ENUM(AARMD_TYPE_Q5_K, 13);
    ENUM(AARMD_TYPE_Q6_K, 14);
    ENUM(AARMD_TYPE_Q8_K, 15);
    ENUM(AARMD_TYPE_IQ2_XXS, 16);
    ENUM(AARMD_TYPE_IQ2_XS, 17);
    ENUM(AARMD_TYPE_IQ3_XXS, 18);
    ENUM(AARMD_TYPE_IQ1_S, 19);
    ENUM(AARMD_TYPE_IQ4_NL, 20);
    ENUM(AARMD_TYPE_IQ3_S, 21);
    ENUM(AARMD_TYPE_IQ2_S, 22);
    ENUM(AARMD_TYPE_IQ4_XS, 23);
    ENUM(AARMD_TYPE_I8, 24);
    ENUM(AARMD_TYPE_I16, 25);
    ENUM(AARMD_TYPE_I32, 26);
    ENUM(AARMD_TYPE_I64, 27);
    ENUM(AARMD_TYPE_F64, 28);
    ENUM(AARMD_TYPE_IQ1_M, 29);
    ENUM(AARMD_TYPE_BF16, 30);
    ENUM(AARMD_TYPE_TQ1_0, 34);
    ENUM(AARMD_TYPE_TQ2_0, 35);
    ENUM(AARMD_TYPE_MXFP4, 39);
}

Test(abi_enums, decoder_kinds)
{
    ENUM(AARMD_ROPE_NONE, 0);
    ENUM(AARMD_ROPE_NORMAL, 1);
    ENUM(AARMD_ROPE_NEOX, 2);
    ENUM(AARMD_ROPE_SCALING_NONE, 0);
    ENUM(AARMD_ROPE_SCALING_LINEAR, 1);
    ENUM(AARMD_ROPE_SCALING_YARN, 2);
    ENUM(AARMD_ROPE_SCALING_LLAMA3, 3);
    ENUM(AARMD_NORM_RMS, 0);
    ENUM(AARMD_NORM_LAYER, 1);
    ENUM(AARMD_ACT_SILU_GATED, 0);
    ENUM(AARMD_ACT_GELU_GATED, 1);
    ENUM(AARMD_ACT_GELU, 2);
    ENUM(AARMD_LOG_DEBUG, 0);
    ENUM(AARMD_LOG_INFO, 1);
    ENUM(AARMD_LOG_WARN, 2);
    ENUM(AARMD_LOG_ERROR, 3);
}

Test(abi_enums, roles_append_only)
{
    ENUM(AARMD_ROLE_TOKEN_EMBD, 0);
    ENUM(AARMD_ROLE_POS_EMBD, 1);
    ENUM(AARMD_ROLE_OUTPUT_NORM, 2);
    ENUM(AARMD_ROLE_OUTPUT_NORM_B, 3);
    ENUM(AARMD_ROLE_OUTPUT, 4);
    ENUM(AARMD_ROLE_ROPE_FREQS, 5);
    ENUM(AARMD_ROLE_ATTN_NORM, 6);
    ENUM(AARMD_ROLE_ATTN_NORM_B, 7);
    ENUM(AARMD_ROLE_ATTN_Q, 8);
    ENUM(AARMD_ROLE_ATTN_K, 9);
    ENUM(AARMD_ROLE_ATTN_V, 10);
    ENUM(AARMD_ROLE_ATTN_QKV, 11);
    ENUM(AARMD_ROLE_ATTN_Q_B, 12);
    ENUM(AARMD_ROLE_ATTN_K_B, 13);
    ENUM(AARMD_ROLE_ATTN_V_B, 14);
    ENUM(AARMD_ROLE_ATTN_QKV_B, 15);
    ENUM(AARMD_ROLE_ATTN_Q_NORM, 16);
    ENUM(AARMD_ROLE_ATTN_K_NORM, 17);
    ENUM(AARMD_ROLE_ATTN_OUT, 18);
    ENUM(AARMD_ROLE_ATTN_OUT_B, 19);
    ENUM(AARMD_ROLE_ATTN_POST_NORM, 20);
    ENUM(AARMD_ROLE_FFN_NORM, 21);
    ENUM(AARMD_ROLE_FFN_NORM_B, 22);
    ENUM(AARMD_ROLE_FFN_GATE, 23);
    ENUM(AARMD_ROLE_FFN_UP, 24);
    ENUM(AARMD_ROLE_FFN_UP_GATE, 25);
    ENUM(AARMD_ROLE_FFN_UP_B, 26);
    ENUM(AARMD_ROLE_FFN_DOWN, 27);
    ENUM(AARMD_ROLE_FFN_DOWN_B, 28);
    ENUM(AARMD_ROLE_FFN_POST_NORM, 29);
    /* new roles may be appended: COUNT may grow, never shrink */
    cr_expect_geq(AARMD_ROLE_COUNT, 30);
}
