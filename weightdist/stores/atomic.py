"""Crash-safe output: every file and every report folder appears whole or not at all.

A report is built in a hidden sibling folder and swapped into place, under an
exclusive per-target lock, so concurrent runs never interleave and a run killed
at any point leaves exactly one complete report (the previous one or the new one).

The protocol, for a target whose real path is ``P/name``:

1. lock ``P/.name.weightdist-lock`` (flock; the kernel drops it when the process dies);
2. recover from a killed predecessor, by exact names only (never a glob on user text):
   ``P/.name.weightdist-old`` is put back if ``P/name`` is missing, else removed;
   ``P/.name.weightdist-staging`` is removed;
3. build the report in ``P/.name.weightdist-staging``, then write its manifest
   (``.weightdist-manifest.json``: every file weightdist wrote, with size and sha256);
4. swap: one atomic ``renameat2(RENAME_EXCHANGE)`` of staging and target where the
   kernel offers it (the target is never missing), else ``name -> .name.weightdist-old``,
   ``staging -> name`` (a kill between the two is undone by step 2);
5. remove what now holds the previous report.

A folder is "ours" to replace only if its manifest lists every file in it, unchanged:
no global list of names, and a user's file anywhere in it (``plots/`` included) makes
the whole folder theirs.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import OutputError, WeightdistError
from ..untrusted import UntrustedFileError, read_capped

MANIFEST = ".weightdist-manifest.json"
MANIFEST_LIMIT = 16 * 2**20
_LOCK, _STAGING, _OLD = ".weightdist-lock", ".weightdist-staging", ".weightdist-old"


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


# --- whose folder is it? -----------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _walk_files(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative posix path, lstat) of every entry below ``folder`` that is not a folder; links not followed."""
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            for rel, sub in _walk_files(Path(entry.path)):
                yield f"{entry.name}/{rel}", sub
        else:
            yield entry.name, info


def manifest_bytes(folder: Path) -> bytes:
    """The manifest of a staging folder: every file weightdist wrote there, with its size and sha256."""
    files = {}
    for rel, info in _walk_files(folder):
        if rel != MANIFEST:
            files[rel] = {"bytes": info.st_size, "sha256": _sha256((folder / rel).read_bytes())}
    return (json.dumps({"written_by": "weightdist", "manifest_version": 1, "files": files}, indent=1, sort_keys=True) + "\n").encode()


