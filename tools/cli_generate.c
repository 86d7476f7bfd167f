/*
 * cli_generate.c — `aarmd-cli generate`: one prompt through the same engine
 * and scheduler the daemon's jobs use, tokens printed as they arrive.
 * Not a chat tool: the prompt is sent as given (no template).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine.h"
#include "log.h"
#include "sampler.h"
#include "scheduler.h"

#define MAX_BACKEND_OPTS 32

struct gen_state {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    bool done, failed, printed;
    uint32_t tokens_in, tokens_out;
    uint64_t seed;
    double prompt_ms, decode_ms;
    char stop_reason[32];
    char error[600];
};

static void gen_event_cb(void *user, const struct aarmd_job_event *ev)
{
    struct gen_state *st = user;
    switch (ev->kind) {
    case AARMD_EV_STARTED:
        st->tokens_in = ev->u.started.tokens_in;
        st->seed = ev->u.started.seed;
        return;
    case AARMD_EV_TOKEN:
        if (ev->u.token.len) {
            fwrite(ev->u.token.text, 1, ev->u.token.len, stdout);
            fflush(stdout);
            st->printed = true;
        }
        return;
    case AARMD_EV_METRICS:
        return;
    case AARMD_EV_END:
        pthread_mutex_lock(&st->lock);
        st->tokens_out = ev->u.end.tokens_out;
        st->prompt_ms = ev->u.end.prompt_time_ms;
        st->decode_ms = ev->u.end.decode_time_ms;
        snprintf(st->stop_reason, sizeof st->stop_reason, "%s", ev->u.end.stop_reason);
        st->done = true;
        pthread_cond_signal(&st->cv);
        pthread_mutex_unlock(&st->lock);
        return;
    case AARMD_EV_ERROR:
        pthread_mutex_lock(&st->lock);
        snprintf(st->error, sizeof st->error, "%s: %s", ev->u.error.code, ev->u.error.message);
        st->failed = true;
        st->done = true;
        pthread_cond_signal(&st->cv);
        pthread_mutex_unlock(&st->lock);
        return;
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: aarmd-cli generate --model FILE --prompt TEXT [-n N] [--backend B]\n"
            "         [--temperature T] [--seed S] [--top-k K] [--top-p P] [--min-p P]\n"
            "         [--repetition-penalty R] [--stop TEXT]... [--ctx-size N] [--device D]\n"
            "         [--plugin-dir DIR] [--backend-opt k=v]... [-v]\n"
            "Prints the generated text on stdout as it arrives and a summary on stderr.\n"
            "Defaults: backend cpu, -n 128, temperature 1.0, seed random, ctx-size min(model, 4096).\n");
}

static int parse_u64(const char *flag, const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-')
        goto bad;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        goto bad;
    *out = v;
    return 0;
bad:
    fprintf(stderr, "aarmd-cli generate: %s needs an integer 0..%" PRIu64 " (got '%s')\n", flag, max, s ? s : "");
    return -1;
}

static int parse_f(const char *flag, const char *s, double lo, double hi, float *out)
{
    char *end;
    errno = 0;
    double v = s && *s ? strtod(s, &end) : NAN;
    if (!s || !*s || errno || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "aarmd-cli generate: %s needs a number %g..%g (got '%s')\n", flag, lo, hi, s ? s : "");
        return -1;
    }
    *out = (float)v;
    return 0;
}

int aarmd_cli_generate(int argc, char **argv)
{
    struct aarmd_engine_opts eo = {.backend = "cpu"};
    struct aarmd_opt bopts[MAX_BACKEND_OPTS];
    char *bopt_copies[MAX_BACKEND_OPTS];
    uint32_t n_bopts = 0;
    const char *prompt = NULL;
    const char *stops[AARMD_MAX_STOPS];
    uint32_t n_stop = 0;
    uint64_t n_tokens = 128, ctx_size = 0, seed = 0, top_k = 0, device = 0;
    bool have_seed = false, verbose = false;
    struct aarmd_sampler_params sp = {.temperature = 1.0f, .top_p = 1.0f, .repetition_penalty = 1.0f};
    int ret = 1;
    struct aarmd_engine *e = NULL;
    struct aarmd_sched *s = NULL;
    struct gen_state st = {.done = false};
    pthread_mutex_init(&st.lock, NULL);
    pthread_cond_init(&st.cv, NULL);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            ret = 0;
            goto out;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            verbose = true;
            takes = false;
        } else if (!v) {
            fprintf(stderr, "aarmd-cli generate: %s needs a value\n", a);
            goto out;
        } else if (!strcmp(a, "--backend")) {
            eo.backend = v;
        } else if (!strcmp(a, "--model")) {
            eo.model_path = v;
        } else if (!strcmp(a, "--prompt")) {
            prompt = v;
        } else if (!strcmp(a, "--plugin-dir")) {
            eo.plugin_dir = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
            if (parse_u64(a, v, 1000000, &n_tokens) || n_tokens == 0) {
                if (n_tokens == 0)
                    fprintf(stderr, "aarmd-cli generate: %s must be at least 1\n", a);
                goto out;
            }
        } else if (!strcmp(a, "--ctx-size")) {
            if (parse_u64(a, v, 1u << 24, &ctx_size))
                goto out;
        } else if (!strcmp(a, "--device")) {
            if (parse_u64(a, v, 1024, &device))
                goto out;
        } else if (!strcmp(a, "--seed")) {
            if (parse_u64(a, v, UINT64_MAX, &seed))
                goto out;
            have_seed = true;
        } else if (!strcmp(a, "--top-k")) {
            if (parse_u64(a, v, INT32_MAX, &top_k))
                goto out;
            sp.top_k = (int32_t)top_k;
        } else if (!strcmp(a, "--temperature")) {
            if (parse_f(a, v, 0, 2, &sp.temperature))
                goto out;
        } else if (!strcmp(a, "--top-p")) {
            if (parse_f(a, v, 0, 1, &sp.top_p))
                goto out;
        } else if (!strcmp(a, "--min-p")) {
            if (parse_f(a, v, 0, 1, &sp.min_p))
                goto out;
        } else if (!strcmp(a, "--repetition-penalty")) {
            if (parse_f(a, v, 0, 2, &sp.repetition_penalty))
                goto out;
        } else if (!strcmp(a, "--stop")) {
            if (n_stop == AARMD_MAX_STOPS) {
                fprintf(stderr, "aarmd-cli generate: at most %d --stop strings\n", AARMD_MAX_STOPS);
                goto out;
            }
            stops[n_stop++] = v;
        } else if (!strcmp(a, "--backend-opt")) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v) {
                fprintf(stderr, "aarmd-cli generate: --backend-opt needs key=value (got '%s')\n", v);
                goto out;
            }
            if (n_bopts == MAX_BACKEND_OPTS) {
                fprintf(stderr, "aarmd-cli generate: at most %d --backend-opt\n", MAX_BACKEND_OPTS);
                goto out;
            }
            char *c = strdup(v);
            if (!c)
                goto out;
            c[eq - v] = '\0';
            bopt_copies[n_bopts] = c;
            bopts[n_bopts].key = c;
            bopts[n_bopts].value = c + (eq - v) + 1;
            n_bopts++;
        } else {
            fprintf(stderr, "aarmd-cli generate: unknown option '%s'\n", a);
            usage(stderr);
            goto out;
        }
        if (takes)
            i++;
    }
    if (!eo.model_path || !prompt) {
        fprintf(stderr, "aarmd-cli generate: --model and --prompt are required\n");
        usage(stderr);
        goto out;
    }
    if (!*prompt) {
        fprintf(stderr, "aarmd-cli generate: --prompt must not be empty\n");
        goto out;
    }
    aarmd_log_setup(AARMD_LOG_TEXT, "aarmd-cli", verbose ? AARMD_LOG_DEBUG : AARMD_LOG_WARN);
    eo.opts = bopts;
    eo.n_opts = n_bopts;
    eo.device = (int32_t)device;

    char err[1024];
    int rc = aarmd_engine_new(&eo, &e, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "aarmd-cli generate: %s\n", err);
        goto out;
    }
    if (ctx_size == 0) {
        ctx_size = e->desc->n_ctx_train ? e->desc->n_ctx_train : 4096;
        if (ctx_size > 4096)
            ctx_size = 4096;
    }
    struct aarmd_sched_opts so = {.max_jobs = 1, .queue_depth = 0, .ctx_size = (uint32_t)ctx_size,
                                  .inference_timeout_s = 0, .prefill_chunk = 512};
    s = aarmd_sched_new(e, &so, err, sizeof err);
    if (!s) {
        fprintf(stderr, "aarmd-cli generate: %s\n", err);
        goto out;
    }
    sp.seed = have_seed ? seed : aarmd_seed_from_os();
    struct aarmd_job_request req = {
        .job_id = "cli",
        .prompt = prompt,
        .prompt_len = strlen(prompt),
        .max_tokens = (uint32_t)n_tokens,
        .sampling = sp,
        .n_stop = n_stop,
    };
    for (uint32_t i = 0; i < n_stop; i++)
        req.stop[i] = stops[i];
    if (aarmd_sched_submit(s, &req, gen_event_cb, &st) != AARMD_SUBMIT_OK) {
        fprintf(stderr, "aarmd-cli generate: the scheduler refused the job\n");
        goto out;
    }
    pthread_mutex_lock(&st.lock);
    while (!st.done)
        pthread_cond_wait(&st.cv, &st.lock);
    pthread_mutex_unlock(&st.lock);
    if (st.printed) {
        printf("\n");
        fflush(stdout);
    }
    if (st.failed) {
        fprintf(stderr, "aarmd-cli generate: %s\n", st.error);
        goto out;
    }
    double tps = st.decode_ms > 0 && st.tokens_out > 1 ? (st.tokens_out - 1) * 1e3 / st.decode_ms : 0.0;
    fprintf(stderr,
            "generate: %" PRIu32 " tokens, %.1f tok/s, prompt %" PRIu32 " tokens in %.1f ms, stop %s, seed %" PRIu64
            ", backend %s\n",
            st.tokens_out, tps, st.tokens_in, st.prompt_ms, st.stop_reason, st.seed, e->device.worker_type);
    ret = 0;

out:
    aarmd_sched_free(s, 0);
    aarmd_engine_free(e);
    for (uint32_t i = 0; i < n_bopts; i++)
        free(bopt_copies[i]);
    pthread_cond_destroy(&st.cv);
    pthread_mutex_destroy(&st.lock);
    return ret;
}
