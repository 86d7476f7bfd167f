/* test_settings.c — command line and --config parsing (core/settings.c):
 * defaults, both flag spellings, config file, CLI-wins, and every bad value. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "settings.h"

static struct aarmd_settings st;
static char err[1024];

static void setup(void)
{
    cr_assert_eq(aarmd_settings_init(&st), AARMD_OK);
    err[0] = '\0';
}

static void teardown(void)
{
    aarmd_settings_fini(&st);
}

/* argv from a NULL-terminated list of strings, argv[0] = "aarmd". */
static int parse(const char *const *args)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = "aarmd";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    return aarmd_settings_parse(&st, argc, argv, err, sizeof err);
}

#define PARSE(...) parse((const char *const[]){__VA_ARGS__, NULL})

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/aarmd-test-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

TestSuite(settings, .init = setup, .fini = teardown);

Test(settings, defaults_follow_the_contract)
{
    cr_assert_eq(PARSE("--model", "/m.gguf"), AARMD_OK, "%s", err);
    cr_assert_str_eq(st.backend, "cpu");
    cr_assert_str_eq(st.model, "/m.gguf");
    char wid[64];
    snprintf(wid, sizeof wid, "aarmd-%ld", (long)getpid());
    cr_assert_str_eq(st.worker_id, wid);
    cr_assert_eq(st.device, 0);
    cr_assert_str_eq(st.host, "127.0.0.1");
    cr_assert_eq(st.port, 8001);
    cr_assert_null(st.callback_url);
    cr_assert_null(st.plugin_dir);
    cr_assert_eq(st.n_backend_opts, 0);
    cr_assert_eq(st.ctx_size, 0, "0 = auto");
    cr_assert_eq(st.max_jobs, 0, "0 = backend's advice");
    cr_assert_eq(st.queue_depth, 64);
    cr_assert_eq(st.max_tokens_limit, 2048);
    cr_assert_eq(st.inference_timeout, 300);
    cr_assert_eq(st.step_tokens, 512);
    cr_assert_eq(st.prefill_chunk, 256);
    cr_assert_eq(st.prefix_cache_blocks, AARMD_PREFIX_CACHE_AUTO, "auto = a quarter of the pool");
    cr_assert_eq(st.sample_threads, 0, "0 = auto");
    cr_assert_null(st.api_token_file);
    cr_assert_eq(st.log_format, AARMD_LOG_JSON);
    cr_assert_eq(st.log_level, AARMD_LOG_INFO);
}

Test(settings, every_flag_both_spellings)
{
    int rc = PARSE("--backend=mock", "--model", "/abs/m.gguf", "--worker-id", "worker-abc", "--gpu-device", "2",
                   "--host=0.0.0.0", "--port", "0", "--callback-url", "http://localhost:9200/v2/internal/workers/ready",
                   "--plugin-dir", "/opt/p", "--backend-opt", "threads=4", "--backend-opt=x=y=z", "--ctx-size", "4096",
                   "--max-jobs", "3", "--queue-depth=0", "--max-tokens-limit", "100", "--inference-timeout", "9",
                   "--api-token-file", "/t", "--log-format", "text", "--log-level", "debug");
    cr_assert_eq(rc, AARMD_OK, "%s", err);
    cr_assert_str_eq(st.backend, "mock");
    cr_assert_str_eq(st.worker_id, "worker-abc");
    cr_assert_eq(st.device, 2);
    cr_assert_str_eq(st.host, "0.0.0.0");
    cr_assert_eq(st.port, 0);
    cr_assert_str_eq(st.callback_url, "http://localhost:9200/v2/internal/workers/ready");
    cr_assert_str_eq(st.plugin_dir, "/opt/p");
    cr_assert_eq(st.n_backend_opts, 2);
    cr_assert_str_eq(st.backend_opts[0].key, "threads");
    cr_assert_str_eq(st.backend_opts[0].value, "4");
    cr_assert_str_eq(st.backend_opts[1].key, "x");
    cr_assert_str_eq(st.backend_opts[1].value, "y=z");
    cr_assert_eq(st.ctx_size, 4096);
    cr_assert_eq(st.max_jobs, 3);
    cr_assert_eq(st.queue_depth, 0);
    cr_assert_eq(st.max_tokens_limit, 100);
    cr_assert_eq(st.inference_timeout, 9);
    cr_assert_str_eq(st.api_token_file, "/t");
    cr_assert_eq(st.log_format, AARMD_LOG_TEXT);
    cr_assert_eq(st.log_level, AARMD_LOG_DEBUG);
}

