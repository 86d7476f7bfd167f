/* test_execute.c — POST /execute against the real daemon (mock backend, GPT-2
 * vocab): the event stream's order and fields, validation errors with the
 * contract's constraint strings, HTTP errors (400/404/405/409/413/503/401),
 * correlation ids, and /tokenize ↔ /detokenize. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <json-c/json.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "integration/harness.h"

static void fini(void) { hx_kill_all(); }

TestSuite(execute, .fini = fini, .timeout = 60);

/* ---- helpers ----------------------------------------------------------------- */

/* Runs one job to its end; the stream must end cleanly. */
static void run_job(int port, const char *headers, const char *json, struct hx_stream *s)
{
    struct hx_http *c = hx_execute(port, headers, json);
    cr_assert_eq(hx_http_status(c), 200, "POST /execute %s: status %d: %s", json, hx_http_status(c),
                 hx_http_body(c));
    const char *ct = hx_http_header(c, "Content-Type");
    cr_assert(ct && strstr(ct, "text/event-stream"), "Content-Type %s", ct ? ct : "(none)");
    cr_assert_eq(hx_stream_collect(c, s, 20000), 0, "stream did not end in 20 s (%d events)", s->n);
    hx_http_close(c);
}

/* The index of the terminal event; asserts it is the last and unique one. */
static int terminal_of(const struct hx_stream *s)
{
    int term = -1;
    for (int i = 0; i < s->n; i++) {
        if (!strcmp(s->names[i], "end") || !strcmp(s->names[i], "error")) {
            cr_assert_eq(term, -1, "two terminal events (%d and %d)", term, i);
            term = i;
        }
    }
    cr_assert_eq(term, s->n - 1, "the terminal event is not the last one (%d of %d)", term, s->n);
    return term;
}

/* Concatenated token texts into buf. */
static int token_text(const struct hx_stream *s, char *buf, size_t cap)
{
    size_t len = 0;
    int n = 0;
    buf[0] = '\0';
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->names[i], "token"))
            continue;
        const char *t = hx_jstr(s->data[i], "t");
        cr_assert_not_null(t, "token event without t");
        size_t tl = strlen(t);
        cr_assert_lt(len + tl, cap);
        memcpy(buf + len, t, tl + 1);
        len += tl;
        n++;
    }
    return n;
}

/* Checks the error body shape and returns the "error" object (owned by c). */
static struct json_object *error_of(struct hx_http *c, int status, const char *code)
{
    cr_assert_eq(hx_http_status(c), status, "status %d, want %d: %s", hx_http_status(c), status, hx_http_body(c));
    struct json_object *j = hx_http_json(c);
    cr_assert_not_null(j, "error body is not JSON: %s", hx_http_body(c));
    struct json_object *e;
    cr_assert(json_object_object_get_ex(j, "error", &e), "no error object: %s", hx_http_body(c));
    cr_assert_str_eq(hx_jstr(e, "code"), code, "%s", hx_http_body(c));
    cr_assert_not_null(hx_jstr(e, "message"), "%s", hx_http_body(c));
    struct json_object *r;
    cr_assert(json_object_object_get_ex(e, "retriable", &r) && json_object_is_type(r, json_type_boolean),
              "retriable missing: %s", hx_http_body(c));
    return e;
}

static bool retriable(struct json_object *e)
{
    struct json_object *r;
    return json_object_object_get_ex(e, "retriable", &r) && json_object_get_boolean(r);
}

/* Waits for the `started` event of an open stream. */
static void wait_started(struct hx_http *c)
{
    cr_assert_eq(hx_http_status(c), 200, "%s", hx_http_body(c));
    struct hx_sse_event ev;
    cr_assert_eq(hx_sse_next(c, &ev, 5000), 1, "no first event");
    cr_assert_str_eq(ev.event, "started");
    hx_sse_event_fini(&ev);
}

/* ---- the stream ---------------------------------------------------------------- */

