"""Processes, ports and checks of `fashion-rerank demo`: starting and stopping the demo's children, waiting
for them, sending Search traffic, and the up-front checks that make a demo fail clearly (busy port, full disk).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tqdm import tqdm

from reranker.client import RerankerClient

#: Free disk space the demo wants before it starts (index ~0.5 GB, model versions ~0.1 GB each,
#: OpenSearch download ~0.43 GB when not cached, logs).
MIN_FREE_BYTES = 2 * 1024**3


class DemoError(RuntimeError):
    """A step could not run; the message says what to do. The demo exits with code 2."""


# -------------------------------------------------------------------------------------------- checks


def check_disk(paths: list[Path], need: int = MIN_FREE_BYTES) -> None:
    """Raise DemoError when a folder the demo writes to has less than `need` bytes free."""
    for p in paths:
        p.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(p).free
        if free < need:
            raise DemoError(
                f"only {free / 1024**3:.1f} GB free on the disk of {p} (the demo needs about {need / 1024**3:.0f} GB "
                "for the index, models and logs): free some space (e.g. `make clean`, old `var/demo`, "
                "`~/.cache/fashion-rerank/embeddings.sqlite`) and run it again"
            )


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port and we may bind it."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _listener_pid(port: int) -> str:
    try:
        import psutil

        for c in psutil.net_connections(kind="tcp"):
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
                return f"pid {c.pid} ({' '.join(psutil.Process(c.pid).cmdline()[:4])})"
    except Exception:  # noqa: BLE001 - only a hint in an error message
        pass
    return "another process"


def claim_port(port: int, what: str, flag: str) -> int:
    """`port`, or a free one when 0. Raises DemoError naming the listener when a fixed port is busy."""
    if port == 0:
        return free_port()
    if not port_free(port):
        raise DemoError(
            f"port {port} for the {what} is already in use by {_listener_pid(port)}. Stop it (a demo left "
            f"running with KEEP_RUNNING=1 is stopped with `kill <pid>`), or pass {flag} <other port> "
            f"({flag} 0 picks a free one)"
        )
    return port


# ------------------------------------------------------------------------------------------ processes


class Background:
    """A child process of the demo with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict[str, str]):
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 20.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def cli_cmd(*args: str) -> list[str]:
    """The `fashion-rerank` command line for `args`, run by this interpreter (works without PATH)."""
    return [sys.executable, "-m", "cli.main", *args]


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100, linear interpolation, numpy's default) or None for no values."""
    if not values:
        return None

    return float(np.percentile(np.asarray(values, dtype=float), q))


# --------------------------------------------------------------------------------------- the sidecar


def external_judge() -> bool:
    """True when OPENAI_BASE_URL and OPENAI_API_KEY are both set: grade with that (real) LLM instead of the
    reference rubric judge."""
    return bool(os.environ.get("OPENAI_BASE_URL") and os.environ.get("OPENAI_API_KEY"))


def wait_serving(target: str, proc: Background | None, timeout_s: float = 240.0) -> None:
    """Wait until the gRPC health service at `target` answers SERVING.

    Raises DemoError with the end of the process log when the process exits or `timeout_s` passes.
    """

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                raise DemoError(
                    f"the {proc.name} exited with code {proc.proc.returncode} while starting; end of its "
                    f"log ({proc.log_path}):\n{proc.tail()}"
                )
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    tail = f"; end of its log ({proc.log_path}):\n{proc.tail()}" if proc else ""
    raise DemoError(f"the sidecar at {target} did not report SERVING within {timeout_s:.0f} s{tail}")


def _hit_dict(hit) -> dict:
    """A SearchHit message -> {id, rank, retrieval_rank, retrieval_score, rerank_score, product: {fields}}."""
    fields = {f.name: getattr(hit.product, f.name) for f in hit.product.DESCRIPTOR.fields}
    return {
        "id": hit.id,
        "rank": hit.rank,
        "retrieval_rank": hit.retrieval_rank,
        "retrieval_score": hit.retrieval_score,
        "rerank_score": hit.rerank_score,
        "product": fields,
    }


