/*
 * settings.h — the daemon's configuration: command-line flags and the
 * `--config` file (one `key = value` per line, keys are the long flag names
 * without the dashes, `#` starts a comment). A flag given on the command line
 * wins over the same key in the file; a repeatable flag (--backend-opt) given
 * on the command line replaces the file's list as a whole.
 *
 * (Named settings.h, not config.h: core/config.h would shadow the autoconf
 * config.h that every .c file of core/ includes first.)
 */
#ifndef AARMD_SETTINGS_H
#define AARMD_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aarmd_backend.h"   /* struct aarmd_opt */
#include "log.h"

#define AARMD_MAX_BACKEND_OPTS 64
#define AARMD_PREFIX_CACHE_AUTO UINT32_MAX   /* --prefix-cache-blocks not given */

struct aarmd_settings {
    char *backend;              /* --backend (default "cpu") */
    char *model;                /* --model (required unless help/version) */
    char *worker_id;            /* --worker-id (default "aarmd-<pid>") */
    int32_t device;             /* --device / --gpu-device (default 0) */
    char *host;                 /* --host (default "127.0.0.1") */
    uint16_t port;              /* --port (default 8001; 0 = ephemeral) */
    char *callback_url;         /* --callback-url (NULL = standalone) */
    char *plugin_dir;           /* --plugin-dir (NULL = $AARMD_PLUGIN_PATH, then pkglibdir) */
    struct aarmd_opt backend_opts[AARMD_MAX_BACKEND_OPTS]; /* --backend-opt k=v, owned strings */
    uint32_t n_backend_opts;
    uint32_t ctx_size;          /* --ctx-size (0 = auto: min(n_ctx_train, 8192)) */
    uint32_t max_jobs;          /* --max-jobs (0 = auto: the backend's advised_seqs, else 1) */
    uint32_t queue_depth;       /* --queue-depth (default 64) */
    uint32_t max_tokens_limit;  /* --max-tokens-limit (default 2048) */
    uint32_t inference_timeout; /* --inference-timeout seconds (default 300) */
    uint32_t step_tokens;       /* --step-tokens: tokens per batched step (default 512, >= 1) */
    uint32_t prefill_chunk;     /* --prefill-chunk: prompt tokens of one job per step (default 256, >= 1) */
    uint32_t prefix_cache_blocks; /* --prefix-cache-blocks (AARMD_PREFIX_CACHE_AUTO = a quarter of the pool, 0 = off) */
    uint32_t sample_threads;    /* --sample-threads: threads drawing a step's tokens (0 = auto) */
    char *api_token_file;       /* --api-token-file (NULL = no auth) */
    char *config;               /* --config */
    enum aarmd_log_format log_format; /* --log-format json|text (default json) */
    int log_level;              /* --log-level debug|info|warn|error (default info) */
    bool help, version;         /* --help / -h, --version / -V */
};

/* Defaults into s (strings allocated). Returns AARMD_OK or AARMD_ENOMEM. */
int aarmd_settings_init(struct aarmd_settings *s);
/* Frees every owned string; s may then be re-initialised. Accepts NULL. */
void aarmd_settings_fini(struct aarmd_settings *s);

/*
 * Parses argv[1..argc-1] over the defaults already in s, then the --config
 * file if one was named (its keys only fill what the command line did not
 * set), then checks the whole (model present, values in range, callback URL
 * parseable). Both `--flag value` and `--flag=value` are accepted.
 * On failure returns AARMD_EINVAL (or AARMD_EIO for an unreadable config
 * file) with a message naming the flag (or file:line) and the bad value.
 * With --help or --version it returns AARMD_OK right after the command line,
 * without checking the rest.
 */
int aarmd_settings_parse(struct aarmd_settings *s, int argc, char **argv, char *err, size_t errlen);

/* Same for the lines of a config file already in memory (`name` for messages);
 * keys set in `cli_set` (a bitmask from the command line pass) are skipped.
 * Exposed for tests; aarmd_settings_parse calls it. */
int aarmd_settings_parse_file_text(struct aarmd_settings *s, const char *text, const char *name,
                                   uint64_t cli_set, char *err, size_t errlen);

/* The --help text (static). */
const char *aarmd_settings_usage(void);

/*
 * Reads the bearer token of --api-token-file: the file's content with
 * surrounding whitespace removed. An unreadable file, an empty token or one
 * longer than cap-1 bytes is an error naming the path.
 */
int aarmd_settings_read_token(const char *path, char *token, size_t cap, char *err, size_t errlen);

#endif
