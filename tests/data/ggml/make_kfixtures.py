#!/usr/bin/env python3
"""Writes the K-type fixtures of the ggml clusterer (see README.md here).

No tensor of stories260K has rows of 256 (its rows are 64 or 172 long), so
llama-quantize never writes a K block for it. These fixtures call instead
the function llama-quantize calls for every chunk of rows,
ggml_quantize_chunk of llama.cpp's libggml-base.so, on a 24 x 512 matrix
made of stories260K's token embedding values (one super-block set to 0),
with and without importance values (blk.0.ffn_gate's imatrix entry,
repeated to 512 columns). Their lines replace those of the same name in
manifest.txt.

usage: make_kfixtures.py LIBGGML_BASE.so MODEL.gguf IMATRIX.gguf OUTDIR
"""
import ctypes
import os
import sys

import numpy as np
from gguf import GGUFReader

TYPES = {'q2_K': 10, 'q3_K': 11, 'q4_K': 12, 'q5_K': 13, 'q6_K': 14, 'iq4_xs': 23}  # enum ggml_type
NAME = 'tok_embd_24x512'


def write_cases(libpath, outdir, name, w, h, types):
    """Writes name.f32 (w), name.imatrix.f32 (h) and name.TYPE.{none,imatrix}.bin
    from ggml_quantize_chunk of libpath for each type (name -> enum ggml_type),
    and replaces the lines of name in outdir/manifest.txt."""
    lib = ctypes.CDLL(libpath)
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_void_p]
    rows, cols = w.shape
    w.tofile(os.path.join(outdir, name + '.f32'))
    h.tofile(os.path.join(outdir, name + '.imatrix.f32'))
    lines = []
    for t, tid in types.items():
        for mode, qw in (('none', None), ('imatrix', h)):
            out = np.zeros(rows * lib.ggml_row_size(tid, cols), dtype=np.uint8)
            lib.ggml_quantize_chunk(tid, w.ctypes.data, out.ctypes.data, 0, rows, cols,
                                    None if qw is None else qw.ctypes.data)
            out.tofile(os.path.join(outdir, f'{name}.{t}.{mode}.bin'))
            lines.append(f'{t} {mode} {name} {rows} {cols}')
    man = os.path.join(outdir, 'manifest.txt')
    keep = [l for l in open(man).read().splitlines() if l.split(' ')[2:3] != [name]]
    with open(man, 'w') as f:
        f.write('\n'.join(keep + lines) + '\n')
    print(f'{len(lines)} cases of {name} in {outdir}')


def main():
    libpath, model, imatrix, outdir = sys.argv[1:5]
    tensors = {t.name: t for t in GGUFReader(model).tensors}
    emb = np.asarray(tensors['token_embd.weight'].data, dtype=np.float32).reshape(-1)
    w = emb[:24 * 512].reshape(24, 512).copy()
    w[3, :256] = 0.0
    imx = {t.name: t for t in GGUFReader(imatrix).tensors}
    s = np.asarray(imx['blk.0.ffn_gate.weight.in_sum2'].data, dtype=np.float32).reshape(-1)
    c = np.float32(np.asarray(imx['blk.0.ffn_gate.weight.counts'].data).reshape(-1)[0])
    h = np.ascontiguousarray(np.tile((s / c).astype(np.float32), 512 // s.size))
    write_cases(libpath, outdir, NAME, w, h, TYPES)


if __name__ == '__main__':
    main()
