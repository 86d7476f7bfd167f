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
#include <unistd.h>

#include "engine.h"
#include "job.h"
#include "log.h"
#include "plugin.h"
#include "prefix_cache.h"
#include "sampler.h"
#include "tokenizer.h"
#include "workers.h"

#define METRICS_EVERY_MS 500.0
#define IDLE_TICK_MS 100          /* wake-up period while jobs exist (timeouts) */
#define PARALLEL_SAMPLES 4        /* steps with fewer logits sample on the scheduler thread alone */

/* A logits buffer of the pool and where it came from (aarmd_plugin_logits_alloc). */
struct logits_buf {
    float *p;
    bool by_backend;
};

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
    /* logits buffers: every one allocated (at most max_jobs) and the free ones */
    struct logits_buf *lg_all;
    float **lg_free;
    uint32_t n_lg_all, n_lg_free;
    struct aarmd_workers *workers;          /* samples a step's jobs in parallel; NULL: inline */
    bool wake_early;                        /* wake them when a step starts (its compute is off the host) */
    struct aarmd_job **smp_jobs;            /* this step's jobs that got logits */
    double step_ms, sample_ms;              /* time in the backend's step / sampling and streaming */

    /* paged KV: set by _new, read-only after (intake reads them too) */
    bool paged;
    uint32_t block_tokens;
    uint64_t blocks_total;
    /* the scheduler thread's */
    struct aarmd_prefix_cache *pc;          /* NULL: no prefix reuse */
    bool reuse_off;                         /* seq_fork failed: pc stays empty */
    bool mem_blocked;                       /* the first waiting job did not fit; retry after a job ends */
    uint64_t reused_tokens;
    uint64_t steps, step_tokens_sum, step_hist[AARMD_SCHED_STEP_BUCKETS + 1];
    /* under the lock: for aarmd_sched_stats, and the flush request */
    struct aarmd_sched_stats snap;
    bool flush_req;
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

static uint64_t blocks_for(const struct aarmd_sched *s, uint64_t tokens)
{
    return (tokens + s->block_tokens - 1) / s->block_tokens;
}

static void cache_seq_free(void *user, void *seq)
{
    struct aarmd_sched *s = user;
    aarmd_plugin_seq_free(s->e->plugin, seq);
}

/* Gives the prefix cache the first n_blocks whole blocks of j's sequence (a
 * fork: j keeps its own), when that adds blocks the cache does not know; at
 * most the cache's cap, so a long sequence still leaves its head there. */
static void cache_keep(struct aarmd_sched *s, struct aarmd_job *j, uint32_t n_blocks)
{
    if (s->pc && n_blocks > aarmd_prefix_cache_max_blocks(s->pc))   /* keep the head of a long one */
        n_blocks = (uint32_t)aarmd_prefix_cache_max_blocks(s->pc);
    if (!s->pc || s->reuse_off || n_blocks == 0 || n_blocks <= aarmd_prefix_ref_blocks(j->pref))
        return;
    char err[256];
    struct aarmd_backend_seq *fork = NULL;
    int rc = aarmd_plugin_seq_fork(s->e->plugin, j->seq, n_blocks * s->block_tokens, s->o.ctx_size, &fork, err,
                                   sizeof err);
    if (rc != AARMD_OK) {
        aarmd_log(AARMD_LOG_WARN, "prefix_cache", "seq_fork failed (%s): prefix reuse off", err);
        aarmd_prefix_cache_flush(s->pc);  /* running jobs' refs stay valid until they end */
        s->reuse_off = true;
        return;
    }
    aarmd_prefix_cache_insert(s->pc, j->ids, n_blocks, fork, &j->pref);
}

static void publish_stats(struct aarmd_sched *s);

/* The job's sequence goes: into the cache (finished normally) or freed. The
 * pool's numbers are published before the job leaves the running count, so a
 * stats reader never sees "nothing running" beside the job's blocks. */
static void release_seq(struct aarmd_sched *s, struct aarmd_job *j, bool keep)
{
    if (j->seq && keep && s->pc && j->ids_cap)
        cache_keep(s, j, j->seq_len / s->block_tokens);
    if (s->pc)
        aarmd_prefix_ref_free(s->pc, j->pref);
    j->pref = NULL;
    if (j->seq) {
        aarmd_plugin_seq_free(s->e->plugin, j->seq);
        j->seq = NULL;
    }
    s->mem_blocked = false;
    if (s->paged)
        publish_stats(s);
}

