/* test_backend_mock.c — plugins/mock through the real loader: deterministic
 * peaked logits, every knob, injected faults, context limits, truncation. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mock_fixture.h"
#include "plugin.h"

#define N_VOCAB 2000u

static const int32_t prompt[] = {1, 17, 200, 201, 9};   /* all below n_vocab 300 */
#define PROMPT_N (sizeof prompt / sizeof prompt[0])

Test(mock, same_history_gives_same_logits)
{
    struct mock_fx fx;
    cr_assert_eq(mock_fx_open(&fx, NULL, 0, N_VOCAB), AARMD_OK, "%s", fx.err);
    struct aarmd_backend_seq *a = mock_fx_seq(&fx, 64), *b = mock_fx_seq(&fx, 64);
    static float la[N_VOCAB], lb[N_VOCAB];
    cr_assert_eq(mock_fx_feed(&fx, a, prompt, PROMPT_N, la), AARMD_OK, "%s", fx.err);
    /* b gets the same tokens in two chunks, the first without logits */
    cr_assert_eq(mock_fx_feed(&fx, b, prompt, 2, NULL), AARMD_OK, "%s", fx.err);
    cr_assert_eq(mock_fx_feed(&fx, b, prompt + 2, PROMPT_N - 2, lb), AARMD_OK, "%s", fx.err);
    cr_assert_arr_eq(la, lb, sizeof la);
    for (uint32_t i = 0; i < N_VOCAB; i++)
        cr_assert(isfinite(la[i]));

    /* peaked: one preferred token in [256, 1000), 10 above a background in [-1, 1) */
    uint32_t top = mock_fx_argmax(la, N_VOCAB);
    cr_assert_geq(top, 256);
    cr_assert_lt(top, 1000);
    for (uint32_t i = 0; i < N_VOCAB; i++) {
        if (i == top)
            continue;
        cr_assert_geq(la[i], -1.0f);
        cr_assert_lt(la[i], 1.0f);
        cr_assert_gt(la[top] - la[i], 8.0f);
    }

    /* a different history moves the preferred token somewhere (almost surely) */
    int32_t other = 555;
    int moved = 0;
    for (int k = 0; k < 8; k++, other++) {
        cr_assert_eq(mock_fx_feed(&fx, b, &other, 1, lb), AARMD_OK, "%s", fx.err);
        moved += mock_fx_argmax(lb, N_VOCAB) != top;
    }
    cr_assert_gt(moved, 0);
    aarmd_plugin_seq_free(fx.p, a);
    aarmd_plugin_seq_free(fx.p, b);
    mock_fx_close(&fx);
}

static void logits_with_seed(const char *seed, float *out)
{
    struct mock_fx fx;
    const struct aarmd_opt opts[] = {{"seed", seed}};
    cr_assert_eq(mock_fx_open(&fx, opts, 1, N_VOCAB), AARMD_OK, "%s", fx.err);
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 16);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, PROMPT_N, out), AARMD_OK, "%s", fx.err);
    aarmd_plugin_seq_free(fx.p, s);
    mock_fx_close(&fx);
}

Test(mock, seed_changes_logits)
{
    static float a[N_VOCAB], b[N_VOCAB], c[N_VOCAB];
    logits_with_seed("1", a);
    logits_with_seed("2", b);
    logits_with_seed("1", c);
    cr_assert_arr_eq(a, c, sizeof a);
    cr_assert_arr_neq(a, b, sizeof a);
}

Test(mock, greedy_runs_are_reproducible_and_sampling_varies)
{
    struct mock_fx fx;
    cr_assert_eq(mock_fx_open(&fx, NULL, 0, N_VOCAB), AARMD_OK, "%s", fx.err);
    static float l[N_VOCAB];
    int32_t run[2][16];
    for (int r = 0; r < 2; r++) {
        struct aarmd_backend_seq *s = mock_fx_seq(&fx, 64);
        cr_assert_eq(mock_fx_feed(&fx, s, prompt, PROMPT_N, l), AARMD_OK, "%s", fx.err);
        for (int i = 0; i < 16; i++) {
            run[r][i] = (int32_t)mock_fx_argmax(l, N_VOCAB);
            cr_assert_eq(mock_fx_feed(&fx, s, &run[r][i], 1, l), AARMD_OK, "%s", fx.err);
        }
        aarmd_plugin_seq_free(fx.p, s);
    }
    cr_assert_arr_eq(run[0], run[1], sizeof run[0]);
    /* at temperature 1 the preferred token has p ~ e^10 / (e^10 + ~1.2 N_VOCAB): 0.7..0.97 */
    double z = 0;
    uint32_t top = mock_fx_argmax(l, N_VOCAB);
    for (uint32_t i = 0; i < N_VOCAB; i++)
        z += exp((double)l[i] - (double)l[top]);
    cr_assert_lt(1.0 / z, 0.99);
    cr_assert_gt(1.0 / z, 0.5);
    mock_fx_close(&fx);
}

