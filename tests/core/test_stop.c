/* test_stop.c — core/stop.c: held-back text, matches split across pieces, flush, bad stop lists. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "aarmd_backend.h"
#include "rng.h"
#include "stop.h"

struct run {
    char out[4096];
    size_t n_out;
    int matched;      /* -1: none */
    int match_push;   /* index of the push that matched */
};

static void init_or_die(struct aarmd_stop *m, const char *const *stops, uint32_t n)
{
    char err[128] = "";
    int rc = aarmd_stop_init(m, stops, n, err, sizeof err);
    cr_assert_eq(rc, AARMD_OK, "init: %s", err);
}

/* Feeds pieces; flushes at the end when nothing matched. */
static void feed(struct aarmd_stop *m, const char *const *pieces, size_t n, struct run *r)
{
    r->n_out = 0;
    r->matched = -1;
    r->match_push = -1;
    for (size_t i = 0; i < n; i++) {
        char buf[AARMD_STOP_OUT_CAP(256)];
        size_t len = strlen(pieces[i]);
        int k = -2;
        int got = aarmd_stop_push(m, pieces[i], len, buf, sizeof buf, &k);
        cr_assert_geq(got, 0, "push %zu failed: %d", i, got);
        cr_assert(k >= -1);
        memcpy(r->out + r->n_out, buf, (size_t)got);
        r->n_out += (size_t)got;
        if (k >= 0 && r->matched < 0) {
            r->matched = k;
            r->match_push = (int)i;
        }
    }
    if (r->matched < 0) {
        char buf[AARMD_STOP_MAX_LEN];
        int got = aarmd_stop_flush(m, buf, sizeof buf);
        cr_assert_geq(got, 0);
        memcpy(r->out + r->n_out, buf, (size_t)got);
        r->n_out += (size_t)got;
    }
    r->out[r->n_out] = '\0';
}

/*
 * Reference: the earliest END of any stop in text (ties: earliest start, then
 * lowest index); *out_len = where the output ends. -1 when none.
 */
static int ref_match(const char *text, const char *const *stops, uint32_t n, size_t *out_len)
{
    size_t tl = strlen(text);
    for (size_t end = 1; end <= tl; end++) {
        int best = -1;
        size_t best_start = 0;
        for (uint32_t i = 0; i < n; i++) {
            size_t l = strlen(stops[i]);
            if (l <= end && !memcmp(text + end - l, stops[i], l) && (best < 0 || end - l < best_start)) {
                best = (int)i;
                best_start = end - l;
            }
        }
        if (best >= 0) {
            *out_len = best_start;
            return best;
        }
    }
    *out_len = tl;
    return -1;
}

/* ---- bad input ------------------------------------------------------------ */

