/* test_sse.c — SSE framing of job events (core/sse.c): the frame shape, every
 * event's fields parsed back as JSON, JSON escaping of control characters,
 * non-ASCII and invalid UTF-8, logprobs, pings and RFC 3339 times. */
#include <criterion/criterion.h>
#include <event2/buffer.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

static struct evbuffer *buf;

static void setup(void)
{
    buf = evbuffer_new();
    cr_assert_not_null(buf);
}

static void teardown(void)
{
    evbuffer_free(buf);
}

TestSuite(sse, .init = setup, .fini = teardown);

/* The buffer's text (NUL-terminated copy; caller frees). */
static char *text(void)
{
    size_t n = evbuffer_get_length(buf);
    char *s = malloc(n + 1);
    evbuffer_copyout(buf, s, n);
    s[n] = '\0';
    return s;
}

/* Checks the frame "event: NAME\ndata: JSON\n\n" and returns the parsed data. */
static struct json_object *frame(const char *name)
{
    char *s = text();
    char head[64];
    snprintf(head, sizeof head, "event: %s\ndata: ", name);
    cr_assert(strncmp(s, head, strlen(head)) == 0, "frame starts with %s", s);
    size_t n = strlen(s);
    cr_assert(n >= 2 && s[n - 1] == '\n' && s[n - 2] == '\n', "frame must end with a blank line: %s", s);
    char *data = s + strlen(head);
    cr_assert_null(memchr(data, '\n', strlen(data) - 2), "data must be one line: %s", s);
    struct json_object *o = json_tokener_parse(data);
    cr_assert_not_null(o, "data is not JSON: %s", data);
    struct json_object *t;
    cr_assert(json_object_object_get_ex(o, "type", &t));
    cr_assert_str_eq(json_object_get_string(t), name);
    free(s);
    return o;
}

static struct json_object *field(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    cr_assert(json_object_object_get_ex(o, k, &v), "missing field %s in %s", k, json_object_to_json_string(o));
    return v;
}

static const struct aarmd_sse_ctx ctx = {.model = "SmolLM2 \"135M\""};

Test(sse, started)
{
    struct aarmd_job_event ev = {.kind = AARMD_EV_STARTED, .job_id = "job-1"};
    ev.u.started.seed = 18446744073709551615ull;
    ev.u.started.tokens_in = 12;
    ev.u.started.started_at_ms = 1700000000123;
    cr_assert_eq(aarmd_sse_event(buf, &ev, &ctx), 0);
    struct json_object *o = frame("started");
    cr_assert_str_eq(json_object_get_string(field(o, "job_id")), "job-1");
    cr_assert_str_eq(json_object_get_string(field(o, "model")), "SmolLM2 \"135M\"");
    cr_assert_str_eq(json_object_get_string(field(o, "started_at")), "2023-11-14T22:13:20.123Z");
    cr_assert_eq(json_object_get_uint64(field(o, "seed")), 18446744073709551615ull);
    cr_assert_eq(json_object_get_int(field(o, "tokens_in")), 12);
    json_object_put(o);
}

Test(sse, token_exact_text)
{
    struct aarmd_job_event ev = {.kind = AARMD_EV_TOKEN, .job_id = "j"};
    ev.u.token.text = "Hello";
    ev.u.token.len = 5;
    ev.u.token.index = 0;
    ev.u.token.id = 19556;
    cr_assert_eq(aarmd_sse_event(buf, &ev, &ctx), 0);
    char *s = text();
    cr_assert_str_eq(s, "event: token\ndata: {\"type\":\"token\",\"t\":\"Hello\",\"i\":0,\"id\":19556}\n\n");
    free(s);
}

Test(sse, token_escapes_control_chars_and_keeps_utf8)
{
    const char t[] = "a\"b\\c\n\r\t\b\f\x01\x1f\x7f h\xc3\xa9 \xe4\xb8\x96 \xf0\x9f\x98\x80";
    struct aarmd_job_event ev = {.kind = AARMD_EV_TOKEN, .job_id = "j"};
    ev.u.token.text = t;
    ev.u.token.len = sizeof t - 1;
    ev.u.token.index = 3;
    ev.u.token.id = 7;
    cr_assert_eq(aarmd_sse_event(buf, &ev, &ctx), 0);
    char *s = text();
    cr_assert(strstr(s, "\"t\":\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f\\u007f h\xc3\xa9 \xe4\xb8\x96 \xf0\x9f\x98\x80\""),
              "escaped wrongly: %s", s);
    free(s);
    struct json_object *o = frame("token");
    cr_assert_str_eq(json_object_get_string(field(o, "t")), t, "round trip");
    cr_assert_eq(json_object_get_int(field(o, "i")), 3);
    cr_assert_eq(json_object_get_int(field(o, "id")), 7);
    cr_assert_not(json_object_object_get_ex(o, "logprob", NULL), "no logprobs unless asked");
    json_object_put(o);
}

