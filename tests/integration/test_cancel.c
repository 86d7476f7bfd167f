/* test_cancel.c — ending jobs early against the real daemon: POST /cancel in
 * both forms (running and queued jobs, within 100 ms), unknown ids, a client
 * that goes away, and injected backend faults (oom_at_step, fail_at_step). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "integration/harness.h"

static void fini(void) { hx_kill_all(); }

TestSuite(cancel, .fini = fini, .timeout = 60);

/* Reads events until `name` arrives (5 s); returns its data (caller puts). */
static struct json_object *next_named(struct hx_http *c, const char *name)
{
    for (;;) {
        struct hx_sse_event ev;
        int r = hx_sse_next(c, &ev, 5000);
        cr_assert_eq(r, 1, "stream ended or stalled before '%s'", name);
        if (!strcmp(ev.event, name)) {
            struct json_object *j = ev.json;
            ev.json = NULL;
            hx_sse_event_fini(&ev);
            return j;
        }
        cr_assert(strcmp(ev.event, "end") && strcmp(ev.event, "error"), "terminal '%s' (%s) before '%s'", ev.event,
                  ev.data, name);
        hx_sse_event_fini(&ev);
    }
}

/* Reads to the terminal event; returns it (caller puts) and checks the stream then ends. */
static struct json_object *terminal(struct hx_http *c, char *name, size_t cap)
{
    for (;;) {
        struct hx_sse_event ev;
        cr_assert_eq(hx_sse_next(c, &ev, 5000), 1, "no terminal event");
        if (!strcmp(ev.event, "end") || !strcmp(ev.event, "error")) {
            snprintf(name, cap, "%s", ev.event);
            struct json_object *j = ev.json;
            ev.json = NULL;
            hx_sse_event_fini(&ev);
            struct hx_sse_event more;
            int r = hx_sse_next(c, &more, 2000);
            cr_assert_eq(r, 0, "the stream went on after %s (%s)", name, r == 1 ? more.event : "stalled");
            return j;
        }
        hx_sse_event_fini(&ev);
    }
}

static void expect_202(struct hx_http *c, const char *job_id)
{
    cr_assert_eq(hx_http_status(c), 202, "%s", hx_http_body(c));
    struct json_object *j = hx_http_json(c);
    cr_assert_not_null(j, "%s", hx_http_body(c));
    cr_assert_str_eq(hx_jstr(j, "status"), "cancelling");
    cr_assert_str_eq(hx_jstr(j, "job_id"), job_id);
}

/* Cancels job `id` with the given form and returns ms from request to the CANCELLED event. */
static double cancel_and_time(int port, struct hx_http *stream, const char *id, bool path_form)
{
    char path[300], body[300];
    snprintf(path, sizeof path, "/cancel/%s", id);
    snprintf(body, sizeof body, "{\"job_id\":\"%s\"}", id);
    double t0 = hx_now_ms();
    struct hx_http *c = path_form ? hx_fetch(port, "POST", path, NULL, NULL)
                                  : hx_fetch(port, "POST", "/cancel", NULL, body);
    expect_202(c, id);
    hx_http_close(c);
    char name[32];
    struct json_object *t = terminal(stream, name, sizeof name);
    double ms = hx_now_ms() - t0;
    cr_assert_str_eq(name, "error", "ended with %s: %s", name, json_object_to_json_string(t));
    cr_assert_str_eq(hx_jstr(t, "code"), "CANCELLED");
    cr_assert_not_null(hx_jstr(t, "message"));
    json_object_put(t);
    return ms;
}

Test(cancel, running_job_both_forms_within_100ms)
{
    struct hx_proc *p = hx_start("--backend-opt", "delay_ms=10", NULL);
    int port = hx_port(p);
    for (int form = 0; form < 2; form++) {
        char id[32], body[128];
        snprintf(id, sizeof id, "run-%d", form);
        snprintf(body, sizeof body, "{\"job_id\":\"%s\",\"prompt\":\"x\",\"max_tokens\":1000,\"temperature\":0}", id);
        struct hx_http *s = hx_execute(port, NULL, body);
        json_object_put(next_named(s, "started"));
        json_object_put(next_named(s, "token"));
        double ms = cancel_and_time(port, s, id, form == 1);
        cr_assert_lt(ms, 100.0, "%s form: CANCELLED after %.1f ms", form ? "path" : "body", ms);
        hx_http_close(s);
    }
    /* the worker serves on, nothing left running */
    cr_assert_eq(hx_wait_health(port, "jobs_running", 0, 2000), 0);
}

