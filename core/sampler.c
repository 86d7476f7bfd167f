/*
 * sampler.c — one job's sampler: repetition penalty, temperature, top-k,
 * top-p, min-p and the draw (contract in sampler.h, reasoning in
 * docs/SAMPLING.md). Not the RNG (rng.c) and not stop strings (stop.c).
 */
#include "config.h"
#include "sampler.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "aarmd_backend.h"
#include "rng.h"

#define BLOCK 1024           /* logits per block: block_mass, collect_blocks, the full-vocab draw */
_Static_assert(BLOCK % 32 == 0, "block_mass walks whole blocks 32 floats at a time");
#define SMALL_K 256          /* top-k up to this uses a heap, above it quickselect */
#define TOPP_FIRST_TAU -7.0f /* first guess for the top-p scan, in tempered log-weight */
#define TOPP_STEP 3.5f       /* then lower by this much at a time, adding the band below */
#define NBUCKET 1024         /* log-weight buckets that narrow top-p over many candidates */
#define BUCKET_FROM 2048     /* candidates from which top-p buckets before quickselecting */

struct cand {
    float l;    /* logit after penalty (NaN -> -inf) */
    float w;    /* exp((l - max) / T), in (0, 1] */
    int32_t id;
    uint32_t b;   /* scratch: log-weight bucket in prefix_bucketed */
};

/* The loops over the whole vocabulary, one set per vector width (sampler_kern.h). */
struct kern {
    const char *name;
    float (*clean_max)(const float *l, uint32_t n, bool *has_nan, float *bmax);
    uint32_t (*find_eq)(const float *l, uint32_t n, float v);
    void (*block_weights)(const float *l, uint32_t i0, uint32_t i1, float max, float a, float *w);
    uint32_t (*collect)(const float *l, uint32_t n, float thr, struct cand *c);
    float (*block_mass)(const float *l, uint32_t n, float a, float *bmax, double *bsum, bool *nan_in_empty);
    double (*rescale)(const float *bmax, double *bsum, uint32_t nb, float max, float a);
    uint32_t (*collect_blocks)(const float *l, uint32_t n, const float *bmax, float thr, struct cand *c);
    uint32_t (*collect_band)(const float *l, uint32_t n, const float *bmax, float lo, float hi, struct cand *c,
                             uint32_t m);
    double (*cand_weights)(struct cand *c, uint32_t n, float max, float a);
};

/* Appends token i + j for each set bit j of bits, in ascending j. */
static inline uint32_t append_bits(const float *l, uint32_t i, uint32_t bits, struct cand *c, uint32_t m)
{
    while (bits) {
        uint32_t j = i + (uint32_t)__builtin_ctz(bits);
        c[m++] = (struct cand){.l = l[j], .id = (int32_t)j};
        bits &= bits - 1;
    }
    return m;
}

/*
 * GCC/Clang vector extensions: SSE2 or NEON at 4 lanes everywhere, AVX2 at 8
 * lanes where the CPU has it; same results either way (see sampler_kern.h).
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#define NO_CONTRACT
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"   /* vectors only cross static inline calls */
#define NO_CONTRACT optimize("fp-contract=off")
#endif
#define KW 4
#define KSUF v4
#define KNAME "v4"
#define KTARGET __attribute__((NO_CONTRACT))
#include "sampler_kern.h"
#undef KW
#undef KSUF
#undef KNAME
#undef KTARGET
#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_AVX2_KERN 1
#define KW 8
#define KSUF avx2
#define KNAME "avx2"
#define KTARGET __attribute__((target("avx2,fma"), NO_CONTRACT))
#include "sampler_kern.h"
#undef KW
#undef KSUF
#undef KNAME
#undef KTARGET
#define KW 16
#define KSUF avx512
#define KNAME "avx512"
#define KTARGET __attribute__((target("avx512f,avx512dq"), NO_CONTRACT))
#include "sampler_kern.h"
#undef KW
#undef KSUF
#undef KNAME
#undef KTARGET
#endif

