/* test_batching.c — continuous batching through the real daemon over a paged
 * backend (the mock's kv_blocks knob; the CPU backend on SmolLM2 when it is
 * paged): /health and /metrics pool fields, 400 for a job larger than the
 * pool, many streams over a small pool all finishing, and prefix reuse that
 * gives the same tokens as no reuse for the same seed. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "integration/harness.h"

static void fini(void) { hx_kill_all(); }

TestSuite(batching, .fini = fini, .timeout = 120);

#define MAX_IDS 512

struct result {
    int status;
    char terminal[16];          /* "end" or "error" */
    char code[64], message[512];
    int64_t ids[MAX_IDS];
    int n_ids;
};

/* Runs one /execute to its end and keeps the token ids and the terminal event. */
static void run(int port, const char *json, struct result *r)
{
    memset(r, 0, sizeof *r);
    struct hx_http *c = hx_execute(port, NULL, json);
    cr_assert_not_null(c);
    r->status = hx_http_status(c);
    if (r->status != 200) {
        hx_http_read_all(c, 5000);
        struct json_object *j = hx_http_json(c), *e;
        if (j && json_object_object_get_ex(j, "error", &e)) {
            snprintf(r->code, sizeof r->code, "%s", hx_jstr(e, "code") ? hx_jstr(e, "code") : "");
            snprintf(r->message, sizeof r->message, "%s", hx_jstr(e, "message") ? hx_jstr(e, "message") : "");
        }
        hx_http_close(c);
        return;
    }
    struct hx_stream *sp = calloc(1, sizeof *sp);   /* large: not on a thread's stack */
    cr_assert_not_null(sp);
    cr_assert_eq(hx_stream_collect(c, sp, 60000), 0, "stream did not end (%d events)", sp->n);
    struct hx_stream *s = sp;
    int terminals = 0;
    for (int i = 0; i < s->n; i++) {
        if (!strcmp(s->names[i], "token") && r->n_ids < MAX_IDS)
            r->ids[r->n_ids++] = hx_jint(s->data[i], "id");
        if (!strcmp(s->names[i], "end") || !strcmp(s->names[i], "error")) {
            terminals++;
            snprintf(r->terminal, sizeof r->terminal, "%s", s->names[i]);
            if (hx_jstr(s->data[i], "code"))
                snprintf(r->code, sizeof r->code, "%s", hx_jstr(s->data[i], "code"));
            if (hx_jstr(s->data[i], "message"))
                snprintf(r->message, sizeof r->message, "%s", hx_jstr(s->data[i], "message"));
        }
    }
    cr_assert_eq(terminals, 1, "%d terminal events", terminals);
    hx_stream_fini(s);
    free(s);
    hx_http_close(c);
}

/* /metrics after the server's 100 ms refresh of the scheduler's numbers. */
static char *metrics_text(int port)
{
    usleep(250 * 1000);
    struct hx_http *c = hx_fetch(port, "GET", "/metrics", NULL, NULL);
    cr_assert_eq(hx_http_status(c), 200);
    char *t = strdup(hx_http_body(c));
    hx_http_close(c);
    return t;
}

/* Polls /health until the pool holds only the cache's blocks; returns the last /health. */
static struct json_object *wait_settled(int port)
{
    usleep(250 * 1000);   /* the server refreshes the scheduler's numbers every 100 ms */
    double deadline = hx_now_ms() + 5000;
    for (;;) {
        struct json_object *h = hx_health(port);
        if ((hx_jint(h, "jobs_running") == 0 && hx_jint(h, "jobs_queued") == 0 &&
             hx_jint(h, "kv_blocks_used") == hx_jint(h, "kv_blocks_cached")) || hx_now_ms() > deadline)
            return h;
        json_object_put(h);
        usleep(10 * 1000);
    }
}

static const char *sys_prompt =
    "You are a careful assistant. Answer briefly and cite the source of every fact you state. "
    "The question follows after this line of instructions. ";

