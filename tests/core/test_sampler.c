/*
 * test_sampler.c — core/sampler.c against an independent reference (double
 * precision, full sort of the vocabulary), draws against the distribution
 * (chi-square), and the edge rules: penalty, ties, NaN/inf, vocab 1 and 151,936.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <criterion/theories.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aarmd_backend.h"
#include "rng.h"
#include "sampler.h"

#define BIG_VOCAB 151936

static struct aarmd_sampler_params params(float t, float p, int k, float mp)
{
    return (struct aarmd_sampler_params){.temperature = t, .top_p = p, .top_k = k, .min_p = mp,
                                         .repetition_penalty = 1.0f, .seed = 1, .n_logprobs = 0};
}

/* Gaussian bulk N(0, sigma^2) plus `peaks` tokens at peak, peak - 1, ... */
static void model_logits(float *l, uint32_t n, uint64_t seed, double sigma, double peak, int peaks)
{
    struct aarmd_rng r;
    aarmd_rng_seed(&r, seed);
    for (uint32_t i = 0; i < n; i++) {
        double u1 = 1.0 - aarmd_rng_uniform(&r), u2 = aarmd_rng_uniform(&r);
        l[i] = (float)(sigma * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
    for (int j = 0; j < peaks && (uint32_t)j < n; j++)
        l[aarmd_rng_below(&r, n)] = (float)(peak - j);
}

/* ---- the reference ------------------------------------------------------------ */

struct ref {
    int32_t *id;
    double *p;
    size_t n;
    bool ambiguous;   /* a cut (top-p / min-p) lies within rounding of its threshold */
};

static const double *g_key;
static int by_key(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_key[x] != g_key[y])
        return g_key[x] > g_key[y] ? -1 : 1;
    return x < y ? -1 : 1;
}

/*
 * The documented pipeline, straightforwardly: penalty, NaN -> -inf, +inf rule,
 * sort everything, top-k, top-p (smallest prefix with cumulative >= p), min-p
 * (w >= min_p * w_max), renormalise. Returns -1 when every logit is -inf/NaN.
 */
static int ref_dist(const float *in, uint32_t n, const struct aarmd_sampler_params *sp, const int32_t *seen,
                    size_t n_seen, struct ref *out)
{
    double *l = malloc(n * sizeof *l), *w = malloc(n * sizeof *w);
    int32_t *ord = malloc(n * sizeof *ord);
    bool *pen = calloc(n, 1);
    cr_assert(l && w && ord && pen);
    for (uint32_t i = 0; i < n; i++)
        l[i] = in[i];
    for (size_t i = 0; i < n_seen; i++)
        if (seen[i] >= 0 && (uint32_t)seen[i] < n && !pen[seen[i]]) {
            pen[seen[i]] = true;
            double x = l[seen[i]];
            /* float arithmetic, as the contract's "divided"/"multiplied" acts on float logits */
            l[seen[i]] = x > 0 ? (double)((float)x / sp->repetition_penalty)
                       : x < 0 ? (double)((float)x * sp->repetition_penalty) : x;
        }
    double max = -INFINITY;
    for (uint32_t i = 0; i < n; i++) {
        if (isnan(l[i]))
            l[i] = -INFINITY;
        if (l[i] > max)
            max = l[i];
    }
    out->n = 0;
    out->ambiguous = false;
    int rc = 0;
    if (max == -INFINITY) {
        rc = -1;
        goto done;
    }
    if (max == INFINITY) {
        for (uint32_t i = 0; i < n; i++)
            l[i] = l[i] == INFINITY ? 0.0 : -INFINITY;
        max = 0;
    }
    size_t m = 0;
    for (uint32_t i = 0; i < n; i++)
        if (l[i] > -INFINITY)
            ord[m++] = (int32_t)i;
    g_key = l;
    qsort(ord, m, sizeof *ord, by_key);
    if (sp->temperature == 0.0f) {
        out->id[0] = ord[0];
        out->p[0] = 1.0;
        out->n = 1;
        goto done;
    }
    /* documented: a weight of 2^-126.5 (tempered log-weight -87.68) or less is probability 0 */
    const double zero_below = -126.5 * 0.69314718055994531;
    for (size_t i = 0; i < m; i++) {
        double z = (l[ord[i]] - max) / sp->temperature;
        if (fabs(z - zero_below) < 1e-3)
            out->ambiguous = true;
        w[i] = z <= zero_below ? 0.0 : exp(z);
    }
    while (m > 1 && w[m - 1] == 0.0)   /* sorted: the zero weights are a suffix */
        m--;
    if (sp->top_k > 0 && (size_t)sp->top_k < m)
        m = (size_t)sp->top_k;
    if (sp->top_p < 1.0f) {
        double z = 0, cum = 0;
        for (size_t i = 0; i < m; i++)
            z += w[i];
        double target = sp->top_p * z;
        size_t cut = m;
        for (size_t i = 0; i < m; i++) {
            cum += w[i];
            if (fabs(cum - target) < 1e-5 * z)
                out->ambiguous = true;
            if (cum >= target) {
                cut = i + 1;
                break;
            }
        }
        m = cut;
    }
    if (sp->min_p > 0.0f) {
        size_t cut = 0;
        while (cut < m && w[cut] >= sp->min_p)
            cut++;
        for (size_t i = 0; i < m; i++)
            if (fabs(w[i] - sp->min_p) < 1e-5)
                out->ambiguous = true;
        m = cut;
    }
    double z = 0;
    for (size_t i = 0; i < m; i++)
        z += w[i];
    for (size_t i = 0; i < m; i++) {
        out->id[i] = ord[i];
        out->p[i] = w[i] / z;
    }
    out->n = m;
done:
    free(l);
    free(w);
    free(ord);
    free(pen);
    return rc;
}

static struct ref ref_new(uint32_t n)
{
    struct ref r = {.id = malloc(n * sizeof(int32_t)), .p = malloc(n * sizeof(double))};
    cr_assert(r.id && r.p);
    return r;
}

static void ref_free(struct ref *r)
{
    free(r->id);
    free(r->p);
}

/* The sampler's final distribution for logits (copied: the sampler rewrites them). */
static size_t sampler_dist(struct aarmd_sampler *s, const float *logits, uint32_t n, int32_t *ids, double *probs)
{
    float *l = malloc(n * sizeof *l);
    cr_assert(l);
    memcpy(l, logits, n * sizeof *l);
    size_t k = 0;
    int rc = aarmd_sampler_probs(s, l, ids, probs, &k);
    cr_assert_eq(rc, AARMD_OK);
    free(l);
    return k;
}

/* Sampler vs reference: same tokens in the same order, probabilities within 1e-6. */
static void check_against_ref(const float *logits, uint32_t n, const struct aarmd_sampler_params *sp,
                              const int32_t *seen, size_t n_seen, const char *what)
{
    struct aarmd_sampler *s = aarmd_sampler_new(sp, n);
    cr_assert_not_null(s);
    aarmd_sampler_accept(s, seen, n_seen);
    int32_t *ids = malloc(n * sizeof *ids);
    double *probs = malloc(n * sizeof *probs);
    struct ref r = ref_new(n);
    size_t k = sampler_dist(s, logits, n, ids, probs);
    cr_assert_eq(ref_dist(logits, n, sp, seen, n_seen, &r), 0);

    double sum = 0;
    for (size_t i = 0; i < k; i++) {
        sum += probs[i];
        cr_assert(probs[i] > 0 && probs[i] <= 1.0 + 1e-12, "%s: prob %g", what, probs[i]);
        if (i > 0)
            cr_assert(probs[i] <= probs[i - 1] * (1 + 1e-6), "%s: not sorted at %zu", what, i);
    }
    cr_assert_lt(fabs(sum - 1.0), 1e-6, "%s: probabilities sum to %.9f", what, sum);
    cr_assert_geq(k, 1, "%s: nothing kept", what);
    if (sp->top_k > 0)
        cr_assert_leq(k, (size_t)sp->top_k, "%s: top-k %d kept %zu", what, (int)sp->top_k, k);
    if (sp->min_p > 0)
        for (size_t i = 0; i < k; i++)
            cr_assert_geq(probs[i], sp->min_p * probs[0] * (1 - 1e-6), "%s: min-p violated", what);
    if (!r.ambiguous) {
        cr_assert_eq(k, r.n, "%s: kept %zu, reference %zu", what, k, r.n);
        for (size_t i = 0; i < k; i++) {
            cr_assert_eq(ids[i], r.id[i], "%s: rank %zu id %d, reference %d", what, i, ids[i], r.id[i]);
            cr_assert_lt(fabs(probs[i] - r.p[i]), 1e-6 + 1e-5 * r.p[i], "%s: p[%zu] %.9g vs %.9g", what, i,
                         probs[i], r.p[i]);
        }
    }
    ref_free(&r);
    free(ids);
    free(probs);
    aarmd_sampler_free(s);
}

/* ---- theories over the filters ------------------------------------------------ */

TheoryDataPoints(sampler, filters_match_reference) = {
    DataPoints(float, 0.05f, 0.5f, 1.0f, 1.7f),
    DataPoints(float, 0.0f, 0.3f, 0.9f, 1.0f),
    DataPoints(int, 0, 1, 7, 300, 5000),
    DataPoints(float, 0.0f, 0.02f, 0.5f),
};

Theory((float t, float p, int k, float mp), sampler, filters_match_reference)
{
    const uint32_t n = 2000;
    float *l = malloc(n * sizeof *l);
    for (uint64_t seed = 1; seed <= 2; seed++) {
        model_logits(l, n, seed, seed == 1 ? 2.0 : 0.5, 6.0, 4);
        struct aarmd_sampler_params sp = params(t, p, k, mp);
        char what[96];
        snprintf(what, sizeof what, "T=%g p=%g k=%d min_p=%g seed=%d", t, p, k, mp, (int)seed);
        check_against_ref(l, n, &sp, NULL, 0, what);
    }
    free(l);
}

TheoryDataPoints(sampler, top_p_prefix_is_smallest) = {
    DataPoints(float, 0.3f, 1.0f, 2.0f),
    DataPoints(float, 0.0f, 0.1f, 0.5f, 0.95f, 0.999f),
    DataPoints(int, 0, 50),
    DataPoints(float, 0.0f),
};

/* top-p keeps the smallest prefix reaching p: the prefix without its last token falls short. */
Theory((float t, float p, int k, float mp), sampler, top_p_prefix_is_smallest)
{
    (void)mp;
    if (p >= 1.0f || t == 0.0f)
        return;
    const uint32_t n = 3000;
    float *l = malloc(n * sizeof *l);
    model_logits(l, n, 7, 1.5, 5.0, 3);
    struct aarmd_sampler_params sp = params(t, p, k, 0.0f);
    struct aarmd_sampler *s = aarmd_sampler_new(&sp, n);
    int32_t *ids = malloc(n * sizeof *ids);
    double *probs = malloc(n * sizeof *probs);
    size_t m = sampler_dist(s, l, n, ids, probs);
    /* the kept set's weights relative to the whole (top-k-limited) distribution */
    struct aarmd_sampler_params all = params(t, 1.0f, k, 0.0f);
    struct aarmd_sampler *s_all = aarmd_sampler_new(&all, n);
    int32_t *ids_all = malloc(n * sizeof *ids_all);
    double *p_all = malloc(n * sizeof *p_all);
    size_t m_all = sampler_dist(s_all, l, n, ids_all, p_all);
    cr_assert_leq(m, m_all);
    double cum = 0;
    for (size_t i = 0; i < m; i++) {
        cr_assert_eq(ids[i], ids_all[i], "kept set is not a prefix of the sorted distribution");
        cum += p_all[i];
    }
    cr_assert_geq(cum, p - 1e-6, "kept %zu tokens, mass %g < p %g", m, cum, p);
    if (m > 1)
        cr_assert_lt(cum - p_all[m - 1], p + 1e-6, "prefix of %zu already reached p", m - 1);
    free(ids);
    free(probs);
    free(ids_all);
    free(p_all);
    free(l);
    aarmd_sampler_free(s);
    aarmd_sampler_free(s_all);
}

/* ---- draws match the distribution ------------------------------------------------ */

/*
 * Chi-square threshold: the chi-square(df) quantile at 1e-6 by Wilson-Hilferty
 * (z = 4.753). With 100,000 draws at a fixed seed the test is deterministic; a
 * correct sampler would fail at one seed in a million, while a wrong
 * distribution (checked below: the same counts against temperature x1.15
 * must fail) sends the statistic far above it.
 */
static double chi2_threshold(int df)
{
    double a = 2.0 / (9.0 * df);
    return df * pow(1 - a + 4.753 * sqrt(a), 3);
}

static double chi2(const long *cnt, const int32_t *ids, const double *p, size_t k, long draws, int *df)
{
    double x = 0, pooled_e = 0;
    long pooled_o = 0;
    int cats = 0;
    for (size_t i = 0; i < k; i++) {
        double e = p[i] * draws;
        long o = cnt[ids[i]];
        if (e < 5) {   /* sparse tail: one pooled cell */
            pooled_e += e;
            pooled_o += o;
            continue;
        }
        x += (o - e) * (o - e) / e;
        cats++;
    }
    if (pooled_e > 0) {
        x += (pooled_o - pooled_e) * (pooled_o - pooled_e) / (pooled_e > 1e-9 ? pooled_e : 1e-9);
        cats++;
    }
    *df = cats - 1;
    return x;
}

struct chi_case {
    float t, p, mp;
    int k;
    uint32_t n;
};

ParameterizedTestParameters(sampler, draws_match_distribution)
{
    static struct chi_case cases[] = {
        {1.0f, 1.0f, 0.0f, 0, 40},     /* full-vocabulary path */
        {0.8f, 0.9f, 0.0f, 0, 200},    /* top-p scan */
        {1.3f, 1.0f, 0.0f, 12, 500},   /* top-k heap */
        {0.7f, 1.0f, 0.05f, 0, 300},   /* min-p scan */
        {1.0f, 0.95f, 0.0f, 1000, 3000}, /* top-k quickselect + top-p */
    };
    return cr_make_param_array(struct chi_case, cases, sizeof cases / sizeof *cases);
}

ParameterizedTest(struct chi_case *c, sampler, draws_match_distribution)
{
    const long draws = 100000;
    float *l = malloc(c->n * sizeof *l), *work = malloc(c->n * sizeof *work);
    model_logits(l, c->n, 3, 1.0, 2.5, 3);
    struct aarmd_sampler_params sp = params(c->t, c->p, c->k, c->mp);
    sp.seed = 12345;
    struct ref r = ref_new(c->n);
    cr_assert_eq(ref_dist(l, c->n, &sp, NULL, 0, &r), 0);
    cr_assert(!r.ambiguous);
    struct aarmd_sampler *s = aarmd_sampler_new(&sp, c->n);
    long *cnt = calloc(c->n, sizeof *cnt);
    bool *kept = calloc(c->n, 1);
    for (size_t i = 0; i < r.n; i++)
        kept[r.id[i]] = true;
    for (long d = 0; d < draws; d++) {
        memcpy(work, l, c->n * sizeof *l);
        struct aarmd_sample out;
        cr_assert_eq(aarmd_sampler_sample(s, work, &out), AARMD_OK);
        cr_assert(kept[out.id], "drew %d, outside the filtered set", out.id);
        cnt[out.id]++;
    }
    int df;
    double x = chi2(cnt, r.id, r.p, r.n, draws, &df);
    cr_assert_geq(df, 2);
    cr_assert_lt(x, chi2_threshold(df), "chi2 %.1f >= %.1f (df %d)", x, chi2_threshold(df), df);

    /* power: the same counts against a 15% hotter distribution must be rejected */
    struct aarmd_sampler_params hot = sp;
    hot.temperature = c->t * 1.15f;
    struct ref rh = ref_new(c->n);
    cr_assert_eq(ref_dist(l, c->n, &hot, NULL, 0, &rh), 0);
    double xh = chi2(cnt, rh.id, rh.p, rh.n, draws, &df);
    cr_assert_gt(xh, chi2_threshold(df), "a wrong distribution passed: chi2 %.1f (df %d)", xh, df);
    ref_free(&r);
    ref_free(&rh);
    free(cnt);
    free(kept);
    free(l);
    free(work);
    aarmd_sampler_free(s);
}

/* ---- rules ------------------------------------------------------------------- */

Test(sampler, repetition_penalty_rules)
{
    float logits[6] = {2.0f, -2.0f, 0.0f, 1.0f, 3.0f, -1.0f};
    struct aarmd_sampler_params sp = params(1.0f, 1.0f, 0, 0.0f);
    sp.repetition_penalty = 2.0f;
    struct aarmd_sampler *s = aarmd_sampler_new(&sp, 6);
    /* token 0 thrice, token 1 twice, 2 once, out-of-range ids ignored */
    const int32_t seen[] = {0, 1, 0, 2, 0, 1, -5, 6, 1000};
    aarmd_sampler_accept(s, seen, sizeof seen / sizeof *seen);
    int32_t ids[6];
    double p[6];
    size_t k = 0;
    float l[6];
    memcpy(l, logits, sizeof l);
    cr_assert_eq(aarmd_sampler_probs(s, l, ids, p, &k), AARMD_OK);
    /* penalised once each: positive divided, negative multiplied, zero unchanged */
    cr_assert_float_eq(l[0], 1.0f, 0.0f);
    cr_assert_float_eq(l[1], -4.0f, 0.0f);
    cr_assert_float_eq(l[2], 0.0f, 0.0f);
    cr_assert_float_eq(l[3], 1.0f, 0.0f);
    cr_assert_float_eq(l[4], 3.0f, 0.0f);
    cr_assert_float_eq(l[5], -1.0f, 0.0f);
    double want[6] = {1.0, -4.0, 0.0, 1.0, 3.0, -1.0}, z = 0;
    for (int i = 0; i < 6; i++)
        z += exp(want[i]);
    cr_assert_eq(k, 6);
    for (size_t i = 0; i < k; i++)
        cr_assert_lt(fabs(p[i] - exp(want[ids[i]]) / z), 1e-6);
    /* ties after the penalty: 0 and 3 both at 1.0, lower id first */
    cr_assert_eq(ids[0], 4);
    cr_assert_eq(ids[1], 0);
    cr_assert_eq(ids[2], 3);
    /* fresh logits next step: penalised once again, not twice */
    memcpy(l, logits, sizeof l);
    cr_assert_eq(aarmd_sampler_probs(s, l, ids, p, &k), AARMD_OK);
    cr_assert_float_eq(l[0], 1.0f, 0.0f);
    aarmd_sampler_free(s);

    /* penalty 1 is off; penalty 0.5 boosts */
    sp.repetition_penalty = 0.5f;
    s = aarmd_sampler_new(&sp, 6);
    aarmd_sampler_accept(s, seen, 3);
    memcpy(l, logits, sizeof l);
    cr_assert_eq(aarmd_sampler_probs(s, l, ids, p, &k), AARMD_OK);
    cr_assert_float_eq(l[0], 4.0f, 0.0f);
    cr_assert_float_eq(l[1], -1.0f, 0.0f);
    aarmd_sampler_free(s);

    /* the penalty over a larger random vocabulary, against the reference */
    const uint32_t n = 5000;
    float *big = malloc(n * sizeof *big);
    model_logits(big, n, 9, 2.0, 7.0, 5);
    int32_t hist[300];
    struct aarmd_rng g;
    aarmd_rng_seed(&g, 4);
    for (int i = 0; i < 300; i++)
        hist[i] = (int32_t)aarmd_rng_below(&g, 400);   /* many repeats */
    for (int i = 0; i < 5; i++)
        hist[i] = (int32_t)(n - 1 - (uint32_t)i);
    struct aarmd_sampler_params ps = params(0.9f, 0.95f, 0, 0.0f);
    ps.repetition_penalty = 1.3f;
    check_against_ref(big, n, &ps, hist, 300, "penalty 1.3");
    ps.repetition_penalty = 0.7f;
    check_against_ref(big, n, &ps, hist, 300, "penalty 0.7");
    free(big);
}

Test(sampler, ties_go_to_the_lowest_id)
{
    float base[6] = {1.0f, 3.0f, 2.0f, 3.0f, 3.0f, 0.5f};
    float l[6];
    struct aarmd_sample out;
    /* greedy */
    struct aarmd_sampler_params sp = params(0.0f, 1.0f, 0, 0.0f);
    struct aarmd_sampler *s = aarmd_sampler_new(&sp, 6);
    memcpy(l, base, sizeof l);
    cr_assert_eq(aarmd_sampler_sample(s, l, &out), AARMD_OK);
    cr_assert_eq(out.id, 1);
    aarmd_sampler_free(s);
    /* top-k 1 among three tied tokens keeps the lowest id, so every draw is 1 */
    sp = params(1.0f, 1.0f, 1, 0.0f);
    s = aarmd_sampler_new(&sp, 6);
    for (int i = 0; i < 50; i++) {
        memcpy(l, base, sizeof l);
        cr_assert_eq(aarmd_sampler_sample(s, l, &out), AARMD_OK);
        cr_assert_eq(out.id, 1);
    }
    aarmd_sampler_free(s);
    /* top-k 2 keeps 1 and 3, never 4 */
    sp = params(1.0f, 1.0f, 2, 0.0f);
    s = aarmd_sampler_new(&sp, 6);
    for (int i = 0; i < 200; i++) {
        memcpy(l, base, sizeof l);
        cr_assert_eq(aarmd_sampler_sample(s, l, &out), AARMD_OK);
        cr_assert(out.id == 1 || out.id == 3, "drew %d", out.id);
    }
    aarmd_sampler_free(s);
    /* top-p cut inside a tie: p just above 1/3 of three equal tokens keeps ids 1 and 3 */
    float eq[4] = {-INFINITY, 5.0f, 5.0f, 5.0f};
    sp = params(1.0f, 0.34f, 0, 0.0f);
    s = aarmd_sampler_new(&sp, 4);
    int32_t ids[4];
    double p[4];
    size_t k;
    memcpy(l, eq, sizeof eq);
    cr_assert_eq(aarmd_sampler_probs(s, l, ids, p, &k), AARMD_OK);
    cr_assert_eq(k, 2);
    cr_assert_eq(ids[0], 1);
    cr_assert_eq(ids[1], 2);
    aarmd_sampler_free(s);
}

Test(sampler, vocab_of_one)
{
    struct aarmd_sampler_params sets[] = {params(0, 1, 0, 0), params(1, 1, 0, 0), params(0.7f, 0.1f, 0, 0),
                                          params(1, 1, 1, 0), params(1, 1, 5, 0.9f), params(2, 0, 0, 1)};
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) {
        sets[i].n_logprobs = 3;
        struct aarmd_sampler *s = aarmd_sampler_new(&sets[i], 1);
        cr_assert_not_null(s);
        for (int j = 0; j < 10; j++) {
            float l = (float)j - 3.0f;
            struct aarmd_sample out;
            cr_assert_eq(aarmd_sampler_sample(s, &l, &out), AARMD_OK);
            cr_assert_eq(out.id, 0);
            cr_assert_float_eq(out.logprob, 0.0f, 1e-7);
            cr_assert_eq(out.n_top, 1);
        }
        float bad = NAN;
        struct aarmd_sample out;
        cr_assert_eq(aarmd_sampler_sample(s, &bad, &out), AARMD_EINVAL);
        aarmd_sampler_free(s);
    }
}

