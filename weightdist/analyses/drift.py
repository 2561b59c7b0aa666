"""Trained against untrained: how far each layer moved, whether its shape changed, and a
closed-form check of the ``--init`` weights where the initialiser is known."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..stores import atomic
from ..core.families import get_family, label_of
from ..core.families.base import headline_families
from ..core.ks import ks_pvalue, ks_statistic
from ..pipeline import FitOptions
from ..escape import markdown_code, markdown_text
from ..reporting.report import csv_bytes, markdown_table

# An initialiser in closed form: layer -> (family, params).
InitLaw = Callable[[object], tuple[str, dict]]


def kaiming_normal_fan_in(layer) -> tuple[str, dict]:
    """torch.nn.init.kaiming_normal_ defaults: N(0, 2 / fan_in)."""
    return "gaussian", {"loc": 0.0, "scale": math.sqrt(2.0 / layer.fan_in)}


def torchvision_mobilenet(layer) -> tuple[str, dict]:
    """torchvision MobileNetV2: convs kaiming_normal_(mode='fan_out'), linear N(0, 0.01²)."""
    if layer.kind == "conv":
        fan_out = layer.shape[0] * int(np.prod(layer.shape[2:]))
        return "gaussian", {"loc": 0.0, "scale": math.sqrt(2.0 / fan_out)}
    return "gaussian", {"loc": 0.0, "scale": 0.01}


def bert_normal(layer) -> tuple[str, dict]:
    """BertPreTrainedModel._init_weights: linear weights N(0, initializer_range²)."""
    from ..sources.bert import MINILM_L6

    return "gaussian", {"loc": 0.0, "scale": MINILM_L6.initializer_range}


# Initialisation laws by the name a source entry's ModelInfo.init gives (sources/base.py).
INIT_LAWS: dict[str, InitLaw] = {
    "kaiming_normal_fan_in": kaiming_normal_fan_in,
    "torchvision_mobilenet": torchvision_mobilenet,
    "bert_normal_0.02": bert_normal,
}


def known_init(model: str) -> InitLaw | None:
    """The closed-form initialiser of ``model``, from its source entry's ModelInfo (None when unknown)."""
    from ..errors import WeightdistError
    from ..sources import model_info

    try:
        return INIT_LAWS.get(model_info(model).init)
    except (WeightdistError, KeyError, LookupError):  # a name no source knows has no known law
        return None


def init_check(model: str, layers) -> pd.DataFrame:
    """KS test of each --init layer against its closed-form law: the parameters are known in
    advance here, so this p-value is exact (no Lilliefors problem)."""
    law = known_init(model)
    if law is None:
        return pd.DataFrame()
    rows = []
    for layer in layers:
        if not layer.fan_in:
            continue
        family, params = law(layer)
        fam = get_family(family)
        x = np.sort(layer.values)
        d = ks_statistic(x, lambda v: fam.cdf(v, params))
        rows.append({"layer": layer.name, "expected_family": family, "expected_scale": params["scale"],
                     "sample_std": float(np.std(x)), "ks_stat": d, "ks_pvalue_exact": ks_pvalue(d, x.size)})
    return pd.DataFrame(rows)


def layer_norms(layers) -> dict[str, float]:
    return {layer.name: float(np.linalg.norm(layer.values)) for layer in layers}


