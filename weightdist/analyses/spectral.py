"""Report glue for the spectral view (core/spectral.py): the ESD figure of one layer, and the
cross-model relation between the value view (gennorm β) and the spectral view (ESD alpha)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..core.spectral import SpectralView, mp_density



def esd_figure(view: SpectralView, title: str):
    """Left: the ESD histogram (log eigenvalue axis) with the Marchenko–Pastur density of a random
    matrix of the same shape and entry variance, and the ESD of the permuted entries. Right: the
    complementary CDF on log–log axes with the fitted power-law tail from xmin."""
    from ..escape import plot_text
    from ..reporting.plots import _plt

    plt = _plt()
    s, r = view.spectrum, view.randomized
    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(11, 3.6))
    lam = s.eigenvalues[s.eigenvalues > 0]
    lam_r = r.eigenvalues[r.eigenvalues > 0]
    if lam.size == 0:  # an all-zero matrix: no eigenvalue to put on a log axis
        for ax in (ax_h, ax_c):
            ax.text(0.5, 0.5, "every eigenvalue is 0 (all entries are zero)", ha="center", va="center", transform=ax.transAxes)
        fig.suptitle(plot_text(title, limit=160), fontsize=10)
        return fig
    lo, hi = min(lam.min(), lam_r.min(initial=lam.min())), max(lam.max(), lam_r.max(initial=lam.max()))
    if hi <= lo * (1 + 1e-9):  # one distinct positive eigenvalue (a rank-one matrix): give the bins a width
        lo, hi = lo / 2, hi * 2
    bins = np.geomspace(lo, hi, max(10, min(80, int(2 * math.sqrt(lam.size)))))
    ax_h.hist(lam, bins=bins, density=True, color="0.6", label="ESD")
    ax_h.hist(lam_r, bins=bins, density=True, histtype="step", color="tab:purple", lw=1.2,
              label=f"entries permuted (KS {view.rand_distance:.2f})")
    grid = np.geomspace(lo, hi, 800)
    ax_h.plot(grid, mp_density(grid, s.entry_variance, s.rows, s.cols), "k-", lw=1, label="Marchenko–Pastur")
    ax_h.axvline(s.mp_edge, color="tab:red", ls=":", lw=1, label=f"bulk edge (+TW 99%): {s.mp_spikes} spikes")
    ax_h.set_xscale("log")
    ax_h.set_xlabel("eigenvalue of WᵀW/N")
    ax_h.set_ylabel("density")
    ax_h.legend(fontsize=7, frameon=False)
    ccdf = 1 - np.arange(lam.size) / lam.size
    ax_c.loglog(lam, ccdf, ".", ms=3, color="0.3", label="ESD")
    tail = s.tail
    if math.isfinite(tail.alpha):
        share = tail.n_tail / lam.size
        x = np.geomspace(tail.xmin, lam.max(), 100)
        with np.errstate(over="ignore", divide="ignore"):  # a drawing: a curve past float64's range is just not drawn
            curve = share * (x / tail.xmin) ** (1 - tail.alpha)
        ax_c.loglog(x, curve, "-", color="tab:red", label=f"power law α={tail.alpha:.2f} from xmin={tail.xmin:.3g}")
    ax_c.set_xlabel("eigenvalue")
    ax_c.set_ylabel("P(λ ≥ x)")
    ax_c.legend(fontsize=7, frameon=False)
    fig.suptitle(plot_text(title, limit=160), fontsize=10)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's ρ with a seeded percentile-bootstrap interval (layers resampled with replacement)."""

    rho: float
    lo: float
    hi: float
    n: int
    pvalue: float


def spearman_with_interval(x, y, rng: np.random.Generator, n_boot: int = 2000, level: float = 0.95) -> RankCorrelation:
    """Spearman rank correlation of paired values and its percentile bootstrap interval."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = x.size
    if n < 4:
        return RankCorrelation(math.nan, math.nan, math.nan, n, math.nan)
    res = stats.spearmanr(x, y)
    index = rng.integers(0, n, size=(n_boot, n))
    # Spearman's ρ is Pearson's r of the ranks, computed for all resamples at once.
    rx, ry = stats.rankdata(x[index], axis=1), stats.rankdata(y[index], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    boot = boot[np.isfinite(boot)]
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail]) if boot.size else (math.nan, math.nan)
    return RankCorrelation(float(res.statistic), float(lo), float(hi), n, float(res.pvalue))


def shape_alpha_pairs(table: pd.DataFrame, family: str, shape: str) -> pd.DataFrame:
    """Per layer of one report's layers.csv: ``family``'s fitted ``shape`` (e.g. gennorm's beta) beside the ESD
    alpha, for the layers carrying both."""
    if "esd_alpha" not in table or shape not in table:
        return pd.DataFrame(columns=["layer", shape, "esd_alpha"])
    fitted = table[table["family"] == family][["layer", shape]]
    alpha = table.drop_duplicates("layer")[["layer", "esd_alpha"]]
    pairs = fitted.merge(alpha, on="layer")
    pairs = pairs[np.isfinite(pd.to_numeric(pairs[shape], errors="coerce")) & np.isfinite(pd.to_numeric(pairs["esd_alpha"], errors="coerce"))]
    return pairs.reset_index(drop=True)
