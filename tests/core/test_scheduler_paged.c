/* test_scheduler_paged.c — core/scheduler.c over the mock backend's paged KV
 * pool (kv_blocks / kv_block_tokens knobs): the step budget, admission by free
 * blocks in arrival order, rejection of jobs larger than the pool, prefix reuse
 * that never changes tokens, blocks freed at cancel, and a seeded property
 * test (random arrivals, cancels, slow readers, an injected OOM) that checks
 * one terminal event per job, no block leak and no job left waiting.
 * Set AARMD_TEST_SEED to replay a property run. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "log.h"
#include "sched_fixture.h"
#include "scheduler.h"
#include "tokenizer.h"

/* ---- fixtures ----------------------------------------------------------- */

static struct aarmd_engine *engine;
static struct aarmd_sched *sched;

static void sched_up(const struct aarmd_sched_opts *so)
{
    aarmd_sched_free(sched, 0);
    sched = sched_fx_sched_new(engine, so);
}

static void teardown(void)
{
    aarmd_sched_free(sched, 0);
    sched = NULL;
    aarmd_engine_free(engine);
    engine = NULL;
}

static struct aarmd_job_request req(const char *id, const char *prompt, uint32_t max_tokens, uint64_t seed)
{
    struct aarmd_job_request r = {
        .job_id = id, .prompt = prompt, .prompt_len = strlen(prompt), .max_tokens = max_tokens,
        .sampling = {.temperature = 1.0f, .top_p = 1.0f, .top_k = 50, .repetition_penalty = 1.0f, .seed = seed},
    };
    return r;
}

static void submit_ok(const struct aarmd_job_request *r, struct sched_rec *rec)
{
    sched_rec_init(rec);
    sched_fx_submit(sched, r, rec);
}

static void run_job(const struct aarmd_job_request *r, struct sched_rec *rec)
{
    submit_ok(r, rec);
    cr_assert(sched_rec_wait(rec, 10000), "job %s did not end", r->job_id);
    cr_assert_not(rec->bad_order);
    cr_assert_eq(rec->n_terminal, 1);
}

static struct aarmd_sched_stats stats(void)
{
    struct aarmd_sched_stats st;
    aarmd_sched_stats(sched, &st);
    return st;
}

/* Polls until the pool holds no block but the cache's (and nothing runs). */
static bool wait_settled(int timeout_ms, struct aarmd_sched_stats *out)
{
    double deadline = sched_fx_now_ms() + timeout_ms;
    do {
        *out = stats();
        if (out->running == 0 && out->queued == 0 && out->kv_blocks_used == out->kv_blocks_cached)
            return true;
        sched_fx_sleep_ms(2);
    } while (sched_fx_now_ms() < deadline);
    return false;
}

static const char *long_prompt =
    "You are a careful assistant. Answer briefly and cite the source of every fact you state. "
    "The question follows after this line of instructions.";

TestSuite(paged, .fini = teardown, .timeout = 60);

/* ---- tests -------------------------------------------------------------- */

Test(paged, stats_report_the_pool_and_zero_when_not_paged)
{
    engine = sched_fx_engine_new(NULL);
    struct aarmd_sched_opts so = {.max_jobs = 2, .queue_depth = 4, .ctx_size = 256};
    sched_up(&so);
    struct aarmd_sched_stats st = stats();
    cr_assert_not(st.kv_paged);
    cr_assert_eq(st.kv_blocks_total, 0u);
    cr_assert_eq(st.kv_block_tokens, 0u);
    teardown();

    engine = sched_fx_engine_new("kv_blocks=64,kv_block_tokens=8");
    sched_up(&so);
    st = stats();
    cr_assert(st.kv_paged);
    cr_assert_eq(st.kv_block_tokens, 8u);
    cr_assert_eq(st.kv_blocks_total, 64u);
    cr_assert_eq(st.kv_blocks_free, 64u);
    cr_assert_eq(st.kv_blocks_used, 0u);
    struct sched_rec r;
    struct aarmd_job_request q = req("a", long_prompt, 10, 1);
    run_job(&q, &r);
    cr_assert_str_eq(r.stop_reason, "MAX_TOKENS");
    /* the cache is off in these opts (0): every block is back */
    cr_assert(wait_settled(2000, &st), "used %" PRIu64 " cached %" PRIu64, st.kv_blocks_used, st.kv_blocks_cached);
    cr_assert_eq(st.kv_blocks_used, 0u);
    cr_assert_eq(st.kv_blocks_free, 64u);
}

