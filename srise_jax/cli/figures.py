"""`srise-jax figures`: the paper's Figures 3-6 on the sample photos."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import jax

from srise_jax import benchmark, data, protocols, srise, ablation, viz
from srise_jax.cli import common
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
    figures.add_argument("--seed", type=common.seed_value, default=0,
                         help="random seed (default: %(default)s)")
    figures.add_argument("--normalize", choices=srise.NORMALIZE, default="coverage",
                         help="figs 3-5: 'coverage' (the library's default estimator) or "
                              "'none' (the paper's plain sum) (default: %(default)s)")
    figures.add_argument("--preset", choices=tuple(ablation.PRESETS),
                         help="figs 3-5: S-RISE settings by name ('paper': the paper as "
                              "written); overrides --normalize")
    figures.add_argument("--convergence", type=common.counts,
                         default=benchmark.PAPER_ITERATIONS,
                         help="mask counts of fig6, comma-separated (default: "
                              "10,100,500,1000)")
    figures.add_argument("--out", type=Path, default=Path("srise-figures"),
                         help="directory for fig3.png ... fig6.png (default: %(default)s)")
    figures.set_defaults(command=run)


# What `data.occlude` paints, as a figure names it.
_OCCLUDERS = {"mask": "a surgical mask", "sunglasses": "sunglasses"}


def run(args: argparse.Namespace) -> int:
    out = args.out
    if out.exists() and not out.is_dir():
        raise common.UsageError(f"{out}: exists and is not a directory")
    name = common.model_name(args)
    model = common.load_model(args, name)
    threshold = model.threshold
    face = lambda entry: protocols.load_protocol_face(entry, size=model.size,
                                                      template=model.template)
    run_args = argparse.Namespace(num_masks=args.num_masks, batch_size=args.batch_size,
                                  normalize=args.normalize, preset=args.preset,
                                  share_probe_masks=False,
                                  metric_step=None, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def triplet_figure(path: Path, entries: Sequence[str], title: str,
                       roles: Sequence[str] = viz.ROLES) -> None:
        faces = tuple(face(e) for e in entries)
        run = common.compute_triplet(run_args, model, faces, threshold=threshold, with_metrics=True)
        viz.plot_triplet(*faces, run.triplet, path=path, scores=run.results,
                         threshold=threshold, roles=roles, normalize=run.config.normalize,
                         title=f"{title} ({model.label}, N = {args.num_masks})")
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

