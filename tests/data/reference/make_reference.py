#!/usr/bin/env python3
"""make_reference.py — reference logits for tests/plugins/test_cpu_reference.c.

An independent forward pass written in numpy: it reads the GGUF with the
`gguf` Python package (pip install gguf numpy), dequantizes every weight with
gguf.quants.dequantize (the package's own implementation of the ggml block
formats, not ours), derives the hyperparameters from the GGUF keys itself
(not through core/model.c) and computes in float32 with float64 reductions.
Activations are NOT quantized (our CPU backend quantizes them to Q8 for
quantized weights), so the C test compares under stated tolerances.

Writes into this directory:
  reference.json   cases: model file (or gguf-synth command), prompt ids,
                   top-1 id per prompt position, logits file of the last position;
                   greedy runs: prompt, generated ids, top1-top2 margin per step
  *.f16, *.f32     last-position logits, raw little-endian float16 (real models)
                   or float32 (synthetic models)

Usage:
  python3 make_reference.py --models ../../../models [--synth-cli PATH/aarmd-cli]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))

# Prompts as token ids: words of the sentence looked up one by one in each
# model's vocabulary (tokenizer.ggml.tokens) — the tokenizer is tested elsewhere.
#   "The capital of France is Paris. The capital of Germany is"
#   "Once upon a time, there was a little"
REAL_CASES = [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2_capital",
     [504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 4521, 314]),
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2_story",
     [6403, 1980, 253, 655, 28, 665, 436, 253, 1838]),
    ("gemma-3-270m-q4_k_m.gguf", "gemma3_capital",
     [2, 669, 5279, 529, 7001, 563, 9079, 236761, 669, 5279, 529, 9405, 563]),
    ("gemma-3-270m-q4_k_m.gguf", "gemma3_story",
     [2, 9920, 3324, 496, 990, 236764, 993, 691, 496, 2268]),
]
GREEDY_TOKENS = 64
# Long prompts, checked at the last position only (one batched prefill in the
# test): past gemma3's 512-token sliding window and past the backend's default
# 512-token chunk. The two sentences above, repeated.
LONG_CASES = [
    ("gemma-3-270m-q4_k_m.gguf", "gemma3_long",
     ([2] + ([669, 5279, 529, 7001, 563, 9079, 236761, 9920, 3324, 496, 990, 236764, 993, 691, 496, 2268,
              236761] * 40))[:600]),
]

# Synthetic models: `aarmd-cli gguf-synth` arguments (deterministic from --seed).
SYNTH_ARCHS = ["llama", "qwen2", "qwen3", "phi3", "gpt2", "gemma3"]
SYNTH_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
SYNTH_PROMPT = [1, 7, 42, 99, 5, 63, 120, 3, 77, 18, 250, 11]
# Untied output (a random projection, so top-1 is not just the input token);
# gemma3 with a training context of 16, hence a sliding window of 8 < len(prompt).
SYNTH_COMMON = ["--layers", "2", "--seed", "7", "--vocab-size", "256", "--untied"]
SYNTH_EXTRA = {"gemma3": ["--ctx", "16"]}


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    return f.contents()


class Model:
    """Weights (dequantized, float32) and hyperparameters of one GGUF."""

    def __init__(self, path):
        r = gguf.GGUFReader(path)
        a = field(r, "general.architecture")
        self.arch = a
        self.n_embd = int(field(r, f"{a}.embedding_length"))
        self.n_layer = int(field(r, f"{a}.block_count"))
        self.n_head = int(field(r, f"{a}.attention.head_count"))
        self.n_head_kv = int(field(r, f"{a}.attention.head_count_kv", self.n_head))
        self.head_dim = int(field(r, f"{a}.attention.key_length", self.n_embd // self.n_head))
        self.n_rot = int(field(r, f"{a}.rope.dimension_count", self.head_dim))
        self.base = float(field(r, f"{a}.rope.freq_base", 10000.0))
        self.eps = float(field(r, f"{a}.attention.layer_norm_rms_epsilon",
                               field(r, f"{a}.attention.layer_norm_epsilon", 1e-5)))
        self.window = int(field(r, f"{a}.attention.sliding_window", 0) or 0)
        self.rope_scale_type = field(r, f"{a}.rope.scaling.type", "none")
        self.rope_factor = float(field(r, f"{a}.rope.scaling.factor", 1.0) or 1.0)
        self.attn_softcap = float(field(r, f"{a}.attn_logit_softcapping", 0.0) or 0.0)
        self.final_softcap = float(field(r, f"{a}.final_logit_softcapping", 0.0) or 0.0)
        self.tensors = {}
        self.types = {}
        self.q8_act = False   # diagnostic: quantize activations like the backend (--q8-act)
        for t in r.tensors:
            self.types[t.name] = t.tensor_type
            ne = [int(x) for x in t.shape]
            w = dequantize(t.data, t.tensor_type).astype(np.float32)
            if len(ne) == 1:
                w = w.reshape(-1)
            else:
                w = w.reshape(-1, ne[0])
            self.tensors[t.name] = w
        self.n_vocab = self.tensors["token_embd.weight"].shape[0]

        self.layernorm = a == "gpt2"
        self.rope = {"llama": "normal", "gpt2": None}.get(a, "neox")
        self.act = "gelu" if a in ("gpt2", "gemma3") else "silu"
        self.embd_scale = math.sqrt(self.n_embd) if a == "gemma3" else 1.0
        self.attn_scale = 1.0 / math.sqrt(self.head_dim)
        if a == "gemma3":
            q_pre = field(r, f"{a}.attention.query_pre_attn_scalar", None)
            if q_pre:
                self.attn_scale = 1.0 / math.sqrt(float(q_pre))
        # gemma3: every 6th layer is global, the others use the sliding window and base 10000
        self.swa = [a == "gemma3" and self.window > 0 and (il + 1) % 6 != 0 for il in range(self.n_layer)]
        self.base_swa = 10000.0 if a == "gemma3" else self.base

    def get(self, name):
        return self.tensors.get(name)


def rmsnorm(x, w, eps):
    x64 = x.astype(np.float64)
    y = x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + eps)
    return (y * w if w is not None else y).astype(np.float32)


def layernorm(x, w, b, eps):
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=-1, keepdims=True)
    var = ((x64 - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x64 - mu) / np.sqrt(var + eps)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y.astype(np.float32)


def q8_round(x, wtype):
    """Diagnostic only: x rounded through 8-bit blocks as a ggml-style backend
    feeds quantized weights (32-element blocks, 256 for K-quants)."""
    T = gguf.GGMLQuantizationType
    if wtype in (T.F32, T.F16, T.BF16):
        return x
    bs = 256 if wtype in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K) else 32
    shp = x.shape
    b = x.reshape(-1, bs).astype(np.float32)
    amax = np.abs(b).max(axis=1, keepdims=True)
    d = amax / 127.0
    q = np.round(np.where(d > 0, b / np.where(d > 0, d, 1), 0))
    return (q * d).reshape(shp).astype(np.float32)


def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope(x, pos, n_rot, base, kind, freq_scale=1.0):
    """x: [T, H, D]; rotates the first n_rot dims of each head."""
    if kind is None:
        return x
    half = n_rot // 2
    inv = base ** (-2.0 * np.arange(half, dtype=np.float64) / n_rot)
    theta = np.outer(np.asarray(pos, dtype=np.float64), inv) * freq_scale   # [T, half]
    c = np.cos(theta)[:, None, :]
    s = np.sin(theta)[:, None, :]
    y = x.astype(np.float64).copy()
    if kind == "neox":
        a, b = y[..., :half].copy(), y[..., half:n_rot].copy()
        y[..., :half] = a * c - b * s
        y[..., half:n_rot] = a * s + b * c
    else:
        a, b = y[..., 0:n_rot:2].copy(), y[..., 1:n_rot:2].copy()
        y[..., 0:n_rot:2] = a * c - b * s
        y[..., 1:n_rot:2] = a * s + b * c
    return y.astype(np.float32)


class Cache:
    def __init__(self, m):
        self.k = [np.zeros((0, m.n_head_kv, m.head_dim), np.float32) for _ in range(m.n_layer)]
        self.v = [np.zeros((0, m.n_head_kv, m.head_dim), np.float32) for _ in range(m.n_layer)]
        self.n = 0


def forward(m, tokens, cache, last_only=False):
    """Appends tokens to cache; returns logits [T, n_vocab] for every new token
    (only [1, n_vocab] for the last one with last_only)."""
    T = len(tokens)
    pos = np.arange(cache.n, cache.n + T)
    g = m.get
    x = g("token_embd.weight")[tokens] * np.float32(m.embd_scale)
    if g("position_embd.weight") is not None:
        x = x + g("position_embd.weight")[pos]

    def norm(v, name):
        if m.layernorm:
            return layernorm(v, g(name + ".weight"), g(name + ".bias"), m.eps)
        return rmsnorm(v, g(name + ".weight"), m.eps)

    def lin(v, name):
        if m.q8_act:
            v = q8_round(v, m.types[name + ".weight"])
        y = v @ g(name + ".weight").T
        b = g(name + ".bias")
        return y + b if b is not None else y

    fs = 1.0 / m.rope_factor if m.rope_scale_type == "linear" else 1.0
    for il in range(m.n_layer):
        p = f"blk.{il}."
        h = norm(x, p + "attn_norm")
        qd, kd = m.n_head * m.head_dim, m.n_head_kv * m.head_dim
        if g(p + "attn_qkv.weight") is not None:
            qkv = lin(h, p + "attn_qkv")
            q, k, v = qkv[:, :qd], qkv[:, qd:qd + kd], qkv[:, qd + kd:]
        else:
            q, k, v = lin(h, p + "attn_q"), lin(h, p + "attn_k"), lin(h, p + "attn_v")
        q = q.reshape(T, m.n_head, m.head_dim)
        k = k.reshape(T, m.n_head_kv, m.head_dim)
        v = v.reshape(T, m.n_head_kv, m.head_dim)
        if g(p + "attn_q_norm.weight") is not None:
            q = rmsnorm(q, g(p + "attn_q_norm.weight"), m.eps)
            k = rmsnorm(k, g(p + "attn_k_norm.weight"), m.eps)
        base = m.base_swa if m.swa[il] else m.base
        q = rope(q, pos, m.n_rot, base, m.rope, fs)
        k = rope(k, pos, m.n_rot, base, m.rope, fs)
        cache.k[il] = np.concatenate([cache.k[il], k])
        cache.v[il] = np.concatenate([cache.v[il], v])
        K, V = cache.k[il], cache.v[il]                    # [S, Hkv, D]
        S = K.shape[0]
        grp = m.n_head // m.n_head_kv
        Kh = np.repeat(K, grp, axis=1).astype(np.float64)  # [S, H, D]
        Vh = np.repeat(V, grp, axis=1).astype(np.float64)
        sc = np.einsum("thd,shd->hts", q.astype(np.float64), Kh) * m.attn_scale
        if m.attn_softcap > 0:
            sc = m.attn_softcap * np.tanh(sc / m.attn_softcap)
        kpos = np.arange(S)
        mask = kpos[None, :] > pos[:, None]
        if m.swa[il]:
            mask |= (pos[:, None] - kpos[None, :]) >= m.window
        sc = np.where(mask[None], -np.inf, sc)
        sc = sc - sc.max(axis=-1, keepdims=True)
        pr = np.exp(sc)
        pr /= pr.sum(axis=-1, keepdims=True)
        a = np.einsum("hts,shd->thd", pr, Vh).astype(np.float32).reshape(T, qd)
        a = lin(a, p + "attn_output")
        if g(p + "post_attention_norm.weight") is not None:
            a = rmsnorm(a, g(p + "post_attention_norm.weight"), m.eps)
        x = x + a
        h = norm(x, p + "ffn_norm")
        if m.act == "gelu" and g(p + "ffn_gate.weight") is None:
            f = gelu(lin(h, p + "ffn_up"))
        elif g(p + "ffn_gate.weight") is None:               # phi3: fused [gate | up]
            gu = lin(h, p + "ffn_up")
            n_ff = gu.shape[1] // 2
            f = silu(gu[:, :n_ff]) * gu[:, n_ff:]
        else:
            act = gelu if m.act == "gelu" else silu
            f = act(lin(h, p + "ffn_gate")) * lin(h, p + "ffn_up")
        f = lin(f, p + "ffn_down")
        if g(p + "post_ffw_norm.weight") is not None:
            f = rmsnorm(f, g(p + "post_ffw_norm.weight"), m.eps)
        x = x + f
    cache.n += T
    if last_only:
        x = x[-1:]
    x = norm(x, "output_norm")
    out = g("output.weight")
    if out is None:
        out = g("token_embd.weight")
    logits = (x.astype(np.float64) @ out.T.astype(np.float64))
    if m.final_softcap > 0:
        logits = m.final_softcap * np.tanh(logits / m.final_softcap)
    return logits.astype(np.float32)


def run_case(m, name, prompt, out_dir, ext="f16", last_only=False):
    """ext f16 for the real models (size), f32 for the synthetic ones (their
    logits have an RMS of ~0.2, where float16 steps would hide our errors)."""
    logits = forward(m, list(prompt), Cache(m), last_only)
    top1 = [int(np.argmax(r)) for r in logits]
    fn = name + "." + ext
    logits[-1].astype("<f2" if ext == "f16" else "<f4").tofile(os.path.join(out_dir, fn))
    srt = np.sort(logits, axis=1)
    margins = [float(r[-1] - r[-2]) for r in srt]
    return {"name": name, "prompt": [int(t) for t in prompt], "top1": top1,
            "top1_margin": [round(x, 5) for x in margins], "logits": fn, "n_vocab": int(m.n_vocab)}


def greedy(m, prompt, n):
    cache = Cache(m)
    logits = forward(m, list(prompt), cache)[-1]
    ids, margins = [], []
    for _ in range(n):
        t = int(np.argmax(logits))
        s = np.sort(logits)
        ids.append(t)
        margins.append(round(float(s[-1] - s[-2]), 5))
        logits = forward(m, [t], cache)[-1]
    return ids, margins


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.join(HERE, "..", "..", "..", "models"))
    ap.add_argument("--synth-cli", default=None, help="path of aarmd-cli (for gguf-synth models)")
    ap.add_argument("--greedy", type=int, default=GREEDY_TOKENS)
    ap.add_argument("--only", default=None, help="comma list: real,greedy,synth")
    ap.add_argument("--q8-act", action="store_true",
                    help="diagnostic: round activations to 8-bit blocks like the backend; writes to --out-dir")
    ap.add_argument("--out-dir", default=HERE)
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else {"real", "greedy", "synth"}
    out_dir = args.out_dir
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "reference.json")
    ref = json.load(open(path)) if os.path.exists(path) else {}
    ref["generator"] = "tests/data/reference/make_reference.py (numpy %s, gguf-py)" % np.__version__

    models = {}
    if "real" in only or "greedy" in only:
        for fname, _, _ in REAL_CASES:
            if fname not in models:
                print("loading", fname, file=sys.stderr)
                models[fname] = Model(os.path.join(args.models, fname))
                models[fname].q8_act = args.q8_act
    if "real" in only:
        ref["real"] = []
        for fname, name, prompt in REAL_CASES:
            c = run_case(models[fname], name, prompt, out_dir)
            c["model"] = fname
            ref["real"].append(c)
            print(name, "top1", c["top1"], file=sys.stderr)
        for fname, name, prompt in LONG_CASES:
            c = run_case(models[fname], name, prompt, out_dir, last_only=True)
            c["model"] = fname
            c["last_only"] = True
            ref["real"].append(c)
            print(name, "top1 (last)", c["top1"], file=sys.stderr)
    if "greedy" in only:
        ref["greedy"] = []
        done = set()
        for fname, name, prompt in REAL_CASES:
            if fname in done:
                continue
            done.add(fname)
            ids, margins = greedy(models[fname], prompt, args.greedy)
            ref["greedy"].append({"model": fname, "name": name, "prompt": prompt, "ids": ids,
                                  "margin": margins})
            print(name, "greedy", ids, file=sys.stderr)
    if "synth" in only and args.synth_cli:
        ref["synth"] = []
        with tempfile.TemporaryDirectory() as td:
            for arch in SYNTH_ARCHS:
                for ty in SYNTH_TYPES:
                    name = f"synth_{arch}_{ty.lower()}"
                    out = os.path.join(td, name + ".gguf")
                    argv = ["gguf-synth", "--arch", arch, "--type", ty] + SYNTH_COMMON + SYNTH_EXTRA.get(arch, [])
                    r = subprocess.run([args.synth_cli] + argv + ["--out", out], capture_output=True, text=True)
                    if r.returncode != 0:
                        print(name, "gguf-synth failed:", r.stderr.strip(), file=sys.stderr)
                        continue
                    m = Model(out)
                    prompt = [t % m.n_vocab for t in SYNTH_PROMPT]
                    m.q8_act = args.q8_act
                    c = run_case(m, name, prompt, out_dir, "f32")
                    c["synth_args"] = argv
                    c["type"] = ty.lower()
                    c["arch"] = arch
                    ref["synth"].append(c)
                    print(name, "top1", c["top1"], file=sys.stderr)
    with open(path, "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