/* Terminal: sends the waiting token event, frees (or caches) the sequence,
 * unlinks (the id is free again), then tells the client. The job is freed by
 * its thread. */
static void end_error(struct aarmd_sched *s, struct aarmd_job *j, const char *code, const char *message,
                      bool retriable)
{
    aarmd_job_flush_deferred(j);
    release_seq(s, j, false);
    pthread_mutex_lock(&s->lock);
    unlink_locked(s, j);
    pthread_mutex_unlock(&s->lock);
    aarmd_job_emit_error(j, code, message, retriable, 0);
    log_end(j, code);
}

static void end_ok(struct aarmd_sched *s, struct aarmd_job *j, const char *reason, const char *matched)
{
    aarmd_job_flush_deferred(j);
    release_seq(s, j, true);
    pthread_mutex_lock(&s->lock);
    unlink_locked(s, j);
    pthread_mutex_unlock(&s->lock);
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
    if (s->paged) {
        uint64_t span = (uint64_t)j->n_ids + j->max_tokens;
        uint64_t need = blocks_for(s, span < s->o.ctx_size ? span : s->o.ctx_size);
        if (need > s->blocks_total) {
            snprintf(msg, sizeof msg, "prompt of %zu tokens plus max_tokens %" PRIu32 " needs %" PRIu64
                     " KV blocks of %" PRIu32 " tokens but the pool holds %" PRIu64 " blocks (%" PRIu64 " tokens)",
                     j->n_ids, j->max_tokens, need, s->block_tokens, s->blocks_total,
                     s->blocks_total * s->block_tokens);
            reject(s, j, msg);
            return false;
        }
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

/* Blocks running jobs reserved but have not taken yet (j excluded). */
static uint64_t pending_blocks(const struct aarmd_sched *s, const struct aarmd_job *j)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < s->n_active; i++) {
        const struct aarmd_job *a = s->active[i];
        if (a == j || a->done || !a->seq)
            continue;
        uint64_t held = blocks_for(s, a->seq_len);
        held = held > a->shared_blocks ? held - a->shared_blocks : 0;
        if (a->reserve_blocks > held)
            sum += a->reserve_blocks - held;
    }
    return sum;
}

/* Free blocks now, or 0 when the backend cannot say. */
static uint64_t kv_free_now(struct aarmd_sched *s)
{
    struct aarmd_kv_info kv;
    char err[256];
    if (aarmd_plugin_kv_info(s->e->plugin, s->e->model, &kv, err, sizeof err) != AARMD_OK) {
        aarmd_log(AARMD_LOG_WARN, "kv_info", "kv_info failed: %s", err);
        return 0;
    }
    return kv.blocks_free;
}

enum admit_result { ADMIT_OK, ADMIT_ENDED, ADMIT_NO_MEMORY };

/* Paged backends: forks the longest cached prefix of j's prompt, then checks
 * j's reservation against the free blocks (evicting cached sequences, least
 * recently used first, while it does not fit). ADMIT_NO_MEMORY leaves j as it
 * was (no sequence). */
static enum admit_result reserve_paged(struct aarmd_sched *s, struct aarmd_job *j)
{
    uint64_t span = (uint64_t)j->n_ids + j->max_tokens;
    uint64_t need = blocks_for(s, span < s->o.ctx_size ? span : s->o.ctx_size);
    uint32_t k = 0;
    if (s->pc && !s->reuse_off) {
        void *src = NULL;
        /* at least one prompt token is computed, for its logits */
        uint32_t max_k = (uint32_t)((j->n_ids - 1) / s->block_tokens);
        k = aarmd_prefix_cache_lookup(s->pc, j->ids, j->n_ids, max_k, &src, &j->pref);
        if (k > 0) {
            char err[256];
            int rc = aarmd_plugin_seq_fork(s->e->plugin, src, k * s->block_tokens, s->o.ctx_size, &j->seq, err,
                                           sizeof err);
            if (rc != AARMD_OK) {
                aarmd_log(AARMD_LOG_WARN, "prefix_cache", "seq_fork failed (%s): prefix reuse off", err);
                aarmd_prefix_ref_free(s->pc, j->pref);
                j->pref = NULL;
                j->seq = NULL;
                aarmd_prefix_cache_flush(s->pc);
                s->reuse_off = true;
                k = 0;
            }
        }
    }
    uint64_t reserve = need > k ? need - k : 0;
    for (;;) {
        uint64_t free_now = kv_free_now(s), pending = pending_blocks(s, j);
        if (free_now >= pending && free_now - pending >= reserve)
            break;
        if (s->pc && aarmd_prefix_cache_evict_lru(s->pc))
            continue;
        if (j->seq)
            aarmd_plugin_seq_free(s->e->plugin, j->seq);
        j->seq = NULL;
        if (s->pc)
            aarmd_prefix_ref_free(s->pc, j->pref);
        j->pref = NULL;
        return ADMIT_NO_MEMORY;
    }
    j->reserve_blocks = (uint32_t)reserve;
    j->shared_blocks = k;
    j->n_fed = j->seq_len = k * s->block_tokens;
    s->reused_tokens += j->n_fed;
    return ADMIT_OK;
}

