"""Quantised layers: values on a grid, or few distinct values with many ties.

A continuous density gives every tie probability zero, so on quantised weights (int4/int8
checkpoints, GGUF, fp8, bf16) its likelihood is meaningless: gennorm runs to β → 0 with
σ → 0 and "wins" by hundreds of thousands of nats. The honest likelihood of a quantised
value is the probability mass of the interval it stands for (its *cell*): the values that
would round to it. Every family gets that discretised fit from its CDF alone, so a new
family needs nothing here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import optimize

from . import kernels
from .families.base import Estimate, Family, Params, Shape

# A layer is quantised when its values repeat on average at least this often ...
TIES_PER_VALUE = 4
# ... and it has at most this many distinct values (a 16-bit format's whole range).
MAX_CELLS = 1 << 16
# Fewer distinct values than this cannot identify a three-parameter law: refused with a status.
MIN_DISTINCT = 8
GRID_RTOL = 1e-3  # gaps within this of a multiple of the smallest gap: a uniform grid
TINY = 1e-300  # probability floor: log stays finite where a cell's mass underflows


@dataclass(frozen=True, eq=False)
class Cells:
    """The distinct values of a layer, how often each occurs, and the interval each stands for."""

    values: np.ndarray
    counts: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    step: float | None  # the grid step when the values are evenly spaced, else None (cells end halfway between values)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def describe(self) -> str:
        grid = f"grid step {self.step:.3g}" if self.step else "uneven spacing"
        return f"{self.values.size} distinct values, {grid}"


def distinct_count(x_sorted: np.ndarray) -> int:
    return int(np.count_nonzero(x_sorted[1:] != x_sorted[:-1])) + 1 if x_sorted.size else 0


def is_quantised(n: int, n_distinct: int) -> bool:
    return n_distinct <= MAX_CELLS and n_distinct * TIES_PER_VALUE <= n


def cells_of(x_sorted: np.ndarray) -> Cells:
    """Cells for ascending values: ±step/2 around each value on an even grid, else halfway to the neighbours."""
    starts = np.flatnonzero(np.concatenate(([True], x_sorted[1:] != x_sorted[:-1])))
    values = x_sorted[starts]
    counts = np.diff(np.append(starts, x_sorted.size))
    gaps = np.diff(values)
    step = float(gaps.min()) if gaps.size else 0.0
    ratio = gaps / step if step > 0 else gaps
    if step > 0 and np.all(np.abs(ratio - np.round(ratio)) <= GRID_RTOL * np.maximum(ratio, 1)):
        return Cells(values, counts, values - step / 2, values + step / 2, step)
    mid = values[:-1] + gaps / 2
    first, last = gaps[0] if gaps.size else 1.0, gaps[-1] if gaps.size else 1.0
    return Cells(values, counts, np.concatenate(([values[0] - first / 2], mid)),
                 np.concatenate((mid, [values[-1] + last / 2])), None)


def cell_logprob(family: Family, cells: Cells, params: Mapping[str, float]) -> np.ndarray:
    """log P(cell) for each cell: F(upper) − F(lower), taken from the survival function above the
    location so that tail cells keep their precision."""
    upper_side = cells.lower >= params["loc"]
    p = np.where(upper_side, family.sf(cells.lower, params) - family.sf(cells.upper, params),
                 family.cdf(cells.upper, params) - family.cdf(cells.lower, params))
    return np.log(np.maximum(p, TINY))


def cell_loglik(family: Family, cells: Cells, params: Mapping[str, float]) -> float:
    return kernels.dot(cells.counts, cell_logprob(family, cells, params))


def dequantised(cells: Cells) -> np.ndarray:
    """Each value's copies spread evenly over its cell (ascending): a deterministic stand-in for
    the unrounded weights, whose continuous MLE starts the discretised fit close to its optimum.
    Built block by block: beside the result, memory stays O(block), not several n-sized index arrays."""
    ends = np.cumsum(cells.counts)
    starts, width = ends - cells.counts, cells.upper - cells.lower
    out = np.empty(int(ends[-1]) if ends.size else 0)
    for first in range(0, out.size, kernels.BLOCK):
        position = np.arange(first, min(first + kernels.BLOCK, out.size))
        cell = np.searchsorted(ends, position, side="right")
        out[first : first + position.size] = cells.lower[cell] + (position - starts[cell] + 0.5) / cells.counts[cell] * width[cell]
    return out


def _transform(family: Family):
    """θ ↔ params: loc as is, log scale, the log of each positive shape (clipped to its declared
    bounds); a shape without declared bounds (a ``scipy:`` family's) as is."""
    shapes = [family.shape(name) or Shape(name, name, -math.inf, math.inf) for name in family.param_names[2:]]

    def to_params(theta: np.ndarray) -> Params:
        values = {"loc": float(theta[0]), "scale": math.exp(min(float(theta[1]), 700.0))}
        for s, t in zip(shapes, theta[2:]):
            v = math.exp(min(float(t), 700.0)) if s.lower >= 0 else float(t)
            values[s.name] = min(max(v, s.lower), s.upper)
        return family.params(**values)

    def to_theta(params: Mapping[str, float]) -> np.ndarray:
        rest = [math.log(max(params[s.name], 1e-300)) if s.lower >= 0 else params[s.name] for s in shapes]
        return np.array([params["loc"], math.log(params["scale"]), *rest], dtype=np.float64)

    return to_params, to_theta


def fit_cells(family: Family, cells: Cells, spread: np.ndarray | None = None) -> Estimate:
    """Maximum likelihood of the cell probabilities, started from the continuous fit to the
    dequantised values (``spread``: :func:`dequantised`, built once per layer for every family)
    and polished by Nelder-Mead (a handful of parameters, ≤ 65,536 cells)."""
    start = family.fit(dequantised(cells) if spread is None else spread)
    to_params, to_theta = _transform(family)
    theta0 = to_theta(start.params)
    n = cells.n

    def neg(theta: np.ndarray) -> float:
        value = -cell_loglik(family, cells, to_params(theta))
        return value if math.isfinite(value) else math.inf

    span = float(cells.upper[-1] - cells.lower[0])
    simplex = [theta0] + [theta0 + np.eye(theta0.size)[i] * (0.05 * span if i == 0 else 0.1) for i in range(theta0.size)]
    res = optimize.minimize(neg, theta0, method="Nelder-Mead",
                            options={"initial_simplex": np.array(simplex), "xatol": 1e-9, "fatol": 1e-10 * n,
                                     "maxiter": 4000, "maxfev": 8000})
    theta = res.x if res.fun <= neg(theta0) else theta0
    params = to_params(theta)
    degenerate = family.at_bound(params)
    note = f"fitted by cell probabilities ({cells.describe()})"
    if degenerate:
        note = "shape at bound; " + note
    return Estimate(params, converged=bool(res.success), note=note, loglik=cell_loglik(family, cells, params),
                    degenerate=degenerate)
