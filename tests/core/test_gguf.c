/* test_gguf.c — core/gguf.c: the real models and vocab files parse with the
 * facts we know about them; every validation rule refuses a crafted file with
 * "NAME: offset N: reason"; getters convert; the fuzz corpus replays cleanly. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ggml_type.h"
#include "gguf.h"

#define ERRLEN 512
#define NAME "t.gguf"

/* a broken index or bound shows up as a hang: fail it instead */
TestSuite(gguf_real, .timeout = 60);
TestSuite(gguf_open, .timeout = 60);
TestSuite(gguf_bad, .timeout = 60);
TestSuite(gguf_ok, .timeout = 60);
TestSuite(gguf_fuzz, .timeout = 60);

/* ---- a tiny GGUF writer ------------------------------------------------------ */

struct wb {
    uint8_t *p;
    size_t n, cap;
};

static void wb_raw(struct wb *w, const void *d, size_t n)
{
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 64;
        w->p = realloc(w->p, w->cap);
        cr_assert_not_null(w->p);
    }
    if (n)
        memcpy(w->p + w->n, d, n);
    w->n += n;
}

static void wb_u8(struct wb *w, uint8_t v) { wb_raw(w, &v, 1); }
static void wb_u32(struct wb *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    wb_raw(w, b, 4);
}
static void wb_u64(struct wb *w, uint64_t v)
{
    wb_u32(w, (uint32_t)v);
    wb_u32(w, (uint32_t)(v >> 32));
}
static void wb_strn(struct wb *w, const char *s, size_t n)
{
    wb_u64(w, n);
    wb_raw(w, s, n);
}
static void wb_str(struct wb *w, const char *s) { wb_strn(w, s, strlen(s)); }
static void wb_header(struct wb *w, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    wb_u32(w, 0x46554747u);
    wb_u32(w, version);
    wb_u64(w, n_tensors);
    wb_u64(w, n_kv);
}
static void wb_kv_u32(struct wb *w, const char *key, uint32_t v)
{
    wb_str(w, key);
    wb_u32(w, AARMD_GGUF_U32);
    wb_u32(w, v);
}
static void wb_kv_str(struct wb *w, const char *key, const char *v)
{
    wb_str(w, key);
    wb_u32(w, AARMD_GGUF_STRING);
    wb_str(w, v);
}
static void wb_pad(struct wb *w, size_t align)
{
    while (w->n % align)
        wb_u8(w, 0);
}
static void wb_zeros(struct wb *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        wb_u8(w, 0);
}

/* Offsets of one tensor info's fields, for expected error offsets. */
struct toff {
    size_t name, n_dims, ne0, type, offset;
};

static void wb_tensor(struct wb *w, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                      uint64_t offset, struct toff *o)
{
    struct toff t;
    t.name = w->n;
    wb_str(w, name);
    t.n_dims = w->n;
    wb_u32(w, n_dims);
    t.ne0 = w->n;
    for (uint32_t d = 0; d < n_dims; d++)
        wb_u64(w, (uint64_t)ne[d]);
    t.type = w->n;
    wb_u32(w, type);
    t.offset = w->n;
    wb_u64(w, offset);
    if (o)
        *o = t;
}

/* One-tensor file: kv general.architecture, one tensor, padding, data_bytes of data. */
static struct toff one_tensor(struct wb *w, uint32_t n_dims, const int64_t *ne, uint32_t type, uint64_t offset,
                              size_t data_bytes)
{
    struct toff o;
    wb_header(w, 3, 1, 1);
    wb_kv_str(w, "general.architecture", "test");
    wb_tensor(w, "w", n_dims, ne, type, offset, &o);
    wb_pad(w, 32);
    wb_zeros(w, data_bytes);
    return o;
}

static char err[ERRLEN];

static int open_wb(struct wb *w, struct aarmd_gguf **g)
{
    err[0] = '\0';
    return aarmd_gguf_open_mem(w->p, w->n, NAME, g, err, sizeof err);
}

/* The file must be refused with EINVAL, "t.gguf: offset OFF: ..." and `what` in the message. */
static void expect_bad(struct wb *w, size_t off, const char *what)
{
    struct aarmd_gguf *g = (struct aarmd_gguf *)&g;   /* must be reset to NULL */
    int rc = open_wb(w, &g);
    cr_assert_eq(rc, AARMD_EINVAL, "rc %d, err \"%s\" (want \"%s\")", rc, err, what);
    cr_assert_null(g);
    char prefix[64];
    snprintf(prefix, sizeof prefix, NAME ": offset %zu: ", off);
    cr_assert(!strncmp(err, prefix, strlen(prefix)), "err \"%s\" does not start with \"%s\"", err, prefix);
    cr_assert(strstr(err, what), "err \"%s\" lacks \"%s\"", err, what);
    free(w->p);
    *w = (struct wb){0};
}

static struct aarmd_gguf *expect_ok(struct wb *w)
{
    struct aarmd_gguf *g = NULL;
    int rc = open_wb(w, &g);
    cr_assert_eq(rc, AARMD_OK, "rc %d: %s", rc, err);
    cr_assert_not_null(g);
    return g;
}

static const char *data_dir(void)
{
    const char *d = getenv("AARMD_TEST_DATA");
    cr_assert_not_null(d, "AARMD_TEST_DATA not set");
    return d;
}

static const char *models_dir(void)
{
    const char *d = getenv("AARMD_TEST_MODELS");
    cr_assert_not_null(d, "AARMD_TEST_MODELS not set");
    return d;
}

static struct aarmd_gguf *open_path(const char *dir, const char *file)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct aarmd_gguf *g = NULL;
    int rc = aarmd_gguf_open(path, &g, err, sizeof err);
    cr_assert_eq(rc, AARMD_OK, "%s: rc %d: %s", path, rc, err);
    return g;
}

static void expect_str(const struct aarmd_gguf *g, const char *key, const char *want)
{
    char buf[256];
    cr_assert_eq(aarmd_gguf_get_cstr(g, key, buf, sizeof buf), AARMD_OK, "%s absent", key);
    cr_assert_str_eq(buf, want, "%s", key);
}

/* Every tensor lies inside the file, aligned, with the byte count of its shape. */
static void check_tensors(const struct aarmd_gguf *g)
{
    const uint8_t *base = NULL;
    uint64_t end_max = 0;
    for (uint64_t i = 0; i < aarmd_gguf_n_tensors(g); i++) {
        const struct aarmd_gguf_tensor *t = aarmd_gguf_tensor_at(g, i);
        uint64_t nb;
        cr_assert(aarmd_type_nbytes(t->type, t->ne, t->n_dims, &nb));
        cr_assert_eq(nb, t->nbytes, "%s", t->name);
        cr_assert_eq(t->offset % aarmd_gguf_alignment(g), 0);
        cr_assert_eq(aarmd_gguf_find_tensor(g, t->name), t);
        if (!base)
            base = (const uint8_t *)t->data - t->offset - aarmd_gguf_data_offset(g);
        cr_assert_eq((const uint8_t *)t->data, base + aarmd_gguf_data_offset(g) + t->offset);
        if (t->offset + t->nbytes > end_max)
            end_max = t->offset + t->nbytes;
    }
    /* converters write tensors back to back up to the end of the file */
    if (aarmd_gguf_n_tensors(g))
        cr_assert_eq(aarmd_gguf_data_offset(g) + end_max, aarmd_gguf_file_size(g));
}

