"""Shared fixtures: a real OpenSearch node (started here when none answers), the packaged models."""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    """URL of a running OpenSearch with k-NN, ml-commons and neural-search, of the configured version.

    Uses OPENSEARCH_URL when the local node (FR_NODE_HOST / FR_NODE_PORT) answers with those plugins and
    the version FR_NODE_VERSION asks for (default local_node.OPENSEARCH_VERSION); otherwise starts the
    local node of that version on that port (fashion_rerank.local_node) and stops it at the end of the
    session if this session started it. On a version other than the default whose ml-commons /
    neural-search zips the Maven registry does not serve (3.5.0 here), the node gets k-NN only and the
    tests that need ml-commons skip (fixture `opensearch_ml`).
    """
    from fashion_rerank import local_node
    from fashion_rerank.settings import NodeSettings

    settings = NodeSettings()
    version = local_node.release(settings.version).version
    node_url = f"http://{settings.host}:{settings.port}"
    url = os.environ.get("OPENSEARCH_URL", "http://localhost:9200")
    st = local_node.status()
    started = False
    if not st["running"] or st["version"] != version or not {"opensearch-knn", "opensearch-ml"} <= set(st["plugins"]):
        try:
            local_node.start(plugins="knn,ml")
        except local_node.FetchError as exc:
            if version == local_node.OPENSEARCH_VERSION:
                raise
            print(f"\nOpenSearch {version}: the ml plugin set is not available, starting with k-NN only ({exc})")
            local_node.start(plugins="knn")
        started = not st["running"]
        url = node_url
    os.environ["OPENSEARCH_URL"] = url
    yield url
    if started and not os.environ.get("KEEP_OPENSEARCH"):
        local_node.stop()


@pytest.fixture(scope="session")
def opensearch_ml(opensearch_url) -> str:
    """`opensearch_url` when its node has ml-commons and neural-search; skips the test otherwise.

    On the default version they must be there (the fixture fails instead of skipping).
    """
    from fashion_rerank import local_node

    st = local_node.status()
    if not {"opensearch-ml", "opensearch-neural-search"} <= set(st["plugins"]):
        if st["version"] == local_node.OPENSEARCH_VERSION:
            pytest.fail(f"OpenSearch {st['version']} at {opensearch_url} lacks ml-commons / neural-search: {st['plugins']}")
        pytest.skip(f"OpenSearch {st['version']}: ml-commons / neural-search not installed (not served for this version)")
    return opensearch_url


@pytest.fixture(scope="session")
def os_client(opensearch_url):
    """An opensearch-py client for the test node."""
    from fashion_rerank.opensearch import make_client

    return make_client()


@pytest.fixture
def unique_name() -> str:
    """A unique lowercase name for indices/aliases/pipelines created by one test."""
    return f"t-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- tiny trained cross-encoder

#: Query templates of the fixture model's training queries (attribute words of a seed product).
_CE_QUERY_TEMPLATES = ("{colour} {product_type} for {gender}", "{gender} {colour} {product_type}", "{colour} {product_type}")


def _attribute_grade(query_attrs: dict, product) -> int:
    """0-3: 0 = another product type; +1 for the type, +1 colour match, +1 gender match."""
    if product.get("product_type") != query_attrs["product_type"]:
        return 0
    return 1 + (product.get("colour") == query_attrs["colour"]) + (product.get("gender") == query_attrs["gender"])


