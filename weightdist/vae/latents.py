"""Latent families for the VAE: posterior, prior, sampling and KL, one registered class each.

Every family turns the encoder trunk's features into posterior parameters and answers the same
questions, so training, evaluation, claims and figures never branch on the family:
``rsample``, ``log_q``, ``log_prior``, ``kl``, ``sample_prior``, ``posterior_mean`` and ``location``.
Every random draw takes an explicit ``torch.Generator``.

``latent_dim`` is the manifold dimension d; spherical families live on S^d ⊂ R^{d+1}.

Metadata on the class is what the comparison reads: ``baseline`` marks the prior the others are
compared against, ``claim`` is the sentence (if any) the report tests for that prior against the
baseline, ``kl_is_analytic`` and ``deterministic`` describe the objective. A new prior is one class
here (or in its own module) with ``@register_latent`` plus its tests.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from ..core.registry import Registry
from .spherical import HypersphericalUniform, PowerSpherical, VonMisesFisher, log_sphere_area


class Latent(nn.Module):
    """Base class. ``params`` is whatever ``posterior`` returns (a tuple of tensors)."""

    name: ClassVar[str] = ""
    kl_is_analytic: ClassVar[bool] = True
    deterministic: ClassVar[bool] = False
    baseline: ClassVar[bool] = False
    claim: ClassVar[str] = ""  # "<claim> (against the baseline)", tested by test log-likelihood
    description: ClassVar[str] = ""

    def __init__(self, latent_dim: int, features: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    @property
    def code_dim(self) -> int:
        """Size of z as the decoder sees it."""
        return self.latent_dim

    def posterior(self, h: torch.Tensor):
        raise NotImplementedError

    def location(self, params) -> torch.Tensor:
        """The posterior's location (mean, or mean direction on the sphere): reconstructions and 2-D plots."""
        return params[0]

    def posterior_mean(self, params) -> torch.Tensor:
        """E_q[z]: the one quantity active units are defined on, for every family."""
        return params[0]

    def rsample(self, params, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def log_q(self, z: torch.Tensor, params) -> torch.Tensor:
        raise NotImplementedError

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def kl(self, params, z: torch.Tensor | None = None) -> torch.Tensor:
        """KL(q(z|x) ‖ p(z)) per example; Monte-Carlo from ``z`` when not analytic."""
        return (self.log_q(z, params) - self.log_prior(z)).mean(0)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise parameters that are not plain ``nn.Linear`` layers (those are reset by the VAE)."""


LATENTS: Registry[type[Latent]] = Registry("latent prior")
_ORDER: list[str] = []


def register_latent(name: str):
    def decorator(cls: type[Latent]) -> type[Latent]:
        cls.name = name
        _ORDER.append(name)
        return LATENTS.register(name)(cls)

    return decorator


def registration_order() -> tuple[str, ...]:
    """Registered priors in the order they were defined (tables and figures follow it)."""
    return tuple(_ORDER)


def baseline_prior() -> str:
    """The registered prior every other one is compared against."""
    names = [n for n in LATENTS if LATENTS.get(n).baseline]
    if len(names) != 1:
        raise RuntimeError(f"exactly one latent must set baseline = True, found {names}")
    return names[0]


class _DiagonalGaussianPosterior(Latent):
    def __init__(self, latent_dim: int, features: int) -> None:
        super().__init__(latent_dim, features)
        self.head = nn.Linear(features, 2 * latent_dim)

    def posterior(self, h):
        mu, log_var = self.head(h).chunk(2, dim=-1)
        return mu, log_var.clamp(-12, 8)

    def rsample(self, params, n, generator=None):
        mu, log_var = params
        eps = torch.randn(n, *mu.shape, generator=generator, dtype=mu.dtype)
        return mu + torch.exp(0.5 * log_var) * eps

    def log_q(self, z, params):
        mu, log_var = params
        return Normal(mu, torch.exp(0.5 * log_var)).log_prob(z).sum(-1)


@register_latent("gaussian")
class GaussianLatent(_DiagonalGaussianPosterior):
    """Diagonal Normal posterior, N(0, I) prior, analytic KL."""

    baseline = True
    description = "diagonal Normal posterior, N(0, I) prior (the standard VAE)"

    def log_prior(self, z):
        return Normal(0.0, 1.0).log_prob(z).sum(-1)

    def kl(self, params, z=None):
        mu, log_var = params
        return 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(-1)

    def sample_prior(self, n, generator=None):
        return torch.randn(n, self.latent_dim, generator=generator)


@register_latent("mog")
class MixtureOfGaussiansLatent(_DiagonalGaussianPosterior):
    """Diagonal Normal posterior, learned K-component Gaussian-mixture prior; KL is a Monte-Carlo estimate."""

    kl_is_analytic = False
    components = 10
    claim = "A Gaussian-mixture prior does better on clustered data (10 classes)"
    description = f"diagonal Normal posterior, learned {components}-component Gaussian-mixture prior"

    def __init__(self, latent_dim, features):
        super().__init__(latent_dim, features)
        self.prior_means = nn.Parameter(torch.zeros(self.components, latent_dim))
        self.prior_log_std = nn.Parameter(torch.zeros(self.components, latent_dim))
        self.prior_logits = nn.Parameter(torch.zeros(self.components))

    def reset_parameters(self, generator=None):
        with torch.no_grad():
            self.prior_means.copy_(torch.randn(self.prior_means.shape, generator=generator))

    def _mixture(self):
        from torch.distributions import Categorical, Independent, MixtureSameFamily

        comp = Independent(Normal(self.prior_means, self.prior_log_std.clamp(-6, 3).exp()), 1)
        return MixtureSameFamily(Categorical(logits=self.prior_logits), comp)

    def log_prior(self, z):
        return self._mixture().log_prob(z)

    def sample_prior(self, n, generator=None):
        k = torch.multinomial(torch.softmax(self.prior_logits, 0), n, replacement=True, generator=generator)
        std = self.prior_log_std.clamp(-6, 3).exp()
        return self.prior_means[k] + std[k] * torch.randn(n, self.latent_dim, generator=generator)


@register_latent("vamp")
class VampLatent(_DiagonalGaussianPosterior):
    """VampPrior (Tomczak & Welling 2018): p(z) = mean_k q(z | u_k) over learned pseudo-inputs u_k."""

    kl_is_analytic = False
    pseudo_inputs = 100
    claim = "A VampPrior (a learned mixture of posteriors) does better"
    description = f"diagonal Normal posterior, VampPrior with {pseudo_inputs} learned pseudo-inputs"

    def __init__(self, latent_dim, features):
        super().__init__(latent_dim, features)
        self.pseudo = nn.Parameter(torch.zeros(self.pseudo_inputs, 784))

    def reset_parameters(self, generator=None):
        with torch.no_grad():
            self.pseudo.copy_(torch.rand(self.pseudo.shape, generator=generator) * 0.2 - 0.1)

    def bind_encoder(self, trunk: nn.Module) -> None:
        """Pseudo-inputs go through the VAE's own encoder (kept unregistered: it is the VAE's module)."""
        object.__setattr__(self, "_trunk", trunk)

    def _components(self):
        return self.posterior(self._trunk(torch.sigmoid(self.pseudo)))

    def log_prior(self, z):
        mu, log_var = self._components()
        lp = Normal(mu, torch.exp(0.5 * log_var)).log_prob(z.unsqueeze(-2)).sum(-1)
        return torch.logsumexp(lp, dim=-1) - math.log(self.pseudo_inputs)

    def sample_prior(self, n, generator=None):
        mu, log_var = self._components()
        k = torch.randint(0, self.pseudo_inputs, (n,), generator=generator)  # components uniformly
        return mu[k] + torch.exp(0.5 * log_var[k]) * torch.randn(n, self.latent_dim, generator=generator)


class _SphericalLatent(Latent):
    """Posterior on S^d ⊂ R^{d+1} with a uniform prior; κ = softplus(·) + 1. ``family`` is the
    ``torch.distributions`` class of the posterior; its KL to the uniform is registered with torch."""

    family: ClassVar[type]

    def __init__(self, latent_dim, features):
        super().__init__(latent_dim, features)
        self.head = nn.Linear(features, latent_dim + 2)

    @property
    def code_dim(self):
        return self.latent_dim + 1

    def posterior(self, h):
        out = self.head(h)
        return F.normalize(out[..., :-1], dim=-1), F.softplus(out[..., -1]) + 1.0

    def _q(self, params, generator=None):
        return self.family(params[0], params[1], generator=generator)

    def posterior_mean(self, params):
        return self._q(params).mean

    def rsample(self, params, n, generator=None):
        return self._q(params, generator).rsample((n,))

    def log_q(self, z, params):
        return self._q(params).log_prob(z)

    def log_prior(self, z):
        return torch.full(z.shape[:-1], -log_sphere_area(self.code_dim), dtype=z.dtype)

    def kl(self, params, z=None):
        return kl_divergence(self._q(params), HypersphericalUniform(self.code_dim, dtype=params[0].dtype))

    def sample_prior(self, n, generator=None):
        return HypersphericalUniform(self.code_dim, generator=generator).sample((n,))


@register_latent("vmf")
class VonMisesFisherLatent(_SphericalLatent):
    """von Mises–Fisher posterior, uniform prior on the sphere (Davidson et al. 2018)."""

    family = VonMisesFisher
    claim = "A vMF latent does better at low dimension"
    description = "von Mises–Fisher posterior, uniform prior on S^d (implicit-reparameterised κ gradient)"


@register_latent("power_spherical")
class PowerSphericalLatent(_SphericalLatent):
    """Power Spherical posterior (De Cao & Aziz 2020), uniform prior: Bessel-free, exact sampler."""

    family = PowerSpherical
    claim = "A Power Spherical latent (Bessel-free, exact sampler) does better"
    description = "Power Spherical posterior, uniform prior on S^d"


@register_latent("ae")
class DeterministicLatent(Latent):
    """Plain autoencoder: z = encoder mean, no KL. A density is fitted on the codes after training."""

    deterministic = True
    description = "plain autoencoder; a 10-component GMM fitted on its training codes serves as p(z)"

    def __init__(self, latent_dim, features):
        super().__init__(latent_dim, features)
        self.head = nn.Linear(features, latent_dim)

    def posterior(self, h):
        return (self.head(h),)

    def rsample(self, params, n, generator=None):
        return params[0].unsqueeze(0).expand(n, *params[0].shape)

    def kl(self, params, z=None):
        return torch.zeros(params[0].shape[0])
