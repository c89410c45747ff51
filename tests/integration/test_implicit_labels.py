"""Implicit labels: the UBI `ubi_events` reader (JSONL and a real OpenSearch index) and the pair-building rule."""

from __future__ import annotations

import json

import pytest

from labeling.implicit import ACTION_GRADES, build_implicit_pairs, parse_event, read_ubi_events
from labeling.querylog_reader import LoggedQuery
from labeling.sampling import assign_split


def ev(action, qid, obj, **kw):
    return {"action_name": action, "query_id": qid, "event_attributes": {"object": {"object_id": obj}}, **kw}


EVENTS = [
    ev("click", "q1", "p1", timestamp="2026-12-01T10:00:00Z", client_id="c1", session_id="s1"),
    ev("add_to_cart", "q1", "p1"),
    ev("purchase", "q2", "p1"),  # second search of the same query: purchase wins
    ev("click", "q1", "p2"),
    ev("impression", "q1", "p3"),  # not an interaction: ignored, counted
    ev("hover", "q1", "p3"),
    ev("click", "q-unknown", "p1"),  # no such search
    ev("click", "q1", "p-gone"),  # product not in the catalog
    ev("Product_Click", "q3", "p4"),  # alias of click, other query
    {"action_name": "click", "event_attributes": {"object": {"object_id": "p1"}}},  # no query_id
    {"action_name": "click", "query_id": "q1", "event_attributes": {}},  # no object id
    {"query_id": "q1"},  # no action
]
SEARCHES = [
    LoggedQuery("Red Dress", query_id="q1", hit_ids=("p1", "p2", "p3", "p5", "p6")),
    LoggedQuery("red dress!", query_id="q2", hit_ids=("p7", "p1")),
    LoggedQuery("black boots", query_id="q3", hit_ids=("p4", "p8")),
    LoggedQuery("blue scarf", query_id="q4", hit_ids=("p9",)),  # nobody acted: no pairs
]
CATALOG = {f"p{i}": f"product {i} text" for i in range(1, 10)}


def write_events(path, rows, extra_lines=()):
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
        for line in extra_lines:
            fh.write(line + "\n")


def test_reader_reports_bad_rows_and_counts_other_actions(tmp_path):
    path = tmp_path / "ubi_events.jsonl"
    write_events(path, EVENTS, extra_lines=["{not json", "[1, 2]", ""])
    read = read_ubi_events(path)
    assert read.read == len(EVENTS) + 2
    assert [e.action for e in read.events] == ["click", "add_to_cart", "purchase", "click", "click", "click", "click"]
    assert read.ignored_actions == {"impression": 1, "hover": 1}
    reasons = dict(read.skipped)
    assert reasons == {
        10: "no query_id",
        11: "no event_attributes.object.object_id",
        12: "no action_name",
        13: reasons[13],
        14: "not a JSON object",
    }
    assert reasons[13].startswith("invalid JSON")
    first = read.events[0]
    assert (first.query_id, first.object_id, first.client_id, first.session_id) == ("q1", "p1", "c1", "s1")
    assert read_ubi_events(path, limit=3).read == 3
    with pytest.raises(FileNotFoundError):
        read_ubi_events(tmp_path / "missing.jsonl")


def test_pair_rule_graded_and_binary(tmp_path):
    events = [e for e in (parse_event(x) for x in EVENTS) if not isinstance(e, (str, type(None)))]
    labels = build_implicit_pairs(SEARCHES, events, CATALOG)
    got = {(p.query, p.product_id): p.grade for p in labels.pairs}
    assert got == {
        ("red dress", "p1"): ACTION_GRADES["purchase"],  # click, add_to_cart, purchase over two searches -> 3
        ("red dress", "p2"): 1,
        ("red dress", "p3"): 0,  # shown, only an impression
        ("red dress", "p5"): 0,
        ("red dress", "p6"): 0,
        ("red dress", "p7"): 0,  # shown in the second search of the same query
        ("black boots", "p4"): 1,
        ("black boots", "p8"): 0,
    }
    support = {(p.query, p.product_id): p.events for p in labels.pairs}
    assert support[("red dress", "p1")] == 3 and support[("red dress", "p3")] == 0
    assert labels.counts["unknown_query"] == 1 and labels.counts["unknown_product"] == 1
    assert labels.counts["positives"] == 3 and labels.counts["negatives"] == 5 and labels.counts["searches"] == 4
    assert all(p.split == assign_split(p.query) for p in labels.pairs)
    assert labels.qrels() == {"red dress": {"p1": 3, "p2": 1}, "black boots": {"p4": 1}}
    assert all(p.text == CATALOG[p.product_id] for p in labels.pairs)

    binary = build_implicit_pairs(SEARCHES, events, CATALOG, grades="binary", negatives=False)
    assert {(p.query, p.product_id): p.grade for p in binary.pairs} == {
        ("red dress", "p1"): 3,
        ("red dress", "p2"): 3,
        ("black boots", "p4"): 3,
    }
    shallow = build_implicit_pairs(SEARCHES, events, CATALOG, shown_depth=2)
    assert {p.product_id for p in shallow.pairs if p.query == "red dress" and p.grade == 0} == {"p7"}  # p3 (rank 3) not shown
    with pytest.raises(ValueError):
        build_implicit_pairs(SEARCHES, events, CATALOG, grades="clicks")
    # a custom split rule (the labeling job's fractions) is applied per query
    custom = build_implicit_pairs(SEARCHES, events, CATALOG, split_of=lambda q: "test" if "boots" in q else "train")
    assert {p.split for p in custom.pairs if p.query == "black boots"} == {"test"}


def test_reader_reads_a_real_ubi_events_index(os_client, unique_name):
    from opensearchpy import helpers

    os_client.indices.create(index=unique_name, body={"mappings": {"properties": {"action_name": {"type": "keyword"}}}})
    try:
        helpers.bulk(os_client, ({"_index": unique_name, "_source": r} for r in EVENTS), refresh=True)
        read = read_ubi_events(unique_name, client=os_client)
        assert read.read == len(EVENTS) and len(read.events) == 7 and len(read.skipped) == 3
        assert read.ignored_actions == {"impression": 1, "hover": 1}
    finally:
        os_client.indices.delete(index=unique_name, ignore_unavailable=True)
