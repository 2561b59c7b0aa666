"""Thin argparse front end. Each command calls one library function; ``main`` is the one
place that turns library errors into a single stderr line and an exit code."""
from __future__ import annotations

import argparse
import gc
import os
import shlex
import signal
import sys
import threading
import traceback
from typing import Sequence

from ..errors import OptionError, WeightdistError
from ..sources.extract import DEFAULT_KINDS, KINDS

EXIT_BUG = 1
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
    p.add_argument("--max-tensor-bytes", type=_byte_size, default=None, metavar="SIZE",
                   help="refuse a layer whose float64 copy is larger, e.g. 4G or 500M (default: 16G or half the RAM, if less)")
    p.add_argument("--spectral", action="store_true", help="spectral view per weight matrix: ESD power-law alpha, stable rank, spectral norm, Marchenko-Pastur spikes, permuted comparison (+ ESD plots)")
    p.add_argument("--outliers", action="store_true", help="also write outliers.csv: the indices of weights beyond the best law's 1e-6 two-sided quantiles")
    p.add_argument("--no-intervals", action="store_true", help="skip the 95%% profile-likelihood intervals on beta, df and scale")
    p.add_argument("--include-quantized", action="store_true", help="count layers stored quantized (GGUF Q4_K, ...; grid values) in the headline win counts too")


def _byte_size(text: str) -> int:
    """'4G', '500M', '1.5T' or a plain byte count."""
    units = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    value, unit = text.strip().upper().rstrip("IB").rstrip("B") or "0", ""
    if value[-1:] in units:
        value, unit = value[:-1], value[-1]
    try:
        size = int(float(value) * units[unit])
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 4G, 500M or a number of bytes") from None
    if size < 8:
        raise argparse.ArgumentTypeError(f"{text!r} is too small; a layer needs at least 8 bytes per value")
    return size


def fit_options(args: argparse.Namespace):
    from ..pipeline import FitOptions

    return FitOptions(families=args.families, kinds=args.kinds, include=args.include, exclude=args.exclude,
                      min_size=args.min_size, max_per_layer=args.max_per_layer, seed=args.seed,
                      n_boot=args.bootstrap, boot_max_n=args.bootstrap_max_n,
                      spectral=args.spectral, outliers=args.outliers, intervals=not args.no_intervals,
                      include_quantized=getattr(args, "include_quantized", False),
                      max_tensor_bytes=getattr(args, "max_tensor_bytes", None))


def cmd_fit(args: argparse.Namespace) -> int:
    from ..api import DEFAULT_MODEL, fit_report

    if args.over_training:
        from ..analyses.dynamics import over_training_report

        out = over_training_report(args.over_training, args.out, options=fit_options(args), command=args.command_line,
                                   progress=not args.quiet)
    elif args.granularity == "channel":
        from ..analyses.channels import ChannelOptions, channel_report

        options = ChannelOptions(families=args.families, include=args.include, exclude=args.exclude,
                                 min_channel_size=args.min_channel_size,
                                 plot_layers=4 if args.plot_layers is None else args.plot_layers)
        out = channel_report(args.model or DEFAULT_MODEL, args.out, options=options, command=args.command_line,
                             init=args.init, seed=args.seed, progress=not args.quiet)
    else:
        out = fit_report(args.model or DEFAULT_MODEL, args.out, init=args.init, options=fit_options(args),
                         plots=not args.no_plots, plot_layers=args.plot_layers, command=args.command_line,
                         progress=not args.quiet, weights_file=args.weights, label=args.label, workers=args.workers)
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
    print(f"{'scipy:<name>':12s} any continuous scipy.stats distribution, opt-in (--families scipy:logistic): scipy's generic MLE")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..analyses.compare import compare_report

    out = compare_report(args.models, args.out, options=fit_options(args), command=args.command_line)
    print(f"wrote {out}/report.md")
    return 0


def cmd_quant(args: argparse.Namespace) -> int:
    from ..analyses.quant import QuantOptions, quant_report

    options = QuantOptions(bits=args.bits, granularities=args.granularity, min_channel_size=args.min_channel_size,
                           families=args.families, include=args.include, exclude=args.exclude,
                           accuracy_bits=args.accuracy_bits, evaluate=not args.no_accuracy)
    out = quant_report(args.model, args.out, options=options, command=args.command_line, progress=not args.quiet,
                       init=args.init, seed=args.seed)
    print(f"wrote {out}/report.md")
    return 0