def foreign_entry(folder: Path) -> str | None:
    """The first entry of ``folder`` that weightdist did not write (``None`` when the folder is ours).

    Ours means: its manifest lists every file, with the size and sha256 weightdist wrote. A folder
    from before manifests existed is recognised by :func:`_legacy_foreign_entry`."""
    manifest_path = folder / MANIFEST
    if not os.path.lexists(manifest_path):
        return _legacy_foreign_entry(folder)
    try:
        manifest = json.loads(read_capped(manifest_path, MANIFEST_LIMIT))
        files = manifest["files"]
        if manifest.get("written_by") != "weightdist" or not isinstance(files, dict):
            raise ValueError("not a weightdist manifest")
    except (UntrustedFileError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return MANIFEST
    for rel, info in _walk_files(folder):
        if rel == MANIFEST:
            continue
        entry = files.get(rel)
        if not isinstance(entry, dict) or not stat.S_ISREG(info.st_mode) or entry.get("bytes") != info.st_size:
            return rel
        try:
            if _sha256(read_capped(folder / rel, info.st_size)) != entry.get("sha256"):
                return rel  # edited since weightdist wrote it: the edits are the user's
        except UntrustedFileError:
            return rel
    return None


_LEGACY_SUFFIXES = (".md", ".csv", ".json", ".png")


def _legacy_foreign_entry(folder: Path) -> str | None:
    """Report folders written before manifests: ``report.md`` starts with '# weightdist', every top-level
    file is a table, figure or text weightdist writes, and every file in a subfolder is one its report.md
    links to (so a user's file in ``plots/`` is never taken for ours)."""
    try:
        head = read_capped(folder / "report.md", MANIFEST_LIMIT)
    except UntrustedFileError:
        return "report.md" if os.path.lexists(folder / "report.md") else "(no report.md or manifest)"
    if not head.startswith(b"# weightdist"):
        return "report.md"
    text = head.decode("utf-8", "replace")
    for rel, info in _walk_files(folder):
        if not stat.S_ISREG(info.st_mode) or not rel.endswith(_LEGACY_SUFFIXES):
            return rel
        if "/" in rel and f"({rel})" not in text:
            return rel
    return None


def is_weightdist_output(folder: Path) -> bool:
    """True only for a folder weightdist wrote, holding nothing else (see :func:`foreign_entry`)."""
    return Path(folder).is_dir() and foreign_entry(Path(folder)) is None


# --- checks before any work -------------------------------------------------------------------------


def _real(out: Path) -> Path:
    """The target's real path: ``d/../d``, ``./d`` and a symlink to ``d`` all name one lock and one folder."""
    return Path(os.path.realpath(out))


def _reserved(name: str) -> bool:
    return name.endswith((_LOCK, _STAGING, _OLD))


def check_path_name(out: Path) -> None:
    """An --out no file system can hold (a NUL byte, a name past NAME_MAX) is a one-line error, not an OSError later."""
    if "\0" in str(out):
        raise OutputError(f"cannot write to {str(out)!r}: a path cannot hold a NUL byte; choose another --out")
    limit = 255
    try:
        limit = os.pathconf(_existing_parent(out), "PC_NAME_MAX")
    except (OSError, ValueError):
        pass
    # Staging and parked copies add a suffix to the last name (.<name>.weightdist-staging): leave room for it.
    room = max(len(_STAGING), len(_OLD), len(_LOCK)) + 2
    for part in out.parts:
        if len(os.fsencode(part)) + (room if part == out.name else 0) > limit:
            raise OutputError(f"cannot write to {out}: the name {part[:40]!r}… is longer than this file system allows "
                              f"({limit} bytes, less {room} for weightdist's working suffix); choose a shorter --out")


def _existing_parent(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")


def check_writable_dir(out: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Fail before any work if ``out`` cannot become a folder we can write in.

    A report replaces its folder whole, so an existing folder must be empty or a
    previous weightdist output: never a user's own folder (or the current one), and never one
    of the command's ``inputs`` (a report being compared) or a folder holding or inside one."""
    out = Path(out)
    check_path_name(out)
    real = _real(out)
    for item in inputs:
        source = _real(Path(item))
        if source == real or real in source.parents or source in real.parents:
            raise OutputError(f"cannot write report to {out}: it would replace the input {item}; choose another --out")
    if _reserved(real.name):
        raise OutputError(f"cannot write report to {out}: names ending in {_STAGING}, {_OLD} or {_LOCK} are weightdist's "
                          "own working names; choose another --out")
    if real.exists() and not real.is_dir():
        raise OutputError(f"cannot write report to {out}: it is a file, not a folder; choose another --out")
    if real.exists() and real in (Path.cwd().resolve(), Path(real.anchor)):
        raise OutputError(f"cannot write report to {out}: the report replaces its folder whole; choose a new subfolder as --out")
    if real.is_dir() and any(real.iterdir()):
        foreign = foreign_entry(real)
        if foreign is not None:
            raise OutputError(f"cannot write report to {out}: the folder holds files weightdist did not write or that were "
                              f"changed since (first: {foreign!r}); a report replaces its folder whole, so it only replaces "
                              "its own; choose a new or empty --out")
    _check_creatable(real)
    return out


def check_writable_file(out: str | os.PathLike) -> Path:
    """Fail before any work if the single file ``out`` cannot be written (its folder is made if needed)."""
    out = Path(out)
    check_path_name(out)
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


# --- the lock, recovery and the swap ----------------------------------------------------------------


def lock_path(out: str | os.PathLike) -> Path:
    real = _real(Path(out))
    return real.parent / f".{real.name}{_LOCK}"


def staging_path(out: str | os.PathLike) -> Path:
    real = _real(Path(out))
    return real.parent / f".{real.name}{_STAGING}"


def old_path(out: str | os.PathLike) -> Path:
    real = _real(Path(out))
    return real.parent / f".{real.name}{_OLD}"


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Refuse a second concurrent run into the same folder (however spelled) instead of interleaving files.

    The lock file is removed when the run ends (it is left behind only by a killed run, and reused).
    Removing it is safe because a run that locked a file checks it is still the one at the path,
    and starts over if another run removed or replaced it in between."""
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise OutputError(f"another weightdist run is writing to {out}; wait for it or choose another --out") from None
            raise
        held = os.fstat(fd)
        try:
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)  # the file we locked was removed by the run that just finished: lock the new one
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def recover_interrupted(out: Path) -> None:
    """Clean up after a run killed mid-write (we hold the lock, so nobody else is writing).

    Only the two exact working names of this target are touched, and only when they are
    real folders (a symlink planted there is left alone, never followed)."""
    real, old, stage = _real(out), old_path(out), staging_path(out)
    if _is_real_dir(old):
        if not os.path.lexists(real):
            os.replace(old, real)  # killed between the two renames of the fallback swap: put it back
        else:
            shutil.rmtree(old)
    if _is_real_dir(stage):
        shutil.rmtree(stage)


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``out`` whole.

    On any exception (or a kill) the staging folder is discarded and ``out``
    keeps its previous complete contents.
    """
    out = check_writable_dir(out)
    stage = staging_path(out)
    with contextlib.ExitStack() as held:  # the lock is held from staging to swap
        with _as_output_error(out):
            held.enter_context(output_lock(out))
            recover_interrupted(out)
            check_writable_dir(out)  # again under the lock: the folder may have changed while we worked
            os.mkdir(stage, 0o777)
        try:
            yield stage  # errors of the work itself (reading weights, fitting) pass through unchanged
            with _as_output_error(out):
                write_bytes(stage / MANIFEST, manifest_bytes(stage))
                _swap_into_place(stage, _real(out))
        finally:
            if _is_real_dir(stage):
                shutil.rmtree(stage, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2); False where the kernel or libc cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_into_place(stage: Path, real: Path) -> None:
    if os.path.lexists(real):
        if not _is_real_dir(real):
            raise OutputError(f"cannot write report to {real}: it is not a folder any more; choose another --out")
        if not _exchange(stage, real):  # staging now holds the previous report, removed by the caller
            old = old_path(real)
            os.replace(real, old)
            os.replace(stage, real)
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, real)
    with contextlib.suppress(OSError):  # make the renames durable
        fd = os.open(real.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
