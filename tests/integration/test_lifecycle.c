/* test_lifecycle.c — the daemon's life as a process: POST /shutdown and
 * SIGTERM/SIGINT drains, the ready callback to a pool manager (body, timing,
 * retries, failure → exit 3), and startup failures (plugins, flags, model)
 * → exit 1 with the reason on stderr. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "integration/harness.h"

static void fini(void) { hx_kill_all(); }

TestSuite(lifecycle, .fini = fini, .timeout = 90);

/* Reads a stream to its terminal event; returns the data (caller puts), name into `name`. */
static struct json_object *terminal(struct hx_http *c, char *name, size_t cap, int timeout_ms)
{
    struct hx_stream s;
    cr_assert_eq(hx_stream_collect(c, &s, timeout_ms), 0, "the stream did not end (%d events)", s.n);
    cr_assert_geq(s.n, 1);
    snprintf(name, cap, "%s", s.names[s.n - 1]);
    struct json_object *t = json_object_get(s.data[s.n - 1]);
    hx_stream_fini(&s);
    return t;
}

static void wait_first_token(struct hx_http *c)
{
    cr_assert_eq(hx_http_status(c), 200, "%s", hx_http_body(c));
    for (;;) {
        struct hx_sse_event ev;
        cr_assert_eq(hx_sse_next(c, &ev, 5000), 1, "no token came");
        bool tok = !strcmp(ev.event, "token");
        hx_sse_event_fini(&ev);
        if (tok)
            return;
    }
}

/* ---- drains ---------------------------------------------------------------------------- */

Test(lifecycle, shutdown_lets_a_running_job_finish_then_exits_0)
{
    struct hx_proc *p = hx_start("--backend-opt", "delay_ms=10", NULL);
    int port = hx_port(p);
    /* ~1 s of work: finishes inside the 5 s grace */
    struct hx_http *job = hx_execute(port, NULL, "{\"job_id\":\"drain-ok\",\"prompt\":\"x\",\"max_tokens\":100,\"temperature\":0}");
    wait_first_token(job);
    struct hx_http *c = hx_fetch(port, "POST", "/shutdown", NULL, NULL);
    cr_assert_eq(hx_http_status(c), 202, "%s", hx_http_body(c));
    hx_http_close(c);
    double t0 = hx_now_ms();
    /* no new work while draining */
    c = hx_fetch(port, "POST", "/execute", NULL, "{\"job_id\":\"late\",\"prompt\":\"x\",\"max_tokens\":1}");
    cr_assert_eq(hx_http_status(c), 503, "%s", hx_http_body(c));
    struct json_object *e = json_object_object_get(hx_http_json(c), "error");
    cr_assert_str_eq(hx_jstr(e, "code"), "SHUTTING_DOWN", "%s", hx_http_body(c));
    hx_http_close(c);
    char name[32];
    struct json_object *t = terminal(job, name, sizeof name, 8000);
    cr_assert_str_eq(name, "end", "the running job did not finish: %s", json_object_to_json_string(t));
    cr_assert_eq(hx_jint(t, "tokens_out"), 100);
    json_object_put(t);
    hx_http_close(job);
    int rc = hx_wait_exit(p, 6000);
    cr_assert_eq(rc, 0, "exit %d after /shutdown", rc);
    cr_assert_lt(hx_now_ms() - t0, 6000.0);
    struct json_object *line = hx_wait_log(p, "shutdown", NULL, NULL, 0);
    cr_assert_not_null(line, "no shutdown log line");
    json_object_put(line);
}

static void signal_drain(int sig)
{
    struct hx_proc *p = hx_start("--backend-opt", "delay_ms=10", NULL);
    int port = hx_port(p);
    /* ~20 s of work: outlives the 5 s grace and gets cancelled */
    struct hx_http *job = hx_execute(port, NULL, "{\"job_id\":\"drain-long\",\"prompt\":\"x\",\"max_tokens\":2000,\"temperature\":0}");
    wait_first_token(job);
    double t0 = hx_now_ms();
    cr_assert_eq(kill(hx_pid(p), sig), 0);
    char name[32];
    struct json_object *t = terminal(job, name, sizeof name, 9000);
    double ended = hx_now_ms() - t0;
    cr_assert_str_eq(name, "error", "%s", json_object_to_json_string(t));
    cr_assert_str_eq(hx_jstr(t, "code"), "CANCELLED", "%s", json_object_to_json_string(t));
    cr_assert(ended > 3000 && ended < 7000, "the job was cancelled after %.0f ms, want the ~5 s grace", ended);
    json_object_put(t);
    hx_http_close(job);
    int rc = hx_wait_exit(p, 3000);
    cr_assert_eq(rc, 0, "exit %d after signal %d", rc, sig);
    cr_assert_lt(hx_now_ms() - t0, 7000.0, "exit took %.0f ms", hx_now_ms() - t0);
}

