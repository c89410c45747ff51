"""ONNX Runtime backend: the cross-encoder exported by `fashion_rerank.onnx_export`, served with onnxruntime,
tokenizers and numpy only (no torch, no transformers in the serving process).

Files it reads from the registry version folder `<path>`:
- `tokenizer.json`, `tokenizer_config.json`, `config.json` (tokenization and max_length, see
  `reranker.backends.tokenization`);
- `onnx/manifest.json` (written by `export_cross_encoder`; fields used here):
    - `variants`: {name: {"file": relative to onnx/, "sha256": hex of the file, "precision": "fp32"|"int8",
      "recipe": how it was made}}; "fp32" is always there;
    - `gate`: {"serve": the variant `variant="auto"` loads, "allowed": [variants the quality gate passed]};
    - `inputs`, `output`, `max_length` (informational; the graph's own input names are what is fed);
- the variant's `.onnx` file.

Variant choice (`variant=`): "auto" loads `gate.serve` when it is allowed and loads cleanly, else fp32
(a missing, damaged (sha256 mismatch) or unloadable quantized file is logged and skipped); on a CUDA
provider "auto" loads fp32 (the int8 graphs' integer ops run on CPU kernels only). A named variant
("fp32", "int8", ...) loads exactly that one or raises.

Session: `fashion_rerank.onnx_embedding.session_options`: intra-op threads = `threads` (default: set by
`prepare`, else the CPU quota), one inter-op thread, sequential execution, ORT_ENABLE_ALL on the
pre-fused graph, no spin-waiting. Measured on the project machine (2 vCPU Zen 5, 100 Myntra candidates,
bench/onnx_explore.py): see the figures in the module `DEFAULTS` comment below.
"""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from reranker.backends.base import Backend, Encoded
from reranker.backends.tokenization import DEFAULT_MAX_LENGTH, PairTokenizer

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
MANIFEST = "manifest.json"
#: Threads set by `prepare` for loads that do not name their own.
_default_threads: int | None = None


class ModelFilesError(OSError):
    """The ONNX export of a model folder is missing or damaged."""


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cpu_quota() -> int:
    from fashion_rerank.hardware import cpu_quota

    return cpu_quota()


