"""Opt-in generic families `scipy:<name>` (core/families/scipy_generic.py) against scipy itself."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from weightdist.cli import main
from weightdist.core.families import FAMILIES, get_family
from weightdist.core.fitting import fit
from weightdist.errors import OptionError, UnknownNameError
from weightdist.pipeline import FitOptions, fit_layers, layer_table
from weightdist.sources.extract import Layer


@pytest.mark.parametrize("name,truth", [("logistic", (0.01, 0.03)), ("hypsecant", (-0.02, 0.05))])
def test_generic_fit_matches_scipy_fit(name, truth):
    dist = getattr(stats, name)
    x = np.sort(dist.rvs(*truth, size=4000, random_state=np.random.default_rng(0)))
    f = fit(x, [f"scipy:{name}"]).fits[f"scipy:{name}"]
    loc, scale = dist.fit(x)
    assert (f.params["loc"], f.params["scale"]) == pytest.approx((loc, scale), rel=1e-12)
    assert f.loglik == pytest.approx(np.sum(dist.logpdf(x, loc, scale)), rel=1e-12)
    assert f.k == 2 and "generic" in f.note


def test_shape_parameters_get_prefixed_columns():
    x = np.sort(stats.genlogistic.rvs(2.0, 0.0, 0.1, size=3000, random_state=np.random.default_rng(1)))
    fam = get_family("scipy:genlogistic")
    assert fam.param_names == ("loc", "scale", "genlogistic_c") and fam.generic
    f = fit(x, ["scipy:genlogistic"]).fits["scipy:genlogistic"]
    c, loc, scale = stats.genlogistic.fit(x)
    assert (f.params["genlogistic_c"], f.params["loc"], f.params["scale"]) == pytest.approx((c, loc, scale), rel=1e-10)
    np.testing.assert_allclose(fam.cdf(x[:50], f.params), stats.genlogistic.cdf(x[:50], c, loc, scale))


def test_generic_families_are_fitted_beside_the_built_ins_and_never_registered():
    rng = np.random.default_rng(2)
    w = rng.logistic(0, 0.02, size=(40, 50))
    layer = Layer("fc.weight", "linear", w.shape, w.size, 50, "float32", w.ravel())
    options = FitOptions(families=("gaussian", "laplace", "scipy:logistic", "scipy:genlogistic"))
    table = layer_table(list(fit_layers([layer], options))).set_index("family")
    assert table.loc["scipy:logistic", "fit_note"].startswith("generic scipy MLE")
    assert np.isfinite(table.loc["scipy:genlogistic", "genlogistic_c"])
    assert "scipy:logistic" not in FAMILIES  # a later default run does not fit it
    assert table.loc["scipy:logistic", "aic"] < table.loc["gaussian", "aic"]  # logistic data: the right law wins


def test_unknown_and_discrete_names_are_one_line_errors(capsys):
    with pytest.raises(UnknownNameError, match=r"did you mean scipy:logistic"):
        get_family("scipy:logistc")
    with pytest.raises(OptionError, match="discrete"):
        get_family("scipy:poisson")
    assert main(["fit", "--families", "gaussian,scipy:binom", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "discrete" in err


def test_a_family_scipy_cannot_fit_is_a_non_converged_row_not_a_traceback():
    # scipy's generic fit raises FitError for reciprocal on data around zero (outside its support).
    x = np.sort(np.random.default_rng(3).laplace(0, 0.02, size=3000))
    with pytest.raises(stats.FitError):
        stats.reciprocal.fit(x)
    result = fit(x, ["gaussian", "scipy:reciprocal"])
    f = result.fits["scipy:reciprocal"]
    assert not f.converged and f.loglik == -np.inf and "fit failed" in f.note
    assert result.fits["gaussian"].converged


def test_scipy_integration_warnings_become_a_note_not_stderr_noise(monkeypatch, recwarn):
    # Laws without a closed-form CDF (levy_stable, studentized_range) make scipy integrate numerically and warn once
    # per call; the fit says so in its note, and evaluating the law prints nothing.
    import warnings

    from scipy.integrate import IntegrationWarning

    fam = get_family("scipy:logistic")

    class Warning_(type(fam.dist)):
        def fit(self, data, *args, **kwargs):
            warnings.warn("The integral is probably divergent, or slowly convergent.", IntegrationWarning)
            return stats.logistic.fit(data)

        def _cdf(self, x):
            warnings.warn("The maximum number of subdivisions (50) has been achieved.", IntegrationWarning)
            return super()._cdf(x)

    monkeypatch.setattr(fam, "dist", Warning_(name="logistic"))
    x = np.sort(np.random.default_rng(4).logistic(0, 0.1, size=400))
    f = fit(x, ["scipy:logistic"]).fits["scipy:logistic"]
    assert f.converged and "numerical integration may be inaccurate" in f.note
    assert f.params["loc"] == pytest.approx(stats.logistic.fit(x)[0], rel=1e-12)  # the note changes nothing else
    assert not [w for w in recwarn if issubclass(w.category, IntegrationWarning)]  # (the KS evaluated its _cdf)
