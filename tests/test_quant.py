"""Quantisation clips: ACIQ's constants, the error model against Monte Carlo, the empirical optimum
against brute force, and the accuracy harness (BN folding) against the float model."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from weightdist.core import quant as q
from weightdist.core.families import FAMILIES, get_family

# Banner et al. 2019 (ACIQ), table of optimal clipping values, in units of b (Laplace) and σ (Gaussian).
ACIQ = {"laplace": {2: 2.83, 3: 3.89, 4: 5.03}, "gaussian": {2: 1.71, 3: 2.15, 4: 2.55}}


@pytest.mark.parametrize("family", sorted(ACIQ))
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_closed_form_clips_match_aciq(family, bits):
    scale = 0.37
    clip = get_family(family).mse_optimal_clip({"loc": 0.0, "scale": scale}, bits)
    # ACIQ prints two decimals, truncated (3.897 -> 3.89, 2.559 -> 2.55): within 0.01 of the table.
    assert abs(clip / scale - ACIQ[family][bits]) <= 0.01


@pytest.mark.parametrize("family", sorted(ACIQ))
@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_closed_form_clips_match_numerical_minimisation(family, bits):
    params = {"loc": 0.0, "scale": 1.3}
    fam = get_family(family)
    closed = fam.mse_optimal_clip(params, bits)
    numeric = q.numerical_optimal_clip(fam.scipy_dist(params).sf, bits, params["scale"])
    assert closed == pytest.approx(numeric, rel=1e-6)
    # and it is the minimum of the model: nudging it either way costs
    dist = fam.scipy_dist(params)
    best = q.expected_mse(dist, closed, bits)
    assert best < q.expected_mse(dist, closed * 1.01, bits) and best < q.expected_mse(dist, closed * 0.99, bits)


def test_numerical_clip_of_gennorm_at_beta_one_and_two_is_laplace_and_gaussian():
    g = get_family("gennorm")
    for bits in (2, 3, 4):
        lap = g.mse_optimal_clip({"loc": 0.0, "scale": 1.0, "beta": 1.0}, bits)
        assert lap == pytest.approx(get_family("laplace").mse_optimal_clip({"loc": 0.0, "scale": 1.0}, bits), rel=1e-6)
        # gennorm(β=2, scale s) is N(0, s²/2)
        gau = g.mse_optimal_clip({"loc": 0.0, "scale": math.sqrt(2), "beta": 2.0}, bits)
        assert gau == pytest.approx(get_family("gaussian").mse_optimal_clip({"loc": 0.0, "scale": 1.0}, bits), rel=1e-6)


def test_student_t_clip_tends_to_gaussian_and_is_nan_without_variance():
    t = get_family("student_t")
    gauss = get_family("gaussian").mse_optimal_clip({"loc": 0.0, "scale": 1.0}, 4)
    assert t.mse_optimal_clip({"loc": 0.0, "scale": 1.0, "df": 1e5}, 4) == pytest.approx(gauss, rel=1e-3)
    assert t.mse_optimal_clip({"loc": 0.0, "scale": 1.0, "df": 4.0}, 4) > gauss  # heavier tails, wider clip
    assert math.isnan(t.mse_optimal_clip({"loc": 0.0, "scale": 1.0, "df": 1.5}, 4))


def test_every_registered_family_gives_a_clip():
    x = stats.t(6).rvs(size=4000, random_state=np.random.default_rng(1)) * 0.05
    from weightdist.core.fitting import fit

    res = fit(x)
    for name in FAMILIES:
        fam, params = get_family(name), res.fits[name].params
        clip = fam.mse_optimal_clip(params, 4)
        assert 0.05 < clip < np.abs(x).max() * 2
        # against the same minimisation on scipy's survival function of the centred law (independent reference)
        ref = fam.scipy_dist({**params, "loc": 0.0})
        assert clip == pytest.approx(q.numerical_optimal_clip(ref.sf, 4, float(ref.isf(0.25))), rel=1e-6)


LAWS = [stats.norm(scale=0.8), stats.laplace(scale=0.5), stats.t(9, scale=1.1), stats.gennorm(0.7, scale=0.3)]


@pytest.mark.parametrize("dist", LAWS, ids=lambda d: d.dist.name)
@pytest.mark.parametrize("bits", [2, 3, 4])  # at 8 bits the clipped tail holds a handful of samples: MC cannot check it
def test_exact_expected_mse_matches_monte_carlo(dist, bits):
    rng = np.random.default_rng(bits)
    x = dist.rvs(size=400_000, random_state=rng)
    c_opt = q.numerical_optimal_clip(dist.sf, bits, dist.isf(0.25))
    for clip in (0.5 * c_opt, c_opt):  # wider clips leave too few tail samples for Monte Carlo
        err2 = (x - q.quantize(x, clip, bits)) ** 2
        se = err2.std() / math.sqrt(x.size)
        assert abs(err2.mean() - q.exact_expected_mse(dist, clip, bits)) < 4 * se


@pytest.mark.parametrize("dist", LAWS, ids=lambda d: d.dist.name)
def test_aciq_model_gap_shrinks_with_bits(dist):
    """ACIQ's model (clip noise + Δ²/12) is an approximation: it under-states the 2-bit error by
    20-35 % and is within 2 % at 8 bits. Pin both, so the documented size of the gap stays true."""
    gaps = {}
    for bits in (2, 4, 8):
        clip = q.numerical_optimal_clip(dist.sf, bits, dist.isf(0.25))
        gaps[bits] = q.expected_mse(dist, clip, bits) / q.exact_expected_mse(dist, clip, bits) - 1
    assert -0.40 < gaps[2] < -0.15
    assert abs(gaps[8]) < 0.02
    assert abs(gaps[2]) > abs(gaps[4]) > abs(gaps[8])


def test_quantize_levels_and_symmetry():
    x = np.linspace(-3, 3, 1001)
    out = q.quantize(x, 1.0, 3)
    levels = np.unique(out)
    assert levels.size == 8 and np.allclose(np.diff(levels), 0.25) and levels.max() == pytest.approx(0.875)
    inner = x[np.abs(x) < 0.999]  # midrise: odd except on bin edges
    inner = inner[np.abs(inner / 0.25 - np.round(inner / 0.25)) > 1e-9]
    assert np.allclose(q.quantize(-inner, 1.0, 3), -q.quantize(inner, 1.0, 3))
    # per-channel clips broadcast over rows
    w = np.array([[0.1, -0.2, 0.3], [1.0, -2.0, 3.0]])
    per_row = q.quantize(w, np.array([[0.3], [3.0]]), 4)
    assert np.allclose(per_row[1], 10 * per_row[0])


def _brute_force_clip(x, bits, n=200_000):
    a = np.abs(x)
    top = a.max() * (1 + 1 / (2 ** bits - 1))
    clips = np.linspace(top / n, top, n)
    half = 2 ** (bits - 1)
    delta = clips[:, None] / half
    m = np.minimum(np.floor(a[None, :] / delta), half - 1) + 0.5
    mse = ((a[None, :] - m * delta) ** 2).mean(axis=1)
    i = int(np.argmin(mse))
    return clips[i], mse[i]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_empirical_optimum_beats_brute_force_grid(seed, bits):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3 + seed, size=40 + 10 * seed) * 0.1
    clip = q.empirical_optimal_clip(x, bits)
    _, brute_mse = _brute_force_clip(x, bits)
    mine = q.quant_mse(x, clip, bits)
    assert mine <= brute_mse * (1 + 1e-12)  # never worse than a 200k-point grid ...
    assert mine >= brute_mse * (1 - 1e-3)  # ... and that grid is within 0.1 % of it, so it is the same minimum


def test_empirical_optimum_on_a_large_layer_beats_every_rule():
    rng = np.random.default_rng(7)
    x = rng.laplace(scale=0.02, size=100_000)
    for bits in (2, 4, 8):
        emp = q.quant_mse(x, q.empirical_optimal_clip(x, bits), bits)
        for clip in (np.abs(x).max(), get_family("laplace").mse_optimal_clip({"loc": 0, "scale": 0.02}, bits)):
            assert emp <= q.quant_mse(x, clip, bits) * (1 + 1e-12)


def test_sqnr_and_bits_check():
    x = np.array([1.0, -1.0])
    assert q.sqnr_db(x, 0.01) == pytest.approx(20.0)
    for bad in (1, 17, 2.5):
        with pytest.raises(ValueError, match="bits"):
            q.check_bits(bad)


# --- the analysis on models ------------------------------------------------------------------------------

import types

import torch
from torch import nn

from weightdist.analyses import quant as aq
from weightdist.cli import main


def _toy(seed: int = 0) -> nn.Module:
    """conv -> BN -> relu -> linear, with non-trivial BN statistics, known random weights."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        bn = model[1]
        bn.running_mean.copy_(torch.randn(8, generator=gen))
        bn.running_var.copy_(torch.rand(8, generator=gen) + 0.5)
    return model.eval()


