"""Shared fixtures. Real pretrained weights live in ../shared/torch beside the repository
(the torch hub cache layout); tests that need them skip with a reason when it is absent."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)  # two cores, shared with training jobs

REPO = Path(__file__).resolve().parents[1]
SHARED_TORCH = REPO.parent / "shared" / "torch"
CIFAR_FILE = SHARED_TORCH / "hub" / "checkpoints" / "resnet20-12fca82f.th"


@pytest.fixture
def shared_torch(monkeypatch) -> Path:
    """TORCH_HOME pointed at ../shared/torch, or a skip saying what is missing."""
    if not CIFAR_FILE.is_file():
        pytest.skip(f"pretrained weights not found: {CIFAR_FILE} (../shared/torch beside the repo)")
    monkeypatch.setenv("TORCH_HOME", str(SHARED_TORCH))
    return SHARED_TORCH


@pytest.fixture
def empty_torch_home(monkeypatch, tmp_path) -> Path:
    """A torch hub cache with nothing in it: every pretrained load must fail fast."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"
