"""Read weights from local files without ever executing code from them.

Pickle-based files (.pth .pt .bin .th .ckpt) go through
``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers; anything that needs more (a ``__reduce__`` payload, a whole
pickled ``nn.Module``) is refused. ``.safetensors`` files and sharded
checkpoints are opened lazily so huge models stream one tensor at a time.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Iterable, Iterator

import torch

from ..errors import CheckpointError, one_line
from ..untrusted import UntrustedFileError, read_capped

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".th", ".ckpt")
SUFFIXES = PICKLE_SUFFIXES + (".safetensors",)
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json", ".pth.index.json")
# Keys under which training scripts nest the state dict, most specific first.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "params", "weights",
                   "state_dict_ema", "model_ema", "ema")
_ZIP_MAGIC = b"PK\x03\x04"
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2", "F8_E8M0")  # safetensors header names


def looks_like_file(spec: str) -> bool:
    if "/" in spec or os.sep in spec or spec.endswith(SUFFIXES + INDEX_SUFFIXES):
        return True
    try:
        return Path(spec).exists()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL byte: not a file here
        return False


def module_prefix_names(names: Iterable[str]) -> dict[str, str]:
    """shown name -> stored name. ``nn.DataParallel`` saves every name as ``module.<name>``: the prefix is
    dropped only when every name carries it, so ``module.fc.weight`` beside ``fc.weight`` stays two
    tensors under their own names instead of one silently replacing the other."""
    names = list(names)
    if names and all(n.startswith("module.") for n in names):
        return {n[len("module."):]: n for n in names}
    return {n: n for n in names}


def _check_path(path: Path) -> None:
    try:
        _check_path_unguarded(path)
    except CheckpointError:
        raise
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, a NUL byte in the name, ...
        text = str(path).replace("\0", "\\0")
        shown = text if len(text) <= 200 else f"{text[:100]}…{text[-40:]}"
        raise CheckpointError(f"{shown}: cannot open it ({getattr(exc, 'strerror', None) or one_line(exc)}); check the path") from None


def _check_path_unguarded(path: Path) -> None:
    if "\0" in str(path):
        raise ValueError("the name contains a NUL byte")
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CheckpointError(f"{path} is a symlink loop (its links point back at each other); pass the real weights file") from None
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise CheckpointError(f"{path} is a symlink to {os.readlink(path)!r}, which does not exist; fix the link or pass the real file") from None
        if exc.errno != errno.ENOENT:
            raise
    if not path.exists():
        raise CheckpointError(f"no such file: {path}; check the path")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass a weights file (.pth/.pt/.bin/.safetensors) or an index .json inside it")
    if not path.is_file():  # a FIFO or device would block or never end
        raise CheckpointError(f"{path} is not a regular file (a pipe, socket or device); save the weights to a file and pass that")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied; make the file readable")
    if not str(path).endswith(SUFFIXES + INDEX_SUFFIXES):
        raise CheckpointError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; expected one of {', '.join(SUFFIXES)} or a *.index.json of shards")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or save did not finish")


def load_pickle_checkpoint(path: Path, strip: bool = True) -> Mapping[str, torch.Tensor]:
    """torch.load with weights_only=True, memory-mapped when the file is a zip checkpoint.

    ``strip=False`` keeps names exactly as stored (a shard is looked up by its index's names)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file ({exc.strerror or type(exc).__name__}); check its permissions") from None
    try:
        with warnings.catch_warnings():
            # A corrupt file makes torch warn (e.g. "Detected pickle protocol 218") before it fails; the
            # failure is reported on one line below, so the warnings would only be noise on stderr.
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=head == _ZIP_MAGIC)
    except pickle.UnpicklingError as exc:
        reason = refused_pickle_reason(exc)
        if reason:  # the pickle names Python code to call
            raise CheckpointError(f"refusing to unpickle {path}: it needs code execution ({reason}); "
                                  "re-save it as a state_dict (torch.save(model.state_dict(), ...)) or as .safetensors") from None
        opcode = re.search(r"Unsupported operand (\d+)", str(exc))
        code = chr(int(opcode.group(1))) if opcode and int(opcode.group(1)) < 256 else None
        # A pickle opcode torch's weights-only unpickler has no handler for, in a torch.save archive (zip) or in a
        # text-mode pickle (any other file that trips on one, a PNG say, is just not a checkpoint).
        if code is not None and (head == _ZIP_MAGIC or code in _TEXT_PICKLE_OPCODES):
            origin = ", a protocol 0/1 pickle, which torch.save never writes" if head != _ZIP_MAGIC else ""
            raise CheckpointError(f"{path}: torch's safe (weights-only) loader cannot read it (pickle opcode {code!r}{origin}); "
                                  "nothing in it was run; re-save the weights with torch.save(model.state_dict(), ...) "
                                  "or as .safetensors") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_torch_reason(exc)})") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/ValueError/... for broken archives
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({_torch_reason(exc)})") from None
    return unwrap_state_dict(obj, path, strip)


