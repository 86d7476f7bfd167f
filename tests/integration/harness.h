/*
 * harness.h — helpers for the integration tests: run the real `aarmd` binary
 * as a child process, read its JSON log lines, and talk HTTP (plain and SSE)
 * to it with a small blocking socket client. Also a tiny ready-callback
 * server (libevent evhttp on its own thread) standing in for a pool manager.
 *
 * Environment (set by tests/include.am): AARMD_BUILDDIR (the binary),
 * AARMD_TEST_DATA (default model: vocab/ggml-vocab-gpt-2.gguf),
 * AARMD_PLUGIN_PATH (backend names resolve there). AARMD_TEST_VALGRIND=1 runs
 * the daemon under `valgrind --leak-check=full --error-exitcode=9`.
 *
 * Cleanup: every started process is registered; hx_kill_all() (call it from
 * the Criterion .fini of each test, and it is also an atexit handler) kills and
 * reaps whatever is still running. On Linux the child also gets SIGKILL when
 * the test process dies (PR_SET_PDEATHSIG), so a crashed test leaves nothing.
 *
 * Not thread-safe unless stated: one test thread drives a process; the HTTP
 * client may be used from several threads, one connection per thread.
 */
#ifndef AARMD_TEST_HARNESS_H
#define AARMD_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct json_object;

/* ---- the daemon ---------------------------------------------------------- */

#define HX_MAX_ARGS 48

struct hx_spec {
    const char *backend;            /* NULL = "mock" */
    const char *model;              /* NULL = $AARMD_TEST_DATA/vocab/ggml-vocab-gpt-2.gguf */
    const char *args[HX_MAX_ARGS];  /* further flags, NULL-terminated */
    bool raw;                       /* pass only args (no --backend/--model/--port/--log-format) */
    bool no_wait;                   /* do not wait for the ready line */
    bool wait_listen;               /* wait for the "startup" line with the port, not "ready" */
    int ready_timeout_ms;           /* 0 = 10000 (x6 under valgrind) */
};

struct hx_proc;

/* Spawns the daemon. Unless no_wait, waits for the "ready" log line and reads
 * the bound port from it; on timeout or early exit it fails the current test
 * (cr_assert) showing the captured stderr. Never returns NULL. */
struct hx_proc *hx_spawn(const struct hx_spec *spec);
/* hx_spawn with default backend and model plus the given flags (NULL-terminated). */
struct hx_proc *hx_start(const char *arg, ...);

pid_t hx_pid(const struct hx_proc *p);
int hx_port(const struct hx_proc *p);

/* Waits up to timeout_ms for the process to exit. Returns its exit code,
 * 128+signal when killed by a signal, or -1 on timeout. */
int hx_wait_exit(struct hx_proc *p, int timeout_ms);
/* SIGTERM, wait up to timeout_ms, then SIGKILL; returns as hx_wait_exit (never -1). */
int hx_stop(struct hx_proc *p, int timeout_ms);
/* Kills (if running), reaps and frees. Accepts NULL. */
void hx_free(struct hx_proc *p);
/* Kills and frees every process still registered. */
void hx_kill_all(void);

/* The stderr captured so far (a NUL-terminated copy; the caller frees). */
char *hx_stderr(struct hx_proc *p);
/* The first JSON log line (as an object; caller puts it) whose "event" is
 * `event` and, when `field` is non-NULL, whose string `field` equals `value`
 * (value NULL: which has `field` at all).
 * Waits up to timeout_ms; NULL when none came. */
struct json_object *hx_wait_log(struct hx_proc *p, const char *event, const char *field, const char *value,
                                int timeout_ms);
/* How many log lines so far have event `event`. */
int hx_count_log(struct hx_proc *p, const char *event);

/* Runs the daemon with `spec` (raw flags honoured, never waits for ready)
 * until it exits (timeout_ms, else it is killed and -1 returned); returns the
 * exit code and, when out is non-NULL, its stderr (caller frees). */
int hx_run_to_exit(const struct hx_spec *spec, int timeout_ms, char **out);

/* Path helpers: "$AARMD_TEST_DATA/rel" etc. into a static-per-call buffer the caller copies. */
const char *hx_data_path(const char *rel, char *buf, size_t cap);
const char *hx_model_path(const char *rel, char *buf, size_t cap);

/* Milliseconds of a monotonic clock. */
double hx_now_ms(void);

/* ---- HTTP client --------------------------------------------------------- */

struct hx_http;

/* Connects to 127.0.0.1:port, sends one HTTP/1.1 request (headers: extra lines
 * "Name: value\r\n" or NULL; Content-Length added when body is non-NULL) and
 * reads the status line and headers (5 s). NULL when the connection failed or
 * no valid head came. */
