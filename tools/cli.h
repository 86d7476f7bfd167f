/*
 * cli.h — aarmd-cli subcommands. Each takes argc/argv after the subcommand
 * name (argv[0] is the subcommand) and returns the process exit code.
 */
#ifndef AARMD_CLI_H
#define AARMD_CLI_H

struct aarmd_cli_cmd {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
};

int aarmd_cli_gguf_dump(int argc, char **argv);
int aarmd_cli_generate(int argc, char **argv);

int aarmd_cli_plugin_check(int argc, char **argv);
int aarmd_cli_gguf_synth(int argc, char **argv);
int aarmd_cli_tokenize(int argc, char **argv);
int aarmd_cli_detokenize(int argc, char **argv);
int aarmd_cli_bench_sampler(int argc, char **argv);
int aarmd_cli_bench(int argc, char **argv);
int aarmd_cli_loadgen(int argc, char **argv);
#endif