Test(stop, rejects_bad_lists)
{
    struct aarmd_stop m;
    char err[128];
    const char *five[] = {"a", "b", "c", "d", "e"};
    cr_assert_eq(aarmd_stop_init(&m, five, 5, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "at most 4"), "%s", err);
    const char *empty[] = {"ok", ""};
    cr_assert_eq(aarmd_stop_init(&m, empty, 2, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "stop[1]") && strstr(err, "empty"), "%s", err);
    const char *null[] = {NULL};
    cr_assert_eq(aarmd_stop_init(&m, null, 1, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "stop[0]"), "%s", err);
    cr_assert_eq(aarmd_stop_init(&m, NULL, 2, err, sizeof err), AARMD_EINVAL);
    char longs[102];
    memset(longs, 'x', 101);
    longs[101] = '\0';
    const char *toolong[] = {longs};
    cr_assert_eq(aarmd_stop_init(&m, toolong, 1, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "longer than 100"), "%s", err);
    longs[100] = '\0';   /* exactly 100: fine */
    cr_assert_eq(aarmd_stop_init(&m, toolong, 1, err, sizeof err), AARMD_OK);
    const char *bad_utf8[] = {"ok", "\xc3(", "\xe2\x82", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"};
    for (uint32_t i = 1; i < 6; i++) {
        const char *two[] = {bad_utf8[0], bad_utf8[i]};
        cr_assert_eq(aarmd_stop_init(&m, two, 2, err, sizeof err), AARMD_EINVAL, "case %u", i);
        cr_assert(strstr(err, "stop[1]") && strstr(err, "UTF-8"), "%s", err);
    }
    cr_assert_eq(aarmd_stop_init(&m, NULL, 0, NULL, 0), AARMD_OK);   /* no stops, no err buffer */
}

Test(stop, small_output_buffer_is_refused)
{
    struct aarmd_stop m;
    const char *s[] = {"STOP"};
    init_or_die(&m, s, 1);
    char buf[8];
    int k;
    cr_assert_eq(aarmd_stop_push(&m, "xxST", 4, buf, sizeof buf, &k), 2);
    cr_assert_eq(aarmd_stop_held(&m), 2);
    /* held 2 + 7 bytes > 8: refused, nothing consumed */
    cr_assert_eq(aarmd_stop_push(&m, "abcdefg", 7, buf, sizeof buf, &k), AARMD_EINVAL);
    cr_assert_eq(aarmd_stop_held(&m), 2);
    cr_assert_eq(aarmd_stop_push(&m, "OP", 2, buf, sizeof buf, &k), 0);
    cr_assert_eq(k, 0);
    cr_assert_eq(aarmd_stop_push(&m, NULL, 3, buf, sizeof buf, &k), 0, "finished matcher ignores input");
}

/* ---- streaming --------------------------------------------------------------- */

Test(stop, no_stops_pass_through_immediately)
{
    struct aarmd_stop m;
    init_or_die(&m, NULL, 0);
    char buf[64];
    int k;
    const char *pieces[] = {"Hello", ",", " wor", "ld", "\xe6\x97\xa5"};
    for (size_t i = 0; i < 5; i++) {
        int got = aarmd_stop_push(&m, pieces[i], strlen(pieces[i]), buf, sizeof buf, &k);
        cr_assert_eq(got, (int)strlen(pieces[i]));
        cr_assert_eq(memcmp(buf, pieces[i], (size_t)got), 0);
        cr_assert_eq(k, -1);
        cr_assert_eq(aarmd_stop_held(&m), 0);
    }
    cr_assert_eq(aarmd_stop_flush(&m, buf, sizeof buf), 0);
}

Test(stop, unrelated_text_is_not_held)
{
    struct aarmd_stop m;
    const char *s[] = {"</s>", "\n\nUser:"};
    init_or_die(&m, s, 2);
    char buf[64];
    int k;
    cr_assert_eq(aarmd_stop_push(&m, "Hello world", 11, buf, sizeof buf, &k), 11);
    cr_assert_eq(aarmd_stop_push(&m, "a<", 2, buf, sizeof buf, &k), 1);   /* "<" may start "</s>" */
    cr_assert_eq(buf[0], 'a');
    cr_assert_eq(aarmd_stop_held(&m), 1);
    cr_assert_eq(aarmd_stop_push(&m, "b", 1, buf, sizeof buf, &k), 2);   /* "<b": not a prefix */
    cr_assert_eq(memcmp(buf, "<b", 2), 0);
    cr_assert_eq(aarmd_stop_held(&m), 0);
}

Test(stop, stop_in_the_very_first_piece)
{
    struct aarmd_stop m;
    const char *s[] = {"END"};
    init_or_die(&m, s, 1);
    const char *p1[] = {"END", "more"};
    struct run r;
    feed(&m, p1, 2, &r);
    cr_assert_eq(r.matched, 0);
    cr_assert_eq(r.match_push, 0);
    cr_assert_eq(r.n_out, 0);
    cr_assert_eq(aarmd_stop_matched(&m), 0);
    cr_assert_str_eq(aarmd_stop_string(&m, 0), "END");
    cr_assert_null(aarmd_stop_string(&m, 1));
    char buf[8];
    cr_assert_eq(aarmd_stop_flush(&m, buf, sizeof buf), 0);

    init_or_die(&m, s, 1);
    const char *p2[] = {"xENDy"};
    feed(&m, p2, 1, &r);
    cr_assert_eq(r.matched, 0);
    cr_assert_str_eq(r.out, "x");
}

Test(stop, overlapping_prefix_is_released)
{
    struct aarmd_stop m;
    const char *s[] = {"abc"};
    init_or_die(&m, s, 1);
    char buf[64];
    int k;
    cr_assert_eq(aarmd_stop_push(&m, "ab", 2, buf, sizeof buf, &k), 0);
    cr_assert_eq(aarmd_stop_held(&m), 2);
    int got = aarmd_stop_push(&m, "d", 1, buf, sizeof buf, &k);
    cr_assert_eq(got, 3);
    cr_assert_eq(memcmp(buf, "abd", 3), 0);
    cr_assert_eq(k, -1);

    /* self-overlap: stop "aab" in "aaab" */
    const char *s2[] = {"aab"};
    init_or_die(&m, s2, 1);
    const char *p[] = {"a", "a", "a", "b", "tail"};
    struct run r;
    feed(&m, p, 5, &r);
    cr_assert_eq(r.matched, 0);
    cr_assert_eq(r.match_push, 3);
    cr_assert_str_eq(r.out, "a");
}

Test(stop, one_stop_prefix_of_another)
{
    const char *s[] = {"abc", "ab"};
    struct aarmd_stop m;
    struct run r;
    /* "ab" ends first, even when "abc" arrives in one piece */
    init_or_die(&m, s, 2);
    const char *p1[] = {"xabc"};
    feed(&m, p1, 1, &r);
    cr_assert_eq(r.matched, 1);
    cr_assert_str_eq(r.out, "x");
    /* same with the stops listed the other way round */
    const char *s2[] = {"ab", "abc"};
    init_or_die(&m, s2, 2);
    feed(&m, p1, 1, &r);
    cr_assert_eq(r.matched, 0);
    cr_assert_str_eq(r.out, "x");
    /* equal end: the longer (earlier start) wins: "bc" and "abc" both end at 'c' */
    const char *s3[] = {"bc", "abc"};
    init_or_die(&m, s3, 2);
    const char *p3[] = {"a", "b", "c"};
    feed(&m, p3, 3, &r);
    cr_assert_eq(r.matched, 1);
    cr_assert_str_eq(r.out, "");
}

Test(stop, flush_returns_held_text)
{
    struct aarmd_stop m;
    const char *s[] = {"STOP!"};
    init_or_die(&m, s, 1);
    const char *p[] = {"go ", "ST", "O"};
    struct run r;
    feed(&m, p, 3, &r);
    cr_assert_eq(r.matched, -1);
    cr_assert_str_eq(r.out, "go STO");
    cr_assert_eq(aarmd_stop_held(&m), 0);
}

Test(stop, utf8_multibyte_stops)
{
    struct aarmd_stop m;
    const char *s[] = {"\xe6\x97\xa5\xe6\x9c\xac", "\xc3\xa9!"};   /* "日本", "é!" */
    init_or_die(&m, s, 2);
    char buf[64];
    int k;
    /* "日" may start "日本": held whole (3 bytes), never split */
    cr_assert_eq(aarmd_stop_push(&m, "x", 1, buf, sizeof buf, &k), 1);
    cr_assert_eq(aarmd_stop_push(&m, "\xe6\x97\xa5", 3, buf, sizeof buf, &k), 0);
    cr_assert_eq(aarmd_stop_held(&m), 3);
    cr_assert_eq(aarmd_stop_push(&m, "x", 1, buf, sizeof buf, &k), 4);
    cr_assert_eq(memcmp(buf, "\xe6\x97\xa5x", 4), 0);
    const char *p[] = {"caf", "\xc3\xa9", "!", "after"};
    struct run r;
    init_or_die(&m, s, 2);
    feed(&m, p, 4, &r);
    cr_assert_eq(r.matched, 1);
    cr_assert_str_eq(r.out, "caf");
    const char *p2[] = {"\xe6\x97\xa5", "\xe6\x97\xa5", "\xe6\x9c\xac"};
    init_or_die(&m, s, 2);
    feed(&m, p2, 3, &r);
    cr_assert_eq(r.matched, 0);
    cr_assert_str_eq(r.out, "\xe6\x97\xa5");
}

/* Every split of the text into two and into three pieces gives the reference answer. */
Test(stop, splits_at_every_position)
{
    const char *stops[] = {"<|end|>", "\n\n", "end!", "\xe2\x82\xac\xe2\x82\xac"};   /* last: "€€" */
    const char *texts[] = {
        "hello <|end|> world", "a\n\nb", "the <|en <|end|>", "no stop here at all <|en",
        "x end end! <|end|>", "\xe2\x82\xac \xe2\x82\xac\xe2\x82\xac!", "<|end|>", "e\n", "\n\n<|end|>",
    };
    for (size_t t = 0; t < sizeof texts / sizeof *texts; t++) {
        const char *text = texts[t];
        size_t tl = strlen(text), want_len;
        int want = ref_match(text, stops, 4, &want_len);
        for (size_t a = 0; a <= tl; a++)
            for (size_t b = a; b <= tl; b++) {
                char p0[64] = "", p1[64] = "", p2[64] = "";
                memcpy(p0, text, a);
                memcpy(p1, text + a, b - a);
                memcpy(p2, text + b, tl - b);
                const char *pieces[] = {p0, p1, p2};
                struct aarmd_stop m;
                struct run r;
                init_or_die(&m, stops, 4);
                feed(&m, pieces, 3, &r);
                cr_assert_eq(r.matched, want, "text %zu split %zu/%zu: matched %d want %d", t, a, b, r.matched,
                             want);
                cr_assert_eq(r.n_out, want_len, "text %zu split %zu/%zu: out '%s'", t, a, b, r.out);
                cr_assert_eq(memcmp(r.out, text, want_len), 0);
            }
    }
}

static bool utf8_whole(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
        if (!k || i + k > n)
            return false;
        i += k;
    }
    return true;
}

