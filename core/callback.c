/* callback.c — the ready callback POST with retries, on the event loop.
 * It knows nothing of engines or servers: main.c builds the body and reacts to the outcome. */
#include "config.h"
#include "callback.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>

#include "aarmd_backend.h"

struct aarmd_callback {
    struct event_base *base;
    struct evhttp_uri *uri;
    char *url;
    char *body;
    char host_hdr[300];
    char path[2048];
    struct aarmd_callback_opts o;
    struct evhttp_connection *conn;
    struct event *retry_ev;     /* backoff timer, then the "report the result" timer */
    uint64_t start_ms;
    uint32_t backoff_ms;
    int attempts;
    bool finished, ok;
    int status;
    char msg[512];
    aarmd_callback_done_fn done;
    void *user;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int aarmd_callback_check_url(const char *url, char *err, size_t errlen)
{
    struct evhttp_uri *u = evhttp_uri_parse(url);
    if (!u) {
        snprintf(err, errlen, "not a valid URL");
        return AARMD_EINVAL;
    }
    int rc = AARMD_OK;
    const char *scheme = evhttp_uri_get_scheme(u);
    const char *host = evhttp_uri_get_host(u);
    if (!scheme || strcasecmp(scheme, "http") != 0) {
        snprintf(err, errlen, "scheme must be http (got %s)", scheme ? scheme : "none");
        rc = AARMD_EINVAL;
    } else if (!host || !*host) {
        snprintf(err, errlen, "URL has no host");
        rc = AARMD_EINVAL;
    }
    evhttp_uri_free(u);
    return rc;
}

bool aarmd_callback_is_test_mode(const char *url)
{
    return url && strstr(url, "localhost:9999") != NULL;
}

char *aarmd_callback_body(const struct aarmd_ready_info *r)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "worker_id", json_object_new_string(r->worker_id ? r->worker_id : ""));
    json_object_object_add(o, "model_ref", json_object_new_string(r->model_ref ? r->model_ref : ""));
    json_object_object_add(o, "vram_bytes", json_object_new_uint64(r->memory_bytes));
    json_object_object_add(o, "memory_bytes", json_object_new_uint64(r->memory_bytes));
    json_object_object_add(o, "memory_architecture",
                           json_object_new_string(r->memory_architecture ? r->memory_architecture : "host"));
    json_object_object_add(o, "uri", json_object_new_string(r->uri ? r->uri : ""));
    json_object_object_add(o, "worker_type", json_object_new_string(r->worker_type ? r->worker_type : ""));
    struct json_object *caps = json_object_new_array();
    json_object_array_add(caps, json_object_new_string("text-gen"));
    json_object_object_add(o, "capabilities", caps);
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    char *out = s ? strdup(s) : NULL;
    json_object_put(o);
    return out;
}

static void attempt(struct aarmd_callback *c);

/* Reports the outcome from a fresh loop iteration, so `done` may free c. */
static void report_cb(evutil_socket_t fd, short what, void *arg)
{
    struct aarmd_callback *c = arg;
    c->done(c->user, c->ok, c->status, c->msg);
}

static void finish(struct aarmd_callback *c, bool ok, int status, const char *why)
{
    c->finished = true;
    c->ok = ok;
    c->status = status;
    if (ok)
        snprintf(c->msg, sizeof c->msg, "ready callback to %s answered %d after %d attempt(s)", c->url, status,
                 c->attempts);
    else
        snprintf(c->msg, sizeof c->msg, "ready callback to %s failed: %s (status %d, %d attempt(s))", c->url, why,
                 status, c->attempts);
    event_free(c->retry_ev);
    c->retry_ev = evtimer_new(c->base, report_cb, c);
    struct timeval tv = {0, 0};
    if (c->retry_ev)
        evtimer_add(c->retry_ev, &tv);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    attempt(arg);
}

static void retry_or_fail(struct aarmd_callback *c, int status, const char *why)
{
    uint64_t elapsed = now_ms() - c->start_ms;
    if (elapsed + c->backoff_ms >= c->o.deadline_ms) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s; gave up after %u ms", why, c->o.deadline_ms);
        finish(c, false, status, buf);
        return;
    }
    struct timeval tv = {(time_t)(c->backoff_ms / 1000), (suseconds_t)((c->backoff_ms % 1000) * 1000)};
    c->status = status;
    c->backoff_ms = c->backoff_ms * 2 > c->o.max_backoff_ms ? c->o.max_backoff_ms : c->backoff_ms * 2;
    evtimer_add(c->retry_ev, &tv);
}

