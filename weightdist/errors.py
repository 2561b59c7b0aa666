"""User-facing errors.

Every problem a user can cause (bad model name, broken file, unwritable output)
is raised as a :class:`WeightdistError` whose message is one line naming the
problem and the fix. The CLI prints exactly that line; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations


class WeightdistError(Exception):
    """Base class: the message is shown to the user as-is, on one line."""

    exit_code = 2


class ModelNotFoundError(WeightdistError, LookupError):
    """A model name that no registry or provider knows."""


class CheckpointError(WeightdistError, ValueError):
    """A file that is missing, unreadable, hostile or not a checkpoint."""


class WeightsNotCachedError(WeightdistError, FileNotFoundError):
    """Pretrained weights that are not in the local cache and cannot be fetched."""


class OutputError(WeightdistError, OSError):
    """An output location that cannot be created, written or locked."""


class DatasetError(WeightdistError, FileNotFoundError):
    """A dataset that is not installed where we looked."""


def one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's text folded onto one line and cut to ``limit`` characters, for quoting in a message."""
    text = " ".join(str(exc).split())
    return (text[:limit] + "…") if len(text) > limit else text or type(exc).__name__
