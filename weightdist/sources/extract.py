"""Flatten a model's tensors into per-layer records: name, kind, shape, fan-in, float64 values.

Kinds come from the owning module when there is one (Conv*, Linear,
Embedding, norm layers) and from names and shapes for a bare state dict.
Layers are produced one at a time so a huge checkpoint streams.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, OptionError, UnknownNameError
from ..core.registry import unknown_name_message
from .base import FLOAT_DTYPE_NAMES, LoadedModel, OpenedModel

KINDS = ("conv", "linear", "embedding", "norm", "bias", "other")
DEFAULT_KINDS = ("conv", "linear", "embedding")
_NORM_NAME = re.compile(r"(^|[._])(norm|bn|ln|gn|layernorm|layer_norm|batchnorm|groupnorm)\d*($|[._])", re.IGNORECASE)
_MODULE_KINDS: tuple[tuple[type, str], ...] = (
    (nn.modules.conv._ConvNd, "conv"),
    (nn.Linear, "linear"),
    (nn.Bilinear, "linear"),
    (nn.MultiheadAttention, "linear"),
    (nn.Embedding, "embedding"),
    (nn.EmbeddingBag, "embedding"),
    (nn.modules.batchnorm._NormBase, "norm"),
    (nn.LayerNorm, "norm"),
    (nn.GroupNorm, "norm"),
)


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str
    shape: tuple[int, ...]
    numel: int
    fan_in: int | None
    dtype: str
    values: np.ndarray  # flat float64 (empty when the tensor is not analysable)
    subsampled_from: int | None = None
    note: str = ""
    quantized: str | None = None  # the quantization type (GGUF "Q4_K", torch "qint8") when values sit on a grid


def _module_kind(module: nn.Module) -> str:
    return next((kind for cls, kind in _MODULE_KINDS if isinstance(module, cls)), "other")


def kinds_from_module(model: nn.Module) -> dict[str, str]:
    kinds = {}
    for module_name, module in model.named_modules():
        kind = _module_kind(module)
        for pname, _ in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            full = f"{module_name}.{pname}" if module_name else pname
            kinds[full] = "bias" if pname.endswith("bias") else kind
    return kinds


def kind_from_name(name: str, shape: tuple[int, ...]) -> str:
    """Best guess for a bare state dict: names and shapes are all there is."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf.endswith("bias"):
        return "bias"
    if "buffer" in leaf.lower():  # a named buffer (e.g. Silero's fixed STFT basis), not a learned weight
        return "other"
    if _NORM_NAME.search(name) and len(shape) <= 1:
        return "norm"
    if ("embed" in name.lower() or "token_embd" in name.lower()) and len(shape) == 2:  # token_embd: GGUF's name
        return "embedding"
    if len(shape) >= 3:
        return "conv"
    if len(shape) == 2:
        return "linear"
    return "other"


def fan_in(kind: str, shape: tuple[int, ...]) -> int | None:
    if kind in ("conv", "linear") and len(shape) >= 2:
        return int(np.prod(shape[1:]))
    return None


def to_float64(t: torch.Tensor) -> tuple[np.ndarray, str]:
    """Exact float64 copy of a float tensor, never downcast. float16, bfloat16 and float8 widen to
    float64 exactly in one step: a float32 stop on the way would add half the float64 size to the peak."""
    note = ""
    if t.is_quantized:
        t, note = t.dequantize(), "quantized tensor, dequantized"
    return t.detach().cpu().double().reshape(-1).numpy(), note


def as_opened(model) -> OpenedModel:
    """Any accepted input as an OpenedModel: an OpenedModel as is, an nn.Module, or a state dict."""
    if isinstance(model, OpenedModel):
        return model
    if isinstance(model, nn.Module):
        kind = type(model).__name__
        return LoadedModel(kind, f"in-memory {kind}", None, None, model, model.state_dict(keep_vars=False))
    if isinstance(model, Mapping):
        return LoadedModel("state_dict", "in-memory state dict", None, None, None, model)
    raise TypeError(f"model_or_state_dict: expected an nn.Module, a state dict or an opened model, got {type(model).__name__}")


