#!/usr/bin/env python3
"""Writes the dequantization fixtures of tests/plugins/test_cpu_kernels.c.

For each type: <type>.blocks (raw ggml blocks) and <type>.f32 (the floats
gguf-py's gguf.quants.dequantize makes of them, little-endian). Block sources:
gguf.quants.quantize of seeded random floats where gguf-py can quantize the
type, blocks cut from the real models in models/ where they hold the type,
and seeded random bytes with sane f16 scales (any bytes are a valid block).

Usage: python3 make_quant_fixtures.py [MODELS_DIR]   (pip install gguf numpy)
"""
import importlib.metadata
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "models")
rng = np.random.default_rng(20240611)

# byte offsets of the f16 scale fields in each block, to keep random blocks finite
SCALE_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
MODEL_FILES = ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"]


def random_blocks(qtype, n):
    _, size = GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for off in SCALE_FIELDS[qtype]:
        d = (rng.standard_normal(n) * 0.02).astype(np.float16)
        b[:, off:off + 2] = d.view(np.uint8).reshape(n, 2)
    return b


def model_blocks(qtype, n):
    """n blocks spread over the first tensor of this type in the models, or None."""
    _, size = GGML_QUANT_SIZES[qtype]
    for f in MODEL_FILES:
        path = os.path.join(MODELS, f)
        if not os.path.exists(path):
            continue
        r = gguf.GGUFReader(path)
        for t in r.tensors:
            if t.tensor_type == qtype:
                raw = np.asarray(t.data).view(np.uint8).reshape(-1, size)
                idx = np.linspace(0, raw.shape[0] - 1, n).astype(np.int64)
                return raw[idx], f"{f}:{t.name}"
    return None, None


def quantized_blocks(qtype, n):
    blk, _ = GGML_QUANT_SIZES[qtype]
    x = rng.standard_normal((n, blk)).astype(np.float32)
    x[0] *= 0.0                      # an all-zero block
    x[1] += 3.0                      # an all-positive block (Q4_1/Q5_1 min > 0)
    try:
        q = gguf.quants.quantize(x, qtype)
    except NotImplementedError:
        return None
    return q.reshape(n, -1)


def write(name, blocks, floats, sources, notes):
    blocks.astype(np.uint8).tofile(os.path.join(HERE, name + ".blocks"))
    floats.astype("<f4").tofile(os.path.join(HERE, name + ".f32"))
    notes.append(f"- {name}: {len(blocks)} blocks from " + ", ".join(sources))


def main():
    notes = []
    for qtype in [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]:
        parts, sources = [], []
        q = quantized_blocks(qtype, 6)
        if q is not None:
            parts.append(q)
            sources.append("gguf.quants.quantize of seeded normal floats")
        m, where = model_blocks(qtype, 6)
        if m is not None:
            parts.append(m)
            sources.append(where)
        parts.append(random_blocks(qtype, 6))
        sources.append("seeded random bytes")
        blocks = np.concatenate(parts, axis=0)
        floats = gguf.quants.dequantize(blocks, qtype).reshape(-1)
        write(qtype.name.lower(), blocks, floats, sources, notes)

    # F16 and BF16: every exponent, both signs, random mantissas, no NaN.
    h = rng.integers(0, 65536, size=1024, dtype=np.uint16)
    h = h[(h & 0x7C00) != 0x7C00]
    h = np.concatenate([h, np.array([0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0x7C00, 0xFC00], np.uint16)])
    write("f16", h.view(np.uint8).reshape(-1, 2), h.view(np.float16).astype(np.float32), ["seeded random halves + edge cases"], notes)
    b = rng.integers(0, 65536, size=1024, dtype=np.uint16)
    b = b[(b & 0x7F80) != 0x7F80]
    bf = gguf.quants.dequantize(b.view(np.uint8), T.BF16).reshape(-1)
    write("bf16", b.view(np.uint8).reshape(-1, 2), bf, ["seeded random bfloat16 patterns"], notes)

    with open(os.path.join(HERE, "NOTE.md"), "w") as f:
        f.write("# Quantization fixtures\n\n"
                "Made by `make_quant_fixtures.py` (this folder) with the `gguf` Python package "
                f"{importlib.metadata.version('gguf')} (pip install gguf numpy), from the real models "
                "fetched by tools/fetch-models.sh where noted. `<type>.blocks` are raw ggml blocks, "
                "`<type>.f32` the floats `gguf.quants.dequantize` makes of them (little-endian f32). "
                "tests/plugins/test_cpu_kernels.c requires its own dequantization to match bit for bit.\n\n")
        f.write("\n".join(notes) + "\n")


if __name__ == "__main__":
    main()
