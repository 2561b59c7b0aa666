"""`weightdist vae compare`: every latent family trained the same way, measured side by side."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import atomic
from ..errors import WeightdistError
from ..report import csv_bytes, markdown_table
from .density import fit_density, heldout_curve
from .evaluate import active_units, elbo_terms, frechet_distance, iwae_log_likelihood, posterior_means, train_feature_net
from .latents import LATENTS
from .train import Data, TrainConfig, load_data, train_vae


@dataclass(frozen=True)
class Plan:
    priors: tuple[str, ...] = ("gaussian", "vmf", "power_spherical", "mog", "vamp", "ae")
    dims: tuple[int, ...] = (2, 5, 10, 20)
    epochs: int = 20
    k: int = 500  # importance samples for the test log-likelihood
    test_size: int = 1000  # first N test images (fixed binarisation)
    train_size: int | None = None
    warmup_epochs: float = 5.0
    patience: int = 5
    fid_n: int = 2000
    sweep_dims: tuple[int, ...] = (2, 4, 8, 16, 32)
    sweep_sizes: tuple[int, ...] = (500, 2000, 10000, 50000)
    sweep_epochs: int = 5
    seed: int = 0
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    quick: bool = False

    def __post_init__(self) -> None:
        unknown = [p for p in self.priors if p not in LATENTS]
        if unknown:
            raise WeightdistError(f"unknown prior(s) {', '.join(unknown)}; choose from {', '.join(LATENTS)}")
        if not self.dims or min(self.dims) < 1:
            raise WeightdistError(f"--latent-dims must be positive integers, got {self.dims}")


QUICK = dict(dims=(2, 5), epochs=3, k=100, test_size=500, train_size=10000, warmup_epochs=1.0, fid_n=500,
             sweep_dims=(2, 8, 32), sweep_sizes=(200, 1000, 5000), sweep_epochs=1, quick=True)


def _ae_proposal(density, spread: np.ndarray) -> Callable:
    """Importance sampler for the autoencoder: N(code, (0.1·std of codes)²) and the fitted code density."""
    scale = torch.from_numpy(0.1 * spread)

    def proposal(model, x, k):
        code = model.latent.mean(model.posterior(x)).double()
        z = code + scale * torch.randn(k, *code.shape, dtype=torch.float64)
        log_q = torch.distributions.Normal(code, scale).log_prob(z).sum(-1)
        log_p = torch.from_numpy(density.log_density(z.reshape(-1, z.shape[-1]).numpy()).reshape(z.shape[:-1]))
        return z.float(), log_q, log_p

    return proposal


def evaluate_run(trained, data: Data, plan: Plan, feature_net) -> tuple[dict, dict]:
    """The results row plus arrays kept for figures (samples, reconstructions, codes)."""
    model = trained.model
    x_test = data.test_bin[: plan.test_size]
    means = posterior_means(model, x_test)
    torch.manual_seed(plan.seed)
    row = {"prior": model.prior, "latent_dim": model.latent_dim, "code_dim": model.latent.code_dim,
           "params": trained.params, "epochs_run": len(trained.history), "best_epoch": trained.best_epoch,
           "train_seconds": round(trained.seconds, 1), "kl_estimate": "analytic" if model.latent.kl_is_analytic else "monte-carlo",
           "iwae_k": plan.k, "test_images": len(x_test)}
    with torch.no_grad():
        if model.latent.deterministic:
            train_codes = posterior_means(model, torch.bernoulli(data.train[:20000], generator=torch.Generator().manual_seed(7)))
            density = fit_density(train_codes, "gmm", plan.seed)
            ll = iwae_log_likelihood(model, x_test, plan.k, proposal=_ae_proposal(density, train_codes.std(0)))
            recon = float(model.log_likelihood(x_test, torch.from_numpy(means).float()).double().mean())
            row.update(test_ll=ll.mean, test_ll_se=ll.se, elbo=math.nan, recon=recon, kl=math.nan, kl_estimate="none (GMM on codes)")
            samples = model.decode_mean(torch.from_numpy(density.sample(plan.fid_n, plan.seed)).float())
        else:
            ll = iwae_log_likelihood(model, x_test, plan.k)
            row.update(test_ll=ll.mean, test_ll_se=ll.se, **elbo_terms(model, x_test))
            samples = model.decode_mean(model.latent.sample_prior(plan.fid_n))
        recons = model.decode_mean(torch.from_numpy(means[:8]).float())
    row["active_units"] = active_units(means)
    row["frechet"] = frechet_distance(feature_net, data.test[: plan.fid_n], samples)
    row["sampler_failures"] = getattr(model.latent, "sampler_failures", 0)
    return row, {"samples": samples[:32].numpy(), "recons": recons.numpy(), "means": means, "ll": ll.values}


def latent_fit_rows(prior: str, dim: int, means: np.ndarray) -> list[dict]:
    """Tie to the weights half: are the encoder means Gaussian? Same fitting engine, per dimension and pooled."""
    from ..fitting import fit

    rows = []
    columns = [(f"dim{j}", means[:, j]) for j in range(means.shape[1])] + [("pooled", means.ravel())]
    for name, values in columns:
        result = fit(values)
        if not result.ok:
            continue
        row = {"prior": prior, "latent_dim": dim, "coordinate": name, "best": result.best}
        for fam, f in result.fits.items():
            row[f"aic_{fam}"] = f.aic
        row["beta"] = result.fits["gennorm"].params["beta"] if "gennorm" in result.fits else math.nan
        row["df"] = result.fits["student_t"].params["df"] if "student_t" in result.fits else math.nan
        rows.append(row)
    return rows


def paired_difference(keep: dict, prior: str, dim: int, baseline: str = "gaussian") -> tuple[float, float]:
    """Mean and standard error of (test log-likelihood − baseline's) over the same test images."""
    if (baseline, dim) not in keep:
        return math.nan, math.nan
    diff = keep[(prior, dim)]["ll"] - keep[(baseline, dim)]["ll"]
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else math.nan


def density_sweep(data: Data, plan: Plan, log) -> pd.DataFrame:
    """Curse of dimensionality for the `ae` baseline: train an AE per dimension, then fit GMM and
    KDE on growing numbers of training codes and score held-out codes."""
    rows = []
    for dim in plan.sweep_dims:
        cfg = TrainConfig(prior="ae", latent_dim=dim, epochs=plan.sweep_epochs, seed=plan.seed, train_size=plan.train_size,
                          warmup_epochs=plan.warmup_epochs, patience=plan.patience)
        trained = train_vae(cfg, data, log=log)
        gen = torch.Generator().manual_seed(11)
        train_codes = posterior_means(trained.model, torch.bernoulli(data.train[: max(plan.sweep_sizes)], generator=gen))
        test_codes = posterior_means(trained.model, data.test_bin[: plan.test_size])
        rows += heldout_curve(train_codes, test_codes, plan.sweep_sizes, plan.seed)
    return pd.DataFrame(rows)


# --- figures ---------------------------------------------------------------------------------------


def _grid(images: np.ndarray, cols: int = 8) -> np.ndarray:
    n = len(images)
    rows = math.ceil(n / cols)
    canvas = np.ones((rows * 29, cols * 29))
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * 29 : r * 29 + 28, c * 29 : c * 29 + 28] = img.reshape(28, 28)
    return canvas


