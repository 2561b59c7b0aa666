"""Hostile-input costs (issue 14), each as a ratio against a baseline timed in the same run.

- 20,000 tiny tensors in one .safetensors: weightdist's extraction against the safetensors
  library reading the same tensors through one handle (was quadratic: > 120 s);
- 3,000 views of one 4 MB storage, --max-per-layer 1000: selection + extraction against the
  same for a file holding the storage once (tied views are analysed once);
- a 1.5 KB .pth whose tensor is one float viewed with stride 0 as 10^6 x 10^6: the refusal
  against opening a tiny honest file.

Run: python benchmarks/bench_hostile.py [--tensors 20000] [--views 3000]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=20_000)
    parser.add_argument("--views", type=int, default=3_000)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from safetensors import safe_open
    from safetensors.torch import save_file

    from weightdist.errors import CheckpointError
    from weightdist.sources.checkpoint import open_weights
    from weightdist.sources.extract import extract_layers

    with tempfile.TemporaryDirectory(prefix="bench_hostile_") as tmp:
        tmp = Path(tmp)
        many = tmp / "many.safetensors"
        save_file({f"l{i}.weight": torch.randn(2, 2) for i in range(args.tensors)}, str(many))

        def library() -> None:
            with safe_open(str(many), framework="pt") as f:
                for k in f.keys():
                    f.get_tensor(k).double()

        base = timed(library)
        ours = timed(lambda: extract_layers(open_weights(many), kinds="linear"))
        print(f"{args.tensors} tiny safetensors tensors: weightdist {ours:.2f} s, safetensors alone {base:.2f} s, ratio {ours / base:.1f}")

        storage = torch.randn(1000, 1000)
        views, once = tmp / "views.pth", tmp / "once.pth"
        torch.save({f"l{i}.weight": storage[:, :] for i in range(args.views)}, views)
        torch.save({"l0.weight": storage}, once)
        base = timed(lambda: extract_layers(open_weights(once), max_per_layer=1000))
        ours = timed(lambda: extract_layers(open_weights(views), max_per_layer=1000))
        print(f"{args.views} views of one storage: {ours:.2f} s, the storage once {base:.2f} s, ratio {ours / base:.1f}")

        bomb, tiny = tmp / "bomb.pth", tmp / "tiny.pth"
        torch.save({"w.weight": torch.ones(1).as_strided((10**6, 10**6), (0, 0))}, bomb)
        torch.save({"w.weight": torch.ones(1)}, tiny)
        base = timed(lambda: extract_layers(open_weights(tiny)))

        def refuse() -> None:
            try:
                extract_layers(open_weights(bomb))
            except CheckpointError:
                return
            raise SystemExit("the stride-0 bomb was not refused")

        ours = timed(refuse)
        print(f"stride-0 view claiming 8 TB: refused in {ours * 1e3:.1f} ms, a tiny honest file {base * 1e3:.1f} ms, ratio {ours / base:.1f}")


if __name__ == "__main__":
    main()
