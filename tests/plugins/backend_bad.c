/*
 * backend_bad.c — deliberately broken plugins for the loader tests, one per
 * BAD_* macro (see tests/plugins/include.am). None of them is a usable backend.
 *   BAD_MAJOR  table with abi_major 2      BAD_NOSYM  no aarmd_backend_entry
 *   BAD_NOREQ  table without step          BAD_NULL   entry returns NULL
 *   BAD_QUIET  no optional methods; some calls fail or lie without a message
 *              (ctx_new on devices 7, 8, 9; model_load of n_vocab 13; step)
 */
#include <stdlib.h>

#include "aarmd_backend.h"

#define BAD_EXPORT __attribute__((visibility("default")))

struct aarmd_backend_ctx { int unused; };
struct aarmd_backend_model { int unused; };
struct aarmd_backend_seq { int unused; };

static int bad_ctx_new(const struct aarmd_host *host, int32_t device, struct aarmd_backend_ctx **out, char *err,
                       size_t errlen)
{
#ifdef BAD_QUIET
    if (device == 7)   /* fail without writing err */
        return AARMD_EDEVICE;
    if (device == 8)   /* claim success without a context */
        return AARMD_OK;
    if (device == 9)   /* not a status code */
        return 5;
#endif
    *out = calloc(1, sizeof **out);
    return *out ? AARMD_OK : AARMD_ENOMEM;
}

static void bad_ctx_free(struct aarmd_backend_ctx *ctx) { free(ctx); }

static int bad_model_load(struct aarmd_backend_ctx *ctx, const struct aarmd_model_desc *desc,
                          aarmd_progress_fn progress, void *progress_user, struct aarmd_backend_model **out,
                          char *err, size_t errlen)
{
#ifdef BAD_QUIET
    if (desc->n_vocab == 13)
        return AARMD_OK;   /* claims success, no model */
#endif
    *out = calloc(1, sizeof **out);
    return *out ? AARMD_OK : AARMD_ENOMEM;
}

static void bad_model_free(struct aarmd_backend_model *m) { free(m); }

static int bad_seq_new(struct aarmd_backend_model *m, uint32_t n_ctx, struct aarmd_backend_seq **out, char *err,
                       size_t errlen)
{
    *out = calloc(1, sizeof **out);
    return *out ? AARMD_OK : AARMD_ENOMEM;
}

static void bad_seq_free(struct aarmd_backend_seq *s) { free(s); }

#ifndef BAD_NOREQ
static int bad_step(struct aarmd_backend_model *m, const struct aarmd_batch_entry *entries, uint32_t n_entries,
                    char *err, size_t errlen)
{
    /* write a message without its terminator: the wrapper must terminate it */
    for (size_t i = 0; i < errlen; i++)
        err[i] = 'x';
    return AARMD_EINTERNAL;
}
#endif

__attribute__((unused)) /* BAD_NULL never returns it */
static const struct aarmd_backend bad_table = {
#ifdef BAD_MAJOR
    .abi_major = 2,
#else
    .abi_major = AARMD_ABI_MAJOR,
#endif
    .abi_minor = 0,
    .struct_size = sizeof(struct aarmd_backend),
#ifdef BAD_QUIET
    .name = "quiet",
#else
    .name = "bad",
#endif
    .version = "0",
    .ctx_new = bad_ctx_new,
    .ctx_free = bad_ctx_free,
    .model_load = bad_model_load,
    .model_free = bad_model_free,
    .seq_new = bad_seq_new,
    .seq_free = bad_seq_free,
#ifndef BAD_NOREQ
    .step = bad_step,
#endif
};

#ifdef BAD_NOSYM
/* the entry under a wrong name: the loader must not find it */
BAD_EXPORT const struct aarmd_backend *aarmd_backend_entry_v0(const struct aarmd_host *host);
BAD_EXPORT const struct aarmd_backend *aarmd_backend_entry_v0(const struct aarmd_host *host)
{
    return &bad_table;
}
#else
BAD_EXPORT const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host);
BAD_EXPORT const struct aarmd_backend *aarmd_backend_entry(const struct aarmd_host *host)
{
#ifdef BAD_NULL
    return NULL;
#else
    return &bad_table;
#endif
}
#endif
