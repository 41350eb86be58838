"""How closely the paper's plain-sum S-RISE map follows the masks' coverage, on dlib.

    python benchmarks/plain_sum_coverage.py [--num-masks 500] [--key 0]

The paper's estimator is sum_i s_i M_i (black fill, `normalize="none"`).
When the scores s_i vary little from mask to mask, that sum ranks the pixels
almost as the coverage sum_i M_i does, whatever the network: the centre
prior of patches clipped at the border. This prints the scores' mean and
spread and the Spearman correlation between the map and the coverage, for
obama against obama2 with the paper's patches (100 per mask, kernel 40,
sigma 7, absolute pixels on dlib's 150x150 chips).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

from srise_jax import models, presets, sanity, srise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_pair import sample_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-masks", type=int, default=500)
    parser.add_argument("--key", type=int, default=0)
    args = parser.parse_args()

    model = models.load("dlib")
    probe, mate = sample_pair(model)
    paper = presets.preset("paper", num_masks=args.num_masks, batch_size=50)
    stack = srise.config_masks(paper, probe.shape[:2])(
        srise.config_sources(paper, jax.random.key(args.key)))
    result = srise.srise_pair(model.embed_fn, model.params, probe, mate, stack,
                              batch_size=paper.batch_size, fill=paper.fill,
                              normalize=paper.normalize)
    scores = np.asarray(result.scores_a)
    rho = float(sanity.rank_correlation(result.saliency_a, stack.sum(0)))
    print(f"{args.num_masks} masks: scores {scores.mean():.4f} +- {scores.std():.4f}; "
          f"Spearman(plain-sum map, coverage sum_i M_i) = {rho:.4f}")


if __name__ == "__main__":
    main()
