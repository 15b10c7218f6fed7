#!/usr/bin/env python3
"""An independent numpy implementation of the HAS-VQ algorithm as the paper's
reference code behaves (normalization, |W_norm|*sqrt(H) top-k, robust k-means
on a stability-bounded sample with dead-unit revival, residual feedback in
float32 against fp32 centroids, fp16 storage), to compare hvqconv's error on
the same matrix. Needs numpy; a benchmark tool, not a test.

  bench/hasvq_numpy.py DIR --block 4 --centroids 2048 --sparsity 0.015
      [--stability 200] [--iterations 15] [--seed 0]

DIR holds matrix.safetensors and hessian.safetensors (bench/make_matrix.py).
Prints the paper-accounting BPP, the relative Frobenius error and the
Hessian-weighted relative error sum_j H_j sum_i e_ij^2 / sum_j H_j sum_i W_ij^2.
"""
import argparse, json, math, os, struct, time
import numpy as np

from llama_numpy import read_safetensors  # bench/, beside this script


def nearest(x, c, chunk=8192):
    cn = (c * c).sum(1)
    out = np.empty(len(x), dtype=np.int64)
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk]
        d = cn[None, :] - 2.0 * xb @ c.T
        out[i:i + chunk] = d.argmin(1)
    return out


def min_dist(x, c, chunk=8192):
    cn = (c * c).sum(1)
    xn = (x * x).sum(1)
    out = np.empty(len(x), dtype=np.float32)
    for i in range(0, len(x), chunk):
        d = cn[None, :] - 2.0 * x[i:i + chunk] @ c.T
        out[i:i + chunk] = d.min(1) + xn[i:i + chunk]
    return out


def kmeans(x, k, iters, rng):
    n = len(x)
    c = x[rng.permutation(n)[:k]].copy()
    for _ in range(iters):
        lab = nearest(x, c)
        cnt = np.bincount(lab, minlength=k).astype(np.float64)
        num = np.zeros((k, x.shape[1]))
        np.add.at(num, lab, x)
        live = cnt > 0
        if (~live).any():
            sub = x[rng.permutation(n)[:10000]]
            md = min_dist(sub, c[live])
            worst = np.argsort(-md, kind="stable")[: (~live).sum()]
            newc = c.copy()
            newc[~live] = sub[worst]
            newc[live] = num[live] / cnt[live, None]
            c = newc.astype(np.float32)
        else:
            c = (num / cnt[:, None]).astype(np.float32)
    return c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--centroids", type=int, default=2048)
    ap.add_argument("--sparsity", type=float, default=0.015)
    ap.add_argument("--stability", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    W = read_safetensors(os.path.join(a.dir, "matrix.safetensors"))["layer.weight"].astype(np.float32)
    H = read_safetensors(os.path.join(a.dir, "hessian.safetensors"))["layer.weight"].astype(np.float32)
    t0 = time.time()
    rows, cols = W.shape
    s = np.maximum(np.abs(W).max(1, keepdims=True), 1e-6)
    Wn = W / s
    imp = (np.abs(Wn) * np.sqrt(np.maximum(H, 1e-6))[None, :]).ravel()
    k = int(Wn.size * a.sparsity)
    top = np.argpartition(-imp, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)
    body = Wn.ravel().copy()
    body[top] = 0
    b = a.block
    pad = (-body.size) % b
    vec = np.concatenate([body, np.zeros(pad, np.float32)]).reshape(-1, b)
    m = min(len(vec), a.centroids * a.stability)
    samp = vec[rng.permutation(len(vec))[:m]] if m < len(vec) else vec
    c = kmeans(samp, a.centroids, a.iterations, rng)
    idx = nearest(vec, c)
    rec = c[idx].ravel()[: body.size]
    sv = (Wn.ravel()[top] - rec[top]).astype(np.float16)
    # what is stored: fp16 codebook and scales, fp16 sparse values
    rec16 = c.astype(np.float16).astype(np.float32)[idx].ravel()[: body.size]
    rec16[top] += sv.astype(np.float32)
    What = rec16.reshape(rows, cols) * s.astype(np.float16).astype(np.float32)
    e = W - What
    bits = len(vec) * math.ceil(math.log2(a.centroids)) + k * 48 + c.size * 16 + rows * 16
    print(json.dumps({
        "bpp_paper": round(bits / W.size, 4),
        "rel_frobenius": float(np.sqrt((e ** 2).sum() / (W ** 2).sum())),
        "rel_hessian": float((H[None, :] * e ** 2).sum() / (H[None, :] * W ** 2).sum()),
        "seconds": round(time.time() - t0, 1),
    }))


if __name__ == "__main__":
    main()
