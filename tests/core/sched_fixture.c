/* sched_fixture.c — the scheduler tests' engine and event recorder
 * (sched_fixture.h); the checks themselves live in the test programs. */
#define _GNU_SOURCE
#include "sched_fixture.h"

#include <criterion/criterion.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "tokenizer.h"

static atomic_int order_clock;   /* orders first tokens and ends across jobs */

double sched_fx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void sched_fx_sleep_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - 1000 * (long)(ms / 1000)) * 1e6)};
    nanosleep(&ts, NULL);
}

void sched_rec_init(struct sched_rec *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cv, NULL);
}

void sched_rec_cb(void *user, const struct aarmd_job_event *ev)
{
    struct sched_rec *r = user;
    pthread_mutex_lock(&r->lock);
    if (r->n_events == 0)
        r->first = ev->kind;
    else if (r->n_terminal || ev->kind == AARMD_EV_STARTED)
        r->bad_order = true;
    if (r->n_events == 0 && ev->kind != AARMD_EV_STARTED && ev->kind != AARMD_EV_ERROR)
        r->bad_order = true;
    r->n_events++;
    r->last = ev->kind;
    switch (ev->kind) {
    case AARMD_EV_STARTED:
        r->n_started++;
        r->tokens_in = ev->u.started.tokens_in;
        r->seed = ev->u.started.seed;
        break;
    case AARMD_EV_TOKEN:
        if (r->n_tokens == 0)
            r->first_token_at = atomic_fetch_add(&order_clock, 1) + 1;
        if (r->n_tokens < SCHED_REC_MAX_TOK) {
            r->ids[r->n_tokens] = ev->u.token.id;
            r->idx[r->n_tokens] = ev->u.token.index;
        }
        r->n_tokens++;
        if (ev->u.token.sample) {
            r->had_sample = true;
            r->n_top = ev->u.token.sample->n_top;
        }
        if (r->text_len + ev->u.token.len <= sizeof r->text) {
            memcpy(r->text + r->text_len, ev->u.token.text, ev->u.token.len);
            r->text_len += ev->u.token.len;
        }
        break;
    case AARMD_EV_METRICS:
        if (r->n_metrics < 64)
            r->metrics_t[r->n_metrics] = sched_fx_now_ms();
        r->n_metrics++;
        break;
    case AARMD_EV_END:
        r->n_terminal++;
        r->end_at = atomic_fetch_add(&order_clock, 1) + 1;
        r->tokens_out = ev->u.end.tokens_out;
        snprintf(r->stop_reason, sizeof r->stop_reason, "%s", ev->u.end.stop_reason);
        r->has_matched = ev->u.end.stop_sequence_matched != NULL;
        if (r->has_matched)
            snprintf(r->matched, sizeof r->matched, "%s", ev->u.end.stop_sequence_matched);
        r->t_done = sched_fx_now_ms();
        break;
    case AARMD_EV_ERROR:
        r->n_terminal++;
        r->end_at = atomic_fetch_add(&order_clock, 1) + 1;
        snprintf(r->code, sizeof r->code, "%s", ev->u.error.code);
        snprintf(r->message, sizeof r->message, "%s", ev->u.error.message);
        r->retriable = ev->u.error.retriable;
        r->http_status = ev->u.error.http_status;
        r->t_done = sched_fx_now_ms();
        break;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->lock);
}

int sched_rec_get(struct sched_rec *r, int *tokens)
{
    pthread_mutex_lock(&r->lock);
    int t = r->n_terminal;
    if (tokens)
        *tokens = r->n_tokens;
    pthread_mutex_unlock(&r->lock);
    return t;
}

bool sched_rec_wait(struct sched_rec *r, int timeout_ms)
{
    double deadline = sched_fx_now_ms() + timeout_ms;
    pthread_mutex_lock(&r->lock);
    while (!r->n_terminal && sched_fx_now_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 5 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->cv, &r->lock, &ts);
    }
    bool ok = r->n_terminal > 0;
    pthread_mutex_unlock(&r->lock);
    return ok;
}

bool sched_rec_wait_tokens(struct sched_rec *r, int n, int timeout_ms)
{
    double deadline = sched_fx_now_ms() + timeout_ms;
    for (;;) {
        int tokens = 0, term = sched_rec_get(r, &tokens);
        if (tokens >= n)
            return true;
        if (term || sched_fx_now_ms() > deadline)
            return false;
        sched_fx_sleep_ms(1);
    }
}

struct aarmd_engine *sched_fx_engine_new(const char *knobs)
{
    aarmd_log_setup(AARMD_LOG_TEXT, "test", AARMD_LOG_ERROR);
    static char vocab[PATH_MAX];
    const char *d = getenv("AARMD_TEST_DATA");
    cr_assert_not_null(d, "AARMD_TEST_DATA is not set");
    snprintf(vocab, sizeof vocab, "%s/vocab/ggml-vocab-gpt-2.gguf", d);
    /* the engine keeps pointers into opts: static, one engine at a time */
    static struct aarmd_opt opts[8];
    static char buf[256];
    uint32_t n = 0;
    snprintf(buf, sizeof buf, "%s", knobs ? knobs : "");
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        cr_assert_not_null(eq, "knob '%s' is not k=v", kv);
        cr_assert_lt(n, 8, "more than 8 knobs");
        *eq = '\0';
        opts[n].key = kv;
        opts[n].value = eq + 1;
        n++;
    }
    struct aarmd_engine_opts eo = {.backend = "mock", .model_path = vocab, .opts = opts, .n_opts = n};
    struct aarmd_engine *e = NULL;
    char err[1024] = "";
    cr_assert_eq(aarmd_engine_new(&eo, &e, err, sizeof err), AARMD_OK, "engine: %s", err);
    return e;
}

struct aarmd_sched *sched_fx_sched_new(struct aarmd_engine *e, const struct aarmd_sched_opts *so)
{
    char err[512] = "";
    struct aarmd_sched *s = aarmd_sched_new(e, so, err, sizeof err);
    cr_assert_not_null(s, "sched: %s", err);
    return s;
}

void sched_fx_submit(struct aarmd_sched *s, const struct aarmd_job_request *r, struct sched_rec *rec)
{
    enum aarmd_submit_result res = aarmd_sched_submit(s, r, sched_rec_cb, rec);
    cr_assert_eq(res, AARMD_SUBMIT_OK, "submit %s: %d", r->job_id, (int)res);
}

size_t sched_fx_prompt_tokens(struct aarmd_engine *e, const char *prompt)
{
    int32_t *ids = NULL;
    size_t n = 0;
    char err[256];
    cr_assert_eq(aarmd_tokenizer_encode(e->tok, prompt, strlen(prompt), true, true, &ids, &n, err, sizeof err),
                 AARMD_OK, "%s", err);
    free(ids);
    return n;
}
