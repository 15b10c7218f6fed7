#!/usr/bin/env python3
"""Load an hvq container (docs/FORMAT.md, format version 1) with numpy.

    import hvqconv
    weights = hvqconv.load("model.hvq")   # or NAME.hvq.index.json, or its directory
    # {name: numpy array}: every compressed tensor as float32, bit for bit
    # what `hvqconv decode MODEL.hvq -o OUT.safetensors --dtype f32` writes

The files are memory-mapped and every stored tensor is a numpy view of the
map; the decoders are vectorized numpy. What a tensor decodes to:

* compressed ("hvq") tensors: float32, reconstructed with exactly the
  float32 operations of hvqconv's C decoders, in the same order (so the
  bit patterns equal `hvqconv decode --dtype f32`'s);
* pass-through ("raw") F32, F16 and BF16 tensors: float32 (F16 and BF16
  widened exactly, so the values equal `hvqconv decode`'s F16/BF16
  output); with raw="stored" they keep their stored numpy dtype (BF16,
  which numpy lacks, as its uint16 bits);
* raw tensors of any other dtype as stored, as `hvqconv decode` writes
  them: F64 as float64, integers and bool as such; types numpy has no type
  for (F8_*, F4, F6_*, and dtypes of other formats, stored as U8) as uint8
  bytes.

Encodings: clusterers rtn, kmeans (all scale modes), ggml (q4_0, q4_1,
q5_0, q5_1, q8_0, iq4_nl, q2_K, q3_K, q4_K, q5_K, q6_K, iq4_xs) and ecsq;
residuals none, coo16 and rice. All are vectorized except ecsq, whose
adaptive range code is sequential by construction (each stream of about a
million levels bit after bit, numpy has nothing to vectorize): its streams
are decoded by hvqconv's own C decoder, the function hvq_ecsq_decode_f32
that the ecsq plugin (clusterer_ecsq.so) exports, called with ctypes on a
few threads (ctypes lets go of the GIL). The plugin is looked for where
hvqconv looks: each directory of $HVQ_PLUGIN_PATH, then the build tree
when this is the source tree's copy, then the plugin directory make
install put it in (written into the installed copy). When it cannot be
loaded (or $HVQCONV_PURE_PYTHON is set) the same code is decoded in plain
Python, bit for bit the same but about a hundred times slower (half a
million weights a second), with one RuntimeWarning saying why. An encoding this module does not know (a
plugin outside hvqconv's repository) raises FormatError naming the tensor
and the plugin; it never returns data it cannot vouch for.

Every problem with the input (not a container, truncated, corrupt header
or index, checksum mismatch, missing shard, bad component) raises
FormatError, whose message names the file and the problem. Run as a
script it lists or decodes a container and exits with status 2 on such a
problem:

    python3 hvqconv.py MODEL.hvq [--list] [--tensor NAME]...
"""
import ctypes
import json
import mmap
import os
import sys
import threading
import time
import warnings
import zlib

try:
    import numpy as np
except ImportError:  # reported by load() and main(), not at import
    np = None

__all__ = ["FormatError", "Container", "load", "FORMAT_VERSION"]
__version__ = "1.0.0"

FORMAT_VERSION = 1
MAX_HEADER = 100000000


class FormatError(Exception):
    """The input is not a valid hvq container (or cannot be read): the
    message names the file and, where there is one, the tensor."""


# ---- safetensors -----------------------------------------------------------

# dtype name: (bits per element, numpy type or None for opaque bytes)
_DTYPES = {
    "F64": (64, "<f8"), "I64": (64, "<i8"), "U64": (64, "<u8"), "C64": (64, "<c8"),
    "F32": (32, "<f4"), "I32": (32, "<i4"), "U32": (32, "<u4"),
    "F16": (16, "<f2"), "BF16": (16, "<u2"), "I16": (16, "<i2"), "U16": (16, "<u2"),
    "BOOL": (8, "?"), "I8": (8, "i1"), "U8": (8, "u1"),
    "F8_E4M3": (8, None), "F8_E5M2": (8, None), "F8_E8M0": (8, None),
    "F4": (4, None), "F6_E2M3": (6, None), "F6_E3M2": (6, None),
}


def _nbytes(dtype, shape):
    """The bytes of a stored tensor; None when a sub-byte type does not
    fill whole bytes."""
    bits = _DTYPES[dtype][0]
    for d in shape:
        bits *= d
    return None if bits % 8 else bits // 8


