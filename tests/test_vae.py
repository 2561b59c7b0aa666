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


def test_gaussian_monte_carlo_kl_matches_analytic():
    torch.manual_seed(0)
    latent = LATENTS.get("gaussian")(4, 8)
    params = (torch.tensor([[0.5, -1.0, 0.0, 2.0]]), torch.tensor([[-1.0, 0.5, 0.0, -2.0]]))
    z = latent.rsample(params, 200_000)
    mc = (latent.log_q(z, params) - latent.log_prior(z)).mean()
    assert_allclose(float(mc), float(latent.kl(params)), rtol=0.02)


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


def test_iwae_increases_with_k(data):
    from weightdist.vae.evaluate import iwae_log_likelihood
    from weightdist.vae.train import TrainConfig, train_vae

    trained = train_vae(TrainConfig(prior="gaussian", latent_dim=5, epochs=1, train_size=3000, warmup_epochs=0.5), data, log=None)
    x = data.test_bin[:100]
    torch.manual_seed(0)
    estimates = [iwae_log_likelihood(trained.model, x, k).mean for k in (1, 10, 100)]
    assert estimates[0] < estimates[1] < estimates[2]


def test_cli_compare_end_to_end_tiny(data, tmp_path):
    out = tmp_path / "vae"
    argv = ["vae", "compare", "--quick", "--priors", "gaussian,vmf,ae", "--latent-dims", "2", "--epochs", "1",
            "--k", "5", "--test-size", "60", "--out", str(out), "--quiet"]
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
