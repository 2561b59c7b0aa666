"""The spectral view of one weight matrix: its empirical spectral density (ESD) and what the
heavy-tailed random-matrix literature (WeightWatcher, Martin & Mahoney) reads from it.

Conventions (WeightWatcher's):

- A weight tensor is a matrix of ``shape[0]`` rows and everything else as columns: a conv
  kernel out × in × k × k becomes out × (in·k·k).
- With N = max(rows, cols) and M = min(rows, cols), the ESD is the M eigenvalues of
  X = WᵀW / N (or WWᵀ / N, whichever is M × M), computed as s² / N from the singular values s
  of W: never from a Gram matrix, so small eigenvalues keep their relative precision.
- Marchenko–Pastur: for i.i.d. entries of variance σ², X has its bulk on
  [σ²(1 − √(M/N))², σ²(1 + √(M/N))²]. The largest eigenvalue of a finite random matrix
  fluctuates above λ+ on the Tracy–Widom scale, so a *spike* is an eigenvalue above
  λ+ plus the Tracy–Widom 99 % fluctuation (Johnstone 2001 centring and scaling).

Large matrices: singular values are computed in full (LAPACK gesdd) when M ≤ ``MAX_SVD_DIM``
(4096, a few tens of seconds at worst on one core); beyond that the layer is not given a spectral
view (its columns are NaN with a note) rather than an approximate one.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from threadpoolctl import ThreadpoolController

from .fitting import SAFE_EXPONENT, range_exponent

MAX_SVD_DIM = 4096
MIN_TAIL = 10  # a power-law tail is fitted to at least this many eigenvalues
# 99 % quantile of the Tracy–Widom (β = 1) law (Tracy & Widom 1996, tabulated by Bejan 2005).
TW1_Q99 = 2.0234


@dataclass(frozen=True)
class PowerLawFit:
    """Continuous power law p(x) ∝ x^(−alpha) for x ≥ xmin, fitted as in Clauset, Shalizi & Newman (2009)."""

    alpha: float
    xmin: float
    ks: float  # KS distance between the tail and the fitted law at the chosen xmin
    n_tail: int


@dataclass(frozen=True)
class Spectrum:
    """One matrix's ESD and the numbers read from it. ``eigenvalues`` ascending, length M."""

    rows: int
    cols: int
    eigenvalues: np.ndarray
    entry_variance: float
    spectral_norm: float  # ‖W‖₂, the largest singular value (not normalised by N)
    stable_rank: float  # ‖W‖_F² / ‖W‖₂²
    mp_lambda_plus: float  # σ²(1 + √(M/N))²
    mp_edge: float  # λ+ plus the Tracy–Widom 99 % fluctuation: the spike threshold
    mp_spikes: int
    tail: PowerLawFit

    @property
    def n(self) -> int:
        return max(self.rows, self.cols)

    @property
    def m(self) -> int:
        return min(self.rows, self.cols)


@dataclass(frozen=True)
class SpectralView:
    """A layer's spectrum beside that of the same entries randomly permuted."""

    spectrum: Spectrum
    randomized: Spectrum
    rand_distance: float  # two-sample KS distance between the two ESDs


