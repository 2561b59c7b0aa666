"""Goodness of fit against independent references: statsmodels' Lilliefors, hand-computed Vuong,
scipy's Wasserstein distance, known tail indices."""
from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats
from statsmodels.stats.diagnostic import lilliefors

from weightdist.core.families import get_family
from weightdist.core.fitting import fit
from weightdist.core.gof import (assess_layer, bootstrap_ks_pvalue, excess_kurtosis, hill_index, likelihood_ratio_test, tail_shape,
                            vuong_test, wasserstein1)


@pytest.mark.parametrize("n, seed", [(50, 0), (200, 1), (1000, 2), (300, 3)])
def test_bootstrap_pvalue_matches_lilliefors_for_gaussian_samples(n, seed):
    x = np.sort(np.random.default_rng(seed).normal(1.0, 3.0, n))
    boot = bootstrap_ks_pvalue(x, get_family("gaussian"), n_boot=400, max_n=5000, seed=seed)
    stat, p_table = lilliefors(x, dist="norm", pvalmethod="table")
    assert_allclose(boot.statistic, stat, rtol=5 / n)  # same test; statsmodels scales by the ddof=1 sd, we by the MLE
    mc_error = 3 * math.sqrt(max(p_table * (1 - p_table), 0.01) / 400)
    assert abs(boot.pvalue - p_table) < mc_error + 0.03, (boot.pvalue, p_table)


def test_bootstrap_is_seeded_and_corrects_the_naive_pvalue():
    x = np.sort(np.random.default_rng(5).normal(size=400))
    a = bootstrap_ks_pvalue(x, get_family("gaussian"), n_boot=99, seed=1)
    b = bootstrap_ks_pvalue(x, get_family("gaussian"), n_boot=99, seed=1)
    assert a == b
    naive = fit(x, ["gaussian"]).fits["gaussian"].ks_pvalue_naive
    assert naive > a.pvalue  # estimated parameters make the naive p-value too large


def test_bootstrap_subsamples_large_layers_and_says_so():
    x = np.sort(np.random.default_rng(0).laplace(size=50_000))
    boot = bootstrap_ks_pvalue(x, get_family("laplace"), n_boot=20, max_n=500, seed=0)
    assert boot.subsampled and boot.n_used == 500 and boot.n_boot == 20
    exceed = boot.pvalue * 21 - 1  # p = (1 + k) / (B + 1) with k replicates at least as extreme
    assert abs(exceed - round(exceed)) < 1e-9 and 0 <= round(exceed) <= 20


@pytest.mark.parametrize("seed", [0, 1])
def test_bootstrap_agrees_with_scipy_goodness_of_fit(seed):
    # scipy's Laplace MLE (median, mean absolute deviation) is ours, so the observed statistic is
    # identical and the p-values differ only by Monte-Carlo error.
    x = np.sort(np.random.default_rng(seed).laplace(0.2, 0.5, 300) + np.random.default_rng(seed + 9).normal(0, 0.2, 300))
    ours = bootstrap_ks_pvalue(x, get_family("laplace"), n_boot=999, max_n=5000, seed=seed)
    ref = stats.goodness_of_fit(stats.laplace, x, statistic="ks", n_mc_samples=999, rng=np.random.default_rng(seed))
    assert_allclose(ours.statistic, ref.statistic, rtol=1e-12)
    p = max(ref.pvalue, 0.02)
    assert abs(ours.pvalue - ref.pvalue) < 4 * math.sqrt(2 * p * (1 - p) / 999) + 0.005, (ours.pvalue, ref.pvalue)


def test_bootstrap_rejects_the_wrong_family():
    x = np.sort(np.random.default_rng(1).laplace(size=2000))
    assert bootstrap_ks_pvalue(x, get_family("gaussian"), n_boot=99, seed=0).pvalue == pytest.approx(0.01)


def test_vuong_against_hand_computation():
    x = np.array([-1.2, -0.4, 0.1, 0.3, 0.9, 1.7, -2.5, 0.05])
    la = stats.norm.logpdf(x, 0.0, 1.1)
    lb = stats.laplace.logpdf(x, 0.1, 0.8)
    d = la - lb
    n = len(x)
    omega = math.sqrt(sum((di - sum(d) / n) ** 2 for di in d) / n)
    z_none = sum(d) / (math.sqrt(n) * omega)
    test = vuong_test(la, lb, 2, 2, correction="none", names=("gaussian", "laplace"))
    assert_allclose(test.statistic, z_none, rtol=1e-12)
    assert_allclose(test.pvalue, 2 * (1 - stats.norm.cdf(abs(z_none))), rtol=1e-9)
    # BIC correction with k_a = 3, k_b = 2: subtract (3 − 2)/2 · log n from the summed log ratio.
    corrected = vuong_test(la, lb, 3, 2, correction="bic", names=("gaussian", "laplace"))
    assert_allclose(corrected.statistic, (sum(d) - 0.5 * math.log(n)) / (math.sqrt(n) * omega), rtol=1e-12)
    assert test.favoured is None  # 8 points decide nothing


