"""The model-source interface: every format and catalogue of weights is one ``ModelSource``.

A source says whether it can open a spec (xarray's ``guess_can_open``), opens it lazily
(tensor names, shapes and dtypes first; values one tensor at a time) and lists the names
it knows. Sources live in the ``SOURCES`` registry; our own register themselves on import
(``@register_source`` in ``sources/<name>.py``), third parties through the entry-point group
``weightdist.sources``. ``open_model`` asks them in priority order: it never names one.
Each model carries its :class:`ModelInfo` (timm's ``pretrained_cfg`` idea), so reports,
drift and findings read training data, init law and licence from the source entry.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import importlib.metadata
import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from ..core.registry import Registry, unknown_name_message
from ..errors import CheckpointError, ModelNotFoundError, WeightdistError, one_line

ENTRY_POINT_GROUP = "weightdist.sources"


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a model's weights, on its source entry rather than guessed from its name."""

    training_data: str = "unknown"  # "ImageNet-1k", "CIFAR-10", "text (1B sentence pairs)", "unknown"
    init: str = ""  # the initialisation law's name in analyses.drift.INIT_LAWS, "" when unknown
    licence: str = "unknown"
    provenance: str = ""  # one line: where the weights come from

    def as_dict(self) -> dict[str, str]:
        return {"training_data": self.training_data, "init": self.init, "licence": self.licence, "provenance": self.provenance}


UNKNOWN_INFO = ModelInfo()

