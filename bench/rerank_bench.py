"""Rerank and Search benchmark: every serving path side by side on the same 100-candidate Myntra requests.

One run prints, on 10 queries x 100 Myntra candidates (`build_requests`), with all single-client paths run in
turn in small blocks, repeated, so that drift on a shared machine hits them alike:

- p50 / p95 latency (ms), pairs/s, the ratio to `CrossEncoder.predict` at p50 and the speed-up over it, of
  (a) `sentence_transformers.CrossEncoder.predict(batch_size=32)` (the reference) and
  (b) the torch backend (`Backend.score`), both in a worker process (torch's OpenMP threads never share a
      process with ONNX Runtime);
  (c) each ONNX variant of the model (`fp32`, `int8`): the bare backend (`OnnxBackend.score`), through the
      scoring core (`ScoringCore.submit().result()`), and through gRPC (`Rerank` on a sidecar serving that
      variant);
  (d) a repeated request answered from the score cache (`Rerank` on the sidecar as configured by default);
  (e) `Search` end to end (query embedding + OpenSearch kNN + rerank of the 100 kNN candidates), `Search`
      with the rerank answered from the cache, `Search` on a sidecar with no model (kNN order only), `Search`
      with the document cache off (every candidate's `_source` from the kNN answer, `reranker.documents`),
      and `Rerank` of exactly the candidates `Search` reranks, so "Search - Rerank" compares like with like.
      The Search paths are warmed with every query first: their products have been seen, the steady state
      of a sidecar serving its catalog (the document-cache-off path shows the cost without it);
  plus the machine-wide CPU share used by other processes while each path ran, and the p50 of the requests
  during which that share was low ("quiet");
- 1 / 4 / 16 concurrent gRPC clients (`Rerank`, 100 candidates, score cache off): p50, p99, requests/s,
  failed calls, for the default worker layout (`FR_SERVE_WORKERS=0`: one worker per thread, sharing the
  threads: a lone request uses both, concurrent ones one each) and `FR_SERVE_WORKERS=1` (one worker, both
  threads), interleaved, repeated;
- each sidecar's resident memory (psutil, /proc) after warm-up, during and after the concurrency runs, and
  its peak during a hot swap under traffic; whether torch is mapped into it;
- the quality gate's decision for the model (which ONNX variant serves; held-out nDCG@10 of each variant);
- each target (docs/performance.md) with met / not met.

Every sidecar is `fashion-rerank serve` in a subprocess in which importing torch, transformers and
sentence-transformers fails (as tests/integration/test_no_torch.py does), so its memory is that of a
serve-only install: ONNX Runtime cross-encoder + ONNX bi-encoder.

Model: `--registry DIR [--model-name NAME]` benchmarks that registry's current version: the version folder
is copied into a temporary registry (the given registry is never written) and, when it carries no `onnx/`,
its ONNX files are made there with the real gate, `labeling.export.export_version`, on the judgments named
in its model card (`--judgments` to override); the export is cached in the temp folder (`--reexport`).
Without `--registry`: an untrained cross-encoder (packaged all-MiniLM-L6-v2 backbone, seeded random head;
speed as any MiniLM-L6 cross-encoder, scores meaningless) exported with the export's default gate.

Search needs OpenSearch (`OPENSEARCH_URL`, default http://localhost:9200): when none answers the bench
starts the local node (`fashion-rerank opensearch start`) and stops it at the end. It indexes a slice of the
Myntra catalog behind its own alias (`--alias`, default `bench-products`; reused when it exists) and deletes
the indices it created at the end unless `--keep-index`. `--no-search` skips all of it.

    .venv/bin/python bench/rerank_bench.py [--registry DIR] [--quick] [--requests 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
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
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

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

#: Targets on the standard 2-core machine (docs/performance.md#targets).
TARGET_GRPC_P50_MS = 80.0
TARGET_SPEEDUP = 4.0
TARGET_CACHED_P50_MS = 5.0
TARGET_KNN_SEARCH_P50_MS = 20.0
TARGET_SEARCH_OVER_RERANK_MS = 15.0
TARGET_RSS_MB = 600.0  # decimal megabytes (600e6 bytes = 572 MiB)

#: Python code run before the sidecar: importing these modules then fails (a serve-only install).
BLOCK_TORCH = (
    "import sys\n"
    "for name in ('torch', 'transformers', 'sentence_transformers', 'datasets', 'accelerate'):\n"
    "    sys.modules[name] = None  # any import of these now raises ImportError\n"
)


#: Search through a sidecar without the document cache (FR_SERVE_DOCUMENT_CACHE_ENTRIES=0).
DOCS_OFF = "Search: embed + kNN + rerank, document cache off"

#: The two worker layouts the concurrency runs compare (names as printed).
DEFAULT_LAYOUT = "default: workers share threads"
ONE_WORKER = "1 worker x 2 threads"


# ------------------------------------------------------------------------------------------ inputs
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


# ------------------------------------------------------------------------------------------ machine
def machine_info() -> dict:
    """CPU model, family, SIMD flags, CPUs, memory, load averages (from /proc), kernel."""
    from fashion_rerank.hardware import cpu_quota

    first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    f = {}
    for line in first.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            f[k.strip()] = v.strip()
    flags = set(f.get("flags", "").split())
    family, model = int(f.get("cpu family", 0) or 0), int(f.get("model", 0) or 0)
    gen = ""
    if f.get("vendor_id") == "AuthenticAMD":
        gen = {26: "Zen 5"}.get(family, "")
        if family == 25:
            gen = "Zen 4" if 0x10 <= model <= 0x1F or model >= 0x60 else "Zen 3"
    simd = [
        x
        for x in (
            "avx2",
            "fma",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512_vnni",
            "avx512_bf16",
            "avx_vnni",
            "amx_int8",
            "amx_bf16",
        )
        if x in flags
    ]
    mem = next(
        (int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0
    )
    return {
        "cpu": f.get("model name", platform.processor()),
        "vendor": f.get("vendor_id"),
        "family": family,
        "model": model,
        "generation": gen,
        "simd": simd,
        "hypervisor": "hypervisor" in flags,
        "cpus": os.cpu_count(),
        "cpu_quota": cpu_quota(),
        "mem_gib": round(mem / 2**20, 1),
        "kernel": platform.release(),
        "loadavg_start": os.getloadavg(),
    }


def software_versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in (
        "onnxruntime",
        "torch",
        "sentence-transformers",
        "transformers",
        "tokenizers",
        "numpy",
        "grpcio",
        "opensearch-py",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "-"
    return out


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat (USER_HZ: 10 ms each)."""
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return sum(v) - v[3] - v[4], sum(v)


