"""Exact one-sample Kolmogorov-Smirnov statistic with few CDF evaluations.

The CDF is monotone, so on a block of sorted points between two grid points
a < c it lies in [F(x_a), F(x_c)]. A coarse pass evaluates F on the grid only,
bounds D on every block, and evaluates F exactly only inside blocks whose bound
could still beat the best exact value. The result is identical to evaluating F
at every point (scipy.stats.kstest), at a small fraction of the cost.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import special, stats

Cdf = Callable[[np.ndarray], np.ndarray]
_CHUNK = 1 << 18  # exact evaluations are done in chunks of this many points: bounded memory
_BATCH_BLOCKS = 64  # candidate blocks evaluated per CDF call


def _exact_d(x_sorted: np.ndarray, cdf: Cdf, index: np.ndarray, n: int) -> float:
    best = 0.0
    for start in range(0, index.size, _CHUNK):
        i = index[start : start + _CHUNK]
        f = cdf(x_sorted[i])
        best = max(best, float(np.max((i + 1) / n - f)), float(np.max(f - i / n)))
    return best


def ks_statistic(x_sorted: np.ndarray, cdf: Cdf, block: int | None = None) -> float:
    """sup |F_n - F| for ascending ``x_sorted``; equals ``scipy.stats.kstest(x, cdf).statistic``."""
    n = x_sorted.size
    if n == 0:
        raise ValueError("x_sorted: need at least one value")
    block = block or max(16, min(256, n // 20_000))
    if n <= 8 * block:
        return _exact_d(x_sorted, cdf, np.arange(n), n)
    grid = np.arange(0, n, block)
    if grid[-1] != n - 1:
        grid = np.append(grid, n - 1)
    f_grid = cdf(x_sorted[grid])
    best = float(max(np.max((grid + 1) / n - f_grid), np.max(f_grid - grid / n)))
    # Interior points a < i < c of each block: (i+1)/n - F_i <= c/n - F_a and F_i - i/n <= F_c - (a+1)/n.
    a, c = grid[:-1], grid[1:]
    bound = np.maximum(c / n - f_grid[:-1], f_grid[1:] - (a + 1) / n)
    order = np.argsort(-bound)
    # Blocks in descending bound, a batch per CDF call (one call per block costs more than the CDF on
    # small layers); stop at the first batch whose best bound cannot beat the exact maximum so far.
    for start in range(0, order.size, _BATCH_BLOCKS):
        batch = order[start : start + _BATCH_BLOCKS]
        batch = batch[bound[batch] > best]
        if batch.size == 0:
            break
        index = np.concatenate([np.arange(a[j] + 1, c[j]) for j in batch])
        if index.size:
            best = max(best, _exact_d(x_sorted, cdf, index, n))
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
        return float(stats.kstwobign.sf(d * np.sqrt(n)))
    if n > 140 and 1 < n * d < n - 1 and d < 0.5 and 2.2 <= n * d * d < 370:
        return min(1.0, 2.0 * _one_sided_tail(n, d))
    return float(stats.kstwo.sf(d, n))


def _one_sided_tail(n: int, d: float) -> float:
    """P(D_n⁺ >= d) by the Birnbaum–Tingey series d Σ_j C(n, j) (1 − d − j/n)^(n−j) (d + j/n)^(j−1),
    j = 0 … ⌊n(1 − d)⌋, summed in logs (every term is positive)."""
    j = np.arange(int(math.floor(n * (1 - d))) + 1)
    with np.errstate(divide="ignore"):  # the last term's base can be exactly 0: log 0 = −inf, a zero term
        log_terms = (special.gammaln(n + 1) - special.gammaln(j + 1) - special.gammaln(n - j + 1)
                     + (n - j) * np.log1p(-d - j / n) + (j - 1) * np.log(d + j / n))
    return d * math.exp(special.logsumexp(log_terms))
