/* test_scheduler.c — core/scheduler.c with the mock backend loaded by the real
 * loader: event order, stops, EOS, rejections, cancel latency, queue limits,
 * injected faults, determinism, and exactly one terminal event per job. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"
#include "sched_fixture.h"
#include "scheduler.h"
#include "tokenizer.h"

#define MAX_TOK SCHED_REC_MAX_TOK

static void rec_check_stream(const struct sched_rec *r)
{
    cr_assert_not(r->bad_order, "events out of order");
    cr_assert_eq(r->n_terminal, 1, "%d terminal events", r->n_terminal);
    cr_assert_eq(r->first, AARMD_EV_STARTED);
    cr_assert_eq(r->n_started, 1);
    for (int i = 0; i < r->n_tokens && i < MAX_TOK; i++)
        cr_assert_eq(r->idx[i], (uint32_t)i, "token %d has index %u", i, r->idx[i]);
}

/* ---- fixtures ----------------------------------------------------------- */

static struct aarmd_engine *engine;
static struct aarmd_sched *sched;

static void quiet(void)
{
    aarmd_log_setup(AARMD_LOG_TEXT, "test", AARMD_LOG_ERROR);
}

static void setup(const char *knobs, uint32_t max_jobs, uint32_t queue_depth, uint32_t ctx_size)
{
    engine = sched_fx_engine_new(knobs);
    struct aarmd_sched_opts so = {.max_jobs = max_jobs, .queue_depth = queue_depth, .ctx_size = ctx_size,
                                  .inference_timeout_s = 0, .prefill_chunk = 0};
    sched = sched_fx_sched_new(engine, &so);
}

static void teardown(void)
{
    aarmd_sched_free(sched, 0);
    sched = NULL;
    aarmd_engine_free(engine);
    engine = NULL;
}

static struct aarmd_job_request req(const char *id, const char *prompt, uint32_t max_tokens, float temp,
                                    uint64_t seed)
{
    struct aarmd_job_request r = {
        .job_id = id,
        .prompt = prompt,
        .prompt_len = strlen(prompt),
        .max_tokens = max_tokens,
        .sampling = {.temperature = temp, .top_p = 1.0f, .repetition_penalty = 1.0f, .seed = seed},
    };
    return r;
}

/* Runs one job to its end and checks the stream's shape. */
static void run_job(const struct aarmd_job_request *r, struct sched_rec *rec)
{
    sched_rec_init(rec);
    sched_fx_submit(sched, r, rec);
    cr_assert(sched_rec_wait(rec, 10000), "job %s did not end", r->job_id);
    rec_check_stream(rec);
}

static void check_text_is_decode(const struct sched_rec *r)
{
    char *text = NULL, err[256];
    size_t len = 0;
    cr_assert_eq(aarmd_tokenizer_decode(engine->tok, r->ids, (size_t)r->n_tokens, &text, &len, err, sizeof err),
                 AARMD_OK, "%s", err);
    cr_assert_eq(r->text_len, len, "streamed %zu bytes, decode gives %zu", r->text_len, len);
    cr_assert(!memcmp(r->text, text, len), "streamed text differs from decode");
    free(text);
}

/* ---- tests -------------------------------------------------------------- */

TestSuite(sched, .fini = teardown, .timeout = 60);

Test(sched, started_tokens_end_with_max_tokens)
{
    setup(NULL, 2, 4, 256);
    struct sched_rec r;
    struct aarmd_job_request q = req("a", "Hello world, this is a prompt.", 16, 0.0f, 7);
    run_job(&q, &r);
    cr_assert_eq(r.last, AARMD_EV_END);
    cr_assert_str_eq(r.stop_reason, "MAX_TOKENS");
    cr_assert_not(r.has_matched);
    cr_assert_eq(r.n_tokens, 16);
    cr_assert_eq(r.tokens_out, 16u);
    cr_assert_eq(r.seed, 7u);
    cr_assert_eq(r.tokens_in, (uint32_t)sched_fx_prompt_tokens(engine, q.prompt));
    check_text_is_decode(&r);
}

