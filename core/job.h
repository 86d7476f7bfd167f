/*
 * job.h — one job inside the scheduler: the copied request, its backend
 * sequence and sampler, and the text pipeline that turns sampled tokens into
 * token events (incremental detokenizer, stop strings, held text).
 * Internal to core/scheduler.c. Not thread-safe: the scheduler hands a job
 * from thread to thread under its lock, and one thread at a time uses it.
 */
#ifndef AARMD_JOB_H
#define AARMD_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sampler.h"
#include "scheduler.h"
#include "stop.h"
#include "tokenizer.h"

struct aarmd_plugin;
struct aarmd_prefix_ref;

#define AARMD_JOB_TEXT_CAP 1024      /* a deferred event's text: < 2 pieces + a held stop prefix */

enum aarmd_job_state {
    AARMD_JOB_INTAKE,      /* submitted, waiting for the intake thread */
    AARMD_JOB_TOKENIZING,  /* owned by the intake thread */
    AARMD_JOB_QUEUED,      /* STARTED sent, waiting for a slot */
    AARMD_JOB_RUNNING,     /* owned by the scheduler thread */
};

struct aarmd_job {
    struct aarmd_job *next;           /* the scheduler's live list, arrival order */
    /* under the scheduler's lock */
    enum aarmd_job_state state;
    bool cancel, paused;

    /* the request (immutable after aarmd_job_new) */
    char *id, *corr, *prompt;
    size_t prompt_len;
    uint32_t max_tokens;
    struct aarmd_sampler_params sp;
    struct aarmd_stop stop;           /* the stop strings and the text they hold back */
    char stop_err[200];               /* non-empty: the stop list is invalid (rejected at intake) */
    aarmd_job_event_fn cb;
    void *user;

    /* the prompt's ids, set by the intake thread */
    int32_t *ids;
    size_t n_ids;

    /* while running (scheduler thread) */
    struct aarmd_backend_seq *seq;
    struct aarmd_sampler *smp;
    float *logits;                    /* n_vocab floats from the scheduler's pool (it frees them) */
    struct aarmd_sample sample;       /* drawn from logits after a step, before it is streamed */
    int sample_rc;
    size_t n_fed;                     /* prompt tokens sent to the backend */
    uint32_t seq_len;                 /* tokens in the sequence */
    int32_t next_tok;                 /* sampled, fed by the next step */
    uint32_t n_out;                   /* tokens sampled and sent (EOS excluded) */
    double t_admit, t_first, t_last, t_metrics;   /* monotonic ms; t_first 0 before the first token */
    bool done;                        /* terminal event sent */

    /* paged KV (scheduler thread) */
    uint32_t reserve_blocks;          /* blocks reserved at admission, shared ones excluded */
    uint32_t shared_blocks;           /* leading blocks forked from the prefix cache */
    struct aarmd_prefix_ref *pref;    /* the cache's blocks of this sequence; released at the end */
    size_t ids_cap;                   /* > n_ids: ids also holds the fed tokens (history for the cache) */

    /* text pipeline (aarmd_job_push_token) */
    struct aarmd_detok detok;
    bool has_deferred;                /* a token event waits for the next token */
    char dtext[AARMD_JOB_TEXT_CAP];
    size_t n_dtext;
    uint32_t d_index;
    int32_t d_id;
    struct aarmd_sample d_sample;
};

/* Copies the request (strings included). NULL when out of memory. Invalid
 * fields are kept for the intake thread to reject (see aarmd_job_check). */
struct aarmd_job *aarmd_job_new(const struct aarmd_job_request *r, aarmd_job_event_fn cb, void *user);
/* Frees the job, its sequence (through p) and sampler; accepts NULL. */
void aarmd_job_free(struct aarmd_job *j, struct aarmd_plugin *p);

/* NULL when the request is acceptable before tokenizing, else the 400 message. */
const char *aarmd_job_check(const struct aarmd_job *j, char *buf, size_t cap);

/* Starts the text pipeline over tokenizer t. */
void aarmd_job_text_begin(struct aarmd_job *j, const struct aarmd_tokenizer *t);
/*
 * Streams sampled token `id` as index j->n_out - 1 (the caller has counted
 * it). Text that may start a stop string, and bytes of an unfinished UTF-8
 * character, are held; while text is held the token's event waits for the next
 * token so that held text can still ride on a token event if the job ends
 * with EOS (EOS itself is never sent). `last`: nothing follows this token:
 * everything held goes into its event. Stop strings follow core/stop.h (the
 * one that ends first wins). Returns the index of the stop string that
 * matched (its text and what follows are never sent; its text is
 * aarmd_stop_string(&j->stop, index)), else -1.
 */
int aarmd_job_push_token(struct aarmd_job *j, int32_t id, const struct aarmd_sample *sample, bool last);
/* EOS was sampled: everything held joins the waiting token event. */
void aarmd_job_text_eos(struct aarmd_job *j);
/* Sends the waiting token event, if any, with the text it has. */
void aarmd_job_flush_deferred(struct aarmd_job *j);

/* Event helpers: fill an aarmd_job_event and call the job's callback. */
void aarmd_job_emit_started(struct aarmd_job *j, int64_t started_at_ms);
void aarmd_job_emit_error(struct aarmd_job *j, const char *code, const char *message, bool retriable,
                          int http_status);
void aarmd_job_emit_end(struct aarmd_job *j, const char *reason, const char *matched, double now_ms);
void aarmd_job_emit_metrics(struct aarmd_job *j, uint64_t memory_bytes);

#endif
