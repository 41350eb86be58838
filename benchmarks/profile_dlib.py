"""Where dlib's forward pass spends its time: srise_jax (XLA) against the PyTorch port, layer by layer.

    python benchmarks/profile_dlib.py                  # batch 64, best of 5
    python benchmarks/profile_dlib.py --batch 32 --repeats 3

bench_srise.py finds the JAX forward floor of dlib's ResNet slower than the
batched PyTorch reference on CPU; this splits the forward pass to show which
term dominates. For the same random 150x150 batch, each stage is timed alone
(compiled on its own in JAX, run under `torch.inference_mode` in PyTorch,
with the same thread count): the whole network (the library's, whose stem
convolution is a patch matmul), the stem with XLA's convolution (input
scaling, 7x7 stride-2 conv from 3 to 32 channels, affine, ReLU, 3x3 max
pool), that convolution alone, the same convolution as the library's patch
matmul, then each residual block. The two implementations'
outputs are compared first (the PyTorch port loads srise_jax's converted
weights: benchmarks/torch_reference.py).

Needs the `demo` extra (dlib's weights) and torch.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from srise_jax.models import dlib_resnet, load_dlib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_srise  # noqa: E402
import torch_reference  # noqa: E402


def best_time(fn, repeats: int) -> float:
    """`bench_srise.best_time` after one warm-up call (compilation, first-call costs)."""
    jax.block_until_ready(fn())
    return bench_srise.best_time(fn, repeats)


def jax_stages(params: dict) -> list[tuple[str, callable]]:
    """[(name, jitted fn(params_subtree, x))] for the stem, its conv and each block."""
    import flax.linen as nn

    p = params["params"]

    scale = dlib_resnet.normalize_input

    def conv(x):
        padding = tuple(dlib_resnet.dlib_padding(n, 7, 2) for n in x.shape[1:3])
        return nn.Conv(32, (7, 7), strides=2, padding=padding).apply({"params": p["conv"]}, x)

    def stem(x):
        x = nn.relu(dlib_resnet.Affine().apply({"params": p["affine"]}, conv(scale(x))))
        return nn.max_pool(x, (3, 3), strides=(2, 2))

    blocks, index = [], 0
    for features, count, downsample in dlib_resnet.LEVELS:
        for i in range(count):
            module = dlib_resnet.Residual(features, downsample and i == 0)
            sub = {"params": p[f"block{index}"]}
            blocks.append((f"block{index} ({features})",
                           jax.jit(lambda x, m=module, v=sub: m.apply(v, x))))
            index += 1
    def patch_conv(x):
        padding = tuple(dlib_resnet.dlib_padding(n, 7, 2) for n in x.shape[1:3])
        return dlib_resnet.PatchConv(32, 7, 2, padding).apply({"params": p["conv"]}, x)

    return [("stem", jax.jit(stem)), ("stem conv only", jax.jit(lambda x: conv(scale(x)))),
            ("stem conv as a patch matmul (the library's)",
             jax.jit(lambda x: patch_conv(scale(x))))] + blocks


def torch_stages(net) -> list[tuple[str, callable]]:
    def scale(x):
        return (x * 255.0 - net.mean) / 256.0

    def stem(x):
        return F.max_pool2d(F.relu(net.affine(net.conv(scale(x)))), 3, 2)

    return [("stem", stem), ("stem conv only", lambda x: net.conv(scale(x))),
            ("stem conv (PyTorch's conv)", lambda x: net.conv(scale(x)))] + \
        [(f"block{i}", block) for i, block in enumerate(net.blocks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    embed_fn, params = load_dlib()
    net = torch_reference.TorchDlibResNet.from_flax(params)
    images = np.random.default_rng(0).random((args.batch, 150, 150, 3), dtype=np.float32)
    x_jax, x_torch = jnp.asarray(images), torch.from_numpy(images.transpose(0, 3, 1, 2).copy())

    print(f"# profile_dlib  {datetime.date.today()}  {platform.machine()}  jax {jax.__version__}  "
          f"torch {torch.__version__}  threads {threads}  batch {args.batch}  best of {args.repeats}")
    forward = jax.jit(embed_fn)
    with torch.inference_mode():
        diff = float(np.abs(np.asarray(forward(params, x_jax)) - net(x_torch).numpy()).max())
        print(f"# max |embedding JAX - torch| {diff:.2e}")
        print("| stage | JAX (XLA) s | PyTorch s | JAX / PyTorch |")
        print("|---|---|---|---|")
        rows = [("whole network", best_time(lambda: forward(params, x_jax), args.repeats),
                 best_time(lambda: net(x_torch), args.repeats))]
        stages_jax, stages_torch = jax_stages(params), torch_stages(net)
        h_jax, h_torch = stages_jax[0][1](x_jax), stages_torch[0][1](x_torch)
        for (name, fj), (_, ft) in zip(stages_jax, stages_torch):
            if name.startswith("stem"):
                rows.append((name, best_time(lambda: fj(x_jax), args.repeats),
                             best_time(lambda: ft(x_torch), args.repeats)))
                continue
            rows.append((name, best_time(lambda: fj(h_jax), args.repeats),
                         best_time(lambda: ft(h_torch), args.repeats)))
            h_jax, h_torch = fj(h_jax), ft(h_torch)
        for name, tj, tt in rows:
            print(f"| {name} | {tj:.4f} | {tt:.4f} | {tj / tt:.2f} |", flush=True)
        blocks_j = sum(tj for name, tj, _ in rows if name.startswith("block"))
        blocks_t = sum(tt for name, _, tt in rows if name.startswith("block"))
        print(f"| all blocks | {blocks_j:.4f} | {blocks_t:.4f} | {blocks_j / blocks_t:.2f} |")


if __name__ == "__main__":
    main()
