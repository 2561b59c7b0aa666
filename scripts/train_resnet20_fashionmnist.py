"""Train the embedded default model: CIFAR ResNet-20 adapted to 1x28x28 Fashion-MNIST.

Reproduces weightdist/sources/weights/resnet20_fashionmnist.safetensors (float32,
about 1.1 MB) and its metadata JSON (seed, epochs, test accuracy, schedule), and
writes weight snapshots during training for ``weightdist fit --over-training``.

    python scripts/train_resnet20_fashionmnist.py --epochs 10 --seed 0 \
        --snapshot-dir runs/resnet20_fashionmnist/snapshots

Seeded (torch and the data order); bit-exact reruns additionally need the same torch
version and thread count.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from weightdist.data import load_split  # noqa: E402
from weightdist.sources.cifar_resnet import CifarResNet  # noqa: E402

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weightdist" / "models" / "weights"
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics
SNAPSHOT_EPOCHS = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return ((torch.from_numpy(images).float() / 255.0 - MEAN) / STD).unsqueeze(1)


def augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 28x28 crop of the 2-pixel zero-padded image plus horizontal flip, per sample."""
    b = batch.shape[0]
    padded = F.pad(batch, (2, 2, 2, 2), value=(0 - MEAN) / STD)[:, 0]
    oy = torch.randint(0, 5, (b,), generator=gen)
    ox = torch.randint(0, 5, (b,), generator=gen)
    rows = (oy[:, None] + torch.arange(28))[:, :, None]
    cols = (ox[:, None] + torch.arange(28))[:, None, :]
    out = padded[torch.arange(b)[:, None, None], rows, cols]
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out.unsqueeze(1)


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            correct += (model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum().item()
    model.train()
    return correct / len(x)


def save_atomic(state: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, tmp, metadata=metadata)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR / "resnet20_fashionmnist.safetensors")
    ap.add_argument("--snapshot-dir", type=Path, default=Path("runs/resnet20_fashionmnist/snapshots"))
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    train, test = load_split("fashion-mnist", "train", args.data_dir), load_split("fashion-mnist", "test", args.data_dir)
    x_train, y_train = to_tensor(train.images), torch.from_numpy(train.labels)
    x_test, y_test = to_tensor(test.images), torch.from_numpy(test.labels)

    model = CifarResNet(20, num_classes=10, in_channels=1)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = steps_per_epoch // 2
    # Half an epoch of linear warm-up, then cosine decay to zero.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
    )
    snapshot_steps = {round(e * steps_per_epoch): e for e in SNAPSHOT_EPOCHS if e <= args.epochs}

    def snapshot(step: int) -> None:
        if step in snapshot_steps:
            epoch = snapshot_steps[step]
            save_atomic(model.state_dict(), args.snapshot_dir / f"step{step:06d}_epoch{epoch:05.2f}.safetensors",
                        {"epoch": str(epoch), "step": str(step), "seed": str(args.seed)})

    step, start = 0, time.time()
    snapshot(0)
    for epoch in range(args.epochs):
        order = torch.randperm(len(x_train), generator=gen)
        running = 0.0
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            loss = F.cross_entropy(model(augment(x_train[idx], gen)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            running += loss.item()
            snapshot(step)
        acc = evaluate(model, x_test, y_test)
        print(f"epoch {epoch + 1}/{args.epochs} loss {running / steps_per_epoch:.4f} "
              f"test_acc {acc:.4f} lr {sched.get_last_lr()[0]:.4f} elapsed {time.time() - start:.0f}s", flush=True)

    acc = evaluate(model, x_test, y_test)
    meta = {
        "model": "resnet20_fashionmnist",
        "architecture": "CifarResNet(depth=20, num_classes=10, in_channels=1), option-A shortcuts",
        "dataset": "Fashion-MNIST (60k train / 10k test), normalised with mean 0.2860, std 0.3530",
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": f"SGD nesterov momentum 0.9, lr {args.lr}, weight decay {args.weight_decay}",
        "schedule": "linear warm-up for half an epoch, then cosine decay to 0",
        "augmentation": "random 28x28 crop of 2-pixel padding, horizontal flip",
        "test_accuracy": round(acc, 4),
        "train_seconds": round(time.time() - start, 1),
        "torch_version": torch.__version__,
        "command": "python scripts/train_resnet20_fashionmnist.py " + " ".join(sys.argv[1:]),
    }
    save_atomic(model.state_dict(), args.out, {k: str(v) for k, v in meta.items()})
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
