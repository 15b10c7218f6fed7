#!/usr/bin/env python3
"""Regenerates the seed corpora fuzz/corpus/NAME/ from the repository's real
files (models/stories260K, tests/data), shrunk to a few KB each, plus small
hand-made files for the variants the real files lack. Only the standard
library is used. hvq containers, GGUF and NPZ copies of the small model are
written by hvqconv itself, so a built tree is needed:

    fuzz/make_seeds.py BUILD_DIR        # BUILD_DIR holds the built hvqconv

The seeds are committed; run this only to regenerate them. ../shared/data
is used when present (the llama-imatrix GGUF of stories260K)."""
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(TOP, "fuzz", "corpus")
SEP = b"\n#HVQ-SHARD\n"


def out(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(rel):
    with open(os.path.join(TOP, rel), "rb") as f:
        return f.read()


# ---- safetensors ---------------------------------------------------------
def st_parse(b):
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]


def st_build(tensors, meta=None, pad=True):
    """tensors: list of (name, dtype, shape, bytes)."""
    h, off, data = {}, 0, b""
    if meta is not None:
        h["__metadata__"] = meta
    for name, dt, shape, raw in tensors:
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    js = json.dumps(h, separators=(",", ":")).encode()
    if pad:
        js += b" " * ((8 - len(js) % 8) % 8)
    return struct.pack("<Q", len(js)) + js + data


