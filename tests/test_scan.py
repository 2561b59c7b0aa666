"""`weightdist scan` / `query`: the store against `weightdist fit`, resuming after kills, dying workers, bad input.

Models are small .safetensors files written here (Student-t values from a seeded Generator) plus
the embedded resnet20_fashionmnist; every number is checked against `fit_model` on the same model.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import weightdist.scan as scan_module
from weightdist.api import fit_model
from weightdist.cli import main
from weightdist.engines import WorkerDied, get_engine
from weightdist.pipeline import FitOptions
from weightdist.scan import ScanModel, read_zoo, scan
from weightdist.stores.parquet import ParquetStore

FAMILIES = ("gaussian", "laplace", "student_t", "gennorm")


def write_model(path: Path, n_layers: int, shape=(64, 96), seed: int = 0) -> Path:
    """A bare checkpoint of heavy-tailed linear layers and their (unselected) biases."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for i in range(n_layers):
        tensors[f"blocks.{i}.fc.weight"] = torch.from_numpy((0.05 * rng.standard_t(4 + i % 3, size=shape)).astype(np.float32))
        tensors[f"blocks.{i}.fc.bias"] = torch.zeros(shape[0])
    save_file(tensors, str(path))
    return path


def _plain(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def assert_same_rows(stored: pd.DataFrame, fitted: pd.DataFrame) -> None:
    """Every layers.csv column of every (layer, family) row identical, floats bit for bit."""
    assert len(stored) == len(fitted)
    a = stored.sort_values(["layer", "family"]).reset_index(drop=True)
    b = fitted.sort_values(["layer", "family"]).reset_index(drop=True)
    for column in fitted.columns:
        assert column in a, column
        assert [_plain(v) for v in a[column].tolist()] == [_plain(v) for v in b[column].tolist()], column


def fit_reference(spec: str, **options) -> pd.DataFrame:
    """`fit_model` as scan workers run it: one BLAS thread, as every engine's workers have (Ray and Dask set
    OMP_NUM_THREADS=1 themselves). The estimators' sums do not depend on it (kernels.dot keeps each BLAS call
    on one thread; test_engine checks that), so this pins only what other BLAS calls might round differently."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return fit_model(spec, **options)


def stored_tables(store: Path) -> dict[str, pd.DataFrame]:
    return {m.spec: m.table for m in ParquetStore.open(store).read_models()}


@pytest.fixture(scope="module")
def local1():
    """One started local engine per worker count, shared by the tests (starting workers costs seconds)."""
    with get_engine("local", 1) as engine:
        yield engine


@pytest.fixture(scope="module")
def local2():
    with get_engine("local", 2) as engine:
        yield engine


@pytest.fixture
def zoo(tmp_path) -> list[Path]:
    return [write_model(tmp_path / "a.safetensors", 5, seed=1), write_model(tmp_path / "b.safetensors", 3, shape=(32, 3, 3, 3), seed=2)]


def test_scan_equals_fit_and_does_not_depend_on_workers(zoo, tmp_path, local1, local2):
    options = FitOptions(families=("gaussian", "laplace", "student_t"), n_boot=3, boot_max_n=64)
    one = scan([ScanModel(str(p)) for p in zoo], tmp_path / "one", options=options, engine=local1, progress=False)
    two = scan([ScanModel(str(p)) for p in zoo], tmp_path / "two", options=options, engine=local2, progress=False)
    assert one.ok and two.ok and one.units == 8 and one.run_id == two.run_id
    tables_one, tables_two = stored_tables(tmp_path / "one"), stored_tables(tmp_path / "two")
    for path in zoo:
        fitted = fit_reference(str(path), families=options.families, n_boot=3, boot_max_n=64)
        assert fitted["ks_pvalue_corrected"].notna().all()  # the seeded bootstrap ran, so seeds are really compared
        assert_same_rows(tables_one[str(path)], fitted)
        assert_same_rows(tables_two[str(path)], fitted)


def test_rerun_does_nothing_and_other_options_get_their_own_run(zoo, tmp_path, local2):
    store = tmp_path / "store"
    models = [ScanModel(str(zoo[0]))]
    first = scan(models, store, options=FitOptions(families=("gaussian", "laplace")), engine=local2, progress=False)
    again = scan(models, store, options=FitOptions(families=("gaussian", "laplace")), engine=local2, progress=False)
    other = scan(models, store, options=FitOptions(families=("gaussian",)), engine=local2, progress=False)
    assert again.skipped_units == again.units == 5 and again.run_id == first.run_id
    assert other.run_id != first.run_id and other.skipped_units == 0
    counts = ParquetStore.open(store).query("SELECT run_id, count(*) AS n, count(DISTINCT family) AS f FROM layers GROUP BY run_id")
    assert dict(zip(counts["run_id"], counts["n"])) == {first.run_id: 10, other.run_id: 5}
    runs = ParquetStore.open(store).query("SELECT run_id FROM runs")
    assert set(runs["run_id"]) == {first.run_id, other.run_id}


def test_failed_model_is_recorded_and_the_scan_goes_on(zoo, tmp_path, capsys, local1, monkeypatch):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    monkeypatch.setattr("weightdist.engines.get_engine", lambda *args: local1)  # the CLI path, on the started pool,
    monkeypatch.setattr(local1, "start", lambda: None)  # which the command must not restart or stop
    monkeypatch.setattr(local1, "close", lambda: None)
    code = main(["scan", str(zoo[1]), str(broken), "--store", str(tmp_path / "s"), "--workers", "1", "--quiet",
                 "--families", "gaussian"])
    err = capsys.readouterr().err
    assert code == 1
    assert "1 models did not open" in err and "rerun the same scan" in err and len(err.strip().splitlines()) == 1
    models = ParquetStore.open(tmp_path / "s").query("SELECT spec, status, error FROM models ORDER BY spec")
    status = dict(zip(models["spec"], models["status"]))
    assert status == {str(broken): "failed", str(zoo[1]): "ok"}
    assert models.loc[models["spec"] == str(broken), "error"].iloc[0]  # the one-line reason


def _die_on_second_layer(unit):
    """A unit function whose worker dies on one layer (pickled by reference into the workers)."""
    with open(Path(unit.task.target).parent / "attempts.txt", "a") as f:
        f.write(unit.layer.name + "\n")
    if unit.layer.name == "blocks.1.fc.weight":
        os._exit(7)
    return scan_module.fit_unit(unit)


@pytest.mark.slow  # restarts worker processes twice
def test_a_worker_that_dies_is_retried_once_then_recorded(zoo, tmp_path, monkeypatch, local2):
    attempts = tmp_path / "attempts.txt"
    monkeypatch.setattr(scan_module, "fit_unit", _die_on_second_layer)
    summary = scan([ScanModel(str(zoo[0]))], tmp_path / "s", options=FitOptions(families=("gaussian",)), engine=local2, progress=False)
    assert not summary.ok and summary.failed_units == 1 and summary.units == 5
    tried = attempts.read_text().split()
    assert tried.count("blocks.1.fc.weight") == 2  # once, and once more
    store = ParquetStore.open(tmp_path / "s")
    layers = store.query("SELECT DISTINCT layer FROM layers")["layer"]
    assert sorted(layers) == [f"blocks.{i}.fc.weight" for i in (0, 2, 3, 4)]  # its neighbours were not lost
    model = store.query("SELECT status, error, failed_units FROM models").iloc[0]
    assert model["status"] == "1 units failed" and "blocks.1.fc.weight" in model["error"] and "died" in model["error"]
    # The rerun retries only the failed unit (no fault now) and completes the model.
    monkeypatch.undo()
    again = scan([ScanModel(str(zoo[0]))], tmp_path / "s", options=FitOptions(families=("gaussian",)), engine=local2, progress=False)
    assert again.ok and again.skipped_units == 4
    assert_same_rows(stored_tables(tmp_path / "s")[str(zoo[0])], fit_reference(str(zoo[0]), families=("gaussian",)))


def _exit_on(item):
    if item == "die":
        os._exit(3)
    return item * 2


@pytest.mark.slow  # restarts worker processes twice
def test_engine_retries_a_dying_unit_once(local2):
    results = dict(local2.map_unordered(_exit_on, ["a", "b", "die", "c"]))
    assert results["a"] == "aa" and results["c"] == "cc" and isinstance(results["die"], WorkerDied)


@pytest.mark.slow
def test_driver_killed_mid_scan_resumes_without_duplicates(tmp_path):
    model = write_model(tmp_path / "m.safetensors", 16, shape=(300, 400), seed=3)
    store = tmp_path / "store"
    command = [sys.executable, "-m", "weightdist", "scan", str(model), "--store", str(store), "--workers", "1", "--quiet"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = lambda: list(store.glob("layers/*/*/*.parquet"))  # noqa: E731
    deadline = time.monotonic() + 240
    while len(parts()) < 3 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, "the scan finished before it could be killed; make the model bigger"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    done_before = len(parts())
    assert 3 <= done_before < 16
    session = lambda: subprocess.run(["pgrep", "-a", "-s", str(driver.pid)], capture_output=True, text=True).stdout  # noqa: E731
    deadline = time.monotonic() + 60  # its workers notice the driver is gone (polling twice a second) and exit
    while session() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session() == "", f"processes outlived their killed driver: {session()}"
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({done_before} from an earlier run)" in rerun.stdout  # only the missing units ran
    counts = ParquetStore.open(store).query("SELECT count(*) AS rows, count(DISTINCT (layer, family)) AS pairs FROM layers").iloc[0]
    assert counts["rows"] == counts["pairs"] == 16 * len(FAMILIES)
    assert_same_rows(stored_tables(store)[str(model)], fit_reference(str(model)))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ray", "dask"])
def test_ray_and_dask_give_the_local_numbers_and_fits(engine, zoo, tmp_path):
    pytest.importorskip(engine if engine == "ray" else "distributed")
    models = [ScanModel("resnet20_fashionmnist"), ScanModel(str(zoo[0]))]
    options = FitOptions(n_boot=2, boot_max_n=64)
    local = scan(models, tmp_path / "local", options=options, workers=2, progress=False)
    other = scan(models, tmp_path / engine, options=options, engine=engine, workers=2, progress=False)
    assert local.ok and other.ok and other.units == local.units == 25
    local_tables, other_tables = stored_tables(tmp_path / "local"), stored_tables(tmp_path / engine)
    for model in models:
        fitted = fit_reference(model.spec, n_boot=2, boot_max_n=64)
        assert_same_rows(other_tables[model.spec], fitted)
        assert_same_rows(local_tables[model.spec], fitted)
    info = ParquetStore.open(tmp_path / engine).query("SELECT training_data, sha256 FROM models WHERE spec = 'resnet20_fashionmnist'").iloc[0]
    assert info["training_data"] == "Fashion-MNIST" and len(info["sha256"]) == 64


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ray", "dask"])
def test_ray_and_dask_retry_a_dying_unit_once(engine, monkeypatch):
    pytest.importorskip(engine if engine == "ray" else "distributed")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    with get_engine(engine, 2) as runner:
        results = dict(runner.map_unordered(_exit_on, ["a", "b", "die", "c"]))
    assert results["a"] == "aa" and results["c"] == "cc" and isinstance(results["die"], WorkerDied)


def test_bad_from_line_names_file_and_line(tmp_path, capsys):
    zoo_file = tmp_path / "zoo.txt"
    zoo_file.write_text("# a zoo\nresnet20_fashionmnist\n\nresnet20_cifar10 --init  # its init twin\nmobilenet_v2 --bogus\n")
    code = main(["scan", "--from", str(zoo_file), "--store", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and f"{zoo_file}:5:" in err and "--bogus" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()  # refused before anything was written
    zoo_file.write_text("resnet20_fashionmnist\n'unclosed quote\n")
    assert main(["scan", "--from", str(zoo_file), "--store", str(tmp_path / "s")]) == 2
    assert f"{zoo_file}:2:" in capsys.readouterr().err
    zoo_file.write_text("resnet20_fashionmnist\nresnet20_cifar10 --init  # its init twin\n")
    assert read_zoo(zoo_file) == [ScanModel("resnet20_fashionmnist"), ScanModel("resnet20_cifar10", init=True)]


def test_a_folder_that_is_not_a_store_is_refused(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my own file")
    assert main(["query", str(folder), "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert "not a weightdist store" in err and len(err.strip().splitlines()) == 1
    assert main(["scan", "resnet20_fashionmnist", "--store", str(folder), "--quiet"]) == 2
    assert "not a weightdist store" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # untouched
    assert main(["query", str(folder / "notes.txt"), "SELECT 1"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_query_prints_rows_and_bad_sql_is_one_line(zoo, tmp_path, capsys, local1):
    scan([ScanModel(str(zoo[1]))], tmp_path / "s", options=FitOptions(families=("gaussian", "laplace")), engine=local1, progress=False)
    capsys.readouterr()
    assert main(["query", str(tmp_path / "s"), "SELECT layer, family FROM layers WHERE is_best ORDER BY layer", "--csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "layer,family" and len(out) == 4 and out[1].startswith("blocks.0.fc.weight,")
    assert main(["query", str(tmp_path / "s"), "SELECT nonsense FROM layers"]) == 2
    err = capsys.readouterr().err
    assert "query failed" in err and len(err.strip().splitlines()) == 1


def test_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(Exception) as info:
        get_engine("ray", 1).start()
    assert "pip install 'weightdist[ray]'" in str(info.value)


def test_findings_and_compare_read_a_store(zoo, tmp_path, local1):
    from weightdist.analyses.compare import compare_report
    from weightdist.reporting.findings import findings_report

    store = tmp_path / "s"
    scan([ScanModel(str(p)) for p in zoo], store, engine=local1, progress=False)
    out = compare_report([str(store)], tmp_path / "cmp")
    compared = pd.read_csv(out / "compare.csv")
    assert sorted(compared["model"]) == ["a.safetensors", "b.safetensors"]
    layers = {m.model: m.table for m in ParquetStore.open(store).read_models()}
    for _, row in compared.iterrows():  # the table's numbers are the store's
        table = layers[row["model"]]
        gennorm = table[table["family"] == "gennorm"]
        assert row["layers"] == len(gennorm) and row["beta_median"] == pytest.approx(gennorm["beta"].median(), rel=1e-9)  # CSV keeps 10 digits
    readme = findings_report(store, tmp_path / "README.md").read_text()
    assert "| a.safetensors |" in readme and "| b.safetensors |" in readme
