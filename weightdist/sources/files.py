"""Local checkpoint files: .pth/.pt/.bin/.th/.ckpt (weights_only pickle), .safetensors, and shard indexes."""
from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

from ..errors import CheckpointError
from . import hub
from .base import Digest, LoadedModel, ModelInfo, ModelSource, OpenedModel, check_no_init, check_no_weights_file, register_source
from .checkpoint import ShardedCheckpoint, looks_like_file, open_weights


def file_sha256(path: str | Path) -> str:
    """sha256 of a weights file, or one line saying it cannot be read.

    Sources hand it over as ``Digest(file_sha256, path)``: computed only when the digest is read."""
    try:
        return hub.sha256_of(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file ({exc.strerror or type(exc).__name__}); check its permissions") from None


def check_file(spec: str | Path, suffixes: tuple[str, ...], what: str) -> Path:
    """The path of an existing, readable, non-empty regular file, or one line naming the problem and the fix."""
    text = str(spec).replace("\0", "\\0")
    if "\0" in str(spec):
        raise CheckpointError(f"{text}: the name contains a NUL byte; check the path")
    path = Path(spec).expanduser()
    try:
        if not path.exists():
            raise CheckpointError(f"no such file: {path}; check the path")
        if path.is_dir():
            raise CheckpointError(f"{path} is a directory; pass the {what} file itself")
        if not path.is_file():
            raise CheckpointError(f"{path} is not a regular file (a pipe, socket or device); save the {what} to a file and pass that")
        if not os.access(path, os.R_OK):
            raise CheckpointError(f"{path}: permission denied; make the file readable")
        if not path.name.lower().endswith(suffixes):
            raise CheckpointError(f"{path}: expected a {what} file ({', '.join(suffixes)})")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path} is empty (0 bytes); the download or save did not finish")
    except OSError as exc:  # ENAMETOOLONG, ELOOP, ...
        raise CheckpointError(f"{text[:200]}: cannot open it ({exc.strerror or type(exc).__name__}); check the path") from None
    return path


class FileFormatSource(ModelSource):
    """A single-file format recognised by its suffix: the checks every such source makes, in one place.

    Subclasses set ``suffixes`` and ``format`` (named in messages) and implement ``open_path``; a format
    whose suffix is shared with others (TorchScript's ``.pt``) also narrows ``can_open``."""

    priority = 90
    suffixes: ClassVar[tuple[str, ...]]
    format: ClassVar[str]

    def can_open(self, spec: str) -> bool:
        return spec.lower().endswith(self.suffixes)

    def open(self, spec: str, *, init: bool = False, seed: int = 0, weights_file: str | None = None) -> OpenedModel:
        check_no_weights_file(weights_file)
        check_no_init(init, spec)
        return self.open_path(check_file(spec, self.suffixes, self.format))

    @abstractmethod
    def open_path(self, path: Path) -> OpenedModel:
        """Open the checked file at ``path`` lazily."""


@register_source
class CheckpointFileSource(ModelSource):
    name = "file"
    priority = 80
    description = "local .pth/.pt/.bin/.th/.ckpt/.safetensors files and *.index.json shard indexes"

    def can_open(self, spec: str) -> bool:
        return looks_like_file(spec)

    def info(self, spec: str) -> ModelInfo:
        return ModelInfo(provenance=f"local file {Path(spec).expanduser()}")

    def open(self, spec: str, *, init: bool = False, seed: int = 0, weights_file: str | None = None) -> LoadedModel:
        check_no_weights_file(weights_file)
        check_no_init(init, spec)
        tensors = open_weights(spec)
        path = Path(spec).expanduser()
        sha = Digest(tensors.sha256) if isinstance(tensors, ShardedCheckpoint) else Digest(file_sha256, path)  # shards: every one
        return LoadedModel(path.name, "file", str(path), sha, None, tensors, self.info(spec))