Test(batching, health_and_metrics_show_the_pool)
{
    struct hx_proc *p = hx_start("--worker-id", "wb-1", "--backend-opt", "kv_blocks=64", "--backend-opt",
                                 "kv_block_tokens=8", "--max-jobs", "4", NULL);
    int port = hx_port(p);
    struct json_object *h = hx_health(port);
    cr_assert(hx_jhas(h, "kv_paged"));
    struct json_object *v;
    cr_assert(json_object_object_get_ex(h, "kv_paged", &v) && json_object_get_boolean(v));
    cr_assert_eq(hx_jint(h, "kv_block_tokens"), 8);
    cr_assert_eq(hx_jint(h, "kv_blocks_total"), 64);
    cr_assert_eq(hx_jint(h, "kv_blocks_free"), 64);
    cr_assert_eq(hx_jint(h, "kv_blocks_used"), 0);
    cr_assert_eq(hx_jint(h, "kv_blocks_cached"), 0);
    /* the default context is capped by the pool */
    cr_assert_leq(hx_jint(h, "context_length"), 64 * 8);
    json_object_put(h);

    struct result r;
    char body[1024];
    snprintf(body, sizeof body, "{\"job_id\":\"m1\",\"prompt\":\"%s\",\"max_tokens\":20,\"seed\":1}", sys_prompt);
    run(port, body, &r);
    cr_assert_str_eq(r.terminal, "end", "%s %s", r.code, r.message);
    h = wait_settled(port);
    cr_assert_eq(hx_jint(h, "kv_blocks_used"), hx_jint(h, "kv_blocks_cached"));
    cr_assert_gt(hx_jint(h, "kv_blocks_cached"), 0, "the finished sequence is not cached");
    cr_assert_leq(hx_jint(h, "kv_blocks_cached"), 64 / 4, "over the default cap of a quarter");
    cr_assert_eq(hx_jint(h, "kv_blocks_free") + hx_jint(h, "kv_blocks_used"), 64);
    int64_t used = hx_jint(h, "kv_blocks_used");
    json_object_put(h);

    char *m = metrics_text(port);
    cr_assert_eq(hx_metric(m, "worker_kv_blocks_used", "worker_id=\"wb-1\""), (double)used, "%s", m);
    cr_assert_eq(hx_metric(m, "worker_kv_blocks_free", "worker_id=\"wb-1\""), (double)(64 - used));
    cr_assert_eq(hx_metric(m, "worker_prefix_reused_tokens_total", "worker_id=\"wb-1\""), 0.0);
    double steps = hx_metric(m, "worker_step_tokens_count", "worker_id=\"wb-1\"");
    cr_assert_geq(steps, 20.0, "%s", m);   /* 20 tokens sampled: at least 20 steps */
    cr_assert_eq(hx_metric(m, "worker_step_tokens_bucket", "le=\"+Inf\""), steps);
    double sum = hx_metric(m, "worker_step_tokens_sum", "worker_id=\"wb-1\"");
    cr_assert_geq(sum, steps + 10, "prompt tokens are in the sum: %g", sum);
    /* every series carries worker_id */
    for (char *line = m; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (*line != '#' && *line != '\n')
            cr_assert(!strncmp(strchr(line, '{') ? strchr(line, '{') : line, "{worker_id=\"wb-1\"", 17),
                      "a series without worker_id: %.80s", line);
    free(m);
}

Test(batching, non_paged_backend_reports_zeros)
{
    struct hx_proc *p = hx_start(NULL);
    struct json_object *h = hx_health(hx_port(p));
    struct json_object *v;
    cr_assert(json_object_object_get_ex(h, "kv_paged", &v) && !json_object_get_boolean(v));
    const char *k[] = {"kv_block_tokens", "kv_blocks_total", "kv_blocks_used", "kv_blocks_free", "kv_blocks_cached"};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        cr_assert(hx_jhas(h, k[i]), "no %s", k[i]);
        cr_assert_eq(hx_jint(h, k[i]), 0, "%s", k[i]);
    }
    json_object_put(h);
}

