/* sched_fixture.h — what the scheduler tests share (test_scheduler,
 * test_scheduler_paged): an engine over the mock backend and the gpt-2
 * vocabulary, and a recorder of one job's events. Test code: helpers fail
 * the current Criterion test where they say so instead of returning errors. */
#ifndef AARMD_TESTS_SCHED_FIXTURE_H
#define AARMD_TESTS_SCHED_FIXTURE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "scheduler.h"

#define SCHED_REC_MAX_TOK 2048

/* One job's events as the scheduler delivered them (sched_rec_cb). The
 * callback runs on the scheduler's thread: read the counters under `lock`, or
 * after sched_rec_wait has seen the terminal event. */
struct sched_rec {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int n_events, n_started, n_tokens, n_metrics, n_terminal;
    bool bad_order;                 /* an event broke started → token* → terminal (or a lone error) */
    enum aarmd_job_event_kind first, last;
    char text[65536];               /* the streamed text, as far as it fits */
    size_t text_len;
    int32_t ids[SCHED_REC_MAX_TOK];
    uint32_t idx[SCHED_REC_MAX_TOK];
    bool had_sample;
    uint32_t n_top;
    uint32_t tokens_in, tokens_out;
    uint64_t seed;
    char code[64], message[512], stop_reason[32], matched[128];
    bool retriable, has_matched;
    int http_status;
    double t_done, metrics_t[64];   /* sched_fx_now_ms() of the terminal event and of each metrics event */
    int first_token_at, end_at;     /* a clock shared by all recorders (first token, terminal); 0 = not yet */
};

/* Clears r; call before submitting the job it records. */
void sched_rec_init(struct sched_rec *r);

/* The job event callback; user is the struct sched_rec. */
void sched_rec_cb(void *user, const struct aarmd_job_event *ev);

/* The number of terminal events so far, and the tokens when `tokens` is not NULL. */
int sched_rec_get(struct sched_rec *r, int *tokens);

/* Waits for the terminal event; false after timeout_ms without one. */
bool sched_rec_wait(struct sched_rec *r, int timeout_ms);

/* Waits until at least n tokens streamed; false on timeout or an end before them. */
bool sched_rec_wait_tokens(struct sched_rec *r, int n, int timeout_ms);

double sched_fx_now_ms(void);       /* CLOCK_MONOTONIC, ms */
void sched_fx_sleep_ms(double ms);

/* An engine with the mock backend over tests/data/vocab/ggml-vocab-gpt-2.gguf
 * (from AARMD_TEST_DATA) and the mock knobs "k=v,k=v" (NULL: none); logging
 * set to errors only. Fails the test if the engine cannot be made. The caller
 * frees it with aarmd_engine_free. */
struct aarmd_engine *sched_fx_engine_new(const char *knobs);

/* aarmd_sched_new over e; fails the test if it returns NULL. */
struct aarmd_sched *sched_fx_sched_new(struct aarmd_engine *e, const struct aarmd_sched_opts *so);

/* Submits r with rec (sched_rec_init'ed by the caller) as its recorder;
 * fails the test unless the scheduler accepts it. */
void sched_fx_submit(struct aarmd_sched *s, const struct aarmd_job_request *r, struct sched_rec *rec);

/* The prompt's tokens as the intake counts them (special tokens parsed, BOS added). */
size_t sched_fx_prompt_tokens(struct aarmd_engine *e, const char *prompt);

#endif
