/* cli_capture.c — in-process capture of an aarmd-cli subcommand's output (see cli_capture.h). */
#include "cli_capture.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int tmp_fd(void)
{
    char path[] = "/tmp/aarmd-test-cli-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0, "mkstemp failed");
    unlink(path);
    return fd;
}

/* The whole file behind fd as a string; closes fd. */
static char *slurp_fd(int fd)
{
    off_t n = lseek(fd, 0, SEEK_END);
    cr_assert_geq(n, 0);
    char *s = malloc((size_t)n + 1);
    cr_assert_not_null(s);
    cr_assert_eq(pread(fd, s, (size_t)n, 0), n);
    s[n] = '\0';
    close(fd);
    return s;
}

struct cli_run cli_capture(cli_main_fn fn, int argc, const char **argv, int merged)
{
    struct cli_run r;
    int out = tmp_fd(), err = merged ? out : tmp_fd();
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    dup2(out, 1);
    dup2(err, 2);
    r.rc = fn(argc, (char **)argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    r.out = slurp_fd(out);
    if (merged) {
        r.err = calloc(1, 1);
        cr_assert_not_null(r.err);
    } else {
        r.err = slurp_fd(err);
    }
    return r;
}

struct cli_run cli_capture_str(cli_main_fn fn, const char *name, const char *args, int merged)
{
    char buf[4096];
    const char *argv[64] = {name};
    int argc = 1;
    cr_assert_lt(strlen(args), sizeof buf, "arguments longer than %zu bytes", sizeof buf);
    snprintf(buf, sizeof buf, "%s", args);
    for (char *save = NULL, *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        cr_assert_lt(argc, 63, "more than 62 arguments");
        argv[argc++] = t;
    }
    argv[argc] = NULL;
    return cli_capture(fn, argc, argv, merged);
}

void cli_run_free(struct cli_run *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}