def drift_table(trained: pd.DataFrame, init: pd.DataFrame, norms_trained: dict, norms_init: dict) -> pd.DataFrame:
    """Per layer: norm ratio and each family's headline shape (β, df, ...) of init against trained
    (from two fit tables)."""
    heads = [(f.name, f.headline) for f in headline_families()]

    def shape_params(table: pd.DataFrame) -> dict[str, pd.Series]:
        fitted = table[table["family"] != ""]
        columns = {h: fitted[fitted["family"] == name].set_index("layer")[h] for name, h in heads if h in fitted}
        columns["best"] = fitted[fitted["is_best"].astype(bool)].set_index("layer")["family"]
        return columns

    t, i = shape_params(trained), shape_params(init)
    rows = []
    for layer in trained.drop_duplicates("layer")["layer"]:
        n_t, n_i = norms_trained.get(layer, math.nan), norms_init.get(layer, math.nan)
        row = {"layer": layer, "norm_init": n_i, "norm_trained": n_t,
               "relative_norm_change": (n_t - n_i) / n_i if n_i else math.nan}
        for _, h in heads:
            row[f"{h}_init"] = i[h].get(layer, math.nan) if h in i else math.nan
            row[f"{h}_trained"] = t[h].get(layer, math.nan) if h in t else math.nan
        row.update(best_init=i["best"].get(layer, ""), best_trained=t["best"].get(layer, ""))
        rows.append(row)
    return pd.DataFrame(rows)


def drift_report(model: str, out: str | Path | None = None, *, options: FitOptions = FitOptions(), command: str = "") -> Path:
    from ..api import _iter_layers, _load, default_out, fit_model
    from ..reporting.plots import _plt, save_figure

    out = atomic.check_writable_dir(out or Path(f"{default_out(model, False)}_drift"))
    trained_loaded, _ = _load(model, False, options.seed)
    init_loaded, _ = _load(model, True, options.seed)
    init_layers = list(_iter_layers(init_loaded, options))
    norms_t = layer_norms(_iter_layers(trained_loaded, options))
    norms_i = layer_norms(init_layers)
    kw = vars(options)
    table = drift_table(fit_model(trained_loaded, **kw), fit_model(init_loaded, **kw), norms_t, norms_i)
    check = init_check(model, init_layers)
    with atomic.staged_dir(out) as stage:
        plt = _plt()
        shown = [f for f in headline_families() if table[f"{f.headline}_trained"].notna().any()]
        fig, axes = plt.subplots(1, len(shown) + 1, figsize=(5.5 * (len(shown) + 1), 3.8), squeeze=False)
        depth = np.linspace(0, 1, len(table))
        for ax, fam in zip(axes[0], shown):  # one panel per family's headline shape (β, df, ...)
            shape = fam.shape(fam.headline)
            ax.plot(depth, table[f"{fam.headline}_init"], "o-", ms=3, label="init")
            ax.plot(depth, table[f"{fam.headline}_trained"], "o-", ms=3, label="trained")
            if shape.log_axis:
                ax.set_yscale("log")
            ax.set_ylabel(f"{label_of(fam.name)} {shape.symbol}" + (f" ({shape.meaning})" if shape.meaning else ""))
            ax.legend(frameon=False, fontsize=8)
        ax_norm = axes[0][-1]
        ax_norm.plot(depth, table["relative_norm_change"], "o-", ms=3, color="tab:purple")
        ax_norm.set_ylabel("(‖W‖ − ‖W₀‖) / ‖W₀‖")
        for ax in axes[0]:
            ax.set_xlabel("relative depth")
        fig.tight_layout()
        save_figure(fig, stage / "drift.png")
        atomic.write_bytes(stage / "drift.csv", csv_bytes(table))
        md = [f"# weightdist drift: {markdown_text(model)}", "", f"Generated by {markdown_code(command or 'weightdist drift ' + model)}", "",
              "Trained weights against the same architecture's random initialisation (seed "
              f"{options.seed}). Norms compare sizes only: the --init draw is not the run's actual starting point.", "",
              "![shape and norm change by depth](drift.png)", "", markdown_table(table), ""]
        if not check.empty:
            atomic.write_bytes(stage / "init_check.csv", csv_bytes(check))
            passed = int((check["ks_pvalue_exact"] > 0.001).sum())
            md += ["## Sanity check: --init against its closed-form law", "",
                   f"{passed} of {len(check)} layers are consistent with the initialiser's closed-form law "
                   f"({(known_init(model).__doc__ or '').strip()}): exact KS p > 0.001; the parameters are known "
                   "in advance, so this p-value needs no correction.", "",
                   markdown_table(check), ""]
        atomic.write_text(stage / "report.md", "\n".join(md))
    return out