struct big_case {
    float t, p, mp;
    int k;
};

ParameterizedTestParameters(sampler, vocab_151936)
{
    static struct big_case cases[] = {
        {0.8f, 0.9f, 0.0f, 0}, {1.0f, 1.0f, 0.0f, 0}, {0.7f, 1.0f, 0.0f, 40},   {1.0f, 1.0f, 0.05f, 0},
        {0.0f, 1.0f, 0.0f, 0}, {1.2f, 0.5f, 0.0f, 0}, {1.0f, 0.9f, 0.0f, 2000}, {0.8f, 0.99f, 0.01f, 0},
        /* nuclei of thousands of tokens: top-p lowers its threshold band by band */
        {0.8f, 0.95f, 0.0f, 0}, {0.8f, 0.99f, 0.0f, 0}, {1.0f, 0.999f, 0.0f, 0},
    };
    return cr_make_param_array(struct big_case, cases, sizeof cases / sizeof *cases);
}

ParameterizedTest(struct big_case *c, sampler, vocab_151936)
{
    float *l = malloc(BIG_VOCAB * sizeof *l), *work = malloc(BIG_VOCAB * sizeof *work);
    model_logits(l, BIG_VOCAB, 21, 2.0, 12.0, 8);
    struct aarmd_sampler_params sp = params(c->t, c->p, c->k, c->mp);
    char what[96];
    snprintf(what, sizeof what, "151936: T=%g p=%g k=%d min_p=%g", c->t, c->p, c->k, c->mp);
    check_against_ref(l, BIG_VOCAB, &sp, NULL, 0, what);
    /* a flat distribution too: the nucleus then spans tens of thousands of tokens */
    model_logits(l, BIG_VOCAB, 22, 0.3, 0.0, 0);
    check_against_ref(l, BIG_VOCAB, &sp, NULL, 0, what);
    struct aarmd_sampler *s = aarmd_sampler_new(&sp, BIG_VOCAB);
    for (int i = 0; i < 20; i++) {
        memcpy(work, l, BIG_VOCAB * sizeof *l);
        struct aarmd_sample out;
        cr_assert_eq(aarmd_sampler_sample(s, work, &out), AARMD_OK);
        cr_assert(out.id >= 0 && out.id < BIG_VOCAB);
    }
    aarmd_sampler_free(s);
    free(l);
    free(work);
}

