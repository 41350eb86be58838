"""What makes S-RISE faithful: the settings the paper leaves open, one at a time.

The paper fixes N = 500 masks of 100 Gaussian patches (kernel 40, sigma 7)
and the estimator H = sum_i s_i M_i on I * M_i (section 3.2), but not how
patches combine into a mask, nor what replaces the masked-out pixels, nor
whether the sum is normalised. `GRID` varies one choice at a time from the
`paper` preset (plus one combination, the `mean_fill` preset), and `srise-jax benchmark --ablation`
scores every setting with Deletion/Insertion on the same triplets and the
same patch centres (one key for all settings: a paired comparison).

Not in the grid: sharing masks between the two sides of a pair. The paper
shares them (step 2 of its algorithm) and so does `srise_pair`; but each map
is computed from its own side's masked images only, so sharing changes no
single map's distribution, hence not its Deletion/Insertion in expectation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax

from srise_jax import benchmark, srise
from srise_jax.explainers import perturbation

# The presets (`srise.PRESETS`): the paper's settings, and the setting the
# ablation finds clearly more faithful (benchmarks/RESULTS.md).
PRESETS = srise.PRESETS
PAPER = PRESETS["paper"]
MEAN_FILL = PRESETS["mean_fill"]

GRID: dict[str, dict[str, Any]] = {
    "paper": PAPER,
    "normalize=coverage": {**PAPER, "normalize": "coverage"},
    "combine=sum": {**PAPER, "combine": "sum"},
    "combine=occlude": {**PAPER, "combine": "occlude"},
    "fill=mean": {**PAPER, "fill": "mean"},
    "fill=blur": {**PAPER, "fill": "blur"},
    "patches=25": {**PAPER, "num_patches": 25},
    "sigma=14": {**PAPER, "sigma": 14.0, "kernel_size": 80},
    "coverage+fill=mean": MEAN_FILL,
}


def preset(name: str, **overrides: Any) -> srise.SRiseConfig:
    """An `SRiseConfig` from a named preset ("paper", "mean_fill") or grid setting.

    "paper" is the paper's S-RISE (black fill, plain sum, 100 patches of
    sigma 7); "mean_fill" fills the masked-out pixels with the image's mean
    and normalises by coverage, the more faithful setting of the ablation.
    `SRiseConfig()`'s own defaults (coverage, black fill) are neither.

    Args:
      name: a key of `PRESETS` or `GRID`.
      **overrides: other `SRiseConfig` fields (num_masks, batch_size, ...).

    Returns:
      The `SRiseConfig` of those settings with `overrides` applied.

    Raises:
      ValueError: unknown name (the message lists the known ones).
    """
    settings = {**GRID, **PRESETS}
    if name not in settings:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(settings)}")
    return srise.SRiseConfig(**{**settings[name], **overrides})


def make_explain_fns(embed_fn: Callable, grid: Mapping[str, Mapping[str, Any]], *,
                     num_masks: int, batch_size: int = 64
                     ) -> tuple[benchmark.ExplainPart, ...]:
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
      One `benchmark.ExplainPart` per setting.
    """
    parts = []
    for label, options in grid.items():
        def run(params, image, reference, key, _label=label, _options=dict(options)):
            saliency = perturbation.srise_map(
                embed_fn, params, image, reference, benchmark.method_key(key, "srise"),
                num_masks=num_masks, batch_size=batch_size, **_options)
            return {_label: saliency}

        parts.append(benchmark.ExplainPart((label,), jax.jit(run)))
    return tuple(parts)
