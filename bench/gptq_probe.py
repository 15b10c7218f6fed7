#!/usr/bin/env python3
"""What would GPTQ-style error feedback with the full input Hessian buy?
A numpy measurement for the next step of hvqconv (which has no such
quantizer yet), not a part of it.

  bench/gptq_probe.py [--model DIR] [--calib TOKENS.npy] [--type q5_0|q4_0]
                      [--out DIR]

Runs bench/llama_numpy.py's forward pass of the model (a Hugging Face
directory, F32 safetensors) over the calibration tokens (windows of 256),
accumulating H = X^T X of the input of every linear layer (q, k and v share
theirs, as do gate and up). Then it writes two copies of the model, each
linear weight quantized to the layout of llama.cpp's q4_0 or q5_0 (blocks
of 32 input columns, one fp16 scale d = the signed value of largest
magnitude / -8 or / -16, integers -8..7 or -16..15; a last partial block
where the width is no multiple of 32), and nothing else changed:

  OUT/rtn.safetensors   every block rounded to nearest (llama.cpp without
                        an importance matrix)
  OUT/gptq.safetensors  GPTQ: the columns in order, each block's scales
                        taken from the weights as updated so far, the
                        rounding error of each column spread over the
                        columns not yet quantized with the upper Cholesky
                        factor U of (H + 1 % mean(diag H) I)^-1:
                        W[:, j+1:] -= (w_j - q_j) / U[j,j] * U[j, j+1:]

Judge them with `hvqconv eval OUT/X.safetensors --config DIR/config.json
--tokens EVAL.npy` (the script prints the commands). Needs numpy.
"""
import argparse, json, os, struct, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_numpy  # noqa: E402

LINEAR = {"self_attn.q_proj": "qkv", "self_attn.k_proj": "qkv", "self_attn.v_proj": "qkv",
          "self_attn.o_proj": "o", "mlp.gate_proj": "gate_up", "mlp.up_proj": "gate_up",
          "mlp.down_proj": "down"}


def hessians(W, cfg, toks, ctx=256):
    H = {}

    def hook(layer, which, x):
        H[(layer, which)] = H.get((layer, which), 0) + x.T @ x

    for w in range(len(toks) // ctx):
        llama_numpy.forward(W, cfg, toks[w * ctx:(w + 1) * ctx], hook)
    return H


def scales(block, qmax):
    """One fp16 scale per row of block, as llama.cpp's q4_0 / q5_0."""
    i = np.argmax(np.abs(block), axis=1)
    d = block[np.arange(len(block)), i] / -qmax
    return d.astype(np.float16).astype(np.float64)


def round_col(w, d, qmax):
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.floor(w / d + qmax + 0.5), 0, 2 * qmax - 1) - qmax
    return np.where(d != 0, q * d, 0.0)


def rtn(W, qmax):
    Q = np.empty_like(W)
    for c0 in range(0, W.shape[1], 32):
        d = scales(W[:, c0:c0 + 32], qmax)
        for j in range(c0, min(c0 + 32, W.shape[1])):
            Q[:, j] = round_col(W[:, j], d, qmax)
    return Q


def gptq(W, H, qmax, damp=0.01):
    W = W.copy()
    H = H.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    H += damp * np.mean(np.diag(H)) * np.eye(len(H))
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    Q = np.empty_like(W)
    for c0 in range(0, W.shape[1], 32):
        d = scales(W[:, c0:c0 + 32], qmax)
        for j in range(c0, min(c0 + 32, W.shape[1])):
            Q[:, j] = round_col(W[:, j], d, qmax)
            W[:, j + 1:] -= np.outer((W[:, j] - Q[:, j]) / U[j, j], U[j, j + 1:])
    return Q


def write_safetensors(W, path):
    hdr, off, blobs = {}, 0, []
    for k, v in W.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    j = json.dumps(hdr).encode()
    j += b" " * (-len(j) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(j)) + j + b"".join(blobs))
    os.replace(path + ".tmp", path)


def main():
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(src, "models/stories260K"))
    ap.add_argument("--calib", default=None, help="default: MODEL/tinystories-calib.tok512.npy")
    ap.add_argument("--type", choices=["q4_0", "q5_0"], default="q5_0")
    ap.add_argument("--out", default="/tmp/hvqconv-gptq")
    a = ap.parse_args()
    qmax = 8 if a.type == "q4_0" else 16
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    W = llama_numpy.read_safetensors(os.path.join(a.model, "model.safetensors"))
    calib = a.calib or os.path.join(a.model, "tinystories-calib.tok512.npy")
    H = hessians(W, cfg, np.load(calib).astype(np.int64).ravel())
    os.makedirs(a.out, exist_ok=True)
    for name, fn in (("rtn", lambda w, h: rtn(w, qmax)), ("gptq", lambda w, h: gptq(w, h, qmax))):
        Wq = dict(W)
        for l in range(cfg["num_hidden_layers"]):
            for lin, which in LINEAR.items():
                key = "model.layers.%d.%s.weight" % (l, lin)
                Wq[key] = fn(W[key], H[(l, which)])
        path = os.path.join(a.out, "%s-%s.safetensors" % (a.type, name))
        write_safetensors(Wq, path)
        print("hvqconv eval %s --config %s --tokens EVAL.npy" %
              (path, os.path.join(a.model, "config.json")))


if __name__ == "__main__":
    main()
