"""Face alignment: five landmarks onto the ArcFace template, as the model was trained.

ArcFace models are trained on 112x112 crops made by one similarity transform
(rotation, uniform scale, translation) that takes the five detected landmarks
(left eye, right eye, nose tip, left and right mouth corners) as close as
possible, in least squares, to fixed template positions (insightface's
`face_align.py`). `similarity_transform` estimates that transform,
`warp_affine` applies it with bilinear sampling, `align_face` does both, and
`preprocess` goes from a photo to an aligned crop through the MTCNN detector.
`DLIB_150` is the template for dlib's face recognition network instead
(150x150 chips).

Coordinates follow OpenCV's `warpAffine` (which insightface uses): (x, y) with
x to the right and y down, and the centre of pixel [row i, column j] at
integer coordinates (x, y) = (j, i), so the image spans [-0.5, W - 0.5] in x.
Landmarks and templates are in these coordinates.

`similarity_transform`, `warp_affine` and `align_face` are pure JAX: jit them,
and vmap them over a batch of faces (images of one size).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from srise_jax.images import check_crop_size, load_image
# The templates belong to the models (each is trained on crops made one way);
# the aligner re-exports them, where they have always been offered.
from srise_jax.models.templates import ARCFACE_112, DLIB_150

__all__ = ["ARCFACE_112", "DLIB_150", "MIN_CONFIDENT_SCORE", "AlignedFace",
           "LowScoreWarning", "NoFaceError", "align_face", "detect_and_align",
           "preprocess", "similarity_transform", "warp_affine"]

# The side of ARCFACE_112's crop: `align_face` scales the template to other sizes.
_ARCFACE_SIZE = 112

# Below this O-Net score `detect_and_align` warns that the crop may not be a
# usable face. Clear frontal faces score above 0.99 (the bundled photos:
# 0.9998 to 0.99999), while the detector's own threshold (0.7) still passes
# sideways faces: obama.jpg turned a quarter (and 630 pixels wide) is
# aligned, upright-looking but wrong, at 0.78.
MIN_CONFIDENT_SCORE = 0.9


class NoFaceError(ValueError):
    """The detector found no face in an image; the message names the image."""


class LowScoreWarning(UserWarning):
    """A face was aligned whose detection score is below `MIN_CONFIDENT_SCORE`."""


def similarity_transform(src: jax.Array, dst: jax.Array) -> jax.Array:
    """Least-squares similarity transform (no reflection) taking src onto dst.

    Umeyama's (1991) estimator: the rotation R, scale c > 0 and translation t
    minimizing sum_i ||dst_i - (c R src_i + t)||^2. In 2-D, c R is
    multiplication by one complex number a, so the minimizer has the closed
    form a = sum(conj(s_i) d_i) / sum(|s_i|^2) over the centred points (no SVD,
    smooth in the points).

    Args:
      src: Float[Array, "n 2"] source points (x, y), n >= 2, not all equal.
      dst: Float[Array, "n 2"] target points (x, y).

    Returns:
      Float[Array, "2 3"] matrix M with dst_i ~= M @ [x_i, y_i, 1], as
      OpenCV's `estimateAffinePartial2D` / `warpAffine` take it.

    References:
      S. Umeyama, "Least-squares estimation of transformation parameters
      between two point patterns", IEEE TPAMI 13(4), 1991.
    """
    src = jnp.asarray(src, jnp.float32)
    dst = jnp.asarray(dst, jnp.float32)
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    s = src - src_mean
    d = dst - dst_mean
    norm = jnp.sum(s * s)
    a_re = jnp.sum(s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]) / norm
    a_im = jnp.sum(s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]) / norm
    linear = jnp.array([[a_re, -a_im], [a_im, a_re]])
    shift = dst_mean - linear @ src_mean
    return jnp.concatenate([linear, shift[:, None]], axis=1)


def warp_affine(image: jax.Array, matrix: jax.Array, *, height: int, width: int
                ) -> jax.Array:
    """Warp an image by an affine map, bilinear, zero outside the image.

    Each output pixel centre (x, y) is mapped back into the source by the
    inverse of `matrix` and sampled bilinearly; neighbours outside the source
    count as 0, so the crop fades to black across the image border
    (`cv2.warpAffine(..., flags=INTER_LINEAR, borderValue=0)`, without
    OpenCV's 1/32-pixel quantization of the weights).

    Args:
      image: Float[Array, "h w c"] source image.
      matrix: Float[Array, "2 3"] map from source to output coordinates.
      height: output height in pixels.
      width: output width in pixels.

    Returns:
      Float[Array, "height width c"], the image's floating dtype (float32 for
      integer images, whose values are kept, not rescaled).
    """
    image = jnp.asarray(image)
    if not jnp.issubdtype(image.dtype, jnp.floating):
        image = image.astype(jnp.float32)
    matrix = jnp.asarray(matrix, jnp.float32)
    linear, shift = matrix[:, :2], matrix[:, 2]
    det = linear[0, 0] * linear[1, 1] - linear[0, 1] * linear[1, 0]
    inverse = jnp.array([[linear[1, 1], -linear[0, 1]],
                         [-linear[1, 0], linear[0, 0]]]) / det
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                          jnp.arange(width, dtype=jnp.float32), indexing="ij")
    out = jnp.stack([xs - shift[0], ys - shift[1]], axis=-1)
    src = out @ inverse.T
    return _bilinear(image, src[..., 0], src[..., 1])


def _bilinear(image: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Sample image at (x, y) (pixel centres at integers), zero outside."""
    rows, cols = image.shape[:2]
    x0 = jnp.floor(x)
    y0 = jnp.floor(y)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    x0 = x0.astype(jnp.int32)
    y0 = y0.astype(jnp.int32)

    def tap(row, col):
        inside = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
        value = image[jnp.clip(row, 0, rows - 1), jnp.clip(col, 0, cols - 1)]
        return jnp.where(inside[..., None], value, 0)

    top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
    bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
    return (top * (1 - fy) + bottom * fy).astype(image.dtype)