Test(lifecycle, sigterm_cancels_what_outlives_the_grace_and_exits_0) { signal_drain(SIGTERM); }

Test(lifecycle, sigint_idle_exits_0_at_once)
{
    struct hx_proc *p = hx_start(NULL);
    double t0 = hx_now_ms();
    kill(hx_pid(p), SIGINT);
    int rc = hx_wait_exit(p, 6000);
    cr_assert_eq(rc, 0);
    cr_assert_lt(hx_now_ms() - t0, 2000.0, "an idle worker took %.0f ms to stop", hx_now_ms() - t0);
}

/* ---- ready callback -------------------------------------------------------------------- */

static struct hx_proc *start_with_callback(struct hx_cbsrv *srv, const char *worker_id)
{
    static char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v2/internal/workers/ready", hx_cbsrv_port(srv));
    return hx_spawn(&(struct hx_spec){
        .args = {"--callback-url", url, "--worker-id", worker_id, "--backend-opt", "memory_bytes=777777", NULL},
        .wait_listen = true});
}

Test(lifecycle, ready_callback_body_and_timing)
{
    struct hx_cbsrv *srv = hx_cbsrv_start((int[]){200}, 1);
    char model[4096];
    hx_data_path("vocab/ggml-vocab-gpt-2.gguf", model, sizeof model);
    struct hx_proc *p = start_with_callback(srv, "worker-cb-1");
    cr_assert_eq(hx_cbsrv_wait(srv, 1, 5000), 1, "no ready callback");
    struct json_object *ready = hx_wait_log(p, "ready", NULL, NULL, 3000);
    cr_assert_not_null(ready, "no ready log line after the callback");
    json_object_put(ready);
    struct json_object *sent = hx_wait_log(p, "callback_sent", NULL, NULL, 0);
    cr_assert_not_null(sent, "no callback_sent log line");
    json_object_put(sent);

    char *ct = hx_cbsrv_content_type(srv, 0);
    cr_assert(ct && strstr(ct, "application/json"), "Content-Type %s", ct ? ct : "(none)");
    free(ct);
    char *body = hx_cbsrv_body(srv, 0);
    struct json_object *b = json_tokener_parse(body);
    cr_assert_not_null(b, "callback body is not JSON: %s", body);
    cr_assert_str_eq(hx_jstr(b, "worker_id"), "worker-cb-1", "%s", body);
    cr_assert_str_eq(hx_jstr(b, "model_ref"), model, "%s", body);
    cr_assert(hx_jhas(b, "vram_bytes") && hx_jhas(b, "memory_bytes"), "%s", body);
    cr_assert_eq(hx_jint(b, "vram_bytes"), 777777, "%s", body);
    cr_assert_eq(hx_jint(b, "memory_bytes"), hx_jint(b, "vram_bytes"), "%s", body);
    cr_assert_str_eq(hx_jstr(b, "memory_architecture"), "mock", "%s", body);
    cr_assert_str_eq(hx_jstr(b, "worker_type"), "mock", "%s", body);
    char uri[64];
    snprintf(uri, sizeof uri, "http://127.0.0.1:%d", hx_port(p));
    cr_assert_str_eq(hx_jstr(b, "uri"), uri, "%s", body);
    struct json_object *caps = json_object_object_get(b, "capabilities");
    cr_assert(caps && json_object_is_type(caps, json_type_array) && json_object_array_length(caps) == 1, "%s", body);
    cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(caps, 0)), "text-gen");
    json_object_put(b);
    free(body);
    /* /health answered while the callback was in flight: the worker serves before it reports ready */
    cr_assert_eq(hx_cbsrv_health(srv, 0), 200, "GET /health during the callback: %d", hx_cbsrv_health(srv, 0));
    /* exactly one callback, and the worker goes on serving */
    usleep(300000);
    cr_assert_eq(hx_cbsrv_wait(srv, 2, 0), 1, "more than one callback on success");
    struct json_object *h = hx_health(hx_port(p));
    cr_assert_str_eq(hx_jstr(h, "status"), "healthy");
    json_object_put(h);
    cr_assert_eq(hx_stop(p, 8000), 0);
    hx_cbsrv_free(srv);
}

