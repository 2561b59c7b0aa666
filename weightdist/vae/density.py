"""Densities fitted on autoencoder codes: the `ae` baseline's prior (GMM) and a KDE for comparison."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity


@dataclass
class CodeDensity:
    """A density on codes, fitted after standardising them (so one bandwidth fits all dimensions)."""

    kind: str
    mean: np.ndarray
    std: np.ndarray
    model: object

    def _standardise(self, z: np.ndarray) -> np.ndarray:
        return (z - self.mean) / self.std

    def log_density(self, z: np.ndarray) -> np.ndarray:
        """log p(z) in the original code space (includes the Jacobian of standardising)."""
        return self.model.score_samples(self._standardise(z)) - np.log(self.std).sum()

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        if self.kind == "gmm":
            self.model.random_state = seed
            samples = self.model.sample(n)[0]  # sklearn returns them grouped by component: shuffle (seeded)
            samples = samples[np.random.default_rng(seed).permutation(len(samples))]
        else:
            samples = self.model.sample(n, random_state=seed)
        return samples * self.std + self.mean


def fit_density(codes: np.ndarray, kind: str, seed: int = 0, components: int = 10) -> CodeDensity:
    codes = np.asarray(codes, dtype=np.float64)
    mean, std = codes.mean(0), codes.std(0) + 1e-8
    z = (codes - mean) / std
    if kind == "gmm":
        model = GaussianMixture(n_components=min(components, len(z)), covariance_type="full", random_state=seed, reg_covar=1e-4).fit(z)
    elif kind == "kde":
        model = KernelDensity(kernel="gaussian", bandwidth="scott").fit(z)
    else:
        raise ValueError(f"kind must be 'gmm' or 'kde', got {kind!r}")
    return CodeDensity(kind, mean, std, model)
