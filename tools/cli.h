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

#endif
