/*
 * cli_gguf_dump.c — `aarmd-cli gguf-dump FILE [--json]`: header, metadata and
 * tensor table of a GGUF file, as text or JSON. It only reads; no model logic.
 */
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ggml_type.h"
#include "gguf.h"

#define TEXT_ARRAY_ITEMS 8     /* array items shown in text mode */
#define JSON_ARRAY_ITEMS 64    /* array items kept in JSON mode */

static const char dump_help[] =
    "usage: aarmd-cli gguf-dump FILE [--json]\n"
    "\n"
    "Prints a GGUF file's version, alignment, metadata and tensor table\n"
    "(name, type, dims, offset in the data section, bytes). The file is fully\n"
    "validated first; a bad file prints \"FILE: offset N: reason\" on stderr and\n"
    "exits 1.\n"
    "\n"
    "Long arrays are abbreviated: text mode shows the first 8 items and the\n"
    "count; --json keeps the first 64 items of any longer array, always gives its\n"
    "length as \"n\" and sets \"truncated\": true when items were left out\n"
    "(a 150k-token vocab would otherwise dominate the output). Floats that JSON\n"
    "can't hold are written as the strings \"nan\", \"inf\", \"-inf\"; bytes that\n"
    "are not UTF-8 as U+FFFD in JSON and as \\xNN in text.\n"
    "\n"
    "JSON shape: {\"file\", \"version\", \"alignment\", \"file_size\", \"data_offset\",\n"
    "  \"metadata\": {KEY: {\"type\", \"value\"} | {\"type\": \"array\", \"elem_type\",\n"
    "  \"n\", \"truncated\", \"value\": [...]}} (nested arrays: the same object\n"
    "  without \"type\"), \"tensors\": [{\"name\", \"type\",\n"
    "  \"dims\", \"offset\", \"bytes\"}]}\n";

/* ---- text ---------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s[0..n), 0 when ill-formed
 * (overlong forms, surrogates and code points above U+10FFFF included). */
static size_t utf8_seq(const unsigned char *s, uint64_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Text mode: control bytes and ill-formed UTF-8 as \xNN (a file can't send
 * escape sequences to the terminal); quotes and backslashes escaped when
 * quoted. Returns the columns written, roughly, for padding. */
static size_t print_esc(FILE *f, const char *data, uint64_t len, uint64_t max, bool quoted)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t n = len < max ? len : max, i = 0;
    size_t cols = 0;
    if (quoted)
        cols += (size_t)(fputc('"', f) != EOF);
    while (i < n) {
        unsigned char ch = p[i];
        size_t l = utf8_seq(p + i, n - i);
        if (quoted && (ch == '"' || ch == '\\')) {
            fprintf(f, "\\%c", ch);
            cols += 2;
        } else if (ch == '\n') {
            fputs("\\n", f);
            cols += 2;
        } else if (l == 0 || ch < 0x20 || ch == 0x7f) {
            fprintf(f, "\\x%02x", ch);
            cols += 4;
        } else {
            fwrite(p + i, 1, l, f);
            i += l;
            cols++;
            continue;
        }
        i++;
    }
    if (quoted)
        cols += (size_t)(fputc('"', f) != EOF);
    if (n < len)
        fprintf(f, "...(%" PRIu64 " bytes)", len);
    return cols;
}

static void print_str(FILE *f, struct aarmd_gguf_str s, uint64_t max)
{
    print_esc(f, s.data, s.len, max, true);
}

static void print_value(FILE *f, const struct aarmd_gguf_value *v);

static void print_scalar(FILE *f, const struct aarmd_gguf_value *v)
{
    switch (v->type) {
    case AARMD_GGUF_U8: case AARMD_GGUF_U16: case AARMD_GGUF_U32: case AARMD_GGUF_U64:
        fprintf(f, "%" PRIu64, v->v.u64);
        break;
    case AARMD_GGUF_I8: case AARMD_GGUF_I16: case AARMD_GGUF_I32: case AARMD_GGUF_I64:
        fprintf(f, "%" PRId64, v->v.i64);
        break;
    case AARMD_GGUF_F32: case AARMD_GGUF_F64:
        fprintf(f, "%.9g", v->v.f64);
        break;
    case AARMD_GGUF_BOOL:
        fputs(v->v.u64 ? "true" : "false", f);
        break;
    case AARMD_GGUF_STRING:
        print_str(f, v->v.str, 200);
        break;
    default:
        fputs("?", f);
    }
}

static void print_array(FILE *f, const struct aarmd_gguf_value *v)
{
    uint64_t n = v->v.arr.n, show = n < TEXT_ARRAY_ITEMS ? n : TEXT_ARRAY_ITEMS;
    fputc('[', f);
    for (uint64_t i = 0; i < show; i++) {
        struct aarmd_gguf_value e;
        if (i)
            fputs(", ", f);
        if (aarmd_gguf_arr_get(v, i, &e) == 0)
            print_value(f, &e);
        else
            fputs("?", f);
    }
    if (show < n)
        fprintf(f, ", ... (%" PRIu64 " items)", n);
    fputc(']', f);
}