def as_matrix(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The layer as rows × (everything else): a conv kernel out × in × k × k becomes out × in·k·k."""
    return np.asarray(values, dtype=np.float64).reshape(shape[0], -1)


@functools.lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    return ThreadpoolController()  # inspecting the loaded libraries costs milliseconds: once per process


def esd(w: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of WᵀW / N (N = the larger dimension), from the singular values of W."""
    # One BLAS thread: OpenBLAS's spinning thread pool makes small SVDs 10-100x slower on shared or
    # busy cores, and the pipeline already runs one layer per core.
    with _blas().limit(limits=1, user_api="blas"):
        s = np.linalg.svd(w, compute_uv=False)  # LAPACK gesdd, singular values only
    return np.sort(s * s / max(w.shape))


def mp_lambda_plus(variance: float, rows: int, cols: int) -> float:
    """Upper edge of the Marchenko–Pastur bulk in the normalisation WᵀW / max(rows, cols)."""
    n, m = max(rows, cols), min(rows, cols)
    return variance * (1 + math.sqrt(m / n)) ** 2


def mp_edge(variance: float, rows: int, cols: int, tw_quantile: float = TW1_Q99) -> float:
    """λ+ plus the Tracy–Widom fluctuation of the largest eigenvalue at this finite size
    (Johnstone 2001: centre (√(N−1) + √M)², scale (√(N−1) + √M)(1/√(N−1) + 1/√M)^(1/3))."""
    n, m = max(rows, cols), min(rows, cols)
    a, b = math.sqrt(max(n - 1, 1)), math.sqrt(m)
    centre, scale = (a + b) ** 2, (a + b) * (1 / a + 1 / b) ** (1 / 3)
    return variance * (centre + tw_quantile * scale) / n


def mp_spike_count(eigenvalues: np.ndarray, variance: float, rows: int, cols: int) -> int:
    """Eigenvalues above the Marchenko–Pastur edge plus its Tracy–Widom 99 % fluctuation."""
    return int(np.count_nonzero(eigenvalues > mp_edge(variance, rows, cols))) if variance > 0 else 0


def mp_density(lam: np.ndarray, variance: float, rows: int, cols: int) -> np.ndarray:
    """Marchenko–Pastur density of the ESD of WᵀW / N for i.i.d. entries of this variance (for plots)."""
    n, m = max(rows, cols), min(rows, cols)
    q = m / n
    lo, hi = variance * (1 - math.sqrt(q)) ** 2, variance * (1 + math.sqrt(q)) ** 2
    lam = np.asarray(lam, dtype=np.float64)
    inside = (lam > lo) & (lam < hi)
    out = np.zeros_like(lam)
    out[inside] = np.sqrt((hi - lam[inside]) * (lam[inside] - lo)) / (2 * math.pi * variance * q * lam[inside])
    return out


def power_law_candidates(x: np.ndarray, min_tail: int = MIN_TAIL, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every candidate xmin with its alpha MLE, KS distance and tail size (ascending xmin).

    Candidates: each distinct value that leaves at least ``min_tail`` values (and a larger one) in
    the tail. For each, alpha = 1 + n_t / Σ log(x / xmin), and the KS distance between the tail's
    empirical CDF, taken as (0, 1, …, n_t − 1)/n_t as in Clauset's plfit and the ``powerlaw``
    package, and the fitted CDF 1 − (x/xmin)^(1−alpha). All candidates are scored at once,
    ``chunk`` rows of an (candidates × values) array at a time."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    x = x[x > 0]
    n = x.size
    empty = np.empty(0)
    if n < max(min_tail, 2):
        return empty, empty, empty, empty.astype(int)
    log_x = np.log(x)
    first = np.searchsorted(x, x, "left")  # ties share the empirical CDF of their first occurrence
    candidates = np.unique(first[: n - max(min_tail, 2) + 1])
    candidates = candidates[x[candidates] < x[-1]]
    suffix = np.cumsum(log_x[::-1])[::-1]  # Σ log x[i:]
    n_tail = n - candidates
    alpha = 1 + n_tail / (suffix[candidates] - n_tail * log_x[candidates])
    ks = np.empty(candidates.size)
    j = np.arange(n)
    for start in range(0, candidates.size, chunk):
        i = candidates[start : start + chunk, None]
        a = alpha[start : start + chunk, None]
        with np.errstate(over="ignore", invalid="ignore"):
            theory = -np.expm1((1 - a) * (log_x[None, :] - log_x[i]))
        empirical = (first[None, :] - i) / (n - i)
        gap = np.where(j[None, :] >= i, np.abs(empirical - theory), 0.0)
        ks[start : start + chunk] = gap.max(axis=1)
    return x[candidates], alpha, ks, n_tail


def fit_power_law(x: np.ndarray, min_tail: int = MIN_TAIL) -> PowerLawFit:
    """Continuous power-law MLE with xmin chosen by minimum KS distance (Clauset, Shalizi & Newman 2009)."""
    xmins, alpha, ks, n_tail = power_law_candidates(x, min_tail)
    if xmins.size == 0:
        return PowerLawFit(math.nan, math.nan, math.nan, 0)
    best = int(np.nanargmin(ks))
    return PowerLawFit(float(alpha[best]), float(xmins[best]), float(ks[best]), int(n_tail[best]))


def spectrum(w: np.ndarray, min_tail: int = MIN_TAIL) -> Spectrum:
    """ESD, power-law tail, stable rank, spectral norm and Marchenko–Pastur spikes of one matrix."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"spectrum: expected a 2-D matrix, got shape {w.shape}")
    rows, cols = w.shape
    if min(rows, cols) > MAX_SVD_DIM:
        raise ValueError(f"spectrum: smaller dimension {min(rows, cols)} exceeds {MAX_SVD_DIM}")
    lam = esd(w)
    n = max(rows, cols)
    variance = float(np.var(w))
    s_max2 = float(lam[-1]) * n
    edge = mp_edge(variance, rows, cols)
    return Spectrum(
        rows=rows, cols=cols, eigenvalues=lam, entry_variance=variance,
        spectral_norm=math.sqrt(s_max2),
        stable_rank=float(lam.sum()) * n / s_max2 if s_max2 > 0 else math.nan,
        mp_lambda_plus=mp_lambda_plus(variance, rows, cols), mp_edge=edge,
        mp_spikes=mp_spike_count(lam, variance, rows, cols),
        tail=fit_power_law(lam, min_tail=min_tail),
    )


def spectral_view(w: np.ndarray, rng: np.random.Generator, min_tail: int = MIN_TAIL) -> SpectralView:
    """The matrix's spectrum and that of its entries randomly permuted (same values, no structure).

    The distance is the two-sample KS distance between the two ESDs: scale-free, in [0, 1], and
    the same for eigenvalues or their logarithms."""
    w = np.asarray(w, dtype=np.float64)
    shuffled = rng.permutation(w.ravel()).reshape(w.shape)
    original, randomized = spectrum(w, min_tail), spectrum(shuffled, min_tail)
    distance = float(stats.ks_2samp(original.eigenvalues, randomized.eigenvalues, method="asymp").statistic)
    return SpectralView(original, randomized, distance)


def layer_spectral_view(values: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator,
                        min_tail: int = MIN_TAIL) -> tuple[SpectralView | None, str]:
    """A layer's spectral view from its flat (row-major) values and shape, or None and why not."""
    if len(shape) < 2:
        return None, "not a matrix"
    values = np.asarray(values, dtype=np.float64)
    if values.size != int(np.prod(shape)):
        return None, "values do not fill the tensor's shape"
    if not np.all(np.isfinite(values)):
        return None, "non-finite values"
    if values.size and range_exponent(float(values.min()), float(values.max())):
        return None, f"values beyond 2^±{SAFE_EXPONENT}: their squared singular values overflow or vanish in float64"
    w = as_matrix(values, shape)
    if min(w.shape) < 2:
        return None, f"matrix {w.shape[0]}x{w.shape[1]} has fewer than 2 eigenvalues"
    if min(w.shape) > MAX_SVD_DIM:
        return None, f"smaller dimension {min(w.shape)} > {MAX_SVD_DIM}: not computed"
    view = spectral_view(w, rng, min_tail)
    lam = view.spectrum.eigenvalues
    positive = int(np.unique(lam[lam > 0]).size)  # zero eigenvalues (rank-deficient, all-zero) are not a tail
    short = "" if math.isfinite(view.spectrum.tail.alpha) else (
        f"{positive} distinct positive eigenvalues of {min(w.shape)}: too few for a tail fit (needs {min_tail})")
    return view, short
