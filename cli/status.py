"""`fashion-rerank status`: what is running, which model version serves, which index the alias points at, and
where the logs are. Reads the same settings as `serve` (environment, or the file named by
FASHION_RERANK_CONFIG, e.g. the demo's `var/demo/serve.env`); every probe has a short timeout and a failed
probe is reported, never raised.
"""

from __future__ import annotations

import argparse
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

from fashion_rerank import local_node
from fashion_rerank.opensearch import make_client
from fashion_rerank.registry import ModelRegistry
from fashion_rerank.settings import OpenSearchSettings, ServeSettings

#: Seconds each probe may take.
PROBE_TIMEOUT_S = 2.0
#: Where `make demo` keeps its state (its logs are under `logs/`).
DEMO_WORK = Path("var/demo")


def _open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def sidecar_status(serve: ServeSettings) -> dict[str, Any]:
    """gRPC health and the served model version of a sidecar at the configured ports (None when not answering)."""
    out: dict[str, Any] = {"grpc": f"{serve.grpc_host}:{serve.grpc_port}", "running": False}
    if not _open(serve.grpc_host, serve.grpc_port):
        return out
    try:
        from reranker.client import RerankerClient

        with RerankerClient.from_settings(serve, timeout=PROBE_TIMEOUT_S) as client:  # TLS when the sidecar has it
            out["health"] = client.health(timeout=PROBE_TIMEOUT_S)
        out["running"] = True
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        out["health"] = f"error: {exc}"
    if serve.metrics_port > 0:
        out["metrics"] = f"http://{serve.metrics_host}:{serve.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(out["metrics"], timeout=PROBE_TIMEOUT_S) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("fashion_rerank_model_info{") and line.rstrip().endswith(" 1.0"):
                        out["model_version"] = line.split('version="', 1)[1].split('"', 1)[0]
        except Exception as exc:  # noqa: BLE001
            out["metrics_error"] = str(exc)
    if serve.http_port > 0:
        out["http"] = f"{'https' if serve.http_tls_cert else 'http'}://{serve.http_host}:{serve.http_port}"
    return out


def opensearch_status(os_settings: OpenSearchSettings) -> dict[str, Any]:
    """Cluster version and health, and the index behind the alias with its document count."""
    out: dict[str, Any] = {"url": os_settings.url, "alias": os_settings.index_alias, "reachable": False}
    try:
        client = make_client(os_settings, max_retries=0, timeout=PROBE_TIMEOUT_S)
        info = client.info()
        out.update(reachable=True, version=info["version"]["number"], health=client.cluster.health()["status"])
        aliases = client.indices.get_alias(name=os_settings.index_alias, ignore=[404])
        indices = sorted(k for k in aliases if k not in ("error", "status"))
        out["alias_indices"] = indices
        if indices:
            out["documents"] = int(client.count(index=os_settings.index_alias)["count"])
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        out["error"] = str(exc).splitlines()[0][:300]
    try:
        node = local_node.status()
        out["local_node"] = {k: node.get(k) for k in ("running", "ours", "pid", "version")}
        out["local_node"]["logs"] = str(local_node.node_root())
    except Exception as exc:  # noqa: BLE001
        out["local_node"] = {"error": str(exc)}
    return out


def model_status(serve: ServeSettings) -> dict[str, Any]:
    """The registry's current version, its card's headline, and its ONNX variants when exported."""
    reg = ModelRegistry(serve.models.registry_dir, serve.models.name)
    out: dict[str, Any] = {"registry": str(reg.dir.resolve()), "current": reg.current(), "versions": len(reg.versions())}
    if out["current"]:
        try:
            path = reg.path(out["current"])
            manifest = path / "onnx" / "manifest.json"
            if manifest.exists():
                m = json.loads(manifest.read_text())
                out["onnx_variants"] = sorted(m.get("variants", {}))
                out["onnx_gate"] = m.get("gate", {})
        except Exception as exc:  # noqa: BLE001
            out["error"] = str(exc)
    return out


def collect() -> dict[str, Any]:
    """Everything `status` shows, as a dict."""
    serve = ServeSettings()
    logs = {}
    if (DEMO_WORK / "logs").is_dir():
        logs["demo"] = str((DEMO_WORK / "logs").resolve())
    if (DEMO_WORK / "serve.env").exists():
        logs["demo_serve_env"] = str((DEMO_WORK / "serve.env").resolve())
    if serve.querylog_path:
        logs["query_log"] = str(Path(serve.querylog_path).resolve())
    return {
        "sidecar": sidecar_status(serve),
        "model": model_status(serve),
        "opensearch": opensearch_status(OpenSearchSettings()),
        "logs": logs,
    }


def cmd_status(args: argparse.Namespace) -> int:
    """Print the status (text, or JSON with --json); exit 0 when OpenSearch answers and a model is current, else 3."""
    st = collect()
    healthy = st["opensearch"]["reachable"] and bool(st["model"]["current"])
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0 if healthy else 3
    sc, m, o = st["sidecar"], st["model"], st["opensearch"]
    print(
        f"sidecar     {sc['grpc']}: "
        + (f"{sc.get('health')}, serving {sc.get('model_version', '?')}" if sc["running"] else "not running")
        + (f"; HTTP {sc['http']}" if sc.get("http") and sc["running"] else "")
        + (f"; metrics {sc['metrics']}" if sc.get("metrics") and sc["running"] else "")
    )
    print(
        f"model       {m['registry']}: current {m['current'] or 'none (nothing promoted)'}, {m['versions']} version(s)"
        + (
            f"; ONNX {', '.join(m['onnx_variants'])} (serves {m.get('onnx_gate', {}).get('serve', 'fp32')})"
            if m.get("onnx_variants")
            else ""
        )
    )
    if o["reachable"]:
        idx = ", ".join(o.get("alias_indices") or []) or "no index (run `fashion-rerank index build`)"
        docs = f", {o['documents']:,} documents" if "documents" in o else ""
        print(f"opensearch  {o['url']}: {o['version']} {o['health']}; alias {o['alias']!r} -> {idx}{docs}")
    else:
        print(f"opensearch  {o['url']}: not reachable ({o.get('error', '')})")
    ln = o.get("local_node", {})
    if ln.get("running"):
        print(
            f"local node  {'started by fashion-rerank' if ln.get('ours') else 'not ours'}, pid {ln.get('pid')}, {ln.get('version')}; files and logs in {ln.get('logs')}"
        )
    for name, path in st["logs"].items():
        print(f"{name:<11} {path}")
    if "demo_serve_env" in st["logs"] and not sc["running"]:
        print(f"\nto serve the demo's model:  FASHION_RERANK_CONFIG={st['logs']['demo_serve_env']} fashion-rerank serve")
    return 0 if healthy else 3
