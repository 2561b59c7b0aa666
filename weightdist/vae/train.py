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
from ..data import load_split
from .model import VAE, parameter_count

VALIDATION = 5000


@dataclass(frozen=True)
class TrainConfig:
    prior: str = "gaussian"
    latent_dim: int = 10
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    warmup_epochs: float = 5.0  # KL weight rises linearly from 0 to 1 over these epochs
    patience: int = 5  # early stopping on validation ELBO
    seed: int = 0
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    train_size: int | None = None  # first N training images (after the validation split)

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


@dataclass(frozen=True)
class Data:
    """Grey levels in [0, 1]; test and validation sets binarised once, with a fixed seed."""

    train: torch.Tensor
    train_labels: torch.Tensor
    valid_bin: torch.Tensor
    test: torch.Tensor
    test_bin: torch.Tensor
    test_labels: torch.Tensor


def load_data(dataset: str = "fashion-mnist", data_dir: str | None = None, seed: int = 0) -> Data:
    train, test = load_split(dataset, "train", data_dir), load_split(dataset, "test", data_dir)
    grey = torch.from_numpy(train.images.reshape(len(train.images), -1).astype(np.float32) / 255.0)
    order = torch.randperm(len(grey), generator=torch.Generator().manual_seed(seed))
    valid, train_idx = order[:VALIDATION], order[VALIDATION:]
    gen = torch.Generator().manual_seed(1234)  # one fixed binarisation for every family
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

    from ..errors import DatasetError

    if dataset not in TORCHVISION_CLASSES:
        raise DatasetError(f"unknown dataset {dataset!r}; choose one of {', '.join(TORCHVISION_CLASSES)}")
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

    @property
    def params(self) -> int:
        return parameter_count(self.model)


def loss_of(model: VAE, x: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    terms = model.terms(x)
    weight = 0.0 if model.latent.deterministic else kl_weight
    return -(terms.recon - weight * terms.kl).mean(), terms.recon.mean(), terms.kl.mean()


@torch.no_grad()
def validation_elbo(model: VAE, x_bin: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    total = 0.0
    for i in range(0, len(x_bin), batch):
        terms = model.terms(x_bin[i : i + batch])
        total += float((terms.recon if model.latent.deterministic else terms.elbo).sum())
    model.train()
    return total / len(x_bin)


def train_vae(config: TrainConfig, data: Data | None = None, log=print, progress: bool = False) -> TrainedVAE:
    torch.manual_seed(config.seed)
    data = data or load_data(config.dataset, config.data_dir)
    x_train = data.train[: config.train_size] if config.train_size else data.train
    model = VAE(config.prior, config.latent_dim)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    steps = math.ceil(len(x_train) / config.batch_size)
    trained = TrainedVAE(model, config)
    best, best_state, stale = -math.inf, None, 0
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

        epochs = tqdm(epochs, desc=f"{config.prior} d={config.latent_dim}", unit="epoch", leave=False)
    for epoch in epochs:
        order = torch.randperm(len(x_train), generator=gen)
        sums = np.zeros(3)
        for step in range(steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = torch.bernoulli(x_train[idx], generator=gen)  # dynamic binarisation
            kl_weight = min(1.0, (epoch + step / steps) / warmup) if warmup > 0 else 1.0
            loss, recon, kl = loss_of(model, x, kl_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += [loss.item(), recon.detach().item(), kl.detach().item()]
        val = validation_elbo(model, data.valid_bin)
        row = {"epoch": epoch + 1, "loss": sums[0] / steps, "recon": sums[1] / steps, "kl": sums[2] / steps,
               "kl_weight": kl_weight, "valid_elbo": val, "seconds": time.perf_counter() - start}
        trained.history.append(row)
        if log:
            log(f"[{config.prior} d={config.latent_dim}] epoch {epoch + 1}/{config.epochs} loss {row['loss']:.2f} "
                f"recon {row['recon']:.2f} kl {row['kl']:.2f} (weight {kl_weight:.2f}) valid {val:.2f}")
        # Early stopping only counts once the KL weight has reached 1: before that the ELBOs are not comparable.
        if kl_weight >= 1.0 or model.latent.deterministic:
            if val > best:
                best, best_state, stale, trained.best_epoch = val, {k: v.clone() for k, v in model.state_dict().items()}, 0, epoch + 1
            else:
                stale += 1
                if stale >= config.patience:
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
                "best_epoch": trained.best_epoch, "params": trained.params}
        atomic.write_text(stage / "config.json", json.dumps(meta, indent=2) + "\n")
    return out


def load_checkpoint(folder: str | Path) -> TrainedVAE:
    from safetensors.torch import load_file

    from ..errors import CheckpointError

    folder = Path(folder)
    try:
        meta = json.loads((folder / "config.json").read_text())
        config = TrainConfig(**meta["config"])
        model = VAE(config.prior, config.latent_dim)
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{folder}: not a VAE checkpoint written by 'weightdist vae train' ({exc})") from None
    model.eval()
    return TrainedVAE(model, config, meta.get("history", []), meta.get("seconds", 0.0), meta.get("best_epoch", 0))