Test(settings, device_alias_and_last_wins)
{
    cr_assert_eq(PARSE("--model", "/m", "--device", "1", "--gpu-device", "5"), AARMD_OK, "%s", err);
    cr_assert_eq(st.device, 5);
}

Test(settings, help_and_version_skip_checks)
{
    cr_assert_eq(PARSE("--help"), AARMD_OK, "%s", err);
    cr_assert(st.help);
    cr_assert(strstr(aarmd_settings_usage(), "--max-tokens-limit"));
    aarmd_settings_fini(&st);
    setup();
    cr_assert_eq(PARSE("-V"), AARMD_OK, "%s", err);
    cr_assert(st.version);
}

struct bad_case {
    char args[3][64];       /* "" ends the list (arrays, not pointers: Criterion copies parameters) */
    char needle[96];        /* must appear in the message */
};

static struct bad_case bad_cases[] = {
    {{"--port", "x"}, "--port must be an integer in 0..65535 (got 'x')"},
    {{"--port", "65536"}, "--port must be an integer in 0..65535 (got '65536')"},
    {{"--port", "-1"}, "--port"},
    {{"--port", " 80"}, "--port"},
    {{"--port", "80x"}, "--port"},
    {{"--device", "-1"}, "--device must be an integer in 0..2147483647 (got '-1')"},
    {{"--gpu-device", "a"}, "--device"},
    {{"--ctx-size", "0"}, "--ctx-size must be an integer in 1..1048576 (got '0')"},
    {{"--max-jobs", "0"}, "--max-jobs must be an integer in 1..1024"},
    {{"--max-jobs", "2000"}, "--max-jobs"},
    {{"--queue-depth", "-3"}, "--queue-depth"},
    {{"--max-tokens-limit", "0"}, "--max-tokens-limit must be an integer in 1..1048576"},
    {{"--inference-timeout", "0"}, "--inference-timeout must be an integer in 1..604800"},
    {{"--step-tokens", "0"}, "--step-tokens must be an integer in 1..1048576 (got '0')"},
    {{"--step-tokens", "many"}, "--step-tokens must be an integer"},
    {{"--prefill-chunk", "0"}, "--prefill-chunk must be an integer in 1..1048576 (got '0')"},
    {{"--prefill-chunk", "-5"}, "--prefill-chunk"},
    {{"--prefix-cache-blocks", "-1"}, "--prefix-cache-blocks must be an integer in 0..16777216 (got '-1')"},
    {{"--prefix-cache-blocks", "auto"}, "--prefix-cache-blocks must be an integer"},
    {{"--sample-threads", "65"}, "--sample-threads must be an integer in 0..64 (got '65')"},
    {{"--sample-threads", "-2"}, "--sample-threads must be an integer in 0..64 (got '-2')"},
    {{"--log-format", "xml"}, "--log-format must be json or text (got 'xml')"},
    {{"--log-level", "loud"}, "--log-level must be debug, info, warn or error (got 'loud')"},
    {{"--backend-opt", "novalue"}, "--backend-opt must be KEY=VALUE (got 'novalue')"},
    {{"--backend-opt", "=v"}, "--backend-opt must be KEY=VALUE"},
    {{"--model="}, "--model needs a non-empty value"},
    {{"--backend="}, "--backend needs a non-empty value"},
    {{"--port"}, "--port needs a value"},
    {{"--frobnicate", "1"}, "unknown flag '--frobnicate'"},
    {{"--frob=1"}, "unknown flag '--frob'"},
    {{"-x"}, "unknown flag '-x'"},
    {{"stray"}, "unexpected argument 'stray'"},
    {{"--help=yes"}, "--help takes no value"},
    {{"--callback-url", "not a url"}, "--callback-url 'not a url'"},
    {{"--callback-url", "https://pm:9200/ready"}, "scheme must be http"},
    {{"--callback-url", "http:///ready"}, "--callback-url"},
    {{"--config", "/nonexistent/aarmd.conf"}, "--config /nonexistent/aarmd.conf: No such file or directory"},
};

ParameterizedTestParameters(settings, bad_flag_is_refused)
{
    return cr_make_param_array(struct bad_case, bad_cases, sizeof bad_cases / sizeof bad_cases[0]);
}

