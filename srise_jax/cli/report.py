"""What the commands report about an `Explanation`: the JSON document, its settings, the stdout summary."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import srise_jax
from srise_jax import metrics, models, viz
from srise_jax.cli.pipeline import Explanation
from srise_jax.config import SRiseConfig


def scores(explanation: Explanation, *, threshold: float) -> dict[str, Any]:
    """Similarities, decisions and metrics (NaN -> null + reason) of a pair or a triplet."""
    report: dict[str, Any] = {
        "similarity": dict(explanation.similarity),
        "match": {pair: value >= threshold for pair, value in explanation.similarity.items()},
        "threshold": threshold,
    }
    if explanation.results is not None:
        report["metrics"] = {
            name: {metric: metric_entry(metric, result, threshold,
                                        explanation.similarity[viz.map_pair(name)])
                   for metric, result in by_metric.items()}
            for name, by_metric in explanation.results.items()}
    return report


def metric_entry(metric: str, result: metrics.MetricResult, threshold: float,
                 similarity: float) -> dict[str, Any]:
    """{"fraction": x}, or {"fraction": None, "reason": name, "explanation": text}.

    `similarity` is the pair's own cosine, the number behind "rejected".
    """
    reason = metrics.undefined_reason(result)
    if reason is None:
        return {"fraction": float(result.fraction)}
    # The cosine that decided it: the pair's own, or the all-mean image's
    # (where Insertion's curve starts and Deletion's ends).
    counts, curve = np.asarray(result.counts), np.asarray(result.curve)
    all_mean = curve[0] if metric == "insertion" else curve[counts == counts.max()][0]
    value = {"rejected": f", pair cosine {similarity:.4f}",
             "already_flipped": f", all-mean image cosine {all_mean:.4f}",
             "cannot_flip": f", all-mean image cosine {all_mean:.4f}"}.get(reason, "")
    return {"fraction": None, "reason": reason,
            "explanation": f"undefined for {metric}: {metrics.REASON_TEXT[reason]} "
                           f"(threshold {threshold:g}{value})"}


def config_settings(config: SRiseConfig) -> dict[str, Any]:
    """An `SRiseConfig` as JSON: its fields, the compute dtype by name."""
    return {**dataclasses.asdict(config), "compute_dtype": dtype_name(config.compute_dtype)}


def dtype_name(dtype: Any) -> str:
    """A compute dtype by name; None (the inputs' own) is float32."""
    return "float32" if dtype is None else np.dtype(dtype).name


def settings(model: models.FaceModel, *, seed: int, threshold: float, metric_step: int,
             inputs: Mapping[str, Any], method: Mapping[str, Any]) -> dict[str, Any]:
    """What produced a report, for the JSON: model, inputs, method, options, version.

    Args:
      model: the model (its `settings`).
      seed: --seed.
      threshold: the verification threshold used.
      metric_step: the Deletion/Insertion step used.
      inputs: what was explained, e.g. {"probe": path, ...}.
      method: the method's settings, e.g. {"config": config_settings(config)}.

    Returns:
      One JSON-able dict.
    """
    return {**model.settings, **inputs, "seed": seed, "threshold": threshold,
            "metric_step": metric_step, **method,
            "srise_jax_version": srise_jax.__version__}


def print_summary(explanation: Explanation, *, threshold: float,
                  roles: Sequence[str] = viz.ROLES) -> None:
    """Similarities, decisions and metric fractions on stdout; faces named by `roles`."""
    role_of = dict(zip(viz.ROLES, roles))
    labels = {pair: f"{roles[0]} vs {role_of[pair]}" for pair in explanation.similarity}
    width = max(map(len, labels.values()))
    for pair, value in explanation.similarity.items():
        verdict = "match" if value >= threshold else "no match"
        print(f"{labels[pair]:<{width}}  cosine {value:+.4f}  {verdict} at threshold "
              f"{threshold:g}")
    if explanation.results is None:
        return
    print("fraction of pixels that flips the decision (smaller is better):")
    names = {name: viz.map_label(name, roles) for name in explanation.results}
    width = max(len("map"), *map(len, names.values()))
    print(f"  {'map':<{width}} {'deletion':>20} {'insertion':>20}")
    for name, by_metric in explanation.results.items():
        cells = [_fraction_cell(result) for result in by_metric.values()]
        print(f"  {names[name]:<{width}} {cells[0]:>20} {cells[1]:>20}")
    reasons = sorted({metrics.undefined_reason(result)
                      for by_metric in explanation.results.values()
                      for result in by_metric.values()} - {None})
    for reason in reasons:
        print(f"  n/a ({reason}): {metrics.REASON_TEXT[reason]}")


def _fraction_cell(result: metrics.MetricResult) -> str:
    """A fraction to 4 places, or "n/a (reason)" when no map could earn one."""
    reason = metrics.undefined_reason(result)
    return f"n/a ({reason})" if reason else f"{float(result.fraction):.4f}"
