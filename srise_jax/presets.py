"""Named S-RISE settings: the paper's, the more faithful one, and the ablation grid.

Plain dictionaries of `SRiseConfig` fields (other than counts, batch and
devices), so that they combine with options given on the command line:
`preset("paper", num_masks=1000)`, `srise_map(..., **PRESETS["paper"])`.
"""

from __future__ import annotations

from typing import Any

from srise_jax.config import SRiseConfig

# "paper": section 4.1.2 and the estimator of section 3.2.2 as written (I * M,
# so black fill; plain weighted sum; patch sizes in absolute pixels, as the
# paper gives them for its 112x112 crops; the patch rule is not stated,
# "max" is this library's reading). "mean_fill": masked-out pixels filled
# with the image's mean and coverage normalisation; since issue 14 these are
# `SRiseConfig()`'s defaults too (the name stays for the commands and
# results that use it).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"num_patches": 100, "kernel_size": 40, "sigma": 7.0, "fill": 0.0,
              "normalize": "none", "combine": "max", "reference_side": None},
    "mean_fill": {"num_patches": 100, "kernel_size": 40, "sigma": 7.0, "fill": "mean",
                  "normalize": "coverage", "combine": "max"},
}
PAPER = PRESETS["paper"]
MEAN_FILL = PRESETS["mean_fill"]

# The ablation (`srise_jax.ablation`): one choice the paper leaves open
# changed at a time from the paper's settings; then the library's default
# (patches scaled to the image, coverage, mean fill) and one option at a
# time from it: the estimators, the variance reductions and the explainer's
# own fill. (Issue 14's run in benchmarks/RESULTS.md used this second half
# when the default fill was black; its labels are mapped there.)
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
    "default": {},
    "default+fill=black": {"fill": 0.0},
    "default+fill=blur": {"fill": "blur"},
    "default+fill=noise": {"fill": "noise"},
    "default+fill=mixed": {"fill": "mixed"},
    "default+absolute": {"reference_side": None},
    "default+regression": {"normalize": "regression"},
    "default+centred": {"normalize": "centred"},
    "default+antithetic": {"antithetic": True},
    "default+stratified": {"centres": "stratified"},
    "default+multiscale": {"scales": (0.5, 1.0, 2.0)},
    # Fewer patches keep less of the image: 100 keep about 70% of a face on
    # average, 50 about 53% (RISE's masks: 50%), 25 about 36%, 12 about 21%.
    "default+patches=50": {"num_patches": 50},
    "default+patches=25": {"num_patches": 25},
    "default+patches=12": {"num_patches": 12},
}


def preset(name: str, **overrides: Any) -> SRiseConfig:
    """An `SRiseConfig` from a named preset ("paper", "mean_fill") or grid setting.

    "paper" is the paper's S-RISE (black fill, plain sum, 100 patches of
    sigma 7 in absolute pixels); "mean_fill" fills the masked-out pixels
    with the image's mean and normalises by coverage, which since issue 14
    are also `SRiseConfig()`'s defaults.

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
    return SRiseConfig(**{**settings[name], **overrides})
