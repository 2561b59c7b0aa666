"""Peak RSS stays bounded by the largest tensor, not the file size (slow: writes ~0.75 GB)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
def test_streaming_peak_rss_is_bounded_by_the_largest_tensor(tmp_path):
    from bench_memory import measure

    r = measure(gb=0.75, tensor_mb=32, folder=tmp_path)
    extra = r["peak_rss_mb"] - r["baseline_rss_mb"]
    # float32 tensor + its float64 copy + sorting/fitting temporaries of a 100k subsample, plus slack.
    assert extra < 4 * r["largest_tensor_mb"] + 150, r
    assert extra < 0.5 * r["file_mb"], r
