"""Tests for srise_jax.images: any image file becomes float32 RGB in [0, 1], or one clear error."""

import numpy as np
import pytest
from PIL import Image

from srise_jax.images import (MAX_CROP_SIZE, MAX_PIXELS, ImageError, ResizeWarning, load_face,
                              load_image, synthetic_faces)


def _gradient(size=112):
    """(size, size, 3) uint8 with distinct values per pixel and channel."""
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([xx * 2, yy * 2, (xx + yy) % 256], axis=-1).astype(np.uint8)


def test_rgb_png_round_trips_exactly(tmp_path):
    pixels = _gradient()
    Image.fromarray(pixels).save(tmp_path / "face.png")
    face = load_face(tmp_path / "face.png")
    assert face.dtype == np.float32 and face.shape == (112, 112, 3)
    np.testing.assert_allclose(face, pixels / 255.0, atol=1e-7)


def test_greyscale_becomes_three_equal_channels(tmp_path):
    grey = _gradient()[..., 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    face = load_face(tmp_path / "grey.png")
    for channel in range(3):
        np.testing.assert_allclose(face[..., channel], grey / 255.0, atol=1e-7)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    # PIL's own convert("RGB") clips 16-bit values at 255: all but the
    # darkest pixels would come out white.
    values = np.full((112, 112), 32768, np.uint16)
    values[0, 0] = 65535
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I")
    face = load_face(tmp_path / "deep.png")
    np.testing.assert_allclose(face[1, 1], [32768 / 65535] * 3, rtol=1e-6)
    np.testing.assert_allclose(face[0, 0], [1.0, 1.0, 1.0])


def test_transparent_pixels_become_black_and_opaque_ones_keep_their_colour(tmp_path):
    rgba = np.zeros((112, 112, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:56, :, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    face = load_face(tmp_path / "alpha.png")
    np.testing.assert_allclose(face[0, 0], np.array([200, 100, 50]) / 255.0, atol=1e-6)
    np.testing.assert_allclose(face[100, 0], [0.0, 0.0, 0.0])


def test_palette_image_reads_as_its_colours(tmp_path):
    pixels = _gradient()
    palette = Image.fromarray(pixels).quantize(colors=16)
    palette.save(tmp_path / "palette.png")
    expected = np.asarray(palette.convert("RGB"), np.float32) / 255.0
    np.testing.assert_allclose(load_face(tmp_path / "palette.png"), expected, atol=1e-7)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((112, 112, 3), np.uint8)
    pixels[:10, :10] = 255  # a white corner, top left as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 3  # Orientation: rotate 180 degrees to display
    image.save(tmp_path / "rotated.png", exif=exif)
    face = load_face(tmp_path / "rotated.png")
    assert face[-1, -1].min() == 1.0 and face[0, 0].max() == 0.0


def test_other_sizes_are_resized_with_a_warning_naming_both_sizes(tmp_path):
    Image.new("RGB", (250, 200), (10, 120, 240)).save(tmp_path / "big.png")
    with pytest.warns(ResizeWarning, match=r"big.png: resized from 250x200 to 112x112"):
        face = load_face(tmp_path / "big.png")
    assert face.shape == (112, 112, 3)
    np.testing.assert_allclose(face, np.broadcast_to(np.array([10, 120, 240]) / 255.0,
                                                     face.shape), atol=1e-5)


def test_resizing_averages_when_shrinking(tmp_path):
    # A one-pixel checkerboard shrunk by two averages to grey with an
    # antialiasing filter; plain sampling would keep black or white.
    board = (np.indices((224, 224)).sum(0) % 2 * 255).astype(np.uint8)
    Image.fromarray(board, mode="L").save(tmp_path / "board.png")
    with pytest.warns(ResizeWarning):
        face = load_face(tmp_path / "board.png")
    np.testing.assert_allclose(face[10:-10, 10:-10], 0.5, atol=0.02)


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "not a file"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4), "not a readable image"),
    (lambda p: p.write_bytes(b""), "not a readable image"),
])
def test_unreadable_files_raise_one_image_error_naming_the_path(tmp_path, make, message):
    path = tmp_path / "face.png"
    make(path)
    with pytest.raises(ImageError, match=message) as caught:
        load_face(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_truncated_image_is_an_image_error(tmp_path):
    Image.fromarray(_gradient()).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.png: not a readable image"):
        load_face(tmp_path / "cut.png")


def test_float_images_are_refused_with_a_reason(tmp_path):
    Image.fromarray(np.ones((112, 112), np.float32), mode="F").save(tmp_path / "float.tif")
    with pytest.raises(ImageError, match="float.tif: 32-bit float"):
        load_face(tmp_path / "float.tif")


def test_synthetic_faces_are_a_plausible_triplet():
    probe, mate, nonmate = synthetic_faces(0)
    for face in (probe, mate, nonmate):
        assert face.dtype == np.float32 and face.shape == (112, 112, 3)
        assert 0.0 <= face.min() and face.max() <= 1.0
    for seed in range(5):
        probe, mate, nonmate = synthetic_faces(seed)
        # One identity with small changes is closer than another identity.
        assert np.abs(probe - mate).mean() < np.abs(probe - nonmate).mean()


def test_synthetic_faces_depend_on_the_seed_only():
    np.testing.assert_array_equal(synthetic_faces(3)[0], synthetic_faces(3)[0])
    assert not np.array_equal(synthetic_faces(3)[0], synthetic_faces(4)[0])
    assert synthetic_faces(0, size=64)[1].shape == (64, 64, 3)


def test_a_small_file_with_a_huge_image_is_refused_before_decoding(tmp_path):
    # A 10 KB PNG of 9000x9000 (1-bit, so making it costs 10 MB): decoded as
    # float32 RGB it would take 1 GB, and the face detector minutes.
    Image.new("1", (9000, 9000)).save(tmp_path / "huge.png")
    assert 9000 * 9000 > MAX_PIXELS
    with pytest.raises(ImageError, match=r"huge.png: 9000x9000 pixels \(81.0 megapixels\) "
                                         r"is above the 50-megapixel limit"):
        load_image(tmp_path / "huge.png")


def test_the_pixel_limit_counts_width_times_height(tmp_path):
    Image.fromarray(_gradient()[:30, :40]).save(tmp_path / "small.png")
    assert load_image(tmp_path / "small.png", max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageError, match="40x30 pixels"):
        load_image(tmp_path / "small.png", max_pixels=1199)


@pytest.mark.parametrize("size", [0, MAX_CROP_SIZE + 1, 112.0, True])
def test_crop_sizes_outside_one_to_the_maximum_are_refused(tmp_path, size):
    Image.fromarray(_gradient()).save(tmp_path / "face.png")
    with pytest.raises(ValueError, match=rf"size must be an int in \[1, {MAX_CROP_SIZE}\]"):
        load_face(tmp_path / "face.png", size=size)


def test_the_largest_crop_size_is_accepted(tmp_path):
    Image.fromarray(_gradient()).save(tmp_path / "face.png")
    with pytest.warns(ResizeWarning):
        face = load_face(tmp_path / "face.png", size=MAX_CROP_SIZE)
    assert face.shape == (MAX_CROP_SIZE, MAX_CROP_SIZE, 3)
