"""Generalized normal (location, scale, shape β): β = 1 is Laplace, β = 2 is Gaussian.

For fixed (μ, β) the scale is closed form, σ^β = (β/n) Σ|x − μ|^β, so only the
profile likelihood in (μ, β) is optimised. A Nelder-Mead fit to a small quantile
subsample, then a profile fit to a larger one, gives the start. From there:

- β ≥ 1.2: Newton's method in (μ, log β) jointly, from one pass per step (``_joint_newton``);
  two passes on a big layer.
- otherwise, or when that fails: alternating steps (``_profile_fit``), Newton in β with
  log|x − μ| cached across β steps, and in μ the exact root for 1 ≤ β ≤ 2, a weighted
  mean (majorise-minimise) below 1 and Newton above 2; for β < 1 a search over the
  data points near μ, where the profile has its cusps (``_cusp_search``).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from scipy import optimize, special, stats

from .. import kernels
from .base import Claim, Estimate, Family, Shape, ascent_direction, blocks, dot, quantile_subsample, register_family

SUBSAMPLE = 20_000
SMALL_N = 1_000  # up to this many values a second profile fit starts from the Gaussian (β = 2)
BETA_MIN, BETA_MAX = 0.05, 1e8
UNIFORM_LIKE_BETA = 1e3  # above this the fit is the uniform limit


ZERO_LOG = kernels.ZERO_LOG  # log|r| stored for r = 0: zeros drop out of every sum


def profile_loglik_per_value(n: int, beta: float, log_s: float) -> float:
    """The log-likelihood per value at (μ, β) maximised over σ, from log S = log Σ|x − μ|^β of n values:
    log β − log 2 − log Γ(1/β) − 1/β − log σ̂, with log σ̂ = log(β S / n) / β."""
    if not math.isfinite(log_s):
        return math.inf  # all values equal μ: degenerate
    log_sigma = (math.log(beta / n) + log_s) / beta
    return math.log(beta / 2) - special.gammaln(1 / beta) - 1 / beta - log_sigma


def beta_derivatives(n: int, beta: float, log_s: float, m1: float, var: float) -> tuple[float, float]:
    """First and second β-derivatives of the profile log-likelihood per value, from log S = log Σ|x − μ|^β and
    the mean m1 and variance of log|x − μ| under the weights |x − μ|^β / S."""
    lg = math.log(beta / n) + log_s
    psi, psi1 = special.digamma(1 / beta), special.zeta(2, 1 / beta)
    d1 = 1 / beta + psi / beta**2 - m1 / beta + lg / beta**2
    d2 = (-1 / beta**2 - psi1 / beta**4 - 2 * psi / beta**3 - var / beta + m1 / beta**2
          + (1 / beta + m1) / beta**2 - 2 * lg / beta**3)
    return d1, d2


class _Profile:
    """Cached log|x − μ| for one μ; evaluates the profile log-likelihood and its β-derivatives.

    One n-sized array is kept, log(|r|/m) with m = max|r| (so |r|^β = m^β (|r|/m)^β never
    overflows, even for β in the thousands); the sums over it run block by block."""

    def __init__(self, x: np.ndarray, mu: float) -> None:
        self.n = x.size
        log_r = np.empty(x.size)
        top = kernels.log_abs_dev(x, mu, log_r)
        self.log_m = top if top > ZERO_LOG else 0.0
        log_r -= self.log_m
        self.log_r_scaled = log_r

    def sums(self, beta: float, order: int = 2) -> tuple[float, float, float]:
        """log S and the first two moments of log|r| under weights |r|^β / S (S = Σ|r|^β)."""
        s, s1, s2 = kernels.exp_sums(self.log_r_scaled, beta, order)
        log_s = beta * self.log_m + math.log(s) if s > 0 else -math.inf
        if order == 0:
            return log_s, math.nan, math.nan
        # Moments of log|r| = log(|r|/m) + log m under the weights.
        m1_scaled = s1 / s
        m2 = s2 / s + 2 * self.log_m * m1_scaled + self.log_m**2 if order > 1 else math.nan
        return log_s, m1_scaled + self.log_m, m2

    def loglik(self, beta: float, log_s: float | None = None) -> float:
        return self.n * profile_loglik_per_value(self.n, beta, self.sums(beta, 0)[0] if log_s is None else log_s)

    def newton_beta(self, beta: float, max_iter: int = 30) -> tuple[float, float]:
        """Maximise over β at this μ (Newton on log β, with a monotone line search).

        A full step is evaluated with the sums the next step needs (one pass gives the likelihood
        too); only a rejected step falls back to likelihood-only passes."""
        sums = self.sums(beta)
        ll = self.loglik(beta, sums[0])
        for _ in range(max_iter):
            log_s, m1, m2 = sums
            d1, d2 = beta_derivatives(self.n, beta, log_s, m1, m2 - m1 * m1)
            # In t = log β: f_t = β f', f_tt = β² f'' + β f'.
            g, h = beta * d1, beta**2 * d2 + beta * d1
            step = -g / h if h < 0 else math.copysign(0.5, g)
            step = max(min(step, 1.0), -1.0)
            cand = min(max(beta * math.exp(step), BETA_MIN), BETA_MAX)
            cand_sums = self.sums(cand)
            cand_ll = self.loglik(cand, cand_sums[0])
            if not cand_ll >= ll:
                step *= 0.5
                while abs(step) > 1e-12:
                    cand = min(max(beta * math.exp(step), BETA_MIN), BETA_MAX)
                    cand_ll = self.loglik(cand)
                    if cand_ll >= ll:
                        break
                    step *= 0.5
                else:
                    return beta, ll
                cand_sums = self.sums(cand)
            converged = abs(cand - beta) <= 1e-10 * beta or cand_ll - ll <= 1e-13 * self.n
            beta, ll, sums = cand, cand_ll, cand_sums
            if converged:
                break
        return beta, ll


def _mu_root(x: np.ndarray, mu: float, beta: float, scale: float) -> float:
    """For 1 ≤ β ≤ 2, Σ|x − μ|^β is convex in μ: its minimiser is the root of the decreasing
    g(μ) = Σ sign(x − μ)|x − μ|^(β−1). Newton steps (g′ = −(β−1) Σ|x − μ|^(β−2) comes from the
    same pass) inside a bracket that every evaluation narrows, bisecting when a step would leave
    it or shrink it too slowly: quadratic near β = 2, never worse than bisection near β = 1,
    where g′ is dominated by the values nearest μ (weighted-mean steps crawl there)."""
    p = beta - 1
    xtol = 1e-13 * scale
    lo, hi = -math.inf, math.inf  # g(lo) > 0 > g(hi)
    m, width = mu, 4 * scale / math.sqrt(x.size)
    for iteration in range(200):
        g, a = kernels.sign_pow_sums(x, m, p)
        if g == 0 or not math.isfinite(g):
            return m
        if g > 0:
            lo = m
        else:
            hi = m
        newton = m + g / (p * a) if p > 0 and a > 0 else math.nan
        if math.isfinite(lo) and math.isfinite(hi):
            if hi - lo <= xtol:
                return 0.5 * (lo + hi)
            inside = lo < newton < hi and abs(newton - m) <= 0.5 * width
            nxt = newton if inside else 0.5 * (lo + hi)
            width = abs(nxt - m) if inside else 0.5 * (hi - lo)
            if abs(nxt - m) <= xtol:
                return nxt
        else:  # no bracket yet: step downhill by 1.5 Newton steps (a standard error without one), then fourfold growing steps
            guess = 1.5 * abs(newton - m) if math.isfinite(newton) else 0.0
            # From a converged μ the Newton step is tiny: a standard-error step there would cost ~35 bisections back.
            width = (max(guess, xtol) if guess > 0 else width) if iteration == 0 else 4 * width
            nxt = m + (width if g > 0 else -width)
        m = nxt
    return m


def _mu_step(x: np.ndarray, mu: float, beta: float, scale: float) -> float:
    """One step lowering Σ|x − μ|^β: the exact minimiser for 1 ≤ β ≤ 2, a weighted mean (MM)
    for β < 1, Newton above 2. Sums run block by block."""
    if 1 <= beta <= 2:
        return _mu_root(x, mu, beta, scale)
    if beta < 1:
        eps = (1e-12 * scale) ** 2
        wx = w_sum = 0.0
        for block in blocks(x):
            r = block - mu
            w = r * r
            w += eps
            np.log(w, out=w)  # (r² + ε)^(β/2 − 1) as exp(…·log(r² + ε)): numpy's exp and log are SIMD, its pow is not
            w *= beta / 2 - 1
            np.exp(w, out=w)
            wx, w_sum = wx + dot(w, block), w_sum + float(w.sum())
        return wx / w_sum
    m = max(abs(float(x.max()) - mu), abs(mu - float(x.min())))
    if m == 0:
        return mu
    g = h = 0.0  # Newton on Σ|x − μ|^β, both sums scaled by m^(β−2): no overflow
    for block in blocks(x):
        r = (block - mu) / m
        a = np.abs(r)
        g += float(np.sum(np.sign(r) * a ** (beta - 1)))
        h += float(np.sum(a ** (beta - 2)))
    g, h = g * m, (beta - 1) * h
    return mu + g / h if h > 0 else mu


JOINT_MIN_BETA = 1.2  # below this the μ-curvature Σ|x − μ|^(β−2) is ruled by the values nearest μ: Newton in μ crawls
JOINT_MAX_ITER = 8


def _joint_at(x_sorted: np.ndarray, mu: float, beta: float):
    """(ℓ/n, gradient, Hessian) of the profile log-likelihood per value at (μ, β), the derivatives in (μ, log β),
    from one pass over sorted x; (−inf, None, None) where it cannot be evaluated.

    Values equal to μ are left out of the sums: they add 0 to Σ|x − μ|^β (β > 0) and to its μ- and
    β-derivatives (β > 1); only the μ-curvature, infinite there for β < 2, is then taken as its finite part."""
    n = x_sorted.size
    lo, hi = int(np.searchsorted(x_sorted, mu, "left")), int(np.searchsorted(x_sorted, mu, "right"))
    m = max(abs(float(x_sorted[0]) - mu), abs(float(x_sorted[-1]) - mu))
    if not 0 < m < math.inf:  # every value at μ (a constant bootstrap replicate), or a spread beyond float64
        return -math.inf, None, None
    sums = kernels.gennorm_sums((x_sorted[:lo], x_sorted[hi:]), mu, m, beta)
    s0 = sums[0]
    if not (s0 > 0 and math.isfinite(s0)):
        return -math.inf, None, None
    log_s = beta * math.log(m) + math.log(s0)
    _, s1, s2, t1, t2, u1 = sums / s0  # moments under the weights |x − μ|^β / S, of the scaled values
    d1, d2 = beta_derivatives(n, beta, log_s, s1 + math.log(m), s2 - s1 * s1)  # (mean, variance of log|x − μ|)
    g_mu = t1 / m
    h_mumu = (-(beta - 1) * t2 + beta * t1 * t1) / m**2
    h_mubeta = (u1 - t1 * s1) / m
    grad = np.array([g_mu, beta * d1])  # in (μ, t = log β): f_t = β f', f_tt = β² f'' + β f'
    hess = np.array([[h_mumu, beta * h_mubeta], [beta * h_mubeta, beta**2 * d2 + beta * d1]])
    return profile_loglik_per_value(n, beta, log_s), grad, hess


def _joint_newton(x_sorted: np.ndarray, mu: float, beta: float, tol: float = 1e-12):
    """Newton's method on the profile in (μ, log β) jointly, for β ≥ JOINT_MIN_BETA, where it converges in a few
    passes (the alternating fit needs a log pass per μ and an exp pass per β step). Returns (μ, β, ℓ)
    once the Newton decrement is below ``tol`` per value, or None (left to the alternating fit) when β leaves
    [JOINT_MIN_BETA, UNIFORM_LIKE_BETA) or it has not converged in JOINT_MAX_ITER steps."""
    n = x_sorted.size
    ll, grad, hess = _joint_at(x_sorted, mu, beta)
    if grad is None or not np.all(np.isfinite(hess)):
        return None
    for _ in range(JOINT_MAX_ITER):
        step = ascent_direction(grad, hess)
        if float(grad @ step) < tol:
            return float(mu), float(beta), float(ll * n)
        scale = _scale_from_loglik(n, beta, ll * n)
        t = min(1.0, scale / max(abs(step[0]), 1e-300), 1.0 / max(abs(step[1]), 1e-300))  # ≤ σ in μ, a factor e in β
        while t > 1e-6:
            cand_mu, cand_beta = mu + t * step[0], beta * math.exp(t * step[1])
            cand = _joint_at(x_sorted, cand_mu, cand_beta)
            if cand[0] >= ll and cand[1] is not None and np.all(np.isfinite(cand[2])):
                break
            t *= 0.5
        else:
            return None
        mu, beta, (ll, grad, hess) = cand_mu, cand_beta, cand
        if not JOINT_MIN_BETA <= beta < UNIFORM_LIKE_BETA:
            return None
    return None


def _at_midrange(x: np.ndarray, beta: float) -> tuple[float, float, float]:
    """The uniform limit's location, the midrange (x sorted), with the best β and profile log-likelihood there."""
    mid = 0.5 * (float(x[0]) + float(x[-1]))
    return (mid, *_fit_beta(x, mid, beta))


