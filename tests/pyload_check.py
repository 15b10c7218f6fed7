#!/usr/bin/env python3
"""The Python half of tests/pyload.sh (needs numpy; python/hvqconv.py is
imported from $HVQ_PYLOAD_MODULE_DIR when set, else from HVQ_TOP_SRCDIR
or from beside this file's parent).

  pyload_check.py compare CONTAINER DECODED.safetensors
      python/hvqconv.py's load(CONTAINER) against what `hvqconv decode
      --dtype f32` wrote: the same names and shapes, and bit for bit the
      same values (float32 bit patterns; the decoder's F16/BF16 pass-through
      tensors widened exactly, other dtypes byte for byte). Exit 1 when any
      tensor differs.
  pyload_check.py synth OUT.safetensors
      a small random model whose matrices have 512 columns (the 256-value
      super-blocks of llama.cpp's K types fit), with F16, BF16, F64, I64,
      I32, BOOL and F8_E4M3 tensors to pass through, and beside it
      OUT.hessian.safetensors: a diagonal per matrix (log-normal, so column
      gains are not all 1).
  pyload_check.py ecsq-corrupt CONTAINER OUT
      CONTAINER with the first stream of its first ecsq tensor all 0xff
      bytes (an exponent that never ends) and that tensor's checksum made
      to match: a stream only the ecsq decoder can find corrupt.
"""
import json
import os
import struct
import sys
import zlib

import numpy as np

top = os.environ.get("HVQ_TOP_SRCDIR") or os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.environ.get("HVQ_PYLOAD_MODULE_DIR") or os.path.join(top, "python"))
import hvqconv  # noqa: E402


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack_from("<Q", blob)[0]
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    types = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8", "I64": "<i8",
             "I32": "<i4", "U8": "u1", "I8": "i1", "U16": "<u2", "BOOL": "?",
             "F8_E4M3": "u1"}
    for name, t in header.items():
        b, e = t["data_offsets"]
        a = np.frombuffer(blob[8 + n + b:8 + n + e], dtype=types[t["dtype"]])
        out[name] = (t["dtype"], a.reshape(t["shape"]))
    return out


def compare(container, decoded):
    got = hvqconv.load(container)
    ref = read_safetensors(decoded)
    bad = 0
    if list(got) != list(ref):
        print("FAIL: names differ: %s vs %s" % (sorted(set(got) ^ set(ref)), ""))
        return 1
    for name, (dtype, r) in ref.items():
        g = got[name]
        if dtype == "F16":
            r = r.astype(np.float32)
        elif dtype == "BF16":
            r = (r.astype(np.uint32) << 16).view(np.float32)
        if g.shape != r.shape or g.dtype != r.dtype:
            print("FAIL: %s: %s %s vs decode's %s %s" % (name, g.dtype, g.shape, r.dtype,
                                                          r.shape))
            bad += 1
            continue
        same = g.tobytes() == r.tobytes()  # bit for bit, NaNs included
        if not same:
            diff = np.flatnonzero(g.reshape(-1).view(np.uint8) != r.reshape(-1).view(np.uint8))
            print("FAIL: %s: differs (first differing byte %d)" % (name, diff[0]))
            bad += 1
    print("%s: %d tensors, %d differ from hvqconv decode" % (container, len(ref), bad))
    return 1 if bad else 0


def synth(path):
    rng = np.random.default_rng(7)
    tensors = {}
    for i in range(2):
        for name, (r, c) in (("q_proj", (64, 512)), ("down_proj", (48, 768))):
            w = rng.standard_t(5, size=(r, c)).astype(np.float32) * 0.02
            w *= np.exp(0.3 * rng.standard_normal((r, 1))).astype(np.float32)
            w.reshape(-1)[rng.integers(0, w.size, 8)] *= 30
            tensors["layers.%d.%s.weight" % (i, name)] = ("F32", w)
    tensors["layers.0.small.weight"] = ("F32", rng.standard_normal((3, 5)).astype(np.float32))
    tensors["layers.1.half.weight"] = ("F16", (rng.standard_normal((32, 256)) * 0.05)
                                       .astype(np.float16))
    tensors["norm.weight"] = ("F16", (1 + 0.05 * rng.standard_normal(512)).astype(np.float16))
    bf = (rng.standard_normal(64).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    tensors["embed.bf16"] = ("BF16", bf)
    tensors["position_ids"] = ("I64", np.arange(10, dtype=np.int64))
    tensors["rope.f64"] = ("F64", rng.standard_normal((4, 3)))
    tensors["mask.bool"] = ("BOOL", rng.integers(0, 2, 7).astype(bool))
    tensors["ids.i32"] = ("I32", rng.integers(-5, 5, (2, 2)).astype(np.int32))
    tensors["scale.f8"] = ("F8_E4M3", rng.integers(0, 256, 6).astype(np.uint8))
    hess = {k: ("F32", np.exp(1.2 * rng.standard_normal(a.shape[1])).astype(np.float32))
            for k, (dt, a) in tensors.items() if a.ndim == 2}
    write_safetensors(path, {"format": "pt"}, tensors)
    write_safetensors(path.replace(".safetensors", "") + ".hessian.safetensors", {}, hess)
    return 0


def write_safetensors(path, meta, tensors):
    header, blobs, off = {"__metadata__": meta} if meta else {}, [], 0
    for name, (dt, a) in tensors.items():
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def ecsq_corrupt(src, dst):
    with open(src, "rb") as f:
        blob = bytearray(f.read())
    n = struct.unpack_from("<Q", blob)[0]
    header = json.loads(blob[8:8 + n])
    meta = header["__metadata__"]
    entries = json.loads(meta["hvq.tensors"])
    e = next(e for e in entries if e["encoding"] == "hvq" and
             any(s.endswith("::clusterer.streams") for s in e["stored"]))
    lengths = next(s for s in e["stored"] if s.endswith("::clusterer.lengths"))
    streams = next(s for s in e["stored"] if s.endswith("::clusterer.streams"))
    b = 8 + n + header[lengths]["data_offsets"][0]
    first = struct.unpack_from("<I", blob, b)[0]
    b = 8 + n + header[streams]["data_offsets"][0]
    blob[b:b + first] = b"\xff" * first
    crc = 0
    for s in e["stored"]:
        b, end = header[s]["data_offsets"]
        crc = zlib.crc32(blob[8 + n + b:8 + n + end], crc)
    e["crc32"] = crc
    meta["hvq.tensors"] = json.dumps(entries)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob[8 + n:])
    print(e["name"])


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    if len(sys.argv) == 3 and sys.argv[1] == "synth":
        sys.exit(synth(sys.argv[2]))
    if len(sys.argv) == 4 and sys.argv[1] == "ecsq-corrupt":
        sys.exit(ecsq_corrupt(sys.argv[2], sys.argv[3]))
    sys.exit(__doc__)
