/* test_plugin_check.c — `aarmd-cli plugin-check` (tools/cli_plugin_check.c)
 * run as a process on the mock and the broken test plugins: verdicts,
 * exit status and usage errors. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char out[65536];

/* Runs aarmd-cli plugin-check ARGS (stderr folded in); returns the exit status. */
static int check(const char *args)
{
    const char *b = getenv("AARMD_BUILDDIR");
    cr_assert_not_null(b, "AARMD_BUILDDIR is not set: run through make check");
    cr_assert_not_null(getenv("AARMD_PLUGIN_PATH"), "AARMD_PLUGIN_PATH is not set: run through make check");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s/aarmd-cli' plugin-check %s 2>&1", b, args);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    cr_assert(WIFEXITED(st), "%s did not exit normally", cmd);
    return WEXITSTATUS(st);
}

Test(plugin_check, mock_passes_every_check)
{
    cr_assert_eq(check("mock"), 0, "%s", out);
    cr_assert(strstr(out, "name          mock"), "%s", out);
    cr_assert(strstr(out, "optional      device_info yes, model_bytes yes, seq_truncate yes"), "%s", out);
    cr_assert(strstr(out, "PASS model_load synthetic (arch llama, n_vocab 300, 0 tensors)"), "%s", out);
    cr_assert(strstr(out, "PASS step 3: "), "%s", out);
    cr_assert(strstr(out, "PASS seq_truncate to 1 and step again"), "%s", out);
    cr_assert(strstr(out, "PASS step with token 300 refused"), "%s", out);
    cr_assert(strstr(out, " 0 failed, 0 skipped"), "%s", out);
    cr_assert_null(strstr(out, "FAIL"), "%s", out);
}

Test(plugin_check, real_model_file)
{
    const char *models = getenv("AARMD_TEST_MODELS");
    cr_assert_not_null(models);
    char args[4096];
    snprintf(args, sizeof args, "mock --model '%s/SmolLM2-135M-Instruct.Q4_1.gguf'", models);
    cr_assert_eq(check(args), 0, "%s", out);
    cr_assert(strstr(out, "(arch llama, n_vocab 49152, "), "%s", out);

    cr_assert_eq(check("mock --model /nonexistent/model.gguf"), 1, "%s", out);
    cr_assert(strstr(out, "FAIL model /nonexistent/model.gguf: "), "%s", out);
}

Test(plugin_check, failures_exit_1)
{
    cr_assert_eq(check("mock --backend-opt fail_at_step=2"), 1, "%s", out);
    cr_assert(strstr(out, "FAIL step 2 "), "%s", out);
    cr_assert(strstr(out, "injected device error"), "%s", out);
    cr_assert(strstr(out, " 1 failed"), "%s", out);

    cr_assert_eq(check("badmajor"), 1, "%s", out);
    cr_assert(strstr(out, "FAIL load badmajor: "), "%s", out);
    cr_assert(strstr(out, "ABI major 2 is not supported"), "%s", out);

    cr_assert_eq(check("mock --backend-opt colour=red"), 1, "%s", out);
    cr_assert(strstr(out, "FAIL ctx_new on device 0: mock: unknown option 'colour'"), "%s", out);

    cr_assert_eq(check("quiet"), 1, "%s", out);   /* its step always fails */
    cr_assert(strstr(out, "FAIL step 1"), "%s", out);
    cr_assert(strstr(out, "optional      device_info no"), "%s", out);
}

Test(plugin_check, refused_synthetic_model_is_a_skip)
{
    cr_assert_eq(check("mock --backend-opt fail_load=1"), 0, "%s", out);
    cr_assert(strstr(out, "SKIP model load: unsupported without --model (backend said: "), "%s", out);
    cr_assert(strstr(out, "fail_load=1"), "%s", out);
}

Test(plugin_check, usage_errors_exit_2)
{
    cr_assert_eq(check(""), 2, "%s", out);
    cr_assert(strstr(out, "usage: aarmd-cli plugin-check"), "%s", out);
    cr_assert_eq(check("mock --backend-opt seed"), 2, "%s", out);
    cr_assert(strstr(out, "--backend-opt seed: expected KEY=VALUE"), "%s", out);
    cr_assert_eq(check("mock --backend-opt =1"), 2, "%s", out);
    cr_assert_eq(check("mock --backend-opt"), 2, "%s", out);
    cr_assert(strstr(out, "--backend-opt needs a value"), "%s", out);
    cr_assert_eq(check("mock --device -1"), 2, "%s", out);
    cr_assert(strstr(out, "--device -1: expected an integer >= 0"), "%s", out);
    cr_assert_eq(check("mock --frobnicate"), 2, "%s", out);
    cr_assert(strstr(out, "unknown option --frobnicate"), "%s", out);
    cr_assert_eq(check("mock cpu"), 2, "%s", out);
    cr_assert(strstr(out, "one plugin at a time"), "%s", out);
    cr_assert_eq(check("--help"), 0, "%s", out);
    cr_assert(strstr(out, "PASS, FAIL or SKIP"), "%s", out);
}