static const struct kern *pick_kern(void)
{
#ifdef HAVE_AVX2_KERN
    const char *lim = getenv("AARMD_SAMPLER_SIMD");   /* "v4" or "avx2": use at most that */
    bool no512 = lim && strcmp(lim, "avx512"), no256 = no512 && strcmp(lim, "avx2");
    __builtin_cpu_init();
    if (!no512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"))
        return &kern_avx512;
    if (!no256 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return &kern_avx2;
#endif
    return &kern_v4;
}

struct aarmd_sampler {
    struct aarmd_sampler_params p;
    uint32_t n_vocab;
    int params_rc;          /* AARMD_OK or AARMD_EINVAL: sample() refuses bad params */
    const struct kern *k;
    struct aarmd_rng rng;
    uint8_t *seen;          /* [n_vocab] 1 once the id was accepted */
    int32_t *seen_ids;      /* [n_vocab] distinct accepted ids */
    uint32_t n_seen;
    struct cand *c;         /* [n_vocab + 16] candidates */
    double *bmass;          /* [NBUCKET] */
    uint32_t *bcount;       /* [NBUCKET] */
    double *blocks;         /* [ceil(n_vocab / BLOCK)] block masses (block_mass, then rescaled) */
    float *bmax;            /* [ceil(n_vocab / BLOCK)] block maxima (block_mass) */
};

/* What filter() leaves for the draw. */
struct dist {
    bool greedy;            /* argmax: id */
    bool full;              /* whole vocabulary, weights recomputed from logits, blocks[] valid */
    int32_t id;
    uint32_t n;             /* candidates c[0..n) (neither greedy nor full) */
    double mass;            /* sum of weights over what is kept */
    float max, inv_t, a;    /* a = log2(e) / T: a weight is 2^((l - max) a) */
};

/* ---- parameters and lifetime --------------------------------------------- */

__attribute__((format(printf, 3, 4)))
static int params_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return AARMD_EINVAL;
}

int aarmd_sampler_params_check(const struct aarmd_sampler_params *p, char *err, size_t errlen)
{
    if (!p)
        return params_err(err, errlen, "sampler: params are NULL");
    if (!(p->temperature >= 0.0f && p->temperature <= 2.0f))
        return params_err(err, errlen, "sampler: temperature must be in 0..2 (got %g)", p->temperature);
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return params_err(err, errlen, "sampler: top_p must be in 0..1 (got %g)", p->top_p);
    if (p->top_k < 0)
        return params_err(err, errlen, "sampler: top_k must be >= 0 (got %d)", (int)p->top_k);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return params_err(err, errlen, "sampler: min_p must be in 0..1 (got %g)", p->min_p);
    if (!(p->repetition_penalty >= 0.0f && p->repetition_penalty <= 2.0f))
        return params_err(err, errlen, "sampler: repetition_penalty must be in 0..2 (got %g)",
                          p->repetition_penalty);
    if (p->n_logprobs > 20)
        return params_err(err, errlen, "sampler: logprobs must be in 0..20 (got %u)", (unsigned)p->n_logprobs);
    return AARMD_OK;
}

struct aarmd_sampler *aarmd_sampler_new(const struct aarmd_sampler_params *params, uint32_t n_vocab)
{
    if (!params || n_vocab == 0 || n_vocab > (uint32_t)INT32_MAX)
        return NULL;
    struct aarmd_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->p = *params;
    s->n_vocab = n_vocab;
    s->params_rc = aarmd_sampler_params_check(params, NULL, 0);
    s->k = pick_kern();
    aarmd_rng_seed(&s->rng, params->seed);
    s->seen = calloc(n_vocab, 1);
    s->seen_ids = malloc((size_t)n_vocab * sizeof *s->seen_ids);
    s->c = malloc(((size_t)n_vocab + 16) * sizeof *s->c);   /* + 16: append16 writes past the last */
    s->blocks = malloc(((size_t)n_vocab + BLOCK - 1) / BLOCK * sizeof *s->blocks);
    s->bmax = malloc(((size_t)n_vocab + BLOCK - 1) / BLOCK * sizeof *s->bmax);
    s->bmass = malloc(NBUCKET * sizeof *s->bmass);
    s->bcount = malloc(NBUCKET * sizeof *s->bcount);
    if (!s->seen || !s->seen_ids || !s->c || !s->blocks || !s->bmax || !s->bmass || !s->bcount)
        goto fail;
    return s;
fail:
    aarmd_sampler_free(s);
    return NULL;
}

void aarmd_sampler_free(struct aarmd_sampler *s)
{
    if (!s)
        return;
    free(s->seen);
    free(s->seen_ids);
    free(s->c);
    free(s->blocks);
    free(s->bmax);
    free(s->bmass);
    free(s->bcount);
    free(s);
}

void aarmd_sampler_accept(struct aarmd_sampler *s, const int32_t *ids, size_t n)
{
    if (!s || !ids)
        return;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (uint32_t)id >= s->n_vocab || s->seen[id])
            continue;
        s->seen[id] = 1;
        s->seen_ids[s->n_seen++] = id;
    }
}

