"""Figures of the comparison, drawn from cached cells and the summary table; no prior is named here."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..reporting.plots import _plt, save_figure


def _grid(images: np.ndarray, cols: int = 8) -> np.ndarray:
    rows = math.ceil(len(images) / cols)
    canvas = np.ones((rows * 29, cols * 29))
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * 29 : r * 29 + 28, c * 29 : c * 29 + 28] = img.reshape(28, 28)
    return canvas


def image_figure(panels: dict[str, np.ndarray], title: str):
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0))
    for ax, (name, images) in zip(np.atleast_1d(axes), panels.items()):
        ax.imshow(_grid(images / 255.0 if images.dtype == np.uint8 else images), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def scatter_figure(codes: dict[str, np.ndarray], labels: np.ndarray):
    """2-D codes; codes on S² ⊂ R³ are drawn as longitude and latitude."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(codes), figsize=(2.8 * len(codes), 2.9))
    for ax, (name, z) in zip(np.atleast_1d(axes), codes.items()):
        if z.shape[1] == 3:
            x, y = np.arctan2(z[:, 1], z[:, 0]), np.arcsin(np.clip(z[:, 2], -1, 1))
        else:
            x, y = z[:, 0], z[:, 1]
        ax.scatter(x, y, c=labels[: len(z)], cmap="tab10", s=2, alpha=0.7)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("2-D latent codes (posterior location) coloured by class; spheres as longitude/latitude", fontsize=9)
    fig.tight_layout()
    return fig


def ll_figure(summary: pd.DataFrame):
    """Test log-likelihood against dimension: mean over seeds ± 2 standard errors across seeds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for prior, rows in summary.groupby("prior", sort=False):
        err = 2 * rows["test_ll_seed_se"].fillna(0)
        ax.errorbar(rows["latent_dim"], rows["test_ll"], yerr=err, marker="o", ms=4, capsize=2, label=prior)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("latent (manifold) dimension d")
    ax.set_ylabel("test log-likelihood (nats, IWAE), mean ± 2 SE over seeds")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def write_figures(stage: Path, summary: pd.DataFrame, arrays: dict[tuple[str, int, int], dict], priors: tuple[str, ...],
                  dims: tuple[int, ...], seed: int, real_images: np.ndarray, labels: np.ndarray) -> list[str]:
    """Sample and reconstruction grids at one dimension (first seed), the 2-D codes, the likelihood curve."""
    show = 10 if 10 in dims else max(dims)
    have = [p for p in priors if (p, show, seed) in arrays]
    figures = []
    if have:
        save_figure(image_figure({p: arrays[(p, show, seed)]["samples"] for p in have}, f"prior samples, d={show}"),
                    stage / "samples.png")
        save_figure(image_figure({"data": real_images[:8], **{p: arrays[(p, show, seed)]["recons"] for p in have}},
                                 f"reconstructions (posterior location), d={show}"), stage / "reconstructions.png")
        figures += ["samples.png", "reconstructions.png"]
    flat = [p for p in priors if (p, 2, seed) in arrays and len(arrays[(p, 2, seed)]["locations"])]
    if flat:
        save_figure(scatter_figure({p: arrays[(p, 2, seed)]["locations"] for p in flat}, labels), stage / "latent_2d.png")
        figures.append("latent_2d.png")
    save_figure(ll_figure(summary), stage / "ll_vs_dim.png")
    figures.append("ll_vs_dim.png")
    return figures
