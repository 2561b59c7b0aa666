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


def _save_protocol(tmp: Path, name: str, obj, protocol: int) -> Path:
    path = tmp / name
    torch.save(obj, path, pickle_protocol=protocol)  # a real torch.save file the weights-only loader cannot read
    return path


def _protocol0_payload(tmp: Path) -> Path:
    """A payload pickled with protocol 0 (text opcodes torch.save never writes): refused before anything runs."""
    import pickle

    path = tmp / "old0.pth"
    path.write_bytes(pickle.dumps({"x": Payload(tmp / MARKER_NAME), "w": [1.0, 2.0]}, protocol=0))
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
    ("pickle-protocol-0-payload", _protocol0_payload,
     r"old0\.pth: torch's safe \(weights-only\) loader cannot read it \(pickle opcode '.', a protocol 0/1 pickle, which "
     r"torch\.save never writes\); nothing in it was run; re-save"),
    ("pickle-protocol-3-bytes", lambda tmp: _save_protocol(tmp, "p3.pth", {"meta": b"abc", **small_state()}, 3),
     r"p3\.pth: torch's safe \(weights-only\) loader cannot read it \(pickle opcode 'C'\); nothing in it was run"),
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


# --- issue 14: hostile structure, escapes through symlinks, misleading messages ----------------------


def _cyclic_dict(tmp: Path) -> Path:
    state = dict(FLOAT_STATE)
    state["again"] = state  # pickle keeps the cycle
    return _save(tmp, "cyclic.pth", state)


def _deep_dict(tmp: Path, depth: int = 3000) -> Path:
    import sys

    root = {"fc.weight": FLOAT_STATE["fc.weight"]}
    node = root
    for _ in range(depth):
        node["n"] = {}
        node = node["n"]
    node["x.weight"] = torch.ones(4, 4)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * depth))  # pickling itself recurses
    try:
        return _save(tmp, "deep.pth", root)
    finally:
        sys.setrecursionlimit(limit)


def _stride_zero_bomb(tmp: Path) -> Path:
    """1 KB on disk: one float viewed with stride 0 as 10^6 x 10^6 (8 TB as float64)."""
    return _save(tmp, "bomb.pth", {"w.weight": torch.ones(1).as_strided((10**6, 10**6), (0, 0))})


def _shard_through_symlink(tmp: Path) -> Path:
    (tmp / "secret").mkdir()
    torch.save(small_state(), tmp / "secret" / "private.bin")
    (tmp / "inner").mkdir()
    (tmp / "inner" / "pytorch_model-00001-of-00001.bin").symlink_to(tmp / "secret" / "private.bin")
    return _index(tmp / "inner", "pytorch_model.bin.index.json", {"conv.weight": "pytorch_model-00001-of-00001.bin"})


def _shard_through_symlinked_folder(tmp: Path) -> Path:
    (tmp / "secret").mkdir()
    torch.save(small_state(), tmp / "secret" / "private.bin")
    (tmp / "inner").mkdir()
    (tmp / "inner" / "sub").symlink_to(tmp / "secret", target_is_directory=True)
    return _index(tmp / "inner", "pytorch_model.bin.index.json", {"conv.weight": "sub/private.bin"})


def _fifo_shard(tmp: Path) -> Path:
    import os

    os.mkfifo(tmp / "model-00001-of-00001.safetensors")
    return _index(tmp, "model.safetensors.index.json", {"conv.weight": "model-00001-of-00001.safetensors"})


def _symlink_loop(tmp: Path) -> Path:
    (tmp / "a.pth").symlink_to(tmp / "b.pth")
    (tmp / "b.pth").symlink_to(tmp / "a.pth")
    return tmp / "a.pth"


def _dangling_symlink(tmp: Path) -> Path:
    (tmp / "w.pth").symlink_to(tmp / "gone.pth")
    return tmp / "w.pth"


def _index_names_only_tensors_its_shard_lacks(tmp: Path) -> Path:
    from safetensors.torch import save_file

    save_file(FLOAT_STATE, str(tmp / "model-00001-of-00001.safetensors"))
    return _index(tmp, "model.safetensors.index.json", {"ghost.weight": "model-00001-of-00001.safetensors"})


def _deep_index(tmp: Path) -> Path:
    path = tmp / "model.safetensors.index.json"
    path.write_text('{"weight_map": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return path


HARDENING_CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("dict-containing-itself", _cyclic_dict, r"cyclic\.pth: a dict in it contains itself"),
    ("dicts-nested-3000-deep", _deep_dict, r"deep\.pth: dicts nested more than 64 deep"),
    ("stride-zero-view-8-terabytes", _stride_zero_bomb, r"tensor 'w\.weight' \(1000000x1000000 = .*GiB as float64, over the .*--max-per-layer"),
    ("weight-map-value-is-a-list", lambda tmp: _index(tmp, "model.safetensors.index.json", {"a.weight": ["x.safetensors"]}),
     r"weight_map\['a\.weight'\] is a JSON list, not a shard file name"),
    ("weight-map-value-is-a-dict", lambda tmp: _index(tmp, "model.safetensors.index.json", {"a.weight": {"f": 1}}),
     r"weight_map\['a\.weight'\] is a JSON dict, not a shard file name"),
    ("index-nested-100k-deep", _deep_index, r"model\.safetensors\.index\.json: not a shard index"),
    ("shard-is-a-symlink-out-of-the-folder", _shard_through_symlink, r"shard 'pytorch_model-00001-of-00001\.bin' is a symlink whose real path .* leaves the index's folder"),
    ("shard-through-a-symlinked-folder", _shard_through_symlinked_folder, r"shard 'sub/private\.bin' is a symlink whose real path .* leaves the index's folder"),
    ("shard-is-a-fifo", _fifo_shard, r"shard 'model-00001-of-00001\.safetensors': .* is not a regular file"),
    ("symlink-loop", _symlink_loop, r"a\.pth is a symlink loop"),
    ("dangling-symlink", _dangling_symlink, r"w\.pth is a symlink to '.*gone\.pth', which does not exist"),
    ("index-and-shard-share-no-name", _index_names_only_tensors_its_shard_lacks,
     r"lists 'ghost\.weight' in model-00001-of-00001\.safetensors, but that shard does not hold it"),
]
BAD_INPUT_CASES += HARDENING_CASES
