/*
 * workers.c — the parallel loop of workers.h: threads sleep on a condition
 * variable until run publishes a new round, then take indices from one
 * atomic counter; run waits until every helper has finished the round, so
 * the round's fn, ctx and n never change under a helper that still reads them.
 */
#include "config.h"
#include "workers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

struct aarmd_workers {
    uint32_t n_threads;         /* the caller included */
    pthread_t *threads;         /* n_threads - 1 */
    uint32_t n_started;
    pthread_mutex_t lock;
    pthread_cond_t wake, idle;
    uint64_t round;             /* under lock: bumped by each run */
    bool quit;                  /* under lock */
    uint32_t busy;              /* under lock: helper threads not yet done with the current round */
    /* the current round: set under lock before round is bumped */
    aarmd_work_fn fn;
    void *ctx;
    uint32_t n;
    atomic_uint next;
};

/* Claims and runs indices of the current round until none is left. */
static void drain(struct aarmd_workers *w)
{
    for (;;) {
        uint32_t i = atomic_fetch_add_explicit(&w->next, 1, memory_order_relaxed);
        if (i >= w->n)
            return;
        w->fn(w->ctx, i);
    }
}

static void *worker_main(void *arg)
{
    struct aarmd_workers *w = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->quit && w->round == seen)
            pthread_cond_wait(&w->wake, &w->lock);
        if (w->quit)
            break;
        seen = w->round;
        pthread_mutex_unlock(&w->lock);
        drain(w);
        pthread_mutex_lock(&w->lock);
        if (--w->busy == 0)
            pthread_cond_signal(&w->idle);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

struct aarmd_workers *aarmd_workers_new(uint32_t n_threads, char *err, size_t errlen)
{
    if (n_threads < 1 || n_threads > 256) {
        snprintf(err, errlen, "workers: %u threads (1..256)", (unsigned)n_threads);
        return NULL;
    }
    struct aarmd_workers *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "workers: out of memory");
        return NULL;
    }
    w->n_threads = n_threads;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    pthread_cond_init(&w->idle, NULL);
    atomic_init(&w->next, 0);
    if (n_threads > 1) {
        w->threads = calloc(n_threads - 1, sizeof *w->threads);
        if (!w->threads) {
            snprintf(err, errlen, "workers: out of memory");
            goto fail;
        }
        for (uint32_t i = 0; i + 1 < n_threads; i++) {
            if (pthread_create(&w->threads[i], NULL, worker_main, w) != 0) {
                snprintf(err, errlen, "workers: cannot start thread %u of %u", (unsigned)i + 2, (unsigned)n_threads);
                goto fail;
            }
            w->n_started++;
        }
    }
    return w;
fail:
    aarmd_workers_free(w);
    return NULL;
}

void aarmd_workers_free(struct aarmd_workers *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->quit = true;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    for (uint32_t i = 0; i < w->n_started; i++)
        pthread_join(w->threads[i], NULL);
    free(w->threads);
    pthread_cond_destroy(&w->wake);
    pthread_cond_destroy(&w->idle);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

uint32_t aarmd_workers_count(const struct aarmd_workers *w)
{
    return w ? w->n_threads : 1;
}

void aarmd_workers_run(struct aarmd_workers *w, uint32_t n, aarmd_work_fn fn, void *ctx)
{
    if (n == 0)
        return;
    if (!w || w->n_started == 0 || n == 1) {
        for (uint32_t i = 0; i < n; i++)
            fn(ctx, i);
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->fn = fn;
    w->ctx = ctx;
    w->n = n;
    atomic_store_explicit(&w->next, 0, memory_order_relaxed);
    w->busy = w->n_started;
    w->round++;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    drain(w);
    pthread_mutex_lock(&w->lock);   /* every helper checks out of the round, late wakers too */
    while (w->busy > 0)
        pthread_cond_wait(&w->idle, &w->lock);
    pthread_mutex_unlock(&w->lock);
}
