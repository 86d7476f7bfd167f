/* sse.c — SSE framing and JSON string escaping of job events.
 * Pure formatting: it never touches connections, jobs or the scheduler. */
#include "config.h"
#include "sse.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (avail <= n)
        return 0;
    for (size_t k = 1; k <= n; k++) {
        if ((s[k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n + 1;
}

int aarmd_json_string(struct evbuffer *out, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    char tmp[512];
    size_t t = 0;
    tmp[t++] = '"';
    for (size_t i = 0; i < len;) {
        if (t > sizeof tmp - 16) {
            if (evbuffer_add(out, tmp, t) != 0)
                return -1;
            t = 0;
        }
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            tmp[t++] = '\\';
            tmp[t++] = (char)c;
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            const char *esc = NULL;
            switch (c) {
            case '\n': esc = "\\n"; break;
            case '\r': esc = "\\r"; break;
            case '\t': esc = "\\t"; break;
            case '\b': esc = "\\b"; break;
            case '\f': esc = "\\f"; break;
            }
            if (esc) {
                memcpy(tmp + t, esc, 2);
                t += 2;
            } else {
                t += (size_t)snprintf(tmp + t, sizeof tmp - t, "\\u%04x", c);
            }
            i++;
        } else if (c < 0x80) {
            tmp[t++] = (char)c;
            i++;
        } else {
            size_t n = utf8_seq(s + i, len - i);
            if (n == 0) {
                memcpy(tmp + t, "\xEF\xBF\xBD", 3);   /* U+FFFD for one bad byte */
                t += 3;
                i++;
            } else {
                memcpy(tmp + t, s + i, n);
                t += n;
                i += n;
            }
        }
    }
    tmp[t++] = '"';
    return evbuffer_add(out, tmp, t);
}

static int json_cstr(struct evbuffer *out, const char *s)
{
    return aarmd_json_string(out, s ? s : "", s ? strlen(s) : 0);
}

/* A finite number with `decimals` digits after the point; non-finite → null. */
static int json_num(struct evbuffer *out, double x, int decimals)
{
    if (!isfinite(x))
        return evbuffer_add(out, "null", 4);
    return evbuffer_add_printf(out, "%.*f", decimals, x) < 0 ? -1 : 0;
}

void aarmd_rfc3339_ms(int64_t unix_ms, char *buf, size_t cap)
{
    time_t secs = (time_t)(unix_ms / 1000);
    int ms = (int)(unix_ms % 1000);
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

int aarmd_sse_ping(struct evbuffer *out)
{
    return evbuffer_add(out, ": ping\n\n", 8);
}

static const char *event_name(enum aarmd_job_event_kind k)
{
    switch (k) {
    case AARMD_EV_STARTED: return "started";
    case AARMD_EV_TOKEN: return "token";
    case AARMD_EV_METRICS: return "metrics";
    case AARMD_EV_END: return "end";
    case AARMD_EV_ERROR: return "error";
    }
    return "error";
}

static int token_fields(struct evbuffer *b, const struct aarmd_job_event *ev, const struct aarmd_sse_ctx *ctx)
{
    int rc = 0;
    rc |= evbuffer_add_printf(b, ",\"t\":") < 0;
    rc |= aarmd_json_string(b, ev->u.token.text ? ev->u.token.text : "", ev->u.token.text ? ev->u.token.len : 0);
    rc |= evbuffer_add_printf(b, ",\"i\":%" PRIu32 ",\"id\":%" PRId32, ev->u.token.index, ev->u.token.id) < 0;
    const struct aarmd_sample *s = ev->u.token.sample;
    if (s && s->n_top > 0) {
        rc |= evbuffer_add_printf(b, ",\"logprob\":") < 0;
        rc |= json_num(b, s->logprob, 6);
        rc |= evbuffer_add_printf(b, ",\"top_logprobs\":[") < 0;
        uint32_t n = s->n_top > 20 ? 20 : s->n_top;
        for (uint32_t i = 0; i < n; i++) {
            char piece[512];
            int pl = ctx && ctx->piece ? ctx->piece(ctx->piece_user, s->top[i].id, piece, sizeof piece) : 0;
            if (pl < 0)
                pl = 0;
            if ((size_t)pl > sizeof piece)
                pl = (int)sizeof piece;
            rc |= evbuffer_add_printf(b, "%s{\"id\":%" PRId32 ",\"t\":", i ? "," : "", s->top[i].id) < 0;
            rc |= aarmd_json_string(b, piece, (size_t)pl);
            rc |= evbuffer_add_printf(b, ",\"logprob\":") < 0;
            rc |= json_num(b, s->top[i].logprob, 6);
            rc |= evbuffer_add(b, "}", 1);
        }
        rc |= evbuffer_add(b, "]", 1);
    }
    return rc ? -1 : 0;
}

int aarmd_sse_event(struct evbuffer *out, const struct aarmd_job_event *ev, const struct aarmd_sse_ctx *ctx)
{
    const char *name = event_name(ev->kind);
    struct evbuffer *b = evbuffer_new();   /* whole frame or nothing */
    if (!b)
        return -1;
    int rc = evbuffer_add_printf(b, "event: %s\ndata: {\"type\":\"%s\"", name, name) < 0;
    switch (ev->kind) {
    case AARMD_EV_STARTED: {
        char ts[40];
        aarmd_rfc3339_ms(ev->u.started.started_at_ms, ts, sizeof ts);
        rc |= evbuffer_add_printf(b, ",\"job_id\":") < 0;
        rc |= json_cstr(b, ev->job_id);
        rc |= evbuffer_add_printf(b, ",\"model\":") < 0;
        rc |= json_cstr(b, ctx ? ctx->model : "");
        rc |= evbuffer_add_printf(b, ",\"started_at\":\"%s\",\"seed\":%" PRIu64 ",\"tokens_in\":%" PRIu32, ts,
                                  ev->u.started.seed, ev->u.started.tokens_in) < 0;
        break;
    }
    case AARMD_EV_TOKEN:
        rc |= token_fields(b, ev, ctx);
        break;
    case AARMD_EV_METRICS:
        rc |= evbuffer_add_printf(b, ",\"job_id\":") < 0;
        rc |= json_cstr(b, ev->job_id);
        rc |= evbuffer_add_printf(b, ",\"tokens_out\":%" PRIu32 ",\"decode_time_ms\":", ev->u.metrics.tokens_out) < 0;
        rc |= json_num(b, ev->u.metrics.decode_time_ms, 3);
        rc |= evbuffer_add_printf(b, ",\"tokens_per_sec\":") < 0;
        rc |= json_num(b, ev->u.metrics.tokens_per_sec, 2);
        rc |= evbuffer_add_printf(b, ",\"memory_bytes\":%" PRIu64, ev->u.metrics.memory_bytes) < 0;
        break;
    case AARMD_EV_END:
        rc |= evbuffer_add_printf(b, ",\"tokens_out\":%" PRIu32 ",\"decode_time_ms\":", ev->u.end.tokens_out) < 0;
        rc |= json_num(b, ev->u.end.decode_time_ms, 3);
        rc |= evbuffer_add_printf(b, ",\"prompt_time_ms\":") < 0;
        rc |= json_num(b, ev->u.end.prompt_time_ms, 3);
        rc |= evbuffer_add_printf(b, ",\"stop_reason\":") < 0;
        rc |= json_cstr(b, ev->u.end.stop_reason ? ev->u.end.stop_reason : "MAX_TOKENS");
        if (ev->u.end.stop_sequence_matched) {
            rc |= evbuffer_add_printf(b, ",\"stop_sequence_matched\":") < 0;
            rc |= json_cstr(b, ev->u.end.stop_sequence_matched);
        }
        break;
    case AARMD_EV_ERROR:
        rc |= evbuffer_add_printf(b, ",\"code\":") < 0;
        rc |= json_cstr(b, ev->u.error.code ? ev->u.error.code : "INTERNAL");
        rc |= evbuffer_add_printf(b, ",\"message\":") < 0;
        rc |= json_cstr(b, ev->u.error.message);
        rc |= evbuffer_add_printf(b, ",\"retriable\":%s", ev->u.error.retriable ? "true" : "false") < 0;
        break;
    }
    rc |= evbuffer_add(b, "}\n\n", 3);
    if (!rc)
        rc = evbuffer_add_buffer(out, b);
    evbuffer_free(b);
    return rc ? -1 : 0;
}
