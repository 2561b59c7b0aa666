"""Per-output-channel fits: every family fitted to each output channel of a layer.

Quantisation works per output channel (rows of a linear layer, filters of a conv),
and in transformers a few channels are known outliers; so the per-layer question
"which law?" is asked again per channel. A layer's summary gives the spread of the
shape parameters across channels (median, IQR), the share of channels each family
wins, and the outlier channels: those whose log β or log scale is more than
``OUTLIER_Z`` robust z-scores (median and MAD, Iglewicz & Hoaglin's 0.6745 factor)
from the layer's median.
"""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..core.families import get_family
from ..core.fitting import MIN_N, fit_sorted, prepare, rescale_exponent, resolve_families
from ..errors import WeightdistError

DEFAULT_MIN_CHANNEL_SIZE = 32  # fewer values per channel give shape estimates too noisy to compare
OUTLIER_Z = 3.5  # Iglewicz & Hoaglin's cut for the modified z-score
CHANNEL_KINDS = ("conv", "linear")


class ChannelError(WeightdistError, ValueError):
    """Per-channel work asked of layers whose channels are too small."""


def check_min_channel_size(n: int) -> int:
    if n < MIN_N:
        raise ChannelError(f"--min-channel-size must be at least {MIN_N} (a fit needs {MIN_N} values), got {n}")
    return n


