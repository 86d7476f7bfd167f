/* tiny_llama.c — builds the hand-made llama-style test model of tiny_llama.h
 * (test_cpu_backend, test_cpu_paged). Test code: it asserts with Criterion
 * instead of returning errors. */
#include "tiny_llama.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* uniform in [-1, 1) */
static float frand(uint64_t *rng)
{
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    return (float)((*rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

void tiny_llama_add(struct tiny_llama *m, const char *name, int role, int layer, int64_t ne0, int64_t ne1,
                    float base, float amp)
{
    cr_assert_lt(m->d.n_tensors, TINY_LLAMA_MAX_TENSORS, "tiny_llama: more than %d tensors", TINY_LLAMA_MAX_TENSORS);
    uint32_t i = m->d.n_tensors++;
    size_t n = (size_t)(ne0 * ne1);
    float *b = malloc(n * sizeof(float));
    cr_assert_not_null(b);
    for (size_t k = 0; k < n; k++)
        b[k] = base + amp * frand(&m->rng);
    m->bufs[i] = b;
    snprintf(m->names[i], sizeof m->names[i], "%s", name);
    m->t[i] = (struct aarmd_tensor){.name = m->names[i], .role = role, .layer = layer, .type = AARMD_TYPE_F32,
                                    .n_dims = ne1 > 1 ? 2 : 1, .ne = {ne0, ne1, 1, 1}, .data = b,
                                    .nbytes = n * sizeof(float)};
}

struct tiny_llama *tiny_llama_new(const struct tiny_llama_shape *s)
{
    struct tiny_llama *m = calloc(1, sizeof *m);
    cr_assert_not_null(m);
    m->rng = s->seed;
    const int E = s->n_embd, NH = s->n_head, NKV = s->n_head_kv, HD = s->head_dim, FF = s->n_ff;
    m->d = (struct aarmd_model_desc){
        .struct_size = sizeof(struct aarmd_model_desc), .arch = "llama", .name = s->name,
        .n_embd = (uint32_t)E, .n_layer = (uint32_t)s->n_layer, .n_head = (uint32_t)NH, .n_head_kv = (uint32_t)NKV,
        .head_dim = (uint32_t)HD, .n_ff = (uint32_t)FF, .n_vocab = (uint32_t)s->n_vocab,
        .n_ctx_train = s->n_ctx_train, .rope_kind = AARMD_ROPE_NORMAL, .n_rot = (uint32_t)HD,
        .rope_freq_base = 10000.0f, .rope_freq_base_swa = 10000.0f, .rope_scale = 1.0f,
        .norm_kind = AARMD_NORM_RMS, .norm_eps = 1e-5f, .act = AARMD_ACT_SILU_GATED,
        .attn_scale = 1.0f / sqrtf((float)HD), .tied_embeddings = 1, .embd_scale = 1.0f, .bos_id = -1,
        .eos_id = -1, .tensors = m->t};
    tiny_llama_add(m, "token_embd.weight", AARMD_ROLE_TOKEN_EMBD, -1, E, s->n_vocab, 0.0f, 1.0f);
    tiny_llama_add(m, "output_norm.weight", AARMD_ROLE_OUTPUT_NORM, -1, E, 1, 1.0f, 0.1f);
    for (int l = 0; l < s->n_layer; l++) {
        char n[48];
#define T(nm, role, a, b, base, amp)                                                                                   \
    snprintf(n, sizeof n, "blk.%d." nm ".weight", l), tiny_llama_add(m, n, role, l, a, b, base, amp)
        T("attn_norm", AARMD_ROLE_ATTN_NORM, E, 1, 1.0f, 0.1f);
        T("attn_q", AARMD_ROLE_ATTN_Q, E, NH * HD, 0.0f, 0.3f);
        T("attn_k", AARMD_ROLE_ATTN_K, E, NKV * HD, 0.0f, 0.3f);
        T("attn_v", AARMD_ROLE_ATTN_V, E, NKV * HD, 0.0f, 0.3f);
        T("attn_output", AARMD_ROLE_ATTN_OUT, NH * HD, E, 0.0f, s->attn_out_amp);
        T("ffn_norm", AARMD_ROLE_FFN_NORM, E, 1, 1.0f, 0.1f);
        T("ffn_gate", AARMD_ROLE_FFN_GATE, E, FF, 0.0f, 0.3f);
        T("ffn_up", AARMD_ROLE_FFN_UP, E, FF, 0.0f, 0.3f);
        T("ffn_down", AARMD_ROLE_FFN_DOWN, FF, E, 0.0f, 0.3f);
#undef T
    }
    return m;
}

void tiny_llama_free(struct tiny_llama *m)
{
    for (uint32_t i = 0; m && i < m->d.n_tensors; i++)
        free(m->bufs[i]);
    free(m);
}

struct aarmd_tensor *tiny_llama_find(struct tiny_llama *m, const char *name)
{
    for (uint32_t i = 0; i < m->d.n_tensors; i++)
        if (!strcmp(m->t[i].name, name))
            return &m->t[i];
    return NULL;
}
