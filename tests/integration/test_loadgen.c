/* test_loadgen.c — `aarmd-cli loadgen` (tools/cli_loadgen.c) run as a process
 * against the real daemon with the mock backend: its counts match what the
 * server did, errors are reported by code, usage errors exit 2. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "integration/harness.h"

static void fini(void) { hx_kill_all(); }

TestSuite(loadgen, .fini = fini, .timeout = 60);

static char out[65536];

/* Runs aarmd-cli loadgen ARGS (stderr folded in); returns the exit status. */
static int loadgen(const char *args)
{
    const char *b = getenv("AARMD_BUILDDIR");
    cr_assert_not_null(b, "AARMD_BUILDDIR is not set: run through make check");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/aarmd-cli' loadgen %s 2>&1", b, args);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    cr_assert(WIFEXITED(st), "%s did not exit normally", cmd);
    return WEXITSTATUS(st);
}

/* The number after `key` at the start of a line of out. */
static double field(const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\n%s", key);
    const char *p = strncmp(out, key, strlen(key)) == 0 ? out : strstr(out, pat);
    cr_assert_not_null(p, "no '%s' line:\n%s", key, out);
    p += (*p == '\n') + strlen(key);
    while (*p == ' ')
        p++;
    return strtod(p, NULL);
}

Test(loadgen, counts_match_the_server)
{
    struct hx_proc *p = hx_start("--worker-id", "lg", "--backend-opt", "delay_ms=1", NULL);
    char args[256];
    snprintf(args, sizeof args, "--url http://127.0.0.1:%d --clients 3 --requests 12 --max-tokens 7 --temperature 0 "
             "--prompt 'Hi there'",
             hx_port(p));
    cr_assert_eq(loadgen(args), 0, "%s", out);
    cr_assert(strstr(out, "requests      12 (ok 12, failed 0)"), "%s", out);
    cr_assert_eq(field("tokens "), 12 * 7, "%s", out);
    cr_assert_gt(field("tokens_s"), 0, "%s", out);
    cr_assert_gt(field("requests_s"), 0, "%s", out);
    cr_assert(strstr(out, "(n 12)"), "ttft samples:\n%s", out);
    cr_assert(strstr(out, "(n 72)"), "itl samples (12 x 6):\n%s", out);
    cr_assert(strstr(out, "errors        none"), "%s", out);
    /* the server agrees */
    struct hx_http *m = hx_fetch(hx_port(p), "GET", "/metrics", NULL, NULL);
    cr_assert_eq(hx_metric(hx_http_body(m), "worker_requests_total", "outcome=\"success\""), 12);
    cr_assert_eq(hx_metric(hx_http_body(m), "worker_tokens_generated_total", NULL), 84);
    hx_http_close(m);
}

Test(loadgen, errors_by_code)
{
    struct hx_proc *p = hx_start("--max-tokens-limit", "10", NULL);
    char args[256];
    snprintf(args, sizeof args, "--url http://127.0.0.1:%d --clients 2 --requests 5 --max-tokens 11", hx_port(p));
    cr_assert_eq(loadgen(args), 1, "%s", out);
    cr_assert(strstr(out, "errors        INVALID_REQUEST=5"), "%s", out);
    cr_assert(strstr(out, "(ok 0, failed 5)"), "%s", out);
    cr_assert_eq(hx_stop(p, 8000), 0);
    /* nobody listens there any more */
    cr_assert_eq(loadgen(args), 1, "%s", out);
    cr_assert(strstr(out, "CONNECTION=5"), "%s", out);
}

Test(loadgen, bearer_token)
{
    char path[] = "/tmp/aarmd-lg-token-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "tok\n", 4), 4);
    close(fd);
    struct hx_proc *p = hx_start("--api-token-file", path, NULL);
    char args[256];
    snprintf(args, sizeof args, "--url http://127.0.0.1:%d --clients 1 --requests 2 --max-tokens 3", hx_port(p));
    cr_assert_eq(loadgen(args), 1, "%s", out);
    cr_assert(strstr(out, "UNAUTHORIZED=2"), "%s", out);
    strcat(args, " --api-token tok");
    cr_assert_eq(loadgen(args), 0, "%s", out);
    unlink(path);
}

Test(loadgen, usage_errors_exit_2)
{
    const char *bad[][2] = {
        {"--clients 1 --requests 1 --max-tokens 1", "--url, --clients, --requests and --max-tokens are required"},
        {"--url http://127.0.0.1:1 --clients 0 --requests 1 --max-tokens 1", "--clients must be an integer"},
        {"--url http://127.0.0.1:1 --clients 1 --requests x --max-tokens 1", "--requests must be an integer"},
        {"--url http://127.0.0.1:1 --clients 1 --requests 1 --max-tokens -4", "--max-tokens must be an integer"},
        {"--url ftp://h --clients 1 --requests 1 --max-tokens 1", "--url must be http://HOST[:PORT]"},
        {"--url http://h --clients 1 --requests 1 --max-tokens 1 --temperature 3", "--temperature must be"},
        {"--url http://h --clients 1 --requests 1 --max-tokens 1 --colour red", "unknown flag --colour"},
        {"--url", "--url needs a value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(loadgen(bad[i][0]), 2, "%s:\n%s", bad[i][0], out);
        cr_assert(strstr(out, bad[i][1]), "%s: want '%s' in:\n%s", bad[i][0], bad[i][1], out);
        cr_assert(strstr(out, "usage: aarmd-cli loadgen"), "%s", out);
    }
    cr_assert_eq(loadgen("--help"), 0, "%s", out);
    cr_assert(strstr(out, "usage: aarmd-cli loadgen"), "%s", out);
}
