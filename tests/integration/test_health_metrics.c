/* test_health_metrics.c — GET /health (every field, values from the model
 * file and flags, fast answers while jobs decode) and GET /metrics (counters by
 * outcome, token counters, histograms, worker_id on every series), plus the
 * stream's own `metrics` events. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "integration/harness.h"

static void fini(void) { hx_kill_all(); }

TestSuite(health_metrics, .fini = fini, .timeout = 60);

static struct json_object *field(struct json_object *o, const char *k, enum json_type t)
{
    struct json_object *v;
    cr_assert(json_object_object_get_ex(o, k, &v), "/health has no %s: %s", k, json_object_to_json_string(o));
    cr_assert(json_object_is_type(v, t), "/health %s has type %s", k, json_type_to_name(json_object_get_type(v)));
    return v;
}

/* Checks every /health field's presence and type; returns nothing, asserts. */
static void check_health_shape(struct json_object *h)
{
    const char *strings[] = {"status", "worker_id", "model", "model_ref", "quant_kind", "memory_architecture",
                             "worker_type", "backend", "tokenizer_kind", "protocol"};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        field(h, strings[i], json_type_string);
    const char *ints[] = {"vram_bytes", "vram_bytes_used", "memory_bytes", "device", "vocab_size",
                          "context_length", "jobs_running", "jobs_queued", "uptime_seconds"};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        cr_assert_geq(json_object_get_int64(field(h, ints[i], json_type_int)), 0, "%s", ints[i]);
    field(h, "resident", json_type_boolean);
    struct json_object *caps = field(h, "capabilities", json_type_array);
    cr_assert_eq(json_object_array_length(caps), 1);
    cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(caps, 0)), "text-gen");
    cr_assert_str_eq(hx_jstr(h, "protocol"), "sse");
    cr_assert_eq(hx_jint(h, "memory_bytes"), hx_jint(h, "vram_bytes"));
}

Test(health_metrics, health_fields_from_flags_and_vocab_file)
{
    char model[4096];
    hx_data_path("vocab/ggml-vocab-gpt-2.gguf", model, sizeof model);
    struct hx_proc *p = hx_start("--worker-id", "worker-hm-1", "--ctx-size", "512", "--device", "0",
                                 "--backend-opt", "memory_bytes=123456", NULL);
    struct hx_http *c = hx_fetch(hx_port(p), "GET", "/health", NULL, NULL);
    cr_assert_eq(hx_http_status(c), 200);
    const char *ct = hx_http_header(c, "Content-Type");
    cr_assert(ct && strstr(ct, "application/json"), "Content-Type %s", ct ? ct : "(none)");
    struct json_object *h = hx_http_json(c);
    cr_assert_not_null(h, "%s", hx_http_body(c));
    check_health_shape(h);
    cr_assert_str_eq(hx_jstr(h, "status"), "healthy");
    cr_assert_str_eq(hx_jstr(h, "worker_id"), "worker-hm-1");
    cr_assert_str_eq(hx_jstr(h, "model_ref"), model);
    cr_assert_str_eq(hx_jstr(h, "model"), "gpt-2");
    cr_assert_str_eq(hx_jstr(h, "memory_architecture"), "mock");
    cr_assert_str_eq(hx_jstr(h, "worker_type"), "mock");
    cr_assert_str_eq(hx_jstr(h, "backend"), "mock");
    cr_assert_str_eq(hx_jstr(h, "tokenizer_kind"), "gguf-bpe");
    cr_assert_eq(hx_jint(h, "vocab_size"), 50257);
    cr_assert_eq(hx_jint(h, "context_length"), 512);
    cr_assert_eq(hx_jint(h, "device"), 0);
    cr_assert_eq(hx_jint(h, "vram_bytes"), 123456, "vram_bytes is the backend's model_bytes");
    cr_assert_eq(hx_jint(h, "jobs_running"), 0);
    cr_assert_eq(hx_jint(h, "jobs_queued"), 0);
    hx_http_close(c);

    /* the started event names the same model */
    struct hx_http *s = hx_execute(hx_port(p), NULL, "{\"job_id\":\"m\",\"prompt\":\"x\",\"max_tokens\":1}");
    struct hx_sse_event ev;
    cr_assert_eq(hx_sse_next(s, &ev, 5000), 1);
    cr_assert_str_eq(hx_jstr(ev.json, "model"), "gpt-2");
    hx_sse_event_fini(&ev);
    hx_http_close(s);
}

