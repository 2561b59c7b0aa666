"""GGUF, ONNX, TorchScript and the Hugging Face cache, each checked against the format's own reader
on small files the tests write; bad input gets one line, never a traceback or a read outside the folder."""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from weightdist.errors import CheckpointError, WeightdistError, WeightsNotCachedError
from weightdist.sources import list_models, load_model, open_model
from weightdist.sources.extract import KINDS, extract_layers

gguf = pytest.importorskip("gguf", reason="pip install gguf")
onnx = pytest.importorskip("onnx", reason="pip install onnx")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


# --- GGUF --------------------------------------------------------------------------------------------


def _write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, Q | None]]) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny test model")
    w.add_string("general.license", "apache-2.0")
    for name, (values, qtype) in tensors.items():
        if qtype is None:
            w.add_tensor(name, values)
        else:
            w.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture
def gguf_file(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "token_embd.weight": (rng.standard_normal((16, 32)).astype(np.float16), None),
        "blk.0.attn_q.weight": (rng.standard_normal((32, 32)).astype(np.float32), None),
        "blk.0.ffn_up.weight": (rng.standard_normal((8, 64)).astype(np.float32), Q.BF16),
        "blk.0.ffn_down.weight": (rng.standard_normal((8, 256)).astype(np.float32), Q.Q8_0),
        "blk.0.attn_norm.weight": (np.ones(32, np.float32), None),
    }
    path = tmp_path / "tiny.gguf"
    _write_gguf(path, tensors)
    return path, tensors


def test_gguf_values_and_quantized_flags_against_gguf(gguf_file):
    path, tensors = gguf_file
    opened = open_model(str(path))
    infos = {t.name: t for t in opened.tensor_infos()}
    assert infos["token_embd.weight"].dtype == "float16" and infos["token_embd.weight"].shape == (16, 32)
    assert infos["blk.0.ffn_up.weight"].dtype == "bfloat16" and infos["blk.0.ffn_up.weight"].quantized is None
    assert infos["blk.0.ffn_down.weight"].quantized == "Q8_0" and infos["blk.0.ffn_down.weight"].shape == (8, 256)
    # Plain types are the written values exactly; BF16 is the float32 values truncated to bfloat16.
    assert np.array_equal(opened.read("token_embd.weight").numpy(), tensors["token_embd.weight"][0])
    assert np.array_equal(opened.read("blk.0.attn_q.weight").numpy(), tensors["blk.0.attn_q.weight"][0])
    up = tensors["blk.0.ffn_up.weight"][0]
    assert torch.equal(opened.read("blk.0.ffn_up.weight"), torch.from_numpy(up).bfloat16().float())
    # Q8_0: gguf's own reader + dequantize on the same bytes, and close to the values before quantizing.
    reader = gguf.GGUFReader(str(path))
    raw = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    expected = gguf.quants.dequantize(raw.data, raw.tensor_type)
    down = opened.read("blk.0.ffn_down.weight").numpy()
    assert np.array_equal(down, expected) and np.abs(down - tensors["blk.0.ffn_down.weight"][0]).max() < 0.05
    assert opened.info.licence == "apache-2.0" and "tiny test model" in opened.info.provenance


def test_gguf_layers_carry_the_quantized_type_into_the_table(gguf_file):
    from weightdist.api import fit_model
    from weightdist.reporting.report import headline_stats

    path, _ = gguf_file
    layers = {l.name: l for l in extract_layers(load_model(str(path)), kinds=KINDS)}
    assert layers["blk.0.ffn_down.weight"].quantized == "Q8_0" and "Q8_0" in layers["blk.0.ffn_down.weight"].note
    assert layers["token_embd.weight"].kind == "embedding" and layers["blk.0.attn_norm.weight"].kind == "norm"
    table = fit_model(str(path), families=("gaussian", "laplace"), intervals=False)
    per_layer = table.drop_duplicates("layer").set_index("layer")["quantized"]
    assert per_layer["blk.0.ffn_down.weight"] == "Q8_0" and per_layer["blk.0.attn_q.weight"] == ""
    default, asked = headline_stats(table), headline_stats(table, include_quantized=True)
    assert sum(default["wins"].values()) == 3 and default["n_layers_quantized_excluded"] == 1
    assert sum(asked["wins"].values()) == 4 and "n_layers_quantized_excluded" not in asked


