#!/usr/bin/env python3
"""The Python half of bench/rd_matrices.sh and bench/rd_model.sh: makes the
inputs, measures a quantized or decoded model against its source, and writes
the table, CSV and plot. Needs numpy, and llama.cpp's gguf-py on PYTHONPATH
(its GGUF reader and writer, and its numpy dequantizers of every ggml type,
which are llama.cpp's own dequantization); the plot needs matplotlib.

  rd_tool.py spec --layers 0,11,21 [--n-layers 22] [--filler-rows 32]
      the synth_model --spec list: TinyLlama-1.1B's seven linear weights of
      every layer under llama.cpp's names, full size for the layers given,
      FILLER-ROWS output rows (same input width) for the others
  rd_tool.py gguf --model model.safetensors --layers 0,11,21
                  --quant-out Q.gguf --hvq-out H.gguf
      Q.gguf: every tensor, with the llama metadata llama-quantize needs;
      H.gguf: the full-size layers only (the matrices compared)
  rd_tool.py measure --ref REF.gguf --imatrix IM (--gguf X.gguf | --hvq-report R.json
                     --decoded D.gguf) --method NAME [--ppl P] --out RESULT.json
      true bits per weight and Hessian-weighted error over the linear weights
      of REF (blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down})
  rd_tool.py table --y herr|ppl [--ref-ppl P] --md T.md --csv T.csv
                   [--png T.png] [--title S] RESULT.json...
"""
import argparse
import csv
import json
import math
import os
import re
import struct
import sys

import numpy as np

LINEAR = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
LINEAR_RE = re.compile(r"^blk\.(\d+)\.(%s)\.weight$" % "|".join(LINEAR))

# TinyLlama-1.1B: hidden 2048, FFN 5632, 22 layers, 32 heads, 4 kv heads of 64.
TL = dict(hidden=2048, ffn=5632, layers=22, heads=32, kv_heads=4, head_dim=64, ctx=2048)


def die(msg):
    print("rd_tool: " + msg, file=sys.stderr)
    sys.exit(1)


def gguf_mod():
    try:
        import gguf  # noqa: F401
    except ImportError:
        die("cannot import gguf: put llama.cpp's gguf-py on PYTHONPATH "
            "(PYTHONPATH=LLAMACPP_SRC/gguf-py)")
    import gguf
    return gguf


def parse_layers(s):
    try:
        v = sorted({int(x) for x in s.split(",") if x.strip()})
    except ValueError:
        die("--layers wants numbers separated by commas, got %r" % s)
    if not v:
        die("--layers is empty")
    return v


def tl_shapes():
    """(module, rows = outputs, cols = inputs, sd) of one TinyLlama layer."""
    h, f, kv = TL["hidden"], TL["ffn"], TL["kv_heads"] * TL["head_dim"]
    return [("attn_q", h, h, 0.02), ("attn_k", kv, h, 0.02), ("attn_v", kv, h, 0.02),
            ("attn_output", h, h, 0.02), ("ffn_gate", f, h, 0.02), ("ffn_up", f, h, 0.02),
            ("ffn_down", h, f, 0.0125)]


# ---- spec ---------------------------------------------------------------

def cmd_spec(a):
    layers = parse_layers(a.layers)
    if layers[-1] >= a.n_layers:
        die("layer %d does not exist in a %d-layer model" % (layers[-1], a.n_layers))
    out = ["# synth_model --spec: NAME ROWS COLS SD (rows = outputs, cols = inputs)"]
    for l in range(a.n_layers):
        for mod, rows, cols, sd in tl_shapes():
            r = rows if l in layers else a.filler_rows
            out.append("blk.%d.%s.weight %d %d %g" % (l, mod, r, cols, sd))
    print("\n".join(out))


# ---- safetensors (read) ---------------------------------------------------

def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    base = 8 + n
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    dt = {"F16": np.float16, "F32": np.float32}
    out = {}
    for name, t in hdr.items():
        if name == "__metadata__":
            continue
        if t["dtype"] not in dt:
            die("%s: %s has dtype %s" % (path, name, t["dtype"]))
        b, e = t["data_offsets"]
        out[name] = mm[base + b:base + e].view(dt[t["dtype"]]).reshape(t["shape"])
    return out