/* model file, expected quant_kind, tokenizer_kind, vocab_size */
static void check_model(const char *file, const char *quant, const char *tok_kind, int64_t n_vocab)
{
    char model[4096];
    hx_model_path(file, model, sizeof model);
    if (access(model, R_OK) != 0)
        cr_skip_test("%s is not here (tools/fetch-models.sh)", model);
    struct hx_proc *p = hx_spawn(&(struct hx_spec){.model = model});
    struct json_object *h = hx_health(hx_port(p));
    check_health_shape(h);
    cr_assert_str_eq(hx_jstr(h, "quant_kind"), quant, "%s", json_object_to_json_string(h));
    cr_assert_str_eq(hx_jstr(h, "tokenizer_kind"), tok_kind);
    cr_assert_eq(hx_jint(h, "vocab_size"), n_vocab);
    cr_assert_str_eq(hx_jstr(h, "model_ref"), model);
    cr_assert_gt(hx_jint(h, "context_length"), 0);
    json_object_put(h);
    cr_assert_eq(hx_stop(p, 8000), 0);
}

Test(health_metrics, health_of_real_model_files)
{
    check_model("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1", "gguf-bpe", 49152);
    check_model("gemma-3-270m-q4_k_m.gguf", "Q4_K_M", "gguf-spm", 262144);
}

Test(health_metrics, health_answers_fast_while_jobs_decode)
{
    struct hx_proc *p = hx_start("--max-jobs", "4", "--backend-opt", "delay_ms=1", NULL);
    int port = hx_port(p);
    struct hx_http *jobs[4];
    for (int i = 0; i < 4; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"job_id\":\"busy-%d\",\"prompt\":\"x\",\"max_tokens\":2048,\"temperature\":0}", i);
        jobs[i] = hx_execute(port, NULL, body);
        cr_assert_eq(hx_http_status(jobs[i]), 200);
    }
    cr_assert_eq(hx_wait_health(port, "jobs_running", 4, 2000), 4, "4 jobs do not show as running");
    double worst = 0;
    for (int i = 0; i < 30; i++) {
        double t0 = hx_now_ms();
        struct hx_http *c = hx_fetch(port, "GET", "/health", NULL, NULL);
        double ms = hx_now_ms() - t0;
        cr_assert_eq(hx_http_status(c), 200);
        hx_http_close(c);
        if (ms > worst)
            worst = ms;
        usleep(10000);
    }
    cr_assert_lt(worst, 50.0, "/health took %.1f ms while 4 jobs decode", worst);
    /* /metrics too */
    double t0 = hx_now_ms();
    hx_http_close(hx_fetch(port, "GET", "/metrics", NULL, NULL));
    cr_assert_lt(hx_now_ms() - t0, 50.0, "/metrics took %.1f ms while 4 jobs decode", hx_now_ms() - t0);
    for (int i = 0; i < 4; i++)
        hx_http_close(jobs[i]);
    cr_assert_eq(hx_wait_health(port, "jobs_running", 0, 2000), 0);
}

/* Runs a job to its end; returns the terminal event (caller puts), tokens_in and tokens seen. */
static struct json_object *run(int port, const char *body, int64_t *tokens_in, int *n_tokens)
{
    struct hx_http *c = hx_execute(port, NULL, body);
    struct hx_stream s;
    cr_assert_eq(hx_stream_collect(c, &s, 10000), 0);
    hx_http_close(c);
    cr_assert_geq(s.n, 2);
    cr_assert_str_eq(s.names[0], "started");
    *tokens_in = hx_jint(s.data[0], "tokens_in");
    *n_tokens = 0;
    for (int i = 0; i < s.n; i++)
        if (!strcmp(s.names[i], "token"))
            (*n_tokens)++;
    struct json_object *t = json_object_get(s.data[s.n - 1]);
    hx_stream_fini(&s);
    return t;
}

