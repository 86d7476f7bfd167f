/*
 * sse.h — job events → Server-Sent Events text (contract §4), as pure
 * functions writing into an evbuffer. Safe on any thread (the scheduler's
 * callback formats here, off the event loop). Every event is framed as
 *
 *     event: <type>\n
 *     data: {"type":"<type>",...}\n
 *     \n
 *
 * JSON strings are escaped for ", \ and every control character (< 0x20 and
 * 0x7f); valid non-ASCII UTF-8 passes through as is; bytes that are not valid
 * UTF-8 become U+FFFD (so the data line is always valid UTF-8 JSON).
 */
#ifndef AARMD_SSE_H
#define AARMD_SSE_H

#include <stddef.h>
#include <stdint.h>

#include "scheduler.h"

struct evbuffer;

/* The piece text of a token for top_logprobs (e.g. aarmd_tokenizer_piece):
 * like snprintf, returns the full length, -1 when out of range. */
typedef int (*aarmd_sse_piece_fn)(void *user, int32_t id, char *buf, size_t cap);

struct aarmd_sse_ctx {
    const char *model;          /* "model" of the started event */
    aarmd_sse_piece_fn piece;   /* may be NULL: alternatives then get "t":"" */
    void *piece_user;
};

/* Appends the SSE frame of `ev`. Returns 0, or -1 when the buffer cannot grow. */
int aarmd_sse_event(struct evbuffer *out, const struct aarmd_job_event *ev, const struct aarmd_sse_ctx *ctx);

/* Appends the keep-alive comment ": ping\n\n". */
int aarmd_sse_ping(struct evbuffer *out);

/* Appends s[0..len) as a quoted JSON string (rules above). */
int aarmd_json_string(struct evbuffer *out, const char *s, size_t len);

/* RFC 3339 UTC with milliseconds of a Unix time in ms: "2025-01-31T12:00:00.123Z". */
void aarmd_rfc3339_ms(int64_t unix_ms, char *buf, size_t cap);

#endif