/* ---- passes over the vocabulary ------------------------------------------ */

static void apply_penalty(const struct aarmd_sampler *s, float *l)
{
    float rp = s->p.repetition_penalty;
    if (rp == 1.0f)
        return;
    for (uint32_t i = 0; i < s->n_seen; i++) {
        float *x = &l[s->seen_ids[i]];
        if (*x > 0.0f)
            *x /= rp;   /* rp 0 gives +inf: see the +inf rule in sampler.h */
        else if (*x < 0.0f)
            *x *= rp;
    }
}

/*
 * NaN -> -inf in place and returns the max; bmax (when not NULL) gets each
 * block's max. When some logit is +inf, those become 0 and all others -inf
 * (the +inf tokens share the mass equally).
 */
static float clean_max(const struct kern *k, float *l, uint32_t n, float *bmax)
{
    bool has_nan;
    float max = k->clean_max(l, n, &has_nan, bmax);
    if (has_nan)
        for (uint32_t i = 0; i < n; i++)
            if (l[i] != l[i])
                l[i] = -INFINITY;
    if (max == INFINITY) {
        for (uint32_t i = 0; i < n; i++)
            l[i] = l[i] == INFINITY ? 0.0f : -INFINITY;
        max = k->clean_max(l, n, &has_nan, bmax);   /* 0, and the blocks' maxima anew */
    }
    return max;
}

/* ---- ordering: higher logit first, then lower id --------------------------- */

static inline bool better(const struct cand *a, const struct cand *b)
{
    return a->l > b->l || (a->l == b->l && a->id < b->id);
}

static inline void swap(struct cand *a, struct cand *b)
{
    struct cand t = *a;
    *a = *b;
    *b = t;
}

