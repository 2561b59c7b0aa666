"""Pretrained weights through the torch hub cache, offline first.

A cached file is used as it is (after a sha256 check). A missing one is
downloaded only when the host answers within a few seconds; otherwise the
user gets one line naming the exact file, the folder we looked in, and how to
supply it. Nothing retries, so an offline machine fails in seconds, not minutes.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..errors import CheckpointError, WeightsNotCachedError

PROBE_TIMEOUT_S = 3.0
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
    """One short TCP connect: is there a network at all? (no retries, bounded time)"""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def not_cached_message(what: str, path: Path, url: str) -> str:
    return (f"weights for {what} are not cached and cannot be downloaded (offline): looked for {path}; "
            f"put {path.name} there (from {url}), set TORCH_HOME to a folder holding hub/checkpoints/{path.name}, "
            f"or pass the file path instead of the name")


def fetch(url: str, what: str) -> tuple[Path, str]:
    """Path and sha256 of the cached weights file for ``url``, downloading only if the host answers."""
    path = cache_path(url)
    if not path.is_file():
        if not host_reachable(url):
            raise WeightsNotCachedError(not_cached_message(what, path, url))
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)
        try:
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except Exception as exc:  # network errors come in many types; all mean "not available"
            raise WeightsNotCachedError(f"{not_cached_message(what, path, url)} (download failed: {exc})") from None
        finally:
            socket.setdefaulttimeout(previous)
    sha = sha256_of(path)
    match = _HASH_IN_NAME.search(path.name)
    if match and not sha.startswith(match.group(1)):
        raise CheckpointError(f"{path}: sha256 {sha[:12]}… does not match the {match.group(1)} in its name; "
                              "the file is corrupt or not the published one; delete it and download again")
    return path, sha
