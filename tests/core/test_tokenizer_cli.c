/*
 * test_tokenizer_cli.c — tools/cli_tokenize.c through the built aarmd-cli:
 * tokenize prints ids on one line, detokenize gives the text back, bad model
 * and bad ids exit 1 with a message.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs `aarmd-cli ARGS < input`, returns the exit code; stdout/stderr in out/errbuf. */
static int run(const char *args, const char *input, size_t input_len, char *out, size_t cap, char *errbuf)
{
    char in_path[] = "/tmp/aarmd-cli-in-XXXXXX", out_path[] = "/tmp/aarmd-cli-out-XXXXXX";
    char err_path[] = "/tmp/aarmd-cli-err-XXXXXX";
    int fi = mkstemp(in_path), fo = mkstemp(out_path), fe = mkstemp(err_path);
    cr_assert(fi >= 0 && fo >= 0 && fe >= 0);
    cr_assert_eq(write(fi, input, input_len), (ssize_t)input_len);
    close(fi);
    close(fo);
    close(fe);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/aarmd-cli' %s < '%s' > '%s' 2> '%s'", getenv("AARMD_BUILDDIR"), args, in_path,
             out_path, err_path);
    int st = system(cmd);
    FILE *f = fopen(out_path, "rb");
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
    f = fopen(err_path, "rb");
    n = fread(errbuf, 1, 1023, f);
    errbuf[n] = '\0';
    fclose(f);
    remove(in_path);
    remove(out_path);
    remove(err_path);
    cr_assert(WIFEXITED(st), "%s", cmd);
    return WEXITSTATUS(st);
}

Test(tokenizer_cli, tokenize_and_back)
{
    char args[2048], out[8192], errbuf[1024], ids[8192];
    const char *models = getenv("AARMD_TEST_MODELS");
    snprintf(args, sizeof args, "tokenize --model '%s/SmolLM2-135M-Instruct.Q4_1.gguf' --parse-special", models);
    const char *text = "<|im_start|>user\nHello, 123 world!";
    cr_assert_eq(run(args, text, strlen(text), ids, sizeof ids, errbuf), 0, "%s", errbuf);
    cr_assert(!strncmp(ids, "1 ", 2), "starts with <|im_start|> (id 1): %s", ids);
    cr_assert_not_null(strchr(ids, '\n'));
    cr_assert_null(strchr(ids, '\n') + 1 < ids + strlen(ids) ? strchr(strchr(ids, '\n') + 1, '\n') : NULL);
    cr_assert_null(strstr(ids, "  "), "single spaces between ids: %s", ids);
    snprintf(args, sizeof args, "detokenize --model '%s/SmolLM2-135M-Instruct.Q4_1.gguf'", models);
    cr_assert_eq(run(args, ids, strlen(ids), out, sizeof out, errbuf), 0, "%s", errbuf);
    cr_assert_str_eq(out, "user\nHello, 123 world!", "control tokens print nothing");
}

Test(tokenizer_cli, add_special_adds_bos)
{
    char args[2048], out[8192], errbuf[1024];
    snprintf(args, sizeof args, "tokenize --model '%s/vocab/ggml-vocab-llama-spm.gguf' --add-special",
             getenv("AARMD_TEST_DATA"));
    cr_assert_eq(run(args, "Hello world", 11, out, sizeof out, errbuf), 0, "%s", errbuf);
    cr_assert_str_eq(out, "1 15043 3186\n");
    snprintf(args, sizeof args, "tokenize --model '%s/vocab/ggml-vocab-llama-spm.gguf'", getenv("AARMD_TEST_DATA"));
    cr_assert_eq(run(args, "Hello world", 11, out, sizeof out, errbuf), 0, "%s", errbuf);
    cr_assert_str_eq(out, "15043 3186\n");
}

Test(tokenizer_cli, errors)
{
    char args[2048], out[8192], errbuf[1024];
    cr_assert_eq(run("tokenize --model /nonexistent.gguf", "x", 1, out, sizeof out, errbuf), 1);
    cr_assert(strstr(errbuf, "/nonexistent.gguf"), "%s", errbuf);
    cr_assert_eq(run("tokenize", "x", 1, out, sizeof out, errbuf), 1);
    cr_assert(strstr(errbuf, "--model"), "%s", errbuf);
    snprintf(args, sizeof args, "detokenize --model '%s/vocab/ggml-vocab-gpt-2.gguf'", getenv("AARMD_TEST_DATA"));
    cr_assert_eq(run(args, "15496 50257", 11, out, sizeof out, errbuf), 1);
    cr_assert(strstr(errbuf, "50257") && strstr(errbuf, "out of range"), "%s", errbuf);
    cr_assert_eq(run(args, "15496 abc", 9, out, sizeof out, errbuf), 1);
    cr_assert(strstr(errbuf, "'abc'"), "%s", errbuf);
    cr_assert_eq(run(args, "-3", 2, out, sizeof out, errbuf), 1);
    cr_assert(strstr(errbuf, "not a token id"), "%s", errbuf);
}