/*
 * Random texts over a small alphabet of 1..4-byte characters, random stops
 * from the same alphabet, random whole-character pieces: output equals the
 * reference, and every chunk streamed is whole UTF-8 characters.
 */
Test(stop, random_streams_match_reference)
{
    const char *alpha[] = {"a", "b", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    struct aarmd_rng g;
    aarmd_rng_seed(&g, 11);
    for (int iter = 0; iter < 3000; iter++) {
        char stops_buf[4][64];
        const char *stops[4];
        uint32_t ns = (uint32_t)aarmd_rng_below(&g, 5);
        for (uint32_t i = 0; i < ns; i++) {
            stops_buf[i][0] = '\0';
            uint64_t len = 1 + aarmd_rng_below(&g, 4);
            for (uint64_t j = 0; j < len; j++)
                strcat(stops_buf[i], alpha[aarmd_rng_below(&g, 3 + (i & 1) * 2)]);
            stops[i] = stops_buf[i];
        }
        char text[512] = "";
        char pieces_buf[64][64];
        const char *pieces[64];
        size_t np = 1 + aarmd_rng_below(&g, 40);
        for (size_t p = 0; p < np; p++) {
            pieces_buf[p][0] = '\0';
            uint64_t nc = aarmd_rng_below(&g, 4);   /* empty pieces happen */
            for (uint64_t j = 0; j < nc; j++)
                strcat(pieces_buf[p], alpha[aarmd_rng_below(&g, 5)]);
            strcat(text, pieces_buf[p]);
            pieces[p] = pieces_buf[p];
        }
        size_t want_len;
        int want = ref_match(text, stops, ns, &want_len);
        struct aarmd_stop m;
        init_or_die(&m, stops, ns);
        size_t n_out = 0;
        char out[512];
        int matched = -1;
        for (size_t p = 0; p < np && matched < 0; p++) {
            char buf[AARMD_STOP_OUT_CAP(64)];
            int got = aarmd_stop_push(&m, pieces[p], strlen(pieces[p]), buf, sizeof buf, &matched);
            cr_assert_geq(got, 0);
            cr_assert(utf8_whole(buf, (size_t)got), "iter %d: chunk splits a character", iter);
            cr_assert(utf8_whole(m.held, aarmd_stop_held(&m)), "iter %d: held text splits a character", iter);
            memcpy(out + n_out, buf, (size_t)got);
            n_out += (size_t)got;
        }
        if (matched < 0) {
            char buf[AARMD_STOP_MAX_LEN];
            int got = aarmd_stop_flush(&m, buf, sizeof buf);
            memcpy(out + n_out, buf, (size_t)got);
            n_out += (size_t)got;
        }
        cr_assert_eq(matched, want, "iter %d: matched %d want %d", iter, matched, want);
        cr_assert_eq(n_out, want_len, "iter %d", iter);
        cr_assert_eq(memcmp(out, text, want_len), 0, "iter %d", iter);
    }
}