Test(sched, eos_ends_the_job_and_is_never_sent)
{
    setup("eos_after=5", 1, 1, 256);
    struct sched_rec r;
    struct aarmd_job_request q = req("a", "Once upon a time", 100, 0.0f, 1);
    run_job(&q, &r);
    cr_assert_str_eq(r.stop_reason, "EOS");
    cr_assert_eq(r.n_tokens, 5, "got %d tokens", r.n_tokens);
    cr_assert_eq(r.tokens_out, 5u);
    for (int i = 0; i < r.n_tokens; i++)
        cr_assert_not(aarmd_tokenizer_is_eog(engine->tok, r.ids[i]), "EOG id %d sent as a token", r.ids[i]);
    check_text_is_decode(&r);
}

Test(sched, streamed_text_equals_decode_at_temperature_1)
{
    setup(NULL, 4, 4, 512);
    for (uint64_t seed = 1; seed <= 8; seed++) {
        struct sched_rec r;
        char id[16];
        snprintf(id, sizeof id, "j%d", (int)seed);
        struct aarmd_job_request q = req(id, "The quick brown fox", 60, 1.0f, seed);
        run_job(&q, &r);
        cr_assert_eq(r.n_tokens, 60);
        check_text_is_decode(&r);
    }
}

/* Picks a stop string that spans the boundary between tokens k and k+1 of a
 * greedy run, then reruns with it: the job must end at its first occurrence. */
Test(sched, stop_string_split_across_tokens)
{
    setup(NULL, 1, 4, 512);
    struct sched_rec base;
    struct aarmd_job_request q = req("base", "Tell me a story", 40, 0.0f, 3);
    run_job(&q, &base);
    cr_assert_eq(base.n_tokens, 40);

    /* piece boundaries from the per-token pieces */
    char stop[64] = "";
    for (int k = 5; k < 30 && !stop[0]; k++) {
        char *pre = NULL, *cur = NULL, err[128];
        size_t lpre = 0, lcur = 0;
        cr_assert_eq(aarmd_tokenizer_decode(engine->tok, base.ids, (size_t)k + 1, &pre, &lpre, err, sizeof err), 0);
        cr_assert_eq(aarmd_tokenizer_decode(engine->tok, base.ids, (size_t)k + 2, &cur, &lcur, err, sizeof err), 0);
        /* last 2 bytes of token k and first 2 of token k+1, all ASCII */
        if (lpre >= 2 && lcur >= lpre + 2) {
            char cand[5];
            memcpy(cand, pre + lpre - 2, 2);
            memcpy(cand + 2, cur + lpre, 2);
            cand[4] = '\0';
            bool ascii = true;
            for (int i = 0; i < 4; i++)
                ascii = ascii && (unsigned char)cand[i] >= 0x21 && (unsigned char)cand[i] < 0x7f;
            if (ascii)
                snprintf(stop, sizeof stop, "%s", cand);
        }
        free(pre);
        free(cur);
    }
    cr_assert(stop[0], "no token boundary with ASCII text around it in the greedy run");
    const char *first = memmem(base.text, base.text_len, stop, strlen(stop));
    cr_assert_not_null(first);
    size_t expect_len = (size_t)(first - base.text);

    struct sched_rec r;
    struct aarmd_job_request q2 = req("stopped", "Tell me a story", 40, 0.0f, 3);
    q2.stop[0] = "this-never-occurs-xyz";
    q2.stop[1] = stop;
    q2.n_stop = 2;
    run_job(&q2, &r);
    cr_assert_str_eq(r.stop_reason, "STOP_SEQUENCE");
    cr_assert(r.has_matched);
    cr_assert_str_eq(r.matched, stop);
    cr_assert_eq(r.text_len, expect_len, "sent %zu bytes, expected %zu (stop '%s')", r.text_len, expect_len, stop);
    cr_assert(!memcmp(r.text, base.text, expect_len));
    /* tokens are those of the greedy run, up to the one completing the stop */
    for (int i = 0; i < r.n_tokens; i++)
        cr_assert_eq(r.ids[i], base.ids[i]);
    cr_assert_lt(r.n_tokens, 40);
}

