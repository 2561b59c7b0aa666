"""Test log-likelihood (IWAE, float64), ELBO terms, active units, and an offline Fréchet distance."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg
from torch import nn

from .model import VAE


@dataclass(frozen=True)
class Estimate:
    mean: float
    se: float
    values: np.ndarray  # per test image, so two models can be compared pairwise


def _stats(values: np.ndarray) -> Estimate:
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return Estimate(float(values.mean()), se, values)


@torch.no_grad()
def iwae_log_likelihood(model: VAE, x_bin: torch.Tensor, k: int, batch: int = 20, proposal=None,
                        generator: torch.Generator | None = None) -> Estimate:
    """log p(x) ≈ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(·|x), per test image.

    Batched over B images × K samples; the log-weights are accumulated in float64.
    ``proposal`` replaces (q, log p) for the deterministic autoencoder: a Gaussian around
    the code and the density fitted on the codes. ``se`` is the standard error over images (the
    spread of log p(x) across the test set), not a seed-to-seed spread.
    """
    out = []
    for i in range(0, len(x_bin), batch):
        x = x_bin[i : i + batch]
        if proposal is None:
            params = model.posterior(x)
            z = model.latent.rsample(params, k, generator)
            log_w = (model.log_likelihood(x, z).double() + model.latent.log_prior(z).double()
                     - model.latent.log_q(z, params).double())
        else:
            z, log_q, log_p = proposal(model, x, k, generator)
            log_w = model.log_likelihood(x, z).double() + log_p - log_q
        out.append((torch.logsumexp(log_w, dim=0) - math.log(k)).numpy())
    return _stats(np.concatenate(out))


@torch.no_grad()
def elbo_terms(model: VAE, x_bin: torch.Tensor, batch: int = 1000, generator: torch.Generator | None = None) -> dict[str, float]:
    recon, kl = [], []
    for i in range(0, len(x_bin), batch):
        terms = model.terms(x_bin[i : i + batch], generator)
        recon.append(terms.recon.double().numpy())
        kl.append(terms.kl.double().numpy())
    r, k = np.concatenate(recon), np.concatenate(kl)
    return {"elbo": float((r - k).mean()), "recon": float(r.mean()), "kl": float(k.mean())}


@torch.no_grad()
def posterior_means(model: VAE, x: torch.Tensor, batch: int = 2000) -> np.ndarray:
    """E_q[z|x] per image (for spherical posteriors A(κ)·μ, inside the ball): defines active units."""
    return np.concatenate([model.latent.posterior_mean(model.posterior(x[i : i + batch])).double().numpy()
                           for i in range(0, len(x), batch)])


@torch.no_grad()
def posterior_locations(model: VAE, x: torch.Tensor, batch: int = 2000) -> np.ndarray:
    """The posterior's location (mean, or mean direction on the sphere; the code for the autoencoder)."""
    return np.concatenate([model.latent.location(model.posterior(x[i : i + batch])).double().numpy()
                           for i in range(0, len(x), batch)])


ACTIVE_THRESHOLD = 0.01


