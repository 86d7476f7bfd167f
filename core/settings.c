/* settings.c — command-line and config-file parsing into struct aarmd_settings.
 * Validates values and names the culprit; it opens no model, plugin or socket. */
#include "config.h"
#include "settings.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "callback.h"

enum opt_kind { K_STR, K_U32, K_I32, K_PORT, K_OPTLIST, K_LOGFMT, K_LOGLEVEL, K_FLAG };

enum opt_id {
    O_BACKEND, O_MODEL, O_WORKER_ID, O_DEVICE, O_HOST, O_PORT, O_CALLBACK_URL, O_PLUGIN_DIR,
    O_BACKEND_OPT, O_CTX_SIZE, O_MAX_JOBS, O_QUEUE_DEPTH, O_MAX_TOKENS_LIMIT, O_INFERENCE_TIMEOUT,
    O_STEP_TOKENS, O_PREFILL_CHUNK, O_PREFIX_CACHE_BLOCKS, O_SAMPLE_THREADS,
    O_API_TOKEN_FILE, O_CONFIG, O_LOG_FORMAT, O_LOG_LEVEL, O_HELP, O_VERSION, O_COUNT
};

struct opt_def {
    const char *name;       /* long flag without dashes = config key */
    const char *alias;      /* second long name or NULL */
    char short_name;        /* 0 = none */
    enum opt_kind kind;
    size_t off;             /* member of struct aarmd_settings */
    int64_t min, max;       /* numeric range */
    bool cli_only;          /* not accepted in a config file */
};

#define OFF(m) offsetof(struct aarmd_settings, m)

static const struct opt_def opt_defs[O_COUNT] = {
    [O_BACKEND] = {"backend", NULL, 0, K_STR, OFF(backend), 0, 0, false},
    [O_MODEL] = {"model", NULL, 0, K_STR, OFF(model), 0, 0, false},
    [O_WORKER_ID] = {"worker-id", NULL, 0, K_STR, OFF(worker_id), 0, 0, false},
    [O_DEVICE] = {"device", "gpu-device", 0, K_I32, OFF(device), 0, INT32_MAX, false},
    [O_HOST] = {"host", NULL, 0, K_STR, OFF(host), 0, 0, false},
    [O_PORT] = {"port", NULL, 0, K_PORT, OFF(port), 0, 65535, false},
    [O_CALLBACK_URL] = {"callback-url", NULL, 0, K_STR, OFF(callback_url), 0, 0, false},
    [O_PLUGIN_DIR] = {"plugin-dir", NULL, 0, K_STR, OFF(plugin_dir), 0, 0, false},
    [O_BACKEND_OPT] = {"backend-opt", NULL, 0, K_OPTLIST, 0, 0, 0, false},
    [O_CTX_SIZE] = {"ctx-size", NULL, 0, K_U32, OFF(ctx_size), 1, 1048576, false},
    [O_MAX_JOBS] = {"max-jobs", NULL, 0, K_U32, OFF(max_jobs), 1, 1024, false},
    [O_QUEUE_DEPTH] = {"queue-depth", NULL, 0, K_U32, OFF(queue_depth), 0, 65536, false},
    [O_MAX_TOKENS_LIMIT] = {"max-tokens-limit", NULL, 0, K_U32, OFF(max_tokens_limit), 1, 1048576, false},
    [O_INFERENCE_TIMEOUT] = {"inference-timeout", NULL, 0, K_U32, OFF(inference_timeout), 1, 604800, false},
    [O_STEP_TOKENS] = {"step-tokens", NULL, 0, K_U32, OFF(step_tokens), 1, 1048576, false},
    [O_PREFILL_CHUNK] = {"prefill-chunk", NULL, 0, K_U32, OFF(prefill_chunk), 1, 1048576, false},
    [O_PREFIX_CACHE_BLOCKS] = {"prefix-cache-blocks", NULL, 0, K_U32, OFF(prefix_cache_blocks), 0, 16777216, false},
    [O_SAMPLE_THREADS] = {"sample-threads", NULL, 0, K_U32, OFF(sample_threads), 0, 64, false},
    [O_API_TOKEN_FILE] = {"api-token-file", NULL, 0, K_STR, OFF(api_token_file), 0, 0, false},
    [O_CONFIG] = {"config", NULL, 0, K_STR, OFF(config), 0, 0, true},
    [O_LOG_FORMAT] = {"log-format", NULL, 0, K_LOGFMT, OFF(log_format), 0, 0, false},
    [O_LOG_LEVEL] = {"log-level", NULL, 0, K_LOGLEVEL, OFF(log_level), 0, 0, false},
    [O_HELP] = {"help", NULL, 'h', K_FLAG, OFF(help), 0, 0, true},
    [O_VERSION] = {"version", NULL, 'V', K_FLAG, OFF(version), 0, 0, true},
};

