/*
 * harness.c — the integration tests' process runner, log reader, blocking
 * HTTP/SSE client and ready-callback server (see harness.h). Test code only:
 * failures inside the harness fail the current Criterion test.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "integration/harness.h"

double hx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static bool under_valgrind(void)
{
    const char *v = getenv("AARMD_TEST_VALGRIND");
    return v && *v && strcmp(v, "0") != 0;
}

/* DIR/REL with "..", "." and links resolved when the file exists (the daemon
 * reports realpath(--model), so expectations must be canonical too). */
static const char *canonical(const char *dir, const char *rel, char *buf, size_t cap)
{
    char joined[4096], real[PATH_MAX];
    snprintf(joined, sizeof joined, "%s/%s", dir, rel);
    snprintf(buf, cap, "%s", realpath(joined, real) ? real : joined);
    return buf;
}

const char *hx_data_path(const char *rel, char *buf, size_t cap)
{
    const char *d = getenv("AARMD_TEST_DATA");
    cr_assert_not_null(d, "AARMD_TEST_DATA is not set: run through make check");
    return canonical(d, rel, buf, cap);
}

const char *hx_model_path(const char *rel, char *buf, size_t cap)
{
    const char *d = getenv("AARMD_TEST_MODELS");
    cr_assert_not_null(d, "AARMD_TEST_MODELS is not set: run through make check");
    canonical(d, rel, buf, cap);
    return buf;
}

/* ---- processes ----------------------------------------------------------- */