class CpuMeter:
    """CPU used by the rest of the machine while a request ran: machine busy time minus our processes' CPU."""

    def __init__(self):
        import psutil

        self.procs = [psutil.Process()]

    def add(self, pid: int | None) -> None:
        import psutil

        if pid:
            try:
                self.procs.append(psutil.Process(pid))
            except psutil.Error:
                pass

    def ours_ms(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except Exception:  # noqa: BLE001 - a process that went away
                pass
        return total * 1e3

    def snapshot(self) -> tuple[int, int, float]:
        b, t = busy_jiffies()
        return b, t, self.ours_ms()

    @staticmethod
    def foreign_share(a, b) -> float:
        """Share of all CPUs used by other processes between snapshots a and b (0..1)."""
        busy_ms = (b[0] - a[0]) * 10.0
        total_ms = max(10.0, (b[1] - a[1]) * 10.0)
        return max(0.0, min(1.0, (busy_ms - (b[2] - a[2])) / total_ms))


# ------------------------------------------------------------------------------------------ model
def _export_cache_key(src: Path, store_path: Path | None, judge_model: str | None) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        p = src / name
        if p.exists():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    if store_path and store_path.exists():
        st = store_path.stat()
        h.update(f"{store_path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{judge_model};".encode())
    return h.hexdigest()[:12]


def prepare_model(args, work: Path) -> dict:
    """A temporary registry holding the model to benchmark, with its ONNX files and gate; returns
    {"registry", "name", "version", "folder", "source", "gate", "export_s", "export_cached", "judgments"}."""
    from fashion_rerank.registry import ModelRegistry
    from fashion_rerank.settings import REFERENCE_JUDGE_MODEL

    name = args.model_name or "fashion-ce"
    reg = ModelRegistry(work / "models", name)
    reg.dir.mkdir(parents=True, exist_ok=True)
    info: dict = {"registry": str(work / "models"), "name": name, "export_cached": False, "export_s": 0.0, "judgments": None}
    if args.registry:
        src_reg = ModelRegistry(args.registry, args.model_name) if args.model_name else ModelRegistry(args.registry)
        version = src_reg.current()
        if version is None:
            sys.exit(f"registry {src_reg.dir} has no current version")
        src = Path(src_reg.path(version))
        folder = reg.dir / version
        shutil.copytree(src, folder, ignore=shutil.ignore_patterns("onnx"))
        info["source"] = str(src)
        card = {}
        try:
            card = json.loads((src / "card.json").read_text())
        except (OSError, ValueError):
            pass
        j = card.get("judgments") or {}
        store_path = Path(args.judgments or j.get("store") or "") if (args.judgments or j.get("store")) else None
        judge_model = args.judge_model or j.get("judge_model") or REFERENCE_JUDGE_MODEL
        if (src / "onnx" / "manifest.json").exists() and not args.regate:
            shutil.copytree(src / "onnx", folder / "onnx")
            info["export_how"] = "the version's own onnx/ (gate as decided when it was trained)"
        else:
            cache = (
                Path(tempfile.gettempdir())
                / "rerank-bench-cache"
                / f"{name}-{version}-{_export_cache_key(src, store_path, judge_model)}"
            )
            if (cache / "onnx" / "manifest.json").exists() and not args.reexport:
                shutil.copytree(cache / "onnx", folder / "onnx")
                info["export_cached"] = True
            else:
                t0 = time.monotonic()
                if store_path is not None and store_path.exists():
                    from labeling import prompts
                    from labeling.dataset import training_pairs
                    from labeling.export import export_version
                    from labeling.store import JudgmentStore

                    store = JudgmentStore(store_path)
                    pv = j.get("prompt_version") or prompts.PROMPT_VERSION
                    pairs = training_pairs(store, judge_model, pv)
                    print(
                        f"exporting {src.name} to ONNX with the quality gate on held-out judgments "
                        f"({store_path}, judge {judge_model}, {len(pairs)} train pairs for calibration) ...",
                        flush=True,
                    )
                    export_version(folder, store, judge_model, pairs)
                    info["judgments"] = {"store": str(store_path), "judge_model": judge_model, "train_pairs": len(pairs)}
                else:
                    from fashion_rerank.onnx_export import export_cross_encoder

                    print(f"exporting {src.name} to ONNX (no judgments found: the export's agreement gate) ...", flush=True)
                    export_cross_encoder(folder)
                info["export_s"] = time.monotonic() - t0
                shutil.rmtree(cache, ignore_errors=True)
                shutil.copytree(folder / "onnx", cache / "onnx")
            info["export_how"] = "labeling.export.export_version (held-out judgments)" if store_path else "export_cross_encoder"
            if info["export_cached"]:
                info["export_how"] += f", reused from {cache} (--reexport to redo)"
    else:
        import torch
        from sentence_transformers import CrossEncoder

        from fashion_rerank.onnx_export import export_cross_encoder
        from fashion_rerank.settings import ModelSettings, resolve_model_path

        version, folder = reg.new_version_dir()
        torch.manual_seed(0)
        ce = CrossEncoder(resolve_model_path("packaged:all-MiniLM-L6-v2"), num_labels=1, max_length=ModelSettings().max_length)
        ce.save_pretrained(str(folder))
        (folder / "card.json").write_text(json.dumps({"version": version, "purpose": "benchmark, untrained head"}))
        t0 = time.monotonic()
        print("exporting the untrained cross-encoder to ONNX ...", flush=True)
        export_cross_encoder(folder)
        info["export_s"] = time.monotonic() - t0
        info["source"] = "untrained: packaged all-MiniLM-L6-v2 backbone + seeded random head"
        info["export_how"] = "export_cross_encoder (agreement gate, no judgments)"
    reg.promote(version, reason="benchmark")
    manifest = json.loads((Path(folder) / "onnx" / "manifest.json").read_text())
    info.update(version=version, folder=str(folder), gate=manifest.get("gate", {}), variants=manifest.get("variants", {}))
    return info


def copy_and_promote(reg) -> str:
    src = reg.path(reg.current())
    version, folder = reg.new_version_dir()
    shutil.copytree(src, folder, dirs_exist_ok=True)
    (folder / "card.json").write_text(json.dumps({"version": version, "purpose": "benchmark swap"}))
    reg.promote(version, reason="benchmark swap")
    return version


# ------------------------------------------------------------------------------------ torch worker
def worker_main(folder: str, requests_file: str, threads: int) -> int:
    """CrossEncoder.predict and the torch backend, timed in here; JSON lines on stdin/stdout."""
    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder

    from reranker.backends import load_backend, prepare_backend

    torch.set_num_threads(threads)
    prepare_backend("torch", threads)
    requests = json.loads(Path(requests_file).read_text())
    ce = CrossEncoder(folder)
    tb = load_backend("torch", folder, version="bench", threads=threads)
    out = sys.stdout
    sys.stdout = sys.stderr  # keep library prints off the protocol channel
    out.write(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}) + "\n")
    out.flush()
    ident = torch.nn.Identity()
    for line in sys.stdin:
        req = json.loads(line)
        q, d = requests[req["i"]]
        t0 = time.perf_counter()
        if req["path"] == "predict":
            s = ce.predict([(q, t) for t in d], batch_size=32, activation_fn=ident, show_progress_bar=False)
        else:
            s = tb.score(q, d)
        ms = (time.perf_counter() - t0) * 1e3
        out.write(json.dumps({"ms": ms, "logits": np.asarray(s, dtype=np.float64).tolist()}) + "\n")
        out.flush()
    return 0