static void insertion_sort(struct cand *c, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) {
        struct cand x = c[i];
        uint32_t j = i;
        while (j > 0 && better(&x, &c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
    }
}

static int cand_cmp(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;
    return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

/*
 * Partitions c[lo..hi) (hi - lo >= 3) around a median-of-three pivot: better
 * ones first. Returns the pivot's final index; *left_mass = weight of c[lo..p).
 */
static uint32_t partition(struct cand *c, uint32_t lo, uint32_t hi, double *left_mass)
{
    uint32_t mid = lo + (hi - lo) / 2, last = hi - 1;
    if (better(&c[mid], &c[lo]))
        swap(&c[mid], &c[lo]);
    if (better(&c[last], &c[lo]))
        swap(&c[last], &c[lo]);
    if (better(&c[last], &c[mid]))
        swap(&c[last], &c[mid]);
    swap(&c[mid], &c[last]);   /* the median is the pivot, parked at the end */
    struct cand pv = c[last];
    uint32_t store = lo;
    double m = 0;
    for (uint32_t i = lo; i < last; i++)
        if (better(&c[i], &pv)) {
            m += c[i].w;
            swap(&c[i], &c[store++]);
        }
    swap(&c[store], &c[last]);
    *left_mass = m;
    return store;
}

/* Rearranges c[0..n) so that c[0..k) are the k best (in no particular order). */
static void select_k(struct cand *c, uint32_t n, uint32_t k)
{
    uint32_t lo = 0, hi = n;
    double unused;
    while (hi - lo > 16) {
        uint32_t p = partition(c, lo, hi, &unused);
        if (p == k || p + 1 == k)
            return;
        if (p > k)
            hi = p;
        else
            lo = p + 1;
    }
    insertion_sort(c + lo, hi - lo);
}

/*
 * The smallest prefix, in the better() order, whose weight reaches target:
 * rearranges c so that it is c[0..result) and returns its length (>= 1 when
 * n >= 1; n when the whole set falls short).
 */
static uint32_t prefix_by_mass(struct cand *c, uint32_t n, double target)
{
    uint32_t lo = 0, hi = n;
    double acc = 0;   /* weight of the settled prefix c[0..lo) */
    while (hi - lo > 16) {
        double left;
        uint32_t p = partition(c, lo, hi, &left);
        if (p > lo && acc + left >= target) {
            hi = p;
            continue;
        }
        acc += left + c[p].w;
        if (acc >= target)
            return p + 1;
        lo = p + 1;
    }
    insertion_sort(c + lo, hi - lo);
    for (uint32_t i = lo; i < hi; i++) {
        acc += c[i].w;
        if (acc >= target)
            return i + 1;
    }
    return hi;
}

/*
 * prefix_by_mass for many candidates: a histogram of weight over NBUCKET
 * log-weight buckets finds the bucket where the prefix reaches target;
 * buckets before it are kept whole, after it dropped, and only that one
 * bucket is quickselected. Bucket index falls as the logit rises, so buckets
 * follow the better() order.
 */
static uint32_t prefix_bucketed(struct aarmd_sampler *s, struct cand *c, uint32_t n, double target, float max,
                                float inv_t)
{
    float lmin = c[0].l;
    for (uint32_t i = 1; i < n; i++)
        lmin = c[i].l < lmin ? c[i].l : lmin;
    float zmin = (lmin - max) * inv_t;
    if (!(zmin < 0.0f) || !isfinite(zmin))
        return prefix_by_mass(c, n, target);
    float scale = (float)NBUCKET / -zmin;
    memset(s->bmass, 0, NBUCKET * sizeof *s->bmass);
    memset(s->bcount, 0, NBUCKET * sizeof *s->bcount);
    for (uint32_t i = 0; i < n; i++) {
        float x = (max - c[i].l) * inv_t * scale;
        uint32_t b = x < (float)(NBUCKET - 1) ? (uint32_t)x : NBUCKET - 1;
        c[i].b = b;
        s->bmass[b] += c[i].w;
        s->bcount[b]++;
    }
    double acc = 0;
    uint32_t cut = 0;
    while (cut < NBUCKET && acc + s->bmass[cut] < target)
        acc += s->bmass[cut++];
    if (cut == NBUCKET)
        return n;   /* rounding: everything is needed */
    uint32_t k0 = 0;
    for (uint32_t i = 0; i < n; i++)
        if (c[i].b < cut)
            swap(&c[i], &c[k0++]);
    uint32_t k1 = k0;
    for (uint32_t i = k0; i < n; i++)
        if (c[i].b == cut)
            swap(&c[i], &c[k1++]);
    return k0 + prefix_by_mass(c + k0, k1 - k0, target - acc);
}

/*
 * The k best finite logits into h (k <= SMALL_K) via a min-heap; returns how
 * many. With bmax (block maxima from block_mass) the blocks whose max cannot
 * beat the heap's worst are not read.
 */
static uint32_t top_small(const float *l, uint32_t n, uint32_t k, struct cand *h, const float *bmax)
{
    uint32_t m = 0;
    float thr = -INFINITY;   /* l must beat this: -inf never enters */
    for (uint32_t blk = 0, i0 = 0; i0 < n; blk++, i0 += BLOCK) {
        uint32_t i1 = n - i0 < BLOCK ? n : i0 + BLOCK;
        if (bmax && !(bmax[blk] > thr))
            continue;
        for (uint32_t i = i0; i < i1; i++) {
            if ((i & 3) == 0 && i + 4 <= i1) {
                vi_v4 gt = load_v4(l + i) > thr;
                if (!any_v4(&gt)) {
                    i += 3;
                    continue;
                }
            }
            if (!(l[i] > thr))
                continue;   /* ties with the heap's worst lose: their id is higher */
            struct cand x = {.l = l[i], .id = (int32_t)i};
            uint32_t j;
            if (m < k) {
                j = m++;
                while (j > 0 && better(&h[(j - 1) / 2], &x)) {   /* sift up: worst at the root */
                    h[j] = h[(j - 1) / 2];
                    j = (j - 1) / 2;
                }
                h[j] = x;
            } else {
                j = 0;   /* replace the root, sift down */
                for (;;) {
                    uint32_t a = 2 * j + 1, b = a + 1, w = j;
                    const struct cand *cw = &x;
                    if (a < m && better(cw, &h[a]))
                        w = a, cw = &h[a];
                    if (b < m && better(cw, &h[b]))
                        w = b, cw = &h[b];
                    if (w == j)
                        break;
                    h[j] = h[w];
                    j = w;
                }
                h[j] = x;
            }
            if (m == k)
                thr = h[0].l;
        }
    }
    return m;
}

/* ---- the pipeline ---------------------------------------------------------- */


/* Keeps c[i] with w >= min_p (w is relative to the top token's 1), order kept. */
static uint32_t keep_min_p(struct cand *c, uint32_t n, float min_p)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++)
        if (c[i].w >= min_p)
            c[m++] = c[i];
    return m ? m : n;   /* the top token always passes; guard against an empty set */
}