def align_face(image: jax.Array, landmarks: jax.Array, *, size: int = 112,
               template: jax.Array = ARCFACE_112) -> jax.Array:
    """Crop a face so that its five landmarks fall on the template.

    The default template, `ARCFACE_112`, is scaled by size / 112 about the
    origin for other crop sizes (insightface's `estimate_norm` does the same);
    any other template is in the output crop's pixel coordinates, used as is.

    Args:
      image: Float[Array, "h w 3"] the photo.
      landmarks: Float[Array, "5 2"] (x, y) of the left eye, right eye, nose
        tip, left and right mouth corners in the photo (left/right as seen in
        the image), e.g. `detect_faces(image).landmarks[k]`.
      size: side of the square crop in pixels, at most
        `srise_jax.images.MAX_CROP_SIZE`.
      template: Float[Array, "5 2"] where the landmarks should land.

    Returns:
      Float[Array, "size size 3"] the aligned crop (zero where it leaves the
      photo).

    Raises:
      ValueError: `size` is not an int in [1, MAX_CROP_SIZE].
    """
    size = check_crop_size(size)
    if template is ARCFACE_112:
        template = ARCFACE_112 * np.float32(size / _ARCFACE_SIZE)
    matrix = similarity_transform(landmarks, template)
    return warp_affine(image, matrix, height=size, width=size)


class AlignedFace(NamedTuple):
    """`detect_and_align`'s result: the crop and what the detector found.

    Attributes:
      face: Float[ndarray, "size size 3"] float32 in [0, 1], the aligned crop.
      faces: every detection in the photo (`srise_jax.detect.Faces`).
      index: row of `faces` that was aligned (the largest box).
    """

    face: np.ndarray
    faces: Any
    index: int


