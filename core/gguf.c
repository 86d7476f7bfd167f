/*
 * gguf.c — GGUF v2/v3 parser and validator over a read-only map or buffer.
 * It checks every count against the bytes left before it allocates or reads;
 * it does not interpret architecture keys (model adapters do).
 */
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ggml_type.h"
#include "gguf.h"

#define GGUF_MAGIC 0x46554747u       /* "GGUF" read as little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_DEPTH 8              /* nested array levels */
#define GGUF_MAX_NAME 256             /* tensor name bytes (ggml uses 64) */

/* Smallest encodings, used to bound counts before allocating. */
#define SHOWN_CAP 300               /* buffer for shown(): 64 bytes as \xNN + "..." */
#define SHOWN(t) shown((t)->name, strlen((t)->name), pn, sizeof pn)

#define MIN_KV_BYTES 13u              /* u64 key len + u32 type + 1-byte value */
#define MIN_TENSOR_BYTES 32u          /* u64 name len + u32 n_dims + u64 ne + u32 type + u64 offset */

struct aarmd_gguf {
    char *path;
    const uint8_t *base;
    uint64_t size;
    bool mapped;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_start;

    uint64_t n_kv;
    struct aarmd_gguf_kv *kv;
    uint64_t n_tensors;
    struct aarmd_gguf_tensor *tensors;

    /* open-addressing hash tables of index+1 (0 = empty), capacity a power of two */
    uint64_t *kv_index;
    uint64_t kv_cap;
    uint64_t *tensor_index;
    uint64_t tensor_cap;
};

struct cursor {
    const uint8_t *base;
    uint64_t size;
    uint64_t off;
    const char *name;
    char *err;
    size_t errlen;
};

