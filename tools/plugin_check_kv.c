/*
 * plugin_check_kv.c — the paged-KV checks of `aarmd-cli plugin-check` (see
 * plugin_check_kv.h). Each check drives sequences through the core's plugin
 * wrappers and compares kv_info and logits with what the ABI 1.1 contract
 * implies; it does not compare with another backend (that is --reference).
 */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_check_kv.h"

#define N_LOGITS 6          /* logits buffers: three sequences and their references */
#define N_SLOTS 4           /* token buffers: one per entry of a step */
#define FILL_CHUNK 256u     /* tokens per step while filling the pool */
#define FILL_CTX 4096u      /* filler length when the model states no context */

struct kv_run {
    struct aarmd_plugin *p;
    struct aarmd_backend_model *m;
    struct aarmd_check_tally *t;
    uint32_t n_vocab, n_ctx_train;
    uint32_t bt;                /* block_tokens */
    uint64_t total;             /* blocks_total */
    double tol;
    uint64_t fill_max;
    float *lg[N_LOGITS];        /* [n_vocab] each */
    int32_t *tk;                /* [N_SLOTS][tk_cap] */
    uint32_t tk_cap;
    char err[1024];
};

/* max |a - b| over a comparison, and the reference's largest |logit| */
struct diff {
    double maxd, scale;
    uint32_t nonfinite;
    int bitwise;                /* every compared float has the same bits */
};

static void kv_report(struct kv_run *r, const char *verdict, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void kv_report(struct kv_run *r, const char *verdict, const char *name, const char *fmt, ...)
{
    va_list ap;
    printf("%-4s kv-%s: ", verdict, name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    if (!strcmp(verdict, "PASS"))
        r->t->n_pass++;
    else if (!strcmp(verdict, "FAIL"))
        r->t->n_fail++;
    else
        r->t->n_skip++;
}

static uint64_t blocks_for(const struct kv_run *r, uint64_t n_tokens)
{
    return (n_tokens + r->bt - 1) / r->bt;
}

/* blocks_free now; on error 0 and the message is in r->err. */
static int free_blocks(struct kv_run *r, uint64_t *out)
{
    struct aarmd_kv_info info;
    int rc = aarmd_plugin_kv_info(r->p, r->m, &info, r->err, sizeof r->err);
    *out = rc == AARMD_OK ? info.blocks_free : 0;
    return rc;
}

/* Token i of a deterministic pseudo-random stream, in [0, n_vocab). */
static int32_t stream_tok(const struct kv_run *r, uint32_t stream, uint32_t i)
{
    uint64_t x = ((uint64_t)stream << 32 | i) + 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return (int32_t)((x ^ (x >> 31)) % r->n_vocab);
}

/* Tokens [from, from + n) of `stream` in token buffer `slot` (n <= tk_cap). */
static const int32_t *stream_toks(struct kv_run *r, int slot, uint32_t stream, uint32_t from, uint32_t n)
{
    int32_t *out = r->tk + (size_t)slot * r->tk_cap;
    for (uint32_t i = 0; i < n; i++)
        out[i] = stream_tok(r, stream, from + i);
    return out;
}

static void poison(float *l, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        l[i] = NAN;   /* a backend that writes no logits is caught by the comparison */
}

/* One step appending tokens [from, from + n) of `stream` to s; logits of the
 * last token to `logits` when non-NULL. Returns the step's status. */
static int feed(struct kv_run *r, struct aarmd_backend_seq *s, uint32_t stream, uint32_t from, uint32_t n,
                float *logits)
{
    struct aarmd_batch_entry e = {.seq = s, .tokens = stream_toks(r, 0, stream, from, n), .n_tokens = n,
                                  .want_logits = logits != NULL, .logits = logits};
    if (logits)
        poison(logits, r->n_vocab);
    return aarmd_plugin_step(r->p, r->m, &e, 1, r->err, sizeof r->err);
}

static void diff_add(struct diff *d, const float *got, const float *want, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(want[i])) {
            d->nonfinite++;
            d->bitwise = 0;
            continue;
        }
        double dd = fabs((double)got[i] - (double)want[i]);
        if (dd > d->maxd)
            d->maxd = dd;
        if (fabs((double)want[i]) > d->scale)
            d->scale = fabs((double)want[i]);
        if (memcmp(&got[i], &want[i], sizeof got[i]))
            d->bitwise = 0;
    }
}

static int diff_ok(const struct kv_run *r, const struct diff *d)
{
    return d->nonfinite == 0 && d->maxd <= r->tol * d->scale;
}

/* "bitwise equal" or "max|d| X (rel Y, tol Z)" */
static const char *diff_str(const struct kv_run *r, const struct diff *d, char *buf, size_t n)
{
    if (d->nonfinite)
        snprintf(buf, n, "%u non-finite logits", (unsigned)d->nonfinite);
    else if (d->bitwise)
        snprintf(buf, n, "max|d| 0, bitwise equal");
    else
        snprintf(buf, n, "max|d| %.3g (rel %.3g of max|logit| %.3g, tol %g)", d->maxd,
                 d->scale > 0.0 ? d->maxd / d->scale : d->maxd, d->scale, r->tol);
    return buf;
}

static void free_seqs(struct kv_run *r, struct aarmd_backend_seq **s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        aarmd_plugin_seq_free(r->p, s[i]);
        s[i] = NULL;
    }
}