Test(batching, job_larger_than_the_pool_is_400)
{
    struct hx_proc *p = hx_start("--backend-opt", "kv_blocks=4", "--backend-opt", "kv_block_tokens=4", "--ctx-size",
                                 "64", NULL);
    struct result r;
    run(hx_port(p), "{\"job_id\":\"big\",\"prompt\":\"x\",\"max_tokens\":40}", &r);
    cr_assert_eq(r.status, 400, "status %d", r.status);
    cr_assert_str_eq(r.code, "INVALID_REQUEST");
    cr_assert(strstr(r.message, "max_tokens 40"), "%s", r.message);
    cr_assert(strstr(r.message, "pool holds 4 blocks (16 tokens)"), "%s", r.message);
    run(hx_port(p), "{\"job_id\":\"small\",\"prompt\":\"x\",\"max_tokens\":10,\"temperature\":0}", &r);
    cr_assert_str_eq(r.terminal, "end", "%s %s", r.code, r.message);
    cr_assert_eq(r.n_ids, 10);
}

struct client {
    int port;
    int k;
    struct result r;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    char body[1024];
    snprintf(body, sizeof body, "{\"job_id\":\"c%d\",\"prompt\":\"%s%d\",\"max_tokens\":30,\"seed\":%d}", c->k,
             sys_prompt, c->k, c->k);
    run(c->port, body, &c->r);
    return NULL;
}

Test(batching, many_streams_over_a_small_pool_all_finish)
{
    /* 40 blocks of 4 tokens: two or three of these jobs (17 blocks each, less
     * the shared system prompt) fit at once, the others wait */
    struct hx_proc *p = hx_start("--backend-opt", "kv_blocks=40", "--backend-opt", "kv_block_tokens=4",
                                 "--backend-opt", "delay_ms=2", "--max-jobs", "8", "--queue-depth", "32",
                                 "--step-tokens", "16", "--prefill-chunk", "8", NULL);
    int port = hx_port(p);
    enum { N = 16 };
    static struct client cl[N];
    pthread_t th[N];
    for (int k = 0; k < N; k++) {
        cl[k].port = port;
        cl[k].k = k;
        cr_assert_eq(pthread_create(&th[k], NULL, client_main, &cl[k]), 0);
    }
    int64_t max_queued = 0;
    for (int t = 0; t < 100; t++) {
        struct json_object *h = hx_health(port);
        if (hx_jint(h, "jobs_queued") > max_queued)
            max_queued = hx_jint(h, "jobs_queued");
        cr_assert_leq(hx_jint(h, "kv_blocks_used"), 40);
        json_object_put(h);
        usleep(5 * 1000);
    }
    for (int k = 0; k < N; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < N; k++) {
        cr_assert_eq(cl[k].r.status, 200, "c%d: %d %s", k, cl[k].r.status, cl[k].r.message);
        cr_assert_str_eq(cl[k].r.terminal, "end", "c%d: %s %s", k, cl[k].r.code, cl[k].r.message);
        cr_assert_eq(cl[k].r.n_ids, 30);
    }
    cr_assert_gt(max_queued, 0, "the pool never made a job wait");
    struct json_object *h = wait_settled(port);
    cr_assert_eq(hx_jint(h, "kv_blocks_used"), hx_jint(h, "kv_blocks_cached"));
    json_object_put(h);
    char *m = metrics_text(port);
    cr_assert_gt(hx_metric(m, "worker_prefix_reused_tokens_total", NULL), 0.0, "the shared system prompt was never reused");
    cr_assert_eq(hx_metric(m, "worker_step_tokens_bucket", "le=\"16\""),
                 hx_metric(m, "worker_step_tokens_bucket", "le=\"+Inf\""), "a step over --step-tokens 16:\n%s", m);
    free(m);
}