Test(paged, job_larger_than_the_pool_is_rejected_with_400)
{
    engine = sched_fx_engine_new("kv_blocks=6,kv_block_tokens=4");
    struct aarmd_sched_opts so = {.max_jobs = 2, .queue_depth = 4, .ctx_size = 256};
    sched_up(&so);
    size_t n = sched_fx_prompt_tokens(engine, "one two three");
    struct sched_rec big, fits;
    /* prompt + max_tokens one token over the pool's 24 */
    struct aarmd_job_request q = req("big", "one two three", (uint32_t)(24 - n + 1), 1);
    run_job(&q, &big);
    cr_assert_eq(big.first, AARMD_EV_ERROR);
    cr_assert_eq(big.http_status, 400);
    cr_assert_str_eq(big.code, "INVALID_REQUEST");
    char want[64];
    snprintf(want, sizeof want, "prompt of %zu tokens", n);
    cr_assert(strstr(big.message, want), "%s", big.message);
    cr_assert(strstr(big.message, "pool holds 6 blocks (24 tokens)"), "%s", big.message);
    /* exactly the pool is fine */
    struct aarmd_job_request q2 = req("fits", "one two three", (uint32_t)(24 - n), 1);
    run_job(&q2, &fits);
    cr_assert_str_eq(fits.stop_reason, "MAX_TOKENS", "%s %s", fits.code, fits.message);
    cr_assert_eq(fits.n_tokens, (int)(24 - n));
}

Test(paged, admission_by_blocks_in_arrival_order)
{
    /* 10 blocks of 4: A and B need 8 each, C needs 1 and would fit beside A */
    engine = sched_fx_engine_new("kv_blocks=10,kv_block_tokens=4,delay_ms=4");
    struct aarmd_sched_opts so = {.max_jobs = 4, .queue_depth = 8, .ctx_size = 64};
    sched_up(&so);
    const char *pa = "first job here", *pb = "second job here", *pc = "x";
    uint32_t ma = (uint32_t)(32 - sched_fx_prompt_tokens(engine, pa));
    uint32_t mb = (uint32_t)(32 - sched_fx_prompt_tokens(engine, pb));
    uint32_t mc = (uint32_t)(4 - sched_fx_prompt_tokens(engine, pc));
    cr_assert_gt(mc, 0u);
    static struct sched_rec a, b, c;
    struct aarmd_job_request qa = req("A", pa, ma, 1), qb = req("B", pb, mb, 2), qc = req("C", pc, mc, 3);
    submit_ok(&qa, &a);
    cr_assert(sched_rec_wait_tokens(&a, 3, 5000));
    submit_ok(&qb, &b);
    submit_ok(&qc, &c);
    sched_fx_sleep_ms(30);
    struct aarmd_sched_stats st = stats();
    cr_assert_eq(st.running, 1u, "running %u: B must wait for blocks", st.running);
    cr_assert_eq(st.queued, 2u, "queued %u: C must not overtake B", st.queued);
    cr_assert_eq(sched_rec_get(&c, NULL), 0);
    cr_assert(sched_rec_wait(&a, 10000) && sched_rec_wait(&b, 10000) && sched_rec_wait(&c, 10000));
    cr_assert_str_eq(a.stop_reason, "MAX_TOKENS", "A: %s %s", a.code, a.message);
    cr_assert_str_eq(b.stop_reason, "MAX_TOKENS", "B: %s %s", b.code, b.message);
    cr_assert_str_eq(c.stop_reason, "MAX_TOKENS", "C: %s %s", c.code, c.message);
    cr_assert_lt(a.end_at, b.first_token_at, "B started before A freed its blocks");
    cr_assert_lt(b.first_token_at, c.first_token_at, "C overtook B");
    cr_assert(wait_settled(2000, &st));
    cr_assert_eq(st.kv_blocks_used, 0u);
}