struct hx_proc {
    pid_t pid;
    int err_fd;                 /* read end of the child's stderr */
    pthread_t reader;
    bool reader_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *log;                  /* captured stderr */
    size_t log_len, log_cap;
    bool log_eof;
    bool reaped;
    int exit_code;
    int port;
    struct hx_proc *next;       /* registry */
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct hx_proc *registry;
static bool atexit_set;

static void *reader_main(void *arg)
{
    struct hx_proc *p = arg;
    char buf[8192];
    for (;;) {
        ssize_t n = read(p->err_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        pthread_mutex_lock(&p->mu);
        if (n <= 0) {
            p->log_eof = true;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
            break;
        }
        if (p->log_len + (size_t)n + 1 > p->log_cap) {
            size_t cap = p->log_cap ? p->log_cap : 65536;
            while (cap < p->log_len + (size_t)n + 1)
                cap *= 2;
            char *nl = realloc(p->log, cap);
            if (!nl) {
                pthread_mutex_unlock(&p->mu);
                continue;   /* drop output rather than block the child */
            }
            p->log = nl;
            p->log_cap = cap;
        }
        memcpy(p->log + p->log_len, buf, (size_t)n);
        p->log_len += (size_t)n;
        p->log[p->log_len] = '\0';
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

static const char *aarmd_path(char *buf, size_t cap)
{
    const char *b = getenv("AARMD_BUILDDIR");
    cr_assert_not_null(b, "AARMD_BUILDDIR is not set: run through make check");
    snprintf(buf, cap, "%s/aarmd", b);
    return buf;
}

static void build_argv(const struct hx_spec *spec, const char **argv, char *exe, size_t exe_cap, char *model,
                       size_t model_cap)
{
    int n = 0;
    /* AARMD_TEST_WRAPPER: words put before the binary, for debugging (e.g. "gdb -batch -ex run -ex bt --args") */
    static char wrap[1024];
    const char *w = getenv("AARMD_TEST_WRAPPER");
    if (w && *w) {
        snprintf(wrap, sizeof wrap, "%s", w);
        char *save = NULL;
        for (char *t = strtok_r(wrap, " ", &save); t && n < 12; t = strtok_r(NULL, " ", &save))
            argv[n++] = t;
    } else if (under_valgrind()) {
        argv[n++] = "valgrind";
        argv[n++] = "--leak-check=full";
        argv[n++] = "--error-exitcode=9";
        argv[n++] = "--quiet";
    }
    argv[n++] = aarmd_path(exe, exe_cap);
    if (!spec->raw) {
        argv[n++] = "--backend";
        argv[n++] = spec->backend ? spec->backend : "mock";
        argv[n++] = "--model";
        argv[n++] = spec->model ? spec->model : hx_data_path("vocab/ggml-vocab-gpt-2.gguf", model, model_cap);
        argv[n++] = "--port";
        argv[n++] = "0";
        argv[n++] = "--log-format";
        argv[n++] = "json";
    }
    for (int i = 0; i < HX_MAX_ARGS && spec->args[i]; i++) {
        cr_assert_lt(n, HX_MAX_ARGS + 26, "too many arguments");
        argv[n++] = spec->args[i];
    }
    argv[n] = NULL;
}

static struct hx_proc *spawn_child(const struct hx_spec *spec)
{
    char exe[4096], model[4096];
    const char *argv[HX_MAX_ARGS + 28];
    build_argv(spec, argv, exe, sizeof exe, model, sizeof model);

    int fds[2];
    cr_assert_eq(pipe(fds), 0, "pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
#else
        (void)parent;
#endif
        dup2(fds[1], 2);
        dup2(fds[1], 1);   /* stdout (only --help and debuggers write there) into the same capture */
        close(fds[0]);
        close(fds[1]);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0);
            close(devnull);
        }
        signal(SIGPIPE, SIG_DFL);
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);

    struct hx_proc *p = calloc(1, sizeof *p);
    cr_assert_not_null(p);
    p->pid = pid;
    p->err_fd = fds[0];
    p->port = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    cr_assert_eq(pthread_create(&p->reader, NULL, reader_main, p), 0);
    p->reader_started = true;

    pthread_mutex_lock(&reg_mu);
    p->next = registry;
    registry = p;
    if (!atexit_set) {
        atexit(hx_kill_all);
        atexit_set = true;
    }
    pthread_mutex_unlock(&reg_mu);
    return p;
}

/* Non-blocking reap; true once the child is gone. */
static bool try_reap(struct hx_proc *p, int flags)
{
    if (p->reaped)
        return true;
    int st;
    pid_t r = waitpid(p->pid, &st, flags);
    if (r == p->pid) {
        p->reaped = true;
        p->exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
        return true;
    }
    if (r < 0 && errno == ECHILD) {
        p->reaped = true;
        p->exit_code = 255;
        return true;
    }
    return false;
}

int hx_wait_exit(struct hx_proc *p, int timeout_ms)
{
    double end = hx_now_ms() + timeout_ms;
    while (!try_reap(p, WNOHANG)) {
        if (hx_now_ms() >= end)
            return -1;
        usleep(2000);
    }
    return p->exit_code;
}

int hx_stop(struct hx_proc *p, int timeout_ms)
{
    if (!p->reaped)
        kill(p->pid, SIGTERM);
    int rc = hx_wait_exit(p, timeout_ms);
    if (rc == -1) {
        kill(p->pid, SIGKILL);
        try_reap(p, 0);
        rc = p->exit_code;
    }
    return rc;
}

static void proc_destroy(struct hx_proc *p)
{
    if (!p->reaped) {
        kill(p->pid, SIGKILL);
        try_reap(p, 0);
    }
    if (p->reader_started)
        pthread_join(p->reader, NULL);   /* EOF comes once the child (and its stderr) is gone */
    close(p->err_fd);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->log);
    free(p);
}

void hx_free(struct hx_proc *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&reg_mu);
    for (struct hx_proc **pp = &registry; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
    proc_destroy(p);
}

void hx_kill_all(void)
{
    pthread_mutex_lock(&reg_mu);
    struct hx_proc *list = registry;
    registry = NULL;
    pthread_mutex_unlock(&reg_mu);
    while (list) {
        struct hx_proc *next = list->next;
        proc_destroy(list);
        list = next;
    }
}

pid_t hx_pid(const struct hx_proc *p) { return p->pid; }
int hx_port(const struct hx_proc *p) { return p->port; }

char *hx_stderr(struct hx_proc *p)
{
    pthread_mutex_lock(&p->mu);
    char *s = strdup(p->log ? p->log : "");
    pthread_mutex_unlock(&p->mu);
    cr_assert_not_null(s);
    return s;
}

/* Scans complete lines of the log (mutex held) for a matching JSON object. */
static struct json_object *scan_log(struct hx_proc *p, const char *event, const char *field, const char *value,
                                    int *count)
{
    const char *s = p->log ? p->log : "";
    const char *end = s + p->log_len;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        if (!nl)
            break;
        if (*s == '{') {
            struct json_tokener *tk = json_tokener_new();
            struct json_object *o = json_tokener_parse_ex(tk, s, (int)(nl - s));
            json_tokener_free(tk);
            const char *ev = o ? hx_jstr(o, "event") : NULL;
            bool hit = ev && strcmp(ev, event) == 0;
            if (hit && field && !value) {
                hit = hx_jhas(o, field);
            } else if (hit && field) {
                const char *fv = hx_jstr(o, field);
                hit = fv && strcmp(fv, value) == 0;
            }
            if (hit && !count)
                return o;
            if (hit)
                (*count)++;
            json_object_put(o);
        }
        s = nl + 1;
    }
    return NULL;
}

