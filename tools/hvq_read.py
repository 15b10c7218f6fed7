#!/usr/bin/env python3
"""Decode an hvq container (docs/FORMAT.md, version 1) with the Python
standard library alone: every tensor to float32, written as a safetensors
file (-o) or compared bit for bit with one (--compare). Knows the clusterers
rtn and kmeans and the residuals coo16, rice and none. A sharded container is read
through its NAME.hvq.index.json or its directory.

  hvq_read.py MODEL.hvq|NAME.hvq.index.json|DIR [-o OUT.safetensors] [--compare REF.safetensors]

A reference, slow by design; python/hvqconv.py is the fast numpy loader.
"""
import argparse, glob, json, os, struct, sys, zlib
from array import array

VERSION = 1
FLOATS = ("F32", "F16", "BF16", "F64")

def read_safetensors(path):
    """(metadata, {name: (dtype, shape, bytes)}) of a safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack_from("<Q", blob)[0]
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base, tensors = 8 + n, {}
    for name, t in header.items():
        begin, end = t["data_offsets"]
        if base + end > len(blob):
            raise ValueError("%s: tensor %s beyond the end of the file" % (path, name))
        tensors[name] = (t["dtype"], t["shape"], blob[base + begin:base + end])
    return meta, tensors

def read_container(path):
    """(metadata, stored tensors) of a .hvq file or of all the shards an index
    names (metadata from the first shard by name); a directory holds either."""
    if os.path.isdir(path):
        found = glob.glob(os.path.join(path, "*.hvq.index.json")) or \
            glob.glob(os.path.join(path, "*.hvq"))
        if len(found) != 1:
            raise ValueError("%s: expected one *.hvq.index.json or *.hvq file" % path)
        path = found[0]
    if not path.endswith(".index.json"):
        return read_safetensors(path)
    with open(path, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
    meta, stored = None, {}
    for shard in sorted(set(weight_map.values())):
        m, t = read_safetensors(os.path.join(os.path.dirname(path), shard))
        if meta is None:
            meta = m
        for name in t:
            if weight_map.get(name) != shard:
                raise ValueError("%s: %s is not mapped to %s" % (path, name, shard))
        stored.update(t)
    return meta, stored

def le_array(code, raw):  # an array of little-endian values
    a = array(code, raw)
    if sys.byteorder == "big":
        a.byteswap()
    return a

def le_bytes(a):  # the little-endian bytes of an array
    return le_array(a.typecode, a.tobytes()).tobytes()

def to_f32(dtype, raw):
    """float32 values (array 'f') of a float tensor's bytes."""
    if dtype == "F32":
        return le_array("f", raw)
    if dtype == "F16":
        return array("f", struct.unpack("<%de" % (len(raw) // 2), raw))
    if dtype == "BF16":
        return le_array("f", le_array("I", [h << 16 for h in le_array("H", raw)]).tobytes())
    if dtype == "F64":
        return array("f", struct.unpack("<%dd" % (len(raw) // 8), raw))
    raise ValueError("dtype %s has no float32 value" % dtype)

def rtn(a, comp, rows, cols, out):
    g, asym = int(a["group_size"]), a["mode"] == "asymmetric"
    ng = 1 if g == 0 or g >= cols else (cols + g - 1) // g
    gs = cols if ng == 1 else g
    lev, sc = comp["levels"][2], to_f32("F16", comp["scales"][2])
    mn = to_f32("F16", comp["mins"][2]) if asym else array("f", bytes(len(sc) * 4))
    for r in range(rows):
        for k in range(ng):
            s, m = sc[r * ng + k], mn[r * ng + k]
            for c in range(k * gs, min(k * gs + gs, cols)):
                i = r * cols + c
                code = lev[i >> 1] >> 4 if i & 1 else lev[i >> 1] & 15
                q = code if asym else code - 8
                # q * scale is exact in float32; the sum rounds on assignment
                out[i] = q * s + m if 0 < s < float("inf") else m

def kmeans(a, comp, rows, cols, out):
    b, k, bits, nvec = (int(a[x]) for x in ("block_size", "centroids", "index_bits", "vectors"))
    cb, stream, n = to_f32("F16", comp["codebook"][2]), comp["indices"][2], rows * cols
    acc = have = o = 0
    for i in range(nvec):
        while have < bits:
            acc |= stream[o] << have
            o, have = o + 1, have + 8
        q = acc & ((1 << bits) - 1)
        acc, have = acc >> bits, have - bits
        if q >= k:
            raise ValueError("kmeans index %d out of range" % q)
        for j in range(min(b, n - i * b)):
            out[i * b + j] = cb[q * b + j]
    if "scale" in a:  # gains per row or group, then column gains (FORMAT.md)
        group = int(a["scale_group"])
        ng = 1 if group == 0 or group >= cols else (cols + group - 1) // group
        gs = cols if ng == 1 else group
        g = to_f32("F16", comp["gains"][2])
        cg = to_f32("F16", comp["col_gains"][2]) if "col_exponent" in a else None
        for r in range(rows):
            for c in range(cols):
                i = r * cols + c
                out[i] = out[i] * g[r * ng + c // gs]  # float32 product
                if cg is not None:
                    out[i] = out[i] / cg[c]  # float32 quotient

def coo16(a, comp, rows, cols, out):
    pos = le_array("I", comp["positions"][2])
    val = to_f32("F16", comp["values"][2])
    for p, v in zip(pos, val):
        out[p] = out[p] + v  # float32 addition: rounded on assignment

def rice(a, comp, rows, cols, out):
    m, k, nbits = (int(a[x]) for x in ("count", "k", "bits"))
    s, val, n = comp["positions"][2], to_f32("F16", comp["values"][2]), rows * cols
    w = max(1, (n - 1).bit_length())
    if k > w or len(s) != (nbits + 7) // 8 or len(val) != m:
        raise ValueError("rice: bad k, bits or count")
    bit = lambda j: s[j >> 3] >> (j & 7) & 1 if j < nbits else 0
    at = nxt = 0
    for v in val:
        q = 0
        while q < 32 and bit(at):
            q, at = q + 1, at + 1
        at, width, g = (at + 1, k, q << k) if q < 32 else (at, w, 0)
        g |= sum(bit(at + j) << j for j in range(width))
        at, p = at + width, nxt + g
        if at > nbits or p >= n:
            raise ValueError("rice: stream truncated or position out of range")
        out[p] = out[p] + v  # float32 addition, as coo16
        nxt = p + 1
    if at != nbits or (nbits % 8 and s[-1] >> (nbits % 8)):
        raise ValueError("rice: bits left over")

DECODERS = {"rtn": rtn, "kmeans": kmeans, "coo16": coo16, "rice": rice,
            "none": lambda *args: None}

def decode(path):
    """(source metadata, [(name, dtype, shape, float32 array or raw bytes)])."""
    meta, stored = read_container(path)
    if meta.get("format") != "hvq":
        raise ValueError("%s: not an hvq container" % path)
    if int(meta.get("hvq.format_version", "0")) > VERSION:
        raise ValueError("%s: container format version %s is newer than this reader (%d)"
                         % (path, meta["hvq.format_version"], VERSION))
    result = []
    for e in json.loads(meta["hvq.tensors"]):
        parts = [stored[s] for s in e["stored"]]
        if zlib.crc32(b"".join(p[2] for p in parts)) != e["crc32"]:
            raise ValueError("%s: tensor '%s': checksum mismatch" % (path, e["name"]))
        if e["encoding"] == "raw":
            raw = parts[0][2]
            result.append((e["name"], e["dtype"], e["shape"],
                           to_f32(e["dtype"], raw) if e["dtype"] in FLOATS else raw))
            continue
        if e["encoding"] != "hvq":
            raise ValueError("%s: unknown encoding %s" % (path, e["encoding"]))
        rows, cols = e["rows"], e["cols"]
        out = array("f", bytes(4 * rows * cols))
        for stage in ("clusterer", "residual"):
            st = e[stage]
            if st["plugin"] not in DECODERS:
                raise ValueError("%s: no decoder for %s '%s'" % (path, stage, st["plugin"]))
            comp = {k: stored[v] for k, v in st["components"].items()}
            DECODERS[st["plugin"]](st["attrs"], comp, rows, cols, out)
        if e["scales"] is not None:
            for r, s in enumerate(to_f32("F16", stored[e["scales"]][2])):
                for i in range(r * cols, r * cols + cols):
                    out[i] = out[i] * s  # float32 multiplication
        result.append((e["name"], "F32", e["shape"], out))
    return json.loads(meta.get("hvq.source_metadata", "{}")), result

def write_safetensors(path, meta, tensors):
    header, blobs, off = {"__metadata__": meta} if meta else {}, [], 0
    for name, dtype, shape, val in tensors:
        blobs.append(val if isinstance(val, bytes) else le_bytes(val))
        header[name] = {"dtype": "F32" if dtype in FLOATS else dtype, "shape": shape,
                        "data_offsets": [off, off + len(blobs[-1])]}
        off += len(blobs[-1])
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))

def main():
    ap = argparse.ArgumentParser(description="decode an hvq container (docs/FORMAT.md)")
    ap.add_argument("container")
    ap.add_argument("-o", "--output", help="write every tensor as F32 to this safetensors file")
    ap.add_argument("--compare", help="compare with this safetensors file, bit for bit")
    args = ap.parse_args()
    try:
        meta, tensors = decode(args.container)
    except (ValueError, KeyError, OSError) as e:
        sys.exit("hvq_read.py: error: %s" % e)
    if args.output:
        write_safetensors(args.output, meta, tensors)
    bad = 0
    if args.compare:
        _, ref = read_safetensors(args.compare)
        for name, dtype, shape, val in tensors:
            rd, rs, rraw = ref.get(name, (None, None, None))
            ok = rs == shape and (rraw == val if isinstance(val, bytes) else
                                  rd in FLOATS and le_bytes(to_f32(rd, rraw)) == le_bytes(val))
            bad += not ok
            print("%-8s %s" % ("same" if ok else "DIFFERS", name))
    print("%d tensors decoded%s" % (len(tensors), ", %d differ" % bad if args.compare else ""))
    sys.exit(1 if bad else 0)

if __name__ == "__main__":
    main()
