/* test_cli_plugin_check.c — the paged-KV section of `aarmd-cli plugin-check`
 * (tools/cli_plugin_check.c, tools/plugin_check_kv.c), in process: every kv-*
 * check passes on the paged mock at several block sizes, says "not paged:
 * skipped" on the unpaged one, skips what a tiny or huge pool cannot run,
 * fails (and still frees every block) when a step is made to fail anywhere in
 * the section, and passes or skips on the CPU backend with a synthetic model. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aarmd_backend.h"
#include "cli.h"
#include "cli_capture.h"
#include "gguf_synth.h"

/* Runs `aarmd-cli plugin-check ARGS` in process (ARGS split on spaces, no quoting),
 * stdout and stderr merged. */
static struct cli_run check(const char *args)
{
    cr_assert_not_null(getenv("AARMD_PLUGIN_PATH"), "AARMD_PLUGIN_PATH is not set: run through make check");
    return cli_capture_str(aarmd_cli_plugin_check, "plugin-check", args, 1);
}

/* The line "VERDICT kv-NAME: ..." or NULL. */
static const char *kv_line(const char *out, const char *verdict, const char *name)
{
    char want[128];
    snprintf(want, sizeof want, "%-4s kv-%s: ", verdict, name);
    for (const char *p = out; (p = strstr(p, want)); p++)
        if (p == out || p[-1] == '\n')
            return p;
    return NULL;
}

static const char *const all_checks[] = {"info", "idle", "blocks", "truncate", "free", "enomem", "enomem-resume",
                                         "fork-einval", "fork", "fork-order", "batch", "end"};
#define N_CHECKS (sizeof all_checks / sizeof all_checks[0])

/* Every kv check PASSes (and nothing FAILs or is skipped). */
static void assert_all_kv_pass(const struct cli_run *r)
{
    cr_assert_eq(r->rc, 0, "exit %d:\n%s", r->rc, r->out);
    for (size_t i = 0; i < N_CHECKS; i++)
        cr_assert_not_null(kv_line(r->out, "PASS", all_checks[i]), "no PASS kv-%s:\n%s", all_checks[i], r->out);
    cr_assert_null(strstr(r->out, "FAIL"), "%s", r->out);
    cr_assert_null(strstr(r->out, "SKIP"), "%s", r->out);
}

/* ---- the mock ---------------------------------------------------------------------- */

/* by value: Criterion copies parameters into another process, where pointers to literals may not hold */
struct kv_param {
    char opts[128];
};

ParameterizedTestParameters(plugin_check_kv, mock_paged_passes)
{
    /* block sizes 1, 4, 16 (default) and 7 (odd), pools by count and by MiB */
    static struct kv_param opts[] = {
        {"--backend-opt kv_blocks=64"},
        {"--backend-opt kv_blocks=40 --backend-opt kv_block=4"},
        {"--backend-opt kv_blocks=200 --backend-opt kv_block_tokens=1"},
        {"--backend-opt kv_blocks=30 --backend-opt kv_block_tokens=7"},
        {"--backend-opt kv_mb=1 --backend-opt kv_block_bytes=32768"},
    };
    return cr_make_param_array(struct kv_param, opts, sizeof opts / sizeof opts[0]);
}

ParameterizedTest(struct kv_param *opt, plugin_check_kv, mock_paged_passes)
{
    char args[512];
    snprintf(args, sizeof args, "mock %s", opt->opts);
    struct cli_run r = check(args);
    assert_all_kv_pass(&r);
    /* the mock is deterministic: every comparison is bitwise */
    cr_assert(strstr(kv_line(r.out, "PASS", "fork"), "bitwise equal"), "%s", r.out);
    cr_assert(strstr(kv_line(r.out, "PASS", "fork-order"), "bitwise equal"), "%s", r.out);
    cr_assert(strstr(kv_line(r.out, "PASS", "enomem-resume"), "bitwise equal"), "%s", r.out);
    cr_assert(strstr(kv_line(r.out, "PASS", "batch"), "bitwise equal"), "%s", r.out);
    cr_assert(strstr(kv_line(r.out, "PASS", "enomem"), "KV pool exhausted"), "the backend's message: %s", r.out);
    cli_run_free(&r);
}

Test(plugin_check_kv, mock_paged_reports_the_pool)
{
    struct cli_run r = check("mock --backend-opt kv_blocks=64 --backend-opt kv_block_bytes=1000");
    assert_all_kv_pass(&r);
    cr_assert(kv_line(r.out, "PASS", "info"), "%s", r.out);
    cr_assert(strstr(r.out, "PASS kv-info: 16 tokens per block, 64 blocks of 1000 bytes (0.1 MiB), 64 free"), "%s",
              r.out);
    cr_assert(strstr(r.out, "PASS kv-idle: stable, all 64 blocks free"), "%s", r.out);
    /* lengths 1, 16, 17, 49 -> 1, 1, 2, 4 blocks */
    cr_assert(strstr(r.out, "lengths 1,16,17,49 held 1,1,2,4 blocks"), "%s", r.out);
    cr_assert(strstr(r.out, "PASS kv-end: all 64 blocks back"), "%s", r.out);
    cli_run_free(&r);
}

