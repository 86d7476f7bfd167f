/*
 * fake_kernels.cpp — the kernel side of the fake Metal device (fake_metal.m):
 * every kernel of shaders/metal by name, called through the CPU harness with
 * the encoder's bindings (index 0: the setBytes argument struct). Test-only.
 */
#include <stdint.h>
#include <string.h>

#include <functional>
#include <map>
#include <string>

#include "quant.metal"
#include "ops.metal"
#include "attention.metal"

typedef std::function<void(void *const *b)> fake_call;

#define B(i, T) ((T)b[i])
#define FAKE_QUANT(NAME)                                                                                           \
    m["aarmd_mv_" #NAME] = [](void *const *b) {                                                                    \
        aarmd_mv_##NAME(*B(0, aarmd_mtl_mv_args *), B(1, const uchar *), B(2, const float *), B(3, float *));     \
    };                                                                                                             \
    m["aarmd_mm_" #NAME] = [](void *const *b) {                                                                    \
        aarmd_mm_##NAME(*B(0, aarmd_mtl_mv_args *), B(1, const uchar *), B(2, const float *), B(3, float *));     \
    };                                                                                                             \
    m["aarmd_get_rows_" #NAME] = [](void *const *b) {                                                              \
        aarmd_get_rows_##NAME(*B(0, aarmd_mtl_get_rows_args *), B(1, const uchar *), B(2, const int *),           \
                              B(3, float *));                                                                      \
    };

static const std::map<std::string, fake_call> &kernels()
{
    static std::map<std::string, fake_call> m;
    if (!m.empty())
        return m;
    FAKE_QUANT(f32)
    FAKE_QUANT(f16)
    FAKE_QUANT(bf16)
    FAKE_QUANT(q4_0)
    FAKE_QUANT(q4_1)
    FAKE_QUANT(q5_0)
    FAKE_QUANT(q5_1)
    FAKE_QUANT(q8_0)
    FAKE_QUANT(q4_k)
    FAKE_QUANT(q5_k)
    FAKE_QUANT(q6_k)
    m["aarmd_norm"] = [](void *const *b) {
        aarmd_norm(*B(0, aarmd_mtl_norm_args *), B(1, const float *), B(2, float *), B(3, const float *),
                   B(4, const float *));
    };
    m["aarmd_rope"] = [](void *const *b) { aarmd_rope(*B(0, aarmd_mtl_rope_args *), B(1, float *), B(2, const float *)); };
    m["aarmd_softmax"] = [](void *const *b) { aarmd_softmax(*B(0, aarmd_mtl_softmax_args *), B(1, float *)); };
    m["aarmd_eltwise"] = [](void *const *b) {
        aarmd_eltwise(*B(0, aarmd_mtl_eltwise_args *), B(1, float *), B(2, const float *));
    };
    m["aarmd_kv_store"] = [](void *const *b) {
        aarmd_kv_store(*B(0, aarmd_mtl_kv_store_args *), B(1, const float *), B(2, const float *), B(3, half *),
                       B(4, half *), B(5, const aarmd_mtl_kv_tok *), B(6, const uint *));
    };
    m["aarmd_attention"] = [](void *const *b) {
        aarmd_attention(*B(0, aarmd_mtl_attn_args *), B(1, const float *), B(2, const half *), B(3, const half *),
                        B(4, float *), B(5, const aarmd_mtl_kv_tok *), B(6, const uint *));
    };
    return m;
}

extern "C" int aarmd_fake_kernel_exists(const char *name);
extern "C" int aarmd_fake_dispatch(const char *name, void *const *bufs, const uint32_t grid[3], const uint32_t tg[3],
                                   char *err, size_t errlen);

extern "C" int aarmd_fake_kernel_exists(const char *name)
{
    return kernels().count(name) != 0;
}

extern "C" int aarmd_fake_dispatch(const char *name, void *const *bufs, const uint32_t grid[3], const uint32_t tg[3],
                                   char *err, size_t errlen)
{
    auto it = kernels().find(name);
    if (it == kernels().end()) {
        snprintf(err, errlen, "no kernel %s", name);
        return -1;
    }
    const fake_call &f = it->second;
    if (metal_sim::dispatch({grid[0], grid[1], grid[2]}, {tg[0], tg[1], tg[2]}, [&] { f(bufs); })) {
        snprintf(err, errlen, "%s: %s", name, metal_sim::last_error());
        return -1;
    }
    return 0;
}
