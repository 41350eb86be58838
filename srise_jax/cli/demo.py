"""`srise-jax demo`: S-RISE on the sample photos, plain and self-occluded."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from srise_jax import data, outputs, viz
from srise_jax.cli import common


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add `demo` to the `srise-jax` parser."""
    demo = commands.add_parser(
        "demo", help="explain the sample photos with a real face recognizer (dlib's ResNet)",
        description="Detect and align the bundled sample photos, then explain with S-RISE "
                    "(the paper's 500 masks of 100 patches; the library's coverage estimator, "
                    "--preset paper for the paper's plain sum) a triplet (obama, obama2, "
                    "biden) and a self-occlusion "
                    "triplet (obama, obama2, obama with a surgical mask), with Deletion and "
                    "Insertion at the model's threshold. Writes OUT/triplet.png, "
                    "OUT/occlusion.png and OUT/scores.json.")
    demo.add_argument("--out", type=Path, default=Path("srise-demo"),
                      help="directory for the figures and scores (default: %(default)s)")
    common.add_model_options(demo)
    common.add_run_options(demo, num_masks=500, batch_size=64)
    demo.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    """`srise-jax demo`: S-RISE on the sample photos, plain and self-occluded."""
    with outputs.staged_outputs() as staged:
        written = _demo_into(args, staged)
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0


def _demo_into(args: argparse.Namespace, staged: outputs.StagedOutputs) -> list[Path]:
    """`_demo`'s work, each output written to its staged temporary; their final paths."""
    # The directory is made, and a file really created in it, before any work.
    out = staged.directory(args.out)
    scores = out / "scores.json"
    staged.file(scores)
    model = common.load_model(args, common.model_name(args))
    threshold = model.threshold if args.threshold is None else args.threshold
    probe, mate, nonmate = data.sample_triplet(model.size, template=model.template)
    # The paper's Fig. 5: the third face is the probe itself with a mask on,
    # which the model may well accept: it is named for what it is.
    occluded = np.asarray(data.occlude(probe, "mask", template=model.template))
    triplets = {
        "triplet": ((probe, mate, nonmate), viz.ROLES, "obama, obama2, biden"),
        "occlusion": ((probe, mate, occluded), ("probe", "mate", "probe with a surgical mask"),
                      "self-occlusion triplet: obama, obama2, obama with a surgical mask"),
    }
    report = {"model": model.label, "threshold": threshold}
    written = [out / f"{name}.png" for name in triplets] + [scores]
    for path in written:
        staged.file(path)
    for name, (faces, roles, photos) in triplets.items():
        print(f"{name}: {photos}", flush=True)
        run = common.compute_triplet(args, model, faces, threshold=threshold, with_metrics=True)
        figure = staged.file(out / f"{name}.png")
        viz.plot_triplet(*faces, run.triplet, path=figure, scores=run.results,
                         threshold=threshold, roles=roles, normalize=run.config.normalize,
                         title=f"S-RISE, {model.label}, N = {args.num_masks}: {photos}")
        report[name] = common.triplet_report(run, threshold=threshold)
        common.print_summary(run, threshold=threshold, roles=roles)
    report["settings"] = common.run_settings(args, model, run, threshold,
                                   {"photos": "srise_jax.data.sample_triplet(): obama, obama2, biden"})
    common.write_json(staged.file(scores), report)
    return written

