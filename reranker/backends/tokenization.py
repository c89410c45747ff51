"""(query, document) pair tokenization shared by every backend: Rust `tokenizers` + numpy, no transformers.

A cross-encoder reads `[CLS] query [SEP] document [SEP]` (or the model's own template), at most
`max_length` tokens. Only the document side is truncated (`only_second`), from its end (default) or from
its start (`truncate_left`, TEI's truncation_direction=LEFT); the query never is, so a query too long to
leave `Backend.min_document_tokens` of document is refused by the caller before it gets here.

The tokenizer is built from the model folder's `tokenizer.json` (what `save_pretrained` of a fast
tokenizer writes; identical to what transformers' `AutoTokenizer(...).backend_tokenizer` holds: checked
for the packaged all-MiniLM-L6-v2 and a CrossEncoder saved from it, same JSON and the same ids on all
1,000 bench pairs). Padding and truncation settings stored in that file are replaced by the ones here.

How `max_length` is decided (`resolve_max_length`), in this order:
1. an explicit `max_length` argument (the caller's override), else
2. `tokenizer_config.json` `model_max_length` (what `CrossEncoder(max_length=...)` saves), unless it is
   missing or the "unset" sentinel (transformers writes ~1e30 there; anything >= 100,000 counts as unset), else
3. `default_max_length` (128, the project's `FR_MODEL_MAX_LENGTH` default; the caller passes its setting);
then capped by `config.json` `max_position_embeddings` (minus 2 for RoBERTa-style models, whose position
ids start at padding_idx + 1).

Document token cache: a catalog is finite and the same products come back in many result lists, so
`PairTokenizer.encode` keeps each document's tokens (without special tokens) in a bounded LRU
(`DOC_TOKEN_CACHE_ENTRIES`) and builds the pair as the tokenizer would: its pair template (special tokens
and segment ids, read off the tokenizer's own post-processor) around the query's tokens and the document's
tokens cut to what `max_length` leaves (`only_second`, right or left). That is what `tokenizers` does for a
pair (each sequence is tokenized alone, then truncated and post-processed), and at load the assembled ids
are compared with `encode((query, document))` on probe pairs, truncated and empty ones included; a tokenizer
whose pairs do not come out identical is served without the cache. Saves ~5 ms per 100 pairs of ~26 tokens
on the project machine (bench/rerank_bench.py, "tokenize" stage) once the documents have been seen.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from reranker.backends.base import Encoded

log = logging.getLogger(__name__)

#: A tokenizer `model_max_length` at or above this means "not set" (transformers writes 1e30).
UNSET_MAX_LENGTH = 100_000
#: Tokens per pair when neither the caller nor the model folder says (the project's FR_MODEL_MAX_LENGTH default).
DEFAULT_MAX_LENGTH = 128
#: Documents whose tokens `PairTokenizer` keeps (LRU). ~340 bytes per entry (the int64 ids and their array)
#: plus the text: the bundled catalog's 33,185 distinct product texts took 11.2 MB (tracemalloc).
DOC_TOKEN_CACHE_ENTRIES = 100_000
#: ... and at most this many bytes (text length + ids + 200 per entry); only documents of at most `max_length`
#: tokens are kept (a longer one is cut anyway and tokenized each time).
DOC_TOKEN_CACHE_BYTES = 64 * 1024 * 1024
#: Bytes counted per cache entry on top of the text and the ids (dict slot, array header).
_ENTRY_OVERHEAD = 200
#: Model types whose position ids are offset by padding_idx + 1 (2 positions unusable).
_OFFSET_POSITION_TYPES = ("roberta", "xlm-roberta", "camembert")


def read_json(path: str | Path) -> dict:
    """The JSON object in `path`, or {} when the file is missing. Raises ValueError for invalid JSON."""
    p = Path(path)
    if not p.exists():
        return {}
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON: {exc}") from exc
    return obj if isinstance(obj, dict) else {}


def resolve_max_length(model_dir: str | Path, max_length: int | None = None, default_max_length: int = DEFAULT_MAX_LENGTH) -> int:
    """Tokens per (query, document) pair for the model in `model_dir` (rules in the module docstring).

    Returns:
        int >= 1.
    Raises:
        ValueError: the result is below 4 (cannot hold 3 special tokens plus one token).
    """
    d = Path(model_dir)
    if max_length:
        mx = int(max_length)
    else:
        saved = read_json(d / "tokenizer_config.json").get("model_max_length")
        mx = int(saved) if isinstance(saved, (int, float)) and 0 < saved < UNSET_MAX_LENGTH else int(default_max_length)
    cfg = read_json(d / "config.json")
    positions = cfg.get("max_position_embeddings")
    if positions:
        offset = 2 if cfg.get("model_type", "") in _OFFSET_POSITION_TYPES else 0
        mx = min(mx, int(positions) - offset)
    if mx < 4:
        raise ValueError(f"max_length {mx} for {d} is too small for a (query, document) pair")
    return mx


def uses_token_types(model_dir: str | Path) -> bool:
    """Whether the model takes `token_type_ids`: `tokenizer_config.json` `model_input_names` when saved,
    else `config.json` `type_vocab_size` > 1 (BERT 2; RoBERTa/XLM-R 1; DistilBERT has none)."""
    d = Path(model_dir)
    names = read_json(d / "tokenizer_config.json").get("model_input_names")
    if isinstance(names, list) and names:
        return "token_type_ids" in names
    return int(read_json(d / "config.json").get("type_vocab_size", 0) or 0) > 1


def pad_token_id(model_dir: str | Path, tokenizer) -> int:
    """Id of the padding token: tokenizer_config/special_tokens_map `pad_token` looked up in the vocabulary,
    else config.json `pad_token_id`, else 0. (The value only fills masked positions: any id works.)"""
    d = Path(model_dir)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        tok = read_json(d / name).get("pad_token")
        if isinstance(tok, dict):
            tok = tok.get("content")
        if isinstance(tok, str):
            tid = tokenizer.token_to_id(tok)
            if tid is not None:
                return int(tid)
    pid = read_json(d / "config.json").get("pad_token_id")
    return int(pid) if isinstance(pid, int) else 0


class PairBatch:
    """Token data of one encoded batch, padded once to the longest pair of the whole batch.

    Attributes:
        input_ids: (n, width) int64, padded with the pad id.
        token_type_ids: (n, width) int64, or None for models without segment ids.
        lengths: (n,) int64 tokens per pair (special tokens included).
    """

    __slots__ = ("input_ids", "token_type_ids", "lengths")

    def __init__(self, input_ids: np.ndarray, token_type_ids: np.ndarray | None, lengths: np.ndarray):
        self.input_ids = input_ids
        self.token_type_ids = token_type_ids
        self.lengths = lengths


class PairTokenizer:
    """Tokenizes (query, document) pairs for a cross-encoder and pads sub-batches for a forward pass.

    Args:
        tokenizer: a `tokenizers.Tokenizer` (copied; its padding/truncation settings are replaced).
        max_length: tokens per pair (see `resolve_max_length`).
        pad_id: id written into padded positions.
        token_types: whether `batch()` returns `token_type_ids`.
        doc_cache_entries: documents whose tokens are kept (0: no cache; see the module docstring).

    Attributes:
        template: the pair template read off the tokenizer ({"prefix", "middle", "suffix": [(id, type id)],
            "type_a", "type_b"}), or None when assembled pairs did not match `encode` (no cache then).

    Thread-safety: `encode` and `batch` are safe to call from several threads; `query_tokens` takes a lock.
    """

    def __init__(
        self,
        tokenizer,
        max_length: int,
        pad_id: int = 0,
        token_types: bool = True,
        doc_cache_entries: int = DOC_TOKEN_CACHE_ENTRIES,
    ):
        import tokenizers

        spec = tokenizer.to_str()
        self.max_length = int(max_length)
        self.pad_id = int(pad_id)
        self.token_types = bool(token_types)
        self._right = tokenizers.Tokenizer.from_str(spec)
        self._right.no_padding()
        self._right.enable_truncation(self.max_length, strategy="only_second", direction="right")
        self._left = tokenizers.Tokenizer.from_str(spec)
        self._left.no_padding()
        self._left.enable_truncation(self.max_length, strategy="only_second", direction="left")
        self._plain = tokenizers.Tokenizer.from_str(spec)
        self._plain.no_padding()
        self._plain.no_truncation()
        self._plain_lock = threading.Lock()
        self._docs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._docs_max = max(0, int(doc_cache_entries))
        self._docs_bytes_max = DOC_TOKEN_CACHE_BYTES
        self._docs_bytes = 0
        self._docs_lock = threading.Lock()
        self.doc_cache_hits = 0
        self.doc_cache_misses = 0
        self.template = self._read_template() if self._docs_max else None

    @classmethod
    def from_dir(
        cls, model_dir: str | Path, max_length: int | None = None, default_max_length: int = DEFAULT_MAX_LENGTH, tokenizer=None
    ) -> "PairTokenizer":
        """Build from a model folder (`tokenizer.json`, `tokenizer_config.json`, `config.json`).

        Args:
            max_length / default_max_length: see `resolve_max_length`.
            tokenizer: a `tokenizers.Tokenizer` to use instead of `<model_dir>/tokenizer.json` (e.g. one
                converted by transformers for a folder that only has a slow-tokenizer vocabulary).
        Raises:
            FileNotFoundError: no `tokenizer.json` in the folder and no `tokenizer` given.
            ValueError: unusable max_length or invalid JSON files.
        """
        import tokenizers

        d = Path(model_dir)
        if tokenizer is None:
            f = d / "tokenizer.json"
            if not f.exists():
                raise FileNotFoundError(f"{f} not found (a fast-tokenizer file is needed without transformers)")
            tokenizer = tokenizers.Tokenizer.from_file(str(f))
        mx = resolve_max_length(d, max_length, default_max_length)
        return cls(tokenizer, mx, pad_token_id(d, tokenizer), uses_token_types(d))

    # -- the pair template and the document token cache
    def _pieces(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Tokens of each text alone, no special tokens, not truncated: [(k,) int64]."""
        with self._plain_lock:
            encs = self._plain.encode_batch_fast(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encs]

    def _read_template(self) -> dict | None:
        """The tokenizer's pair template, checked against `encode` on probe pairs; None when it does not hold."""
        try:
            with self._plain_lock:
                a = self._plain.encode("red", add_special_tokens=False)
                b = self._plain.encode("midi dress", add_special_tokens=False)
                full = self._plain.post_process(a, b, add_special_tokens=True)
            ids, types, la, lb = full.ids, full.type_ids, len(a.ids), len(b.ids)
            i = next(k for k in range(len(ids)) if ids[k : k + la] == a.ids)
            j = next(k for k in range(i + la, len(ids)) if ids[k : k + lb] == b.ids)
            template = {
                "prefix": list(zip(ids[:i], types[:i])),
                "middle": list(zip(ids[i + la : j], types[i + la : j])),
                "suffix": list(zip(ids[j + lb :], types[j + lb :])),
                "type_a": types[i],
                "type_b": types[j],
            }
        except Exception as exc:  # noqa: BLE001 - any tokenizer we cannot read this way is served without the cache
            log.info("document token cache off: pair template not readable (%s)", exc)
            return None
        probes = [
            ("black leather ankle boots women", "Carlton London Women Black Leather Ankle Boots | Boots | Black"),
            ("red midi dress", ""),
            ("kids t-shirt", "YK Boys Yellow Printed T-shirt, 100% cotton. Ünïcödé façade naïve café — «quoted» 日本語 " * 40),
            ("x", "a " * (3 * self.max_length)),
        ]
        for left in (False, True):
            tk = self._left if left else self._right
            for q, d in probes:
                try:
                    want = tk.encode(q, d)
                except Exception:  # noqa: BLE001 - a probe too long for a tiny max_length: skip it
                    continue
                got = self._assemble(template, self._pieces([q])[0], self._pieces([d])[0], left)
                if got is None or list(got[0]) != want.ids or (self.token_types and list(got[1]) != want.type_ids):
                    log.info("document token cache off: assembled pairs differ from the tokenizer's own")
                    return None
        return template

    @staticmethod
    def _specials(t: dict, part: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, type ids) of the template's special tokens in `part` ("prefix", "middle" or "suffix")."""
        return np.asarray([i for i, _ in t[part]], dtype=np.int64), np.asarray([k for _, k in t[part]], dtype=np.int64)

    def _head(self, t: dict, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, type ids) of everything before the document: prefix, the query's tokens, middle."""
        (pi, pt), (mi, mt) = self._specials(t, "prefix"), self._specials(t, "middle")
        return np.concatenate([pi, q, mi]), np.concatenate([pt, np.full(len(q), t["type_a"], dtype=np.int64), mt])

    def _assemble(self, t: dict, q: np.ndarray, d: np.ndarray, left: bool) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids, type ids) of the pair (q, d) under template `t`, `d` cut to fit max_length; None when even an
        empty document does not fit (the tokenizer raises then)."""
        hi, ht = self._head(t, q)
        si, st = self._specials(t, "suffix")
        budget = self.max_length - len(hi) - len(si)
        if budget < 0 or (budget == 0 and len(d)):
            return None
        d = d[len(d) - budget :] if left and len(d) > budget else d[:budget]
        return np.concatenate([hi, d, si]), np.concatenate([ht, np.full(len(d), t["type_b"], dtype=np.int64), st])

    def _doc_tokens(self, documents: Sequence[str]) -> list[np.ndarray]:
        """Each document's tokens, from the cache or tokenized now (misses in one batch) and kept."""
        out: list[np.ndarray | None] = [None] * len(documents)
        missing: dict[str, list[int]] = {}
        with self._docs_lock:
            for i, d in enumerate(documents):
                hit = self._docs.get(d)
                if hit is None:
                    missing.setdefault(d, []).append(i)
                else:
                    self._docs.move_to_end(d)
                    out[i] = hit
            self.doc_cache_hits += len(documents) - sum(len(v) for v in missing.values())
            self.doc_cache_misses += len(missing)
        if missing:
            texts = list(missing)
            pieces = self._pieces(texts)
            with self._docs_lock:
                for text, ids in zip(texts, pieces):
                    for i in missing[text]:
                        out[i] = ids
                    if len(ids) > self.max_length or text in self._docs:
                        continue
                    self._docs[text] = ids
                    self._docs_bytes += len(text) + ids.nbytes + _ENTRY_OVERHEAD
                while self._docs and (len(self._docs) > self._docs_max or self._docs_bytes > self._docs_bytes_max):
                    text, ids = self._docs.popitem(last=False)
                    self._docs_bytes -= len(text) + ids.nbytes + _ENTRY_OVERHEAD
        return out  # type: ignore[return-value]

    def _encode_cached(
        self, queries: Sequence[str], documents: Sequence[str], truncate_left: Sequence[bool] | None
    ) -> Encoded | None:
        """`encode` through the template and the document cache; None when a pair does not fit (the caller
        falls back to the tokenizer, which raises the usual error)."""
        t = self.template
        qs = dict(zip(dict.fromkeys(queries), self._pieces(list(dict.fromkeys(queries)))))
        docs = self._doc_tokens(documents)
        n = len(documents)
        heads = {q: self._head(t, ids) for q, ids in qs.items()}
        tail_ids, tail_types = self._specials(t, "suffix")
        ns = len(tail_ids)
        lengths = np.empty(n, dtype=np.int64)
        cut = []
        for i in range(n):
            h = heads[queries[i]][0]
            budget = self.max_length - len(h) - ns
            d = docs[i]
            if budget < 0 or (budget == 0 and len(d)):
                return None
            if len(d) > budget:
                d = d[len(d) - budget :] if truncate_left is not None and truncate_left[i] else d[:budget]
            cut.append(d)
            lengths[i] = len(h) + len(d) + ns
        width = int(lengths.max()) if n else 0
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64) if self.token_types else None
        for i in range(n):
            h, ht = heads[queries[i]]
            d = cut[i]
            a, b = len(h), len(h) + len(d)
            ids[i, :a] = h
            ids[i, a:b] = d
            ids[i, b : b + ns] = tail_ids
            if types is not None:
                types[i, :a] = ht
                types[i, a:b] = t["type_b"]
                types[i, b : b + ns] = tail_types
        return Encoded(lengths=lengths, data=PairBatch(ids, types, lengths))

    def query_tokens(self, query: str) -> int:
        """Tokens of `query` alone, without special tokens."""
        with self._plain_lock:
            return len(self._plain.encode(query, add_special_tokens=False).ids)

    def pair_tokens(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """(len(documents),) int64: tokens of each whole (query, documents[i]) pair, special tokens included,
        not truncated (a value above max_length means `encode` would cut that document)."""
        if not documents:
            return np.zeros(0, dtype=np.int64)
        with self._plain_lock:
            encs = self._plain.encode_batch_fast([(query, d) for d in documents])
        return np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))

    def encode(self, queries: Sequence[str], documents: Sequence[str], truncate_left: Sequence[bool] | None = None) -> Encoded:
        """Tokenize pairs (queries[i], documents[i]) once -> `Encoded` whose `data` is a `PairBatch`.

        Raises:
            ValueError: len(queries) != len(documents), or a query too long to fit a pair in max_length
                (tokenizers raises a bare Exception for that; it is re-raised as ValueError).
        """
        if len(queries) != len(documents):
            raise ValueError(f"{len(queries)} queries for {len(documents)} documents")
        if self.template is not None and len(documents):
            try:
                fast = self._encode_cached(queries, documents, truncate_left)
            except Exception:  # noqa: BLE001 - text the tokenizer refuses: its own path below reports it
                fast = None
            if fast is not None:
                return fast
        n = len(documents)
        pairs = list(zip(queries, documents))
        try:
            if truncate_left is None or not any(truncate_left):
                encs = self._right.encode_batch_fast(pairs)
            else:
                encs = [None] * n
                right = [i for i in range(n) if not truncate_left[i]]
                left = [i for i in range(n) if truncate_left[i]]
                for tk, idx in ((self._right, right), (self._left, left)):
                    if idx:
                        for i, e in zip(idx, tk.encode_batch_fast([pairs[i] for i in idx])):
                            encs[i] = e
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a query that cannot fit
            raise ValueError(f"cannot fit a (query, document) pair into {self.max_length} tokens: {exc}") from exc
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=n)
        width = int(lengths.max()) if n else 0
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64) if self.token_types else None
        for i, e in enumerate(encs):
            k = len(e.ids)
            ids[i, :k] = e.ids
            if types is not None:
                types[i, :k] = e.type_ids
        return Encoded(lengths=lengths, data=PairBatch(ids, types, lengths))

    def batch(self, encoded: Encoded, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Model inputs for the pairs `indices` of `encoded`, padded to their own longest pair.

        Returns:
            {"input_ids", "attention_mask", ["token_type_ids"]}: each (len(indices), width) int64,
            width = max tokens among those pairs; attention_mask is 1 on real tokens, 0 on padding.
        """
        data: PairBatch = encoded.data
        idx = np.asarray(indices, dtype=np.int64)
        lens = encoded.lengths[idx]
        width = int(lens.max()) if len(idx) else 0
        out = {
            "input_ids": data.input_ids[idx, :width],
            "attention_mask": (np.arange(width, dtype=np.int64)[None, :] < lens[:, None]).astype(np.int64),
        }
        if data.token_type_ids is not None:
            out["token_type_ids"] = data.token_type_ids[idx, :width]
        return out
