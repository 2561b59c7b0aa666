"""`weightdist findings`: write reports/README.md, the answer, from the committed report folders.

Every number in the write-up is read from a report's layers.csv; the prose
around it is chosen by stated thresholds, so rerunning on new reports rewrites
the conclusions too.
"""
from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy import stats

from ..stores import atomic
from ..analyses.compare import read_report_folder
from ..errors import WeightdistError
from .report import _fmt, headline_stats, markdown_table

# Training data behind each model name (glob), for the by-dataset comparison.
DATASETS = {
    "resnet*_cifar10": "CIFAR-10",
    "*fashionmnist*": "Fashion-MNIST",
    "mobilenet_v2": "ImageNet",
    "resnet*": "ImageNet",
    "*minilm*": "text (sentence pairs)",
    "*MiniLM*": "text (sentence pairs)",
}
ATTENTION = re.compile(r"(query|key|value|q_proj|k_proj|v_proj|out_proj|attention\.output\.dense|attn)")
# Thresholds that turn numbers into words; stated in the write-up.
LAPLACIAN_BETA = 1.3  # median β at or below this: closer to Laplace (1) than Gaussian (2)
GAUSSIAN_BETA = 1.8  # median β at or above this: Gaussian-like
HEAVY_DF = 10.0  # median Student-t df below this: heavy-tailed


def dataset_of(model: str) -> str:
    return next((d for pattern, d in DATASETS.items() if fnmatch.fnmatch(model, pattern)), "unknown")


def layer_category(row: pd.Series, first_conv: str | None, last_linear: str | None) -> str:
    dims = [int(d) for d in str(row["shape"]).split("x") if d]
    if row["layer"] == first_conv:
        return "first conv"
    if row["kind"] == "conv":
        if len(dims) >= 3 and dims[1] == 1 and dims[0] > 1:
            return "depthwise conv"
        if len(dims) >= 3 and all(d == 1 for d in dims[2:]):
            return "pointwise conv"
        return "k×k conv"
    if row["kind"] == "linear":
        if ATTENTION.search(row["layer"]):
            return "attention projection"
        if row["layer"] == last_linear:
            return "last linear (head)"
        return "linear (other)"
    return row["kind"]


@dataclass(frozen=True)
class ModelReport:
    folder: Path
    model: str
    init: bool
    table: pd.DataFrame

    @property
    def label(self) -> str:
        return f"{self.model} (init)" if self.init else self.model


def read_reports(root: Path) -> list[ModelReport]:
    reports = []
    for summary_path in sorted(root.glob("*/summary.json")):
        if not (summary_path.parent / "layers.csv").is_file():
            continue  # a report of another kind (compare, drift, ...)
        model, init, table = read_report_folder(summary_path.parent)
        table["family"] = table["family"].fillna("")
        reports.append(ModelReport(summary_path.parent, model, init, table))
    if not reports:
        raise WeightdistError(f"no fit reports (*/summary.json + layers.csv) under {root}; run 'weightdist fit ... --out {root}/<model>' first")
    return reports


def beta_trend(table: pd.DataFrame) -> tuple[float, float]:
    """Spearman correlation of β with relative depth, and its p-value."""
    rows = table[table["family"] == "gennorm"]
    if len(rows) < 4:
        return math.nan, math.nan
    res = stats.spearmanr(rows["relative_depth"], rows["beta"])
    return float(res.statistic), float(res.pvalue)


def model_rows(reports: list[ModelReport]) -> pd.DataFrame:
    rows = []
    for r in reports:
        s = headline_stats(r.table)
        rho, p = beta_trend(r.table)
        rows.append({
            "model": r.label,
            "data": dataset_of(r.model),
            "layers": s["n_layers_fitted"],
            "laplace>gaussian": s.get("laplace_beats_gaussian", math.nan),
            "t beats both": s.get("student_t_beats_gaussian_and_laplace", math.nan),
            "median β": s.get("beta_median", math.nan),
            "β IQR": f"{_fmt(s.get('beta_q1'))}–{_fmt(s.get('beta_q3'))}",
            "β~depth ρ": rho,
            "median df": s.get("df_median", math.nan),
            "wins": ", ".join(f"{k} {v}" for k, v in s["wins"].items()),
        })
    return pd.DataFrame(rows)


