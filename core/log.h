/*
 * log.h — aarmd's log lines on stderr: one JSON object per line (default) or
 * plain text. Fields: ts, level, event, worker_id, and where given job_id,
 * correlation_id, msg plus any extra key/values. Thread-safe; never fails.
 */
#ifndef AARMD_LOG_H
#define AARMD_LOG_H

#include <stdarg.h>
#include "aarmd_backend.h"   /* enum aarmd_log_level */

enum aarmd_log_format { AARMD_LOG_JSON = 0, AARMD_LOG_TEXT = 1 };

/* Sets the process-wide format, worker id (copied) and minimum level. */
void aarmd_log_setup(enum aarmd_log_format fmt, const char *worker_id, int min_level);

/* Context of one line; every member may be NULL. `extra` is a NULL-terminated
 * list of key, value pairs of already-JSON-encoded values (numbers, "strings"). */
struct aarmd_log_ctx {
    const char *job_id;
    const char *correlation_id;
    const char *const *extra;
};

/* Logs `event` with a printf-style msg (fmt may be NULL for no msg). */
void aarmd_log(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void aarmd_log_ctx(int level, const char *event, const struct aarmd_log_ctx *ctx,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void aarmd_log_v(int level, const char *event, const struct aarmd_log_ctx *ctx,
                 const char *fmt, va_list ap);

#endif
