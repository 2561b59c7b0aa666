"""`weightdist findings`: write reports/README.md, the answer, from the committed report folders.

Every number in the write-up is read from a report's layers.csv; the prose
around it is chosen by stated thresholds, so rerunning on new reports rewrites
the conclusions too.
"""
from __future__ import annotations

import dataclasses
import json
import os
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..core.families.base import headline_families
from ..stores import atomic
from ..analyses.reading import REQUIRED_COLUMNS, ReportFolderError, read_report_folder, read_table
from ..errors import WeightdistError
from ..untrusted import UntrustedFileError, read_capped
from ..escape import markdown_code, markdown_text, url_path
from .report import _fmt, headline_stats, markdown_table

ATTENTION = re.compile(r"(query|key|value|q_proj|k_proj|v_proj|out_proj|attention\.output\.dense|attn)")
# Thresholds that turn numbers into words; stated in the write-up.
LAPLACIAN_BETA = 1.3  # median β at or below this: closer to Laplace (1) than Gaussian (2)
GAUSSIAN_BETA = 1.8  # median β at or above this: Gaussian-like
HEAVY_DF = 10.0  # median Student-t df below this: heavy-tailed


def model_info_of(model: str, folder: Path | None = None) -> dict:
    """A model's ModelInfo (training_data, init, licence, provenance) as its report recorded it in
    summary.json; for reports written before that field, from the model's source entry. Never guessed
    from the name: a model no source knows is "unknown"."""
    if folder is not None:
        try:
            summary = json.loads(read_capped(folder / "summary.json"))
        except (UntrustedFileError, ValueError):
            summary = None
        recorded = summary.get("model_info") if isinstance(summary, dict) else None
        if isinstance(recorded, dict) and recorded:
            return {str(k): str(v) for k, v in recorded.items()}
    from ..sources import model_info

    try:
        return model_info(model).as_dict()
    except (WeightdistError, LookupError, ValueError):  # a model no source knows
        return {}


def dataset_of(model: str, folder: Path | None = None) -> str:
    return model_info_of(model, folder).get("training_data") or "unknown"


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
    info: dict | None = None  # from a scan store: the model's recorded training data, licence, ...
    report: Path | None = None  # the model's own report folder (`weightdist fit`), also for a store's model

    @property
    def link(self) -> str | None:
        """Where the Reports list points: the report folder's report.md, or the store's README.md."""
        if self.report is not None:
            return f"{self.report.as_posix()}/report.md"
        return f"{self.folder.as_posix()}/{'README.md' if self.info is not None else 'report.md'}"

    @property
    def label(self) -> str:
        return f"{self.model} (init)" if self.init else self.model


def read_reports(root: Path) -> list[ModelReport]:
    from ..stores.parquet import ParquetStore, is_store

    def from_store(folder: Path) -> list[ModelReport]:
        return [ModelReport(folder, m.model, m.init, m.table.assign(family=m.table["family"].fillna("")), m.info)
                for m in ParquetStore.open(folder).read_models()]

    if is_store(root):  # a `weightdist scan` store: one report per (model, run)
        return from_store(root) or _no_reports(root)
    # A store inside the folder (reports/zoo) is the survey of record: its models replace report folders of
    # the same model, which still supply the --init twins, drift and over-training figures.
    surveyed = [r for sub in sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir() and is_store(p))
                for r in from_store(sub)]
    reports = []
    for summary_path in sorted(root.glob("*/summary.json")):
        if summary_path.parent.name.startswith("."):
            continue  # a run's staging or parked folder (.<name>.weightdist-staging), never a finished report
        if not os.path.lexists(summary_path.parent / "layers.csv"):  # a FIFO or link there is refused, not skipped
            continue  # a report of another kind (compare, drift, ...)
        model, init, table = read_report_folder(summary_path.parent, required=REQUIRED_COLUMNS + ("kind", "shape"))
        table["family"] = table["family"].fillna("")
        reports.append(ModelReport(summary_path.parent, model, init, table, report=summary_path.parent))
    folders = {r.label: r.folder for r in reports}
    surveyed = [dataclasses.replace(r, report=folders.get(r.label)) for r in surveyed]
    seen = {r.label for r in surveyed}
    return surveyed + [r for r in reports if r.label not in seen] or _no_reports(root)


