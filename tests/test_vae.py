"""VAE latent families against closed forms, numerical integration and mpmath; save/reload; CLI."""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose
from scipy import integrate

from weightdist.cli import main
from weightdist.errors import DatasetError
from weightdist.vae import spherical
from weightdist.vae.latents import LATENTS


def log_sinh(k):
    return k + math.log1p(-math.exp(-2 * k)) - math.log(2)


@pytest.mark.parametrize("kappa", [1e-6, 1e-2, 1.0, 50.0, 700.0, 5000.0])
def test_vmf_log_normalizer_matches_closed_form_on_s2(kappa):
    # p = 3: C_3(κ) = κ / (4π sinh κ)
    expected = math.log(kappa) - math.log(4 * math.pi) - log_sinh(kappa)
    assert_allclose(spherical.vmf_log_normalizer(3, kappa), expected, rtol=1e-10)


@pytest.mark.parametrize("v, kappa", [(31.0, 1.7), (63.0, 1.7), (200.0, 1.0), (500.0, 2000.0), (0.5, 1e-8), (9.0, 3e4)])
def test_log_bessel_against_mpmath_where_float32_underflows(v, kappa):
    mpmath.mp.dps = 40
    expected = float(mpmath.log(mpmath.besseli(v, kappa)))
    assert_allclose(spherical.log_bessel_iv(v, kappa), expected, rtol=1e-9)


@pytest.mark.parametrize("p", [3, 11, 65])
def test_vmf_kl_nonnegative_and_zero_at_kappa_zero(p):
    kappa = np.logspace(-6, 4, 60)
    kl = spherical.vmf_kl_uniform(p, kappa)
    assert np.all(kl >= -1e-10) and np.all(np.diff(kl) > -1e-9)
    assert abs(spherical.vmf_kl_uniform(p, 1e-8)) < 1e-8


@pytest.mark.parametrize("kappa", [0.3, 4.0, 80.0])
def test_vmf_kl_against_numerical_integration_on_s2(kappa):
    # On S², w = μᵀx has density κ e^{κw} / (2 sinh κ) on [-1, 1]; KL = log C + κ E[w] + log 4π.
    log_c = spherical.vmf_log_normalizer(3, kappa)
    mean_w = integrate.quad(lambda w: w * kappa * math.exp(kappa * (w - 1)) / (1 - math.exp(-2 * kappa)), -1, 1)[0]
    assert_allclose(spherical.vmf_kl_uniform(3, kappa), log_c + kappa * mean_w + math.log(4 * math.pi), rtol=1e-8)


@pytest.mark.parametrize("p, kappa", [(3, 2.0), (6, 20.0), (21, 150.0)])
def test_vmf_sample_mean_is_a_kappa_mu(p, kappa):
    torch.manual_seed(0)
    mu = torch.nn.functional.normalize(torch.randn(1, p, dtype=torch.float64), dim=-1)
    z, failures = spherical.vmf_rsample(mu, torch.tensor([[kappa]], dtype=torch.float64), 40_000)
    assert failures == 0
    norms = z.norm(dim=-1)
    assert_allclose(norms.numpy(), 1.0, atol=1e-9)
    w = (z * mu).sum(-1).squeeze(-1).numpy()
    a = spherical.mean_resultant(p, kappa)
    assert abs(w.mean() - a) < 4 * w.std() / math.sqrt(w.size)


