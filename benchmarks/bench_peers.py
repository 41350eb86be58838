"""srise-jax side by side with the peers a user would install instead: xaitk-saliency and Captum.

    python benchmarks/bench_peers.py --quick          # N = 64, 128: a few minutes
    python benchmarks/bench_peers.py                  # N = 500, 2000, 8000
    python benchmarks/bench_peers.py --num-masks 500 2000 --repeats 1

Needs the `bench` extra: pip install 'srise-jax[bench]' (xaitk-saliency, which
brings smqtk-descriptors, scikit-image and scikit-learn; captum; torch); without
them the script names what is missing and exits with status 2.

The same network on every side: tests/torch_iresnet.py's PyTorch iResNet-18
with random weights (seed 0), wrapped to take [0, 1] inputs
(torch_reference.Normalized), and the same weights converted to the Flax
iResNet-18 (`models.arcface_torch.convert_state_dict`, as the parity tests
do); the same aligned sample photos (probe obama, mate obama2, nonmate biden,
112x112); the same masked images per batch (64); torch with as many threads as
XLA's CPU client uses.

Perturbation saliency. Each (tool, N) runs in its own subprocess, so that
peak memories do not mix (the process's VmHWM, the peak of its resident
memory over its whole life: imports, weights, compilation and the
explanation), and the tools alternate within a repeat:

  * xaitk: `PerturbationOcclusion(RISEGrid(n=N, s=8, p1=0.5, seed=0),
    SimilarityScoring("cosine"))` driving an `ImageDescriptorGenerator` that
    embeds the perturbed images 64 at a time with the PyTorch network; black
    fill (its default). The four maps of a triplet take three calls: probe
    against [mate, nonmate] (one masked set serves both queries), mate
    against [probe], nonmate against [probe] (3N forward passes); the pair
    (probe, mate) is the first two calls (2N), timed call by call.
  * srise_pair: `jax.jit(srise_pair)` on the (probe, mate) pair with xaitk's
    own N masks (the same masked images as xaitk's pair; 2N forwards),
    fill 0, `normalize="coverage"`.
  * srise_triplet: `jax.jit(srise_triplet)` with its own Gaussian masks made
    chunk by chunk inside the scan and `share_probe_masks=True` (the same
    four maps from 3N forwards, as xaitk's triplet).

The JAX functions are compiled ahead of time (`lower().compile()`), so the
time is one explanation, compile excluded (the compile time is printed
apart); xaitk is warmed up on a few masks. XLA's own peak is
`Compiled.memory_analysis()` (arguments + outputs + temporaries of the
compiled program): the CPU client keeps no allocator statistics
(`Device.memory_stats()` is None there).

The exact relation of the maps, from both codes (xaitk-saliency 0.15:
`SimilarityScoring.generate`, `utils.masking.weight_regions_by_scalar`;
srise-jax: `srise.finalize`). For a reference image a with masks M_i, query
b, s_i = cos(f(a * M_i), f(b)) and s_0 = cos(f(a), f(b)):

  xaitk:     d_i = max(0, (1 - s_i) - (1 - s_0)) = max(0, s_0 - s_i)
             X(x) = sum_i d_i (1 - M_i(x)) / sum_i (1 - M_i(x))   (divisor 1 where 0)
             map = clip(X / max_x |X(x)|, -1, 1)
  srise-jax: H(x) = sum_i s_i M_i(x) / sum_i M_i(x)              (normalize="coverage")

so xaitk's map is a function of srise_pair's scores and the masks
(`xaitk_from_scores`), exactly up to float64 vs float32 rounding. When no
mask raises the similarity above s_0 (no clipping), it is also a function of
srise-jax's map alone, pixel by pixel: with C(x) = sum_i M_i(x) and
S = sum_i s_i, X(x) = s_0 - (S - C(x) H(x)) / (N - C(x)) (`xaitk_from_map`),
increasing in H(x); for masks of equal coverage at every pixel this is an
affine map, so the ranks agree (Spearman 1). Clipped masks (s_i > s_0) are
the only part of xaitk's map that srise-jax's cannot reproduce; the script
prints how many there are. Both maps are high where keeping the pixel keeps
the pair similar.

Gradient methods. srise-jax's `integrated_gradients` and `gradient` on
s(x) = cos(f(x), f(reference)) against Captum's `IntegratedGradients`
(`method="riemann_middle"`, black baseline, the same number of steps and
internal batch) and `Saliency` (abs=True) on the PyTorch twin's same
similarity; both reduced over channels as srise-jax does (sum for IG, max
for the gradient); Pearson and Spearman of the maps, best time of the repeats.

It ends with one summary line per comparison, e.g.
`srise-jax srise_pair / xaitk-saliency pair (N=2000): 3.1x faster, 0.08x peak
memory, maps rho 0.998`. Targets (issue 16): >= 1.5x faster at N = 2000,
<= 0.25x peak memory at N = 8000, Spearman >= 0.99 after the relation above.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT / "tests"))  # the parity tests' PyTorch iResNet
sys.path.insert(0, str(_ROOT / "benchmarks"))

# XLA's CPU client runs one intra-op thread per core the process may use.
THREADS = len(os.sched_getaffinity(0))
# What the `bench` extra installs, and the modules this script imports from it.
BENCH_EXTRA = "pip install 'srise-jax[bench]'  (xaitk-saliency, captum and torch)"
PEER_MODULES = ("xaitk_saliency", "smqtk_descriptors", "captum", "torch")
ARCH = "r18"
SIDE = 112
BATCH_SIZE = 64
# RISE's own settings (Petsiuk et al. 2018; xaitk's examples): 8x8 grid, p = 0.5.
GRID_CELLS = 8
GRID_P = 0.5
SEED = 0
TOOLS = ("xaitk", "srise_pair", "srise_triplet")
# `--memory-only`: xaitk's own arrays, with a network-free black box.
ARRAYS_TOOL = "xaitk_arrays"


def missing_peers() -> list[str]:
    """The modules of the `bench` extra that are not installed."""
    return [name for name in PEER_MODULES if importlib.util.find_spec(name) is None]


# ------------------------------------------------------------ the relation


def xaitk_from_scores(scores: np.ndarray, similarity: float, masks: np.ndarray) -> np.ndarray:
    """xaitk's `SimilarityScoring("cosine")` map from srise-jax's per-mask scores.

    Args:
      scores: (N,) s_i = cos(f(a * M_i), f(b)), `PairSaliency.scores_a`.
      similarity: s_0 = cos(f(a), f(b)), `PairSaliency.similarity`.
      masks: (N, H, W) the masks M_i.

    Returns:
      (H, W) float64: clip(X / max|X|, -1, 1) with X = sum_i max(0, s_0 - s_i)
      (1 - M_i) / sum_i (1 - M_i) (see the module docstring).
    """
    drops = np.clip(float(similarity) - np.asarray(scores, np.float64), 0.0, None)
    occluded = 1.0 - np.asarray(masks, np.float64)
    divisor = occluded.sum(0)
    divisor[divisor == 0] = 1.0
    return _max_abs_scaled(np.tensordot(drops, occluded, axes=1) / divisor)


def xaitk_from_map(saliency: np.ndarray, scores: np.ndarray, similarity: float,
                   masks: np.ndarray) -> np.ndarray:
    """xaitk's map from srise-jax's coverage-normalised map, exact when no s_i > s_0.

    Args:
      saliency: (H, W) H(x) = sum_i s_i M_i(x) / sum_i M_i(x).
      scores: (N,) the s_i (only their sum S enters).
      similarity: s_0.
      masks: (N, H, W), for the coverage C(x) = sum_i M_i(x).

    Returns:
      (H, W) float64: X(x) = s_0 - (S - C(x) H(x)) / (N - C(x)), scaled by
      max|X| as xaitk scales it.
    """
    masks = np.asarray(masks, np.float64)
    coverage = masks.sum(0)
    occluded = masks.shape[0] - coverage
    occluded[occluded == 0] = 1.0
    total = np.asarray(scores, np.float64).sum()
    return _max_abs_scaled(float(similarity) - (total - coverage * np.asarray(saliency, np.float64))
                           / occluded)


def _max_abs_scaled(x: np.ndarray) -> np.ndarray:
    """sklearn's `maxabs_scale` of one map, then xaitk's clip to [-1, 1]."""
    scale = np.abs(x).max()
    return np.clip(x / (scale if scale > 0 else 1.0), -1.0, 1.0)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(x), np.ravel(y)).statistic)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation of two maps."""
    return float(np.corrcoef(np.ravel(x), np.ravel(y))[0, 1])


