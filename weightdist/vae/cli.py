"""`weightdist vae train` and `weightdist vae compare`: thin wrappers over train.py and compare.py."""
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
    from ..errors import WeightdistError
    from .latents import LATENTS

    unknown = [n for n in names if n not in LATENTS]
    if unknown:
        raise WeightdistError(f"unknown prior(s) {', '.join(unknown)}; choose from {', '.join(LATENTS)}")


def cmd_train(args: argparse.Namespace) -> int:
    from ..stores.atomic import check_writable_dir
    from ..data import dataset_dir
    from ..errors import WeightdistError
    from .train import TrainConfig, save_checkpoint, train_vae

    _check_prior([args.prior])
    if args.latent_dim < 1:
        raise WeightdistError(f"--latent-dim must be a positive integer, got {args.latent_dim}")
    if args.epochs < 1:
        raise WeightdistError(f"--epochs must be a positive integer, got {args.epochs}")
    out = check_writable_dir(args.out or f"runs/vae/{args.prior}_d{args.latent_dim}")  # before any training
    _setup(args)
    dataset_dir(args.dataset, args.data_dir)  # a missing dataset fails here, in one line
    config = TrainConfig(prior=args.prior, latent_dim=args.latent_dim, epochs=args.epochs, seed=args.seed,
                         data_dir=args.data_dir, dataset=args.dataset, train_size=args.train_size)
    trained = train_vae(config, log=None if args.quiet else print, progress=not args.quiet)
    save_checkpoint(trained, out)
    print(f"wrote {out}/model.safetensors and {out}/config.json")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..stores.atomic import check_writable_dir
    from ..data import dataset_dir
    from ..errors import WeightdistError
    from .compare import QUICK, Plan, run_comparison

    if args.priors is not None:
        _check_prior(args.priors)
    if args.epochs is not None and args.epochs < 1:
        raise WeightdistError(f"--epochs must be a positive integer, got {args.epochs}")
    for name in ("k", "test_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise WeightdistError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    base = Plan(**QUICK) if args.quick else Plan()
    overrides = {k: v for k, v in {"priors": args.priors, "dims": args.latent_dims, "epochs": args.epochs, "k": args.k,
                                   "test_size": args.test_size, "seed": args.seed, "data_dir": args.data_dir,
                                   "dataset": args.dataset, "train_size": args.train_size}.items() if v is not None}
    plan = dataclasses.replace(base, **overrides)  # validates priors and dimensions
    check_writable_dir(args.out)  # before any training
    _setup(args)
    plan = dataclasses.replace(plan, data_dir=args.data_dir)
    dataset_dir(plan.dataset, plan.data_dir)
    command = getattr(args, "command_line", None) or "weightdist " + shlex.join(sys.argv[1:])
    results = run_comparison(plan, args.out, command=command, progress=not args.quiet,
                             log=None if args.quiet else print)
    print(f"wrote {args.out}/report.md ({len(results)} runs)")
    return 0


def add_vae_commands(subparsers) -> None:
    vae = subparsers.add_parser("vae", help="VAE latent priors: train one, or compare them side by side")
    sub = vae.add_subparsers(dest="vae_command", metavar="VAE_COMMAND", required=True)

    def data_options(p):
        p.add_argument("--dataset", default=None, choices=("fashion-mnist", "mnist"), help="default fashion-mnist")
        p.add_argument("--data-dir", default=None, help="folder with the IDX files (default: Debian's dataset-fashion-mnist)")
        p.add_argument("--download", action="store_true", help="fetch the dataset with torchvision into --data-dir (default ./data); online only")
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest when cores are shared)")
        p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")

    p = sub.add_parser("train", help="train one VAE and save a checkpoint plus config JSON")
    p.add_argument("--prior", default="gaussian", help="gaussian, vmf, power_spherical, mog, vamp or ae")
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    p.add_argument("--out", default=None, help="checkpoint folder (default runs/vae/<prior>_d<dim>)")
    data_options(p)
    p.set_defaults(func=cmd_train, seed=0, dataset="fashion-mnist")

    p = sub.add_parser("compare", help="train every prior at every dimension and write results.csv, report.md, figures")
    p.add_argument("--priors", type=_names, default=None, help="default gaussian,vmf,power_spherical,mog,vamp,ae")
    p.add_argument("--latent-dims", type=_ints, default=None, help="default 2,5,10,20")
    p.add_argument("--epochs", type=int, default=None, help="default 20 (quick: 3)")
    p.add_argument("--k", type=int, default=None, help="importance samples for test log-likelihood (default 500; quick: 100)")
    p.add_argument("--test-size", type=int, default=None, help="test images scored (default 1000; quick: 500)")
    p.add_argument("--train-size", type=int, default=None, help="use only the first N training images (quick: 10000)")
    p.add_argument("--quick", action="store_true", help="a small real run of every prior, under 5 minutes on 2 cores")
    p.add_argument("--out", default="reports/vae", help="output folder (default reports/vae)")
    data_options(p)
    p.set_defaults(func=cmd_compare)


def main(argv=None) -> int:
    """Stand-alone entry point (``python -m weightdist.vae.cli compare --quick``): its own parser, one-line errors."""
    from ..errors import WeightdistError

    parser = argparse.ArgumentParser(prog="weightdist")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    add_vae_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["vae"]:
        argv = ["vae", *argv]
    args = parser.parse_args(argv)
    args.command_line = "weightdist " + shlex.join(a for a in argv if a not in ("--debug", "--quiet"))
    try:
        return int(args.func(args) or 0)
    except WeightdistError as exc:
        if args.debug:
            raise
        print(f"weightdist: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