/* A logits buffer: a free one of the pool, else a new one (the backend's
 * logits_alloc when it has one). NULL when out of memory. */
static float *logits_get(struct aarmd_sched *s)
{
    if (s->n_lg_free > 0)
        return s->lg_free[--s->n_lg_free];
    if (s->n_lg_all >= s->o.max_jobs)   /* cannot happen: one buffer per active job */
        return NULL;
    struct logits_buf *b = &s->lg_all[s->n_lg_all];
    b->p = aarmd_plugin_logits_alloc(s->e->plugin, s->e->model, (size_t)s->n_vocab * sizeof(float), &b->by_backend);
    if (!b->p)
        return NULL;
    s->n_lg_all++;
    return b->p;
}

/* Gives j's logits buffer back to the pool. */
static void logits_put(struct aarmd_sched *s, struct aarmd_job *j)
{
    if (j->logits)
        s->lg_free[s->n_lg_free++] = j->logits;
    j->logits = NULL;
}

/* Gives an admitted job its sequence, sampler and logits. */
static enum admit_result admit(struct aarmd_sched *s, struct aarmd_job *j)
{
    char err[256], msg[320];
    j->t_admit = mono_ms();
    if (s->paged) {
        enum admit_result ar = reserve_paged(s, j);
        if (ar != ADMIT_OK)
            return ar;
    }
    int rc = j->seq ? AARMD_OK
                    : aarmd_plugin_seq_new(s->e->plugin, s->e->model, s->o.ctx_size, &j->seq, err, sizeof err);
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
        return ADMIT_ENDED;
    }
    j->smp = aarmd_sampler_new(&j->sp, s->n_vocab);
    j->logits = logits_get(s);
    if (!j->smp || !j->logits) {
        end_error(s, j, "OUT_OF_MEMORY", "out of host memory for the sampler", true);
        return ADMIT_ENDED;
    }
    if (s->pc && !s->reuse_off) {
        /* ids keeps the fed tokens too: the history a finished sequence is cached under */
        size_t span = j->n_ids + j->max_tokens;
        size_t cap = (span < s->o.ctx_size ? span : s->o.ctx_size) + 1;
        int32_t *ids = cap > j->n_ids ? realloc(j->ids, cap * sizeof *ids) : NULL;
        if (ids) {
            j->ids = ids;
            j->ids_cap = cap;
        }
    }
    aarmd_sampler_accept(j->smp, j->ids, j->n_ids);
    aarmd_job_text_begin(j, s->e->tok);
    return ADMIT_OK;
}

/* Draws j's next token from its logits (any thread: j's sampler is j's alone). */
static void draw(struct aarmd_job *j)
{
    memset(&j->sample, 0, sizeof j->sample);
    j->sample_rc = aarmd_sampler_sample(j->smp, j->logits, &j->sample);
}

static void draw_one(void *ctx, uint32_t i)
{
    draw(((struct aarmd_job **)ctx)[i]);
}

/* Streams the token drawn for j after a step that gave it logits. */
static void after_logits(struct aarmd_sched *s, struct aarmd_job *j)
{
    const struct aarmd_sample sample = j->sample;
    int rc = j->sample_rc;
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
        if (j->done) {
            logits_put(s, j);
            aarmd_job_free(j, s->e->plugin);
        } else {
            s->active[w++] = j;
        }
    }
    s->n_active = w;
}