/* SKIP (returns 1) when the pool lacks `need` free blocks or the model's
 * context is shorter than `n_ctx`; 0 to go on, -1 after a FAIL. */
static int check_room(struct kv_run *r, const char *name, uint64_t need, uint32_t n_ctx, uint64_t *free0)
{
    if (free_blocks(r, free0) != AARMD_OK) {
        kv_report(r, "FAIL", name, "kv_info: %s", r->err);
        return -1;
    }
    if (*free0 < need) {
        kv_report(r, "SKIP", name, "needs %" PRIu64 " free blocks, the pool has %" PRIu64
                  ": give the backend a larger pool (--backend-opt kv_mb=M)", need, *free0);
        return 1;
    }
    if (r->n_ctx_train && n_ctx > r->n_ctx_train) {
        kv_report(r, "SKIP", name, "needs sequences of %u tokens, the model's context is %u", (unsigned)n_ctx,
                  (unsigned)r->n_ctx_train);
        return 1;
    }
    return 0;
}

/* ---- kv-info, kv-idle ------------------------------------------------------ */

/* Returns 0 when the pool's shape is sane (the other checks rely on it). */
static int check_info(struct kv_run *r, const struct aarmd_kv_info *a, uint64_t *start_free)
{
    const char *bad = NULL;
    if (a->block_tokens == 0)
        bad = "block_tokens is 0 (must be > 0)";
    else if (a->blocks_total == 0)
        bad = "blocks_total is 0: a pool with no block can run no step";
    else if (a->blocks_free > a->blocks_total)
        bad = "blocks_free is above blocks_total";
    else if (a->block_bytes == 0)
        bad = "block_bytes is 0 (must be > 0)";
    if (bad) {
        kv_report(r, "FAIL", "info", "%s (block_tokens %u, blocks %" PRIu64 " free of %" PRIu64
                  ", block_bytes %" PRIu64 ")", bad, (unsigned)a->block_tokens, a->blocks_free, a->blocks_total,
                  a->block_bytes);
        return -1;
    }
    kv_report(r, "PASS", "info", "%u tokens per block, %" PRIu64 " blocks of %" PRIu64 " bytes (%.1f MiB), %"
              PRIu64 " free", (unsigned)a->block_tokens, a->blocks_total, a->block_bytes,
              (double)a->blocks_total * (double)a->block_bytes / 1048576.0, a->blocks_free);

    struct aarmd_kv_info b;
    if (aarmd_plugin_kv_info(r->p, r->m, &b, r->err, sizeof r->err) != AARMD_OK)
        kv_report(r, "FAIL", "idle", "second kv_info call failed: %s", r->err);
    else if (b.block_tokens != a->block_tokens || b.blocks_total != a->blocks_total ||
             b.blocks_free != a->blocks_free || b.block_bytes != a->block_bytes)
        kv_report(r, "FAIL", "idle", "two kv_info calls with nothing in between disagree (free %" PRIu64 " then %"
                  PRIu64 ", total %" PRIu64 " then %" PRIu64 ")", a->blocks_free, b.blocks_free, a->blocks_total,
                  b.blocks_total);
    else if (a->blocks_free != a->blocks_total)
        kv_report(r, "FAIL", "idle", "%" PRIu64 " of %" PRIu64 " blocks held with no sequence alive (the session's "
                  "sequence was freed): leaked or reserved", a->blocks_total - a->blocks_free, a->blocks_total);
    else
        kv_report(r, "PASS", "idle", "stable, all %" PRIu64 " blocks free with no sequence alive", a->blocks_total);
    *start_free = a->blocks_free;
    return 0;
}

/* ---- kv-blocks, kv-truncate, kv-free: one sequence's accounting ------------------ */

