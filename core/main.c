/* main.c — the aarmd daemon: settings → logging → engine → scheduler → listener →
 * ready callback → serve until SIGTERM/SIGINT or POST /shutdown → drain → exit.
 * Exit codes: 0 clean shutdown, 1 startup failure, 3 ready callback failed. */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <json-c/json.h>

#include "callback.h"
#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "model.h"
#include "plugin.h"
#include "scheduler.h"
#include "server.h"
#include "settings.h"
#include "tokenizer.h"

#define CTX_SIZE_CAP 8192

struct daemon {
    struct event_base *base;
    struct aarmd_server *server;
    struct aarmd_callback *callback;
    int exit_code;
    uint16_t port;
    char uri[300];
};

/* A JSON string literal of s for log extras (static buffer per call site). */
static const char *jstr(char *buf, size_t cap, const char *s)
{
    struct json_object *o = json_object_new_string(s ? s : "");
    snprintf(buf, cap, "%s", o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : "\"\"");
    json_object_put(o);
    return buf;
}

static void log_ready(struct daemon *d, const char *how)
{
    char port[16], uri[400];
    snprintf(port, sizeof port, "%u", (unsigned)d->port);
    const char *extra[] = {"port", port, "uri", jstr(uri, sizeof uri, d->uri), NULL};
    aarmd_log_ctx(AARMD_LOG_INFO, "ready", &(struct aarmd_log_ctx){.extra = extra}, "%s", how);
}

static void callback_done(void *user, bool ok, int status, const char *msg)
{
    struct daemon *d = user;
    aarmd_callback_free(d->callback);
    d->callback = NULL;
    char st[16];
    snprintf(st, sizeof st, "%d", status);
    const char *extra[] = {"status", st, NULL};
    if (ok) {
        aarmd_log_ctx(AARMD_LOG_INFO, "callback_sent", &(struct aarmd_log_ctx){.extra = extra}, "%s", msg);
        log_ready(d, "serving; pool manager notified");
        return;
    }
    aarmd_log_ctx(AARMD_LOG_ERROR, "error", &(struct aarmd_log_ctx){.extra = extra}, "%s", msg);
    d->exit_code = 3;
    event_base_loopbreak(d->base);
}

