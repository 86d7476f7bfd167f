/* test_server.c — core/server.c over real sockets. The scheduler is replaced at
 * the link seam by a fake defined below (aarmd_sched_*), whose job threads emit
 * events like the real one, so the server's threading, SSE streams, rejections,
 * auth, pings, backpressure, cancel-on-close and drain are tested without a model. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "request.h"
#include "scheduler.h"
#include "server.h"

/* ---- the fake scheduler ------------------------------------------------------ */

struct fjob {
    char id[AARMD_JOB_ID_MAX + 1];
    char prompt[64];
    uint32_t max_tokens;
    uint64_t seed;
    aarmd_job_event_fn cb;
    void *user;
    atomic_bool cancel, paused, done;
    pthread_t th;
    struct fjob *next;
};

static pthread_mutex_t flock = PTHREAD_MUTEX_INITIALIZER;
static struct fjob *fjobs;
static bool f_stop_accepting;
static atomic_int n_pause_on, n_pause_off, n_cancel;
static char last_cancel[AARMD_JOB_ID_MAX + 1];

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void emit_error(struct fjob *j, const char *code, const char *msg, int http)
{
    struct aarmd_job_event ev = {.kind = AARMD_EV_ERROR, .job_id = j->id};
    ev.u.error.code = code;
    ev.u.error.message = msg;
    ev.u.error.http_status = http;
    j->cb(j->user, &ev);
    atomic_store(&j->done, true);
}

static void *fjob_main(void *arg)
{
    struct fjob *j = arg;
    if (!strcmp(j->prompt, "reject")) {
        emit_error(j, "INVALID_REQUEST", "prompt is 9999 tokens but the context holds 8192", 400);
        return NULL;
    }
    if (!strcmp(j->prompt, "wait"))
        for (int i = 0; i < 350 && !atomic_load(&j->cancel); i++)
            sleep_ms(1);
    struct aarmd_job_event ev = {.kind = AARMD_EV_STARTED, .job_id = j->id};
    ev.u.started.seed = j->seed;
    ev.u.started.tokens_in = 3;
    ev.u.started.started_at_ms = wall_ms();
    j->cb(j->user, &ev);
    bool big = !strcmp(j->prompt, "big"), slow = !strcmp(j->prompt, "slow");
    static char text[4096];
    for (uint32_t i = 0; i < j->max_tokens; i++) {
        while (atomic_load(&j->paused) && !atomic_load(&j->cancel))
            sleep_ms(1);
        if (atomic_load(&j->cancel)) {
            emit_error(j, "CANCELLED", "job cancelled", 0);
            return NULL;
        }
        char t[4096];
        if (big) {
            memset(t, 'x', 3000);
            snprintf(t + 3000, sizeof t - 3000, "%u", i);
        } else {
            snprintf(t, sizeof t, "t%u ", i);
        }
        (void)text;
        struct aarmd_job_event tk = {.kind = AARMD_EV_TOKEN, .job_id = j->id};
        tk.u.token.text = t;
        tk.u.token.len = strlen(t);
        tk.u.token.index = i;
        tk.u.token.id = (int32_t)(100 + i);
        j->cb(j->user, &tk);
        sleep_ms(slow ? 30 : 1);
    }
    struct aarmd_job_event end = {.kind = AARMD_EV_END, .job_id = j->id};
    end.u.end.tokens_out = j->max_tokens;
    end.u.end.decode_time_ms = 1.5;
    end.u.end.prompt_time_ms = 0.5;
    end.u.end.stop_reason = "MAX_TOKENS";
    j->cb(j->user, &end);
    atomic_store(&j->done, true);
    return NULL;
}

