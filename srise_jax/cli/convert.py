"""`srise-jax convert`: an arcface_torch state dict to a checkpoint directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from srise_jax import models
from srise_jax.cli import common
from srise_jax.models import arcface_torch


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add `convert` to the `srise-jax` parser."""
    convert = commands.add_parser(
        "convert", help="convert an arcface_torch iResNet state dict for `explain`",
        description="Convert an insightface arcface_torch iResNet state dict (.pth, read "
                    "with torch.load(weights_only=True)) into a checkpoint directory.")
    convert.add_argument("pth", type=Path, help="the PyTorch state dict, e.g. backbone.pth")
    convert.add_argument("out_dir", type=Path, help="checkpoint directory to create")
    convert.add_argument("--arch", choices=list(models.ARCH_BLOCKS),
                         help="default: inferred from the number of blocks per stage")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    convert.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    """`srise-jax convert`: an arcface_torch state dict to a checkpoint directory."""
    if args.pth.suffix.lower() == ".onnx":
        # Reading an .onnx file takes about a second: a cached copy would not pay.
        raise common.UsageError(f"{args.pth}: ONNX models need no conversion; pass the file "
                                f"itself: --weights {args.pth}")
    # ConversionError is a ValueError: `main` prints it as one line.
    out_dir = arcface_torch.convert_file(args.pth, args.out_dir, arch=args.arch,
                                         overwrite=args.overwrite)
    print(f"wrote {out_dir}")
    return 0

