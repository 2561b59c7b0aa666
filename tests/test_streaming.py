"""Sharded checkpoints and lazy safetensors: one tensor (or shard) in memory at a time."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from weightdist.cli import main
from weightdist.sources.extract import extract_layers, iter_layers
from weightdist.sources import load_model
from weightdist.sources.checkpoint import SafetensorsFile, ShardedCheckpoint


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"block{i}.linear.weight": torch.randn(64, 32, generator=g) for i in range(4)} | {
        "block0.norm.weight": torch.ones(32), "embed.weight": torch.randn(100, 16, generator=g)}


def _shard(tmp_path, fmt: str):
    state = _state()
    names = list(state)
    shards = {"model-00001-of-00002": names[:3], "model-00002-of-00002": names[3:]}
    weight_map = {}
    for shard, keys in shards.items():
        if fmt == "safetensors":
            file = f"{shard}.safetensors"
            save_file({k: state[k] for k in keys}, str(tmp_path / file))
        else:
            file = f"pytorch_{shard}.bin"
            torch.save({k: state[k] for k in keys}, tmp_path / file)
        weight_map.update({k: file for k in keys})
    index = tmp_path / ("model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json")
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index, state


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_sharded_checkpoint_equals_the_whole_state(tmp_path, fmt):
    index, state = _shard(tmp_path, fmt)
    loaded = load_model(str(index))
    assert isinstance(loaded.tensors, ShardedCheckpoint)
    layers = {l.name: l for l in extract_layers(loaded, kinds=("linear", "embedding", "norm"))}
    assert set(layers) == set(state)
    for name, t in state.items():
        assert np.array_equal(layers[name].values, t.double().flatten().numpy())
    assert layers["embed.weight"].kind == "embedding" and layers["block0.norm.weight"].kind == "norm"


def test_missing_shard_is_named(tmp_path, capsys):
    index, _ = _shard(tmp_path, "safetensors")
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    assert main(["fit", str(index), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "shard file" in capsys.readouterr().err


def test_safetensors_read_one_tensor_per_access(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_file(_state(), str(path))
    lazy = SafetensorsFile(path)
    reads = []
    original = SafetensorsFile.__getitem__
    monkeypatch.setattr(SafetensorsFile, "__getitem__", lambda self, k: reads.append(k) or original(self, k))
    it = iter_layers(load_model(str(path)))
    first = next(it)
    assert reads == [first.name]  # nothing else was read yet
    assert len(lazy) == 6


def test_max_per_layer_is_seeded_and_reported(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file(_state(), str(path))
    a = extract_layers(load_model(str(path)), max_per_layer=100, seed=1)
    b = extract_layers(load_model(str(path)), max_per_layer=100, seed=1)
    c = extract_layers(load_model(str(path)), max_per_layer=100, seed=2)
    assert all(np.array_equal(x.values, y.values) for x, y in zip(a, b))
    assert any(not np.array_equal(x.values, z.values) for x, z in zip(a, c))
    big = [l for l in a if l.numel > 100]
    assert big and all(l.values.size == 100 and l.subsampled_from == l.numel for l in big)
    full = {l.name: l.values for l in extract_layers(load_model(str(path)))}
    assert all(np.isin(l.values, full[l.name]).all() for l in big)  # a subsample, not new values
