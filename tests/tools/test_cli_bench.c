/* test_cli_bench.c — `aarmd-cli bench`, in process, on the mock backend and an
 * in-memory shape: --seqs measures each stream count of its list (JSON fields,
 * the first N is the ratio's base) and refuses bad lists with a message;
 * --tg-fresh decodes from an empty context (fewer KV bytes in the roofline);
 * --mixed adds a prompt's chunks to the decode steps, started again once whole. */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_capture.h"

/* Runs the subcommand with stdout and stderr captured. */
static struct cli_run bench(int argc, const char **argv)
{
    return cli_capture(aarmd_cli_bench, argc, argv, 0);
}

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

Test(cli_bench, seqs_json_has_one_entry_per_count)
{
    const char *argv[] = {"bench", "mock", "--shape", "smollm2-135m", "--type", "Q4_0", "-p", "8", "-n", "4",
                          "-r", "2", "--seqs", "1,3,2", "--json"};
    struct cli_run r = bench(ARGC(argv), argv);
    cr_assert_eq(r.rc, 0, "rc %d: %s", r.rc, r.err);
    struct json_object *o = json_tokener_parse(r.out);
    cr_assert_not_null(o, "not JSON: %s", r.out);
    struct json_object *seqs, *v;
    cr_assert(json_object_object_get_ex(o, "seqs", &seqs));
    cr_assert_eq(json_object_array_length(seqs), 3);
    const int want[] = {1, 3, 2};
    for (int i = 0; i < 3; i++) {
        struct json_object *e = json_object_array_get_idx(seqs, (size_t)i);
        cr_assert(json_object_object_get_ex(e, "n", &v));
        cr_assert_eq(json_object_get_int(v), want[i]);
        cr_assert(json_object_object_get_ex(e, "tg_best_tok_s", &v));
        double agg = json_object_get_double(v);
        cr_assert_gt(agg, 0.0);
        cr_assert(json_object_object_get_ex(e, "tg_per_stream_tok_s", &v));
        cr_assert_float_eq(json_object_get_double(v), agg / want[i], 1e-3 * agg);
        cr_assert(json_object_object_get_ex(e, "ratio_to_first", &v));
        if (i == 0)
            cr_assert_float_eq(json_object_get_double(v), 1.0, 1e-9);
    }
    cr_assert(json_object_object_get_ex(o, "loadavg_before", &v));
    json_object_put(o);
    cli_run_free(&r);
}

Test(cli_bench, seqs_table)
{
    const char *argv[] = {"bench", "mock", "--shape", "smollm2-135m", "--type", "Q8_0", "-p", "4", "-n", "2",
                          "-r", "1", "--seqs", "2"};
    struct cli_run r = bench(ARGC(argv), argv);
    cr_assert_eq(r.rc, 0, "rc %d: %s", r.rc, r.err);
    cr_assert(strstr(r.out, "tg agg tok/s") && strstr(r.out, "per-stream") && strstr(r.out, "loadavg"), "%s", r.out);
    cli_run_free(&r);
}

Test(cli_bench, bad_seqs_lists_are_refused)
{
    const char *bad[] = {"0", "", ",", "1,,2", "257", "two", "1,2,3,4,5,6,7,8,9", "-1", "4,"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[] = {"bench", "mock", "--shape", "smollm2-135m", "--type", "Q4_0", "--seqs", bad[i]};
        struct cli_run r = bench(ARGC(argv), argv);
        cr_assert_neq(r.rc, 0, "--seqs '%s' accepted", bad[i]);
        cr_assert(strstr(r.err, "--seqs"), "--seqs '%s': %s", bad[i], r.err);
        cli_run_free(&r);
    }
}

/* The roofline's bytes per token of one --json run (--bw 1000). */
static double roof_gb(const char *fresh, int *is_fresh)
{
    const char *argv[] = {"bench", "mock", "--shape", "smollm2-135m", "--type", "Q8_0", "-p", "64", "-n", "8",
                          "-r", "1", "--bw", "1000", "--json", fresh};
    struct cli_run r = bench(ARGC(argv) - (fresh ? 0 : 1), argv);
    cr_assert_eq(r.rc, 0, "rc %d: %s", r.rc, r.err);
    struct json_object *o = json_tokener_parse(r.out), *tg, *v;
    cr_assert_not_null(o, "not JSON: %s", r.out);
    cr_assert(json_object_object_get_ex(o, "tg", &tg) && json_object_object_get_ex(tg, "fresh", &v));
    *is_fresh = json_object_get_boolean(v);
    cr_assert(json_object_object_get_ex(tg, "best_tok_s", &v) && json_object_get_double(v) > 0);
    cr_assert(json_object_object_get_ex(o, "roofline_gb_per_tok", &v));
    double gb = json_object_get_double(v);
    json_object_put(o);
    cli_run_free(&r);
    return gb;
}