Test(sampler, nan_and_inf_logits)
{
    const uint32_t n = 64;
    float base[64];
    for (uint32_t i = 0; i < n; i++)
        base[i] = (i % 3 == 0) ? NAN : (i % 3 == 1) ? -INFINITY : (float)(i % 7) * 0.1f;
    struct aarmd_sampler_params sets[] = {params(1, 1, 0, 0), params(0.5f, 0.9f, 0, 0), params(1, 1, 5, 0),
                                          params(1, 1, 0, 0.3f), params(0, 1, 0, 0)};
    float l[64];
    for (size_t c = 0; c < sizeof sets / sizeof *sets; c++) {
        struct aarmd_sampler *s = aarmd_sampler_new(&sets[c], n);
        for (int d = 0; d < 2000; d++) {
            memcpy(l, base, sizeof l);
            struct aarmd_sample out;
            cr_assert_eq(aarmd_sampler_sample(s, l, &out), AARMD_OK);
            cr_assert_eq(out.id % 3, 2, "case %zu drew NaN/-inf token %d", c, out.id);
        }
        memcpy(l, base, sizeof l);
        cr_assert_eq(aarmd_sampler_probs(s, l, (int32_t[64]){0}, (double[64]){0}, &(size_t){0}), AARMD_OK);
        for (uint32_t i = 0; i < n; i++)
            cr_assert(!isnan(l[i]), "NaN left in logits[%u]", i);
        aarmd_sampler_free(s);
    }
    /* all -inf, all NaN, a mix of both: AARMD_EINVAL */
    struct aarmd_sampler_params sp = params(1, 1, 0, 0);
    struct aarmd_sampler *s = aarmd_sampler_new(&sp, n);
    struct aarmd_sample out;
    for (int kind = 0; kind < 3; kind++) {
        for (uint32_t i = 0; i < n; i++)
            l[i] = kind == 0 ? -INFINITY : kind == 1 ? NAN : (i & 1 ? NAN : -INFINITY);
        cr_assert_eq(aarmd_sampler_sample(s, l, &out), AARMD_EINVAL, "kind %d", kind);
    }
    aarmd_sampler_free(s);
    /* +inf: the +inf tokens share everything */
    for (uint32_t i = 0; i < n; i++)
        base[i] = (float)i;
    base[10] = INFINITY;
    base[50] = INFINITY;
    base[20] = NAN;
    s = aarmd_sampler_new(&sp, n);
    int32_t ids[64];
    double p[64];
    size_t k;
    memcpy(l, base, sizeof l);
    cr_assert_eq(aarmd_sampler_probs(s, l, ids, p, &k), AARMD_OK);
    cr_assert_eq(k, 2);
    cr_assert_eq(ids[0], 10);
    cr_assert_eq(ids[1], 50);
    cr_assert_float_eq(p[0], 0.5, 1e-12);
    int hits[2] = {0, 0};
    for (int d = 0; d < 1000; d++) {
        memcpy(l, base, sizeof l);
        cr_assert_eq(aarmd_sampler_sample(s, l, &out), AARMD_OK);
        cr_assert(out.id == 10 || out.id == 50);
        hits[out.id == 50]++;
    }
    cr_assert(hits[0] > 400 && hits[1] > 400, "%d/%d", hits[0], hits[1]);
    aarmd_sampler_free(s);
}

