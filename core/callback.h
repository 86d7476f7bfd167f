/*
 * callback.h — the ready callback: one POST of the worker's description to the
 * pool manager (--callback-url), made on the daemon's event loop with
 * libevent's HTTP client. Any 2xx is success; connection errors, timeouts and
 * 5xx are retried with a doubling backoff (250 ms .. 4 s) until a total
 * deadline (30 s); a 4xx (or any other status) or the deadline is a failure.
 * Plain http only (libevent is built without TLS here).
 */
#ifndef AARMD_CALLBACK_H
#define AARMD_CALLBACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct aarmd_callback;

/* AARMD_OK when `url` is an absolute http:// URL with a host (port optional);
 * else AARMD_EINVAL with the reason in err. */
int aarmd_callback_check_url(const char *url, char *err, size_t errlen);

/* True for URLs containing "localhost:9999": the test mode of older harnesses,
 * in which no callback is sent. */
bool aarmd_callback_is_test_mode(const char *url);

/* What the callback reports (contract §3). */
struct aarmd_ready_info {
    const char *worker_id;
    const char *model_ref;              /* absolute model path */
    uint64_t memory_bytes;              /* sent as both vram_bytes and memory_bytes */
    const char *memory_architecture;    /* "vram-only", "unified", "host", "mock" */
    const char *uri;                    /* "http://HOST:PORT" */
    const char *worker_type;            /* "bespoke-cuda", "apple-metal", "cpu", "mock" */
};

/* The JSON body (malloc'd, caller frees); NULL on allocation failure. */
char *aarmd_callback_body(const struct aarmd_ready_info *r);

/* Called once on the loop thread with the outcome: ok, the last HTTP status
 * (0 when no response came) and a message naming the URL and the status.
 * The callback object may be freed from inside. */
typedef void (*aarmd_callback_done_fn)(void *user, bool ok, int http_status, const char *msg);

struct aarmd_callback_opts {
    uint32_t deadline_ms;       /* total time for all attempts (default 30000) */
    uint32_t first_backoff_ms;  /* default 250 */
    uint32_t max_backoff_ms;    /* default 4000 */
    uint32_t attempt_timeout_s; /* per attempt (default 5) */
};

/*
 * Starts posting `body` (copied) to `url` on `base`; `o` may be NULL for the
 * defaults. Returns NULL (message in err) when the URL is bad or memory runs
 * out. The result arrives through `done`; free with aarmd_callback_free
 * (which cancels a callback still in flight). Accepts NULL.
 */
struct aarmd_callback *aarmd_callback_start(struct event_base *base, const char *url, const char *body,
                                            const struct aarmd_callback_opts *o, aarmd_callback_done_fn done,
                                            void *user, char *err, size_t errlen);
void aarmd_callback_free(struct aarmd_callback *c);

#endif
