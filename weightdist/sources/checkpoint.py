"""Read weights from local files without ever executing code from them.

Pickle-based files (.pth .pt .bin .th .ckpt) go through
``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers; anything that needs more (a ``__reduce__`` payload, a whole
pickled ``nn.Module``) is refused. ``.safetensors`` files and sharded
checkpoints are opened lazily so huge models stream one tensor at a time.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator

import torch

from ..errors import CheckpointError, one_line

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".th", ".ckpt")
SUFFIXES = PICKLE_SUFFIXES + (".safetensors",)
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json", ".pth.index.json")
# Keys under which training scripts nest the state dict, most specific first.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "params", "weights",
                   "state_dict_ema", "model_ema", "ema")
_ZIP_MAGIC = b"PK\x03\x04"
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2", "F8_E8M0")  # safetensors header names


def looks_like_file(spec: str) -> bool:
    if "/" in spec or os.sep in spec or spec.endswith(SUFFIXES + INDEX_SUFFIXES):
        return True
    try:
        return Path(spec).exists()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL byte: not a file here
        return False


def strip_prefix(name: str) -> str:
    return name[len("module."):] if name.startswith("module.") else name


def _check_path(path: Path) -> None:
    try:
        _check_path_unguarded(path)
    except CheckpointError:
        raise
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, a NUL byte in the name, ...
        text = str(path).replace("\0", "\\0")
        shown = text if len(text) <= 200 else f"{text[:100]}…{text[-40:]}"
        raise CheckpointError(f"{shown}: cannot open it ({getattr(exc, 'strerror', None) or one_line(exc)}); check the path") from None


def _check_path_unguarded(path: Path) -> None:
    if "\0" in str(path):
        raise ValueError("the name contains a NUL byte")
    if not path.exists():
        raise CheckpointError(f"no such file: {path}; check the path")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass a weights file (.pth/.pt/.bin/.safetensors) or an index .json inside it")
    if not path.is_file():  # a FIFO or device would block or never end
        raise CheckpointError(f"{path} is not a regular file (a pipe, socket or device); save the weights to a file and pass that")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied; make the file readable")
    if not str(path).endswith(SUFFIXES + INDEX_SUFFIXES):
        raise CheckpointError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; expected one of {', '.join(SUFFIXES)} or a *.index.json of shards")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or save did not finish")


def load_pickle_checkpoint(path: Path) -> Mapping[str, torch.Tensor]:
    """torch.load with weights_only=True, memory-mapped when the file is a zip checkpoint."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file ({exc.strerror or type(exc).__name__}); check its permissions") from None
    try:
        with warnings.catch_warnings():
            # A corrupt file makes torch warn (e.g. "Detected pickle protocol 218") before it fails; the
            # failure is reported on one line below, so the warnings would only be noise on stderr.
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=head == _ZIP_MAGIC)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "global" in text.lower() or "reduce" in text.lower():  # the pickle names Python code to call
            called = re.search(r"GLOBAL (\S+)", text)
            reason = f"it calls {called.group(1)}" if called else "it references Python code"
            raise CheckpointError(f"refusing to unpickle {path}: it needs code execution ({reason}); "
                                  "re-save it as a state_dict (torch.save(model.state_dict(), ...)) or as .safetensors") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_torch_reason(exc)})") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/ValueError/... for broken archives
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({_torch_reason(exc)})") from None
    return unwrap_state_dict(obj, path)


# torch's own advice (allow-listing globals, weights_only=False) would tell users to run a stranger's code.
_TORCH_ADVICE = ("weights_only", "safe_globals", "In PyTorch 2.6", "Please file an issue", "trusted source", "Check the documentation")


def _torch_reason(exc: BaseException) -> str:
    """torch's error without its advice: the sentences that describe what is wrong with the file."""
    sentences = re.split(r"(?<=[.:])\s+|\n+", str(exc))
    kept = [s for s in sentences if s.strip() and not any(a in s for a in _TORCH_ADVICE)]
    return one_line(" ".join(kept)) if kept else type(exc).__name__


def unwrap_state_dict(obj, path: Path | str) -> dict[str, torch.Tensor]:
    """The tensors of a bare state dict or of a training checkpoint dict, ``module.`` stripped.

    A known wrapper key (``state_dict``, ``model``, ...) wins; otherwise, when the top level
    holds no tensors itself and exactly one entry holds model tensors, that entry is the state
    dict. Optimizer states (``{'state': ..., 'param_groups': ...}``: Adam moments and the like)
    are never taken for weights. Non-tensor values (epochs, metrics, strings) are ignored.
    """
    if isinstance(obj, torch.Tensor):
        return {"tensor": obj}
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors; save model.state_dict() instead")
    for key in STATE_DICT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    else:
        if not any(isinstance(v, torch.Tensor) for v in obj.values()):
            holders = [v for v in obj.values() if isinstance(v, Mapping) and not _is_optimizer_state(v) and _has_tensors(v)]
            if len(holders) == 1:
                obj = holders[0]
    tensors = dict(_flatten(obj))
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors (keys: {', '.join(map(str, list(obj)[:5]))}); pass a file with model weights")
    return tensors


