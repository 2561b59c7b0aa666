"""Distributions on the unit sphere S^{p-1} ⊂ R^p, in float64 where it matters.

von Mises–Fisher: f(x) = C_p(κ) exp(κ μᵀx), C_p(κ) = κ^{v} / ((2π)^{p/2} I_v(κ)), v = p/2 − 1.
log I_v(κ) comes from ``scipy.special.ive`` where that is representable and from
the uniform (Debye) large-order expansion where it underflows, so the
log-normaliser and the KL stay finite for large and small κ in high dimension.
Power Spherical (De Cao & Aziz 2020): f(x) ∝ (1 + μᵀx)^κ, no Bessel functions.

A d-dimensional latent here is the manifold dimension: the sphere S^d in R^{d+1}.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special

_TINY = 1e-280


def log_bessel_iv(v: np.ndarray | float, kappa: np.ndarray | float) -> np.ndarray:
    """log I_v(κ) in float64 for v ≥ 0, κ > 0, without underflow or overflow."""
    v, kappa = np.broadcast_arrays(np.asarray(v, dtype=np.float64), np.asarray(kappa, dtype=np.float64))
    out = np.empty(v.shape)
    with np.errstate(all="ignore"):
        scaled = special.ive(v, kappa)
    direct = np.isfinite(scaled) & (scaled > _TINY)
    out[direct] = np.log(scaled[direct]) + kappa[direct]
    rest = ~direct
    if rest.any():
        # Tiny κ against the order: the power series I_v(κ) = (κ/2)^v / Γ(v+1) · (1 + κ²/(4(v+1)) + …)
        # is exact to float64 there; elsewhere the large-order (Debye) expansion takes over.
        small = rest & (kappa * kappa < 1e-6 * (v + 1))
        vs, ks = v[small], kappa[small]
        out[small] = vs * np.log(ks / 2) - special.gammaln(vs + 1) + np.log1p(ks * ks / (4 * (vs + 1)))
        large = rest & ~small
        out[large] = _log_iv_debye(v[large], kappa[large])
    return out


def _log_iv_debye(v: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """Uniform asymptotic expansion of log I_v(v z) for large order (Abramowitz & Stegun 9.7.7)."""
    v = np.maximum(v, 1e-8)
    z = kappa / v
    root = np.sqrt(1 + z * z)
    eta = root + np.log(z / (1 + root))
    t = 1 / root
    u1 = (3 * t - 5 * t**3) / 24
    u2 = (81 * t**2 - 462 * t**4 + 385 * t**6) / 1152
    u3 = (30375 * t**3 - 369603 * t**5 + 765765 * t**7 - 425425 * t**9) / 414720
    series = 1 + u1 / v + u2 / v**2 + u3 / v**3
    return -0.5 * np.log(2 * np.pi * v) + v * eta - 0.5 * np.log(root) + np.log(series)


def mean_resultant(p: int, kappa: np.ndarray | float) -> np.ndarray:
    """A_p(κ) = I_{p/2}(κ) / I_{p/2−1}(κ): the length of E[x] under vMF."""
    kappa = np.asarray(kappa, dtype=np.float64)
    return np.exp(log_bessel_iv(p / 2, kappa) - log_bessel_iv(p / 2 - 1, kappa))


def vmf_log_normalizer(p: int, kappa: np.ndarray | float) -> np.ndarray:
    """log C_p(κ); at κ → 0 it tends to −log |S^{p−1}|."""
    kappa = np.asarray(kappa, dtype=np.float64)
    v = p / 2 - 1
    return v * np.log(kappa) - (p / 2) * np.log(2 * np.pi) - log_bessel_iv(v, kappa)


def log_sphere_area(p: int) -> float:
    """log |S^{p−1}| = log(2 π^{p/2} / Γ(p/2))."""
    return math.log(2) + (p / 2) * math.log(math.pi) - special.gammaln(p / 2)


def vmf_kl_uniform(p: int, kappa: np.ndarray | float) -> np.ndarray:
    """KL(vMF(μ, κ) ‖ Uniform(S^{p−1})) = κ A_p(κ) + log C_p(κ) + log |S^{p−1}| ≥ 0."""
    kappa = np.asarray(kappa, dtype=np.float64)
    return kappa * mean_resultant(p, kappa) + vmf_log_normalizer(p, kappa) + log_sphere_area(p)


class _VmfLogNormalizer(torch.autograd.Function):
    """log C_p(κ) with d/dκ log C_p(κ) = −A_p(κ), both in float64 on the CPU."""

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, p: int) -> torch.Tensor:
        k = kappa.detach().cpu().double().numpy()
        ctx.save_for_backward(kappa)
        ctx.p = p
        return torch.from_numpy(vmf_log_normalizer(p, k)).to(kappa)

    @staticmethod
    def backward(ctx, grad):
        (kappa,) = ctx.saved_tensors
        a = torch.from_numpy(mean_resultant(ctx.p, kappa.detach().cpu().double().numpy())).to(kappa)
        return -grad * a, None


class _MeanResultant(torch.autograd.Function):
    """A_p(κ) with dA/dκ = 1 − A² − (p−1) A / κ."""

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, p: int) -> torch.Tensor:
        a = torch.from_numpy(mean_resultant(p, kappa.detach().cpu().double().numpy())).to(kappa)
        ctx.save_for_backward(kappa, a)
        ctx.p = p
        return a

    @staticmethod
    def backward(ctx, grad):
        kappa, a = ctx.saved_tensors
        return grad * (1 - a * a - (ctx.p - 1) * a / kappa), None


def torch_vmf_kl_uniform(kappa: torch.Tensor, p: int) -> torch.Tensor:
    return kappa * _MeanResultant.apply(kappa, p) + _VmfLogNormalizer.apply(kappa, p) + log_sphere_area(p)


def torch_vmf_log_prob(x: torch.Tensor, mu: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    p = mu.shape[-1]
    return _VmfLogNormalizer.apply(kappa, p).squeeze(-1) + kappa.squeeze(-1) * (x * mu).sum(-1)


def _householder_to(mu: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reflect samples drawn around e1 so they centre on μ."""
    e1 = torch.zeros_like(mu)
    e1[..., 0] = 1.0
    u = e1 - mu
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return y - 2 * (y * u).sum(-1, keepdim=True) * u


