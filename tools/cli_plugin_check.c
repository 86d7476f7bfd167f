/*
 * cli_plugin_check.c — `aarmd-cli plugin-check PATH|NAME`: loads a backend
 * through the real loader and walks it through one tiny session, printing
 * each check as PASS/FAIL/SKIP; a paged backend then gets the kv-* checks
 * (plugin_check_kv.c). It checks the plugin contract, not accuracy.
 */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "gguf.h"
#include "log.h"
#include "model.h"
#include "plugin.h"
#include "plugin_check_kv.h"
#include "tokenizer.h"

#define SYNTH_VOCAB 300u
#define CHECK_CTX 64u
#define CHECK_STEPS 3

static const char check_help[] =
    "usage: aarmd-cli plugin-check PATH|NAME [--backend-opt k=v ...] [--plugin-dir DIR]\n"
    "                              [--device N] [--model FILE.gguf] [--tol T] [--kv-fill N] [-v]\n"
    "       aarmd-cli plugin-check PATH|NAME --reference NAME --model FILE.gguf\n"
    "                              [--prompt-len N | --prompt TEXT] [--steps S] [--tol T]\n"
    "\n"
    "Loads a backend plugin through aarmd's loader (a NAME resolves to\n"
    "backend_NAME" AARMD_PLUGIN_SUFFIX " in --plugin-dir, $AARMD_PLUGIN_PATH, then the install's\n"
    "plugin dir), prints its table (name, version, ABI, struct size, optional\n"
    "methods), then creates a context, reads the device info, loads a model,\n"
    "creates a sequence, decodes " "3 tokens greedily, checks every logit is finite,\n"
    "truncates the sequence (when supported), checks a bad token is refused and\n"
    "frees everything.\n"
    "\n"
    "Paged KV (ABI 1.1): when the backend's kv_info answers, the same model goes\n"
    "through the kv-* checks: kv_info sanity and all blocks free with no sequence;\n"
    "a sequence of k tokens holds ceil(k/B) blocks, truncate and free give them back;\n"
    "with the pool filled (at most --kv-fill N tokens of filler prefill, default\n"
    "8192; make the pool small with --backend-opt kv_mb=M) a step that cannot fit\n"
    "returns AARMD_ENOMEM and advances nothing; a fork continues exactly as a fresh\n"
    "sequence, whichever of fork and source is freed first, and bad forks return\n"
    "AARMD_EINVAL; 3 sequences in one step match each alone. Logits compare within\n"
    "--tol (max|dlogit| relative to max|logit|; default 1e-4 here, 0 = bitwise) and\n"
    "the line shows max|d|. A backend that is not paged prints 'not paged: skipped'.\n"
    "\n"
    "Without --model the model is a synthetic description (n_vocab 300, no\n"
    "tensors): the mock backend runs it; a real backend refuses it, which is\n"
    "reported as SKIP. -v shows the plugin's log lines.\n"
    "\n"
    "Each check prints PASS, FAIL or SKIP. Exit status: 0 when no check failed,\n"
    "1 otherwise, 2 on a usage error.\n"
    "\n"
    "--reference NAME --model FILE: instead of the session checks, runs the same\n"
    "prompt (--prompt-len N tokens, default 8, as one prefill) and --steps S greedy\n"
    "decodes (default 8, driven by the reference's argmax) through both plugins\n"
    "and compares the logits of every step: max|dlogit| relative to the reference's\n"
    "largest |logit| must stay under --tol (default 0.02), and top-1 must agree\n"
    "unless the reference's top-2 gap is below 2 max|dlogit| (a near tie).\n"
    "--prompt TEXT: the prompt is TEXT through the model's tokenizer (BOS as the\n"
    "vocabulary says) instead of --prompt-len synthetic ids; the steps then are\n"
    "the reference's greedy continuation, printed as GREEDY with the number of\n"
    "steps whose top-1 differed and the reference's lead at the first of them.\n";

struct checker {
    int n_pass, n_fail, n_skip;
};

