/* test_job.c — core/job.c: request copies and checks, and the text pipeline
 * (held stop prefixes, deferred token events, UTF-8 pieces) over the real
 * GPT-2 tokenizer, with events recorded from the job's callback. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "job.h"
#include "tokenizer.h"

struct ev_rec {
    int n;
    char text[8][256];
    size_t len[8];
    uint32_t index[8];
    int32_t id[8];
    char all[2048];
    size_t all_len;
};

static void rec_cb(void *user, const struct aarmd_job_event *ev)
{
    struct ev_rec *r = user;
    cr_assert_eq(ev->kind, AARMD_EV_TOKEN);
    if (r->n < 8) {
        memcpy(r->text[r->n], ev->u.token.text, ev->u.token.len);
        r->len[r->n] = ev->u.token.len;
        r->index[r->n] = ev->u.token.index;
        r->id[r->n] = ev->u.token.id;
    }
    r->n++;
    memcpy(r->all + r->all_len, ev->u.token.text, ev->u.token.len);
    r->all_len += ev->u.token.len;
}

static struct aarmd_gguf *gguf;
static struct aarmd_tokenizer *tok;

static void open_tok(void)
{
    char path[PATH_MAX], err[512];
    const char *d = getenv("AARMD_TEST_DATA");
    cr_assert_not_null(d, "AARMD_TEST_DATA is not set");
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-gpt-2.gguf", d);
    cr_assert_eq(aarmd_gguf_open(path, &gguf, err, sizeof err), 0, "%s", err);
    cr_assert_eq(aarmd_tokenizer_from_gguf(gguf, NULL, false, &tok, err, sizeof err), 0, "%s", err);
}

static void close_tok(void)
{
    aarmd_tokenizer_free(tok);
    aarmd_gguf_free(gguf);
}

TestSuite(job, .init = open_tok, .fini = close_tok);

static struct aarmd_job *make_job(struct ev_rec *r, const char *stop1, const char *stop2)
{
    struct aarmd_job_request q = {.job_id = "j", .prompt = "p", .prompt_len = 1, .max_tokens = 10};
    if (stop1)
        q.stop[q.n_stop++] = stop1;
    if (stop2)
        q.stop[q.n_stop++] = stop2;
    struct aarmd_job *j = aarmd_job_new(&q, rec_cb, r);
    cr_assert_not_null(j);
    aarmd_job_text_begin(j, tok);
    return j;
}

static int push(struct aarmd_job *j, int32_t id, bool last)
{
    struct aarmd_sample s = {.id = id};
    j->n_out++;
    return aarmd_job_push_token(j, id, &s, last);
}

static size_t encode(const char *text, int32_t **ids)
{
    size_t n = 0;
    char err[256];
    cr_assert_eq(aarmd_tokenizer_encode(tok, text, strlen(text), false, false, ids, &n, err, sizeof err), 0,
                 "%s", err);
    return n;
}

static char *decode(const int32_t *ids, size_t n, size_t *len)
{
    char *t = NULL, err[256];
    cr_assert_eq(aarmd_tokenizer_decode(tok, ids, n, &t, len, err, sizeof err), 0, "%s", err);
    return t;
}

Test(job, request_is_copied_and_checked)
{
    char id[] = "abc", stop[] = "xy";
    struct aarmd_job_request q = {.job_id = id, .prompt = "hello", .prompt_len = 3, .max_tokens = 5,
                                  .stop = {stop}, .n_stop = 1, .correlation_id = "c"};
    struct aarmd_job *j = aarmd_job_new(&q, rec_cb, NULL);
    cr_assert_not_null(j);
    id[0] = 'z';
    stop[0] = 'z';
    cr_assert_str_eq(j->id, "abc");
    cr_assert_str_eq(aarmd_stop_string(&j->stop, 0), "xy");
    cr_assert_str_eq(j->prompt, "hel");   /* prompt_len bytes */
    cr_assert_str_eq(j->corr, "c");
    char buf[128];
    cr_assert_null(aarmd_job_check(j, buf, sizeof buf));
    aarmd_job_free(j, NULL);

    struct {
        struct aarmd_job_request q;
        const char *want;
    } bad[] = {
        {{.job_id = "", .prompt = "p", .prompt_len = 1, .max_tokens = 1}, "job_id"},
        {{.job_id = NULL, .prompt = "p", .prompt_len = 1, .max_tokens = 1}, "job_id"},
        {{.job_id = "a", .prompt = "p", .prompt_len = 1, .max_tokens = 0}, "max_tokens"},
        {{.job_id = "a", .prompt = "p", .prompt_len = 1, .max_tokens = 1, .stop = {""}, .n_stop = 1}, "stop"},
        {{.job_id = "a", .prompt = "p", .prompt_len = 1, .max_tokens = 1, .stop = {NULL}, .n_stop = 1}, "stop"},
        {{.job_id = "a", .prompt = "p", .prompt_len = 1, .max_tokens = 1, .n_stop = AARMD_MAX_STOPS + 1,
          .stop = {"a", "b", "c", "d"}}, "stop"},
        {{.job_id = "a", .prompt = "p", .prompt_len = 1, .max_tokens = 1, .stop = {"ok", "\xC3"}, .n_stop = 2},
         "UTF-8"},
    };
    char longstop[AARMD_STOP_MAX_LEN + 2];
    memset(longstop, 's', sizeof longstop - 1);
    longstop[sizeof longstop - 1] = '\0';
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = aarmd_job_new(&bad[i].q, rec_cb, NULL);
        cr_assert_not_null(j);
        const char *m = aarmd_job_check(j, buf, sizeof buf);
        cr_assert_not_null(m, "case %zu accepted", i);
        cr_assert(strstr(m, bad[i].want), "case %zu: %s", i, m);
        aarmd_job_free(j, NULL);
    }
    struct aarmd_job_request q2 = {.job_id = "a", .prompt = "p", .prompt_len = 1, .max_tokens = 1,
                                   .stop = {longstop}, .n_stop = 1};
    j = aarmd_job_new(&q2, rec_cb, NULL);
    cr_assert_not_null(aarmd_job_check(j, buf, sizeof buf));
    aarmd_job_free(j, NULL);
}

