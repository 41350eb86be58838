#!/usr/bin/env bash
# One prepared GPU check (issue 6, section 5): iResNet-50 S-RISE on one accelerator.
#
#   bash benchmarks/gpu_check.sh            # full check, < 8 minutes on an H200
#   GPU_CHECK_QUICK=1 bash benchmarks/gpu_check.sh   # tiny settings: a smoke test on CPU
#
# Needs only jax, flax and numpy (no install, no weights: a randomly initialised
# iResNet-50 has the same cost as a trained one). The srise_jax modules it uses
# are loaded straight from this checkout, without the package's __init__, so the
# package's other dependencies (orbax, matplotlib, ...) need not be installed.
#
# Prints one markdown table: the device's measured bf16 matrix rate; the S-RISE
# triplet latency at N=500 in fp32 and bf16 (4N masked forwards, and 3N with
# share_probe_masks); masked forward passes/s; achieved TFLOP/s at 12.6 GFLOP per
# forward and its share of the measured matrix rate; fp32-vs-bf16 map agreement
# (Spearman); exact Deletion/Insertion throughput. Target: bf16 triplet <= 60 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout "${GPU_CHECK_TIMEOUT:-470}" python3 - <<'PYTHON'
import os
import sys
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

# The library's kernel, masks, metrics and iResNet without srise_jax/__init__.py.
root = Path.cwd()
for name in ("srise_jax", "srise_jax.models"):
    package = types.ModuleType(name)
    package.__path__ = [str(root / name.replace(".", "/"))]
    sys.modules[name] = package
from srise_jax import metrics, similarity, srise  # noqa: E402
from srise_jax.models.iresnet import iresnet_init  # noqa: E402

QUICK = os.environ.get("GPU_CHECK_QUICK") == "1"
ARCH = "r18" if QUICK else "r50"
N = 16 if QUICK else 500
BATCHES = (8,) if QUICK else (500,)  # one chunk: one compile per setting
MATMUL = 256 if QUICK else 8192
METRIC_BATCH = 16 if QUICK else 256
REPEATS = 2 if QUICK else 5
GFLOP_PER_FORWARD = 12.6  # iResNet-50 at 112x112: 6.3 GMACs (DESIGN.md)


def best_time(fn, repeats=REPEATS):
    jax.block_until_ready(fn())  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_rate():
    """Measured bf16 matrix rate in TFLOP/s: chained square matmuls in one jit."""
    a = jax.random.normal(jax.random.key(0), (MATMUL, MATMUL), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (MATMUL, MATMUL), jnp.bfloat16)
    steps = 20

    @jax.jit
    def chain(a, b):
        def body(_, x):
            return (x @ b) * jnp.bfloat16(1e-2)
        return jax.lax.fori_loop(0, steps, body, a)

    seconds = best_time(lambda: chain(a, b))
    return 2 * MATMUL**3 * steps / seconds / 1e12


def ranks(x):
    x = np.asarray(x, np.float64).ravel()
    order = np.argsort(x, kind="stable")
    r = np.empty_like(x)
    r[order] = np.arange(x.size)
    return r


def spearman(a, b):
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


device = jax.devices()[0]
print(f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s); "
      f"jax {jax.__version__}; {ARCH}, N={N}" + (" [QUICK]" if QUICK else ""), flush=True)
rate = matmul_rate()
print(f"measured bf16 matmul rate: {rate:.1f} TFLOP/s", flush=True)

