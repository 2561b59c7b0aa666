"""The spectral view (core/spectral.py): ESD against numpy, the power-law tail against the
`powerlaw` package, Marchenko–Pastur spikes on random matrices, the permuted comparison, and
the pipeline columns and the β-vs-alpha statistic built on them."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from weightdist.analyses.spectral import shape_alpha_pairs, spearman_with_interval
from weightdist.core import spectral
from weightdist.pipeline import FitOptions, fit_layers, layer_table
from weightdist.sources.extract import Layer


@pytest.mark.parametrize("shape", [(7, 7), (12, 30), (40, 9), (6, 3, 3, 3)])
def test_esd_matches_numpy_eigenvalues_of_the_gram_matrix(shape):
    rng = np.random.default_rng(1)
    values = rng.standard_t(4, size=shape)
    w = spectral.as_matrix(values.ravel(), shape)
    assert w.shape == (shape[0], int(np.prod(shape[1:])))
    np.testing.assert_array_equal(w, values.reshape(shape[0], -1))  # out x in*k*k, row-major
    n = max(w.shape)
    gram = w.T @ w if w.shape[1] <= w.shape[0] else w @ w.T  # the M x M one
    reference = np.sort(np.linalg.eigvalsh(gram)) / n
    np.testing.assert_allclose(spectral.esd(w), reference, rtol=1e-9, atol=1e-12 * reference[-1])


def test_stable_rank_and_spectral_norm_match_numpy_norms():
    w = np.random.default_rng(2).normal(size=(30, 50))
    s = spectral.spectrum(w)
    assert s.spectral_norm == pytest.approx(np.linalg.norm(w, 2), rel=1e-12)
    assert s.stable_rank == pytest.approx(np.linalg.norm(w, "fro") ** 2 / np.linalg.norm(w, 2) ** 2, rel=1e-10)
    assert s.mp_lambda_plus == pytest.approx(np.var(w) * (1 + math.sqrt(30 / 50)) ** 2)


def _powerlaw_fit(x):
    powerlaw = pytest.importorskip("powerlaw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return powerlaw.Fit(x, verbose=False)


@pytest.mark.parametrize("seed", range(4))
def test_power_law_tail_matches_the_powerlaw_package(seed):
    rng = np.random.default_rng(seed)
    alpha = 2.2 + 0.2 * seed
    body = rng.uniform(0.05, 1.0, 300)
    tail = (1 - rng.random(250)) ** (-1 / (alpha - 1))  # Pareto with this alpha above xmin = 1
    x = np.concatenate([body, tail])
    ours = spectral.fit_power_law(x, min_tail=2)  # powerlaw's candidate set: every value but the largest
    ref = _powerlaw_fit(x)
    assert ours.xmin == pytest.approx(ref.xmin, rel=1e-12)
    assert ours.alpha == pytest.approx(ref.alpha, rel=1e-10)
    assert ours.ks == pytest.approx(ref.D, rel=1e-8)
    assert abs(ours.alpha - alpha) < 0.5  # and it recovers the planted exponent


def test_power_law_tail_matches_powerlaw_on_an_esd():
    """On a real-looking ESD, every xmin candidate's alpha and KS distance match `powerlaw`'s, and so
    does the choice among the candidates it fits analytically. (For alpha outside (1.5, 3] powerlaw
    switches to a bounded numerical fit that stops at alpha = 3 and marks the candidate invalid.)"""
    w = np.random.default_rng(5).standard_t(2.5, size=(120, 200))
    lam = spectral.esd(w)
    xmins, alphas, ks, _ = spectral.power_law_candidates(lam, min_tail=2)
    ref = _powerlaw_fit(lam)
    res = ref.xmin_fitting_results
    k = res["xmins"].size  # powerlaw also leaves out the second-largest value: compare the shared candidates
    assert k >= xmins.size - 1
    xmins, alphas, ks = xmins[:k], alphas[:k], ks[:k]
    np.testing.assert_allclose(xmins, res["xmins"], rtol=0)
    analytic = (alphas > 1.5) & (alphas <= 3)
    assert analytic.sum() > 20
    np.testing.assert_allclose(alphas[analytic], res["alphas"][analytic], rtol=1e-10)
    np.testing.assert_allclose(ks[analytic], res["distances"][analytic], rtol=1e-8)
    chosen = np.flatnonzero(analytic & res["valid_fits"])[np.argmin(ks[analytic & res["valid_fits"]])]
    assert xmins[chosen] == ref.xmin


def test_power_law_respects_min_tail_and_degenerate_input():
    x = np.random.default_rng(0).pareto(2.0, 200) + 1
    assert spectral.fit_power_law(x, min_tail=50).n_tail >= 50
    assert math.isnan(spectral.fit_power_law(np.ones(30)).alpha)
    assert math.isnan(spectral.fit_power_law(np.arange(1.0, 5.0)).alpha)  # fewer values than MIN_TAIL


def test_no_spikes_in_at_least_95_percent_of_gaussian_random_matrices():
    shapes = [(30, 50), (60, 60), (150, 40), (20, 200), (64, 128)]
    draws = 200
    clean = 0
    for seed in range(draws):
        w = np.random.default_rng(seed).normal(0, 0.3, shapes[seed % len(shapes)])
        clean += spectral.mp_spike_count(spectral.esd(w), float(np.var(w)), *w.shape) == 0
    assert clean >= 0.95 * draws


@pytest.mark.parametrize("seed", range(10))
def test_a_planted_rank_one_spike_is_found(seed):
    rng = np.random.default_rng(seed)
    rows, cols = 100, 150
    noise = rng.normal(size=(rows, cols))
    u, v = rng.normal(size=rows), rng.normal(size=cols)
    # Signal strength 3 in units of the noise edge: well past the BBP transition.
    w = noise + 3 * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v)) * math.sqrt(max(rows, cols))
    assert spectral.spectrum(w).mp_spikes >= 1
    assert spectral.spectrum(noise).mp_spikes == 0


def test_permuted_comparison_is_seeded_and_separates_structure_from_noise():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(80, 120))
    structured = rng.normal(size=(80, 3)) @ rng.normal(size=(3, 120)) + 0.05 * noise
    a = spectral.spectral_view(structured, np.random.default_rng(7))
    b = spectral.spectral_view(structured, np.random.default_rng(7))
    np.testing.assert_array_equal(a.randomized.eigenvalues, b.randomized.eigenvalues)
    # Permuting keeps the entries (same Frobenius norm, same trace of the ESD)...
    assert a.randomized.eigenvalues.sum() == pytest.approx(a.spectrum.eigenvalues.sum(), rel=1e-10)
    # ...and the distance is the two-sample KS statistic of the two ESDs.
    assert a.rand_distance == pytest.approx(stats.ks_2samp(a.spectrum.eigenvalues, a.randomized.eigenvalues).statistic)
    random = spectral.spectral_view(noise, np.random.default_rng(7))
    assert a.rand_distance > 0.5 > random.rand_distance


def test_layer_spectral_view_says_why_not():
    rng = np.random.default_rng(0)
    assert spectral.layer_spectral_view(np.ones(5), (5,), rng) == (None, "not a matrix")
    bad = np.ones(12)
    bad[3] = np.nan
    assert spectral.layer_spectral_view(bad, (3, 4), rng)[1] == "non-finite values"
    view, note = spectral.layer_spectral_view(rng.normal(size=18), (2, 9), rng)
    assert view is not None and "too few for a tail fit" in note


@pytest.mark.parametrize("rank", [0, 1])
def test_all_zero_and_rank_one_matrices_get_a_note_and_a_figure(rank):
    """Their ESD has no (or one distinct) positive eigenvalue: no tail, and the figure must still draw."""
    from weightdist.analyses.spectral import esd_figure
    from weightdist.reporting.plots import _plt

    w = np.zeros((32, 64))
    if rank:
        w[0, 0] = 1.0
    view, note = spectral.layer_spectral_view(w.ravel(), w.shape, np.random.default_rng(0))
    assert view is not None and math.isnan(view.spectrum.tail.alpha)
    assert note.startswith(f"{rank} distinct positive eigenvalues of 32") and "too few for a tail fit" in note
    _plt().close(esd_figure(view, "z.weight"))


def test_fit_spectral_columns_in_the_layer_table():
    rng = np.random.default_rng(3)
    conv = rng.standard_t(5, size=(32, 16, 3, 3))
    layers = [
        Layer("conv.weight", "conv", conv.shape, conv.size, 144, "float32", conv.ravel()),
        Layer("big.weight", "linear", (50, 40), 2000, 40, "float32", rng.normal(size=100), subsampled_from=2000),
        Layer("bias", "bias", (40,), 40, None, "float32", rng.normal(size=40)),
    ]
    options = FitOptions(families=("gaussian", "student_t"), spectral=True, kinds=("conv", "linear", "bias"))
    table = layer_table(list(fit_layers(layers, options))).drop_duplicates("layer").set_index("layer")
    expected = spectral.spectral_view(spectral.as_matrix(conv.ravel(), conv.shape),
                                      np.random.default_rng([0, 0]))  # any permutation: only the unpermuted part is compared
    assert table.loc["conv.weight", "esd_alpha"] == pytest.approx(expected.spectrum.tail.alpha)
    assert table.loc["conv.weight", "stable_rank"] == pytest.approx(expected.spectrum.stable_rank)
    assert table.loc["conv.weight", "mp_spikes"] == expected.spectrum.mp_spikes
    assert 0 <= table.loc["conv.weight", "esd_rand_distance"] <= 1
    assert "subsampled" in table.loc["big.weight", "spectral_note"] and math.isnan(table.loc["big.weight", "esd_alpha"])
    assert table.loc["bias", "spectral_note"] == "not a matrix"
    plain = layer_table(list(fit_layers(layers[:1], FitOptions(families=("gaussian",)))))
    assert "esd_alpha" not in plain  # only with --spectral


def test_spearman_interval_matches_scipy_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = 0.5 * x + rng.normal(size=60)
    a = spearman_with_interval(x, y, np.random.default_rng(1))
    b = spearman_with_interval(x, y, np.random.default_rng(1))
    assert a == b
    assert a.rho == pytest.approx(stats.spearmanr(x, y).statistic)
    assert a.lo < a.rho < a.hi
    # The percentile interval against scipy's own bootstrap of the same statistic.
    ref = stats.bootstrap((x, y), lambda u, v: stats.spearmanr(u, v).statistic, paired=True, vectorized=False,
                          n_resamples=600, method="percentile", random_state=np.random.default_rng(2))
    assert a.lo == pytest.approx(ref.confidence_interval.low, abs=0.07)  # two Monte Carlo estimates of one interval
    assert a.hi == pytest.approx(ref.confidence_interval.high, abs=0.07)


def test_shape_alpha_pairs_reads_the_familys_rows():
    import pandas as pd

    table = pd.DataFrame({"layer": ["a", "a", "b", "b"], "family": ["gennorm", "gaussian"] * 2,
                          "beta": [1.2, math.nan, 1.8, math.nan], "esd_alpha": [2.5, 2.5, math.nan, math.nan]})
    pairs = shape_alpha_pairs(table, "gennorm", "beta")
    assert pairs.to_dict("list") == {"layer": ["a"], "beta": [1.2], "esd_alpha": [2.5]}
    assert shape_alpha_pairs(table.drop(columns="esd_alpha"), "gennorm", "beta").empty
    assert shape_alpha_pairs(table, "gaussian", "beta").empty  # another family's rows carry no β


@pytest.mark.slow
def test_fit_spectral_end_to_end_and_the_findings_section(tmp_path):
    """`weightdist fit --spectral --outliers` on the embedded model, then `weightdist findings`."""
    import pandas as pd

    from weightdist.cli import main

    out = tmp_path / "reports" / "resnet20_fashionmnist"
    assert main(["fit", "--spectral", "--outliers", "--plot-layers", "2", "--quiet", "--out", str(out)]) == 0
    table = pd.read_csv(out / "layers.csv")
    for column in ("esd_alpha", "esd_xmin", "stable_rank", "spectral_norm", "mp_spikes", "esd_rand_distance",
                   "beta_lo", "beta_hi", "df_lo", "df_hi", "scale_lo", "scale_hi", "n_outliers", "outlier_share"):
        assert column in table, column
    gennorm = table[table["family"] == "gennorm"]
    assert (gennorm["beta_lo"] < gennorm["beta"]).all() and (gennorm["beta"] < gennorm["beta_hi"]).all()
    assert sorted(p.name for p in (out / "plots").glob("*_esd.png"))  # ESD figures beside the value figures
    assert list(pd.read_csv(out / "outliers.csv").columns) == ["layer", "shape", "index", "value", "side", "best"]
    report = (out / "report.md").read_text()
    assert "β = " in report or "df = " in report  # verdicts carry their intervals
    assert main(["findings", str(tmp_path / "reports")]) == 0
    readme = (tmp_path / "reports" / "README.md").read_text()
    assert "## Values against spectrum (β, df and ESD alpha)" in readme
    sections = readme.split("## Values against spectrum")[1].split("### ")[1:]
    for section, (family, shape, heading) in zip(sections, (("gennorm", "beta", "β (gennorm)"), ("student_t", "df", "df (Student-t)"))):
        pairs = shape_alpha_pairs(table, family, shape)  # each headline shape gets its own section
        rho = stats.spearmanr(pairs[shape], pairs["esd_alpha"]).statistic
        assert section.startswith(f"{heading} against alpha") and f"ρ = {rho:.2f}" in section
    assert len(sections) == 2
