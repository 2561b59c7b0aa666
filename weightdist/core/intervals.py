"""95 % intervals on the fitted shape and scale of one layer: β (gennorm), df (Student-t), scale.

Method, chosen to be exact on big layers and cheap (a few dozen passes over the data, no subsample):

- **Shape (β, df): profile likelihood.** The interval is every shape value whose profile
  log-likelihood is within χ²₁(0.95)/2 = 1.92 nats of the maximum. At each trial shape the
  scale is re-maximised exactly (gennorm: closed form σ^β = (β/n) Σ|x − μ|^β; Student-t: a
  one-dimensional Newton solve in νσ²). The location is held at its MLE: in a symmetric
  location–scale family the location is orthogonal to scale and shape (their Fisher
  information is zero), so re-maximising it moves the profile by a higher-order amount;
  ``tests/test_intervals.py`` checks this against a brute-force profile that re-maximises
  every parameter.
- **Scale: Wald on log σ** (quadratic approximation at the optimum, from the observed
  information with the shape free): the scale is pinned to ~1/√n relative precision and its
  profile is close to quadratic in log σ; the test compares it with the brute-force profile.

A shape whose profile never drops by 1.92 nats before the fitter's bound has that side open:
``df_hi`` is ``inf`` when a Gaussian (df = ∞) is inside the interval, ``beta_hi`` when the uniform
limit (β = ∞) is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
from scipy import optimize, special

from . import kernels
from .fitting import rescale_exponent, scaled_params
from .families.base import blocks
from .families.gennorm import BETA_MAX, BETA_MIN, _Profile, beta_derivatives
from .families.student_t import DF_CAP, DF_FLOOR, _derivatives, _log_norm
from .registry import Registry

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A confidence interval for one parameter; ``method`` says how it was obtained."""

    lo: float
    hi: float
    method: str  # "profile" or "wald"


# family name -> function(x_sorted, params, level) -> {parameter: Interval}
INTERVALS: Registry[Callable[[np.ndarray, Mapping[str, float], float], dict[str, Interval]]] = Registry("interval method")


def register_intervals(family: str):
    return INTERVALS.register(family)


def half_chi2(level: float) -> float:
    """The log-likelihood drop that bounds a profile-likelihood interval for one parameter."""
    return 0.5 * float(special.chdtri(1, 1 - level))  # stats.chi2.ppf(level, 1) without its per-call overhead


def profile_bounds(profile: Callable[[float], float], t_hat: float, ll_hat: float, drop: float, step: float,
                   lower: float, upper: float, xtol: float = 1e-7) -> tuple[float, float]:
    """Where ``profile(t)`` (a log-likelihood in a parameter t) falls ``drop`` below its maximum
    ``ll_hat`` at ``t_hat``, on each side: bracket by doubling steps, then Brent. A side that does not
    fall that far before ``lower``/``upper`` returns that bound."""

    def gap(t: float) -> float:
        return ll_hat - profile(t) - drop

    ends = []
    for direction, bound in ((-1.0, lower), (1.0, upper)):
        inner, d = t_hat, step
        while True:
            t = t_hat + direction * d
            if (t - bound) * direction >= 0:
                t = bound
            if gap(t) >= 0:
                ends.append(optimize.brentq(gap, min(inner, t), max(inner, t), xtol=xtol))
                break
            if t == bound:
                ends.append(bound)
                break
            inner, d = t, 2 * d
    return ends[0], ends[1]


