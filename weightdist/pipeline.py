"""From layers to tables: the per-layer analysis shared by ``fit``, ``compare`` and notebooks.

Pure apart from the optional ``on_layer`` callback (used by the CLI to draw
plots while a layer's values are still in memory); values are dropped after
each layer so memory stays bounded by the largest layer, not the model.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from .sources.extract import DEFAULT_KINDS, KINDS, Layer
from .core.families import param_columns
from .core.fitting import LayerFit, fit_sorted, prepare, resolve_families
from .core.gof import LayerAssessment, assess_layer, assessment_rows, comparison_rows



@dataclass(frozen=True)
class FitOptions:
    """Every knob that changes the numbers; recorded in summary.json for reproducibility."""

    families: tuple[str, ...] | None = None  # None: every registered family
    kinds: tuple[str, ...] = DEFAULT_KINDS
    include: str | None = None
    exclude: str | None = None
    min_size: int = 1
    max_per_layer: int | None = None  # seeded subsample per layer
    seed: int = 0
    n_boot: int = 0  # bootstrap replicates for corrected KS p-values; 0 = not computed
    boot_max_n: int = 2000

    def __post_init__(self) -> None:
        if self.min_size < 1:
            raise ValueError(f"min_size must be >= 1, got {self.min_size}")
        if self.max_per_layer is not None and self.max_per_layer < 8:
            raise ValueError(f"max_per_layer must be >= 8, got {self.max_per_layer}")
        if self.n_boot < 0:
            raise ValueError(f"n_boot must be >= 0, got {self.n_boot}")
        if self.boot_max_n < 8:
            raise ValueError(f"boot_max_n must be >= 8, got {self.boot_max_n}")
        resolve_families(self.families)  # fail early on unknown names
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"kinds: unknown kind(s) {', '.join(sorted(unknown))}; choose from {', '.join(KINDS)}")
        for arg in ("include", "exclude"):
            pattern = getattr(self, arg)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"{arg}: invalid regular expression {pattern!r} ({exc})") from None


@dataclass(frozen=True)
class LayerResult:
    """One layer's fits and goodness-of-fit assessment; ``layer`` keeps its metadata, not its values."""

    index: int
    layer: Layer
    fit: LayerFit
    assessment: LayerAssessment | None = None


def analyse_values(values: np.ndarray, options: FitOptions, seed: int) -> tuple[LayerFit, LayerAssessment | None, np.ndarray]:
    """Fit and assess one layer's values; also returns the sorted finite values for plotting."""
    x_sorted, n_nonfinite, n_zero = prepare(values)
    layer_fit = fit_sorted(x_sorted, n_nonfinite, resolve_families(options.families), n_zero=n_zero)
    assessment = None
    if layer_fit.ok:
        assessment = assess_layer(x_sorted, layer_fit, n_boot=options.n_boot, max_boot_n=options.boot_max_n, seed=seed)
    return layer_fit, assessment, x_sorted


def fit_layers(
    layers: Iterable, options: FitOptions, on_layer: Callable[[LayerResult, np.ndarray], None] | None = None
) -> Iterator[LayerResult]:
    """Analyse extracted layers one at a time, dropping each layer's values once it is done."""
    for index, layer in enumerate(layers):
        layer_fit, assessment, x_sorted = analyse_values(layer.values, options, seed=options.seed + index)
        result = LayerResult(index, dataclasses.replace(layer, values=np.empty(0)), layer_fit, assessment)
        if on_layer is not None:
            on_layer(result, x_sorted)
        yield result


def _layer_columns(r: LayerResult, n_layers: int) -> dict:
    best, layer = r.fit.best, r.layer
    tail = r.assessment.tail if r.assessment is not None else None
    return {
        "layer": layer.name,
        "index": r.index,
        "relative_depth": r.index / max(n_layers - 1, 1),
        "kind": layer.kind,
        "shape": "x".join(map(str, layer.shape)),
        "numel": layer.numel,
        "fan_in": layer.fan_in,
        "dtype": layer.dtype,
        "n": r.fit.n,
        "n_nonfinite": r.fit.n_nonfinite,
        "n_zero_excluded": r.fit.n_zero_excluded,
        "subsampled_from": layer.subsampled_from,
        "status": r.fit.status if not layer.note else f"{r.fit.status}; {layer.note}",
        "excess_kurtosis": tail.excess_kurtosis if tail else math.nan,
        "hill_left": tail.hill_left if tail else math.nan,
        "hill_right": tail.hill_right if tail else math.nan,
        "best": best or "",
        "verdict": r.assessment.verdict if r.assessment is not None else r.fit.status,
    }


FIT_COLUMNS = ("loglik", "mean_loglik", "aic", "bic", "ks_stat", "ks_pvalue", "converged", "fit_note", "is_best")


def layer_table(results: Sequence[LayerResult]) -> pd.DataFrame:
    """One row per (layer, family); a single row with an empty family for unfitted layers."""
    rows, params = [], param_columns()  # every registered family's parameters, so a new family needs no edit here
    for r in results:
        base = _layer_columns(r, len(results))
        if not r.fit.ok:
            rows.append({**base, "family": ""})
            continue
        extra = {row["family"]: row for row in assessment_rows(r.layer.name, r.assessment)} if r.assessment else {}
        for name, f in r.fit.fits.items():
            row = {**base, "family": name}
            row.update({p: f.params.get(p, math.nan) for p in params})
            row.update(
                loglik=f.loglik, mean_loglik=f.mean_loglik, aic=f.aic, bic=f.bic, ks_stat=f.ks_stat,
                ks_pvalue=f.ks_pvalue_naive, converged=f.converged, fit_note=f.note, is_best=(name == base["best"]),
            )
            row.update({k: v for k, v in extra.get(name, {}).items() if k not in ("layer", "family")})
            rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("layer", "n", "family", *params, *FIT_COLUMNS):  # present even when no layer was fitted
        if column not in table:
            table[column] = pd.Series(False if column == "is_best" else math.nan, index=table.index, dtype=object if column == "is_best" else None)
    return table


def comparison_table(results: Sequence[LayerResult]) -> pd.DataFrame:
    rows = [row for r in results if r.assessment is not None for row in comparison_rows(r.layer.name, r.assessment)]
    return pd.DataFrame(rows)


def win_counts(results: Sequence[LayerResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        if r.fit.best:
            counts[r.fit.best] = counts.get(r.fit.best, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