/*
 * The vocabulary is read in blocks of 1,024 (max and mass together); NaN and
 * -inf filling whole blocks, NaN inside a block with a finite max, and a
 * vocabulary that ends mid-block all go through the same rules.
 */
Test(sampler, nan_and_inf_across_blocks)
{
    const uint32_t n = 5003;
    float *base = malloc(n * sizeof *base), *l = malloc(n * sizeof *l);
    model_logits(base, n, 17, 2.0, 8.0, 4);
    for (uint32_t i = 1024; i < 2048; i++)   /* a whole block without a finite logit */
        base[i] = i % 2 ? NAN : -INFINITY;
    const struct aarmd_sampler_params sets[] = {params(1, 1, 0, 0), params(0.8f, 0.9f, 0, 0),
                                                params(1.2f, 0.95f, 0, 0.01f), params(0.5f, 0.5f, 0, 0)};
    for (size_t c = 0; c < 2 * sizeof sets / sizeof *sets; c++) {
        if (c == sizeof sets / sizeof *sets) {   /* second round: NaN in blocks with a finite max too */
            base[3000] = NAN;
            base[3001] = NAN;
            base[5002] = NAN;                    /* in the partial last block */
        }
        char what[64];
        snprintf(what, sizeof what, "blocks: case %zu", c);
        const struct aarmd_sampler_params *sp = &sets[c % (sizeof sets / sizeof *sets)];
        check_against_ref(base, n, sp, NULL, 0, what);
        struct aarmd_sampler *s = aarmd_sampler_new(sp, n);
        for (int d = 0; d < 300; d++) {
            memcpy(l, base, n * sizeof *l);
            struct aarmd_sample out;
            cr_assert_eq(aarmd_sampler_sample(s, l, &out), AARMD_OK);
            cr_assert(!isnan(base[out.id]) && base[out.id] > -INFINITY, "%s: drew %d", what, out.id);
            for (uint32_t i = 0; i < n; i++)
                cr_assert(!isnan(l[i]), "%s: NaN left in logits[%u]", what, i);
        }
        aarmd_sampler_free(s);
    }
    /* +inf in one block, NaN in another: the +inf tokens share everything */
    base[4000] = INFINITY;
    base[100] = INFINITY;
    struct aarmd_sampler_params sp = params(0.7f, 0.9f, 0, 0);
    struct aarmd_sampler *s = aarmd_sampler_new(&sp, n);
    int32_t *ids = malloc(n * sizeof *ids);
    double *p = malloc(n * sizeof *p);
    cr_assert_eq(sampler_dist(s, base, n, ids, p), 2);
    cr_assert_eq(ids[0], 100);
    cr_assert_eq(ids[1], 4000);
    cr_assert_float_eq(p[0], 0.5, 1e-12);
    /* nothing finite across several blocks: refused */
    for (uint32_t i = 0; i < n; i++)
        l[i] = i % 3 ? -INFINITY : NAN;
    struct aarmd_sample out;
    cr_assert_eq(aarmd_sampler_sample(s, l, &out), AARMD_EINVAL);
    aarmd_sampler_free(s);
    free(ids);
    free(p);
    free(base);
    free(l);
}