static void check_accounting(struct kv_run *r)
{
    const uint32_t B = r->bt, n_ctx = 4 * B;
    const uint32_t steps[] = {1, B - 1, 1, 2 * B};   /* lengths 1, B, B+1, 3B+1 */
    struct aarmd_backend_seq *s = NULL;
    uint64_t f0, f;
    char lens[256] = "", held[256] = "";
    size_t lo = 0, ho = 0;
    uint32_t len = 0;

    int room = check_room(r, "blocks", blocks_for(r, 3 * B + 1), n_ctx, &f0);
    if (room)
        return;
    if (aarmd_plugin_seq_new(r->p, r->m, n_ctx, &s, r->err, sizeof r->err) != AARMD_OK) {
        kv_report(r, "FAIL", "blocks", "seq_new (n_ctx %u): %s", (unsigned)n_ctx, r->err);
        return;
    }
    if (free_blocks(r, &f) != AARMD_OK) {
        kv_report(r, "FAIL", "blocks", "kv_info: %s", r->err);
        goto done;
    }
    if (f != f0) {
        kv_report(r, "FAIL", "blocks", "seq_new took %" PRId64 " blocks (must take none)", (int64_t)(f0 - f));
        goto done;
    }
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        if (steps[i] == 0)
            continue;
        if (feed(r, s, 1, len, steps[i], NULL) != AARMD_OK) {
            kv_report(r, "FAIL", "blocks", "step of %u tokens at length %u: %s", (unsigned)steps[i], (unsigned)len,
                      r->err);
            goto done;
        }
        len += steps[i];
        if (free_blocks(r, &f) != AARMD_OK) {
            kv_report(r, "FAIL", "blocks", "kv_info: %s", r->err);
            goto done;
        }
        if (f0 - f != blocks_for(r, len)) {
            kv_report(r, "FAIL", "blocks", "a sequence of %u tokens (block %u) holds %" PRId64 " blocks, expected %"
                      PRIu64, (unsigned)len, (unsigned)B, (int64_t)(f0 - f), blocks_for(r, len));
            goto done;
        }
        lo += (size_t)snprintf(lens + lo, sizeof lens - lo, "%s%u", lo ? "," : "", (unsigned)len);
        ho += (size_t)snprintf(held + ho, sizeof held - ho, "%s%" PRIu64, ho ? "," : "", f0 - f);
    }
    kv_report(r, "PASS", "blocks", "seq_new took none; lengths %s held %s blocks (ceil(len/%u))", lens, held,
              (unsigned)B);

    if (!aarmd_plugin_has_method(r->p, "seq_truncate")) {
        kv_report(r, "SKIP", "truncate", "seq_truncate not provided");
    } else {
        const uint32_t to[] = {2 * B + 1, B, 0};
        lo = ho = 0;
        for (size_t i = 0; i < sizeof to / sizeof to[0]; i++) {
            if (aarmd_plugin_seq_truncate(r->p, s, to[i], r->err, sizeof r->err) != AARMD_OK) {
                kv_report(r, "FAIL", "truncate", "seq_truncate %u -> %u: %s", (unsigned)len, (unsigned)to[i], r->err);
                goto done;
            }
            len = to[i];
            if (free_blocks(r, &f) != AARMD_OK || f0 - f != blocks_for(r, len)) {
                kv_report(r, "FAIL", "truncate", "after seq_truncate to %u the sequence holds %" PRId64
                          " blocks, expected %" PRIu64, (unsigned)len, (int64_t)(f0 - f), blocks_for(r, len));
                goto done;
            }
            lo += (size_t)snprintf(lens + lo, sizeof lens - lo, "%s%u", lo ? "," : "", (unsigned)len);
            ho += (size_t)snprintf(held + ho, sizeof held - ho, "%s%" PRIu64, ho ? "," : "", f0 - f);
        }
        if (feed(r, s, 2, 0, 1, NULL) != AARMD_OK) {
            kv_report(r, "FAIL", "truncate", "a step after truncating to 0: %s", r->err);
            goto done;
        }
        len = 1;
        if (free_blocks(r, &f) != AARMD_OK || f0 - f != 1) {
            kv_report(r, "FAIL", "truncate", "truncated to 0 then stepped 1 token: holds %" PRId64
                      " blocks, expected 1", (int64_t)(f0 - f));
            goto done;
        }
        kv_report(r, "PASS", "truncate", "to %s held %s blocks; one token after held 1", lens, held);
    }

    uint64_t held_now = blocks_for(r, len);
    aarmd_plugin_seq_free(r->p, s);
    s = NULL;
    if (free_blocks(r, &f) != AARMD_OK || f != f0)
        kv_report(r, "FAIL", "free", "seq_free of a sequence holding %" PRIu64 " blocks: %" PRIu64
                  " free after, expected %" PRIu64, held_now, f, f0);
    else
        kv_report(r, "PASS", "free", "seq_free gave its %" PRIu64 " blocks back", held_now);
done:
    aarmd_plugin_seq_free(r->p, s);
}

/* ---- kv-enomem, kv-enomem-resume --------------------------------------------- */

/*
 * A (B+1 tokens) and R (the same B+1 tokens, then token t with logits) are
 * set up first; fillers then take every free block but the `a_need` that
 * appending t to A takes (0 unless B is 1). Two steps that need more are
 * refused; then A takes t and its logits must be R's.
 */
