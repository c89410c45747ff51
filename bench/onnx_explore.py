"""ONNX Runtime exploration for the cross-encoder: variants, sub-batch shapes and thread layouts side by side.

One run prints, for the project's realistic requests (bench/rerank_bench.py `build_requests`: 10 queries x
100 Myntra candidates, ~25.6 tokens per pair), interleaved in blocks so a noisy shared machine hits every
path alike:
- per path: p50 / p95 / min latency (ms) per request (tokenization + all forward passes + the score array),
  CPU ms per request (all threads of the process doing the work), pairs/s, the p50 ratio against
  `sentence_transformers.CrossEncoder.predict(batch_size=32)` on the same model (run, with the torch backend,
  in a worker process so torch's OpenMP threads never share a process with ORT), the median share of the
  CPUs other processes used meanwhile (/proc/stat) and the p50 over the "quiet" requests only (others
  below --quiet-share): on a shared machine compare paths by CPU ms and quiet p50;
- quality of each quantized variant against ONNX fp32 on the same 10 requests: mean top-10 overlap and
  mean Spearman of the 100 candidates' order, max |logit difference|; and ONNX fp32 against the torch
  logits (target max |diff| <= 1e-4);
- the export manifest's agreement on the calibration queries and, with --judgments, judged nDCG@10 per variant.

Paths (`--suite`, comma-separated; default variants,layout):
- variants: every `--variants` export (names of fashion_rerank.onnx_export.RECIPES and EXTRA_RECIPES below:
  fp32 compact / hf / optimizer-fused graphs, dynamic int8 per-channel / per-tensor / reduce_range / uint8
  weights on each graph, static int8 QDQ and QOperator calibrated on 512 catalog pairs, mixed precision)
  with the backend defaults (layout "split", passes <= 1024 tokens) under the core's sub-batches
  (length-sorted, longest first, max(25, 2048 // width) pairs); plus "int8-hf intra 2048 (ref cfg)", the
  configuration of docs/reference's cpu-rerank-measurements addendum (151 ms there), to scale by;
- layout (on --layout-variants): layouts "intra" and "split" x passes of 512 / 1024 / 2048 / 8192 tokens,
  one pass of 100, 1 intra-op thread, spin-waiting threads, I/O binding;
- --grpc VARIANT: also `Rerank` through a `fashion-rerank serve` sidecar (FR_SERVE_BACKEND=onnx, score cache
  off) serving that variant.

Model: `--model DIR` (a saved CrossEncoder), `--registry DIR [--model-name NAME]` (its current version), or by
default an untrained cross-encoder built from the packaged all-MiniLM-L6-v2 backbone with a seeded random
head (speed as any MiniLM-L6 cross-encoder; quality figures only indicative). Exports go to `--work-root`
(default /tmp/onnx-explore/<model>-<hash>/onnx, reused unless --reexport), never into a registry folder.

    .venv/bin/python bench/onnx_explore.py [--requests 30] [--suite variants,layout] [--registry DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

#: Extra variants built for the exploration (beyond fashion_rerank.onnx_export.RECIPES).
EXTRA_RECIPES = {
    # mixed precision: dynamic int8 except the named weight MatMuls (roles of fashion_rerank.onnx_export.matmul_roles)
    "int8-mix-ffn2": {
        "method": "dynamic",
        "source": "compact",
        "format": "QOperator",
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": False,
        "keep_fp32": ["ffn_down"],
    },
    "int8-mix-up": {
        "method": "dynamic",
        "source": "compact",
        "format": "QOperator",
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": False,
        "keep_fp32": ["ffn_up"],
    },
    "int8-mix-qkv": {
        "method": "dynamic",
        "source": "compact",
        "format": "QOperator",
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": False,
        "keep_fp32": ["query", "key", "value"],
    },
    "int8-mix-l05": {
        "method": "dynamic",
        "source": "compact",
        "format": "QOperator",
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": False,
        "keep_fp32": ["layer0", "layer5"],
    },
    "int8-pt": {
        "method": "dynamic",
        "source": "compact",
        "format": "QOperator",
        "weight_type": "QInt8",
        "per_channel": False,
        "reduce_range": False,
    },
    "int8-rr": {
        "method": "dynamic",
        "source": "compact",
        "format": "QOperator",
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": True,
    },
    "int8-u8": {
        "method": "dynamic",
        "source": "compact",
        "format": "QOperator",
        "weight_type": "QUInt8",
        "per_channel": True,
        "reduce_range": False,
    },
    "int8-static-qop": {
        "method": "static",
        "source": "compact",
        "format": "QOperator",
        "weight_type": "QInt8",
        "activation_type": "QUInt8",
        "per_channel": True,
        "reduce_range": False,
        "calibrate_method": "MinMax",
        "op_types": ["MatMul"],
    },
}
EXPLORE_VARIANTS = (
    "fp32",
    "fp32-hf",
    "fp32-fused",
    "int8",
    "int8-pt",
    "int8-rr",
    "int8-u8",
    "int8-hf",
    "int8-fused",
    "int8-static",
    "int8-static-qop",
    "int8-mix-ffn2",
    "int8-mix-up",
    "int8-mix-qkv",
    "int8-mix-l05",
)
SMALL_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json", "vocab.txt")


# ------------------------------------------------------------------------------------------ inputs
def _catalog_texts(limit: int = 20_000):
    from indexer.catalogs import read_myntra

    try:
        from fashion_rerank.product import rerank_text
    except ImportError:  # older layout
        from indexer.product import rerank_text  # type: ignore[no-redef]
    products = list(read_myntra(limit=limit).products)
    return products, [rerank_text(p) for p in products]


def calibration_pairs(n: int = 512, seed: int = 1) -> list[tuple[str, str]]:
    """`n` (query, product text) pairs for static-int8 calibration, disjoint from the bench queries:
    queries made from random catalog products' colour/type/gender, each with its 24 best word-overlap
    candidates and 8 random products (like kNN candidates: on-topic head, weak tail)."""
    from rerank_bench import QUERIES

    products, texts = _catalog_texts()
    rng = random.Random(seed)
    words = [set(t.lower().replace("|", " ").split()) for t in texts]
    out: list[tuple[str, str]] = []
    seen = set(QUERIES)
    while len(out) < n:
        p = rng.choice(products)
        tmpl = rng.choice(("{c} {t} for {g}", "{g} {c} {t}", "{c} {t}"))
        q = tmpl.format(c=p.get("colour"), t=p.get("product_type"), g=p.get("gender")).lower().strip()
        if q in seen or not q:
            continue
        seen.add(q)
        qw = set(q.split())
        best = sorted(range(len(texts)), key=lambda i: (-len(qw & words[i]), rng.random()))[:24]
        out += [(q, texts[i]) for i in best + rng.sample(range(len(texts)), 8)]
    return out[:n]


def prepare_model(args) -> tuple[Path, str]:
    """The cross-encoder folder to explore and a label for it."""
    if args.model:
        return Path(args.model), Path(args.model).name
    if args.registry:
        from fashion_rerank.registry import ModelRegistry

        reg = ModelRegistry(args.registry, args.model_name) if args.model_name else ModelRegistry(args.registry)
        v = reg.current()
        if v is None:
            sys.exit(f"registry {args.registry} has no current version")
        return Path(reg.path(v)), f"{reg.name}-{v}"
    folder = Path(args.work_root) / "random-head-ce"
    if not (folder / "model.safetensors").exists():
        import torch
        from sentence_transformers import CrossEncoder

        from fashion_rerank.settings import resolve_model_path

        torch.manual_seed(0)
        ce = CrossEncoder(resolve_model_path("packaged:all-MiniLM-L6-v2"), num_labels=1, max_length=128)
        ce.save_pretrained(str(folder))
    return folder, "random-head-ce"


def load_judged(path: str, split: str) -> list[tuple[str, str, float]]:
    """(query, product text, grade 0-3) rows of a labeling judgments JSONL store (fields query, text, grade,
    split), one per (query, text), only split `split` ("" = all)."""
    rows, seen = [], set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("grade") is None or not r.get("text") or (split and r.get("split") != split):
                continue
            key = (r["query"], r["text"])
            if key not in seen:
                seen.add(key)
                rows.append((r["query"], r["text"], float(r["grade"])))
    return rows


def prepare_exports(model_dir: Path, label: str, args, variants) -> Path:
    """A shadow folder <work>/<label>-<hash>/ with the model's tokenizer/config files and onnx/ exports."""
    weights = next((model_dir / f for f in ("model.safetensors", "pytorch_model.bin") if (model_dir / f).exists()), None)
    key = hashlib.sha1((str(model_dir.resolve()) + str(weights.stat().st_mtime if weights else "")).encode()).hexdigest()[:8]
    shadow = Path(args.work_root) / f"{label}-{key}"
    shadow.mkdir(parents=True, exist_ok=True)
    for f in SMALL_FILES:
        if (model_dir / f).exists():
            shutil.copy2(model_dir / f, shadow / f)
    man = shadow / "onnx" / "manifest.json"
    have = set(json.loads(man.read_text()).get("variants", {})) if man.exists() else set()
    if args.reexport or not set(variants) <= have:
        from fashion_rerank.onnx_export import export_cross_encoder

        print(f"exporting {model_dir} -> {shadow / 'onnx'} ({', '.join(variants)}) ...", flush=True)
        t0 = time.monotonic()
        cal = calibration_pairs(args.calibration_pairs)
        judged = load_judged(args.judgments, args.judged_split) if args.judgments else None
        if judged:
            print(f"  judged nDCG@10 on {len(judged)} {args.judged_split!r} judgments of {args.judgments}", flush=True)
        export_cross_encoder(
            model_dir, shadow / "onnx", calibration_pairs=cal, variants=variants, recipes=EXTRA_RECIPES, judged=judged
        )
        print(f"  done in {time.monotonic() - t0:.0f} s", flush=True)
    return shadow


