"""`weightdist vae compare`: every latent prior trained the same way over seeds, measured side by side.

The pieces: ``plan`` (which cells), ``experiment`` (resumable cell loop), ``evaluate`` (one cell),
``claims`` (statistics and verdicts), ``figures`` and ``markdown``. This module only wires them.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pandas as pd
import torch

from ..reporting.report import csv_bytes
from ..stores import atomic
from .claims import claim_verdicts, summarise  # noqa: F401  (claim_verdicts: used by reporting.findings)
from .evaluate import train_feature_net
from .experiment import decode_cell, run_cells, write_cells
from .figures import write_figures
from .markdown import progress_markdown, report_markdown
from .plan import QUICK, Plan  # noqa: F401
from .train import load_data

FEATURE_NET_SEED = 0


def _plan_json(plan: Plan, **extra) -> str:
    return json.dumps({**dataclasses.asdict(plan), **extra}, indent=2, default=list) + "\n"


def run_comparison(plan: Plan, out: str | Path, command: str = "", log=print, progress: bool = True) -> pd.DataFrame:
    """Run (or resume) the plan into ``out``; returns the per-(prior, dim) summary (results.csv)."""
    out = atomic.check_writable_dir(out)  # before any training
    command = command or "weightdist vae compare"
    start = time.perf_counter()
    data = load_data(plan.dataset, plan.data_dir, plan.idx_files)
    n_features = min(20000, plan.train_size or 20000)  # the plan's training subset, never more
    feature_net = train_feature_net(data.train[:n_features], data.train_labels[:n_features], seed=FEATURE_NET_SEED)
    total = len(plan.cells())

    def commit(cells: dict) -> None:
        with atomic.staged_dir(out) as stage:
            write_cells(stage, cells)
            atomic.write_text(stage / "plan.json", _plan_json(plan, command=command))
            atomic.write_text(stage / "report.md", progress_markdown(plan, len(cells), total, command))

    cells, trained_now = run_cells(plan, Path(out), data, feature_net, commit, log=log, progress=progress)
    decoded = [decode_cell(files) for files in cells.values()]
    table = pd.DataFrame([row for row, _ in decoded])
    arrays = {(row["prior"], int(row["latent_dim"]), int(row["seed"])): a for row, a in decoded}
    summary = summarise(table)
    seconds = time.perf_counter() - start
    with atomic.staged_dir(out) as stage:
        write_cells(stage, cells)
        figures = write_figures(stage, summary, arrays, plan.priors, plan.dims, plan.seeds[0],
                                data.test[:8].numpy(), data.test_labels.numpy())
        atomic.write_bytes(stage / "cells.csv", csv_bytes(table))
        atomic.write_bytes(stage / "results.csv", csv_bytes(summary))
        atomic.write_text(stage / "plan.json", _plan_json(plan, command=command, seconds_this_run=round(seconds, 1),
                                                          torch_threads=torch.get_num_threads()))
        atomic.write_text(stage / "report.md", report_markdown(plan, summary, figures, command, seconds, trained_now))
    return summary