static void print_value(FILE *f, const struct aarmd_gguf_value *v)
{
    if (v->type == AARMD_GGUF_ARRAY)
        print_array(f, v);
    else
        print_scalar(f, v);
}

static void dims_text(const struct aarmd_gguf_tensor *t, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (uint32_t d = 0; d < t->n_dims && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, d ? " x " : "", t->ne[d]);
}

static void dump_text(const struct aarmd_gguf *g)
{
    printf("file: %s\nversion: %" PRIu32 "\nalignment: %" PRIu32 "\nfile size: %" PRIu64
           "\ndata offset: %" PRIu64 "\n", aarmd_gguf_path(g), aarmd_gguf_version(g), aarmd_gguf_alignment(g),
           aarmd_gguf_file_size(g), aarmd_gguf_data_offset(g));
    printf("\nmetadata (%" PRIu64 "):\n", aarmd_gguf_n_kv(g));
    for (uint64_t i = 0; i < aarmd_gguf_n_kv(g); i++) {
        const struct aarmd_gguf_kv *kv = aarmd_gguf_kv_at(g, i);
        const struct aarmd_gguf_value *v = &kv->value;
        fputs("  ", stdout);
        print_esc(stdout, kv->key.data, kv->key.len, 400, false);
        fputs(": ", stdout);
        if (v->type == AARMD_GGUF_ARRAY)
            printf("%s[%" PRIu64 "] ", aarmd_gguf_vtype_name(v->v.arr.elem_type), v->v.arr.n);
        else
            printf("%s ", aarmd_gguf_vtype_name(v->type));
        print_value(stdout, v);
        putchar('\n');
    }
    printf("\ntensors (%" PRIu64 "):\n", aarmd_gguf_n_tensors(g));
    printf("  %-40s %-8s %-24s %14s %14s\n", "name", "type", "dims", "offset", "bytes");
    for (uint64_t i = 0; i < aarmd_gguf_n_tensors(g); i++) {
        const struct aarmd_gguf_tensor *t = aarmd_gguf_tensor_at(g, i);
        char dims[128];
        dims_text(t, dims, sizeof dims);
        fputs("  ", stdout);
        size_t cols = print_esc(stdout, t->name, strlen(t->name), 400, false);
        printf("%*s %-8s %-24s %14" PRIu64 " %14" PRIu64 "\n", cols < 40 ? (int)(40 - cols) : 0, "",
               aarmd_type_name(t->type), dims,
               t->offset, t->nbytes);
    }
}

/* ---- JSON ---------------------------------------------------------------- */

/* JSON strings must be UTF-8: a malloc'd, NUL-terminated copy of s with
 * ill-formed bytes replaced by U+FFFD; *len gets its length. */
