/*
 * server.h — the HTTP side of the worker: libevent's evhttp on the daemon's
 * event loop serving the contract's endpoints (/execute as SSE, /cancel,
 * /health, /metrics, /shutdown, /tokenize, /detokenize).
 *
 * Threads: every function here runs on the loop thread. The loop never
 * computes: /execute is handed to the scheduler (whose callbacks only format
 * SSE text into the job's outbox and wake the loop), /tokenize and
 * /detokenize run on one worker thread of the server; /health and /metrics
 * answer from cached state refreshed every 100 ms.
 *
 * Each /execute request is a small state machine, loop-owned:
 *   WAITING_START --(started / first ping / error)--> STREAMING --(end|error)--> DONE
 *   WAITING_START --(rejection with http_status)--> DONE (JSON error response)
 *   any --(client closed the connection)--> CLOSED (job cancelled, later events dropped)
 * The job record lives until both the HTTP side is finished and the
 * scheduler delivered its terminal event.
 *
 * Backpressure: when the connection's unsent output exceeds
 * backpressure_bytes the job is paused (aarmd_sched_pause) and resumed once
 * the output drained. A ": ping" comment is sent when a stream has been
 * silent for ping_interval_ms (this starts the 200 response of a job that
 * still waits for its `started` event).
 */
#ifndef AARMD_SERVER_H
#define AARMD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct aarmd_sched;
struct aarmd_tokenizer;
struct aarmd_metrics;
struct aarmd_server;

/* Static facts reported by /health (strings copied). */
struct aarmd_server_info {
    const char *worker_id;
    const char *model;                  /* model name (also "model" of `started`) */
    const char *model_ref;              /* absolute path */
    const char *quant_kind;
    const char *memory_architecture;
    const char *worker_type;
    const char *backend;                /* plugin name */
    const char *tokenizer_kind;
    int32_t device;
    uint32_t vocab_size;
    uint32_t context_length;            /* the effective --ctx-size */
    uint64_t vram_bytes;                /* bytes the model holds */
};

struct aarmd_server_opts {
    const char *host;                   /* listen address */
    uint16_t port;                      /* 0 = ephemeral (see aarmd_server_port) */
    const char *api_token;              /* NULL: no auth; else Bearer token required but on /health */
    uint32_t max_tokens_limit;
    size_t backpressure_bytes;          /* 0 = 256 KiB */
    uint32_t ping_interval_ms;          /* 0 = 15000 */
    uint32_t drain_ms;                  /* 0 = 5000: running jobs' grace on shutdown */
    uint32_t idle_timeout_s;            /* 0 = 600: evhttp connection timeout */
    struct aarmd_server_info info;
    /* Called on the loop once a drain has finished (every job ended or was
     * cancelled); the daemon then leaves its loop. */
    void (*drained)(void *user);
    void *drained_user;
};

/*
 * Binds and starts serving on `base` (which must have been created after
 * evthread_use_pthreads). `sched`, `tok` and `metrics` must outlive the server.
 * NULL on failure (bind error, memory) with the reason in err.
 */
struct aarmd_server *aarmd_server_new(struct event_base *base, struct aarmd_sched *sched,
                                      const struct aarmd_tokenizer *tok, struct aarmd_metrics *metrics,
                                      const struct aarmd_server_opts *o, char *err, size_t errlen);

/* The bound port (the chosen one when opts.port was 0). */
uint16_t aarmd_server_port(const struct aarmd_server *s);

/* Stops accepting work (503 SHUTTING_DOWN), lets running jobs finish for
 * drain_ms, then cancels the rest and calls opts.drained. Idempotent. */
void aarmd_server_drain(struct aarmd_server *s, const char *reason);

/* Closes every connection and frees. Call after the scheduler was freed (so
 * no callback is in flight). Accepts NULL. */
void aarmd_server_free(struct aarmd_server *s);

/* A fresh UUID v4 ("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx") into buf (>= 37 bytes). */
void aarmd_uuid_v4(char *buf, size_t cap);

/* True when a client-supplied X-Correlation-Id is usable: 1..128 bytes of [A-Za-z0-9._:-]. */
bool aarmd_correlation_id_ok(const char *id);

/* Constant-time check of an Authorization header value against "Bearer <token>". */
bool aarmd_bearer_ok(const char *header, const char *token);

#endif
