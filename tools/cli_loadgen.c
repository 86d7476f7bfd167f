/*
 * cli_loadgen.c — `aarmd-cli loadgen`: SSE clients on one libevent loop post
 * /execute requests to a running worker, either closed loop (N clients, M
 * requests in total, or back to back for S seconds) or open loop (Poisson
 * arrivals at R requests/s for S seconds), and report throughput, time to
 * first token, inter-token latency and errors by code, as text or one JSON
 * object. It measures a server; it does not start one. How each number is
 * counted: usage() and docs/PERFORMANCE.md ("How loadgen counts").
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
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
#define LG_MAX_PROMPT_TOKENS 8000u     /* --prompt-tokens: 4 chars each stays under 32768 */
#define LG_OPEN_MAX_CONNS 512u         /* open loop: default --clients (connections at once; fds) */

struct lg_opts {
    const char *url;
    uint32_t clients, requests, max_tokens;
    bool have_clients, have_requests;
    double rate;                /* open loop when > 0: requests per second */
    double duration_s;          /* open loop: arrivals stop after this; closed loop: no request is sent after it */
    double settle_s;            /* timed closed loop: sustained_tokens_s counts tokens from here to duration_s */
    bool have_duration, have_settle;
    double ramp_s;              /* closed loop: client i starts at i * ramp_s / clients */
    bool have_ramp;
    uint32_t warmup;            /* the first `warmup` finished requests are left out */
    uint64_t seed;
    bool have_seed;
    const char *prompt;
    const char *prompt_file;
    uint32_t prompt_tokens;
    double temperature;
    bool temperature_set;
    uint32_t timeout_s;
    const char *token;          /* --api-token: Authorization: Bearer */
    bool json;
};

/* A growable array of latency samples in ms. */
struct lg_samples {
    float *v;
    size_t n, cap;
};

/* Counts by name: error codes, stop reasons. */
struct lg_count {
    char name[48];
    uint64_t n;
};

struct lg_tally {
    struct lg_count v[LG_MAX_CODES];
    uint32_t n;
};

/* One successful request's span from its first token to its last, ms. */
struct lg_span {
    double first, last;
};

struct lg_client;

struct lg {
    struct lg_opts o;
    bool open_loop;
    bool timed;                 /* closed loop for --duration seconds */
    double t_stop;              /* timed: no request is sent from here (ms, now_ms() clock) */
    double win_lo, win_hi;      /* timed: tokens read in [win_lo, win_hi) are sustained_tokens */
    uint64_t win_tokens;
    struct event_base *base;
    char host[256];
    int port;
    char **bodies;              /* per prompt: the JSON body before the job id */
    size_t n_bodies;
    uint32_t issued, finished, ok;
    uint32_t ramp_pending;      /* closed loop: clients whose first request waits for --ramp (each holds one) */
    uint32_t warm, warm_ok;     /* finished requests left out as warmup, and how many of them ended */
    uint64_t tokens;
    uint64_t prompt_tokens, n_started;
    struct lg_samples ttft, itl;
    struct lg_samples stream_rate;  /* per successful request: (tokens - 1) / (t_last - t_first), tokens/s */
    struct lg_span *spans;      /* successful measured requests with a token */
    size_t n_spans, cap_spans;
    uint64_t decode_tokens;     /* sum of (tokens - 1) over those */
    double t_first_measured;    /* earliest send time of a measured request; HUGE_VAL before one */
    struct lg_tally errors;     /* failed measured requests by code */
    struct lg_tally stops;      /* successful measured requests by the end event's stop_reason */
    double t_start, t_end;
    bool oom;
    struct lg_client *clients;
    uint32_t n_clients;         /* slots in clients */
    uint32_t *idle;             /* open loop: stack of idle client indices */
    uint32_t n_idle;
    /* open loop */
    struct event *timer;
    uint64_t rng;
    double next_arrival;        /* ms, now_ms() clock */
    bool arrivals_done;
    double *queue;              /* arrival times waiting for a free client */
    size_t q_head, q_len, q_cap;
    uint32_t in_flight;
};

struct lg_client {
    struct lg *g;
    uint32_t index;
    struct evhttp_connection *conn;
    struct evbuffer *acc;       /* body bytes not yet parsed into events */
    struct event *start_ev;     /* closed loop with --ramp: sends the first request */
    double t_sent, t_first_token, t_last_token;
    uint32_t tokens;
    int64_t tokens_in;          /* from `started`, -1 before it */
    double ttft;                /* ms; valid once tokens > 0 */
    struct lg_samples itl;      /* this request's inter-token gaps, merged when it counts */
    char terminal[16];          /* "end" or "error" once seen */
    char error_code[48];
    char stop_reason[48];       /* from `end` */
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Room for `more` samples in s; false (and g->oom) when there is none. */
static bool samples_reserve(struct lg *g, struct lg_samples *s, size_t more)
{
    if (s->n + more <= s->cap)
        return true;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < s->n + more)
        cap *= 2;
    float *nv = realloc(s->v, cap * sizeof *nv);
    if (!nv) {
        g->oom = true;
        return false;
    }
    s->v = nv;
    s->cap = cap;
    return true;
}

static void samples_add(struct lg *g, struct lg_samples *s, double v)
{
    if (samples_reserve(g, s, 1))
        s->v[s->n++] = (float)v;
}

