"""Soak test of the sidecar: steady Search traffic for a long time, watching for leaks.

What it does (defaults in brackets):

1. Prepares what the demo serves, reusing the rerank bench's pieces (`bench/rerank_bench.py`): a model
   registry with a MiniLM-L6 cross-encoder and its ONNX files (`prepare_model`: `--registry DIR` soaks that
   registry's current version, e.g. the demo's `var/demo/models`; without it an untrained cross-encoder on the
   packaged all-MiniLM-L6-v2 backbone, the demo model's architecture and cost, scores meaningless), an index
   of the bundled Myntra catalog behind its own alias (`SearchSetup`: all 44,446 products [`--index-limit
   50000`], alias [`soak-products`], reused when it exists, deleted at the end unless `--keep-index`), and a
   serve-only sidecar (`Sidecar`: `fashion-rerank serve` in a subprocess where torch cannot be imported;
   the score cache on at its defaults, the query log to a JSONL file in the work folder, like the demo's).
   `--target HOST:PORT --pid PID` soaks a sidecar that is already running instead (nothing is started).
2. Sends Search requests at a fixed rate [`--rate 4` per second] for [`--minutes 30`], open loop (a send
   time every 1/rate s, whatever the previous answers did) with at most [`--max-inflight 16`] requests in
   flight (a send that finds them all busy is counted as `shed`, not queued). Queries are the demo's shopper
   queries (`demo.queries.generate_queries`, [`--distinct 2000`] distinct, Zipf-repeated, seeded), with the
   demo's top_k 50 / top_n 10 and a [`--deadline 10`] s gRPC deadline.
3. Every [`--interval 10`] s records, from /proc/<sidecar pid>: resident memory (VmRSS), thread count, open
   file descriptors; the pairs in its score cache (from its /metrics); and for the requests answered in that
   window: count, p50/p95 latency, errors, the share answered in kNN order (`reranked=false`: the sidecar
   failed open), plus the machine's load average.
4. Prints the table, writes a JSON [`reports/soak/soak.json`] and a PNG of the curves [`docs/img/soak.png`],
   and judges each of memory, threads and open files flat or not: a least-squares line through the second
   half of the samples (after warm-up), whose rise over that half must stay under a tolerance (RSS: 5% of its
   median or 16 MiB, whichever is larger; threads and fds: 2), and whose slope is reported with its standard
   error. Exit 0 when all three are flat and no request failed, else 1.

Reading the memory curve: the score cache grows while new (query, product) pairs arrive, up to its cap
(`FR_SERVE_SCORE_CACHE_ENTRIES` 100,000 pairs / 32 MiB). With the defaults, 2,000 distinct queries x top_k 50
is 100,000 pairs, and the query stream (about 6,000 queries) is sent once in the first 25 minutes, so the cache
fills until then and RSS rises with it (about 200 bytes a pair); after that, growth would be a leak.

    .venv/bin/python scripts/soak.py [--minutes 30] [--rate 4] [--registry var/demo/models]
    .venv/bin/python scripts/soak.py --minutes 2 --json /tmp/soak.json --png /tmp/soak.png   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import rerank_bench as bench  # noqa: E402 - the bench's model, index and sidecar preparation, reused

#: Tolerances of the flatness test (rise of the fitted line over the second half of the run).
RSS_TOL_SHARE = 0.05
RSS_TOL_MIB = 16.0
COUNT_TOL = 2.0


# ------------------------------------------------------------------------------------------ /proc
def proc_sample(pid: int) -> dict:
    """Resident memory (MiB, VmRSS), threads and open file descriptors of `pid`, from /proc.

    Raises ProcessLookupError when the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessLookupError(pid) from exc
    f = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mib": int(f["VmRSS"].split()[0]) / 1024.0,
        "threads": int(f["Threads"].strip()),
        "fds": fds,
    }


def cache_entries(metrics_url: str | None) -> int | None:
    """Pairs held by the sidecar's score cache (`fashion_rerank_score_cache_entries` on its /metrics), or None."""
    if not metrics_url:
        return None
    import urllib.request

    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("fashion_rerank_score_cache_entries"):
                    return int(float(line.split()[-1]))
    except (OSError, ValueError):
        return None
    return None