def _no_reports(root: Path):
    raise WeightdistError(f"no fit reports (*/summary.json + layers.csv) under {root}; run 'weightdist fit ... --out {root}/<model>' "
                          f"or 'weightdist scan ... --store {root}' first")


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
        info = r.info if r.info is not None else model_info_of(r.model, r.folder)
        rows.append({
            "model": r.label,
            "data": info.get("training_data") or "unknown",
            "licence": info.get("licence") or "unknown",
            "layers": s["n_layers_fitted"],
            "laplace>gaussian": s.get("laplace_beats_gaussian", math.nan),
            "t beats both": s.get("student_t_beats_gaussian_and_laplace", math.nan),
            "median β": s.get("beta_median", math.nan),
            "β IQR": f"{_fmt(s.get('beta_q1'))}–{_fmt(s.get('beta_q3'))}",
            "β~depth ρ": rho,
            "median df": s.get("df_median", math.nan),
            "wins": ", ".join(f"{k} {v}" for k, v in s["wins"].items()),
        })
        for fam in headline_families():  # any other family's headline shape: a registered family needs no edit here
            rows[-1].setdefault(f"median {fam.shape(fam.headline).symbol}", s.get(f"{fam.headline}_median", math.nan))
    return pd.DataFrame(rows)


def category_rows(reports: list[ModelReport]) -> pd.DataFrame:
    rows = []
    for r in (r for r in reports if not r.init):
        g = r.table[r.table["family"] == "gennorm"]
        if g.empty:  # a run without gennorm (--families) has no β per layer kind
            continue
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
    return ", ".join(map(markdown_text, models[mask]["model"])) or "no model"


def _figure(root: Path, pattern: str, caption: str) -> list[str]:
    """Inline every committed figure matching ``pattern`` (relative to ``root``), with a caption."""
    return [line for fig in sorted(root.glob(pattern)) for line in (f"![{caption}]({url_path(fig.relative_to(root).as_posix())})", "")]


def claim_lines(models: pd.DataFrame, root: Path) -> list[str]:
    """Each claim with the models where it holds and where it fails, and the figure that shows it."""
    trained = models[~models["model"].str.endswith("(init)")]
    init = models[models["model"].str.endswith("(init)")]
    # A model whose every layer is stored quantized has no headline numbers (grid values are not comparable).
    grid_only = trained[trained["wins"].fillna("") == ""]
    trained = trained[trained["wins"].fillna("") != ""]
    lap = trained["median β"] <= LAPLACIAN_BETA
    gau = trained["median β"] >= GAUSSIAN_BETA
    heavy = trained["median df"] < HEAVY_DF
    return [
        f"- **\"Weights are Laplacian\"** (median β ≤ {LAPLACIAN_BETA}): {_verdict(trained, lap, 'median β', 'gennorm')} "
        "Laplace beats Gaussian (AIC) in "
        + ", ".join(f"{_n(r['laplace>gaussian'])}/{_n(r['layers'])} layers of {markdown_text(r['model'])}" for _, r in trained.iterrows()) + ".",
        "",
        *_figure(root, "*/plots/beta_by_depth.png", "gennorm β by relative depth, one line per model"),
        f"- **\"Gaussian, by the central limit theorem\"** (median β ≥ {GAUSSIAN_BETA}): "
        f"{_verdict(trained, gau, 'median β', 'gennorm').replace('holds for no model', 'holds for no trained model')} "
        f"At initialisation it holds for {_names(init, init['median β'] >= GAUSSIAN_BETA).replace('no model', 'none')} "
        f"({int((init['median β'] >= GAUSSIAN_BETA).sum())} of {len(init)} init twins; their laws are Gaussian or uniform by "
        "construction, so this checks the fitter, not nature): Gaussianity is where training starts, not where it ends.",
        f"- **\"Heavy-tailed\"** (median Student-t df < {HEAVY_DF:g}): {_verdict(trained, heavy, 'median df', 'student_t')} "
        "Student-t beats both Gaussian and Laplace in "
        + ", ".join(f"{_n(r['t beats both'])}/{_n(r['layers'])} layers of {markdown_text(r['model'])}" for _, r in trained.iterrows()) + ".",
        "",
        *_figure(root, "*/plots/df_by_depth.png", "Student-t df by relative depth, one line per model"),
        *([f"- **Left out of the claims:** {_names(grid_only, grid_only['model'].notna())}: every fitted layer is stored "
           "quantized (values on a grid, such as GGUF Q4_K), so its fits are not comparable with float layers; "
           "`weightdist fit MODEL --include-quantized` counts them.", ""] if not grid_only.empty else []),
    ]