static void check_enomem(struct kv_run *r)
{
    const uint32_t B = r->bt, n_ctx = 2 * B + 4;   /* room for a wrongly advanced refusal, caught by the logits */
    const uint64_t a_need = blocks_for(r, B + 2) - blocks_for(r, B + 1);
    struct aarmd_backend_seq *sq[4] = {NULL, NULL, NULL, NULL};   /* A, R, D, and E: D's reference */
    struct aarmd_backend_seq **fill = NULL;
    size_t n_fill = 0;
    uint64_t f0, f, filled = 0;
    char msg1[sizeof r->err] = "", dbuf[160];
    int rc;

    if (check_room(r, "enomem", blocks_for(r, B + 1) + blocks_for(r, B + 2) + a_need, n_ctx, &f0))
        return;
    uint64_t to_fill = f0 - blocks_for(r, B + 1) - blocks_for(r, B + 2) - a_need;
    if (to_fill * B > r->fill_max) {
        kv_report(r, "SKIP", "enomem", "filling the pool takes %" PRIu64 " tokens, above --kv-fill %" PRIu64
                  ": give the backend a smaller pool (e.g. --backend-opt kv_mb=1) or raise --kv-fill",
                  to_fill * B, r->fill_max);
        return;
    }
    for (int i = 0; i < 3; i++) {
        if (aarmd_plugin_seq_new(r->p, r->m, n_ctx, &sq[i], r->err, sizeof r->err) != AARMD_OK) {
            kv_report(r, "FAIL", "enomem", "seq_new (n_ctx %u): %s", (unsigned)n_ctx, r->err);
            goto done;
        }
    }
    if (feed(r, sq[0], 3, 0, B + 1, NULL) != AARMD_OK || feed(r, sq[1], 3, 0, B + 1, NULL) != AARMD_OK ||
        feed(r, sq[1], 3, B + 1, 1, r->lg[1]) != AARMD_OK) {
        kv_report(r, "FAIL", "enomem", "prefill of %u tokens: %s", (unsigned)(B + 1), r->err);
        goto done;
    }

    /* fill: sequences of whole blocks until only a_need blocks are free */
    uint32_t cap_blocks = (r->n_ctx_train ? r->n_ctx_train : FILL_CTX) / B;
    if (cap_blocks == 0)
        cap_blocks = 1;
    for (;;) {
        if (free_blocks(r, &f) != AARMD_OK) {
            kv_report(r, "FAIL", "enomem", "kv_info: %s", r->err);
            goto done;
        }
        if (f <= a_need)
            break;
        uint64_t nb = f - a_need < cap_blocks ? f - a_need : cap_blocks;
        uint32_t len = (uint32_t)nb * B;
        struct aarmd_backend_seq **grown = realloc(fill, (n_fill + 1) * sizeof *fill);
        if (!grown) {
            kv_report(r, "FAIL", "enomem", "out of memory");
            goto done;
        }
        fill = grown;
        fill[n_fill] = NULL;
        if (aarmd_plugin_seq_new(r->p, r->m, len, &fill[n_fill], r->err, sizeof r->err) != AARMD_OK) {
            kv_report(r, "FAIL", "enomem", "filler seq_new (n_ctx %u): %s", (unsigned)len, r->err);
            goto done;
        }
        n_fill++;
        for (uint32_t at = 0; at < len; at += FILL_CHUNK) {
            uint32_t n = len - at < FILL_CHUNK ? len - at : FILL_CHUNK;
            if (feed(r, fill[n_fill - 1], 100 + (uint32_t)n_fill, at, n, NULL) != AARMD_OK) {
                kv_report(r, "FAIL", "enomem", "filling the pool (%" PRIu64 " free blocks, filler %zu at %u tokens "
                          "of %u): %s", f, n_fill, (unsigned)at, (unsigned)len, r->err);
                goto done;
            }
        }
        filled += len;
        uint64_t after;
        if (free_blocks(r, &after) != AARMD_OK || f - after != nb) {
            kv_report(r, "FAIL", "enomem", "a filler of %u tokens took %" PRId64 " blocks, expected %" PRIu64,
                      (unsigned)len, (int64_t)(f - after), nb);
            goto done;
        }
    }

    /* refusal 1: A one token (fits) and the empty D one token (a new block) */
    const int32_t *ta = stream_toks(r, 0, 3, B + 1, 1), *td = stream_toks(r, 1, 4, 0, 1);
    struct aarmd_batch_entry two[2] = {
        {.seq = sq[0], .tokens = ta, .n_tokens = 1, .want_logits = 1, .logits = r->lg[0]},
        {.seq = sq[2], .tokens = td, .n_tokens = 1, .want_logits = 1, .logits = r->lg[2]},
    };
    rc = aarmd_plugin_step(r->p, r->m, two, 2, r->err, sizeof r->err);
    if (rc != AARMD_ENOMEM) {
        kv_report(r, "FAIL", "enomem", "a 2-entry step needing %" PRIu64 " blocks with %" PRIu64
                  " free returned %d (%s), expected AARMD_ENOMEM: %s", a_need + 1, f, rc, aarmd_status_str(rc),
                  rc == AARMD_OK ? "(no message)" : r->err);
        goto done;
    }
    snprintf(msg1, sizeof msg1, "%s", r->err);
    uint64_t after;
    if (free_blocks(r, &after) != AARMD_OK || after != f) {
        kv_report(r, "FAIL", "enomem", "the refused step changed blocks_free from %" PRIu64 " to %" PRIu64, f, after);
        goto done;
    }
    /* refusal 2: A alone, B+1 tokens: at least one block more than is free */
    rc = feed(r, sq[0], 5, 0, B + 1, r->lg[0]);
    if (rc != AARMD_ENOMEM) {
        kv_report(r, "FAIL", "enomem", "a %u-token step needing %" PRIu64 " blocks with %" PRIu64
                  " free returned %d (%s), expected AARMD_ENOMEM: %s", (unsigned)(B + 1),
                  blocks_for(r, 2 * B + 2) - blocks_for(r, B + 1), f, rc, aarmd_status_str(rc),
                  rc == AARMD_OK ? "(no message)" : r->err);
        goto done;
    }
    if (free_blocks(r, &after) != AARMD_OK || after != f) {
        kv_report(r, "FAIL", "enomem", "the refused step changed blocks_free from %" PRIu64 " to %" PRIu64, f, after);
        goto done;
    }
    kv_report(r, "PASS", "enomem", "pool filled (%zu fillers, %" PRIu64 " tokens); a 2-entry step and a %u-token "
              "step needing more than the %" PRIu64 " free blocks were refused with AARMD_ENOMEM, blocks_free "
              "unchanged (\"%s\")", n_fill, filled, (unsigned)(B + 1), f, msg1);

    /* the next smaller step: A's logits must be those of R, which never saw a refusal */
    if (feed(r, sq[0], 3, B + 1, 1, r->lg[0]) != AARMD_OK) {
        kv_report(r, "FAIL", "enomem-resume", "the 1-token step that fits (%" PRIu64 " blocks free) failed: %s",
                  a_need, r->err);
        goto done;
    }
    struct diff d = {0, 0, 0, 1};
    diff_add(&d, r->lg[0], r->lg[1], r->n_vocab);
    if (!diff_ok(r, &d)) {
        kv_report(r, "FAIL", "enomem-resume", "after two refused steps the next step's logits differ from a "
                  "sequence that never saw a refusal: %s (a refused step advanced the sequence?)",
                  diff_str(r, &d, dbuf, sizeof dbuf));
        goto done;
    }
    /* once blocks are free the refused entry steps, as if it had never been refused */
    free_seqs(r, fill, n_fill);
    if (feed(r, sq[2], 4, 0, 1, r->lg[2]) != AARMD_OK) {
        kv_report(r, "FAIL", "enomem-resume", "after the fillers were freed the refused entry still fails: %s",
                  r->err);
        goto done;
    }
    if (aarmd_plugin_seq_new(r->p, r->m, n_ctx, &sq[3], r->err, sizeof r->err) != AARMD_OK ||
        feed(r, sq[3], 4, 0, 1, r->lg[3]) != AARMD_OK) {
        kv_report(r, "FAIL", "enomem-resume", "a fresh sequence: %s", r->err);
        goto done;
    }
    struct diff d2 = {0, 0, 0, 1};
    diff_add(&d2, r->lg[2], r->lg[3], r->n_vocab);
    if (!diff_ok(r, &d2)) {
        kv_report(r, "FAIL", "enomem-resume", "the empty sequence of the refused 2-entry step, stepped once blocks "
                  "were freed, differs from a fresh one: %s (the refused step advanced it?)",
                  diff_str(r, &d2, dbuf, sizeof dbuf));
        goto done;
    }
    struct diff all = d;
    all.maxd = d2.maxd > d.maxd ? d2.maxd : d.maxd;
    all.scale = d2.scale > d.scale ? d2.scale : d.scale;
    all.bitwise = d.bitwise && d2.bitwise;
    kv_report(r, "PASS", "enomem-resume", "the refused sequences, stepped when blocks allow (the one that fits at "
              "once, the other after the fillers were freed), match sequences that never saw a refusal: %s",
              diff_str(r, &all, dbuf, sizeof dbuf));
done:
    if (fill)
        free_seqs(r, fill, n_fill);
    free(fill);
    free_seqs(r, sq, 4);
}

