"""Saliency explainers for face verification, by name: one signature for all.

    explainer(embed_fn, params, image, reference, key, **options) -> (H, W) map

Perturbation: "srise", "rise", "corrrise_similar", "corrrise_dissimilar".
Gradient: "gradient", "gradient_x_input", "smoothgrad", "integrated_gradients",
"gradcam" (needs the model's `feature_fns`). Optimisation: "extremal".
References any real method must beat: "random", "centre_prior".
"""

from srise_jax.explainers import extremal, gradients, perturbation, references
from srise_jax.explainers.registry import (
    KINDS,
    explainer_kind,
    get_explainer,
    list_explainers,
    register,
)

__all__ = [
    "KINDS",
    "explainer_kind",
    "extremal",
    "get_explainer",
    "gradients",
    "list_explainers",
    "perturbation",
    "references",
    "register",
]
