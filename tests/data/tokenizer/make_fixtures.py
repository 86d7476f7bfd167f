#!/usr/bin/env python3
"""Writes the tokenizer fixtures of tests/core/test_tokenizer_models.c and the
tokenizer.json of the hf-json test, from tokenizer implementations aarmd did not
write:

  * SmolLM2 (gpt2 BPE, pre "smollm"): Hugging Face `tokenizers`, built from the
    GGUF's tokens and merges with SmolLM2's own pre-tokenizer (Digits with
    individual_digits, then ByteLevel without prefix space); its control tokens
    are added as special tokens (so they are parsed in text).
  * Gemma 3 (llama / SentencePiece BPE): Google's `sentencepiece`, from a
    ModelProto built out of the GGUF's pieces, scores and types (BPE model,
    identity normalizer, no dummy prefix, byte fallback). SentencePiece does not
    parse control tokens in text, so these cases have parse_special = false.
  * tokenizer.json for hf-json: the gpt-2 vocab test file's tokens and merges
    written in Hugging Face's format (ByteLevel pre-tokenizer).

usage: pip install gguf tokenizers sentencepiece protobuf
       python3 tests/data/tokenizer/make_fixtures.py   (from the repository root)
"""
import json
import os
import sys

import gguf
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OUT = os.path.join(ROOT, "tests", "data", "tokenizer")

TEXTS = [
    "Hello world",
    " Hello World!",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they'll say it's fine, won't they? We've DONE IT.",
    "def add(a, b):\n    return a + b  # sum\n\n\tprint(add(1, 2))",
    "int main(void) { printf(\"%d\\n\", 42); return 0; }",
    "3.14159 + 2718281828 = 1234567890123; 1,000,000 and 0x1F",
    "我想在apple工作1314151天～ 日本語のテキスト。",
    "🚀 (normal) 😶\u200d🌫️ 👨\u200d👩\u200d👧\u200d👦 ✅🦙",
    "مرحبا بالعالم، كيف حالك؟",
    "e\u0301 a\u0308 n\u0303 \u1e9b\u0323 Zalgo: Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319",
    "Ελληνικά και Русский текст",
    "   leading and trailing spaces   ",
    "tabs\t\tand\nnew\n\nlines\r\n  \n",
    "a          b",
    "                ",
    "\u00a0non-breaking\u2003em-space\u3000ideographic",
    "Ünïcödé Çàsé ẞ straße",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nHi there<end_of_turn>\n",
]


def field_list(r, key):
    f = r.fields.get(key)
    if f is None:
        return None
    out = []
    for i in f.data:
        part = f.parts[i]
        if f.types[-1] == gguf.GGUFValueType.STRING:
            out.append(bytes(part).decode("utf-8"))
        else:
            out.append(part.tolist()[0])
    return out


def smollm_cases(path):
    r = gguf.GGUFReader(path)
    tokens = field_list(r, "tokenizer.ggml.tokens")
    types = field_list(r, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field_list(r, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    cases = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "parse_special": True, "ids": ids})
    return cases


def gemma_cases(path):
    r = gguf.GGUFReader(path)
    tokens = field_list(r, "tokenizer.ggml.tokens")
    types = field_list(r, "tokenizer.ggml.token_type")
    scores = field_list(r, "tokenizer.ggml.scores")
    m = sp_pb2.ModelProto()
    m.trainer_spec.model_type = sp_pb2.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(tokens)
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id = 3
    m.trainer_spec.bos_id = 2
    m.trainer_spec.eos_id = 1
    m.trainer_spec.pad_id = 0
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = False
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    for t, ty, sc in zip(tokens, types, scores):
        p = m.pieces.add()
        # the converter wrote user-defined pieces with real spaces; SentencePiece
        # matches them in its escaped text, where spaces are U+2581
        p.piece = t.replace(" ", "\u2581") if ty == 4 else t
        p.score = sc
        p.type = ty
    sp = spm.SentencePieceProcessor(model_proto=m.SerializeToString())
    cases = []
    for text in TEXTS:
        cases.append({"text": text, "parse_special": False, "ids": sp.encode(text)})
    return cases


def write_hf_json(path, out_path):
    r = gguf.GGUFReader(path)
    tokens = field_list(r, "tokenizer.ggml.tokens")
    types = field_list(r, "tokenizer.ggml.token_type")
    merges = field_list(r, "tokenizer.ggml.merges")
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}
                         for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
    # the reference implementation must agree with llama.cpp's golden file on it
    tok = Tokenizer.from_file(out_path)
    inp = open(path + ".inp", encoding="utf-8").read().split("\n__ggml_vocab_test__\n")[:-1]
    outs = open(path + ".out", encoding="utf-8").read().split("\n")
    bad = sum(1 for t, o in zip(inp, outs) if tok.encode(t, add_special_tokens=False).ids != [int(x) for x in o.split()])
    print(f"{out_path}: {len(inp)} golden texts, {bad} differ between HF tokenizers and llama.cpp")


def main():
    models_dir = os.path.join(ROOT, "models")
    fixtures = {
        "note": "Expected ids from independent implementations; written by make_fixtures.py. "
                "Do not edit by hand.",
        "models": [
            {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "reference": "huggingface tokenizers (BPE, Digits + ByteLevel)",
             "cases": smollm_cases(os.path.join(models_dir, "SmolLM2-135M-Instruct.Q4_1.gguf"))},
            {"file": "gemma-3-270m-q4_k_m.gguf", "reference": "google sentencepiece (BPE model proto from the GGUF)",
             "cases": gemma_cases(os.path.join(models_dir, "gemma-3-270m-q4_k_m.gguf"))},
        ],
    }
    with open(os.path.join(OUT, "fixtures.json"), "w", encoding="utf-8") as f:
        json.dump(fixtures, f, ensure_ascii=False, indent=1)
    write_hf_json(os.path.join(ROOT, "tests", "data", "vocab", "ggml-vocab-gpt-2.gguf"),
                  os.path.join(OUT, "hf-gpt-2", "tokenizer.json"))
    print("wrote", os.path.join(OUT, "fixtures.json"))


if __name__ == "__main__":
    sys.exit(main())
