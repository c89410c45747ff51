"""Inputs for the label-quality experiment (`labeling.experiment`): a team's own UBI logs, the H&M reproduction,
or a simulated log on the bundled catalog. `fashion-rerank experiment label-quality` calls these.

- `own_log`: an existing products alias plus the team's `ubi_queries` and `ubi_events` (indices or JSONL files).
  Product texts come from the index (`rerank_text` of each document, fetched with `mget`).
- `hm_log`: the MODA reproduction: index the H&M articles (Kaggle competition data, read from the user's path,
  never bundled) and turn the real purchases of the competition's last week into UBI searches and purchase
  events, with shopper queries generated from each purchased article's attributes (`demo.hm_log`).
- `simulated_log`: the bundled Myntra catalog with a *simulated* log: shopper queries from `demo.queries`, each
  search followed by clicks on products its intent matches and, for some, a purchase. For tests and a quick
  look only; it says nothing about real shoppers.

In every case the searches' "shown" hits are what the index returns for the query (kNN top `shown_depth`)
when the log does not say what was shown.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Iterable, Sequence

from fashion_rerank.product import Product, rerank_text
from labeling.implicit import UbiEvent, read_ubi_events
from labeling.querylog_reader import LoggedQuery, read_query_log
from labeling.sampling import normalise_query


def texts_from_index(client, index: str, ids: Iterable[str], chunk: int = 1000) -> dict[str, str]:
    """{product id: rerank_text} for the ids found in `index` (missing ids are left out). Uses `mget` in chunks."""
    out: dict[str, str] = {}
    todo = sorted(set(ids))
    for i in range(0, len(todo), chunk):
        resp = client.mget(index=index, body={"ids": todo[i : i + chunk]}, params={"_source_excludes": "vector"})
        for d in resp.get("docs", []):
            if d.get("found"):
                src = d.get("_source", {})
                out[d["_id"]] = src.get("rerank_text") or rerank_text(Product.from_fields(src, id=d["_id"]))
    return out


def fill_shown(
    searches: Sequence[LoggedQuery],
    client,
    index: str,
    encoder,
    depth: int = 10,
    progress: bool = True,
    batch: int = 256,
    vector_field: str | None = None,
) -> list[LoggedQuery]:
    """Searches whose `hit_ids` are empty get the kNN top-`depth` of their query; the others are returned unchanged.

    One kNN per distinct normalised query, the same request `fashion_rerank.retrieval.knn_query` builds, sent
    `batch` at a time: queries embedded together (`encoder.encode`) and sent in one `_msearch`. The H&M week has
    61,794 distinct queries, one at a time that is ~12 min on 2 CPUs. A query whose search fails in the batch gets
    no shown hits (counted in the progress bar's postfix, never silently).
    """
    from fashion_rerank.retrieval import VECTOR_FIELD, knn_query

    field_name = vector_field or VECTOR_FIELD
    need = sorted({normalise_query(s.user_query) for s in searches if not s.hit_ids} - {""})
    hits: dict[str, tuple[str, ...]] = {}
    failed = 0
    bar = None
    if progress and need:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(need), desc="shown hits (kNN)", unit="query")
    for i in range(0, len(need), batch):
        chunk = need[i : i + batch]
        vecs = encoder.encode(chunk)
        body: list[dict] = []
        for v in vecs:
            q = knn_query(v.tolist(), depth, None, field_name)
            q["_source"] = False
            body += [{"index": index}, q]
        resp = client.msearch(body=body)
        for q, r in zip(chunk, resp.get("responses", [])):
            if "error" in r:
                failed += 1
                continue
            hits[q] = tuple(h["_id"] for h in r.get("hits", {}).get("hits", []))
        if bar is not None:
            bar.update(len(chunk))
            if failed:
                bar.set_postfix(failed=failed)
    if bar is not None:
        bar.close()
    return [s if s.hit_ids else replace(s, hit_ids=hits.get(normalise_query(s.user_query), ())) for s in searches]


def own_log(client, queries_source: str, events_source: str) -> tuple[list[LoggedQuery], list[UbiEvent], dict]:
    """Read a team's `ubi_queries` and `ubi_events` (index names or JSONL paths); returns (searches, events,
    facts for the report: records read, rows skipped, actions ignored)."""
    from labeling.querylog_reader import is_file_source

    q = read_query_log(queries_source, client=None if is_file_source(queries_source) else client)
    searches = list(q.records)
    e = read_ubi_events(events_source, client=None if is_file_source(events_source) else client)
    facts = {
        "log": f"ubi_queries {queries_source}, ubi_events {events_source}",
        "ubi_queries_read": q.read,
        "ubi_queries_skipped": len(q.skipped),
        "ubi_events_read": e.read,
        "ubi_events_skipped": len(e.skipped),
        "ubi_events_ignored_actions": dict(e.ignored_actions),
    }
    return searches, e.events, facts


def simulated_log(
    products: Sequence[Product], n_distinct: int = 300, seed: int = 7, purchase_rate: float = 0.35
) -> tuple[list[LoggedQuery], list[UbiEvent], dict]:
    """A SIMULATED log over `products`: `demo.queries` shopper queries (Zipf repeats), each search followed by a
    click on one or two products its intent matches, an add-to-cart on the first with probability 0.5 x
    `purchase_rate` and a purchase with `purchase_rate`. Seeded; for tests and demos only."""
    from demo.queries import generate_queries, matching_products

    rng = random.Random(seed)
    qs = generate_queries(products, n_distinct=n_distinct, seed=seed)
    searches: list[LoggedQuery] = []
    events: list[UbiEvent] = []
    n = 0
    for sq in qs.train + qs.test:
        matches = matching_products(sq.intent, products)
        for _ in range(sq.count):
            n += 1
            qid = f"sim-{n}"
            searches.append(LoggedQuery(sq.text, query_id=qid, client_id=f"shopper-{rng.randrange(1000)}"))
            if not matches:
                continue
            picked = rng.sample(matches, min(len(matches), rng.choice((1, 2))))
            for p in picked:
                events.append(UbiEvent("click", qid, p.id))
            if rng.random() < purchase_rate * 0.5:
                events.append(UbiEvent("add_to_cart", qid, picked[0].id))
            if rng.random() < purchase_rate:
                events.append(UbiEvent("purchase", qid, picked[0].id))
    facts = {
        "log": f"SIMULATED on {len(products)} bundled Myntra products: {len(qs.train) + len(qs.test)} distinct "
        f"demo.queries shopper queries, clicks/add-to-carts/purchases drawn from the products each query's intent "
        f"matches (seed {seed}); not real shoppers",
    }
    return searches, events, facts


def hm_log(
    articles_path: str,
    transactions_path: str,
    purchases: int | None = None,
    seed: int = 0,
    subset_path: str | None = None,
    extra_articles: int = 0,
) -> tuple[list[LoggedQuery], list[UbiEvent], dict]:
    """The H&M reproduction's log: the real purchases of the competition's last week (`demo.hm_log`), each a
    logged search whose query is generated from the purchased article's attributes (`demo.hm_queries`), and a
    purchase event.

    Args:
        articles_path, transactions_path: the Kaggle files (read from the user's paths, never bundled).
        purchases: use a seeded sample of this many purchases (file order kept); None = all (240,311).
        seed: sampling and query-writing seed.
        subset_path: when given, write the purchased articles (plus the first `extra_articles` others of the file)
            as a JSONL catalog there, for indexing a slice (`run_index("hm", hm_path=subset_path)`).
    Returns:
        (searches, events, facts for the report).
    Raises:
        FileNotFoundError: a file is missing.
    """
    import json

    from demo.hm_log import purchases_to_ubi, read_transactions
    from demo.hm_queries import HM_COLUMNS, read_hm_articles

    tr = read_transactions(transactions_path)
    bought = tr.purchases
    if purchases is not None and purchases < len(bought):
        keep = sorted(random.Random(seed).sample(range(len(bought)), purchases))
        bought = [bought[i] for i in keep]
    ids = {p.article_id for p in bought}
    columns = tuple(dict.fromkeys((*HM_COLUMNS, "detail_desc")))
    articles = read_hm_articles(articles_path, columns=columns, ids=ids)
    log = purchases_to_ubi(bought, articles, seed=seed)
    if subset_path is not None:
        rows = dict(articles)
        if extra_articles:
            for aid, rec in read_hm_articles(articles_path, columns=columns).items():
                if len(rows) >= len(articles) + extra_articles:
                    break
                rows.setdefault(aid, rec)
        with open(subset_path, "w", encoding="utf-8") as fh:
            for rec in rows.values():
                fh.write(json.dumps(rec) + "\n")
    facts = {
        "log": f"H&M: {len(bought)} real purchases of 2020-09-16..22 (of {tr.read} rows read, {len(tr.skipped)} bad), "
        f"one search per purchase with a query generated from the purchased article's attributes (demo.hm_queries, "
        f"seed {seed}), one purchase event each",
        "hm_log_counts": dict(log.counts),
    }
    return log.searches, log.events, facts