def refused_pickle_callee(exc: BaseException) -> str | None:
    """What a pickle torch's weights_only unpickler refused wanted to call ("os.system"; "" when it
    does not say), or None when ``exc`` is not such a refusal.

    The one place that reads torch's refusal text (its wording changes between versions)."""
    text = str(exc)
    if not isinstance(exc, pickle.UnpicklingError) and "weights_only" not in text:
        return None
    if "global" not in text.lower() and "reduce" not in text.lower():
        return None
    called = re.search(r"GLOBAL (\S+)", text) or re.search(r"Unsupported globals?: (?:GLOBAL )?(.*?)(?:\. |\.?$)", text)
    return called.group(1) if called else ""


def refused_pickle_reason(exc: BaseException) -> str | None:
    """"it calls os.system" for a refused pickle (see :func:`refused_pickle_callee`), else None."""
    callee = refused_pickle_callee(exc)
    return None if callee is None else f"it calls {callee}" if callee else "it references Python code"


# torch's own advice (allow-listing globals, weights_only=False) would tell users to run a stranger's code.
_TORCH_ADVICE = ("weights_only", "safe_globals", "In PyTorch 2.6", "Please file an issue", "trusted source", "Check the documentation")


# Opcodes only pickle protocols 0 and 1 write (text-mode DICT, LIST, INST, OBJ, PUT, GET, INT, LONG, STRING, UNICODE,
# FLOAT); torch.save uses protocol 2 or later, so a file that needs them was never written by it.
_TEXT_PICKLE_OPCODES = frozenset("dliopgILSVF")


def _torch_reason(exc: BaseException) -> str:
    """torch's error without its advice: the sentences that describe what is wrong with the file."""
    sentences = re.split(r"(?<=[.:])\s+|\n+", str(exc))
    kept = [s for s in sentences if s.strip() and not any(a in s for a in _TORCH_ADVICE)]
    return one_line(" ".join(kept)) if kept else type(exc).__name__