static const char usage_text[] =
    "usage: aarmd --model /abs/path/model.gguf [options]\n"
    "\n"
    "  --backend NAME|PATH      plugin name (backend_NAME.so in the plugin dir) or file (default cpu)\n"
    "  --model PATH             GGUF model file (required)\n"
    "  --worker-id ID           id echoed in callback, logs and /health (default aarmd-<pid>)\n"
    "  --device N               device index, alias --gpu-device (default 0)\n"
    "  --host ADDR              listen address (default 127.0.0.1)\n"
    "  --port N                 listen port, 0 = ephemeral (default 8001)\n"
    "  --callback-url URL       pool manager's ready endpoint (default none: standalone)\n"
    "  --plugin-dir DIR         where backend names resolve (default $AARMD_PLUGIN_PATH, then pkglibdir)\n"
    "  --backend-opt K=V        passed verbatim to the plugin; repeatable\n"
    "  --ctx-size N             tokens of context per job (default min(model context, 8192))\n"
    "  --max-jobs N             jobs decoded concurrently (default: the backend's advice)\n"
    "  --queue-depth N          jobs waiting beyond those (default 64)\n"
    "  --max-tokens-limit N     upper bound accepted for max_tokens (default 2048)\n"
    "  --inference-timeout S    seconds before a job ends with INFERENCE_TIMEOUT (default 300)\n"
    "  --step-tokens N          tokens one batched step holds: decodes, then prefill chunks (default 512)\n"
    "  --prefill-chunk N        prompt tokens of one job per step (default 256)\n"
    "  --prefix-cache-blocks N  KV blocks kept for prefix reuse, 0 = off (default: a quarter of the pool)\n"
    "  --sample-threads N       threads drawing a step's tokens, 1 = the scheduler's alone\n"
    "                           (default 0 = auto: min(8, CPUs / 2, max jobs))\n"
    "  --api-token-file PATH    require 'Authorization: Bearer <token>' (all but /health)\n"
    "  --config PATH            file of 'key = value' lines using these long names; flags win\n"
    "  --log-format json|text   log lines on stderr (default json)\n"
    "  --log-level LEVEL        debug, info, warn or error (default info)\n"
    "  -h, --help               this text\n"
    "  -V, --version            the version\n";

