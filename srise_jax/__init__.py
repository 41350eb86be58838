"""srise-jax: S-RISE saliency maps for explainable face recognition, in JAX.

Where things are: the kernel in `srise_jax.srise`, the masks in
`srise_jax.masks`, Deletion/Insertion in `srise_jax.metrics`, the models in
`srise_jax.models`, figures in `srise_jax.viz`, the command line in
`srise_jax.cli`.
"""

from srise_jax.images import ImageError, load_face, synthetic_faces
from srise_jax.masks import gaussian_mask, gaussian_masks, rise_mask, rise_masks
from srise_jax.metrics import MetricResult, deletion, deletion_insertion, insertion
from srise_jax.models import ARCH_BLOCKS, iresnet_embed_fn, iresnet_init, load_arcface
from srise_jax.similarity import cosine_similarity, unit_normalize
from srise_jax.viz import plot_curves, plot_triplet
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

__all__ = [
    "ARCH_BLOCKS",
    "ImageError",
    "MetricResult",
    "PairSaliency",
    "SRiseConfig",
    "SaliencySums",
    "TripletSaliency",
    "add_sums",
    "cosine_similarity",
    "deletion",
    "deletion_insertion",
    "finalize_triplet",
    "gaussian_mask",
    "gaussian_masks",
    "insertion",
    "iresnet_embed_fn",
    "iresnet_init",
    "load_arcface",
    "load_face",
    "normalize_jointly",
    "plot_curves",
    "plot_triplet",
    "rise_mask",
    "rise_masks",
    "srise_pair",
    "srise_triplet",
    "synthetic_faces",
    "triplet_sums",
    "unit_normalize",
]
