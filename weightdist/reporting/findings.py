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

from ..core.families.base import FAMILIES, Family, beats_key, headline_families, label_of
from ..stores import atomic
from ..analyses.reading import REQUIRED_COLUMNS, ReportFolderError, read_report_folder, read_table
from ..errors import WeightdistError
from ..untrusted import UntrustedFileError, read_capped
from ..escape import markdown_code, markdown_text, url_path
from .report import _fmt, headline_stats, markdown_table, stored_quantized

ATTENTION = re.compile(r"(query|key|value|q_proj|k_proj|v_proj|out_proj|attention\.output\.dense|attn)")
# The claims checked, their thresholds and the words for low and high shapes are declared by the families
# (Family.claims, Shape.low / Shape.high): this module names no family.


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


def symbol(fam: Family) -> str:
    """The headline shape's symbol, as column names and prose show it (β, df)."""
    return fam.shape(fam.headline).symbol


def median_column(fam: Family) -> str:
    return f"median {symbol(fam)}"


def beats_column(fam: Family) -> str:
    """The per-model column counting the layers where ``fam`` has a lower AIC than every family it ``beats``."""
    return f"{fam.name}>{'+'.join(fam.beats)}"


def float_layers(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of layers stored as floats: a layer stored quantized (GGUF Q4_K, ...) holds grid values, whose
    fits are not comparable, so like the headline numbers (report.headline_stats) findings leaves them out."""
    return table[~stored_quantized(table)]


def shape_trend(table: pd.DataFrame, fam: Family) -> tuple[float, float]:
    """Spearman correlation of ``fam``'s headline shape with relative depth over the float layers, and its p-value."""
    rows = float_layers(table)
    rows = rows[rows["family"] == fam.name]
    if fam.headline not in rows or rows[fam.headline].notna().sum() < 4 or rows[fam.headline].nunique() < 2:
        return math.nan, math.nan  # (a constant shape has no rank correlation)
    res = stats.spearmanr(rows["relative_depth"], rows[fam.headline], nan_policy="omit")
    return float(res.statistic), float(res.pvalue)


def shown_families(reports: list[ModelReport]) -> list[Family]:
    """The headline families some report fitted, in registry order: what the write-up has columns and claims for."""
    fitted = set(_fitted_families(reports))
    return [f for f in headline_families() if f.name in fitted]


def model_rows(reports: list[ModelReport]) -> pd.DataFrame:
    """One row per model: its AIC win counts and, per headline family fitted anywhere, the median, IQR and depth
    trend of its shape."""
    rows, fitted = [], set(_fitted_families(reports))
    shown = [f for f in headline_families() if f.name in fitted]  # (shown_families, without a second scan)
    for r in reports:
        s = headline_stats(r.table)
        info = r.info if r.info is not None else model_info_of(r.model, r.folder)
        row = {"model": r.label, "data": info.get("training_data") or "unknown",
               "licence": info.get("licence") or "unknown", "layers": s["n_layers_fitted"]}
        for fam in map(FAMILIES.get, FAMILIES):
            if fam.beats and fam.name in fitted:
                row[beats_column(fam)] = s.get(beats_key(fam), math.nan)  # NaN where it, or a family it beats, was not fitted
        for fam in shown:
            sym, h = symbol(fam), fam.headline
            row[median_column(fam)] = s.get(f"{h}_median", math.nan)
            row[f"{sym} IQR"] = f"{_fmt(s.get(f'{h}_q1'))}–{_fmt(s.get(f'{h}_q3'))}"
            row[f"{sym}~depth ρ"] = shape_trend(r.table, fam)[0]
        row["wins"] = ", ".join(f"{k} {v}" for k, v in s["wins"].items())
        rows.append(row)
    return pd.DataFrame(rows)


def category_rows(reports: list[ModelReport]) -> pd.DataFrame:
    """Per trained model and layer kind: the layer count, each headline family's median shape, the most wins."""
    rows, families = [], shown_families(reports)
    for r in (r for r in reports if not r.init):
        table = float_layers(r.table)
        fitted = table[table["family"].isin([f.name for f in families])].drop_duplicates("layer")
        if fitted.empty:  # a run without any headline family (--families gaussian,laplace) has no shape per layer kind
            continue
        convs = fitted[fitted["kind"] == "conv"]["layer"]
        linears = fitted[fitted["kind"] == "linear"]["layer"]
        first_conv = convs.iloc[0] if not convs.empty else None
        last_linear = linears.iloc[-1] if not linears.empty else None
        kinds = dict(zip(fitted["layer"], fitted.apply(lambda row: layer_category(row, first_conv, last_linear), axis=1)))
        for cat in dict.fromkeys(sorted(kinds.values())):
            layers = [name for name, kind in kinds.items() if kind == cat]
            of_kind = table[table["layer"].isin(layers)]
            row = {"model": r.label, "layer kind": cat, "layers": len(layers)}
            for fam in families:
                shapes = of_kind.loc[of_kind["family"] == fam.name, fam.headline] if fam.headline in of_kind else pd.Series(dtype=float)
                row[median_column(fam)] = float(shapes.median()) if not shapes.empty else math.nan
            best = of_kind[of_kind["is_best"].astype(bool)]["family"]
            row["most wins"] = best.value_counts().index[0] if not best.empty else ""
            rows.append(row)
    return pd.DataFrame(rows)


def _names(models: pd.DataFrame, mask, none: str = "no model") -> str:
    return ", ".join(map(markdown_text, models[mask]["model"])) or none


def _figure(root: Path, pattern: str, caption: str) -> list[str]:
    """Inline every committed figure matching ``pattern`` (relative to ``root``), with a caption."""
    return [line for fig in sorted(root.glob(pattern)) for line in (f"![{caption}]({url_path(fig.relative_to(root).as_posix())})", "")]


def claim_lines(models: pd.DataFrame, root: Path) -> list[str]:
    """Every claim the families declare, with the models where it holds and where it fails, the AIC wins
    that back it up, and the figure of its shape by depth."""
    trained = models[~models["model"].str.endswith("(init)")]
    init = models[models["model"].str.endswith("(init)")]
    # A model whose every layer is stored quantized has no headline numbers (grid values are not comparable).
    grid_only = trained[trained["wins"].fillna("") == ""]
    trained = trained[trained["wins"].fillna("") != ""]
    lines = []
    for fam in (f for f in headline_families() if f.claims and median_column(f) in models):  # fitted in some report
        column = median_column(fam)
        for claim in fam.claims:
            lines.append(f"- **\"{markdown_text(claim.quote)}\"** (median {markdown_text(fam.label or fam.name)} {symbol(fam)} "
                         f"{claim.op} {claim.threshold:g}): {_verdict(trained, claim.holds(trained[column]), column, fam)}"
                         f"{_init_sentence(claim, init, trained, column)}{_support_sentence(claim, trained)}")
        lines += ["", *_figure(root, f"*/plots/{fam.headline}_by_depth.png",
                               f"{fam.label or fam.name} {symbol(fam)} by relative depth, one line per model")]
    if not grid_only.empty:
        lines += [f"- **Left out of the claims:** {_names(grid_only, grid_only['model'].notna())}: every fitted layer is stored "
                  "quantized (values on a grid, such as GGUF Q4_K), so its fits are not comparable with float layers; "
                  "`weightdist fit MODEL --include-quantized` counts them.", ""]
    return lines


def _init_sentence(claim, init: pd.DataFrame, trained: pd.DataFrame, column: str) -> str:
    """For a claim checked at initialisation too: where it holds for the tested `--init` twins (whose laws are fixed
    by construction, so this checks the fitter), and, when it holds for every tested twin and for no tested
    trained model (there being some), that it is where training starts."""
    twins = init[init[column].notna()]  # twins fitted without the family are not tested, not failing
    if not claim.at_init or twins.empty:
        return ""
    holds = claim.holds(twins[column])
    text = (f" At initialisation it holds for {_names(twins, holds, none='none')} ({int(holds.sum())} of {len(twins)} "
            "`--init` twins, whose laws are fixed by construction: this checks the fitter, not nature).")
    tested = trained[trained[column].notna()]
    if holds.all() and not tested.empty and not claim.holds(tested[column]).any():
        text += " It holds where training starts, not where it ends."
    return text


def _support_sentence(claim, trained: pd.DataFrame) -> str:
    """' Laplace beats Gaussian (AIC) in 11/40 layers of …': the per-layer wins of the claim's ``support`` family."""
    fam = FAMILIES.get(claim.support) if claim.support in FAMILIES else None
    if fam is None or not fam.beats or beats_column(fam) not in trained or trained[beats_column(fam)].isna().all():
        return ""  # (no trained report fitted it and every family it beats)
    counts = ", ".join(f"{_n(r[beats_column(fam)])}/{_n(r['layers'])} layers of {markdown_text(r['model'])}" for _, r in trained.iterrows())
    return f" {markdown_text(_label(fam.name))} beats {' and '.join(markdown_text(_label(b)) for b in fam.beats)} (AIC) in {counts}."


def _label(name: str) -> str:
    """A family's label for prose; its name when it is not registered here (a report fitted with a plug-in)."""
    return label_of(name) if name in FAMILIES else name


def _verdict(models: pd.DataFrame, holds, column: str, family: Family) -> str:
    """'holds for …; fails for ….', over the trained models whose reports have ``column``; the others (fitted
    without ``family``, e.g. --families gaussian,laplace) are named as not tested."""
    tested = models[column].notna()
    fit = f"no {markdown_text(family.label or family.name)} fit"
    if not tested.any():
        return f"not tested on any trained model ({fit})."
    text = (f"holds for {_names(models, tested & holds, none='no trained model')}; "
            f"fails for {_names(models, tested & ~holds, none='no trained model')}.")
    if not tested.all():
        text += f" Not tested ({fit}): {_names(models, ~tested)}."
    return text


def category_lines(cats: pd.DataFrame) -> list[str]:
    """One sentence per layer kind: each headline shape's median over the trained models that have the kind,
    ranked by the first; then, per shape, the kinds at its two ends."""
    families = [f for f in headline_families() if median_column(f) in cats and cats[median_column(f)].notna().any()]
    if not families:
        return []
    pooled = cats.groupby("layer kind").agg(models=("model", "nunique"), layers=("layers", "sum"),
                                            **{median_column(f): (median_column(f), "median") for f in families})
    pooled = pooled.sort_values(median_column(families[0]))
    lines = [f"- **{markdown_text(kind)}**: {_medians(r, families)} over {_count(r['models'], 'model')} ({_count(r['layers'], 'layer')})"
             for kind, r in pooled.iterrows()]
    lines += [f"- By {symbol(fam)}, most {_ends(fam)[0]}: **{markdown_text(lowest)}**; most {_ends(fam)[1]}: **{markdown_text(highest)}**."
              for fam, lowest, highest in _extremes(pooled, families)]
    return lines


def _extremes(frame: pd.DataFrame, families: list[Family]):
    """Per family, the rows (labels of ``frame``'s index) with the lowest and the highest median shape, where
    two or more have one."""
    for fam in families:
        ranked = frame[median_column(fam)].dropna().sort_values()
        if len(ranked) > 1:
            yield fam, ranked.index[0], ranked.index[-1]


def _medians(row, families: list[Family]) -> str:
    """'median β 1.2, median df 5.3' (shapes a report did not fit are left out)."""
    return ", ".join(f"{median_column(f)} {_fmt(row[median_column(f)])}" for f in families if pd.notna(row[median_column(f)]))


def _ends(fam: Family) -> tuple[str, str]:
    """The words for a low and a high headline shape (the family's declaration), or plain 'low'/'high' ones."""
    shape = fam.shape(fam.headline)
    return shape.low or f"low-{symbol(fam)}", shape.high or f"high-{symbol(fam)}"


def dataset_lines(models: pd.DataFrame) -> list[str]:
    """Per training set, each headline shape's median over its trained models; the sets at each shape's two
    ends; and the same architecture trained on different data, side by side."""
    families = [f for f in headline_families() if median_column(f) in models and models[median_column(f)].notna().any()]
    if not families:
        return []
    first = median_column(families[0])
    trained = models[~models["model"].str.endswith("(init)") & models[[median_column(f) for f in families]].notna().any(axis=1)]
    by_data = trained.groupby("data")[[median_column(f) for f in families]].median().sort_values(first)
    lines = [f"- {markdown_text(data)}: {_medians(r, families)} ({', '.join(map(markdown_text, trained[trained['data'] == data]['model']))})"
             for data, r in by_data.iterrows()]
    lines += [f"- By {symbol(fam)}, most {_ends(fam)[0]}: **{markdown_text(lowest)}**; most {_ends(fam)[1]}: **{markdown_text(highest)}**."
              for fam, lowest, highest in _extremes(by_data, families)]
    # The same architecture (name up to the first '_') trained on different data isolates the training set.
    arch = trained.assign(arch=trained["model"].str.split("_").str[0])
    for name, group in arch.groupby("arch"):
        if group["data"].nunique() > 1:
            shapes = lambda r: ", ".join(f"{symbol(f)} {_fmt(r[median_column(f)])}" for f in families if pd.notna(r[median_column(f)]))
            lines.append(f"- Same architecture ({markdown_text(name)}), different data: "
                         + " against ".join(f"{markdown_text(r['model'])} {shapes(r)}" for _, r in group.iterrows()) + ".")
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


SPECTRAL_SEED = 0  # the bootstrap of each shape-against-alpha rank correlation (each section starts from it)


def spectral_lines(reports: list[ModelReport], seed: int = SPECTRAL_SEED) -> list[str]:
    """Each headline shape (value view: β, df) against ESD alpha (spectral view) over the float layers, per model
    and pooled over trained models: Spearman's ρ with a seeded percentile-bootstrap 95 % interval (each section
    from ``seed``, so one does not depend on another). Empty unless some report was made with `fit --spectral`."""
    from ..analyses.spectral import shape_alpha_pairs, spearman_with_interval

    sections, shown = [], []
    for fam in shown_families(reports):
        sym, h, rng = symbol(fam), fam.headline, np.random.default_rng(seed)
        pairs = {r.label: (r, shape_alpha_pairs(float_layers(r.table), fam.name, h)) for r in reports}
        pairs = {label: (r, p) for label, (r, p) in pairs.items() if not p.empty}
        if not pairs:
            continue
        shown.append(sym)
        rows = []
        for label, (r, p) in pairs.items():
            rc = spearman_with_interval(p[h], p["esd_alpha"], rng)
            rows.append({"model": label, "layers": rc.n, f"median {sym}": p[h].median(), "median alpha": p["esd_alpha"].median(),
                         "Spearman ρ": rc.rho, "95% interval": f"{_fmt(rc.lo, '.2f')} to {_fmt(rc.hi, '.2f')}"})
        trained = [p for label, (r, p) in pairs.items() if not r.init]
        sections += [f"### {sym} ({markdown_text(fam.label or fam.name)}) against alpha", ""]
        if trained:
            pooled = pd.concat(trained, ignore_index=True)
            rc = spearman_with_interval(pooled[h], pooled["esd_alpha"], rng)
            strength = "weak" if abs(rc.rho) < 0.3 else "moderate" if abs(rc.rho) < 0.6 else "strong"
            excludes_zero = rc.lo > 0 or rc.hi < 0
            sections += [f"Pooled over {rc.n} layers of {_count(len(trained), 'trained model')}: ρ = {rc.rho:.2f} "
                         f"(95 % interval {rc.lo:.2f} to {rc.hi:.2f}), a {strength} rank correlation"
                         + ("; the interval excludes zero." if excludes_zero else "; the interval includes zero."), ""]
        sections += [markdown_table(pd.DataFrame(rows)), ""]
    if not sections:
        return []
    return [f"## Values against spectrum ({', '.join(shown)} and ESD alpha)", "",
            "For every 2-D weight matrix (conv kernels as out × in·k·k), `fit --spectral` fits a power law to the tail of "
            "the eigenvalue spectrum of WᵀW/N (alpha, xmin by minimum KS distance, as WeightWatcher does; matrices with "
            "fewer than 10 eigenvalues, such as depthwise 3×3 kernels, get none). Spearman's ρ between a layer's "
            f"{' and '.join(shown)} and its alpha, over the layers stored as floats, with a percentile-bootstrap 95 % interval "
            f"over layers (2000 resamples, seed {seed}). Where ρ is far from ±1, the spectrum carries information the "
            "value distribution does not.", "", *sections]


def _fitted_families(reports: list[ModelReport]) -> list[str]:
    """The families fitted in any of the reports: registered ones in registry order, then any others."""
    seen = {f for r in reports for f in r.table["family"].unique() if f}
    return [f for f in FAMILIES if f in seen] + sorted(seen - set(FAMILIES))


def intro_sentence(reports: list[ModelReport]) -> str:
    """Which families were fitted and what each headline shape says, from the registry's declarations."""
    names = [markdown_text(_label(f)) for f in _fitted_families(reports)]
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)
    shapes = [f"{symbol(f)} ({markdown_text(f.label or f.name)}{': ' + f.shape(f.headline).meaning if f.shape(f.headline).meaning else ''}) "
              f"says how {_ends(f)[0]} or {_ends(f)[1]} a layer is" for f in shown_families(reports)]
    text = f"Per layer, each of {listed} is fitted by maximum likelihood; the best is chosen by AIC."
    if shapes:
        text += " A headline shape sums each layer up in one number: " + "; ".join(shapes) + "."
    return text


