"""The comparison's plan: which (prior, latent dim, seed) cells to run, and with what budget.

A cell is one trained and evaluated model. Its key hashes every setting that changes its numbers,
so a cached cell is reused only by a run that would have produced the same cell.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from ..errors import UnknownNameError, WeightdistError
from .latents import LATENTS, baseline_prior, registration_order
from .train import TrainConfig


class PlanError(WeightdistError, ValueError):
    """A comparison option out of range or naming an unknown prior."""


@dataclass(frozen=True)
class Plan:
    priors: tuple[str, ...] = ()  # empty: every registered prior, the baseline first
    dims: tuple[int, ...] = (2, 5, 10, 20)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 200  # the cap; cells that reach it are flagged
    patience: int = 8
    lr_patience: int = 3
    warmup_epochs: float = 5.0
    k: int = 500  # importance samples for the test log-likelihood
    test_size: int | None = None  # None: the full test set
    train_size: int | None = None
    fid_n: int = 2000
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    idx_files: tuple[str, ...] | None = None
    quick: bool = False

    def __post_init__(self) -> None:
        if not self.priors:
            base = baseline_prior()
            object.__setattr__(self, "priors", (base, *(p for p in registration_order() if p != base)))
        unknown = [p for p in self.priors if p not in LATENTS]
        if unknown:
            raise UnknownNameError(f"unknown prior(s) {', '.join(unknown)}; choose from {', '.join(LATENTS)}")
        if not self.dims or min(self.dims) < 1:
            raise PlanError(f"--latent-dims must be positive integers, got {self.dims}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise PlanError(f"--seeds must be distinct non-negative integers, got {self.seeds}")
        for name in ("epochs", "patience", "k", "fid_n"):
            if getattr(self, name) < 1:
                raise PlanError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        for name in ("test_size", "train_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PlanError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")

    def cells(self) -> list[tuple[str, int, int]]:
        """(prior, dim, seed) in run order: every prior at a (dim, seed) before the next seed, so an
        interrupted run already holds complete paired comparisons."""
        return [(prior, dim, seed) for dim in self.dims for seed in self.seeds for prior in self.priors]

    def train_config(self, prior: str, dim: int, seed: int) -> TrainConfig:
        return TrainConfig(prior=prior, latent_dim=dim, epochs=self.epochs, patience=self.patience,
                           lr_patience=self.lr_patience, warmup_epochs=self.warmup_epochs, seed=seed,
                           dataset=self.dataset, data_dir=self.data_dir, idx_files=self.idx_files,
                           train_size=self.train_size)

    def cell_key(self, prior: str, dim: int, seed: int) -> str:
        """File stem of a cell: readable prefix plus a hash of everything that changes its numbers."""
        settings = {"train": dataclasses.asdict(self.train_config(prior, dim, seed)),
                    "eval": {"k": self.k, "test_size": self.test_size, "fid_n": self.fid_n}, "version": 1}
        settings["train"].pop("data_dir")  # where the files are does not change the numbers
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{prior}_d{dim}_s{seed}_{digest}"


# A small real run of every prior: two seeds so that the intervals exist, few epochs, subsets.
QUICK = dict(dims=(2, 5), seeds=(0, 1), epochs=3, patience=2, lr_patience=1, k=50, test_size=500, train_size=5000,
             warmup_epochs=1.0, fid_n=500, quick=True)