/* Under the lock: the first waiting job (arrival order), or NULL. */
static struct aarmd_job *first_queued_locked(struct aarmd_sched *s)
{
    for (struct aarmd_job *j = s->jobs; j; j = j->next)
        if (j->state == AARMD_JOB_QUEUED && !j->cancel)
            return j;
    return NULL;
}

/* Admits waiting jobs in arrival order while slots (and, paged, blocks) allow.
 * The first job that does not fit stops admission: nothing overtakes it. */
static void admit_waiting(struct aarmd_sched *s)
{
    for (;;) {
        pthread_mutex_lock(&s->lock);
        struct aarmd_job *j = NULL;
        if (!s->draining && s->n_active < s->o.max_jobs && !s->mem_blocked)
            j = first_queued_locked(s);
        if (j) {
            j->state = AARMD_JOB_RUNNING;
            s->n_waiting--;
            s->n_running++;
            s->cancel_snap[s->n_active] = false;
            s->paused_snap[s->n_active] = j->paused;
            s->active[s->n_active++] = j;
        }
        pthread_mutex_unlock(&s->lock);
        if (!j)
            return;
        if (admit(s, j) != ADMIT_NO_MEMORY)
            continue;
        /* back to the head of the queue (the list keeps arrival order) */
        pthread_mutex_lock(&s->lock);
        j->state = AARMD_JOB_QUEUED;
        s->n_running--;
        s->n_waiting++;
        s->n_active--;
        s->mem_blocked = true;
        if (j->cancel)
            pthread_cond_signal(&s->intake_cv);
        pthread_mutex_unlock(&s->lock);
        return;
    }
}

/* One iteration's bookkeeping: waits while there is nothing to do, snapshots
 * flags, admits waiting jobs. Returns false when the thread should exit. */
