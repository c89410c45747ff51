"""Which logged queries to judge: normalise and count, sample by frequency with a tail share, and split.

- Normalisation: Unicode NFKC, lowercase, whitespace collapsed, surrounding punctuation stripped. The
  normalised query is the unit of counting, sampling, splitting and judging.
- Sampling: the *head* is the most frequent queries that together cover `head_traffic_share` of the
  traffic; the rest is the *tail*. `tail_share` of the sample is drawn uniformly from the tail (rare
  queries matter and frequency weighting alone would never pick them), the remainder by frequency
  (weighted sampling without replacement, Efraimidis & Spirakis 2006: keys u^(1/w)). Queries already
  judged for the current catalog are excluded before sampling. Seeded: same log, same seed, same sample.
- Split: train / dev / test by a hash of the normalised query (sha1 of salt + query), so a query's split
  never changes between runs, judges or catalogs, and no query is in two splits.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Literal

import numpy as np

Split = Literal["train", "dev", "test"]

_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)


def normalise_query(text: str) -> str:
    """`"  Navy  TEE for Men! "` -> `"navy tee for men"`. Returns "" for text with no word characters."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = " ".join(t.split())
    return _EDGE_PUNCT.sub("", t)


def count_queries(queries: Iterable[str]) -> tuple[Counter[str], dict[str, str]]:
    """Count normalised queries; also return one raw spelling per normalised query (the most frequent).

    Empty queries (after normalisation) are dropped.
    """
    counts: Counter[str] = Counter()
    spellings: dict[str, Counter[str]] = {}
    for q in queries:
        n = normalise_query(q)
        if not n:
            continue
        counts[n] += 1
        spellings.setdefault(n, Counter())[q.strip()] += 1
    return counts, {n: c.most_common(1)[0][0] for n, c in spellings.items()}


def assign_split(query: str, dev_fraction: float = 0.15, test_fraction: float = 0.15, salt: str = "fr-split-v1") -> Split:
    """The fixed split of a normalised query: a uniform number from sha1(salt + query) against the fractions."""
    h = int.from_bytes(hashlib.sha1((salt + "\x1f" + query).encode("utf-8")).digest()[:8], "big") / 2**64
    if h < test_fraction:
        return "test"
    if h < test_fraction + dev_fraction:
        return "dev"
    return "train"


@dataclass(frozen=True)
class SampledQuery:
    """A query chosen for judging: normalised text, a raw spelling, its log count, head/tail stratum and split."""

    query: str
    raw: str
    count: int
    stratum: Literal["head", "tail"]
    split: Split


def head_tail(counts: Counter[str], head_traffic_share: float = 0.5) -> tuple[list[str], list[str]]:
    """Split queries into head (most frequent, covering `head_traffic_share` of all traffic) and tail.

    Ties are broken by the query text so the split is deterministic.
    """
    ordered = sorted(counts, key=lambda q: (-counts[q], q))
    total = sum(counts.values())
    head, covered = [], 0
    for q in ordered:
        if covered >= head_traffic_share * total:
            break
        head.append(q)
        covered += counts[q]
    return head, ordered[len(head) :]


def sample_queries(
    counts: Counter[str],
    n: int,
    *,
    tail_share: float = 0.3,
    head_traffic_share: float = 0.5,
    exclude: set[str] | frozenset[str] = frozenset(),
    seed: int = 42,
    spellings: dict[str, str] | None = None,
    dev_fraction: float = 0.15,
    test_fraction: float = 0.15,
    salt: str = "fr-split-v1",
) -> list[SampledQuery]:
    """Choose up to `n` queries to judge (fewer when the log has fewer unjudged ones).

    Args:
        counts: normalised query -> frequency (`count_queries`).
        n: how many to choose.
        tail_share: fraction of `n` drawn uniformly from tail queries (when the tail has that many).
        head_traffic_share: defines the head (see `head_tail`); computed before `exclude` is applied.
        exclude: normalised queries already judged for the current catalog.
        seed: random seed.
    Returns:
        SampledQuery list: tail picks first, then frequency-weighted picks, each group by descending count.
    """
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    head, tail = head_tail(counts, head_traffic_share)
    tail_pool = [q for q in tail if q not in exclude]
    n_tail = min(len(tail_pool), int(round(n * tail_share)))
    tail_pick = [tail_pool[i] for i in rng.choice(len(tail_pool), size=n_tail, replace=False)] if n_tail else []
    taken = set(tail_pick)
    rest = [q for q in sorted(counts, key=lambda q: (-counts[q], q)) if q not in exclude and q not in taken]
    n_rest = min(len(rest), n - n_tail)
    weighted: list[str] = []
    if n_rest:
        w = np.array([counts[q] for q in rest], dtype=np.float64)
        keys = rng.random(len(rest)) ** (1.0 / w)
        weighted = [rest[i] for i in np.argsort(-keys, kind="stable")[:n_rest]]
    head_set = set(head)
    out = []
    for group in (sorted(tail_pick, key=lambda q: (-counts[q], q)), sorted(weighted, key=lambda q: (-counts[q], q))):
        for q in group:
            out.append(
                SampledQuery(
                    query=q,
                    raw=(spellings or {}).get(q, q),
                    count=counts[q],
                    stratum="head" if q in head_set else "tail",
                    split=assign_split(q, dev_fraction, test_fraction, salt),
                )
            )
    return out