def profile_bounds_newton(evaluate: Callable[[float], tuple[float, float]], t_hat: float, ll_hat: float, drop: float,
                          steps: tuple[float, float], lower: float, upper: float, xtol: float = 1e-7) -> tuple[float, float]:
    """As :func:`profile_bounds`, for a profile whose slope comes with its value (``evaluate(t)`` →
    (log-likelihood, its derivative in t)): safeguarded Newton on each side, from t_hat ∓ ``steps``
    (e.g. the Wald half-widths). The profile is nearly quadratic near its peak, so each end takes about
    four evaluations instead of Brent's dozen; a Newton step leaving the bracket is replaced by bisection."""
    target = ll_hat - drop
    ends = []
    for direction, bound, step in ((-1.0, lower, steps[0]), (1.0, upper, steps[1])):
        inner, outer = t_hat, math.nan  # the profile is above the target at inner, below it at outer
        t = t_hat + direction * (step if step > 0 else 1e3 * xtol)  # (at t_hat itself the slope is 0: no Newton step)
        for _ in range(100):
            if (t - bound) * direction >= 0:
                t = bound
            ll, slope = evaluate(t)
            gap = ll - target
            if gap > 0 and t == bound:  # the profile never falls that far: the side is open
                break
            if gap > 0:
                inner = t
            else:
                outer = t
            newton = t - gap / slope if slope != 0 else math.nan
            if gap == 0 or abs(outer - inner) <= xtol or abs(newton - t) <= xtol:
                t = newton if abs(newton - t) <= xtol else t
                break
            if math.isnan(outer):  # no bracket yet: Newton (past the root where the profile is concave), else twice as far
                t = newton if (newton - t) * direction > 0 else t_hat + 2 * (t - t_hat)
            else:
                t = newton if min(inner, outer) < newton < max(inner, outer) else 0.5 * (inner + outer)
        else:  # not settled in 100 evaluations: the middle of the bracket, or the last point evaluated
            t = t if math.isnan(outer) else 0.5 * (inner + outer)
        ends.append(t)
    return ends[0], ends[1]


def wald_log_interval(value: float, se_log: float, level: float) -> Interval:
    z = -float(special.ndtri((1 - level) / 2))  # stats.norm.isf
    return Interval(value * math.exp(-z * se_log), value * math.exp(z * se_log), "wald")


@register_intervals("gennorm")
def gennorm_intervals(x_sorted: np.ndarray, params: Mapping[str, float], level: float = LEVEL) -> dict[str, Interval]:
    """β by profile likelihood (σ closed form at each β, μ at its MLE); σ by Wald on log σ."""
    prof = _Profile(x_sorted, params["loc"])
    try:
        return _gennorm_intervals(prof, x_sorted.size, params, level)
    finally:  # scipy's root finders keep their callables (so this profile) in a reference cycle: free its n values now
        prof.log_r_scaled = np.empty(0)


def _gennorm_intervals(prof: _Profile, n: int, params: Mapping[str, float], level: float) -> dict[str, Interval]:
    beta = params["beta"]
    log_s, m1, m2 = prof.sums(beta, 2)
    ll_hat = prof.loglik(beta, log_s)
    # Observed information of (log σ, β) at the optimum: with T = Σ|r|^β / σ^β (= n/β there) and
    # m1, v the mean and variance of log|r| under the weights |r|^β (see _Profile.sums).
    s = math.log(params["scale"])
    t_val, dev, var = n / beta, m1 - s, m2 - m1 * m1
    h_ss = -beta**2 * t_val
    h_sb = t_val * (1 + beta * dev)
    h_bb = (-n / beta**2 - n * special.zeta(2, 1 / beta) / beta**4 - 2 * n * special.digamma(1 / beta) / beta**3
            - t_val * (dev * dev + var))
    info = -np.array([[h_ss, h_sb], [h_sb, h_bb]])
    cov = np.linalg.inv(info)
    se_log_scale = math.sqrt(max(cov[0, 0], 0.0))
    # The β profile (σ re-maximised) has curvature 1/var(β̂) = 1/cov[1, 1]: the Wald ends in log β start the Newton search.
    z = math.sqrt(2 * half_chi2(level))
    se_log_beta = math.sqrt(cov[1, 1]) / beta if cov[1, 1] > 0 else 2 / math.sqrt(n)
    lo, hi = profile_bounds_newton(lambda t: _beta_profile(prof, math.exp(t)), math.log(beta), ll_hat, half_chi2(level),
                                   steps=(z * se_log_beta, z * se_log_beta), lower=math.log(BETA_MIN), upper=math.log(BETA_MAX))
    beta_hi = math.inf if hi >= math.log(BETA_MAX) else math.exp(hi)  # the uniform limit (β = ∞) is inside
    return {"beta": Interval(math.exp(lo), beta_hi, "profile"),
            "scale": wald_log_interval(params["scale"], se_log_scale, level)}


