"""A family registered from outside the package reaches every consumer with no edit elsewhere:
layers.csv, report.md, summary.json, compare, findings, drift tables and plots. Also: frozen,
hashable fit results, and the standardisation the base class applies for every family."""
from __future__ import annotations

import json
import math
from typing import Mapping

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose
from scipy import stats

from weightdist.cli import main
from weightdist.core.families import FAMILIES, Estimate, Family, get_family, register_family
from weightdist.core.families.base import Claim, Params, Shape
from weightdist.core.fitting import fit

NAME = "dweibull_test"


class DoubleWeibull(Family):
    """Double Weibull, density c/2 |z|^(c−1) exp(−|z|^c): c = 1 is Laplace. Fitted by scipy's own MLE,
    so only the standard density and CDF are written here: loc and scale come from the base class."""

    name = NAME
    label = "double Weibull"
    shapes = (Shape("c_dw", "c", 0.05, 50.0, "c = 1 is Laplace", low="peaked", high="flat-topped"),)
    headline = "c_dw"
    beats = ("gaussian",)
    claims = (Claim("Weights are sharply peaked", "<", 1.2, support=NAME),)  # findings checks it with no edit there

    def fit(self, x_sorted: np.ndarray) -> Estimate:
        c, loc, scale = stats.dweibull.fit(x_sorted)
        return Estimate(self.params(loc=loc, scale=scale, c_dw=c))

    def std_logpdf(self, z, params: Mapping[str, float]) -> np.ndarray:
        c, a = params["c_dw"], np.abs(z)
        return np.log(c / 2) + (c - 1) * np.log(a) - a**c

    def std_cdf(self, z, params: Mapping[str, float]) -> np.ndarray:
        half_tail = 0.5 * np.exp(-np.abs(z) ** params["c_dw"])
        return np.where(z < 0, half_tail, 1 - half_tail)

    def scipy_dist(self, params: Mapping[str, float]):
        return stats.dweibull(params["c_dw"], loc=params["loc"], scale=params["scale"])


@pytest.fixture
def plugin():
    register_family(DoubleWeibull)
    yield get_family(NAME)
    FAMILIES.remove(NAME)


