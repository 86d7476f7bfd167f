/*
 * plugin.c — finds, dlopens and checks a backend plugin, then wraps every
 * method of its table (argument checks, defaults, version gates, messages).
 * It knows nothing of models or scheduling; that is the caller's business.
 */
#include "config.h"
#include "plugin.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"

#ifndef AARMD_PLUGIN_SUFFIX
#define AARMD_PLUGIN_SUFFIX ".so"
#endif
#ifndef AARMD_PLUGIN_DIR
#define AARMD_PLUGIN_DIR "/usr/local/lib/aarmd"
#endif

struct aarmd_plugin {
    void *handle;
    char *path;
    const struct aarmd_backend *table;
    const struct aarmd_host *host;
};

/* Bytes a table must have for each abi_minor this host knows: the end of the
 * last method that minor added. Append a row when a minor adds methods. */
#define END_OF(member) (offsetof(struct aarmd_backend, member) + sizeof(((struct aarmd_backend *)0)->member))
static const size_t size_for_minor[AARMD_ABI_MINOR + 1] = {
    [0] = END_OF(step),
    [1] = END_OF(seq_fork),
    [2] = END_OF(logits_free),
};

/* ---- small helpers ------------------------------------------------------ */

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static int is_regular_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static int looks_like_path(const char *s)
{
    return strchr(s, '/') || ends_with(s, ".so") || ends_with(s, ".dylib");
}

static int valid_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* Suffixes tried in each directory: the platform's, then ".so", which is what
 * libtool names a -module on every platform, macOS included. */
static const char *const suffixes[] = {AARMD_PLUGIN_SUFFIX, ".so"};

/* Appends each "dir/backend_NAME<suffix>" to the list of searched places and
 * returns a malloc'd copy of the first that exists. */
static char *try_dir(const char *dir, size_t dirlen, const char *name, char *searched, size_t cap)
{
    char cand[4096];
    if (dirlen == 0)
        return NULL;
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        if (i > 0 && !strcmp(suffixes[i], suffixes[0]))
            continue;
        int n = snprintf(cand, sizeof cand, "%.*s%sbackend_%s%s", (int)dirlen, dir,
                         dir[dirlen - 1] == '/' ? "" : "/", name, suffixes[i]);
        if (n < 0 || (size_t)n >= sizeof cand)
            continue;
        size_t used = strlen(searched);
        if (used + 2 < cap)
            snprintf(searched + used, cap - used, "%s%s", used ? ", " : "", cand);
        if (is_regular_file(cand))
            return dup_str(cand);
    }
    return NULL;
}

/* Resolves a plugin name to a file (see plugin.h for the search order). */
static int resolve(const char *name_or_path, const char *plugin_dir, char **out, char *err, size_t errlen)
{
    *out = NULL;
    if (looks_like_path(name_or_path)) {
        if (!is_regular_file(name_or_path)) {
            set_err(err, errlen, "plugin %s: no such file", name_or_path);
            return AARMD_EIO;
        }
        /* a bare "x.so" must not make dlopen search the library path */
        if (strchr(name_or_path, '/')) {
            *out = dup_str(name_or_path);
        } else {
            size_t n = strlen(name_or_path) + 3;
            *out = malloc(n);
            if (*out)
                snprintf(*out, n, "./%s", name_or_path);
        }
        if (!*out) {
            set_err(err, errlen, "plugin %s: out of memory", name_or_path);
            return AARMD_ENOMEM;
        }
        return AARMD_OK;
    }
    if (!valid_name(name_or_path)) {
        set_err(err, errlen, "backend name '%s' is invalid: use letters, digits, '_' or '-', or give a path",
                name_or_path);
        return AARMD_EINVAL;
    }
    char searched[8192] = "";
    char *found = NULL;
    if (plugin_dir && *plugin_dir)
        found = try_dir(plugin_dir, strlen(plugin_dir), name_or_path, searched, sizeof searched);
    const char *env = getenv("AARMD_PLUGIN_PATH");
    for (const char *p = env; !found && p && *p;) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        found = try_dir(p, len, name_or_path, searched, sizeof searched);
        p = colon ? colon + 1 : p + len;
    }
    if (!found)
        found = try_dir(AARMD_PLUGIN_DIR, strlen(AARMD_PLUGIN_DIR), name_or_path, searched, sizeof searched);
    if (!found) {
        set_err(err, errlen, "backend '%s': backend_%s%s not found; searched: %s", name_or_path,
                name_or_path, AARMD_PLUGIN_SUFFIX, searched);
        return AARMD_EIO;
    }
    *out = found;
    return AARMD_OK;
}

