"""Model sources as plugins: the registry, entry points, metadata, and the lazy layer interface."""
from __future__ import annotations

import importlib.metadata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from weightdist.errors import ModelNotFoundError, WeightdistError
from weightdist.sources import base, list_models, load_model, model_info, open_model
from weightdist.sources.base import LoadedModel, ModelInfo, ModelSource, OpenedModel, TensorInfo
from weightdist.sources.checkpoint import SafetensorsFile
from weightdist.sources.extract import extract_layers, iter_layers, layer_infos, read_layer

REPO = Path(__file__).resolve().parents[1]


class _ToySource(ModelSource):
    """A third-party source as a plugin would ship it: names 'toy:<n>' are n×n identity-ish matrices."""

    name = "toy"
    priority = 100

    def can_open(self, spec: str) -> bool:
        return spec.startswith("toy:")

    def list(self, pattern=None):
        return base.matching(["toy:3", "toy:4"], pattern)

    def info(self, spec):
        return ModelInfo("nothing", "", "CC0", "made up for a test")

    def open(self, spec, *, init=False, seed=0, weights_file=None):
        n = int(spec[4:])
        g = torch.Generator().manual_seed(seed)
        return LoadedModel(spec, "toy", None, None, None, {"fc.weight": torch.randn(n, n, generator=g)}, self.info(spec))


class _EntryPoint:
    def __init__(self, name, target, fail=False):
        self.name, self.value, self._target, self._fail = name, f"toy_pkg:{name}", target, fail
        self.dist = None

    def load(self):
        if self._fail:
            raise ImportError("No module named 'toy_pkg'")
        return self._target


@pytest.fixture
def plugins(monkeypatch):
    """Entry points of the 'weightdist.sources' group replaced by the given fakes; registry restored after."""
    entries = dict(base.SOURCES._entries)

    real = importlib.metadata.entry_points

    def install(*eps):
        def entry_points(group=None, **kw):  # other libraries (torch, triton) look up their own groups
            return list(eps) if group == base.ENTRY_POINT_GROUP else real(**({"group": group} if group else {}), **kw)

        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
        monkeypatch.setattr(base, "_plugins_loaded", False)

    yield install
    base.SOURCES._entries.clear()
    base.SOURCES._entries.update(entries)
    base._plugins_loaded = False


def test_a_plugin_from_the_entry_point_group_opens_its_specs(plugins):
    plugins(_EntryPoint("toy", _ToySource))
    assert list_models("toy:*") == ["toy:3", "toy:4"]
    loaded = load_model("toy:3", seed=1)
    assert loaded.source == "toy" and loaded.tensors["fc.weight"].shape == (3, 3)
    assert torch.equal(loaded.tensors["fc.weight"], torch.randn(3, 3, generator=torch.Generator().manual_seed(1)))
    assert model_info("toy:4").licence == "CC0"
    assert [l.name for l in extract_layers(loaded)] == ["fc.weight"]


def test_a_broken_plugin_is_one_line_naming_it(plugins):
    plugins(_EntryPoint("broken", None, fail=True))
    with pytest.raises(WeightdistError, match=r"model source plugin 'broken' \(toy_pkg:broken\) failed to load: ImportError") as info:
        load_model("resnet20_fashionmnist")
    assert "\n" not in str(info.value) and "uninstall" in str(info.value)


def test_a_plugin_that_is_not_a_source_is_refused(plugins):
    plugins(_EntryPoint("odd", 42))
    with pytest.raises(WeightdistError, match=r"plugin 'odd' .* is a int, not a ModelSource"):
        list_models()


def test_sources_are_asked_by_priority_and_name_no_branches():
    order = [s.name for s in base.sources()]
    assert order.index("hf") < order.index("gguf") < order.index("file") < order.index("builtin") < order.index("torchvision")
    assert {"builtin", "torchvision", "timm", "file", "hf", "gguf", "onnx", "torchscript", "zoo"} <= set(order)
    assert base.source_for("timm:resnet18").name == "timm" and base.source_for("x/y.gguf").name == "gguf"
    assert base.source_for("m.onnx").name == "onnx" and base.source_for("w.safetensors").name == "file"
    assert base.source_for("resnet20_cifar10").name == "builtin" and base.source_for("resnet50").name == "torchvision"
    with pytest.raises(ModelNotFoundError, match="unknown model 'nonesuch_model'"):
        base.source_for("nonesuch_model")


def test_model_info_lives_on_the_source_entry():
    assert model_info("resnet56_cifar10") == ModelInfo(
        "CIFAR-10", "kaiming_normal_fan_in", "BSD-2-Clause",
        "CIFAR-10 ResNet (He et al. 2016), weights by Y. Idelbayev, BSD-2: github.com/akamaster/pytorch_resnet_cifar10 resnet56-4bfd9763.th")
    assert model_info("resnet20_fashionmnist").training_data == "Fashion-MNIST"
    # torchvision's weights enum says what the weights were trained on; the name is not parsed.
    assert model_info("mobilenet_v2").training_data == "ImageNet-1k" and model_info("mobilenet_v2").init == "torchvision_mobilenet"
    assert model_info("resnet18").init == ""  # not checked against a closed form: unknown, not guessed
    assert model_info("all-MiniLM-L6-v2").licence == "Apache-2.0"


