"""The sanity check (cascading randomization) of S-RISE at several patch counts.

    python benchmarks/sanity_patches.py 100:200 50:200 25:200 [--key 0]

Each argument is PATCHES:MASKS. For each, this runs the check of
`tests/test_sanity.py` on dlib's ResNet, obama against obama2 (the bundled
sample photos): `sanity.cascading_randomization` of the default S-RISE with
that many patches per mask and masks per map, randomizing dlib's layer
groups from the top (fc) down to the stem. It prints one line per setting:
the Spearman correlation of each randomized map to the original one. A map
that depends on the network ends far below 0.5; issue 14 asks that the
default's last value stay below 0.5.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp

from srise_jax import align, data, models, sanity
from srise_jax.explainers import get_explainer


def _setting(text: str) -> tuple[int, int]:
    try:
        patches, masks = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PATCHES:MASKS, e.g. 100:200, got {text!r}")
    if patches < 1 or masks < 1:
        raise argparse.ArgumentTypeError(f"patches and masks must be >= 1, got {text!r}")
    return patches, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", type=_setting, metavar="PATCHES:MASKS")
    parser.add_argument("--key", type=int, default=0, help="the check's jax.random key")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    embed_fn, params = models.load_dlib()
    photos = data.sample_faces()
    probe, mate = (jnp.asarray(align.detect_and_align(
        photos[name], size=models.DLIB_INPUT_SIZE, template=align.DLIB_150).face)
        for name in ("obama", "obama2"))
    for patches, masks in args.settings:
        explainer = functools.partial(get_explainer("srise"), num_masks=masks,
                                      batch_size=args.batch_size, num_patches=patches)
        result = sanity.cascading_randomization(explainer, embed_fn, params, probe, mate,
                                                jax.random.key(args.key))
        steps = " ".join(f"{name}={float(rho):.3f}"
                         for name, rho in zip(result.steps, result.spearman))
        print(f"patches {patches}, masks {masks}: {steps}", flush=True)


if __name__ == "__main__":
    main()
