/*
 * scheduler.h — the one thread that owns the backend. Each iteration gathers
 * the next tokens of every running job (prefill chunks of newly admitted jobs
 * and single-token decodes of the others, up to max_jobs) into one step call,
 * samples each job's next token, detokenizes, applies stops, and reports
 * events through the job's callback. Submitting, cancelling and pausing are
 * thread-safe and cheap (the HTTP event loop calls them); everything that
 * computes (tokenizing the prompt included) runs on scheduler-owned threads.
 *
 * Threads: an intake thread validates and tokenizes each submitted prompt in
 * arrival order (add_special and parse_special on) and sends the job's first
 * event at once, even while the job waits for a slot: STARTED, or a rejecting
 * ERROR (http_status 400, INVALID_REQUEST: prompt of zero tokens, prompt +1
 * token over ctx_size, max_tokens 0, bad stop list, empty job_id). It also ends
 * cancelled queued jobs. The scheduler thread does everything else.
 *
 * Text: a token event's text is what is safe to send once that token is
 * decoded; it is empty while bytes are held (an unfinished UTF-8 character, or
 * a tail that may start a stop string). While text is held the token's event
 * waits for the next token, so held text is sent with it when the job ends
 * (EOS, max_tokens, context full). Concatenating every token's text gives the
 * decoded output up to (not including) a matched stop string (core/stop.h:
 * the stop string that ends first in the text wins).
 *
 * Steps: each iteration is one batched step: the decode token of every running
 * (not paused) job first, then prefill chunks (at most prefill_chunk tokens of
 * one job) of admitted jobs in admission order until step_tokens is reached;
 * a prompt not done keeps its place. Waiting jobs are admitted in arrival
 * order, never overtaking.
 *
 * Paged backends (aarmd_plugin_kv_info gives AARMD_OK): a job reserves
 * ceil(min(prompt + max_tokens, ctx_size) / block_tokens) blocks less those it
 * shares through prefix reuse, and is admitted only while the free blocks,
 * less what running jobs reserved but have not taken yet, cover that (the
 * prefix cache's least recently used sequences are freed to make room). So a
 * running job never fails for lack of blocks. A job that needs more blocks
 * than the pool holds is rejected at intake (400 INVALID_REQUEST). Finished
 * jobs' sequences and running jobs' prompts are kept in the prefix cache
 * (core/prefix_cache.h) when the backend has seq_fork; a new job forks the
 * longest cached run of whole blocks of its prompt (leaving at least one
 * prompt token to compute) and feeds only the rest. Reuse never changes a
 * job's tokens.
 *
 * Limits: the job ends with MAX_TOKENS when the sequence holds ctx_size tokens
 * (its last sampled token is sent but never fed back). inference_timeout_s
 * (0 = none) counts from admission to a decoding slot. ctx_size 0 means the
 * model's training context (4096 when unknown).
 */
#ifndef AARMD_SCHEDULER_H
#define AARMD_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sampler.h"

struct aarmd_engine;
struct aarmd_sched;

struct aarmd_sched_opts {
    uint32_t max_jobs;          /* jobs decoded concurrently (>= 1) */
    uint32_t queue_depth;       /* jobs waiting beyond those (>= 0) */
    uint32_t ctx_size;          /* tokens of context per job */
    uint32_t inference_timeout_s;
    uint32_t prefill_chunk;     /* max prompt tokens of one job per step (0 = whole prompt) */
    uint32_t step_tokens;       /* tokens of one step: every decode, then prefill chunks (0 = no budget);
                                 * raised to max_jobs when below it so a prefill always progresses */
    uint32_t prefix_cache_blocks; /* paged backends with seq_fork: KV blocks kept for prefix reuse;
                                   * AARMD_SCHED_CACHE_AUTO = a quarter of the pool, 0 = no reuse */
    uint32_t sample_threads;    /* threads that sample a step's jobs, the scheduler's included;
                                 * 0 = auto: min(8, online CPUs / 2, max_jobs), at least 1 */
};

#define AARMD_SCHED_CACHE_AUTO UINT32_MAX

#define AARMD_MAX_STOPS 4

/* One /execute request after validation. Strings are copied by submit. */
struct aarmd_job_request {
    const char *job_id;
    const char *prompt;
    size_t prompt_len;
    uint32_t max_tokens;
    struct aarmd_sampler_params sampling;   /* seed concrete: the caller draws a null seed */
    const char *stop[AARMD_MAX_STOPS];
    uint32_t n_stop;
    const char *correlation_id;             /* for logs; may be NULL */
};

enum aarmd_job_event_kind {
    AARMD_EV_STARTED,    /* first event of an admitted job */
    AARMD_EV_TOKEN,
    AARMD_EV_METRICS,    /* at most every 500 ms per job */
    AARMD_EV_END,        /* terminal */
    AARMD_EV_ERROR,      /* terminal; may come first (rejection: http_status != 0) */
};

