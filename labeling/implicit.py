"""Implicit feedback as a label source: UBI `ubi_events` (click, add_to_cart, purchase) joined to `ubi_queries`.

Teams already log what shoppers did after a search. OpenSearch User Behavior Insights keeps it in two
indices: `ubi_queries` (one record per search: `query_id`, `user_query`, `query_response_hit_ids`, what was
shown) and `ubi_events` (one record per action: `action_name`, `query_id`,
`event_attributes.object.object_id`, `timestamp`, `client_id`, `session_id`). This module reads events from an
index or a JSONL file and turns them, with the logged queries, into training pairs and qrels.

The rule (docs/implicit-labels.md says the same in prose):
- A product a shopper *interacted with* after a search is a positive for that search's query. With
  `grades="graded"` the grade is the strongest action seen for (query, product) over all its searches:
  purchase 3 > add_to_cart 2 > click 1 (`ACTION_GRADES`). With `grades="binary"` (what a click or purchase
  log gives a team without grades, and how MODA trained on purchases) every interaction is 3 (= label 1.0).
- A product *shown* for the query (in `query_response_hit_ids` of one of its searches) and never interacted
  with in any search of that query is a negative, grade 0. Only the first `shown_depth` hits of each search
  count as shown (shoppers rarely look further; default 10).
- Queries are normalised (`labeling.sampling.normalise_query`) and split by query (`assign_split`), the same
  train/dev/test split the judged data uses, so no query crosses splits.
- Counted, never silently dropped: malformed rows (with line numbers), actions other than the three (ignored
  with a count per action: impressions, hovers, page views...), events whose `query_id` is in no logged search
  (`unknown_query`), events or shown hits whose product is not in the catalog (`unknown_product`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping

from labeling.querylog_reader import LoggedQuery
from labeling.sampling import assign_split, normalise_query

#: Action -> grade for graded implicit labels (purchase > add_to_cart > click). Shown, not interacted: 0.
ACTION_GRADES: dict[str, int] = {"purchase": 3, "add_to_cart": 2, "click": 1}

#: Other spellings of the three actions seen in UBI clients and shop logs.
ACTION_ALIASES: dict[str, str] = {
    "purchase": "purchase",
    "buy": "purchase",
    "order": "purchase",
    "checkout": "purchase",
    "add_to_cart": "add_to_cart",
    "add-to-cart": "add_to_cart",
    "addtocart": "add_to_cart",
    "add_to_basket": "add_to_cart",
    "click": "click",
    "product_click": "click",
    "item_click": "click",
}


@dataclass(frozen=True)
class UbiEvent:
    """One interaction: canonical action (purchase | add_to_cart | click), the search's query_id, the product."""

    action: str
    query_id: str
    object_id: str
    timestamp: str = ""
    client_id: str = ""
    session_id: str = ""


@dataclass
class EventsRead:
    """Events read from a source; bad rows as (line or position, reason); other actions counted by name."""

    events: list[UbiEvent] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    ignored_actions: Counter = field(default_factory=Counter)
    read: int = 0


