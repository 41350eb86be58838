"""Face detection with MTCNN: boxes, scores and five landmarks per face.

The cascade follows facenet-pytorch 2.6.0's ``detect_face``: an image
pyramid scanned by P-Net (12-pixel faces at each scale), per-scale and
cross-scale non-maximum suppression, box regression, squared boxes cut out
and resized to 24x24 for R-Net, the survivors to 48x48 for O-Net, which also
places the landmarks; a last suppression by overlap over the smaller box.
Resizing is torch's ``interpolate(mode="area")`` (adaptive average pooling),
computed exactly from an integral image.

The networks run jit-compiled on a bounded set of shapes: the pyramid levels
are packed onto one canvas, padded up to a size on a ladder of four steps per
octave (P-Net ignores the padding and the seams, see ``PNet``), so one P-Net
call scans every scale; crop batches are padded to a power of two from 8 to
256. Photos of similar sizes then share compiled programs. The bookkeeping
between the stages (suppression, regression, crops) is NumPy.

A photo with a side above ``MAX_SIDE`` is searched on a copy shrunk by an
integer factor (``detection_image``): time and memory then stay bounded
whatever the photo's size (a 9000x9000 photo took a minute and 14 GB
without it), and the boxes and landmarks are mapped back to the photo's
own pixels.

References:
  Zhang et al., "Joint Face Detection and Alignment Using Multitask Cascaded
  Convolutional Networks", IEEE Signal Processing Letters, 2016.
  https://github.com/timesler/facenet-pytorch/blob/master/models/utils/detect_face.py
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any, NamedTuple

import jax
import numpy as np

from srise_jax.models.mtcnn import INPUT_SIZES, load_mtcnn, onet_apply, pnet_apply, rnet_apply

# facenet-pytorch's normalisation of 0..255 pixels.
_PIXEL_MEAN = 127.5
_PIXEL_SCALE = 0.0078125
# P-Net sees 12x12 windows, one every 2 pixels of its pyramid level.
_CELL = INPUT_SIZES["pnet"]
_CELL_STRIDE = 2
# Suppression thresholds: within a pyramid level, across levels, after R-Net,
# after O-Net (the last over the smaller box's area, the others IoU).
_NMS_LEVEL = 0.5
_NMS_PROPOSALS = 0.7
_NMS_REFINED = 0.7
_NMS_OUTPUT = 0.7
# Crop batches are padded up to one of these (time grows with the padded batch,
# compiles with the number of sizes); larger ones run in chunks of the last.
_BATCH_BUCKETS = (8, 16, 32, 64, 128, 256)
_MIN_CANVAS = 16
# Float images may overshoot [0, 1] by rounding; anything beyond this is a wrong scale.
_RANGE_TOLERANCE = 1e-3
# The longest side the detector scans, in pixels. Larger photos are shrunk by
# the smallest integer factor f that fits (block means of f x f pixels): the
# cascade then searches faces of at least min_face_size * f photo pixels
# (40 for a 4096-pixel photo), which are the faces worth aligning in a photo
# that large. 2048 keeps the pyramid of a photo under 0.2 s of P-Net on a CPU.
MAX_SIDE = 2048


class Faces(NamedTuple):
    """Faces found in one image, highest score first.

    Attributes:
      boxes: ``(K, 4)`` float32 ``[x1, y1, x2, y2]`` in image pixels; a box
        may reach past the image border when a face does.
      scores: ``(K,)`` float32 O-Net face probabilities.
      landmarks: ``(K, 5, 2)`` float32 ``(x, y)`` in image pixels: left eye,
        right eye, nose, left and right mouth corner, left and right as seen
        in the image (the subject's right eye is the "left eye").
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


def _no_faces() -> Faces:
    return Faces(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


# ---------------------------------------------------------------- compiled networks


def _normalise(pixels: jax.Array) -> jax.Array:
    return (pixels - _PIXEL_MEAN) * _PIXEL_SCALE


@jax.jit
def _pnet_canvas(variables: Any, pixels: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """P-Net's offsets ``(h, w, 4)`` and face probabilities ``(h, w)`` on one packed pyramid."""
    regression, probabilities = pnet_apply(variables, _normalise(pixels[None]), valid)
    return regression[0], probabilities[0, ..., 1]


@jax.jit
def _rnet_batch(variables: Any, crops: jax.Array) -> tuple[jax.Array, jax.Array]:
    regression, probabilities = rnet_apply(variables, _normalise(crops))
    return regression, probabilities[:, 1]


@jax.jit
def _onet_batch(variables: Any, crops: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    regression, landmarks, probabilities = onet_apply(variables, _normalise(crops))
    return regression, landmarks, probabilities[:, 1]


def compiled_shape_counts() -> dict[str, int]:
    """How many input shapes each network has been compiled for in this process.

    Returns:
      ``{"pnet": n, "rnet": n, "onet": n}``: bounded by the padding ladders,
      whatever the sizes of the photos seen.
    """
    return {
        "pnet": _pnet_canvas._cache_size(),
        "rnet": _rnet_batch._cache_size(),
        "onet": _onet_batch._cache_size(),
    }


def _bucket(size: int) -> int:
    """The padded size for a canvas side: the next ``m * 2**e`` with ``m`` in 5..8, at least 16.

    Four steps per octave: less than a fifth of a side is padding, and photos
    of similar sizes share a compiled P-Net.
    """
    step = 1 << max((size - 1).bit_length() - 3, 0)
    return max(-(-size // step) * step, _MIN_CANVAS)


def _run_in_batches(
    network: Callable[..., tuple[jax.Array, ...]], variables: Any, crops: np.ndarray
) -> list[np.ndarray]:
    """A crop network's outputs for ``crops``, run in batches padded to ``_BATCH_BUCKETS``."""
    chunk = _BATCH_BUCKETS[-1]
    pending = []
    for start in range(0, len(crops), chunk):
        part = crops[start : start + chunk]
        size = next(bucket for bucket in _BATCH_BUCKETS if bucket >= len(part))
        padded = np.zeros((size, *part.shape[1:]), np.float32)
        padded[: len(part)] = part
        pending.append((len(part), network(variables, padded)))  # dispatched, not awaited
    outputs = zip(*[[np.asarray(out)[:count] for out in outs] for count, outs in pending])
    return [np.concatenate(parts) for parts in outputs]


# ---------------------------------------------------------------- resizing


def _integral_image(pixels: np.ndarray) -> np.ndarray:
    """``(H + 1, W + 1, 3)`` float64 sums of ``pixels[:y, :x]``: any box's mean in four lookups."""
    height, width = pixels.shape[:2]
    integral = np.zeros((height + 1, width + 1, 3), np.float64)
    np.cumsum(np.cumsum(pixels, axis=0, dtype=np.float64), axis=1, out=integral[1:, 1:])
    return integral


def _bins(start: np.ndarray, stop: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive pooling's bins: ``[start + floor(i n / size), start + ceil((i + 1) n / size))``, n = stop - start."""
    extent = (stop - start)[:, None]
    i = np.arange(size)
    return start[:, None] + i * extent // size, start[:, None] - (-(i + 1) * extent // size)


def _area_resize(integral: np.ndarray, windows: np.ndarray, height: int, width: int) -> np.ndarray:
    """Image windows resized like ``torch.nn.functional.interpolate(mode="area")``.

    Args:
      integral: ``_integral_image`` of the image.
      windows: ``(K, 4)`` int ``[top, bottom, left, right]``, half-open, non-empty.
      height, width: output size.

    Returns:
      ``(K, height, width, 3)`` float32: each output pixel the mean of its
      adaptive-pooling bin (bins overlap when enlarging, as in torch).
    """
    top, bottom = _bins(windows[:, 0], windows[:, 1], height)
    left, right = _bins(windows[:, 2], windows[:, 3], width)
    top, bottom = top[:, :, None], bottom[:, :, None]
    left, right = left[:, None, :], right[:, None, :]
    sums = integral[bottom, right] - integral[top, right] - integral[bottom, left] + integral[top, left]
    return (sums / ((bottom - top) * (right - left))[..., None]).astype(np.float32)


def _area_resize_whole(integral: np.ndarray, height: int, width: int) -> np.ndarray:
    """The whole image resized like ``_area_resize``, ``(height, width, 3)``.

    The same sums taken separably (row bands, then columns): several times
    faster than four 2-D gathers on pyramid levels of a megapixel photo.
    """
    top, bottom = _bins(np.array([0]), np.array([integral.shape[0] - 1]), height)
    left, right = _bins(np.array([0]), np.array([integral.shape[1] - 1]), width)
    bands = integral[bottom[0]] - integral[top[0]]
    sums = np.take(bands, right[0], axis=1) - np.take(bands, left[0], axis=1)
    area = (bottom[0] - top[0])[:, None] * (right[0] - left[0])[None, :]
    return (sums / area[..., None]).astype(np.float32)


# ---------------------------------------------------------------- box arithmetic


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, *, over_min: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression; the indices kept, highest score first.

    A box is dropped when its overlap with a kept one exceeds ``threshold``.
    The overlap is IoU with areas ``(x2 - x1) * (y2 - y1)`` (torchvision's
    ``nms``, facenet-pytorch's first two stages) or, with ``over_min``, the
    intersection over the smaller area with inclusive pixel extents
    (``x2 - x1 + 1``), facenet-pytorch's final "Min" suppression.
    """
    extra = 1.0 if over_min else 0.0
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + extra) * (y2 - y1 + extra)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        width = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + extra)
        height = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + extra)
        inter = width * height
        denominator = np.minimum(area[best], area[rest]) if over_min else area[best] + area[rest] - inter
        # Multiplied out, not divided: degenerate boxes (zero area) are kept, as torchvision keeps them.
        order = rest[inter <= threshold * denominator]
    return np.asarray(keep, dtype=np.int64)


def _regress(boxes: np.ndarray, offsets: np.ndarray, *, inclusive: bool) -> np.ndarray:
    """Boxes moved by offsets in units of their width and height.

    facenet-pytorch measures P-Net's boxes as ``x2 - x1`` and R-/O-Net's as
    ``x2 - x1 + 1`` (``inclusive``); both are kept for fidelity.
    """
    extra = 1.0 if inclusive else 0.0
    width = boxes[:, 2] - boxes[:, 0] + extra
    height = boxes[:, 3] - boxes[:, 1] + extra
    return boxes + offsets * np.stack([width, height, width, height], axis=1)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares of side ``max(width, height)`` about their centres."""
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    x1 = boxes[:, 0] + 0.5 * (width - side)
    y1 = boxes[:, 1] + 0.5 * (height - side)
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _crop_windows(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The image windows cut for boxes, facenet-pytorch's ``pad``: truncated, clipped to the image.

    Returns:
      ``(windows, nonempty)``: ``(K, 4)`` int ``[top, bottom, left, right]``
      and which windows hold pixels (boxes wholly outside the image do not).
      A clipped window is resized whole, so a face at the border is
      stretched, as in facenet-pytorch.
    """
    corners = np.trunc(boxes).astype(np.int64)
    left = np.maximum(corners[:, 0], 1) - 1
    top = np.maximum(corners[:, 1], 1) - 1
    right = np.minimum(corners[:, 2], width)
    bottom = np.minimum(corners[:, 3], height)
    return np.stack([top, bottom, left, right], axis=1), (bottom > top) & (right > left)


# ---------------------------------------------------------------- the three stages


def _scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Pyramid scales: a ``min_face_size`` face becomes 12 pixels, then by ``factor`` until the image is under 12."""
    scale = _CELL / min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= _CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _shelves(slots: Sequence[tuple[int, int]], canvas_width: int) -> tuple[list[tuple[int, int]], int]:
    """First-fit shelf packing of ``slots`` (largest first) into ``canvas_width``: origins and height."""
    shelves = []  # [top, height, used width]
    origins = []
    for height, width in slots:
        shelf = next((s for s in shelves if s[1] >= height and s[2] + width <= canvas_width), None)
        if shelf is None:
            shelf = [sum(s[1] for s in shelves), height, 0]
            shelves.append(shelf)
        origins.append((shelf[0], shelf[2]))
        shelf[2] += width
    return origins, sum(s[1] for s in shelves)


def _pack(sizes: Sequence[tuple[int, int]]) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Places for the pyramid levels on one padded canvas, and the canvas size.

    Levels go on shelves side by side; of the canvas widths on the ``_bucket``
    ladder from the largest level's width to the two largest side by side,
    the one whose padded canvas is smallest wins. Slots are rounded up to
    even sizes so that every level starts at an even row and column, where
    P-Net's stride-2 pooling grid meets the level's own.

    Args:
      sizes: ``(height, width)`` of each level, largest first.

    Returns:
      ``(origins, (height, width))``: each level's top-left ``(row, column)``
      and the canvas size, both sides on the ``_bucket`` ladder.
    """
    slots = [(height + height % 2, width + width % 2) for height, width in sizes]
    best = None
    width = _bucket(slots[0][1])
    while True:
        origins, height = _shelves(slots, width)
        if best is None or _bucket(height) * width < best[1][0] * best[1][1]:
            best = origins, (_bucket(height), width)
        if width >= sum(slot_width for _, slot_width in slots[:2]):
            return best
        width = _bucket(width + 1)


def _cells(side: int) -> int:
    """P-Net's output cells along a level side: 3x3 conv, ceil-mode 2/2 pool, two 3x3 convs."""
    return (side - 1) // 2 - 4


def _propose(variables: Any, integral: np.ndarray, scales: Sequence[float], threshold: float) -> np.ndarray:
    """P-Net over the pyramid: ``(K, 4)`` regressed, squared candidate boxes."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    sizes = [(int(height * scale + 1), int(width * scale + 1)) for scale in scales]
    origins, canvas_size = _pack(sizes)
    canvas = np.zeros((*canvas_size, 3), np.float32)
    valid = np.zeros(canvas.shape[:2], bool)
    for (top, left), (level_h, level_w) in zip(origins, sizes):
        canvas[top : top + level_h, left : left + level_w] = _area_resize_whole(integral, level_h, level_w)
        valid[top : top + level_h, left : left + level_w] = True
    regression, probabilities = (np.asarray(out) for out in _pnet_canvas(variables, canvas, valid))

    boxes, scores, offsets = [], [], []
    for scale, (top, left), (level_h, level_w) in zip(scales, origins, sizes):
        # The level's own output map: cells beyond it saw padding or other levels.
        rows = slice(top // _CELL_STRIDE, top // _CELL_STRIDE + _cells(level_h))
        cols = slice(left // _CELL_STRIDE, left // _CELL_STRIDE + _cells(level_w))
        level_probabilities = probabilities[rows, cols]
        cell_rows, cell_cols = np.nonzero(level_probabilities >= threshold)
        cells = np.stack([cell_cols, cell_rows], axis=1).astype(np.float32)
        level_scale = np.float32(scale)
        # Each cell's 12x12 window, back in image pixels (facenet-pytorch's rounding).
        corners = np.concatenate([_CELL_STRIDE * cells + 1, _CELL_STRIDE * cells + _CELL], axis=1)
        level_boxes = np.floor(corners / level_scale)
        level_scores = level_probabilities[cell_rows, cell_cols]
        keep = _nms(level_boxes, level_scores, _NMS_LEVEL)
        boxes.append(level_boxes[keep])
        scores.append(level_scores[keep])
        offsets.append(regression[rows, cols][cell_rows[keep], cell_cols[keep]])
    boxes, scores, offsets = (np.concatenate(parts) for parts in (boxes, scores, offsets))
    keep = _nms(boxes, scores, _NMS_PROPOSALS)
    return _square(_regress(boxes[keep], offsets[keep], inclusive=False))


def _crops(integral: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes that hold pixels, their crops resized to size x size)``."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    windows, nonempty = _crop_windows(boxes, height, width)
    return boxes[nonempty], _area_resize(integral, windows[nonempty], size, size)


def _refine(variables: Any, integral: np.ndarray, boxes: np.ndarray, threshold: float) -> np.ndarray:
    """R-Net on the candidates: ``(K, 4)`` regressed, squared boxes it accepts."""
    boxes, crops = _crops(integral, boxes, INPUT_SIZES["rnet"])
    if not len(boxes):
        return boxes
    offsets, scores = _run_in_batches(_rnet_batch, variables, crops)
    accepted = scores > threshold
    boxes, scores, offsets = boxes[accepted], scores[accepted], offsets[accepted]
    keep = _nms(boxes, scores, _NMS_REFINED)
    return _square(_regress(boxes[keep], offsets[keep], inclusive=True))


def _output(variables: Any, integral: np.ndarray, boxes: np.ndarray, threshold: float) -> Faces:
    """O-Net on the refined boxes: final boxes, scores and landmarks."""
    boxes, crops = _crops(integral, boxes, INPUT_SIZES["onet"])
    if not len(boxes):
        return _no_faces()
    offsets, relative, scores = _run_in_batches(_onet_batch, variables, crops)
    accepted = scores > threshold
    boxes, scores, offsets, relative = boxes[accepted], scores[accepted], offsets[accepted], relative[accepted]
    # Landmarks are placed in the box O-Net saw, before its regression moves it.
    origin = boxes[:, None, :2] - 1.0
    extent = (boxes[:, None, 2:] - boxes[:, None, :2]) + 1.0
    landmarks = origin + extent * np.stack([relative[:, :5], relative[:, 5:]], axis=-1)
    boxes = _regress(boxes, offsets, inclusive=True)
    keep = _nms(boxes, scores, _NMS_OUTPUT, over_min=True)
    return Faces(boxes[keep], scores[keep], landmarks[keep])


# ---------------------------------------------------------------- public entry point


def _checked_array(image: Any) -> np.ndarray:
    """``image`` as an ``(H, W, 3)`` uint8 or float array (not copied), or a ValueError saying what is wrong."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"detect_faces expects one RGB image of shape (H, W, 3), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"detect_faces expects a float image in [0, 1] or uint8 in 0..255, got dtype {array.dtype}")
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(
            f"detect_faces expects float pixels in [0, 1], got values in [{low:g}, {high:g}] "
            "(pass uint8 for 0..255 images)"
        )
    return array


def detection_image(image: Any, *, max_side: int = MAX_SIDE) -> tuple[np.ndarray, int]:
    """The pixels the detector scans: the image, shrunk if a side exceeds ``max_side``.

    The shrink factor is the smallest integer ``f`` with ``max(H, W) / f <=
    max_side``; each output pixel is the mean of an ``f x f`` block, and the
    last ``H mod f`` rows and ``W mod f`` columns are left out. Output pixel
    ``(x, y)`` (centres at integers) covers photo pixels centred on
    ``f (x + 0.5) - 0.5``. Only the output is allocated in float: a large
    uint8 photo is never copied whole.

    Args:
      image: ``(H, W, 3)`` RGB, float in [0, 1] or uint8 in 0..255.
      max_side: the longest side scanned, in pixels.

    Returns:
      ``(pixels, f)``: ``(H // f, W // f, 3)`` float32 in 0..255 and the
      integer factor ``f`` (1 when the image already fits).

    Raises:
      ValueError: as ``detect_faces``.
    """
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < _CELL:
        raise ValueError(f"max_side must be an int of at least {_CELL} pixels, got {max_side!r}")
    array = _checked_array(image)
    scale = 1.0 if array.dtype == np.uint8 else 255.0
    height, width = array.shape[:2]
    factor = -(-max(height, width) // max_side)
    if factor > 1:
        rows, cols = height // factor, width // factor
        # Splitting an axis is a view: bands of f rows summed in float32 (the
        # one temporary, 1/f of the image), then runs of f columns. Three
        # times faster than one mean over both axes of the strided view.
        bands = array[: rows * factor, : cols * factor].reshape(rows, factor, cols * factor, 3)
        sums = bands.sum(axis=1, dtype=np.float32).reshape(rows, cols, factor, 3).sum(axis=2)
        pixels = sums / np.float32(factor * factor)
    else:
        pixels = array.astype(np.float32)
    return np.clip(pixels * np.float32(scale), 0.0, 255.0), factor


def _check_options(min_face_size: Any, thresholds: Any, factor: Any) -> tuple[float, float, float]:
    """The thresholds as three floats, after checking every option."""
    if not isinstance(min_face_size, Real) or not min_face_size > 0:
        raise ValueError(f"min_face_size must be a positive number of pixels, got {min_face_size!r}")
    if not isinstance(factor, Real) or not 0 < factor < 1:
        raise ValueError(f"factor must be in (0, 1), got {factor!r}")
    try:
        values = tuple(float(t) for t in thresholds)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(0 <= t <= 1 for t in values):
        raise ValueError(f"thresholds must be three probabilities (P-Net, R-Net, O-Net), got {thresholds!r}")
    return values


def detect_faces(
    image: Any,
    *,
    min_face_size: float = 20,
    thresholds: Sequence[float] = (0.6, 0.7, 0.7),
    factor: float = 0.709,
    max_side: int = MAX_SIDE,
) -> Faces:
    """Find faces and their five landmarks with MTCNN (facenet-pytorch's weights and cascade).

    An image with a side above ``max_side`` is searched at a lower
    resolution (``detection_image``, shrunk by an integer factor ``f``):
    faces then need a side of ``min_face_size * f`` photo pixels, and the
    boxes and landmarks are mapped back to the image's own pixels
    (``f (x + 0.5) - 0.5``), so they can be used on the full-resolution image.

    Args:
      image: ``(H, W, 3)`` RGB, float in [0, 1] or uint8 in 0..255.
      min_face_size: smallest face side searched for, in pixels of the
        scanned image.
      thresholds: face probabilities P-Net, R-Net and O-Net must reach.
      factor: ratio between successive pyramid scales.
      max_side: the longest side scanned, in pixels (default ``MAX_SIDE``).

    Returns:
      ``Faces`` (NumPy float32) in the image's pixel coordinates, highest
      score first; zero rows when no face is found.

    Raises:
      ValueError: ``image`` is not ``(H, W, 3)``, of another dtype, or a float
        image outside [0, 1]; or an option is out of range.
    """
    stage_thresholds = _check_options(min_face_size, thresholds, factor)
    pixels, shrink = detection_image(image, max_side=max_side)
    scales = _scales(pixels.shape[0], pixels.shape[1], min_face_size, factor)
    if not scales:
        return _no_faces()
    variables = load_mtcnn()
    integral = _integral_image(pixels)
    boxes = _propose(variables["pnet"], integral, scales, stage_thresholds[0])
    if len(boxes):
        boxes = _refine(variables["rnet"], integral, boxes, stage_thresholds[1])
    if not len(boxes):
        return _no_faces()
    faces = _output(variables["onet"], integral, boxes, stage_thresholds[2])
    order = np.argsort(-faces.scores, kind="stable")
    boxes, scores, landmarks = (field[order] for field in faces)
    if shrink > 1:
        # Pixel centres at integers: scanned x covers photo x' = f (x + 0.5) - 0.5.
        boxes, landmarks = ((value + 0.5) * shrink - 0.5 for value in (boxes, landmarks))
    return Faces(*(np.asarray(field, np.float32) for field in (boxes, scores, landmarks)))
