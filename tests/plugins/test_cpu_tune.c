/*
 * test_cpu_tune.c — plugins/cpu/tune.c: the per-pass choice between all the
 * pool's threads and one, fed with made-up timings (no clock, no threads).
 */
#include <criterion/criterion.h>
#include <math.h>

#include "tune.h"

/* Runs `steps` passes of n_tok tokens where all threads cost c_all s/token and
 * one thread c_one; returns how many passes used one thread. */
static int drive(struct cpu_tune *t, int steps, uint32_t n_tok, double c_all, double c_one)
{
    int ones = 0;
    for (int i = 0; i < steps; i++) {
        int n = cpu_tune_pick(t, n_tok);
        cr_assert(n == 1 || n == t->n_threads, "pick %d of %d threads", n, t->n_threads);
        ones += n == 1;
        cpu_tune_done(t, n_tok, (n == 1 ? c_one : c_all) * n_tok);
    }
    return ones;
}

Test(cpu_tune, prefers_all_threads_when_they_are_faster)
{
    struct cpu_tune t;
    cpu_tune_init(&t, 4, 1);
    int ones = drive(&t, 160, 1, 1e-3, 3e-3);
    /* one initial try plus one probe every CPU_TUNE_PROBE_DECODE steps */
    cr_assert_leq(ones, 1 + 160 / CPU_TUNE_PROBE_DECODE, "one thread used %d times", ones);
    cr_assert_geq(ones, 160 / CPU_TUNE_PROBE_DECODE - 1, "the other choice is still probed (%d)", ones);
}

Test(cpu_tune, prefers_one_thread_when_the_machine_is_busy)
{
    struct cpu_tune t;
    cpu_tune_init(&t, 2, 1);
    int ones = drive(&t, 160, 1, 2e-3, 1e-3);
    cr_assert_geq(ones, 160 - 1 - 160 / CPU_TUNE_PROBE_DECODE, "one thread used only %d times", ones);
}

Test(cpu_tune, follows_a_change_of_load)
{
    struct cpu_tune t;
    cpu_tune_init(&t, 2, 1);
    drive(&t, 64, 1, 1e-3, 2e-3);                 /* idle machine: all threads */
    drive(&t, 128, 1, 4e-3, 2e-3);                /* then busy: one thread wins after a few probes */
    int ones = drive(&t, 64, 1, 4e-3, 2e-3);
    cr_assert_geq(ones, 64 - 1 - 64 / CPU_TUNE_PROBE_DECODE, "after the change one thread used %d of 64", ones);
    drive(&t, 128, 1, 1e-3, 2e-3);                /* idle again */
    ones = drive(&t, 64, 1, 1e-3, 2e-3);
    cr_assert_leq(ones, 1 + 64 / CPU_TUNE_PROBE_DECODE, "back to all threads: one thread %d of 64", ones);
}

Test(cpu_tune, decode_and_prefill_are_judged_apart)
{
    struct cpu_tune t;
    cpu_tune_init(&t, 2, 1);
    /* prefill scales with threads, decode does not: each class settles on its own */
    for (int i = 0; i < 64; i++) {
        drive(&t, 1, 1, 2e-3, 1e-3);
        drive(&t, 1, 128, 0.5e-3, 1e-3);
    }
    cr_assert_eq(cpu_tune_pick(&t, 1) == 1 || t.cls[0].steps % CPU_TUNE_PROBE_DECODE == 0, 1);
    cr_assert_lt(t.cls[0].cost[1], t.cls[0].cost[0]);
    cr_assert_lt(t.cls[1].cost[0], t.cls[1].cost[1]);
    cr_assert_float_eq(t.cls[1].cost[0], 0.5e-3, 1e-9);
}

Test(cpu_tune, disabled_or_single_thread_always_uses_the_pool_size)
{
    struct cpu_tune t;
    cpu_tune_init(&t, 4, 0);
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(cpu_tune_pick(&t, (uint32_t)(1 + i)), 4);
        cpu_tune_done(&t, 1, 1.0);
    }
    cpu_tune_init(&t, 1, 1);
    cr_assert_eq(cpu_tune_pick(&t, 1), 1);
    cpu_tune_init(&t, 0, 1);   /* nonsense size: treated as 1 */
    cr_assert_eq(t.n_threads, 1);
    cr_assert_eq(cpu_tune_pick(&t, 1), 1);
}

Test(cpu_tune, ignores_bad_timings_and_unpaired_reports)
{
    struct cpu_tune t;
    cpu_tune_init(&t, 2, 1);
    cpu_tune_done(&t, 1, 1.0);                    /* no pick before it */
    cr_assert_eq(t.cls[0].n[0] + t.cls[0].n[1], 0);
    cpu_tune_pick(&t, 1);
    cpu_tune_done(&t, 1, NAN);
    cpu_tune_done(&t, 1, -1.0);
    cr_assert_eq(t.cls[0].n[0] + t.cls[0].n[1], 0);
    cpu_tune_pick(&t, 1);
    cpu_tune_done(&t, 0, 1.0);                    /* zero tokens */
    cr_assert_eq(t.cls[0].n[0] + t.cls[0].n[1], 0);
    cpu_tune_pick(&t, 1);
    cpu_tune_done(&t, 1, 1e-3);
    cpu_tune_done(&t, 1, 5.0);                    /* a second report for one pick is dropped */
    cr_assert_eq(t.cls[0].n[0], 1);
    cr_assert_float_eq(t.cls[0].cost[0], 1e-3, 1e-12);
}
