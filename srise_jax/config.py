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
NORMALIZE = ("coverage", "none")
# The fills computed from the image itself (see `SRiseConfig.fill`).
FILLS = ("mean", "blur")
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
    Gaussian patches, kernel 40, sigma 7, a fresh set for each pair) and
    this library's estimator, which is NOT the paper's: coverage
    normalisation (`normalize="coverage"`) where the paper takes the plain
    weighted sum (section 3.2.2, `normalize="none"`), with black fill (the
    paper's I * M). `PRESETS["paper"]` is the paper as written.

    Why coverage: the patches are clipped at the border, so the masks' mean
    value is 0.71 at the centre of a 112x112 image and 0.41 in its corners
    (0.58 and 0.28 on dlib's 150x150 chips; 2000 masks, key 0). The plain
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
        image's per-channel mean, what Deletion/Insertion fill with) or
        "blur" (the image blurred by a Gaussian of sigma = max(H, W) / 20).
      combine: how a mask's patches combine: "max", "sum" (clipped) or
        "occlude" (see `masks.gaussian_mask`).
      compute_dtype: dtype of the masked images handed to `embed_fn` (e.g.
        jnp.bfloat16, with a model built for it: `load_dlib(dtype=...)`,
        `load_arcface(..., dtype=...)`); None keeps float32. Scores, mask
        sums and saliency accumulate in float32 either way.
      normalize: "coverage" for sum_i s_i M_i / sum_i M_i (the mean score of
        the masks that keep each pixel, free of the masks' border bias; see
        above), "none" for the paper's plain sum.
      share_probe_masks: if True, both pairs use the same masks and the
        probe's masked embeddings serve both (3N forward passes instead of 4N);
        the mate pair's maps are then identical to the default's.
    """

    num_masks: int = 500
    num_patches: int = 100
    kernel_size: int = 40
    sigma: float = 7.0
    batch_size: int = 64
    fill: float | tuple[float, float, float] | str = 0.0
    normalize: str = "coverage"
    share_probe_masks: bool = False
    combine: str = "max"
    compute_dtype: Any = None

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