/* --reference mode (below run_checks): options and entry. */
struct ref_opts {
    const char *reference;      /* second plugin, the numerical reference (e.g. cpu) */
    long prompt_len, steps;
    const char *prompt;         /* text through the model's tokenizer, or NULL: synthetic ids */
    double tol;                 /* bound on max|dlogit| / max|ref logit| */
};
static void run_reference(struct checker *c, struct aarmd_plugin *p, struct aarmd_plugin *ref, int32_t device,
                          const char *model_path, const struct ref_opts *ro);

static void report(struct checker *c, const char *verdict, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(struct checker *c, const char *verdict, const char *fmt, ...)
{
    va_list ap;
    printf("%-4s ", verdict);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    if (!strcmp(verdict, "PASS"))
        c->n_pass++;
    else if (!strcmp(verdict, "FAIL"))
        c->n_fail++;
    else
        c->n_skip++;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static void synthetic_desc(struct aarmd_model_desc *d)
{
    memset(d, 0, sizeof *d);
    d->struct_size = sizeof *d;
    d->arch = "llama";
    d->name = "plugin-check synthetic";
    d->n_vocab = SYNTH_VOCAB;
    d->n_ctx_train = CHECK_CTX;
    d->rope_scale = 1.0f;
    d->embd_scale = 1.0f;
    d->bos_id = 1;
    d->eos_id = 2;
}

static uint32_t argmax(const float *l, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (l[i] > l[best])
            best = i;
    return best;
}

/* Count of non-finite logits. */
static uint32_t n_nonfinite(const float *l, uint32_t n)
{
    uint32_t bad = 0;
    for (uint32_t i = 0; i < n; i++)
        bad += !isfinite(l[i]);
    return bad;
}

static void print_table(struct aarmd_plugin *p)
{
    const struct aarmd_backend *t = aarmd_plugin_table(p);
    printf("plugin        %s\n", aarmd_plugin_path(p));
    printf("name          %s\n", t->name);
    printf("version       %s\n", t->version ? t->version : "(none)");
    printf("ABI           %u.%u (host %d.%d)\n", (unsigned)t->abi_major, (unsigned)t->abi_minor, AARMD_ABI_MAJOR,
           AARMD_ABI_MINOR);
    printf("struct_size   %u (host %zu)\n", (unsigned)t->struct_size, sizeof(struct aarmd_backend));
    printf("optional      device_info %s, model_bytes %s, seq_truncate %s\n",
           aarmd_plugin_has_method(p, "device_info") ? "yes" : "no (default)",
           aarmd_plugin_has_method(p, "model_bytes") ? "yes" : "no (default 0)",
           aarmd_plugin_has_method(p, "seq_truncate") ? "yes" : "no (unsupported)");
}

/* Runs the session checks on a loaded plugin. */
static void run_checks(struct checker *c, struct aarmd_plugin *p, int32_t device, const char *model_path,
                       const struct aarmd_kv_check_opts *kvo)
{
    char err[1024];
    struct aarmd_backend_ctx *ctx = NULL;
    struct aarmd_backend_model *m = NULL;
    struct aarmd_backend_seq *s = NULL;
    struct aarmd_gguf *g = NULL;
    struct aarmd_model_desc *file_desc = NULL;
    struct aarmd_model_desc synth;
    const struct aarmd_model_desc *desc = &synth;
    float *logits = NULL;
    int rc;

    rc = aarmd_plugin_ctx_new(p, device, &ctx, err, sizeof err);
    if (rc != AARMD_OK) {
        report(c, "FAIL", "ctx_new on device %d: %s", (int)device, err);
        goto done;
    }
    report(c, "PASS", "ctx_new on device %d", (int)device);

    struct aarmd_device_info info;
    rc = aarmd_plugin_device_info(p, ctx, &info, err, sizeof err);
    if (rc != AARMD_OK)
        report(c, "FAIL", "device_info: %s", err);
    else
        report(c, "PASS", "device_info: \"%s\", %s, worker_type %s, memory %" PRIu64 " free of %" PRIu64
               ", advised_seqs %u", info.name, info.memory_architecture, info.worker_type, info.memory_free,
               info.memory_total, (unsigned)info.advised_seqs);

    if (model_path) {
        rc = aarmd_gguf_open(model_path, &g, err, sizeof err);
        if (rc == AARMD_OK)
            rc = aarmd_model_desc_from_gguf(g, &file_desc, err, sizeof err);
        if (rc != AARMD_OK) {
            report(c, "FAIL", "model %s: %s", model_path, err);
            goto done;
        }
        desc = file_desc;
    } else {
        synthetic_desc(&synth);
    }
    rc = aarmd_plugin_model_load(p, ctx, desc, NULL, NULL, &m, err, sizeof err);
    if (rc != AARMD_OK) {
        if (!model_path) {
            report(c, "SKIP", "model load: unsupported without --model (backend said: %s)", err);
            goto done;
        }
        report(c, "FAIL", "model_load %s: %s", model_path, err);
        goto done;
    }
    report(c, "PASS", "model_load %s (arch %s, n_vocab %u, %u tensors)", model_path ? model_path : "synthetic",
           desc->arch ? desc->arch : "?", (unsigned)desc->n_vocab, (unsigned)desc->n_tensors);
    report(c, "PASS", "model_bytes: %" PRIu64, aarmd_plugin_model_bytes(p, m));

    uint32_t n_vocab = desc->n_vocab;
    logits = malloc((size_t)n_vocab * sizeof *logits);
    if (!logits) {
        report(c, "FAIL", "out of memory for %u logits", (unsigned)n_vocab);
        goto done;
    }
    rc = aarmd_plugin_seq_new(p, m, CHECK_CTX, &s, err, sizeof err);
    if (rc != AARMD_OK) {
        report(c, "FAIL", "seq_new (n_ctx %u): %s", CHECK_CTX, err);
        goto done;
    }
    report(c, "PASS", "seq_new (n_ctx %u)", CHECK_CTX);

    /* first token: BOS when the model has one; then greedy */
    int32_t tok = desc->bos_id >= 0 && (uint32_t)desc->bos_id < n_vocab ? desc->bos_id : 0;
    int32_t toks[CHECK_STEPS];
    for (int i = 0; i < CHECK_STEPS; i++) {
        toks[i] = tok;
        struct aarmd_batch_entry e = {.seq = s, .tokens = &tok, .n_tokens = 1, .want_logits = 1, .logits = logits};
        for (uint32_t k = 0; k < n_vocab; k++)
            logits[k] = NAN;   /* a backend that writes nothing is caught below */
        rc = aarmd_plugin_step(p, m, &e, 1, err, sizeof err);
        if (rc != AARMD_OK) {
            report(c, "FAIL", "step %d (token %d): %s", i + 1, (int)tok, err);
            goto done;
        }
        uint32_t bad = n_nonfinite(logits, n_vocab);
        if (bad) {
            report(c, "FAIL", "step %d (token %d): %u of %u logits are not finite", i + 1, (int)tok, (unsigned)bad,
                   (unsigned)n_vocab);
            goto done;
        }
        uint32_t next = argmax(logits, n_vocab);
        report(c, "PASS", "step %d: token %d -> %u logits finite, argmax %u (%.3f)", i + 1, (int)tok,
               (unsigned)n_vocab, (unsigned)next, (double)logits[next]);
        tok = (int32_t)next;
    }

    if (aarmd_plugin_has_method(p, "seq_truncate")) {
        rc = aarmd_plugin_seq_truncate(p, s, 1, err, sizeof err);
        if (rc == AARMD_OK) {
            struct aarmd_batch_entry e = {.seq = s, .tokens = &toks[1], .n_tokens = 1, .want_logits = 1,
                                          .logits = logits};
            rc = aarmd_plugin_step(p, m, &e, 1, err, sizeof err);
        }
        if (rc != AARMD_OK)
            report(c, "FAIL", "seq_truncate to 1 and step again: %s", err);
        else if (n_nonfinite(logits, n_vocab))
            report(c, "FAIL", "seq_truncate to 1 and step again: logits not finite");
        else
            report(c, "PASS", "seq_truncate to 1 and step again");
    } else {
        report(c, "SKIP", "seq_truncate: not provided");
    }

    /* a token outside the vocabulary must be refused, not read out of bounds */
    int32_t bad_tok = (int32_t)n_vocab;
    struct aarmd_batch_entry e = {.seq = s, .tokens = &bad_tok, .n_tokens = 1, .want_logits = 1, .logits = logits};
    rc = aarmd_plugin_step(p, m, &e, 1, err, sizeof err);
    if (rc == AARMD_OK)
        report(c, "FAIL", "step with token %d (= n_vocab) was accepted", (int)bad_tok);
    else
        report(c, "PASS", "step with token %d refused: %s", (int)bad_tok, err);

    /* paged KV: on the same model, with no sequence alive */
    aarmd_plugin_seq_free(p, s);
    s = NULL;
    struct aarmd_check_tally kt = {0, 0, 0};
    aarmd_plugin_check_kv(p, m, n_vocab, model_path ? desc->n_ctx_train : 0, kvo, &kt);
    c->n_pass += kt.n_pass;
    c->n_fail += kt.n_fail;
    c->n_skip += kt.n_skip;

done:
    free(logits);
    aarmd_plugin_seq_free(p, s);
    aarmd_plugin_model_free(p, m);
    aarmd_plugin_ctx_free(p, ctx);
    aarmd_model_desc_free(file_desc);
    aarmd_gguf_free(g);
    if (ctx)
        report(c, "PASS", "freed everything it created");
}

int aarmd_cli_plugin_check(int argc, char **argv)
{
    const char *target = NULL, *plugin_dir = NULL, *model_path = NULL;
    long device = 0;
    int verbose = 0, status = 2;
    struct aarmd_opt *opts = calloc((size_t)argc + 1, sizeof *opts);
    char **keys = calloc((size_t)argc + 1, sizeof *keys);
    uint32_t n_opts = 0;
    struct aarmd_plugin *p = NULL;
    struct checker c = {0, 0, 0};
    struct ref_opts ro = {.reference = NULL, .prompt_len = 8, .steps = 8, .prompt = NULL, .tol = 0.02};
    struct aarmd_kv_check_opts kvo = {AARMD_KV_CHECK_TOL, AARMD_KV_CHECK_FILL_MAX};
    struct aarmd_plugin *ref = NULL;
    char err[2048];

    if (!opts || !keys) {
        fprintf(stderr, "plugin-check: out of memory\n");
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(check_help, stdout);
            status = 0;
            goto out;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            verbose = 1;
        } else if (!strcmp(a, "--reference") || !strcmp(a, "--prompt-len") || !strcmp(a, "--steps") ||
                   !strcmp(a, "--tol") || !strcmp(a, "--prompt")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "plugin-check: %s needs a value\n", a);
                goto out;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--reference")) {
                ro.reference = v;
            } else if (!strcmp(a, "--prompt")) {
                if (!*v) {
                    fprintf(stderr, "plugin-check: --prompt: expected a non-empty text\n");
                    goto out;
                }
                ro.prompt = v;
            } else if (!strcmp(a, "--tol")) {
                char *end;
                ro.tol = strtod(v, &end);
                if (*end || !(ro.tol >= 0.0) || !isfinite(ro.tol)) {
                    fprintf(stderr, "plugin-check: --tol %s: expected a number >= 0\n", v);
                    goto out;
                }
                kvo.tol = ro.tol;
            } else if (parse_int(v, 1, 4096, !strcmp(a, "--steps") ? &ro.steps : &ro.prompt_len)) {
                fprintf(stderr, "plugin-check: %s %s: expected an integer in 1..4096\n", a, v);
                goto out;
            }
        } else if (!strcmp(a, "--kv-fill")) {
            long fill;
            if (i + 1 >= argc) {
                fprintf(stderr, "plugin-check: --kv-fill needs a value\n");
                goto out;
            }
            if (parse_int(argv[i + 1], 0, INT32_MAX, &fill)) {
                fprintf(stderr, "plugin-check: --kv-fill %s: expected an integer >= 0 (tokens)\n", argv[i + 1]);
                goto out;
            }
            kvo.fill_max = (uint64_t)fill;
            i++;
        } else if (!strcmp(a, "--backend-opt") || !strcmp(a, "--plugin-dir") || !strcmp(a, "--device") ||
                   !strcmp(a, "--model")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "plugin-check: %s needs a value\n", a);
                goto out;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--plugin-dir")) {
                plugin_dir = v;
            } else if (!strcmp(a, "--model")) {
                model_path = v;
            } else if (!strcmp(a, "--device")) {
                if (parse_int(v, 0, INT32_MAX, &device)) {
                    fprintf(stderr, "plugin-check: --device %s: expected an integer >= 0\n", v);
                    goto out;
                }
            } else {
                const char *eq = strchr(v, '=');
                if (!eq || eq == v) {
                    fprintf(stderr, "plugin-check: --backend-opt %s: expected KEY=VALUE\n", v);
                    goto out;
                }
                keys[n_opts] = strndup(v, (size_t)(eq - v));
                if (!keys[n_opts]) {
                    fprintf(stderr, "plugin-check: out of memory\n");
                    goto out;
                }
                opts[n_opts].key = keys[n_opts];
                opts[n_opts].value = eq + 1;
                n_opts++;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "plugin-check: unknown option %s\n%s", a, check_help);
            goto out;
        } else if (!target) {
            target = a;
        } else {
            fprintf(stderr, "plugin-check: one plugin at a time (got %s and %s)\n", target, a);
            goto out;
        }
    }
    if (!target) {
        fputs(check_help, stderr);
        goto out;
    }
    if (ro.reference && ro.tol == 0.0) {
        fprintf(stderr, "plugin-check: --tol 0 means bitwise, which --reference cannot expect: give a bound > 0\n");
        goto out;
    }
    if (ro.reference && !model_path) {
        fprintf(stderr, "plugin-check: --reference needs --model FILE.gguf\n");
        goto out;
    }
    if (ro.prompt && !ro.reference) {
        fprintf(stderr, "plugin-check: --prompt needs --reference NAME\n");
        goto out;
    }
    aarmd_log_setup(AARMD_LOG_TEXT, "plugin-check", verbose ? AARMD_LOG_DEBUG : AARMD_LOG_WARN);

    struct aarmd_host host, ref_host;
    aarmd_plugin_host_init(&host, opts, n_opts, (int32_t)device);
    if (aarmd_plugin_load(target, plugin_dir, &host, &p, err, sizeof err) != AARMD_OK) {
        report(&c, "FAIL", "load %s: %s", target, err);
    } else {
        print_table(p);
        report(&c, "PASS", "load %s (ABI %u.%u, host %d.%d)", target, (unsigned)aarmd_plugin_table(p)->abi_major,
               (unsigned)aarmd_plugin_table(p)->abi_minor, AARMD_ABI_MAJOR, AARMD_ABI_MINOR);
        if (!ro.reference) {
            run_checks(&c, p, (int32_t)device, model_path, &kvo);
        } else if (aarmd_plugin_host_init(&ref_host, NULL, 0, (int32_t)device),   /* --backend-opt: tested plugin only */
                   aarmd_plugin_load(ro.reference, plugin_dir, &ref_host, &ref, err, sizeof err) != AARMD_OK) {
            report(&c, "FAIL", "load reference %s: %s", ro.reference, err);
        } else {
            run_reference(&c, p, ref, (int32_t)device, model_path, &ro);
            aarmd_plugin_free(ref);
        }
        aarmd_plugin_free(p);
    }
    printf("%d passed, %d failed, %d skipped\n", c.n_pass, c.n_fail, c.n_skip);
    status = c.n_fail ? 1 : 0;

