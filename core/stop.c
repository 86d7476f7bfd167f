/*
 * stop.c — stop-string matching over streamed text (contract in stop.h).
 * Not a detokenizer and not a general substring index: at most 4 needles of
 * at most 100 bytes, so plain scanning of (held tail + piece) is enough.
 */
#include "config.h"
#include "stop.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "aarmd_backend.h"

__attribute__((format(printf, 3, 4)))
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Strict UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

int aarmd_stop_init(struct aarmd_stop *m, const char *const *stops, uint32_t n, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    m->matched = -1;
    if (n > AARMD_STOP_MAX) {
        set_err(err, errlen, "stop: at most 4 strings, got %u", n);
        return AARMD_EINVAL;
    }
    if (n > 0 && !stops) {
        set_err(err, errlen, "stop: list is NULL but count is %u", n);
        return AARMD_EINVAL;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!stops[i]) {
            set_err(err, errlen, "stop[%u]: NULL string", i);
            return AARMD_EINVAL;
        }
        size_t l = strnlen(stops[i], AARMD_STOP_MAX_LEN + 1);
        if (l == 0) {
            set_err(err, errlen, "stop[%u]: empty string (each must be 1..100 bytes)", i);
            return AARMD_EINVAL;
        }
        if (l > AARMD_STOP_MAX_LEN) {
            set_err(err, errlen, "stop[%u]: longer than 100 bytes", i);
            return AARMD_EINVAL;
        }
        if (!valid_utf8((const unsigned char *)stops[i], l)) {
            set_err(err, errlen, "stop[%u]: not valid UTF-8", i);
            return AARMD_EINVAL;
        }
        memcpy(m->str[i], stops[i], l);
        m->str[i][l] = '\0';
        m->len[i] = l;
    }
    m->n = n;
    return AARMD_OK;
}

/*
 * The stop whose first occurrence in buf[0..n) ends earliest (ties: earliest
 * start, then lowest index); -1 when none. Only occurrences that end inside
 * the new bytes (at or after `from`) can be new, but the held tail holds no
 * complete stop, so a plain scan from 0 finds the same thing.
 */
static int find_first_end(const struct aarmd_stop *m, const char *buf, size_t n, size_t *start)
{
    int best = -1;
    size_t best_end = (size_t)-1, best_start = 0;
    for (uint32_t i = 0; i < m->n; i++) {
        size_t l = m->len[i];
        if (l > n)
            continue;
        const char *p = memmem(buf, n, m->str[i], l);
        if (!p)
            continue;
        size_t s = (size_t)(p - buf), e = s + l;
        if (e < best_end || (e == best_end && s < best_start)) {
            best = (int)i;
            best_end = e;
            best_start = s;
        }
    }
    *start = best_start;
    return best;
}

/* Longest suffix of buf[0..n) that is a proper prefix of some stop string. */
static size_t longest_prefix_tail(const struct aarmd_stop *m, const char *buf, size_t n)
{
    size_t best = 0;
    for (uint32_t i = 0; i < m->n; i++) {
        size_t k = m->len[i] - 1 < n ? m->len[i] - 1 : n;
        for (; k > best; k--)
            if (!memcmp(buf + n - k, m->str[i], k)) {
                best = k;
                break;
            }
    }
    return best;
}

int aarmd_stop_push(struct aarmd_stop *m, const char *piece, size_t len, char *out, size_t cap, int *matched)
{
    if (matched)
        *matched = -1;
    if (m->matched >= 0)
        return 0;
    if (len > 0 && !piece)
        return AARMD_EINVAL;
    if (m->n == 0) {   /* passthrough: nothing is ever held */
        if (cap < len)
            return AARMD_EINVAL;
        if (len)
            memcpy(out, piece, len);
        return (int)len;
    }
    size_t total = m->n_held + len;
    if (cap < total || total > (size_t)0x7fffffff)
        return AARMD_EINVAL;
    /* out doubles as the scan buffer: held tail, then the piece */
    memcpy(out, m->held, m->n_held);
    if (len)
        memcpy(out + m->n_held, piece, len);

    size_t at;
    int k = find_first_end(m, out, total, &at);
    if (k >= 0) {
        m->matched = k;
        m->n_held = 0;
        if (matched)
            *matched = k;
        return (int)at;
    }
    size_t keep = longest_prefix_tail(m, out, total);
    memcpy(m->held, out + total - keep, keep);
    m->n_held = keep;
    return (int)(total - keep);
}

int aarmd_stop_flush(struct aarmd_stop *m, char *out, size_t cap)
{
    if (m->matched >= 0)
        return 0;
    if (cap < m->n_held)
        return AARMD_EINVAL;
    size_t n = m->n_held;
    memcpy(out, m->held, n);
    m->n_held = 0;
    return (int)n;
}

size_t aarmd_stop_held(const struct aarmd_stop *m)
{
    return m->n_held;
}

int aarmd_stop_matched(const struct aarmd_stop *m)
{
    return m->matched;
}

const char *aarmd_stop_string(const struct aarmd_stop *m, int i)
{
    if (i < 0 || (uint32_t)i >= m->n)
        return NULL;
    return m->str[i];
}
