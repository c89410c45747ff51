"""Training speed and quality, fp32 against CPU bf16 autocast, on the same judged pairs, in one run.

Trains the cross-encoder twice from the same base model, seed and pairs (the train split of a judgments store,
by default the demo's), once in fp32 and once under bfloat16 autocast (`FR_LABEL_TRAIN_BF16`), then measures
both on the store's held-out test queries (nDCG@10, MRR@10, Recall@10 against kNN order). Prints the figures
side by side with the ratio; asserts nothing.

    .venv/bin/python bench/train_bench.py [--judgments var/demo/judgments/judgments.jsonl] [--epochs 3] [--order bf16,fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from fashion_rerank.settings import REFERENCE_JUDGE_MODEL

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judgments", default="var/demo/judgments/judgments.jsonl", help="judgments store (make demo writes it)")
    ap.add_argument("--judge-model", default=REFERENCE_JUDGE_MODEL)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--order", default="bf16,fp32", help="modes in run order")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()

    from fashion_rerank.hardware import cpu_has_bf16
    from fashion_rerank.settings import LabelSettings
    from labeling import prompts
    from labeling.dataset import eval_queries, training_pairs
    from labeling.evaluate import cross_encoder_scorer, evaluate_queries
    from labeling.store import JudgmentStore

    store = JudgmentStore(args.judgments)
    pairs = training_pairs(store, args.judge_model, prompts.PROMPT_VERSION)
    test = eval_queries(store, args.judge_model, prompts.PROMPT_VERSION, "test")
    from labeling.train import train_cross_encoder

    print(
        f"{len(pairs)} train pairs, {len(test)} test queries, {args.epochs} epochs; CPU native bf16: {cpu_has_bf16()}; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    rows = {}
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        for mode in args.order.split(","):
            s = LabelSettings(epochs=args.epochs, train_bf16="on" if mode == "bf16" else "off")
            t0 = time.perf_counter()
            st = train_cross_encoder(pairs, Path(tmp) / mode, s, progress=False)
            seconds = time.perf_counter() - t0
            ev = evaluate_queries(test, {"knn": (None, None), mode: (mode, cross_encoder_scorer(Path(tmp) / mode))}, "test")
            m = ev.to_dict()["systems"][mode]["metrics"]
            knn = ev.to_dict()["systems"]["knn"]["metrics"]
            rows[mode] = {
                "train_s": round(seconds, 1),
                "bf16": st.bf16,
                "final_loss": st.final_loss,
                **{k: round(v, 4) for k, v in m.items()},
            }
            rows["knn"] = {k: round(v, 4) for k, v in knn.items()}
            print(f"  {mode}: {seconds:.0f} s, nDCG@10 {m['nDCG@10']:.4f}, load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"\n{'':8} {'train s':>8} {'nDCG@10':>8} {'MRR@10':>8} {'Recall@10':>10}")
    for name in ("knn", "fp32", "bf16"):
        r = rows.get(name)
        if r:
            print(f"{name:8} {r.get('train_s', '-'):>8} {r['nDCG@10']:8.4f} {r['MRR@10']:8.4f} {r['Recall@10']:10.4f}")
    if "fp32" in rows and "bf16" in rows:
        print(
            f"\nbf16 / fp32 training time: {rows['bf16']['train_s'] / rows['fp32']['train_s']:.2f}; "
            f"nDCG@10 difference {rows['bf16']['nDCG@10'] - rows['fp32']['nDCG@10']:+.4f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