struct json_object *hx_wait_log(struct hx_proc *p, const char *event, const char *field, const char *value,
                                int timeout_ms)
{
    double end = hx_now_ms() + timeout_ms;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        struct json_object *o = scan_log(p, event, field, value, NULL);
        if (o || p->log_eof) {
            pthread_mutex_unlock(&p->mu);
            return o;
        }
        double left = end - hx_now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = (long long)ts.tv_nsec + (long long)(left < 50 ? left : 50) * 1000000LL;
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int hx_count_log(struct hx_proc *p, const char *event)
{
    int n = 0;
    pthread_mutex_lock(&p->mu);
    scan_log(p, event, NULL, NULL, &n);
    pthread_mutex_unlock(&p->mu);
    return n;
}

struct hx_proc *hx_spawn(const struct hx_spec *spec)
{
    struct hx_proc *p = spawn_child(spec);
    if (spec->no_wait)
        return p;
    int timeout = spec->ready_timeout_ms ? spec->ready_timeout_ms : 10000;
    if (under_valgrind())
        timeout *= 6;
    const char *event = spec->wait_listen ? "startup" : "ready";
    struct json_object *ready = hx_wait_log(p, event, "port", NULL, timeout);
    if (!ready) {
        int rc = hx_wait_exit(p, 0);
        char *log = hx_stderr(p);
        cr_assert_fail("aarmd did not log \"%s\" with a port within %d ms (exit %d); stderr:\n%s", event, timeout, rc,
                 log);
    }
    struct json_object *port;
    if (json_object_object_get_ex(ready, "port", &port))
        p->port = json_object_get_int(port);
    json_object_put(ready);
    cr_assert(p->port > 0 && p->port < 65536, "ready line without a usable port");
    return p;
}

struct hx_proc *hx_start(const char *arg, ...)
{
    struct hx_spec spec = {0};
    int n = 0;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a; a = va_arg(ap, const char *)) {
        cr_assert_lt(n, HX_MAX_ARGS - 1, "too many arguments");
        spec.args[n++] = a;
    }
    va_end(ap);
    return hx_spawn(&spec);
}

int hx_run_to_exit(const struct hx_spec *spec, int timeout_ms, char **out)
{
    struct hx_proc *p = spawn_child(spec);
    int rc = hx_wait_exit(p, under_valgrind() ? timeout_ms * 6 : timeout_ms);
    if (rc == -1) {
        kill(p->pid, SIGKILL);
        try_reap(p, 0);
        rc = -1;
    }
    /* let the reader reach EOF so the captured text is complete */
    pthread_join(p->reader, NULL);
    p->reader_started = false;
    if (out)
        *out = hx_stderr(p);
    hx_free(p);
    return rc;
}

/* ---- HTTP client ----------------------------------------------------------- */

struct hbuf {
    char *p;
    size_t len, cap;
};

static void hbuf_add(struct hbuf *b, const void *d, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        cr_assert_not_null(np);
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = '\0';
}