/* Same seed, same tokens: without reuse, then a miss and a hit with reuse. */
static void check_reuse_keeps_tokens(const char *backend, const char *model, const char *const *extra,
                                     int max_tokens)
{
    char body[2048];
    snprintf(body, sizeof body,
             "{\"job_id\":\"r\",\"prompt\":\"%sWhat is the capital of France?\",\"max_tokens\":%d,"
             "\"temperature\":0.9,\"top_k\":40,\"seed\":4242}", sys_prompt, max_tokens);
    struct result ref, miss, hit;
    for (int with_cache = 0; with_cache < 2; with_cache++) {
        struct hx_spec spec = {.backend = backend, .model = model};
        int n = 0;
        for (; extra && extra[n]; n++)
            spec.args[n] = extra[n];
        if (!with_cache) {
            spec.args[n++] = "--prefix-cache-blocks";
            spec.args[n++] = "0";
        }
        struct hx_proc *p = hx_spawn(&spec);
        int port = hx_port(p);
        struct json_object *h = hx_health(port);
        struct json_object *v;
        bool paged = json_object_object_get_ex(h, "kv_paged", &v) && json_object_get_boolean(v);
        json_object_put(h);
        if (!paged) {
            hx_free(p);
            cr_skip_test("the %s backend is not paged (kv_info unsupported): no prefix reuse to test", backend);
        }
        if (!with_cache) {
            run(port, body, &ref);
            cr_assert_str_eq(ref.terminal, "end", "%s %s", ref.code, ref.message);
            char *m = metrics_text(port);
            cr_assert_eq(hx_metric(m, "worker_prefix_reused_tokens_total", NULL), 0.0);
            free(m);
            h = wait_settled(port);
            cr_assert_eq(hx_jint(h, "kv_blocks_used"), 0, "reuse off: every block is back");
            json_object_put(h);
        } else {
            run(port, body, &miss);
            char *m = metrics_text(port);
            cr_assert_eq(hx_metric(m, "worker_prefix_reused_tokens_total", NULL), 0.0);
            free(m);
            run(port, body, &hit);
            m = metrics_text(port);
            double reused = hx_metric(m, "worker_prefix_reused_tokens_total", NULL);
            free(m);
            if (reused == 0.0) {
                hx_free(p);
                cr_skip_test("the %s backend has no seq_fork: no prefix reuse to test", backend);
            }
            cr_assert_gt(reused, 16.0, "reused %g tokens", reused);
            fprintf(stderr, "prefix reuse on %s: %g prompt tokens reused by the second run\n", backend, reused);
        }
        hx_free(p);
    }
    cr_assert_eq(ref.n_ids, max_tokens);
    cr_assert_eq(miss.n_ids, ref.n_ids);
    cr_assert_eq(hit.n_ids, ref.n_ids, "hit: %d tokens (%s %s)", hit.n_ids, hit.code, hit.message);
    for (int i = 0; i < ref.n_ids; i++) {
        cr_assert_eq(miss.ids[i], ref.ids[i], "token %d differs after a miss", i);
        cr_assert_eq(hit.ids[i], ref.ids[i], "token %d differs after a cache hit", i);
    }
}

Test(batching, prefix_reuse_keeps_tokens_mock)
{
    const char *extra[] = {"--backend-opt", "kv_blocks=256", "--backend-opt", "kv_block_tokens=16", NULL};
    check_reuse_keeps_tokens("mock", NULL, extra, 40);
}