def category_rows(reports: list[ModelReport]) -> pd.DataFrame:
    rows = []
    for r in (r for r in reports if not r.init):
        g = r.table[r.table["family"] == "gennorm"]
        convs = g[g["kind"] == "conv"]["layer"]
        linears = g[g["kind"] == "linear"]["layer"]
        first_conv = convs.iloc[0] if not convs.empty else None
        last_linear = linears.iloc[-1] if not linears.empty else None
        cats = g.apply(lambda row: layer_category(row, first_conv, last_linear), axis=1)
        for cat, rows_cat in g.groupby(cats):
            best = r.table[(r.table["layer"].isin(rows_cat["layer"])) & r.table["is_best"].astype(bool)]["family"]
            rows.append({"model": r.label, "layer kind": cat, "layers": len(rows_cat),
                         "median β": float(rows_cat["beta"].median()),
                         "most wins": best.value_counts().index[0] if not best.empty else ""})
    return pd.DataFrame(rows)


def _names(models: pd.DataFrame, mask) -> str:
    return ", ".join(models[mask]["model"]) or "no model"


def _figure(root: Path, pattern: str, caption: str) -> list[str]:
    """Inline every committed figure matching ``pattern`` (relative to ``root``), with a caption."""
    return [line for fig in sorted(root.glob(pattern)) for line in (f"![{caption}]({fig.relative_to(root)})", "")]


def claim_lines(models: pd.DataFrame, root: Path) -> list[str]:
    """Each claim with the models where it holds and where it fails, and the figure that shows it."""
    trained = models[~models["model"].str.endswith("(init)")]
    init = models[models["model"].str.endswith("(init)")]
    lap = trained["median β"] <= LAPLACIAN_BETA
    gau = trained["median β"] >= GAUSSIAN_BETA
    heavy = trained["median df"] < HEAVY_DF
    return [
        f"- **\"Weights are Laplacian\"** (median β ≤ {LAPLACIAN_BETA}): holds for {_names(trained, lap)}; "
        f"fails for {_names(trained, ~lap)}. Laplace beats Gaussian (AIC) in "
        + ", ".join(f"{int(r['laplace>gaussian'])}/{int(r['layers'])} layers of {r['model']}" for _, r in trained.iterrows()) + ".",
        "",
        *_figure(root, "*/plots/beta_by_depth.png", "gennorm β by relative depth, one line per model"),
        f"- **\"Gaussian, by the central limit theorem\"** (median β ≥ {GAUSSIAN_BETA}): holds for "
        f"{_names(trained, gau).replace('no model', 'no trained model')}; fails for {_names(trained, ~gau)}. "
        f"At initialisation it holds for {_names(init, init['median β'] >= GAUSSIAN_BETA).replace('no model', 'none')} "
        f"({int((init['median β'] >= GAUSSIAN_BETA).sum())} of {len(init)} init twins; their laws are Gaussian or uniform by "
        "construction, so this checks the fitter, not nature): Gaussianity is where training starts, not where it ends.",
        f"- **\"Heavy-tailed\"** (median Student-t df < {HEAVY_DF:g}): holds for {_names(trained, heavy)}; fails for "
        f"{_names(trained, ~heavy)}. Student-t beats both Gaussian and Laplace in "
        + ", ".join(f"{int(r['t beats both'])}/{int(r['layers'])} layers of {r['model']}" for _, r in trained.iterrows()) + ".",
        "",
        *_figure(root, "*/plots/df_by_depth.png", "Student-t df by relative depth, one line per model"),
    ]


def category_lines(cats: pd.DataFrame) -> list[str]:
    """One sentence per layer kind: its median β over the trained models that have it, most Laplacian first."""
    pooled = cats.groupby("layer kind").agg(models=("model", "nunique"), layers=("layers", "sum"),
                                            beta=("median β", "median")).sort_values("beta")
    lines = [f"- **{kind}**: median β {_fmt(r['beta'])} over {_count(r['models'], 'model')} ({_count(r['layers'], 'layer')})"
             for kind, r in pooled.iterrows()]
    if len(pooled) > 1:
        lines.append(f"- Most Laplacian kind: **{pooled.index[0]}**; most Gaussian: **{pooled.index[-1]}**.")
    return lines


