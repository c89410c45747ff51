"""The judgments store: append-only JSONL of graded (query, product) pairs, plus the candidate pools.

Files (default `judgments/`):
    judgments.jsonl        one judgment per line (`Judgment`)
    judgments.pools.jsonl  one candidate pool per (run, query) (`Pool`): what was retrieved and must be graded

A judgment is keyed by (query, product id, product-text hash, judge model, prompt version): a changed
product text, another judge or another prompt wording is a different judgment; the same key is never
graded twice. Lines are written whole — one `os.write` of complete lines on an O_APPEND descriptor, then
`fsync`, under an exclusive `flock` — so a failed write leaves no partial line:

- *Disk full / file too large* (ENOSPC, EFBIG, EDQUOT, any OSError of the write or fsync): the file is cut back
  to its size before the write (`ftruncate`) and `StoreWriteError` is raised naming the path and the errno;
  nothing of that call is kept on disk or in memory, and every earlier record stays readable. The grader
  stops at once on it (no further paid calls whose answers could not be stored).
- *SIGKILL*: a kill between two syscalls leaves whole lines only. Linux can still cut one write short when
  the fatal signal lands *inside* it at a page boundary (`generic_perform_write`), and a power cut can lose
  the tail: the reader skips a last line without its newline (`LoadReport.truncated_last_line`), and the
  next writer *repairs* the file before its first append — the torn tail is moved to `<file>.torn` and the
  file cut back to its last complete line — so the store holds 0 malformed lines again. The pair of a torn
  line counts as not graded and is asked again on resume: at most one repeated paid call per tear (its
  answer is not recoverable from a fragment; see docs/reliability.md).

Any other line that is not a valid record is skipped on load and counted in `LoadReport`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

#: (query, product_id, text_hash, judge_model, prompt_version)
JudgmentKey = tuple[str, str, str, str, str]


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Judgment:
    """One graded (query, product) pair.

    `grade` is 0-3, or None for an *unlabeled* pair whose reply had no valid grade; `unlabeled` then names
    why (see `labeling.prompts.parse_reply`) and `raw` keeps the start of the reply. `query` is the
    normalised query (the unit of sampling and splitting). `text` is `rerank_text(product)` as shown to the
    judge. Token counts and `cost_usd` come from the judge's `usage` and the configured prices; a judgment
    copied from an identical (query, product text) pair has `reused_from` set and costs 0.
    """

    query: str
    product_id: str
    text_hash: str
    judge_model: str
    prompt_version: str
    grade: int | None
    reason: str = ""
    unlabeled: str | None = None
    split: str = ""
    catalog: str = ""
    run_id: str = ""
    text: str = ""
    raw: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    reused_from: str | None = None
    timestamp: str = field(default_factory=utc_now)

    @property
    def key(self) -> JudgmentKey:
        return (self.query, self.product_id, self.text_hash, self.judge_model, self.prompt_version)

    @property
    def labeled(self) -> bool:
        return self.grade is not None


@dataclass
class Candidate:
    """One product of a candidate pool: id, its `rerank_text`, the text hash, and its kNN rank/score
    (1-based; None for a random extra that retrieval did not return)."""

    product_id: str
    text: str
    text_hash: str
    knn_rank: int | None = None
    knn_score: float | None = None


@dataclass
class Pool:
    """The candidates of one query in one labeling run, fixed before any grading so a resumed run grades
    exactly the same pairs."""

    run_id: str
    query: str
    split: str
    catalog: str
    judge_model: str
    prompt_version: str
    candidates: list[Candidate]
    raw_query: str = ""
    count: int = 0
    created: str = field(default_factory=utc_now)

    def knn_candidates(self) -> list[Candidate]:
        """Candidates retrieval returned, best first (what the reranker faces in serving)."""
        return sorted((c for c in self.candidates if c.knn_rank is not None), key=lambda c: c.knn_rank)


@dataclass
class LoadReport:
    """What loading a JSONL file found: valid records, lines skipped as invalid, and whether the last line
    was truncated (no newline)."""

    records: int = 0
    invalid_lines: int = 0
    truncated_last_line: bool = False
    duplicates: int = 0


class StoreWriteError(OSError):
    """Records could not be written to a store file (disk full, file too large, I/O error).

    The file was cut back to its size before the write, so it holds no partial line and every earlier record
    stays readable; `errno` is the underlying one (e.g. ENOSPC, EFBIG). Nothing of the failed call is kept.
    """

    def __init__(self, path: Path, n_records: int, cause: OSError):
        self.path = path
        self.n_records = n_records
        what = errno.errorcode.get(cause.errno or 0, "I/O error")
        super().__init__(
            cause.errno,
            f"cannot write {n_records} record(s) to {path}: {cause.strerror or cause} ({what}); the store is unchanged "
            "and readable — free space (or raise the limit) and re-run: the job resumes where it stopped",
        )

    def __str__(self) -> str:
        return self.strerror or super().__str__()  # the message alone, without "[Errno 28]"


class _AppendOnlyJsonl:
    """Whole-line appends to a JSONL file (O_APPEND, one write per call, fsync), safe across threads and, with
    `flock`, across processes. A failed write is undone (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.repaired_bytes = 0  # bytes of a torn tail moved to `<file>.torn` when this writer opened the file

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def _repair_torn_tail(self, fd: int) -> None:
        """Cut a last line without its newline (a torn write) off the file, keeping its bytes in `<file>.torn`.

        Called under the flock before every append, so a tear left by another (killed) writer is repaired too.
        """
        size = os.fstat(fd).st_size
        if not size:
            return
        with open(self.path, "rb") as fh:
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            # find the start of the torn line: the byte after the last newline
            pos, chunk = size, 65536
            start = 0
            while pos > 0:
                lo = max(0, pos - chunk)
                fh.seek(lo)
                block = fh.read(pos - lo)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    start = lo + nl + 1
                    break
                pos = lo
            fh.seek(start)
            torn = fh.read(size - start)
        with open(self.path.with_name(self.path.name + ".torn"), "ab") as side:
            side.write(torn + b"\n")
            side.flush()
            os.fsync(side.fileno())
        os.ftruncate(fd, start)
        os.fsync(fd)
        self.repaired_bytes += len(torn)

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Append `records` as whole lines; returns the bytes written.

        Raises:
            StoreWriteError: the write or fsync failed (ENOSPC, EFBIG, ...); the file is back to its old size.
        """
        records = list(records)
        data = b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in records)
        if not data:
            return 0
        with self._lock:
            try:
                fd = self._open()
            except OSError as exc:
                raise StoreWriteError(self.path, len(records), exc) from exc
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                try:
                    self._repair_torn_tail(fd)
                except OSError as exc:
                    raise StoreWriteError(self.path, len(records), exc) from exc
                before = os.fstat(fd).st_size
                try:
                    written = 0
                    while written < len(data):  # a short write (disk filling up) continues, then fails
                        written += os.write(fd, data[written:])
                    os.fsync(fd)
                except OSError as exc:
                    try:
                        os.ftruncate(fd, before)  # no partial line stays behind
                        os.fsync(fd)
                    except OSError:
                        pass  # the reader still skips a torn tail, and the next append repairs it
                    raise StoreWriteError(self.path, len(records), exc) from exc
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return len(data)

    def read(self, report: LoadReport) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            blob = fh.read()
        lines = blob.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines:
            report.truncated_last_line = True
            lines.pop()
            report.invalid_lines += 1
        for line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                report.invalid_lines += 1
                continue
            if not isinstance(obj, dict):
                report.invalid_lines += 1
                continue
            yield obj

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class JudgmentStore:
    """Judgments and candidate pools on disk, loaded into memory for lookups.

    Args:
        path: the judgments JSONL (pools go to `<stem>.pools.jsonl` beside it).

    Loading happens in the constructor (and again with `reload()`); `append` writes through to disk at
    once and updates the in-memory index. The first judgment of a key wins if a file holds duplicates.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.pools_path = self.path.with_name(self.path.stem + ".pools.jsonl")
        self._jfile = _AppendOnlyJsonl(self.path)
        self._pfile = _AppendOnlyJsonl(self.pools_path)
        self.reload()

    # -- loading
    def reload(self) -> None:
        """Read both files again (skipping invalid/truncated lines, see `load_report`)."""
        self.load_report = LoadReport()
        self.pools_report = LoadReport()
        self._judgments: dict[JudgmentKey, Judgment] = {}
        self._by_text: dict[tuple[str, str, str, str], Judgment] = {}
        fields = set(Judgment.__dataclass_fields__)
        for obj in self._jfile.read(self.load_report):
            try:
                j = Judgment(**{k: v for k, v in obj.items() if k in fields})
            except TypeError:
                self.load_report.invalid_lines += 1
                continue
            self._index(j, count=True)
        self._pools: list[Pool] = []
        for obj in self._pfile.read(self.pools_report):
            try:
                cands = [Candidate(**c) for c in obj.pop("candidates")]
                self._pools.append(Pool(candidates=cands, **{k: v for k, v in obj.items() if k in Pool.__dataclass_fields__}))
                self.pools_report.records += 1
            except (TypeError, KeyError, AttributeError):
                self.pools_report.invalid_lines += 1

    def _index(self, j: Judgment, count: bool = False) -> None:
        if j.key in self._judgments:
            self.load_report.duplicates += 1
            return
        self._judgments[j.key] = j
        self._by_text.setdefault((j.query, j.text_hash, j.judge_model, j.prompt_version), j)
        if count:
            self.load_report.records += 1

    # -- judgments
    def __len__(self) -> int:
        return len(self._judgments)

    def __contains__(self, key: JudgmentKey) -> bool:
        return key in self._judgments

    def get(self, key: JudgmentKey) -> Judgment | None:
        """The judgment stored under `key`, or None."""
        return self._judgments.get(key)

    def same_text(self, query: str, text_hash: str, judge_model: str, prompt_version: str) -> Judgment | None:
        """A judgment of the same query and the same product text (any product id) by the same judge/prompt."""
        return self._by_text.get((query, text_hash, judge_model, prompt_version))

    def append(self, judgments: Judgment | Iterable[Judgment]) -> int:
        """Write judgments (whole lines, fsync) and index them; keys already stored are skipped.

        Returns the number written. Raises StoreWriteError (disk full, ...): then none of them is written or
        indexed, so they still count as missing.
        """
        items = [judgments] if isinstance(judgments, Judgment) else list(judgments)
        new, keys = [], set()
        for j in items:
            if j.key not in self._judgments and j.key not in keys:
                new.append(j)
                keys.add(j.key)
        self._jfile.append(asdict(j) for j in new)  # StoreWriteError: nothing indexed, nothing on disk
        for j in new:
            self._index(j)
        return len(new)

    def judgments(
        self,
        judge_model: str | None = None,
        prompt_version: str | None = None,
        split: str | None = None,
        labeled_only: bool = False,
    ) -> list[Judgment]:
        """Stored judgments, filtered; in file order."""
        return [
            j
            for j in self._judgments.values()
            if (judge_model is None or j.judge_model == judge_model)
            and (prompt_version is None or j.prompt_version == prompt_version)
            and (split is None or j.split == split)
            and (not labeled_only or j.labeled)
        ]

    # -- pools
    def append_pools(self, pools: Iterable[Pool]) -> None:
        """Write candidate pools (whole lines, fsync) before their pairs are graded.

        Raises StoreWriteError (disk full, ...): then none of them is written or kept.
        """
        pools = list(pools)
        self._pfile.append(asdict(p) for p in pools)
        self._pools.extend(pools)

    def pools(self, judge_model: str | None = None, prompt_version: str | None = None, catalog: str | None = None) -> list[Pool]:
        """Stored pools, filtered; in file order."""
        return [
            p
            for p in self._pools
            if (judge_model is None or p.judge_model == judge_model)
            and (prompt_version is None or p.prompt_version == prompt_version)
            and (catalog is None or p.catalog == catalog)
        ]

    def missing(self, pool: Pool) -> list[Candidate]:
        """Candidates of `pool` without a judgment by the pool's judge and prompt version."""
        return [
            c
            for c in pool.candidates
            if (pool.query, c.product_id, c.text_hash, pool.judge_model, pool.prompt_version) not in self._judgments
        ]

    def judged_queries(self, catalog: str, judge_model: str, prompt_version: str) -> set[str]:
        """Queries that already have a pool for this catalog, judge and prompt (graded or being graded)."""
        return {p.query for p in self.pools(judge_model, prompt_version, catalog)}

    # -- summaries
    def stats(self) -> dict[str, Any]:
        """Grade distribution per judge (model + prompt version) and split, and unlabeled counts by reason."""
        out: dict[str, Any] = {}
        for j in self._judgments.values():
            judge = f"{j.judge_model} / {j.prompt_version}"
            d = out.setdefault(judge, {})
            s = d.setdefault(
                j.split or "?", {"pairs": 0, "queries": set(), "grades": Counter(), "unlabeled": Counter(), "cost_usd": 0.0}
            )
            s["pairs"] += 1
            s["queries"].add(j.query)
            s["cost_usd"] += j.cost_usd
            if j.labeled:
                s["grades"][str(j.grade)] += 1
            else:
                s["unlabeled"][j.unlabeled or "unknown"] += 1
        for d in out.values():
            for s in d.values():
                s["queries"] = len(s["queries"])
                s["grades"] = {g: s["grades"].get(g, 0) for g in ("0", "1", "2", "3")}
                s["unlabeled"] = dict(s["unlabeled"])
                s["cost_usd"] = round(s["cost_usd"], 6)
        return out

    def close(self) -> None:
        self._jfile.close()
        self._pfile.close()


def to_srw(judgments: Iterable[Judgment], name: str, description: str = "") -> dict[str, Any]:
    """Judgments as an OpenSearch Search Relevance Workbench import body.

    Shape (`PUT _plugins/_search_relevance/judgments`, type IMPORT_JUDGMENT):
    {"name", "description", "type": "IMPORT_JUDGMENT",
     "judgmentRatings": [{"query": q, "ratings": [{"docId": id, "rating": "3.000"}, ...]}, ...]}
    Unlabeled judgments are left out (SRW ratings are numbers).
    """
    by_query: dict[str, list[dict[str, str]]] = defaultdict(list)
    for j in judgments:
        if j.labeled:
            by_query[j.query].append({"docId": j.product_id, "rating": f"{float(j.grade):.3f}"})
    return {
        "name": name,
        "description": description,
        "type": "IMPORT_JUDGMENT",
        "judgmentRatings": [{"query": q, "ratings": r} for q, r in by_query.items()],
    }
