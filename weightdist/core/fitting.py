"""Fit every registered family to one layer's weights: the pure core of the tool.

``fit(x)`` takes an array and returns a frozen :class:`LayerFit`; it never raises
on degenerate data (constant, too short, non-finite, too few distinct values,
magnitudes near the float64 limits) but reports a status. Quantised layers (few
distinct values, many ties) are fitted by the probability of each value's cell
(see ``discrete.py``), and a fit whose likelihood ran off the parameter space
(a shape at its bound, a collapsed scale) is reported but never wins.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .discrete import MIN_DISTINCT, Cells, cells_of, dequantised, distinct_count, fit_cells, is_quantised
from .families import FAMILIES, Family, get_family
from .families.base import FrozenMap, Params
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
    params: Params
    loglik: float  # of the densities; of the cell probabilities on a quantised layer
    n: int
    k: int
    ks_stat: float
    # Computed as if the parameters were known in advance. They were estimated
    # from the same data, so this p-value is too large (Lilliefors); see gof.py
    # for the bootstrap-corrected one.
    ks_pvalue_naive: float
    converged: bool = True
    note: str = ""
    degenerate: bool = False  # a shape at its bound or a collapsed scale: never the best

    def __post_init__(self) -> None:
        if not isinstance(self.params, Params):  # frozen all the way down: a dict would stay mutable
            object.__setattr__(self, "params", Params(self.params))

    @property
    def usable(self) -> bool:
        """May this fit win a layer: converged, finite and not degenerate."""
        return self.converged and not self.degenerate and math.isfinite(self.loglik)

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
    fits: Mapping[str, FamilyFit] = field(default_factory=FrozenMap)  # read-only: family name -> fit
    n_zero_excluded: int = 0  # exact zeros left out as a point mass (pruning)
    n_distinct: int = 0
    cells: Cells | None = field(default=None, compare=False, repr=False)  # set when fitted as quantised

    def __post_init__(self) -> None:
        if not isinstance(self.fits, FrozenMap):
            object.__setattr__(self, "fits", FrozenMap(self.fits))

    @property
    def ok(self) -> bool:
        return bool(self.fits)

    @property
    def quantised(self) -> bool:
        return self.cells is not None

    @property
    def grid_step(self) -> float | None:
        return self.cells.step if self.cells is not None else None

    @property
    def best(self) -> str | None:
        """The family with the lowest AIC among usable fits (converged, not degenerate)."""
        usable = [f for f in self.fits.values() if f.usable]
        return min(usable, key=lambda f: f.aic).family if usable else None

    def plot(self, x: np.ndarray, ax=None, log_density: bool = False):
        from ..reporting.plots import plot_layer_fit  # matplotlib stays out of the core import path

        return plot_layer_fit(self, x, ax=ax, log_density=log_density)


def layer_status(x_sorted_finite: np.ndarray, n_nonfinite: int, n_distinct: int | None = None) -> str:
    n = x_sorted_finite.size
    if n == 0:
        return "no finite values" if n_nonfinite else "empty"
    if n < MIN_N:
        return f"too few values (n={n} < {MIN_N})"
    if x_sorted_finite[0] == x_sorted_finite[-1]:
        return f"constant (all values {x_sorted_finite[0]:g})"
    n_distinct = distinct_count(x_sorted_finite) if n_distinct is None else n_distinct
    if n_distinct < MIN_DISTINCT:
        return f"too few distinct values ({n_distinct} < {MIN_DISTINCT}): no continuous law can be fitted"
    return "quantised" if is_quantised(n, n_distinct) else "ok"


def resolve_families(families: Sequence[str] | None) -> list[Family]:
    return [get_family(name) for name in (families or FAMILIES.names())]


def fit_family(family: Family, x_sorted: np.ndarray, ks: bool = True, cells: Cells | None = None,
               spread: np.ndarray | None = None) -> FamilyFit:
    """One family's fit: by densities, or by cell probabilities when ``cells`` is given (``spread``:
    its dequantised values, shared by the families)."""
    est = fit_cells(family, cells, spread) if cells is not None else family.fit(x_sorted)
    params = est.params
    loglik = est.loglik if est.loglik is not None else family.loglik(x_sorted, params)
    d = ks_statistic(x_sorted, lambda v: family.cdf(v, params)) if ks else math.nan
    scale_ok = 0 < params["scale"] < math.inf
    return FamilyFit(
        family=family.name,
        params=params,
        loglik=float(loglik),
        n=x_sorted.size,
        k=family.k,
        ks_stat=d,
        ks_pvalue_naive=ks_pvalue(d, x_sorted.size) if ks else math.nan,
        converged=est.converged,
        note=est.note if scale_ok else f"degenerate scale {params['scale']:g}; {est.note}".rstrip("; "),
        degenerate=est.degenerate or family.at_bound(params) or not scale_ok,
    )


def _sort_exact(x: np.ndarray) -> np.ndarray:
    """np.sort(x) as float64; sorted in float32 when every value is a float32 (weights stored in float32,
    float16 or bfloat16 are): that sort is a third faster, and widening back is exact and keeps the order."""
    if x.dtype in (np.float32, np.float16):
        x32 = x.astype(np.float32)  # (a copy: the caller's array is never sorted in place)
    else:
        with np.errstate(over="ignore"):  # a value beyond float32's range fails the check below
            x32 = x.astype(np.float32)
        if not np.array_equal(x32, x):
            return np.sort(x)
    x32.sort()
    return x32.astype(np.float64)


def prepare(x) -> tuple[np.ndarray, int, int]:
    """Flatten to float64, sort once for every family, and drop (but count) non-finite
    values and a point mass of exact zeros. Returns (sorted values, n_nonfinite, n_zero).

    On a quantised layer zero is one grid value among others, so its zeros are kept."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float16):
        x = x.astype(np.float64, copy=False)
    x = x.ravel()
    finite = np.isfinite(x)
    n_nonfinite = int(x.size - np.count_nonzero(finite))
    x_sorted = _sort_exact(x[finite] if n_nonfinite else x)
    lo, hi = np.searchsorted(x_sorted, 0.0, "left"), np.searchsorted(x_sorted, 0.0, "right")
    n_zero = int(hi - lo)
    if n_zero > ZERO_MASS_SHARE * x_sorted.size and x_sorted.size - n_zero >= MIN_N:
        if not is_quantised(x_sorted.size, distinct_count(x_sorted)):
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