#define HX_MAX_HEADERS 64

struct hx_http {
    int fd;
    int status;
    char *head;                         /* the raw header block */
    char *hname[HX_MAX_HEADERS], *hval[HX_MAX_HEADERS];
    int n_headers;
    struct hbuf in;                     /* raw bytes not yet decoded */
    size_t in_pos;
    struct hbuf body;                   /* decoded body */
    size_t body_pos;                    /* SSE consumer position */
    bool chunked;
    long long clen;                     /* -1 = until EOF */
    long long chunk_left;               /* -1 = expecting a size line */
    bool body_done, eof, failed;
    int pings;
    struct json_object *json;
};

static int rcvbuf_bytes;   /* 0 = the system's default */

void hx_set_rcvbuf(int bytes) { rcvbuf_bytes = bytes; }

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf_bytes > 0)   /* before connect, so the advertised window stays small */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf_bytes, sizeof rcvbuf_bytes);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads more raw bytes: >0 got some, 0 EOF, -1 timeout or error. */
static int fill(struct hx_http *c, double deadline)
{
    if (c->eof)
        return 0;
    for (;;) {
        int left = (int)(deadline - hx_now_ms());
        if (left < 0)
            left = 0;
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int r = poll(&pfd, 1, left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        char buf[16384];
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            c->failed = true;
            c->eof = true;
            return 0;
        }
        if (n == 0) {
            c->eof = true;
            return 0;
        }
        hbuf_add(&c->in, buf, (size_t)n);
        return (int)n;
    }
}

static bool parse_head(struct hx_http *c, const char *h, size_t len)
{
    c->head = strndup(h, len);
    cr_assert_not_null(c->head);
    char *save = NULL;
    char *line = strtok_r(c->head, "\r\n", &save);
    if (!line || strncmp(line, "HTTP/1.", 7) != 0 || strlen(line) < 12)
        return false;
    c->status = atoi(line + 9);
    c->clen = -1;
    while ((line = strtok_r(NULL, "\r\n", &save)) && c->n_headers < HX_MAX_HEADERS) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        c->hname[c->n_headers] = line;
        c->hval[c->n_headers++] = v;
        if (!strcasecmp(line, "Transfer-Encoding") && strcasestr(v, "chunked"))
            c->chunked = true;
        if (!strcasecmp(line, "Content-Length"))
            c->clen = atoll(v);
    }
    c->chunk_left = -1;
    return true;
}

/* Moves decodable bytes from in to body. */
static void decode(struct hx_http *c)
{
    while (!c->body_done && c->in_pos < c->in.len) {
        const char *p = c->in.p + c->in_pos;
        size_t avail = c->in.len - c->in_pos;
        if (!c->chunked) {
            size_t take = avail;
            if (c->clen >= 0 && (long long)(c->body.len + take) > c->clen)
                take = (size_t)(c->clen - (long long)c->body.len);
            hbuf_add(&c->body, p, take);
            c->in_pos += avail;
            if (c->clen >= 0 && (long long)c->body.len >= c->clen)
                c->body_done = true;
            break;
        }
        if (c->chunk_left < 0) {
            const char *nl = memchr(p, '\n', avail);
            if (!nl)
                break;
            long long size = strtoll(p, NULL, 16);
            c->in_pos += (size_t)(nl - p) + 1;
            if (size == 0) {
                c->body_done = true;   /* trailers ignored */
                break;
            }
            c->chunk_left = size;
        } else if (c->chunk_left > 0) {
            size_t take = avail < (size_t)c->chunk_left ? avail : (size_t)c->chunk_left;
            hbuf_add(&c->body, p, take);
            c->in_pos += take;
            c->chunk_left -= (long long)take;
        } else {   /* the CRLF after a chunk */
            const char *nl = memchr(p, '\n', avail);
            if (!nl)
                break;
            c->in_pos += (size_t)(nl - p) + 1;
            c->chunk_left = -1;
        }
    }
    if (c->in_pos == c->in.len) {
        c->in.len = 0;
        c->in_pos = 0;
    }
    if (c->eof && !c->chunked && c->clen < 0)
        c->body_done = true;
}

