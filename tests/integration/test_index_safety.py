"""No partial index goes live: the partial-index gate, stale documents, byte-bounded and retry-safe bulk.

Against the real local OpenSearch node and the real packaged bi-encoder. Rows are real Myntra rows;
the rejected ones carry a colour of 40,000 characters, which OpenSearch itself refuses per item (a
keyword term longer than Lucene's 32,766 bytes: "immense term"), so the failures are real bulk
rejections, not simulated ones. Every index created here is deleted at the end.
"""

from __future__ import annotations

import json
import math
import threading
import uuid

import pytest

from cli.main import main
from fashion_rerank.embedding import EmbeddingCache, load_bi_encoder
from fashion_rerank.opensearch import make_client
from fashion_rerank.settings import IndexSettings
from indexer.bulk import bulk_results
from indexer.catalogs import Skipped, read_myntra
from indexer.gate import PartialIndexError, count_problems, failed_share, failure_digest, share_problem
from indexer.index import alias_indices, build_index_body, index_meta, managed_indices
from indexer.run import run_index

IMMENSE = "x" * 40000


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def encoder():
    import torch

    torch.set_num_threads(1)  # the machine is shared
    return load_bi_encoder()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return EmbeddingCache(tmp_path_factory.mktemp("emb") / "embeddings.sqlite")


@pytest.fixture(scope="module")
def aliases(os_client):
    """Aliases used by this module; every `<alias>-*` index is deleted at the end."""
    used: list[str] = []
    yield used
    for alias in used:
        for name in managed_indices(os_client, alias):
            os_client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture(scope="module")
def myntra_rows():
    return [{"id": p.id, "title": p.title, **dict(p.attributes)} for p in read_myntra(limit=60).products]


def _write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ------------------------------------------------------------------------------------ the gate's rules


def test_gate_rules_count_failed_rows_but_not_duplicates_and_respect_limit():
    s = IndexSettings()
    skipped = [
        Skipped(3, "missing id"),
        Skipped(5, "duplicate id 9"),
        *[Skipped(f"p{i}", "bulk 400 illegal_argument_exception: immense term") for i in range(7)],
    ]
    assert failed_share(101, skipped) == pytest.approx(8 / 100)
    assert failure_digest(skipped[2:] + skipped[:1]) == (
        "7 x bulk 400 illegal_argument_exception (ids p0, p1, p2, p3, p4 and 2 more); 1 x missing id (rows 3)"
    )
    problem = share_problem(101, skipped, s)
    assert problem is not None and problem.startswith("8 of 100 catalog rows failed (8.00%, above the 0.50%")
    assert share_problem(1601, skipped, s) is None  # 8 / 1600 = 0.5%: not above
    assert share_problem(101, skipped, IndexSettings(max_failed_share=1.0)) is None
    kw = dict(indexed=50, new_count=50, previous_index="p-1", settings=s)
    assert "fewer than 80% of the 100 in p-1" in count_problems(previous_count=100, limit=None, **kw)[0]
    assert count_problems(previous_count=100, limit=50, **kw) == []  # --limit 50: compared with 50
    assert count_problems(previous_count=62, limit=None, **kw) == []  # 50 >= 0.8 * 62
    assert count_problems(previous_count=None, limit=None, **kw) == []
    assert count_problems(previous_count=1000, limit=None, **{**kw, "settings": IndexSettings(min_count_ratio=0)}) == []
    lost = count_problems(indexed=50, new_count=49, previous_index=None, previous_count=None, limit=None, settings=s)
    assert lost == ["the new index holds 49 documents but OpenSearch acknowledged 50"]


# ---------------------------------------------------------------------------------------- full builds