struct aarmd_job_event {
    enum aarmd_job_event_kind kind;
    const char *job_id;
    union {
        struct { uint64_t seed; uint32_t tokens_in; int64_t started_at_ms; } started;
        struct {
            const char *text; size_t len;           /* whole UTF-8 characters, may be empty */
            uint32_t index; int32_t id;
            const struct aarmd_sample *sample;      /* logprobs when requested, else NULL */
        } token;
        struct { uint32_t tokens_out; double decode_time_ms, tokens_per_sec; uint64_t memory_bytes; } metrics;
        struct {
            uint32_t tokens_out; double decode_time_ms, prompt_time_ms;
            const char *stop_reason;                 /* "MAX_TOKENS", "EOS", "STOP_SEQUENCE" */
            const char *stop_sequence_matched;       /* only with STOP_SEQUENCE, else NULL */
        } end;
        struct {
            const char *code;                        /* contract code, e.g. "CANCELLED" */
            const char *message;
            bool retriable;
            int http_status;                         /* != 0: rejected before start (e.g. 400 prompt too long) */
        } error;
    } u;
};

/* Called on a scheduler thread; the event and its strings are valid only during
 * the call. Must not block for long nor call back into the scheduler except
 * aarmd_sched_cancel/pause. After a terminal event the callback is never called
 * again for that job. */
typedef void (*aarmd_job_event_fn)(void *user, const struct aarmd_job_event *ev);

enum aarmd_submit_result {
    AARMD_SUBMIT_OK = 0,
    AARMD_SUBMIT_DUPLICATE,      /* a live job has this id → 409 */
    AARMD_SUBMIT_BUSY,           /* queue full → 503 */
    AARMD_SUBMIT_SHUTTING_DOWN,  /* → 503 */
    AARMD_SUBMIT_NOMEM,
};

/* Starts the scheduler thread(s) over an engine that outlives it. NULL on failure (message in err). */
struct aarmd_sched *aarmd_sched_new(struct aarmd_engine *e, const struct aarmd_sched_opts *o,
                                    char *err, size_t errlen);
/* Stops accepting, cancels everything left after drain_ms, joins the threads, frees. Accepts NULL. */
void aarmd_sched_free(struct aarmd_sched *s, uint32_t drain_ms);

/* Copies r and queues the job; events follow on scheduler threads (STARTED or a
 * 400 rejection first). A NULL s, r or cb gives AARMD_SUBMIT_NOMEM. */
enum aarmd_submit_result aarmd_sched_submit(struct aarmd_sched *s, const struct aarmd_job_request *r,
                                            aarmd_job_event_fn cb, void *user);
/* Ends a queued or running job with error CANCELLED within 100 ms; unknown ids are ignored. */
void aarmd_sched_cancel(struct aarmd_sched *s, const char *job_id);
/* Backpressure: a paused job is skipped by steps until resumed. */
void aarmd_sched_pause(struct aarmd_sched *s, const char *job_id, bool paused);
/* Stop accepting new jobs (submit → SHUTTING_DOWN). */
void aarmd_sched_stop_accepting(struct aarmd_sched *s);

/* Tokens per step histogram: bucket i counts steps of at most 2^i tokens
 * (1, 2, 4, ... 4096); the last bucket counts the larger ones. */
#define AARMD_SCHED_STEP_BUCKETS 13

struct aarmd_sched_stats {
    uint32_t running, queued;
    bool fatal;                 /* a backend error made the worker unhealthy */
    /* paged KV (all 0 when the backend is not paged), as of the last iteration */
    bool kv_paged;
    uint32_t kv_block_tokens;
    uint64_t kv_blocks_total, kv_blocks_used, kv_blocks_free;
    uint64_t kv_blocks_cached;          /* held by the prefix cache (finished sequences, registered prompts) */
    uint64_t prefix_reused_tokens;      /* prompt tokens forked from the cache instead of computed */
    uint64_t steps, step_tokens_sum;
    double step_seconds;        /* wall time inside the backend's step calls */
    double sample_seconds;      /* wall time drawing and streaming the tokens of steps */
    uint64_t step_hist[AARMD_SCHED_STEP_BUCKETS + 1];   /* per bucket, not cumulative */
};
/* Cheap: copies what the scheduler thread left under the lock; never calls the backend. */
void aarmd_sched_stats(struct aarmd_sched *s, struct aarmd_sched_stats *out);

/* Asks the scheduler thread to free every sequence of the prefix cache (a
 * debug and test hook: afterwards, with no job running, kv_blocks_used is 0
 * unless blocks leaked). Takes effect within one iteration. */
void aarmd_sched_flush_prefix_cache(struct aarmd_sched *s);

#endif