/* Reads the status line and headers of the next response on c. */
static bool read_head(struct hx_http *c)
{
    double deadline = hx_now_ms() + 5000;
    for (;;) {
        const char *base = c->in.p ? c->in.p + c->in_pos : NULL;
        const char *e = base ? strstr(base, "\r\n\r\n") : NULL;
        if (e) {
            size_t hl = (size_t)(e - base);
            if (!parse_head(c, base, hl))
                return false;
            c->in_pos += hl + 4;
            decode(c);
            return true;
        }
        if (fill(c, deadline) <= 0)
            return false;
    }
}

static struct hx_http *open_with(int port, const char *req, size_t req_len, const char *body, size_t body_len)
{
    int fd = connect_port(port);
    if (fd < 0)
        return NULL;
    struct hx_http *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    c->fd = fd;
    if (!send_all(fd, req, req_len) || (body && body_len && !send_all(fd, body, body_len))) {
        /* the server may answer (413) before reading everything: still try to read the head */
    }
    if (!read_head(c)) {
        hx_http_close(c);
        return NULL;
    }
    return c;
}

/* The request text (head, and body appended) for method/path. */
static void build_request(struct hbuf *r, int port, const char *method, const char *path, const char *headers,
                          const char *body, size_t body_len)
{
    char line[1024];
    snprintf(line, sizeof line, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n", method, path, port);
    hbuf_add(r, line, strlen(line));
    if (headers)
        hbuf_add(r, headers, strlen(headers));
    if (body) {
        snprintf(line, sizeof line, "Content-Type: application/json\r\nContent-Length: %zu\r\n", body_len);
        hbuf_add(r, line, strlen(line));
    } else if (!strcmp(method, "POST")) {
        hbuf_add(r, "Content-Length: 0\r\n", 19);
    }
    hbuf_add(r, "\r\n", 2);
}

int hx_http_again(struct hx_http *c, int port, const char *method, const char *path, const char *headers,
                  const char *body, size_t body_len)
{
    if (!c->body_done || c->eof)
        return -1;
    /* keep bytes already read past the previous body */
    free(c->head);
    c->head = NULL;
    c->n_headers = 0;
    c->status = 0;
    c->chunked = false;
    c->clen = -1;
    c->chunk_left = -1;
    c->body_done = false;
    c->body.len = 0;
    if (c->body.p)
        c->body.p[0] = '\0';
    c->body_pos = 0;
    json_object_put(c->json);
    c->json = NULL;
    struct hbuf r = {0};
    build_request(&r, port, method, path, headers, body, body_len);
    if (body && body_len)
        hbuf_add(&r, body, body_len);
    bool ok = send_all(c->fd, r.p, r.len);
    free(r.p);
    return ok && read_head(c) ? 0 : -1;
}

struct hx_http *hx_http_open(int port, const char *method, const char *path, const char *headers,
                             const char *body, size_t body_len)
{
    struct hbuf r = {0};
    build_request(&r, port, method, path, headers, body, body_len);
    struct hx_http *c = open_with(port, r.p, r.len, body, body_len);
    free(r.p);
    return c;
}

struct hx_http *hx_http_open_raw(int port, const char *raw, size_t raw_len)
{
    return open_with(port, raw, raw_len, NULL, 0);
}

int hx_http_status(const struct hx_http *c) { return c->status; }
int hx_http_fd(const struct hx_http *c) { return c->fd; }

const char *hx_http_header(const struct hx_http *c, const char *name)
{
    for (int i = 0; i < c->n_headers; i++)
        if (!strcasecmp(c->hname[i], name))
            return c->hval[i];
    return NULL;
}

int hx_http_read_all(struct hx_http *c, int timeout_ms)
{
    double deadline = hx_now_ms() + timeout_ms;
    while (!c->body_done) {
        int r = fill(c, deadline);
        decode(c);
        if (c->body_done)
            break;
        if (r < 0)
            return -1;
        if (r == 0) {
            /* EOF in the middle of a chunked or sized body */
            return -1;
        }
    }
    return 0;
}

const char *hx_http_body(const struct hx_http *c) { return c->body.p ? c->body.p : ""; }

struct json_object *hx_http_json(struct hx_http *c)
{
    if (!c->json && c->body.p)
        c->json = json_tokener_parse(c->body.p);
    return c->json;
}

void hx_http_close(struct hx_http *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->head);
    free(c->in.p);
    free(c->body.p);
    json_object_put(c->json);
    free(c);
}