/* Checks a table against this host (see plugin.h). Returns a status and a message. */
static int check_table(const char *path, const struct aarmd_backend *t, char *err, size_t errlen)
{
    if (t->abi_major != AARMD_ABI_MAJOR) {
        set_err(err, errlen, "%s: ABI major %u is not supported (host ABI %d.%d)", path,
                (unsigned)t->abi_major, AARMD_ABI_MAJOR, AARMD_ABI_MINOR);
        return AARMD_EUNSUPPORTED;
    }
    const uint32_t host_minor = AARMD_ABI_MINOR;
    size_t need = size_for_minor[t->abi_minor < host_minor ? t->abi_minor : host_minor];
    if (t->struct_size < need) {
        set_err(err, errlen,
                "%s: table struct_size %u is too small for ABI %u.%u (needs at least %zu bytes; host ABI %d.%d)",
                path, (unsigned)t->struct_size, (unsigned)t->abi_major, (unsigned)t->abi_minor, need,
                AARMD_ABI_MAJOR, AARMD_ABI_MINOR);
        return AARMD_EUNSUPPORTED;
    }
    if (!t->name || !*t->name) {
        set_err(err, errlen, "%s: table has no name", path);
        return AARMD_EINVAL;
    }
    const struct { const char *name; int present; } required[] = {
        {"ctx_new", t->ctx_new != NULL},       {"ctx_free", t->ctx_free != NULL},
        {"model_load", t->model_load != NULL}, {"model_free", t->model_free != NULL},
        {"seq_new", t->seq_new != NULL},       {"seq_free", t->seq_free != NULL},
        {"step", t->step != NULL},
    };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!required[i].present) {
            set_err(err, errlen, "%s: backend '%s' lacks the required method %s (ABI %u.%u)", path, t->name,
                    required[i].name, (unsigned)t->abi_major, (unsigned)t->abi_minor);
            return AARMD_EINVAL;
        }
    }
    return AARMD_OK;
}

/* ---- loading ------------------------------------------------------------ */

int aarmd_plugin_load(const char *name_or_path, const char *plugin_dir, const struct aarmd_host *host,
                      struct aarmd_plugin **out, char *err, size_t errlen)
{
    struct aarmd_plugin *p = NULL;
    char *path = NULL;
    void *handle = NULL;
    int rc;

    if (out)
        *out = NULL;
    if (!name_or_path || !host || !out) {
        set_err(err, errlen, "aarmd_plugin_load: %s is NULL",
                !name_or_path ? "name_or_path" : !host ? "host" : "out");
        return AARMD_EINVAL;
    }
    rc = resolve(name_or_path, plugin_dir, &path, err, errlen);
    if (rc != AARMD_OK)
        goto fail;

