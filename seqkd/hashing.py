"""Content hashes of files: what stage keys, data fingerprints and cache manifests are built on."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, model_serializer

from seqkd.errors import DataError


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks so large corpora need little memory."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_file_digests(paths: Iterable[Path]) -> list[str]:
    """sha256 of each data file; a missing one is a data error naming it."""
    digests = []
    for path in paths:
        if not path.exists():
            raise DataError(f"{path}: no such file")
        digests.append(file_sha256(path))
    return digests


def settings_json(config: BaseModel, path_fields: tuple[str, ...] = ("corpus", "train", "valid", "test")) -> str:
    """A task config as canonical JSON with its ``data.<path>`` fields reduced to whether they are
    set: fingerprints hash the files' contents, so naming the same file another way (absolute, from
    another folder) is the same configuration."""
    dump = config.model_dump(mode="json")
    data = dump.get("data")
    if isinstance(data, dict):
        dump["data"] = {k: (v is not None if k in path_fields else v) for k, v in data.items()}
    return json.dumps(dump, sort_keys=True)


class AddedFields(BaseModel):
    """A config whose ``added_fields`` (fields added after the schema was in use) are left out of
    its dumps while at their default (``None`` for most; e.g. ``precision: fp32``), so the stage and
    data hashes built from those dumps, and with them the runs recorded before the fields existed,
    stay valid."""

    added_fields: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_default_added_fields(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for name in self.added_fields:
            if name in data and data[name] == type(self).model_fields[name].default:
                data.pop(name)
        return data
