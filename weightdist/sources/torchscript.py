"""TorchScript archives (``torch.jit.save``), read without running any of their code.

``torch.jit.load`` would compile and run the archive's ``code/``; instead the module tree in
``data.pkl`` is read with a restricted unpickler that rebuilds only tensors (from the archive's
``data/`` entries), plain containers, and inert stand-ins for the scripted classes. Any other
global the pickle names is refused with one line. Opening reads no tensor data: each tensor
is a record (storage key, dtype, offset, shape, stride) until it is read.
"""
from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from ..errors import CheckpointError, one_line
from .base import Digest, ModelInfo, OpenedModel, TensorInfo, dtype_name, register_source
from .extract import default_max_tensor_bytes
from .files import FileFormatSource, file_sha256

SUFFIXES = (".pt", ".pth", ".jit", ".torchscript", ".ptl", ".zip")
# Legacy typed-storage class names in TorchScript pickles -> dtypes.
STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                  "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                  "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
                  "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128}
MAX_PICKLE_BYTES = 256 << 20  # data.pkl holds structure only; anything larger is not a model tree


def is_torchscript_archive(path: Path) -> bool:
    """A zip whose entries include TorchScript's ``code/`` or ``constants.pkl`` (a torch.save zip has neither)."""
    try:
        if not path.is_file() or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: torch.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRecord:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _ScriptObject:
    """An inert stand-in for a scripted class instance: keeps its pickled state, runs nothing."""

    def __setstate__(self, state) -> None:
        self.__dict__["_state"] = state


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor whose storage is not an archive entry")
    return _TensorRecord(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    return data


def _identity_list(values, *rest):
    return list(values)


def _restore_type_tag(value, type_str):
    return value


SAFE_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch.jit._pickle", "build_intlist"): _identity_list,
    ("torch.jit._pickle", "build_doublelist"): _identity_list,
    ("torch.jit._pickle", "build_boollist"): _identity_list,
    ("torch.jit._pickle", "build_tensorlist"): _identity_list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
}


class _ArchiveUnpickler(pickle.Unpickler):
    """Rebuilds tensor records, containers and inert script objects; refuses every other global."""

    _stub_types: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module == "__torch__" or module.startswith("__torch__."):
            if module.startswith("__torch__.torch.classes"):  # C++ custom classes (packed quantized params, ...)
                raise pickle.UnpicklingError(f"GLOBAL {module}.{name} (a C++ custom class)")
            qualified = f"{module}.{name}"
            return self._stub_types.setdefault(qualified, type(name, (_ScriptObject,), {"__qualname__": qualified}))
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"an unknown persistent id {str(pid)[:60]}")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"storage of unknown type {dtype!r}")
        return _Storage(str(key), dtype, int(numel))


def _walk(obj, prefix: str, depth: int = 0, seen: set[int] | None = None) -> Iterator[tuple[str, _TensorRecord]]:
    """(name, record) of every tensor in the tree. Each container is walked once (``seen`` holds ids):
    a pickle's memo lets a 20 KB file nest ``x = [x, x]`` 80 deep, 2^80 paths if walked as a tree."""
    seen = set() if seen is None else seen
    if depth > 64:
        return
    if isinstance(obj, _TensorRecord):
        yield prefix, obj
        return
    if not isinstance(obj, (_ScriptObject, dict, list, tuple)) or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, _ScriptObject):
        yield from _walk(obj.__dict__.get("_state"), prefix, depth + 1, seen)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, str):
                yield from _walk(value, f"{prefix}.{key}" if prefix else key, depth + 1, seen)
    else:
        for i, value in enumerate(obj):
            yield from _walk(value, f"{prefix}.{i}" if prefix else str(i), depth + 1, seen)


