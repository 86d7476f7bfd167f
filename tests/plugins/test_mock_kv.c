/* test_mock_kv.c — the mock's simulated paged KV cache (plugins/mock/mock_kv.c,
 * ABI 1.1 kv_info / seq_fork) through the real loader: block accounting, ENOMEM
 * that moves nothing, fork validation and sharing, copy on write, and logits
 * that depend only on (seed, history) in both modes. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mock_fixture.h"
#include "plugin.h"

#define N_VOCAB 1000u

static void open_ok(struct mock_fx *fx, const struct aarmd_opt *opts, uint32_t n_opts)
{
    cr_assert_eq(mock_fx_open(fx, opts, n_opts, N_VOCAB), AARMD_OK, "%s", fx->err);
}

static void feed_ok(struct mock_fx *fx, struct aarmd_backend_seq *s, const int32_t *toks, uint32_t n, float *logits)
{
    cr_assert_eq(mock_fx_feed(fx, s, toks, n, logits), AARMD_OK, "%s", fx->err);
}

static struct aarmd_kv_info kv(struct mock_fx *fx)
{
    struct aarmd_kv_info info;
    cr_assert_eq(aarmd_plugin_kv_info(fx->p, fx->m, &info, fx->err, sizeof fx->err), AARMD_OK, "%s", fx->err);
    return info;
}

static uint64_t blocks_free(struct mock_fx *fx) { return kv(fx).blocks_free; }

/* The sequence's length, read from the error of a truncate past any length. */
static uint32_t seq_len(struct mock_fx *fx, struct aarmd_backend_seq *s)
{
    cr_assert_eq(aarmd_plugin_seq_truncate(fx->p, s, UINT32_MAX, fx->err, sizeof fx->err), AARMD_EINVAL);
    const char *p = strstr(fx->err, "a sequence of ");
    cr_assert_not_null(p, "%s", fx->err);
    unsigned have = 0;
    cr_assert_eq(sscanf(p, "a sequence of %u tokens", &have), 1, "%s", fx->err);
    return have;
}

static const int32_t prompt[] = {1, 17, 300, 301, 9, 44, 45, 46, 700, 12, 13, 14, 15, 16, 99, 98, 97};
#define PROMPT_N ((uint32_t)(sizeof prompt / sizeof prompt[0]))

static const struct aarmd_opt paged4[] = {{"kv_blocks", "10"}, {"kv_block_tokens", "4"}};

Test(mock_kv, not_paged_by_default)
{
    struct mock_fx fx;
    open_ok(&fx, NULL, 0);
    cr_assert(aarmd_plugin_has_method(fx.p, "kv_info"));
    cr_assert(aarmd_plugin_has_method(fx.p, "seq_fork"));
    struct aarmd_kv_info info;
    cr_assert_eq(aarmd_plugin_kv_info(fx.p, fx.m, &info, fx.err, sizeof fx.err), AARMD_EUNSUPPORTED);
    cr_assert(strstr(fx.err, "mock: the KV cache is not paged (set kv_blocks=N"), "%s", fx.err);
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 32), *f = NULL;
    feed_ok(&fx, s, prompt, 16, NULL);
    cr_assert_eq(aarmd_plugin_seq_fork(fx.p, s, 16, 32, &f, fx.err, sizeof fx.err), AARMD_EUNSUPPORTED);
    cr_assert_null(f);
    cr_assert(strstr(fx.err, "seq_fork needs a paged KV cache"), "%s", fx.err);
    aarmd_plugin_seq_free(fx.p, s);
    mock_fx_close(&fx);
}