Test(batching, prefix_reuse_keeps_tokens_cpu_smollm2, .timeout = 300)
{
    const char *dir = getenv("AARMD_TEST_MODELS");
    char model[4096];
    snprintf(model, sizeof model, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", dir ? dir : "");
    if (!dir || access(model, R_OK) != 0)
        cr_skip_test("no SmolLM2 model at %s (AARMD_TEST_MODELS)", model);
    const char *extra[] = {"--ctx-size", "512", "--max-jobs", "2", NULL};
    check_reuse_keeps_tokens("cpu", model, extra, 16);
}

/* ---- random clients through the real daemon -------------------------------- */

struct rclient {
    int port;
    int k;
    uint64_t seed;
    int behaviour;              /* 0 read to the end, 1 disconnect after a few events, 2 cancel by /cancel */
    int terminals;
    char terminal[32], code[64];
    int n_tokens;
};

static void *rclient_main(void *arg)
{
    struct rclient *c = arg;
    uint64_t x = c->seed;
    usleep((useconds_t)(x % 50) * 1000);   /* random arrival within 50 ms */
    char body[1024];
    snprintf(body, sizeof body, "{\"job_id\":\"r%d\",\"prompt\":\"%s%d\",\"max_tokens\":%d,\"seed\":%d}", c->k,
             (x >> 8) % 3 ? sys_prompt : "Tell me a story about ", c->k, 5 + (int)((x >> 16) % 40), c->k);
    struct hx_http *h = hx_execute(c->port, NULL, body);
    if (!h || hx_http_status(h) != 200) {
        snprintf(c->terminal, sizeof c->terminal, "http%d", h ? hx_http_status(h) : 0);
        hx_http_close(h);
        return NULL;
    }
    int events = 0;
    for (;;) {
        struct hx_sse_event ev;
        int r = hx_sse_next(h, &ev, 30000);
        if (r <= 0)
            break;
        events++;
        if (!strcmp(ev.event, "token"))
            c->n_tokens++;
        if (!strcmp(ev.event, "end") || !strcmp(ev.event, "error")) {
            c->terminals++;
            snprintf(c->terminal, sizeof c->terminal, "%s", ev.event);
            if (ev.json && hx_jstr(ev.json, "code"))
                snprintf(c->code, sizeof c->code, "%s", hx_jstr(ev.json, "code"));
        }
        hx_sse_event_fini(&ev);
        if (c->behaviour == 1 && events == 3) {
            snprintf(c->terminal, sizeof c->terminal, "gone");
            break;   /* the client goes away: the daemon cancels the job */
        }
        if (c->behaviour == 2 && events == 2) {
            char path[64];
            snprintf(path, sizeof path, "/cancel/r%d", c->k);
            hx_http_close(hx_fetch(c->port, "POST", path, NULL, NULL));
        }
    }
    hx_http_close(h);
    return NULL;
}

Test(batching, random_clients_disconnects_and_cancels_leave_no_blocks)
{
    uint64_t seed = (uint64_t)time(NULL);
    const char *env = getenv("AARMD_TEST_SEED");
    if (env && *env)
        seed = strtoull(env, NULL, 10);
    fprintf(stderr, "test_batching random clients: seed %llu (AARMD_TEST_SEED replays it)\n",
            (unsigned long long)seed);
    struct hx_proc *p = hx_start("--backend-opt", "kv_blocks=48", "--backend-opt", "kv_block_tokens=4",
                                 "--backend-opt", "delay_ms=1", "--max-jobs", "6", "--queue-depth", "64",
                                 "--step-tokens", "24", "--prefill-chunk", "8", NULL);
    int port = hx_port(p);
    enum { N = 30 };
    static struct rclient cl[N];
    pthread_t th[N];
    uint64_t x = seed;
    for (int k = 0; k < N; k++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        memset(&cl[k], 0, sizeof cl[k]);
        cl[k].port = port;
        cl[k].k = k;
        cl[k].seed = x >> 11;
        cl[k].behaviour = (int)((x >> 40) % 6) == 0 ? 1 : (int)((x >> 44) % 6) == 0 ? 2 : 0;
        cr_assert_eq(pthread_create(&th[k], NULL, rclient_main, &cl[k]), 0);
    }
    for (int k = 0; k < N; k++)
        pthread_join(th[k], NULL);
    int ended = 0, cancelled = 0, gone = 0;
    for (int k = 0; k < N; k++) {
        struct rclient *c = &cl[k];
        if (!strcmp(c->terminal, "gone")) {
            gone++;
            cr_assert_leq(c->terminals, 1, "r%d (seed %llu)", k, (unsigned long long)seed);
            continue;
        }
        cr_assert_eq(c->terminals, 1, "r%d: %d terminal events, last '%s' (seed %llu)", k, c->terminals, c->terminal,
                     (unsigned long long)seed);
        if (!strcmp(c->terminal, "end"))
            ended++;
        else {
            cr_assert_str_eq(c->code, "CANCELLED", "r%d ended with %s (seed %llu)", k, c->code,
                             (unsigned long long)seed);
            cr_assert_eq(c->behaviour, 2, "r%d cancelled without asking (seed %llu)", k, (unsigned long long)seed);
            cancelled++;
        }
    }
    cr_assert_eq(ended + cancelled + gone, N);
    cr_assert_gt(ended, 0);
    struct json_object *h = wait_settled(port);
    cr_assert_eq(hx_jint(h, "jobs_running"), 0);
    cr_assert_eq(hx_jint(h, "kv_blocks_used"), hx_jint(h, "kv_blocks_cached"), "blocks leaked (seed %llu)",
                 (unsigned long long)seed);
    cr_assert_eq(hx_jint(h, "kv_blocks_used") + hx_jint(h, "kv_blocks_free"), 48);
    json_object_put(h);
    char *m = metrics_text(port);
    /* a client that went away may have missed its job's end */
    double success = hx_metric(m, "worker_requests_total", "outcome=\"success\"");
    cr_assert(success >= ended && success <= ended + gone, "success %g, ended %d, gone %d (seed %llu)", success,
              ended, gone, (unsigned long long)seed);
    free(m);
    /* a clean exit (under AARMD_TEST_VALGRIND=1 also: no leak, no invalid access) */
    int rc = hx_stop(p, 30000);
    cr_assert_eq(rc, 0, "exit code %d (seed %llu)", rc, (unsigned long long)seed);
}

/* The count in the mock's "N logits buffers handed out in all" line (logged when its model is freed). */
static long logits_given(const char *err)
{
    const char *given = strstr(err, " logits buffers handed out in all");
    cr_assert_not_null(given, "the mock did not report its logits buffers:\n%s", err);
    const char *num = given;
    while (num > err && num[-1] >= '0' && num[-1] <= '9')
        num--;
    return strtol(num, NULL, 10);
}

/* Eight concurrent jobs' ids with --sample-threads n (a step draws every job's token on n threads). */
static void sample_with_threads(const char *n, struct client *cl, int n_cl)
{
    struct hx_proc *p = hx_start("--backend-opt", "kv_blocks=256", "--backend-opt", "kv_block_tokens=8",
                                 "--max-jobs", "8", "--sample-threads", n, "--prefix-cache-blocks", "0", NULL);
    pthread_t th[8];
    for (int k = 0; k < n_cl; k++) {
        cl[k].port = hx_port(p);
        cl[k].k = k;
        cr_assert_eq(pthread_create(&th[k], NULL, client_main, &cl[k]), 0);
    }
    for (int k = 0; k < n_cl; k++)
        pthread_join(th[k], NULL);
    char *m = metrics_text(hx_port(p));
    cr_assert_gt(hx_metric(m, "worker_step_seconds_total", NULL), 0.0, "%s", m);
    cr_assert_gt(hx_metric(m, "worker_sample_seconds_total", NULL), 0.0, "%s", m);
    free(m);
    cr_assert_eq(hx_stop(p, 5000), 0);
    /* every logits buffer went back to the backend before its model (the mock logs a leak), and
     * the scheduler reused them: 8 jobs, 8 slots, so at most 8 were ever asked for */
    char *err = hx_stderr(p);
    cr_assert_null(strstr(err, "logits buffers not freed"), "%s", err);
    long n_given = logits_given(err);
    cr_assert(n_given >= 1 && n_given <= 8, "%ld logits buffers for 8 slots", n_given);
    free(err);
}

Test(batching, logits_buffers_are_reused_across_jobs)
{
    /* 24 jobs one after the other on 2 slots: the pool hands the same buffers out again */
    struct hx_proc *p = hx_start("--max-jobs", "2", NULL);
    struct result r;
    for (int k = 0; k < 24; k++) {
        char body[160];
        snprintf(body, sizeof body, "{\"job_id\":\"r%d\",\"prompt\":\"hello %d\",\"max_tokens\":3,\"seed\":%d}", k, k, k);
        run(hx_port(p), body, &r);
        cr_assert_str_eq(r.terminal, "end", "r%d: %s %s", k, r.code, r.message);
    }
    cr_assert_eq(hx_stop(p, 5000), 0);
    char *err = hx_stderr(p);
    long n_given = logits_given(err);
    cr_assert(n_given >= 1 && n_given <= 2, "%ld logits buffers for 24 jobs on 2 slots", n_given);
    free(err);
}

Test(batching, sampling_threads_keep_every_jobs_tokens)
{
    enum { N = 8 };
    static struct client one[N], four[N];
    sample_with_threads("1", one, N);
    sample_with_threads("4", four, N);
    for (int k = 0; k < N; k++) {
        cr_assert_str_eq(four[k].r.terminal, "end", "c%d: %s %s", k, four[k].r.code, four[k].r.message);
        cr_assert_eq(four[k].r.n_ids, one[k].r.n_ids, "c%d", k);
        cr_assert_eq(memcmp(four[k].r.ids, one[k].r.ids, sizeof(int64_t) * (size_t)one[k].r.n_ids), 0,
                     "c%d: other tokens with 4 sampling threads", k);
    }
}
