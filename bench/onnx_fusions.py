"""ONNX Runtime graph fusions on CPU: which ones pay for the cross-encoder, side by side in one run.

Prints two tables:
1. kernel: com.microsoft SkipLayerNormalization (what ORT's "SkipLayerNormFusion" makes) against the
   Add + LayerNormalization it replaces, on a (batch, tokens, hidden) fp32 tensor shaped like one forward
   pass of the bench (default (20, 26, 384)), 1 intra-op thread: microseconds per call and ns per element;
2. model: the cross-encoder's ONNX variants (default fp32 and int8) with ORT's full fusion set against the
   project's session (`fashion_rerank.onnx_embedding.open_session`, which leaves out
   `CPU_DISABLED_FUSIONS`), plus any `--disable` sets, on the bench's requests (bench/rerank_bench.py
   `build_requests`: 10 queries x 100 Myntra candidates), passes of <= 512 padded tokens as the backend
   cuts them, 1 intra-op thread, paths interleaved per request (order alternating) so a noisy machine hits
   them alike: p50 / p95 / min ms per request, the p50 ratio against the first path, and the largest
   |logit difference| against ORT's full fusion set of the same variant.

Model: `--model DIR` (a folder with an `onnx/` export, e.g. a registry version) or by default an untrained
cross-encoder built from the packaged all-MiniLM-L6-v2 with a seeded random head (speed is that of any
MiniLM-L6 cross-encoder), exported once under `--work-root`.

    .venv/bin/python bench/onnx_fusions.py [--model DIR] [--rounds 3] [--disable MatMulScaleFusion ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def kernel_table(shape: tuple[int, int, int], calls: int, rounds: int) -> list[dict]:
    """µs per call of SkipLayerNormalization vs Add + LayerNormalization on `shape` (interleaved rounds)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    hidden = shape[-1]
    rng = np.random.default_rng(0)

    weights = [numpy_helper.from_array(rng.random(hidden, dtype=np.float32), n) for n in ("w", "b", "bb")]

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, None, hidden]) for n in ("x", "s", "y")]
    graphs = {
        "Add + LayerNormalization": (
            [
                helper.make_node("Add", ["x", "s"], ["t"]),
                helper.make_node("Add", ["t", "bb"], ["u"]),
                helper.make_node("LayerNormalization", ["u", "w", "b"], ["y"], axis=-1, epsilon=1e-12),
            ],
            [helper.make_opsetid("", 17)],
        ),
        "SkipLayerNormalization (fused)": (
            [
                helper.make_node(
                    "SkipLayerNormalization", ["x", "s", "w", "b", "bb"], ["y"], domain="com.microsoft", epsilon=1e-12
                )
            ],
            [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        ),
    }
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run each graph as written
    sessions = {}
    for name, (nodes, opsets) in graphs.items():
        g = helper.make_graph(nodes, name, io[:2], io[2:], weights)
        sessions[name] = ort.InferenceSession(helper.make_model(g, opset_imports=opsets).SerializeToString(), so)
    x = rng.standard_normal(shape, dtype=np.float32)
    s = rng.standard_normal(shape, dtype=np.float32)
    outs = {n: sess.run(None, {"x": x, "s": s})[0] for n, sess in sessions.items()}
    times: dict[str, list[float]] = {n: [] for n in sessions}
    for _ in range(rounds):
        for name, sess in sessions.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                sess.run(None, {"x": x, "s": s})
            times[name].append((time.perf_counter() - t0) / calls * 1e6)
    ref = next(iter(outs.values()))
    return [
        {
            "graph": n,
            "us_per_call": statistics.median(t),
            "ns_per_element": statistics.median(t) * 1000 / x.size,
            "max_abs_diff": float(np.abs(outs[n] - ref).max()),
        }
        for n, t in times.items()
    ]


def _random_head_model(work_root: Path) -> Path:
    folder = work_root / "random-head-ce"
    if not (folder / "onnx" / "manifest.json").exists():
        import torch
        from sentence_transformers import CrossEncoder

        from fashion_rerank.onnx_export import export_cross_encoder
        from fashion_rerank.settings import resolve_model_path

        torch.manual_seed(0)
        ce = CrossEncoder(resolve_model_path("packaged:all-MiniLM-L6-v2"), num_labels=1, max_length=128)
        ce.save_pretrained(str(folder))
        export_cross_encoder(folder, folder / "onnx", variants=("fp32", "int8"))
    return folder


def model_table(folder: Path, variants: list[str], extra: list[list[str]], rounds: int, max_tokens: int) -> list[dict]:
    """Per-request ms of each (variant, disabled fusions) path on the bench's requests, interleaved."""
    import onnxruntime as ort
    from rerank_bench import build_requests

    from fashion_rerank.onnx_embedding import CPU_DISABLED_FUSIONS, session_options
    from reranker.backends.onnx_backend import read_manifest
    from reranker.backends.tokenization import PairTokenizer

    manifest = read_manifest(folder)
    tok = PairTokenizer.from_dir(folder)
    requests = build_requests(100)
    sets = [("ORT default (all fusions)", []), ("project session", list(CPU_DISABLED_FUSIONS))]
    sets += [(f"project + no {'+'.join(d)}", list(CPU_DISABLED_FUSIONS) + d) for d in extra]
    paths = []
    for v in variants:
        f = folder / "onnx" / manifest["variants"][v]["file"]
        for label, disabled in sets:
            sess = ort.InferenceSession(
                str(f), session_options(1), providers=["CPUExecutionProvider"], disabled_optimizers=disabled
            )
            paths.append(
                {
                    "variant": v,
                    "session": label,
                    "sess": sess,
                    "names": [i.name for i in sess.get_inputs()],
                    "ms": [],
                    "scores": [],
                }
            )

    def passes(query: str, docs: list[str]):
        enc = tok.encode([query] * len(docs), docs)
        order = np.argsort(-enc.lengths, kind="stable")
        out, start = [], 0
        while start < len(order):
            size = max(1, max_tokens // int(enc.lengths[order[start]]))
            out.append((order[start : start + size], tok.batch(enc, order[start : start + size])))
            start += size
        return out

    feeds = [passes(q, d) for q, d in requests]
    for rnd in range(rounds + 1):  # round 0 warms up and keeps the scores
        for i, req in enumerate(feeds):
            for p in paths if (rnd + i) % 2 == 0 else paths[::-1]:
                t0 = time.perf_counter()
                out = np.empty(100, dtype=np.float32)
                for pos, f in req:
                    out[pos] = p["sess"].run(None, {k: f[k] for k in p["names"]})[0][:, 0]
                ms = (time.perf_counter() - t0) * 1000
                if rnd:
                    p["ms"].append(ms)
                else:
                    p["scores"].append(out)
    first = statistics.median(paths[0]["ms"])
    rows = []
    for p in paths:
        ref = next(q for q in paths if q["variant"] == p["variant"])
        t = sorted(p["ms"])
        rows.append(
            {
                "variant": p["variant"],
                "session": p["session"],
                "p50": statistics.median(t),
                "p95": t[min(len(t) - 1, int(round(0.95 * (len(t) - 1))))],
                "min": t[0],
                "ratio": statistics.median(t) / first,
                "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(ref["scores"], p["scores"])),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="folder with an onnx/ export (default: an untrained MiniLM-L6 cross-encoder)")
    ap.add_argument("--work-root", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "onnx-fusions"))
    ap.add_argument("--variants", default="fp32,int8")
    ap.add_argument("--disable", action="append", default=[], help="an extra set of ORT optimizers to leave out (A+B)")
    ap.add_argument("--rounds", type=int, default=3, help="timed passes over the 10 requests")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--shape", default="20,26,384")
    ap.add_argument("--calls", type=int, default=500)
    args = ap.parse_args(argv)
    shape = tuple(int(x) for x in args.shape.split(","))
    print(f"1. kernel, shape {shape}, 1 thread, {args.calls} calls x 5 rounds", flush=True)
    print(f"   {'graph':34s} {'us/call':>9s} {'ns/elem':>8s} {'max|diff|':>10s}")
    for r in kernel_table(shape, args.calls, 5):
        print(f"   {r['graph']:34s} {r['us_per_call']:9.1f} {r['ns_per_element']:8.2f} {r['max_abs_diff']:10.2e}")
    folder = Path(args.model) if args.model else _random_head_model(Path(args.work_root))
    print(
        f"2. model {folder}, 10 requests x 100 candidates, passes <= {args.max_tokens} tokens, 1 thread, {args.rounds} rounds",
        flush=True,
    )
    print(f"   {'variant':8s} {'session':44s} {'p50':>7s} {'p95':>7s} {'min':>7s} {'ratio':>6s} {'max|dlogit|':>11s}")
    extra = [d.split("+") for d in args.disable]
    for r in model_table(folder, args.variants.split(","), extra, args.rounds, args.max_tokens):
        print(
            f"   {r['variant']:8s} {r['session']:44s} {r['p50']:7.1f} {r['p95']:7.1f} {r['min']:7.1f} {r['ratio']:6.2f} {r['max_abs_diff']:11.2e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
