"""Per-channel fits on a synthetic layer whose channels have known laws."""
from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from weightdist.analyses import channels as ch
from weightdist.cli import main

N = 3000  # values per channel


def _layer(rng: np.random.Generator):
    """13 output channels: 4 Gaussian, 4 Laplace, 4 Student-t(3), all of scale 0.05, and channel 12 Gaussian
    with 20x the scale (an outlier channel)."""
    rows = [rng.normal(0, 0.05, N) for _ in range(4)] + [rng.laplace(0, 0.05, N) for _ in range(4)]
    rows += [0.05 * rng.standard_t(3, N) for _ in range(4)] + [rng.normal(0, 1.0, N)]
    values = np.stack(rows).reshape(13, 3, 10, 100)  # a conv weight: (out, in, kh, kw)
    return types.SimpleNamespace(name="conv.weight", kind="conv", shape=values.shape, values=values.ravel(),
                                 subsampled_from=None)


def test_channels_with_known_laws():
    layer = _layer(np.random.default_rng(0))
    fits, summary, outliers, skipped = ch.channel_tables([layer], ch.ChannelOptions())
    assert skipped == [] and len(summary) == 1 and fits["channel"].nunique() == 13
    best = fits[fits["is_best"].astype(bool)].set_index("channel")["family"]
    assert (best.loc[4:7] == "laplace").sum() >= 3  # Laplace channels: Laplace (or gennorm β≈1) wins
    assert set(best.loc[8:11]) == {"student_t"}  # t(3) channels: heavy tails, only the t fits them
    gennorm = fits[fits["family"] == "gennorm"].set_index("channel")["beta"]
    assert np.all(np.abs(gennorm.loc[0:3] - 2) < 0.25) and np.all(np.abs(gennorm.loc[4:7] - 1) < 0.15)
    t_df = fits[fits["family"] == "student_t"].set_index("channel")["df"]
    assert np.all(np.abs(t_df.loc[8:11] - 3) < 0.8)
    row = summary.iloc[0]
    shares = {k.removeprefix("share_"): row[k] for k in summary.columns if k.startswith("share_")}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["student_t"] == pytest.approx(best.eq("student_t").mean())
    assert row["beta_median"] == pytest.approx(np.median(gennorm))
    q1, q3 = np.percentile(gennorm, [25, 75])
    assert (row["beta_q1"], row["beta_q3"]) == pytest.approx((q1, q3))
    # the 20x channel is the outlier on scale; no Gaussian/Laplace channel of the common scale is
    std_out = outliers[outliers["parameter"] == "std"]
    assert list(std_out["channel"]) == [12]


def test_robust_z_against_its_definition():
    v = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    med, mad = 3.0, 1.0
    assert ch.robust_z(v) == pytest.approx(0.6745 * (v - med) / mad)
    assert np.all(ch.robust_z(np.ones(5)) == 0)


def test_too_small_channels_are_a_one_line_error(tmp_path, capsys):
    assert main(["fit", "--granularity", "channel", "--min-channel-size", "100000", "--quiet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no conv or linear layer has channels of at least 100000 values" in err and err.count("\n") == 1
    assert main(["fit", "--granularity", "channel", "--min-channel-size", "3", "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "at least 8" in capsys.readouterr().err


def test_channel_report_folder(tmp_path):
    out = tmp_path / "c"
    assert main(["fit", "--granularity", "channel", "--include", "layer3.2", "--quiet", "--out", str(out)]) == 0
    summary = pd.read_csv(out / "channel_summary.csv")
    assert list(summary["layer"]) == ["layer3.2.conv1.weight", "layer3.2.conv2.weight"]
    assert (summary["channels_fitted"] == 64).all()
    fits = pd.read_csv(out / "channels.csv")
    assert fits.groupby("layer")["channel"].nunique().tolist() == [64, 64]
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["000_layer3.2.conv1.weight_shapes.png",
                                                                 "001_layer3.2.conv2.weight_shapes.png"]
    assert (out / "report.md").read_text().startswith("# weightdist fit (per channel)") and (out / "report.html").is_file()