/*
 * Documented: a weight of 2^-126.5 (tempered log-weight -126.5 ln 2 = -87.68)
 * or less is 0; just above it a token keeps a (subnormal) probability.
 */
Test(sampler, weights_vanish_below_two_to_minus_126_5)
{
    const double cut = -126.5 * 0.69314718055994531;
    const float temps[] = {1.0f, 0.5f, 2.0f};
    for (size_t t = 0; t < 3; t++) {
        float T = temps[t];
        float base[5] = {0.0f, (float)((cut + 0.1) * T), (float)((cut - 0.1) * T), -INFINITY, -1.0f};
        struct aarmd_sampler_params sp = params(T, 1, 0, 0);
        struct aarmd_sampler *s = aarmd_sampler_new(&sp, 5);
        int32_t ids[5];
        double p[5];
        cr_assert_eq(sampler_dist(s, base, 5, ids, p), 3, "T=%g", T);
        cr_assert_eq(ids[0], 0);
        cr_assert_eq(ids[1], 4);
        cr_assert_eq(ids[2], 1, "T=%g: the token just above the cut is kept", T);
        cr_assert(p[2] > 0 && p[2] < 1e-37, "T=%g: p %g", T, p[2]);
        aarmd_sampler_free(s);
    }
}

/* A temperature so small that 1/T overflows float acts as T = 1e-38: ties at the top share. */
Test(sampler, subnormal_temperature)
{
    float base[6] = {1.0f, 3.0f, 3.0f, 2.99999f, -INFINITY, -5.0f};
    const struct aarmd_sampler_params sets[] = {params(1e-40f, 1, 0, 0), params(1e-40f, 0.9f, 0, 0),
                                                params(1e-40f, 1, 3, 0), params(1e-40f, 1, 0, 0.5f)};
    for (size_t c = 0; c < sizeof sets / sizeof *sets; c++) {
        cr_assert_eq(aarmd_sampler_params_check(&sets[c], NULL, 0), AARMD_OK);
        struct aarmd_sampler *s = aarmd_sampler_new(&sets[c], 6);
        int32_t ids[6];
        double p[6];
        cr_assert_eq(sampler_dist(s, base, 6, ids, p), 2, "set %zu", c);
        cr_assert_eq(ids[0], 1);
        cr_assert_eq(ids[1], 2);
        cr_assert_float_eq(p[0], 0.5, 1e-12);
        float l[6];
        for (int d = 0; d < 100; d++) {
            memcpy(l, base, sizeof l);
            struct aarmd_sample out;
            cr_assert_eq(aarmd_sampler_sample(s, l, &out), AARMD_OK);
            cr_assert(out.id == 1 || out.id == 2, "set %zu drew %d", c, out.id);
        }
        aarmd_sampler_free(s);
    }
}

