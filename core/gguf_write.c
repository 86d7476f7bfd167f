/*
 * gguf_write.c — GGUF v3 writer: keys are kept serialized (type tag and
 * payload), tensors as owned copies; the file is header + aligned data.
 * Not a streaming writer and not a reader (see gguf.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml_type.h"
#include "gguf_write.h"

#define GGUF_MAGIC 0x46554747u
#define GGUF_VERSION 3u
#define MAX_DEPTH 8

struct buf {
    uint8_t *p;
    size_t n, cap;
    bool oom;
};

struct wkv {
    char *key;
    struct buf val;      /* u32 type tag, then the value's payload */
};

struct wtensor {
    char *name;
    uint32_t type, n_dims;
    int64_t ne[4];
    uint8_t *data;
    uint64_t nbytes;
};

struct aarmd_gguf_writer {
    struct wkv *kvs;
    size_t n_kv, cap_kv;
    struct wtensor *ts;
    size_t n_t, cap_t;
    uint32_t alignment;
    int err_rc;
    char err[256];
};

/* ---- byte buffer -------------------------------------------------------- */

static void buf_put(struct buf *b, const void *p, size_t n)
{
    if (b->oom || !n)
        return;
    if (n > SIZE_MAX - b->n) {
        b->oom = true;
        return;
    }
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n)
            cap = cap > SIZE_MAX / 2 ? b->n + n : cap * 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void buf_le(struct buf *b, uint64_t v, int bytes)
{
    uint8_t t[8];
    for (int i = 0; i < bytes; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    buf_put(b, t, (size_t)bytes);
}

static void buf_u32(struct buf *b, uint32_t v) { buf_le(b, v, 4); }
static void buf_u64(struct buf *b, uint64_t v) { buf_le(b, v, 8); }

static void buf_str(struct buf *b, const char *s, uint64_t len)
{
    buf_u64(b, len);
    buf_put(b, s, (size_t)len);
}

static void buf_zeros(struct buf *b, size_t n)
{
    static const uint8_t z[64];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        buf_put(b, z, k);
        n -= k;
    }
}

/* ---- errors ------------------------------------------------------------- */

static int fail(struct aarmd_gguf_writer *w, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct aarmd_gguf_writer *w, int rc, const char *fmt, ...)
{
    if (w && !w->err_rc) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->err, sizeof w->err, fmt, ap);
        va_end(ap);
        w->err_rc = rc;
    }
    return rc;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- lifecycle ---------------------------------------------------------- */

struct aarmd_gguf_writer *aarmd_gguf_writer_new(void)
{
    struct aarmd_gguf_writer *w = calloc(1, sizeof *w);
    if (w)
        w->alignment = 32;
    return w;
}

void aarmd_gguf_writer_free(struct aarmd_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val.p);
    }
    free(w->kvs);
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->ts[i].name);
        free(w->ts[i].data);
    }
    free(w->ts);
    free(w);
}

const char *aarmd_gguf_writer_error(const struct aarmd_gguf_writer *w)
{
    return w && w->err_rc ? w->err : "";
}

/* ---- keys --------------------------------------------------------------- */

static int scalar_size(uint32_t t)
{
    switch (t) {
    case AARMD_GGUF_U8: case AARMD_GGUF_I8: case AARMD_GGUF_BOOL: return 1;
    case AARMD_GGUF_U16: case AARMD_GGUF_I16: return 2;
    case AARMD_GGUF_U32: case AARMD_GGUF_I32: case AARMD_GGUF_F32: return 4;
    case AARMD_GGUF_U64: case AARMD_GGUF_I64: case AARMD_GGUF_F64: return 8;
    default: return 0;
    }
}

/* Stores `val` (already serialized) under key, replacing an existing value.
 * Takes ownership of val.p in every case. */
