"""The promotion gate: a candidate replaces the serving model only when it is measurably better.

Checks (thresholds from `LabelSettings`):
1. dev nDCG@10 of the candidate >= baseline + `promotion_margin`;
2. the candidate's scores on dev are not collapsed: standard deviation >= `score_std_floor`
   (a model that gives every pair nearly the same score ranks by accident). The scores are the served ones,
   activation(logit) as the model declares it (`fashion_rerank.scores`, `labeling.evaluate.cross_encoder_scorer`),
   so the floor reads in the sidecar's score space (in [0, 1] for a sigmoid model, logits for an identity one);
3. test nDCG@10 of the candidate >= baseline - `test_tolerance` (no regression on held-out queries).
The baseline is the serving model (registry `current`) when there is one, else kNN order (what shoppers
get when no reranker model is served). When every check passes the version is promoted with
`ModelRegistry.promote` (atomic pointer replace; the sidecar's registry watcher hot-swaps it); otherwise
the serving model stays and the decision says why. `fashion-rerank rollback` restores the previous version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fashion_rerank.registry import ModelRegistry
from fashion_rerank.settings import LabelSettings
from labeling.evaluate import Evaluation


@dataclass
class Check:
    """One gate check: name, whether it passed, the measured value, the threshold, a sentence."""

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


@dataclass
class GateDecision:
    """Whether to promote, against which baseline, every check, and the reasons for keeping."""

    promote: bool
    baseline: str
    checks: list[Check] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """Why the candidate was refused (empty when promoted)."""
        return [c.detail for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "baseline": self.baseline,
            "checks": [asdict(c) for c in self.checks],
            "reasons": self.reasons,
        }

    def summary(self) -> str:
        if self.promote:
            return f"promote: beats {self.baseline} (" + "; ".join(c.detail for c in self.checks) + ")"
        return "keep the serving model: " + "; ".join(self.reasons)


def gate(dev: Evaluation, test: Evaluation, settings: LabelSettings | None = None) -> GateDecision:
    """Decide on the "candidate" system of `dev` and `test` against "serving" if present, else "knn".

    Raises KeyError when an evaluation lacks the candidate or the baseline system.
    """
    s = settings or LabelSettings()
    base = "serving" if "serving" in dev.systems else "knn"
    label = base + (f" {dev.systems[base].model}" if dev.systems[base].model else " order")
    checks: list[Check] = []
    if dev.queries == 0 or test.queries == 0:
        checks.append(
            Check(
                "enough held-out queries",
                False,
                float(min(dev.queries, test.queries)),
                1.0,
                f"no graded dev/test queries to decide on (dev {dev.queries}, test {test.queries})",
            )
        )
        return GateDecision(False, label, checks)
    cd, bd = dev.systems["candidate"].metrics["nDCG@10"], dev.systems[base].metrics["nDCG@10"]
    gain = cd - bd
    checks.append(
        Check(
            "dev nDCG@10 margin",
            gain >= s.promotion_margin,
            gain,
            s.promotion_margin,
            f"dev nDCG@10 {cd:.4f} vs {bd:.4f} ({gain:+.4f}, needs >= {s.promotion_margin:+.4f})",
        )
    )
    std = dev.systems["candidate"].score_std or 0.0
    checks.append(
        Check(
            "scores not collapsed",
            std >= s.score_std_floor,
            std,
            s.score_std_floor,
            f"score std on dev {std:.4f} (needs >= {s.score_std_floor})",
        )
    )
    ct, bt = test.systems["candidate"].metrics["nDCG@10"], test.systems[base].metrics["nDCG@10"]
    checks.append(
        Check(
            "no test regression",
            ct >= bt - s.test_tolerance,
            ct - bt,
            -s.test_tolerance,
            f"test nDCG@10 {ct:.4f} vs {bt:.4f} ({ct - bt:+.4f}, tolerance {s.test_tolerance})",
        )
    )
    return GateDecision(all(c.passed for c in checks), label, checks)


def apply(registry: ModelRegistry, version: str, decision: GateDecision) -> bool:
    """Promote `version` when the decision says so; returns whether it was promoted."""
    if not decision.promote:
        return False
    registry.promote(version, reason=decision.summary()[:500])
    return True


# ------------------------------------------------------------------------------------------------ CLI