# torch dtype names (as in str(torch.float32) without "torch.") that hold real numbers.
FLOAT_DTYPE_NAMES = frozenset(n for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype)
                              and getattr(torch, n).is_floating_point)


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor as its file describes it, known before any of its values are read.

    ``dtype`` is the storage type (a torch dtype name such as ``float16``, or the quantization
    type such as ``Q4_K``); ``quantized`` names that type when the values sit on a grid and are
    dequantized on reading, so their fits are flagged and kept out of headline win counts.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantized: str | None = None

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def is_float(self) -> bool:
        return self.quantized is not None or self.dtype in FLOAT_DTYPE_NAMES


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``: the spelling used in TensorInfo and layers.csv."""
    return str(dtype).replace("torch.", "")


def tensor_info(name: str, tensor: torch.Tensor) -> TensorInfo:
    """The TensorInfo of an in-memory tensor (torch's own quantized tensors are flagged too)."""
    quantized = dtype_name(tensor.dtype) if tensor.is_quantized else None
    return TensorInfo(name, tuple(tensor.shape), dtype_name(tensor.dtype), quantized)


class Digest:
    """A weights file's sha256, computed when first read and then kept.

    Opening a model must not cost a pass over every byte of it: a scan worker opens each model
    it fits a tensor of, and a 2 GB checkpoint would be hashed once per worker for nothing. Only
    what records provenance reads the digest (a scan's plan, once per model; ``fit``'s report).
    ``compute(*args)`` may raise (a published file whose digest does not match), on every read."""

    __slots__ = ("_compute", "_args", "_value")

    def __init__(self, compute: Callable[..., str | None], *args: Any) -> None:
        self._compute: Callable[..., str | None] | None = compute
        self._args, self._value = args, None

    def get(self) -> str | None:
        if self._compute is not None:
            self._value = self._compute(*self._args)
            self._compute, self._args = None, ()
        return self._value

    def __repr__(self) -> str:
        return "Digest(not computed)" if self._compute is not None else f"Digest({self._value!r})"


class LazySha256:
    """The ``sha256`` attribute of every opened model: set it to a digest, ``None`` or a :class:`Digest`;
    reading it gives the digest (a Digest is computed then, once). A data descriptor, so the
    dataclass fields that declare ``sha256`` keep their name, position and constructor argument."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> str | None:
        if obj is None:  # on the class: no default, so a dataclass field declaring sha256 stays required
            raise AttributeError(self._slot[1:])
        value = obj.__dict__.get(self._slot)
        return value.get() if isinstance(value, Digest) else value

    def __set__(self, obj: Any, value: str | Digest | None) -> None:
        obj.__dict__[self._slot] = value

    def held(self, obj: Any) -> str | Digest | None:
        """What ``obj`` holds, without computing it (to pass a model's digest on still lazy)."""
        return obj.__dict__.get(self._slot)


class OpenedModel(ABC):
    """A model opened by a source: metadata at once, tensor values only on ``read(name)``.

    Attributes: ``name``, ``source`` (the provenance line for this run), ``path`` and
    ``sha256`` of the weights file when there is one (computed on first read: see :class:`Digest`),
    ``info`` (:class:`ModelInfo`) and ``module`` (the architecture when known; it gives layer kinds).
    """

    name: str
    source: str
    path: str | None
    sha256 = LazySha256()
    info: ModelInfo
    module: nn.Module | None

    @abstractmethod
    def tensor_infos(self) -> list[TensorInfo]:
        """Every stored tensor's name, shape and dtype, without reading values."""

    @abstractmethod
    def read(self, name: str) -> torch.Tensor:
        """One tensor's values; quantized formats return them dequantized (float)."""

    def as_mapping(self) -> Mapping[str, torch.Tensor]:
        """The tensors as a lazy name -> tensor mapping (what ``LoadedModel.tensors`` holds)."""
        return OpenedTensors(self)

    def kind_hints(self) -> dict[str, str]:
        """Layer kinds ("conv", "linear", ...) the source knows without a ``module`` (an ONNX graph
        knows which op consumes each initializer); names missing here are guessed from name and shape."""
        return {}

    def storage_keys(self) -> dict[str, tuple]:
        """name -> a key equal for names that are the same view of the same stored bytes (known from
        the file's records, without reading values), so a file of 3,000 names for one view is fitted
        once; names missing here are distinct."""
        return {}


def held_sha256(opened: OpenedModel) -> str | Digest | None:
    """``opened``'s digest as held, not computed: for building another model of the same weights.
    (A plugin's model class may declare its own ``sha256`` attribute: then that is what it holds.)"""
    attr = inspect.getattr_static(type(opened), "sha256", None)  # the descriptor itself, not its value
    return attr.held(opened) if isinstance(attr, LazySha256) else getattr(opened, "sha256", None)


def relabelled(opened: OpenedModel, **changes: Any) -> OpenedModel:
    """``dataclasses.replace`` for an opened model (a catalogue renaming a file it found), digest still lazy."""
    if not dataclasses.is_dataclass(opened):
        raise CheckpointError(f"{opened.path}: opened by a source whose models cannot be relabelled ({type(opened).__name__}); "
                              "pass the file path")
    return dataclasses.replace(opened, sha256=held_sha256(opened), **changes)


class OpenedTensors(Mapping):
    """A lazy Mapping view of an OpenedModel: each access reads one tensor."""

    def __init__(self, opened: OpenedModel) -> None:
        self.opened = opened
        self._infos = {t.name: t for t in opened.tensor_infos()}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._infos:
            raise KeyError(name)
        return self.opened.read(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def meta(self, name: str) -> tuple[tuple[int, ...], bool]:
        """(shape, is floating point) without reading values (the protocol iter_layers uses)."""
        t = self._infos[name]
        return t.shape, t.is_float

    def tensor_infos(self) -> list[TensorInfo]:
        return list(self._infos.values())


@dataclass(frozen=True)
class LoadedModel(OpenedModel):
    """An opened model whose tensors are a name -> tensor mapping (a state dict or a lazy file view).

    Every mapping-based source (built-ins, torchvision, timm, .pth/.safetensors/shards) returns one;
    ``load_model`` turns any other OpenedModel into one with a lazy :class:`OpenedTensors` view.
    """

    name: str
    source: str
    path: str | None
    sha256: str | None = field(repr=False, compare=False)  # lazy (a Digest): never hashed by repr or ==
    module: nn.Module | None  # None for a bare weights file: no architecture
    tensors: Mapping[str, torch.Tensor]  # lazy for .safetensors, shards and the other file formats
    info: ModelInfo = field(default=UNKNOWN_INFO)

    def tensor_infos(self) -> list[TensorInfo]:
        tensors = self.tensors
        own = getattr(tensors, "tensor_infos", None)
        if callable(own):  # a view that knows quantization types and storage dtypes
            return list(own())
        dtypes, shapes = getattr(tensors, "dtypes", None), getattr(tensors, "shapes", None)
        if isinstance(dtypes, Mapping) and isinstance(shapes, Mapping):  # a safetensors header: no data read
            return [TensorInfo(k, tuple(shapes[k]), SAFETENSORS_DTYPES.get(dtypes[k], dtypes[k].lower())) for k in tensors]
        meta = getattr(tensors, "meta", None)
        infos = []
        for name in tensors:
            if meta is not None:  # shards: shape and float-ness from headers; the dtype name is not known yet
                shape, is_float = meta(name)
                infos.append(TensorInfo(name, tuple(shape), "float32" if is_float else "int64"))
                continue
            value = tensors[name]
            if isinstance(value, torch.Tensor):  # non-tensor entries (epochs, strings) are not tensors
                infos.append(tensor_info(name, value))
        return infos

    def read(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def as_mapping(self) -> Mapping[str, torch.Tensor]:
        return self.tensors

    def kind_hints(self) -> dict[str, str]:
        opened = getattr(self.tensors, "opened", None)  # a lazy view of another opened model: ask it
        return opened.kind_hints() if isinstance(opened, OpenedModel) else {}

    def storage_keys(self) -> dict[str, tuple]:
        opened = getattr(self.tensors, "opened", None)
        return opened.storage_keys() if isinstance(opened, OpenedModel) else {}


SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
                      "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu", "I64": "int64", "I32": "int32", "I16": "int16",
                      "I8": "int8", "U8": "uint8", "BOOL": "bool", "U16": "uint16", "U32": "uint32", "U64": "uint64"}


class ModelSource(ABC):
    """One way of finding weights. Subclass, set ``name`` and ``priority``, decorate with ``@register_source``.

    ``open_model`` asks sources from the highest ``priority`` down and opens the spec with the
    first whose ``can_open`` says yes, so ``can_open`` must be cheap and must not read weights.
    Conventions: prefixed specs (``hf:``, ``timm:``) 100; file formats recognised by suffix or
    magic 90; generic checkpoint files 80; named catalogues 50; torchvision's names 10.
    """

    name: ClassVar[str]
    priority: ClassVar[int] = 50
    description: ClassVar[str] = ""

    @abstractmethod
    def can_open(self, spec: str) -> bool:
        """Whether this source recognises ``spec`` (a name, prefix or file); cheap, reads no weights."""

    @abstractmethod
    def open(self, spec: str, *, init: bool = False, seed: int = 0, weights_file: str | None = None) -> OpenedModel:
        """Open ``spec`` lazily. ``init``: the architecture freshly initialised from ``seed`` instead."""

    def list(self, pattern: str | None = None) -> list[str]:
        """Names this source can open that match the glob ``pattern`` (files are not listed)."""
        return []

    def info(self, spec: str) -> ModelInfo:
        """The ModelInfo for ``spec`` without opening it (override when the catalogue knows it)."""
        return UNKNOWN_INFO


SOURCES: Registry[ModelSource] = Registry("model source")
_plugins_loaded = False


def register_source(cls: type[ModelSource]) -> type[ModelSource]:
    """Class decorator: add one instance of ``cls`` to ``SOURCES`` under ``cls.name``."""
    SOURCES.add(cls.name, cls())
    return cls


def load_plugins() -> None:
    """Load third-party sources from the ``weightdist.sources`` entry-point group, once.

    An entry point names a ModelSource subclass (registered here) or a module that registers
    its sources on import. A plugin that fails to import is a one-line error naming it and its
    distribution, since silently dropping it would change which models open.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True  # set first, so a plugin that imports weightdist.sources does not recurse; reset on failure
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "its package"
        try:
            obj = ep.load()
        except Exception as exc:  # any import-time failure of someone else's code
            _plugins_loaded = False
            raise WeightdistError(f"model source plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: "
                                  f"{one_line(exc)}; fix or uninstall {dist}") from None
        if isinstance(obj, type) and issubclass(obj, ModelSource):
            if getattr(obj, "name", None) not in SOURCES:
                register_source(obj)
        elif not hasattr(obj, "__path__") and not hasattr(obj, "__file__"):  # a module registers itself on import
            _plugins_loaded = False
            raise WeightdistError(f"model source plugin {ep.name!r} ({ep.value}) is a {type(obj).__name__}, not a "
                                  f"ModelSource subclass or module; fix or uninstall {dist}")


def sources() -> list[ModelSource]:
    """Every registered source, highest priority first (name breaks ties, so the order is stable)."""
    load_plugins()
    return sorted((SOURCES.get(n) for n in SOURCES.names()), key=lambda s: (-s.priority, s.name))


def source_for(spec: str) -> ModelSource:
    """The source that opens ``spec``: the first, by priority, whose ``can_open`` says yes."""
    spec = str(spec)
    if not spec.strip():
        raise ModelNotFoundError("empty model name; pass a model name (see 'weightdist models') or a weights file path")
    for source in sources():
        if source.can_open(spec):
            return source
    raise ModelNotFoundError(unknown_name_message("model", spec, list_names()) + "; see 'weightdist models'")


def open_model(spec: str, *, init: bool = False, seed: int = 0, weights_file: str | None = None) -> OpenedModel:
    """Open ``spec`` (a name, ``prefix:name`` or a file) lazily with the source that recognises it."""
    return source_for(spec).open(str(spec), init=init, seed=seed, weights_file=weights_file)


def list_names(pattern: str | None = None) -> list[str]:
    """Names every source lists for the glob ``pattern``, sorted."""
    return sorted({n for s in sources() for n in s.list(pattern)})


def matching(names, pattern: str | None) -> list[str]:
    """The glob filter every source's ``list`` applies."""
    return sorted(n for n in names if pattern is None or fnmatch.fnmatch(n, pattern))


def check_no_weights_file(weights_file: str | None) -> None:
    """For sources without a separate weights file: ``--weights`` goes with ``timm:<name>`` only."""
    if weights_file:
        raise WeightdistError("--weights FILE goes with timm:<name>; for other models pass the file itself")


def check_no_init(init: bool, spec: str) -> None:
    """For sources that hold weights but no architecture: ``--init`` has nothing to initialise."""
    if init:
        raise WeightdistError(f"--init needs a named architecture, but {spec} is a weights file; pass a model name (see 'weightdist models')")


def init_source(seed: int) -> str:
    return f"init (seed {seed})"


def seeded_build(build, seed: int) -> nn.Module:
    """Build a module with torch's global RNG seeded from ``seed`` and restored afterwards.

    nn.Module constructors draw from the global generator and take no Generator argument, so
    the seed is applied inside ``torch.random.fork_rng``: callers' RNG state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


__all__ = ["ModelInfo", "TensorInfo", "Digest", "OpenedModel", "LoadedModel", "OpenedTensors", "ModelSource", "SOURCES",
           "register_source", "open_model", "source_for", "list_names", "load_plugins", "held_sha256", "relabelled",
           "UNKNOWN_INFO", "ENTRY_POINT_GROUP"]