def _beta_profile(prof: _Profile, beta: float) -> tuple[float, float]:
    """The gennorm profile log-likelihood at β (μ fixed, σ closed form) and its derivative in log β, from one pass."""
    log_s, m1, _ = prof.sums(beta, 1)
    d1, _ = beta_derivatives(prof.n, beta, log_s, m1, math.nan)  # per value, in β
    return prof.loglik(beta, log_s), prof.n * beta * d1


class _ScalarChebyshev:
    """A numpy Chebyshev series evaluated at one float by the same Clenshaw recurrence as ``chebval`` (the same
    rounding), in plain floats: the root finders call it thousands of times per layer, and numpy's per-call
    array handling cost twenty times the arithmetic."""

    def __init__(self, series: np.polynomial.Chebyshev) -> None:
        self.domain = tuple(float(v) for v in series.domain)
        self.offset, self.slope = (float(v) for v in series.mapparms())
        self.coef = [float(c) for c in series.coef]

    def __call__(self, x: float) -> float:
        x = self.offset + self.slope * x
        c = self.coef
        if len(c) == 1:
            return c[0]
        if len(c) == 2:
            return c[0] + c[1] * x
        x2, c0, c1 = 2 * x, c[-2], c[-1]
        for k in range(len(c) - 3, -1, -1):
            c0, c1 = c[k] - c1, c0 + c1 * x2
        return c0 + c1 * x


