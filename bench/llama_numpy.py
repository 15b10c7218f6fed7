#!/usr/bin/env python3
"""An independent float64 numpy forward pass of a Llama-family model, to
cross-check `hvqconv eval`. A reference tool, not a test: its figure for the
repo's demo model is pinned in tests/test_eval.c.

  bench/llama_numpy.py MODEL_DIR TOKENS.npy [--ctx 256] [--max-windows N]
      [--config CONFIG.json]

MODEL_DIR holds config.json and model.safetensors (F32, F16 or BF16, Hugging
Face names and rotate-half q/k order; rope_scaling none, linear or llama3;
--config gives another config.json). TOKENS.npy is a 1-D integer array.
The stream is cut into consecutive windows of ctx tokens (a last partial
window is dropped, at most max-windows of them); every token after the first
of each window is scored. Prints the mean negative log-likelihood, the
perplexity and the token count, with 10 significant digits.

Everything is computed in float64 from the stored weights: embedding,
RMSNorm (x / sqrt(mean(x^2) + eps) * w), rotary embeddings (rotate-half
pairing, inv_freq = theta^(-2i/d)), causal grouped-query attention, the
SwiGLU MLP down(silu(gate x) * up x), final norm, tied or separate head,
log-softmax. Needs numpy.
"""
import argparse, json, math, os, struct, sys
import numpy as np


def read_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    hdr.pop("__metadata__", None)
    out = {}
    for k, v in hdr.items():
        s, e = v["data_offsets"]
        raw = b[8 + n + s:8 + n + e]
        if v["dtype"] == "F32":
            a = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        elif v["dtype"] == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float64)
        elif v["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            a = u.view(np.float32).astype(np.float64)
        else:
            raise SystemExit("%s: tensor %s: dtype %s not handled" % (path, k, v["dtype"]))
        out[k] = a.reshape(v["shape"])
    return out


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def inv_freq(d, theta, scaling):
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)      # d/2
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "linear":
        inv = inv / scaling["factor"]
    elif kind == "llama3":
        # Llama 3.1: wavelengths above original/low_freq_factor divided by
        # factor, below original/high_freq_factor kept, blended between.
        f, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wl = 2 * math.pi / inv
        s = (old / wl - lo) / (hi - lo)
        blended = (1 - s) * inv / f + s * inv
        inv = np.where(wl > old / lo, inv / f, np.where(wl < old / hi, inv, blended))
    elif kind != "default":
        raise SystemExit("rope_scaling %s not handled" % kind)
    return inv


def rope(x, pos, inv):
    # x: [n, heads, d]; rotate-half: dimension i pairs with i + d/2.
    d = x.shape[-1]
    ang = pos[:, None] * inv[None, :]                                 # n, d/2
    cos = np.cos(ang)[:, None, :]
    sin = np.sin(ang)[:, None, :]
    a, b = x[..., :d // 2], x[..., d // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def forward(W, cfg, toks, hook=None):
    """hook(layer, which, x), when given, sees the input x of every linear
    layer: which is "qkv", "o", "gate_up" or "down"."""
    hook = hook or (lambda layer, which, x: None)
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim", H // nh)
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    inv = inv_freq(hd, theta, cfg.get("rope_scaling"))
    L = cfg["num_hidden_layers"]
    n = len(toks)
    pos = np.arange(n, dtype=np.float64)
    x = W["model.embed_tokens.weight"][toks]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for l in range(L):
        p = "model.layers.%d." % l
        h = rmsnorm(x, W[p + "input_layernorm.weight"], eps)
        hook(l, "qkv", h)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(n, nh, hd)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(n, nkv, hd)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(n, nkv, hd)
        q, k = rope(q, pos, inv), rope(k, pos, inv)
        rep = nh // nkv
        k = np.repeat(k, rep, axis=1)       # head j uses kv head j // rep
        v = np.repeat(v, rep, axis=1)
        s = np.einsum("ihd,jhd->hij", q, k) / math.sqrt(hd) + mask
        s = s - s.max(axis=-1, keepdims=True)
        pr = np.exp(s)
        pr /= pr.sum(axis=-1, keepdims=True)
        a = np.einsum("hij,jhd->ihd", pr, v).reshape(n, nh * hd)
        hook(l, "o", a)
        x = x + a @ W[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
        hook(l, "gate_up", h)
        g = h @ W[p + "mlp.gate_proj.weight"].T
        u = h @ W[p + "mlp.up_proj.weight"].T
        m = (g / (1.0 + np.exp(-g))) * u
        hook(l, "down", m)
        x = x + m @ W[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, W["model.norm.weight"], eps)
    tied = cfg.get("tie_word_embeddings", False) or "lm_head.weight" not in W
    head = W["model.embed_tokens.weight"] if tied else W["lm_head.weight"]
    logits = x @ head.T
    m = logits.max(axis=-1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=-1))
    lp = logits[np.arange(n - 1), toks[1:]] - lse[:-1]
    return -lp.sum(), n - 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("tokens")
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--max-windows", type=int, default=0)
    ap.add_argument("--config", help="config.json to use instead of MODEL_DIR's")
    a = ap.parse_args()
    cfg = json.load(open(a.config or os.path.join(a.model, "config.json")))
    W = read_safetensors(os.path.join(a.model, "model.safetensors"))
    toks = np.load(a.tokens).astype(np.int64).ravel()
    nw = len(toks) // a.ctx
    if a.max_windows:
        nw = min(nw, a.max_windows)
    nll, cnt = 0.0, 0
    for w in range(nw):
        s, c = forward(W, cfg, toks[w * a.ctx:(w + 1) * a.ctx])
        nll += s
        cnt += c
    mean = nll / cnt
    print("windows %d tokens %d nll %.10f ppl %.10f" % (nw, cnt, mean, math.exp(mean)))


if __name__ == "__main__":
    main()
