"""Face-embedding models that follow the ``embed_fn(params, images)`` contract."""

from srise_jax.models.arcface import load_arcface, save_arcface
from srise_jax.models.iresnet import (
    ARCH_BLOCKS,
    EMBEDDING_DIM,
    INPUT_SIZE,
    IResNet,
    iresnet_embed_fn,
    iresnet_init,
)
from srise_jax.models.mtcnn import ONet, PNet, RNet, load_mtcnn, onet_apply, pnet_apply, rnet_apply

__all__ = [
    "ARCH_BLOCKS",
    "EMBEDDING_DIM",
    "INPUT_SIZE",
    "IResNet",
    "ONet",
    "PNet",
    "RNet",
    "iresnet_embed_fn",
    "iresnet_init",
    "load_arcface",
    "load_mtcnn",
    "onet_apply",
    "pnet_apply",
    "rnet_apply",
    "save_arcface",
]