static char *utf8_clean(const char *s, uint64_t n, size_t *len)
{
    const unsigned char *p = (const unsigned char *)s;
    if (n > INT32_MAX / 3)
        n = INT32_MAX / 3;
    char *buf = malloc((size_t)n * 3 + 1);
    if (!buf)
        return NULL;
    size_t o = 0;
    for (uint64_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (l) {
            memcpy(buf + o, p + i, l);
            o += l;
            i += l;
        } else {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    buf[o] = '\0';
    *len = o;
    return buf;
}

static struct json_object *json_string(struct aarmd_gguf_str s)
{
    size_t len;
    char *c = utf8_clean(s.data, s.len, &len);
    if (!c)
        return NULL;
    struct json_object *j = json_object_new_string_len(c, (int)len);
    free(c);
    return j;
}

static struct json_object *json_value(const struct aarmd_gguf_value *v);

/* {"type"?, "elem_type", "n", "truncated", "value": [first JSON_ARRAY_ITEMS]} */
static struct json_object *json_array(const struct aarmd_gguf_value *v, bool with_type)
{
    struct json_object *o = json_object_new_object(), *a = json_object_new_array();
    uint64_t n = v->v.arr.n, keep = n < JSON_ARRAY_ITEMS ? n : JSON_ARRAY_ITEMS;
    for (uint64_t i = 0; i < keep; i++) {
        struct aarmd_gguf_value e;
        json_object_array_add(a, aarmd_gguf_arr_get(v, i, &e) ? NULL : json_value(&e));
    }
    if (with_type)
        json_object_object_add(o, "type", json_object_new_string("array"));
    json_object_object_add(o, "elem_type", json_object_new_string(aarmd_gguf_vtype_name(v->v.arr.elem_type)));
    json_object_object_add(o, "n", json_object_new_uint64(n));
    json_object_object_add(o, "truncated", json_object_new_boolean(keep < n));
    json_object_object_add(o, "value", a);
    return o;
}

static struct json_object *json_value(const struct aarmd_gguf_value *v)
{
    switch (v->type) {
    case AARMD_GGUF_U8: case AARMD_GGUF_U16: case AARMD_GGUF_U32: case AARMD_GGUF_U64:
        return json_object_new_uint64(v->v.u64);
    case AARMD_GGUF_I8: case AARMD_GGUF_I16: case AARMD_GGUF_I32: case AARMD_GGUF_I64:
        return json_object_new_int64(v->v.i64);
    case AARMD_GGUF_F32: case AARMD_GGUF_F64:
        /* JSON has no NaN or infinity: those become the strings "nan", "inf", "-inf" */
        if (isnan(v->v.f64))
            return json_object_new_string("nan");
        if (isinf(v->v.f64))
            return json_object_new_string(v->v.f64 > 0 ? "inf" : "-inf");
        return json_object_new_double(v->v.f64);
    case AARMD_GGUF_BOOL:
        return json_object_new_boolean(v->v.u64 != 0);
    case AARMD_GGUF_STRING:
        return json_string(v->v.str);
    case AARMD_GGUF_ARRAY:
        return json_array(v, false);
    default:
        return NULL;
    }
}

static struct json_object *json_kv(const struct aarmd_gguf_value *v)
{
    if (v->type == AARMD_GGUF_ARRAY)
        return json_array(v, true);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string(aarmd_gguf_vtype_name(v->type)));
    json_object_object_add(o, "value", json_value(v));
    return o;
}

static int dump_json(const struct aarmd_gguf *g)
{
    struct json_object *root = json_object_new_object(), *md = json_object_new_object(),
                       *ts = json_object_new_array();
    const char *path = aarmd_gguf_path(g);
    json_object_object_add(root, "file", json_string((struct aarmd_gguf_str){path, strlen(path)}));
    json_object_object_add(root, "version", json_object_new_int64(aarmd_gguf_version(g)));
    json_object_object_add(root, "alignment", json_object_new_int64(aarmd_gguf_alignment(g)));
    json_object_object_add(root, "file_size", json_object_new_uint64(aarmd_gguf_file_size(g)));
    json_object_object_add(root, "data_offset", json_object_new_uint64(aarmd_gguf_data_offset(g)));
    for (uint64_t i = 0; i < aarmd_gguf_n_kv(g); i++) {
        const struct aarmd_gguf_kv *kv = aarmd_gguf_kv_at(g, i);
        size_t n;
        char *key = utf8_clean(kv->key.data, kv->key.len, &n);
        if (key)
            json_object_object_add(md, key, json_kv(&kv->value));
        free(key);
    }
    json_object_object_add(root, "metadata", md);
    for (uint64_t i = 0; i < aarmd_gguf_n_tensors(g); i++) {
        const struct aarmd_gguf_tensor *t = aarmd_gguf_tensor_at(g, i);
        struct json_object *o = json_object_new_object(), *dims = json_object_new_array();
        json_object_object_add(o, "name", json_string((struct aarmd_gguf_str){t->name, strlen(t->name)}));
        json_object_object_add(o, "type", json_object_new_string(aarmd_type_name(t->type)));
        for (uint32_t d = 0; d < t->n_dims; d++)
            json_object_array_add(dims, json_object_new_int64(t->ne[d]));
        json_object_object_add(o, "dims", dims);
        json_object_object_add(o, "offset", json_object_new_uint64(t->offset));
        json_object_object_add(o, "bytes", json_object_new_uint64(t->nbytes));
        json_object_array_add(ts, o);
    }
    json_object_object_add(root, "tensors", ts);
    int ok = fputs(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE),
                   stdout) >= 0 && putchar('\n') != EOF;
    json_object_put(root);
    return ok ? 0 : 1;
}

/* ---- command --------------------------------------------------------------- */

int aarmd_cli_gguf_dump(int argc, char **argv)
{
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(dump_help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "gguf-dump: unknown option '%s'\n%s", argv[i], dump_help);
            return 1;
        } else if (path) {
            fprintf(stderr, "gguf-dump: more than one FILE ('%s' and '%s')\n", path, argv[i]);
            return 1;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        fprintf(stderr, "gguf-dump: missing FILE\n%s", dump_help);
        return 1;
    }
    struct aarmd_gguf *g = NULL;
    char err[512];
    if (aarmd_gguf_open(path, &g, err, sizeof err)) {
        fprintf(stderr, "gguf-dump: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (json)
        rc = dump_json(g);
    else
        dump_text(g);
    if (!json && (fflush(stdout) || ferror(stdout)))
        rc = 1;
    aarmd_gguf_free(g);
    if (rc)
        fprintf(stderr, "gguf-dump: write error\n");
    return rc;
}
