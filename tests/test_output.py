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
    for volatile in ("generated_at", "timing", "command"):
        ja.pop(volatile), jb.pop(volatile)
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
    fd = os.open(tmp_path / ".report.lock", os.O_RDWR | os.O_CREAT)
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
        (stage / "report.md").write_text("# weightdist test\n")  # a report weightdist wrote: ours to replace
    with pytest.raises(RuntimeError):
        with atomic.staged_dir(out) as stage:
            (stage / "layers.csv").write_text("half")
            raise RuntimeError("crash mid-run")
    assert (out / "layers.csv").read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


def test_kill_between_renames_is_recovered(tmp_path):
    out = tmp_path / "report"
    old = tmp_path / ".report.old-abc"
    old.mkdir()
    (old / "a.txt").write_text("previous")
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
        staging = list(tmp_path.glob(".report.staging-*/plots/*.png"))
        if staging:  # the run is mid-way: some plots written, report not yet swapped in
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert snapshot(out) == before


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
    before = (empty / "summary.json").read_text()
    assert main(["fit", "--out", str(empty), "--no-plots", *FAST]) == 0  # a report weightdist wrote: replaced
    assert (empty / "summary.json").read_text() != before  # (its timestamp and timing changed)
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
