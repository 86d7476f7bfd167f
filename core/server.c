/* server.c — evhttp routes, auth, correlation ids, SSE streams with backpressure,
 * pings and drain. It computes nothing: jobs go to the scheduler, tokenizing to a worker thread. */
#include "config.h"
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <json-c/json.h>

#include "log.h"
#include "metrics.h"
#include "request.h"
#include "scheduler.h"
#include "sse.h"
#include "tokenizer.h"

#define MAX_BODY_BYTES (1u << 20)
#define CORR_MAX 128

enum job_state { JOB_WAITING_START, JOB_STREAMING, JOB_DONE, JOB_CLOSED };

struct job {
    struct aarmd_server *srv;
    struct job *prev, *next;            /* srv->jobs (loop only) */
    char id[AARMD_JOB_ID_MAX + 1];
    char corr[CORR_MAX + 1];

    /* loop only */
    enum job_state state;
    struct evhttp_request *req;         /* NULL once DONE or CLOSED */
    struct evhttp_connection *conn;
    bool sched_live;                    /* the scheduler still owes a terminal event */
    bool paused;
    bool cancel_sent;
    struct event *ping_ev;
    uint64_t submit_ms, last_write_ms;

    /* shared with the scheduler thread: under srv->lock */
    struct evbuffer *outbox;
    bool closed;                        /* drop further events */
    bool got_started, got_terminal, in_ready;
    int reject_status;                  /* != 0: first event was a rejection */
    char *reject_body;
    bool first_token_seen;
    uint64_t first_token_ms;
    uint32_t tokens_in, tokens_out;
    enum aarmd_outcome outcome;
    struct job *ready_next;
    struct job *batch_next;             /* loop only: notify_cb's snapshot of the ready list */
};

enum task_kind { TASK_TOKENIZE, TASK_DETOKENIZE };

struct task {
    struct aarmd_server *srv;
    enum task_kind kind;
    struct evhttp_request *req;         /* loop only; NULL when the client left */
    struct evhttp_connection *conn;
    char *body;
    size_t len;
    int status;                         /* result, set by the worker */
    char *result;
    struct task *next;
    bool in_worker;                     /* queued or running (loop-visible under lock) */
};

struct aarmd_server {
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    struct aarmd_sched *sched;
    const struct aarmd_tokenizer *tok;
    struct aarmd_metrics *metrics;
    struct aarmd_server_opts o;
    char *token;
    char *s_worker_id, *s_model, *s_model_ref, *s_quant, *s_memarch, *s_wtype, *s_backend, *s_tokkind;
    uint16_t port;
    struct aarmd_sse_ctx sse;
    uint64_t start_ms;

    pthread_mutex_t lock;
    struct event *notify_ev;            /* activated from other threads */
    struct job *ready;                  /* jobs with news, under lock */
    struct task *tasks_done;            /* under lock */

    struct job *jobs;                   /* loop only */
    uint32_t n_jobs;

    /* cached for /health and /metrics, refreshed by stats_ev */
    struct event *stats_ev;
    struct aarmd_sched_stats stats;
    uint64_t last_memory_bytes;

    /* drain */
    bool draining, cancelled_all;
    uint64_t drain_deadline_ms, cancel_deadline_ms;
    struct event *drain_ev;
    bool drained_called;

