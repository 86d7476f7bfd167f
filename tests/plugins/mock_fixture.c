/* mock_fixture.c — opens and drives the mock backend for its tests
 * (mock_fixture.h); the checks themselves live in the test programs. */
#include "mock_fixture.h"

#include <criterion/criterion.h>
#include <string.h>

struct aarmd_model_desc mock_fx_desc(uint32_t n_vocab, int32_t eos)
{
    struct aarmd_model_desc d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    d.arch = "llama";
    d.name = "mock-test";
    d.n_vocab = n_vocab;
    d.bos_id = 1;
    d.eos_id = eos;
    return d;
}

int mock_fx_open(struct mock_fx *fx, const struct aarmd_opt *opts, uint32_t n_opts, uint32_t n_vocab)
{
    memset(fx, 0, sizeof *fx);
    aarmd_plugin_host_init(&fx->host, opts, n_opts, 0);
    int rc = aarmd_plugin_load("mock", NULL, &fx->host, &fx->p, fx->err, sizeof fx->err);
    cr_assert_eq(rc, AARMD_OK, "load: %s", fx->err);
    rc = aarmd_plugin_ctx_new(fx->p, 0, &fx->ctx, fx->err, sizeof fx->err);
    if (rc != AARMD_OK)
        return rc;
    struct aarmd_model_desc d = mock_fx_desc(n_vocab, 2);
    return aarmd_plugin_model_load(fx->p, fx->ctx, &d, NULL, NULL, &fx->m, fx->err, sizeof fx->err);
}

void mock_fx_close(struct mock_fx *fx)
{
    aarmd_plugin_model_free(fx->p, fx->m);
    aarmd_plugin_ctx_free(fx->p, fx->ctx);
    aarmd_plugin_free(fx->p);
}

struct aarmd_backend_seq *mock_fx_seq(struct mock_fx *fx, uint32_t n_ctx)
{
    struct aarmd_backend_seq *s = NULL;
    cr_assert_eq(aarmd_plugin_seq_new(fx->p, fx->m, n_ctx, &s, fx->err, sizeof fx->err), AARMD_OK, "%s", fx->err);
    return s;
}

int mock_fx_feed(struct mock_fx *fx, struct aarmd_backend_seq *s, const int32_t *toks, uint32_t n, float *logits)
{
    struct aarmd_batch_entry e = {.seq = s, .tokens = toks, .n_tokens = n, .want_logits = logits != NULL,
                                  .logits = logits};
    return aarmd_plugin_step(fx->p, fx->m, &e, 1, fx->err, sizeof fx->err);
}

uint32_t mock_fx_argmax(const float *l, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (l[i] > l[best])
            best = i;
    return best;
}