struct hx_http *hx_http_open(int port, const char *method, const char *path, const char *headers,
                             const char *body, size_t body_len);
/* SO_RCVBUF for connections opened from now on (0 = default): a small one
 * makes a client that does not read push back on the server quickly. */
void hx_set_rcvbuf(int bytes);
/* Sends the next request on the same (keep-alive) connection once the
 * previous body was read to its end; reads the head. 0 ok, -1 failure. */
int hx_http_again(struct hx_http *c, int port, const char *method, const char *path, const char *headers,
                  const char *body, size_t body_len);
/* Sends raw bytes as the request (for malformed requests); reads the head as above. */
struct hx_http *hx_http_open_raw(int port, const char *raw, size_t raw_len);
int hx_http_status(const struct hx_http *c);
/* Header value (case-insensitive name) or NULL; valid until close. */
const char *hx_http_header(const struct hx_http *c, const char *name);
/* Reads the body to its end (chunked, Content-Length or EOF). 0 ok, -1 timeout/error. */
int hx_http_read_all(struct hx_http *c, int timeout_ms);
/* The body decoded so far (NUL-terminated), and as JSON (owned by c; NULL if not JSON). */
const char *hx_http_body(const struct hx_http *c);
struct json_object *hx_http_json(struct hx_http *c);
/* The socket, e.g. to shut it down to simulate a client that goes away. */
int hx_http_fd(const struct hx_http *c);
void hx_http_close(struct hx_http *c);

/* open + read_all (5 s); never NULL (fails the test instead). */
struct hx_http *hx_fetch(int port, const char *method, const char *path, const char *headers, const char *body);

/* One server-sent event. */
struct hx_sse_event {
    char event[32];
    char *data;                 /* the data lines joined by '\n' */
    struct json_object *json;   /* data parsed, or NULL */
};
/* Next event of a text/event-stream body: 1 an event (fini it), 0 the stream
 * ended cleanly, -1 timeout or connection error. ": ping" comments are counted. */
int hx_sse_next(struct hx_http *c, struct hx_sse_event *ev, int timeout_ms);
void hx_sse_event_fini(struct hx_sse_event *ev);
int hx_sse_pings(const struct hx_http *c);

/* POST /execute with body `json`; returns the open connection (status read). */
struct hx_http *hx_execute(int port, const char *headers, const char *json);

/* A whole stream collected: events in order (names and data objects). */
#define HX_MAX_EVENTS 4096
struct hx_stream {
    int status;
    int n;
    char names[HX_MAX_EVENTS][32];
    struct json_object *data[HX_MAX_EVENTS];   /* owned */
    bool ended;                                 /* the body ended cleanly */
};
/* Reads events until the stream ends or timeout_ms; returns 0 or -1 (timeout). */
int hx_stream_collect(struct hx_http *c, struct hx_stream *s, int timeout_ms);
void hx_stream_fini(struct hx_stream *s);

/* JSON field helpers (NULL / 0 when absent). */
const char *hx_jstr(struct json_object *o, const char *key);
int64_t hx_jint(struct json_object *o, const char *key);
bool hx_jhas(struct json_object *o, const char *key);

/* /health as JSON (caller puts). */
struct json_object *hx_health(int port);
/* Polls /health until integer `field` equals `want` (timeout_ms); returns the last value seen. */
int64_t hx_wait_health(int port, const char *field, int64_t want, int timeout_ms);
/* Sum of the values of metric series `name` whose label set contains
 * `label` (e.g. "outcome=\"cancelled\""; NULL = any). -1 when no such series. */
double hx_metric(const char *text, const char *name, const char *label);

/* ---- ready-callback server ---------------------------------------------- */

#define HX_CB_MAX 16

struct hx_cbsrv;
/* Starts an HTTP server on 127.0.0.1:0 in its own thread; the i-th POST is
 * answered with statuses[i] (the last one repeats). */
struct hx_cbsrv *hx_cbsrv_start(const int *statuses, int n_statuses);
int hx_cbsrv_port(const struct hx_cbsrv *s);
/* Waits until at least n requests arrived (timeout_ms); returns the count. */
int hx_cbsrv_wait(struct hx_cbsrv *s, int n, int timeout_ms);
/* Copy of the i-th request's body (caller frees), its path and its arrival time (hx_now_ms). */
char *hx_cbsrv_body(struct hx_cbsrv *s, int i);
double hx_cbsrv_time(struct hx_cbsrv *s, int i);
char *hx_cbsrv_content_type(struct hx_cbsrv *s, int i);
/* The HTTP status of GET /health on the body's "uri", asked while the i-th
 * request waited for its answer (0: no uri; -1: no answer). */
int hx_cbsrv_health(struct hx_cbsrv *s, int i);
void hx_cbsrv_free(struct hx_cbsrv *s);

#endif