Test(execute, event_order_and_fields)
{
    struct hx_proc *p = hx_start(NULL);
    int port = hx_port(p);
    time_t before = time(NULL);
    struct hx_stream s;
    run_job(port, NULL, "{\"job_id\":\"order-1\",\"prompt\":\"Hello world\",\"max_tokens\":8,\"seed\":42}", &s);
    time_t after = time(NULL);

    cr_assert_geq(s.n, 2);
    cr_assert_str_eq(s.names[0], "started");
    int term = terminal_of(&s);
    cr_assert_str_eq(s.names[term], "end", "ended with %s: %s", s.names[term],
                     json_object_to_json_string(s.data[term]));

    /* started */
    struct json_object *st = s.data[0];
    cr_assert_not_null(st);
    cr_assert_str_eq(hx_jstr(st, "job_id"), "order-1");
    cr_assert_not_null(hx_jstr(st, "model"));
    cr_assert_gt(strlen(hx_jstr(st, "model")), 0);
    cr_assert_eq(hx_jint(st, "seed"), 42);
    const char *at = hx_jstr(st, "started_at");
    cr_assert_not_null(at, "started_at missing");
    regex_t re;
    cr_assert_eq(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?Z$", REG_EXTENDED), 0);
    cr_assert_eq(regexec(&re, at, 0, NULL, 0), 0, "started_at %s is not RFC 3339 UTC", at);
    regfree(&re);
    struct tm tm = {0};
    cr_assert_not_null(strptime(at, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t t = timegm(&tm);
    cr_assert(t >= before - 1 && t <= after + 1, "started_at %s is not now", at);

    /* tokens_in equals the prompt's tokens (add_special as the scheduler does) */
    struct hx_http *tk = hx_fetch(port, "POST", "/tokenize", NULL, "{\"content\":\"Hello world\",\"add_special\":true}");
    cr_assert_eq(hx_http_status(tk), 200, "%s", hx_http_body(tk));
    struct json_object *toks;
    cr_assert(json_object_object_get_ex(hx_http_json(tk), "tokens", &toks));
    cr_assert_gt(json_object_array_length(toks), 0);
    cr_assert_eq(hx_jint(st, "tokens_in"), (int64_t)json_object_array_length(toks));
    hx_http_close(tk);

    /* tokens: i counts from 0, id present, text present; type names the event */
    int n_tok = 0;
    char ids[4096] = "{\"tokens\":[";
    for (int i = 0; i < s.n; i++) {
        cr_assert_not_null(s.data[i], "event %d (%s) has no JSON data", i, s.names[i]);
        const char *type = hx_jstr(s.data[i], "type");
        if (type)
            cr_assert_str_eq(type, s.names[i]);
        if (strcmp(s.names[i], "token"))
            continue;
        cr_assert(!strcmp(s.names[i - 1], "started") || !strcmp(s.names[i - 1], "token") ||
                  !strcmp(s.names[i - 1], "metrics"), "token after %s", s.names[i - 1]);
        cr_assert_eq(hx_jint(s.data[i], "i"), n_tok, "token index");
        cr_assert(hx_jhas(s.data[i], "id"), "token without id");
        cr_assert_not_null(hx_jstr(s.data[i], "t"), "token without t");
        int64_t id = hx_jint(s.data[i], "id");
        cr_assert(id >= 0 && id < 50257, "token id %lld", (long long)id);
        char num[32];
        snprintf(num, sizeof num, "%s%lld", n_tok ? "," : "", (long long)id);
        strcat(ids, num);
        n_tok++;
    }
    strcat(ids, "]}");
    cr_assert_eq(n_tok, 8);

    /* end */
    struct json_object *end = s.data[term];
    cr_assert_eq(hx_jint(end, "tokens_out"), 8);
    cr_assert_str_eq(hx_jstr(end, "stop_reason"), "MAX_TOKENS");
    cr_assert(hx_jhas(end, "decode_time_ms") && hx_jhas(end, "prompt_time_ms"));
    cr_assert_geq(json_object_get_double(json_object_object_get(end, "decode_time_ms")), 0.0);
    cr_assert_geq(json_object_get_double(json_object_object_get(end, "prompt_time_ms")), 0.0);
    cr_assert_not(hx_jhas(end, "stop_sequence_matched"));

    /* the streamed text is the detokenized ids */
    char text[8192];
    token_text(&s, text, sizeof text);
    struct hx_http *dt = hx_fetch(port, "POST", "/detokenize", NULL, ids);
    cr_assert_eq(hx_http_status(dt), 200, "%s", hx_http_body(dt));
    cr_assert_str_eq(hx_jstr(hx_http_json(dt), "content"), text);
    hx_http_close(dt);
    hx_stream_fini(&s);
    cr_assert_eq(hx_stop(p, 8000), 0);
}

Test(execute, seed_makes_output_repeatable)
{
    struct hx_proc *p = hx_start(NULL);
    int port = hx_port(p);
    struct hx_stream a, b, c;
    run_job(port, NULL, "{\"job_id\":\"r1\",\"prompt\":\"Once upon\",\"max_tokens\":12}", &a);
    cr_assert(hx_jhas(a.data[0], "seed"), "started without seed");
    /* the full uint64 range: take the number as the server wrote it */
    uint64_t seed = json_object_get_uint64(json_object_object_get(a.data[0], "seed"));
    char body[256];
    snprintf(body, sizeof body, "{\"job_id\":\"r2\",\"prompt\":\"Once upon\",\"max_tokens\":12,\"seed\":%llu}",
             (unsigned long long)seed);
    run_job(port, NULL, body, &b);
    cr_assert_eq(json_object_get_uint64(json_object_object_get(b.data[0], "seed")), seed);
    char ta[8192], tb[8192], tc[8192];
    cr_assert_eq(token_text(&a, ta, sizeof ta), 12);
    cr_assert_eq(token_text(&b, tb, sizeof tb), 12);
    cr_assert_str_eq(ta, tb, "same seed, different text");
    /* a null seed draws a fresh one */
    run_job(port, NULL, "{\"job_id\":\"r3\",\"prompt\":\"Once upon\",\"max_tokens\":12,\"seed\":null}", &c);
    cr_assert(hx_jhas(c.data[0], "seed"));
    token_text(&c, tc, sizeof tc);
    cr_assert(json_object_get_uint64(json_object_object_get(c.data[0], "seed")) != seed || !strcmp(tc, ta));
    /* a seed above INT64_MAX round-trips */
    struct hx_stream d;
    run_job(port, NULL, "{\"job_id\":\"r4\",\"prompt\":\"x\",\"max_tokens\":1,\"seed\":18446744073709551615}", &d);
    cr_assert_eq(json_object_get_uint64(json_object_object_get(d.data[0], "seed")), UINT64_MAX);
    hx_stream_fini(&d);
    hx_stream_fini(&a);
    hx_stream_fini(&b);
    hx_stream_fini(&c);
}

Test(execute, eos_ends_the_job_and_is_not_sent)
{
    struct hx_proc *p = hx_start("--backend-opt", "eos_after=3", NULL);
    struct hx_stream s;
    run_job(hx_port(p), NULL, "{\"job_id\":\"eos\",\"prompt\":\"Hi\",\"max_tokens\":50,\"temperature\":0}", &s);
    int term = terminal_of(&s);
    cr_assert_str_eq(s.names[term], "end", "%s", json_object_to_json_string(s.data[term]));
    cr_assert_str_eq(hx_jstr(s.data[term], "stop_reason"), "EOS");
    char text[4096];
    int n = token_text(&s, text, sizeof text);
    cr_assert_eq(n, 3, "EOS must not be sent as a token");
    cr_assert_eq(hx_jint(s.data[term], "tokens_out"), 3);
    for (int i = 0; i < s.n; i++)
        if (!strcmp(s.names[i], "token"))
            cr_assert_neq(hx_jint(s.data[i], "id"), 50256, "EOS (50256) streamed as a token");
    hx_stream_fini(&s);
}

Test(execute, stop_sequence_ends_the_job_and_is_not_sent)
{
    struct hx_proc *p = hx_start(NULL);
    int port = hx_port(p);
    struct hx_stream s;
    run_job(port, NULL, "{\"job_id\":\"g\",\"prompt\":\"The\",\"max_tokens\":10,\"temperature\":0}", &s);
    char full[8192];
    cr_assert_eq(token_text(&s, full, sizeof full), 10);
    /* the 6th token's text (trimmed of spaces) as stop string */
    const char *t5 = NULL;
    for (int i = 0; i < s.n; i++)
        if (!strcmp(s.names[i], "token") && hx_jint(s.data[i], "i") == 5)
            t5 = hx_jstr(s.data[i], "t");
    cr_assert_not_null(t5);
    char stop[128];
    snprintf(stop, sizeof stop, "%s", t5[0] == ' ' ? t5 + 1 : t5);
    cr_assert_gt(strlen(stop), 0, "token 5 has empty text: %s", full);
    const char *hit = strstr(full, stop);
    cr_assert_not_null(hit);
    size_t prefix = (size_t)(hit - full);

    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "job_id", json_object_new_string("g-stop"));
    json_object_object_add(req, "prompt", json_object_new_string("The"));
    json_object_object_add(req, "max_tokens", json_object_new_int(10));
    json_object_object_add(req, "temperature", json_object_new_int(0));
    struct json_object *arr = json_object_new_array();
    json_object_array_add(arr, json_object_new_string(stop));
    json_object_object_add(req, "stop", arr);
    struct hx_stream s2;
    run_job(port, NULL, json_object_to_json_string(req), &s2);
    json_object_put(req);
    int term = terminal_of(&s2);
    cr_assert_str_eq(s2.names[term], "end");
    cr_assert_str_eq(hx_jstr(s2.data[term], "stop_reason"), "STOP_SEQUENCE");
    cr_assert_str_eq(hx_jstr(s2.data[term], "stop_sequence_matched"), stop);
    char out[8192];
    token_text(&s2, out, sizeof out);
    cr_assert_eq(strlen(out), prefix, "sent '%s', want the %zu bytes before '%s' in '%s'", out, prefix, stop, full);
    cr_assert_eq(strncmp(out, full, prefix), 0);
    hx_stream_fini(&s);
    hx_stream_fini(&s2);
}

Test(execute, tokens_stream_without_batching_delay)
{
    /* With a backend that needs no time per token the first token must come
     * at once; a stream held back by Nagle's algorithm against the client's
     * delayed ACK shows ~40 ms here. One slow job of 7 is forgiven (a busy machine). */
    struct hx_proc *p = hx_start("--backend-opt", "delay_ms=0", NULL);
    double ttft[7];
    struct hx_http *c = NULL;
    for (int k = 0; k < 7; k++) {
        char body[128];
        snprintf(body, sizeof body, "{\"job_id\":\"nagle-%d\",\"prompt\":\"x\",\"max_tokens\":20}", k);
        double t0 = hx_now_ms();
        /* one keep-alive connection, as orchestrators use (a fresh one starts in quick-ACK mode) */
        if (!c)
            c = hx_execute(hx_port(p), NULL, body);
        else
            cr_assert_eq(hx_http_again(c, hx_port(p), "POST", "/execute", NULL, body, strlen(body)), 0,
                         "keep-alive request %d failed", k);
        cr_assert_eq(hx_http_status(c), 200);
        ttft[k] = -1;
        for (;;) {
            struct hx_sse_event ev;
            int r = hx_sse_next(c, &ev, 5000);
            cr_assert_neq(r, -1, "stream stalled");
            if (r == 0)
                break;
            if (!strcmp(ev.event, "token") && ttft[k] < 0)
                ttft[k] = hx_now_ms() - t0;
            hx_sse_event_fini(&ev);
        }
    }
    hx_http_close(c);
    int slow = 0;
    for (int k = 0; k < 7; k++)
        slow += ttft[k] >= 30.0;
    cr_assert_leq(slow, 1, "%d of 7 jobs took >= 30 ms to their first token (ms: %.1f %.1f %.1f %.1f %.1f %.1f %.1f)",
                  slow, ttft[0], ttft[1], ttft[2], ttft[3], ttft[4], ttft[5], ttft[6]);
}

/* POSTs {"tokens":[ids]} to /detokenize and returns the content (caller frees). */
static char *detok(int port, struct json_object *ids)
{
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "tokens", json_object_get(ids));
    struct hx_http *c = hx_fetch(port, "POST", "/detokenize", NULL, json_object_to_json_string(req));
    json_object_put(req);
    cr_assert_eq(hx_http_status(c), 200, "%s", hx_http_body(c));
    char *out = strdup(hx_jstr(hx_http_json(c), "content"));
    hx_http_close(c);
    return out;
}

/* Strict UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
static bool utf8_ok(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s++;
        int n = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0 || (n == 1 && c < 0xC2))
            return false;
        unsigned cp = n == 0 ? c : c & (0x3Fu >> n);
        for (int k = 0; k < n; k++, s++) {
            if ((*s & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (*s & 0x3Fu);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
    }
    return true;
}

Test(execute, token_text_is_whole_utf8_characters)
{
    /* the mock prefers GPT-2's byte tokens 94..187 (bytes 0x7f..0xff): lone
     * continuation bytes and split characters; each event's text must still be
     * whole characters, held bytes going out with a later token */
    struct hx_proc *p = hx_start("--backend-opt", "vocab_lo=94", "--backend-opt", "vocab_hi=188", NULL);
    int port = hx_port(p);
    int held = 0;
    for (int k = 0; k < 4; k++) {
        char body[160];
        snprintf(body, sizeof body, "{\"job_id\":\"u8-%d\",\"prompt\":\"x\",\"max_tokens\":40,\"seed\":%d}", k, k);
        struct hx_stream s;
        run_job(port, NULL, body, &s);
        struct json_object *ids = json_object_new_array();
        for (int i = 0; i < s.n; i++) {
            if (strcmp(s.names[i], "token"))
                continue;
            const char *t = hx_jstr(s.data[i], "t");
            cr_assert(utf8_ok((const unsigned char *)t), "token %d text is not whole UTF-8", i);
            held += t[0] == '\0';
            json_object_array_add(ids, json_object_new_int64(hx_jint(s.data[i], "id")));
        }
        char text[16384];
        token_text(&s, text, sizeof text);
        char *want = detok(port, ids);
        cr_assert_str_eq(text, want, "the streamed text differs from /detokenize of the same ids");
        free(want);
        json_object_put(ids);
        hx_stream_fini(&s);
    }
    cr_assert_gt(held, 0, "no token's bytes were held back: the test proved nothing");
}

