"""Reports are written atomically, reproducibly, and never by two runs at once."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from weightdist.stores import atomic
from weightdist.cli import main
from weightdist.errors import OutputError

FAST = ["--families", "gaussian,laplace", "--quiet"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_input_same_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    argv = ["fit", "--no-plots", "--max-per-layer", "500", "--seed", "3", "--bootstrap", "5", "--bootstrap-max-n", "100", *FAST]
    assert main([*argv, "--out", str(a)]) == 0
    assert main([*argv, "--out", str(b)]) == 0
    assert (a / "layers.csv").read_bytes() == (b / "layers.csv").read_bytes()
    ja, jb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert "generated_at" not in ja and "timing" not in ja  # nothing volatile in a tracked file (issue 13)
    ja.pop("command"), jb.pop("command")
    assert ja == jb
    assert ja["options"]["seed"] == 3 and ja["options"]["max_per_layer"] == 500
    assert ja["subsampled_layers"] > 0
    assert f"**Subsampled:** {ja['subsampled_layers']} layers larger than 500 weights" in (a / "report.md").read_text()


def test_different_seed_changes_subsample(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["fit", "--no-plots", "--max-per-layer", "200", "--seed", "1", "--out", str(a), *FAST]) == 0
    assert main(["fit", "--no-plots", "--max-per-layer", "200", "--seed", "2", "--out", str(b), *FAST]) == 0
    assert (a / "layers.csv").read_bytes() != (b / "layers.csv").read_bytes()


def test_output_under_a_regular_file_fails_before_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["fit", "--out", str(blocker / "report"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and err.count("\n") == 1


def test_unwritable_output_is_refused(tmp_path, monkeypatch):
    # Tests run as root, where permissions never stop a write: simulate a read-only parent.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(OutputError, match="no write permission"):
        atomic.check_writable_dir(tmp_path / "report")


def test_second_concurrent_run_refuses(tmp_path, capsys):
    out = tmp_path / "report"
    fd = os.open(atomic.lock_path(out), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another run holds the folder
    try:
        assert main(["fit", "--no-plots", "--out", str(out), *FAST]) == 2
    finally:
        os.close(fd)
    assert "another weightdist run is writing" in capsys.readouterr().err
    assert not out.exists()


def test_failure_inside_stage_keeps_previous_report(tmp_path):
    out = tmp_path / "report"
    with atomic.staged_dir(out) as stage:
        (stage / "layers.csv").write_text("complete")
        (stage / "report.md").write_text("# weightdist test\n")
    with pytest.raises(RuntimeError):
        with atomic.staged_dir(out) as stage:
            (stage / "layers.csv").write_text("half")
            raise RuntimeError("crash mid-run")
    assert (out / "layers.csv").read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


def test_kill_between_renames_is_recovered(tmp_path):
    out = tmp_path / "report"
    old = atomic.old_path(out)  # a run killed between the two renames of the fallback swap
    old.mkdir()
    (old / "a.txt").write_text("previous")
    (old / atomic.MANIFEST).write_bytes(atomic.manifest_bytes(old))
    with atomic.staged_dir(out) as stage:  # the next run restores, then replaces
        assert (out / "a.txt").read_text() == "previous"
        (stage / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new" and not old.exists()


def test_kill_mid_run_leaves_previous_report(tmp_path):
    out = tmp_path / "report"
    assert main(["fit", "--out", str(out), "--plot-layers", "1", *FAST]) == 0
    before = snapshot(out)
    proc = subprocess.Popen([sys.executable, "-m", "weightdist", "fit", "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        staging = list(atomic.staging_path(out).glob("plots/*.png"))
        if staging:  # the run is mid-way: some plots written, report not yet swapped in
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    workers = _children(proc.pid)  # its layer-fitting processes (forked)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert snapshot(out) == before
    deadline = time.time() + 10  # orphaned workers notice (they poll twice a second) and exit, not wait forever
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert workers and not any(_alive(pid) for pid in workers)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def test_a_users_own_folder_is_never_replaced(tmp_path, capsys):
    # A report replaces its folder whole: a folder weightdist did not write must be refused, untouched.
    victim = tmp_path / "thesis"
    victim.mkdir()
    (victim / "chapter1.tex").write_text("years of work")
    assert main(["fit", "--out", str(victim), "--no-plots", *FAST]) == 2
    err = capsys.readouterr().err
    assert "holds files weightdist did not write" in err and err.count("\n") == 1
    assert snapshot(victim) == {"chapter1.tex": b"years of work"}


def test_the_current_folder_is_refused_as_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--out", ".", "--no-plots", *FAST]) == 2
    assert "choose a new subfolder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_previous_report_and_an_empty_folder_are_replaced(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["fit", "--out", str(empty), "--no-plots", *FAST]) == 0
    (empty / "summary.json").unlink()  # so the rewrite is visible (the same run writes the same bytes)
    assert main(["fit", "--out", str(empty), "--no-plots", *FAST]) == 0  # a report weightdist wrote: replaced
    assert (empty / "summary.json").is_file()
    # A user's own file put into a report folder makes it theirs: refused, the file kept.
    (empty / "notes.txt").write_text("mine")
    assert main(["fit", "--out", str(empty), "--no-plots", *FAST]) == 2
    assert "holds files weightdist did not write" in capsys.readouterr().err and (empty / "notes.txt").is_file()


def test_a_downloaded_model_folder_is_not_taken_for_a_checkpoint(tmp_path, capsys):
    # config.json + model.safetensors is also every Hugging Face model's layout.
    hf = tmp_path / "my-bert"
    hf.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (hf / name).write_text("{}")
    assert main(["fit", "--out", str(hf), "--no-plots", *FAST]) == 2
    assert sorted(p.name for p in hf.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    (hf / "tokenizer.json").unlink()  # even with exactly the two names, its config.json is not ours
    assert not atomic.is_weightdist_output(hf)


def test_an_existing_file_as_out_is_refused_before_work(tmp_path, capsys):
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("years of work")
    with pytest.raises(OutputError, match="it is a file, not a folder"):
        atomic.check_writable_dir(thesis)
    assert thesis.read_text() == "years of work"


def test_a_read_error_during_the_work_is_not_called_an_output_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        with atomic.staged_dir(tmp_path / "out"):
            raise FileNotFoundError("shard vanished while reading")
    assert not isinstance(info.value, OutputError)
    assert not (tmp_path / "out").exists()


def test_a_failed_write_is_one_output_error_naming_the_file(tmp_path, monkeypatch):
    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError, match=r"cannot write .*a\.csv: No space left on device"):
        atomic.write_bytes(tmp_path / "a.csv", b"x")
    assert list(tmp_path.iterdir()) == []


# --- concurrency, kills, and whose folder it is (issue 14) ---------------------------------------------

# A writer that builds a report of FILES files, each holding its own id, slowly enough to overlap others.
WRITER = r"""
import os, sys, time
from pathlib import Path
from weightdist.stores import atomic
from weightdist.errors import WeightdistError
out, ident, files, pause, exchange = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
if not exchange:
    atomic._exchange = lambda a, b: False  # the two-rename fallback