ParameterizedTest(struct bad_case *c, settings, bad_flag_is_refused)
{
    const char *args[10] = {"--model", "/m.gguf"};
    int n = 2;
    for (int i = 0; i < 3 && c->args[i][0]; i++)
        args[n++] = c->args[i];
    args[n] = NULL;
    int rc = parse(args);
    cr_assert_neq(rc, AARMD_OK, "accepted %s", c->args[0]);
    cr_assert(strstr(err, c->needle), "message '%s' lacks '%s'", err, c->needle);
}

Test(settings, model_is_required)
{
    cr_assert_eq(PARSE("--port", "1"), AARMD_EINVAL);
    cr_assert(strstr(err, "--model is required"), "%s", err);
}

Test(settings, worker_id_too_long)
{
    char id[300];
    memset(id, 'w', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    cr_assert_eq(PARSE("--model", "/m", "--worker-id", id), AARMD_EINVAL);
    cr_assert(strstr(err, "--worker-id is longer than 255 bytes"), "%s", err);
}

Test(settings, config_file_fills_and_cli_wins)
{
    const char *path = write_tmp("# sample\n"
                                 "model = /from/file.gguf\n"
                                 "  port=9000  \n"
                                 "\n"
                                 "worker-id = \"file-worker\"\n"
                                 "--queue-depth = 7\n"
                                 "; another comment\n"
                                 "backend-opt = a=1\n"
                                 "backend-opt = b=2\n"
                                 "log-format = text");
    int rc = PARSE("--config", path, "--port", "1234");
    unlink(path);
    cr_assert_eq(rc, AARMD_OK, "%s", err);
    cr_assert_str_eq(st.model, "/from/file.gguf");
    cr_assert_eq(st.port, 1234, "the command line wins");
    cr_assert_str_eq(st.worker_id, "file-worker", "quotes are stripped");
    cr_assert_eq(st.queue_depth, 7);
    cr_assert_eq(st.n_backend_opts, 2);
    cr_assert_str_eq(st.backend_opts[1].key, "b");
    cr_assert_eq(st.log_format, AARMD_LOG_TEXT);
}

Test(settings, batching_flags_and_keys)
{
    cr_assert_eq(PARSE("--model", "/m", "--step-tokens", "64", "--prefill-chunk=32", "--prefix-cache-blocks", "0"),
                 AARMD_OK, "%s", err);
    cr_assert_eq(st.step_tokens, 64);
    cr_assert_eq(st.prefill_chunk, 32);
    cr_assert_eq(st.prefix_cache_blocks, 0, "0 turns reuse off");
    aarmd_settings_fini(&st);
    setup();
    const char *path = write_tmp("model = /m\nstep-tokens = 1024\nprefill-chunk = 128\nprefix-cache-blocks = 77\n");
    int rc = PARSE("--config", path, "--prefill-chunk", "16");
    unlink(path);
    cr_assert_eq(rc, AARMD_OK, "%s", err);
    cr_assert_eq(st.step_tokens, 1024);
    cr_assert_eq(st.prefill_chunk, 16, "the command line wins");
    cr_assert_eq(st.prefix_cache_blocks, 77);
    cr_assert(strstr(aarmd_settings_usage(), "--step-tokens N"));
    cr_assert(strstr(aarmd_settings_usage(), "--prefill-chunk N"));
    cr_assert(strstr(aarmd_settings_usage(), "--prefix-cache-blocks N"));
    cr_assert(strstr(aarmd_settings_usage(), "--sample-threads N"));
    aarmd_settings_fini(&st);
    setup();
    cr_assert_eq(PARSE("--model", "/m", "--sample-threads", "6"), AARMD_OK, "%s", err);
    cr_assert_eq(st.sample_threads, 6);
}

Test(settings, cli_backend_opts_replace_the_files)
{
    const char *path = write_tmp("model=/m\nbackend-opt = a=1\nbackend-opt = b=2\n");
    int rc = PARSE("--backend-opt", "c=3", "--config", path);
    unlink(path);
    cr_assert_eq(rc, AARMD_OK, "%s", err);
    cr_assert_eq(st.n_backend_opts, 1);
    cr_assert_str_eq(st.backend_opts[0].key, "c");
    cr_assert_str_eq(st.backend_opts[0].value, "3");
}

Test(settings, config_file_errors_name_file_and_line)
{
    struct { const char *text, *needle; } cases[] = {
        {"model = /m\nport = 70000\n", ":2: port must be an integer in 0..65535 (got '70000')"},
        {"model = /m\nbogus = 1\n", ":2: unknown key 'bogus'"},
        {"just words\n", ":1: expected 'key = value' (got 'just words')"},
        {"config = /other\n", ":1: unknown key 'config'"},
        {"help = 1\n", ":1: unknown key 'help'"},
        {"model = /m\nlog-format = yaml\n", ":2: log-format must be json or text (got 'yaml')"},
        {"model = \n", ":1: model needs a non-empty value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        aarmd_settings_fini(&st);
        setup();
        cr_assert_eq(aarmd_settings_parse_file_text(&st, cases[i].text, "f.conf", 0, err, sizeof err), AARMD_EINVAL,
                     "case %zu accepted", i);
        cr_assert(strstr(err, "f.conf"), "case %zu: %s", i, err);
        cr_assert(strstr(err, cases[i].needle), "case %zu: '%s' lacks '%s'", i, err, cases[i].needle);
    }
}

/* conf/aarmd.conf.sample lists every option as "#key = default": uncommented,
 * each must parse, and every key of the file format must be there. */
Test(settings, sample_config_lists_every_option)
{
    const char *data = getenv("AARMD_TEST_DATA");
    cr_assert_not_null(data, "AARMD_TEST_DATA is not set");
    char path[1024];
    snprintf(path, sizeof path, "%s/../../conf/aarmd.conf.sample", data);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s", path);
    static char text[32768];
    size_t n = 0;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        const char *l = line;
        if (l[0] == '#' && l[1] >= 'a' && l[1] <= 'z' && strstr(l, " = "))
            l++;   /* an option line: uncomment it */
        n += (size_t)snprintf(text + n, sizeof text - n, "%s", l);
    }
    fclose(f);
    cr_assert_eq(aarmd_settings_parse_file_text(&st, text, path, 0, err, sizeof err), AARMD_OK, "%s", err);
    const char *keys[] = {"backend", "model", "worker-id", "device", "host", "port", "callback-url", "plugin-dir",
                          "backend-opt", "ctx-size", "max-jobs", "queue-depth", "max-tokens-limit",
                          "inference-timeout", "api-token-file", "log-format", "log-level", "step-tokens",
                          "prefill-chunk", "prefix-cache-blocks", "sample-threads"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "\n%s = ", keys[i]);
        cr_assert(strstr(text, needle), "the sample lacks %s", keys[i]);
    }
    /* the documented defaults are the real ones */
    struct aarmd_settings def;
    cr_assert_eq(aarmd_settings_init(&def), AARMD_OK);
    cr_assert_str_eq(st.backend, def.backend);
    cr_assert_str_eq(st.host, def.host);
    cr_assert_eq(st.port, def.port);
    cr_assert_eq(st.queue_depth, def.queue_depth);
    cr_assert_eq(st.max_tokens_limit, def.max_tokens_limit);
    cr_assert_eq(st.inference_timeout, def.inference_timeout);
    cr_assert_eq(st.log_format, def.log_format);
    cr_assert_eq(st.log_level, def.log_level);
    cr_assert_eq(st.device, def.device);
    cr_assert_eq(st.step_tokens, def.step_tokens);
    cr_assert_eq(st.prefill_chunk, def.prefill_chunk);
    cr_assert_eq(st.sample_threads, def.sample_threads);
    aarmd_settings_fini(&def);
}

Test(settings, token_file)
{
    char tok[64];
    const char *path = write_tmp("  s3cret-token\n\n");
    cr_assert_eq(aarmd_settings_read_token(path, tok, sizeof tok, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_str_eq(tok, "s3cret-token");
    unlink(path);

    path = write_tmp(" \n\t\n");
    cr_assert_eq(aarmd_settings_read_token(path, tok, sizeof tok, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "empty token"), "%s", err);
    unlink(path);

    path = write_tmp("two words\n");
    cr_assert_eq(aarmd_settings_read_token(path, tok, sizeof tok, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "whitespace or control"), "%s", err);
    unlink(path);

    path = write_tmp("0123456789012345678901234567890123456789012345678901234567890123456789");
    cr_assert_eq(aarmd_settings_read_token(path, tok, sizeof tok, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "longer than 63 bytes"), "%s", err);
    unlink(path);

    cr_assert_eq(aarmd_settings_read_token("/nonexistent/tok", tok, sizeof tok, err, sizeof err), AARMD_EIO);
    cr_assert(strstr(err, "/nonexistent/tok"), "%s", err);
}