def search_many(
    target: str, queries: list[str], top_k: int, top_n: int, concurrency: int, label: str = "search", keep_hits: bool = False
) -> list[dict]:
    """Send each query through the sidecar's `Search` RPC with `concurrency` client threads.

    Returns one dict per query, in input order: {query, ok, ms (client wall time), reranked, model_version,
    error, hits (when keep_hits: see `_hit_dict`)}. Errors are recorded, not raised.
    """

    client = RerankerClient(target)

    def one(q: str) -> dict:
        t = time.perf_counter()
        try:
            resp = client.search(q, top_k=top_k, top_n=top_n)
        except Exception as exc:  # noqa: BLE001 - recorded per call
            return {
                "query": q,
                "ok": False,
                "ms": (time.perf_counter() - t) * 1000,
                "error": str(exc)[:300],
                "reranked": False,
                "model_version": "",
            }
        ms = (time.perf_counter() - t) * 1000
        out = {
            "query": q,
            "ok": True,
            "ms": ms,
            "reranked": bool(resp.reranked),
            "model_version": resp.model_version,
            "error": "",
        }
        if keep_hits:
            out["hits"] = [_hit_dict(h) for h in resp.hits]
        return out

    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=label) as pool:
            return list(
                tqdm(
                    pool.map(one, queries),
                    total=len(queries),
                    desc=f"      {label}",
                    unit="req",
                    file=sys.stdout,
                    mininterval=2.0,
                    dynamic_ncols=True,
                )
            )
    finally:
        with contextlib.suppress(Exception):
            client.close()


def wait_log_lines(path: Path, want: int, timeout_s: float = 30.0) -> int:
    """Wait until the JSONL query log has `want` lines (the sidecar writes it in the background); return the count."""
    deadline = time.monotonic() + timeout_s
    n = 0
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as fh:
                n = sum(1 for _ in fh)
        except FileNotFoundError:
            n = 0
        if n >= want:
            return n
        time.sleep(0.5)
    return n


def wait_http(url: str, proc: Background | None, timeout_s: float = 60.0) -> None:
    """Wait until GET `url` answers 200; DemoError with the process log tail when it exits or times out."""

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise DemoError(
                f"the {proc.name} exited with code {proc.proc.returncode}; end of its log ({proc.log_path}):\n{proc.tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise DemoError(f"{url} did not answer within {timeout_s:.0f} s" + (f"; log {proc.log_path}:\n{proc.tail()}" if proc else ""))


def wait_model(target: str, version: str, proc: Background | None, timeout_s: float = 180.0) -> None:
    """Wait until the sidecar's Search reports `version` as its model (it polls the registry and hot-swaps)."""

    deadline = time.monotonic() + timeout_s
    last = ""
    with RerankerClient(target, timeout=60) as client:
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                raise DemoError(f"the sidecar exited with code {proc.proc.returncode}; end of its log:\n{proc.tail()}")
            with contextlib.suppress(Exception):
                resp = client.search("black t-shirt", top_k=5, top_n=5)
                last = resp.model_version
                if resp.reranked and resp.model_version.split("+", 1)[0] == version:  # "<version>+onnx-<variant>"
                    return
            time.sleep(1.0)
    raise DemoError(
        f"the sidecar did not switch to the promoted model {version} within {timeout_s:.0f} s "
        f"(it serves {last or 'no model'}); see {proc.log_path if proc else 'its log'}"
    )


def run_streaming(cmd: list[str], env: dict[str, str], log_path: Path, progress_every_s: float = 10.0) -> int:
    """Run `cmd`, echoing its output (indented) and writing all of it to `log_path`; returns the exit code.

    Progress-bar redraws (text ended by a carriage return) are echoed at most every `progress_every_s`
    seconds; the log file keeps everything.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        last_bar = 0.0
        buf = b""
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(65536):
                fh.write(chunk)
                fh.flush()
                buf += chunk
                while True:
                    cut = min((i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0), default=-1)
                    if cut < 0:
                        break
                    piece, end, buf = buf[:cut], buf[cut : cut + 1], buf[cut + 1 :]
                    text = piece.decode("utf-8", errors="replace").rstrip()
                    if not text:
                        continue
                    if end == b"\r":  # a progress bar redraw
                        if time.monotonic() - last_bar < progress_every_s:
                            continue
                        last_bar = time.monotonic()
                    print("      | " + text, flush=True)
            if buf.strip():
                print("      | " + buf.decode("utf-8", errors="replace").rstrip(), flush=True)
            return proc.wait()
        except BaseException:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            if proc.poll() is None:
                proc.kill()
            raise
