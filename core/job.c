/*
 * job.c — one job's request copy, its events, and the text pipeline from
 * sampled ids to token events (detokenizer, stop strings, held text).
 * Not the queue or the threads: those are core/scheduler.c's.
 */
#include "config.h"
#include "job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

#define PIECE_CAP 512   /* > 256-byte piece + 8 pending bytes, per tokenizer.h */

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        if (n)
            memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

struct aarmd_job *aarmd_job_new(const struct aarmd_job_request *r, aarmd_job_event_fn cb, void *user)
{
    struct aarmd_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    const char *id = r->job_id ? r->job_id : "";
    j->id = dup_n(id, strlen(id));
    j->corr = r->correlation_id ? dup_n(r->correlation_id, strlen(r->correlation_id)) : NULL;
    j->prompt_len = r->prompt ? r->prompt_len : 0;
    j->prompt = dup_n(r->prompt ? r->prompt : "", j->prompt_len);
    j->max_tokens = r->max_tokens;
    j->sp = r->sampling;
    j->cb = cb;
    j->user = user;
    if (!j->id || !j->prompt || (r->correlation_id && !j->corr))
        goto fail;
    char err[sizeof j->stop_err - 8] = "";
    if (r->n_stop > AARMD_MAX_STOPS || r->n_stop > AARMD_STOP_MAX)
        snprintf(j->stop_err, sizeof j->stop_err, "stop: at most %d strings (got %u)", AARMD_MAX_STOPS,
                 (unsigned)r->n_stop);
    else if (aarmd_stop_init(&j->stop, r->stop, r->n_stop, err, sizeof err) != 0)
        snprintf(j->stop_err, sizeof j->stop_err, "%s", err);
    if (j->stop_err[0])
        aarmd_stop_init(&j->stop, NULL, 0, NULL, 0);
    return j;

fail:
    aarmd_job_free(j, NULL);
    return NULL;
}

void aarmd_job_free(struct aarmd_job *j, struct aarmd_plugin *p)
{
    if (!j)
        return;
    if (j->seq && p)
        aarmd_plugin_seq_free(p, j->seq);
    aarmd_sampler_free(j->smp);
    free(j->logits);
    free(j->ids);
    free(j->id);
    free(j->corr);
    free(j->prompt);
    free(j);
}

const char *aarmd_job_check(const struct aarmd_job *j, char *buf, size_t cap)
{
    if (!j->id[0])
        return "job_id must not be empty";
    if (j->max_tokens == 0)
        return "max_tokens must be at least 1 (got 0)";
    if (j->stop_err[0]) {
        snprintf(buf, cap, "%s", j->stop_err);
        return buf;
    }
    return NULL;
}

/* ---- events ------------------------------------------------------------- */

static void emit_token(struct aarmd_job *j, const char *text, size_t len, uint32_t index, int32_t id,
                       const struct aarmd_sample *sample)
{
    struct aarmd_job_event ev = {.kind = AARMD_EV_TOKEN, .job_id = j->id};
    ev.u.token.text = text;
    ev.u.token.len = len;
    ev.u.token.index = index;
    ev.u.token.id = id;
    ev.u.token.sample = j->sp.n_logprobs ? sample : NULL;
    j->cb(j->user, &ev);
}

void aarmd_job_emit_started(struct aarmd_job *j, int64_t started_at_ms)
{
    struct aarmd_job_event ev = {.kind = AARMD_EV_STARTED, .job_id = j->id};
    ev.u.started.seed = j->sp.seed;
    ev.u.started.tokens_in = (uint32_t)j->n_ids;
    ev.u.started.started_at_ms = started_at_ms;
    j->cb(j->user, &ev);
}

void aarmd_job_emit_error(struct aarmd_job *j, const char *code, const char *message, bool retriable,
                          int http_status)
{
    struct aarmd_job_event ev = {.kind = AARMD_EV_ERROR, .job_id = j->id};
    ev.u.error.code = code;
    ev.u.error.message = message;
    ev.u.error.retriable = retriable;
    ev.u.error.http_status = http_status;
    j->cb(j->user, &ev);
    j->done = true;
}

void aarmd_job_emit_end(struct aarmd_job *j, const char *reason, const char *matched, double now_ms)
{
    struct aarmd_job_event ev = {.kind = AARMD_EV_END, .job_id = j->id};
    ev.u.end.tokens_out = j->n_out;
    ev.u.end.prompt_time_ms = (j->t_first > 0 ? j->t_first : now_ms) - j->t_admit;
    ev.u.end.decode_time_ms = j->t_first > 0 ? j->t_last - j->t_first : 0.0;
    ev.u.end.stop_reason = reason;
    ev.u.end.stop_sequence_matched = matched;
    j->cb(j->user, &ev);
    j->done = true;
}

