"""Exact one-sample Kolmogorov-Smirnov statistic with few CDF evaluations.

The CDF is monotone, so on a block of sorted points between two grid points
a < c it lies in [F(x_a), F(x_c)]. A coarse pass evaluates F on the grid only,
bounds D on every block, and refines (on a finer grid, down to every point) only
the blocks whose bound could still beat the best exact value. The result is
identical to evaluating F at every point (scipy.stats.kstest), at a small
fraction of the cost.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import special, stats

Cdf = Callable[[np.ndarray], np.ndarray]
_CHUNK = 1 << 18  # exact evaluations are done in chunks of this many points: bounded memory
_MIN_GRID = 64  # the first grid has at least this many points


def _d_at(index: np.ndarray, f: np.ndarray, n: int) -> float:
    """max over the given points of both one-sided deviations, (i+1)/n − F_i and F_i − i/n, as kstest computes them."""
    return max(float(np.max((index + 1) / n - f)), float(np.max(f - index / n))) if index.size else 0.0


def _cdf_at(x_sorted: np.ndarray, cdf: Cdf, index: np.ndarray) -> np.ndarray:
    return np.concatenate([cdf(x_sorted[index[s : s + _CHUNK]]) for s in range(0, index.size, _CHUNK)]) if index.size else np.empty(0)


def ks_statistic(x_sorted: np.ndarray, cdf: Cdf, refine: int = 3) -> float:
    """sup |F_n - F| for ascending ``x_sorted``; equals ``scipy.stats.kstest(x, cdf).statistic``.

    F is evaluated on a coarse grid of order statistics, then only inside the gaps whose bound could still beat
    the largest exact deviation found so far, on a grid ``refine`` times finer each round, down to every point.
    A gap between evaluated points a < c bounds its interior points i by (i+1)/n − F_i ≤ c/n − F_a and
    F_i − i/n ≤ F_c − (a+1)/n. On a 2.4 M-value layer about 0.3 % of the points are evaluated."""
    n = x_sorted.size
    if n == 0:
        raise ValueError("x_sorted: need at least one value")
    factor = max(2, refine)
    step = 1
    while step * factor * _MIN_GRID <= n:
        step *= factor
    index = np.arange(0, n, step)
    if index[-1] != n - 1:
        index = np.append(index, n - 1)
    f = _cdf_at(x_sorted, cdf, index)
    best = _d_at(index, f, n)
    a, c, f_a, f_c = index[:-1], index[1:], f[:-1], f[1:]
    while step > 1:
        keep = (c - a > 1) & (np.maximum(c / n - f_a, f_c - (a + 1) / n) > best)
        a, c, f_a, f_c = a[keep], c[keep], f_a[keep], f_c[keep]
        if a.size == 0:
            break
        step = max(1, step // factor)
        # Every kept gap (a, c) gets the points a + step, a + 2·step, … below c.
        counts = (c - a - 1) // step
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        new = np.repeat(a, counts) + step * (offsets + 1)
        f_new = _cdf_at(x_sorted, cdf, new)
        best = max(best, _d_at(new, f_new, n))
        # The refined gaps: (a, first new), (new, next new) ..., (last new, c), one group per kept gap.
        starts = np.cumsum(counts + 1) - (counts + 1)
        total = int((counts + 1).sum())
        lo = np.empty(total, dtype=np.int64)
        hi = np.empty(total, dtype=np.int64)
        f_lo, f_hi = np.empty(total), np.empty(total)
        is_first = np.zeros(total, dtype=bool)
        is_first[starts] = True
        is_last = np.zeros(total, dtype=bool)
        is_last[starts + counts] = True
        lo[is_first], f_lo[is_first] = a, f_a
        lo[~is_first], f_lo[~is_first] = new, f_new
        hi[is_last], f_hi[is_last] = c, f_c
        hi[~is_last], f_hi[~is_last] = new, f_new
        a, c, f_a, f_c = lo, hi, f_lo, f_hi
    return best


EXACT_MAX_N = 10_000


def ks_pvalue(d: float, n: int) -> float:
    """P(D_n >= d) for a fully specified null: scipy's exact distribution (kstest's default) up to n = 10,000, the
    asymptotic Kolmogorov distribution above, where the exact one can take 0.1 s per call and the two agree to
    O(1/sqrt(n)).

    Computed as scipy's ``kstwo.sf`` computes it (Simard & L'Ecuyer), except where that takes 2 × the one-sided
    tail ``special.smirnov(n, d)`` (n > 140, d < ½, 2.2 ≤ n d² < 370: the p-values below about 0.02, which most
    misfitting families get). There :func:`_one_sided_tail` sums the same series in one vectorised pass: equal to
    scipy's within 1e-11 (relative, for p above the subnormal range), and 30× faster at n = 9,216, where scipy's scalar loop cost more than the
    four fits of the layer together."""
    if n > EXACT_MAX_N:
        return float(special.kolmogorov(d * np.sqrt(n)))  # stats.kstwobign.sf's own function
    if n > 140 and 1 < n * d < n - 1 and d < 0.5 and 2.2 <= n * d * d < 370:
        return min(1.0, 2.0 * _one_sided_tail(n, d))
    return float(stats.kstwo.sf(d, n))


def _one_sided_tail(n: int, d: float) -> float:
    """P(D_n⁺ >= d) by the Birnbaum–Tingey series d Σ_j C(n, j) (1 − d − j/n)^(n−j) (d + j/n)^(j−1),
    j = 0 … ⌊n(1 − d)⌋, summed in logs (every term is positive); log C(n, j) from one table of log k!."""
    j = np.arange(int(math.floor(n * (1 - d))) + 1)
    log_factorial = special.gammaln(np.arange(1.0, n + 2))  # log k! for k = 0 … n
    with np.errstate(divide="ignore"):  # the last term's base can be exactly 0: log 0 = −inf, a zero term
        log_terms = (log_factorial[n] - log_factorial[j] - log_factorial[n - j]
                     + (n - j) * np.log1p(-d - j / n) + (j - 1) * np.log(d + j / n))
    top = float(log_terms.max())
    return d * math.exp(top) * float(np.exp(log_terms - top).sum())