Test(mock, small_vocab_defaults_and_range_knobs)
{
    struct mock_fx fx;
    static float l[N_VOCAB];
    /* n_vocab 300: preferred from [256, 300) */
    cr_assert_eq(mock_fx_open(&fx, NULL, 0, 300), AARMD_OK, "%s", fx.err);
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 64);
    for (int32_t t = 0; t < 20; t++) {
        cr_assert_eq(mock_fx_feed(&fx, s, &t, 1, l), AARMD_OK, "%s", fx.err);
        uint32_t top = mock_fx_argmax(l, 300);
        cr_assert(top >= 256 && top < 300, "top %u", top);
    }
    aarmd_plugin_seq_free(fx.p, s);
    mock_fx_close(&fx);

    /* n_vocab 100 (below 256): preferred from [0, 100) */
    cr_assert_eq(mock_fx_open(&fx, NULL, 0, 100), AARMD_OK, "%s", fx.err);
    s = mock_fx_seq(&fx, 8);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, 2, l), AARMD_OK, "%s", fx.err);
    cr_assert_lt(mock_fx_argmax(l, 100), 100);
    aarmd_plugin_seq_free(fx.p, s);
    mock_fx_close(&fx);

    const struct aarmd_opt opts[] = {{"vocab_lo", "10"}, {"vocab_hi", "12"}};
    cr_assert_eq(mock_fx_open(&fx, opts, 2, N_VOCAB), AARMD_OK, "%s", fx.err);
    s = mock_fx_seq(&fx, 64);
    for (int32_t t = 0; t < 20; t++) {
        cr_assert_eq(mock_fx_feed(&fx, s, &t, 1, l), AARMD_OK, "%s", fx.err);
        uint32_t top = mock_fx_argmax(l, N_VOCAB);
        cr_assert(top == 10 || top == 11, "top %u", top);
    }
    aarmd_plugin_seq_free(fx.p, s);
    mock_fx_close(&fx);

    const struct aarmd_opt bad_hi[] = {{"vocab_hi", "5000"}};
    cr_assert_eq(mock_fx_open(&fx, bad_hi, 1, N_VOCAB), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "[256, 5000) does not fit n_vocab 2000"), "%s", fx.err);
    mock_fx_close(&fx);

    const struct aarmd_opt bad_order[] = {{"vocab_lo", "12"}, {"vocab_hi", "12"}};
    cr_assert_eq(mock_fx_open(&fx, bad_order, 2, N_VOCAB), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "vocab_lo 12 must be below vocab_hi 12"), "%s", fx.err);
    mock_fx_close(&fx);
}

Test(mock, eos_after_n_generated_tokens)
{
    struct mock_fx fx;
    const struct aarmd_opt opts[] = {{"eos_after", "3"}};
    cr_assert_eq(mock_fx_open(&fx, opts, 1, N_VOCAB), AARMD_OK, "%s", fx.err);
    static float l[N_VOCAB];
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 64);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, PROMPT_N, l), AARMD_OK, "%s", fx.err);
    int n_generated = 0;
    for (;;) {
        int32_t tok = (int32_t)mock_fx_argmax(l, N_VOCAB);
        if (tok == 2)
            break;
        cr_assert_lt(n_generated, 10, "no EOS");
        n_generated++;
        cr_assert_eq(mock_fx_feed(&fx, s, &tok, 1, l), AARMD_OK, "%s", fx.err);
    }
    cr_assert_eq(n_generated, 3);
    aarmd_plugin_seq_free(fx.p, s);
    mock_fx_close(&fx);

    /* without eos_after the EOS id never peaks */
    cr_assert_eq(mock_fx_open(&fx, NULL, 0, N_VOCAB), AARMD_OK, "%s", fx.err);
    s = mock_fx_seq(&fx, 64);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, PROMPT_N, l), AARMD_OK, "%s", fx.err);
    for (int i = 0; i < 40; i++) {
        int32_t tok = (int32_t)mock_fx_argmax(l, N_VOCAB);
        cr_assert_neq(tok, 2);
        cr_assert_eq(mock_fx_feed(&fx, s, &tok, 1, l), AARMD_OK, "%s", fx.err);
    }
    aarmd_plugin_seq_free(fx.p, s);
    mock_fx_close(&fx);

    /* eos_after on a model without an EOS token */
    cr_assert_eq(mock_fx_open(&fx, opts, 1, N_VOCAB), AARMD_OK, "%s", fx.err);
    struct aarmd_model_desc d = mock_fx_desc(N_VOCAB, -1);
    struct aarmd_backend_model *m2 = NULL;
    cr_assert_eq(aarmd_plugin_model_load(fx.p, fx.ctx, &d, NULL, NULL, &m2, fx.err, sizeof fx.err), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "eos_after given but the model's eos_id -1 is not a token"), "%s", fx.err);
    mock_fx_close(&fx);
}

