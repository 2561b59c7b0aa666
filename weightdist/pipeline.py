"""From layers to tables: the per-layer analysis shared by ``fit``, ``compare`` and notebooks.

Pure apart from the optional ``on_layer`` callback (used by the CLI to draw
plots while a layer's values are still in memory); values are dropped after
each layer so memory stays bounded by the largest layer, not the model.
"""
from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from .errors import OptionError
from .sources.extract import DEFAULT_KINDS, SELECTION_BOUNDS, Layer, _compile, _normalise_kinds, check_int, check_selection
from .core.families import get_family, param_columns
from .core.fitting import LayerFit, fit_sorted, prepare, resolve_families
from .core.intervals import Interval, count_outside, outlier_bounds, parameter_intervals
from .core.spectral import SpectralView, layer_spectral_view
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
    intervals: bool = True  # 95 % intervals on shape and scale (core/intervals.py)
    outliers: bool = False  # also keep the flat indices of weights beyond the best law's 1e-6 quantiles
    spectral: bool = False  # ESD, power-law alpha, stable rank, MP spikes, permuted comparison (core/spectral.py)
    include_quantized: bool = False  # count quantized-storage layers (GGUF Q4_K, ...) in headline win counts too
    max_tensor_bytes: int | None = None  # refuse a layer whose float64 copy is larger; None: 16 GiB or half the RAM

    def __post_init__(self) -> None:
        """The one place options are checked: every problem is an OptionError naming the fix."""
        check_selection(**{name: getattr(self, name) for name in SELECTION_BOUNDS})  # the same rules as extraction's
        check_int("n_boot", self.n_boot, 0)
        check_int("boot_max_n", self.boot_max_n, 8)
        if self.families is not None and not self.families:
            raise OptionError("families: no family given; name one or more (see 'weightdist families'), or leave it out for all")
        resolve_families(self.families)  # fail early on unknown names (UnknownNameError)
        object.__setattr__(self, "kinds", _normalise_kinds(self.kinds))
        _compile("include", self.include)
        _compile("exclude", self.exclude)


@dataclass(frozen=True)
class LayerResult:
    """One layer's fits and goodness-of-fit assessment; ``layer`` keeps its metadata, not its values."""

    index: int
    layer: Layer
    fit: LayerFit
    assessment: LayerAssessment | None = None
    extras: LayerExtras | None = None


@dataclass(frozen=True)
class LayerExtras:
    """The per-layer stages beside the fits: parameter intervals, outlier weights, the spectral view."""

    intervals: dict[str, dict[str, Interval]] = dataclasses.field(default_factory=dict)  # family -> param -> interval
    outlier_bounds: tuple[float, float] | None = None  # the best law's 5e-7 and 1 − 5e-7 quantiles
    n_outliers: int = 0
    outlier_index: np.ndarray | None = None  # flat row-major indices into the tensor (FitOptions.outliers)
    outlier_values: np.ndarray | None = None
    spectral_requested: bool = False
    spectral: SpectralView | None = None
    spectral_note: str = ""  # why there is no spectral view


def analyse_extras(layer: Layer, x_sorted: np.ndarray, layer_fit: LayerFit, options: FitOptions, seed: int) -> LayerExtras:
    """Intervals and outliers from the fitted values; the spectral view from the tensor as a matrix."""
    intervals, bounds, n_out, index, values = {}, None, 0, None, None
    if layer_fit.best is not None:
        if options.intervals and not layer_fit.quantised:  # quantised layers are fitted by cell probabilities
            intervals = parameter_intervals(x_sorted, layer_fit.fits)
        best = layer_fit.fits[layer_fit.best]
        bounds = outlier_bounds(get_family(best.family), best.params)
        bounds = bounds if all(map(math.isfinite, bounds)) else None  # e.g. a generic scipy law without a usable ppf
        n_out = count_outside(x_sorted, bounds) if bounds else 0
        if options.outliers and bounds and layer.subsampled_from is None:
            index = np.flatnonzero((layer.values < bounds[0]) | (layer.values > bounds[1]))
            values = layer.values[index]
    view, note = None, ""
    if options.spectral:
        if layer.subsampled_from is not None:
            note = "subsampled (--max-per-layer): no spectral view"
        else:
            view, note = layer_spectral_view(layer.values, layer.shape, np.random.default_rng([seed, 1]))
    return LayerExtras(intervals, bounds, n_out, index, values, options.spectral, view, note)


def layer_seed(seed: int, layer_name: str) -> int:
    """The bootstrap seed of one layer, from the run's seed and the layer's name alone.

    Not its position or its model's spelling: `fit` and `scan` (on any engine, in any order)
    draw the same numbers for the same layer. Same rule as the --max-per-layer subsample."""
    import zlib

    return int(np.random.SeedSequence([seed, zlib.crc32(layer_name.encode())]).generate_state(1)[0])