/* ---- kv-fork, kv-fork-order, kv-fork-einval --------------------------------------- */

/* Steps a and b with the same tokens of `stream` (chunks of `chunks`) and adds their logits' difference. */
static int same_continuation(struct kv_run *r, struct aarmd_backend_seq *a, struct aarmd_backend_seq *b,
                             uint32_t stream, const uint32_t *chunks, size_t n_chunks, struct diff *d)
{
    uint32_t at = 0;
    for (size_t i = 0; i < n_chunks; i++) {
        if (feed(r, a, stream, at, chunks[i], r->lg[0]) != AARMD_OK || feed(r, b, stream, at, chunks[i],
                                                                           r->lg[1]) != AARMD_OK)
            return -1;
        diff_add(d, r->lg[0], r->lg[1], r->n_vocab);
        at += chunks[i];
    }
    return 0;
}

/* A source of n + extra tokens: stream 10 tokens [0, n) in one step, then [n, n + extra). */
static int feed_source(struct kv_run *r, struct aarmd_backend_seq *s, uint32_t n, uint32_t extra)
{
    if (feed(r, s, 10, 0, n, NULL) != AARMD_OK)
        return -1;
    return extra ? feed(r, s, 10, n, extra, NULL) : 0;
}

static void check_fork_einval(struct kv_run *r, struct aarmd_backend_seq *src, uint32_t len, uint32_t n_ctx)
{
    const uint32_t B = r->bt;
    struct fork_case {
        uint32_t n, n_ctx;
        const char *why;
    } bad[3];
    int n_bad = 0;
    if (B > 1)
        bad[n_bad++] = (struct fork_case){B + 1, n_ctx, "not a multiple of block_tokens"};
    bad[n_bad++] = (struct fork_case){(len / B + 1) * B, n_ctx + B, "more than the source's length"};
    bad[n_bad++] = (struct fork_case){2 * B, B, "more than n_ctx"};
    uint64_t f0, f;
    char got[512] = "", msg[sizeof r->err] = "";
    size_t go = 0;

    if (free_blocks(r, &f0) != AARMD_OK) {
        kv_report(r, "FAIL", "fork-einval", "kv_info: %s", r->err);
        return;
    }
    for (int i = 0; i < n_bad; i++) {
        struct aarmd_backend_seq *out = NULL;
        int rc = aarmd_plugin_seq_fork(r->p, src, bad[i].n, bad[i].n_ctx, &out, r->err, sizeof r->err);
        if (out) {
            aarmd_plugin_seq_free(r->p, out);
            if (rc == AARMD_OK) {
                kv_report(r, "FAIL", "fork-einval", "seq_fork of %u tokens (%s: source %u, block %u, n_ctx %u) "
                          "was accepted", (unsigned)bad[i].n, bad[i].why, (unsigned)len, (unsigned)B,
                          (unsigned)bad[i].n_ctx);
                return;
            }
        }
        if (rc != AARMD_EINVAL) {
            kv_report(r, "FAIL", "fork-einval", "seq_fork of %u tokens (%s) returned %d (%s), expected AARMD_EINVAL: "
                      "%s", (unsigned)bad[i].n, bad[i].why, rc, aarmd_status_str(rc), r->err);
            return;
        }
        if (out) {
            kv_report(r, "FAIL", "fork-einval", "seq_fork of %u tokens (%s) returned AARMD_EINVAL but set *out",
                      (unsigned)bad[i].n, bad[i].why);
            return;
        }
        snprintf(msg, sizeof msg, "%s", r->err);
        if (free_blocks(r, &f) != AARMD_OK || f != f0) {
            kv_report(r, "FAIL", "fork-einval", "the refused seq_fork of %u tokens changed blocks_free %" PRIu64
                      " -> %" PRIu64, (unsigned)bad[i].n, f0, f);
            return;
        }
        go += (size_t)snprintf(got + go, sizeof got - go, "%s%u (%s)", go ? ", " : "", (unsigned)bad[i].n,
                               bad[i].why);
        if (go >= sizeof got)
            go = sizeof got - 1;
    }
    kv_report(r, "PASS", "fork-einval", "refused with AARMD_EINVAL, nothing taken: n = %s; last: \"%s\"", got, msg);
}

