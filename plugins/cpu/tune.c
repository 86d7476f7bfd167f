/*
 * tune.c — the thread-count choice of tune.h: two arms (all threads, one
 * thread), a smoothed cost per arm and class, greedy with periodic probes.
 * It does not time anything or touch the pool (backend_cpu.c does both).
 */
#include "tune.h"

#include <math.h>
#include <string.h>

/* Weight of a new measurement in the smoothed cost: high enough that two or
 * three probes overturn a pick the machine's load has made wrong. */
#define TUNE_ALPHA 0.4

void cpu_tune_init(struct cpu_tune *t, int n_threads, int enabled)
{
    memset(t, 0, sizeof *t);
    t->n_threads = n_threads < 1 ? 1 : n_threads;
    t->enabled = enabled && t->n_threads > 1;
    t->last_class = -1;
}

int cpu_tune_pick(struct cpu_tune *t, uint32_t n_tok)
{
    t->last_class = -1;
    if (!t->enabled)
        return t->n_threads;
    int k = n_tok <= CPU_TUNE_DECODE_MAX_TOK ? 0 : 1;
    struct cpu_tune_class *c = &t->cls[k];
    uint32_t every = k == 0 ? CPU_TUNE_PROBE_DECODE : CPU_TUNE_PROBE_PREFILL;
    int choice;
    if (c->n[0] == 0)
        choice = 0;                                   /* try each arm once first */
    else if (c->n[1] == 0)
        choice = 1;
    else {
        choice = c->cost[1] < c->cost[0] ? 1 : 0;     /* the cheaper one ... */
        if (c->steps % every == every - 1)
            choice = !choice;                         /* ... except for a probe of the other */
    }
    c->steps++;
    t->last_class = k;
    t->last_choice = choice;
    return choice == 0 ? t->n_threads : 1;
}

void cpu_tune_done(struct cpu_tune *t, uint32_t n_tok, double seconds)
{
    if (t->last_class < 0 || n_tok == 0 || !(seconds > 0.0) || !isfinite(seconds))
        return;
    struct cpu_tune_class *c = &t->cls[t->last_class];
    int a = t->last_choice;
    double per_tok = seconds / (double)n_tok;
    c->cost[a] = c->n[a] == 0 ? per_tok : (1.0 - TUNE_ALPHA) * c->cost[a] + TUNE_ALPHA * per_tok;
    c->n[a]++;
    t->last_class = -1;
}