def dataset_lines(models: pd.DataFrame) -> list[str]:
    trained = models[~models["model"].str.endswith("(init)")]
    by_data = trained.groupby("data")["median β"].median().sort_values()
    lines = [f"- {data}: median β {_fmt(beta)} ({', '.join(trained[trained['data'] == data]['model'])})"
             for data, beta in by_data.items()]
    if len(by_data) > 1:
        lines.append(f"- Most Laplacian: **{by_data.index[0]}**; least: **{by_data.index[-1]}**.")
    # The same architecture (name up to the first '_') trained on different data isolates the training set.
    arch = trained.assign(arch=trained["model"].str.split("_").str[0])
    for name, group in arch.groupby("arch"):
        if group["data"].nunique() > 1:
            lines.append(f"- Same architecture ({name}), different data: "
                         + " against ".join(f"{r['model']} β {_fmt(r['median β'])}" for _, r in group.iterrows()) + ".")
    return lines


def _count(n, noun: str) -> str:
    return f"{int(n)} {noun}{'' if int(n) == 1 else 's'}"


def vae_lines(root: Path) -> list[str]:
    """Two lines from reports/vae/results.csv: the best prior per latent dimension and the four verdicts."""
    results_csv = root / "vae" / "results.csv"
    if not (root / "vae" / "report.md").is_file() or not results_csv.is_file():
        return []
    from ..vae.compare import claim_verdicts

    results = pd.read_csv(results_csv)
    sweep_csv = root / "vae" / "density_sweep.csv"
    sweep = pd.read_csv(sweep_csv) if sweep_csv.is_file() else pd.DataFrame()
    best = results.loc[results.groupby("latent_dim")["test_ll"].idxmax()]
    return ["## The latent-prior half", "",
            "Best test log-likelihood (IWAE) by latent dimension: "
            + ", ".join(f"d={int(r.latent_dim)} {r.prior} ({r.test_ll:.1f} nats)" for r in best.itertuples()) + ".",
            "Claims: " + "; ".join(f"{claim}: {verdict}" for claim, verdict in claim_verdicts(results, sweep).items())
            + ". Details in [vae/report.md](vae/report.md).", ""]


def findings_markdown(root: Path, reports: list[ModelReport], command: str) -> str:
    models = model_rows(reports)
    cats = category_rows(reports)
    parts = [
        "# Are trained neural-network weights Gaussian, Laplacian or heavy-tailed?",
        "",
        f"Generated by `{command}` from the report folders below; every number comes from their `layers.csv`.",
        "",
        "Per layer, each of Gaussian, Laplace, Student-t and the generalized normal (shape β: 1 = Laplace, "
        "2 = Gaussian) is fitted by maximum likelihood; the best is chosen by AIC. β answers \"how Laplacian is "
        "this layer?\" as one number, df \"how heavy are its tails?\".",
        "",
        "## The claims, checked",
        "",
        *claim_lines(models, root),
        "## Per model",
        "",
        markdown_table(models),
        "",
        "`laplace>gaussian`: layers where Laplace has the lower AIC; `t beats both`: Student-t lower than both; "
        "`β~depth ρ`: Spearman correlation of β with relative depth (positive: deeper layers more Gaussian).",
        "",
    ]
    if not cats.empty:
        parts += ["## By layer kind", "", *category_lines(cats), "", markdown_table(cats), ""]
    parts += ["## By training set", "", *dataset_lines(models), ""]
    over = _figure(root, "*/plots/*over_training.png", "shape over training")
    drift = _figure(root, "*/drift.png", "trained against --init")
    if over or drift:
        parts += ["## How the distribution gets there", "",
                  "From a Gaussian (or uniform) initialisation, training moves the shape: β and df per layer over the "
                  "embedded model's training, and each trained model against its `--init` twin.", "", *over, *drift]
    parts += ["## Reports", ""]
    parts += [f"- [{r.label}]({r.folder.relative_to(root)}/report.md)" for r in reports]
    parts += [""] + vae_lines(root)
    return "\n".join(parts).rstrip("\n") + "\n"


def findings_report(root: str | Path = "reports", out: str | Path | None = None, command: str = "") -> Path:
    root = Path(root)
    out = atomic.check_writable_file(out or root / "README.md")  # before reading anything
    reports = read_reports(root)
    text = findings_markdown(root, reports, command or f"weightdist findings {root}")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, text)
    return out