def _verdict(models: pd.DataFrame, holds, column: str, family: str) -> str:
    """'holds for …; fails for ….', over the models whose reports have ``column``; the others (fitted
    without ``family``, e.g. --families gaussian,laplace) are named as not tested."""
    tested = models[column].notna()
    text = f"holds for {_names(models, tested & holds)}; fails for {_names(models, tested & ~holds)}."
    if not tested.all():
        text += f" Not tested (no {family} fit): {_names(models, ~tested)}."
    return text


def category_lines(cats: pd.DataFrame) -> list[str]:
    """One sentence per layer kind: its median β over the trained models that have it, most Laplacian first."""
    pooled = cats.groupby("layer kind").agg(models=("model", "nunique"), layers=("layers", "sum"),
                                            beta=("median β", "median")).sort_values("beta")
    lines = [f"- **{markdown_text(kind)}**: median β {_fmt(r['beta'])} over {_count(r['models'], 'model')} ({_count(r['layers'], 'layer')})"
             for kind, r in pooled.iterrows()]
    if len(pooled) > 1:
        lines.append(f"- Most Laplacian kind: **{markdown_text(pooled.index[0])}**; most Gaussian: **{markdown_text(pooled.index[-1])}**.")
    return lines


def dataset_lines(models: pd.DataFrame) -> list[str]:
    trained = models[~models["model"].str.endswith("(init)") & models["median β"].notna()]
    by_data = trained.groupby("data")["median β"].median().sort_values()
    lines = [f"- {markdown_text(data)}: median β {_fmt(beta)} ({', '.join(map(markdown_text, trained[trained['data'] == data]['model']))})"
             for data, beta in by_data.items()]
    if len(by_data) > 1:
        lines.append(f"- Most Laplacian: **{markdown_text(by_data.index[0])}**; least: **{markdown_text(by_data.index[-1])}**.")
    # The same architecture (name up to the first '_') trained on different data isolates the training set.
    arch = trained.assign(arch=trained["model"].str.split("_").str[0])
    for name, group in arch.groupby("arch"):
        if group["data"].nunique() > 1:
            lines.append(f"- Same architecture ({markdown_text(name)}), different data: "
                         + " against ".join(f"{markdown_text(r['model'])} β {_fmt(r['median β'])}" for _, r in group.iterrows()) + ".")
    return lines


