"""Student-t (location, scale, degrees of freedom) by Newton's method on the full likelihood.

Parameters are optimised as (μ, log σ, log ν) with the analytic gradient and
observed Hessian, each step taken in log ν or, above ν = 10, in 1/ν (see
``W_COORDS_ABOVE``); every step is checked to increase the log-likelihood. A fit
to a deterministic quantile subsample (the middle value of every run of k sorted
values) gives the start, so the full data needs only a few passes (two on a big
layer).

The df cap: for large ν, log t_ν(x) − log φ(x) = (x⁴ − 2x² − 1)/(4ν) + O(ν⁻²), whose
expectation under the Gaussian is zero, so the best possible gain of a t over a
Gaussian fit is O(ν⁻²) nats per weight: 10⁻¹² at the cap of ν = 10⁶, which no
sample size we meet can resolve. On data lighter-tailed than a Gaussian the
likelihood keeps rising towards ν = ∞; stopping at the cap then costs at most
|excess kurtosis| / (4ν) nats per weight.

"Gaussian limit": the fit is labelled so when ν sits at the cap, or when the data
cannot tell this t from a Gaussian: the likelihood ratio 2(ℓ_t − ℓ_Gauss) is below
the 5 % critical value of its boundary null ½χ²₀ + ½χ²₁ (2.71). On Gaussian samples
the finite-ν MLE is then large but meaningless, and is labelled as such.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from scipy import special, stats

from .. import kernels
from . import gaussian
from .base import Claim, Estimate, Family, Shape, ascent_direction, quantile_subsample, register_family

DF_CAP = 1e6
DF_FLOOR = 0.05
SUBSAMPLE = 20_000
SMALL_N = 5_000  # up to this many values a second Newton run starts from ν = 1
SERIES_ABOVE = 1e3  # c(ν) and its derivatives from their asymptotic series (errors below 1e-17 relative)


# 5 % critical value of the boundary null ½χ²₀ + ½χ²₁ of the t-vs-Gaussian likelihood ratio.
GAUSSIAN_LR_CRITICAL = float(stats.chi2.isf(0.10, 1))


def _log_norm(nu: float) -> float:
    """c(ν) = log Γ((ν+1)/2) − log Γ(ν/2) − ½ log(νπ): the log normalising constant of the standard t."""
    if nu >= SERIES_ABOVE:  # two huge gammaln cancel: use the asymptotic series of log Γ(z+½) − log Γ(z), z = ν/2
        z = nu / 2
        return -0.5 * math.log(2 * math.pi) - 1 / (8 * z) + 1 / (192 * z**3) - 1 / (640 * z**5)
    return float(special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2) - 0.5 * math.log(nu * math.pi))


def _const(nu: float) -> tuple[float, float, float]:
    """c(ν) and its first two derivatives.

    For large ν the derivatives are O(ν⁻²) and O(ν⁻³) differences of O(1/ν) digammas: from the series of
    ``_log_norm`` instead, or their rounding error (~1e-15 absolute) decides the sign of the ν-gradient near the cap."""
    c = _log_norm(nu)
    if nu >= SERIES_ABOVE:
        z = nu / 2
        c1 = 0.5 * (1 / (8 * z**2) - 1 / (64 * z**4) + 1 / (128 * z**6))
        c2 = 0.25 * (-1 / (4 * z**3) + 1 / (16 * z**5) - 3 / (64 * z**7))
        return c, c1, c2
    c1 = 0.5 * (special.digamma((nu + 1) / 2) - special.digamma(nu / 2)) - 0.5 / nu
    # ψ₁(x) = ζ(2, x): the Hurwitz zeta ufunc costs a tenth of polygamma's Python wrapper per scalar call.
    c2 = 0.25 * (special.zeta(2, (nu + 1) / 2) - special.zeta(2, nu / 2)) + 0.5 / nu**2
    return float(c), float(c1), float(c2)


def _log1p_sum(x: np.ndarray, mu: float, sigma: float, nu: float) -> float:
    return kernels.t_log1p_sum(x, mu, sigma, nu)


def loglik(x: np.ndarray, mu: float, sigma: float, nu: float) -> float:
    return x.size * (_log_norm(nu) - math.log(sigma)) - 0.5 * (nu + 1) * _log1p_sum(x, mu, sigma, nu)


def _moment_sums(x: np.ndarray, mu: float, sigma: float, nu: float) -> np.ndarray:
    """The eight sums the likelihood, gradient and Hessian need, in one pass (kernels.py)."""
    return kernels.t_moment_sums(x, mu, sigma, nu)


def _derivatives(x: np.ndarray, mu: float, sigma: float, nu: float):
    """Log-likelihood, gradient and Hessian in θ = (μ, log σ, log ν)."""
    n = x.size
    ll_sum, a, b, i2, q2, u2, qq, uq = _moment_sums(x, mu, sigma, nu)
    c, c1, c2 = _const(nu)
    ll = n * (c - math.log(sigma)) - 0.5 * (nu + 1) * ll_sum
    g_mu = (nu + 1) / sigma * a
    g_eta = -n + (nu + 1) * b
    g_nu = n * c1 - 0.5 * ll_sum + (nu + 1) / (2 * nu) * b
    h_mumu = (nu + 1) / sigma**2 * (q2 - nu * i2)
    h_mueta = -2 * nu * (nu + 1) / sigma * u2
    h_munu = (uq - u2) / sigma
    h_etaeta = -2 * nu * (nu + 1) * q2
    h_etanu = qq - q2
    h_nunu = n * c2 + b / (2 * nu) - (nu**2 + 2 * nu) * q2 / (2 * nu**2) - qq / (2 * nu**2)
    grad = np.array([g_mu, g_eta, nu * g_nu])
    hess = np.array([
        [h_mumu, h_mueta, nu * h_munu],
        [h_mueta, h_etaeta, nu * h_etanu],
        [nu * h_munu, nu * h_etanu, nu**2 * h_nunu + nu * g_nu],
    ])
    return ll, grad, hess


# Above this ν a step is taken in w = 1/ν instead of log ν. For large ν the likelihood is nearly quadratic in
# 1/ν (log t_ν − log φ = (x⁴ − 2x² − 1)/(4ν) + O(ν⁻²)), so Newton lands on the optimum in a step or two; in log ν
# it is a sum of exponentials and Newton crawls, a factor 1.5 in ν per pass (14 passes on a 2.4 M Gaussian layer).
W_COORDS_ABOVE = 10.0


def _to_w(grad: np.ndarray, hess: np.ndarray, nu: float) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian in (μ, log σ, w = 1/ν) from those in (μ, log σ, λ = log ν): dλ/dw = −ν, d²λ/dw² = ν²."""
    jac = np.array([1.0, 1.0, -nu])
    g = grad * jac
    h = hess * np.outer(jac, jac)
    h[2, 2] += grad[2] * nu * nu
    return g, h