    /* tokenizer worker */
    pthread_t worker;
    bool worker_started, worker_stop;
    pthread_cond_t worker_cond;
    struct task *tasks_head, *tasks_tail;   /* under lock */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- small helpers -------------------------------------------------------- */

void aarmd_uuid_v4(char *buf, size_t cap)
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        /* getrandom cannot fail for 16 bytes once the pool is ready; be safe anyway */
        uint64_t x = mono_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)buf;
        for (size_t i = 0; i < sizeof b; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            b[i] = (unsigned char)(x >> 56);
        }
    }
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
    snprintf(buf, cap, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

bool aarmd_correlation_id_ok(const char *id)
{
    if (!id)
        return false;
    size_t n = strlen(id);
    if (n == 0 || n > CORR_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool aarmd_bearer_ok(const char *header, const char *token)
{
    if (!header || !token)
        return false;
    if (strncasecmp(header, "Bearer ", 7) != 0)
        return false;
    const char *given = header + 7;
    while (*given == ' ')
        given++;
    size_t gl = strlen(given), tl = strlen(token);
    while (gl > 0 && (given[gl - 1] == ' ' || given[gl - 1] == '\t'))
        gl--;
    /* constant time in the token's length: always walk all of it */
    unsigned diff = (unsigned)(gl ^ tl);
    for (size_t i = 0; i < tl; i++) {
        unsigned char g = i < gl ? (unsigned char)given[i] : 0;
        diff |= (unsigned)(g ^ (unsigned char)token[i]);
    }
    return diff == 0;
}

static void send_json(struct evhttp_request *req, int status, const char *reason, const char *body)
{
    struct evbuffer *b = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_remove_header(h, "Content-Type");
    evhttp_add_header(h, "Content-Type", "application/json");
    if (b && body)
        evbuffer_add(b, body, strlen(body));
    if (b)
        evbuffer_add(b, "\n", 1);
    evhttp_send_reply(req, status, reason, b);
    if (b)
        evbuffer_free(b);
}

static const char *reason_of(int status)
{
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    }
    return "Error";
}

static void send_error(struct evhttp_request *req, int status, const char *code, const char *message,
                       bool retriable, const struct aarmd_validation *v)
{
    char *body = aarmd_error_body(code, message, retriable, v);
    send_json(req, status, reason_of(status), body ? body : "{\"error\":{\"code\":\"INTERNAL\",\"message\":\"out of memory\",\"retriable\":true}}");
    free(body);
}

static bool body_of(struct evhttp_request *req, const char **p, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    *len = evbuffer_get_length(in);
    if (*len > MAX_BODY_BYTES)
        return false;
    *p = *len ? (const char *)evbuffer_pullup(in, -1) : "";
    return *p != NULL;
}

/* ---- jobs: scheduler side -------------------------------------------------- */

static void wake(struct aarmd_server *s)
{
    event_active(s->notify_ev, EV_READ, 0);
}

/* Scheduler thread: format, queue, wake. Nothing here blocks for long. */
static void job_event_cb(void *user, const struct aarmd_job_event *ev)
{
    struct job *j = user;
    struct aarmd_server *s = j->srv;
    bool terminal = ev->kind == AARMD_EV_END || ev->kind == AARMD_EV_ERROR;
    pthread_mutex_lock(&s->lock);
    switch (ev->kind) {
    case AARMD_EV_STARTED:
        j->got_started = true;
        j->tokens_in = ev->u.started.tokens_in;
        break;
    case AARMD_EV_TOKEN:
        if (!j->first_token_seen) {
            j->first_token_seen = true;
            j->first_token_ms = mono_ms();
        }
        j->tokens_out = ev->u.token.index + 1;
        break;
    case AARMD_EV_METRICS:
        s->last_memory_bytes = ev->u.metrics.memory_bytes;
        break;
    case AARMD_EV_END:
        j->tokens_out = ev->u.end.tokens_out;
        j->outcome = AARMD_OUTCOME_SUCCESS;
        break;
    case AARMD_EV_ERROR:
        j->outcome = aarmd_outcome_of_error(ev->u.error.code);
        if (ev->u.error.http_status && !j->got_started) {
            j->reject_status = ev->u.error.http_status;
            free(j->reject_body);
            j->reject_body = aarmd_error_body(ev->u.error.code ? ev->u.error.code : "INTERNAL",
                                              ev->u.error.message, ev->u.error.retriable, NULL);
        }
        break;
    }
    if (!j->closed && aarmd_sse_event(j->outbox, ev, &s->sse) != 0)
        aarmd_log_ctx(AARMD_LOG_ERROR, "error", &(struct aarmd_log_ctx){.job_id = j->id, .correlation_id = j->corr},
                      "out of memory formatting an event");
    if (terminal)
        j->got_terminal = true;
    if (!j->in_ready) {
        j->in_ready = true;
        j->ready_next = s->ready;
        s->ready = j;
    }
    pthread_mutex_unlock(&s->lock);
    wake(s);
}

/* ---- jobs: loop side ------------------------------------------------------- */

static void job_free(struct job *j)
{
    struct aarmd_server *s = j->srv;
    if (j->prev)
        j->prev->next = j->next;
    else if (s->jobs == j)
        s->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    s->n_jobs--;
    if (j->ping_ev)
        event_free(j->ping_ev);
    if (j->outbox)
        evbuffer_free(j->outbox);
    free(j->reject_body);
    free(j);
}

static void maybe_free(struct job *j)
{
    if (!j->sched_live && (j->state == JOB_DONE || j->state == JOB_CLOSED))
        job_free(j);
}

static void job_close_cb(struct evhttp_connection *conn, void *arg);
static void write_done_cb(struct evhttp_connection *conn, void *arg);

static void start_stream(struct job *j)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(j->req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "X-Accel-Buffering", "no");
    evhttp_send_reply_start(j->req, 200, "OK");
    j->state = JOB_STREAMING;
    j->last_write_ms = mono_ms();
}

static void check_backpressure(struct job *j)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(j->conn);
    if (!bev)
        return;
    size_t pending = evbuffer_get_length(bufferevent_get_output(bev));
    if (!j->paused && pending > j->srv->o.backpressure_bytes && j->sched_live) {
        j->paused = true;
        aarmd_sched_pause(j->srv->sched, j->id, true);
        aarmd_log_ctx(AARMD_LOG_DEBUG, "backpressure", &(struct aarmd_log_ctx){.job_id = j->id, .correlation_id = j->corr},
                      "paused: %zu bytes unsent", pending);
    }
}

static void send_chunk(struct job *j, struct evbuffer *chunk)
{
    evhttp_send_reply_chunk_with_cb(j->req, chunk, write_done_cb, j);
    j->last_write_ms = mono_ms();
    check_backpressure(j);
}

static void end_http(struct job *j)
{
    evhttp_connection_set_closecb(j->conn, NULL, NULL);
    if (j->ping_ev)
        event_del(j->ping_ev);
    j->req = NULL;
    j->state = JOB_DONE;
}

/* Output of the connection drained: resume a paused job. */
static void write_done_cb(struct evhttp_connection *conn, void *arg)
{
    struct job *j = arg;
    if (j->paused && j->sched_live && j->state == JOB_STREAMING) {
        j->paused = false;
        aarmd_sched_pause(j->srv->sched, j->id, false);
    }
}