static int put_kv(struct aarmd_gguf_writer *w, const char *key, struct buf val)
{
    if (!w) {
        free(val.p);
        return AARMD_EINVAL;
    }
    if (!key || !*key) {
        free(val.p);
        return fail(w, AARMD_EINVAL, "gguf writer: empty key");
    }
    if (val.oom) {
        free(val.p);
        return fail(w, AARMD_ENOMEM, "gguf writer: out of memory for key %s", key);
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (!strcmp(w->kvs[i].key, key)) {
            free(w->kvs[i].val.p);
            w->kvs[i].val = val;
            return AARMD_OK;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 32;
        struct wkv *k = realloc(w->kvs, cap * sizeof *k);
        if (!k) {
            free(val.p);
            return fail(w, AARMD_ENOMEM, "gguf writer: out of memory for key %s", key);
        }
        w->kvs = k;
        w->cap_kv = cap;
    }
    char *kc = strdup(key);
    if (!kc) {
        free(val.p);
        return fail(w, AARMD_ENOMEM, "gguf writer: out of memory for key %s", key);
    }
    w->kvs[w->n_kv].key = kc;
    w->kvs[w->n_kv].val = val;
    w->n_kv++;
    return AARMD_OK;
}

static int set_scalar(struct aarmd_gguf_writer *w, const char *key, uint32_t t, uint64_t bits)
{
    struct buf b = {0};
    buf_u32(&b, t);
    buf_le(&b, bits, scalar_size(t));
    return put_kv(w, key, b);
}

int aarmd_gguf_writer_set_u8(struct aarmd_gguf_writer *w, const char *key, uint8_t v)
{
    return set_scalar(w, key, AARMD_GGUF_U8, v);
}

int aarmd_gguf_writer_set_i8(struct aarmd_gguf_writer *w, const char *key, int8_t v)
{
    return set_scalar(w, key, AARMD_GGUF_I8, (uint8_t)v);
}

int aarmd_gguf_writer_set_u16(struct aarmd_gguf_writer *w, const char *key, uint16_t v)
{
    return set_scalar(w, key, AARMD_GGUF_U16, v);
}

int aarmd_gguf_writer_set_i16(struct aarmd_gguf_writer *w, const char *key, int16_t v)
{
    return set_scalar(w, key, AARMD_GGUF_I16, (uint16_t)v);
}

int aarmd_gguf_writer_set_u32(struct aarmd_gguf_writer *w, const char *key, uint32_t v)
{
    return set_scalar(w, key, AARMD_GGUF_U32, v);
}

int aarmd_gguf_writer_set_i32(struct aarmd_gguf_writer *w, const char *key, int32_t v)
{
    return set_scalar(w, key, AARMD_GGUF_I32, (uint32_t)v);
}

int aarmd_gguf_writer_set_u64(struct aarmd_gguf_writer *w, const char *key, uint64_t v)
{
    return set_scalar(w, key, AARMD_GGUF_U64, v);
}

int aarmd_gguf_writer_set_i64(struct aarmd_gguf_writer *w, const char *key, int64_t v)
{
    return set_scalar(w, key, AARMD_GGUF_I64, (uint64_t)v);
}

int aarmd_gguf_writer_set_f32(struct aarmd_gguf_writer *w, const char *key, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return set_scalar(w, key, AARMD_GGUF_F32, bits);
}

int aarmd_gguf_writer_set_f64(struct aarmd_gguf_writer *w, const char *key, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return set_scalar(w, key, AARMD_GGUF_F64, bits);
}

int aarmd_gguf_writer_set_bool(struct aarmd_gguf_writer *w, const char *key, bool v)
{
    return set_scalar(w, key, AARMD_GGUF_BOOL, v ? 1 : 0);
}

int aarmd_gguf_writer_set_strn(struct aarmd_gguf_writer *w, const char *key, const char *v, uint64_t len)
{
    if (!v && len)
        return fail(w, AARMD_EINVAL, "gguf writer: NULL string for key %s", key ? key : "?");
    struct buf b = {0};
    buf_u32(&b, AARMD_GGUF_STRING);
    buf_str(&b, v, len);
    return put_kv(w, key, b);
}

int aarmd_gguf_writer_set_str(struct aarmd_gguf_writer *w, const char *key, const char *v)
{
    if (!v)
        return fail(w, AARMD_EINVAL, "gguf writer: NULL string for key %s", key ? key : "?");
    return aarmd_gguf_writer_set_strn(w, key, v, strlen(v));
}

/* One host-typed scalar at elems[i] as little-endian bits. */
static uint64_t host_scalar_bits(uint32_t t, const void *elems, uint64_t i)
{
    switch (t) {
    case AARMD_GGUF_U8: return ((const uint8_t *)elems)[i];
    case AARMD_GGUF_I8: return (uint8_t)((const int8_t *)elems)[i];
    case AARMD_GGUF_BOOL: return ((const bool *)elems)[i] ? 1 : 0;
    case AARMD_GGUF_U16: return ((const uint16_t *)elems)[i];
    case AARMD_GGUF_I16: return (uint16_t)((const int16_t *)elems)[i];
    case AARMD_GGUF_U32: return ((const uint32_t *)elems)[i];
    case AARMD_GGUF_I32: return (uint32_t)((const int32_t *)elems)[i];
    case AARMD_GGUF_U64: return ((const uint64_t *)elems)[i];
    case AARMD_GGUF_I64: return (uint64_t)((const int64_t *)elems)[i];
    case AARMD_GGUF_F32: {
        uint32_t bits;
        memcpy(&bits, (const float *)elems + i, sizeof bits);
        return bits;
    }
    case AARMD_GGUF_F64: {
        uint64_t bits;
        memcpy(&bits, (const double *)elems + i, sizeof bits);
        return bits;
    }
    default: return 0;
    }
}

int aarmd_gguf_writer_set_arr(struct aarmd_gguf_writer *w, const char *key, uint32_t elem_type,
                              const void *elems, uint64_t n)
{
    int es = scalar_size(elem_type);
    if (!es)
        return fail(w, AARMD_EINVAL, "gguf writer: key %s: array element type %s is not a scalar",
                    key ? key : "?", aarmd_gguf_vtype_name(elem_type));
    if (!elems && n)
        return fail(w, AARMD_EINVAL, "gguf writer: key %s: NULL array", key ? key : "?");
    struct buf b = {0};
    buf_u32(&b, AARMD_GGUF_ARRAY);
    buf_u32(&b, elem_type);
    buf_u64(&b, n);
    for (uint64_t i = 0; i < n && !b.oom; i++)
        buf_le(&b, host_scalar_bits(elem_type, elems, i), es);
    return put_kv(w, key, b);
}

int aarmd_gguf_writer_set_str_arr(struct aarmd_gguf_writer *w, const char *key,
                                  const char *const *strs, uint64_t n)
{
    if (!strs && n)
        return fail(w, AARMD_EINVAL, "gguf writer: key %s: NULL array", key ? key : "?");
    struct buf b = {0};
    buf_u32(&b, AARMD_GGUF_ARRAY);
    buf_u32(&b, AARMD_GGUF_STRING);
    buf_u64(&b, n);
    for (uint64_t i = 0; i < n && !b.oom; i++) {
        if (!strs[i]) {
            free(b.p);
            return fail(w, AARMD_EINVAL, "gguf writer: key %s: string %" PRIu64 " is NULL", key ? key : "?", i);
        }
        buf_str(&b, strs[i], strlen(strs[i]));
    }
    return put_kv(w, key, b);
}

/* Payload of a reader value (no type tag); false when the value is malformed. */
static bool put_payload(struct buf *b, const struct aarmd_gguf_value *v, int depth)
{
    int es = scalar_size(v->type);
    if (es) {
        uint64_t bits;
        if (v->type == AARMD_GGUF_F32) {
            float f = (float)v->v.f64;
            uint32_t u;
            memcpy(&u, &f, sizeof u);
            bits = u;
        } else if (v->type == AARMD_GGUF_F64) {
            memcpy(&bits, &v->v.f64, sizeof bits);
        } else if (v->type == AARMD_GGUF_I8 || v->type == AARMD_GGUF_I16 ||
                   v->type == AARMD_GGUF_I32 || v->type == AARMD_GGUF_I64) {
            bits = (uint64_t)v->v.i64;
        } else {
            bits = v->v.u64;
        }
        buf_le(b, bits, es);
        return true;
    }
    if (v->type == AARMD_GGUF_STRING) {
        if (!v->v.str.data && v->v.str.len)
            return false;
        buf_str(b, v->v.str.data, v->v.str.len);
        return true;
    }
    if (v->type != AARMD_GGUF_ARRAY || depth >= MAX_DEPTH)
        return false;
    uint32_t et = v->v.arr.elem_type;
    uint64_t n = v->v.arr.n;
    buf_u32(b, et);
    buf_u64(b, n);
    int ees = scalar_size(et);
    if (ees) {
        if (!v->v.arr.raw && n)
            return false;
        if (n > SIZE_MAX / (uint64_t)ees)
            return false;
        buf_put(b, v->v.arr.raw, (size_t)(n * (uint64_t)ees));   /* already packed little-endian */
        return true;
    }
    if (et != AARMD_GGUF_STRING && et != AARMD_GGUF_ARRAY)
        return false;
    if (!v->v.arr.items && n)
        return false;
    for (uint64_t i = 0; i < n && !b->oom; i++) {
        if (v->v.arr.items[i].type != et || !put_payload(b, &v->v.arr.items[i], depth + 1))
            return false;
    }
    return true;
}

int aarmd_gguf_writer_set_value(struct aarmd_gguf_writer *w, const char *key,
                                const struct aarmd_gguf_value *v)
{
    if (!v)
        return fail(w, AARMD_EINVAL, "gguf writer: key %s: NULL value", key ? key : "?");
    struct buf b = {0};
    buf_u32(&b, v->type);
    if (!put_payload(&b, v, 0)) {
        free(b.p);
        return fail(w, AARMD_EINVAL, "gguf writer: key %s: malformed %s value", key ? key : "?",
                    aarmd_gguf_vtype_name(v->type));
    }
    return put_kv(w, key, b);
}

int aarmd_gguf_writer_set_alignment(struct aarmd_gguf_writer *w, uint32_t alignment)
{
    if (!w)
        return AARMD_EINVAL;
    if (alignment < 8 || (alignment & (alignment - 1)))
        return fail(w, AARMD_EINVAL, "gguf writer: alignment %" PRIu32 " is not a power of two >= 8", alignment);
    w->alignment = alignment;
    return aarmd_gguf_writer_set_u32(w, "general.alignment", alignment);
}

/* ---- tensors ------------------------------------------------------------ */

static int add_tensor(struct aarmd_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                      const int64_t *ne, const void *data, uint64_t nbytes, void **buf_out)
{
    if (!w)
        return AARMD_EINVAL;
    if (!name || !*name)
        return fail(w, AARMD_EINVAL, "gguf writer: empty tensor name");
    if (n_dims < 1 || n_dims > 4 || !ne)
        return fail(w, AARMD_EINVAL, "gguf writer: tensor %s: n_dims %" PRIu32 " not in 1..4", name, n_dims);
    uint64_t want;
    if (!aarmd_type_nbytes(type, ne, n_dims, &want))
        return fail(w, AARMD_EINVAL, "gguf writer: tensor %s: bad shape or type %s (ne[0] %" PRId64
                    " must be a multiple of the block size)", name, aarmd_type_name(type), ne[0]);
    if (!buf_out && nbytes != want)
        return fail(w, AARMD_EINVAL, "gguf writer: tensor %s: %" PRIu64 " bytes given, %s needs %" PRIu64,
                    name, nbytes, aarmd_type_name(type), want);
    if (want > SIZE_MAX)
        return fail(w, AARMD_ENOMEM, "gguf writer: tensor %s too large", name);
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->ts[i].name, name))
            return fail(w, AARMD_EINVAL, "gguf writer: duplicate tensor %s", name);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 64;
        struct wtensor *t = realloc(w->ts, cap * sizeof *t);
        if (!t)
            return fail(w, AARMD_ENOMEM, "gguf writer: out of memory for tensor %s", name);
        w->ts = t;
        w->cap_t = cap;
    }
    struct wtensor t = {.type = type, .n_dims = n_dims, .nbytes = want};
    for (uint32_t i = 0; i < 4; i++)
        t.ne[i] = i < n_dims ? ne[i] : 1;
    t.name = strdup(name);
    t.data = buf_out ? calloc(1, want ? (size_t)want : 1) : malloc(want ? (size_t)want : 1);
    if (!t.name || !t.data) {
        free(t.name);
        free(t.data);
        return fail(w, AARMD_ENOMEM, "gguf writer: out of memory for tensor %s", name);
    }
    if (!buf_out && want)
        memcpy(t.data, data, (size_t)want);
    if (buf_out)
        *buf_out = t.data;
    w->ts[w->n_t++] = t;
    return AARMD_OK;
}