Test(execute, spm_stream_keeps_the_leading_space_of_generated_text)
{
    /* SPM pieces carry their space as a leading U+2581; the first generated
     * token continues the prompt, so "\u2581Paris" must stream as " Paris".
     * Reference: detok(prompt + generated) minus detok(prompt). */
    char model[4096];
    hx_data_path("vocab/ggml-vocab-llama-spm.gguf", model, sizeof model);
    struct hx_proc *p = hx_spawn(&(struct hx_spec){.model = model});
    int port = hx_port(p);
    struct hx_http *t = hx_fetch(port, "POST", "/tokenize", NULL,
                                 "{\"content\":\"The capital of France is\",\"add_special\":true}");
    struct json_object *prompt_ids = json_object_get(json_object_object_get(hx_http_json(t), "tokens"));
    cr_assert_not_null(prompt_ids, "%s", hx_http_body(t));
    hx_http_close(t);
    char *prompt_text = detok(port, prompt_ids);
    int spaced = 0;
    for (int k = 0; k < 6; k++) {
        char body[200];
        snprintf(body, sizeof body,
                 "{\"job_id\":\"spm-%d\",\"prompt\":\"The capital of France is\",\"max_tokens\":4,\"seed\":%d}", k,
                 k + 1);
        struct hx_stream s;
        run_job(port, NULL, body, &s);
        cr_assert_eq(hx_jint(s.data[0], "tokens_in"), (int64_t)json_object_array_length(prompt_ids));
        struct json_object *all = json_object_new_array();
        for (size_t i = 0; i < json_object_array_length(prompt_ids); i++)
            json_object_array_add(all, json_object_get(json_object_array_get_idx(prompt_ids, i)));
        for (int i = 0; i < s.n; i++)
            if (!strcmp(s.names[i], "token"))
                json_object_array_add(all, json_object_new_int64(hx_jint(s.data[i], "id")));
        char *full = detok(port, all);
        json_object_put(all);
        cr_assert_eq(strncmp(full, prompt_text, strlen(prompt_text)), 0, "'%s' does not start with '%s'", full,
                     prompt_text);
        const char *want = full + strlen(prompt_text);
        char got[4096];
        token_text(&s, got, sizeof got);
        cr_assert_str_eq(got, want, "seed %d: streamed '%s', the continuation is '%s'", k + 1, got, want);
        spaced += want[0] == ' ';
        free(full);
        hx_stream_fini(&s);
    }
    cr_assert_gt(spaced, 0, "no job began with a spaced piece: the test proved nothing");
    free(prompt_text);
    json_object_put(prompt_ids);
}