def read_manifest(path: str | Path) -> dict:
    """`<path>/onnx/manifest.json` as a dict.

    Raises:
        ModelFilesError: missing file, invalid JSON, or no "fp32" variant.
    """
    p = Path(path) / ONNX_DIR / MANIFEST
    try:
        m = json.loads(p.read_text())
    except FileNotFoundError:
        raise ModelFilesError(
            f"{p} not found: export the model first (fashion_rerank.onnx_export.export_cross_encoder)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFilesError(f"{p} is not valid JSON: {exc}") from exc
    if not isinstance(m, dict) or "fp32" not in (m.get("variants") or {}):
        raise ModelFilesError(f"{p} lists no fp32 variant")
    return m


class OnnxBackend(Backend):
    """A cross-encoder on ONNX Runtime. Use `load(path, ...)`.

    Args:
        path: registry version folder (tokenizer files + `onnx/` export).
        variant: "auto" (the quality gate's choice, else fp32) or a variant name of the manifest.
        threads: ORT intra-op threads (default: `prepare`'s, else the CPU quota).
        version: registry version (default: the folder name); `self.version` becomes
            "<version>+onnx-<variant>", `self.registry_version` keeps "<version>".
        max_length: tokens per pair override; default from the folder (`tokenization.resolve_max_length`).
        default_max_length: used when the folder does not say (the caller passes FR_MODEL_MAX_LENGTH).
        providers: ORT execution providers (default: CUDA when available and `device` allows, then CPU).
        device: "cpu", "cuda[:n]", or None/"auto".
        verify: check each file's sha256 against the manifest before loading (~0.1 s per 90 MB).
        spinning: let idle intra-op threads spin-wait (ORT's default); off by default (see the module docstring).
        layout: "intra" (one forward pass at a time on `threads` ORT intra-op threads) or "split" (each
            sub-batch cut into `threads` interleaved parts run at once, one ORT thread each; CPU only).
        min_split: "split" runs a sub-batch whole below 2 x this many pairs.

    Attributes:
        variant: the variant served ("fp32", "int8", ...).
        variant_info: its manifest entry.
        providers: the session's providers.

    Raises:
        ModelFilesError (an OSError): no export, or the asked-for (or, for "auto", even the fp32) file is
            missing, damaged or unloadable.
        ValueError: unknown variant name; a graph that does not output (batch, 1) logits.
    """

    def __init__(
        self,
        path: str | Path,
        variant: str = "auto",
        threads: int | None = None,
        version: str | None = None,
        max_length: int | None = None,
        providers: list | None = None,
        device: str | None = "cpu",
        default_max_length: int = DEFAULT_MAX_LENGTH,
        verify: bool = True,
        spinning: bool = False,
        layout: str = "intra",
        min_split: int = 8,
    ):
        from fashion_rerank.onnx_embedding import default_providers, session_options

        path = Path(path)
        self.path = path
        self.manifest = read_manifest(path)
        variants: dict = self.manifest["variants"]
        self.providers = list(providers) if providers else default_providers(device)
        on_gpu = any((p[0] if isinstance(p, tuple) else p) == "CUDAExecutionProvider" for p in self.providers)
        if variant == "auto":
            gate = self.manifest.get("gate") or {}
            chosen = gate.get("serve", "fp32")
            if chosen not in gate.get("allowed", [chosen]) or chosen not in variants or on_gpu:
                chosen = "fp32"
            candidates = list(dict.fromkeys([chosen, "fp32"]))
        elif variant in variants:
            candidates = [variant]
        else:
            raise ValueError(f"variant {variant!r} not in {path / ONNX_DIR / MANIFEST} ({', '.join(variants)})")
        threads = int(threads or _default_threads or _cpu_quota())
        if layout not in ("intra", "split"):
            raise ValueError(f"layout {layout!r}: 'intra' or 'split'")
        self.layout = "split" if layout == "split" and threads > 1 and not on_gpu else "intra"
        self.min_split = max(1, int(min_split))
        so = session_options(1 if self.layout == "split" else threads, spinning=spinning)
        self._pool = None
        if self.layout == "split":
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="onnx-split")
        self._parts = threads
        self._session = None
        errors = []
        for name in candidates:
            try:
                self._session = self._open(variants[name], so, verify)
                self.variant = name
                break
            except (OSError, ValueError, RuntimeError) as exc:  # onnxruntime raises RuntimeError subclasses
                errors.append(f"{name}: {exc}")
                log.warning("cannot load ONNX variant %s of %s: %s", name, path, exc)
        if self._session is None:
            raise ModelFilesError(f"no loadable ONNX variant in {path / ONNX_DIR}: {'; '.join(errors)}")
        self.variant_info = variants[self.variant]
        self._inputs = [i.name for i in self._session.get_inputs()]
        out = self._session.get_outputs()[0]
        if len(out.shape) != 2 or out.shape[1] not in (1, "1"):
            raise ValueError(f"{path}: output {out.name} has shape {out.shape}; a reranker outputs (batch, 1)")
        self.registry_version = version or path.name
        self.version = f"{self.registry_version}+onnx-{self.variant}"
        self._tok = PairTokenizer.from_dir(path, max_length=max_length, default_max_length=default_max_length)
        self.max_length = self._tok.max_length
        self.threads = threads
        self.score("warm-up", ["warm-up document", "a longer warm-up document for a second length"])
        log.info(
            "loaded cross-encoder %s from %s (ONNX %s, max_length=%d, threads=%d, providers=%s)",
            self.version,
            path,
            self.variant,
            self.max_length,
            self.threads,
            self._session.get_providers(),
        )

    def _open(self, info: dict, so, verify: bool):
        import onnxruntime as ort

        f = self.path / ONNX_DIR / info["file"]
        if not f.exists():
            raise ModelFilesError(f"{f} not found")
        if verify and info.get("sha256") and _sha256(f) != info["sha256"]:
            raise ModelFilesError(f"{f} is damaged: sha256 differs from the manifest")
        return ort.InferenceSession(str(f), so, providers=self.providers)

    # -- tokenization
    def query_tokens(self, query: str) -> int:
        return self._tok.query_tokens(query)

    def pair_tokens(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return self._tok.pair_tokens(query, documents)

    def encode(self, queries: Sequence[str], documents: Sequence[str], truncate_left: Sequence[bool] | None = None) -> Encoded:
        return self._tok.encode(queries, documents, truncate_left)

    # -- inference
    def run(self, encoded: Encoded, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return np.zeros(0, dtype=np.float32)
        if self._pool is None or len(indices) < 2 * self.min_split:
            return self._forward(encoded, indices)
        # layout "split": the sub-batch is cut into `threads` interleaved parts (each keeps the same
        # length profile, so each pads alike) that run at once, one ORT thread each.
        n = min(self._parts, len(indices) // self.min_split)
        pos = [np.arange(i, len(indices), n) for i in range(n)]
        futures = [self._pool.submit(self._forward, encoded, indices[p]) for p in pos[1:]]
        out = np.empty(len(indices), dtype=np.float32)
        out[pos[0]] = self._forward(encoded, indices[pos[0]])
        for p, f in zip(pos[1:], futures):
            out[p] = f.result()
        return out

    def _forward(self, encoded: Encoded, indices: np.ndarray) -> np.ndarray:
        feeds = self._tok.batch(encoded, indices)
        logits = self._session.run(None, {k: feeds[k] for k in self._inputs})[0]
        return np.ascontiguousarray(logits[:, 0], dtype=np.float32)

    def close(self) -> None:
        self._session = None
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        gc.collect()


def prepare(threads: int | None = None) -> None:
    """Remember `threads` as the intra-op thread count of later loads that name none.

    ORT's intra-op pool is per session (its own threads, not OpenMP), so unlike torch nothing has to be
    started from the main thread.
    """
    global _default_threads
    _default_threads = int(threads) if threads else None


def load(path: str | Path, **kwargs) -> OnnxBackend:
    """Load a registry version folder on ONNX Runtime; kwargs: variant, threads, version, max_length,
    default_max_length, providers, device, verify (see OnnxBackend)."""
    return OnnxBackend(path, **kwargs)