def _image_figure(panels: dict[str, np.ndarray], title: str):
    from ..plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0))
    for ax, (name, images) in zip(np.atleast_1d(axes), panels.items()):
        ax.imshow(_grid(images), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _scatter_figure(codes: dict[str, np.ndarray], labels: np.ndarray):
    from ..plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, len(codes), figsize=(2.8 * len(codes), 2.9))
    for ax, (name, z) in zip(np.atleast_1d(axes), codes.items()):
        if z.shape[1] == 3:  # S² in R³: longitude and latitude
            x, y = np.arctan2(z[:, 1], z[:, 0]), np.arcsin(np.clip(z[:, 2], -1, 1))
        else:
            x, y = z[:, 0], z[:, 1]
        ax.scatter(x, y, c=labels[: len(z)], cmap="tab10", s=2, alpha=0.7)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("2-D latent codes (posterior means) coloured by class; spheres as longitude/latitude", fontsize=9)
    fig.tight_layout()
    return fig


def _ll_figure(results: pd.DataFrame):
    from ..plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for prior, rows in results.groupby("prior", sort=False):
        ax.errorbar(rows["latent_dim"], rows["test_ll"], yerr=2 * rows["test_ll_se"], marker="o", ms=4, capsize=2, label=prior)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("latent (manifold) dimension d")
    ax.set_ylabel("test log-likelihood (nats, IWAE)")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _density_figure(sweep: pd.DataFrame):
    from ..plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for (method, dim), rows in sweep.groupby(["method", "latent_dim"]):
        ax.plot(rows["n_train"], rows["heldout_logdensity_per_dim"], "o-" if method == "gmm" else "s--", ms=3,
                label=f"{method.upper()} d={dim}")
    ax.set_xscale("log")
    ax.set_xlabel("training codes n")
    ax.set_ylabel("held-out log-density per dimension")
    ax.legend(fontsize=7, frameon=False, ncol=2)
    fig.tight_layout()
    return fig


# --- claims ----------------------------------------------------------------------------------------


