/* test_metrics.c — Prometheus text exposition (core/metrics.c): every series of
 * the contract with worker_id, counters, cumulative histogram buckets, label escaping. */
#include <criterion/criterion.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static char *render(struct aarmd_metrics *m, const struct aarmd_metrics_gauges *g)
{
    struct evbuffer *b = evbuffer_new();
    cr_assert_eq(aarmd_metrics_render(m, g, b), 0);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_copyout(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

/* The value of the sample line that starts with `series` followed by a space. */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    cr_assert_fail("series %s not found in:\n%s", series, text);
    return -1;
}

Test(metrics, every_contract_series_with_worker_id)
{
    struct aarmd_metrics *m = aarmd_metrics_new("w-1");
    cr_assert_not_null(m);
    struct aarmd_metrics_gauges g = {.jobs_running = 2, .jobs_queued = 5, .vram_bytes = 123456789, .uptime_seconds = 42.5};
    char *s = render(m, &g);
    const char *series[] = {
        "worker_requests_total{worker_id=\"w-1\",outcome=\"success\"}",
        "worker_requests_total{worker_id=\"w-1\",outcome=\"error\"}",
        "worker_requests_total{worker_id=\"w-1\",outcome=\"cancelled\"}",
        "worker_requests_total{worker_id=\"w-1\",outcome=\"timeout\"}",
        "worker_tokens_in_total{worker_id=\"w-1\"}",
        "worker_tokens_generated_total{worker_id=\"w-1\"}",
        "worker_inference_duration_ms_bucket{worker_id=\"w-1\",le=\"+Inf\"}",
        "worker_inference_duration_ms_sum{worker_id=\"w-1\"}",
        "worker_inference_duration_ms_count{worker_id=\"w-1\"}",
        "worker_time_to_first_token_ms_bucket{worker_id=\"w-1\",le=\"5\"}",
        "worker_time_to_first_token_ms_count{worker_id=\"w-1\"}",
        "worker_jobs_running{worker_id=\"w-1\"}",
        "worker_jobs_queued{worker_id=\"w-1\"}",
        "worker_vram_bytes{worker_id=\"w-1\"}",
        "worker_uptime_seconds{worker_id=\"w-1\"}",
    };
    for (size_t i = 0; i < sizeof series / sizeof series[0]; i++)
        (void)value_of(s, series[i]);
    cr_assert_float_eq(value_of(s, "worker_jobs_running{worker_id=\"w-1\"}"), 2, 0);
    cr_assert_float_eq(value_of(s, "worker_jobs_queued{worker_id=\"w-1\"}"), 5, 0);
    cr_assert_float_eq(value_of(s, "worker_vram_bytes{worker_id=\"w-1\"}"), 123456789, 0);
    cr_assert_float_eq(value_of(s, "worker_uptime_seconds{worker_id=\"w-1\"}"), 42.5, 1e-9);
    cr_assert(strstr(s, "# TYPE worker_requests_total counter\n"));
    cr_assert(strstr(s, "# TYPE worker_inference_duration_ms histogram\n"));
    cr_assert(strstr(s, "# TYPE worker_time_to_first_token_ms histogram\n"));
    cr_assert(strstr(s, "# TYPE worker_jobs_running gauge\n"));
    /* every sample line carries the label */
    for (const char *p = s; *p; p = strchr(p, '\n') + 1) {
        if (*p != '#')
            cr_assert(strncmp(strchr(p, '{'), "{worker_id=\"w-1\"", 16) == 0, "line without worker_id: %.80s", p);
    }
    free(s);
    aarmd_metrics_free(m);
}

Test(metrics, counters_and_cumulative_buckets)
{
    struct aarmd_metrics *m = aarmd_metrics_new("w");
    aarmd_metrics_request(m, AARMD_OUTCOME_SUCCESS);
    aarmd_metrics_request(m, AARMD_OUTCOME_SUCCESS);
    aarmd_metrics_request(m, AARMD_OUTCOME_CANCELLED);
    aarmd_metrics_request(m, aarmd_outcome_of_error("INFERENCE_TIMEOUT"));
    aarmd_metrics_request(m, aarmd_outcome_of_error("OUT_OF_MEMORY"));
    aarmd_metrics_tokens(m, 10, 3);
    aarmd_metrics_tokens(m, 5, 4);
    double obs[] = {1, 5, 7, 250, 30000, 30001, 99999};
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        aarmd_metrics_inference_ms(m, obs[i]);
    aarmd_metrics_ttft_ms(m, 12);
    struct aarmd_metrics_gauges g = {0};
    char *s = render(m, &g);
    cr_assert_float_eq(value_of(s, "worker_requests_total{worker_id=\"w\",outcome=\"success\"}"), 2, 0);
    cr_assert_float_eq(value_of(s, "worker_requests_total{worker_id=\"w\",outcome=\"cancelled\"}"), 1, 0);
    cr_assert_float_eq(value_of(s, "worker_requests_total{worker_id=\"w\",outcome=\"timeout\"}"), 1, 0);
    cr_assert_float_eq(value_of(s, "worker_requests_total{worker_id=\"w\",outcome=\"error\"}"), 1, 0);
    cr_assert_float_eq(value_of(s, "worker_tokens_in_total{worker_id=\"w\"}"), 15, 0);
    cr_assert_float_eq(value_of(s, "worker_tokens_generated_total{worker_id=\"w\"}"), 7, 0);
    struct { const char *le; double want; } b[] = {
        {"5", 2}, {"10", 3}, {"25", 3}, {"50", 3}, {"100", 3}, {"250", 4}, {"500", 4}, {"1000", 4},
        {"2500", 4}, {"5000", 4}, {"10000", 4}, {"30000", 5}, {"+Inf", 7}};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        char name[128];
        snprintf(name, sizeof name, "worker_inference_duration_ms_bucket{worker_id=\"w\",le=\"%s\"}", b[i].le);
        cr_assert_float_eq(value_of(s, name), b[i].want, 0, "bucket le=%s", b[i].le);
    }
    cr_assert_float_eq(value_of(s, "worker_inference_duration_ms_count{worker_id=\"w\"}"), 7, 0);
    cr_assert_float_eq(value_of(s, "worker_inference_duration_ms_sum{worker_id=\"w\"}"), 1 + 5 + 7 + 250 + 30000 + 30001 + 99999, 1e-6);
    cr_assert_float_eq(value_of(s, "worker_time_to_first_token_ms_bucket{worker_id=\"w\",le=\"10\"}"), 0, 0);
    cr_assert_float_eq(value_of(s, "worker_time_to_first_token_ms_bucket{worker_id=\"w\",le=\"25\"}"), 1, 0);
    free(s);
    aarmd_metrics_free(m);
}

Test(metrics, label_values_are_escaped)
{
    struct aarmd_metrics *m = aarmd_metrics_new("a\"b\\c\nd");
    struct aarmd_metrics_gauges g = {0};
    char *s = render(m, &g);
    cr_assert(strstr(s, "worker_jobs_running{worker_id=\"a\\\"b\\\\c\\nd\"} 0\n"), "%s", s);
    free(s);
    aarmd_metrics_free(m);
}

Test(metrics, outcome_mapping)
{
    cr_assert_eq(aarmd_outcome_of_error("CANCELLED"), AARMD_OUTCOME_CANCELLED);
    cr_assert_eq(aarmd_outcome_of_error("INFERENCE_TIMEOUT"), AARMD_OUTCOME_TIMEOUT);
    cr_assert_eq(aarmd_outcome_of_error("BACKEND_ERROR"), AARMD_OUTCOME_ERROR);
    cr_assert_eq(aarmd_outcome_of_error(NULL), AARMD_OUTCOME_ERROR);
}