Test(plugin_check_kv, mock_with_a_model_file)
{
    const char *models = getenv("AARMD_TEST_MODELS");
    cr_assert_not_null(models);
    char args[2048];
    snprintf(args, sizeof args, "mock --model %s/SmolLM2-135M-Instruct.Q4_1.gguf --backend-opt kv_blocks=48 "
             "--tol 0", models);
    struct cli_run r = check(args);
    assert_all_kv_pass(&r);
    cli_run_free(&r);
}

Test(plugin_check_kv, mock_not_paged_is_skipped)
{
    struct cli_run r = check("mock");
    cr_assert_eq(r.rc, 0, "%s", r.out);
    const char *l = kv_line(r.out, "PASS", "info");
    cr_assert_not_null(l, "%s", r.out);
    const char want[] = "PASS kv-info: not paged: skipped (kv_info: AARMD_EUNSUPPORTED, \"mock: the KV cache is not paged";
    cr_assert(!strncmp(l, want, sizeof want - 1), "%s", r.out);
    cr_assert(strstr(r.out, " 0 failed, 0 skipped"), "%s", r.out);
    const char *verdicts[] = {"PASS", "FAIL", "SKIP"};
    for (size_t i = 1; i < N_CHECKS; i++)
        for (size_t v = 0; v < 3; v++)
            cr_assert_null(kv_line(r.out, verdicts[v], all_checks[i]), "kv-%s ran unpaged:\n%s", all_checks[i], r.out);
    cli_run_free(&r);
}

Test(plugin_check_kv, small_pool_skips_what_does_not_fit)
{
    /* 3 blocks of 16: too few for any check but the pool's own */
    struct cli_run r = check("mock --backend-opt kv_blocks=3");
    cr_assert_eq(r.rc, 0, "%s", r.out);
    cr_assert_not_null(kv_line(r.out, "PASS", "info"), "%s", r.out);
    cr_assert_not_null(kv_line(r.out, "PASS", "idle"), "%s", r.out);
    const char *skipped[] = {"blocks", "enomem", "fork", "batch"};
    for (size_t i = 0; i < 4; i++) {
        const char *l = kv_line(r.out, "SKIP", skipped[i]);
        cr_assert_not_null(l, "no SKIP kv-%s:\n%s", skipped[i], r.out);
        cr_assert(strstr(l, "the pool has 3: give the backend a larger pool"), "%s", r.out);
    }
    cr_assert_not_null(kv_line(r.out, "PASS", "end"), "%s", r.out);
    cli_run_free(&r);
}

Test(plugin_check_kv, big_pool_skips_the_fill)
{
    struct cli_run r = check("mock --backend-opt kv_blocks=10000 --kv-fill 1000");
    cr_assert_eq(r.rc, 0, "%s", r.out);
    const char *l = kv_line(r.out, "SKIP", "enomem");
    cr_assert_not_null(l, "%s", r.out);
    /* 10000 - 2 (A) - 2 (R) blocks of 16 tokens */
    cr_assert(strstr(l, "filling the pool takes 159936 tokens, above --kv-fill 1000"), "%s", r.out);
    cr_assert_not_null(kv_line(r.out, "PASS", "fork"), "%s", r.out);
    cr_assert_not_null(kv_line(r.out, "PASS", "end"), "%s", r.out);
    cli_run_free(&r);
}

/*
 * A device error injected at step N, for every N from the first step of the
 * kv section to past the last: each makes one kv check FAIL (exit 1) naming
 * the injected error, and every block still comes back (kv-end PASS), so
 * every failure path frees what it made. The session's own steps come first:
 * 3 decodes, 1 after truncate, 1 refused token.
 */
Test(plugin_check_kv, injected_failure_anywhere_fails_and_frees, .timeout = 120)
{
    int n_failed_runs = 0;
    for (int n = 6; n < 1000; n++) {
        char args[256];
        snprintf(args, sizeof args, "mock --backend-opt kv_blocks=24 --backend-opt kv_block=4 "
                 "--backend-opt fail_at_step=%d", n);
        struct cli_run r = check(args);
        if (r.rc == 0) {   /* past the last step: everything passed */
            cr_assert_null(strstr(r.out, "FAIL"), "%s", r.out);
            cli_run_free(&r);
            break;
        }
        n_failed_runs++;
        cr_assert_eq(r.rc, 1, "fail_at_step=%d: exit %d\n%s", n, r.rc, r.out);
        const char *f = strstr(r.out, "FAIL kv-");
        cr_assert_not_null(f, "fail_at_step=%d: no kv check failed:\n%s", n, r.out);
        cr_assert(strstr(f, "injected device error"), "fail_at_step=%d:\n%s", n, r.out);
        cr_assert_not_null(kv_line(r.out, "PASS", "end"), "fail_at_step=%d leaked:\n%s", n, r.out);
        cli_run_free(&r);
    }
    /* the section steps at least: 4 + 1 accounting, 3 + fill + 2 + 2 enomem, 7 + 7 fork, 8 batch */
    cr_assert_geq(n_failed_runs, 30, "only %d steps in the kv section", n_failed_runs);
}

