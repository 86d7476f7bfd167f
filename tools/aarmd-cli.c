/* aarmd-cli.c — the developer tool's dispatcher: one table of subcommands. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cli.h"

/* Each subcommand lives in its own tools/cli_*.c file and is listed here. */
static const struct aarmd_cli_cmd commands[] = {
    {"gguf-dump", "print a GGUF file's metadata and tensor table", aarmd_cli_gguf_dump},
    {"plugin-check", "load a backend plugin and check it through one tiny session", aarmd_cli_plugin_check},
    {"gguf-synth", "write a synthetic GGUF model with random weights", aarmd_cli_gguf_synth},
    {"tokenize", "text on stdin -> token ids (or --bench: encode throughput)", aarmd_cli_tokenize},
    {"detokenize", "token ids on stdin -> text", aarmd_cli_detokenize},
    {"generate", "one prompt through the engine and scheduler, tokens streamed to stdout", aarmd_cli_generate},
    {"bench-sampler", "samples/s of the sampler over random model-shaped logits", aarmd_cli_bench_sampler},
    {"bench", "prefill/decode throughput of a backend plugin (pp/tg tokens/s)", aarmd_cli_bench},
    {"loadgen", "N concurrent SSE clients against a running worker: tokens/s, TTFT, ITL", aarmd_cli_loadgen},
    {NULL, NULL, NULL},
};

static int usage(FILE *f)
{
    fprintf(f, "usage: aarmd-cli COMMAND [ARGS...]\n\ncommands:\n");
    for (const struct aarmd_cli_cmd *c = commands; c->name; c++)
        fprintf(f, "  %-14s %s\n", c->name, c->summary);
    return f == stderr ? 2 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help"))
        return usage(stdout);
    if (!strcmp(argv[1], "--version")) {
        printf("aarmd-cli %s\n", PACKAGE_VERSION);
        return 0;
    }
    for (const struct aarmd_cli_cmd *c = commands; c->name; c++)
        if (!strcmp(c->name, argv[1]))
            return c->run(argc - 1, argv + 1);
    fprintf(stderr, "aarmd-cli: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
