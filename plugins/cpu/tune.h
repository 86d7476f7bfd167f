/*
 * tune.h — picks, forward pass by forward pass, how many of the pool's
 * threads the CPU backend uses: all of them, or only the calling thread.
 * On a shared machine (other processes on the cores, or scheduler groups
 * that cap this process's share) a second thread can cost more in hand-offs
 * and preemption than it computes: a 2-thread decode then runs at half the
 * 1-thread rate. Measured seconds per token decide, separately for decode
 * steps (few tokens) and prefill steps, with the other choice re-tried now
 * and then so the pick follows the machine's load. Pure bookkeeping: no
 * clock and no threads here (the caller times the pass). Internal to plugins/cpu.
 */
#ifndef AARMD_CPU_TUNE_H
#define AARMD_CPU_TUNE_H

#include <stdint.h>

/* Steps of at most this many tokens count as decode; larger ones as prefill. */
#define CPU_TUNE_DECODE_MAX_TOK 8
/* Every this many steps of a class, the choice not in favour is tried once. */
#define CPU_TUNE_PROBE_DECODE 32
#define CPU_TUNE_PROBE_PREFILL 4

struct cpu_tune_class {
    double cost[2];       /* smoothed seconds per token with choice 0 (all threads) and 1 (one thread) */
    uint32_t n[2];        /* measurements folded into cost[c] */
    uint32_t steps;       /* steps of this class so far */
};

struct cpu_tune {
    int n_threads;        /* the pool's size */
    int enabled;          /* 0: always all threads */
    int last_class, last_choice;
    struct cpu_tune_class cls[2];   /* [0] decode, [1] prefill */
};

/* n_threads >= 1; enabled 0 makes cpu_tune_pick always return n_threads. */
void cpu_tune_init(struct cpu_tune *t, int n_threads, int enabled);
/* Threads to use for a forward pass of n_tok tokens (1 or n_threads). */
int cpu_tune_pick(struct cpu_tune *t, uint32_t n_tok);
/* Reports that pass: it took `seconds` for n_tok tokens. Must follow the
 * cpu_tune_pick it belongs to; a non-positive or non-finite time is ignored. */
void cpu_tune_done(struct cpu_tune *t, uint32_t n_tok, double seconds);

#endif