def graded_training_pairs(n_queries: int = 80, seed: int = 0, catalog_size: int = 3000) -> list[tuple[str, str, float]]:
    """(query, rerank_text(product), grade/3) pairs from the first `catalog_size` bundled Myntra products.

    Each query is built from a seed product's colour, type and gender; its candidates are the seed
    product, 2 products of the same type and 4 random products, graded by attribute match (0-3).
    Deterministic for a given seed. Products after `catalog_size` are never used (held out for tests).
    """
    import random

    from fashion_rerank.product import rerank_text
    from indexer.catalogs import read_myntra

    products = list(read_myntra(limit=catalog_size).products)
    rng = random.Random(seed)
    by_type: dict[str, list] = {}
    for p in products:
        by_type.setdefault(p.get("product_type"), []).append(p)
    rows = []
    for i, p in enumerate(rng.sample(products, n_queries)):
        attrs = {k: p.get(k) for k in ("product_type", "colour", "gender")}
        query = _CE_QUERY_TEMPLATES[i % len(_CE_QUERY_TEMPLATES)].format(**attrs).lower()
        same = by_type[attrs["product_type"]]
        for c in [p, *rng.sample(same, min(2, len(same))), *rng.sample(products, 4)]:
            rows.append((query, rerank_text(c), _attribute_grade(attrs, c) / 3))
    return rows


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory):
    """A `ModelRegistry` holding one promoted tiny cross-encoder (a real model, trained here).

    Fine-tunes `CrossEncoder(packaged all-MiniLM-L6-v2, num_labels=1, max_length=64)` with
    `CrossEncoderTrainer` + `BinaryCrossEntropyLoss` on ~560 attribute-graded (query, product text,
    grade/3) pairs from the bundled Myntra catalog: 2 epochs, lr 1e-4, batch 16, seed 0 (about 20 s on
    2 cores). It ranks a product of the asked-for type/colour/gender far above unrelated ones (pairwise
    accuracy about 0.99 on held-out products), which is all the serving tests need. Saved with
    `save_pretrained` plus `card.json` and `model_card.md`, then promoted. The weights are cached under
    `<cache>/test-models/` keyed by training data, settings and library versions (FR_TEST_MODEL_CACHE=0
    retrains).
    """
    import json
    from datetime import datetime, timezone

    import torch
    from datasets import Dataset
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from fashion_rerank.registry import ModelRegistry
    from fashion_rerank.settings import cache_root, cpu_quota, resolve_model_path

    rows = graded_training_pairs()
    hparams = {"epochs": 2, "learning_rate": 1e-4, "batch_size": 16, "max_length": 64, "seed": 0}
    base = resolve_model_path("packaged:all-MiniLM-L6-v2")
    registry = ModelRegistry(tmp_path_factory.mktemp("models"), "fashion-ce")
    version, folder = registry.new_version_dir()

    # The trained weights are cached per (data, settings, library versions): a shared 2-core machine
    # trains in 20 s idle but minutes under load. FR_TEST_MODEL_CACHE=0 always retrains.
    import hashlib
    import shutil

    import sentence_transformers
    import transformers

    key = hashlib.sha1(
        json.dumps([rows, hparams, torch.__version__, transformers.__version__, sentence_transformers.__version__]).encode()
    ).hexdigest()[:16]
    cache = cache_root() / "test-models" / f"tiny-ce-{key}"
    if os.environ.get("FR_TEST_MODEL_CACHE", "1") != "0" and (cache / "config.json").exists():
        shutil.copytree(cache, folder, dirs_exist_ok=True)
    else:
        torch.set_num_threads(min(2, cpu_quota()))
        torch.manual_seed(0)
        data = Dataset.from_dict(
            {"query": [r[0] for r in rows], "document": [r[1] for r in rows], "label": [float(r[2]) for r in rows]}
        )
        model = CrossEncoder(base, num_labels=1, max_length=hparams["max_length"])
        args = CrossEncoderTrainingArguments(
            output_dir=str(tmp_path_factory.mktemp("ce-train")),
            num_train_epochs=hparams["epochs"],
            per_device_train_batch_size=hparams["batch_size"],
            learning_rate=hparams["learning_rate"],
            warmup_steps=0.1,
            seed=hparams["seed"],
            report_to="none",
            save_strategy="no",
            logging_steps=10_000,
            disable_tqdm=True,
            use_cpu=True,
        )
        CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=BinaryCrossEntropyLoss(model)).train()
        model.save_pretrained(str(folder))
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        try:
            os.replace(tmp, cache)
        except OSError:  # another session cached it first
            shutil.rmtree(tmp, ignore_errors=True)
    if not (folder / "onnx" / "manifest.json").exists():
        # every registry version carries its ONNX files (what `train` writes); cached with the weights
        from fashion_rerank.onnx_export import export_cross_encoder

        export_cross_encoder(folder, calibration_pairs=[(q, t) for q, t, _ in rows[:256]])
        if (cache / "config.json").exists():
            shutil.copytree(folder / "onnx", cache / "onnx", dirs_exist_ok=True)
    (folder / "model_card.md").write_text(
        "# fashion-ce (test fixture)\n\nTiny cross-encoder fine-tuned from all-MiniLM-L6-v2 on attribute-graded "
        "Myntra pairs by tests/conftest.py::trained_registry. For tests only.\n"
    )
    (folder / "card.json").write_text(
        json.dumps(
            {
                "version": version,
                "base_model": "packaged:all-MiniLM-L6-v2",
                "train_pairs": len(rows),
                **hparams,
                "cache_key": key,
                "loss": "BinaryCrossEntropyLoss",
                "labels": "attribute-match grade / 3",
                "created": datetime.now(timezone.utc).isoformat(),
                "purpose": "test fixture",
            },
            indent=2,
        )
    )
    registry.promote(version, reason="test fixture")
    return registry