# ------------------------------------------------------------ the network


def torch_network(seed: int = SEED):
    """The PyTorch iResNet-18 taking NCHW RGB in [0, 1], random weights from `seed`, eval mode."""
    import torch_reference
    from torch_iresnet import TorchIResNet, randomize_

    from srise_jax.models import ARCH_BLOCKS

    return torch_reference.Normalized(randomize_(TorchIResNet(ARCH_BLOCKS[ARCH]), seed=seed)).eval()


def torch_descriptors(net, *, batch_size: int = BATCH_SIZE):
    """xaitk's black box: an `ImageDescriptorGenerator` embedding HWC [0, 1] images with `net`.

    Args:
      net: a torch module mapping NCHW [0, 1] images to (B, D) embeddings.
      batch_size: images per forward pass.

    Returns:
      The generator (`generate_arrays_from_images` yields one (D,) array per image).
    """
    import torch
    from smqtk_descriptors.interfaces.image_descriptor_generator import ImageDescriptorGenerator

    class TorchDescriptors(ImageDescriptorGenerator):
        """Embeds the images `batch_size` at a time under `torch.inference_mode`."""

        def generate_arrays_from_images(self, img_mat_iter):
            images = np.asarray(list(img_mat_iter) if not isinstance(img_mat_iter, np.ndarray)
                                else img_mat_iter, np.float32)
            for start in range(0, len(images), batch_size):
                chunk = np.ascontiguousarray(images[start:start + batch_size].transpose(0, 3, 1, 2))
                with torch.inference_mode():
                    yield from net(torch.from_numpy(chunk)).numpy()

        def get_config(self):
            return {}

    return TorchDescriptors()


