"""``hf:<repo_id>[@revision]``: a model from the local Hugging Face cache, offline first.

huggingface_hub resolves the snapshot (``snapshot_download(local_files_only=True)``); the weights
inside (safetensors, shards or pytorch_model.bin, else a single .gguf or .onnx) are opened by the
file source that recognises them. Licence and training data come from the model card's metadata.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import CheckpointError, WeightsNotCachedError
from .base import (ModelInfo, ModelSource, OpenedModel, check_no_init, check_no_weights_file, matching, open_model, register_source,
                   relabelled)

PREFIX = "hf:"
HF_PROBE_URL = "https://huggingface.co"
# Weights files inside a snapshot, most specific first; the first present is opened.
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")
SINGLE_FILE_GLOBS = ("*.safetensors", "*.gguf", "onnx/model.onnx", "model.onnx", "*.onnx")


@contextmanager
def hf_offline():
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


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``hf:org/name@rev`` -> ("org/name", "rev")."""
    body = spec[len(PREFIX):]
    repo_id, _, revision = body.partition("@")
    return repo_id, (revision or None)


def _download_command(repo_id: str, revision: str | None) -> str:
    return f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")


def snapshot_folder(repo_id: str, revision: str | None) -> Path:
    """The cached snapshot folder of ``repo_id`` at ``revision``, never touching the network."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise WeightsNotCachedError("reading hf:<repo_id> needs huggingface_hub; install it with 'pip install huggingface_hub'") from None
    cache = hf_hub_cache()
    if not repo_id or repo_id.count("/") > 1:
        raise CheckpointError(f"hf:{repo_id}: not a Hugging Face repo id; write hf:<owner>/<name>[@revision]")
    try:
        with hf_offline():
            folder = snapshot_download(repo_id, revision=revision, cache_dir=str(cache), local_files_only=True)
    except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, ... all mean "not usable from the cache"
        at = f"@{revision}" if revision else ""
        raise WeightsNotCachedError(f"hf:{repo_id}{at} is not in the Hugging Face cache (looked in {cache}; {type(exc).__name__}); "
                                    f"download it with '{_download_command(repo_id, revision)}' (older huggingface_hub: "
                                    f"'huggingface-cli download {repo_id}') or set HF_HUB_CACHE to a cache holding it") from None
    return Path(folder)


def weights_in(folder: Path) -> Path:
    """The weights file to open inside a snapshot folder (see WEIGHT_FILES), or one line saying none is there."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    for pattern in SINGLE_FILE_GLOBS:
        found = sorted(folder.glob(pattern))
        if len(found) == 1:
            return found[0]
    present = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())[:8]
    raise CheckpointError(f"{folder}: no weights file in this snapshot (looked for {', '.join(WEIGHT_FILES)}; found "
                          f"{', '.join(present) or 'nothing'}); download the weights with 'hf download <repo_id>' or pass a file path")


def card_info(folder: Path, repo_id: str, commit: str) -> ModelInfo:
    """Licence and training data from the model card's YAML header (README.md), when present."""
    meta: dict = {}
    card = folder / "README.md"
    if card.is_file():
        try:
            from huggingface_hub.repocard import metadata_load

            meta = metadata_load(card) or {}
        except Exception:  # a malformed card is not a reason to refuse the weights
            meta = {}
    datasets = meta.get("datasets") or []
    if isinstance(datasets, str):
        datasets = [datasets]
    licence = meta.get("license") or "unknown"
    return ModelInfo(", ".join(map(str, datasets[:3])) or "unknown", "", str(licence),
                     f"Hugging Face {repo_id} at {commit[:12]} (local cache)")


@register_source
class HuggingFaceSource(ModelSource):
    name = "hf"
    priority = 100
    description = "hf:<repo_id>[@revision] from the local Hugging Face cache (HF_HUB_CACHE / HF_HOME)"

    def can_open(self, spec: str) -> bool:
        return spec.startswith(PREFIX)

    def list(self, pattern: str | None = None) -> list[str]:
        if not (pattern and pattern.startswith(PREFIX)):
            return []
        try:
            from huggingface_hub import scan_cache_dir

            repos = scan_cache_dir(hf_hub_cache()).repos
        except Exception:  # no cache folder, or huggingface_hub missing: nothing cached
            return []
        return matching((PREFIX + r.repo_id for r in repos if r.repo_type == "model"), pattern)

    def open(self, spec: str, *, init: bool = False, seed: int = 0, weights_file: str | None = None) -> OpenedModel:
        check_no_weights_file(weights_file)
        check_no_init(init, spec)
        repo_id, revision = parse_spec(spec)
        folder = snapshot_folder(repo_id, revision)
        path = weights_in(folder)
        return relabelled(open_model(str(path)), name=repo_id, source=f"hf {repo_id}@{folder.name[:12]}",
                          info=card_info(folder, repo_id, folder.name))
