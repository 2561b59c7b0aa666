"""report.html: self-contained, untrusted strings inert, and (slow) rendered, sorted and error-free in headless Chromium."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from weightdist.reporting.html import Page, Table, json_for_script, render, write_html

HOSTILE = '</script><img src=x onerror="alert(1)">&<!--'


def _png(path: Path, shade: int) -> Path:
    """A small real PNG (matplotlib), so the page carries genuine inline figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(np.arange(10), np.arange(10) ** (1 + shade / 10))
    fig.savefig(path, format="png", dpi=50)
    plt.close(fig)
    return path


def _page(tmp_path: Path) -> Page:
    frame = pd.DataFrame({
        "layer": ["b.conv", HOSTILE, "a.linear", "c.conv"],
        "beta": [1.5, 0.7, np.nan, 2.2],
        "n": [10, 300, 20, 4],
        "best": ["gennorm", "laplace", "gaussian", "student_t"],
    })
    figs = {name: [_png(tmp_path / f"{i}.png", i)] for i, name in enumerate(frame["layer"])}
    return Page(title=f"weightdist fit: {HOSTILE}", command=f"weightdist fit {HOSTILE}",
                provenance=(("Weights", HOSTILE),), headline="Gennorm fits best.",
                figures=(_png(tmp_path / "overview.png", 3),),
                tables=(Table.from_frame("Per layer", frame, key="layer", filterable=True),), row_figures=figs)


def _data_block(text: str) -> dict:
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S).group(1)
    return json.loads(block)


def test_page_is_self_contained_and_untrusted_text_is_inert(tmp_path):
    text = render(_page(tmp_path))
    assert not re.search(r"(?i)\b(?:https?|ftp)://|src=\"//|href=", text.replace('src="data:image/png;base64,', ""))
    # the hostile name never appears as markup: exactly two <script> elements, the JSON one and ours
    assert text.count("<script") == 2 and text.count("</script>") == 2
    assert "<img src=x" not in text and "<!--" not in text
    assert html_text_of_title(text) == f"weightdist fit: {HOSTILE}"
    data = _data_block(text)
    assert data["tables"][0]["rows"][1][0] == HOSTILE  # the JSON round-trips the raw string
    assert data["tables"][0]["rows"][2][1] is None  # NaN becomes null (JSON has no NaN)
    assert len(data["row_figures"]) == 4 and all(u[0].startswith("data:image/png;base64,") for u in data["row_figures"].values())
    assert render(_page(tmp_path)) == text  # deterministic


def html_text_of_title(text: str) -> str:
    import html

    return html.unescape(re.search(r"<title>(.*?)</title>", text).group(1))


def test_json_for_script_cannot_close_the_element():
    out = json_for_script({"k": "</script></SCRIPT><!-- x"})
    assert "<" not in out
    assert json.loads(out) == {"k": "</script></SCRIPT><!-- x"}


def test_fit_report_folder_has_report_html(tmp_path):
    from weightdist.cli import main

    out = tmp_path / "r"
    assert main(["fit", "--quiet", "--include", "layer3.2", "--max-per-layer", "2000", "--out", str(out)]) == 0
    text = (out / "report.html").read_text()
    data = _data_block(text)
    layers = [row[1] for row in data["tables"][0]["rows"]]
    assert layers == ["layer3.2.conv1.weight", "layer3.2.conv2.weight"]
    assert set(data["row_figures"]) == set(layers)  # each row opens its own plots
    assert "weightdist fit --include layer3.2" in text


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_page_renders_sorts_and_has_no_errors_in_headless_chromium(tmp_path):
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from PIL import Image

    page = tmp_path / "report.html"
    write_html(page, _page(tmp_path))
    url = page.as_uri()
    shot = tmp_path / "shot.png"
    run = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", url + "#sort=-beta")
    assert shot.is_file(), run.stderr[-2000:]
    Path("/tmp/quant").mkdir(exist_ok=True)
    shutil.copy(shot, "/tmp/quant/report_html_screenshot.png")  # for a human to look at
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 900)
    lo, hi = image.getextrema()
    assert hi - lo > 100  # not blank: dark text on a light page
    assert np.asarray(image).std() > 5

    dump = _chromium(tmp_path, "--dump-dom", url + "#sort=-beta")
    dom = dump.stdout
    assert 'data-ready="yes"' in dom, "the page script did not finish"
    assert 'data-sorted-by="-beta"' in dom
    rows = re.findall(r'<tr class="row[^"]*">(.*?)</tr>', dom, re.S)
    betas = [re.findall(r"<td>(.*?)</td>", r)[1] for r in rows]
    assert betas == ["2.2", "1.5", "0.7", ""]  # descending, the blank (NaN) last
    assert re.search(r'<pre id="errors" hidden="">\s*</pre>', dom), "the page reported script errors"
    for log in (run.stderr, dump.stderr):
        assert "Uncaught" not in log and not re.search(r"CONSOLE\(\d+\)", log)
    assert not re.search(r"<img[^>]*onerror", dom)  # the hostile name stayed text: no element carries its handler

    filtered = _chromium(tmp_path, "--dump-dom", url + "#filter=gauss&sort=n")
    rows = re.findall(r'<tr class="row[^"]*">(.*?)</tr>', filtered.stdout, re.S)
    assert [re.findall(r"<td>(.*?)</td>", r)[0] for r in rows] == ["a.linear"]