class _TProfile:
    """Student-t log-likelihood with μ fixed, maximised over σ at a given ν.

    With c = νσ² the data enter only through G = Σ log(1 + r²/c), and the σ-score is zero where
    Σ r²/(c + r²) = n/(ν + 1), a monotone equation in c. G is evaluated exactly at Chebyshev nodes and
    interpolated, in whichever variable needs fewer nodes for ~1e-15 accuracy: u = log c on a window
    around the estimate (G is analytic in a strip of half-width π in u), or v = 1/c on [0, V], which
    reaches ν = ∞ (G is analytic in v except at v = −1/max r²). Roots outside the interpolated range
    fall back to exact passes."""

    def __init__(self, x: np.ndarray, mu: float) -> None:
        self.n = x.size
        self.r2 = np.empty(x.size)
        for out, block in zip(blocks(self.r2), blocks(x)):
            np.subtract(block, mu, out=out)
            np.square(out, out=out)
        self.r2_max = float(self.r2.max())
        self.cheb = None
        self.in_v = False

    def g(self, c: float) -> float:
        """G = Σ log(1 + r²/c), one pass over the data."""
        return sum(float(np.log1p(block / c).sum()) for block in blocks(self.r2))

    @staticmethod
    def _degree(rho: float) -> int | float:
        """Chebyshev degree for ~1e-15 accuracy when the error falls as rho^-degree; inf (never the cheaper
        variable) where rho rounds to 1: a singularity on the interval itself (one huge outlier in v)."""
        if not rho > 1:
            return math.inf
        return int(min(max(math.ceil(15 * math.log(10) / math.log(rho)), 6), 120))

    def interpolate(self, u_lo: float, u_hi: float, v_max: float) -> None:
        """Chebyshev interpolant of G in u on [u_lo, u_hi] or in v on [0, v_max], whichever is cheaper."""
        half = max(0.5 * (u_hi - u_lo), 1e-3)
        ratio = math.pi / half
        deg_u = self._degree(ratio + math.sqrt(1 + ratio * ratio))
        z = 1 + 2 / (self.r2_max * v_max) if self.r2_max > 0 else math.inf
        deg_v = self._degree(z + math.sqrt(z * z - 1)) if math.isfinite(z) else 6
        self.in_v = deg_v < deg_u
        lo, hi, degree = (0.0, v_max, deg_v) if self.in_v else (u_lo, u_hi, deg_u)
        nodes = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.polynomial.chebyshev.chebpts1(degree + 1)
        values = [self.g(1 / t) if self.in_v else self.g(math.exp(t)) for t in nodes]
        if self.in_v:
            values = [0.0 if t == 0 else val for t, val in zip(nodes, values)]
        cheb = np.polynomial.Chebyshev.fit(nodes, values, degree, domain=[lo, hi])
        self.cheb, self.dcheb = _ScalarChebyshev(cheb), _ScalarChebyshev(cheb.deriv())

    def _solve(self, target: float) -> tuple[float, float] | None:
        """(log c, G) where Σ r²/(c + r²) = target, from the interpolant; None outside its range.
        In u: −G'(u) = target; in v: v·G'(v) = target (both increasing towards small c)."""
        a, b = self.cheb.domain
        if self.in_v:
            f = lambda v: v * self.dcheb(v) - target
            if not f(b) > 0:
                return None
            v = optimize.brentq(f, a, b, xtol=1e-15 * b, rtol=1e-13)
            return -math.log(v), float(self.cheb(v))
        f = lambda u: -self.dcheb(u) - target
        if not (f(a) > 0 > f(b)):
            return None
        u = optimize.brentq(f, a, b, xtol=1e-13)
        return u, float(self.cheb(u))

    def loglik(self, nu: float) -> float:
        target = self.n / (nu + 1)
        solved = self._solve(target) if self.cheb is not None else None
        if solved is None:  # outside the interpolated range: Newton in u = log c on exact passes
            u = math.log(self.gaussian_var() * nu)
            for _ in range(100):
                c = math.exp(u)
                s1 = s2 = 0.0
                for block in blocks(self.r2):
                    w = block / (c + block)
                    s1, s2 = s1 + float(w.sum()), s2 + kernels.dot(w, 1 - w)
                step = max(min((s1 - target) / s2, 2.0), -2.0) if s2 > 0 else 0.0
                u += step
                if abs(step) < 1e-10:
                    break
            solved = (u, self.g(math.exp(u)))
        u, g = solved
        return self.n * (_log_norm(nu) + 0.5 * math.log(nu) - 0.5 * u) - 0.5 * (nu + 1) * g

    def gaussian_var(self) -> float:
        return sum(float(block.sum()) for block in blocks(self.r2)) / self.n

    def gaussian_loglik(self) -> float:
        """The ν → ∞ limit: a Gaussian with the same (fixed) location."""
        return -0.5 * self.n * (math.log(2 * math.pi * self.gaussian_var()) + 1)


@register_intervals("student_t")
def student_t_intervals(x_sorted: np.ndarray, params: Mapping[str, float], level: float = LEVEL) -> dict[str, Interval]:
    """df by profile likelihood (σ re-maximised at each df, μ at its MLE); σ by Wald on log σ."""
    prof = _TProfile(x_sorted, params["loc"])
    try:
        return _student_t_intervals(prof, x_sorted, params, level)
    finally:  # as in gennorm_intervals: free the n squared residuals the root finders' cycle would keep
        prof.r2 = np.empty(0)