Test(mock_kv, info_defaults_and_kv_mb)
{
    struct mock_fx fx;
    const struct aarmd_opt one[] = {{"kv_blocks", "100"}};
    open_ok(&fx, one, 1);
    struct aarmd_kv_info info = kv(&fx);
    cr_assert_eq(info.struct_size, sizeof info);
    cr_assert_eq(info.block_tokens, 16);
    cr_assert_eq(info.blocks_total, 100);
    cr_assert_eq(info.blocks_free, 100);
    cr_assert_eq(info.block_bytes, 65536);
    mock_fx_close(&fx);

    /* kv_mb: MiB / kv_block_bytes blocks */
    const struct aarmd_opt mb[] = {{"kv_mb", "3"}, {"kv_block_bytes", "1000"}, {"kv_block_tokens", "32"}};
    open_ok(&fx, mb, 3);
    info = kv(&fx);
    cr_assert_eq(info.blocks_total, 3u * 1048576u / 1000u);
    cr_assert_eq(info.block_tokens, 32);
    cr_assert_eq(info.block_bytes, 1000);
    mock_fx_close(&fx);

    /* kv_block: the name the CPU and Metal backends use */
    const struct aarmd_opt alias[] = {{"kv_blocks", "5"}, {"kv_block", "8"}};
    open_ok(&fx, alias, 2);
    cr_assert_eq(kv(&fx).block_tokens, 8);
    mock_fx_close(&fx);
}

