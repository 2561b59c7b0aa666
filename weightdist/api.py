"""The library functions behind each CLI command: usable from notebooks as they are."""
from __future__ import annotations

import dataclasses
import shlex
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from .stores import atomic
from .pipeline import FitOptions, LayerResult, comparison_table, fit_layers, layer_table
from .reporting.report import RunInfo, options_dict, write_tables

DEFAULT_MODEL = "resnet20_fashionmnist"
REPORTS_DIR = Path("reports")


def _load(spec_or_model: Any, init: bool, seed: int, weights_file: str | None = None):
    """A LoadedModel for a name/path, or a thin description of an in-memory model."""
    from .sources import load_model

    if isinstance(spec_or_model, (str, Path)):
        loaded = load_model(str(spec_or_model), init=init, seed=seed, weights_file=weights_file)
        return loaded, RunInfo(loaded.name, loaded.source, loaded.path, loaded.sha256, "", {})
    kind = type(spec_or_model).__name__
    return spec_or_model, RunInfo(kind, f"in-memory {kind}", None, None, "", {})


def _iter_layers(loaded, options: FitOptions, skipped: Counter | None = None):
    from .sources.extract import iter_layers

    return iter_layers(loaded, kinds=options.kinds, include=options.include, exclude=options.exclude,
                       min_size=options.min_size, max_per_layer=options.max_per_layer, seed=options.seed, skipped=skipped)


def fit_model(spec_or_model: Any, *, init: bool = False, progress: bool = False, **options) -> pd.DataFrame:
    """Per-(layer, family) fit table for a model name, checkpoint path, nn.Module or state dict.

    Keyword options are those of :class:`FitOptions` (families, kinds, include, exclude,
    min_size, max_per_layer, seed, n_boot, boot_max_n).
    """
    opts = FitOptions(**options)
    loaded, _ = _load(spec_or_model, init, opts.seed)
    layers = _iter_layers(loaded, opts)
    if progress:
        from tqdm.auto import tqdm

        layers = tqdm(layers, desc="layers", unit="layer")
    return layer_table(list(fit_layers(layers, opts)))


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
) -> Path:
    """Fit every layer of ``model`` and write a complete report folder atomically; returns it."""
    from .reporting.plots import evenly_spaced, layer_figure, overview_figure, safe_filename, save_figure

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
    if (plots and plot_layers is not None) or (progress and in_memory):
        # A values-light first pass: spreads the plots over depth and gives the progress bar its total.
        total = sum(1 for _ in _iter_layers(loaded, dataclasses.replace(options, max_per_layer=8)))
    with atomic.staged_dir(out) as stage:
        figures: list[str] = []
        if plots:
            (stage / "plots").mkdir()
            chosen = evenly_spaced(total, plot_layers) if total is not None else None

            def on_layer(result: LayerResult, x_sorted) -> None:
                if (chosen is None or result.index in chosen) and result.fit.ok:
                    name = f"{result.index:03d}_{safe_filename(result.layer.name)}.png"
                    save_figure(layer_figure(result, x_sorted), stage / "plots" / name)
                    figures.append(name)
        else:
            on_layer = None
        iterator = fit_layers(layers, options, on_layer=on_layer)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=total, desc=f"fitting {info.model}", unit="layer")
        results = list(iterator)
        t_fitted = time.perf_counter()
        table = layer_table(results)
        if plots and not table.empty and (table["family"] != "").any():
            save_figure(overview_figure(table, f"{info.model}: best family and KS distance by depth"), stage / "plots" / "overview.png")
            figures.insert(0, "overview.png")
        timing = {"load_seconds": round(t_loaded - t0, 3), "fit_seconds": round(t_fitted - t_loaded, 3),
                  "total_seconds": round(time.perf_counter() - t0, 3)}
        info = RunInfo(info.model, info.source, info.weights_path, info.weights_sha256, command,
                       {"init": init, **options_dict(options)}, dict(sorted(skipped.items())))
        write_tables(stage, info, table, comparison_table(results), figures, timing)
    return out
