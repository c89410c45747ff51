"""ONNX files for a trained registry version, with the quality gate decided on the version's held-out judgments.

Every version that `train` / `refresh` writes carries `onnx/` (`fashion_rerank.onnx_export`): an fp32 graph
and quantized variants. A quantized variant may serve only when, on the version's held-out (test split)
judgments, its nDCG@10 is at most `MAX_NDCG_LOSS` below fp32's and its scores keep their spread (standard
deviation at least `MIN_SPREAD_RATIO` of fp32's over the same pairs); otherwise fp32 serves. The decision,
its numbers and its reason go into `onnx/manifest.json` (`gate`, read by the sidecar's ONNX backend) and into
the model card.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Sequence

from fashion_rerank.onnx_export import SERVE_PREFERENCE, export_cross_encoder, judged_quality, read_manifest, set_gate
from labeling import prompts
from labeling.dataset import TrainPair, eval_queries

log = logging.getLogger(__name__)

#: A quantized variant serves only within this nDCG@10 of fp32 on held-out judgments (issue 10's gate).
MAX_NDCG_LOSS = 0.005
#: ... and when its scores' standard deviation is at least this share of fp32's (no collapsed scores).
MIN_SPREAD_RATIO = 0.8
#: (query, product text) pairs of the training set used to calibrate and check the variants.
CALIBRATION_PAIRS = 512


def held_out_rows(store, judge_model: str, split: str = "test") -> list[tuple[str, str, float]]:
    """(query, product text, grade) of every labeled candidate of the held-out `split` queries."""
    rows = []
    for q in eval_queries(store, judge_model, prompts.PROMPT_VERSION, split):
        for c in q.candidates:
            if c.product_id in q.qrels:
                rows.append((q.query, c.text, float(q.qrels[c.product_id])))
    return rows


def decide(manifest: dict, max_ndcg_loss: float = MAX_NDCG_LOSS, min_spread: float = MIN_SPREAD_RATIO) -> dict:
    """The gate from the export's per-variant agreement figures: {"serve", "allowed", "refused": {name: reason}, "rule"}.

    A variant without judged figures (no held-out judgments) is judged on ranking agreement only by the export's
    default rule; this function keeps that decision for it.
    """
    variants = manifest.get("variants", {})
    default = manifest.get("gate", {})
    allowed = ["fp32"]
    refused: dict[str, str] = {}
    for name, v in variants.items():
        if name == "fp32":
            continue
        a = v.get("agreement") or {}
        if a.get("ndcg10") is None or a.get("ndcg10_fp32") is None:
            if name in default.get("allowed", []):
                allowed.append(name)
            else:
                refused[name] = "no held-out judgments and ranking agreement with fp32 below the export's thresholds"
            continue
        loss = a["ndcg10_fp32"] - a["ndcg10"]
        spread = a.get("std_ratio")
        if loss > max_ndcg_loss:
            refused[name] = (
                f"held-out nDCG@10 {a['ndcg10']:.4f} is {loss:.4f} below fp32's {a['ndcg10_fp32']:.4f} (limit {max_ndcg_loss})"
            )
        elif spread is not None and spread < min_spread:
            refused[name] = f"scores lost their spread: std {spread:.2f} x fp32's (limit {min_spread})"
        else:
            allowed.append(name)
    serve = next((n for n in SERVE_PREFERENCE if n in allowed), "fp32")
    return {
        "serve": serve,
        "allowed": allowed,
        "refused": refused,
        "rule": f"quantized variant serves if held-out nDCG@10 >= fp32 - {max_ndcg_loss} and score std >= "
        f"{min_spread} x fp32's; else fp32",
    }


def export_version(path: str | Path, store, judge_model: str, train_pairs: Sequence[TrainPair], seed: int = 42) -> dict[str, Any]:
    """Write `<path>/onnx/` for the trained version in `path` and gate its variants; returns the card's `onnx` entry.

    Raises what `fashion_rerank.onnx_export.export_cross_encoder` raises (e.g. ValueError when the fp32 graph
    disagrees with torch).
    """
    rng = random.Random(seed)
    calibration = [(p.query, p.text) for p in rng.sample(list(train_pairs), min(CALIBRATION_PAIRS, len(train_pairs)))]
    judged = held_out_rows(store, judge_model)
    manifest = export_cross_encoder(path, calibration_pairs=calibration, judged=judged or None)
    decision = decide(manifest)
    evidence = {n: (v.get("agreement") or {}) for n, v in manifest.get("variants", {}).items()}
    set_gate(
        Path(path) / "onnx",
        decision["serve"],
        decision["allowed"],
        decided_by="labeling.export.decide (held-out judgments)" if judged else "labeling.export.decide (no judgments)",
        rule=decision["rule"],
        evidence={"refused": decision["refused"], "judged_pairs": len(judged), "agreement": evidence},
    )
    for name, why in decision["refused"].items():
        log.warning("ONNX variant %s of %s refused: %s; serving %s", name, Path(path).name, why, decision["serve"])
    return {
        "variants": {n: v.get("recipe") for n, v in manifest.get("variants", {}).items()},
        "serve": decision["serve"],
        "allowed": decision["allowed"],
        "refused": decision["refused"],
        "rule": decision["rule"],
        "judged_pairs": len(judged),
        "calibration_pairs": len(calibration),
        "agreement": evidence,
        "versions": manifest.get("versions"),
        "opset": manifest.get("opset"),
    }


def regate(path: str | Path, judged: Sequence[tuple[str, str, float]]) -> dict:
    """Decide the gate again from the variant files as they are on disk now (e.g. after a file was replaced),
    scoring each on `judged` (query, text, grade) rows; writes the manifest's gate and returns the decision."""
    quality = judged_quality(path, judged)
    manifest = read_manifest(Path(path) / "onnx")
    for name, v in manifest.get("variants", {}).items():
        v["agreement"] = {**(v.get("agreement") or {}), **quality.get(name, {})}
    decision = decide(manifest)
    set_gate(
        Path(path) / "onnx",
        decision["serve"],
        decision["allowed"],
        decided_by="labeling.export.regate (held-out judgments, files as on disk)",
        rule=decision["rule"],
        evidence={"refused": decision["refused"], "judged_pairs": len(judged), "quality": quality},
    )
    for name, why in decision["refused"].items():
        log.warning("ONNX variant %s of %s refused: %s; serving %s", name, Path(path).name, why, decision["serve"])
    return decision
