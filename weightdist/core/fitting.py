"""Fit every registered family to one layer's weights: the pure core of the tool.

``fit(x)`` takes an array and returns a frozen :class:`LayerFit`; it never raises
on degenerate data (constant, too short, non-finite) but reports a status.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .families import FAMILIES, Family, get_family
from .ks import ks_pvalue, ks_statistic

MIN_N = 8
# Exact zeros above this share of a layer are a point mass (pruned weights): no continuous
# density can fit one (the Student-t and gennorm likelihoods become unbounded), so they are
# counted and left out of the fit.
ZERO_MASS_SHARE = 0.01


@dataclass(frozen=True)
class FamilyFit:
    """One family's maximum-likelihood fit to one layer."""

    family: str
    params: Mapping[str, float]
    loglik: float
    n: int
    k: int
    ks_stat: float
    # Computed as if the parameters were known in advance. They were estimated
    # from the same data, so this p-value is too large (Lilliefors); see gof.py
    # for the bootstrap-corrected one.
    ks_pvalue_naive: float
    converged: bool = True
    note: str = ""

    @property
    def aic(self) -> float:
        return 2 * self.k - 2 * self.loglik

    @property
    def bic(self) -> float:
        return self.k * math.log(self.n) - 2 * self.loglik

    @property
    def mean_loglik(self) -> float:
        return self.loglik / self.n


@dataclass(frozen=True)
class LayerFit:
    """All families' fits to one layer, plus the data-quality status."""

    n: int  # finite values fitted
    n_nonfinite: int
    status: str  # "ok", or why the layer was not fitted
    fits: Mapping[str, FamilyFit] = field(default_factory=dict)
    n_zero_excluded: int = 0  # exact zeros left out as a point mass (pruning)

    @property
    def ok(self) -> bool:
        return bool(self.fits)

    @property
    def best(self) -> str | None:
        """The family with the lowest AIC among converged fits."""
        usable = [f for f in self.fits.values() if f.converged and math.isfinite(f.loglik)]
        return min(usable, key=lambda f: f.aic).family if usable else None

    def plot(self, x: np.ndarray, ax=None, log_density: bool = False):
        from ..reporting.plots import plot_layer_fit  # matplotlib stays out of the core import path

        return plot_layer_fit(self, x, ax=ax, log_density=log_density)


def layer_status(x_sorted_finite: np.ndarray, n_nonfinite: int) -> str:
    n = x_sorted_finite.size
    if n == 0:
        return "no finite values" if n_nonfinite else "empty"
    if n < MIN_N:
        return f"too few values (n={n} < {MIN_N})"
    if x_sorted_finite[0] == x_sorted_finite[-1]:
        return f"constant (all values {x_sorted_finite[0]:g})"
    return "ok"


def resolve_families(families: Sequence[str] | None) -> list[Family]:
    return [get_family(name) for name in (families or FAMILIES.names())]


def fit_family(family: Family, x_sorted: np.ndarray, ks: bool = True) -> FamilyFit:
    est = family.fit(x_sorted)
    loglik = est.loglik if est.loglik is not None else family.loglik(x_sorted, est.params)
    d = ks_statistic(x_sorted, lambda v: family.cdf(v, est.params)) if ks else math.nan
    return FamilyFit(
        family=family.name,
        params=dict(est.params),
        loglik=float(loglik),
        n=x_sorted.size,
        k=family.k,
        ks_stat=d,
        ks_pvalue_naive=ks_pvalue(d, x_sorted.size) if ks else math.nan,
        converged=est.converged,
        note=est.note,
    )


def prepare(x) -> tuple[np.ndarray, int, int]:
    """Flatten to float64, sort once for every family, and drop (but count) non-finite
    values and a point mass of exact zeros. Returns (sorted values, n_nonfinite, n_zero)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    finite = np.isfinite(x)
    n_nonfinite = int(x.size - np.count_nonzero(finite))
    x_sorted = np.sort(x[finite] if n_nonfinite else x)
    lo, hi = np.searchsorted(x_sorted, 0.0, "left"), np.searchsorted(x_sorted, 0.0, "right")
    n_zero = int(hi - lo)
    if n_zero > ZERO_MASS_SHARE * x_sorted.size and x_sorted.size - n_zero >= MIN_N:
        return np.concatenate([x_sorted[:lo], x_sorted[hi:]]), n_nonfinite, n_zero
    return x_sorted, n_nonfinite, 0


def fit(x, families: Sequence[str] | None = None, *, ks: bool = True) -> LayerFit:
    """Maximum-likelihood fit of each family (default: all registered) to the values in ``x``.

    Non-finite values, and exact zeros when they form a point mass (over 1%),
    are dropped and counted; fewer than 8 usable values or a constant layer give
    an explanatory ``status`` and no fits.
    """
    chosen = resolve_families(families)
    x_sorted, n_nonfinite, n_zero = prepare(x)
    return fit_sorted(x_sorted, n_nonfinite, chosen, ks=ks, n_zero=n_zero)


def fit_sorted(x_sorted: np.ndarray, n_nonfinite: int, chosen: Sequence[Family], ks: bool = True,
               n_zero: int = 0) -> LayerFit:
    status = layer_status(x_sorted, n_nonfinite)
    if status != "ok":
        return LayerFit(n=x_sorted.size, n_nonfinite=n_nonfinite, status=status, n_zero_excluded=n_zero)
    fits = {fam.name: fit_family(fam, x_sorted, ks=ks) for fam in chosen}
    return LayerFit(n=x_sorted.size, n_nonfinite=n_nonfinite, status=status, fits=fits, n_zero_excluded=n_zero)
