"""Scores mean one thing: served score = activation(logit), the activation the saved model declares.

Two tiny cross-encoders are trained here from the packaged all-MiniLM-L6-v2 (a few real optimizer steps
on fixed pairs): one declares Identity (as a fine-tune of the ms-marco cross-encoders does), one declares
Sigmoid (sentence-transformers' default for num_labels=1). Each is scored on fixed pairs right after
training (the in-memory `CrossEncoder.predict`: the reference), saved into a model registry with its ONNX
export, and reloaded through the sidecar's torch and ONNX backends and through a fresh
`sentence_transformers.CrossEncoder`: the scores must agree within 1e-5 and the activation, `max_length`
and `num_labels` must survive the round trip. The older spellings of the declaration (config.json
`sentence_transformers.activation_fn`, `sbert_ce_default_activation_function`) are read the same way by
both sides, and the promotion gate's scorer measures the same served scores. Finally a running sidecar
serves each model on both fronts: gRPC (`Rerank`, TEI `Rerank`) and HTTP (Cohere `/v1/rerank`, TEI
`/rerank`) must return the same score for the same pair.
"""

from __future__ import annotations

import json
import shutil
import socket

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.slow

QUERY = "black leather ankle boots women"
DOCS = [
    "Carlton London Women Black Leather Ankle Boots | Boots | Black | Women | Casual | Winter",
    "Fastrack Men Black Analogue Watch | Watches | Black | Men | Casual | Summer",
    "Vero Moda Women Red Midi Dress | Dresses | Red | Women | Party | Summer",
    "Catwalk Women Black Heeled Boots | Heels | Black | Women | Casual | Winter",
    "Puma Men Red Running Shoes | Sports Shoes | Red | Men | Sports | Fall",
]
#: (query, document, target in [0, 1]) rows for the few training steps.
TRAIN = [
    ("black leather ankle boots women", DOCS[0], 1.0),
    ("black leather ankle boots women", DOCS[1], 0.0),
    ("black leather ankle boots women", DOCS[3], 0.67),
    ("red midi dress", DOCS[2], 1.0),
    ("red midi dress", DOCS[4], 0.0),
    ("red midi dress", DOCS[0], 0.0),
    ("men red running shoes", DOCS[4], 1.0),
    ("men red running shoes", DOCS[2], 0.0),
]
TOL = 1e-5
#: max_length each model is made with (different from each other and from the 128 default: preserved, not defaulted).
MAX_LENGTH = {"identity": 48, "sigmoid": 40}
TORCH_CLASS = {"identity": "Identity", "sigmoid": "Sigmoid"}


def _train(kind: str, root):
    """Train `kind` a few steps, score DOCS in memory, save + export + promote in a fresh registry."""
    import torch
    from datasets import Dataset
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from fashion_rerank.onnx_export import export_cross_encoder
    from fashion_rerank.registry import ModelRegistry
    from fashion_rerank.settings import resolve_model_path

    torch.manual_seed(0)
    extra = {"activation_fn": torch.nn.Identity()} if kind == "identity" else {}
    model = CrossEncoder(
        resolve_model_path("packaged:all-MiniLM-L6-v2"), num_labels=1, max_length=MAX_LENGTH[kind], device="cpu", **extra
    )
    data = Dataset.from_dict({"query": [r[0] for r in TRAIN], "document": [r[1] for r in TRAIN], "label": [r[2] for r in TRAIN]})
    args = CrossEncoderTrainingArguments(
        output_dir=str(root / "train"),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=2e-4,
        seed=0,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
        use_cpu=True,
    )
    before = model.predict([(QUERY, d) for d in DOCS], activation_fn=torch.nn.Identity())
    CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=BinaryCrossEntropyLoss(model)).train()
    pairs = [(QUERY, d) for d in DOCS]
    ref = np.asarray(model.predict(pairs), dtype=np.float32)
    logits = np.asarray(model.predict(pairs, activation_fn=torch.nn.Identity()), dtype=np.float32)
    assert not np.allclose(before, logits, atol=1e-4), "the training steps changed nothing"

    registry = ModelRegistry(root / "models", f"rt-{kind}")
    version, folder = registry.new_version_dir()
    model.save_pretrained(str(folder))
    export_cross_encoder(folder, calibration_pairs=[(q, d) for q, d, _ in TRAIN], variants=["fp32"])
    (folder / "card.json").write_text(json.dumps({"version": version, "purpose": "score round-trip test"}))
    registry.promote(version, reason="score round-trip test")
    return {"kind": kind, "registry": registry, "folder": folder, "ref": ref, "logits": logits}