# ------------------------------------------------------------------------------------ torch worker
def worker_main(model_dir: str, threads: int) -> int:
    """Serve CrossEncoder.predict and the torch backend over stdin/stdout JSON lines (timed in here)."""
    import torch
    from sentence_transformers import CrossEncoder

    from reranker.backends.torch_backend import load as load_torch
    from reranker.backends.torch_backend import prepare

    torch.set_num_threads(threads)
    prepare(threads)
    ce = CrossEncoder(model_dir)
    tb = load_torch(model_dir, threads=threads)
    out = sys.stdout
    sys.stdout = sys.stderr  # keep library prints off the protocol channel
    out.write(json.dumps({"ready": True, "torch": torch.__version__}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        q, d = req["q"], req["d"]
        c0 = time.process_time()
        t0 = time.perf_counter()
        if req["path"] == "predict":
            s = ce.predict([(q, t) for t in d], batch_size=32, activation_fn=torch.nn.Identity())
        else:
            s = tb.score(q, d)
        ms = (time.perf_counter() - t0) * 1e3
        cpu = (time.process_time() - c0) * 1e3
        out.write(json.dumps({"ms": ms, "cpu_ms": cpu, "scores": np.asarray(s, dtype=np.float64).tolist()}) + "\n")
        out.flush()
    return 0


class Worker:
    def __init__(self, model_dir: Path, threads: int):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(model_dir), "--threads", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        ready = json.loads(self.proc.stdout.readline())
        self.torch_version = ready.get("torch")

    def call(self, path: str, q: str, d: list[str]) -> tuple[float, float, np.ndarray]:
        self.proc.stdin.write(json.dumps({"path": path, "q": q, "d": d}) + "\n")
        self.proc.stdin.flush()
        r = json.loads(self.proc.stdout.readline())
        return r["ms"], r["cpu_ms"], np.asarray(r["scores"], dtype=np.float32)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)


# ------------------------------------------------------------------------------------------ sidecar
class Sidecar:
    """`fashion-rerank serve` (python -m cli.main serve) with FR_SERVE_BACKEND=onnx on a temporary registry
    holding a copy of the explored model with its exports; the gate is set to `variant`.

    The score cache is off (every timed call is scored) and the registry is polled once an hour (the
    timed window sees one load).
    """

    def __init__(self, shadow: Path, variant: str, threads: int, extra_env: dict | None = None):
        import socket

        from fashion_rerank.onnx_export import set_gate
        from fashion_rerank.registry import ModelRegistry

        self.tmp = Path(tempfile.mkdtemp(prefix="onnx-explore-reg-"))
        reg = ModelRegistry(self.tmp, "explore-ce")
        version, folder = reg.new_version_dir()
        shutil.copytree(shadow, folder, dirs_exist_ok=True)
        set_gate(folder / "onnx", variant, decided_by="bench/onnx_explore.py --grpc")
        (folder / "card.json").write_text(json.dumps({"version": version, "purpose": "bench/onnx_explore.py --grpc"}))
        reg.promote(version, reason="onnx explore")
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        env = dict(
            os.environ,
            FR_SERVE_GRPC_PORT=str(port),
            FR_SERVE_METRICS_PORT="-1",
            FR_SERVE_HTTP_PORT="0",
            FR_SERVE_THREADS=str(threads),
            FR_SERVE_BACKEND="onnx",
            FR_SERVE_QUERYLOG_PATH="",
            FR_SERVE_QUERYLOG_INDEX="",
            FR_SERVE_REGISTRY_POLL_S="3600",
            FR_SERVE_SCORE_CACHE_ENTRIES="0",
            FR_MODEL_REGISTRY_DIR=str(self.tmp),
            FR_MODEL_NAME="explore-ce",
            **(extra_env or {}),
        )
        self.log = self.tmp / "sidecar.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve"],
            env=env,
            stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parents[1]),
        )
        self.target = f"127.0.0.1:{port}"
        self.version = version
        import psutil

        self.ps = psutil.Process(self.proc.pid)
        from reranker.client import RerankerClient

        self.client = RerankerClient(self.target, timeout=600)
        end = time.monotonic() + 300
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                sys.exit(f"the sidecar exited:\n{self.log.read_text()[-3000:]}")
            try:
                if self.client.health() == "SERVING":
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.5)
        else:
            sys.exit(f"the sidecar did not start:\n{self.log.read_text()[-3000:]}")

    def call(self, q: str, d: list[str]) -> tuple[float, float, np.ndarray]:
        t0 = time.perf_counter()
        r = self.client.rerank(q, d)
        ms = (time.perf_counter() - t0) * 1e3
        s = np.zeros(len(d), np.float32)
        for x in r.results:
            s[x.index] = x.score
        self.model_version = r.model_version
        return ms, float("nan"), s

    def close(self):
        import signal as _signal

        self.client.channel.close()
        self.proc.send_signal(_signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------- paths
def io_binding_scorer(backend, sub_batch=25, sub_batch_tokens=2048):
    """Backend.score with ORT I/O binding (inputs bound from numpy, output bound to CPU)."""
    sess = backend._session
    names = [i.name for i in sess.get_inputs()]

    def score(q, d):
        enc = backend.encode([q] * len(d), d)
        order = np.argsort(-enc.lengths, kind="stable")
        out = np.empty(len(d), dtype=np.float32)
        pos = 0
        while pos < len(order):
            size = max(sub_batch, sub_batch_tokens // max(1, int(enc.lengths[order[pos]])))
            idx = order[pos : pos + size]
            feeds = backend._tok.batch(enc, idx)
            b = sess.io_binding()
            for n in names:
                b.bind_cpu_input(n, np.ascontiguousarray(feeds[n]))
            b.bind_output("logits", "cpu")
            sess.run_with_iobinding(b)
            out[idx] = b.copy_outputs_to_cpu()[0][:, 0]
            pos += size
        return out

    return score


def build_paths(
    shadow: Path,
    suites: set[str],
    threads: int,
    variants_present: set[str],
    layout_variants=("int8", "fp32"),
    variants_wanted=EXPLORE_VARIANTS,
):
    """{label: (callable(q, docs) -> scores, description)} of the ORT paths."""
    from reranker.backends.onnx_backend import OnnxBackend

    paths = {}
    cache = {}

    def be(variant, th=threads, spin=False, layout="split", max_tokens=1024):
        k = (variant, th, spin, layout, max_tokens)
        if k not in cache:
            cache[k] = OnnxBackend(
                shadow, variant=variant, threads=th, spinning=spin, verify=False, layout=layout, max_tokens=max_tokens
            )
        return cache[k]

    core = "core sub-batches max(25, 2048 // width)"
    if "variants" in suites:
        for v in EXPLORE_VARIANTS:
            if v in variants_present and v in variants_wanted:
                b = be(v)
                paths[f"onnx {v}"] = (lambda q, d, b=b: b.score(q, d), f"{v}: backend defaults (split, 1024), {core}")
        if "int8-hf" in variants_present:
            # the reference document's configuration (plain graph, dynamic int8, 2 intra-op threads, 2048 tokens)
            b = be("int8-hf", layout="intra", max_tokens=2048)
            paths["onnx int8-hf intra 2048 (ref cfg)"] = (lambda q, d, b=b: b.score(q, d), "reference configuration")
    if "layout" in suites:
        for v in layout_variants:
            if v not in variants_present:
                continue
            for layout in ["intra", "split"] if threads > 1 else ["intra"]:
                for mt in (512, 1024, 2048, 8192):
                    b = be(v, layout=layout, max_tokens=mt)
                    paths[f"onnx {v} {layout} {mt}"] = (
                        lambda q, d, b=b: b.score(q, d),
                        f"{layout}, passes <= {mt} tokens, {core}",
                    )
            b = be(v, layout="intra", max_tokens=1 << 20)
            paths[f"onnx {v} intra one batch"] = (lambda q, d, b=b: b.score(q, d, sub_batch=10_000), "one pass of 100 pairs")
            b = be(v, th=1, layout="intra")
            paths[f"onnx {v} 1 thread 1024"] = (lambda q, d, b=b: b.score(q, d), "1 intra-op thread, 1024")
            for layout in ["intra", "split"] if threads > 1 else ["intra"]:
                b = be(v, spin=True, layout=layout)
                paths[f"onnx {v} {layout} 1024 spin"] = (lambda q, d, b=b: b.score(q, d), "spin-waiting threads")
            if v == "int8":
                b = be(v, layout="intra")
                paths[f"onnx {v} intra 1024 io-binding"] = (io_binding_scorer(b, 1, 1024), "I/O binding")
    return paths, cache


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat (USER_HZ, 10 ms each)."""
    f = list(map(int, open("/proc/stat").readline().split()[1:]))
    return sum(f) - f[3] - f[4], sum(f)


def wait_quiet(max_wait_s: float, share: float = 0.05, window_s: float = 1.0) -> bool:
    """Wait (at most `max_wait_s`) until the machine is idle: busy < `share` of all CPUs over `window_s`."""
    end = time.monotonic() + max_wait_s
    while time.monotonic() < end:
        b0, t0 = busy_jiffies()
        time.sleep(window_s)
        b1, t1 = busy_jiffies()
        if (b1 - b0) < share * max(1, t1 - t0):
            return True
    return False


def summary(ms: list[float], pairs: int) -> dict:
    s = sorted(ms)
    return {
        "p50_ms": statistics.median(s),
        "p95_ms": s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))],
        "min_ms": s[0],
        "pairs_per_s": pairs / (statistics.fmean(s) / 1e3),
        "n": len(s),
    }


def agreement(ref: list[np.ndarray], other: list[np.ndarray]) -> dict:
    from fashion_rerank.onnx_export import agreement as agr

    return agr(ref, other)


# -------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help="a saved cross-encoder folder")
    ap.add_argument("--registry", default=None, help="explore this registry's current version")
    ap.add_argument("--model-name", default=None)
    ap.add_argument("--work-root", default=os.path.join(tempfile.gettempdir(), "onnx-explore"))
    ap.add_argument("--suite", default="variants,layout")
    ap.add_argument("--variants", default=",".join(EXPLORE_VARIANTS))
    ap.add_argument("--layout-variants", default="int8,fp32", help="variants the layout suite runs")
    ap.add_argument("--requests", type=int, default=30, help="timed requests per path")
    ap.add_argument("--block", type=int, default=10, help="requests per path per turn")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default CPU quota)")
    ap.add_argument("--calibration-pairs", type=int, default=512)
    ap.add_argument("--no-reference", action="store_true", help="skip CrossEncoder.predict and the torch backend")
    ap.add_argument("--reexport", action="store_true")
    ap.add_argument(
        "--grpc", default=None, metavar="VARIANT", help="also time the gRPC sidecar (FR_SERVE_BACKEND=onnx) serving this variant"
    )
    ap.add_argument(
        "--quiet-share",
        type=float,
        default=0.15,
        help="a request counts as quiet when the rest of the machine used less than this share of the CPUs",
    )
    ap.add_argument("--judgments", default=None, help="labeling judgments JSONL: judged nDCG@10 per variant at export")
    ap.add_argument("--judged-split", default="test", help="judgments split used (default test; '' = all)")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each path's block wait up to S seconds for an idle machine (busy < 5%% over 1 s)",
    )
    ap.add_argument("--max-seconds", type=float, default=0.0, help="stop timing after this long (report what was done)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from fashion_rerank.hardware import cpu_quota

    threads = args.threads or cpu_quota()
    if args.worker:
        return worker_main(args.worker, threads)
    from rerank_bench import build_requests

    model_dir, label = prepare_model(args)
    variants = [v for v in args.variants.split(",") if v]
    shadow = prepare_exports(model_dir, label, args, variants)
    manifest = json.loads((shadow / "onnx" / "manifest.json").read_text())
    present = set(manifest["variants"])
    requests = build_requests(args.candidates)
    n_tok = None
    suites = set(args.suite.split(","))
    paths, backends = build_paths(shadow, suites, threads, present, [v for v in args.layout_variants.split(",") if v], variants)
    worker = None if args.no_reference else Worker(model_dir, threads)
    timed: dict[str, tuple] = {}
    if worker:
        timed["CrossEncoder.predict(bs 32)"] = ("worker", "predict")
        timed["torch backend (Backend.score)"] = ("worker", "torch")
    for k, (fn, _) in paths.items():
        timed[k] = ("local", fn)
    sidecar = Sidecar(shadow, args.grpc, threads) if args.grpc else None
    if sidecar:
        timed[f"gRPC sidecar onnx {args.grpc}"] = ("sidecar", None)
    any_be = next(iter(backends.values()))
    lengths = any_be.encode([q for q, d in requests for _ in d], [t for _, d in requests for t in d]).lengths
    n_tok = float(lengths.mean())
    print(
        f"model {model_dir} ({label}); exports {shadow / 'onnx'}; {len(requests)} queries x {args.candidates} "
        f"candidates, {n_tok:.1f} tokens per pair (max {lengths.max()}); threads {threads}; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    def call(spec, q, d):
        kind, fn = spec
        if kind == "worker":
            return worker.call(fn, q, d)
        if kind == "sidecar":
            c0 = sum(sidecar.ps.cpu_times()[:2])
            ms, _, sc = sidecar.call(q, d)
            return ms, (sum(sidecar.ps.cpu_times()[:2]) - c0) * 1e3, sc
        c0 = time.process_time()
        t0 = time.perf_counter()
        s = fn(q, d)
        return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3, s

    # quality first (also warms every path up)
    scores: dict[str, list[np.ndarray]] = {}
    for name, spec in timed.items():
        scores[name] = [call(spec, q, d)[2] for q, d in requests]
        for q, d in requests[: args.warmup]:
            call(spec, q, d)
    times: dict[str, list[float]] = {k: [] for k in timed}
    cpu: dict[str, list[float]] = {k: [] for k in timed}
    others: dict[str, list[float]] = {k: [] for k in timed}

    def time_client_ms(spec, ms):  # CPU this process spends while a worker/sidecar computes (waiting: ~0)
        return 0.0

    done = 0
    t_start = time.monotonic()
    loads = []
    deadline = time.monotonic() + args.max_seconds if args.max_seconds else None
    while done < args.requests and (deadline is None or time.monotonic() < deadline):
        n = min(args.block, args.requests - done)
        for name, spec in timed.items():
            if args.wait_quiet:
                wait_quiet(args.wait_quiet)
            for i in range(done, done + n):
                q, d = requests[i % len(requests)]
                b0, j0 = busy_jiffies()
                ms, cms, _ = call(spec, q, d)
                b1, j1 = busy_jiffies()
                # CPU the rest of the machine used meanwhile, as a share of all CPUs (jiffies are 10 ms)
                other = max(0.0, (b1 - b0) * 10.0 - cms - (time_client_ms(spec, ms)))
                share = other / max(1.0, (j1 - j0) * 10.0)
                times[name].append(ms)
                cpu[name].append(cms)
                others[name].append(share)
        loads.append(os.getloadavg()[0])
        done += n
    if worker:
        worker.close()
    if sidecar:
        print(f"sidecar served model_version {sidecar.model_version!r}")
        sidecar.close()
    rows = {}
    for k, v in times.items():
        quiet = [m for m, o in zip(v, others[k]) if o < args.quiet_share]
        rows[k] = {
            **summary(v, args.candidates),
            "cpu_p50_ms": statistics.median(cpu[k]),
            "others_share_p50": statistics.median(others[k]),
            "quiet_p50_ms": statistics.median(quiet) if quiet else None,
            "quiet_n": len(quiet),
        }
    ref_name = "CrossEncoder.predict(bs 32)"
    ref_p50 = rows[ref_name]["p50_ms"] if ref_name in rows else None
    print(
        f"\ntimed {done} requests per path in blocks of {args.block} ({time.monotonic() - t_start:.0f} s); "
        f"load average during: {min(loads, default=0):.1f}-{max(loads, default=0):.1f}"
    )
    print(
        "cpu ms: CPU time of the process serving the path, all its threads (on a loaded machine the best\n"
        "guess of the work; wall time includes waiting for the CPU)"
    )
    print(
        f"quiet: requests during which the rest of the machine used < {args.quiet_share:.0%} of the CPUs "
        f"(/proc/stat); others: that share, median"
    )
    print(
        f"{'path':<36} {'p50 ms':>8} {'p95 ms':>8} {'min ms':>8} {'cpu ms':>8} {'pairs/s':>8} {'predict/p50':>12}"
        f" {'others':>7} {'quiet p50 (n)':>14}"
    )
    for k, r in rows.items():
        ratio = f"{ref_p50 / r['p50_ms']:11.2f}x" if ref_p50 else " " * 12
        qp = f"{r['quiet_p50_ms']:8.1f} ({r['quiet_n']:3d})" if r["quiet_p50_ms"] is not None else "      - (  0)"
        print(
            f"{k:<36} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['min_ms']:8.1f} {r['cpu_p50_ms']:8.1f} "
            f"{r['pairs_per_s']:8.0f} {ratio} {r['others_share_p50']:7.0%} {qp}"
        )

    # quality vs ONNX fp32 (and fp32 vs torch)
    quality = {}
    base = scores.get("onnx fp32")
    if base is None and "fp32" in present:
        from reranker.backends.onnx_backend import OnnxBackend

        b = OnnxBackend(shadow, variant="fp32", threads=threads, verify=False)
        base = [b.score(q, d) for q, d in requests]
    print(f"\nquality vs ONNX fp32 on the {len(requests)} requests (mean over queries):")
    print(f"{'variant':<20} {'top-10 overlap':>15} {'Spearman':>9} {'max |dlogit|':>13}")
    if "torch backend (Backend.score)" in scores:
        a = agreement(scores["torch backend (Backend.score)"], base)
        quality["fp32 vs torch"] = a
        print(f"{'torch vs onnx fp32':<20} {a['top10_overlap']:15.3f} {a['spearman']:9.4f} {a['max_abs_diff']:13.2e}")
    for k in timed:
        if k.startswith("onnx ") and k != "onnx fp32" and len(k.split()) == 2:
            a = agreement(base, scores[k])
            quality[k[5:]] = a
            print(f"{k[5:]:<20} {a['top10_overlap']:15.3f} {a['spearman']:9.4f} {a['max_abs_diff']:13.2e}")
    print("\nexport manifest: agreement with fp32 on the calibration queries, judged nDCG@10, gate:")
    for v, i in manifest["variants"].items():
        a = i.get("agreement") or {}
        nd = f"nDCG@10 {a['ndcg10']:.4f} (fp32 {a['ndcg10_fp32']:.4f}, {a.get('judged_pairs')} pairs)" if "ndcg10" in a else ""
        ag = f"top-10 {a['top10_overlap']:.3f} Spearman {a['spearman']:.4f}" if a.get("top10_overlap") is not None else ""
        print(f"  {v:<16} {ag:<36} {nd}")
    print(f"  gate: {manifest.get('gate')}")
    print("\nvariant files: " + ", ".join(f"{v} {i['bytes'] / 2**20:.0f} MiB" for v, i in manifest["variants"].items()))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": rows,
                    "quality": quality,
                    "threads": threads,
                    "tokens_per_pair": n_tok,
                    "model": str(model_dir),
                    "loadavg": loads,
                    "manifest": manifest,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