Test(sched, stop_held_prefix_is_flushed_at_max_tokens)
{
    setup(NULL, 1, 4, 512);
    struct sched_rec base;
    struct aarmd_job_request q = req("base", "abc", 12, 0.0f, 5);
    run_job(&q, &base);
    cr_assert_gt(base.text_len, 0u);
    /* a stop string that starts with the run's last byte and never completes */
    char stop[8] = {base.text[base.text_len - 1], '\x01', '\x02', 0};
    struct sched_rec r;
    struct aarmd_job_request q2 = req("held", "abc", 12, 0.0f, 5);
    q2.stop[0] = stop;
    q2.n_stop = 1;
    run_job(&q2, &r);
    cr_assert_str_eq(r.stop_reason, "MAX_TOKENS");
    cr_assert_eq(r.text_len, base.text_len);
    cr_assert(!memcmp(r.text, base.text, base.text_len));
}

Test(sched, stop_held_prefix_is_flushed_before_eos)
{
    setup("eos_after=6", 1, 4, 512);
    struct sched_rec base;
    struct aarmd_job_request q = req("base", "abc", 50, 0.0f, 9);
    run_job(&q, &base);
    cr_assert_str_eq(base.stop_reason, "EOS");
    cr_assert_gt(base.text_len, 0u);
    char stop[8] = {base.text[base.text_len - 1], '\x01', 0};
    struct sched_rec r;
    struct aarmd_job_request q2 = req("held", "abc", 50, 0.0f, 9);
    q2.stop[0] = stop;
    q2.n_stop = 1;
    run_job(&q2, &r);
    cr_assert_str_eq(r.stop_reason, "EOS");
    cr_assert_eq(r.n_tokens, base.n_tokens);
    cr_assert_eq(r.text_len, base.text_len, "held text lost at EOS");
    cr_assert(!memcmp(r.text, base.text, base.text_len));
}

Test(sched, prompt_too_long_is_rejected_first)
{
    setup(NULL, 1, 4, 8);
    struct sched_rec r;
    sched_rec_init(&r);
    struct aarmd_job_request q = req("long", "one two three four five six seven eight nine ten eleven", 4, 0.0f, 1);
    sched_fx_submit(sched, &q, &r);
    cr_assert(sched_rec_wait(&r, 5000));
    cr_assert_eq(r.n_events, 1);
    cr_assert_eq(r.first, AARMD_EV_ERROR);
    cr_assert_str_eq(r.code, "INVALID_REQUEST");
    cr_assert_eq(r.http_status, 400);
    cr_assert_not(r.retriable);
    cr_assert(strstr(r.message, "prompt is ") && strstr(r.message, "context holds 8"), "%s", r.message);
    /* the id is free again */
    struct sched_rec r2;
    struct aarmd_job_request q2 = req("long", "one", 2, 0.0f, 1);
    run_job(&q2, &r2);
    cr_assert_str_eq(r2.stop_reason, "MAX_TOKENS");
}

