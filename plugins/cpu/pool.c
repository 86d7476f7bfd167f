/*
 * pool.c — the CPU backend's persistent thread pool: n-1 pthreads plus the
 * caller, woken per run by a generation counter (spin, then sleep on a condvar).
 * Two kinds of run: static (every thread runs its ith share) and chunked
 * (threads that show up claim chunks; stragglers are not waited for).
 * Chunked runs can be narrowed to the first n threads (cpu_pool_set_active;
 * 1 = no hand-off at all). Nothing is allocated per run. Not re-entrant: one run at a time per pool.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

/* Spin this many polls before sleeping: long enough to bridge the gap between
 * back-to-back matmuls of one forward pass, short enough not to burn a core
 * while the scheduler is idle. */
#define POOL_SPIN 20000

/* joined: bit 31 closes the chunked run; the low bits count workers that joined it. */
#define JOIN_CLOSED 0x80000000u

enum run_mode { RUN_STATIC, RUN_CHUNKS };

struct worker {
    struct cpu_pool *pool;
    int ith;
};

struct cpu_pool {
    int n_threads;
    int n_started;                /* workers successfully created */
    pthread_t *threads;
    struct worker *workers;

    pthread_mutex_t mu;
    pthread_cond_t cv_work;       /* generation changed or stop */
    pthread_cond_t cv_done;       /* a worker finished its part */

    /* the current run; written by the caller before the generation moves */
    void (*fn)(void *arg, int ith, int nth);
    void (*chunk_fn)(void *arg, int64_t chunk);
    void *arg;
    int64_t n_chunks;

    atomic_uint generation;       /* run counter << 1 | enum run_mode of that run */
    atomic_int pending;           /* static: workers still running */
    atomic_llong next_chunk;      /* chunked: next chunk to claim */
    atomic_uint joined;           /* chunked: JOIN_CLOSED | workers joined */
    atomic_uint finished;         /* chunked: joined workers done */
    atomic_int stop;
    atomic_int n_active;          /* threads that take part in chunked runs (cpu_pool_set_active) */
};

static void signal_done(struct cpu_pool *pool)
{
    pthread_mutex_lock(&pool->mu);
    pthread_cond_broadcast(&pool->cv_done);
    pthread_mutex_unlock(&pool->mu);
}

static void claim_chunks(struct cpu_pool *pool)
{
    int64_t c;
    while ((c = atomic_fetch_add_explicit(&pool->next_chunk, 1, memory_order_relaxed)) < pool->n_chunks)
        pool->chunk_fn(pool->arg, c);
}

/* A chunked run: join unless the caller already closed it. The run's fields are
 * read only after a successful join, whose acquire pairs with the caller's
 * release that opened the run, so a stale worker can only join the live run. */
static void worker_chunks(struct cpu_pool *pool, int ith)
{
    if (ith >= atomic_load_explicit(&pool->n_active, memory_order_relaxed))
        return;   /* benched by cpu_pool_set_active; the run does not count on this worker */
    unsigned j = atomic_load_explicit(&pool->joined, memory_order_acquire);
    do {
        if (j & JOIN_CLOSED)
            return;
    } while (!atomic_compare_exchange_weak_explicit(&pool->joined, &j, j + 1, memory_order_acq_rel,
                                                    memory_order_acquire));
    claim_chunks(pool);
    atomic_fetch_add_explicit(&pool->finished, 1, memory_order_acq_rel);
    signal_done(pool);
}

static void *worker_main(void *p)
{
    struct worker *w = p;
    struct cpu_pool *pool = w->pool;
    unsigned seen = 0;

    for (;;) {
        unsigned gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        for (int spin = 0; gen == seen && spin < POOL_SPIN; spin++) {
            if (atomic_load_explicit(&pool->stop, memory_order_relaxed))
                break;
            CPU_RELAX();
            gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        }
        if (gen == seen) {
            pthread_mutex_lock(&pool->mu);
            while ((gen = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
                   !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cv_work, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
        }
        if (atomic_load(&pool->stop))
            return NULL;
        seen = gen;   /* the mode travels in the same word, so it is the mode of this very run */
        if ((gen & 1u) == RUN_CHUNKS) {
            worker_chunks(pool, w->ith);
            continue;
        }
        /* static: the caller waits for every worker, so this run is still the live one */
        pool->fn(pool->arg, w->ith, pool->n_threads);
        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1)
            signal_done(pool);
    }
}

struct cpu_pool *cpu_pool_new(int n_threads)
{
    if (n_threads < 1 || n_threads > 1024)
        return NULL;
    struct cpu_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->n_threads = n_threads;
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->next_chunk, 0);
    atomic_init(&pool->joined, JOIN_CLOSED);
    atomic_init(&pool->finished, 0);
    atomic_init(&pool->stop, 0);
    atomic_init(&pool->n_active, n_threads);
    if (pthread_mutex_init(&pool->mu, NULL) != 0)
        goto fail_mu;
    if (pthread_cond_init(&pool->cv_work, NULL) != 0)
        goto fail_cv_work;
    if (pthread_cond_init(&pool->cv_done, NULL) != 0)
        goto fail_cv_done;
    if (n_threads > 1) {
        pool->threads = calloc((size_t)n_threads - 1, sizeof *pool->threads);
        pool->workers = calloc((size_t)n_threads - 1, sizeof *pool->workers);
        if (!pool->threads || !pool->workers)
            goto fail;
        for (int i = 0; i < n_threads - 1; i++) {
            pool->workers[i].pool = pool;
            pool->workers[i].ith = i + 1;
            if (pthread_create(&pool->threads[i], NULL, worker_main, &pool->workers[i]) != 0)
                goto fail;
            pool->n_started++;
        }
    }
    return pool;

fail:
    cpu_pool_free(pool);   /* stops the workers started so far */
    return NULL;
fail_cv_done:
    pthread_cond_destroy(&pool->cv_work);
fail_cv_work:
    pthread_mutex_destroy(&pool->mu);
fail_mu:
    free(pool);
    return NULL;
}

