"""`srise-jax explain`: maps, figure and scores of a model on three faces."""

from __future__ import annotations

import argparse
from pathlib import Path

from srise_jax import align, outputs, viz
from srise_jax.cli import common


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add `explain` to the `srise-jax` parser."""

    explain = commands.add_parser(
        "explain",
        help="explain a (probe, mate, nonmate) triplet: aligned crops, or photos with --align",
        description="Explain why a face-recognition model matches a probe with its mate "
                    "and not with a nonmate: S-RISE maps of both pairs, as a figure; "
                    "with --json, also the similarities and Deletion/Insertion scores.")
    common.add_model_options(explain)
    for role in ("probe", "mate", "nonmate"):
        explain.add_argument(f"--{role}", required=True, type=Path,
                             help=f"{role} image: a face crop aligned like the model's "
                                  "training data (112x112; other sizes are resized)")
    explain.add_argument("--align", action="store_true",
                         help="the images are raw photos: detect (MTCNN) and align the "
                              "largest face of each first; the figure shows the crops")
    explain.add_argument("--out", required=True, type=Path, help="figure to write (PNG)")
    explain.add_argument("--json", type=Path,
                         help="also write similarities, Deletion/Insertion and settings here")
    explain.add_argument("--curves", type=Path,
                         help="also plot the Deletion/Insertion curves here (PNG)")
    common.add_run_options(explain, num_masks=500, batch_size=64)
    explain.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    """`srise-jax explain`: maps, figure and scores of a model on three faces."""
    finals = [path for path in (args.out, args.json, args.curves) if path is not None]
    if len({path.resolve() for path in finals}) != len(finals):
        raise common.UsageError("--out, --json and --curves must be different files")
    # Each output is reserved (a file really created beside it) before any
    # work, and all of them appear together once everything is computed.
    with outputs.staged_outputs() as staged:
        for path in finals:
            staged.file(path)
        _explain_into(args, staged)
    print("wrote " + ", ".join(str(path) for path in finals))
    return 0


def _explain_into(args: argparse.Namespace, staged: outputs.StagedOutputs) -> None:
    """`_explain`'s work, each output written to its staged temporary."""
    name = common.model_name(args)
    size, template = common.FRAMES[name]
    paths = (args.probe, args.mate, args.nonmate)
    # The faces first: a bad photo should not wait for the model to load.
    if args.align:
        with common.warning_lines():
            faces = tuple(align.detect_and_align(path, size=size, template=template).face
                          for path in paths)
    else:
        faces = common.load_faces(*paths, size=size)
    model = common.load_model(args, name)
    threshold = model.threshold if args.threshold is None else args.threshold
    run = common.compute_triplet(args, model, faces, threshold=threshold,
                   with_metrics=args.json is not None or args.curves is not None)
    title = f"S-RISE, {model.label}, N = {args.num_masks}"
    viz.plot_triplet(*faces, run.triplet, path=staged.file(args.out), title=title, scores=run.results,
                     threshold=threshold, normalize=run.config.normalize)
    if args.curves is not None:
        viz.plot_curves({f"{metric} {name}": result
                         for name, by_metric in run.results.items()
                         for metric, result in by_metric.items()},
                        threshold=threshold, path=staged.file(args.curves),
                        title=f"Deletion/Insertion, threshold {threshold:g}")
    if args.json is not None:
        inputs = {"probe": str(args.probe), "mate": str(args.mate),
                  "nonmate": str(args.nonmate), "aligned": args.align}
        common.write_json(staged.file(args.json),
                    {**common.triplet_report(run, threshold=threshold),
                     "settings": common.run_settings(args, model, run, threshold, inputs)})
    common.print_summary(run, threshold=threshold)