Test(job, plain_tokens_stream_their_text_at_once)
{
    int32_t *ids;
    size_t n = encode("Hello world, how are you?", &ids);
    cr_assert_geq(n, 3u);
    struct ev_rec r = {0};
    struct aarmd_job *j = make_job(&r, NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(push(j, ids[i], i + 1 == n), -1);
        cr_assert_eq(r.n, (int)i + 1, "token %zu's event did not come at once", i);
    }
    size_t len;
    char *want = decode(ids, n, &len);
    cr_assert_eq(r.all_len, len);
    cr_assert(!memcmp(r.all, want, len));
    for (int i = 0; i < r.n && i < 8; i++)
        cr_assert_eq(r.index[i], (uint32_t)i);
    free(want);
    free(ids);
    aarmd_job_free(j, NULL);
}

/* A stop string made of the last 2 bytes of token 0's text and the first 2 of token 1's. */
Test(job, stop_across_two_tokens)
{
    int32_t *ids;
    size_t n = encode("Hello world", &ids);
    cr_assert_eq(n, 2u);
    size_t l0, l01;
    char *t0 = decode(ids, 1, &l0), *t01 = decode(ids, 2, &l01);
    cr_assert_geq(l0, 2u);
    cr_assert_geq(l01, l0 + 2);
    char stop[5] = {t0[l0 - 2], t0[l0 - 1], t01[l0], t01[l0 + 1], 0};
    struct ev_rec r = {0};
    struct aarmd_job *j = make_job(&r, "never-there", stop);
    cr_assert_eq(push(j, ids[0], false), -1);
    cr_assert_eq(r.n, 0, "token 0 with a held stop prefix was sent at once");
    cr_assert_eq(push(j, ids[1], false), 1);
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.index[0], 0u);
    cr_assert_eq(r.index[1], 1u);
    cr_assert_eq(r.all_len, l0 - 2, "sent '%.*s'", (int)r.all_len, r.all);
    cr_assert(!memcmp(r.all, t0, l0 - 2));
    cr_assert_eq(r.len[1], 0u);
    free(t0);
    free(t01);
    free(ids);
    aarmd_job_free(j, NULL);
}

