/* metrics.c — counters, histograms and the Prometheus text format.
 * It keeps numbers only; the server decides what to record and when. */
#include "config.h"
#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

static const double bucket_le[] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000};
#define N_BUCKETS (sizeof bucket_le / sizeof bucket_le[0])

struct histogram {
    uint64_t counts[N_BUCKETS + 1];   /* per bucket, not cumulative; last = above every bound */
    uint64_t count;
    double sum;
};

struct aarmd_metrics {
    pthread_mutex_t lock;
    char label[600];                  /* worker_id="..." escaped */
    uint64_t requests[AARMD_OUTCOME_COUNT];
    uint64_t tokens_in, tokens_generated;
    struct histogram inference, ttft;
};

static const char *const outcome_names[AARMD_OUTCOME_COUNT] = {"success", "error", "cancelled", "timeout"};

/* Label value escaping of the exposition format: \ " and newline. */
static void escape_label(char *dst, size_t cap, const char *s)
{
    size_t t = 0;
    for (; *s && t + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            dst[t++] = '\\';
            dst[t++] = *s;
        } else if (*s == '\n') {
            dst[t++] = '\\';
            dst[t++] = 'n';
        } else {
            dst[t++] = *s;
        }
    }
    dst[t] = '\0';
}

struct aarmd_metrics *aarmd_metrics_new(const char *worker_id)
{
    struct aarmd_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    char esc[520];
    escape_label(esc, sizeof esc, worker_id ? worker_id : "");
    snprintf(m->label, sizeof m->label, "worker_id=\"%s\"", esc);
    return m;
}

void aarmd_metrics_free(struct aarmd_metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void aarmd_metrics_request(struct aarmd_metrics *m, enum aarmd_outcome o)
{
    if ((unsigned)o >= AARMD_OUTCOME_COUNT)
        o = AARMD_OUTCOME_ERROR;
    pthread_mutex_lock(&m->lock);
    m->requests[o]++;
    pthread_mutex_unlock(&m->lock);
}

void aarmd_metrics_tokens(struct aarmd_metrics *m, uint64_t tokens_in, uint64_t tokens_generated)
{
    pthread_mutex_lock(&m->lock);
    m->tokens_in += tokens_in;
    m->tokens_generated += tokens_generated;
    pthread_mutex_unlock(&m->lock);
}

static void observe(struct aarmd_metrics *m, struct histogram *h, double ms)
{
    if (!isfinite(ms) || ms < 0)
        ms = 0;
    size_t b = 0;
    while (b < N_BUCKETS && ms > bucket_le[b])
        b++;
    pthread_mutex_lock(&m->lock);
    h->counts[b]++;
    h->count++;
    h->sum += ms;
    pthread_mutex_unlock(&m->lock);
}

void aarmd_metrics_inference_ms(struct aarmd_metrics *m, double ms)
{
    observe(m, &m->inference, ms);
}

void aarmd_metrics_ttft_ms(struct aarmd_metrics *m, double ms)
{
    observe(m, &m->ttft, ms);
}

enum aarmd_outcome aarmd_outcome_of_error(const char *code)
{
    if (code && strcmp(code, "CANCELLED") == 0)
        return AARMD_OUTCOME_CANCELLED;
    if (code && strcmp(code, "INFERENCE_TIMEOUT") == 0)
        return AARMD_OUTCOME_TIMEOUT;
    return AARMD_OUTCOME_ERROR;
}

static int render_histogram(struct evbuffer *out, const char *label, const char *name, const char *help,
                            const struct histogram *h)
{
    int rc = evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name) < 0;
    uint64_t cum = 0;
    for (size_t b = 0; b < N_BUCKETS; b++) {
        cum += h->counts[b];
        rc |= evbuffer_add_printf(out, "%s_bucket{%s,le=\"%g\"} %" PRIu64 "\n", name, label, bucket_le[b], cum) < 0;
    }
    cum += h->counts[N_BUCKETS];
    rc |= evbuffer_add_printf(out, "%s_bucket{%s,le=\"+Inf\"} %" PRIu64 "\n", name, label, cum) < 0;
    rc |= evbuffer_add_printf(out, "%s_sum{%s} %.3f\n%s_count{%s} %" PRIu64 "\n", name, label, h->sum, name, label,
                              h->count) < 0;
    return rc;
}

