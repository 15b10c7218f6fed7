#!/usr/bin/env python3
"""Makes nan-min.hvq from asym.hvq (a valid container of one 8x32 tensor,
rtn asymmetric, written by hvqconv): the fp16 min of row 3 set to NaN and
the tensor's crc32 recomputed, so the file is structurally valid and only
the component is wrong (tests/test_corrupt.c: verify, decode and eval must
refuse it). Needs nothing beyond Python's standard library.

  tests/data/nan/make_nan.py   # run in this directory
"""
import json, struct, zlib

b = bytearray(open("asym.hvq", "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
base = 8 + n
s, e = h["a.weight::clusterer.mins"]["data_offsets"]
b[base + s + 2 * 3:base + s + 2 * 3 + 2] = struct.pack("<H", 0x7E00)  # fp16 NaN
entry = json.loads(h["__metadata__"]["hvq.tensors"])[0]
crc = 0
for name in entry["stored"]:
    s2, e2 = h[name]["data_offsets"]
    crc = zlib.crc32(bytes(b[base + s2:base + e2]), crc)
old = b'\\"crc32\\":%d' % entry["crc32"]
new = b'\\"crc32\\":%d' % crc
assert len(new) <= len(old), "the new checksum has more digits: pick another row"
# padded with spaces (JSON whitespace inside the escaped index), so the
# header keeps its size and every offset stays
head = bytes(b[8:8 + n]).replace(old, new.ljust(len(old)))
assert len(head) == n
b[8:8 + n] = head
open("nan-min.hvq", "wb").write(bytes(b))