def unwrap_state_dict(obj, path: Path | str, strip: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a bare state dict or of a training checkpoint dict, ``module.`` stripped
    (see :func:`module_prefix_names`; ``strip=False`` keeps names as stored).

    A known wrapper key (``state_dict``, ``model``, ...) wins; otherwise, when the top level
    holds no tensors itself and exactly one entry holds model tensors, that entry is the state
    dict. Optimizer states (``{'state': ..., 'param_groups': ...}``: Adam moments and the like)
    are never taken for weights. Non-tensor values (epochs, metrics, strings) are ignored.
    """
    if isinstance(obj, torch.Tensor):
        return {"tensor": obj}
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors; save model.state_dict() instead")
    for key in STATE_DICT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    else:
        if not any(isinstance(v, torch.Tensor) for v in obj.values()):
            holders = [v for v in obj.values() if isinstance(v, Mapping) and not _is_optimizer_state(v) and _has_tensors(v)]
            if len(holders) == 1:
                obj = holders[0]
    flat = list(_flatten(obj, path))
    tensors = dict(flat)
    if len(tensors) < len(flat):
        seen: set[str] = set()
        twice = next(n for n, _ in flat if n in seen or seen.add(n))
        raise CheckpointError(f"{path}: two tensors are both named {twice[:200]!r} once nested dicts are joined with '.'; "
                              "save a flat state_dict (torch.save(model.state_dict(), ...))")
    if strip:
        tensors = {shown: tensors[stored] for shown, stored in module_prefix_names(tensors).items()}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors (keys: {', '.join(map(str, list(obj)[:5]))}); pass a file with model weights")
    return tensors


def _is_optimizer_state(obj: Mapping) -> bool:
    return "state" in obj and "param_groups" in obj


def _has_tensors(obj: Mapping, depth: int = 0, seen: set[int] | None = None) -> bool:
    """Whether tensors sit within 8 levels of ``obj``; each container is looked at once, so a dict
    holding itself ten times costs ten steps, not 10^8."""
    seen = set() if seen is None else seen
    if depth >= 8 or id(obj) in seen:
        return False
    seen.add(id(obj))
    return any(isinstance(v, torch.Tensor) or (isinstance(v, Mapping) and not _is_optimizer_state(v) and _has_tensors(v, depth + 1, seen))
               for v in obj.values())


MAX_NESTING = 64  # dicts within dicts; real checkpoints use a handful


def _flatten(obj: Mapping, path: Path | str, prefix: str = "", ancestors: tuple[int, ...] = ()) -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) pairs; a dict that contains itself, or nesting past MAX_NESTING, is one clear error."""
    if id(obj) in ancestors:
        raise CheckpointError(f"{path}: a dict in it contains itself (at {prefix.rstrip('.')[:120]!r}); "
                              "save a flat state_dict (torch.save(model.state_dict(), ...))")
    if len(ancestors) >= MAX_NESTING:
        raise CheckpointError(f"{path}: dicts nested more than {MAX_NESTING} deep; save a flat state_dict "
                              "(torch.save(model.state_dict(), ...))")
    ancestors = (*ancestors, id(obj))
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, Mapping) and not _is_optimizer_state(value):
            yield from _flatten(value, path, f"{name}.", ancestors)


REOPEN_AFTER_BYTES = 16 * 2**20  # see SafetensorsFile.__getitem__: file pages kept mapped beyond the tensors alive