    dlerror();
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *de = dlerror();
        set_err(err, errlen, "%s: cannot load: %s", path, de ? de : "dlopen failed");
        rc = AARMD_EIO;
        goto fail;
    }

    dlerror();
    void *probe_sym = dlsym(handle, AARMD_BACKEND_PROBE_SYMBOL);
    if (probe_sym) {
        aarmd_backend_probe_fn probe;
        memcpy(&probe, &probe_sym, sizeof probe);   /* object to function pointer, as POSIX allows */
        char msg[512] = "";
        int prc = probe(host, msg, sizeof msg);
        if (prc != AARMD_OK) {
            msg[sizeof msg - 1] = '\0';
            set_err(err, errlen, "%s: the plugin cannot run here: %s", path,
                    msg[0] ? msg : aarmd_status_str(prc));
            rc = prc < 0 ? prc : AARMD_EUNSUPPORTED;
            goto fail;
        }
    }

    dlerror();
    void *entry_sym = dlsym(handle, AARMD_BACKEND_ENTRY_SYMBOL);
    if (!entry_sym) {
        const char *de = dlerror();
        set_err(err, errlen, "%s: not an aarmd backend: no %s symbol (%s)", path, AARMD_BACKEND_ENTRY_SYMBOL,
                de ? de : "symbol is NULL");
        rc = AARMD_EINVAL;
        goto fail;
    }
    aarmd_backend_entry_fn entry;
    memcpy(&entry, &entry_sym, sizeof entry);
    const struct aarmd_backend *table = entry(host);
    if (!table) {
        set_err(err, errlen, "%s: %s returned NULL (host ABI %d.%d)", path, AARMD_BACKEND_ENTRY_SYMBOL,
                AARMD_ABI_MAJOR, AARMD_ABI_MINOR);
        rc = AARMD_EINVAL;
        goto fail;
    }
    rc = check_table(path, table, err, errlen);
    if (rc != AARMD_OK)
        goto fail;

    p = calloc(1, sizeof *p);
    if (!p) {
        set_err(err, errlen, "%s: out of memory", path);
        rc = AARMD_ENOMEM;
        goto fail;
    }
    p->handle = handle;
    p->path = path;
    p->table = table;
    p->host = host;
    *out = p;
    return AARMD_OK;

fail:
    if (handle)
        dlclose(handle);
    free(path);
    return rc;
}

void aarmd_plugin_free(struct aarmd_plugin *p)
{
    if (!p)
        return;
    if (p->handle)
        dlclose(p->handle);
    free(p->path);
    free(p);
}

const char *aarmd_plugin_path(const struct aarmd_plugin *p)
{
    return p ? p->path : NULL;
}

const struct aarmd_backend *aarmd_plugin_table(const struct aarmd_plugin *p)
{
    return p ? p->table : NULL;
}

/* ---- host services ------------------------------------------------------ */

static void host_log_cb(void *user, int level, const char *msg)
{
    (void)user;
    if (level < AARMD_LOG_DEBUG)
        level = AARMD_LOG_DEBUG;
    if (level > AARMD_LOG_ERROR)
        level = AARMD_LOG_ERROR;
    aarmd_log(level, "backend", "%s", msg ? msg : "");
}

void aarmd_plugin_host_init(struct aarmd_host *host, const struct aarmd_opt *opts, uint32_t n_opts, int32_t device)
{
    if (!host)
        return;
    memset(host, 0, sizeof *host);
    host->abi_major = AARMD_ABI_MAJOR;
    host->abi_minor = AARMD_ABI_MINOR;
    host->struct_size = sizeof *host;
    host->log = host_log_cb;
    host->log_user = NULL;
    host->opts = opts;
    host->n_opts = opts ? n_opts : 0;
    host->device = device;
}

/* ---- wrappers ----------------------------------------------------------- */

/* A slot is callable when the plugin's minor has it, its table covers it and it is set. */
static int minor_ok(const struct aarmd_backend *t, uint32_t since_minor)
{
    return t->abi_minor >= since_minor;
}
/* struct_size first: a slot past the plugin's table must not even be read. */
#define HAS_SLOT(t, member, minor) \
    ((t)->struct_size >= END_OF(member) && minor_ok((t), (minor)) && (t)->member != NULL)

int aarmd_plugin_has_method(const struct aarmd_plugin *p, const char *method)
{
    if (!p || !method)
        return 0;
    const struct aarmd_backend *t = p->table;
#define M(member, minor) if (!strcmp(method, #member)) return HAS_SLOT(t, member, minor) ? 1 : 0
    M(ctx_new, 0);
    M(ctx_free, 0);
    M(device_info, 0);
    M(model_load, 0);
    M(model_free, 0);
    M(model_bytes, 0);
    M(seq_new, 0);
    M(seq_free, 0);
    M(seq_truncate, 0);
    M(step, 0);
    M(kv_info, 1);
    M(seq_fork, 1);
    M(logits_alloc, 2);
    M(logits_free, 2);
#undef M
    return 0;
}

/* Before a call: a usable buffer, emptied so that a silent failure is detectable. */
#define LOCAL_ERR(err, errlen)      \
    char local_err_[256];           \
    if (!(err) || !(errlen)) {      \
        (err) = local_err_;         \
        (errlen) = sizeof local_err_; \
    }                               \
    (err)[0] = '\0'