Test(cancel, queued_job_within_100ms)
{
    struct hx_proc *p = hx_start("--max-jobs", "1", "--queue-depth", "4", "--backend-opt", "delay_ms=10", NULL);
    int port = hx_port(p);
    struct hx_http *a = hx_execute(port, NULL, "{\"job_id\":\"qa\",\"prompt\":\"x\",\"max_tokens\":1000,\"temperature\":0}");
    json_object_put(next_named(a, "token"));
    struct hx_http *b = hx_execute(port, NULL, "{\"job_id\":\"qb\",\"prompt\":\"x\",\"max_tokens\":5}");
    json_object_put(next_named(b, "started"));   /* sent at once even while it waits */
    cr_assert_eq(hx_wait_health(port, "jobs_queued", 1, 2000), 1, "job qb is not queued");
    double ms = cancel_and_time(port, b, "qb", false);
    cr_assert_lt(ms, 100.0, "queued job CANCELLED after %.1f ms", ms);
    hx_http_close(b);
    ms = cancel_and_time(port, a, "qa", true);
    cr_assert_lt(ms, 100.0, "running job CANCELLED after %.1f ms", ms);
    hx_http_close(a);
}

Test(cancel, unknown_or_finished_id_is_202)
{
    struct hx_proc *p = hx_start(NULL);
    int port = hx_port(p);
    struct hx_http *c = hx_fetch(port, "POST", "/cancel", NULL, "{\"job_id\":\"never-seen\"}");
    expect_202(c, "never-seen");
    hx_http_close(c);
    c = hx_fetch(port, "POST", "/cancel/also-unknown", NULL, NULL);
    expect_202(c, "also-unknown");
    hx_http_close(c);
    /* a finished job */
    struct hx_http *s = hx_execute(port, NULL, "{\"job_id\":\"done\",\"prompt\":\"x\",\"max_tokens\":2}");
    char name[32];
    json_object_put(terminal(s, name, sizeof name));
    cr_assert_str_eq(name, "end");
    hx_http_close(s);
    c = hx_fetch(port, "POST", "/cancel/done", NULL, NULL);
    expect_202(c, "done");
    hx_http_close(c);
    /* bad bodies are still 400 */
    const char *bad[] = {"{}", "{\"job_id\":\"\"}", "{\"job_id\":7}", "nope"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = hx_fetch(port, "POST", "/cancel", NULL, bad[i]);
        cr_assert_eq(hx_http_status(c), 400, "%s: %d %s", bad[i], hx_http_status(c), hx_http_body(c));
        struct json_object *e = json_object_object_get(hx_http_json(c), "error");
        cr_assert_str_eq(hx_jstr(e, "code"), "INVALID_REQUEST");
        hx_http_close(c);
    }
}

