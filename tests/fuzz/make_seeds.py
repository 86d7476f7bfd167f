#!/usr/bin/env python3
"""make_seeds.py — writes the small GGUF seed files of tests/fuzz/corpus/.

Usage: make_seeds.py OUTDIR [REAL.gguf ...]

Synthetic seeds cover every value type, nested arrays, v2, custom alignment
and several tensor types. Each REAL file gives two seeds: its first 4 KiB
(a truncated header) and a trimmed but valid copy (arrays cut to 40 items,
the first 6 tensors shrunk to one row). Seeds stay a few KiB each.
"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
          F32: "<f", BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
# ggml type -> (block elems, block bytes), the ones the seeds use
BLOCK = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
         30: (1, 2), 24: (1, 1), 26: (1, 4), 39: (32, 17), 35: (256, 66)}


def w_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def w_val(t, v):
    if t in SCALAR:
        return struct.pack(SCALAR[t], v)
    if t == STR:
        return w_str(v)
    et, items = v
    out = struct.pack("<IQ", et, len(items))
    for it in items:
        out += w_val(et, it)
    return out


def write(kvs, tensors, version=3, align=32):
    """kvs: [(key, type, value)]; tensors: [(name, ne list, ggml type, data bytes)]"""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += w_str(k) + struct.pack("<I", t) + w_val(t, v)
    off, infos = 0, []
    for name, ne, typ, data in tensors:
        infos.append(w_str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
                     + struct.pack("<IQ", typ, off))
        off += (len(data) + align - 1) // align * align
    out += b"".join(infos)
    out += b"\0" * (-len(out) % align)
    for i, (_, _, _, data) in enumerate(tensors):
        out += data
        if i + 1 < len(tensors):
            out += b"\0" * (-len(data) % align)
    return out


def nbytes(ne, typ):
    be, bb = BLOCK[typ]
    n = ne[0] // be * bb
    for d in ne[1:]:
        n *= d
    return n


def tensor(name, ne, typ, fill=0x11):
    return (name, ne, typ, bytes((fill + i) & 0xff for i in range(nbytes(ne, typ))))


# ---- reading real files (trusted input: no validation here) ----------------

class Reader:
    def __init__(self, b):
        self.b, self.o = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.o)[0]
        self.o += struct.calcsize(fmt)
        return v

    def s(self):
        n = self.take("<Q")
        v = self.b[self.o:self.o + n]
        self.o += n
        return v

    def val(self, t):
        if t in SCALAR:
            return self.take(SCALAR[t])
        if t == STR:
            return self.s()
        et, n = self.take("<I"), self.take("<Q")
        return (et, [self.val(et) for _ in range(n)])


def trimmed(path, max_items=40, max_tensors=6):
    with open(path, "rb") as f:
        b = f.read(64 << 20)   # metadata of the models fits in the first MiB
    r = Reader(b)
    assert r.b[:4] == b"GGUF"
    r.o = 4
    version, nt, nkv = r.take("<I"), r.take("<Q"), r.take("<Q")
    kvs = []
    for _ in range(nkv):
        k = r.s()
        t = r.take("<I")
        v = r.val(t)
        if t == ARR:
            v = (v[0], v[1][:max_items])
        if t == STR and len(v) > 200:
            v = v[:200]
        kvs.append((k, t, v))
    tensors = []
    for _ in range(nt):
        name = r.s()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        typ, _ = r.take("<I"), r.take("<Q")
        if len(tensors) < max_tensors and typ in BLOCK:
            ne = [ne[0]] + [1] * (nd - 1)
            tensors.append(tensor(name, ne, typ))
    align = 32
    for k, t, v in kvs:
        if k == b"general.alignment":
            align = v
    return write(kvs, tensors, version, align)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seeds = {}
    seeds["empty-v3"] = write([], [])
    seeds["v2-scalars"] = write([
        ("general.architecture", STR, "llama"), ("u8", U8, 7), ("i8", I8, -3), ("u16", U16, 65535),
        ("i16", I16, -2), ("u32", U32, 4000000000), ("i32", I32, -5), ("f32", F32, 0.5),
        ("b", BOOL, True), ("u64", U64, 2**64 - 1), ("i64", I64, -2**63), ("f64", F64, 1e300),
    ], [], version=2)
    seeds["arrays"] = write([
        ("tokens", ARR, (STR, ["<s>", "</s>", "a", "bb", "", "\u00e9"])),
        ("scores", ARR, (F32, [0.0, -1.5, 3.25])),
        ("types", ARR, (I32, [1, 3, 6, -1])),
        ("bools", ARR, (BOOL, [True, False])),
        ("u64s", ARR, (U64, [1, 2**63])),
        ("nested", ARR, (ARR, [(I32, [1, 2]), (STR, ["x"]), (ARR, [(U8, [9])])])),
        ("empty", ARR, (STR, [])),
    ], [])
    seeds["tensors"] = write([("general.architecture", STR, "test")], [
        tensor("f32", [8, 2], 0), tensor("f16", [16], 1), tensor("q8_0", [64, 2], 8),
        tensor("q4_k", [256], 12), tensor("q6_k", [256], 14), tensor("zero", [0, 3], 2),
        tensor("mxfp4", [32], 39),
    ])
    seeds["align64"] = write([("general.alignment", U32, 64), ("x", STR, "y")], [
        tensor("a", [32], 3), tensor("b", [4, 2, 2, 2], 0),
    ], align=64)
    seeds["vocab-like"] = write([
        ("general.architecture", STR, "gpt2"), ("tokenizer.ggml.model", STR, "gpt2"),
        ("tokenizer.ggml.tokens", ARR, (STR, ["t%d" % i for i in range(120)])),
        ("tokenizer.ggml.token_type", ARR, (I32, [1] * 120)),
        ("tokenizer.ggml.merges", ARR, (STR, ["t %d" % i for i in range(60)])),
        ("tokenizer.ggml.bos_token_id", U32, 0),
    ], [])
    for p in sys.argv[2:]:
        base = os.path.basename(p).replace(".gguf", "")
        with open(p, "rb") as f:
            seeds["head4k-" + base] = f.read(4096)
        seeds["trim-" + base] = trimmed(p)
    for name, data in seeds.items():
        with open(os.path.join(out, name + ".gguf"), "wb") as f:
            f.write(data)
        print("%-40s %6d bytes" % (name, len(data)))


if __name__ == "__main__":
    main()