def test_truncated_gguf_is_one_line(gguf_file, tmp_path):
    path, _ = gguf_file
    data = path.read_bytes()
    for n in (10, len(data) // 3, len(data) - 100):
        cut = tmp_path / f"cut{n}.gguf"
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match=r"cut\d+\.gguf: (not a readable GGUF file|tensor .* lies beyond the end)") as info:
            extract_layers(load_model(str(cut)))
        _one_line(info)


def test_gguf_header_that_lies_is_one_line(gguf_file, tmp_path):
    path, _ = gguf_file
    data = bytearray(path.read_bytes())
    # Header: magic, version (u32), tensor count (u64), kv count (u64). Claim 2**40 tensors.
    lying = tmp_path / "count.gguf"
    lying.write_bytes(bytes(data[:8]) + struct.pack("<Q", 2 ** 40) + bytes(data[16:]))
    with pytest.raises(CheckpointError, match=r"count\.gguf: not a readable GGUF file") as info:
        load_model(str(lying))
    _one_line(info)
    # A tensor offset far beyond the end of the file: patch the last tensor-info's u64 offset.
    reader = gguf.GGUFReader(str(path))
    field = reader.tensors[-1].field
    offset_at = int(field.offset) + sum(p.nbytes for p in field.parts[:-1])
    bad = bytearray(data)
    bad[offset_at:offset_at + 8] = struct.pack("<Q", 10 ** 9)
    far = tmp_path / "offset.gguf"
    far.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match=r"offset\.gguf: (not a readable GGUF file|tensor .* lies beyond the end)") as info:
        load_model(str(far))
    _one_line(info)


def test_gguf_not_gguf_and_init(tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("not a model at all, just some words\n" * 10)
    with pytest.raises(CheckpointError, match=r"notes\.gguf: not a readable GGUF file"):
        load_model(str(text))
    with pytest.raises(CheckpointError, match=r"no such file: .*gone\.gguf"):
        load_model(str(tmp_path / "gone.gguf"))
    with pytest.raises(WeightdistError, match="--init needs a named architecture"):
        load_model(str(text), init=True)


# --- ONNX ----------------------------------------------------------------------------------------------


def _onnx_model(weights: dict[str, np.ndarray], extra_nodes=()) -> "onnx.ModelProto":
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    nodes = [helper.make_node("MatMul", ["X", "W"], ["H"]), helper.make_node("Add", ["H", "B"], ["Y"]), *extra_nodes]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph)


def _weights():
    rng = np.random.default_rng(1)
    return {"W": rng.standard_normal((4, 3)).astype(np.float32), "B": rng.standard_normal(3).astype(np.float16),
            "steps": np.arange(3, dtype=np.int64)}


@pytest.mark.parametrize("external", [False, True])
def test_onnx_initializers_against_numpy_helper(tmp_path, external):
    path = tmp_path / "m.onnx"
    model = _onnx_model(_weights())
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="m.data", size_threshold=0)
        assert (tmp_path / "m.data").is_file()
    else:
        onnx.save_model(model, str(path))
    opened = open_model(str(path))
    reference = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}  # onnx resolves external data itself
    assert {t.name: (t.shape, t.dtype) for t in opened.tensor_infos()} == {"W": ((4, 3), "float32"), "B": ((3,), "float16"), "steps": ((3,), "int64")}
    for name, values in reference.items():
        assert np.array_equal(opened.read(name).numpy(), values)
    layers = {l.name: l for l in extract_layers(load_model(str(path)), kinds=KINDS)}
    # Kinds come from the graph: W feeds MatMul, B is added to its output; steps feeds nothing.
    assert (layers["W"].kind, layers["B"].kind, layers["steps"].kind) == ("linear", "bias", "other")
    assert layers["steps"].values.size == 0


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin", "link.bin"])
def test_onnx_external_data_outside_the_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    secret = tmp_path / "outside.bin"
    secret.write_bytes(np.zeros(12, np.float32).tobytes())
    (folder / "link.bin").symlink_to(secret)  # a symlink that leads out of the folder
    model = _onnx_model({"W": np.ones((4, 3), np.float32), "B": np.ones(3, np.float32)})
    w = model.graph.initializer[0]
    w.ClearField("float_data")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "m.onnx"
    onnx.save_model(model, str(path))
    opened = open_model(str(path))  # opening reads no external data
    with pytest.raises(CheckpointError, match=r"external data of tensor 'W' points outside the model's folder") as info:
        opened.read("W")
    _one_line(info)


