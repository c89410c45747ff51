"""One labeling run: sample logged queries, fix their candidate pools, grade every missing pair.

A run is resumable and exact. Pools are written to the store *before* grading starts, so a run that was
killed, stopped at its budget or left pairs ungraded (rate limits, timeouts) is finished by the next run:
when the store holds pools for the current catalog, judge and prompt version with pairs still missing,
the next run grades exactly those pairs and samples nothing new ("resume"). Only a run with nothing left
to finish samples new queries (skipping every query already pooled for this catalog).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fashion_rerank.settings import LabelSettings, OpenSearchSettings
from labeling import prompts
from labeling.candidates import build_pool, catalog_id
from labeling.grading import Grader, GradingSummary, PairRequest
from labeling.querylog_reader import is_file_source, read_query_log
from labeling.sampling import count_queries, sample_queries
from labeling.store import JudgmentStore, Pool


@dataclass
class LabelRun:
    """What one labeling run did: the catalog, whether it resumed earlier pools, what was sampled, grading."""

    run_id: str
    catalog: str
    resumed: bool
    pools: list[Pool]
    log_records: int = 0
    log_skipped: int = 0
    distinct_queries: int = 0
    sampled: int = 0
    by_stratum: dict[str, int] = field(default_factory=dict)
    by_split: dict[str, int] = field(default_factory=dict)
    pairs_missing: int = 0
    grading: GradingSummary | None = None

    @property
    def budget_stopped(self) -> bool:
        return bool(self.grading and self.grading.budget_stopped)

    @property
    def complete(self) -> bool:
        """True when every pair of this run's pools has a judgment."""
        return self.grading is not None and not self.grading.not_graded

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "catalog": self.catalog,
            "resumed": self.resumed,
            "pools": len(self.pools),
            "log_records": self.log_records,
            "log_skipped": self.log_skipped,
            "distinct_queries": self.distinct_queries,
            "sampled": self.sampled,
            "by_stratum": self.by_stratum,
            "by_split": self.by_split,
            "pairs_missing": self.pairs_missing,
            "grading": self.grading.to_dict() if self.grading else None,
        }

    def lines(self) -> list[str]:
        head = f"run {self.run_id} on catalog {self.catalog}: " + (
            f"resumed {len(self.pools)} unfinished pools"
            if self.resumed
            else f"{self.log_records} logged queries ({self.distinct_queries} distinct, {self.log_skipped} skipped), "
            f"sampled {self.sampled} {self.by_stratum} -> splits {self.by_split}"
        )
        out = [head, f"pairs to grade: {self.pairs_missing}"]
        if self.grading:
            out += self.grading.lines()
        return out


def new_run_id() -> str:
    """A sortable run id: UTC timestamp plus 6 random hex digits."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def unfinished_pools(store: JudgmentStore, catalog: str, judge_model: str) -> list[Pool]:
    """Pools for this catalog, judge and prompt version that still miss judgments."""
    return [p for p in store.pools(judge_model, prompts.PROMPT_VERSION, catalog) if store.missing(p)]


def plan_pools(
    settings: LabelSettings,
    store: JudgmentStore,
    client,
    encoder,
    alias: str,
    catalog: str,
    run_id: str,
    log_source: str,
    n: int,
    run: LabelRun,
) -> list[Pool]:
    """Sample up to `n` new queries from the log and retrieve their candidate pools (not yet stored)."""
    read = read_query_log(log_source, client=None if is_file_source(log_source) else client)
    counts, spellings = count_queries(r.user_query for r in read.records)
    run.log_records, run.log_skipped, run.distinct_queries = read.read, len(read.skipped), len(counts)
    exclude = store.judged_queries(catalog, settings.judge_model, prompts.PROMPT_VERSION)
    sampled = sample_queries(
        counts,
        n,
        tail_share=settings.tail_share,
        head_traffic_share=settings.head_traffic_share,
        exclude=exclude,
        seed=settings.sample_seed,
        spellings=spellings,
        dev_fraction=settings.dev_fraction,
        test_fraction=settings.test_fraction,
        salt=settings.split_salt,
    )
    run.sampled = len(sampled)
    pools = []
    for sq in sampled:
        run.by_stratum[sq.stratum] = run.by_stratum.get(sq.stratum, 0) + 1
        run.by_split[sq.split] = run.by_split.get(sq.split, 0) + 1
        cands = build_pool(
            client,
            alias,
            encoder,
            sq.query,
            settings.top_k,
            settings.random_extras,
            deep_extras=settings.deep_extras,
            deep_depth=settings.deep_depth,
        )
        pools.append(
            Pool(
                run_id=run_id,
                query=sq.query,
                split=sq.split,
                catalog=catalog,
                judge_model=settings.judge_model,
                prompt_version=prompts.PROMPT_VERSION,
                candidates=cands,
                raw_query=sq.raw,
                count=sq.count,
            )
        )
    return pools


def pair_requests(store: JudgmentStore, pools: list[Pool]) -> list[PairRequest]:
    """The pairs of `pools` that have no judgment yet."""
    return [
        PairRequest(p.query, c.product_id, c.text, c.text_hash, p.split, p.catalog, p.run_id)
        for p in pools
        for c in store.missing(p)
    ]


def run_labeling(
    settings: LabelSettings | None = None,
    *,
    store: JudgmentStore | None = None,
    client=None,
    encoder=None,
    alias: str | None = None,
    log_source: str | None = None,
    n_queries: int | None = None,
    judge_client=None,
    progress: bool = False,
) -> LabelRun:
    """Resume unfinished pools, or sample new queries and grade their pools. Returns the run record.

    Args:
        settings: LabelSettings (default from the environment).
        store: judgments store (default `settings.judgments_path`).
        client: opensearch-py client (default `make_client()`); encoder: bi-encoder (default `load_bi_encoder()`).
        alias: products alias (default `OPENSEARCH_INDEX_ALIAS`); log_source: query log (default `settings.query_log`).
        n_queries: new queries to sample (default `settings.queries_per_run`).
        judge_client: an `openai.AsyncOpenAI` to use instead of one built from settings.
    Raises:
        labeling.grading.JudgeConfigError: the judge is unreachable or refuses the configuration.
        FileNotFoundError: the query log file does not exist. opensearchpy errors propagate.
    """

    settings = settings or LabelSettings()
    store = store if store is not None else JudgmentStore(settings.judgments_path)
    if client is None:
        from fashion_rerank.opensearch import make_client

        client = make_client()
    alias = alias or OpenSearchSettings().index_alias
    catalog = catalog_id(client, alias)
    pending = unfinished_pools(store, catalog, settings.judge_model)
    if pending:
        run = LabelRun(run_id=pending[0].run_id, catalog=catalog, resumed=True, pools=pending)
    else:
        if encoder is None:
            from fashion_rerank.embedding import load_bi_encoder

            encoder = load_bi_encoder()
        run = LabelRun(run_id=new_run_id(), catalog=catalog, resumed=False, pools=[])
        run.pools = plan_pools(
            settings,
            store,
            client,
            encoder,
            alias,
            catalog,
            run.run_id,
            log_source or settings.query_log,
            n_queries or settings.queries_per_run,
            run,
        )
        store.append_pools(run.pools)
    requests = pair_requests(store, run.pools)
    run.pairs_missing = len(requests)
    grader = Grader(settings, store, client=judge_client, progress=progress)
    try:
        run.grading = asyncio.run(grader.grade(requests))
    finally:
        run.grading = grader.summary
    return run