static void samples_append(struct lg *g, struct lg_samples *dst, const struct lg_samples *src)
{
    if (src->n && samples_reserve(g, dst, src->n)) {
        memcpy(dst->v + dst->n, src->v, src->n * sizeof *src->v);
        dst->n += src->n;
    }
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

static void tally(struct lg_tally *t, const char *name)
{
    for (uint32_t i = 0; i < t->n; i++)
        if (!strcmp(t->v[i].name, name)) {
            t->v[i].n++;
            return;
        }
    if (t->n < LG_MAX_CODES) {
        snprintf(t->v[t->n].name, sizeof t->v[t->n].name, "%s", name);
        t->v[t->n++].n = 1;
    }
}

/* ---- arrivals (open loop) ------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Exponential inter-arrival time in ms for `rate` requests/s. */
static double next_gap_ms(struct lg *g)
{
    double u = (double)((splitmix64(&g->rng) >> 11) + 1) * (1.0 / 9007199254740992.0);   /* (0, 1] */
    return -log(u) / g->o.rate * 1e3;
}

static int queue_push(struct lg *g, double t)
{
    if (g->q_len == g->q_cap) {
        size_t cap = g->q_cap ? g->q_cap * 2 : 256;
        double *nq = malloc(cap * sizeof *nq);
        if (!nq)
            return -1;
        for (size_t i = 0; i < g->q_len; i++)
            nq[i] = g->queue[(g->q_head + i) % g->q_cap];
        free(g->queue);
        g->queue = nq;
        g->q_cap = cap;
        g->q_head = 0;
    }
    g->queue[(g->q_head + g->q_len++) % g->q_cap] = t;
    return 0;
}

static double queue_pop(struct lg *g)
{
    double t = g->queue[g->q_head];
    g->q_head = (g->q_head + 1) % g->q_cap;
    g->q_len--;
    return t;
}

/* ---- one request ------------------------------------------------------------ */

/* The JSON of an SSE event's data line, or NULL. */
static struct json_object *event_data(const char *ev)
{
    const char *data = strstr(ev, "\ndata: ");
    return data ? json_tokener_parse(data + 7) : NULL;
}

/* The string field key of an event's data into out, else dflt. */
static void event_string(const char *ev, const char *key, const char *dflt, char *out, size_t cap)
{
    struct json_object *j = event_data(ev), *v;
    snprintf(out, cap, "%s", j && json_object_object_get_ex(j, key, &v) ? json_object_get_string(v) : dflt);
    json_object_put(j);
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
            if (c->tokens == 0) {
                c->ttft = t - c->t_sent;
                c->t_first_token = t;
            } else {
                samples_add(g, &c->itl, t - c->t_last_token);
            }
            c->t_last_token = t;
            c->tokens++;
            if (t >= g->win_lo && t < g->win_hi)
                g->win_tokens++;
        } else if (!strncmp(ev, "event: started\n", 15)) {
            struct json_object *j = event_data(ev), *n;
            if (j && json_object_object_get_ex(j, "tokens_in", &n))
                c->tokens_in = json_object_get_int64(n);
            json_object_put(j);
        } else if (!strncmp(ev, "event: end\n", 11)) {
            snprintf(c->terminal, sizeof c->terminal, "end");
            event_string(ev, "stop_reason", "UNKNOWN", c->stop_reason, sizeof c->stop_reason);
        } else if (!strncmp(ev, "event: error\n", 13)) {
            snprintf(c->terminal, sizeof c->terminal, "error");
            event_string(ev, "code", "ERROR", c->error_code, sizeof c->error_code);
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

static void issue(struct lg_client *c, double t_arrival);

static void finish_run(struct lg *g)
{
    g->t_end = now_ms();
    event_base_loopexit(g->base, NULL);
}

/* Open loop: give client c the next queued arrival, or park it. */
static void open_next(struct lg_client *c)
{
    struct lg *g = c->g;
    if (g->q_len) {
        issue(c, queue_pop(g));
        return;
    }
    g->idle[g->n_idle++] = c->index;
    if (g->arrivals_done && g->in_flight == 0)
        finish_run(g);
}

/* Adds one finished request to the statistics; the first --warmup ones
 * only to the warmup count. `code` is NULL when it ended with `end`. */
static void record(struct lg_client *c, const char *code)
{
    struct lg *g = c->g;
    if (g->warm < g->o.warmup) {
        g->warm++;
        g->warm_ok += code == NULL;
        return;
    }
    if (c->t_sent < g->t_first_measured)
        g->t_first_measured = c->t_sent;
    g->tokens += c->tokens;
    if (c->tokens_in >= 0) {
        g->prompt_tokens += (uint64_t)c->tokens_in;
        g->n_started++;
    }
    if (c->tokens) {
        samples_add(g, &g->ttft, c->ttft);
        samples_append(g, &g->itl, &c->itl);
    }
    if (code) {
        tally(&g->errors, code);
        return;
    }
    g->ok++;
    tally(&g->stops, c->stop_reason);
    if (c->tokens == 0)
        return;
    double span_ms = c->t_last_token - c->t_first_token;
    if (c->tokens > 1 && span_ms > 0)
        samples_add(g, &g->stream_rate, (double)(c->tokens - 1) / (span_ms / 1e3));
    if (g->n_spans == g->cap_spans) {
        size_t cap = g->cap_spans ? g->cap_spans * 2 : 256;
        struct lg_span *ns = realloc(g->spans, cap * sizeof *ns);
        if (!ns) {
            g->oom = true;
            return;
        }
        g->spans = ns;
        g->cap_spans = cap;
    }
    g->spans[g->n_spans++] = (struct lg_span){c->t_first_token, c->t_last_token};
    g->decode_tokens += c->tokens - 1;
}

static void done_cb(struct evhttp_request *req, void *arg)
{
    struct lg_client *c = arg;
    struct lg *g = c->g;
    int status = req ? evhttp_request_get_response_code(req) : 0;
    char code[48];
    if (req)
        evbuffer_add_buffer(c->acc, evhttp_request_get_input_buffer(req));
    g->finished++;
    if (status == 200) {
        parse_events(c, now_ms());
        if (!strcmp(c->terminal, "end"))
            record(c, NULL);
        else
            record(c, !strcmp(c->terminal, "error") ? c->error_code : "STREAM_CUT");
    } else if (status == 0) {
        c->tokens = 0;      /* a cut connection: its tokens are not counted */
        record(c, "CONNECTION");
    } else {
        /* a JSON error body: {"error":{"code":...}} */
        size_t len = evbuffer_get_length(c->acc);
        char *body = malloc(len + 1);
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
        c->tokens = 0;      /* no stream: its samples are not this request's */
        record(c, code);
    }
    evbuffer_drain(c->acc, evbuffer_get_length(c->acc));
    g->in_flight--;
    if (g->open_loop) {
        open_next(c);
        return;
    }
    if (g->timed) {   /* back to back until t_stop (and --requests, when given); then drain */
        double t = now_ms();
        if (t < g->t_stop && !g->oom && (!g->o.have_requests || g->issued + g->ramp_pending < g->o.requests))
            issue(c, t);
        else if (g->in_flight == 0 && g->ramp_pending == 0)
            finish_run(g);
        return;
    }
    if (g->finished == g->o.requests) {
        finish_run(g);
        return;
    }
    if (g->issued + g->ramp_pending < g->o.requests)
        issue(c, now_ms());   /* a failed connection reconnects on its next request */
}

/* Sends request number g->issued on c; TTFT counts from t_arrival. */
static void issue(struct lg_client *c, double t_arrival)
{
    struct lg *g = c->g;
    uint32_t n = g->issued++;
    g->in_flight++;
    c->tokens = 0;
    c->tokens_in = -1;
    c->itl.n = 0;
    c->terminal[0] = '\0';
    c->error_code[0] = '\0';
    c->stop_reason[0] = '\0';
    c->t_sent = t_arrival;
    if (!c->conn) {
        c->conn = evhttp_connection_base_new(g->base, NULL, g->host, (unsigned short)g->port);
        if (!c->conn) {
            g->oom = true;
            done_cb(NULL, c);
            return;
        }
        evhttp_connection_set_timeout(c->conn, (int)g->o.timeout_s);
    }
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
    evbuffer_add_printf(evhttp_request_get_output_buffer(req), "%s\"lg-%ld-%" PRIu32 "\"}",
                        g->bodies[n % g->n_bodies], (long)getpid(), n);
    if (evhttp_make_request(c->conn, req, EVHTTP_REQ_POST, "/execute") != 0) {
        /* libevent freed req */
        done_cb(NULL, c);
    }
}

/* Open loop: issue every arrival that is due, then wait for the next one. */
static void arrival_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct lg *g = arg;
    double t = now_ms(), t_stop = g->t_start + g->o.duration_s * 1e3;
    while (!g->arrivals_done && g->next_arrival <= t + 0.05) {
        if (g->next_arrival >= t_stop || (g->o.have_requests && g->issued + g->q_len >= g->o.requests)) {
            g->arrivals_done = true;
            break;
        }
        if (queue_push(g, g->next_arrival)) {
            g->oom = true;
            g->arrivals_done = true;
            break;
        }
        g->next_arrival += next_gap_ms(g);
    }
    if (!g->arrivals_done && g->next_arrival >= t_stop)
        g->arrivals_done = true;
    while (g->q_len && g->n_idle)
        issue(&g->clients[g->idle[--g->n_idle]], queue_pop(g));
    if (!g->arrivals_done) {
        double wait = g->next_arrival - now_ms();
        if (wait < 0)
            wait = 0;
        struct timeval tv = {.tv_sec = (time_t)(wait / 1e3), .tv_usec = (suseconds_t)(fmod(wait, 1e3) * 1e3)};
        evtimer_add(g->timer, &tv);
    } else if (g->in_flight == 0 && g->q_len == 0) {
        finish_run(g);
    }
}

/* Closed loop with --ramp: client c's first request, held for it since the
 * start so that the clients started before it cannot take them all. */
static void ramp_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct lg_client *c = arg;
    struct lg *g = c->g;
    g->ramp_pending--;
    if (g->timed && now_ms() >= g->t_stop) {   /* a loaded event loop ran late: the run is over */
        if (g->in_flight == 0 && g->ramp_pending == 0)
            finish_run(g);
        return;
    }
    issue(c, now_ms());
}

