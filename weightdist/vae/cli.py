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


def cmd_train(args: argparse.Namespace) -> int:
    from ..atomic import check_writable_dir
    from .train import TrainConfig, save_checkpoint, train_vae
    from .latents import LATENTS
    from ..errors import WeightdistError

    if args.prior not in LATENTS:
        raise WeightdistError(f"unknown prior {args.prior!r}; choose from {', '.join(LATENTS)}")
    out = check_writable_dir(args.out or f"runs/vae/{args.prior}_d{args.latent_dim}")
    config = TrainConfig(prior=args.prior, latent_dim=args.latent_dim, epochs=args.epochs, seed=args.seed,
                         data_dir=args.data_dir, dataset=args.dataset, train_size=args.train_size)
    trained = train_vae(config, progress=not args.quiet)
    save_checkpoint(trained, out)
    print(f"wrote {out}/model.safetensors and {out}/config.json")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import QUICK, Plan, run_comparison

    base = Plan(**QUICK) if args.quick else Plan()
    overrides = {k: v for k, v in {"priors": args.priors, "dims": args.latent_dims, "epochs": args.epochs, "k": args.k,
                                   "test_size": args.test_size, "seed": args.seed, "data_dir": args.data_dir,
                                   "dataset": args.dataset}.items() if v is not None}
    plan = dataclasses.replace(base, **overrides)
    command = getattr(args, "command_line", None) or "weightdist " + shlex.join(sys.argv[1:])
    results = run_comparison(plan, args.out, command=command, progress=not args.quiet)
    print(f"wrote {args.out}/report.md ({len(results)} runs)")
    return 0


def add_vae_commands(subparsers) -> None:
    vae = subparsers.add_parser("vae", help="VAE latent priors: train one, or compare them side by side")
    sub = vae.add_subparsers(dest="vae_command", metavar="VAE_COMMAND", required=True)

    def data_options(p):
        p.add_argument("--dataset", default=None, choices=("fashion-mnist", "mnist"), help="default fashion-mnist")
        p.add_argument("--data-dir", default=None, help="folder with the IDX files (default: Debian's dataset-fashion-mnist)")
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--quiet", action="store_true", help="no progress bars")

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
    p.add_argument("--quick", action="store_true", help="a small real run of every prior, under 5 minutes on 2 cores")
    p.add_argument("--out", default="reports/vae", help="output folder (default reports/vae)")
    data_options(p)
    p.set_defaults(func=cmd_compare)


def main(argv=None) -> int:
    from ..cli import main as weightdist_main

    return weightdist_main(["vae", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
