"""Atomic writes and weights-only reads of everything seqkd saves.

Every file is written to a temporary name in the same folder, flushed to disk and renamed, so a
crash or kill leaves either the old file or the new one, never a torn one. Every read uses
``torch.load(weights_only=True)``: checkpoints hold only tensors and plain Python values, so a
planted pickle payload is refused instead of executed, including on resume.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from seqkd.errors import SeqkdError

MODEL_FORMAT = "seqkd-model/1"


class CheckpointError(SeqkdError):
    pass


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be loaded as a weights-only checkpoint ({exc})") from exc


def save_model(path: Path, *, task: str, model_config: dict[str, Any], vocabulary: str, state_dict: dict) -> None:
    """A self-describing model file: enough to rebuild the model without the recipe's training parts."""
    atomic_save(
        {"format": MODEL_FORMAT, "task": task, "model_config": model_config, "vocabulary": vocabulary,
         "state_dict": state_dict},
        path,
    )


def load_model_file(path: Path) -> dict[str, Any]:
    data = safe_load(path)
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: not a seqkd model file (expected format {MODEL_FORMAT!r})")
    return data