class _File:
    """One safetensors file, memory-mapped: its metadata and its stored
    tensors as (dtype, shape, begin, end) with absolute file offsets."""

    def __init__(self, path):
        self.path = path
        try:
            f = open(path, "rb")
        except OSError as e:
            raise FormatError("%s: cannot open: %s" % (path, e.strerror or e)) from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise FormatError("%s: not a safetensors file (%d bytes, shorter than its "
                                  "8-byte header length)" % (path, size))
            try:
                self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as e:
                raise FormatError("%s: cannot map the file: %s" % (path, e)) from None
        self.size = size
        n = int.from_bytes(self.map[:8], "little")
        if n > MAX_HEADER:
            raise FormatError("%s: header length %d exceeds the safetensors limit of %d bytes "
                              "(not a safetensors file?)" % (path, n, MAX_HEADER))
        if 8 + n > size:
            raise FormatError("%s: truncated: the header needs %d bytes, the file has %d"
                              % (path, 8 + n, size))
        try:
            header = json.loads(bytes(self.map[8:8 + n]).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise FormatError("%s: the header is not valid JSON: %s" % (path, e)) from None
        if not isinstance(header, dict):
            raise FormatError("%s: the header is not a JSON object" % path)
        meta = header.pop("__metadata__", {})
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise FormatError("%s: __metadata__ is not an object of strings" % path)
        self.meta = meta
        base = 8 + n
        self.tensors = {}
        spans = []
        for name, t in header.items():
            try:
                dtype, shape, (begin, end) = t["dtype"], t["shape"], t["data_offsets"]
                ok = (dtype in _DTYPES and isinstance(shape, list) and len(shape) <= 8 and
                      all(type(d) is int and d >= 0 for d in shape) and
                      type(begin) is int and type(end) is int and 0 <= begin <= end)
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise FormatError("%s: stored tensor '%s': bad dtype, shape or data_offsets"
                                  % (path, name))
            if _nbytes(dtype, shape) != end - begin:
                raise FormatError("%s: stored tensor '%s': %d bytes for a %s %s"
                                  % (path, name, end - begin, dtype, shape))
            if base + end > size:
                raise FormatError("%s: truncated: stored tensor '%s' ends at byte %d, the file "
                                  "has %d" % (path, name, base + end, size))
            self.tensors[name] = (dtype, shape, base + begin, base + end)
            spans.append((begin, end))
        spans.sort()
        at = 0
        for begin, end in spans:
            if begin != at:
                raise FormatError("%s: the stored tensors do not tile the data section "
                                  "(%s at byte %d)" % (path, "gap" if begin > at else "overlap",
                                                       at))
            at = end
        if base + at != size:
            raise FormatError("%s: %d bytes after the last stored tensor (truncated or "
                              "appended to?)" % (path, size - base - at))

    def close(self):
        try:
            self.map.close()
        except BufferError:  # arrays still view the map: it closes with them
            pass


# ---- the container ---------------------------------------------------------

def _find(path):
    """The file to open for path: a .hvq file, an index, or a directory's
    only *.hvq.index.json (else its only *.hvq)."""
    if not os.path.isdir(path):
        return path
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise FormatError("%s: cannot list the directory: %s" % (path, e.strerror)) from None
    index = [n for n in names if n.endswith(".hvq.index.json")]
    files = [n for n in names if n.endswith(".hvq")]
    if len(index) == 1:
        return os.path.join(path, index[0])
    if len(index) > 1:
        raise FormatError("%s: %d *.hvq.index.json files; name one" % (path, len(index)))
    if len(files) == 1:
        return os.path.join(path, files[0])
    raise FormatError("%s: no container here (expected one *.hvq.index.json or *.hvq file, "
                      "found %d .hvq files)" % (path, len(files)))


class Container:
    """An open container: .entries (hvq.tensors, in order), .names, .metadata
    (the source model's metadata), get(name), close(); usable in `with`."""

    def __init__(self, path):
        if np is None:
            raise FormatError("%s: hvqconv.py needs numpy (python3-numpy)" % path)
        self.path = path
        self.files = []
        self.stored = {}  # stored name: (_File, dtype, shape, begin, end)
        try:
            self._open(_find(path))
        except BaseException:
            self.close()
            raise

    def _open(self, file):
        if file.endswith(".index.json"):
            self._open_index(file)
        else:
            f = _File(file)
            self.files.append(f)
            if "hvq.shard" in f.meta:
                raise FormatError("%s: one shard of a sharded container: open its "
                                  "*.hvq.index.json or its directory" % file)
            for name, t in f.tensors.items():
                self.stored[name] = (f,) + t
            self.meta = f.meta
        self._check_meta()

    def _open_index(self, index):
        try:
            with open(index, "rb") as fh:
                doc = json.loads(fh.read().decode("utf-8"))
            weight_map = doc["weight_map"]
            if not isinstance(weight_map, dict) or not weight_map or \
               not all(isinstance(v, str) for v in weight_map.values()):
                raise ValueError("no weight_map of strings")
        except OSError as e:
            raise FormatError("%s: cannot read the index: %s" % (index, e.strerror or e)) from None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise FormatError("%s: not a valid index: %s" % (index, e)) from None
        shards = sorted(set(weight_map.values()))
        where = os.path.dirname(index)
        for k, shard in enumerate(shards):
            if os.sep in shard or shard in (".", ".."):
                raise FormatError("%s: shard name '%s' is not a file beside the index"
                                  % (index, shard))
            full = os.path.join(where, shard)
            if not os.path.exists(full):
                raise FormatError("%s: shard %s is missing (named by the index)" % (index, full))
            f = _File(full)
            self.files.append(f)
            want = "%d of %d" % (k + 1, len(shards))
            if f.meta.get("hvq.shard", want) != want:
                raise FormatError("%s: hvq.shard is '%s', expected '%s'"
                                  % (full, f.meta["hvq.shard"], want))
            for name, t in f.tensors.items():
                if weight_map.get(name) != shard:
                    raise FormatError("%s: stored tensor '%s' is in %s, which the index does "
                                      "not map it to" % (index, name, shard))
                self.stored[name] = (f,) + t
        for name, shard in weight_map.items():
            if name not in self.stored:
                raise FormatError("%s: stored tensor '%s' is not in %s" % (index, name, shard))
        self.meta = self.files[0].meta

    def _check_meta(self):
        m, p = self.meta, self.files[0].path
        if m.get("format") != "hvq":
            raise FormatError("%s: not an hvq container (no \"format\": \"hvq\" metadata)" % p)
        v = m.get("hvq.format_version", "")
        if not v.isdigit() or int(v) < 1:
            raise FormatError("%s: bad hvq.format_version '%s'" % (p, v[:40]))
        if int(v) > FORMAT_VERSION:
            raise FormatError("%s: container format version %s is newer than this reader "
                              "supports (%d)" % (p, v, FORMAT_VERSION))
        try:
            entries = json.loads(m["hvq.tensors"])
            self.metadata = json.loads(m.get("hvq.source_metadata", "{}"))
        except KeyError:
            raise FormatError("%s: the metadata has no \"hvq.tensors\" index" % p) from None
        except ValueError as e:
            raise FormatError("%s: hvq.tensors or hvq.source_metadata is not valid JSON: %s"
                              % (p, e)) from None
        if not isinstance(entries, list) or not isinstance(self.metadata, dict):
            raise FormatError("%s: hvq.tensors is not an array" % p)
        self.entries, self._by_name, seen = entries, {}, set()
        for e in entries:
            try:
                name, stored = e["name"], e["stored"]
                if not isinstance(name, str) or name in self._by_name:
                    raise ValueError("duplicate or bad name")
                if e.get("encoding") not in ("raw", "hvq"):
                    raise FormatError("%s: tensor '%s': unknown encoding '%s'"
                                      % (p, name, e.get("encoding")))
                for s in stored:
                    if s not in self.stored or s in seen:
                        raise FormatError("%s: tensor '%s': stored tensor '%s' is missing or "
                                          "listed twice" % (p, name, s))
                    seen.add(s)
                shape = e["shape"]
                if not all(type(d) is int and d >= 0 for d in shape) or len(shape) > 8:
                    raise ValueError("bad shape")
                if not isinstance(e["crc32"], int):
                    raise ValueError("bad crc32")
            except (KeyError, TypeError, ValueError) as x:
                raise FormatError("%s: malformed hvq.tensors entry %r: %s"
                                  % (p, e.get("name") if isinstance(e, dict) else e, x)) from None
            self._by_name[name] = e
        if len(seen) != len(self.stored):
            extra = sorted(set(self.stored) - seen)[0]
            raise FormatError("%s: stored tensor '%s' belongs to no entry of hvq.tensors"
                              % (p, extra))
        self.names = [e["name"] for e in entries]

    def close(self):
        for f in self.files:
            f.close()
        self.files = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _bytes(self, stored_name):
        f, dtype, shape, begin, end = self.stored[stored_name]
        return np.frombuffer(f.map, dtype=np.uint8, count=end - begin, offset=begin)

    def _array(self, stored_name, want=None):
        """A stored tensor as a numpy view of the map (flat)."""
        f, dtype, shape, begin, end = self.stored[stored_name]
        if want is not None and dtype != want:
            raise ValueError("component '%s' is %s, not %s" % (stored_name, dtype, want))
        npt = _DTYPES[dtype][1] or "u1"
        return np.frombuffer(f.map, dtype=npt, count=(end - begin) // np.dtype(npt).itemsize,
                             offset=begin)

    def _verify(self, e):
        crc = 0
        for s in e["stored"]:
            f, _, _, begin, end = self.stored[s]
            with memoryview(f.map) as mv, mv[begin:end] as part:
                crc = zlib.crc32(part, crc)
        if crc != e["crc32"]:
            raise FormatError("%s: tensor '%s': checksum mismatch (stored 0x%08x, computed "
                              "0x%08x)" % (self.path, e["name"], e["crc32"] & 0xffffffff, crc))

    def get(self, name, raw="float32"):
        """Tensor `name` decoded (see the module's documentation)."""
        e = self._by_name.get(name)
        if e is None:
            raise KeyError(name)
        self._verify(e)
        if e["encoding"] == "raw":
            return self._raw(e, raw)
        try:
            out = _decode(self, e)
        except FormatError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as x:
            raise FormatError("%s: tensor '%s': %s" % (self.path, name, x)) from None
        return out.reshape(e["shape"])

    def _raw(self, e, raw):
        s = e["stored"]
        if len(s) != 1:
            raise FormatError("%s: tensor '%s': a raw entry has %d stored tensors"
                              % (self.path, e["name"], len(s)))
        dtype = self.stored[s[0]][1]
        a = self._array(s[0])
        if dtype in ("F16", "BF16") and raw == "float32":
            if dtype == "BF16":
                a = (a.astype(np.uint32) << 16).view(np.float32)
            else:
                a = a.astype(np.float32)
        else:
            a = a.copy()  # aligned and writable, independent of the map
        shape = e["shape"] if dtype == e["dtype"] else self.stored[s[0]][2]
        return a.reshape(shape)


# ---- decoders --------------------------------------------------------------

def _f16(a):
    """float32 of fp16 values given as any uint8 (pairs) or uint16 array."""
    a = np.ascontiguousarray(a)
    return a.view("<f2").astype(np.float32).reshape(-1)


def _u(attrs, key, lo=0, hi=None):
    v = attrs.get(key)
    if not isinstance(v, str) or not v.isdigit():
        raise ValueError("attribute %s '%s' is not a decimal number" % (key, v))
    v = int(v)
    if v < lo or (hi is not None and v > hi):
        raise ValueError("attribute %s = %d out of range" % (key, v))
    return v


def _comp(c, stage, key, dtype, count=None):
    name = stage["components"].get(key)
    if name is None:
        raise ValueError("%s '%s': component '%s' missing" % ("stage", stage["plugin"], key))
    a = c._array(name, dtype)
    if count is not None and a.size != count:
        raise ValueError("component '%s' has %d values, expected %d" % (key, a.size, count))
    return a


def _groups(cols, g):
    return 1 if g == 0 or g >= cols else (cols + g - 1) // g


def _per_group(out2, vals, gs, op):
    """op(view, group values) over rows x groups of gs columns (the last
    group may be shorter)."""
    rows, cols = out2.shape
    ng = vals.shape[1]
    full = cols // gs if ng > 1 else 1
    if ng == 1:
        op(out2, vals[:, 0:1])
        return
    if full:
        op(out2[:, :full * gs].reshape(rows, full, gs), vals[:, :full, None])
    if full < ng:
        op(out2[:, full * gs:], vals[:, full:full + 1])


def _mul(view, v):
    np.multiply(view, v, out=view)


def _col_gains(c, st, cols):
    a = st["attrs"]
    if ("col_exponent" in a) != ("col_gains" in st["components"]):
        raise ValueError("col_gains and col_exponent go together")
    if "col_gains" not in st["components"]:
        return None
    cg = _f16(_comp(c, st, "col_gains", "F16", cols))
    if not (np.isfinite(cg).all() and (cg > 0).all()):
        raise ValueError("a column gain is not a finite value above 0")
    return cg


def _rtn(c, st, rows, cols, out):
    a = st["attrs"]
    g = _u(a, "group_size")
    mode = a.get("mode")
    if mode not in ("symmetric", "asymmetric"):
        raise ValueError("rtn: bad mode '%s'" % mode)
    asym = mode == "asymmetric"
    n, ng = rows * cols, _groups(cols, g)
    gs = cols if ng == 1 else g
    lev = _comp(c, st, "levels", "U8", (n + 1) // 2)
    sc = _f16(_comp(c, st, "scales", "F16", rows * ng)).reshape(rows, ng)
    m = _f16(_comp(c, st, "mins", "F16", rows * ng)).reshape(rows, ng) if asym else \
        np.zeros((rows, ng), np.float32)
    q = np.empty(2 * lev.size, np.uint8)
    np.bitwise_and(lev, 15, out=q[0::2])
    np.right_shift(lev, 4, out=q[1::2])
    if not asym:
        q = q.view(np.int8)
        q -= 8
    q = q[:n]
    valid = (sc > 0) & np.isfinite(sc)
    s = np.where(valid, sc, np.float32(0))
    out2 = out.reshape(rows, cols)
    out2[...] = q.reshape(rows, cols)  # exact: -8..15 as float32
    _per_group(out2, s, gs, _mul)  # (float)q * scale ...
    _per_group(out2, m, gs, lambda v, x: np.add(v, x, out=v))  # ... + m
    if not valid.all():  # scale not > 0 or not finite: recon = m exactly
        for r, k in zip(*np.nonzero(~valid)):
            out2[r, k * gs:min(k * gs + gs, cols)] = m[r, k]


def _unpack_indices(stream, bits, count):
    """count indices of `bits` (1..16) bits, LSB first, as intp."""
    if bits == 8:
        return stream[:count].astype(np.intp)
    if bits == 16:
        return np.ascontiguousarray(stream[:2 * count]).view("<u2").astype(np.intp)
    groups = (count + 7) // 8  # 8 indices take exactly `bits` bytes
    pad = np.zeros(groups * bits + 4, np.uint8)
    pad[:stream.size] = stream
    # the little-endian 32-bit word at every byte offset (an overlapping
    # view, nothing copied); index j of each group of 8 starts in byte
    # (j * bits) / 8 of the group, at bit (j * bits) % 8, within 23 bits
    words = np.ndarray((groups * bits + 1,), dtype="<u4", buffer=pad, strides=(1,))
    out = np.empty(groups * 8, np.intp)
    mask = np.uint32((1 << bits) - 1)
    for j in range(8):
        b0, sh = (j * bits) >> 3, (j * bits) & 7
        w = words[b0:b0 + groups * bits:bits] >> np.uint32(sh)
        w &= mask
        out[j::8] = w
    return out[:count]


def _kmeans(c, st, rows, cols, out):
    a = st["attrs"]
    b, k = _u(a, "block_size", 1, 64), _u(a, "centroids", 1, 65536)
    bits, nvec = _u(a, "index_bits", 0, 16), _u(a, "vectors", 1)
    if bits != (k - 1).bit_length():
        raise ValueError("kmeans: index_bits %d does not match %d centroids" % (bits, k))
    if k == 1 and nvec != 1:
        raise ValueError("kmeans: 1 centroid (0-bit indices) is only valid for a single vector")
    n = rows * cols
    if n == 0 or nvec != (n + b - 1) // b:
        raise ValueError("kmeans: %d vectors of %d values do not make a %dx%d matrix"
                         % (nvec, b, rows, cols))
    cb = _f16(_comp(c, st, "codebook", "F16", k * b))
    if not np.isfinite(cb).all():
        raise ValueError("kmeans: a codebook value is not finite")
    stream = _comp(c, st, "indices", "U8", (nvec * bits + 7) // 8)
    if bits == 0:
        idx = np.zeros(nvec, np.intp)
    else:
        idx = _unpack_indices(stream, bits, nvec)
        if nvec and int(idx.max()) >= k:
            bad = int(np.argmax(idx >= k))
            raise ValueError("kmeans: index %d of vector %d is out of range (%d centroids)"
                             % (idx[bad], bad, k))
    # centroid idx[i] copied to vector i: each centroid one opaque item of
    # 4 b bytes (bits untouched); mode clip is only there to spare numpy
    # its bounds-checking copy: every index was checked above
    item = np.dtype((np.void, 4 * b))
    cbv = cb.view(item)
    if nvec * b == n:
        np.take(cbv, idx, out=out.view(item), mode="clip")
    else:  # the last vector cut short
        out[:] = np.take(cbv, idx, mode="clip").view(np.float32)[:n]
    if "scale" in a:
        if a["scale"] not in ("max", "rms"):
            raise ValueError("kmeans: unknown scale '%s'" % a["scale"])
        group = _u(a, "scale_group", 0, 1048576)
        ng = _groups(cols, group)
        gains = _f16(_comp(c, st, "gains", "F16", rows * ng)).reshape(rows, ng)
        if not (np.isfinite(gains).all() and (gains >= 0).all()):
            raise ValueError("kmeans: a gain is negative or not finite")
        cg = _col_gains(c, st, cols)
        out2 = out.reshape(rows, cols)
        _per_group(out2, gains, cols if ng == 1 else group, _mul)
        if cg is not None:
            np.divide(out2, cg, out=out2)
    elif "gains" in st["components"] or "col_gains" in st["components"]:
        raise ValueError("kmeans: gains without the attribute scale")


# ggml -----------------------------------------------------------------------

_KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10,
                     1, 13, 25, 38, 53, 69, 89, 113], np.float32) if np else None
_GGML = {"q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24),
         "q8_0": (32, 34), "iq4_nl": (32, 18), "q2_K": (256, 84), "q3_K": (256, 110),
         "q4_K": (256, 144), "q5_K": (256, 176), "q6_K": (256, 210), "iq4_xs": (256, 136)}


def _nibbles(qs):
    """(blocks, 16) bytes -> (blocks, 32) codes: low nibbles, then high."""
    return np.concatenate((qs & 15, qs >> 4), axis=1)


def _fifth(qh):
    """(blocks, 4) bytes of qh -> (blocks, 32) fifth bits (bit j of the LE u32)."""
    return np.unpackbits(qh, axis=1, bitorder="little")


def _mul_into(q, scale, y):
    """y = (float)q * scale (float32): the codes converted first (exact),
    then one contiguous float32 product (faster than a mixed-type ufunc)."""
    np.multiply(q.astype(np.float32), scale, out=y)


def _ggml_legacy(t, blk, y):
    nb = blk.shape[0]
    d = _f16(blk[:, 0:2])[:, None]
    if t == "q8_0":
        _mul_into(blk[:, 2:34].view(np.int8), d, y)
        return
    if t == "iq4_nl":
        qs = blk[:, 2:18]
        np.multiply(_KVALUES[qs & 15], d, out=y[:, :16])
        np.multiply(_KVALUES[qs >> 4], d, out=y[:, 16:])
        return
    at = 4 if t in ("q4_1", "q5_1") else 2  # the codes or qh
    five = t in ("q5_0", "q5_1")
    qs = np.ascontiguousarray(blk[:, at + 4 * five:at + 4 * five + 16])
    q = np.empty((nb, 32), np.uint8)
    np.bitwise_and(qs, 15, out=q[:, :16])
    np.right_shift(qs, 4, out=q[:, 16:])
    if five:
        q |= _fifth(blk[:, at:at + 4]) << 4
    if t in ("q4_0", "q5_0"):
        q = q.view(np.int8)
        q -= 16 if five else 8  # (float)(q - half) * d
        _mul_into(q, d, y)
    else:  # (float)q * d + m
        _mul_into(q, d, y)
        np.add(y, _f16(blk[:, 2:4])[:, None], out=y)


def _k_scale_min(sc12):
    """Q4_K/Q5_K: the 6-bit scales and mins of the 8 sub-blocks, (nb, 8) each."""
    q = sc12.astype(np.uint8)
    s = np.empty((q.shape[0], 8), np.uint8)
    m = np.empty((q.shape[0], 8), np.uint8)
    s[:, :4] = q[:, 0:4] & 63
    m[:, :4] = q[:, 4:8] & 63
    s[:, 4:] = (q[:, 8:12] & 0xf) | ((q[:, 0:4] >> 6) << 4)
    m[:, 4:] = (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)
    return s, m


def _ggml_k45(blk, y, five):
    nb = blk.shape[0]
    d, mn = _f16(blk[:, 0:2]), _f16(blk[:, 2:4])
    s, m = _k_scale_min(blk[:, 4:16])
    d1 = (d[:, None] * s.astype(np.float32))  # (nb, 8): d * (float)sc
    m1 = (mn[:, None] * m.astype(np.float32))
    ql = blk[:, 48:176] if five else blk[:, 16:144]
    ql = ql.reshape(nb, 4, 32)
    codes = np.empty((nb, 4, 2, 32), np.uint8)
    codes[:, :, 0] = ql & 15
    codes[:, :, 1] = ql >> 4
    if five:
        qh = blk[:, 16:48]  # bit 2j (low half), 2j+1 (high half) of qh[l]
        hb = np.unpackbits(qh[:, None, :], axis=1, bitorder="little")  # (nb, 8, 32)
        codes += (hb.reshape(nb, 4, 2, 32) << 4)
    y4 = y.reshape(nb, 8, 32)
    _mul_into(codes.reshape(nb, 8, 32), d1[:, :, None], y4)
    np.subtract(y4, m1[:, :, None], out=y4)


def _ggml_q6_k(blk, y):
    nb = blk.shape[0]
    ql, qh = blk[:, 0:128], blk[:, 128:192]
    sc = blk[:, 192:208].view(np.int8).astype(np.float32)
    d = _f16(blk[:, 208:210])
    ds = d[:, None] * sc  # (nb, 16): d * (float)sc[i], then * (float)q
    y6 = y.reshape(nb, 2, 4, 2, 16)  # half, quarter (q1..q4), is, l
    for h in range(2):
        l0, l1 = ql[:, 64 * h:64 * h + 32], ql[:, 64 * h + 32:64 * h + 64]
        hh = qh[:, 32 * h:32 * h + 32]
        qs = ((l0 & 15) | ((hh & 3) << 4), (l1 & 15) | (((hh >> 2) & 3) << 4),
              (l0 >> 4) | (((hh >> 4) & 3) << 4), (l1 >> 4) | (((hh >> 6) & 3) << 4))
        for i, q in enumerate(qs):
            qf = (q.astype(np.int8) - np.int8(32)).reshape(nb, 2, 16)
            # sc index: 8h + is + 2i, is = l / 16
            _mul_into(qf, ds[:, 8 * h + 2 * i:8 * h + 2 * i + 2, None], y6[:, h, i])


_V = np.arange(256) if np else None  # the value index of a 256-value super-block


def _ggml_q3_k(blk, y):
    hm, q, sc = blk[:, 0:32], blk[:, 32:96], blk[:, 96:108]
    d = _f16(blk[:, 108:110])
    j = np.arange(16)
    low = np.where(j < 8, sc[:, j % 8] & 15, sc[:, j % 8] >> 4)
    high = (sc[:, 8 + j % 4] >> (2 * (j // 4))) & 3
    ls = (low | (high << 4)).astype(np.int16) - 32
    dl = d[:, None] * ls.astype(np.float32)  # (nb, 16)
    v = _V
    code = (q[:, (v // 128) * 32 + v % 32] >> (2 * ((v // 32) % 4)).astype(np.uint8)) & 3
    hbit = (hm[:, v % 32] >> (v // 32).astype(np.uint8)) & 1
    val = code.astype(np.int8) - np.where(hbit != 0, 0, 4).astype(np.int8)
    _mul_into(val, dl[:, v // 16], y)


def _ggml_q2_k(blk, y):
    sc, qs = blk[:, 0:16], blk[:, 16:80]
    d, mn = _f16(blk[:, 80:82]), _f16(blk[:, 82:84])
    dl = d[:, None] * (sc & 15).astype(np.float32)
    ml = mn[:, None] * (sc >> 4).astype(np.float32)
    v = _V
    code = (qs[:, (v // 128) * 32 + v % 32] >> (2 * ((v // 32) % 4)).astype(np.uint8)) & 3
    _mul_into(code, dl[:, v // 16], y)
    np.subtract(y, ml[:, v // 16], out=y)


def _ggml_iq4_xs(blk, y):
    nb = blk.shape[0]
    d = _f16(blk[:, 0:2])
    sh = blk[:, 2].astype(np.uint16) | (blk[:, 3].astype(np.uint16) << 8)
    ib = np.arange(8)
    ls = ((blk[:, 4 + ib // 2] >> (4 * (ib % 2))).astype(np.uint16) & 15) | \
        (((sh[:, None] >> (2 * ib)) & 3) << 4)
    dl = d[:, None] * (ls.astype(np.int16) - 32).astype(np.float32)  # (nb, 8)
    qs = blk[:, 8:136].reshape(nb, 8, 16)
    y3 = y.reshape(nb, 8, 2, 16)
    np.multiply(_KVALUES[qs & 15], dl[:, :, None], out=y3[:, :, 0])
    np.multiply(_KVALUES[qs >> 4], dl[:, :, None], out=y3[:, :, 1])


def _ggml(c, st, rows, cols, out):
    t = st["attrs"].get("type")
    if t not in _GGML:
        raise ValueError("ggml: missing or unknown attribute type '%s'" % t)
    bsz, bbytes = _GGML[t]
    if cols % bsz:
        raise ValueError("ggml: a %dx%d matrix does not divide into %s blocks of %d"
                         % (rows, cols, t, bsz))
    nb = rows * cols // bsz
    blk = _comp(c, st, "blocks", "U8", nb * bbytes).reshape(nb, bbytes)
    cg = _col_gains(c, st, cols)
    y = out.reshape(nb, bsz)
    step = max(1, (1 << 22) // bsz)  # blocks per slice: bounded temporaries
    for b0 in range(0, nb, step):
        yb, bb = y[b0:b0 + step], blk[b0:b0 + step]
        if bsz == 32:
            _ggml_legacy(t, bb, yb)
        elif t in ("q4_K", "q5_K"):
            _ggml_k45(bb, yb, t == "q5_K")
        elif t == "q6_K":
            _ggml_q6_k(bb, yb)
        elif t == "q3_K":
            _ggml_q3_k(bb, yb)
        elif t == "q2_K":
            _ggml_q2_k(bb, yb)
        else:
            _ggml_iq4_xs(bb, yb)
    if cg is not None:
        out2 = out.reshape(rows, cols)
        np.divide(out2, cg, out=out2)


# ecsq: the adaptive binary range code of plugins/clusterer-ecsq/ecsq_code.c ----

_ECSQ_ROWS = 1 << 20

# Where make install puts hvqconv's plugins: set in the installed copy of
# this module (python/local.mk substitutes it); None in the source tree.
_PLUGINDIR = None
_ECSQ_LIB = "clusterer_ecsq"
_native = {}  # "fn": the C decoder or None, "why": why not, "pool": threads
_native_lock = threading.Lock()


def _plugin_dirs():
    """Where to look for the ecsq plugin, in hvqconv's order: each directory
    of $HVQ_PLUGIN_PATH, then the build tree when this module is the source
    tree's (python/ beside plugins/), then the installed plugin directory."""
    dirs = [d for d in os.environ.get("HVQ_PLUGIN_PATH", "").split(os.pathsep) if d]
    here = os.path.dirname(os.path.abspath(__file__))
    dirs.append(os.path.join(os.path.dirname(here), "plugins", ".libs"))
    if _PLUGINDIR:
        dirs.append(_PLUGINDIR)
    return dirs


def _ecsq_native():
    """hvq_ecsq_decode_f32 of the ecsq plugin (plugins/clusterer-ecsq/
    ecsq_code.h: the C decoder of hvqconv itself) through ctypes, or None
    (then _native["why"] says why, warned once) when $HVQCONV_PURE_PYTHON
    is set or no plugin loads."""
    with _native_lock:
        if "fn" not in _native:
            _native["fn"], _native["why"] = _ecsq_load()
            if not _native["fn"]:
                warnings.warn("hvqconv.py: ecsq tensors decode in plain Python, about half a "
                              "million weights a second, a hundred times slower than through "
                              "hvqconv's ecsq plugin: %s" % _native["why"], RuntimeWarning,
                              stacklevel=2)
        return _native["fn"]


def _ecsq_load():
    if os.environ.get("HVQCONV_PURE_PYTHON"):
        return None, "HVQCONV_PURE_PYTHON is set"
    tried = []
    for d in _plugin_dirs():
        for ext in (".so", ".dylib", ".dll"):
            path = os.path.join(d, _ECSQ_LIB + ext)
            if not os.path.isfile(path):
                continue
            try:
                fn = ctypes.CDLL(path).hvq_ecsq_decode_f32
            except (OSError, AttributeError) as x:
                tried.append("%s: %s" % (path, x))
                continue
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64, ctypes.c_float,
                           ctypes.c_void_p]
            return fn, None
    return None, "; ".join(tried) if tried else (
        "no %s plugin in %s (set HVQ_PLUGIN_PATH to hvqconv's plugin directory)"
        % (_ECSQ_LIB, ", ".join(_plugin_dirs())))


def _ecsq_pool():
    """Threads for the C decoder's streams (ctypes releases the GIL)."""
    with _native_lock:
        if "pool" not in _native:
            from concurrent.futures import ThreadPoolExecutor
            _native["pool"] = ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1)))
        return _native["pool"]
_MAX_EXP = 24
_MANT = 2 + _MAX_EXP


def _ecsq_stream(buf, count):
    """count levels from one stream (bytes); None when it is corrupt.

    One adaptive probability (of a 0, 12 bits) per context, all in P: 0 the
    nonzero bit, 1 the sign, 2 + k the exponent's bit k, _MANT + 3 k + c the
    mantissa's first two bits (c = 0, then 1 + the first bit); the
    mantissa's other bits at probability 1/2."""
    buf = bytes(buf) + bytes(8)  # reads past the end give 0 (refused at the end)
    nbytes = len(buf) - 8
    code, pos, rng = int.from_bytes(buf[0:4], "big"), 4, 0xffffffff
    P = [2048] * (_MANT + 3 * _MAX_EXP)
    out = [0] * count
    TOP = 1 << 24
    i = ix = 0
    while i < count:
        p = P[ix]
        bound = (rng >> 12) * p
        if code < bound:
            rng = bound
            P[ix] = p + ((4096 - p) >> 6)
            bit = 0
        else:
            code -= bound
            rng -= bound
            P[ix] = p - (p >> 6)
            bit = 1
        while rng < TOP:
            rng <<= 8
            code = ((code << 8) | buf[pos]) & 0xffffffff
            pos += 1
        if ix == 0:  # nonzero?
            if bit:
                ix = 1
            else:
                i += 1  # out[i] stays 0
            continue
        if ix == 1:  # the sign
            neg, k, ix = bit, 0, 2
            continue
        if ix < _MANT:  # the exponent: ones up to a zero
            if bit:
                k += 1
                if k == _MAX_EXP:
                    return None
                ix = 2 + k
                continue
            v, j = 1, 0
        else:  # a mantissa bit with a context
            v = (v << 1) | bit
            j += 1
        if j < k and j < 2:
            ix = _MANT + 3 * k + (1 + bit if j else 0)
            continue
        for j in range(j, k):  # the rest at probability 1/2
            rng >>= 1
            if code >= rng:
                code -= rng
                v = (v << 1) | 1
            else:
                v <<= 1
            while rng < TOP:
                rng <<= 8
                code = ((code << 8) | buf[pos]) & 0xffffffff
                pos += 1
        out[i] = -v if neg else v
        i += 1
        ix = 0
    if pos != nbytes:
        return None
    return out


def _ecsq(c, st, rows, cols, out):
    a = st["attrs"]
    if a.get("code") != "range1":
        raise ValueError("ecsq: attribute code '%s' is not range1 (written by a newer "
                         "hvqconv?)" % a.get("code"))
    per = max(1, _ECSQ_ROWS // cols) if cols else 1
    ns = (rows + per - 1) // per
    step = _comp(c, st, "step", "F32", 1).astype(np.float32)
    lengths = _comp(c, st, "lengths", "U32", ns).astype(np.int64)
    streams = _comp(c, st, "streams", "U8")
    if not (np.isfinite(step).all() and step[0] > 0):
        raise ValueError("ecsq: the step %g is not a positive number" % step[0])
    cg = _col_gains(c, st, cols)
    offs = np.concatenate(([0], np.cumsum(lengths)))
    if offs[-1] != streams.size:
        raise ValueError("ecsq: the stream lengths do not add up to %d bytes" % streams.size)
    fn = _ecsq_native()
    if fn:
        if not (out.flags.c_contiguous and out.dtype == np.float32):
            raise TypeError("ecsq: the output is not a contiguous float32 array")
        base, dst = streams.ctypes.data, out.ctypes.data

        def one(s):  # a stream on a worker thread, its column gains and check too
            r0, r1 = s * per, min(rows, (s + 1) * per)
            rc = fn(base + int(offs[s]), int(lengths[s]), (r1 - r0) * cols, float(step[0]),
                    dst + 4 * r0 * cols)
            if rc == 0:
                part = out[r0 * cols:r1 * cols]
                if cg is not None:
                    part2 = part.reshape(r1 - r0, cols)
                    np.divide(part2, cg, out=part2)
                rc = 0 if np.isfinite(part).all() else 1
            return rc
        rcs = list(_ecsq_pool().map(one, range(ns))) if ns > 1 else [one(s) for s in range(ns)]
        for s, rc in enumerate(rcs):
            if rc == -2:
                raise MemoryError("ecsq: out of memory")
            if rc < 0:
                raise ValueError("ecsq: stream %d of %d is corrupt" % (s, ns))
        if any(rcs):
            raise ValueError("ecsq: a decoded value is beyond what a float holds")
        return
    for s in range(0 if fn else ns):  # the plain Python decoder
        r0, r1 = s * per, min(rows, (s + 1) * per)
        try:
            q = _ecsq_stream(streams[offs[s]:offs[s + 1]], (r1 - r0) * cols)
        except IndexError:  # ran far past its bytes
            q = None
        if q is None:
            raise ValueError("ecsq: stream %d of %d is corrupt" % (s, ns))
        _mul_into(np.array(q, np.int32), step[0], out[r0 * cols:r1 * cols])
    if cg is not None:
        out2 = out.reshape(rows, cols)
        np.divide(out2, cg, out=out2)
    if not np.isfinite(out).all():
        raise ValueError("ecsq: a decoded value is beyond what a float holds")


# residuals --------------------------------------------------------------------

def _apply_sparse(out, pos, val, who):
    if not np.isfinite(val).all():
        raise ValueError("%s: entry %d is not finite" % (who, int(np.argmin(np.isfinite(val)))))
    out[pos] = out[pos] + val  # float32 addition, positions distinct


def _coo16(c, st, rows, cols, out):
    m, n = _u(st["attrs"], "count"), rows * cols
    if m > n:
        raise ValueError("coo16: count %d does not match a %dx%d matrix" % (m, rows, cols))
    pos = _comp(c, st, "positions", "U32", m).astype(np.intp)
    val = _f16(_comp(c, st, "values", "F16", m))
    if m and (pos[-1] >= n or (m > 1 and not (np.diff(pos) > 0).all()) or pos.max() >= n):
        raise ValueError("coo16: positions out of range or not ascending")
    _apply_sparse(out, pos, val, "coo16")


def _bits_at(words, at, nb):
    """nb <= 32 bits from bit positions `at` (LSB-first stream)."""
    return (words[at >> 3] >> (at & 7).astype(np.uint64)) & np.uint64((1 << nb) - 1)


def _rice(c, st, rows, cols, out):
    a = st["attrs"]
    m, k, nbits = _u(a, "count"), _u(a, "k"), _u(a, "bits")
    n = rows * cols
    w = max(1, (n - 1).bit_length())
    if k > w:
        raise ValueError("rice: parameter k above the bit width of a position")
    data = _comp(c, st, "positions", "U8")
    val = _f16(_comp(c, st, "values", "F16", m))
    if data.size != (nbits + 7) // 8 or m > nbits:
        raise ValueError("rice: stream length does not match its bit count or entry count")
    if m == 0:
        if nbits:
            raise ValueError("rice: bits left over after the last entry")
        return
    if nbits % 8 and int(data[-1]) >> (nbits % 8):
        raise ValueError("rice: bits left over after the last entry")
    # Every bit position j as a possible code start: f(j) = where the code
    # starting at j ends. Escape: 32 ones, then w bits.
    P = data.size * 8 + 128
    bits = np.zeros(P, np.uint8)
    bits[:data.size * 8] = np.unpackbits(data, bitorder="little")
    idx = np.arange(P, dtype=np.int64)
    nz = np.where(bits == 0, idx, P)
    nz = np.minimum.accumulate(nz[::-1])[::-1]  # the first 0 at or after j
    esc = nz - idx >= 32
    f = np.where(esc, idx + 32 + w, nz + 1 + k)
    f = np.append(np.minimum(f, P), P)  # P: past the end, a fixed point
    # the starts s_i = f^i(0): f^B by doubling, every B-th start in Python,
    # the ones between vectorized
    B = 1
    fb = f
    while B * B < m:
        fb = fb[fb]
        B *= 2
    heads, s = [], 0
    for _ in range((m + B - 1) // B):
        heads.append(s)
        s = int(fb[s])
    lanes = np.empty((B, len(heads)), np.int64)
    lanes[0] = heads
    for r in range(1, B):
        lanes[r] = f[lanes[r - 1]]
    starts = lanes.T.reshape(-1)[:m]
    if int(f[starts[-1]]) != nbits:
        raise ValueError("rice: the codes do not end at bit %d (truncated or bits left over)"
                         % nbits)
    words = np.lib.stride_tricks.as_strided(
        np.concatenate((data, np.zeros(16, np.uint8))), shape=(data.size + 8, 8),
        strides=(1, 1)).copy().view("<u8").reshape(-1)
    zs = nz[starts]
    q = zs - starts
    isesc = q >= 32
    g = np.empty(m, np.int64)
    ne = ~isesc
    if k:
        low = _bits_at(words, (zs[ne] + 1).astype(np.uint64), k).astype(np.int64)
    else:
        low = 0
    qn = q[ne]
    if (qn >> (w - k)).any():
        raise ValueError("rice: a position beyond the tensor")
    g[ne] = (qn << k) | low
    if isesc.any():
        at = (starts[isesc] + 32).astype(np.uint64)
        lo = _bits_at(words, at, min(w, 32))
        if w > 32:
            lo |= _bits_at(words, at + np.uint64(32), w - 32) << np.uint64(32)
        g[isesc] = lo.astype(np.int64)
    pos = np.cumsum(g + 1) - 1
    if pos[-1] >= n or (g >= n).any():
        raise ValueError("rice: a position beyond the tensor")
    _apply_sparse(out, pos, val, "rice")


def _none(c, st, rows, cols, out):
    if st["components"]:
        raise ValueError("residual none has components")


_CLUSTERERS = {"rtn": _rtn, "kmeans": _kmeans, "ggml": _ggml, "ecsq": _ecsq}
_RESIDUALS = {"none": _none, "coo16": _coo16, "rice": _rice}


def _decode(c, e):
    rows, cols = e["rows"], e["cols"]
    numel = 1
    for d in e["shape"]:
        numel *= d
    if type(rows) is not int or type(cols) is not int or rows < 1 or cols < 1 or \
       rows * cols != numel:
        raise FormatError("%s: tensor '%s': rows x cols %sx%s is not its %s elements"
                          % (c.path, e["name"], rows, cols, numel))
    out = np.empty(numel, np.float32)
    for stage, table in (("clusterer", _CLUSTERERS), ("residual", _RESIDUALS)):
        st = e[stage]
        fn = table.get(st.get("plugin"))
        if fn is None:
            raise FormatError("%s: tensor '%s' needs the %s plugin '%s' (version %s), which "
                              "this Python reader does not know" % (
                                  c.path, e["name"], stage, st.get("plugin"), st.get("version")))
        for comp in st["components"].values():
            if comp not in e["stored"]:
                raise FormatError("%s: tensor '%s': component '%s' is not in its stored list"
                                  % (c.path, e["name"], comp))
        try:
            fn(c, st, rows, cols, out)
        except ValueError as x:
            raise FormatError("%s: tensor '%s': %s '%s': %s"
                              % (c.path, e["name"], stage, st["plugin"], x)) from None
    if e.get("scales") is not None:
        s = _f16(c._array(e["scales"], "F16"))
        if s.size != rows:
            raise FormatError("%s: tensor '%s': %d row scales for %d rows"
                              % (c.path, e["name"], s.size, rows))
        out2 = out.reshape(rows, cols)
        np.multiply(out2, s[:, None], out=out2)
    if not np.isfinite(out).all():
        bad = int(np.argmin(np.isfinite(out)))
        raise FormatError("%s: tensor '%s': value %d decodes to %s (a stored component is not "
                          "finite)" % (c.path, e["name"], bad,
                                       "NaN" if np.isnan(out[bad]) else "infinity"))
    return out


# ---- the API -------------------------------------------------------------------

def load(path, raw="float32"):
    """{name: numpy array} of every tensor of the container at path (a .hvq
    file, a sharded container's NAME.hvq.index.json, or the directory of
    either), in the container's order. Compressed tensors are float32,
    bit-identical to `hvqconv decode --dtype f32`; raw float tensors are
    float32 too (raw="stored": their stored dtype); see the module's
    documentation. Raises FormatError on any problem with the input."""
    with Container(path) as c:
        return {name: c.get(name, raw) for name in c.names}


def _describe(e):
    if e["encoding"] == "raw":
        return "raw"
    cl, rs = e["clusterer"], e["residual"]
    a = cl.get("attrs", {})
    what = cl["plugin"] + ("(%s)" % a["type"] if "type" in a else "")
    return what + ("+" + rs["plugin"] if rs["plugin"] != "none" else "")


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(
        prog="hvqconv.py",
        description="Load an hvq container with numpy (docs/FORMAT.md): list its tensors, or "
                    "decode them all (checksums verified) and report the speed.")
    ap.add_argument("container", help="a .hvq file, NAME.hvq.index.json, or their directory")
    ap.add_argument("--list", action="store_true", help="list the tensors, decode nothing")
    ap.add_argument("--tensor", action="append", metavar="NAME",
                    help="decode only this tensor (repeatable)")
    args = ap.parse_args(argv)
    try:
        with Container(args.container) as c:
            if args.list:
                for e in c.entries:
                    print("%-48s %-6s %-16s %s" % (e["name"], e["dtype"],
                                                   "x".join(map(str, e["shape"])) or "scalar",
                                                   _describe(e)))
                return 0
            names = args.tensor or c.names
            t0, total = time.perf_counter(), 0
            for name in names:
                try:
                    a = c.get(name)
                except KeyError:
                    raise FormatError("%s: no tensor '%s'" % (args.container, name)) from None
                total += a.size
            dt = time.perf_counter() - t0
            print("%s: %d tensors, %d values decoded in %.3f s (%.1f M values/s)"
                  % (args.container, len(names), total, dt, total / dt / 1e6 if dt else 0))
            return 0
    except FormatError as e:
        print("hvqconv.py: error: %s" % e, file=sys.stderr)
        return 2
    except MemoryError:
        print("hvqconv.py: error: %s: out of memory" % args.container, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