/* After a call: a negative status with a NUL-terminated, non-empty message. */
static int finish(const struct aarmd_plugin *p, const char *method, int rc, char *err, size_t errlen)
{
    if (rc == AARMD_OK)
        return AARMD_OK;
    err[errlen - 1] = '\0';
    if (rc > 0) {
        set_err(err, errlen, "backend %s: %s returned %d, which is not a status code", p->table->name, method, rc);
        return AARMD_EINTERNAL;
    }
    if (!err[0])
        set_err(err, errlen, "backend %s: %s returned %d (%s) without a message", p->table->name, method, rc,
                aarmd_status_str(rc));
    return rc;
}

int aarmd_plugin_ctx_new(struct aarmd_plugin *p, int32_t device, struct aarmd_backend_ctx **out,
                         char *err, size_t errlen)
{
    LOCAL_ERR(err, errlen);
    if (out)
        *out = NULL;
    if (!p || !out) {
        set_err(err, errlen, "ctx_new: %s is NULL", !p ? "plugin" : "out");
        return AARMD_EINVAL;
    }
    if (device < 0) {
        set_err(err, errlen, "backend %s: device %d is invalid (must be >= 0)", p->table->name, (int)device);
        return AARMD_EINVAL;
    }
    int rc = finish(p, "ctx_new", p->table->ctx_new(p->host, device, out, err, errlen), err, errlen);
    if (rc == AARMD_OK && !*out) {
        set_err(err, errlen, "backend %s: ctx_new returned OK without a context", p->table->name);
        return AARMD_EINTERNAL;
    }
    if (rc != AARMD_OK)
        *out = NULL;
    return rc;
}

void aarmd_plugin_ctx_free(struct aarmd_plugin *p, struct aarmd_backend_ctx *ctx)
{
    if (p && ctx)
        p->table->ctx_free(ctx);
}

