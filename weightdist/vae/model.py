"""The VAE network shared by every latent family: same MLP trunk, same decoder, Bernoulli pixels."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .latents import LATENTS, VampLatent

PIXELS = 784
HIDDEN = (512, 256)


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class LossTerms:
    recon: torch.Tensor  # log p(x|z) per example (one sample)
    kl: torch.Tensor  # KL(q ‖ p) per example (analytic or single-sample MC)

    @property
    def elbo(self) -> torch.Tensor:
        return self.recon - self.kl


def reset_parameters(module: nn.Module, generator: torch.Generator | None) -> None:
    """torch's default ``nn.Linear`` initialisation, drawn from ``generator`` (no global RNG)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_uniform_(layer.weight, a=5 ** 0.5, generator=generator)
            bound = 1 / layer.in_features ** 0.5
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class VAE(nn.Module):
    def __init__(self, prior: str, latent_dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.prior, self.latent_dim = prior, latent_dim
        self.encoder = nn.Sequential(mlp((PIXELS, *HIDDEN)), nn.ReLU())
        latent_cls = LATENTS.get(prior)  # an unknown name is an UnknownNameError, as everywhere
        self.latent = latent_cls(latent_dim, HIDDEN[-1])
        if isinstance(self.latent, VampLatent):
            self.latent.bind_encoder(self.encoder)
        self.decoder = mlp((self.latent.code_dim, *reversed(HIDDEN), PIXELS))
        reset_parameters(self, generator)
        self.latent.reset_parameters(generator)

    def posterior(self, x: torch.Tensor):
        return self.latent.posterior(self.encoder(x))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) under independent Bernoulli pixels; z may carry leading sample dims."""
        logits = self.decoder(z)
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> LossTerms:
        params = self.posterior(x)
        z = self.latent.rsample(params, 1, generator)
        return LossTerms(self.log_likelihood(x, z[0]), self.latent.kl(params, z))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
