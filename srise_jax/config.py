"""S-RISE's options: one frozen dataclass, and its fields as keyword options.

`SRiseConfig` is the one place where S-RISE's options and their defaults are
written. The kernel takes it whole (`srise.srise_triplet(..., config)`); the
explainers, whose contract is keyword options, take its fields through
`config_options`, which builds the `SRiseConfig` for them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

from srise_jax import masks as masks_lib

# The estimators `normalize` selects (see `SRiseConfig`).
NORMALIZE = ("coverage", "none", "centred", "regression")
# The fills computed from the image itself (see `SRiseConfig.fill`); the
# last two are drawn afresh for each mask.
FILLS = ("mean", "blur", "noise", "mixed")
# Fills that need a key per mask (the kernel takes it from the mask's own).
RANDOM_FILLS = ("noise", "mixed")
# Patch sizes are given for this image side unless `reference_side` says
# otherwise: the paper's 112x112 crops (section 4.1.2).
PAPER_SIDE = 112
# What replaces masked-out pixels: a value, one per channel, or one of FILLS.
Fill = float | tuple[float, float, float] | str


def check_normalize(normalize: str) -> None:
    """Refuse an estimator name that is not one of `NORMALIZE`.

    Args:
      normalize: the name to check.

    Raises:
      ValueError: naming the accepted values.
    """
    if normalize not in NORMALIZE:
        raise ValueError(
            f"normalize must be one of {NORMALIZE}, got {normalize!r}")


def check_fill(fill: Any) -> None:
    """Refuse a fill given by a name that is not one of `FILLS`.

    Args:
      fill: a value, one value per channel, or a name.

    Raises:
      ValueError: naming the accepted values.
    """
    if isinstance(fill, str) and fill not in FILLS:
        raise ValueError(f"fill must be a number, one per channel, or one of {FILLS}, "
                         f"got {fill!r}")


@dataclasses.dataclass(frozen=True)
class SRiseConfig:
    """Options of `srise_triplet` (hashable: pass it as a static argument).

    The defaults take the paper's masks (section 4.1.2: 500 masks of 100
    Gaussian patches, kernel 40, sigma 7 on a 112-pixel side, scaled to the
    image by `reference_side`, a fresh set for each pair) and two choices
    that are NOT the paper's: coverage normalisation (`normalize="coverage"`)
    where the paper takes the plain weighted sum (section 3.2.2,
    `normalize="none"`), and the image's mean colour as fill (`fill="mean"`)
    where the paper's I * M fills with black. `PRESETS["paper"]` is the
    paper as written.

    Why the mean fill: in the ablation on lfw-dev (benchmarks/RESULTS.md,
    issue 14) it made S-RISE more faithful than black fill under each of
    the three metric fills, the ones it does not share (blur, ROAD's
    imputation) included, and had the lowest worst case over them of every
    setting tried.

    Why coverage: the patches are clipped at the border, so the masks' mean
    value is 0.71 at the centre of a 112x112 image and 0.41 in its corners
    (0.58 and 0.28 on dlib's 150x150 chips with the same absolute
    patches; 2000 masks, key 0). The plain
    sum sum_i s_i M_i therefore carries that centre prior whatever the
    model does; dividing by sum_i M_i, pixel by pixel, leaves the mean
    score of the masks that kept the pixel. (RISE divides by the constant
    N * p instead, which is the same only when every pixel is kept equally
    often.)

    Attributes:
      num_masks: N, masks per pair.
      num_patches: Gaussian patches per mask.
      kernel_size: truncation window of each patch, in pixels.
      sigma: standard deviation of each patch, in pixels.
      batch_size: masked images per `embed_fn` call (and masks per chunk).
      fill: what replaces the masked-out part of the image: a value (scalar,
        or one per channel; the paper's image * mask is 0), "mean" (the
        default: the image's per-channel mean, the paper's Deletion/Insertion
        fill) or
        "blur" (the image blurred by a Gaussian of sigma = max(H, W) / 20);
        drawn per mask: "noise" (the image's per-channel mean plus Gaussian
        noise of its per-channel standard deviation, a field shifted afresh
        for each mask: `srise.fill_noise`) or "mixed" (per mask, one of "mean", "blur" and "noise" at
        random), so that no single fill is the one the masks were made with.
      combine: how a mask's patches combine: "max", "sum" (clipped) or
        "occlude" (see `masks.gaussian_mask`).
      compute_dtype: dtype of the masked images handed to `embed_fn` (e.g.
        jnp.bfloat16, with a model built for it: `load_dlib(dtype=...)`,
        `load_arcface(..., dtype=...)`); None keeps float32. Scores, mask
        sums and saliency accumulate in float32 either way.
      normalize: the estimator (`srise.finalize`): "coverage" for sum_i s_i
        M_i / sum_i M_i (the mean score of the masks that keep each pixel,
        free of the masks' border bias; see above), "none" for the paper's
        plain sum; two control variates: "centred", sum_i (s_i - mean s) M_i
        / N (the masks' mean score subtracted), and "regression", the
        per-pixel least-squares slope of s_i on M_i(x) (a per-pixel
        baseline: sum_i (s_i - mean s) M_i(x) / sum_i (M_i(x) - mean
        M(x))**2).
      share_probe_masks: if True, both pairs use the same masks and the
        probe's masked embeddings serve both (3N forward passes instead of 4N);
        the mate pair's maps are then identical to the default's.
      reference_side: `kernel_size` and `sigma` are in pixels of an image
        whose larger side is this (default 112, the paper's crops) and are
        scaled to the image's larger side (`patch_size`), so a 150x150 chip
        is perturbed as strongly as a 112x112 crop; None takes them as
        absolute pixels (the `paper` preset).
      centres: patch centres "uniform" (the paper's) or "stratified" (one
        per cell of a jittered grid: `masks.patch_centres`).
      scales: patch scales used in turn, mask by mask (multi-scale; scale s
        has sigma * s and num_patches / s**2 patches: `masks.srise_mask_fn`).
      antithetic: masks come in complementary pairs (M, 1 - M) sharing one
        key, so every pixel is kept by exactly one unit of each pair.
    """

    num_masks: int = 500
    num_patches: int = 100
    kernel_size: int = 40
    sigma: float = 7.0
    batch_size: int = 64
    fill: float | tuple[float, float, float] | str = "mean"
    normalize: str = "coverage"
    share_probe_masks: bool = False
    combine: str = "max"
    compute_dtype: Any = None
    reference_side: int | None = PAPER_SIDE
    centres: str = "uniform"
    scales: tuple[float, ...] = (1.0,)
    antithetic: bool = False

    def __post_init__(self) -> None:
        if self.num_masks < 1 or self.batch_size < 1:
            raise ValueError(
                f"num_masks and batch_size must be >= 1, got {self.num_masks} "
                f"and {self.batch_size}")
        check_normalize(self.normalize)
        check_fill(self.fill)
        if self.combine not in masks_lib.COMBINE:
            raise ValueError(f"combine must be one of {masks_lib.COMBINE}, got "
                             f"{self.combine!r}")
        if self.reference_side is not None and (
                not isinstance(self.reference_side, int) or self.reference_side < 1):
            raise ValueError(f"reference_side must be a positive int or None, got "
                             f"{self.reference_side!r}")
        if self.centres not in masks_lib.CENTRES:
            raise ValueError(f"centres must be one of {masks_lib.CENTRES}, got "
                             f"{self.centres!r}")
        masks_lib.check_scales(self.scales)

    def patch_size(self, shape: tuple[int, int]) -> tuple[int, float]:
        """(kernel_size, sigma) in pixels for masks of `shape`.

        Args:
          shape: (H, W) of the image.

        Returns:
          `kernel_size` and `sigma` times max(H, W) / `reference_side`
          (the kernel rounded, at least 1), or both unchanged when
          `reference_side` is None.
        """
        if self.reference_side is None:
            return self.kernel_size, self.sigma
        factor = max(shape) / self.reference_side
        return max(1, round(self.kernel_size * factor)), self.sigma * factor


def config_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: `SRiseConfig` fields as keyword options of a function.

    The decorated function takes a keyword-only `config: SRiseConfig`; the
    result takes instead the fields `names` as keyword-only options, with
    the dataclass's defaults (`inspect.signature` shows them, so the
    benchmark and `jax.jit`'s `static_argnames` see them), and calls it with
    `config=SRiseConfig(**those options)`, which checks their values. The
    defaults are thus written once, in `SRiseConfig`.

    Args:
      *names: fields of `SRiseConfig`, in the order the signature lists them.

    Returns:
      The decorator.

    Raises:
      ValueError: a name is not a field of `SRiseConfig`.
    """
    fields = {f.name: f for f in dataclasses.fields(SRiseConfig)}
    unknown = [name for name in names if name not in fields]
    if unknown:
        raise ValueError(f"not fields of SRiseConfig: {unknown}")
    options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                 default=fields[name].default,
                                 annotation=fields[name].type)
               for name in names]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)
        own = [p for p in signature.parameters.values() if p.name != "config"]
        if len(own) == len(signature.parameters):
            raise TypeError(f"{fn.__name__} takes no `config` to build")
        first_option = next((i for i, p in enumerate(own)
                             if p.kind == inspect.Parameter.KEYWORD_ONLY), len(own))

        @functools.wraps(fn)
        def with_options(*args: Any, **kwargs: Any) -> Any:
            chosen = {name: kwargs.pop(name) for name in names if name in kwargs}
            return fn(*args, config=SRiseConfig(**chosen), **kwargs)

        with_options.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=own[:first_option] + options + own[first_option:])
        return with_options

    return decorate