static void check_fork(struct kv_run *r)
{
    const uint32_t B = r->bt, n = 2 * B, extra = B / 2 + 1, n_ctx = 4 * B + 4;
    const uint32_t cont[] = {B + 1, 1};
    struct aarmd_backend_seq *sq[4] = {NULL, NULL, NULL, NULL};   /* S, F, G, spare */
    uint64_t f0, f1 = 0, f2 = 0;
    char dbuf[160];
    int rc;

    if (!aarmd_plugin_has_method(r->p, "seq_fork")) {
        kv_report(r, "SKIP", "fork", "seq_fork not provided (no prefix reuse)");
        return;
    }
    if (check_room(r, "fork", 3 * blocks_for(r, n + extra + B + 2), n_ctx, &f0))
        return;
    if (aarmd_plugin_seq_new(r->p, r->m, n_ctx, &sq[0], r->err, sizeof r->err) != AARMD_OK ||
        feed_source(r, sq[0], n, extra)) {
        kv_report(r, "FAIL", "fork", "source of %u tokens: %s", (unsigned)(n + extra), r->err);
        goto done;
    }
    if (free_blocks(r, &f1) != AARMD_OK) {
        kv_report(r, "FAIL", "fork", "kv_info: %s", r->err);
        goto done;
    }
    rc = aarmd_plugin_seq_fork(r->p, sq[0], n, n_ctx, &sq[1], r->err, sizeof r->err);
    if (rc == AARMD_EUNSUPPORTED) {
        kv_report(r, "SKIP", "fork", "seq_fork unsupported: %s", r->err);
        goto done;
    }
    if (rc != AARMD_OK) {
        kv_report(r, "FAIL", "fork", "seq_fork of %u of %u tokens: %s", (unsigned)n, (unsigned)(n + extra), r->err);
        goto done;
    }
    if (free_blocks(r, &f2) != AARMD_OK || f2 != f1) {
        kv_report(r, "FAIL", "fork", "seq_fork of %u tokens took %" PRId64 " blocks (must share, taking none)",
                  (unsigned)n, (int64_t)(f1 - f2));
        goto done;
    }
    check_fork_einval(r, sq[0], n + extra, n_ctx);

    /* the source keeps growing, then goes first */
    if (feed(r, sq[0], 12, 0, 2, NULL) != AARMD_OK) {
        kv_report(r, "FAIL", "fork", "the source stepped after the fork: %s", r->err);
        goto done;
    }
    uint64_t held_src = blocks_for(r, n + extra + 2), before, after;
    if (free_blocks(r, &before) != AARMD_OK)
        goto info_fail;
    aarmd_plugin_seq_free(r->p, sq[0]);
    sq[0] = NULL;
    if (free_blocks(r, &after) != AARMD_OK)
        goto info_fail;
    if (after - before != held_src - 2) {
        kv_report(r, "FAIL", "fork", "freeing the source (%" PRIu64 " blocks, 2 shared with the fork) gave back %"
                  PRId64 ", expected %" PRIu64, held_src, (int64_t)(after - before), held_src - 2);
        goto done;
    }
    /* the fork continues exactly as a sequence prefilled with the same tokens */
    struct diff d = {0, 0, 0, 1};
    if (aarmd_plugin_seq_new(r->p, r->m, n_ctx, &sq[2], r->err, sizeof r->err) != AARMD_OK ||
        feed_source(r, sq[2], n, 0) || same_continuation(r, sq[1], sq[2], 11, cont, 2, &d)) {
        kv_report(r, "FAIL", "fork", "continuation on the fork and a fresh sequence: %s", r->err);
        goto done;
    }
    if (free_blocks(r, &before) != AARMD_OK)
        goto info_fail;
    aarmd_plugin_seq_free(r->p, sq[1]);
    sq[1] = NULL;
    if (free_blocks(r, &after) != AARMD_OK)
        goto info_fail;
    if (after - before != blocks_for(r, n + B + 2)) {
        kv_report(r, "FAIL", "fork", "freeing the fork (its source gone, %u tokens) gave back %" PRId64
                  " blocks, expected %" PRIu64, (unsigned)(n + B + 2), (int64_t)(after - before),
                  blocks_for(r, n + B + 2));
        goto done;
    }
    if (!diff_ok(r, &d)) {
        kv_report(r, "FAIL", "fork", "a fork of %u tokens continued with %u+%u tokens differs from a fresh "
                  "sequence: %s", (unsigned)n, (unsigned)cont[0], (unsigned)cont[1], diff_str(r, &d, dbuf, sizeof dbuf));
        goto done;
    }
    kv_report(r, "PASS", "fork", "fork of %u of %u tokens took no block; the source grew, then was freed first "
              "(gave back %" PRIu64 ", 2 shared stayed); the fork continued by %u+%u tokens vs a fresh sequence: %s",
              (unsigned)n, (unsigned)(n + extra), held_src - 2, (unsigned)cont[0], (unsigned)cont[1],
              diff_str(r, &d, dbuf, sizeof dbuf));
    free_seqs(r, sq, 4);

    /* the other order: the fork grows and goes first; the source is unchanged */
    if (aarmd_plugin_seq_new(r->p, r->m, n_ctx, &sq[0], r->err, sizeof r->err) != AARMD_OK ||
        feed_source(r, sq[0], n, extra) || free_blocks(r, &before) != AARMD_OK ||
        aarmd_plugin_seq_fork(r->p, sq[0], n, n_ctx, &sq[1], r->err, sizeof r->err) != AARMD_OK ||
        feed(r, sq[1], 13, 0, B + 1, NULL) != AARMD_OK) {
        kv_report(r, "FAIL", "fork-order", "source, fork and a step on the fork: %s", r->err);
        goto done;
    }
    aarmd_plugin_seq_free(r->p, sq[1]);
    sq[1] = NULL;
    if (free_blocks(r, &after) != AARMD_OK)
        goto info_fail;
    if (after != before) {
        kv_report(r, "FAIL", "fork-order", "a fork that grew by %u tokens and was freed before its source left "
                  "blocks_free at %" PRIu64 ", expected %" PRIu64, (unsigned)(B + 1), after, before);
        goto done;
    }
    struct diff d2 = {0, 0, 0, 1};
    if (aarmd_plugin_seq_new(r->p, r->m, n_ctx, &sq[2], r->err, sizeof r->err) != AARMD_OK ||
        feed_source(r, sq[2], n, extra) || same_continuation(r, sq[0], sq[2], 14, cont, 2, &d2)) {
        kv_report(r, "FAIL", "fork-order", "continuation on the source and a fresh sequence: %s", r->err);
        goto done;
    }
    if (!diff_ok(r, &d2))
        kv_report(r, "FAIL", "fork-order", "the source of a freed fork, continued by %u+%u tokens, differs from a "
                  "fresh sequence: %s", (unsigned)cont[0], (unsigned)cont[1], diff_str(r, &d2, dbuf, sizeof dbuf));
    else
        kv_report(r, "PASS", "fork-order", "a fork grown by %u tokens and freed before its source gave all its "
                  "blocks back; the source continued by %u+%u tokens vs a fresh sequence: %s", (unsigned)(B + 1),
                  (unsigned)cont[0], (unsigned)cont[1], diff_str(r, &d2, dbuf, sizeof dbuf));
    goto done;
info_fail:
    kv_report(r, "FAIL", "fork", "kv_info: %s", r->err);
done:
    free_seqs(r, sq, 4);
}