out:
    for (uint32_t i = 0; keys && i < n_opts; i++)
        free(keys[i]);
    free(keys);
    free(opts);
    return status;
}

/* ---- --reference: the same prompt through two plugins, logits compared ------- */

struct ref_side {
    struct aarmd_plugin *p;
    struct aarmd_backend_ctx *ctx;
    struct aarmd_backend_model *m;
    struct aarmd_backend_seq *s;
    float *logits;
};

static int ref_side_open(struct checker *c, struct ref_side *r, int32_t device, const struct aarmd_model_desc *d,
                         uint32_t n_ctx)
{
    char err[1024];
    const char *name = aarmd_plugin_table(r->p)->name;
    if (aarmd_plugin_ctx_new(r->p, device, &r->ctx, err, sizeof err) != AARMD_OK ||
        aarmd_plugin_model_load(r->p, r->ctx, d, NULL, NULL, &r->m, err, sizeof err) != AARMD_OK ||
        aarmd_plugin_seq_new(r->p, r->m, n_ctx, &r->s, err, sizeof err) != AARMD_OK) {
        report(c, "FAIL", "%s: %s", name, err);
        return -1;
    }
    r->logits = malloc((size_t)d->n_vocab * sizeof(float));
    if (!r->logits) {
        report(c, "FAIL", "out of memory");
        return -1;
    }
    return 0;
}