class SafetensorsFile(Mapping):
    """Lazy name -> tensor mapping over one .safetensors file: each access reads one tensor.

    The file is opened (and its header parsed) once, not once per tensor: reading n tensors is
    linear in n. ``strip=False`` keeps names as stored (for shards, looked up by their index's names)."""

    def __init__(self, path: Path, strip: bool = True) -> None:
        from safetensors import safe_open

        self.path = path
        self._handle = None
        self._bytes_read = 0
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                names = module_prefix_names(keys) if strip else {k: k for k in keys}
                slices = {shown: f.get_slice(stored) for shown, stored in names.items()}
                # Header metadata, so callers can choose tensors before any data is read.
                self.dtypes = {k: sl.get_dtype() for k, sl in slices.items()}
                self.shapes = {k: tuple(sl.get_shape()) for k, sl in slices.items()}
        except Exception as exc:  # SafetensorError and friends
            raise CheckpointError(f"{path}: invalid safetensors file ({one_line(exc)}); the header or data is corrupt") from None
        self._names = names

    def __getstate__(self) -> dict:  # an open file handle does not cross a process boundary
        return {**self.__dict__, "_handle": None}

    def __getitem__(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        stored = self._names[name]  # a KeyError for an unknown name, as a Mapping should
        try:
            # The open handle memory-maps the file, and every page read through it stays resident until it
            # is closed. The handle is dropped as soon as the bytes read pass a budget, so the pages of a big
            # tensor stay mapped only while the tensor lives (not through its fit, beside the float64 copy),
            # while many small tensors still share one header parse.
            if self._handle is None:
                self._handle, self._bytes_read = safe_open(str(self.path), framework="pt"), 0
            tensor = self._handle.get_tensor(stored)
            self._bytes_read += tensor.numel() * tensor.element_size()
            if self._bytes_read >= REOPEN_AFTER_BYTES:
                self._handle = None
            return tensor
        except KeyError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{self.path}: cannot read tensor {name!r} ({one_line(exc)}); the file is corrupt") from None

    def __iter__(self):
        return iter(self._names)

    def __contains__(self, name: object) -> bool:
        # Mapping's default would read the tensor (it calls __getitem__): the header answers.
        return name in self._names

    def meta(self, name: str) -> tuple[tuple[int, ...], bool]:
        """(shape, is floating point) from the header alone."""
        return self.shapes[name], self.dtypes[name] in FLOAT_DTYPES

    def tensor_infos(self) -> list:
        """Every tensor's TensorInfo (name, shape, torch dtype name) from the header alone."""
        from .base import SAFETENSORS_DTYPES, TensorInfo

        return [TensorInfo(k, self.shapes[k], SAFETENSORS_DTYPES.get(self.dtypes[k], self.dtypes[k].lower())) for k in self._names]

    def __len__(self) -> int:
        return len(self._names)


INDEX_LIMIT = 256 * 2**20  # the largest real indexes are a few MB


def _check_shard(index: Path, file: str) -> None:
    """A shard named by ``index`` must be a regular file whose real path stays beside the index: the
    name is checked, and so is where symlinks lead (checking the text alone let a link read any file)."""
    if "\0" in file:
        raise CheckpointError(f"{index}: shard name {file!r} holds a NUL byte, which no file name can; fix or regenerate the index")
    if not file or Path(file).is_absolute() or ".." in Path(file).parts:
        raise CheckpointError(f"{index}: shard path {file!r} leaves the index's folder; shards must sit beside their index")
    path = index.parent / file
    real = os.path.realpath(path)
    # The index's folder as given, or where the index itself really lives (a Hugging Face cache snapshot
    # links every file, the index included, into its blobs/ folder).
    allowed = {os.path.realpath(index.parent), os.path.dirname(os.path.realpath(index))}
    if os.path.lexists(path) and not any(real.startswith(folder.rstrip(os.sep) + os.sep) for folder in allowed):
        raise CheckpointError(f"{index}: shard {file!r} is a symlink whose real path ({real}) leaves the index's folder; "
                              "shards must sit beside their index")
    if not os.path.lexists(path):
        raise CheckpointError(f"{index}: shard file {path} is missing; download every shard listed in the index")
    try:
        _check_path(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{index}: shard {file!r}: {exc}") from None


class ShardedCheckpoint(Mapping):
    """Lazy mapping over a Hugging Face style index (``weight_map``): one shard open at a time."""

    def __init__(self, index: Path) -> None:
        try:
            doc = json.loads(read_capped(index, INDEX_LIMIT, fix="pass a Hugging Face style *.index.json"))
        except UntrustedFileError as exc:
            raise CheckpointError(str(exc)) from None
        except RecursionError:
            raise CheckpointError(f"{index}: not a shard index (JSON nested absurdly deep)") from None
        except ValueError as exc:
            raise CheckpointError(f"{index}: not a shard index with a 'weight_map' ({one_line(exc)})") from None
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: not a shard index with a 'weight_map' (expected an object of tensor name -> shard file)")
        self.index = index
        for key, file in weight_map.items():
            if not isinstance(file, str):
                raise CheckpointError(f"{index}: weight_map[{key[:120]!r}] is a JSON {type(file).__name__}, not a shard file name; "
                                      "the index is corrupt (download it again)")
        self.shard_files = list(dict.fromkeys(weight_map.values()))  # index order
        for file in self.shard_files:
            _check_shard(index, file)
        names = module_prefix_names(weight_map)
        self._shard_of = {shown: (stored, index.parent / weight_map[stored]) for shown, stored in names.items()}
        self._cache: tuple[Path, Mapping] | None = None

    def sha256(self) -> str:
        """One digest of everything read: the index's sha256 and each shard's, in index order, so
        changing any shard changes it (the index file's hash alone would not)."""
        from .hub import sha256_of

        digest = hashlib.sha256(b"weightdist sharded checkpoint v1\n")
        digest.update(f"{self.index.name} {sha256_of(self.index)}\n".encode())
        for file in self.shard_files:
            digest.update(f"{file} {sha256_of(self.index.parent / file)}\n".encode())
        return digest.hexdigest()

    def _shard(self, path: Path) -> Mapping:
        if self._cache is None or self._cache[0] != path:
            self._cache = None  # drop the previous shard before loading the next: one shard in memory
            _check_path(path)
            self._cache = (path, SafetensorsFile(path, strip=False) if path.suffix == ".safetensors" else load_pickle_checkpoint(path, strip=False))
        return self._cache[1]

    def _shard_holding(self, name: str) -> tuple[str, Mapping]:
        """(key in its shard, the shard) for ``name``; an index naming a tensor its shard lacks is one line."""
        key, path = self._shard_of[name]
        shard = self._shard(path)
        if key not in shard:
            raise CheckpointError(f"{self.index}: lists {key!r} in {path.name}, but that shard does not hold it; "
                                  "the index and its shards do not match (download them again)")
        return key, shard

    def __getitem__(self, name: str) -> torch.Tensor:
        key, shard = self._shard_holding(name)
        return shard[key]

    def has_float(self) -> bool:
        """Whether any tensor is floating point, reading one shard at a time (headers only for safetensors)."""
        for name in self:
            key, shard = self._shard_holding(name)
            if _is_float(shard, key):  # a safetensors shard answers from its header
                return True
        return False

    def tensor_infos(self) -> list:
        """Every tensor's TensorInfo, shard by shard: safetensors shards answer from their headers,
        pickle shards are loaded memory-mapped (one at a time) and their tensors described."""
        from .base import SAFETENSORS_DTYPES, TensorInfo, tensor_info

        infos = []
        for name in self:
            key, shard = self._shard_holding(name)
            if isinstance(shard, SafetensorsFile):  # from the header: no data read
                dtype = shard.dtypes[key]
                infos.append(TensorInfo(name, shard.shapes[key], SAFETENSORS_DTYPES.get(dtype, dtype.lower())))
            elif isinstance(shard[key], torch.Tensor):
                infos.append(tensor_info(name, shard[key]))
        return infos

    def __iter__(self):
        # Shard by shard, so streaming touches each file once.
        order = {name: i for i, name in enumerate(self._shard_of)}
        return iter(sorted(self._shard_of, key=lambda n: (str(self._shard_of[n][1]), order[n])))

    def __len__(self) -> int:
        return len(self._shard_of)


def open_weights(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """A name -> tensor mapping for any supported local file, read lazily where the format allows."""
    path = Path(path).expanduser()
    _check_path(path)
    name = path.name
    if name.endswith(INDEX_SUFFIXES):
        tensors = ShardedCheckpoint(path)
    elif name.endswith(".safetensors"):
        tensors = SafetensorsFile(path)
    else:
        tensors = load_pickle_checkpoint(path)
    if not (tensors.has_float() if isinstance(tensors, ShardedCheckpoint) else any(_is_float(tensors, k) for k in tensors)):
        raise CheckpointError(f"{path}: holds no floating-point tensors; nothing to analyse (pass a file with model weights)")
    return tensors


def _is_float(tensors: Mapping, key: str) -> bool:
    if isinstance(tensors, SafetensorsFile):  # from the header: no tensor data is read
        return tensors.dtypes[key] in FLOAT_DTYPES
    t = tensors[key]
    return t.is_floating_point() or t.is_quantized
