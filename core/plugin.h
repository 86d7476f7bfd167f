/*
 * plugin.h — loads a backend plugin with dlopen and is the only caller of its
 * table: one wrapper per method checks arguments, applies the defaults of
 * optional (NULL) slots and honours the plugin's abi_minor.
 */
#ifndef AARMD_PLUGIN_H
#define AARMD_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aarmd_backend.h"

struct aarmd_plugin;

/*
 * Resolves `name_or_path`: a value containing '/' (or ending in .so/.dylib) is
 * a path; otherwise backend_NAME.so (.dylib on macOS) is searched in
 * `plugin_dir` (may be NULL), then each dir of $AARMD_PLUGIN_PATH (':'-separated),
 * then the install's plugin dir. Loads it with RTLD_NOW|RTLD_LOCAL, calls the
 * optional probe, then the entry, and checks the table: abi_major equal to the
 * host's, struct_size large enough for the plugin's abi_minor (and for v1.0),
 * every REQUIRED method present. Each refusal names the path, both versions
 * and what is wrong; the library is dlclosed. `host` must outlive the plugin.
 * On success *out owns the handle; free with aarmd_plugin_free.
 */
int aarmd_plugin_load(const char *name_or_path, const char *plugin_dir, const struct aarmd_host *host,
                      struct aarmd_plugin **out, char *err, size_t errlen);
void aarmd_plugin_free(struct aarmd_plugin *p);   /* dlclose; accepts NULL */

const char *aarmd_plugin_path(const struct aarmd_plugin *p);   /* resolved file */
const struct aarmd_backend *aarmd_plugin_table(const struct aarmd_plugin *p);
/* Fills host with this build's ABI version, the log function (core/log.c) and the given options. */
void aarmd_plugin_host_init(struct aarmd_host *host, const struct aarmd_opt *opts, uint32_t n_opts, int32_t device);

/* Wrappers: same contracts as the table's methods (see aarmd_backend.h). */
int aarmd_plugin_ctx_new(struct aarmd_plugin *p, int32_t device, struct aarmd_backend_ctx **out,
                         char *err, size_t errlen);
void aarmd_plugin_ctx_free(struct aarmd_plugin *p, struct aarmd_backend_ctx *ctx);
int aarmd_plugin_device_info(struct aarmd_plugin *p, struct aarmd_backend_ctx *ctx,
                             struct aarmd_device_info *info, char *err, size_t errlen);
int aarmd_plugin_model_load(struct aarmd_plugin *p, struct aarmd_backend_ctx *ctx,
                            const struct aarmd_model_desc *desc, aarmd_progress_fn progress,
                            void *progress_user, struct aarmd_backend_model **out, char *err, size_t errlen);
void aarmd_plugin_model_free(struct aarmd_plugin *p, struct aarmd_backend_model *model);
uint64_t aarmd_plugin_model_bytes(struct aarmd_plugin *p, struct aarmd_backend_model *model);
int aarmd_plugin_seq_new(struct aarmd_plugin *p, struct aarmd_backend_model *model, uint32_t n_ctx,
                         struct aarmd_backend_seq **out, char *err, size_t errlen);
void aarmd_plugin_seq_free(struct aarmd_plugin *p, struct aarmd_backend_seq *seq);
int aarmd_plugin_seq_truncate(struct aarmd_plugin *p, struct aarmd_backend_seq *seq, uint32_t n,
                              char *err, size_t errlen);
int aarmd_plugin_step(struct aarmd_plugin *p, struct aarmd_backend_model *model,
                      const struct aarmd_batch_entry *entries, uint32_t n_entries, char *err, size_t errlen);
/* ABI 1.1. kv_info: AARMD_EUNSUPPORTED when the backend is not paged; info is
 * zeroed first and its struct_size set by the wrapper. seq_fork: AARMD_EUNSUPPORTED
 * when the backend cannot share blocks. */
int aarmd_plugin_kv_info(struct aarmd_plugin *p, struct aarmd_backend_model *model, struct aarmd_kv_info *info,
                         char *err, size_t errlen);
int aarmd_plugin_seq_fork(struct aarmd_plugin *p, struct aarmd_backend_seq *src, uint32_t n_tokens, uint32_t n_ctx,
                          struct aarmd_backend_seq **out, char *err, size_t errlen);
/* ABI 1.2. A logits buffer of `bytes` from the backend's logits_alloc when it
 * has one and it succeeds (*by_backend true), else from malloc; NULL only when
 * both fail. Free it with aarmd_plugin_logits_free and the same by_backend. */
void *aarmd_plugin_logits_alloc(struct aarmd_plugin *p, struct aarmd_backend_model *model, size_t bytes,
                                bool *by_backend);
void aarmd_plugin_logits_free(struct aarmd_plugin *p, struct aarmd_backend_model *model, void *q, bool by_backend);

/* 1 when the table has `method` (e.g. "seq_truncate") and the wrappers will
 * call it: the plugin's abi_minor and struct_size cover the slot and it is set. */
int aarmd_plugin_has_method(const struct aarmd_plugin *p, const char *method);

/* "invalid argument", "out of memory", ... for an AARMD_E* code. */
const char *aarmd_status_str(int status);

#endif