key = jax.random.key(0)
faces = jax.random.uniform(jax.random.key(1), (3, 112, 112, 3))
rows, maps, latency_ms = [], {}, {}
for dtype_name, dtype in (("fp32", jnp.float32), ("bf16", jnp.bfloat16)):
    embed_fn, params = iresnet_init(ARCH, jax.random.key(2), dtype=dtype)
    if QUICK:  # r18, not r50: XLA's own count for one forward pass
        GFLOP_PER_FORWARD = jax.jit(embed_fn).lower(params, faces[:1]).compile() \
            .cost_analysis()["flops"] / 1e9
    for shared in (False, True):
        best = None
        for batch in BATCHES:
            config = srise.SRiseConfig(num_masks=N, batch_size=batch, share_probe_masks=shared,
                                       compute_dtype=None if dtype == jnp.float32 else dtype)
            run = jax.jit(srise.srise_triplet, static_argnums=(0, 6))
            seconds = best_time(lambda: run(embed_fn, params, *faces, key, config))
            if best is None or seconds < best[0]:
                best = (seconds, batch, run(embed_fn, params, *faces, key, config))
        seconds, batch, triplet = best
        if not shared:
            maps[dtype_name] = triplet
            latency_ms[dtype_name] = seconds * 1e3
        forwards = (3 if shared else 4) * N
        fwd_per_s = forwards / seconds
        tflops = fwd_per_s * GFLOP_PER_FORWARD / 1e3
        rows.append((f"S-RISE triplet {dtype_name}" + (", shared probe masks" if shared else ""),
                     f"{seconds * 1e3:.1f} ms", f"batch {batch}", f"{fwd_per_s:,.0f} fwd/s",
                     f"{tflops:.1f} TFLOP/s", f"{100 * tflops / rate:.1f}%"))
        print(" | ".join(rows[-1]), flush=True)

    # Exact Deletion + Insertion of the probe's map (step=1 definition, coarse
    # grid + exact bracket): pairs of curves per second.
    # Reference: a lightly noised copy of the image, and the threshold halfway
    # between the intact and the all-mean image's similarity to it, so both
    # curves cross it (a fixed threshold could make a random network flip at
    # count 0 and time nothing). Any map orders the pixels: the probe's is used.
    saliency = maps["fp32"].mate.saliency_a
    image = faces[0]
    reference = jnp.clip(image + 0.05 * jax.random.normal(jax.random.key(3), image.shape), 0, 1)
    blank = jnp.broadcast_to(image.mean(axis=(0, 1)), image.shape)
    emb = embed_fn(params, jnp.stack([image, blank, reference]))
    sims = similarity.cosine_similarity(emb[:2], emb[2:3])
    threshold = float(sims.astype(jnp.float32).mean())
    both = jax.jit(metrics.deletion_insertion, static_argnums=(0,),
                   static_argnames=("step", "batch_size"))
    seconds = best_time(lambda: both(embed_fn, params, image, reference, saliency,
                                     threshold, step=112, batch_size=METRIC_BATCH))
    deleted, inserted = both(embed_fn, params, image, reference, saliency,
                             threshold, step=112, batch_size=METRIC_BATCH)
    rows.append((f"Deletion+Insertion {dtype_name}", f"{seconds * 1e3:.1f} ms",
                 f"batch {METRIC_BATCH}", f"{1 / seconds:.1f} map/s",
                 f"flips at {float(deleted.fraction):.3f} / {float(inserted.fraction):.3f}",
                 f"threshold {threshold:.3f}"))
    print(" | ".join(rows[-1]), flush=True)

agreement = [spearman(getattr(getattr(maps["fp32"], p), s), getattr(getattr(maps["bf16"], p), s))
             for p in ("mate", "nonmate") for s in ("saliency_a", "saliency_b")]
bf16_ms = latency_ms["bf16"]
print()
print(f"| {ARCH} at 112x112, N={N} | latency | setting | throughput | achieved | of bf16 matmul rate |")
print("|---|---|---|---|---|---|")
print(f"| bf16 matmul ({MATMUL}^2, measured) | | | | {rate:.1f} TFLOP/s | 100% |")
for row in rows:
    print("| " + " | ".join(row) + " |")
print(f"| fp32 vs bf16 maps, Spearman (min of 4) | {min(agreement):.4f} | | | | |")
print()
print(f"target: bf16 triplet at N=500 <= 60 ms: {bf16_ms:.1f} ms -> "
      f"{'MET' if bf16_ms <= 60 else 'NOT MET'}" + (" (QUICK run: not the real check)" if QUICK else ""))
PYTHON
