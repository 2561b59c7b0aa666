"""Latent families for the VAE: posterior, prior, sampling and KL, one registered class each.

Every family turns the encoder trunk's features into posterior parameters and
answers the same five questions, so training and evaluation never branch on
the family: ``rsample``, ``log_q``, ``log_prior``, ``kl`` and ``sample_prior``.
``latent_dim`` is the manifold dimension d; spherical families live on S^d ⊂ R^{d+1}.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from ..core.registry import Registry
from . import spherical


class Latent(nn.Module):
    """Base class. ``params`` is whatever ``posterior`` returns (a tuple of tensors)."""

    kl_is_analytic: ClassVar[bool] = True
    deterministic: ClassVar[bool] = False

    def __init__(self, latent_dim: int, features: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    @property
    def code_dim(self) -> int:
        """Size of z as the decoder sees it."""
        return self.latent_dim

    def posterior(self, h: torch.Tensor):
        raise NotImplementedError

    def mean(self, params) -> torch.Tensor:
        """A point summary of q(z|x): for active units and the aggregate posterior."""
        return params[0]

    def rsample(self, params, n: int) -> torch.Tensor:
        raise NotImplementedError

    def log_q(self, z: torch.Tensor, params) -> torch.Tensor:
        raise NotImplementedError

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def kl(self, params, z: torch.Tensor | None = None) -> torch.Tensor:
        """KL(q(z|x) ‖ p(z)) per example; Monte-Carlo from ``z`` when not analytic."""
        return (self.log_q(z, params) - self.log_prior(z)).mean(0)

    def sample_prior(self, n: int) -> torch.Tensor:
        raise NotImplementedError


LATENTS: Registry[type[Latent]] = Registry("latent prior")


def register_latent(name: str):
    def decorator(cls: type[Latent]) -> type[Latent]:
        cls.name = name
        return LATENTS.register(name)(cls)

    return decorator


class _DiagonalGaussianPosterior(Latent):
    def __init__(self, latent_dim: int, features: int) -> None:
        super().__init__(latent_dim, features)
        self.head = nn.Linear(features, 2 * latent_dim)

    def posterior(self, h):
        mu, log_var = self.head(h).chunk(2, dim=-1)
        return mu, log_var.clamp(-12, 8)

    def rsample(self, params, n):
        mu, log_var = params
        return mu + torch.exp(0.5 * log_var) * torch.randn(n, *mu.shape)

    def log_q(self, z, params):
        mu, log_var = params
        return Normal(mu, torch.exp(0.5 * log_var)).log_prob(z).sum(-1)


@register_latent("gaussian")
class GaussianLatent(_DiagonalGaussianPosterior):
    """Diagonal Normal posterior, N(0, I) prior, analytic KL."""

    def log_prior(self, z):
        return Normal(0.0, 1.0).log_prob(z).sum(-1)

    def kl(self, params, z=None):
        mu, log_var = params
        return 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(-1)

    def sample_prior(self, n):
        return torch.randn(n, self.latent_dim)


@register_latent("mog")
class MixtureOfGaussiansLatent(_DiagonalGaussianPosterior):
    """Diagonal Normal posterior, learned K-component Gaussian-mixture prior; KL is a Monte-Carlo estimate."""

    kl_is_analytic = False
    components = 10

    def __init__(self, latent_dim, features):
        super().__init__(latent_dim, features)
        self.prior_means = nn.Parameter(torch.randn(self.components, latent_dim))
        self.prior_log_std = nn.Parameter(torch.zeros(self.components, latent_dim))
        self.prior_logits = nn.Parameter(torch.zeros(self.components))

    def _mixture(self):
        from torch.distributions import Categorical, Independent, MixtureSameFamily

        comp = Independent(Normal(self.prior_means, self.prior_log_std.clamp(-6, 3).exp()), 1)
        return MixtureSameFamily(Categorical(logits=self.prior_logits), comp)

    def log_prior(self, z):
        return self._mixture().log_prob(z)

    def sample_prior(self, n):
        return self._mixture().sample((n,))


@register_latent("vamp")
class VampLatent(_DiagonalGaussianPosterior):
    """VampPrior (Tomczak & Welling 2018): p(z) = mean_k q(z | u_k) over learned pseudo-inputs u_k."""

    kl_is_analytic = False
    pseudo_inputs = 100

    def __init__(self, latent_dim, features):
        super().__init__(latent_dim, features)
        self.pseudo = nn.Parameter(torch.rand(self.pseudo_inputs, 784) * 0.2 - 0.1)

    def bind_encoder(self, trunk: nn.Module) -> None:
        """Pseudo-inputs go through the VAE's own encoder (kept unregistered: it is the VAE's module)."""
        object.__setattr__(self, "_trunk", trunk)

    def _components(self):
        mu, log_var = self.posterior(self._trunk(torch.sigmoid(self.pseudo)))
        return mu, log_var

    def log_prior(self, z):
        mu, log_var = self._components()
        lp = Normal(mu, torch.exp(0.5 * log_var)).log_prob(z.unsqueeze(-2)).sum(-1)
        return torch.logsumexp(lp, dim=-1) - math.log(self.pseudo_inputs)

    def sample_prior(self, n):
        mu, log_var = self._components()
        k = torch.randint(0, self.pseudo_inputs, (n,))  # components uniformly
        return mu[k] + torch.exp(0.5 * log_var[k]) * torch.randn(n, self.latent_dim)


class _SphericalLatent(Latent):
    """Posterior on S^d ⊂ R^{d+1} with a uniform prior; κ = softplus(·) + 1."""

    def __init__(self, latent_dim, features):
        super().__init__(latent_dim, features)
        self.head = nn.Linear(features, latent_dim + 2)

    @property
    def code_dim(self):
        return self.latent_dim + 1

    def posterior(self, h):
        out = self.head(h)
        mu = F.normalize(out[..., :-1], dim=-1)
        kappa = F.softplus(out[..., -1:]) + 1.0
        return mu, kappa

    def log_prior(self, z):
        return torch.full(z.shape[:-1], -spherical.log_sphere_area(self.code_dim), dtype=z.dtype)

    def sample_prior(self, n):
        return F.normalize(torch.randn(n, self.code_dim), dim=-1)


@register_latent("vmf")
class VonMisesFisherLatent(_SphericalLatent):
    """von Mises–Fisher posterior, uniform prior on the sphere (Davidson et al. 2018)."""

    def __init__(self, latent_dim, features):
        super().__init__(latent_dim, features)
        self.sampler_failures = 0  # draws that never accepted within the iteration cap (fall back to the mode)
        self.sampler_draws = 0

    def rsample(self, params, n):
        mu, kappa = params
        z, failures = spherical.vmf_rsample(mu, kappa, n)
        self.sampler_failures += failures
        self.sampler_draws += z.shape[:-1].numel()
        return z

    def log_q(self, z, params):
        mu, kappa = params
        return spherical.torch_vmf_log_prob(z, mu, kappa)

    def kl(self, params, z=None):
        return spherical.torch_vmf_kl_uniform(params[1], self.code_dim).squeeze(-1)


@register_latent("power_spherical")
class PowerSphericalLatent(_SphericalLatent):
    """Power Spherical posterior (De Cao & Aziz 2020), uniform prior: Bessel-free, exact sampler."""

    def rsample(self, params, n):
        mu, kappa = params
        return spherical.power_spherical_rsample(mu, kappa, n)

    def log_q(self, z, params):
        mu, kappa = params
        return spherical.power_spherical_log_prob(z, mu, kappa)

    def kl(self, params, z=None):
        return spherical.power_spherical_kl_uniform(params[1].squeeze(-1), self.code_dim)


@register_latent("ae")
class DeterministicLatent(Latent):
    """Plain autoencoder: z = encoder mean, no KL. A density is fitted on the codes after training."""

    deterministic = True

    def __init__(self, latent_dim, features):
        super().__init__(latent_dim, features)
        self.head = nn.Linear(features, latent_dim)

    def posterior(self, h):
        return (self.head(h),)

    def rsample(self, params, n):
        return params[0].unsqueeze(0).expand(n, *params[0].shape)

    def kl(self, params, z=None):
        return torch.zeros(params[0].shape[0])
