"""Distributions on the unit sphere S^{p−1} ⊂ R^p as ``torch.distributions`` classes.

- :class:`VonMisesFisher` f(z) = C_p(κ) exp(κ μᵀz), C_p(κ) = κ^v / ((2π)^{p/2} I_v(κ)), v = p/2 − 1.
- :class:`PowerSpherical` (De Cao & Aziz 2020) f(z) ∝ (1 + μᵀz)^κ: no Bessel functions, exact sampler.
- :class:`HypersphericalUniform`, with the KL of both to it registered via ``torch.distributions.kl.register_kl``.

Sampling is z = H(μ) [w, √(1−w²) v]: w = μᵀz is drawn from its one-dimensional marginal, v uniformly
on S^{p−2}, and the Householder reflection H(μ) maps e₁ to μ (differentiable in μ).

Gradients with respect to κ are exact (unbiased):
- vMF: w comes from Wood's (1994) rejection sampler, which is not differentiable; the gradient is the
  *implicit reparameterisation* of w's marginal (Figurnov et al. 2018): dw/dκ = −(∂F/∂κ)/(∂F/∂w) for
  its CDF F. With f the marginal density and ∂f/∂κ = (t − A_p(κ)) f, this is
  dw/dκ = ∫_w^1 (t − A_p) f(t)/f(w) dt, computed by Gauss–Jacobi quadrature. (Davidson et al.'s
  alternative, the score-function correction g_cor, needs the downstream loss and is not used.)
- Power Spherical: w = 2X/(X+Y) − 1 with X ~ Gamma(α), Y ~ Gamma(β); torch's gamma sampler carries
  its own implicit gradient in α.

Every random draw (Beta and uniform draws of the rejection step, gammas, tangent directions) comes from
the ``generator`` given to the distribution: Beta variates are built from two ``torch._standard_gamma``
draws, the one torch sampler that accepts a generator and is differentiable.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from scipy import special
from torch.distributions import Distribution, constraints
from torch.distributions.kl import register_kl

from .bessel import bessel_ratio, bessel_ratio_numpy, vmf_log_normalizer


class _UnitVector(constraints.Constraint):
    """Vectors of norm one (the sphere), up to float rounding."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (value.norm(dim=-1) - 1).abs() < 1e-4


unit_vector = _UnitVector()


def log_sphere_area(p: int) -> float:
    """log |S^{p−1}| = log(2 π^{p/2} / Γ(p/2))."""
    return math.log(2) + (p / 2) * math.log(math.pi) - float(special.gammaln(p / 2))


