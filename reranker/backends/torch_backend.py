"""PyTorch backend: a transformers `AutoModelForSequenceClassification` cross-encoder with one label.

Loads the registry folder (a sentence-transformers CrossEncoder saved with `save_pretrained`, i.e. a
plain transformers model + tokenizer). What makes it as fast as `CrossEncoder.predict` or faster
(shared/reference/cpu-rerank-measurements.md §3, rows (b) and "sentence-transformers"):
- tokenized once per batch with the Rust tokenizer (`reranker.backends.tokenization.PairTokenizer`, shared
  with the ONNX backend), no padding at that point;
- the document side is truncated (`only_second`), never the query;
- length-sorted sub-batches padded only to their own longest pair (dynamic padding), chosen by the core;
- `torch.inference_mode()`; intra-op threads from the caller (`torch.set_num_threads`).
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from fashion_rerank.scores import declared_activation
from reranker.backends.base import Backend, Encoded
from reranker.backends.tokenization import DEFAULT_MAX_LENGTH, PairTokenizer

log = logging.getLogger(__name__)


class TorchBackend(Backend):
    """A cross-encoder on torch. Use `load(path, ...)`.

    Args:
        path: model folder (config.json, model weights, tokenizer files).
        version: name reported with every score (default: the folder name).
        max_length: tokens per pair override; default the tokenizer's `model_max_length` as saved by the
            trainer (CrossEncoder(max_length=...)), else `default_max_length`; never above the model's
            position embeddings (`tokenization.resolve_max_length`).
        default_max_length: tokens per pair when the folder does not say (callers pass FR_MODEL_MAX_LENGTH;
            default 128, that setting's default).
        device: torch device ("cpu", "cuda").
        threads: torch intra-op threads (process-wide setting); None leaves torch's setting alone.

    Attributes:
        activation: what the folder declares (`fashion_rerank.scores.declared_activation`): served score =
            activation(logit), as `sentence_transformers.CrossEncoder(path).predict` computes it.

    Raises:
        ValueError: the model has more than one output label (not a reranker), or declares an activation
            this service cannot apply.
        OSError: the folder lacks model or tokenizer files.
    """

    def __init__(
        self,
        path: str | Path,
        version: str | None = None,
        max_length: int | None = None,
        device: str = "cpu",
        threads: int | None = None,
        default_max_length: int = DEFAULT_MAX_LENGTH,
    ):
        import torch
        from transformers import AutoModelForSequenceClassification

        self._torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        path = Path(path)
        self.path = path
        self.version = version or path.name
        self.device = torch.device(device)
        self.activation = declared_activation(path)
        try:
            tok = PairTokenizer.from_dir(path, max_length=max_length, default_max_length=default_max_length)
        except FileNotFoundError:  # a folder with only a slow-tokenizer vocabulary: transformers converts it
            from transformers import AutoTokenizer

            tok = PairTokenizer.from_dir(
                path,
                max_length=max_length,
                default_max_length=default_max_length,
                tokenizer=AutoTokenizer.from_pretrained(str(path)).backend_tokenizer,
            )
        model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32)
        if int(model.config.num_labels) != 1:
            raise ValueError(f"{path} has {model.config.num_labels} output labels; a reranker has exactly 1")
        model.eval()
        model.to(self.device)
        self._model = model
        self._tok = tok
        self.max_length = tok.max_length
        self.score("warm-up", ["warm-up document", "a longer warm-up document for a second length"])
        log.info(
            "loaded cross-encoder %s from %s (max_length=%d, score=%s(logit) from %s, threads=%d, device=%s)",
            self.version,
            path,
            self.max_length,
            self.activation.name,
            self.activation.source,
            torch.get_num_threads(),
            self.device,
        )

    # -- tokenization
    def query_tokens(self, query: str) -> int:
        return self._tok.query_tokens(query)

    def pair_tokens(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return self._tok.pair_tokens(query, documents)

    def encode(self, queries: Sequence[str], documents: Sequence[str], truncate_left: Sequence[bool] | None = None) -> Encoded:
        return self._tok.encode(queries, documents, truncate_left)

    # -- inference
    def run(self, encoded: Encoded, indices: np.ndarray) -> np.ndarray:
        torch = self._torch
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return np.zeros(0, dtype=np.float32)
        feeds = {k: torch.from_numpy(v) for k, v in self._tok.batch(encoded, indices).items()}
        if self.device.type != "cpu":
            feeds = {k: v.to(self.device, non_blocking=True) for k, v in feeds.items()}
        with torch.inference_mode():
            logits = self._model(**feeds).logits
        return logits[:, 0].float().cpu().numpy().astype(np.float32, copy=False)

    def close(self) -> None:
        self._model = None
        gc.collect()


def prepare(threads: int | None = None) -> None:
    """Set torch's intra-op threads and start its OpenMP runtime from the calling (main) thread.

    Measured on the project machine (2 vCPU, torch 2.15 with GNU OpenMP): when the first parallel torch
    op of a process runs in a non-main thread (the core's worker), every later forward pass in that
    thread was about 3x slower (2.2 s instead of 0.72 s for 100 pairs) than when one small parallel op
    ran in the main thread first. So the core calls this from `start()`.
    """
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    a = torch.ones(256, 256)
    (a @ a).sum()
    (torch.ones(1 << 20) + 1).sum()


def load(path: str | Path, **kwargs) -> TorchBackend:
    """Load a cross-encoder folder on torch; kwargs: version, max_length, default_max_length, device, threads
    (see TorchBackend)."""
    return TorchBackend(path, **kwargs)