def xaitk_saliency(num_masks: int, *, threads: int = THREADS):
    """xaitk's similarity saliency: RISE perturber + cosine similarity scoring, black fill."""
    from xaitk_saliency.impls.gen_descriptor_sim_sal.similarity_scoring import SimilarityScoring
    from xaitk_saliency.impls.gen_image_similarity_blackbox_sal.occlusion_based import (
        PerturbationOcclusion)
    from xaitk_saliency.impls.perturb_image.rise import RISEGrid

    return PerturbationOcclusion(
        RISEGrid(n=num_masks, s=GRID_CELLS, p1=GRID_P, seed=SEED, threads=threads),
        SimilarityScoring(proximity_metric="cosine"))


def xaitk_masks(num_masks: int, image: np.ndarray) -> np.ndarray:
    """The (N, H, W) float32 masks xaitk's perturber makes for `image` (the same for every image)."""
    from xaitk_saliency.impls.perturb_image.rise import RISEGrid

    return RISEGrid(n=num_masks, s=GRID_CELLS, p1=GRID_P, seed=SEED, threads=THREADS)(image)


# ------------------------------------------------------------ one (tool, N) per process


def _status_mib(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: now, VmHWM: the peak), in MiB.

    VmHWM belongs to the process's address space, which exec replaces; the
    `ru_maxrss` of `getrusage` or `wait4` instead starts from the parent's
    RSS at the fork, which would floor every child at the parent's size.
    """
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _child_xaitk(work: Path, num_masks: int) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    # The pickled module: building it here would import srise_jax (and jax) for ARCH_BLOCKS.
    net = torch.load(work / "torch_net.pt", weights_only=False)
    blackbox = torch_descriptors(net)
    probe, mate, nonmate = np.load(work / "triplet.npy")
    xaitk_saliency(BATCH_SIZE + 1)(probe, [mate], blackbox)  # warm-up: a full batch and one more
    explain = xaitk_saliency(num_masks)
    before = _status_mib("VmRSS")
    t0 = time.perf_counter()
    probe_maps = explain(probe, [mate, nonmate], blackbox)
    t1 = time.perf_counter()
    mate_map = explain(mate, [probe], blackbox)
    t2 = time.perf_counter()
    nonmate_map = explain(nonmate, [probe], blackbox)
    t3 = time.perf_counter()
    np.savez(work / f"xaitk_{num_masks}.npz", probe_mate=probe_maps[0], mate=mate_map[0],
             probe_nonmate=probe_maps[1], nonmate=nonmate_map[0])
    return {"pair_s": t2 - t0, "triplet_s": t3 - t0, "calls_s": [t1 - t0, t2 - t1, t3 - t2],
            "rss_before_mib": before}


def _child_xaitk_arrays(work: Path, num_masks: int) -> dict:
    """xaitk's pair with a network-free black box: the memory of xaitk's own arrays alone.

    The black box returns each image's channel means repeated to 512 values,
    so the peak is xaitk's masks, perturbed images and scoring buffers plus
    the interpreter, without the network's activations.
    """
    from smqtk_descriptors.interfaces.image_descriptor_generator import ImageDescriptorGenerator

    class ChannelMeans(ImageDescriptorGenerator):
        def generate_arrays_from_images(self, img_mat_iter):
            for image in img_mat_iter:
                yield np.repeat(np.asarray(image, np.float32).mean((0, 1)) + 1.0, 171)[:512]

        def get_config(self):
            return {}

    probe, mate, _ = np.load(work / "triplet.npy")
    explain = xaitk_saliency(num_masks)
    before = _status_mib("VmRSS")
    t0 = time.perf_counter()
    explain(probe, [mate], ChannelMeans())
    return {"seconds": time.perf_counter() - t0, "rss_before_mib": before}


def _child_jax(work: Path, num_masks: int, tool: str) -> dict:
    import jax

    import srise_jax
    from srise_jax.models import iresnet_embed_fn

    embed_fn = iresnet_embed_fn(ARCH)
    with open(work / "flax_params.pkl", "rb") as f:
        params = jax.device_put(pickle.load(f))
    probe, mate, nonmate = (jax.device_put(x) for x in np.load(work / "triplet.npy"))
    if tool == "srise_pair":
        masks = jax.device_put(np.load(work / f"masks_{num_masks}.npy"))
        args = (params, probe, mate, masks)
        lowered = jax.jit(srise_jax.srise_pair, static_argnames=(
            "embed_fn", "batch_size", "fill")).lower(embed_fn, *args, batch_size=BATCH_SIZE,
                                                     fill=0.0)
    else:
        config = srise_jax.SRiseConfig(num_masks=num_masks, batch_size=BATCH_SIZE, fill=0.0,
                                       share_probe_masks=True)
        args = (params, probe, mate, nonmate, jax.random.key(SEED))
        lowered = jax.jit(srise_jax.srise_triplet, static_argnames=("embed_fn", "config")).lower(
            embed_fn, *args, config=config)
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    stats = compiled.memory_analysis()
    xla_mib = (stats.argument_size_in_bytes + stats.output_size_in_bytes
               + stats.temp_size_in_bytes) / 2**20 if stats is not None else float("nan")
    before = _status_mib("VmRSS")
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    seconds = time.perf_counter() - t0
    if tool == "srise_pair":
        np.savez(work / f"srise_pair_{num_masks}.npz", **{k: np.asarray(v) for k, v in
                                                         out._asdict().items()})
    return {"pair_s" if tool == "srise_pair" else "triplet_s": seconds, "compile_s": compile_s,
            "xla_peak_mib": xla_mib, "rss_before_mib": before,
            "device_memory_stats": jax.devices()[0].memory_stats() is not None}


def run_child(work: Path, tool: str, num_masks: int) -> dict:
    """Run one (tool, N) in a fresh interpreter; its result, with its own peak RSS."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", tool, "--work", str(work), "--num-masks",
         str(num_masks)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} at N={num_masks} failed with status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------ gradient methods


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def forward_floor(net, embed_fn, params, *, batches: int, sizes: tuple[int, ...] = (8, BATCH_SIZE)
                  ) -> dict:
    """ms per image of forward passes in each framework at each batch size, best of `batches`.

    64 images per measurement, in batches of each size, the frameworks
    alternated. Both peers spend almost all of an explanation in these forward
    passes, so their ratio bounds the speed-up any mask explainer can show on
    this network.
    """
    import jax
    import torch

    x = np.random.default_rng(SEED).random((BATCH_SIZE, SIDE, SIDE, 3), dtype=np.float32)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    embed = jax.jit(embed_fn)
    floors = {}
    with torch.inference_mode():
        for size in sizes:
            starts = range(0, BATCH_SIZE, size)
            jax.block_until_ready(embed(params, x[:size]))
            net(xt[:size])
            best = {"torch": float("inf"), "jax": float("inf")}
            for _ in range(batches):
                best["torch"] = min(best["torch"], _best(
                    lambda: [net(xt[i:i + size]) for i in starts], 1))
                best["jax"] = min(best["jax"], _best(lambda: [jax.block_until_ready(
                    embed(params, x[i:i + size])) for i in starts], 1))
            floors[size] = {k: v / BATCH_SIZE * 1e3 for k, v in best.items()}
    return floors


