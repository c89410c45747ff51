"""The quality gate on quantized ONNX variants, with a real trained model and held-out graded rows: a variant
serves exactly when it keeps quality; a deliberately damaged quantized file (internally consistent: its
checksum recorded) is refused on held-out nDCG@10, fp32 serves, and the backend, the manifest and the log
say so."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import onnx
from conftest import graded_training_pairs
from onnx import numpy_helper

from fashion_rerank.onnx_export import export_cross_encoder, read_manifest, sha256_file, write_manifest
from labeling.export import decide, regate
from reranker.backends import load_backend


def _held_out_rows() -> list[tuple[str, str, float]]:
    """(query, text, grade 0-3) rows of queries the fixture model was not trained on (another seed)."""
    return [(q, t, round(g * 3)) for q, t, g in graded_training_pairs(n_queries=40, seed=7)]


def _damage(path) -> None:
    """Scramble the int8 weights of a quantized graph: same ops and shapes, different numbers."""
    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.int8 and arr.size > 1000:
            init.CopyFrom(numpy_helper.from_array(rng.permutation(arr.ravel()).reshape(arr.shape), init.name))
    onnx.save(model, str(path))


def test_the_gate_serves_a_good_variant_and_refuses_a_damaged_one(trained_registry, tmp_path, caplog):
    folder = tmp_path / "version"
    shutil.copytree(trained_registry.path(trained_registry.current()), folder, ignore=shutil.ignore_patterns("onnx"))
    judged = _held_out_rows()
    calibration = [(q, t) for q, t, _ in graded_training_pairs(n_queries=20, seed=3)]
    manifest = export_cross_encoder(folder, calibration_pairs=calibration, judged=judged)
    first = decide(manifest)
    for name in ("int8", "int8-plain"):
        a = manifest["variants"][name]["agreement"]
        keeps_quality = a["ndcg10_fp32"] - a["ndcg10"] <= 0.005 and a["std_ratio"] >= 0.8
        # the decision follows the measured figures: each int8 graph is allowed exactly when it keeps quality
        assert (name in first["allowed"]) == keeps_quality and (name in first["refused"]) == (not keeps_quality), a
    assert first["serve"] == next(n for n in ("int8", "int8-plain", "fp32") if n in first["allowed"])

    # deliberately damaged quantized files (both int8 graphs), their checksums updated so only the gate can catch it
    m = read_manifest(folder / "onnx")
    quantized = [n for n in m["variants"] if n != "fp32"]
    assert quantized == ["int8", "int8-plain"]
    for name in quantized:
        path = folder / "onnx" / m["variants"][name]["file"]
        _damage(path)
        m["variants"][name]["sha256"] = sha256_file(path)
    write_manifest(folder / "onnx", m)
    with caplog.at_level(logging.WARNING, logger="labeling.export"):
        decision = regate(folder, judged)
    assert decision["serve"] == "fp32" and set(decision["refused"]) == set(quantized)
    assert all("nDCG@10" in why or "spread" in why for why in decision["refused"].values())
    assert any("int8" in r.message and "refused" in r.message for r in caplog.records)
    gate = read_manifest(folder / "onnx")["gate"]
    assert gate["serve"] == "fp32" and "int8" not in gate["allowed"] and "int8" in gate["evidence"]["refused"]

    backend = load_backend("onnx", folder, version="v1", threads=1)  # variant "auto": the gate's choice
    assert backend.variant == "fp32" and backend.version == "v1+onnx-fp32" and backend.registry_version == "v1"
    forced = load_backend("onnx", folder, version="v1", threads=1, variant="int8")  # still loadable by name
    q, docs = judged[0][0], [t for qq, t, _ in judged if qq == judged[0][0]]
    assert not np.allclose(forced.score(q, docs), backend.score(q, docs), atol=1e-2)