def test_vuong_favours_the_true_family_at_large_n():
    x = np.random.default_rng(0).laplace(size=20_000)
    res = fit(x, ["gaussian", "laplace"])
    g, l = (get_family(f).logpdf(x, res.fits[f].params) for f in ("gaussian", "laplace"))
    test = vuong_test(l, g, 2, 2, names=("laplace", "gaussian"))
    assert test.favoured == "laplace" and test.statistic > 10


def test_likelihood_ratio_test_boundary_mixture():
    t = likelihood_ratio_test(-100.0, -97.0, 1, boundary=True)
    assert_allclose(t.statistic, 6.0)
    assert_allclose(t.pvalue, 0.5 * stats.chi2.sf(6.0, 1))
    assert "boundary" in t.note
    interior = likelihood_ratio_test(-100.0, -97.0, 1, boundary=False)
    assert_allclose(interior.pvalue, stats.chi2.sf(6.0, 1))
    assert likelihood_ratio_test(-100.0, -100.0, 1, boundary=True).pvalue == 1.0


@pytest.mark.parametrize("family", ["gaussian", "laplace", "student_t", "gennorm"])
def test_wasserstein_matches_scipy_against_a_large_sample_of_the_fitted_law(family):
    x = np.sort(np.random.default_rng(3).standard_t(5, 4000))
    params = fit(x, [family]).fits[family].params
    ours = wasserstein1(x, get_family(family), params)
    reference_sample = get_family(family).scipy_dist(params).ppf((np.arange(400_000) + 0.5) / 400_000)
    assert_allclose(ours, stats.wasserstein_distance(x, reference_sample), rtol=0.03, atol=2e-3)


@pytest.mark.parametrize("alpha", [2.0, 3.0, 5.0])
def test_hill_recovers_the_tail_index_of_student_t(alpha):
    x = np.random.default_rng(int(alpha)).standard_t(alpha, 400_000)
    right, k = hill_index(x)
    assert k == int(math.isqrt(np.count_nonzero(x > 0)))
    assert abs(right - alpha) < 0.2 * alpha


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("scale", [1e200, 1e300])
def test_kurtosis_of_values_near_the_float64_limit_equals_scipy_at_unit_scale(scale):
    x = np.random.default_rng(1).laplace(size=5000)
    assert_allclose(excess_kurtosis(x * scale), stats.kurtosis(x), rtol=1e-12)  # scale-free; no overflow warning


def test_tail_shape_kurtosis_and_both_tails():
    x = np.sort(np.random.default_rng(0).laplace(size=100_000))
    shape = tail_shape(x)
    assert_allclose(shape.excess_kurtosis, stats.kurtosis(x), rtol=1e-12)
    assert abs(shape.excess_kurtosis - 3.0) < 0.3
    assert shape.hill_left > 2 and shape.hill_right > 2  # light exponential tails: large index
    # The sorted-array shortcut equals the general estimator on the exceedances from the median.
    centred = x - x[x.size // 2]
    assert shape.hill_left == pytest.approx(hill_index(-centred)[0], rel=1e-12)
    assert shape.hill_right == pytest.approx(hill_index(centred)[0], rel=1e-12)


def test_blockwise_vuong_in_pair_tests_equals_the_full_array_test():
    # More values than one block, so the running moments are merged across blocks.
    from weightdist.core.families import get_family
    from weightdist.core.gof import pair_tests, vuong_test

    x = np.sort(0.02 * np.random.default_rng(4).standard_t(5, 700_001))
    fits = fit(x).fits
    for t in pair_tests(x, fits):
        if t.test != "vuong":
            continue
        a, b = (get_family(n).logpdf(x, fits[n].params) for n in (t.family_a, t.family_b))
        ref = vuong_test(a, b, fits[t.family_a].k, fits[t.family_b].k, names=(t.family_a, t.family_b))
        assert_allclose([t.statistic, t.mean_diff], [ref.statistic, ref.mean_diff], rtol=1e-9)
        assert t.favoured == ref.favoured


def test_assessment_has_one_test_per_pair_and_a_readable_verdict():
    x = np.sort(0.01 * np.random.default_rng(0).standard_t(3, 30_000))
    result = fit(x)
    a = assess_layer(x, result, n_boot=5, max_boot_n=300, seed=0)
    assert len(a.pairs) == 6
    tests = {(t.family_a, t.family_b): t.test for t in a.pairs}
    assert tests[("student_t", "gaussian")] == "lrt" and tests[("gennorm", "laplace")] == "lrt"
    assert tests[("gaussian", "laplace")] == "vuong"
    assert a.verdict.startswith("Student-t, df≈") and "decisively better than Gaussian" in a.verdict
    assert a.effects[result.best].delta_aic == 0 and all(e.delta_aic >= 0 for e in a.effects.values())
    assert all(0 <= e.bootstrap.pvalue <= 1 for e in a.effects.values())