static char *metrics_text(int port)
{
    struct hx_http *c = hx_fetch(port, "GET", "/metrics", NULL, NULL);
    cr_assert_eq(hx_http_status(c), 200);
    const char *ct = hx_http_header(c, "Content-Type");
    cr_assert(ct && strstr(ct, "text/plain"), "Content-Type %s", ct ? ct : "(none)");
    char *t = strdup(hx_http_body(c));
    hx_http_close(c);
    return t;
}

Test(health_metrics, metrics_counters_move_by_outcome)
{
    struct hx_proc *p = hx_start("--worker-id", "worker-m", "--inference-timeout", "1", "--backend-opt",
                                 "delay_ms=5", NULL);
    int port = hx_port(p);
    char *m0 = metrics_text(port);
    const char *series[] = {"worker_requests_total", "worker_tokens_in_total", "worker_tokens_generated_total",
                            "worker_inference_duration_ms_count", "worker_time_to_first_token_ms_count",
                            "worker_jobs_running", "worker_jobs_queued", "worker_vram_bytes",
                            "worker_uptime_seconds"};
    for (size_t i = 0; i < sizeof series / sizeof series[0]; i++)
        cr_assert_geq(hx_metric(m0, series[i], "worker_id=\"worker-m\""), 0, "no %s series with worker_id:\n%s",
                      series[i], m0);
    /* every sample line carries the worker id */
    for (const char *s = m0; *s;) {
        const char *eol = strchr(s, '\n');
        size_t len = eol ? (size_t)(eol - s) : strlen(s);
        if (len && *s != '#')
            cr_assert(memmem(s, len, "worker_id=\"worker-m\"", 20), "series without worker_id: %.*s", (int)len, s);
        s = eol ? eol + 1 : s + len;
    }
    const char *outcomes[] = {"success", "error", "cancelled", "timeout"};
    double before[4];
    for (int i = 0; i < 4; i++) {
        char l[64];
        snprintf(l, sizeof l, "outcome=\"%s\"", outcomes[i]);
        before[i] = hx_metric(m0, "worker_requests_total", l);
        cr_assert_geq(before[i], 0, "no worker_requests_total{%s}", l);
    }
    double gen0 = hx_metric(m0, "worker_tokens_generated_total", NULL);
    double in0 = hx_metric(m0, "worker_tokens_in_total", NULL);
    double dur0 = hx_metric(m0, "worker_inference_duration_ms_count", NULL);
    double ttft0 = hx_metric(m0, "worker_time_to_first_token_ms_count", NULL);

    /* one success */
    int64_t tin_total = 0, tin;
    int ntok_total = 0, ntok;
    struct json_object *t = run(port, "{\"job_id\":\"ok\",\"prompt\":\"Hello there\",\"max_tokens\":5,\"temperature\":0}", &tin, &ntok);
    cr_assert_str_eq(hx_jstr(t, "stop_reason"), "MAX_TOKENS");
    json_object_put(t);
    tin_total += tin;
    ntok_total += ntok;
    /* one timeout: 1 s at 5 ms a token */
    t = run(port, "{\"job_id\":\"slow\",\"prompt\":\"x\",\"max_tokens\":2000,\"temperature\":0}", &tin, &ntok);
    cr_assert_str_eq(hx_jstr(t, "code"), "INFERENCE_TIMEOUT", "%s", json_object_to_json_string(t));
    cr_assert(json_object_get_boolean(json_object_object_get(t, "retriable")), "INFERENCE_TIMEOUT is retriable");
    json_object_put(t);
    tin_total += tin;
    ntok_total += ntok;
    /* one cancelled */
    struct hx_http *c = hx_execute(port, NULL, "{\"job_id\":\"cx\",\"prompt\":\"x\",\"max_tokens\":2000,\"temperature\":0}");
    struct hx_sse_event ev;
    cr_assert_eq(hx_sse_next(c, &ev, 5000), 1);
    tin_total += hx_jint(ev.json, "tokens_in");
    hx_sse_event_fini(&ev);
    hx_http_close(hx_fetch(port, "POST", "/cancel/cx", NULL, NULL));
    struct hx_stream s;
    cr_assert_eq(hx_stream_collect(c, &s, 5000), 0);
    for (int i = 0; i < s.n; i++)
        ntok_total += !strcmp(s.names[i], "token");
    cr_assert_str_eq(hx_jstr(s.data[s.n - 1], "code"), "CANCELLED");
    hx_stream_fini(&s);
    hx_http_close(c);

    /* counters are updated when jobs end; allow the 100 ms refresh */
    char *m1 = NULL;
    double want_success = before[0] + 1, got = -1;
    for (double t0 = hx_now_ms(); hx_now_ms() - t0 < 2000;) {
        free(m1);
        m1 = metrics_text(port);
        got = hx_metric(m1, "worker_requests_total", "outcome=\"cancelled\"");
        if (got == before[2] + 1)
            break;
        usleep(20000);
    }
    cr_assert_eq(hx_metric(m1, "worker_requests_total", "outcome=\"success\""), want_success, "%s", m1);
    cr_assert_eq(hx_metric(m1, "worker_requests_total", "outcome=\"timeout\""), before[3] + 1, "%s", m1);
    cr_assert_eq(hx_metric(m1, "worker_requests_total", "outcome=\"cancelled\""), before[2] + 1, "%s", m1);
    cr_assert_eq(hx_metric(m1, "worker_requests_total", "outcome=\"error\""), before[1], "%s", m1);
    cr_assert_eq(hx_metric(m1, "worker_tokens_in_total", NULL), in0 + (double)tin_total, "%s", m1);
    double gen1 = hx_metric(m1, "worker_tokens_generated_total", NULL);
    cr_assert_geq(gen1, gen0 + ntok_total, "generated %g -> %g, %d tokens streamed", gen0, gen1, ntok_total);
    cr_assert_leq(gen1, gen0 + ntok_total + 4, "generated %g -> %g, %d tokens streamed", gen0, gen1, ntok_total);
    cr_assert_gt(hx_metric(m1, "worker_inference_duration_ms_count", NULL), dur0, "%s", m1);
    cr_assert_gt(hx_metric(m1, "worker_time_to_first_token_ms_count", NULL), ttft0, "%s", m1);
    cr_assert_geq(hx_metric(m1, "worker_inference_duration_ms_bucket", "le=\"+Inf\""), 1, "%s", m1);
    cr_assert_geq(hx_metric(m1, "worker_time_to_first_token_ms_bucket", "le=\"+Inf\""), 1, "%s", m1);
    free(m0);
    free(m1);
}

