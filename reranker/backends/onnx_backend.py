"""ONNX Runtime backend: the cross-encoder exported by `fashion_rerank.onnx_export`, served with onnxruntime,
tokenizers and numpy only (no torch, no transformers in the serving process).

Files it reads from the registry version folder `<path>`:
- `tokenizer.json`, `tokenizer_config.json`, `config.json` (tokenization and max_length, see
  `reranker.backends.tokenization`);
- `onnx/manifest.json` (written by `export_cross_encoder`; fields used here):
    - `variants`: {name: {"file": relative to onnx/, "sha256": hex of the file, "precision": "fp32"|"int8",
      "recipe": how it was made}}; "fp32" is always there;
    - `gate`: {"serve": the variant `variant="auto"` loads, "allowed": [variants the quality gate passed]};
    - `activation`: {"name": "identity"|"sigmoid"|"tanh", "declared", "source", "torch"}, the function the
      exported model declares (`fashion_rerank.scores`); served score = activation(logit). A manifest
      written before it was recorded falls back to what the folder's config files declare; a manifest and
      folder that disagree are refused (ModelFilesError);
    - `inputs`, `output`, `max_length` (informational; the graph's own input names are what is fed);
- the variant's `.onnx` file.

Variant choice (`variant=`): "auto" loads `gate.serve` when it is allowed and loads cleanly, else fp32
(a missing, damaged (sha256 mismatch) or unloadable quantized file is logged and skipped); on a CUDA
provider "auto" loads fp32 (the int8 graphs' integer ops run on CPU kernels only). A named variant
("fp32", "int8", ...) loads exactly that one or raises.

Execution (defaults measured with bench/onnx_explore.py on the project's 2-vCPU machine (a Zen 4 VM that day), 100 Myntra
candidates of ~25.6 tokens; figures in the report of the change and in that script's output):
- session options `fashion_rerank.onnx_embedding.session_options`: ORT_ENABLE_ALL (ORT's own load-time
  fusions on the exported graph), sequential execution, one inter-op thread, no spin-waiting;
- `run` sorts the pairs it gets by length and cuts them into forward passes of at most `max_tokens`
  (512) padded tokens whatever sub-batch the core formed: smaller passes keep the activations in cache
  (CPU time per request, int8, split layout: 271 ms at 512, 298 at 1024, 331 at 2048; intra layout 326,
  349, 367, 386 at 512..8192, 451 for one pass of 100);
- layout "split" (default when threads > 1 on CPU): the passes of one call run at once on `threads`
  threads with one ORT intra-op thread each, instead of one pass at a time on `threads` intra-op threads
  ("intra"): less CPU time and no waiting at the per-operator barriers of ORT's thread pool (int8, quiet
  machine, same run: p50 158.5 ms split/512 against 194.5 ms intra/512 and 260 ms on 1 thread);
- I/O binding brought nothing on CPU (inputs are already contiguous numpy arrays) and is not used.

Dynamic int8 quantizes each forward pass's activations with one scale per tensor, so an int8 score
depends slightly on which other pairs share the pass (up to ~0.01 in the logit); fp32 scores do not
(layouts and pass sizes agree to ~1e-7).
"""

from __future__ import annotations

import gc
import json
import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from fashion_rerank.scores import Activation, declared_activation
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


