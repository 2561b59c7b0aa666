"""Reading files weightdist did not write (report folders given to compare/findings, manifests, indexes).

Such a file may be a FIFO (opening it would block forever), a device or a symlink to ``/dev/zero``
(reading it would never end), or simply huge. :func:`read_capped` opens without following a final
symlink and without blocking, accepts only regular files, and reads at most ``limit`` bytes.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import WeightdistError

# Report tables of the largest real models are a few MB; a summary.json a few KB.
DEFAULT_LIMIT = 256 * 2**20


class UntrustedFileError(WeightdistError):
    """A file that is not a regular file, is too large, or cannot be read."""


def describe_mode(mode: int) -> str:
    """What a non-regular file is, in words, for an error message."""
    for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return what
    return "not a regular file"


def read_capped(path: str | os.PathLike, limit: int = DEFAULT_LIMIT, *, fix: str = "pass a folder written by weightdist") -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``), or a one-line :class:`UntrustedFileError`.

    The final path component must not be a symlink (O_NOFOLLOW), a FIFO is opened non-blocking and
    refused, and the size is checked on the open descriptor, so nothing can change between check and read.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UntrustedFileError(f"{path} is a symlink (or a symlink loop); weightdist does not follow links in "
                                     f"folders it reads; {fix}") from None
        raise UntrustedFileError(f"{path}: cannot open it ({exc.strerror or exc}); {fix}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFileError(f"{path} is {describe_mode(info.st_mode)}, not a regular file; {fix}")
        if info.st_size > limit:
            raise UntrustedFileError(f"{path} is {info.st_size:,} bytes, over the {limit:,}-byte limit for this file; {fix}")
        chunks, total = [], 0
        while True:  # the file may grow while we read: stop past the limit either way
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise UntrustedFileError(f"{path} grew past the {limit:,}-byte limit while being read; {fix}")
        return b"".join(chunks)
    except OSError as exc:
        raise UntrustedFileError(f"{path}: cannot read it ({exc.strerror or exc}); {fix}") from None
    finally:
        os.close(fd)


def read_text_capped(path: str | os.PathLike, limit: int = DEFAULT_LIMIT, *, fix: str = "pass a folder written by weightdist") -> str:
    data = read_capped(path, limit, fix=fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UntrustedFileError(f"{path}: not UTF-8 text (byte {exc.start}); {fix}") from None
