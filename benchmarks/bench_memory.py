"""Peak memory of streaming a synthetic multi-GB .safetensors file.

    python benchmarks/bench_memory.py [--gb 3] [--tensor-mb 64] [--mode iter|fit|both]

Writes the file tensor by tensor with a streaming writer built on the documented
safetensors layout (8-byte little-endian header length, JSON header, raw data),
so the writer never holds more than one tensor. Then, in a child process:

* ``iter`` (default): ``for layer in iter_layers(load_model(FILE), max_per_layer=100_000)``
  and the child's own ``getrusage(RUSAGE_SELF).ru_maxrss``, before and after the loop;
* ``fit``: the whole ``weightdist fit FILE --max-per-layer 100000 --no-plots`` command,
  against a child that only imports weightdist and torch.

Streaming means the peak is bounded by the largest tensor plus the interpreter and
torch, not by the file size.
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
    baseline, _ = child_peak_rss_mb([sys.executable, "-c", "import torch, weightdist.cli, weightdist.sources, weightdist.sources.extract"])
    peak, seconds = child_peak_rss_mb([sys.executable, "-m", "weightdist", "fit", str(path), "--max-per-layer", "100000",
                                       "--no-plots", "--quiet", "--out", str(folder / "report")])
    return {"file_mb": path.stat().st_size / 2**20, "tensors": count, "largest_tensor_mb": tensor_bytes / 2**20,
            "baseline_rss_mb": baseline, "peak_rss_mb": peak, "seconds": seconds}


ITER_CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from weightdist.sources.extract import iter_layers
from weightdist.sources import load_model

path, max_per_layer = sys.argv[1], int(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.time()
layers = values = 0
for layer in iter_layers(load_model(path), max_per_layer=max_per_layer):
    layers += 1
    values += layer.values.size
print(json.dumps({"layers": layers, "values": values, "import_rss_mb": before, "seconds": time.time() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure_iter(gb: float, tensor_mb: int, folder: Path, max_per_layer: int = 100_000, path: Path | None = None) -> dict:
    """iter_layers over a synthetic file in a child process; the child's own peak RSS."""
    if path is None:
        path = folder / "synthetic.safetensors"
        count, tensor_bytes = write_synthetic_safetensors(path, int(gb * 2**30), tensor_mb * 2**20)
    else:
        count, tensor_bytes = _describe(path)
    out = subprocess.run([sys.executable, "-c", ITER_CHILD, str(path), str(max_per_layer)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"iter_layers child failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"file_mb": path.stat().st_size / 2**20, "tensors": count, "largest_tensor_mb": tensor_bytes / 2**20, **r}


def _describe(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    sizes = [v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"]
    return len(sizes), max(sizes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=3.0)
    ap.add_argument("--tensor-mb", type=int, default=64)
    ap.add_argument("--mode", choices=("iter", "fit", "both"), default="iter")
    ap.add_argument("--max-per-layer", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "synthetic.safetensors"
        t = time.time()
        write_synthetic_safetensors(path, int(args.gb * 2**30), args.tensor_mb * 2**20)
        print(f"wrote {path.stat().st_size / 2**30:.2f} GB in {time.time() - t:.0f} s "
              f"(writer peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
        if args.mode in ("iter", "both"):
            r = measure_iter(args.gb, args.tensor_mb, folder, args.max_per_layer, path=path)
            extra = r["peak_rss_mb"] - r["import_rss_mb"]
            print("\niter_layers(load_model(FILE), max_per_layer=%d) in a child process" % args.max_per_layer)
            print("| file | tensors | largest tensor | RSS after imports | peak RSS | peak − imports | (peak − imports) / largest tensor | peak / file | time |")
            print("|---|---|---|---|---|---|---|---|---|")
            print(f"| {r['file_mb']:.0f} MB | {r['tensors']} | {r['largest_tensor_mb']:.0f} MB | {r['import_rss_mb']:.0f} MB | "
                  f"{r['peak_rss_mb']:.0f} MB | {extra:.0f} MB | {extra / r['largest_tensor_mb']:.2f}× | "
                  f"{r['peak_rss_mb'] / r['file_mb']:.3f} | {r['seconds']:.0f} s |")
        if args.mode in ("fit", "both"):
            baseline, _ = child_peak_rss_mb([sys.executable, "-c", "import torch, weightdist.cli, weightdist.sources, weightdist.sources.extract"])
            peak, seconds = child_peak_rss_mb([sys.executable, "-m", "weightdist", "fit", str(path), "--max-per-layer", str(args.max_per_layer),
                                               "--no-plots", "--quiet", "--out", str(folder / "report")])
            extra = peak - baseline
            largest = args.tensor_mb
            print("\nweightdist fit FILE (whole command) in a child process")
            print("| baseline RSS (import only) | peak RSS of fit | peak − baseline | (peak − baseline) / largest tensor | time |")
            print("|---|---|---|---|---|")
            print(f"| {baseline:.0f} MB | {peak:.0f} MB | {extra:.0f} MB | {extra / largest:.2f}× | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