@pytest.fixture(scope="module", params=["identity", "sigmoid"])
def trained(request, tmp_path_factory):
    return _train(request.param, tmp_path_factory.mktemp(f"roundtrip-{request.param}"))


def test_the_reference_applies_the_declared_activation(trained):
    expected = trained["logits"] if trained["kind"] == "identity" else 1 / (1 + np.exp(-trained["logits"].astype(np.float64)))
    np.testing.assert_allclose(trained["ref"], expected, atol=1e-6)


def test_saved_files_declare_activation_max_length_and_labels(trained):
    from fashion_rerank.scores import declared_activation

    folder = trained["folder"]
    st = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert st["activation_fn"].endswith("." + TORCH_CLASS[trained["kind"]])
    act = declared_activation(folder)
    assert act.name == trained["kind"] and act.source == "config_sentence_transformers.json:activation_fn"
    manifest = json.loads((folder / "onnx" / "manifest.json").read_text())
    assert manifest["activation"]["name"] == trained["kind"]
    assert manifest["activation"]["declared"] == st["activation_fn"]
    assert manifest["max_length"] == MAX_LENGTH[trained["kind"]] and manifest["num_labels"] == 1


@pytest.mark.parametrize("backend_kind", ["torch", "onnx"])
def test_sidecar_backends_serve_the_reference_scores(trained, backend_kind):
    from reranker.backends import load_backend

    kwargs = {"variant": "fp32", "threads": 1} if backend_kind == "onnx" else {"threads": 1}
    b = load_backend(backend_kind, trained["folder"], **kwargs)
    try:
        logits = b.score(QUERY, DOCS)
        assert b.activation.name == trained["kind"]
        assert b.max_length == MAX_LENGTH[trained["kind"]]
        np.testing.assert_allclose(logits, trained["logits"], atol=TOL)
        np.testing.assert_allclose(b.scores(logits), trained["ref"], atol=TOL)
    finally:
        b.close()


def test_a_fresh_cross_encoder_reads_back_the_same_model(trained):
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(trained["folder"]), device="cpu")
    assert type(ce.activation_fn).__name__ == TORCH_CLASS[trained["kind"]]
    assert ce.num_labels == 1
    assert ce.tokenizer.model_max_length == MAX_LENGTH[trained["kind"]]
    np.testing.assert_allclose(ce.predict([(QUERY, d) for d in DOCS]), trained["ref"], atol=TOL)


def test_the_promotion_gate_measures_the_served_scores(trained):
    """`labeling.evaluate.cross_encoder_scorer` feeds the gate (nDCG and the score-spread floor): same space."""
    from labeling.evaluate import cross_encoder_scorer

    got = cross_encoder_scorer(trained["folder"])([(QUERY, d) for d in DOCS])
    np.testing.assert_allclose(got, trained["ref"], atol=TOL)


def _legacy_copy(src, dst, spelling: str, declared: str | None):
    """A copy of `src` whose activation is declared only in an older place (or nowhere)."""
    shutil.copytree(src, dst)
    st_path = dst / "config_sentence_transformers.json"
    st = json.loads(st_path.read_text())
    st.pop("activation_fn", None)
    st_path.write_text(json.dumps(st))
    cfg = json.loads((dst / "config.json").read_text())
    if spelling == "v4":
        cfg["sentence_transformers"] = {"activation_fn": declared, "version": "4.0.1"}
    elif spelling == "pre-v4":
        cfg["sbert_ce_default_activation_function"] = declared
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("spelling", ["v4", "pre-v4"])
def test_older_spellings_of_the_declaration_are_honoured(trained, tmp_path, spelling):
    from sentence_transformers import CrossEncoder

    from fashion_rerank.scores import declared_activation
    from reranker.backends import load_backend

    declared = "torch.nn.modules.linear.Identity" if trained["kind"] == "identity" else "torch.nn.modules.activation.Sigmoid"
    folder = _legacy_copy(trained["folder"], tmp_path / "m", spelling, declared)
    act = declared_activation(folder)
    assert act.name == trained["kind"] and act.declared == declared and act.source.startswith("config.json:")
    ce = CrossEncoder(str(folder), device="cpu")
    assert type(ce.activation_fn).__name__ == TORCH_CLASS[trained["kind"]]
    np.testing.assert_allclose(ce.predict([(QUERY, d) for d in DOCS]), trained["ref"], atol=TOL)
    for kind, kwargs in (("torch", {"threads": 1}), ("onnx", {"variant": "fp32", "threads": 1})):
        b = load_backend(kind, folder, **kwargs)
        try:
            assert b.activation.name == trained["kind"], kind
            np.testing.assert_allclose(b.scores(b.score(QUERY, DOCS)), trained["ref"], atol=TOL)
        finally:
            b.close()