static void record_terminal(struct job *j)
{
    struct aarmd_server *s = j->srv;
    uint64_t now = mono_ms();
    aarmd_metrics_request(s->metrics, j->outcome);
    if (j->got_started)
        aarmd_metrics_tokens(s->metrics, j->tokens_in, j->tokens_out);
    if (j->got_started) {
        aarmd_metrics_inference_ms(s->metrics, (double)(now - j->submit_ms));
        if (j->first_token_seen)
            aarmd_metrics_ttft_ms(s->metrics, (double)(j->first_token_ms - j->submit_ms));
    }
}

static void process_job(struct job *j, struct evbuffer *tmp)
{
    struct aarmd_server *s = j->srv;
    pthread_mutex_lock(&s->lock);
    if (j->in_ready) {
        /* queued again since the snapshot (maybe with its terminal event): the
         * next round handles it; freeing it now would leave it on s->ready */
        pthread_mutex_unlock(&s->lock);
        return;
    }
    evbuffer_add_buffer(tmp, j->outbox);
    bool started = j->got_started, terminal = j->got_terminal;
    int reject = j->reject_status;
    char *reject_body = j->reject_body;
    j->reject_body = NULL;
    pthread_mutex_unlock(&s->lock);

    if (j->state == JOB_WAITING_START && reject) {
        send_json(j->req, reject, reason_of(reject), reject_body ? reject_body : "{}");
        end_http(j);
    } else if (j->state == JOB_WAITING_START || j->state == JOB_STREAMING) {
        if (j->state == JOB_WAITING_START && (started || terminal || evbuffer_get_length(tmp)))
            start_stream(j);
        if (evbuffer_get_length(tmp))
            send_chunk(j, tmp);
        if (terminal) {
            evhttp_send_reply_end(j->req);
            end_http(j);
        }
    }
    evbuffer_drain(tmp, evbuffer_get_length(tmp));
    free(reject_body);
    if (terminal && j->sched_live) {
        j->sched_live = false;
        record_terminal(j);
    }
    maybe_free(j);
}

static void task_finish(struct task *t);

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct aarmd_server *s = arg;
    pthread_mutex_lock(&s->lock);
    struct job *list = s->ready;
    s->ready = NULL;
    struct task *done = s->tasks_done;
    s->tasks_done = NULL;
    /* ready_next is rewritten when the scheduler queues a job again after the
     * lock is dropped: walk a loop-owned copy of the links instead */
    for (struct job *j = list; j; j = j->ready_next) {
        j->in_ready = false;
        j->batch_next = j->ready_next;
    }
    pthread_mutex_unlock(&s->lock);

    struct evbuffer *tmp = evbuffer_new();
    /* the list is newest-first; order between jobs does not matter */
    for (struct job *j = list, *next; j; j = next) {
        next = j->batch_next;
        if (tmp)
            process_job(j, tmp);
    }
    if (tmp)
        evbuffer_free(tmp);
    for (struct task *t = done, *next; t; t = next) {
        next = t->next;
        task_finish(t);
    }
}

static void job_close_cb(struct evhttp_connection *conn, void *arg)
{
    struct job *j = arg;
    struct aarmd_server *s = j->srv;
    if (j->state != JOB_WAITING_START && j->state != JOB_STREAMING)
        return;
    pthread_mutex_lock(&s->lock);
    j->closed = true;
    evbuffer_drain(j->outbox, evbuffer_get_length(j->outbox));
    pthread_mutex_unlock(&s->lock);
    /* a request the client abandoned mid-reply is detached from its connection and ours to free */
    if (j->req && !evhttp_request_get_connection(j->req))
        evhttp_request_free(j->req);
    j->req = NULL;
    j->state = JOB_CLOSED;
    if (j->ping_ev)
        event_del(j->ping_ev);
    if (j->sched_live) {
        /* the scheduler logs the "cancel" event itself; this only says why */
        aarmd_log_ctx(AARMD_LOG_DEBUG, "cancel", &(struct aarmd_log_ctx){.job_id = j->id, .correlation_id = j->corr},
                      "client closed the connection");
        aarmd_sched_cancel(s->sched, j->id);
        if (j->paused) {
            j->paused = false;
            aarmd_sched_pause(s->sched, j->id, false);
        }
    }
    maybe_free(j);
}