def column_notes(models: pd.DataFrame) -> str:
    """What the per-model table's generated columns mean."""
    notes = []
    for fam in map(FAMILIES.get, FAMILIES):
        if fam.beats and beats_column(fam) in models:
            notes.append(f"`{beats_column(fam)}`: layers where {_label(fam.name)} has a lower AIC than "
                         + " and ".join(map(_label, fam.beats)))
    for fam in headline_families():
        if f"{symbol(fam)}~depth ρ" in models:  # (families some report fitted)
            notes.append(f"`{symbol(fam)}~depth ρ`: Spearman correlation of {symbol(fam)} with relative depth "
                         f"(positive: deeper layers more {_ends(fam)[1]})")
    return "; ".join(notes) + "." if notes else ""


def findings_markdown(root: Path, reports: list[ModelReport], command: str) -> str:
    models = model_rows(reports)
    cats = category_rows(reports)
    parts = [
        "# Are trained neural-network weights Gaussian, Laplacian or heavy-tailed?",
        "",
        f"Generated by {markdown_code(command)} from the report folders below; every number comes from their `layers.csv`.",
        "",
        intro_sentence(reports),
        "",
        "## The claims, checked",
        "",
        *claim_lines(models, root),
        "## Per model",
        "",
        markdown_table(models),
        "",
        column_notes(models),
        "",
    ]
    if not cats.empty:
        parts += ["## By layer kind", "", *category_lines(cats), "", markdown_table(cats), ""]
    parts += ["## By training set", "", *dataset_lines(models), ""]
    parts += spectral_lines(reports)
    over = _figure(root, "*/plots/*over_training.png", "shape over training")
    drift = _figure(root, "*/drift.png", "trained against --init")
    if over or drift:
        parts += ["## How the distribution gets there", "",
                  "From a Gaussian (or uniform) initialisation, training moves the shape: "
                  f"{' and '.join(symbol(f) for f in shown_families(reports)) or 'the fits'} per layer over the "
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