void cpu_pool_free(struct cpu_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->cv_work);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->n_started; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->cv_done);
    pthread_cond_destroy(&pool->cv_work);
    pthread_mutex_destroy(&pool->mu);
    free(pool->workers);
    free(pool->threads);
    free(pool);
}

int cpu_pool_threads(const struct cpu_pool *pool) { return pool ? pool->n_threads : 1; }

void cpu_pool_set_active(struct cpu_pool *pool, int n)
{
    if (!pool)
        return;
    n = n < 1 ? 1 : n > pool->n_threads ? pool->n_threads : n;
    atomic_store_explicit(&pool->n_active, n, memory_order_relaxed);
}

int cpu_pool_active(const struct cpu_pool *pool)
{
    return pool ? atomic_load_explicit(&((struct cpu_pool *)pool)->n_active, memory_order_relaxed) : 1;
}

/* The release makes the run's fields visible to a worker that sees the new
 * generation; taking the mutex before the broadcast means a worker about to
 * sleep cannot miss it. */
static void wake_workers(struct cpu_pool *pool, enum run_mode mode)
{
    unsigned g = atomic_load_explicit(&pool->generation, memory_order_relaxed);   /* only the caller writes it */
    atomic_store_explicit(&pool->generation, (g & ~1u) + 2u + (unsigned)mode, memory_order_release);
    pthread_mutex_lock(&pool->mu);
    pthread_cond_broadcast(&pool->cv_work);
    pthread_mutex_unlock(&pool->mu);
}

void cpu_pool_run(struct cpu_pool *pool, void (*fn)(void *arg, int ith, int nth), void *arg)
{
    if (!pool || pool->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    atomic_store_explicit(&pool->pending, pool->n_threads - 1, memory_order_relaxed);
    wake_workers(pool, RUN_STATIC);

    fn(arg, 0, pool->n_threads);

    for (int spin = 0; spin < POOL_SPIN; spin++) {
        if (atomic_load_explicit(&pool->pending, memory_order_acquire) == 0)
            return;
        CPU_RELAX();
    }
    pthread_mutex_lock(&pool->mu);
    while (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0)
        pthread_cond_wait(&pool->cv_done, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
}

void cpu_pool_run_chunks(struct cpu_pool *pool, void (*fn)(void *arg, int64_t chunk), void *arg, int64_t n_chunks)
{
    if (n_chunks <= 0)
        return;
    if (!pool || n_chunks == 1 || atomic_load_explicit(&pool->n_active, memory_order_relaxed) == 1) {
        for (int64_t c = 0; c < n_chunks; c++)
            fn(arg, c);
        return;
    }
    pool->chunk_fn = fn;
    pool->arg = arg;
    pool->n_chunks = n_chunks;
    atomic_store_explicit(&pool->next_chunk, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->finished, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->joined, 0, memory_order_release);   /* open */
    wake_workers(pool, RUN_CHUNKS);

    claim_chunks(pool);

    /* Close: workers that have not joined by now never will; wait for those that did. */
    unsigned j = atomic_fetch_or_explicit(&pool->joined, JOIN_CLOSED, memory_order_acq_rel) & ~JOIN_CLOSED;
    for (int spin = 0; spin < POOL_SPIN; spin++) {
        if (atomic_load_explicit(&pool->finished, memory_order_acquire) == j)
            return;
        CPU_RELAX();
    }
    pthread_mutex_lock(&pool->mu);
    while (atomic_load_explicit(&pool->finished, memory_order_acquire) != j)
        pthread_cond_wait(&pool->cv_done, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
}