Test(execute, slow_reader_pauses_the_job_and_loses_nothing)
{
    /* ~7 MB of events (more than the kernel's socket buffers hold) against a
     * client that reads nothing for a while: the server pauses the job past
     * its backpressure mark, resumes it as the output drains, and every token
     * arrives once, in order. A 1,024-token vocab keeps the mock fast. */
    char model[4096];
    hx_data_path("integration/ggml-vocab-gpt-2-1024.gguf", model, sizeof model);
    struct hx_proc *p = hx_spawn(&(struct hx_spec){
        .model = model,
        .args = {"--max-tokens-limit", "100000", "--ctx-size", "110000", "--log-level", "debug", "--backend-opt",
                 "delay_ms=0", NULL}});
    int port = hx_port(p);
    hx_set_rcvbuf(4096);
    struct hx_http *c = hx_execute(port, NULL,
                                   "{\"job_id\":\"slow\",\"prompt\":\"x\",\"max_tokens\":100000,\"temperature\":0}");
    hx_set_rcvbuf(0);
    cr_assert_eq(hx_http_status(c), 200);
    struct json_object *line = hx_wait_log(p, "backpressure", "job_id", "slow", 10000);
    cr_assert_not_null(line, "the job was never paused for a client that does not read");
    json_object_put(line);
    /* paused, it does not run ahead: /health still answers quickly meanwhile */
    double t0 = hx_now_ms();
    struct json_object *h = hx_health(port);
    cr_assert_lt(hx_now_ms() - t0, 50.0);
    json_object_put(h);
    int next = 0;
    bool ended = false;
    for (;;) {
        struct hx_sse_event ev;
        int r = hx_sse_next(c, &ev, 10000);
        cr_assert_neq(r, -1, "stream stalled after %d tokens", next);
        if (r == 0)
            break;
        if (!strcmp(ev.event, "token")) {
            cr_assert_eq(hx_jint(ev.json, "i"), next, "token index");
            next++;
        } else if (!strcmp(ev.event, "end")) {
            cr_assert_eq(hx_jint(ev.json, "tokens_out"), 100000);
            ended = true;
        } else {
            cr_assert(!strcmp(ev.event, "started") || !strcmp(ev.event, "metrics"), "%s: %s", ev.event, ev.data);
        }
        hx_sse_event_fini(&ev);
    }
    cr_assert(ended, "no end event");
    cr_assert_eq(next, 100000);
    hx_http_close(c);
}

