"""What a scan's workers do per unit, beside the fit: no hashing (the weights digest is lazy, computed once
per model while planning, checked against hashlib), models kept open while they fit a memory budget, and
the next unit started before the driver commits the last one."""
from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import weightdist.scan as scan_module
import weightdist.sources as sources
import weightdist.sources.hub as hub
from weightdist.engines import get_engine
from weightdist.pipeline import FitOptions
from weightdist.scan import PlanTask, ScanModel, fit_unit, plan_model, scan
from weightdist.sources import load_model, open_model
from weightdist.stores.parquet import ParquetStore

HASH_LOG = "hashed.txt"


def _student_t(shape, seed: int) -> torch.Tensor:
    return torch.from_numpy((0.05 * np.random.default_rng(seed).standard_t(4, size=shape)).astype(np.float32))


def _safetensors(path: Path) -> Path:
    save_file({"a.fc.weight": _student_t((24, 32), 0), "b.fc.weight": _student_t((16, 8), 1)}, str(path))
    return path


def _pth(path: Path) -> Path:
    torch.save({"c.fc.weight": _student_t((20, 12), 2), "d.conv.weight": _student_t((8, 3, 3, 3), 3)}, path)
    return path


def _shards(folder: Path) -> Path:
    import json

    save_file({"a.weight": _student_t((8, 8), 4)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b.weight": _student_t((8, 8), 5)}, str(folder / "model-00002-of-00002.safetensors"))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                                "b.weight": "model-00002-of-00002.safetensors"}}))
    return index


def _gguf(path: Path) -> Path:
    gguf = pytest.importorskip("gguf", reason="pip install gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("blk.0.attn_q.weight", _student_t((16, 16), 6).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx", reason="pip install onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(_student_t((4, 3), 7).numpy(), "W")])
    onnx.save(helper.make_model(graph), str(path))
    return path


def _torchscript(path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated; the archives it writes are what we read
        torch.jit.save(torch.jit.script(torch.nn.Linear(4, 3)), str(path))
    return path


WRITERS = {"safetensors": (_safetensors, "m.safetensors"), "pth": (_pth, "m.pth"), "gguf": (_gguf, "m.gguf"),
           "onnx": (_onnx, "m.onnx"), "torchscript": (_torchscript, "m.pt")}


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The files hashed in this process from now on (every digest goes through hub.sha256_of)."""
    calls: list[str] = []
    real = hub.sha256_of

    def counting(path):
        calls.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(hub, "sha256_of", counting)
    return calls


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_opening_does_not_hash_and_the_digest_is_the_files(kind, tmp_path, hashed):
    write, name = WRITERS[kind]
    path = write(tmp_path / name)
    opened = open_model(str(path))
    assert hashed == []  # opening reads headers only
    repr(opened), opened == opened  # neither hashes the file
    assert hashed == []
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert opened.sha256 == expected and opened.sha256 == expected and hashed == [name]  # computed once, then kept
    assert load_model(str(path)).sha256 == expected and hashed == [name, name]  # the API hashes (and checks) at load


def test_sharded_digest_is_lazy_and_covers_every_shard(tmp_path, hashed):
    index = _shards(tmp_path)
    opened = open_model(str(index))
    assert hashed == []
    digest = opened.sha256
    assert sorted(hashed) == sorted([index.name, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
    assert len(digest) == 64 and digest != hashlib.sha256(index.read_bytes()).hexdigest()


def test_builtin_digest_is_lazy_and_the_package_files(hashed):
    opened = open_model("resnet20_fashionmnist")
    assert hashed == []
    assert opened.sha256 == hashlib.sha256(Path(opened.path).read_bytes()).hexdigest() and len(hashed) == 1


def test_the_assembled_gemma_is_checked_once_then_known_from_its_stamp(tmp_path, hashed):
    """Every worker that opens gemma3-270m checks its cached 253 MB file: by its stamp, not by hashing it."""
    from weightdist.sources.zoo import _is_published

    target = tmp_path / "model.gguf"
    target.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    published = hashlib.sha256(target.read_bytes()).hexdigest()
    assert _is_published(target, published) and hashed == ["model.gguf"]
    assert _is_published(target, published) and hashed == ["model.gguf"]  # the stamp answers
    assert not _is_published(target, "0" * 64) and len(hashed) == 2  # a stamp is for one digest only
    target.write_bytes(b"GGUF" + bytes(64))  # rewritten: size and mtime change, so it is hashed again
    assert not _is_published(target, published) and len(hashed) == 3


# --- in the scan's workers ---------------------------------------------------------------------------

def _logging_hashes(phase: str, target: str):
    """Make this worker process log each file it hashes, with the phase hashing it, beside the models."""
    real = getattr(hub.sha256_of, "real", hub.sha256_of)

    def logged(path):
        with open(Path(target).parent / HASH_LOG, "a") as f:
            f.write(f"{phase} {os.getpid()} {os.path.basename(path)}\n")
        return real(path)

    logged.real = real
    hub.sha256_of = logged


def _plan_logging(task: PlanTask):
    """scan's plan_model in a worker (pickled by reference), logging its hashes."""
    _logging_hashes("plan", task.target)
    return plan_model(task)


def _fit_logging(unit):
    """scan's fit_unit in a worker, logging its hashes; each unit opens its model afresh, as a worker
    that did not plan the model does, so a hash on opening would show up here."""
    _logging_hashes("fit", unit.task.target)
    scan_module._OPENED.clear()
    with open(Path(unit.task.target).parent / "units.txt", "a") as f:
        f.write(f"{unit.layer.name}\n")
    return fit_unit(unit)


def test_scan_hashes_each_model_once_while_planning_and_stores_the_files_digest(tmp_path, monkeypatch):
    models = [_safetensors(tmp_path / "a.safetensors"), _pth(tmp_path / "b.pth")]
    monkeypatch.setattr(scan_module, "plan_model", _plan_logging)
    monkeypatch.setattr(scan_module, "fit_unit", _fit_logging)
    with get_engine("local", 2) as engine:
        summary = scan([ScanModel(str(p)) for p in models], tmp_path / "store", options=FitOptions(families=("gaussian",)),
                       engine=engine, progress=False)
    assert summary.ok and summary.units == 4
    assert len((tmp_path / "units.txt").read_text().split()) == 4  # the logging unit function really ran
    log = [line.split() for line in (tmp_path / HASH_LOG).read_text().splitlines()]
    assert sorted((phase, name) for phase, _, name in log) == [("plan", "a.safetensors"), ("plan", "b.pth")]
    stored = ParquetStore.open(tmp_path / "store").query("SELECT spec, sha256 FROM models")
    assert dict(zip(stored["spec"], stored["sha256"])) == {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in models}


def test_a_worker_keeps_models_open_within_its_budget(tmp_path, monkeypatch):
    """Units run largest first across models, so a worker alternates between them: reopening each time
    would cost more than a small fit. Past the budget only the newest model stays open."""
    paths = [_pth(tmp_path / f"{name}.pth") for name in "abc"]
    tasks = [PlanTask(ScanModel(str(p)), str(p), FitOptions()) for p in paths]
    opened: list[str] = []
    real = sources.open_model
    monkeypatch.setattr(sources, "open_model", lambda spec, **kw: opened.append(spec) or real(spec, **kw))
    monkeypatch.setattr(scan_module, "_OPENED", OrderedDict())
    for _ in range(2):
        for task in tasks:
            assert set(scan_module._open(task).tensors) == {"c.fc.weight", "d.conv.weight"}
    assert opened == [str(p) for p in paths]
    monkeypatch.setattr(scan_module, "_OPENED_BYTES", 1)
    scan_module._OPENED.clear()
    opened.clear()
    for _ in range(2):
        for task in tasks:
            scan_module._open(task)
    assert opened == [str(p) for p in paths] * 2 and len(scan_module._OPENED) == 1


def _note_start(item: tuple[str, int]) -> int:
    """A unit that notes (in the worker) when it started."""
    folder, value = item
    with open(Path(folder) / "starts.txt", "a") as f:
        f.write(f"{value} {time.time()}\n")
    return 2 * value


def test_local_engine_starts_the_next_unit_before_the_caller_handles_a_result(tmp_path):
    """The one worker is not idle while the driver commits a unit (here: sleeps)."""
    handled = {}
    with get_engine("local", 1) as engine:
        for (_, value), result in engine.map_unordered(_note_start, [(str(tmp_path), v) for v in range(3)]):
            assert result == 2 * value
            time.sleep(0.5)
            handled[value] = time.time()
    started = {int(v): float(t) for v, t in (line.split() for line in (tmp_path / "starts.txt").read_text().splitlines())}
    assert started[1] < handled[0] and started[2] < handled[1]
