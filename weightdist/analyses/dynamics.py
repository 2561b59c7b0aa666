"""`weightdist fit --over-training DIR`: how the weight distribution gets where it ends up.

Each snapshot file in DIR (written by the training script) is fitted with the
same pipeline as `fit`; the tables are stacked with an ``epoch`` column and
plotted as family scores, β and df per layer against training time.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..core.families import label_of
from ..core.families.base import baseline_family, headline_families
from ..stores import atomic
from ..errors import WeightdistError
from ..pipeline import FitOptions
from ..escape import markdown_code, markdown_text, url_path
from ..reporting.report import csv_bytes, markdown_table

SNAPSHOT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_EPOCH = re.compile(r"epoch[_-]?(\d+(?:\.\d+)?)")


def snapshot_files(folder: str | Path) -> list[tuple[float, Path]]:
    """(epoch, file) pairs sorted by epoch; the epoch is read from 'epochN.NN' in the file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightdistError(f"--over-training: {folder} is not a folder; pass the snapshot folder written by the training script")
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix in SNAPSHOT_SUFFIXES:
            match = _EPOCH.search(path.stem)
            if match is None:
                raise WeightdistError(f"--over-training: cannot read the epoch from {path.name}; name snapshots like 'step000100_epoch00.25.safetensors'")
            found.append((float(match.group(1)), path))
    if len(found) < 2:
        raise WeightdistError(f"--over-training: {folder} holds {len(found)} snapshot file(s); need at least 2 ({', '.join(SNAPSHOT_SUFFIXES)})")
    return sorted(found)


def fit_snapshots(snapshots: Sequence[tuple[float, Path]], options: FitOptions, progress: bool = True) -> pd.DataFrame:
    from ..api import fit_model

    iterator = snapshots
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(snapshots, desc="snapshots", unit="snapshot")
    tables = [fit_model(str(path), **vars(options)).assign(epoch=epoch, snapshot=path.name) for epoch, path in iterator]
    return pd.concat(tables, ignore_index=True)


def gain_column() -> str:
    """The family_scores column of gains over the registry's baseline family ("mean_gain_vs_gaussian")."""
    return f"mean_gain_vs_{baseline_family().name}"


def family_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Per epoch: mean over layers of each family's loglik per weight minus the baseline family's (the
    Gaussian, as the registry declares it), and wins. Without baseline rows the gains are NaN."""
    fitted = table[table["family"] != ""]
    base = fitted[fitted["family"] == baseline_family().name].set_index(["epoch", "layer"])["mean_loglik"]
    rows = []
    for (epoch, family), group in fitted.groupby(["epoch", "family"]):
        gain = group.set_index(["epoch", "layer"])["mean_loglik"] - base.reindex(group.set_index(["epoch", "layer"]).index)
        rows.append({"epoch": epoch, "family": family, gain_column(): float(gain.mean()),
                     "wins": int(group["is_best"].astype(bool).sum())})
    return pd.DataFrame(rows)


def _per_layer_figure(table: pd.DataFrame, family: str, column: str, ylabel: str, log: bool):
    from ..reporting.plots import _plt

    plt = _plt()
    rows = table[table["family"] == family]
    fig, ax = plt.subplots(figsize=(8, 4))
    layers = list(dict.fromkeys(rows["layer"]))
    cmap = plt.get_cmap("viridis")
    for i, layer in enumerate(layers):
        r = rows[rows["layer"] == layer]
        ax.plot(r["epoch"], r[column], lw=1, color=cmap(i / max(len(layers) - 1, 1)))
    ax.set_xscale("symlog", linthresh=0.1)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch (symlog)")
    ax.set_ylabel(ylabel)
    sm = plt.cm.ScalarMappable(cmap=cmap)
    fig.colorbar(sm, ax=ax, label="relative depth")
    fig.tight_layout()
    return fig


def _scores_figure(scores: pd.DataFrame):
    from ..reporting.plots import _plt, color

    plt = _plt()
    fig, (ax_gain, ax_wins) = plt.subplots(1, 2, figsize=(11, 3.8))
    for family, rows in scores.groupby("family"):
        ax_gain.plot(rows["epoch"], rows[gain_column()], "o-", ms=3, color=color(family), label=family)
        ax_wins.plot(rows["epoch"], rows["wins"], "o-", ms=3, color=color(family), label=family)
    for ax in (ax_gain, ax_wins):
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("epoch (symlog)")
    ax_gain.set_ylabel(f"mean loglik/weight − {label_of(baseline_family().name)}'s")
    ax_wins.set_ylabel("layers won (AIC)")
    ax_gain.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def over_training_report(folder: str | Path, out: str | Path | None, *, options: FitOptions = FitOptions(),
                         command: str = "", progress: bool = True) -> Path:
    from ..reporting.plots import save_figure

    snapshots = snapshot_files(folder)
    out = atomic.check_writable_dir(out or Path("reports") / f"{Path(folder).name}_over_training")
    table = fit_snapshots(snapshots, options, progress=progress)
    scores = family_scores(table)
    with atomic.staged_dir(out) as stage:
        (stage / "plots").mkdir()
        save_figure(_scores_figure(scores), stage / "plots" / "family_scores.png")
        figures = ["family_scores.png"]
        for fam in headline_families():
            family, column, shape = fam.name, fam.headline, fam.shape(fam.headline)
            ylabel, log = f"{label_of(family)} {shape.symbol} per layer", shape.log_axis
            if (table["family"] == family).any() and column in table:
                save_figure(_per_layer_figure(table, family, column, ylabel, log), stage / "plots" / f"{column}_over_training.png")
                figures.append(f"{column}_over_training.png")
        atomic.write_bytes(stage / "over_training.csv", csv_bytes(table))
        atomic.write_bytes(stage / "family_scores.csv", csv_bytes(scores))
        pivot = scores.pivot(index="epoch", columns="family", values="wins").reset_index()
        md = [f"# weightdist fit --over-training: {markdown_text(Path(folder).name)}", "", f"Generated by {markdown_code(command)}", "",
              f"{len(snapshots)} snapshots, epochs {snapshots[0][0]:g} to {snapshots[-1][0]:g}.", "",
              "Layers won by each family (AIC) per snapshot:", "", markdown_table(pivot), ""]
        md += [f"![{markdown_text(f)}](plots/{url_path(f)})" for f in figures]
        atomic.write_text(stage / "report.md", "\n".join(md) + "\n")
    return out
