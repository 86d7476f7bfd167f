/*
 * cli_loadgen.c — `aarmd-cli loadgen`: N concurrent SSE clients on one
 * libevent loop post M /execute requests in total to a running worker and
 * report throughput, time to first token, inter-token latency and errors by
 * code. It measures a server; it does not start one.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "cli.h"

#define LG_MAX_CODES 32

struct lg_opts {
    const char *url;
    uint32_t clients, requests, max_tokens;
    const char *prompt;
    double temperature;
    bool temperature_set;
    uint32_t timeout_s;
    const char *token;          /* --api-token: Authorization: Bearer */
};

/* A growable array of latency samples in ms. */
struct lg_samples {
    float *v;
    size_t n, cap;
};

struct lg_code {
    char code[48];
    uint64_t n;
};

struct lg_client;

struct lg {
    struct lg_opts o;
    struct event_base *base;
    char host[256];
    int port;
    char *body_prefix;          /* the JSON body before the job id */
    uint32_t issued, finished, ok;
    uint64_t tokens;
    struct lg_samples ttft, itl;
    struct lg_code codes[LG_MAX_CODES];
    uint32_t n_codes;
    double t_start, t_end;
    bool oom;
    struct lg_client *clients;
};

struct lg_client {
    struct lg *g;
    uint32_t index;
    struct evhttp_connection *conn;
    struct evbuffer *acc;       /* body bytes not yet parsed into events */
    double t_sent, t_last_token;
    uint32_t tokens;
    char terminal[16];          /* "end" or "error" once seen */
    char error_code[48];
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void samples_add(struct lg *g, struct lg_samples *s, double v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        float *nv = realloc(s->v, cap * sizeof *nv);
        if (!nv) {
            g->oom = true;
            return;
        }
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = (float)v;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* p in [0,100]: nearest-rank percentile of sorted samples. */
static double percentile(const struct lg_samples *s, double p)
{
    if (!s->n)
        return 0;
    size_t k = (size_t)(p / 100.0 * (double)s->n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > s->n)
        k = s->n;
    return s->v[k - 1];
}

static void count_code(struct lg *g, const char *code)
{
    for (uint32_t i = 0; i < g->n_codes; i++)
        if (!strcmp(g->codes[i].code, code)) {
            g->codes[i].n++;
            return;
        }
    if (g->n_codes < LG_MAX_CODES) {
        snprintf(g->codes[g->n_codes].code, sizeof g->codes[g->n_codes].code, "%s", code);
        g->codes[g->n_codes++].n = 1;
    }
}

/* Parses the complete events in c->acc: counts tokens and records timing. */
static void parse_events(struct lg_client *c, double t)
{
    struct lg *g = c->g;
    for (;;) {
        struct evbuffer_ptr end = evbuffer_search(c->acc, "\n\n", 2, NULL);
        if (end.pos < 0)
            return;
        size_t len = (size_t)end.pos + 2;
        char stackbuf[1024];
        char *ev = len < sizeof stackbuf ? stackbuf : malloc(len + 1);
        if (!ev) {
            g->oom = true;
            evbuffer_drain(c->acc, len);
            continue;
        }
        evbuffer_remove(c->acc, ev, len);
        ev[len] = '\0';
        if (!strncmp(ev, "event: token\n", 13)) {
            if (c->tokens == 0)
                samples_add(g, &g->ttft, t - c->t_sent);
            else
                samples_add(g, &g->itl, t - c->t_last_token);
            c->t_last_token = t;
            c->tokens++;
        } else if (!strncmp(ev, "event: end\n", 11)) {
            snprintf(c->terminal, sizeof c->terminal, "end");
        } else if (!strncmp(ev, "event: error\n", 13)) {
            snprintf(c->terminal, sizeof c->terminal, "error");
            const char *data = strstr(ev, "\ndata: ");
            struct json_object *j = data ? json_tokener_parse(data + 7) : NULL;
            struct json_object *code;
            snprintf(c->error_code, sizeof c->error_code, "%s",
                     j && json_object_object_get_ex(j, "code", &code) ? json_object_get_string(code) : "ERROR");
            json_object_put(j);
        }
        if (ev != stackbuf)
            free(ev);
    }
}

static void chunk_cb(struct evhttp_request *req, void *arg)
{
    struct lg_client *c = arg;
    evbuffer_add_buffer(c->acc, evhttp_request_get_input_buffer(req));
    if (evhttp_request_get_response_code(req) == 200)
        parse_events(c, now_ms());
}

static void issue(struct lg_client *c);

static void done_cb(struct evhttp_request *req, void *arg)
{
    struct lg_client *c = arg;
    struct lg *g = c->g;
    int status = req ? evhttp_request_get_response_code(req) : 0;
    if (req)
        evbuffer_add_buffer(c->acc, evhttp_request_get_input_buffer(req));
    if (status == 200) {
        parse_events(c, now_ms());
        g->tokens += c->tokens;
        if (!strcmp(c->terminal, "end"))
            g->ok++;
        else if (!strcmp(c->terminal, "error"))
            count_code(g, c->error_code);
        else
            count_code(g, "STREAM_CUT");
    } else if (status == 0) {
        count_code(g, "CONNECTION");
    } else {
        /* a JSON error body: {"error":{"code":...}} */
        size_t len = evbuffer_get_length(c->acc);
        char *body = malloc(len + 1);
        char code[48];
        snprintf(code, sizeof code, "HTTP_%d", status);
        if (body) {
            evbuffer_remove(c->acc, body, len);
            body[len] = '\0';
            struct json_object *j = json_tokener_parse(body), *e, *k;
            if (j && json_object_object_get_ex(j, "error", &e) && json_object_object_get_ex(e, "code", &k))
                snprintf(code, sizeof code, "%s", json_object_get_string(k));
            json_object_put(j);
            free(body);
        }
        count_code(g, code);
    }
    evbuffer_drain(c->acc, evbuffer_get_length(c->acc));
    g->finished++;
    if (g->finished == g->o.requests) {
        g->t_end = now_ms();
        event_base_loopexit(g->base, NULL);
        return;
    }
    issue(c);   /* a failed connection reconnects on its next request */
}

static void issue(struct lg_client *c)
{
    struct lg *g = c->g;
    if (g->issued >= g->o.requests)
        return;
    uint32_t n = g->issued++;
    if (!c->conn) {
        c->conn = evhttp_connection_base_new(g->base, NULL, g->host, (unsigned short)g->port);
        if (!c->conn) {
            g->oom = true;
            done_cb(NULL, c);
            return;
        }
        evhttp_connection_set_timeout(c->conn, (int)g->o.timeout_s);
    }
    c->tokens = 0;
    c->terminal[0] = '\0';
    c->error_code[0] = '\0';
    struct evhttp_request *req = evhttp_request_new(done_cb, c);
    if (!req) {
        g->oom = true;
        done_cb(NULL, c);
        return;
    }
    evhttp_request_set_chunked_cb(req, chunk_cb);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char hostport[300];
    snprintf(hostport, sizeof hostport, "%s:%d", g->host, g->port);
    evhttp_add_header(h, "Host", hostport);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Accept", "text/event-stream");
    if (g->o.token) {
        char auth[4200];
        snprintf(auth, sizeof auth, "Bearer %s", g->o.token);
        evhttp_add_header(h, "Authorization", auth);
    }
    evbuffer_add_printf(evhttp_request_get_output_buffer(req), "%s\"lg-%ld-%" PRIu32 "\"}", g->body_prefix,
                        (long)getpid(), n);
    c->t_sent = now_ms();
    if (evhttp_make_request(c->conn, req, EVHTTP_REQ_POST, "/execute") != 0) {
        /* libevent freed req */
        done_cb(NULL, c);
    }
}

static int usage(FILE *f)
{
    fprintf(f,
            "usage: aarmd-cli loadgen --url http://HOST:PORT --clients N --requests M --max-tokens K\n"
            "                         [--prompt TEXT] [--temperature T] [--timeout S] [--api-token TOKEN]\n"
            "  N concurrent SSE clients post M /execute requests in total; prints tokens/s,\n"
            "  requests/s, time to first token and inter-token latency (p50, p99), errors by code.\n"
            "  Exit status: 0 all requests ended with `end`, 1 some failed, 2 usage error.\n");
    return f == stderr ? 2 : 0;
}

static int parse_u32(const char *flag, const char *v, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = v ? strtoull(v, &end, 10) : 0;
    if (!v || !*v || *v == '-' || errno || *end || x < min || x > max) {
        fprintf(stderr, "aarmd-cli loadgen: %s must be an integer in %u..%u (got '%s')\n", flag, min, max,
                v ? v : "");
        return -1;
    }
    *out = (uint32_t)x;
    return 0;
}

static int parse_args(int argc, char **argv, struct lg_opts *o)
{
    memset(o, 0, sizeof *o);
    o->prompt = "Hello";
    o->timeout_s = 60;
    bool have_clients = false, have_requests = false, have_max = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return 1;
        if (!v) {
            fprintf(stderr, "aarmd-cli loadgen: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "--url"))
            o->url = v;
        else if (!strcmp(a, "--clients")) {
            if (parse_u32(a, v, 1, 10000, &o->clients))
                return -1;
            have_clients = true;
        } else if (!strcmp(a, "--requests")) {
            if (parse_u32(a, v, 1, 100000000, &o->requests))
                return -1;
            have_requests = true;
        } else if (!strcmp(a, "--max-tokens")) {
            if (parse_u32(a, v, 1, 1000000, &o->max_tokens))
                return -1;
            have_max = true;
        } else if (!strcmp(a, "--timeout")) {
            if (parse_u32(a, v, 1, 86400, &o->timeout_s))
                return -1;
        } else if (!strcmp(a, "--prompt")) {
            o->prompt = v;
        } else if (!strcmp(a, "--api-token")) {
            o->token = v;
        } else if (!strcmp(a, "--temperature")) {
            char *end;
            errno = 0;
            o->temperature = strtod(v, &end);
            if (errno || *end || !*v || o->temperature < 0 || o->temperature > 2) {
                fprintf(stderr, "aarmd-cli loadgen: --temperature must be a number in 0..2 (got '%s')\n", v);
                return -1;
            }
            o->temperature_set = true;
        } else {
            fprintf(stderr, "aarmd-cli loadgen: unknown flag %s\n", a);
            return -1;
        }
    }
    if (!o->url || !have_clients || !have_requests || !have_max) {
        fprintf(stderr, "aarmd-cli loadgen: --url, --clients, --requests and --max-tokens are required\n");
        return -1;
    }
    return 0;
}

static void report(const struct lg *g)
{
    double secs = (g->t_end - g->t_start) / 1e3;
    if (secs <= 0)
        secs = 1e-9;
    printf("url           %s\n", g->o.url);
    printf("clients       %" PRIu32 "\n", g->o.clients);
    printf("requests      %" PRIu32 " (ok %" PRIu32 ", failed %" PRIu32 ")\n", g->finished, g->ok,
           g->finished - g->ok);
    printf("duration_s    %.3f\n", secs);
    printf("requests_s    %.1f\n", (double)g->finished / secs);
    printf("tokens        %" PRIu64 "\n", g->tokens);
    printf("tokens_s      %.1f\n", (double)g->tokens / secs);
    printf("ttft_ms       p50 %.3f p99 %.3f (n %zu)\n", percentile(&g->ttft, 50), percentile(&g->ttft, 99),
           g->ttft.n);
    printf("itl_ms        p50 %.3f p99 %.3f (n %zu)\n", percentile(&g->itl, 50), percentile(&g->itl, 99), g->itl.n);
    printf("errors       ");
    if (!g->n_codes)
        printf(" none");
    for (uint32_t i = 0; i < g->n_codes; i++)
        printf(" %s=%" PRIu64, g->codes[i].code, g->codes[i].n);
    printf("\n");
}

int aarmd_cli_loadgen(int argc, char **argv)
{
    struct lg g;
    memset(&g, 0, sizeof g);
    int rc = parse_args(argc, argv, &g.o);
    if (rc != 0)
        return usage(rc > 0 ? stdout : stderr);
    struct evhttp_uri *uri = evhttp_uri_parse(g.o.url);
    const char *scheme = uri ? evhttp_uri_get_scheme(uri) : NULL;
    const char *host = uri ? evhttp_uri_get_host(uri) : NULL;
    if (!uri || !scheme || strcmp(scheme, "http") || !host || !*host) {
        fprintf(stderr, "aarmd-cli loadgen: --url must be http://HOST[:PORT] (got '%s')\n", g.o.url);
        if (uri)
            evhttp_uri_free(uri);
        return usage(stderr);
    }
    snprintf(g.host, sizeof g.host, "%s", host);
    g.port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 80;
    evhttp_uri_free(uri);

    int ret = 1;
    bool ran = false;
    struct json_object *body = json_object_new_object();
    if (!body)
        goto out;
    json_object_object_add(body, "prompt", json_object_new_string(g.o.prompt));
    json_object_object_add(body, "max_tokens", json_object_new_int64(g.o.max_tokens));
    if (g.o.temperature_set)
        json_object_object_add(body, "temperature", json_object_new_double(g.o.temperature));
    const char *js = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
    size_t jl = strlen(js);
    g.body_prefix = malloc(jl + 16);
    if (!g.body_prefix)
        goto out;
    /* the job id goes last: {...,"job_id":"lg-PID-N"} */
    memcpy(g.body_prefix, js, jl - 1);
    snprintf(g.body_prefix + jl - 1, 16, "%s\"job_id\":", jl > 2 ? "," : "");

    g.base = event_base_new();
    g.clients = calloc(g.o.clients, sizeof *g.clients);
    if (!g.base || !g.clients)
        goto out;
    for (uint32_t i = 0; i < g.o.clients; i++) {
        g.clients[i].g = &g;
        g.clients[i].index = i;
        g.clients[i].acc = evbuffer_new();
        if (!g.clients[i].acc)
            goto out;
    }
    g.t_start = now_ms();
    for (uint32_t i = 0; i < g.o.clients && g.issued < g.o.requests; i++)
        issue(&g.clients[i]);
    if (g.finished < g.o.requests)
        event_base_dispatch(g.base);
    if (g.t_end == 0)
        g.t_end = now_ms();
    if (g.oom)
        fprintf(stderr, "aarmd-cli loadgen: out of memory (some samples were dropped)\n");
    qsort(g.ttft.v, g.ttft.n, sizeof *g.ttft.v, cmp_float);
    qsort(g.itl.v, g.itl.n, sizeof *g.itl.v, cmp_float);
    report(&g);
    ran = true;
    ret = g.ok == g.o.requests ? 0 : 1;

out:
    if (g.clients) {
        for (uint32_t i = 0; i < g.o.clients; i++) {
            if (g.clients[i].conn)
                evhttp_connection_free(g.clients[i].conn);
            if (g.clients[i].acc)
                evbuffer_free(g.clients[i].acc);
        }
        free(g.clients);
    }
    if (g.base)
        event_base_free(g.base);
    json_object_put(body);
    free(g.body_prefix);
    free(g.ttft.v);
    free(g.itl.v);
    if (!ran)
        fprintf(stderr, "aarmd-cli loadgen: setup failed (out of memory)\n");
    return ret;
}