Test(cancel, client_disconnect_cancels_the_job)
{
    struct hx_proc *p = hx_start("--backend-opt", "delay_ms=10", NULL);
    int port = hx_port(p);
    struct hx_http *m = hx_fetch(port, "GET", "/metrics", NULL, NULL);
    double before = hx_metric(hx_http_body(m), "worker_requests_total", "outcome=\"cancelled\"");
    hx_http_close(m);
    cr_assert_geq(before, 0, "no cancelled series in /metrics");

    struct hx_http *s = hx_execute(port, NULL, "{\"job_id\":\"gone\",\"prompt\":\"x\",\"max_tokens\":2000,\"temperature\":0}");
    json_object_put(next_named(s, "token"));
    /* /health is served from state cached every 100 ms: wait for it to see the job */
    cr_assert_eq(hx_wait_health(port, "jobs_running", 1, 2000), 1, "the job never showed as running");
    hx_http_close(s);
    double t0 = hx_now_ms();
    cr_assert_eq(hx_wait_health(port, "jobs_running", 0, 2000), 0, "the job still runs after its client left");
    double after = before;
    while (after == before && hx_now_ms() - t0 < 2000) {
        m = hx_fetch(port, "GET", "/metrics", NULL, NULL);
        after = hx_metric(hx_http_body(m), "worker_requests_total", "outcome=\"cancelled\"");
        hx_http_close(m);
    }
    cr_assert_eq(after, before + 1, "cancelled counter %g -> %g", before, after);
    struct json_object *line = hx_wait_log(p, "cancel", "job_id", "gone", 2000);
    cr_assert_not_null(line, "no cancel log line for the job");
    json_object_put(line);
}

Test(cancel, out_of_memory_is_retriable_and_the_worker_serves_on)
{
    struct hx_proc *p = hx_start("--backend-opt", "oom_at_step=3", NULL);
    int port = hx_port(p);
    struct hx_http *s = hx_execute(port, NULL, "{\"job_id\":\"oom\",\"prompt\":\"x\",\"max_tokens\":20}");
    json_object_put(next_named(s, "started"));
    char name[32];
    struct json_object *t = terminal(s, name, sizeof name);
    cr_assert_str_eq(name, "error", "%s", json_object_to_json_string(t));
    cr_assert_str_eq(hx_jstr(t, "code"), "OUT_OF_MEMORY");
    cr_assert(json_object_get_boolean(json_object_object_get(t, "retriable")), "OUT_OF_MEMORY must be retriable");
    json_object_put(t);
    hx_http_close(s);
    struct json_object *h = hx_health(port);
    cr_assert_str_eq(hx_jstr(h, "status"), "healthy");
    json_object_put(h);
    s = hx_execute(port, NULL, "{\"job_id\":\"after-oom\",\"prompt\":\"x\",\"max_tokens\":20,\"temperature\":0}");
    t = terminal(s, name, sizeof name);
    cr_assert_str_eq(name, "end", "the job after OOM failed: %s", json_object_to_json_string(t));
    cr_assert_eq(hx_jint(t, "tokens_out"), 20);
    json_object_put(t);
    hx_http_close(s);
}

Test(cancel, backend_failure_is_backend_error)
{
    struct hx_proc *p = hx_start("--backend-opt", "fail_at_step=3", NULL);
    int port = hx_port(p);
    struct hx_http *s = hx_execute(port, NULL, "{\"job_id\":\"fail\",\"prompt\":\"x\",\"max_tokens\":20}");
    json_object_put(next_named(s, "started"));
    char name[32];
    struct json_object *t = terminal(s, name, sizeof name);
    cr_assert_str_eq(name, "error", "%s", json_object_to_json_string(t));
    cr_assert_str_eq(hx_jstr(t, "code"), "BACKEND_ERROR");
    cr_assert_not_null(hx_jstr(t, "message"));
    json_object_put(t);
    hx_http_close(s);
    struct json_object *line = hx_wait_log(p, "execute_end", "job_id", "fail", 2000);
    cr_assert_not_null(line, "no execute_end log line for the job");
    cr_assert_str_eq(hx_jstr(line, "stop_reason"), "BACKEND_ERROR");
    json_object_put(line);
    /* a device error is fatal: /health turns 503 unhealthy (within its 100 ms cache) */
    double t0 = hx_now_ms();
    int status = 0;
    struct json_object *h = NULL;
    while (status != 503 && hx_now_ms() - t0 < 2000) {
        struct hx_http *c = hx_fetch(port, "GET", "/health", NULL, NULL);
        status = hx_http_status(c);
        json_object_put(h);
        h = json_tokener_parse(hx_http_body(c));
        hx_http_close(c);
    }
    cr_assert_eq(status, 503, "/health after a device error: %d", status);
    cr_assert_str_eq(hx_jstr(h, "status"), "unhealthy");
    json_object_put(h);
}
