"""Gaussian: closed-form maximum likelihood (mean, standard deviation with ddof=0)."""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from scipy import special, stats

from .base import Estimate, Family, blocks, dot, register_family


@register_family
class Gaussian(Family):
    name = "gaussian"
    label = "Gaussian"
    param_names = ("loc", "scale")

    def fit(self, x_sorted: np.ndarray) -> Estimate:
        n = x_sorted.size
        loc = float(np.mean(x_sorted, dtype=np.float64))
        scale = math.sqrt(sum(dot(c, c) for c in (block - loc for block in blocks(x_sorted))) / n)
        # At the MLE the quadratic term sums to n/2 exactly.
        loglik = -0.5 * n * (np.log(2 * np.pi * scale**2) + 1.0)
        return Estimate({"loc": loc, "scale": scale}, loglik=float(loglik))

    def logpdf(self, x, params: Mapping[str, float]) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - params["loc"]) / params["scale"]
        return -0.5 * z * z - np.log(params["scale"]) - 0.5 * np.log(2 * np.pi)

    def cdf(self, x, params: Mapping[str, float]) -> np.ndarray:
        return special.ndtr((np.asarray(x, dtype=np.float64) - params["loc"]) / params["scale"])

    def scipy_dist(self, params: Mapping[str, float]):
        return stats.norm(loc=params["loc"], scale=params["scale"])

    def sample(self, n, params, rng):
        return rng.normal(params["loc"], params["scale"], size=n)
