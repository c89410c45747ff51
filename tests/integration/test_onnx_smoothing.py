"""Activation smoothing before dynamic int8 (`fashion_rerank.onnx_export.smooth_layer_norm_outputs`), on the
real trained fixture model: the smoothed fp32 graph computes the same logits, its int8 graph follows fp32
more closely than plain int8 on held-out queries, and an export records what it did (or why it did not)."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
from conftest import graded_training_pairs
from onnxruntime.quantization import QuantType, quantize_dynamic

from fashion_rerank.onnx_export import (
    RECIPES,
    _feeds,
    _PairEncoder,
    _scores,
    _session,
    agreement,
    export_cross_encoder,
    export_plain_cross_encoder,
    smooth_layer_norm_outputs,
)


def _groups(pairs):
    out: dict[str, list[int]] = {}
    for i, (q, _) in enumerate(pairs):
        out.setdefault(q, []).append(i)
    return [np.asarray(v) for v in out.values()]


def _int8(src, dst):
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, extra_options={"DefaultTensorType": 1})


def test_smoothing_keeps_fp32_logits_and_brings_int8_closer_to_fp32(trained_registry, tmp_path):
    folder = trained_registry.path(trained_registry.current())
    tok = _PairEncoder(folder)
    plain = tmp_path / "plain.onnx"
    export_plain_cross_encoder(folder, plain, 17, graph="compact")
    calibration = [(q, t) for q, t, _ in graded_training_pairs(n_queries=20, seed=3)]
    smoothed = tmp_path / "smoothed.onnx"
    n = smooth_layer_norm_outputs(plain, smoothed, _feeds(tok, calibration, 32), alpha=0.5)
    layers = sum(1 for x in onnx.load(str(plain)).graph.node if x.op_type == "LayerNormalization")
    assert n == layers - 1  # every LayerNorm read by weight MatMuls; the last one feeds the pooler's Gather

    held_out = [(q, t) for q, t, _ in graded_training_pairs(n_queries=40, seed=7)]
    ref = _scores(_session(plain), tok, held_out)
    assert np.abs(_scores(_session(smoothed), tok, held_out) - ref).max() < 1e-4

    _int8(plain, tmp_path / "plain_int8.onnx")
    _int8(smoothed, tmp_path / "smoothed_int8.onnx")
    groups = _groups(held_out)
    got = {
        k: agreement([ref[i] for i in groups], [_scores(_session(tmp_path / f"{k}_int8.onnx"), tok, held_out)[i] for i in groups])
        for k in ("plain", "smoothed")
    }
    assert got["smoothed"]["spearman"] > got["plain"]["spearman"], got
    assert got["smoothed"]["max_abs_diff"] < got["plain"]["max_abs_diff"], got


def test_export_records_the_smoothing_and_skips_it_without_calibration_pairs(trained_registry, tmp_path):
    assert RECIPES["int8"].get("smooth") == 0.5
    folder = tmp_path / "version"
    shutil.copytree(trained_registry.path(trained_registry.current()), folder, ignore=shutil.ignore_patterns("onnx"))
    calibration = [(q, t) for q, t, _ in graded_training_pairs(n_queries=10, seed=3)]
    recipe = export_cross_encoder(folder, calibration_pairs=calibration)["variants"]["int8"]["recipe"]
    assert recipe["smoothed_layer_norms"] > 0 and recipe["smooth_calibration_pairs"] == len(calibration)
    assert not list((folder / "onnx").glob("*.smooth.onnx"))  # the intermediate graph is not left behind

    bare = export_cross_encoder(folder, out_dir=tmp_path / "bare")["variants"]
    assert bare["int8"]["recipe"]["smooth_skipped"] == "no calibration pairs"
    assert "smoothed_layer_norms" not in bare["int8"]["recipe"]
    assert set(bare) == {"fp32", "int8"}  # int8-plain would be the same graph again
