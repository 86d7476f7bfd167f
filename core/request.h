/*
 * request.h — parsing and validation of the JSON bodies the server accepts
 * (/execute, /cancel, /tokenize, /detokenize) and the JSON error body every
 * endpoint answers with. Pure: no I/O, no globals; safe from any thread.
 *
 * /execute rules (contract §4, checked in this order; every failing field is
 * reported, each at most once):
 *   job_id              string, non-empty, <= 256 bytes, valid UTF-8, no NUL
 *   prompt              string, 1..32768 characters (UTF-8 code points), valid UTF-8
 *   max_tokens          integer 1..limits.max_tokens_limit (default: the limit)
 *   temperature         number 0..2 (default 1.0)
 *   top_p               number 0..1 (default 1.0)
 *   top_k               integer 0..limits.vocab_size (default 0)
 *   min_p               number 0..1 (default 0.0)
 *   repetition_penalty  number 0..2 (default 1.0)
 *   stop                array of <= 4 strings, each 1..100 bytes (default [])
 *   seed                uint64 or null (default: drawn by the caller)
 *   logprobs            integer 0..20 or null (aarmd extension; default 0)
 * Constraint strings: required, type(string|integer|number|array|uint64),
 * non_empty, max_length(N), length(1..=32768), utf8, range(A..=B),
 * max_count(4). A null optional field counts as absent; unknown fields are ignored.
 */
#ifndef AARMD_REQUEST_H
#define AARMD_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aarmd_backend.h"   /* AARMD_OK, AARMD_E* */
#include "sampler.h"
#include "scheduler.h"

#define AARMD_JOB_ID_MAX 256
#define AARMD_PROMPT_MAX_CHARS 32768
#define AARMD_STOP_MAX_BYTES 100
#define AARMD_MAX_FIELD_ERRORS 24

struct aarmd_field_error {
    char field[32];         /* "max_tokens", "stop[2]" */
    char constraint[48];    /* "range(1..=2048)" */
    char message[192];      /* "max_tokens must be at most 2048 (got 2049)" */
    char *value;            /* the offending value as JSON text (malloc'd), or NULL */
};

/* Outcome of a failed parse: either a malformed body (message only, n == 0)
 * or validation errors (n > 0, message summarises). Zero-initialise before use. */
struct aarmd_validation {
    struct aarmd_field_error e[AARMD_MAX_FIELD_ERRORS];
    unsigned n;
    char message[256];
};
void aarmd_validation_fini(struct aarmd_validation *v);   /* frees the values */

struct aarmd_request_limits {
    uint32_t max_tokens_limit;  /* --max-tokens-limit */
    uint32_t vocab_size;        /* top_k upper bound */
};

/* A validated /execute body; strings owned (free with aarmd_exec_req_fini). */
struct aarmd_exec_req {
    char *job_id;
    char *prompt;
    size_t prompt_len;          /* bytes */
    uint32_t prompt_chars;      /* code points */
    uint32_t max_tokens;
    struct aarmd_sampler_params sampling;   /* seed valid only when seed_given */
    bool seed_given;
    char *stop[AARMD_MAX_STOPS];
    uint32_t n_stop;
};
void aarmd_exec_req_fini(struct aarmd_exec_req *r);   /* accepts NULL and zeroed structs */

/*
 * Parses and validates an /execute body of `len` bytes. AARMD_OK fills *out;
 * AARMD_EINVAL fills *v (malformed JSON or a non-object: v->n == 0;
 * otherwise every failing field in table order). AARMD_ENOMEM on allocation failure.
 */
int aarmd_exec_req_parse(const char *body, size_t len, const struct aarmd_request_limits *lim,
                         struct aarmd_exec_req *out, struct aarmd_validation *v);

/* Points `job` at r's fields (no copies; r must outlive the submit call). */
void aarmd_exec_req_to_job(const struct aarmd_exec_req *r, const char *correlation_id,
                           struct aarmd_job_request *job);

/* /cancel body {"job_id": "..."}: copies the id into id_out (AARMD_JOB_ID_MAX+1 bytes). */
int aarmd_cancel_req_parse(const char *body, size_t len, char *id_out, struct aarmd_validation *v);

/* /tokenize body {"content": "...", "add_special": false, "parse_special": false}:
 * *content malloc'd (caller frees), *content_len bytes. */
int aarmd_tokenize_req_parse(const char *body, size_t len, char **content, size_t *content_len,
                             bool *add_special, bool *parse_special, struct aarmd_validation *v);

/* /detokenize body {"tokens": [ids]} with every id in 0..n_vocab-1:
 * *ids malloc'd (caller frees; NULL when empty), *n ids. */
int aarmd_detokenize_req_parse(const char *body, size_t len, uint32_t n_vocab, int32_t **ids, size_t *n,
                               struct aarmd_validation *v);

/*
 * The error body `{"error":{"code","message","retriable"},"errors":[...]}`
 * ("errors" only when v has field errors). malloc'd, caller frees; NULL on
 * allocation failure. v may be NULL.
 */
char *aarmd_error_body(const char *code, const char *message, bool retriable, const struct aarmd_validation *v);

/* Number of code points of valid UTF-8 s[0..len), or -1 when invalid
 * (overlong forms, surrogates and values above U+10FFFF are invalid). */
long aarmd_utf8_count(const char *s, size_t len);

#endif
