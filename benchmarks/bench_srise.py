"""S-RISE triplet throughput against the forward-pass floor and a PyTorch reference, side by side.

    python benchmarks/bench_srise.py                       # r18, r50 and dlib, N=500
    python benchmarks/bench_srise.py --models r18 --num-masks 128 --repeats 3
    python benchmarks/bench_srise.py --models dlib --variants    # issue 14's options

For each model (iResNet-18/50 with random weights drawn by
tests/torch_iresnet.py and converted by weights_conversion.arcface; dlib's
ResNet with its trained weights from srise_jax.models.load_dlib) it first
checks that the PyTorch network gives the JAX network's embeddings, and that
the PyTorch reference (benchmarks/torch_reference.py) gives the kernel's maps
on a few masks with the same patch centres. Then it times, in one process and
interleaved (each method once per repeat, the best of each kept):

  * kernel:  `jax.jit(srise_triplet)` on a random triplet (4N masked forwards),
  * share:   the same with `SRiseConfig(share_probe_masks=True)` (3N forwards,
             the same four maps: what a user who wants the triplet runs),
  * floor:   the kernel's forward passes as plain jitted `embed_fn` calls at
             the same batch sizes (N // B full batches and one of N % B per
             masked image, plus the reference embeddings), on fresh inputs,
  * torch batched:    the PyTorch reference, N masks per pair made patch by
             patch in NumPy, masked images B at a time (4N forwards),
  * torch sequential: the same one masked image per forward pass; only the
             first `--seq-images` masked images of one pair run, and the
             triplet time is extrapolated from the time per masked image,
  * masks:   generating the kernel's 2N masks alone, in the same chunks,

and prints masked forward passes per second, triplets per second, peak memory
and the ratios: kernel / floor (target <= 1.10), masks' share of the kernel
(target < 2%), torch batched / kernel (target >= 1.0), torch batched / share
(target >= 1.25) and torch sequential / kernel. torch runs with as many
threads as XLA's CPU client uses (every core the process may run on).
Absolute times on a shared CPU are noise; the ratios are the result.

The kernel and the PyTorch reference use the same absolute patch sizes
(`reference_side=None`: kernel 40, sigma 7 at every image size), as the
reference makes them. `--variants` instead times `srise_triplet` with each of
`VARIANTS` (the library's default with patches scaled to the image, and each
option of issue 14: control variates, antithetic pairs, stratified centres,
multi-scale patches, per-mask random fills, all of them together) against
the same forward floor, interleaved, and prints kernel / floor per variant.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

import srise_jax
from srise_jax import masks as masks_lib
from srise_jax.models import ARCH_BLOCKS, load_dlib, iresnet_embed_fn
from weights_conversion.arcface import convert_state_dict

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT / "tests"))  # the parity tests' PyTorch iResNet
sys.path.insert(0, str(_ROOT / "benchmarks"))
import torch_reference  # noqa: E402
from torch_iresnet import TorchIResNet, randomize_  # noqa: E402

# XLA's CPU client runs one intra-op thread per core the process may use.
THREADS = len(os.sched_getaffinity(0))

# `--variants`: SRiseConfig options timed against the forward floor.
VARIANTS = {
    "default (scaled patches)": {},
    "absolute patches": {"reference_side": None},
    "normalize=regression": {"normalize": "regression"},
    "antithetic": {"antithetic": True},
    "centres=stratified": {"centres": "stratified"},
    "scales=0.5,1,2": {"scales": (0.5, 1.0, 2.0)},
    "fill=mixed": {"fill": "mixed"},
    "all of them": {"normalize": "regression", "antithetic": True, "centres": "stratified",
                    "scales": (0.5, 1.0, 2.0), "fill": "mixed"},
}


def best_time(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls of `fn`, its result awaited."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


class PeakRSS:
    """Peak growth of the process's resident memory during a `with` block, sampled every 2 ms.

    tracemalloc sees only Python's allocator, not torch's or XLA's buffers, so
    both frameworks are measured the same way, from /proc/self/statm. An
    allocator that keeps memory from an earlier call shows less growth on a
    later one: callers keep the largest growth over calls.
    """

    _PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self):
        self.peak = 0

    @classmethod
    def _rss(cls) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * cls._PAGE

    def _watch(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss() - self._base)

    def __enter__(self):
        self._base, self._stop = self._rss(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss() - self._base)


def _models(name: str, seed: int):
    """(embed_fn, params, torch net taking NCHW [0, 1], image side) with the same weights."""
    if name == "dlib":
        embed_fn, params = load_dlib()
        return embed_fn, params, torch_reference.TorchDlibResNet.from_flax(params), 150
    net = randomize_(TorchIResNet(ARCH_BLOCKS[name]), seed=seed)
    params = convert_state_dict(net.state_dict())
    return iresnet_embed_fn(name), params, torch_reference.Normalized(net).eval(), 112


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _pair_centres(key: jax.Array, config: srise_jax.SRiseConfig, size: int) -> list[np.ndarray]:
    """The patch centres of the kernel's masks: mate pair, nonmate pair (see srise_triplet).

    Drawn exactly as `masks.gaussian_mask` draws them, so the reference can be
    checked against the kernel's maps.
    """
    def centres(k):
        return jax.random.randint(k, (config.num_patches, 2), 0, jnp.array([size, size]))

    return [np.asarray(jax.vmap(centres)(jax.random.split(k, config.num_masks)))
            for k in jax.random.split(key)]


def check_parity(embed_fn, params, net, triplet, key) -> tuple[float, float]:
    """Max |embedding difference| (JAX vs torch), max |map difference| at a few masks."""
    probe, mate, nonmate = triplet
    images = np.stack(triplet)
    with torch.inference_mode():
        torch_emb = net(_nchw(images)).numpy()
    emb_diff = float(np.abs(np.asarray(jax.jit(embed_fn)(params, images)) - torch_emb).max())
    # 6 masks at batch 4: one full chunk and a remainder, as at N=500.
    config = srise_jax.SRiseConfig(num_masks=6, batch_size=4, reference_side=None)
    out = jax.jit(srise_jax.srise_triplet, static_argnums=(0, 6))(
        embed_fn, params, probe, mate, nonmate, key, config)
    jax_maps = [out.mate.saliency_a, out.mate.saliency_b, out.nonmate.saliency_a,
                out.nonmate.saliency_b]
    centres = _pair_centres(key, config, probe.shape[0])
    torch_maps = torch_reference.srise_triplet(net, probe, mate, nonmate, *centres,
                                               batch_size=config.batch_size)
    map_diff = max(float(np.abs(np.asarray(j) - t.numpy()).max())
                   for j, t in zip(jax_maps, torch_maps))
    return emb_diff, map_diff


def make_floor(embed_fn, params, size: int, *, num_masks: int, batch_size: int, seed: int):
    """The floor: every forward pass the kernel makes, as plain jitted calls (compiled here)."""
    embed = jax.jit(embed_fn)
    sizes = [batch_size] * (num_masks // batch_size)
    if num_masks % batch_size:
        sizes.append(num_masks % batch_size)
    # 2 pairs x 2 masked images each, then the references (2 + 2 + 3).
    shapes = sizes * 4 + [2, 2, 3]
    rng = np.random.default_rng(seed)
    inputs = [jnp.asarray(rng.uniform(size=(b, size, size, 3)), jnp.float32)
              for b in shapes]
    for b in sorted(set(shapes)):
        jax.block_until_ready(embed(params, inputs[shapes.index(b)]))
    return lambda: [embed(params, x) for x in inputs]


def bench_variants(name: str, *, num_masks: int, batch_size: int, repeats: int,
                   seed: int = 0) -> None:
    """Print kernel / floor for each of `VARIANTS`, timed interleaved with the floor."""
    embed_fn, params, _, size = _models(name, seed)
    key = jax.random.key(seed)
    k_img, k_run = jax.random.split(key)
    probe, mate, nonmate = (np.asarray(x) for x in jax.random.uniform(k_img, (3, size, size, 3)))
    run_floor = make_floor(embed_fn, params, size, num_masks=num_masks,
                           batch_size=batch_size, seed=seed)
    kernels = {}
    for label, options in VARIANTS.items():
        cfg = srise_jax.SRiseConfig(num_masks=num_masks, batch_size=batch_size, **options)
        compiled = jax.jit(srise_jax.srise_triplet, static_argnums=(0, 6)).lower(
            embed_fn, params, probe, mate, nonmate, k_run, cfg).compile()
        kernels[label] = (compiled, compiled.memory_analysis().temp_size_in_bytes)
    times = {label: [] for label in ["floor", *kernels]}
    for _ in range(repeats):
        for label, (compiled, _) in kernels.items():
            times["floor"].append(best_time(run_floor, 1))
            times[label].append(best_time(
                lambda: compiled(params, probe, mate, nonmate, k_run), 1))
    floor = min(times["floor"])
    print(f"\n{name}, N = {num_masks}, batch {batch_size}: floor {4 * num_masks / floor:.1f} "
          f"masked fwd/s (best of {len(times['floor'])}, one before each kernel call)")
    print("| variant | kernel fwd/s | kernel / floor (<= 1.10) | XLA temp |")
    print("|---|---|---|---|")
    for label, (_, temp) in kernels.items():
        t = min(times[label])
        print(f"| {label} | {4 * num_masks / t:.1f} | {t / floor:.3f} | "
              f"{temp / 2**20:.0f} MiB |", flush=True)


def bench_model(name: str, *, num_masks: int, batch_size: int, repeats: int,
                seq_images: int, seed: int = 0) -> dict:
    embed_fn, params, net, size = _models(name, seed)
    key = jax.random.key(seed)
    k_img, k_run, k_check = jax.random.split(key, 3)
    triplet = tuple(np.asarray(x) for x in jax.random.uniform(k_img, (3, size, size, 3)))
    probe, mate, nonmate = triplet
    emb_diff, map_diff = check_parity(embed_fn, params, net, triplet, k_check)
    print(f"# {name}: max |embedding JAX - torch| {emb_diff:.2e}, "
          f"max |saliency JAX - torch reference| {map_diff:.2e} (6 masks, same centres)",
          flush=True)

    config = srise_jax.SRiseConfig(num_masks=num_masks, batch_size=batch_size,
                                   reference_side=None)
    shared = srise_jax.SRiseConfig(num_masks=num_masks, batch_size=batch_size,
                                   share_probe_masks=True, reference_side=None)
    # Compiled ahead of time: a warm-up call would run all 4N forwards.
    def compile_kernel(cfg):
        return jax.jit(srise_jax.srise_triplet, static_argnums=(0, 6)).lower(
            embed_fn, params, probe, mate, nonmate, k_run, cfg).compile()

    kernel, kernel_shared = compile_kernel(config), compile_kernel(shared)
    stats = kernel.memory_analysis()
    xla_bytes = (stats.temp_size_in_bytes + stats.argument_size_in_bytes
                 + stats.output_size_in_bytes)

    run_floor = make_floor(embed_fn, params, size, num_masks=num_masks,
                           batch_size=batch_size, seed=seed)
    rng = np.random.default_rng(seed)

    mask_fn = jax.jit(jax.vmap(lambda k: masks_lib.gaussian_mask(
        k, (size, size), num_patches=config.num_patches,
        kernel_size=config.kernel_size, sigma=config.sigma)))
    mask_keys = jax.random.split(k_run, 2 * num_masks)
    chunks = [mask_keys[i:i + batch_size]
              for i in range(0, 2 * num_masks, batch_size)]
    for c in {c.shape[0]: c for c in chunks}.values():
        jax.block_until_ready(mask_fn(c))

    # The reference draws its own centres, as its user would, each call.
    def run_torch():
        centres = [torch_reference.random_centres(rng, num_masks, (size, size),
                                                  config.num_patches) for _ in range(2)]
        return torch_reference.srise_triplet(net, probe, mate, nonmate, *centres,
                                             batch_size=batch_size)

    seq_masks = max(1, seq_images // 2)
    seq_centres = torch_reference.random_centres(rng, seq_masks, (size, size),
                                                 config.num_patches)
    refs = _nchw(np.stack([probe, mate]))

    def run_torch_refs():
        with torch.inference_mode():
            return net(refs)

    run_kernel = lambda: kernel(params, probe, mate, nonmate, k_run)
    run_shared = lambda: kernel_shared(params, probe, mate, nonmate, k_run)
    run_masks = lambda: [mask_fn(c) for c in chunks]
    run_seq = lambda: torch_reference.srise_pair_sequential(net, probe, mate, seq_centres)

    times = {k: [] for k in ("kernel", "shared", "floor", "torch", "seq", "seq_refs")}
    rss = {"kernel": 0, "torch": 0}
    for _ in range(repeats):
        with PeakRSS() as mem:
            times["kernel"].append(best_time(run_kernel, 1))
        rss["kernel"] = max(rss["kernel"], mem.peak)
        times["shared"].append(best_time(run_shared, 1))
        times["floor"].append(best_time(run_floor, 1))
        with PeakRSS() as mem:
            times["torch"].append(best_time(run_torch, 1))
        rss["torch"] = max(rss["torch"], mem.peak)
        times["seq"].append(best_time(run_seq, 1))
        times["seq_refs"].append(best_time(run_torch_refs, 1))
    t = {k: min(v) for k, v in times.items()}
    t_masks = best_time(run_masks, max(repeats, 3))
    # Per masked image of the sequential loop, its two reference embeddings
    # taken out; a triplet is two pairs of 2N such images plus their references.
    per_image = (t["seq"] - t["seq_refs"]) / (2 * seq_masks)
    t_seq = 2 * (t["seq_refs"] + 2 * num_masks * per_image)
    forwards = 4 * num_masks
    return {
        "model": name, "N": num_masks, "B": batch_size, "t": t, "t_seq": t_seq,
        "t_masks": t_masks, "per_image": per_image, "forwards": forwards,
        "xla_bytes": xla_bytes, "rss": rss, "seq_images": 2 * seq_masks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["r18", "r50", "dlib"],
                        choices=["r18", "r34", "r50", "r100", "dlib"])
    parser.add_argument("--num-masks", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seq-images", type=int, default=64,
                        help="masked images the sequential torch loop runs (extrapolated)")
    parser.add_argument("--variants", action="store_true",
                        help="time the kernel with each of VARIANTS against the floor instead")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.variants:
        for name in args.models:
            bench_variants(name, num_masks=args.num_masks, batch_size=args.batch_size,
                           repeats=args.repeats)
        return
    print(f"# bench_srise  {datetime.date.today()}  {platform.machine()}  "
          f"{jax.device_count()} x {jax.devices()[0].device_kind}  "
          f"jax {jax.__version__}  torch {torch.__version__}  "
          f"XLA CPU threads = torch.set_num_threads = {THREADS}")
    results = []
    for name in args.models:
        r = bench_model(name, num_masks=args.num_masks, batch_size=args.batch_size,
                        repeats=args.repeats, seq_images=args.seq_images)
        results.append(r)
        # Each model's seconds as soon as they exist: a long run stopped early keeps them.
        print(f"# {name} seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in r["t"].items())
              + f", torch sequential (extrapolated) {r['t_seq']:.2f}, masks {r['t_masks']:.3f}",
              flush=True)
    print()
    print("| model | N | batch | kernel fwd/s | floor fwd/s | kernel/floor "
          "| masks share |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        t = r["t"]
        print(f"| {r['model']} | {r['N']} | {r['B']} | {r['forwards'] / t['kernel']:.1f} "
              f"| {r['forwards'] / t['floor']:.1f} | {t['kernel'] / t['floor']:.3f} "
              f"| {100 * r['t_masks'] / t['kernel']:.2f}% |")
    print()
    print("| model | method | masked fwd | s / triplet | masked fwd/s | triplets/s | peak memory |")
    print("|---|---|---|---|---|---|---|")
    mib = lambda b: f"{b / 2**20:.0f} MiB"
    for r in results:
        t, n = r["t"], r["N"]
        rows = [
            ("JAX kernel", 4 * n, t["kernel"],
             f"XLA {mib(r['xla_bytes'])}, RSS +{mib(r['rss']['kernel'])}"),
            ("JAX kernel, share_probe_masks", 3 * n, t["shared"], ""),
            ("JAX forward floor", 4 * n, t["floor"], ""),
            ("torch batched", 4 * n, t["torch"], f"RSS +{mib(r['rss']['torch'])}"),
            (f"torch sequential (from {r['seq_images']})", 4 * n, r["t_seq"], ""),
        ]
        for method, fwd, secs, mem in rows:
            print(f"| {r['model']} | {method} | {fwd} | {secs:.2f} | {fwd / secs:.1f} "
                  f"| {1 / secs:.4f} | {mem} |")
    print()
    print("| model | torch batched / kernel (>= 1.0) | torch batched / share (>= 1.25) "
          "| kernel / floor (<= 1.10) | torch sequential / kernel |")
    print("|---|---|---|---|---|")
    for r in results:
        t = r["t"]
        print(f"| {r['model']} | {t['torch'] / t['kernel']:.3f} | {t['torch'] / t['shared']:.3f} "
              f"| {t['kernel'] / t['floor']:.3f} | {r['t_seq'] / t['kernel']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
