"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) -> Flax params.

Usage::

    python -m weights_conversion.dlib [MODEL.dat] OUT_DIR [--overwrite]

Without ``MODEL.dat``, the file of ``face_recognition_models`` is converted.
The NumPy reader of dlib's format is `srise_jax.models.dlib_dat` (``load_dlib``
converts on first use with it) and the conversion `srise_jax.models.dlib_weights.convert_dat`;
this module is their command line. A .dat other than the one
``face_recognition_models`` 0.3.0 ships (see ``OFFICIAL_SHA256``) is converted
all the same, with a warning: your own weights are legitimate, but should not
pass for dlib's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from srise_jax.models.dlib_dat import (
    EMBEDDING_DIM,
    LEVELS,
    OFFICIAL_SHA256,
    OFFICIAL_SOURCE,
    STEM_FILTERS,
    Layer,
    dat_to_variables,
    network_layers,
    read_dat,
)
from srise_jax.models.dlib_weights import convert_dat, model_file
from weights_conversion.common import run_conversion

# `convert` is the name this module gave `convert_dat` before the reader moved into the library.
convert = convert_dat

__all__ = [
    "EMBEDDING_DIM",
    "LEVELS",
    "OFFICIAL_SHA256",
    "OFFICIAL_SOURCE",
    "STEM_FILTERS",
    "Layer",
    "convert",
    "dat_to_variables",
    "main",
    "network_layers",
    "read_dat",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m weights_conversion.dlib [MODEL.dat] OUT_DIR [--overwrite]``.

    Args:
      argv: arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
      The exit status: 0 on success, 2 on a conversion error or an unwritable ``OUT_DIR``.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="[MODEL.dat] OUT_DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    args = parser.parse_args(argv)
    if len(args.paths) > 2:
        parser.error("expected at most MODEL.dat and OUT_DIR")
    if len(args.paths) == 2:
        dat, out = args.paths
    else:
        try:
            dat, out = model_file(), args.paths[0]
        except (ModuleNotFoundError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return run_conversion(lambda: convert_dat(dat, out, overwrite=args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