static void ping_cb(evutil_socket_t fd, short what, void *arg)
{
    struct job *j = arg;
    uint64_t now = mono_ms();
    if (j->state == JOB_WAITING_START) {
        start_stream(j);
    } else if (j->state != JOB_STREAMING || now - j->last_write_ms + 50 < j->srv->o.ping_interval_ms) {
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return;
    aarmd_sse_ping(b);
    send_chunk(j, b);
    evbuffer_free(b);
}

/* ---- endpoints ------------------------------------------------------------ */

/* Events are small writes: without TCP_NODELAY, Nagle's algorithm holds each
 * one until the client ACKs the previous (up to its 40 ms delayed ACK). */
static void set_nodelay(struct evhttp_connection *conn)
{
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    int one = 1;
    if (fd >= 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void handle_execute(struct aarmd_server *s, struct evhttp_request *req, const char *corr)
{
    const char *body;
    size_t len;
    if (!body_of(req, &body, &len)) {
        send_error(req, 413, "INVALID_REQUEST", "request body over 1 MiB", false, NULL);
        return;
    }
    if (s->draining) {
        aarmd_metrics_request(s->metrics, AARMD_OUTCOME_ERROR);
        send_error(req, 503, "SHUTTING_DOWN", "worker is shutting down", false, NULL);
        return;
    }
    struct aarmd_request_limits lim = {.max_tokens_limit = s->o.max_tokens_limit, .vocab_size = s->o.info.vocab_size};
    struct aarmd_exec_req r;
    struct aarmd_validation *v = calloc(1, sizeof *v);
    if (!v) {
        send_error(req, 500, "INTERNAL", "out of memory", true, NULL);
        return;
    }
    int rc = aarmd_exec_req_parse(body, len, &lim, &r, v);
    if (rc != AARMD_OK) {
        aarmd_metrics_request(s->metrics, AARMD_OUTCOME_ERROR);
        if (rc == AARMD_ENOMEM)
            send_error(req, 500, "INTERNAL", "out of memory", true, NULL);
        else
            send_error(req, 400, "INVALID_REQUEST", v->message, false, v);
        aarmd_log_ctx(AARMD_LOG_INFO, "error", &(struct aarmd_log_ctx){.correlation_id = corr},
                      "/execute rejected: %s", v->message);
        aarmd_validation_fini(v);
        free(v);
        return;
    }
    free(v);
    if (!r.seed_given)
        r.sampling.seed = aarmd_seed_from_os();

    struct job *j = calloc(1, sizeof *j);
    if (!j || !(j->outbox = evbuffer_new()) ||
        !(j->ping_ev = event_new(s->base, -1, EV_PERSIST, ping_cb, j))) {
        if (j && j->outbox)
            evbuffer_free(j->outbox);
        free(j);
        aarmd_exec_req_fini(&r);
        send_error(req, 500, "INTERNAL", "out of memory", true, NULL);
        return;
    }
    j->srv = s;
    snprintf(j->id, sizeof j->id, "%s", r.job_id);
    snprintf(j->corr, sizeof j->corr, "%s", corr);
    j->req = req;
    j->conn = evhttp_request_get_connection(req);
    set_nodelay(j->conn);
    j->state = JOB_WAITING_START;
    j->sched_live = true;
    j->submit_ms = mono_ms();
    j->last_write_ms = j->submit_ms;
    j->outcome = AARMD_OUTCOME_ERROR;
    j->next = s->jobs;
    if (s->jobs)
        s->jobs->prev = j;
    s->jobs = j;
    s->n_jobs++;

    struct aarmd_job_request jr;
    aarmd_exec_req_to_job(&r, j->corr, &jr);
    /* the callback may run before submit returns: j is complete and registered */
    enum aarmd_submit_result sr = aarmd_sched_submit(s->sched, &jr, job_event_cb, j);
    aarmd_exec_req_fini(&r);
    if (sr != AARMD_SUBMIT_OK) {
        j->sched_live = false;
        aarmd_metrics_request(s->metrics, AARMD_OUTCOME_ERROR);
        if (sr == AARMD_SUBMIT_DUPLICATE) {
            char msg[320];
            snprintf(msg, sizeof msg, "job_id '%s' is already live", j->id);
            send_error(req, 409, "DUPLICATE_JOB", msg, false, NULL);
        } else if (sr == AARMD_SUBMIT_BUSY) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
            send_error(req, 503, "BUSY", "queue is full", true, NULL);
        } else if (sr == AARMD_SUBMIT_SHUTTING_DOWN) {
            send_error(req, 503, "SHUTTING_DOWN", "worker is shutting down", false, NULL);
        } else {
            send_error(req, 500, "INTERNAL", "out of memory", true, NULL);
        }
        aarmd_log_ctx(AARMD_LOG_INFO, "error", &(struct aarmd_log_ctx){.job_id = j->id, .correlation_id = corr},
                      "/execute not admitted (submit result %d)", (int)sr);
        j->req = NULL;
        j->state = JOB_DONE;
        job_free(j);
        return;
    }
    evhttp_connection_set_closecb(j->conn, job_close_cb, j);
    struct timeval tv = {(time_t)(s->o.ping_interval_ms / 1000), (suseconds_t)((s->o.ping_interval_ms % 1000) * 1000)};
    event_add(j->ping_ev, &tv);
}

static void handle_cancel(struct aarmd_server *s, struct evhttp_request *req, const char *path_id, const char *corr)
{
    char id[AARMD_JOB_ID_MAX + 1];
    if (path_id) {
        char *dec = evhttp_uridecode(path_id, 0, NULL);
        if (!dec || !*dec || strlen(dec) > AARMD_JOB_ID_MAX) {
            send_error(req, 400, "INVALID_REQUEST", "job id in the path must be 1..256 bytes", false, NULL);
            free(dec);
            return;
        }
        snprintf(id, sizeof id, "%s", dec);
        free(dec);
    } else {
        const char *body;
        size_t len;
        struct aarmd_validation *v = calloc(1, sizeof *v);
        if (!v) {
            send_error(req, 500, "INTERNAL", "out of memory", true, NULL);
            return;
        }
        if (!body_of(req, &body, &len) || aarmd_cancel_req_parse(body, len, id, v) != AARMD_OK) {
            send_error(req, 400, "INVALID_REQUEST", v->message[0] ? v->message : "bad body", false, v);
            aarmd_validation_fini(v);
            free(v);
            return;
        }
        free(v);
    }
    aarmd_sched_cancel(s->sched, id);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "status", json_object_new_string("cancelling"));
    json_object_object_add(o, "job_id", json_object_new_string(id));
    send_json(req, 202, "Accepted", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    aarmd_log_ctx(AARMD_LOG_DEBUG, "cancel", &(struct aarmd_log_ctx){.job_id = id, .correlation_id = corr},
                  "cancel requested");
}

static void add_str(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v ? v : ""));
}

