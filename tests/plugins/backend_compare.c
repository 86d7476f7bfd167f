/* backend_compare.c — shared scaffolding of the GPU backends' tests (see backend_compare.h). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend_compare.h"
#include "gguf.h"
#include "gguf_synth.h"
#include "model.h"
#include "plugin.h"

void bc_model_synth(struct bc_model *m, const char *arch, uint32_t type)
{
    char err[512];
    struct aarmd_synth_opts o;
    memset(&o, 0, sizeof o);
    o.arch = arch;
    o.type = type;
    o.n_vocab = 512;
    o.seed = 7;
    snprintf(m->path, sizeof m->path, "/tmp/aarmd-test-%d-%s-%u.gguf", (int)getpid(), arch, type);
    cr_assert_eq(aarmd_gguf_synth(&o, m->path, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_gguf_open(m->path, &m->g, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_model_desc_from_gguf(m->g, &m->d, err, sizeof err), AARMD_OK, "%s", err);
}

void bc_model_free(struct bc_model *m)
{
    aarmd_model_desc_free(m->d);
    aarmd_gguf_free(m->g);
    unlink(m->path);
}

void bc_side_open(struct bc_side *s, struct aarmd_plugin *p, const struct aarmd_model_desc *d, uint32_t n_ctx)
{
    char err[512];
    s->p = p;
    cr_assert_eq(aarmd_plugin_ctx_new(p, 0, &s->ctx, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_model_load(p, s->ctx, d, NULL, NULL, &s->m, err, sizeof err), AARMD_OK, "%s", err);
    cr_assert_eq(aarmd_plugin_seq_new(p, s->m, n_ctx, &s->s, err, sizeof err), AARMD_OK, "%s", err);
}

void bc_side_close(struct bc_side *s)
{
    aarmd_plugin_seq_free(s->p, s->s);
    aarmd_plugin_model_free(s->p, s->m);
    aarmd_plugin_ctx_free(s->p, s->ctx);
}

/* the greedy token of a logits row */
static uint32_t bc_argmax(const float *l, uint32_t n)
{
    uint32_t b = 0;
    for (uint32_t i = 1; i < n; i++)
        if (l[i] > l[b])
            b = i;
    return b;
}

void bc_match_cpu(struct aarmd_plugin *p, const struct bc_case *c)
{
    struct aarmd_plugin *cpu = NULL;
    struct aarmd_host cpu_host;
    char err[512];
    aarmd_plugin_host_init(&cpu_host, NULL, 0, 0);
    cr_assert_eq(aarmd_plugin_load("cpu", NULL, &cpu_host, &cpu, err, sizeof err), AARMD_OK, "%s", err);
    struct bc_model l;
    bc_model_synth(&l, c->arch, c->type);
    struct bc_side a, b;
    bc_side_open(&a, p, l.d, 64);
    bc_side_open(&b, cpu, l.d, 64);
    uint32_t nv = l.d->n_vocab;
    float *la = malloc(nv * sizeof(float)), *lb = malloc(nv * sizeof(float));
    cr_assert(la && lb);
    int32_t prompt[20];
    for (int i = 0; i < 20; i++)
        prompt[i] = (int32_t)((i * 37 + 5) % (int)nv);
    int agree = 0, steps = 0;
    for (int step = 0; step < 6; step++) {
        int32_t next = (int32_t)bc_argmax(lb, nv);
        struct aarmd_batch_entry ea = {a.s, step ? &next : prompt, step ? 1u : 20u, 1, la};
        struct aarmd_batch_entry eb = {b.s, step ? &next : prompt, step ? 1u : 20u, 1, lb};
        cr_assert_eq(aarmd_plugin_step(p, a.m, &ea, 1, err, sizeof err), AARMD_OK, "%s", err);
        cr_assert_eq(aarmd_plugin_step(cpu, b.m, &eb, 1, err, sizeof err), AARMD_OK, "%s", err);
        double md = 0.0, sc = 0.0;
        for (uint32_t k = 0; k < nv; k++) {
            cr_assert(isfinite(la[k]), "logit %u not finite", k);
            md = fmax(md, fabs((double)la[k] - lb[k]));
            sc = fmax(sc, fabs((double)lb[k]));
        }
        cr_expect(md <= c->tol * sc, "%s type %u step %d: max|d| %g > %g * max|ref| %g", c->arch, c->type, step, md,
                  c->tol, sc);
        agree += bc_argmax(la, nv) == bc_argmax(lb, nv);
        steps++;
    }
    cr_expect(agree >= steps - 1, "%s type %u: top-1 agreed on %d of %d steps", c->arch, c->type, agree, steps);
    free(la);
    free(lb);
    bc_side_close(&a);
    bc_side_close(&b);
    bc_model_free(&l);
    aarmd_plugin_free(cpu);
}
