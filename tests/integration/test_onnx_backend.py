"""ONNX Runtime backend, export and bi-encoder: equal logits to torch, variant choice, damaged files, no torch.

Models: a cross-encoder built from the packaged all-MiniLM-L6-v2 backbone with a seeded random head
(torch.manual_seed(0); scores are meaningless but deterministic, which is all an equality check needs) and
the packaged bi-encoder itself. About 30-40 s on 2 cores, most of it the two exports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

REPO = Path(__file__).resolve().parents[1]

#: Fixed (query, document) pairs: short and long documents, one far over max_length (truncated), an empty one.
PAIRS = [
    (
        "black leather ankle boots women",
        "Carlton London Women Black Leather Ankle Boots | Boots | Black | Women | Casual | Winter",
    ),
    ("black leather ankle boots women", "Fastrack Men Black Analogue Watch | Watches | Black | Men | Casual | Summer"),
    ("red midi dress", "Vero Moda Women Red Midi Dress | Dresses | Red | Women | Party | Summer"),
    ("red midi dress", "Puma Men Red Running Shoes"),
    ("men blue denim jeans", "Levis Men Blue Slim Fit Jeans | Jeans | Blue | Men | Casual | Fall " * 12),
    ("white sneakers", ""),
    ("kids yellow t-shirt", "YK Boys Yellow Printed T-shirt | Tshirts | Yellow | Boys | Casual | Summer"),
    ("silver earrings women", "Zaveri Pearls Women Silver-Toned Drop Earrings | Earrings | Silver | Women | Ethnic"),
]


@pytest.fixture(scope="module")
def ce_dir(tmp_path_factory) -> Path:
    """A saved CrossEncoder (packaged backbone, seeded random head, max_length 64) with an ONNX export
    (fp32 + dynamic int8) in its `onnx/` folder."""
    import torch
    from sentence_transformers import CrossEncoder

    from fashion_rerank.onnx_export import export_cross_encoder
    from fashion_rerank.settings import resolve_model_path

    folder = tmp_path_factory.mktemp("ce")
    torch.manual_seed(0)
    CrossEncoder(resolve_model_path("packaged:all-MiniLM-L6-v2"), num_labels=1, max_length=64).save_pretrained(str(folder))
    export_cross_encoder(folder, variants=("fp32", "int8"), check_pairs=PAIRS)
    return folder


def test_manifest_records_how_files_were_made(ce_dir):
    import onnxruntime

    m = json.loads((ce_dir / "onnx" / "manifest.json").read_text())
    assert m["kind"] == "cross-encoder" and m["opset"] == 17
    assert m["versions"]["onnxruntime"] == onnxruntime.__version__
    assert set(m["variants"]) == {"fp32", "int8"}
    fp32, int8 = m["variants"]["fp32"], m["variants"]["int8"]
    assert fp32["recipe"]["graph"] == "compact"  # the CLS-pruned BERT graph (fastest on CPU)
    assert int8["recipe"]["method"] == "dynamic" and int8["recipe"]["per_channel"] is True
    assert int8["bytes"] < fp32["bytes"] / 3
    assert len(fp32["sha256"]) == 64 and m["checks"]["fp32_vs_torch_max_abs"] < 1e-4
    assert m["gate"]["serve"] in m["gate"]["allowed"] and "fp32" in m["gate"]["allowed"]
    assert m["max_length"] == 64


def test_fp32_onnx_logits_equal_torch(ce_dir):
    from reranker.backends.onnx_backend import load as load_onnx
    from reranker.backends.torch_backend import load as load_torch

    tb = load_torch(ce_dir, threads=2)
    ob = load_onnx(ce_dir, variant="fp32", threads=2)
    assert ob.variant == "fp32" and ob.max_length == tb.max_length == 64
    qs, ds = [q for q, _ in PAIRS], [d for _, d in PAIRS]
    for left in (None, [i % 2 == 0 for i in range(len(PAIRS))]):
        et, eo = tb.encode(qs, ds, left), ob.encode(qs, ds, left)
        assert np.array_equal(et.lengths, eo.lengths) and et.lengths.max() == 64  # the long document was cut
        idx = np.arange(len(PAIRS))
        a, b = tb.run(et, idx), ob.run(eo, idx)  # one padded batch
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)
    # the length-sorted sub-batch path as well, the default "split" layout (passes on 2 threads) on 48 pairs,
    # the "intra" layout with small passes, and the exact pair lengths
    many = ds * 6
    ref = tb.score(qs[0], many, sub_batch=3, sub_batch_tokens=1)
    np.testing.assert_allclose(ob.score(qs[0], many, sub_batch=3, sub_batch_tokens=1), ref, atol=1e-4, rtol=0)
    assert ob.layout == "split"
    np.testing.assert_allclose(ob.score(qs[0], many), ref, atol=1e-4, rtol=0)
    intra = load_onnx(ce_dir, variant="fp32", threads=2, layout="intra", max_tokens=128)
    np.testing.assert_allclose(intra.score(qs[0], many), ref, atol=1e-4, rtol=0)
    assert np.array_equal(ob.pair_tokens(qs[0], ds), tb.pair_tokens(qs[0], ds))
    assert ob.pair_tokens(qs[0], ds).max() > 64  # not truncated
    assert ob.query_tokens("red midi dress") == tb.query_tokens("red midi dress") == 3


def test_auto_loads_the_gated_variant_and_names_it(ce_dir):
    from reranker.backends import load_backend

    m = json.loads((ce_dir / "onnx" / "manifest.json").read_text())
    b = load_backend("onnx", ce_dir, version="20260101T000000Z", threads=1)
    assert b.variant == m["gate"]["serve"]
    assert b.version == f"20260101T000000Z+onnx-{b.variant}" and b.registry_version == "20260101T000000Z"
    s = b.score("red midi dress", [d for _, d in PAIRS])
    assert s.shape == (len(PAIRS),) and np.isfinite(s).all()


def test_quantized_variant_loads_and_a_damaged_one_falls_back(ce_dir, tmp_path):
    from fashion_rerank.onnx_export import set_gate
    from reranker.backends.onnx_backend import ModelFilesError, OnnxBackend

    work = tmp_path / "v"
    shutil.copytree(ce_dir, work)
    set_gate(work / "onnx", "int8", decided_by="test")
    q8 = OnnxBackend(work, variant="auto", threads=1)
    f32 = OnnxBackend(work, variant="fp32", threads=1)
    assert q8.variant == "int8"
    docs = [d for _, d in PAIRS]
    a, b = f32.score("red midi dress", docs), q8.score("red midi dress", docs)
    assert np.isfinite(b).all() and np.abs(a - b).max() < 0.1  # int8 drift is small, not zero

    blob = bytearray((work / "onnx" / "model_int8.onnx").read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 64] = b"\0" * 64
    (work / "onnx" / "model_int8.onnx").write_bytes(bytes(blob))
    assert OnnxBackend(work, variant="auto", threads=1).variant == "fp32"  # damaged: logged, fp32 serves
    with pytest.raises(ModelFilesError):
        OnnxBackend(work, variant="int8", threads=1)
    with pytest.raises(ValueError):
        OnnxBackend(work, variant="fp16", threads=1)
    shutil.rmtree(work / "onnx")
    with pytest.raises(ModelFilesError):
        OnnxBackend(work, threads=1)


def _session_ops(path: Path, tmp_path: Path, disabled: list | None) -> dict:
    """Op counts of the graph ORT runs for `path` on CPU (through `open_session` when `disabled` is None)."""
    import collections

    import onnx
    import onnxruntime as ort

    from fashion_rerank.onnx_embedding import open_session, session_options

    so = session_options(1)
    so.optimized_model_filepath = str(tmp_path / f"opt-{disabled is None}.onnx")
    if disabled is None:
        open_session(path, so, ["CPUExecutionProvider"])
    else:
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    g = onnx.load(so.optimized_model_filepath, load_external_data=False).graph
    return collections.Counter(n.op_type for n in g.node)


def test_cpu_sessions_leave_out_the_slow_skip_layer_norm_fusion(ce_dir, tmp_path):
    """ORT's SkipLayerNormalization CPU kernel is several times slower than Add + LayerNormalization
    (bench/onnx_fusions.py); the project's sessions leave that fusion out, and gate and serving score alike."""
    from fashion_rerank.onnx_export import _PairEncoder, _scores, _session
    from reranker.backends.onnx_backend import OnnxBackend

    int8 = ce_dir / "onnx" / "model_int8.onnx"
    plain = _session_ops(int8, tmp_path, disabled=[])
    ours = _session_ops(int8, tmp_path, disabled=None)
    assert plain["SkipLayerNormalization"] > 0  # ORT fuses it by default: the check below means something
    assert (
        ours["SkipLayerNormalization"] == 0
        and ours["LayerNormalization"] == plain["LayerNormalization"] + plain["SkipLayerNormalization"]
    )

    backend = OnnxBackend(ce_dir, variant="int8", threads=1)
    served = np.concatenate([backend.score(q, [d]) for q, d in PAIRS])
    gated = _scores(_session(int8, threads=1), _PairEncoder(ce_dir), PAIRS, sub_batch=1)  # one pair a pass, as served
    assert np.abs(served - gated).max() < 1e-5  # Backend.score returns logits


