"""The README's bare command leaves a checkout clean (issue 13).

A fresh clone is simulated from the working tree (tracked files plus new, not-ignored ones, so
uncommitted work is tested too): committed to a throwaway repository, the bare `weightdist fit`
run inside it with its own copy of the package, and `git status` must then show nothing: the
committed report is byte for byte what the bare command writes.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _checkout_files() -> list[str]:
    out = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


@pytest.mark.slow
def test_bare_command_leaves_a_fresh_checkout_clean(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of the project")
    clone = tmp_path / "clone"
    for rel in _checkout_files():
        dest = clone / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    assert (clone / "reports" / "resnet20_fashionmnist" / "report.md").is_file(), "the committed default report is missing"
    _git("init", "-q", cwd=clone)
    _git("add", "-A", cwd=clone)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "snapshot", cwd=clone)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(MPLBACKEND="Agg", PYTHONPATH=str(clone))  # the clone's own package, as a fresh checkout would run it
    run = subprocess.run([sys.executable, "-m", "weightdist", "fit", "--quiet"], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-2000:]
    status = _git("status", "--porcelain", "--untracked-files=all", cwd=clone)
    assert status == "", "the bare command changed tracked files:\n" + status[:2000]