Test(sse, embedded_nul_and_invalid_utf8_are_escaped)
{
    const char t[] = "x\0y\xff\xc3(\xe4\xb8";   /* NUL, stray byte, broken 2-byte, truncated 3-byte */
    struct aarmd_job_event ev = {.kind = AARMD_EV_TOKEN, .job_id = "j"};
    ev.u.token.text = t;
    ev.u.token.len = sizeof t - 1;
    cr_assert_eq(aarmd_sse_event(buf, &ev, &ctx), 0);
    char *s = text();
    cr_assert(strstr(s, "\"t\":\"x\\u0000y\xef\xbf\xbd\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\""), "got %s", s);
    free(s);
}

Test(sse, long_text_crosses_the_internal_chunk)
{
    size_t n = 5000;
    char *t = malloc(n);
    for (size_t i = 0; i < n; i++)
        t[i] = (i % 7 == 0) ? '\n' : (char)('a' + i % 26);
    cr_assert_eq(aarmd_json_string(buf, t, n), 0);
    size_t len = evbuffer_get_length(buf);
    char *s = malloc(len + 1);
    evbuffer_copyout(buf, s, len);
    s[len] = '\0';
    struct json_object *o = json_tokener_parse(s);
    cr_assert_not_null(o);
    cr_assert_eq((size_t)json_object_get_string_len(o), n);
    cr_assert(memcmp(json_object_get_string(o), t, n) == 0);
    json_object_put(o);
    free(s);
    free(t);
}

static int fake_piece(void *user, int32_t id, char *b, size_t cap)
{
    /* id 1 → "one", id 2 → an invalid byte, id 3 → a space + "é"; like snprintf */
    const char *p = id == 1 ? "one" : id == 2 ? "\xe4" : id == 3 ? " \xc3\xa9" : NULL;
    if (!p)
        return -1;
    size_t n = strlen(p);
    memcpy(b, p, n < cap ? n : cap);
    return (int)n;
}

Test(sse, token_with_logprobs)
{
    struct aarmd_sample smp = {.id = 1, .logprob = -0.25f, .n_top = 3,
                               .top = {{1, -0.25f}, {2, -1.5f}, {3, -2.0f}}};
    struct aarmd_job_event ev = {.kind = AARMD_EV_TOKEN, .job_id = "j"};
    ev.u.token.text = "one";
    ev.u.token.len = 3;
    ev.u.token.index = 4;
    ev.u.token.id = 1;
    ev.u.token.sample = &smp;
    struct aarmd_sse_ctx c = {.model = "m", .piece = fake_piece};
    cr_assert_eq(aarmd_sse_event(buf, &ev, &c), 0);
    struct json_object *o = frame("token");
    cr_assert_float_eq(json_object_get_double(field(o, "logprob")), -0.25, 1e-6);
    struct json_object *top = field(o, "top_logprobs");
    cr_assert_eq(json_object_array_length(top), 3);
    struct json_object *a = json_object_array_get_idx(top, 1);
    cr_assert_eq(json_object_get_int(field(a, "id")), 2);
    cr_assert_str_eq(json_object_get_string(field(a, "t")), "\xef\xbf\xbd", "lossy U+FFFD");
    cr_assert_float_eq(json_object_get_double(field(a, "logprob")), -1.5, 1e-6);
    cr_assert_str_eq(json_object_get_string(field(json_object_array_get_idx(top, 2), "t")), " \xc3\xa9");
    json_object_put(o);
}