/* ---- validation ------------------------------------------------------------------ */

struct vcase {
    char body[160];
    char field[24];
    char constraint[32];
    char message[128];
};

static char long_id[300];

static struct vcase vcases[] = {
    {"{\"job_id\":\"\",\"prompt\":\"x\"}", "job_id", "non_empty", "job_id must not be empty"},
    {"{\"job_id\":\"a\",\"prompt\":\"\"}", "prompt", "length(1..=32768)",
     "prompt must be 1 to 32768 characters long (got 0)"},
    {"{\"job_id\":\"a\",\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens", "range(1..=2048)",
     "max_tokens must be at least 1 (got 0)"},
    {"{\"job_id\":\"a\",\"prompt\":\"x\",\"max_tokens\":2049}", "max_tokens", "range(1..=2048)",
     "max_tokens must be at most 2048 (got 2049)"},
    {"{\"job_id\":\"a\",\"prompt\":\"x\",\"temperature\":2.5}", "temperature", "range(0.0..=2.0)",
     "temperature must be at most 2.0 (got 2.5)"},
    {"{\"job_id\":\"a\",\"prompt\":\"x\",\"temperature\":-0.5}", "temperature", "range(0.0..=2.0)",
     "temperature must be at least 0.0 (got -0.5)"},
    {"{\"job_id\":\"a\",\"prompt\":\"x\",\"top_p\":1.5}", "top_p", "range(0.0..=1.0)",
     "top_p must be at most 1.0 (got 1.5)"},
    {"{\"job_id\":\"a\",\"prompt\":\"x\",\"min_p\":2}", "min_p", "range(0.0..=1.0)",
     "min_p must be at most 1.0 (got 2)"},
    {"{\"job_id\":\"a\",\"prompt\":\"x\",\"repetition_penalty\":2.5}", "repetition_penalty", "range(0.0..=2.0)",
     "repetition_penalty must be at most 2.0 (got 2.5)"},
    {"{\"job_id\":\"a\",\"prompt\":\"x\",\"top_k\":-1}", "top_k", "range(0..=50257)",
     "top_k must be at least 0 (got -1)"},
    {"{\"job_id\":\"a\",\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop", "max_count(4)",
     "stop must have at most 4 entries (got 5)"},
};

ParameterizedTestParameters(execute, validation)
{
    return cr_make_param_array(struct vcase, vcases, sizeof vcases / sizeof vcases[0]);
}

/* Posts body and checks the single validation error. */
static void expect_field_error(int port, const char *body, const char *field, const char *constraint,
                               const char *message)
{
    struct hx_http *c = hx_fetch(port, "POST", "/execute", NULL, body);
    struct json_object *e = error_of(c, 400, "INVALID_REQUEST");
    cr_assert_not(retriable(e));
    struct json_object *errs;
    cr_assert(json_object_object_get_ex(hx_http_json(c), "errors", &errs), "no errors list: %s", hx_http_body(c));
    cr_assert_eq(json_object_array_length(errs), 1, "%s", hx_http_body(c));
    struct json_object *fe = json_object_array_get_idx(errs, 0);
    cr_assert_str_eq(hx_jstr(fe, "field"), field, "%s", hx_http_body(c));
    cr_assert_str_eq(hx_jstr(fe, "constraint"), constraint, "%s", hx_http_body(c));
    cr_assert_str_eq(hx_jstr(fe, "message"), message, "%s", hx_http_body(c));
    cr_assert_str_eq(hx_jstr(e, "message"), message, "%s", hx_http_body(c));
    hx_http_close(c);
}

ParameterizedTest(struct vcase *v, execute, validation)
{
    struct hx_proc *p = hx_start(NULL);
    expect_field_error(hx_port(p), v->body, v->field, v->constraint, v->message);
}