static void drained(void *user)
{
    struct daemon *d = user;
    /* a short grace so the last chunks and the /shutdown answer reach their clients */
    struct timeval tv = {0, 100 * 1000};
    event_base_loopexit(d->base, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct daemon *d = arg;
    aarmd_server_drain(d->server, sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* The address the pool manager should use: the listen host, or this machine's
 * name when listening on every interface. */
static void make_uri(char *buf, size_t cap, const char *host, uint16_t port)
{
    char name[256];
    if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::") || !*host) {
        if (gethostname(name, sizeof name) != 0)
            snprintf(name, sizeof name, "127.0.0.1");
        name[sizeof name - 1] = '\0';
        host = name;
    }
    bool v6 = strchr(host, ':') != NULL;
    snprintf(buf, cap, "http://%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", (unsigned)port);
}

int main(int argc, char **argv)
{
    struct aarmd_settings st;
    char err[1024];
    char token[4096];
    int code = 1;
    struct aarmd_engine *engine = NULL;
    struct aarmd_sched *sched = NULL;
    struct aarmd_metrics *metrics = NULL;
    struct event *sigterm = NULL, *sigint = NULL;
    struct daemon d = {.exit_code = 0};

    if (aarmd_settings_init(&st) != AARMD_OK) {
        fprintf(stderr, "aarmd: out of memory\n");
        return 1;
    }
    if (aarmd_settings_parse(&st, argc, argv, err, sizeof err) != AARMD_OK) {
        fprintf(stderr, "aarmd: %s\n", err);
        aarmd_settings_fini(&st);
        return 1;
    }
    if (st.help || st.version) {
        fputs(st.help ? aarmd_settings_usage() : "aarmd " PACKAGE_VERSION "\n", stdout);
        aarmd_settings_fini(&st);
        return 0;
    }
    aarmd_log_setup(st.log_format, st.worker_id, st.log_level);
    {
        char b1[300], b2[4200], b3[300], ver[32], dev[16], pid[16];
        snprintf(ver, sizeof ver, "\"%s\"", PACKAGE_VERSION);
        snprintf(dev, sizeof dev, "%d", (int)st.device);
        snprintf(pid, sizeof pid, "%ld", (long)getpid());
        const char *extra[] = {"version", ver, "backend", jstr(b1, sizeof b1, st.backend),
                               "model_ref", jstr(b2, sizeof b2, st.model), "device", dev,
                               "host", jstr(b3, sizeof b3, st.host), "pid", pid, NULL};
        aarmd_log_ctx(AARMD_LOG_INFO, "startup", &(struct aarmd_log_ctx){.extra = extra}, "aarmd %s starting",
                      PACKAGE_VERSION);
    }
    signal(SIGPIPE, SIG_IGN);

    if (st.api_token_file &&
        aarmd_settings_read_token(st.api_token_file, token, sizeof token, err, sizeof err) != AARMD_OK) {
        aarmd_log(AARMD_LOG_ERROR, "error", "startup failed: %s", err);
        goto done;
    }
    if (evthread_use_pthreads() != 0) {
        aarmd_log(AARMD_LOG_ERROR, "error", "startup failed: libevent threading unavailable");
        goto done;
    }

    struct aarmd_engine_opts eo = {
        .backend = st.backend, .plugin_dir = st.plugin_dir, .model_path = st.model, .device = st.device,
        .opts = st.backend_opts, .n_opts = st.n_backend_opts};
    if (aarmd_engine_new(&eo, &engine, err, sizeof err) != AARMD_OK) {
        aarmd_log(AARMD_LOG_ERROR, "error", "startup failed: %s", err);
        goto done;
    }

    uint32_t n_ctx_train = engine->desc ? engine->desc->n_ctx_train : 0;
    uint32_t ctx = st.ctx_size;
    /* a paged backend: one job's context is at most the whole block pool */
    struct aarmd_kv_info kv;
    char kerr[256];
    bool paged = aarmd_plugin_kv_info(engine->plugin, engine->model, &kv, kerr, sizeof kerr) == AARMD_OK &&
                 kv.block_tokens > 0 && kv.blocks_total > 0;
    uint64_t pool_tokens = paged ? kv.blocks_total * kv.block_tokens : UINT64_MAX;
    if (!ctx) {
        ctx = n_ctx_train && n_ctx_train < CTX_SIZE_CAP ? n_ctx_train : CTX_SIZE_CAP;
        if (pool_tokens < ctx)
            ctx = (uint32_t)pool_tokens;
    } else {
        if (n_ctx_train && ctx > n_ctx_train)
            aarmd_log(AARMD_LOG_WARN, "startup", "--ctx-size %u exceeds the model's trained context %u", ctx,
                      n_ctx_train);
        if (pool_tokens < ctx)
            aarmd_log(AARMD_LOG_WARN, "startup", "--ctx-size %u exceeds the KV pool (%llu tokens): longer jobs are "
                      "rejected", ctx, (unsigned long long)pool_tokens);
    }
    uint32_t max_jobs = st.max_jobs ? st.max_jobs : (engine->device.advised_seqs ? engine->device.advised_seqs : 1);

    d.base = event_base_new();
    if (!d.base) {
        aarmd_log(AARMD_LOG_ERROR, "error", "startup failed: cannot create the event loop");
        goto done;
    }
    struct aarmd_sched_opts so = {.max_jobs = max_jobs, .queue_depth = st.queue_depth, .ctx_size = ctx,
                                  .inference_timeout_s = st.inference_timeout, .prefill_chunk = st.prefill_chunk,
                                  .step_tokens = st.step_tokens, .prefix_cache_blocks = st.prefix_cache_blocks,
                                  .sample_threads = st.sample_threads};
    sched = aarmd_sched_new(engine, &so, err, sizeof err);
    if (!sched) {
        aarmd_log(AARMD_LOG_ERROR, "error", "startup failed: scheduler: %s", err);
        goto done;
    }
    metrics = aarmd_metrics_new(st.worker_id);
    if (!metrics) {
        aarmd_log(AARMD_LOG_ERROR, "error", "startup failed: out of memory");
        goto done;
    }
    const struct aarmd_backend *table = aarmd_plugin_table(engine->plugin);
    struct aarmd_server_opts o = {
        .host = st.host, .port = st.port, .api_token = st.api_token_file ? token : NULL,
        .max_tokens_limit = st.max_tokens_limit, .idle_timeout_s = st.inference_timeout + 300,
        .drained = drained, .drained_user = &d,
        .info = {.worker_id = st.worker_id, .model = engine->model_name, .model_ref = engine->model_path,
                 .quant_kind = engine->quant_kind, .memory_architecture = engine->device.memory_architecture,
                 .worker_type = engine->device.worker_type, .backend = table ? table->name : st.backend,
                 .tokenizer_kind = engine->tok ? aarmd_tokenizer_kind(engine->tok) : "",
                 .device = st.device, .vocab_size = engine->tok ? aarmd_tokenizer_n_vocab(engine->tok) : 0,
                 .context_length = ctx, .vram_bytes = engine->model_bytes}};
    d.server = aarmd_server_new(d.base, sched, engine->tok, metrics, &o, err, sizeof err);
    if (!d.server) {
        aarmd_log(AARMD_LOG_ERROR, "error", "startup failed: %s", err);
        goto done;
    }
    d.port = aarmd_server_port(d.server);
    make_uri(d.uri, sizeof d.uri, st.host, d.port);
    {
        char port[16], mj[16], cs[16], stk[16], pc[16], kvb[24], kvt[16];
        snprintf(port, sizeof port, "%u", (unsigned)d.port);
        snprintf(mj, sizeof mj, "%u", max_jobs);
        snprintf(cs, sizeof cs, "%u", ctx);
        snprintf(stk, sizeof stk, "%u", st.step_tokens);
        snprintf(pc, sizeof pc, "%u", st.prefill_chunk);
        snprintf(kvb, sizeof kvb, "%llu", paged ? (unsigned long long)kv.blocks_total : 0ULL);
        snprintf(kvt, sizeof kvt, "%u", paged ? kv.block_tokens : 0u);
        const char *extra[] = {"port", port, "max_jobs", mj, "ctx_size", cs, "step_tokens", stk,
                               "prefill_chunk", pc, "kv_blocks", kvb, "kv_block_tokens", kvt, NULL};
        aarmd_log_ctx(AARMD_LOG_INFO, "startup", &(struct aarmd_log_ctx){.extra = extra}, "listening on %s", d.uri);
    }

    sigterm = evsignal_new(d.base, SIGTERM, signal_cb, &d);
    sigint = evsignal_new(d.base, SIGINT, signal_cb, &d);
    if (!sigterm || !sigint || evsignal_add(sigterm, NULL) || evsignal_add(sigint, NULL)) {
        aarmd_log(AARMD_LOG_ERROR, "error", "startup failed: cannot watch signals");
        goto done;
    }

    if (st.callback_url && !aarmd_callback_is_test_mode(st.callback_url)) {
        struct aarmd_ready_info ri = {.worker_id = st.worker_id, .model_ref = engine->model_path,
                                      .memory_bytes = engine->model_bytes,
                                      .memory_architecture = engine->device.memory_architecture,
                                      .uri = d.uri, .worker_type = engine->device.worker_type};
        char *body = aarmd_callback_body(&ri);
        snprintf(err, sizeof err, "out of memory");
        d.callback = body ? aarmd_callback_start(d.base, st.callback_url, body, NULL, callback_done, &d, err, sizeof err)
                          : NULL;
        free(body);
        if (!d.callback) {
            aarmd_log(AARMD_LOG_ERROR, "error", "ready callback to %s: %s", st.callback_url, err);
            code = 3;
            goto done;
        }
    } else {
        log_ready(&d, st.callback_url ? "serving; callback skipped (test mode)" : "serving (standalone)");
    }

    event_base_dispatch(d.base);
    code = d.exit_code;
    aarmd_log(AARMD_LOG_INFO, "shutdown", "stopping (exit code %d)", code);

done:
    aarmd_sched_free(sched, 0);   /* no callback runs after this */
    aarmd_callback_free(d.callback);
    aarmd_server_free(d.server);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    aarmd_metrics_free(metrics);
    if (d.base)
        event_base_free(d.base);
    aarmd_engine_free(engine);
    if (code == 0)
        aarmd_log(AARMD_LOG_INFO, "shutdown", "clean exit");
    aarmd_settings_fini(&st);
    memset(token, 0, sizeof token);
    return code;
}
