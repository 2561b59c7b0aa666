"""Hostile and broken files: refused with one clear line, nothing executed, nothing written."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bad_inputs import BAD_INPUT_CASES, MARKER_NAME, Payload, small_state
from weightdist.cli import main
from weightdist.errors import CheckpointError, WeightdistError, WeightsNotCachedError
from weightdist.sources.extract import extract_layers
from weightdist.sources import load_model
from weightdist.sources.checkpoint import open_weights

IDS = [case[0] for case in BAD_INPUT_CASES]


@pytest.mark.parametrize("case", BAD_INPUT_CASES, ids=IDS)
def test_loader_refuses_with_clear_message(case, tmp_path, recwarn):
    _, build, match = case
    path = build(tmp_path)
    recwarn.clear()
    with pytest.raises(WeightdistError, match=match) as info:
        extract_layers(load_model(str(path)), kinds=("conv", "linear", "embedding", "norm", "bias", "other"))  # shards fail on reading
    assert "\n" not in str(info.value)
    assert not [str(w.message) for w in recwarn], "warnings would print extra lines under the one-line error"
    assert not (tmp_path / MARKER_NAME).exists(), "code inside the file was executed"


@pytest.mark.parametrize("case", BAD_INPUT_CASES, ids=IDS)
def test_cli_exit_code_one_line_nothing_written(case, tmp_path, capsys):
    _, build, match = case
    path = build(tmp_path)
    out = tmp_path / "report"
    code = main(["fit", str(path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert pytest.importorskip("re").search(match, err), err
    assert not out.exists()
    assert not (tmp_path / MARKER_NAME).exists()
    # torch's own hints (allow-list the global, pass weights_only=False) would tell a user to run the payload.
    assert "safe_globals" not in err and "weights_only" not in err, err


def test_payload_really_would_run(tmp_path):
    """The corpus is live ammunition: plain pickle does execute it (so the refusals above mean something)."""
    import pickle

    pickle.loads(pickle.dumps(Payload(tmp_path / MARKER_NAME)))
    assert (tmp_path / MARKER_NAME).exists()


def test_timm_local_override_refuses_payload(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"x": Payload(tmp_path / MARKER_NAME)}, evil)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_model("timm:resnet18", weights_file=str(evil))
    assert not (tmp_path / MARKER_NAME).exists()


def test_hostile_file_in_the_hugging_face_cache_is_refused(tmp_path, monkeypatch):
    # A stranger's pytorch_model.bin planted where timm looks for resnet18's pretrained weights.
    import weightdist.sources as models

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    # huggingface_hub reads its cache location once, at import: point the imported constant here too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(models, "host_reachable", lambda url, timeout=None: False)  # offline, whatever the network
    repo = models._timm_cache_dir("resnet18")
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(1), "x": Payload(tmp_path / MARKER_NAME)}, snapshot / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"refusing to unpickle the cached weights of timm model resnet18 .*they call .*getattr"):
        load_model("timm:resnet18")
    assert not (tmp_path / MARKER_NAME).exists()


def test_unreadable_file(tmp_path, monkeypatch):
    # Tests run as root, where chmod 000 does not stop reads: simulate the permission check failing.
    path = tmp_path / "secret.pth"
    torch.save(small_state(), path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == path else real_access(p, mode))
    with pytest.raises(CheckpointError, match=r"secret\.pth: permission denied"):
        load_model(str(path))


def test_debug_flag_shows_traceback(tmp_path):
    with pytest.raises(CheckpointError):
        main(["--debug", "fit", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o")])


# --- offline ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected_file", [("resnet20_cifar10", "resnet20-12fca82f.th"), ("resnet18", "resnet18-")])
def test_uncached_weights_fail_fast_naming_the_file(spec, expected_file, empty_torch_home):
    start = time.monotonic()
    with pytest.raises(WeightsNotCachedError, match=rf"looked for {empty_torch_home}/hub/checkpoints/{expected_file}.*TORCH_HOME"):
        load_model(spec)
    assert time.monotonic() - start < 10


def test_uncached_timm_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.monotonic()
    with pytest.raises(WeightsNotCachedError, match=r"timm model resnet18 .*HF_HOME"):
        load_model("timm:resnet18")
    assert time.monotonic() - start < 10


def test_init_works_offline_for_every_kind_of_architecture(empty_torch_home):
    for spec in ("resnet20_cifar10", "resnet18", "timm:resnet18"):
        first = extract_layers(load_model(spec, init=True, seed=1))
        again = extract_layers(load_model(spec, init=True, seed=1))
        other = extract_layers(load_model(spec, init=True, seed=2))
        assert np.array_equal(first[0].values, again[0].values)
        assert not np.array_equal(first[0].values, other[0].values)


# --- odd tensors -----------------------------------------------------------------------------------


def test_odd_tensors_reported_per_layer(tmp_path):
    g = torch.Generator().manual_seed(0)
    nan_layer = torch.randn(32, 32, generator=g)
    nan_layer[0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    state = {
        "nan.weight": nan_layer,
        "zero.weight": torch.zeros(16, 16),
        "const.weight": torch.full((16, 16), 0.5),
        "half.weight": torch.randn(64, 64, generator=g).half(),
        "bf16.weight": torch.randn(64, 64, generator=g).bfloat16(),
        "one.weight": torch.ones(1, 1),
        "steps": torch.tensor(7),
        "mask": torch.ones(4, dtype=torch.bool),
        "quant.weight": torch.quantize_per_tensor(torch.randn(32, 32, generator=g), 0.05, 0, torch.qint8),
    }
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    out = tmp_path / "report"
    assert main(["fit", str(path), "--out", str(out), "--kinds", "conv,linear,embedding,norm,bias,other", "--no-plots", "--quiet"]) == 0
    import pandas as pd

    table = pd.read_csv(out / "layers.csv", keep_default_na=False).drop_duplicates("layer").set_index("layer")
    assert table.loc["nan.weight", "n_nonfinite"] == 3 and table.loc["nan.weight", "n"] == 32 * 32 - 3
    assert table.loc["zero.weight", "status"] == "constant (all values 0)"
    assert table.loc["const.weight", "status"] == "constant (all values 0.5)"
    assert table.loc["one.weight", "status"] == "too few values (n=1 < 8)"
    assert table.loc["half.weight", "dtype"] == "float16" and table.loc["half.weight", "best"] != ""
    assert table.loc["bf16.weight", "dtype"] == "bfloat16"
    assert "not analysed" in table.loc["steps", "status"] and "not analysed" in table.loc["mask", "status"]
    assert "dequantized" in table.loc["quant.weight", "status"]
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["nonfinite_values"] == 3
    assert sum(summary["layer_status_counts"].values()) == len(state)
    # With the default kinds the integer and boolean buffers are not rows, but they are still counted.
    default = tmp_path / "default"
    assert main(["fit", str(path), "--out", str(default), "--no-plots", "--quiet"]) == 0
    skipped = json.loads((default / "summary.json").read_text())["tensors_skipped"]
    assert skipped == {"integer, boolean or complex tensors": 2}
    assert "Tensors not analysed: 2 integer, boolean or complex tensors" in (default / "report.md").read_text()


def test_half_precision_is_analysed_in_float64_exactly():
    t = torch.randn(100, 7).half()
    b = torch.randn(100, 7).bfloat16()
    layers = {l.name: l for l in extract_layers({"h.weight": t, "b.weight": b})}
    assert layers["h.weight"].values.dtype == np.float64
    assert np.array_equal(layers["h.weight"].values, t.float().double().flatten().numpy())
    assert np.array_equal(layers["b.weight"].values, b.float().double().flatten().numpy())


# --- fuzzing ---------------------------------------------------------------------------------------


def _load_and_extract(path: Path) -> None:
    try:
        extract_layers(open_weights(path), kinds=("conv", "linear", "embedding", "norm", "bias", "other"))
    except WeightdistError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".pt", ".pth", ".bin", ".safetensors"]))
def test_random_bytes_load_or_weightdist_error(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    _load_and_extract(path)


def _real_checkpoint_bytes(kind: str) -> bytes:
    import io

    from bad_inputs import safetensors_bytes

    if kind == "safetensors":
        return safetensors_bytes({k: v.float() for k, v in small_state().items()})
    buf = io.BytesIO()
    torch.save(small_state(), buf, _use_new_zipfile_serialization=(kind == "zip"))
    return buf.getvalue()


REAL = {kind: _real_checkpoint_bytes(kind) for kind in ("safetensors", "zip", "legacy")}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(REAL)), edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_mutated_real_checkpoints_load_or_weightdist_error(tmp_path, kind, edits, cut):
    data = bytearray(REAL[kind])
    for where, byte in edits:  # overwrite bytes, biased to the header where parsers are most fragile
        pos = int(where * where * (len(data) - 1))
        data[pos] = byte
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path / ("m.safetensors" if kind == "safetensors" else "m.pt")
    path.write_bytes(bytes(data))
    _load_and_extract(path)


def test_meta_and_sparse_tensors_are_reported_per_layer(tmp_path):
    g = torch.Generator().manual_seed(1)
    dense = torch.randn(16, 8, 3, 3, generator=g)
    state = {"sparse.weight": dense.to_sparse(), "meta.weight": torch.empty(16, 8, device="meta"),
             "dense.weight": dense.clone()}
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    out = tmp_path / "report"
    assert main(["fit", str(path), "--out", str(out), "--no-plots", "--quiet"]) == 0
    import pandas as pd

    table = pd.read_csv(out / "layers.csv", keep_default_na=False)
    rows = table.drop_duplicates("layer").set_index("layer")
    assert "meta tensor" in rows.loc["meta.weight", "status"] and rows.loc["meta.weight", "n"] == 0
    assert "densified" in rows.loc["sparse.weight", "status"]
    # The densified values are the dense tensor's: the same fits to the last digit.
    fits = table[table["family"] != ""].set_index(["layer", "family"])["loglik"]
    assert fits.loc["sparse.weight"].equals(fits.loc["dense.weight"])


def test_a_nul_byte_in_a_shard_name_and_an_over_long_out_are_one_line(tmp_path, capsys):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"weight_map": {"a.weight": "m-1.safetensors\\u0000x"}}')
    assert main(["fit", str(index), "--out", str(tmp_path / "r"), "--no-plots", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "NUL byte" in err and err.count("\n") == 1
    assert main(["fit", "resnet20_fashionmnist", "--out", str(tmp_path / ("a" * 300)), "--no-plots", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "longer than this file system allows" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors.index.json"]  # nothing written