def gradient_comparison(net, embed_fn, params, image: np.ndarray, reference: np.ndarray, *,
                        steps: int, repeats: int) -> list[dict]:
    """srise-jax's IG and gradient vs Captum's on the same similarity: maps and times."""
    import jax
    import torch
    from captum.attr import IntegratedGradients, Saliency

    from srise_jax.explainers import gradients

    def nchw(x):
        return torch.from_numpy(np.ascontiguousarray(x[None].transpose(0, 3, 1, 2)))

    with torch.inference_mode():
        target = net(nchw(reference))[0]

    def similarity(x):
        return torch.nn.functional.cosine_similarity(net(x), target[None], dim=1)

    x = nchw(image)
    internal = 8  # srise-jax's `integrated_gradients` default batch
    captum = {
        "integrated_gradients": lambda: IntegratedGradients(similarity).attribute(
            x, baselines=0.0, n_steps=steps, method="riemann_middle",
            internal_batch_size=internal)[0].sum(0).detach().numpy(),
        "gradient": lambda: Saliency(similarity).attribute(
            x.clone().requires_grad_(), abs=True)[0].amax(0).numpy(),
    }
    ours = {
        "integrated_gradients": jax.jit(lambda p, i, r: gradients.integrated_gradients(
            embed_fn, p, i, r, jax.random.key(0), num_steps=steps, batch_size=internal)),
        "gradient": jax.jit(lambda p, i, r: gradients.gradient(embed_fn, p, i, r,
                                                              jax.random.key(0))),
    }
    rows = []
    for name in ("integrated_gradients", "gradient"):
        t0 = time.perf_counter()
        jax_map = np.asarray(jax.block_until_ready(ours[name](params, image, reference)))
        first_s = time.perf_counter() - t0
        torch_map = captum[name]()
        # Alternated, best of each: the shared CPU's load changes within seconds.
        jax_s = torch_s = float("inf")
        for _ in range(repeats):
            jax_s = min(jax_s, _best(lambda: jax.block_until_ready(
                ours[name](params, image, reference)), 1))
            torch_s = min(torch_s, _best(captum[name], 1))
        rows.append({"method": name, "jax_s": jax_s, "jax_first_s": first_s, "captum_s": torch_s,
                     "pearson": pearson(jax_map, torch_map),
                     "spearman": spearman(jax_map, torch_map),
                     "max_abs_diff": float(np.abs(jax_map - torch_map).max()),
                     "scale": float(np.abs(torch_map).max())})
    return rows