/* Closed loop: client i's first request at i * ramp / clients after the
 * start (n_clients <= requests, so each client has one). */
static int start_closed(struct lg *g)
{
    for (uint32_t i = 0; i < g->n_clients; i++) {
        double at_ms = g->o.ramp_s * 1e3 * (double)i / (double)g->n_clients;
        if (at_ms <= 0) {
            issue(&g->clients[i], now_ms());
            continue;
        }
        struct lg_client *c = &g->clients[i];
        c->start_ev = evtimer_new(g->base, ramp_cb, c);
        struct timeval tv = {.tv_sec = (time_t)(at_ms / 1e3), .tv_usec = (suseconds_t)(fmod(at_ms, 1e3) * 1e3)};
        if (!c->start_ev || evtimer_add(c->start_ev, &tv))
            return -1;
        g->ramp_pending++;
    }
    return 0;
}

/* ---- options ---------------------------------------------------------------- */

static int usage(FILE *f)
{
    fprintf(f,
            "usage: aarmd-cli loadgen --url http://HOST:PORT --max-tokens K\n"
            "                         (--clients N (--requests M | --duration S [--settle W]) [--ramp S] |\n"
            "                          --rate R --duration S [--seed X])\n"
            "                         [--prompt TEXT | --prompt-file FILE | --prompt-tokens T] [--warmup W]\n"
            "                         [--temperature T] [--timeout S] [--api-token TOKEN] [--json]\n"
            "  Closed loop: N concurrent SSE clients post M /execute requests in total;\n"
            "  --ramp S: client i sends its first request at i*S/N seconds (default 0: all at once).\n"
            "  Timed closed loop (--clients N --duration S): each client sends its next request as\n"
            "  soon as one ends, until S seconds from the start (--requests M, if given, caps the\n"
            "  total); requests in flight then finish. sustained_tokens_s: tokens read from W\n"
            "  seconds (--settle, default S/4) to S, over S - W: the rate while N streams are\n"
            "  kept busy, prefill included.\n"
            "  Open loop (--rate): Poisson arrivals at R requests/s (seeded by --seed, default 1)\n"
            "  for S seconds, then waits for the requests in flight; --clients caps the\n"
            "  connections at once (default %u; later arrivals queue and their time to first\n"
            "  token counts from their arrival) and --requests the arrivals.\n"
            "  --prompt-file: one prompt per line (\\n, \\t and \\\\ escapes; blank lines skipped);\n"
            "  requests cycle through them. --prompt-tokens: a synthetic prompt of about T tokens.\n"
            "  --warmup W: the first W requests to finish are left out of every number below\n"
            "  (reported as warmup; durations then start at the earliest send of a measured request).\n"
            "  Prints tokens/s, requests/s, time to first token and inter-token latency\n"
            "  (p50, p90, p99, max), successful requests by stop reason (MAX_TOKENS, EOS,\n"
            "  STOP_SEQUENCE: an EOS ends a stream before K tokens) and failed ones by error\n"
            "  code; --json prints one JSON object instead.\n"
            "  tokens_s: all streamed tokens / wall time (prefill included).\n"
            "  decode_tokens_s: sum over successful requests of (tokens - 1), divided by the\n"
            "  length of the union of their [first token, last token] intervals: the time some\n"
            "  stream was decoding (comparable to llama-batched-bench's S_TG).\n"
            "  per_stream_decode_tokens_s p50: median of each request's (tokens - 1) /\n"
            "  (t_last - t_first), over requests with 2+ tokens that did not arrive all at once.\n"
            "  Exit status: 0 all requests ended with `end`, 1 some failed, 2 usage error.\n",
            LG_OPEN_MAX_CONNS);
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

/* A finite number in (lo, hi] (or [lo, hi] when lo_ok). */
static int parse_num(const char *flag, const char *v, double lo, bool lo_ok, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || !*v || *end || !isfinite(x) || (lo_ok ? x < lo : x <= lo) || x > hi) {
        fprintf(stderr, "aarmd-cli loadgen: %s must be a number in %s%g..%g (got '%s')\n", flag, lo_ok ? "" : ">",
                lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv, struct lg_opts *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_s = 60;
    o->seed = 1;
    bool have_max = false;
    int n_prompt_flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return 1;
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
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
            o->have_clients = true;
        } else if (!strcmp(a, "--requests")) {
            if (parse_u32(a, v, 1, 100000000, &o->requests))
                return -1;
            o->have_requests = true;
        } else if (!strcmp(a, "--max-tokens")) {
            if (parse_u32(a, v, 1, 1000000, &o->max_tokens))
                return -1;
            have_max = true;
        } else if (!strcmp(a, "--timeout")) {
            if (parse_u32(a, v, 1, 86400, &o->timeout_s))
                return -1;
        } else if (!strcmp(a, "--prompt")) {
            o->prompt = v;
            n_prompt_flags++;
        } else if (!strcmp(a, "--prompt-file")) {
            o->prompt_file = v;
            n_prompt_flags++;
        } else if (!strcmp(a, "--prompt-tokens")) {
            if (parse_u32(a, v, 1, LG_MAX_PROMPT_TOKENS, &o->prompt_tokens))
                return -1;
            n_prompt_flags++;
        } else if (!strcmp(a, "--rate")) {
            if (parse_num(a, v, 0, false, 100000, &o->rate))
                return -1;
        } else if (!strcmp(a, "--ramp")) {
            if (parse_num(a, v, 0, true, 86400, &o->ramp_s))
                return -1;
            o->have_ramp = true;
        } else if (!strcmp(a, "--warmup")) {
            if (parse_u32(a, v, 0, 100000000, &o->warmup))
                return -1;
        } else if (!strcmp(a, "--duration")) {
            if (parse_num(a, v, 0, false, 86400, &o->duration_s))
                return -1;
            o->have_duration = true;
        } else if (!strcmp(a, "--settle")) {
            if (parse_num(a, v, 0, true, 86400, &o->settle_s))
                return -1;
            o->have_settle = true;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long x = strtoull(v, &end, 10);
            if (!*v || *v == '-' || errno || *end) {
                fprintf(stderr, "aarmd-cli loadgen: --seed must be a non-negative integer (got '%s')\n", v);
                return -1;
            }
            o->seed = x;
            o->have_seed = true;
        } else if (!strcmp(a, "--api-token")) {
            o->token = v;
        } else if (!strcmp(a, "--temperature")) {
            if (parse_num(a, v, 0, true, 2, &o->temperature))
                return -1;
            o->temperature_set = true;
        } else {
            fprintf(stderr, "aarmd-cli loadgen: unknown flag %s\n", a);
            return -1;
        }
    }
    if (n_prompt_flags > 1) {
        fprintf(stderr, "aarmd-cli loadgen: give one of --prompt, --prompt-file and --prompt-tokens\n");
        return -1;
    }
    if (o->rate > 0) {
        if (!o->url || !o->have_duration || !have_max) {
            fprintf(stderr, "aarmd-cli loadgen: open loop (--rate) needs --url, --duration and --max-tokens\n");
            return -1;
        }
        if (o->have_ramp) {
            fprintf(stderr, "aarmd-cli loadgen: --ramp is for closed loop (--clients N --requests M); "
                            "open loop spreads its arrivals by --rate\n");
            return -1;
        }
        if (o->have_settle) {
            fprintf(stderr, "aarmd-cli loadgen: --settle is for a timed closed loop (--clients N --duration S)\n");
            return -1;
        }
        if (!o->have_clients)
            o->clients = LG_OPEN_MAX_CONNS;
    } else if (o->have_seed) {
        fprintf(stderr, "aarmd-cli loadgen: --seed is for open loop: it needs --rate\n");
        return -1;
    } else if (o->have_duration) {
        if (!o->url || !o->have_clients || !have_max) {
            fprintf(stderr, "aarmd-cli loadgen: a timed closed loop (--duration without --rate) needs --url, "
                            "--clients and --max-tokens\n");
            return -1;
        }
        if (!o->have_settle)
            o->settle_s = o->duration_s / 4;
        if (o->settle_s >= o->duration_s || o->ramp_s >= o->duration_s) {
            fprintf(stderr, "aarmd-cli loadgen: --%s %g must be less than --duration %g\n",
                    o->settle_s >= o->duration_s ? "settle" : "ramp",
                    o->settle_s >= o->duration_s ? o->settle_s : o->ramp_s, o->duration_s);
            return -1;
        }
    } else if (o->have_settle) {
        fprintf(stderr, "aarmd-cli loadgen: --settle is for a timed closed loop (--clients N --duration S)\n");
        return -1;
    } else if (!o->url || !o->have_clients || !o->have_requests || !have_max) {
        fprintf(stderr, "aarmd-cli loadgen: --url, --clients, --requests and --max-tokens are required "
                        "(open loop: --url, --rate, --duration and --max-tokens)\n");
        return -1;
    }
    if (o->have_requests && o->warmup >= o->requests) {
        fprintf(stderr, "aarmd-cli loadgen: --warmup %" PRIu32 " leaves nothing to measure: it must be less "
                        "than --requests %" PRIu32 "\n", o->warmup, o->requests);
        return -1;
    }
    return 0;
}