Test(paged, step_budget_bounds_every_step)
{
    engine = sched_fx_engine_new("kv_blocks=200,kv_block_tokens=4,delay_ms=2");   /* slow steps: the three jobs overlap */
    struct aarmd_sched_opts so = {.max_jobs = 3, .queue_depth = 8, .ctx_size = 256, .step_tokens = 8,
                                  .prefill_chunk = 5};
    sched_up(&so);
    static struct sched_rec r[3];
    struct aarmd_job_request q[3] = {req("a", long_prompt, 12, 1), req("b", long_prompt, 7, 2),
                                     req("c", long_prompt, 9, 3)};
    for (int i = 0; i < 3; i++)
        submit_ok(&q[i], &r[i]);
    uint64_t fed = 0;
    for (int i = 0; i < 3; i++) {
        cr_assert(sched_rec_wait(&r[i], 10000));
        cr_assert_str_eq(r[i].stop_reason, "MAX_TOKENS", "%s %s", r[i].code, r[i].message);
        fed += r[i].tokens_in + r[i].tokens_out - 1;   /* the last token is never fed */
    }
    struct aarmd_sched_stats st;
    cr_assert(wait_settled(2000, &st));
    cr_assert_eq(st.step_tokens_sum, fed, "steps carried %" PRIu64 " tokens, jobs fed %" PRIu64,
                 st.step_tokens_sum, fed);
    uint64_t n = 0;
    for (int b = 0; b <= AARMD_SCHED_STEP_BUCKETS; b++) {
        n += st.step_hist[b];
        if (b > 3)
            cr_assert_eq(st.step_hist[b], 0u, "%" PRIu64 " steps of more than %d tokens", st.step_hist[b], 1 << (b - 1));
    }
    cr_assert_eq(n, st.steps);
    /* prompts of ~25 tokens in chunks of at most 5 under a budget of 8 */
    cr_assert_geq(st.steps, (fed + 7) / 8);
    cr_assert_gt(st.step_hist[3], 0u, "no step was full");
}

Test(paged, budget_and_chunks_do_not_change_tokens)
{
    engine = sched_fx_engine_new("kv_blocks=200,kv_block_tokens=4");
    struct aarmd_sched_opts whole = {.max_jobs = 2, .queue_depth = 4, .ctx_size = 256};
    sched_up(&whole);
    static struct sched_rec ref, got[2];
    struct aarmd_job_request q = req("ref", long_prompt, 30, 9);
    run_job(&q, &ref);
    struct aarmd_sched_opts tight = {.max_jobs = 2, .queue_depth = 4, .ctx_size = 256, .step_tokens = 3,
                                     .prefill_chunk = 2};
    sched_up(&tight);
    struct aarmd_job_request q1 = req("x", long_prompt, 30, 9), q2 = req("y", long_prompt, 30, 9);
    submit_ok(&q1, &got[0]);
    submit_ok(&q2, &got[1]);
    for (int i = 0; i < 2; i++) {
        cr_assert(sched_rec_wait(&got[i], 10000));
        cr_assert_eq(got[i].n_tokens, 30);
        cr_assert(!memcmp(ref.ids, got[i].ids, 30 * sizeof(int32_t)), "job %d differs", i);
    }
}

