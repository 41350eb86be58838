"""Several keys for the sanity-check scripts: the `--keys` argument and the summary line.

One key is one draw of the masks (or noise) and of the randomized weights;
the spread of the last step over keys says whether a pass or a failure
belongs to the method or to the draw. Shared by `sanity_methods.py` and
`sanity_patches.py`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

# The paper's (and issue 14's) bar for the last step.
BAR = 0.5


def key_list(text: str) -> list[int]:
    """argparse type of `--keys`: comma-separated integers, e.g. "0,1,2"."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def add_key_options(parser: argparse.ArgumentParser) -> None:
    """`--keys` (default 0) and `--key` (one key, as before `--keys`)."""
    parser.add_argument("--keys", type=key_list, default=[0],
                        help="the check's jax.random keys, comma-separated (default 0)")
    parser.add_argument("--key", type=int, help="one key (same as --keys KEY)")


def chosen_keys(args: argparse.Namespace) -> list[int]:
    return [args.key] if args.key is not None else args.keys


def summary(values: Sequence[float]) -> str:
    """Mean, standard deviation, range and passes of the last step over the keys."""
    v = np.asarray(values, float)
    return (f"mean {v.mean():.3f}, sd {v.std(ddof=1):.3f}, range {v.min():.3f} to "
            f"{v.max():.3f}, below {BAR} in {int(np.sum(v < BAR))} of {len(v)}")