Test(lifecycle, callback_5xx_is_retried_with_backoff)
{
    struct hx_cbsrv *srv = hx_cbsrv_start((int[]){503, 500, 204}, 3);
    struct hx_proc *p = start_with_callback(srv, "worker-cb-2");
    cr_assert_eq(hx_cbsrv_wait(srv, 3, 10000), 3, "the callback was not retried to success");
    struct json_object *ready = hx_wait_log(p, "ready", NULL, NULL, 3000);
    cr_assert_not_null(ready, "no ready log line after the third attempt");
    json_object_put(ready);
    double d1 = hx_cbsrv_time(srv, 1) - hx_cbsrv_time(srv, 0);
    double d2 = hx_cbsrv_time(srv, 2) - hx_cbsrv_time(srv, 1);
    cr_assert_geq(d1, 150.0, "retry after %.0f ms", d1);
    cr_assert_gt(d2, d1 * 1.3, "no backoff: %.0f ms then %.0f ms", d1, d2);
    char *b0 = hx_cbsrv_body(srv, 0), *b2 = hx_cbsrv_body(srv, 2);
    cr_assert_str_eq(b0, b2, "the retried body differs");
    free(b0);
    free(b2);
    usleep(300000);
    cr_assert_eq(hx_cbsrv_wait(srv, 4, 0), 3);
    cr_assert_eq(hx_wait_exit(p, 0), -1, "the worker exited after a successful callback");
    cr_assert_eq(hx_stop(p, 8000), 0);
    hx_cbsrv_free(srv);
}

Test(lifecycle, callback_4xx_exits_3_naming_url_and_status)
{
    struct hx_cbsrv *srv = hx_cbsrv_start((int[]){404}, 1);
    struct hx_proc *p = start_with_callback(srv, "worker-cb-3");
    int rc = hx_wait_exit(p, 6000);
    char *log = hx_stderr(p);
    cr_assert_eq(rc, 3, "exit %d after a 404 callback; stderr:\n%s", rc, log);
    cr_assert_eq(hx_cbsrv_wait(srv, 2, 0), 1, "a 4xx was retried");
    char url[128];
    snprintf(url, sizeof url, "127.0.0.1:%d/v2/internal/workers/ready", hx_cbsrv_port(srv));
    cr_assert(strstr(log, url), "stderr does not name the URL:\n%s", log);
    cr_assert(strstr(log, "404"), "stderr does not name the status:\n%s", log);
    cr_assert_null(strstr(log, "\"event\":\"ready\""), "ready logged although the callback failed");
    free(log);
    hx_cbsrv_free(srv);
}

Test(lifecycle, callback_test_mode_url_is_skipped)
{
    struct hx_proc *p = hx_start("--callback-url", "http://localhost:9999/ready", NULL);
    struct json_object *h = hx_health(hx_port(p));
    cr_assert_str_eq(hx_jstr(h, "status"), "healthy");
    json_object_put(h);
    cr_assert_eq(hx_count_log(p, "callback_sent"), 0);
    cr_assert_eq(hx_stop(p, 8000), 0);
}

/* ---- startup failures -------------------------------------------------------------------- */

/* Runs with `spec` to exit; asserts exit 1 and that stderr contains each needle. */
static void expect_startup_failure(const struct hx_spec *spec, const char *const *needles)
{
    char *log = NULL;
    int rc = hx_run_to_exit(spec, 10000, &log);
    cr_assert_eq(rc, 1, "exit %d, want 1; stderr:\n%s", rc, log);
    for (int i = 0; needles[i]; i++)
        cr_assert(strstr(log, needles[i]), "stderr lacks '%s':\n%s", needles[i], log);
    free(log);
}

Test(lifecycle, bad_plugins_exit_1)
{
    expect_startup_failure(&(struct hx_spec){.backend = "/nonexistent/backend_gone.so"},
                           (const char *[]){"/nonexistent/backend_gone.so", NULL});
    expect_startup_failure(&(struct hx_spec){.backend = "nosuchbackend"},
                           (const char *[]){"nosuchbackend", "not found", NULL});
    expect_startup_failure(&(struct hx_spec){.backend = "badmajor"},
                           (const char *[]){"backend_badmajor", "ABI major 2", NULL});
    expect_startup_failure(&(struct hx_spec){.backend = "nosym"},
                           (const char *[]){"backend_nosym", "aarmd_backend_entry", NULL});
    expect_startup_failure(&(struct hx_spec){.backend = "noreq"}, (const char *[]){"backend_noreq", NULL});
    expect_startup_failure(&(struct hx_spec){.backend = "null"}, (const char *[]){"backend_null", NULL});
    expect_startup_failure(&(struct hx_spec){.args = {"--backend-opt", "fail_load=1", NULL}},
                           (const char *[]){"fail_load", NULL});
    expect_startup_failure(&(struct hx_spec){.args = {"--backend-opt", "colour=red", NULL}},
                           (const char *[]){"unknown option 'colour'", NULL});
}

