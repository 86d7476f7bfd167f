/* test_soak.c — many short jobs from several concurrent clients with random
 * cancels and disconnects: every stream that was read to its end has exactly
 * one terminal event, the worker stays up, nothing is left running or queued,
 * and the outcome counters add up to the number of jobs.
 * AARMD_SOAK_JOBS overrides the job count (default 1000). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "integration/harness.h"

static void fini(void) { hx_kill_all(); }

TestSuite(soak, .fini = fini, .timeout = 180);

#define N_CLIENTS 8

struct client {
    pthread_t thread;
    int id, port, n_jobs;
    unsigned seed;
    /* results */
    int completed, cancelled_seen, disconnected, ended_ok, failed;
    long tokens;
    char error[512];   /* first failure, if any */
};

static void fail(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct client *c, const char *fmt, ...)
{
    c->failed++;
    if (c->error[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
}

static bool is_terminal(const char *ev) { return !strcmp(ev, "end") || !strcmp(ev, "error"); }

/* One job: action 0 read to the end, 1 cancel after `after` tokens, 2 disconnect after `after` tokens. */
static void one_job(struct client *c, int n)
{
    char id[64], body[256];
    snprintf(id, sizeof id, "soak-%d-%d", c->id, n);
    int r = rand_r(&c->seed) % 100;
    int action = r < 70 ? 0 : r < 85 ? 1 : 2;
    int max_tokens = 1 + rand_r(&c->seed) % 16;
    int after = rand_r(&c->seed) % (max_tokens + 1);
    snprintf(body, sizeof body, "{\"job_id\":\"%s\",\"prompt\":\"soak %d\",\"max_tokens\":%d,\"seed\":%d}", id, n,
             max_tokens, n);
    struct hx_http *h = hx_http_open(c->port, "POST", "/execute", NULL, body, strlen(body));
    if (!h) {
        fail(c, "%s: no response", id);
        return;
    }
    if (hx_http_status(h) != 200) {
        fail(c, "%s: status %d %s", id, hx_http_status(h), hx_http_body(h));
        hx_http_close(h);
        return;
    }
    int n_events = 0, n_terminal = 0, tokens = 0;
    bool acted = false;
    char last[32] = "", code[32] = "";
    for (;;) {
        if (action && !acted && tokens >= after && n_events > 0) {
            acted = true;
            if (action == 2) {
                hx_http_close(h);
                c->disconnected++;
                return;
            }
            char path[128];
            snprintf(path, sizeof path, "/cancel/%s", id);
            struct hx_http *k = hx_http_open(c->port, "POST", path, NULL, NULL, 0);
            if (!k || hx_http_status(k) != 202)
                fail(c, "%s: cancel answered %d", id, k ? hx_http_status(k) : -1);
            hx_http_close(k);
        }
        struct hx_sse_event ev;
        int rr = hx_sse_next(h, &ev, 10000);
        if (rr == 0)
            break;
        if (rr < 0) {
            fail(c, "%s: stream stalled or broke after %d events (last %s)", id, n_events, last);
            hx_http_close(h);
            return;
        }
        if (n_events == 0 && strcmp(ev.event, "started"))
            fail(c, "%s: first event %s", id, ev.event);
        if (n_terminal)
            fail(c, "%s: %s after the terminal event", id, ev.event);
        if (!ev.json)
            fail(c, "%s: %s data is not JSON: %s", id, ev.event, ev.data);
        if (!strcmp(ev.event, "token"))
            tokens++;
        if (is_terminal(ev.event)) {
            n_terminal++;
            const char *k = hx_jstr(ev.json, "code");
            snprintf(code, sizeof code, "%s", k ? k : "");
        }
        snprintf(last, sizeof last, "%s", ev.event);
        n_events++;
        hx_sse_event_fini(&ev);
    }
    hx_http_close(h);
    c->tokens += tokens;
    if (n_terminal != 1) {
        fail(c, "%s: %d terminal events", id, n_terminal);
        return;
    }
    c->completed++;
    if (!strcmp(last, "end")) {
        c->ended_ok++;
        if (action == 0 && tokens != max_tokens)
            fail(c, "%s: %d tokens of %d", id, tokens, max_tokens);
    } else if (!strcmp(code, "CANCELLED")) {
        c->cancelled_seen++;
        if (action != 1)
            fail(c, "%s: CANCELLED without a cancel", id);
    } else {
        fail(c, "%s: ended with error %s", id, code);
    }
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    for (int n = 0; n < c->n_jobs; n++) {
        one_job(c, n);
        if (n % 50 == 7) {   /* now and then a cancel of an unknown id */
            struct hx_http *k = hx_http_open(c->port, "POST", "/cancel/nobody", NULL, NULL, 0);
            if (!k || hx_http_status(k) != 202)
                fail(c, "cancel of an unknown id answered %d", k ? hx_http_status(k) : -1);
            hx_http_close(k);
        }
    }
    return NULL;
}

Test(soak, many_jobs_with_cancels_and_disconnects)
{
    const char *env = getenv("AARMD_SOAK_JOBS");
    int total = env ? atoi(env) : 1000;
    cr_assert_gt(total, 0);
    /* AARMD_SOAK_PORT: drive a worker started by hand (e.g. under a debugger) instead */
    const char *ext = getenv("AARMD_SOAK_PORT");
    struct hx_proc *p = ext ? NULL
                            : hx_start("--max-jobs", "4", "--queue-depth", "64", "--backend-opt", "delay_ms=0", NULL);
    int port = ext ? atoi(ext) : hx_port(p);
    struct client cl[N_CLIENTS];
    memset(cl, 0, sizeof cl);
    double t0 = hx_now_ms();
    for (int i = 0; i < N_CLIENTS; i++) {
        cl[i].id = i;
        cl[i].port = port;
        cl[i].n_jobs = total / N_CLIENTS + (i < total % N_CLIENTS);
        cl[i].seed = 1234u + (unsigned)i;
        cr_assert_eq(pthread_create(&cl[i].thread, NULL, client_main, &cl[i]), 0);
    }
    int completed = 0, disconnected = 0, cancelled = 0, ended = 0, failed = 0;
    long tokens = 0;
    for (int i = 0; i < N_CLIENTS; i++) {
        pthread_join(cl[i].thread, NULL);
        completed += cl[i].completed;
        disconnected += cl[i].disconnected;
        cancelled += cl[i].cancelled_seen;
        ended += cl[i].ended_ok;
        failed += cl[i].failed;
        tokens += cl[i].tokens;
    }
    double secs = (hx_now_ms() - t0) / 1000.0;
    cr_log_info("soak: %d jobs in %.1f s: %d ended, %d cancelled, %d disconnected, %ld tokens", total, secs, ended,
                cancelled, disconnected, tokens);
    int died = p ? hx_wait_exit(p, 0) : -1;
    if (died != -1) {
        char *log = hx_stderr(p);
        size_t len = strlen(log);
        cr_assert_fail("the worker died during the soak (exit %d); stderr tail:\n%s", died,
                       log + (len > 3000 ? len - 3000 : 0));
    }
    for (int i = 0; i < N_CLIENTS; i++)
        cr_expect_eq(cl[i].failed, 0, "client %d: %d failures, first: %s", i, cl[i].failed, cl[i].error);
    cr_assert_eq(failed, 0);
    cr_assert_eq(completed + disconnected, total);
    cr_assert_gt(cancelled, 0, "no job was cancelled");
    cr_assert_gt(disconnected, 0, "no client disconnected");

    /* the worker is up and idle */
    if (p)
        cr_assert_eq(hx_wait_exit(p, 0), -1, "the worker died during the soak");
    cr_assert_eq(hx_wait_health(port, "jobs_running", 0, 3000), 0, "jobs still running after the soak");
    cr_assert_eq(hx_wait_health(port, "jobs_queued", 0, 3000), 0, "jobs still queued after the soak");
    /* every job counted exactly once by outcome */
    double sum = -1;
    char *text = NULL;
    for (double t1 = hx_now_ms(); hx_now_ms() - t1 < 3000;) {
        struct hx_http *m = hx_fetch(port, "GET", "/metrics", NULL, NULL);
        free(text);
        text = strdup(hx_http_body(m));
        hx_http_close(m);
        sum = hx_metric(text, "worker_requests_total", NULL);
        if (sum == total)
            break;
        usleep(50000);
    }
    if (ext) {
        free(text);
        return;   /* counters of a worker started by hand include earlier runs */
    }
    cr_assert_eq(sum, total, "worker_requests_total sums to %g for %d jobs:\n%s", sum, total, text);
    /* a client that left may have left after the job's last token: success or cancelled */
    double ok = hx_metric(text, "worker_requests_total", "outcome=\"success\"");
    double cx = hx_metric(text, "worker_requests_total", "outcome=\"cancelled\"");
    cr_assert(ok >= ended && ok <= ended + disconnected, "success %g, %d ended, %d left", ok, ended, disconnected);
    cr_assert(cx >= cancelled && cx <= cancelled + disconnected, "cancelled %g, %d seen, %d left", cx, cancelled,
              disconnected);
    cr_assert_eq(ok + cx, total, "success + cancelled = %g for %d jobs", ok + cx, total);
    free(text);
    /* and it still serves a job, then stops cleanly */
    struct hx_http *c = hx_execute(port, NULL, "{\"job_id\":\"after-soak\",\"prompt\":\"x\",\"max_tokens\":3}");
    struct hx_stream s;
    cr_assert_eq(hx_stream_collect(c, &s, 5000), 0);
    cr_assert_str_eq(s.names[s.n - 1], "end");
    hx_stream_fini(&s);
    hx_http_close(c);
    int rc = hx_stop(p, 10000);
    cr_assert_eq(rc, 0, "exit %d after the soak (9 = valgrind found errors)", rc);
}