struct hx_http *hx_fetch(int port, const char *method, const char *path, const char *headers, const char *body)
{
    struct hx_http *c = hx_http_open(port, method, path, headers, body, body ? strlen(body) : 0);
    cr_assert_not_null(c, "%s %s: no response from port %d", method, path, port);
    cr_assert_eq(hx_http_read_all(c, 5000), 0, "%s %s: body did not complete", method, path);
    return c;
}

struct hx_http *hx_execute(int port, const char *headers, const char *json)
{
    struct hx_http *c = hx_http_open(port, "POST", "/execute", headers, json, strlen(json));
    cr_assert_not_null(c, "POST /execute: no response from port %d", port);
    return c;
}

/* Parses one event block [s, e) into ev; returns false if it held only comments. */
static bool parse_block(struct hx_http *c, const char *s, const char *e, struct hx_sse_event *ev)
{
    struct hbuf data = {0};
    bool any = false;
    ev->event[0] = '\0';
    while (s < e) {
        const char *nl = memchr(s, '\n', (size_t)(e - s));
        const char *le = nl ? nl : e;
        size_t n = (size_t)(le - s);
        if (n && s[n - 1] == '\r')
            n--;
        if (n && s[0] == ':') {
            if (n >= 6 && !strncmp(s, ": ping", 6))
                c->pings++;
        } else if (n >= 6 && !strncmp(s, "event:", 6)) {
            const char *v = s + 6;
            if (*v == ' ')
                v++;
            snprintf(ev->event, sizeof ev->event, "%.*s", (int)(s + n - v), v);
            any = true;
        } else if (n >= 5 && !strncmp(s, "data:", 5)) {
            const char *v = s + 5;
            if (*v == ' ')
                v++;
            if (data.len)
                hbuf_add(&data, "\n", 1);
            hbuf_add(&data, v, (size_t)(s + n - v));
            if (!data.p)
                hbuf_add(&data, "", 0);
            any = true;
        }
        s = le + 1;
    }
    if (!any) {
        free(data.p);
        return false;
    }
    if (!ev->event[0])
        snprintf(ev->event, sizeof ev->event, "message");
    ev->data = data.p ? data.p : strdup("");
    ev->json = json_tokener_parse(ev->data);
    return true;
}

int hx_sse_next(struct hx_http *c, struct hx_sse_event *ev, int timeout_ms)
{
    memset(ev, 0, sizeof *ev);
    double deadline = hx_now_ms() + timeout_ms;
    for (;;) {
        while (c->body.p && c->body_pos < c->body.len) {
            const char *s = c->body.p + c->body_pos;
            const char *e = strstr(s, "\n\n");
            if (!e)
                break;
            c->body_pos = (size_t)(e - c->body.p) + 2;
            if (parse_block(c, s, e + 1, ev))
                return 1;
        }
        if (c->body_done)
            return 0;
        int r = fill(c, deadline);
        decode(c);
        if (r < 0)
            return -1;
        if (r == 0 && !c->body_done)
            return -1;   /* connection closed mid-stream */
    }
}

void hx_sse_event_fini(struct hx_sse_event *ev)
{
    free(ev->data);
    json_object_put(ev->json);
    memset(ev, 0, sizeof *ev);
}

int hx_sse_pings(const struct hx_http *c) { return c->pings; }

