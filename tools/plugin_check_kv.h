/*
 * plugin_check_kv.h — the paged-KV (ABI 1.1) section of `aarmd-cli plugin-check`:
 * block accounting, ENOMEM that advances nothing, fork, and a multi-sequence
 * step, checked through the core's plugin wrappers on any backend.
 */
#ifndef AARMD_PLUGIN_CHECK_KV_H
#define AARMD_PLUGIN_CHECK_KV_H

#include <stdint.h>

#include "plugin.h"

/* PASS / FAIL / SKIP lines printed so far. */
struct aarmd_check_tally {
    int n_pass, n_fail, n_skip;
};

struct aarmd_kv_check_opts {
    double tol;          /* bound on max|dlogit| / max|reference logit|; 0 = bitwise equal */
    uint64_t fill_max;   /* most tokens the ENOMEM check may prefill to fill the pool; 0 = never fill */
};

#define AARMD_KV_CHECK_TOL 1e-4         /* default tol when the caller gives none */
#define AARMD_KV_CHECK_FILL_MAX 8192u   /* default fill_max */

/*
 * Runs the paged-KV checks on `model` of plugin `p`, whose description gives
 * n_vocab (logits per token, tokens drawn from [0, n_vocab)) and n_ctx_train
 * (bounds the sequences it creates; 0 = unknown). No sequence of the model may
 * be alive: the first check expects every block free. When kv_info returns
 * AARMD_EUNSUPPORTED (a valid answer) it prints one line "PASS kv-info: not
 * paged: skipped (...)" and returns; another error is a FAIL. Otherwise each check prints one line "PASS|FAIL|SKIP kv-NAME:
 * detail" to stdout and counts it in *t. Frees every sequence it creates;
 * the model stays the caller's.
 */
void aarmd_plugin_check_kv(struct aarmd_plugin *p, struct aarmd_backend_model *model, uint32_t n_vocab,
                           uint32_t n_ctx_train, const struct aarmd_kv_check_opts *o, struct aarmd_check_tally *t);

#endif