/* The same with an injected ENOMEM: a FAIL, except where the step was to be
 * refused anyway (the two refusals of kv-enomem), and never a leak. */
Test(plugin_check_kv, injected_enomem_anywhere, .timeout = 120)
{
    int n_passed = 0;
    for (int n = 6; n < 1000; n++) {
        char args[256];
        snprintf(args, sizeof args, "mock --backend-opt kv_blocks=24 --backend-opt kv_block=4 "
                 "--backend-opt oom_at_step=%d", n);
        struct cli_run r = check(args);
        cr_assert_not_null(kv_line(r.out, "PASS", "end"), "oom_at_step=%d leaked:\n%s", n, r.out);
        if (r.rc == 0) {
            n_passed++;
            cli_run_free(&r);
            if (n_passed == 3)   /* the two refusals, then past the end */
                break;
            continue;
        }
        cr_assert_eq(r.rc, 1, "oom_at_step=%d: exit %d\n%s", n, r.rc, r.out);
        const char *f = strstr(r.out, "FAIL kv-");
        cr_assert_not_null(f, "oom_at_step=%d: no kv check failed:\n%s", n, r.out);
        cr_assert(strstr(f, "injected out of memory"), "oom_at_step=%d:\n%s", n, r.out);
        cli_run_free(&r);
    }
    cr_assert_eq(n_passed, 3);
}

/* ---- a broken pool: backend_kvbreak wraps the mock and breaks one rule ---------------- */

struct break_case {
    char mode[16];
    char check[16];      /* the kv check that must FAIL */
    char detail[64];     /* in its line */
};

ParameterizedTestParameters(plugin_check_kv, broken_pool_fails)
{
    static struct break_case cases[] = {
        {"info", "info", "65 of 64 blocks free"},
        {"leak", "end", "sequences were freed, 64 at the start: "},
        {"advance", "enomem-resume", "a refused step advanced the sequence?"},
        {"fork-round", "fork-einval", "seq_fork of 17 tokens (not a multiple of block_tokens"},
        {"batch", "batch", "3 sequences in one step differ from each alone"},
    };
    return cr_make_param_array(struct break_case, cases, sizeof cases / sizeof cases[0]);
}

static struct cli_run kvbreak(const char *mode)
{
    const char *b = getenv("AARMD_BUILDDIR");
    cr_assert_not_null(b, "AARMD_BUILDDIR is not set: run through make check");
    char args[2048];
    snprintf(args, sizeof args, "%s/tests/tools/.libs/backend_kvbreak.so --backend-opt inner=%s/plugins/mock/.libs/"
             "backend_mock.so --backend-opt kvbreak=%s --backend-opt kv_blocks=64", b, b, mode);
    return check(args);
}

ParameterizedTest(struct break_case *bc, plugin_check_kv, broken_pool_fails)
{
    struct cli_run r = kvbreak(bc->mode);
    cr_assert_eq(r.rc, 1, "kvbreak=%s: exit %d\n%s", bc->mode, r.rc, r.out);
    const char *l = kv_line(r.out, "FAIL", bc->check);
    cr_assert_not_null(l, "kvbreak=%s: no FAIL kv-%s\n%s", bc->mode, bc->check, r.out);
    const char *eol = strchr(l, '\n');
    const char *hit = strstr(l, bc->detail);
    cr_assert(hit && (!eol || hit < eol), "kvbreak=%s: '%s' not in the kv-%s line\n%s", bc->mode, bc->detail,
              bc->check, r.out);
    cli_run_free(&r);
}

/* The wrapper itself is faithful: unbroken, every check passes. */
Test(plugin_check_kv, unbroken_wrapper_passes)
{
    struct cli_run r = kvbreak("none");
    assert_all_kv_pass(&r);
    cli_run_free(&r);
}

/* plugin-check ARGS exits 2 (usage) with `msg` in its output. */
static void usage_error(const char *args, const char *msg)
{
    struct cli_run r = check(args);
    cr_assert_eq(r.rc, 2, "%s: %s", args, r.out);
    cr_assert(strstr(r.out, msg), "%s: '%s' not in: %s", args, msg, r.out);
    cli_run_free(&r);
}

