"""The sanity check (cascading randomization) of every method the benchmark runs.

    python benchmarks/sanity_methods.py "srise@500,rise@500,gradient,centre_prior" [--key 0]

Deletion/Insertion alone cannot tell a map that explains the network from one
that any network, or none, would give: the centred prior scores well and
does not depend on the weights at all. This runs `srise-jax sanity`'s check
(`sanity.cascading_randomization`: dlib's ResNet, obama against obama2, the
layer groups randomized from fc down to the stem, one explainer key for every
map) for each method of a `srise-jax benchmark --methods` list, made exactly
as the benchmark makes it (`benchmark.make_explain_fns`, Grad-CAM on dlib's
feature split). It prints the Spearman correlation of each randomized map to
the original one; a map that depends on the network ends well below 0.5 (the
paper's and issue 14's bar). The reference maps end at 1.0 by construction:
the same key gives the same random map, and the centred prior has no input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

from srise_jax import benchmark, models, sanity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_pair import sample_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("methods", help="comma-separated, as `srise-jax benchmark --methods`")
    parser.add_argument("--key", type=int, default=0, help="the check's jax.random key")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    model = models.load("dlib")
    probe, mate = sample_pair(model)
    methods = benchmark.parse_methods(args.methods)
    parts = benchmark.make_explain_fns(model.embed_fn, methods, feature_fns=model.feature_fns,
                                       batch_size=args.batch_size)
    for part in parts:
        for label in part.labels:
            # The benchmark's part takes (params, image, reference, key); the
            # check hands an explainer the model too, which the part closes over.
            def explainer(embed_fn, params, image, reference, key, _fn=part.fn, _label=label):
                return _fn(params, image, reference, key)[_label]

            result = sanity.cascading_randomization(
                explainer, model.embed_fn, model.params, probe, mate, jax.random.key(args.key),
                groups=model.layer_groups)
            # nan: a constant map, whose ranking is undefined.
            steps = " ".join(f"{name}={float(rho):.3f}"
                             for name, rho in zip(result.steps, result.spearman))
            print(f"{label}: {steps}", flush=True)


if __name__ == "__main__":
    main()