Test(sched, bad_requests_are_rejected_with_400)
{
    setup(NULL, 1, 8, 64);
    struct {
        const char *id, *prompt;
        uint32_t max_tokens;
        const char *stop;
        const char *want;
    } cases[] = {
        {"", "hi", 4, NULL, "job_id"},
        {"z", "hi", 0, NULL, "max_tokens"},
        {"e", "hi", 4, "", "stop"},
        {"t", "", 4, NULL, "zero tokens"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sched_rec r;
        sched_rec_init(&r);
        struct aarmd_job_request q = req(cases[i].id, cases[i].prompt, cases[i].max_tokens, 0.0f, 1);
        if (cases[i].stop) {
            q.stop[0] = cases[i].stop;
            q.n_stop = 1;
        }
        sched_fx_submit(sched, &q, &r);
        cr_assert(sched_rec_wait(&r, 5000));
        cr_assert_eq(r.n_events, 1, "case %zu", i);
        cr_assert_str_eq(r.code, "INVALID_REQUEST", "case %zu", i);
        cr_assert_eq(r.http_status, 400);
        cr_assert(strstr(r.message, cases[i].want), "case %zu: %s", i, r.message);
    }
    struct sched_rec r;
    sched_rec_init(&r);
    struct aarmd_job_request q = req("many", "hi", 4, 0.0f, 1);
    q.n_stop = AARMD_MAX_STOPS + 1;
    for (int i = 0; i < AARMD_MAX_STOPS; i++)
        q.stop[i] = "x";
    sched_fx_submit(sched, &q, &r);
    cr_assert(sched_rec_wait(&r, 5000));
    cr_assert_eq(r.http_status, 400);
    cr_assert(strstr(r.message, "stop"), "%s", r.message);
}

Test(sched, cancel_queued_and_running_within_100ms)
{
    setup("delay_ms=20", 1, 4, 256);
    struct sched_rec a, b;
    sched_rec_init(&a);
    sched_rec_init(&b);
    struct aarmd_job_request qa = req("a", "running job", 100000, 0.0f, 1);
    struct aarmd_job_request qb = req("b", "queued job", 10, 0.0f, 1);
    sched_fx_submit(sched, &qa, &a);
    sched_fx_submit(sched, &qb, &b);
    cr_assert(sched_rec_wait_tokens(&a, 3, 5000));
    double t0 = sched_fx_now_ms();
    aarmd_sched_cancel(sched, "b");
    cr_assert(sched_rec_wait(&b, 1000));
    cr_assert_lt(b.t_done - t0, 100.0, "queued cancel took %.1f ms", b.t_done - t0);
    cr_assert_str_eq(b.code, "CANCELLED");
    cr_assert_eq(b.n_tokens, 0);
    cr_assert_eq(b.first, AARMD_EV_STARTED);

    t0 = sched_fx_now_ms();
    aarmd_sched_cancel(sched, "a");
    cr_assert(sched_rec_wait(&a, 1000));
    cr_assert_lt(a.t_done - t0, 100.0, "running cancel took %.1f ms", a.t_done - t0);
    cr_assert_str_eq(a.code, "CANCELLED");
    cr_assert_not(a.retriable);
    rec_check_stream(&a);
    rec_check_stream(&b);
    aarmd_sched_cancel(sched, "unknown-id");   /* ignored */
    struct aarmd_sched_stats st;
    aarmd_sched_stats(sched, &st);
    cr_assert_eq(st.running + st.queued, 0u);
}

Test(sched, duplicate_live_id)
{
    setup("delay_ms=10", 1, 4, 256);
    struct sched_rec a, a2;
    sched_rec_init(&a);
    struct aarmd_job_request q = req("same", "x y z", 100000, 0.0f, 1);
    sched_fx_submit(sched, &q, &a);
    cr_assert_eq(aarmd_sched_submit(sched, &q, sched_rec_cb, &a2), AARMD_SUBMIT_DUPLICATE);
    aarmd_sched_cancel(sched, "same");
    cr_assert(sched_rec_wait(&a, 2000));
    /* finished: the id may be used again */
    struct aarmd_job_request q2 = req("same", "x y z", 3, 0.0f, 1);
    run_job(&q2, &a2);
    cr_assert_str_eq(a2.stop_reason, "MAX_TOKENS");
}

Test(sched, full_queue_is_busy)
{
    setup("delay_ms=10", 1, 1, 256);
    static struct sched_rec a, b, c;
    sched_rec_init(&a);
    sched_rec_init(&b);
    struct aarmd_job_request qa = req("a", "p", 100000, 0.0f, 1);
    struct aarmd_job_request qb = req("b", "p", 100000, 0.0f, 1);
    struct aarmd_job_request qc = req("c", "p", 10, 0.0f, 1);
    sched_fx_submit(sched, &qa, &a);
    sched_fx_submit(sched, &qb, &b);
    cr_assert_eq(aarmd_sched_submit(sched, &qc, sched_rec_cb, &c), AARMD_SUBMIT_BUSY);
    cr_assert(sched_rec_wait_tokens(&a, 1, 5000));
    struct aarmd_sched_stats st;
    aarmd_sched_stats(sched, &st);
    cr_assert_eq(st.running, 1u);
    cr_assert_eq(st.queued, 1u);
    aarmd_sched_stop_accepting(sched);
    cr_assert_eq(aarmd_sched_submit(sched, &qc, sched_rec_cb, &c), AARMD_SUBMIT_SHUTTING_DOWN);
}

Test(sched, out_of_memory_ends_the_job_and_the_next_succeeds)
{
    setup("oom_at_step=3", 1, 4, 256);
    struct sched_rec a, b;
    struct aarmd_job_request qa = req("a", "first", 20, 0.0f, 1);
    run_job(&qa, &a);
    cr_assert_eq(a.last, AARMD_EV_ERROR);
    cr_assert_str_eq(a.code, "OUT_OF_MEMORY");
    cr_assert(a.retriable);
    cr_assert_eq(a.n_tokens, 2, "tokens before the failing step: %d", a.n_tokens);
    struct aarmd_job_request qb = req("b", "second", 20, 0.0f, 1);
    run_job(&qb, &b);
    cr_assert_str_eq(b.stop_reason, "MAX_TOKENS");
    cr_assert_eq(b.n_tokens, 20);
    struct aarmd_sched_stats st;
    aarmd_sched_stats(sched, &st);
    cr_assert_not(st.fatal);
}

Test(sched, device_error_is_backend_error_and_fatal)
{
    setup("fail_at_step=2", 1, 4, 256);
    struct sched_rec a;
    struct aarmd_job_request qa = req("a", "first", 20, 0.0f, 1);
    run_job(&qa, &a);
    cr_assert_str_eq(a.code, "BACKEND_ERROR");
    cr_assert_not(a.retriable);
    cr_assert(strstr(a.message, "fail_at_step"), "%s", a.message);
    struct aarmd_sched_stats st;
    aarmd_sched_stats(sched, &st);
    cr_assert(st.fatal);
}

static void run_ids(const char *id, uint64_t seed, float temp, struct sched_rec *r)
{
    struct aarmd_job_request q = req(id, "The meaning of life is", 40, temp, seed);
    q.sampling.top_k = 50;
    run_job(&q, r);
    cr_assert_eq(r->n_tokens, 40);
}

Test(sched, same_seed_same_tokens_alone_and_beside_other_jobs)
{
    setup(NULL, 4, 16, 512);
    static struct sched_rec first, again, others[3];
    run_ids("ref", 42, 1.0f, &first);
    for (int k = 0; k < 10; k++) {
        char id[16];
        snprintf(id, sizeof id, "rep%d", k);
        run_ids(id, 42, 1.0f, &again);
        cr_assert(!memcmp(first.ids, again.ids, 40 * sizeof(int32_t)), "run %d differs", k);
    }
    /* now with three other jobs decoding in the same steps */
    for (int k = 0; k < 3; k++) {
        sched_rec_init(&others[k]);
        char id[16];
        snprintf(id, sizeof id, "other%d", k);
        struct aarmd_job_request q = req(id, k == 1 ? "a much longer and different prompt here" : "zz", 200,
                                         1.0f, 1000 + (uint64_t)k);
        sched_fx_submit(sched, &q, &others[k]);
    }
    sched_rec_init(&again);
    struct aarmd_job_request q = req("mixed", "The meaning of life is", 40, 1.0f, 42);
    q.sampling.top_k = 50;
    sched_fx_submit(sched, &q, &again);
    cr_assert(sched_rec_wait(&again, 10000));
    for (int k = 0; k < 3; k++)
        cr_assert(sched_rec_wait(&others[k], 10000));
    cr_assert_eq(again.n_tokens, 40);
    cr_assert(!memcmp(first.ids, again.ids, 40 * sizeof(int32_t)), "differs beside other jobs");
}

Test(sched, different_seeds_differ_at_temperature_1)
{
    /* The mock's distributions can be peaked (one token near p = 0.99), so two
     * seeds may agree by chance: of four seeds, some pair must differ. */
    setup(NULL, 2, 4, 512);
    static struct sched_rec r[4];
    int differ = 0;
    for (int k = 0; k < 4; k++) {
        char id[8];
        snprintf(id, sizeof id, "s%d", k);
        run_ids(id, (uint64_t)k + 1, 1.0f, &r[k]);
        if (k && memcmp(r[0].ids, r[k].ids, 40 * sizeof(int32_t)))
            differ = 1;
    }
    cr_assert(differ, "seeds 1..4 gave the same 40 tokens");
}

Test(sched, prefill_chunks_give_the_same_tokens)
{
    setup(NULL, 2, 4, 512);
    static struct sched_rec whole, chunked;
    const char *prompt = "A long prompt that has many more tokens than one prefill chunk holds, surely.";
    struct aarmd_job_request q = req("whole", prompt, 20, 0.0f, 3);
    run_job(&q, &whole);
    aarmd_sched_free(sched, 0);
    struct aarmd_sched_opts so = {.max_jobs = 2, .queue_depth = 4, .ctx_size = 512, .prefill_chunk = 3};
    char err[256];
    sched = aarmd_sched_new(engine, &so, err, sizeof err);
    cr_assert_not_null(sched, "%s", err);
    struct aarmd_job_request q2 = req("chunked", prompt, 20, 0.0f, 3);
    run_job(&q2, &chunked);
    cr_assert_gt(chunked.tokens_in, 3u);
    cr_assert(!memcmp(whole.ids, chunked.ids, 20 * sizeof(int32_t)));
}

Test(sched, context_full_ends_with_max_tokens)
{
    setup(NULL, 1, 4, 512);
    const char *prompt = "one two three";
    int32_t *ids = NULL;
    size_t n = 0;
    char err[256];
    cr_assert_eq(aarmd_tokenizer_encode(engine->tok, prompt, strlen(prompt), true, true, &ids, &n, err, sizeof err),
                 AARMD_OK);
    free(ids);
    aarmd_sched_free(sched, 0);
    uint32_t ctx = (uint32_t)n + 5;
    struct aarmd_sched_opts so = {.max_jobs = 1, .queue_depth = 4, .ctx_size = ctx};
    sched = aarmd_sched_new(engine, &so, err, sizeof err);
    cr_assert_not_null(sched, "%s", err);
    struct sched_rec r;
    struct aarmd_job_request q = req("ctx", prompt, 1000, 0.0f, 3);
    run_job(&q, &r);
    cr_assert_str_eq(r.stop_reason, "MAX_TOKENS");
    /* the prompt and every token but the last one fill the context */
    cr_assert_eq(r.tokens_in, (uint32_t)n);
    cr_assert_eq(r.tokens_in + r.tokens_out, ctx + 1, "in %u out %u ctx %u", r.tokens_in, r.tokens_out, ctx);

    /* a prompt of exactly ctx - 1 tokens fits and gives two tokens; one of ctx tokens does not fit */
    for (uint32_t c = (uint32_t)n; c <= (uint32_t)n + 1; c++) {
        aarmd_sched_free(sched, 0);
        so.ctx_size = c;
        sched = aarmd_sched_new(engine, &so, err, sizeof err);
        cr_assert_not_null(sched, "%s", err);
        struct sched_rec r2;
        sched_rec_init(&r2);
        sched_fx_submit(sched, &q, &r2);
        cr_assert(sched_rec_wait(&r2, 5000));
        if (c == n) {
            cr_assert_eq(r2.http_status, 400, "prompt of %zu tokens accepted with ctx %u", n, c);
        } else {
            rec_check_stream(&r2);
            cr_assert_eq(r2.tokens_out, 2u);
        }
    }
}

Test(sched, byte_tokens_stream_whole_characters)
{
    /* the mock prefers gpt-2's 256 byte tokens: many multi-byte and broken sequences */
    setup("vocab_lo=0,vocab_hi=256", 1, 4, 512);
    for (uint64_t seed = 1; seed <= 4; seed++) {
        struct sched_rec r;
        char id[16];
        snprintf(id, sizeof id, "b%d", (int)seed);
        struct aarmd_job_request q = req(id, "bytes", 80, 1.0f, seed);
        run_job(&q, &r);
        check_text_is_decode(&r);
    }
}

Test(sched, metrics_at_most_every_500ms)
{
    setup("delay_ms=25", 1, 4, 512);
    struct sched_rec r;
    struct aarmd_job_request q = req("m", "metrics", 60, 0.0f, 3);
    run_job(&q, &r);
    cr_assert_geq(r.n_metrics, 1, "no metrics in a 1.5 s job");
    for (int i = 1; i < r.n_metrics && i < 64; i++)
        cr_assert_geq(r.metrics_t[i] - r.metrics_t[i - 1], 490.0);
}

Test(sched, pause_holds_tokens_until_resumed)
{
    setup("delay_ms=5", 1, 4, 512);
    struct sched_rec r;
    sched_rec_init(&r);
    struct aarmd_job_request q = req("p", "pause me", 100, 0.0f, 3);
    sched_fx_submit(sched, &q, &r);
    cr_assert(sched_rec_wait_tokens(&r, 2, 5000));
    aarmd_sched_pause(sched, "p", true);
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&r.lock);
    int n0 = r.n_tokens;
    pthread_mutex_unlock(&r.lock);
    ts.tv_nsec = 200 * 1000000L;
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&r.lock);
    int n1 = r.n_tokens;
    pthread_mutex_unlock(&r.lock);
    cr_assert_eq(n0, n1, "tokens arrived while paused");
    aarmd_sched_pause(sched, "p", false);
    cr_assert(sched_rec_wait(&r, 5000));
    cr_assert_eq(r.n_tokens, 100);
}

