"""Atomic writes and weights-only reads of everything seqkd saves.

Every file is written to a temporary name in the same folder, flushed to disk and renamed, so a
crash or kill leaves either the old file or the new one, never a torn one. Every read uses
``torch.load(weights_only=True)``: checkpoints hold only tensors and plain Python values, so a
planted pickle payload is refused instead of executed, including on resume.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from seqkd.errors import SeqkdError
from seqkd.fileio import atomic_writer

MODEL_FORMAT = "seqkd-model/1"


class CheckpointError(SeqkdError):
    pass


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through ``seqkd.fileio.atomic_writer``: a crash or a full disk
    (``DiskFullError``, naming ``path``) leaves the previous checkpoint in place and usable."""
    with atomic_writer(path) as f:
        torch.save(obj, f)


def safe_load(path: Path, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)``. A refused pickle is reported without PyTorch's advice to
    load with ``weights_only=False``: for a file seqkd did not write that advice runs its code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values; seqkd loads such files weights-only "
            "and refuses this one (it was not written by seqkd or was tampered with)"
        ) from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as exc:
        detail = "the file is empty" if path.stat().st_size == 0 else f"{type(exc).__name__}: {exc}"
        raise CheckpointError(
            f"{path}: cannot be loaded as a weights-only checkpoint ({detail}); it is damaged or not a "
            "checkpoint: use another copy, or remove it to start that part of the run again"
        ) from exc


def save_model(
    path: Path, *, task: str, model_config: dict[str, Any], vocabulary: str, state_dict: dict,
    output_space: dict[str, Any] | None = None,
) -> None:
    """A self-describing model file: enough to rebuild the model without the recipe's training parts."""
    atomic_save(
        {"format": MODEL_FORMAT, "task": task, "model_config": model_config, "vocabulary": vocabulary,
         "output_space": output_space or {"vocabulary": vocabulary}, "state_dict": state_dict},
        path,
    )


def load_model_file(path: Path, mmap: bool = False) -> dict[str, Any]:
    """A seqkd model file; with ``mmap`` its tensors stay on disk until read (to check its header)."""
    data = safe_load(path, mmap=mmap)
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: not a seqkd model file (expected format {MODEL_FORMAT!r})")
    return data