Test(paged, prefix_reuse_gives_the_same_tokens)
{
    engine = sched_fx_engine_new("kv_blocks=256,kv_block_tokens=4");
    char p2[512];
    snprintf(p2, sizeof p2, "%s What is the capital of France?", long_prompt);
    /* references without reuse */
    struct aarmd_sched_opts off = {.max_jobs = 2, .queue_depth = 4, .ctx_size = 256, .prefix_cache_blocks = 0};
    sched_up(&off);
    static struct sched_rec ref1, ref2, a, b, c;
    struct aarmd_job_request q1 = req("p1", long_prompt, 40, 5), q2 = req("p2", p2, 40, 6);
    run_job(&q1, &ref1);
    run_job(&q2, &ref2);
    cr_assert_eq(stats().prefix_reused_tokens, 0u);

    struct aarmd_sched_opts on = {.max_jobs = 2, .queue_depth = 4, .ctx_size = 256,
                                  .prefix_cache_blocks = AARMD_SCHED_CACHE_AUTO};
    sched_up(&on);
    run_job(&q1, &a);   /* miss: fills the cache */
    cr_assert_eq(stats().prefix_reused_tokens, 0u);
    cr_assert(!memcmp(ref1.ids, a.ids, 40 * sizeof(int32_t)));
    run_job(&q1, &b);   /* the same prompt: all but the last partial block reused */
    uint64_t reused = stats().prefix_reused_tokens;
    size_t n1 = sched_fx_prompt_tokens(engine, long_prompt);
    cr_assert_eq(reused, (n1 - 1) / 4 * 4, "reused %" PRIu64 " of a %zu-token prompt", reused, n1);
    cr_assert(!memcmp(ref1.ids, b.ids, 40 * sizeof(int32_t)), "a cache hit changed the tokens");
    run_job(&q2, &c);   /* shares the first prompt's blocks */
    cr_assert_gt(stats().prefix_reused_tokens, reused);
    cr_assert_eq(c.n_tokens, 40);
    cr_assert(!memcmp(ref2.ids, c.ids, 40 * sizeof(int32_t)), "a partial hit changed the tokens");

    struct aarmd_sched_stats st;
    cr_assert(wait_settled(2000, &st), "used %" PRIu64 " cached %" PRIu64, st.kv_blocks_used, st.kv_blocks_cached);
    cr_assert_gt(st.kv_blocks_cached, 0u);
    cr_assert_leq(st.kv_blocks_cached, 256u / 4);
    aarmd_sched_flush_prefix_cache(sched);
    double deadline = sched_fx_now_ms() + 2000;
    while ((stats().kv_blocks_used || stats().kv_blocks_cached) && sched_fx_now_ms() < deadline)
        sched_fx_sleep_ms(2);
    st = stats();
    cr_assert_eq(st.kv_blocks_used, 0u, "%" PRIu64 " blocks leaked", st.kv_blocks_used);
    cr_assert_eq(st.kv_blocks_cached, 0u);
}

Test(paged, a_running_jobs_prompt_is_shared)
{
    engine = sched_fx_engine_new("kv_blocks=256,kv_block_tokens=4,delay_ms=3");
    struct aarmd_sched_opts on = {.max_jobs = 2, .queue_depth = 4, .ctx_size = 512,
                                  .prefix_cache_blocks = AARMD_SCHED_CACHE_AUTO};
    sched_up(&on);
    static struct sched_rec a, b;
    struct aarmd_job_request qa = req("a", long_prompt, 300, 1), qb = req("b", long_prompt, 5, 2);
    submit_ok(&qa, &a);
    cr_assert(sched_rec_wait_tokens(&a, 2, 5000));
    run_job(&qb, &b);
    cr_assert_eq(sched_rec_get(&a, NULL), 0, "a ended too soon for the test");
    cr_assert_gt(stats().prefix_reused_tokens, 0u, "b did not reuse a's prompt");
    aarmd_sched_cancel(sched, "a");
    cr_assert(sched_rec_wait(&a, 2000));
    cr_assert_str_eq(a.code, "CANCELLED");
}

Test(paged, cancel_frees_blocks_at_once)
{
    engine = sched_fx_engine_new("kv_blocks=256,kv_block_tokens=4,delay_ms=3");
    struct aarmd_sched_opts so = {.max_jobs = 2, .queue_depth = 4, .ctx_size = 512};
    sched_up(&so);
    static struct sched_rec a;
    struct aarmd_job_request qa = req("a", long_prompt, 400, 1);
    submit_ok(&qa, &a);
    cr_assert(sched_rec_wait_tokens(&a, 10, 5000));
    cr_assert_gt(stats().kv_blocks_used, 0u);
    double t0 = sched_fx_now_ms();
    aarmd_sched_cancel(sched, "a");
    cr_assert(sched_rec_wait(&a, 2000));
    struct aarmd_sched_stats st;
    cr_assert(wait_settled(500, &st));
    cr_assert_eq(st.kv_blocks_used, 0u);
    cr_assert_lt(sched_fx_now_ms() - t0, 200.0, "blocks came back after %.0f ms", sched_fx_now_ms() - t0);
}

