/*
 * scheduler.c — the job queue and the two threads behind it: the intake thread
 * (validates and tokenizes prompts, emits STARTED, ends cancelled queued jobs)
 * and the scheduler thread (the only user of the backend: admits jobs, runs
 * steps, samples, streams text). Not the HTTP side: events go to callbacks.
 */
#include "config.h"
#include "scheduler.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "job.h"
#include "log.h"
#include "plugin.h"
#include "sampler.h"
#include "tokenizer.h"

#define METRICS_EVERY_MS 500.0
#define IDLE_TICK_MS 100          /* wake-up period while jobs exist (timeouts) */

struct aarmd_sched {
    struct aarmd_engine *e;
    struct aarmd_sched_opts o;
    uint32_t n_vocab;

    pthread_mutex_t lock;
    pthread_cond_t intake_cv, sched_cv, drain_cv;
    struct aarmd_job *jobs;                 /* every live job, arrival order */
    uint32_t n_waiting, n_running;
    bool accepting, draining, quit, fatal;

    pthread_t intake_thread, sched_thread;
    bool intake_started, sched_started;

    /* the scheduler thread's */
    struct aarmd_job **active;              /* max_jobs slots */
    uint32_t n_active;
    struct aarmd_batch_entry *entries;
    struct aarmd_job **entry_job;
    bool *cancel_snap, *paused_snap;  /* flags of active[] read under the lock */
    bool draining_snap;
};