class TorchWorker:
    def __init__(self, folder: str, requests: list, threads: int, work: Path):
        import psutil

        rf = work / "requests.json"
        rf.write_text(json.dumps(requests))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", folder, "--worker-requests", str(rf), "--threads", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=str(REPO),
        )
        line = self.proc.stdout.readline()
        if not line:
            sys.exit("the torch worker did not start")
        self.ready = json.loads(line)
        self.ps = psutil.Process(self.proc.pid)

    def call(self, path: str, i: int) -> dict:
        self.proc.stdin.write(json.dumps({"path": path, "i": i}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(30)
        except Exception:  # noqa: BLE001
            self.proc.kill()


# ------------------------------------------------------------------------------------------ sidecars
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sidecar:
    """`fashion-rerank serve` in a subprocess where torch cannot be imported (a serve-only install)."""

    def __init__(self, label: str, env: dict, work: Path):
        import psutil

        self.label = label
        self.port = free_port()
        full = {
            **os.environ,
            "FR_SERVE_GRPC_PORT": str(self.port),
            "FR_SERVE_METRICS_PORT": "-1",
            "FR_SERVE_HTTP_PORT": "0",
            "FR_SERVE_QUERYLOG_PATH": "",
            "FR_SERVE_QUERYLOG_INDEX": "",
            "FR_SERVE_REGISTRY_POLL_S": "3600",
            "FR_SERVE_BACKEND": "onnx",
            "FR_SERVE_MODEL": "",
            "FR_MODEL_QUERY_ENCODER": "onnx",
            **env,
        }
        self.env = env
        self.log = work / f"sidecar-{label.replace(' ', '_').replace('/', '_')}.log"
        code = BLOCK_TORCH + "from cli.main import main\nsys.exit(main(['serve']))\n"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], env=full, cwd=str(REPO), stdout=open(self.log, "w"), stderr=subprocess.STDOUT
        )
        self.ps = psutil.Process(self.proc.pid)
        self.target = f"127.0.0.1:{self.port}"
        self.rss: dict[str, int] = {}

    def wait_serving(self, timeout: float = 300.0) -> None:
        import grpc

        from reranker.client import RerankerClient

        end = time.monotonic() + timeout
        with RerankerClient(self.target) as c:
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    sys.exit(f"sidecar {self.label} exited:\n{self.log.read_text()[-4000:]}")
                try:
                    if c.health() == "SERVING":
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.3)
        sys.exit(f"sidecar {self.label} did not start within {timeout} s:\n{self.log.read_text()[-4000:]}")

    def memory(self) -> int:
        return self.ps.memory_info().rss

    def torch_mapped(self) -> bool:
        """True when any torch library is mapped into the process."""
        try:
            maps = Path(f"/proc/{self.proc.pid}/maps").read_text()
        except OSError:
            return False
        return "libtorch" in maps or "/torch/lib/" in maps

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ------------------------------------------------------------------------------------------ OpenSearch
class SearchSetup:
    """OpenSearch for Search: the running node (or one started here) and the bench's index alias."""

    def __init__(self, args):
        from fashion_rerank.opensearch import make_client
        from fashion_rerank.settings import OpenSearchSettings

        self.args = args
        self.settings = OpenSearchSettings()
        self.url = self.settings.url
        self.client = make_client(self.settings, max_retries=0)
        self.started_node = False
        self.created: list[str] = []
        self.version = None
        self.count = 0
        self.build_s = 0.0

    def _up(self) -> bool:
        try:
            self.version = self.client.info()["version"]["number"]
            return True
        except Exception:  # noqa: BLE001 - not reachable
            return False

    def start(self) -> None:
        from indexer.index import alias_indices, managed_indices

        if not self._up():
            print(f"no OpenSearch answers at {self.url}: starting the local node ...", flush=True)
            subprocess.run([sys.executable, "-m", "cli.main", "opensearch", "start"], cwd=str(REPO), check=True)
            self.started_node = True
            end = time.monotonic() + 300
            while not self._up():
                if time.monotonic() > end:
                    sys.exit("OpenSearch did not come up")
                time.sleep(2)
        alias = self.args.alias
        have = alias_indices(self.client, alias)
        if have:
            self.count = int(self.client.count(index=alias)["count"])
            print(f"reusing alias {alias} -> {', '.join(have)} ({self.count} products)", flush=True)
            return
        before = set(managed_indices(self.client, alias))
        print(f"indexing {self.args.index_limit} Myntra products behind alias {alias} ...", flush=True)
        t0 = time.monotonic()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli.main",
                "index",
                "build",
                "--catalog",
                "myntra",
                "--limit",
                str(self.args.index_limit),
                "--alias",
                alias,
            ],
            cwd=str(REPO),
            capture_output=True,
            text=True,
        )
        self.build_s = time.monotonic() - t0
        self.created = sorted(set(managed_indices(self.client, alias)) - before)
        if r.returncode != 0:
            self.cleanup()
            sys.exit(f"index build failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        self.count = int(self.client.count(index=alias)["count"])
        print(f"  indexed {self.count} products into {', '.join(self.created)} in {self.build_s:.0f} s", flush=True)

    def cleanup(self) -> None:
        if self.created and not self.args.keep_index:
            for name in self.created:
                try:
                    self.client.indices.delete(index=name)
                except Exception as exc:  # noqa: BLE001
                    print(f"could not delete index {name}: {exc}")
            print(f"deleted the bench's indices: {', '.join(self.created)}")
        elif self.created:
            print(f"kept the bench's indices (--keep-index): {', '.join(self.created)} behind alias {self.args.alias}")
        if self.started_node:
            subprocess.run([sys.executable, "-m", "cli.main", "opensearch", "stop"], cwd=str(REPO))
            print("stopped the OpenSearch node the bench started")

    def knn_requests(self, bi_dir: Path, candidates: int) -> list[tuple[str, list[str]]]:
        """(query, texts of the top `candidates` kNN hits): what Search reranks for each bench query."""
        from fashion_rerank.onnx_embedding import OnnxBiEncoder
        from fashion_rerank.retrieval import knn_search
        from fashion_rerank.schema import schema_from_settings
        from fashion_rerank.settings import IndexSettings

        enc = OnnxBiEncoder(bi_dir)
        schema = schema_from_settings(IndexSettings())
        self.vector_field = schema.vector_field
        self.vectors = {}
        out = []
        for q in QUERIES:
            self.vectors[q] = enc.encode_query(q)
            hits = knn_search(self.client, self.args.alias, self.vectors[q], candidates, vector_field=schema.vector_field)
            out.append((q, [schema.text(h.id, h.source) for h in hits]))
        return out

    def node_pid(self) -> int | None:
        """Pid of the process listening on the OpenSearch port of this machine, if any (for CPU accounting)."""
        from urllib.parse import urlparse

        import psutil

        u = urlparse(self.url)
        if u.hostname not in ("localhost", "127.0.0.1", "::1"):
            return None
        port = u.port or 9200
        try:
            for c in psutil.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                    return c.pid
        except (psutil.Error, OSError):
            pass
        return None

    def knn_call(self, i: int, k: int) -> dict:
        """The kNN request Search sends, from here (opensearch-py): client time and OpenSearch's own `took`."""
        from fashion_rerank.retrieval import knn_query

        q = QUERIES[i % len(QUERIES)]
        body = knn_query(self.vectors[q], k, None, self.vector_field)
        t0 = time.perf_counter()
        r = self.client.search(index=self.args.alias, body=body)
        return {"ms": (time.perf_counter() - t0) * 1e3, "took_ms": float(r.get("took", 0))}


# ------------------------------------------------------------------------------------------ figures
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile q (0..1) of `values`."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))] if s else float("nan")


def summary(ms: list[float], pairs: int, foreign: list[float], quiet_share: float, cpu: list[float]) -> dict:
    quiet = [m for m, f in zip(ms, foreign) if f < quiet_share]
    return {
        "cpu_p50_ms": statistics.median(cpu) if cpu else None,
        "p50_ms": statistics.median(ms),
        "p95_ms": pct(ms, 0.95),
        "min_ms": min(ms),
        "mean_ms": statistics.fmean(ms),
        "pairs_per_s": pairs / (statistics.fmean(ms) / 1e3) if pairs else None,
        "n": len(ms),
        "foreign_share_p50": statistics.median(foreign) if foreign else None,
        "quiet_p50_ms": statistics.median(quiet) if quiet else None,
        "quiet_n": len(quiet),
    }


def run_load(target: str, requests: list, clients: int, duration_s: float) -> dict:
    """`clients` threads, each with its own channel, calling Rerank back to back for `duration_s`."""
    import grpc

    from reranker.client import RerankerClient

    lat: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start_evt = threading.Barrier(clients + 1, timeout=120)
    t_stop = [0.0]
    finished = [0.0]

    def client(k: int) -> None:
        with RerankerClient(target, timeout=300) as c:
            c.health()
            start_evt.wait()
            i = k
            while time.perf_counter() < t_stop[0]:
                q, d = requests[i % len(requests)]
                i += clients
                t0 = time.perf_counter()
                try:
                    c.rerank(q, d)
                    ok = True
                except grpc.RpcError as exc:
                    ok = False
                    err = f"{exc.code().name}: {exc.details()}"
                t1 = time.perf_counter()
                with lock:
                    if ok:
                        lat.append((t1 - t0) * 1e3)
                    else:
                        failures.append(err)
                    finished[0] = max(finished[0], t1)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    t_stop[0] = time.perf_counter() + 1e9
    start_evt.wait()
    t0 = time.perf_counter()
    t_stop[0] = t0 + duration_s
    for t in threads:
        t.join()
    wall = max(1e-9, finished[0] - t0)
    return {"latencies_ms": lat, "failures": failures, "wall_s": wall, "completed": len(lat)}


class RssSampler:
    """Peak RSS of some processes, sampled every 20 ms in a thread."""

    def __init__(self, sidecars):
        self.sidecars = sidecars
        self.peak = {s.label: 0 for s in sidecars}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for s in self.sidecars:
                try:
                    self.peak[s.label] = max(self.peak[s.label], s.memory())
                except Exception:  # noqa: BLE001
                    pass
            time.sleep(0.02)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def mib(b: int | float | None) -> str:
    return "-" if b is None else f"{b / 2**20:.0f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "NOT MET")


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-requests", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="fewer requests and shorter load runs (a couple of minutes)")
    ap.add_argument("--requests", type=int, default=None, help="timed requests per single-client path (default 30; quick 10)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up requests per path (default 3; cached paths: every query)")
    ap.add_argument(
        "--knn-warmup",
        type=int,
        default=100,
        help="kNN requests sent to OpenSearch before any timed path (steady state: a fresh node's JVM and a new "
        "index answer their first requests slower; default 100)",
    )
    ap.add_argument("--block", type=int, default=5, help="requests per path per turn (default 5)")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads in all (default: CPU quota)")
    ap.add_argument("--registry", default=None, help="benchmark this registry's current model (copied, never written)")
    ap.add_argument("--model-name", default=None, help="model name in the registry (default fashion-ce)")
    ap.add_argument("--judgments", default=None, help="judgments store for the ONNX gate (default: the model card's)")
    ap.add_argument("--judge-model", default=None, help="judge model of those judgments (default: the model card's)")
    ap.add_argument("--regate", action="store_true", help="re-export and re-gate even when the version carries onnx/")
    ap.add_argument("--reexport", action="store_true", help="do not reuse the cached export")
    ap.add_argument("--clients", default="1,4,16", help="concurrent clients of the load runs (default 1,4,16)")
    ap.add_argument("--load-seconds", type=float, default=None, help="seconds per load run (default 6; quick 4)")
    ap.add_argument("--load-rounds", type=int, default=None, help="rounds of the load runs (default 3; quick 1)")
    ap.add_argument("--no-search", action="store_true", help="skip OpenSearch and every Search figure")
    ap.add_argument("--no-swap", action="store_true", help="skip the hot-swap memory measurement")
    ap.add_argument("--alias", default="bench-products", help="index alias for Search (default bench-products)")
    ap.add_argument("--index-limit", type=int, default=20_000, help="products indexed when the alias is missing")
    ap.add_argument("--keep-index", action="store_true", help="keep the indices the bench created")
    ap.add_argument("--quiet-share", type=float, default=0.15, help="'quiet': other processes used < this share of the CPUs")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    from fashion_rerank.hardware import cpu_quota

    threads = args.threads or cpu_quota()
    if args.worker:
        return worker_main(args.worker, args.worker_requests, threads)
    n_req = args.requests or (10 if args.quick else 30)
    load_s = args.load_seconds or (4.0 if args.quick else 6.0)
    rounds = args.load_rounds or (1 if args.quick else 3)
    levels = [int(x) for x in args.clients.split(",") if x]

    import numpy as np

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally`: stop sidecars, delete indices
    t_begin = time.monotonic()
    machine = machine_info()
    software = software_versions()
    work = Path(tempfile.mkdtemp(prefix="rerank-bench-"))
    sidecars: list[Sidecar] = []
    search: SearchSetup | None = None
    worker = None
    cores = []
    result: dict = {"machine": machine, "software": software}
    try:
        model = prepare_model(args, work)
        result["model"] = {k: v for k, v in model.items() if k != "variants"}
        gate = model["gate"]
        served = gate.get("serve", "fp32")
        # fp32 and the quantized variant the gate serves (else the default int8 graph, for comparison)
        quantized = served if served != "fp32" else "int8"
        variants = [v for v in ("fp32", quantized) if v in model["variants"]]
        from fashion_rerank.onnx_cache import ensure_bi_encoder_onnx
        from fashion_rerank.registry import ModelRegistry
        from fashion_rerank.settings import ModelSettings

        bi_dir = ensure_bi_encoder_onnx(ModelSettings().bi_encoder, ModelSettings().bi_encoder_onnx or None)
        reg = ModelRegistry(model["registry"], model["name"])
        requests = build_requests(args.candidates)

        if not args.no_search:
            search = SearchSetup(args)
            search.start()
        # ---- sidecars (all at once; each waits idle while others are timed)
        base = {
            "FR_MODEL_REGISTRY_DIR": model["registry"],
            "FR_MODEL_NAME": model["name"],
            "FR_MODEL_BI_ENCODER_ONNX": str(bi_dir),
            "FR_SERVE_THREADS": str(threads),
        }
        if search:
            base.update(OPENSEARCH_URL=search.url, OPENSEARCH_INDEX_ALIAS=args.alias)
        no_cache = {"FR_SERVE_SCORE_CACHE_ENTRIES": "0"}
        sc: dict[str, Sidecar] = {}

        def start_sidecar(key: str, label: str, env: dict) -> None:
            sc[key] = Sidecar(label, env, work)
            sidecars.append(sc[key])  # stopped in `finally` whatever happens next

        for v in variants:
            start_sidecar(v, f"{v}", {**base, **no_cache, "FR_SERVE_ONNX_VARIANT": v})
        start_sidecar("w1", f"{served} 1 worker", {**base, **no_cache, "FR_SERVE_WORKERS": "1", "FR_SERVE_ONNX_VARIANT": served})
        # the sidecar as configured by default (gate's variant, score cache on): cache hits, memory, hot swap
        start_sidecar("default", "default", {**base, "FR_SERVE_REGISTRY_POLL_S": "0.5"})
        if search:
            empty = work / "empty-registry"
            empty.mkdir()
            start_sidecar("knn", "no model", {**base, "FR_MODEL_REGISTRY_DIR": str(empty)})
            # Search as before the document cache: every candidate's _source from the kNN answer
            start_sidecar(
                "nodocs",
                f"{served} no document cache",
                {**base, **no_cache, "FR_SERVE_ONNX_VARIANT": served, "FR_SERVE_DOCUMENT_CACHE_ENTRIES": "0"},
            )

        # ---- in-process ONNX paths and the torch worker, while the sidecars start
        from fashion_rerank.settings import ServeSettings
        from reranker.backends import load_backend
        from reranker.core import ScoringCore

        bare = {v: load_backend("onnx", model["folder"], version=model["version"], threads=threads, variant=v) for v in variants}
        for v in variants:
            s = ServeSettings(
                backend="onnx",
                onnx_variant=v,
                threads=threads,
                workers=1,
                score_cache_entries=0,
                registry_poll_s=3600,
                max_documents=max(1000, args.candidates),
                queue_pairs=max(4000, args.candidates),
                querylog_path=None,
                querylog_index=None,
            )
            core = ScoringCore(s, reg)
            core.start()
            cores.append((v, core))
        core_of = dict(cores)
        worker = TorchWorker(model["folder"], requests, threads, work)
        for s in sidecars:
            s.wait_serving()
        knn_reqs = search.knn_requests(bi_dir, args.candidates) if search else []
        enc = bare["fp32"].encode([q for q, d in requests for _ in d], [t for _, d in requests for t in d])
        tok_mean, tok_max = float(enc.lengths.mean()), int(enc.lengths.max())
        if knn_reqs:
            enc2 = bare["fp32"].encode([q for q, d in knn_reqs for _ in d], [t for _, d in knn_reqs for t in d])
            knn_tok = float(enc2.lengths.mean())
            knn_cands = [len(d) for _, d in knn_reqs]
        meter = CpuMeter()
        meter.add(worker.proc.pid)
        for s in sidecars:
            meter.add(s.proc.pid)
        os_pid = search.node_pid() if search else None
        meter.add(os_pid)

        from reranker.client import RerankerClient

        clients = {k: RerankerClient(s.target, timeout=300) for k, s in sc.items()}
        g = served if served in sc else "fp32"

        def grpc_path(key, reqs):
            def call(i):
                q, d = reqs[i % len(reqs)]
                t0 = time.perf_counter()
                r = clients[key].rerank(q, d)
                ms = (time.perf_counter() - t0) * 1e3
                lg = np.zeros(len(d), np.float32)
                for x in r.results:
                    lg[x.index] = x.logit
                t = r.timings
                return {
                    "ms": ms,
                    "logits": lg,
                    "server_total_ms": t.total_ms,
                    "inference_ms": t.inference_ms,
                    "version": r.model_version,
                }

            return call

        def search_path(key):
            def call(i):
                q = QUERIES[i % len(QUERIES)]
                t0 = time.perf_counter()
                r = clients[key].search(q, top_k=args.candidates, top_n=10)
                ms = (time.perf_counter() - t0) * 1e3
                t = r.timings
                return {
                    "ms": ms,
                    "reranked": r.reranked,
                    "candidates": r.candidates,
                    "embedding_ms": t.embedding_ms,
                    "knn_ms": t.knn_ms,
                    "queue_ms": t.queue_ms,
                    "tokenization_ms": t.tokenization_ms,
                    "inference_ms": t.inference_ms,
                    "server_total_ms": t.total_ms,
                    "version": r.model_version,
                }

            return call

        def local(fn, reqs):
            def call(i):
                q, d = reqs[i % len(reqs)]
                t0 = time.perf_counter()
                out = fn(q, d)
                return {"ms": (time.perf_counter() - t0) * 1e3, "logits": np.asarray(out, np.float32)}

            return call

        def worker_path(p):
            def call(i):
                r = worker.call(p, i % len(requests))
                return {"ms": r["ms"], "logits": np.asarray(r["logits"], np.float32)}

            return call

        ref = "CrossEncoder.predict(batch_size=32)"
        paths: dict[str, callable] = {ref: worker_path("predict"), "torch backend (Backend.score)": worker_path("torch")}
        for v in variants:
            paths[f"onnx {v}: backend (OnnxBackend.score)"] = local(bare[v].score, requests)
            paths[f"onnx {v}: scoring core (submit().result())"] = local(
                lambda q, d, c=core_of[v]: c.submit(q, d).result().logits, requests
            )
            paths[f"onnx {v}: gRPC Rerank"] = grpc_path(v, requests)
        cached_name = f"gRPC Rerank, repeated request (score cache hit, {served})"
        paths[cached_name] = grpc_path("default", requests)
        if search:
            paths[f"gRPC Rerank, Search's kNN candidates ({g})"] = grpc_path(g, knn_reqs)
            paths[f"Search: embed + kNN + rerank ({g})"] = search_path(g)
            paths[DOCS_OFF] = search_path("nodocs")
            paths["Search: embed + kNN + rerank, cache hit"] = search_path("default")
            paths["Search: kNN only (no model)"] = search_path("knn")
            paths["OpenSearch kNN request alone (from the bench)"] = lambda i: search.knn_call(i, args.candidates)

        # ---- warm-up: `--warmup` requests per path; every query once on the cached paths (primes the score cache)
        # and on the Search paths (primes the document cache: the steady state of a sidecar that has served its
        # catalog's products before; DOCS_OFF is the same Search without that cache)
        print(
            f"\nmodel {model['source']} ({model['version']}); ONNX variants {', '.join(variants)}, gate serves {served}; "
            f"{len(requests)} queries x {args.candidates} candidates, {tok_mean:.1f} tokens per pair (max {tok_max}); "
            f"threads {threads}; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        t_w = time.monotonic()
        if search:  # a node just started (or an index just built) answers its first kNN requests 1.5-2x slower
            for i in range(args.knn_warmup):
                search.knn_call(i % len(QUERIES), args.candidates)
        for name, fn in paths.items():
            every = "cache hit" in name or name.startswith("Search")
            for i in range(len(QUERIES) if every else min(args.warmup, len(QUERIES))):
                fn(i)
        print(f"warm-up: {time.monotonic() - t_w:.0f} s", flush=True)
        for s in sidecars:
            s.rss["warm"] = s.memory()

        # ---- timed single-client paths, interleaved in blocks
        times: dict[str, list[float]] = {k: [] for k in paths}
        foreign: dict[str, list[float]] = {k: [] for k in paths}
        cpu: dict[str, list[float]] = {k: [] for k in paths}
        extra: dict[str, list[dict]] = {k: [] for k in paths}
        logits: dict[str, dict[int, np.ndarray]] = {k: {} for k in paths}  # first logits of each query, per path
        loads = []
        t_t = time.monotonic()
        done = 0
        while done < n_req:
            n = min(args.block, n_req - done)
            for name, fn in paths.items():
                for i in range(done, done + n):
                    a = meter.snapshot()
                    r = fn(i)
                    b = meter.snapshot()
                    times[name].append(r["ms"])
                    foreign[name].append(CpuMeter.foreign_share(a, b))
                    cpu[name].append(b[2] - a[2])
                    extra[name].append({k: v for k, v in r.items() if k != "logits"})
                    if "logits" in r:
                        logits[name].setdefault(i % len(QUERIES), r["logits"])
            loads.append(os.getloadavg()[0])
            done += n
        timed_s = time.monotonic() - t_t
        for s in sidecars:
            s.rss["after_single"] = s.memory()
        rows = {
            k: summary(v, 0 if ("kNN only" in k or "kNN request" in k) else args.candidates, foreign[k], args.quiet_share, cpu[k])
            for k, v in times.items()
        }
        ref_p50 = rows[ref]["p50_ms"]

        # ---- score checks (the first timed result of each query on each path)
        qs = sorted(logits[ref])
        diffs = {}
        for name, lg in logits.items():
            if name == ref or not lg or "kNN candidates" in name:
                continue
            diffs[name] = float(max(np.abs(lg[i] - logits[ref][i]).max() for i in qs))
        from fashion_rerank.onnx_export import agreement

        agree = {}
        if quantized in variants:
            agree[f"{quantized} vs fp32"] = agreement(
                [logits["onnx fp32: backend (OnnxBackend.score)"][i] for i in qs],
                [logits[f"onnx {quantized}: backend (OnnxBackend.score)"][i] for i in qs],
            )
        hits = sum(1 for e in extra[cached_name] if e["inference_ms"] == 0.0)

        # ---- concurrency: two worker layouts, interleaved, repeated
        layouts = {DEFAULT_LAYOUT: sc[g], ONE_WORKER: sc["w1"]}
        load_res: dict[tuple[str, int], list[dict]] = {}
        t_l = time.monotonic()
        with RssSampler([sc[g], sc["w1"]]) as sampler:
            for _ in range(rounds):
                for c in levels:
                    for lname, s in layouts.items():
                        a = meter.snapshot()
                        c0 = sum(s.ps.cpu_times()[:2])
                        r = run_load(s.target, requests, c, load_s)
                        r["sidecar_cpu_s"] = sum(s.ps.cpu_times()[:2]) - c0
                        r["foreign"] = CpuMeter.foreign_share(a, meter.snapshot())
                        load_res.setdefault((lname, c), []).append(r)
        load_s_total = time.monotonic() - t_l
        for s in sidecars:
            s.rss["after_load"] = s.memory()
        conc = {}
        for (lname, c), rs in load_res.items():
            lat = [x for r in rs for x in r["latencies_ms"]]
            conc[(lname, c)] = {
                "clients": c,
                "layout": lname,
                "completed": sum(r["completed"] for r in rs),
                "failed": sum(len(r["failures"]) for r in rs),
                "failures": [f for r in rs for f in r["failures"]][:5],
                "p50_ms": statistics.median(lat) if lat else None,
                "p99_ms": pct(lat, 0.99) if lat else None,
                "rps": sum(r["completed"] for r in rs) / sum(r["wall_s"] for r in rs),
                "rps_rounds": [r["completed"] / r["wall_s"] for r in rs],
                "foreign_share": statistics.fmean(r["foreign"] for r in rs),
                "sidecar_cpu_ms_per_request": 1e3 * sum(r["sidecar_cpu_s"] for r in rs) / max(1, sum(r["completed"] for r in rs)),
            }
        peak_load = dict(sampler.peak)

        # ---- hot swap on the default sidecar, under traffic
        swap = None
        if not args.no_swap:
            sd = sc["default"]
            rss_before = sd.memory()
            with RssSampler([sd]) as sw:
                new_version = copy_and_promote(reg)
                t0 = time.monotonic()
                seen = ""
                q0, d0 = requests[0]
                while not seen.startswith(new_version) and time.monotonic() - t0 < 300:
                    seen = clients["default"].rerank(q0, d0).model_version
                swap_s = time.monotonic() - t0
                for _ in range(3):
                    clients["default"].rerank(q0, d0)
            swap = {"before": rss_before, "peak": sw.peak[sd.label], "after": sd.memory(), "seconds": swap_s, "version": seen}
        torch_mapped = {s.label: s.torch_mapped() for s in sidecars}
        for c in clients.values():
            c.close()
    finally:
        for _, core in cores:
            try:
                core.stop(5.0)
            except Exception:  # noqa: BLE001
                pass
        if worker is not None:
            worker.close()
        for s in sidecars:
            s.stop()
        if search is not None:
            search.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    # ------------------------------------------------------------------ report
    m = machine
    print("\n" + "=" * 118)
    print(
        f"machine: {m['cpu']} ({m['vendor']} family {m['family']} model {m['model']}"
        f"{', ' + m['generation'] if m['generation'] else ''}), {m['cpus']} CPUs (quota {m['cpu_quota']})"
        f"{' under a hypervisor' if m['hypervisor'] else ''}, {m['mem_gib']} GiB, kernel {m['kernel']}"
    )
    print(f"  SIMD: {' '.join(m['simd'])}")
    la0, la1 = m["loadavg_start"], os.getloadavg()
    print(
        f"  load average (1/5/15 min) at start {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}, at end {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f}; "
        f"1-min load during the timed paths {min(loads):.2f}-{max(loads):.2f}"
    )
    print(
        "software: " + ", ".join(f"{k} {v}" for k, v in software.items()) + (f", OpenSearch {search.version}" if search else "")
    )
    print(f"model: {model['source']} version {model['version']}; ONNX files: {model['export_how']}")
    ev = (gate.get("evidence") or {}).get("agreement") or {}
    refused = (gate.get("evidence") or {}).get("refused") or {}
    print(f"quality gate: serves {served} (allowed: {', '.join(gate.get('allowed', []))}); {gate.get('decided_by', '')}")
    for v in sorted(set(variants) | set(ev), key=lambda n: (n != "fp32", n)):
        a = ev.get(v) or {}
        nd = f"held-out nDCG@10 {a['ndcg10']:.4f}" if a.get("ndcg10") is not None else "no judged nDCG"
        extra_s = f", score std {a['std_ratio']:.2f} x fp32's" if a.get("std_ratio") is not None else ""
        print(f"  {v:<10} {nd}{extra_s}{'; refused: ' + refused[v] if v in refused else ''}")
    judged_n = next((a["judged_pairs"] for a in ev.values() if (a or {}).get("judged_pairs")), None)
    if judged_n:
        print(f"  ({judged_n} judged held-out pairs)")
    print(
        f"requests: {len(requests)} queries x {args.candidates} Myntra candidates (word-overlap pick), {tok_mean:.1f} tokens per pair "
        f"(max {tok_max})"
        + (
            f"; Search's kNN candidates: {statistics.fmean(knn_cands):.0f} per query, {knn_tok:.1f} tokens per pair"
            if search
            else ""
        )
    )
    if search:
        print(
            f"index: alias {args.alias}, {search.count} products"
            + (f" (built in {search.build_s:.0f} s)" if search.build_s else " (reused)")
        )
    print(
        f"\nsingle client: {n_req} timed requests per path after a warm-up of {args.warmup} (cache-hit and Search paths: {len(QUERIES)}, every query), in blocks of {args.block}, paths in turn "
        f"({timed_s:.0f} s); threads {threads}; score cache off except where it says cache hit"
    )
    print(
        "cpu ms: CPU time the bench, the torch worker"
        + (", the sidecars and the OpenSearch node" if os_pid else " and the sidecars")
        + " used per request (median); "
        f"others: CPU share\nthe rest of the machine used meanwhile (median); quiet: p50 over requests with others < {args.quiet_share:.0%}"
    )
    hdr = f"{'path':<56} {'p50 ms':>8} {'p95 ms':>8} {'pairs/s':>8} {'p50/ref':>8} {'speed-up':>9} {'cpu ms':>7} {'others':>7} {'quiet p50 (n)':>14}"
    print(hdr)
    print("-" * len(hdr))
    for k, r in rows.items():
        ratio = r["p50_ms"] / ref_p50 if not k.startswith(("Search", "OpenSearch")) else None
        qp = f"{r['quiet_p50_ms']:8.1f} ({r['quiet_n']:3d})" if r["quiet_p50_ms"] is not None else "       - (  0)"
        pps = f"{r['pairs_per_s']:8.0f}" if r["pairs_per_s"] else f"{'-':>8}"
        print(
            f"{k:<56} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {pps} "
            + (f"{ratio:8.3f} {1 / ratio:8.1f}x" if ratio else f"{'-':>8} {'-':>9}")
            + f" {r['cpu_p50_ms']:7.0f} {r['foreign_share_p50']:7.0%} {qp}"
        )
    print(f"(p50/ref and speed-up against {ref}, same run)")
    print(f"max |logit - CrossEncoder.predict| over {len(qs)} requests: " + "; ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    if agree:
        a = agree["int8 vs fp32"]
        print(
            f"int8 vs fp32 on these requests: top-10 overlap {a['top10_overlap']:.2f}, Spearman {a['spearman']:.3f}, "
            f"max |logit diff| {a['max_abs_diff']:.2f}"
        )
    print(f"cache: {hits} of {len(extra[cached_name])} timed repeated requests were answered from the score cache")

    # gRPC overhead: client latency minus the server core's total
    gname = f"onnx {g}: gRPC Rerank"
    overhead = [e["ms"] - e["server_total_ms"] for e in extra[gname]]
    print(
        f"gRPC overhead ({g}, per call: client latency - server core total): p50 {statistics.median(overhead):.1f} ms, "
        f"p95 {pct(overhead, 0.95):.1f} ms; core in-process vs gRPC p50: "
        f"{rows[f'onnx {g}: scoring core (submit().result())']['p50_ms']:.1f} vs {rows[gname]['p50_ms']:.1f} ms"
    )
    search_fig = {}
    if search:
        sname, kname, rname = (
            f"Search: embed + kNN + rerank ({g})",
            "Search: kNN only (no model)",
            f"gRPC Rerank, Search's kNN candidates ({g})",
        )
        print("\nSearch, server-side stages (p50 ms over the timed calls):")
        print(
            f"{'path':<52} {'embed':>7} {'kNN':>7} {'queue':>7} {'tokenize':>9} {'inference':>10} {'server':>8} {'client':>8} {'reranked':>9}"
        )
        for k in (sname, DOCS_OFF, "Search: embed + kNN + rerank, cache hit", kname):
            e = extra[k]

            def med(f, e=e):
                return statistics.median(x[f] for x in e)

            print(
                f"{k:<52} {med('embedding_ms'):7.1f} {med('knn_ms'):7.1f} {med('queue_ms'):7.1f} {med('tokenization_ms'):9.1f} "
                f"{med('inference_ms'):10.1f} {med('server_total_ms'):8.1f} {rows[k]['p50_ms']:8.1f} {sum(x['reranked'] for x in e):4d}/{len(e)}"
            )
        rerank_part = [x["queue_ms"] + x["tokenization_ms"] + x["inference_ms"] for x in extra[sname]]
        non_rerank = [x["ms"] - rp for x, rp in zip(extra[sname], rerank_part)]
        search_fig = {
            "search_p50_ms": rows[sname]["p50_ms"],
            "rerank_same_candidates_p50_ms": rows[rname]["p50_ms"],
            "difference_p50_ms": rows[sname]["p50_ms"] - rows[rname]["p50_ms"],
            "per_call_non_rerank_p50_ms": statistics.median(non_rerank),
            "knn_only_p50_ms": rows[kname]["p50_ms"],
            "document_cache_off_per_call_non_rerank_p50_ms": statistics.median(
                x["ms"] - x["queue_ms"] - x["tokenization_ms"] - x["inference_ms"] for x in extra[DOCS_OFF]
            ),
        }
        print(
            f"Search + rerank p50 {search_fig['search_p50_ms']:.1f} ms vs Rerank of the same candidates p50 "
            f"{search_fig['rerank_same_candidates_p50_ms']:.1f} ms: {search_fig['difference_p50_ms']:+.1f} ms; per call, Search latency "
            f"minus its own rerank (queue+tokenize+inference): p50 {search_fig['per_call_non_rerank_p50_ms']:.1f} ms "
            f"(document cache off: {search_fig['document_cache_off_per_call_non_rerank_p50_ms']:.1f} ms)"
        )
        oname = "OpenSearch kNN request alone (from the bench)"
        took = [x["took_ms"] for x in extra[oname]]
        search_fig["opensearch_alone_p50_ms"] = rows[oname]["p50_ms"]
        search_fig["opensearch_took_p50_ms"] = statistics.median(took)
        print(
            f"the kNN request alone (top {args.candidates}, opensearch-py from the bench): p50 {rows[oname]['p50_ms']:.1f} ms, "
            f"of which OpenSearch's own 'took' p50 {statistics.median(took):.0f} ms (the rest: HTTP, JSON of {args.candidates} "
            "hits' _source, client)"
        )

    print(
        f"\nconcurrent clients: Rerank of {args.candidates} candidates ({g}, score cache off), {load_s:.0f} s per run, "
        f"{rounds} round(s), layouts interleaved ({load_s_total:.0f} s); cpu ms/req: the sidecar's CPU time per answered request"
    )
    h2 = f"{'layout':<22} {'clients':>7} {'requests':>9} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'req/s per round':>18} {'cpu ms/req':>11} {'others':>7}"
    print(h2)
    print("-" * len(h2))
    for c in levels:
        for lname in layouts:
            r = conc[(lname, c)]
            print(
                f"{lname:<22} {c:7d} {r['completed']:9d} {r['failed']:7d} {r['p50_ms'] or 0:8.1f} {r['p99_ms'] or 0:8.1f} "
                f"{r['rps']:7.2f} {' '.join(f'{x:.2f}' for x in r['rps_rounds']):>18} {r['sidecar_cpu_ms_per_request']:11.0f} "
                f"{r['foreign_share']:7.0%}"
            )
    for (lname, c), r in conc.items():
        if r["failures"]:
            print(f"  failures ({lname}, {c} clients): {r['failures']}")

    print("\nsidecar resident memory (MiB; torch blocked in every sidecar; ONNX bi-encoder loaded in each):")
    print(
        f"{'sidecar':<14} {'after warm-up':>14} {'after single':>13} {'peak in load':>13} {'after load':>11} {'torch mapped':>13}"
    )
    for s in sidecars:
        pk = peak_load.get(s.label)
        print(
            f"{s.label:<14} {mib(s.rss.get('warm')):>14} {mib(s.rss.get('after_single')):>13} {mib(pk) if pk else '-':>13} "
            f"{mib(s.rss.get('after_load')):>11} {str(torch_mapped[s.label]):>13}"
        )
    if swap:
        print(
            f"hot swap (default sidecar, under traffic): RSS {mib(swap['before'])} -> peak {mib(swap['peak'])} MiB "
            f"({swap['peak'] / swap['before']:.2f}x), after {mib(swap['after'])} MiB; new version served after {swap['seconds']:.1f} s"
        )

    # ------------------------------------------------------------------ targets
    grpc_p50 = rows[gname]["p50_ms"]
    cached_p50 = rows[cached_name]["p50_ms"]
    rss_serving = max(
        [s.rss.get(k, 0) for s in (sc[g], sc["default"]) for k in ("warm", "after_single", "after_load")]
        + [peak_load.get(sc[g].label, 0)]
    )
    c1 = conc.get((DEFAULT_LAYOUT, 1))
    c16 = conc.get((DEFAULT_LAYOUT, 16))
    targets = [
        (
            f"gRPC Rerank p50 ({g}, the gate's variant) <= {TARGET_GRPC_P50_MS:.0f} ms",
            f"{grpc_p50:.1f} ms",
            grpc_p50 <= TARGET_GRPC_P50_MS,
        ),
        (
            f"gRPC Rerank >= {TARGET_SPEEDUP:.0f}x faster than CrossEncoder.predict at p50",
            f"{ref_p50 / grpc_p50:.2f}x",
            ref_p50 / grpc_p50 >= TARGET_SPEEDUP,
        ),
        (
            f"repeated (cached) request p50 <= {TARGET_CACHED_P50_MS:.0f} ms",
            f"{cached_p50:.1f} ms",
            cached_p50 <= TARGET_CACHED_P50_MS,
        ),
    ]
    for v in variants:
        if v != g:
            p = rows[f"onnx {v}: gRPC Rerank"]["p50_ms"]
            targets.append(
                (f"  (for comparison: gRPC Rerank p50 with {v}, not the gate's choice)", f"{p:.1f} ms, {ref_p50 / p:.2f}x", None)
            )
    if search:
        k = search_fig["knn_only_p50_ms"]
        targets.append(
            (
                f"kNN-only Search p50, one client <= {TARGET_KNN_SEARCH_P50_MS:.0f} ms",
                f"{k:.1f} ms",
                k <= TARGET_KNN_SEARCH_P50_MS,
            )
        )
        d = search_fig["per_call_non_rerank_p50_ms"]
        targets.append(
            (
                f"Search with rerank <= its rerank time + {TARGET_SEARCH_OVER_RERANK_MS:.0f} ms (per call, p50)",
                f"+{d:.1f} ms (difference of the p50s vs Rerank of the same candidates: {search_fig['difference_p50_ms']:+.1f} ms)",
                d <= TARGET_SEARCH_OVER_RERANK_MS,
            )
        )
    targets.append(
        (
            f"serving RSS (one model + bi-encoder; max after warm-up, in and after the load runs) <= {TARGET_RSS_MB:.0f} MB, "
            "torch not imported",
            f"{rss_serving / 1e6:.0f} MB ({mib(rss_serving)} MiB), torch mapped: {any(torch_mapped.values())}",
            rss_serving / 1e6 <= TARGET_RSS_MB and not any(torch_mapped.values()),
        )
    )
    if c1 and c16:
        targets.append(
            (
                "16 clients >= 1-client requests/s, no failed request (default layout)",
                f"{c16['rps']:.2f} vs {c1['rps']:.2f} req/s, {c16['failed']} failed",
                c16["rps"] >= c1["rps"] and c16["failed"] == 0,
            )
        )
    print("\ntargets (2 cores):")
    for t, val, ok in targets:
        print(f"  {verdict(ok):>8}  {t}: {val}")
    w1 = [conc.get((DEFAULT_LAYOUT, c)) for c in levels]
    w2 = [conc.get((ONE_WORKER, c)) for c in levels]
    if all(w1) and all(w2):
        print(
            f"worker layouts, req/s ({DEFAULT_LAYOUT} vs {ONE_WORKER}): "
            + ", ".join(f"{c} clients {a['rps']:.2f} vs {b['rps']:.2f}" for c, a, b in zip(levels, w1, w2))
            + "; p50 ms: "
            + ", ".join(f"{c} clients {a['p50_ms']:.0f} vs {b['p50_ms']:.0f}" for c, a, b in zip(levels, w1, w2))
        )
    print(f"bench wall time {time.monotonic() - t_begin:.0f} s; load average at the end {os.getloadavg()[0]:.2f}")

    if args.json:
        result.update(
            {
                "rows": rows,
                "reference": ref,
                "served_variant": served,
                "tokens_per_pair": tok_mean,
                "score_diff_vs_predict": diffs,
                "int8_agreement": agree,
                "cache_hits": hits,
                "search": search_fig,
                "concurrency": [v for v in conc.values()],
                "rss": {s.label: s.rss for s in sidecars},
                "rss_peak_load": peak_load,
                "swap": swap,
                "torch_mapped": torch_mapped,
                "targets": [{"target": t, "value": v, "met": ok} for t, v, ok in targets],
                "loadavg_end": os.getloadavg(),
                "loadavg_timed": loads,
            }
        )
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