def test_no_declaration_means_sigmoid_for_one_label_on_both_sides(trained, tmp_path):
    from sentence_transformers import CrossEncoder

    from fashion_rerank.scores import declared_activation
    from reranker.backends import load_backend

    folder = _legacy_copy(trained["folder"], tmp_path / "m", "none", None)
    shutil.rmtree(folder / "onnx")  # its manifest records the trained model's declaration
    assert declared_activation(folder).name == "sigmoid"
    ce = CrossEncoder(str(folder), device="cpu")
    assert type(ce.activation_fn).__name__ == "Sigmoid"
    b = load_backend("torch", folder, threads=1)
    try:
        np.testing.assert_allclose(b.scores(b.score(QUERY, DOCS)), ce.predict([(QUERY, d) for d in DOCS]), atol=TOL)
    finally:
        b.close()


def test_a_manifest_that_contradicts_the_folder_is_refused(trained, tmp_path):
    from reranker.backends import load_backend
    from reranker.backends.onnx_backend import ModelFilesError

    other = "torch.nn.modules.activation.Sigmoid" if trained["kind"] == "identity" else "torch.nn.modules.linear.Identity"
    folder = shutil.copytree(trained["folder"], tmp_path / "m")
    st_path = folder / "config_sentence_transformers.json"
    st_path.write_text(json.dumps({**json.loads(st_path.read_text()), "activation_fn": other}))
    with pytest.raises(ModelFilesError, match="re-export"):
        load_backend("onnx", folder, variant="fp32", threads=1)


def test_an_activation_the_service_cannot_apply_is_refused(trained, tmp_path):
    from reranker.backends import load_backend

    folder = shutil.copytree(trained["folder"], tmp_path / "m")
    st_path = folder / "config_sentence_transformers.json"
    st_path.write_text(json.dumps({**json.loads(st_path.read_text()), "activation_fn": "torch.nn.modules.activation.ReLU"}))
    with pytest.raises(ValueError, match="ReLU"):
        load_backend("torch", folder, threads=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_grpc_and_http_fronts_serve_the_same_score(trained):
    """One running sidecar (identity model on the ONNX backend, sigmoid model on torch), both fronts."""
    from fashion_rerank.settings import ServeSettings
    from fashion_rerank.v1 import tei_pb2
    from reranker.client import RerankerClient
    from reranker.serve import Sidecar

    backend = "onnx" if trained["kind"] == "identity" else "torch"
    settings = ServeSettings(
        grpc_port=0,
        http_port=_free_port(),
        metrics_port=-1,
        threads=1,
        backend=backend,
        querylog_path=None,
        querylog_index=None,
        score_cache_entries=0,
    )
    sc = Sidecar(settings, trained["registry"], encoder=object()).start()
    try:
        assert sc.http_front is not None
        with RerankerClient(sc.target, timeout=60) as client, httpx.Client(base_url=sc.http_front.url, timeout=60) as http:
            res = client.rerank(QUERY, DOCS)
            grpc_scores = np.zeros(len(DOCS), np.float32)
            grpc_logits = np.zeros(len(DOCS), np.float32)
            for r in res.results:
                grpc_scores[r.index], grpc_logits[r.index] = r.score, r.logit
            tei = client.tei.Rerank(tei_pb2.RerankRequest(query=QUERY, texts=DOCS), timeout=60)
            tei_grpc = np.zeros(len(DOCS), np.float32)
            for r in tei.ranks:
                tei_grpc[r.index] = r.score
            cohere = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).raise_for_status().json()
            cohere_scores = np.zeros(len(DOCS), np.float32)
            for r in cohere["results"]:
                cohere_scores[r["index"]] = r["relevance_score"]
            tei_http = np.zeros(len(DOCS), np.float32)
            for r in http.post("/rerank", json={"query": QUERY, "texts": DOCS}).raise_for_status().json():
                tei_http[r["index"]] = r["score"]
            raw_http = np.zeros(len(DOCS), np.float32)
            for r in http.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).raise_for_status().json():
                raw_http[r["index"]] = r["score"]
    finally:
        sc.stop(1.0)
    np.testing.assert_allclose(grpc_scores, trained["ref"], atol=TOL)
    np.testing.assert_allclose(grpc_logits, trained["logits"], atol=TOL)
    for name, got in (("tei grpc", tei_grpc), ("cohere http", cohere_scores), ("tei http", tei_http)):
        np.testing.assert_allclose(got, grpc_scores, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(raw_http, grpc_logits, atol=1e-6)
