"""Reading finished report folders back (``compare`` and ``findings`` inputs): untrusted input.

A report folder may come from anywhere, so every file in it is read through
:func:`weightdist.untrusted.read_capped` (regular files only, no final symlink, no FIFO, a
size cap), JSON nesting is bounded, and each table is checked against the columns and types
the rest of the code relies on. Anything wrong is one :class:`ReportFolderError` line naming
the file, the column or row, and the fix.
"""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..errors import WeightdistError, one_line
from ..untrusted import read_capped

SUMMARY_LIMIT = 16 * 2**20
# A 70 B LLM's layers.csv is under 1 MB; pandas holds a CSV of short cells in ~22x its size (64 MB of
# 'a,b,,,,,' rows peaked at 1.4 GB), so 512 MB would have let one hostile table take ~11 GB.
TABLE_LIMIT = 64 * 2**20
FIX = "rerun the 'weightdist fit' command printed in its report.md"

REQUIRED_COLUMNS = ("layer", "family", "relative_depth", "n", "aic", "ks_stat", "is_best")
TEXT_COLUMNS = ("layer", "family", "kind", "shape", "best", "dtype", "status", "verdict", "fit_note")
NUMERIC_COLUMNS = ("index", "relative_depth", "numel", "fan_in", "n", "n_nonfinite", "n_zero_excluded", "subsampled_from",
                   "loglik", "mean_loglik", "aic", "bic", "ks_stat", "ks_pvalue", "ks_pvalue_corrected", "excess_kurtosis",
                   "hill_left", "hill_right", "epoch", "latent_dim", "test_ll")
_BOOLS = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}


class ReportFolderError(WeightdistError):
    """A report folder (given to compare or findings) that is missing a file, or holds a broken one."""


def _show(value: object, limit: int = 40) -> str:
    return repr(one_line(value, limit))


def read_json_object(path: Path, limit: int = SUMMARY_LIMIT, fix: str = FIX) -> dict:
    """A JSON object from an untrusted file: capped, and refused (not a RecursionError) when nested absurdly deep."""
    data = read_capped(path, limit, fix=fix)
    try:
        obj = json.loads(data)
    except RecursionError:
        raise ReportFolderError(f"{path}: unreadable summary (JSON nested too deeply to be a weightdist summary); {fix}") from None
    except ValueError as exc:
        raise ReportFolderError(f"{path}: unreadable summary ({one_line(exc, 80)}); {fix}") from None
    if not isinstance(obj, dict):
        raise ReportFolderError(f"{path}: holds a JSON {type(obj).__name__}, not an object; {fix}")
    return obj


def read_table(path: Path, *, required: Iterable[str] = (), numeric: Iterable[str] = (), text: Iterable[str] = (),
               flags: Iterable[str] = (), limit: int = TABLE_LIMIT, fix: str = FIX, what: str = "table") -> pd.DataFrame:
    """A CSV table from an untrusted file, with its columns checked and typed.

    ``required`` columns must exist; ``numeric`` ones (when present) must hold numbers or nothing;
    ``text`` ones are strings (empty cells ""); ``flags`` are booleans."""
    data = read_capped(path, limit, fix=fix)
    try:
        table = pd.read_csv(io.BytesIO(data), keep_default_na=False, na_values=[""], dtype=str)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReportFolderError(f"{path}: unreadable table ({one_line(exc, 80)}); {fix}") from None
    missing = [c for c in required if c not in table]
    if missing:
        raise ReportFolderError(f"{path}: not a weightdist {what} (missing column {', '.join(missing)}); {fix}")
    for column in numeric:
        if column in table:
            values = pd.to_numeric(table[column], errors="coerce")
            bad = table[column].notna() & values.isna()
            if bad.any():
                row = int(bad.to_numpy().argmax())
                raise ReportFolderError(f"{path}: column {column!r} holds text ({_show(table[column].iloc[row])} in data row "
                                        f"{row + 1}) where numbers belong; {fix}")
            table[column] = values
    for column in text:
        if column in table:
            table[column] = table[column].fillna("")
    for column in flags:
        if column in table:
            lowered = table[column].fillna("false").str.strip().str.lower()
            bad = ~lowered.isin(_BOOLS)
            if bad.any():
                row = int(bad.to_numpy().argmax())
                raise ReportFolderError(f"{path}: column {column!r} holds {_show(table[column].iloc[row])} in data row "
                                        f"{row + 1}, not True/False; {fix}")
            table[column] = lowered.map(_BOOLS).astype(bool)
    checked = set(numeric) | set(text) | set(flags)
    for column in table.columns:  # any other column: numbers when every cell is one, as pandas would infer
        if column not in checked:
            values = pd.to_numeric(table[column], errors="coerce")
            if not (table[column].notna() & values.isna()).any():
                table[column] = values
    return table


def read_report_folder(folder: Path, required: Iterable[str] = REQUIRED_COLUMNS) -> tuple[str, bool, pd.DataFrame]:
    """(model, whether it was an --init run, layers table) of a finished `weightdist fit` report;
    a broken one is named in one line."""
    from ..core.families import param_columns

    folder = Path(folder)
    csv, summary_path = folder / "layers.csv", folder / "summary.json"
    if not os.path.lexists(csv):
        raise ReportFolderError(f"{folder} is a folder but holds no layers.csv; pass a report folder written by 'weightdist fit'")
    summary = read_json_object(summary_path) if os.path.lexists(summary_path) else {}
    model = summary.get("model", folder.name)
    options = summary.get("options", {})
    if not isinstance(model, str) or not model.strip():
        raise ReportFolderError(f"{summary_path}: 'model' is {_show(model)}, not a model name; {FIX}")
    if not isinstance(options, dict) or not isinstance(options.get("init", False), (bool, type(None))):
        raise ReportFolderError(f"{summary_path}: 'options' is not the object weightdist writes ({_show(options)}); {FIX}")
    table = read_table(csv, required=required, numeric=NUMERIC_COLUMNS + tuple(param_columns()), text=TEXT_COLUMNS,
                       flags=("is_best", "converged"), what="layers table")
    empty = table["layer"] == ""
    if empty.any():
        raise ReportFolderError(f"{csv}: data row {int(empty.to_numpy().argmax()) + 1} has an empty 'layer' name; {FIX}")
    if not table.empty and not all(math.isfinite(v) for v in table["relative_depth"].fillna(0.0)):
        raise ReportFolderError(f"{csv}: column 'relative_depth' holds a non-finite value; {FIX}")
    return model, bool(options.get("init")), table
