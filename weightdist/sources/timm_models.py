"""``timm:<name>``: timm architectures, pretrained weights from the local Hugging Face cache or --weights FILE."""
from __future__ import annotations

import pickle
from contextlib import nullcontext
from pathlib import Path

from ..core.registry import unknown_name_message
from ..errors import CheckpointError, ModelNotFoundError, WeightdistError, WeightsNotCachedError, one_line
from .base import Digest, LoadedModel, ModelInfo, ModelSource, init_source, matching, register_source, seeded_build
from .checkpoint import open_weights, refused_pickle_callee
from .files import file_sha256
from .hf import HF_PROBE_URL, hf_hub_cache, hf_offline

PREFIX = "timm:"


def timm_cache_dir(name: str) -> Path:
    """The Hugging Face cache folder timm reads ``name``'s pretrained weights from."""
    try:
        from timm.models import get_pretrained_cfg

        hub_id = (get_pretrained_cfg(name).hf_hub_id or "").split("@")[0]
    except Exception:  # no pretrained config for this name
        hub_id = ""
    folder = "models--" + hub_id.replace("/", "--") if hub_id else ""
    return hf_hub_cache() / folder if folder else hf_hub_cache()


def _info(name: str) -> ModelInfo:
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
    except Exception:  # no pretrained config: nothing is known
        cfg = None
    if cfg is None:
        return ModelInfo(provenance=f"timm {name}")
    licence = getattr(cfg, "license", None) or "unknown"
    data = "ImageNet-1k" if getattr(cfg, "num_classes", None) == 1000 else "unknown"
    return ModelInfo(data, "", licence, f"timm {name} pretrained ({cfg.hf_hub_id or cfg.url or 'no published weights'})")


def _not_cached(name: str, exc: BaseException) -> WeightsNotCachedError:
    return WeightsNotCachedError(
        f"pretrained weights for timm model {name} are not in the Hugging Face cache (looked in {timm_cache_dir(name)}) "
        f"and cannot be downloaded ({type(exc).__name__}); pass --weights FILE (timm's pretrained_cfg_overlay=dict(file=...)), "
        f"set HF_HOME to a cache holding them, or use --init")


@register_source
class TimmSource(ModelSource):
    name = "timm"
    priority = 100
    description = "timm:<name> (pretrained weights from the Hugging Face cache, or --weights FILE)"

    def can_open(self, spec: str) -> bool:
        return spec.startswith(PREFIX)

    def list(self, pattern: str | None = None) -> list[str]:
        if not (pattern and pattern.startswith(PREFIX)):
            return []  # thousands of names: listed only when asked for by prefix
        import timm

        return matching((PREFIX + n for n in timm.list_models(pattern[len(PREFIX):] or "*")), pattern)

    def info(self, spec: str) -> ModelInfo:
        return _info(spec[len(PREFIX):])

    def open(self, spec: str, *, init: bool = False, seed: int = 0, weights_file: str | None = None) -> LoadedModel:
        import timm

        name = spec[len(PREFIX):]
        if name not in timm.list_models(pretrained=False) and name not in timm.list_models(pretrained=True):
            raise ModelNotFoundError(unknown_name_message("timm model", name, timm.list_models()) + "; see 'weightdist models \"timm:*\"'")
        if init and weights_file:
            raise WeightdistError("--init and --weights FILE contradict each other: --init analyses fresh weights, --weights a trained file; pass one")
        info = _info(name)
        if init:
            module = seeded_build(lambda: timm.create_model(name, pretrained=False), seed)
            return LoadedModel(spec, init_source(seed), None, None, module, module.state_dict(), info)
        if weights_file:
            weights_file = str(Path(weights_file).expanduser())
            open_weights(weights_file)  # validate safely (weights_only) before timm touches the file
            try:
                module = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights_file)))
            except Exception as exc:  # key or shape mismatch, or a format timm cannot read
                raise CheckpointError(f"{weights_file}: does not fit timm {name} ({one_line(exc)}); pass the weights saved from this architecture") from None
            sha = Digest(file_sha256, weights_file)
            return LoadedModel(spec, f"timm {name} from {weights_file}", weights_file, sha, module, module.state_dict(),
                               ModelInfo(provenance=f"timm {name} architecture, weights from {weights_file}"))
        from . import hub  # looked up at call time, so tests can stand in for the network probe

        offline = nullcontext() if hub.host_reachable(HF_PROBE_URL) else hf_offline()
        try:
            with offline:
                module = timm.create_model(name, pretrained=True)
        except (pickle.UnpicklingError, RuntimeError) as exc:
            callee = refused_pickle_callee(exc)
            if callee is None:
                raise _not_cached(name, exc) from None
            # timm loads with weights_only=True: a cached file that needs more was refused, and nothing ran.
            raise CheckpointError(
                f"refusing to unpickle the cached weights of timm model {name} (under {timm_cache_dir(name)}): they need code "
                f"execution ({'they call ' + callee if callee else 'they reference Python code'}); delete that cache "
                "entry and download again, or pass --weights FILE") from None
        except Exception as exc:  # hub errors vary by version; all mean "weights not available here"
            raise _not_cached(name, exc) from None
        return LoadedModel(spec, f"timm {name} pretrained", None, None, module, module.state_dict(), info)