@dataclass(frozen=True)
class TorchScriptModel(OpenedModel):
    name: str
    source: str
    path: str | None
    sha256: str | None = field(repr=False, compare=False)  # lazy (a Digest): never hashed by repr or ==
    info: ModelInfo
    module: nn.Module | None = None
    _records: dict = field(default_factory=dict, repr=False, compare=False)  # name -> _TensorRecord
    _prefix: str = ""

    def tensor_infos(self) -> list[TensorInfo]:
        return [TensorInfo(n, r.size, dtype_name(r.storage.dtype)) for n, r in self._records.items()]

    def storage_keys(self) -> dict[str, tuple]:
        return {n: (r.storage.key, r.storage.dtype, r.offset, r.size, r.stride) for n, r in self._records.items()}

    def read(self, name: str) -> torch.Tensor:
        """The tensor as a view of the bytes it spans: only those bytes are decompressed (a deflated
        entry may claim gigabytes in a small file) and a stride-0 view is never expanded here."""
        record = self._records[name]
        storage = record.storage
        itemsize = torch.empty(0, dtype=storage.dtype).element_size()
        if any(s < 0 for s in record.size) or any(s < 0 for s in record.stride) or record.offset < 0:
            raise CheckpointError(f"{self.path}: tensor {name!r} has a negative size, stride or offset; the archive is corrupt")
        if len(record.stride) != len(record.size):
            raise CheckpointError(f"{self.path}: tensor {name!r} has {len(record.size)} sizes but {len(record.stride)} strides; the archive is corrupt")
        if math.prod(record.size) >= 2**63:  # torch counts elements in int64
            raise CheckpointError(f"{self.path}: tensor {name!r} claims {math.prod(record.size):,} elements, more than any "
                                  "tensor can hold; the archive is corrupt")
        last = record.offset + sum((n - 1) * s for n, s in zip(record.size, record.stride)) if all(record.size) else -1
        if last >= storage.numel:
            raise CheckpointError(f"{self.path}: tensor {name!r} reaches element {last} of a {storage.numel}-element storage "
                                  "(its shape and strides lie); the archive is corrupt")
        span = (last + 1) * itemsize
        if span > default_max_tensor_bytes():
            raise CheckpointError(f"{self.path}: tensor {name!r} spans {span:,} bytes of its storage, over the "
                                  f"{default_max_tensor_bytes():,}-byte limit; the archive is not one this machine can read")
        with zipfile.ZipFile(self.path) as z:
            entry = f"{self._prefix}data/{storage.key}"
            try:
                info = z.getinfo(entry)
            except KeyError:
                raise CheckpointError(f"{self.path}: tensor {name!r} needs archive entry {entry}, which is missing; the archive is corrupt") from None
            if info.file_size != storage.numel * itemsize:
                raise CheckpointError(f"{self.path}: archive entry {entry} holds {info.file_size} bytes, not the "
                                      f"{storage.numel * itemsize} its tensor {name!r} needs; the archive is corrupt")
            try:
                with z.open(info) as f:
                    raw = bytearray(f.read(span)) if span > 0 else bytearray()
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise CheckpointError(f"{self.path}: cannot read archive entry {entry} ({one_line(exc)}); the archive is corrupt") from None
        if len(raw) < span:
            raise CheckpointError(f"{self.path}: archive entry {entry} ends after {len(raw)} bytes; the archive is truncated")
        flat = torch.frombuffer(raw, dtype=storage.dtype) if raw else torch.empty(0, dtype=storage.dtype)
        return flat.as_strided(record.size, record.stride, record.offset)


def open_torchscript(path: Path, name: str | None = None, info: ModelInfo | None = None, source: str | None = None) -> TorchScriptModel:
    try:
        with zipfile.ZipFile(path) as z:
            pickles = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pickles:
                raise CheckpointError(f"{path}: a zip without a TorchScript data.pkl; pass a torch.jit.save archive")
            entry = z.getinfo(pickles[0])
            if entry.file_size > MAX_PICKLE_BYTES:
                raise CheckpointError(f"{path}: data.pkl is {entry.file_size} bytes, too large for a module tree; the archive is not a model")
            data = z.read(entry)
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable TorchScript archive ({one_line(exc)})") from None
    prefix = pickles[0][: -len("data.pkl")]
    try:
        tree = _ArchiveUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: TorchScript archive needs more than tensors to rebuild ({one_line(exc, 100)}); we do not run "
                              "archive code: load it in a trusted session and save model.state_dict() as .safetensors instead") from None
    except Exception as exc:  # truncated or malformed pickle stream
        raise CheckpointError(f"{path}: corrupt TorchScript data.pkl ({type(exc).__name__}: {one_line(exc, 100)})") from None
    records = dict(_walk(tree, ""))
    if not records:
        raise CheckpointError(f"{path}: the TorchScript archive holds no tensors in its module tree; nothing to analyse")
    info = info or ModelInfo(provenance=f"TorchScript archive {path.name} (tensors read without running its code)")
    return TorchScriptModel(name or path.name, source or "torchscript archive", str(path), Digest(file_sha256, path), info, None, records, prefix)


@register_source
class TorchScriptSource(FileFormatSource):
    name = "torchscript"
    description = "torch.jit.save archives (tensors read from data.pkl without running the archive's code)"
    suffixes, format = SUFFIXES, "TorchScript"

    def can_open(self, spec: str) -> bool:
        """``.pt`` is shared with pickled checkpoints: only a zip holding TorchScript's layout is ours."""
        try:
            return super().can_open(Path(spec).expanduser().name) and is_torchscript_archive(Path(spec).expanduser())
        except (OSError, ValueError):
            return False

    def open_path(self, path: Path) -> TorchScriptModel:
        return open_torchscript(path)