/* ---- the real files ------------------------------------------------------------ */

Test(gguf_real, smollm2_q4_1)
{
    struct aarmd_gguf *g = open_path(models_dir(), "SmolLM2-135M-Instruct.Q4_1.gguf");
    cr_assert_eq(aarmd_gguf_version(g), 3);
    cr_assert_eq(aarmd_gguf_alignment(g), 32);
    expect_str(g, "general.architecture", "llama");
    expect_str(g, "tokenizer.ggml.model", "gpt2");
    cr_assert_eq(aarmd_gguf_n_tensors(g), 272);   /* 30 blocks x 9 + token_embd + output_norm */
    uint32_t n_layer, n_embd, vocab, heads;
    cr_assert_eq(aarmd_gguf_get_u32(g, "llama.block_count", &n_layer), AARMD_OK);
    cr_assert_eq(n_layer, 30);
    cr_assert_eq(aarmd_gguf_n_tensors(g), 9ull * n_layer + 2);
    cr_assert_eq(aarmd_gguf_get_u32(g, "llama.embedding_length", &n_embd), AARMD_OK);
    cr_assert_eq(aarmd_gguf_get_u32(g, "llama.vocab_size", &vocab), AARMD_OK);
    cr_assert_eq(aarmd_gguf_get_u32(g, "llama.attention.head_count", &heads), AARMD_OK);
    cr_assert_eq(heads, 9);
    const struct aarmd_gguf_value *tok, *types, *merges;
    cr_assert_eq(aarmd_gguf_get_arr(g, "tokenizer.ggml.tokens", &tok), AARMD_OK);
    cr_assert_eq(tok->v.arr.elem_type, AARMD_GGUF_STRING);
    cr_assert_eq(tok->v.arr.n, vocab);
    cr_assert_eq(aarmd_gguf_get_arr(g, "tokenizer.ggml.token_type", &types), AARMD_OK);
    cr_assert_eq(types->v.arr.n, vocab);
    cr_assert_null(types->v.arr.items, "scalar arrays are not copied");
    cr_assert_eq(aarmd_gguf_get_arr(g, "tokenizer.ggml.merges", &merges), AARMD_OK);
    cr_assert_gt(merges->v.arr.n, 1000);
    struct aarmd_gguf_value e;
    cr_assert_eq(aarmd_gguf_arr_get(tok, 0, &e), AARMD_OK);
    cr_assert_eq(e.type, AARMD_GGUF_STRING);
    cr_assert_eq(e.v.str.len, strlen("<|endoftext|>"));
    cr_assert(!memcmp(e.v.str.data, "<|endoftext|>", e.v.str.len));
    cr_assert_eq(aarmd_gguf_arr_i64(types, 0), 3, "<|endoftext|> is a control token");
    float eps;
    cr_assert_eq(aarmd_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps), AARMD_OK);
    cr_assert_float_eq(eps, 1e-5f, 1e-9f);
    const struct aarmd_gguf_tensor *emb = aarmd_gguf_find_tensor(g, "token_embd.weight");
    cr_assert_not_null(emb);
    cr_assert_eq(emb->n_dims, 2);
    cr_assert_eq(emb->ne[0], n_embd);
    cr_assert_eq(emb->ne[1], vocab);
    cr_assert_eq(emb->ne[2], 1);
    cr_assert_null(aarmd_gguf_find_tensor(g, "token_embd.weigh"));
    cr_assert_null(aarmd_gguf_find(g, "llama.nope"));
    check_tensors(g);
    aarmd_gguf_free(g);
}

Test(gguf_real, gemma3_q4_k_m)
{
    struct aarmd_gguf *g = open_path(models_dir(), "gemma-3-270m-q4_k_m.gguf");
    cr_assert_eq(aarmd_gguf_version(g), 3);
    expect_str(g, "general.architecture", "gemma3");
    uint32_t n_layer, n_embd;
    cr_assert_eq(aarmd_gguf_get_u32(g, "gemma3.block_count", &n_layer), AARMD_OK);
    cr_assert_eq(n_layer, 18);
    cr_assert_eq(aarmd_gguf_get_u32(g, "gemma3.embedding_length", &n_embd), AARMD_OK);
    cr_assert_eq(n_embd, 640);
    cr_assert_eq(aarmd_gguf_n_tensors(g), 236);   /* 18 x 13 + token_embd + output_norm */
    const struct aarmd_gguf_value *tok;
    cr_assert_eq(aarmd_gguf_get_arr(g, "tokenizer.ggml.tokens", &tok), AARMD_OK);
    const struct aarmd_gguf_tensor *emb = aarmd_gguf_find_tensor(g, "token_embd.weight");
    cr_assert_not_null(emb);
    cr_assert_eq((uint64_t)emb->ne[1], tok->v.arr.n, "tokens %" PRIu64 " vs embd rows %" PRId64,
                 tok->v.arr.n, emb->ne[1]);
    cr_assert_eq(emb->ne[0], n_embd);
    /* a Q4_K_M file holds K-quants */
    bool has_q4k = false;
    for (uint64_t i = 0; i < aarmd_gguf_n_tensors(g); i++)
        has_q4k |= aarmd_gguf_tensor_at(g, i)->type == AARMD_TYPE_Q4_K;
    cr_assert(has_q4k);
    check_tensors(g);
    aarmd_gguf_free(g);
}

struct vocab_case {
    char file[40], arch[8], model[8], token1[8];   /* arrays: params are copied across exec */
};

static struct vocab_case vocab_cases[] = {
    {"ggml-vocab-gpt-2.gguf", "gpt2", "gpt2", "\""},
    {"ggml-vocab-llama-spm.gguf", "llama", "llama", "<s>"},
    {"ggml-vocab-phi-3.gguf", "phi3", "llama", "<s>"},
};

ParameterizedTestParameters(gguf_real, vocab_only)
{
    return cr_make_param_array(struct vocab_case, vocab_cases, sizeof vocab_cases / sizeof vocab_cases[0]);
}

ParameterizedTest(struct vocab_case *c, gguf_real, vocab_only)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/vocab", data_dir());
    struct aarmd_gguf *g = open_path(dir, c->file);
    expect_str(g, "general.architecture", c->arch);
    expect_str(g, "tokenizer.ggml.model", c->model);
    cr_assert_eq(aarmd_gguf_n_tensors(g), 0);
    const struct aarmd_gguf_value *tok, *types;
    cr_assert_eq(aarmd_gguf_get_arr(g, "tokenizer.ggml.tokens", &tok), AARMD_OK);
    cr_assert_eq(aarmd_gguf_get_arr(g, "tokenizer.ggml.token_type", &types), AARMD_OK);
    cr_assert_eq(tok->v.arr.n, types->v.arr.n);
    cr_assert_gt(tok->v.arr.n, 30000);
    struct aarmd_gguf_value e;
    cr_assert_eq(aarmd_gguf_arr_get(tok, 1, &e), AARMD_OK);
    cr_assert_eq(e.v.str.len, strlen(c->token1));
    cr_assert(!memcmp(e.v.str.data, c->token1, e.v.str.len));
    /* each token lies inside the file */
    uint64_t fs = aarmd_gguf_file_size(g);
    const char *lo = tok->v.arr.items[0].v.str.data;
    for (uint64_t i = 0; i < tok->v.arr.n; i++) {
        cr_assert_eq(tok->v.arr.items[i].type, AARMD_GGUF_STRING);
        cr_assert((uint64_t)(tok->v.arr.items[i].v.str.data - lo) < fs);
    }
    aarmd_gguf_free(g);
}