const char *aarmd_settings_usage(void)
{
    return usage_text;
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

int aarmd_settings_init(struct aarmd_settings *s)
{
    memset(s, 0, sizeof *s);
    char wid[64];
    snprintf(wid, sizeof wid, "aarmd-%ld", (long)getpid());
    s->backend = xstrdup("cpu");
    s->worker_id = xstrdup(wid);
    s->host = xstrdup("127.0.0.1");
    s->port = 8001;
    s->queue_depth = 64;
    s->max_tokens_limit = 2048;
    s->inference_timeout = 300;
    s->step_tokens = 512;
    s->prefill_chunk = 256;
    s->prefix_cache_blocks = AARMD_PREFIX_CACHE_AUTO;
    s->log_format = AARMD_LOG_JSON;
    s->log_level = AARMD_LOG_INFO;
    if (!s->backend || !s->worker_id || !s->host) {
        aarmd_settings_fini(s);
        return AARMD_ENOMEM;
    }
    return AARMD_OK;
}

static void clear_backend_opts(struct aarmd_settings *s)
{
    for (uint32_t i = 0; i < s->n_backend_opts; i++) {
        free((char *)s->backend_opts[i].key);
        free((char *)s->backend_opts[i].value);
    }
    s->n_backend_opts = 0;
}

void aarmd_settings_fini(struct aarmd_settings *s)
{
    if (!s)
        return;
    for (int i = 0; i < O_COUNT; i++)
        if (opt_defs[i].kind == K_STR) {
            char **p = (char **)((char *)s + opt_defs[i].off);
            free(*p);
            *p = NULL;
        }
    clear_backend_opts(s);
}

static const struct opt_def *find_long(const char *name, size_t len)
{
    for (int i = 0; i < O_COUNT; i++) {
        const struct opt_def *d = &opt_defs[i];
        if (strlen(d->name) == len && memcmp(d->name, name, len) == 0)
            return d;
        if (d->alias && strlen(d->alias) == len && memcmp(d->alias, name, len) == 0)
            return d;
    }
    return NULL;
}

/* Strict unsigned/signed decimal parse of the whole string. */
static bool parse_int(const char *v, int64_t min, int64_t max, int64_t *out)
{
    if (!*v || isspace((unsigned char)*v))
        return false;
    errno = 0;
    char *end = NULL;
    long long x = strtoll(v, &end, 10);
    if (errno || !end || *end || x < min || x > max)
        return false;
    *out = x;
    return true;
}

/* Applies one value. `where` names the source for messages ("--port" or "file:3: port"). */
static int apply(struct aarmd_settings *s, const struct opt_def *d, const char *v, const char *where,
                 char *err, size_t errlen)
{
    void *field = (char *)s + d->off;
    switch (d->kind) {
    case K_STR: {
        if (!*v) {
            snprintf(err, errlen, "%s needs a non-empty value", where);
            return AARMD_EINVAL;
        }
        char *copy = strdup(v);
        if (!copy) {
            snprintf(err, errlen, "out of memory");
            return AARMD_ENOMEM;
        }
        free(*(char **)field);
        *(char **)field = copy;
        return AARMD_OK;
    }
    case K_U32:
    case K_I32:
    case K_PORT: {
        int64_t x;
        if (!parse_int(v, d->min, d->max, &x)) {
            snprintf(err, errlen, "%s must be an integer in %" PRId64 "..%" PRId64 " (got '%s')", where, d->min,
                     d->max, v);
            return AARMD_EINVAL;
        }
        if (d->kind == K_U32)
            *(uint32_t *)field = (uint32_t)x;
        else if (d->kind == K_I32)
            *(int32_t *)field = (int32_t)x;
        else
            *(uint16_t *)field = (uint16_t)x;
        return AARMD_OK;
    }
    case K_OPTLIST: {
        const char *eq = strchr(v, '=');
        if (!eq || eq == v) {
            snprintf(err, errlen, "%s must be KEY=VALUE (got '%s')", where, v);
            return AARMD_EINVAL;
        }
        if (s->n_backend_opts >= AARMD_MAX_BACKEND_OPTS) {
            snprintf(err, errlen, "%s: at most %d backend options", where, AARMD_MAX_BACKEND_OPTS);
            return AARMD_EINVAL;
        }
        char *k = strndup(v, (size_t)(eq - v));
        char *val = strdup(eq + 1);
        if (!k || !val) {
            free(k);
            free(val);
            snprintf(err, errlen, "out of memory");
            return AARMD_ENOMEM;
        }
        s->backend_opts[s->n_backend_opts].key = k;
        s->backend_opts[s->n_backend_opts].value = val;
        s->n_backend_opts++;
        return AARMD_OK;
    }
    case K_LOGFMT:
        if (strcmp(v, "json") == 0)
            s->log_format = AARMD_LOG_JSON;
        else if (strcmp(v, "text") == 0)
            s->log_format = AARMD_LOG_TEXT;
        else {
            snprintf(err, errlen, "%s must be json or text (got '%s')", where, v);
            return AARMD_EINVAL;
        }
        return AARMD_OK;
    case K_LOGLEVEL: {
        static const char *const names[] = {"debug", "info", "warn", "error"};
        for (int i = 0; i < 4; i++)
            if (strcmp(v, names[i]) == 0) {
                s->log_level = i;
                return AARMD_OK;
            }
        snprintf(err, errlen, "%s must be debug, info, warn or error (got '%s')", where, v);
        return AARMD_EINVAL;
    }
    case K_FLAG:
        *(bool *)field = true;
        return AARMD_OK;
    }
    return AARMD_EINTERNAL;
}

static int read_file(const char *path, char **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "--config %s: %s", path, strerror(errno));
        return AARMD_EIO;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int rc = AARMD_OK;
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
        if (len + 1 == cap) {
            if (cap >= (1u << 20)) {
                snprintf(err, errlen, "--config %s: larger than 1 MiB", path);
                rc = AARMD_EINVAL;
                goto fail;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                goto fail;
            buf = nb;
            cap *= 2;
        }
    }
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        fclose(f);
        return AARMD_ENOMEM;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "--config %s: %s", path, strerror(errno));
        rc = AARMD_EIO;
        goto fail;
    }
    fclose(f);
    buf[len] = '\0';
    *out = buf;
    return AARMD_OK;