Test(job, held_prefix_goes_out_with_the_deferred_event_at_eos)
{
    int32_t *ids;
    size_t n = encode("Hello", &ids);
    cr_assert_eq(n, 1u);
    size_t l0;
    char *t0 = decode(ids, 1, &l0);
    char stop[3] = {t0[l0 - 1], '#', 0};
    struct ev_rec r = {0};
    struct aarmd_job *j = make_job(&r, stop, NULL);
    cr_assert_eq(push(j, ids[0], false), -1);
    cr_assert_eq(r.n, 0);
    aarmd_job_text_eos(j);
    aarmd_job_flush_deferred(j);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.all_len, l0);
    cr_assert(!memcmp(r.all, t0, l0));
    free(t0);
    free(ids);
    aarmd_job_free(j, NULL);
}

Test(job, held_prefix_is_flushed_into_the_last_token)
{
    int32_t *ids;
    size_t n = encode("Hello world", &ids);
    cr_assert_eq(n, 2u);
    size_t len;
    char *all = decode(ids, 2, &len);
    char stop[3] = {all[len - 1], '#', 0};
    struct ev_rec r = {0};
    struct aarmd_job *j = make_job(&r, stop, NULL);
    cr_assert_eq(push(j, ids[0], false), -1);
    cr_assert_eq(push(j, ids[1], true), -1);
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.all_len, len);
    cr_assert(!memcmp(r.all, all, len));
    free(all);
    free(ids);
    aarmd_job_free(j, NULL);
}

Test(job, split_utf8_character_waits_for_its_end)
{
    const char *text = "\xF0\x9F\x99\x82 ok";   /* U+1F642, four bytes */
    int32_t *ids;
    size_t n = encode(text, &ids);
    size_t len;
    char *all = decode(ids, n, &len);
    cr_assert_eq(len, strlen(text));
    struct ev_rec r = {0};
    struct aarmd_job *j = make_job(&r, NULL, NULL);
    for (size_t i = 0; i < n; i++)
        push(j, ids[i], i + 1 == n);
    cr_assert_eq(r.n, (int)n);
    cr_assert_eq(r.all_len, len);
    cr_assert(!memcmp(r.all, all, len));
    /* every event but the last carries whole characters: never a lone lead or continuation byte */
    for (int i = 0; i < r.n && i < 8; i++)
        if (r.len[i])
            cr_assert_neq((unsigned char)r.text[i][0] & 0xC0, 0x80, "event %d starts mid-character", i);
    free(all);
    free(ids);
    aarmd_job_free(j, NULL);
}

/* core/stop.h: the stop string that ends first wins, however the text is split. */
Test(job, stop_that_ends_first_wins)
{
    int32_t *ids;
    size_t n = encode("abcdef", &ids);
    size_t len;
    char *all = decode(ids, n, &len);
    cr_assert_eq(len, 6u);
    struct ev_rec r = {0};
    struct aarmd_job *j = make_job(&r, "abcd", "bc");
    int k = -1;
    for (size_t i = 0; i < n && k < 0; i++)
        k = push(j, ids[i], i + 1 == n);
    cr_assert_eq(k, 1, "stop %d matched", k);
    cr_assert_str_eq(aarmd_stop_string(&j->stop, k), "bc");
    cr_assert_eq(r.all_len, 1u);
    cr_assert_eq(r.all[0], 'a');
    free(all);
    free(ids);
    aarmd_job_free(j, NULL);
}