def _compile(arg: str, pattern: str | None):
    """--include/--exclude as an RE2 pattern: matching time is linear in the (file-supplied) name, so no
    pattern can hang on a hostile tensor name; Python-only syntax (backreferences, look-around) is refused."""
    if pattern is None:
        return None
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would also print the error to stderr, under our one line
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise OptionError(f"--{arg}: {pattern!r} is not a pattern RE2 accepts ({reason}); backreferences and look-around "
                          "are not supported, so name-based filters always run in linear time: rewrite the pattern") from None


# The lower bound of each numeric selection knob, None where None means "no limit". The one place these are
# checked: extraction calls check_selection, and so does FitOptions for the same knobs.
SELECTION_BOUNDS = {"min_size": (1, False), "max_per_layer": (8, True), "seed": (0, False), "max_tensor_bytes": (8, True)}


def check_int(name: str, value, low: int) -> None:
    """The one integer-option check (selection knobs, bootstrap sizes, --workers): an OptionError naming the fix."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise OptionError(f"{name} must be an integer >= {low}, got {value!r}")


def check_selection(**values) -> None:
    """Raise an OptionError naming the fix for any selection knob (see SELECTION_BOUNDS) out of range."""
    for name, value in values.items():
        low, none_ok = SELECTION_BOUNDS[name]
        if not (value is None and none_ok):
            check_int(name, value, low)


def _normalise_kinds(kinds) -> tuple[str, ...]:
    if isinstance(kinds, str):  # "conv,linear" from a command line
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    kinds = tuple(kinds)
    if not kinds:
        raise OptionError(f"kinds: no layer kind given; choose one or more of {', '.join(KINDS)}")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise OptionError(f"kinds: unknown kind(s) {', '.join(sorted(unknown))}; choose from {', '.join(KINDS)}")
    return kinds


SKIP_REASONS = ("non-tensor values", "integer, boolean or complex tensors", "tensors filtered by name (--include/--exclude)",
                "float tensors of unselected kinds (--kinds)", "tensors below --min-size",
                "tied tensors (the same storage, offset, shape and strides as an analysed one)")


def _alias_key(tensor) -> tuple | None:
    """What makes two in-memory tensors the same weights: one storage seen the same way (tied weights,
    or a file holding many views of one storage, analysed once instead of once per view)."""
    if not isinstance(tensor, torch.Tensor) or tensor.is_quantized or tensor.device.type == "meta" or tensor.layout != torch.strided:
        return None
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)


@dataclass(frozen=True)
class LayerInfo:
    """A selected layer as known before its values are read: what a scan schedules and a worker reads."""

    name: str
    kind: str
    shape: tuple[int, ...]
    numel: int
    fan_in: int | None
    dtype: str
    quantized: str | None = None

    @property
    def is_float(self) -> bool:
        return self.quantized is not None or self.dtype in FLOAT_DTYPE_NAMES


def layer_infos(model, kinds=DEFAULT_KINDS, include: str | None = None, exclude: str | None = None,
                min_size: int = 1, skipped: Counter | None = None) -> list[LayerInfo]:
    """The layers :func:`iter_layers` would yield, from names, shapes and dtypes alone (no values read).

    ``skipped``, when given, counts the tensors left out, by reason (one of ``SKIP_REASONS``).
    """
    skipped = Counter() if skipped is None else skipped
    check_selection(min_size=min_size)
    kinds = _normalise_kinds(kinds)
    inc, exc = _compile("include", include), _compile("exclude", exclude)
    opened = as_opened(model)
    module_kinds = kinds_from_module(opened.module) if isinstance(opened.module, nn.Module) else {}
    hints = opened.kind_hints()
    infos = opened.tensor_infos()
    mapping = opened.as_mapping() if isinstance(opened, LoadedModel) else None
    if mapping is not None and len(mapping) > len(infos):  # epochs, strings, ... in a state dict
        skipped[SKIP_REASONS[0]] += len(mapping) - len(infos)
    in_memory = mapping if isinstance(mapping, dict) else None  # a lazy file would read the tensor to answer
    file_aliases = opened.storage_keys() if in_memory is None else {}  # the same, from a file's own records
    seen_storage: set[tuple] = set()
    selected = []
    for t in infos:
        if (inc and not inc.search(t.name)) or (exc and exc.search(t.name)):
            skipped[SKIP_REASONS[2]] += 1
            continue
        kind = _kind(t.name, t.shape, t.is_float, module_kinds, hints)
        reason = _skip_reason(kind, t.is_float, t.numel, kinds, min_size)
        if reason:
            skipped[reason] += 1
            continue
        alias = (None if not t.is_float else _alias_key(in_memory.get(t.name)) if in_memory is not None
                 else file_aliases.get(t.name))
        if alias is not None:
            if alias in seen_storage:
                skipped[SKIP_REASONS[5]] += 1
                continue
            seen_storage.add(alias)
        selected.append(LayerInfo(t.name, kind, t.shape, t.numel, fan_in(kind, t.shape) if t.is_float else None, t.dtype, t.quantized))
    return selected


def default_max_tensor_bytes() -> int:
    """The default --max-tensor-bytes: 16 GiB, or half of this machine's RAM if that is less."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 32 * 2**30
    return int(min(16 * 2**30, ram // 2))


def check_materialised_bytes(layer: LayerInfo, max_per_layer: int | None, max_tensor_bytes: int | None) -> None:
    """Refuse, before reading, a layer whose float64 copy would pass the limit.

    The size comes from the shape alone, so a tiny file whose tensor is a stride-0 view claiming
    10^12 elements is refused at once instead of asking for terabytes."""
    limit = default_max_tensor_bytes() if max_tensor_bytes is None else max_tensor_bytes
    kept = min(layer.numel, max_per_layer) if max_per_layer is not None else layer.numel
    need = kept * 8
    if need > limit:
        raise CheckpointError(
            f"tensor {layer.name[:200]!r} ({'x'.join(map(str, layer.shape))} = {layer.numel:,} values) would need "
            f"{need / 2**30:,.1f} GiB as float64, over the {limit / 2**30:,.1f} GiB limit; pass --max-per-layer N to analyse "
            "a seeded subsample, or raise --max-tensor-bytes if this machine has the memory")


def _gather(tensor: torch.Tensor, index: np.ndarray) -> torch.Tensor:
    """The elements at row-major positions ``index``, read through the tensor's strides: a view of a
    shared storage (or a stride-0 view) is never copied whole to be subsampled."""
    tensor = tensor.detach()
    if tensor.is_contiguous():
        return tensor.reshape(-1)[torch.from_numpy(index)]
    coords = np.unravel_index(index, tuple(tensor.shape))
    positions = np.full(index.shape, tensor.storage_offset(), dtype=np.int64)
    for c, s in zip(coords, tensor.stride()):
        positions += c.astype(np.int64) * s
    storage = torch.as_strided(tensor, (int(positions.max()) + 1,), (1,), 0)  # the storage as 1-D, no copy
    return storage[torch.from_numpy(positions)]


def read_layer(model, layer: LayerInfo | str, max_per_layer: int | None = None, seed: int = 0,
               max_tensor_bytes: int | None = None) -> Layer:
    """One layer's values as a :class:`Layer`: reads that tensor only.

    ``layer`` is a LayerInfo from :func:`layer_infos` or a tensor name (its kind is then found
    the same way). With ``max_per_layer`` the subsample is drawn before the float64 conversion,
    seeded by ``seed`` and the layer's name, so the result does not depend on reading order.
    A layer whose float64 copy would pass ``max_tensor_bytes`` (default :func:`default_max_tensor_bytes`)
    is refused before it is read.
    """
    check_selection(max_per_layer=max_per_layer, seed=seed, max_tensor_bytes=max_tensor_bytes)
    opened = as_opened(model)
    if isinstance(layer, str):
        info = next((t for t in opened.tensor_infos() if t.name == layer), None)
        if info is None:
            raise UnknownNameError(unknown_name_message("tensor", layer, [t.name for t in opened.tensor_infos()], f"in {opened.name}"))
        module_kinds = kinds_from_module(opened.module) if isinstance(opened.module, nn.Module) else {}
        kind = _kind(info.name, info.shape, info.is_float, module_kinds, opened.kind_hints())
        layer = LayerInfo(info.name, kind, info.shape, info.numel, fan_in(kind, info.shape) if info.is_float else None,
                          info.dtype, info.quantized)
    if not layer.is_float:
        what = "bool" if layer.dtype == "bool" else "complex" if layer.dtype.startswith("complex") else "integer"
        return Layer(layer.name, layer.kind, layer.shape, layer.numel, None, layer.dtype, np.empty(0),
                     note=f"{what} buffer ({layer.dtype}), not analysed")
    check_materialised_bytes(layer, max_per_layer, max_tensor_bytes)
    tensor = opened.read(layer.name)
    layout_note = ""
    if tensor.device.type == "meta":  # saved from a model built on the meta device: shapes without values
        return Layer(layer.name, layer.kind, layer.shape, layer.numel, None, layer.dtype, np.empty(0),
                     note="meta tensor (saved without values), not analysed")
    if tensor.layout != torch.strided:  # sparse COO/CSR: its values are the dense tensor's (the size checked above)
        tensor, layout_note = tensor.to_dense(), f"sparse tensor ({str(tensor.layout).removeprefix('torch.')}), densified"
    subsampled_from = None
    if max_per_layer is not None and tensor.numel() > max_per_layer:
        rng = np.random.default_rng([seed, zlib_crc(layer.name)])
        index = np.sort(rng.choice(tensor.numel(), size=max_per_layer, replace=False))
        flat = tensor.dequantize() if tensor.is_quantized else tensor
        values, note = to_float64(_gather(flat, index))
        note = "quantized tensor, dequantized" if tensor.is_quantized else note
        subsampled_from = tensor.numel()
    else:
        values, note = to_float64(tensor)
    if layer.quantized and not note:
        note = f"{layer.quantized} quantized, dequantized"
    note = note or layout_note
    return Layer(layer.name, layer.kind, layer.shape, layer.numel, layer.fan_in, layer.dtype, values, subsampled_from, note,
                 layer.quantized)


def iter_layers(model_or_state_dict, kinds=DEFAULT_KINDS, include: str | None = None, exclude: str | None = None,
                min_size: int = 1, max_per_layer: int | None = None, seed: int = 0,
                skipped: Counter | None = None, max_tensor_bytes: int | None = None) -> Iterator[Layer]:
    """Yield one :class:`Layer` per selected tensor, reading (and converting) one tensor at a time.

    The selection comes from :func:`layer_infos` (headers only), the values from :func:`read_layer`;
    so a huge layer costs its own storage plus ``max_per_layer`` doubles, not a float64 copy of it.
    """
    check_selection(min_size=min_size, max_per_layer=max_per_layer, seed=seed, max_tensor_bytes=max_tensor_bytes)
    opened = as_opened(model_or_state_dict)
    for info in layer_infos(opened, kinds, include, exclude, min_size, skipped):
        yield read_layer(opened, info, max_per_layer, seed, max_tensor_bytes)


def _skip_reason(kind: str, is_float: bool, numel: int, kinds: tuple[str, ...], min_size: int) -> str | None:
    if kind not in kinds:
        return SKIP_REASONS[3] if is_float else SKIP_REASONS[1]
    return SKIP_REASONS[4] if numel < min_size else None


def _kind(name: str, shape: tuple[int, ...], is_float: bool, module_kinds: dict[str, str], hints: dict[str, str] | None = None) -> str:
    if not is_float:
        return "other"
    if hints and name in hints:  # the source knows (e.g. the ONNX op consuming the initializer)
        return hints[name]
    kind = module_kinds.get(name) or kind_from_name(name, shape)
    if module_kinds and kind in ("conv", "linear", "embedding") and not name.endswith("weight"):
        return "other"  # e.g. a custom buffer registered on a conv module, or a pruning mask
    return kind


def zlib_crc(name: str) -> int:
    """A stable per-layer seed component (Python's hash() is salted per process)."""
    import zlib

    return zlib.crc32(name.encode())


def extract_layers(model_or_state_dict, kinds=DEFAULT_KINDS, include: str | None = None, exclude: str | None = None,
                   min_size: int = 1, max_per_layer: int | None = None, seed: int = 0,
                   skipped: Counter | None = None) -> list[Layer]:
    """All selected layers as a list (see :func:`iter_layers` for streaming)."""
    return list(iter_layers(model_or_state_dict, kinds, include, exclude, min_size, max_per_layer, seed, skipped))
