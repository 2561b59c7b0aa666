"""Write a fit report folder: layers.csv, comparisons.csv, summary.json, report.md, plots/.

Everything here is formatting of tables the pipeline already computed; the
numbers in report.md are read back from the same DataFrame that becomes the CSV.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import math
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..stores import atomic
from ..core.families import FAMILIES, get_family, label_of
from ..core.families.base import beats_key, headline_families
from ..escape import markdown_cell, markdown_code, markdown_text, url_path

PVALUE_NOTE = (
    "`ks_pvalue` treats the fitted parameters as known in advance; they were estimated from the same data, "
    "so it is too large (the Lilliefors problem). `ks_pvalue_corrected` is a parametric-bootstrap p-value "
    "(refit on every replicate, on a seeded subsample of at most `boot_max_n` weights); it is NaN unless "
    "the run used `--bootstrap N`. With 10^5+ weights every test rejects: read the effect sizes "
    "(KS distance, Δloglik per weight, ΔAIC, W1) instead."
)


@dataclass(frozen=True)
class RunInfo:
    """Where the weights came from and how the run was asked for."""

    model: str
    source: str
    weights_path: str | None
    weights_sha256: str | None
    command: str
    options: dict
    skipped: dict = dataclasses.field(default_factory=dict)  # tensors left out, by reason
    model_info: dict = dataclasses.field(default_factory=dict)  # the source entry's ModelInfo: training_data, init, licence, provenance


def package_versions() -> dict[str, str]:
    versions = {}
    for name in ("weightdist", "numpy", "scipy", "pandas", "torch", "torchvision", "timm", "statsmodels"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def csv_bytes(table: pd.DataFrame) -> bytes:
    """Deterministic CSV: same table, same bytes (full float precision, '\\n' line ends)."""
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n", float_format="%.10g")
    return buf.getvalue().encode()


def _median_iqr(values: pd.Series) -> tuple[float, float, float]:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return math.nan, math.nan, math.nan
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return float(med), float(q1), float(q3)


def stored_quantized(table: pd.DataFrame) -> pd.Series:
    """Per row, whether its layer is stored quantized (a ``quantized`` type such as GGUF's Q4_K): grid values."""
    if "quantized" not in table:
        return pd.Series(False, index=table.index)
    return table["quantized"].astype(object).fillna("").astype(str) != ""  # all-empty reads back as float NaN


def headline_stats(table: pd.DataFrame, include_quantized: bool = False) -> dict:
    """Per-model numbers shared by report.md, summary.json and `weightdist compare`.

    Layers stored quantized (a ``quantized`` type such as GGUF's Q4_K) hold grid values, so a
    continuous fit of them is not comparable: they stay in the tables but are left out of the
    win counts and medians here unless ``include_quantized`` (``--include-quantized``)."""
    fitted = table[table["family"] != ""]
    quantized_layers = 0
    if "quantized" in table and not include_quantized:
        on_grid = stored_quantized(table)
        quantized_layers = int(table.loc[on_grid, "layer"].nunique())
        fitted = fitted[~on_grid.loc[fitted.index]]
    layers = table.drop_duplicates("layer")
    best = fitted[fitted["is_best"].astype(bool)]
    wins = best["family"].value_counts().to_dict()
    by_family = {f: g.set_index("layer") for f, g in fitted.groupby("family")}
    stats = {
        "n_layers": int(layers.shape[0]),
        "n_layers_fitted": int(fitted["layer"].nunique()),
        "n_weights": int(layers["n"].sum()),
        "wins": {k: int(v) for k, v in sorted(wins.items(), key=lambda kv: (-kv[1], kv[0]))},
        "median_ks_best": float(best["ks_stat"].median()) if not best.empty else math.nan,
    }
    if quantized_layers:
        stats["n_layers_quantized_excluded"] = quantized_layers
    for fam in map(get_family, FAMILIES):  # what each family declares it wants counted and summarised
        rows = by_family.get(fam.name)
        if rows is None:
            continue
        if fam.beats and all(f in by_family for f in fam.beats):  # a family that was not fitted was not beaten
            others = [by_family[f]["aic"].reindex(rows.index) for f in fam.beats]
            stats[beats_key(fam)] = int((rows["aic"] < pd.concat(others, axis=1).min(axis=1)).sum())
        if fam.headline is not None and fam.headline in rows:
            h = fam.headline
            stats[f"{h}_median"], stats[f"{h}_q1"], stats[f"{h}_q3"] = _median_iqr(rows[h])
    return stats


def answer_sentence(stats: dict) -> str:
    wins = stats["wins"]
    if not wins and stats.get("n_layers_quantized_excluded"):
        return (f"All {stats['n_layers_quantized_excluded']} fitted layers are stored quantized (values on a grid), so no family "
                "is counted as winning; the table has their fits, and --include-quantized counts them.")
    if not wins:
        return f"No layer could be fitted (0 of {stats['n_layers']} layers)."
    top, count = next(iter(wins.items()))
    rest = ", ".join(f"{name} {c}" for name, c in list(wins.items())[1:])
    label = label_of(top)
    sentence = f"{label[0].upper() + label[1:]} fits best in {count} of {stats['n_layers_fitted']} layers (by AIC"
    sentence += f"; {rest})." if rest else ")."
    return sentence


def _fmt(v, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return format(v, spec) if isinstance(v, (float, np.floating)) else str(v)


INTERVAL_NOTE = (
    "Intervals in brackets are 95 % intervals: profile likelihood for the shapes (β, df; the scale re-maximised "
    "at every trial shape, the location held at its MLE, which is orthogonal to both in a symmetric family), Wald "
    "on log scale for `scale_lo`/`scale_hi`; see `weightdist/core/intervals.py`. `df_hi = inf`: a Gaussian "
    "(df = ∞) is inside the interval. `n_outliers`: weights outside the best law's central 1 − 1e-6 interval "
    "(`outlier_lo`, `outlier_hi`); under the law itself about n·1e-6 would be."
)
GENERIC_NOTE = ("`scipy:` families are fitted by scipy's generic `dist.fit` (Nelder–Mead): slower, and not "
                "guaranteed to reach the exact maximum of the likelihood.")
SPECTRAL_NOTE = (
    "Spectral columns (`--spectral`): each weight matrix (conv kernels as out × in·k·k) has the ESD of WᵀW/N, "
    "N = its larger dimension; `esd_alpha` is the power-law exponent of the ESD tail above `esd_xmin` (chosen by "
    "minimum KS distance); `mp_spikes` counts eigenvalues above the Marchenko–Pastur edge of a random matrix with "
    "the same shape and entry variance (plus the Tracy–Widom 99 % fluctuation); `esd_rand_distance` is the KS "
    "distance between the ESD and that of the same entries randomly permuted. See `weightdist/core/spectral.py`."
)


def with_interval(text: str, symbol: str, value: float, lo: float, hi: float) -> str:
    """'β≈1.21' in a verdict becomes 'β = 1.21 [1.18, 1.24]': a claim a reader can check."""
    if not (math.isfinite(value) and isinstance(lo, (float, int)) and math.isfinite(lo)):
        return text
    return text.replace(f"{symbol}≈{value:.3g}", f"{symbol} = {value:.3g} [{lo:.3g}, {hi:.3g}]", 1)


def notes(table: pd.DataFrame) -> list[str]:
    """The notes a table's columns call for, beyond the p-value note."""
    out = []
    if any(c.endswith("_lo") for c in table.columns):
        out += [INTERVAL_NOTE, ""]
    if table["family"].astype(str).str.startswith("scipy:").any():
        out += [GENERIC_NOTE, ""]
    if "esd_alpha" in table:
        out += [SPECTRAL_NOTE, ""]
    return out


def markdown_layer_table(table: pd.DataFrame) -> str:
    layers = table.drop_duplicates("layer").set_index("layer")
    fitted = table[table["family"] != ""]
    pivot = {f: g.set_index("layer") for f, g in fitted.groupby("family")}
    shown = [f for f in headline_families() if f.name in pivot and f.headline in pivot[f.name]]
    heads = "".join(f" {f.shape(f.headline).symbol} ({label_of(f.name)}) |" for f in shown)
    lines = [f"| # | layer | kind | shape | n | best |{heads} KS (best) | KS p corrected (best) | verdict |",
             "|---|---|---|---|---|---|" + "---|" * len(shown) + "---|---|---|"]
    best_rows = fitted[fitted["is_best"].astype(bool)].set_index("layer")
    for name, row in layers.iterrows():
        shapes = "".join(f" {_fmt(pivot[f.name][f.headline].get(name))}{_interval_cell(pivot[f.name], f.headline, name)} |" for f in shown)
        verdict = row["verdict"]
        best = row["best"]
        if best in pivot and best in {f.name for f in shown}:
            fam = next(f for f in shown if f.name == best)
            cols = pivot[best]
            if f"{fam.headline}_lo" in cols:
                verdict = with_interval(verdict, fam.shape(fam.headline).symbol, cols[fam.headline].get(name, math.nan),
                                        cols[f"{fam.headline}_lo"].get(name), cols[f"{fam.headline}_hi"].get(name))
        ks = best_rows["ks_stat"].get(name) if name in best_rows.index else None
        p_corrected = best_rows["ks_pvalue_corrected"].get(name) if name in best_rows.index else None
        lines.append(
            f"| {row['index']} | {markdown_cell(name)} | {markdown_cell(row['kind'])} | {markdown_cell(row['shape'])} | {row['n']} | "
            f"{markdown_cell(row['best'] or '—')} |{shapes} {_fmt(ks)} | {_fmt(p_corrected, '.2g') or 'not computed'} | "
            f"{markdown_cell(verdict)} |"
        )
    return "\n".join(lines)


def _interval_cell(rows: pd.DataFrame, param: str, layer: str) -> str:
    lo, hi = (rows[f"{param}_{side}"].get(layer) if f"{param}_{side}" in rows else None for side in ("lo", "hi"))
    if lo is None or not isinstance(lo, (float, int)) or not math.isfinite(lo):
        return ""
    return f" [{_fmt(lo)}, {_fmt(hi)}]"


def report_markdown(info: RunInfo, stats: dict, table: pd.DataFrame, figures: Sequence[str]) -> str:
    parts = [
        f"# weightdist fit: {markdown_text(info.model)}",
        "",
        f"Generated by {markdown_code(info.command)}",
        "",
        f"**{answer_sentence(stats)}**",
        "",
        f"- Weights: {markdown_text(info.source)}" + (f" ({markdown_code(Path(info.weights_path).name)}, sha256 `{info.weights_sha256[:16]}…`)" if info.weights_path and info.weights_sha256 else ""),
        f"- Layers analysed: {stats['n_layers']} ({stats['n_weights']:,} weights); fitted: {stats['n_layers_fitted']}",
    ]
    on_grid = int((table.drop_duplicates("layer")["status"].astype(str).str.startswith("quantised")).sum())
    if on_grid:
        parts.append(f"- **Quantised values:** {on_grid} layers hold few distinct values (see `n_distinct`, `grid_step` in "
                     "layers.csv); they were fitted by the probability of each value's rounding cell, so their "
                     "log-likelihoods are log-probabilities, not log-densities")
    for fam in map(get_family, FAMILIES):
        if beats_key(fam) in stats:
            parts.append(f"- {label_of(fam.name)} beats {' and '.join(map(label_of, fam.beats))} (AIC) in "
                         f"{stats[beats_key(fam)]} of {stats['n_layers_fitted']} layers")
    for fam in headline_families():
        h, shape = fam.headline, fam.shape(fam.headline)
        if f"{h}_median" in stats:
            parts.append(f"- {label_of(fam.name)} shape {shape.symbol}: median {_fmt(stats[f'{h}_median'])} "
                         f"(IQR {_fmt(stats[f'{h}_q1'])}–{_fmt(stats[f'{h}_q3'])})" + (f"; {shape.meaning}" if shape.meaning else ""))
    if stats.get("n_layers_quantized_excluded"):
        parts.append(f"- **Quantized:** {stats['n_layers_quantized_excluded']} layers stored quantized (values on a grid, "
                     "dequantized) are in the table but not in these counts and medians (`--include-quantized` counts them)")
    parts.append(f"- Median KS distance of the best family: {_fmt(stats['median_ks_best'])}")
    subsampled = int(table.drop_duplicates("layer")["subsampled_from"].notna().sum()) if "subsampled_from" in table else 0
    if subsampled:
        parts.append(f"- **Subsampled:** {subsampled} layers larger than {info.options.get('max_per_layer'):,} weights were analysed "
                     f"on a seeded random subsample of that many (`--max-per-layer`, seed {info.options.get('seed')})")
    if info.skipped:
        parts.append("- Tensors not analysed: " + "; ".join(f"{n} {reason}" for reason, n in info.skipped.items()))
    if "overview.png" in figures:
        parts += ["", "![winning family and KS distance by depth](plots/overview.png)"]
    parts += ["", "## Per layer", "", markdown_layer_table(table), "", "## Notes", "", PVALUE_NOTE, "", *notes(table)]
    layer_figs = [f for f in figures if f != "overview.png"]
    if layer_figs:
        parts += ["## Layer plots", "", "Histogram with fitted densities (linear and log density) and a QQ plot against the best family.", ""]
        parts += [f"![{markdown_text(f)}](plots/{url_path(f)})" for f in layer_figs]
        parts.append("")
    return "\n".join(parts)


def display_path(path: str | None) -> str | None:
    """A weights path as tracked files show it: relative to the package or to $TORCH_HOME when inside
    them, so a committed report does not change with the checkout's or the cache's location."""
    if not path:
        return path
    import os

    real = Path(path).resolve()
    roots = [("<weightdist>", Path(__file__).resolve().parents[1])]
    if os.environ.get("TORCH_HOME"):
        roots.append(("$TORCH_HOME", Path(os.environ["TORCH_HOME"]).resolve()))
    for label, root in roots:
        if real.is_relative_to(root):
            return f"{label}/{real.relative_to(root).as_posix()}"
    return str(path)


def summary_json(info: RunInfo, stats: dict, table: pd.DataFrame) -> str:
    layers = table.drop_duplicates("layer")
    statuses = layers["status"].value_counts().to_dict()
    summary = {
        "model": info.model,
        "source": info.source,
        "weights_path": display_path(info.weights_path),
        "weights_sha256": info.weights_sha256,
        "model_info": info.model_info,
        "command": info.command,
        "options": info.options,
        **stats,
        "layer_status_counts": {k: int(v) for k, v in sorted(statuses.items())},
        "nonfinite_values": int(layers["n_nonfinite"].sum()),
        "subsampled_layers": int(layers["subsampled_from"].notna().sum()),
        "tensors_skipped": info.skipped,
        "pvalues": PVALUE_NOTE,
        "versions": package_versions(),
        # No timestamp and no timing: the same command on the same weights writes the same bytes,
        # so regenerating a committed report leaves a checkout clean (timing goes to the terminal).
    }
    return json.dumps(_jsonable(summary), indent=2, sort_keys=False) + "\n"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(obj) else float(obj)
    return obj


def options_dict(options) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(options).items()}


def write_tables(stage: Path, info: RunInfo, table: pd.DataFrame, comparisons: pd.DataFrame,
                 figures: Sequence[str]) -> dict:
    stats = headline_stats(table, include_quantized=bool(info.options.get("include_quantized")))
    atomic.write_bytes(stage / "layers.csv", csv_bytes(table))
    if not comparisons.empty:
        atomic.write_bytes(stage / "comparisons.csv", csv_bytes(comparisons))
    atomic.write_text(stage / "summary.json", summary_json(info, stats, table))
    atomic.write_text(stage / "report.md", report_markdown(info, stats, table, figures))
    from .html import fit_page, write_html  # imported here: html.py builds on this module's tables

    write_html(stage / "report.html", fit_page(stage, info, answer_sentence(stats), table, figures))
    return stats


def markdown_table(table: pd.DataFrame, spec: str = ".3g") -> str:
    """A DataFrame as a GitHub Markdown table (no tabulate dependency)."""
    header = "| " + " | ".join(markdown_cell(c) for c in table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(markdown_cell(_fmt(v, spec)) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])