static void handle_health(struct aarmd_server *s, struct evhttp_request *req)
{
    bool fatal = s->stats.fatal;
    struct json_object *o = json_object_new_object();
    add_str(o, "status", fatal ? "unhealthy" : "healthy");
    add_str(o, "worker_id", s->s_worker_id);
    add_str(o, "model", s->s_model);
    add_str(o, "model_ref", s->s_model_ref);
    json_object_object_add(o, "resident", json_object_new_boolean(!fatal));
    add_str(o, "quant_kind", s->s_quant);
    json_object_object_add(o, "vram_bytes", json_object_new_uint64(s->o.info.vram_bytes));
    pthread_mutex_lock(&s->lock);
    uint64_t used = s->last_memory_bytes ? s->last_memory_bytes : s->o.info.vram_bytes;
    pthread_mutex_unlock(&s->lock);
    json_object_object_add(o, "vram_bytes_used", json_object_new_uint64(used));
    json_object_object_add(o, "memory_bytes", json_object_new_uint64(s->o.info.vram_bytes));
    add_str(o, "memory_architecture", s->s_memarch);
    add_str(o, "worker_type", s->s_wtype);
    add_str(o, "backend", s->s_backend);
    json_object_object_add(o, "device", json_object_new_int(s->o.info.device));
    add_str(o, "tokenizer_kind", s->s_tokkind);
    json_object_object_add(o, "vocab_size", json_object_new_int64(s->o.info.vocab_size));
    json_object_object_add(o, "context_length", json_object_new_int64(s->o.info.context_length));
    json_object_object_add(o, "jobs_running", json_object_new_int64(s->stats.running));
    json_object_object_add(o, "jobs_queued", json_object_new_int64(s->stats.queued));
    /* paged KV pool (docs/SERVER.md): 0s and kv_paged false when the backend is not paged */
    json_object_object_add(o, "kv_paged", json_object_new_boolean(s->stats.kv_paged));
    json_object_object_add(o, "kv_block_tokens", json_object_new_int64(s->stats.kv_block_tokens));
    json_object_object_add(o, "kv_blocks_total", json_object_new_uint64(s->stats.kv_blocks_total));
    json_object_object_add(o, "kv_blocks_used", json_object_new_uint64(s->stats.kv_blocks_used));
    json_object_object_add(o, "kv_blocks_free", json_object_new_uint64(s->stats.kv_blocks_free));
    json_object_object_add(o, "kv_blocks_cached", json_object_new_uint64(s->stats.kv_blocks_cached));
    json_object_object_add(o, "uptime_seconds", json_object_new_int64((int64_t)((mono_ms() - s->start_ms) / 1000)));
    struct json_object *caps = json_object_new_array();
    json_object_array_add(caps, json_object_new_string("text-gen"));
    json_object_object_add(o, "capabilities", caps);
    add_str(o, "protocol", "sse");
    send_json(req, fatal ? 503 : 200, fatal ? "Service Unavailable" : "OK",
              json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

static void handle_metrics(struct aarmd_server *s, struct evhttp_request *req)
{
    struct aarmd_metrics_gauges g = {
        .jobs_running = s->stats.running, .jobs_queued = s->stats.queued, .vram_bytes = s->o.info.vram_bytes,
        .uptime_seconds = (double)(mono_ms() - s->start_ms) / 1000.0,
        .kv_blocks_used = s->stats.kv_blocks_used, .kv_blocks_free = s->stats.kv_blocks_free,
        .kv_blocks_cached = s->stats.kv_blocks_cached, .prefix_reused_tokens = s->stats.prefix_reused_tokens,
        .steps = s->stats.steps, .step_tokens_sum = s->stats.step_tokens_sum,
        .step_seconds = s->stats.step_seconds, .sample_seconds = s->stats.sample_seconds};
    memcpy(g.step_hist, s->stats.step_hist, sizeof g.step_hist);
    struct evbuffer *b = evbuffer_new();
    if (!b || aarmd_metrics_render(s->metrics, &g, b) != 0) {
        if (b)
            evbuffer_free(b);
        send_error(req, 500, "INTERNAL", "out of memory", true, NULL);
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void handle_shutdown(struct aarmd_server *s, struct evhttp_request *req)
{
    send_json(req, 202, "Accepted", "{\"status\":\"shutting_down\"}");
    aarmd_server_drain(s, "POST /shutdown");
}

/* ---- /tokenize and /detokenize on the worker thread ------------------------ */

static void task_close_cb(struct evhttp_connection *conn, void *arg)
{
    struct task *t = arg;
    if (t->req && !evhttp_request_get_connection(t->req))
        evhttp_request_free(t->req);
    t->req = NULL;
}

static void task_free(struct task *t)
{
    free(t->body);
    free(t->result);
    free(t);
}

/* Loop: deliver a finished task's answer. */
static void task_finish(struct task *t)
{
    if (t->req) {
        evhttp_connection_set_closecb(t->conn, NULL, NULL);
        send_json(t->req, t->status, reason_of(t->status), t->result ? t->result : "{}");
    }
    task_free(t);
}

static void run_task(struct aarmd_server *s, struct task *t)
{
    struct aarmd_validation *v = calloc(1, sizeof *v);
    char err[256];
    if (!v) {
        t->status = 500;
        return;
    }
    if (t->kind == TASK_TOKENIZE) {
        char *content = NULL;
        size_t clen = 0;
        bool add_special, parse_special;
        int32_t *ids = NULL;
        size_t n = 0;
        if (aarmd_tokenize_req_parse(t->body, t->len, &content, &clen, &add_special, &parse_special, v) != AARMD_OK) {
            t->status = 400;
            t->result = aarmd_error_body("INVALID_REQUEST", v->message, false, v);
        } else if (aarmd_tokenizer_encode(s->tok, content, clen, add_special, parse_special, &ids, &n, err,
                                          sizeof err) != AARMD_OK) {
            t->status = 400;
            t->result = aarmd_error_body("INVALID_REQUEST", err, false, NULL);
        } else {
            struct json_object *o = json_object_new_object();
            struct json_object *arr = json_object_new_array_ext((int)n);
            for (size_t i = 0; i < n; i++)
                json_object_array_add(arr, json_object_new_int(ids[i]));
            json_object_object_add(o, "tokens", arr);
            t->result = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
            json_object_put(o);
            t->status = 200;
        }
        free(content);
        free(ids);
    } else {
        int32_t *ids = NULL;
        size_t n = 0;
        char *text = NULL;
        size_t tlen = 0;
        if (aarmd_detokenize_req_parse(t->body, t->len, aarmd_tokenizer_n_vocab(s->tok), &ids, &n, v) != AARMD_OK) {
            t->status = 400;
            t->result = aarmd_error_body("INVALID_REQUEST", v->message, false, v);
        } else if (aarmd_tokenizer_decode(s->tok, ids, n, &text, &tlen, err, sizeof err) != AARMD_OK) {
            t->status = 400;
            t->result = aarmd_error_body("INVALID_REQUEST", err, false, NULL);
        } else {
            struct evbuffer *b = evbuffer_new();
            if (b) {
                evbuffer_add(b, "{\"content\":", 11);
                aarmd_json_string(b, text, tlen);   /* lossy: invalid UTF-8 becomes U+FFFD */
                evbuffer_add(b, "}", 2);            /* with the NUL */
                t->result = strdup((const char *)evbuffer_pullup(b, -1));
                evbuffer_free(b);
            }
            t->status = 200;
        }
        free(text);
        free(ids);
    }
    if (!t->result) {
        t->status = 500;
        t->result = aarmd_error_body("INTERNAL", "out of memory", true, NULL);
    }
    aarmd_validation_fini(v);
    free(v);
}

static void *worker_main(void *arg)
{
    struct aarmd_server *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->worker_stop && !s->tasks_head)
            pthread_cond_wait(&s->worker_cond, &s->lock);
        if (s->worker_stop)
            break;
        struct task *t = s->tasks_head;
        s->tasks_head = t->next;
        if (!s->tasks_head)
            s->tasks_tail = NULL;
        pthread_mutex_unlock(&s->lock);
        run_task(s, t);
        pthread_mutex_lock(&s->lock);
        t->next = s->tasks_done;
        s->tasks_done = t;
        pthread_mutex_unlock(&s->lock);
        wake(s);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void handle_tok(struct aarmd_server *s, struct evhttp_request *req, enum task_kind kind)
{
    const char *body;
    size_t len;
    if (s->draining) {
        send_error(req, 503, "SHUTTING_DOWN", "worker is shutting down", false, NULL);
        return;
    }
    if (!s->tok) {
        send_error(req, 503, "INTERNAL", "no tokenizer loaded", false, NULL);
        return;
    }
    struct task *t = calloc(1, sizeof *t);
    if (!t || !body_of(req, &body, &len) || !(t->body = malloc(len + 1))) {
        free(t);
        send_error(req, 500, "INTERNAL", "out of memory", true, NULL);
        return;
    }
    memcpy(t->body, body, len);
    t->body[len] = '\0';
    t->len = len;
    t->srv = s;
    t->kind = kind;
    t->req = req;
    t->conn = evhttp_request_get_connection(req);
    evhttp_connection_set_closecb(t->conn, task_close_cb, t);
    pthread_mutex_lock(&s->lock);
    if (s->tasks_tail)
        s->tasks_tail->next = t;
    else
        s->tasks_head = t;
    s->tasks_tail = t;
    pthread_cond_signal(&s->worker_cond);
    pthread_mutex_unlock(&s->lock);
}

/* ---- routing --------------------------------------------------------------- */

struct route {
    const char *path;
    bool prefix;                /* "/cancel/" + id */
    enum evhttp_cmd_type method;
    const char *allow;
    bool auth;
};

static const struct route routes[] = {
    {"/execute", false, EVHTTP_REQ_POST, "POST", true},
    {"/cancel", false, EVHTTP_REQ_POST, "POST", true},
    {"/cancel/", true, EVHTTP_REQ_POST, "POST", true},
    {"/health", false, EVHTTP_REQ_GET, "GET", false},
    {"/metrics", false, EVHTTP_REQ_GET, "GET", true},
    {"/shutdown", false, EVHTTP_REQ_POST, "POST", true},
    {"/tokenize", false, EVHTTP_REQ_POST, "POST", true},
    {"/detokenize", false, EVHTTP_REQ_POST, "POST", true},
};

static void gen_cb(struct evhttp_request *req, void *arg)
{
    struct aarmd_server *s = arg;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);

    char corr[CORR_MAX + 1];
    const char *given = evhttp_find_header(in, "X-Correlation-Id");
    if (aarmd_correlation_id_ok(given))
        snprintf(corr, sizeof corr, "%s", given);
    else
        aarmd_uuid_v4(corr, sizeof corr);
    evhttp_add_header(out, "X-Correlation-Id", corr);

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || !*path)
        path = "/";
    const struct route *r = NULL;
    const char *path_id = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t pl = strlen(routes[i].path);
        if (routes[i].prefix ? (strncmp(path, routes[i].path, pl) == 0 && path[pl] && !strchr(path + pl, '/'))
                             : strcmp(path, routes[i].path) == 0) {
            r = &routes[i];
            path_id = routes[i].prefix ? path + pl : NULL;
            break;
        }
    }
    if (!r) {
        char msg[300];
        snprintf(msg, sizeof msg, "no such endpoint: %.200s", path);
        send_error(req, 404, "NOT_FOUND", msg, false, NULL);
        return;
    }
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m != r->method && !(m == EVHTTP_REQ_HEAD && r->method == EVHTTP_REQ_GET)) {
        char msg[300];
        evhttp_add_header(out, "Allow", r->allow);
        snprintf(msg, sizeof msg, "%s accepts %s only", r->path, r->allow);
        send_error(req, 405, "METHOD_NOT_ALLOWED", msg, false, NULL);
        return;
    }
    if (r->auth && s->token && !aarmd_bearer_ok(evhttp_find_header(in, "Authorization"), s->token)) {
        evhttp_add_header(out, "WWW-Authenticate", "Bearer");
        send_error(req, 401, "UNAUTHORIZED", "missing or wrong bearer token", false, NULL);
        aarmd_log_ctx(AARMD_LOG_WARN, "error", &(struct aarmd_log_ctx){.correlation_id = corr},
                      "unauthorized request to %s", r->path);
        return;
    }
    if (strcmp(r->path, "/execute") == 0)
        handle_execute(s, req, corr);
    else if (strncmp(r->path, "/cancel", 7) == 0)
        handle_cancel(s, req, path_id, corr);
    else if (strcmp(r->path, "/health") == 0)
        handle_health(s, req);
    else if (strcmp(r->path, "/metrics") == 0)
        handle_metrics(s, req);
    else if (strcmp(r->path, "/shutdown") == 0)
        handle_shutdown(s, req);
    else if (strcmp(r->path, "/tokenize") == 0)
        handle_tok(s, req, TASK_TOKENIZE);
    else
        handle_tok(s, req, TASK_DETOKENIZE);
}