def _fit_beta(x: np.ndarray, mu: float, beta: float) -> tuple[float, float]:
    """The best β (and profile log-likelihood) at this μ; the profile's n-sized cache is freed on return."""
    return _Profile(x, mu).newton_beta(beta)


def _profile_fit(x: np.ndarray, mu: float, beta: float, max_outer: int = 50) -> tuple[float, float, float, bool]:
    """Alternate β-Newton and μ-steps until the profile log-likelihood stops rising.

    Near β = 1 the μ-steps converge linearly and slowly (Weiszfeld-like), so when two
    successive steps shrink in the same direction the geometric limit μ + δ/(1 − r)
    (Aitken) is tried too, and kept when it is better."""
    beta, ll = _fit_beta(x, mu, beta)
    # The spread only sets the μ-steps' tolerance and smoothing floor: the interquartile range, read off sorted x.
    scale = float(x[(3 * x.size) // 4] - x[x.size // 4]) or float(x[-1] - x[0]) or 1.0
    prev_step = prev_gain = math.nan
    for _ in range(max_outer):
        if beta >= UNIFORM_LIKE_BETA:  # the uniform limit: its location MLE is the midrange
            mid, mid_beta, mid_ll = _at_midrange(x, beta)
            return (mid, mid_beta, mid_ll, True) if mid_ll >= ll else (mu, beta, ll, True)
        new_mu = _mu_step(x, mu, beta, scale)
        step = new_mu - mu
        new_beta, new_ll = _fit_beta(x, new_mu, beta)
        ratio = step / prev_step if prev_step else math.nan
        if 0 < ratio < 0.99:
            jump = mu + step / (1 - ratio)
            jump_beta, jump_ll = _fit_beta(x, jump, new_beta)
            if jump_ll > new_ll:
                new_mu, new_beta, new_ll, step = jump, jump_beta, jump_ll, math.nan
        if new_ll < ll:  # the μ step did not help (β > 2 Newton overshoot, or converged)
            return mu, beta, ll, True
        gain = new_ll - ll
        mu, beta, ll = new_mu, new_beta, new_ll
        # Converged when this gain, or the geometric bound on all further gains, is negligible.
        shrink = gain / prev_gain if prev_gain > 0 else math.nan
        if gain <= 1e-12 * x.size or (0 < shrink < 0.9 and gain * shrink / (1 - shrink) <= 1e-10 * x.size):
            return mu, beta, ll, True
        prev_step, prev_gain = step, gain
    return mu, beta, ll, False


# The windows searched, in σ/√n around μ: every data point near μ (the cusps next to it), and a sparser grid far
# out. For β < 1 the profile in μ is rugged beyond its cusps: local maxima nats apart spread over tens of σ/√n
# (on a 131 k-value β = 0.29 layer the best was 13 σ/√n from where the local search stopped, 1.9 nats above
# it and 1.5e-5 nats per weight short of scipy's fit).
CUSP_WINDOWS = ((3, 512), (30, 128))  # (half-width in σ/√n, data points ranked at most: evenly spaced when it holds more)
CUSP_NEAR = 8  # values beyond 8 group half-widths of a group's centre enter its candidates' sums through a Taylor series
CUSP_ORDER = 13  # whose truncation error is below 8^-14 ≈ 2e-13 of their sum


def _cusp_search(x_sorted: np.ndarray, mu: float, beta: float, scale: float,
                 windows: tuple[tuple[float, int], ...] = CUSP_WINDOWS) -> float:
    """For β < 1, Σ|x − μ|^β is concave between data points, so its minima sit on data points
    and local steps stall on a cusp. In each of ``windows`` (±w σ/√n around μ) rank up to
    its count of data points by :func:`_candidate_sums`, exact to ~1e-13, and return the best
    of all; the caller keeps it only if its full profile fit is better.

    The candidates are ranked in consecutive groups, each summing exactly only the values near
    it: one series pass over the data per group against a near-sum per candidate, so the group
    count balances the two (their product is fixed by the window's width)."""
    n = x_sorted.size
    best, best_sum = mu, math.inf
    for window, most in windows:
        half = window * scale / math.sqrt(n)
        lo, hi = np.searchsorted(x_sorted, [mu - half, mu + half])
        if hi - lo < 1 or not half > 0:
            continue
        candidates = np.unique(np.linspace(lo, hi - 1, min(hi - lo, most)).astype(int))
        near_all = np.diff(np.searchsorted(x_sorted, [mu - CUSP_NEAR * half, mu + CUSP_NEAR * half]))[0]
        # Cost ≈ candidates × near_all / groups (exact terms) + groups × n × CUSP_ORDER / 8 (series terms).
        groups = int(min(candidates.size, max(1, round(math.sqrt(8 * candidates.size * near_all / (n * CUSP_ORDER))))))
        for group in np.array_split(candidates, groups):
            first, last = float(x_sorted[group[0]]), float(x_sorted[group[-1]])
            centre = 0.5 * (first + last)
            reach = CUSP_NEAR * max(0.5 * (last - first), half / groups)
            near_lo, near_hi = np.searchsorted(x_sorted, [centre - reach, centre + reach])
            sums = _candidate_sums(x_sorted, centre, beta, x_sorted[group], reach, near_lo, near_hi)
            i = int(np.argmin(sums))
            if sums[i] < best_sum:
                best, best_sum = float(x_sorted[group[i]]), float(sums[i])
    return best



def _candidate_sums(x_sorted: np.ndarray, mu: float, beta: float, centres: np.ndarray, reach: float,
                    near_lo: int, near_hi: int) -> np.ndarray:
    """Σ|x − c|^β for centres c within reach / CUSP_NEAR of μ (here the expansion point), for ranking them in one
    pass over the data.

    Values within ``reach`` of μ (x_sorted[near_lo:near_hi]) are summed exactly, centre by centre;
    each far one, with r = x − μ, d = (c − μ)/R and R = reach (so |d| ≤ 1/8 ≤ |R/r|⁻¹/8), by the
    binomial series |r − dR|^β = |r|^β Σ_k C(β, k)(−d)^k (R/r)^k, whose moments Σ|r|^β(R/r)^k
    are shared by every centre."""
    moments = np.zeros(CUSP_ORDER + 1)
    for part in (x_sorted[:near_lo], x_sorted[near_hi:]):
        for block in blocks(part):
            r = block - mu
            ratio = reach / r
            term = np.exp(beta * np.log(np.abs(r)))
            for k in range(CUSP_ORDER + 1):
                moments[k] += float(term.sum())
                term *= ratio
    far = np.polynomial.polynomial.polyval(-(centres - mu) / reach, special.binom(beta, np.arange(CUSP_ORDER + 1)) * moments)
    near = x_sorted[near_lo:near_hi]
    sums = np.empty(centres.size)
    rows = max(1, kernels.BLOCK // max(near.size, 1))
    with np.errstate(divide="ignore"):  # |x − c| = 0 at the centre's own value: log 0 = −inf, exp(−inf) = 0 = 0^β
        for start in range(0, centres.size, rows):
            d = np.abs(near[None, :] - centres[start : start + rows, None])
            np.log(d, out=d)
            d *= beta
            np.exp(d, out=d)
            sums[start : start + rows] = d.sum(axis=1)
    return far + sums


def _start(x_sorted: np.ndarray) -> tuple[float, float]:
    """Nelder-Mead on the profile of a small quantile subsample: a robust global start.

    (A method-of-moments start was tried: a third faster, but on a β ≈ 0.28 CIFAR layer it
    settled on another cusp, 3e-3 nats per weight below scipy's fit.)"""
    n = x_sorted.size
    sub = x_sorted[:: max(1, n // 2000)]
    mu0 = float(sub[sub.size // 2])
    spread = float(sub[-1] - sub[0]) or 1.0

    def neg(p):  # −(profile log-likelihood per value); Σ|r|^β as m^β Σ(|r|/m)^β, m = max|r|: no overflow
        mu, log_beta = p
        beta = math.exp(min(max(log_beta, math.log(BETA_MIN)), math.log(BETA_MAX)))
        a = np.abs(sub - mu)
        top = float(a.max())
        if top == 0:
            return -math.inf
        a /= top
        with np.errstate(divide="ignore"):  # (|r|/m)^β as exp(β log(|r|/m)): exp(−inf) = 0 at r = 0; SIMD, unlike pow
            np.log(a, out=a)
        a *= beta
        np.exp(a, out=a)
        return -profile_loglik_per_value(sub.size, beta, beta * math.log(top) + math.log(float(np.sum(a))))

    with np.errstate(invalid="ignore"):  # inf - inf among the simplex values where neg is inf: not the user's concern
        res = optimize.minimize(neg, [mu0, math.log(1.5)], method="Nelder-Mead",
                                options={"xatol": 1e-3 * spread, "fatol": 1e-5, "initial_simplex": [[mu0, 0.4], [mu0 + 0.01 * spread, 0.4], [mu0, 0.8]]})
    return float(res.x[0]), float(min(max(math.exp(res.x[1]), BETA_MIN), BETA_MAX))


def _polish(x_sorted: np.ndarray, mu: float, beta: float) -> tuple[float, float, float, bool] | None:
    """From the subsample's optimum to the full data's in a few passes where that is possible: the joint Newton
    for β ≥ JOINT_MIN_BETA, the midrange and β's climb to its cap in the uniform limit. None: use the
    alternating fit."""
    if JOINT_MIN_BETA <= beta < UNIFORM_LIKE_BETA:
        joint = _joint_newton(x_sorted, mu, beta)
        return None if joint is None else (*joint, True)
    if beta >= UNIFORM_LIKE_BETA:
        mid, mid_beta, mid_ll = _at_midrange(x_sorted, beta)
        return (mid, mid_beta, mid_ll, True) if mid_beta >= UNIFORM_LIKE_BETA else None
    return None


def _scale_from_loglik(n: int, beta: float, loglik: float) -> float:
    """σ̂ at (μ, β) from the profile log-likelihood there (see :func:`profile_loglik_per_value`): no pass over the data."""
    return math.exp(math.log(beta / 2) - special.gammaln(1 / beta) - 1 / beta - loglik / n)


@register_family
class GenNorm(Family):
    name = "gennorm"
    label = "gennorm"
    color = "tab:red"
    shapes = (Shape("beta", "β", BETA_MIN, BETA_MAX, "β = 1 is Laplace, β = 2 is Gaussian", low="Laplacian", high="Gaussian"),)
    headline = "beta"
    # A median β at or below 1.3 is closer to Laplace (1) than to Gaussian (2); at or above 1.8 it is Gaussian-like.
    claims = (Claim("Weights are Laplacian", "≤", 1.3, support="laplace"),
              Claim("Gaussian, by the central limit theorem", "≥", 1.8, at_init=True))
    nests = ("gaussian", "laplace")

    def fit(self, x_sorted: np.ndarray) -> Estimate:
        n = x_sorted.size
        mu, beta = _start(x_sorted)
        if n >= 2 * SUBSAMPLE:  # (a "subsample" of every value would only repeat the full fit)
            mu, beta, _, _ = _profile_fit(quantile_subsample(x_sorted, SUBSAMPLE), mu, beta)
        mu, beta, ll, converged = _polish(x_sorted, mu, beta) or _profile_fit(x_sorted, mu, beta)
        if n <= SMALL_N:  # few values: the profile can peak on both sides of β = 1; climb from the Gaussian too
            other = _profile_fit(x_sorted, float(np.mean(x_sorted)), 2.0)
            if other[2] > ll and other[1] > BETA_MIN:
                mu, beta, ll, converged = other
        for attempt in range(3):  # β < 1: the profile in μ has a cusp at every data point
            if beta >= 1:
                break
            # After a move only the cusps next to the new μ: the wide window was ranked a few σ/√n away.
            windows = CUSP_WINDOWS if attempt == 0 else CUSP_WINDOWS[:1]
            new_mu = _cusp_search(x_sorted, mu, beta, _scale_from_loglik(n, beta, ll), windows)
            if new_mu == mu:
                break
            new_beta, new_ll = _fit_beta(x_sorted, new_mu, beta)
            if new_ll <= ll or new_beta <= BETA_MIN:  # (at a data point β → 0 runs off to an unbounded likelihood)
                break
            mu, beta, ll = new_mu, new_beta, new_ll
        note = "" if converged else "profile optimisation did not converge"
        degenerate = beta <= BETA_MIN
        if beta >= UNIFORM_LIKE_BETA:
            note = f"uniform limit: β={beta:.3g}"
        elif degenerate:
            note = f"shape at bound β={beta:g}"
        return Estimate(self.params(loc=mu, scale=_scale_from_loglik(n, beta, ll), beta=beta), converged=converged,
                        note=note, loglik=ll, degenerate=degenerate)

    def at_bound(self, params: Mapping[str, float]) -> bool:
        return params["beta"] <= BETA_MIN  # the upper end is the uniform limit: a real answer, not a runaway

    def std_logpdf(self, z, params: Mapping[str, float]) -> np.ndarray:
        """log(β / 2Γ(1/β)) − |z|^β, scipy's formula without its per-call argument handling, |z|^β as exp(β log|z|)."""
        beta = params["beta"]
        a = np.abs(np.asarray(z, dtype=np.float64))
        with np.errstate(divide="ignore", over="ignore"):  # |z| = 0: exp(β·log 0) = exp(−inf) = 0 = 0^β; inf beyond range
            np.log(a, out=a)
            a *= beta
            np.exp(a, out=a)  # |z|^β: numpy's exp and log are SIMD, its pow is not (a third of the time)
        return math.log(0.5 * beta) - special.gammaln(1 / beta) - a

    def std_cdf(self, z, params: Mapping[str, float]) -> np.ndarray:
        # scipy's formula: the tail mass from gammaincc, exact far in the lower tail (and, by symmetry, in sf).
        c = 0.5 * np.sign(z)
        return (0.5 + c) - c * special.gammaincc(1 / params["beta"], np.abs(z) ** params["beta"])

    def std_ppf(self, u, params: Mapping[str, float]) -> np.ndarray:
        """sign(u − ½)·y^(1/β), y the Gamma(1/β) quantile of the two-sided tail mass p = 2 min(u, 1 − u), as scipy
        has it, but inverting the lower incomplete gamma at 1 − p where p > 0.05 (a quarter of the cost of
        scipy's upper-tail inverse; 1 − p is then exact to the last digit that matters)."""
        u = np.asarray(u, dtype=np.float64)
        a = 1 / params["beta"]
        p = 2 * np.minimum(u, 1 - u)
        y = np.empty_like(p)
        central = p > 0.05
        y[central] = special.gammaincinv(a, 1 - p[central])
        y[~central] = special.gammainccinv(a, p[~central])
        return np.sign(u - 0.5) * y ** a

    def scipy_dist(self, params: Mapping[str, float]):
        return stats.gennorm(params["beta"], loc=params["loc"], scale=params["scale"])

    def describe(self, params: Mapping[str, float], note: str = "") -> str:
        return "uniform limit" if params["beta"] >= UNIFORM_LIKE_BETA else f"β≈{params['beta']:.3g}"
