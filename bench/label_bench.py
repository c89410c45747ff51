"""Labeling job speed on this machine: grading pairs/s against the reference judge, training time per
1,000 pairs per epoch. Prints figures; asserts nothing (targets: >= 50 pairs/s with the default
concurrency; <= 120 s per 1,000 pairs per epoch on 2 cores).

The judge runs as a separate process (`fashion-rerank judge-server`), as it would in production, so the
figure measures the job (openai client, asyncio, store writes) and not a judge sharing its interpreter.

    .venv/bin/python bench/label_bench.py [--pairs 2000] [--train-pairs 1000] [--skip-train]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--train-pairs", type=int, default=1000)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="training threads (default: FR_MODEL_THREADS or the CPU quota)")
    args = ap.parse_args()

    from fashion_rerank.product import rerank_text, text_hash
    from fashion_rerank.settings import LabelSettings
    from indexer.catalogs import read_myntra
    from labeling.dataset import TrainPair
    from labeling.grading import PairRequest, grade_pairs
    from labeling.rubric import grade
    from labeling.store import JudgmentStore

    products = list(read_myntra(limit=args.pairs).products)
    queries = ["navy tee for men", "black heels for women", "running shoes men", "red kurta women", "blue jeans"]
    pairs = [
        PairRequest(queries[i % len(queries)], p.id, rerank_text(p), text_hash(rerank_text(p))) for i, p in enumerate(products)
    ]
    port = free_port()
    judge = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "judge-server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        with tempfile.TemporaryDirectory() as tmp:
            s = LabelSettings(base_url=url + "/v1", api_key="bench", judgments_path=Path(tmp) / "j.jsonl")
            summary = grade_pairs(pairs, s, JudgmentStore(s.judgments_path))
        print(
            f"grading: {summary.written} pairs, {summary.pairs_per_s:.1f} pairs/s with concurrency {s.concurrency} "
            f"(judge in its own process; {summary.calls} calls, {summary.reused} reused identical texts)"
        )
    finally:
        judge.terminate()
        judge.wait(10)

    if not args.skip_train:
        from labeling.train import train_cross_encoder

        texts = [rerank_text(p) for p in products]
        tp = [
            TrainPair(queries[i % len(queries)], t, grade(queries[i % len(queries)], t)[0])
            for i, t in enumerate(texts[: args.train_pairs])
        ]
        with tempfile.TemporaryDirectory() as tmp:
            st = train_cross_encoder(tp, tmp, LabelSettings(epochs=1, train_threads=args.threads), progress=False)
        print(
            f"training: {st.pairs} pairs x 1 epoch in {st.seconds:.1f} s on {st.threads} threads = "
            f"{st.pairs_per_s:.1f} pairs/s, {st.seconds_per_1k_pairs_epoch:.1f} s per 1,000 pairs per epoch"
        )
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared machines inflate both figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
