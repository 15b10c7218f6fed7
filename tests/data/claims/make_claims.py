#!/usr/bin/env python3
"""Writes the size-claim fixtures, zip archives laid out byte by byte (run by
hand with the standard library alone; the files are checked in):

    python3 tests/data/claims/make_claims.py

Each holds one array of int32 token ids, ids.npy, whose NPY header and zip
records claim 1 TiB while the file holds a few bytes of it:

stored-1tib.npz     stored; both sizes in the central directory (ZIP64) say
                    1 TiB: 344 bytes, like the file of issue 14, item 11
stored-claim.npz    stored in its real 192 bytes; the uncompressed size (ZIP64)
                    says 1 TiB
deflated-claim.npz  4 MB of zeros, deflated to 4 KB; the uncompressed size
                    says 1 TiB, far more than deflate's 1032:1
local-claim.npz     stored; the central directory is true, the local header
                    (ZIP64) says 1 TiB, and libarchive believes it
claim.npy           a lone .npy whose header claims 1 TiB

and, read correctly, with the same ids (1, 2, ..., 16):

zip64-ok.npz        the ZIP64 end records and extra fields, sizes true
sfx-ok.npz          an archive after a 300-byte stub (a self-extracting
                    archive), its offsets relative to the archive

tests/test_corrupt.c runs them through `hvqconv run`, `eval --tokens` and the
calibrate Hessian.
"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
TIB = 1 << 40
SAT32 = 0xFFFFFFFF


def npy(n_claimed, data):
    """An NPY 1.0 int32 array of n_claimed ids followed by data."""
    d = "{'descr': '<i4', 'fortran_order': False, 'shape': (%d,), }" % n_claimed
    head = d.encode()
    pad = (64 - (10 + len(head) + 1) % 64) % 64
    head += b' ' * pad + b'\n'
    return b'\x93NUMPY\x01\x00' + struct.pack('<H', len(head)) + head + data


def zip64_extra(*values):
    return struct.pack('<HH', 1, 8 * len(values)) + b''.join(
        struct.pack('<Q', v) for v in values)


def archive(member, method, usize, csize, crc, cd64=(), eocd64=False,
            prefix=b'', local_usize=None):
    """A one-member zip. cd64 names the central directory fields ('u', 'c',
    'o') given in its ZIP64 extra field (saturated in the fixed part); the
    local header gives local_usize when set, else usize (in its ZIP64
    extra field)."""
    name = b'ids.npy'
    lextra = zip64_extra(usize if local_usize is None else local_usize, csize)
    local = struct.pack('<IHHHHHIIIHH', 0x04034B50, 45, 0, method, 0, 0x21,
                        crc, SAT32, SAT32, len(name), len(lextra))
    local += name + lextra
    offset = 0
    vals = {'u': usize, 'c': csize, 'o': offset}
    extra = zip64_extra(*[vals[k] for k in 'uco' if k in cd64]) if cd64 else b''
    fixed = {k: (SAT32 if k in cd64 else vals[k]) for k in 'uco'}
    cd = struct.pack('<IHHHHHHIIIHHHHHII', 0x02014B50, 45, 45, 0, method, 0,
                     0x21, crc, fixed['c'], fixed['u'], len(name), len(extra),
                     0, 0, 0, 0o100644 << 16, fixed['o'])
    cd += name + extra
    body = local + member
    end = b''
    n16, size32, off32 = 1, len(cd), len(body)
    if eocd64:
        rec = struct.pack('<IQHHIIQQQQ', 0x06064B50, 44, 45, 45, 0, 0, 1, 1,
                          len(cd), len(body))
        loc = struct.pack('<IIQI', 0x07064B50, 0, len(body) + len(cd), 1)
        end = rec + loc
        n16, size32, off32 = 0xFFFF, SAT32, SAT32
    eocd = struct.pack('<IHHHHIIH', 0x06054B50, 0, 0, n16, n16, size32, off32,
                       0)
    return prefix + body + cd + end + eocd


def deflate(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def main():
    ids = struct.pack('<16i', *range(1, 17))
    small = npy(16, ids)
    crc = zlib.crc32(small)
    files = {}

    head = npy(TIB // 4, b'')
    claim = len(head) + TIB
    files['stored-1tib.npz'] = archive(npy(TIB // 4, ids), 0, claim, claim,
                                       zlib.crc32(npy(TIB // 4, ids)),
                                       cd64='uc')
    real = npy(TIB // 4, ids)
    files['stored-claim.npz'] = archive(real, 0, claim, len(real),
                                        zlib.crc32(real), cd64='u')
    zeros = npy(TIB // 4, bytes(4 << 20))
    packed = deflate(zeros)
    files['deflated-claim.npz'] = archive(packed, 8, claim, len(packed),
                                          zlib.crc32(zeros), cd64='u')
    files['local-claim.npz'] = archive(real, 0, len(real), len(real),
                                       zlib.crc32(real), local_usize=claim)
    files['claim.npy'] = npy(TIB // 4, ids)

    files['zip64-ok.npz'] = archive(small, 0, len(small), len(small), crc,
                                    cd64='uco', eocd64=True)
    files['sfx-ok.npz'] = archive(small, 0, len(small), len(small), crc,
                                  prefix=b'#!/bin/sh\n' + b'#' * 289 + b'\n')
    for name, data in files.items():
        with open(os.path.join(HERE, name), 'wb') as f:
            f.write(data)
        print('%-20s %6d bytes' % (name, len(data)))


if __name__ == '__main__':
    main()