static double sum_w(const struct cand *c, uint32_t n)
{
    double z = 0;
    for (uint32_t i = 0; i < n; i++)
        z += c[i].w;
    return z;
}

/*
 * Z, the mass of the whole vocabulary (top token 1), and the max in one read
 * of the logits (block_mass, then rescale); s->bmax and s->blocks are left
 * for collect_blocks and the full-vocabulary draw. Only when that read saw a
 * NaN or +inf (or nothing finite) are the logits cleaned (clean_max) and read
 * again. Returns the max, -inf when every logit is -inf or NaN.
 */
static float mass_and_max(struct aarmd_sampler *s, float *l, float a, double *z)
{
    const struct kern *k = s->k;
    uint32_t n = s->n_vocab, nb = (n + BLOCK - 1) / BLOCK;
    bool nan_in_empty;
    float max = k->block_mass(l, n, a, s->bmax, s->blocks, &nan_in_empty);
    double mass = isfinite(max) ? k->rescale(s->bmax, s->blocks, nb, max, a) : NAN;
    if (nan_in_empty || mass != mass) {   /* a NaN, a +inf, or no finite logit */
        if (clean_max(k, l, n, NULL) == -INFINITY)
            return -INFINITY;
        max = k->block_mass(l, n, a, s->bmax, s->blocks, &nan_in_empty);
        mass = k->rescale(s->bmax, s->blocks, nb, max, a);
    }
    *z = mass;
    return max;
}

