/*
 * test_gguf_write.c — core/gguf_write.c (writer -> reader round trips of every
 * value type, tensor layout, errors) and core/quant_write.c (f16/bf16
 * conversions; quantize -> dequantize within each format's bound). The test's
 * own dequantizers follow the layouts documented in quant_write.h and are
 * first checked against tests/data/quant (blocks dequantized by gguf-py).
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml_type.h"
#include "gguf.h"
#include "gguf_write.h"
#include "quant_write.h"

static char err[512];

static struct aarmd_gguf *reopen(struct aarmd_gguf_writer *w, void **buf)
{
    size_t size;
    cr_assert_eq(aarmd_gguf_writer_to_mem(w, buf, &size, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_gguf *g = NULL;
    cr_assert_eq(aarmd_gguf_open_mem(*buf, size, "mem", &g, err, sizeof err), AARMD_OK, "%s", err);
    return g;
}

/* ---- metadata ----------------------------------------------------------- */

Test(gguf_write, every_scalar_type_round_trips)
{
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    cr_assert_not_null(w);
    cr_assert_eq(aarmd_gguf_writer_set_u8(w, "t.u8", 250), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_i8(w, "t.i8", -120), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_u16(w, "t.u16", 65000), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_i16(w, "t.i16", -32000), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_u32(w, "t.u32", 4000000000u), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_i32(w, "t.i32", -2000000000), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_u64(w, "t.u64", 18000000000000000000ull), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_i64(w, "t.i64", -9000000000000000000ll), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_f32(w, "t.f32", 3.25f), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_f64(w, "t.f64", -1.0e300), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_bool(w, "t.bool", true), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_str(w, "t.str", "héllo"), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_strn(w, "t.strn", "a\0b", 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_str(w, "t.empty", ""), AARMD_OK);

    void *buf;
    struct aarmd_gguf *g = reopen(w, &buf);
    cr_assert_eq(aarmd_gguf_version(g), 3);
    cr_assert_eq(aarmd_gguf_n_kv(g), 14);
    const struct {
        const char *key;
        uint32_t type;
    } types[] = {
        {"t.u8", AARMD_GGUF_U8}, {"t.i8", AARMD_GGUF_I8}, {"t.u16", AARMD_GGUF_U16},
        {"t.i16", AARMD_GGUF_I16}, {"t.u32", AARMD_GGUF_U32}, {"t.i32", AARMD_GGUF_I32},
        {"t.u64", AARMD_GGUF_U64}, {"t.i64", AARMD_GGUF_I64}, {"t.f32", AARMD_GGUF_F32},
        {"t.f64", AARMD_GGUF_F64}, {"t.bool", AARMD_GGUF_BOOL}, {"t.str", AARMD_GGUF_STRING},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const struct aarmd_gguf_value *v = aarmd_gguf_find(g, types[i].key);
        cr_assert_not_null(v, "%s", types[i].key);
        cr_expect_eq(v->type, types[i].type, "%s", types[i].key);
    }
    cr_expect_eq(aarmd_gguf_find(g, "t.u8")->v.u64, 250);
    cr_expect_eq(aarmd_gguf_find(g, "t.i8")->v.i64, -120);
    cr_expect_eq(aarmd_gguf_find(g, "t.u16")->v.u64, 65000);
    cr_expect_eq(aarmd_gguf_find(g, "t.i16")->v.i64, -32000);
    cr_expect_eq(aarmd_gguf_find(g, "t.u32")->v.u64, 4000000000u);
    cr_expect_eq(aarmd_gguf_find(g, "t.i32")->v.i64, -2000000000);
    cr_expect_eq(aarmd_gguf_find(g, "t.u64")->v.u64, 18000000000000000000ull);
    cr_expect_eq(aarmd_gguf_find(g, "t.i64")->v.i64, -9000000000000000000ll);
    cr_expect_eq(aarmd_gguf_find(g, "t.f32")->v.f64, 3.25);
    cr_expect_eq(aarmd_gguf_find(g, "t.f64")->v.f64, -1.0e300);
    cr_expect_eq(aarmd_gguf_find(g, "t.bool")->v.u64, 1);
    struct aarmd_gguf_str s;
    cr_assert_eq(aarmd_gguf_get_str(g, "t.str", &s), AARMD_OK);
    cr_expect_eq(s.len, strlen("héllo"));
    cr_expect(!memcmp(s.data, "héllo", s.len));
    cr_assert_eq(aarmd_gguf_get_str(g, "t.strn", &s), AARMD_OK);
    cr_expect_eq(s.len, 3);
    cr_expect(!memcmp(s.data, "a\0b", 3));
    cr_assert_eq(aarmd_gguf_get_str(g, "t.empty", &s), AARMD_OK);
    cr_expect_eq(s.len, 0);
    aarmd_gguf_free(g);
    free(buf);
    aarmd_gguf_writer_free(w);
}

Test(gguf_write, every_array_type_round_trips)
{
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    const uint8_t u8[] = {0, 1, 255};
    const int8_t i8[] = {-128, 0, 127};
    const uint16_t u16[] = {0, 65535, 7};
    const int16_t i16[] = {-32768, 32767, -1};
    const uint32_t u32[] = {0, 4294967295u, 12345};
    const int32_t i32[] = {INT32_MIN, INT32_MAX, -7};
    const uint64_t u64[] = {0, UINT64_MAX, 1ull << 40};
    const int64_t i64[] = {INT64_MIN, INT64_MAX, -3};
    const float f32[] = {-0.5f, 1e30f, 0.0f};
    const double f64[] = {-0.25, 1e300, 5e-324};
    const bool bl[] = {true, false, true};
    const char *strs[] = {"alpha", "", "ünïcode"};
    cr_assert_eq(aarmd_gguf_writer_set_arr(w, "a.u8", AARMD_GGUF_U8, u8, 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_arr(w, "a.i8", AARMD_GGUF_I8, i8, 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_arr(w, "a.u16", AARMD_GGUF_U16, u16, 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_arr(w, "a.i16", AARMD_GGUF_I16, i16, 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_arr(w, "a.u32", AARMD_GGUF_U32, u32, 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_arr(w, "a.i32", AARMD_GGUF_I32, i32, 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_arr(w, "a.u64", AARMD_GGUF_U64, u64, 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_arr(w, "a.i64", AARMD_GGUF_I64, i64, 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_arr(w, "a.f32", AARMD_GGUF_F32, f32, 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_arr(w, "a.f64", AARMD_GGUF_F64, f64, 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_arr(w, "a.bool", AARMD_GGUF_BOOL, bl, 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_str_arr(w, "a.str", strs, 3), AARMD_OK);
    cr_assert_eq(aarmd_gguf_writer_set_arr(w, "a.none", AARMD_GGUF_U32, NULL, 0), AARMD_OK);

    void *buf;
    struct aarmd_gguf *g = reopen(w, &buf);
    const struct aarmd_gguf_value *a;
#define CHECK_INT(key, vals)                                                          \
    do {                                                                             \
        cr_assert_eq(aarmd_gguf_get_arr(g, key, &a), AARMD_OK, key);                 \
        cr_assert_eq(a->v.arr.n, 3, key);                                            \
        for (uint64_t i = 0; i < 3; i++) {                                           \
            struct aarmd_gguf_value e;                                               \
            cr_assert_eq(aarmd_gguf_arr_get(a, i, &e), AARMD_OK);                    \
            if (e.type == AARMD_GGUF_U64)                                            \
                cr_expect_eq(e.v.u64, (uint64_t)(vals)[i], "%s[%d]", key, (int)i);    \
            else                                                                     \
                cr_expect_eq(aarmd_gguf_arr_i64(a, i), (int64_t)(vals)[i], "%s[%d]", key, (int)i); \
        }                                                                            \
    } while (0)
    CHECK_INT("a.u8", u8);
    CHECK_INT("a.i8", i8);
    CHECK_INT("a.u16", u16);
    CHECK_INT("a.i16", i16);
    CHECK_INT("a.u32", u32);
    CHECK_INT("a.i32", i32);
    CHECK_INT("a.u64", u64);
    CHECK_INT("a.i64", i64);
    CHECK_INT("a.bool", bl);
#undef CHECK_INT
    cr_assert_eq(aarmd_gguf_get_arr(g, "a.f32", &a), AARMD_OK);
    cr_expect_eq(a->v.arr.elem_type, AARMD_GGUF_F32);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(aarmd_gguf_arr_f64(a, (uint64_t)i), (double)f32[i]);
    cr_assert_eq(aarmd_gguf_get_arr(g, "a.f64", &a), AARMD_OK);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(aarmd_gguf_arr_f64(a, (uint64_t)i), f64[i]);
    cr_assert_eq(aarmd_gguf_get_arr(g, "a.str", &a), AARMD_OK);
    cr_assert_eq(a->v.arr.elem_type, AARMD_GGUF_STRING);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(a->v.arr.items[i].v.str.len, strlen(strs[i]));
        cr_expect(!memcmp(a->v.arr.items[i].v.str.data, strs[i], strlen(strs[i])));
    }
    cr_assert_eq(aarmd_gguf_get_arr(g, "a.none", &a), AARMD_OK);
    cr_expect_eq(a->v.arr.n, 0);
    aarmd_gguf_free(g);
    free(buf);
    aarmd_gguf_writer_free(w);
}

/* Deep equality of two parsed values. */
static bool value_eq(const struct aarmd_gguf_value *a, const struct aarmd_gguf_value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case AARMD_GGUF_STRING:
        return a->v.str.len == b->v.str.len && !memcmp(a->v.str.data, b->v.str.data, a->v.str.len);
    case AARMD_GGUF_ARRAY:
        if (a->v.arr.elem_type != b->v.arr.elem_type || a->v.arr.n != b->v.arr.n)
            return false;
        for (uint64_t i = 0; i < a->v.arr.n; i++) {
            struct aarmd_gguf_value x, y;
            if (aarmd_gguf_arr_get(a, i, &x) || aarmd_gguf_arr_get(b, i, &y) || !value_eq(&x, &y))
                return false;
        }
        return true;
    case AARMD_GGUF_F32:
    case AARMD_GGUF_F64:
        return a->v.f64 == b->v.f64 || (isnan(a->v.f64) && isnan(b->v.f64));
    case AARMD_GGUF_I8: case AARMD_GGUF_I16: case AARMD_GGUF_I32: case AARMD_GGUF_I64:
        return a->v.i64 == b->v.i64;
    default:
        return a->v.u64 == b->v.u64;
    }
}

Test(gguf_write, set_value_copies_a_whole_vocab_file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab/ggml-vocab-llama-spm.gguf", getenv("AARMD_TEST_DATA"));
    struct aarmd_gguf *src = NULL;
    cr_assert_eq(aarmd_gguf_open(path, &src, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    char key[256];
    for (uint64_t i = 0; i < aarmd_gguf_n_kv(src); i++) {
        const struct aarmd_gguf_kv *kv = aarmd_gguf_kv_at(src, i);
        snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.data);
        cr_assert_eq(aarmd_gguf_writer_set_value(w, key, &kv->value), AARMD_OK, "%s: %s", key,
                     aarmd_gguf_writer_error(w));
    }
    void *buf;
    struct aarmd_gguf *g = reopen(w, &buf);
    cr_assert_eq(aarmd_gguf_n_kv(g), aarmd_gguf_n_kv(src));
    for (uint64_t i = 0; i < aarmd_gguf_n_kv(src); i++) {
        const struct aarmd_gguf_kv *a = aarmd_gguf_kv_at(src, i), *b = aarmd_gguf_kv_at(g, i);
        cr_assert_eq(a->key.len, b->key.len);
        cr_assert(!memcmp(a->key.data, b->key.data, a->key.len));
        cr_expect(value_eq(&a->value, &b->value), "value of %.*s differs", (int)a->key.len, a->key.data);
    }
    const struct aarmd_gguf_value *toks;
    cr_assert_eq(aarmd_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks), AARMD_OK);
    cr_expect_eq(toks->v.arr.n, 32000);
    aarmd_gguf_free(g);
    free(buf);
    aarmd_gguf_writer_free(w);
    aarmd_gguf_free(src);
}

Test(gguf_write, nested_arrays_round_trip)
{
    const uint8_t raw16[] = {1, 0, 2, 0, 0xff, 0xff};   /* u16 LE: 1, 2, 65535 */
    struct aarmd_gguf_value strs[2] = {
        {.type = AARMD_GGUF_STRING, .v.str = {"x", 1}},
        {.type = AARMD_GGUF_STRING, .v.str = {"yz", 2}},
    };
    struct aarmd_gguf_value inner[2] = {
        {.type = AARMD_GGUF_ARRAY, .v.arr = {.elem_type = AARMD_GGUF_U16, .n = 3, .raw = raw16}},
        {.type = AARMD_GGUF_ARRAY, .v.arr = {.elem_type = AARMD_GGUF_STRING, .n = 2, .items = strs}},
    };
    struct aarmd_gguf_value outer = {
        .type = AARMD_GGUF_ARRAY, .v.arr = {.elem_type = AARMD_GGUF_ARRAY, .n = 2, .items = inner},
    };
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    cr_assert_eq(aarmd_gguf_writer_set_value(w, "nested", &outer), AARMD_OK, "%s", aarmd_gguf_writer_error(w));
    void *buf;
    struct aarmd_gguf *g = reopen(w, &buf);
    const struct aarmd_gguf_value *a;
    cr_assert_eq(aarmd_gguf_get_arr(g, "nested", &a), AARMD_OK);
    cr_assert_eq(a->v.arr.elem_type, AARMD_GGUF_ARRAY);
    cr_assert_eq(a->v.arr.n, 2);
    cr_expect(value_eq(a, &outer));
    cr_expect_eq(aarmd_gguf_arr_i64(&a->v.arr.items[0], 2), 65535);
    aarmd_gguf_free(g);
    free(buf);
    aarmd_gguf_writer_free(w);
}

Test(gguf_write, setting_a_key_again_replaces_it_in_place)
{
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    aarmd_gguf_writer_set_u32(w, "a", 1);
    aarmd_gguf_writer_set_str(w, "b", "x");
    aarmd_gguf_writer_set_str(w, "a", "now a string");
    void *buf;
    struct aarmd_gguf *g = reopen(w, &buf);
    cr_assert_eq(aarmd_gguf_n_kv(g), 2);
    cr_expect_eq(aarmd_gguf_kv_at(g, 0)->key.len, 1);
    cr_expect_eq(aarmd_gguf_kv_at(g, 0)->key.data[0], 'a');
    char s[32];
    cr_assert_eq(aarmd_gguf_get_cstr(g, "a", s, sizeof s), AARMD_OK);
    cr_expect_str_eq(s, "now a string");
    aarmd_gguf_free(g);
    free(buf);
    aarmd_gguf_writer_free(w);
}

/* ---- tensors ------------------------------------------------------------ */

struct align_case {
    uint32_t alignment;
};

ParameterizedTestParameters(gguf_write, tensors_are_aligned_and_intact)
{
    static struct align_case cases[] = {{0}, {32}, {64}, {4096}};
    return cr_make_param_array(struct align_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct align_case *c, gguf_write, tensors_are_aligned_and_intact)
{
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    if (c->alignment)
        cr_assert_eq(aarmd_gguf_writer_set_alignment(w, c->alignment), AARMD_OK);
    uint32_t align = c->alignment ? c->alignment : 32;
    /* odd sizes so padding matters: 1-D to 4-D, plain and block types */
    const struct {
        const char *name;
        uint32_t type, n_dims;
        int64_t ne[4];
    } specs[] = {
        {"a", AARMD_TYPE_F32, 1, {3, 1, 1, 1}},
        {"b", AARMD_TYPE_F16, 2, {5, 3, 1, 1}},
        {"c", AARMD_TYPE_Q8_0, 3, {32, 2, 3, 1}},
        {"d", AARMD_TYPE_I8, 4, {1, 2, 3, 5}},
        {"e", AARMD_TYPE_Q4_K, 2, {256, 3, 1, 1}},
    };
    const size_t n = sizeof specs / sizeof specs[0];
    uint8_t *payload[5];
    for (size_t i = 0; i < n; i++) {
        uint64_t nb;
        cr_assert(aarmd_type_nbytes(specs[i].type, specs[i].ne, specs[i].n_dims, &nb));
        payload[i] = malloc(nb);
        for (uint64_t j = 0; j < nb; j++)
            payload[i][j] = (uint8_t)(j * 31 + i * 7 + 1);
        cr_assert_eq(aarmd_gguf_writer_add_tensor(w, specs[i].name, specs[i].type, specs[i].n_dims, specs[i].ne,
                                                  payload[i], nb), AARMD_OK, "%s", aarmd_gguf_writer_error(w));
    }
    void *buf;
    struct aarmd_gguf *g = reopen(w, &buf);
    cr_assert_eq(aarmd_gguf_alignment(g), align);
    cr_assert_eq(aarmd_gguf_n_tensors(g), n);
    cr_expect_eq(aarmd_gguf_data_offset(g) % align, 0);
    for (size_t i = 0; i < n; i++) {
        const struct aarmd_gguf_tensor *t = aarmd_gguf_tensor_at(g, i);
        cr_expect_str_eq(t->name, specs[i].name);
        cr_expect_eq(t->type, specs[i].type);
        cr_expect_eq(t->n_dims, specs[i].n_dims);
        for (int d = 0; d < 4; d++)
            cr_expect_eq(t->ne[d], specs[i].ne[d], "%s ne[%d]", t->name, d);
        cr_expect_eq(t->offset % align, 0, "%s offset %llu", t->name, (unsigned long long)t->offset);
        cr_expect(!memcmp(t->data, payload[i], t->nbytes), "%s data differs", t->name);
        free(payload[i]);
    }
    aarmd_gguf_free(g);
    free(buf);
    aarmd_gguf_writer_free(w);
}

Test(gguf_write, writes_a_file)
{
    char path[] = "/tmp/aarmd_test_gguf_write_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    float x[4] = {1, 2, 3, 4};
    int64_t ne[1] = {4};
    aarmd_gguf_writer_set_str(w, "general.architecture", "llama");
    aarmd_gguf_writer_add_tensor(w, "x", AARMD_TYPE_F32, 1, ne, x, sizeof x);
    cr_assert_eq(aarmd_gguf_writer_write(w, path, err, sizeof err), AARMD_OK, "%s", err);
    struct aarmd_gguf *g = NULL;
    cr_assert_eq(aarmd_gguf_open(path, &g, err, sizeof err), AARMD_OK, "%s", err);
    cr_expect_eq(((const float *)aarmd_gguf_find_tensor(g, "x")->data)[3], 4.0f);
    aarmd_gguf_free(g);
    aarmd_gguf_writer_free(w);
    remove(path);
}

Test(gguf_write, errors_are_reported)
{
    struct aarmd_gguf_writer *w = aarmd_gguf_writer_new();
    float x[32] = {0};
    int64_t ne1[1] = {32}, ne_bad[1] = {33};
    cr_expect_str_eq(aarmd_gguf_writer_error(w), "");
    cr_expect_eq(aarmd_gguf_writer_set_alignment(w, 48), AARMD_EINVAL);
    cr_expect(strstr(aarmd_gguf_writer_error(w), "alignment 48 is not a power of two"),
              "%s", aarmd_gguf_writer_error(w));
    aarmd_gguf_writer_free(w);

    w = aarmd_gguf_writer_new();
    cr_expect_eq(aarmd_gguf_writer_add_tensor(w, "x", AARMD_TYPE_F32, 1, ne1, x, sizeof x), AARMD_OK);
    cr_expect_eq(aarmd_gguf_writer_add_tensor(w, "x", AARMD_TYPE_F32, 1, ne1, x, sizeof x), AARMD_EINVAL);
    cr_expect(strstr(aarmd_gguf_writer_error(w), "duplicate tensor x"), "%s", aarmd_gguf_writer_error(w));
    /* the first failure sticks and is what serializing reports */
    void *buf = NULL;
    size_t size;
    cr_expect_eq(aarmd_gguf_writer_to_mem(w, &buf, &size, err, sizeof err), AARMD_EINVAL);
    cr_expect(strstr(err, "duplicate tensor x"), "%s", err);
    cr_expect_null(buf);
    aarmd_gguf_writer_free(w);

    w = aarmd_gguf_writer_new();
    cr_expect_eq(aarmd_gguf_writer_add_tensor(w, "y", AARMD_TYPE_F32, 1, ne1, x, 12), AARMD_EINVAL);
    cr_expect(strstr(aarmd_gguf_writer_error(w), "tensor y: 12 bytes given, F32 needs 128"),
              "%s", aarmd_gguf_writer_error(w));
    aarmd_gguf_writer_free(w);

    w = aarmd_gguf_writer_new();
    cr_expect_eq(aarmd_gguf_writer_add_tensor(w, "z", AARMD_TYPE_Q8_0, 1, ne_bad, x, 34), AARMD_EINVAL);
    cr_expect(strstr(aarmd_gguf_writer_error(w), "tensor z: bad shape or type Q8_0"), "%s", aarmd_gguf_writer_error(w));
    aarmd_gguf_writer_free(w);

    w = aarmd_gguf_writer_new();
    cr_expect_eq(aarmd_gguf_writer_set_arr(w, "k", AARMD_GGUF_STRING, x, 1), AARMD_EINVAL);
    cr_expect(strstr(aarmd_gguf_writer_error(w), "key k: array element type string is not a scalar"),
              "%s", aarmd_gguf_writer_error(w));
    aarmd_gguf_writer_free(w);

    w = aarmd_gguf_writer_new();
    cr_expect_eq(aarmd_gguf_writer_set_u32(w, "", 1), AARMD_EINVAL);
    cr_expect(strstr(aarmd_gguf_writer_error(w), "empty key"), "%s", aarmd_gguf_writer_error(w));
    aarmd_gguf_writer_free(w);

    w = aarmd_gguf_writer_new();
    int64_t ne5[1] = {4};
    cr_expect_eq(aarmd_gguf_writer_add_tensor(w, "t", AARMD_TYPE_F32, 5, ne5, x, 16), AARMD_EINVAL);
    cr_expect(strstr(aarmd_gguf_writer_error(w), "n_dims 5 not in 1..4"), "%s", aarmd_gguf_writer_error(w));
    aarmd_gguf_writer_free(w);

    w = aarmd_gguf_writer_new();
    cr_expect_eq(aarmd_gguf_writer_write(w, "/nonexistent-dir/x.gguf", err, sizeof err), AARMD_EIO);
    cr_expect(strstr(err, "/nonexistent-dir/x.gguf.tmp"), "%s", err);
    aarmd_gguf_writer_free(w);
    aarmd_gguf_writer_free(NULL);
}

/* ---- f16 / bf16 --------------------------------------------------------- */

Test(quant_write, fp16_known_values)
{
    cr_expect_eq(aarmd_fp32_to_fp16(1.0f), 0x3C00);
    cr_expect_eq(aarmd_fp32_to_fp16(-2.0f), 0xC000);
    cr_expect_eq(aarmd_fp32_to_fp16(65504.0f), 0x7BFF);
    cr_expect_eq(aarmd_fp32_to_fp16(65520.0f), 0x7C00);            /* rounds to inf */
    cr_expect_eq(aarmd_fp32_to_fp16(ldexpf(1, -24)), 0x0001);      /* smallest subnormal */
    cr_expect_eq(aarmd_fp32_to_fp16(ldexpf(1, -25)), 0x0000);      /* tie to even: 0 */
    cr_expect_eq(aarmd_fp32_to_fp16(ldexpf(3, -25)), 0x0002);      /* tie to even: 2 */
    cr_expect_eq(aarmd_fp32_to_fp16(1.0f + ldexpf(1, -11)), 0x3C00); /* tie to even */
    cr_expect_eq(aarmd_fp32_to_fp16(1.0f + ldexpf(3, -11)), 0x3C02);
    cr_expect_eq(aarmd_fp32_to_fp16(INFINITY), 0x7C00);
    cr_expect_eq(aarmd_fp32_to_fp16(-0.0f), 0x8000);
    cr_expect(isnan(aarmd_fp16_to_fp32(aarmd_fp32_to_fp16(NAN))));
    cr_expect_eq(aarmd_fp16_to_fp32(0x3555), 0.333251953125f);
    cr_expect_eq(aarmd_fp32_to_bf16(1.0f), 0x3F80);
    cr_expect_eq(aarmd_fp32_to_bf16(1.0f + ldexpf(1, -8)), 0x3F80);  /* tie to even */
    cr_expect_eq(aarmd_fp32_to_bf16(1.0f + ldexpf(3, -8)), 0x3F82);
    cr_expect(isnan(aarmd_bf16_to_fp32(aarmd_fp32_to_bf16(NAN))));
}

Test(quant_write, every_half_and_bfloat_round_trips)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = aarmd_fp16_to_fp32((uint16_t)h);
        if (isnan(f))
            cr_assert(isnan(aarmd_fp16_to_fp32(aarmd_fp32_to_fp16(f))));
        else
            cr_assert_eq(aarmd_fp32_to_fp16(f), h, "half 0x%04x", h);
        float b = aarmd_bf16_to_fp32((uint16_t)h);
        if (isnan(b))
            cr_assert(isnan(aarmd_bf16_to_fp32(aarmd_fp32_to_bf16(b))));
        else
            cr_assert_eq(aarmd_fp32_to_bf16(b), h, "bf16 0x%04x", h);
    }
}

/* ---- the test's own dequantizers (layouts as in quant_write.h) ----------- */

static float rd_f16(const uint8_t *p)
{
    return aarmd_fp16_to_fp32((uint16_t)(p[0] | (p[1] << 8)));
}

static void dequant_block(uint32_t type, const uint8_t *b, float *y)
{
    switch (type) {
    case AARMD_TYPE_F16:
        y[0] = rd_f16(b);
        break;
    case AARMD_TYPE_BF16:
        y[0] = aarmd_bf16_to_fp32((uint16_t)(b[0] | (b[1] << 8)));
        break;
    case AARMD_TYPE_Q8_0:
        for (int i = 0; i < 32; i++)
            y[i] = rd_f16(b) * (float)(int8_t)b[2 + i];
        break;
    case AARMD_TYPE_Q4_0:
        for (int i = 0; i < 16; i++) {
            y[i] = rd_f16(b) * (float)((b[2 + i] & 0xF) - 8);
            y[i + 16] = rd_f16(b) * (float)((b[2 + i] >> 4) - 8);
        }
        break;
    case AARMD_TYPE_Q4_1:
        for (int i = 0; i < 16; i++) {
            y[i] = rd_f16(b) * (float)(b[4 + i] & 0xF) + rd_f16(b + 2);
            y[i + 16] = rd_f16(b) * (float)(b[4 + i] >> 4) + rd_f16(b + 2);
        }
        break;
    case AARMD_TYPE_Q5_0:
    case AARMD_TYPE_Q5_1: {
        bool one = type == AARMD_TYPE_Q5_1;
        const uint8_t *qhp = b + (one ? 4 : 2), *qs = qhp + 4;
        uint32_t qh = (uint32_t)qhp[0] | ((uint32_t)qhp[1] << 8) | ((uint32_t)qhp[2] << 16) | ((uint32_t)qhp[3] << 24);
        for (int i = 0; i < 16; i++) {
            int q0 = (qs[i] & 0xF) | (int)(((qh >> i) & 1) << 4);
            int q1 = (qs[i] >> 4) | (int)(((qh >> (i + 16)) & 1) << 4);
            y[i] = one ? rd_f16(b) * (float)q0 + rd_f16(b + 2) : rd_f16(b) * (float)(q0 - 16);
            y[i + 16] = one ? rd_f16(b) * (float)q1 + rd_f16(b + 2) : rd_f16(b) * (float)(q1 - 16);
        }
        break;
    }
    case AARMD_TYPE_Q4_K:
    case AARMD_TYPE_Q5_K: {
        bool five = type == AARMD_TYPE_Q5_K;
        float d = rd_f16(b), dmin = rd_f16(b + 2);
        const uint8_t *sc = b + 4, *qh = b + 16, *qs = b + 16 + (five ? 32 : 0);
        for (int j = 0; j < 8; j++) {
            int s, m;
            if (j < 4) {
                s = sc[j] & 63;
                m = sc[j + 4] & 63;
            } else {
                s = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
                m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
            }
            int p = j / 2;
            for (int l = 0; l < 32; l++) {
                int q = j % 2 ? qs[32 * p + l] >> 4 : qs[32 * p + l] & 0xF;
                if (five)
                    q |= ((qh[l] >> j) & 1) << 4;
                y[32 * j + l] = d * (float)s * (float)q - dmin * (float)m;
            }
        }
        break;
    }
    case AARMD_TYPE_Q6_K: {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        float d = rd_f16(b + 208);
        for (int h = 0; h < 2; h++) {
            const uint8_t *l8 = ql + 64 * h, *h8 = qh + 32 * h;
            float *yh = y + 128 * h;
            const int8_t *s = sc + 8 * h;
            for (int l = 0; l < 32; l++) {
                int q1 = (l8[l] & 0xF) | (((h8[l] >> 0) & 3) << 4);
                int q2 = (l8[l + 32] & 0xF) | (((h8[l] >> 2) & 3) << 4);
                int q3 = (l8[l] >> 4) | (((h8[l] >> 4) & 3) << 4);
                int q4 = (l8[l + 32] >> 4) | (((h8[l] >> 6) & 3) << 4);
                yh[l] = d * (float)s[l / 16] * (float)(q1 - 32);
                yh[l + 32] = d * (float)s[2 + l / 16] * (float)(q2 - 32);
                yh[l + 64] = d * (float)s[4 + l / 16] * (float)(q3 - 32);
                yh[l + 96] = d * (float)s[6 + l / 16] * (float)(q4 - 32);
            }
        }
        break;
    }
    default:
        cr_assert_fail("no dequantizer for %s", aarmd_type_name(type));
    }
}

static void *slurp(const char *name, size_t *size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/quant/%s", getenv("AARMD_TEST_DATA"), name);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc((size_t)n);
    cr_assert_eq(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return p;
}

struct qcase {
    uint32_t type;
    char file[8];
};

static struct qcase qcases[] = {
    {AARMD_TYPE_Q8_0, "q8_0"}, {AARMD_TYPE_Q4_0, "q4_0"}, {AARMD_TYPE_Q4_1, "q4_1"},
    {AARMD_TYPE_Q5_0, "q5_0"}, {AARMD_TYPE_Q5_1, "q5_1"}, {AARMD_TYPE_Q4_K, "q4_k"},
    {AARMD_TYPE_Q5_K, "q5_k"}, {AARMD_TYPE_Q6_K, "q6_k"}, {AARMD_TYPE_F16, "f16"},
    {AARMD_TYPE_BF16, "bf16"},
};

ParameterizedTestParameters(quant_write, test_dequantizer_matches_gguf_py)
{
    return cr_make_param_array(struct qcase, qcases, sizeof qcases / sizeof qcases[0]);
}

/* Guards the guard: the dequantizer below must agree with gguf-py's. */
ParameterizedTest(struct qcase *c, quant_write, test_dequantizer_matches_gguf_py)
{
    char name[32];
    size_t nb, nf;
    snprintf(name, sizeof name, "%s.blocks", c->file);
    uint8_t *blocks = slurp(name, &nb);
    snprintf(name, sizeof name, "%s.f32", c->file);
    float *want = slurp(name, &nf);
    const struct aarmd_type_info *ti = aarmd_type_info(c->type);
    size_t n_blocks = nb / ti->block_bytes;
    cr_assert_eq(nb % ti->block_bytes, 0);
    cr_assert_eq(nf, n_blocks * ti->block_elems * sizeof(float));
    float y[256];
    for (size_t i = 0; i < n_blocks; i++) {
        dequant_block(c->type, blocks + i * ti->block_bytes, y);
        for (uint32_t j = 0; j < ti->block_elems; j++) {
            float w = want[i * ti->block_elems + j];
            if (isnan(w) || isinf(w)) {
                cr_assert(isnan(y[j]) || y[j] == w, "%s block %zu elem %u", c->file, i, j);
                continue;
            }
            cr_assert(fabsf(y[j] - w) <= 1e-6f * fabsf(w) + 1e-30f, "%s block %zu elem %u: %g vs %g",
                      c->file, i, j, (double)y[j], (double)w);
        }
    }
    free(blocks);
    free(want);
}

/* ---- quantize -> dequantize within bounds -------------------------------- */

static uint64_t rng_state;

static float urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) + 0.5) / 16777216.0f;   /* (0, 1) */
}

static float nrand(void)
{
    return sqrtf(-2.0f * logf(urand())) * cosf(6.2831853f * urand());
}

enum dist { D_NORMAL, D_UNIFORM, D_OUTLIERS, D_POSITIVE, D_ZERO, D_CONST, D_COUNT };

static void fill(float *x, int n, int dist)
{
    for (int i = 0; i < n; i++) {
        switch (dist) {
        case D_NORMAL: x[i] = 0.02f * nrand(); break;
        case D_UNIFORM: x[i] = 2 * urand() - 1; break;
        case D_OUTLIERS: x[i] = 0.02f * nrand() * (i % 37 == 0 ? 50.0f : 1.0f); break;
        case D_POSITIVE: x[i] = 3.0f + urand(); break;
        case D_ZERO: x[i] = 0; break;
        default: x[i] = -0.75f; break;
        }
    }
}

/* Largest allowed |error| of element i, from the input alone (quant_write.h's scheme). */
static float bound(uint32_t type, const float *blk, int i)
{
    float amax = 0, mn = blk[0], mx = blk[0];
    int n = aarmd_type_info(type)->block_elems;
    for (int j = 0; j < n; j++) {
        amax = fmaxf(amax, fabsf(blk[j]));
        mn = fminf(mn, blk[j]);
        mx = fmaxf(mx, blk[j]);
    }
    const float slack = 1.01f, tiny = 1e-7f;
    switch (type) {
    case AARMD_TYPE_F16: return fabsf(blk[i]) * ldexpf(1, -11) + ldexpf(1, -25);
    case AARMD_TYPE_BF16: return fabsf(blk[i]) * ldexpf(1, -8);
    case AARMD_TYPE_Q8_0: return slack * 0.5f * amax / 127 + tiny;
    case AARMD_TYPE_Q4_0: return slack * amax / 8 + tiny;      /* the side opposite the extreme clamps at +7 */
    case AARMD_TYPE_Q5_0: return slack * amax / 16 + tiny;
    case AARMD_TYPE_Q4_1: return slack * 0.5f * (mx - mn) / 15 + fabsf(mn) * ldexpf(1, -10) + tiny;
    case AARMD_TYPE_Q5_1: return slack * 0.5f * (mx - mn) / 31 + fabsf(mn) * ldexpf(1, -10) + tiny;
    case AARMD_TYPE_Q4_K:
    case AARMD_TYPE_Q5_K: {
        float top = type == AARMD_TYPE_Q4_K ? 15 : 31, R = 0, r = 0;
        for (int j = 0; j < 8; j++) {
            float a = 0, b = 0;
            for (int l = 0; l < 32; l++) {
                a = fminf(a, blk[32 * j + l]);
                b = fmaxf(b, blk[32 * j + l]);
            }
            R = fmaxf(R, b - a);
            if (j == i / 32)
                r = b - a;
        }
        /* half a step of the sub-block, plus the 6-bit rounding of scale and min */
        return slack * 0.5f * r / top + 2.2f * R / (top * 63) + tiny;
    }
    case AARMD_TYPE_Q6_K: {
        float sub = 0;
        for (int l = 0; l < 16; l++)
            sub = fmaxf(sub, fabsf(blk[(i / 16) * 16 + l]));
        return slack * 0.5f * sub / 31 + 0.6f * amax / (31 * 127) + tiny;
    }
    default: return 0;
    }
}

ParameterizedTestParameters(quant_write, quantize_then_dequantize_is_within_bound)
{
    return cr_make_param_array(struct qcase, qcases, sizeof qcases / sizeof qcases[0]);
}

ParameterizedTest(struct qcase *c, quant_write, quantize_then_dequantize_is_within_bound)
{
    const struct aarmd_type_info *ti = aarmd_type_info(c->type);
    cr_assert(aarmd_quant_can_write(c->type));
    enum { N = 4096 };
    static float x[N], y[256];
    static uint8_t q[N * 2];
    for (int dist = 0; dist < D_COUNT; dist++) {
        rng_state = 42 + (uint64_t)dist;
        fill(x, N, dist);
        cr_assert_eq(aarmd_quantize_row(c->type, x, q, N), AARMD_OK);
        double se = 0, sx = 0;
        for (int b = 0; b < N / (int)ti->block_elems; b++) {
            const float *xb = x + b * (int)ti->block_elems;
            dequant_block(c->type, q + (size_t)b * ti->block_bytes, y);
            for (int i = 0; i < (int)ti->block_elems; i++) {
                float e = fabsf(y[i] - xb[i]);
                cr_assert(e <= bound(c->type, xb, i), "%s dist %d block %d elem %d: x %g y %g err %g > %g",
                          ti->name, dist, b, i, (double)xb[i], (double)y[i], (double)e,
                          (double)bound(c->type, xb, i));
                se += (double)e * e;
                sx += (double)xb[i] * xb[i];
            }
        }
        if (dist == D_ZERO)
            cr_expect_eq(se, 0.0, "%s: zeros must stay exact", ti->name);
        if (dist == D_NORMAL) {
            /* typical relative RMS error: 4-bit ~0.1, 5-bit ~0.05, 6-bit ~0.03, 8-bit ~0.01 */
            double rel = sqrt(se / sx);
            double lim = c->type == AARMD_TYPE_Q8_0 ? 0.012 : c->type == AARMD_TYPE_Q6_K ? 0.04
                       : c->type == AARMD_TYPE_Q5_0 || c->type == AARMD_TYPE_Q5_1 || c->type == AARMD_TYPE_Q5_K ? 0.07
                       : c->type == AARMD_TYPE_F16 || c->type == AARMD_TYPE_BF16 ? 0.004 : 0.16;
            cr_expect(rel < lim, "%s: relative RMS error %g >= %g", ti->name, rel, lim);
        }
    }
}

Test(quant_write, bad_arguments)
{
    float x[33] = {0};
    uint8_t q[64];
    cr_expect_eq(aarmd_quantize_row(AARMD_TYPE_Q4_0, x, q, 33), AARMD_EINVAL);
    cr_expect_eq(aarmd_quantize_row(AARMD_TYPE_Q4_K, x, q, 32), AARMD_EINVAL);
    cr_expect_eq(aarmd_quantize_row(AARMD_TYPE_IQ2_XXS, x, q, 256), AARMD_EINVAL);
    cr_expect_eq(aarmd_quantize_row(AARMD_TYPE_Q8_0, NULL, q, 32), AARMD_EINVAL);
    cr_expect(!aarmd_quant_can_write(AARMD_TYPE_Q2_K));
    cr_expect(!aarmd_quant_can_write(12345));
}