/* ---- prompts ----------------------------------------------------------------- */

static void free_prompts(char **p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(p[i]);
    free(p);
}

/* One prompt per line of `path`, with \n, \t and \\ unescaped and blank lines
 * skipped. Returns 0 (caller frees *out), or -1 with a message on stderr. */
static int read_prompt_file(const char *path, char ***out, size_t *n_out)
{
    char **v = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "aarmd-cli loadgen: --prompt-file %s: %s\n", path, strerror(errno));
        return -1;
    }
    ssize_t len;
    while ((len = getline(&line, &line_cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        size_t w = 0;
        for (ssize_t r = 0; r < len; r++) {
            char ch = line[r];
            if (ch == '\\' && r + 1 < len && strchr("nt\\", line[r + 1])) {
                r++;
                ch = line[r] == 'n' ? '\n' : line[r] == 't' ? '\t' : '\\';
            }
            line[w++] = ch;
        }
        line[w] = '\0';
        if (strspn(line, " \t") == w)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nv = realloc(v, cap * sizeof *nv);
            if (!nv)
                goto oom;
            v = nv;
        }
        if (!(v[n] = strdup(line)))
            goto oom;
        n++;
    }
    if (ferror(f)) {
        fprintf(stderr, "aarmd-cli loadgen: --prompt-file %s: read error\n", path);
        goto fail;
    }
    if (n == 0) {
        fprintf(stderr, "aarmd-cli loadgen: --prompt-file %s has no prompts (one per line)\n", path);
        goto fail;
    }
    fclose(f);
    free(line);
    *out = v;
    *n_out = n;
    return 0;
oom:
    fprintf(stderr, "aarmd-cli loadgen: out of memory reading %s\n", path);
fail:
    fclose(f);
    free(line);
    free_prompts(v, n);
    return -1;
}

