"""Sample photographs and synthetic occlusions, for examples, tests and figures.

The six photos are official White House photographs (works of the U.S.
federal government, in the public domain) taken from the test images of the
`face_recognition` 1.3.0 source distribution and downscaled; provenance in
`srise_jax/assets/README.md`. `occlude` draws a surgical mask or sunglasses on
an aligned crop, for the paper's self-occlusion experiment (section 4.3,
Fig. 5): a probe against an occluded photo of the same person.
"""

from __future__ import annotations

import functools
import importlib.resources

import jax
import jax.numpy as jnp
import numpy as np

from srise_jax.align import ARCFACE_112, detect_and_align, similarity_transform
from srise_jax.images import load_image

SAMPLE_NAMES = ("obama", "obama2", "obama3", "obama_partial_face",
                "obama_partial_face2", "biden")


def sample_faces() -> dict[str, np.ndarray]:
    """The bundled photos, whole (not cropped or aligned).

    Returns:
      {name: Float[ndarray, "h w 3"] float32 RGB in [0, 1]} for the names in
      `SAMPLE_NAMES`, longest side 1024 pixels at most. "obama3" shows the
      face small in a full-length portrait; the "partial_face" photos are cut
      off at the image border.
    """
    return {name: _sample_photo(name) for name in SAMPLE_NAMES}


def _sample_photo(name: str) -> np.ndarray:
    faces_dir = importlib.resources.files("srise_jax").joinpath("assets", "faces")
    with importlib.resources.as_file(faces_dir.joinpath(f"{name}.jpg")) as path:
        return load_image(path)


def aligned_sample(name: str, *, size: int = 112,
                   template: np.ndarray = ARCFACE_112) -> np.ndarray:
    """One sample photo detected (MTCNN) and aligned, cached per (name, size, template).

    Args:
      name: one of `SAMPLE_NAMES`.
      size: side of the crop in pixels.
      template: the alignment template, as in `srise_jax.align.preprocess`
        (`ARCFACE_112`, scaled to the size, or e.g. `DLIB_150`).

    Returns:
      Float[ndarray, "size size 3"] float32 in [0, 1], a new array.

    Raises:
      ValueError: unknown name.
    """
    if name not in SAMPLE_NAMES:
        raise ValueError(f"unknown sample photo {name!r}; expected one of "
                         f"{', '.join(SAMPLE_NAMES)}")
    # ARCFACE_112 itself is scaled to the size by `align_face`; any other
    # template is keyed by its values.
    template_key = None if template is ARCFACE_112 else tuple(
        np.asarray(template, np.float32).ravel().tolist())
    return _aligned_sample(name, size, template_key).copy()


@functools.lru_cache(maxsize=32)
def _aligned_sample(name: str, size: int, template_key) -> np.ndarray:
    template = ARCFACE_112 if template_key is None else np.asarray(
        template_key, np.float32).reshape(-1, 2)
    face = detect_and_align(_sample_photo(name), size=size, template=template).face
    face.setflags(write=False)
    return face


