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
from ..core.families import label_of

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


def headline_stats(table: pd.DataFrame) -> dict:
    """Per-model numbers shared by report.md, summary.json and `weightdist compare`."""
    fitted = table[table["family"] != ""]
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
    if "gaussian" in by_family and "laplace" in by_family:
        g, l = by_family["gaussian"], by_family["laplace"]
        stats["laplace_beats_gaussian"] = int((l["aic"] < g["aic"].reindex(l.index)).sum())
    if "student_t" in by_family:
        t = by_family["student_t"]
        others = [by_family[f]["aic"].reindex(t.index) for f in ("gaussian", "laplace") if f in by_family]
        if others:
            stats["student_t_beats_gaussian_and_laplace"] = int((t["aic"] < pd.concat(others, axis=1).min(axis=1)).sum())
        stats["df_median"], stats["df_q1"], stats["df_q3"] = _median_iqr(t["df"])
    if "gennorm" in by_family:
        stats["beta_median"], stats["beta_q1"], stats["beta_q3"] = _median_iqr(by_family["gennorm"]["beta"])
    return stats


def answer_sentence(stats: dict) -> str:
    wins = stats["wins"]
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


def markdown_layer_table(table: pd.DataFrame) -> str:
    layers = table.drop_duplicates("layer").set_index("layer")
    fitted = table[table["family"] != ""]
    pivot = {f: g.set_index("layer") for f, g in fitted.groupby("family")}
    lines = ["| # | layer | kind | shape | n | best | β (gennorm) | df (t) | KS (best) | KS p corrected (best) | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    best_rows = fitted[fitted["is_best"].astype(bool)].set_index("layer")
    for name, row in layers.iterrows():
        beta = pivot["gennorm"]["beta"].get(name) if "gennorm" in pivot else None
        df = pivot["student_t"]["df"].get(name) if "student_t" in pivot else None
        ks = best_rows["ks_stat"].get(name) if name in best_rows.index else None
        p_corrected = best_rows["ks_pvalue_corrected"].get(name) if name in best_rows.index else None
        lines.append(
            f"| {row['index']} | `{name}` | {row['kind']} | {row['shape']} | {row['n']} | {row['best'] or '—'} | "
            f"{_fmt(beta)} | {_fmt(df)} | {_fmt(ks)} | {_fmt(p_corrected, '.2g') or 'not computed'} | {row['verdict']} |"
        )
    return "\n".join(lines)


def report_markdown(info: RunInfo, stats: dict, table: pd.DataFrame, figures: Sequence[str]) -> str:
    parts = [
        f"# weightdist fit: {info.model}",
        "",
        f"Generated by `{info.command}`",
        "",
        f"**{answer_sentence(stats)}**",
        "",
        f"- Weights: {info.source}" + (f" (`{Path(info.weights_path).name}`, sha256 `{info.weights_sha256[:16]}…`)" if info.weights_path and info.weights_sha256 else ""),
        f"- Layers analysed: {stats['n_layers']} ({stats['n_weights']:,} weights); fitted: {stats['n_layers_fitted']}",
    ]
    if "laplace_beats_gaussian" in stats:
        parts.append(f"- Laplace beats Gaussian (AIC) in {stats['laplace_beats_gaussian']} of {stats['n_layers_fitted']} layers")
    if "student_t_beats_gaussian_and_laplace" in stats:
        parts.append(f"- Student-t beats both in {stats['student_t_beats_gaussian_and_laplace']} of {stats['n_layers_fitted']} layers; median df {_fmt(stats['df_median'])} (IQR {_fmt(stats['df_q1'])}–{_fmt(stats['df_q3'])})")
    if "beta_median" in stats:
        parts.append(f"- Generalized-normal shape β: median {_fmt(stats['beta_median'])} (IQR {_fmt(stats['beta_q1'])}–{_fmt(stats['beta_q3'])}); β = 1 is Laplace, β = 2 is Gaussian")
    parts.append(f"- Median KS distance of the best family: {_fmt(stats['median_ks_best'])}")
    subsampled = int(table.drop_duplicates("layer")["subsampled_from"].notna().sum()) if "subsampled_from" in table else 0
    if subsampled:
        parts.append(f"- **Subsampled:** {subsampled} layers larger than {info.options.get('max_per_layer'):,} weights were analysed "
                     f"on a seeded random subsample of that many (`--max-per-layer`, seed {info.options.get('seed')})")
    if info.skipped:
        parts.append("- Tensors not analysed: " + "; ".join(f"{n} {reason}" for reason, n in info.skipped.items()))
    if "overview.png" in figures:
        parts += ["", "![winning family and KS distance by depth](plots/overview.png)"]
    parts += ["", "## Per layer", "", markdown_layer_table(table), "", "## Notes", "", PVALUE_NOTE, ""]
    layer_figs = [f for f in figures if f != "overview.png"]
    if layer_figs:
        parts += ["## Layer plots", "", "Histogram with fitted densities (linear and log density) and a QQ plot against the best family.", ""]
        parts += [f"![{f}](plots/{f})" for f in layer_figs]
        parts.append("")
    return "\n".join(parts)


def summary_json(info: RunInfo, stats: dict, table: pd.DataFrame, timing: dict) -> str:
    layers = table.drop_duplicates("layer")
    statuses = layers["status"].value_counts().to_dict()
    summary = {
        "model": info.model,
        "source": info.source,
        "weights_path": info.weights_path,
        "weights_sha256": info.weights_sha256,
        "command": info.command,
        "options": info.options,
        **stats,
        "layer_status_counts": {k: int(v) for k, v in sorted(statuses.items())},
        "nonfinite_values": int(layers["n_nonfinite"].sum()),
        "subsampled_layers": int(layers["subsampled_from"].notna().sum()),
        "tensors_skipped": info.skipped,
        "pvalues": PVALUE_NOTE,
        "versions": package_versions(),
        # Everything above is deterministic; these two are not.
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "timing": timing,
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
                 figures: Sequence[str], timing: dict) -> dict:
    stats = headline_stats(table)
    atomic.write_bytes(stage / "layers.csv", csv_bytes(table))
    if not comparisons.empty:
        atomic.write_bytes(stage / "comparisons.csv", csv_bytes(comparisons))
    atomic.write_text(stage / "summary.json", summary_json(info, stats, table, timing))
    atomic.write_text(stage / "report.md", report_markdown(info, stats, table, figures))
    return stats


def markdown_table(table: pd.DataFrame, spec: str = ".3g") -> str:
    """A DataFrame as a GitHub Markdown table (no tabulate dependency)."""
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(_fmt(v, spec) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])
