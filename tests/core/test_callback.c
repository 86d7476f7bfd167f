/* test_callback.c — the ready callback (core/callback.c) against a local evhttp
 * server on the same loop: body, 2xx success, retry on 5xx and refused
 * connections, no retry on 4xx, the deadline, URL checks. */
#include <criterion/criterion.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "aarmd_backend.h"
#include "callback.h"

static struct event_base *base;
static struct evhttp *http;
static int port;
static int codes[8], n_codes, n_hits;
static char last_body[2048], last_ctype[64], last_path[256];

struct outcome {
    bool called, ok;
    int status;
    char msg[512];
};

static void pm_cb(struct evhttp_request *req, void *arg)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n >= sizeof last_body)
        n = sizeof last_body - 1;
    evbuffer_copyout(in, last_body, n);
    last_body[n] = '\0';
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    snprintf(last_ctype, sizeof last_ctype, "%s", ct ? ct : "");
    snprintf(last_path, sizeof last_path, "%s", evhttp_request_get_uri(req));
    int code = codes[n_hits < n_codes ? n_hits : n_codes - 1];
    n_hits++;
    evhttp_send_reply(req, code, "X", NULL);
}

static void setup(void)
{
    base = event_base_new();
    http = evhttp_new(base);
    evhttp_set_gencb(http, pm_cb, NULL);
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    cr_assert_not_null(s);
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&a, &l);
    port = ntohs(a.sin_port);
    n_hits = 0;
}

static void teardown(void)
{
    evhttp_free(http);
    event_base_free(base);
}

TestSuite(callback, .init = setup, .fini = teardown);

static void done_cb(void *user, bool ok, int status, const char *msg)
{
    struct outcome *o = user;
    o->called = true;
    o->ok = ok;
    o->status = status;
    snprintf(o->msg, sizeof o->msg, "%s", msg);
    event_base_loopbreak(base);
}

static struct outcome run(const char *url, const struct aarmd_callback_opts *opts)
{
    struct outcome o = {0};
    char err[256];
    struct aarmd_callback *c = aarmd_callback_start(base, url, "{\"x\":1}", opts, done_cb, &o, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    struct timeval limit = {20, 0};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    aarmd_callback_free(c);
    cr_assert(o.called, "done was never called");
    return o;
}

static char url_buf[256];
static const char *url(const char *path)
{
    snprintf(url_buf, sizeof url_buf, "http://127.0.0.1:%d%s", port, path);
    return url_buf;
}

static const struct aarmd_callback_opts fast = {.deadline_ms = 3000, .first_backoff_ms = 10, .max_backoff_ms = 40};

Test(callback, success_posts_json)
{
    codes[0] = 204;
    n_codes = 1;
    struct outcome o = run(url("/v2/internal/workers/ready?a=b"), &fast);
    cr_assert(o.ok);
    cr_assert_eq(o.status, 204);
    cr_assert_eq(n_hits, 1);
    cr_assert_str_eq(last_path, "/v2/internal/workers/ready?a=b");
    cr_assert_str_eq(last_ctype, "application/json");
    cr_assert_str_eq(last_body, "{\"x\":1}");
}

Test(callback, retries_5xx_then_succeeds)
{
    codes[0] = 503;
    codes[1] = 500;
    codes[2] = 200;
    n_codes = 3;
    struct outcome o = run(url("/ready"), &fast);
    cr_assert(o.ok, "%s", o.msg);
    cr_assert_eq(n_hits, 3);
    cr_assert(strstr(o.msg, "after 3 attempt(s)"), "%s", o.msg);
}

Test(callback, a_4xx_fails_at_once)
{
    codes[0] = 404;
    n_codes = 1;
    struct outcome o = run(url("/ready"), &fast);
    cr_assert_not(o.ok);
    cr_assert_eq(o.status, 404);
    cr_assert_eq(n_hits, 1, "no retry after a 4xx");
    cr_assert(strstr(o.msg, url("/ready")), "the message names the URL: %s", o.msg);
    cr_assert(strstr(o.msg, "status 404"), "%s", o.msg);
}

Test(callback, deadline_ends_5xx_retries)
{
    codes[0] = 502;
    n_codes = 1;
    struct aarmd_callback_opts o2 = {.deadline_ms = 300, .first_backoff_ms = 20, .max_backoff_ms = 50};
    struct outcome o = run(url("/ready"), &o2);
    cr_assert_not(o.ok);
    cr_assert_eq(o.status, 502);
    cr_assert_gt(n_hits, 2, "retried");
    cr_assert(strstr(o.msg, "gave up after 300 ms"), "%s", o.msg);
}

Test(callback, refused_connection_is_retried_until_the_deadline)
{
    /* a port nobody listens on: bind, read the port, close */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/ready", ntohs(a.sin_port));
    close(fd);
    struct aarmd_callback_opts o2 = {.deadline_ms = 300, .first_backoff_ms = 20, .max_backoff_ms = 50};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct outcome o = run(u, &o2);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    cr_assert_not(o.ok);
    cr_assert_eq(o.status, 0);
    cr_assert(strstr(o.msg, "connection failed"), "%s", o.msg);
    cr_assert(ms > 150 && ms < 2000, "gave up after %.0f ms", ms);
}

Test(callback, url_checks)
{
    char err[256];
    cr_assert_eq(aarmd_callback_check_url("http://localhost:9200/v2/internal/workers/ready", err, sizeof err), AARMD_OK);
    cr_assert_eq(aarmd_callback_check_url("http://[::1]:9200/r", err, sizeof err), AARMD_OK);
    cr_assert_eq(aarmd_callback_check_url("https://pm/r", err, sizeof err), AARMD_EINVAL);
    cr_assert_str_eq(err, "scheme must be http (got https)");
    cr_assert_eq(aarmd_callback_check_url("localhost:9200/r", err, sizeof err), AARMD_EINVAL);
    cr_assert_eq(aarmd_callback_check_url("http:///r", err, sizeof err), AARMD_EINVAL);
    cr_assert_eq(aarmd_callback_check_url("not a url", err, sizeof err), AARMD_EINVAL);
    cr_assert(aarmd_callback_is_test_mode("http://localhost:9999/ready"));
    cr_assert_not(aarmd_callback_is_test_mode("http://localhost:9200/ready"));
    cr_assert_null(aarmd_callback_start(base, "ftp://x/", "{}", NULL, done_cb, NULL, err, sizeof err));
}

Test(callback, body_has_the_contract_fields)
{
    struct aarmd_ready_info r = {.worker_id = "worker-abc", .model_ref = "/abs/m.gguf", .memory_bytes = 123,
                                 .memory_architecture = "vram-only", .uri = "http://127.0.0.1:8001",
                                 .worker_type = "bespoke-cuda"};
    char *b = aarmd_callback_body(&r);
    cr_assert_str_eq(b, "{\"worker_id\":\"worker-abc\",\"model_ref\":\"/abs/m.gguf\",\"vram_bytes\":123,"
                        "\"memory_bytes\":123,\"memory_architecture\":\"vram-only\",\"uri\":\"http://127.0.0.1:8001\","
                        "\"worker_type\":\"bespoke-cuda\",\"capabilities\":[\"text-gen\"]}");
    free(b);
}
