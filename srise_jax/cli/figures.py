"""`srise-jax figures`: the paper's Figures 3-6 on the sample photos."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from srise_jax import benchmark, data, presets, protocols, viz
from srise_jax.cli import common, pipeline
from srise_jax.config import NORMALIZE
from srise_jax.explainers import perturbation


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add `figures` to the `srise-jax` parser."""
    figures = commands.add_parser(
        "figures", help="the paper's Figures 3-6 on the sample photos",
        description="Regenerate the paper's figures on the bundled sample photos with a "
                    "real model: fig3 (a verification triplet), fig4 (the hardest "
                    "non-match pair of the sample protocol), fig5 (self-occlusion: mask "
                    "and sunglasses), fig6 (S-RISE after 10, 100, 500 and 1000 masks).")
    common.add_model_options(figures)
    figures.add_argument("--num-masks", type=common.positive_int, default=500,
                         help="masks per pair for figs 3-5 (default: %(default)s)")
    figures.add_argument("--batch-size", type=common.positive_int, default=64,
                         help="images per forward pass (default: %(default)s)")
    figures.add_argument("--seed", type=common.seed, default=0,
                         help="random seed (default: %(default)s)")
    figures.add_argument("--normalize", choices=NORMALIZE, default="coverage",
                         help="figs 3-5: 'coverage' (the library's default estimator) or "
                              "'none' (the paper's plain sum) (default: %(default)s)")
    figures.add_argument("--preset", choices=tuple(presets.PRESETS),
                         help="figs 3-5: S-RISE settings by name ('paper': the paper as "
                              "written); overrides --normalize")
    figures.add_argument("--convergence", type=_counts,
                         default=benchmark.PAPER_ITERATIONS,
                         help="mask counts of fig6, comma-separated (default: "
                              "10,100,500,1000)")
    figures.add_argument("--out", type=Path, default=Path("srise-figures"),
                         help="directory for fig3.png ... fig6.png (default: %(default)s)")
    figures.set_defaults(command=run)


# What `data.occlude` paints, as a figure names it.
_OCCLUDERS = {"mask": "a surgical mask", "sunglasses": "sunglasses"}


def _counts(text: str) -> tuple[int, ...]:
    """An argparse type: increasing positive integers "10,100,500"."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or counts[0] < 1 or any(b <= a for a, b in zip(counts, counts[1:])):
        raise argparse.ArgumentTypeError(
            f"must be increasing positive integers separated by commas, got {text!r}")
    return counts


def run(args: argparse.Namespace) -> int:
    """`srise-jax figures`: the paper's Figures 3-6 on the sample photos."""
    out = args.out
    if out.exists() and not out.is_dir():
        raise common.UsageError(f"{out}: exists and is not a directory")
    model = common.load_model(args)
    config = pipeline.make_config(preset=args.preset, normalize=args.normalize,
                                  num_masks=args.num_masks, batch_size=args.batch_size,
                                  compute_dtype=common.compute_dtype(args))
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def face(entry: str) -> np.ndarray:
        return protocols.load_protocol_face(entry, size=model.image_size,
                                            template=model.template)

    def triplet_figure(path: Path, entries: Sequence[str], title: str,
                       roles: Sequence[str] = viz.ROLES) -> None:
        faces = tuple(face(entry) for entry in entries)
        explanation = pipeline.compute_triplet(
            model, faces, config=config, key=jax.random.key(args.seed),
            threshold=model.threshold, with_metrics=True)
        viz.plot_triplet(*faces, explanation.triplet, path=path, scores=explanation.results,
                         threshold=model.threshold, roles=roles, normalize=config.normalize,
                         title=f"{title} ({model.label}, N = {config.num_masks})")
        written.append(path)

    print("fig3: verification triplet", flush=True)
    triplet_figure(out / "fig3.png", ("obama", "obama2", "biden"),
                   "Fig. 3: probe, mate, nonmate")
    # Fig. 4 of the paper shows a false match. The sample photos have none, so
    # the figure shows the protocol's non-match pair closest to a match.
    hardest = max((t for t in protocols.sample_protocol() if "+" not in t.nonmate),
                  key=lambda t: benchmark.triplet_similarities(
                      model.embed_fn, model.params, *(face(e) for e in t))["nonmate"])
    print(f"fig4: hardest non-match pair {hardest.probe} / {hardest.nonmate}", flush=True)
    triplet_figure(out / "fig4.png", hardest,
                   f"Fig. 4: the non-match pair closest to a match "
                   f"({hardest.probe} vs {hardest.nonmate}; no false match on the samples)")
    for kind in data.OCCLUSION_KINDS:
        # The third face is the probe itself: named for what it is, since
        # the model may accept it.
        occluded = f"probe with {_OCCLUDERS.get(kind, f'a {kind}')}"
        print(f"fig5: self-occlusion, {occluded}", flush=True)
        triplet_figure(out / f"fig5_{kind}.png", ("obama", "obama2", f"obama+{kind}"),
                       f"Fig. 5: self-occlusion triplet, {occluded}",
                       roles=("probe", "mate", occluded))
    print("fig6: convergence", flush=True)
    convergence = jax.jit(perturbation.srise_convergence, static_argnums=(0,),
                          static_argnames=("counts", "batch_size"))
    figure_rows = {}
    for t, (probe_name, mate_name) in enumerate((("obama", "obama2"), ("obama2", "obama3"))):
        probe, mate = face(probe_name), face(mate_name)
        maps = convergence(model.embed_fn, model.params, probe, mate,
                           jax.random.fold_in(jax.random.key(args.seed), t),
                           counts=args.convergence, batch_size=args.batch_size)
        figure_rows[f"{probe_name} vs {mate_name}"] = (
            probe, {f"N = {n}": m for n, m in zip(args.convergence, maps)})
    written.append(out / "fig6.png")
    viz.plot_convergence(figure_rows, path=written[-1],
                         title=f"Fig. 6: S-RISE after N masks ({model.label})")
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0