/* ---- little-endian reads (any alignment) -------------------------------- */

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (uint16_t)p[1] << 8); }
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static double f64_from_bits(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* ---- errors -------------------------------------------------------------- */

__attribute__((format(printf, 3, 4)))
static int fail_at(struct cursor *c, uint64_t off, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        int n = snprintf(c->err, c->errlen, "%s: offset %" PRIu64 ": ", c->name, off);
        if (n >= 0 && (size_t)n < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return AARMD_EINVAL;
}

__attribute__((format(printf, 4, 5)))
static int set_err(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* A name from the file as it may appear in a message: control bytes, quotes
 * and non-ASCII as \xNN, cut at 64 bytes, so a file can't inject terminal
 * escapes or break the one-line error. */
static const char *shown(const char *s, uint64_t n, char *buf, size_t cap)
{
    size_t o = 0;
    for (uint64_t i = 0; i < n && o + 8 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (i == 64) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", ch);
        else
            buf[o++] = (char)ch;
    }
    buf[o] = '\0';
    return buf;
}

/* ---- cursor reads ---------------------------------------------------------- */

static uint64_t left(const struct cursor *c) { return c->size - c->off; }

static int need(struct cursor *c, uint64_t n, const char *what)
{
    if (n > left(c))
        return fail_at(c, c->off, "truncated %s: need %" PRIu64 " bytes, %" PRIu64 " left (file size %" PRIu64 ")",
                       what, n, left(c), c->size);
    return AARMD_OK;
}

static int rd_u32(struct cursor *c, const char *what, uint32_t *out)
{
    int rc = need(c, 4, what);
    if (rc)
        return rc;
    *out = le32(c->base + c->off);
    c->off += 4;
    return AARMD_OK;
}

static int rd_u64(struct cursor *c, const char *what, uint64_t *out)
{
    int rc = need(c, 8, what);
    if (rc)
        return rc;
    *out = le64(c->base + c->off);
    c->off += 8;
    return AARMD_OK;
}

static int rd_str(struct cursor *c, const char *what, struct aarmd_gguf_str *out)
{
    uint64_t at = c->off, len;
    int rc = rd_u64(c, what, &len);
    if (rc)
        return rc;
    if (len > left(c))
        return fail_at(c, at, "%s length %" PRIu64 " exceeds file size %" PRIu64
                       " (%" PRIu64 " bytes left)", what, len, c->size, left(c));
    out->data = (const char *)c->base + c->off;
    out->len = len;
    c->off += len;
    return AARMD_OK;
}

/* ---- values ---------------------------------------------------------------- */

static uint64_t scalar_size(uint32_t t)
{
    switch (t) {
    case AARMD_GGUF_U8: case AARMD_GGUF_I8: case AARMD_GGUF_BOOL: return 1;
    case AARMD_GGUF_U16: case AARMD_GGUF_I16: return 2;
    case AARMD_GGUF_U32: case AARMD_GGUF_I32: case AARMD_GGUF_F32: return 4;
    case AARMD_GGUF_U64: case AARMD_GGUF_I64: case AARMD_GGUF_F64: return 8;
    default: return 0;
    }
}

static void value_fini(struct aarmd_gguf_value *v)
{
    if (v->type != AARMD_GGUF_ARRAY || !v->v.arr.items)
        return;
    if (v->v.arr.elem_type == AARMD_GGUF_ARRAY)
        for (uint64_t i = 0; i < v->v.arr.n; i++)
            value_fini(&v->v.arr.items[i]);
    free(v->v.arr.items);
    v->v.arr.items = NULL;
}

static int rd_value(struct cursor *c, uint32_t type, uint64_t type_off, int depth,
                    struct aarmd_gguf_value *v);

/* Decodes one scalar of type t at p into v (bounds already checked). */
static int scalar_at(struct cursor *c, uint64_t at, uint32_t t, struct aarmd_gguf_value *v)
{
    const uint8_t *p = c->base + at;
    v->type = t;
    switch (t) {
    case AARMD_GGUF_U8: v->v.u64 = p[0]; break;
    case AARMD_GGUF_I8: v->v.i64 = (int8_t)p[0]; break;
    case AARMD_GGUF_U16: v->v.u64 = le16(p); break;
    case AARMD_GGUF_I16: v->v.i64 = (int16_t)le16(p); break;
    case AARMD_GGUF_U32: v->v.u64 = le32(p); break;
    case AARMD_GGUF_I32: v->v.i64 = (int32_t)le32(p); break;
    case AARMD_GGUF_U64: v->v.u64 = le64(p); break;
    case AARMD_GGUF_I64: v->v.i64 = (int64_t)le64(p); break;
    case AARMD_GGUF_F32: v->v.f64 = f32_from_bits(le32(p)); break;
    case AARMD_GGUF_F64: v->v.f64 = f64_from_bits(le64(p)); break;
    case AARMD_GGUF_BOOL:
        if (p[0] > 1)
            return fail_at(c, at, "bool value %u is not 0 or 1", p[0]);
        v->v.u64 = p[0];
        break;
    default:
        return fail_at(c, at, "internal: not a scalar type %" PRIu32, t);
    }
    return AARMD_OK;
}

static int rd_array(struct cursor *c, int depth, struct aarmd_gguf_value *v)
{
    uint64_t at = c->off, n;
    uint32_t et;
    int rc;

    if (depth > GGUF_MAX_DEPTH)
        return fail_at(c, at, "arrays nested deeper than %d levels", GGUF_MAX_DEPTH);
    if ((rc = rd_u32(c, "array element type", &et)))
        return rc;
    uint64_t n_off = c->off;
    if ((rc = rd_u64(c, "array length", &n)))
        return rc;
    v->type = AARMD_GGUF_ARRAY;
    v->v.arr.elem_type = et;
    v->v.arr.n = n;
    v->v.arr.raw = c->base + c->off;
    v->v.arr.items = NULL;

    uint64_t es = scalar_size(et);
    if (es) {
        if (n > left(c) / es)
            return fail_at(c, n_off, "array of %" PRIu64 " %s exceeds file size %" PRIu64
                           " (%" PRIu64 " bytes left)", n, aarmd_gguf_vtype_name(et), c->size, left(c));
        if (et == AARMD_GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (c->base[c->off + i] > 1)
                    return fail_at(c, c->off + i, "bool value %u is not 0 or 1", c->base[c->off + i]);
        c->off += n * es;
        return AARMD_OK;
    }
    if (et != AARMD_GGUF_STRING && et != AARMD_GGUF_ARRAY)
        return fail_at(c, at, "unknown array element type %" PRIu32, et);
    /* each string takes at least 8 bytes, each nested array 12 */
    uint64_t min = et == AARMD_GGUF_STRING ? 8 : 12;
    if (n > left(c) / min)
        return fail_at(c, n_off, "array of %" PRIu64 " %s exceeds file size %" PRIu64
                       " (%" PRIu64 " bytes left)", n, aarmd_gguf_vtype_name(et), c->size, left(c));
    if (n == 0)
        return AARMD_OK;
    if (n > SIZE_MAX / sizeof *v->v.arr.items)
        return fail_at(c, n_off, "array of %" PRIu64 " items is too large", n);
    struct aarmd_gguf_value *items = calloc((size_t)n, sizeof *items);
    if (!items)
        return set_err(c->err, c->errlen, AARMD_ENOMEM, "%s: offset %" PRIu64 ": out of memory for %" PRIu64
                       " array items", c->name, n_off, n);
    v->v.arr.items = items;
    if (et == AARMD_GGUF_STRING) {
        for (uint64_t i = 0; i < n; i++) {
            items[i].type = AARMD_GGUF_STRING;
            if ((rc = rd_str(c, "string", &items[i].v.str)))
                return rc;     /* caller's value_fini frees items */
        }
        return AARMD_OK;
    }
    for (uint64_t i = 0; i < n; i++) {
        items[i].type = AARMD_GGUF_ARRAY;   /* so value_fini is safe on partial arrays */
        if ((rc = rd_array(c, depth + 1, &items[i])))
            return rc;
    }
    return AARMD_OK;
}

static int rd_value(struct cursor *c, uint32_t type, uint64_t type_off, int depth,
                    struct aarmd_gguf_value *v)
{
    uint64_t es = scalar_size(type);
    int rc;
    if (es) {
        uint64_t at = c->off;
        if ((rc = need(c, es, aarmd_gguf_vtype_name(type))))
            return rc;
        c->off += es;
        return scalar_at(c, at, type, v);
    }
    if (type == AARMD_GGUF_STRING) {
        v->type = AARMD_GGUF_STRING;
        return rd_str(c, "string", &v->v.str);
    }
    if (type == AARMD_GGUF_ARRAY)
        return rd_array(c, depth, v);
    return fail_at(c, type_off, "unknown value type %" PRIu32, type);
}

/* ---- hash index ------------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, uint64_t n)
{
    uint64_t h = 1469598103934665603ull;              /* FNV-1a */
    for (uint64_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t *index_new(uint64_t n, uint64_t *cap)
{
    uint64_t c = 16;
    while (c < 2 * n)
        c *= 2;
    *cap = c;
    return calloc((size_t)c, sizeof(uint64_t));
}

static struct aarmd_gguf_str kv_key(const struct aarmd_gguf *g, uint64_t i) { return g->kv[i].key; }
static struct aarmd_gguf_str tensor_key(const struct aarmd_gguf *g, uint64_t i)
{
    return (struct aarmd_gguf_str){g->tensors[i].name, strlen(g->tensors[i].name)};
}

/* Finds `key` in an index; returns the slot (empty or matching). */
static uint64_t index_slot(const struct aarmd_gguf *g, const uint64_t *idx, uint64_t cap,
                           struct aarmd_gguf_str (*key_of)(const struct aarmd_gguf *, uint64_t),
                           const char *key, uint64_t len)
{
    uint64_t s = hash_bytes(key, len) & (cap - 1);
    while (idx[s]) {
        struct aarmd_gguf_str k = key_of(g, idx[s] - 1);
        if (k.len == len && !memcmp(k.data, key, (size_t)len))
            return s;
        s = (s + 1) & (cap - 1);
    }
    return s;
}

/* ---- header, kv, tensor infos ------------------------------------------------ */

static int parse_kvs(struct cursor *c, struct aarmd_gguf *g)
{
    char pn[SHOWN_CAP];
    int rc;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        struct aarmd_gguf_kv *kv = &g->kv[i];
        uint64_t key_off = c->off;
        uint32_t type;
        if ((rc = rd_str(c, "key", &kv->key)))
            return rc;
        if (kv->key.len == 0)
            return fail_at(c, key_off, "empty key (kv %" PRIu64 ")", i);
        uint64_t s = index_slot(g, g->kv_index, g->kv_cap, kv_key, kv->key.data, kv->key.len);
        if (g->kv_index[s])
            return fail_at(c, key_off, "duplicate key \"%s\"", shown(kv->key.data, kv->key.len, pn, sizeof pn));
        uint64_t type_off = c->off;
        if ((rc = rd_u32(c, "value type", &type)))
            return rc;
        if ((rc = rd_value(c, type, type_off, 1, &kv->value)))
            return rc;        /* aarmd_gguf_free releases partial arrays */
        g->kv_index[s] = i + 1;

        if (kv->key.len == 17 && !memcmp(kv->key.data, "general.alignment", 17)) {
            if (type != AARMD_GGUF_U32)
                return fail_at(c, type_off, "general.alignment has type %s, expected u32",
                               aarmd_gguf_vtype_name(type));
            uint64_t a = kv->value.v.u64;
            if (a == 0 || (a & (a - 1)))
                return fail_at(c, type_off + 4, "general.alignment %" PRIu64 " is not a power of two", a);
            g->alignment = (uint32_t)a;
        }
    }
    return AARMD_OK;
}

static int parse_tensors(struct cursor *c, struct aarmd_gguf *g)
{
    char pn[SHOWN_CAP];
    int rc;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        struct aarmd_gguf_tensor *t = &g->tensors[i];
        struct aarmd_gguf_str name;
        uint64_t name_off = c->off, off_at;
        if ((rc = rd_str(c, "tensor name", &name)))
            return rc;
        if (name.len == 0)
            return fail_at(c, name_off, "empty tensor name (tensor %" PRIu64 ")", i);
        if (name.len >= GGUF_MAX_NAME)
            return fail_at(c, name_off, "tensor name of %" PRIu64 " bytes is longer than %d",
                           name.len, GGUF_MAX_NAME - 1);
        if (memchr(name.data, 0, (size_t)name.len))
            return fail_at(c, name_off, "tensor name contains a NUL byte");
        if (!(t->name = malloc((size_t)name.len + 1)))
            return set_err(c->err, c->errlen, AARMD_ENOMEM, "%s: out of memory", c->name);
        memcpy(t->name, name.data, (size_t)name.len);
        t->name[name.len] = '\0';
        uint64_t s = index_slot(g, g->tensor_index, g->tensor_cap, tensor_key, t->name, name.len);
        if (g->tensor_index[s])
            return fail_at(c, name_off, "duplicate tensor name \"%s\"", SHOWN(t));
        g->tensor_index[s] = i + 1;

        uint64_t dims_off = c->off;
        if ((rc = rd_u32(c, "tensor n_dims", &t->n_dims)))
            return rc;
        if (t->n_dims < 1 || t->n_dims > 4)
            return fail_at(c, dims_off, "tensor \"%s\": n_dims %" PRIu32 " is not in 1..4",
                           SHOWN(t), t->n_dims);
        for (int d = 0; d < 4; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t at = c->off, ne;
            if ((rc = rd_u64(c, "tensor dimension", &ne)))
                return rc;
            if (ne > (uint64_t)INT64_MAX)
                return fail_at(c, at, "tensor \"%s\": dimension %" PRIu32 " is negative (%" PRId64 ")",
                               SHOWN(t), d, (int64_t)ne);
            t->ne[d] = (int64_t)ne;
        }
        uint64_t type_off = c->off;
        if ((rc = rd_u32(c, "tensor type", &t->type)))
            return rc;
        const struct aarmd_type_info *ti = aarmd_type_info(t->type);
        if (!ti)
            return fail_at(c, type_off, "tensor \"%s\": unknown ggml type %" PRIu32, SHOWN(t), t->type);
        if ((uint64_t)t->ne[0] % ti->block_elems)
            return fail_at(c, dims_off + 4, "tensor \"%s\": ne[0] = %" PRId64 " is not a multiple of the %s block size %"
                           PRIu32, SHOWN(t), t->ne[0], ti->name, ti->block_elems);
        if (!aarmd_type_nbytes(t->type, t->ne, t->n_dims, &t->nbytes))
            return fail_at(c, dims_off + 4, "tensor \"%s\": element or byte count overflows", SHOWN(t));
        off_at = c->off;
        if ((rc = rd_u64(c, "tensor offset", &t->offset)))
            return rc;
        if (t->offset % g->alignment)
            return fail_at(c, off_at, "tensor \"%s\": data offset %" PRIu64 " is not a multiple of the alignment %"
                           PRIu32, SHOWN(t), t->offset, g->alignment);
    }
    return AARMD_OK;
}

/* Tensor data must lie inside the file; checked once data_start is known. */
static int check_tensor_data(struct cursor *c, struct aarmd_gguf *g)
{
    char pn[SHOWN_CAP];
    uint64_t data_bytes = g->size - g->data_start;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        struct aarmd_gguf_tensor *t = &g->tensors[i];
        if (t->offset > data_bytes || t->nbytes > data_bytes - t->offset)
            return fail_at(c, g->data_start + (t->offset < data_bytes ? t->offset : data_bytes),
                           "tensor \"%s\": data [%" PRIu64 ", +%" PRIu64 ") runs past the end of the file"
                           " (data section %" PRIu64 " bytes at offset %" PRIu64 ", file size %" PRIu64 ")",
                           SHOWN(t), t->offset, t->nbytes, data_bytes, g->data_start, g->size);
        t->data = g->base + g->data_start + t->offset;
    }
    return AARMD_OK;
}

static int parse(struct aarmd_gguf *g, char *err, size_t errlen)
{
    struct cursor c = {.base = g->base, .size = g->size, .off = 0, .name = g->path, .err = err, .errlen = errlen};
    uint32_t magic;
    int rc;

    if (g->size == 0)
        return fail_at(&c, 0, "file is empty (not a GGUF file)");
    if (g->size < 4)
        return fail_at(&c, 0, "file of %" PRIu64 " bytes is too small for the GGUF magic", g->size);
    magic = le32(g->base);
    if (magic != GGUF_MAGIC)
        return fail_at(&c, 0, "bad magic %02x %02x %02x %02x (expected \"GGUF\"): not a GGUF file",
                       g->base[0], g->base[1], g->base[2], g->base[3]);
    c.off = 4;
    if ((rc = rd_u32(&c, "header (version)", &g->version)))
        return rc;
    if (g->version == 1)
        return fail_at(&c, 4, "GGUF version 1 is not supported (only 2 and 3; convert the file again)");
    if (g->version != 2 && g->version != 3) {
        if (g->version && (g->version & 0xffff) == 0)
            return fail_at(&c, 4, "GGUF version %" PRIu32 " looks byte-swapped: big-endian files are not supported",
                           g->version);
        return fail_at(&c, 4, "unsupported GGUF version %" PRIu32 " (only 2 and 3)", g->version);
    }
    if ((rc = rd_u64(&c, "header (tensor count)", &g->n_tensors)))
        return rc;
    if ((rc = rd_u64(&c, "header (kv count)", &g->n_kv)))
        return rc;
    if (g->n_kv > left(&c) / MIN_KV_BYTES)
        return fail_at(&c, 16, "kv count %" PRIu64 " exceeds what the file size %" PRIu64 " can hold",
                       g->n_kv, g->size);
    if (g->n_tensors > left(&c) / MIN_TENSOR_BYTES)
        return fail_at(&c, 8, "tensor count %" PRIu64 " exceeds what the file size %" PRIu64 " can hold",
                       g->n_tensors, g->size);
    if (g->n_kv * MIN_KV_BYTES + g->n_tensors * MIN_TENSOR_BYTES > left(&c))
        return fail_at(&c, 8, "kv count %" PRIu64 " plus tensor count %" PRIu64 " exceed what the file size %"
                       PRIu64 " can hold", g->n_kv, g->n_tensors, g->size);

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    g->kv = calloc((size_t)g->n_kv + 1, sizeof *g->kv);
    g->kv_index = index_new(g->n_kv, &g->kv_cap);
    g->tensors = calloc((size_t)g->n_tensors + 1, sizeof *g->tensors);
    g->tensor_index = index_new(g->n_tensors, &g->tensor_cap);
    if (!g->kv || !g->kv_index || !g->tensors || !g->tensor_index)
        return set_err(err, errlen, AARMD_ENOMEM, "%s: out of memory for %" PRIu64 " kvs and %" PRIu64 " tensors",
                       g->path, g->n_kv, g->n_tensors);
    if ((rc = parse_kvs(&c, g)))
        return rc;
    if ((rc = parse_tensors(&c, g)))
        return rc;

    /* Data starts at the next multiple of the alignment. A file without
     * tensors may end before that padding. */
    uint64_t pad = (g->alignment - c.off % g->alignment) % g->alignment;
    if (g->n_tensors == 0) {
        g->data_start = pad <= left(&c) ? c.off + pad : g->size;
        return AARMD_OK;
    }
    if (pad > left(&c))
        return fail_at(&c, c.off, "file ends inside the padding before the tensor data (alignment %" PRIu32 ")",
                       g->alignment);
    g->data_start = c.off + pad;
    return check_tensor_data(&c, g);
}

/* ---- open / free ----------------------------------------------------------- */

void aarmd_gguf_free(struct aarmd_gguf *g)
{
    if (!g)
        return;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++)
            value_fini(&g->kv[i].value);
    if (g->tensors)
        for (uint64_t i = 0; i < g->n_tensors; i++)
            free(g->tensors[i].name);
    free(g->kv);
    free(g->kv_index);
    free(g->tensors);
    free(g->tensor_index);
    if (g->mapped && g->base)
        munmap((void *)g->base, (size_t)g->size);
    free(g->path);
    free(g);
}

static struct aarmd_gguf *gguf_alloc(const char *name)
{
    struct aarmd_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    if (!(g->path = strdup(name ? name : "(memory)"))) {
        free(g);
        return NULL;
    }
    return g;
}

int aarmd_gguf_open_mem(const void *data, size_t size, const char *name,
                        struct aarmd_gguf **out, char *err, size_t errlen)
{
    int rc;
    if (!out || (!data && size))
        return set_err(err, errlen, AARMD_EINVAL, "aarmd_gguf_open_mem: NULL argument");
    *out = NULL;
    struct aarmd_gguf *g = gguf_alloc(name);
    if (!g)
        return set_err(err, errlen, AARMD_ENOMEM, "%s: out of memory", name ? name : "(memory)");
    g->base = data;
    g->size = size;
    if ((rc = parse(g, err, errlen)))
        goto fail;
    *out = g;
    return AARMD_OK;
fail:
    aarmd_gguf_free(g);
    return rc;
}

int aarmd_gguf_open(const char *path, struct aarmd_gguf **out, char *err, size_t errlen)
{
    struct aarmd_gguf *g = NULL;
    struct stat st;
    int fd = -1, rc;

    if (!path || !out)
        return set_err(err, errlen, AARMD_EINVAL, "aarmd_gguf_open: NULL argument");
    *out = NULL;
    if (!(g = gguf_alloc(path))) {
        rc = set_err(err, errlen, AARMD_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below) */
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
        rc = set_err(err, errlen, AARMD_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        rc = set_err(err, errlen, AARMD_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = set_err(err, errlen, AARMD_EINVAL, "%s: not a regular file%s", path,
                     S_ISDIR(st.st_mode) ? " (a directory)" : "");
        goto fail;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        rc = set_err(err, errlen, AARMD_EINVAL, "%s: file too large to map", path);
        goto fail;
    }
    g->size = (uint64_t)st.st_size;
    if (g->size > 0) {
        void *p = mmap(NULL, (size_t)g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            rc = set_err(err, errlen, AARMD_EIO, "%s: mmap: %s", path, strerror(errno));
            goto fail;
        }
        g->base = p;
        g->mapped = true;
    }
    close(fd);
    fd = -1;
    if ((rc = parse(g, err, errlen)))
        goto fail;
    *out = g;
    return AARMD_OK;
fail:
    if (fd >= 0)
        close(fd);
    aarmd_gguf_free(g);
    return rc;
}

/* ---- accessors ------------------------------------------------------------- */

/* Accessors take NULL as an empty file, so callers can chain them after a failed open. */
const char *aarmd_gguf_path(const struct aarmd_gguf *g) { return g ? g->path : ""; }
uint32_t aarmd_gguf_version(const struct aarmd_gguf *g) { return g ? g->version : 0; }
uint32_t aarmd_gguf_alignment(const struct aarmd_gguf *g) { return g ? g->alignment : 0; }
uint64_t aarmd_gguf_file_size(const struct aarmd_gguf *g) { return g ? g->size : 0; }
uint64_t aarmd_gguf_data_offset(const struct aarmd_gguf *g) { return g ? g->data_start : 0; }
uint64_t aarmd_gguf_n_kv(const struct aarmd_gguf *g) { return g ? g->n_kv : 0; }
uint64_t aarmd_gguf_n_tensors(const struct aarmd_gguf *g) { return g ? g->n_tensors : 0; }

const struct aarmd_gguf_kv *aarmd_gguf_kv_at(const struct aarmd_gguf *g, uint64_t i)
{
    return g && i < g->n_kv ? &g->kv[i] : NULL;
}

const struct aarmd_gguf_tensor *aarmd_gguf_tensor_at(const struct aarmd_gguf *g, uint64_t i)
{
    return g && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct aarmd_gguf_value *aarmd_gguf_find(const struct aarmd_gguf *g, const char *key)
{
    if (!g || !key)
        return NULL;
    uint64_t s = index_slot(g, g->kv_index, g->kv_cap, kv_key, key, strlen(key));
    return g->kv_index[s] ? &g->kv[g->kv_index[s] - 1].value : NULL;
}

const struct aarmd_gguf_tensor *aarmd_gguf_find_tensor(const struct aarmd_gguf *g, const char *name)
{
    if (!g || !name)
        return NULL;
    uint64_t s = index_slot(g, g->tensor_index, g->tensor_cap, tensor_key, name, strlen(name));
    return g->tensor_index[s] ? &g->tensors[g->tensor_index[s] - 1] : NULL;
}

static bool is_unsigned(uint32_t t)
{
    return t == AARMD_GGUF_U8 || t == AARMD_GGUF_U16 || t == AARMD_GGUF_U32 || t == AARMD_GGUF_U64;
}

static bool is_signed(uint32_t t)
{
    return t == AARMD_GGUF_I8 || t == AARMD_GGUF_I16 || t == AARMD_GGUF_I32 || t == AARMD_GGUF_I64;
}

static bool is_float(uint32_t t) { return t == AARMD_GGUF_F32 || t == AARMD_GGUF_F64; }

/* Out-of-range doubles become +-inf explicitly (the plain cast is undefined). */
static float f64_to_f32(double d)
{
    if (d > FLT_MAX)
        return INFINITY;
    if (d < -FLT_MAX)
        return -INFINITY;
    return (float)d;
}

int aarmd_gguf_get_u64(const struct aarmd_gguf *g, const char *key, uint64_t *out)
{
    const struct aarmd_gguf_value *v = aarmd_gguf_find(g, key);
    if (!v || !out)
        return AARMD_EINVAL;
    if (is_unsigned(v->type)) {
        *out = v->v.u64;
        return AARMD_OK;
    }
    if (is_signed(v->type) && v->v.i64 >= 0) {
        *out = (uint64_t)v->v.i64;
        return AARMD_OK;
    }
    return AARMD_EINVAL;
}

int aarmd_gguf_get_u32(const struct aarmd_gguf *g, const char *key, uint32_t *out)
{
    uint64_t u;
    if (!out || aarmd_gguf_get_u64(g, key, &u) || u > UINT32_MAX)
        return AARMD_EINVAL;
    *out = (uint32_t)u;
    return AARMD_OK;
}

int aarmd_gguf_get_i64(const struct aarmd_gguf *g, const char *key, int64_t *out)
{
    const struct aarmd_gguf_value *v = aarmd_gguf_find(g, key);
    if (!v || !out)
        return AARMD_EINVAL;
    if (is_signed(v->type)) {
        *out = v->v.i64;
        return AARMD_OK;
    }
    if (is_unsigned(v->type) && v->v.u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)v->v.u64;
        return AARMD_OK;
    }
    return AARMD_EINVAL;
}

int aarmd_gguf_get_f32(const struct aarmd_gguf *g, const char *key, float *out)
{
    const struct aarmd_gguf_value *v = aarmd_gguf_find(g, key);
    if (!v || !out)
        return AARMD_EINVAL;
    if (is_float(v->type))
        *out = f64_to_f32(v->v.f64);
    else if (is_unsigned(v->type))
        *out = (float)v->v.u64;
    else if (is_signed(v->type))
        *out = (float)v->v.i64;
    else
        return AARMD_EINVAL;
    return AARMD_OK;
}

int aarmd_gguf_get_bool(const struct aarmd_gguf *g, const char *key, bool *out)
{
    const struct aarmd_gguf_value *v = aarmd_gguf_find(g, key);
    if (!v || !out || v->type != AARMD_GGUF_BOOL)
        return AARMD_EINVAL;
    *out = v->v.u64 != 0;
    return AARMD_OK;
}

int aarmd_gguf_get_str(const struct aarmd_gguf *g, const char *key, struct aarmd_gguf_str *out)
{
    const struct aarmd_gguf_value *v = aarmd_gguf_find(g, key);
    if (!v || !out || v->type != AARMD_GGUF_STRING)
        return AARMD_EINVAL;
    *out = v->v.str;
    return AARMD_OK;
}

int aarmd_gguf_get_cstr(const struct aarmd_gguf *g, const char *key, char *buf, size_t cap)
{
    struct aarmd_gguf_str s;
    if (!buf || !cap || aarmd_gguf_get_str(g, key, &s))
        return AARMD_EINVAL;
    size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
    memcpy(buf, s.data, n);
    buf[n] = '\0';
    return AARMD_OK;
}

int aarmd_gguf_get_arr(const struct aarmd_gguf *g, const char *key, const struct aarmd_gguf_value **out)
{
    const struct aarmd_gguf_value *v = aarmd_gguf_find(g, key);
    if (out)
        *out = NULL;
    if (!v || v->type != AARMD_GGUF_ARRAY)
        return AARMD_EINVAL;
    if (out)
        *out = v;
    return AARMD_OK;
}

/* Element i of a scalar array as a value (type AARMD_GGUF_ARRAY when not scalar). */
static struct aarmd_gguf_value arr_elem(const struct aarmd_gguf_value *arr, uint64_t i)
{
    struct aarmd_gguf_value v = {.type = AARMD_GGUF_ARRAY};
    if (!arr || arr->type != AARMD_GGUF_ARRAY || i >= arr->v.arr.n)
        return v;
    uint32_t t = arr->v.arr.elem_type;
    uint64_t es = scalar_size(t);
    if (!es)
        return v;
    const uint8_t *p = (const uint8_t *)arr->v.arr.raw + i * es;
    v.type = t;
    switch (t) {
    case AARMD_GGUF_U8: case AARMD_GGUF_BOOL: v.v.u64 = p[0]; break;
    case AARMD_GGUF_I8: v.v.i64 = (int8_t)p[0]; break;
    case AARMD_GGUF_U16: v.v.u64 = le16(p); break;
    case AARMD_GGUF_I16: v.v.i64 = (int16_t)le16(p); break;
    case AARMD_GGUF_U32: v.v.u64 = le32(p); break;
    case AARMD_GGUF_I32: v.v.i64 = (int32_t)le32(p); break;
    case AARMD_GGUF_U64: v.v.u64 = le64(p); break;
    case AARMD_GGUF_I64: v.v.i64 = (int64_t)le64(p); break;
    case AARMD_GGUF_F32: v.v.f64 = f32_from_bits(le32(p)); break;
    case AARMD_GGUF_F64: v.v.f64 = f64_from_bits(le64(p)); break;
    default: v.type = AARMD_GGUF_ARRAY; break;
    }
    return v;
}

int aarmd_gguf_arr_get(const struct aarmd_gguf_value *arr, uint64_t i, struct aarmd_gguf_value *out)
{
    if (!arr || !out || arr->type != AARMD_GGUF_ARRAY || i >= arr->v.arr.n)
        return AARMD_EINVAL;
    if (arr->v.arr.items) {
        *out = arr->v.arr.items[i];
        return AARMD_OK;
    }
    *out = arr_elem(arr, i);
    return out->type == AARMD_GGUF_ARRAY ? AARMD_EINVAL : AARMD_OK;
}

double aarmd_gguf_arr_f64(const struct aarmd_gguf_value *arr, uint64_t i)
{
    struct aarmd_gguf_value v = arr_elem(arr, i);
    if (is_float(v.type))
        return v.v.f64;
    if (is_signed(v.type))
        return (double)v.v.i64;
    if (is_unsigned(v.type) || v.type == AARMD_GGUF_BOOL)
        return (double)v.v.u64;
    return 0.0;
}

int64_t aarmd_gguf_arr_i64(const struct aarmd_gguf_value *arr, uint64_t i)
{
    struct aarmd_gguf_value v = arr_elem(arr, i);
    if (is_signed(v.type))
        return v.v.i64;
    if (is_unsigned(v.type) || v.type == AARMD_GGUF_BOOL)
        return v.v.u64 > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v.v.u64;
    if (is_float(v.type)) {
        double d = v.v.f64;
        if (isnan(d))
            return 0;
        if (d >= 9223372036854775807.0)
            return INT64_MAX;
        if (d <= -9223372036854775808.0)
            return INT64_MIN;
        return (int64_t)d;
    }
    return 0;
}

const char *aarmd_gguf_vtype_name(uint32_t t)
{
    static const char *const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                        "string", "array", "u64", "i64", "f64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "?";
}