Test(sched, inference_timeout)
{
    quiet();
    setup("delay_ms=50", 1, 4, 512);
    aarmd_sched_free(sched, 0);
    struct aarmd_sched_opts so = {.max_jobs = 1, .queue_depth = 4, .ctx_size = 512, .inference_timeout_s = 1};
    char err[256];
    sched = aarmd_sched_new(engine, &so, err, sizeof err);
    struct sched_rec r;
    struct aarmd_job_request q = req("slow", "slow", 100000, 0.0f, 3);
    run_job(&q, &r);
    cr_assert_str_eq(r.code, "INFERENCE_TIMEOUT");
    cr_assert(r.retriable);
}

Test(sched, logprobs_when_asked)
{
    setup(NULL, 1, 4, 512);
    struct sched_rec r;
    struct aarmd_job_request q = req("lp", "hi", 4, 1.0f, 3);
    q.sampling.n_logprobs = 3;
    run_job(&q, &r);
    cr_assert(r.had_sample);
    cr_assert_eq(r.n_top, 3u);
    struct sched_rec r2;
    struct aarmd_job_request q2 = req("nolp", "hi", 4, 1.0f, 3);
    run_job(&q2, &r2);
    cr_assert_not(r2.had_sample);
}

Test(sched, drain_on_free_ends_every_job)
{
    setup("delay_ms=5", 2, 8, 512);
    static struct sched_rec r[6];
    for (int i = 0; i < 6; i++) {
        sched_rec_init(&r[i]);
        char id[8];
        snprintf(id, sizeof id, "d%d", i);
        struct aarmd_job_request q = req(id, "drain", 100000, 0.0f, (uint64_t)i);
        sched_fx_submit(sched, &q, &r[i]);
    }
    cr_assert(sched_rec_wait_tokens(&r[0], 1, 5000));
    double t0 = sched_fx_now_ms();
    aarmd_sched_free(sched, 50);
    sched = NULL;
    cr_assert_lt(sched_fx_now_ms() - t0, 1000.0);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(r[i].n_terminal, 1, "job %d: %d terminal events", i, r[i].n_terminal);
        cr_assert_str_eq(r[i].code, "CANCELLED");
        cr_assert_not(r[i].bad_order);
    }
}