# ------------------------------------------------------------------------------------------ flatness
def slope_test(t_s: list[float], y: list[float], tol: float) -> dict:
    """Least-squares line through the second half of (t_s, y).

    Returns {slope_per_h, stderr_per_h, rise (fitted change over the second half, y's unit), tol, flat, n}.
    `flat` is True when the fitted rise stays under `tol` (a practical bound; a leak of any size shows as a
    positive rise that keeps growing with the run's length). Fewer than 4 points in the half: flat None."""
    import numpy as np

    n = len(t_s)
    half = n // 2
    x = np.asarray(t_s[half:], dtype=float)
    v = np.asarray(y[half:], dtype=float)
    if len(x) < 4 or float(x.max() - x.min()) <= 0:
        return {"slope_per_h": None, "stderr_per_h": None, "rise": None, "tol": tol, "flat": None, "n": len(x)}
    (slope, icept), cov = np.polyfit(x, v, 1, cov=True)
    span = float(x.max() - x.min())
    rise = float(slope * span)
    return {
        "slope_per_h": float(slope * 3600),
        "stderr_per_h": float(np.sqrt(cov[0, 0]) * 3600),
        "rise": rise,
        "tol": tol,
        "flat": bool(rise < tol),
        "n": len(x),
    }


# ------------------------------------------------------------------------------------------ traffic
class Traffic:
    """Open-loop Search sender: one send every 1/rate s, at most `max_inflight` in flight."""

    def __init__(
        self, target: str, queries: list[str], rate: float, max_inflight: int, deadline_s: float, top_k: int, top_n: int
    ):
        from reranker.client import RerankerClient

        self.client = RerankerClient(target, timeout=deadline_s)
        self.queries = queries
        self.rate = rate
        self.top_k, self.top_n = top_k, top_n
        self.pool = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="soak")
        self.max_inflight = max_inflight
        self.inflight = 0
        self.lock = threading.Lock()
        self.results: list[dict] = []  # {t (s since start, at answer), ms, ok, reranked, code}
        self.shed = 0
        self.sent = 0
        self.stop = threading.Event()
        self.t0 = 0.0

    def _one(self, q: str) -> None:
        import grpc

        t = time.perf_counter()
        rec: dict = {"ok": True, "reranked": False, "code": "OK"}
        try:
            resp = self.client.search(q, top_k=self.top_k, top_n=self.top_n)
            rec["reranked"] = bool(resp.reranked)
        except grpc.RpcError as exc:
            rec.update(ok=False, code=exc.code().name if exc.code() else "UNKNOWN")
        except Exception as exc:  # noqa: BLE001 - recorded, the soak goes on
            rec.update(ok=False, code=type(exc).__name__)
        now = time.perf_counter()
        rec.update(t=now - self.t0, ms=(now - t) * 1e3)
        with self.lock:
            self.results.append(rec)
            self.inflight -= 1

    def run(self, duration_s: float) -> None:
        """Send until `duration_s` has passed or `stop` is set; then wait for the calls in flight."""
        self.t0 = time.perf_counter()
        i = 0
        while not self.stop.is_set():
            due = self.t0 + i / self.rate
            if due - self.t0 >= duration_s:
                break
            wait = due - time.perf_counter()
            if wait > 0 and self.stop.wait(wait):
                break
            with self.lock:
                busy = self.inflight >= self.max_inflight
                if not busy:
                    self.inflight += 1
            if busy:
                self.shed += 1
            else:
                self.sent += 1
                self.pool.submit(self._one, self.queries[i % len(self.queries)])
            i += 1
        self.pool.shutdown(wait=True)
        self.client.close()

    def window(self, a: float, b: float) -> dict:
        """Figures of the requests answered in [a, b) s since the start."""
        with self.lock:
            rs = [r for r in self.results if a <= r["t"] < b]
        ok = [r["ms"] for r in rs if r["ok"]]
        return {
            "answered": len(rs),
            "errors": sum(not r["ok"] for r in rs),
            "knn_order": sum(r["ok"] and not r["reranked"] for r in rs),
            "p50_ms": bench.pct(ok, 0.5) if ok else None,
            "p95_ms": bench.pct(ok, 0.95) if ok else None,
        }