def _n(value) -> str:
    """A count, or 'n/a' when the report did not fit the families it needs (e.g. --families gaussian,laplace)."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))


def _count(n, noun: str) -> str:
    return f"{int(n)} {noun}{'' if int(n) == 1 else 's'}"


def vae_lines(root: Path) -> list[str]:
    """Two lines from reports/vae/results.csv: the best prior per latent dimension and the four verdicts."""
    results_csv = root / "vae" / "results.csv"
    if not (root / "vae" / "report.md").is_file() or not results_csv.is_file():
        return []
    from ..vae.claims import claim_verdicts

    fix = "rerun the 'weightdist vae compare' command printed in vae/report.md"
    results = read_table(results_csv, required=("latent_dim", "test_ll", "prior"), numeric=("latent_dim", "test_ll"),
                         text=("prior",), fix=fix)
    sweep_csv = root / "vae" / "density_sweep.csv"
    sweep = read_table(sweep_csv, fix=fix) if sweep_csv.is_file() else pd.DataFrame()
    results = results.dropna(subset=["latent_dim", "test_ll"])
    odd = results.loc[~results["prior"].str.fullmatch(r"[A-Za-z0-9_]+"), "prior"]
    if not odd.empty:  # prior names reach the claims' prose (our own Markdown) unescaped, so only plain names pass
        raise ReportFolderError(f"{results_csv}: prior {odd.iloc[0][:60]!r} is not a prior name; {fix}")
    if results.empty:
        return []
    best = results.loc[results.groupby("latent_dim")["test_ll"].idxmax()]
    try:
        verdicts = claim_verdicts(results, sweep)
    except KeyError as exc:
        raise ReportFolderError(f"{results_csv.parent}: a VAE table lacks column {exc}; {fix}") from None
    return ["## The latent-prior half", "",
            "Best test log-likelihood (IWAE) by latent dimension: "
            + ", ".join(f"d={int(r.latent_dim)} {markdown_text(r.prior)} ({r.test_ll:.1f} nats)" for r in best.itertuples()) + ".",
            "Claims: " + "; ".join(f"{claim}: {verdict}" for claim, verdict in verdicts.items())
            + ". Details in [vae/report.md](vae/report.md).", ""]


SPECTRAL_SEED = 0  # the bootstrap of the β-vs-alpha rank correlation


def spectral_lines(reports: list[ModelReport], rng) -> list[str]:
    """β (value view) against ESD alpha (spectral view), per model and pooled over trained models:
    Spearman's ρ with a seeded percentile-bootstrap 95 % interval. Empty unless some report was
    made with `fit --spectral`."""
    from ..analyses.spectral import beta_alpha_pairs, spearman_with_interval

    pairs = {r.label: (r, beta_alpha_pairs(r.table)) for r in reports}
    pairs = {label: (r, p) for label, (r, p) in pairs.items() if not p.empty}
    if not pairs:
        return []
    rows = []
    for label, (r, p) in pairs.items():
        rc = spearman_with_interval(p["beta"], p["esd_alpha"], rng)
        rows.append({"model": label, "layers": rc.n, "median β": p["beta"].median(),
                     "median alpha": p["esd_alpha"].median(), "Spearman ρ": rc.rho, "95% interval": f"{_fmt(rc.lo, '.2f')} to {_fmt(rc.hi, '.2f')}"})
    trained = [p for label, (r, p) in pairs.items() if not r.init]
    lines = ["## Values against spectrum (β and ESD alpha)", "",
             "For every 2-D weight matrix (conv kernels as out × in·k·k), `fit --spectral` fits a power law to the tail of "
             "the eigenvalue spectrum of WᵀW/N (alpha, xmin by minimum KS distance, as WeightWatcher does; matrices with "
             "fewer than 10 eigenvalues, such as depthwise 3×3 kernels, get none). Spearman's ρ "
             "between a layer's β and its alpha, with a percentile-bootstrap 95 % interval over layers "
             f"(2000 resamples, seed {SPECTRAL_SEED}):", ""]
    if trained:
        pooled = pd.concat(trained, ignore_index=True)
        rc = spearman_with_interval(pooled["beta"], pooled["esd_alpha"], rng)
        strength = "weak" if abs(rc.rho) < 0.3 else "moderate" if abs(rc.rho) < 0.6 else "strong"
        excludes_zero = rc.lo > 0 or rc.hi < 0
        lines += [f"Pooled over {rc.n} layers of {_count(len(trained), 'trained model')}: ρ = {rc.rho:.2f} "
                  f"(95 % interval {rc.lo:.2f} to {rc.hi:.2f}), a {strength} rank correlation"
                  + ("; the interval excludes zero." if excludes_zero else "; the interval includes zero.")
                  + " Where ρ is far from ±1 the spectrum carries information the value distribution does not.", ""]
    lines += [markdown_table(pd.DataFrame(rows)), ""]
    return lines


def findings_markdown(root: Path, reports: list[ModelReport], command: str) -> str:
    models = model_rows(reports)
    cats = category_rows(reports)
    parts = [
        "# Are trained neural-network weights Gaussian, Laplacian or heavy-tailed?",
        "",
        f"Generated by {markdown_code(command)} from the report folders below; every number comes from their `layers.csv`.",
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
    parts += spectral_lines(reports, np.random.default_rng(SPECTRAL_SEED))
    over = _figure(root, "*/plots/*over_training.png", "shape over training")
    drift = _figure(root, "*/drift.png", "trained against --init")
    if over or drift:
        parts += ["## How the distribution gets there", "",
                  "From a Gaussian (or uniform) initialisation, training moves the shape: β and df per layer over the "
                  "embedded model's training, and each trained model against its `--init` twin.", "", *over, *drift]
    parts += ["## Reports", ""]
    # Each model's report folder where it has one, else the store it was surveyed into (its README lists the runs).
    parts += [f"- [{markdown_text(r.label)}]({url_path(Path(r.link).relative_to(root).as_posix())})" for r in reports
              if r.report is not None or r.folder != root]  # (a store given as the root: this README is its list)
    parts += [""] + vae_lines(root)
    return "\n".join(parts).rstrip("\n") + "\n"


GENERATED_MARK = re.compile(rb"^Generated by `+ ?weightdist findings", re.MULTILINE)  # line 3 of every README it writes


def _check_ours(out: Path) -> None:
    """An existing ``out`` is replaced only if this command wrote it (its generated header says so)."""
    if not os.path.lexists(out):
        return
    try:
        head = read_capped(out, 64 * 2**20, fix="choose another --out")
    except UntrustedFileError as exc:
        raise WeightdistError(f"findings will not replace {out}: {exc}") from None
    if not GENERATED_MARK.search(b"\n".join(head.splitlines()[:10])):
        raise WeightdistError(f"findings will not replace {out}: it was not written by 'weightdist findings' (no "
                              "'Generated by `weightdist findings' line at its top), so it may be yours; pass --out FILE")


def findings_report(root: str | Path = "reports", out: str | Path | None = None, command: str = "") -> Path:
    root = Path(root)
    out = atomic.check_writable_file(out or root / "README.md")  # before reading anything
    _check_ours(out)
    reports = read_reports(root)
    text = findings_markdown(root, reports, command or f"weightdist findings {root}")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, text)
    findings_html(root, reports, command or f"weightdist findings {root}", out.with_suffix(".html"))
    return out


def findings_html(root: Path, reports: list[ModelReport], command: str, out: Path) -> None:
    """The same findings as a self-contained page next to the Markdown (replaced only if this command wrote it)."""
    from .html import Page, Table, write_html

    if os.path.lexists(out):
        head = read_capped(out, 64 * 2**20, fix="choose another --out")
        if f"Generated by <code>weightdist findings".encode() not in head[:4096]:
            raise WeightdistError(f"findings will not replace {out}: it was not written by 'weightdist findings'; pass --out FILE")
    models, cats = model_rows(reports), category_rows(reports)
    figures = sorted(root.glob("*/plots/*over_training.png")) + sorted(root.glob("*/drift.png"))
    tables = [Table.from_frame("Per model (sort, filter)", models, filterable=True)]
    if not cats.empty:
        tables.append(Table.from_frame("By layer kind", cats))
    write_html(out, Page(title="weightdist findings: are trained weights Gaussian, Laplacian or heavy-tailed?",
                         command=command, provenance=(("Report folders", f"{len(reports)} under {root}"),),
                         headline=f"{len(models)} models, one row each (the claims, checked, are in {out.with_suffix('.md').name}).",
                         figures=tuple(figures), tables=tuple(tables)))
