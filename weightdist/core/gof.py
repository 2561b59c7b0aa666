"""Goodness of fit that stays honest at a million weights.

- KS p-values corrected for estimated parameters by parametric bootstrap
  (refit on every replicate), as ``scipy.stats.goodness_of_fit`` does, on a
  seeded subsample so it stays affordable.
- Pairwise tests: Vuong's test for non-nested families, the likelihood-ratio
  test for nested ones (with the boundary mixture where the special case sits
  on the edge of the parameter space).
- Effect sizes whose meaning does not change with n: KS distance, Δloglik per
  weight, ΔAIC, ΔBIC, Wasserstein-1, excess kurtosis and Hill tail indices.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import special

from . import kernels
from .discrete import Cells, cell_logprob
from .families import Family, get_family, label_of
from .families.base import blocks
from .fitting import FamilyFit, LayerFit, range_exponent, rescale_exponent
from .ks import ks_statistic

DECISIVE_Z = 3.29  # two-sided p < 0.001
DECISIVE_GAIN = 1e-3  # nats per weight: below this a difference is negligible in practice
W1_QUANTILES = 10_000


@dataclass(frozen=True)
class BootstrapKS:
    statistic: float  # KS on the (sub)sample with parameters refitted on it
    pvalue: float
    n_boot: int
    n_used: int
    subsampled: bool
    seed: int


@dataclass(frozen=True)
class PairTest:
    family_a: str
    family_b: str
    test: str  # "vuong" or "lrt"
    statistic: float  # Vuong z (positive favours a) or LR statistic 2Δℓ (a is the larger model)
    pvalue: float
    favoured: str | None  # None: not distinguishable at p < 0.001
    mean_diff: float  # mean loglik difference a − b per weight
    note: str = ""


@dataclass(frozen=True)
class TailShape:
    excess_kurtosis: float
    hill_left: float  # tail index α of the left tail (t_ν has α = ν); NaN when too few points
    hill_right: float
    hill_k: int  # order statistics used per tail: floor(sqrt(n_tail))


@dataclass(frozen=True)
class FamilyEffect:
    family: str
    delta_aic: float  # against the best family (0 for it)
    delta_bic: float
    dloglik_per_weight: float  # best minus this family, nats per weight (>= 0)
    w1: float  # Wasserstein-1 distance between the data and the fitted law
    bootstrap: BootstrapKS | None = None


@dataclass(frozen=True)
class LayerAssessment:
    effects: Mapping[str, FamilyEffect]
    pairs: tuple[PairTest, ...]
    tail: TailShape
    verdict: str


# --- tests ------------------------------------------------------------------------------------------


def bootstrap_ks_pvalue(x_sorted: np.ndarray, family: Family, *, n_boot: int, max_n: int = 2000,
                        seed: int = 0) -> BootstrapKS:
    """Parametric-bootstrap KS p-value with every parameter refitted per replicate.

    The semantics of ``scipy.stats.goodness_of_fit(dist, data, statistic='ks')``: the KS
    statistic at parameters refitted on the data and on every replicate, and
    p = (1 + #{T_b >= T_obs}) / (B + 1). The refit is this family's MLE (scipy's Gaussian
    fit uses the ddof=1 standard deviation, so its statistic differs slightly there). When
    n > max_n the test runs on a seeded subsample of max_n values drawn without replacement.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    data = x_sorted
    subsampled = x_sorted.size > max_n
    if subsampled:
        data = np.sort(rng.choice(x_sorted, size=max_n, replace=False))
    exponent = rescale_exponent(data)  # as the fits do, near the ends of float64: the KS statistic is unit-free
    data = np.ldexp(data, -exponent) if exponent else data

    def statistic(sample_sorted: np.ndarray) -> tuple[float, Mapping[str, float] | None]:
        if sample_sorted[0] == sample_sorted[-1]:  # every value equal (a law so peaked that its draws collapse,
            return 0.0, None  # or a small subsample of tied values): the refit is that point mass, at KS distance 0
        params = family.fit(sample_sorted).params
        return ks_statistic(sample_sorted, lambda v: family.cdf(v, params)), params

    observed, params = statistic(data)
    if params is None:  # nothing to draw replicates from: the data are one tied value, fitted exactly
        return BootstrapKS(observed, 1.0, n_boot, data.size, subsampled, seed)
    null = np.empty(n_boot)
    for b in range(n_boot):
        null[b] = statistic(np.sort(family.sample(data.size, params, rng)))[0]
    pvalue = (np.count_nonzero(null >= observed) + 1) / (n_boot + 1)
    return BootstrapKS(observed, float(pvalue), n_boot, data.size, subsampled, seed)