/* ---- open errors ------------------------------------------------------------------ */

Test(gguf_open, missing_file_names_path_and_errno)
{
    struct aarmd_gguf *g = (struct aarmd_gguf *)&g;
    int rc = aarmd_gguf_open("/nonexistent/dir/model.gguf", &g, err, sizeof err);
    cr_assert_eq(rc, AARMD_EIO);
    cr_assert_null(g);
    cr_assert(strstr(err, "/nonexistent/dir/model.gguf"), "%s", err);
    cr_assert(strstr(err, strerror(ENOENT)), "%s", err);
}

Test(gguf_open, directory_is_refused)
{
    struct aarmd_gguf *g = NULL;
    int rc = aarmd_gguf_open(data_dir(), &g, err, sizeof err);
    cr_assert_eq(rc, AARMD_EINVAL, "%s", err);
    cr_assert_null(g);
    cr_assert(strstr(err, "not a regular file"), "%s", err);
    cr_assert(strstr(err, data_dir()), "%s", err);
}

Test(gguf_open, fifo_is_refused_without_blocking, .timeout = 10)
{
    char path[] = "/tmp/aarmd-test-fifo-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    unlink(path);
    cr_assert_eq(mkfifo(path, 0600), 0, "%s", strerror(errno));
    struct aarmd_gguf *g = NULL;
    int rc = aarmd_gguf_open(path, &g, err, sizeof err);
    unlink(path);
    cr_assert_eq(rc, AARMD_EINVAL, "%s", err);
    cr_assert(strstr(err, "not a regular file"), "%s", err);
}

static char *tmp_file(const void *data, size_t n)
{
    static char path[64];
    strcpy(path, "/tmp/aarmd-test-gguf-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    if (n)
        cr_assert_eq(write(fd, data, n), (ssize_t)n);
    close(fd);
    return path;
}

Test(gguf_open, empty_file)
{
    char *path = tmp_file(NULL, 0);
    struct aarmd_gguf *g = NULL;
    int rc = aarmd_gguf_open(path, &g, err, sizeof err);
    unlink(path);
    cr_assert_eq(rc, AARMD_EINVAL);
    char want[128];
    snprintf(want, sizeof want, "%s: offset 0: file is empty", path);
    cr_assert(!strncmp(err, want, strlen(want)), "%s", err);
}

Test(gguf_open, file_and_memory_agree)
{
    struct wb w = {0};
    int64_t ne[2] = {4, 2};
    one_tensor(&w, 2, ne, AARMD_TYPE_F32, 0, 32);
    char *path = tmp_file(w.p, w.n);
    struct aarmd_gguf *gf = NULL, *gm = expect_ok(&w);
    int rc = aarmd_gguf_open(path, &gf, err, sizeof err);
    unlink(path);
    cr_assert_eq(rc, AARMD_OK, "%s", err);
    cr_assert_str_eq(aarmd_gguf_path(gf), path);
    cr_assert_str_eq(aarmd_gguf_path(gm), NAME);
    cr_assert_eq(aarmd_gguf_file_size(gf), w.n);
    cr_assert_eq(aarmd_gguf_data_offset(gf), aarmd_gguf_data_offset(gm));
    cr_assert_eq(aarmd_gguf_n_tensors(gf), 1);
    cr_assert_eq(aarmd_gguf_tensor_at(gf, 0)->nbytes, 32);
    cr_assert_eq(aarmd_gguf_tensor_at(gm, 0)->data, w.p + aarmd_gguf_data_offset(gm));
    cr_assert_null(aarmd_gguf_tensor_at(gf, 1));
    cr_assert_null(aarmd_gguf_kv_at(gf, 1));
    aarmd_gguf_free(gf);
    aarmd_gguf_free(gm);
    aarmd_gguf_free(NULL);
    free(w.p);
}

Test(gguf_open, null_arguments)
{
    struct aarmd_gguf *g = NULL;
    cr_assert_eq(aarmd_gguf_open(NULL, &g, err, sizeof err), AARMD_EINVAL);
    cr_assert(strstr(err, "NULL argument"), "%s", err);
    cr_assert_eq(aarmd_gguf_open_mem(NULL, 10, "x", &g, err, sizeof err), AARMD_EINVAL);
    cr_assert_eq(aarmd_gguf_open_mem("GGUF", 4, "x", NULL, err, sizeof err), AARMD_EINVAL);
    /* accessors treat NULL as an empty file */
    cr_assert_eq(aarmd_gguf_n_kv(NULL), 0);
    cr_assert_eq(aarmd_gguf_n_tensors(NULL), 0);
    cr_assert_null(aarmd_gguf_find(NULL, "a"));
    cr_assert_null(aarmd_gguf_find_tensor(NULL, "a"));
    uint32_t u;
    cr_assert_eq(aarmd_gguf_get_u32(NULL, "a", &u), AARMD_EINVAL);
    /* a NULL or zero-sized error buffer is allowed */
    cr_assert_eq(aarmd_gguf_open_mem("GGUF", 4, "x", &g, NULL, 0), AARMD_EINVAL);
    cr_assert_eq(aarmd_gguf_open_mem("GGUF", 4, "x", &g, err, 1), AARMD_EINVAL);
    cr_assert_str_empty(err);
}

/* ---- header ------------------------------------------------------------------------ */

Test(gguf_bad, empty_buffer)
{
    struct wb w = {0};
    wb_raw(&w, "", 0);
    expect_bad(&w, 0, "file is empty");
}

Test(gguf_bad, too_small_for_magic)
{
    struct wb w = {0};
    wb_raw(&w, "GG", 2);
    expect_bad(&w, 0, "too small for the GGUF magic");
}

Test(gguf_bad, bad_magic)
{
    struct wb w = {0};
    wb_raw(&w, "GGML", 4);
    wb_u32(&w, 3);
    wb_u64(&w, 0);
    wb_u64(&w, 0);
    expect_bad(&w, 0, "bad magic 47 47 4d 4c");
}

Test(gguf_bad, truncated_header)
{
    static const struct { size_t n, off; const char *what; } cut[] = {
        {6, 4, "truncated header (version)"},
        {10, 8, "truncated header (tensor count)"},
        {20, 16, "truncated header (kv count)"},
    };
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        struct wb w = {0};
        wb_header(&w, 3, 0, 0);
        w.n = cut[i].n;
        expect_bad(&w, cut[i].off, cut[i].what);
    }
}

Test(gguf_bad, version_1_refused)
{
    struct wb w = {0};
    wb_header(&w, 1, 0, 0);
    expect_bad(&w, 4, "GGUF version 1 is not supported");
}

Test(gguf_bad, unknown_and_byte_swapped_versions)
{
    struct wb w = {0};
    wb_header(&w, 4, 0, 0);
    expect_bad(&w, 4, "unsupported GGUF version 4");
    wb_header(&w, 0x03000000u, 0, 0);
    expect_bad(&w, 4, "big-endian");
    wb_header(&w, 0, 0, 0);
    expect_bad(&w, 4, "unsupported GGUF version 0");
}