def _bits(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole bit widths from 2 to 16, comma-separated, e.g. 2,3,4,8") from None


def cmd_drift(args: argparse.Namespace) -> int:
    from ..analyses.drift import drift_report

    out = drift_report(args.model, args.out, options=fit_options(args), command=args.command_line)
    print(f"wrote {out}/report.md")
    return 0


def cmd_findings(args: argparse.Namespace) -> int:
    from ..reporting.findings import findings_report

    print(f"wrote {findings_report(args.reports, args.out, command=args.command_line)}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the tool's error policy: a bad option is one line and exit code 2, not the usage block."""

    def error(self, message: str):
        print(f"weightdist: error: {' '.join(message.split())}; see '{self.prog} --help'", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def _check_not_empty(args: argparse.Namespace) -> None:
    """An empty model name or --out is a mistake (a shell variable that was not set), not a request for the default."""
    for name in ("model", "out", "models"):
        value = getattr(args, name, None)
        if value == "" or (isinstance(value, list) and "" in value):
            what = {"out": "--out", "model": "the model name", "models": "a model name"}[name]
            raise OptionError(f"{what} is empty; pass a name" + ("" if name == "models" else ", or leave it out for the default"))


_CLI_PID = os.getpid()


def _interrupt_on_sigterm(signum, frame):
    """`timeout`, `kill`: clean up as on Ctrl-C (the staging folder and the lock). A worker forked a moment ago
    still holds this handler until its initializer runs: there it just exits, as SIGTERM's default would."""
    if os.getpid() != _CLI_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="weightdist", description="Which distribution do a trained network's weights follow? Measured per layer.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("fit", help="fit Gaussian/Laplace/Student-t/gennorm to every layer and write a report")
    p.add_argument("model", nargs="?", default=None, help="model name (see 'weightdist models'), timm:<name>, or a checkpoint file; default: the embedded resnet20_fashionmnist")
    p.add_argument("--out", default=None, help="report folder (default: reports/<model>); replaced whole, so it must be new, empty or an earlier weightdist report")
    p.add_argument("--no-plots", action="store_true", help="skip figures (faster)")
    p.add_argument("--plot-layers", type=int, default=None, metavar="N", help="plot only N layers spread over depth (default: all; 0: none, the fit report's overview figure stays)")
    p.add_argument("--over-training", metavar="DIR", default=None, help="folder of weight snapshots saved during training: plot the fits across training")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--init", action="store_true", help="same architecture, random initialisation instead of trained weights")
    p.add_argument("--label", default=None, help="model name to show in the report (default: the model name or file name)")
    p.add_argument("--weights", metavar="FILE", default=None, help="local weights for a timm:<name> model (timm's pretrained_cfg_overlay file)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="processes fitting layers in parallel (default: this machine's cores; same numbers for any N)")
    p.add_argument("--granularity", choices=("tensor", "channel"), default="tensor", help="channel: fit every family to each output channel of conv/linear weights (report in reports/<model>_channels)")
    p.add_argument("--min-channel-size", type=int, default=32, metavar="N", help="with --granularity channel: layers whose channels hold fewer values are not fitted per channel (default 32)")
    add_fit_options(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("compare", help="one cross-model table from models, checkpoints or report folders")
    p.add_argument("models", nargs="+", help="model names, checkpoint files or report folders written by 'fit'")
    p.add_argument("--out", default="reports/compare", help="output folder (default: reports/compare)")
    add_fit_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("quant", help="quantisation clips from the fitted laws: MSE, SQNR and (where test data exists) accuracy")
    p.add_argument("model", nargs="?", default="resnet20_fashionmnist", help="any model 'fit' accepts (default: the embedded resnet20_fashionmnist)")
    p.add_argument("--bits", type=_bits, default=(2, 3, 4, 8), help="bit widths from 2 to 16, comma-separated (default 2,3,4,8)")
    p.add_argument("--granularity", type=_csv, default=("tensor",), help="tensor, channel or tensor,channel: one clip per tensor or per output channel (default tensor)")
    p.add_argument("--min-channel-size", type=int, default=32, metavar="N", help="per channel: layers whose channels hold fewer values use one clip per tensor (default 32)")
    p.add_argument("--accuracy-bits", type=_bits, default=None, metavar="BITS", help="evaluate the whole model's accuracy only at these of --bits (default: all; each evaluation is a pass over the test set)")
    p.add_argument("--no-accuracy", action="store_true", help="MSE and SQNR only, even when the model has test data")
    p.add_argument("--families", type=_csv, default=None, help="families whose clips to compare (default: all)")
    p.add_argument("--include", default=None, help="regex: quantise only weights whose name matches")
    p.add_argument("--exclude", default=None, help="regex: leave weights whose name matches out of the analysis")
    p.add_argument("--init", action="store_true", help="same architecture, random initialisation")
    p.add_argument("--seed", type=int, default=0, help="seed for --init")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", default=None, help="report folder (default: reports/<model>_quant)")
    p.set_defaults(func=cmd_quant)

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

    from .scan import add_commands as add_scan_commands  # scan and query

    add_scan_commands(sub, add_fit_options)
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
    # The one error policy: a WeightdistError is the user's to fix (one line, its exit code);
    # anything else is our bug (its traceback, and a request to report it).
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt_on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        _check_not_empty(args)
        return int(args.func(args) or 0)
    except WeightdistError as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"weightdist: error: {message}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("weightdist: interrupted; the previous report (if any) is left as it was", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print(f"weightdist: internal error (a bug, not your input): please report it with the traceback above "
              f"and the command `{args.command_line}`", file=sys.stderr)
        return EXIT_BUG
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def run() -> None:
    """The console command: :func:`main` with the garbage collector told to skip what imports made.

    torch, torchvision and scipy create about 400,000 long-lived objects on import. Every full collection
    walks them all (a tenth of a second each, in the run and in every forked worker, whose walk also copies
    the parent's pages), and the interpreter's collections at exit took over a second of a short run
    (measured). Frozen, they are skipped; the operating system reclaims the memory as it would anyway.
    Not done in ``main``, which tests and notebooks call in a process that lives on."""
    gc.freeze()  # what importing the CLI made (torch, scipy, pandas)
    code = main()
    gc.freeze()  # and what the command made (torchvision, the model), before the exit's collections
    sys.exit(code)


if __name__ == "__main__":
    run()
