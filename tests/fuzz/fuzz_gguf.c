/*
 * fuzz_gguf.c — libFuzzer harness for core/gguf.c: parses the input with
 * aarmd_gguf_open_mem and walks every kv, array element and tensor. Built by
 * tests/fuzz/run.sh outside automake; `make check` replays the corpus instead.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ggml_type.h"
#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

/* Reads every byte a value points at, so ASan sees any out-of-map pointer. */
static void touch(const void *p, uint64_t n)
{
    const volatile uint8_t *b = p;
    for (uint64_t i = 0; i < n; i++)
        sink += b[i];
}

static void walk_value(const struct aarmd_gguf_value *v, int depth)
{
    if (depth > 16)
        abort();   /* the reader bounds nesting at 8 */
    switch (v->type) {
    case AARMD_GGUF_STRING:
        touch(v->v.str.data, v->v.str.len);
        break;
    case AARMD_GGUF_ARRAY:
        for (uint64_t i = 0; i < v->v.arr.n; i++) {
            struct aarmd_gguf_value e;
            if (aarmd_gguf_arr_get(v, i, &e) != 0)
                abort();   /* every in-range element must decode */
            walk_value(&e, depth + 1);
            sink += (uint64_t)aarmd_gguf_arr_i64(v, i);
            double d = aarmd_gguf_arr_f64(v, i);
            memcpy((void *)&e, &d, sizeof d);
            sink += e.type;
        }
        break;
    default:
        sink += v->v.u64;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct aarmd_gguf *g = NULL;
    char err[256];
    /* copy so the buffer ends exactly at `size` (ASan catches one-past reads) */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    if (aarmd_gguf_open_mem(copy, size, "fuzz.gguf", &g, err, sizeof err) != 0) {
        if (g || strncmp(err, "fuzz.gguf", 9))
            abort();   /* errors leave *out NULL and name the input */
        free(copy);
        return 0;
    }
    sink += aarmd_gguf_version(g) + aarmd_gguf_alignment(g) + aarmd_gguf_data_offset(g);
    for (uint64_t i = 0; i < aarmd_gguf_n_kv(g); i++) {
        const struct aarmd_gguf_kv *kv = aarmd_gguf_kv_at(g, i);
        touch(kv->key.data, kv->key.len);
        walk_value(&kv->value, 0);
        char key[128];
        size_t n = kv->key.len < sizeof key - 1 ? (size_t)kv->key.len : sizeof key - 1;
        memcpy(key, kv->key.data, n);
        key[n] = '\0';
        if (!memchr(key, 0, n) && n == kv->key.len && aarmd_gguf_find(g, key) != &kv->value)
            abort();   /* keys are unique, so find returns this kv */
        uint32_t u32; uint64_t u64; int64_t i64; float f; _Bool b;
        struct aarmd_gguf_str s; const struct aarmd_gguf_value *a;
        char buf[16];
        sink += (uint64_t)aarmd_gguf_get_u32(g, key, &u32) + (uint64_t)aarmd_gguf_get_u64(g, key, &u64)
              + (uint64_t)aarmd_gguf_get_i64(g, key, &i64) + (uint64_t)aarmd_gguf_get_f32(g, key, &f)
              + (uint64_t)aarmd_gguf_get_bool(g, key, &b) + (uint64_t)aarmd_gguf_get_str(g, key, &s)
              + (uint64_t)aarmd_gguf_get_cstr(g, key, buf, sizeof buf) + (uint64_t)aarmd_gguf_get_arr(g, key, &a);
    }
    for (uint64_t i = 0; i < aarmd_gguf_n_tensors(g); i++) {
        const struct aarmd_gguf_tensor *t = aarmd_gguf_tensor_at(g, i);
        uint64_t nb;
        if (!aarmd_type_nbytes(t->type, t->ne, t->n_dims, &nb) || nb != t->nbytes)
            abort();
        if (aarmd_gguf_find_tensor(g, t->name) != t)
            abort();
        if (t->nbytes) {
            /* first and last byte of the data lie inside the buffer */
            sink += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->nbytes - 1];
        }
        if ((const uint8_t *)t->data + t->nbytes > copy + size)
            abort();
    }
    aarmd_gguf_free(g);
    free(copy);
    return 0;
}
