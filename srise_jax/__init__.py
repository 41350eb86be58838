"""srise-jax: S-RISE saliency maps for explainable face recognition, in JAX.

Where things are, layer by layer, lowest first (a module imports only from
its own layer and those listed before it; `tests/test_architecture.py`
checks it):

- base: input checks (`srise_jax._helpers`), shared types (`EmbedFn`,
  `PyTree`, the `Explainer` protocol: `srise_jax.typing`), cosine similarity
  (`srise_jax.similarity`), image files (`srise_jax.images`), atomic output
  files (`srise_jax.outputs`);
- models: `srise_jax.models` (ArcFace iResNet, dlib's ResNet and its `.dat`
  reader, MTCNN, any ONNX face-recognition network: `onnx_import`, whose
  operators are in `onnx_ops`); `srise_jax.models.load(name)` is the one loader of every
  model the command line knows, returning a `FaceModel`;
- pre-processing: face detection in `srise_jax.detect`, alignment in
  `srise_jax.align`, the sample photos in `srise_jax.data`;
- kernel: the masks in `srise_jax.masks`, S-RISE's options (`SRiseConfig`)
  in `srise_jax.config`, S-RISE and its public engine in `srise_jax.srise`,
  Deletion/Insertion in `srise_jax.metrics`, the fills of removed pixels
  they share with S-RISE (blur, ROAD's imputation) in `srise_jax.fills`,
  named S-RISE settings in `srise_jax.presets`, rank statistics in `srise_jax.stats`;
- explainers: every saliency method by name (S-RISE, RISE, CorrRISE,
  gradients, Grad-CAM, extremal, references) in `srise_jax.explainers`;
- evaluation: the faithfulness benchmark (the paper's Table 1: methods,
  runner, resumable store, table) in the `srise_jax.benchmark` package, the
  model-randomisation check in `srise_jax.sanity`, thresholds in
  `srise_jax.thresholds`, datasets and triplet protocols in
  `srise_jax.protocols`, ablations in `srise_jax.ablation`, figures in
  `srise_jax.viz`;
- command line: the `srise_jax.cli` package, one module per command.

The names below are imported on first use (module `__getattr__`), so
`import srise_jax` costs little: matplotlib, orbax and torch load only with
the submodule that needs them.
"""

import importlib

__version__ = "0.1.0"

# Public name -> (submodule, attribute there). One table, read by
# `__getattr__`; inside the library, import the submodules directly.
_LAZY = {
    **{name: ("srise_jax.align", name) for name in (
        "ARCFACE_112", "DLIB_150", "MIN_CONFIDENT_SCORE", "LowScoreWarning", "NoFaceError",
        "align_face", "detect_and_align", "preprocess", "similarity_transform")},
    **{name: ("srise_jax.data", name) for name in (
        "aligned_sample", "occlude", "occlusion_region", "sample_faces", "sample_triplet")},
    **{name: ("srise_jax.detect", name) for name in ("Faces", "detect_faces")},
    **{name: ("srise_jax.explainers", name) for name in (
        "explainer_kind", "get_explainer", "list_explainers")},
    "srise_convergence": ("srise_jax.explainers.perturbation", "srise_convergence"),
    **{name: ("srise_jax.images", name) for name in (
        "MAX_CROP_SIZE", "MAX_PIXELS", "ImageError", "load_face", "load_image",
        "synthetic_faces")},
    **{name: ("srise_jax.fills", name) for name in (
        "gaussian_blur", "linear_impute", "linear_impute_sequence", "noisy_linear_impute")},
    **{name: ("srise_jax.masks", name) for name in (
        "gaussian_mask", "gaussian_masks", "mask_sources", "patch_centres", "rise_mask",
        "rise_masks", "srise_masks")},
    **{name: ("srise_jax.metrics", name) for name in (
        "Curve", "METRIC_FILLS", "MetricResult", "REASON_TEXT", "UNDEFINED_REASONS", "deletion",
        "deletion_insertion", "insertion", "similarity_curve", "undefined_reason")},
    **{name: ("srise_jax.models", name) for name in (
        "ARCFACE_THRESHOLD", "ARCH_BLOCKS", "DLIB_THRESHOLD", "FaceModel", "dlib_embed_fn",
        "dlib_feature_fns", "iresnet_embed_fn", "iresnet_feature_fns", "iresnet_init",
        "OnnxError", "load_arcface", "load_dlib", "load_onnx", "onnx_feature_fns")},
    "load_model": ("srise_jax.models", "load"),
    **{name: ("srise_jax.protocols", name) for name in (
        "Pair", "Triplet", "image_identity", "load_protocol_face", "read_identity_folders",
        "read_lfw_pairs", "sample_protocol", "sample_triplets")},
    **{name: ("srise_jax.sanity", name) for name in (
        "SanityResult", "cascading_randomization", "layer_groups", "randomize")},
    **{name: ("srise_jax.similarity", name) for name in ("cosine_similarity", "unit_normalize")},
    **{name: ("srise_jax.thresholds", name) for name in (
        "Roc", "calibrate_threshold", "equal_error_rate", "roc_curve",
        "verification_accuracy")},
    **{name: ("srise_jax.viz", name) for name in (
        "plot_convergence", "plot_curves", "plot_fill_curves", "plot_fill_summary",
        "plot_mean_curves", "plot_triplet")},
    **{name: ("srise_jax.srise", name) for name in (
        "PairSaliency", "SaliencySums", "SRiseConfig", "TripletSaliency", "add_sums",
        "finalize_triplet", "normalize_jointly", "srise_pair", "srise_triplet",
        "triplet_sums")},
}


def __getattr__(name: str):
    """Imports a public name's submodule on first access, and caches the name here.

    A public submodule (`srise_jax.viz`, ...) is imported on first access too,
    as the eager `__init__` of earlier versions made `srise_jax.viz` work
    after a bare `import srise_jax`.
    """
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
    elif not name.startswith("_"):
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise  # the submodule exists, one of its own imports failed
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
    "FaceModel",
    "Faces",
    "finalize_triplet",
    "gaussian_blur",
    "gaussian_mask",
    "gaussian_masks",
    "get_explainer",
    "image_identity",
    "ImageError",
    "insertion",
    "iresnet_embed_fn",
    "iresnet_feature_fns",
    "iresnet_init",
    "layer_groups",
    "linear_impute",
    "linear_impute_sequence",
    "list_explainers",
    "load_arcface",
    "load_dlib",
    "load_face",
    "load_image",
    "load_model",
    "load_onnx",
    "load_protocol_face",
    "LowScoreWarning",
    "mask_sources",
    "MAX_CROP_SIZE",
    "MAX_PIXELS",
    "METRIC_FILLS",
    "MetricResult",
    "MIN_CONFIDENT_SCORE",
    "NoFaceError",
    "noisy_linear_impute",
    "normalize_jointly",
    "occlude",
    "occlusion_region",
    "onnx_feature_fns",
    "OnnxError",
    "Pair",
    "PairSaliency",
    "patch_centres",
    "plot_convergence",
    "plot_curves",
    "plot_fill_curves",
    "plot_fill_summary",
    "plot_mean_curves",
    "plot_triplet",
    "preprocess",
    "randomize",
    "read_identity_folders",
    "read_lfw_pairs",
    "REASON_TEXT",
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
    "srise_masks",
    "srise_pair",
    "srise_triplet",
    "SRiseConfig",
    "synthetic_faces",
    "Triplet",
    "triplet_sums",
    "TripletSaliency",
    "undefined_reason",
    "UNDEFINED_REASONS",
    "unit_normalize",
    "verification_accuracy",
]