int aarmd_gguf_writer_add_tensor(struct aarmd_gguf_writer *w, const char *name, uint32_t type,
                                 uint32_t n_dims, const int64_t *ne, const void *data, uint64_t nbytes)
{
    if (!data && nbytes)
        return fail(w, AARMD_EINVAL, "gguf writer: tensor %s: NULL data", name ? name : "?");
    return add_tensor(w, name, type, n_dims, ne, data, nbytes, NULL);
}

int aarmd_gguf_writer_add_tensor_buf(struct aarmd_gguf_writer *w, const char *name, uint32_t type,
                                     uint32_t n_dims, const int64_t *ne, void **data)
{
    if (!data)
        return fail(w, AARMD_EINVAL, "gguf writer: tensor %s: NULL out pointer", name ? name : "?");
    *data = NULL;
    return add_tensor(w, name, type, n_dims, ne, NULL, 0, data);
}

/* ---- serialization ------------------------------------------------------ */

static uint64_t pad_to(uint64_t x, uint32_t a)
{
    return (x + a - 1) / a * a;
}

/* Header, key/values, tensor infos and padding up to the data section. */
static int build_header(struct aarmd_gguf_writer *w, struct buf *h, char *err, size_t errlen)
{
    if (w->err_rc) {
        set_err(err, errlen, "%s", w->err);
        return w->err_rc;
    }
    buf_u32(h, GGUF_MAGIC);
    buf_u32(h, GGUF_VERSION);
    buf_u64(h, w->n_t);
    buf_u64(h, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        buf_str(h, w->kvs[i].key, strlen(w->kvs[i].key));
        buf_put(h, w->kvs[i].val.p, w->kvs[i].val.n);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->ts[i];
        buf_str(h, t->name, strlen(t->name));
        buf_u32(h, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            buf_u64(h, (uint64_t)t->ne[d]);
        buf_u32(h, t->type);
        buf_u64(h, off);
        off = pad_to(off + t->nbytes, w->alignment);
    }
    buf_zeros(h, (size_t)(pad_to(h->n, w->alignment) - h->n));
    if (h->oom) {
        set_err(err, errlen, "gguf writer: out of memory building the header");
        return AARMD_ENOMEM;
    }
    return AARMD_OK;
}

int aarmd_gguf_writer_to_mem(struct aarmd_gguf_writer *w, void **out, size_t *size,
                             char *err, size_t errlen)
{
    if (!w || !out || !size) {
        set_err(err, errlen, "gguf writer: NULL argument");
        return AARMD_EINVAL;
    }
    *out = NULL;
    *size = 0;
    struct buf b = {0};
    int rc = build_header(w, &b, err, errlen);
    if (rc)
        goto fail;
    for (size_t i = 0; i < w->n_t; i++) {
        buf_put(&b, w->ts[i].data, (size_t)w->ts[i].nbytes);
        buf_zeros(&b, (size_t)(pad_to(w->ts[i].nbytes, w->alignment) - w->ts[i].nbytes));
    }
    if (b.oom) {
        set_err(err, errlen, "gguf writer: out of memory");
        rc = AARMD_ENOMEM;
        goto fail;
    }
    *out = b.p;
    *size = b.n;
    return AARMD_OK;
fail:
    free(b.p);
    return rc;
}

int aarmd_gguf_writer_write(struct aarmd_gguf_writer *w, const char *path, char *err, size_t errlen)
{
    if (!w || !path) {
        set_err(err, errlen, "gguf writer: NULL argument");
        return AARMD_EINVAL;
    }
    struct buf h = {0};
    FILE *f = NULL;
    char *tmp = NULL;
    int rc = build_header(w, &h, err, errlen);
    if (rc)
        goto fail;
    size_t plen = strlen(path);
    tmp = malloc(plen + 5);
    if (!tmp) {
        set_err(err, errlen, "gguf writer: out of memory");
        rc = AARMD_ENOMEM;
        goto fail;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    f = fopen(tmp, "wb");
    if (!f) {
        set_err(err, errlen, "%s: %s", tmp, strerror(errno));
        rc = AARMD_EIO;
        goto fail;
    }
    static const uint8_t zeros[256];
    bool ok = fwrite(h.p, 1, h.n, f) == h.n;
    for (size_t i = 0; ok && i < w->n_t; i++) {
        const struct wtensor *t = &w->ts[i];
        size_t pad = (size_t)(pad_to(t->nbytes, w->alignment) - t->nbytes);
        ok = fwrite(t->data, 1, (size_t)t->nbytes, f) == t->nbytes;
        while (ok && pad) {
            size_t k = pad < sizeof zeros ? pad : sizeof zeros;
            ok = fwrite(zeros, 1, k, f) == k;
            pad -= k;
        }
    }
    if (fclose(f) != 0)
        ok = false;
    f = NULL;
    if (!ok) {
        set_err(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        remove(tmp);
        rc = AARMD_EIO;
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        set_err(err, errlen, "%s: rename to %s failed: %s", tmp, path, strerror(errno));
        remove(tmp);
        rc = AARMD_EIO;
        goto fail;
    }
    rc = AARMD_OK;
fail:
    if (f)
        fclose(f);
    free(tmp);
    free(h.p);
    return rc;
}
