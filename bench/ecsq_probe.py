#!/usr/bin/env python3
"""What would entropy coding buy? A numpy measurement behind clusterer
ecsq, not a part of hvqconv.

  bench/ecsq_probe.py [--model DIR] [--calib TOKENS.npy]

For every linear weight of the model (a Hugging Face directory, F32
safetensors), with H = X^T X of its input over the calibration tokens
(bench/gptq_probe.py's forward pass), prints the relative output error
tr(E H E^T) / tr(W H W^T) of
  - llama.cpp's q5_0 layout (5.5 bits per weight) with GPTQ's feedback
    (rows whose width is a multiple of 32), and
  - one uniform step per tensor with GPTQ's feedback, the step chosen so
    that the empirical entropy of the levels is 4.5, 5.0 and 5.5 bits
    (the ideal size of an entropy code; clusterer ecsq's range code adds
    0.02 to 0.12 bit per weight and 64 bits per tensor),
both with damping 0.1. Needs numpy.
"""
import argparse, json, os, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_numpy  # noqa: E402
import gptq_probe as gp  # noqa: E402


def factor(h, damp=0.1):
    h = h.copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1
    h += damp * np.mean(np.diag(h)) * np.eye(len(h))
    return np.linalg.cholesky(np.linalg.inv(h)).T


def uniform_gptq(w, u, step):
    w = w.copy()
    q = np.empty_like(w)
    lv = np.empty(w.shape, dtype=np.int64)
    for j in range(w.shape[1]):
        lv[:, j] = np.round(w[:, j] / step)
        q[:, j] = lv[:, j] * step
        w[:, j + 1:] -= np.outer((w[:, j] - q[:, j]) / u[j, j], u[j, j + 1:])
    return q, lv


def entropy(lv):
    _, c = np.unique(lv, return_counts=True)
    p = c / c.sum()
    return -(p * np.log2(p)).sum()


def rel(w, q, h):
    e = w - q
    return np.trace(e @ h @ e.T) / np.trace(w @ h @ w.T)


def main():
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(src, "models/stories260K"))
    ap.add_argument("--calib", default=None, help="default: MODEL/tinystories-calib.tok512.npy")
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    W = llama_numpy.read_safetensors(os.path.join(a.model, "model.safetensors"))
    calib = a.calib or os.path.join(a.model, "tinystories-calib.tok512.npy")
    H = gp.hessians(W, cfg, np.load(calib).astype(np.int64).ravel())
    for l in range(cfg["num_hidden_layers"]):
        for lin, which in gp.LINEAR.items():
            key = "model.layers.%d.%s.weight" % (l, lin)
            w, h = W[key], H[(l, which)]
            u = factor(h)
            q5 = rel(w, gp.gptq(w, h, 16, damp=0.1), h) if w.shape[1] % 32 == 0 else float("nan")
            row = []
            for target in (4.5, 5.0, 5.5):
                lo, hi = 1e-6, 1.0  # bisection on the step, plain rounding's entropy
                for _ in range(40):
                    s = np.sqrt(lo * hi)
                    if entropy(np.round(w / s)) > target:
                        lo = s
                    else:
                        hi = s
                q, lv = uniform_gptq(w, u, hi)
                row.append("H=%.2f %.3e" % (entropy(lv), rel(w, q, h)))
            print("%-40s q5_0+gptq %.3e | uniform+gptq %s" % (key, q5, " | ".join(row)), flush=True)


if __name__ == "__main__":
    main()
