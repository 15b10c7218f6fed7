#!/usr/bin/env python3
"""Writes the ggml clusterer's fixtures (see README.md in this folder).

For each tensor named on the command line it writes, from an F32 GGUF
model, an importance matrix (GGUF) and llama-quantize's outputs:
  NAME.f32                    the weights, rows x cols float32 (rows =
                              outputs, as hvqconv sees them)
  NAME.imatrix.f32            the imatrix values llama-quantize passes as
                              quant_weights: in_sum2 / counts in float32
  NAME.TYPE.none.bin          the tensor's blocks from QDIR/TYPE.none.gguf
  NAME.TYPE.imatrix.bin       and from QDIR/TYPE.imatrix.gguf (only for
                              tensors the imatrix has)
and manifest.txt, one line per case: TYPE WEIGHTS NAME ROWS COLS.

usage: make_fixtures.py MODEL.gguf IMATRIX.gguf QDIR OUTDIR TYPE[,TYPE..] [TENSOR..]
(no TENSOR: every 2-D tensor whose rows divide into blocks)
"""
import os
import sys

import numpy as np
from gguf import GGUFReader


def imatrix_values(path):
    """name -> in_sum2 / counts, divided in float32 as llama-quantize does."""
    tensors = {t.name: t for t in GGUFReader(path).tensors}
    out = {}
    for name, t in tensors.items():
        if name.endswith('.in_sum2'):
            stem = name[:-len('.in_sum2')]
            counts = np.asarray(tensors[stem + '.counts'].data, dtype=np.float32).reshape(-1)
            if counts.size != 1:
                raise SystemExit(f'{stem}: stacked (expert) imatrix entries are not handled')
            out[stem] = (np.asarray(t.data, dtype=np.float32).reshape(-1) / counts[0]).astype(np.float32)
    return out


def blocks(path, name, qtype):
    for t in GGUFReader(path).tensors:
        if t.name == name:
            if t.tensor_type.name != qtype.upper():
                raise SystemExit(f'{path}: {name} is {t.tensor_type.name}, not {qtype}')
            return np.asarray(t.data, dtype=np.uint8).tobytes()
    raise SystemExit(f'{path}: no tensor {name}')


def main():
    model, imatrix, qdir, outdir, types = sys.argv[1:6]
    names = sys.argv[6:]
    os.makedirs(outdir, exist_ok=True)
    imx = imatrix_values(imatrix)
    lines = []
    for t in GGUFReader(model).tensors:
        if len(t.shape) != 2 or (names and t.name not in names):
            continue
        cols, rows = int(t.shape[0]), int(t.shape[1])  # GGUF lists [in, out]
        weights = np.asarray(t.data, dtype=np.float32).reshape(rows, cols)
        cases = []
        for qtype in types.split(','):
            block = 256 if qtype.endswith('K') else 32
            if cols % block == 0:
                cases += [(qtype, w) for w in (['none', 'imatrix'] if t.name in imx else ['none'])]
        if not cases:
            continue
        weights.tofile(os.path.join(outdir, t.name + '.f32'))
        if t.name in imx:
            imx[t.name].tofile(os.path.join(outdir, t.name + '.imatrix.f32'))
        for qtype, w in cases:
            data = blocks(os.path.join(qdir, f'{qtype.upper()}.{w}.gguf'), t.name, qtype)
            with open(os.path.join(outdir, f'{t.name}.{qtype}.{w}.bin'), 'wb') as f:
                f.write(data)
            lines.append(f'{qtype} {w} {t.name} {rows} {cols}')
    with open(os.path.join(outdir, 'manifest.txt'), 'w') as f:
        f.write('# TYPE WEIGHTS TENSOR ROWS COLS (made by make_fixtures.py, see README.md)\n')
        f.write('\n'.join(lines) + '\n')
    print(f'{len(lines)} cases in {outdir}')


if __name__ == '__main__':
    main()
