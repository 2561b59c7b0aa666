"""The library functions behind each CLI command: usable from notebooks as they are."""
from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import OptionError
from .stores import atomic
from .core.fitting import rescale_exponent
from .pipeline import FitOptions, LayerResult, check_workers, comparison_table, default_workers, fit_layers, layer_table
from .reporting.report import RunInfo, options_dict, write_tables

DEFAULT_MODEL = "resnet20_fashionmnist"
REPORTS_DIR = Path("reports")


def _load(spec_or_model: Any, init: bool, seed: int, weights_file: str | None = None):
    """A LoadedModel for a name/path, or a thin description of an in-memory model."""
    from .sources import load_model

    if isinstance(spec_or_model, (str, Path)):
        loaded = load_model(str(spec_or_model), init=init, seed=seed, weights_file=weights_file)
        info = getattr(loaded, "info", None)
        return loaded, RunInfo(loaded.name, loaded.source, loaded.path, loaded.sha256, "", {},
                               model_info=info.as_dict() if info is not None else {})
    kind = type(spec_or_model).__name__
    return spec_or_model, RunInfo(kind, f"in-memory {kind}", None, None, "", {})


def _iter_layers(loaded, options: FitOptions, skipped: Counter | None = None):
    from .sources.extract import iter_layers

    return iter_layers(loaded, kinds=options.kinds, include=options.include, exclude=options.exclude,
                       min_size=options.min_size, max_per_layer=options.max_per_layer, seed=options.seed, skipped=skipped,
                       max_tensor_bytes=options.max_tensor_bytes)


def fit_model(spec_or_model: Any, *, init: bool = False, progress: bool = False, workers: int = 1,
              **options) -> pd.DataFrame:
    """Per-(layer, family) fit table for a model name, checkpoint path, nn.Module or state dict.

    Keyword options are those of :class:`FitOptions` (families, kinds, include, exclude,
    min_size, max_per_layer, seed, n_boot, boot_max_n); ``workers`` processes fit layers
    in parallel (same numbers for any count).
    """
    opts = FitOptions(**options)
    loaded, info = _load(spec_or_model, init, opts.seed)
    skipped: Counter = Counter()
    layers = _iter_layers(loaded, opts, skipped)
    if progress:
        from tqdm.auto import tqdm

        layers = tqdm(layers, desc="layers", unit="layer")
    results = list(fit_layers(layers, opts, workers=workers))
    check_some_layers(results, info.model, skipped)
    return layer_table(results)


def check_some_layers(results: list, model: str, skipped: Counter) -> None:
    """A run that selected no layer is the user's to fix (the options or the file), not an empty report."""
    if not results:
        left_out = "; ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())) or "the model holds no tensors"
        raise OptionError(f"no layer of {model} was selected ({left_out}); loosen --kinds, --min-size, --include or --exclude")


def default_out(model: str, init: bool) -> Path:
    name = Path(model).stem if ("/" in model or "." in model) else model.replace(":", "_")
    return REPORTS_DIR / (f"{name}_init" if init else name)


def fit_report(
    model: str = DEFAULT_MODEL,
    out: str | Path | None = None,
    *,
    init: bool = False,
    options: FitOptions = FitOptions(),
    plots: bool = True,
    plot_layers: int | None = None,
    command: str | None = None,
    progress: bool = True,
    weights_file: str | None = None,
    label: str | None = None,
    workers: int | None = None,
) -> Path:
    """Fit every layer of ``model`` and write a complete report folder atomically; returns it."""
    from .escape import safe_filename
    from .reporting.plots import check_plot_layers, evenly_spaced, layer_figure, overview_figure, save_figure

    workers = default_workers() if workers is None else workers
    check_workers(workers)  # before any work, like every other option
    check_plot_layers(plot_layers)
    out = atomic.check_writable_dir(out or default_out(label or model, init))  # before any expensive work
    command = command or f"weightdist fit {shlex.quote(model)}" + (" --init" if init else "")
    t0 = time.perf_counter()
    loaded, info = _load(model, init, options.seed, weights_file)
    if label:
        info = dataclasses.replace(info, model=label)
    t_loaded = time.perf_counter()
    skipped: Counter = Counter()
    layers = _iter_layers(loaded, options, skipped)
    total = None
    in_memory = getattr(getattr(loaded, "tensors", None), "meta", None) is None  # counting a lazy file would read it twice
    if (plots and plot_layers) or (progress and in_memory):  # (--plot-layers 0 plots no layer: nothing to spread)
        # A values-light first pass: spreads the plots over depth and gives the progress bar its total.
        total = sum(1 for _ in _iter_layers(loaded, dataclasses.replace(options, max_per_layer=8)))
    with atomic.staged_dir(out) as stage:
        figures: list[str] = []
        if plots:
            (stage / "plots").mkdir()
            chosen = set() if plot_layers == 0 else evenly_spaced(total, plot_layers) if total is not None else None

            def on_layer(result: LayerResult, x_sorted) -> None:
                if result.fit.ok and rescale_exponent(x_sorted):
                    return  # values beyond 2^±100 (near the ends of float64): matplotlib cannot place their ticks
                if (chosen is None or result.index in chosen) and result.fit.ok:
                    name = f"{result.index:03d}_{safe_filename(result.layer.name)}.png"
                    save_figure(layer_figure(result, x_sorted), stage / "plots" / name)
                    figures.append(name)
                if (chosen is None or result.index in chosen) and result.extras is not None and result.extras.spectral is not None:
                    from .analyses.spectral import esd_figure  # the ESD beside the values (--spectral)

                    name = f"{result.index:03d}_{safe_filename(result.layer.name)}_esd.png"
                    save_figure(esd_figure(result.extras.spectral, f"{result.layer.name}: eigenvalues of WᵀW/N"), stage / "plots" / name)
                    figures.append(name)
        else:
            on_layer = None
        iterator = fit_layers(layers, options, on_layer=on_layer, workers=workers)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=total, desc=f"fitting {info.model}", unit="layer")
        results = list(iterator)
        check_some_layers(results, info.model, skipped)
        t_fitted = time.perf_counter()
        table = layer_table(results)
        if plots and not table.empty and (table["family"] != "").any():
            save_figure(overview_figure(table, f"{info.model}: best family and KS distance by depth"), stage / "plots" / "overview.png")
            figures.insert(0, "overview.png")
        if progress:  # timing goes to the terminal, not into tracked files (they stay byte-identical)
            print(f"{info.model}: loaded in {t_loaded - t0:.1f} s, fitted in {t_fitted - t_loaded:.1f} s", file=sys.stderr)
        info = RunInfo(info.model, info.source, info.weights_path, info.weights_sha256, command,
                       {"init": init, **options_dict(options)}, dict(sorted(skipped.items())), info.model_info)
        write_tables(stage, info, table, comparison_table(results), figures)
        if options.outliers:  # --outliers: where the weights beyond the fitted law's 1e-6 quantiles are
            from .pipeline import outlier_table
            from .reporting.report import csv_bytes

            atomic.write_bytes(stage / "outliers.csv", csv_bytes(outlier_table(results)))
    return out
