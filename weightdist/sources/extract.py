"""Flatten a model's tensors into per-layer records: name, kind, shape, fan-in, float64 values.

Kinds come from the owning module when there is one (Conv*, Linear,
Embedding, norm layers) and from names and shapes for a bare state dict.
Layers are produced one at a time so a huge checkpoint streams.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import torch
from torch import nn

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
    if _NORM_NAME.search(name) and len(shape) <= 1:
        return "norm"
    if "embed" in name.lower() and len(shape) == 2:
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
    """Exact float64 copy of a float tensor (float16/bfloat16 via float32, never downcast)."""
    note = ""
    if t.is_quantized:
        t, note = t.dequantize(), "quantized tensor, dequantized"
    t = t.detach().cpu()
    if t.dtype in (torch.float16, torch.bfloat16) or t.dtype.is_floating_point and t.dtype.itemsize < 4:
        t = t.float()
    return t.double().reshape(-1).numpy(), note


def _source(model) -> tuple[Mapping[str, torch.Tensor], dict[str, str]]:
    module = getattr(model, "module", None) if not isinstance(model, nn.Module) else model
    if isinstance(module, nn.Module):
        kinds = kinds_from_module(module)
        tensors = getattr(model, "tensors", None) if not isinstance(model, nn.Module) else None
        return (tensors or module.state_dict(keep_vars=False)), kinds
    tensors = getattr(model, "tensors", model)
    if not isinstance(tensors, Mapping):
        raise TypeError(f"model_or_state_dict: expected an nn.Module, a state dict or a LoadedModel, got {type(model).__name__}")
    return tensors, {}


def _compile(arg: str, pattern: str | None):
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{arg}: invalid regular expression {pattern!r} ({exc})") from None


def _normalise_kinds(kinds) -> tuple[str, ...]:
    if isinstance(kinds, str):  # "conv,linear" from a command line
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    kinds = tuple(kinds)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"kinds: unknown kind(s) {', '.join(sorted(unknown))}; choose from {', '.join(KINDS)}")
    return kinds


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


SKIP_REASONS = ("non-tensor values", "integer, boolean or complex tensors", "tensors filtered by name (--include/--exclude)",
                "float tensors of unselected kinds (--kinds)", "tensors below --min-size")


def iter_layers(model_or_state_dict, kinds=DEFAULT_KINDS, include: str | None = None, exclude: str | None = None,
                min_size: int = 1, max_per_layer: int | None = None, seed: int = 0,
                skipped: Counter | None = None) -> Iterator[Layer]:
    """Yield one :class:`Layer` per selected tensor, reading (and converting) one tensor at a time.

    With ``max_per_layer`` the subsample is drawn before the float64 conversion, so a huge
    layer costs its own storage plus ``max_per_layer`` doubles, not a float64 copy of it.
    ``skipped``, when given, counts the tensors left out, by reason (one of ``SKIP_REASONS``),
    so a report can say what it did not analyse.
    """
    skipped = Counter() if skipped is None else skipped
    kinds = _normalise_kinds(kinds)
    if max_per_layer is not None and max_per_layer < 1:
        raise ValueError(f"max_per_layer: must be a positive number of values, got {max_per_layer}")
    inc, exc = _compile("include", include), _compile("exclude", exclude)
    tensors, module_kinds = _source(model_or_state_dict)
    meta = getattr(tensors, "meta", None)  # lazy files can answer shape and dtype without reading data
    for name in tensors:
        if (inc and not inc.search(name)) or (exc and exc.search(name)):
            skipped[SKIP_REASONS[2]] += 1
            continue
        if meta is not None:
            shape, is_float = meta(name)
            reason = _skip_reason(_kind(name, shape, is_float, module_kinds), is_float, int(np.prod(shape, dtype=np.int64)), kinds, min_size)
            if reason:
                skipped[reason] += 1
                continue  # skipped without reading the tensor
        tensor = tensors[name]
        if not isinstance(tensor, torch.Tensor):
            skipped[SKIP_REASONS[0]] += 1
            continue
        shape = tuple(tensor.shape)
        is_float = tensor.is_floating_point() or tensor.is_quantized
        kind = _kind(name, shape, is_float, module_kinds)
        reason = _skip_reason(kind, is_float, tensor.numel(), kinds, min_size)
        if reason:
            skipped[reason] += 1
            continue
        dtype = _dtype_name(tensor.dtype)
        if not is_float:
            what = "bool" if tensor.dtype == torch.bool else "integer" if not tensor.is_complex() else "complex"
            yield Layer(name, kind, shape, tensor.numel(), None, dtype, np.empty(0), note=f"{what} buffer ({dtype}), not analysed")
            continue
        subsampled_from = None
        if max_per_layer is not None and tensor.numel() > max_per_layer:
            rng = np.random.default_rng([seed, zlib_crc(name)])
            index = np.sort(rng.choice(tensor.numel(), size=max_per_layer, replace=False))
            flat = tensor.dequantize() if tensor.is_quantized else tensor
            values, note = to_float64(flat.detach().reshape(-1)[torch.from_numpy(index)])
            note = "quantized tensor, dequantized" if tensor.is_quantized else note
            subsampled_from = tensor.numel()
        else:
            values, note = to_float64(tensor)
        yield Layer(name, kind, shape, tensor.numel(), fan_in(kind, shape), dtype, values, subsampled_from, note)
        del tensor


def _skip_reason(kind: str, is_float: bool, numel: int, kinds: tuple[str, ...], min_size: int) -> str | None:
    if kind not in kinds:
        return SKIP_REASONS[3] if is_float else SKIP_REASONS[1]
    return SKIP_REASONS[4] if numel < min_size else None


def _kind(name: str, shape: tuple[int, ...], is_float: bool, module_kinds: dict[str, str]) -> str:
    if not is_float:
        return "other"
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
