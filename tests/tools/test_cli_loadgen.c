/* test_cli_loadgen.c — `aarmd-cli loadgen` (tools/cli_loadgen.c) called in
 * process: usage errors exit 2 with a message; against the real daemon with the
 * mock backend (KV paged and not), closed and open loop counts match the
 * flags, percentiles are ordered, prompt files cycle, --json is one object;
 * with a mock step of known length, the decode rates, --ramp and --warmup give
 * the numbers their definitions predict. */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_capture.h"
#include "integration/harness.h"

/* temporary files of the current test: removed by fini even when it fails */
static char tmp_paths[4][64];
static int n_tmp;

static void fini(void)
{
    hx_kill_all();
    for (int i = 0; i < n_tmp; i++)
        unlink(tmp_paths[i]);
    n_tmp = 0;
}

TestSuite(cli_loadgen, .fini = fini, .timeout = 60);

/* Runs `loadgen ARGS` (ARGS split on spaces) with stdout and stderr captured. */
static struct cli_run loadgen(const char *args)
{
    return cli_capture_str(aarmd_cli_loadgen, "loadgen", args, 0);
}

/* Same, for a run against a mock daemon whose counts are checked exactly:
 * greedy (--temperature 0) draws the mock's preferred token, never EOS, so
 * every request runs to --max-tokens. At the default temperature 1 about one
 * token in 100,000 is EOS (3 of 320,000 measured), which ends a stream early. */
static struct cli_run served(const char *args)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s --temperature 0", args);
    return loadgen(buf);
}

