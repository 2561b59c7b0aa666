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


class UnknownNameError(WeightdistError, KeyError):
    """A name (model, family, prior, ...) that no registry knows: one type everywhere.

    A KeyError, so ``except KeyError`` around a registry lookup keeps working, but shown
    as plain text (KeyError's own ``str`` would quote the message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ModelNotFoundError(UnknownNameError):
    """A model name that no registry or provider knows."""


class OptionError(WeightdistError, ValueError):
    """An option value a user passed (``--min-size 0``, a bad regex, an unknown kind)."""


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
