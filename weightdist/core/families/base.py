"""The contract every distribution family implements, and the family registry.

A family is a stateless object: maximum-likelihood ``fit`` on sorted data, plus
``logpdf``, ``cdf`` and ``sample`` at given parameters. Adding a family is one
subclass decorated with ``@register_family``; nothing else in the tool changes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np

from ..registry import Registry


@dataclass(frozen=True)
class Estimate:
    """What a family's ``fit`` returns: parameters plus how much to trust them."""

    params: Mapping[str, float]
    converged: bool = True
    note: str = ""  # e.g. "Gaussian limit: df at cap 1e+06"
    loglik: float | None = None  # filled when the estimator already knows it exactly


class Family(ABC):
    name: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]
    label: ClassVar[str] = ""  # how prose names it ("Student-t"); the registry name when empty
    # Names of families that are special cases of this one (for likelihood-ratio tests).
    nests: ClassVar[tuple[str, ...]] = ()
    # The subset of ``nests`` reached only at a parameter-space boundary (e.g. Gaussian = t with df = ∞).
    nests_on_boundary: ClassVar[tuple[str, ...]] = ()

    @property
    def k(self) -> int:
        """Number of free parameters, for AIC/BIC."""
        return len(self.param_names)

    @abstractmethod
    def fit(self, x_sorted: np.ndarray) -> Estimate:
        """Maximum-likelihood fit. ``x_sorted``: finite float64, ascending, n >= 8, not constant."""

    @abstractmethod
    def logpdf(self, x: np.ndarray, params: Mapping[str, float]) -> np.ndarray: ...

    @abstractmethod
    def cdf(self, x: np.ndarray, params: Mapping[str, float]) -> np.ndarray: ...

    @abstractmethod
    def scipy_dist(self, params: Mapping[str, float]):
        """The equivalent frozen ``scipy.stats`` distribution: the independent reference."""

    def loglik(self, x: np.ndarray, params: Mapping[str, float]) -> float:
        return float(np.sum(self.logpdf(x, params), dtype=np.float64))

    def sample(self, n: int, params: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
        return np.asarray(self.scipy_dist(params).rvs(size=n, random_state=rng), dtype=np.float64)

    def describe(self, params: Mapping[str, float], note: str = "") -> str:
        """Short human label used in verdicts and legends, e.g. 'df≈4.2'; ``note`` is the fit's note."""
        return ""


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Σ a·b in one pass without a temporary and without BLAS threads: BLAS ddot spins
    its thread pool on every call, which costs more than the sum itself for the
    many short reductions of the estimators, and collapses when the cores are shared."""
    return float(np.einsum("i,i->", a, b))


BLOCK = 1 << 18  # element-wise work is done this many values at a time: memory stays O(block), not O(n)


def blocks(x: np.ndarray, size: int = BLOCK):
    """Consecutive views of ``x`` (no copies), for sums that would otherwise need n-sized temporaries."""
    for start in range(0, x.size, size):
        yield x[start : start + size]


FAMILIES: Registry[Family] = Registry("distribution family")


def register_family(cls: type[Family]) -> type[Family]:
    FAMILIES.add(cls.name, cls())
    return cls


def label_of(name: str) -> str:
    return get_family(name).label or name


def param_columns() -> tuple[str, ...]:
    """Every registered family's parameter names, each once: the parameter columns of a fit table."""
    return tuple(dict.fromkeys(p for name in FAMILIES for p in FAMILIES.get(name).param_names))


def list_families(pattern: str | None = None) -> list[str]:
    return FAMILIES.names(pattern)


def get_family(name: str) -> Family:
    try:
        return FAMILIES.get(name)
    except KeyError as exc:
        raise ValueError(f"families: {exc.args[0]}; registered: {', '.join(FAMILIES)}") from None