Test(lifecycle, bad_flags_exit_1)
{
    expect_startup_failure(&(struct hx_spec){.args = {"--port", "notaport", NULL}},
                           (const char *[]){"--port", "notaport", NULL});
    expect_startup_failure(&(struct hx_spec){.args = {"--port", "70000", NULL}}, (const char *[]){"--port", NULL});
    expect_startup_failure(&(struct hx_spec){.args = {"--no-such-flag", NULL}},
                           (const char *[]){"--no-such-flag", NULL});
    expect_startup_failure(&(struct hx_spec){.args = {"--max-jobs", "-3", NULL}},
                           (const char *[]){"--max-jobs", NULL});
    expect_startup_failure(&(struct hx_spec){.args = {"--log-format", "xml", NULL}},
                           (const char *[]){"--log-format", NULL});
    expect_startup_failure(&(struct hx_spec){.args = {"--callback-url", "ftp://x/y", NULL}},
                           (const char *[]){"--callback-url", NULL});
    expect_startup_failure(&(struct hx_spec){.args = {"--api-token-file", "/nonexistent/token", NULL}},
                           (const char *[]){"/nonexistent/token", NULL});
    /* no --model at all */
    expect_startup_failure(&(struct hx_spec){.raw = true, .args = {"--backend", "mock", "--port", "0", NULL}},
                           (const char *[]){"--model", NULL});
}

Test(lifecycle, bad_model_exits_1_naming_the_path)
{
    expect_startup_failure(&(struct hx_spec){.model = "/nonexistent/dir/model.gguf"},
                           (const char *[]){"/nonexistent/dir/model.gguf", NULL});
    char notgguf[4096];
    hx_data_path("vocab/NOTE.md", notgguf, sizeof notgguf);
    expect_startup_failure(&(struct hx_spec){.model = notgguf}, (const char *[]){notgguf, NULL});
}

Test(lifecycle, config_file_fills_what_the_command_line_leaves)
{
    char path[] = "/tmp/aarmd-conf-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char *conf = "# a test config\nworker-id = worker-from-file\nmax-tokens-limit = 7\nctx-size = 256\n";
    cr_assert_eq(write(fd, conf, strlen(conf)), (ssize_t)strlen(conf));
    close(fd);
    struct hx_proc *p = hx_start("--config", path, "--ctx-size", "300", NULL);
    struct json_object *h = hx_health(hx_port(p));
    cr_assert_str_eq(hx_jstr(h, "worker_id"), "worker-from-file");
    cr_assert_eq(hx_jint(h, "context_length"), 300, "the command line wins over the file");
    json_object_put(h);
    struct hx_http *c = hx_fetch(hx_port(p), "POST", "/execute", NULL, "{\"job_id\":\"c\",\"prompt\":\"x\",\"max_tokens\":8}");
    cr_assert_eq(hx_http_status(c), 400, "max-tokens-limit from the file: %s", hx_http_body(c));
    cr_assert(strstr(hx_http_body(c), "range(1..=7)"), "%s", hx_http_body(c));
    hx_http_close(c);
    cr_assert_eq(hx_stop(p, 8000), 0);
    /* a bad line names the file and line */
    fd = open(path, O_WRONLY | O_TRUNC);
    cr_assert_geq(fd, 0);
    const char *bad = "worker-id = w\nno-such-key = 1\n";
    cr_assert_eq(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    close(fd);
    char line2[4200];
    snprintf(line2, sizeof line2, "%s:2", path);
    expect_startup_failure(&(struct hx_spec){.args = {"--config", path, NULL}},
                           (const char *[]){line2, "no-such-key", NULL});
    unlink(path);
    expect_startup_failure(&(struct hx_spec){.args = {"--config", "/nonexistent/aarmd.conf", NULL}},
                           (const char *[]){"/nonexistent/aarmd.conf", NULL});
}

Test(lifecycle, port_in_use_exits_1)
{
    struct hx_proc *p = hx_start(NULL);
    char port[16];
    snprintf(port, sizeof port, "%d", hx_port(p));
    char *log = NULL;
    const char *argv_model = NULL;
    (void)argv_model;
    int rc = hx_run_to_exit(&(struct hx_spec){.args = {"--port", port, NULL}}, 10000, &log);
    /* the harness passes --port 0 first; the later flag wins */
    cr_assert_eq(rc, 1, "a second worker on port %s: exit %d; stderr:\n%s", port, rc, log);
    cr_assert(strstr(log, port), "stderr does not name the port:\n%s", log);
    free(log);
}