/* About n tokens of text: common short words, one token each in byte-level
 * and SentencePiece vocabularies alike. Caller frees. */
static char *synthetic_prompt(uint32_t n)
{
    static const char *const words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "it", "was", "warm"};
    char *s = malloc((size_t)n * 5 + 1);
    if (!s)
        return NULL;
    size_t w = 0;
    for (uint32_t i = 0; i < n; i++)
        w += (size_t)sprintf(s + w, "%s%s", i ? " " : "", words[i % (sizeof words / sizeof words[0])]);
    return s;
}

/* The request bodies up to the job id: {...,"job_id": — one per prompt. */
static int make_bodies(struct lg *g, char **prompts, size_t n)
{
    g->bodies = calloc(n, sizeof *g->bodies);
    if (!g->bodies)
        return -1;
    g->n_bodies = n;
    for (size_t i = 0; i < n; i++) {
        struct json_object *body = json_object_new_object();
        if (!body)
            return -1;
        json_object_object_add(body, "prompt", json_object_new_string(prompts[i]));
        json_object_object_add(body, "max_tokens", json_object_new_int64(g->o.max_tokens));
        if (g->o.temperature_set)
            json_object_object_add(body, "temperature", json_object_new_double(g->o.temperature));
        const char *js = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN);
        size_t jl = strlen(js);
        g->bodies[i] = malloc(jl + 16);
        if (g->bodies[i]) {
            memcpy(g->bodies[i], js, jl - 1);
            snprintf(g->bodies[i] + jl - 1, 16, "%s\"job_id\":", jl > 2 ? "," : "");
        }
        json_object_put(body);
        if (!g->bodies[i])
            return -1;
    }
    return 0;
}