Test(mock, fail_load)
{
    struct mock_fx fx;
    const struct aarmd_opt opts[] = {{"fail_load", "1"}};
    cr_assert_eq(mock_fx_open(&fx, opts, 1, N_VOCAB), AARMD_EIO);
    cr_assert_null(fx.m);
    cr_assert(strstr(fx.err, "fail_load=1"), "%s", fx.err);
    mock_fx_close(&fx);
}

static void fault_at_step(const char *knob, int status, const char *msg)
{
    struct mock_fx fx;
    const struct aarmd_opt opts[] = {{knob, "3"}};
    cr_assert_eq(mock_fx_open(&fx, opts, 1, N_VOCAB), AARMD_OK, "%s", fx.err);
    static float l[N_VOCAB];
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 64);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, PROMPT_N, l), AARMD_OK, "step 1: %s", fx.err);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, 1, l), AARMD_OK, "step 2: %s", fx.err);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, 1, l), status, "step 3");
    cr_assert(strstr(fx.err, msg), "%s", fx.err);
    cr_assert(strstr(fx.err, "step 3"), "%s", fx.err);
    /* only the Nth step fails; the worker goes on */
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, 1, l), AARMD_OK, "step 4: %s", fx.err);
    aarmd_plugin_seq_free(fx.p, s);
    mock_fx_close(&fx);
}

Test(mock, fail_at_step) { fault_at_step("fail_at_step", AARMD_EDEVICE, "injected device error"); }
Test(mock, oom_at_step) { fault_at_step("oom_at_step", AARMD_ENOMEM, "injected out of memory"); }

Test(mock, delay_ms_sleeps_per_step)
{
    struct mock_fx fx;
    const struct aarmd_opt opts[] = {{"delay_ms", "30"}};
    cr_assert_eq(mock_fx_open(&fx, opts, 1, 300), AARMD_OK, "%s", fx.err);
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 8);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, 1, NULL), AARMD_OK, "%s", fx.err);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, 1, NULL), AARMD_OK, "%s", fx.err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    cr_assert_geq(ms, 60.0, "two steps took %.1f ms", ms);
    aarmd_plugin_seq_free(fx.p, s);
    mock_fx_close(&fx);
}