def _gamma(alpha: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gamma(α, 1) draws from ``generator``, differentiable in α (torch's implicit gradient)."""
    return torch._standard_gamma(alpha, generator=generator)


def _uniform_tangent(shape: torch.Size, p: int, generator, dtype) -> torch.Tensor:
    v = torch.randn(*shape, p - 1, generator=generator, dtype=dtype)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def _householder(loc: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reflect y (drawn around e₁) so that e₁ goes to loc."""
    e1 = torch.zeros_like(loc)
    e1[..., 0] = 1.0
    u = e1 - loc
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return y - 2 * (y * u).sum(-1, keepdim=True) * u


def _assemble(loc: torch.Tensor, w: torch.Tensor, one_minus_w: torch.Tensor, generator) -> torch.Tensor:
    """z = H(loc)[w, √(1−w²) v] with √(1−w²) from 1−w (no rounding loss near the pole)."""
    v = _uniform_tangent(w.shape, loc.shape[-1], generator, loc.dtype)
    radius = torch.sqrt((one_minus_w * (2 - one_minus_w)).clamp_min(0))
    y = torch.cat([w.unsqueeze(-1), radius.unsqueeze(-1) * v], dim=-1)
    return _householder(loc.expand(y.shape), y)


# --- von Mises–Fisher ------------------------------------------------------------------------------


def wood_sample(kappa: torch.Tensor, p: int, generator: torch.Generator | None = None,
                max_rounds: int = 10_000) -> torch.Tensor:
    """1 − w for w = μᵀz under vMF(μ, κ) on S^{p−1}, by Wood's (1994) rejection sampler, in float64.

    Returns 1 − w rather than w, so that samples near the pole keep their precision at large κ.
    Proposal w = (1 − (1+b)Z)/(1 − (1−b)Z), Z ~ Beta((p−1)/2, (p−1)/2); only pending entries redraw.
    """
    k = kappa.detach().double()
    m1 = p - 1.0
    b = m1 / (2 * k + torch.sqrt(4 * k * k + m1 * m1))
    x0 = (1 - b) / (1 + b)
    log_one_minus_x0sq = torch.log(4 * b) - 2 * torch.log1p(b)  # log(1 − x0²), exact at small b
    one_minus_x0 = 2 * b / (1 + b)
    out = torch.empty_like(k)
    pending = torch.arange(k.numel())
    flat_b, flat_x0, flat_l, flat_k, flat_1mx0 = (t.reshape(-1) for t in (b, x0, log_one_minus_x0sq, k, one_minus_x0))
    half = torch.tensor(m1 / 2, dtype=torch.float64)
    flat_out = out.view(-1)
    for _ in range(max_rounds):
        if pending.numel() == 0:
            return out
        n = pending.numel()
        ga, gb = _gamma(half.expand(n), generator), _gamma(half.expand(n), generator)
        z = ga / (ga + gb)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        bb, x0p = flat_b[pending], flat_x0[pending]
        omw = 2 * bb * z / (1 - (1 - bb) * z)
        w = 1 - omw
        one_minus_x0w = omw + w * flat_1mx0[pending]
        log_accept = flat_k[pending] * (w - x0p) + m1 * (torch.log(one_minus_x0w) - flat_l[pending])
        accept = log_accept >= torch.log(u)
        flat_out[pending[accept]] = omw[accept]
        pending = pending[~accept]
    raise RuntimeError(f"Wood's sampler did not accept within {max_rounds} rounds (p={p}); this is a bug")


@lru_cache(maxsize=64)
def _jacobi_rule(m: float, n: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for ∫_0^1 x^m g(x) dx ≈ Σ wᵢ g(xᵢ)."""
    y, wts = special.roots_jacobi(n, 0.0, m)
    return (1 + y) / 2, wts * 2.0 ** (-m - 1)


def vmf_dw_dkappa(one_minus_w: np.ndarray, kappa: np.ndarray, p: int) -> np.ndarray:
    """dw/dκ = −(∂F/∂κ)/f(w) for the vMF marginal of w = μᵀz (implicit reparameterisation).

    dw/dκ = ∫_w^1 (t − A) f(t)/f(w) dt. With s = 1 − w and t = 1 − s·x this is
    s ∫_0^1 (1 − A − s x) e^{κ s (1−x)} ((2 − s x)/(2 − s))^m x^m dx, m = (p−3)/2: smooth in x for
    the draws that occur (κ s is about Gamma((p−1)/2)), and the x^m factor is the Jacobi weight.
    """
    s = np.asarray(one_minus_w, dtype=np.float64)[..., None]
    k = np.asarray(kappa, dtype=np.float64)[..., None]
    m = (p - 3) / 2
    x, q = _jacobi_rule(m)
    a = bessel_ratio_numpy(p / 2 - 1, k)
    with np.errstate(over="ignore", invalid="ignore"):
        g = (1 - a - s * x) * np.exp(k * s * (1 - x) + m * np.log((2 - s * x) / (2 - s)))
    out = s[..., 0] * (g @ q)
    return np.where(np.isfinite(out), np.maximum(out, 0.0), 0.0)


class _ImplicitW(torch.autograd.Function):
    """Passes 1 − w through unchanged; its κ-gradient is −dw/dκ from ``vmf_dw_dkappa``."""

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, one_minus_w: torch.Tensor, p: int) -> torch.Tensor:
        ctx.save_for_backward(kappa, one_minus_w)
        ctx.p = p
        return one_minus_w.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kappa, omw = ctx.saved_tensors
        dw = vmf_dw_dkappa(omw.detach().cpu().numpy(), kappa.detach().cpu().double().numpy(), ctx.p)
        return -grad * torch.from_numpy(dw).to(grad), None, None


class VonMisesFisher(Distribution):
    """von Mises–Fisher on S^{p−1}: ``loc`` (..., p) unit vectors, ``concentration`` κ (...,) > 0."""

    arg_constraints = {"loc": unit_vector, "concentration": constraints.positive}
    support = unit_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, concentration: torch.Tensor, generator: torch.Generator | None = None,
                 validate_args: bool | None = None) -> None:
        concentration = torch.as_tensor(concentration, dtype=loc.dtype)
        batch = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        self.loc = loc.expand(*batch, loc.shape[-1])
        self.concentration = concentration.expand(batch)
        self.generator = generator
        self.p = loc.shape[-1]
        super().__init__(batch, torch.Size([self.p]), validate_args=validate_args)

    @property
    def mean(self) -> torch.Tensor:
        return self.mean_resultant().unsqueeze(-1) * self.loc

    def mean_resultant(self) -> torch.Tensor:
        """A_p(κ) = I_{p/2}(κ)/I_{p/2−1}(κ) = E[μᵀz]."""
        return bessel_ratio(self.p / 2 - 1, self.concentration)

    def log_normalizer(self) -> torch.Tensor:
        """log C_p(κ), stable for κ up to 1e5 and p up to 1000 (see ``bessel.log_iv_numpy``)."""
        return vmf_log_normalizer(self.p, self.concentration)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self.log_normalizer() + self.concentration * (value * self.loc).sum(-1)

    def entropy(self) -> torch.Tensor:
        return -self.log_normalizer() - self.concentration * self.mean_resultant()

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)[:-1]
        kappa = self.concentration.expand(shape)
        omw = _ImplicitW.apply(kappa, wood_sample(kappa, self.p, self.generator).to(kappa.dtype), self.p)
        return _assemble(self.loc, 1 - omw, omw, self.generator)

    def sample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)


