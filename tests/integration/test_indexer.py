"""The indexer against the real local OpenSearch node and the real packaged bi-encoder.

A module fixture indexes the first 2,000 products of the bundled Myntra catalog behind a unique alias
(cold embedding cache in a temp file); other tests index small catalog files written from real Myntra
rows plus deliberately bad rows. Every index created here is deleted at the end.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import numpy as np
import pytest
from opensearchpy.exceptions import NotFoundError

from fashion_rerank.embedding import EmbeddingCache, load_bi_encoder
from fashion_rerank.product import rerank_text, text_hash
from fashion_rerank.retrieval import knn_search, text_search
from fashion_rerank.settings import IndexSettings
from indexer.bulk import bulk_results
from indexer.catalogs import read_myntra
from indexer.index import (
    AliasConflictError,
    alias_indices,
    build_index_body,
    index_meta,
    managed_indices,
    rollback_alias,
    swap_alias,
)
from indexer.run import IndexSummary, run_index

LIMIT = 2000


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def encoder():
    import torch

    torch.set_num_threads(1)  # the machine is shared; 1 thread keeps the others responsive
    return load_bi_encoder()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return EmbeddingCache(tmp_path_factory.mktemp("emb") / "embeddings.sqlite")


@pytest.fixture(scope="module")
def aliases(os_client):
    """Aliases used by this module; every `<alias>-*` index and any concrete index of that name is deleted at the end."""
    used: list[str] = []
    yield used
    for alias in used:
        for name in managed_indices(os_client, alias):
            os_client.indices.delete(index=name, ignore_unavailable=True)
        if os_client.indices.exists(index=alias) and not os_client.indices.exists_alias(name=alias):
            os_client.indices.delete(index=alias)


@pytest.fixture(scope="module")
def built(os_client, encoder, cache, aliases):
    """2,000 real products indexed behind a fresh alias; returns (alias, summary, count right after return)."""
    alias = _name()
    aliases.append(alias)
    summary = run_index("myntra", limit=LIMIT, alias=alias, client=os_client, encoder=encoder, cache=cache, progress=False)
    count_at_return = os_client.count(index=alias)["count"]  # no explicit refresh: must already be searchable
    return alias, summary, count_at_return


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _rows_from_myntra(n: int) -> list[dict]:
    out = []
    for p in read_myntra(limit=n).products:
        out.append({"id": p.id, "title": p.title, **dict(p.attributes)})
    return out


# --------------------------------------------------------------------------------------- catalog reader


def test_myntra_reader_reads_the_real_bundled_file_and_joins_comma_lines():
    read = read_myntra()
    products = list(read.products)
    assert read.read == 44446 and len(products) == 44446 and read.skipped == []
    assert len({p.id for p in products}) == 44446
    by_id = {p.id: p for p in products}
    # one of the 22 lines with an unquoted comma in productDisplayName: the name is joined back
    assert by_id["44065"].title == "Boss Men Perfume, After Shave Balm and Shower Gel Set"
    assert by_id["44065"].get("product_type") == "Perfume and Body Mist"
    assert sum("," in p.title for p in products) == 22
    assert by_id["15970"].title == "Turtle Check Men Navy Blue Shirt"
    assert by_id["15970"].attributes == {
        "gender": "Men",
        "category": "Topwear",
        "product_type": "Shirts",
        "colour": "Navy Blue",
        "usage": "Casual",
        "season": "Fall",
        "brand": "Turtle Check",
    }


# ------------------------------------------------------------------------------------------ full build


def test_full_build_summary_mapping_and_searchable_at_return(os_client, built, encoder):
    alias, summary, count_at_return = built
    assert isinstance(summary, IndexSummary)
    assert summary.mode == "full" and summary.read == LIMIT and summary.indexed == LIMIT and summary.skipped == []
    assert summary.embedded_computed + summary.embedded_cached == LIMIT
    assert 0 < summary.embedded_computed < LIMIT  # identical texts in the catalog are embedded once
    assert summary.products_per_s > 0 and summary.index.startswith(f"{alias}-")
    assert count_at_return == LIMIT
    assert alias_indices(os_client, alias) == [summary.index]

    settings = os_client.indices.get_settings(index=summary.index)[summary.index]["settings"]["index"]
    assert settings["knn"] == "true" and settings["refresh_interval"] == "1s"
    mapping = os_client.indices.get_mapping(index=summary.index)[summary.index]["mappings"]
    assert mapping["_source"] == {"excludes": ["embedding"]}  # indexed for kNN, not stored in every hit's _source
    props = mapping["properties"]
    assert props["embedding"]["type"] == "knn_vector" and props["embedding"]["dimension"] == encoder.dimension == 384
    assert props["embedding"]["method"]["name"] == "hnsw"
    assert props["rerank_text"] == {"type": "text", "store": True}
    for f in ("product_id", "text_hash", "source_hash", "product_type", "colour", "gender", "category", "brand"):
        assert props[f]["type"] == "keyword"
    assert props["title"]["type"] == props["description"]["type"] == "text"
    assert index_meta(os_client, summary.index)["complete"] is True

    # a stored document carries rerank_text(product) and its hash, and rebuilds the product
    doc = os_client.get(index=alias, id="15970")["_source"]
    from fashion_rerank.product import Product

    p = Product.from_fields(doc)
    assert doc["rerank_text"] == rerank_text(p) and doc["text_hash"] == text_hash(doc["rerank_text"])
    assert p.title == "Turtle Check Men Navy Blue Shirt"
    # the product's own text finds it first
    hits = text_search(os_client, alias, encoder, doc["rerank_text"], k=3)
    assert hits[0].id == "15970"


@pytest.mark.parametrize(
    "query,product_type",
    [
        ("wrist watch", "Watches"),
        ("handbag for women", "Handbags"),
        ("running shoes", "Sports Shoes"),
        ("flip flops", "Flip Flops"),
    ],
)
def test_text_query_for_a_product_type_returns_that_type_on_top(os_client, built, encoder, query, product_type):
    alias = built[0]
    hits = text_search(os_client, alias, encoder, query, k=10)
    types = [h.source.get("product_type") for h in hits]
    assert len(hits) == 10
    assert types[0] == product_type and types.count(product_type) >= 6, types


def test_filtered_knn_returns_k_hits_of_the_filtered_category(os_client, built, encoder):
    alias = built[0]
    n_watches = os_client.count(index=alias, body={"query": {"term": {"product_type": "Watches"}}})["count"]
    assert n_watches >= 20
    # a query far from watches: post-filtering the top 20 would return (almost) nothing
    vector = encoder.encode_query("blue denim jeans for men")
    unfiltered = knn_search(os_client, alias, vector, k=20)
    assert sum(h.source.get("product_type") == "Watches" for h in unfiltered) < 5
    hits = knn_search(os_client, alias, vector, k=20, filters={"product_type": "Watches"})
    assert len(hits) == 20 and {h.source["product_type"] for h in hits} == {"Watches"}
    # keyword attributes are matched case-insensitively; several values and fields combine
    hits = knn_search(os_client, alias, vector, k=15, filters={"gender": "women", "product_type": ["Handbags", "Heels"]})
    assert len(hits) == 15
    assert all(h.source["gender"] == "Women" and h.source["product_type"] in ("Handbags", "Heels") for h in hits)


def test_retrieval_refuses_zero_and_non_finite_query_vectors(os_client, built, encoder):
    alias = built[0]
    with pytest.raises(ValueError, match="all zeros"):
        knn_search(os_client, alias, np.zeros(384, dtype=np.float32), k=5)
    bad = encoder.encode_query("red dress").copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        knn_search(os_client, alias, bad, k=5)
    bad[3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        knn_search(os_client, alias, bad, k=5)
    with pytest.raises(ValueError, match="empty"):
        text_search(os_client, alias, encoder, "   ", k=5)


# ------------------------------------------------------------------- alias swap, rollback, idempotency


def test_alias_swap_keeps_searches_answering_during_rebuild_and_old_index_stays(os_client, built, encoder, cache):
    alias, first, _ = built
    old = alias_indices(os_client, alias)[0]
    vector = encoder.encode_query("black leather belt").tolist()
    body = {"size": 5, "query": {"knn": {"embedding": {"vector": vector, "k": 5}}}, "_source": False}
    served: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def search_loop():
        while not stop.is_set():
            try:
                resp = os_client.search(index=alias, body=body, request_timeout=30)
                hits = resp["hits"]["hits"]
                if len(hits) != 5:
                    errors.append(AssertionError(f"{len(hits)} hits"))
                served.extend({h["_index"] for h in hits})
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
            time.sleep(0.02)

    t = threading.Thread(target=search_loop, daemon=True)
    t.start()
    try:
        second = run_index("myntra", limit=LIMIT, alias=alias, client=os_client, encoder=encoder, cache=cache, progress=False)
        deadline = time.monotonic() + 10
        while second.index not in served and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(timeout=30)
    assert errors == []
    assert old in served and second.index in served  # answered before and after the swap, never failed
    assert second.embedded_computed == 0 and second.embedded_cached == LIMIT  # warm cache
    assert second.previous_index == old and alias_indices(os_client, alias) == [second.index]
    # the old index is kept, complete, for rollback
    assert os_client.count(index=old)["count"] == LIMIT and index_meta(os_client, old)["complete"] is True
    assert rollback_alias(os_client, alias) == (second.index, old)
    assert alias_indices(os_client, alias) == [old]
    assert len(knn_search(os_client, alias, vector, k=5)) == 5
    assert swap_alias(os_client, alias, second.index) == [old]  # and forward again


def test_rerun_is_idempotent_and_retention_keeps_n_previous(os_client, built, encoder, cache):
    alias = built[0]
    live = alias_indices(os_client, alias)[0]
    before = managed_indices(os_client, alias)
    ids_before = sorted(h["_id"] for h in _scan_ids(os_client, live))
    s = IndexSettings(keep=1)
    again = run_index(
        "myntra", limit=LIMIT, alias=alias, client=os_client, encoder=encoder, cache=cache, settings=s, progress=False
    )
    assert again.indexed == LIMIT and again.skipped == [] and again.index not in before
    assert alias_indices(os_client, alias) == [again.index]
    assert os_client.count(index=alias)["count"] == LIMIT
    assert sorted(h["_id"] for h in _scan_ids(os_client, again.index)) == ids_before
    assert os_client.get(index=again.index, id="15970")["_source"] == os_client.get(index=live, id="15970")["_source"]
    # keep=1: the live index and exactly one previous (the one it replaced) remain
    assert managed_indices(os_client, alias) == sorted([live, again.index])
    assert set(again.deleted_indices) == set(before) - {live}


def _scan_ids(client, index):
    from opensearchpy import helpers

    return helpers.scan(client, index=index, query={"query": {"match_all": {}}}, _source=False)


# ----------------------------------------------------------------------------------------- bad input


class BadVectorEncoder:
    """The real bi-encoder, except that texts containing a marker get a bad vector (zero, NaN, wrong dimension)."""

    def __init__(self, real, bad: dict[str, str]):
        self.real, self.bad = real, bad
        self.dimension, self.cache_key = real.dimension, real.cache_key + "#bad-vector-test"

    def encode(self, texts, show_progress=False):
        vecs = list(self.real.encode(texts))
        for i, text in enumerate(texts):
            for marker, kind in self.bad.items():
                if marker in text:
                    v = vecs[i].copy()
                    if kind == "zero":
                        v = np.zeros_like(v)
                    elif kind == "nan":
                        v[7] = np.nan
                    else:
                        v = v[:-1]
                    vecs[i] = v
        return vecs


def test_each_kind_of_bad_row_is_skipped_with_its_reason_and_the_rest_lands(os_client, encoder, aliases, tmp_path):
    alias = _name()
    aliases.append(alias)
    good = _rows_from_myntra(40)
    rows = list(good)
    rows.insert(5, {"title": "No Id Men Blue Shirt", "colour": "Blue"})  # row 6
    rows.insert(10, {"id": "bad-empty-title", "title": "  ", "colour": "Red"})  # row 11
    rows.insert(15, {"id": good[0]["id"], "title": "Duplicate Of The First Row"})  # row 16
    rows.append({"id": "bad-zero", "title": "Zerovec Men Black Jeans", "product_type": "Jeans"})
    rows.append({"id": "bad-nan", "title": "Nanvec Women Red Top", "product_type": "Tops"})
    rows.append({"id": "bad-dim", "title": "Dimvec Men White Shirt", "product_type": "Shirts"})
    rows.append({"id": "bad-immense", "title": "Huge Colour Men Shirt", "colour": "x" * 40000})
    path = _write_jsonl(tmp_path / "catalog.jsonl", rows)
    enc = BadVectorEncoder(encoder, {"Zerovec": "zero", "Nanvec": "nan", "Dimvec": "dim"})

    # 6 of 46 rows (duplicate aside) fail (13%), far above the 0.5% gate: served only because allow_partial says so
    summary = run_index(path, alias=alias, client=os_client, encoder=enc, use_cache=False, progress=False, allow_partial=True)
    assert summary.alias_moved and len(summary.refused) == 1 and "6 of 46 catalog rows failed (13.04%" in summary.refused[0]
    assert summary.notes == [f"--allow-partial: served despite: {summary.refused[0]}"]

    reasons = {(s.row, s.reason) for s in summary.skipped}
    assert (6, "missing id") in reasons
    assert (11, "empty title") in reasons
    assert (16, f"duplicate id {good[0]['id']}") in reasons
    assert ("bad-zero", "zero vector") in reasons
    assert ("bad-nan", "non-finite vector: NaN or infinite values") in reasons
    assert ("bad-dim", "wrong vector dimension: 383, the index expects 384") in reasons
    immense = [s for s in summary.skipped if s.row == "bad-immense"]
    assert (
        len(immense) == 1
        and immense[0].reason.startswith("bulk 400 illegal_argument_exception")
        and "immense term" in immense[0].reason
    )
    assert len(summary.skipped) == 7
    assert summary.skipped_by_reason == {
        "missing id": 1,
        "empty title": 1,
        "duplicate id": 1,
        "zero vector": 1,
        "non-finite vector": 1,
        "wrong vector dimension": 1,
        "bulk 400 illegal_argument_exception": 1,
    }
    assert summary.read == len(rows) and summary.indexed == len(good)
    assert os_client.count(index=alias)["count"] == len(good)
    for bad_id in ("bad-zero", "bad-nan", "bad-dim", "bad-immense", "bad-empty-title"):
        assert not os_client.exists(index=alias, id=bad_id)
    assert os_client.get(index=alias, id=good[0]["id"])["_source"]["title"] == good[0]["title"]  # first one wins
    text = summary.format()
    assert "skipped      1 x zero vector" in text and "row 6: missing id" in text


def test_nothing_indexable_leaves_no_index_and_cli_exits_non_zero(os_client, encoder, aliases, tmp_path, capsys, monkeypatch):
    from cli.main import main

    monkeypatch.setenv("FASHION_RERANK_CACHE", str(tmp_path / "cache"))
    alias = _name()
    aliases.append(alias)
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"title": "no id"}, {"id": "1", "title": ""}])
    assert main(["index", "--catalog", path, "--alias", alias, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["indexed"] == 0 and out["skipped_by_reason"] == {"missing id": 1, "empty title": 1}
    assert managed_indices(os_client, alias) == [] and not os_client.indices.exists(index=alias)


def test_cli_indexes_a_generic_csv_with_a_column_mapping(os_client, aliases, tmp_path, capsys, monkeypatch):
    from cli.main import main

    monkeypatch.setenv("FASHION_RERANK_CACHE", str(tmp_path / "cache"))
    alias = _name()
    aliases.append(alias)
    import csv

    with open(tmp_path / "cat.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["ProductID", "ProductName", "PrimaryColor", "Kind"])
        for p in read_myntra(limit=30).products:
            w.writerow([p.id, p.title, p.get("colour"), p.get("product_type")])
    code = main(
        [
            "index",
            "--catalog",
            str(tmp_path / "cat.csv"),
            "--alias",
            alias,
            "--map",
            "id=ProductID,title=ProductName,colour=PrimaryColor,product_type=Kind",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "indexed 30" in out and "products/s" in out and alias in out
    doc = os_client.get(index=alias, id="15970")["_source"]
    assert doc["colour"] == "Navy Blue" and doc["product_type"] == "Shirts"


def test_concrete_index_with_the_alias_name_is_refused_clearly(os_client, encoder, aliases, tmp_path, capsys):
    from cli.main import main

    name = _name()
    aliases.append(name)
    os_client.indices.create(index=name, body={"settings": {"index": {"number_of_replicas": 0}}})
    path = _write_jsonl(tmp_path / "c.jsonl", _rows_from_myntra(5))
    with pytest.raises(AliasConflictError, match=f"a concrete index named '{name}' exists"):
        run_index(path, alias=name, client=os_client, encoder=encoder, use_cache=False, progress=False)
    assert main(["index", "--catalog", path, "--alias", name]) == 2
    assert "concrete index" in capsys.readouterr().err
    assert managed_indices(os_client, name) == []  # nothing was created
    assert os_client.indices.exists(index=name) and not os_client.indices.exists_alias(name=name)


# --------------------------------------------------------------------------------------- incremental


def test_incremental_updates_changed_adds_new_and_deletes_removed_in_place(os_client, encoder, aliases, tmp_path):
    alias = _name()
    aliases.append(alias)
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    rows = _rows_from_myntra(41)
    new_row, rows = rows[-1], rows[:-1]
    path = tmp_path / "catalog.jsonl"
    _write_jsonl(path, rows)
    first = run_index(str(path), alias=alias, client=os_client, encoder=encoder, cache=cache, progress=False)
    assert first.indexed == 40

    changed, removed, recategorised = rows[3], rows[7], rows[9]
    old_hash = os_client.get(index=alias, id=changed["id"])["_source"]["text_hash"]
    changed["title"] = changed["title"] + " With Pockets"
    recategorised["category"] = "Changed Category"  # not part of rerank_text: no new vector, but a new doc
    rows2 = [r for r in rows if r is not removed] + [new_row]
    _write_jsonl(path, rows2)

    inc = run_index(str(path), incremental=True, alias=alias, client=os_client, encoder=encoder, cache=cache, progress=False)
    assert inc.mode == "incremental" and inc.index == first.index  # in place, no new index
    assert alias_indices(os_client, alias) == [first.index] and managed_indices(os_client, alias) == [first.index]
    assert (inc.indexed, inc.unchanged, inc.deleted, inc.skipped) == (3, 37, 1, [])
    assert (inc.embedded_computed, inc.embedded_cached) == (2, 1)
    # searchable at return
    assert os_client.count(index=alias)["count"] == 40
    doc = os_client.get(index=alias, id=changed["id"])["_source"]
    assert doc["title"].endswith("With Pockets") and doc["text_hash"] != old_hash
    assert doc["text_hash"] == text_hash(doc["rerank_text"])
    assert os_client.get(index=alias, id=recategorised["id"])["_source"]["category"] == "Changed Category"
    assert not os_client.exists(index=alias, id=removed["id"])
    assert os_client.exists(index=alias, id=new_row["id"])
    hits = text_search(os_client, alias, encoder, doc["rerank_text"], k=1)
    assert hits[0].id == changed["id"]

    again = run_index(str(path), incremental=True, alias=alias, client=os_client, encoder=encoder, cache=cache, progress=False)
    assert (again.indexed, again.unchanged, again.deleted) == (0, 40, 0)


def test_incremental_without_an_index_falls_back_to_a_full_build(os_client, encoder, aliases, tmp_path):
    alias = _name()
    aliases.append(alias)
    path = _write_jsonl(tmp_path / "c.jsonl", _rows_from_myntra(10))
    s = run_index(path, incremental=True, alias=alias, client=os_client, encoder=encoder, use_cache=False, progress=False)
    assert s.mode == "full" and s.indexed == 10 and "fell back to a full build" in s.notes[0]
    assert alias_indices(os_client, alias) == [s.index]


# ------------------------------------------------------------------------------------------------ bulk


def test_bulk_retries_429_items_and_reports_other_item_errors_without_retry(os_client, aliases):
    alias = _name()
    aliases.append(alias)
    name = f"{alias}-20000101-000000-000000"  # a managed name, so the module cleanup deletes it
    os_client.indices.create(index=name, body=build_index_body(4, refresh_interval=None))
    docs = [{"_index": name, "_id": str(i), "_source": {"product_id": str(i), "embedding": [1.0, 0, 0, i]}} for i in range(6)]

    # a retryable block answers every item with a real 429; without retries they are reported, not raised
    os_client.indices.put_settings(index=name, body={"index.blocks.read_only_allow_delete": True})
    results = list(bulk_results(os_client, docs, max_retries=0))
    assert [r.status for r in results] == [429] * 6 and not any(r.ok for r in results)
    assert "cluster_block_exception" in results[0].error

    # with retries: the block is lifted after ~1 s and the helper's backoff gets every item in
    lift = threading.Timer(
        1.0, lambda: os_client.indices.put_settings(index=name, body={"index.blocks.read_only_allow_delete": None})
    )
    lift.start()
    t0 = time.monotonic()
    results = list(bulk_results(os_client, docs, max_retries=6, initial_backoff_s=0.5, max_backoff_s=2))
    lift.join()
    assert time.monotonic() - t0 >= 0.5
    assert all(r.ok and r.op == "index" for r in results) and len(results) == 6

    # other per-item errors: reported with id and reason, not retried (no backoff), the rest lands
    docs[2]["_source"]["embedding"] = [1.0, 0, 0]  # wrong dimension
    docs[4]["_source"]["unknown_field"] = "x"  # dynamic: strict
    t0 = time.monotonic()
    results = {r.id: r for r in bulk_results(os_client, docs, max_retries=6, initial_backoff_s=5)}
    assert time.monotonic() - t0 < 5
    assert results["2"].status == 400 and "dimension mismatch" in results["2"].error.lower()
    assert results["4"].status == 400 and "strict_dynamic_mapping_exception" in results["4"].error
    assert all(results[i].ok for i in ("0", "1", "3", "5"))
    deleted = list(
        bulk_results(
            os_client, [{"_op_type": "delete", "_index": name, "_id": "5"}, {"_op_type": "delete", "_index": name, "_id": "nope"}]
        )
    )
    assert [(r.ok, r.status) for r in deleted] == [(True, 200), (False, 404)]
    with pytest.raises(NotFoundError):
        os_client.get(index=name, id="5")


def test_faiss_is_refused_on_a_node_without_its_native_library(os_client, aliases):
    """The local node's k-NN plugin (Maven Central zip) has no faiss JNI library: refuse before creating."""
    from indexer.index import IndexSetupError, create_index, native_engine_available

    if native_engine_available(os_client, "faiss") is not False:
        pytest.skip("this cluster has the faiss library or its node folders are not visible here")
    alias = _name()
    aliases.append(alias)
    name = f"{alias}-20000101-000000-000000"
    with pytest.raises(IndexSetupError, match="no faiss native library"):
        create_index(os_client, name, 384, IndexSettings(engine="faiss"))
    assert not os_client.indices.exists(index=name)


HM_ARTICLES = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data" / "hm_articles" / "articles.parquet"


@pytest.mark.skipif(not HM_ARTICLES.exists(), reason="H&M articles file not available (Kaggle terms: not bundled)")
def test_hm_catalog_indexes_through_the_same_path(os_client, encoder, aliases, tmp_path):
    alias = _name()
    aliases.append(alias)
    s = run_index(
        "hm",
        limit=300,
        hm_path=str(HM_ARTICLES),
        alias=alias,
        client=os_client,
        encoder=encoder,
        cache=EmbeddingCache(tmp_path / "emb.sqlite"),
        progress=False,
    )
    assert s.indexed == 300 and s.skipped == []
    doc = os_client.get(index=alias, id="0108775015")["_source"]  # zero-padded article id, with a description
    assert doc["title"] == "Strap top" and doc["brand"] == "H&M" and doc["description"]
    hits = knn_search(os_client, alias, encoder.encode_query("strap top"), k=5, filters={"gender": "women"})
    assert len(hits) == 5 and all(h.source["gender"] == "Women" for h in hits)