/* ---- the property test ---------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t rnd_below(uint32_t n)
{
    return (uint32_t)(rnd() % n);
}

#define P_JOBS 80

struct pjob {
    struct sched_rec rec;
    char id[16];
    char prompt[256];
    uint32_t max_tokens;
    bool too_big, cancelled;
    double pause_until;              /* > 0: paused (a slow reader) until then */
};

Test(paged, property_random_arrivals_cancels_slow_readers_oom, .timeout = 60)
{
    uint64_t seed = (uint64_t)time(NULL);
    const char *env = getenv("AARMD_TEST_SEED");
    if (env && *env)
        seed = strtoull(env, NULL, 10);
    rng_state = seed;
    fprintf(stderr, "test_scheduler_paged property: seed %" PRIu64 " (AARMD_TEST_SEED=%" PRIu64 " replays it)\n",
            seed, seed);

    /* 40 blocks of 4 tokens (160 tokens), 256 tokens of context: some jobs need
     * more than the pool and are rejected; the cache keeps a quarter */
    char knobs[128];
    uint32_t oom_step = 30 + rnd_below(300);
    snprintf(knobs, sizeof knobs, "kv_blocks=40,kv_block_tokens=4,delay_ms=1,oom_at_step=%u", oom_step);
    engine = sched_fx_engine_new(knobs);
    struct aarmd_sched_opts so = {.max_jobs = 6, .queue_depth = P_JOBS, .ctx_size = 256, .step_tokens = 16,
                                  .prefill_chunk = 6, .prefix_cache_blocks = AARMD_SCHED_CACHE_AUTO};
    sched_up(&so);

    static struct pjob jobs[P_JOBS];
    static const char *heads[] = {"You are a helpful assistant who answers in one short sentence. ",
                                  "Translate the following words to French, keeping their order: ",
                                  "Summarise: ", ""};
    static const char *words[] = {"alpha", "beta", "gamma", "delta", "kappa", "omega", "sigma", "tau"};
    for (int i = 0; i < P_JOBS; i++) {
        struct pjob *p = &jobs[i];
        memset(p, 0, sizeof *p);
        snprintf(p->id, sizeof p->id, "j%d", i);
        size_t n = (size_t)snprintf(p->prompt, sizeof p->prompt, "%s", heads[rnd_below(4)]);
        for (uint32_t w = 1 + rnd_below(12); w > 0; w--)
            n += (size_t)snprintf(p->prompt + n, sizeof p->prompt - n, "%s ", words[rnd_below(8)]);
        p->max_tokens = 1 + rnd_below(40);
        if (rnd_below(10) == 0)
            p->max_tokens = 140 + rnd_below(10);   /* about the whole pool: fits or not */
        if (rnd_below(15) == 0)
            p->max_tokens = 1000;                  /* ctx-capped to 256 tokens: over the pool */
        size_t nt = sched_fx_prompt_tokens(engine, p->prompt);
        uint64_t span = nt + p->max_tokens < 256 ? nt + p->max_tokens : 256;
        p->too_big = (span + 3) / 4 > 40;
    }
    double t_start = sched_fx_now_ms();
    int submitted = 0;
    while (submitted < P_JOBS || sched_fx_now_ms() - t_start < 200) {
        if (submitted < P_JOBS) {
            struct pjob *p = &jobs[submitted++];
            struct aarmd_job_request q = req(p->id, p->prompt, p->max_tokens, rnd());
            submit_ok(&q, &p->rec);
        }
        /* random cancels (client cancel or disconnect), pauses and resumes */
        double now = sched_fx_now_ms();
        for (int k = 0; k < submitted; k++) {
            struct pjob *p = &jobs[k];
            if (p->pause_until > 0 && now >= p->pause_until) {
                aarmd_sched_pause(sched, p->id, false);
                p->pause_until = 0;
            }
        }
        uint32_t r = rnd_below(100);
        /* mostly recent jobs: those are likely still queued or running */
        uint32_t back = rnd_below(submitted < 8 ? (uint32_t)submitted : 8u);
        struct pjob *v = &jobs[submitted - 1 - (int)back];
        if (r < 8 && !v->cancelled) {
            aarmd_sched_cancel(sched, v->id);
            v->cancelled = true;
        } else if (r < 20 && v->pause_until == 0) {
            aarmd_sched_pause(sched, v->id, true);
            v->pause_until = now + 5 + rnd_below(60);
        }
        sched_fx_sleep_ms(rnd_below(6));
    }
    /* slow readers catch up; every job must end within the bound */
    double deadline = sched_fx_now_ms() + 20000;
    for (;;) {
        bool all = true;
        double now = sched_fx_now_ms();
        for (int k = 0; k < P_JOBS; k++) {
            struct pjob *p = &jobs[k];
            if (p->pause_until > 0 && now >= p->pause_until) {
                aarmd_sched_pause(sched, p->id, false);
                p->pause_until = 0;
            }
            if (!sched_rec_get(&p->rec, NULL))
                all = false;
        }
        if (all)
            break;
        cr_assert_lt(now, deadline, "jobs still waiting after 20 s (seed %" PRIu64 ")", seed);
        sched_fx_sleep_ms(5);
    }
    int n_ok = 0, n_cancel = 0, n_oom = 0, n_rejected = 0;
    for (int k = 0; k < P_JOBS; k++) {
        struct pjob *p = &jobs[k];
        struct sched_rec *r = &p->rec;
        cr_assert_not(r->bad_order, "%s: events out of order (seed %" PRIu64 ")", p->id, seed);
        cr_assert_eq(r->n_terminal, 1, "%s: %d terminal events (seed %" PRIu64 ")", p->id, r->n_terminal, seed);
        if (r->last == AARMD_EV_END) {
            n_ok++;
            cr_assert_not(p->too_big);
            cr_assert_leq(r->tokens_out, p->max_tokens);
        } else if (!strcmp(r->code, "CANCELLED")) {
            n_cancel++;
            cr_assert(p->cancelled, "%s cancelled without a cancel (seed %" PRIu64 ")", p->id, seed);
        } else if (!strcmp(r->code, "OUT_OF_MEMORY")) {
            n_oom++;
            cr_assert(strstr(r->message, "oom_at_step"), "%s: a real OOM: %s (seed %" PRIu64 ")", p->id,
                      r->message, seed);
        } else {
            cr_assert_str_eq(r->code, "INVALID_REQUEST", "%s: %s %s (seed %" PRIu64 ")", p->id, r->code, r->message,
                             seed);
            cr_assert(p->too_big, "%s rejected: %s (seed %" PRIu64 ")", p->id, r->message, seed);
            n_rejected++;
        }
        if (p->too_big)
            cr_assert_eq(r->http_status, 400, "%s should have been rejected (seed %" PRIu64 ")", p->id, seed);
    }
    cr_assert_gt(n_ok, P_JOBS / 3, "only %d jobs ended normally (seed %" PRIu64 ")", n_ok, seed);
    struct aarmd_sched_stats st;
    cr_assert(wait_settled(3000, &st), "used %" PRIu64 " != cached %" PRIu64 " (seed %" PRIu64 ")",
              st.kv_blocks_used, st.kv_blocks_cached, seed);
    cr_assert_leq(st.kv_blocks_cached, 10u);
    aarmd_sched_flush_prefix_cache(sched);
    double d2 = sched_fx_now_ms() + 2000;
    while (stats().kv_blocks_used && sched_fx_now_ms() < d2)
        sched_fx_sleep_ms(2);
    st = stats();
    cr_assert_eq(st.kv_blocks_used, 0u, "%" PRIu64 " blocks leaked (seed %" PRIu64 ")", st.kv_blocks_used, seed);
    cr_assert_eq(st.kv_blocks_free, 40u);
    fprintf(stderr, "property: %d ended, %d cancelled, %d injected OOM, %d rejected; %" PRIu64
            " prompt tokens reused, %" PRIu64 " steps\n", n_ok, n_cancel, n_oom, n_rejected, st.prefix_reused_tokens,
            st.steps);
}