Test(cli_bench, tg_fresh_reads_fewer_keys)
{
    int f0 = -1, f1 = -1;
    double after = roof_gb(NULL, &f0), fresh = roof_gb("--tg-fresh", &f1);
    cr_assert_eq(f0, 0);
    cr_assert_eq(f1, 1);
    /* 30 layers x 3 kv heads x 64 x K+V x F16 x 64 prompt keys fewer on average */
    cr_assert_float_eq(after - fresh, 30.0 * 192 * 2 * 2 * 64 / 1e9, 1.1e-4, "%g vs %g GB", after, fresh);   /* JSON: 4 decimals */
    const char *argv[] = {"bench", "mock", "--shape", "smollm2-135m", "--type", "Q8_0", "-p", "8", "-n", "4",
                          "-r", "1", "--tg-fresh"};
    struct cli_run r = bench(ARGC(argv), argv);
    cr_assert_eq(r.rc, 0, "rc %d: %s", r.rc, r.err);
    cr_assert(strstr(r.out, "from an empty context"), "%s", r.out);
    cli_run_free(&r);
    const char *bad[] = {"bench", "mock", "--shape", "smollm2-135m", "--type", "Q8_0", "--seqs", "2", "--tg-fresh"};
    r = bench(ARGC(bad), bad);
    cr_assert_neq(r.rc, 0);
    cr_assert(strstr(r.err, "--tg-fresh is for the batch-1 test"), "%s", r.err);
    cli_run_free(&r);
}

/* pp 8 in chunks of 3 over 5 steps: 3 + 3 + 2 (whole: started again) + 3 + 3 = 14 prompt tokens. */
Test(cli_bench, mixed_steps_carry_prompt_chunks)
{
    const char *argv[] = {"bench", "mock", "--shape", "smollm2-135m", "--type", "Q4_0", "-p", "8", "-n", "5",
                          "-r", "2", "--seqs", "2,4", "--mixed", "3", "--json"};
    struct cli_run r = bench(ARGC(argv), argv);
    cr_assert_eq(r.rc, 0, "rc %d: %s", r.rc, r.err);
    struct json_object *o = json_tokener_parse(r.out), *seqs, *v;
    cr_assert_not_null(o, "not JSON: %s", r.out);
    cr_assert(json_object_object_get_ex(o, "mixed", &v) && json_object_get_int(v) == 3);
    cr_assert(json_object_object_get_ex(o, "seqs", &seqs));
    for (int i = 0; i < 2; i++) {
        struct json_object *e = json_object_array_get_idx(seqs, (size_t)i);
        cr_assert(json_object_object_get_ex(e, "step_tokens", &v));
        cr_assert_float_eq(json_object_get_double(v), 2.0 * (i + 1) + 14.0 / 5.0, 1e-6, "%s", r.out);
        cr_assert(json_object_object_get_ex(e, "step_ms", &v) && json_object_get_double(v) > 0.0);
        cr_assert(json_object_object_get_ex(e, "tg_best_tok_s", &v) && json_object_get_double(v) > 0.0);
    }
    json_object_put(o);
    cli_run_free(&r);
}

Test(cli_bench, bad_mixed_is_refused)
{
    const char *no_seqs[] = {"bench", "mock", "--shape", "smollm2-135m", "--type", "Q4_0", "--mixed", "4"};
    const char *too_long[] = {"bench", "mock", "--shape", "smollm2-135m", "--type", "Q4_0", "-p", "8", "--seqs", "2",
                              "--mixed", "9"};
    const char *zero[] = {"bench", "mock", "--shape", "smollm2-135m", "--type", "Q4_0", "--seqs", "2", "--mixed", "0"};
    struct cli_run r = bench(ARGC(no_seqs), no_seqs);
    cr_assert_neq(r.rc, 0);
    cr_assert(strstr(r.err, "give --seqs too"), "%s", r.err);
    cli_run_free(&r);
    r = bench(ARGC(too_long), too_long);
    cr_assert_neq(r.rc, 0);
    cr_assert(strstr(r.err, "more than the prompt's 8 tokens"), "%s", r.err);
    cli_run_free(&r);
    r = bench(ARGC(zero), zero);
    cr_assert_neq(r.rc, 0);
    cr_assert(strstr(r.err, "--mixed 0: bad value"), "%s", r.err);
    cli_run_free(&r);
}
