"""From cells to statistics to verdicts: seed means, paired intervals against the baseline, claims.

Seeds are the unit of replication: a (prior, dim) result is the mean over its seeds ± the standard
error across seeds; a difference from the baseline prior is paired by seed (same seed: same
validation split, test binarisation and data order) with a two-sided 95 % t-interval over seeds.
The IWAE standard error within a run (spread over test images) is reported apart, as ``iwae_se``.

A claim is "supported" or "contradicted" only where its interval excludes zero; otherwise it is
"not resolved at this budget". The claim sentences live on the registered latents (``Latent.claim``),
so nothing here names a prior.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .latents import LATENTS, baseline_prior

LEVEL = 0.95
SUPPORTED, CONTRADICTED, UNRESOLVED = "supported", "contradicted", "not resolved at this budget"


@dataclass(frozen=True)
class Interval:
    mean: float
    se: float
    lo: float
    hi: float
    n: int


def t_interval(values: np.ndarray | list[float], level: float = LEVEL) -> Interval:
    """Mean, standard error and two-sided t-interval of independent replicates (NaN bounds below n = 2)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0)
    if n < 2:
        return Interval(float(x[0]), math.nan, math.nan, math.nan, 1)
    se = float(x.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return Interval(float(x.mean()), se, float(x.mean()) - half, float(x.mean()) + half, n)


def verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return SUPPORTED
    if hi < 0:
        return CONTRADICTED
    return UNRESOLVED


def _paired(cells: pd.DataFrame, prior: str, dim: int, base: str, column: str, transform=lambda v: v) -> Interval:
    """Interval of transform(prior's column) − transform(baseline's column), paired by seed at one dimension."""
    here = cells[(cells["latent_dim"] == dim)]
    a = here[here["prior"] == prior].set_index("seed")[column]
    b = here[here["prior"] == base].set_index("seed")[column]
    seeds = a.index.intersection(b.index)
    return t_interval(transform(a[seeds].to_numpy(dtype=float)) - transform(b[seeds].to_numpy(dtype=float)))


def summarise(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (prior, dim) from the per-seed cells (the table written as results.csv)."""
    base = baseline_prior()
    rows = []
    for (prior, dim), group in cells.groupby(["prior", "latent_dim"], sort=False):
        ll = t_interval(group["test_ll"])
        none = Interval(math.nan, math.nan, math.nan, math.nan, 0)
        diff = _paired(cells, prior, dim, base, "test_ll") if prior != base else none
        cost = _paired(cells, prior, dim, base, "seconds_per_epoch", np.log) if prior != base else none
        rows.append({
            "prior": prior, "latent_dim": int(dim), "seeds": int(len(group)),
            "test_ll": ll.mean, "test_ll_seed_se": ll.se, "iwae_se": float(group["test_ll_se"].mean()),
            "ll_vs_baseline": diff.mean, "ll_vs_baseline_lo": diff.lo, "ll_vs_baseline_hi": diff.hi, "pairs": diff.n,
            "verdict": verdict(diff.lo, diff.hi) if prior != base else "baseline",
            "elbo": float(group["elbo"].mean()), "kl": float(group["kl"].mean()),
            "active_units": float(group["active_units"].mean()), "code_dim": int(group["code_dim"].iloc[0]),
            "frechet": float(group["frechet"].mean()),
            "stop_epoch": float(group["stop_epoch"].mean()), "capped": int((~group["converged"].astype(bool)).sum()),
            "seconds_per_epoch": float(group["seconds_per_epoch"].mean()),
            "cost_ratio": math.exp(cost.mean) if cost.n else math.nan,
            "cost_ratio_lo": math.exp(cost.lo) if cost.n > 1 else math.nan,
            "cost_ratio_hi": math.exp(cost.hi) if cost.n > 1 else math.nan,
        })
    return pd.DataFrame(rows)


def _fmt_interval(mean: float, lo: float, hi: float, unit: str = "") -> str:
    if not math.isfinite(lo):
        return f"{mean:+.2f}{unit} (one seed: no interval)"
    return f"{mean:+.2f}{unit} [{lo:+.2f}, {hi:+.2f}]"


def _by_dim(rows: pd.DataFrame) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in rows.itertuples():
        out.setdefault(verdict(r.ll_vs_baseline_lo, r.ll_vs_baseline_hi), []).append(int(r.latent_dim))
    return out


def _combine(groups: dict[str, list], label) -> str:
    """'supported at d=2; not resolved at this budget at d=5, 10' (supported first, then contradicted)."""
    if not groups:
        return "not measured"
    order = [SUPPORTED, CONTRADICTED, UNRESOLVED]
    return "; ".join(f"**{v}** {label(groups[v])}" for v in order if v in groups)


def _cols(summary: pd.DataFrame, *names: str) -> bool:
    return all(n in summary.columns for n in names)


def _versus_claims(summary: pd.DataFrame, base: str) -> list[tuple[str, str, str]]:
    out = []
    for prior in dict.fromkeys(summary["prior"]):
        claim = LATENTS.get(prior).claim if prior in LATENTS else ""
        if prior == base or not claim:
            continue
        rows = summary[summary["prior"] == prior].sort_values("latent_dim")
        if not _cols(summary, "ll_vs_baseline", "ll_vs_baseline_lo", "ll_vs_baseline_hi"):
            out.append((f"{prior} beats {base}", f"**{claim}** ({prior} against {base}): not measured with seeds.", UNRESOLVED))
            continue
        parts = [f"d={int(r.latent_dim)}: {_fmt_interval(r.ll_vs_baseline, r.ll_vs_baseline_lo, r.ll_vs_baseline_hi)}"
                 for r in rows.itertuples()]
        overall = _combine(_by_dim(rows), lambda dims: "at " + ", ".join(f"d={d}" for d in dims))
        line = (f"**{claim}** ({prior} − {base} test log-likelihood, nats, mean over seeds [95 % interval, paired by "
                f"seed]): " + "; ".join(parts) + f". Verdict: {overall}.")
        out.append((f"{prior} beats {base}", line, overall))
    return out


def _cost_claim(summary: pd.DataFrame, base: str) -> tuple[str, str, str]:
    """The baseline's analytic KL and one-line reparameterisation, measured as training time per epoch."""
    others = [p for p in dict.fromkeys(summary["prior"]) if p != base and p in LATENTS and not LATENTS.get(p).deterministic]
    name = f"analytic KL ({base})"
    if not others or not _cols(summary, "cost_ratio", "cost_ratio_lo", "cost_ratio_hi"):
        return name, f"**The {base} prior has an analytic KL and an easy reparameterisation**: not measured.", UNRESOLVED
    groups: dict[str, list] = {}
    parts = []
    for prior in others:
        rows = summary[summary["prior"] == prior]
        # Pool dimensions: the cost claim is about the family, not one dimension. Geometric mean of ratios.
        log_ratio = np.log(rows["cost_ratio"].to_numpy(dtype=float))
        lo, hi = np.log(rows["cost_ratio_lo"].to_numpy(dtype=float)), np.log(rows["cost_ratio_hi"].to_numpy(dtype=float))
        v = SUPPORTED if np.all(lo > 0) else CONTRADICTED if np.all(hi < 0) else UNRESOLVED
        groups.setdefault(v, []).append(prior)
        parts.append(f"{prior} ×{math.exp(log_ratio.mean()):.2f} (" + ", ".join(
            f"d={int(r.latent_dim)} [{r.cost_ratio_lo:.2f}, {r.cost_ratio_hi:.2f}]" for r in rows.itertuples()) + ")")
    overall = _combine(groups, lambda priors: "for " + ", ".join(priors))
    line = (f"**The {base} prior has an analytic KL and an easy reparameterisation** (training seconds per epoch against "
            f"{base}, 95 % interval of the ratio paired by seed; supported where the other prior is slower at every "
            "dimension): " + "; ".join(parts) + f". Verdict: {overall}. Timings come from a shared machine.")
    return name, line, overall


EXPONENTIAL_CLAIM = ("AE + density needs exponentially many samples",
                     "**An autoencoder plus a density estimator needs exponentially many samples as d grows**: "
                     "**not tested**. Testing it needs the number of training codes required to reach a fixed "
                     "held-out gap, measured as a function of d; this comparison does not measure that.",
                     "not tested")


NUMERIC = ("latent_dim", "ll_vs_baseline", "ll_vs_baseline_lo", "ll_vs_baseline_hi", "cost_ratio", "cost_ratio_lo",
           "cost_ratio_hi")


def claims(summary: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(short name, Markdown line, verdict) for each claim, computed from the summary table only (a table
    read back from disk may hold anything: numbers that do not parse count as missing)."""
    base = baseline_prior()
    summary = summary.assign(prior=summary["prior"].astype(str),
                             **{c: pd.to_numeric(summary[c], errors="coerce") for c in NUMERIC if c in summary.columns})
    summary = summary.dropna(subset=["latent_dim"])
    out = []
    if base in set(summary["prior"]):
        out.append(_cost_claim(summary, base))
        out += _versus_claims(summary, base)
    out.append(EXPONENTIAL_CLAIM)
    return out


def claim_verdicts(results: pd.DataFrame, sweep: pd.DataFrame | None = None) -> dict[str, str]:
    """Short claim name -> verdict, from results.csv (for the findings write-up). ``sweep`` is ignored
    (kept for callers of the earlier signature)."""
    return {name: v.replace("**", "") for name, _, v in claims(results)}


def claims_markdown(summary: pd.DataFrame) -> list[str]:
    return ["## The claims, against these numbers", "",
            *(f"{i}. {line}" for i, (_, line, _) in enumerate(claims(summary), 1))]
