/*
 * workers.c — the parallel loop of workers.h. A round is published in one
 * atomic ticket (round number << 32 | next index) and threads claim indices
 * from it by compare-and-swap, so run waits for the items, never for a thread:
 * a helper that wakes after the round is over finds nothing to claim. Helpers
 * sleep on a condition variable; prepare (and run) wake them, and a woken
 * helper spins for the next round for at most SPIN_MS, so the wake-up of a
 * sleeping thread is paid during the caller's step, not after it.
 */
#include "config.h"
#include "workers.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* How long a woken helper waits, spinning, for a round to claim from. */
#define SPIN_MS 20.0
/* Spins with a pause instruction before each wait also yields the CPU. */
#define SPIN_PAUSES 256u

struct round_args {
    aarmd_work_fn fn;
    void *ctx;
    atomic_uint n;
};

struct aarmd_workers {
    uint32_t n_threads;         /* the caller included */
    pthread_t *threads;         /* n_threads - 1 */
    uint32_t n_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    uint64_t wake_gen;          /* under lock: bumped by prepare, and by run while a helper sleeps */
    uint32_t sleeping;          /* under lock: helpers waiting on wake */
    bool quit;                  /* under lock */
    atomic_bool stop;           /* quit, for spinning helpers */
    /* round r's arguments live in args[r & 1], written before the ticket names r; fn and ctx are read
     * only by a thread that claimed an index of r, and r cannot end (nor r + 2 begin) before it is done */
    struct round_args args[2];
    _Atomic uint64_t ticket;    /* round << 32 | next unclaimed index */
    atomic_uint done;           /* items of the current round that have returned */
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Claims one index of the current round and runs it; false when none is left. A stale
 * ticket read makes the compare-and-swap fail, so a claim is always of the current round. */
static bool run_one(struct aarmd_workers *w)
{
    uint64_t t = atomic_load_explicit(&w->ticket, memory_order_acquire);
    for (;;) {
        struct round_args *a = &w->args[(t >> 32) & 1];
        uint32_t i = (uint32_t)t;
        if (i >= atomic_load_explicit(&a->n, memory_order_relaxed))
            return false;
        if (atomic_compare_exchange_weak_explicit(&w->ticket, &t, t + 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            a->fn(a->ctx, i);
            atomic_fetch_add_explicit(&w->done, 1, memory_order_release);
            return true;
        }
    }
}

/* 1 when the current round has an index left to claim. */
static bool round_open(struct aarmd_workers *w)
{
    uint64_t t = atomic_load_explicit(&w->ticket, memory_order_acquire);
    return (uint32_t)t < atomic_load_explicit(&w->args[(t >> 32) & 1].n, memory_order_relaxed);
}

/* A woken helper: waits (spinning, yielding now and then) up to SPIN_MS for a
 * round, then takes its items until none is left. */
static void spin(struct aarmd_workers *w)
{
    double limit = now_ms() + SPIN_MS;
    bool worked = false;
    for (uint32_t k = 1; !atomic_load_explicit(&w->stop, memory_order_relaxed); k++) {
        if (run_one(w)) {
            worked = true;
            continue;
        }
        if (worked)
            return;
        if (k % SPIN_PAUSES == 0) {
            if (now_ms() > limit)
                return;
            sched_yield();
        } else {
            cpu_relax();
        }
    }
}

static void *worker_main(void *arg)
{
    struct aarmd_workers *w = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        w->sleeping++;
        while (!w->quit && w->wake_gen == seen && !round_open(w))   /* a round published before it slept */
            pthread_cond_wait(&w->wake, &w->lock);
        w->sleeping--;
        if (w->quit)
            break;
        seen = w->wake_gen;
        pthread_mutex_unlock(&w->lock);
        spin(w);
        pthread_mutex_lock(&w->lock);
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
    atomic_init(&w->stop, false);
    atomic_init(&w->args[0].n, 0);
    atomic_init(&w->args[1].n, 0);
    atomic_init(&w->ticket, 0);   /* round 0: no items */
    atomic_init(&w->done, 0);
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
    atomic_store(&w->stop, true);
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    for (uint32_t i = 0; i < w->n_started; i++)
        pthread_join(w->threads[i], NULL);
    free(w->threads);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

uint32_t aarmd_workers_count(const struct aarmd_workers *w)
{
    return w ? w->n_threads : 1;
}

void aarmd_workers_prepare(struct aarmd_workers *w)
{
    if (!w || w->n_started == 0)
        return;
    pthread_mutex_lock(&w->lock);
    w->wake_gen++;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
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
    /* no thread can claim from the last round (it is drained), so its successor's slot is free */
    uint64_t r = (atomic_load_explicit(&w->ticket, memory_order_relaxed) >> 32) + 1;
    struct round_args *a = &w->args[r & 1];
    a->fn = fn;
    a->ctx = ctx;
    atomic_store_explicit(&a->n, n, memory_order_relaxed);
    atomic_store_explicit(&w->done, 0, memory_order_relaxed);
    atomic_store_explicit(&w->ticket, (r & 0xffffffffu) << 32, memory_order_release);
    pthread_mutex_lock(&w->lock);   /* wakes the helpers that sleep; spinning ones see the ticket */
    if (w->sleeping) {
        w->wake_gen++;
        pthread_cond_broadcast(&w->wake);
    }
    pthread_mutex_unlock(&w->lock);
    while (run_one(w))
        ;
    for (uint32_t k = 1; atomic_load_explicit(&w->done, memory_order_acquire) < n; k++) {   /* items elsewhere */
        if (k % SPIN_PAUSES == 0)
            sched_yield();   /* a helper running one may need this core */
        else
            cpu_relax();
    }
}
