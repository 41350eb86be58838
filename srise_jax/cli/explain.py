"""`srise-jax explain`: any explainer's maps of a pair or a triplet, as a figure, scores and raw maps.

    srise-jax explain --probe P --mate M [--nonmate N] [--method NAME[@N]]
        [--out fig.png] [--json scores.json] [--curves curves.png] [--save-maps maps.npz]

Keys: with --seed S, pair i (0: probe and mate, 1: probe and nonmate) is
explained with `jax.random.split(jax.random.key(S))[i]`, both of its maps
with that key (`srise_jax.cli.pipeline`). S-RISE on a triplet is exactly
`srise.srise_triplet(..., jax.random.key(S), config)`; any other map equals
`explainers.get_explainer(name)(embed_fn, params, image, reference,
split(key(S))[i], **options)` with the options the JSON and the .npz record.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from srise_jax import align, benchmark, explainers, images, models, outputs, viz
from srise_jax._helpers import first_line
from srise_jax.cli import common, pipeline, report
from srise_jax.config import SRiseConfig


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add `explain` to the `srise-jax` parser."""
    explain = commands.add_parser(
        "explain",
        help="explain a (probe, mate) pair or a (probe, mate, nonmate) triplet with any "
             "explainer: aligned crops, or photos with --align",
        description="Explain why a face-recognition model matches a probe with its mate "
                    "(and not with a nonmate): the saliency maps of both images of each "
                    "pair, as a figure (--out), similarities and Deletion/Insertion scores "
                    "(--json, --curves), and the raw float32 maps (--save-maps). S-RISE "
                    "by default; --method picks any registered explainer.",
        epilog="Keys: pair i (0: probe and mate, 1: probe and nonmate) is explained "
               "with jax.random.split(jax.random.key(SEED))[i], both of its maps with "
               "that key; S-RISE on a triplet is srise.srise_triplet(..., "
               "jax.random.key(SEED), config).")
    common.add_model_options(explain)
    for role, required in (("probe", True), ("mate", True), ("nonmate", False)):
        explain.add_argument(f"--{role}", required=required, type=Path,
                             help=f"{role} image: a face crop aligned like the model's "
                                  "training data (other sizes are resized)"
                                  + ("" if required else "; without it, the (probe, mate) "
                                                         "pair alone is explained"))
    explain.add_argument("--align", action="store_true",
                         help="the images are raw photos: detect (MTCNN) and align the "
                              "largest face of each first; the figure shows the crops")
    explain.add_argument("--method", type=_method, default=benchmark.Method("srise"),
                         help="explainer: one of "
                              f"{', '.join(explainers.list_explainers())}; 'name@N' sets its "
                              "masks, samples or steps, 'srise[preset]' a preset (default: "
                              "srise)")
    explain.add_argument("--out", type=Path,
                         help="figure to write (PNG): S-RISE on a triplet as in the paper's "
                              "Fig. 3, else each map over its face")
    explain.add_argument("--json", type=Path,
                         help="write similarities, Deletion/Insertion and settings here")
    explain.add_argument("--curves", type=Path,
                         help="plot the Deletion/Insertion curves here (PNG)")
    explain.add_argument("--save-maps", type=Path, metavar="NPZ",
                         help="write the raw maps here (NumPy .npz): 'maps' (float32, one "
                              "per name), 'names' (e.g. probe_vs_mate), 'pairs' and "
                              "'similarity' (cosine of each pair), 'settings' (JSON text)")
    pipeline.add_run_options(explain, batch_size=64)
    explain.set_defaults(command=run)


