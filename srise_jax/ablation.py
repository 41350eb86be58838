"""What makes S-RISE faithful: the settings the paper leaves open, one at a time.

The paper fixes N = 500 masks of 100 Gaussian patches (kernel 40, sigma 7)
and the estimator H = sum_i s_i M_i on I * M_i (section 3.2), but not how
patches combine into a mask, nor what replaces the masked-out pixels, nor
whether the sum is normalised. `GRID` varies one choice at a time from the
`paper` preset (plus one combination, the `mean_fill` preset), then one
option at a time from the library's default `SRiseConfig()` (patches scaled
to the image, coverage, mean fill): black fill, the control-variate estimators, antithetic masks,
stratified centres, multi-scale patches and the explainer's own fill, drawn
per mask included. `srise-jax benchmark --ablation` scores every setting
with Deletion/Insertion (under each `--metric-fill`) on the same triplets
and the same patch centres where the patches agree (one key for all
settings: a paired comparison).

Not in the grid: sharing masks between the two sides of a pair. The paper
shares them (step 2 of its algorithm) and so does `srise_pair`; but each map
is computed from its own side's masked images only, so sharing changes no
single map's distribution, hence not its Deletion/Insertion in expectation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from srise_jax import presets
from srise_jax.benchmark.methods import ExplainPart, MethodSet, method_key
from srise_jax.explainers import perturbation
from srise_jax.typing import EmbedFn

# The presets and the grid are named settings like any other: they live in
# `srise_jax.presets` (below the explainers), re-exported here.
PRESETS, PAPER, MEAN_FILL, GRID, preset = (
    presets.PRESETS, presets.PAPER, presets.MEAN_FILL, presets.GRID, presets.preset)


def make_explain_fns(embed_fn: EmbedFn, grid: Mapping[str, Mapping[str, Any]], *,
                     num_masks: int, batch_size: int = 64) -> tuple[ExplainPart, ...]:
    """Each setting as a jitted S-RISE explainer, in the benchmark's form.

    Every setting draws its patch centres from the same key (the job's
    "srise" key), so settings that share the patch count and size see the
    same centres and differ only by the choice being varied.

    Args:
      embed_fn: the model (static).
      grid: {label: options of `perturbation.srise_map`}.
      num_masks: masks per map.
      batch_size: masked images per forward pass.

    Returns:
      One `srise_jax.benchmark.ExplainPart` per setting.
    """
    parts = []
    for label, options in grid.items():
        def run(params, image, reference, key, _label=label, _options=dict(options)):
            saliency = perturbation.srise_map(
                embed_fn, params, image, reference, method_key(key, "srise"),
                num_masks=num_masks, batch_size=batch_size, **_options)
            return {_label: saliency}

        parts.append(ExplainPart((label,), jax.jit(run)))
    return tuple(parts)


def prepare_grid(embed_fn: EmbedFn, grid: Mapping[str, Mapping[str, Any]], *,
                 num_masks: int, batch_size: int = 64) -> MethodSet:
    """The settings of `grid` as a benchmark's methods (`srise_jax.benchmark.run_benchmark`).

    Args:
      embed_fn: the model (static).
      grid: {label: options of `perturbation.srise_map`}, e.g. `GRID`.
      num_masks: masks per map: every label's "iterations".
      batch_size: masked images per forward pass.

    Returns:
      The `srise_jax.benchmark.MethodSet` of `make_explain_fns`'s parts;
      its run.json entry "ablation" is {"num_masks": num_masks}, so an
      ablation run never resumes into a run of methods, nor one of another
      mask count.
    """
    parts = make_explain_fns(embed_fn, grid, num_masks=num_masks, batch_size=batch_size)
    return MethodSet(parts, {label: num_masks for label in grid},
                     ablation={"num_masks": num_masks})