/* A temporary file holding `text`, removed when the test ends. */
static void write_tmp(char *path, const char *text)
{
    cr_assert_lt(n_tmp, 4);
    strcpy(path, "/tmp/aarmd-test-loadgen-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    snprintf(tmp_paths[n_tmp++], sizeof tmp_paths[0], "%s", path);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

Test(cli_loadgen, usage_errors_exit_2)
{
    char empty[64], blank[64];
    write_tmp(empty, "");
    write_tmp(blank, "\n   \n\t\n");
    char e1[160], e2[160], m1[200], m2[200];
    snprintf(e1, sizeof e1, "--url http://h --rate 1 --duration 1 --max-tokens 1 --prompt-file %s", empty);
    snprintf(e2, sizeof e2, "--url http://h --rate 1 --duration 1 --max-tokens 1 --prompt-file %s", blank);
    snprintf(m1, sizeof m1, "--prompt-file %s has no prompts (one per line)", empty);
    snprintf(m2, sizeof m2, "--prompt-file %s has no prompts (one per line)", blank);
    const char *bad[][2] = {
        {"--clients 1 --requests 1 --max-tokens 1", "--url, --clients, --requests and --max-tokens are required"},
        {"--url http://h --max-tokens 1", "(open loop: --url, --rate, --duration and --max-tokens)"},
        {"--url http://h --rate 0 --duration 1 --max-tokens 1", "--rate must be a number in >0..100000 (got '0')"},
        {"--url http://h --rate -3 --duration 1 --max-tokens 1", "--rate must be a number"},
        {"--url http://h --rate fast --duration 1 --max-tokens 1", "--rate must be a number in >0..100000 (got 'fast')"},
        {"--url http://h --rate nan --duration 1 --max-tokens 1", "--rate must be a number"},
        {"--url http://h --rate 5 --max-tokens 1", "open loop (--rate) needs --url, --duration and --max-tokens"},
        {"--url http://h --rate 5 --duration 0 --max-tokens 1", "--duration must be a number in >0..86400"},
        {"--url http://h --duration 3 --max-tokens 1",
         "a timed closed loop (--duration without --rate) needs --url, --clients and --max-tokens"},
        {"--url http://h --clients 2 --duration 3 --max-tokens 1 --settle 3", "--settle 3 must be less than --duration 3"},
        {"--url http://h --clients 2 --duration 3 --max-tokens 1 --ramp 4", "--ramp 4 must be less than --duration 3"},
        {"--url http://h --clients 2 --duration 3 --max-tokens 1 --settle -1", "--settle must be a number in 0..86400"},
        {"--url http://h --clients 2 --duration 3 --max-tokens 1 --seed 1", "--seed is for open loop: it needs --rate"},
        {"--url http://h --clients 2 --requests 4 --max-tokens 1 --settle 1",
         "--settle is for a timed closed loop (--clients N --duration S)"},
        {"--url http://h --rate 5 --duration 3 --max-tokens 1 --settle 1", "--settle is for a timed closed loop"},
        {"--url http://h --clients 1 --requests 1 --max-tokens 1 --seed 3", "--seed is for open loop: it needs --rate"},
        {"--url http://h --rate 5 --duration 1 --max-tokens 1 --seed -1", "--seed must be a non-negative integer (got '-1')"},
        {"--url http://h --rate 5 --duration 1 --max-tokens 1 --clients 0", "--clients must be an integer in 1..10000"},
        {"--url http://h --clients 1 --requests 1 --max-tokens 1 --prompt a --prompt-tokens 5",
         "give one of --prompt, --prompt-file and --prompt-tokens"},
        {"--url http://h --clients 1 --requests 1 --max-tokens 1 --prompt-tokens 0", "--prompt-tokens must be an integer in 1..8000"},
        {"--url http://h --clients 1 --requests 1 --max-tokens 1 --prompt-tokens 8001", "--prompt-tokens must be an integer in 1..8000"},
        {"--url http://h --clients 1 --requests 1 --max-tokens 1 --prompt-file /nonexistent/p.txt",
         "--prompt-file /nonexistent/p.txt: No such file or directory"},
        {e1, m1},
        {e2, m2},
        {"--url http://h --json yes --clients 1 --requests 1 --max-tokens 1", "unknown flag yes"},
        {"--url http://h --clients 1 --requests 1 --max-tokens 1 --temperature 2.5", "--temperature must be a number in 0..2"},
        {"--url ftp://h --rate 1 --duration 1 --max-tokens 1", "--url must be http://HOST[:PORT]"},
        {"--rate", "--rate needs a value"},
        {"--url http://h --clients 2 --requests 4 --max-tokens 1 --ramp -1", "--ramp must be a number in 0..86400 (got '-1')"},
        {"--url http://h --clients 2 --requests 4 --max-tokens 1 --ramp soon", "--ramp must be a number in 0..86400 (got 'soon')"},
        {"--url http://h --clients 2 --requests 4 --max-tokens 1 --ramp inf", "--ramp must be a number in 0..86400 (got 'inf')"},
        {"--url http://h --clients 2 --requests 4 --max-tokens 1 --ramp 86401", "--ramp must be a number in 0..86400"},
        {"--url http://h --rate 5 --duration 1 --max-tokens 1 --ramp 2",
         "--ramp is for closed loop (--clients N --requests M); open loop spreads its arrivals by --rate"},
        {"--url http://h --rate 5 --duration 1 --max-tokens 1 --ramp 0", "--ramp is for closed loop"},
        {"--url http://h --clients 2 --requests 4 --max-tokens 1 --warmup -1",
         "--warmup must be an integer in 0..100000000 (got '-1')"},
        {"--url http://h --clients 2 --requests 4 --max-tokens 1 --warmup 1.5", "--warmup must be an integer"},
        {"--url http://h --clients 2 --requests 4 --max-tokens 1 --warmup 4",
         "--warmup 4 leaves nothing to measure: it must be less than --requests 4"},
        {"--url http://h --rate 5 --duration 1 --max-tokens 1 --requests 3 --warmup 7",
         "--warmup 7 leaves nothing to measure: it must be less than --requests 3"},
        {"--url http://h --clients 2 --requests 4 --max-tokens 1 --warmup", "--warmup needs a value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cli_run r = loadgen(bad[i][0]);
        cr_assert_eq(r.rc, 2, "%s: rc %d\n%s", bad[i][0], r.rc, r.err);
        cr_assert(strstr(r.err, bad[i][1]), "%s: want '%s' in:\n%s", bad[i][0], bad[i][1], r.err);
        cr_assert_str_empty(r.out, "%s", bad[i][0]);
        cli_run_free(&r);
    }
    struct cli_run r = loadgen("--help");
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "usage: aarmd-cli loadgen"), "%s", r.out);
    cr_assert(strstr(r.out, "--rate R --duration S"), "%s", r.out);
    const char *documented[] = {"--ramp S: client i sends its first request at i*S/N seconds",
                                "--warmup W: the first W requests to finish are left out",
                                "decode_tokens_s: sum over successful requests of (tokens - 1)",
                                "per_stream_decode_tokens_s p50",
                                "Timed closed loop (--clients N --duration S)",
                                "sustained_tokens_s: tokens read from W"};
    for (size_t i = 0; i < sizeof documented / sizeof documented[0]; i++)
        cr_assert(strstr(r.out, documented[i]), "want '%s' in:\n%s", documented[i], r.out);
    cli_run_free(&r);
}

/* --json output parsed; fails the test unless it is exactly one object. */
static struct json_object *parse_one(const char *out)
{
    size_t n = strlen(out);
    cr_assert(n > 1 && strchr(out, '\n') == out + n - 1, "not one line:\n%s", out);
    struct json_object *j = json_tokener_parse(out);
    cr_assert_not_null(j, "not JSON:\n%s", out);
    cr_assert(json_object_is_type(j, json_type_object), "not an object:\n%s", out);
    return j;
}

static double jnum(struct json_object *o, const char *path1, const char *path2)
{
    struct json_object *v;
    cr_assert(json_object_object_get_ex(o, path1, &v), "no %s", path1);
    if (path2)
        cr_assert(json_object_object_get_ex(v, path2, &v), "no %s.%s", path1, path2);
    return json_object_get_double(v);
}

static void check_latencies(struct json_object *j, const char *which, double n)
{
    cr_assert_eq(jnum(j, which, "n"), n, "%s n", which);
    double p50 = jnum(j, which, "p50"), p90 = jnum(j, which, "p90"), p99 = jnum(j, which, "p99"),
           mx = jnum(j, which, "max");
    /* tokens read in one chunk are 0 ms apart: p50 may be 0 */
    cr_assert(p50 >= 0 && p50 <= p90 && p90 <= p99 && p99 <= mx, "%s: %g %g %g %g", which, p50, p90, p99, mx);
}

static void closed_loop_against(struct hx_proc *p)
{
    char args[256];
    snprintf(args, sizeof args, "--url http://127.0.0.1:%d --clients 4 --requests 16 --max-tokens 6 --prompt-tokens 40 --json",
             hx_port(p));
    struct cli_run r = served(args);
    cr_assert_eq(r.rc, 0, "%s%s", r.out, r.err);
    struct json_object *j = parse_one(r.out);
    cr_assert_str_eq(hx_jstr(j, "mode"), "closed");
    cr_assert_eq(hx_jint(j, "requests"), 16);
    cr_assert_eq(hx_jint(j, "ok"), 16);
    cr_assert_eq(hx_jint(j, "failed"), 0);
    cr_assert_eq(hx_jint(j, "tokens"), 16 * 6);
    cr_assert_gt(jnum(j, "tokens_s", NULL), 0);
    cr_assert_gt(jnum(j, "requests_s", NULL), 0);
    /* about 40 tokens: the daemon's count (plus a BOS when the model adds one) */
    double pt = jnum(j, "prompt_tokens_mean", NULL);
    cr_assert(pt >= 40 && pt <= 41, "prompt_tokens_mean %g", pt);
    check_latencies(j, "ttft_ms", 16);
    check_latencies(j, "itl_ms", 16 * 5);
    struct json_object *errs;
    cr_assert(json_object_object_get_ex(j, "errors", &errs));
    cr_assert_eq(json_object_object_length(errs), 0);
    cr_assert_eq(jnum(j, "stop_reasons", "MAX_TOKENS"), 16);
    json_object_put(j);
    cli_run_free(&r);
    /* the server agrees */
    struct hx_http *m = hx_fetch(hx_port(p), "GET", "/metrics", NULL, NULL);
    cr_assert_eq(hx_metric(hx_http_body(m), "worker_requests_total", "outcome=\"success\""), 16);
    cr_assert_eq(hx_metric(hx_http_body(m), "worker_tokens_generated_total", NULL), 96);
    hx_http_close(m);
}

Test(cli_loadgen, closed_loop_mock_not_paged)
{
    closed_loop_against(hx_start("--max-jobs", "4", NULL));
}

/* The paged pools hold 16k positions: room for several whole contexts of the
 * test model, whatever the host reserves per job. */
Test(cli_loadgen, closed_loop_mock_paged)
{
    closed_loop_against(hx_start("--max-jobs", "4", "--backend-opt", "kv_blocks=1024", "--backend-opt",
                                 "kv_block_tokens=16", NULL));
}

/* Open loop: returns the request count of one --json run (all must succeed). */
static int64_t open_loop(int port, const char *extra, struct json_object **out)
{
    char args[512];
    snprintf(args, sizeof args, "--url http://127.0.0.1:%d --max-tokens 4 --json %s", port, extra);
    struct cli_run r = served(args);
    cr_assert_eq(r.rc, 0, "%s: %s%s", args, r.out, r.err);
    struct json_object *j = parse_one(r.out);
    cr_assert_str_eq(hx_jstr(j, "mode"), "open");
    int64_t n = hx_jint(j, "requests");
    cr_assert_eq(hx_jint(j, "ok"), n, "%s", r.out);
    cr_assert_eq(hx_jint(j, "tokens"), 4 * n, "%s", r.out);
    if (n > 0)
        cr_assert_eq(jnum(j, "stop_reasons", "MAX_TOKENS"), n, "%s", r.out);
    if (n > 0) {
        check_latencies(j, "ttft_ms", (double)n);
        check_latencies(j, "itl_ms", (double)(3 * n));
    }
    cli_run_free(&r);
    if (out)
        *out = j;
    else
        json_object_put(j);
    return n;
}

static void open_loop_against(struct hx_proc *p)
{
    int port = hx_port(p);
    /* 60/s for 1 s: Poisson, so 60 +- 8; [25, 100] fails only on a broken process */
    struct json_object *j = NULL;
    int64_t a = open_loop(port, "--rate 60 --duration 1 --seed 5", &j);
    cr_assert(a >= 25 && a <= 100, "%lld arrivals at 60/s in 1 s", (long long)a);
    cr_assert_eq(jnum(j, "rate", NULL), 60);
    cr_assert_eq(jnum(j, "seed", NULL), 5);
    cr_assert_geq(jnum(j, "duration_s", NULL), 0.9, "arrivals span the duration");
    json_object_put(j);
    /* the same seed draws the same arrivals */
    cr_assert_eq(open_loop(port, "--rate 60 --duration 1 --seed 5", NULL), a);
    /* --requests caps the arrivals, --clients the connections (the rest queue) */
    cr_assert_eq(open_loop(port, "--rate 500 --duration 5 --requests 7 --clients 2", NULL), 7);
    struct hx_http *m = hx_fetch(port, "GET", "/metrics", NULL, NULL);
    cr_assert_eq(hx_metric(hx_http_body(m), "worker_requests_total", "outcome=\"success\""), 2 * a + 7);
    hx_http_close(m);
}

Test(cli_loadgen, open_loop_mock_not_paged)
{
    open_loop_against(hx_start("--backend-opt", "delay_ms=1", NULL));
}

Test(cli_loadgen, open_loop_mock_paged)
{
    open_loop_against(hx_start("--backend-opt", "delay_ms=1", "--backend-opt", "kv_blocks=2048", "--backend-opt",
                               "kv_block_tokens=8", NULL));
}

/* One text-report run of args: its exit status is rc and its output holds every line of want. */
static void text_report_has(const char *args, int rc, const char *const *want, size_t n_want)
{
    struct cli_run r = served(args);
    cr_assert_eq(r.rc, rc, "%s: %s%s", args, r.out, r.err);
    for (size_t i = 0; i < n_want; i++)
        cr_assert(strstr(r.out, want[i]), "%s: want '%s' in:\n%s", args, want[i], r.out);
    cli_run_free(&r);
}

Test(cli_loadgen, open_loop_text_report_and_errors_by_code)
{
    struct hx_proc *p = hx_start("--max-tokens-limit", "5", NULL);
    char args[256];
    snprintf(args, sizeof args, "--url http://127.0.0.1:%d --rate 200 --duration 0.5 --requests 6 --max-tokens 6",
             hx_port(p));
    const char *const want[] = {"mode          open loop: rate 200/s, duration 0.5 s, seed 1",
                                "requests      6 (ok 0, failed 6)", "stop_reasons  none\n",
                                "errors        INVALID_REQUEST=6",
                                "ttft_ms       p50 0.000 p90 0.000 p99 0.000 max 0.000 (n 0)"};
    text_report_has(args, 1, want, sizeof want / sizeof want[0]);
    strcat(args, " --json");
    struct cli_run r = served(args);
    cr_assert_eq(r.rc, 1);
    struct json_object *j = parse_one(r.out);
    cr_assert_eq(jnum(j, "errors", "INVALID_REQUEST"), 6, "%s", r.out);
    json_object_put(j);
    cli_run_free(&r);
    /* --warmup in open loop: the first 2 failures are warmup, not errors; the exit status still counts them */
    snprintf(args, sizeof args,
             "--url http://127.0.0.1:%d --rate 200 --duration 0.5 --requests 6 --max-tokens 6 --warmup 2", hx_port(p));
    r = served(args);
    cr_assert_eq(r.rc, 1, "%s%s", r.out, r.err);
    cr_assert(strstr(r.out, "warmup        2 (ok 0, failed 2), left out of what follows"), "%s", r.out);
    cr_assert(strstr(r.out, "requests      4 (ok 0, failed 4)"), "%s", r.out);
    cr_assert(strstr(r.out, "errors        INVALID_REQUEST=4\n"), "%s", r.out);
    cli_run_free(&r);
}

/* tokens_in the daemon reports for one prompt. */
static int64_t tokens_in(int port, const char *prompt)
{
    static int n_jobs;
    char id[32];
    snprintf(id, sizeof id, "tokens-in-%d", n_jobs++);
    struct json_object *body = json_object_new_object();
    json_object_object_add(body, "job_id", json_object_new_string(id));
    json_object_object_add(body, "prompt", json_object_new_string(prompt));
    json_object_object_add(body, "max_tokens", json_object_new_int(1));
    struct hx_http *c = hx_execute(port, NULL, json_object_to_json_string(body));
    json_object_put(body);
    static struct hx_stream s;
    cr_assert_eq(hx_stream_collect(c, &s, 5000), 0);
    int64_t n = -1;
    for (int i = 0; i < s.n; i++)
        if (!strcmp(s.names[i], "started"))
            n = hx_jint(s.data[i], "tokens_in");
    hx_stream_fini(&s);
    hx_http_close(c);
    cr_assert_gt(n, 0);
    return n;
}

Test(cli_loadgen, prompt_file_cycles_with_escapes)
{
    struct hx_proc *p = hx_start(NULL);
    int port = hx_port(p);
    /* three prompts, a blank line skipped; "\n" is a newline, "\\n" a backslash and an n */
    char path[64];
    write_tmp(path, "one two three four five six seven\n\na\\n\\n\\n\\n\\n\\nb\nback\\\\nslash\r\n");
    int64_t n1 = tokens_in(port, "one two three four five six seven");
    int64_t n2 = tokens_in(port, "a\n\n\n\n\n\nb");
    int64_t n3 = tokens_in(port, "back\\nslash");
    cr_assert_neq(n2, tokens_in(port, "a\\n\\n\\n\\n\\n\\nb"), "the test needs the escape to matter");
    char args[256];
    snprintf(args, sizeof args, "--url http://127.0.0.1:%d --clients 2 --requests 9 --max-tokens 2 --prompt-file %s",
             port, path);
    struct cli_run r = served(args);
    cr_assert_eq(r.rc, 0, "%s%s", r.out, r.err);
    char want[128];
    snprintf(want, sizeof want, "prompt_tokens mean %.1f (n 9)", (double)(n1 + n2 + n3) / 3.0);
    cr_assert(strstr(r.out, want), "want '%s' in:\n%s", want, r.out);
    cr_assert(strstr(r.out, "requests      9 (ok 9, failed 0)"), "%s", r.out);
    /* 9 requests of 2 tokens: one decoded token each */
    cr_assert(strstr(r.out, "(9 tokens after the first of each stream, "), "%s", r.out);
    cr_assert(strstr(r.out, "\nper_stream_decode_tokens_s p50 "), "%s", r.out);
    cli_run_free(&r);
}

Test(cli_loadgen, open_loop_ttft_counts_from_arrival)
{
    /* one connection, a slow server and a burst of 5 arrivals: they queue in
     * loadgen, and each one's time to first token includes its wait there */
    struct hx_proc *p = hx_start("--backend-opt", "delay_ms=20", NULL);
    struct json_object *j = NULL;
    int64_t n = open_loop(hx_port(p), "--rate 2000 --duration 5 --requests 5 --clients 1", &j);
    cr_assert_eq(n, 5);
    /* a request is >= 4 steps of 20 ms (prefill and 3 decodes); the last one
     * waited for the 4 before it */
    double first = jnum(j, "ttft_ms", "p50"), last = jnum(j, "ttft_ms", "max");
    cr_assert_geq(last, 4 * 70.0, "ttft max %.1f ms: the queueing time is missing", last);
    cr_assert_lt(first, last);
    cr_assert_geq(jnum(j, "duration_s", NULL), 5 * 0.08);
    json_object_put(j);
}

/* ---- decode rates, --ramp, --warmup, against a mock step of known length ---- */

#define STEP_MS 20.0   /* the daemons below: --backend-opt delay_ms=20, one step per token */
/* How late a loaded machine (make -j check) may read a token: with 12 copies
 * of this test on 2 cores, two 5-step streams that sleep 0.2 s read as 0.153 s. */
#define READ_LAG_MS 40.0

/* One successful closed-loop --json run against port; ARGS are added. */
static struct json_object *closed_json(int port, const char *extra)
{
    char args[512];
    snprintf(args, sizeof args, "--url http://127.0.0.1:%d --json %s", port, extra);
    struct cli_run r = served(args);
    cr_assert_eq(r.rc, 0, "%s: %s%s", args, r.out, r.err);
    struct json_object *j = parse_one(r.out);
    cli_run_free(&r);
    return j;
}

/* decode_tokens_s is decode_tokens over decode_s, and decode_tokens is
 * exactly (max_tokens - 1) per successful request. */
static void check_decode_consistent(struct json_object *j, int64_t requests, int64_t max_tokens)
{
    cr_assert_eq(hx_jint(j, "decode_tokens"), requests * (max_tokens - 1));
    double ds = jnum(j, "decode_s", NULL), dts = jnum(j, "decode_tokens_s", NULL);
    cr_assert_gt(ds, 0);
    cr_assert_float_eq(dts, (double)(requests * (max_tokens - 1)) / ds, 1e-6 * dts, "decode_tokens_s %g", dts);
}

/* Two clients, the second 0.5 s after the first: each decodes 5 tokens in
 * ~5 steps, so the time with a stream decoding is ~0.2 s of a ~0.6 s run.
 * decode_tokens_s leaves out the idle gap and the prefill steps; tokens_s
 * does not. TTFT counts from each client's own send, not from the start. */
Test(cli_loadgen, ramp_gap_is_not_decode_time)
{
    struct hx_proc *p = hx_start("--max-jobs", "4", "--backend-opt", "delay_ms=20", NULL);
    struct json_object *j = closed_json(hx_port(p), "--clients 2 --requests 2 --max-tokens 6 --ramp 1");
    cr_assert_eq(hx_jint(j, "ok"), 2);
    cr_assert_eq(jnum(j, "ramp", NULL), 1);
    check_decode_consistent(j, 2, 6);
    double secs = jnum(j, "duration_s", NULL), ds = jnum(j, "decode_s", NULL);
    cr_assert_geq(secs, 0.5 + 6 * STEP_MS / 1e3 * 0.9, "the second client started %.3f s in", secs);
    /* 2 x 5 steps; the sleep is a floor on the daemon's side, but the client
     * may read a stream's first token late and its last on time */
    double span_min = (5 * STEP_MS - READ_LAG_MS) / 1e3;
    cr_assert(ds >= 2 * span_min && ds <= secs - 0.3, "decode_s %.3f of %.3f s", ds, secs);
    double dts = jnum(j, "decode_tokens_s", NULL), ts = jnum(j, "tokens_s", NULL);
    cr_assert_lt(ts, 0.6 * dts, "tokens_s %.1f vs decode_tokens_s %.1f: the gap was counted", ts, dts);
    cr_assert_leq(dts, 5 / span_min, "one stream decodes at most a token a step: %.1f", dts);
    cr_assert_eq(jnum(j, "per_stream_decode_tokens_s", "n"), 2);
    double ps = jnum(j, "per_stream_decode_tokens_s", "p50");
    cr_assert(ps > 0.3 * 1e3 / STEP_MS && ps <= 5 / span_min, "per-stream p50 %.1f", ps);
    /* not 500 ms: the second request was sent at 0.5 s */
    cr_assert_lt(jnum(j, "ttft_ms", "max"), 300, "ttft counted from the run's start");
    json_object_put(j);
}

/* Four clients batched together (--max-jobs 4): the streams' intervals
 * overlap, so the aggregate is about 4x each stream's rate (a sum of the
 * intervals instead of their union would make it 1x). */
Test(cli_loadgen, decode_rate_of_overlapping_streams)
{
    struct hx_proc *p = hx_start("--max-jobs", "4", "--backend-opt", "delay_ms=20", NULL);
    struct json_object *j = closed_json(hx_port(p), "--clients 4 --requests 4 --max-tokens 21");
    cr_assert_eq(hx_jint(j, "ok"), 4);
    check_decode_consistent(j, 4, 21);
    double dts = jnum(j, "decode_tokens_s", NULL), ps = jnum(j, "per_stream_decode_tokens_s", "p50");
    cr_assert_eq(jnum(j, "per_stream_decode_tokens_s", "n"), 4);
    cr_assert(ps > 0.3 * 1e3 / STEP_MS && ps <= 1.25 * 1e3 / STEP_MS, "per-stream p50 %.1f", ps);
    cr_assert(dts >= 2.5 * ps && dts <= 4.6 * ps, "aggregate %.1f vs per stream %.1f", dts, ps);
    /* 20 steps at least */
    cr_assert_geq(jnum(j, "decode_s", NULL), 20 * STEP_MS / 1e3 * 0.85);
    json_object_put(j);
}

/* --warmup 1 with one client and three prompts of different lengths: the
 * first request (prompt 1) is left out of every number, prompts 2 and 3 are
 * measured, and the measured time starts with the second request; the server
 * saw all three. */
Test(cli_loadgen, warmup_leaves_out_the_first_requests)
{
    struct hx_proc *p = hx_start("--backend-opt", "delay_ms=20", NULL);
    int port = hx_port(p);
    char path[64];
    write_tmp(path, "one two three four five six seven eight nine ten eleven twelve\nhi\nthree little words\n");
    int64_t n1 = tokens_in(port, "one two three four five six seven eight nine ten eleven twelve");
    int64_t n2 = tokens_in(port, "hi"), n3 = tokens_in(port, "three little words");
    cr_assert_neq(n1 * 2, n2 + n3, "the test needs the first prompt's length to show in the mean");
    char extra[160];
    snprintf(extra, sizeof extra, "--clients 1 --requests 3 --max-tokens 4 --warmup 1 --prompt-file %s", path);
    struct json_object *j = closed_json(port, extra);
    cr_assert_eq(jnum(j, "warmup", "requests"), 1);
    cr_assert_eq(jnum(j, "warmup", "ok"), 1);
    cr_assert_eq(jnum(j, "warmup", "failed"), 0);
    cr_assert_eq(hx_jint(j, "requests"), 2);
    cr_assert_eq(hx_jint(j, "ok"), 2);
    cr_assert_eq(hx_jint(j, "tokens"), 2 * 4);
    check_latencies(j, "ttft_ms", 2);
    check_latencies(j, "itl_ms", 2 * 3);
    check_decode_consistent(j, 2, 4);
    cr_assert_float_eq(jnum(j, "prompt_tokens_mean", NULL), (double)(n2 + n3) / 2.0, 1e-9);
    double secs_2 = jnum(j, "duration_s", NULL);
    cr_assert_geq(secs_2, jnum(j, "decode_s", NULL));
    json_object_put(j);
    /* the same three requests, all measured: three requests' time, not two */
    snprintf(extra, sizeof extra, "--clients 1 --requests 3 --max-tokens 4 --prompt-file %s", path);
    j = closed_json(port, extra);
    cr_assert_eq(jnum(j, "warmup", "requests"), 0);
    cr_assert_eq(hx_jint(j, "requests"), 3);
    double secs_3 = jnum(j, "duration_s", NULL);
    cr_assert_lt(secs_2, 0.85 * secs_3, "2 requests %.3f s, 3 requests %.3f s", secs_2, secs_3);
    json_object_put(j);
    struct hx_http *m = hx_fetch(port, "GET", "/metrics", NULL, NULL);
    cr_assert_eq(hx_metric(hx_http_body(m), "worker_requests_total", "outcome=\"success\""), 3 + 3 + 3);
    hx_http_close(m);
}

/* Timed closed loop: two clients send requests back to back for 1.5 s
 * (mock steps of STEP_MS, 2 streams a step): many more requests than
 * clients, every one ends, the run lasts the duration plus the tail, and
 * sustained_tokens_s is the window's tokens over its 1 s, close to the two
 * streams' decode rate (prefill steps and request gaps make it lower). */
Test(cli_loadgen, timed_closed_loop_sustained_rate)
{
    struct hx_proc *p = hx_start("--max-jobs", "4", "--backend-opt", "delay_ms=20", NULL);
    struct json_object *j = closed_json(hx_port(p), "--clients 2 --duration 1.5 --settle 0.5 --max-tokens 6");
    int64_t n = hx_jint(j, "requests");
    cr_assert_gt(n, 6, "2 clients x 1.5 s of ~7-step requests: %lld requests", (long long)n);
    cr_assert_eq(hx_jint(j, "ok"), n);
    cr_assert_eq(hx_jint(j, "tokens"), 6 * n);
    cr_assert_eq(jnum(j, "duration", NULL), 1.5);
    cr_assert_eq(jnum(j, "settle", NULL), 0.5);
    cr_assert_geq(jnum(j, "duration_s", NULL), 1.5);
    int64_t w = hx_jint(j, "sustained_tokens");
    double ws = jnum(j, "sustained_tokens_s", NULL);
    cr_assert(w > 0 && w < hx_jint(j, "tokens"), "window tokens %lld of %lld", (long long)w,
              (long long)hx_jint(j, "tokens"));
    cr_assert_float_eq(ws, (double)w / 1.0, 1e-9);
    cr_assert(ws >= 0.4 * 2 * 1e3 / STEP_MS && ws <= 1.25 * 2 * 1e3 / STEP_MS, "sustained %.1f tok/s", ws);
    json_object_put(j);
    struct hx_http *m = hx_fetch(hx_port(p), "GET", "/metrics", NULL, NULL);
    cr_assert_eq(hx_metric(hx_http_body(m), "worker_requests_total", "outcome=\"success\""), n);
    hx_http_close(m);
    /* --requests caps a timed run: 3 requests, long before 30 s; the text report names the window */
    char args[256];
    snprintf(args, sizeof args, "--url http://127.0.0.1:%d --clients 2 --requests 3 --duration 30 --max-tokens 4",
             hx_port(p));
    const char *const want[] = {"mode          closed loop, 30 s (settle 7.5 s)", "requests      3 (ok 3, failed 0)",
                                "sustained_tokens_s 0.0 (0 tokens read from 7.5 s to 30 s)"};
    text_report_has(args, 0, want, sizeof want / sizeof want[0]);
}

/* Streams that end with EOS before --max-tokens succeed, count the tokens
 * they streamed (EOS is not one) and show under stop_reasons. */
Test(cli_loadgen, eos_is_a_stop_reason_not_an_error)
{
    struct hx_proc *p = hx_start("--backend-opt", "eos_after=2", NULL);
    char args[256];
    snprintf(args, sizeof args, "--url http://127.0.0.1:%d --clients 2 --requests 3 --max-tokens 5", hx_port(p));
    const char *const want[] = {"requests      3 (ok 3, failed 0)", "tokens        6\n", "stop_reasons  EOS=3\n",
                                "errors        none\n"};
    text_report_has(args, 0, want, sizeof want / sizeof want[0]);
    strcat(args, " --json");
    struct cli_run r = served(args);
    cr_assert_eq(r.rc, 0, "%s%s", r.out, r.err);
    struct json_object *j = parse_one(r.out), *stops;
    cr_assert_eq(hx_jint(j, "tokens"), 6, "%s", r.out);
    cr_assert(json_object_object_get_ex(j, "stop_reasons", &stops));
    cr_assert_eq(json_object_object_length(stops), 1, "%s", r.out);
    cr_assert_eq(jnum(j, "stop_reasons", "EOS"), 3);
    cr_assert_eq(hx_jint(j, "decode_tokens"), 3, "2 tokens a stream: one after the first");
    json_object_put(j);
    cli_run_free(&r);
}