fail:
    if (rc == AARMD_OK) {
        snprintf(err, errlen, "out of memory");
        rc = AARMD_ENOMEM;
    }
    free(buf);
    fclose(f);
    return rc;
}

static char *trim(char *a, char *b)   /* [a, b) → NUL-terminated, whitespace removed */
{
    while (a < b && isspace((unsigned char)*a))
        a++;
    while (b > a && isspace((unsigned char)b[-1]))
        b--;
    *b = '\0';
    return a;
}

int aarmd_settings_parse_file_text(struct aarmd_settings *s, const char *text, const char *name,
                                   uint64_t cli_set, char *err, size_t errlen)
{
    char *copy = strdup(text);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return AARMD_ENOMEM;
    }
    int rc = AARMD_OK;
    bool file_opts_cleared = false;
    unsigned line_no = 0;
    char *line = copy;
    while (line && *line) {
        char *nl = strchr(line, '\n');
        char *end = nl ? nl : line + strlen(line);
        char *next = nl ? nl + 1 : NULL;
        line_no++;
        char *l = trim(line, end);
        line = next;
        if (!*l || *l == '#' || *l == ';')
            continue;
        char *eq = strchr(l, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%u: expected 'key = value' (got '%s')", name, line_no, l);
            rc = AARMD_EINVAL;
            goto done;
        }
        char *key = trim(l, eq);
        char *val = trim(eq + 1, eq + 1 + strlen(eq + 1));
        size_t vl = strlen(val);
        if (vl >= 2 && ((val[0] == '"' && val[vl - 1] == '"') || (val[0] == '\'' && val[vl - 1] == '\''))) {
            val[vl - 1] = '\0';
            val++;
        }
        if (key[0] == '-' && key[1] == '-')
            key += 2;
        const struct opt_def *d = find_long(key, strlen(key));
        if (!d || d->cli_only) {
            snprintf(err, errlen, "%s:%u: unknown key '%s'", name, line_no, key);
            rc = AARMD_EINVAL;
            goto done;
        }
        int id = (int)(d - opt_defs);
        if (cli_set & (UINT64_C(1) << id))
            continue;   /* the command line wins */
        if (d->kind == K_OPTLIST && !file_opts_cleared) {
            clear_backend_opts(s);
            file_opts_cleared = true;
        }
        char where[160];
        snprintf(where, sizeof where, "%s:%u: %s", name, line_no, d->name);
        rc = apply(s, d, val, where, err, errlen);
        if (rc != AARMD_OK)
            goto done;
    }
done:
    free(copy);
    return rc;
}

