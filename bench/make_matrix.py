#!/usr/bin/env python3
"""Writes a synthetic weight matrix and its Hessian diagonal as safetensors
files, for benchmarks and for checking the error figures against the paper's
reference (needs numpy; not used by `make check`).

  bench/make_matrix.py OUTDIR [--rows 2048] [--cols 2048] [--df 5] [--seed 0]

OUTDIR/matrix.safetensors   "layer.weight": F32 [rows, cols], Student-t(df)
                            entries scaled by 0.02
OUTDIR/hessian.safetensors  "layer.weight": F32 [cols], log-normal
                            exp(N(0, 1)) (the spread of real activation
                            statistics)
"""
import argparse, json, os, struct
import numpy as np


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--cols", type=int, default=2048)
    ap.add_argument("--df", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    w = (rng.standard_t(a.df, size=(a.rows, a.cols)) * 0.02).astype(np.float32)
    h = np.exp(rng.standard_normal(a.cols)).astype(np.float32)
    os.makedirs(a.outdir, exist_ok=True)
    write_safetensors(os.path.join(a.outdir, "matrix.safetensors"), {"layer.weight": w})
    write_safetensors(os.path.join(a.outdir, "hessian.safetensors"), {"layer.weight": h})


if __name__ == "__main__":
    main()
