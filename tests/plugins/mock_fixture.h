/* mock_fixture.h — the mock backend loaded by the real loader with a context
 * and a vocabulary-only model, for the tests of plugins/mock (test_backend_mock,
 * test_mock_kv) and of the loader's wrappers (test_plugin_loader). Test code: helpers fail the current Criterion test where they
 * say so instead of returning errors. */
#ifndef AARMD_TESTS_MOCK_FIXTURE_H
#define AARMD_TESTS_MOCK_FIXTURE_H

#include <stdint.h>

#include "plugin.h"

/* One loaded mock; every pointer NULL until opened, err the last message. */
struct mock_fx {
    struct aarmd_host host;
    struct aarmd_plugin *p;
    struct aarmd_backend_ctx *ctx;
    struct aarmd_backend_model *m;
    char err[512];
};

/* A vocabulary-only llama description: n_vocab tokens, bos 1, eos `eos` (-1: none). */
struct aarmd_model_desc mock_fx_desc(uint32_t n_vocab, int32_t eos);

/* Loads the mock with opts (the caller keeps them alive), then ctx_new and
 * model_load of mock_fx_desc(n_vocab, 2). Fails the test when the plugin does
 * not load; returns ctx_new's or model_load's status (fx->err on failure).
 * Close with mock_fx_close whatever it returns. */
int mock_fx_open(struct mock_fx *fx, const struct aarmd_opt *opts, uint32_t n_opts, uint32_t n_vocab);

/* Frees the model, the context and the plugin (each may be NULL). */
void mock_fx_close(struct mock_fx *fx);

/* A new sequence of n_ctx positions on fx->m; fails the test if seq_new fails. */
struct aarmd_backend_seq *mock_fx_seq(struct mock_fx *fx, uint32_t n_ctx);

/* One step of one entry: appends toks to s, writing the last token's logits
 * when `logits` is not NULL. Returns the step's status (fx->err on failure). */
int mock_fx_feed(struct mock_fx *fx, struct aarmd_backend_seq *s, const int32_t *toks, uint32_t n, float *logits);

/* The index of the largest of l[0..n) (the first one on ties). */
uint32_t mock_fx_argmax(const float *l, uint32_t n);

#endif