try:
    with atomic.staged_dir(out) as stage:
        (stage / "plots").mkdir()
        for i in range(files):
            atomic.write_text(stage / "plots" / f"{i}.png", ident)
            time.sleep(pause)
        atomic.write_text(stage / "report.md", "# weightdist test " + ident + "\n")
except WeightdistError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
"""
FILES = 6


def _writer(out, ident: str, pause: float = 0.01, exchange: bool = True) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(out), ident, str(FILES), str(pause), "1" if exchange else "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _complete_report_id(out: Path) -> str:
    """The one writer whose complete report ``out`` holds (fails on a mix, a missing file or a stray one)."""
    assert atomic.foreign_entry(out) is None, sorted(p.name for p in out.rglob("*"))
    ids = {(out / "plots" / f"{i}.png").read_text() for i in range(FILES)}
    assert len(ids) == 1, ids
    ident = ids.pop()
    assert (out / "report.md").read_text() == f"# weightdist test {ident}\n"
    return ident


def _leftovers(parent: Path) -> list[str]:
    """Working names left beside the target (a lock file is removed by the run that held it)."""
    return sorted(p.name for p in parent.iterdir() if p.name.endswith((".weightdist-staging", ".weightdist-old", ".weightdist-lock")))


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_concurrent_writers_leave_exactly_one_complete_report(tmp_path, exchange):
    (tmp_path / "link").symlink_to(tmp_path)
    spellings = [tmp_path / "d", tmp_path / "d" / ".." / "d", tmp_path / "link" / "d", tmp_path / "." / "d"]
    procs = [_writer(out, f"w{i}", exchange=exchange) for i, out in enumerate(spellings * 2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    winners = [code for code, _ in results if code == 0]
    assert winners and all(code in (0, 2) for code, _ in results), results
    assert all("another weightdist run is writing" in err for code, err in results if code == 2), results
    assert _complete_report_id(tmp_path / "d") in {f"w{i}" for i in range(len(procs))}
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_sigkill_at_random_points_leaves_one_complete_report(tmp_path, exchange, iterations: int = 6):
    _sigkill_loop(tmp_path, exchange, iterations)


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_sigkill_at_random_points_long(tmp_path, exchange):
    _sigkill_loop(tmp_path, exchange, 60)


def _sigkill_loop(tmp_path: Path, exchange: bool, iterations: int) -> None:
    import numpy as np

    rng = np.random.default_rng(14)
    out = tmp_path / "d"
    assert _writer(out, "first", pause=0).wait(timeout=60) == 0
    previous = "first"
    for i in range(iterations):
        proc = _writer(out, f"run{i}", pause=0.002, exchange=exchange)
        time.sleep(float(rng.uniform(0.2, 0.6)))  # interpreter start-up is ~0.3 s: kills land before, during and after the swap
        proc.send_signal(signal.SIGKILL)
        finished = proc.wait() == 0
        if exchange:  # the target is never missing, not even before recovery
            assert _complete_report_id(out) in (previous, f"run{i}")
        with atomic.output_lock(out):
            atomic.recover_interrupted(out)
        now = _complete_report_id(out)
        assert now in (previous, f"run{i}") and (not finished or now == f"run{i}")
        assert _leftovers(tmp_path) == []
        previous = now


def test_recovery_touches_only_its_own_exact_names(tmp_path):
    # --out 'd/*' once made recovery glob '.*.old-*' and delete other runs' working folders.
    (tmp_path / "d").mkdir()
    others = [tmp_path / "d" / ".x.weightdist-staging", tmp_path / "d" / ".x.weightdist-old", tmp_path / "d" / ".y.staging-1"]
    for folder in others:
        folder.mkdir()
        (folder / "f").write_text("someone else's")
    with atomic.staged_dir(tmp_path / "d" / "*") as stage:
        (stage / "report.md").write_text("# weightdist test\n")
    assert all((folder / "f").read_text() == "someone else's" for folder in others)
    assert (tmp_path / "d" / "*" / "report.md").is_file()


def test_working_names_are_refused_as_out(tmp_path):
    with pytest.raises(OutputError, match="weightdist's own working names"):
        atomic.check_writable_dir(tmp_path / ".x.weightdist-staging")


def test_a_symlink_planted_at_a_working_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data").write_text("keep")
    (tmp_path / ".d.weightdist-old").symlink_to(victim)
    (tmp_path / ".d.weightdist-staging").symlink_to(victim)
    with pytest.raises(OutputError):  # staging cannot be created over the planted link: refused, nothing followed
        with atomic.staged_dir(tmp_path / "d"):
            pass
    assert (victim / "data").read_text() == "keep"


def test_manifest_lists_what_weightdist_wrote(tmp_path):
    out = tmp_path / "r"
    with atomic.staged_dir(out) as stage:
        (stage / "plots").mkdir()
        (stage / "plots" / "a.png").write_bytes(b"png")
        (stage / "report.md").write_text("# weightdist test\n")
    manifest = json.loads((out / atomic.MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["plots/a.png", "report.md"]
    import hashlib

    assert manifest["files"]["plots/a.png"] == {"bytes": 3, "sha256": hashlib.sha256(b"png").hexdigest()}
    assert atomic.is_weightdist_output(out)
    (out / "report.md").write_text("# weightdist test\nmy notes\n")  # edited by its user: theirs now
    assert atomic.foreign_entry(out) == "report.md"


def test_compare_into_a_report_keeps_a_users_file_in_plots(tmp_path, capsys):
    report = tmp_path / "r"
    assert main(["fit", "--out", str(report), "--plot-layers", "1", *FAST]) == 0
    out = tmp_path / "cmp"
    assert main(["compare", str(report), "--out", str(out)]) == 0
    (out / "plots" / "my_figure.png").write_bytes(b"mine")
    assert main(["compare", str(report), "--out", str(out)]) == 2
    assert "'plots/my_figure.png'" in capsys.readouterr().err
    assert (out / "plots" / "my_figure.png").read_bytes() == b"mine"


def test_legacy_report_without_manifest(tmp_path):
    """Reports written before manifests: replaceable, unless a file in a subfolder is not one report.md links to."""
    legacy = tmp_path / "old"
    (legacy / "plots").mkdir(parents=True)
    (legacy / "report.md").write_text("# weightdist fit: m\n\n![x](plots/000_a.png)\n")
    (legacy / "layers.csv").write_text("layer\n")
    (legacy / "plots" / "000_a.png").write_bytes(b"png")
    assert atomic.is_weightdist_output(legacy)
    (legacy / "plots" / "mine.png").write_bytes(b"png")
    assert atomic.foreign_entry(legacy) == "plots/mine.png"


@pytest.mark.slow
def test_three_concurrent_fit_runs_through_the_cli_leave_one_report(tmp_path):
    """The reported failure: three `fit` runs, one spelled d/../d, once left no report at all."""
    (tmp_path / "x").mkdir()
    outs = [tmp_path / "d", tmp_path / "x" / ".." / "d", tmp_path / "d"]
    procs = [subprocess.Popen([sys.executable, "-m", "weightdist", "fit", "--out", str(out), "--no-plots", "--max-per-layer", "300",
                               "--seed", str(i), *FAST], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i, out in enumerate(outs)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert any(code == 0 for code, _ in results) and all(code in (0, 2) for code, _ in results), results
    assert atomic.foreign_entry(tmp_path / "d") is None
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["options"]["seed"] in (0, 1, 2)
    assert _leftovers(tmp_path) == []
