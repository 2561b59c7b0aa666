"""Figures for fit reports. matplotlib is imported lazily, with the Agg backend, so the
core never pays for it and headless machines work."""
from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np

from ..stores import atomic
from ..core.families import FAMILIES, get_family
from ..escape import plot_text

# Colours for families that do not declare one: stable per name, apart from the built-ins' tab colours.
PALETTE = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def color(family: str) -> str:
    """The family's declared colour, or a palette colour picked by its name (same every run)."""
    declared = get_family(family).color if family in FAMILIES else None
    return declared or PALETTE[zlib.crc32(family.encode()) % len(PALETTE)]


def plot_layer_fit(layer_fit, x, ax=None, log_density: bool = False):
    """Histogram of ``x`` with every fitted family's density; returns the axes."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if np.any(x[1:] < x[:-1]):
        x = np.sort(x)
    lo, hi = x[0], x[-1]
    # One filled outline, not a bar patch per bin: drawing 200 patches cost more than the rest of the figure.
    counts, edges = np.histogram(x, bins=min(200, max(10, int(np.sqrt(x.size)))), range=(lo, hi), density=True)
    ax.stairs(counts, edges, fill=True, color="0.75", label="weights")
    grid = np.linspace(lo, hi, 240)
    for name, f in layer_fit.fits.items():
        density = np.exp(get_family(name).logpdf(grid, f.params))
        ax.plot(grid, density, color=color(name), lw=1.3, label=f"{name} {get_family(name).describe(f.params, f.note)}".strip())
    if log_density:
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(0.5 / (x.size * (hi - lo) / 200), 1e-12))
        ax.yaxis.set_minor_locator(_plt().NullLocator())  # minor log ticks: many labels to lay out, little to read
    ax.set_xlabel("weight")
    ax.set_ylabel("log density" if log_density else "density")
    return ax


def plot_qq(x_sorted: np.ndarray, family: str, params, ax, points: int = 400):
    """Quantiles of the data against the fitted law, at ``points`` evenly spaced probabilities."""
    n = x_sorted.size
    probs = (np.arange(points) + 0.5) / points
    data_q = x_sorted[np.minimum((probs * n).astype(int), n - 1)]
    theory_q = get_family(family).ppf(probs, params)
    ax.plot(theory_q, data_q, ".", ms=2.5, color=color(family))
    lims = [min(theory_q[0], data_q[0]), max(theory_q[-1], data_q[-1])]
    ax.plot(lims, lims, "k--", lw=0.8)
    ax.set_xlabel(f"{family} quantiles")
    ax.set_ylabel("weight quantiles")
    return ax


def layer_figure(result, x_sorted: np.ndarray):
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    plot_layer_fit(result.fit, x_sorted, ax=axes[0])
    plot_layer_fit(result.fit, x_sorted, ax=axes[1], log_density=True)
    best = result.fit.best
    if best:
        plot_qq(x_sorted, best, result.fit.fits[best].params, ax=axes[2])
    axes[0].legend(fontsize=7, frameon=False)
    layer = result.layer
    fig.suptitle(plot_text(f"{layer.name}  ({layer.kind}, {'x'.join(map(str, layer.shape))}, best: {best})", limit=160), fontsize=10)
    # Fixed margins instead of tight_layout, which measured every tick label and took most of the time.
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.15, top=0.88, wspace=0.28)
    return fig


def overview_figure(table, title: str):
    """Winning family and KS distance of each family against relative depth."""
    plt = _plt()
    fig, (ax_best, ax_ks) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    fitted = table[table["family"] != ""]
    families = list(dict.fromkeys(fitted["family"]))
    best = fitted[fitted["is_best"]]
    ax_best.scatter(best["relative_depth"], [families.index(f) for f in best["family"]],
                    c=[color(f) for f in best["family"]], s=25)
    ax_best.set_yticks(range(len(families)), families)
    ax_best.set_ylabel("best by AIC")
    for name in families:
        rows = fitted[fitted["family"] == name]
        ax_ks.plot(rows["relative_depth"], rows["ks_stat"], "o-", ms=3, lw=1, color=color(name), label=name)
    ax_ks.set_yscale("log")
    ax_ks.set_ylabel("KS distance")
    ax_ks.set_xlabel("relative depth (first layer 0, last layer 1)")
    ax_ks.legend(fontsize=8, frameon=False)
    fig.suptitle(plot_text(title, limit=160), fontsize=11)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path, dpi: int = 80) -> None:
    """Render to memory, then write atomically: a killed run never leaves half a PNG."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def check_plot_layers(keep: int | None) -> None:
    """--plot-layers: None (every layer) or a count >= 0 (0: the overview figure only); else an OptionError."""
    if keep is not None:
        from ..sources.extract import check_int

        check_int("--plot-layers", keep, 0)


def evenly_spaced(count: int, keep: int | None) -> set[int]:
    """Indices of ``keep`` layers spread over depth (all when keep is None)."""
    if keep is None or keep >= count:
        return set(range(count))
    if keep <= 0:
        return set()
    return {int(round(i)) for i in np.linspace(0, count - 1, keep)}