int hx_stream_collect(struct hx_http *c, struct hx_stream *s, int timeout_ms)
{
    memset(s, 0, sizeof *s);
    s->status = c->status;
    double deadline = hx_now_ms() + timeout_ms;
    for (;;) {
        struct hx_sse_event ev;
        int left = (int)(deadline - hx_now_ms());
        int r = hx_sse_next(c, &ev, left > 0 ? left : 0);
        if (r == 0) {
            s->ended = true;
            return 0;
        }
        if (r < 0)
            return -1;
        if (s->n < HX_MAX_EVENTS) {
            snprintf(s->names[s->n], sizeof s->names[s->n], "%s", ev.event);
            s->data[s->n] = ev.json;
            ev.json = NULL;
            s->n++;
        }
        hx_sse_event_fini(&ev);
    }
}

void hx_stream_fini(struct hx_stream *s)
{
    for (int i = 0; i < s->n; i++)
        json_object_put(s->data[i]);
    s->n = 0;
}

const char *hx_jstr(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

int64_t hx_jint(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!o || !json_object_object_get_ex(o, key, &v))
        return 0;
    return json_object_get_int64(v);
}

bool hx_jhas(struct json_object *o, const char *key)
{
    struct json_object *v;
    return o && json_object_object_get_ex(o, key, &v);
}

struct json_object *hx_health(int port)
{
    struct hx_http *c = hx_fetch(port, "GET", "/health", NULL, NULL);
    struct json_object *j = json_tokener_parse(hx_http_body(c));
    cr_assert_not_null(j, "/health: not JSON: %s", hx_http_body(c));
    hx_http_close(c);
    return j;
}

int64_t hx_wait_health(int port, const char *field, int64_t want, int timeout_ms)
{
    double end = hx_now_ms() + timeout_ms;
    int64_t v;
    for (;;) {
        struct json_object *h = hx_health(port);
        v = hx_jint(h, field);
        json_object_put(h);
        if (v == want || hx_now_ms() >= end)
            return v;
        usleep(5000);
    }
}

double hx_metric(const char *text, const char *name, const char *label)
{
    size_t nl = strlen(name);
    double sum = 0;
    bool found = false;
    for (const char *s = text; s && *s;) {
        const char *eol = strchr(s, '\n');
        size_t len = eol ? (size_t)(eol - s) : strlen(s);
        if (*s != '#' && len > nl && !strncmp(s, name, nl) && (s[nl] == '{' || s[nl] == ' ')) {
            char line[1024];
            snprintf(line, sizeof line, "%.*s", (int)len, s);
            char *close = strchr(line, '}');
            bool match = true;
            if (label) {
                if (line[nl] != '{' || !close)
                    match = false;
                else {
                    *close = '\0';
                    match = strstr(line + nl, label) != NULL;
                    *close = '}';
                }
            }
            if (match) {
                const char *v = close ? close + 1 : line + nl;
                sum += strtod(v, NULL);
                found = true;
            }
        }
        s = eol ? eol + 1 : NULL;
    }
    return found ? sum : -1;
}

/* ---- ready-callback server -------------------------------------------------- */

struct hx_cbsrv {
    struct event_base *base;
    struct evhttp *http;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int port;
    int statuses[HX_CB_MAX];
    int n_statuses;
    int n;
    char *bodies[HX_CB_MAX];
    char *ctypes[HX_CB_MAX];
    double times[HX_CB_MAX];
    int health[HX_CB_MAX];      /* status of GET <uri>/health made on arrival (0: none) */
};

/* GET /health on the worker named by the body's "uri" (http://127.0.0.1:PORT). */
static int probe_health(const char *body)
{
    struct json_object *j = body ? json_tokener_parse(body) : NULL;
    const char *uri = hx_jstr(j, "uri");
    const char *colon = uri ? strrchr(uri, ':') : NULL;
    int port = colon ? atoi(colon + 1) : 0;
    json_object_put(j);
    if (port <= 0)
        return 0;
    struct hx_http *c = hx_http_open(port, "GET", "/health", NULL, NULL, 0);
    if (!c)
        return -1;
    int st = hx_http_read_all(c, 2000) == 0 ? hx_http_status(c) : -1;
    hx_http_close(c);
    return st;
}