enum aarmd_submit_result aarmd_sched_submit(struct aarmd_sched *s, const struct aarmd_job_request *r,
                                            aarmd_job_event_fn cb, void *user)
{
    pthread_mutex_lock(&flock);
    enum aarmd_submit_result res = AARMD_SUBMIT_OK;
    if (f_stop_accepting)
        res = AARMD_SUBMIT_SHUTTING_DOWN;
    else if (!strncmp(r->job_id, "busy", 4))
        res = AARMD_SUBMIT_BUSY;
    for (struct fjob *f = fjobs; f && res == AARMD_SUBMIT_OK; f = f->next)
        if (!strcmp(f->id, r->job_id) && !atomic_load(&f->done))
            res = AARMD_SUBMIT_DUPLICATE;
    if (res == AARMD_SUBMIT_OK) {
        struct fjob *j = calloc(1, sizeof *j);
        snprintf(j->id, sizeof j->id, "%s", r->job_id);
        snprintf(j->prompt, sizeof j->prompt, "%.*s", (int)r->prompt_len, r->prompt);
        j->max_tokens = r->max_tokens;
        j->seed = r->sampling.seed;
        j->cb = cb;
        j->user = user;
        j->next = fjobs;
        fjobs = j;
        pthread_create(&j->th, NULL, fjob_main, j);
    }
    pthread_mutex_unlock(&flock);
    return res;
}

void aarmd_sched_cancel(struct aarmd_sched *s, const char *job_id)
{
    pthread_mutex_lock(&flock);
    atomic_fetch_add(&n_cancel, 1);
    snprintf(last_cancel, sizeof last_cancel, "%s", job_id);
    for (struct fjob *f = fjobs; f; f = f->next)
        if (!strcmp(f->id, job_id))
            atomic_store(&f->cancel, true);
    pthread_mutex_unlock(&flock);
}

void aarmd_sched_pause(struct aarmd_sched *s, const char *job_id, bool paused)
{
    atomic_fetch_add(paused ? &n_pause_on : &n_pause_off, 1);
    pthread_mutex_lock(&flock);
    for (struct fjob *f = fjobs; f; f = f->next)
        if (!strcmp(f->id, job_id))
            atomic_store(&f->paused, paused);
    pthread_mutex_unlock(&flock);
}

void aarmd_sched_stop_accepting(struct aarmd_sched *s)
{
    pthread_mutex_lock(&flock);
    f_stop_accepting = true;
    pthread_mutex_unlock(&flock);
}

void aarmd_sched_stats(struct aarmd_sched *s, struct aarmd_sched_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&flock);
    for (struct fjob *f = fjobs; f; f = f->next)
        if (!atomic_load(&f->done))
            out->running++;
    pthread_mutex_unlock(&flock);
}

uint64_t aarmd_seed_from_os(void)
{
    return 4242;
}

/* ---- the server under test ------------------------------------------------- */

static struct event_base *base;
static struct aarmd_server *srv;
static struct aarmd_metrics *metrics;
static pthread_t loop_thread;
static uint16_t port;
static atomic_int drained_calls;

static void drained_cb(void *user)
{
    atomic_fetch_add(&drained_calls, 1);
}

