"""Face images for the command line: load aligned crops, or synthesize a demo triplet.

`load_face` turns any image file PIL can read into the kernel's input format,
float32 RGB in [0, 1] of shape (size, size, 3). It does not detect or align
faces: S-RISE explains a model on the crops that model was trained on (for
ArcFace, 112x112 crops aligned on five landmarks), so give it such crops, or
photos through `srise_jax.align.preprocess`. `load_image` decodes the same way
at the file's own size, for whole photographs, up to `MAX_PIXELS`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from srise_jax._helpers import first_line

# 16-bit (and 32-bit integer) greyscale modes; PIL's convert("RGB") clips
# them at 255 instead of scaling, which turns most of a 16-bit image white.
_WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_WIDE_INTEGER_MAX = 65535.0

# The most pixels `load_image` decodes: 50 megapixels (an 8000x6000 photo from
# a 48-megapixel phone camera fits). A small file can hold a huge image (a
# 255 KB PNG of 9000x9000), and each megapixel costs 12 MB as float32 RGB;
# PIL's own guard (Image.MAX_IMAGE_PIXELS, about 89 megapixels, an error only
# at twice that) lets such a file through.
MAX_PIXELS = 50_000_000
# The largest crop side `load_face` and `srise_jax.align` make: face models
# take crops of 112 to 160 pixels, and a crop of side s costs s*s*12 bytes
# (--size 100000 would ask for 120 GB).
MAX_CROP_SIZE = 1024


class ImageError(ValueError):
    """An image file that cannot be read; the message names the file."""


class ResizeWarning(UserWarning):
    """An image was not of the requested size and was resized."""


def check_crop_size(size: int) -> int:
    """The side of a square face crop, checked: an int in [1, `MAX_CROP_SIZE`].

    Args:
      size: the requested side in pixels.

    Returns:
      `size` as a Python int.

    Raises:
      ValueError: `size` is not an int (bools are refused), or out of range.
    """
    if (isinstance(size, bool) or not isinstance(size, (int, np.integer))
            or not 1 <= size <= MAX_CROP_SIZE):
        raise ValueError(f"size must be an int in [1, {MAX_CROP_SIZE}] (pixels), got {size!r}")
    return int(size)


def load_face(path: str | Path, *, size: int = 112) -> np.ndarray:
    """Read an image file as a float32 RGB face crop in [0, 1].

    The EXIF orientation is applied; greyscale, palette, CMYK and 16-bit
    images are converted to RGB (16-bit values are scaled by 1/65535);
    transparent pixels are composited onto black, the kernel's default fill.
    An image of another size is resized (bilinear, antialiased when
    shrinking) with a `ResizeWarning` that names both sizes; a non-square
    image is stretched, since aligned crops are square.

    Args:
      path: the image file.
      size: side of the returned square image in pixels, at most
        `MAX_CROP_SIZE`.

    Returns:
      Float[ndarray, "size size 3"] float32 in [0, 1].

    Raises:
      ImageError: the file is missing, unreadable, truncated, not an image,
        of a mode with no RGB meaning (32-bit float), or larger than
        `MAX_PIXELS`.
      ValueError: `size` is not an int in [1, `MAX_CROP_SIZE`].
    """
    size = check_crop_size(size)
    path = Path(path)
    rgb = load_image(path)
    height, width = rgb.shape[:2]
    if (height, width) != (size, size):
        warnings.warn(
            f"{path}: resized from {width}x{height} to {size}x{size}; S-RISE "
            "explains the model best on the aligned crops it was trained on",
            ResizeWarning, stacklevel=2)
        rgb = _resize(rgb, size)
    return np.clip(rgb, 0.0, 1.0)


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file at its own size as float32 RGB in [0, 1].

    Decodes like `load_face` (EXIF orientation, greyscale, palette, CMYK,
    16-bit and transparency handled the same way) but never resizes: for
    whole photographs that a face detector will search. The size is read
    from the file's header and checked before anything is decoded.

    Args:
      path: the image file.
      max_pixels: the most pixels (width x height) accepted.

    Returns:
      Float[ndarray, "h w 3"] float32 in [0, 1].

    Raises:
      ImageError: as `load_face`; or the image has more than `max_pixels`
        pixels (the message gives its size and the limit).
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    try:
        with warnings.catch_warnings():
            # PIL warns from about 89 megapixels; the check below says more.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{path}: {width}x{height} pixels ({width * height / 1e6:.1f} "
                    f"megapixels) is above the {max_pixels / 1e6:g}-megapixel limit "
                    "(srise_jax.images.MAX_PIXELS): downscale the photo first")
            # load() decodes the whole file, so a truncated one fails here.
            image.load()
            rgb = _as_rgb(ImageOps.exif_transpose(image), path)
    except ImageError:
        raise
    # PIL raises OSError (UnidentifiedImageError, truncated data),
    # SyntaxError or ValueError (malformed headers), DecompressionBombError...
    except Exception as err:  # noqa: BLE001
        raise ImageError(f"{path}: not a readable image ({first_line(err)})") from None
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def _as_rgb(image: Image.Image, path: Path) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] of any PIL image with an RGB meaning."""
    if image.mode in _WIDE_INTEGER_MODES:
        grey = np.asarray(image, dtype=np.float32) / _WIDE_INTEGER_MAX
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode == "F":
        raise ImageError(f"{path}: 32-bit float images have no fixed range; "
                         "save the crop as an 8- or 16-bit image")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    rgb /= 255.0  # in place: a photo of MAX_PIXELS is 600 MB as float32
    return rgb


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize each channel as a float image, so 16-bit precision survives."""
    channels = [
        np.asarray(Image.fromarray(rgb[..., c], mode="F").resize(
            (size, size), Image.Resampling.BILINEAR))
        for c in range(3)
    ]
    return np.stack(channels, axis=-1).astype(np.float32)


def synthetic_faces(seed: int = 0, *, size: int = 112
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cartoon (probe, mate, nonmate) triplet, for demos without real photos.

    Each face is an ellipse with hair, eyebrows, eyes, a nose and a mouth on
    a plain background. The probe and the mate share one identity (face
    shape, skin, hair and eye colours, feature positions) and differ by a
    small shift, lighting and expression; the nonmate is another identity.
    Nothing here is a real face: a face-recognition model need not find the
    mate closer than the nonmate.

    Args:
      seed: seed of the identities and of the variations.
      size: side of the square images in pixels.

    Returns:
      (probe, mate, nonmate), each Float[ndarray, "size size 3"] float32 in
      [0, 1].
    """
    rng = np.random.default_rng(seed)
    person = _identity(rng)
    other = _identity(rng)
    return (_draw(person, _variation(rng), size),
            _draw(person, _variation(rng), size),
            _draw(other, _variation(rng), size))