Test(execute, validation_of_long_values)
{
    struct hx_proc *p = hx_start(NULL);
    int port = hx_port(p);
    /* job_id of 257 bytes */
    memset(long_id, 'j', 257);
    long_id[257] = '\0';
    char body[1024];
    snprintf(body, sizeof body, "{\"job_id\":\"%s\",\"prompt\":\"x\"}", long_id);
    expect_field_error(port, body, "job_id", "max_length(256)", "job_id must be at most 256 bytes (got 257)");
    /* a stop string of 101 bytes */
    char stop[102];
    memset(stop, 's', 101);
    stop[101] = '\0';
    snprintf(body, sizeof body, "{\"job_id\":\"a\",\"prompt\":\"x\",\"stop\":[\"%s\"]}", stop);
    expect_field_error(port, body, "stop[0]", "max_length(100)", "stop[0] must be at most 100 bytes (got 101)");
    /* a prompt of 32769 characters (two-byte characters: counted as characters, not bytes) */
    size_t n = 32769;
    char *big = malloc(n * 2 + 64);
    cr_assert_not_null(big);
    strcpy(big, "{\"job_id\":\"a\",\"prompt\":\"");
    char *q = big + strlen(big);
    for (size_t i = 0; i < n; i++) {
        *q++ = (char)0xc3;
        *q++ = (char)0xa9;   /* é */
    }
    strcpy(q, "\"}");
    expect_field_error(port, big, "prompt", "length(1..=32768)",
                       "prompt must be 1 to 32768 characters long (got 32769)");
    /* exactly 32768 two-byte characters is accepted (prompt may then be too long for the context,
     * which is a 400 of its own, but not this constraint) */
    free(big);
}

Test(execute, validation_collects_every_field_in_table_order)
{
    struct hx_proc *p = hx_start(NULL);
    struct hx_http *c = hx_fetch(hx_port(p), "POST", "/execute", NULL,
                                 "{\"stop\":[\"\"],\"top_p\":-1,\"max_tokens\":5000,\"prompt\":\"\",\"job_id\":\"\","
                                 "\"temperature\":9,\"unknown_field\":1}");
    error_of(c, 400, "INVALID_REQUEST");
    struct json_object *errs;
    cr_assert(json_object_object_get_ex(hx_http_json(c), "errors", &errs));
    const char *want[] = {"job_id", "prompt", "max_tokens", "temperature", "top_p", "stop[0]"};
    cr_assert_eq(json_object_array_length(errs), 6, "%s", hx_http_body(c));
    for (size_t i = 0; i < 6; i++) {
        struct json_object *fe = json_object_array_get_idx(errs, i);
        cr_assert_str_eq(hx_jstr(fe, "field"), want[i], "error %zu: %s", i, hx_http_body(c));
        cr_assert_not_null(hx_jstr(fe, "constraint"));
        cr_assert_not_null(hx_jstr(fe, "message"));
    }
    hx_http_close(c);
}

Test(execute, max_tokens_limit_flag_sets_the_range)
{
    struct hx_proc *p = hx_start("--max-tokens-limit", "100", NULL);
    expect_field_error(hx_port(p), "{\"job_id\":\"a\",\"prompt\":\"x\",\"max_tokens\":101}", "max_tokens",
                       "range(1..=100)", "max_tokens must be at most 100 (got 101)");
    /* the default max_tokens is the limit (greedy: a sampled end-of-generation token, ~2% of
     * 100-token jobs at the default temperature, would end it sooner) */
    struct hx_stream s;
    run_job(hx_port(p), NULL, "{\"job_id\":\"d\",\"prompt\":\"x\",\"temperature\":0}", &s);
    int term = terminal_of(&s);
    cr_assert_str_eq(s.names[term], "end");
    cr_assert_eq(hx_jint(s.data[term], "tokens_out"), 100);
    hx_stream_fini(&s);
}

Test(execute, missing_and_mistyped_fields)
{
    struct hx_proc *p = hx_start(NULL);
    int port = hx_port(p);
    struct hx_http *c = hx_fetch(port, "POST", "/execute", NULL, "{\"job_id\":\"a\"}");
    error_of(c, 400, "INVALID_REQUEST");
    cr_assert(strstr(hx_http_body(c), "\"prompt\""), "%s", hx_http_body(c));
    hx_http_close(c);
    c = hx_fetch(port, "POST", "/execute", NULL, "{\"prompt\":\"x\"}");
    error_of(c, 400, "INVALID_REQUEST");
    cr_assert(strstr(hx_http_body(c), "\"job_id\""), "%s", hx_http_body(c));
    hx_http_close(c);
    c = hx_fetch(port, "POST", "/execute", NULL, "{\"job_id\":\"a\",\"prompt\":\"x\",\"max_tokens\":\"ten\"}");
    error_of(c, 400, "INVALID_REQUEST");
    cr_assert(strstr(hx_http_body(c), "\"max_tokens\""), "%s", hx_http_body(c));
    hx_http_close(c);
}

/* ---- HTTP errors ---------------------------------------------------------------------- */

Test(execute, malformed_json_is_400)
{
    struct hx_proc *p = hx_start(NULL);
    int port = hx_port(p);
    const char *bad[] = {"{\"job_id\":", "not json", "[1,2,3]", "", "{\"job_id\":\"a\",\"prompt\":\"x\"} trailing"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct hx_http *c = hx_fetch(port, "POST", "/execute", NULL, bad[i]);
        error_of(c, 400, "INVALID_REQUEST");
        hx_http_close(c);
    }
}

