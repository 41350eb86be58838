"""Convert an insightface ``arcface_torch`` iResNet state dict into a srise-jax checkpoint.

Usage::

    python -m weights_conversion.arcface backbone.pth OUT_DIR [--arch r50] [--overwrite]

The conversion itself is `srise_jax.models.arcface_torch` (also behind
``srise-jax convert``); this module is its command line. The ``.pth`` is read
with ``torch.load(weights_only=True)`` only: a file that holds anything but
tensors and plain containers is refused, never unpickled.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from srise_jax.models.arcface_torch import convert_file, convert_state_dict, infer_arch, load_pth
from srise_jax.models.conversion import ConversionError
from srise_jax.models.iresnet import ARCH_BLOCKS
from weights_conversion.common import run_conversion

# The names this module held before the conversion moved into the library.
__all__ = ["ConversionError", "convert_file", "convert_state_dict", "infer_arch", "load_pth", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: convert one file; prints ``error: ...`` and returns 2 on failure.

    Args:
      argv: arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
      The exit status: 0 on success, 2 on a conversion error or an unwritable ``out_dir``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m weights_conversion.arcface",
        description="Convert an insightface arcface_torch iResNet state dict (.pth) into a srise-jax checkpoint.",
    )
    parser.add_argument("pth", type=Path, help="PyTorch state dict, e.g. backbone.pth (fp16 or fp32)")
    parser.add_argument("out_dir", type=Path, help="checkpoint directory to create (read by load_arcface)")
    parser.add_argument("--arch", choices=list(ARCH_BLOCKS), help="default: inferred from the blocks per stage")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    args = parser.parse_args(argv)
    return run_conversion(
        lambda: convert_file(args.pth, args.out_dir, arch=args.arch, overwrite=args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
