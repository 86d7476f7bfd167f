/*
 * cli_capture.h — runs an aarmd-cli subcommand in process with its stdout and
 * stderr captured, for the tests of tools/. Capture goes to unlinked temporary
 * files, not pipes (a model's JSON is larger than a pipe buffer), so nothing
 * is left in /tmp even when a test fails. I/O failures fail the test.
 */
#ifndef AARMD_TESTS_CLI_CAPTURE_H
#define AARMD_TESTS_CLI_CAPTURE_H

struct cli_run {
    int rc;       /* the subcommand's return value */
    char *out;    /* what it wrote to stdout (and stderr too when merged) */
    char *err;    /* what it wrote to stderr; "" when merged */
};

typedef int (*cli_main_fn)(int argc, char **argv);

/* Calls fn(argc, argv); merged != 0 sends stderr into the same file as stdout. */
struct cli_run cli_capture(cli_main_fn fn, int argc, const char **argv, int merged);

/* Splits `args` on spaces (no quoting) after argv[0] = name and calls cli_capture. */
struct cli_run cli_capture_str(cli_main_fn fn, const char *name, const char *args, int merged);

void cli_run_free(struct cli_run *r);

#endif