def vuong_test(logpdf_a: np.ndarray, logpdf_b: np.ndarray, k_a: int, k_b: int, correction: str = "bic",
               names: tuple[str, str] = ("a", "b"), alpha: float = 0.001) -> PairTest:
    """Vuong (1989) z for non-nested models; z > 0 favours a. ω uses the population variance (ddof=0)."""
    d = np.asarray(logpdf_a, dtype=np.float64) - np.asarray(logpdf_b, dtype=np.float64)
    return vuong_from_moments(d.size, float(d.sum()), float(np.std(d)), k_a, k_b, correction, names, alpha)


def vuong_from_moments(n: int, total: float, omega: float, k_a: int, k_b: int, correction: str = "bic",
                       names: tuple[str, str] = ("a", "b"), alpha: float = 0.001) -> PairTest:
    """Vuong's test from Σd and the standard deviation ω of the pointwise differences d = ℓ_a − ℓ_b."""
    penalty = {"none": 0.0, "aic": float(k_a - k_b), "bic": 0.5 * (k_a - k_b) * math.log(n)}
    if correction not in penalty:
        raise ValueError(f"correction must be one of {', '.join(penalty)}, got {correction!r}")
    lr = total - penalty[correction]
    z = lr / (math.sqrt(n) * omega) if omega > 0 else 0.0
    p = float(2 * special.ndtr(-abs(z)))  # stats.norm.sf, without its per-call argument handling (most of its cost)
    favoured = (names[0] if z > 0 else names[1]) if p < alpha else None
    return PairTest(names[0], names[1], "vuong", z, p, favoured, total / n)