def test_batchnorm_folding_keeps_the_outputs():
    model = _toy()
    folded = aq.fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(16, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x), folded(x), atol=1e-5)


def test_batchnorm_folding_on_the_embedded_resnet():
    from weightdist.sources import load_model

    module = load_model("resnet20_fashionmnist").module.eval()
    folded = aq.fold_batchnorm(module)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == 0
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(module(x), folded(x), atol=1e-4)


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_analysis_rules_against_the_empirical_optimum(granularity):
    loaded = types.SimpleNamespace(name="toy", module=_toy())
    res = aq.quant_analysis(loaded, aq.QuantOptions(bits=(2, 4), granularities=(granularity,), min_channel_size=16))
    t = res.layers
    assert set(t["rule"]) == set(aq.rules()) and set(t["layer"]) == {"0.weight", "4.weight"}
    assert res.accuracy.empty and res.folded  # no evaluation set registered for 'toy'
    assert (t.loc[t["rule"] == "empirical", "mse_vs_empirical"] == 1).all()
    assert (t["mse_vs_empirical"] >= 1 - 1e-9).all()  # no rule beats the exact optimum of its unit ...
    assert (t.loc[t["rule"] == "min-max", "mse_vs_minmax"] == 1).all()
    # ... SQNR is 10 log10(power / MSE) of the folded weights
    folded = aq.fold_batchnorm(loaded.module)
    w = folded[0].weight.detach().double().numpy()
    row = t[(t["layer"] == "0.weight") & (t["rule"] == "min-max") & (t["bits"] == 4)].iloc[0]
    assert row["sqnr_db"] == pytest.approx(10 * np.log10(np.mean(w**2) / row["mse"]))
    clip = np.abs(w).max(axis=(1, 2, 3), keepdims=True) if granularity == "channel" else np.abs(w).max()
    assert row["mse"] == pytest.approx(np.mean((w - q.quantize(w, clip, 4)) ** 2))


