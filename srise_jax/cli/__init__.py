"""The `srise-jax` command line: one module per command in this package.

    srise-jax explain --probe P --mate M [--nonmate N] [--method srise|NAME[@N]] \\
        [--out fig.png] [--json scores.json] [--curves curves.png] [--save-maps maps.npz] \\
        [--model dlib|arcface|onnx --weights DIR|FILE.onnx] [--align] [--num-masks 500] [--threshold T]
    srise-jax convert backbone.pth DIR [--arch r50] [--overwrite]
    srise-jax align photo.jpg ... --out DIR [--size 112]
    srise-jax demo [--out srise-demo] [--model dlib|arcface|onnx --weights DIR|FILE.onnx]
    srise-jax sanity [--model dlib|arcface|onnx --weights DIR|FILE.onnx] [--method srise] [--out DIR]
    srise-jax benchmark --data sample|DIR [--methods ...] [--ablation] --out DIR
    srise-jax figures [--out DIR] [--model dlib|arcface|onnx --weights DIR|FILE.onnx]

Modules: `common` (errors, argument types, model options, warnings, JSON),
`pipeline` (S-RISE options, the maps with progress bars, Deletion/Insertion),
`report` (the JSON report and the stdout summary), then one per command.
File I/O, printing and progress bars live here; the library functions called
stay pure. Every failure a user can cause (a missing or corrupt file, a bad
option) ends in ONE line `srise-jax: error: ...` on stderr and exit status 2.
A command's outputs are reserved before any work (an unwritable location
fails at once) and written to temporaries that replace them together at the
end (`srise_jax.outputs.staged_outputs`), so a failed run leaves none behind.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import srise_jax
from srise_jax._helpers import first_line
from srise_jax.cli import align, benchmark, common, convert, demo, explain, figures, sanity
from srise_jax.cli.common import PROG

__all__ = ["PROG", "build_parser", "main"]

# In the order `srise-jax --help` lists them.
_COMMANDS = (explain, convert, align, demo, sanity, benchmark, figures)


def build_parser() -> common.Parser:
    """The parser of all commands; each sets `command` to its module's `run`."""
    parser = common.Parser(
        prog=PROG,
        description="S-RISE saliency maps that explain face-verification decisions.")
    parser.add_argument("--version", action="version",
                        version=f"{PROG} {srise_jax.__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for module in _COMMANDS:
        module.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
      argv: the arguments without the program name; `sys.argv[1:]` if None.

    Returns:
      The exit status: 0 on success, 2 on a usage or input error.
    """
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help and --version end here
            return done.code or 0
        common.use_compilation_cache()
        return args.command(args)
    # ValueError covers ImageError and ConversionError; OSError covers missing
    # checkpoints and unwritable outputs.
    except (common.UsageError, ValueError, OSError) as err:
        print(f"{PROG}: error: {first_line(err)}", file=sys.stderr)
        return common.EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return common.EXIT_INTERRUPTED
