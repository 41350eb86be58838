"""Random masks for perturbation-based saliency: S-RISE Gaussian patches, classic RISE grids.

Every mask generator here is a pure function of a `jax.random` key and is built
from a per-mask function (`gaussian_mask`, `rise_mask`) so that the kernel can
make masks chunk by chunk inside its compiled loop and get exactly the masks
that `gaussian_masks(key, num_masks)` returns for the same key: mask `i` is
always made from `jax.random.split(key, num_masks)[i]`.

`srise_masks` / `srise_mask_fn` add the options the paper leaves open
(stratified patch centres, several patch scales, antithetic pairs); with
their defaults they make exactly the masks of `gaussian_masks`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike


def _offsets(kernel_size: int) -> tuple[int, int]:
    """Offsets `d = pixel - centre` covered by a truncated window: [-lo, hi)."""
    lo = kernel_size // 2
    return lo, kernel_size - lo


def _min_plus_axis(dist2: jax.Array, axis: int, kernel_size: int) -> jax.Array:
    """out[y] = min_d dist2[y - d] + d**2 over the window offsets, along `axis`.

    This is a grey-scale erosion with a parabolic structuring element; applied
    along rows then columns it gives the squared distance from each pixel to the
    nearest patch centre whose truncated window covers it (the window is a box,
    and the box and d**2 are both separable). Cost per pass: H*W*kernel_size,
    independent of the number of patches.
    """
    lo, hi = _offsets(kernel_size)
    n = dist2.shape[axis]
    pad = [(0, 0)] * dist2.ndim
    pad[axis] = (hi - 1, lo)
    padded = jnp.pad(dist2, pad, constant_values=jnp.inf)
    out = jnp.full(dist2.shape, jnp.inf, dist2.dtype)
    for d in range(-lo, hi):
        start = hi - 1 - d
        shifted = jax.lax.slice_in_dim(padded, start, start + n, axis=axis)
        out = jnp.minimum(out, shifted + float(d * d))
    return out


COMBINE = ("max", "sum", "occlude")


def _sum_axis(x: jax.Array, axis: int, taps: jax.Array, kernel_size: int) -> jax.Array:
    """out[y] = sum_d x[y - d] * taps[d] over the window offsets, along `axis`."""
    lo, hi = _offsets(kernel_size)
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (hi - 1, lo)
    padded = jnp.pad(x, pad)
    out = jnp.zeros_like(x)
    for i, d in enumerate(range(-lo, hi)):
        start = hi - 1 - d
        out = out + taps[i] * jax.lax.slice_in_dim(padded, start, start + n, axis=axis)
    return out


def _window_columns(centres: jax.Array, shape: tuple[int, int], kernel_size: int,
                    values: jax.Array, reduce: str) -> jax.Array:
    """(H, W) image with each patch's window column `values` written at its centre's column.

    The first (vertical) pass only has work at the patches' columns: each
    patch writes its own window column, P * kernel_size values, instead of a
    pass over all H * W pixels. Rows outside the image are dropped; columns
    of several patches meet by `reduce` ("add" or "min").
    """
    height, width = shape
    lo, hi = _offsets(kernel_size)
    rows = centres[:, :1] + jnp.arange(-lo, hi)[None, :]
    rows = jnp.where((rows >= 0) & (rows < height), rows, height)  # dropped
    cols = jnp.broadcast_to(centres[:, 1:], rows.shape)
    if reduce == "add":
        image = jnp.zeros((height, width), jnp.float32).at[rows, cols]
        return image.add(jnp.broadcast_to(values, rows.shape), mode="drop")
    image = jnp.full((height, width), jnp.inf, jnp.float32).at[rows, cols]
    return image.min(jnp.broadcast_to(values, rows.shape), mode="drop")


def _window_column_distances(centres: jax.Array, shape: tuple[int, int],
                             kernel_size: int) -> jax.Array:
    """Squared vertical offset to the nearest centre in the same column (inf outside windows)."""
    lo, hi = _offsets(kernel_size)
    d = jnp.arange(-lo, hi).astype(jnp.float32)
    return _window_columns(centres, shape, kernel_size, d * d, "min")


CENTRES = ("uniform", "stratified")


def _check_centres(centres: str) -> None:
    if centres not in CENTRES:
        raise ValueError(f"centres must be one of {CENTRES}, got {centres!r}")


def _grid_side(num_patches: int, shape: tuple[int, int]) -> int:
    """g = ceil(sqrt(num_patches)), checked so that every grid cell holds a pixel."""
    side = math.isqrt(num_patches - 1) + 1 if num_patches >= 1 else 0
    if not 1 <= side <= min(shape):
        raise ValueError(f"stratified centres need 1 <= ceil(sqrt(num_patches)) <= "
                         f"min(shape), got num_patches {num_patches} for shape "
                         f"{tuple(shape)}")
    return side


def patch_centres(
        key: jax.Array,
        shape: tuple[int, int],
        num_patches: int,
        *,
        centres: str = "uniform",
) -> jax.Array:
    """The (y, x) pixel centres of one mask's Gaussian patches.

    "uniform" (default): each centre uniform over the pixel grid, independently
      (the draw `gaussian_mask` has always made, so default masks are unchanged).
    "stratified": a jittered grid, which spreads the patches more evenly than
      independent draws (fewer clumps and holes, so less mask-to-mask
      variance in what is covered). With g = ceil(sqrt(num_patches)), the
      image is cut into g x g cells with boundaries at floor(k * H / g) and
      floor(k * W / g); `num_patches` distinct cells are drawn at random (all
      of them when num_patches = g * g) and each gets one centre, uniform over
      its pixels.

    Deterministic in `key`; jit- and vmap-able with `shape`, `num_patches` and
    `centres` static.

    Args:
        key: a `jax.random` key.
        shape: (H, W) of the mask.
        num_patches: n, the number of centres.
        centres: "uniform" or "stratified" (above).

    Returns:
        Int[Array, "n 2"]: row i is (y, x) of patch i, 0 <= y < H, 0 <= x < W.

    Raises:
        ValueError: `centres` unknown, or stratified with
            ceil(sqrt(num_patches)) outside [1, min(H, W)] (a cell with no pixel).
    """
    _check_centres(centres)
    height, width = shape
    if centres == "uniform":
        return jax.random.randint(key, (num_patches, 2), 0, jnp.array([height, width]))
    side = _grid_side(num_patches, shape)
    key_cells, key_jitter = jax.random.split(key)
    cells = jax.random.permutation(key_cells, side * side)[:num_patches]
    cell = jnp.stack([cells // side, cells % side], axis=1)
    size = jnp.array([height, width])
    # Integer arithmetic keeps the boundaries exactly floor(k * H / g).
    return jax.random.randint(key_jitter, (num_patches, 2), cell * size // side,
                              (cell + 1) * size // side)


def gaussian_mask(
        key: jax.Array,
        shape: tuple[int, int] = (112, 112),
        *,
        num_patches: int = 100,
        kernel_size: int = 40,
        sigma: float = 7.0,
        combine: str = "max",
        centres: str = "uniform",
        dtype: DTypeLike = jnp.float32,
) -> jax.Array:
    """One S-RISE mask: Gaussian patches at random centres, combined.

    Each patch is `exp(-((y-cy)**2 + (x-cx)**2) / (2 sigma**2))` (peak 1 at its
    centre), truncated to a `kernel_size` x `kernel_size` window
    (offsets `-(kernel_size//2) .. kernel_size - kernel_size//2 - 1`), with its
    centre drawn by `patch_centres` (by default uniformly over the pixel
    grid). The value 1 keeps a pixel.

    Combination rule (`combine`; the paper does not say which it used):
      "max" (default): the pointwise MAX of the patches (the fuzzy union); the
        patches are what stays visible. It keeps the Gaussian profile (with
        the paper's defaults: mean value about 0.7, a fifth of the pixels
        below 0.5). Because all patches share sigma,
        max_p exp(-r_p**2 / 2 sigma**2) = exp(-min_p r_p**2 / 2 sigma**2): the
        mask comes from a squared distance transform of the centre impulses,
        separable: each patch's window column (a scatter-min of
        `kernel_size` values), then one horizontal min-plus pass of
        `kernel_size` taps.
      "sum": the sum of the patches clipped to 1. With the paper's defaults
        the patches cover a 112x112 image about 2.5 times over, so the
        clipped sum is 1 almost everywhere (mean value 0.95, 86% of the
        pixels fully visible) and the masks barely perturb the face. Computed as
        the patches' window columns (a scatter-add) convolved horizontally with
        the Gaussian's taps.
      "occlude": one minus the "max" mask: the patches hide the face.
    Each rule costs O(H * W * kernel_size + num_patches * kernel_size) per
    mask (never O(num_patches * H * W)).

    Args:
        key: a `jax.random` key.
        shape: (H, W) of the mask.
        num_patches: Gaussian patches per mask (paper: 100).
        kernel_size: side of the truncation window in pixels (paper: 40).
        sigma: standard deviation of each patch in pixels (paper: 7).
        combine: "max", "sum" or "occlude" (above).
        centres: how the patch centres are drawn, "uniform" or "stratified"
            (`patch_centres`).
        dtype: output dtype.

    Returns:
        Float[Array, "h w"] with values in [0, 1].

    Raises:
        ValueError: an unknown `combine` or `centres`.
    """
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")
    centres = patch_centres(key, shape, num_patches, centres=centres)
    if combine == "sum":
        lo, hi = _offsets(kernel_size)
        taps = jnp.exp(-jnp.arange(-lo, hi, dtype=jnp.float32)**2 / (2.0 * sigma**2))
        column = _window_columns(centres, shape, kernel_size, taps, "add")
        total = _sum_axis(column, 1, taps, kernel_size)
        return jnp.minimum(total, 1.0).astype(dtype)
    dist2 = _min_plus_axis(_window_column_distances(centres, shape, kernel_size), 1,
                           kernel_size)
    union = jnp.exp(-dist2 / (2.0 * sigma**2))
    return (1.0 - union if combine == "occlude" else union).astype(dtype)


def gaussian_masks(
        key: jax.Array,
        num_masks: int,
        shape: tuple[int, int] = (112, 112),
        *,
        num_patches: int = 100,
        kernel_size: int = 40,
        sigma: float = 7.0,
        combine: str = "max",
        centres: str = "uniform",
        dtype: DTypeLike = jnp.float32,
) -> jax.Array:
    """`num_masks` S-RISE masks (paper section 3.2.1; defaults from 4.1.2).

    Mask `i` is `gaussian_mask(jax.random.split(key, num_masks)[i], ...)`; see
    `gaussian_mask` for the patch shape and the combination rule.

    Args:
        key: a `jax.random` key.
        num_masks: N, the number of masks.
        shape: (H, W).
        num_patches: Gaussian patches per mask.
        kernel_size: truncation window of each patch.
        sigma: standard deviation of each patch in pixels.
        combine: how the patches combine, as in `gaussian_mask`.
        centres: how the patch centres are drawn, as in `gaussian_mask`.
        dtype: output dtype.

    Returns:
        Float[Array, "n h w"] in [0, 1].

    References:
        Lu and Ebrahimi, "Explanation of Face Recognition via Saliency Maps",
        arXiv:2304.06118, section 3.2.1.
    """
    make = gaussian_mask_fn(shape, num_patches=num_patches, kernel_size=kernel_size,
                            sigma=sigma, combine=combine, centres=centres,
                            dtype=dtype)
    return make(jax.random.split(key, num_masks))


def gaussian_mask_fn(
        shape: tuple[int, int],
        *,
        num_patches: int = 100,
        kernel_size: int = 40,
        sigma: float = 7.0,
        combine: str = "max",
        centres: str = "uniform",
        dtype: DTypeLike = jnp.float32,
) -> Callable[[jax.Array], jax.Array]:
    """A mask maker for the kernel: a batch of keys -> a batch of S-RISE masks.

    The kernel (`srise.masked_sums`) makes each chunk's masks inside its
    compiled loop from that chunk's keys; a maker that maps key i to mask i
    whatever the batch keeps every chunking equal to `gaussian_masks`.

    Args:
        shape: (H, W) of the masks.
        num_patches, kernel_size, sigma, combine, centres, dtype: as in
            `gaussian_mask`.

    Returns:
        `make(keys)`: keys (B,) (typed keys, or (B, 2) raw uint32 keys) ->
        Float[Array, "b h w"], mask b = `gaussian_mask(keys[b], shape, ...)`.

    Raises:
        ValueError: an unknown `combine` or `centres`, or stratified centres
            with more grid cells per side than the image has pixels.
    """
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")
    _check_centres(centres)
    if centres == "stratified":
        _grid_side(num_patches, shape)
    one = lambda k: gaussian_mask(k, shape, num_patches=num_patches,
                                  kernel_size=kernel_size, sigma=sigma,
                                  combine=combine, centres=centres, dtype=dtype)
    return jax.vmap(one)


def rise_mask(
        key: jax.Array,
        shape: tuple[int, int],
        *,
        grid: int = 7,
        p: float = 0.5,
        dtype: DTypeLike = jnp.float32,
) -> jax.Array:
    """One classic RISE mask: a binary grid, bilinearly upsampled, randomly shifted.

    A `grid` x `grid` binary grid (each cell kept with probability `p`) is
    upsampled to `(grid + 1) * cell` pixels per side, `cell = ceil(H / grid)`,
    and an H x W window is cropped at a random shift in [0, cell) per axis
    (Petsiuk et al., 2018, section 3.2).

    Args:
        key: a `jax.random` key.
        shape: (H, W).
        grid: cells per side of the binary grid.
        p: probability that a cell is kept (1).
        dtype: output dtype.

    Returns:
        Float[Array, "h w"] in [0, 1].
    """
    height, width = shape
    cell_h = -(-height // grid)
    cell_w = -(-width // grid)
    k_grid, k_shift = jax.random.split(key)
    cells = jax.random.bernoulli(k_grid, p, (grid, grid)).astype(jnp.float32)
    up = jax.image.resize(cells, ((grid + 1) * cell_h, (grid + 1) * cell_w),
                          method="linear")
    dy, dx = jax.random.randint(k_shift, (2,), 0, jnp.array([cell_h, cell_w]))
    return jax.lax.dynamic_slice(up, (dy, dx), (height, width)).astype(dtype)


def rise_masks(
        key: jax.Array,
        num_masks: int,
        shape: tuple[int, int] = (112, 112),
        *,
        grid: int = 7,
        p: float = 0.5,
        dtype: DTypeLike = jnp.float32,
) -> jax.Array:
    """`num_masks` classic RISE masks, for comparison with the Gaussian masks.

    Args:
        key: a `jax.random` key.
        num_masks: N.
        shape: (H, W).
        grid: cells per side of the binary grid.
        p: probability that a cell is kept.
        dtype: output dtype.

    Returns:
        Float[Array, "n h w"] in [0, 1].

    References:
        Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation
        of Black-box Models", BMVC 2018.
    """
    return rise_mask_fn(shape, grid=grid, p=p, dtype=dtype)(
        jax.random.split(key, num_masks))


def rise_mask_fn(
        shape: tuple[int, int],
        *,
        grid: int = 7,
        p: float = 0.5,
        dtype: DTypeLike = jnp.float32,
) -> Callable[[jax.Array], jax.Array]:
    """A mask maker for the kernel: a batch of keys -> a batch of RISE masks.

    Args:
        shape: (H, W) of the masks.
        grid, p, dtype: as in `rise_mask`.

    Returns:
        `make(keys)`: keys (B,) -> Float[Array, "b h w"], mask b =
        `rise_mask(keys[b], shape, ...)`, as `rise_masks` draws them.
    """
    one = lambda k: rise_mask(k, shape, grid=grid, p=p, dtype=dtype)
    return jax.vmap(one)


def check_scales(scales: tuple[float, ...]) -> None:
    """Refuse patch scales that are not a non-empty tuple of positive numbers.

    Args:
      scales: the scales of `srise_mask_fn`.

    Raises:
      ValueError: naming the value given.
    """
    if not (isinstance(scales, tuple) and scales and all(
            isinstance(s, (int, float)) and not isinstance(s, bool)
            and math.isfinite(s) and s > 0 for s in scales)):
        raise ValueError(f"scales must be a non-empty tuple of positive numbers, "
                         f"got {scales!r}")


def _scaled(scale: float, num_patches: int, kernel_size: int, sigma: float
            ) -> dict[str, int | float]:
    """The patch options at `scale`; 1/scale**2 as many patches keeps the area covered."""
    return dict(num_patches=max(1, round(num_patches / scale**2)),
                kernel_size=max(1, round(kernel_size * scale)), sigma=sigma * scale)


def srise_mask_fn(
        shape: tuple[int, int],
        *,
        num_patches: int = 100,
        kernel_size: int = 40,
        sigma: float = 7.0,
        combine: str = "max",
        centres: str = "uniform",
        scales: tuple[float, ...] = (1.0,),
        antithetic: bool = False,
        dtype: DTypeLike = jnp.float32,
) -> Callable[[tuple[jax.Array, jax.Array]], jax.Array]:
    """A mask maker for the kernel with S-RISE's variance-reduction options.

    Mask (k, i), for key k and global mask index i: with j = i // 2 when
    `antithetic` (else j = i) and s = scales[j % len(scales)], the base mask is
    `gaussian_mask(k, shape, num_patches=max(1, round(num_patches / s**2)),
    kernel_size=max(1, round(kernel_size * s)), sigma=sigma * s, ...)`: the
    patch count goes as 1/s**2 so that every scale covers about the same
    area. The mask is the base, or `1 - base` when `antithetic` and i is odd,
    so mask 2m + 1 is the complement of mask 2m when they share a key (as
    `mask_sources` makes them): every pixel is kept by exactly one unit of
    the pair, which cancels the masks' own variation in the coverage.

    Because the index is global, any chunking of the sources gives the same
    masks. Each scale's masks are made for the whole chunk and then selected
    per mask: the mask cost is about 1% of S-RISE's, so the waste is small.
    With the defaults, `make((jax.random.split(key, N), jnp.arange(N)))`
    equals `gaussian_mask_fn(shape, ...)(jax.random.split(key, N))` exactly.

    Args:
        shape: (H, W) of the masks.
        num_patches, kernel_size, sigma: the patches at scale 1, as in
            `gaussian_mask`.
        combine: how the patches combine, as in `gaussian_mask`.
        centres: how the patch centres are drawn, as in `gaussian_mask`.
        scales: the patch scales, used in turn (mask pair j, or mask j
            without `antithetic`, uses scales[j % len(scales)]).
        antithetic: odd masks are the complements of the even masks before them.
        dtype: output dtype.

    Returns:
        `make(sources)`: sources = (keys (B,) typed keys, index (B,) int32
        global mask indices) -> Float[Array, "b h w"] in [0, 1].

    Raises:
        ValueError: an unknown `combine` or `centres`; `scales` not a
            non-empty tuple of positive numbers.
    """
    check_scales(scales)
    makers = [gaussian_mask_fn(shape, **_scaled(s, num_patches, kernel_size, sigma),
                               combine=combine, centres=centres, dtype=dtype)
              for s in scales]

    def make(sources: tuple[jax.Array, jax.Array]) -> jax.Array:
        keys, index = sources
        pair = index // 2 if antithetic else index
        which = (pair % len(makers))[:, None, None]
        out = makers[0](keys)
        for s, maker in enumerate(makers[1:], start=1):
            out = jnp.where(which == s, maker(keys), out)
        if antithetic:
            out = jnp.where((index % 2 == 1)[:, None, None], 1 - out, out)
        return out

    return make


def mask_sources(
        key: jax.Array,
        num_masks: int,
        *,
        antithetic: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """The per-mask inputs of `srise_mask_fn`'s maker: (keys, global indices).

    Without `antithetic` the keys are `jax.random.split(key, num_masks)`, the
    keys of `gaussian_masks`, so default masks are unchanged. With it, masks
    2m and 2m + 1 share key m of `jax.random.split(key, ceil(num_masks / 2))`
    (the maker complements the odd one).

    Args:
        key: a `jax.random` key.
        num_masks: N.
        antithetic: pair the masks' keys, as above.

    Returns:
        (keys (N,), index Int[Array, "n"] = arange(N) as int32).
    """
    index = jnp.arange(num_masks, dtype=jnp.int32)
    if not antithetic:
        return jax.random.split(key, num_masks), index
    return jax.random.split(key, -(-num_masks // 2))[index // 2], index


def srise_masks(
        key: jax.Array,
        num_masks: int,
        shape: tuple[int, int] = (112, 112),
        *,
        num_patches: int = 100,
        kernel_size: int = 40,
        sigma: float = 7.0,
        combine: str = "max",
        centres: str = "uniform",
        scales: tuple[float, ...] = (1.0,),
        antithetic: bool = False,
        dtype: DTypeLike = jnp.float32,
) -> jax.Array:
    """`num_masks` S-RISE masks with the variance-reduction options.

    `srise_mask_fn(shape, ...)(mask_sources(key, num_masks, antithetic=...))`;
    with the defaults, exactly `gaussian_masks(key, num_masks, shape, ...)`.

    Args:
        key: a `jax.random` key.
        num_masks: N.
        shape: (H, W).
        num_patches, kernel_size, sigma, combine, centres, scales, antithetic,
            dtype: as in `srise_mask_fn`.

    Returns:
        Float[Array, "n h w"] in [0, 1].

    Raises:
        ValueError: as `srise_mask_fn`.
    """
    make = srise_mask_fn(shape, num_patches=num_patches, kernel_size=kernel_size,
                         sigma=sigma, combine=combine, centres=centres,
                         scales=scales, antithetic=antithetic, dtype=dtype)
    return make(mask_sources(key, num_masks, antithetic=antithetic))