# ------------------------------------------------------------ the run


def prepare(work: Path, sizes: list[int]) -> tuple:
    """Write the weights, the triplet and xaitk's masks for the children; check the twins agree."""
    import jax
    import torch

    from srise_jax.data import sample_triplet
    from srise_jax.models import iresnet_embed_fn
    from srise_jax.models.arcface_torch import convert_state_dict

    net = torch_network()
    torch.save(net, work / "torch_net.pt")
    params = jax.device_get(convert_state_dict(net.net.state_dict()))
    with open(work / "flax_params.pkl", "wb") as f:
        pickle.dump(params, f)
    triplet = np.stack(sample_triplet(SIDE)).astype(np.float32)
    np.save(work / "triplet.npy", triplet)
    for n in sizes:
        np.save(work / f"masks_{n}.npy", xaitk_masks(n, triplet[0]))
    embed_fn = iresnet_embed_fn(ARCH)
    with torch.inference_mode():
        torch_emb = net(torch.from_numpy(triplet.transpose(0, 3, 1, 2).copy())).numpy()
    emb_diff = float(np.abs(np.asarray(jax.jit(embed_fn)(params, triplet)) - torch_emb).max())
    return net, embed_fn, params, triplet, emb_diff


def agreement(work: Path, num_masks: int) -> dict:
    """xaitk's pair maps against srise_pair's on the same masks, through the relation."""
    xaitk = np.load(work / f"xaitk_{num_masks}.npz")
    ours = np.load(work / f"srise_pair_{num_masks}.npz")
    masks = np.load(work / f"masks_{num_masks}.npy")
    rows = {}
    for side, xaitk_map in (("a", xaitk["probe_mate"]), ("b", xaitk["mate"])):
        scores, saliency = ours[f"scores_{side}"], ours[f"saliency_{side}"]
        similarity = float(ours["similarity"])
        rows[side] = {
            "from_scores_max_diff": float(np.abs(
                xaitk_from_scores(scores, similarity, masks) - xaitk_map).max()),
            "rho_transformed": spearman(xaitk_from_map(saliency, scores, similarity, masks),
                                        xaitk_map),
            "rho_raw": spearman(saliency, xaitk_map),
            "clipped": int((scores > similarity).sum()),
        }
    return rows


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 64, 128 (a few minutes)")
    parser.add_argument("--num-masks", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (tool, N), alternated")
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--memory-only", type=int, nargs="+", default=[],
                        help="also measure xaitk's own arrays (network-free black box) at these N")
    parser.add_argument("--child", choices=(*TOOLS, ARRAYS_TOOL), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        children = {"xaitk": _child_xaitk, ARRAYS_TOOL: _child_xaitk_arrays}
        result = (children[args.child](args.work, args.num_masks[0]) if args.child in children
                  else _child_jax(args.work, args.num_masks[0], args.child))
        print(json.dumps({**result, "peak_rss_mib": _status_mib("VmHWM")}))
        return 0

    missing = missing_peers()
    if missing:
        print(f"bench_peers.py compares srise-jax with xaitk-saliency and Captum on a PyTorch "
              f"twin; missing modules: {', '.join(missing)}.\nInstall the bench extra: "
              f"{BENCH_EXTRA}", file=sys.stderr)
        return 2
    import captum
    import jax
    import torch

    torch.set_num_threads(THREADS)
    sizes = args.num_masks or ([64, 128] if args.quick else [500, 2000, 8000])
    from importlib.metadata import version

    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  "
          f"{platform.processor() or platform.machine()}, {THREADS} threads; "
          f"python {platform.python_version()}, jax {jax.__version__}, torch {torch.__version__}, "
          f"xaitk-saliency {version('xaitk-saliency')}, captum {captum.__version__}")
    print(f"# command: python benchmarks/bench_peers.py {' '.join(sys.argv[1:])}")
    with tempfile.TemporaryDirectory(prefix="bench_peers_") as tmp:
        work = Path(tmp)
        net, embed_fn, params, triplet, emb_diff = prepare(work, sizes)
        print(f"# iResNet-18 twins: max |embedding JAX - torch| {emb_diff:.2e}")
        floors = [forward_floor(net, embed_fn, params, batches=3)]
        results: dict[tuple[str, int], dict] = {}
        for repeat in range(args.repeats):
            for n in sizes:
                # Alternate: each repeat starts with the tool the last one ended with.
                order = TOOLS if repeat % 2 == 0 else TOOLS[::-1]
                for tool in order:
                    r = run_child(work, tool, n)
                    print(f"#   {tool} N={n} repeat {repeat}: " + json.dumps(r), flush=True)
                    best = results.get((tool, n))
                    results[(tool, n)] = r if best is None else {
                        **r, **{k: min(best[k], r[k]) for k in ("pair_s", "triplet_s") if k in r},
                        "peak_rss_mib": max(best["peak_rss_mib"], r["peak_rss_mib"])}
        agree = {n: agreement(work, n) for n in sizes}
        arrays = {n: run_child(work, ARRAYS_TOOL, n) for n in sorted(set(sizes + args.memory_only))
                  } if args.memory_only else {}
    floors.append(forward_floor(net, embed_fn, params, batches=3))
    grads = gradient_comparison(net, embed_fn, params, triplet[0], triplet[1],
                                steps=args.ig_steps, repeats=max(3, args.repeats))

    rows = []
    for n in sizes:
        x, p, t = (results[(tool, n)] for tool in TOOLS)
        rows.append([n, "xaitk-saliency", 2 * n, f"{x['pair_s']:.2f}", 3 * n,
                     f"{x['triplet_s']:.2f}", f"{x['peak_rss_mib']:.0f}",
                     f"{x['peak_rss_mib'] - x['rss_before_mib']:.0f}", "-", "-"])
        rows.append([n, "srise-jax srise_pair", 2 * n, f"{p['pair_s']:.2f}", "", "",
                     f"{p['peak_rss_mib']:.0f}", f"{p['peak_rss_mib'] - p['rss_before_mib']:.0f}",
                     f"{p['xla_peak_mib']:.0f}", f"{p['compile_s']:.1f}"])
        rows.append([n, "srise-jax srise_triplet (shared probe)", "", "", 3 * n,
                     f"{t['triplet_s']:.2f}", f"{t['peak_rss_mib']:.0f}",
                     f"{t['peak_rss_mib'] - t['rss_before_mib']:.0f}", f"{t['xla_peak_mib']:.0f}",
                     f"{t['compile_s']:.1f}"])
    print("\n## Time and memory per explanation (one run per (tool, N), alternated; seconds, MiB)\n")
    print(_table(["N", "tool", "pair forwards", "pair s", "triplet forwards", "triplet s",
                  "peak RSS", "peak - RSS before", "XLA peak", "compile s"], rows))
    for when, floor in zip(("before", "after"), floors):
        print(f"\nForward floor {when} the runs (ms per image, best of 3, alternated): " + "; ".join(
            f"batch {b}: torch {f['torch']:.1f}, JAX {f['jax']:.1f} (torch / JAX "
            f"{f['torch'] / f['jax']:.2f})" for b, f in floor.items()) + ".")
    print("\nXLA peak: `Compiled.memory_analysis()` (arguments + outputs + temporaries); the CPU "
          "client has no allocator statistics (`Device.memory_stats()` is None).")
    if arrays:
        print("\n## xaitk's own arrays: its pair with a network-free black box (MiB)\n")
        print(_table(["N", "peak RSS", "peak - RSS before", "seconds"],
                     [[n, f"{a['peak_rss_mib']:.0f}", f"{a['peak_rss_mib'] - a['rss_before_mib']:.0f}",
                       f"{a['seconds']:.1f}"] for n, a in arrays.items()]))
    print("\n## Map agreement: xaitk's pair maps vs srise_pair's on xaitk's own masks\n")
    print(_table(["N", "map", "max |xaitk - relation(scores)|", "Spearman after relation(map)",
                  "Spearman raw", "masks with s_i > s_0 (clipped)"],
                 [[n, side, f"{r['from_scores_max_diff']:.1e}", f"{r['rho_transformed']:.4f}",
                   f"{r['rho_raw']:.4f}", r["clipped"]]
                  for n in sizes for side, r in agree[n].items()]))
    print(f"\n## Gradient methods: srise-jax vs Captum, probe vs mate, IG {args.ig_steps} steps "
          "(riemann_middle, black baseline)\n")
    print(_table(["method", "srise-jax s (first call)", "Captum s", "Pearson", "Spearman",
                  "max |diff| / max |Captum|"],
                 [[g["method"], f"{g['jax_s']:.3f} ({g['jax_first_s']:.1f})", f"{g['captum_s']:.3f}",
                   f"{g['pearson']:.5f}", f"{g['spearman']:.5f}",
                   f"{g['max_abs_diff'] / g['scale']:.1e}"] for g in grads]))
    print()
    for n in sizes:
        x, p, t = (results[(tool, n)] for tool in TOOLS)
        rho = min(r["rho_transformed"] for r in agree[n].values())
        print(f"srise-jax srise_pair / xaitk-saliency pair (N={n}): "
              f"{x['pair_s'] / p['pair_s']:.2f}x faster, "
              f"{p['peak_rss_mib'] / x['peak_rss_mib']:.2f}x peak memory, maps rho {rho:.4f}")
        print(f"srise-jax srise_triplet / xaitk-saliency triplet (N={n}): "
              f"{x['triplet_s'] / t['triplet_s']:.2f}x faster, "
              f"{t['peak_rss_mib'] / x['peak_rss_mib']:.2f}x peak memory")
    for g in grads:
        peer = "IntegratedGradients" if g["method"] == "integrated_gradients" else "Saliency"
        print(f"srise-jax {g['method']} / Captum {peer}: {g['captum_s'] / g['jax_s']:.2f}x faster, "
              f"maps r {g['pearson']:.4f}, rho {g['spearman']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