Test(sampler, temperature_to_zero_tends_to_argmax)
{
    const uint32_t n = 1000;
    float *l = malloc(n * sizeof *l);
    model_logits(l, n, 5, 1.0, 4.0, 2);   /* top two 1.0 apart */
    int32_t *ids = malloc(n * sizeof *ids);
    double *p = malloc(n * sizeof *p);
    int32_t argmax = -1;
    {
        struct aarmd_sampler_params g = params(0, 1, 0, 0);
        struct aarmd_sampler *s = aarmd_sampler_new(&g, n);
        cr_assert_eq(sampler_dist(s, l, n, ids, p), 1);
        argmax = ids[0];
        aarmd_sampler_free(s);
    }
    const float temps[] = {2.0f, 1.0f, 0.5f, 0.2f, 0.1f, 0.05f, 0.01f};
    double last = 0;
    for (size_t i = 0; i < sizeof temps / sizeof *temps; i++) {
        struct aarmd_sampler_params sp = params(temps[i], 1, 0, 0);
        struct aarmd_sampler *s = aarmd_sampler_new(&sp, n);
        size_t k = sampler_dist(s, l, n, ids, p);
        cr_assert_geq(k, 1);
        cr_assert_eq(ids[0], argmax);
        cr_assert_gt(p[0], last, "p(argmax) did not grow at T=%g", temps[i]);
        last = p[0];
        aarmd_sampler_free(s);
    }
    cr_assert_gt(last, 1.0 - 1e-12, "p(argmax) at T=0.01 is %g", last);
    free(l);
    free(ids);
    free(p);
}