def detect_and_align(path_or_array: str | os.PathLike | np.ndarray, *,
                     size: int = 112, template: np.ndarray = ARCFACE_112
                     ) -> AlignedFace:
    """Photo to aligned face crop, with the detections (see `preprocess`).

    A photo with a side above `srise_jax.detect.MAX_SIDE` is searched on a
    shrunk copy (`srise_jax.detect.detection_image`); the landmarks are
    mapped back and the crop is cut from the full-resolution photo.

    Warns `LowScoreWarning` (naming the photo and the score) when the
    aligned face's detection score is below `MIN_CONFIDENT_SCORE`: a sideways
    or blurred face, or not a face, that the detector's threshold let pass.

    Args:
      path_or_array, size, template: as in `preprocess`.

    Returns:
      AlignedFace: the crop (the largest detection aligned on `template`),
      every detection in the photo (in its pixel coordinates), and which one
      was aligned.

    Raises:
      ImageError: the file is missing, not a readable image, or larger than
        `srise_jax.images.MAX_PIXELS`.
      NoFaceError: the detector found no face.
      ValueError: `size` is not an int in [1, `srise_jax.images.MAX_CROP_SIZE`],
        or the array is not RGB.

    References:
      Zhang et al., "Joint Face Detection and Alignment using Multi-task
      Cascaded Convolutional Networks", 2016. https://arxiv.org/abs/1604.02878
    """
    size = check_crop_size(size)
    if isinstance(path_or_array, (str, os.PathLike)):
        source = str(Path(path_or_array))
        image = load_image(path_or_array)
    else:
        image = _rgb_array(path_or_array)
        source = f"the given {image.shape[1]}x{image.shape[0]} image"
    # Imported here: the alignment geometry above does not need the detector.
    from srise_jax.detect import detect_faces

    faces = detect_faces(image)
    if len(faces.boxes) == 0:
        raise NoFaceError(f"no face found in {source}")
    boxes = np.asarray(faces.boxes)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    largest = int(np.argmax(areas))
    score = float(faces.scores[largest])
    if score < MIN_CONFIDENT_SCORE:
        warnings.warn(f"{source}: the aligned face's detection score is {score:.2f}, below "
                      f"{MIN_CONFIDENT_SCORE:g}: the photo may be sideways, blurred or not a "
                      "face; check the crop", LowScoreWarning, stacklevel=2)
    crop = align_face(image, np.asarray(faces.landmarks)[largest], size=size,
                      template=template)
    # Bilinear weights summing to 1 + epsilon can overshoot 1 by an ulp.
    crop = np.clip(np.asarray(crop, dtype=np.float32), 0.0, 1.0)
    return AlignedFace(crop, faces, largest)


def preprocess(path_or_array: str | os.PathLike | np.ndarray, *, size: int = 112,
               template: np.ndarray = ARCFACE_112) -> np.ndarray:
    """Photo to aligned face crop: load, detect (MTCNN), align the largest face.

    Args:
      path_or_array: an image file (any format `srise_jax.images.load_image`
        reads; EXIF orientation applied), or an (h, w, 3) RGB array, float in
        [0, 1] or uint8.
      size: side of the square crop in pixels, at most
        `srise_jax.images.MAX_CROP_SIZE`.
      template: Float[ndarray, "5 2"] where the landmarks should land, as in
        `align_face` (e.g. `DLIB_150` with size=150 for dlib's network).

    Returns:
      Float[ndarray, "size size 3"] float32 in [0, 1]: the face with the
      largest detection box, aligned on the template (ArcFace's by default).

    Raises:
      ImageError, NoFaceError, ValueError: as `detect_and_align`, which
        also warns about a low detection score.
    """
    return detect_and_align(path_or_array, size=size, template=template).face


def _rgb_array(image) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1] from a float or uint8 RGB array."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (h, w, 3) RGB image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"expected a float image in [0, 1] or uint8, got {image.dtype}")
    return image.astype(np.float32)
