/*
 * engine.h — everything one loaded model needs, built in the contract's
 * startup order: plugin (loaded and checked) → backend context on the device
 * → GGUF parsed → tokenizer and model description → weights loaded.
 * Shared by the daemon and aarmd-cli (generate, bench) so both run the same path.
 * Not thread-safe: after aarmd_engine_new only the scheduler thread uses the
 * backend; the tokenizer and the read-only fields may be read from any thread.
 */
#ifndef AARMD_ENGINE_H
#define AARMD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aarmd_backend.h"

struct aarmd_plugin;
struct aarmd_gguf;
struct aarmd_tokenizer;

struct aarmd_engine_opts {
    const char *backend;            /* name or path (--backend) */
    const char *plugin_dir;         /* --plugin-dir or NULL */
    const char *model_path;         /* --model */
    int32_t device;                 /* --device */
    const struct aarmd_opt *opts;   /* --backend-opt list */
    uint32_t n_opts;
    /* Called with percent 0, 25, 50, 75, 100 during the weight load; may be NULL. */
    void (*progress)(void *user, int percent);
    void *progress_user;
};

struct aarmd_engine {
    struct aarmd_plugin *plugin;
    struct aarmd_host host;                 /* outlives the plugin */
    struct aarmd_backend_ctx *ctx;
    struct aarmd_device_info device;
    struct aarmd_gguf *gguf;
    struct aarmd_tokenizer *tok;
    struct aarmd_model_desc *desc;
    struct aarmd_backend_model *model;
    char model_path[4096];                  /* absolute path */
    char model_name[256];                   /* general.name or file base name */
    char quant_kind[32];                    /* e.g. "Q4_K_M" */
    uint64_t model_bytes;                   /* what the backend reports */
};

/*
 * Builds an engine; on failure returns NULL-equivalent AARMD_E* with a message
 * naming the step and the reason ("plugin: ...", "model: PATH: ..."), and frees
 * whatever was built. On success *out is owned by the caller.
 */
int aarmd_engine_new(const struct aarmd_engine_opts *o, struct aarmd_engine **out, char *err, size_t errlen);
/* Frees in reverse order (model, ctx, desc, tokenizer, gguf, plugin); accepts NULL. */
void aarmd_engine_free(struct aarmd_engine *e);

#endif
