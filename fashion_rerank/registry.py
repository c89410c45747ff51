"""The model registry: `<root>/<name>/<version>/` folders and a `current` pointer per model name.

Layout:
    models/fashion-ce/20261130T061500Z/   a sentence-transformers CrossEncoder folder + model_card.md + card.json
    models/fashion-ce/current             text file holding the serving version (written atomically)
    models/fashion-ce/history.jsonl       one line per promotion/rollback (version, previous, time, reason)

The pointer is replaced with `os.replace`, so a reader sees either the old or the new version, never
a half-written one. The sidecar polls `current()` and hot-swaps (see `reranker.core`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from fashion_rerank.settings import ModelSettings


class RegistryError(RuntimeError):
    """A version does not exist, or there is nothing to roll back to."""


class ModelRegistry:
    """Versions of one named cross-encoder under `root/name`.

    Args:
        root: registry folder (default `FR_MODEL_REGISTRY_DIR`, `models/`).
        name: model name (default `FR_MODEL_NAME`, `fashion-ce`).
    """

    def __init__(self, root: str | Path | None = None, name: str | None = None):
        s = ModelSettings()
        self.root = Path(root or s.registry_dir)
        self.name = name or s.name
        self.dir = self.root / self.name

    # -- reading
    def versions(self) -> list[str]:
        """All complete versions (folders with a `card.json`), oldest first."""
        if not self.dir.exists():
            return []
        return sorted(p.name for p in self.dir.iterdir() if p.is_dir() and (p / "card.json").exists())

    def current(self) -> str | None:
        """The serving version, or None when nothing was promoted yet."""
        try:
            v = (self.dir / "current").read_text().strip()
        except FileNotFoundError:
            return None
        return v or None

    def path(self, version: str) -> Path:
        """Folder of `version`. Raises RegistryError if it is not a complete version."""
        p = self.dir / version
        if not (p / "card.json").exists():
            raise RegistryError(f"model {self.name} has no version {version!r} in {self.dir}")
        return p

    def card(self, version: str) -> dict:
        """The machine-readable model card (`card.json`) of `version`."""
        return json.loads((self.path(version) / "card.json").read_text())

    # -- writing
    def new_version_dir(self) -> tuple[str, Path]:
        """Create and return (version, folder) for a new candidate; version is a UTC timestamp.

        The version becomes visible in `versions()` only once the trainer writes `card.json` into it.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            p = self.dir / version
            try:
                p.mkdir()
                return version, p
            except FileExistsError:
                time.sleep(0.001)

    def _write_current(self, version: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".current.")
        with os.fdopen(fd, "w") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / "current")

    def _log(self, **entry) -> None:
        entry["time"] = datetime.now(timezone.utc).isoformat()
        with open(self.dir / "history.jsonl", "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def promote(self, version: str, reason: str = "") -> None:
        """Make `version` current (atomic pointer replace) and record it in history.jsonl."""
        self.path(version)
        previous = self.current()
        self._write_current(version)
        self._log(action="promote", version=version, previous=previous, reason=reason)

    def rollback(self) -> str:
        """Restore the version that was current before the last promotion; returns it.

        Raises RegistryError when there is no earlier promoted version.
        """
        history = []
        if (self.dir / "history.jsonl").exists():
            history = [json.loads(line) for line in (self.dir / "history.jsonl").read_text().splitlines() if line.strip()]
        cur = self.current()
        for entry in reversed(history):
            if entry.get("version") == cur and entry.get("action") == "promote" and entry.get("previous"):
                prev = entry["previous"]
                self.path(prev)
                self._write_current(prev)
                self._log(action="rollback", version=prev, previous=cur, reason="rollback")
                return prev
        raise RegistryError(f"no earlier promoted version of {self.name} to roll back to")


class SingleModel:
    """A registry of one fixed model: a Hugging Face cross-encoder folder or hub id the sidecar is pointed at
    (`fashion-rerank serve --model ...`, `FR_SERVE_MODEL`) instead of a registry. Same reading interface as
    ModelRegistry (`current`, `path`, `versions`, `name`, `dir`); nothing is ever promoted, so no hot swap.

    A hub id (e.g. `cross-encoder/ms-marco-MiniLM-L6-v2`) is resolved with `huggingface_hub.snapshot_download`
    (from the local Hugging Face cache when HF_HUB_OFFLINE=1); a folder is used as it is.

    Raises (from `path`):
        RegistryError: the folder does not exist and the id cannot be resolved.
    """

    def __init__(self, model: str):
        self.model = str(model)
        self.name = Path(self.model).name or self.model
        self.dir = Path(self.model) if Path(self.model).is_dir() else Path(self.model.replace("/", "--"))
        self._path: Path | None = None

    def versions(self) -> list[str]:
        return [self.model]

    def current(self) -> str:
        return self.model

    def path(self, version: str) -> Path:
        if version != self.model:
            raise RegistryError(f"{version!r} is not the model this sidecar serves ({self.model})")
        if self._path is None:
            folder = Path(self.model)
            if not folder.is_dir():
                try:
                    from huggingface_hub import snapshot_download

                    folder = Path(snapshot_download(self.model))
                except Exception as exc:  # noqa: BLE001 - offline, unknown id, no huggingface_hub
                    raise RegistryError(
                        f"cannot find model {self.model!r} as a folder or on the Hugging Face Hub: {exc}"
                    ) from exc
            self._path = folder
        return self._path
