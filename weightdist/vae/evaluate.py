"""Test log-likelihood (IWAE, float64), ELBO terms, active units, and an offline Fréchet distance."""
from __future__ import annotations

import math
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
def iwae_log_likelihood(model: VAE, x_bin: torch.Tensor, k: int, batch: int = 20, proposal=None) -> Estimate:
    """log p(x) ≈ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(·|x), per test image.

    Batched over B images × K samples; the log-weights are accumulated in float64.
    ``proposal`` replaces (q, log p) for the deterministic autoencoder: a Gaussian around
    the code and the density fitted on the codes.
    """
    out = []
    for i in range(0, len(x_bin), batch):
        x = x_bin[i : i + batch]
        if proposal is None:
            params = model.posterior(x)
            z = model.latent.rsample(params, k)
            log_w = (model.log_likelihood(x, z).double() + model.latent.log_prior(z).double()
                     - model.latent.log_q(z, params).double())
        else:
            z, log_q, log_p = proposal(model, x, k)
            log_w = model.log_likelihood(x, z).double() + log_p - log_q
        out.append((torch.logsumexp(log_w, dim=0) - math.log(k)).numpy())
    return _stats(np.concatenate(out))


@torch.no_grad()
def elbo_terms(model: VAE, x_bin: torch.Tensor, batch: int = 1000) -> dict[str, float]:
    recon, kl = [], []
    for i in range(0, len(x_bin), batch):
        terms = model.terms(x_bin[i : i + batch])
        recon.append(terms.recon.double().numpy())
        kl.append(terms.kl.double().numpy())
    r, k = np.concatenate(recon), np.concatenate(kl)
    return {"elbo": float((r - k).mean()), "recon": float(r.mean()), "kl": float(k.mean())}


@torch.no_grad()
def posterior_means(model: VAE, x: torch.Tensor, batch: int = 2000) -> np.ndarray:
    return np.concatenate([model.latent.mean(model.posterior(x[i : i + batch])).double().numpy()
                           for i in range(0, len(x), batch)])


def active_units(means: np.ndarray, threshold: float = 0.01) -> int:
    """Units whose posterior mean varies across data (Burda et al. 2016): Var_x E_q[z_u] > 0.01."""
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
    torch.manual_seed(seed)
    net = FeatureNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
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
