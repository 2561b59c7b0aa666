"""Peak memory of `weightdist fit` on a synthetic multi-GB .safetensors file.

    python benchmarks/bench_memory.py [--gb 3] [--tensor-mb 64]

Writes the file tensor by tensor (never holding it whole), then runs
`weightdist fit FILE --max-per-layer 100000 --no-plots` in a child process and
reads the child's peak RSS. Streaming means the peak is bounded by the largest
tensor (read as float32, converted to float64) plus the interpreter and torch,
not by the file size. A second child that only imports weightdist and torch
gives that constant.
"""
from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_synthetic_safetensors(path: Path, total_bytes: int, tensor_bytes: int, seed: int = 0) -> tuple[int, int]:
    """Laplace-distributed float32 matrices in the safetensors layout: 8-byte header length, JSON, data."""
    rows = 1024
    cols = tensor_bytes // (4 * rows)
    count = max(1, total_bytes // (rows * cols * 4))
    header, offset = {}, 0
    for i in range(count):
        size = rows * cols * 4
        header[f"layers.{i}.linear.weight"] = {"dtype": "F32", "shape": [rows, cols], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _ in range(count):
            f.write(rng.laplace(0, 0.02, size=(rows, cols)).astype(np.float32).tobytes())
    return count, rows * cols * 4


def child_peak_rss_mb(argv: list[str]) -> tuple[float, float]:
    """Run argv in a child; (its peak RSS in MB, seconds). ru_maxrss of RUSAGE_CHILDREN is the max over children."""
    script = ("import resource, subprocess, sys, time; t = time.time(); "
              "code = subprocess.run(sys.argv[1:]).returncode; "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.time() - t, code)")
    out = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, check=True)
    peak, seconds, code = out.stdout.split()[-3:]
    if code != "0":
        raise SystemExit(f"child failed with exit code {code}: {' '.join(argv)}")
    return float(peak), float(seconds)


def measure(gb: float, tensor_mb: int, folder: Path) -> dict:
    path = folder / "synthetic.safetensors"
    count, tensor_bytes = write_synthetic_safetensors(path, int(gb * 2**30), tensor_mb * 2**20)
    baseline, _ = child_peak_rss_mb([sys.executable, "-c", "import torch, weightdist.cli, weightdist.models, weightdist.extract"])
    peak, seconds = child_peak_rss_mb([sys.executable, "-m", "weightdist", "fit", str(path), "--max-per-layer", "100000",
                                       "--no-plots", "--quiet", "--out", str(folder / "report")])
    return {"file_mb": path.stat().st_size / 2**20, "tensors": count, "largest_tensor_mb": tensor_bytes / 2**20,
            "baseline_rss_mb": baseline, "peak_rss_mb": peak, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=3.0)
    ap.add_argument("--tensor-mb", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(args.gb, args.tensor_mb, Path(tmp))
    extra = r["peak_rss_mb"] - r["baseline_rss_mb"]
    print("| file | tensors | largest tensor | baseline RSS (import only) | peak RSS of fit | peak − baseline | (peak − baseline) / largest tensor | time |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {r['file_mb']:.0f} MB | {r['tensors']} | {r['largest_tensor_mb']:.0f} MB | {r['baseline_rss_mb']:.0f} MB | "
          f"{r['peak_rss_mb']:.0f} MB | {extra:.0f} MB | {extra / r['largest_tensor_mb']:.1f}× | {r['seconds']:.0f} s |")


if __name__ == "__main__":
    main()
