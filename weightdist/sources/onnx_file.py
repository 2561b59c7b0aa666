"""ONNX graphs: the stored weights are the graph's initializers (and Constant nodes' tensors).

The model is parsed with ``onnx.load(load_external_data=False)``; external data is read here,
one tensor at a time, and only from files inside the model's own folder: a location that is
absolute, climbs out with ``..`` or is a symlink leading outside is refused. Values come from
``onnx.numpy_helper.to_array``, the format's own converter.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, WeightsNotCachedError, one_line
from .base import Digest, ModelInfo, OpenedModel, TensorInfo, register_source
from .files import FileFormatSource, file_sha256

SUFFIXES = (".onnx",)
# ONNX TensorProto data types -> the torch dtype names used in tables.
ONNX_DTYPES = {"FLOAT": "float32", "FLOAT16": "float16", "DOUBLE": "float64", "BFLOAT16": "bfloat16",
               "FLOAT8E4M3FN": "float8_e4m3fn", "FLOAT8E5M2": "float8_e5m2", "INT8": "int8", "UINT8": "uint8",
               "INT16": "int16", "UINT16": "uint16", "INT32": "int32", "UINT32": "uint32", "INT64": "int64",
               "UINT64": "uint64", "BOOL": "bool", "COMPLEX64": "complex64", "COMPLEX128": "complex128"}
# The layer kind of an initializer, from the op that consumes it and at which input: (op, input index) -> kind.
CONSUMER_KINDS = {("Conv", 1): "conv", ("ConvTranspose", 1): "conv", ("Conv", 2): "bias", ("ConvTranspose", 2): "bias",
                  ("Gemm", 1): "linear", ("Gemm", 0): "linear", ("Gemm", 2): "bias", ("MatMul", 1): "linear",
                  ("MatMul", 0): "linear", ("Gather", 0): "embedding", ("LSTM", 1): "linear", ("LSTM", 2): "linear",
                  ("GRU", 1): "linear", ("GRU", 2): "linear", ("LSTM", 3): "bias", ("GRU", 3): "bias",
                  **{(op, i): "norm" for op in ("BatchNormalization", "LayerNormalization", "InstanceNormalization",
                                                "GroupNormalization", "SimplifiedLayerNormalization",
                                                "SkipLayerNormalization") for i in range(1, 5)}}
# Ops that make tensors from nothing: a graph whose float weights come from these computes them.
GENERATOR_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike", "ConstantOfShape", "Range"}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise WeightsNotCachedError("reading .onnx files needs the onnx package; install it with 'pip install onnx'") from None
    return onnx


def _dtype(onnx, data_type: int) -> str:
    name = onnx.TensorProto.DataType.Name(data_type)
    return ONNX_DTYPES.get(name, name.lower())


def external_file(model_path: Path, location: str, tensor: str) -> Path:
    """The file an external-data ``location`` names, confined to the model's folder (symlinks resolved)."""
    folder = model_path.parent
    # The model's folder as given, or where the model file really lives (a Hugging Face snapshot links
    # every file into the repo's blobs/ folder, so its data files resolve there too).
    allowed = {folder.resolve(), model_path.resolve().parent}
    bad = (not location or "\0" in location or os.path.isabs(location) or Path(location).is_absolute()
           or ".." in Path(location).parts or location.startswith(("/", "\\")))
    target = (folder / location).resolve() if not bad else None
    if bad or not any(root in target.parents for root in allowed):
        raise CheckpointError(f"{model_path}: external data of tensor {tensor!r} points outside the model's folder "
                              f"({location!r}); refusing to read it: keep the data files beside the .onnx file")
    if not target.is_file():
        raise CheckpointError(f"{model_path}: external data file {location!r} of tensor {tensor!r} is missing; "
                              "copy it beside the .onnx file")
    return target