Test(gguf_bad, kv_count_exceeds_file)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1000);
    wb_kv_u32(&w, "a", 1);
    expect_bad(&w, 16, "kv count 1000 exceeds");
    wb_header(&w, 3, 0, UINT64_MAX);
    expect_bad(&w, 16, "kv count 18446744073709551615 exceeds");
}

Test(gguf_bad, tensor_count_exceeds_file)
{
    struct wb w = {0};
    wb_header(&w, 3, UINT64_MAX / 2, 0);
    wb_zeros(&w, 100);
    expect_bad(&w, 8, "tensor count 9223372036854775807 exceeds");
    /* each bound alone passes, the sum does not */
    wb_header(&w, 3, 2, 3);
    wb_zeros(&w, 64);
    expect_bad(&w, 8, "kv count 3 plus tensor count 2 exceed");
}

/* ---- metadata ------------------------------------------------------------------------ */

Test(gguf_bad, key_length_exceeds_file)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_u64(&w, UINT64_MAX);
    wb_zeros(&w, 16);
    expect_bad(&w, 24, "key length 18446744073709551615 exceeds file size 48");
}

Test(gguf_bad, string_value_length_exceeds_file)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_str(&w, "k");
    wb_u32(&w, AARMD_GGUF_STRING);
    size_t at = w.n;
    wb_u64(&w, 10);
    wb_raw(&w, "abc", 3);
    expect_bad(&w, at, "string length 10 exceeds file size");
}

Test(gguf_bad, string_length_boundary)
{
    /* a string that ends exactly at the end of the file is fine; one byte more is not */
    for (int extra = 0; extra <= 1; extra++) {
        struct wb w = {0};
        wb_header(&w, 3, 0, 1);
        wb_str(&w, "k");
        wb_u32(&w, AARMD_GGUF_STRING);
        size_t at = w.n;
        wb_u64(&w, 5 + (uint64_t)extra);
        wb_raw(&w, "hello", 5);
        if (extra) {
            expect_bad(&w, at, "string length 6 exceeds file size");
        } else {
            struct aarmd_gguf *g = expect_ok(&w);
            expect_str(g, "k", "hello");
            aarmd_gguf_free(g);
            free(w.p);
        }
    }
}

Test(gguf_bad, truncated_scalar_value)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_str(&w, "k");
    wb_u32(&w, AARMD_GGUF_U64);
    size_t at = w.n;
    wb_u32(&w, 7);
    wb_u8(&w, 0);   /* 13 bytes minimum per kv */
    expect_bad(&w, at, "truncated u64");
}

Test(gguf_bad, unknown_value_type)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_str(&w, "k");
    size_t at = w.n;
    wb_u32(&w, 13);
    wb_u32(&w, 0);
    expect_bad(&w, at, "unknown value type 13");
}

Test(gguf_bad, bool_not_0_or_1)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_str(&w, "k");
    wb_u32(&w, AARMD_GGUF_BOOL);
    size_t at = w.n;
    wb_u8(&w, 2);
    expect_bad(&w, at, "bool value 2 is not 0 or 1");
    /* also inside an array */
    wb_header(&w, 3, 0, 1);
    wb_str(&w, "k");
    wb_u32(&w, AARMD_GGUF_ARRAY);
    wb_u32(&w, AARMD_GGUF_BOOL);
    wb_u64(&w, 3);
    wb_u8(&w, 1);
    wb_u8(&w, 0);
    at = w.n;
    wb_u8(&w, 255);
    expect_bad(&w, at, "bool value 255");
}

Test(gguf_bad, empty_key)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_str(&w, "");
    wb_u32(&w, AARMD_GGUF_U32);
    wb_u32(&w, 1);
    expect_bad(&w, 24, "empty key");
}

Test(gguf_bad, duplicate_key)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 3);
    wb_kv_u32(&w, "a.b", 1);
    wb_kv_u32(&w, "a.c", 2);
    size_t at = w.n;
    wb_kv_str(&w, "a.b", "x");
    expect_bad(&w, at, "duplicate key \"a.b\"");
}

Test(gguf_bad, names_in_errors_are_escaped)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 2);
    wb_kv_u32(&w, "a\x1b[2J\"", 1);
    size_t at = w.n;
    wb_kv_u32(&w, "a\x1b[2J\"", 2);
    expect_bad(&w, at, "duplicate key \"a\\x1b[2J\\x22\"");
    /* long names are cut */
    char name[200];
    memset(name, 'q', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    int64_t ne[1] = {8};
    struct toff o;
    wb_header(&w, 3, 1, 0);
    wb_tensor(&w, name, 1, ne, 99, 0, &o);
    wb_pad(&w, 32);
    wb_zeros(&w, 32);
    char want[128];
    snprintf(want, sizeof want, "tensor \"%.64s...\": unknown ggml type 99", name);
    expect_bad(&w, o.type, want);
}

Test(gguf_bad, scalar_array_length_exceeds_file)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_str(&w, "arr");
    wb_u32(&w, AARMD_GGUF_ARRAY);
    wb_u32(&w, AARMD_GGUF_I32);
    size_t at = w.n;
    wb_u64(&w, UINT64_MAX / 4 + 1);    /* n * 4 wraps to 0 in naive code */
    wb_zeros(&w, 8);
    expect_bad(&w, at, "array of 4611686018427387904 i32 exceeds file size");
}

Test(gguf_bad, scalar_array_bytes_exceed_file)
{
    /* 3 u32 need 12 bytes: the count alone (3 <= 8 bytes left) is not the check */
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_str(&w, "arr");
    wb_u32(&w, AARMD_GGUF_ARRAY);
    wb_u32(&w, AARMD_GGUF_U32);
    size_t at = w.n;
    wb_u64(&w, 3);
    wb_u32(&w, 1);
    wb_u32(&w, 2);
    expect_bad(&w, at, "array of 3 u32 exceeds file size");
}

Test(gguf_bad, string_array_length_exceeds_file)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_str(&w, "arr");
    wb_u32(&w, AARMD_GGUF_ARRAY);
    wb_u32(&w, AARMD_GGUF_STRING);
    size_t at = w.n;
    wb_u64(&w, 5);
    wb_str(&w, "a");
    wb_str(&w, "b");
    expect_bad(&w, at, "array of 5 string exceeds file size");
}

Test(gguf_bad, string_array_item_truncated)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_str(&w, "arr");
    wb_u32(&w, AARMD_GGUF_ARRAY);
    wb_u32(&w, AARMD_GGUF_STRING);
    wb_u64(&w, 2);
    wb_str(&w, "abc");
    size_t at = w.n;
    wb_u64(&w, 1000);
    wb_zeros(&w, 4);
    expect_bad(&w, at, "string length 1000 exceeds file size");
}

Test(gguf_bad, unknown_array_element_type)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_str(&w, "arr");
    wb_u32(&w, AARMD_GGUF_ARRAY);
    size_t at = w.n;
    wb_u32(&w, 77);
    wb_u64(&w, 1);
    wb_zeros(&w, 8);
    expect_bad(&w, at, "unknown array element type 77");
}