def _moved(theta: np.ndarray, t: float, full: np.ndarray, in_w: bool, lo: float, hi: float) -> np.ndarray:
    """θ + t·step with the ν component stepped in w = 1/ν (when ``in_w``) or in log ν, and log ν kept in [lo, hi]."""
    cand = theta + t * full
    if in_w:
        w = math.exp(-theta[2]) + t * full[2]
        cand[2] = -math.log(w) if w > math.exp(-hi) else hi
    cand[2] = min(max(cand[2], lo), hi)
    return cand


def _newton(x: np.ndarray, theta: np.ndarray, max_iter: int, tol: float) -> tuple[np.ndarray, float, bool]:
    """Damped Newton ascent with a monotone line search; log ν is kept within [floor, cap].

    A full step is tried with the derivatives themselves (one pass gives the likelihood too), so an
    accepted step costs one pass over the data; only a rejected one falls back to likelihood-only passes.
    It stops when the Newton decrement g·H⁻¹g (in the step's coordinates) is below tol·n."""
    lo, hi = math.log(DF_FLOOR), math.log(DF_CAP)
    ll, grad, hess = _derivatives(x, theta[0], math.exp(theta[1]), math.exp(theta[2]))
    for _ in range(max_iter):
        lam = theta[2]
        free = np.array([True, True, not ((lam >= hi and grad[2] > 0) or (lam <= lo and grad[2] < 0))])
        in_w = math.exp(lam) > W_COORDS_ABOVE
        g_all, h_all = _to_w(grad, hess, math.exp(lam)) if in_w else (grad, hess)
        g, h = g_all[free], h_all[np.ix_(free, free)]
        step = ascent_direction(g, h)
        if float(g @ step) < tol * x.size:
            return theta, ll, True
        full = np.zeros(3)
        full[free] = step
        # Trust region: at most a factor e in σ and ν, and 5σ in μ, per iteration; in w, any way down to the cap and
        # up by a factor e plus 1e-3 (ν from the cap to ~1000 in one step: near w = 0 the quadratic model is good).
        w_room = (math.e - 1) * math.exp(-lam) + 1e-3 if full[2] > 0 else math.inf
        limit = np.array([5 * math.exp(theta[1]), 1.0, w_room if in_w else 1.0])
        t = min(1.0, float(np.min(limit / np.maximum(np.abs(full), 1e-300))))
        cand = _moved(theta, t, full, in_w, lo, hi)
        cand_ll, cand_grad, cand_hess = _derivatives(x, cand[0], math.exp(cand[1]), math.exp(cand[2]))
        if not cand_ll >= ll:  # NaN compares False: a failed evaluation is a rejected step
            t *= 0.5
            while t > 1e-8:
                cand = _moved(theta, t, full, in_w, lo, hi)
                cand_ll = loglik(x, cand[0], math.exp(cand[1]), math.exp(cand[2]))
                if cand_ll >= ll:
                    break
                t *= 0.5
            else:
                return theta, ll, True  # no ascent possible at machine precision: a maximum
            cand_ll, cand_grad, cand_hess = _derivatives(x, cand[0], math.exp(cand[1]), math.exp(cand[2]))
        theta, ll, grad, hess = cand, cand_ll, cand_grad, cand_hess
    return theta, ll, False


