"""log I_v(κ), the modified Bessel function of the first kind, in float64 for any order and argument.

The von Mises–Fisher normaliser needs log I_{p/2−1}(κ) for p up to ~1000 and κ up to ~1e5,
where I_v itself over- or underflows. ``scipy.special.ive`` (I_v(κ)·e^{−κ}) covers most of that
range in log form; where it underflows (large order, small κ) the power series or the uniform
(Debye) large-order expansion takes over. ``log_iv`` is differentiable in κ through a custom
autograd function using d/dκ log I_v(κ) = I_{v+1}(κ)/I_v(κ) + v/κ.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import special

_TINY = 1e-280


def log_iv_numpy(v: np.ndarray | float, kappa: np.ndarray | float) -> np.ndarray:
    """log I_v(κ) in float64 for v ≥ 0, κ > 0, without underflow or overflow."""
    v, kappa = np.broadcast_arrays(np.asarray(v, dtype=np.float64), np.asarray(kappa, dtype=np.float64))
    out = np.empty(v.shape)
    with np.errstate(all="ignore"):
        scaled = special.ive(v, kappa)
    direct = np.isfinite(scaled) & (scaled > _TINY)
    out[direct] = np.log(scaled[direct]) + kappa[direct]
    rest = ~direct
    if rest.any():
        # κ tiny against the order: the power series (κ/2)^v / Γ(v+1) · (1 + κ²/(4(v+1)) + …) is exact
        # to float64 there; elsewhere the large-order (Debye) expansion is.
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


def bessel_ratio_numpy(v: float, kappa: np.ndarray | float) -> np.ndarray:
    """I_{v+1}(κ) / I_v(κ), in (0, 1)."""
    return np.exp(log_iv_numpy(v + 1, kappa) - log_iv_numpy(v, kappa))


class _LogIv(torch.autograd.Function):
    """log I_v(κ) for a fixed order v; the κ-gradient is I_{v+1}/I_v + v/κ, computed the same stable way."""

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, v: float) -> torch.Tensor:
        k = kappa.detach().cpu().double().numpy()
        ctx.save_for_backward(kappa)
        ctx.v = v
        return torch.from_numpy(np.asarray(log_iv_numpy(v, k))).to(kappa)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (kappa,) = ctx.saved_tensors
        k = kappa.detach().cpu().double().numpy()
        slope = torch.from_numpy(np.asarray(bessel_ratio_numpy(ctx.v, k) + ctx.v / k)).to(kappa)
        return grad * slope, None


def log_iv(v: float, kappa: torch.Tensor) -> torch.Tensor:
    """Differentiable (in κ) log I_v(κ) for a Python-number order v ≥ 0."""
    return _LogIv.apply(kappa, float(v))


def bessel_ratio(v: float, kappa: torch.Tensor) -> torch.Tensor:
    """Differentiable I_{v+1}(κ)/I_v(κ) (the vMF mean resultant length A_p(κ) with v = p/2 − 1)."""
    return torch.exp(log_iv(v + 1, kappa) - log_iv(v, kappa))


class _VmfLogNormalizer(torch.autograd.Function):
    """log C_p(κ) = v log κ − (p/2) log 2π − log I_v(κ); its derivative is −I_{v+1}/I_v (no cancellation)."""

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, p: int) -> torch.Tensor:
        k = kappa.detach().cpu().double().numpy()
        v = p / 2 - 1
        ctx.save_for_backward(kappa)
        ctx.v = v
        value = v * np.log(k) - (p / 2) * np.log(2 * np.pi) - log_iv_numpy(v, k)
        return torch.from_numpy(np.asarray(value)).to(kappa)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (kappa,) = ctx.saved_tensors
        ratio = bessel_ratio_numpy(ctx.v, kappa.detach().cpu().double().numpy())
        return -grad * torch.from_numpy(np.asarray(ratio)).to(kappa), None


def vmf_log_normalizer(p: int, kappa: torch.Tensor) -> torch.Tensor:
    """log C_p(κ) of the vMF density on S^{p−1}, differentiable in κ (d/dκ = −A_p(κ))."""
    return _VmfLogNormalizer.apply(kappa, int(p))
