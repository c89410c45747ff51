"""The partial-index gate: may a freshly built index go live behind the alias?

A full build moves the alias only when the new index is whole. Two rules, each a setting
(`IndexSettings`, environment `FR_INDEX_*`), both checked after the refresh, against the index itself:

1. Failed share (`max_failed_share`, default 0.005 = 0.5%). A row "failed" when it was read from the
   catalog but is not a document of the new index: rejected by the reader (missing id, empty title,
   malformed line), by the vector check (zero, NaN, wrong dimension) or by OpenSearch (a per-item bulk
   error: mapping error, an "immense term", a 429 left after the retries). Duplicate-id rows do not
   count: their product is in the index (the first row wins). The share is failed / (rows read -
   duplicate rows); above the setting the build is refused. 0.5% of the bundled Myntra catalog is 222
   rows; a healthy build of it fails none. Also refused: an index whose document count differs from
   the number of items OpenSearch acknowledged (documents lost between bulk and refresh).
2. Count drop (`min_count_ratio`, default 0.8). The new index must hold at least this fraction of
   the documents of the index it replaces. Why: the failed-share rule only sees rows that reached the
   reader. A catalog export cut short (a half-written file, a failed upstream job, the wrong file, an
   upstream filter gone wrong) reads cleanly with zero failed rows and would silently drop a large
   part of the shop from search. A shop's catalog moves by a few percent a day, so a drop of more than
   20% in one rebuild is a fault far more often than a decision; an operator who means it passes
   `--allow-partial` once (or sets the ratio to 0). With `--limit N` the reference is
   min(previous count, N), so a deliberate slice is not mistaken for a loss.

A refused full build keeps the alias where it was and keeps the new index for inspection (its
`_meta.fashion_rerank` says `complete: false` and why it was refused; retention deletes it after the
next successful build), and `run_index` raises `PartialIndexError` carrying the summary. In
`--incremental` mode the writes already happened in place: above the failed share the run raises
`PartialIndexError` after the refresh, and products whose new row was rejected but whose old document
is still served are listed as stale (`IndexSummary.stale`). `allow_partial=True` (`--allow-partial`)
turns every refusal into a note.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from fashion_rerank.settings import IndexSettings
from indexer.catalogs import Skipped
from indexer.index import IndexLifecycleError


class PartialIndexError(IndexLifecycleError):
    """A build was not allowed to go live (or an in-place update failed too much).

    Attributes:
        summary: the run's `IndexSummary` (counts, every failed row with its reason, `refused` reasons).
        reasons: the gate's reasons, one sentence each (also the message).
    """

    def __init__(self, reasons: list[str], summary: Any):
        self.reasons = list(reasons)
        self.summary = summary
        super().__init__("; ".join(self.reasons))


def is_duplicate(s: Skipped) -> bool:
    """Whether a skip is a duplicate-id row (its product is indexed from an earlier row)."""
    return s.reason.startswith("duplicate id")


def failed_rows(skipped: Iterable[Skipped]) -> list[Skipped]:
    """The skips that mean a product is missing from the index (all but duplicate-id rows)."""
    return [s for s in skipped if not is_duplicate(s)]


def reason_kind(reason: str) -> str:
    """Group key of a skip reason: "duplicate id 123" -> "duplicate id", "bulk 400 x: detail" -> "bulk 400 x"."""
    if reason.startswith("duplicate id"):
        return "duplicate id"
    return reason.split(":", 1)[0].strip()


def failure_digest(failed: Iterable[Skipped], max_ids: int = 5) -> str:
    """One line per reason kind, most frequent first: `3 x bulk 400 illegal_argument_exception (ids a, b, c)`.

    Rows the reader rejected are named by their 1-based row number, the others by product id; at most
    `max_ids` are named per kind ("... and N more").
    """
    groups: dict[str, list[int | str]] = defaultdict(list)
    for s in failed:
        groups[reason_kind(s.reason)].append(s.row)
    parts = []
    for kind, rows in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        label = "rows" if all(isinstance(r, int) for r in rows) else "ids"
        named = ", ".join(map(str, rows[:max_ids])) + (f" and {len(rows) - max_ids} more" if len(rows) > max_ids else "")
        parts.append(f"{len(rows)} x {kind} ({label} {named})")
    return "; ".join(parts)


def failed_share(read: int, skipped: list[Skipped]) -> float:
    """failed rows / (rows read - duplicate rows); 0.0 when nothing countable was read."""
    duplicates = sum(is_duplicate(s) for s in skipped)
    base = read - duplicates
    return len(failed_rows(skipped)) / base if base > 0 else 0.0


def share_problem(read: int, skipped: list[Skipped], settings: IndexSettings) -> str | None:
    """The failed-share refusal sentence, or None when the share is within `settings.max_failed_share`."""
    share = failed_share(read, skipped)
    if share <= settings.max_failed_share:
        return None
    failed = failed_rows(skipped)
    base = read - (len(skipped) - len(failed))
    return (
        f"{len(failed)} of {base} catalog rows failed ({share:.2%}, above the {settings.max_failed_share:.2%} "
        f"allowed by FR_INDEX_MAX_FAILED_SHARE): {failure_digest(failed)}"
    )


def count_problems(
    *,
    indexed: int,
    new_count: int,
    previous_index: str | None,
    previous_count: int | None,
    limit: int | None,
    settings: IndexSettings,
) -> list[str]:
    """Refusal sentences about the new index's document count (see the module doc, rule 2), [] when fine.

    Args:
        indexed: items OpenSearch acknowledged; new_count: `_count` of the new index after its refresh.
        previous_index / previous_count: the index behind the alias now and its `_count` (None: none).
        limit: the run's `--limit` (the reference becomes min(previous_count, limit)).
    """
    out = []
    if new_count != indexed:
        out.append(f"the new index holds {new_count} documents but OpenSearch acknowledged {indexed}")
    if previous_index and previous_count:
        reference = min(previous_count, limit) if limit else previous_count
        if new_count < settings.min_count_ratio * reference:
            out.append(
                f"the new index holds {new_count} documents, fewer than {settings.min_count_ratio:.0%} of the "
                f"{reference} in {previous_index} (FR_INDEX_MIN_COUNT_RATIO); a truncated or wrong catalog file?"
            )
    return out
