"""Model sources: where weights come from, as plugins.

Every format or catalogue is one :class:`~weightdist.sources.base.ModelSource` in its own
file that registers itself (``builtin``, ``torchvision_models``, ``timm_models``, ``files``,
``hf``, ``gguf_file``, ``onnx_file``, ``torchscript``, ``zoo``); third parties add theirs through
the entry-point group ``weightdist.sources``. ``open_model(spec)`` opens a spec lazily with the
first source, by priority, that recognises it; ``load_model`` is the same as a
:class:`LoadedModel` whose ``tensors`` mapping reads one tensor per access.
"""
from __future__ import annotations

from . import builtin, files, gguf_file, hf, onnx_file, timm_models, torchscript, torchvision_models, zoo  # noqa: F401  (they register)
from .base import (SOURCES, LoadedModel, ModelInfo, ModelSource, OpenedModel, OpenedTensors, TensorInfo, list_names,
                   open_model, register_source, source_for, sources)
from .builtin import BUILTINS, register_model
# Names older callers and tests import from here (the sources' own modules are where they live).
from .builtin import CIFAR_FILES, CIFAR_SHA256  # noqa: F401
from .hf import hf_hub_cache  # noqa: F401
from .hub import host_reachable  # noqa: F401
from .timm_models import timm_cache_dir as _timm_cache_dir  # noqa: F401
from .torchvision_models import torchvision_names  # noqa: F401


def list_models(pattern: str | None = None) -> list[str]:
    """Names every source lists for ``pattern`` (a glob); prefixed catalogues (``timm:*``, ``hf:*``) only when asked by prefix."""
    return list_names(pattern)


def load_model(spec: str, *, init: bool = False, seed: int = 0, weights_file: str | None = None) -> LoadedModel:
    """Resolve ``spec`` (file path, ``prefix:name`` or catalogue name) to a LoadedModel with lazy ``tensors``.

    Unlike :func:`open_model` (what scan workers use), this reads the weights file's sha256 at once: a
    cached download that does not match its published digest fails here, before anything uses it."""
    opened = open_model(spec, init=init, seed=seed, weights_file=weights_file)
    sha256 = opened.sha256  # computed and checked now
    if isinstance(opened, LoadedModel):
        return opened
    return LoadedModel(opened.name, opened.source, opened.path, sha256, opened.module, OpenedTensors(opened), opened.info)


def model_info(spec: str) -> ModelInfo:
    """A model's :class:`ModelInfo` from its source entry, without opening it."""
    return source_for(spec).info(str(spec))


__all__ = ["LoadedModel", "OpenedModel", "ModelInfo", "TensorInfo", "ModelSource", "SOURCES", "load_model", "list_models",
           "open_model", "model_info", "register_model", "register_source", "sources", "BUILTINS"]
