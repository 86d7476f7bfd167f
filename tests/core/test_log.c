/* test_log.c — log lines are single JSON objects with the contract's fields. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

static void redirect(void) { cr_redirect_stderr(); }

Test(log, json_line_has_contract_fields, .init = redirect)
{
    aarmd_log_setup(AARMD_LOG_JSON, "worker-x", AARMD_LOG_DEBUG);
    const char *extra[] = {"percent", "50", NULL};
    struct aarmd_log_ctx ctx = {.job_id = "j\"1", .correlation_id = "c1", .extra = extra};
    aarmd_log_ctx(AARMD_LOG_INFO, "model_load_progress", &ctx, "line\nbreak %d", 7);
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    char buf[4096] = "";
    cr_assert(fgets(buf, sizeof buf, f));
    struct json_object *o = json_tokener_parse(buf);
    cr_assert_not_null(o, "not JSON: %s", buf);
    struct json_object *v;
    cr_assert(json_object_object_get_ex(o, "ts", &v));
    cr_assert(json_object_object_get_ex(o, "event", &v));
    cr_assert_str_eq(json_object_get_string(v), "model_load_progress");
    cr_assert(json_object_object_get_ex(o, "worker_id", &v));
    cr_assert_str_eq(json_object_get_string(v), "worker-x");
    cr_assert(json_object_object_get_ex(o, "job_id", &v));
    cr_assert_str_eq(json_object_get_string(v), "j\"1");
    cr_assert(json_object_object_get_ex(o, "percent", &v));
    cr_assert_eq(json_object_get_int(v), 50);
    cr_assert(json_object_object_get_ex(o, "msg", &v));
    cr_assert_str_eq(json_object_get_string(v), "line\nbreak 7");
    json_object_put(o);
}

Test(log, below_min_level_is_dropped, .init = redirect)
{
    aarmd_log_setup(AARMD_LOG_JSON, "w", AARMD_LOG_WARN);
    aarmd_log(AARMD_LOG_INFO, "startup", "hidden");
    aarmd_log(AARMD_LOG_ERROR, "error", "shown");
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    char buf[4096] = "";
    cr_assert(fgets(buf, sizeof buf, f));
    cr_assert(strstr(buf, "shown"));
    cr_assert_null(fgets(buf, sizeof buf, f));
}
