"""Write a sharded .safetensors checkpoint with TinyLlama-1.1B's tensor shapes and heavy-tailed values.

Not real weights: every matrix is Student-t (df drawn per tensor between 3 and 8, scale 0.02),
norm weights are near 1, all from one seeded numpy Generator, so `weightdist scan` can be timed
and its memory measured on a 1.1 B-parameter Llama layout without downloading one. Shapes:
22 layers, hidden 2048, intermediate 5632, 32 heads of 64 with 4 key/value heads, vocab 32000,
untied lm_head (1,100,048,384 values). bfloat16 by default (2.2 GB; float32 is 4.4 GB).

    python scripts/make_tinyllama.py /tmp/tinyllama            # writes model-0000k-of-0000n.safetensors + index
    weightdist scan /tmp/tinyllama/model.safetensors.index.json --store /tmp/tinyllama-store
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

LAYERS, HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, VOCAB = 22, 2048, 5632, 32, 4, 32000
HEAD_DIM = HIDDEN // HEADS


def tinyllama_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor, in the order of the Hugging Face Llama state dict."""
    shapes = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        shapes += [
            (f"{p}.self_attn.q_proj.weight", (HEADS * HEAD_DIM, HIDDEN)),
            (f"{p}.self_attn.k_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
            (f"{p}.self_attn.v_proj.weight", (KV_HEADS * HEAD_DIM, HIDDEN)),
            (f"{p}.self_attn.o_proj.weight", (HIDDEN, HEADS * HEAD_DIM)),
            (f"{p}.mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)),
            (f"{p}.mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
            (f"{p}.mlp.down_proj.weight", (HIDDEN, INTERMEDIATE)),
            (f"{p}.input_layernorm.weight", (HIDDEN,)),
            (f"{p}.post_attention_layernorm.weight", (HIDDEN,)),
        ]
    return shapes + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def values(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Heavy-tailed matrices (Student-t, df 3-8, scale 0.02); norm weights around 1."""
    if len(shape) == 1:
        return (1.0 + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    df = rng.uniform(3.0, 8.0)
    return (0.02 * rng.standard_t(df, size=shape)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write (must not be inside the repository)")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    parser.add_argument("--shard-gb", type=float, default=1.0, help="target shard size in GB (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    repo = Path(__file__).resolve().parents[1]
    if out == repo or repo in out.parents:
        parser.error(f"{out} is inside the repository; write the checkpoint elsewhere (e.g. /tmp/tinyllama)")
    shapes = tinyllama_shapes()
    dtype = getattr(torch, args.dtype)
    total_bytes = sum(int(np.prod(s)) for _, s in shapes) * dtype.itemsize
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if free < 1.1 * total_bytes:
        parser.error(f"{out} has {free / 1e9:.1f} GB free; the checkpoint needs {total_bytes / 1e9:.1f} GB")
    rng = np.random.default_rng(args.seed)
    limit = int(args.shard_gb * 1e9)
    shards: list[list[str]] = [[]]
    sizes = [0]
    for name, shape in shapes:  # plan shards first so file names can say "-of-n"
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if sizes[-1] and sizes[-1] + nbytes > limit:
            shards.append([])
            sizes.append(0)
        shards[-1].append(name)
        sizes[-1] += nbytes
    shape_of = dict(shapes)
    weight_map = {}
    for k, names in enumerate(shards, 1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        tensors = {n: torch.from_numpy(values(rng, n, shape_of[n])).to(dtype) for n in names}
        save_file(tensors, str(out / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in names})
        print(f"wrote {out / file} ({sum(t.numel() for t in tensors.values()):,} values)", file=sys.stderr)
        del tensors
    index = {"metadata": {"total_size": total_bytes, "generator": f"weightdist scripts/make_tinyllama.py --seed {args.seed}"},
             "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1) + "\n")
    print(out / "model.safetensors.index.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