def parse_event(obj: Any) -> UbiEvent | str | None:
    """A `UbiEvent` from one `ubi_events` record; a reason string for a malformed record; None for an action
    outside ACTION_ALIASES (the caller counts it by name)."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    action = obj.get("action_name")
    if not isinstance(action, str) or not action.strip():
        return "no action_name"
    canon = ACTION_ALIASES.get(action.strip().lower())
    if canon is None:
        return None
    qid = obj.get("query_id")
    if not isinstance(qid, (str, int)) or not str(qid).strip():
        return "no query_id"
    attrs = obj.get("event_attributes")
    obj_id = None
    if isinstance(attrs, dict) and isinstance(attrs.get("object"), dict):
        obj_id = attrs["object"].get("object_id")
    if obj_id is None:  # flattened spellings seen in exports
        obj_id = obj.get("event_attributes.object.object_id") or obj.get("object_id")
    if not isinstance(obj_id, (str, int)) or not str(obj_id).strip():
        return "no event_attributes.object.object_id"
    sess = obj.get("session_id") or (attrs.get("session_id") if isinstance(attrs, dict) else "") or ""
    return UbiEvent(canon, str(qid), str(obj_id), str(obj.get("timestamp") or ""), str(obj.get("client_id") or ""), str(sess))


def _raw_records(source: str | Path, client=None) -> Iterator[tuple[int, Any]]:
    p = Path(str(source))
    if client is None:
        if not p.exists():
            raise FileNotFoundError(f"ubi events file {p} does not exist")
        with open(p, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, f"invalid JSON ({exc.msg})"
    else:
        from opensearchpy import helpers

        for n, hit in enumerate(helpers.scan(client, index=str(source), query={"query": {"match_all": {}}}), start=1):
            yield n, hit.get("_source", {})


def read_ubi_events(source: str | Path, client=None, limit: int | None = None) -> EventsRead:
    """Read `ubi_events` records from a JSONL file (client None) or an OpenSearch index (with `client`).

    Args:
        source: the JSONL path, or the index name.
        client: an opensearch-py client to read an index (scrolls all documents).
        limit: stop after this many records.
    Returns:
        EventsRead: interaction events in source order; malformed rows in `.skipped` (line, reason); other
        actions counted in `.ignored_actions`.
    Raises:
        FileNotFoundError: a file source that does not exist. opensearchpy.NotFoundError: no such index.
    """
    out = EventsRead()
    for n, obj in _raw_records(source, client):
        if limit is not None and out.read >= limit:
            break
        out.read += 1
        ev = obj if isinstance(obj, str) else parse_event(obj)
        if isinstance(ev, UbiEvent):
            out.events.append(ev)
        elif ev is None:
            out.ignored_actions[str(obj.get("action_name")).strip().lower()] += 1
        else:
            out.skipped.append((n, ev))
    return out


@dataclass(frozen=True)
class ImplicitPair:
    """One implicit training pair: normalised query, product id, product text, grade 0-3, split, and how
    many interaction events support it (0 for a shown-not-interacted negative)."""

    query: str
    product_id: str
    text: str
    grade: int
    split: str
    events: int = 0


@dataclass
class ImplicitLabels:
    """Pairs built from events and logged searches, and what could not be used (counts by reason)."""

    pairs: list[ImplicitPair]
    counts: Counter = field(default_factory=Counter)

    def qrels(self, split: str | None = None) -> dict[str, dict[str, int]]:
        """{query: {product_id: grade}} of the interacted products (grade > 0): implicit qrels, as MODA scored."""
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for p in self.pairs:
            if p.grade > 0 and (split is None or p.split == split):
                out[p.query][p.product_id] = p.grade
        return dict(out)

    def by_split(self, split: str) -> list[ImplicitPair]:
        return [p for p in self.pairs if p.split == split]


def build_implicit_pairs(
    queries: Iterable[LoggedQuery],
    events: Iterable[UbiEvent],
    product_text: Mapping[str, str] | Callable[[str], str | None],
    grades: Literal["graded", "binary"] = "graded",
    shown_depth: int = 10,
    negatives: bool = True,
    split_of: Callable[[str], str] = assign_split,
) -> ImplicitLabels:
    """Turn logged searches and their interaction events into (query, product, grade) pairs (module rule).

    Args:
        queries: the logged searches (`ubi_queries` records as `LoggedQuery`), joined to events by query_id.
        events: interaction events (`read_ubi_events(...).events`).
        product_text: product id -> its `rerank_text` (a dict, or a function returning None when unknown).
        grades: "graded" (purchase 3, add_to_cart 2, click 1) or "binary" (every interaction 3).
        shown_depth: how many hits of each search count as shown (negatives come from these).
        negatives: add shown-not-interacted products as grade-0 pairs.
        split_of: normalised query -> "train" | "dev" | "test"; pass the labeling job's own rule
            (`assign_split(q, s.dev_fraction, s.test_fraction, s.split_salt)` for LabelSettings `s`) so implicit
            and judged data split alike.
    Returns:
        ImplicitLabels with pairs in a deterministic order (query, then product id) and counts: "events",
        "unknown_query", "unknown_product", "searches", "searches_without_query_id", "positives", "negatives".
    Raises:
        ValueError: an unknown `grades` mode.
    """
    if grades not in ("graded", "binary"):
        raise ValueError(f"grades {grades!r}: 'graded' or 'binary'")
    lookup = product_text.get if isinstance(product_text, Mapping) else product_text
    counts: Counter = Counter()
    by_id: dict[str, str] = {}
    shown: dict[str, set[str]] = defaultdict(set)
    for q in queries:
        counts["searches"] += 1
        nq = normalise_query(q.user_query)
        if not nq:
            counts["searches_without_text"] += 1
            continue
        if q.query_id:
            by_id[q.query_id] = nq
        else:
            counts["searches_without_query_id"] += 1
        shown[nq].update(q.hit_ids[:shown_depth])
    best: dict[tuple[str, str], int] = {}
    support: Counter = Counter()
    for ev in events:
        counts["events"] += 1
        nq = by_id.get(ev.query_id)
        if nq is None:
            counts["unknown_query"] += 1
            continue
        if lookup(ev.object_id) is None:
            counts["unknown_product"] += 1
            continue
        g = ACTION_GRADES[ev.action] if grades == "graded" else 3
        key = (nq, ev.object_id)
        best[key] = max(best.get(key, 0), g)
        support[key] += 1
    pairs: list[ImplicitPair] = []
    for (nq, pid), g in best.items():
        pairs.append(ImplicitPair(nq, pid, lookup(pid), g, split_of(nq), support[(nq, pid)]))
    counts["positives"] = len(pairs)
    if negatives:
        interacted = defaultdict(set)
        for nq, pid in best:
            interacted[nq].add(pid)
        for nq in sorted(shown):
            if nq not in interacted:
                continue  # a search nobody acted on says nothing about its hits
            for pid in sorted(shown[nq] - interacted[nq]):
                text = lookup(pid)
                if text is None:
                    counts["unknown_product"] += 1
                    continue
                pairs.append(ImplicitPair(nq, pid, text, 0, split_of(nq), 0))
                counts["negatives"] += 1
    pairs.sort(key=lambda p: (p.query, p.product_id))
    return ImplicitLabels(pairs, counts)
