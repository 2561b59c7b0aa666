"""The experiment loop: train and evaluate each (prior, dim, seed) cell once, cache it, resume.

Every finished cell is committed into the output folder at once, through the crash-safe report
folder (``stores.atomic.staged_dir``): the folder always holds every cell finished so far plus a
report saying how far the run got. A killed run loses at most the cell it was training; the next run
with the same plan reuses the cached cells (matched by ``Plan.cell_key``, which hashes every setting
that changes a cell's numbers) and trains only the missing ones.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from ..stores import atomic
from ..untrusted import UntrustedFileError, read_capped
from .evaluate import evaluate_cell
from .plan import Plan
from .train import Data, train_vae

CELLS = "cells"
ARRAYS = ("samples", "recons", "locations")


def encode_cell(row: dict, arrays: dict) -> dict[str, bytes]:
    """A cell as two files: ``<key>.npz`` (arrays for figures) and ``<key>.json`` (its numbers)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(arrays[k]) for k in ARRAYS})
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    return {"npz": buf.getvalue(), "json": (json.dumps(clean, indent=1, default=_plain) + "\n").encode()}


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def decode_cell(files: dict[str, bytes]) -> tuple[dict, dict]:
    row = {k: (math.nan if v is None else v) for k, v in json.loads(files["json"]).items()}
    with np.load(io.BytesIO(files["npz"]), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in ARRAYS}
    return row, arrays


CELL_LIMIT = 64 * 2**20  # a cell is about 30 KB


def read_cached(out: Path, plan: Plan) -> dict[str, dict[str, bytes]]:
    """Cells of this plan already in ``out/cells`` (files that do not parse are ignored and retrained)."""
    folder = Path(out) / CELLS
    found = {}
    if not folder.is_dir():
        return found
    for prior, dim, seed in plan.cells():
        key = plan.cell_key(prior, dim, seed)
        try:
            # read_capped: a planted FIFO, link or huge file is refused, never waited on or loaded whole.
            files = {ext: read_capped(folder / f"{key}.{ext}", CELL_LIMIT, fix="delete it to retrain the cell")
                     for ext in ("json", "npz")}
            decode_cell(files)
        except (OSError, ValueError, KeyError, UntrustedFileError):
            continue
        found[key] = files
    return found


def write_cells(stage: Path, cells: dict[str, dict[str, bytes]]) -> None:
    (stage / CELLS).mkdir()
    for key, files in cells.items():
        for ext, data in files.items():
            atomic.write_bytes(stage / CELLS / f"{key}.{ext}", data)


def run_cells(plan: Plan, out: Path, data: Data, feature_net, commit: Callable[[dict], None], log=print,
              progress: bool = False) -> tuple[dict[str, dict[str, bytes]], int]:
    """All cells of the plan, from the cache where present; ``commit(cells)`` is called after each new one.

    Returns (key -> cell files, in plan order; number of cells trained by this call)."""
    cached = read_cached(out, plan)
    todo = [c for c in plan.cells() if plan.cell_key(*c) not in cached]
    if log and cached:
        log(f"resuming: {len(cached)} of {len(plan.cells())} cells cached in {out}/{CELLS}, {len(todo)} to run")
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="vae compare", unit="cell")
    for prior, dim, seed in todo:
        trained = train_vae(plan.train_config(prior, dim, seed), data, log=log, progress=progress)
        row, arrays = evaluate_cell(trained, data, plan.k, plan.test_size, plan.fid_n, feature_net)
        if log:
            log(f"[{prior} d={dim} s={seed}] test_ll {row['test_ll']:.2f} ± {row['test_ll_se']:.2f} (IWAE SE), "
                f"active units {row['active_units']}/{row['code_dim']}, stopped at epoch {row['stop_epoch']}"
                f"{'' if row['converged'] else ' (cap)'}, {row['train_seconds']:.0f}s")
        cached[plan.cell_key(prior, dim, seed)] = encode_cell(row, arrays)
        commit(cached)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    ordered = {plan.cell_key(*c): cached[plan.cell_key(*c)] for c in plan.cells()}
    return ordered, len(todo)