/* ---- small helpers ------------------------------------------------------ */

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void deadline_in(struct timespec *ts, double ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    long long ns = (long long)ts->tv_nsec + (long long)(ms * 1e6);
    ts->tv_sec += (time_t)(ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
}

/* Under s->lock: takes j out of the live list (its id may be reused at once). */
static void unlink_locked(struct aarmd_sched *s, struct aarmd_job *j)
{
    for (struct aarmd_job **p = &s->jobs; *p; p = &(*p)->next) {
        if (*p == j) {
            *p = j->next;
            break;
        }
    }
    if (j->state == AARMD_JOB_RUNNING)
        s->n_running--;
    else
        s->n_waiting--;
    pthread_cond_broadcast(&s->drain_cv);
}

static struct aarmd_job *find_locked(struct aarmd_sched *s, const char *id)
{
    for (struct aarmd_job *j = s->jobs; j; j = j->next)
        if (!strcmp(j->id, id))
            return j;
    return NULL;
}

/* ---- events ------------------------------------------------------------- */

static void log_end(const struct aarmd_job *j, const char *outcome)
{
    char tin[24], tout[24], reason[48];
    snprintf(tin, sizeof tin, "%zu", j->n_ids);
    snprintf(tout, sizeof tout, "%" PRIu32, j->n_out);
    snprintf(reason, sizeof reason, "\"%s\"", outcome);
    const char *extra[] = {"tokens_in", tin, "tokens_out", tout, "stop_reason", reason, NULL, NULL};
    struct aarmd_log_ctx lc = {.job_id = j->id, .correlation_id = j->corr, .extra = extra};
    aarmd_log_ctx(AARMD_LOG_INFO, "execute_end", &lc, NULL);
}

/* Terminal: sends the waiting token event, unlinks (the id is free again),
 * frees the sequence, then tells the client. The job is freed by its thread. */
static void end_error(struct aarmd_sched *s, struct aarmd_job *j, const char *code, const char *message,
                      bool retriable)
{
    aarmd_job_flush_deferred(j);
    pthread_mutex_lock(&s->lock);
    unlink_locked(s, j);
    pthread_mutex_unlock(&s->lock);
    if (j->seq) {
        aarmd_plugin_seq_free(s->e->plugin, j->seq);
        j->seq = NULL;
    }
    aarmd_job_emit_error(j, code, message, retriable, 0);
    log_end(j, code);
}

static void end_ok(struct aarmd_sched *s, struct aarmd_job *j, const char *reason, const char *matched)
{
    aarmd_job_flush_deferred(j);
    pthread_mutex_lock(&s->lock);
    unlink_locked(s, j);
    pthread_mutex_unlock(&s->lock);
    if (j->seq) {
        aarmd_plugin_seq_free(s->e->plugin, j->seq);
        j->seq = NULL;
    }
    aarmd_job_emit_end(j, reason, matched, mono_ms());
    log_end(j, reason);
}

/* ---- the intake thread -------------------------------------------------- */

static void reject(struct aarmd_sched *s, struct aarmd_job *j, const char *message)
{
    pthread_mutex_lock(&s->lock);
    unlink_locked(s, j);
    pthread_mutex_unlock(&s->lock);
    aarmd_job_emit_error(j, "INVALID_REQUEST", message, false, 400);
    const struct aarmd_log_ctx lc = {.job_id = j->id, .correlation_id = j->corr};
    aarmd_log_ctx(AARMD_LOG_INFO, "execute_end", &lc, "rejected: %s", message);
    aarmd_job_free(j, s->e->plugin);
}

/* Validates and tokenizes; true when the job may be queued (STARTED sent). */
static bool intake_one(struct aarmd_sched *s, struct aarmd_job *j)
{
    char msg[512], err[256];
    const char *bad = aarmd_job_check(j, msg, sizeof msg);
    if (bad) {
        reject(s, j, bad);
        return false;
    }
    int rc = aarmd_tokenizer_encode(s->e->tok, j->prompt, j->prompt_len, true, true, &j->ids, &j->n_ids,
                                    err, sizeof err);
    free(j->prompt);
    j->prompt = NULL;
    if (rc != AARMD_OK) {
        snprintf(msg, sizeof msg, "prompt: %s", err);
        reject(s, j, msg);
        return false;
    }
    if (j->n_ids == 0) {
        reject(s, j, "prompt tokenizes to zero tokens");
        return false;
    }
    if ((uint64_t)j->n_ids + 1 > s->o.ctx_size) {
        snprintf(msg, sizeof msg, "prompt is %zu tokens but the context holds %" PRIu32
                 " (at least one token must be generated)", j->n_ids, s->o.ctx_size);
        reject(s, j, msg);
        return false;
    }
    aarmd_job_emit_started(j, wall_ms());
    char tin[24], seed[24];
    snprintf(tin, sizeof tin, "%zu", j->n_ids);
    snprintf(seed, sizeof seed, "%" PRIu64, j->sp.seed);
    const char *extra[] = {"tokens_in", tin, "seed", seed, NULL, NULL};
    struct aarmd_log_ctx lc = {.job_id = j->id, .correlation_id = j->corr, .extra = extra};
    aarmd_log_ctx(AARMD_LOG_INFO, "execute_start", &lc, NULL);
    return true;
}

static void *intake_main(void *arg)
{
    struct aarmd_sched *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        struct aarmd_job *todo = NULL, *dead = NULL;
        for (struct aarmd_job *j = s->jobs; j; j = j->next) {
            if (j->state == AARMD_JOB_QUEUED && j->cancel) {
                dead = j;
                break;
            }
            if (j->state == AARMD_JOB_INTAKE && !todo)
                todo = j;
        }
        if (dead) {
            bool draining = s->draining;
            unlink_locked(s, dead);
            pthread_mutex_unlock(&s->lock);
            aarmd_job_emit_error(dead, "CANCELLED", draining ? "worker shutting down" : "job cancelled", false, 0);
            log_end(dead, "CANCELLED");
            aarmd_job_free(dead, s->e->plugin);
            pthread_mutex_lock(&s->lock);
            continue;
        }
        if (todo) {
            todo->state = AARMD_JOB_TOKENIZING;
            pthread_mutex_unlock(&s->lock);
            bool ok = intake_one(s, todo);
            pthread_mutex_lock(&s->lock);
            if (ok) {
                todo->state = AARMD_JOB_QUEUED;
                pthread_cond_signal(&s->sched_cv);
            }
            continue;
        }
        if (s->quit)
            break;
        pthread_cond_wait(&s->intake_cv, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- the scheduler thread ----------------------------------------------- */

static const char *backend_code(int rc, bool *retriable)
{
    *retriable = rc == AARMD_ENOMEM;
    return rc == AARMD_ENOMEM ? "OUT_OF_MEMORY" : "BACKEND_ERROR";
}

/* Gives an admitted job its sequence, sampler and logits; false when it ended. */
static bool admit(struct aarmd_sched *s, struct aarmd_job *j)
{
    char err[256], msg[320];
    j->t_admit = mono_ms();
    int rc = aarmd_plugin_seq_new(s->e->plugin, s->e->model, s->o.ctx_size, &j->seq, err, sizeof err);
    if (rc != AARMD_OK) {
        bool retriable;
        const char *code = backend_code(rc, &retriable);
        snprintf(msg, sizeof msg, "sequence: %s", err);
        if (rc == AARMD_EDEVICE) {
            pthread_mutex_lock(&s->lock);
            s->fatal = true;
            pthread_mutex_unlock(&s->lock);
        }
        end_error(s, j, code, msg, retriable);
        return false;
    }
    j->smp = aarmd_sampler_new(&j->sp, s->n_vocab);
    j->logits = malloc((size_t)s->n_vocab * sizeof *j->logits);
    if (!j->smp || !j->logits) {
        end_error(s, j, "OUT_OF_MEMORY", "out of host memory for the sampler", true);
        return false;
    }
    aarmd_sampler_accept(j->smp, j->ids, j->n_ids);
    aarmd_job_text_begin(j, s->e->tok);
    return true;
}

/* Samples the token after a step that gave j logits, and streams it. */
static void after_logits(struct aarmd_sched *s, struct aarmd_job *j)
{
    struct aarmd_sample sample;
    memset(&sample, 0, sizeof sample);
    int rc = aarmd_sampler_sample(j->smp, j->logits, &sample);
    if (rc != AARMD_OK || sample.id < 0 || (uint32_t)sample.id >= s->n_vocab) {
        end_error(s, j, "INTERNAL", "sampler failed", false);
        return;
    }
    double now = mono_ms();
    if (j->t_first <= 0) {
        j->t_first = now;
        j->t_metrics = now;
    }
    j->t_last = now;
    int32_t id = sample.id;
    if (aarmd_tokenizer_is_eog(s->e->tok, id)) {
        aarmd_job_text_eos(j);
        end_ok(s, j, "EOS", NULL);
        return;
    }
    aarmd_sampler_accept(j->smp, &id, 1);
    j->n_out++;
    j->next_tok = id;
    /* the token can be fed only while the sequence has room for it */
    bool last = j->n_out >= j->max_tokens || j->seq_len >= s->o.ctx_size;
    int k = aarmd_job_push_token(j, id, &sample, last);
    if (k >= 0)
        end_ok(s, j, "STOP_SEQUENCE", aarmd_stop_string(&j->stop, k));
    else if (last)
        end_ok(s, j, "MAX_TOKENS", NULL);
    else if (now - j->t_metrics >= METRICS_EVERY_MS) {
        j->t_metrics = now;
        aarmd_job_emit_metrics(j, s->e->model_bytes);
    }
}

/* Removes ended jobs from the active array. */
static void compact_active(struct aarmd_sched *s)
{
    uint32_t w = 0;
    for (uint32_t i = 0; i < s->n_active; i++) {
        struct aarmd_job *j = s->active[i];
        if (j->done)
            aarmd_job_free(j, s->e->plugin);
        else
            s->active[w++] = j;
    }
    s->n_active = w;
}

/* One iteration's bookkeeping under the lock: admits queued jobs, snapshots flags.
 * Waits while there is nothing to do. Returns false when the thread should exit. */
static bool gather(struct aarmd_sched *s, bool *cancel, bool *paused)
{
    pthread_mutex_lock(&s->lock);
    for (;;) {
        bool work = false;
        for (uint32_t i = 0; i < s->n_active; i++) {
            struct aarmd_job *j = s->active[i];
            if (j->cancel || !j->paused)
                work = true;
        }
        if (!s->draining && s->n_active < s->o.max_jobs)
            for (struct aarmd_job *j = s->jobs; j && !work; j = j->next)
                if (j->state == AARMD_JOB_QUEUED && !j->cancel)
                    work = true;
        if (work)
            break;
        if (s->quit && s->n_active == 0) {
            pthread_mutex_unlock(&s->lock);
            return false;
        }
        if (s->n_active > 0) {
            struct timespec ts;
            deadline_in(&ts, IDLE_TICK_MS);
            pthread_cond_timedwait(&s->sched_cv, &s->lock, &ts);
            break;   /* re-check timeouts of paused jobs */
        }
        pthread_cond_wait(&s->sched_cv, &s->lock);
    }
    uint32_t first_new = s->n_active;
    if (!s->draining)
        for (struct aarmd_job *j = s->jobs; j && s->n_active < s->o.max_jobs; j = j->next)
            if (j->state == AARMD_JOB_QUEUED && !j->cancel) {
                j->state = AARMD_JOB_RUNNING;
                s->n_waiting--;
                s->n_running++;
                s->active[s->n_active++] = j;
            }
    s->draining_snap = s->draining;
    for (uint32_t i = 0; i < s->n_active; i++) {
        cancel[i] = s->active[i]->cancel;
        paused[i] = s->active[i]->paused;
    }
    pthread_mutex_unlock(&s->lock);
    for (uint32_t i = first_new; i < s->n_active; i++)
        admit(s, s->active[i]);
    return true;
}

static void run_step(struct aarmd_sched *s, const bool *cancel, const bool *paused)
{
    double now = mono_ms();
    for (uint32_t i = 0; i < s->n_active; i++) {
        struct aarmd_job *j = s->active[i];
        if (j->done)
            continue;
        if (cancel[i])
            end_error(s, j, "CANCELLED", s->draining_snap ? "worker shutting down" : "job cancelled", false);
        else if (s->o.inference_timeout_s && now - j->t_admit > 1e3 * s->o.inference_timeout_s)
            end_error(s, j, "INFERENCE_TIMEOUT", "the job ran past the inference timeout", true);
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->n_active; i++) {
        struct aarmd_job *j = s->active[i];
        if (j->done || paused[i])
            continue;
        struct aarmd_batch_entry *b = &s->entries[n];
        b->seq = j->seq;
        b->logits = j->logits;
        if (j->n_fed < j->n_ids) {
            size_t left = j->n_ids - j->n_fed;
            size_t chunk = s->o.prefill_chunk && s->o.prefill_chunk < left ? s->o.prefill_chunk : left;
            b->tokens = j->ids + j->n_fed;
            b->n_tokens = (uint32_t)chunk;
            b->want_logits = j->n_fed + chunk == j->n_ids;
        } else {
            b->tokens = &j->next_tok;
            b->n_tokens = 1;
            b->want_logits = 1;
        }
        s->entry_job[n++] = j;
    }
    if (n == 0)
        return;
    char err[512], msg[640];
    int rc = aarmd_plugin_step(s->e->plugin, s->e->model, s->entries, n, err, sizeof err);
    if (rc != AARMD_OK) {
        bool retriable;
        const char *code = backend_code(rc, &retriable);
        snprintf(msg, sizeof msg, "step: %s", err);
        if (rc == AARMD_EDEVICE) {
            pthread_mutex_lock(&s->lock);
            s->fatal = true;
            pthread_mutex_unlock(&s->lock);
            aarmd_log(AARMD_LOG_ERROR, "error", "device error, worker unhealthy: %s", err);
        }
        for (uint32_t i = 0; i < n; i++)
            end_error(s, s->entry_job[i], code, msg, retriable);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct aarmd_job *j = s->entry_job[i];
        const struct aarmd_batch_entry *b = &s->entries[i];
        if (j->n_fed < j->n_ids)
            j->n_fed += b->n_tokens;
        j->seq_len += b->n_tokens;
        if (b->want_logits)
            after_logits(s, j);
    }
}

static void *sched_main(void *arg)
{
    struct aarmd_sched *s = arg;
    while (gather(s, s->cancel_snap, s->paused_snap)) {
        run_step(s, s->cancel_snap, s->paused_snap);
        compact_active(s);
    }
    return NULL;
}

/* ---- public API ---------------------------------------------------------- */

struct aarmd_sched *aarmd_sched_new(struct aarmd_engine *e, const struct aarmd_sched_opts *o,
                                    char *err, size_t errlen)
{
    if (!e || !o || !e->tok || !e->model) {
        snprintf(err, errlen, "scheduler: no loaded engine");
        return NULL;
    }
    if (o->max_jobs < 1 || o->max_jobs > 4096) {
        snprintf(err, errlen, "scheduler: max_jobs must be 1..4096 (got %" PRIu32 ")", o->max_jobs);
        return NULL;
    }
    struct aarmd_sched *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "scheduler: out of memory");
        return NULL;
    }
    s->e = e;
    s->o = *o;
    if (s->o.ctx_size == 0)
        s->o.ctx_size = e->desc && e->desc->n_ctx_train ? e->desc->n_ctx_train : 4096;
    if (s->o.ctx_size < 2) {
        snprintf(err, errlen, "scheduler: ctx_size must be at least 2 (got %" PRIu32 ")", s->o.ctx_size);
        free(s);
        return NULL;
    }
    s->n_vocab = e->desc && e->desc->n_vocab ? e->desc->n_vocab : aarmd_tokenizer_n_vocab(e->tok);
    if (s->n_vocab == 0) {
        snprintf(err, errlen, "scheduler: the model has an empty vocabulary");
        free(s);
        return NULL;
    }
    s->accepting = true;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->intake_cv, &ca);
    pthread_cond_init(&s->sched_cv, &ca);
    pthread_cond_init(&s->drain_cv, &ca);
    pthread_condattr_destroy(&ca);
    s->active = calloc(s->o.max_jobs, sizeof *s->active);
    s->entries = calloc(s->o.max_jobs, sizeof *s->entries);
    s->entry_job = calloc(s->o.max_jobs, sizeof *s->entry_job);
    s->cancel_snap = calloc(s->o.max_jobs, sizeof *s->cancel_snap);
    s->paused_snap = calloc(s->o.max_jobs, sizeof *s->paused_snap);
    if (!s->active || !s->entries || !s->entry_job || !s->cancel_snap || !s->paused_snap) {
        snprintf(err, errlen, "scheduler: out of memory");
        goto fail;
    }
    if (pthread_create(&s->intake_thread, NULL, intake_main, s) != 0) {
        snprintf(err, errlen, "scheduler: cannot start the intake thread");
        goto fail;
    }
    s->intake_started = true;
    if (pthread_create(&s->sched_thread, NULL, sched_main, s) != 0) {
        snprintf(err, errlen, "scheduler: cannot start the scheduler thread");
        goto fail;
    }
    s->sched_started = true;
    return s;

fail:
    aarmd_sched_free(s, 0);
    return NULL;
}

