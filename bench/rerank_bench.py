"""Rerank benchmark: the sidecar's torch path against sentence-transformers `CrossEncoder.predict`.

Prints, for 100 candidates per request built from the bundled Myntra catalog with realistic queries:
- p50 / p95 latency (ms) and pairs/s of
  (a) `sentence_transformers.CrossEncoder.predict(batch_size=32)` on the same model and inputs (reference),
  (b) the torch backend alone (`Backend.score`: one tokenization, length-sorted sub-batches),
  (c) the bare scoring core (`ScoringCore.submit(...).result()`: queue + worker thread + backend),
  (d) the running gRPC sidecar (`fashion-rerank serve` in a subprocess, called with `reranker.client`);
- the ratio of (c) and (d) to (a) at p50 (target <= 1.0), the gRPC overhead (d) - (c) at p50 (target <= 5 ms);
- the sidecar process's resident memory with one model loaded and its peak during a hot swap
  (targets <= 1.5 GB and <= 2x).
The paths run in turn in blocks of 10 requests, repeated, so drift on a shared machine hits them alike;
the gRPC overhead is measured per call as client latency minus the server core's own time for that call.

Model: by default an untrained cross-encoder built from the packaged all-MiniLM-L6-v2 backbone
(random head; speed is that of any MiniLM-L6 cross-encoder, scores are meaningless), max_length 128;
`--registry DIR [--model-name NAME]` benchmarks that registry's current version instead.

    .venv/bin/python bench/rerank_bench.py [--requests 30] [--candidates 100] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUERIES = [
    "black leather ankle boots women",
    "red midi dress",
    "men blue denim jeans",
    "white sneakers for men",
    "women gold watch",
    "navy blue formal shirt men",
    "pink handbag",
    "kids yellow t-shirt",
    "grey track pants men",
    "silver earrings women",
]


def build_requests(candidates: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """(query, [candidate texts]) per query: the `candidates` catalog products sharing most words with
    the query (a cheap stand-in for kNN candidates: mostly on-topic, with a tail of weaker matches)."""
    from fashion_rerank.product import rerank_text
    from indexer.catalogs import read_myntra

    texts = [rerank_text(p) for p in read_myntra(limit=20_000).products]
    rng = random.Random(seed)
    out = []
    for q in QUERIES:
        words = set(q.lower().split())
        scored = [(len(words & set(t.lower().replace("|", " ").split())), rng.random(), t) for t in texts]
        scored.sort(reverse=True)
        out.append((q, [t for _, _, t in scored[:candidates]]))
    return out


def make_registry(args) -> tuple["ModelRegistry", Path | None]:  # noqa: F821
    from fashion_rerank.registry import ModelRegistry

    if args.registry:
        reg = ModelRegistry(args.registry, args.model_name)
        if reg.current() is None:
            sys.exit(f"registry {reg.dir} has no current version")
        return reg, None
    from sentence_transformers import CrossEncoder

    from fashion_rerank.settings import ModelSettings, resolve_model_path

    tmp = Path(tempfile.mkdtemp(prefix="rerank-bench-"))
    reg = ModelRegistry(tmp, "bench-ce")
    version, folder = reg.new_version_dir()
    ce = CrossEncoder(resolve_model_path("packaged:all-MiniLM-L6-v2"), num_labels=1, max_length=ModelSettings().max_length)
    ce.save_pretrained(str(folder))
    (folder / "card.json").write_text(json.dumps({"version": version, "purpose": "benchmark, untrained head"}))
    reg.promote(version, reason="benchmark")
    return reg, tmp


def copy_and_promote(reg) -> str:
    src = reg.path(reg.current())
    version, folder = reg.new_version_dir()
    shutil.copytree(src, folder, dirs_exist_ok=True)
    (folder / "card.json").write_text(json.dumps({"version": version, "purpose": "benchmark swap"}))
    reg.promote(version, reason="benchmark swap")
    return version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(reg, threads: int) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    env = dict(
        os.environ,
        FR_SERVE_GRPC_PORT=str(port),
        FR_SERVE_METRICS_PORT="-1",
        FR_SERVE_HTTP_PORT="0",
        FR_SERVE_THREADS=str(threads),
        FR_SERVE_QUERYLOG_PATH="",
        FR_SERVE_QUERYLOG_INDEX="",
        FR_SERVE_REGISTRY_POLL_S="0.2",
        FR_MODEL_REGISTRY_DIR=str(reg.root),
        FR_MODEL_NAME=reg.name,
    )
    log = Path(tempfile.mkstemp(prefix="rerank-bench-server-", suffix=".log")[1])
    fh = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], env=env, stdout=fh, stderr=subprocess.STDOUT)
    return proc, f"127.0.0.1:{port}", log


def wait_serving(target: str, proc: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    import grpc

    from reranker.client import RerankerClient

    end = time.monotonic() + timeout
    with RerankerClient(target) as c:
        while time.monotonic() < end:
            if proc.poll() is not None:
                sys.exit(f"the sidecar exited:\n{log.read_text()}")
            try:
                if c.health() == "SERVING":
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    sys.exit(f"the sidecar did not start within {timeout} s:\n{log.read_text()}")


def summary(name: str, ms: list[float], pairs: int) -> dict:
    ms_sorted = sorted(ms)
    p50 = statistics.median(ms_sorted)
    p95 = ms_sorted[min(len(ms_sorted) - 1, int(round(0.95 * (len(ms_sorted) - 1))))]
    return {
        "name": name,
        "p50_ms": p50,
        "p95_ms": p95,
        "mean_ms": statistics.fmean(ms),
        "pairs_per_s": pairs / (statistics.fmean(ms) / 1e3),
        "n": len(ms),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="timed requests per path (default 30)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up requests per path (default 10: every query once)")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: CPU quota)")
    parser.add_argument("--registry", default=None, help="benchmark this registry's current model")
    parser.add_argument("--model-name", default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import numpy as np
    import psutil
    import torch
    from sentence_transformers import CrossEncoder

    from fashion_rerank.settings import ServeSettings, cpu_quota
    from reranker.backends import load_backend
    from reranker.client import RerankerClient
    from reranker.core import ScoringCore

    threads = args.threads or cpu_quota()
    torch.set_num_threads(threads)
    reg, tmp = make_registry(args)
    version = reg.current()
    folder = reg.path(version)
    requests = build_requests(args.candidates)
    print(
        f"model {folder} ({version}); {len(requests)} queries x {args.candidates} candidates; "
        f"torch threads {threads}; CPUs {cpu_quota()}; load average {os.getloadavg()[0]:.1f}"
    )

    proc, target, log = start_server(reg, threads)
    try:
        ce = CrossEncoder(str(folder))
        backend = load_backend("torch", folder, version=version, threads=threads)
        core = ScoringCore(
            ServeSettings(threads=threads, max_documents=max(1000, args.candidates), queue_pairs=max(4000, args.candidates)), reg
        )
        core.start()
        wait_serving(target, proc, log)
        server = psutil.Process(proc.pid)
        lengths = backend.encode([q for q, d in requests for _ in d], [t for _, d in requests for t in d]).lengths
        print(f"tokens per pair: mean {lengths.mean():.1f}, max {lengths.max()} (model max_length {backend.max_length})")

        # same scores on every path (sanity check, printed)
        q0, d0 = requests[0]
        ref = ce.predict([(q0, t) for t in d0], batch_size=32)
        core_scores = core.submit(q0, d0).result().scores
        with RerankerClient(target, timeout=600) as client:
            g = client.rerank(q0, d0)
        grpc_scores = np.zeros(len(d0), np.float32)
        for r in g.results:
            grpc_scores[r.index] = r.score
        print(
            f"max |score difference| vs CrossEncoder.predict: core {np.abs(core_scores - ref).max():.2e}, "
            f"gRPC {np.abs(grpc_scores - ref).max():.2e}"
        )

        paths = {
            "CrossEncoder.predict(batch_size=32)": lambda q, d: ce.predict([(q, t) for t in d], batch_size=32),
            "torch backend (Backend.score)": lambda q, d: backend.score(q, d),
            "scoring core (submit().result())": lambda q, d: core.submit(q, d).result(),
        }
        times: dict[str, list[float]] = {k: [] for k in [*paths, "gRPC sidecar (Rerank RPC)"]}
        server_ms: list[float] = []  # the sidecar core's own total time for each timed RPC
        with RerankerClient(target, timeout=600) as client:

            def rpc(q, d):
                resp = client.rerank(q, d)
                server_ms.append(resp.timings.total_ms)

            paths["gRPC sidecar (Rerank RPC)"] = rpc
            for _name, fn in paths.items():  # warm-up: every query once on every path
                for q, d in requests[: max(args.warmup, 1)]:
                    fn(q, d)
            server_ms.clear()
            # Blocks of `block` requests per path, paths in turn, repeated: the paths see the same drift,
            # and one path's idle OpenMP threads never spin while another process computes.
            block = max(1, min(10, args.requests))
            done = 0
            while done < args.requests:
                n = min(block, args.requests - done)
                for name, fn in paths.items():
                    for i in range(done, done + n):
                        q, d = requests[i % len(requests)]
                        t0 = time.perf_counter()
                        fn(q, d)
                        times[name].append((time.perf_counter() - t0) * 1e3)
                done += n
            rss_one = server.memory_info().rss

            # hot swap: promote a copy, sample the server's RSS until it serves the new version
            peak = rss_one
            stop = threading.Event()

            def sample():
                nonlocal peak
                while not stop.is_set():
                    try:
                        peak = max(peak, server.memory_info().rss)
                    except psutil.Error:
                        return
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            new_version = copy_and_promote(reg)
            swap_t0 = time.monotonic()
            served = ""
            while served != new_version and time.monotonic() - swap_t0 < 300:
                served = client.rerank(q0, d0).model_version  # traffic during the swap
            swap_s = time.monotonic() - swap_t0
            for _ in range(3):
                client.rerank(q0, d0)
            stop.set()
            sampler.join()
            rss_after = server.memory_info().rss
        core.stop(5.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = [summary(name, ms, args.candidates) for name, ms in times.items()]
    ref_p50 = rows[0]["p50_ms"]
    print(f"\n{'path':<38} {'p50 ms':>8} {'p95 ms':>8} {'pairs/s':>8} {'p50 / predict':>14}")
    for r in rows:
        print(f"{r['name']:<38} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['pairs_per_s']:8.0f} {r['p50_ms'] / ref_p50:14.2f}")
    core_p50, grpc_p50 = rows[2]["p50_ms"], rows[3]["p50_ms"]
    per_call = sorted(g - c for g, c in zip(times["gRPC sidecar (Rerank RPC)"], server_ms))
    overhead = {
        "per_call_p50_ms": statistics.median(per_call),
        "per_call_p95_ms": per_call[min(len(per_call) - 1, int(round(0.95 * (len(per_call) - 1))))],
        "p50_difference_ms": grpc_p50 - core_p50,
    }
    print(
        f"\ngRPC overhead over the bare core call (client latency minus the server core's own total time, "
        f"per call): p50 {overhead['per_call_p50_ms']:.1f} ms, p95 {overhead['per_call_p95_ms']:.1f} ms  [target <= 5 ms]"
        f"\n  (difference of the p50s above, which also carries load drift between blocks: "
        f"{overhead['p50_difference_ms']:.1f} ms)"
    )
    print(f"sidecar RSS, one model loaded (plus the bi-encoder for Search): {rss_one / 2**20:.0f} MiB  [target <= 1536 MiB]")
    print(
        f"sidecar peak RSS during a hot swap under traffic: {peak / 2**20:.0f} MiB = {peak / rss_one:.2f}x "
        f"(swap took {swap_s:.1f} s; RSS after: {rss_after / 2**20:.0f} MiB)  [target <= 2x]"
    )
    print(f"ratio sidecar/predict at p50: core {core_p50 / ref_p50:.2f}, gRPC {grpc_p50 / ref_p50:.2f}  [target <= 1.0]")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (a shared machine inflates and spreads every figure)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "grpc_overhead_ms": overhead,
                    "rss_one_model_bytes": rss_one,
                    "rss_swap_peak_bytes": peak,
                    "rss_after_swap_bytes": rss_after,
                    "swap_s": swap_s,
                    "threads": threads,
                    "candidates": args.candidates,
                    "mean_tokens_per_pair": float(lengths.mean()),
                    "loadavg": os.getloadavg()[0],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
