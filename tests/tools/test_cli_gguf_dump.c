/* test_cli_gguf_dump.c — `aarmd-cli gguf-dump`: text and JSON output of real
 * files agree with the reader; usage errors and bad files exit 1 on stderr. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_capture.h"
#include "gguf.h"

/* Runs the subcommand with stdout and stderr captured. */
static struct cli_run dump(int argc, const char **argv)
{
    return cli_capture(aarmd_cli_gguf_dump, argc, argv, 0);
}

static char *path_of(const char *env, const char *rel)
{
    const char *d = getenv(env);
    cr_assert_not_null(d, "%s not set", env);
    static char buf[4][1024];
    static int i;
    char *p = buf[i++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", d, rel);
    return p;
}

Test(cli_gguf_dump, usage_errors_exit_1)
{
    const char *none[] = {"gguf-dump", NULL};
    struct cli_run r = dump(1, none);
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "missing FILE"), "%s", r.err);
    cr_assert_str_empty(r.out);
    cli_run_free(&r);

    const char *bogus[] = {"gguf-dump", "--bogus", "x.gguf", NULL};
    r = dump(3, bogus);
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "unknown option '--bogus'"), "%s", r.err);
    cli_run_free(&r);

    const char *two[] = {"gguf-dump", "a.gguf", "b.gguf", NULL};
    r = dump(3, two);
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "more than one FILE"), "%s", r.err);
    cli_run_free(&r);
}

Test(cli_gguf_dump, help_documents_abbreviation)
{
    const char *argv[] = {"gguf-dump", "--help", NULL};
    struct cli_run r = dump(2, argv);
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "usage: aarmd-cli gguf-dump FILE [--json]"));
    cr_assert(strstr(r.out, "first 64 items"), "%s", r.out);
    cli_run_free(&r);
}

Test(cli_gguf_dump, bad_files_exit_1)
{
    const char *missing[] = {"gguf-dump", "/nonexistent/m.gguf", NULL};
    struct cli_run r = dump(2, missing);
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "gguf-dump: /nonexistent/m.gguf: No such file or directory"), "%s", r.err);
    cr_assert_str_empty(r.out);
    cli_run_free(&r);

    /* the first 4 KiB of a real model: counts exceed the file */
    const char *trunc[] = {"gguf-dump", path_of("AARMD_TEST_DATA", "../fuzz/corpus/head4k-SmolLM2-135M-Instruct.Q4_1.gguf"),
                           NULL};
    r = dump(2, trunc);
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, ": offset 8: tensor count 272 exceeds"), "%s", r.err);
    cr_assert_str_empty(r.out);
    cli_run_free(&r);

    const char *dir[] = {"gguf-dump", "--json", path_of("AARMD_TEST_DATA", "vocab"), NULL};
    r = dump(3, dir);
    cr_assert_eq(r.rc, 1);
    cr_assert(strstr(r.err, "not a regular file"), "%s", r.err);
    cli_run_free(&r);
}

Test(cli_gguf_dump, text_of_vocab_file)
{
    const char *argv[] = {"gguf-dump", path_of("AARMD_TEST_DATA", "vocab/ggml-vocab-gpt-2.gguf"), NULL};
    struct cli_run r = dump(2, argv);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(strstr(r.out, "version: 3\n"), "%s", r.out);
    cr_assert(strstr(r.out, "  general.architecture: string \"gpt2\"\n"));
    cr_assert(strstr(r.out, "  tokenizer.ggml.tokens: string[50257] [\"!\", \"\\\"\", \"#\""), "quotes escaped");
    cr_assert(strstr(r.out, ", ... (50257 items)]\n"));
    cr_assert(strstr(r.out, "tensors (0):\n"));
    cli_run_free(&r);
}

Test(cli_gguf_dump, json_of_model_matches_reader)
{
    const char *file = path_of("AARMD_TEST_MODELS", "SmolLM2-135M-Instruct.Q4_1.gguf");
    const char *argv[] = {"gguf-dump", file, "--json", NULL};
    struct cli_run r = dump(3, argv);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    struct json_object *root = json_tokener_parse(r.out), *v, *md, *ts;
    cr_assert_not_null(root, "not JSON");
    struct aarmd_gguf *g = NULL;
    char err[256];
    cr_assert_eq(aarmd_gguf_open(file, &g, err, sizeof err), AARMD_OK, "%s", err);

    cr_assert(json_object_object_get_ex(root, "version", &v));
    cr_assert_eq(json_object_get_int(v), (int)aarmd_gguf_version(g));
    cr_assert(json_object_object_get_ex(root, "data_offset", &v));
    cr_assert_eq((uint64_t)json_object_get_int64(v), aarmd_gguf_data_offset(g));
    cr_assert(json_object_object_get_ex(root, "metadata", &md));
    cr_assert_eq((uint64_t)json_object_object_length(md), aarmd_gguf_n_kv(g));

    struct json_object *tok, *n, *items, *trunc, *arch;
    cr_assert(json_object_object_get_ex(md, "tokenizer.ggml.tokens", &tok));
    cr_assert(json_object_object_get_ex(tok, "n", &n));
    const struct aarmd_gguf_value *a;
    cr_assert_eq(aarmd_gguf_get_arr(g, "tokenizer.ggml.tokens", &a), AARMD_OK);
    cr_assert_eq((uint64_t)json_object_get_int64(n), a->v.arr.n);
    cr_assert(json_object_object_get_ex(tok, "truncated", &trunc));
    cr_assert(json_object_get_boolean(trunc));
    cr_assert(json_object_object_get_ex(tok, "value", &items));
    cr_assert_eq(json_object_array_length(items), 64);
    cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(items, 0)), "<|endoftext|>");
    cr_assert(json_object_object_get_ex(md, "general.architecture", &arch));
    cr_assert(json_object_object_get_ex(arch, "value", &v));
    cr_assert_str_eq(json_object_get_string(v), "llama");

    cr_assert(json_object_object_get_ex(root, "tensors", &ts));
    cr_assert_eq((uint64_t)json_object_array_length(ts), aarmd_gguf_n_tensors(g));
    for (uint64_t i = 0; i < aarmd_gguf_n_tensors(g); i++) {
        const struct aarmd_gguf_tensor *t = aarmd_gguf_tensor_at(g, i);
        struct json_object *o = json_object_array_get_idx(ts, (size_t)i), *f, *dims;
        cr_assert(json_object_object_get_ex(o, "name", &f));
        cr_assert_str_eq(json_object_get_string(f), t->name);
        cr_assert(json_object_object_get_ex(o, "offset", &f));
        cr_assert_eq((uint64_t)json_object_get_int64(f), t->offset);
        cr_assert(json_object_object_get_ex(o, "bytes", &f));
        cr_assert_eq((uint64_t)json_object_get_int64(f), t->nbytes);
        cr_assert(json_object_object_get_ex(o, "dims", &dims));
        cr_assert_eq(json_object_array_length(dims), t->n_dims);
        cr_assert_eq(json_object_get_int64(json_object_array_get_idx(dims, 0)), t->ne[0]);
    }
    aarmd_gguf_free(g);
    json_object_put(root);
    cli_run_free(&r);
}