Test(execute, unknown_path_404_wrong_method_405)
{
    struct hx_proc *p = hx_start(NULL);
    int port = hx_port(p);
    struct hx_http *c = hx_fetch(port, "GET", "/nope", NULL, NULL);
    cr_assert_eq(hx_http_status(c), 404, "%s", hx_http_body(c));
    hx_http_close(c);
    c = hx_fetch(port, "POST", "/execute/extra", NULL, "{}");
    cr_assert_eq(hx_http_status(c), 404, "%s", hx_http_body(c));
    hx_http_close(c);
    const char *wrong[][2] = {{"GET", "/execute"}, {"POST", "/health"}, {"PUT", "/cancel"}, {"DELETE", "/metrics"},
                              {"GET", "/shutdown"}, {"GET", "/tokenize"}};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        c = hx_fetch(port, wrong[i][0], wrong[i][1], NULL, NULL);
        cr_assert_eq(hx_http_status(c), 405, "%s %s: %d %s", wrong[i][0], wrong[i][1], hx_http_status(c),
                     hx_http_body(c));
        hx_http_close(c);
    }
}

Test(execute, body_over_1_mib_is_413)
{
    struct hx_proc *p = hx_start(NULL);
    size_t n = (1u << 20) + 100;
    char *big = malloc(n + 1);
    cr_assert_not_null(big);
    memset(big, ' ', n);
    memcpy(big, "{\"job_id\":\"a\",\"prompt\":\"x\"}", 27);
    big[n] = '\0';
    struct hx_http *c = hx_http_open(hx_port(p), "POST", "/execute", NULL, big, n);
    cr_assert_not_null(c, "no response to an oversized body");
    cr_assert_eq(hx_http_status(c), 413);
    hx_http_close(c);
    free(big);
    /* the server still serves */
    struct json_object *h = hx_health(hx_port(p));
    cr_assert_str_eq(hx_jstr(h, "status"), "healthy");
    json_object_put(h);
}

Test(execute, duplicate_live_job_id_is_409)
{
    struct hx_proc *p = hx_start("--backend-opt", "delay_ms=20", NULL);
    int port = hx_port(p);
    struct hx_http *first = hx_execute(port, NULL, "{\"job_id\":\"dup\",\"prompt\":\"x\",\"max_tokens\":500,\"temperature\":0}");
    wait_started(first);
    struct hx_http *c = hx_fetch(port, "POST", "/execute", NULL, "{\"job_id\":\"dup\",\"prompt\":\"y\"}");
    struct json_object *e = error_of(c, 409, "DUPLICATE_JOB");
    cr_assert_not(retriable(e));
    hx_http_close(c);
    hx_http_close(hx_fetch(port, "POST", "/cancel/dup", NULL, NULL));
    struct hx_stream s;
    cr_assert_eq(hx_stream_collect(first, &s, 5000), 0);
    cr_assert_str_eq(s.names[s.n - 1], "error");
    cr_assert_str_eq(hx_jstr(s.data[s.n - 1], "code"), "CANCELLED");
    hx_stream_fini(&s);
    hx_http_close(first);
    /* once the job ended its id is free again */
    struct hx_stream s2;
    run_job(port, NULL, "{\"job_id\":\"dup\",\"prompt\":\"x\",\"max_tokens\":2}", &s2);
    cr_assert_str_eq(s2.names[terminal_of(&s2)], "end");
    hx_stream_fini(&s2);
}

Test(execute, full_queue_is_503_busy_with_retry_after)
{
    struct hx_proc *p = hx_start("--max-jobs", "1", "--queue-depth", "0", "--backend-opt", "delay_ms=20", NULL);
    int port = hx_port(p);
    struct hx_http *first = hx_execute(port, NULL, "{\"job_id\":\"busy-1\",\"prompt\":\"x\",\"max_tokens\":500,\"temperature\":0}");
    wait_started(first);
    struct hx_http *c = hx_fetch(port, "POST", "/execute", NULL, "{\"job_id\":\"busy-2\",\"prompt\":\"y\"}");
    struct json_object *e = error_of(c, 503, "BUSY");
    cr_assert(retriable(e), "BUSY must be retriable");
    const char *ra = hx_http_header(c, "Retry-After");
    cr_assert_not_null(ra, "no Retry-After");
    cr_assert_gt(atoi(ra), 0, "Retry-After: %s", ra);
    hx_http_close(c);
    hx_http_close(first);   /* disconnect cancels; the slot frees */
    double end = hx_now_ms() + 3000;
    int status = 0;
    while (hx_now_ms() < end) {
        struct hx_http *d = hx_execute(port, NULL, "{\"job_id\":\"busy-3\",\"prompt\":\"x\",\"max_tokens\":1}");
        status = hx_http_status(d);
        hx_http_close(d);
        if (status == 200)
            break;
        usleep(20000);
    }
    cr_assert_eq(status, 200, "the slot did not free after the client left");
}

/* ---- auth and correlation ------------------------------------------------------------- */

Test(execute, bearer_token_enforced_but_health)
{
    char path[] = "/tmp/aarmd-token-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "s3cret-token\n", 13), 13);
    close(fd);
    struct hx_proc *p = hx_start("--api-token-file", path, NULL);
    int port = hx_port(p);
    const char *job = "{\"job_id\":\"auth\",\"prompt\":\"x\",\"max_tokens\":1}";
    struct hx_http *c = hx_fetch(port, "POST", "/execute", NULL, job);
    error_of(c, 401, "UNAUTHORIZED");
    hx_http_close(c);
    c = hx_fetch(port, "POST", "/execute", "Authorization: Bearer wrong\r\n", job);
    error_of(c, 401, "UNAUTHORIZED");
    hx_http_close(c);
    c = hx_fetch(port, "GET", "/metrics", NULL, NULL);
    error_of(c, 401, "UNAUTHORIZED");
    hx_http_close(c);
    c = hx_fetch(port, "POST", "/tokenize", NULL, "{\"content\":\"x\"}");
    error_of(c, 401, "UNAUTHORIZED");
    hx_http_close(c);
    c = hx_fetch(port, "POST", "/cancel/x", NULL, NULL);
    error_of(c, 401, "UNAUTHORIZED");
    hx_http_close(c);
    c = hx_fetch(port, "GET", "/health", NULL, NULL);
    cr_assert_eq(hx_http_status(c), 200, "/health must not need the token");
    hx_http_close(c);
    c = hx_fetch(port, "GET", "/metrics", "Authorization: Bearer s3cret-token\r\n", NULL);
    cr_assert_eq(hx_http_status(c), 200);
    hx_http_close(c);
    struct hx_stream s;
    run_job(port, "Authorization: Bearer s3cret-token\r\n", job, &s);
    cr_assert_str_eq(s.names[terminal_of(&s)], "end");
    hx_stream_fini(&s);
    unlink(path);
}