def test_document_token_cache_builds_the_pairs_the_tokenizer_builds(ce_dir):
    """Pairs assembled from the pair template and cached document tokens are the tokenizer's own pairs, cut
    right or left, for several queries in one batch, on a first and on a repeated (cached) call."""
    import tokenizers

    from reranker.backends.tokenization import PairTokenizer

    cached = PairTokenizer.from_dir(ce_dir)  # max_length 64: the long document is cut
    plain = PairTokenizer(
        tokenizers.Tokenizer.from_file(str(ce_dir / "tokenizer.json")),
        cached.max_length,
        cached.pad_id,
        True,
        doc_cache_entries=0,
    )
    assert cached.template is not None and plain.template is None
    queries = [q for q, _ in PAIRS] + ["a rather long query about a red dress"] * 2
    docs = [d for _, d in PAIRS] + ["Fastrack Men Black Analogue Watch " * 20, PAIRS[0][1]]
    for left in (None, [i % 2 == 0 for i in range(len(docs))]):
        for _ in range(2):  # the second time every document comes from the cache
            a, b = cached.encode(queries, docs, left), plain.encode(queries, docs, left)
            np.testing.assert_array_equal(a.lengths, b.lengths)
            np.testing.assert_array_equal(a.data.input_ids, b.data.input_ids)
            np.testing.assert_array_equal(a.data.token_type_ids, b.data.token_type_ids)
    assert a.lengths.max() == cached.max_length  # truncation was exercised
    long_docs = {d for d in docs if d not in cached._docs}  # over max_length tokens: cut anyway, never kept
    assert docs[-2] in long_docs and len(long_docs) == 2  # the watch text and the 12x jeans text
    assert cached.doc_cache_hits > 0 and cached.doc_cache_misses == len(set(docs)) - 2 + 4 * 2  # long ones: every call
    small = PairTokenizer.from_dir(ce_dir)
    small._docs_max = 3
    small.encode(queries, docs)
    assert len(small._docs) == 3  # bounded by entries (LRU)
    tiny = PairTokenizer.from_dir(ce_dir)
    tiny._docs_bytes_max = 700
    tiny.encode(queries, docs)
    assert 0 < len(tiny._docs) < 4 and tiny._docs_bytes <= 700  # and by bytes


