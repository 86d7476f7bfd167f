/*
 * kv.c — allocation and row writes of a sequence's KV cache (kv.h). It does
 * not compute attention (ops.c does) nor decide positions (forward.c does).
 */
#include "kv.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

float cpu_f16_lut[65536];
static pthread_once_t lut_once = PTHREAD_ONCE_INIT;

static void lut_fill(void)
{
    for (uint32_t i = 0; i < 65536; i++)
        cpu_f16_lut[i] = cpu_f16_to_f32((uint16_t)i);
}

int cpu_kv_init(struct cpu_kv *kv, uint32_t type, int n_layer, int32_t n_ctx, int kv_dim)
{
    memset(kv, 0, sizeof *kv);
    if (type != AARMD_TYPE_F16 && type != AARMD_TYPE_F32)
        return AARMD_EINVAL;
    if (n_layer <= 0 || n_ctx <= 0 || kv_dim <= 0)
        return AARMD_EINVAL;
    pthread_once(&lut_once, lut_fill);
    kv->type = type;
    kv->n_layer = n_layer;
    kv->n_ctx = n_ctx;
    kv->kv_dim = kv_dim;
    kv->elt = type == AARMD_TYPE_F16 ? 2 : 4;
    size_t bytes = (size_t)n_layer * (size_t)n_ctx * (size_t)kv_dim * kv->elt;
    /* calloc: untouched pages cost nothing until the sequence grows into them */
    kv->k = calloc(1, bytes);
    kv->v = calloc(1, bytes);
    if (!kv->k || !kv->v) {
        cpu_kv_fini(kv);
        return AARMD_ENOMEM;
    }
    return AARMD_OK;
}

void cpu_kv_fini(struct cpu_kv *kv)
{
    if (!kv)
        return;
    free(kv->k);
    free(kv->v);
    kv->k = kv->v = NULL;
}

size_t cpu_kv_bytes(const struct cpu_kv *kv)
{
    return 2 * (size_t)kv->n_layer * (size_t)kv->n_ctx * (size_t)kv->kv_dim * kv->elt;
}

#if defined(__x86_64__)
#include <immintrin.h>

/* F16C conversion: round to nearest even with overflow to inf and exact
 * subnormals, the same bits as cpu_f32_to_f16 for every non-NaN input (a
 * test compares them); the scalar loop was 1-1.5% of a prefill profile. */
__attribute__((target("avx,f16c"))) static int f32_to_f16_f16c(uint16_t *dst, const float *src, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return i;
}

static int have_f16c(void)
{
    static int v = -1;   /* racy but idempotent */
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
    }
    return v;
}
#endif

void cpu_kv_f32_to_f16(uint16_t *dst, const float *src, int n)
{
    int i = 0;
#if defined(__x86_64__)
    if (have_f16c())
        i = f32_to_f16_f16c(dst, src, n);
#endif
    for (; i < n; i++)
        dst[i] = cpu_f32_to_f16(src[i]);
}

void cpu_kv_store(struct cpu_kv *kv, int layer, int32_t pos, const float *k, const float *v)
{
    void *kr = (void *)cpu_kv_k_row(kv, layer, pos);
    void *vr = (void *)cpu_kv_v_row(kv, layer, pos);
    if (kv->type == AARMD_TYPE_F32) {
        memcpy(kr, k, (size_t)kv->kv_dim * sizeof(float));
        memcpy(vr, v, (size_t)kv->kv_dim * sizeof(float));
        return;
    }
    cpu_kv_f32_to_f16(kr, k, kv->kv_dim);
    cpu_kv_f32_to_f16(vr, v, kv->kv_dim);
}
