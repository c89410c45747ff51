"""Model cards of trained versions: `card.json` (machine-readable) and `model_card.md` (for people).

`card.json` is what makes a registry version complete (`ModelRegistry.versions()` lists only folders
that have one), so it is written last and atomically (temp file + `os.replace`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from labeling.store import utc_now


def build_card(
    *,
    name: str,
    version: str,
    training: dict[str, Any],
    judgments: dict[str, Any],
    evaluation: dict[str, Any] | None = None,
    gate: dict[str, Any] | None = None,
    onnx: dict[str, Any] | None = None,
    score: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card as a dict.

    Args:
        training: `TrainStats.to_dict()` (base model, loss, hyperparameters, time).
        judgments: {"count", "queries", "judge_model", "prompt_version", "reference_judge", "grades", "store"}.
        evaluation: {"dev": Evaluation.to_dict(), "test": ...}.
        gate: `GateDecision.to_dict()`.
        onnx: `labeling.export.export_version(...)`: the ONNX variants, how they were made, which serves and why.
        score: the activation the model declares (`fashion_rerank.scores.Activation.to_manifest()`): served
            score = activation(logit), the space of the evaluation's score spread and of the gate.
    """
    label_source = (
        "reference rubric judge (deterministic rules over catalog attributes, NOT an LLM)"
        if judgments.get("reference_judge")
        else f"LLM judge {judgments.get('judge_model')}"
    )
    return {
        "name": name,
        "version": version,
        "created": utc_now(),
        "task": "fashion product reranking: (shopper query, rerank_text(product)) -> relevance score "
        f"= {(score or {}).get('name', 'activation')}(logit)",
        "score": score,
        "base_model": {"id": training.get("base_model"), "kind": training.get("base_model_kind")},
        "judgments": {**judgments, "label_source": label_source},
        "training": training,
        "evaluation": evaluation or {},
        "gate": gate,
        "onnx": onnx,
    }


def _markdown(card: dict[str, Any]) -> str:
    t = card["training"]
    j = card["judgments"]
    lines = [
        f"# {card['name']} {card['version']}",
        "",
        f"Cross-encoder reranker for fashion product search ({card['task']}).",
        "",
        "## Base model",
        f"- `{card['base_model']['id']}`: {card['base_model']['kind']}",
        "",
        "## Judgments used",
        f"- {j.get('count')} graded (query, product) pairs from {j.get('queries')} train-split queries",
        f"- judge: `{j.get('judge_model')}`, prompt version `{j.get('prompt_version')}`",
        f"- labels come from: **{j['label_source']}**",
        f"- grades 0/1/2/3: {', '.join(str(v) for v in (j.get('grades') or {}).values())}",
        "",
        "## Training",
        f"- loss {t.get('loss')}, learning rate {t.get('learning_rate')}, epochs {t.get('epochs')}, batch {t.get('batch_size')}, "
        f"max_length {t.get('max_length')}, warmup steps {t.get('warmup_steps')}, seed {t.get('seed')}",
        f"- {t.get('steps')} steps in {t.get('seconds')} s on {t.get('threads')} threads: {t.get('pairs_per_s')} pairs/s, "
        f"{t.get('seconds_per_1k_pairs_epoch')} s per 1,000 pairs per epoch",
        "",
        "## Evaluation",
    ]
    for split, ev in (card.get("evaluation") or {}).items():
        if not ev:
            continue
        lines += [
            f"### {split} ({ev['queries']} queries)",
            "",
            "| system | nDCG@10 | MRR@10 | Recall@10 | Judged@10 |",
            "|---|---|---|---|---|",
        ]
        for name, s in ev["systems"].items():
            m = s["metrics"]
            label = name + (f" ({s['model']})" if s.get("model") else "")
            lines.append(f"| {label} | {m['nDCG@10']:.4f} | {m['MRR@10']:.4f} | {m['Recall@10']:.4f} | {m['Judged@10']:.4f} |")
        for k, v in (ev.get("significance") or {}).items():
            lines.append(
                f"\n{k}: mean nDCG@10 difference {v.get('mean_diff')}, paired t-test p={v.get('p_ttest')}, "
                f"Wilcoxon p={v.get('p_wilcoxon')} (n={v.get('n')})"
            )
        lines.append("")
    lines.append("MRR@10 and Recall@10 count a product as relevant when its grade is >= 2.")
    gate = card.get("gate")
    if gate:
        lines += [
            "",
            "## Promotion gate",
            f"- decision: **{'promote' if gate.get('promote') else 'keep serving model'}** (baseline: {gate.get('baseline')})",
        ]
        lines += [f"- {c['name']}: {'pass' if c['passed'] else 'FAIL'} — {c['detail']}" for c in gate.get("checks", [])]
    onnx = card.get("onnx")
    if onnx:
        lines += ["", "## ONNX Runtime files (onnx/)", f"- serves: **{onnx['serve']}**; allowed: {', '.join(onnx['allowed'])}"]
        lines += [f"- refused {name}: {why}" for name, why in (onnx.get("refused") or {}).items()]
        lines.append(f"- rule: {onnx['rule']} ({onnx['judged_pairs']} held-out judged pairs)")
        for name, recipe in (onnx.get("variants") or {}).items():
            a = (onnx.get("agreement") or {}).get(name) or {}
            figures = ", ".join(f"{k} {v:.4f}" for k, v in a.items() if isinstance(v, float))
            lines.append(f"- {name}: {recipe}" + (f"; vs fp32: {figures}" if figures else ""))
        lines.append(
            f"- made with {onnx.get('versions')}, opset {onnx.get('opset')}, {onnx['calibration_pairs']} calibration pairs"
        )
    return "\n".join(lines) + "\n"


def write_model_card(folder: str | Path, card: dict[str, Any]) -> None:
    """Write `model_card.md`, then `card.json` atomically, into a version folder (completing the version)."""
    folder = Path(folder)
    (folder / "model_card.md").write_text(_markdown(card), encoding="utf-8")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".card.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(card, fh, indent=2, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / "card.json")