Test(health_metrics, metrics_events_at_most_every_500ms)
{
    struct hx_proc *p = hx_start("--backend-opt", "delay_ms=5", NULL);
    struct hx_http *c = hx_execute(hx_port(p), NULL, "{\"job_id\":\"me\",\"prompt\":\"x\",\"max_tokens\":260,\"temperature\":0}");
    double last = -1, first_token = -1;
    int n_metrics = 0;
    uint64_t prev_out = 0;
    for (;;) {
        struct hx_sse_event ev;
        int r = hx_sse_next(c, &ev, 10000);
        cr_assert_neq(r, -1, "stream stalled");
        if (r == 0)
            break;
        double now = hx_now_ms();
        if (!strcmp(ev.event, "token") && first_token < 0)
            first_token = now;
        if (!strcmp(ev.event, "metrics")) {
            cr_assert_str_eq(hx_jstr(ev.json, "job_id"), "me");
            const char *keys[] = {"tokens_out", "decode_time_ms", "tokens_per_sec", "memory_bytes"};
            for (int k = 0; k < 4; k++)
                cr_assert(hx_jhas(ev.json, keys[k]), "metrics without %s: %s", keys[k], ev.data);
            uint64_t out = (uint64_t)hx_jint(ev.json, "tokens_out");
            cr_assert_geq(out, prev_out);
            prev_out = out;
            if (last >= 0)
                cr_assert_geq(now - last, 400.0, "metrics events %.0f ms apart", now - last);
            last = now;
            n_metrics++;
        }
        hx_sse_event_fini(&ev);
    }
    cr_assert_geq(n_metrics, 1, "a 1.3 s job sent no metrics event");
    hx_http_close(c);
}