/* An array nested `depth` levels deep, innermost holding one u8. Returns the
 * offset of the innermost array header. */
static size_t nested(struct wb *w, int depth)
{
    wb_header(w, 3, 0, 1);
    wb_str(w, "deep");
    wb_u32(w, AARMD_GGUF_ARRAY);
    size_t inner = 0;
    for (int d = 1; d <= depth; d++) {
        inner = w->n;
        wb_u32(w, d == depth ? AARMD_GGUF_U8 : AARMD_GGUF_ARRAY);
        wb_u64(w, 1);
    }
    wb_u8(w, 42);
    return inner;
}

Test(gguf_bad, arrays_nested_too_deep)
{
    struct wb w = {0};
    size_t inner = nested(&w, 9);
    expect_bad(&w, inner, "nested deeper than 8");
}

Test(gguf_ok, arrays_nested_8_deep)
{
    struct wb w = {0};
    nested(&w, 8);
    struct aarmd_gguf *g = expect_ok(&w);
    const struct aarmd_gguf_value *v = aarmd_gguf_find(g, "deep");
    for (int d = 1; d < 8; d++) {
        cr_assert_eq(v->type, AARMD_GGUF_ARRAY);
        cr_assert_eq(v->v.arr.elem_type, AARMD_GGUF_ARRAY);
        cr_assert_eq(v->v.arr.n, 1);
        v = &v->v.arr.items[0];
    }
    cr_assert_eq(v->v.arr.elem_type, AARMD_GGUF_U8);
    cr_assert_eq(aarmd_gguf_arr_i64(v, 0), 42);
    aarmd_gguf_free(g);
    free(w.p);
}

Test(gguf_bad, alignment_rules)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_str(&w, "general.alignment");
    size_t at = w.n;
    wb_u32(&w, AARMD_GGUF_U32);
    wb_u32(&w, 48);
    expect_bad(&w, at + 4, "general.alignment 48 is not a power of two");

    wb_header(&w, 3, 0, 1);
    wb_str(&w, "general.alignment");
    at = w.n;
    wb_u32(&w, AARMD_GGUF_U32);
    wb_u32(&w, 0);
    expect_bad(&w, at + 4, "general.alignment 0 is not a power of two");

    wb_header(&w, 3, 0, 1);
    wb_str(&w, "general.alignment");
    at = w.n;
    wb_u32(&w, AARMD_GGUF_U64);
    wb_u64(&w, 32);
    expect_bad(&w, at, "general.alignment has type u64, expected u32");
}

/* ---- tensor infos ------------------------------------------------------------------------ */

Test(gguf_bad, tensor_n_dims)
{
    struct wb w = {0};
    int64_t ne[5] = {32, 1, 1, 1, 1};
    struct toff o = one_tensor(&w, 5, ne, AARMD_TYPE_F32, 0, 128);
    expect_bad(&w, o.n_dims, "n_dims 5 is not in 1..4");
    o = one_tensor(&w, 0, ne, AARMD_TYPE_F32, 0, 128);
    expect_bad(&w, o.n_dims, "n_dims 0 is not in 1..4");
}

Test(gguf_bad, tensor_negative_dim)
{
    struct wb w = {0};
    int64_t ne[2] = {32, -2};
    struct toff o = one_tensor(&w, 2, ne, AARMD_TYPE_F32, 0, 128);
    expect_bad(&w, o.ne0 + 8, "dimension 1 is negative (-2)");
}

Test(gguf_bad, tensor_unknown_type)
{
    uint32_t bad[] = {4, 5, 31, 36, 40, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct wb w = {0};
        int64_t ne[1] = {256};
        struct toff o = one_tensor(&w, 1, ne, bad[i], 0, 1024);
        char what[64];
        snprintf(what, sizeof what, "unknown ggml type %u", bad[i]);
        expect_bad(&w, o.type, what);
    }
}

Test(gguf_bad, tensor_row_not_whole_blocks)
{
    struct wb w = {0};
    int64_t ne[2] = {100, 2};
    struct toff o = one_tensor(&w, 2, ne, AARMD_TYPE_Q4_K, 0, 1024);
    expect_bad(&w, o.ne0, "ne[0] = 100 is not a multiple of the Q4_K block size 256");
}

Test(gguf_bad, tensor_count_overflow)
{
    struct wb w = {0};
    int64_t ne[4] = {INT64_C(1) << 20, INT64_C(1) << 20, INT64_C(1) << 20, 2};
    struct toff o = one_tensor(&w, 4, ne, AARMD_TYPE_F32, 0, 64);
    expect_bad(&w, o.ne0, "element or byte count overflows");
}

Test(gguf_bad, tensor_offset_unaligned)
{
    struct wb w = {0};
    int64_t ne[1] = {8};
    struct toff o = one_tensor(&w, 1, ne, AARMD_TYPE_F32, 4, 64);
    expect_bad(&w, o.offset, "data offset 4 is not a multiple of the alignment 32");
}

Test(gguf_bad, tensor_data_past_end)
{
    struct wb w = {0};
    int64_t ne[1] = {64};   /* 256 bytes, file holds 255 */
    one_tensor(&w, 1, ne, AARMD_TYPE_F32, 0, 255);
    size_t data = w.n - 255;
    expect_bad(&w, data, "tensor \"w\": data [0, +256) runs past the end of the file");

    int64_t ne2[1] = {8};
    one_tensor(&w, 1, ne2, AARMD_TYPE_F32, UINT64_MAX - 31, 32);   /* offset + size wraps */
    data = w.n - 32;
    expect_bad(&w, data + 32, "runs past the end of the file");
}

Test(gguf_bad, tensor_names)
{
    struct wb w = {0};
    int64_t ne[1] = {8};
    struct toff a, b;
    wb_header(&w, 3, 2, 0);
    wb_tensor(&w, "x", 1, ne, AARMD_TYPE_F32, 0, &a);
    wb_tensor(&w, "x", 1, ne, AARMD_TYPE_F32, 32, &b);
    wb_pad(&w, 32);
    wb_zeros(&w, 64);
    expect_bad(&w, b.name, "duplicate tensor name \"x\"");

    wb_header(&w, 3, 1, 0);
    wb_tensor(&w, "", 1, ne, AARMD_TYPE_F32, 0, &a);
    wb_pad(&w, 32);
    wb_zeros(&w, 32);
    expect_bad(&w, a.name, "empty tensor name");

    wb_header(&w, 3, 1, 0);
    a.name = w.n;
    wb_strn(&w, "ab\0c", 4);
    wb_u32(&w, 1);
    wb_u64(&w, 8);
    wb_u32(&w, AARMD_TYPE_F32);
    wb_u64(&w, 0);
    wb_pad(&w, 32);
    wb_zeros(&w, 32);
    expect_bad(&w, a.name, "tensor name contains a NUL byte");

    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    wb_header(&w, 3, 1, 0);
    wb_tensor(&w, longname, 1, ne, AARMD_TYPE_F32, 0, &a);
    wb_pad(&w, 32);
    wb_zeros(&w, 32);
    expect_bad(&w, a.name, "tensor name of 299 bytes is longer than 255");
}