static void cbsrv_cb(struct evhttp_request *req, void *arg)
{
    struct hx_cbsrv *s = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    char *body = malloc(len + 1);
    if (body) {
        evbuffer_copyout(in, body, len);
        body[len] = '\0';
    }
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    int health = probe_health(body);
    pthread_mutex_lock(&s->mu);
    int i = s->n;
    int status = s->statuses[i < s->n_statuses ? i : s->n_statuses - 1];
    if (i < HX_CB_MAX) {
        s->bodies[i] = body;
        s->ctypes[i] = ct ? strdup(ct) : NULL;
        s->times[i] = hx_now_ms();
        s->health[i] = health;
        body = NULL;
    }
    s->n++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(body);
    struct evbuffer *out = evbuffer_new();
    evbuffer_add_printf(out, "{}");
    evhttp_send_reply(req, status, status < 300 ? "OK" : status < 500 ? "Bad Request" : "Server Error", out);
    evbuffer_free(out);
}

static void *cbsrv_main(void *arg)
{
    struct hx_cbsrv *s = arg;
    event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

struct hx_cbsrv *hx_cbsrv_start(const int *statuses, int n_statuses)
{
    cr_assert(n_statuses >= 1 && n_statuses <= HX_CB_MAX);
    cr_assert_eq(evthread_use_pthreads(), 0);
    struct hx_cbsrv *s = calloc(1, sizeof *s);
    cr_assert_not_null(s);
    memcpy(s->statuses, statuses, sizeof(int) * (size_t)n_statuses);
    s->n_statuses = n_statuses;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->base = event_base_new();
    cr_assert_not_null(s->base);
    s->http = evhttp_new(s->base);
    cr_assert_not_null(s->http);
    evhttp_set_gencb(s->http, cbsrv_cb, s);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
    cr_assert_not_null(bs);
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    cr_assert_eq(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&s->thread, NULL, cbsrv_main, s), 0);
    return s;
}

int hx_cbsrv_port(const struct hx_cbsrv *s) { return s->port; }

int hx_cbsrv_wait(struct hx_cbsrv *s, int n, int timeout_ms)
{
    double end = hx_now_ms() + timeout_ms;
    pthread_mutex_lock(&s->mu);
    while (s->n < n) {
        double left = end - hx_now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = (long long)ts.tv_nsec + (long long)(left < 50 ? left : 50) * 1000000LL;
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    int got = s->n;
    pthread_mutex_unlock(&s->mu);
    return got;
}

char *hx_cbsrv_body(struct hx_cbsrv *s, int i)
{
    pthread_mutex_lock(&s->mu);
    char *b = (i < s->n && i < HX_CB_MAX && s->bodies[i]) ? strdup(s->bodies[i]) : NULL;
    pthread_mutex_unlock(&s->mu);
    return b;
}

char *hx_cbsrv_content_type(struct hx_cbsrv *s, int i)
{
    pthread_mutex_lock(&s->mu);
    char *b = (i < s->n && i < HX_CB_MAX && s->ctypes[i]) ? strdup(s->ctypes[i]) : NULL;
    pthread_mutex_unlock(&s->mu);
    return b;
}

double hx_cbsrv_time(struct hx_cbsrv *s, int i)
{
    pthread_mutex_lock(&s->mu);
    double t = (i < s->n && i < HX_CB_MAX) ? s->times[i] : -1;
    pthread_mutex_unlock(&s->mu);
    return t;
}

int hx_cbsrv_health(struct hx_cbsrv *s, int i)
{
    pthread_mutex_lock(&s->mu);
    int h = (i < s->n && i < HX_CB_MAX) ? s->health[i] : 0;
    pthread_mutex_unlock(&s->mu);
    return h;
}

void hx_cbsrv_free(struct hx_cbsrv *s)
{
    if (!s)
        return;
    event_base_loopbreak(s->base);
    pthread_join(s->thread, NULL);
    evhttp_free(s->http);
    event_base_free(s->base);
    for (int i = 0; i < HX_CB_MAX; i++) {
        free(s->bodies[i]);
        free(s->ctypes[i]);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