/* ---- kv-batch ------------------------------------------------------------------ */

static void check_batch(struct kv_run *r)
{
    const uint32_t B = r->bt;
    const uint32_t lens[3] = {3, B + 2, 2 * B + 5}, more[3] = {1, 2, 1}, n_ctx = 2 * B + 6;
    struct aarmd_backend_seq *x[3] = {NULL, NULL, NULL}, *y[3] = {NULL, NULL, NULL};
    uint64_t f0, f, need = 0;
    char dbuf[160];

    for (int i = 0; i < 3; i++)
        need += 2 * blocks_for(r, lens[i] + more[i]);
    if (check_room(r, "batch", need, n_ctx, &f0))
        return;
    for (int i = 0; i < 3; i++) {
        if (aarmd_plugin_seq_new(r->p, r->m, n_ctx, &x[i], r->err, sizeof r->err) != AARMD_OK ||
            aarmd_plugin_seq_new(r->p, r->m, n_ctx, &y[i], r->err, sizeof r->err) != AARMD_OK) {
            kv_report(r, "FAIL", "batch", "seq_new (n_ctx %u): %s", (unsigned)n_ctx, r->err);
            goto done;
        }
    }
    struct diff d = {0, 0, 0, 1};
    for (int round = 0; round < 2; round++) {
        struct aarmd_batch_entry e[3];
        for (int i = 0; i < 3; i++) {
            uint32_t from = round ? lens[i] : 0, n = round ? more[i] : lens[i];
            e[i] = (struct aarmd_batch_entry){.seq = x[i], .tokens = stream_toks(r, 1 + i, 30 + (uint32_t)i, from, n),
                                              .n_tokens = n, .want_logits = 1, .logits = r->lg[i]};
            poison(r->lg[i], r->n_vocab);
        }
        if (aarmd_plugin_step(r->p, r->m, e, 3, r->err, sizeof r->err) != AARMD_OK) {
            kv_report(r, "FAIL", "batch", "a step of 3 sequences (%u, %u, %u tokens): %s", (unsigned)e[0].n_tokens,
                      (unsigned)e[1].n_tokens, (unsigned)e[2].n_tokens, r->err);
            goto done;
        }
        for (int i = 0; i < 3; i++) {
            if (feed(r, y[i], 30 + (uint32_t)i, round ? lens[i] : 0, e[i].n_tokens, r->lg[3 + i]) != AARMD_OK) {
                kv_report(r, "FAIL", "batch", "a step of one sequence: %s", r->err);
                goto done;
            }
            diff_add(&d, r->lg[i], r->lg[3 + i], r->n_vocab);
        }
    }
    uint64_t held = 0;
    for (int i = 0; i < 3; i++)
        held += 2 * blocks_for(r, lens[i] + more[i]);
    if (free_blocks(r, &f) != AARMD_OK || f0 - f != held)
        kv_report(r, "FAIL", "batch", "6 sequences hold %" PRId64 " blocks, expected %" PRIu64, (int64_t)(f0 - f),
                  held);
    else if (!diff_ok(r, &d))
        kv_report(r, "FAIL", "batch", "3 sequences in one step differ from each alone: %s",
                  diff_str(r, &d, dbuf, sizeof dbuf));
    else
        kv_report(r, "PASS", "batch", "3 sequences of %u, %u, %u tokens in one step, then %u, %u, %u more: logits "
                  "vs each alone %s; %" PRIu64 " blocks held as expected", (unsigned)lens[0], (unsigned)lens[1],
                  (unsigned)lens[2], (unsigned)more[0], (unsigned)more[1], (unsigned)more[2],
                  diff_str(r, &d, dbuf, sizeof dbuf), held);
done:
    free_seqs(r, x, 3);
    free_seqs(r, y, 3);
}

