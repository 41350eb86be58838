"""What the Deletion/Insertion metric fills cost, next to the forward passes they feed.

For one real face pair (the bundled sample photos, aligned for dlib) and a
centred-prior map, it takes the kinds of batch the exact flip search
evaluates (`metrics._flip_search`): coarse batches (counts `step` apart)
from count 0 (Insertion's first batch: almost every pixel removed) and from
a fifth of the pixels, and a fine batch (consecutive counts), for Deletion
and Insertion, and times, alternating, on the same machine in one run:

  forward   dlib's embedding of the batch (what every fill costs anyway),
  impute    the "impute" fill as the metric computes it now
            (`fills.linear_impute_sequence`: warm-started along the batch,
            conjugate gradients with the multilevel preconditioner),
  diagonal  the same with the diagonal (Jacobi) preconditioner, the
            solver's before the multilevel one,
  cold      each removed set solved on its own (`vmap(fills.linear_impute)`,
            coarse-to-fine start), as before the warm start,

and prints each as a ratio to the forward pass, plus diagonal / impute and
cold / impute, and the largest distance of the impute and diagonal answers
to a tight solve (tol 3e-8): both stop by the same rule, and this is how far
that rule leaves each from the exact solution. The whole metric under each
fill is timed too (`metrics.deletion_insertion`).

Usage: python benchmarks/bench_fills.py [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from srise_jax import data, fills, metrics, models


def best_time(fn, repeats):
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="images per batch (default 32)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = models.load("dlib")
    size = model.image_size
    probe, mate, _ = data.sample_triplet(size, template=model.template)
    probe, mate = jnp.asarray(probe, jnp.float32), jnp.asarray(mate, jnp.float32)
    yy, xx = np.mgrid[:size, :size]
    prior = -((yy - size / 2) ** 2 + (xx - size / 2) ** 2).astype(np.float32)
    rank = np.argsort(np.argsort(-prior.ravel(), kind="stable")).reshape(size, size)
    step = math.isqrt(size * size)
    start = size * size // 5
    batches = {"coarse from 0": step * np.arange(args.batch),
               "coarse": start + step * np.arange(args.batch),
               "fine": start + 1 + np.arange(args.batch)}
    forward = jax.jit(model.embed_fn)
    cold = jax.jit(jax.vmap(lambda r: fills.linear_impute(probe, r)))
    warm = jax.jit(lambda r: fills.linear_impute_sequence(probe, r))
    diagonal = jax.jit(lambda r: fills.linear_impute_sequence(probe, r,
                                                              preconditioner="diagonal"))
    tight = jax.jit(jax.vmap(lambda r: fills.linear_impute(probe, r, tol=3e-8,
                                                           max_iterations=20_000)))

    print(f"dlib {size}x{size}, batch {args.batch}, best of {args.repeats}, jax "
          f"{jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s)")
    print("| batch | mode | forward s | impute / forward | diagonal / forward | "
          "cold / forward | diagonal / impute | cold / impute | impute error | "
          "diagonal error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, counts in batches.items():
        for mode in ("deletion", "insertion"):
            changed = rank[None] < counts[:, None, None]
            removed = jnp.asarray(changed if mode == "deletion" else ~changed)
            images = jnp.where(removed[..., None], probe.mean((0, 1)), probe)
            t_fwd = best_time(lambda: forward(model.params, images), args.repeats)
            t_warm = best_time(lambda: warm(removed), args.repeats)
            t_diag = best_time(lambda: diagonal(removed), args.repeats)
            t_cold = best_time(lambda: cold(removed), args.repeats)
            exact = np.asarray(tight(removed))
            errors = [np.abs(np.asarray(fn(removed)) - exact).max() for fn in (warm, diagonal)]
            print(f"| {name} | {mode} | {t_fwd:.3f} | {t_warm / t_fwd:.2f} | "
                  f"{t_diag / t_fwd:.2f} | {t_cold / t_fwd:.2f} | {t_diag / t_warm:.2f} | "
                  f"{t_cold / t_warm:.2f} | {errors[0]:.1e} | {errors[1]:.1e} |")

    print("\n| metric fill | deletion+insertion s | / mean fill |")
    print("|---|---|---|")
    base = None
    for fill in metrics.METRIC_FILLS:
        run = jax.jit(lambda fill=fill: metrics.deletion_insertion(
            model.embed_fn, model.params, probe, mate, jnp.asarray(prior), model.threshold,
            step=step, batch_size=args.batch, fill=fill))
        seconds = best_time(run, args.repeats)
        base = base or seconds
        print(f"| {fill} | {seconds:.2f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
