"""srise-jax: S-RISE saliency maps for explainable face recognition, in JAX.

The kernel is in `srise_jax.srise`, the masks in `srise_jax.masks`, the
Deletion/Insertion metrics in `srise_jax.metrics`, the models in
`srise_jax.models`.
"""

from srise_jax.masks import gaussian_mask, gaussian_masks, rise_mask, rise_masks
from srise_jax.srise import (
    PairSaliency,
    SaliencySums,
    SRiseConfig,
    TripletSaliency,
    add_sums,
    finalize_triplet,
    normalize_jointly,
    srise_pair,
    srise_triplet,
    triplet_sums,
)

__version__ = "0.1.0"
