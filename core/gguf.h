/*
 * gguf.h — read-only GGUF (v2, v3) reader. The file is mmapped read-only;
 * tensor data and scalar array payloads point into the map, so a struct
 * aarmd_gguf must outlive every pointer taken from it.
 *
 * Byte layout (little-endian throughout):
 *
 *   u32  magic "GGUF" (0x46554747)
 *   u32  version (2 or 3; 1 is refused)
 *   u64  n_tensors
 *   u64  n_kv
 *   n_kv   x  { string key; u32 value_type; value }
 *   n_tensors x { string name; u32 n_dims (1..4); u64 ne[n_dims]; u32 ggml_type; u64 offset }
 *   padding to `general.alignment` (u32, default 32, a power of two)
 *   tensor data: each tensor at data_start + offset, offset a multiple of alignment
 *
 *   string = u64 len, then len bytes of UTF-8 (no NUL)
 *   value_type: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool (1 byte),
 *               8 string, 9 array = { u32 elem_type; u64 n; n values }, 10 u64,
 *               11 i64, 12 f64. Arrays may nest.
 *
 * Every count, length, offset and size is checked against the file before it is
 * trusted; a bad file gives an error "PATH: offset N: what was wrong".
 */
#ifndef AARMD_GGUF_H
#define AARMD_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aarmd_backend.h"   /* enum aarmd_type */

enum aarmd_gguf_vtype {
    AARMD_GGUF_U8 = 0, AARMD_GGUF_I8 = 1, AARMD_GGUF_U16 = 2, AARMD_GGUF_I16 = 3,
    AARMD_GGUF_U32 = 4, AARMD_GGUF_I32 = 5, AARMD_GGUF_F32 = 6, AARMD_GGUF_BOOL = 7,
    AARMD_GGUF_STRING = 8, AARMD_GGUF_ARRAY = 9, AARMD_GGUF_U64 = 10, AARMD_GGUF_I64 = 11,
    AARMD_GGUF_F64 = 12,
};

/* A string inside the map: not NUL-terminated. */
struct aarmd_gguf_str {
    const char *data;
    uint64_t len;
};

struct aarmd_gguf_value {
    uint32_t type;                        /* enum aarmd_gguf_vtype */
    union {
        uint64_t u64;                     /* all unsigned ints and bool */
        int64_t i64;                      /* all signed ints */
        double f64;                       /* f32 and f64 */
        struct aarmd_gguf_str str;
        struct {
            uint32_t elem_type;
            uint64_t n;
            const void *raw;              /* scalar elements: packed little-endian in the map (maybe unaligned) */
            struct aarmd_gguf_value *items; /* string or array elements: n parsed values; NULL for scalars */
        } arr;
    } v;
};

struct aarmd_gguf_kv {
    struct aarmd_gguf_str key;
    struct aarmd_gguf_value value;
};

struct aarmd_gguf_tensor {
    char *name;            /* NUL-terminated copy */
    uint32_t type;         /* enum aarmd_type */
    uint32_t n_dims;
    int64_t ne[4];         /* unused dims are 1 */
    uint64_t offset;       /* relative to the data section */
    const void *data;      /* into the map */
    uint64_t nbytes;
};

struct aarmd_gguf;

/* Opens and validates `path`. On success *out owns the map; free with aarmd_gguf_free.
 * Errors: AARMD_EIO when the file can't be opened or mapped ("PATH: strerror"),
 * AARMD_EINVAL for a directory, an empty or malformed file ("PATH: offset N: why"),
 * AARMD_ENOMEM. *out is NULL on error. */
int aarmd_gguf_open(const char *path, struct aarmd_gguf **out, char *err, size_t errlen);
/* Same over a caller-owned buffer (the fuzzer's entry); `name` appears in errors.
 * The buffer must outlive the result. */
int aarmd_gguf_open_mem(const void *data, size_t size, const char *name,
                        struct aarmd_gguf **out, char *err, size_t errlen);
void aarmd_gguf_free(struct aarmd_gguf *g);   /* accepts NULL */

/* Accessors and getters take a NULL g as an empty file (0, "", NULL, AARMD_EINVAL).
 * Lookups by key or tensor name are hashed (O(1)). */
const char *aarmd_gguf_path(const struct aarmd_gguf *g);
uint32_t aarmd_gguf_version(const struct aarmd_gguf *g);
uint32_t aarmd_gguf_alignment(const struct aarmd_gguf *g);
uint64_t aarmd_gguf_file_size(const struct aarmd_gguf *g);
/* File offset of the tensor data section (tensor offsets are relative to it). */
uint64_t aarmd_gguf_data_offset(const struct aarmd_gguf *g);

uint64_t aarmd_gguf_n_kv(const struct aarmd_gguf *g);
const struct aarmd_gguf_kv *aarmd_gguf_kv_at(const struct aarmd_gguf *g, uint64_t i);
/* NULL when absent. */
const struct aarmd_gguf_value *aarmd_gguf_find(const struct aarmd_gguf *g, const char *key);

/* Typed getters: AARMD_OK, or AARMD_EINVAL when absent or of a type that
 * does not convert (any integer type converts to an integer getter if the
 * value fits; f32/f64 and integers convert to float). */
int aarmd_gguf_get_u32(const struct aarmd_gguf *g, const char *key, uint32_t *out);
int aarmd_gguf_get_u64(const struct aarmd_gguf *g, const char *key, uint64_t *out);
int aarmd_gguf_get_i64(const struct aarmd_gguf *g, const char *key, int64_t *out);
int aarmd_gguf_get_f32(const struct aarmd_gguf *g, const char *key, float *out);
int aarmd_gguf_get_bool(const struct aarmd_gguf *g, const char *key, bool *out);
int aarmd_gguf_get_str(const struct aarmd_gguf *g, const char *key, struct aarmd_gguf_str *out);
/* Copies a string value NUL-terminated into buf (truncating); AARMD_EINVAL when absent. */
int aarmd_gguf_get_cstr(const struct aarmd_gguf *g, const char *key, char *buf, size_t cap);
/* An array value; *out NULL-safe. AARMD_EINVAL when absent or not an array. */
int aarmd_gguf_get_arr(const struct aarmd_gguf *g, const char *key, const struct aarmd_gguf_value **out);

/* Element i of a scalar array converted to double / int64 / uint64 (caller checks i < n). */
double aarmd_gguf_arr_f64(const struct aarmd_gguf_value *arr, uint64_t i);
int64_t aarmd_gguf_arr_i64(const struct aarmd_gguf_value *arr, uint64_t i);

/* Element i of any array as a value: scalars decoded from the map, string and
 * array elements copied from items (their pointers still point into g).
 * AARMD_EINVAL when arr is not an array or i >= n. */
int aarmd_gguf_arr_get(const struct aarmd_gguf_value *arr, uint64_t i, struct aarmd_gguf_value *out);

uint64_t aarmd_gguf_n_tensors(const struct aarmd_gguf *g);
const struct aarmd_gguf_tensor *aarmd_gguf_tensor_at(const struct aarmd_gguf *g, uint64_t i);
const struct aarmd_gguf_tensor *aarmd_gguf_find_tensor(const struct aarmd_gguf *g, const char *name);

const char *aarmd_gguf_vtype_name(uint32_t t);   /* "u32", "string", ... or "?" */

#endif
