"""The sanity check (cascading randomization) of every method the benchmark runs.

    python benchmarks/sanity_methods.py "srise@500,rise@500,gradient,centre_prior" [--keys 0,1,2]

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

One key is one draw of the randomized weights and of the explainer's
randomness: with several `--keys`, it also prints each method's last value
over the keys (mean, standard deviation, range, and in how many it is below
0.5), which says whether a verdict is the method's or the draw's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

from srise_jax import benchmark, models, sanity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_pair import sample_pair  # noqa: E402
from sanity_keys import add_key_options, chosen_keys, summary  # noqa: E402


def _ties(saliency) -> str:
    """A note when many pixels share one value (e.g. Grad-CAM's ReLU zeros).

    Tied pixels get one average rank, so such a map's Spearman is mostly
    set by where the ties are; a constant map's is undefined (NaN).
    """
    _, counts = np.unique(np.asarray(saliency), return_counts=True)
    share = counts.max() / counts.sum()
    return f" (last map: {share:.0%} of its pixels share one value)" if share >= 0.1 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("methods", help="comma-separated, as `srise-jax benchmark --methods`")
    add_key_options(parser)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    keys = chosen_keys(args)

    model = models.load("dlib")
    probe, mate = sample_pair(model)
    methods = benchmark.parse_methods(args.methods)
    parts = benchmark.make_explain_fns(model.embed_fn, methods, feature_fns=model.feature_fns,
                                       batch_size=args.batch_size)
    # One explainer per label, made once: `cascading_randomization` jits the
    # function it is given, and the same function object lets every key
    # reuse the programs the first key compiled.
    explainers = {}
    for part in parts:
        for label in part.labels:
            # The benchmark's part takes (params, image, reference, key); the
            # check hands an explainer the model too, which the part closes over.
            def explainer(embed_fn, params, image, reference, key, _fn=part.fn, _label=label):
                return _fn(params, image, reference, key)[_label]

            explainers[label] = explainer
    last: dict[str, list[float]] = {}
    for key in keys:
        for label, explainer in explainers.items():
            result = sanity.cascading_randomization(
                explainer, model.embed_fn, model.params, probe, mate, jax.random.key(key),
                groups=model.layer_groups)
            # nan: a constant map, whose ranking is undefined.
            steps = " ".join(f"{name}={float(rho):.3f}"
                             for name, rho in zip(result.steps, result.spearman))
            print(f"{label} (key {key}): {steps}{_ties(result.maps[-1])}", flush=True)
            last.setdefault(label, []).append(float(result.spearman[-1]))
    if len(keys) > 1:
        print(f"last step over keys {','.join(map(str, keys))}:")
        for label, values in last.items():
            print(f"  {label}: {summary(values)}", flush=True)


if __name__ == "__main__":
    main()