@dataclass(frozen=True)
class ONNXModel(OpenedModel):
    name: str
    source: str
    path: str | None
    sha256: str | None = field(repr=False, compare=False)  # lazy (a Digest): never hashed by repr or ==
    info: ModelInfo
    module: nn.Module | None = None
    _tensors: dict = field(default_factory=dict, repr=False, compare=False)  # name -> TensorProto
    _kinds: dict = field(default_factory=dict, repr=False, compare=False)  # name -> layer kind, from the graph

    def tensor_infos(self) -> list[TensorInfo]:
        onnx = _onnx()
        return [TensorInfo(n, tuple(int(d) for d in t.dims), _dtype(onnx, t.data_type)) for n, t in self._tensors.items()]

    def kind_hints(self) -> dict[str, str]:
        return dict(self._kinds)

    def read(self, name: str) -> torch.Tensor:
        onnx = _onnx()
        from onnx import numpy_helper

        proto = self._tensors[name]
        if proto.data_location == onnx.TensorProto.EXTERNAL:
            proto = self._with_external_data(proto)
        try:
            values = numpy_helper.to_array(proto)
        except Exception as exc:
            raise CheckpointError(f"{self.path}: cannot read initializer {name!r} ({one_line(exc)}); the file is corrupt") from None
        if values.dtype.kind == "V" or (values.dtype.kind == "f" and values.dtype.name not in ("float16", "float32", "float64")):
            values = values.astype(np.float32)  # bfloat16/float8 come as ml_dtypes types: exact in float32
        return torch.from_numpy(np.array(values, copy=True, order="C"))  # writable: torch warns on read-only arrays

    def _with_external_data(self, proto):
        onnx = _onnx()
        entries = {e.key: e.value for e in proto.external_data}
        file = external_file(Path(self.path), entries.get("location", ""), proto.name)
        try:
            offset, length = int(entries.get("offset", 0)), entries.get("length")
            size = file.stat().st_size
            length = size - offset if length is None else int(length)
        except ValueError:
            raise CheckpointError(f"{self.path}: external data of {proto.name!r} has a non-numeric offset or length; the file is corrupt") from None
        expected = int(np.prod([int(d) for d in proto.dims], dtype=np.int64)) * _itemsize(onnx, proto.data_type)
        if offset < 0 or length < 0 or offset + length > size or (expected and length != expected):
            raise CheckpointError(f"{self.path}: external data of {proto.name!r} (offset {offset}, length {length}) does not fit "
                                  f"{file.name} ({size} bytes) or the tensor's shape; the data file is truncated or from another model")
        with open(file, "rb") as f:
            f.seek(offset)
            raw = f.read(length)
        copy = onnx.TensorProto()
        copy.CopyFrom(proto)
        del copy.external_data[:]
        copy.data_location = onnx.TensorProto.DEFAULT
        copy.raw_data = raw
        return copy


def _itemsize(onnx, data_type: int) -> int:
    try:
        return int(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize)
    except Exception:  # packed 4-bit and other exotic types: the length check is skipped
        return 0


def stored_tensors(onnx, graph) -> dict:
    """name -> TensorProto of the graph's initializers and Constant nodes' ``value`` tensors."""
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR and node.output:
                    tensors.setdefault(node.output[0], attr.t)
    return tensors


def graph_kinds(graph, names) -> dict[str, str]:
    """Each stored tensor's layer kind from the first op that consumes it (see CONSUMER_KINDS);
    a tensor only reshaped, added or multiplied somewhere is "other" (not a weight matrix). ``Add``
    of a 1-D tensor to a MatMul/Conv output is a bias."""
    produced_by = {out: node.op_type for node in graph.node for out in node.output}
    kinds: dict[str, str] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name not in names or name in kinds:
                continue
            kind = CONSUMER_KINDS.get((node.op_type, i))
            if kind is None and node.op_type == "Add":
                other = [x for x in node.input if x != name]
                if other and produced_by.get(other[0]) in ("MatMul", "Conv", "Gemm"):
                    kind = "bias"
            if kind is not None:
                kinds[name] = kind
    return {n: kinds.get(n, "other") for n in names}


def open_onnx(path: Path, name: str | None = None, info: ModelInfo | None = None, source: str | None = None) -> ONNXModel:
    onnx = _onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends
        raise CheckpointError(f"{path}: not a readable ONNX model, truncated or corrupt ({type(exc).__name__}: {one_line(exc, 100)})") from None
    tensors = stored_tensors(onnx, model.graph)
    floats = [n for n, t in tensors.items() if _dtype(onnx, t.data_type) in ("float32", "float16", "float64", "bfloat16")]
    if not floats:
        generators = sorted({n.op_type for n in model.graph.node if n.op_type in GENERATOR_OPS})
        how = f"it computes them with {', '.join(generators)} nodes" if generators else "it stores no floating-point initializers"
        raise CheckpointError(f"{path}: no stored weights to analyse ({how}); export the model with its trained weights as initializers")
    producer = " ".join(filter(None, [model.producer_name, model.producer_version]))
    props = {p.key: p.value for p in model.metadata_props}
    info = info or ModelInfo(props.get("training_data", "unknown"), "", props.get("license", "unknown"),
                             f"ONNX file {path.name}" + (f" (from {producer})" if producer else ""))
    return ONNXModel(name or path.name, source or "onnx file", str(path), Digest(file_sha256, path), info, None, tensors,
                     graph_kinds(model.graph, set(tensors)))


@register_source
class ONNXSource(FileFormatSource):
    name = "onnx"
    description = ".onnx graphs (initializers, external data confined to the model's folder)"
    suffixes, format = SUFFIXES, "ONNX"

    def open_path(self, path: Path) -> ONNXModel:
        return open_onnx(path)