Test(execute, correlation_id_echoed_or_generated)
{
    struct hx_proc *p = hx_start(NULL);
    int port = hx_port(p);
    struct hx_http *c = hx_execute(port, "X-Correlation-Id: corr-abc.123\r\n",
                                   "{\"job_id\":\"corr\",\"prompt\":\"x\",\"max_tokens\":2}");
    cr_assert_str_eq(hx_http_header(c, "X-Correlation-Id"), "corr-abc.123");
    struct hx_stream s;
    cr_assert_eq(hx_stream_collect(c, &s, 5000), 0);
    hx_stream_fini(&s);
    hx_http_close(c);
    /* the job's log lines carry it */
    struct json_object *line = hx_wait_log(p, "execute_start", "correlation_id", "corr-abc.123", 2000);
    cr_assert_not_null(line, "no execute_start log line with the correlation id");
    cr_assert_str_eq(hx_jstr(line, "job_id"), "corr");
    json_object_put(line);
    line = hx_wait_log(p, "execute_end", "correlation_id", "corr-abc.123", 2000);
    cr_assert_not_null(line, "no execute_end log line with the correlation id");
    json_object_put(line);

    /* absent or malformed: a fresh UUID v4, also on errors */
    regex_t re;
    cr_assert_eq(regcomp(&re, "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", REG_EXTENDED),
                 0);
    const char *hdrs[] = {NULL, "X-Correlation-Id: bad id with spaces\r\n", "X-Correlation-Id: \r\n"};
    char seen[3][64];
    for (int i = 0; i < 3; i++) {
        c = hx_fetch(port, "GET", i == 2 ? "/nope" : "/health", hdrs[i], NULL);
        const char *id = hx_http_header(c, "X-Correlation-Id");
        cr_assert_not_null(id, "no X-Correlation-Id on response %d", i);
        cr_assert_eq(regexec(&re, id, 0, NULL, 0), 0, "'%s' is not a UUID v4", id);
        snprintf(seen[i], sizeof seen[i], "%s", id);
        hx_http_close(c);
    }
    cr_assert_str_neq(seen[0], seen[1]);
    regfree(&re);
}

/* ---- tokenize / detokenize ------------------------------------------------------------ */

Test(execute, tokenize_detokenize_round_trip)
{
    struct hx_proc *p = hx_start(NULL);
    int port = hx_port(p);
    const char *text = "Hello world, caf\u00e9 \u2713 \xf0\x9f\x98\x80 123";
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "content", json_object_new_string(text));
    struct hx_http *c = hx_fetch(port, "POST", "/tokenize", NULL, json_object_to_json_string(req));
    json_object_put(req);
    cr_assert_eq(hx_http_status(c), 200, "%s", hx_http_body(c));
    struct json_object *toks;
    cr_assert(json_object_object_get_ex(hx_http_json(c), "tokens", &toks), "%s", hx_http_body(c));
    cr_assert_gt(json_object_array_length(toks), 5);
    struct json_object *dreq = json_object_new_object();
    json_object_object_add(dreq, "tokens", json_object_get(toks));
    struct hx_http *d = hx_fetch(port, "POST", "/detokenize", NULL, json_object_to_json_string(dreq));
    json_object_put(dreq);
    cr_assert_eq(hx_http_status(d), 200, "%s", hx_http_body(d));
    cr_assert_str_eq(hx_jstr(hx_http_json(d), "content"), text);
    hx_http_close(c);
    hx_http_close(d);

    /* bad inputs */
    const char *bad_tok[] = {"{}", "{\"content\":5}", "nope", "{\"content\":\"x\",\"add_special\":\"yes\"}"};
    for (size_t i = 0; i < sizeof bad_tok / sizeof bad_tok[0]; i++) {
        c = hx_fetch(port, "POST", "/tokenize", NULL, bad_tok[i]);
        error_of(c, 400, "INVALID_REQUEST");
        hx_http_close(c);
    }
    c = hx_fetch(port, "POST", "/detokenize", NULL, "{\"tokens\":[1,99999999]}");
    struct json_object *e = error_of(c, 400, "INVALID_REQUEST");
    (void)e;
    cr_assert(strstr(hx_http_body(c), "range(0..=50256)"), "%s", hx_http_body(c));
    hx_http_close(c);
    const char *bad_det[] = {"{}", "{\"tokens\":\"1,2\"}", "{\"tokens\":[1,\"a\"]}", "{\"tokens\":[-1]}"};
    for (size_t i = 0; i < sizeof bad_det / sizeof bad_det[0]; i++) {
        c = hx_fetch(port, "POST", "/detokenize", NULL, bad_det[i]);
        error_of(c, 400, "INVALID_REQUEST");
        hx_http_close(c);
    }
}
