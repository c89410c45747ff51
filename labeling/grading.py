"""Grade (query, product) pairs with any OpenAI-compatible judge through the `openai` client.

Behaviour (each rule is tested against the reference judge over real HTTP):
- Asynchronous (`AsyncOpenAI`), at most `concurrency` requests in flight, a finite `timeout_s` on every call,
  the client's own retries off (`max_retries=0`) so that retrying is done here, once, visibly.
- 429, 5xx, timeouts and connection errors are retried up to `max_retries` times with full-jitter exponential
  backoff (tenacity `wait_random_exponential`), never sooner than the server's `Retry-After` (capped at
  `backoff_max_s`). A pair still rate-limited after that is *deferred*: graded again after the main pass
  (up to `defer_rounds` passes, `defer_wait_s` apart). Pairs that still fail are left ungraded — not stored —
  so the next run picks them up; they are counted in the summary.
- Structured output first (`response_format` json_schema). The first request is sent alone as a probe; a 400
  that names `response_format` switches the whole run to plain JSON instructions once (the rejected request
  is re-sent once in plain mode). A 400 is never retried in a loop: any other 400 leaves that pair ungraded
  ("request_rejected"); 401/403/404 stop the job (`JudgeConfigError`): they are configuration errors.
- Replies are parsed tolerantly (code fences, text around the object) by `labeling.prompts.parse_reply`; a
  missing, non-integer or out-of-range grade is stored as *unlabeled* with its reason, never coerced.
- Tokens come from each response's `usage`, money from the configured prices; with `budget_usd` set no new
  request starts once spent + (in flight x average cost) reaches the budget, and the job stops cleanly.
- Identical (query, product text) pairs are graded once: other product ids with the same text, in this run
  or already in the store, get a copy marked `reused_from` at no cost.
- Every judgment is appended to the store the moment it arrives (whole line + fsync). When the store cannot
  be written (disk full: `labeling.store.StoreWriteError`) the run stops at once — no new request starts, the
  answers in flight are not stored (counted as `not_graded["store_write_error"]`) — and `grade` raises that
  error; the store keeps every earlier judgment and a re-run resumes.
- A SIGKILL loses only the answers in flight (received or not, not yet stored: at most `concurrency`); each
  stored judgment is never asked for again.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from fashion_rerank.settings import LabelSettings
from labeling import prompts
from labeling.store import Judgment, JudgmentStore, StoreWriteError


class JudgeConfigError(RuntimeError):
    """The judge cannot be used as configured (unreachable, bad key, unknown model, every request rejected)."""


class BudgetExhausted(RuntimeError):
    """Raised by callers that want an exception when a grading run stopped at the budget cap."""


@dataclass(frozen=True)
class PairRequest:
    """One pair to grade: the normalised query, the product id and its `rerank_text`, and bookkeeping."""

    query: str
    product_id: str
    text: str
    text_hash: str
    split: str = ""
    catalog: str = ""
    run_id: str = ""


@dataclass
class GradingSummary:
    """What a grading run did. `pairs_per_s` counts pairs answered by the judge per second of wall time."""

    judge_model: str
    prompt_version: str
    base_url: str | None
    reference_judge: bool
    requested: int = 0
    written: int = 0
    labeled: int = 0
    unlabeled: Counter = field(default_factory=Counter)
    reused: int = 0
    already_stored: int = 0
    not_graded: Counter = field(default_factory=Counter)
    calls: int = 0
    retries: int = 0
    rate_limited_responses: int = 0
    deferred: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    pairs_per_s: float = 0.0
    budget_usd: float | None = None
    budget_stopped: bool = False
    structured_output: bool | None = None
    fallback_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["unlabeled"] = dict(self.unlabeled)
        d["not_graded"] = dict(self.not_graded)
        d["cost_usd"] = round(self.cost_usd, 6)
        return d

    def lines(self) -> list[str]:
        """A human summary, one fact per line."""
        judge = f"{self.judge_model} ({'reference rubric judge, not an LLM' if self.reference_judge else 'LLM judge'})"
        out = [
            f"judge: {judge}, prompt {self.prompt_version}, "
            f"{'structured output' if self.structured_output else 'plain JSON' if self.structured_output is False else 'no calls'}"
            + (f" (fell back: {self.fallback_reason})" if self.fallback_reason else ""),
            f"pairs: {self.requested} requested, {self.written} judgments written ({self.labeled} labeled, "
            f"{sum(self.unlabeled.values())} unlabeled, {self.reused} reused from identical texts), "
            f"{self.already_stored} already stored",
        ]
        if self.unlabeled:
            out.append("unlabeled by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(self.unlabeled.items())))
        if self.not_graded:
            out.append("not graded (left for the next run): " + ", ".join(f"{k} {v}" for k, v in sorted(self.not_graded.items())))
        out.append(
            f"calls: {self.calls} ({self.retries} retries, {self.rate_limited_responses} rate-limited, "
            f"{self.deferred} pairs deferred)"
        )
        budget = f" of budget ${self.budget_usd:.4f}" if self.budget_usd is not None else ""
        out.append(
            f"tokens: {self.tokens_in} in, {self.tokens_out} out; cost ${self.cost_usd:.4f}{budget}"
            + (" — BUDGET REACHED, stopped" if self.budget_stopped else "")
        )
        out.append(f"speed: {self.pairs_per_s:.1f} pairs/s over {self.seconds:.1f} s")
        return out


class _Transient(Exception):
    pass


def _retry_after(exc: BaseException) -> float:
    resp = getattr(exc, "response", None)
    try:
        return max(0.0, float(resp.headers.get("retry-after"))) if resp is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


def _mentions_response_format(exc: BaseException) -> bool:
    text = str(getattr(exc, "message", "")) + " " + str(getattr(exc, "body", "")) + " " + str(exc)
    return "response_format" in text or "json_schema" in text


class Grader:
    """Grades pairs into a `JudgmentStore` (see module docstring for the rules).

    Args:
        settings: judge endpoint, concurrency, timeouts, retries, prices, budget.
        store: where judgments go (and where earlier ones are looked up).
        client: an `openai.AsyncOpenAI`; default: built from `settings` with max_retries=0.
        progress: show a tqdm progress bar on stderr.
    """

    def __init__(self, settings: LabelSettings, store: JudgmentStore, client=None, progress: bool = False):
        self.s = settings
        self.store = store
        self._client = client
        self.progress = progress
        self.structured: bool = True
        self.summary = GradingSummary(
            settings.judge_model,
            prompts.PROMPT_VERSION,
            settings.base_url,
            settings.is_reference_judge(),
            budget_usd=settings.budget_usd,
        )
        self._inflight = 0
        self._answered_by_judge = 0
        self._rejected_in_a_row = 0
        self._fatal: BaseException | None = None
        self._bar = None

    # -- client and a single call
    def _make_client(self):
        from openai import AsyncOpenAI

        key = self.s.api_key.get_secret_value() if self.s.api_key else None
        if not key and not os.environ.get("OPENAI_API_KEY"):
            key = "no-key-set"  # the reference judge ignores it; a real provider answers 401 -> JudgeConfigError
        return AsyncOpenAI(
            base_url=self.s.base_url,
            api_key=key,
            organization=self.s.organization,
            timeout=self.s.timeout_s,
            max_retries=0,
            default_headers=self.s.extra_headers or None,
        )

    def _is_transient(self, exc: BaseException) -> bool:
        import openai

        if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)):
            return True
        return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500

    def _wait(self, state) -> float:

        jitter = wait_random_exponential(multiplier=self.s.backoff_initial_s, max=self.s.backoff_max_s)(state)
        exc = state.outcome.exception() if state.outcome else None
        return min(self.s.backoff_max_s, max(jitter, _retry_after(exc) if exc else 0.0))

    def _before_sleep(self, state) -> None:
        self.summary.retries += 1

    async def _call(self, client, req: PairRequest, structured: bool):
        """One chat completion with transient-error retries. Raises the last error when retries run out."""
        import openai

        kwargs: dict[str, Any] = dict(
            model=self.s.judge_model,
            messages=prompts.build_messages(req.query, req.text, structured=structured),
            temperature=0,
            max_completion_tokens=self.s.max_output_tokens,
        )
        if structured:
            kwargs["response_format"] = prompts.RESPONSE_FORMAT
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.s.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(self._is_transient),
            before_sleep=self._before_sleep,
            reraise=True,
        ):
            with attempt:
                self.summary.calls += 1
                try:
                    return await client.chat.completions.create(**kwargs)
                except openai.RateLimitError:
                    self.summary.rate_limited_responses += 1
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- one group of identical (query, text) pairs
    async def _grade_group(self, client, reqs: list[PairRequest]) -> str:
        """Grade one distinct (query, text); returns "done", "deferred" or "failed" (left for the next run)."""
        import openai

        req = reqs[0]
        self._inflight += 1
        t0 = time.perf_counter()
        structured = self.structured
        try:
            try:
                resp = await self._call(client, req, structured)
            except openai.BadRequestError as exc:
                if not (structured and _mentions_response_format(exc)):
                    raise
                if self.structured:  # the first detection switches the whole run to plain JSON, once
                    self.structured = False
                    self.summary.fallback_reason = f"400 naming response_format: {getattr(exc, 'message', exc)}"[:300]
                resp = await self._call(client, req, False)  # exactly one re-send of this pair, in plain mode
        except openai.BadRequestError as exc:
            self._rejected_in_a_row += 1
            self.summary.not_graded["request_rejected"] += len(reqs)
            if self._rejected_in_a_row >= 10 and self._answered_by_judge == 0:
                self._fatal = JudgeConfigError(f"the judge rejects every request (400): {getattr(exc, 'message', exc)}")
            return "failed"
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
            self._fatal = JudgeConfigError(
                f"judge at {self.s.base_url or 'api.openai.com'} refused model {self.s.judge_model!r}: "
                f"{exc.status_code} {getattr(exc, 'message', exc)}"
            )
            return "failed"
        except openai.RateLimitError:
            return "deferred"
        except openai.APITimeoutError:
            self.summary.not_graded["timeout"] += len(reqs)
            return "failed"
        except openai.APIConnectionError:
            self.summary.not_graded["connection_error"] += len(reqs)
            if self._answered_by_judge == 0:
                self._fatal = JudgeConfigError(f"judge unreachable at {self.s.base_url or 'api.openai.com'}")
            return "failed"
        except openai.APIStatusError as exc:
            self.summary.not_graded[f"http_{exc.status_code}"] += len(reqs)
            return "failed"
        finally:
            self._inflight -= 1
        self._rejected_in_a_row = 0
        self._answered_by_judge += 1
        try:
            self._record(reqs, resp, time.perf_counter() - t0)
        except StoreWriteError as exc:  # disk full: stop paying for answers that cannot be kept
            self.summary.not_graded["store_write_error"] += len(reqs)
            if self._fatal is None:
                self._fatal = exc
            return "failed"
        return "done"

    def _record(self, reqs: list[PairRequest], resp, latency_s: float) -> None:
        choice = resp.choices[0] if getattr(resp, "choices", None) else None
        msg = choice.message if choice is not None else None
        content = getattr(msg, "content", None)
        refusal = getattr(msg, "refusal", None)
        if refusal:
            grade, reason, unlabeled = None, prompts._short(refusal), "refusal"
        else:
            grade, reason, unlabeled = prompts.parse_reply(content)
        usage = getattr(resp, "usage", None)
        tin = int(getattr(usage, "prompt_tokens", 0) or 0)
        tout = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = tin / 1000 * self.s.price_input_per_1k + tout / 1000 * self.s.price_output_per_1k
        s = self.summary
        s.tokens_in += tin
        s.tokens_out += tout
        s.cost_usd += cost
        out = []
        for i, r in enumerate(reqs):
            out.append(
                Judgment(
                    query=r.query,
                    product_id=r.product_id,
                    text_hash=r.text_hash,
                    judge_model=self.s.judge_model,
                    prompt_version=prompts.PROMPT_VERSION,
                    grade=grade,
                    reason=reason,
                    unlabeled=unlabeled,
                    split=r.split,
                    catalog=r.catalog,
                    run_id=r.run_id,
                    text=r.text,
                    raw=prompts._short(content or "", 500) if unlabeled else None,
                    tokens_in=tin if i == 0 else 0,
                    tokens_out=tout if i == 0 else 0,
                    cost_usd=cost if i == 0 else 0.0,
                    reused_from=reqs[0].product_id if i else None,
                )
            )
        self._write(out)

    def _write(self, judgments: list[Judgment]) -> None:
        written = self.store.append(judgments)
        s = self.summary
        s.written += written
        for j in judgments:
            if j.labeled:
                s.labeled += 1
            else:
                s.unlabeled[j.unlabeled or "unknown"] += 1
            if j.reused_from:
                s.reused += 1
        if self._bar is not None:
            self._bar.update(len(judgments))

    def _write_copies(self, judgments: list[Judgment]) -> None:
        """Store copies of earlier judgments (no call); a store write error stops the run like a failed call."""
        if self._fatal is not None:
            self.summary.not_graded["store_write_error"] += len(judgments)
            return
        try:
            self._write(judgments)
        except StoreWriteError as exc:
            self.summary.not_graded["store_write_error"] += len(judgments)
            self._fatal = exc

    # -- budget
    def _may_start(self) -> bool:
        b = self.s.budget_usd
        if b is None:
            return True
        avg = self.summary.cost_usd / self._answered_by_judge if self._answered_by_judge else 0.0
        if self.summary.cost_usd + self._inflight * avg >= b or (b == 0):
            self.summary.budget_stopped = True
            return False
        return True

    # -- the run
    async def _drain(self, client, queue: deque, deferred: list) -> None:
        async def worker() -> None:
            while queue and self._fatal is None:
                if self.summary.budget_stopped or not self._may_start():
                    return
                group = queue.popleft()
                outcome = await self._grade_group(client, group)
                if outcome == "deferred":
                    self.summary.deferred += len(group)
                    deferred.append(group)

        n = min(self.s.concurrency, len(queue))
        await asyncio.gather(*(worker() for _ in range(n)))

    async def grade(self, pairs: Iterable[PairRequest]) -> GradingSummary:
        """Grade every pair not already in the store; returns the summary (also at `self.summary`).

        Raises:
            JudgeConfigError: the judge is unreachable or refuses the configuration (judgments made before
                the error stay stored).
            labeling.store.StoreWriteError: the store cannot be written (disk full, file too large); the run
                stopped at once, the store keeps every earlier judgment and stays readable.
        """
        pairs = list(pairs)
        s = self.summary
        s.requested = len(pairs)
        t0 = time.perf_counter()
        groups: dict[tuple[str, str], list[PairRequest]] = {}
        for p in pairs:
            key = (p.query, p.product_id, p.text_hash, self.s.judge_model, prompts.PROMPT_VERSION)
            if key in self.store:
                s.already_stored += 1
                continue
            groups.setdefault((p.query, p.text_hash), []).append(p)
        todo: deque = deque()
        for (query, th), reqs in groups.items():
            prev = self.store.same_text(query, th, self.s.judge_model, prompts.PROMPT_VERSION)
            if prev is None:
                todo.append(reqs)
                continue
            self._write_copies(
                [
                    Judgment(
                        query=r.query,
                        product_id=r.product_id,
                        text_hash=r.text_hash,
                        judge_model=prev.judge_model,
                        prompt_version=prev.prompt_version,
                        grade=prev.grade,
                        reason=prev.reason,
                        unlabeled=prev.unlabeled,
                        split=r.split,
                        catalog=r.catalog,
                        run_id=r.run_id,
                        text=r.text,
                        raw=prev.raw,
                        reused_from=prev.product_id,
                    )
                    for r in reqs
                ]
            )

        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=sum(len(g) for g in todo), unit="pair", desc="grading", leave=False)
        client = self._client or self._make_client()
        try:
            deferred: list = []
            if todo and self._fatal is None and self._may_start():  # probe alone: learns whether structured output works
                first = todo.popleft()
                if await self._grade_group(client, first) == "deferred":
                    s.deferred += len(first)
                    deferred.append(first)
            await self._drain(client, todo, deferred)
            for _ in range(self.s.defer_rounds):
                if not deferred or self._fatal or s.budget_stopped:
                    break
                await asyncio.sleep(self.s.defer_wait_s)
                todo, deferred = deque(deferred), []
                await self._drain(client, todo, deferred)
            if deferred:
                s.not_graded["rate_limited"] += sum(len(g) for g in deferred)
            if todo:
                s.not_graded["budget" if s.budget_stopped else "stopped"] += sum(len(g) for g in todo)
        finally:
            if self._bar is not None:
                self._bar.close()
            if self._client is None:
                await client.close()
            s.seconds = time.perf_counter() - t0
            answered = s.written - s.reused
            s.pairs_per_s = answered / s.seconds if s.seconds > 0 else 0.0
            s.structured_output = self.structured if s.calls else None
        if self._fatal is not None:
            raise self._fatal
        return s


def grade_pairs(
    pairs: Iterable[PairRequest],
    settings: LabelSettings | None = None,
    store: JudgmentStore | None = None,
    progress: bool = False,
) -> GradingSummary:
    """Synchronous entry point: grade `pairs` into `store` (default: `settings.judgments_path`).

    Raises JudgeConfigError (see `Grader.grade`).
    """
    settings = settings or LabelSettings()
    store = store if store is not None else JudgmentStore(settings.judgments_path)
    return asyncio.run(Grader(settings, store, progress=progress).grade(pairs))