Test(mock, device_info_memory_and_advice)
{
    struct mock_fx fx;
    const struct aarmd_opt opts[] = {{"memory_bytes", "1000000"}, {"max_seqs", "5"}};
    cr_assert_eq(mock_fx_open(&fx, opts, 2, 300), AARMD_OK, "%s", fx.err);
    struct aarmd_device_info info;
    cr_assert_eq(aarmd_plugin_device_info(fx.p, fx.ctx, &info, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_str_eq(info.memory_architecture, "mock");
    cr_assert_str_eq(info.worker_type, "mock");
    cr_assert_str_eq(info.name, "mock device 0");
    cr_assert_eq(info.memory_total, 1000000);
    cr_assert_eq(info.memory_free, 0, "the loaded model holds it all");
    cr_assert_eq(info.advised_seqs, 5);
    cr_assert_eq(aarmd_plugin_model_bytes(fx.p, fx.m), 1000000);
    aarmd_plugin_model_free(fx.p, fx.m);
    fx.m = NULL;
    cr_assert_eq(aarmd_plugin_device_info(fx.p, fx.ctx, &info, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(info.memory_free, 1000000);
    mock_fx_close(&fx);

    cr_assert_eq(mock_fx_open(&fx, NULL, 0, 300), AARMD_OK, "%s", fx.err);
    cr_assert_eq(aarmd_plugin_device_info(fx.p, fx.ctx, &info, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(info.advised_seqs, 8);
    cr_assert_eq(aarmd_plugin_model_bytes(fx.p, fx.m), 0);
    mock_fx_close(&fx);
}

/* arrays, not pointers: Criterion copies parameters into another process */
struct bad_opt { char key[32], value[32], msg[128]; int null_value; };

ParameterizedTestParameters(mock_opts, bad_options)
{
    static struct bad_opt cases[] = {
        {"colour", "red", "unknown option 'colour'", 0},
        {"seed", "abc", "option seed=abc: expected a non-negative integer", 0},
        {"seed", "", "option seed=: expected a non-negative integer", 0},
        {"delay_ms", "-5", "option delay_ms=-5: expected a non-negative integer", 0},
        {"max_seqs", "99999999999", "option max_seqs=99999999999: expected a non-negative integer <= 4294967295", 0},
        {"fail_load", "2", "option fail_load=2: expected a non-negative integer <= 1", 0},
        {"eos_after", "3x", "option eos_after=3x", 0},
        {"seed", "", "option seed=(none)", 1},
    };
    return cr_make_param_array(struct bad_opt, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad_opt *c, mock_opts, bad_options)
{
    struct mock_fx fx;
    const struct aarmd_opt opts[] = {{"seed", "1"}, {c->key, c->null_value ? NULL : c->value}};
    cr_assert_eq(mock_fx_open(&fx, opts, 2, 300), AARMD_EINVAL);
    cr_assert_null(fx.ctx);
    cr_assert(strstr(fx.err, c->msg), "'%s' not in: %s", c->msg, fx.err);
    mock_fx_close(&fx);
}

Test(mock, context_full)
{
    struct mock_fx fx;
    cr_assert_eq(mock_fx_open(&fx, NULL, 0, 300), AARMD_OK, "%s", fx.err);
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 6);
    static float l[300];
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, PROMPT_N, l), AARMD_OK, "%s", fx.err);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, 2, l), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "context full (5 of 6 tokens used, 2 more asked)"), "%s", fx.err);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, 1, l), AARMD_OK, "%s", fx.err);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, 1, l), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "context full"), "%s", fx.err);
    aarmd_plugin_seq_free(fx.p, s);

    struct aarmd_backend_seq *big = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(fx.p, fx.m, UINT32_MAX, &big, fx.err, sizeof fx.err), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "out of range"), "%s", fx.err);
    mock_fx_close(&fx);
}