/* ---- stats, drain ---------------------------------------------------------- */

static void stats_cb(evutil_socket_t fd, short what, void *arg)
{
    struct aarmd_server *s = arg;
    aarmd_sched_stats(s->sched, &s->stats);
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    struct aarmd_server *s = arg;
    uint64_t now = mono_ms();
    bool live = false;
    for (struct job *j = s->jobs; j; j = j->next)
        if (j->sched_live)
            live = true;
    bool finished = !live && !s->jobs;
    if (!finished && !s->cancelled_all && now >= s->drain_deadline_ms) {
        s->cancelled_all = true;
        s->cancel_deadline_ms = now + 1000;
        for (struct job *j = s->jobs; j; j = j->next)
            if (j->sched_live) {
                aarmd_log_ctx(AARMD_LOG_INFO, "cancel", &(struct aarmd_log_ctx){.job_id = j->id, .correlation_id = j->corr},
                              "drain deadline reached");
                aarmd_sched_cancel(s->sched, j->id);
                if (j->paused)
                    aarmd_sched_pause(s->sched, j->id, false);
            }
    }
    if (finished || (s->cancelled_all && now >= s->cancel_deadline_ms)) {
        event_del(s->drain_ev);
        if (!s->drained_called) {
            s->drained_called = true;
            if (s->o.drained)
                s->o.drained(s->o.drained_user);
        }
    }
}

