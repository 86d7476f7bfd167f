/*
 * cuda_blas.c — cuBLAS for the CUDA backend's prefill GEMMs, opened with
 * dlopen at model load so the plugin still loads (and falls back to its own
 * matmul kernels) where libcublas is absent. Only GemmEx F16 x F16 -> F32 or F16.
 */
#include <dlfcn.h>
#include <stdlib.h>

#include <cublas_v2.h>

#include "cuda_model.h"

typedef cublasStatus_t (*create_fn)(cublasHandle_t *);
typedef cublasStatus_t (*destroy_fn)(cublasHandle_t);
typedef cublasStatus_t (*set_stream_fn)(cublasHandle_t, cudaStream_t);
typedef cublasStatus_t (*gemm_ex_fn)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                     const void *, const void *, cudaDataType, int, const void *, cudaDataType, int,
                                     const void *, void *, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);

struct cuda_blas {
    void *lib;
    cublasHandle_t h;
    destroy_fn destroy;
    gemm_ex_fn gemm;
};

struct cuda_blas *cuda_blas_new(const struct aarmd_host *host, cudaStream_t stream)
{
    static const char *const names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
    void *lib = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++)
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        cuda_log(host, AARMD_LOG_INFO, "cuda: libcublas not found (%s); prefill uses the matmul kernels", dlerror());
        return NULL;
    }
    struct cuda_blas *b = calloc(1, sizeof *b);
    create_fn create = (create_fn)dlsym(lib, "cublasCreate_v2");
    set_stream_fn set_stream = (set_stream_fn)dlsym(lib, "cublasSetStream_v2");
    if (!b)
        goto fail;
    b->lib = lib;
    b->destroy = (destroy_fn)dlsym(lib, "cublasDestroy_v2");
    b->gemm = (gemm_ex_fn)dlsym(lib, "cublasGemmEx");
    if (!create || !set_stream || !b->destroy || !b->gemm) {
        cuda_log(host, AARMD_LOG_WARN, "cuda: libcublas lacks cublasCreate_v2/cublasGemmEx; not used");
        goto fail;
    }
    if (create(&b->h) != CUBLAS_STATUS_SUCCESS) {
        cuda_log(host, AARMD_LOG_WARN, "cuda: cublasCreate failed; prefill uses the matmul kernels");
        goto fail;
    }
    set_stream(b->h, stream);
    return b;
fail:
    free(b);
    dlclose(lib);
    return NULL;
}

void cuda_blas_free(struct cuda_blas *b)
{
    if (!b)
        return;
    b->destroy(b->h);
    dlclose(b->lib);
    free(b);
}

int cuda_blas_gemm(struct cuda_blas *b, const void *w16, const void *a16, void *y, int y16, int n_in, int n_out,
                   int n_tok)
{
    /* column-major: Y^T (n_out x T) = W^T-as-stored (W is [n_out][n_in] row-major) x A^T (n_in x T) */
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = b->gemm(b->h, CUBLAS_OP_T, CUBLAS_OP_N, n_out, n_tok, n_in, &one, w16, CUDA_R_16F, n_in, a16,
                                CUDA_R_16F, n_in, &zero, y, y16 ? CUDA_R_16F : CUDA_R_32F, n_out, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT);
    return st == CUBLAS_STATUS_SUCCESS ? 0 : -1;
}
