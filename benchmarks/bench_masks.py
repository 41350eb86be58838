"""S-RISE mask generation: srise_jax against a per-patch NumPy loop, on the same patch centres.

    python benchmarks/bench_masks.py                       # N = 500 and 8000
    python benchmarks/bench_masks.py --sizes 500 --loop-masks 200 --repeats 3

For each N it times, interleaved (best of `--repeats`):
  * JAX:  `jax.jit(jax.vmap(gaussian_mask))` over `jax.random.split(key, N)`,
          i.e. `gaussian_masks(key, N)`, compiled ahead of time,
  * loop: benchmarks/torch_reference.gaussian_masks_loop, one clipped
          window max per patch in Python, on the first `--loop-masks` masks
          (all of them when N is smaller); its time is scaled by
          N / masks run, since every mask costs the loop the same P patches,
and checks that both give the same masks: the loop's centres are re-derived
from the same keys with `jax.random.randint`, exactly as `gaussian_mask`
draws them, so the two do equal work and the speed-up compares like with like.
Target: JAX >= 20x the loop at N = 8000.

A second table splits the JAX time per mask: the centre draw alone
(`jax.random.randint`, the same vmap), the whole mask, and the whole mask made
64 at a time with `jax.lax.map(..., batch_size=64)` (the kernel's chunking),
which keeps each pass's working set in cache at large N.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from srise_jax import masks as masks_lib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_reference  # noqa: E402
from bench_srise import best_time  # noqa: E402


def bench_size(num_masks: int, *, loop_masks: int, repeats: int, shape=(112, 112),
               num_patches: int = 100, kernel_size: int = 40, sigma: float = 7.0,
               seed: int = 0) -> dict:
    keys = jax.random.split(jax.random.key(seed), num_masks)
    one = functools.partial(masks_lib.gaussian_mask, shape=shape, num_patches=num_patches,
                            kernel_size=kernel_size, sigma=sigma)
    make = jax.jit(jax.vmap(one)).lower(keys).compile()
    # gaussian_mask's own draw, so the loop places the very same patches.
    centres = np.asarray(jax.vmap(lambda k: jax.random.randint(
        k, (num_patches, 2), 0, jnp.array(shape)))(keys))
    run = min(loop_masks, num_masks)
    loop = lambda: torch_reference.gaussian_masks_loop(centres[:run], shape,
                                                       kernel_size=kernel_size, sigma=sigma)

    jax_masks = np.asarray(make(keys))
    diff = float(np.abs(jax_masks[:run] - loop()).max())
    del jax_masks
    t_jax, t_loop = [], []
    for _ in range(repeats):
        t_jax.append(best_time(lambda: make(keys), 1))
        t_loop.append(best_time(loop, 1))
    t_jax, t_loop = min(t_jax), min(t_loop) * num_masks / run
    return {"N": num_masks, "run": run, "t_jax": t_jax, "t_loop": t_loop,
            "speedup": t_loop / t_jax, "diff": diff}


def profile(num_masks: int, *, repeats: int, shape=(112, 112), seed: int = 0) -> dict:
    """Microseconds per mask of the parts of `gaussian_masks` (see the module docstring)."""
    keys = jax.random.split(jax.random.key(seed), num_masks)
    one = functools.partial(masks_lib.gaussian_mask, shape=shape)
    variants = {
        "centres": jax.vmap(lambda k: jax.random.randint(k, (100, 2), 0, jnp.array(shape))),
        "vmap": jax.vmap(one),
        "map64": lambda ks: jax.lax.map(one, ks, batch_size=64),
    }
    out = {}
    for name, fn in variants.items():
        compiled = jax.jit(fn).lower(keys).compile()
        jax.block_until_ready(compiled(keys))
        out[name] = 1e6 * best_time(lambda: compiled(keys), repeats) / num_masks
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[500, 8000])
    parser.add_argument("--loop-masks", type=int, default=1000,
                        help="masks the NumPy loop makes (its time is scaled to N)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# bench_masks  {datetime.date.today()}  {platform.machine()}  "
          f"{jax.device_count()} x {jax.devices()[0].device_kind}  jax {jax.__version__}  "
          f"112x112, 100 patches, kernel 40, sigma 7")
    print("| N | JAX | NumPy per-patch loop | loop masks run | JAX masks/s | loop masks/s "
          "| speed-up | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        r = bench_size(n, loop_masks=args.loop_masks, repeats=args.repeats)
        print(f"| {n} | {r['t_jax']:.3f} s | {r['t_loop']:.3f} s | {r['run']} "
              f"| {n / r['t_jax']:.0f} | {n / r['t_loop']:.0f} | {r['speedup']:.1f}x "
              f"| {r['diff']:.1e} |", flush=True)
    print()
    print("| N | centre draw, us/mask | vmap(gaussian_mask), us/mask "
          "| lax.map, batches of 64, us/mask |")
    print("|---|---|---|---|")
    for n in args.sizes:
        p = profile(n, repeats=args.repeats)
        print(f"| {n} | {p['centres']:.0f} | {p['vmap']:.0f} | {p['map64']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
