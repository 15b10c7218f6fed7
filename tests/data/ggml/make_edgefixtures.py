#!/usr/bin/env python3
"""Writes the edge-case fixtures of the ggml clusterer (see README.md here).

A 6 x 256 matrix of awkward rows (all zero, subnormal values whose inverse
scale overflows to infinity, values near 1e-30, constant groups, one-signed
rows, small integers, outliers next to a group of zeros) and importance
values with zeros and a tiny entry, quantized as every type by
ggml_quantize_chunk of llama.cpp's libggml-base.so (through ctypes), with
and without the importance values. Its lines replace those of the same
name in manifest.txt (run it after make_fixtures.py and make_kfixtures.py).

usage: make_edgefixtures.py LIBGGML_BASE.so OUTDIR
"""
import sys

import numpy as np

from make_kfixtures import write_cases  # this folder's script

TYPES = {'q4_0': 2, 'q4_1': 3, 'q5_0': 6, 'q5_1': 7, 'q8_0': 8, 'iq4_nl': 20,
         'q2_K': 10, 'q3_K': 11, 'q4_K': 12, 'q5_K': 13, 'q6_K': 14, 'iq4_xs': 23}  # enum ggml_type
NAME = 'edge_6x256'
ROWS, COLS = 6, 256


def matrix():
    i = np.arange(COLS, dtype=np.float64)
    s = np.sin(0.37 * i + 0.1)
    w = np.zeros((ROWS, COLS), dtype=np.float64)
    w[1, :128] = 1e-42
    w[1, 128:] = 1e-39 * s[128:]
    w[2, :128] = 1e-30 * s[:128]
    w[2, 128:] = 0.25
    w[3, :128] = -np.abs(s[:128])
    w[3, 128:] = np.abs(s[128:])
    w[4] = (i * 7) % 16 - 8
    w[5] = 0.01 * s
    w[5, ::37] = 3.0
    w[5, 64:96] = 0.0
    return w.astype(np.float32)


def importance():
    h = (0.5 + 0.4 * np.sin(np.arange(COLS, dtype=np.float64))).astype(np.float32)
    h[5] = 0.0
    h[7] = np.float32(1e-30)
    h[16:32] = 0.0
    return h


def main():
    libpath, outdir = sys.argv[1:3]
    write_cases(libpath, outdir, NAME, matrix(), importance(), TYPES)


if __name__ == '__main__':
    main()