void aarmd_sched_free(struct aarmd_sched *s, uint32_t drain_ms)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->accepting = false;
    s->draining = true;
    /* waiting jobs are not started any more; running ones get drain_ms */
    for (struct aarmd_job *j = s->jobs; j; j = j->next)
        if (j->state != AARMD_JOB_RUNNING)
            j->cancel = true;
    pthread_cond_broadcast(&s->intake_cv);
    struct timespec ts;
    deadline_in(&ts, drain_ms);
    while (s->n_running > 0 && s->sched_started) {
        if (pthread_cond_timedwait(&s->drain_cv, &s->lock, &ts) == ETIMEDOUT)
            break;
    }
    for (struct aarmd_job *j = s->jobs; j; j = j->next)
        j->cancel = true;
    pthread_cond_broadcast(&s->intake_cv);
    pthread_cond_broadcast(&s->sched_cv);
    while (s->jobs && s->sched_started && s->intake_started)
        pthread_cond_wait(&s->drain_cv, &s->lock);
    s->quit = true;
    pthread_cond_broadcast(&s->intake_cv);
    pthread_cond_broadcast(&s->sched_cv);
    pthread_mutex_unlock(&s->lock);
    if (s->intake_started)
        pthread_join(s->intake_thread, NULL);
    if (s->sched_started)
        pthread_join(s->sched_thread, NULL);
    /* threads that never started leave jobs behind only on a failed _new: none */
    while (s->jobs) {
        struct aarmd_job *j = s->jobs;
        s->jobs = j->next;
        aarmd_job_free(j, s->e->plugin);
    }
    free(s->active);
    free(s->entries);
    free(s->entry_job);
    free(s->cancel_snap);
    free(s->paused_snap);
    pthread_cond_destroy(&s->intake_cv);
    pthread_cond_destroy(&s->sched_cv);
    pthread_cond_destroy(&s->drain_cv);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