# --- Power Spherical -------------------------------------------------------------------------------


class PowerSpherical(Distribution):
    """Power Spherical (De Cao & Aziz 2020) on S^{p−1}: f(z) ∝ (1 + μᵀz)^κ."""

    arg_constraints = {"loc": unit_vector, "concentration": constraints.positive}
    support = unit_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, concentration: torch.Tensor, generator: torch.Generator | None = None,
                 validate_args: bool | None = None) -> None:
        concentration = torch.as_tensor(concentration, dtype=loc.dtype)
        batch = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        self.loc = loc.expand(*batch, loc.shape[-1])
        self.concentration = concentration.expand(batch)
        self.generator = generator
        self.p = loc.shape[-1]
        super().__init__(batch, torch.Size([self.p]), validate_args=validate_args)

    def _alpha_beta(self) -> tuple[torch.Tensor, float]:
        return (self.p - 1) / 2 + self.concentration, (self.p - 1) / 2

    @property
    def mean(self) -> torch.Tensor:
        alpha, beta = self._alpha_beta()
        return ((alpha - beta) / (alpha + beta)).unsqueeze(-1) * self.loc

    def log_normalizer(self) -> torch.Tensor:
        alpha, beta = self._alpha_beta()
        return -((alpha + beta) * math.log(2) + beta * math.log(math.pi) + torch.lgamma(alpha) - torch.lgamma(alpha + beta))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        cos = (value * self.loc).sum(-1).clamp(-1, 1)
        return self.log_normalizer() + self.concentration * torch.log1p(cos)

    def entropy(self) -> torch.Tensor:
        alpha, beta = self._alpha_beta()
        expected_log = math.log(2) + torch.digamma(alpha) - torch.digamma(alpha + beta)  # E[log(1 + μᵀz)]
        return -self.log_normalizer() - self.concentration * expected_log

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)[:-1]
        alpha, beta = self._alpha_beta()
        x = _gamma(alpha.double().expand(shape), self.generator)
        y = _gamma(torch.full(shape, beta, dtype=torch.float64), self.generator)
        omw = (2 * y / (x + y)).to(self.loc.dtype)  # 1 − w, w = 2 Beta(α, β) − 1
        return _assemble(self.loc, 1 - omw, omw, self.generator)

    def sample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)


# --- uniform and KL --------------------------------------------------------------------------------


class HypersphericalUniform(Distribution):
    """The uniform distribution on S^{p−1} ⊂ R^p (the spherical latents' prior)."""

    arg_constraints: dict = {}
    support = unit_vector
    has_rsample = True

    def __init__(self, p: int, batch_shape: torch.Size | tuple = torch.Size(), dtype: torch.dtype = torch.float32,
                 generator: torch.Generator | None = None, validate_args: bool | None = None) -> None:
        if p < 2:
            raise ValueError(f"the sphere S^(p-1) needs p >= 2, got {p}")
        self.p, self.dtype, self.generator = p, dtype, generator
        super().__init__(torch.Size(batch_shape), torch.Size([p]), validate_args=validate_args)

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        x = torch.randn(self._extended_shape(sample_shape), generator=self.generator, dtype=self.dtype)
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-30)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.full(value.shape[:-1], -log_sphere_area(self.p), dtype=value.dtype)

    def entropy(self) -> torch.Tensor:
        return torch.full(self.batch_shape, log_sphere_area(self.p), dtype=self.dtype)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self._extended_shape(), dtype=self.dtype)


@register_kl(VonMisesFisher, HypersphericalUniform)
def _kl_vmf_uniform(q: VonMisesFisher, prior: HypersphericalUniform) -> torch.Tensor:
    return -q.entropy() + log_sphere_area(q.p)


@register_kl(PowerSpherical, HypersphericalUniform)
def _kl_power_spherical_uniform(q: PowerSpherical, prior: HypersphericalUniform) -> torch.Tensor:
    return -q.entropy() + log_sphere_area(q.p)
