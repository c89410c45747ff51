"""The score convention, in one place: what a served score means.

A cross-encoder returns one logit per (query, document) pair. Every front (gRPC `Rerank` and `Search`,
TEI `Rerank`, the Cohere- and TEI-shaped HTTP routes) serves `score = activation(logit)`, where
`activation` is the function the saved model declares, exactly as `sentence_transformers.CrossEncoder`
applies it in `predict` (higher always means more relevant); TEI's `raw_scores` and the gRPC `logit`
fields return the logit itself. The promotion gate, evaluation, the ONNX quality gate and every score
threshold use the same served scores, so one number means one thing everywhere.

Where the activation is declared (read by `declared_activation`, in the order sentence-transformers 6.2
reads it, `sentence_transformers/cross_encoder/model.py`):
1. `config_sentence_transformers.json` `activation_fn` (what CrossEncoder.save_pretrained writes since v5);
2. `config.json` `sentence_transformers.activation_fn` (v4 and the hub's ms-marco cross-encoders);
3. `config.json` `sbert_ce_default_activation_function` (before v4);
4. nothing declared: `Sigmoid` for a model with one label, `Identity` otherwise (CrossEncoder's default).
Fine-tunes of the ms-marco models declare `torch.nn.modules.linear.Identity` (score = logit, unbounded);
a CrossEncoder made with `num_labels=1` and no activation declares `torch.nn.modules.activation.Sigmoid`
(score in [0, 1]). A declared function outside `SUPPORTED` is refused with ValueError: serving any other
number than the one the model's author declared would break the convention silently.

The ONNX export records the activation in its manifest (`Activation.to_manifest`), so a serve-only
installation applies the same function without reading sentence-transformers' files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Canonical name -> dotted paths that declare it (the `fullname` sentence-transformers writes first).
SUPPORTED: dict[str, tuple[str, ...]] = {
    "identity": ("torch.nn.modules.linear.Identity", "torch.nn.Identity"),
    "sigmoid": ("torch.nn.modules.activation.Sigmoid", "torch.nn.Sigmoid"),
    "tanh": ("torch.nn.modules.activation.Tanh", "torch.nn.Tanh"),
}
_BY_PATH = {p: name for name, paths in SUPPORTED.items() for p in paths}


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function of logits `x` (any shape), float32 in [0, 1], same shape."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out.astype(np.float32)


def _identity(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).copy()


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(np.asarray(x, dtype=np.float64)).astype(np.float32)


_FUNCTIONS = {"identity": _identity, "sigmoid": sigmoid, "tanh": _tanh}
#: Range of the served score per activation (for documentation and range checks; None: unbounded).
RANGES: dict[str, tuple[float | None, float | None]] = {"identity": (None, None), "sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


@dataclass(frozen=True)
class Activation:
    """The function from a cross-encoder logit to its served score.

    Attributes:
        name: "identity", "sigmoid" or "tanh" (a key of `SUPPORTED`).
        declared: the dotted path as the model declares it, or None when it declares none.
        source: where it was read, e.g. "config_sentence_transformers.json:activation_fn",
            or "default (num_labels=1)".
    """

    name: str
    declared: str | None = None
    source: str = "default (num_labels=1)"

    def __post_init__(self) -> None:
        if self.name not in _FUNCTIONS:
            raise ValueError(f"unknown activation {self.name!r}; supported: {', '.join(SUPPORTED)}")

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """Served scores of `logits` (any shape), float32, same shape (a copy for identity)."""
        return _FUNCTIONS[self.name](logits)

    @property
    def torch_path(self) -> str:
        """The dotted torch class this activation is (what sentence-transformers would save)."""
        return SUPPORTED[self.name][0]

    @property
    def range(self) -> tuple[float | None, float | None]:
        """(low, high) bounds of the served score; None where unbounded."""
        return RANGES[self.name]

    def to_manifest(self) -> dict[str, Any]:
        """{"name", "declared", "source", "torch"}: what the ONNX manifest records (`from_manifest` reads it)."""
        return {"name": self.name, "declared": self.declared, "source": self.source, "torch": self.torch_path}

    @classmethod
    def from_manifest(cls, entry: dict[str, Any] | str) -> "Activation":
        """Read a manifest's `activation` entry (a dict from `to_manifest`, or a bare name).

        Raises:
            ValueError: an unknown name.
        """
        if isinstance(entry, str):
            return cls(entry, None, "manifest")
        if not isinstance(entry, dict) or "name" not in entry:
            raise ValueError(f"manifest activation {entry!r} has no name")
        return cls(str(entry["name"]), entry.get("declared"), str(entry.get("source") or "manifest"))


#: What a model that declares nothing and has one label gets (sentence-transformers' default).
DEFAULT = Activation("sigmoid", None, "default (num_labels=1)")


def resolve(declared: str | None, num_labels: int = 1, source: str = "") -> Activation:
    """The Activation for a declared dotted path (None: the default for `num_labels`).

    Raises:
        ValueError: a declared path that is not one of `SUPPORTED` (e.g. a custom function).
    """
    if declared is None:
        if int(num_labels) == 1:
            return DEFAULT
        return Activation("identity", None, f"default (num_labels={int(num_labels)})")
    name = _BY_PATH.get(str(declared))
    if name is None:
        raise ValueError(
            f"the model declares the activation {declared!r} ({source or 'declared'}); this service applies only "
            f"{', '.join(p for ps in SUPPORTED.values() for p in ps)}: it refuses to serve a score the model does not declare"
        )
    return Activation(name, str(declared), source or "declared")


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    return obj if isinstance(obj, dict) else {}


def num_labels(model_dir: str | Path) -> int:
    """Output labels of the model in `model_dir` (`config.json` `num_labels`, else the size of `id2label`, else 1)."""
    cfg = _read_json(Path(model_dir) / "config.json")
    if isinstance(cfg.get("num_labels"), int):
        return int(cfg["num_labels"])
    if isinstance(cfg.get("id2label"), dict) and cfg["id2label"]:
        return len(cfg["id2label"])
    return 1


def declared_activation(model_dir: str | Path) -> Activation:
    """The activation the cross-encoder saved in `model_dir` declares (order in the module docstring).

    Raises:
        ValueError: an unsupported declared function, or invalid JSON in the config files.
    """
    d = Path(model_dir)
    st = _read_json(d / "config_sentence_transformers.json")
    if st.get("activation_fn") is not None:
        return resolve(st["activation_fn"], source="config_sentence_transformers.json:activation_fn")
    cfg = _read_json(d / "config.json")
    nested = cfg.get("sentence_transformers")
    if isinstance(nested, dict) and nested.get("activation_fn") is not None:
        return resolve(nested["activation_fn"], source="config.json:sentence_transformers.activation_fn")
    if cfg.get("sbert_ce_default_activation_function") is not None:
        return resolve(cfg["sbert_ce_default_activation_function"], source="config.json:sbert_ce_default_activation_function")
    return resolve(None, num_labels(d))