static bool gather(struct aarmd_sched *s, bool *cancel, bool *paused)
{
    pthread_mutex_lock(&s->lock);
    for (;;) {
        bool work = s->flush_req;
        for (uint32_t i = 0; i < s->n_active; i++) {
            struct aarmd_job *j = s->active[i];
            if (j->cancel || !j->paused)
                work = true;
        }
        if (!s->draining && s->n_active < s->o.max_jobs && !s->mem_blocked && !work)
            work = first_queued_locked(s) != NULL;
        if (work)
            break;
        if (s->quit && s->n_active == 0) {
            pthread_mutex_unlock(&s->lock);
            return false;
        }
        if (s->n_active > 0 || s->mem_blocked) {
            struct timespec ts;
            deadline_in(&ts, IDLE_TICK_MS);
            pthread_cond_timedwait(&s->sched_cv, &s->lock, &ts);
            s->mem_blocked = false;   /* retry admission each tick */
            break;   /* re-check timeouts of paused jobs */
        }
        pthread_cond_wait(&s->sched_cv, &s->lock);
    }
    bool flush = s->flush_req;
    s->flush_req = false;
    s->draining_snap = s->draining;
    for (uint32_t i = 0; i < s->n_active; i++) {
        cancel[i] = s->active[i]->cancel;
        paused[i] = s->active[i]->paused;
    }
    pthread_mutex_unlock(&s->lock);
    if (flush && s->pc) {
        aarmd_prefix_cache_flush(s->pc);
        s->mem_blocked = false;
    }
    admit_waiting(s);
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
    /* decodes first: every running job's next token */
    for (uint32_t i = 0; i < s->n_active; i++) {
        struct aarmd_job *j = s->active[i];
        if (j->done || paused[i] || j->n_fed < j->n_ids)
            continue;
        struct aarmd_batch_entry *b = &s->entries[n];
        b->seq = j->seq;
        b->logits = j->logits;
        if (j->ids_cap > j->seq_len) {   /* keep the history */
            j->ids[j->seq_len] = j->next_tok;
            b->tokens = j->ids + j->seq_len;
        } else {
            b->tokens = &j->next_tok;
        }
        b->n_tokens = 1;
        b->want_logits = 1;
        s->entry_job[n++] = j;
    }
    /* then prefill chunks in admission order, within the step's budget */
    uint64_t budget = s->o.step_tokens ? s->o.step_tokens : UINT64_MAX;
    budget = budget > n ? budget - n : 0;
    for (uint32_t i = 0; i < s->n_active && budget > 0; i++) {
        struct aarmd_job *j = s->active[i];
        if (j->done || paused[i] || j->n_fed >= j->n_ids)
            continue;
        struct aarmd_batch_entry *b = &s->entries[n];
        b->seq = j->seq;
        b->logits = j->logits;
        size_t chunk = j->n_ids - j->n_fed;
        if (s->o.prefill_chunk && s->o.prefill_chunk < chunk)
            chunk = s->o.prefill_chunk;
        if (budget < chunk)
            chunk = (size_t)budget;
        budget -= chunk;
        b->tokens = j->ids + j->n_fed;
        b->n_tokens = (uint32_t)chunk;
        b->want_logits = j->n_fed + chunk == j->n_ids;
        s->entry_job[n++] = j;
    }
    if (n == 0)
        return;
    uint32_t n_want = 0;   /* the sampling threads wake while the step runs when they will be needed */
    for (uint32_t i = 0; i < n; i++)
        n_want += s->entries[i].want_logits;
    if (s->wake_early && n_want >= PARALLEL_SAMPLES)
        aarmd_workers_prepare(s->workers);
    char err[512], msg[640];
    double t0 = mono_ms();
    int rc = aarmd_plugin_step(s->e->plugin, s->e->model, s->entries, n, err, sizeof err);
    double t1 = mono_ms();
    s->step_ms += t1 - t0;
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
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += s->entries[i].n_tokens;
    s->steps++;
    s->step_tokens_sum += total;
    uint32_t bucket = 0;
    while (bucket < AARMD_SCHED_STEP_BUCKETS && total > (UINT64_C(1) << bucket))
        bucket++;
    s->step_hist[bucket]++;
    /* draw every job's token (in parallel: each job has its own sampler), then stream in step order */
    uint32_t n_smp = 0;
    for (uint32_t i = 0; i < n; i++)
        if (s->entries[i].want_logits)
            s->smp_jobs[n_smp++] = s->entry_job[i];
    if (n_smp >= PARALLEL_SAMPLES)
        aarmd_workers_run(s->workers, n_smp, draw_one, s->smp_jobs);
    else
        for (uint32_t i = 0; i < n_smp; i++)
            draw(s->smp_jobs[i]);
    for (uint32_t i = 0; i < n; i++) {
        struct aarmd_job *j = s->entry_job[i];
        const struct aarmd_batch_entry *b = &s->entries[i];
        bool prefill = j->n_fed < j->n_ids;
        if (prefill)
            j->n_fed += b->n_tokens;
        j->seq_len += b->n_tokens;
        if (prefill && j->n_fed == j->n_ids && s->paged)   /* share the prompt with concurrent jobs */
            cache_keep(s, j, (uint32_t)(j->n_ids / s->block_tokens));
        if (b->want_logits)
            after_logits(s, j);
    }
    s->sample_ms += mono_ms() - t1;
}

/* Leaves the numbers aarmd_sched_stats reads (the pool's from kv_info). */
static void publish_stats(struct aarmd_sched *s)
{
    struct aarmd_kv_info kv;
    char err[256];
    bool have = s->paged && aarmd_plugin_kv_info(s->e->plugin, s->e->model, &kv, err, sizeof err) == AARMD_OK;
    pthread_mutex_lock(&s->lock);
    struct aarmd_sched_stats *o = &s->snap;
    if (have) {
        o->kv_paged = true;
        o->kv_block_tokens = kv.block_tokens;
        o->kv_blocks_total = kv.blocks_total;
        o->kv_blocks_free = kv.blocks_free;
        o->kv_blocks_used = kv.blocks_total >= kv.blocks_free ? kv.blocks_total - kv.blocks_free : 0;
    }
    o->kv_blocks_cached = aarmd_prefix_cache_blocks(s->pc);
    o->prefix_reused_tokens = s->reused_tokens;
    o->steps = s->steps;
    o->step_tokens_sum = s->step_tokens_sum;
    o->step_seconds = s->step_ms / 1e3;
    o->sample_seconds = s->sample_ms / 1e3;
    memcpy(o->step_hist, s->step_hist, sizeof o->step_hist);
    pthread_mutex_unlock(&s->lock);
}

