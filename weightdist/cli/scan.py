"""`weightdist scan` and `weightdist query`: the command-line front of weightdist.scan and the Parquet store."""
from __future__ import annotations

import argparse
import sys


def cmd_scan(args: argparse.Namespace) -> int:
    from ..scan import scan, scan_models, summary_line
    from . import fit_options

    models = scan_models(args.specs, args.from_file, args.init)
    summary = scan(models, args.store, options=fit_options(args), engine=args.engine, workers=args.workers,
                   address=args.address, progress=not args.quiet, command=args.command_line)
    line = summary_line(summary, args.store)
    if summary.ok:
        print(line)
        return 0
    print(f"weightdist: {line}", file=sys.stderr)
    return 1  # some models or layers failed; the store holds everything else


def cmd_query(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..stores.parquet import ParquetStore

    table = ParquetStore.open(args.store).query(args.sql)
    if args.csv:
        table.to_csv(sys.stdout, index=False, lineterminator="\n")
    else:
        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
            print(table.to_string(index=False) if not table.empty else "(no rows)")
    return 0


def add_commands(sub, add_fit_options) -> None:
    """Add `scan` and `query` to the CLI's subcommands."""
    from ..engines import engine_names

    p = sub.add_parser("scan", help="fit every layer of many models, in parallel, into a Parquet store (resumable)")
    p.add_argument("specs", nargs="*", metavar="SPEC", help="model names, prefix:name specs or weights files")
    p.add_argument("--from", dest="from_file", metavar="FILE", default=None,
                   help="file with one model spec per line (optionally followed by --init; '#' comments)")
    p.add_argument("--store", required=True, metavar="DIR", help="the Parquet store: a new or empty folder, or an earlier scan's store to resume")
    p.add_argument("--engine", default="local", choices=engine_names(), help="where units run (default: local process pool)")
    p.add_argument("--address", default=None, help="join a running Ray cluster or Dask scheduler instead of starting one")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes to start (default: all cores)")
    p.add_argument("--init", action="store_true", help="analyse every model's random initialisation instead of its trained weights")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_fit_options(p)
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("query", help="run DuckDB SQL over a scan store (views: layers, models, runs)")
    p.add_argument("store", metavar="DIR", help="a folder written by 'weightdist scan --store DIR'")
    p.add_argument("sql", help="e.g. \"SELECT model, best, count(*) FROM layers WHERE is_best GROUP BY ALL\"")
    p.add_argument("--csv", action="store_true", help="print CSV instead of an aligned table")
    p.set_defaults(func=cmd_query)
