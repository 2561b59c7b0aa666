"""Crash-safe output: every file and every report folder appears whole or not at all.

A report is built in a hidden sibling folder and swapped into place with
renames, under an exclusive lock, so a killed run leaves the previous complete
report (or nothing) and two concurrent runs never interleave files.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import OutputError, WeightdistError


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    with _as_output_error(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def _as_output_error(out: Path) -> Iterator[None]:
    """A failed write (permissions, a full disk, a read-only file system) as one line naming ``out``.

    Only around our own writes: an OSError while reading weights is not an output problem."""
    try:
        yield
    except WeightdistError:  # already one line (some are OSError subclasses)
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}; choose another --out") from None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


# Every name a weightdist output folder can hold at its top level (fit, drift, compare, over-training,
# vae compare, vae train). A folder is ours to replace only if it holds nothing else.
OUTPUT_NAMES = frozenset({
    "report.md", "summary.json", "layers.csv", "comparisons.csv", "plots", "drift.csv", "drift.png", "init_check.csv",
    "compare.csv", "over_training.csv", "family_scores.csv", "results.csv", "latent_fits.csv", "density_sweep.csv",
    "plan.json", "samples.png", "reconstructions.png", "latent_2d.png", "ll_vs_dim.png", "ae_density.png",
})
CHECKPOINT_NAMES = frozenset({"model.safetensors", "config.json"})


def is_weightdist_output(folder: Path) -> bool:
    """True only for a folder weightdist wrote, holding nothing else: a report (its report.md says
    so on its first line) or a `vae train` checkpoint. A user's folder, or a downloaded model with
    config.json and model.safetensors, is never one."""
    names = {p.name for p in folder.iterdir()}
    if "report.md" in names and names <= OUTPUT_NAMES:
        with open(folder / "report.md", "rb") as f:
            return f.readline().startswith(b"# weightdist")
    if names == CHECKPOINT_NAMES:
        try:
            meta = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(meta, dict) and {"config", "history", "params"} <= set(meta)
    return False


def check_writable_dir(out: str | os.PathLike) -> Path:
    """Fail before any work if ``out`` cannot become a folder we can write in.

    A report replaces its folder whole, so an existing folder must be empty or a
    previous weightdist output: never a user's own folder (or the current one)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write report to {out}: it is a file, not a folder; choose another --out")
    if out.exists() and out.resolve() in (Path.cwd().resolve(), Path(out.resolve().anchor)):
        raise OutputError(f"cannot write report to {out}: the report replaces its folder whole; choose a new subfolder as --out")
    if out.is_dir() and any(out.iterdir()) and not is_weightdist_output(out):
        raise OutputError(f"cannot write report to {out}: the folder holds files weightdist did not write "
                          "(a report replaces its folder whole, so it only replaces its own); choose a new or empty --out")
    _check_creatable(out)
    return out


def check_writable_file(out: str | os.PathLike) -> Path:
    """Fail before any work if the single file ``out`` cannot be written (its folder is made if needed)."""
    out = Path(out)
    if out.is_dir():
        raise OutputError(f"cannot write {out}: it is a folder; pass a file name as --out")
    _check_creatable(out)
    return out


def _check_creatable(out: Path) -> None:
    """The nearest existing ancestor of ``out`` must be a folder we may write in."""
    probe_parent = out
    while not probe_parent.exists():
        probe_parent = probe_parent.parent
    if probe_parent != out and not probe_parent.is_dir():
        raise OutputError(f"cannot write report to {out}: {probe_parent} is a file, not a folder; choose another --out")
    folder = probe_parent if probe_parent.is_dir() else probe_parent.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write report to {out}: no write permission in {folder}; choose another --out")


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Refuse a second concurrent run into the same folder instead of interleaving files."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise OutputError(f"another weightdist run is writing to {out}; wait for it or choose another --out") from None
            raise
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``out`` whole.

    On any exception (or a kill) the staging folder is discarded and ``out``
    keeps its previous complete contents.
    """
    out = check_writable_dir(out)
    with contextlib.ExitStack() as held:  # the lock is held from staging to swap
        with _as_output_error(out):
            held.enter_context(output_lock(out))
            recover_interrupted(out)
            stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
            os.chmod(stage, 0o777 & ~_umask())
        try:
            yield stage  # errors of the work itself (reading weights, fitting) pass through unchanged
            with _as_output_error(out):
                _swap_into_place(stage, out)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def recover_interrupted(out: Path) -> None:
    """Clean up after a run killed mid-write (we hold the lock, so nobody else is writing).

    A kill between the two renames of ``_swap_into_place`` leaves the previous
    report under ``.<name>.old-*`` and nothing at ``out``: put it back.
    """
    for leftover in sorted(out.parent.glob(f".{out.name}.old-*")):
        if not out.exists():
            os.replace(leftover, out)
        else:
            shutil.rmtree(leftover, ignore_errors=True)
    for leftover in out.parent.glob(f".{out.name}.staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _swap_into_place(stage: Path, out: Path) -> None:
    old = None
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"cannot write report to {out}: it is a file, not a folder; choose another --out")
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.rmdir(old)
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