/* top-p (perhaps with min-p) or the whole vocabulary: paths that need Z. */
static int filter_mass(struct aarmd_sampler *s, float *l, struct dist *d)
{
    const struct aarmd_sampler_params *p = &s->p;
    uint32_t n = s->n_vocab;
    double z;
    float max = mass_and_max(s, l, d->a, &z);
    if (max == -INFINITY)
        return AARMD_EINVAL;
    d->max = max;
    if (p->top_p >= 1.0f) {
        d->full = true;
        d->mass = z;
        return AARMD_OK;
    }
    /*
     * The nucleus is a prefix of the sorted order, so any threshold whose
     * tokens already weigh p*Z holds it. Guess tau = -7 (only blocks whose
     * max reaches it are read), then lower it by TOPP_STEP at a time, adding
     * the band between the new and the old threshold, down to tau_safe: the
     * tokens below exp(tau_safe) = Z(1-p)/(2n) weigh less than (1-p)Z/2 all
     * together, so the nucleus lies above it. When min-p binds (tau_min
     * reached) what was collected is all that can survive anyway.
     */
    bool min_p = p->min_p > 0.0f;
    float inv_t = d->inv_t, tau = TOPP_FIRST_TAU;
    /* log-weight a token needs to pass min-p, less a margin: the exact test is on w */
    float tau_min = min_p ? logf(p->min_p) - 1e-3f : -INFINITY;
    struct cand *c = s->c;
    float thr_hi = max + tau / inv_t;   /* collected so far: the tokens with l >= thr_hi */
    uint32_t m = s->k->collect_blocks(l, n, s->bmax, thr_hi, c);
    double target = (double)p->top_p * z;
    float tau_safe = (float)log(z * (1.0 - (double)p->top_p) / (2.0 * n));
    float floor_tau = tau_safe > tau_min ? tau_safe : tau_min;
    double got = s->k->cand_weights(c, m, max, d->a), got0 = 0;
    uint32_t m0 = 0;   /* c[0..m0) weigh got0 < target: the nucleus holds them all */
    while (got < target && tau > floor_tau) {
        tau = tau - TOPP_STEP > floor_tau ? tau - TOPP_STEP : floor_tau;
        float thr = max + tau / inv_t;
        m0 = m;
        got0 = got;
        m = s->k->collect_band(l, n, s->bmax, thr, thr_hi, c, m);
        got += s->k->cand_weights(c + m0, m - m0, max, d->a);
        thr_hi = thr;
    }
    /* every token of the last band is below every earlier one: the cut lies in the band */
    uint32_t k = m - m0;
    double rest = target - got0;
    k = k >= BUCKET_FROM ? prefix_bucketed(s, c + m0, k, rest, max, inv_t) : prefix_by_mass(c + m0, k, rest);
    m = m0 + k;
    if (min_p)
        m = keep_min_p(c, m, p->min_p);
    d->n = m;
    d->mass = sum_w(c, m);
    return AARMD_OK;
}

static int filter(struct aarmd_sampler *s, float *l, struct dist *d)
{
    const struct aarmd_sampler_params *p = &s->p;
    uint32_t n = s->n_vocab;
    memset(d, 0, sizeof *d);
    if (s->params_rc != AARMD_OK || !l)
        return AARMD_EINVAL;
    apply_penalty(s, l);
    uint32_t k = p->top_k > 0 && (uint32_t)p->top_k < n ? (uint32_t)p->top_k : 0;
    bool top_p = p->top_p < 1.0f, min_p = p->min_p > 0.0f;
    if (p->temperature > 0.0f) {
        /* a T so small that 1/T overflows acts as T = 1e-38 */
        d->inv_t = 1.0f / p->temperature < 1e38f ? 1.0f / p->temperature : 1e38f;
        d->a = d->inv_t * 1.44269504088896341f;
        if (k == 0 && (top_p || !min_p))
            return filter_mass(s, l, d);
    }
    float max = clean_max(s->k, l, n, s->bmax);
    if (max == -INFINITY)
        return AARMD_EINVAL;   /* every logit -inf or NaN */
    d->max = max;
    if (p->temperature == 0.0f) {
        uint32_t b = 0;
        while (s->bmax[b] != max)   /* the first block holding the max */
            b++;
        d->greedy = true;
        d->id = (int32_t)(b * BLOCK + s->k->find_eq(l + b * BLOCK, n - b * BLOCK, max));
        return AARMD_OK;
    }
    float inv_t = d->inv_t, a = d->a;
    float tau_min = min_p ? logf(p->min_p) - 1e-3f : -INFINITY;   /* as in filter_mass */
    struct cand *c = s->c;
    uint32_t m;
    if (k > 0) {
        if (k <= SMALL_K) {
            m = top_small(l, n, k, c, s->bmax);
        } else {
            m = s->k->collect(l, n, -FLT_MAX, c);
            if (m > k) {
                select_k(c, m, k);
                m = k;
            }
        }
        double z = s->k->cand_weights(c, m, max, a);
        if (top_p) {
            double target = (double)p->top_p * z;
            m = m >= BUCKET_FROM ? prefix_bucketed(s, c, m, target, max, inv_t) : prefix_by_mass(c, m, target);
        }
    } else {   /* min-p alone */
        m = s->k->collect_blocks(l, n, s->bmax, max + tau_min / inv_t, c);
        s->k->cand_weights(c, m, max, a);
    }
    if (min_p)
        m = keep_min_p(c, m, p->min_p);
    d->n = m;
    d->mass = sum_w(c, m);
    return AARMD_OK;
}