def _uniform_tangent(shape: tuple[int, ...], p: int, generator=None, like: torch.Tensor | None = None) -> torch.Tensor:
    v = torch.randn(*shape, p - 1, generator=generator, dtype=like.dtype if like is not None else torch.float32)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def vmf_rsample(mu: torch.Tensor, kappa: torch.Tensor, n: int, max_iter: int = 100,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Wood (1994) rejection sampler, vectorised, at most ``max_iter`` rounds.

    Returns (samples of shape (n, *mu.shape), number of draws that never accepted:
    those fall back to the mode and are counted). Gradients reach κ through the
    accepted w(ε, κ) (the reparameterised part of Davidson et al. 2018; their
    small correction term is not included) and μ through the reflection.
    """
    p = mu.shape[-1]
    batch = mu.shape[:-1]
    out_dtype = mu.dtype
    # The envelope constants and w lose 1 − w to rounding in float32 at large κ: work in float64.
    mu, kappa = mu.double(), kappa.double()
    k = kappa.expand(*batch, 1).squeeze(-1)
    k = k.unsqueeze(0).expand(n, *batch)
    m = p - 1
    root = torch.sqrt(4 * k * k + m * m)
    b = m / (2 * k + root)
    a = (m + 2 * k + root) / 4
    d = 4 * a * b / (1 + b) - m * math.log(m)
    beta = torch.distributions.Beta(torch.tensor(m / 2.0, dtype=mu.dtype), torch.tensor(m / 2.0, dtype=mu.dtype))
    w = torch.ones_like(k)
    eps_done = torch.zeros_like(k)
    pending = torch.ones_like(k, dtype=torch.bool)
    for _ in range(max_iter):
        if not pending.any():
            break
        eps = beta.sample(k.shape)
        u = torch.rand(k.shape, generator=generator, dtype=mu.dtype)
        t = 2 * a.detach() * b.detach() / (1 - (1 - b.detach()) * eps)
        accept = pending & (m * torch.log(t) - t + d.detach() >= torch.log(u))
        eps_done = torch.where(accept, eps, eps_done)
        pending = pending & ~accept
    failures = int(pending.sum())
    w = (1 - (1 + b) * eps_done) / (1 - (1 - b) * eps_done)
    w = torch.where(pending, torch.ones_like(w), w)
    v = _uniform_tangent(k.shape, p, generator, like=mu)
    y = torch.cat([w.unsqueeze(-1), torch.sqrt((1 - w * w).clamp_min(0)).unsqueeze(-1) * v], dim=-1)
    return _householder_to(mu.unsqueeze(0).expand(n, *mu.shape), y).to(out_dtype), failures


def power_spherical_log_normalizer(p: int, kappa: torch.Tensor) -> torch.Tensor:
    alpha, beta = (p - 1) / 2 + kappa, torch.full_like(kappa, (p - 1) / 2)
    return -((alpha + beta) * math.log(2) + beta * math.log(math.pi) + torch.lgamma(alpha) - torch.lgamma(alpha + beta))


def power_spherical_log_prob(x: torch.Tensor, mu: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    p = mu.shape[-1]
    k = kappa.squeeze(-1)
    return power_spherical_log_normalizer(p, k) + k * torch.log1p((x * mu).sum(-1).clamp(-1, 1))


def power_spherical_kl_uniform(kappa: torch.Tensor, p: int) -> torch.Tensor:
    """KL(PS(μ, κ) ‖ Uniform) = log C + κ E[log(1 + μᵀx)] + log |S^{p−1}|, E[·] = log 2 + ψ(α) − ψ(α+β)."""
    alpha, beta = (p - 1) / 2 + kappa, (p - 1) / 2
    expected = math.log(2) + torch.digamma(alpha) - torch.digamma(alpha + beta)
    return power_spherical_log_normalizer(p, kappa) + kappa * expected + log_sphere_area(p)


def power_spherical_rsample(mu: torch.Tensor, kappa: torch.Tensor, n: int) -> torch.Tensor:
    """Exact reparameterised sampler: t = 2z − 1 with z ~ Beta(α, β) (implicit gradients)."""
    p = mu.shape[-1]
    k = kappa.squeeze(-1)
    alpha, beta = (p - 1) / 2 + k, torch.full_like(k, (p - 1) / 2)
    z = torch.distributions.Beta(alpha, beta).rsample((n,))
    t = 2 * z - 1
    v = _uniform_tangent(t.shape, p, like=mu)
    y = torch.cat([t.unsqueeze(-1), torch.sqrt((1 - t * t).clamp_min(0)).unsqueeze(-1) * v], dim=-1)
    return _householder_to(mu.unsqueeze(0).expand(n, *mu.shape), y)
