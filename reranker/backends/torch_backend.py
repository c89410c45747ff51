"""PyTorch backend: a transformers `AutoModelForSequenceClassification` cross-encoder with one label.

Loads the registry folder (a sentence-transformers CrossEncoder saved with `save_pretrained`, i.e. a
plain transformers model + tokenizer). What makes it as fast as `CrossEncoder.predict` or faster
(shared/reference/cpu-rerank-measurements.md §3, rows (b) and "sentence-transformers"):
- tokenized once per batch with the Rust tokenizer (`encode_batch`), no padding at that point;
- the document side is truncated (`only_second`), never the query;
- length-sorted sub-batches padded only to their own longest pair (dynamic padding), chosen by the core;
- `torch.inference_mode()`; intra-op threads from settings (`torch.set_num_threads`).
"""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from reranker.backends.base import Backend, Encoded

log = logging.getLogger(__name__)

#: A tokenizer `model_max_length` above this means "not set" (transformers uses 1e30).
_UNSET_MAX_LENGTH = 100_000


class TorchBackend(Backend):
    """A cross-encoder on torch. Use `load(path, ...)`.

    Args:
        path: model folder (config.json, model weights, tokenizer files).
        version: name reported with every score (default: the folder name).
        max_length: tokens per pair; default the tokenizer's `model_max_length` as saved by the trainer
            (CrossEncoder(max_length=...)), else `FR_MODEL_MAX_LENGTH`; never above the model's
            position embeddings.
        device: torch device ("cpu", "cuda").
        threads: torch intra-op threads (process-wide setting); None leaves torch's setting alone.

    Raises:
        ValueError: the model has more than one output label (not a reranker).
        OSError: the folder lacks model or tokenizer files.
    """

    def __init__(self, path: str | Path, version: str | None = None, max_length: int | None = None,
                 device: str = "cpu", threads: int | None = None):
        import tokenizers
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from fashion_rerank.settings import ModelSettings

        self._torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        path = Path(path)
        self.path = path
        self.version = version or path.name
        self.device = torch.device(device)
        tok = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32)
        if int(model.config.num_labels) != 1:
            raise ValueError(f"{path} has {model.config.num_labels} output labels; a reranker has exactly 1")
        model.eval()
        model.to(self.device)
        self._model = model

        mx = int(tok.model_max_length) if tok.model_max_length and tok.model_max_length < _UNSET_MAX_LENGTH else ModelSettings().max_length
        if max_length:
            mx = int(max_length)
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions:
            # RoBERTa-style models offset positions by padding_idx + 1.
            offset = 2 if getattr(model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
            mx = min(mx, int(positions) - offset)
        self.max_length = mx

        spec = tok.backend_tokenizer.to_str()
        self._right = tokenizers.Tokenizer.from_str(spec)
        self._right.no_padding()
        self._right.enable_truncation(mx, strategy="only_second", direction="right")
        self._left = tokenizers.Tokenizer.from_str(spec)
        self._left.no_padding()
        self._left.enable_truncation(mx, strategy="only_second", direction="left")
        self._plain = tokenizers.Tokenizer.from_str(spec)
        self._plain.no_padding()
        self._plain.no_truncation()
        self._plain_lock = threading.Lock()
        self._pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
        self._use_types = "token_type_ids" in tok.model_input_names
        self.score("warm-up", ["warm-up document", "a longer warm-up document for a second length"])
        log.info("loaded cross-encoder %s from %s (max_length=%d, threads=%d, device=%s)",
                 self.version, path, mx, torch.get_num_threads(), self.device)

    # -- tokenization
    def query_tokens(self, query: str) -> int:
        with self._plain_lock:
            return len(self._plain.encode(query, add_special_tokens=False).ids)

    def encode(self, queries: Sequence[str], documents: Sequence[str], truncate_left: Sequence[bool] | None = None) -> Encoded:
        if len(queries) != len(documents):
            raise ValueError(f"{len(queries)} queries for {len(documents)} documents")
        n = len(documents)
        pairs = list(zip(queries, documents))
        try:
            if truncate_left is None or not any(truncate_left):
                encs = self._right.encode_batch(pairs)
            else:
                encs = [None] * n
                right = [i for i in range(n) if not truncate_left[i]]
                left = [i for i in range(n) if truncate_left[i]]
                for tk, idx in ((self._right, right), (self._left, left)):
                    if idx:
                        for i, e in zip(idx, tk.encode_batch([pairs[i] for i in idx])):
                            encs[i] = e
        except Exception as exc:  # tokenizers raises a bare Exception for a query that cannot fit
            raise ValueError(f"cannot fit a (query, document) pair into {self.max_length} tokens: {exc}") from exc
        ids = [e.ids for e in encs]
        types = [e.type_ids for e in encs] if self._use_types else None
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        return Encoded(lengths=lengths, data=(ids, types))

    # -- inference
    def run(self, encoded: Encoded, indices: np.ndarray) -> np.ndarray:
        torch = self._torch
        ids, types = encoded.data
        indices = np.asarray(indices, dtype=np.int64)
        b = len(indices)
        if b == 0:
            return np.zeros(0, dtype=np.float32)
        lens = encoded.lengths[indices]
        width = int(lens.max())
        input_ids = np.full((b, width), self._pad_id, dtype=np.int64)
        mask = np.zeros((b, width), dtype=np.int64)
        type_ids = np.zeros((b, width), dtype=np.int64) if types is not None else None
        for row, (i, n) in enumerate(zip(indices.tolist(), lens.tolist())):
            input_ids[row, :n] = ids[i]
            mask[row, :n] = 1
            if type_ids is not None:
                type_ids[row, :n] = types[i]
        feeds = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        if type_ids is not None:
            feeds["token_type_ids"] = torch.from_numpy(type_ids)
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
    """Load a cross-encoder folder on torch; kwargs: version, max_length, device, threads (see TorchBackend)."""
    return TorchBackend(path, **kwargs)