def manifest_activation(path: str | Path, manifest: dict) -> Activation:
    """The activation to serve for the export in `path`: the manifest's `activation`, else (a manifest from
    before it was recorded) what the folder's config files declare.

    Raises:
        ModelFilesError: the manifest's entry is unreadable, or it disagrees with the folder's declaration.
        ValueError: the folder declares an activation this service cannot apply.
    """
    folder = declared_activation(path)
    entry = manifest.get("activation")
    if entry is None:
        return folder
    try:
        recorded = Activation.from_manifest(entry)
    except ValueError as exc:
        raise ModelFilesError(f"{Path(path) / ONNX_DIR / MANIFEST}: {exc}") from exc
    declares_own = folder.declared is not None
    if declares_own and folder.name != recorded.name:
        raise ModelFilesError(
            f"{Path(path) / ONNX_DIR / MANIFEST} records activation {recorded.name} but the folder declares "
            f"{folder.declared} ({folder.source}): re-export the model"
        )
    return recorded


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
        layout: "split" (default: the forward passes of a call run at once on `threads` threads, one ORT
            thread each; CPU only) or "intra" (one pass at a time on `threads` ORT intra-op threads).
        min_split: "split" runs a sub-batch on one thread below 2 x this many pairs.
        max_tokens: padded tokens per forward pass at most (`run` cuts larger sub-batches).

    Attributes:
        variant: the variant served ("fp32", "int8", ...).
        variant_info: its manifest entry.
        providers: the session's providers.
        activation: the manifest's `activation` (see the module docstring); served score = activation(logit).

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
        layout: str = "split",
        min_split: int = 8,
        max_tokens: int = 512,
    ):
        from fashion_rerank.onnx_embedding import default_providers, session_options

        path = Path(path)
        self.path = path
        self.manifest = read_manifest(path)
        self.activation = manifest_activation(path, self.manifest)
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
        self.max_tokens = max(1, int(max_tokens))
        so = session_options(1 if self.layout == "split" else threads, spinning=spinning)
        self._pool = None
        if self.layout == "split":
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="onnx-split")
        self._parts = threads
        self._active = 0  # run() calls in progress (several scoring workers share this backend)
        self._active_lock = threading.Lock()
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
            "loaded cross-encoder %s from %s (ONNX %s, max_length=%d, score=%s(logit), threads=%d, providers=%s)",
            self.version,
            path,
            self.variant,
            self.max_length,
            self.activation.name,
            self.threads,
            self._session.get_providers(),
        )

    def _open(self, info: dict, so, verify: bool):
        from fashion_rerank.onnx_embedding import open_session

        f = self.path / ONNX_DIR / info["file"]
        if not f.exists():
            raise ModelFilesError(f"{f} not found")
        if verify and info.get("sha256") and _sha256(f) != info["sha256"]:
            raise ModelFilesError(f"{f} is damaged: sha256 differs from the manifest")
        return open_session(f, so, self.providers)

    # -- tokenization
    def query_tokens(self, query: str) -> int:
        return self._tok.query_tokens(query)

    def pair_tokens(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return self._tok.pair_tokens(query, documents)

    def encode(self, queries: Sequence[str], documents: Sequence[str], truncate_left: Sequence[bool] | None = None) -> Encoded:
        return self._tok.encode(queries, documents, truncate_left)

    # -- inference
    def run(self, encoded: Encoded, indices: np.ndarray) -> np.ndarray:
        """Logits (len(indices),) float32 for the pairs `indices` of `encoded`.

        The pairs are sorted by length (longest first) and cut into forward passes of at most
        `max_tokens` padded tokens (so whatever sub-batch the caller forms, each pass keeps its activations
        in cache: 512-1024 tokens measured best, 4096+ up to 1.3x slower). With layout "split" the passes
        are shared by the threads this call may use, one ORT thread each: largest first, each thread taking
        the next pass when it is free (a single pass is first cut into interleaved parts). The `threads` are shared by
        concurrent calls (several scoring workers on one backend): a call gets `threads // calls in progress`
        of them (at least its own), decided when it starts, so a lone request uses every CPU and two at once
        take one CPU each instead of waiting for each other at a split's join (a call already split keeps its
        share, so for its remaining passes one more thread than CPUs may run). Layout "intra" (CUDA, or one
        thread) does not split: concurrent calls then share the session's own threads or device.

        Thread-safe: ONNX Runtime sessions accept concurrent `run` calls.
        """
        with self._active_lock:
            self._active += 1
            parts = max(1, self._parts // self._active)
        try:
            return self._run(encoded, indices, parts)
        finally:
            with self._active_lock:
                self._active -= 1

    def _run(self, encoded: Encoded, indices: np.ndarray, parts: int) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        n = len(indices)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        lens = encoded.lengths[indices]
        order = np.argsort(-lens, kind="stable")
        passes: list[np.ndarray] = []
        start = 0
        while start < n:
            size = max(1, self.max_tokens // max(1, int(lens[order[start]])))
            passes.append(order[start : start + size])
            start += size
        out = np.empty(n, dtype=np.float32)
        parts = min(parts, n // self.min_split)
        if self._pool is None or parts < 2:
            for pos in passes:
                out[pos] = self._forward(encoded, indices[pos])
            return out
        if len(passes) < parts:  # too few passes to share: cut each into interleaved parts of like lengths
            passes = [p[i::parts] for p in passes for i in range(parts)]
        # largest first; each thread takes the next pass when it is free, so a thread that is slowed down (or
        # starts late) leaves more of the work to the others instead of holding up the whole call
        todo = sorted(passes, key=lambda p: -len(p) * int(lens[p].max()))
        taken = iter(range(len(todo)))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    i = next(taken, None)
                if i is None:
                    return
                pos = todo[i]
                out[pos] = self._forward(encoded, indices[pos])

        futures = [self._pool.submit(work) for _ in range(parts - 1)]
        work()
        for f in futures:
            f.result()
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
    default_max_length, providers, device, verify, spinning, layout, min_split, max_tokens (see OnnxBackend)."""
    return OnnxBackend(path, **kwargs)
