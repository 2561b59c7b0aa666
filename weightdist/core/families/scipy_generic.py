"""Any continuous ``scipy.stats`` distribution as an opt-in family: ``--families scipy:logistic``.

The fit is scipy's own generic maximum likelihood (``dist.fit``: a Nelder–Mead search over
shapes, loc and scale), so it is slower than the built-in families and not guaranteed to reach
the exact optimum; reports mark these families as generic. They are built on first use by
``get_family("scipy:<name>")`` and never added to the registry, so they are fitted only when named.

Parameter columns: ``loc``, ``scale`` and each shape as ``<dist>_<shape>`` (e.g. ``genlogistic_c``),
so a scipy shape name can never collide with another family's column.
"""
from __future__ import annotations

import difflib
import functools
import math
import warnings
from typing import Mapping

import numpy as np
from scipy import stats
from scipy.integrate import IntegrationWarning

from ...errors import OptionError, UnknownNameError
from ...escape import error_value
from .base import Estimate, Family, Params

PREFIX = "scipy:"
GENERIC_NOTE = "generic scipy MLE (slower, not guaranteed exact)"
INTEGRATION_NOTE = "scipy warned that its numerical integration may be inaccurate"


def _quiet(method):
    """Evaluate a law without scipy's IntegrationWarnings on stderr (one per call, per layer, per worker):
    a fit that met them says so in its note instead."""
    @functools.wraps(method)
    def quiet(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IntegrationWarning)
            return method(*args, **kwargs)

    return quiet


def continuous_names() -> list[str]:
    """Every continuous distribution scipy.stats offers, by name."""
    return sorted(n for n in dir(stats) if isinstance(getattr(stats, n), stats.rv_continuous))


class ScipyFamily(Family):
    """A family backed entirely by one continuous ``scipy.stats`` distribution."""

    generic = True  # reports say the fit is scipy's generic MLE
    symmetric = False

    def __init__(self, dist_name: str) -> None:
        self.dist_name = dist_name
        self.dist = getattr(stats, dist_name)
        self.name = PREFIX + dist_name
        self.label = PREFIX + dist_name
        self.shape_args = tuple(s.strip() for s in (self.dist.shapes or "").split(",") if s.strip())
        self.param_names = ("loc", "scale", *(f"{dist_name}_{s}" for s in self.shape_args))

    def _args(self, params: Mapping[str, float]) -> tuple[float, ...]:
        return tuple(params[f"{self.dist_name}_{s}"] for s in self.shape_args)

    def fit(self, x_sorted: np.ndarray) -> Estimate:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("always", IntegrationWarning)
            try:
                *shapes, loc, scale = self.dist.fit(x_sorted)
            except (stats.FitError, ValueError, RuntimeError, FloatingPointError, OverflowError, ZeroDivisionError) as exc:
                # scipy's generic fit gives up on some data (e.g. reciprocal: "outside the range allowed"):
                # the layer keeps a non-converged row instead of the run ending in a traceback.
                reason = " ".join(str(exc).split())[:120]
                params = Params((p, math.nan) for p in self.param_names)
                return Estimate(params, converged=False, note=f"{GENERIC_NOTE}; scipy's fit failed: {reason}",
                                loglik=-math.inf)
        integration = any(issubclass(w.category, IntegrationWarning) for w in caught)
        for w in caught:  # anything else scipy says stays visible, as it would have been
            if not issubclass(w.category, IntegrationWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        values = {"loc": loc, "scale": scale, **{f"{self.dist_name}_{s}": v for s, v in zip(self.shape_args, shapes)}}
        params = Params((p, float(values[p])) for p in self.param_names)
        loglik = self.loglik(x_sorted, params)
        ok = math.isfinite(loglik) and all(math.isfinite(v) for v in params.values())
        note = GENERIC_NOTE if ok else f"{GENERIC_NOTE}; did not converge"
        return Estimate(params, converged=ok, note=f"{note}; {INTEGRATION_NOTE}" if integration else note, loglik=loglik)

    @_quiet
    def logpdf(self, x, params: Mapping[str, float]) -> np.ndarray:
        return self.dist.logpdf(np.asarray(x, dtype=np.float64), *self._args(params), loc=params["loc"], scale=params["scale"])

    @_quiet
    def cdf(self, x, params: Mapping[str, float]) -> np.ndarray:
        return self.dist.cdf(np.asarray(x, dtype=np.float64), *self._args(params), loc=params["loc"], scale=params["scale"])

    @_quiet
    def sf(self, x, params: Mapping[str, float]) -> np.ndarray:
        return self.dist.sf(np.asarray(x, dtype=np.float64), *self._args(params), loc=params["loc"], scale=params["scale"])

    def scipy_dist(self, params: Mapping[str, float]):
        return self.dist(*self._args(params), loc=params["loc"], scale=params["scale"])

    def describe(self, params: Mapping[str, float], note: str = "") -> str:
        shapes = ", ".join(f"{s}≈{params[f'{self.dist_name}_{s}']:.3g}" for s in self.shape_args)
        return f"generic scipy fit{', ' + shapes if shapes else ''}"


@functools.lru_cache(maxsize=None)
def scipy_family(name: str) -> ScipyFamily:
    """The family for ``scipy:<dist>``; one line naming the problem for unknown or discrete names."""
    dist_name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    dist = getattr(stats, dist_name, None)
    if isinstance(dist, stats.rv_discrete):
        raise OptionError(f"families: {error_value(name)} is a discrete distribution; weights are continuous, "
                          f"so name a continuous scipy.stats distribution (e.g. scipy:logistic)")
    if not isinstance(dist, stats.rv_continuous):
        close = difflib.get_close_matches(dist_name, continuous_names(), n=3, cutoff=0.6) if len(dist_name) <= 200 else []
        hint = f"did you mean {', '.join(PREFIX + c for c in close)}?" if close else "see scipy.stats for continuous distributions"
        raise UnknownNameError(f"families: unknown scipy distribution {error_value(name)}; {hint}")
    return ScipyFamily(dist_name)