enum aarmd_submit_result aarmd_sched_submit(struct aarmd_sched *s, const struct aarmd_job_request *r,
                                            aarmd_job_event_fn cb, void *user)
{
    if (!s || !r || !cb)
        return AARMD_SUBMIT_NOMEM;
    struct aarmd_job *j = aarmd_job_new(r, cb, user);
    if (!j)
        return AARMD_SUBMIT_NOMEM;

    enum aarmd_submit_result res = AARMD_SUBMIT_OK;
    pthread_mutex_lock(&s->lock);
    if (!s->accepting)
        res = AARMD_SUBMIT_SHUTTING_DOWN;
    else if (j->id[0] && find_locked(s, j->id))
        res = AARMD_SUBMIT_DUPLICATE;
    else if ((uint64_t)s->n_running + s->n_waiting >= (uint64_t)s->o.max_jobs + s->o.queue_depth)
        res = AARMD_SUBMIT_BUSY;
    else {
        j->state = AARMD_JOB_INTAKE;
        struct aarmd_job **p = &s->jobs;
        while (*p)
            p = &(*p)->next;
        *p = j;
        s->n_waiting++;
        pthread_cond_signal(&s->intake_cv);
    }
    pthread_mutex_unlock(&s->lock);
    if (res != AARMD_SUBMIT_OK)
        aarmd_job_free(j, s->e->plugin);
    return res;
}

