"""srise-jax: S-RISE saliency maps for explainable face recognition, in JAX.

Where things are: the kernel in `srise_jax.srise`, the masks in
`srise_jax.masks`, Deletion/Insertion in `srise_jax.metrics`, the models in
`srise_jax.models`, the other explainers (gradients, RISE, CorrRISE, ...)
in `srise_jax.explainers`, thresholds in `srise_jax.thresholds`, datasets and
triplet protocols in `srise_jax.protocols`, face detection in `srise_jax.detect` and alignment in
`srise_jax.align`, the sample photos in `srise_jax.data`, figures in
`srise_jax.viz`, the faithfulness benchmark (the paper's Table 1: methods,
scoring, bootstrap summary) in `srise_jax.benchmark`, named S-RISE settings
for ablations (presets) in `srise_jax.ablation`, the command line in
`srise_jax.cli`.
"""

from srise_jax.align import (
    ARCFACE_112,
    DLIB_150,
    MIN_CONFIDENT_SCORE,
    LowScoreWarning,
    NoFaceError,
    align_face,
    detect_and_align,
    preprocess,
    similarity_transform,
)
from srise_jax.data import aligned_sample, occlude, occlusion_region, sample_faces, sample_triplet
from srise_jax.detect import Faces, detect_faces
from srise_jax.explainers import explainer_kind, get_explainer, list_explainers
from srise_jax.explainers.perturbation import srise_convergence
from srise_jax.images import MAX_CROP_SIZE, MAX_PIXELS, ImageError, load_face, load_image, synthetic_faces
from srise_jax.masks import gaussian_mask, gaussian_masks, rise_mask, rise_masks
from srise_jax.metrics import (
    Curve,
    MetricResult,
    REASON_TEXT,
    UNDEFINED_REASONS,
    deletion,
    deletion_insertion,
    insertion,
    similarity_curve,
    undefined_reason,
)
from srise_jax.models import (
    ARCFACE_THRESHOLD,
    ARCH_BLOCKS,
    DLIB_THRESHOLD,
    dlib_embed_fn,
    dlib_feature_fns,
    iresnet_embed_fn,
    iresnet_feature_fns,
    iresnet_init,
    load_arcface,
    load_dlib,
)
from srise_jax.protocols import (
    Pair,
    Triplet,
    load_protocol_face,
    read_identity_folders,
    read_lfw_pairs,
    sample_protocol,
    sample_triplets,
)
from srise_jax.sanity import SanityResult, cascading_randomization, layer_groups, randomize
from srise_jax.similarity import cosine_similarity, unit_normalize
from srise_jax.thresholds import (
    Roc,
    calibrate_threshold,
    equal_error_rate,
    roc_curve,
    verification_accuracy,
)
from srise_jax.viz import plot_convergence, plot_curves, plot_mean_curves, plot_triplet
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
    "add_sums",
    "align_face",
    "aligned_sample",
    "ARCFACE_112",
    "ARCFACE_THRESHOLD",
    "ARCH_BLOCKS",
    "calibrate_threshold",
    "cascading_randomization",
    "cosine_similarity",
    "Curve",
    "deletion",
    "deletion_insertion",
    "detect_and_align",
    "detect_faces",
    "DLIB_150",
    "dlib_embed_fn",
    "dlib_feature_fns",
    "DLIB_THRESHOLD",
    "equal_error_rate",
    "explainer_kind",
    "Faces",
    "finalize_triplet",
    "gaussian_mask",
    "gaussian_masks",
    "get_explainer",
    "ImageError",
    "insertion",
    "iresnet_embed_fn",
    "iresnet_feature_fns",
    "iresnet_init",
    "layer_groups",
    "list_explainers",
    "load_arcface",
    "load_dlib",
    "load_face",
    "load_image",
    "load_protocol_face",
    "MetricResult",
    "MIN_CONFIDENT_SCORE",
    "LowScoreWarning",
    "MAX_CROP_SIZE",
    "MAX_PIXELS",
    "REASON_TEXT",
    "UNDEFINED_REASONS",
    "undefined_reason",
    "NoFaceError",
    "normalize_jointly",
    "occlude",
    "occlusion_region",
    "Pair",
    "PairSaliency",
    "plot_convergence",
    "plot_curves",
    "plot_mean_curves",
    "plot_triplet",
    "preprocess",
    "randomize",
    "read_identity_folders",
    "read_lfw_pairs",
    "rise_mask",
    "rise_masks",
    "Roc",
    "roc_curve",
    "SaliencySums",
    "sample_faces",
    "sample_protocol",
    "sample_triplet",
    "sample_triplets",
    "SanityResult",
    "similarity_curve",
    "similarity_transform",
    "srise_convergence",
    "srise_pair",
    "srise_triplet",
    "SRiseConfig",
    "synthetic_faces",
    "Triplet",
    "triplet_sums",
    "TripletSaliency",
    "unit_normalize",
    "verification_accuracy",
]
