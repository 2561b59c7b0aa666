"""Issue 14: hostile names reach pages escaped, hostile report folders are refused in one line,
bombs are refused before they cost memory or time, and provenance covers what was read."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from weightdist.cli import main
from weightdist.errors import WeightdistError

FAST = ["--families", "gaussian,laplace", "--quiet", "--no-intervals"]
HOSTILE = [
    "fc.weight\n# Owned heading",
    "a|b|c.weight",
    "<img src=x onerror=alert(1)>.weight",
    "[click](javascript:alert(1)).weight",
    "`code` ``two``.weight",
    "**bold** _em_ ~~gone~~.weight",
    "x$\\undefinedcmd$.weight",  # unescaped, matplotlib's mathtext raised on it while saving the plot
    "../../escape.weight",
    "\u202eRTL\u2028line.weight",
]
LABEL = "<script>alert(1)</script>\n# Label heading | x [l](javascript:alert(2)) `"


def _render(markdown: str) -> str:
    """GitHub-like rendering with raw HTML allowed: the worst case for an injected tag."""
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown)


def _assert_inert(html: str) -> None:
    """No tag but our own: images of our plots, links to our reports; no event handler, no script URL."""
    assert not re.search(r"<(script|iframe|svg|object|embed|style)\b", html, re.IGNORECASE), html
    assert not re.search(r"<[a-z][^>]*\son\w+\s*=", html, re.IGNORECASE), html
    for tag, target in re.findall(r'<(img|a)\b[^>]*?(?:src|href)="([^"]*)"', html):
        assert re.fullmatch(r"[A-Za-z0-9._/%-]+\.(png|md)", target), (tag, target)
    assert "<h1>Owned" not in html and "<h1>Label" not in html and "Owned heading</h" not in html


def _table_rows(html: str, table: int = 0) -> list[list[str]]:
    body = re.findall(r"<tbody>(.*?)</tbody>", html, re.S)[table]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def _hostile_checkpoint(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "hostile.pth"
    torch.save({name: torch.randn(16, 16, generator=g) for name in HOSTILE}, path)
    return path


# --- escaping --------------------------------------------------------------------------------------


def test_hostile_layer_names_and_label_are_inert_in_report_and_plots(tmp_path):
    out = tmp_path / "report"
    assert main(["fit", str(_hostile_checkpoint(tmp_path)), "--out", str(out), "--label", LABEL, *FAST]) == 0
    text = (out / "report.md").read_text()
    html = _render(text)
    _assert_inert(html)
    assert len(re.findall(r"<h1>", html)) == 1  # only our own title
    rows = _table_rows(html)
    assert len(rows) == len(HOSTILE) and len({len(r) for r in rows}) == 1  # no row split or merged by a name
    header_cells = len(re.findall(r"<th[^>]*>", re.findall(r"<thead>(.*?)</thead>", html, re.S)[0]))
    assert len(rows[0]) == header_cells
    shown = [re.sub(r"<[^>]+>", "", r[1]) for r in rows]
    import html as html_lib

    # Each name is shown whole (control characters as spaces), in order.
    assert [html_lib.unescape(s) for s in shown] == [" ".join(re.sub(r"[\x00-\x1f\u2028\u202e]", " ", n).split(" ")).strip() for n in HOSTILE]
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.png", p) for p in plots), plots
    assert len([p for p in plots if p != "overview.png"]) == len(HOSTILE)  # distinct names never share a file
    assert not list(tmp_path.glob("escape*")) and not (out.parent.parent / "escape.weight").exists()


def test_hostile_model_field_is_inert_in_compare_and_findings(tmp_path):
    root = tmp_path / "reports"
    first = root / "good"
    assert main(["fit", "--out", str(first), "--no-plots", "--max-per-layer", "200", *FAST]) == 0
    evil = root / "evil"
    assert main(["fit", "--out", str(evil), "--no-plots", "--max-per-layer", "200", *FAST]) == 0
    summary = json.loads((evil / "summary.json").read_text())
    summary["model"] = LABEL
    (evil / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "cmp"
    assert main(["compare", str(first), str(evil), "--out", str(out)]) == 0
    html = _render((out / "report.md").read_text())
    _assert_inert(html)
    assert len(_table_rows(html)) == 2
    assert main(["findings", str(root)]) == 0
    html = _render((root / "README.md").read_text())
    _assert_inert(html)
    assert len(_table_rows(html)) == 2


def test_escape_functions_against_their_media():
    from weightdist import escape

    assert escape.html_text('<b a="1">&') == "&lt;b a=&quot;1&quot;&gt;&amp;"
    assert escape.html_attr('x" onmouseover="alert(1)') == "x&quot; onmouseover=&quot;alert(1)"
    assert escape.url_path("javascript:alert(1)") == "javascript%3Aalert%281%29"
    assert escape.url_path("my model/report.md") == "my%20model/report.md"
    code = escape.markdown_code("a `b` ``c``")
    assert _render(code).strip() == "<p><code>a `b` ``c``</code></p>"
    assert escape.plot_text("$x$\nnew") == r"\$x\$ new"
    assert escape.safe_filename("..") != ".." and not escape.safe_filename("../x").startswith(".")
    assert escape.safe_filename("conv1.weight") == "conv1.weight"  # names that need nothing keep their look
    assert escape.safe_filename("a/b") != escape.safe_filename("a_b")
    assert len(escape.safe_filename("é" * 300).encode()) <= 120
    for s in HOSTILE + [LABEL]:
        assert "\n" not in escape.markdown_cell(s) and _render(f"| h |\n|---|\n| {escape.markdown_cell(s)} |").count("<td>") == 1


# --- report folders given to compare and findings --------------------------------------------------


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hardening") / "report"
    assert main(["fit", "--out", str(out), "--no-plots", "--max-per-layer", "200", *FAST]) == 0
    return out


def _copy(report: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(report, dest)
    return dest


def _edit_csv(folder: Path, edit) -> Path:
    table = pd.read_csv(folder / "layers.csv", keep_default_na=False, dtype=str)
    edit(table)
    table.to_csv(folder / "layers.csv", index=False)
    return folder


BROKEN_FOLDERS = [
    ("options-is-a-string", lambda f: (f / "summary.json").write_text(json.dumps({"model": "m", "options": "init"})),
     r"summary\.json: 'options' is not the object weightdist writes"),
    ("summary-nested-50k-deep", lambda f: (f / "summary.json").write_text('{"options": ' + "[" * 50_000 + "]" * 50_000 + "}"),
     r"summary\.json: unreadable summary \(JSON nested too deeply"),
    ("model-is-a-dict", lambda f: (f / "summary.json").write_text(json.dumps({"model": {"a": 1}})), r"'model' is .* not a model name"),
    ("text-in-n", lambda f: _edit_csv(f, lambda t: t.__setitem__("n", "many")), r"layers\.csv: column 'n' holds text \('many'"),
    ("text-in-beta", lambda f: _edit_csv(f, lambda t: t.__setitem__("beta", "wide")), r"column 'beta' holds text"),
    ("empty-layer-column", lambda f: _edit_csv(f, lambda t: t.__setitem__("layer", "")), r"has an empty 'layer' name"),
    ("no-kind-column", lambda f: _edit_csv(f, lambda t: t.__delitem__("kind")), r"missing column kind"),  # findings only
    ("is-best-not-boolean", lambda f: _edit_csv(f, lambda t: t.__setitem__("is_best", "maybe")), r"column 'is_best' holds 'maybe'"),
    ("layers-csv-is-a-fifo", lambda f: ((f / "layers.csv").unlink(), os.mkfifo(f / "layers.csv")), r"layers\.csv is a pipe \(FIFO\)"),
    ("summary-is-a-symlink-to-dev-zero", lambda f: ((f / "summary.json").unlink(), (f / "summary.json").symlink_to("/dev/zero")),
     r"summary\.json is a symlink"),
    ("summary-is-a-fifo", lambda f: ((f / "summary.json").unlink(), os.mkfifo(f / "summary.json")), r"summary\.json is a pipe"),
    ("layers-csv-is-a-folder", lambda f: ((f / "layers.csv").unlink(), (f / "layers.csv").mkdir()), r"layers\.csv is a folder"),
]


class _Hung(Exception):
    pass


def _alarm(signum, frame):
    raise _Hung("the command blocked or read without end")


BROKEN_RUNS = [(command, case) for command in ("compare", "findings") for case in BROKEN_FOLDERS
               if not (command == "compare" and case[0] == "no-kind-column")]  # compare does not read `kind`


@pytest.mark.parametrize("command, case", BROKEN_RUNS, ids=[f"{c}-{case[0]}" for c, case in BROKEN_RUNS])
def test_broken_report_folder_is_one_line(command, case, report_folder, tmp_path, capsys):
    import signal

    name, breaker, match = case
    root = tmp_path / "reports"
    folder = _copy(report_folder, root / "broken")
    breaker(folder)
    argv = ["compare", str(folder), "--out", str(tmp_path / "cmp")] if command == "compare" else ["findings", str(root)]
    # An alarm, so a hang (a FIFO) or an endless read (/dev/zero) fails the test instead of stalling it.
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        code = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(match, err), err
    assert not (tmp_path / "cmp").exists() and not (root / "README.md").exists()


def test_read_capped_refuses_oversized_file(tmp_path):
    from weightdist.untrusted import UntrustedFileError, read_capped

    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * 1001)
    with pytest.raises(UntrustedFileError, match="1,001 bytes, over the 1,000-byte limit"):
        read_capped(big, 1000)
    assert read_capped(big, 1001) == b"x" * 1001


def test_findings_never_replaces_a_users_readme(report_folder, tmp_path, capsys):
    root = tmp_path / "reports"
    _copy(report_folder, root / "m")
    (root / "README.md").write_text("# My reports\n\nMonths of notes.\n")
    assert main(["findings", str(root)]) == 2
    assert "not written by 'weightdist findings'" in capsys.readouterr().err
    assert (root / "README.md").read_text() == "# My reports\n\nMonths of notes.\n"
    (root / "README.md").unlink()
    assert main(["findings", str(root)]) == 0  # its own README: replaced on every run
    first = (root / "README.md").read_text()
    assert main(["findings", str(root)]) == 0
    assert (root / "README.md").read_text() == first


# --- loaders ---------------------------------------------------------------------------------------


def test_include_runs_in_linear_time_on_a_hostile_name(tmp_path):
    """'^(a+)+$' against 'aaaa…b' backtracks for ages in Python's re; RE2 answers at once."""
    path = tmp_path / "redos.pth"
    torch.save({"a" * 40 + "b": torch.randn(16, 16), "fc.weight": torch.randn(16, 16)}, path)
    proc = subprocess.run([sys.executable, "-m", "weightdist", "fit", str(path), "--include", "^(a+)+$", "--kinds", "linear,other",
                           "--out", str(tmp_path / "r"), *FAST], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no layer of redos.pth was selected" in proc.stderr, proc.stderr


def test_pattern_re2_cannot_take_is_one_line(tmp_path, capsys):
    assert main(["fit", "--include", r"(conv)\1", "--out", str(tmp_path / "r"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a pattern RE2 accepts" in err and "backreferences" in err


def test_negative_seed_is_one_line_without_numpy_text(tmp_path, capsys):
    assert main(["fit", "--seed", "-1", "--out", str(tmp_path / "r"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed" in err
    assert not re.search(r"SeedSequence|expected non-negative|numpy|int\(\)", err), err  # numpy's own words, as once shown


def test_plot_layers_below_zero_is_one_line_and_zero_draws_the_overview_only(tmp_path, capsys):
    for command in (["fit"], ["fit", "--granularity", "channel"]):
        assert main([*command, "--plot-layers", "-2", "--out", str(tmp_path / "neg"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--plot-layers must be an integer >= 0, got -2" in err
        assert not (tmp_path / "neg").exists()
    assert main(["fit", "--plot-layers", "0", "--out", str(tmp_path / "r"), "--quiet", "--include", "layer1"]) == 0
    assert sorted(p.name for p in (tmp_path / "r" / "plots").iterdir()) == ["overview.png"]
    # Channel mode used to read 0 as "the default, 4".
    assert main(["fit", "--granularity", "channel", "--plot-layers", "0", "--out", str(tmp_path / "c"), "--quiet",
                 "--include", "layer1.0", "--families", "gaussian,laplace"]) == 0
    assert not list((tmp_path / "c").rglob("*.png"))
    assert main(["fit", "--granularity", "channel", "--plot-layers", "1", "--out", str(tmp_path / "c1"), "--quiet",
                 "--include", "layer1.0", "--families", "gaussian,laplace"]) == 0
    assert len(list((tmp_path / "c1").rglob("*.png"))) == 1


def test_a_huge_unknown_name_is_shortened_in_its_one_line_error(tmp_path, capsys):
    assert main(["fit", "x" * 5000, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 300 and "… (5000 characters)" in err and "unknown model 'xxx" in err


def test_zero_selected_layers_is_one_line(tmp_path, capsys):
    for argv in (["--kinds", ","], ["--min-size", str(10**12)], ["--exclude", "."]):
        assert main(["fit", "--out", str(tmp_path / "r"), *argv, *FAST]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("no layer" in err), err
    assert not (tmp_path / "r").exists()


def test_names_colliding_after_prefix_stripping_are_both_kept(tmp_path):
    from weightdist.sources.checkpoint import open_weights
    from safetensors.torch import save_file

    a, b = torch.randn(8, 8), torch.randn(8, 8)
    torch.save({"module.fc.weight": a, "fc.weight": b}, tmp_path / "mixed.pth")
    save_file({"module.fc.weight": a, "fc.weight": b}, str(tmp_path / "mixed.safetensors"))
    for name in ("mixed.pth", "mixed.safetensors"):
        tensors = open_weights(tmp_path / name)
        assert sorted(tensors) == ["fc.weight", "module.fc.weight"]
        assert torch.equal(tensors["module.fc.weight"], a) and torch.equal(tensors["fc.weight"], b)
    torch.save({"module.fc.weight": a, "module.conv.weight": b}, tmp_path / "dp.pth")  # DataParallel: every name
    assert sorted(open_weights(tmp_path / "dp.pth")) == ["conv.weight", "fc.weight"]


def test_sharded_sha256_covers_every_shard(tmp_path):
    from safetensors.torch import save_file
    from weightdist.sources import load_model

    save_file({"a.weight": torch.ones(4, 4)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b.weight": torch.ones(4, 4)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                                "b.weight": "model-00002-of-00002.safetensors"}}))
    before = load_model(str(index)).sha256
    save_file({"b.weight": torch.full((4, 4), 2.0)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    after = load_model(str(index)).sha256
    import hashlib

    assert before != after and after != hashlib.sha256(index.read_bytes()).hexdigest()


def test_deep_snapshot_in_over_training_is_one_line(tmp_path, capsys):
    from bad_inputs import _deep_dict, small_state

    snaps = tmp_path / "snaps"
    snaps.mkdir()
    torch.save(small_state(), snaps / "step0_epoch00.00.pt")
    _deep_dict(snaps).rename(snaps / "step1_epoch01.00.pt")
    assert main(["fit", "--over-training", str(snaps), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err  # (the snapshot progress bar ignores --quiet: only the error line is checked)
    errors = [line for line in re.split(r"[\r\n]", err) if "weightdist: error" in line or "Traceback" in line]
    assert len(errors) == 1 and "nested more than 64 deep" in errors[0], err


def test_safetensors_header_is_parsed_once_per_file(tmp_path, monkeypatch):
    """Reading n tensors opens the file once (it was once per tensor: quadratic in n)."""
    import safetensors
    from safetensors.torch import save_file
    from weightdist.sources.checkpoint import open_weights
    from weightdist.sources.extract import extract_layers

    save_file({f"l{i}.weight": torch.full((2, 2), float(i)) for i in range(300)}, str(tmp_path / "many.safetensors"))
    opened = []
    real = safetensors.safe_open

    def counting(*args, **kwargs):
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", counting)
    layers = extract_layers(open_weights(tmp_path / "many.safetensors"), kinds="linear")
    assert sorted(int(l.name[1:-7]) for l in layers) == list(range(300))
    assert all(l.values[0] == float(l.name[1:-7]) for l in layers)  # each name read its own tensor
    assert len(opened) <= 2  # the header read, then one handle for every tensor


def test_views_of_one_storage_subsample_through_strides(tmp_path):
    """A subsample of a view reads its elements through the strides: equal to the copied view's."""
    from weightdist.sources.extract import extract_layers

    base = torch.randn(300, 400, generator=torch.Generator().manual_seed(1))
    state = {"t.weight": base.t(), "s.weight": base[::3, 5:], "z.weight": torch.ones(1).as_strided((500, 600), (0, 0))}
    sub = {l.name: l for l in extract_layers(state, max_per_layer=64, seed=3)}
    dense = {k: v.contiguous() for k, v in state.items()}
    ref = {l.name: l for l in extract_layers(dense, max_per_layer=64, seed=3)}
    for name in state:
        assert np.array_equal(sub[name].values, ref[name].values) and sub[name].subsampled_from == state[name].numel()


def test_views_of_one_storage_are_analysed_once(tmp_path):
    """3,000 names for one view of one storage are one layer (the rest counted as tied), not 3,000 fits."""
    from collections import Counter

    from weightdist.sources.checkpoint import open_weights
    from weightdist.sources.extract import SKIP_REASONS, extract_layers

    base = torch.randn(100, 100, generator=torch.Generator().manual_seed(2))
    torch.save({**{f"l{i}.weight": base[:, :] for i in range(3000)}, "half.weight": base[:50]}, tmp_path / "views.pth")
    skipped: Counter = Counter()
    layers = extract_layers(open_weights(tmp_path / "views.pth"), max_per_layer=1000, skipped=skipped)
    assert [l.name for l in layers] == ["l0.weight", "half.weight"]  # a different view of the storage is its own layer
    assert skipped == {SKIP_REASONS[5]: 2999}
    assert layers[1].subsampled_from == 5000 and np.isin(layers[1].values, base[:50].double().numpy()).all()


def test_max_tensor_bytes_option(tmp_path, capsys):
    path = tmp_path / "w.pth"
    torch.save({"fc.weight": torch.randn(64, 64)}, path)
    assert main(["fit", str(path), "--max-tensor-bytes", "16K", "--out", str(tmp_path / "r"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "would need" in err and "--max-per-layer" in err and err.count("\n") == 1
    assert main(["fit", str(path), "--max-tensor-bytes", "16K", "--max-per-layer", "1000", "--out", str(tmp_path / "r"), *FAST]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["options"]["max_tensor_bytes"] == 16 * 1024


# --- fuzzing report folders ------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1), st.sampled_from(list(b",\n\"x-.e9|<`\x00")) | st.binary(min_size=1, max_size=3)),
                      min_size=1, max_size=10),
       target=st.sampled_from(["layers.csv", "summary.json"]))
def test_mutated_report_folders_read_or_one_line(report_folder, tmp_path, edits, target):
    from weightdist.analyses.compare import cross_model_table
    from weightdist.analyses.reading import read_report_folder
    from weightdist.reporting.findings import ModelReport, findings_markdown

    folder = tmp_path / "fuzz"
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    _copy(report_folder, folder)
    data = bytearray((folder / target).read_bytes())
    for where, piece in edits:
        pos = int(where * (len(data) - 1))
        piece = piece if isinstance(piece, bytes) else piece.encode() if isinstance(piece, str) else bytes([piece])
        data[pos:pos + len(piece)] = piece
    (folder / target).write_bytes(bytes(data))
    try:
        model, init, table = read_report_folder(folder, required=("layer", "family", "relative_depth", "n", "aic", "ks_stat", "is_best", "kind", "shape"))
    except WeightdistError as exc:
        assert "\n" not in str(exc)
        return
    cross_model_table({model: table})
    findings_markdown(tmp_path, [ModelReport(folder, model, init, table)], "weightdist findings x")


# --- fuzzing GGUF and ONNX bytes, each case in a forked child with a memory and a time ceiling -------

CASE_MEMORY = 2 * 2**30  # address space a case may add to what the (forked) test process already maps
CASE_SECONDS = 30


def _in_child_with_ceilings(path: Path) -> tuple[int, str]:
    """Open and extract ``path`` in a fork with RLIMIT_AS and an alarm: (exit status, what the child said).

    0: loaded or refused with a one-line WeightdistError; 3: any other exception (a bug);
    a signal (SIGALRM, SIGKILL) or MemoryError exit: the time or memory ceiling was hit."""
    import resource
    import signal
    import traceback

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_fd)
        status, message = 0, b""
        try:
            mapped = int(re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (mapped + CASE_MEMORY, mapped + CASE_MEMORY))
            signal.alarm(CASE_SECONDS)
            from weightdist.sources import load_model
            from weightdist.sources.extract import KINDS, extract_layers

            try:
                extract_layers(load_model(str(path)), kinds=KINDS)
            except WeightdistError as exc:
                status, message = (0, b"") if "\n" not in str(exc) else (4, str(exc).encode()[:2000])
        except MemoryError:
            status, message = 5, b"MemoryError: past the memory ceiling"
        except BaseException:
            status, message = 3, traceback.format_exc().encode()[-4000:]
        os.write(write_fd, message)
        os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        said = pipe.read().decode(errors="replace")
    _, wait_status = os.waitpid(pid, 0)
    return wait_status, said


def _tiny_gguf(path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    g = np.random.default_rng(0)
    w.add_tensor("blk.0.attn_q.weight", g.standard_normal((8, 16)).astype(np.float32))
    w.add_tensor("token_embd.weight", g.standard_normal((12, 16)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _tiny_onnx(path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    g = np.random.default_rng(0)
    inits = [numpy_helper.from_array(g.standard_normal((4, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(g.standard_normal(3).astype(np.float32), "B")]
    nodes = [helper.make_node("MatMul", ["X", "W"], ["H"]), helper.make_node("Add", ["H", "B"], ["Y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])], inits)
    onnx.save_model(helper.make_model(graph), str(path))


@pytest.fixture(scope="module")
def real_format_bytes(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("formats")
    _tiny_gguf(folder / "m.gguf")
    _tiny_onnx(folder / "m.onnx")
    return {".gguf": (folder / "m.gguf").read_bytes(), ".onnx": (folder / "m.onnx").read_bytes()}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from([".gguf", ".onnx"]),
       edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.floats(0, 1)), huge=st.booleans())
def test_mutated_gguf_and_onnx_load_or_one_line_within_ceilings(real_format_bytes, tmp_path, suffix, edits, cut, huge):
    import signal

    data = bytearray(real_format_bytes[suffix])
    for where, byte in edits:  # biased to the header, where parsers are most fragile
        data[int(where * where * (len(data) - 1))] = byte
    if huge:  # a length or count field set to all ones: a claimed size far past the file
        pos = int(edits[0][0] * (len(data) - 8))
        data[pos:pos + 8] = b"\xff" * 8
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(bytes(data))
    wait_status, said = _in_child_with_ceilings(path)
    assert not os.WIFSIGNALED(wait_status), f"killed by signal {os.WTERMSIG(wait_status)} ({signal.Signals(os.WTERMSIG(wait_status)).name}): the time ceiling"
    assert os.WEXITSTATUS(wait_status) == 0, said