Test(plugin_check_kv, option_errors)
{
    usage_error("mock --kv-fill", "--kv-fill needs a value");
    usage_error("mock --kv-fill -3", "--kv-fill -3: expected an integer >= 0 (tokens)");
    usage_error("mock --tol -1", "--tol -1: expected a number >= 0");
    usage_error("mock --tol 0 --reference cpu --model x.gguf", "--tol 0 means bitwise");
    usage_error("mock --prompt hello --model x.gguf", "--prompt needs --reference NAME");
    usage_error("mock --reference cpu --model x.gguf --prompt", "--prompt needs a value");
    struct cli_run r = check("--help");
    cr_assert_eq(r.rc, 0, "%s", r.out);
    cr_assert(strstr(r.out, "not paged: skipped"), "%s", r.out);
    cli_run_free(&r);
}

/* ---- the CPU backend on a synthetic model ---------------------------------------------- */

/* Writes a small synthetic model to a temporary file (the caller unlinks it). */
static void synth(const char *arch, uint32_t type, uint32_t n_ctx, char *path, size_t n)
{
    snprintf(path, n, "/tmp/aarmd-test-plugin-check-%s-XXXXXX", arch);
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    struct aarmd_synth_opts so = {.arch = arch, .type = type, .n_ctx = n_ctx, .seed = 7};
    char err[512];
    int rc = aarmd_gguf_synth(&so, path, err, sizeof err);
    if (rc != AARMD_OK)
        unlink(path);
    cr_assert_eq(rc, AARMD_OK, "gguf-synth %s: %s", arch, err);
}

/* The CPU backend is paged (then every check must pass) or not yet (then
 * the section must say so): accepted for the CPU only, never for the mock. */
static void cpu_run(const char *arch, uint32_t type, uint32_t n_ctx, const char *more)
{
    char path[256], args[1024];
    synth(arch, type, n_ctx, path, sizeof path);
    snprintf(args, sizeof args, "cpu --model %s --backend-opt threads=1 %s", path, more);
    struct cli_run r = check(args);
    unlink(path);
    cr_assert_eq(r.rc, 0, "exit %d:\n%s", r.rc, r.out);
    if (strstr(r.out, "PASS kv-info: not paged: skipped")) {
        cr_log_warn("cpu backend %s: not paged, the kv checks were skipped", arch);
    } else {
        assert_all_kv_pass(&r);
    }
    cli_run_free(&r);
}

Test(plugin_check_kv, cpu_llama, .timeout = 120)
{
    cpu_run("llama", AARMD_TYPE_Q8_0, 256, "");
}

Test(plugin_check_kv, cpu_gemma3_small_blocks, .timeout = 120)
{
    /* context 32: a sliding window of 16, shorter than the checks' sequences of up to 20 tokens in 4-token blocks */
    cpu_run("gemma3", AARMD_TYPE_F16, 32, "--backend-opt kv_block=4");
}

/* ---- --reference with --prompt: the reference's greedy continuation of a text -------------- */

Test(plugin_check_reference, prompt_text_through_the_tokenizer, .timeout = 120)
{
    const char *dir = getenv("AARMD_TEST_MODELS");
    char path[512], args[1024];
    snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", dir ? dir : "models");
    if (access(path, R_OK) != 0)
        cr_skip_test("%s is missing (tools/fetch-models.sh)", path);
    /* the same backend on both sides: every step must agree exactly */
    snprintf(args, sizeof args,
             "cpu --reference cpu --model %s --backend-opt threads=1 --prompt The_capital_of_France_is --steps 4 "
             "--tol 1e-6",
             path);
    struct cli_run r = check(args);
    cr_assert_eq(r.rc, 0, "exit %d:\n%s", r.rc, r.out);
    cr_assert(strstr(r.out, "COMPARE cpu vs cpu arch llama: 5 steps, top-1 agreement 5/5"), "%s", r.out);
    const char *g = strstr(r.out, "GREEDY 5/5 top-1 equal: \"");
    cr_assert_not_null(g, "%s", r.out);
    cr_assert(strchr(g + 25, '"') > g + 25, "an empty continuation: %s", r.out);
    cli_run_free(&r);
}

Test(plugin_check_reference, prompt_that_does_not_fit_the_model, .timeout = 60)
{
    char path[256];
    synth("llama", AARMD_TYPE_Q8_0, 256, path, sizeof path);
    char args[512];
    snprintf(args, sizeof args, "cpu --reference cpu --model %s --backend-opt threads=1 --prompt x --steps 2", path);
    struct cli_run r = check(args);
    unlink(path);
    cr_assert_neq(r.rc, 0, "%s", r.out);
    cr_assert(strstr(r.out, "FAIL --prompt: "), "%s", r.out);
    cli_run_free(&r);
}
