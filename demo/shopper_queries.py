"""The demo's second held-out set: shopper queries written by hand, read from a TSV file.

The demo's first held-out set comes from the same generator as its training traffic (`demo.queries`), so it
shares that generator's vocabulary. This set does not: `demo/data/shopper_queries.tsv` holds queries written by
hand the way shoppers type (occasions and activities, gift phrasing, British and American names, beauty and
personal-care words, brands, slang; docs/shopper-queries.md). The demo searches them once the trained model
serves, grades their candidates with the same judge and reports them beside the generated set.

File format (UTF-8, tab-separated): an optional header line `query<TAB>kind`, then one query per line with its
kind (one of KINDS); lines starting with `#` and blank lines are skipped. A bad line (no tab, empty query, an
unknown kind, a repeated query) is reported with its line number and skipped; it never stops the demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: the bundled file
DEFAULT_PATH = Path(__file__).with_name("data") / "shopper_queries.tsv"

#: the kinds of shopper wording the file covers (the issue's list), in report order
KINDS: tuple[str, ...] = ("occasion", "activity", "gift", "uk_us", "beauty", "brand", "slang")


@dataclass(frozen=True)
class HandQuery:
    """One hand-written query and the kind of wording it tests (KINDS)."""

    text: str
    kind: str


@dataclass
class HandQueries:
    """The queries read from `path`, and the lines skipped with the reason ("line N: why")."""

    path: Path
    queries: list[HandQuery] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def texts(self) -> list[str]:
        """The query strings, in file order."""
        return [q.text for q in self.queries]

    def kind_of(self) -> dict[str, str]:
        """{query text: kind}."""
        return {q.text: q.kind for q in self.queries}


def read_hand_queries(path: str | Path = DEFAULT_PATH) -> HandQueries:
    """Read a hand-written query file (format in the module docstring).

    Returns HandQueries; bad lines are in `.skipped`, never raised.
    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is a folder, or no line holds a valid query.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p} is a folder; pass the hand-written query file (query<TAB>kind per line)")
    out = HandQueries(path=p)
    seen: set[str] = set()
    for n, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#") or line.lower().replace(" ", "") == "query\tkind":
            continue
        if "\t" not in line:
            out.skipped.append(f"line {n}: no tab between query and kind")
            continue
        text, kind = (s.strip() for s in line.split("\t", 1))
        text = " ".join(text.split())
        if not text:
            out.skipped.append(f"line {n}: empty query")
        elif kind not in KINDS:
            out.skipped.append(f"line {n}: kind {kind!r} is not one of {', '.join(KINDS)}")
        elif text.lower() in seen:
            out.skipped.append(f"line {n}: {text!r} repeats an earlier query")
        else:
            seen.add(text.lower())
            out.queries.append(HandQuery(text, kind))
    if not out.queries:
        raise ValueError(f"{p} holds no valid query ({len(out.skipped)} bad lines; first: {out.skipped[:1]})")
    return out
