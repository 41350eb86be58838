"""`srise-jax align`: one aligned crop per photo; failures reported, not fatal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from srise_jax import align, images, models, outputs
from srise_jax._helpers import first_line
from srise_jax.cli import common


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add `align` to the `srise-jax` parser."""
    parser = commands.add_parser(
        "align", help="detect and align faces in photos, writing the crops",
        description="Detect faces (MTCNN) in each photo and write the largest one, "
                    "aligned on the ArcFace template, as OUT/<name>.png. A photo without "
                    "a face is reported and skipped; the exit status is then 1.")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="photos")
    parser.add_argument("--out", required=True, type=Path, help="directory for the crops")
    parser.add_argument("--size", default=models.INPUT_SIZE,
                        type=common.integer_in(1, images.MAX_CROP_SIZE + 1,
                                               f"an integer in [1, {images.MAX_CROP_SIZE}]"),
                        help="side of the square crops in pixels, at most "
                             f"{images.MAX_CROP_SIZE} (default: %(default)s)")
    parser.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    """`srise-jax align`: one aligned crop per photo; failures reported, not fatal."""
    if args.out.exists() and not args.out.is_dir():
        raise common.UsageError(f"{args.out}: exists and is not a directory")
    args.out.mkdir(parents=True, exist_ok=True)
    failed, used = 0, set()
    for path in args.images:
        try:
            with common.warning_lines() as caught:
                found = align.detect_and_align(path, size=args.size)
        except ValueError as err:  # ImageError, NoFaceError
            print(f"{path}: FAILED: {first_line(err)}")
            failed += 1
            continue
        name = path.stem
        while name in used:  # photos of one name from different folders
            name += "_"
        used.add(name)
        target = args.out / f"{name}.png"
        _save_face(target, found.face)
        count = len(found.faces.scores)
        doubt = (f", below {align.MIN_CONFIDENT_SCORE:g}: check the crop"
                 if any(issubclass(w.category, align.LowScoreWarning) for w in caught) else "")
        print(f"{path}: {count} face{'s' if count != 1 else ''}, aligned the largest "
              f"(score {float(found.faces.scores[found.index]):.4f}{doubt}) -> {target}")
    if failed:
        print(f"{common.PROG}: {failed} of {len(args.images)} photos failed", file=sys.stderr)
        return 1
    return 0



def _save_face(path: Path, face: np.ndarray) -> None:
    """Write a float RGB image in [0, 1] as an 8-bit PNG, atomically."""
    with outputs.atomic_file(path) as file:
        Image.fromarray(np.round(face * 255).astype(np.uint8)).save(file, format="PNG")
