"""`srise-jax sanity`: cascading model-parameter randomization on the sample probe and mate."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import jax
import numpy as np

from srise_jax import data, outputs, sanity, viz
from srise_jax.cli import common, pipeline
from srise_jax.explainers import get_explainer, list_explainers


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add `sanity` to the `srise-jax` parser."""
    parser = commands.add_parser(
        "sanity", help="model-parameter randomization test of an explainer",
        description="Cascading model-parameter randomization (Adebayo et al., 2018) on "
                    "the sample probe (obama) against its mate (obama2): the model's "
                    "layer groups are re-initialised from the top down, and each map is "
                    "compared with the original one. Writes OUT/sanity.png and "
                    "OUT/sanity.csv (step, group, spearman, ssim).")
    common.add_model_options(parser)
    parser.add_argument("--method", choices=list_explainers("perturbation"),
                        default="srise", help="explainer (default: %(default)s)")
    parser.add_argument("--num-masks", type=common.positive_int, default=200,
                        help="masks per map (default: %(default)s)")
    parser.add_argument("--batch-size", type=common.positive_int, default=64,
                        help="images per forward pass (default: %(default)s)")
    parser.add_argument("--seed", type=common.seed, default=0,
                        help="random seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("srise-sanity"),
                        help="directory for the figure and table (default: %(default)s)")
    parser.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    """`srise-jax sanity`: cascading randomization on the sample probe and mate."""
    with outputs.staged_outputs() as staged:
        # The directory is made, and its files really created, before any work.
        out = staged.directory(args.out)
        figure, table = out / "sanity.png", out / "sanity.csv"
        _sanity_into(args, figure=staged.file(figure), table=staged.file(table))
    print(f"wrote {figure}, {table}")
    return 0


def _sanity_into(args: argparse.Namespace, *, figure: Path, table: Path) -> None:
    """The command's work, writing the figure and the table to these (temporary) paths."""
    model = common.load_model(args)
    probe, mate = (data.aligned_sample(face, size=model.image_size, template=model.template)
                   for face in ("obama", "obama2"))
    pipeline.check_embeddings(model, {"probe": probe, "mate": mate})
    explainer = functools.partial(get_explainer(args.method), num_masks=args.num_masks,
                                  batch_size=args.batch_size)
    # A model that declares no groups gets sanity's default: one per top-level submodule.
    groups = model.layer_groups or None
    print(f"{args.method} on {model.label}: randomizing "
          f"{', '.join(sanity.layer_groups(model.params, groups=groups))}", flush=True)
    result = sanity.cascading_randomization(explainer, model.embed_fn, model.params,
                                            probe, mate, jax.random.key(args.seed),
                                            groups=groups)
    viz.plot_sanity(probe, result, path=figure,
                    title=f"{args.method}, {model.label}, N = {args.num_masks}: "
                          "cascading randomization")
    rows = ["step,group,spearman,ssim"] + [
        f"{step},{group},{float(rho):.6f},{float(value):.6f}"
        for step, (group, rho, value) in enumerate(
            zip(result.steps, result.spearman, result.ssim), start=1)]
    with outputs.atomic_file(table) as file:
        file.write(("\n".join(rows) + "\n").encode())
    print(f"  {'step':>4} {'group':<10} {'spearman':>9} {'ssim':>7}")
    for row in rows[1:]:
        step, group, rho, value = row.split(",")
        print(f"  {step:>4} {group:<10} {float(rho):>9.4f} {float(value):>7.4f}")
    if not np.all(np.isfinite(np.asarray(result.spearman))):
        print("  spearman nan: that step's map (or the original) is constant, so no "
              "ranking is left to compare (undefined, not decorrelated)")