Test(sched, two_hundred_jobs_with_random_cancels)
{
    setup("delay_ms=1", 4, 256, 256);
    static struct sched_rec r[200];
    srand(12345);
    for (int i = 0; i < 200; i++) {
        sched_rec_init(&r[i]);
        char id[16];
        snprintf(id, sizeof id, "job%d", i);
        struct aarmd_job_request q = req(id, i % 7 ? "short prompt" : "another, somewhat longer prompt text",
                                         1 + (uint32_t)(rand() % 12), i % 2 ? 1.0f : 0.0f, (uint64_t)i);
        sched_fx_submit(sched, &q, &r[i]);
        if (rand() % 3 == 0) {
            snprintf(id, sizeof id, "job%d", rand() % (i + 1));
            aarmd_sched_cancel(sched, id);
        }
    }
    for (int i = 0; i < 200; i++) {
        cr_assert(sched_rec_wait(&r[i], 20000), "job %d never ended", i);
    }
    aarmd_sched_free(sched, 0);
    sched = NULL;
    int cancelled = 0, ended = 0;
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(r[i].n_terminal, 1, "job %d: %d terminal events", i, r[i].n_terminal);
        cr_assert_not(r[i].bad_order, "job %d", i);
        cr_assert_eq(r[i].first, AARMD_EV_STARTED);
        if (r[i].last == AARMD_EV_END)
            ended++;
        else {
            cr_assert_str_eq(r[i].code, "CANCELLED", "job %d: %s", i, r[i].code);
            cancelled++;
        }
    }
    cr_assert_gt(cancelled, 0);
    cr_assert_gt(ended, 0);
}