def test_onnx_external_data_shorter_than_the_tensor_is_refused(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(_onnx_model(_weights()), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.data", size_threshold=0)
    data = tmp_path / "m.data"
    data.write_bytes(data.read_bytes()[:20])
    with pytest.raises(CheckpointError, match=r"does not fit m\.data"):
        extract_layers(load_model(str(path)), kinds=KINDS)


def test_onnx_graph_that_computes_its_weights_gets_a_clear_message(tmp_path):
    node = helper.make_node("RandomNormal", [], ["W"], shape=[4, 3])
    nodes = [node, helper.make_node("MatMul", ["X", "W"], ["Y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "computed.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    with pytest.raises(CheckpointError, match=r"computed\.onnx: no stored weights to analyse \(it computes them with RandomNormal nodes\)") as info:
        load_model(str(path))
    _one_line(info)


def test_onnx_constant_nodes_count_as_stored_weights_and_garbage_is_one_line(tmp_path):
    const = helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "w"))
    graph = helper.make_graph([const, helper.make_node("MatMul", ["X", "W"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "const.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    assert np.array_equal(open_model(str(path)).read("W").numpy(), np.eye(4, 3, dtype=np.float32))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"junk\.onnx: not a readable ONNX model"):
        load_model(str(junk))


# --- TorchScript ----------------------------------------------------------------------------------------


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)])
        self.register_buffer("scale", torch.arange(6.0).reshape(2, 3).t())  # non-contiguous: strides matter

    def forward(self, x):
        h = self.bn(self.conv(x)).mean((2, 3))
        for block in self.blocks:
            h = block(h)
        return h


@pytest.fixture
def scripted(tmp_path):
    torch.manual_seed(0)
    net = _Net()
    path = tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated; the archives it writes are what we read
        torch.jit.save(torch.jit.script(net), str(path))
    return path, net


def test_torchscript_tensors_equal_the_state_dict_without_running_code(scripted, monkeypatch):
    path, net = scripted

    def forbidden(*a, **k):
        raise AssertionError("torch.jit.load runs archive code")

    monkeypatch.setattr(torch.jit, "load", forbidden)
    opened = open_model(str(path))
    assert type(opened).__name__ == "TorchScriptModel"
    state = net.state_dict()
    assert {t.name for t in opened.tensor_infos()} == set(state)
    for name, value in state.items():
        assert torch.equal(opened.read(name), value), name
    layers = {l.name: l for l in extract_layers(load_model(str(path)), kinds=KINDS)}
    assert layers["blocks.0.weight"].kind == "linear" and layers["conv.weight"].kind == "conv"


def _archive_with_pickle(path: Path, payload: bytes) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("net/data.pkl", payload)
        z.writestr("net/constants.pkl", pickle.dumps(()))
        z.writestr("net/code/__torch__.py", "")


def test_torchscript_archive_calling_python_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    _archive_with_pickle(path, pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match=r"evil\.pt: TorchScript archive needs more than tensors to rebuild \(GLOBAL (posix|os)\.system\)") as info:
        load_model(str(path))
    _one_line(info)
    assert not marker.exists()


def test_torchscript_storage_shorter_than_its_tensor_is_refused(scripted, tmp_path):
    path, _ = scripted
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    key = next(n for n in entries if n.endswith("/data.pkl"))
    # Shrink one storage entry: the tensor now reaches past its storage.
    victim = next(n for n in entries if "/data/" in n and len(entries[n]) > 16)
    entries[victim] = entries[victim][:8]
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(bad, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    opened = open_model(str(bad))
    with pytest.raises(CheckpointError, match=r"bad\.pt: archive entry .* holds 8 bytes"):
        for t in opened.tensor_infos():
            opened.read(t.name)
    assert key


def test_torchscript_pickle_of_shared_references_is_walked_once(tmp_path):
    # The pickle memo makes x = [x, x] nested 80 deep a few hundred bytes; walked as a tree it is 2^80 paths.
    tree: list = []
    for _ in range(80):
        tree = [tree, tree]
    path = tmp_path / "dag.pt"
    _archive_with_pickle(path, pickle.dumps({"w": tree}, protocol=2))
    with pytest.raises(CheckpointError, match=r"dag\.pt: the TorchScript archive holds no tensors") as info:
        load_model(str(path))
    _one_line(info)


class _Storage64M:
    pass


def test_torchscript_reads_only_the_bytes_a_tensor_spans(tmp_path):
    import tracemalloc

    class Rebuild:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (_Storage64M, 2, (3, 4), (4, 1), False, {}))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 2**24) if obj is _Storage64M else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"w": Rebuild()})
    values = np.zeros(2**24, dtype="<f4")
    values[:14] = np.arange(14)
    path = tmp_path / "bomb.pt"
    _archive_with_pickle(path, buf.getvalue())
    with zipfile.ZipFile(path, "a") as z:  # 64 MB of storage, deflated to a few KB
        z.writestr("net/data/0", values.tobytes(), compress_type=zipfile.ZIP_DEFLATED)
    opened = open_model(str(path))
    tracemalloc.start()
    try:
        tensor = opened.read("w")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert torch.equal(tensor, torch.arange(2, 14, dtype=torch.float32).reshape(3, 4))
    assert peak < 8 * 2**20, peak


@pytest.mark.parametrize("size,stride,message", [
    ((2**62, 4), (0, 1), r"claims 18,446,744,073,709,551,616 elements"),  # past int64: torch would raise RuntimeError
    ((4, 4), (1,), r"has 2 sizes but 1 strides"),
])
def test_torchscript_record_with_impossible_shape_is_one_line(tmp_path, size, stride, message):
    class Rebuild:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (_Storage64M, 0, size, stride, False, {}))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 4) if obj is _Storage64M else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"w": Rebuild()})
    path = tmp_path / "lies.pt"
    _archive_with_pickle(path, buf.getvalue())
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("net/data/0", bytes(16))
    with pytest.raises(CheckpointError, match=r"lies\.pt: tensor 'w' " + message) as info:
        open_model(str(path)).read("w")
    _one_line(info)