def _start(x_sorted: np.ndarray) -> np.ndarray:
    n = x_sorted.size
    mu = float(0.5 * (x_sorted[(n - 1) // 2] + x_sorted[n // 2]))
    q1, q3 = x_sorted[int(0.25 * (n - 1))], x_sorted[int(0.75 * (n - 1))]
    sigma = float(q3 - q1) / 1.349 or float(np.std(x_sorted)) or 1.0
    sub = x_sorted[:: max(1, n // SUBSAMPLE)]  # an evenly spaced quantile subsample: no n-sized temporaries
    c2 = (sub - sub.mean()) ** 2
    m2 = float(c2.mean())
    k = kernels.dot(c2, c2) / sub.size / m2**2 - 3 if m2 > 0 else 0.0  # scipy.stats.kurtosis, without its per-call overhead
    nu = 4 + 6 / k if k > 0.05 else 100.0
    return np.array([mu, math.log(sigma), math.log(min(max(nu, 1.0), DF_CAP))])


@register_family
class StudentT(Family):
    name = "student_t"
    label = "Student-t"
    color = "tab:green"
    shapes = (Shape("df", "df", DF_FLOOR, DF_CAP, "df → ∞ is Gaussian", log_axis=True, low="heavy-tailed", high="light-tailed"),)
    headline = "df"
    claims = (Claim("Heavy-tailed", "<", 10.0, support="student_t"),)  # below df 10 the excess kurtosis 6/(df − 4) exceeds 1 (infinite at df ≤ 4)
    beats = ("gaussian", "laplace")
    nests = ("gaussian",)
    nests_on_boundary = ("gaussian",)

    def fit(self, x_sorted: np.ndarray) -> Estimate:
        n = x_sorted.size
        theta = _start(x_sorted)
        if n >= 2 * SUBSAMPLE:  # most iterations on a quantile subsample, a few polishing passes on all data
            theta, _, _ = _newton(quantile_subsample(x_sorted, SUBSAMPLE), theta, max_iter=100, tol=1e-10)
        theta, ll, converged = _newton(x_sorted, theta, max_iter=100, tol=1e-12)
        if n <= SMALL_N and theta[2] > 0:  # few values: the likelihood in ν can also peak near Cauchy; try there too
            cauchy = np.array([theta[0], _start(x_sorted)[1], 0.0])
            other, other_ll, other_converged = _newton(x_sorted, cauchy, max_iter=100, tol=1e-12)
            if other_ll > ll:
                theta, ll, converged = other, other_ll, other_converged
        df = math.exp(theta[2])
        note = ""
        if df >= DF_CAP * (1 - 1e-9):
            df, note = DF_CAP, f"Gaussian limit: df at cap {DF_CAP:g}"
        else:
            lr = 2 * (ll - gaussian.mle(x_sorted)[2])
            if lr < GAUSSIAN_LR_CRITICAL:
                note = f"Gaussian limit: indistinguishable from a Gaussian (LR={max(lr, 0):.2g} < {GAUSSIAN_LR_CRITICAL:.2f})"
        degenerate = df <= DF_FLOOR * (1 + 1e-9)
        if degenerate:
            note = f"shape at bound df={DF_FLOOR:g}"
        return Estimate(self.params(loc=float(theta[0]), scale=math.exp(theta[1]), df=df), converged=converged,
                        note=note if converged else (note or "Newton did not converge"), loglik=ll, degenerate=degenerate)

    def at_bound(self, params: Mapping[str, float]) -> bool:
        return params["df"] <= DF_FLOOR  # the cap is the Gaussian limit: a real answer, not a runaway

    def std_logpdf(self, z, params: Mapping[str, float]) -> np.ndarray:
        """c(ν) − (ν+1)/2 · log1p(z²/ν): scipy's formula without its per-call argument handling,
        which cost more than the arithmetic in the goodness-of-fit stage."""
        nu = params["df"]
        z = np.asarray(z, dtype=np.float64)
        return _log_norm(nu) - 0.5 * (nu + 1) * np.log1p(z * z / nu)

    def std_cdf(self, z, params: Mapping[str, float]) -> np.ndarray:
        return special.stdtr(params["df"], z)

    def std_ppf(self, u, params: Mapping[str, float]) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)  # scipy's formula, without building a frozen distribution per call;
        return np.where(u == 0, -np.inf, special.stdtrit(params["df"], u))  # stdtrit(ν, 0) is +inf: scipy sets the end

    def loglik(self, x, params: Mapping[str, float]) -> float:
        return loglik(np.asarray(x, dtype=np.float64), params["loc"], params["scale"], params["df"])

    def scipy_dist(self, params: Mapping[str, float]):
        return stats.t(params["df"], loc=params["loc"], scale=params["scale"])

    def mse_optimal_clip(self, params: Mapping[str, float], bits: int) -> float:
        """NaN for df <= 2: the variance is infinite, so every clip has infinite expected MSE."""
        return super().mse_optimal_clip(params, bits) if params["df"] > 2 else math.nan

    def sample(self, n, params, rng):
        return params["loc"] + params["scale"] * rng.standard_t(params["df"], size=n)

    def describe(self, params: Mapping[str, float], note: str = "") -> str:
        df = params["df"]
        if df >= DF_CAP:
            return "Gaussian limit"
        return f"Gaussian limit (df≈{df:.3g}, indistinguishable)" if note.startswith("Gaussian limit") else f"df≈{df:.3g}"
