"""MTCNN face detection time, first call and steady state, and how many shapes it compiles.

    python benchmarks/bench_detect.py                 # 1000x1000 photo, 7 repeats
    python benchmarks/bench_detect.py --repeats 15

Run it in a fresh process: the first call includes compiling P-Net for the
photo's canvas and R-Net/O-Net for the batch sizes it meets. It prints:
  * the 1000x1000 photo (obama.jpg from the bundled samples, resized to 1000
    pixels high and padded with black to a square; an LFW image enlarged if
    the samples are absent): first call, then the median of --repeats calls;
  * the same for each bundled sample photo (1024 pixels high) after it;
  * the number of compiled shapes per network after photos of all these
    sizes and eight more (resizes from 150 to 1300 pixels), against the
    number of distinct image sizes seen.
Absolute times on a shared CPU are noisy; the first/steady ratio and the
shape counts are the result.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.resources
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from srise_jax.detect import compiled_shape_counts, detect_faces

SIDE = 1000
FACES = importlib.resources.files("srise_jax") / "assets" / "faces"
LFW_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-dev"
EXTRA_SIZES = [(150, 180), (240, 320), (480, 640), (600, 400), (720, 1280), (900, 900), (1300, 800), (333, 555)]


def _square_photo() -> tuple[str, np.ndarray]:
    """A SIDE x SIDE photo with a face: a bundled sample, or an LFW image, resized and padded."""
    sample = FACES / "obama.jpg"
    if sample.is_file():
        with sample.open("rb") as stream:
            photo, source = Image.open(stream).convert("RGB"), "obama.jpg"
    else:
        path = sorted(LFW_DEV.glob("*/*.jpg"))[0]
        photo, source = Image.open(path).convert("RGB"), path.name
    scale = SIDE / max(photo.size)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.LANCZOS)
    square = np.zeros((SIDE, SIDE, 3), np.uint8)
    top, left = (SIDE - photo.height) // 2, (SIDE - photo.width) // 2
    square[top : top + photo.height, left : left + photo.width] = np.asarray(photo)
    return f"{source} in {SIDE}x{SIDE}", square


def _samples() -> dict[str, np.ndarray]:
    photos = {}
    for path in sorted(p for p in FACES.iterdir() if p.name.endswith(".jpg")) if FACES.is_dir() else []:
        with path.open("rb") as stream:
            photos[path.name] = np.asarray(Image.open(stream).convert("RGB"))
    return photos


def _time(image: np.ndarray, repeats: int) -> tuple[float, float, int]:
    """(first call s, median of `repeats` calls s, faces found)."""
    start = time.perf_counter()
    faces = detect_faces(image)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        detect_faces(image)
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), len(faces.scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="steady-state calls per image (median)")
    args = parser.parse_args()

    name, square = _square_photo()
    rows = [(name, square.shape, *_time(square, args.repeats))]
    for sample, photo in _samples().items():
        rows.append((sample, photo.shape, *_time(photo, args.repeats)))

    seen = {row[1][:2] for row in rows}
    base = Image.fromarray(square)
    for height, width in EXTRA_SIZES:
        detect_faces(np.asarray(base.resize((width, height))))
        seen.add((height, width))
    counts = compiled_shape_counts()

    print(f"# bench_detect  {datetime.date.today()}  {platform.machine()} {platform.processor() or ''}".rstrip())
    print(f"# {os.cpu_count()} CPUs, jax {jax.__version__} on {jax.default_backend()}, median of {args.repeats}")
    print(f"| {'image':<28} | {'H x W':>11} | {'faces':>5} | {'first call':>10} | {'steady':>9} |")
    print(f"|{'-' * 30}|{'-' * 13}|{'-' * 7}|{'-' * 12}|{'-' * 11}|")
    for label, shape, first, steady, found in rows:
        size = f"{shape[0]} x {shape[1]}"
        print(f"| {label:<28} | {size:>11} | {found:>5} | {first:>8.2f} s | {steady * 1e3:>6.0f} ms |")
    print()
    print(f"compiled shapes after {len(seen)} image sizes: P-Net {counts['pnet']}, "
          f"R-Net {counts['rnet']}, O-Net {counts['onet']}")


if __name__ == "__main__":
    main()
