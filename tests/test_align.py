"""Tests for srise_jax.align: similarity estimate, bilinear warp, ArcFace alignment, preprocess."""

import importlib.resources
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from srise_jax.align import (ARCFACE_112, MIN_CONFIDENT_SCORE, LowScoreWarning, NoFaceError,
                             align_face, detect_and_align, preprocess, similarity_transform,
                             warp_affine)
from srise_jax.images import MAX_CROP_SIZE, ImageError, load_image


def _similarity(angle_deg, scale, shift):
    """(2, 3) matrix of a rotation by angle_deg, uniform scale and shift."""
    angle = np.deg2rad(angle_deg)
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)],
                               [np.sin(angle), np.cos(angle)]])
    return np.concatenate([linear, np.asarray(shift, float)[:, None]], axis=1)


def _apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def _lstsq_similarity(src, dst):
    """Independent estimate: a similarity is linear in (a, b, tx, ty),
    x' = a x - b y + tx, y' = b x + a y + ty; solve that system by lstsq."""
    rows = []
    for x, y in src:
        rows.append([x, -y, 1.0, 0.0])
        rows.append([y, x, 0.0, 1.0])
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), np.ravel(dst), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def _numpy_warp(image, matrix, height, width):
    """Reference bilinear warp, pixel by pixel: zero outside, centres at integers."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(full)
    rows, cols = image.shape[:2]
    out = np.zeros((height, width, image.shape[2]))
    for i in range(height):
        for j in range(width):
            x, y, _ = inverse @ [j, i, 1.0]
            j0, i0 = int(np.floor(x)), int(np.floor(y))
            for di in (0, 1):
                for dj in (0, 1):
                    r, c = i0 + di, j0 + dj
                    if 0 <= r < rows and 0 <= c < cols:
                        weight = ((1 - abs(y - r)) * (1 - abs(x - c)))
                        out[i, j] += weight * image[r, c]
    return out


def _dots(points, height, width, sigma):
    """Grey image with one Gaussian dot per point (x, y), in all channels."""
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width))
    for x, y in points:
        image += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
    return np.repeat(image[..., None], 3, axis=-1).astype(np.float32)


def _centroids(image, guesses, radius):
    """Intensity centroid of channel 0 in a window around each guess."""
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    found = []
    for gx, gy in guesses:
        window = (np.abs(xs - gx) <= radius) & (np.abs(ys - gy) <= radius)
        weight = np.where(window, image[..., 0], 0.0)
        found.append([np.sum(weight * xs) / weight.sum(),
                      np.sum(weight * ys) / weight.sum()])
    return np.array(found)


@pytest.mark.parametrize("angle,scale,shift", [(0.0, 1.0, (0.0, 0.0)),
                                               (23.0, 0.37, (12.5, -40.0)),
                                               (-150.0, 2.4, (-3.0, 7.25))])
def test_known_similarity_is_recovered_exactly(angle, scale, shift):
    src = np.random.default_rng(0).uniform(0, 300, (5, 2))
    truth = _similarity(angle, scale, shift)
    estimate = np.asarray(similarity_transform(src, _apply(truth, src)))
    np.testing.assert_allclose(estimate, truth, atol=2e-3 * max(1.0, scale))


@pytest.mark.parametrize("mirror", [False, True])
def test_noisy_fit_equals_independent_least_squares(mirror):
    rng = np.random.default_rng(1)
    src = rng.uniform(100, 400, (5, 2))
    dst = _apply(_similarity(17.0, 0.4, (20.0, 30.0)), src) + rng.normal(0, 2.0, (5, 2))
    if mirror:
        # A reflection is the best affine fit here; the estimate must stay a
        # rotation (det > 0), the best one among similarities.
        dst[:, 0] = 112 - dst[:, 0]
    estimate = np.asarray(similarity_transform(src, dst))
    np.testing.assert_allclose(estimate, _lstsq_similarity(src, dst), atol=1e-3)
    assert np.linalg.det(estimate[:, :2]) > 0


def test_integer_translation_is_an_exact_shift():
    # Pixel centres at integers: a whole-pixel shift samples no neighbours.
    image = np.random.default_rng(2).uniform(size=(20, 30, 3)).astype(np.float32)
    shifted = np.asarray(warp_affine(image, _similarity(0.0, 1.0, (-3.0, -5.0)),
                                     height=10, width=12))
    np.testing.assert_array_equal(shifted, image[5:15, 3:15])


@pytest.mark.parametrize("angle,scale,shift", [(0.0, 1.0, (2.3, -1.7)),
                                               (30.0, 1.0, (10.0, -8.0)),
                                               (-75.0, 1.6, (30.0, 5.0))])
def test_warp_matches_numpy_bilinear_reference(angle, scale, shift):
    image = np.random.default_rng(3).uniform(size=(23, 31, 3)).astype(np.float32)
    matrix = _similarity(angle, scale, shift)
    warped = np.asarray(warp_affine(image, matrix, height=27, width=25))
    np.testing.assert_allclose(warped, _numpy_warp(image, matrix, 27, 25), atol=1e-5)


def test_align_face_warps_like_the_reference_for_a_known_pose():
    # Landmarks that are an exact similarity of the template: the crop is
    # that similarity's inverse warp of the photo.
    image = np.random.default_rng(4).uniform(size=(60, 50, 3)).astype(np.float32)
    photo_to_crop = _similarity(12.0, 2.5, (-20.0, -35.0))
    crop_to_photo = np.linalg.inv(np.vstack([photo_to_crop, [0, 0, 1]]))[:2]
    landmarks = _apply(crop_to_photo, ARCFACE_112.astype(float))
    crop = np.asarray(align_face(image, landmarks))
    np.testing.assert_allclose(crop, _numpy_warp(image, photo_to_crop, 112, 112),
                               atol=1e-4)


@pytest.mark.parametrize("size", [112, 224])
def test_landmarks_land_on_the_template_within_a_tenth_of_a_pixel(size):
    # A photo with a dot at each landmark of a face turned by 25 degrees,
    # 2.2 times the crop's scale; after alignment the dots' centroids must
    # sit on the template (scaled by size / 112). The bound is tighter than
    # the required 0.5 px so that a half-pixel convention error fails.
    crop_to_photo = _similarity(25.0, 2.2 * 112 / size, (150.0, 60.0))
    template = ARCFACE_112.astype(float) * size / 112
    landmarks = _apply(crop_to_photo, template)
    photo = _dots(landmarks, 400, 360, sigma=4.0)
    crop = np.asarray(align_face(photo, landmarks, size=size))
    found = _centroids(crop, template, radius=8 * size / 112)
    assert np.max(np.linalg.norm(found - template, axis=1)) <= 0.1


def test_custom_template_is_used_as_given():
    template = np.array([[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]], np.float32)
    landmarks = template * 3 + 7
    photo = _dots(landmarks, 130, 130, sigma=3.0)
    crop = np.asarray(align_face(photo, landmarks, size=40, template=template))
    found = _centroids(crop, template, radius=4)
    assert np.max(np.linalg.norm(found - template, axis=1)) <= 0.1


def test_vmap_over_eight_faces_equals_eight_calls():
    rng = np.random.default_rng(5)
    images = rng.uniform(size=(8, 90, 80, 3)).astype(np.float32)
    landmarks = (ARCFACE_112 * 0.6 + rng.uniform(0, 20, (8, 1, 2))
                 + rng.normal(0, 1.5, (8, 5, 2))).astype(np.float32)
    # Compiled and eager code may round differently (fused multiply-adds), so
    # compare like with like.
    for transform in (lambda f: f, jax.jit):
        batched = transform(jax.vmap(align_face))(images, landmarks)
        single = jnp.stack([transform(align_face)(images[k], landmarks[k])
                            for k in range(8)])
        assert batched.shape == (8, 112, 112, 3)
        np.testing.assert_allclose(batched, single, atol=1e-6)


def test_outside_the_photo_is_black():
    photo = np.ones((50, 50, 3), np.float32)
    # Crop pixel (x, y) comes from photo point 0.3 * (x, y) - 12: the crop's
    # top-left corner lies off the photo, its bottom-right corner on it.
    crop = np.asarray(align_face(photo, ARCFACE_112 * 0.3 - 12.0))
    assert crop[0, 0].tolist() == [0.0, 0.0, 0.0]
    assert crop[-1, -1].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_photos_load_at_their_own_size_with_exif_orientation(tmp_path):
    pixels = np.zeros((30, 50, 3), np.uint8)
    pixels[:5, :5] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "rotated.jpg")
    assert image.shape == (50, 30, 3) and image.dtype == np.float32
    # The white corner (top-left as stored) is top-right once displayed.
    assert image[1, -2].mean() > 0.9 and image[1, 1].mean() < 0.1


@pytest.mark.parametrize("content", [b"this is not a jpeg\n", b""],
                         ids=["text", "empty"])
def test_unreadable_file_is_an_image_error_naming_it(tmp_path, content):
    path = tmp_path / "face.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="face.jpg"):
        preprocess(path)


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="absent.png: no such file"):
        preprocess(tmp_path / "absent.png")


# ---- with the MTCNN detector (srise_jax.detect) ----

def _detect():
    return pytest.importorskip("srise_jax.detect",
                               reason="srise_jax.detect (MTCNN) is not available")


@pytest.mark.parametrize("pixels", [
    np.zeros((1, 1, 3), np.uint8),
    np.full((200, 160, 3), 128, np.uint8),
    np.random.default_rng(6).integers(0, 256, (200, 160, 3), dtype=np.uint8),
], ids=["1x1", "uniform", "noise"])
def test_photo_without_a_face_is_a_no_face_error_naming_it(tmp_path, pixels):
    _detect()
    path = tmp_path / "nobody.png"
    Image.fromarray(pixels).save(path)
    with pytest.raises(NoFaceError, match=f"no face found in {path}"):
        preprocess(path)


def test_the_largest_face_is_aligned(monkeypatch):
    detect = _detect()
    small = ARCFACE_112 * 0.5 + 10.0
    large = ARCFACE_112 * 1.5 + 60.0
    faces = detect.Faces(
        boxes=np.array([[5, 5, 65, 65], [50, 50, 230, 230]], np.float32),
        scores=np.array([0.99, 0.95], np.float32),
        landmarks=np.stack([small, large]).astype(np.float32))
    monkeypatch.setattr(detect, "detect_faces", lambda image: faces)
    photo = np.random.default_rng(7).uniform(size=(240, 240, 3)).astype(np.float32)
    np.testing.assert_allclose(preprocess(photo), align_face(photo, large), atol=1e-6)


def _small_sample_photo(name="obama2", longest=512):
    from srise_jax.data import sample_faces

    photo = Image.fromarray((sample_faces()[name] * 255).round().astype(np.uint8))
    photo.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    return photo


def _save_as(photo, path, form):
    """Save an 8-bit PIL photo in another form that decodes to the same picture."""
    if form == "exif_rotated":
        # Stored sideways, with the EXIF tag that turns it upright.
        exif = Image.Exif()
        exif[0x0112] = 6
        photo.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    elif form == "grey16":
        Image.fromarray(np.asarray(photo, np.uint16) * 257).save(path)
    elif form == "rgba":
        photo.convert("RGBA").save(path)
    else:
        photo.save(path)


@pytest.mark.parametrize("form,tolerance", [("exif_rotated", 0.03), ("grey16", 1e-5),
                                            ("rgba", 1e-6)])
def test_preprocess_reads_other_forms_of_a_photo_to_the_same_crop(tmp_path, form, tolerance):
    _detect()
    photo = _small_sample_photo()
    if form == "grey16":
        # 16-bit v * 257 is 8-bit v exactly; clipping at 255 would whiten it.
        photo = photo.convert("L")
    photo.save(tmp_path / "plain.png")
    other = tmp_path / ("other.jpg" if form == "exif_rotated" else "other.png")
    _save_as(photo, other, form)
    expected = preprocess(tmp_path / "plain.png")
    crop = preprocess(other)
    # The JPEG's compression noise moves the landmarks by about a pixel.
    assert np.abs(crop - expected).mean() < tolerance


# The photos whose faces are whole; in the "partial_face" ones half the face
# is cut off by the photo's edge and MTCNN guesses the hidden landmarks.
_WHOLE_FACES = ("obama", "obama2", "obama3", "biden")
# facenet-pytorch (and so detect_faces) crops a face box that crosses the image
# border at the border and stretches it to the network's input: in a tight
# 112x112 crop the face box crosses it, and landmarks come back several pixels
# low. A black margin, like the zero border of `align_face`, avoids that.
_MARGIN = 32


@pytest.mark.parametrize("name", _WHOLE_FACES)
def test_redetected_landmarks_on_aligned_sample_crops_are_within_3px(name):
    detect = _detect()
    from srise_jax.data import sample_faces

    photo = sample_faces()[name]
    faces = detect.detect_faces(photo)
    largest = np.argmax(np.prod(faces.boxes[:, 2:] - faces.boxes[:, :2], axis=1))
    landmarks = faces.landmarks[largest]
    crop = preprocess(photo)
    # Where alignment put the photo's landmarks. They miss the template by the
    # least-squares residual (this face's proportions against the template's,
    # up to about 6 px for a wide smile's mouth corners); re-detection must
    # find them there.
    matrix = np.asarray(similarity_transform(landmarks, ARCFACE_112))
    placed = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.linalg.norm(placed - ARCFACE_112, axis=1).max() <= 8.0
    framed = np.pad(crop, ((_MARGIN, _MARGIN), (_MARGIN, _MARGIN), (0, 0)))
    again = detect.detect_faces(framed)
    assert len(again.scores) > 0, f"{name}: no face in its aligned crop"
    found = np.asarray(again.landmarks[0]) - _MARGIN
    error = np.linalg.norm(found - placed, axis=1)
    # MTCNN's own landmark noise between two framings of a face is 1-3.5 px
    # per point at this scale; the mean over the five points is the bound.
    assert error.mean() <= 3.0, f"{name}: landmarks off by {error.round(2)} px"


@pytest.mark.parametrize("size", [MAX_CROP_SIZE + 1, 0, 112.5])
def test_crop_sizes_outside_one_to_the_maximum_are_refused_before_any_work(size):
    # --size 100000 used to reach XLA and die there, out of memory.
    photo = np.zeros((64, 64, 3), np.float32)
    message = rf"size must be an int in \[1, {MAX_CROP_SIZE}\]"
    with pytest.raises(ValueError, match=message):
        preprocess(photo, size=size)
    with pytest.raises(ValueError, match=message):
        align_face(photo, ARCFACE_112, size=size)


def test_a_photo_above_the_detectors_side_gives_the_crop_of_the_small_photo():
    _detect()
    photo = _small_sample_photo()  # 512 pixels high
    # Enlarged 5x (2560 high) it is scanned shrunk by 2; the landmarks come
    # back in its own pixels and the crop is cut from it at full resolution.
    # Wrong coordinates (scanned pixels used as photo pixels) would crop
    # another part of the photo, off by far more than this bound.
    big = photo.resize((photo.width * 5, photo.height * 5), Image.Resampling.BILINEAR)
    crop = preprocess(np.asarray(big))
    assert np.abs(crop - preprocess(np.asarray(photo))).mean() < 0.04


def _sideways_obama(path):
    """obama.jpg turned a quarter clockwise (no EXIF tag), 630 pixels wide, as a PNG.

    At full size (1024x820) the detector finds no face at all in it; at this
    size O-Net passes it with 0.78 (0.779 to 0.780 under noise of 1/4 of a
    grey level, so the score is not a knife edge).
    """
    source = Path(str(importlib.resources.files("srise_jax") / "assets" / "faces" / "obama.jpg"))
    with Image.open(source) as photo:
        turned = photo.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    turned.resize((630, round(turned.height * 630 / turned.width)),
                  Image.Resampling.BILINEAR).save(path)
    return path


def test_a_sideways_photo_is_aligned_with_a_warning_naming_its_low_score(tmp_path):
    _detect()
    path = _sideways_obama(tmp_path / "sideways.png")
    with pytest.warns(LowScoreWarning) as caught:
        found = detect_and_align(path)
    score = float(found.faces.scores[found.index])
    assert 0.7 < score < MIN_CONFIDENT_SCORE
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"{path}: the aligned face's detection score is {score:.2f}, "
                              f"below {MIN_CONFIDENT_SCORE:g}")


def test_an_upright_photo_is_aligned_without_a_warning():
    _detect()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowScoreWarning)
        found = detect_and_align(np.asarray(_small_sample_photo("obama")))
    assert float(found.faces.scores[found.index]) > MIN_CONFIDENT_SCORE