def test_torchscript_views_of_one_storage_are_one_layer(tmp_path):
    """200 names for one view of one storage (a 4 MB archive once took 215 s as 3,000 fits) are one layer."""
    from collections import Counter

    from weightdist.sources.extract import SKIP_REASONS, layer_infos

    def view(offset):
        class Rebuild:
            def __reduce__(self):
                return (torch._utils._rebuild_tensor_v2, (_Storage64M, offset, (8, 8), (8, 1), False, {}))
        return Rebuild()

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 128) if obj is _Storage64M else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({**{f"l{i}.weight": view(0) for i in range(200)}, "other.weight": view(64)})
    path = tmp_path / "views.pt"
    _archive_with_pickle(path, buf.getvalue())
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("net/data/0", np.arange(128, dtype="<f4").tobytes())
    skipped: Counter = Counter()
    infos = layer_infos(load_model(str(path)), kinds=KINDS, skipped=skipped)
    assert [i.name for i in infos] == ["l0.weight", "other.weight"]  # another offset is another tensor
    assert skipped[SKIP_REASONS[5]] == 199


def test_a_torch_save_zip_is_not_taken_for_torchscript(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"fc.weight": torch.ones(2, 2)}, path)
    assert type(open_model(str(path))).__name__ == "LoadedModel"


# --- Hugging Face cache -----------------------------------------------------------------------------