Test(sampler, bad_params_are_refused)
{
    char err[160];
    struct {
        struct aarmd_sampler_params p;
        const char *field;
    } bad[] = {
        {params(-0.1f, 1, 0, 0), "temperature"}, {params(2.5f, 1, 0, 0), "temperature"},
        {params(NAN, 1, 0, 0), "temperature"},   {params(1, 1.5f, 0, 0), "top_p"},
        {params(1, -0.1f, 0, 0), "top_p"},       {params(1, 1, -1, 0), "top_k"},
        {params(1, 1, 0, 1.1f), "min_p"},        {params(1, 1, 0, NAN), "min_p"},
        {params(1, 1, 0, 0), "repetition_penalty"}, {params(1, 1, 0, 0), "logprobs"},
    };
    bad[8].p.repetition_penalty = 2.5f;
    bad[9].p.n_logprobs = 21;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(aarmd_sampler_params_check(&bad[i].p, err, sizeof err), AARMD_EINVAL, "case %zu", i);
        cr_assert(strstr(err, bad[i].field), "case %zu: '%s' does not name %s", i, err, bad[i].field);
        struct aarmd_sampler *s = aarmd_sampler_new(&bad[i].p, 4);
        cr_assert_not_null(s);
        float l[4] = {1, 2, 3, 4};
        struct aarmd_sample out;
        cr_assert_eq(aarmd_sampler_sample(s, l, &out), AARMD_EINVAL, "case %zu sampled", i);
        aarmd_sampler_free(s);
    }
    struct aarmd_sampler_params ok = params(0, 0, 0, 1);
    ok.repetition_penalty = 0;
    ok.n_logprobs = 20;
    cr_assert_eq(aarmd_sampler_params_check(&ok, err, sizeof err), AARMD_OK);
    cr_assert_eq(aarmd_sampler_params_check(NULL, err, sizeof err), AARMD_EINVAL);
    cr_assert_null(aarmd_sampler_new(&ok, 0));
    cr_assert_null(aarmd_sampler_new(NULL, 4));
    struct aarmd_sampler *s = aarmd_sampler_new(&ok, 4);
    struct aarmd_sample out;
    cr_assert_eq(aarmd_sampler_sample(s, NULL, &out), AARMD_EINVAL);
    aarmd_sampler_free(s);
    aarmd_sampler_free(NULL);
}

static void draw_sequence(uint64_t seed, const float *l, uint32_t n, int32_t *ids, int count)
{
    struct aarmd_sampler_params sp = params(0.9f, 0.95f, 0, 0.0f);
    sp.seed = seed;
    struct aarmd_sampler *s = aarmd_sampler_new(&sp, n);
    float *work = malloc(n * sizeof *work);
    for (int i = 0; i < count; i++) {
        memcpy(work, l, n * sizeof *l);
        struct aarmd_sample out;
        cr_assert_eq(aarmd_sampler_sample(s, work, &out), AARMD_OK);
        ids[i] = out.id;
    }
    free(work);
    aarmd_sampler_free(s);
}

Test(sampler, same_seed_same_tokens_on_every_code_path)
{
    const uint32_t n = 32000;
    float *l = malloc(n * sizeof *l);
    model_logits(l, n, 8, 1.0, 3.0, 10);
    int32_t a[300], b[300], c[300], d[300], e[300];
    draw_sequence(42, l, n, a, 300);
    draw_sequence(42, l, n, b, 300);
    draw_sequence(43, l, n, c, 300);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    cr_assert_neq(memcmp(a, c, sizeof a), 0);
    /* narrower vector loops (forced) give the same tokens as the widest this CPU has */
    setenv("AARMD_SAMPLER_SIMD", "v4", 1);
    draw_sequence(42, l, n, d, 300);
    setenv("AARMD_SAMPLER_SIMD", "avx2", 1);
    draw_sequence(42, l, n, e, 300);
    unsetenv("AARMD_SAMPLER_SIMD");
    cr_assert_eq(memcmp(a, d, sizeof a), 0);
    cr_assert_eq(memcmp(a, e, sizeof a), 0);
    free(l);
}