Test(gguf_bad, file_ends_in_padding)
{
    struct wb w = {0};
    int64_t ne[1] = {0};
    wb_header(&w, 3, 1, 0);
    wb_tensor(&w, "z", 1, ne, AARMD_TYPE_F32, 0, NULL);
    size_t end = w.n;
    expect_bad(&w, end, "file ends inside the padding");
}

/* Every proper prefix of a valid file is refused (tensors run to the end). */
Test(gguf_bad, every_truncation)
{
    struct wb w = {0};
    int64_t ne[2] = {64, 3};
    wb_header(&w, 3, 2, 3);
    wb_kv_str(&w, "general.architecture", "llama");
    wb_kv_u32(&w, "general.alignment", 64);
    wb_str(&w, "tokens");
    wb_u32(&w, AARMD_GGUF_ARRAY);
    wb_u32(&w, AARMD_GGUF_STRING);
    wb_u64(&w, 3);
    wb_str(&w, "a");
    wb_str(&w, "bb");
    wb_str(&w, "ccc");
    wb_tensor(&w, "q", 2, ne, AARMD_TYPE_Q8_0, 0, NULL);
    wb_tensor(&w, "f", 1, ne, AARMD_TYPE_F16, 448, NULL);
    wb_pad(&w, 64);
    wb_zeros(&w, 448 + 128);
    struct aarmd_gguf *g = expect_ok(&w);
    cr_assert_eq(aarmd_gguf_data_offset(g) % 64, 0);
    aarmd_gguf_free(g);
    for (size_t n = 0; n < w.n; n++) {
        uint8_t *copy = malloc(n + 1);
        memcpy(copy, w.p, n);
        g = (struct aarmd_gguf *)&g;
        int rc = aarmd_gguf_open_mem(copy, n, NAME, &g, err, sizeof err);
        cr_assert_eq(rc, AARMD_EINVAL, "prefix %zu accepted", n);
        cr_assert_null(g);
        cr_assert(!strncmp(err, NAME ": offset ", strlen(NAME ": offset ")), "prefix %zu: %s", n, err);
        free(copy);
    }
    free(w.p);
}

/* ---- valid files ---------------------------------------------------------------------------- */

Test(gguf_ok, version_2_and_zero_dims)
{
    struct wb w = {0};
    int64_t ne[2] = {0, 7};
    wb_header(&w, 2, 1, 1);
    wb_kv_str(&w, "general.architecture", "v2");
    wb_tensor(&w, "empty", 2, ne, AARMD_TYPE_Q4_0, 0, NULL);
    wb_pad(&w, 32);
    struct aarmd_gguf *g = expect_ok(&w);
    cr_assert_eq(aarmd_gguf_version(g), 2);
    expect_str(g, "general.architecture", "v2");
    cr_assert_eq(aarmd_gguf_find_tensor(g, "empty")->nbytes, 0);
    cr_assert_eq(aarmd_gguf_find_tensor(g, "empty")->ne[1], 7);
    cr_assert_eq(aarmd_gguf_find_tensor(g, "empty")->ne[3], 1);
    aarmd_gguf_free(g);
    free(w.p);
}

Test(gguf_ok, no_tensors_may_omit_padding)
{
    struct wb w = {0};
    wb_header(&w, 3, 0, 1);
    wb_kv_u32(&w, "x", 5);   /* 24 + 14 + 4 = 42 bytes, no padding */
    struct aarmd_gguf *g = expect_ok(&w);
    cr_assert_eq(aarmd_gguf_n_tensors(g), 0);
    cr_assert_eq(aarmd_gguf_n_kv(g), 1);
    aarmd_gguf_free(g);
    free(w.p);
}

/* One kv of each type, with odd key lengths so array payloads are unaligned. */
static void all_types(struct wb *w)
{
    wb_header(w, 3, 0, 19);
    wb_str(w, "u8");  wb_u32(w, AARMD_GGUF_U8);  wb_u8(w, 200);
    wb_str(w, "i8");  wb_u32(w, AARMD_GGUF_I8);  wb_u8(w, 0xfe);                 /* -2 */
    wb_str(w, "u16"); wb_u32(w, AARMD_GGUF_U16); wb_u8(w, 0x34); wb_u8(w, 0x12);
    wb_str(w, "i16"); wb_u32(w, AARMD_GGUF_I16); wb_u8(w, 0x00); wb_u8(w, 0x80); /* -32768 */
    wb_str(w, "u32"); wb_u32(w, AARMD_GGUF_U32); wb_u32(w, 4000000000u);
    wb_str(w, "i32"); wb_u32(w, AARMD_GGUF_I32); wb_u32(w, (uint32_t)-7);
    wb_str(w, "u64"); wb_u32(w, AARMD_GGUF_U64); wb_u64(w, UINT64_MAX);
    wb_str(w, "i64"); wb_u32(w, AARMD_GGUF_I64); wb_u64(w, (uint64_t)INT64_C(-5000000000));
    float f = 0.25f;
    uint32_t fb;
    memcpy(&fb, &f, 4);
    wb_str(w, "f32"); wb_u32(w, AARMD_GGUF_F32); wb_u32(w, fb);
    double d = -1.5e300;
    uint64_t db;
    memcpy(&db, &d, 8);
    wb_str(w, "f64"); wb_u32(w, AARMD_GGUF_F64); wb_u64(w, db);
    wb_str(w, "yes"); wb_u32(w, AARMD_GGUF_BOOL); wb_u8(w, 1);
    wb_str(w, "s");   wb_u32(w, AARMD_GGUF_STRING); wb_str(w, "h\xc3\xa9llo");
    wb_str(w, "small_u32"); wb_u32(w, AARMD_GGUF_U32); wb_u32(w, 12);
    wb_str(w, "ai16"); wb_u32(w, AARMD_GGUF_ARRAY); wb_u32(w, AARMD_GGUF_I16); wb_u64(w, 3);
    wb_u8(w, 0xff); wb_u8(w, 0xff); wb_u8(w, 2); wb_u8(w, 0); wb_u8(w, 0x00); wb_u8(w, 0x80);
    wb_str(w, "af32"); wb_u32(w, AARMD_GGUF_ARRAY); wb_u32(w, AARMD_GGUF_F32); wb_u64(w, 2);
    wb_u32(w, fb); wb_u32(w, 0xbf800000u);   /* 0.25, -1 */
    wb_str(w, "au64"); wb_u32(w, AARMD_GGUF_ARRAY); wb_u32(w, AARMD_GGUF_U64); wb_u64(w, 2);
    wb_u64(w, 1ull << 40); wb_u64(w, UINT64_MAX);
    wb_str(w, "astr"); wb_u32(w, AARMD_GGUF_ARRAY); wb_u32(w, AARMD_GGUF_STRING); wb_u64(w, 2);
    wb_str(w, ""); wb_str(w, "two");
    /* [[1, 2], [3]] of i32 */
    wb_str(w, "nested"); wb_u32(w, AARMD_GGUF_ARRAY); wb_u32(w, AARMD_GGUF_ARRAY); wb_u64(w, 2);
    wb_u32(w, AARMD_GGUF_I32); wb_u64(w, 2); wb_u32(w, 1); wb_u32(w, 2);
    wb_u32(w, AARMD_GGUF_I32); wb_u64(w, 1); wb_u32(w, 3);
    wb_str(w, "aempty"); wb_u32(w, AARMD_GGUF_ARRAY); wb_u32(w, AARMD_GGUF_STRING); wb_u64(w, 0);
}