void aarmd_server_drain(struct aarmd_server *s, const char *reason)
{
    if (s->draining)
        return;
    s->draining = true;
    aarmd_log(AARMD_LOG_INFO, "shutdown", "draining (%s): %u job(s) open, grace %u ms", reason ? reason : "",
              s->n_jobs, s->o.drain_ms);
    aarmd_sched_stop_accepting(s->sched);
    s->drain_deadline_ms = mono_ms() + s->o.drain_ms;
    struct timeval tv = {0, 50 * 1000};
    event_add(s->drain_ev, &tv);
}

/* ---- lifecycle -------------------------------------------------------------- */

static char *dup_or_empty(const char *v)
{
    return strdup(v ? v : "");
}

static int piece_cb(void *user, int32_t id, char *buf, size_t cap)
{
    return aarmd_tokenizer_piece(user, id, buf, cap);
}

struct aarmd_server *aarmd_server_new(struct event_base *base, struct aarmd_sched *sched,
                                      const struct aarmd_tokenizer *tok, struct aarmd_metrics *metrics,
                                      const struct aarmd_server_opts *o, char *err, size_t errlen)
{
    struct aarmd_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base = base;
    s->sched = sched;
    s->tok = tok;
    s->metrics = metrics;
    s->o = *o;
    if (!s->o.backpressure_bytes)
        s->o.backpressure_bytes = 256 * 1024;
    if (!s->o.ping_interval_ms)
        s->o.ping_interval_ms = 15000;
    if (!s->o.drain_ms)
        s->o.drain_ms = 5000;
    if (!s->o.idle_timeout_s)
        s->o.idle_timeout_s = 600;
    s->start_ms = mono_ms();
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->worker_cond, NULL);

    const struct aarmd_server_info *i = &o->info;
    s->s_worker_id = dup_or_empty(i->worker_id);
    s->s_model = dup_or_empty(i->model);
    s->s_model_ref = dup_or_empty(i->model_ref);
    s->s_quant = dup_or_empty(i->quant_kind);
    s->s_memarch = dup_or_empty(i->memory_architecture);
    s->s_wtype = dup_or_empty(i->worker_type);
    s->s_backend = dup_or_empty(i->backend);
    s->s_tokkind = dup_or_empty(i->tokenizer_kind);
    s->token = o->api_token ? strdup(o->api_token) : NULL;
    if (!s->s_worker_id || !s->s_model || !s->s_model_ref || !s->s_quant || !s->s_memarch || !s->s_wtype ||
        !s->s_backend || !s->s_tokkind || (o->api_token && !s->token))
        goto nomem;
    s->sse.model = s->s_model;
    s->sse.piece = tok ? piece_cb : NULL;
    s->sse.piece_user = (void *)tok;

    s->notify_ev = event_new(base, -1, EV_PERSIST | EV_READ, notify_cb, s);
    s->stats_ev = event_new(base, -1, EV_PERSIST, stats_cb, s);
    s->drain_ev = event_new(base, -1, EV_PERSIST, drain_cb, s);
    s->http = evhttp_new(base);
    if (!s->notify_ev || !s->stats_ev || !s->drain_ev || !s->http)
        goto nomem;
    event_add(s->notify_ev, NULL);   /* never fires by itself: event_active wakes it */
    struct timeval tv = {0, 100 * 1000};
    event_add(s->stats_ev, &tv);
    if (sched)
        aarmd_sched_stats(sched, &s->stats);

    evhttp_set_max_body_size(s->http, MAX_BODY_BYTES);
    evhttp_set_max_headers_size(s->http, 64 * 1024);
    evhttp_set_timeout(s->http, (int)s->o.idle_timeout_s);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(s->http, gen_cb, s);

    s->sock = evhttp_bind_socket_with_handle(s->http, o->host, o->port);
    if (!s->sock) {
        snprintf(err, errlen, "cannot listen on %s:%u: %s", o->host, (unsigned)o->port,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        goto fail;
    }
    struct sockaddr_storage ss;
    ev_socklen_t sl = sizeof ss;
    evutil_socket_t fd = evhttp_bound_socket_get_fd(s->sock);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    if (pthread_create(&s->worker, NULL, worker_main, s) != 0) {
        snprintf(err, errlen, "cannot start the tokenizer thread");
        goto fail;
    }
    s->worker_started = true;
    return s;
nomem:
    snprintf(err, errlen, "out of memory");
fail:
    aarmd_server_free(s);
    return NULL;
}