_LIGHT_SKIN = np.array([0.96, 0.8, 0.69])
_DARK_SKIN = np.array([0.36, 0.23, 0.15])
_HAIR = np.array([[0.08, 0.06, 0.05], [0.35, 0.22, 0.12], [0.78, 0.66, 0.42],
                  [0.55, 0.25, 0.1], [0.6, 0.6, 0.6]])


def _identity(rng: np.random.Generator) -> dict[str, np.ndarray | float]:
    """What stays fixed across photos of one cartoon person (unit coordinates)."""
    tone = rng.uniform()
    hair = _HAIR[rng.integers(len(_HAIR))]
    return {
        "skin": (1 - tone) * _LIGHT_SKIN + tone * _DARK_SKIN,
        "hair": hair * rng.uniform(0.8, 1.1),
        "iris": rng.uniform(0.05, 0.45, 3),
        "lips": ((1 - tone) * _LIGHT_SKIN + tone * _DARK_SKIN) * [0.9, 0.55, 0.55],
        "background": rng.uniform(0.35, 0.85) + rng.uniform(-0.08, 0.08, 3),
        "face_ry": rng.uniform(0.36, 0.44),
        "face_rx": rng.uniform(0.27, 0.34),
        "hairline": rng.uniform(0.2, 0.3),
        "eye_dx": rng.uniform(0.12, 0.17),
        "eye_y": rng.uniform(0.4, 0.46),
        "eye_r": rng.uniform(0.035, 0.055),
        "nose_len": rng.uniform(0.08, 0.14),
        "mouth_y": rng.uniform(0.7, 0.77),
        "mouth_rx": rng.uniform(0.08, 0.13),
    }


def _variation(rng: np.random.Generator) -> dict[str, float]:
    """What changes between two photos of one person."""
    return {
        "dy": rng.uniform(-0.02, 0.02),
        "dx": rng.uniform(-0.02, 0.02),
        "light": rng.uniform(0.85, 1.1),
        "mouth_open": rng.uniform(0.015, 0.04),
        "noise_seed": int(rng.integers(2**31)),
    }


def _draw(person: dict, change: dict, size: int) -> np.ndarray:
    """Render one face; coordinates are fractions of the image side."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    y = y - change["dy"]
    x = x - change["dx"]
    image = np.broadcast_to(person["background"], (size, size, 3)).copy()

    def paint(cy, cx, ry, rx, colour):
        # Signed distance to the ellipse boundary in pixels, through a ramp
        # one pixel wide: an antialiased edge at any size.
        radius = np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
        inside = np.clip((1.0 - radius) * min(ry, rx) * size + 0.5, 0.0, 1.0)
        image[:] = image * (1.0 - inside[..., None]) + np.asarray(colour) * inside[..., None]
        return inside

    face_cy = 0.52
    hair = paint(face_cy - 0.06, 0.5, person["face_ry"] * 0.9,
                 person["face_rx"] * 1.12, person["hair"])
    paint(face_cy, 0.5, person["face_ry"], person["face_rx"], person["skin"])
    # The fringe: the top of the head, above a curved hairline, stays hair.
    fringe = (hair > 0.5) & (y < person["hairline"] + 0.5 * (x - 0.5) ** 2)
    image[fringe] = person["hair"]
    for side in (-1.0, 1.0):
        eye_x = 0.5 + side * person["eye_dx"]
        paint(person["eye_y"] - 0.06, eye_x, 0.012, person["eye_r"] * 1.4,
              person["hair"] * 0.7)
        paint(person["eye_y"], eye_x, person["eye_r"] * 0.6, person["eye_r"] * 1.2,
              (0.95, 0.95, 0.95))
        paint(person["eye_y"], eye_x, person["eye_r"] * 0.5, person["eye_r"] * 0.5,
              person["iris"])
        paint(person["eye_y"], eye_x, person["eye_r"] * 0.2, person["eye_r"] * 0.2,
              (0.02, 0.02, 0.02))
    nose_y = person["eye_y"] + 0.05 + person["nose_len"] / 2
    paint(nose_y, 0.5, person["nose_len"] / 2, 0.025, person["skin"] * 0.85)
    paint(nose_y + person["nose_len"] / 2, 0.5, 0.018, 0.04, person["skin"] * 0.7)
    paint(person["mouth_y"], 0.5, 0.02 + change["mouth_open"], person["mouth_rx"],
          person["lips"])
    paint(person["mouth_y"], 0.5, change["mouth_open"] * 0.5, person["mouth_rx"] * 0.75,
          (0.15, 0.03, 0.03))
    noise = np.random.default_rng(change["noise_seed"]).normal(0.0, 0.01, image.shape)
    return np.clip(image * change["light"] + noise, 0.0, 1.0).astype(np.float32)