Test(gguf_ok, every_value_type_and_getter)
{
    struct wb w = {0};
    all_types(&w);
    struct aarmd_gguf *g = expect_ok(&w);
    cr_assert_eq(aarmd_gguf_n_kv(g), 19);
    uint32_t u32;
    uint64_t u64;
    int64_t i64;
    float f;
    bool b;

    /* integer getters: any integer type that fits */
    cr_assert_eq(aarmd_gguf_get_u32(g, "u8", &u32), AARMD_OK);
    cr_assert_eq(u32, 200);
    cr_assert_eq(aarmd_gguf_get_u32(g, "u16", &u32), AARMD_OK);
    cr_assert_eq(u32, 0x1234);
    cr_assert_eq(aarmd_gguf_get_u32(g, "u32", &u32), AARMD_OK);
    cr_assert_eq(u32, 4000000000u);
    cr_assert_eq(aarmd_gguf_get_u32(g, "i8", &u32), AARMD_EINVAL, "negative to unsigned");
    cr_assert_eq(aarmd_gguf_get_u32(g, "u64", &u32), AARMD_EINVAL, "too big for u32");
    cr_assert_eq(aarmd_gguf_get_u64(g, "u64", &u64), AARMD_OK);
    cr_assert_eq(u64, UINT64_MAX);
    cr_assert_eq(aarmd_gguf_get_i64(g, "u64", &i64), AARMD_EINVAL, "too big for i64");
    cr_assert_eq(aarmd_gguf_get_i64(g, "i8", &i64), AARMD_OK);
    cr_assert_eq(i64, -2);
    cr_assert_eq(aarmd_gguf_get_i64(g, "i16", &i64), AARMD_OK);
    cr_assert_eq(i64, -32768);
    cr_assert_eq(aarmd_gguf_get_i64(g, "i32", &i64), AARMD_OK);
    cr_assert_eq(i64, -7);
    cr_assert_eq(aarmd_gguf_get_i64(g, "i64", &i64), AARMD_OK);
    cr_assert_eq(i64, INT64_C(-5000000000));
    cr_assert_eq(aarmd_gguf_get_i64(g, "u32", &i64), AARMD_OK);
    cr_assert_eq(i64, 4000000000);
    cr_assert_eq(aarmd_gguf_get_u64(g, "i64", &u64), AARMD_EINVAL);
    cr_assert_eq(aarmd_gguf_get_u32(g, "f32", &u32), AARMD_EINVAL, "float to int");
    cr_assert_eq(aarmd_gguf_get_u32(g, "yes", &u32), AARMD_EINVAL, "bool to int");
    cr_assert_eq(aarmd_gguf_get_u32(g, "s", &u32), AARMD_EINVAL, "string to int");

    /* float getter: floats and integers */
    cr_assert_eq(aarmd_gguf_get_f32(g, "f32", &f), AARMD_OK);
    cr_assert_eq(f, 0.25f);
    cr_assert_eq(aarmd_gguf_get_f32(g, "f64", &f), AARMD_OK);
    cr_assert(isinf(f) && f < 0, "f64 -1.5e300 rounds to -inf as float, got %g", f);
    cr_assert_eq(aarmd_gguf_get_f32(g, "i32", &f), AARMD_OK);
    cr_assert_eq(f, -7.0f);
    cr_assert_eq(aarmd_gguf_get_f32(g, "small_u32", &f), AARMD_OK);
    cr_assert_eq(f, 12.0f);
    cr_assert_eq(aarmd_gguf_get_f32(g, "s", &f), AARMD_EINVAL);
    cr_assert_eq(aarmd_gguf_get_f32(g, "yes", &f), AARMD_EINVAL);

    /* bool and strings */
    cr_assert_eq(aarmd_gguf_get_bool(g, "yes", &b), AARMD_OK);
    cr_assert(b);
    cr_assert_eq(aarmd_gguf_get_bool(g, "u8", &b), AARMD_EINVAL);
    struct aarmd_gguf_str s;
    cr_assert_eq(aarmd_gguf_get_str(g, "s", &s), AARMD_OK);
    cr_assert_eq(s.len, 6);
    cr_assert(!memcmp(s.data, "h\xc3\xa9llo", 6));
    char buf[4];
    cr_assert_eq(aarmd_gguf_get_cstr(g, "s", buf, sizeof buf), AARMD_OK);
    cr_assert_str_eq(buf, "h\xc3\xa9", "truncated to cap - 1");
    char fit[8] = "XXXXXXXX";
    cr_assert_eq(aarmd_gguf_get_cstr(g, "s", fit, 6), AARMD_OK);   /* len 6 == cap */
    cr_assert_str_eq(fit, "h\xc3\xa9ll");
    cr_assert_eq(fit[6], 'X', "wrote past cap");
    cr_assert_eq(aarmd_gguf_get_cstr(g, "s", fit, 7), AARMD_OK);
    cr_assert_str_eq(fit, "h\xc3\xa9llo");
    cr_assert_eq(aarmd_gguf_get_cstr(g, "u8", buf, sizeof buf), AARMD_EINVAL);
    cr_assert_eq(aarmd_gguf_get_str(g, "astr", &s), AARMD_EINVAL);

    /* absent keys */
    cr_assert_eq(aarmd_gguf_get_u32(g, "nope", &u32), AARMD_EINVAL);
    cr_assert_eq(aarmd_gguf_get_f32(g, "nope", &f), AARMD_EINVAL);
    cr_assert_eq(aarmd_gguf_get_bool(g, "nope", &b), AARMD_EINVAL);
    cr_assert_eq(aarmd_gguf_get_cstr(g, "nope", buf, sizeof buf), AARMD_EINVAL);
    const struct aarmd_gguf_value *a = (const struct aarmd_gguf_value *)&a;
    cr_assert_eq(aarmd_gguf_get_arr(g, "nope", &a), AARMD_EINVAL);
    cr_assert_null(a);
    cr_assert_eq(aarmd_gguf_get_arr(g, "u8", &a), AARMD_EINVAL);

    /* scalar arrays read from unaligned raw pointers */
    cr_assert_eq(aarmd_gguf_get_arr(g, "ai16", &a), AARMD_OK);
    cr_assert_eq(a->v.arr.n, 3);
    cr_assert_null(a->v.arr.items);
    cr_assert_eq(aarmd_gguf_arr_i64(a, 0), -1);
    cr_assert_eq(aarmd_gguf_arr_i64(a, 1), 2);
    cr_assert_eq(aarmd_gguf_arr_i64(a, 2), -32768);
    cr_assert_eq(aarmd_gguf_arr_f64(a, 2), -32768.0);
    cr_assert_eq(aarmd_gguf_get_arr(g, "af32", &a), AARMD_OK);
    cr_assert_eq(aarmd_gguf_arr_f64(a, 0), 0.25);
    cr_assert_eq(aarmd_gguf_arr_f64(a, 1), -1.0);
    cr_assert_eq(aarmd_gguf_arr_i64(a, 1), -1);
    cr_assert_eq(aarmd_gguf_get_arr(g, "au64", &a), AARMD_OK);
    cr_assert_eq(aarmd_gguf_arr_i64(a, 0), INT64_C(1) << 40);
    cr_assert_eq(aarmd_gguf_arr_i64(a, 1), INT64_MAX, "clamped");
    struct aarmd_gguf_value e;
    cr_assert_eq(aarmd_gguf_arr_get(a, 1, &e), AARMD_OK);
    cr_assert_eq(e.type, AARMD_GGUF_U64);
    cr_assert_eq(e.v.u64, UINT64_MAX);
    cr_assert_eq(aarmd_gguf_arr_get(a, 2, &e), AARMD_EINVAL, "out of range");

    /* string arrays */
    cr_assert_eq(aarmd_gguf_get_arr(g, "astr", &a), AARMD_OK);
    cr_assert_eq(a->v.arr.items[0].v.str.len, 0);
    cr_assert_eq(a->v.arr.items[1].v.str.len, 3);
    cr_assert(!memcmp(a->v.arr.items[1].v.str.data, "two", 3));
    cr_assert_eq(aarmd_gguf_arr_f64(a, 0), 0.0, "not a scalar array");
    cr_assert_eq(aarmd_gguf_get_arr(g, "aempty", &a), AARMD_OK);
    cr_assert_eq(a->v.arr.n, 0);
    cr_assert_eq(aarmd_gguf_arr_get(a, 0, &e), AARMD_EINVAL);

    /* nested [[1, 2], [3]] */
    cr_assert_eq(aarmd_gguf_get_arr(g, "nested", &a), AARMD_OK);
    cr_assert_eq(a->v.arr.n, 2);
    cr_assert_eq(a->v.arr.items[0].v.arr.n, 2);
    cr_assert_eq(aarmd_gguf_arr_i64(&a->v.arr.items[0], 1), 2);
    cr_assert_eq(aarmd_gguf_arr_get(a, 1, &e), AARMD_OK);
    cr_assert_eq(e.type, AARMD_GGUF_ARRAY);
    cr_assert_eq(e.v.arr.n, 1);
    cr_assert_eq(aarmd_gguf_arr_i64(&e, 0), 3);

    /* kv order is file order; names of types */
    cr_assert_eq(aarmd_gguf_kv_at(g, 0)->key.len, 2);
    cr_assert(!memcmp(aarmd_gguf_kv_at(g, 18)->key.data, "aempty", 6));
    cr_assert_str_eq(aarmd_gguf_vtype_name(AARMD_GGUF_F64), "f64");
    cr_assert_str_eq(aarmd_gguf_vtype_name(AARMD_GGUF_ARRAY), "array");
    cr_assert_str_eq(aarmd_gguf_vtype_name(13), "?");
    aarmd_gguf_free(g);
    free(w.p);
}

