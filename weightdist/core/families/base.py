"""The contract every distribution family implements, and the family registry.

A family is a stateless object, standardised the way ``scipy.stats`` does it: the
subclass implements the *standard* density and CDF (loc 0, scale 1) at its shape
parameters, and this base class applies ``loc`` and ``scale`` once, for every family.
It also declares what a report shows for it (its shape parameters with their ranges,
the headline statistic summarised per model, the label and colour), so every
consumer reads the registry instead of hunting for family names. Adding a family is
one subclass decorated with ``@register_family``; nothing else in the tool changes.
"""
from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Iterator, Mapping

import numpy as np

from ...errors import UnknownNameError
from ..kernels import BLOCK, blocks, dot  # noqa: F401  (re-exported: families sum block by block)
from ..registry import Registry


class FrozenMap(Mapping):
    """A read-only, hashable mapping with a dict's semantics (later keys win, equality ignores order).

    Frozen results hold these instead of dicts, so a fit can be hashed, cached and shared between
    threads without anyone changing it underneath."""

    __slots__ = ("_items",)

    def __init__(self, items=(), **values) -> None:
        merged = dict(items.items() if isinstance(items, Mapping) else items)
        merged.update(values)
        object.__setattr__(self, "_items", tuple((str(k), self._value(v)) for k, v in merged.items()))

    @staticmethod
    def _value(value):
        return value

    def __getitem__(self, key: str):
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __setattr__(self, key, value) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only; build a new one instead")

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items))  # order-free, as equality is

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self._items) + ")"

    def __reduce__(self):
        return (type(self), (self._items,))


class Params(FrozenMap):
    """Fitted parameters: read-only, hashable, ordered as the family declares them.

    ``params["beta"]`` and ``params.beta`` both work; assignment raises."""

    __slots__ = ()

    @staticmethod
    def _value(value) -> float:
        return float(value)

    def __getattr__(self, key: str) -> float:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


@dataclass(frozen=True)
class Shape:
    """One shape parameter as reports show it: its symbol, its range and what values mean."""

    name: str  # the column name in layers.csv, e.g. "beta"
    symbol: str  # e.g. "β"
    lower: float  # the fitter's bounds; a fit that ends on one is flagged and never wins
    upper: float
    meaning: str = ""  # e.g. "β = 1 is Laplace, β = 2 is Gaussian"
    log_axis: bool = False  # plotted on a log axis (df spans decades)
    low: str = ""  # what a low value says of a layer, as an adjective ("Laplacian"); findings ranks by it
    high: str = ""  # and a high one ("Gaussian")


@dataclass(frozen=True)
class Claim:
    """A common statement about trained weights, tested on each model's median of one family's headline shape.

    A family declares the claims its headline tests (``Family.claims``); ``weightdist findings`` checks
    every declared claim on every report, so a new claim is one line in its family's file."""

    quote: str  # the statement as people make it: "Weights are Laplacian"
    op: str  # "<", "≤", ">" or "≥": the claim holds for a model when (median op threshold)
    threshold: float
    # A family whose per-layer AIC wins over its ``beats`` back the claim up ("laplace": Laplace beats Gaussian).
    support: str | None = None
    at_init: bool = False  # also say where it holds for the --init twins (a check of the fitter, not of nature)

    OPS = {"<": operator.lt, "≤": operator.le, ">": operator.gt, "≥": operator.ge}
    ASCII = {"<=": "≤", ">=": "≥"}

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", self.ASCII.get(self.op, self.op))  # "<=" reads as "≤" in the write-up
        if self.op not in self.OPS:
            raise TypeError(f"Claim {self.quote!r}: op {self.op!r} is not one of {', '.join(self.OPS)} (or <=, >=)")

    def holds(self, medians: np.ndarray) -> np.ndarray:
        """Per model, whether the claim holds for its median (False where the median is NaN: not tested)."""
        with np.errstate(invalid="ignore"):
            return self.OPS[self.op](np.asarray(medians, dtype=np.float64), self.threshold)


@dataclass(frozen=True)
class Estimate:
    """What a family's ``fit`` returns: parameters plus how much to trust them."""

    params: Params
    converged: bool = True
    note: str = ""  # e.g. "Gaussian limit: df at cap 1e+06"
    loglik: float | None = None  # filled when the estimator already knows it exactly
    # The optimum sits where the likelihood is unbounded (a shape at its fitting bound, a
    # scale collapsing onto tied values): reported, but never allowed to win a layer.
    degenerate: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.params, Params):
            object.__setattr__(self, "params", Params(self.params))