# Magnitudes outside 2^±SAFE_EXPONENT are fitted after an exact power-of-two rescaling: squares,
# reciprocals and powers of values near 1e±308 (or of denormals) would overflow or vanish.
SAFE_EXPONENT = 100


def rescale_exponent(x_sorted: np.ndarray) -> int:
    """e such that x·2^−e has a spread near 1, where the spread lies outside 2^±SAFE_EXPONENT; else 0. Every stage
    that squares or inverts values (fits, intervals, the bootstrap) works on x·2^−e: exact, and unit-free."""
    return range_exponent(float(x_sorted[0]), float(x_sorted[-1]))


def range_exponent(lo: float, hi: float) -> int:
    """:func:`rescale_exponent` of values from ``lo`` to ``hi``."""
    spread = hi - lo  # Python floats: inf on overflow, no warning
    size = spread if math.isfinite(spread) and spread > 0 else max(abs(lo), abs(hi))
    exponent = math.frexp(size)[1]
    return exponent if abs(exponent) > SAFE_EXPONENT else 0


def scaled_params(params: Mapping[str, float], exponent: int) -> Params:
    """The parameters of the same law for x·2^e: location and scale times 2^e, shapes unchanged."""
    return Params({k: (math.ldexp(v, exponent) if k in ("loc", "scale") else v) for k, v in params.items()})


def _unscale(f: FamilyFit, exponent: int, quantised: bool) -> FamilyFit:
    """The fit on x·2^−e mapped back to x: location and scale times 2^e; a density's
    log-likelihood loses n·e·log 2 (cell probabilities are unchanged)."""
    params = scaled_params(f.params, exponent)
    loglik = f.loglik if quantised else f.loglik - f.n * exponent * math.log(2)
    return dataclasses.replace(f, params=params, loglik=loglik)


def fit_sorted(x_sorted: np.ndarray, n_nonfinite: int, chosen: Sequence[Family], ks: bool = True,
               n_zero: int = 0) -> LayerFit:
    n_distinct = distinct_count(x_sorted)
    status = layer_status(x_sorted, n_nonfinite, n_distinct)
    if status not in ("ok", "quantised"):
        return LayerFit(n=x_sorted.size, n_nonfinite=n_nonfinite, status=status, n_zero_excluded=n_zero,
                        n_distinct=n_distinct)
    exponent = rescale_exponent(x_sorted)
    x_fit = np.ldexp(x_sorted, -exponent) if exponent else x_sorted
    cells = cells_of(x_fit) if status == "quantised" else None
    spread = dequantised(cells) if cells is not None else None
    fits = {fam.name: fit_family(fam, x_fit, ks=ks, cells=cells, spread=spread) for fam in chosen}
    del spread
    if exponent:
        fits = {name: _unscale(f, exponent, cells is not None) for name, f in fits.items()}
        cells = cells_of(x_sorted) if cells is not None else None
    return LayerFit(n=x_sorted.size, n_nonfinite=n_nonfinite, status=status, fits=fits, n_zero_excluded=n_zero,
                    n_distinct=n_distinct, cells=cells)