Test(sse, metrics)
{
    struct aarmd_job_event ev = {.kind = AARMD_EV_METRICS, .job_id = "job-2"};
    ev.u.metrics.tokens_out = 40;
    ev.u.metrics.decode_time_ms = 812.5;
    ev.u.metrics.tokens_per_sec = 49.23;
    ev.u.metrics.memory_bytes = 123456789012ull;
    cr_assert_eq(aarmd_sse_event(buf, &ev, &ctx), 0);
    struct json_object *o = frame("metrics");
    cr_assert_str_eq(json_object_get_string(field(o, "job_id")), "job-2");
    cr_assert_eq(json_object_get_int(field(o, "tokens_out")), 40);
    cr_assert_float_eq(json_object_get_double(field(o, "decode_time_ms")), 812.5, 1e-9);
    cr_assert_float_eq(json_object_get_double(field(o, "tokens_per_sec")), 49.23, 1e-9);
    cr_assert_eq(json_object_get_int64(field(o, "memory_bytes")), 123456789012ll);
    json_object_put(o);
}

Test(sse, end_with_and_without_stop_sequence)
{
    struct aarmd_job_event ev = {.kind = AARMD_EV_END, .job_id = "j"};
    ev.u.end.tokens_out = 9;
    ev.u.end.decode_time_ms = 100.0;
    ev.u.end.prompt_time_ms = 3.25;
    ev.u.end.stop_reason = "STOP_SEQUENCE";
    ev.u.end.stop_sequence_matched = "\n\nUser:";
    cr_assert_eq(aarmd_sse_event(buf, &ev, &ctx), 0);
    struct json_object *o = frame("end");
    cr_assert_eq(json_object_get_int(field(o, "tokens_out")), 9);
    cr_assert_float_eq(json_object_get_double(field(o, "prompt_time_ms")), 3.25, 1e-9);
    cr_assert_str_eq(json_object_get_string(field(o, "stop_reason")), "STOP_SEQUENCE");
    cr_assert_str_eq(json_object_get_string(field(o, "stop_sequence_matched")), "\n\nUser:");
    json_object_put(o);

    evbuffer_drain(buf, evbuffer_get_length(buf));
    ev.u.end.stop_reason = "EOS";
    ev.u.end.stop_sequence_matched = NULL;
    cr_assert_eq(aarmd_sse_event(buf, &ev, &ctx), 0);
    o = frame("end");
    cr_assert_str_eq(json_object_get_string(field(o, "stop_reason")), "EOS");
    cr_assert_not(json_object_object_get_ex(o, "stop_sequence_matched", NULL), "only with STOP_SEQUENCE");
    json_object_put(o);
}

Test(sse, error)
{
    struct aarmd_job_event ev = {.kind = AARMD_EV_ERROR, .job_id = "j"};
    ev.u.error.code = "OUT_OF_MEMORY";
    ev.u.error.message = "KV cache: 1\tGiB";
    ev.u.error.retriable = true;
    cr_assert_eq(aarmd_sse_event(buf, &ev, &ctx), 0);
    struct json_object *o = frame("error");
    cr_assert_str_eq(json_object_get_string(field(o, "code")), "OUT_OF_MEMORY");
    cr_assert_str_eq(json_object_get_string(field(o, "message")), "KV cache: 1\tGiB");
    cr_assert(json_object_get_boolean(field(o, "retriable")));
    json_object_put(o);
}

Test(sse, non_finite_numbers_become_null)
{
    struct aarmd_job_event ev = {.kind = AARMD_EV_METRICS, .job_id = "j"};
    ev.u.metrics.tokens_per_sec = 1.0 / 0.0;
    cr_assert_eq(aarmd_sse_event(buf, &ev, &ctx), 0);
    struct json_object *o = frame("metrics");
    cr_assert(json_object_is_type(field(o, "tokens_per_sec"), json_type_null));
    json_object_put(o);
}

Test(sse, ping_and_sequence)
{
    cr_assert_eq(aarmd_sse_ping(buf), 0);
    struct aarmd_job_event ev = {.kind = AARMD_EV_TOKEN, .job_id = "j"};
    ev.u.token.text = "";
    ev.u.token.len = 0;
    ev.u.token.index = 1;
    ev.u.token.id = 2;
    cr_assert_eq(aarmd_sse_event(buf, &ev, &ctx), 0);
    char *s = text();
    cr_assert_str_eq(s, ": ping\n\nevent: token\ndata: {\"type\":\"token\",\"t\":\"\",\"i\":1,\"id\":2}\n\n");
    free(s);
}

Test(sse, rfc3339)
{
    char b[40];
    aarmd_rfc3339_ms(0, b, sizeof b);
    cr_assert_str_eq(b, "1970-01-01T00:00:00.000Z");
    aarmd_rfc3339_ms(951782400999, b, sizeof b);   /* leap day 2000 */
    cr_assert_str_eq(b, "2000-02-29T00:00:00.999Z");
}
