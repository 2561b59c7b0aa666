"""Fair training for every latent family: same data split, optimiser, epochs, KL warm-up,
validation-based early stopping and seed; checkpoints saved as safetensors + config JSON."""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..stores import atomic
from ..data import load_images
from ..errors import WeightdistError
from .model import VAE, parameter_count

VALIDATION = 5000


class TrainConfigError(WeightdistError, ValueError):
    """A training option out of range."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes a trained model's numbers (its hash keys the comparison's cached cells)."""

    prior: str = "gaussian"
    latent_dim: int = 10
    epochs: int = 200  # the cap: runs normally stop earlier, on the validation ELBO
    batch_size: int = 128
    lr: float = 1e-3
    lr_factor: float = 0.5  # learning rate × lr_factor when the validation ELBO stalls for lr_patience epochs
    lr_patience: int = 3
    warmup_epochs: float = 5.0  # KL weight rises linearly from 0 to 1 over these epochs
    patience: int = 8  # early stopping: epochs without a better validation ELBO (after the warm-up)
    min_delta: float = 0.1  # nats: a smaller gain in validation ELBO does not count as "better" for early stopping
    seed: int = 0
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    idx_files: tuple[str, ...] | None = None  # train images, train labels, test images, test labels
    train_size: int | None = None  # first N training images (after the validation split)

    def __post_init__(self) -> None:
        for name in ("latent_dim", "epochs", "batch_size", "patience", "lr_patience"):
            if getattr(self, name) < 1:
                raise TrainConfigError(f"{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if not (self.lr > 0 and 0 < self.lr_factor <= 1 and self.min_delta >= 0):
            raise TrainConfigError(f"need lr > 0, 0 < lr-factor <= 1 and min-delta >= 0, got {self.lr}, {self.lr_factor}, "
                                   f"{self.min_delta}")


@dataclass(frozen=True)
class Data:
    """Grey levels in [0, 1]; test and validation sets binarised once, with a fixed seed, for every run."""

    train: torch.Tensor
    train_labels: torch.Tensor
    valid_bin: torch.Tensor
    test: torch.Tensor
    test_bin: torch.Tensor
    test_labels: torch.Tensor


SPLIT_SEED = 1234  # the validation split and the fixed binarisation of validation and test sets


def load_data(dataset: str = "fashion-mnist", data_dir: str | None = None,
              idx_files: tuple[str, ...] | None = None) -> Data:
    """Training images minus a held-out validation split (5,000 images), and the full test set.

    The split and the one binarisation of the validation and test images do not depend on the run's
    seed, so every prior and every seed is selected and scored on the same binary images."""
    train, test = load_images(dataset, data_dir, idx_files)
    grey = torch.from_numpy(train.images.reshape(len(train.images), -1).astype(np.float32) / 255.0)
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    order = torch.randperm(len(grey), generator=gen)
    valid_n = min(VALIDATION, len(grey) // 5)
    valid, train_idx = order[:valid_n], order[valid_n:]
    test_grey = torch.from_numpy(test.images.reshape(len(test.images), -1).astype(np.float32) / 255.0)
    return Data(
        train=grey[train_idx], train_labels=torch.from_numpy(train.labels)[train_idx],
        valid_bin=torch.bernoulli(grey[valid], generator=gen),
        test=test_grey, test_bin=torch.bernoulli(test_grey, generator=gen), test_labels=torch.from_numpy(test.labels),
    )


TORCHVISION_CLASSES = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}


def download_dataset(dataset: str, root: str | Path, timeout: float = 20.0) -> Path:
    """Fetch MNIST or Fashion-MNIST with torchvision (online only) and return the folder of IDX files.

    Offline this fails within ``timeout`` seconds with a one-line :class:`DatasetError`."""
    import socket

    from ..errors import DatasetError, UnknownNameError

    if dataset not in TORCHVISION_CLASSES:
        from ..escape import error_value

        raise UnknownNameError(f"unknown dataset {error_value(dataset)}; choose one of {', '.join(TORCHVISION_CLASSES)}")
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise DatasetError("--download needs torchvision; install it or pass --data-dir DIR holding the IDX files") from None
    cls = getattr(tvd, TORCHVISION_CLASSES[dataset])
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError depending on where it fails
        raise DatasetError(f"could not download {dataset} with torchvision ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                           "offline, install dataset-fashion-mnist or pass --data-dir DIR holding the IDX files") from None
    finally:
        socket.setdefaulttimeout(previous)
    return Path(root) / TORCHVISION_CLASSES[dataset] / "raw"


@dataclass
class TrainedVAE:
    model: VAE
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    best_epoch: int = 0
    converged: bool = False  # stopped by early stopping, not by the epoch cap

    @property
    def params(self) -> int:
        return parameter_count(self.model)

    @property
    def stop_epoch(self) -> int:
        return len(self.history)


def loss_of(model: VAE, x: torch.Tensor, kl_weight: float, generator: torch.Generator | None = None):
    terms = model.terms(x, generator)
    weight = 0.0 if model.latent.deterministic else kl_weight
    return -(terms.recon - weight * terms.kl).mean(), terms.recon.mean(), terms.kl.mean()


@torch.no_grad()
def validation_elbo(model: VAE, x_bin: torch.Tensor, seed: int = 0, batch: int = 1000) -> float:
    """Mean single-sample ELBO (reconstruction only, for the autoencoder) with a fixed sampling seed."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for i in range(0, len(x_bin), batch):
        terms = model.terms(x_bin[i : i + batch], gen)
        total += float((terms.recon if model.latent.deterministic else terms.elbo).sum())
    model.train()
    return total / len(x_bin)


def train_vae(config: TrainConfig, data: Data | None = None, log=print, progress: bool = False) -> TrainedVAE:
    """Adam with a plateau LR schedule, KL warm-up, early stopping on the validation ELBO; the best
    epoch's weights are kept. Every random draw (initialisation, batches, dynamic binarisation, latent
    samples) comes from one ``torch.Generator`` seeded with ``config.seed``: the same config gives the
    same model."""
    data = data or load_data(config.dataset, config.data_dir, config.idx_files)
    x_train = data.train[: config.train_size] if config.train_size else data.train
    gen = torch.Generator().manual_seed(config.seed)
    model = VAE(config.prior, config.latent_dim, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=config.lr_factor,
                                                          patience=config.lr_patience)
    steps = math.ceil(len(x_train) / config.batch_size)
    trained = TrainedVAE(model, config)
    best, best_state, stale, reference = -math.inf, None, 0, -math.inf
    # The KL weight must reach 1 before the last epoch, or early stopping (which compares full ELBOs) never runs
    # and the model is judged after training on a down-weighted KL: shorten the warm-up when the budget is small.
    warmup = min(config.warmup_epochs, config.epochs - 1)
    if warmup < config.warmup_epochs and log:
        log(f"[{config.prior} d={config.latent_dim}] KL warm-up shortened from {config.warmup_epochs:g} to {warmup:g} "
            f"epochs so that the last epoch trains on the full ELBO ({config.epochs} epochs)")
    start = time.perf_counter()
    epochs = range(config.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=f"{config.prior} d={config.latent_dim} s={config.seed}", unit="epoch", leave=False)
    for epoch in epochs:
        order = torch.randperm(len(x_train), generator=gen)
        sums = np.zeros(3)
        for step in range(steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = torch.bernoulli(x_train[idx], generator=gen)  # dynamic binarisation
            kl_weight = min(1.0, (epoch + step / steps) / warmup) if warmup > 0 else 1.0
            loss, recon, kl = loss_of(model, x, kl_weight, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += [loss.item(), recon.detach().item(), kl.detach().item()]
        val = validation_elbo(model, data.valid_bin, seed=config.seed)
        row = {"epoch": epoch + 1, "loss": sums[0] / steps, "recon": sums[1] / steps, "kl": sums[2] / steps,
               "kl_weight": kl_weight, "lr": opt.param_groups[0]["lr"], "valid_elbo": val,
               "seconds": time.perf_counter() - start}
        trained.history.append(row)
        if log:
            log(f"[{config.prior} d={config.latent_dim} s={config.seed}] epoch {epoch + 1}/{config.epochs} "
                f"loss {row['loss']:.2f} recon {row['recon']:.2f} kl {row['kl']:.2f} (weight {kl_weight:.2f}) "
                f"valid {val:.2f} lr {row['lr']:.2g}")
        # Early stopping and the LR schedule only count once the KL weight has reached 1: before that the
        # ELBOs are not comparable.
        if kl_weight >= 1.0 or model.latent.deterministic:
            schedule.step(val)
            if val > best:  # the best weights are kept whatever the gain
                best, best_state, trained.best_epoch = val, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1
            if val > reference + config.min_delta:  # converged: `patience` epochs without a gain of min_delta
                reference, stale = val, 0
            else:
                stale += 1
                if stale >= config.patience:
                    trained.converged = True
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    trained.seconds = time.perf_counter() - start
    model.eval()
    return trained


def save_checkpoint(trained: TrainedVAE, out: str | Path) -> Path:
    """model.safetensors (no pickle) + config.json (config, history, seconds, parameter count)."""
    from safetensors.torch import save

    out = Path(out)
    with atomic.staged_dir(out) as stage:
        state = {k: v.detach().contiguous() for k, v in trained.model.state_dict().items()}
        atomic.write_bytes(stage / "model.safetensors", save(state))
        meta = {"config": dataclasses.asdict(trained.config), "history": trained.history, "seconds": trained.seconds,
                "best_epoch": trained.best_epoch, "converged": trained.converged, "params": trained.params}
        atomic.write_text(stage / "config.json", json.dumps(meta, indent=2) + "\n")
    return out


def load_checkpoint(folder: str | Path) -> TrainedVAE:
    from safetensors.torch import load_file

    from ..errors import CheckpointError

    folder = Path(folder)
    try:
        meta = json.loads((folder / "config.json").read_text())
        raw = dict(meta["config"])
        if raw.get("idx_files") is not None:
            raw["idx_files"] = tuple(raw["idx_files"])
        config = TrainConfig(**raw)
        model = VAE(config.prior, config.latent_dim)
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{folder}: not a VAE checkpoint written by 'weightdist vae train' ({exc})") from None
    model.eval()
    return TrainedVAE(model, config, meta.get("history", []), meta.get("seconds", 0.0), meta.get("best_epoch", 0),
                      meta.get("converged", False))