static void *loop_main(void *arg)
{
    event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void start(const char *token, uint32_t drain_ms)
{
    aarmd_log_setup(AARMD_LOG_JSON, "w-test", AARMD_LOG_ERROR + 1);   /* quiet */
    cr_assert_eq(evthread_use_pthreads(), 0);
    base = event_base_new();
    metrics = aarmd_metrics_new("w-test");
    static int dummy;
    struct aarmd_server_opts o = {
        .host = "127.0.0.1", .port = 0, .api_token = token, .max_tokens_limit = 2048,
        .backpressure_bytes = 16 * 1024, .ping_interval_ms = 100, .drain_ms = drain_ms,
        .drained = drained_cb,
        .info = {.worker_id = "w-test", .model = "fake-model", .model_ref = "/m/fake.gguf", .quant_kind = "Q4_1",
                 .memory_architecture = "mock", .worker_type = "mock", .backend = "mock",
                 .tokenizer_kind = "gguf-bpe", .device = 0, .vocab_size = 1000, .context_length = 512,
                 .vram_bytes = 777}};
    char err[256];
    srv = aarmd_server_new(base, (struct aarmd_sched *)&dummy, NULL, metrics, &o, err, sizeof err);
    cr_assert_not_null(srv, "%s", err);
    port = aarmd_server_port(srv);
    cr_assert_neq(port, 0);
    pthread_create(&loop_thread, NULL, loop_main, NULL);
}

static void stop(void)
{
    /* end every fake job, then the loop, then free in the daemon's order */
    pthread_mutex_lock(&flock);
    for (struct fjob *f = fjobs; f; f = f->next)
        atomic_store(&f->cancel, true);
    pthread_mutex_unlock(&flock);
    while (fjobs) {
        struct fjob *f = fjobs;
        pthread_join(f->th, NULL);
        fjobs = f->next;
        free(f);
    }
    event_base_loopexit(base, NULL);
    pthread_join(loop_thread, NULL);
    aarmd_server_free(srv);
    aarmd_metrics_free(metrics);
    event_base_free(base);
    f_stop_accepting = false;
}

static void setup_plain(void) { start(NULL, 5000); }
static void setup_auth(void) { start("tok-123", 5000); }
static void setup_short_drain(void) { start(NULL, 200); }

/* ---- a tiny HTTP client ------------------------------------------------------ */

static int connect_srv(int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void send_req(int fd, const char *method, const char *path, const char *headers, const char *body)
{
    char head[2048];
    size_t bl = body ? strlen(body) : 0;
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n",
                     method, path, headers ? headers : "", bl);
    cr_assert_eq(send(fd, head, (size_t)n, MSG_NOSIGNAL), n);
    if (bl)
        (void)send(fd, body, bl, MSG_NOSIGNAL);   /* a 413 may close the connection mid-body */
}

/* Reads until EOF; returns a malloc'd NUL-terminated response. */
static char *read_all(int fd)
{
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    for (;;) {
        if (cap - len < 4096)
            b = realloc(b, cap *= 2);
        ssize_t r = recv(fd, b + len, cap - len - 1, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    b[len] = '\0';
    close(fd);
    return b;
}

static char *request(const char *method, const char *path, const char *headers, const char *body)
{
    int fd = connect_srv(0);
    send_req(fd, method, path, headers, body);
    return read_all(fd);
}

static int status_of(const char *resp)
{
    int st = 0;
    sscanf(resp, "HTTP/1.1 %d", &st);
    return st;
}

static const char *body_of(const char *resp)
{
    const char *b = strstr(resp, "\r\n\r\n");
    cr_assert_not_null(b, "no body in %s", resp);
    return b + 4;
}

static struct json_object *json_body(const char *resp)
{
    struct json_object *o = json_tokener_parse(body_of(resp));
    cr_assert_not_null(o, "body is not JSON: %s", resp);
    return o;
}

static const char *jget(struct json_object *o, const char *path1, const char *path2)
{
    struct json_object *v;
    cr_assert(json_object_object_get_ex(o, path1, &v), "no %s", path1);
    if (path2)
        cr_assert(json_object_object_get_ex(v, path2, &v), "no %s.%s", path1, path2);
    return json_object_get_string(v);
}

/* Position of the n-th occurrence of needle, or NULL. */
static const char *nth(const char *hay, const char *needle, int n)
{
    const char *p = hay;
    for (int i = 0; p && i <= n; i++) {
        p = strstr(i ? p + 1 : p, needle);
    }
    return p;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ---- tests ------------------------------------------------------------------- */

Test(server, execute_streams_sse, .init = setup_plain, .fini = stop)
{
    char *r = request("POST", "/execute", "X-Correlation-Id: corr-42.a:b_c\r\n",
                      "{\"job_id\":\"s1\",\"prompt\":\"go\",\"max_tokens\":3}");
    cr_assert_eq(status_of(r), 200, "%s", r);
    cr_assert(strstr(r, "Content-Type: text/event-stream\r\n"), "%s", r);
    cr_assert(strstr(r, "Cache-Control: no-cache\r\n"));
    cr_assert(strstr(r, "X-Correlation-Id: corr-42.a:b_c\r\n"), "correlation id echoed");
    cr_assert(strstr(r, "event: started\ndata: {\"type\":\"started\",\"job_id\":\"s1\",\"model\":\"fake-model\""));
    cr_assert(strstr(r, "\"seed\":4242,"), "a null seed is drawn by the server and reported");
    cr_assert(strstr(r, "event: token\ndata: {\"type\":\"token\",\"t\":\"t0 \",\"i\":0,\"id\":100}\n\n"), "%s", r);
    cr_assert(strstr(r, "\"t\":\"t2 \",\"i\":2,\"id\":102}"));
    cr_assert(strstr(r, "event: end\ndata: {\"type\":\"end\",\"tokens_out\":3,"));
    const char *st = strstr(r, "event: started"), *t0 = strstr(r, "\"i\":0"), *t2 = strstr(r, "\"i\":2"),
               *end = strstr(r, "event: end");
    cr_assert(st < t0 && t0 < t2 && t2 < end, "events in order");
    free(r);

    r = request("POST", "/execute", NULL, "{\"job_id\":\"s2\",\"prompt\":\"go\",\"max_tokens\":1,\"seed\":7}");
    cr_assert(strstr(r, "\"seed\":7,"), "a given seed is passed through");
    free(r);
}

Test(server, rejection_before_start_is_a_json_error, .init = setup_plain, .fini = stop)
{
    char *r = request("POST", "/execute", NULL, "{\"job_id\":\"r1\",\"prompt\":\"reject\"}");
    cr_assert_eq(status_of(r), 400, "%s", r);
    cr_assert(strstr(r, "Content-Type: application/json"));
    struct json_object *o = json_body(r);
    cr_assert_str_eq(jget(o, "error", "code"), "INVALID_REQUEST");
    cr_assert_str_eq(jget(o, "error", "message"), "prompt is 9999 tokens but the context holds 8192");
    json_object_put(o);
    free(r);
}

Test(server, validation_duplicate_busy, .init = setup_plain, .fini = stop)
{
    char *r = request("POST", "/execute", NULL, "{\"job_id\":\"v\",\"prompt\":\"go\",\"max_tokens\":2049,\"top_k\":1001}");
    cr_assert_eq(status_of(r), 400);
    struct json_object *o = json_body(r);
    cr_assert_str_eq(jget(o, "error", "code"), "INVALID_REQUEST");
    struct json_object *errs;
    cr_assert(json_object_object_get_ex(o, "errors", &errs));
    cr_assert_eq(json_object_array_length(errs), 2);
    cr_assert_str_eq(jget(json_object_array_get_idx(errs, 1), "constraint", NULL), "range(0..=1000)",
                     "top_k bound is the vocab size");
    json_object_put(o);
    free(r);

    r = request("POST", "/execute", NULL, "{not json");
    cr_assert_eq(status_of(r), 400);
    cr_assert(strstr(r, "malformed JSON"));
    cr_assert_null(strstr(r, "\"errors\""), "no field list for malformed JSON");
    free(r);

    int fd = connect_srv(0);
    send_req(fd, "POST", "/execute", NULL, "{\"job_id\":\"d1\",\"prompt\":\"slow\",\"max_tokens\":20}");
    sleep_ms(100);
    r = request("POST", "/execute", NULL, "{\"job_id\":\"d1\",\"prompt\":\"go\"}");
    cr_assert_eq(status_of(r), 409, "%s", r);
    cr_assert(strstr(r, "\"code\":\"DUPLICATE_JOB\""));
    free(r);
    free(read_all(fd));

    r = request("POST", "/execute", NULL, "{\"job_id\":\"busy-1\",\"prompt\":\"go\"}");
    cr_assert_eq(status_of(r), 503);
    cr_assert(strstr(r, "Retry-After: 1\r\n"), "%s", r);
    cr_assert(strstr(r, "\"code\":\"BUSY\",\"message\":\"queue is full\",\"retriable\":true"), "%s", r);
    free(r);
}

Test(server, routes_methods_and_sizes, .init = setup_plain, .fini = stop)
{
    char *r = request("GET", "/nope", NULL, NULL);
    cr_assert_eq(status_of(r), 404);
    free(r);
    r = request("GET", "/execute", NULL, NULL);
    cr_assert_eq(status_of(r), 405);
    cr_assert(strstr(r, "Allow: POST\r\n"), "%s", r);
    free(r);
    r = request("POST", "/health", NULL, "{}");
    cr_assert_eq(status_of(r), 405);
    cr_assert(strstr(r, "Allow: GET\r\n"));
    free(r);
    r = request("DELETE", "/metrics", NULL, NULL);
    cr_assert_eq(status_of(r), 405);
    free(r);

    size_t n = (1u << 20) + 10;
    char *big = malloc(n + 1);
    memset(big, ' ', n);
    big[n] = '\0';
    r = request("POST", "/execute", NULL, big);
    cr_assert_eq(status_of(r), 413, "%.200s", r);
    free(r);
    free(big);
}

Test(server, correlation_ids, .init = setup_plain, .fini = stop)
{
    const char *bad[] = {"X-Correlation-Id: has space\r\n", "X-Correlation-Id: \r\n", "X-Correlation-Id: a/b\r\n", NULL};
    for (int i = 0; i < 4; i++) {
        char *r = request("GET", "/health", bad[i], NULL);
        const char *h = strstr(r, "X-Correlation-Id: ");
        cr_assert_not_null(h);
        char id[64] = "";
        sscanf(h + 18, "%63[^\r]", id);
        cr_assert_eq(strlen(id), 36, "case %d: '%s' is not a UUID", i, id);
        cr_assert_eq(id[14], '4', "version 4");
        cr_assert(strchr("89ab", id[19]), "variant");
        free(r);
    }
    char longid[140];
    memset(longid, 'a', 129);
    longid[129] = '\0';
    cr_assert_not(aarmd_correlation_id_ok(longid));
    longid[128] = '\0';
    cr_assert(aarmd_correlation_id_ok(longid));
    char a[40], b[40];
    aarmd_uuid_v4(a, sizeof a);
    aarmd_uuid_v4(b, sizeof b);
    cr_assert_str_neq(a, b);
}

Test(server, bearer_auth, .init = setup_auth, .fini = stop)
{
    char *r = request("GET", "/health", NULL, NULL);
    cr_assert_eq(status_of(r), 200, "/health is exempt");
    free(r);
    const char *denied[] = {NULL, "Authorization: Bearer tok-12\r\n", "Authorization: Bearer tok-1234\r\n",
                            "Authorization: Basic tok-123\r\n", "Authorization: tok-123\r\n"};
    for (int i = 0; i < 5; i++) {
        r = request("GET", "/metrics", denied[i], NULL);
        cr_assert_eq(status_of(r), 401, "case %d", i);
        cr_assert(strstr(r, "\"code\":\"UNAUTHORIZED\""));
        free(r);
    }
    r = request("GET", "/metrics", "Authorization: Bearer tok-123\r\n", NULL);
    cr_assert_eq(status_of(r), 200);
    free(r);
    r = request("POST", "/execute", NULL, "{\"job_id\":\"a\",\"prompt\":\"go\"}");
    cr_assert_eq(status_of(r), 401);
    free(r);
    cr_assert(aarmd_bearer_ok("bearer tok-123 ", "tok-123"));
    cr_assert_not(aarmd_bearer_ok("Bearer ", "tok-123"));
}

Test(server, health_and_metrics, .init = setup_plain, .fini = stop)
{
    char *r = request("POST", "/execute", NULL, "{\"job_id\":\"m1\",\"prompt\":\"go\",\"max_tokens\":4}");
    free(r);
    sleep_ms(150);   /* the cached stats refresh every 100 ms */
    r = request("GET", "/health", NULL, NULL);
    cr_assert_eq(status_of(r), 200);
    struct json_object *o = json_body(r);
    const char *fields[] = {"status", "worker_id", "model", "model_ref", "resident", "quant_kind", "vram_bytes",
                            "vram_bytes_used", "memory_bytes", "memory_architecture", "worker_type", "backend",
                            "device", "tokenizer_kind", "vocab_size", "context_length", "jobs_running",
                            "jobs_queued", "uptime_seconds", "capabilities", "protocol"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        cr_assert(json_object_object_get_ex(o, fields[i], NULL), "/health lacks %s", fields[i]);
    cr_assert_str_eq(jget(o, "status", NULL), "healthy");
    cr_assert_str_eq(jget(o, "protocol", NULL), "sse");
    cr_assert_str_eq(jget(o, "vram_bytes", NULL), "777");
    cr_assert_str_eq(jget(o, "context_length", NULL), "512");
    json_object_put(o);
    free(r);

    r = request("GET", "/metrics", NULL, NULL);
    cr_assert_eq(status_of(r), 200);
    cr_assert(strstr(r, "Content-Type: text/plain; version=0.0.4"));
    cr_assert(strstr(r, "worker_requests_total{worker_id=\"w-test\",outcome=\"success\"} 1\n"), "%s", r);
    cr_assert(strstr(r, "worker_tokens_generated_total{worker_id=\"w-test\"} 4\n"));
    cr_assert(strstr(r, "worker_tokens_in_total{worker_id=\"w-test\"} 3\n"));
    cr_assert(strstr(r, "worker_time_to_first_token_ms_count{worker_id=\"w-test\"} 1\n"));
    free(r);
}

Test(server, cancel_endpoints, .init = setup_plain, .fini = stop)
{
    int fd = connect_srv(0);
    send_req(fd, "POST", "/execute", NULL, "{\"job_id\":\"c 1/x\",\"prompt\":\"slow\",\"max_tokens\":200}");
    sleep_ms(100);
    char *r = request("POST", "/cancel/c%201%2Fx", NULL, NULL);   /* the path form is percent-decoded */
    cr_assert_eq(status_of(r), 202, "%s", r);
    cr_assert_str_eq(body_of(r), "{\"status\":\"cancelling\",\"job_id\":\"c 1/x\"}\n");
    cr_assert_str_eq(last_cancel, "c 1/x");
    free(r);
    char *s = read_all(fd);
    cr_assert(strstr(s, "event: error\ndata: {\"type\":\"error\",\"code\":\"CANCELLED\""), "%s", s);
    cr_assert_null(strstr(s, "event: end"));
    free(s);

    fd = connect_srv(0);
    send_req(fd, "POST", "/execute", NULL, "{\"job_id\":\"c2\",\"prompt\":\"slow\",\"max_tokens\":200}");
    sleep_ms(100);
    r = request("POST", "/cancel", NULL, "{\"job_id\":\"c2\"}");
    cr_assert_eq(status_of(r), 202);
    cr_assert_str_eq(body_of(r), "{\"status\":\"cancelling\",\"job_id\":\"c2\"}\n");
    free(r);
    s = read_all(fd);
    cr_assert(strstr(s, "\"code\":\"CANCELLED\""), "%s", s);
    free(s);

    r = request("POST", "/cancel/unknown-job", NULL, NULL);
    cr_assert_eq(status_of(r), 202, "unknown ids are accepted too");
    cr_assert_str_eq(last_cancel, "unknown-job");
    free(r);
    r = request("POST", "/cancel", NULL, "{\"id\":1}");
    cr_assert_eq(status_of(r), 400);
    free(r);
}

Test(server, closing_the_stream_cancels_the_job, .init = setup_plain, .fini = stop)
{
    int fd = connect_srv(0);
    send_req(fd, "POST", "/execute", NULL, "{\"job_id\":\"gone\",\"prompt\":\"slow\",\"max_tokens\":500}");
    char buf[512];
    cr_assert(recv(fd, buf, sizeof buf, 0) > 0);
    int before = atomic_load(&n_cancel);
    close(fd);
    for (int i = 0; i < 200 && atomic_load(&n_cancel) == before; i++)
        sleep_ms(5);
    cr_assert_gt(atomic_load(&n_cancel), before, "no cancel after the client left");
    cr_assert_str_eq(last_cancel, "gone");
    /* the server survives and serves the next request */
    sleep_ms(50);
    char *r = request("GET", "/health", NULL, NULL);
    cr_assert_eq(status_of(r), 200);
    free(r);
}

Test(server, ping_while_waiting, .init = setup_plain, .fini = stop)
{
    char *r = request("POST", "/execute", NULL, "{\"job_id\":\"p1\",\"prompt\":\"wait\",\"max_tokens\":1}");
    cr_assert_eq(status_of(r), 200);
    const char *ping = strstr(r, ": ping\n\n"), *st = strstr(r, "event: started");
    cr_assert_not_null(ping, "no ping in %s", r);
    cr_assert(ping < st, "the ping comes while the job waits");
    cr_assert_geq(count(r, ": ping\n\n"), 2, "350 ms of waiting at 100 ms per ping");
    free(r);
}

Test(server, backpressure_pauses_and_resumes, .init = setup_plain, .fini = stop)
{
    int fd = connect_srv(4096);
    send_req(fd, "POST", "/execute", NULL, "{\"job_id\":\"bp\",\"prompt\":\"big\",\"max_tokens\":2000}");
    for (int i = 0; i < 400 && atomic_load(&n_pause_on) == 0; i++)
        sleep_ms(5);
    cr_assert_gt(atomic_load(&n_pause_on), 0, "a client that does not read must pause its job");
    char *s = read_all(fd);
    cr_assert_gt(atomic_load(&n_pause_off), 0, "reading resumes the job");
    cr_assert_eq(count(s, "event: token"), 2000);
    cr_assert(strstr(s, "event: end"));
    cr_assert_not_null(nth(s, "\"i\":1999", 0));
    free(s);
}

Test(server, shutdown_drains, .init = setup_plain, .fini = stop)
{
    int fd = connect_srv(0);
    send_req(fd, "POST", "/execute", NULL, "{\"job_id\":\"run\",\"prompt\":\"slow\",\"max_tokens\":10}");
    sleep_ms(50);
    char *r = request("POST", "/shutdown", NULL, NULL);
    cr_assert_eq(status_of(r), 202);
    free(r);
    r = request("POST", "/execute", NULL, "{\"job_id\":\"late\",\"prompt\":\"go\"}");
    cr_assert_eq(status_of(r), 503);
    cr_assert(strstr(r, "\"code\":\"SHUTTING_DOWN\""));
    free(r);
    cr_assert_eq(atomic_load(&drained_calls), 0, "not drained while a job runs");
    char *s = read_all(fd);
    cr_assert(strstr(s, "event: end"), "the running job finishes: %s", s);
    free(s);
    for (int i = 0; i < 100 && atomic_load(&drained_calls) == 0; i++)
        sleep_ms(10);
    cr_assert_eq(atomic_load(&drained_calls), 1);
}

Test(server, drain_deadline_cancels, .init = setup_short_drain, .fini = stop)
{
    int fd = connect_srv(0);
    send_req(fd, "POST", "/execute", NULL, "{\"job_id\":\"forever\",\"prompt\":\"slow\",\"max_tokens\":2000}");
    sleep_ms(50);
    char *r = request("POST", "/shutdown", NULL, NULL);
    free(r);
    char *s = read_all(fd);
    cr_assert(strstr(s, "\"code\":\"CANCELLED\""), "the job is cancelled after drain_ms: %.300s", s);
    free(s);
    for (int i = 0; i < 100 && atomic_load(&drained_calls) == 0; i++)
        sleep_ms(10);
    cr_assert_eq(atomic_load(&drained_calls), 1);
}

Test(server, tokenize_without_tokenizer, .init = setup_plain, .fini = stop)
{
    char *r = request("POST", "/tokenize", NULL, "{\"content\":\"x\"}");
    cr_assert_eq(status_of(r), 503);
    free(r);
}
