/* log.c — JSON-lines / text logging to stderr; one write per line under a lock. */
#include "config.h"
#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static enum aarmd_log_format log_fmt = AARMD_LOG_JSON;
static char log_worker[256] = "aarmd";
static int log_min = AARMD_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void aarmd_log_setup(enum aarmd_log_format fmt, const char *worker_id, int min_level)
{
    pthread_mutex_lock(&log_lock);
    log_fmt = fmt;
    if (worker_id)
        snprintf(log_worker, sizeof log_worker, "%s", worker_id);
    log_min = min_level;
    pthread_mutex_unlock(&log_lock);
}

/* Appends s as a JSON string body (without quotes) to buf. */
static size_t json_escape(char *buf, size_t cap, size_t at, const char *s)
{
    for (; s && *s && at + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[at++] = '\\';
            buf[at++] = (char)c;
        } else if (c == '\n') {
            buf[at++] = '\\';
            buf[at++] = 'n';
        } else if (c < 0x20) {
            at += (size_t)snprintf(buf + at, cap - at, "\\u%04x", c);
        } else {
            buf[at++] = (char)c;
        }
    }
    return at;
}

static size_t put(char *buf, size_t cap, size_t at, const char *s)
{
    size_t n = strlen(s);
    if (at + n >= cap)
        n = at < cap - 1 ? cap - 1 - at : 0;
    memcpy(buf + at, s, n);
    return at + n;
}

static size_t put_field(char *buf, size_t cap, size_t at, const char *key, const char *val)
{
    at = put(buf, cap, at, ",\"");
    at = put(buf, cap, at, key);
    at = put(buf, cap, at, "\":\"");
    at = json_escape(buf, cap, at, val);
    return put(buf, cap, at, "\"");
}

void aarmd_log_v(int level, const char *event, const struct aarmd_log_ctx *ctx,
                 const char *fmt, va_list ap)
{
    if (level < log_min)
        return;
    if (level < 0 || level > AARMD_LOG_ERROR)
        level = AARMD_LOG_ERROR;
    char msg[2048] = "";
    if (fmt)
        vsnprintf(msg, sizeof msg, fmt, ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tsbuf[40];
    size_t tl = strftime(tsbuf, sizeof tsbuf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tsbuf + tl, sizeof tsbuf - tl, ".%03ldZ", ts.tv_nsec / 1000000);

    char line[4096];
    size_t at = 0, cap = sizeof line - 2;
    pthread_mutex_lock(&log_lock);
    if (log_fmt == AARMD_LOG_JSON) {
        at = put(line, cap, at, "{\"ts\":\"");
        at = put(line, cap, at, tsbuf);
        at = put(line, cap, at, "\"");
        at = put_field(line, cap, at, "level", level_names[level]);
        at = put_field(line, cap, at, "event", event ? event : "log");
        at = put_field(line, cap, at, "worker_id", log_worker);
        if (ctx && ctx->job_id)
            at = put_field(line, cap, at, "job_id", ctx->job_id);
        if (ctx && ctx->correlation_id)
            at = put_field(line, cap, at, "correlation_id", ctx->correlation_id);
        for (const char *const *kv = ctx ? ctx->extra : NULL; kv && kv[0] && kv[1]; kv += 2) {
            at = put(line, cap, at, ",\"");
            at = put(line, cap, at, kv[0]);
            at = put(line, cap, at, "\":");
            at = put(line, cap, at, kv[1]);
        }
        if (fmt)
            at = put_field(line, cap, at, "msg", msg);
        at = put(line, cap, at, "}");
    } else {
        at = put(line, cap, at, tsbuf);
        at = put(line, cap, at, " ");
        at = put(line, cap, at, level_names[level]);
        at = put(line, cap, at, " ");
        at = put(line, cap, at, event ? event : "log");
        if (ctx && ctx->job_id) {
            at = put(line, cap, at, " job=");
            at = put(line, cap, at, ctx->job_id);
        }
        for (const char *const *kv = ctx ? ctx->extra : NULL; kv && kv[0] && kv[1]; kv += 2) {
            at = put(line, cap, at, " ");
            at = put(line, cap, at, kv[0]);
            at = put(line, cap, at, "=");
            at = put(line, cap, at, kv[1]);
        }
        if (fmt) {
            at = put(line, cap, at, ": ");
            at = put(line, cap, at, msg);
        }
    }
    line[at++] = '\n';
    fwrite(line, 1, at, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}

void aarmd_log_ctx(int level, const char *event, const struct aarmd_log_ctx *ctx,
                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    aarmd_log_v(level, event, ctx, fmt, ap);
    va_end(ap);
}

void aarmd_log(int level, const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    aarmd_log_v(level, event, NULL, fmt, ap);
    va_end(ap);
}