def f32_to(raw, fmt):
    vals = struct.unpack("<%df" % (len(raw) // 4), raw)
    if fmt == "F16":
        return struct.pack("<%de" % len(vals), *vals)
    if fmt == "BF16":
        return b"".join(raw[i + 2:i + 4] for i in range(0, len(raw), 4))
    if fmt == "F64":
        return struct.pack("<%dd" % len(vals), *vals)
    return raw


def mini_model():
    """A few tensors of stories260K, each cut to its first rows."""
    h, data = st_parse(read("models/stories260K/model.safetensors"))
    pick = [("model.layers.0.input_layernorm.weight", None),
            ("model.layers.0.self_attn.q_proj.weight", 16),
            ("model.layers.0.self_attn.k_proj.weight", 8),
            ("model.layers.0.mlp.down_proj.weight", 8)]
    ts = []
    for name, rows in pick:
        e = h[name]
        a, b = e["data_offsets"]
        raw = data[a:b]
        shape = list(e["shape"])
        if rows:
            row_bytes = len(raw) // shape[0]
            raw = raw[:rows * row_bytes]
            shape[0] = rows
        ts.append((name, "F32", shape, raw))
    return ts


def safetensors_seeds(ts):
    out("safetensors", "stories-mini-f32.safetensors", st_build(ts, {"format": "pt"}))
    for dt in ("F16", "BF16", "F64"):
        out("safetensors", "stories-mini-%s.safetensors" % dt.lower(),
            st_build([(n, dt, s, f32_to(r, dt)) for n, _, s, r in ts[:2]]))
    out("safetensors", "misc.safetensors", read("tests/data/safetensors/misc.safetensors"))
    odd = [("i8", "I8", [3, 2], bytes(range(6))), ("u16", "U16", [2], b"\1\0\2\0"),
           ("i64", "I64", [1], struct.pack("<q", -5)), ("flag", "BOOL", [4], b"\0\1\1\0"),
           ("fp8", "F8_E4M3", [2, 2], b"\x38\x40\xb8\x00"), ("f4", "F4", [4], b"\x12\x34"),
           ("scalar", "F32", [], struct.pack("<f", 1.5)), ("empty", "F16", [0, 4], b"")]
    out("safetensors", "dtypes.safetensors", st_build(odd, {"a": "b", "c": ""}))
    bad = os.path.join(TOP, "tests/data/safetensors/bad")
    for n in sorted(os.listdir(bad)):
        out("safetensors", "bad-" + n, read(os.path.join("tests/data/safetensors/bad", n)))


def index_seeds(ts):
    def index(names):
        wm = {n: s for n, s in names}
        return json.dumps({"metadata": {"total_size": 1}, "weight_map": wm}, indent=2).encode()
    a = st_build(ts[:2], {"format": "pt"})
    b = st_build(ts[2:])
    idx = index([(t[0], "a.safetensors") for t in ts[:2]] + [(t[0], "b.safetensors") for t in ts[2:]])
    out("safetensors_index", "stories-mini-2-shards", idx + SEP + a + SEP + b)
    c = st_build(ts[3:])
    b2 = st_build(ts[2:3])
    idx3 = index([(ts[0][0], "a.safetensors"), (ts[1][0], "a.safetensors"),
                  (ts[2][0], "b.safetensors"), (ts[3][0], "c.safetensors")])
    out("safetensors_index", "stories-mini-3-shards", idx3 + SEP + a + SEP + b2 + SEP + c)
    for case in ("sharded", "sharded-absent-tensor", "sharded-missing-shard", "sharded-unlisted"):
        d = "tests/data/safetensors/" + case
        text = read(d + "/model.safetensors.index.json")
        text = text.replace(b"model-00001-of-00002.safetensors", b"a.safetensors")
        text = text.replace(b"model-00002-of-00002.safetensors", b"b.safetensors")
        parts = [text]
        for s in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
            p = os.path.join(TOP, d, s)
            if os.path.exists(p):
                parts.append(read(os.path.join(d, s)))
        out("safetensors_index", case, SEP.join(parts))


# ---- npy / npz -----------------------------------------------------------
def npy(descr, shape, raw, fortran=False, version=(1, 0)):
    hdr = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (
        descr, "True" if fortran else "False",
        "".join("%d," % d for d in shape) if len(shape) == 1 else ", ".join(str(d) for d in shape))
    pre = 10 if version[0] == 1 else 12
    total = pre + len(hdr) + 1
    hdr += " " * ((64 - total % 64) % 64) + "\n"
    enc = hdr.encode("latin1" if version[0] < 3 else "utf8")
    lenfmt = "<H" if version[0] == 1 else "<I"
    return b"\x93NUMPY" + bytes(version) + struct.pack(lenfmt, len(enc)) + enc + raw


def npy_seeds(ts):
    out("npy", "hessian.npy", read("tests/data/npz/hessian.npy"))
    out("npy", "tinystories-2k-head.npy", read("tests/data/eval/tinystories-2k.npy")[:2176])
    q = ts[1]
    out("npy", "q_proj-f4.npy", npy("<f4", q[2], q[3][:4096]))
    out("npy", "q_proj-f2.npy", npy("<f2", [4, 64], f32_to(q[3][:1024], "F16")))
    vals = struct.unpack("<64f", q[3][:256])
    out("npy", "be-f8-fortran.npy", npy(">f8", [8, 8], struct.pack(">64d", *vals), fortran=True))
    out("npy", "v2-i4.npy", npy("<i4", [3], struct.pack("<3i", 1, -2, 3), version=(2, 0)))
    out("npy", "v3-u1.npy", npy("|u1", [2, 2], b"\1\2\3\4", version=(3, 0)))
    out("npy", "bool-scalar.npy", npy("|b1", [], b"\1"))
    out("npy", "i8-empty.npy", npy("<i8", [0, 3], b""))


def npz_seeds(ts):
    for n in ("empty.npz", "numpy.npz", "numpy-compressed.npz", "versions.npz"):
        out("npz", n, read("tests/data/npz/" + n))
    members = {"q_proj.npy": npy("<f4", ts[1][2], ts[1][3][:4096]),
               "norm.npy": npy("<f4", ts[0][2], ts[0][3]),
               "ids.npy": npy("<i8", [4], struct.pack("<4q", 1, 2, 3, 4))}
    for mode, name in ((zipfile.ZIP_STORED, "stories-mini-stored.npz"),
                       (zipfile.ZIP_DEFLATED, "stories-mini-deflated.npz")):
        bio = io.BytesIO()
        with zipfile.ZipFile(bio, "w", mode) as z:
            for k, v in members.items():
                z.writestr(k, v)
        out("npz", name, bio.getvalue())


# ---- GGUF ------------------------------------------------------------------
def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    fmts = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
    if t == 8:
        return gstr(v)
    if t == 9:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gval(et, x) for x in items)
    return struct.pack(fmts[t], v)


def gguf(kvs, tensors, version=3, align=32):
    """kvs: list of (key, type, value); tensors: (name, dims ne0-first, ggml type, raw)."""
    h = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        h += gstr(k) + struct.pack("<I", t) + gval(t, v)
    off, data = 0, b""
    for name, dims, gt, raw in tensors:
        h += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        h += struct.pack("<IQ", gt, off)
        pad = (align - len(raw) % align) % align
        data += raw + b"\0" * pad
        off += len(raw) + pad
    h += b"\0" * ((align - len(h) % align) % align)
    return h + data


def q8_0(vals):
    o = b""
    for i in range(0, len(vals), 32):
        blk = vals[i:i + 32]
        d = max(abs(x) for x in blk) / 127 or 1.0
        o += struct.pack("<e", d) + struct.pack("<32b", *[max(-127, min(127, round(x / d))) for x in blk])
    return o


def q4_0(vals):
    o = b""
    for i in range(0, len(vals), 32):
        blk = vals[i:i + 32]
        m = max(blk, key=abs)
        d = m / -8 or 1.0
        q = [max(0, min(15, int(x / d + 8.5))) for x in blk]
        o += struct.pack("<e", d) + bytes(q[j] | q[j + 16] << 4 for j in range(16))
    return o


def gguf_seeds(ts):
    q = ts[1]
    vals = struct.unpack("<%df" % (len(q[3]) // 4), q[3])
    kvs = [("general.architecture", 8, "llama"), ("general.name", 8, "stories-mini"),
           ("llama.context_length", 4, 512), ("llama.embedding_length", 4, 64),
           ("llama.block_count", 4, 1), ("llama.rope.freq_base", 6, 10000.0),
           ("llama.attention.layer_norm_rms_epsilon", 6, 1e-5),
           ("tokenizer.ggml.model", 8, "llama"),
           ("tokenizer.ggml.tokens", 9, (8, ["<unk>", "<s>", "</s>", "a", "b"])),
           ("tokenizer.ggml.scores", 9, (6, [0.0, 0.0, 0.0, -1.0, -2.0])),
           ("tokenizer.ggml.token_type", 9, (5, [2, 3, 3, 1, 1])),
           ("tokenizer.ggml.bos_token_id", 4, 1), ("general.file_type", 4, 0)]
    tens = [("blk.0.attn_norm.weight", [64], 0, ts[0][3]),
            ("blk.0.attn_q.weight", [64, 16], 0, q[3]),
            ("blk.0.attn_k.weight", [64, 8], 1, f32_to(ts[2][3], "F16"))]
    out("gguf", "stories-mini-f32.gguf", gguf(kvs, tens))
    out("gguf", "stories-mini-v2.gguf", gguf(kvs[:3], tens[:2], version=2))
    out("gguf", "stories-mini-q8_0.gguf", gguf(kvs[:2], [("blk.0.attn_q.weight", [64, 16], 8, q8_0(vals))]))
    out("gguf", "stories-mini-q4_0.gguf", gguf(kvs[:2], [("blk.0.attn_q.weight", [64, 16], 2, q4_0(vals))]))
    out("gguf", "stories-mini-bf16.gguf", gguf(kvs[:1], [("t", [64, 2], 30, f32_to(q[3][:512], "BF16"))]))
    every = [("u8", 0, 7), ("i8", 1, -7), ("u16", 2, 700), ("i16", 3, -700), ("u32", 4, 70000),
             ("i32", 5, -70000), ("f32", 6, 0.5), ("bool", 7, True), ("str", 8, "x"),
             ("u64", 10, 1 << 40), ("i64", 11, -(1 << 40)), ("f64", 12, 0.25),
             ("arr.u8", 9, (0, [1, 2])), ("arr.arr", 9, (9, [(4, [1]), (4, [2, 3])])),
             ("arr.empty", 9, (8, [])), ("general.alignment", 4, 64)]
    out("gguf", "every-type.gguf", gguf(every, [("t", [4], 0, b"\0" * 16)], align=64))
    out("gguf", "no-tensors.gguf", gguf(kvs[:2], []))


def imatrix_seeds():
    dat = read("tests/data/imatrix/stories260K.imatrix.dat")
    out("imatrix", "stories260K.imatrix.dat", dat)
    # the first two entries, and the trailer
    n = struct.unpack("<i", dat[:4])[0]
    off, ents = 4, []
    for _ in range(n):
        ln = struct.unpack("<i", dat[off:off + 4])[0]
        end = off + 4 + ln + 8
        nv = struct.unpack("<i", dat[end - 4:end])[0]
        ents.append(dat[off:end + 4 * nv])
        off = end + 4 * nv
    out("imatrix", "stories260K-2-entries.imatrix.dat",
        struct.pack("<i", 2) + ents[0] + ents[1] + dat[off:])
    out("imatrix", "no-trailer.imatrix.dat", struct.pack("<i", 1) + ents[0])
    shared = os.path.join(TOP, "..", "shared", "data", "stories260K", "imatrix.gguf")
    if os.path.exists(shared):
        with open(shared, "rb") as f:
            out("imatrix", "stories260K.imatrix.gguf", f.read())
    kvs = [("general.type", 8, "imatrix"), ("imatrix.datasets", 9, (8, ["tiny.txt"])),
           ("imatrix.chunk_count", 4, 2), ("imatrix.chunk_size", 4, 512)]
    sums = struct.pack("<64f", *[float(i % 7) for i in range(64)])
    tens = [("blk.0.attn_q.weight.in_sum2", [64], 0, sums),
            ("blk.0.attn_q.weight.counts", [1], 0, struct.pack("<f", 512.0)),
            ("blk.0.ffn_down_exps.weight.in_sum2", [32, 2], 0, sums[:256]),
            ("blk.0.ffn_down_exps.weight.counts", [2], 0, struct.pack("<2f", 100.0, 28.0))]
    out("imatrix", "hand-made.imatrix.gguf", gguf(kvs, tens))


def yaml_seeds():
    for d in ("pipelines", "tests/data/pipelines", "tests/data/cli"):
        for n in sorted(os.listdir(os.path.join(TOP, d))):
            if n.endswith(".yaml"):
                out("yaml", d.replace("/", "-") + "-" + n, read(os.path.join(d, n)))
    out("yaml", "every-stage.yaml", b"""name: all
input: in.safetensors
output: out.hvq
report: out.json
seed: 7
select: { include: ["*.weight", "x*"], exclude: [] }
stages:
  hessian: { plugin: imatrix, path: m.imatrix, missing: error, names: hf }
  importance: { plugin: obd }
  clusterer: { plugin: kmeans, block_size: 4, centroids: 256, iterations: 3, fit: shrink }
  residual: { plugin: coo16, sparsity: 1.5% }
  writer: { plugin: hvq, max_shard_size: 5GB }
overrides:
  - match: "*down*"
    clusterer: { plugin: rtn, group_size: 32, mode: asymmetric }
    residual: { plugin: none }
evaluate: { tokens: t.npy, ctx: 128, windows: 2 }
""")
    out("yaml", "anchors.yaml", b"""x: &s { plugin: uniform }
stages:
  hessian: *s
  clusterer: { plugin: rtn }
  writer: { plugin: dequant, dtype: bf16, format: gguf }
input: "a\\tb"
output: 'o.npz'
""")


def hvq_seeds(build):
    hv = os.path.join(build, "hvqconv")
    tmp = tempfile.mkdtemp()
    try:
        model = os.path.join(tmp, "mini.safetensors")
        with open(model, "wb") as f:
            f.write(st_build(mini_model(), {"format": "pt"}))
        runs = {
            "rtn-row": "clusterer: { plugin: rtn }",
            "rtn-g32-asym": "clusterer: { plugin: rtn, group_size: 32, mode: asymmetric }",
            "kmeans-coo16": "importance: { plugin: hasvq }\n  clusterer: { plugin: kmeans, "
                            "block_size: 2, centroids: 64, iterations: 2, fit: shrink }\n"
                            "  residual: { plugin: coo16, sparsity: 0.02 }",
            "kmeans-b4": "clusterer: { plugin: kmeans, block_size: 4, centroids: 16, "
                         "iterations: 2, fit: shrink }",
            "ecsq": "clusterer: { plugin: ecsq, bits: 4 }",
        }
        for name, stages in runs.items():
            y = os.path.join(tmp, name + ".yaml")
            o = os.path.join(tmp, name + ".hvq")
            with open(y, "w") as f:
                f.write("name: %s\ninput: %s\noutput: %s\nselect: { exclude: ['*norm*'] }\n"
                        "stages:\n  %s\n  writer: { plugin: hvq }\n" % (name, model, o, stages))
            subprocess.run([hv, "-q", "run", "--force", y], check=True)
            with open(o, "rb") as f:
                out("hvq", "stories-mini-%s.hvq" % name, f.read())
        # A sharded container: the index, then each shard after the line
        # "#HVQ-SHARD" (fuzz_hvq.c).
        d = os.path.join(tmp, "sharded")
        os.mkdir(d)
        y = os.path.join(tmp, "sharded.yaml")
        with open(y, "w") as f:
            f.write("name: sharded\ninput: %s\noutput: %s\nselect: { exclude: ['*norm*'] }\n"
                    "stages:\n  %s\n  writer: { plugin: hvq, max_shard_size: 1000 }\n"
                    % (model, os.path.join(d, "m.hvq"), runs["kmeans-coo16"]))
        subprocess.run([hv, "-q", "run", "--force", y], check=True)
        shards = sorted(x for x in os.listdir(d) if x.endswith(".hvq"))
        parts = [open(os.path.join(d, "m.hvq.index.json"), "rb").read()]
        parts += [open(os.path.join(d, x), "rb").read() for x in shards]
        out("hvq", "stories-mini-kmeans-coo16-%d-shards" % len(shards),
            b"\n#HVQ-SHARD\n".join(parts))
    finally:
        shutil.rmtree(tmp)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    ts = mini_model()
    safetensors_seeds(ts)
    index_seeds(ts)
    npy_seeds(ts)
    npz_seeds(ts)
    gguf_seeds(ts)
    imatrix_seeds()
    yaml_seeds()
    hvq_seeds(os.path.abspath(sys.argv[1]))


if __name__ == "__main__":
    main()
