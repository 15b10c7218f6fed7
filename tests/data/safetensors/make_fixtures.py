#!/usr/bin/env python3
"""Generates the safetensors test fixtures in this directory.

Run from anywhere: python3 make_fixtures.py. The output is deterministic;
the generated files are checked in, so this only needs re-running when a
fixture changes. Headers are written by hand (not with the safetensors
package) so that broken files can be produced on purpose.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def header_text(obj):
    return json.dumps(obj, separators=(",", ":"))


def st_file(header, data=b"", pad=True, length=None):
    """8-byte length + header (str) [+ spaces to a multiple of 8] + data."""
    h = header.encode("utf-8")
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    n = len(h) if length is None else length
    return struct.pack("<Q", n) + h + data


def write(rel, blob):
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(blob)


def tensors_file(tensors, meta=None, order=None):
    """tensors: list of (name, dtype, shape, bytes) laid out in list order;
    the header lists them in `order` (names) or sorted by name."""
    entries = {}
    off = 0
    data = b""
    for name, dtype, shape, raw in tensors:
        entries[name] = {"dtype": dtype, "shape": list(shape),
                         "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    hdr = {}
    if meta is not None:
        hdr["__metadata__"] = meta
    for name in (order or sorted(entries)):
        hdr[name] = entries[name]
    return st_file(header_text(hdr), data)


def f32(n, start=0.0):
    """n float32 values start, start+1, ..."""
    return struct.pack("<%df" % n, *[start + i for i in range(n)])


def f16(n, start=0.0):
    return struct.pack("<%de" % n, *[start + i for i in range(n)])


def bf16(n, start=0.0):
    """bfloat16 by truncating float32 (exact for these small integers)."""
    bits = struct.unpack("<%dI" % n, f32(n, start))
    return struct.pack("<%dH" % n, *[b >> 16 for b in bits])


# --------------------------------------------------------------------------
# A sharded model: two shards and an index. Within each shard the header is
# sorted by name but the data is laid out in another order, so readers must
# order tensors by offset.
SHARD1 = [
    ("model.layers.0.w", "F16", (2, 2), f16(4, 100)),
    ("model.embed.weight", "F32", (4, 3), f32(12, 0)),
]
SHARD2 = [
    ("model.layers.1.w", "BF16", (2, 2), bf16(4, 200)),
    ("lm_head.weight", "F32", (3, 4), f32(12, 300)),
]
S1 = "model-00001-of-00002.safetensors"
S2 = "model-00002-of-00002.safetensors"


def index(weight_map, total=0):
    return json.dumps({"metadata": {"total_size": total},
                       "weight_map": weight_map}, indent=2).encode()


def good_map():
    m = {}
    for name, _, _, _ in SHARD1:
        m[name] = S1
    for name, _, _, _ in SHARD2:
        m[name] = S2
    return dict(sorted(m.items()))


def sharded(d, weight_map, shard1=SHARD1, shard2=SHARD2, write2=True):
    write(f"{d}/{S1}", tensors_file(shard1, {"format": "pt", "shard": "1"}))
    if write2:
        write(f"{d}/{S2}", tensors_file(shard2, {"format": "pt", "shard": "2"}))
    write(f"{d}/model.safetensors.index.json", index(weight_map, 1234))


sharded("sharded", good_map())
sharded("sharded-missing-shard", good_map(), write2=False)
m = good_map()
m["model.extra.weight"] = S1
sharded("sharded-absent-tensor", m)
m = good_map()
del m["lm_head.weight"]
sharded("sharded-unlisted", m)

# --------------------------------------------------------------------------
# A valid file with less common dtypes: an OPAQUE fp8 tensor, a scalar, an
# empty tensor and BOOL.
write("misc.safetensors", tensors_file([
    ("fp8", "F8_E4M3", (4,), bytes([0x38, 0x40, 0xb8, 0x00])),
    ("scalar", "I64", (), struct.pack("<q", -5)),
    ("empty", "F32", (0, 3), b""),
    ("mask", "BOOL", (3,), bytes([1, 0, 1])),
], {"note": "misc"}, order=["scalar", "mask", "fp8", "empty"]))

# --------------------------------------------------------------------------
# Broken files, one problem each.
OK_T = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


def t(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


write("bad/truncated.safetensors", b"\x10\x00\x00\x00\x00")
write("bad/header-cut.safetensors",
      st_file(header_text({"a": OK_T}), f32(4))[:30])
write("bad/header-beyond.safetensors",
      st_file(header_text({"a": OK_T}), f32(4), length=4096))
write("bad/header-huge.safetensors",
      st_file(header_text({"a": OK_T}), f32(4), length=200_000_000))
write("bad/bad-json.safetensors",
      st_file('{"a": {"dtype": "F32" "shape": [2, 2], '
              '"data_offsets": [0, 16]}}', f32(4)))
write("bad/not-object.safetensors", st_file("[1, 2, 3]"))
write("bad/overlap.safetensors", st_file(header_text({
    "a": t("F32", [4], 0, 16), "b": t("F32", [4], 8, 24)}), f32(6)))
write("bad/gap.safetensors", st_file(header_text({
    "a": t("F32", [4], 0, 16), "b": t("F32", [4], 20, 36)}), f32(9)))
write("bad/out-of-bounds.safetensors", st_file(header_text({
    "a": t("F32", [4], 0, 16), "b": t("F32", [4], 16, 32)}), f32(6)))
write("bad/size-mismatch.safetensors", st_file(header_text({
    "a.weight": t("F32", [5, 6], 0, 100)}), bytes(100)))
write("bad/shape-overflow.safetensors", st_file(header_text({
    "big": t("F32", [2**62, 2**62], 0, 16)}), f32(4)))
write("bad/negative-dim.safetensors", st_file(header_text({
    "neg": t("F32", [-1, 4], 0, 16)}), f32(4)))
write("bad/too-many-dims.safetensors", st_file(header_text({
    "deep": t("F32", [1] * 9, 0, 4)}), f32(1)))
write("bad/unknown-dtype.safetensors", st_file(header_text({
    "q": t("Q4_K", [4], 0, 4)}), bytes(4)))
write("bad/duplicate-name.safetensors", st_file(
    '{"dup":' + header_text(t("F32", [2], 0, 8)) +
    ',"dup":' + header_text(t("F32", [2], 8, 16)) + '}', f32(4)))
write("bad/meta-non-string.safetensors", st_file(header_text({
    "__metadata__": {"format": "pt", "epoch": 3},
    "a": OK_T}), f32(4)))
write("bad/trailing-data.safetensors", st_file(header_text({
    "a": OK_T}), f32(5)))
write("bad/invalid-utf8.safetensors", st_file(
    '{"a?":' + header_text(OK_T) + '}', f32(4)).replace(b'"a?"', b'"a\xff"'))