def test_drift_and_findings_read_model_info_not_names():
    from weightdist.analyses.drift import bert_normal, kaiming_normal_fan_in, known_init, torchvision_mobilenet
    from weightdist.reporting.findings import dataset_of

    assert known_init("resnet44_cifar10") is kaiming_normal_fan_in and known_init("mobilenet_v2") is torchvision_mobilenet
    assert known_init("all-MiniLM-L6-v2") is bert_normal and known_init("resnet50") is None
    assert known_init("resnet20_not_a_model") is None
    # findings used to call any resnet* ImageNet; a name no source knows is now unknown.
    assert dataset_of("resnet20_not_a_model") == "unknown"
    assert dataset_of("resnet20_cifar10") == "CIFAR-10" and dataset_of("resnet50") == "ImageNet-1k"


def test_findings_prefers_the_model_info_recorded_in_summary_json(tmp_path):
    import json

    from weightdist.reporting.findings import dataset_of, model_info_of

    (tmp_path / "summary.json").write_text(json.dumps({"model": "x", "model_info": {"training_data": "my data", "licence": "MIT"}}))
    assert dataset_of("resnet20_cifar10", tmp_path) == "my data" and model_info_of("x", tmp_path)["licence"] == "MIT"


def test_summary_json_records_the_model_info(tmp_path):
    import json

    from weightdist.api import fit_report

    out = fit_report("resnet20_fashionmnist", tmp_path / "r", options=_fast_options(), plots=False, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_info"] == model_info("resnet20_fashionmnist").as_dict()


def _fast_options(**kw):
    from weightdist.pipeline import FitOptions

    return FitOptions(families=("gaussian", "laplace"), include=r"^conv1\.weight$|^fc\.weight$", intervals=False, **kw)


# --- the lazy layer interface (what scan workers use) ----------------------------------------------


def test_layer_infos_read_nothing_and_read_layer_matches_iter_layers(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    state = {"embed.weight": torch.randn(30, 8, generator=g), "blk.fc.weight": torch.randn(8, 8, generator=g).half(),
             "blk.fc.bias": torch.zeros(8), "ids": torch.arange(5)}
    path = tmp_path / "m.safetensors"
    save_file(state, str(path))
    reads = []
    original = SafetensorsFile.__getitem__
    monkeypatch.setattr(SafetensorsFile, "__getitem__", lambda self, k: reads.append(k) or original(self, k))
    opened = open_model(str(path))
    skipped = Counter()
    infos = layer_infos(opened, kinds=("linear", "embedding", "other"), skipped=skipped)
    assert reads == []
    infos = sorted(infos, key=lambda i: i.name)
    assert [(i.name, i.kind, i.shape, i.numel, i.dtype, i.quantized) for i in infos] == [
        ("blk.fc.weight", "linear", (8, 8), 64, "float16", None), ("embed.weight", "embedding", (30, 8), 240, "float32", None),
        ("ids", "other", (5,), 5, "int64", None)]
    assert infos[0].fan_in == 8 and skipped == {"float tensors of unselected kinds (--kinds)": 1}
    layer = read_layer(opened, "blk.fc.weight", max_per_layer=10, seed=3)
    assert reads == ["blk.fc.weight"]
    streamed = {l.name: l for l in iter_layers(opened, kinds=("linear", "embedding", "other"), max_per_layer=10, seed=3)}
    assert np.array_equal(layer.values, streamed["blk.fc.weight"].values) and layer.subsampled_from == 64
    assert streamed["ids"].values.size == 0 and streamed["ids"].note == "integer buffer (int64), not analysed"
    full = read_layer(opened, infos[1])
    assert np.array_equal(full.values, state["embed.weight"].double().flatten().numpy())


def test_tensor_infos_of_each_mapping_kind_agree_with_the_tensors(tmp_path):
    loaded = load_model("resnet20_cifar10", init=True)
    infos = {t.name: t for t in loaded.tensor_infos()}
    assert set(infos) == set(loaded.tensors)
    assert all(infos[k].shape == tuple(v.shape) and infos[k].dtype == str(v.dtype)[6:] for k, v in loaded.tensors.items())
    assert isinstance(loaded, OpenedModel) and infos["conv1.weight"] == TensorInfo("conv1.weight", (16, 3, 3, 3), "float32")


def test_init_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("resnet20_fashionmnist", init=True, seed=5)
    assert torch.equal(torch.rand(3), expected)


# --- the zoo list ------------------------------------------------------------------------------------


def zoo_specs() -> list[str]:
    lines = (REPO / "zoo" / "offline.txt").read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def test_zoo_list_names_at_least_12_models_in_4_formats_each_with_metadata():
    specs = zoo_specs()
    assert len(specs) >= 12 and len(set(specs)) == len(specs)
    chosen = {s: base.source_for(s) for s in specs}
    assert all(chosen[s].can_open(s) for s in specs)
    infos = {s: model_info(s) for s in specs}
    assert all(i.training_data != "unknown" and i.licence != "unknown" and i.provenance for i in infos.values()), infos
    from weightdist.sources.zoo import ZOO

    formats = {Path(ZOO.get(s).file).suffix for s in specs if s in ZOO} | {"builtin .th/.safetensors"}
    assert {".pth", ".jit", ".onnx", ".gguf"} <= formats