def _method(text: str) -> benchmark.Method:
    """An argparse type: one method label, as `srise-jax benchmark --methods` spells them."""
    try:
        methods = benchmark.parse_methods(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(first_line(err)) from None
    if len(methods) != 1:
        raise argparse.ArgumentTypeError(f"expected one method, got {text!r}")
    return methods[0]


def run(args: argparse.Namespace) -> int:
    """`srise-jax explain`: maps, figure, scores and raw maps of a model on two or three faces."""
    finals = [path for path in (args.out, args.json, args.curves, args.save_maps)
              if path is not None]
    if not finals:
        raise common.UsageError("nothing to write: give --out, --json, --curves or --save-maps")
    if len({path.resolve() for path in finals}) != len(finals):
        raise common.UsageError("--out, --json, --curves and --save-maps must be different "
                                "files")
    method, config = _method_and_config(args)
    # Each output is reserved (a file really created beside it) before any
    # work, and all of them appear together once everything is computed.
    with outputs.staged_outputs() as staged:
        for path in finals:
            staged.file(path)
        _explain_into(args, method, config, staged)
    print("wrote " + ", ".join(str(path) for path in finals))
    return 0


def _method_and_config(args: argparse.Namespace) -> tuple[benchmark.Method, SRiseConfig | None]:
    """The method with its count resolved, and S-RISE's config (None for other methods)."""
    method = args.method
    if args.num_masks is not None and method.iterations is not None:
        raise common.UsageError(f"give the count once: --method {method.label} or --num-masks")
    if method.name != "srise":
        given = [option for option, value in (("--share-probe-masks", args.share_probe_masks),
                                              ("--normalize", args.normalize),
                                              ("--preset", args.preset)) if value]
        if given:
            raise common.UsageError(f"{', '.join(given)}: only with --method srise")
        if args.num_masks is None:
            return method, None
        if method.option != "num_masks":
            raise common.UsageError(f"--num-masks: {method.name} takes no masks")
        return dataclasses.replace(method, iterations=args.num_masks), None
    if method.preset is not None and args.preset is not None:
        raise common.UsageError(f"give the preset once: --method {method.label} or --preset")
    if args.share_probe_masks and args.nonmate is None:
        raise common.UsageError("--share-probe-masks: only with a triplet (--nonmate)")
    config = pipeline.config_from_args(args, num_masks=method.iterations, preset=method.preset)
    return dataclasses.replace(method, iterations=config.num_masks), config


def _explain_into(args: argparse.Namespace, method: benchmark.Method,
                  config: SRiseConfig | None, staged: outputs.StagedOutputs) -> None:
    """The command's work, each output written to its staged temporary."""
    paths = [args.probe, args.mate] + ([] if args.nonmate is None else [args.nonmate])
    roles = viz.ROLES[:len(paths)]
    # The files first: a missing or unreadable image should not wait for the
    # model to load (its crops are made at the model's size afterwards).
    for path in paths:
        images.load_image(path)
    model = common.load_model(args)
    with common.warning_lines():
        if args.align:
            faces = [align.detect_and_align(path, size=model.image_size,
                                            template=model.template).face for path in paths]
        else:
            faces = [images.load_face(path, size=model.image_size) for path in paths]
    threshold = model.threshold if args.threshold is None else args.threshold
    key = jax.random.key(args.seed)
    with_metrics = args.json is not None or args.curves is not None
    if method.name == "srise" and len(faces) == 3:
        explanation = pipeline.compute_triplet(
            model, faces, config=config, key=key, threshold=threshold,
            with_metrics=with_metrics, metric_step=args.metric_step)
        method_settings = {"method": method.label, "config": report.config_settings(config)}
    else:
        explainer, options = _bind(method, model, config=config, args=args)
        explanation = pipeline.compute_maps(
            model, faces, explainer, label=method.label, key=key, threshold=threshold,
            with_metrics=with_metrics, batch_size=args.batch_size,
            metric_step=args.metric_step)
        method_settings = {"method": method.label, "options": options}
    inputs = {**{role: str(path) for role, path in zip(roles, paths)}, "aligned": args.align}
    settings = report.settings(model, seed=args.seed, threshold=threshold,
                               metric_step=explanation.metric_step, inputs=inputs,
                               method=method_settings)
    if args.out is not None:
        _plot(explanation, faces, method, model, config, threshold=threshold, roles=roles,
              path=staged.file(args.out))
    if args.curves is not None:
        viz.plot_curves({f"{metric} {name}": result
                         for name, by_metric in explanation.results.items()
                         for metric, result in by_metric.items()},
                        threshold=threshold, path=staged.file(args.curves),
                        title=f"Deletion/Insertion of {method.label}, threshold {threshold:g}")
    if args.json is not None:
        outputs.write_json(staged.file(args.json),
                          {**report.scores(explanation, threshold=threshold),
                           "settings": settings})
    if args.save_maps is not None:
        _save_maps(staged.file(args.save_maps), explanation, settings)
    report.print_summary(explanation, threshold=threshold, roles=roles)


def _bind(method: benchmark.Method, model: models.FaceModel, *, config: SRiseConfig | None,
          args: argparse.Namespace) -> tuple[Callable[..., jax.Array], dict[str, Any]]:
    """The explainer with the model and its options bound, and those options as JSON.

    S-RISE takes the fields of `config` it has; another method its count
    (`Method.options`), and the batch size and compute dtype if it has them;
    Grad-CAM the model's `feature_fns`.
    """
    fn = explainers.get_explainer(method.name)
    parameters = inspect.signature(fn).parameters
    if config is not None:
        options = {name: value for name, value in dataclasses.asdict(config).items()
                   if name in parameters}
    else:
        options = method.options()
        for name, value in (("batch_size", args.batch_size),
                            ("compute_dtype", common.compute_dtype(args))):
            if name in parameters:
                options[name] = value
    settings = {name: report.dtype_name(value) if name == "compute_dtype" else value
                for name, value in options.items()}
    if "feature_fns" in parameters:
        if model.feature_fns is None:
            raise ValueError(f"{method.name} needs the model's feature maps "
                             f"(FaceModel.feature_fns); {model.label} has none")
        options["feature_fns"] = model.feature_fns
    return functools.partial(fn, model.embed_fn, **options), settings


def _plot(explanation: pipeline.Explanation, faces: list[np.ndarray], method: benchmark.Method,
          model: models.FaceModel, config: SRiseConfig | None, *, threshold: float,
          roles: tuple[str, ...], path: Path) -> None:
    """The figure: the paper's Fig. 3 for S-RISE on a triplet, else each map over its face."""
    if explanation.triplet is not None:
        viz.plot_triplet(*faces, explanation.triplet, path=path, scores=explanation.results,
                         threshold=threshold, normalize=config.normalize,
                         title=f"S-RISE, {model.label}, N = {config.num_masks}")
        return
    viz.plot_maps(explanation.maps, similarity=explanation.similarity, threshold=threshold,
                  scores=explanation.results, roles=roles, path=path,
                  title=f"{method.label}, {model.label}")


def _save_maps(path: Path, explanation: pipeline.Explanation, settings: dict[str, Any]) -> None:
    """The raw maps, their names, the pairs' cosines and the settings, as one .npz."""
    with open(path, "wb") as file:  # a file object: np.savez would append ".npz" to a name
        np.savez(file,
                 maps=np.stack([np.asarray(saliency, np.float32)
                                for _, _, saliency in explanation.maps.values()]),
                 names=np.array(list(explanation.maps)),
                 pairs=np.array(list(explanation.similarity)),
                 similarity=np.array(list(explanation.similarity.values()), np.float32),
                 settings=np.array(json.dumps(settings)))
