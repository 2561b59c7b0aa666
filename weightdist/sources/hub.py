"""Pretrained weights through the torch hub cache, offline first.

A cached file is used as it is (its sha256 checked when the digest is first read). A missing one is
downloaded only when the host answers within a few seconds; otherwise the
user gets one line naming the exact file, the folder we looked in, and how to
supply it. Nothing retries, so an offline machine fails in seconds, not minutes.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..errors import CheckpointError, WeightsNotCachedError
from .base import Digest

PROBE_TIMEOUT_S = 3.0
DOWNLOAD_SOCKET_TIMEOUT_S = 5.0  # per socket operation: a stalled connection fails fast, a slow one still works
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One short TCP connect: is there a network at all? (no retries, bounded time)

    Name resolution is not covered by socket timeouts (a dead resolver can block
    getaddrinfo for 20 s and more), so the whole probe runs in a daemon thread and
    is abandoned after ``timeout`` seconds.
    """
    parsed = urlparse(url)
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
                answer.append(True)
        except Exception:  # any failure to connect (OSError, or a resolver gone wrong) means "no network"
            answer.append(False)

    thread = threading.Thread(target=probe, name="weightdist-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def not_cached_message(what: str, path: Path, url: str) -> str:
    return (f"weights for {what} are not cached and cannot be downloaded (offline): looked for {path}; "
            f"put {path.name} there (from {url}), set TORCH_HOME to a folder holding hub/checkpoints/{path.name}, "
            f"or pass the file path instead of the name")


def fetch(url: str, what: str, sha256: str | None = None) -> tuple[Path, Digest]:
    """Path of the cached weights file for ``url``, downloading only if the host answers, and its digest.

    The digest is checked against the hash prefix in the file's name (torch hub's convention) and,
    when ``sha256`` is given, against the full published digest: on download at once, for a cached
    file when the digest is first read (``fit`` reads it before fitting, a scan when it plans the
    model), so opening a model in every scan worker does not hash it each time."""
    path = cache_path(url)
    digest = Digest(checked_sha256, path, what, sha256)
    if not path.is_file():
        if not host_reachable(url):
            raise WeightsNotCachedError(not_cached_message(what, path, url))
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except Exception as exc:  # network and file-system errors come in many types; all mean "not available"
            reason = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise WeightsNotCachedError(f"{not_cached_message(what, path, url)} (download failed: {reason})") from None
        finally:
            socket.setdefaulttimeout(previous)
        digest.get()
    return path, digest


def checked_sha256(path: Path, what: str, published: str | None = None) -> str:
    """``path``'s sha256, or one line saying it is not the published file (see :func:`fetch`)."""
    sha = sha256_of(path)
    match = _HASH_IN_NAME.search(path.name)
    if match and not sha.startswith(match.group(1)):
        raise CheckpointError(f"{path}: sha256 {sha[:12]}… does not match the {match.group(1)} in its name; "
                              "the file is corrupt or not the published one; delete it and download again")
    if published is not None and sha != published:
        raise CheckpointError(f"{path}: sha256 {sha[:12]}… is not the published {published[:12]}… of {what}; "
                              "the file is corrupt or not the published one; delete it and download again")
    return sha