static void response_cb(struct evhttp_request *req, void *arg)
{
    struct aarmd_callback *c = arg;
    if (c->finished)
        return;
    int status = req ? evhttp_request_get_response_code(req) : 0;
    if (status >= 200 && status < 300)
        finish(c, true, status, NULL);
    else if (status == 0)
        retry_or_fail(c, 0, "connection failed");
    else if (status >= 500)
        retry_or_fail(c, status, "server error");
    else
        finish(c, false, status, "rejected");
}

static void attempt(struct aarmd_callback *c)
{
    c->attempts++;
    if (!c->conn) {
        int port = evhttp_uri_get_port(c->uri);
        c->conn = evhttp_connection_base_new(c->base, NULL, evhttp_uri_get_host(c->uri),
                                             (unsigned short)(port > 0 ? port : 80));
        if (!c->conn) {
            retry_or_fail(c, 0, "cannot create a connection");
            return;
        }
        evhttp_connection_set_timeout(c->conn, (int)c->o.attempt_timeout_s);
        evhttp_connection_set_retries(c->conn, 0);
    }
    struct evhttp_request *req = evhttp_request_new(response_cb, c);
    if (!req) {
        retry_or_fail(c, 0, "out of memory");
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", c->host_hdr);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Connection", "close");
    evbuffer_add(evhttp_request_get_output_buffer(req), c->body, strlen(c->body));
    if (evhttp_make_request(c->conn, req, EVHTTP_REQ_POST, c->path) != 0)
        retry_or_fail(c, 0, "cannot send the request");   /* req was freed by libevent */
}

struct aarmd_callback *aarmd_callback_start(struct event_base *base, const char *url, const char *body,
                                            const struct aarmd_callback_opts *o, aarmd_callback_done_fn done,
                                            void *user, char *err, size_t errlen)
{
    if (aarmd_callback_check_url(url, err, errlen) != AARMD_OK)
        return NULL;
    struct aarmd_callback *c = calloc(1, sizeof *c);
    if (!c)
        goto nomem;
    c->base = base;
    c->done = done;
    c->user = user;
    c->o = (struct aarmd_callback_opts){30000, 250, 4000, 5};
    if (o) {
        if (o->deadline_ms)
            c->o.deadline_ms = o->deadline_ms;
        if (o->first_backoff_ms)
            c->o.first_backoff_ms = o->first_backoff_ms;
        if (o->max_backoff_ms)
            c->o.max_backoff_ms = o->max_backoff_ms;
        if (o->attempt_timeout_s)
            c->o.attempt_timeout_s = o->attempt_timeout_s;
    }
    c->backoff_ms = c->o.first_backoff_ms;
    c->uri = evhttp_uri_parse(url);
    c->url = strdup(url);
    c->body = strdup(body);
    c->retry_ev = evtimer_new(base, retry_cb, c);
    if (!c->uri || !c->url || !c->body || !c->retry_ev)
        goto nomem;
    const char *host = evhttp_uri_get_host(c->uri);
    int port = evhttp_uri_get_port(c->uri);
    bool v6 = strchr(host, ':') != NULL;
    if (port > 0)
        snprintf(c->host_hdr, sizeof c->host_hdr, "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
    else
        snprintf(c->host_hdr, sizeof c->host_hdr, "%s%s%s", v6 ? "[" : "", host, v6 ? "]" : "");
    const char *path = evhttp_uri_get_path(c->uri);
    const char *query = evhttp_uri_get_query(c->uri);
    snprintf(c->path, sizeof c->path, "%s%s%s", path && *path ? path : "/", query ? "?" : "", query ? query : "");
    c->start_ms = now_ms();
    attempt(c);
    return c;
nomem:
    snprintf(err, errlen, "out of memory");
    aarmd_callback_free(c);
    return NULL;
}

void aarmd_callback_free(struct aarmd_callback *c)
{
    if (!c)
        return;
    if (c->retry_ev)
        event_free(c->retry_ev);
    if (c->conn)
        evhttp_connection_free(c->conn);
    if (c->uri)
        evhttp_uri_free(c->uri);
    free(c->url);
    free(c->body);
    free(c);
}
