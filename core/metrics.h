/*
 * metrics.h — the worker's Prometheus counters and histograms (contract §4,
 * GET /metrics) and their text exposition (format 0.0.4). Every series
 * carries the worker_id label. Thread-safe (one mutex); recording is O(buckets).
 *
 * Histogram buckets (ms): 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000,
 * 10000, 30000, +Inf. worker_step_tokens (tokens per batched step): 1, 2, 4,
 * ... 4096, +Inf.
 */
#ifndef AARMD_METRICS_H
#define AARMD_METRICS_H

#include <stdint.h>

#include "scheduler.h"   /* AARMD_SCHED_STEP_BUCKETS */

struct evbuffer;
struct aarmd_metrics;

enum aarmd_outcome {
    AARMD_OUTCOME_SUCCESS = 0,   /* ended with `end` */
    AARMD_OUTCOME_ERROR,         /* rejected (400/409/503) or ended with an error other than the two below */
    AARMD_OUTCOME_CANCELLED,     /* error CANCELLED (client cancel or disconnect) */
    AARMD_OUTCOME_TIMEOUT,       /* error INFERENCE_TIMEOUT */
    AARMD_OUTCOME_COUNT
};

/* Gauges sampled by the caller at render time (the scheduler's counters too:
 * they are kept by the scheduler thread, see aarmd_sched_stats). */
struct aarmd_metrics_gauges {
    uint32_t jobs_running, jobs_queued;
    uint64_t vram_bytes;
    double uptime_seconds;
    uint64_t kv_blocks_used, kv_blocks_free, kv_blocks_cached;   /* 0 when the backend is not paged */
    uint64_t prefix_reused_tokens;                               /* counter */
    uint64_t steps, step_tokens_sum;                             /* the step histogram's count and sum */
    double step_seconds, sample_seconds;                         /* counters: backend step / sampling + streaming */
    uint64_t step_hist[AARMD_SCHED_STEP_BUCKETS + 1];            /* per bucket (<= 2^i tokens), last = larger */
};

/* NULL on allocation failure; worker_id is copied. */
struct aarmd_metrics *aarmd_metrics_new(const char *worker_id);
void aarmd_metrics_free(struct aarmd_metrics *m);   /* accepts NULL */

void aarmd_metrics_request(struct aarmd_metrics *m, enum aarmd_outcome o);
void aarmd_metrics_tokens(struct aarmd_metrics *m, uint64_t tokens_in, uint64_t tokens_generated);
void aarmd_metrics_inference_ms(struct aarmd_metrics *m, double ms);   /* submit → terminal event */
void aarmd_metrics_ttft_ms(struct aarmd_metrics *m, double ms);        /* submit → first token */

/* Maps a terminal error code to its outcome ("CANCELLED" → CANCELLED, ...). */
enum aarmd_outcome aarmd_outcome_of_error(const char *code);

/* Appends the exposition text. Returns 0, or -1 when the buffer cannot grow. */
int aarmd_metrics_render(struct aarmd_metrics *m, const struct aarmd_metrics_gauges *g, struct evbuffer *out);

#endif
