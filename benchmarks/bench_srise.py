"""S-RISE triplet throughput against the forward-pass floor, measured side by side.

    python benchmarks/bench_srise.py                      # r18 and r50, N=500
    python benchmarks/bench_srise.py --archs r18 --num-masks 128 --repeats 3

For each model it times, in one process and interleaved (kernel, floor,
kernel, floor, ...; the best of each is kept):
  * kernel: `jax.jit(srise_triplet)` on a random triplet (4N masked forwards),
  * floor:  the same forward passes as plain jitted `embed_fn` calls at the
            same batch sizes (N // B full batches and one of N % B per masked
            image, plus the reference embeddings), on fresh inputs,
  * masks:  generating the kernel's 2N masks alone, in the same chunks,
and prints masked forward passes per second, the ratio kernel / floor
(target <= 1.10) and the masks' share of the kernel time (target < 2%).
Absolute times on a shared CPU are noise; the ratios are the result.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import srise_jax
from srise_jax import masks as masks_lib
from srise_jax.models import iresnet_init


def _best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def bench_arch(arch: str, *, num_masks: int, batch_size: int, repeats: int,
               seed: int = 0) -> dict:
    key = jax.random.key(seed)
    k_model, k_img, k_run = jax.random.split(key, 3)
    embed_fn, params = iresnet_init(arch, k_model)
    probe, mate, nonmate = jax.random.uniform(k_img, (3, 112, 112, 3))
    config = srise_jax.SRiseConfig(num_masks=num_masks, batch_size=batch_size)

    # Compiled ahead of time: a warm-up call would run all 4N forwards.
    kernel = jax.jit(srise_jax.srise_triplet, static_argnums=(0, 6)).lower(
        embed_fn, params, probe, mate, nonmate, k_run, config).compile()

    # The floor: every forward pass the kernel makes, as plain calls.
    embed = jax.jit(embed_fn)
    sizes = [batch_size] * (num_masks // batch_size)
    if num_masks % batch_size:
        sizes.append(num_masks % batch_size)
    # 2 pairs x 2 masked images each, then the references (2 + 2 + 3).
    shapes = sizes * 4 + [2, 2, 3]
    rng = np.random.default_rng(seed)
    inputs = [jnp.asarray(rng.uniform(size=(b, 112, 112, 3)), jnp.float32)
              for b in shapes]
    for b in sorted(set(shapes)):
        jax.block_until_ready(embed(params, inputs[shapes.index(b)]))

    mask_fn = jax.jit(jax.vmap(lambda k: masks_lib.gaussian_mask(
        k, (112, 112), num_patches=config.num_patches,
        kernel_size=config.kernel_size, sigma=config.sigma)))
    mask_keys = jax.random.split(k_run, 2 * num_masks)
    chunks = [mask_keys[i:i + batch_size]
              for i in range(0, 2 * num_masks, batch_size)]
    for c in {c.shape[0]: c for c in chunks}.values():
        jax.block_until_ready(mask_fn(c))

    run_kernel = lambda: kernel(params, probe, mate, nonmate, k_run)
    run_floor = lambda: [embed(params, x) for x in inputs]
    run_masks = lambda: [mask_fn(c) for c in chunks]
    t_kernel, t_floor = [], []
    for _ in range(repeats):
        t_kernel.append(_best_time(run_kernel, 1))
        t_floor.append(_best_time(run_floor, 1))
    t_kernel, t_floor = min(t_kernel), min(t_floor)
    t_masks = _best_time(run_masks, max(repeats, 3))
    forwards = 4 * num_masks
    return {
        "arch": arch, "N": num_masks, "B": batch_size,
        "kernel_fwd_s": forwards / t_kernel, "floor_fwd_s": forwards / t_floor,
        "ratio": t_kernel / t_floor, "mask_share": t_masks / t_kernel,
        "t_kernel": t_kernel, "t_floor": t_floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["r18", "r50"])
    parser.add_argument("--num-masks", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"# bench_srise  {datetime.date.today()}  {platform.machine()}  "
          f"{jax.device_count()} x {jax.devices()[0].device_kind}  "
          f"jax {jax.__version__}")
    print("| model | N | batch | kernel fwd/s | floor fwd/s | kernel/floor "
          "| masks share |")
    print("|---|---|---|---|---|---|---|")
    for arch in args.archs:
        r = bench_arch(arch, num_masks=args.num_masks,
                       batch_size=args.batch_size, repeats=args.repeats)
        print(f"| {r['arch']} | {r['N']} | {r['B']} | {r['kernel_fwd_s']:.1f} "
              f"| {r['floor_fwd_s']:.1f} | {r['ratio']:.3f} "
              f"| {100 * r['mask_share']:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