static void copy_field(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

int aarmd_plugin_device_info(struct aarmd_plugin *p, struct aarmd_backend_ctx *ctx,
                             struct aarmd_device_info *info, char *err, size_t errlen)
{
    LOCAL_ERR(err, errlen);
    if (!p || !ctx || !info) {
        set_err(err, errlen, "device_info: %s is NULL", !p ? "plugin" : !ctx ? "ctx" : "info");
        return AARMD_EINVAL;
    }
    /* defaults first: a plugin may fill only some fields */
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
    copy_field(info->name, sizeof info->name, p->table->name);
    copy_field(info->memory_architecture, sizeof info->memory_architecture, "host");
    copy_field(info->worker_type, sizeof info->worker_type, p->table->name);
    info->advised_seqs = 1;
    if (!HAS_SLOT(p->table, device_info, 0))
        return AARMD_OK;
    int rc = finish(p, "device_info", p->table->device_info(ctx, info, err, errlen), err, errlen);
    info->struct_size = sizeof *info;
    info->name[sizeof info->name - 1] = '\0';
    info->memory_architecture[sizeof info->memory_architecture - 1] = '\0';
    info->worker_type[sizeof info->worker_type - 1] = '\0';
    return rc;
}

int aarmd_plugin_model_load(struct aarmd_plugin *p, struct aarmd_backend_ctx *ctx,
                            const struct aarmd_model_desc *desc, aarmd_progress_fn progress,
                            void *progress_user, struct aarmd_backend_model **out, char *err, size_t errlen)
{
    LOCAL_ERR(err, errlen);
    if (out)
        *out = NULL;
    if (!p || !ctx || !desc || !out) {
        set_err(err, errlen, "model_load: %s is NULL", !p ? "plugin" : !ctx ? "ctx" : !desc ? "desc" : "out");
        return AARMD_EINVAL;
    }
    if (desc->struct_size < sizeof *desc) {
        set_err(err, errlen, "model_load: desc->struct_size %u is smaller than %zu", (unsigned)desc->struct_size,
                sizeof *desc);
        return AARMD_EINVAL;
    }
    if (desc->n_vocab == 0) {
        set_err(err, errlen, "model_load: the model has no vocabulary (n_vocab 0)");
        return AARMD_EINVAL;
    }
    if (desc->n_tensors > 0 && !desc->tensors) {
        set_err(err, errlen, "model_load: %u tensors but tensors is NULL", (unsigned)desc->n_tensors);
        return AARMD_EINVAL;
    }
    int rc = p->table->model_load(ctx, desc, progress, progress_user, out, err, errlen);
    rc = finish(p, "model_load", rc, err, errlen);
    if (rc == AARMD_OK && !*out) {
        set_err(err, errlen, "backend %s: model_load returned OK without a model", p->table->name);
        return AARMD_EINTERNAL;
    }
    if (rc != AARMD_OK)
        *out = NULL;
    return rc;
}

void aarmd_plugin_model_free(struct aarmd_plugin *p, struct aarmd_backend_model *model)
{
    if (p && model)
        p->table->model_free(model);
}

uint64_t aarmd_plugin_model_bytes(struct aarmd_plugin *p, struct aarmd_backend_model *model)
{
    if (!p || !model || !HAS_SLOT(p->table, model_bytes, 0))
        return 0;
    return p->table->model_bytes(model);
}

int aarmd_plugin_seq_new(struct aarmd_plugin *p, struct aarmd_backend_model *model, uint32_t n_ctx,
                         struct aarmd_backend_seq **out, char *err, size_t errlen)
{
    LOCAL_ERR(err, errlen);
    if (out)
        *out = NULL;
    if (!p || !model || !out) {
        set_err(err, errlen, "seq_new: %s is NULL", !p ? "plugin" : !model ? "model" : "out");
        return AARMD_EINVAL;
    }
    if (n_ctx == 0) {
        set_err(err, errlen, "seq_new: n_ctx must be at least 1");
        return AARMD_EINVAL;
    }
    int rc = finish(p, "seq_new", p->table->seq_new(model, n_ctx, out, err, errlen), err, errlen);
    if (rc == AARMD_OK && !*out) {
        set_err(err, errlen, "backend %s: seq_new returned OK without a sequence", p->table->name);
        return AARMD_EINTERNAL;
    }
    if (rc != AARMD_OK)
        *out = NULL;
    return rc;
}

void aarmd_plugin_seq_free(struct aarmd_plugin *p, struct aarmd_backend_seq *seq)
{
    if (p && seq)
        p->table->seq_free(seq);
}

int aarmd_plugin_seq_truncate(struct aarmd_plugin *p, struct aarmd_backend_seq *seq, uint32_t n,
                              char *err, size_t errlen)
{
    LOCAL_ERR(err, errlen);
    if (!p || !seq) {
        set_err(err, errlen, "seq_truncate: %s is NULL", !p ? "plugin" : "seq");
        return AARMD_EINVAL;
    }
    if (!HAS_SLOT(p->table, seq_truncate, 0)) {
        set_err(err, errlen, "backend %s does not support seq_truncate", p->table->name);
        return AARMD_EUNSUPPORTED;
    }
    return finish(p, "seq_truncate", p->table->seq_truncate(seq, n, err, errlen), err, errlen);
}

int aarmd_plugin_step(struct aarmd_plugin *p, struct aarmd_backend_model *model,
                      const struct aarmd_batch_entry *entries, uint32_t n_entries, char *err, size_t errlen)
{
    LOCAL_ERR(err, errlen);
    if (!p || !model || !entries) {
        set_err(err, errlen, "step: %s is NULL", !p ? "plugin" : !model ? "model" : "entries");
        return AARMD_EINVAL;
    }
    if (n_entries == 0) {
        set_err(err, errlen, "step: no entries");
        return AARMD_EINVAL;
    }
    for (uint32_t i = 0; i < n_entries; i++) {
        const struct aarmd_batch_entry *e = &entries[i];
        if (!e->seq || !e->tokens || e->n_tokens == 0 || (e->want_logits && !e->logits)) {
            set_err(err, errlen, "step: entry %u has %s", (unsigned)i,
                    !e->seq ? "no sequence" : !e->tokens ? "no tokens (NULL)" : e->n_tokens == 0 ? "n_tokens 0"
                                                                                                  : "want_logits but no logits buffer");
            return AARMD_EINVAL;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (entries[j].seq == e->seq) {
                set_err(err, errlen, "step: entries %u and %u name the same sequence", (unsigned)j, (unsigned)i);
                return AARMD_EINVAL;
            }
        }
    }
    return finish(p, "step", p->table->step(model, entries, n_entries, err, errlen), err, errlen);
}

int aarmd_plugin_kv_info(struct aarmd_plugin *p, struct aarmd_backend_model *model, struct aarmd_kv_info *info,
                         char *err, size_t errlen)
{
    LOCAL_ERR(err, errlen);
    if (!p || !model || !info) {
        set_err(err, errlen, "kv_info: %s is NULL", !p ? "plugin" : !model ? "model" : "info");
        return AARMD_EINVAL;
    }
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
    if (!HAS_SLOT(p->table, kv_info, 1)) {
        set_err(err, errlen, "backend %s has no paged KV cache", p->table->name);
        return AARMD_EUNSUPPORTED;
    }
    int rc = finish(p, "kv_info", p->table->kv_info(model, info, err, errlen), err, errlen);
    if (rc == AARMD_OK && (info->block_tokens == 0 || info->blocks_free > info->blocks_total)) {
        set_err(err, errlen, "backend %s: kv_info reports block_tokens %u, %llu of %llu blocks free",
                p->table->name, (unsigned)info->block_tokens, (unsigned long long)info->blocks_free,
                (unsigned long long)info->blocks_total);
        return AARMD_EINTERNAL;
    }
    info->struct_size = sizeof *info;
    return rc;
}

int aarmd_plugin_seq_fork(struct aarmd_plugin *p, struct aarmd_backend_seq *src, uint32_t n_tokens, uint32_t n_ctx,
                          struct aarmd_backend_seq **out, char *err, size_t errlen)
{
    LOCAL_ERR(err, errlen);
    if (out)
        *out = NULL;
    if (!p || !src || !out) {
        set_err(err, errlen, "seq_fork: %s is NULL", !p ? "plugin" : !src ? "src" : "out");
        return AARMD_EINVAL;
    }
    if (n_ctx == 0 || n_tokens > n_ctx) {
        set_err(err, errlen, "seq_fork: %u shared tokens do not fit n_ctx %u", (unsigned)n_tokens, (unsigned)n_ctx);
        return AARMD_EINVAL;
    }
    if (!HAS_SLOT(p->table, seq_fork, 1)) {
        set_err(err, errlen, "backend %s does not support seq_fork", p->table->name);
        return AARMD_EUNSUPPORTED;
    }
    int rc = finish(p, "seq_fork", p->table->seq_fork(src, n_tokens, n_ctx, out, err, errlen), err, errlen);
    if (rc == AARMD_OK && !*out) {
        set_err(err, errlen, "backend %s: seq_fork returned OK without a sequence", p->table->name);
        return AARMD_EINTERNAL;
    }
    if (rc != AARMD_OK)
        *out = NULL;
    return rc;
}

void *aarmd_plugin_logits_alloc(struct aarmd_plugin *p, struct aarmd_backend_model *model, size_t bytes,
                                bool *by_backend)
{
    *by_backend = false;
    if (p && model && bytes && HAS_SLOT(p->table, logits_alloc, 2) && HAS_SLOT(p->table, logits_free, 2)) {
        void *q = p->table->logits_alloc(model, bytes);
        if (q) {
            *by_backend = true;
            return q;
        }
    }
    return malloc(bytes ? bytes : 1);
}

void aarmd_plugin_logits_free(struct aarmd_plugin *p, struct aarmd_backend_model *model, void *q, bool by_backend)
{
    if (!q)
        return;
    if (by_backend)
        p->table->logits_free(model, q);
    else
        free(q);
}

const char *aarmd_status_str(int status)
{
    switch (status) {
    case AARMD_OK: return "ok";
    case AARMD_EINVAL: return "invalid argument";
    case AARMD_ENOMEM: return "out of memory";
    case AARMD_EDEVICE: return "device error";
    case AARMD_EUNSUPPORTED: return "not supported";
    case AARMD_EIO: return "I/O error";
    case AARMD_EINTERNAL: return "internal error";
    case AARMD_ECANCELLED: return "cancelled";
    default: return "unknown status";
    }
}
