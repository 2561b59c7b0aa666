"""GGUF files (llama.cpp's format), read with the ``gguf`` package's own reader.

``GGUFReader`` memory-maps the file, so opening reads only the header; each tensor is read
when asked for. F32/F16/BF16/F64 tensors are values; quantized ones (Q4_K, Q6_K, Q8_0, ...)
are dequantized with ``gguf.quants.dequantize`` and flagged ``quantized=<type>``: their values
sit on a grid, so their fits are reported but kept out of headline win counts.
"""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, WeightsNotCachedError, one_line
from .base import Digest, ModelInfo, OpenedModel, TensorInfo, register_source
from .files import FileFormatSource, file_sha256

SUFFIXES = (".gguf",)
# GGUF storage types that hold plain values, with the torch dtype name used in tables.
PLAIN_TYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
               "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64"}


def _gguf():
    try:
        import gguf
    except ImportError:
        raise WeightsNotCachedError("reading .gguf files needs the gguf package; install it with 'pip install gguf'") from None
    return gguf


# Fixed-size GGUF metadata value types (gguf.GGUFValueType) -> bytes; STRING (8) and ARRAY (9) are walked.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor-info record of a GGUF header: enough to find and decode its bytes."""

    name: str
    shape: tuple[int, ...]  # numpy/torch order (GGUF stores dims innermost first)
    ggml_type: int
    offset: int  # absolute, in the file
    n_bytes: int


class _Header:
    """A bounded cursor over a GGUF header: every read is checked against the file size."""

    def __init__(self, path: Path, view: memoryview) -> None:
        self.path, self.view, self.size = path, view, len(view)
        self.pos = 0

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise CheckpointError(f"{self.path}: not a readable GGUF file, truncated or corrupt (the header claims {n} more bytes "
                                  f"at offset {self.pos} of {self.size}); download or convert it again")
        self.pos += n

    def take(self, n: int) -> bytes:
        start = self.pos
        self.skip(n)
        return bytes(self.view[start:self.pos])

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "little")

    def string(self) -> bytes:
        return bytes(self.take(self.u64()))

    def value(self, vtype: int, depth: int = 0):
        """A metadata value (strings decoded, arrays skipped: tokenizer vocabularies are 10^5 entries)."""
        if vtype in _SCALAR_SIZES:
            raw = bytes(self.take(_SCALAR_SIZES[vtype]))
            return int.from_bytes(raw, "little") if vtype in (0, 2, 4, 10) else None
        if vtype == _STRING:
            return self.string().decode("utf-8", errors="replace")
        if vtype == _ARRAY and depth < 4:
            item, count = self.u32(), self.u64()
            if item in _SCALAR_SIZES:
                self.skip(count * _SCALAR_SIZES[item])  # bounds-checked, no loop
            else:
                for _ in range(count):  # strings or nested arrays; each consumes bytes, so EOF ends a lying count
                    self.value(item, depth + 1)
            return None
        raise CheckpointError(f"{self.path}: not a readable GGUF file (unknown metadata value type {vtype} at offset {self.pos}); "
                              "the file is corrupt or from a newer GGUF version (pip install -U gguf)")


def read_header(path: Path) -> tuple[dict, list[GGUFTensor]]:
    """(string/int metadata, tensor records) of a GGUF file, reading the header only.

    gguf's GGUFReader builds Python objects for every metadata array item (about 45 s for a
    262k-token vocabulary); scans open a model once per tensor, so the header is walked here
    with bounds checks and the arrays skipped. Types, sizes and dequantization stay gguf's.
    """
    gguf = _gguf()
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                return _parse_header(gguf, path, _Header(path, view))
            finally:
                view.release()
    except CheckpointError:
        raise
    except (OSError, ValueError) as exc:  # mmap of an unreadable file
        raise CheckpointError(f"{path}: cannot read the file ({one_line(exc)}); check the path and permissions") from None


