"""Face-embedding models that follow the ``embed_fn(params, images)`` contract.

Built in: ArcFace iResNet (`iresnet`, checkpoints in `arcface`), dlib's ResNet
(`dlib_resnet`), MTCNN (`mtcnn`), and any ONNX face-recognition network
(`onnx_import`, operators in `onnx_ops`). `load(name)` loads each by name.
"""

from srise_jax.models.arcface import ARCFACE_THRESHOLD, load_arcface, save_arcface
from srise_jax.models.conversion import ConversionError
from srise_jax.models.dlib_resnet import INPUT_SIZE as DLIB_INPUT_SIZE
from srise_jax.models.dlib_resnet import (
    DLIB_DISTANCE_THRESHOLD,
    DLIB_THRESHOLD,
    DlibResNet,
    dlib_embed_fn,
    dlib_feature_fns,
)
from srise_jax.models.dlib_weights import load_dlib
from srise_jax.models.embedding import FeatureFns
from srise_jax.models.iresnet import (
    ARCH_BLOCKS,
    EMBEDDING_DIM,
    INPUT_SIZE,
    IResNet,
    iresnet_embed_fn,
    iresnet_feature_fns,
    iresnet_init,
)
from srise_jax.models.loading import (
    MODEL_NAMES,
    FaceModel,
    load,
    model_names,
    register_model,
    unregister_model,
)
from srise_jax.models.onnx_import import (
    OnnxGraph,
    default_feature_layer,
    load_onnx,
    onnx_embed_fn,
    onnx_feature_fns,
    onnx_layer_groups,
    read_onnx,
)
from srise_jax.models.onnx_ops import OnnxError
from srise_jax.models.mtcnn import ONet, PNet, RNet, load_mtcnn, onet_apply, pnet_apply, rnet_apply

__all__ = [
    "ARCFACE_THRESHOLD",
    "ARCH_BLOCKS",
    "ConversionError",
    "DLIB_DISTANCE_THRESHOLD",
    "DLIB_INPUT_SIZE",
    "DLIB_THRESHOLD",
    "DlibResNet",
    "EMBEDDING_DIM",
    "INPUT_SIZE",
    "IResNet",
    "ONet",
    "OnnxError",
    "OnnxGraph",
    "PNet",
    "RNet",
    "FaceModel",
    "FeatureFns",
    "MODEL_NAMES",
    "default_feature_layer",
    "dlib_embed_fn",
    "dlib_feature_fns",
    "iresnet_embed_fn",
    "iresnet_feature_fns",
    "iresnet_init",
    "load",
    "model_names",
    "register_model",
    "unregister_model",
    "load_arcface",
    "load_dlib",
    "load_mtcnn",
    "load_onnx",
    "onet_apply",
    "onnx_embed_fn",
    "onnx_feature_fns",
    "onnx_layer_groups",
    "pnet_apply",
    "read_onnx",
    "rnet_apply",
    "save_arcface",
]
