"""The gate's choice among variants (`labeling.export.decide`): the fastest allowed one serves; each int8 graph
is judged on its own held-out figures."""

from __future__ import annotations

from fashion_rerank.onnx_export import DEFAULT_VARIANTS, SERVE_PREFERENCE
from labeling.export import decide


def _manifest(**losses: float) -> dict:
    variants = {"fp32": {"agreement": {}}}
    for name, loss in losses.items():
        variants[name.replace("_", "-")] = {"agreement": {"ndcg10": 0.90 - loss, "ndcg10_fp32": 0.90, "std_ratio": 1.0}}
    return {"variants": variants}


def test_the_gate_serves_whichever_int8_graph_keeps_quality():
    assert DEFAULT_VARIANTS == ("fp32", "int8", "int8-plain")
    assert SERVE_PREFERENCE.index("int8") < SERVE_PREFERENCE.index("int8-plain") < SERVE_PREFERENCE.index("fp32")
    both = decide(_manifest(int8=0.001, int8_plain=0.002))
    assert both["serve"] == "int8" and both["allowed"] == ["fp32", "int8", "int8-plain"]
    smoothed_refused = decide(_manifest(int8=0.0062, int8_plain=0.0030))
    assert smoothed_refused["serve"] == "int8-plain" and "int8" in smoothed_refused["refused"]
    plain_refused = decide(_manifest(int8=-0.0029, int8_plain=0.0054))
    assert plain_refused["serve"] == "int8" and "int8-plain" in plain_refused["refused"]
    neither = decide(_manifest(int8=0.006, int8_plain=0.0051))
    assert neither["serve"] == "fp32" and set(neither["refused"]) == {"int8", "int8-plain"}