/* ---- entry ---------------------------------------------------------------------- */

void aarmd_plugin_check_kv(struct aarmd_plugin *p, struct aarmd_backend_model *model, uint32_t n_vocab,
                           uint32_t n_ctx_train, const struct aarmd_kv_check_opts *o, struct aarmd_check_tally *t)
{
    struct kv_run r;
    memset(&r, 0, sizeof r);
    r.p = p;
    r.m = model;
    r.t = t;
    r.n_vocab = n_vocab;
    r.n_ctx_train = n_ctx_train;
    r.tol = o ? o->tol : AARMD_KV_CHECK_TOL;
    r.fill_max = o ? o->fill_max : AARMD_KV_CHECK_FILL_MAX;

    struct aarmd_kv_info info;
    int rc = aarmd_plugin_kv_info(p, model, &info, r.err, sizeof r.err);
    if (rc == AARMD_EUNSUPPORTED) {
        /* a valid answer (kv_info is optional), so a PASS: nothing paged to check */
        kv_report(&r, "PASS", "info", "not paged: skipped (kv_info: AARMD_EUNSUPPORTED, \"%s\")", r.err);
        return;
    }
    if (rc != AARMD_OK) {
        kv_report(&r, "FAIL", "info", "kv_info returned %d (%s), expected AARMD_OK or AARMD_EUNSUPPORTED: %s", rc,
                  aarmd_status_str(rc), r.err);
        return;
    }
    if (n_vocab == 0) {
        kv_report(&r, "FAIL", "info", "the model has no vocabulary to draw tokens from");
        return;
    }
    uint64_t start_free;
    if (check_info(&r, &info, &start_free))
        return;
    r.bt = info.block_tokens;
    r.total = info.blocks_total;
    if (r.bt > 4096) {
        kv_report(&r, "SKIP", "blocks", "block_tokens %u: the checks use sequences of up to 4 blocks; too long to run "
                  "here", (unsigned)r.bt);
        return;
    }
    r.tk_cap = 4 * r.bt + 16 > FILL_CHUNK ? 4 * r.bt + 16 : FILL_CHUNK;
    r.tk = malloc((size_t)N_SLOTS * r.tk_cap * sizeof *r.tk);
    int have_all = r.tk != NULL;
    for (int i = 0; i < N_LOGITS; i++) {
        r.lg[i] = malloc((size_t)n_vocab * sizeof(float));
        have_all &= r.lg[i] != NULL;
    }
    if (!have_all) {
        kv_report(&r, "FAIL", "info", "out of memory for the checks' buffers (n_vocab %u)", (unsigned)n_vocab);
        goto done;
    }

    check_accounting(&r);
    check_enomem(&r);
    check_fork(&r);
    check_batch(&r);

    uint64_t f;
    if (free_blocks(&r, &f) != AARMD_OK)
        kv_report(&r, "FAIL", "end", "kv_info: %s", r.err);
    else if (f != start_free)
        kv_report(&r, "FAIL", "end", "%" PRIu64 " blocks free after every check's sequences were freed, %" PRIu64
                  " at the start: %" PRId64 " leaked", f, start_free, (int64_t)(start_free - f));
    else
        kv_report(&r, "PASS", "end", "all %" PRIu64 " blocks back (%" PRIu64 " free of %" PRIu64 ")", start_free, f,
                  r.total);
done:
    free(r.tk);
    for (int i = 0; i < N_LOGITS; i++)
        free(r.lg[i]);
}
