"""`weightdist scan` speed and memory, each against a baseline timed in the same run.

1. A zoo scan on 1 and 2 workers for every engine (local, ray, dask): the speed-up of 2 workers
   over 1 (target ≥ 1.7×) with the engine already started, and the start-up time apart.
2. The per-unit scheduling overhead: trivial units through each engine, ms per unit.
3. With --tinyllama INDEX (from scripts/make_tinyllama.py): a scan of the 1.1 B-parameter
   checkpoint, its peak RSS per worker against its largest tensor, and its time against the
   float32 sort of the same weights (one np.sort per tensor, one core) and per weight.

    TORCH_HOME=../shared/torch python benchmarks/bench_scan.py
    python scripts/make_tinyllama.py /tmp/tinyllama
    python benchmarks/bench_scan.py --engines local --tinyllama /tmp/tinyllama/model.safetensors.index.json

The CPU may be shared: the load average is printed with the numbers.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_ZOO = ("resnet20_fashionmnist", "resnet20_cifar10", "resnet32_cifar10", "resnet44_cifar10", "resnet56_cifar10")
PEAKS_DIR_ENV = "WEIGHTDIST_BENCH_PEAKS"


def _noop(item):
    return item


def _warm(item):
    """Import what a unit needs (torch, the sources), so the timed scan does not pay for it."""
    import time

    import weightdist.sources  # noqa: F401

    time.sleep(0.5)  # long enough that every worker gets one
    return item


def _vm_hwm_bytes() -> int:
    """This process's peak resident set (VmHWM): exact, unlike sampling RSS from outside."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _fit_unit_recording_peak(unit):
    """scan's unit function, plus a note of the worker's peak RSS so far (one small file per worker pid)."""
    from weightdist.scan import fit_unit

    result = fit_unit(unit)
    folder = os.environ.get(PEAKS_DIR_ENV)
    if folder:
        Path(folder, str(os.getpid())).write_text(str(_vm_hwm_bytes()))
    return result


def available_zoo(specs) -> list[str]:
    """The zoo models whose weights are on this machine (the CIFAR ResNets need TORCH_HOME)."""
    from weightdist.sources import open_model

    found = []
    for spec in specs:
        try:
            open_model(spec)
        except Exception as exc:  # a benchmark skips what it cannot load, and says so
            print(f"  (skipping {spec}: {str(exc)[:100]})")
            continue
        found.append(spec)
    return found


