"""A corpus of broken and hostile weight files, built at test time (never committed binaries).

Each case: (id, builder(tmp_path) -> path to pass to the tool, regex the one-line error must match).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable

import torch

MARKER_NAME = "PAYLOAD_RAN"


class Payload:
    """Unpickling this object would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def small_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(8, 4, 3, 3, generator=g), "fc.weight": torch.randn(10, 32, generator=g), "fc.bias": torch.zeros(10)}


def _save(tmp: Path, name: str, obj, legacy: bool = False) -> Path:
    path = tmp / name
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def hostile(suffix: str, legacy: bool = False) -> Callable[[Path], Path]:
    return lambda tmp: _save(tmp, f"evil{suffix}", {"state_dict": small_state(), "x": Payload(tmp / MARKER_NAME)}, legacy)


def full_model_pickle(tmp: Path) -> Path:
    return _save(tmp, "model.pt", torch.nn.Sequential(torch.nn.Linear(4, 2)))


def truncated(legacy: bool) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = _save(tmp, "cut.pth", small_state(), legacy)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path

    return build


def safetensors_bytes(tensors: dict[str, torch.Tensor], lie: Callable[[dict], None] | None = None) -> bytes:
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if lie:
        lie(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


def _offsets_past_end(header: dict) -> None:
    header["fc.weight"]["data_offsets"][1] += 4096


def _shape_mismatch(header: dict) -> None:
    header["conv.weight"]["shape"] = [8, 4, 3, 4]


FLOAT_STATE = {k: v.float() for k, v in small_state().items()}
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def write(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(data)
        return path

    return build


def directory(tmp: Path) -> Path:
    path = tmp / "weights.pth"
    path.mkdir()
    return path


def _unknown_protocol(tmp: Path) -> Path:
    """A cut legacy checkpoint whose pickle claims protocol 218: torch warns, then fails (the warning must not leak)."""
    path = _save(tmp, "proto.pt", small_state(), legacy=True)
    data = bytearray(path.read_bytes())[:300]
    data[1] = 218
    path.write_bytes(bytes(data))
    return path


def _zip_not_torch(tmp: Path) -> Path:
    import zipfile

    path = tmp / "archive.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "a zip file, but not a PyTorch checkpoint")
    return path


def _index(tmp: Path, name: str, weight_map: dict | str) -> Path:
    path = tmp / name
    path.write_text(weight_map if isinstance(weight_map, str) else json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def _hostile_shard(tmp: Path) -> Path:
    """A shard index whose second shard carries a payload: refused when that shard is reached."""
    torch.save(small_state(), tmp / "pytorch_model-00001-of-00002.bin")
    torch.save({"x.weight": torch.ones(2, 2), "y": Payload(tmp / MARKER_NAME)}, tmp / "pytorch_model-00002-of-00002.bin")
    return _index(tmp, "pytorch_model.bin.index.json", {"conv.weight": "pytorch_model-00001-of-00002.bin",
                                                       "x.weight": "pytorch_model-00002-of-00002.bin"})


def _escaping_shard(tmp: Path) -> Path:
    (tmp / "inner").mkdir()
    torch.save(small_state(), tmp / "outside.bin")
    return _index(tmp / "inner", "pytorch_model.bin.index.json", {"conv.weight": "../outside.bin"})


def _fifo(tmp: Path) -> Path:
    import os

    path = tmp / "pipe.pth"
    os.mkfifo(path)  # opening it for reading would block until a writer comes
    return path


def _int_safetensors(tmp: Path) -> Path:
    from safetensors.torch import save_file

    path = tmp / "ints.safetensors"
    save_file({"ids": torch.arange(10)}, str(path))
    return path


def _index_names_a_tensor_its_shard_lacks(tmp: Path) -> Path:
    from safetensors.torch import save_file

    save_file(FLOAT_STATE, str(tmp / "model-00001-of-00001.safetensors"))
    return _index(tmp, "model.safetensors.index.json", {"conv.weight": "model-00001-of-00001.safetensors",
                                                       "ghost.weight": "model-00001-of-00001.safetensors"})


def _shards_without_floats(tmp: Path) -> Path:
    torch.save({"ids": torch.arange(10), "step": torch.tensor(3)}, tmp / "pytorch_model-00001-of-00001.bin")
    return _index(tmp, "pytorch_model.bin.index.json", {"ids": "pytorch_model-00001-of-00001.bin", "step": "pytorch_model-00001-of-00001.bin"})


BAD_INPUT_CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("pickle-payload-zip-pth", hostile(".pth"), r"refusing to unpickle .*evil\.pth.*code execution"),
    ("pickle-payload-zip-bin", hostile(".bin"), r"refusing to unpickle .*evil\.bin"),
    ("pickle-payload-zip-pt", hostile(".pt"), r"refusing to unpickle .*evil\.pt"),
    ("pickle-payload-zip-th", hostile(".th"), r"refusing to unpickle .*evil\.th"),
    ("pickle-payload-zip-ckpt", hostile(".ckpt"), r"refusing to unpickle .*evil\.ckpt"),
    ("pickle-payload-legacy-pt", hostile(".pt", legacy=True), r"refusing to unpickle .*evil\.pt"),
    ("pickle-payload-legacy-pth", hostile(".pth", legacy=True), r"refusing to unpickle .*evil\.pth"),
    ("pickle-payload-legacy-bin", hostile(".bin", legacy=True), r"refusing to unpickle .*evil\.bin"),
    ("pickle-payload-in-a-shard", _hostile_shard, r"refusing to unpickle .*pytorch_model-00002-of-00002\.bin"),
    ("full-model-pickle", full_model_pickle, r"refusing to unpickle .*model\.pt.*re-save it as a state_dict"),
    ("full-model-pickle-legacy", lambda tmp: _save(tmp, "old.pt", torch.nn.Linear(4, 2), legacy=True), r"refusing to unpickle .*old\.pt"),
    ("empty-file", write("empty.pth", b""), r"empty\.pth is empty"),
    ("empty-safetensors", write("empty.safetensors", b""), r"empty\.safetensors is empty"),
    ("three-byte-safetensors", write("tiny.safetensors", b"\x01\x02\x03"), r"tiny\.safetensors: invalid safetensors file"),
    ("legacy-pickle-unknown-protocol", _unknown_protocol, r"proto\.pt: not a (readable )?PyTorch checkpoint"),
    ("zip-but-not-torch", _zip_not_torch, r"archive\.pth: not a (readable )?PyTorch checkpoint"),
    ("index-not-json", lambda tmp: _index(tmp, "model.safetensors.index.json", "{not json"), r"model\.safetensors\.index\.json: not a shard index"),
    ("index-shard-missing", lambda tmp: _index(tmp, "model.safetensors.index.json", {"a.weight": "model-00001-of-00001.safetensors"}),
     r"shard file .*model-00001-of-00001\.safetensors is missing"),
    ("index-shard-outside-its-folder", _escaping_shard, r"pytorch_model\.bin\.index\.json: shard path '\.\./outside\.bin' leaves the index's folder"),
    ("safetensors-metadata-only", write("meta.safetensors", struct.pack("<Q", 32) + b'{"__metadata__":{"a":"b"}}      '),
     r"meta\.safetensors: holds no floating-point tensors"),
    ("truncated-zip", truncated(legacy=False), r"cut\.pth: not a readable PyTorch checkpoint"),
    ("truncated-legacy-pickle", truncated(legacy=True), r"cut\.pth: not a (readable )?PyTorch checkpoint"),
    ("safetensors-offsets-past-end", write("lie.safetensors", safetensors_bytes(FLOAT_STATE, _offsets_past_end)), r"lie\.safetensors: invalid safetensors file"),
    ("safetensors-shape-vs-bytes", write("lie.safetensors", safetensors_bytes(FLOAT_STATE, _shape_mismatch)), r"lie\.safetensors: invalid safetensors file"),
    ("safetensors-header-longer-than-file", write("big.safetensors", struct.pack("<Q", 10**9) + b"{}"), r"big\.safetensors: invalid safetensors file"),
    ("safetensors-garbage-header", write("junk.safetensors", struct.pack("<Q", 16) + b"not json at all!"), r"junk\.safetensors: invalid safetensors file"),
    ("wrong-extension", write("weights.txt", b"hello"), r"weights\.txt: unsupported file type '\.txt'"),
    ("png-renamed-pth", write("image.pth", PNG_BYTES), r"image\.pth: not a (readable )?PyTorch checkpoint"),
    ("directory-as-file", directory, r"weights\.pth is a directory"),
    ("missing-path", lambda tmp: tmp / "nope.pth", r"no such file: .*nope\.pth"),
    ("name-too-long", lambda tmp: tmp / ("w" * 300 + ".pth"), r"…w+\.pth: cannot open it \(File name too long\); check the path"),
    ("fifo-as-file", _fifo, r"pipe\.pth is not a regular file"),
    ("no-float-tensors", lambda tmp: _save(tmp, "ints.pt", {"step": torch.tensor(3), "ids": torch.arange(10)}), r"ints\.pt: holds no floating-point tensors"),
    ("no-tensors-at-all", lambda tmp: _save(tmp, "meta.pt", {"epoch": 3, "name": "run"}), r"meta\.pt: holds no tensors"),
    ("safetensors-only-ints", _int_safetensors, r"ints\.safetensors: holds no floating-point tensors"),
    ("index-names-a-tensor-its-shard-lacks", _index_names_a_tensor_its_shard_lacks,
     r"model\.safetensors\.index\.json: lists 'ghost\.weight' in model-00001-of-00001\.safetensors, but that shard does not hold it"),
    ("shards-without-float-tensors", _shards_without_floats, r"pytorch_model\.bin\.index\.json: holds no floating-point tensors"),
]