class Family(ABC):
    name: ClassVar[str]
    label: ClassVar[str] = ""  # how prose names it ("Student-t"); the registry name when empty
    color: ClassVar[str | None] = None  # matplotlib colour; a stable palette colour when None
    shapes: ClassVar[tuple[Shape, ...]] = ()
    # The shape parameter each model's report summarises (median and IQR over layers), e.g. "beta".
    headline: ClassVar[str | None] = None
    # Claims about trained weights that the headline shape's per-model median tests (reporting/findings.py).
    claims: ClassVar[tuple[Claim, ...]] = ()
    # Reports count the layers where this family has a lower AIC than every one of these.
    beats: ClassVar[tuple[str, ...]] = ()
    # Names of families that are special cases of this one (for likelihood-ratio tests).
    nests: ClassVar[tuple[str, ...]] = ()
    # The subset of ``nests`` reached only at a parameter-space boundary (e.g. Gaussian = t with df = ∞).
    nests_on_boundary: ClassVar[tuple[str, ...]] = ()
    symmetric: ClassVar[bool] = True  # standard law symmetric about 0: sf(z) = cdf(−z), exact in the upper tail
    # The null law every other family's gain is measured against (the Gaussian; one family declares it).
    baseline: ClassVar[bool] = False
    param_names: tuple[str, ...]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "param_names" not in cls.__dict__ and "shapes" in cls.__dict__:
            cls.param_names = ("loc", "scale", *(s.name for s in cls.shapes))

    @property
    def k(self) -> int:
        """Number of free parameters, for AIC/BIC."""
        return len(self.param_names)

    def shape(self, name: str) -> Shape | None:
        return next((s for s in self.shapes if s.name == name), None)

    def params(self, **values: float) -> Params:
        """Parameters in this family's declared order."""
        return Params((p, values[p]) for p in self.param_names)

    @abstractmethod
    def fit(self, x_sorted: np.ndarray) -> Estimate:
        """Maximum-likelihood fit. ``x_sorted``: finite float64, ascending, n >= 8, not constant."""

    # --- the standard law (loc 0, scale 1): what a family implements --------------------------------

    def std_logpdf(self, z: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} implements neither std_logpdf nor logpdf")

    def std_cdf(self, z: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} implements neither std_cdf nor cdf")

    def std_sf(self, z: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
        return self.std_cdf(-z, params) if self.symmetric else 1.0 - self.std_cdf(z, params)

    def std_ppf(self, u: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
        """The standard law's quantile function; scipy's unless a family has a cheaper exact one."""
        return self.scipy_dist({**params, "loc": 0.0, "scale": 1.0}).ppf(u)

    def std_isf(self, q: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
        """The standard law's upper quantile, exact for small ``q`` (not ppf(1 − q), which rounds 1 − q)."""
        return -self.std_ppf(q, params) if self.symmetric else self.scipy_dist({**params, "loc": 0.0, "scale": 1.0}).isf(q)

    # --- loc and scale, applied once here ------------------------------------------------------------

    @staticmethod
    def standardise(x, params: Mapping[str, float]) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - params["loc"]) / params["scale"]

    def logpdf(self, x: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
        return self.std_logpdf(self.standardise(x, params), params) - math.log(params["scale"])

    def cdf(self, x: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
        return self.std_cdf(self.standardise(x, params), params)

    def sf(self, x: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
        return self.std_sf(self.standardise(x, params), params)

    def ppf(self, u: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
        return params["loc"] + params["scale"] * self.std_ppf(np.asarray(u, dtype=np.float64), params)

    def isf(self, q: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
        return params["loc"] + params["scale"] * self.std_isf(np.asarray(q, dtype=np.float64), params)

    @abstractmethod
    def scipy_dist(self, params: Mapping[str, float]):
        """The equivalent frozen ``scipy.stats`` distribution: the independent reference."""

    def loglik(self, x: np.ndarray, params: Mapping[str, float]) -> float:
        return float(np.sum(self.logpdf(x, params), dtype=np.float64))

    def sample(self, n: int, params: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
        return np.asarray(self.scipy_dist(params).rvs(size=n, random_state=rng), dtype=np.float64)

    def at_bound(self, params: Mapping[str, float]) -> bool:
        """A shape on its fitting bound: there the likelihood ran off the parameter space."""
        return any(params[s.name] <= s.lower or params[s.name] >= s.upper for s in self.shapes)

    def describe(self, params: Mapping[str, float], note: str = "") -> str:
        """Short human label used in verdicts and legends, e.g. 'df≈4.2'; ``note`` is the fit's note."""
        shape = self.shape(self.headline) if self.headline else None
        return f"{shape.symbol}≈{params[shape.name]:.3g}" if shape else ""

    def mse_optimal_clip(self, params: Mapping[str, float], bits: int) -> float:
        """The clip c minimising the expected MSE of symmetric uniform quantisation at ``bits``
        under this law centred at 0 (``loc`` ignored: the quantiser is symmetric about 0).
        See ``core/quant.py`` for the error model. The default minimises it numerically;
        families with a closed form override this."""
        from ..quant import numerical_optimal_clip

        centred = {**params, "loc": 0.0}
        return numerical_optimal_clip(lambda t: self.sf(t, centred), bits, params["scale"])


def quantile_subsample(x_sorted: np.ndarray, size: int) -> np.ndarray:
    """About ``size`` evenly spaced order statistics of sorted ``x`` (a view, no copy): the middle value of each run
    of k = n // size. Taking the first of each run instead shifts every quantile down by k/2 ranks, and the
    full-data Newton then needs a pass more to undo that bias."""
    k = max(1, x_sorted.size // size)
    return x_sorted[k // 2 :: k]


def ascent_direction(g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Newton direction for maximising (gradient g, Hessian h) when −h is positive definite, else a Levenberg-damped one."""
    neg = -h
    damping = 0.0
    scale = max(float(np.max(np.abs(np.diag(neg)))), 1e-300)
    for _ in range(60):
        try:
            chol = np.linalg.cholesky(neg + damping * np.eye(len(g)))
            return np.linalg.solve(chol.T, np.linalg.solve(chol, g))
        except np.linalg.LinAlgError:
            damping = max(2 * damping, 1e-10 * scale)
    return g / scale


FAMILIES: Registry[Family] = Registry("distribution family")


def register_family(cls: type[Family]) -> type[Family]:
    """Class decorator: registers one instance under ``cls.name``, after checking its declarations."""
    fam = cls()
    if fam.headline is not None:
        if fam.shape(fam.headline) is None:
            raise TypeError(f"{cls.__name__}.headline {fam.headline!r} is not one of its shapes")
        clash = [n for n in FAMILIES if FAMILIES.get(n).headline == fam.headline]
        if clash:  # the headline names the per-model summary columns (e.g. beta_median): one family each
            raise TypeError(f"{cls.__name__}.headline {fam.headline!r} is already {clash[0]}'s headline")
        symbol = fam.shape(fam.headline).symbol
        clash = [f.name for f in headline_families() if f.shape(f.headline).symbol == symbol]
        if clash:  # and its symbol names the findings' columns ("median df"): one family each too
            raise TypeError(f"{cls.__name__}.headline's symbol {symbol!r} is already {clash[0]}'s; choose another")
    elif fam.claims:
        raise TypeError(f"{cls.__name__} declares claims but no headline shape to test them on")
    if not isinstance(fam.claims, tuple) or not all(isinstance(c, Claim) for c in fam.claims):
        raise TypeError(f"{cls.__name__}.claims must be a tuple of Claim")
    for claim in fam.claims:  # (a supporting family registered later, e.g. by a plug-in, is checked by its use)
        backer = fam if claim.support == cls.name else FAMILIES.get(claim.support) if claim.support in FAMILIES else None
        if backer is not None and not backer.beats:
            raise TypeError(f"{cls.__name__}: claim {claim.quote!r} is supported by {claim.support!r}, which beats no family")
    FAMILIES.add(cls.name, fam)
    return cls


def label_of(name: str) -> str:
    return get_family(name).label or name


def param_columns() -> tuple[str, ...]:
    """Every registered family's parameter names, each once: the parameter columns of a fit table."""
    return tuple(dict.fromkeys(p for name in FAMILIES for p in FAMILIES.get(name).param_names))


def headline_families() -> list[Family]:
    """Families with a headline statistic, in registry order: what per-model summaries show."""
    return [f for f in map(FAMILIES.get, FAMILIES) if f.headline is not None]


def baseline_family() -> Family:
    """The family declared ``baseline`` (the Gaussian): gains over training are measured against it."""
    declared = [f for f in map(FAMILIES.get, FAMILIES) if f.baseline]
    if not declared:
        raise LookupError("no registered family declares baseline = True")
    return declared[0]


def beats_key(fam: Family) -> str:
    """Summary key counting the layers where ``fam`` beats every family in ``fam.beats``."""
    return f"{fam.name}_beats_{'_and_'.join(fam.beats)}"


def list_families(pattern: str | None = None) -> list[str]:
    return FAMILIES.names(pattern)


def get_family(name: str) -> Family:
    if name.startswith("scipy:") and name not in FAMILIES:  # opt-in generic families, built on first use
        from .scipy_generic import scipy_family

        return scipy_family(name)
    try:
        return FAMILIES.get(name)
    except KeyError as exc:
        raise UnknownNameError(f"families: {exc}; registered: {', '.join(FAMILIES)}") from None
