"""The serving path runs without torch: `fashion-rerank serve` in a subprocess where importing torch,
transformers and sentence-transformers fails answers Rerank and Search (ONNX Runtime backend, ONNX bi-encoder),
against real OpenSearch with a real trained model. A plain Hugging Face cross-encoder folder without ONNX
files is exported once on first load and served."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from test_sidecar import product_index, products  # noqa: F401 - fixtures

from fashion_rerank.onnx_cache import ensure_bi_encoder_onnx, ensure_onnx, has_onnx
from fashion_rerank.registry import ModelRegistry
from reranker.client import RerankerClient

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BLOCK = (
    "import sys\n"
    "for name in ('torch', 'transformers', 'sentence_transformers', 'datasets', 'accelerate'):\n"
    "    sys.modules[name] = None  # any import of these now raises ImportError\n"
)


def test_a_folder_without_onnx_files_is_exported_once_and_reused(trained_registry, tmp_path):
    folder = trained_registry.path(trained_registry.current())
    plain = tmp_path / "plain-ce"
    shutil.copytree(folder, plain, ignore=shutil.ignore_patterns("onnx"))
    assert not has_onnx(plain)
    first = ensure_onnx(plain, cache=tmp_path / "cache")
    assert first != plain and has_onnx(first) and (first / "tokenizer.json").exists()
    mtime = (first / "onnx" / "manifest.json").stat().st_mtime_ns
    assert ensure_onnx(plain, cache=tmp_path / "cache") == first  # reused, not exported again
    assert (first / "onnx" / "manifest.json").stat().st_mtime_ns == mtime

    from reranker.backends import load_backend

    onnx = load_backend("onnx", first, version="plain", threads=1)
    torch = load_backend("torch", plain, version="plain", threads=1)
    docs = ["Women Black Watch | Watches | Black | Women", "Men Blue Jeans | Jeans | Blue | Men", "Red Dress | Dresses"]
    np.testing.assert_allclose(
        onnx.score("black watch for women", docs)
        if onnx.variant == "fp32"
        else load_backend("onnx", first, version="p", threads=1, variant="fp32").score("black watch for women", docs),
        torch.score("black watch for women", docs),
        atol=1e-4,
    )


def test_the_sidecar_serves_without_torch(trained_registry, product_index, opensearch_url, tmp_path):  # noqa: F811
    # ONNX files are made beforehand (with torch, as `train` does for every version); serving needs none of torch
    registry = ModelRegistry(tmp_path / "models", "fashion-ce")
    registry.dir.mkdir(parents=True)
    version = trained_registry.current()
    shutil.copytree(ensure_onnx(trained_registry.path(version)), registry.dir / version)
    (registry.dir / version / "card.json").write_text("{}")
    registry.promote(version, reason="test")
    bi = ensure_bi_encoder_onnx("packaged:all-MiniLM-L6-v2")
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "FR_MODEL_REGISTRY_DIR": str(tmp_path / "models"),
        "FR_MODEL_BI_ENCODER_ONNX": str(bi),
        "FR_SERVE_GRPC_PORT": str(port),
        "FR_SERVE_METRICS_PORT": str(metrics_port),
        "FR_SERVE_HTTP_PORT": "0",
        "FR_SERVE_BACKEND": "onnx",
        "FR_SERVE_QUERYLOG_PATH": "",
        "FR_SERVE_QUERYLOG_INDEX": "",
        "OPENSEARCH_URL": opensearch_url,
        "OPENSEARCH_INDEX_ALIAS": product_index,
    }
    code = BLOCK + "from cli.main import main\nsys.exit(main(['serve']))\n"
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    try:
        with RerankerClient(f"127.0.0.1:{port}", timeout=30) as c:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if c.health() == "SERVING":
                        break
                except Exception:  # noqa: BLE001 - not up yet
                    pass
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            resp = c.rerank("black watch for women", ["Women Black Watch | Watches | Black", "Men Blue Jeans | Jeans | Blue"])
            assert resp.results[0].index == 0 and "+onnx-" in resp.model_version
            found = c.search("black watch for women", top_k=20, top_n=5)
            assert found.reranked and len(found.hits) == 5 and "+onnx-" in found.model_version
        text = log.read_text()
        assert "Traceback" not in text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # and the blocked process really had no torch: importing it there fails
    probe = subprocess.run([sys.executable, "-c", BLOCK + "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0 and "import of torch halted" in probe.stderr