static int check(const struct aarmd_settings *s, char *err, size_t errlen)
{
    if (!s->model) {
        snprintf(err, errlen, "--model is required (see --help)");
        return AARMD_EINVAL;
    }
    if (strlen(s->worker_id) > 255) {
        snprintf(err, errlen, "--worker-id is longer than 255 bytes");
        return AARMD_EINVAL;
    }
    if (s->callback_url) {
        char why[256];
        if (aarmd_callback_check_url(s->callback_url, why, sizeof why) != AARMD_OK) {
            snprintf(err, errlen, "--callback-url '%s': %s", s->callback_url, why);
            return AARMD_EINVAL;
        }
    }
    return AARMD_OK;
}

int aarmd_settings_parse(struct aarmd_settings *s, int argc, char **argv, char *err, size_t errlen)
{
    uint64_t set = 0;
    bool cli_opts_cleared = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const struct opt_def *d = NULL;
        const char *val = NULL;
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            d = find_long(name, nlen);
            if (!d) {
                snprintf(err, errlen, "unknown flag '%.*s' (see --help)", (int)(nlen + 2), a);
                return AARMD_EINVAL;
            }
            if (eq)
                val = eq + 1;
        } else if (a[0] == '-' && a[1] && !a[2]) {
            for (int k = 0; k < O_COUNT; k++)
                if (opt_defs[k].short_name == a[1])
                    d = &opt_defs[k];
            if (!d) {
                snprintf(err, errlen, "unknown flag '%s' (see --help)", a);
                return AARMD_EINVAL;
            }
        } else {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
            return AARMD_EINVAL;
        }
        char where[64];
        snprintf(where, sizeof where, "--%s", d->name);
        if (d->kind == K_FLAG) {
            if (val) {
                snprintf(err, errlen, "%s takes no value", where);
                return AARMD_EINVAL;
            }
            val = "";
        } else if (!val) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value", where);
                return AARMD_EINVAL;
            }
            val = argv[++i];
        }
        int id = (int)(d - opt_defs);
        if (d->kind == K_OPTLIST && !cli_opts_cleared) {
            clear_backend_opts(s);
            cli_opts_cleared = true;
        }
        int rc = apply(s, d, val, where, err, errlen);
        if (rc != AARMD_OK)
            return rc;
        set |= UINT64_C(1) << id;
    }
    if (s->help || s->version)
        return AARMD_OK;
    if (s->config) {
        char *text = NULL;
        int rc = read_file(s->config, &text, err, errlen);
        if (rc != AARMD_OK)
            return rc;
        rc = aarmd_settings_parse_file_text(s, text, s->config, set, err, errlen);
        free(text);
        if (rc != AARMD_OK)
            return rc;
    }
    return check(s, err, errlen);
}

int aarmd_settings_read_token(const char *path, char *token, size_t cap, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "--api-token-file %s: %s", path, strerror(errno));
        return AARMD_EIO;
    }
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    bool more = n == sizeof buf - 1 && fgetc(f) != EOF;
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "--api-token-file %s: read error", path);
        return AARMD_EIO;
    }
    if (memchr(buf, '\0', n)) {
        snprintf(err, errlen, "--api-token-file %s: token contains NUL bytes", path);
        return AARMD_EINVAL;
    }
    buf[n] = '\0';
    char *t = trim(buf, buf + n);
    size_t tl = strlen(t);
    for (size_t i = 0; i < tl; i++)
        if ((unsigned char)t[i] <= 0x20 || t[i] == 0x7f) {
            snprintf(err, errlen, "--api-token-file %s: token contains whitespace or control characters", path);
            return AARMD_EINVAL;
        }
    if (tl == 0) {
        snprintf(err, errlen, "--api-token-file %s: empty token", path);
        return AARMD_EINVAL;
    }
    if (more || tl >= cap) {
        snprintf(err, errlen, "--api-token-file %s: token longer than %zu bytes", path, cap - 1);
        return AARMD_EINVAL;
    }
    memcpy(token, t, tl + 1);
    return AARMD_OK;
}
