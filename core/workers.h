/*
 * workers.h — a fixed set of threads that runs one parallel loop at a time:
 * fn(ctx, i) for every i in [0, n), the calling thread taking part. The
 * scheduler samples the jobs of a step with it. Not a general task queue:
 * one caller at a time, and run returns only when every index is done.
 */
#ifndef AARMD_WORKERS_H
#define AARMD_WORKERS_H

#include <stddef.h>
#include <stdint.h>

struct aarmd_workers;

typedef void (*aarmd_work_fn)(void *ctx, uint32_t i);

/* n_threads threads in all, the caller included (1: run executes inline, no
 * thread is started). NULL with err set when a thread cannot start. */
struct aarmd_workers *aarmd_workers_new(uint32_t n_threads, char *err, size_t errlen);
void aarmd_workers_free(struct aarmd_workers *w);   /* joins the threads; accepts NULL */

/* Threads of w, the caller included (1 for NULL). */
uint32_t aarmd_workers_count(const struct aarmd_workers *w);

/* Calls fn(ctx, i) once for each i < n, spread over the threads, and returns
 * when all calls have returned (it waits for calls, not for threads: a thread
 * still waking up takes none). Each i runs on exactly one thread; the order
 * is unspecified. w NULL: runs inline. Not reentrant. */
void aarmd_workers_run(struct aarmd_workers *w, uint32_t n, aarmd_work_fn fn, void *ctx);

/* A run is coming soon (e.g. once the step whose results it takes returns):
 * wakes the sleeping threads now, and each waits for it spinning (yielding
 * the CPU now and then) for up to 20 ms before it sleeps again. Costs that
 * CPU time; saves the run a thread wake-up. w NULL or one thread: nothing. */
void aarmd_workers_prepare(struct aarmd_workers *w);

#endif /* AARMD_WORKERS_H */