Test(mock, bad_tokens_and_failed_steps_do_not_advance)
{
    struct mock_fx fx;
    cr_assert_eq(mock_fx_open(&fx, NULL, 0, 300), AARMD_OK, "%s", fx.err);
    struct aarmd_backend_seq *a = mock_fx_seq(&fx, 8), *b = mock_fx_seq(&fx, 8);
    static float la[300], lb[300], ref[300];
    int32_t bad = 300, neg = -1;
    struct aarmd_batch_entry e[2] = {
        {.seq = a, .tokens = prompt, .n_tokens = 2, .want_logits = 1, .logits = la},
        {.seq = b, .tokens = &bad, .n_tokens = 1, .want_logits = 1, .logits = lb},
    };
    cr_assert_eq(aarmd_plugin_step(fx.p, fx.m, e, 2, fx.err, sizeof fx.err), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "entry 1: token 300 is out of range (n_vocab 300)"), "%s", fx.err);
    e[1].tokens = &neg;
    cr_assert_eq(aarmd_plugin_step(fx.p, fx.m, e, 2, fx.err, sizeof fx.err), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "token -1 is out of range"), "%s", fx.err);
    /* a was not advanced: feeding it now gives the logits of a fresh sequence */
    e[1].tokens = prompt;
    e[1].n_tokens = 2;
    cr_assert_eq(aarmd_plugin_step(fx.p, fx.m, e, 2, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_arr_eq(la, lb, sizeof la);
    struct aarmd_backend_seq *c = mock_fx_seq(&fx, 8);
    cr_assert_eq(mock_fx_feed(&fx, c, prompt, 2, ref), AARMD_OK, "%s", fx.err);
    cr_assert_arr_eq(la, ref, sizeof la);
    aarmd_plugin_seq_free(fx.p, a);
    aarmd_plugin_seq_free(fx.p, b);
    aarmd_plugin_seq_free(fx.p, c);
    mock_fx_close(&fx);
}

Test(mock, truncate_rewinds_exactly)
{
    struct mock_fx fx;
    cr_assert_eq(mock_fx_open(&fx, NULL, 0, N_VOCAB), AARMD_OK, "%s", fx.err);
    static float before[N_VOCAB], after[N_VOCAB], tail[N_VOCAB];
    struct aarmd_backend_seq *s = mock_fx_seq(&fx, 16);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt, 3, before), AARMD_OK, "%s", fx.err);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt + 3, 2, tail), AARMD_OK, "%s", fx.err);
    cr_assert_eq(aarmd_plugin_seq_truncate(fx.p, s, 3, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    /* same continuation after truncation gives the same logits */
    cr_assert_eq(mock_fx_feed(&fx, s, prompt + 3, 2, after), AARMD_OK, "%s", fx.err);
    cr_assert_arr_eq(tail, after, sizeof tail);
    /* back to 2 tokens and re-append the 3rd: the logits of the 3-token prefix */
    cr_assert_eq(aarmd_plugin_seq_truncate(fx.p, s, 2, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    cr_assert_eq(mock_fx_feed(&fx, s, prompt + 2, 1, after), AARMD_OK, "%s", fx.err);
    cr_assert_arr_eq(before, after, sizeof before);
    /* truncating frees room: 3 used of 16 */
    int32_t fill[13] = {0};
    cr_assert_eq(mock_fx_feed(&fx, s, fill, 13, NULL), AARMD_OK, "%s", fx.err);
    cr_assert_eq(aarmd_plugin_seq_truncate(fx.p, s, 17, fx.err, sizeof fx.err), AARMD_EINVAL);
    cr_assert(strstr(fx.err, "cannot truncate a sequence of 16 tokens to 17"), "%s", fx.err);
    cr_assert_eq(aarmd_plugin_seq_truncate(fx.p, s, 0, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    aarmd_plugin_seq_free(fx.p, s);
    mock_fx_close(&fx);
}

static int cancel_at_end_cb(void *user, float fraction)
{
    int *calls = user;
    ++*calls;
    return fraction >= 1.0f;
}

Test(mock, progress_and_cancelled_load)
{
    struct mock_fx fx;
    cr_assert_eq(mock_fx_open(&fx, NULL, 0, 300), AARMD_OK, "%s", fx.err);
    struct aarmd_model_desc d = mock_fx_desc(300, 2);
    struct aarmd_backend_model *m2 = NULL;
    int calls = 0;
    cr_assert_eq(aarmd_plugin_model_load(fx.p, fx.ctx, &d, cancel_at_end_cb, &calls, &m2, fx.err, sizeof fx.err),
                 AARMD_ECANCELLED);
    cr_assert_null(m2);
    cr_assert_eq(calls, 2);
    cr_assert(strstr(fx.err, "cancelled"), "%s", fx.err);
    mock_fx_close(&fx);
}

Test(mock, table_and_optional_methods)
{
    struct mock_fx fx;
    cr_assert_eq(mock_fx_open(&fx, NULL, 0, 300), AARMD_OK, "%s", fx.err);
    const struct aarmd_backend *t = aarmd_plugin_table(fx.p);
    cr_assert_str_eq(t->name, "mock");
    cr_assert_not_null(t->version);
    cr_assert(aarmd_plugin_has_method(fx.p, "device_info"));
    cr_assert(aarmd_plugin_has_method(fx.p, "model_bytes"));
    cr_assert(aarmd_plugin_has_method(fx.p, "seq_truncate"));
    mock_fx_close(&fx);
}

Test(mock, freeing_a_parent_frees_its_children)
{
    /* model_free with live sequences, ctx_free with live models: no crash, and
     * valgrind (see docs/PLUGINS.md) reports no leak */
    struct mock_fx fx;
    cr_assert_eq(mock_fx_open(&fx, NULL, 0, 300), AARMD_OK, "%s", fx.err);
    struct aarmd_backend_seq *a = mock_fx_seq(&fx, 8);
    mock_fx_seq(&fx, 8);
    mock_fx_seq(&fx, 8);
    aarmd_plugin_seq_free(fx.p, a);   /* unlink from the middle of the list too */
    struct aarmd_model_desc d = mock_fx_desc(300, 2);
    struct aarmd_backend_model *m2 = NULL;
    cr_assert_eq(aarmd_plugin_model_load(fx.p, fx.ctx, &d, NULL, NULL, &m2, fx.err, sizeof fx.err), AARMD_OK, "%s",
                 fx.err);
    struct aarmd_backend_seq *s2 = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(fx.p, m2, 4, &s2, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    aarmd_plugin_model_free(fx.p, fx.m);   /* frees its two sequences */
    fx.m = NULL;
    int32_t t = 5;
    static float l[300];
    struct aarmd_batch_entry e = {.seq = s2, .tokens = &t, .n_tokens = 1, .want_logits = 1, .logits = l};
    cr_assert_eq(aarmd_plugin_step(fx.p, m2, &e, 1, fx.err, sizeof fx.err), AARMD_OK, "%s", fx.err);
    mock_fx_close(&fx);                         /* ctx_free frees m2 and s2 */
}