def active_units(means: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> int:
    """Coordinates whose posterior mean varies across data (Burda et al. 2016): Var_x E_q[z_u] > threshold.

    One definition for every family: ``means`` are E_q[z] (spherical: A(κ)μ, not the unit direction)."""
    return int((means.var(axis=0) > threshold).sum())


class FeatureNet(nn.Module):
    """A small classifier trained on the same data; its penultimate layer is the feature space."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.features(x))


def train_feature_net(images: torch.Tensor, labels: torch.Tensor, epochs: int = 3, seed: int = 0) -> FeatureNet:
    from .model import reset_parameters

    gen = torch.Generator().manual_seed(seed)
    net = FeatureNet()
    reset_parameters(net, gen)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for i in range(0, len(order), 256):
            idx = order[i : i + 256]
            loss = nn.functional.cross_entropy(net(images[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def frechet_distance(net: FeatureNet, real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to classifier features. Not comparable to Inception FID."""
    a, b = net.features(real).double().numpy(), net.features(fake).double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ridge = 1e-6 * np.eye(a.shape[1])  # dead ReLU features make the covariances singular
    cov_a, cov_b = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    covmean = linalg.sqrtm(cov_a @ cov_b)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


# --- one cell: a trained model measured on the test set ----------------------------------------------


def _ae_proposal(density, scale: np.ndarray):
    """Importance sampler for the autoencoder: N(code, scale²) around the code, and the density fitted
    on the training codes as p(z)."""
    scale = torch.from_numpy(np.asarray(scale, dtype=np.float64))

    def proposal(model, x, k, generator=None):
        code = model.latent.location(model.posterior(x)).double()
        z = code + scale * torch.randn(k, *code.shape, dtype=torch.float64, generator=generator)
        log_q = torch.distributions.Normal(code, scale).log_prob(z).sum(-1)
        log_p = torch.from_numpy(density.log_density(z.reshape(-1, z.shape[-1]).numpy()).reshape(z.shape[:-1]))
        return z.float(), log_q, log_p

    return proposal


AE_PROPOSAL_SCALES = (0.01, 0.03, 0.1, 0.3)


def tune_ae_proposal(model, density, spread: np.ndarray, x_valid: torch.Tensor, k: int, seed: int):
    """Pick the proposal width (a fraction of the codes' spread) with the highest IWAE bound on
    validation images. Every width gives a valid stochastic lower bound, so choosing on held-out
    validation data (never the test set) only tightens the bound."""
    best = (-math.inf, AE_PROPOSAL_SCALES[0])
    for frac in AE_PROPOSAL_SCALES:
        gen = torch.Generator().manual_seed(seed)
        est = iwae_log_likelihood(model, x_valid, k, proposal=_ae_proposal(density, frac * spread), generator=gen).mean
        best = max(best, (est, frac))
    return best[1], _ae_proposal(density, best[1] * spread)


EVAL_SEED_OFFSET = 100_003  # evaluation draws use seed + this, apart from the training stream


def evaluate_cell(trained, data, k: int, test_size: int | None, fid_n: int, feature_net: FeatureNet) -> tuple[dict, dict]:
    """The cell's row (numbers only) plus arrays kept for the figures and the paired statistics."""
    from .density import fit_density

    model, config = trained.model, trained.config
    seed = config.seed + EVAL_SEED_OFFSET
    gen = torch.Generator().manual_seed(seed)
    x_test = data.test_bin[:test_size] if test_size else data.test_bin
    means = posterior_means(model, x_test)
    locations = posterior_locations(model, x_test)
    per_epoch = trained.seconds / max(1, len(trained.history))
    row = {"prior": config.prior, "latent_dim": config.latent_dim, "seed": config.seed, "code_dim": model.latent.code_dim,
           "params": trained.params, "epochs_cap": config.epochs, "stop_epoch": trained.stop_epoch,
           "best_epoch": trained.best_epoch, "converged": bool(trained.converged),
           "final_lr": trained.history[-1]["lr"] if trained.history else math.nan,
           "train_seconds": round(trained.seconds, 1), "seconds_per_epoch": round(per_epoch, 3),
           "kl_estimate": "analytic" if model.latent.kl_is_analytic else "monte-carlo (1 sample)",
           "iwae_k": k, "test_images": len(x_test)}
    with torch.no_grad():
        if model.latent.deterministic:
            binarise = torch.Generator().manual_seed(seed)
            train_codes = posterior_locations(model, torch.bernoulli(data.train[:20000], generator=binarise))
            gmm, kde = fit_density(train_codes, "gmm", config.seed), fit_density(train_codes, "kde", config.seed)
            frac, proposal = tune_ae_proposal(model, gmm, train_codes.std(0), data.valid_bin[:100], min(k, 100), seed)
            start = time.perf_counter()
            ll = iwae_log_likelihood(model, x_test, k, proposal=proposal, generator=gen)
            recon = float(model.log_likelihood(x_test, torch.from_numpy(locations).float()).double().mean())
            row.update(test_ll=ll.mean, test_ll_se=ll.se, elbo=math.nan, recon=recon, kl=math.nan,
                       kl_estimate=f"none (GMM on codes; proposal N(code, ({frac:g}·code sd)²))",
                       code_ll_gmm=float(gmm.log_density(locations).mean()),
                       code_ll_kde=float(kde.log_density(locations).mean()))
            samples = model.decode_mean(torch.from_numpy(gmm.sample(fid_n, config.seed)).float())
        else:
            start = time.perf_counter()
            ll = iwae_log_likelihood(model, x_test, k, generator=gen)
            row.update(test_ll=ll.mean, test_ll_se=ll.se, **elbo_terms(model, x_test, generator=gen))
            samples = model.decode_mean(model.latent.sample_prior(fid_n, gen))
        row["iwae_seconds"] = round(time.perf_counter() - start, 1)
        recons = model.decode_mean(torch.from_numpy(locations[:8]).float())
    row["active_units"] = active_units(means)
    row["frechet"] = frechet_distance(feature_net, data.test[:fid_n], samples)
    # Kept small (the cells are committed with the report): 8-bit image grids, and 2-D codes only where figures use them.
    arrays = {"samples": _to_uint8(samples[:32]), "recons": _to_uint8(recons),
              "locations": locations[:2000].astype(np.float32) if model.latent.code_dim <= 3
              else np.zeros((0, model.latent.code_dim), np.float32)}
    return row, arrays


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return np.round(images.double().numpy() * 255).astype(np.uint8)
