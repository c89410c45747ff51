"""ONNX files for any cross-encoder folder: the folder's own `onnx/`, or an export made once into a cache.

A registry version written by `train` / `refresh` carries `onnx/` already. A plain Hugging Face cross-encoder
folder (or a hub id resolved to one, e.g. `cross-encoder/ms-marco-MiniLM-L6-v2`) does not: the first load
exports it (`fashion_rerank.onnx_export.export_cross_encoder`, which needs the `[train]` extra: torch) into
`<cache>/onnx-models/ce-<key>/`, with the folder's tokenizer and config files beside `onnx/`, and every
later load reuses that. The key is a hash of the folder's config and weight files (name, size, modification
time), so a changed model is exported again.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

from fashion_rerank.settings import cache_root

log = logging.getLogger(__name__)

#: Files copied next to `onnx/` so the cached folder is loadable on its own (tokenizer and configuration).
SIDE_FILES = (
    "config.json",
    "config_sentence_transformers.json",  # where sentence-transformers >= 5 declares the activation (fashion_rerank.scores)
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "merges.txt",
    "vocab.json",
    "added_tokens.json",
)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class ExportUnavailableError(RuntimeError):
    """The folder has no ONNX files and this installation cannot export them (no torch: install `[train]`)."""


def has_onnx(folder: str | Path) -> bool:
    """True when `folder/onnx/manifest.json` exists."""
    return (Path(folder) / "onnx" / "manifest.json").exists()


def cache_key(folder: str | Path) -> str:
    """12 hex characters identifying the folder's model files (names, sizes, modification times)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for name in ("config.json", "config_sentence_transformers.json", *WEIGHT_FILES):
        p = folder / name
        if p.exists():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def ensure_onnx(folder: str | Path, cache: str | Path | None = None) -> Path:
    """A folder holding `onnx/manifest.json` and the tokenizer files for the cross-encoder in `folder`.

    Returns `folder` itself when it has ONNX files, else the cache folder (exported there on first use).

    Raises:
        FileNotFoundError: `folder` does not exist or holds no model weights.
        ExportUnavailableError: an export is needed and torch/transformers are not installed.
    """
    folder = Path(folder)
    if has_onnx(folder):
        return folder
    if not (folder / "config.json").exists() or not any((folder / w).exists() for w in WEIGHT_FILES):
        raise FileNotFoundError(f"{folder} is neither an ONNX export nor a Hugging Face model folder (config.json + weights)")
    root = Path(cache) if cache else cache_root() / "onnx-models"
    target = root / f"ce-{cache_key(folder)}"  # by content: copies of one model share an export
    if has_onnx(target):
        return target
    try:
        import torch  # noqa: F401 - only to fail early with a clear message
    except ImportError as exc:
        raise ExportUnavailableError(
            f"{folder} has no ONNX files and exporting them needs torch: install fashion-rerank[train] (or export "
            f"elsewhere with `fashion-rerank model export {folder}` and copy the folder)"
        ) from exc
    from fashion_rerank.onnx_export import export_cross_encoder

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=root))
    try:
        for name in SIDE_FILES:
            if (folder / name).exists():
                shutil.copy2(folder / name, tmp / name)
        log.info("exporting %s to ONNX into %s (once; later loads reuse it)", folder, target)
        export_cross_encoder(folder, out_dir=tmp / "onnx")
        if target.exists():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def ensure_bi_encoder_onnx(model: str, onnx_dir: str | Path | None = None, cache: str | Path | None = None) -> Path:
    """A folder with the ONNX export of the sentence-transformers bi-encoder `model` (what `OnnxBiEncoder` loads).

    `onnx_dir` (FR_MODEL_BI_ENCODER_ONNX) is used as it is when given. Otherwise `model` (an id, a folder or
    `packaged:all-MiniLM-L6-v2`) is exported once into `<cache>/onnx-models/bi-<name>-<key>/` and reused.

    Raises:
        FileNotFoundError: `onnx_dir` lacks model.onnx, or `model` cannot be found.
        ExportUnavailableError: an export is needed and torch is not installed (serve-only install: export on a
            machine with `[train]` and set FR_MODEL_BI_ENCODER_ONNX).
    """
    if onnx_dir:
        d = Path(onnx_dir)
        if not (d / "model.onnx").exists():
            raise FileNotFoundError(f"FR_MODEL_BI_ENCODER_ONNX={d} holds no model.onnx")
        return d
    from fashion_rerank.settings import resolve_model_path

    try:
        folder = Path(resolve_model_path(model))
    except FileNotFoundError as exc:
        raise ExportUnavailableError(
            f"bi-encoder {model!r} is not installed here ({exc}); set FR_MODEL_BI_ENCODER_ONNX to an exported folder"
        ) from exc
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model))
        except Exception as exc:  # noqa: BLE001
            raise FileNotFoundError(f"cannot find bi-encoder {model!r} as a folder or on the Hugging Face Hub: {exc}") from exc
    root = Path(cache) if cache else cache_root() / "onnx-models"
    target = root / f"bi-{folder.name}-{cache_key(folder)}"
    if (target / "model.onnx").exists():
        return target
    try:
        import torch  # noqa: F401 - only to fail early with a clear message
    except ImportError as exc:
        raise ExportUnavailableError(
            f"the bi-encoder {model!r} has no ONNX export yet and exporting it needs torch: install fashion-rerank[train], "
            "or set FR_MODEL_BI_ENCODER_ONNX to a folder exported elsewhere"
        ) from exc
    from fashion_rerank.onnx_export import export_bi_encoder

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=root))
    try:
        log.info("exporting bi-encoder %s to ONNX into %s (once; later loads reuse it)", folder, target)
        export_bi_encoder(folder, tmp)
        if target.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
