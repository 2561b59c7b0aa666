"""Thin argparse front end. Each command calls one library function; ``main`` is the one
place that turns library errors into a single stderr line and an exit code."""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Sequence

from ..errors import WeightdistError
from ..sources.extract import DEFAULT_KINDS, KINDS

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_fit_options(p: argparse.ArgumentParser) -> None:
    """Options that change the numbers; shared by `fit` and `compare`."""
    p.add_argument("--families", type=_csv, default=None, help="comma-separated families (default: all; see 'weightdist families')")
    p.add_argument("--kinds", type=_csv, default=DEFAULT_KINDS, help=f"layer kinds, from {','.join(KINDS)} (default {','.join(DEFAULT_KINDS)})")
    p.add_argument("--include", default=None, help="regex: analyse only layers whose name matches")
    p.add_argument("--exclude", default=None, help="regex: skip layers whose name matches")
    p.add_argument("--min-size", type=int, default=1, help="skip tensors with fewer values")
    p.add_argument("--max-per-layer", type=int, default=None, help="seeded random subsample of at most N weights per layer")
    p.add_argument("--seed", type=int, default=0, help="seed for --init, subsampling and the bootstrap")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B", help="parametric-bootstrap replicates for corrected KS p-values (default 0: off)")
    p.add_argument("--bootstrap-max-n", type=int, default=2000, metavar="N", help="seeded subsample size per bootstrap replicate")


def fit_options(args: argparse.Namespace):
    from ..pipeline import FitOptions

    return FitOptions(families=args.families, kinds=args.kinds, include=args.include, exclude=args.exclude,
                      min_size=args.min_size, max_per_layer=args.max_per_layer, seed=args.seed,
                      n_boot=args.bootstrap, boot_max_n=args.bootstrap_max_n)


def cmd_fit(args: argparse.Namespace) -> int:
    from ..api import DEFAULT_MODEL, fit_report

    if args.over_training:
        from ..analyses.dynamics import over_training_report

        out = over_training_report(args.over_training, args.out, options=fit_options(args), command=args.command_line)
    else:
        out = fit_report(args.model or DEFAULT_MODEL, args.out, init=args.init, options=fit_options(args),
                         plots=not args.no_plots, plot_layers=args.plot_layers, command=args.command_line,
                         progress=not args.quiet, weights_file=args.weights, label=args.label)
    print(f"wrote {out}/report.md")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..sources import list_models

    print("\n".join(list_models(args.pattern)))
    return 0


def cmd_families(args: argparse.Namespace) -> int:
    from ..core.families import FAMILIES

    for name in FAMILIES:
        fam = FAMILIES.get(name)
        print(f"{name:12s} params: {', '.join(fam.param_names)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..analyses.compare import compare_report

    out = compare_report(args.models, args.out, options=fit_options(args), command=args.command_line)
    print(f"wrote {out}/report.md")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from ..analyses.drift import drift_report

    out = drift_report(args.model, args.out, options=fit_options(args), command=args.command_line)
    print(f"wrote {out}/report.md")
    return 0


def cmd_findings(args: argparse.Namespace) -> int:
    from ..reporting.findings import findings_report

    print(f"wrote {findings_report(args.reports, args.out, command=args.command_line)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="weightdist", description="Which distribution do a trained network's weights follow? Measured per layer.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("fit", help="fit Gaussian/Laplace/Student-t/gennorm to every layer and write a report")
    p.add_argument("model", nargs="?", default=None, help="model name (see 'weightdist models'), timm:<name>, or a checkpoint file; default: the embedded resnet20_fashionmnist")
    p.add_argument("--out", default=None, help="report folder (default: reports/<model>); replaced whole, so it must be new, empty or an earlier weightdist report")
    p.add_argument("--no-plots", action="store_true", help="skip figures (faster)")
    p.add_argument("--plot-layers", type=int, default=None, metavar="N", help="plot only N layers spread over depth (default: all)")
    p.add_argument("--over-training", metavar="DIR", default=None, help="folder of weight snapshots saved during training: plot the fits across training")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--init", action="store_true", help="same architecture, random initialisation instead of trained weights")
    p.add_argument("--label", default=None, help="model name to show in the report (default: the model name or file name)")
    p.add_argument("--weights", metavar="FILE", default=None, help="local weights for a timm:<name> model (timm's pretrained_cfg_overlay file)")
    add_fit_options(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("compare", help="one cross-model table from models, checkpoints or report folders")
    p.add_argument("models", nargs="+", help="model names, checkpoint files or report folders written by 'fit'")
    p.add_argument("--out", default="reports/compare", help="output folder (default: reports/compare)")
    add_fit_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("drift", help="trained against --init: norm change, shape change, closed-form init check")
    p.add_argument("model", help="a named architecture (see 'weightdist models')")
    p.add_argument("--out", default=None, help="output folder (default: reports/<model>_drift)")
    add_fit_options(p)
    p.set_defaults(func=cmd_drift)

    p = sub.add_parser("findings", help="write reports/README.md, the cross-model answer, from report folders")
    p.add_argument("reports", nargs="?", default="reports", help="folder holding report folders (default: reports)")
    p.add_argument("--out", default=None, help="output file (default: <reports>/README.md)")
    p.set_defaults(func=cmd_findings)

    p = sub.add_parser("models", help="list model names (glob pattern, e.g. 'resnet*' or 'timm:vit*')")
    p.add_argument("pattern", nargs="?", default=None)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("families", help="list distribution families")
    p.set_defaults(func=cmd_families)

    try:
        from ..vae.cli import add_vae_commands
    except ImportError:  # the VAE submodule is optional at import time
        add_vae_commands = None
    if add_vae_commands is not None:
        add_vae_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "weightdist " + shlex.join(a for a in argv if a not in ("--debug", "--quiet"))
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args.func(args) or 0)
    except (WeightdistError, ValueError) as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"weightdist: error: {message}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("weightdist: interrupted; the previous report (if any) is left as it was", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
