"""`weightdist vae train` and `weightdist vae compare`: thin wrappers over train.py and compare.py.

Errors are raised as ``WeightdistError`` subclasses; the one place that prints them is the main
CLI (``weightdist.cli.main``)."""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _idx(text: str) -> tuple[str, ...]:
    files = tuple(v for v in text.split(",") if v)
    if len(files) != 4:
        raise argparse.ArgumentTypeError("expected TRAIN_IMAGES,TRAIN_LABELS,TEST_IMAGES,TEST_LABELS (four IDX files)")
    return files


def _setup(args: argparse.Namespace) -> None:
    """Threads and data location, shared by both subcommands (before any work)."""
    import torch

    from ..errors import WeightdistError

    if not 1 <= args.threads <= 64:
        raise WeightdistError(f"--threads must be between 1 and 64, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.download:
        from .train import download_dataset

        args.data_dir = str(download_dataset(args.dataset or "fashion-mnist", args.data_dir or "data"))


def _check_prior(names) -> None:
    from ..errors import UnknownNameError
    from .latents import LATENTS

    unknown = [n for n in names if n not in LATENTS]
    if unknown:
        raise UnknownNameError(f"unknown prior(s) {', '.join(unknown)}; choose from {', '.join(LATENTS)}")


def cmd_train(args: argparse.Namespace) -> int:
    from ..stores.atomic import check_writable_dir
    from .train import TrainConfig, save_checkpoint, train_vae

    _check_prior([args.prior])
    config = TrainConfig(prior=args.prior, latent_dim=args.latent_dim, epochs=args.epochs, seed=args.seed,
                         data_dir=args.data_dir, dataset=args.dataset, idx_files=args.idx, train_size=args.train_size)
    out = check_writable_dir(args.out or f"runs/vae/{args.prior}_d{args.latent_dim}")  # before any training
    _setup(args)
    config = dataclasses.replace(config, data_dir=args.data_dir)
    _check_data(config.dataset, config.data_dir, config.idx_files)  # a missing dataset fails here, in one line
    trained = train_vae(config, log=None if args.quiet else print, progress=not args.quiet)
    save_checkpoint(trained, out)
    print(f"wrote {out}/model.safetensors and {out}/config.json")
    return 0


def _check_data(dataset: str, data_dir, idx_files) -> None:
    """A missing or malformed dataset fails before any training, in one line."""
    from ..data import dataset_dir, load_images

    if idx_files:
        load_images(idx_files=idx_files)  # reads them once: counts, header and 28x28 shape
    else:
        dataset_dir(dataset, data_dir)


def cmd_compare(args: argparse.Namespace) -> int:
    from ..stores.atomic import check_writable_dir
    from .compare import run_comparison
    from .plan import QUICK, Plan

    base = Plan(**QUICK) if args.quick else Plan()
    overrides = {k: v for k, v in {"priors": args.priors, "dims": args.latent_dims, "seeds": args.seeds,
                                   "epochs": args.epochs, "patience": args.patience, "k": args.k,
                                   "test_size": args.test_size, "data_dir": args.data_dir, "dataset": args.dataset,
                                   "idx_files": args.idx, "train_size": args.train_size}.items() if v is not None}
    if args.full_test_set:
        overrides["test_size"] = None
    plan = dataclasses.replace(base, **overrides)  # validates every option
    check_writable_dir(args.out)  # before any training
    _setup(args)
    plan = dataclasses.replace(plan, data_dir=args.data_dir)
    _check_data(plan.dataset, plan.data_dir, plan.idx_files)
    command = getattr(args, "command_line", None) or "weightdist " + shlex.join(sys.argv[1:])
    results = run_comparison(plan, args.out, command=command, progress=not args.quiet,
                             log=None if args.quiet else print)
    print(f"wrote {args.out}/report.md ({len(results)} prior × dimension rows over {len(plan.seeds)} seeds)")
    return 0


def add_vae_commands(subparsers) -> None:
    vae = subparsers.add_parser("vae", help="VAE latent priors: train one, or compare them side by side")
    sub = vae.add_subparsers(dest="vae_command", metavar="VAE_COMMAND", required=True)

    def data_options(p):
        p.add_argument("--dataset", default=None, choices=("fashion-mnist", "mnist"), help="default fashion-mnist")
        p.add_argument("--data-dir", default=None, help="folder with the IDX files (default: Debian's dataset-fashion-mnist)")
        p.add_argument("--download", action="store_true", help="fetch the dataset with torchvision into --data-dir (default ./data); online only")
        p.add_argument("--idx", type=_idx, default=None, metavar="TRAIN_IMAGES,TRAIN_LABELS,TEST_IMAGES,TEST_LABELS",
                       help="any 28x28 image IDX files given by path, instead of --dataset")
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest when cores are shared)")
        p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")

    p = sub.add_parser("train", help="train one VAE and save a checkpoint plus config JSON")
    p.add_argument("--prior", default="gaussian", help="a registered latent prior (see 'weightdist vae compare --help')")
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--epochs", type=int, default=200, help="epoch cap; training stops earlier on the validation ELBO")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    p.add_argument("--out", default=None, help="checkpoint folder (default runs/vae/<prior>_d<dim>)")
    data_options(p)
    p.set_defaults(func=cmd_train, seed=0, dataset="fashion-mnist")

    p = sub.add_parser("compare", help="train every prior at every dimension and write results.csv, report.md, figures")
    from .latents import LATENTS
    from .plan import QUICK, Plan

    full = Plan()

    def default(name: str) -> str:
        value = getattr(full, name)
        text = ",".join(map(str, value)) if isinstance(value, tuple) else ("all" if value is None else str(value))
        return f"default {text}" + (f"; quick: {','.join(map(str, QUICK[name])) if isinstance(QUICK[name], tuple) else QUICK[name]}"
                                     if name in QUICK else "")

    p.add_argument("--priors", type=_names, default=None, help=f"comma-separated, from {', '.join(LATENTS)} ({default('priors')})")
    p.add_argument("--latent-dims", type=_ints, default=None, help=default("dims"))
    p.add_argument("--seeds", type=_ints, default=None, help=f"seeds per (prior, dim) cell ({default('seeds')})")
    p.add_argument("--epochs", type=int, default=None, help=f"epoch cap per cell ({default('epochs')})")
    p.add_argument("--patience", type=int, default=None, help=f"early-stopping patience in epochs ({default('patience')})")
    p.add_argument("--k", type=int, default=None, help=f"importance samples for the test log-likelihood ({default('k')})")
    p.add_argument("--test-size", type=int, default=None, help=f"score only the first N test images ({default('test_size')})")
    p.add_argument("--full-test-set", action="store_true", help="score every test image (overrides --test-size and quick)")
    p.add_argument("--train-size", type=int, default=None, help=f"use only the first N training images ({default('train_size')})")
    p.add_argument("--quick", action="store_true", help="a small real run of every prior, under 5 minutes on 2 cores")
    p.add_argument("--out", default="reports/vae", help="output folder (default reports/vae); a killed run resumes from "
                   "the cells cached there when rerun with the same options")
    data_options(p)
    p.set_defaults(func=cmd_compare)
