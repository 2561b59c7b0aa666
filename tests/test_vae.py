"""VAE latents, training, the resumable comparison, its statistics and the CLI.

The spherical distributions themselves are tested in test_vae_spherical.py."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose
from scipy import integrate

from weightdist.cli import main
from weightdist.errors import DatasetError
from weightdist.vae.latents import LATENTS


def test_gaussian_monte_carlo_kl_matches_analytic():
    latent = LATENTS.get("gaussian")(4, 8)
    params = (torch.tensor([[0.5, -1.0, 0.0, 2.0]]), torch.tensor([[-1.0, 0.5, 0.0, -2.0]]))
    z = latent.rsample(params, 200_000, torch.Generator().manual_seed(0))
    mc = (latent.log_q(z, params) - latent.log_prior(z)).mean()
    assert_allclose(float(mc), float(latent.kl(params)), rtol=0.02)


def test_mixture_prior_monte_carlo_kl_equals_the_gaussian_kl_when_the_mixture_collapses():
    # Every component at N(0, I): the MoG prior is the standard normal, so the default Monte-Carlo KL
    # path (used by mog and vamp in training) must reproduce the Gaussian's closed form.
    mog = LATENTS.get("mog")(3, 8)
    with torch.no_grad():
        mog.prior_means.zero_()
        mog.prior_log_std.zero_()
    params = (torch.tensor([[0.5, -1.0, 0.3]]), torch.tensor([[-1.0, 0.5, 0.0]]))
    z = mog.rsample(params, 400_000, torch.Generator().manual_seed(0))
    analytic = float(LATENTS.get("gaussian")(3, 8).kl(params))
    assert_allclose(float(mog.kl(params, z)), analytic, rtol=0.01)


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


def test_early_stopping_sets_converged_and_keeps_the_best_epoch(data):
    from weightdist.vae.train import TrainConfig, train_vae

    # No gain can reach min_delta: training stops `patience` epochs after the warm-up, flagged converged.
    trained = train_vae(TrainConfig(prior="gaussian", latent_dim=2, epochs=6, patience=2, min_delta=1e6, train_size=300,
                                    warmup_epochs=1.0), data, log=None)
    assert trained.converged and trained.stop_epoch == 4 < 6
    valid = [h["valid_elbo"] for h in trained.history[1:]]
    assert trained.best_epoch == 2 + int(np.argmax(valid))
    capped = train_vae(TrainConfig(prior="gaussian", latent_dim=2, epochs=2, train_size=300, warmup_epochs=1.0), data, log=None)
    assert not capped.converged and capped.stop_epoch == 2


def test_iwae_increases_with_k(data):
    from weightdist.vae.evaluate import iwae_log_likelihood
    from weightdist.vae.train import TrainConfig, train_vae

    trained = train_vae(TrainConfig(prior="gaussian", latent_dim=5, epochs=1, train_size=3000, warmup_epochs=0.5), data, log=None)
    x = data.test_bin[:100]
    estimates = [iwae_log_likelihood(trained.model, x, k, generator=torch.Generator().manual_seed(0)).mean for k in (1, 10, 100)]
    assert estimates[0] < estimates[1] < estimates[2]
    # K = 1 is the ELBO: the same number as the analytic-KL ELBO up to Monte-Carlo noise.
    from weightdist.vae.evaluate import elbo_terms

    # Both sides are Monte-Carlo estimates (the analytic-KL ELBO still samples z for its reconstruction term),
    # so both are averaged over 20 seeded draws and compared within 4 standard errors of their difference.
    gen = torch.Generator().manual_seed(1)
    repeats = np.array([iwae_log_likelihood(trained.model, x, 1, generator=gen).mean for _ in range(20)])
    elbos = np.array([elbo_terms(trained.model, x, generator=gen)["elbo"] for _ in range(20)])
    se = math.sqrt(repeats.var(ddof=1) / 20 + elbos.var(ddof=1) / 20)
    assert abs(repeats.mean() - elbos.mean()) < 4 * se + 0.1


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


TIMING = ["train_seconds", "seconds_per_epoch", "iwae_seconds"]


def tiny_plan(**kw):
    from weightdist.vae.plan import Plan

    base = dict(priors=("gaussian", "vmf"), dims=(2,), seeds=(0, 1), epochs=2, patience=1, lr_patience=1, k=4,
                test_size=40, train_size=400, warmup_epochs=0.5, fid_n=40)
    return Plan(**{**base, **kw})


def numbers(folder) -> tuple[pd.DataFrame, pd.DataFrame]:
    cells = pd.read_csv(folder / "cells.csv").drop(columns=TIMING)
    summary = pd.read_csv(folder / "results.csv").drop(columns=["seconds_per_epoch", "cost_ratio", "cost_ratio_lo", "cost_ratio_hi"])
    return cells, summary


def test_a_seeded_cell_is_identical_when_rerun(data):
    # Training and evaluation only (the comparison-level version below is slow): the same seed gives the
    # same numbers and arrays whatever the global RNG state; another seed gives other numbers.
    from weightdist.vae.evaluate import evaluate_cell, train_feature_net
    from weightdist.vae.train import train_vae

    net = train_feature_net(data.train[:300], data.train_labels[:300], epochs=1)
    runs = []
    for global_seed, seed in ((1, 0), (2, 0), (1, 5)):
        torch.manual_seed(global_seed)
        trained = train_vae(tiny_plan().train_config("vmf", 2, seed), data, log=None)
        runs.append(evaluate_cell(trained, data, 4, 40, 40, net))
    (row_a, arr_a), (row_b, arr_b), (row_c, _) = runs
    assert {k: v for k, v in row_a.items() if k not in TIMING} == {k: v for k, v in row_b.items() if k not in TIMING}
    assert all(np.array_equal(arr_a[k], arr_b[k]) for k in arr_a)
    assert row_c["test_ll"] != row_a["test_ll"]


@pytest.mark.slow
def test_seeded_cells_give_identical_numbers_twice(data, tmp_path):
    from weightdist.vae.compare import run_comparison

    plan = tiny_plan(priors=("gaussian", "power_spherical"), seeds=(3,))
    for name in ("a", "b"):
        torch.manual_seed(len(name) * 17 + ord(name))  # a different global RNG state must not matter
        run_comparison(plan, tmp_path / name, log=None, progress=False)
    a, b = numbers(tmp_path / "a"), numbers(tmp_path / "b")
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert a[0]["test_ll"].notna().all() and set(a[0]["seed"]) == {3}


@pytest.mark.slow
def test_killed_comparison_resumes_to_the_same_tables(data, tmp_path, monkeypatch):
    from weightdist.vae import experiment
    from weightdist.vae.compare import run_comparison

    plan = tiny_plan()
    run_comparison(plan, tmp_path / "whole", log=None, progress=False)

    real_train, calls = experiment.train_vae, []

    def dies_on_the_third_cell(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill during training would
        return real_train(*args, **kwargs)

    monkeypatch.setattr(experiment, "train_vae", dies_on_the_third_cell)
    with pytest.raises(KeyboardInterrupt):
        run_comparison(plan, tmp_path / "killed", log=None, progress=False)
    report = (tmp_path / "killed" / "report.md").read_text()
    assert report.startswith("# weightdist") and "2 of 4 cells done" in report
    assert len(list((tmp_path / "killed" / "cells").glob("*.json"))) == 2

    calls.clear()
    lines = []
    run_comparison(plan, tmp_path / "killed", log=lines.append, progress=False)
    assert len(calls) == 2 and any("resuming: 2 of 4 cells cached" in line for line in lines)
    whole, resumed = numbers(tmp_path / "whole"), numbers(tmp_path / "killed")
    pd.testing.assert_frame_equal(whole[0], resumed[0])
    pd.testing.assert_frame_equal(whole[1], resumed[1])
    # A different plan never reuses those cells: another epoch cap is another key.
    assert tiny_plan().cell_key("gaussian", 2, 0) != tiny_plan(epochs=3).cell_key("gaussian", 2, 0)


def hand_made_cells() -> pd.DataFrame:
    """Three seeds at two dimensions with known differences against the baseline."""
    rows = []
    base = {0: -100.0, 1: -101.0, 2: -99.5}
    shift = {("vmf", 2): [3.0, 2.5, 3.4], ("vmf", 10): [-1.0, 1.2, 0.1], ("power_spherical", 2): [-2.0, -2.4, -1.9],
             ("power_spherical", 10): [0.3, -0.2, 0.4]}
    for dim in (2, 10):
        for seed in range(3):
            common = {"latent_dim": dim, "seed": seed, "elbo": 0.0, "kl": 0.0, "active_units": 2, "code_dim": 3,
                      "frechet": 1.0, "stop_epoch": 10, "converged": seed != 2, "test_ll_se": 0.5}
            rows.append({"prior": "gaussian", "test_ll": base[seed], "seconds_per_epoch": 1.0, **common})
            for prior in ("vmf", "power_spherical"):
                rows.append({"prior": prior, "test_ll": base[seed] + shift[(prior, dim)][seed],
                             "seconds_per_epoch": 2.0 + 0.1 * seed if prior == "vmf" else 1.0 + 0.3 * (seed - 1), **common})
    return pd.DataFrame(rows)


def test_paired_intervals_and_verdicts_on_a_hand_made_table():
    from scipy import stats

    from weightdist.vae.claims import claim_verdicts, summarise

    cells = hand_made_cells()
    summary = summarise(cells).set_index(["prior", "latent_dim"])
    for (prior, dim), row in summary.drop(index="gaussian", level=0).iterrows():
        a = cells[(cells.prior == prior) & (cells.latent_dim == dim)].sort_values("seed")["test_ll"].to_numpy()
        b = cells[(cells.prior == "gaussian") & (cells.latent_dim == dim)].sort_values("seed")["test_ll"].to_numpy()
        ci = stats.ttest_rel(a, b).confidence_interval(0.95)
        assert_allclose([row.ll_vs_baseline, row.ll_vs_baseline_lo, row.ll_vs_baseline_hi], [(a - b).mean(), ci.low, ci.high])
        assert_allclose(row.test_ll_seed_se, stats.sem(a))
        assert row.capped == 1 and row.seeds == 3 and row.iwae_se == 0.5
    assert summary.loc[("vmf", 2), "verdict"] == "supported"
    assert summary.loc[("vmf", 10), "verdict"] == "not resolved at this budget"
    assert summary.loc[("power_spherical", 2), "verdict"] == "contradicted"
    verdicts = claim_verdicts(summary.reset_index())
    assert verdicts["vmf beats gaussian"] == "supported at d=2; not resolved at this budget at d=10"
    assert verdicts["power_spherical beats gaussian"] == "contradicted at d=2; not resolved at this budget at d=10"
    assert verdicts["analytic KL (gaussian)"] == "supported for vmf; not resolved at this budget for power_spherical"
    assert verdicts["AE + density needs exponentially many samples"] == "not tested"


def test_claim_verdicts_read_an_old_single_seed_results_table():
    # reports/vae/results.csv from before seeds: no interval columns, so nothing is resolved.
    from weightdist.vae.claims import claim_verdicts

    old = pd.DataFrame([{"prior": p, "latent_dim": 2, "test_ll": -100.0, "seconds_per_epoch": 1.0} for p in ("gaussian", "vmf")])
    verdicts = claim_verdicts(old)
    assert verdicts["vmf beats gaussian"] == "not resolved at this budget"


def test_idx_pair_by_path(tmp_path):
    from weightdist.data import load_images

    def idx(path, array):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
        path.write_bytes(header + array.astype(np.uint8).tobytes())
        return str(path)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 28, 28))
    labels = rng.integers(0, 10, 30)
    files = (idx(tmp_path / "a", images), idx(tmp_path / "b", labels), idx(tmp_path / "c", images[:7]), idx(tmp_path / "d", labels[:7]))
    train, test = load_images(idx_files=files)
    assert np.array_equal(train.images, images) and np.array_equal(test.labels, labels[:7])
    with pytest.raises(DatasetError, match="28x28"):
        load_images(idx_files=(idx(tmp_path / "e", images[:, :20]), files[1], files[2], files[3]))
    with pytest.raises(DatasetError, match="30 images but"):
        load_images(idx_files=(files[0], files[3], files[2], files[3]))


def test_cli_compare_end_to_end_tiny(data, tmp_path):
    out = tmp_path / "vae"
    argv = ["vae", "compare", "--quick", "--priors", "gaussian,vmf,ae", "--latent-dims", "2", "--seeds", "0", "--epochs", "1",
            "--k", "4", "--test-size", "40", "--train-size", "400", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    results = pd.read_csv(out / "results.csv")
    assert list(results["prior"]) == ["gaussian", "vmf", "ae"]
    assert {"test_ll", "test_ll_seed_se", "iwae_se", "ll_vs_baseline_lo", "verdict", "active_units", "capped"} <= set(results.columns)
    report = (out / "report.md").read_text()
    assert "Generated by `weightdist vae compare --quick" in report and "not comparable to Inception FID" in report
    assert "hit the epoch cap" in report
    for fig in ("samples.png", "reconstructions.png", "latent_2d.png", "ll_vs_dim.png"):
        assert (out / fig).is_file(), fig


def test_cli_train_writes_checkpoint_and_config(data, tmp_path):
    out = tmp_path / "ckpt"
    assert main(["vae", "train", "--prior", "power_spherical", "--latent-dim", "2", "--epochs", "1", "--train-size", "500",
                 "--out", str(out), "--quiet"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


def test_user_errors_are_one_line_before_any_training(tmp_path, capsys):
    assert main(["vae", "train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err
    assert main(["vae", "compare", "--priors", "gaussian,wishart", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "unknown prior(s) wishart" in err and err.count("\n") == 1
    assert main(["vae", "compare", "--latent-dims", "0,2", "--out", str(tmp_path / "o")]) == 2
    assert "--latent-dims must be positive" in capsys.readouterr().err
    assert main(["vae", "compare", "--seeds", "1,1", "--out", str(tmp_path / "o")]) == 2
    assert "--seeds must be distinct" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["vae", "train", "--latent-dim", "2", "--out", str(blocker / "sub")]) == 2
    assert "choose another --out" in capsys.readouterr().err
    assert main(["vae", "train", "--latent-dim", "0", "--out", str(tmp_path / "z")]) == 2
    assert "latent-dim must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "z").exists()
