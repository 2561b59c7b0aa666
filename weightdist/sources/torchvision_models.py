"""torchvision classification models by name, pretrained weights from the torch hub cache (offline first)."""
from __future__ import annotations

from torch import nn

from ..errors import CheckpointError, one_line
from .base import LoadedModel, ModelInfo, ModelSource, check_no_weights_file, init_source, matching, register_source, seeded_build
from .checkpoint import open_weights
from .hub import cache_path, fetch

# The initialisation law each architecture's constructor applies (analyses.drift.INIT_LAWS), where we checked it.
TORCHVISION_INITS = {"mobilenet_v2": "torchvision_mobilenet"}
TORCHVISION_LICENCE = "BSD-3-Clause (torchvision); ImageNet terms of access apply to the weights"


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _dataset(weights) -> str:
    name = weights.name.upper()
    if "IMAGENET1K" in name:
        return "ImageNet-1k (pre-trained on IG-3.6B)" if "SWAG" in name else "ImageNet-1k"
    return name.split("_V")[0] or "unknown"


def _with_state(name: str, weights, state: dict) -> nn.Module:
    """Let torchvision build ``name`` with ``weights``, handing it the tensors we already read safely
    instead of its own unpickler (some builders fix keys up on load: densenet's 'norm.1' -> 'norm1')."""
    from unittest import mock

    import torchvision
    import torchvision.models._api as tv_api

    def load_state_dict_from_url(url, *args, **kwargs):
        return dict(state)

    with mock.patch.object(tv_api, "load_state_dict_from_url", load_state_dict_from_url):
        return torchvision.models.get_model(name, weights=weights)


@register_source
class TorchvisionSource(ModelSource):
    name = "torchvision"
    priority = 10
    description = "torchvision classification models (weights from TORCH_HOME/hub/checkpoints)"

    def can_open(self, spec: str) -> bool:
        return spec in torchvision_names()

    def list(self, pattern: str | None = None) -> list[str]:
        return matching(torchvision_names(), pattern)

    def info(self, spec: str) -> ModelInfo:
        import torchvision

        default = torchvision.models.get_model_weights(spec).DEFAULT
        return ModelInfo(_dataset(default), TORCHVISION_INITS.get(spec, ""), TORCHVISION_LICENCE,
                         f"torchvision {type(default).__name__}.{default.name} ({default.url})")

    def open(self, spec: str, *, init: bool = False, seed: int = 0, weights_file: str | None = None) -> LoadedModel:
        import torchvision

        check_no_weights_file(weights_file)
        info = self.info(spec)
        if init:
            module = seeded_build(lambda: torchvision.models.get_model(spec, weights=None), seed)
            return LoadedModel(spec, init_source(seed), None, None, module, module.state_dict(), info)
        enum = torchvision.models.get_model_weights(spec)
        # The default weights if cached, else any other published weights that are cached (e.g. IMAGENET1K_V1).
        candidates = [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]
        chosen = next((w for w in candidates if cache_path(w.url).is_file()), enum.DEFAULT)
        path, sha = fetch(chosen.url, spec)
        state = dict(open_weights(path))  # weights_only: nothing in the file can run code
        module = torchvision.models.get_model(spec, weights=None)
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            try:
                module = _with_state(spec, chosen, state)
            except Exception:
                raise CheckpointError(f"{path}: does not fit torchvision {spec} ({one_line(exc)})") from None
        source = f"torchvision {type(chosen).__name__}.{chosen.name}"
        info = ModelInfo(_dataset(chosen), info.init, info.licence, f"{source} ({chosen.url})")
        return LoadedModel(spec, source, str(path), sha, module, module.state_dict(), info)