def test_vmf_log_normalizer_gradient_is_minus_a():
    kappa = torch.tensor([[3.0], [40.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: spherical._VmfLogNormalizer.apply(k, 7), (kappa,))
    assert torch.autograd.gradcheck(lambda k: spherical._MeanResultant.apply(k, 7), (kappa,))


@pytest.mark.parametrize("p, kappa", [(3, 0.5), (6, 10.0), (33, 200.0)])
def test_power_spherical_kl_nonnegative_and_matches_monte_carlo(p, kappa):
    torch.manual_seed(1)
    mu = torch.nn.functional.normalize(torch.randn(1, p, dtype=torch.float64), dim=-1)
    k = torch.tensor([[kappa]], dtype=torch.float64)
    analytic = float(spherical.power_spherical_kl_uniform(k.squeeze(-1), p))
    assert analytic >= 0
    z = spherical.power_spherical_rsample(mu, k, 100_000)
    log_ratio = (spherical.power_spherical_log_prob(z, mu, k) + spherical.log_sphere_area(p)).numpy()
    assert abs(log_ratio.mean() - analytic) < 4 * log_ratio.std() / math.sqrt(log_ratio.size) + 1e-9


@pytest.mark.parametrize("p, kappa", [(3, 1e-3), (3, 5.0), (10, 0.7), (10, 60.0), (40, 300.0)])
def test_vmf_log_prob_matches_scipy(p, kappa):
    from scipy.stats import vonmises_fisher

    rng = np.random.default_rng(0)
    mu = rng.normal(size=p)
    mu /= np.linalg.norm(mu)
    x = rng.normal(size=(7, p))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[0] = mu  # the mode, where the density is largest
    ours = spherical.torch_vmf_log_prob(torch.from_numpy(x), torch.from_numpy(mu)[None], torch.tensor([[kappa]], dtype=torch.float64))
    assert_allclose(ours.numpy(), vonmises_fisher(mu, kappa).logpdf(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("p, kappa", [(64, 1.7), (64, 1e-5), (128, 0.3), (3, 1e-200), (20, 1e-160), (200, 5000.0)])
def test_vmf_log_normalizer_high_dimension_against_mpmath(p, kappa):
    # p = 64, κ = 1.7 is where float32 ive(31, 1.7) underflows; κ = 1e-200 leaves only the power series.
    mpmath.mp.dps = 60
    v = mpmath.mpf(p) / 2 - 1
    k = mpmath.mpf(kappa)
    expected = v * mpmath.log(k) - (mpmath.mpf(p) / 2) * mpmath.log(2 * mpmath.pi) - mpmath.log(mpmath.besseli(v, k))
    assert_allclose(spherical.vmf_log_normalizer(p, kappa), float(expected), rtol=1e-10)
    # As κ → 0 the vMF becomes uniform: log C_p → −log |S^{p−1}|.
    if kappa < 1e-4:
        assert_allclose(spherical.vmf_log_normalizer(p, kappa), -spherical.log_sphere_area(p), rtol=1e-9)


@pytest.mark.parametrize("p, kappa", [(3, 0.5), (11, 30.0), (51, 400.0)])
def test_vmf_monte_carlo_kl_matches_analytic(p, kappa):
    torch.manual_seed(2)
    mu = torch.nn.functional.normalize(torch.randn(1, p, dtype=torch.float64), dim=-1)
    k = torch.tensor([[kappa]], dtype=torch.float64)
    z, failures = spherical.vmf_rsample(mu, k, 100_000)
    assert failures == 0
    log_ratio = (spherical.torch_vmf_log_prob(z, mu, k) + spherical.log_sphere_area(p)).numpy()
    analytic = float(spherical.vmf_kl_uniform(p, kappa))
    assert analytic > 0
    assert abs(log_ratio.mean() - analytic) < 4 * log_ratio.std() / math.sqrt(log_ratio.size) + 1e-9


def test_vmf_sampler_counts_failures_at_the_iteration_cap():
    # One round only: some draws of a diffuse vMF in high dimension are rejected and must be counted.
    torch.manual_seed(0)
    mu = torch.nn.functional.normalize(torch.randn(1, 50, dtype=torch.float64), dim=-1)
    z, failures = spherical.vmf_rsample(mu, torch.tensor([[5.0]], dtype=torch.float64), 20_000, max_iter=1)
    assert 0 < failures < 20_000
    assert_allclose(z.norm(dim=-1).numpy(), 1.0, atol=1e-9)


def test_vmf_kl_gradient_through_torch_matches_finite_difference():
    p = 21
    kappa = torch.tensor([0.05, 2.0, 90.0], dtype=torch.float64, requires_grad=True)
    spherical.torch_vmf_kl_uniform(kappa, p).sum().backward()
    h = 1e-6
    k = kappa.detach().numpy()
    numeric = (spherical.vmf_kl_uniform(p, k + h) - spherical.vmf_kl_uniform(p, k - h)) / (2 * h)
    assert_allclose(kappa.grad.numpy(), numeric, rtol=1e-5)


def test_gaussian_monte_carlo_kl_matches_analytic():
    torch.manual_seed(0)
    latent = LATENTS.get("gaussian")(4, 8)
    params = (torch.tensor([[0.5, -1.0, 0.0, 2.0]]), torch.tensor([[-1.0, 0.5, 0.0, -2.0]]))
    z = latent.rsample(params, 200_000)
    mc = (latent.log_q(z, params) - latent.log_prior(z)).mean()
    assert_allclose(float(mc), float(latent.kl(params)), rtol=0.02)


def test_mixture_prior_monte_carlo_kl_equals_the_gaussian_kl_when_the_mixture_collapses():
    # Every component at N(0, I): the MoG prior is the standard normal, so the default Monte-Carlo KL
    # path (used by mog and vamp in training) must reproduce the Gaussian's closed form.
    torch.manual_seed(0)
    mog = LATENTS.get("mog")(3, 8)
    with torch.no_grad():
        mog.prior_means.zero_()
        mog.prior_log_std.zero_()
    params = (torch.tensor([[0.5, -1.0, 0.3]]), torch.tensor([[-1.0, 0.5, 0.0]]))
    z = mog.rsample(params, 400_000)
    analytic = float(LATENTS.get("gaussian")(3, 8).kl(params))
    assert_allclose(float(mog.kl(params, z)), analytic, rtol=0.01)


@pytest.mark.parametrize("p, kappa", [(3, 0.5), (3, 20.0), (5, 4.0)])
def test_power_spherical_density_integrates_to_one(p, kappa):
    # Independent of the normaliser's own formula: the density of t = μᵀz on [−1, 1] is
    # q(t) |S^{p−2}| (1 − t²)^{(p−3)/2}; it must integrate to 1.
    mu = torch.zeros(1, p, dtype=torch.float64)
    mu[0, 0] = 1.0
    k = torch.tensor([kappa], dtype=torch.float64)
    log_area = spherical.log_sphere_area(p - 1)

    def density(t: float) -> float:
        x = torch.zeros(1, p, dtype=torch.float64)
        x[0, 0], x[0, 1] = t, math.sqrt(max(0.0, 1 - t * t))
        return math.exp(float(spherical.power_spherical_log_prob(x, mu, k)) + log_area) * (1 - t * t) ** ((p - 3) / 2)

    assert_allclose(integrate.quad(density, -1, 1, limit=200)[0], 1.0, rtol=1e-6)


def test_frechet_distance_of_known_gaussians():
    # Identity features: N(0, I₄) against N(1, 4 I₄) has Fréchet distance 4·1 + 4·(1 + 4 − 2·2) = 8.
    from weightdist.vae.evaluate import frechet_distance

    class Identity:
        def features(self, x):
            return x

    g = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 4, generator=g, dtype=torch.float64)
    b = 1 + 2 * torch.randn(200_000, 4, generator=g, dtype=torch.float64)
    assert_allclose(frechet_distance(Identity(), a, b), 8.0, rtol=0.02)
    assert frechet_distance(Identity(), a, a) < 1e-4


def test_registry_names():
    assert set(LATENTS) == {"gaussian", "vmf", "power_spherical", "mog", "vamp", "ae"}


# --- training, saving, evaluation (need Fashion-MNIST) ---------------------------------------------


@pytest.fixture(scope="module")
def data():
    from weightdist.vae.train import load_data

    try:
        return load_data()
    except DatasetError as exc:
        pytest.skip(f"Fashion-MNIST not installed ({exc})")


@pytest.mark.parametrize("prior", ["gaussian", "vmf", "power_spherical", "mog", "vamp", "ae"])
def test_save_reload_each_family(prior, data, tmp_path):
    from weightdist.vae.train import TrainConfig, load_checkpoint, save_checkpoint, train_vae

    trained = train_vae(TrainConfig(prior=prior, latent_dim=3, epochs=1, train_size=1000, warmup_epochs=0.5), data, log=None)
    save_checkpoint(trained, tmp_path / "ckpt")
    again = load_checkpoint(tmp_path / "ckpt")
    assert again.config == trained.config and again.params == trained.params
    x = data.test_bin[:16]
    with torch.no_grad():
        for a, b in zip(trained.model.posterior(x), again.model.posterior(x)):
            assert torch.equal(a, b)
        z = torch.randn(4, trained.model.latent.code_dim)
        assert torch.equal(trained.model.decode_mean(z), again.model.decode_mean(z))


def test_short_budget_shortens_the_kl_warm_up(data):
    # 2 epochs against a 5-epoch warm-up: the weight must still reach 1, so the model is selected on the full ELBO.
    from weightdist.vae.train import TrainConfig, train_vae

    lines = []
    trained = train_vae(TrainConfig(prior="gaussian", latent_dim=2, epochs=2, train_size=500, warmup_epochs=5.0), data,
                        log=lines.append)
    assert [round(h["kl_weight"], 6) for h in trained.history][-1] == 1.0
    assert trained.best_epoch == 2 and any("KL warm-up shortened from 5 to 1 epochs" in line for line in lines)


def test_iwae_increases_with_k(data):
    from weightdist.vae.evaluate import iwae_log_likelihood
    from weightdist.vae.train import TrainConfig, train_vae

    trained = train_vae(TrainConfig(prior="gaussian", latent_dim=5, epochs=1, train_size=3000, warmup_epochs=0.5), data, log=None)
    x = data.test_bin[:100]
    torch.manual_seed(0)
    estimates = [iwae_log_likelihood(trained.model, x, k).mean for k in (1, 10, 100)]
    assert estimates[0] < estimates[1] < estimates[2]
    # K = 1 is the ELBO: the same number as the analytic-KL ELBO up to Monte-Carlo noise.
    from weightdist.vae.evaluate import elbo_terms

    repeats = np.array([iwae_log_likelihood(trained.model, x, 1).mean for _ in range(20)])
    assert abs(repeats.mean() - elbo_terms(trained.model, x)["elbo"]) < 4 * repeats.std(ddof=1) / math.sqrt(20) + 0.5


@pytest.mark.parametrize("kind", ["gmm", "kde"])
def test_code_density_integrates_to_one_in_the_original_scale(kind):
    # Codes are standardised before fitting; the log-density must carry the Jacobian back.
    from weightdist.vae.density import fit_density

    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.normal(-3, 0.5, (300, 1)), rng.normal(4, 2.0, (300, 1))]) * 7.0
    density = fit_density(codes, kind)
    total = integrate.quad(lambda z: math.exp(density.log_density(np.array([[z]]))[0]), -150, 150, limit=200)[0]
    assert_allclose(total, 1.0, rtol=1e-3)
    samples = density.sample(4000, seed=1)
    assert_allclose(samples.mean(), codes.mean(), atol=0.6)


def test_heldout_curve_shows_the_kde_falling_behind_as_dimension_grows():
    # The claim-4 measurement on synthetic codes with a known answer: N(0, I_d) codes, whose exact
    # held-out log-density per dimension is −(log 2π + 1)/2. At a fixed n the KDE's deficit grows with d;
    # the parametric GMM stays close to exact.
    from weightdist.vae.density import heldout_curve

    exact = -0.5 * (math.log(2 * math.pi) + 1)
    deficit = {}
    for d in (2, 16):
        rng = np.random.default_rng(0)
        rows = heldout_curve(rng.normal(size=(5000, d)), rng.normal(size=(1000, d)), (5000,))
        deficit[d] = {r["method"]: exact - r["heldout_logdensity_per_dim"] for r in rows}
    assert deficit[16]["gmm"] < 0.04 and deficit[2]["gmm"] < 0.04
    assert deficit[16]["kde"] > 3 * deficit[2]["kde"] and deficit[16]["kde"] > deficit[16]["gmm"] + 0.03


def test_cli_compare_end_to_end_tiny(data, tmp_path):
    out = tmp_path / "vae"
    argv = ["vae", "compare", "--quick", "--priors", "gaussian,vmf,ae", "--latent-dims", "2", "--epochs", "1",
            "--k", "5", "--test-size", "60", "--train-size", "2000", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    results = pd.read_csv(out / "results.csv")
    assert list(results["prior"]) == ["gaussian", "vmf", "ae"]
    expected = {"test_ll", "test_ll_se", "elbo", "recon", "kl", "active_units", "frechet", "params", "train_seconds"}
    assert expected <= set(results.columns)
    assert results["test_ll"].notna().all() and (results["params"] > 0).all()
    report = (out / "report.md").read_text()
    assert "Generated by `weightdist vae compare --quick" in report and "not comparable to Inception FID" in report
    for fig in ("samples.png", "reconstructions.png", "latent_2d.png", "ll_vs_dim.png", "ae_density.png"):
        assert (out / fig).is_file(), fig


def test_cli_train_writes_checkpoint_and_config(data, tmp_path):
    out = tmp_path / "ckpt"
    assert main(["vae", "train", "--prior", "power_spherical", "--latent-dim", "2", "--epochs", "1", "--train-size", "500",
                 "--out", str(out), "--quiet"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


def test_missing_dataset_and_unknown_prior_are_one_line(tmp_path, capsys):
    assert main(["vae", "train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err
    assert main(["vae", "compare", "--priors", "gaussian,wishart", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "unknown prior(s) wishart" in err and err.count("\n") == 1


def test_standalone_module_main_and_errors_before_training(tmp_path, capsys):
    from weightdist.vae.cli import main as vae_main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert vae_main(["compare", "--latent-dims", "0,2", "--out", str(tmp_path / "o")]) == 2
    assert "--latent-dims must be positive" in capsys.readouterr().err
    assert vae_main(["train", "--latent-dim", "2", "--out", str(blocker / "sub")]) == 2
    assert "choose another --out" in capsys.readouterr().err
    assert vae_main(["train", "--prior", "gausian", "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert "unknown prior(s) gausian" in err and "gaussian" in err and err.count("\n") == 1


def test_claim_verdicts_follow_the_numbers():
    from weightdist.vae.compare import claim_verdicts

    rows = []
    for d in (2, 10):
        for prior, diff in (("gaussian", 0.0), ("vmf", -2.0), ("mog", +1.0 if d == 10 else 0.05)):
            rows.append({"prior": prior, "latent_dim": d, "ll_vs_gaussian": diff, "ll_vs_gaussian_se": 0.1,
                         "seconds_per_epoch": {"gaussian": 1.0, "vmf": 1.5, "mog": 1.0}[prior],
                         "sampler_draws": 100, "sampler_failures": 0})
    sweep = pd.DataFrame([{"latent_dim": d, "n_train": n, "method": m,
                           "heldout_logdensity_per_dim": -1.0 - (0.1 * d * (m == "kde")) / math.log10(n)}
                          for d in (2, 8, 32) for n in (100, 10000) for m in ("gmm", "kde")])
    verdicts = claim_verdicts(pd.DataFrame(rows), sweep)
    assert verdicts["analytic KL (gaussian)"].startswith("**supported**")
    assert verdicts["vmf beats gaussian"] == "**not supported** by these numbers"
    assert verdicts["mog beats gaussian"] == "**partly supported** (better at d=10 only)"
    assert verdicts["AE + density needs exponentially many samples"].startswith("**supported**")
    flat = sweep.assign(heldout_logdensity_per_dim=-1.0)  # KDE no worse than GMM anywhere: the claim is not shown
    assert claim_verdicts(pd.DataFrame(rows), flat)["AE + density needs exponentially many samples"].startswith("**not clearly")
