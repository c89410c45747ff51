"""Settings of the labeling job (`FR_LABEL_*`), with the judge endpoint read the openai client's way.

The judge is any OpenAI-compatible Chat Completions server. Its endpoint and credentials come from the
usual variables, so an existing OpenAI / vLLM / Ollama / gateway setup works unchanged:

- `OPENAI_BASE_URL` (or `FR_LABEL_BASE_URL`)   e.g. `http://127.0.0.1:8088/v1` for `fashion-rerank judge-server`
- `OPENAI_API_KEY`  (or `FR_LABEL_API_KEY`)    a placeholder is sent when neither is set (the reference judge
                                               needs none; a real provider answers 401, which stops the job)
- `OPENAI_ORG_ID`   (or `FR_LABEL_ORGANIZATION`)
- `FR_LABEL_JUDGE_MODEL`                       default `reference-rubric-v1`, the shipped rubric judge (not an LLM)

Training defaults come from shared/reference/training-calibration.md: on the Myntra catalog a fresh head
starts about 8% below kNN order; 5,000 pairs at lr 5e-5 for 3 epochs gave +16.6% nDCG@10, while small or
short runs lost to kNN. Hence lr 5e-5, 3 epochs, batch 32 by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings

from fashion_rerank.settings import _config

#: Model name of the shipped reference judge; any judge model starting with this prefix is the rubric.
REFERENCE_JUDGE_PREFIX = "reference-rubric"


class LabelSettings(BaseSettings):
    """Everything the labeling job reads from the environment (prefix `FR_LABEL_`) or a config file.

    Groups: judge endpoint and cost; grading behaviour (concurrency, timeouts, retries, budget);
    the judgments store; sampling and candidate pools; training hyperparameters; the promotion gate.
    Raises pydantic.ValidationError on bad values (e.g. split fractions that leave no train split).
    """

    model_config = {**_config("FR_LABEL_"), "populate_by_name": True}

    # -- judge endpoint (OpenAI-compatible)
    base_url: str | None = Field(
        None, validation_alias=AliasChoices("FR_LABEL_BASE_URL", "OPENAI_BASE_URL"),
        description="Chat Completions base URL ending in /v1; None: the openai client's default (api.openai.com)",
    )
    api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("FR_LABEL_API_KEY", "OPENAI_API_KEY"))
    organization: str | None = Field(None, validation_alias=AliasChoices("FR_LABEL_ORGANIZATION", "OPENAI_ORG_ID"))
    judge_model: str = Field("reference-rubric-v1", description="model name sent to the judge")
    extra_headers: dict[str, str] = Field(default_factory=dict, description="sent with every judge request (JSON)")
    price_input_per_1k: float = Field(0.0, ge=0, description="USD per 1,000 prompt tokens")
    price_output_per_1k: float = Field(0.0, ge=0, description="USD per 1,000 completion tokens")
    budget_usd: float | None = Field(None, ge=0, description="stop grading cleanly once this much is spent")

    # -- grading behaviour
    concurrency: int = Field(16, ge=1, le=1024, description="judge requests in flight at once")
    timeout_s: float = Field(30.0, gt=0, description="per judge request, seconds")
    max_retries: int = Field(4, ge=0, description="retries of one request on 429 / 5xx / timeout / connection error")
    backoff_initial_s: float = Field(0.25, ge=0, description="first backoff; doubles per retry, full jitter")
    backoff_max_s: float = Field(20.0, ge=0)
    defer_rounds: int = Field(2, ge=0, description="extra passes over requests that stayed rate-limited")
    defer_wait_s: float = Field(5.0, ge=0, description="pause before each deferred pass (or the server's Retry-After)")
    max_output_tokens: int = Field(150, ge=16, description="max_completion_tokens of a judge reply")

    # -- judgments store and reports
    judgments_path: Path = Field(Path("judgments/judgments.jsonl"), description="append-only JSONL store")
    reports_dir: Path = Field(Path("reports"), description="refresh reports (JSON + Markdown)")

    # -- sampling and candidate pools
    query_log: str = Field("ubi_queries", description="UBI ubi_queries-shaped OpenSearch index, or a .jsonl path")
    queries_per_run: int = Field(200, ge=1, description="new queries sampled per run")
    tail_share: float = Field(0.3, ge=0, le=1, description="share of sampled queries drawn uniformly from the tail")
    head_traffic_share: float = Field(0.5, gt=0, le=1, description="the head: most frequent queries covering this share of traffic")
    dev_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    split_salt: str = Field("fr-split-v1", description="salt of the query-level split hash; changing it reshuffles splits")
    sample_seed: int = 42
    top_k: int = Field(20, ge=1, description="kNN candidates per query (what the reranker will face)")
    random_extras: int = Field(5, ge=0, description="random catalog products added to each pool (easy negatives)")

    # -- training (calibrated CPU defaults, see module docstring)
    base_model: str | None = Field(None, description="None: FR_MODEL_CROSS_ENCODER_BASE (packaged all-MiniLM-L6-v2)")
    loss: Literal["bce", "lambda"] = Field("bce", description="bce: BinaryCrossEntropyLoss on grade/3; lambda: LambdaLoss listwise")
    learning_rate: float = Field(5e-5, gt=0)
    epochs: float = Field(3, gt=0)
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(128, ge=16, description="tokens per (query, product) pair, as served")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps with linear warmup (passed as warmup_steps)")
    seed: int = 42
    train_threads: int | None = Field(
        None, ge=1, description="torch threads for training and evaluation; None: FR_MODEL_THREADS or the CPU quota. "
        "On an oversubscribed machine 1 thread can be several times faster than 2 (OpenMP barriers under contention)")
    min_train_pairs: int = Field(200, ge=1, description="refuse to train on fewer labeled train pairs")

    # -- promotion gate
    promotion_margin: float = Field(0.005, ge=0, description="dev nDCG@10 the candidate must gain over the baseline")
    score_std_floor: float = Field(0.01, ge=0, description="minimum std of candidate scores on dev (collapse check)")
    test_tolerance: float = Field(0.01, ge=0, description="allowed test nDCG@10 drop vs the baseline")

    @model_validator(mode="after")
    def _check_splits(self) -> "LabelSettings":
        if self.dev_fraction + self.test_fraction >= 1:
            raise ValueError("dev_fraction + test_fraction must be < 1 so that a train split remains")
        return self

    def is_reference_judge(self) -> bool:
        """True when the judge is the shipped rubric (labels come from rules, not from an LLM)."""
        return self.judge_model.startswith(REFERENCE_JUDGE_PREFIX)

    def pools_path(self) -> Path:
        """Where candidate pools live: `<judgments stem>.pools.jsonl` next to the judgments."""
        p = self.judgments_path
        return p.with_name(p.stem + ".pools.jsonl")


class JudgeServerSettings(BaseSettings):
    """The reference judge server (`fashion-rerank judge-server`), prefix `FR_JUDGE_`.

    `faults` injects failures for tests and drills, e.g. `429x2,slow=0.5` (see `labeling.judge_server`);
    a request header `X-Judge-Faults` overrides it per request.
    """

    model_config = _config("FR_JUDGE_")

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=0, le=65535, description="0 picks a free port")
    model: str = Field("reference-rubric-v1", description="the model name it answers to")
    faults: str = ""