int aarmd_metrics_render(struct aarmd_metrics *m, const struct aarmd_metrics_gauges *g, struct evbuffer *out)
{
    pthread_mutex_lock(&m->lock);
    uint64_t req[AARMD_OUTCOME_COUNT];
    memcpy(req, m->requests, sizeof req);
    uint64_t tin = m->tokens_in, tgen = m->tokens_generated;
    struct histogram inf = m->inference, ttft = m->ttft;
    pthread_mutex_unlock(&m->lock);

    const char *l = m->label;
    int rc = evbuffer_add_printf(out,
                                 "# HELP worker_requests_total Execute requests by outcome.\n"
                                 "# TYPE worker_requests_total counter\n") < 0;
    for (int o = 0; o < AARMD_OUTCOME_COUNT; o++)
        rc |= evbuffer_add_printf(out, "worker_requests_total{%s,outcome=\"%s\"} %" PRIu64 "\n", l,
                                  outcome_names[o], req[o]) < 0;
    rc |= evbuffer_add_printf(out,
                              "# HELP worker_tokens_in_total Prompt tokens of admitted jobs.\n"
                              "# TYPE worker_tokens_in_total counter\n"
                              "worker_tokens_in_total{%s} %" PRIu64 "\n"
                              "# HELP worker_tokens_generated_total Tokens generated.\n"
                              "# TYPE worker_tokens_generated_total counter\n"
                              "worker_tokens_generated_total{%s} %" PRIu64 "\n",
                              l, tin, l, tgen) < 0;
    rc |= render_histogram(out, l, "worker_inference_duration_ms",
                           "Time from submit to the job's last event, in ms.", &inf);
    rc |= render_histogram(out, l, "worker_time_to_first_token_ms", "Time from submit to the first token, in ms.",
                           &ttft);
    rc |= evbuffer_add_printf(out,
                              "# HELP worker_jobs_running Jobs being decoded.\n"
                              "# TYPE worker_jobs_running gauge\n"
                              "worker_jobs_running{%s} %" PRIu32 "\n"
                              "# HELP worker_jobs_queued Jobs waiting for a slot.\n"
                              "# TYPE worker_jobs_queued gauge\n"
                              "worker_jobs_queued{%s} %" PRIu32 "\n"
                              "# HELP worker_vram_bytes Bytes of device memory the model holds.\n"
                              "# TYPE worker_vram_bytes gauge\n"
                              "worker_vram_bytes{%s} %" PRIu64 "\n"
                              "# HELP worker_uptime_seconds Seconds since the worker started.\n"
                              "# TYPE worker_uptime_seconds gauge\n"
                              "worker_uptime_seconds{%s} %.3f\n",
                              l, g->jobs_running, l, g->jobs_queued, l, g->vram_bytes, l, g->uptime_seconds) < 0;
    rc |= evbuffer_add_printf(out,
                              "# HELP worker_kv_blocks_used KV blocks held by sequences (0: not paged).\n"
                              "# TYPE worker_kv_blocks_used gauge\n"
                              "worker_kv_blocks_used{%s} %" PRIu64 "\n"
                              "# HELP worker_kv_blocks_free KV blocks no sequence holds (0: not paged).\n"
                              "# TYPE worker_kv_blocks_free gauge\n"
                              "worker_kv_blocks_free{%s} %" PRIu64 "\n"
                              "# HELP worker_kv_blocks_cached KV blocks the prefix cache holds.\n"
                              "# TYPE worker_kv_blocks_cached gauge\n"
                              "worker_kv_blocks_cached{%s} %" PRIu64 "\n"
                              "# HELP worker_prefix_reused_tokens_total Prompt tokens reused from the prefix cache.\n"
                              "# TYPE worker_prefix_reused_tokens_total counter\n"
                              "worker_prefix_reused_tokens_total{%s} %" PRIu64 "\n",
                              l, g->kv_blocks_used, l, g->kv_blocks_free, l, g->kv_blocks_cached, l,
                              g->prefix_reused_tokens) < 0;
    rc |= evbuffer_add_printf(out, "# HELP worker_step_tokens Tokens per batched step.\n"
                                   "# TYPE worker_step_tokens histogram\n") < 0;
    uint64_t cum = 0;
    for (int b = 0; b < AARMD_SCHED_STEP_BUCKETS; b++) {
        cum += g->step_hist[b];
        rc |= evbuffer_add_printf(out, "worker_step_tokens_bucket{%s,le=\"%llu\"} %" PRIu64 "\n", l,
                                  1ULL << b, cum) < 0;
    }
    cum += g->step_hist[AARMD_SCHED_STEP_BUCKETS];
    rc |= evbuffer_add_printf(out,
                              "worker_step_tokens_bucket{%s,le=\"+Inf\"} %" PRIu64 "\n"
                              "worker_step_tokens_sum{%s} %" PRIu64 "\n"
                              "worker_step_tokens_count{%s} %" PRIu64 "\n",
                              l, cum, l, g->step_tokens_sum, l, g->steps) < 0;
    rc |= evbuffer_add_printf(out,
                              "# HELP worker_step_seconds_total Time spent in the backend's batched steps.\n"
                              "# TYPE worker_step_seconds_total counter\n"
                              "worker_step_seconds_total{%s} %.6f\n"
                              "# HELP worker_sample_seconds_total Time spent drawing and streaming the tokens of "
                              "steps.\n"
                              "# TYPE worker_sample_seconds_total counter\n"
                              "worker_sample_seconds_total{%s} %.6f\n",
                              l, g->step_seconds, l, g->sample_seconds) < 0;
    return rc ? -1 : 0;
}