Test(gguf_ok, custom_alignment_places_data)
{
    struct wb w = {0};
    int64_t ne[1] = {32};
    wb_header(&w, 3, 2, 1);
    wb_kv_u32(&w, "general.alignment", 256);
    wb_tensor(&w, "a", 1, ne, AARMD_TYPE_Q8_0, 0, NULL);
    wb_tensor(&w, "b", 1, ne, AARMD_TYPE_F32, 256, NULL);
    wb_pad(&w, 256);
    size_t data = w.n;
    for (int i = 0; i < 256 + 128; i++)
        wb_u8(&w, (uint8_t)i);
    struct aarmd_gguf *g = expect_ok(&w);
    cr_assert_eq(aarmd_gguf_alignment(g), 256);
    cr_assert_eq(aarmd_gguf_data_offset(g), data);
    const struct aarmd_gguf_tensor *b = aarmd_gguf_find_tensor(g, "b");
    cr_assert_eq(b->nbytes, 128);
    cr_assert_eq(b->data, w.p + data + 256);
    cr_assert_eq(((const uint8_t *)b->data)[1], 1);
    cr_assert_eq(aarmd_gguf_find_tensor(g, "a")->nbytes, 34);
    aarmd_gguf_free(g);
    free(w.p);
}

Test(gguf_ok, many_kvs_and_tensors_index)
{
    /* enough entries to exercise hash collisions and growth */
    enum { N = 2000 };
    struct wb w = {0};
    int64_t ne[1] = {8};
    wb_header(&w, 3, N, N);
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "k.%d", i);
        wb_kv_u32(&w, name, (uint32_t)i * 3);
    }
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "t.%d", i);
        wb_tensor(&w, name, 1, ne, AARMD_TYPE_F32, (uint64_t)i * 32, NULL);
    }
    wb_pad(&w, 32);
    wb_zeros(&w, N * 32);
    struct aarmd_gguf *g = expect_ok(&w);
    for (int i = 0; i < N; i++) {
        uint32_t v;
        snprintf(name, sizeof name, "k.%d", i);
        cr_assert_eq(aarmd_gguf_get_u32(g, name, &v), AARMD_OK, "%s", name);
        cr_assert_eq(v, (uint32_t)i * 3);
        snprintf(name, sizeof name, "t.%d", i);
        cr_assert_eq(aarmd_gguf_find_tensor(g, name), aarmd_gguf_tensor_at(g, (uint64_t)i));
    }
    cr_assert_null(aarmd_gguf_find(g, "k.2000"));
    aarmd_gguf_free(g);
    free(w.p);
}

/* ---- fuzz corpus replay ------------------------------------------------------------------------ */

static void walk(const struct aarmd_gguf *g)
{
    cr_assert_null(aarmd_gguf_find(g, ""), "empty keys are refused");
    for (uint64_t i = 0; i < aarmd_gguf_n_kv(g); i++) {
        const struct aarmd_gguf_kv *kv = aarmd_gguf_kv_at(g, i);
        const struct aarmd_gguf_value *v = &kv->value;
        if (v->type == AARMD_GGUF_ARRAY)
            for (uint64_t j = 0; j < v->v.arr.n && j < 64; j++) {
                struct aarmd_gguf_value e;
                (void)aarmd_gguf_arr_get(v, j, &e);
                (void)aarmd_gguf_arr_f64(v, j);
            }
    }
    for (uint64_t i = 0; i < aarmd_gguf_n_tensors(g); i++) {
        const struct aarmd_gguf_tensor *t = aarmd_gguf_tensor_at(g, i);
        cr_assert_eq(aarmd_gguf_find_tensor(g, t->name), t);
    }
}

Test(gguf_fuzz, corpus_replays)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/../fuzz/corpus", data_dir());
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
    int n = 0, ok = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f, "%s", path);
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc((size_t)size + 1);
        cr_assert_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
        fclose(f);
        struct aarmd_gguf *g = NULL;
        int rc = aarmd_gguf_open_mem(buf, (size_t)size, de->d_name, &g, err, sizeof err);
        if (rc == AARMD_OK) {
            walk(g);
            aarmd_gguf_free(g);
            ok++;
        } else {
            cr_assert_eq(rc, AARMD_EINVAL, "%s: rc %d: %s", de->d_name, rc, err);
            cr_assert(!strncmp(err, de->d_name, strlen(de->d_name)), "%s", err);
            cr_assert(strstr(err, ": offset "), "%s", err);
        }
        free(buf);
        n++;
    }
    closedir(d);
    cr_assert_geq(n, 10, "corpus has only %d files", n);
    cr_assert_geq(ok, 3, "no valid seeds in the corpus (%d of %d)", ok, n);
}