def _descendants_cpu() -> float:
    """CPU seconds used so far by this process's descendants (the workers, and an engine's own daemons)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def time_zoo(engine_name: str, workers: int, zoo: list[str], root: Path, repeats: int = 3) -> tuple[float, float, float, int, float]:
    """(engine start seconds, scan seconds on a started engine, per-unit overhead ms, units, worker CPU seconds).

    The scan runs ``repeats`` times, each on a freshly started engine (cold: every worker opens and plans
    the models anew) into a fresh store, and the fastest counts, with its CPU: a few seconds of work,
    where one scheduling hiccup of a shared machine would otherwise decide a ratio."""
    from weightdist.engines import get_engine
    from weightdist.scan import ScanModel, scan

    seconds = cpu = math.inf
    for attempt in range(repeats):
        t0 = time.perf_counter()
        engine = get_engine(engine_name, workers)
        engine.start()
        try:
            list(engine.map_unordered(_warm, range(2 * workers)))  # workers up, torch imported
            if attempt == 0:
                started = time.perf_counter() - t0
                n = 400
                t0 = time.perf_counter()
                list(engine.map_unordered(_noop, range(n)))
                overhead_ms = (time.perf_counter() - t0) / n * 1e3 * workers  # per unit, per worker slot
            cpu0 = _descendants_cpu()
            t0 = time.perf_counter()
            summary = scan([ScanModel(s) for s in zoo], root / f"{engine_name}-{workers}-{attempt}", engine=engine, progress=False)
            elapsed, used = time.perf_counter() - t0, _descendants_cpu() - cpu0
            assert summary.ok, summary
        finally:
            engine.close()
        if elapsed < seconds:
            seconds, cpu = elapsed, used
    return started, seconds, overhead_ms, summary.units, cpu


def bench_zoo(engines: list[str], zoo: list[str], root: Path) -> None:
    print(f"zoo: {', '.join(zoo)} (each scan: the fastest of 3, each on a freshly started engine)")
    print(f"{'engine':8s} {'start 1w':>9s} {'scan 1w':>9s} {'start 2w':>9s} {'scan 2w':>9s} {'2w/1w':>7s} {'overhead 1w':>12s} "
          f"{'overhead 2w':>12s} {'cpu 1w':>8s} {'cpu 2w':>8s}")
    for name in engines:
        try:
            s1, t1, o1, units, c1 = time_zoo(name, 1, zoo, root)
            s2, t2, o2, _, c2 = time_zoo(name, 2, zoo, root)
        except Exception as exc:
            print(f"{name:8s} not run: {str(exc)[:120]}")
            continue
        print(f"{name:8s} {s1:8.1f}s {t1:8.1f}s {s2:8.1f}s {t2:8.1f}s {t1 / t2:6.2f}× {o1:10.2f}ms {o2:10.2f}ms {c1:7.1f}s {c2:7.1f}s"
              f"   ({units} units; target 2w/1w ≥ 1.7×)")
    print("cpu: CPU seconds of the driver's descendant processes during the scan (for ray/dask this includes their daemons);\n"
          "on an idle machine 2w/1w approaches 2 × (cpu 1w / cpu 2w) when the load is balanced")


def sort_floor(index: str, options) -> tuple[float, int, int]:
    """(seconds, weights, largest tensor's values): one float32 np.sort per layer the scan selects, read one at a time."""
    import numpy as np

    from weightdist.sources import open_model
    from weightdist.sources.extract import layer_infos

    opened = open_model(index)
    seconds, total, largest = 0.0, 0, 0
    for info in layer_infos(opened, options.kinds, options.include, options.exclude, options.min_size):
        values = opened.read(info.name).float().numpy().reshape(-1)
        t0 = time.perf_counter()
        np.sort(values)
        seconds += time.perf_counter() - t0
        total, largest = total + values.size, max(largest, values.size)
        del values
    return seconds, total, largest


def bench_tinyllama(index: str, engine_name: str, workers: int, root: Path, options: dict) -> None:
    import weightdist.scan as scan_module
    from weightdist.pipeline import FitOptions
    from weightdist.scan import ScanModel, scan

    floor, weights, largest = sort_floor(index, FitOptions(**options))
    print(f"\ntinyllama: {index}: {weights:,} weights selected, largest tensor {largest:,} values; "
          f"their float32 sort: {floor:.1f} s")
    peaks = root / "peaks"
    peaks.mkdir()
    os.environ[PEAKS_DIR_ENV] = str(peaks)  # workers start after this, and inherit it
    scan_module.fit_unit, original = _fit_unit_recording_peak, scan_module.fit_unit
    import resource

    def children_cpu() -> float:  # workers that exited and were joined (the local engine's pool)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    try:
        cpu0, t0 = children_cpu(), time.perf_counter()
        summary = scan([ScanModel(index)], root / "tinyllama", options=FitOptions(**options), engine=engine_name,
                       workers=workers, progress=True)
        seconds, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    finally:
        scan_module.fit_unit = original
    rss = sorted(int(p.read_text()) for p in peaks.iterdir())
    print(f"scan ({engine_name}, {workers} workers, options {options or 'default'}): {seconds:.1f} s for {summary.units} units, "
          f"{summary.failed_units} failed")
    print(f"  against the float32 sort floor: {seconds / floor:.1f}× wall ({seconds * workers / floor:.1f}× in core-seconds)")
    print(f"  per weight: {seconds * workers / weights * 1e9:.1f} ns of wall × workers ({seconds / weights * 1e9:.2f} ns wall on "
          f"{workers} workers); worker CPU {cpu:.1f} s = {cpu / weights * 1e9:.1f} ns per weight (local engine), "
          f"{cpu / floor:.1f}× the sort")
    for b in rss:
        print(f"  worker peak RSS {b / 2**30:.2f} GiB = {b / (largest * 8):.1f}× the largest tensor in float64 "
              f"({largest * 8 / 2**30:.2f} GiB), {b / (largest * 4):.1f}× in float32")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="local,ray,dask", help="comma-separated engines to time (default all)")
    parser.add_argument("--zoo", nargs="*", default=list(DEFAULT_ZOO), help="model specs of the zoo scan")
    parser.add_argument("--no-zoo", action="store_true", help="skip the zoo part")
    parser.add_argument("--tinyllama", metavar="INDEX", default=None, help="model.safetensors.index.json from scripts/make_tinyllama.py")
    parser.add_argument("--tinyllama-engine", default="local")
    parser.add_argument("--tinyllama-workers", type=int, default=2)
    parser.add_argument("--tinyllama-include", default=None, help="regex: scan only these tensors (a quicker run)")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    root = Path(tempfile.mkdtemp(prefix="bench_scan-"))
    try:
        if not args.no_zoo:
            zoo = available_zoo(args.zoo)
            bench_zoo([e.strip() for e in args.engines.split(",") if e.strip()], zoo, root)
        if args.tinyllama:
            options = {"include": args.tinyllama_include} if args.tinyllama_include else {}
            bench_tinyllama(args.tinyllama, args.tinyllama_engine, args.tinyllama_workers, root, options)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