@dataclass
class _RunningMoments:
    """Count, mean and sum of squared deviations, merged block by block (Chan et al.): exact in
    float64 without keeping the n pointwise differences."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, d: np.ndarray) -> None:
        n_b, mean_b = d.size, float(d.mean())
        m2_b = float(np.sum((d - mean_b) ** 2))
        delta, total = mean_b - self.mean, self.n + n_b
        self.mean += delta * n_b / total
        self.m2 += m2_b + delta * delta * self.n * n_b / total
        self.n = total


def likelihood_ratio_test(loglik_restricted: float, loglik_full: float, df_diff: int, boundary: bool,
                          names: tuple[str, str] = ("full", "restricted"), n: int = 1, alpha: float = 0.001) -> PairTest:
    """LR = 2(ℓ_full − ℓ_restricted) ~ χ²_df; on a boundary, the 50:50 mixture of χ²_0 and χ²_1 (Self & Liang 1987)."""
    lr = max(0.0, 2.0 * (loglik_full - loglik_restricted))
    if boundary:
        p = 0.5 * float(special.chdtrc(1, lr)) if lr > 0 else 1.0  # stats.chi2.sf's own function
        note = "boundary: null value at the edge of the parameter space, p from the ½χ²₀ + ½χ²₁ mixture"
    else:
        p = float(special.chdtrc(df_diff, lr))
        note = ""
    favoured = names[0] if p < alpha else None
    return PairTest(names[0], names[1], "lrt", lr, float(p), favoured, (loglik_full - loglik_restricted) / n, note)


# --- effect sizes -----------------------------------------------------------------------------------


def wasserstein1(x_sorted: np.ndarray, family: Family, params: Mapping[str, float], m: int = W1_QUANTILES) -> float:
    """W1 = ∫₀¹ |Q_n(u) − Q(u)| du by the midpoint rule on min(n, m) quantile levels."""
    n = x_sorted.size
    m = min(n, m)
    u = (np.arange(m) + 0.5) / m
    empirical = x_sorted[np.minimum((u * n).astype(np.int64), n - 1)]
    if family.symmetric:  # the levels are symmetric about ½: invert the CDF (the costly part) on the lower half only
        lower = family.ppf(u[: (m + 1) // 2], params)
        fitted = np.concatenate([lower, 2 * params["loc"] - lower[: m // 2][::-1]])
    else:
        fitted = family.ppf(u, params)
    with np.errstate(over="ignore"):  # beyond ±1.8e308 a distance is inf: no warning for the user to read
        distance = np.abs(empirical - fitted)
        w1 = float(np.mean(distance))
    if math.isinf(w1) and np.isfinite(distance).all():  # only their sum overflowed (values near the float64 limit)
        top = float(distance.max())
        w1 = float(np.mean(distance / top)) * top
    return w1


def hill_index(tail: np.ndarray) -> tuple[float, int]:
    """Hill estimate of the tail index from positive exceedances, k = floor(sqrt(len))."""
    tail = np.sort(tail[tail > 0])[::-1]
    k = int(math.isqrt(tail.size))
    return _hill(tail[: k + 1], k), k


def _hill(top: np.ndarray, k: int) -> float:
    """α̂ = 1 / mean(log X_(i) − log X_(k+1)) over the k largest exceedances (``top``: descending, k+1 values)."""
    if k < 5:
        return math.nan
    logs = np.log(top[: k + 1])
    gamma = float(np.mean(logs[:k] - logs[k]))
    return 1.0 / gamma if gamma > 0 else math.inf


def excess_kurtosis(x: np.ndarray) -> float:
    """m4 / m2² − 3 with central moments (``scipy.stats.kurtosis(x, bias=True)``), block by block.

    Fourth powers of values near the ends of float64 overflow or vanish; the kurtosis does not depend
    on scale, so such values are taken times 2^−e as the fits take them (:func:`range_exponent`)."""
    with np.errstate(over="ignore", invalid="ignore"):
        kurtosis = _excess_kurtosis(x)
    if not math.isfinite(kurtosis) and x.size:  # (only then the range: no extra passes on ordinary layers)
        e = range_exponent(float(np.min(x)), float(np.max(x)))
        kurtosis = _excess_kurtosis(np.ldexp(x, -e)) if e else kurtosis
    return kurtosis


def _excess_kurtosis(x: np.ndarray) -> float:
    mean = float(np.mean(x, dtype=np.float64))
    m2 = m4 = 0.0
    for block in blocks(x):
        c2 = (block - mean) ** 2
        m2, m4 = m2 + float(c2.sum()), m4 + kernels.dot(c2, c2)
    return (m4 / x.size) / (m2 / x.size) ** 2 - 3.0 if m2 > 0 else math.nan


def tail_shape(x_sorted: np.ndarray) -> TailShape:
    """Kurtosis and a Hill index per tail, exceedances measured from the median; ``x_sorted``
    is ascending, so each tail's largest exceedances are its first (last) k + 1 values."""
    n = x_sorted.size
    median = x_sorted[n // 2]
    n_left = int(np.searchsorted(x_sorted, median, "left"))  # values strictly below the median
    n_right = n - int(np.searchsorted(x_sorted, median, "right"))
    k_left, k_right = math.isqrt(n_left), math.isqrt(n_right)
    left = _hill(median - x_sorted[: k_left + 1], k_left)
    right = _hill(x_sorted[n - 1 - np.arange(min(k_right + 1, n))] - median, k_right)
    return TailShape(excess_kurtosis(x_sorted), left, right, k_left)


# --- one layer --------------------------------------------------------------------------------------


def pair_tests(x_sorted: np.ndarray, fits: Mapping[str, FamilyFit], cells: Cells | None = None) -> tuple[PairTest, ...]:
    """Exactly one test per pair: LRT when one family nests the other, Vuong otherwise.

    Vuong's statistics come from running moments of the pointwise differences, block by
    block: no n-sized array per family. On a quantised layer (``cells``) the pointwise
    terms are log cell probabilities, one per distinct value weighted by its count."""
    pairs = list(itertools.combinations(fits, 2))
    nested = {(a, b) for a, b in pairs if b in get_family(a).nests or a in get_family(b).nests}
    moments = {pair: _RunningMoments() for pair in pairs if pair not in nested}
    needed = sorted({name for pair in moments for name in pair})
    if cells is not None:
        logp = {name: cell_logprob(get_family(name), cells, fits[name].params) for name in needed}
        for (a, b), m in moments.items():
            d = logp[a] - logp[b]
            m.n, m.mean = cells.n, kernels.dot(cells.counts, d) / cells.n
            m.m2 = kernels.dot(cells.counts, (d - m.mean) ** 2)
    for block in blocks(x_sorted) if cells is None else ():
        logpdf = {name: get_family(name).logpdf(block, fits[name].params) for name in needed}
        for (a, b), m in moments.items():
            m.add(logpdf[a] - logpdf[b])
    tests = []
    for a, b in pairs:
        if (a, b) in nested:
            full, restricted = (a, b) if b in get_family(a).nests else (b, a)
            tests.append(likelihood_ratio_test(
                fits[restricted].loglik, fits[full].loglik, fits[full].k - fits[restricted].k,
                boundary=restricted in get_family(full).nests_on_boundary, names=(full, restricted), n=x_sorted.size))
        else:
            m = moments[(a, b)]
            tests.append(vuong_from_moments(m.n, m.mean * m.n, math.sqrt(m.m2 / m.n), fits[a].k, fits[b].k, names=(a, b)))
    return tuple(tests)


def verdict(layer_fit: LayerFit, pairs: Sequence[PairTest]) -> str:
    """One sentence: the best family, its shape, and which alternatives it decisively beats.

    Decisive = p < 0.001 in the pair's test AND a gain of more than 1e-3 nats per weight;
    otherwise the two are called indistinguishable.
    """
    best = layer_fit.best
    if best is None:
        return "no usable fit: every family degenerate or unconverged" if layer_fit.fits else layer_fit.status
    fits = layer_fit.fits
    shape = get_family(best).describe(fits[best].params, fits[best].note)
    decisive, close = [], []
    for t in pairs:
        if best not in (t.family_a, t.family_b):
            continue
        other = t.family_b if t.family_a == best else t.family_a
        gain = (fits[best].loglik - fits[other].loglik) / layer_fit.n
        z = t.statistic if t.family_a == best else -t.statistic  # positive: evidence for the best family
        label = f"z={z:.1f}" if t.test == "vuong" else f"LR={t.statistic:.3g}"
        if t.favoured == best and gain > DECISIVE_GAIN:
            decisive.append(f"{label_of(other)} ({t.test.upper() if t.test == 'lrt' else 'Vuong'} {label})")
        else:
            close.append(f"{label_of(other)} ({label}, Δ={gain:.1e}/weight)")
    parts = [f"{label_of(best)}{', ' + shape if shape else ''}"]
    if decisive:
        parts.append("decisively better than " + ", ".join(decisive))
    if close:
        parts.append("indistinguishable from " + ", ".join(close))
    return "; ".join(parts)


def assess_layer(x_sorted: np.ndarray, layer_fit: LayerFit, *, n_boot: int = 0, max_boot_n: int = 2000,
                 seed: int = 0) -> LayerAssessment:
    fits = layer_fit.fits
    best = fits[layer_fit.best] if layer_fit.best else min(fits.values(), key=lambda f: f.aic)
    effects = {}
    for name, f in fits.items():
        family = get_family(name)
        # A quantised layer's KS null would need rounded replicates refitted by cell probabilities: not computed.
        boot = (bootstrap_ks_pvalue(x_sorted, family, n_boot=n_boot, max_n=max_boot_n, seed=seed)
                if n_boot and not layer_fit.quantised else None)
        effects[name] = FamilyEffect(name, f.aic - best.aic, f.bic - best.bic, (best.loglik - f.loglik) / f.n,
                                     wasserstein1(x_sorted, family, f.params), boot)
    pairs = pair_tests(x_sorted, fits, layer_fit.cells)
    return LayerAssessment(effects, pairs, tail_shape(x_sorted), verdict(layer_fit, pairs))


def assessment_rows(layer: str, assessment: LayerAssessment) -> list[dict]:
    return [{
        "layer": layer, "family": e.family, "delta_aic": e.delta_aic, "delta_bic": e.delta_bic,
        "dloglik_per_weight": e.dloglik_per_weight, "w1": e.w1,
        "ks_pvalue_corrected": e.bootstrap.pvalue if e.bootstrap else math.nan,
        "bootstrap_n": e.bootstrap.n_used if e.bootstrap else 0,
    } for e in assessment.effects.values()]


def comparison_rows(layer: str, assessment: LayerAssessment) -> list[dict]:
    return [{"layer": layer, "family_a": t.family_a, "family_b": t.family_b, "test": t.test, "statistic": t.statistic,
             "pvalue": t.pvalue, "favoured": t.favoured or "", "mean_diff_per_weight": t.mean_diff, "note": t.note}
            for t in assessment.pairs]
