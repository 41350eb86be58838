"""`srise-jax demo`: S-RISE on the sample photos, plain and self-occluded."""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from srise_jax import data, outputs, viz
from srise_jax.cli import common, pipeline, report


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add `demo` to the `srise-jax` parser."""
    demo = commands.add_parser(
        "demo", help="explain the sample photos with a real face recognizer (dlib's ResNet)",
        description="Detect and align the bundled sample photos, then explain with S-RISE "
                    "(the paper's 500 masks of 100 patches, scaled to the image; the "
                    "library's mean fill and coverage estimator, --preset paper for the "
                    "paper's black fill and plain sum) a triplet (obama, obama2, "
                    "biden) and a self-occlusion "
                    "triplet (obama, obama2, obama with a surgical mask), with Deletion and "
                    "Insertion at the model's threshold. Writes OUT/triplet.png, "
                    "OUT/occlusion.png and OUT/scores.json.")
    demo.add_argument("--out", type=Path, default=Path("srise-demo"),
                      help="directory for the figures and scores (default: %(default)s)")
    common.add_model_options(demo)
    pipeline.add_run_options(demo, batch_size=64)
    demo.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    """`srise-jax demo`: S-RISE on the sample photos, plain and self-occluded."""
    with outputs.staged_outputs() as staged:
        written = _demo_into(args, staged)
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0


def _demo_into(args: argparse.Namespace, staged: outputs.StagedOutputs) -> list[Path]:
    """The command's work, each output written to its staged temporary; their final paths."""
    # The directory is made, and a file really created in it, before any work.
    out = staged.directory(args.out)
    scores = out / "scores.json"
    staged.file(scores)
    model = common.load_model(args)
    config = pipeline.config_from_args(args)
    threshold = model.threshold if args.threshold is None else args.threshold
    probe, mate, nonmate = data.sample_triplet(model.image_size, template=model.template)
    # The paper's Fig. 5: the third face is the probe itself with a mask on,
    # which the model may well accept: it is named for what it is.
    occluded = np.asarray(data.occlude(probe, "mask", template=model.template))
    triplets = {
        "triplet": ((probe, mate, nonmate), viz.ROLES, "obama, obama2, biden"),
        "occlusion": ((probe, mate, occluded), ("probe", "mate", "probe with a surgical mask"),
                      "self-occlusion triplet: obama, obama2, obama with a surgical mask"),
    }
    document = {"model": model.label, "threshold": threshold}
    written = [out / f"{name}.png" for name in triplets] + [scores]
    for path in written:
        staged.file(path)
    for name, (faces, roles, photos) in triplets.items():
        print(f"{name}: {photos}", flush=True)
        explanation = pipeline.compute_triplet(
            model, faces, config=config, key=jax.random.key(args.seed), threshold=threshold,
            with_metrics=True, metric_step=args.metric_step)
        viz.plot_triplet(*faces, explanation.triplet, path=staged.file(out / f"{name}.png"),
                         scores=explanation.results, threshold=threshold, roles=roles,
                         normalize=config.normalize,
                         title=f"S-RISE, {model.label}, N = {config.num_masks}: {photos}")
        document[name] = report.scores(explanation, threshold=threshold)
        report.print_summary(explanation, threshold=threshold, roles=roles)
    document["settings"] = report.settings(
        model, seed=args.seed, threshold=threshold, metric_step=explanation.metric_step,
        inputs={"photos": "srise_jax.data.sample_triplet(): obama, obama2, biden"},
        method={"config": report.config_settings(config)})
    outputs.write_json(staged.file(scores), document)
    return written