# ---- gguf (write) ---------------------------------------------------------

def write_llama_gguf(path, tensors, n_layers):
    gguf = gguf_mod()
    w = gguf.GGUFWriter(path + ".tmp", "llama")
    w.add_name("rd-matrices synthetic (TinyLlama-1.1B shapes)")
    w.add_context_length(TL["ctx"])
    w.add_embedding_length(TL["hidden"])
    w.add_block_count(n_layers)
    w.add_feed_forward_length(TL["ffn"])
    w.add_head_count(TL["heads"])
    w.add_head_count_kv(TL["kv_heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(TL["head_dim"])
    w.add_file_type(1)  # MOSTLY_F16
    for name, arr in tensors:
        w.add_tensor(name, np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(path + ".tmp", path)


def cmd_gguf(a):
    layers = set(parse_layers(a.layers))
    src = read_safetensors(a.model)

    def key(n):
        m = LINEAR_RE.match(n)
        if not m:
            die("%s: unexpected tensor %s" % (a.model, n))
        return (int(m.group(1)), LINEAR.index(m.group(2)))

    names = sorted(src, key=key)
    n_layers = max(key(n)[0] for n in names) + 1
    write_llama_gguf(a.quant_out, [(n, src[n]) for n in names], n_layers)
    write_llama_gguf(a.hvq_out, [(n, src[n]) for n in names if key(n)[0] in layers], n_layers)


# ---- imatrix --------------------------------------------------------------

def read_imatrix(path):
    """name -> diagonal (float32), as hvqconv's imatrix plugin reads it."""
    with open(path, "rb") as f:
        magic = f.read(4)
    out = {}
    if magic == b"GGUF":
        gguf = gguf_mod()
        r = gguf.GGUFReader(path)
        t = {x.name: x for x in r.tensors}
        for n, x in t.items():
            if not n.endswith(".in_sum2"):
                continue
            stem = n[:-len(".in_sum2")]
            if stem + ".counts" not in t:
                die("%s: %s without %s.counts" % (path, n, stem))
            s2 = np.asarray(x.data, dtype=np.float64)
            c = np.asarray(t[stem + ".counts"].data, dtype=np.float64).reshape(-1)
            s2 = s2.reshape(-1, s2.shape[-1]) if s2.ndim > 1 else s2.reshape(1, -1)
            out[stem] = (s2.sum(0) / c.sum()).astype(np.float32)
        return out
    data = open(path, "rb").read()
    n = struct.unpack_from("<i", data, 0)[0]
    o = 4
    for _ in range(n):
        ln = struct.unpack_from("<i", data, o)[0]
        o += 4
        name = data[o:o + ln].decode()
        o += ln
        ncall, nval = struct.unpack_from("<ii", data, o)
        o += 8
        v = np.frombuffer(data, dtype="<f4", count=nval, offset=o)
        o += 4 * nval
        out[name] = (v.astype(np.float64) / ncall).astype(np.float32)
    return out


# ---- measure --------------------------------------------------------------

def gguf_tensors(path):
    gguf = gguf_mod()
    r = gguf.GGUFReader(path)
    return {t.name: t for t in r.tensors}


def as_matrix(t):
    """A GGUF tensor as float32 (rows = outputs, cols = inputs), dequantized
    by gguf-py (llama.cpp's own dequantization)."""
    gguf = gguf_mod()
    ne = [int(x) for x in t.shape]  # ne0 = inputs first
    a = gguf.quants.dequantize(t.data, t.tensor_type)
    return np.asarray(a, dtype=np.float32).reshape(ne[1], ne[0])


def errors(w, q, h):
    w = w.astype(np.float64)
    e = q.astype(np.float64) - w
    e2c = np.einsum("ij,ij->j", e, e)
    w2c = np.einsum("ij,ij->j", w, w)
    hd = h.astype(np.float64)
    return dict(err2=float(e2c.sum()), w2=float(w2c.sum()),
                herr2=float(e2c @ hd), hw2=float(w2c @ hd))


def cmd_measure(a):
    ref = gguf_tensors(a.ref)
    im = read_imatrix(a.imatrix)
    names = sorted((n for n in ref if LINEAR_RE.match(n)),
                   key=lambda n: (int(LINEAR_RE.match(n).group(1)), n))
    if not names:
        die("%s: no linear weights (blk.N.attn_q.weight, ...)" % a.ref)
    missing = [n for n in names if n not in im]
    if missing:
        die("%s: no imatrix entry for %s" % (a.imatrix, ", ".join(missing[:5])))
    cand = gguf_tensors(a.gguf if a.gguf else a.decoded)
    rep_t = None
    if a.hvq_report:
        rep = json.load(open(a.hvq_report))
        rep_t = {t["name"]: t for t in rep["tensors"]}
    res = dict(method=a.method, kind="hvqconv" if a.hvq_report else "llama.cpp",
               params=0, bytes=0, err2=0.0, w2=0.0, herr2=0.0, hw2=0.0, types={},
               tensors=[])
    worst = 0.0
    for n in names:
        if n not in cand:
            die("%s has no tensor %s" % (a.gguf or a.decoded, n))
        w = as_matrix(ref[n])
        q = as_matrix(cand[n])
        if q.shape != w.shape:
            die("%s: shape %s, the reference's is %s" % (n, q.shape, w.shape))
        h = im[n]
        if h.shape[0] != w.shape[1]:
            die("%s: imatrix has %d values, the tensor %d columns" % (n, h.shape[0], w.shape[1]))
        e = errors(w, q, h)
        params = int(w.size)
        tr = dict(name=n, params=params, **e)
        if rep_t is not None:
            t = rep_t.get(n)
            if t is None:
                die("%s: report has no tensor %s" % (a.hvq_report, n))
            if t.get("compressed"):
                nbytes = int(t["stored_bytes"])
                typ = "hvq:" + t.get("clusterer", "?")
                mine = e["herr2"] / e["hw2"]
                theirs = float(t["rel_hessian_error"])
                d = abs(mine - theirs) / max(abs(theirs), 1e-300)
                worst = max(worst, d)
                tr.update(report_rel_hessian=theirs, rel_hessian=mine)
            else:
                # passed through untouched: its source bytes
                nbytes = int(ref[n].n_bytes)
                typ = "passed:" + ref[n].tensor_type.name
        else:
            nbytes = int(cand[n].n_bytes)
            typ = cand[n].tensor_type.name
        tr.update(bytes=nbytes, type=typ)
        res["tensors"].append(tr)
        res["types"][typ] = res["types"].get(typ, 0) + 1
        res["params"] += params
        res["bytes"] += nbytes
        for k in ("err2", "w2", "herr2", "hw2"):
            res[k] += e[k]
    res["bpw"] = res["bytes"] * 8.0 / res["params"]
    res["rel_hessian"] = res["herr2"] / res["hw2"]
    res["rel_frobenius"] = math.sqrt(res["err2"] / res["w2"])
    res["n_tensors"] = len(names)
    if rep_t is not None:
        res["report_max_rel_diff"] = worst
        tot = rep["totals"]
        res["report_bpw_stored"] = tot.get("bpp_stored")
        res["report_rel_hessian"] = tot.get("rel_hessian_error")
        res["report_compressed_params"] = tot.get("compressed_params")
        if a.container:
            # the whole container: compressed and passed-through tensors,
            # header, index and metadata
            res["container_bytes"] = os.path.getsize(a.container)
            res["report_stored_bytes_compressed"] = tot.get("stored_bytes_compressed")
        if worst > a.tolerance:
            print("rd_tool: warning: %s: the report's Hessian-weighted error differs from the "
                  "decoded output's by up to %.2e (relative)" % (a.method, worst), file=sys.stderr)
    if a.ppl is not None:
        res["ppl"] = a.ppl
    with open(a.out + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(a.out + ".tmp", a.out)
    extra = ""
    if rep_t is not None:
        extra = "  (report: H-err %.4e, bpw %.4f; max per-tensor diff %.1e)" % (
            res["report_rel_hessian"], res["report_bpw_stored"], worst)
    print("%-40s bpw %.4f  H-err %.4e%s%s" % (
        a.method, res["bpw"], res["rel_hessian"],
        "  PPL %.4f" % a.ppl if a.ppl is not None else "", extra), file=sys.stderr)


# ---- label, writer: of an hvqconv pipeline and its extra arguments --------

def split_args(args):
    """[(key, value)] of the extra `hvqconv run` arguments."""
    out, i = [], 0
    while i < len(args):
        x = args[i]
        if x in ("--set", "-s") and i + 1 < len(args):
            k, _, v = args[i + 1].partition("=")
            out.append((k, v))
            i += 2
        elif x.startswith("--set="):
            k, _, v = x[6:].partition("=")
            out.append((k, v))
            i += 1
        elif x.startswith("--") and "=" in x:
            k, _, v = x[2:].partition("=")
            out.append((k, v))
            i += 1
        elif x.startswith("-") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            out.append((x.lstrip("-"), args[i + 1]))
            i += 2
        else:
            out.append((x.lstrip("-"), None))
            i += 1
    return out


def cmd_label(a):
    name = os.path.basename(a.pipeline)
    name = re.sub(r"\.ya?ml$", "", name)
    parts = [name]
    for k, v in split_args(a.args):
        k = k.split(".")[-1]
        parts.append(k if v is None else "%s=%s" % (k, v))
    print(" ".join(parts))


def cmd_writer(a):
    """The writer plugin: the last --set stages.writer.plugin=, else the
    pipeline's stages: writer: (flow { plugin: X } or a block)."""
    w = None
    for k, v in split_args(a.args):
        if k == "stages.writer.plugin":
            w = v
    if w is None:
        lines = open(a.pipeline).read().splitlines()
        for i, ln in enumerate(lines):
            m = re.match(r"^(\s*)writer\s*:\s*(.*)$", ln)
            if not m:
                continue
            rest = m.group(2)
            f = re.search(r"plugin\s*:\s*([A-Za-z0-9_-]+)", rest)
            if f:
                w = f.group(1)
            else:
                ind = len(m.group(1))
                for ln2 in lines[i + 1:]:
                    if ln2.strip() and (len(ln2) - len(ln2.lstrip())) <= ind:
                        break
                    f = re.match(r"^\s*plugin\s*:\s*([A-Za-z0-9_-]+)", ln2)
                    if f:
                        w = f.group(1)
                        break
            break
    print(w or "")


# ---- table ----------------------------------------------------------------

def type_mix(r):
    return ", ".join("%s x%d" % (k, v) for k, v in sorted(r["types"].items(), key=lambda x: -x[1]))


def short(method):
    """A method's name for the plot: the usual settings abbreviated."""
    for k, v in (("high-fidelity", "high"), ("block_size=", "b"), ("centroids=", "k"),
                 ("sparsity=", "sp"), ("iterations=", "it")):
        method = method.replace(k, v)
    return method


def cmd_table(a):
    rs = [json.load(open(p)) for p in a.results]
    if not rs:
        die("no results")
    rs.sort(key=lambda r: (r["bpw"], r["method"]))
    ppl = a.y == "ppl"
    head = ["method", "by", "true bpw", "H-weighted rel. error", "rel. Frobenius error"]
    if ppl:
        head.insert(3, "PPL")
    head.append("tensor types")
    rows = []
    for r in rs:
        row = [r["method"], r["kind"], "%.4f" % r["bpw"], "%.4e" % r["rel_hessian"],
               "%.4e" % r["rel_frobenius"]]
        if ppl:
            row.insert(3, "%.4f" % r["ppl"] if r.get("ppl") is not None else "-")
        row.append(type_mix(r))
        rows.append(row)
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(x) + " |" for x in rows]
    text = "\n".join(md) + "\n"
    if a.title:
        text = "### " + a.title + "\n\n" + text
    if ppl and a.ref_ppl is not None:
        text += "\nUnquantized reference: PPL %.4f.\n" % a.ref_ppl
    sys.stdout.write(text)
    with open(a.md, "w") as f:
        f.write(text)
    with open(a.csv, "w", newline="") as f:
        c = csv.writer(f)
        c.writerow(["method", "by", "n_tensors", "params", "bytes", "bpw", "rel_hessian",
                    "rel_frobenius", "ppl", "report_rel_hessian", "report_bpw_stored",
                    "container_bytes", "types"])
        for r in rs:
            c.writerow([r["method"], r["kind"], r["n_tensors"], r["params"], r["bytes"],
                        "%.6f" % r["bpw"], "%.6e" % r["rel_hessian"], "%.6e" % r["rel_frobenius"],
                        "%.4f" % r["ppl"] if r.get("ppl") is not None else "",
                        "%.6e" % r["report_rel_hessian"] if r.get("report_rel_hessian") is not None else "",
                        "%.6f" % r["report_bpw_stored"] if r.get("report_bpw_stored") is not None else "",
                        r.get("container_bytes", ""), type_mix(r)])
    if not a.png:
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("rd_tool: no matplotlib, no plot (apt-get install python3-matplotlib)",
              file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 5.5))
    key = "ppl" if ppl else "rel_hessian"
    # perplexity: its excess over the unquantized model's, so that a log
    # scale separates the good points instead of one bad one flattening them
    excess = ppl and a.ref_ppl is not None

    def yval(r):
        return r[key] - a.ref_ppl if excess else r[key]

    for kind, mk, col in (("llama.cpp", "o", "tab:blue"), ("hvqconv", "s", "tab:red")):
        pts = [r for r in rs if r["kind"] == kind and r.get(key) is not None]
        if excess:
            pts = [r for r in pts if yval(r) > 0]
        if not pts:
            continue
        xs = [r["bpw"] for r in pts]
        ys = [yval(r) for r in pts]
        if kind == "llama.cpp":
            ax.plot(xs, ys, "-", color=col, alpha=0.4)
        ax.scatter(xs, ys, marker=mk, color=col, label=kind, zorder=3)
        labels = {}  # points at the same place share one label
        for r, x, y in zip(pts, xs, ys):
            labels.setdefault((round(x, 3), float("%.4g" % y)), []).append(short(r["method"]))
        for (x, y), ms in labels.items():
            ax.annotate(", ".join(ms), (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=col)
    ax.set_xlabel("true bits per weight (stored bytes x 8 / parameters, linear weights)")
    if excess:
        ax.set_ylabel("perplexity - unquantized perplexity (%.4f)" % a.ref_ppl)
    else:
        ax.set_ylabel("perplexity" if ppl else "Hessian-weighted relative error")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if a.title:
        ax.set_title(a.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(a.png, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("spec")
    p.add_argument("--layers", required=True)
    p.add_argument("--n-layers", type=int, default=TL["layers"])
    p.add_argument("--filler-rows", type=int, default=32)
    p = sub.add_parser("gguf")
    p.add_argument("--model", required=True)
    p.add_argument("--layers", required=True)
    p.add_argument("--quant-out", required=True)
    p.add_argument("--hvq-out", required=True)
    p = sub.add_parser("measure")
    p.add_argument("--ref", required=True)
    p.add_argument("--imatrix", required=True)
    p.add_argument("--gguf")
    p.add_argument("--hvq-report")
    p.add_argument("--decoded")
    p.add_argument("--method", required=True)
    p.add_argument("--ppl", type=float)
    p.add_argument("--container", help="the .hvq written: its size goes in the result")
    p.add_argument("--tolerance", type=float, default=1e-3)
    p.add_argument("--out", required=True)
    p = sub.add_parser("table")
    p.add_argument("--y", choices=["herr", "ppl"], default="herr")
    p.add_argument("--ref-ppl", type=float)
    p.add_argument("--md", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--png")
    p.add_argument("--title")
    p.add_argument("results", nargs="+")
    for c in ("label", "writer"):
        p = sub.add_parser(c)
        p.add_argument("pipeline")
        p.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    if a.cmd == "measure" and bool(a.gguf) == bool(a.hvq_report and a.decoded):
        die("measure wants --gguf X, or --hvq-report R with --decoded D")
    {"spec": cmd_spec, "gguf": cmd_gguf, "measure": cmd_measure, "table": cmd_table,
     "label": cmd_label, "writer": cmd_writer}[a.cmd](a)


if __name__ == "__main__":
    main()