def sample_triplet(size: int = 112, *, template: np.ndarray = ARCFACE_112
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An aligned (probe, mate, nonmate) triplet: obama, obama2 and biden.

    The detector runs once per (size, template); later calls return copies.

    Args:
      size: side of the aligned crops in pixels.
      template: the alignment template (see `aligned_sample`).

    Returns:
      (probe, mate, nonmate), each Float[ndarray, "size size 3"] float32 in
      [0, 1], aligned on the template (`srise_jax.align.preprocess`).
    """
    return tuple(aligned_sample(name, size=size, template=template)
                 for name in ("obama", "obama2", "biden"))


# Occluders in the 112x112 ArcFace frame, built from the template so that they
# sit where alignment puts the eyes, nose and mouth; other crop sizes scale
# them by size / 112, as `align_face` scales the template.
_LEFT_EYE, _RIGHT_EYE, _NOSE, _LEFT_MOUTH, _RIGHT_MOUTH = (
    tuple(float(v) for v in point) for point in ARCFACE_112)
_EYE_Y = (_LEFT_EYE[1] + _RIGHT_EYE[1]) / 2
_MOUTH_Y = (_LEFT_MOUTH[1] + _RIGHT_MOUTH[1]) / 2
_EYE_DISTANCE = _RIGHT_EYE[0] - _LEFT_EYE[0]
# The mask: a convex heptagon from halfway between the eyes and the nose tip
# (over the lower nose, below the eyes) down past the bottom of the crop (the
# chin), cheek to cheek, with a peak over the nose and a narrower bottom.
_MASK_TOP = _NOSE[1] - 0.5 * (_NOSE[1] - _EYE_Y)
_MASK_HALF_WIDTH = 1.1 * _EYE_DISTANCE
_MASK_POLYGON = (
    (_NOSE[0], _MASK_TOP),
    (_NOSE[0] + _MASK_HALF_WIDTH, _MASK_TOP + 0.25 * _EYE_DISTANCE),
    (_NOSE[0] + _MASK_HALF_WIDTH, _MOUTH_Y + 0.1 * _EYE_DISTANCE),
    (_NOSE[0] + 0.45 * _MASK_HALF_WIDTH, _MOUTH_Y + 0.75 * _EYE_DISTANCE),
    (_NOSE[0] - 0.45 * _MASK_HALF_WIDTH, _MOUTH_Y + 0.75 * _EYE_DISTANCE),
    (_NOSE[0] - _MASK_HALF_WIDTH, _MOUTH_Y + 0.1 * _EYE_DISTANCE),
    (_NOSE[0] - _MASK_HALF_WIDTH, _MASK_TOP + 0.25 * _EYE_DISTANCE),
)
# Sunglasses: one elliptic lens per eye, joined by a bridge above the nose.
_LENS_RX = 0.42 * _EYE_DISTANCE
_LENS_RY = 0.3 * _EYE_DISTANCE
_BRIDGE_HALF_HEIGHT = 0.06 * _EYE_DISTANCE

_COLOURS = {
    "mask": (0.62, 0.76, 0.86),        # light blue of a surgical mask
    "sunglasses": (0.04, 0.04, 0.05),  # near-black lenses
}
OCCLUSION_KINDS = tuple(_COLOURS)


def _mask_region(x, y):
    # Inside a convex polygon: on the same side of every edge.
    sides = []
    for (x0, y0), (x1, y1) in zip(_MASK_POLYGON, _MASK_POLYGON[1:] + _MASK_POLYGON[:1]):
        sides.append((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0))
    sides = jnp.stack(sides)
    return jnp.all(sides >= 0, axis=0) | jnp.all(sides <= 0, axis=0)


def _sunglasses_region(x, y):
    lenses = [((x - cx) / _LENS_RX) ** 2 + ((y - cy) / _LENS_RY) ** 2 <= 1
              for cx, cy in (_LEFT_EYE, _RIGHT_EYE)]
    bridge = ((x >= _LEFT_EYE[0]) & (x <= _RIGHT_EYE[0])
              & (jnp.abs(y - (_EYE_Y - _BRIDGE_HALF_HEIGHT)) <= _BRIDGE_HALF_HEIGHT))
    return lenses[0] | lenses[1] | bridge


_REGIONS = {"mask": _mask_region, "sunglasses": _sunglasses_region}


def occlusion_region(kind: str, *, height: int = 112, width: int = 112,
                     template: np.ndarray | None = None) -> jax.Array:
    """Where `occlude` paints an occluder on an aligned crop of this size.

    Args:
      kind: "mask" (nose tip to chin, cheek to cheek) or "sunglasses" (the
        eyes and the bridge between them).
      height: crop height in pixels.
      width: crop width in pixels.
      template: the (5, 2) template the crop was aligned on, when it is not
        the ArcFace one (e.g. `DLIB_150`): the occluder follows the crop's
        eyes, nose and mouth through the similarity transform between the
        two templates. Default: ARCFACE_112 scaled to the crop size.

    Returns:
      Bool[Array, "height width"], True on the occluder.

    Raises:
      ValueError: unknown kind.
    """
    if kind not in _REGIONS:
        raise ValueError(f"unknown occlusion kind {kind!r}; expected one of "
                         f"{', '.join(OCCLUSION_KINDS)}")
    # Pixel centres at integer coordinates, mapped into the 112x112 frame.
    y, x = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
    if template is None:
        x, y = x * (112 / width), y * (112 / height)
    else:
        matrix = similarity_transform(jnp.asarray(template, jnp.float32),
                                      jnp.asarray(ARCFACE_112))
        x, y = (matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2],
                matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2])
    return _REGIONS[kind](x, y)


def occlude(aligned_face: jax.Array, kind: str, *,
            template: np.ndarray | None = None) -> jax.Array:
    """Paint a surgical mask or sunglasses on an aligned face crop.

    The occluder is placed from the alignment template (`occlusion_region`),
    so the crop must be aligned on it (`align_face`, `preprocess`,
    `sample_triplet`); it scales with the crop size.

    Args:
      aligned_face: Float[Array, "h w 3"] an aligned crop in [0, 1].
      kind: "mask" or "sunglasses".
      template: the template the crop was aligned on if not ArcFace's (see
        `occlusion_region`).

    Returns:
      Float[Array, "h w 3"] a new image: the occluder's colour on its region,
      the input elsewhere.

    Raises:
      ValueError: unknown kind, or not an (h, w, 3) float image.
    """
    face = jnp.asarray(aligned_face)
    if face.ndim != 3 or face.shape[-1] != 3:
        raise ValueError(f"expected an (h, w, 3) face crop, got shape {face.shape}")
    if not jnp.issubdtype(face.dtype, jnp.floating):
        raise ValueError(f"expected a float crop in [0, 1], got {face.dtype}")
    region = occlusion_region(kind, height=face.shape[0], width=face.shape[1],
                              template=template)
    colour = jnp.asarray(_COLOURS[kind], face.dtype)
    return jnp.where(region[..., None], colour, face)