def analyse_values(values: np.ndarray, options: FitOptions, seed: int) -> tuple[LayerFit, LayerAssessment | None, np.ndarray]:
    """Fit and assess one layer's values; also returns the sorted finite values for plotting."""
    x_sorted, n_nonfinite, n_zero = prepare(values)
    layer_fit = fit_sorted(x_sorted, n_nonfinite, resolve_families(options.families), n_zero=n_zero)
    assessment = None
    if layer_fit.ok:
        assessment = assess_layer(x_sorted, layer_fit, n_boot=options.n_boot, max_boot_n=options.boot_max_n, seed=seed)
    return layer_fit, assessment, x_sorted


def check_workers(workers) -> None:
    """The one check of a worker count (fit, compare, scan engines): an OptionError naming the fix."""
    check_int("--workers", workers, 1)


def default_workers() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _worker_init() -> None:
    """Each worker leaves Ctrl-C to the parent, and exits with it. (Its BLAS keeps the parent's thread
    count: a different count sums in a different order, and the numbers must not depend on --workers.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the CLI's handler (which turns SIGTERM into cleanup): just exit
    exit_with_parent()


def exit_with_parent() -> None:
    """In a worker process: exit when the parent is gone. A killed parent cannot shut its pool down, and
    its workers would otherwise wait for work forever."""
    import threading
    import time

    def watch(parent: int) -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, args=(os.getppid(),), daemon=True).start()


def _analyse_job(layer: Layer, options: FitOptions, seed: int, keep_sorted: bool):
    """One layer in a worker process; the sorted values travel back only when a plot needs them."""
    layer_fit, assessment, x_sorted = analyse_values(layer.values, options, seed)
    extras = analyse_extras(layer, x_sorted, layer_fit, options, seed)
    return layer_fit, assessment, (x_sorted if keep_sorted else None), extras


def fit_layers(
    layers: Iterable, options: FitOptions, on_layer: Callable[[LayerResult, np.ndarray], None] | None = None,
    workers: int = 1,
) -> Iterator[LayerResult]:
    """Analyse extracted layers, in order, dropping each layer's values once it is done.

    ``workers`` > 1 fits layers in that many processes (forked, so they share the loaded
    code and model without importing anything). Results are identical for any worker count:
    each layer's seed comes from its name, and every layer is fitted by the same function.
    At most 2 × workers layers run at once and finished ones are held only until those before
    them are done (:class:`_Window`), so memory stays bounded by a few layers."""
    check_workers(workers)
    workers = min(workers, default_workers())  # more processes than cores only add memory (the numbers are the same)
    if workers == 1 or "fork" not in multiprocessing.get_all_start_methods():
        for index, layer in enumerate(layers):
            seed = layer_seed(options.seed, layer.name)
            layer_fit, assessment, x_sorted = analyse_values(layer.values, options, seed=seed)
            extras = analyse_extras(layer, x_sorted, layer_fit, options, seed)
            yield _finish(index, layer, layer_fit, assessment, x_sorted, extras, on_layer)
        return
    keep = on_layer is not None
    # Workers ignore Ctrl-C: the parent alone handles it, cancels what has not started and waits for
    # the few layers in flight (a worker interrupted inside the pool's queue lock would hang the pool).
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init)
    window, finished = _Window(workers), False
    try:
        for index, layer in enumerate(layers):
            job = pool.submit(_analyse_job, layer, options, layer_seed(options.seed, layer.name), keep)
            window.add(index, dataclasses.replace(layer, values=np.empty(0)), job, layer.values.nbytes)
            while window.full():
                yield from (_finish(*done, on_layer) for done in window.pop_finished())
                if window.full():
                    window.wait()
        while window:
            window.wait()
            yield from (_finish(*done, on_layer) for done in window.pop_finished())
        finished = True
    finally:
        window.cancel()
        # Once every result is in, the idle workers exit in the background: tearing down a fork of a big
        # parent takes tens of milliseconds. Otherwise (an error, Ctrl-C) wait for the layers in flight.
        pool.shutdown(wait=not finished)


class _Window:
    """The layers handed to the pool and not yet yielded, in model order.

    Results leave in model order, but a worker never idles behind one slow layer: up to
    2 × workers layers run at once, and finished ones wait here (with their sorted values when
    a plot needs them) until those before them are done, up to BYTES of finished values.
    Memory is so bounded by the running layers plus BYTES, not by the model."""

    BYTES = 512 << 20

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.entries: deque = deque()  # (index, layer without values, future, bytes of its values)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def add(self, index: int, layer: Layer, job, nbytes: int) -> None:
        self.entries.append((index, layer, job, nbytes))

    def _running(self) -> list:
        return [job for _, _, job, _ in self.entries if not job.done()]

    def _held_bytes(self) -> int:
        return sum(nbytes for _, _, job, nbytes in self.entries if job.done())

    def full(self) -> bool:
        return len(self._running()) >= 2 * self.workers or self._held_bytes() >= self.BYTES

    def wait(self) -> None:
        """Until the first layer is done or, while the held bytes allow more, any running layer
        (which frees a worker for the next one)."""
        head = self.entries[0][2]
        waiting = [head] if self._held_bytes() >= self.BYTES else self._running()
        if not head.done():
            wait(waiting or [head], return_when=FIRST_COMPLETED)

    def pop_finished(self) -> Iterator[tuple]:
        while self.entries and self.entries[0][2].done():
            index, layer, job, _ = self.entries.popleft()
            yield (index, layer, *job.result())

    def cancel(self) -> None:
        for _, _, job, _ in self.entries:
            job.cancel()


def _finish(index: int, layer, layer_fit: LayerFit, assessment, x_sorted, extras: LayerExtras | None, on_layer) -> LayerResult:
    result = LayerResult(index, dataclasses.replace(layer, values=np.empty(0)), layer_fit, assessment, extras)
    if on_layer is not None:
        on_layer(result, x_sorted)
    return result


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
        "quantized": layer.quantized or "",  # the storage's quantization type (GGUF Q4_K, ...): grid values, not in headline wins
        "n": r.fit.n,
        "n_nonfinite": r.fit.n_nonfinite,
        "n_zero_excluded": r.fit.n_zero_excluded,
        "n_distinct": r.fit.n_distinct,
        "grid_step": r.fit.grid_step,  # set on quantised layers, fitted by cell probabilities
        "subsampled_from": layer.subsampled_from,
        "status": r.fit.status if not layer.note else f"{r.fit.status}; {layer.note}",
        "excess_kurtosis": tail.excess_kurtosis if tail else math.nan,
        "hill_left": tail.hill_left if tail else math.nan,
        "hill_right": tail.hill_right if tail else math.nan,
        "best": best or "",
        "verdict": r.assessment.verdict if r.assessment is not None else r.fit.status,
        **extras_columns(r.extras, r.fit.n),
    }


def extras_columns(extras: LayerExtras | None, n: int) -> dict:
    """Per-layer columns of the outlier count and, when asked for, the spectral view."""
    if extras is None:
        return {}
    lo, hi = extras.outlier_bounds or (math.nan, math.nan)
    columns = {"outlier_lo": lo, "outlier_hi": hi, "n_outliers": extras.n_outliers if extras.outlier_bounds else math.nan,
               "outlier_share": extras.n_outliers / n if extras.outlier_bounds and n else math.nan}
    if extras.spectral_requested:
        view = extras.spectral
        s = view.spectrum if view is not None else None
        columns.update({
            "esd_alpha": s.tail.alpha if s else math.nan, "esd_xmin": s.tail.xmin if s else math.nan,
            "esd_ks": s.tail.ks if s else math.nan, "esd_n_tail": s.tail.n_tail if s else math.nan,
            "esd_n_eigenvalues": s.m if s else math.nan, "stable_rank": s.stable_rank if s else math.nan,
            "spectral_norm": s.spectral_norm if s else math.nan, "mp_lambda_plus": s.mp_lambda_plus if s else math.nan,
            "mp_spikes": s.mp_spikes if s else math.nan, "esd_rand_alpha": view.randomized.tail.alpha if view else math.nan,
            "esd_rand_distance": view.rand_distance if view else math.nan, "spectral_note": extras.spectral_note,
        })
    return columns


FIT_COLUMNS = ("loglik", "mean_loglik", "aic", "bic", "ks_stat", "ks_pvalue", "converged", "fit_note", "is_best")


def layer_table(results: Sequence[LayerResult], n_layers: int | None = None) -> pd.DataFrame:
    """One row per (layer, family); a single row with an empty family for unfitted layers.

    ``n_layers``: the model's layer count when ``results`` is only some of its layers (a scan unit)."""
    rows, params = [], param_columns()  # every registered family's parameters, so a new family needs no edit here
    for r in results:
        base = _layer_columns(r, len(results) if n_layers is None else n_layers)
        if not r.fit.ok:
            rows.append({**base, "family": ""})
            continue
        extra = {row["family"]: row for row in assessment_rows(r.layer.name, r.assessment)} if r.assessment else {}
        for name, f in r.fit.fits.items():
            row = {**base, "family": name}
            row.update({p: f.params.get(p, math.nan) for p in params})
            row.update({p: v for p, v in f.params.items() if p not in row})  # e.g. a generic scipy family's shapes
            for p, interval in (r.extras.intervals.get(name, {}) if r.extras is not None else {}).items():
                row[f"{p}_lo"], row[f"{p}_hi"] = interval.lo, interval.hi
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


def outlier_table(results: Sequence[LayerResult]) -> pd.DataFrame:
    """One row per outlier weight: layer, flat row-major index, value, side (FitOptions.outliers)."""
    frames = []
    for r in results:
        if r.extras is None or r.extras.outlier_index is None or r.extras.outlier_index.size == 0:
            continue
        values = r.extras.outlier_values
        frames.append(pd.DataFrame({"layer": r.layer.name, "shape": "x".join(map(str, r.layer.shape)),
                                    "index": r.extras.outlier_index, "value": values,
                                    "side": np.where(values < r.extras.outlier_bounds[0], "low", "high"),
                                    "best": r.fit.best}))
    columns = ["layer", "shape", "index", "value", "side", "best"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def win_counts(results: Sequence[LayerResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        if r.fit.best:
            counts[r.fit.best] = counts.get(r.fit.best, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