void aarmd_job_emit_metrics(struct aarmd_job *j, uint64_t memory_bytes)
{
    struct aarmd_job_event ev = {.kind = AARMD_EV_METRICS, .job_id = j->id};
    double dt = j->t_last - j->t_first;
    ev.u.metrics.tokens_out = j->n_out;
    ev.u.metrics.decode_time_ms = dt;
    /* decode rate: tokens after the first over the time since the first */
    ev.u.metrics.tokens_per_sec = dt > 0 && j->n_out > 1 ? (double)(j->n_out - 1) * 1e3 / dt : 0.0;
    ev.u.metrics.memory_bytes = memory_bytes;
    j->cb(j->user, &ev);
}

/* ---- text --------------------------------------------------------------- */

void aarmd_job_text_begin(struct aarmd_job *j, const struct aarmd_tokenizer *t)
{
    /* generated text continues the prompt: keep a leading SPM space ("\u2581Paris" -> " Paris") */
    aarmd_detok_init_continue(&j->detok, t);
    j->has_deferred = false;
}

static void append(char *dst, size_t *n, size_t cap, const char *src, size_t len)
{
    if (len > cap - *n)   /* cannot happen with the caps above; never overflow */
        len = cap - *n;
    memcpy(dst + *n, src, len);
    *n += len;
}

void aarmd_job_flush_deferred(struct aarmd_job *j)
{
    if (!j->has_deferred)
        return;
    j->has_deferred = false;
    emit_token(j, j->dtext, j->n_dtext, j->d_index, j->d_id, &j->d_sample);
}

/* Feeds bytes to the stop matcher, appending what may be sent to out. */
static int stop_feed(struct aarmd_job *j, const char *piece, size_t len, char *out, size_t *n_out, size_t cap)
{
    int matched = -1;
    int n = aarmd_stop_push(&j->stop, piece, len, out + *n_out, cap - *n_out, &matched);
    if (n > 0)
        *n_out += (size_t)n;
    return matched;
}

int aarmd_job_push_token(struct aarmd_job *j, int32_t id, const struct aarmd_sample *sample, bool last)
{
    char piece[PIECE_CAP];
    char out[AARMD_STOP_OUT_CAP(2 * PIECE_CAP)];
    size_t n_out = 0;
    uint32_t index = j->n_out - 1;
    int n = aarmd_detok_push(&j->detok, id, piece, sizeof piece);
    int k = stop_feed(j, piece, n > 0 ? (size_t)n : 0, out, &n_out, sizeof out);
    if (k < 0 && last) {
        /* an unfinished character's bytes, then the held tail */
        n = aarmd_detok_flush(&j->detok, piece, sizeof piece);
        k = stop_feed(j, piece, n > 0 ? (size_t)n : 0, out, &n_out, sizeof out);
        if (k < 0) {
            int f = aarmd_stop_flush(&j->stop, out + n_out, sizeof out - n_out);
            if (f > 0)
                n_out += (size_t)f;
        }
    }
    aarmd_job_flush_deferred(j);
    if (k < 0 && !last && (aarmd_stop_held(&j->stop) > 0 || j->detok.n_pending > 0)) {
        j->has_deferred = true;
        j->n_dtext = 0;
        append(j->dtext, &j->n_dtext, sizeof j->dtext, out, n_out);
        j->d_index = index;
        j->d_id = id;
        j->d_sample = *sample;
    } else {
        emit_token(j, out, n_out, index, id, sample);
    }
    return k;
}

void aarmd_job_text_eos(struct aarmd_job *j)
{
    /* without a waiting event nothing is held: held text always defers its token */
    if (!j->has_deferred)
        return;
    char piece[PIECE_CAP];
    char out[AARMD_STOP_OUT_CAP(PIECE_CAP) + AARMD_STOP_MAX_LEN];
    size_t n_out = 0;
    int n = aarmd_detok_flush(&j->detok, piece, sizeof piece);
    if (stop_feed(j, piece, n > 0 ? (size_t)n : 0, out, &n_out, sizeof out) < 0) {
        int f = aarmd_stop_flush(&j->stop, out + n_out, sizeof out - n_out);
        if (f > 0)
            n_out += (size_t)f;
    }
    append(j->dtext, &j->n_dtext, sizeof j->dtext, out, n_out);
}