void aarmd_sched_cancel(struct aarmd_sched *s, const char *job_id)
{
    if (!s || !job_id)
        return;
    pthread_mutex_lock(&s->lock);
    struct aarmd_job *j = find_locked(s, job_id);
    if (j && !j->cancel) {
        j->cancel = true;
        aarmd_log_ctx(AARMD_LOG_INFO, "cancel", &(struct aarmd_log_ctx){.job_id = j->id, .correlation_id = j->corr},
                      NULL);
        pthread_cond_signal(&s->intake_cv);
        pthread_cond_signal(&s->sched_cv);
    }
    pthread_mutex_unlock(&s->lock);
}

void aarmd_sched_pause(struct aarmd_sched *s, const char *job_id, bool paused)
{
    if (!s || !job_id)
        return;
    pthread_mutex_lock(&s->lock);
    struct aarmd_job *j = find_locked(s, job_id);
    if (j && j->paused != paused) {
        j->paused = paused;
        pthread_cond_signal(&s->sched_cv);
    }
    pthread_mutex_unlock(&s->lock);
}

void aarmd_sched_stop_accepting(struct aarmd_sched *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->accepting = false;
    pthread_mutex_unlock(&s->lock);
}

void aarmd_sched_stats(struct aarmd_sched *s, struct aarmd_sched_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    out->running = s->n_running;
    out->queued = s->n_waiting;
    out->fatal = s->fatal;
    pthread_mutex_unlock(&s->lock);
}
