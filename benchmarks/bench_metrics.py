"""Exact Deletion/Insertion: srise_jax.metrics against a per-step loop, same answer asserted.

    python benchmarks/bench_metrics.py                     # flips near 10% of the pixels
    python benchmarks/bench_metrics.py --fraction 0.05 --repeats 1

Model: iResNet-18 with random weights (`iresnet_init`); pair: the aligned
sample faces obama (the image) and obama2 (the reference), 112x112. The map is
planted: a Gaussian bump on the image centre, so pixels go centre outward. The
threshold is planted too: from the coarse curve (every 112th pixel count) it is
set halfway across the first drop below (Deletion) or rise above (Insertion)
the curve's running extreme at `--fraction` of the pixels, so the decision
flips there, once.

Timed, interleaved (best of `--repeats`; every jitted function warmed up
first on a threshold that stops it after its first batch, which reuses the
same compiled program since the threshold is traced):
  * srise_jax, step=isqrt(H*W)=112 (the CLI's default): the coarse grid, then
    the counts inside the first flipping bracket, 64 images per forward pass;
    the step=1 answer whenever the curve crosses the threshold once,
  * srise_jax, step=1: every count from 0, 64 per forward pass, until the batch
    that flips,
  * loop: one forward pass per pixel count (batch of 1, the same jitted
    model), one more pixel changed each step, until the decision flips,
and asserts that all three return the same fraction. Target: step=112 >= 10x
the loop. The loop's cost grows with the flip count, the search's barely, so
the speed-up scales with `--fraction`.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import math
import platform
import time

import jax
import numpy as np

from srise_jax import metrics
from srise_jax.data import sample_triplet
from srise_jax.models import iresnet_init
from srise_jax.similarity import unit_normalize


def _best_time(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times), out


def per_step_loop(embed, params, image: np.ndarray, reference: np.ndarray,
                  saliency: np.ndarray, threshold: float, *, insert: bool) -> float:
    """The metric as its definition reads: change one more pixel, embed, compare, repeat.

    Pixels go highest saliency first, ties in raster order (a stable sort of
    the negated map), replaced by / restored from the per-channel mean.
    """
    height, width, _ = image.shape
    order = np.argsort(-saliency.reshape(-1), kind="stable")
    fill = image.mean(axis=(0, 1))
    current = np.broadcast_to(fill, image.shape).copy() if insert else image.copy()
    source = image if insert else np.broadcast_to(fill, image.shape)
    flat, flat_source = current.reshape(-1, 3), source.reshape(-1, 3)
    ref = np.asarray(unit_normalize(embed(params, reference[None])))[0]
    for count in range(height * width + 1):
        if count:
            pixel = order[count - 1]
            flat[pixel] = flat_source[pixel]
        sim = float(np.asarray(unit_normalize(embed(params, current[None])))[0] @ ref)
        if (sim >= threshold) if insert else (sim < threshold):
            # Flipped before any pixel changed: no decision to explain.
            return math.nan if count == 0 else count / (height * width)
    return 1.0


def planted_threshold(curve: np.ndarray, counts: np.ndarray, target: int, *, insert: bool) -> float:
    """A threshold the coarse `curve` first crosses at the first grid count >= `target`
    where it sets a new running extreme (min for Deletion, max for Insertion)."""
    sign = -1.0 if insert else 1.0  # turn Insertion's rising curve into a falling one
    falling = sign * curve
    best = np.minimum.accumulate(falling)
    for k in range(1, len(counts)):
        if counts[k] >= target and falling[k] < best[k - 1]:
            return float(sign * (best[k - 1] + falling[k]) / 2)
    raise SystemExit("the coarse curve never drops after the target fraction; "
                     "try a smaller --fraction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.10,
                        help="where the planted threshold makes the decision flip")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2,
                        help="best of this many for srise_jax (the loop runs once)")
    args = parser.parse_args()
    print(f"# bench_metrics  {datetime.date.today()}  {platform.machine()}  "
          f"{jax.device_count()} x {jax.devices()[0].device_kind}  jax {jax.__version__}  "
          f"iResNet-18 (random), obama vs obama2, 112x112")

    embed_fn, params = iresnet_init("r18", jax.random.key(0))
    embed = jax.jit(embed_fn)
    image, reference, _ = sample_triplet()
    height, width, _ = image.shape
    yy, xx = np.mgrid[:height, :width]
    saliency = np.exp(-((yy - height / 2) ** 2 + (xx - width / 2) ** 2) / (2 * 20.0**2))
    saliency = saliency.astype(np.float32)
    step = math.isqrt(height * width)
    target = int(args.fraction * height * width)

    rows = []
    for name, fn, insert in (("deletion", metrics.deletion, False),
                             ("insertion", metrics.insertion, True)):
        search = {s: jax.jit(functools.partial(fn, embed_fn, step=s, batch_size=args.batch_size))
                  for s in (step, 1)}
        # A threshold out of reach walks the whole coarse grid: the calibration curve.
        never = 2.0 if insert else -2.0
        coarse = search[step](params, image, reference, saliency, never)
        counts, curve = np.asarray(coarse.counts), np.asarray(coarse.curve)
        on_grid = counts % step == 0
        threshold = planted_threshold(curve[on_grid], counts[on_grid], target, insert=insert)
        # Warm-up: a threshold met at count 0 stops after one batch, same program.
        for f in search.values():
            jax.block_until_ready(f(params, image, reference, saliency, -never))
        jax.block_until_ready(embed(params, image[None]))

        t_search, t_step1 = [], []
        for _ in range(args.repeats):
            t, res_search = _best_time(
                lambda: search[step](params, image, reference, saliency, threshold), 1)
            t_search.append(t)
            t, res_step1 = _best_time(
                lambda: search[1](params, image, reference, saliency, threshold), 1)
            t_step1.append(t)
        start = time.perf_counter()
        loop_fraction = per_step_loop(embed, params, image, reference, saliency, threshold,
                                      insert=insert)
        t_loop = time.perf_counter() - start

        # Compared as pixel counts: the library divides in float32, the loop in float64.
        fractions = (float(res_search.fraction), float(res_step1.fraction), loop_fraction)
        flips = [round(f * height * width) for f in fractions]
        assert flips[0] == flips[1] == flips[2], (name, fractions)
        evaluated = int(np.sum(~np.isnan(np.asarray(res_search.curve))))
        rows.append((name, threshold, fractions[0], min(t_search), evaluated, min(t_step1),
                     t_loop))

    print(f"| metric | threshold | fraction (all equal) | step={step} | counts evaluated "
          f"| step=1 | per-step loop | loop / step={step} (>= 10) | loop / step=1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, threshold, fraction, t_search, evaluated, t_step1, t_loop in rows:
        flip = round(fraction * height * width)
        print(f"| {name} | {threshold:.4f} | {fraction:.4f} ({flip} px) | {t_search:.2f} s "
              f"| {evaluated} | {t_step1:.2f} s | {t_loop:.2f} s ({flip + 1} forwards) "
              f"| {t_loop / t_search:.1f}x | {t_loop / t_step1:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
