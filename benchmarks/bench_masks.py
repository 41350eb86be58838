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

Two more tables say where the JAX time goes:
  * per stage, at a cache-sized N (256 masks, about 12 MB of output): the
    centre draw, the window-column scatter-min, the horizontal min-plus
    pass, the exp; and the whole mask at that N;
  * per N: microseconds per mask, minor page faults per mask and the share
    of the CPU time spent in the kernel (getrusage), for the full-N vmap, for
    `jax.lax.map(..., batch_size=256)` and for 256-mask calls from Python.
    At large N the masks and every intermediate are fresh memory that the
    OS must fault in page by page; the kernel share shows what that costs.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import platform
import resource
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


def _timed(fn, repeats: int, count: int) -> dict:
    """us per item, minor page faults per item and the kernel's share of CPU time."""
    jax.block_until_ready(fn())
    before = resource.getrusage(resource.RUSAGE_SELF)
    best = best_time(fn, repeats)
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, sys_ = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"us": 1e6 * best / count,
            "faults": (after.ru_minflt - before.ru_minflt) / repeats / count,
            "sys": sys_ / max(user + sys_, 1e-9)}


def stages(*, repeats: int, num_masks: int = 256, shape=(112, 112), kernel_size: int = 40,
           sigma: float = 7.0, seed: int = 0) -> dict:
    """us per mask of each stage of `gaussian_mask`, each compiled alone, at a cache-sized N."""
    keys = jax.random.split(jax.random.key(seed), num_masks)
    draw = jax.vmap(lambda k: jax.random.randint(k, (100, 2), 0, jnp.array(shape)))
    columns = functools.partial(masks_lib._window_column_distances, shape=shape,
                                kernel_size=kernel_size)
    horizontal = jax.vmap(lambda col: masks_lib._min_plus_axis(col, 1, kernel_size))
    exp = jax.vmap(lambda d: jnp.exp(-d / (2.0 * sigma**2)))
    whole = jax.vmap(functools.partial(masks_lib.gaussian_mask, shape=shape,
                                       kernel_size=kernel_size, sigma=sigma))
    out, x = {}, keys
    for name, fn in [("centres", draw), ("columns", jax.vmap(columns)),
                     ("horizontal", horizontal), ("exp", exp)]:
        compiled = jax.jit(fn).lower(x).compile()
        out[name] = _timed(lambda: compiled(x), repeats, num_masks)["us"]
        x = compiled(x)
    compiled = jax.jit(whole).lower(keys).compile()
    out["whole"] = _timed(lambda: compiled(keys), repeats, num_masks)["us"]
    return out


def memory_profile(num_masks: int, *, repeats: int, chunk: int = 256, shape=(112, 112),
                   seed: int = 0) -> dict:
    """Time, page faults and kernel share per mask: full vmap, lax.map chunks, Python chunks."""
    keys = jax.random.split(jax.random.key(seed), num_masks)
    one = functools.partial(masks_lib.gaussian_mask, shape=shape)
    full = jax.jit(jax.vmap(one)).lower(keys).compile()
    mapped = jax.jit(lambda ks: jax.lax.map(one, ks, batch_size=chunk)).lower(keys).compile()
    pieces = [keys[i:i + chunk] for i in range(0, num_masks, chunk)]
    per_chunk = jax.jit(jax.vmap(one))
    return {"vmap": _timed(lambda: full(keys), repeats, num_masks),
            "map": _timed(lambda: mapped(keys), repeats, num_masks),
            "python": _timed(lambda: [per_chunk(k) for k in pieces], repeats, num_masks)}


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
    st = stages(repeats=max(args.repeats, 5))
    print("| stage (256 masks, cache-sized) | centre draw | window columns (scatter-min) "
          "| horizontal pass | exp | whole mask |")
    print("|---|---|---|---|---|---|")
    print("| us/mask | " + " | ".join(f"{st[k]:.1f}" for k in
                                     ("centres", "columns", "horizontal", "exp",
                                      "whole")) + " |", flush=True)
    print()
    print("| N | vmap us/mask | faults/mask | kernel share | lax.map(256) us/mask | faults/mask "
          "| kernel share | 256-mask calls us/mask | faults/mask | kernel share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        p = memory_profile(n, repeats=args.repeats)
        cells = [f"{p[k]['us']:.1f} | {p[k]['faults']:.1f} | {100 * p[k]['sys']:.0f}%"
                 for k in ("vmap", "map", "python")]
        print(f"| {n} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
