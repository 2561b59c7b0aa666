"""One error policy, in one place (cli main): a WeightdistError is one line and its exit code; any
other exception is a bug and keeps its traceback plus a request to report it."""
from __future__ import annotations

import pytest
import torch

import weightdist.cli as cli
from weightdist.errors import ModelNotFoundError, OptionError, UnknownNameError, WeightdistError
from weightdist.pipeline import FitOptions


def _run(capsys, argv):
    code = cli.main(argv)
    return code, capsys.readouterr().err


def test_an_internal_valueerror_is_a_bug_with_its_traceback(monkeypatch, capsys):
    def broken(args):
        raise ValueError("operands could not be broadcast together")  # what a numpy bug looks like

    monkeypatch.setattr(cli, "cmd_models", broken)
    code, err = _run(capsys, ["models"])
    assert code == cli.EXIT_BUG == 1
    assert "Traceback (most recent call last)" in err and "ValueError: operands could not be broadcast" in err
    assert "internal error" in err and "please report it" in err and "weightdist models" in err


def test_a_user_error_is_one_line_and_its_exit_code(monkeypatch, capsys):
    def user_error(args):
        raise OptionError("--min-size must be an integer >= 1, got 0")

    monkeypatch.setattr(cli, "cmd_models", user_error)
    code, err = _run(capsys, ["models"])
    assert code == 2 and err == "weightdist: error: --min-size must be an integer >= 1, got 0\n"


@pytest.mark.parametrize("argv, message", [
    (["fit", "--seed", "-1"], "seed must be an integer >= 0, got -1"),
    (["fit", "--min-size", "0"], "min_size must be an integer >= 1, got 0"),
    (["fit", "--max-per-layer", "3"], "max_per_layer must be an integer >= 8, got 3"),
    (["fit", "--kinds", "conv,bogus"], "kinds: unknown kind(s) bogus"),
    (["fit", "--include", "("], "include: "),  # wording owned by the pattern compiler (re2)
    (["fit", "--workers", "0"], "--workers must be an integer >= 1, got 0"),
    (["fit", "--families", "gausian"], "families: unknown distribution family 'gausian'; did you mean gaussian"),
])
def test_options_are_validated_once_with_one_line(capsys, tmp_path, argv, message):
    code, err = _run(capsys, [*argv, "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_unknown_names_raise_one_type_everywhere():
    from weightdist.core.families import get_family
    from weightdist.sources import load_model

    with pytest.raises(UnknownNameError) as family:
        get_family("laplce")
    with pytest.raises(UnknownNameError) as model:
        load_model("resnet5")
    assert isinstance(model.value, ModelNotFoundError) and isinstance(model.value, WeightdistError)
    assert isinstance(family.value, KeyError)  # registry lookups stay KeyErrors for library callers
    assert str(family.value).startswith("families: unknown distribution family 'laplce'")  # not KeyError's quoted repr


def test_fit_options_is_the_one_validator():
    with pytest.raises(OptionError, match="n_boot must be an integer >= 0"):
        FitOptions(n_boot=-1)
    with pytest.raises(OptionError, match="seed must be an integer"):
        FitOptions(seed=1.5)  # type: ignore[arg-type]
    assert FitOptions(kinds="conv,linear").kinds == ("conv", "linear")  # normalised by extract's own parser


@pytest.mark.parametrize("knob, value", [("max_per_layer", 5), ("min_size", 0), ("seed", -1), ("max_tensor_bytes", 4)])
def test_extraction_checks_its_knobs_by_the_same_rules_as_fit_options(knob, value):
    from weightdist.sources.extract import extract_layers, iter_layers

    with pytest.raises(OptionError) as from_options:
        FitOptions(**{knob: value})
    model = {"w.weight": torch.randn(16, 16)}
    call = (lambda: extract_layers(model, **{knob: value})) if knob != "max_tensor_bytes" else \
        (lambda: list(iter_layers(model, max_tensor_bytes=value)))
    with pytest.raises(OptionError) as from_extraction:
        call()
    assert str(from_extraction.value) == str(from_options.value)


def test_every_unknown_name_is_an_unknown_name_error():
    from weightdist.data import dataset_dir
    from weightdist.engines import get_engine
    from weightdist.sources.extract import read_layer
    from weightdist.vae.model import VAE
    from weightdist.vae.plan import Plan

    lookups = {
        "engine": lambda: get_engine("rey", 1),
        "tensor": lambda: read_layer({"w.weight": torch.randn(4, 4)}, "w.weigth"),
        "prior (model)": lambda: VAE("gausian", 2),
        "prior (plan)": lambda: Plan(priors=("gausian",)),
        "dataset": lambda: dataset_dir("fashion-mnits"),
    }
    for what, lookup in lookups.items():
        with pytest.raises(UnknownNameError) as caught:
            lookup()
        assert "unknown" in str(caught.value) and "\n" not in str(caught.value), what


def test_bad_argument_types_and_empty_names_are_one_line(capsys, tmp_path):
    for argv, expected in ((["fit", "--workers", "abc"], "invalid int value: 'abc'"),
                           (["fit", "--max-tensor-bytes", "4X"], "is not a size"),
                           (["fit", ""], "the model name is empty"),
                           (["fit", "--out", ""], "--out is empty"),
                           (["fit", "--families", ",", "--out", str(tmp_path / "r")], "no family given")):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse's own errors leave through SystemExit, with our one line
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and expected in err and err.count("\n") == 1, (argv, err)
    assert list(tmp_path.iterdir()) == []


def test_compare_never_replaces_an_input_report(tmp_path, capsys):
    report = tmp_path / "fitted"
    assert cli.main(["fit", "resnet20_fashionmnist", "--include", "^conv1", "--out", str(report), "--no-plots", "--quiet"]) == 0
    before = sorted(p.name for p in report.iterdir())
    assert cli.main(["compare", str(report), "--out", str(report)]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert cli.main(["compare", str(report), "--out", str(tmp_path)]) == 2  # nor the folder holding it
    assert sorted(p.name for p in report.iterdir()) == before and "layers.csv" in before


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "weightdist", "fit", "resnet20_fashionmnist", "--bootstrap", "200",
                             "--out", str(out), "--no-plots", "--quiet", "--workers", "2"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".weightdist-staging") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)  # until the run is under way,
    time.sleep(2.0)  # and past forking its workers (a signal inside Python's at-fork hooks is lost, as Ctrl-C's is)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # no staging folder, no lock, no half-written report