static void *sched_main(void *arg)
{
    struct aarmd_sched *s = arg;
    while (gather(s, s->cancel_snap, s->paused_snap)) {
        run_step(s, s->cancel_snap, s->paused_snap);
        compact_active(s);
        publish_stats(s);
    }
    /* every job has ended: nothing refers to the cache's blocks any more */
    if (s->pc)
        aarmd_prefix_cache_flush(s->pc);
    publish_stats(s);
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
    if (s->o.step_tokens && s->o.step_tokens < s->o.max_jobs) {
        aarmd_log(AARMD_LOG_WARN, "startup", "step_tokens %" PRIu32 " < max_jobs %" PRIu32 ": raised to %" PRIu32
                  " so that every decode and one prefill token fit a step", s->o.step_tokens, s->o.max_jobs,
                  s->o.max_jobs);
        s->o.step_tokens = s->o.max_jobs;
    }
    {
        struct aarmd_kv_info kv;
        char kerr[256];
        if (aarmd_plugin_kv_info(e->plugin, e->model, &kv, kerr, sizeof kerr) == AARMD_OK && kv.block_tokens > 0 &&
            kv.blocks_total > 0) {
            s->paged = true;
            s->block_tokens = kv.block_tokens;
            s->blocks_total = kv.blocks_total;
            s->snap.kv_paged = true;
            s->snap.kv_block_tokens = kv.block_tokens;
            s->snap.kv_blocks_total = kv.blocks_total;
            s->snap.kv_blocks_free = kv.blocks_free;
            s->snap.kv_blocks_used = kv.blocks_total - (kv.blocks_free < kv.blocks_total ? kv.blocks_free : kv.blocks_total);
            uint64_t cap = s->o.prefix_cache_blocks == AARMD_SCHED_CACHE_AUTO ? kv.blocks_total / 4
                                                                               : s->o.prefix_cache_blocks;
            if (cap > 0 && aarmd_plugin_has_method(e->plugin, "seq_fork")) {
                s->pc = aarmd_prefix_cache_new(kv.block_tokens, cap, cache_seq_free, s);
                if (!s->pc) {
                    snprintf(err, errlen, "scheduler: out of memory");
                    free(s);
                    return NULL;
                }
            }
        }
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
    s->lg_all = calloc(s->o.max_jobs, sizeof *s->lg_all);
    s->lg_free = calloc(s->o.max_jobs, sizeof *s->lg_free);
    s->smp_jobs = calloc(s->o.max_jobs, sizeof *s->smp_jobs);
    if (!s->active || !s->entries || !s->entry_job || !s->cancel_snap || !s->paused_snap || !s->lg_all ||
        !s->lg_free || !s->smp_jobs) {
        snprintf(err, errlen, "scheduler: out of memory");
        goto fail;
    }
    uint32_t nt = s->o.sample_threads;
    if (nt == 0) {   /* auto */
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nt = cpus > 1 ? (uint32_t)(cpus / 2) : 1;
        nt = nt > 8 ? 8 : nt;
        nt = nt > s->o.max_jobs ? s->o.max_jobs : nt;
    }
    if (nt > 1) {
        char werr[128];
        s->workers = aarmd_workers_new(nt, werr, sizeof werr);
        if (!s->workers) {
            snprintf(err, errlen, "scheduler: sampling threads: %s", werr);
            goto fail;
        }
        /* a backend that computes on the host's cores needs them during its step: no spinning then */
        s->wake_early = strcmp(e->device.memory_architecture, "host") != 0;
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
        logits_put(s, j);
        aarmd_job_free(j, s->e->plugin);
    }
    aarmd_prefix_cache_free(s->pc);
    aarmd_workers_free(s->workers);
    for (uint32_t i = 0; i < s->n_lg_all; i++)
        aarmd_plugin_logits_free(s->e->plugin, s->e->model, s->lg_all[i].p, s->lg_all[i].by_backend);
    free(s->lg_all);
    free(s->lg_free);
    free(s->smp_jobs);
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
    *out = s->snap;
    out->running = s->n_running;
    out->queued = s->n_waiting;
    out->fatal = s->fatal;
    pthread_mutex_unlock(&s->lock);
}

void aarmd_sched_flush_prefix_cache(struct aarmd_sched *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->flush_req = true;
    pthread_cond_signal(&s->sched_cv);
    pthread_mutex_unlock(&s->lock);
}