def _parse_header(gguf, path: Path, h: _Header) -> tuple[dict, list[GGUFTensor]]:
    if bytes(h.take(4)) != b"GGUF":
        raise CheckpointError(f"{path}: not a readable GGUF file (no GGUF magic); pass a .gguf model file")
    version = h.u32()
    if version not in (2, 3):
        raise CheckpointError(f"{path}: GGUF version {version} is not supported (2 and 3 are; big-endian files show a huge number); "
                              "convert it with a current llama.cpp")
    n_tensors, n_kv = h.u64(), h.u64()
    meta: dict = {}
    for _ in range(n_kv):
        key = h.string().decode("utf-8", errors="replace")
        meta[key] = h.value(h.u32())
    records = []
    for _ in range(n_tensors):
        name = h.string().decode("utf-8", errors="replace")
        n_dims = h.u32()
        if n_dims > 8:
            raise CheckpointError(f"{path}: tensor {name!r} claims {n_dims} dimensions; the file is corrupt")
        dims = [h.u64() for _ in range(n_dims)]
        ggml_type, offset = h.u32(), h.u64()
        try:
            qtype = gguf.GGMLQuantizationType(ggml_type)
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise CheckpointError(f"{path}: tensor {name!r} has unknown type {ggml_type}; upgrade gguf (pip install -U gguf)") from None
        n = int(np.prod(dims, dtype=object)) if dims else 1
        records.append((name, tuple(int(d) for d in reversed(dims)), ggml_type, offset, n * type_size // block))
    alignment = meta.get("general.alignment") or gguf.GGUF_DEFAULT_ALIGNMENT
    if not isinstance(alignment, int) or alignment <= 0:
        raise CheckpointError(f"{path}: general.alignment is {alignment!r}; the file is corrupt")
    start = -(-h.pos // alignment) * alignment
    size = h.size
    tensors = []
    seen = set()
    for name, shape, ggml_type, offset, n_bytes in records:
        if name in seen:
            raise CheckpointError(f"{path}: tensor {name!r} is listed twice; the file is corrupt")
        seen.add(name)
        if start + offset + n_bytes > size:
            raise CheckpointError(f"{path}: tensor {name!r} lies beyond the end of the file (offset {start + offset}, "
                                  f"{n_bytes} bytes, file {size} bytes); the file is truncated, download it again")
        tensors.append(GGUFTensor(name, shape, ggml_type, start + offset, n_bytes))
    return meta, tensors


@dataclass(frozen=True)
class GGUFModel(OpenedModel):
    name: str
    source: str
    path: str | None
    sha256: str | None = field(repr=False, compare=False)  # lazy (a Digest): never hashed by repr or ==
    info: ModelInfo
    module: nn.Module | None = None
    _tensors: dict = field(default_factory=dict, repr=False, compare=False)  # name -> GGUFTensor

    def tensor_infos(self) -> list[TensorInfo]:
        gguf = _gguf()
        infos = []
        for t in self._tensors.values():
            kind = gguf.GGMLQuantizationType(t.ggml_type).name
            infos.append(TensorInfo(t.name, t.shape, PLAIN_TYPES[kind]) if kind in PLAIN_TYPES
                         else TensorInfo(t.name, t.shape, kind, quantized=kind))
        return infos

    def read(self, name: str) -> torch.Tensor:
        gguf = _gguf()
        t = self._tensors[name]
        qtype = gguf.GGMLQuantizationType(t.ggml_type)
        try:
            raw = np.memmap(self.path, dtype=np.uint8, mode="r", offset=t.offset, shape=(t.n_bytes,))
            if qtype.name in PLAIN_TYPES and qtype.name != "BF16":
                values = np.array(raw.view(np.dtype(PLAIN_TYPES[qtype.name]).newbyteorder("<"))).reshape(t.shape)
            else:
                blocks = raw.reshape(gguf.quants.quant_shape_to_byte_shape(t.shape, qtype)) if t.shape else raw
                values = gguf.quants.dequantize(blocks, qtype).reshape(t.shape)
        except NotImplementedError:
            raise CheckpointError(f"{self.path}: tensor {name!r} has type {qtype.name}, which the installed gguf cannot "
                                  "dequantize; upgrade gguf (pip install -U gguf) or leave it out with --exclude") from None
        except (ValueError, OSError) as exc:
            raise CheckpointError(f"{self.path}: cannot read tensor {name!r} ({one_line(exc)}); the file is corrupt") from None
        return torch.from_numpy(np.ascontiguousarray(values))


_HEADERS: dict[tuple[str, int, int], tuple[dict, list[GGUFTensor]]] = {}  # per process: scan workers reopen per tensor


def cached_header(path: Path) -> tuple[dict, list[GGUFTensor]]:
    """read_header, remembered by (real path, size, mtime) for the last few files (headers are small)."""
    st = path.stat()
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _HEADERS:
        if len(_HEADERS) >= 8:
            _HEADERS.pop(next(iter(_HEADERS)))
        _HEADERS[key] = read_header(path)
    return _HEADERS[key]


def open_gguf(path: Path, name: str | None = None, info: ModelInfo | None = None, source: str | None = None) -> GGUFModel:
    meta, tensors = cached_header(path)
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors (a vocabulary-only GGUF?); pass a model GGUF")
    text = {k: v for k, v in meta.items() if isinstance(v, str)}
    arch, licence, title = text.get("general.architecture"), text.get("general.license"), text.get("general.name")
    info = info or ModelInfo("unknown", "", licence or "unknown",
                             f"GGUF file {path.name}" + (f": {title}" if title else "") + (f" ({arch})" if arch else ""))
    return GGUFModel(name or path.name, source or "gguf file", str(path), Digest(file_sha256, path), info, None,
                     {t.name: t for t in tensors})


@register_source
class GGUFSource(FileFormatSource):
    name = "gguf"
    description = ".gguf files (F32/F16/BF16 values; quantized types dequantized and flagged)"
    suffixes, format = SUFFIXES, "GGUF"

    def open_path(self, path: Path) -> GGUFModel:
        return open_gguf(path)
