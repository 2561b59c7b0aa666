"""Parameter intervals (core/intervals.py) against brute-force profiles and by coverage on
simulated data of known shape; outlier bounds against scipy's quantiles."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from weightdist.core.fitting import fit
from weightdist.core.families import get_family
from weightdist.core.intervals import count_outside, half_chi2, outlier_bounds, parameter_intervals
from weightdist.pipeline import FitOptions, fit_layers, outlier_table
from weightdist.sources.extract import Layer

CHI2_95 = stats.chi2.ppf(0.95, 1)


def _brute_profile(logpdf, x, fixed: dict, free: dict) -> float:
    """max over the ``free`` parameters (start values given) of Σ logpdf, the others ``fixed``:
    every nuisance parameter re-maximised by Nelder–Mead, independently of the code under test."""
    names = list(free)

    def neg(p):
        kw = {**fixed, **dict(zip(names, p))}
        if kw.get("scale", 1) <= 0:
            return math.inf
        return -float(np.sum(logpdf(x, **kw)))

    res = optimize.minimize(neg, [free[k] for k in names], method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 4000})
    return -res.fun


def _gennorm_logpdf(x, beta, loc, scale):
    return stats.gennorm.logpdf(x, beta, loc, scale)


def _t_logpdf(x, df, loc, scale):
    return stats.t.logpdf(x, df, loc, scale)


def test_gennorm_beta_interval_ends_where_the_full_profile_drops_by_half_chi2():
    x = np.sort(stats.gennorm.rvs(1.4, scale=0.05, size=3000, random_state=np.random.default_rng(0)))
    f = fit(x, ["gennorm"]).fits["gennorm"]
    iv = parameter_intervals(x, {"gennorm": f})["gennorm"]
    ll_hat = f.loglik
    for beta in (iv["beta"].lo, iv["beta"].hi):
        ll = _brute_profile(_gennorm_logpdf, x, {"beta": beta}, {"loc": f.params["loc"], "scale": f.params["scale"]})
        assert 2 * (ll_hat - ll) == pytest.approx(CHI2_95, abs=0.05)


def test_student_t_df_interval_ends_where_the_full_profile_drops_by_half_chi2():
    x = np.sort(stats.t.rvs(6, scale=0.05, size=3000, random_state=np.random.default_rng(1)))
    f = fit(x, ["student_t"]).fits["student_t"]
    iv = parameter_intervals(x, {"student_t": f})["student_t"]
    for df in (iv["df"].lo, iv["df"].hi):
        ll = _brute_profile(_t_logpdf, x, {"df": df}, {"loc": f.params["loc"], "scale": f.params["scale"]})
        assert 2 * (f.loglik - ll) == pytest.approx(CHI2_95, abs=0.05)


@pytest.mark.parametrize("family,logpdf,shape", [("gennorm", _gennorm_logpdf, "beta"), ("student_t", _t_logpdf, "df")])
def test_wald_scale_interval_agrees_with_the_full_profile(family, logpdf, shape):
    rng = np.random.default_rng(2)
    x = np.sort(stats.gennorm.rvs(1.4, scale=0.05, size=3000, random_state=rng) if family == "gennorm"
                else stats.t.rvs(6, scale=0.05, size=3000, random_state=rng))
    f = fit(x, [family]).fits[family]
    iv = parameter_intervals(x, {family: f})[family]["scale"]
    p = f.params

    # At the Wald ends the full profile (location and shape re-maximised) has dropped by about χ²₁(0.95):
    # within 15 %, i.e. each end within ~7 % of the half-width of where the profile interval ends.
    for end in (iv.lo, iv.hi):
        ll = _brute_profile(logpdf, x, {"scale": end}, {"loc": p["loc"], shape: p[shape]})
        assert 2 * (f.loglik - ll) == pytest.approx(CHI2_95, rel=0.15)


def test_gaussian_data_leave_the_df_interval_open_above():
    x = np.sort(np.random.default_rng(3).normal(0, 0.1, 20000))
    layer = fit(x, ["student_t", "gennorm"])
    iv = parameter_intervals(x, layer.fits)
    assert iv["student_t"]["df"].hi == math.inf
    assert iv["student_t"]["df"].lo > 10
    assert iv["gennorm"]["beta"].lo < 2 < iv["gennorm"]["beta"].hi
    assert half_chi2(0.95) == pytest.approx(CHI2_95 / 2)


def _coverage(draw, family, truth: dict, reps: int, n: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    hits = {k: 0 for k in truth}
    for _ in range(reps):
        x = np.sort(draw(n, rng))
        f = fit(x, [family]).fits[family]
        iv = parameter_intervals(x, {family: f})[family]
        for k, value in truth.items():
            hits[k] += iv[k].lo <= value <= iv[k].hi
    return {k: h / reps for k, h in hits.items()}


@pytest.mark.slow
def test_gennorm_intervals_cover_the_true_beta_and_scale():
    reps = 240
    cov = _coverage(lambda n, rng: stats.gennorm.rvs(1.3, scale=2.0, size=n, random_state=rng), "gennorm",
                    {"beta": 1.3, "scale": 2.0}, reps, 1000, 11)
    se = math.sqrt(0.95 * 0.05 / reps)  # Monte Carlo error of a 95 % coverage estimate
    for k, c in cov.items():
        assert abs(c - 0.95) < 3.5 * se, (k, c)


@pytest.mark.slow
def test_student_t_intervals_cover_the_true_df_and_scale():
    reps = 240
    cov = _coverage(lambda n, rng: 2.0 * rng.standard_t(5, size=n), "student_t", {"df": 5.0, "scale": 2.0}, reps, 1000, 12)
    se = math.sqrt(0.95 * 0.05 / reps)
    for k, c in cov.items():
        assert abs(c - 0.95) < 3.5 * se, (k, c)


@pytest.mark.parametrize("family", ["gaussian", "laplace", "student_t", "gennorm"])
def test_outlier_bounds_are_the_laws_quantiles(family):
    x = np.sort(stats.t.rvs(4, size=4000, random_state=np.random.default_rng(4)))
    f = fit(x, [family]).fits[family]
    fam = get_family(family)
    lo, hi = outlier_bounds(fam, f.params)
    assert fam.cdf(np.array([lo]), f.params)[0] == pytest.approx(5e-7, rel=1e-4)
    assert fam.sf(np.array([hi]), f.params)[0] == pytest.approx(5e-7, rel=1e-4)
    assert count_outside(x, (lo, hi)) == int(np.sum((x < lo) | (x > hi)))


def test_outlier_indices_point_at_the_planted_weights():
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.02, size=(64, 128))
    w[3, 7], w[60, 100] = 0.5, -0.4  # 25 and 20 standard deviations out
    layer = Layer("fc.weight", "linear", w.shape, w.size, 128, "float32", w.ravel())
    results = list(fit_layers([layer], FitOptions(families=("gaussian", "student_t"), outliers=True)))
    assert results[0].extras.n_outliers == 2
    table = outlier_table(results)
    assert sorted(table["index"]) == sorted([3 * 128 + 7, 60 * 128 + 100])
    assert set(zip(table["value"], table["side"])) == {(0.5, "high"), (-0.4, "low")}
    none = list(fit_layers([layer], FitOptions(families=("gaussian",))))
    assert none[0].extras.outlier_index is None  # indices only on request


def test_intervals_leave_no_layer_sized_array_behind():
    # scipy's root finders keep their callables in a reference cycle; the profiles they close over hold an
    # n-sized array each, which must not outlive the call (they added to the next layer's peak in scan workers).
    import gc
    import tracemalloc

    from weightdist.core.fitting import fit
    from weightdist.core.intervals import parameter_intervals

    x = np.sort(np.random.default_rng(8).standard_t(5, 500_000) * 0.02)
    fits = fit(x).fits
    gc.disable()  # what a cycle keeps is then kept until the end of the test
    try:
        tracemalloc.start()
        parameter_intervals(x, fits)
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    finally:
        gc.enable()
    assert held < x.nbytes / 4, f"{held / x.nbytes:.2f}× the layer still allocated after the call"