static void ref_side_close(struct ref_side *r)
{
    free(r->logits);
    aarmd_plugin_seq_free(r->p, r->s);
    aarmd_plugin_model_free(r->p, r->m);
    aarmd_plugin_ctx_free(r->p, r->ctx);
}

static int ref_step(struct checker *c, struct ref_side *r, const int32_t *toks, uint32_t n, uint32_t n_vocab)
{
    char err[1024];
    struct aarmd_batch_entry e = {.seq = r->s, .tokens = toks, .n_tokens = n, .want_logits = 1, .logits = r->logits};
    for (uint32_t k = 0; k < n_vocab; k++)
        r->logits[k] = NAN;
    if (aarmd_plugin_step(r->p, r->m, &e, 1, err, sizeof err) != AARMD_OK) {
        report(c, "FAIL", "%s step: %s", aarmd_plugin_table(r->p)->name, err);
        return -1;
    }
    return 0;
}

static void run_reference(struct checker *c, struct aarmd_plugin *p, struct aarmd_plugin *ref, int32_t device,
                          const char *model_path, const struct ref_opts *ro)
{
    char err[1024];
    struct aarmd_gguf *g = NULL;
    struct aarmd_model_desc *d = NULL;
    struct ref_side a = {.p = p}, b = {.p = ref};
    struct aarmd_tokenizer *tok = NULL;
    int32_t *toks = NULL, *greedy = NULL;
    char *text = NULL;
    size_t n_prompt = (size_t)ro->prompt_len;
    double worst = 0.0, first_lead = 0.0;
    int agree = 0, compared = 0, first_diff = -1;

    if (aarmd_gguf_open(model_path, &g, err, sizeof err) != AARMD_OK ||
        aarmd_model_desc_from_gguf(g, &d, err, sizeof err) != AARMD_OK) {
        report(c, "FAIL", "model %s: %s", model_path, err);
        goto done;
    }
    uint32_t n_vocab = d->n_vocab;
    if (ro->prompt) {   /* the text through the model's own tokenizer */
        if (aarmd_tokenizer_from_gguf(g, model_path, false, &tok, err, sizeof err) != AARMD_OK ||
            aarmd_tokenizer_encode(tok, ro->prompt, strlen(ro->prompt), true, false, &toks, &n_prompt, err,
                                   sizeof err) != AARMD_OK) {
            report(c, "FAIL", "--prompt: %s", err);
            goto done;
        }
        if (n_prompt == 0 || n_prompt > 4096) {
            report(c, "FAIL", "--prompt: %zu tokens (1..4096 allowed)", n_prompt);
            goto done;
        }
    } else {
        toks = malloc(n_prompt * sizeof *toks);
        if (!toks)
            goto done;
        toks[0] = d->bos_id >= 0 && (uint32_t)d->bos_id < n_vocab ? d->bos_id : 0;
        for (size_t i = 1; i < n_prompt; i++)
            toks[i] = (int32_t)(((uint64_t)i * 7919u + 13u) % n_vocab);
    }
    greedy = malloc(((size_t)ro->steps + 1) * sizeof *greedy);
    if (!greedy)
        goto done;
    uint32_t n_ctx = (uint32_t)(n_prompt + (size_t)ro->steps + 1);
    if (ref_side_open(c, &a, device, d, n_ctx) || ref_side_open(c, &b, device, d, n_ctx))
        goto done;

    for (long step = 0; step <= ro->steps; step++) {
        const int32_t *in = toks;
        uint32_t n = (uint32_t)n_prompt;
        int32_t next;
        if (step > 0) {
            next = (int32_t)argmax(b.logits, n_vocab);
            in = &next;
            n = 1;
        }
        if (ref_step(c, &a, in, n, n_vocab) || ref_step(c, &b, in, n, n_vocab))
            goto done;
        double maxd = 0.0, scale = 0.0;
        uint32_t bad = n_nonfinite(a.logits, n_vocab);
        for (uint32_t k = 0; k < n_vocab; k++) {
            double dd = fabs((double)a.logits[k] - (double)b.logits[k]);
            if (dd > maxd)
                maxd = dd;
            if (fabs((double)b.logits[k]) > scale)
                scale = fabs((double)b.logits[k]);
        }
        uint32_t ta = argmax(a.logits, n_vocab), tb = argmax(b.logits, n_vocab);
        double second = -INFINITY;
        for (uint32_t k = 0; k < n_vocab; k++)
            if (k != tb && b.logits[k] > second)
                second = b.logits[k];
        double gap = b.logits[tb] - second, rel = scale > 0.0 ? maxd / scale : maxd;
        int near_tie = gap < 2.0 * maxd;
        compared++;
        agree += ta == tb;
        greedy[step] = (int32_t)tb;
        if (ta != tb && first_diff < 0) {
            first_diff = (int)step;
            first_lead = gap;
        }
        if (rel > worst)
            worst = rel;
        const char *what = step == 0 ? "prefill" : "decode";
        if (bad || rel > ro->tol || (ta != tb && !near_tie))
            report(c, "FAIL", "%s %ld: max|d| %.3g of max|ref| %.3g (rel %.3g, tol %.3g), top-1 %u vs %u (gap %.3g)%s",
                   what, step, maxd, scale, rel, ro->tol, ta, tb, gap, bad ? ", non-finite logits" : "");
        else
            report(c, "PASS", "%s %ld: max|d| %.3g of max|ref| %.3g (rel %.3g), top-1 %u vs %u%s", what, step, maxd,
                   scale, rel, ta, tb, ta != tb ? " (near tie)" : "");
    }
    printf("COMPARE %s vs %s arch %s: %d steps, top-1 agreement %d/%d, worst rel max|dlogit| %.3g\n",
           aarmd_plugin_table(p)->name, aarmd_plugin_table(ref)->name, d->arch ? d->arch : "?", compared, agree,
           compared, worst);
    if (tok && aarmd_tokenizer_decode(tok, greedy, (size_t)compared, &text, &(size_t){0}, err, sizeof err) == AARMD_OK) {
        for (char *t = text; *t; t++)   /* one line */
            if (*t == '\n' || *t == '\r')
                *t = ' ';
        if (first_diff < 0)
            printf("GREEDY %d/%d top-1 equal: \"%s\"\n", agree, compared, text);
        else
            printf("GREEDY %d/%d top-1 equal, first difference at step %d (reference lead %.3g): \"%s\"\n", agree,
                   compared, first_diff, first_lead, text);
    }
done:
    free(text);
    free(greedy);
    aarmd_tokenizer_free(tok);
    free(toks);
    ref_side_close(&a);
    ref_side_close(&b);
    aarmd_model_desc_free(d);
    aarmd_gguf_free(g);
}