def _student_t_intervals(prof: _TProfile, x_sorted: np.ndarray, params: Mapping[str, float], level: float) -> dict[str, Interval]:
    n, mu, scale, df = x_sorted.size, params["loc"], params["scale"], params["df"]
    drop = half_chi2(level)
    at_cap = df >= DF_CAP * (1 - 1e-9)
    _, _, hess = _derivatives(x_sorted, mu, scale, df)
    block = slice(0, 2) if at_cap else slice(0, 3)  # at the cap ν carries no information
    cov = np.linalg.inv(-hess[block, block])
    se_log_scale = math.sqrt(max(cov[1, 1], 0.0))
    log_df, log_cap, log_floor = math.log(df), math.log(DF_CAP), math.log(DF_FLOOR)
    # The ν the profile will visit: ±6 Wald standard errors of log ν around the estimate, or, where ν is
    # large or at the cap, everything from √n/20 (below where n weights tell a t from a Gaussian) to ∞.
    se_log_df = 0.0 if at_cap else math.sqrt(max(cov[2, 2], 0.0))
    wide = at_cap or not 0 < se_log_df < 1  # beyond an e-fold the quadratic approximation says little
    nu_lo = max(DF_FLOOR, min(df / 4, math.sqrt(n) / 20) if wide else df * math.exp(-6 * se_log_df))
    nu_hi = DF_CAP if wide else min(DF_CAP, df * math.exp(6 * se_log_df))
    log_var = 2 * math.log(scale)
    prof.interpolate(math.log(nu_lo) + log_var - 0.5, math.log(nu_hi) + log_var + 0.5,
                     v_max=1 / (min(nu_lo, math.sqrt(n) / 20) * scale * scale))
    if at_cap:
        ll_hat = prof.gaussian_loglik()
        lo, _ = profile_bounds(lambda t: prof.loglik(math.exp(t)), log_cap, ll_hat, drop, step=1.0, lower=log_floor,
                               upper=log_cap, xtol=1e-5)
        lo_hi = (lo, log_cap)
    else:
        ll_hat = prof.loglik(df)
        lo_hi = profile_bounds(lambda t: prof.loglik(math.exp(t)), log_df, ll_hat, drop, step=min(2 * se_log_df, 1.0) or 0.5,
                               lower=log_floor, upper=log_cap, xtol=1e-5)
    hi = math.exp(lo_hi[1]) if lo_hi[1] < log_cap else math.inf
    return {"df": Interval(math.exp(lo_hi[0]), hi, "profile"), "scale": wald_log_interval(scale, se_log_scale, level)}


def parameter_intervals(x_sorted: np.ndarray, fits: Mapping[str, object], level: float = LEVEL) -> dict[str, dict[str, Interval]]:
    """Intervals for every fitted family that has an interval method: {family: {parameter: Interval}}.

    ``fits``: family name -> an object with ``params`` (a FamilyFit). Degenerate fits are skipped."""
    out = {}
    for name, f in fits.items():
        if name in INTERVALS and not getattr(f, "degenerate", False) and all(math.isfinite(v) for v in f.params.values()):
            out[name] = _rescaled(INTERVALS.get(name), x_sorted, f.params, level)
    return out


def _rescaled(method, x_sorted: np.ndarray, params: Mapping[str, float], level: float) -> dict[str, Interval]:
    """``method`` on x·2^−e with e from :func:`rescale_exponent` (0 for every ordinary layer), as the fits are
    made: values near the ends of float64 would overflow or vanish when squared. Shapes do not change with
    units; loc, scale and the scale's interval are scaled exactly by 2^e."""
    e = rescale_exponent(x_sorted)
    if not e:
        return method(x_sorted, params, level)
    return {p: Interval(math.ldexp(i.lo, e), math.ldexp(i.hi, e), i.method) if p == "scale" else i
            for p, i in method(np.ldexp(x_sorted, -e), scaled_params(params, -e), level).items()}


OUTLIER_TAIL = 1e-6  # two-sided: weights beyond the fitted law's 5e-7 and 1 − 5e-7 quantiles


def outlier_bounds(family, params: Mapping[str, float], tail: float = OUTLIER_TAIL) -> tuple[float, float]:
    """The fitted law's central 1 − ``tail`` interval: weights outside it are outliers (the ones that
    stretch a low-bit quantiser's range). Under the law itself n·tail of n weights fall outside."""
    return float(family.ppf(tail / 2, params)), float(family.isf(tail / 2, params))


def count_outside(x_sorted: np.ndarray, bounds: tuple[float, float]) -> int:
    """How many sorted values lie strictly outside ``bounds``."""
    lo, hi = bounds
    return int(np.searchsorted(x_sorted, lo, "left") + x_sorted.size - np.searchsorted(x_sorted, hi, "right"))