/* ---- report ------------------------------------------------------------------- */

static int cmp_span(const void *a, const void *b)
{
    double x = ((const struct lg_span *)a)->first, y = ((const struct lg_span *)b)->first;
    return (x > y) - (x < y);
}

/* Seconds covered by the union of the spans (sorts them): the time during
 * which at least one measured stream was between its first and last token. */
static double decode_seconds(struct lg *g)
{
    qsort(g->spans, g->n_spans, sizeof *g->spans, cmp_span);
    double total = 0, lo = 0, hi = 0;
    for (size_t i = 0; i < g->n_spans; i++) {
        if (i == 0 || g->spans[i].first > hi) {
            total += hi - lo;
            lo = g->spans[i].first;
            hi = g->spans[i].last;
        } else if (g->spans[i].last > hi) {
            hi = g->spans[i].last;
        }
    }
    return (total + hi - lo) / 1e3;
}

/* The numbers both reports print, computed once. */
struct lg_summary {
    double secs;                /* measured wall time */
    uint32_t requests;          /* measured (not warmup) */
    double decode_s, decode_tokens_s;
};

/* One text-report line: the label, then NAME=count for each, or " none". */
static void print_tally(const char *label, const struct lg_tally *t)
{
    printf("%s", label);
    if (!t->n)
        printf(" none");
    for (uint32_t i = 0; i < t->n; i++)
        printf(" %s=%" PRIu64, t->v[i].name, t->v[i].n);
    printf("\n");
}

static void report_text(const struct lg *g, const struct lg_summary *m)
{
    double secs = m->secs;
    printf("url           %s\n", g->o.url);
    if (g->open_loop) {
        printf("mode          open loop: rate %g/s, duration %g s, seed %" PRIu64 ", max connections %" PRIu32
               "\n",
               g->o.rate, g->o.duration_s, g->o.seed, g->o.clients);
        printf("arrivals      %" PRIu32 " (%.1f/s offered)\n", g->issued, (double)g->issued / g->o.duration_s);
    } else {
        char timed[64] = "";
        if (g->timed)
            snprintf(timed, sizeof timed, ", %g s (settle %g s)", g->o.duration_s, g->o.settle_s);
        if (g->o.ramp_s > 0)
            printf("mode          closed loop%s, ramp %g s\n", timed, g->o.ramp_s);
        else
            printf("mode          closed loop%s\n", timed);
        printf("clients       %" PRIu32 "\n", g->o.clients);
    }
    if (g->o.warmup)
        printf("warmup        %" PRIu32 " (ok %" PRIu32 ", failed %" PRIu32 "), left out of what follows\n", g->warm,
               g->warm_ok, g->warm - g->warm_ok);
    printf("requests      %" PRIu32 " (ok %" PRIu32 ", failed %" PRIu32 ")\n", m->requests, g->ok,
           m->requests - g->ok);
    printf("duration_s    %.3f\n", secs);
    printf("requests_s    %.1f\n", (double)m->requests / secs);
    printf("tokens        %" PRIu64 "\n", g->tokens);
    printf("tokens_s      %.1f\n", (double)g->tokens / secs);
    printf("decode_tokens_s %.1f (%" PRIu64 " tokens after the first of each stream, %.3f s with a stream decoding)\n",
           m->decode_tokens_s, g->decode_tokens, m->decode_s);
    if (g->timed)
        printf("sustained_tokens_s %.1f (%" PRIu64 " tokens read from %g s to %g s)\n",
               (double)g->win_tokens / (g->o.duration_s - g->o.settle_s), g->win_tokens, g->o.settle_s,
               g->o.duration_s);
    printf("per_stream_decode_tokens_s p50 %.1f (of %zu streams)\n", percentile(&g->stream_rate, 50), g->stream_rate.n);
    printf("prompt_tokens mean %.1f (n %" PRIu64 ")\n",
           g->n_started ? (double)g->prompt_tokens / (double)g->n_started : 0.0, g->n_started);
    printf("ttft_ms       p50 %.3f p90 %.3f p99 %.3f max %.3f (n %zu)\n", percentile(&g->ttft, 50),
           percentile(&g->ttft, 90), percentile(&g->ttft, 99), percentile(&g->ttft, 100), g->ttft.n);
    printf("itl_ms        p50 %.3f p90 %.3f p99 %.3f max %.3f (n %zu)\n", percentile(&g->itl, 50),
           percentile(&g->itl, 90), percentile(&g->itl, 99), percentile(&g->itl, 100), g->itl.n);
    print_tally("stop_reasons ", &g->stops);
    print_tally("errors       ", &g->errors);
}

