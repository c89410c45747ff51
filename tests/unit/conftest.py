"""Fixtures of the fast unit tests: a model registry with promoted versions and a scoring core on the fake
backend (no model, no OpenSearch)."""

from __future__ import annotations

import pytest

from fashion_rerank.registry import ModelRegistry
from fashion_rerank.settings import ServeSettings
from reranker.backends.fake import FakeBackend
from reranker.core import ScoringCore


def promote_new(registry: ModelRegistry) -> str:
    """Create an (empty) version folder in `registry`, promote it, return its version name."""
    version, path = registry.new_version_dir()
    path.mkdir(parents=True, exist_ok=True)
    (path / "card.json").write_text("{}")
    registry.promote(version, reason="unit test")
    return version


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    """A registry with one promoted version."""
    reg = ModelRegistry(tmp_path / "models", "fake-ce")
    promote_new(reg)
    return reg


class Loads:
    """A loader for ScoringCore that builds FakeBackends and remembers them (per-pair delay settable)."""

    def __init__(self, delay_per_pair_s: float = 0.0, max_length: int = 128):
        self.delay_per_pair_s = delay_per_pair_s
        self.max_length = max_length
        self.loaded: list[FakeBackend] = []
        self.fail_versions: set[str] = set()

    def __call__(self, version: str, path) -> FakeBackend:
        if version in self.fail_versions:
            raise OSError(f"cannot load {version}")
        b = FakeBackend(version, max_length=self.max_length, delay_per_pair_s=self.delay_per_pair_s)
        self.loaded.append(b)
        return b


@pytest.fixture
def make_core(registry):
    """`make_core(loads=None, **serve_settings) -> started ScoringCore` on the fake backend; stopped afterwards."""
    cores = []

    def make(loads: Loads | None = None, **settings) -> ScoringCore:
        s = ServeSettings(**{"registry_poll_s": 0.05, "threads": 1, **settings})
        core = ScoringCore(s, registry, loader=loads or Loads())
        core.start()
        cores.append(core)
        return core

    yield make
    for c in cores:
        c.stop(1.0)