/* A file with a control byte in a key, ill-formed UTF-8 in a string and a NaN:
 * text escapes them, JSON stays valid UTF-8 JSON. */
static const char *odd_file(void)
{
    static char path[] = "/tmp/aarmd-test-dump-odd-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    static const unsigned char bytes[] = {
        'G', 'G', 'U', 'F', 3, 0, 0, 0,            /* magic, version 3 */
        0, 0, 0, 0, 0, 0, 0, 0,                    /* 0 tensors */
        2, 0, 0, 0, 0, 0, 0, 0,                    /* 2 kvs */
        3, 0, 0, 0, 0, 0, 0, 0, 'k', 0x1b, 'x',    /* key "k\x1bx" */
        8, 0, 0, 0,                                /* string */
        4, 0, 0, 0, 0, 0, 0, 0, 'a', 0xff, 0xc3, 0xa9,   /* "a", bad byte, "é" */
        3, 0, 0, 0, 0, 0, 0, 0, 'n', 'a', 'n',
        6, 0, 0, 0, 0x00, 0x00, 0xc0, 0x7f,        /* f32 NaN */
    };
    cr_assert_eq(write(fd, bytes, sizeof bytes), (ssize_t)sizeof bytes);
    close(fd);
    return path;
}

Test(cli_gguf_dump, escapes_odd_bytes)
{
    const char *file = odd_file();
    const char *text[] = {"gguf-dump", file, NULL};
    struct cli_run r = dump(2, text);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert(strstr(r.out, "  k\\x1bx: string \"a\\xff\xc3\xa9\"\n"), "%s", r.out);
    cr_assert(strstr(r.out, "  nan: f32 nan\n"), "%s", r.out);
    cli_run_free(&r);

    const char *json[] = {"gguf-dump", "--json", file, NULL};
    r = dump(3, json);
    unlink(file);
    cr_assert_eq(r.rc, 0, "%s", r.err);
    struct json_object *root = json_tokener_parse(r.out), *md, *kv, *v;
    cr_assert_not_null(root, "%s", r.out);
    cr_assert(json_object_object_get_ex(root, "metadata", &md));
    cr_assert(json_object_object_get_ex(md, "k\x1bx", &kv), "%s", r.out);
    cr_assert(json_object_object_get_ex(kv, "value", &v));
    cr_assert_str_eq(json_object_get_string(v), "a\xef\xbf\xbd\xc3\xa9");
    cr_assert(json_object_object_get_ex(md, "nan", &kv));
    cr_assert(json_object_object_get_ex(kv, "value", &v));
    cr_assert_str_eq(json_object_get_string(v), "nan");
    json_object_put(root);
    cli_run_free(&r);
}

/* Every fuzz corpus file dumps (exit 0, JSON that parses) or is refused (exit 1,
 * one error line naming the file); nothing else reaches stdout on refusal. */
Test(cli_gguf_dump, corpus_replays, .timeout = 120)
{
    const char *dir = path_of("AARMD_TEST_DATA", "../fuzz/corpus");
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    struct dirent *de;
    int n = 0, ok = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char file[2048];
        snprintf(file, sizeof file, "%s/%s", dir, de->d_name);
        const char *text[] = {"gguf-dump", file, NULL}, *json[] = {"gguf-dump", "--json", file, NULL};
        struct cli_run t = dump(2, text), j = dump(3, json);
        cr_assert_eq(t.rc, j.rc, "%s: text %d, json %d", file, t.rc, j.rc);
        if (t.rc == 0) {
            struct json_object *root = json_tokener_parse(j.out);
            cr_assert_not_null(root, "%s: --json output is not JSON", file);
            json_object_put(root);
            ok++;
        } else {
            cr_assert_eq(t.rc, 1, "%s", file);
            cr_assert_str_empty(t.out);
            cr_assert_str_empty(j.out);
            cr_assert(strstr(t.err, file) && strstr(t.err, ": offset "), "%s", t.err);
            cr_assert_eq(strchr(t.err, '\n'), t.err + strlen(t.err) - 1, "one line: %s", t.err);
        }
        cli_run_free(&t);
        cli_run_free(&j);
        n++;
    }
    closedir(d);
    cr_assert_geq(n, 10);
    cr_assert_geq(ok, 3);
}