def _is_optimizer_state(obj: Mapping) -> bool:
    return "state" in obj and "param_groups" in obj


def _has_tensors(obj: Mapping, depth: int = 0) -> bool:
    return depth < 8 and any(isinstance(v, torch.Tensor) or (isinstance(v, Mapping) and not _is_optimizer_state(v) and _has_tensors(v, depth + 1))
                             for v in obj.values())


def _flatten(obj: Mapping, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    for key, value in obj.items():
        name = strip_prefix(f"{prefix}{key}")
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, Mapping) and not _is_optimizer_state(value):
            yield from _flatten(value, f"{name}.")


class SafetensorsFile(Mapping):
    """Lazy name -> tensor mapping over one .safetensors file: each access reads one tensor."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.path = path
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                slices = {strip_prefix(k): f.get_slice(k) for k in keys}
                # Header metadata, so callers can choose tensors before any data is read.
                self.dtypes = {k: sl.get_dtype() for k, sl in slices.items()}
                self.shapes = {k: tuple(sl.get_shape()) for k, sl in slices.items()}
        except Exception as exc:  # SafetensorError and friends
            raise CheckpointError(f"{path}: invalid safetensors file ({one_line(exc)}); the header or data is corrupt") from None
        self._names = {strip_prefix(k): k for k in keys}

    def __getitem__(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt") as f:
                return f.get_tensor(self._names[name])
        except KeyError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{self.path}: cannot read tensor {name!r} ({one_line(exc)}); the file is corrupt") from None

    def __iter__(self):
        return iter(self._names)

    def meta(self, name: str) -> tuple[tuple[int, ...], bool]:
        """(shape, is floating point) from the header alone."""
        return self.shapes[name], self.dtypes[name] in FLOAT_DTYPES

    def __len__(self) -> int:
        return len(self._names)


class ShardedCheckpoint(Mapping):
    """Lazy mapping over a Hugging Face style index (``weight_map``): one shard open at a time."""

    def __init__(self, index: Path) -> None:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            assert isinstance(weight_map, dict)
        except Exception as exc:
            raise CheckpointError(f"{index}: not a shard index with a 'weight_map' ({one_line(exc)})") from None
        self.index = index
        for file in set(weight_map.values()):
            if not isinstance(file, str) or Path(file).is_absolute() or ".." in Path(file).parts:
                raise CheckpointError(f"{index}: shard path {file!r} leaves the index's folder; shards must sit beside their index")
        self._shard_of = {strip_prefix(k): (k, index.parent / v) for k, v in weight_map.items()}
        missing = sorted({str(p) for _, p in self._shard_of.values() if not p.is_file()})
        if missing:
            raise CheckpointError(f"{index}: shard file {missing[0]} is missing; download every shard listed in the index")
        self._cache: tuple[Path, Mapping] | None = None

    def _shard(self, path: Path) -> Mapping:
        if self._cache is None or self._cache[0] != path:
            self._cache = None  # drop the previous shard before loading the next: one shard in memory
            _check_path(path)
            self._cache = (path, SafetensorsFile(path) if path.suffix == ".safetensors" else load_pickle_checkpoint(path))
        return self._cache[1]

    def __getitem__(self, name: str) -> torch.Tensor:
        key, path = self._shard_of[name]
        shard = self._shard(path)
        try:
            return shard[strip_prefix(key)]
        except KeyError:
            raise CheckpointError(f"{self.index}: lists {key!r} in {path.name}, but that shard does not hold it; "
                                  "the index and its shards do not match (download them again)") from None

    def has_float(self) -> bool:
        """Whether any tensor is floating point, reading one shard at a time (headers only for safetensors)."""
        for name in self:
            key, path = self._shard_of[name]
            shard, key = self._shard(path), strip_prefix(key)
            if key in shard and _is_float(shard, key):  # a safetensors shard answers from its header
                return True
        return False

    def __iter__(self):
        # Shard by shard, so streaming touches each file once.
        order = {name: i for i, name in enumerate(self._shard_of)}
        return iter(sorted(self._shard_of, key=lambda n: (str(self._shard_of[n][1]), order[n])))

    def __len__(self) -> int:
        return len(self._shard_of)


def open_weights(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """A name -> tensor mapping for any supported local file, read lazily where the format allows."""
    path = Path(path).expanduser()
    _check_path(path)
    name = path.name
    if name.endswith(INDEX_SUFFIXES):
        tensors = ShardedCheckpoint(path)
    elif name.endswith(".safetensors"):
        tensors = SafetensorsFile(path)
    else:
        tensors = load_pickle_checkpoint(path)
    if not (tensors.has_float() if isinstance(tensors, ShardedCheckpoint) else any(_is_float(tensors, k) for k in tensors)):
        raise CheckpointError(f"{path}: holds no floating-point tensors; nothing to analyse (pass a file with model weights)")
    return tensors


def _is_float(tensors: Mapping, key: str) -> bool:
    if isinstance(tensors, SafetensorsFile):  # from the header: no tensor data is read
        return tensors.dtypes[key] in FLOAT_DTYPES
    t = tensors[key]
    return t.is_floating_point() or t.is_quantized