def as_channels(values: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A weight tensor as (output channels, values per channel): rows of linear, filters of conv."""
    return np.asarray(values, dtype=np.float64).reshape(int(shape[0]), -1)


def channel_size(shape: Sequence[int]) -> int:
    return int(np.prod(shape[1:])) if len(shape) > 1 else 1


def robust_z(values: np.ndarray) -> np.ndarray:
    """Modified z-score 0.6745 (x - median) / MAD; 0 where the MAD is 0 (no spread to compare with)."""
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).any():  # e.g. log(0) for every channel's std (values that vanish in float64)
        return np.zeros_like(v)
    med = np.nanmedian(v)
    mad = np.nanmedian(np.abs(v - med))
    if not mad > 0:
        return np.zeros_like(v)
    return 0.6745 * (v - med) / mad


def fit_channels(layer_name: str, kind: str, shape: Sequence[int], values: np.ndarray,
                 families: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (channel, family): the fitted parameters, AIC and whether it wins the channel."""
    chosen = resolve_families(families)
    rows = []
    for channel, row in enumerate(as_channels(values, shape)):
        x_sorted, n_nonfinite, n_zero = prepare(row)
        res = fit_sorted(x_sorted, n_nonfinite, chosen, n_zero=n_zero)
        if not res.ok:
            rows.append({"layer": layer_name, "kind": kind, "channel": channel, "n": res.n, "status": res.status, "family": ""})
            continue
        e = rescale_exponent(x_sorted)  # values near the ends of float64: their squares would overflow or vanish
        std = math.ldexp(float(np.std(np.ldexp(x_sorted, -e))), e) if e else float(np.std(x_sorted))
        for name, f in res.fits.items():
            rows.append({"layer": layer_name, "kind": kind, "channel": channel, "n": res.n, "status": res.status,
                         "std": std, "family": name, **{p: float(v) for p, v in f.params.items()}, "aic": f.aic,
                         "ks_stat": f.ks_stat, "is_best": name == res.best})
    return pd.DataFrame(rows)


def _shape_params(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(family, shape parameter) pairs present in a channel table: taken from the registry's declarations."""
    pairs = []
    for name in table["family"].dropna().unique():
        if not name:
            continue
        for p in get_family(name).param_names:
            if p not in ("loc", "scale"):
                pairs.append((name, p))
    return sorted(pairs)


def summarise_layer(table: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """Per-layer summary of a channel table (one layer), and that layer's outlier channels.

    Outliers: channels whose log headline shape (β, df; fits on a bound left out) or log standard
    deviation has a robust z-score beyond ±OUTLIER_Z."""
    fitted = table[table["family"] != ""]
    summary: dict = {"layer": table["layer"].iloc[0], "kind": table["kind"].iloc[0],
                     "channels": int(table["channel"].nunique()), "channels_fitted": int(fitted["channel"].nunique()),
                     "outlier_channels": 0}  # (a layer whose every channel is constant or binary has none fitted)
    if fitted.empty:
        return summary, pd.DataFrame()
    best = fitted[fitted["is_best"].astype(bool)]
    shares = best["family"].value_counts(normalize=True)
    for name in sorted(fitted["family"].unique()):
        summary[f"share_{name}"] = float(shares.get(name, 0.0))
    for fam, p in _shape_params(fitted):
        v = fitted.loc[fitted["family"] == fam, p].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if v.size:
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            summary.update({f"{p}_median": float(med), f"{p}_q1": float(q1), f"{p}_q3": float(q3)})
    flagged = []
    from ..core.families.base import headline_families

    checks = [(f.name, f.headline) for f in headline_families() if f.name in set(fitted["family"])]
    for fam, p in checks + [("", "std")]:
        sub = fitted.drop_duplicates("channel") if fam == "" else fitted[fitted["family"] == fam]
        if fam:  # a shape on (or within 0.1 % of) its fitting bound, e.g. df at its cap, is not a measurement to compare
            shape = get_family(fam).shape(p)
            sub = sub[(sub[p] > shape.lower * 1.001) & (sub[p] < shape.upper * 0.999)]
        v = sub[p].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = robust_z(np.log(v))
        for channel, value, zz in zip(sub["channel"], v, z):
            if np.isfinite(zz) and abs(zz) > OUTLIER_Z:
                flagged.append({"layer": summary["layer"], "channel": int(channel), "family": fam or "—", "parameter": p,
                                "value": float(value), "robust_z": float(zz)})
    outliers = pd.DataFrame(flagged)
    summary["outlier_channels"] = int(outliers["channel"].nunique()) if not outliers.empty else 0
    return summary, outliers


@dataclass(frozen=True)
class ChannelOptions:
    families: tuple[str, ...] | None = None
    include: str | None = None
    exclude: str | None = None
    min_channel_size: int = DEFAULT_MIN_CHANNEL_SIZE
    plot_layers: int | None = 4

    def __post_init__(self) -> None:
        from ..reporting.plots import check_plot_layers  # (matplotlib itself stays lazy there)

        check_min_channel_size(self.min_channel_size)
        check_plot_layers(self.plot_layers)
        resolve_families(self.families)


def channel_tables(layers, options: ChannelOptions) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(per-channel fits, per-layer summary, outlier channels, layers skipped as too small)."""
    fits, summaries, outliers, skipped = [], [], [], []
    for layer in layers:
        if layer.kind not in CHANNEL_KINDS or len(layer.shape) < 2 or layer.subsampled_from is not None:
            continue
        if channel_size(layer.shape) < options.min_channel_size:
            skipped.append(layer.name)
            continue
        table = fit_channels(layer.name, layer.kind, layer.shape, layer.values, options.families)
        summary, out = summarise_layer(table)
        fits.append(table)
        summaries.append(summary)
        if not out.empty:
            outliers.append(out)
    if not fits:
        raise ChannelError(
            f"no conv or linear layer has channels of at least {options.min_channel_size} values"
            + (f" (too small: {', '.join(skipped[:3])}{'…' if len(skipped) > 3 else ''})" if skipped else "")
            + "; lower --min-channel-size or use --granularity tensor")
    return (pd.concat(fits, ignore_index=True), pd.DataFrame(summaries),
            pd.concat(outliers, ignore_index=True) if outliers else pd.DataFrame(), skipped)


# --- the report folder (`weightdist fit --granularity channel`) ----------------------------------------


def shape_figure(layer_fits: pd.DataFrame, layer: str):
    """Each headline shape (β, df, ...) across a layer's channels, with the median and outliers marked."""
    from ..core.families.base import headline_families
    from ..escape import plot_text
    from ..reporting.plots import _plt

    plt = _plt()
    fams = [f for f in headline_families() if f.headline in layer_fits and (layer_fits["family"] == f.name).any()]
    fig, axes = plt.subplots(1, max(1, len(fams)), figsize=(5.5 * max(1, len(fams)), 3.2), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        rows = layer_fits[layer_fits["family"] == fam.name]
        v = rows[fam.headline].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = robust_z(np.log(v))
        out = np.abs(z) > OUTLIER_Z
        ax.plot(rows["channel"], v, ".", ms=4, color="0.3", label="channel")
        ax.plot(rows["channel"][out], v[out], "o", mfc="none", color="tab:red", label=f"outlier (|robust z| > {OUTLIER_Z})")
        ax.axhline(np.nanmedian(v), color="tab:blue", lw=1, label="median")
        shape = fam.shape(fam.headline)
        if shape.log_axis:
            ax.set_yscale("log")
        ax.set_xlabel("output channel")
        ax.set_ylabel(f"{shape.symbol} ({fam.label or fam.name})")
        ax.legend(fontsize=7)
    fig.suptitle(plot_text(layer), fontsize=9)
    fig.tight_layout()
    return fig


def channel_report(model: str, out: str | Path | None = None, *, options: ChannelOptions = ChannelOptions(),
                   command: str | None = None, init: bool = False, seed: int = 0, progress: bool = True) -> Path:
    """Fit every family to every output channel of ``model``'s conv/linear weights; write a report folder."""
    from ..api import _load, default_out
    from ..escape import markdown_code, markdown_text, safe_filename
    from ..reporting.html import Page, Table, provenance_lines, write_html
    from ..reporting.plots import evenly_spaced, save_figure
    from ..reporting.report import csv_bytes, markdown_table
    from ..sources.extract import iter_layers
    from ..stores import atomic

    out = atomic.check_writable_dir(out or Path(str(default_out(model, init)) + "_channels"))
    command = command or f"weightdist fit {shlex.quote(model)} --granularity channel"
    loaded, info = _load(model, init, seed)
    layers = iter_layers(loaded, kinds=CHANNEL_KINDS, include=options.include, exclude=options.exclude)
    if progress:
        from tqdm.auto import tqdm

        layers = tqdm(layers, desc=f"channel fits {info.model}", unit="layer")
    fits, summary, outliers, skipped = channel_tables(layers, options)
    names = list(summary["layer"])
    chosen = [names[i] for i in sorted(evenly_spaced(len(names), options.plot_layers))]
    with atomic.staged_dir(out) as stage:
        (stage / "plots").mkdir()
        figures = {}
        for i, name in enumerate(names):
            if name in chosen:
                file = f"{i:03d}_{safe_filename(name)}_shapes.png"
                save_figure(shape_figure(fits[fits["layer"] == name], name), stage / "plots" / file)
                figures[name] = [stage / "plots" / file]
        atomic.write_bytes(stage / "channels.csv", csv_bytes(fits))
        atomic.write_bytes(stage / "channel_summary.csv", csv_bytes(summary))
        if not outliers.empty:
            atomic.write_bytes(stage / "outlier_channels.csv", csv_bytes(outliers))
        share_cols = [c for c in summary.columns if c.startswith("share_")]
        top = summary[share_cols].mean().sort_values(ascending=False) if share_cols else pd.Series(dtype=float)
        headline = (f"Over {int(summary['channels_fitted'].sum())} channels of {len(summary)} layers, "
                    + ", ".join(f"{c.removeprefix('share_')} wins {100 * v:.0f} %" for c, v in top.items())
                    + f" of channels (mean share over layers); {int(summary['outlier_channels'].sum())} outlier channels.")
        md = [f"# weightdist fit (per channel): {markdown_text(info.model)}", "", f"Generated by {markdown_code(command)}", "",
              f"**{markdown_text(headline)}**", "", f"- Weights: {markdown_text(info.source)}",
              f"- Channels: output channels (rows of linear weights, filters of convolutions) with at least "
              f"{options.min_channel_size} values (`--min-channel-size`)",
              f"- Outliers: a channel whose log shape or log scale has |robust z| > {OUTLIER_Z} (median and MAD over the layer's channels)"]
        if skipped:
            md.append(f"- Layers with smaller channels, not fitted per channel: {len(skipped)} ("
                      + ", ".join(markdown_text(s) for s in skipped[:5]) + ("…" if len(skipped) > 5 else "") + ")")
        md += ["", "## Per layer", "", markdown_table(summary), ""]
        if not outliers.empty:
            md += ["## Outlier channels", "", markdown_table(outliers), ""]
        if figures:
            md += ["## Shapes across channels", ""] + [f"![{markdown_text(n)}](plots/{p[0].name})" for n, p in figures.items()] + [""]
        atomic.write_text(stage / "report.md", "\n".join(md))
        tables = [Table.from_frame("Per layer (click a row for its plot)", summary, key="layer", filterable=True)]
        if not outliers.empty:
            tables.append(Table.from_frame("Outlier channels", outliers))
        write_html(stage / "report.html", Page(title=f"weightdist fit (per channel): {info.model}", command=command,
                                               provenance=provenance_lines(info), headline=headline, tables=tuple(tables),
                                               row_figures=figures))
    return out