# ------------------------------------------------------------------------------------------ output
def fmt(v, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(samples: list[dict]) -> None:
    head = (
        f"{'t (s)':>6} {'RSS MiB':>8} {'thr':>4} {'fds':>4} {'n':>4} {'p50 ms':>7} {'p95 ms':>7} {'err':>4} {'kNN':>4} "
        f"{'load1':>5} {'cache':>7}"
    )
    print(head)
    for s in samples:
        print(
            f"{s['t_s']:6.0f} {s['rss_mib']:8.1f} {s['threads']:4d} {s['fds']:4d} {s['answered']:4d} "
            f"{fmt(s['p50_ms']):>7} {fmt(s['p95_ms']):>7} {s['errors']:4d} {s['knn_order']:4d} {s['load1']:5.2f} "
            f"{fmt(s.get('cache_entries'), 'd'):>7}"
        )


def plot(samples: list[dict], verdicts: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    panels = [
        ("rss_mib", "resident memory (MiB)", "rss_mib"),
        ("threads", "threads / open fds", None),
        ("p50_ms", "Search latency (ms)", None),
        ("load1", "machine load (1 min)", None),
    ]
    for ax, (key, label, _) in zip(axes, panels):
        if key == "threads":
            ax.plot(t, [s["threads"] for s in samples], label="threads")
            ax.plot(t, [s["fds"] for s in samples], label="open fds")
            ax.legend(loc="upper left", fontsize=8)
        elif key == "p50_ms":
            ax.plot(t, [s["p50_ms"] for s in samples], label="p50")
            ax.plot(t, [s["p95_ms"] for s in samples], label="p95")
            errs = [(s["t_s"] / 60, s["p95_ms"] or 0) for s in samples if s["errors"]]
            if errs:
                ax.scatter(*zip(*errs), color="red", zorder=3, label="window with errors")
            ax.legend(loc="upper left", fontsize=8)
        else:
            ax.plot(t, [s[key] for s in samples])
            if key == "rss_mib" and any(s.get("cache_entries") is not None for s in samples):
                tw = ax.twinx()
                tw.plot(t, [s.get("cache_entries") for s in samples], color="grey", ls="--", lw=1)
                tw.set_ylabel("score cache pairs (dashed)", fontsize=8)
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3)
    v = verdicts
    axes[0].set_title(
        f"{title}\nRSS {'flat' if v['rss_mib']['flat'] else 'NOT flat'}, threads {'flat' if v['threads']['flat'] else 'NOT flat'}, "
        f"fds {'flat' if v['fds']['flat'] else 'NOT flat'} (fit of the second half)",
        fontsize=10,
    )
    half = samples[len(samples) // 2]["t_s"] / 60 if samples else 0
    for ax in axes:
        ax.axvline(half, color="grey", ls=":", lw=1)
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the traffic (default 30)")
    ap.add_argument("--rate", type=float, default=4.0, help="Search requests per second (default 4)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--max-inflight", type=int, default=16, help="requests in flight at most; more are shed (default 16)")
    ap.add_argument("--deadline", type=float, default=10.0, help="gRPC deadline per Search in seconds (default 10)")
    ap.add_argument("--top-k", type=int, default=50, help="kNN candidates reranked per Search (default 50, the demo's)")
    ap.add_argument("--top-n", type=int, default=10, help="hits returned (default 10)")
    ap.add_argument("--distinct", type=int, default=2000, help="distinct shopper queries (default 2000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--target", default=None, help="soak this running sidecar (host:port) instead of starting one")
    ap.add_argument("--pid", type=int, default=None, help="pid of the --target sidecar (for /proc figures)")
    ap.add_argument("--metrics-url", default=None, help="the --target sidecar's /metrics URL (score cache size; optional)")
    ap.add_argument("--registry", default=None, help="soak this registry's current model (copied, never written)")
    ap.add_argument("--model-name", default=None, help="model name in the registry (default fashion-ce)")
    ap.add_argument("--alias", default="soak-products", help="index alias (default soak-products; reused when it exists)")
    ap.add_argument("--index-limit", type=int, default=50_000, help="products indexed when the alias is missing (default all)")
    ap.add_argument("--keep-index", action="store_true", help="keep the index this run created")
    ap.add_argument("--json", default=str(REPO / "reports" / "soak" / "soak.json"), help="figures as JSON")
    ap.add_argument("--png", default=str(REPO / "docs" / "img" / "soak.png"), help="curves as PNG")
    args = ap.parse_args(argv)
    if args.target and not args.pid:
        ap.error("--target needs --pid (the sidecar's process id, for its /proc figures)")
    # attributes the bench's helpers read
    args.judgments = args.judge_model = None
    args.regate = args.reexport = False

    from demo.queries import generate_queries
    from indexer.catalogs import read_myntra

    machine = bench.machine_info()
    result: dict = {"machine": machine, "software": bench.software_versions(), "args": vars(args)}
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    sidecar = None
    search = None
    stop = threading.Event()

    def on_signal(signum, _frame):
        print(f"signal {signum}: stopping the traffic early", flush=True)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        products = read_myntra().products
        qs = generate_queries(products, n_distinct=args.distinct, seed=args.seed)
        queries = qs.stream("all")
        result["queries"] = {**qs.summary(), "stream": len(queries)}
        del products
        if args.target:
            target, pid, metrics_url = args.target, args.pid, args.metrics_url
            result["sidecar"] = {"target": target, "pid": pid, "started_here": False}
        else:
            model = bench.prepare_model(args, work)
            result["model"] = {k: v for k, v in model.items() if k != "variants"}
            from fashion_rerank.onnx_cache import ensure_bi_encoder_onnx
            from fashion_rerank.settings import ModelSettings

            bi_dir = ensure_bi_encoder_onnx(ModelSettings().bi_encoder, ModelSettings().bi_encoder_onnx or None)
            search = bench.SearchSetup(args)
            search.start()
            result["index"] = {
                "alias": args.alias,
                "products": search.count,
                "created": search.created,
                "build_s": search.build_s,
            }
            env = {
                "FR_MODEL_REGISTRY_DIR": model["registry"],
                "FR_MODEL_NAME": model["name"],
                "FR_MODEL_BI_ENCODER_ONNX": str(bi_dir),
                "OPENSEARCH_URL": search.url,
                "OPENSEARCH_INDEX_ALIAS": args.alias,
                "FR_SERVE_QUERYLOG_PATH": str(work / "ubi_queries.jsonl"),
                "FR_SERVE_REGISTRY_POLL_S": "5",
                "FR_SERVE_METRICS_PORT": str(metrics_port := bench.free_port()),
            }
            sidecar = bench.Sidecar("soak", env, work)
            sidecar.wait_serving()
            target, pid = sidecar.target, sidecar.proc.pid
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            result["sidecar"] = {"target": target, "pid": pid, "started_here": True, "log": str(sidecar.log)}
        print(
            f"soaking {target} (pid {pid}) with {args.rate:g} Search/s for {args.minutes:g} min "
            f"({len(set(queries))} distinct queries, top_k {args.top_k}); load average {os.getloadavg()}",
            flush=True,
        )
        traffic = Traffic(target, queries, args.rate, args.max_inflight, args.deadline, args.top_k, args.top_n)
        traffic.stop = stop
        sender = threading.Thread(target=traffic.run, args=(args.minutes * 60,), daemon=True)
        started_at = time.time()
        sender.start()
        samples: list[dict] = []
        k = 1
        while True:
            due = traffic.t0 + k * args.interval
            while sender.is_alive() and not stop.is_set() and time.perf_counter() < due:
                time.sleep(min(0.5, max(0.0, due - time.perf_counter())))
            alive = sender.is_alive() and not stop.is_set()
            t = time.perf_counter() - traffic.t0
            if not alive:
                sender.join()  # the calls still in flight are answered into the last window
                t = time.perf_counter() - traffic.t0
                if samples and t - samples[-1]["t_s"] < args.interval / 2:
                    last = samples.pop()  # a sliver after the last sample: fold it into that one
                    print(f"  (answers after {last['t_s']:.0f} s folded into that sample)", flush=True)
            try:
                s = {"t_s": round(t, 1), **proc_sample(pid)}
            except ProcessLookupError:
                print(f"sidecar pid {pid} is gone at {t:.0f} s", flush=True)
                result["sidecar_died_at_s"] = t
                stop.set()
                break
            s.update(traffic.window(samples[-1]["t_s"] if samples else 0.0, t if alive else 1e9))
            s["load1"] = os.getloadavg()[0]
            s["cache_entries"] = cache_entries(metrics_url)
            samples.append(s)
            print(
                f"  {s['t_s']:6.0f} s  RSS {s['rss_mib']:6.1f} MiB  threads {s['threads']:3d}  fds {s['fds']:4d}  "
                f"n {s['answered']:3d}  p50 {fmt(s['p50_ms']):>5} ms  p95 {fmt(s['p95_ms']):>5} ms  "
                f"errors {s['errors']}  kNN-order {s['knn_order']}  load {s['load1']:.2f}  cache {fmt(s['cache_entries'], 'd')}",
                flush=True,
            )
            if not alive:
                break
            k += 1
        sender.join()
        ran_s = time.perf_counter() - traffic.t0
        rs = traffic.results
        ok_ms = [r["ms"] for r in rs if r["ok"]]
        warm = [r["ms"] for r in rs if r["ok"] and r["t"] >= 60]  # after the first minute (warm-up)
        codes: dict[str, int] = {}
        for r in rs:
            if not r["ok"]:
                codes[r["code"]] = codes.get(r["code"], 0) + 1
        t_s = [s["t_s"] for s in samples]
        rss = [s["rss_mib"] for s in samples]
        second = rss[len(rss) // 2 :] or rss
        verdicts = {
            "rss_mib": slope_test(t_s, rss, max(RSS_TOL_SHARE * statistics.median(second), RSS_TOL_MIB)),
            "threads": slope_test(t_s, [s["threads"] for s in samples], COUNT_TOL),
            "fds": slope_test(t_s, [s["fds"] for s in samples], COUNT_TOL),
        }
        flat = all(v["flat"] for v in verdicts.values())
        loads = [s["load1"] for s in samples]
        totals = {
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
            "ran_s": round(ran_s, 1),
            "planned_s": args.minutes * 60,
            "sent": traffic.sent,
            "shed": traffic.shed,
            "answered": len(rs),
            "errors": len(rs) - len(ok_ms),
            "error_codes": codes,
            "knn_order": sum(r["ok"] and not r["reranked"] for r in rs),
            "achieved_rate": round(len(rs) / ran_s, 2) if ran_s else None,
            "p50_ms": bench.pct(ok_ms, 0.5) if ok_ms else None,
            "p95_ms": bench.pct(ok_ms, 0.95) if ok_ms else None,
            "p99_ms": bench.pct(ok_ms, 0.99) if ok_ms else None,
            "p50_ms_after_1min": bench.pct(warm, 0.5) if warm else None,
            "p95_ms_after_1min": bench.pct(warm, 0.95) if warm else None,
            "knn_order_after_1min": sum(r["ok"] and not r["reranked"] for r in rs if r["t"] >= 60),
            "rss_mib_first": rss[0] if rss else None,
            "rss_mib_last": rss[-1] if rss else None,
            "rss_mib_max": max(rss) if rss else None,
            "threads_first_last_max": [samples[0]["threads"], samples[-1]["threads"], max(s["threads"] for s in samples)]
            if samples
            else None,
            "fds_first_last_max": [samples[0]["fds"], samples[-1]["fds"], max(s["fds"] for s in samples)] if samples else None,
            "load1_mean": round(statistics.fmean(loads), 2) if loads else None,
            "load1_max": round(max(loads), 2) if loads else None,
            "loadavg_end": os.getloadavg(),
            "flat": flat,
        }
        result.update(samples=samples, verdicts=verdicts, totals=totals)
        print()
        print_table(samples)
        print()
        print(
            f"ran {ran_s / 60:.1f} min (planned {args.minutes:g}); sent {traffic.sent}, shed {traffic.shed}, answered {len(rs)} "
            f"({totals['achieved_rate']}/s), errors {totals['errors']} {codes or ''}, kNN order (failed open) "
            f"{totals['knn_order']} ({totals['knn_order_after_1min']} after the first minute); p50 {fmt(totals['p50_ms'])} ms, "
            f"p95 {fmt(totals['p95_ms'])} ms, p99 {fmt(totals['p99_ms'])} ms (after the first minute: p50 "
            f"{fmt(totals['p50_ms_after_1min'])} ms, p95 {fmt(totals['p95_ms_after_1min'])} ms); "
            f"load average mean {totals['load1_mean']}, max {totals['load1_max']} on {machine['cpus']} CPUs"
        )
        units = {"rss_mib": "MiB", "threads": "threads", "fds": "fds"}
        for key, v in verdicts.items():
            if v["flat"] is None:
                print(f"  {key}: too few samples for the slope test")
                continue
            print(
                f"  {key}: second-half slope {v['slope_per_h']:+.2f} ± {v['stderr_per_h']:.2f} {units[key]}/h, "
                f"fitted rise {v['rise']:+.2f} {units[key]} (tolerance {v['tol']:.1f}): {'flat' if v['flat'] else 'NOT flat'}"
            )
        title = (
            f"soak: {args.rate:g} Search/s for {ran_s / 60:.1f} min, top_k {args.top_k}; "
            f"{totals['errors']} errors of {len(rs)}; load avg {totals['load1_mean']} on {machine['cpus']} CPUs"
        )
        if samples:
            plot(samples, verdicts, title, Path(args.png))
            print(f"wrote {args.png}")
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")
        return 0 if flat and totals["errors"] == 0 and "sidecar_died_at_s" not in result else 1
    finally:
        if sidecar is not None:
            sidecar.stop()
        if search is not None:
            search.cleanup()


if __name__ == "__main__":
    sys.exit(main())