def _versus(results: pd.DataFrame, a: str, dims: Sequence[int]) -> list[str]:
    """a − gaussian test log-likelihood per dimension, paired over the same test images (±2 SE)."""
    parts = []
    for d in dims:
        row = results[(results["prior"] == a) & (results["latent_dim"] == d)]
        if row.empty or math.isnan(row["ll_vs_gaussian"].iloc[0]):
            continue
        diff, se = float(row["ll_vs_gaussian"].iloc[0]), float(row["ll_vs_gaussian_se"].iloc[0])
        verdict = "better" if diff > 2 * se else ("worse" if diff < -2 * se else "tied")
        parts.append(f"d={d}: {diff:+.2f} ± {2 * se:.2f} nats ({verdict})")
    return parts


def claims_markdown(results: pd.DataFrame, sweep: pd.DataFrame) -> list[str]:
    dims = sorted(results["latent_dim"].unique())
    lines = ["## The four claims, against these numbers", ""]
    per_epoch = results.assign(per_epoch=results["train_seconds"] / results["epochs_run"]).groupby("prior")["per_epoch"].mean()
    fails = int(results.loc[results["prior"] == "vmf", "sampler_failures"].sum()) if "vmf" in set(results["prior"]) else 0
    if {"gaussian", "vmf"} <= set(per_epoch.index):
        lines.append(f"1. **Analytic KL, easy reparameterisation (Gaussian).** Training cost per epoch: gaussian "
                     f"{per_epoch['gaussian']:.1f}s, vmf {per_epoch['vmf']:.1f}s (rejection sampler, Bessel functions; "
                     f"{fails} sampler failures), power_spherical {per_epoch.get('power_spherical', math.nan):.1f}s. "
                     "The Gaussian needs no special functions and no rejection step: supported, as a matter of cost.")
    if {"gaussian", "vmf"} <= set(results["prior"]):
        lines.append("2. **vMF better at low dimension** (vmf − gaussian test log-likelihood, paired over test images, ±2 SE): "
                     + "; ".join(_versus(results, "vmf", dims)) + ".")
    if "power_spherical" in set(results["prior"]):
        lines.append("   Power Spherical − gaussian: " + "; ".join(_versus(results, "power_spherical", dims)) + ".")
    if {"gaussian", "mog"} <= set(results["prior"]):
        lines.append("3. **Mixture priors help on clustered data** (mog − gaussian): " + "; ".join(_versus(results, "mog", dims))
                     + ". VampPrior − gaussian: " + "; ".join(_versus(results, "vamp", dims)) + ".")
    if not sweep.empty:
        top = sweep["n_train"].max()
        gap = sweep[sweep["n_train"] == top].pivot(index="latent_dim", columns="method", values="heldout_logdensity_per_dim")
        lo = sweep["n_train"].min()
        gain = (sweep[sweep["n_train"] == top].set_index(["latent_dim", "method"])["heldout_logdensity_per_dim"]
                - sweep[sweep["n_train"] == lo].set_index(["latent_dim", "method"])["heldout_logdensity_per_dim"])
        kde_gain = gain.xs("kde", level="method")
        lines.append(f"4. **AE + density estimation suffers with dimension.** KDE − GMM held-out log-density per dimension at "
                     f"n={top}: " + ", ".join(f"d={d}: {gap.loc[d, 'kde'] - gap.loc[d, 'gmm']:+.2f}" for d in gap.index)
                     + f". KDE gain per dimension from n={lo} to n={top}: "
                     + ", ".join(f"d={d}: {v:+.2f}" for d, v in kde_gain.items())
                     + ". A shrinking gain and a widening gap as d grows is the curse of dimensionality.")
    return lines


