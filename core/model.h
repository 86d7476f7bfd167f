/*
 * model.h — model adapters: a GGUF file's general.architecture and its keys
 * become one generic decoder description (struct aarmd_model_desc in
 * aarmd_backend.h) that every backend consumes. Supported: llama (Llama 2/3,
 * SmolLM2, TinyLlama, Mistral), qwen2, qwen3, phi3, gpt2, gemma3.
 */
#ifndef AARMD_MODEL_H
#define AARMD_MODEL_H

#include <stddef.h>

#include "aarmd_backend.h"

struct aarmd_gguf;

/*
 * Builds the description of `g`. Tensors point into g's map: `g` must outlive
 * the description. A missing or misshaped tensor is an error naming it; an
 * unknown architecture is an error listing the supported ones.
 * On success *out is owned by the caller: free with aarmd_model_desc_free.
 */
int aarmd_model_desc_from_gguf(const struct aarmd_gguf *g, struct aarmd_model_desc **out,
                               char *err, size_t errlen);
void aarmd_model_desc_free(struct aarmd_model_desc *d);   /* accepts NULL */

/* Tensor of a role (layer -1 for globals); NULL when absent. */
const struct aarmd_tensor *aarmd_model_tensor(const struct aarmd_model_desc *d, int role, int layer);

/* "llama, qwen2, qwen3, phi3, gpt2, gemma3". */
const char *aarmd_model_supported_archs(void);

/* quant_kind for /health: from general.file_type (e.g. "Q4_K_M"), else the
 * dominant tensor type by bytes ("Q4_1"). Writes into buf. */
void aarmd_model_quant_kind(const struct aarmd_gguf *g, char *buf, size_t cap);

/* Name of a role, e.g. "attn_q". */
const char *aarmd_role_name(int role);

#endif
