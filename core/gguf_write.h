/*
 * gguf_write.h — a small GGUF v3 writer (byte layout in gguf.h): metadata of
 * every value type, tensors laid out at `general.alignment`. Everything is
 * buffered in memory and written in one go; meant for synthetic models and
 * tests, not for multi-gigabyte files.
 *
 * Setters record the first failure in the writer ("sticky" error): a caller
 * may chain setters and check only aarmd_gguf_writer_write's result, which
 * fails with that first message. Setting a key that already exists replaces
 * its value in place (the key keeps its position).
 */
#ifndef AARMD_GGUF_WRITE_H
#define AARMD_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

struct aarmd_gguf_writer;

/* NULL on out-of-memory. Alignment starts at 32 (no general.alignment key). */
struct aarmd_gguf_writer *aarmd_gguf_writer_new(void);
void aarmd_gguf_writer_free(struct aarmd_gguf_writer *w);   /* accepts NULL */

/* Sets the data alignment (a power of two >= 8) and the u32 key general.alignment. */
int aarmd_gguf_writer_set_alignment(struct aarmd_gguf_writer *w, uint32_t alignment);

int aarmd_gguf_writer_set_u8(struct aarmd_gguf_writer *w, const char *key, uint8_t v);
int aarmd_gguf_writer_set_i8(struct aarmd_gguf_writer *w, const char *key, int8_t v);
int aarmd_gguf_writer_set_u16(struct aarmd_gguf_writer *w, const char *key, uint16_t v);
int aarmd_gguf_writer_set_i16(struct aarmd_gguf_writer *w, const char *key, int16_t v);
int aarmd_gguf_writer_set_u32(struct aarmd_gguf_writer *w, const char *key, uint32_t v);
int aarmd_gguf_writer_set_i32(struct aarmd_gguf_writer *w, const char *key, int32_t v);
int aarmd_gguf_writer_set_u64(struct aarmd_gguf_writer *w, const char *key, uint64_t v);
int aarmd_gguf_writer_set_i64(struct aarmd_gguf_writer *w, const char *key, int64_t v);
int aarmd_gguf_writer_set_f32(struct aarmd_gguf_writer *w, const char *key, float v);
int aarmd_gguf_writer_set_f64(struct aarmd_gguf_writer *w, const char *key, double v);
int aarmd_gguf_writer_set_bool(struct aarmd_gguf_writer *w, const char *key, bool v);
/* NUL-terminated string value. */
int aarmd_gguf_writer_set_str(struct aarmd_gguf_writer *w, const char *key, const char *v);
/* String value of `len` bytes (may contain NUL). */
int aarmd_gguf_writer_set_strn(struct aarmd_gguf_writer *w, const char *key, const char *v, uint64_t len);
/* Array of n scalars of elem_type (u8..f64, bool; not string/array); `elems`
 * holds them in host C types (uint8_t[], int32_t[], float[], bool[], ...). */
int aarmd_gguf_writer_set_arr(struct aarmd_gguf_writer *w, const char *key, uint32_t elem_type,
                              const void *elems, uint64_t n);
/* Array of n NUL-terminated strings. */
int aarmd_gguf_writer_set_str_arr(struct aarmd_gguf_writer *w, const char *key,
                                  const char *const *strs, uint64_t n);
/* Copies a value parsed by the reader (any type, arrays nested to any depth). */
int aarmd_gguf_writer_set_value(struct aarmd_gguf_writer *w, const char *key,
                                const struct aarmd_gguf_value *v);

/*
 * Adds a tensor (names must be unique). `data` holds exactly the tensor's
 * bytes (aarmd_type_nbytes of type and ne) and is copied. Tensors are laid
 * out in the order added.
 */
int aarmd_gguf_writer_add_tensor(struct aarmd_gguf_writer *w, const char *name, uint32_t type,
                                 uint32_t n_dims, const int64_t *ne, const void *data, uint64_t nbytes);
/* Same, but the writer allocates zeroed storage and returns it in *data for
 * the caller to fill before writing (valid until the writer is freed). */
int aarmd_gguf_writer_add_tensor_buf(struct aarmd_gguf_writer *w, const char *name, uint32_t type,
                                     uint32_t n_dims, const int64_t *ne, void **data);

/* The first setter/adder failure, or "" when none. */
const char *aarmd_gguf_writer_error(const struct aarmd_gguf_writer *w);

/* Serializes into a malloc'd buffer (*buf, caller frees) of *size bytes. */
int aarmd_gguf_writer_to_mem(struct aarmd_gguf_writer *w, void **buf, size_t *size,
                             char *err, size_t errlen);
/* Writes the file at `path` (via PATH.tmp and rename). */
int aarmd_gguf_writer_write(struct aarmd_gguf_writer *w, const char *path, char *err, size_t errlen);

#endif