@pytest.fixture
def checkpoint(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {"conv1.weight": torch.randn(16, 8, 3, 3, generator=g) * 0.1,
             "layer1.conv.weight": torch.distributions.Laplace(0.0, 0.05).sample((32, 16, 3, 3)),
             "fc.weight": torch.randn(10, 64, generator=g) * 0.05}
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    return path


def test_base_class_applies_loc_and_scale_like_scipy(plugin):
    params = plugin.params(loc=0.3, scale=2.0, c_dw=1.7)
    x = np.linspace(-9, 9, 41)
    ref = stats.dweibull(1.7, loc=0.3, scale=2.0)
    assert_allclose(plugin.logpdf(x, params), ref.logpdf(x), rtol=1e-12)
    assert_allclose(plugin.cdf(x, params), ref.cdf(x), rtol=1e-12)
    assert_allclose(plugin.sf(x, params), ref.sf(x), rtol=1e-12)


@pytest.mark.parametrize("family", ["gaussian", "laplace", "student_t", "gennorm"])
def test_builtin_families_standardise_like_scipy(family):
    fam = get_family(family)
    shape = {"student_t": {"df": 3.5}, "gennorm": {"beta": 1.3}}.get(family, {})
    params = fam.params(loc=-0.2, scale=0.7, **shape)
    x = np.linspace(-40, 40, 81)
    ref = fam.scipy_dist(params)
    assert_allclose(fam.logpdf(x, params), ref.logpdf(x), rtol=1e-10)
    assert_allclose(fam.cdf(x, params), ref.cdf(x), rtol=1e-10, atol=1e-300)
    assert_allclose(fam.sf(x, params), ref.sf(x), rtol=1e-9, atol=1e-300)  # exact far in the upper tail too


def test_fit_results_are_frozen_and_hashable():
    x = np.random.default_rng(0).laplace(0, 0.1, 2000)
    f = fit(x).fits["gennorm"]
    assert hash(f) == hash(fit(x).fits["gennorm"]) and f == fit(x).fits["gennorm"]
    assert isinstance(f.params, Params) and f.params.beta == f.params["beta"]
    with pytest.raises(TypeError):
        f.params["beta"] = 2.0  # type: ignore[index]
    with pytest.raises(AttributeError):
        f.params.beta = 2.0  # type: ignore[misc]
    assert list(f.params) == ["loc", "scale", "beta"] and {**f.params}["beta"] == f.params["beta"]


def test_layer_fits_are_frozen_all_the_way_down():
    from weightdist.core.fitting import FamilyFit, LayerFit

    x = np.random.default_rng(1).standard_normal(2000)
    layer = fit(x)
    assert hash(layer) == hash(fit(x)) and layer == fit(x)  # hashable, and equal fits hash equal
    with pytest.raises(TypeError):
        layer.fits["gaussian"] = None  # type: ignore[index]
    assert hash(LayerFit(n=0, n_nonfinite=0, status="empty"))  # the unfitted default too
    built = FamilyFit("gaussian", {"loc": 0.0, "scale": 1.0}, -1.0, 10, 2, 0.1, 0.5)  # a dict given is frozen
    assert isinstance(built.params, Params) and hash(built)
    assert isinstance(LayerFit(n=10, n_nonfinite=0, status="ok", fits={"gaussian": built}).fits["gaussian"], FamilyFit)
    # Mapping semantics, as a dict's: order-free equality with equal hashes, later keys win.
    a, b = Params(loc=0.0, scale=1.0), Params(scale=1.0, loc=0.0)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert dict(Params({"loc": 0.0}, loc=5.0)) == {"loc": 5.0}


def test_registration_checks_the_declarations(plugin):
    class Clash(DoubleWeibull):
        name = "clash_test"

    with pytest.raises(TypeError, match="already"):  # its headline names summary columns: one family each
        register_family(Clash)

    class Unfounded(DoubleWeibull):  # a claim needs a headline shape to be tested on
        name = "clash_test"
        headline = None

    with pytest.raises(TypeError, match="no headline"):
        register_family(Unfounded)
    assert "clash_test" not in FAMILIES
    with pytest.raises(TypeError, match="op '=='"):
        Claim("Weights are round", "==", 1.0)


def test_a_claim_holds_by_its_operator_and_never_on_a_missing_median():
    medians = np.array([0.5, 1.2, 3.0, np.nan])
    for op, ref in (("<", medians < 1.2), ("≤", medians <= 1.2), (">", medians > 1.2), ("≥", medians >= 1.2)):
        assert Claim("q", op, 1.2).holds(medians).tolist() == ref.tolist()
    assert not Claim("q", "≥", 0.0).holds(medians)[3]  # NaN: not tested, never "holds"


def test_a_registered_family_reaches_tables_report_compare_findings(plugin, checkpoint, tmp_path):
    reports = tmp_path / "reports"
    out = reports / "tiny"
    assert main(["fit", str(checkpoint), "--out", str(out), "--families", f"gaussian,laplace,student_t,gennorm,{NAME}",
                 "--plot-layers", "1", "--quiet", "--workers", "2"]) == 0
    table = pd.read_csv(out / "layers.csv")
    rows = table[table["family"] == NAME]
    assert len(rows) == 3 and rows["c_dw"].notna().all()
    # The stored log-likelihood is scipy's at the stored parameters: the plugin's density is the real one
    # (to the CSV's 10 significant digits, to which a c < 1 density's cusp at loc is sensitive).
    values = torch.load(checkpoint)["layer1.conv.weight"].double().numpy().ravel()
    row = rows[rows["layer"] == "layer1.conv.weight"].iloc[0]
    assert_allclose(row["loglik"], stats.dweibull.logpdf(values, row["c_dw"], row["loc"], row["scale"]).sum(), rtol=1e-4)
    exact = fit(values, [NAME]).fits[NAME]
    assert_allclose(exact.loglik, stats.dweibull.logpdf(values, *[exact.params[p] for p in ("c_dw", "loc", "scale")]).sum(), rtol=1e-12)

    report = (out / "report.md").read_text()
    assert "| c (double Weibull) |" in report
    assert "- double Weibull beats Gaussian (AIC) in" in report and "double Weibull shape c: median" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["c_dw_median"] == pytest.approx(rows["c_dw"].median())
    assert f"{NAME}_beats_gaussian" in summary
    assert any(p.name.endswith(".png") and p.name != "overview.png" for p in (out / "plots").iterdir())

    compare = tmp_path / "compare"
    assert main(["compare", str(out), "--out", str(compare)]) == 0
    cross = pd.read_csv(compare / "compare.csv")
    assert cross.loc[0, "c_dw_median"] == pytest.approx(rows["c_dw"].median())
    assert f"wins_{NAME}" in cross and (compare / "plots" / "c_dw_by_depth.png").is_file()

    assert main(["findings", str(reports), "--out", str(tmp_path / "README.md")]) == 0
    readme = (tmp_path / "README.md").read_text()
    assert "median c" in readme and "`dweibull_test>gaussian`: layers where double Weibull has a lower AIC than Gaussian" in readme
    # The family's declared claim is checked on the report's median c, with its AIC wins as support.
    claim = next(line for line in readme.splitlines() if "Weights are sharply peaked" in line)
    median_c = rows["c_dw"].median()
    assert claim.startswith('- **"Weights are sharply peaked"** (median double Weibull c < 1.2): ')
    assert (f"holds for tiny; fails for no trained model." if median_c < 1.2 else "holds for no trained model; fails for tiny.") in claim
    assert f"double Weibull beats Gaussian (AIC) in {summary[f'{NAME}_beats_gaussian']}/3 layers of tiny." in claim
    assert "- By c, most peaked: **" in readme and "| median c |" in readme  # and the layer-kind breakdown


def test_unknown_family_is_one_error_type_everywhere(plugin):
    from weightdist.errors import UnknownNameError
    from weightdist.pipeline import FitOptions

    for call in (lambda: get_family("dweibul"), lambda: FitOptions(families=("dweibul",)), lambda: fit([1.0] * 9, ["dweibul"])):
        with pytest.raises(UnknownNameError, match=f"did you mean {NAME}"):
            call()
    assert math.isfinite(fit(np.random.default_rng(1).laplace(size=500), [NAME]).fits[NAME].loglik)


def test_gains_over_training_are_measured_against_the_declared_baseline():
    import pandas as pd

    from weightdist.analyses.dynamics import family_scores
    from weightdist.core.families import baseline_family

    assert baseline_family().name == "gaussian"  # the one family declaring baseline = True
    table = pd.DataFrame({"epoch": [0, 0, 0, 0], "layer": ["a", "a", "b", "b"], "family": ["gaussian", "laplace"] * 2,
                          "mean_loglik": [1.0, 1.5, 2.0, 1.0], "is_best": [False, True, True, False]})
    scores = family_scores(table).set_index("family")
    assert scores.loc["laplace", "mean_gain_vs_gaussian"] == pytest.approx(((1.5 - 1.0) + (1.0 - 2.0)) / 2)
    assert scores.loc["gaussian", "mean_gain_vs_gaussian"] == 0 and scores.loc["laplace", "wins"] == 1
