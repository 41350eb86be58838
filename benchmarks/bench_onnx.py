"""An ONNX-imported iResNet against the library's own Flax iResNet, side by side.

    python benchmarks/bench_onnx.py                  # r50, forward batch 32; S-RISE N=96
    python benchmarks/bench_onnx.py --quick          # r18, small: a smoke run

One random iResNet (tests/torch_iresnet.py) is exported to ONNX twice, as
insightface's packs may be: with its BatchNormalization nodes kept, and with
the exporter folding them into the convolutions. The same weights go to the
Flax iResNet through weights_conversion. The script checks that all three give
the same embeddings, times reading the .onnx file, and then times, in one
process and interleaved (best of --repeats):

  * forward: `jax.jit(embed_fn)` on a batch of --batch crops, Flax vs each
    ONNX import (target: ONNX / Flax <= 1.15);
  * S-RISE: `jax.jit(srise_triplet)` with the imported model (BN kept) and
    the library's default settings, against its forward floor (the same
    forward passes as plain jitted calls, bench_srise's `make_floor`;
    target: kernel / floor <= 1.10).

Absolute times on a shared CPU are noise; the ratios are the result.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT / "tests"))  # the PyTorch iResNet and the ONNX export helper
sys.path.insert(0, str(_ROOT / "benchmarks"))

import srise_jax  # noqa: E402
from bench_srise import best_time, make_floor  # noqa: E402
from onnx_nets import export  # noqa: E402
from srise_jax.models import ARCH_BLOCKS, iresnet_embed_fn, load_onnx  # noqa: E402
from torch_iresnet import TorchIResNet, randomize_  # noqa: E402
from weights_conversion.arcface import convert_state_dict  # noqa: E402


def relative_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=list(ARCH_BLOCKS), default="r50")
    parser.add_argument("--batch", type=int, default=32, help="forward batch (default: 32)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-masks", type=int, default=96, help="S-RISE masks per pair")
    parser.add_argument("--batch-size", type=int, default=32, help="S-RISE batch")
    parser.add_argument("--quick", action="store_true", help="r18, batch 8, 16 masks, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.arch, args.batch, args.repeats, args.num_masks, args.batch_size = "r18", 8, 2, 16, 8

    print(f"# bench_onnx.py {datetime.date.today()}, {platform.node()}, "
          f"{platform.processor() or platform.machine()}, jax {jax.__version__}, "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s)")
    net = randomize_(TorchIResNet(ARCH_BLOCKS[args.arch]), seed=0)
    flax_params = convert_state_dict(net.state_dict())
    flax_embed = iresnet_embed_fn(args.arch)

    with tempfile.TemporaryDirectory() as tmp:
        imports = {}
        for label, keep in (("onnx, BN kept", True), ("onnx, BN folded", False)):
            path = export(net, Path(tmp) / f"{label[-6:-1]}.onnx", input_size=112, opset=13,
                          keep_batchnorm=keep)
            start = time.perf_counter()
            embed_fn, params = load_onnx(path)
            seconds = time.perf_counter() - start
            print(f"# {label}: {path.stat().st_size / 2**20:.0f} MiB read by load_onnx in "
                  f"{seconds:.2f} s")
            imports[label] = (embed_fn, params)

    rng = np.random.default_rng(0)
    images = rng.random((args.batch, 112, 112, 3), dtype=np.float32)
    runs = {"flax": (jax.jit(flax_embed), flax_params)}
    runs.update({label: (jax.jit(fn), params) for label, (fn, params) in imports.items()})
    reference = np.asarray(runs["flax"][0](flax_params, images))
    for label in imports:
        print(f"# {label} vs flax: relative L2 of the embeddings "
              f"{relative_l2(runs[label][0](runs[label][1], images), reference):.1e}")

    times = {label: [] for label in runs}
    for _ in range(args.repeats):
        for label, (fn, params) in runs.items():
            times[label].append(best_time(lambda: fn(params, images), 1))
    flax_time = min(times["flax"])
    print(f"\n{args.arch}, forward batch {args.batch}, best of {args.repeats}, interleaved:")
    print("| model | images/s | time / flax (<= 1.15) |")
    print("|---|---|---|")
    for label, values in times.items():
        t = min(values)
        print(f"| {label} | {args.batch / t:.1f} | {t / flax_time:.3f} |", flush=True)

    embed_fn, params = imports["onnx, BN kept"]
    config = srise_jax.SRiseConfig(num_masks=args.num_masks, batch_size=args.batch_size)
    key = jax.random.key(1)
    probe, mate, nonmate = (np.asarray(x) for x in jax.random.uniform(key, (3, 112, 112, 3)))
    kernel = jax.jit(srise_jax.srise_triplet, static_argnums=(0, 6)).lower(
        embed_fn, params, probe, mate, nonmate, key, config).compile()
    floor = make_floor(embed_fn, params, 112, num_masks=args.num_masks,
                       batch_size=args.batch_size, seed=0)
    kernel_times, floor_times = [], []
    for _ in range(max(2, args.repeats // 2)):
        floor_times.append(best_time(floor, 1))
        kernel_times.append(best_time(lambda: kernel(params, probe, mate, nonmate, key), 1))
    ratio = min(kernel_times) / min(floor_times)
    print(f"\nS-RISE triplet on the imported {args.arch}, N = {args.num_masks}, batch "
          f"{args.batch_size}, default settings: kernel {4 * args.num_masks / min(kernel_times):.1f}"
          f" masked fwd/s, floor {4 * args.num_masks / min(floor_times):.1f}; "
          f"kernel / floor {ratio:.3f} (<= 1.10)")
    onnx_ratio = min(times["onnx, BN kept"]) / flax_time
    print(f"\nsummary: ONNX-imported {args.arch} forward / Flax {onnx_ratio:.3f} (BN kept), "
          f"{min(times['onnx, BN folded']) / flax_time:.3f} (BN folded); "
          f"S-RISE on it / its forward floor {ratio:.3f}")


if __name__ == "__main__":
    main()