def test_full_build_with_rejected_rows_keeps_the_alias_keeps_the_index_and_exits_3(
    os_client, encoder, cache, aliases, myntra_rows, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("FASHION_RERANK_CACHE", str(tmp_path / "cache"))
    alias = _name()
    aliases.append(alias)
    rows = [dict(r) for r in myntra_rows]
    path = _write_jsonl(tmp_path / "catalog.jsonl", rows)
    live = run_index(path, alias=alias, client=os_client, encoder=encoder, cache=cache, progress=False).index
    assert alias_indices(os_client, alias) == [live]
    assert os_client.count(index=alias)["count"] == 60

    bad = [rows[i]["id"] for i in (4, 17, 33)]
    for i in (4, 17, 33):
        rows[i]["colour"] = IMMENSE
    _write_jsonl(tmp_path / "catalog.jsonl", rows)
    code = main(["index", "build", "--catalog", path, "--alias", alias, "--json"])
    out, err = capsys.readouterr()
    assert code == 3, err
    summary = json.loads(out)
    refused = summary["index"]
    # the alias did not move; readers still get the previous 60 documents
    assert alias_indices(os_client, alias) == [live] and refused != live
    assert os_client.count(index=alias)["count"] == 60
    # the new index is kept for inspection, refreshed, marked refused (never a rollback target)
    assert os_client.count(index=refused)["count"] == 57
    meta = index_meta(os_client, refused)
    assert meta["complete"] is False and meta["documents"] == 57
    assert meta["refused"][0].startswith("3 of 60 catalog rows failed (5.00%, above the 0.50%")
    # the reasons: which ids and why, in the JSON summary and on stderr
    assert summary["alias_moved"] is False and summary["failed"] == 3 and summary["failed_share"] == 0.05
    assert sorted(s["row"] for s in summary["skipped"]) == sorted(bad)
    assert all("immense term" in s["reason"] and s["reason"].startswith("bulk 400") for s in summary["skipped"])
    assert err.startswith("error: partial index: alias")
    assert f"3 x bulk 400 illegal_argument_exception (ids {', '.join(bad)})" in err
    assert f"{refused} kept for inspection; --allow-partial serves it anyway" in err

    # --allow-partial serves the same catalog: the alias moves, the refused index goes with retention
    code = main(["index", "build", "--catalog", path, "--alias", alias, "--allow-partial"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (served,) = alias_indices(os_client, alias)
    assert served not in (live, refused) and os_client.count(index=alias)["count"] == 57
    assert "served despite: 3 of 60 catalog rows failed" in out and "failed 3 (5.00% of the rows read)" in out
    assert index_meta(os_client, served)["complete"] is True
    assert managed_indices(os_client, alias) == sorted([live, served])  # previous kept for rollback


def test_full_build_far_below_the_previous_count_is_refused_unless_limit_explains_it(
    os_client, encoder, cache, aliases, myntra_rows, tmp_path
):
    alias = _name()
    aliases.append(alias)
    path = tmp_path / "catalog.jsonl"
    _write_jsonl(path, myntra_rows)
    kw = dict(alias=alias, client=os_client, encoder=encoder, cache=cache, progress=False)
    first = run_index(str(path), **kw)
    assert first.alias_moved and first.new_count == 60 and first.refused == []

    _write_jsonl(path, myntra_rows[:40])  # a catalog file cut short: every row it has is fine
    with pytest.raises(PartialIndexError) as caught:
        run_index(str(path), **kw)
    s = caught.value.summary
    assert s.failed == [] and s.new_count == 40 and s.previous_count == 60 and not s.alias_moved
    assert s.refused == [
        f"the new index holds 40 documents, fewer than 80% of the 60 in {first.index} (FR_INDEX_MIN_COUNT_RATIO); "
        "a truncated or wrong catalog file?"
    ]
    assert alias_indices(os_client, alias) == [first.index] and os_client.count(index=alias)["count"] == 60
    assert index_meta(os_client, s.index)["refused"] == s.refused

    _write_jsonl(path, myntra_rows)
    sliced = run_index(str(path), limit=40, **kw)  # a deliberate slice: compared with min(60, 40)
    assert sliced.alias_moved and sliced.refused == [] and os_client.count(index=alias)["count"] == 40


# ---------------------------------------------------------------------------------------- incremental


def test_incremental_rejected_row_is_reported_as_stale_and_fails_above_the_share(
    os_client, encoder, cache, aliases, myntra_rows, tmp_path
):
    alias = _name()
    aliases.append(alias)
    rows = [dict(r) for r in myntra_rows[:40]]
    path = tmp_path / "catalog.jsonl"
    _write_jsonl(path, rows)
    kw = dict(incremental=True, alias=alias, client=os_client, encoder=encoder, cache=cache, progress=False)
    first = run_index(str(path), **kw)  # no index yet: a full build
    assert first.mode == "full" and first.indexed == 40

    changed, rejected = rows[3], rows[8]
    old_title = rejected["title"]
    changed["title"] += " With Pockets"
    rejected["title"] += " Limited Edition"
    rejected["colour"] = IMMENSE  # its new version is refused by OpenSearch
    _write_jsonl(path, rows)

    with pytest.raises(PartialIndexError) as caught:
        run_index(str(path), **kw)
    s = caught.value.summary
    assert (s.indexed, s.unchanged, s.stale) == (1, 38, [rejected["id"]])
    assert [(x.row, x.reason.split(":")[0]) for x in s.failed] == [(rejected["id"], "bulk 400 illegal_argument_exception")]
    assert caught.value.reasons[0].startswith(f"incremental update of {first.index} (in place, already live): 1 of 40")
    assert caught.value.reasons[1] == f"1 stale documents still served: {rejected['id']}"
    # in place: the good change is live, the rejected product still shows its old row (hence "stale")
    assert os_client.get(index=alias, id=changed["id"])["_source"]["title"].endswith("With Pockets")
    assert os_client.get(index=alias, id=rejected["id"])["_source"]["title"] == old_title

    # under a looser share the same run returns, still naming the stale product; it is retried every run
    again = run_index(str(path), settings=IndexSettings(max_failed_share=0.05), **kw)
    assert (again.indexed, again.unchanged, again.stale, again.refused) == (0, 39, [rejected["id"]], [])
    assert f"STALE 1 documents still served from an older catalog row: {rejected['id']}" in again.format()


# ----------------------------------------------------------------------------------------------- bulk


class _BulkSpy:
    """Wraps a real client's transport to record every `_bulk` request body size (bytes); nothing is faked."""

    def __init__(self, client):
        self.sizes: list[int] = []
        real = client.transport.perform_request

        def perform_request(method, url, *args, **kwargs):
            if url.endswith("/_bulk"):
                body = kwargs.get("body", args[2] if len(args) > 2 else b"")
                self.sizes.append(len(body.encode("utf-8") if isinstance(body, str) else body))
            return real(method, url, *args, **kwargs)

        client.transport.perform_request = perform_request


class _BlockOneBulk:
    """Puts a real `read_only_allow_delete` block on the index written by the `nth` `_bulk` request while
    it is sent (OpenSearch answers each of its items 429) and lifts it `lift_after_s` later."""

    def __init__(self, client, admin, nth: int, lift_after_s: float = 0.0):
        self.seen = 0
        real = client.transport.perform_request

        def perform_request(method, url, *args, **kwargs):
            if not url.endswith("/_bulk"):
                return real(method, url, *args, **kwargs)
            self.seen += 1
            if self.seen != nth:
                return real(method, url, *args, **kwargs)
            body = kwargs.get("body", args[2] if len(args) > 2 else "")
            index = json.loads(body.splitlines()[0])["index"]["_index"]
            admin.indices.put_settings(index=index, body={"index.blocks.read_only_allow_delete": True})
            lift = threading.Timer(
                lift_after_s, lambda: admin.indices.put_settings(index=index, body={"index.blocks.read_only_allow_delete": None})
            )
            try:
                return real(method, url, *args, **kwargs)
            finally:
                lift.start()
                lift.join()

        client.transport.perform_request = perform_request


def test_429s_left_after_the_retries_count_as_failed_rows_and_retried_ones_do_not(
    os_client, encoder, cache, aliases, myntra_rows, tmp_path
):
    alias = _name()
    aliases.append(alias)
    path = _write_jsonl(tmp_path / "catalog.jsonl", myntra_rows)
    first = run_index(path, alias=alias, client=os_client, encoder=encoder, cache=cache, progress=False)

    # 3 documents per request; the 4th request meets a write block and retries are off: 3 real 429s
    s = IndexSettings(bulk_docs=3, max_retries=0)
    client = make_client()
    _BlockOneBulk(client, os_client, nth=4)
    with pytest.raises(PartialIndexError) as caught:
        run_index(path, alias=alias, client=client, encoder=encoder, cache=cache, settings=s, progress=False)
    summ = caught.value.summary
    assert [x.reason.split(":")[0] for x in summ.failed] == ["bulk 429 cluster_block_exception"] * 3
    assert summ.new_count == 57 and alias_indices(os_client, alias) == [first.index]
    assert "3 x bulk 429 cluster_block_exception" in caught.value.reasons[1]

    # with retries the block lifted after 1 s is waited out: nothing failed, the alias moves
    s = IndexSettings(bulk_docs=3, max_retries=4, initial_backoff_s=0.5, max_backoff_s=2)
    client = make_client()
    _BlockOneBulk(client, os_client, nth=4, lift_after_s=1.0)
    ok = run_index(path, alias=alias, client=client, encoder=encoder, cache=cache, settings=s, progress=False)
    assert ok.failed == [] and ok.new_count == 60 and ok.alias_moved


def test_max_chunk_bytes_from_the_environment_splits_bulk_requests_and_indexes_everything(
    opensearch_url, encoder, cache, aliases, myntra_rows, tmp_path, monkeypatch
):
    alias = _name()
    aliases.append(alias)
    path = _write_jsonl(tmp_path / "catalog.jsonl", myntra_rows)

    client = make_client()
    spy = _BulkSpy(client)
    whole = run_index(path, alias=alias, client=client, encoder=encoder, cache=cache, progress=False)
    assert whole.indexed == 60 and spy.sizes and len(spy.sizes) == 1  # 60 docs < bulk_docs, < 10 MiB
    total = spy.sizes[0]

    monkeypatch.setenv("FR_INDEX_MAX_CHUNK_BYTES", "16000")
    client = make_client()
    spy = _BulkSpy(client)
    small = run_index(path, alias=alias, client=client, encoder=encoder, cache=cache, progress=False)
    assert small.indexed == 60 and small.skipped == [] and small.alias_moved
    assert client.count(index=alias)["count"] == 60
    assert max(spy.sizes) <= 16000
    assert len(spy.sizes) >= math.ceil(total / 16000) > 1
    assert abs(sum(spy.sizes) - total) < 0.02 * total  # the same documents, cut differently


def test_bulk_sends_only_retry_safe_actions_and_a_replay_changes_nothing(os_client, aliases):
    alias = _name()
    aliases.append(alias)
    name = f"{alias}-20000101-000000-000000"
    unsafe = [
        [{"_index": name, "_source": {"product_id": "1"}}],  # index without _id: a replay adds a copy
        [{"_op_type": "create", "_index": name, "_id": "1", "_source": {"product_id": "1"}}],
        [{"_op_type": "update", "_index": name, "_id": "1", "doc": {"product_id": "1"}}],
        [{"_op_type": "delete", "_index": name}],
    ]
    for actions in unsafe:
        with pytest.raises(ValueError, match="not safe to retry|without an explicit _id"):
            list(bulk_results(os_client, actions))
    assert not os_client.indices.exists(index=name)  # nothing was sent (it would have auto-created the index)

    def lazily():
        yield {"_index": name, "_id": "a", "_source": {"product_id": "a"}}
        yield {"_index": name, "_source": {"product_id": "b"}}

    with pytest.raises(ValueError, match="without an explicit _id"):
        list(bulk_results(os_client, lazily()))

    os_client.indices.delete(index=name, ignore_unavailable=True)
    os_client.indices.create(index=name, body=build_index_body(4, refresh_interval=None))
    docs = [{"_index": name, "_id": str(i), "_source": {"product_id": str(i), "embedding": [1.0, 0, 0, i]}} for i in range(5)]
    for _ in range(2):  # what a retry of an already-applied request does
        assert all(r.ok for r in bulk_results(os_client, docs))
    os_client.indices.refresh(index=name)
    assert os_client.count(index=name)["count"] == 5
    assert os_client.get(index=name, id="3")["_version"] == 2
