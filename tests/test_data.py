"""Tests for srise_jax.data: the bundled photos, the aligned sample triplet, synthetic occluders."""

import hashlib
import importlib.resources

import jax
import numpy as np
import pytest

from srise_jax.align import ARCFACE_112
from srise_jax.data import (OCCLUSION_KINDS, SAMPLE_NAMES, occlude, occlusion_region,
                            sample_faces, sample_triplet)

_ASSETS = importlib.resources.files("srise_jax").joinpath("assets")
_NAMES = {"obama", "obama2", "obama3", "obama_partial_face", "obama_partial_face2", "biden"}


def _face_files():
    return sorted(p for p in _ASSETS.joinpath("faces").iterdir() if p.name.endswith(".jpg"))


def test_sample_faces_are_the_six_photos_as_float_rgb():
    photos = sample_faces()
    assert set(photos) == set(SAMPLE_NAMES) == _NAMES
    for name, photo in photos.items():
        assert photo.dtype == np.float32 and photo.ndim == 3 and photo.shape[2] == 3, name
        assert max(photo.shape[:2]) <= 1024, name
        assert 0.0 <= photo.min() and photo.max() <= 1.0, name
        # Real photos, not blank decodes: plenty of distinct values.
        assert photo.std() > 0.1, name


def test_bundled_photos_total_under_1_5_mb_and_nothing_else_is_shipped():
    files = _face_files()
    assert {p.name for p in files} == {f"{name}.jpg" for name in _NAMES}
    assert sum(len(p.read_bytes()) for p in files) < 1.5e6


def test_readme_records_the_sha256_of_every_shipped_photo():
    readme = _ASSETS.joinpath("README.md").read_text()
    section = readme[readme.index("## faces/"):]
    for path in _face_files():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest in section, f"{path.name}: sha256 {digest} not in assets/README.md"


def _noise_face(size, seed=0):
    # Values no occluder colour can equal exactly: any change shows.
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 0.8, (size, size, 3)).astype(np.float32) + np.float32(1e-3)


def _changed(face, occluded):
    return np.any(np.asarray(occluded) != face, axis=-1)


def _disc(size, point, radius):
    ys, xs = np.mgrid[0:size, 0:size]
    x, y = np.asarray(point) * size / 112
    return (xs - x) ** 2 + (ys - y) ** 2 <= (radius * size / 112) ** 2


@pytest.mark.parametrize("size", [112, 224])
def test_mask_covers_nose_tip_mouth_and_chin_and_leaves_the_eyes(size):
    face = _noise_face(size)
    changed = _changed(face, occlude(face, "mask"))
    left_eye, right_eye, nose, left_mouth, right_mouth = ARCFACE_112
    for point in (nose, left_mouth, right_mouth, (56.0, 108.0)):  # ... chin
        assert _disc(size, point, 3)[changed].sum() == _disc(size, point, 3).sum(), point
    for eye in (left_eye, right_eye):
        assert not changed[_disc(size, eye, 8)].any()
    # Only the lower face: nothing above the middle of eyes-to-nose changes.
    rows = np.nonzero(changed.any(axis=1))[0]
    assert rows.min() >= (ARCFACE_112[:2, 1].mean() + nose[1]) / 2 * size / 112 - 1
    assert 0.2 < changed.mean() < 0.45


@pytest.mark.parametrize("size", [112, 224])
def test_sunglasses_cover_the_eye_band_and_leave_nose_tip_and_mouth(size):
    face = _noise_face(size)
    changed = _changed(face, occlude(face, "sunglasses"))
    left_eye, right_eye, nose, left_mouth, right_mouth = ARCFACE_112
    for eye in (left_eye, right_eye):
        assert changed[_disc(size, eye, 6)].all()
    for point in (nose, left_mouth, right_mouth):
        assert not changed[_disc(size, point, 6)].any()
    rows = np.nonzero(changed.any(axis=1))[0] * 112 / size
    eye_y = ARCFACE_112[:2, 1].mean()
    assert eye_y - 15 <= rows.min() and rows.max() <= eye_y + 15
    assert 0.05 < changed.mean() < 0.2


@pytest.mark.parametrize("kind", OCCLUSION_KINDS)
def test_occluder_scales_with_the_crop(kind):
    small = np.asarray(occlusion_region(kind, height=112, width=112))
    large = np.asarray(occlusion_region(kind, height=224, width=224))
    # Every other pixel of the 224 crop samples the 112 crop's pixel centres.
    np.testing.assert_array_equal(large[::2, ::2], small)
    assert abs(large.mean() - small.mean()) < 0.01


def test_occlude_returns_a_new_image_and_keeps_the_input():
    face = _noise_face(112)
    before = face.copy()
    occluded = occlude(face, "mask")
    np.testing.assert_array_equal(face, before)
    region = np.asarray(occlusion_region("mask"))
    np.testing.assert_array_equal(np.asarray(occluded)[~region], face[~region])
    assert np.all(np.asarray(occluded)[region] == np.asarray(occluded)[region][0])


def test_occlude_is_jittable_with_a_static_kind():
    face = _noise_face(112)
    jitted = jax.jit(occlude, static_argnames="kind")(face, kind="sunglasses")
    np.testing.assert_array_equal(jitted, occlude(face, "sunglasses"))


def test_unknown_occlusion_kind_lists_the_kinds():
    with pytest.raises(ValueError, match="'hat'.*mask, sunglasses"):
        occlude(_noise_face(112), "hat")


def test_sample_triplet_is_aligned_cached_and_returns_copies():
    pytest.importorskip("srise_jax.detect", reason="srise_jax.detect (MTCNN) is not available")
    probe, mate, nonmate = sample_triplet()
    for face in (probe, mate, nonmate):
        assert face.shape == (112, 112, 3) and face.dtype == np.float32
        assert 0.0 <= face.min() and face.max() <= 1.0
        # A face fills an aligned crop: no black border of the photo in it.
        assert face[40:100, 30:82].min(axis=-1).mean() > 0.05
    assert not np.allclose(probe, mate) and not np.allclose(probe, nonmate)
    probe[:] = 0.0
    again = sample_triplet()
    assert again[0].max() > 0.0
    np.testing.assert_array_equal(again[1], mate)


def test_occlusion_follows_a_scaled_template_like_the_default():
    """A template given explicitly maps the occluder through the similarity.

    ARCFACE_112 scaled to 224 is the same frame as the default rule at 224,
    so both must paint the same pixels; a shifted template shifts the region.
    """
    scaled = np.asarray(ARCFACE_112) * 2.0
    for kind in OCCLUSION_KINDS:
        default = np.asarray(occlusion_region(kind, height=224, width=224))
        explicit = np.asarray(occlusion_region(kind, height=224, width=224,
                                                    template=scaled))
        assert (default != explicit).mean() < 0.002
        shifted = np.asarray(occlusion_region(kind, height=224, width=224,
                                                   template=scaled + [0.0, 10.0]))
        np.testing.assert_array_equal(shifted[10:], explicit[:-10])