uint16_t aarmd_server_port(const struct aarmd_server *s)
{
    return s->port;
}

void aarmd_server_free(struct aarmd_server *s)
{
    if (!s)
        return;
    if (s->worker_started) {
        pthread_mutex_lock(&s->lock);
        s->worker_stop = true;
        pthread_cond_signal(&s->worker_cond);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->worker, NULL);
    }
    /* deliver what is still pending while the connections exist */
    if (s->notify_ev)
        notify_cb(-1, 0, s);
    /* queued tasks never ran: answer them */
    for (struct task *t = s->tasks_head, *next; t; t = next) {
        next = t->next;
        t->status = 503;
        t->result = aarmd_error_body("SHUTTING_DOWN", "worker is shutting down", false, NULL);
        task_finish(t);
    }
    /* jobs whose terminal event never came (scheduler freed first) go with their connections */
    for (struct job *j = s->jobs; j; j = j->next) {
        if (j->state == JOB_WAITING_START || j->state == JOB_STREAMING)
            evhttp_connection_set_closecb(j->conn, NULL, NULL);
        j->sched_live = false;
    }
    if (s->http)
        evhttp_free(s->http);
    while (s->jobs) {
        s->jobs->state = JOB_DONE;
        job_free(s->jobs);
    }
    if (s->notify_ev)
        event_free(s->notify_ev);
    if (s->stats_ev)
        event_free(s->stats_ev);
    if (s->drain_ev)
        event_free(s->drain_ev);
    pthread_cond_destroy(&s->worker_cond);
    pthread_mutex_destroy(&s->lock);
    free(s->token);
    free(s->s_worker_id);
    free(s->s_model);
    free(s->s_model_ref);
    free(s->s_quant);
    free(s->s_memarch);
    free(s->s_wtype);
    free(s->s_backend);
    free(s->s_tokkind);
    free(s);
}
