"""The bi-encoder on ONNX Runtime: texts -> L2-normalised float32 vectors with onnxruntime + tokenizers + numpy.

Loads a folder written by `fashion_rerank.onnx_export.export_bi_encoder` (`model.onnx` with the pooling and
normalisation inside the graph, `tokenizer.json`, `manifest.json`), so a process that only embeds queries
(the sidecar's Search) needs neither torch nor transformers. Same vectors as sentence-transformers
`SentenceTransformer.encode` on the source model: cosine >= 0.9999 (checked at export and in
tests/integration/test_onnx_backend.py; measured min 0.99999+ on bundled-catalog queries and product texts).

Tokenization follows sentence-transformers' Transformer module: texts are stripped of surrounding
whitespace (and lower-cased when sentence_bert_config.json says do_lower_case), truncated to
`max_seq_length` tokens (sentence_bert_config.json; else min(tokenizer model_max_length,
max_position_embeddings)), padded per batch to the longest text. Texts are sorted by token length and
run in batches of `batch_size`, so padding stays small; results come back in input order.

Speed (project machine, 2 threads, one ~5-word query): ~1.6 ms, against ~6.5 ms for sentence-transformers
(docs/reference/cpu-measurements.md §1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

MANIFEST = "manifest.json"

#: ORT graph fusions this project turns off on the CPU provider. "SkipLayerNormFusion" folds
#: Add(bias) + Add(residual) + LayerNormalization into com.microsoft SkipLayerNormalization, whose CPU kernel
#: in onnxruntime 1.32 is ~5x slower than the Add + LayerNormalization it replaces (1 thread, (20, 26, 384)
#: fp32: 6.7-7.4 against 1.0-1.1 ns per element, `bench/onnx_fusions.py`); leaving it out made the int8
#: cross-encoder ~14 % faster per request (docs/performance.md, "What changed since the morning's figures"). On
#: CUDA the fusion stays.
CPU_DISABLED_FUSIONS: tuple[str, ...] = ("SkipLayerNormFusion",)


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return obj if isinstance(obj, dict) else {}


def default_providers(device: str | None = None) -> list:
    """ORT execution providers: CUDA first when onnxruntime-gpu has it and `device` is None/"auto"/"cuda",
    always CPU last. Raises ValueError for device "cuda" without the CUDA provider."""
    import onnxruntime as ort

    avail = ort.get_available_providers()
    dev = (device or "auto").lower()
    if dev.startswith("cuda"):
        if "CUDAExecutionProvider" not in avail:
            raise ValueError(f"device {device!r} asked for, but onnxruntime has no CUDA provider ({avail})")
        idx = int(dev.split(":")[1]) if ":" in dev else 0
        return [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
    if dev == "auto" and "CUDAExecutionProvider" in avail:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(threads: int | None = None, spinning: bool = False):
    """ORT session options used by the project's ONNX models.

    intra-op threads = `threads` (default: the CPU quota of this process), 1 inter-op thread, sequential
    execution, ORT_ENABLE_ALL, and no spin-waiting of idle pool threads (`spinning=False`). Measured with
    bench/onnx_explore.py on the shared 2-vCPU machine (cross-encoder int8, 100 pairs, 2 intra-op threads):
    spinning cost 1.5x wall and CPU time per request while other processes were busy (p50 451 vs 305 ms,
    CPU 456 vs 298 ms) and was within noise on a quiet machine (180 vs 197 ms with 2 intra-op threads,
    217 vs 203 ms with the backend's "split" layout).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or _cpu_quota())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def open_session(path: str | Path, options, providers: list):
    """`onnxruntime.InferenceSession(path, options, providers)` with `CPU_DISABLED_FUSIONS` turned off when
    the providers are CPU only (a CUDA session keeps every fusion).

    Raises whatever onnxruntime raises for a missing or invalid file (RuntimeError subclasses)."""
    import onnxruntime as ort

    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    cpu_only = all(n == "CPUExecutionProvider" for n in names)
    disabled = list(CPU_DISABLED_FUSIONS) if cpu_only else []
    return ort.InferenceSession(str(path), options, providers=providers, disabled_optimizers=disabled)


def _cpu_quota() -> int:
    from fashion_rerank.hardware import cpu_quota

    return cpu_quota()


class OnnxBiEncoder:
    """A sentence-transformers bi-encoder exported to ONNX (`export_bi_encoder`).

    Args:
        path: the exported folder (model.onnx, tokenizer.json, manifest.json).
        threads: ORT intra-op threads (default: CPU quota).
        providers: ORT execution providers (default `default_providers(device)`).
        device: "cpu", "cuda[:n]" or None/"auto" (CUDA when available).
        batch_size: texts per forward pass.

    Attributes:
        dimension: vector size (e.g. 384).
        max_seq_length: tokens per text (special tokens included).

    Raises:
        FileNotFoundError: the folder lacks model.onnx or tokenizer.json.
        ValueError: the manifest is not a bi-encoder one.
    """

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        providers: list | None = None,
        device: str | None = "cpu",
        batch_size: int = 64,
    ):
        import tokenizers

        self.path = Path(path)
        self.manifest = _read_json(self.path / MANIFEST)
        if self.manifest and self.manifest.get("kind") not in (None, "bi-encoder"):
            raise ValueError(f"{self.path} holds a {self.manifest.get('kind')} export, not a bi-encoder")
        model_file = self.path / self.manifest.get("file", "model.onnx")
        for f in (model_file, self.path / "tokenizer.json"):
            if not f.exists():
                raise FileNotFoundError(f"{f} not found (export it with fashion_rerank.onnx_export.export_bi_encoder)")
        cfg = _read_json(self.path / "config.json")
        stc = _read_json(self.path / "sentence_bert_config.json")
        mx = self.manifest.get("max_seq_length") or stc.get("max_seq_length")
        if not mx:
            tmax = _read_json(self.path / "tokenizer_config.json").get("model_max_length") or 512
            mx = min(int(tmax) if tmax < 100_000 else 512, int(cfg.get("max_position_embeddings", 512)))
        self.max_seq_length = int(mx)
        self.do_lower_case = bool(self.manifest.get("do_lower_case", stc.get("do_lower_case", False)))
        self.batch_size = int(batch_size)
        tk = tokenizers.Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tk.no_padding()
        tk.enable_truncation(self.max_seq_length)
        self._tok = tk
        self._session = open_session(model_file, session_options(threads), providers or default_providers(device))
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.dimension: int = int(self.manifest.get("dimension") or self._session.get_outputs()[0].shape[-1])

    @property
    def cache_key(self) -> str:
        """Identifies the vectors this model makes (the embedding cache's model key)."""
        return f"{self.manifest.get('source', {}).get('model_dir', self.path)}#{self.dimension}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts` -> (len(texts), dimension) float32, rows of L2 norm 1 (when the model normalises).

        Empty input gives a (0, dimension) array.
        """
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        prepared = [str(t).strip() for t in texts]
        if self.do_lower_case:
            prepared = [t.lower() for t in prepared]
        encs = self._tok.encode_batch_fast(prepared)
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((n, self.dimension), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            width = int(lengths[idx].max())
            ids = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx.tolist()):
                e = encs[i]
                ids[row, : len(e.ids)] = e.ids
                types[row, : len(e.ids)] = e.type_ids
            feeds = {"input_ids": ids, "attention_mask": (np.arange(width)[None, :] < lengths[idx][:, None]).astype(np.int64)}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = types
            out[idx] = self._session.run(None, feeds)[0]
        return out

    def encode_query(self, query: str) -> np.ndarray:
        """Embed one query -> (dimension,) float32."""
        return self.encode([query])[0]


def load_onnx_bi_encoder(path: str | Path, **kwargs) -> OnnxBiEncoder:
    """`OnnxBiEncoder(path, **kwargs)`; `path` may also be a model folder holding an `onnx/` export."""
    p = Path(path)
    if not (p / "model.onnx").exists() and (p / "onnx" / "model.onnx").exists():
        p = p / "onnx"
    return OnnxBiEncoder(p, **kwargs)