Test(mock_kv, info_fills_only_what_fits)
{
    struct mock_fx fx;
    open_ok(&fx, paged4, 2);
    /* an older host's smaller struct: the plugin must not write past it */
    struct {
        struct aarmd_kv_info info;
    } box;
    memset(&box, 0xab, sizeof box);
    box.info.struct_size = (uint32_t)(offsetof(struct aarmd_kv_info, blocks_total) + sizeof(uint64_t));
    const struct aarmd_backend *t = aarmd_plugin_table(fx.p);
    cr_assert_eq(t->kv_info(fx.m, &box.info, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(box.info.block_tokens, 4);
    cr_assert_eq(box.info.blocks_total, 10);
    cr_assert_eq(box.info.blocks_free, 0xababababababababull);
    cr_assert_eq(box.info.block_bytes, 0xababababababababull);
    mock_fx_close(&fx);
}

struct bad_kv { char k1[32], v1[32], k2[32], v2[32], msg[128]; };

ParameterizedTestParameters(mock_kv, bad_options)
{
    static struct bad_kv cases[] = {
        {"kv_block_tokens", "0", "kv_blocks", "4", "kv_block_tokens must be 1..4096 (got 0)"},
        {"kv_block_tokens", "4097", "kv_blocks", "4", "option kv_block_tokens=4097: expected a non-negative integer <= 4096"},
        {"kv_blocks", "-1", "seed", "1", "option kv_blocks=-1: expected a non-negative integer"},
        {"kv_blocks", "4", "kv_mb", "8", "give kv_blocks=4 or kv_mb=8, not both"},
        {"kv_mb", "1", "kv_block_bytes", "2000000", "kv_mb=1 holds no block of kv_block_bytes=2000000"},
        {"kv_block_bytes", "0", "kv_blocks", "4", "kv_block_bytes must be at least 1 (got 0)"},
        {"kv_blocks", "2000000", "kv_block_tokens", "16",
         "a pool of 2000000 blocks of 16 tokens exceeds the mock's 16777216 positions"},
    };
    return cr_make_param_array(struct bad_kv, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad_kv *c, mock_kv, bad_options)
{
    struct mock_fx fx;
    const struct aarmd_opt opts[] = {{c->k1, c->v1}, {c->k2, c->v2}};
    cr_assert_eq(mock_fx_open(&fx, opts, 2, N_VOCAB), AARMD_EINVAL);
    cr_assert_null(fx.ctx);
    cr_assert(strstr(fx.err, c->msg), "'%s' not in: %s", c->msg, fx.err);
    mock_fx_close(&fx);
}

Test(mock_kv, blocks_follow_new_step_truncate_free)
{
    struct mock_fx fx;
    open_ok(&fx, paged4, 2);
    struct aarmd_backend_seq *a = mock_fx_seq(&fx, 64);
    cr_assert_eq(blocks_free(&fx), 10, "seq_new takes no block");
    feed_ok(&fx, a, prompt, 5, NULL);
    cr_assert_eq(blocks_free(&fx), 8, "5 tokens = 2 blocks of 4");
    feed_ok(&fx, a, prompt, 3, NULL);
    cr_assert_eq(blocks_free(&fx), 8, "8 tokens still 2 blocks");
    feed_ok(&fx, a, prompt, 1, NULL);
    cr_assert_eq(blocks_free(&fx), 7);

    /* two sequences in one step */
    struct aarmd_backend_seq *b = mock_fx_seq(&fx, 64);
    struct aarmd_batch_entry e[2] = {{.seq = a, .tokens = prompt, .n_tokens = 4},
                                     {.seq = b, .tokens = prompt, .n_tokens = 9}};
    cr_assert_eq(aarmd_plugin_step(fx.p, fx.m, e, 2, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(seq_len(&fx, a), 13);
    cr_assert_eq(seq_len(&fx, b), 9);
    cr_assert_eq(blocks_free(&fx), 10 - 4 - 3);

    /* truncate gives blocks back at once; within a block it keeps the block */
    cr_assert_eq(aarmd_plugin_seq_truncate(fx.p, a, 5, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(blocks_free(&fx), 10 - 2 - 3);
    cr_assert_eq(aarmd_plugin_seq_truncate(fx.p, a, 4, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(blocks_free(&fx), 10 - 1 - 3);
    cr_assert_eq(aarmd_plugin_seq_truncate(fx.p, a, 0, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(blocks_free(&fx), 10 - 3);
    aarmd_plugin_seq_free(fx.p, b);
    cr_assert_eq(blocks_free(&fx), 10);
    aarmd_plugin_seq_free(fx.p, a);
    cr_assert_eq(blocks_free(&fx), 10);
    mock_fx_close(&fx);
}

Test(mock_kv, enomem_moves_no_sequence)
{
    struct mock_fx fx;
    const struct aarmd_opt opts[] = {{"kv_blocks", "4"}, {"kv_block_tokens", "4"}};
    open_ok(&fx, opts, 2);
    static float la[N_VOCAB], ref[N_VOCAB];
    struct aarmd_backend_seq *a = mock_fx_seq(&fx, 64), *b = mock_fx_seq(&fx, 64);
    feed_ok(&fx, a, prompt, 12, NULL);   /* 3 blocks */
    feed_ok(&fx, b, prompt, 2, NULL);    /* 1 block: the pool is full */
    cr_assert_eq(blocks_free(&fx), 0);

    /* b still has room in its block, a needs a new one: the whole step fails */
    struct aarmd_batch_entry e[2] = {{.seq = b, .tokens = prompt + 2, .n_tokens = 1, .want_logits = 1, .logits = la},
                                     {.seq = a, .tokens = prompt + 12, .n_tokens = 1}};
    cr_assert_eq(aarmd_plugin_step(fx.p, fx.m, e, 2, fx.err, sizeof fx.err), AARMD_ENOMEM);
    cr_assert(strstr(fx.err, "KV pool exhausted: the step needs 1 blocks, 0 of 4 free"), "%s", fx.err);
    cr_assert_eq(seq_len(&fx, a), 12);
    cr_assert_eq(seq_len(&fx, b), 2);
    cr_assert_eq(blocks_free(&fx), 0);

    /* a big prefill counts every block it needs */
    cr_assert_eq(mock_fx_feed(&fx, b, prompt, 15, NULL), AARMD_ENOMEM);
    cr_assert(strstr(fx.err, "needs 4 blocks, 0 of 4 free"), "%s", fx.err);
    cr_assert_eq(seq_len(&fx, b), 2);

    /* freeing b lets a go on, with the logits of its untouched history */
    aarmd_plugin_seq_free(fx.p, b);
    feed_ok(&fx, a, prompt + 12, 1, la);
    struct aarmd_backend_seq *c = mock_fx_seq(&fx, 64);
    aarmd_plugin_seq_free(fx.p, a);
    feed_ok(&fx, c, prompt, 13, ref);
    cr_assert_arr_eq(la, ref, sizeof la);
    aarmd_plugin_seq_free(fx.p, c);
    cr_assert_eq(blocks_free(&fx), 4);
    mock_fx_close(&fx);
}

Test(mock_kv, fork_validation)
{
    struct mock_fx fx;
    open_ok(&fx, paged4, 2);
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 64), *f = NULL;
    feed_ok(&fx, s, prompt, 10, NULL);
    cr_assert_eq(aarmd_plugin_seq_fork(fx.p, s, 6, 64, &f, fx.err, sizeof fx.err), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "seq_fork: 6 tokens is not a multiple of the block size 4"), "%s", fx.err);
    cr_assert_eq(aarmd_plugin_seq_fork(fx.p, s, 12, 64, &f, fx.err, sizeof fx.err), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "seq_fork: 12 tokens asked but the source sequence holds 10"), "%s", fx.err);
    /* the loader's wrapper checks n_ctx first; the mock checks it too */
    cr_assert_eq(aarmd_plugin_seq_fork(fx.p, s, 8, 4, &f, fx.err, sizeof fx.err), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "8 shared tokens do not fit n_ctx 4"), "%s", fx.err);
    const struct aarmd_backend *t = aarmd_plugin_table(fx.p);
    cr_assert_eq(t->seq_fork(s, 8, 4, &f, fx.err, sizeof fx.err), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "mock: seq_fork: 8 tokens do not fit n_ctx 4"), "%s", fx.err);
    cr_assert_eq(t->seq_fork(s, 0, 0, &f, fx.err, sizeof fx.err), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "n_ctx 0 is out of range"), "%s", fx.err);
    cr_assert_null(f);
    cr_assert_eq(blocks_free(&fx), 7, "failed forks take nothing");

    /* 0 and the whole of a block-aligned source are fine */
    cr_assert_eq(aarmd_plugin_seq_fork(fx.p, s, 0, 8, &f, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(seq_len(&fx, f), 0);
    aarmd_plugin_seq_free(fx.p, f);
    cr_assert_eq(aarmd_plugin_seq_truncate(fx.p, s, 8, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(aarmd_plugin_seq_fork(fx.p, s, 8, 8, &f, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(seq_len(&fx, f), 8);
    cr_assert_eq(blocks_free(&fx), 8, "the fork shares both blocks");
    cr_assert_eq(mock_fx_feed(&fx, f, prompt, 1, NULL), AARMD_EINVAL, "its n_ctx is full");
    cr_assert(strstr(fx.err, "context full (8 of 8 tokens used, 1 more asked)"), "%s", fx.err);
    aarmd_plugin_seq_free(fx.p, f);
    aarmd_plugin_seq_free(fx.p, s);
    cr_assert_eq(blocks_free(&fx), 10);
    mock_fx_close(&fx);
}

/* Greedy continuation of s for n tokens; the logits after each go to out[i]. */
static void continue_greedy(struct mock_fx *fx, struct aarmd_backend_seq *s, const float *first, int n, int32_t *toks)
{
    static float l[N_VOCAB];
    memcpy(l, first, sizeof l);
    for (int i = 0; i < n; i++) {
        toks[i] = (int32_t)mock_fx_argmax(l, N_VOCAB);
        feed_ok(fx, s, &toks[i], 1, l);
    }
}

Test(mock_kv, forked_sequence_continues_as_a_recomputed_one)
{
    struct mock_fx fx;
    const struct aarmd_opt opts[] = {{"kv_blocks", "64"}, {"kv_block_tokens", "4"}, {"seed", "7"}};
    open_ok(&fx, opts, 3);
    static float lf[N_VOCAB], lr[N_VOCAB], lp[N_VOCAB];
    /* the source: the prompt, then it keeps going with other tokens */
    struct aarmd_backend_seq *src = mock_fx_seq(&fx, 128);
    feed_ok(&fx, src, prompt, PROMPT_N, NULL);
    uint64_t before = blocks_free(&fx);
    struct aarmd_backend_seq *f = NULL;
    cr_assert_eq(aarmd_plugin_seq_fork(fx.p, src, 12, 128, &f, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(blocks_free(&fx), before, "a fork copies nothing");
    int32_t junk[6] = {500, 501, 502, 503, 504, 505};
    feed_ok(&fx, src, junk, 6, NULL);
    /* the fork gets the rest of the prompt, then 20 greedy tokens */
    feed_ok(&fx, f, prompt + 12, PROMPT_N - 12, lf);
    int32_t gen_f[20], gen_r[20], gen_p[20];
    continue_greedy(&fx, f, lf, 20, gen_f);
    aarmd_plugin_seq_free(fx.p, src);   /* the fork outlives its source */
    static float more_f[N_VOCAB];
    feed_ok(&fx, f, junk, 1, more_f);

    /* recomputed from scratch in the same (paged) mock */
    struct aarmd_backend_seq *r = mock_fx_seq(&fx, 128);
    feed_ok(&fx, r, prompt, PROMPT_N, lr);
    cr_assert_arr_eq(lf, lr, sizeof lf);
    continue_greedy(&fx, r, lr, 20, gen_r);
    cr_assert_arr_eq(gen_f, gen_r, sizeof gen_f);
    static float more_r[N_VOCAB];
    feed_ok(&fx, r, junk, 1, more_r);
    cr_assert_arr_eq(more_f, more_r, sizeof more_f);
    aarmd_plugin_seq_free(fx.p, r);
    aarmd_plugin_seq_free(fx.p, f);
    cr_assert_eq(blocks_free(&fx), 64);
    mock_fx_close(&fx);

    /* and in a mock that is not paged (same seed): the same numbers */
    const struct aarmd_opt plain[] = {{"seed", "7"}};
    open_ok(&fx, plain, 1);
    struct aarmd_backend_seq *p = mock_fx_seq(&fx, 128);
    feed_ok(&fx, p, prompt, PROMPT_N, lp);
    cr_assert_arr_eq(lf, lp, sizeof lf);
    continue_greedy(&fx, p, lp, 20, gen_p);
    cr_assert_arr_eq(gen_f, gen_p, sizeof gen_f);
    aarmd_plugin_seq_free(fx.p, p);
    mock_fx_close(&fx);
}

/* Greedy tokens until EOS (id 2), at most 10; returns how many came before it. */
static int tokens_before_eos(struct mock_fx *fx, struct aarmd_backend_seq *s, const float *first)
{
    static float l[N_VOCAB];
    memcpy(l, first, sizeof l);
    for (int n = 0; n < 10; n++) {
        int32_t tok = (int32_t)mock_fx_argmax(l, N_VOCAB);
        if (tok == 2)
            return n;
        feed_ok(fx, s, &tok, 1, l);
    }
    return -1;
}

Test(mock_kv, eos_after_counts_the_same_in_a_fork)
{
    struct mock_fx fx;
    const struct aarmd_opt opts[] = {{"kv_blocks", "32"}, {"kv_block_tokens", "4"}, {"eos_after", "3"}};
    open_ok(&fx, opts, 3);
    static float l[N_VOCAB];
    struct aarmd_backend_seq *src = mock_fx_seq(&fx, 64), *f = NULL;
    feed_ok(&fx, src, prompt, 8, NULL);
    cr_assert_eq(aarmd_plugin_seq_fork(fx.p, src, 8, 64, &f, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    /* generated tokens count from the first step that asks for logits, in the fork as in the source */
    feed_ok(&fx, f, prompt + 8, 4, l);
    cr_assert_eq(tokens_before_eos(&fx, f, l), 3);
    feed_ok(&fx, src, prompt + 8, 4, l);
    cr_assert_eq(tokens_before_eos(&fx, src, l), 3);
    aarmd_plugin_seq_free(fx.p, f);
    aarmd_plugin_seq_free(fx.p, src);
    mock_fx_close(&fx);
}

Test(mock_kv, logits_depend_on_the_whole_history)
{
    /* two histories that differ only in their first token and agree on the last 12 */
    struct mock_fx fx;
    open_ok(&fx, paged4, 2);
    static float a[N_VOCAB], b[N_VOCAB];
    int32_t h2[PROMPT_N];
    memcpy(h2, prompt, sizeof h2);
    h2[0] = 400;
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 64), *t = mock_fx_seq(&fx, 64);
    feed_ok(&fx, s, prompt, PROMPT_N, a);
    feed_ok(&fx, t, h2, PROMPT_N, b);
    cr_assert_arr_neq(a, b, sizeof a);
    aarmd_plugin_seq_free(fx.p, s);
    aarmd_plugin_seq_free(fx.p, t);
    mock_fx_close(&fx);
}

Test(mock_kv, truncating_into_a_shared_block_copies_it_on_write)
{
    struct mock_fx fx;
    open_ok(&fx, paged4, 2);
    static float l1[N_VOCAB], l2[N_VOCAB], ref[N_VOCAB];
    struct aarmd_backend_seq *src = mock_fx_seq(&fx, 64), *f = NULL;
    feed_ok(&fx, src, prompt, 8, NULL);
    cr_assert_eq(aarmd_plugin_seq_fork(fx.p, src, 8, 64, &f, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(blocks_free(&fx), 8);
    /* the fork rewinds into the shared 2nd block: it keeps both, shared */
    cr_assert_eq(aarmd_plugin_seq_truncate(fx.p, f, 6, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(blocks_free(&fx), 8);
    /* appending copies that block first: one block taken, the source untouched */
    int32_t x = 777;
    feed_ok(&fx, f, &x, 1, l1);
    cr_assert_eq(blocks_free(&fx), 7);
    feed_ok(&fx, src, prompt + 8, 1, l2);
    struct aarmd_backend_seq *r = mock_fx_seq(&fx, 64);
    feed_ok(&fx, r, prompt, 9, ref);
    cr_assert_arr_eq(l2, ref, sizeof l2);
    aarmd_plugin_seq_free(fx.p, r);
    int32_t hist[7];
    memcpy(hist, prompt, 6 * sizeof *hist);
    hist[6] = x;
    r = mock_fx_seq(&fx, 64);
    feed_ok(&fx, r, hist, 7, ref);
    cr_assert_arr_eq(l1, ref, sizeof l1);
    aarmd_plugin_seq_free(fx.p, r);

    /* the copy needs a free block like any other: ENOMEM when there is none */
    aarmd_plugin_seq_free(fx.p, f);
    cr_assert_eq(aarmd_plugin_seq_fork(fx.p, src, 8, 64, &f, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(aarmd_plugin_seq_truncate(fx.p, f, 5, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    struct aarmd_backend_seq *hog = mock_fx_seq(&fx, 64);
    int32_t fill[28] = {0};
    feed_ok(&fx, hog, fill, 28, NULL);
    cr_assert_eq(blocks_free(&fx), 0);
    cr_assert_eq(mock_fx_feed(&fx, f, &x, 1, NULL), AARMD_ENOMEM);
    cr_assert(strstr(fx.err, "needs 1 blocks, 0 of 10 free"), "%s", fx.err);
    cr_assert_eq(seq_len(&fx, f), 5);
    aarmd_plugin_seq_free(fx.p, hog);
    aarmd_plugin_seq_free(fx.p, src);
    /* the source gone, the fork holds its blocks alone: no copy needed */
    cr_assert_eq(blocks_free(&fx), 8);
    feed_ok(&fx, f, &x, 1, NULL);
    cr_assert_eq(blocks_free(&fx), 8);
    aarmd_plugin_seq_free(fx.p, f);
    cr_assert_eq(blocks_free(&fx), 10);
    mock_fx_close(&fx);
}

Test(mock_kv, abi_1_0_table_has_no_paging)
{
    char size[32];
    snprintf(size, sizeof size, "%zu", offsetof(struct aarmd_backend, step) + sizeof(void *));
    const struct aarmd_opt opts[] = {{"abi_minor", "0"}, {"struct_size", size}, {"kv_blocks", "8"}};
    struct mock_fx fx;
    open_ok(&fx, opts, 3);
    cr_assert_eq(aarmd_plugin_table(fx.p)->abi_minor, 0);
    cr_assert_not(aarmd_plugin_has_method(fx.p, "kv_info"));
    cr_assert_not(aarmd_plugin_has_method(fx.p, "seq_fork"));
    struct aarmd_kv_info info;
    cr_assert_eq(aarmd_plugin_kv_info(fx.p, fx.m, &info, fx.err, sizeof fx.err), AARMD_EUNSUPPORTED);
    cr_assert(strstr(fx.err, "backend mock has no paged KV cache"), "%s", fx.err);
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 16), *f = NULL;
    feed_ok(&fx, s, prompt, 8, NULL);
    cr_assert_eq(aarmd_plugin_seq_fork(fx.p, s, 8, 16, &f, fx.err, sizeof fx.err), AARMD_EUNSUPPORTED);
    cr_assert(strstr(fx.err, "does not support seq_fork"), "%s", fx.err);
    aarmd_plugin_seq_free(fx.p, s);
    mock_fx_close(&fx);

    /* abi_minor 0 with a full-size table: the slots exist but are never called */
    const struct aarmd_opt minor0[] = {{"abi_minor", "0"}, {"kv_blocks", "8"}};
    open_ok(&fx, minor0, 2);
    cr_assert_not(aarmd_plugin_has_method(fx.p, "kv_info"));
    cr_assert_eq(aarmd_plugin_kv_info(fx.p, fx.m, &info, fx.err, sizeof fx.err), AARMD_EUNSUPPORTED);
    mock_fx_close(&fx);
}

static void injected_fault_in_paged_mode(const char *knob, int status)
{
    struct mock_fx fx;
    const struct aarmd_opt opts[] = {{"kv_blocks", "10"}, {"kv_block_tokens", "4"}, {knob, "2"}};
    open_ok(&fx, opts, 3);
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 64);
    feed_ok(&fx, s, prompt, 4, NULL);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, 5, NULL), status);
    cr_assert(strstr(fx.err, "step 2"), "%s", fx.err);
    cr_assert_eq(seq_len(&fx, s), 4);
    cr_assert_eq(blocks_free(&fx), 9, "an injected fault takes no block");
    feed_ok(&fx, s, prompt, 5, NULL);
    cr_assert_eq(blocks_free(&fx), 7);
    aarmd_plugin_seq_free(fx.p, s);
    mock_fx_close(&fx);
}

Test(mock_kv, oom_at_step_when_paged) { injected_fault_in_paged_mode("oom_at_step", AARMD_ENOMEM); }
Test(mock_kv, fail_at_step_when_paged) { injected_fault_in_paged_mode("fail_at_step", AARMD_EDEVICE); }

Test(mock_kv, model_free_returns_shared_blocks)
{
    /* model_free with live forks and ctx_free with live models: no crash, no leak under valgrind */
    struct mock_fx fx;
    open_ok(&fx, paged4, 2);
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 64), *f = NULL;
    feed_ok(&fx, s, prompt, 9, NULL);
    cr_assert_eq(aarmd_plugin_seq_fork(fx.p, s, 8, 64, &f, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    feed_ok(&fx, f, prompt, 3, NULL);
    mock_fx_close(&fx);
}

/* ---- a random walk against a reference -------------------------------------- */

#define RW_SEQS 6
#define RW_CTX 48
#define RW_B 4

struct rw_seq {
    struct aarmd_backend_seq *s;    /* in the paged mock */
    struct aarmd_backend_seq *ref;  /* in a mock that is not paged */
    int32_t hist[RW_CTX];
    uint32_t len;
};

static uint64_t rw_state = 0x1234567u;
static uint32_t rnd(uint32_t n)
{
    rw_state = rw_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rw_state >> 33) % n;
}

/* Recreates the reference of q from its history (no logits). */
static void rw_rebuild_ref(struct mock_fx *ref, struct rw_seq *q)
{
    aarmd_plugin_seq_free(ref->p, q->ref);
    q->ref = mock_fx_seq(ref, RW_CTX);
    if (q->len)
        feed_ok(ref, q->ref, q->hist, q->len, NULL);
}

Test(mock_kv, random_walk_matches_a_reference_and_leaks_nothing, .timeout = 60)
{
    struct mock_fx fx, ref;
    const struct aarmd_opt opts[] = {{"kv_blocks", "24"}, {"kv_block_tokens", "4"}};
    open_ok(&fx, opts, 2);
    open_ok(&ref, NULL, 0);
    static struct rw_seq q[RW_SEQS];
    memset(q, 0, sizeof q);
    static float lp[RW_SEQS][N_VOCAB], lr[N_VOCAB];
    int n_enomem = 0, n_fork = 0, n_cow = 0, n_ok = 0;
    for (int iter = 0; iter < 3000; iter++) {
        uint32_t op = rnd(10);
        uint32_t i = rnd(RW_SEQS);
        if (!q[i].s) {
            if (op < 5) {
                q[i].s = mock_fx_seq(&fx, RW_CTX);
                q[i].len = 0;
                rw_rebuild_ref(&ref, &q[i]);
            } else {
                /* fork from a random live sequence */
                uint32_t j = rnd(RW_SEQS);
                if (!q[j].s)
                    continue;
                uint32_t n = rnd(q[j].len / RW_B + 1) * RW_B;
                cr_assert_eq(aarmd_plugin_seq_fork(fx.p, q[j].s, n, RW_CTX, &q[i].s, fx.err, sizeof fx.err),
                             AARMD_OK, "%s", fx.err);
                memcpy(q[i].hist, q[j].hist, n * sizeof *q[i].hist);
                q[i].len = n;
                rw_rebuild_ref(&ref, &q[i]);
                n_fork++;
            }
        } else if (op < 6) {
            /* one step over a random subset of live sequences */
            struct aarmd_batch_entry e[RW_SEQS];
            int32_t toks[RW_SEQS][8];
            uint32_t who[RW_SEQS], n = 0;
            for (uint32_t k = 0; k < RW_SEQS; k++) {
                if (!q[k].s || q[k].len == RW_CTX || (k != i && rnd(2)))
                    continue;
                uint32_t room = RW_CTX - q[k].len, nt = 1 + rnd(room < 8 ? room : 8);
                for (uint32_t t = 0; t < nt; t++)
                    toks[k][t] = (int32_t)rnd(N_VOCAB);
                e[n] = (struct aarmd_batch_entry){.seq = q[k].s, .tokens = toks[k], .n_tokens = nt,
                                                  .want_logits = 1, .logits = lp[k]};
                who[n++] = k;
            }
            if (!n)
                continue;
            uint64_t free_before = blocks_free(&fx);
            int rc = aarmd_plugin_step(fx.p, fx.m, e, n, fx.err, sizeof fx.err);
            if (rc == AARMD_ENOMEM) {
                cr_assert(strstr(fx.err, "KV pool exhausted"), "%s", fx.err);
                cr_assert_eq(blocks_free(&fx), free_before);
                for (uint32_t k = 0; k < n; k++)
                    cr_assert_eq(seq_len(&fx, q[who[k]].s), q[who[k]].len);
                n_enomem++;
                continue;
            }
            cr_assert_eq(rc, AARMD_OK, "%s", fx.err);
            n_ok++;
            for (uint32_t k = 0; k < n; k++) {
                struct rw_seq *r = &q[who[k]];
                feed_ok(&ref, r->ref, e[k].tokens, e[k].n_tokens, lr);
                cr_assert_arr_eq(lp[who[k]], lr, sizeof lr, "iteration %d, seq %u", iter, who[k]);
                memcpy(r->hist + r->len, e[k].tokens, e[k].n_tokens * sizeof *r->hist);
                r->len += e[k].n_tokens;
            }
        } else if (op < 8) {
            uint32_t n = rnd(q[i].len + 1);
            cr_assert_eq(aarmd_plugin_seq_truncate(fx.p, q[i].s, n, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
            cr_assert_eq(aarmd_plugin_seq_truncate(ref.p, q[i].ref, n, ref.err, sizeof ref.err), AARMD_OK);
            n_cow += n % RW_B != 0;
            q[i].len = n;
        } else {
            aarmd_plugin_seq_free(fx.p, q[i].s);
            q[i].s = NULL;
        }
        /* used blocks: at least the longest sequence's, at most every sequence's own */
        uint64_t used = 24 - blocks_free(&fx), lo = 0, hi = 0;
        for (uint32_t k = 0; k < RW_SEQS; k++) {
            if (!q[k].s)
                continue;
            uint64_t b = (q[k].len + RW_B - 1) / RW_B;
            lo = b > lo ? b : lo;
            hi += b;
        }
        cr_assert(used >= lo && used <= hi, "iteration %d: %llu blocks used, expected %llu..%llu", iter,
                  (unsigned long long)used, (unsigned long long)lo, (unsigned long long)hi);
    }
    cr_assert_gt(n_enomem, 0, "the walk never filled the pool");
    cr_assert_gt(n_fork, 0);
    cr_assert_gt(n_ok, 100);
    cr_assert_gt(n_cow, 0);
    for (uint32_t k = 0; k < RW_SEQS; k++) {
        aarmd_plugin_seq_free(fx.p, q[k].s);
        aarmd_plugin_seq_free(ref.p, q[k].ref);
    }
    cr_assert_eq(blocks_free(&fx), 24, "every block back at the end");
    mock_fx_close(&fx);
    mock_fx_close(&ref);
}