def test_per_channel_clips_help_channels_of_different_scales():
    rng = np.random.default_rng(3)
    w = rng.laplace(size=(16, 64)) * np.geomspace(0.01, 1.0, 16)[:, None]
    opts = aq.QuantOptions(bits=(4,), min_channel_size=32)
    per_tensor = aq.layer_clips("w", "linear", w, "tensor", opts)
    per_channel = aq.layer_clips("w", "linear", w, "channel", opts)
    for rule in ("min-max", "best-fit", "empirical"):
        mse_t = np.mean((w - aq.quantize_weight(w, per_tensor, rule, 4)) ** 2)
        mse_c = np.mean((w - aq.quantize_weight(w, per_channel, rule, 4)) ** 2)
        assert mse_c < mse_t
    assert per_channel.clips[("laplace", 4)].shape == (16,)
    # the Laplace clip follows each channel's scale: ratio of clips ≈ ratio of scales (1 to 100)
    ratio = per_channel.clips[("laplace", 4)][-1] / per_channel.clips[("laplace", 4)][0]
    assert 50 < ratio < 200


def test_small_channels_fall_back_to_one_clip_per_tensor():
    w = np.random.default_rng(0).normal(size=(4, 9))
    lc = aq.layer_clips("w", "conv", w, "channel", aq.QuantOptions(bits=(4,), min_channel_size=32))
    assert lc.granularity == "tensor" and "per tensor" in lc.note


@pytest.mark.parametrize("argv, message", [
    (["--bits", "1,4"], "from 2 to 16"),
    (["--bits", "17"], "from 2 to 16"),
    (["--granularity", "row"], "choose from tensor, channel"),
    (["--min-channel-size", "4"], "at least 8"),
    (["--bits", "4", "--accuracy-bits", "3"], "not among --bits"),
    (["--include", "no_such_layer"], "no conv or linear weights"),
    (["--granularity", "channel", "--min-channel-size", "100000", "--no-accuracy"], "no layer has channels of at least"),
])
def test_bad_input_is_one_line(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["quant", "--quiet", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and err.startswith("weightdist: error:")
    assert not out.exists()


def test_a_checkpoint_without_conv_or_linear_weights_is_refused(tmp_path, capsys):
    from safetensors.torch import save_file

    path = tmp_path / "norms.safetensors"
    save_file({"ln.weight": torch.ones(16), "ln.bias": torch.zeros(16)}, str(path))
    assert main(["quant", str(path), "--quiet", "--out", str(tmp_path / "out")]) == 2
    assert "no conv or linear weights" in capsys.readouterr().err


def test_quant_report_folder(tmp_path):
    out = tmp_path / "q"
    assert main(["quant", "--quiet", "--bits", "3,4", "--include", "layer3.2", "--no-accuracy", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert text.startswith("# weightdist quant: resnet20") and "--include layer3.2" in text
    assert "best-fit family's clip has" in text and "empirical-optimum MSE" in text
    table = __import__("pandas").read_csv(out / "quant.csv")
    assert set(table["bits"]) == {3, 4} and set(table["layer"]) == {"layer3.2.conv1.weight", "layer3.2.conv2.weight"}
    assert (out / "report.html").is_file() and "generated_at" not in (out / "summary.json").read_text()


@pytest.mark.slow
def test_accuracy_harness_reproduces_the_float_model_at_16_bits():
    """BN folding + 16-bit min-max quantisation of every weight: the float accuracy within 0.1 %,
    and the float accuracy is the one the training script recorded (93.5 %)."""
    import json

    from pathlib import Path

    import weightdist

    float_acc, q16 = aq.evaluate_float_and_folded("resnet20_fashionmnist", bits=16)
    assert abs(float_acc - q16) <= 0.001
    meta = Path(weightdist.__file__).parent / "sources" / "weights" / "resnet20_fashionmnist.json"
    recorded = json.loads(meta.read_text())["test_accuracy"]
    assert abs(float_acc - recorded) <= 0.0006