/* Draws from d with one uniform; returns the id. */
static int32_t draw(struct aarmd_sampler *s, const float *l, const struct dist *d)
{
    double u = aarmd_rng_uniform(&s->rng);
    double target = u * d->mass, acc = 0;
    if (!d->full) {
        const struct cand *c = s->c;
        int32_t last = c[0].id;
        for (uint32_t i = 0; i < d->n; i++) {
            if (c[i].w <= 0.0f)
                continue;
            last = c[i].id;
            acc += c[i].w;
            if (acc > target)
                return c[i].id;
        }
        return last;   /* rounding left target just out of reach */
    }
    uint32_t n = s->n_vocab, b = 0, nb = (n + BLOCK - 1) / BLOCK;
    for (; b + 1 < nb; b++) {
        if (acc + s->blocks[b] > target)
            break;
        acc += s->blocks[b];
    }
    float w[BLOCK];
    uint32_t i0 = b * BLOCK, i1 = n - i0 < BLOCK ? n : i0 + BLOCK;
    s->k->block_weights(l, i0, i1, d->max, d->a, w);
    int32_t last = -1;
    for (uint32_t i = i0; i < i1; i++) {
        if (w[i - i0] <= 0.0f)
            continue;
        last = (int32_t)i;
        acc += w[i - i0];
        if (acc > target)
            return (int32_t)i;
    }
    if (last >= 0)
        return last;
    /* the block weighs 0 in float but not in its sum: cannot happen; take the max */
    return (int32_t)s->k->find_eq(l, n, d->max);
}

/* Raw log-softmax (temperature 1) of the cleaned logits: chosen id and top n. */
static void fill_logprobs(struct aarmd_sampler *s, float *l, struct aarmd_sample *out)
{
    uint32_t nl = s->p.n_logprobs;
    if (nl == 0)
        return;
    double z;
    float max = mass_and_max(s, l, 1.44269504088896341f, &z);   /* l is clean: one read */
    double log_z = (double)max + log(z);
    out->logprob = (float)((double)l[out->id] - log_z);
    uint32_t m = top_small(l, s->n_vocab, nl, s->c, s->bmax);
    qsort(s->c, m, sizeof *s->c, cand_cmp);
    for (uint32_t i = 0; i < m; i++) {
        out->top[i].id = s->c[i].id;
        out->top[i].logprob = (float)((double)s->c[i].l - log_z);
    }
    out->n_top = m;
}

int aarmd_sampler_sample(struct aarmd_sampler *s, float *logits, struct aarmd_sample *out)
{
    if (!s || !out)
        return AARMD_EINVAL;
    struct dist d;
    int rc = filter(s, logits, &d);
    if (rc != AARMD_OK)
        return rc;
    out->id = d.greedy ? d.id : draw(s, logits, &d);
    out->logprob = 0.0f;
    out->n_top = 0;
    fill_logprobs(s, logits, out);
    return AARMD_OK;
}

const char *aarmd_sampler_simd(const struct aarmd_sampler *s)
{
    return s ? s->k->name : "";
}

int aarmd_sampler_probs(struct aarmd_sampler *s, float *logits, int32_t *ids, double *probs, size_t *n)
{
    if (!s || !ids || !probs || !n)
        return AARMD_EINVAL;
    *n = 0;
    struct dist d;
    int rc = filter(s, logits, &d);
    if (rc != AARMD_OK)
        return rc;
    if (d.greedy) {
        ids[0] = d.id;
        probs[0] = 1.0;
        *n = 1;
        return AARMD_OK;
    }
    uint32_t m = d.n;
    if (d.full) {
        m = s->k->collect(logits, s->n_vocab, -FLT_MAX, s->c);
        s->k->cand_weights(s->c, m, d.max, d.a);
    }
    qsort(s->c, m, sizeof *s->c, cand_cmp);
    size_t k = 0;
    for (uint32_t i = 0; i < m; i++) {
        if (s->c[i].w <= 0.0f)
            continue;
        ids[k] = s->c[i].id;
        probs[k] = (double)s->c[i].w / d.mass;
        k++;
    }
    *n = k;
    return AARMD_OK;
}
