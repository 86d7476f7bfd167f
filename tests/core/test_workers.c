/* test_workers.c — core/workers.c: every index once, on several threads, many rounds, inline modes,
 * prepared rounds and rounds whose helpers are asleep or still spinning. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "workers.h"

#define N_MAX 4096

struct tally {
    atomic_uint hits[N_MAX];
    pthread_t who[N_MAX];
    uint64_t round;
    atomic_ullong sum;
};

static void count(void *ctx, uint32_t i)
{
    struct tally *t = ctx;
    atomic_fetch_add(&t->hits[i], 1);
    atomic_fetch_add(&t->sum, t->round * N_MAX + i);
    t->who[i] = pthread_self();
}

static void check_round(struct aarmd_workers *w, struct tally *t, uint32_t n)
{
    for (uint32_t i = 0; i < N_MAX; i++)
        atomic_store(&t->hits[i], 0);
    atomic_store(&t->sum, 0);
    aarmd_workers_run(w, n, count, t);
    uint64_t want = 0;
    for (uint32_t i = 0; i < N_MAX; i++) {
        cr_assert_eq(atomic_load(&t->hits[i]), i < n ? 1u : 0u, "round %llu n %u: index %u ran %u times",
                     (unsigned long long)t->round, n, i, atomic_load(&t->hits[i]));
        if (i < n)
            want += t->round * N_MAX + i;
    }
    cr_assert_eq(atomic_load(&t->sum), want);
}

Test(workers, every_index_once_over_many_rounds)
{
    char err[128];
    struct aarmd_workers *w = aarmd_workers_new(4, err, sizeof err);
    cr_assert_not_null(w, "%s", err);
    cr_assert_eq(aarmd_workers_count(w), 4);
    static struct tally t;
    const uint32_t sizes[] = {0, 1, 2, 3, 4, 5, 7, 64, 1000, N_MAX};
    for (t.round = 0; t.round < 2000; t.round++)
        check_round(w, &t, sizes[t.round % (sizeof sizes / sizeof sizes[0])]);
    aarmd_workers_free(w);
}

/* slow items so that helpers must take some: more than one thread shows up */
static void slow(void *ctx, uint32_t i)
{
    pthread_t *who = ctx;
    usleep(2000);
    who[i] = pthread_self();
}

/* 48 slow items on 3 threads (prepared: the helpers woken 2 ms ahead): every item
 * ran, and some on a helper */
static void slow_round_is_shared(bool prepared)
{
    char err[128];
    struct aarmd_workers *w = aarmd_workers_new(3, err, sizeof err);
    cr_assert_not_null(w, "%s", err);
    pthread_t who[48];
    memset(who, 0, sizeof who);
    if (prepared) {
        aarmd_workers_prepare(w);
        usleep(2000);
    }
    aarmd_workers_run(w, 48, slow, who);
    int others = 0;
    for (int i = 0; i < 48; i++) {
        cr_assert(!pthread_equal(who[i], (pthread_t)0), "index %d did not run", i);
        others += !pthread_equal(who[i], pthread_self());
    }
    cr_assert_gt(others, 0, "every item ran on the calling thread");
    aarmd_workers_free(w);
}

Test(workers, helpers_take_part)
{
    slow_round_is_shared(false);
}

Test(workers, one_thread_and_null_run_inline)
{
    char err[128];
    static struct tally t;
    struct aarmd_workers *w = aarmd_workers_new(1, err, sizeof err);
    cr_assert_not_null(w, "%s", err);
    check_round(w, &t, 100);
    for (uint32_t i = 0; i < 100; i++)
        cr_assert(pthread_equal(t.who[i], pthread_self()));
    aarmd_workers_free(w);
    check_round(NULL, &t, 50);
    cr_assert_eq(aarmd_workers_count(NULL), 1);
    aarmd_workers_free(NULL);
}

Test(workers, bad_thread_counts_are_refused)
{
    char err[128] = "";
    cr_assert_null(aarmd_workers_new(0, err, sizeof err));
    cr_assert(strstr(err, "0 threads (1..256)"), "%s", err);
    cr_assert_null(aarmd_workers_new(257, err, sizeof err));
    cr_assert(strstr(err, "257 threads"), "%s", err);
}

Test(workers, free_without_a_round)
{
    char err[128];
    struct aarmd_workers *w = aarmd_workers_new(8, err, sizeof err);
    cr_assert_not_null(w, "%s", err);
    aarmd_workers_free(w);
}

/* prepare before some rounds and not others, with pauses longer and shorter than a
 * helper's spin: helpers asleep, woken early or still spinning all leave every index once */
Test(workers, prepared_and_unprepared_rounds)
{
    char err[128];
    struct aarmd_workers *w = aarmd_workers_new(4, err, sizeof err);
    cr_assert_not_null(w, "%s", err);
    static struct tally t;
    for (t.round = 0; t.round < 60; t.round++) {
        if (t.round % 3 != 2)
            aarmd_workers_prepare(w);
        if (t.round % 10 == 9)
            usleep(25000);   /* past the spin: helpers back asleep */
        else if (t.round % 2)
            usleep(300);
        check_round(w, &t, (uint32_t)(t.round * 37 % 200));
    }
    aarmd_workers_prepare(w);   /* a prepare with no run after it: free still joins */
    aarmd_workers_free(w);
    aarmd_workers_prepare(NULL);
    struct aarmd_workers *one = aarmd_workers_new(1, err, sizeof err);
    aarmd_workers_prepare(one);   /* no helper: nothing to wake */
    check_round(one, &t, 10);
    aarmd_workers_free(one);
}

/* run waits for the calls, not for the threads; a prepared round of slow items is
 * shared with the helpers (they were awake when it came) */
Test(workers, prepared_round_is_shared)
{
    slow_round_is_shared(true);
}