def test_concurrent_calls_share_the_backend_threads(ce_dir):
    """A lone call spreads over every thread; a call that starts while another runs takes its share (one of
    two), and both score as a lone call does (fp32: layouts agree to ~1e-7)."""
    import threading

    from reranker.backends.onnx_backend import OnnxBackend

    b = OnnxBackend(ce_dir, variant="fp32", threads=2, min_split=1)
    docs = [d for _, d in PAIRS] * 3
    parts: list[int] = []
    inner = b._run
    both_in = threading.Barrier(2, timeout=30)

    def recording(encoded, indices, n_parts):
        parts.append(n_parts)
        if len(parts) <= 2:
            both_in.wait()  # the first call is still running when the second decides
        return inner(encoded, indices, n_parts)

    alone = b.score("red midi dress", docs)
    b._run = recording
    out: list[np.ndarray] = [None, None]

    def call(i):
        out[i] = b.score("red midi dress", docs)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    while not parts:  # the first call has decided its share
        pass
    call(1)
    first.join(30)
    assert parts == [2, 1]
    np.testing.assert_allclose(out[0], alone, atol=1e-5)
    np.testing.assert_allclose(out[1], alone, atol=1e-5)
    b._run = inner
    b.score("red midi dress", docs)
    assert b._active == 0


def test_serving_path_imports_neither_torch_nor_transformers(ce_dir):
    code = (
        "import sys\n"
        "from reranker.backends import load_backend, prepare_backend\n"
        "prepare_backend('onnx', 1)\n"
        f"b = load_backend('onnx', {str(ce_dir)!r}, version='v1')\n"
        "b.score('red midi dress', ['a red dress', 'blue jeans'])\n"
        "from fashion_rerank.onnx_embedding import OnnxBiEncoder\n"
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 0, r.stderr[-2000:]


def test_max_length_rules(tmp_path):
    from reranker.backends.tokenization import resolve_max_length

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512, "model_type": "bert"}))
    assert resolve_max_length(tmp_path) == 128  # nothing saved: the default
    assert resolve_max_length(tmp_path, default_max_length=96) == 96
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1e30}))
    assert resolve_max_length(tmp_path) == 128  # transformers' "unset" sentinel
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 256}))
    assert resolve_max_length(tmp_path) == 256 and resolve_max_length(tmp_path, max_length=48) == 48
    assert resolve_max_length(tmp_path, max_length=4096) == 512  # capped by the position embeddings
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 514, "model_type": "roberta"}))
    assert resolve_max_length(tmp_path, max_length=4096) == 512


def test_onnx_bi_encoder_matches_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    from fashion_rerank.onnx_embedding import OnnxBiEncoder
    from fashion_rerank.onnx_export import export_bi_encoder
    from fashion_rerank.product import rerank_text
    from fashion_rerank.settings import resolve_model_path
    from indexer.catalogs import read_myntra

    src = resolve_model_path("packaged:all-MiniLM-L6-v2")
    m = export_bi_encoder(src, tmp_path / "bi")
    assert m["pooling"] == ["mean_tokens"] and m["normalize"] is True and m["dimension"] == 384
    texts = [rerank_text(p) for p in read_myntra(limit=150).products]
    texts += ["black leather ankle boots women", "red midi dress", "  men blue denim jeans ", "x", "", "very long " * 300]
    ref = SentenceTransformer(src, device="cpu").encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    enc = OnnxBiEncoder(tmp_path / "bi", threads=2)
    got = enc.encode(texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999, cos.min()
    assert enc.encode([]).shape == (0, 384)
    np.testing.assert_allclose(enc.encode_query("red midi dress"), got[texts.index("red midi dress")], atol=1e-5)