def _fake_hf_repo(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = "a" * 40, ref: str = "main") -> Path:
    """The on-disk layout huggingface_hub writes: models--org--name/{refs/<ref>, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    snap = repo / "snapshots" / commit
    for name, data in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)
    return snap


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def _safetensors_bytes(tmp_path, state) -> bytes:
    path = tmp_path / "tmp.safetensors"
    save_file(state, str(path))
    return path.read_bytes()


def test_hf_snapshot_from_the_local_cache(hf_cache, tmp_path):
    state = {"encoder.weight": torch.randn(8, 4), "encoder.bias": torch.zeros(8)}
    card = b"---\nlicense: mit\ndatasets:\n- my/dataset\n---\n# a model\n"
    snap = _fake_hf_repo(hf_cache, "org/tiny", {"model.safetensors": _safetensors_bytes(tmp_path, state), "README.md": card})
    loaded = load_model("hf:org/tiny")
    assert loaded.name == "org/tiny" and loaded.source.startswith("hf org/tiny@aaaaaaaa")
    assert loaded.path == str(snap / "model.safetensors")
    reference = load_file(str(snap / "model.safetensors"))
    assert set(loaded.tensors) == set(reference) and all(torch.equal(loaded.tensors[k], v) for k, v in reference.items())
    assert loaded.info.licence == "mit" and loaded.info.training_data == "my/dataset"
    assert "hf:org/tiny" in list_models("hf:*") and "hf:org/tiny" not in list_models()


def test_hf_revision_and_pytorch_bin(hf_cache, tmp_path):
    buf = io.BytesIO()
    torch.save({"fc.weight": torch.ones(3, 3)}, buf)
    _fake_hf_repo(hf_cache, "org/old", {"pytorch_model.bin": buf.getvalue()}, commit="b" * 40, ref="v1")
    loaded = load_model("hf:org/old@v1")
    assert torch.equal(loaded.tensors["fc.weight"], torch.ones(3, 3)) and loaded.info.licence == "unknown"
    with pytest.raises(WeightsNotCachedError, match=r"hf:org/old@v2 is not in the Hugging Face cache .*'hf download org/old --revision v2'"):
        load_model("hf:org/old@v2")


def test_hf_missing_entry_names_the_download_command(hf_cache):
    with pytest.raises(WeightsNotCachedError, match=rf"hf:org/absent is not in the Hugging Face cache \(looked in {hf_cache}.*'hf download org/absent'") as info:
        load_model("hf:org/absent")
    _one_line(info)


def test_hf_snapshot_without_weights(hf_cache):
    _fake_hf_repo(hf_cache, "org/cardonly", {"README.md": b"# nothing\n", "config.json": b"{}"})
    with pytest.raises(CheckpointError, match=r"no weights file in this snapshot .*found README\.md, config\.json|found config\.json, README\.md"):
        load_model("hf:org/cardonly")


def test_hf_snapshot_of_symlinked_blobs_with_onnx_external_data(hf_cache, tmp_path):
    """huggingface_hub stores files in blobs/ and links them from the snapshot: the links stay in the repo."""
    work = tmp_path / "export"
    work.mkdir()
    onnx.save_model(_onnx_model(_weights()), str(work / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx_data", size_threshold=0)
    repo = hf_cache / "models--org--graph"
    commit = "c" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for i, name in enumerate(("model.onnx", "model.onnx_data")):
        (repo / "blobs" / f"blob{i}").write_bytes((work / name).read_bytes())
        (snap / name).symlink_to(Path("..", "..", "blobs", f"blob{i}"))
    opened = open_model("hf:org/graph")
    reference = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(work / "model.onnx")).graph.initializer}
    assert opened.name == "org/graph" and all(np.array_equal(opened.read(k).numpy(), v) for k, v in reference.items())


def test_fit_cli_reports_quantized_layers_and_counts_them_when_asked(gguf_file, tmp_path):
    from weightdist.cli import main

    path, _ = gguf_file
    base = ["fit", str(path), "--no-plots", "--quiet", "--families", "gaussian,laplace", "--no-intervals"]
    assert main([*base, "--out", str(tmp_path / "default")]) == 0
    assert main([*base, "--out", str(tmp_path / "asked"), "--include-quantized"]) == 0
    default = json.loads((tmp_path / "default" / "summary.json").read_text())
    asked = json.loads((tmp_path / "asked" / "summary.json").read_text())
    assert default["n_layers_quantized_excluded"] == 1 and sum(default["wins"].values()) == 3
    assert asked["options"]["include_quantized"] is True and sum(asked["wins"].values()) == 4
    assert default["model_info"]["licence"] == "apache-2.0"
    assert "**Quantized:** 1 layers stored quantized" in (tmp_path / "default" / "report.md").read_text()