def report_markdown(plan: Plan, results: pd.DataFrame, latent_fits: pd.DataFrame, sweep: pd.DataFrame,
                    figures: list[str], command: str, seconds: float) -> str:
    cols = ["prior", "latent_dim", "test_ll", "test_ll_se", "ll_vs_gaussian", "ll_vs_gaussian_se", "elbo", "recon", "kl", "active_units", "frechet", "params", "train_seconds"]
    pooled = latent_fits[latent_fits["coordinate"] == "pooled"][["prior", "latent_dim", "best", "beta", "df"]] if not latent_fits.empty else latent_fits
    parts = [
        "# weightdist vae compare: which latent prior?", "", f"Generated by `{command}`", "",
        f"Fashion-MNIST ({plan.dataset}), binarised pixels (dynamic binarisation for training; one fixed binarisation "
        f"of the validation and test sets). Same MLP encoder trunk (784-512-256) and decoder, Adam lr 1e-3, up to "
        f"{plan.epochs} epochs with a {plan.warmup_epochs:g}-epoch KL warm-up and early stopping on validation ELBO "
        f"(patience {plan.patience}), seed {plan.seed}, for every prior. Latent dimension d is the manifold dimension: "
        f"the spherical priors live on S^d ⊂ R^(d+1). Test log-likelihood: IWAE with K={plan.k} on the first "
        f"{plan.test_size} test images (float64 log-weights; ± is one standard error over images). "
        "`frechet` is the Fréchet distance in the feature space of a small classifier trained here on the same data: "
        "not comparable to Inception FID. `ae`: plain autoencoder, test_ll by importance sampling with a GMM fitted on "
        "its codes as the prior. mog and vamp KLs are single-sample Monte-Carlo estimates." + (
            " **Quick preset: a small real run (few epochs, K and test subset reduced); numbers are not converged.**" if plan.quick else ""),
        "", f"Total run time: {seconds / 60:.1f} min.", "", "## Results", "", markdown_table(results[cols]), "",
        *claims_markdown(results, sweep), "",
        "## Are the latent codes Gaussian? (the weights half's fitting engine on the encoder means)", "",
        "Pooled over all coordinates of the aggregate posterior; per-coordinate fits are in `latent_fits.csv`.", "",
        markdown_table(pooled) if not pooled.empty else "(no fits)", "",
        "## Figures", "",
    ]
    parts += [f"![{f}]({f})" for f in figures]
    return "\n".join(parts) + "\n"


def run_comparison(plan: Plan, out: str | Path, command: str = "", log=print, progress: bool = True) -> pd.DataFrame:
    out = atomic.check_writable_dir(out)  # before any training
    start = time.perf_counter()
    torch.manual_seed(plan.seed)
    data = load_data(plan.dataset, plan.data_dir, plan.seed)
    feature_net = train_feature_net(data.train[:20000], data.train_labels[:20000], seed=plan.seed)
    rows, keep, fits = [], {}, []
    for dim in plan.dims:
        for prior in plan.priors:
            cfg = TrainConfig(prior=prior, latent_dim=dim, epochs=plan.epochs, seed=plan.seed, train_size=plan.train_size,
                              warmup_epochs=plan.warmup_epochs, patience=plan.patience, dataset=plan.dataset, data_dir=plan.data_dir)
            trained = train_vae(cfg, data, log=log, progress=progress)
            row, arrays = evaluate_run(trained, data, plan, feature_net)
            log(f"[{prior} d={dim}] test_ll {row['test_ll']:.2f} ± {row['test_ll_se']:.2f}, active units {row['active_units']}, "
                f"frechet {row['frechet']:.2f}, {row['train_seconds']:.0f}s")
            rows.append(row)
            keep[(prior, dim)] = arrays
            fits += latent_fit_rows(prior, dim, arrays["means"])
    results = pd.DataFrame(rows)
    results["ll_vs_gaussian"], results["ll_vs_gaussian_se"] = zip(*[paired_difference(keep, r.prior, r.latent_dim) for r in results.itertuples()])
    sweep = density_sweep(data, plan, log) if "ae" in plan.priors else pd.DataFrame()
    latent_fits = pd.DataFrame(fits)
    seconds = time.perf_counter() - start
    from ..plots import save_figure

    show_dim = 10 if 10 in plan.dims else max(plan.dims)
    with atomic.staged_dir(out) as stage:
        figures = []
        save_figure(_image_figure({p: keep[(p, show_dim)]["samples"] for p in plan.priors}, f"prior samples, d={show_dim}"), stage / "samples.png")
        real = data.test[:8].numpy()
        save_figure(_image_figure({"data": real, **{p: keep[(p, show_dim)]["recons"] for p in plan.priors}},
                                  f"reconstructions (posterior mean), d={show_dim}"), stage / "reconstructions.png")
        figures += ["samples.png", "reconstructions.png"]
        if 2 in plan.dims:
            save_figure(_scatter_figure({p: keep[(p, 2)]["means"] for p in plan.priors}, data.test_labels.numpy()), stage / "latent_2d.png")
            figures.append("latent_2d.png")
        save_figure(_ll_figure(results), stage / "ll_vs_dim.png")
        figures.append("ll_vs_dim.png")
        if not sweep.empty:
            save_figure(_density_figure(sweep), stage / "ae_density.png")
            figures.append("ae_density.png")
            atomic.write_bytes(stage / "density_sweep.csv", csv_bytes(sweep))
        atomic.write_bytes(stage / "results.csv", csv_bytes(results))
        atomic.write_bytes(stage / "latent_fits.csv", csv_bytes(latent_fits))
        atomic.write_text(stage / "plan.json", json.dumps({**dataclasses.asdict(plan), "seconds": round(seconds, 1)}, indent=2) + "\n")
        atomic.write_text(stage / "report.md", report_markdown(plan, results, latent_fits, sweep, figures,
                                                               command or "weightdist vae compare", seconds))
    return results