static struct json_object *latency_json(const struct lg_samples *s)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "p50", json_object_new_double(percentile(s, 50)));
    json_object_object_add(o, "p90", json_object_new_double(percentile(s, 90)));
    json_object_object_add(o, "p99", json_object_new_double(percentile(s, 99)));
    json_object_object_add(o, "max", json_object_new_double(percentile(s, 100)));
    json_object_object_add(o, "n", json_object_new_int64((int64_t)s->n));
    return o;
}

static struct json_object *tally_json(const struct lg_tally *t)
{
    struct json_object *o = json_object_new_object();
    for (uint32_t i = 0; i < t->n; i++)
        json_object_object_add(o, t->v[i].name, json_object_new_int64((int64_t)t->v[i].n));
    return o;
}

static void report_json(const struct lg *g, const struct lg_summary *m)
{
    double secs = m->secs;
    struct json_object *o = json_object_new_object();
    struct json_object *warm = json_object_new_object(), *stream = json_object_new_object();
    json_object_object_add(o, "url", json_object_new_string(g->o.url));
    json_object_object_add(o, "mode", json_object_new_string(g->open_loop ? "open" : "closed"));
    json_object_object_add(o, "clients", json_object_new_int64(g->o.clients));
    if (g->open_loop) {
        json_object_object_add(o, "rate", json_object_new_double(g->o.rate));
        json_object_object_add(o, "duration", json_object_new_double(g->o.duration_s));
        json_object_object_add(o, "seed", json_object_new_uint64(g->o.seed));
    } else {
        json_object_object_add(o, "ramp", json_object_new_double(g->o.ramp_s));
        if (g->timed) {
            json_object_object_add(o, "duration", json_object_new_double(g->o.duration_s));
            json_object_object_add(o, "settle", json_object_new_double(g->o.settle_s));
            json_object_object_add(o, "sustained_tokens", json_object_new_int64((int64_t)g->win_tokens));
            json_object_object_add(o, "sustained_tokens_s",
                                   json_object_new_double((double)g->win_tokens / (g->o.duration_s - g->o.settle_s)));
        }
    }
    json_object_object_add(warm, "requests", json_object_new_int64(g->warm));
    json_object_object_add(warm, "ok", json_object_new_int64(g->warm_ok));
    json_object_object_add(warm, "failed", json_object_new_int64(g->warm - g->warm_ok));
    json_object_object_add(o, "warmup", warm);
    json_object_object_add(o, "requests", json_object_new_int64(m->requests));
    json_object_object_add(o, "ok", json_object_new_int64(g->ok));
    json_object_object_add(o, "failed", json_object_new_int64(m->requests - g->ok));
    json_object_object_add(o, "duration_s", json_object_new_double(secs));
    json_object_object_add(o, "requests_s", json_object_new_double((double)m->requests / secs));
    json_object_object_add(o, "tokens", json_object_new_int64((int64_t)g->tokens));
    json_object_object_add(o, "tokens_s", json_object_new_double((double)g->tokens / secs));
    json_object_object_add(o, "decode_tokens", json_object_new_int64((int64_t)g->decode_tokens));
    json_object_object_add(o, "decode_s", json_object_new_double(m->decode_s));
    json_object_object_add(o, "decode_tokens_s", json_object_new_double(m->decode_tokens_s));
    json_object_object_add(stream, "p50", json_object_new_double(percentile(&g->stream_rate, 50)));
    json_object_object_add(stream, "n", json_object_new_int64((int64_t)g->stream_rate.n));
    json_object_object_add(o, "per_stream_decode_tokens_s", stream);
    json_object_object_add(o, "prompt_tokens_mean",
                           json_object_new_double(g->n_started ? (double)g->prompt_tokens / (double)g->n_started : 0));
    json_object_object_add(o, "ttft_ms", latency_json(&g->ttft));
    json_object_object_add(o, "itl_ms", latency_json(&g->itl));
    json_object_object_add(o, "stop_reasons", tally_json(&g->stops));
    json_object_object_add(o, "errors", tally_json(&g->errors));
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

/* ---- main ----------------------------------------------------------------------- */

int aarmd_cli_loadgen(int argc, char **argv)
{
    struct lg g;
    memset(&g, 0, sizeof g);
    int rc = parse_args(argc, argv, &g.o);
    if (rc != 0)
        return usage(rc > 0 ? stdout : stderr);
    g.open_loop = g.o.rate > 0;
    g.timed = !g.open_loop && g.o.have_duration;
    g.t_first_measured = HUGE_VAL;
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

    char **prompts = NULL;
    size_t n_prompts = 0;
    if (g.o.prompt_file) {
        if (read_prompt_file(g.o.prompt_file, &prompts, &n_prompts))
            return 2;
    } else {
        prompts = calloc(1, sizeof *prompts);
        if (prompts) {
            n_prompts = 1;
            prompts[0] = g.o.prompt_tokens ? synthetic_prompt(g.o.prompt_tokens)
                                           : strdup(g.o.prompt ? g.o.prompt : "Hello");
        }
    }

    int ret = 1;
    bool ran = false;
    if (!prompts || !prompts[0] || make_bodies(&g, prompts, n_prompts))
        goto out;
    g.base = event_base_new();
    g.n_clients = g.open_loop || (g.timed && !g.o.have_requests) ? g.o.clients
                  : g.o.clients < g.o.requests                   ? g.o.clients
                                                                 : g.o.requests;
    g.clients = calloc(g.n_clients, sizeof *g.clients);
    g.idle = calloc(g.n_clients, sizeof *g.idle);
    if (!g.base || !g.clients || !g.idle)
        goto out;
    for (uint32_t i = 0; i < g.n_clients; i++) {
        g.clients[i].g = &g;
        g.clients[i].index = i;
        g.clients[i].acc = evbuffer_new();
        if (!g.clients[i].acc)
            goto out;
    }
    g.t_start = now_ms();
    if (g.open_loop) {
        g.timer = evtimer_new(g.base, arrival_cb, &g);
        if (!g.timer)
            goto out;
        for (uint32_t i = g.n_clients; i > 0; i--)
            g.idle[g.n_idle++] = i - 1;
        g.rng = g.o.seed;
        g.next_arrival = g.t_start + next_gap_ms(&g);
        arrival_cb(-1, 0, &g);
        if (g.t_end == 0)
            event_base_dispatch(g.base);
    } else {
        if (g.timed) {
            g.t_stop = g.t_start + g.o.duration_s * 1e3;
            g.win_lo = g.t_start + g.o.settle_s * 1e3;
            g.win_hi = g.t_stop;
        }
        if (start_closed(&g))
            goto out;
        if (g.t_end == 0 && (g.timed || g.finished < g.o.requests))
            event_base_dispatch(g.base);
    }
    if (g.t_end == 0)
        g.t_end = now_ms();
    if (g.oom)
        fprintf(stderr, "aarmd-cli loadgen: out of memory (some samples or arrivals were dropped)\n");
    qsort(g.ttft.v, g.ttft.n, sizeof *g.ttft.v, cmp_float);
    qsort(g.itl.v, g.itl.n, sizeof *g.itl.v, cmp_float);
    qsort(g.stream_rate.v, g.stream_rate.n, sizeof *g.stream_rate.v, cmp_float);
    struct lg_summary m = {.requests = g.finished - g.warm, .decode_s = decode_seconds(&g)};
    double t0 = g.o.warmup && m.requests ? g.t_first_measured : g.t_start;
    m.secs = (g.t_end - t0) / 1e3;
    if (m.secs <= 0)
        m.secs = 1e-9;
    m.decode_tokens_s = m.decode_s > 0 ? (double)g.decode_tokens / m.decode_s : 0;
    if (g.o.json)
        report_json(&g, &m);
    else
        report_text(&g, &m);
    fflush(stdout);
    ran = true;
    ret = g.ok + g.warm_ok == g.finished && g.finished > 0 ? 0 : 1;
    if (g.finished == 0)
        fprintf(stderr, "aarmd-cli loadgen: no request was issued (open loop: raise --rate or --duration)\n");
    else if (m.requests == 0)
        fprintf(stderr, "aarmd-cli loadgen: all %" PRIu32 " requests were warmup: nothing measured\n", g.finished);

out:
    if (g.clients) {
        for (uint32_t i = 0; i < g.n_clients; i++) {
            if (g.clients[i].conn)
                evhttp_connection_free(g.clients[i].conn);
            if (g.clients[i].acc)
                evbuffer_free(g.clients[i].acc);
            if (g.clients[i].start_ev)
                event_free(g.clients[i].start_ev);
            free(g.clients[i].itl.v);
        }
        free(g.clients);
    }
    if (g.timer)
        event_free(g.timer);
    if (g.base)
        event_base_free(g.base);
    for (size_t i = 0; i < g.n_bodies; i++)
        free(g.bodies[i]);
    free(g.bodies);
    free_prompts(prompts, n_prompts);
    free(g.idle);
    free(g.queue);
    free(g.ttft.v);
    free(g.itl.v);
    free(g.stream_rate.v);
    free(g.spans);
    if (!ran)
        fprintf(stderr, "aarmd-cli loadgen: setup failed (out of memory)\n");
    return ret;
}