static void redirect_err(void)
{
    cr_redirect_stderr();
}

Test(sched_log, execute_start_and_end_lines, .init = redirect_err, .fini = teardown)
{
    setup(NULL, 1, 4, 256);
    aarmd_log_setup(AARMD_LOG_JSON, "w", AARMD_LOG_INFO);
    struct sched_rec r;
    struct aarmd_job_request q = req("logged", "hello", 3, 0.0f, 1);
    q.correlation_id = "corr-1";
    run_job(&q, &r);
    aarmd_sched_free(sched, 0);
    sched = NULL;
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    char line[4096];
    bool start = false, end = false;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"job_id\":\"logged\"") || !strstr(line, "\"correlation_id\":\"corr-1\""))
            continue;
        if (strstr(line, "\"event\":\"execute_start\"") && strstr(line, "\"tokens_in\":"))
            start = true;
        if (strstr(line, "\"event\":\"execute_end\"") && strstr(line, "\"tokens_out\":3") &&
            strstr(line, "\"stop_reason\":\"MAX_TOKENS\""))
            end = true;
    }
    cr_assert(start, "no execute_start line");
    cr_assert(end, "no execute_end line");
}

/* ---- the same guarantees on the CPU backend with a real model ------------ */

/* Engine on the CPU backend with SmolLM2; skips when the model was not fetched. */
static void setup_cpu(uint32_t max_jobs)
{
    quiet();
    static char model[PATH_MAX];
    const char *d = getenv("AARMD_TEST_MODELS");
    cr_assert_not_null(d, "AARMD_TEST_MODELS is not set");
    snprintf(model, sizeof model, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", d);
    if (access(model, R_OK) != 0)
        cr_skip_test("%s is missing: run tools/fetch-models.sh", model);
    struct aarmd_engine_opts eo = {.backend = "cpu", .model_path = model};
    char err[1024] = "";
    cr_assert_eq(aarmd_engine_new(&eo, &engine, err, sizeof err), AARMD_OK, "engine: %s", err);
    struct aarmd_sched_opts so = {.max_jobs = max_jobs, .queue_depth = 16, .ctx_size = 256};
    sched = aarmd_sched_new(engine, &so, err, sizeof err);
    cr_assert_not_null(sched, "sched: %s", err);
}

#define CPU_N 12

static void run_cpu(const char *id, uint64_t seed, struct sched_rec *r)
{
    struct aarmd_job_request q = req(id, "The meaning of life is", CPU_N, 1.0f, seed);
    q.sampling.top_k = 50;
    run_job(&q, r);
    cr_assert_eq(r->n_tokens, CPU_N, "%s: %d tokens (%s %s)", id, r->n_tokens, r->code, r->message);
}

Test(sched_cpu, same_seed_same_tokens_alone_and_beside_other_jobs, .init = NULL, .fini = teardown,
     .timeout = 120)
{
    setup_cpu(4);
    static struct sched_rec first, again, others[3];
    run_cpu("ref", 42, &first);
    for (int k = 0; k < 10; k++) {
        char id[16];
        snprintf(id, sizeof id, "rep%d", k);
        run_cpu(id, 42, &again);
        cr_assert(!memcmp(first.ids, again.ids, CPU_N * sizeof(int32_t)), "run %d differs", k);
    }
    for (int k = 0; k < 3; k++) {
        sched_rec_init(&others[k]);
        char id[16];
        snprintf(id, sizeof id, "other%d", k);
        struct aarmd_job_request q = req(id, k == 1 ? "Once upon a time, in a land far away," : "Hi", 24,
                                         1.0f, 1000 + (uint64_t)k);
        sched_fx_submit(sched, &q, &others[k]);
    }
    sched_rec_init(&again);
    struct aarmd_job_request q = req("mixed", "The meaning of life is", CPU_N, 1.0f, 42);
    q.sampling.top_k = 50;
    sched_fx_submit(sched, &q, &again);
    cr_assert(sched_rec_wait(&again, 60000));
    for (int k = 0; k < 3; k++)
        cr_assert(sched_rec_wait(&others[k], 60000));
    cr_assert_eq(again.n_tokens, CPU_N);
    cr_assert(!memcmp(first.ids, again.ids, CPU_N * sizeof(int32_t)), "differs beside other jobs");

    static struct sched_rec other_seed;
    run_cpu("seed7", 7, &other_seed);
    cr_assert(memcmp(first.ids, other_seed.ids, CPU_N * sizeof(int32_t)),
              "seeds 42 and 7 gave the same %d tokens at temperature 1", CPU_N);
}