/* Every vector width computes bit-identical distributions (same float ops, same order). */
Test(sampler, vector_widths_agree_bit_for_bit)
{
    const uint32_t n = 20000;
    float *l = malloc(n * sizeof *l);
    model_logits(l, n, 31, 2.0, 8.0, 6);
    const struct aarmd_sampler_params sets[] = {params(0.8f, 0.9f, 0, 0), params(1, 1, 0, 0),
                                                params(1.3f, 1, 40, 0), params(0.7f, 1, 0, 0.02f),
                                                params(1, 0.99f, 3000, 0)};
    const char *widths[] = {"v4", "avx2", NULL};   /* NULL: the widest this CPU has */
    int32_t *ids[3];
    double *p[3];
    size_t k[3];
    for (int w = 0; w < 3; w++) {
        ids[w] = malloc(n * sizeof(int32_t));
        p[w] = malloc(n * sizeof(double));
    }
    for (size_t c = 0; c < sizeof sets / sizeof *sets; c++) {
        for (int w = 0; w < 3; w++) {
            if (widths[w])
                setenv("AARMD_SAMPLER_SIMD", widths[w], 1);
            else
                unsetenv("AARMD_SAMPLER_SIMD");
            struct aarmd_sampler *s = aarmd_sampler_new(&sets[c], n);
            if (w == 2)
                cr_log_info("widest vector loops here: %s", aarmd_sampler_simd(s));
            k[w] = sampler_dist(s, l, n, ids[w], p[w]);
            aarmd_sampler_free(s);
        }
        for (int w = 1; w < 3; w++) {
            cr_assert_eq(k[w], k[0], "set %zu width %d: %zu tokens vs %zu", c, w, k[w], k[0]);
            cr_assert_eq(memcmp(ids[w], ids[0], k[0] * sizeof(int32_t)), 0, "set %zu width %d: ids", c, w);
            cr_assert_eq(memcmp(p[w], p[0], k[0] * sizeof(double)), 0, "set %zu width %d: probabilities", c, w);
        }
    }
    unsetenv("AARMD_SAMPLER_SIMD");
    for (int w = 0; w < 3; w++) {
        free(ids[w]);
        free(p[w]);
    }
    free(l);
}

Test(sampler, logprobs_are_raw_log_softmax)
{
    const uint32_t n = 3000;
    float *l = malloc(n * sizeof *l), *work = malloc(n * sizeof *work);
    model_logits(l, n, 13, 1.5, 6.0, 4);
    l[100] = l[200] = 9.0f;   /* a tie at the top: 100 before 200 */
    double max = -INFINITY, z = 0;
    for (uint32_t i = 0; i < n; i++)
        max = l[i] > max ? l[i] : max;
    for (uint32_t i = 0; i < n; i++)
        z += exp(l[i] - max);
    double log_z = max + log(z);
    const float temps[] = {0.0f, 0.5f, 1.5f};
    for (size_t t = 0; t < 3; t++) {
        struct aarmd_sampler_params sp = params(temps[t], 0.8f, 50, 0.0f);
        sp.n_logprobs = 5;
        struct aarmd_sampler *s = aarmd_sampler_new(&sp, n);
        for (int d = 0; d < 20; d++) {
            memcpy(work, l, n * sizeof *l);
            struct aarmd_sample out;
            cr_assert_eq(aarmd_sampler_sample(s, work, &out), AARMD_OK);
            cr_assert_float_eq(out.logprob, l[out.id] - log_z, 1e-5, "T=%g id %d", temps[t], out.id);
            cr_assert_eq(out.n_top, 5);
            cr_assert_eq(out.top[0].id, 100);
            cr_assert_eq(out.top[1].id, 200);
            for (uint32_t i = 0; i < 5; i++) {
                cr_assert_float_eq(out.top[i].logprob, l[out.top[i].id] - log_z, 1e-5);
                if (i > 0)
                    cr_assert_geq(out.top[i - 1].logprob, out.top[i].logprob);
            }
            /* nothing outside top[] beats its last entry */
            for (uint32_t i = 0; i < n; i++) {
                bool in = false;
                for (uint32_t j = 0; j < 5; j++)
                    in |= out.top[j].id == (int32_t)i;
                if (!in)
                    cr_assert_leq(l[i], l[out.top[4].id]);
            }
        }
        aarmd_sampler_free(s);
    }
    /* n_logprobs 0: nothing reported */
    struct aarmd_sampler_params sp = params(1, 1, 0, 0);
    struct aarmd_sampler *s = aarmd_sampler_new(&sp, n);
    memcpy(work, l, n * sizeof *l);
    struct aarmd_sample out;
    cr_assert_eq(aarmd_sampler_sample(s, work, &out), AARMD_OK);
    cr_assert_eq(out.n_top, 0);
    cr_assert_eq(out.logprob, 0.0f);
    aarmd_sampler_free(s);
    /* fewer finite logits than asked: only those */
    float few[6] = {1, -INFINITY, NAN, 2, -INFINITY, -INFINITY};
    sp.n_logprobs = 20;
    s = aarmd_sampler_new(&sp, 6);
    cr_assert_eq(aarmd_sampler_sample(s, few, &out), AARMD_OK);
    cr_assert_eq(out.n_top, 2);
    cr_assert_eq(out.top[0].id, 3);
    cr_assert_float_eq(out.top[0].logprob, 2.0 - log(exp(1.0) + exp(2.0)), 1e-6);
    aarmd_sampler_free(s);
    free(l);
    free(work);
}
