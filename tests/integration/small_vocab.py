#!/usr/bin/env python3
"""small_vocab.py IN.gguf OUT.gguf [N] - a GPT-2 vocab cut to its first N tokens
(default 1024; the last id becomes <|endoftext|>), for measuring the server's own
cost per token with the mock backend, whose logits and sampling cost O(vocab).
Needs the `gguf` Python package (pip install gguf). Not used by make check."""
import sys

import gguf

src, dst = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
r = gguf.GGUFReader(src)


def field(name):
    f = r.fields[name]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


tokens = field("tokenizer.ggml.tokens")
merges = field("tokenizer.ggml.merges")
assert len(tokens) > n > 257
keep = tokens[: n - 1] + ["<|endoftext|>"]
# GPT-2 merge i makes token 256 + i: keep the merges whose result stays in range
merges = merges[: n - 1 - 256]
w = gguf.GGUFWriter(dst, "gpt2")
w.add_name("gpt-2-small-vocab")
w.add_context_length(1024)
w.add_embedding_length(768)
w.add_feed_forward_length(3072)
w.add_block_count(12)
w.add_head_count(12)
w.add_layer_norm_eps(1e-5)
w.add_tokenizer_model("gpt2")
w.add_tokenizer_pre("gpt-2")
w.add_token_list(keep)
w.add_token_types([1] * (n - 1) + [3])
w.add_token_merges(merges)
w.add_bos_token_id(n - 1)
w.add_eos_token_id(n - 1)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
