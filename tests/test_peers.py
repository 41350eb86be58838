"""srise-jax against the peers of benchmarks/bench_peers.py, on a tiny network.

xaitk-saliency's similarity saliency (RISE perturber + cosine similarity
scoring) and srise-jax's `srise_pair` on the same masks must be tied by the
relation in bench_peers's docstring; srise-jax's integrated gradients and
gradient must equal Captum's on the PyTorch twin of the same network. The
tiny network (a 3x3 convolution, tanh, 4x4 average pooling and a linear
layer on 16x16 images) is written twice, in PyTorch and in jax.numpy, with
the same weights: a disagreement is then a difference of the explainers.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

_HINT = "needs the bench extra: pip install 'srise-jax[bench]'"
pytest.importorskip("xaitk_saliency", reason=f"xaitk-saliency is not installed ({_HINT})")
pytest.importorskip("captum", reason=f"captum is not installed ({_HINT})")
torch = pytest.importorskip("torch", reason=f"torch is not installed ({_HINT})")

from captum.attr import IntegratedGradients, Saliency  # noqa: E402

import srise_jax  # noqa: E402
from srise_jax.explainers import gradients  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_peers  # noqa: E402

SIDE = 16
CHANNELS = 8
POOL = 4
DIM = 16


class TinyTorch(torch.nn.Module):
    """conv 3x3 (3 -> 8, bias) -> tanh -> 4x4 average pool -> NCHW flatten -> linear (128 -> 16)."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, CHANNELS, 3, padding=1)
        self.fc = torch.nn.Linear(CHANNELS * (SIDE // POOL) ** 2, DIM)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)

    def forward(self, x):
        return self.fc(torch.flatten(torch.nn.functional.avg_pool2d(torch.tanh(self.conv(x)), POOL), 1))


def jax_twin(net):
    """(embed_fn, params) computing `net` on NHWC images with its weights."""
    params = {name: jnp.asarray(p.detach().numpy()) for name, p in net.named_parameters()}

    def embed_fn(params, images):
        y = jax.lax.conv_general_dilated(
            images, jnp.transpose(params["conv.weight"], (2, 3, 1, 0)), (1, 1), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = jnp.tanh(y + params["conv.bias"])
        b = y.shape[0]
        y = y.reshape(b, SIDE // POOL, POOL, SIDE // POOL, POOL, CHANNELS).mean((2, 4))
        y = jnp.transpose(y, (0, 3, 1, 2)).reshape(b, -1)  # torch's NCHW flatten order
        return y @ params["fc.weight"].T + params["fc.bias"]

    return embed_fn, params


@pytest.fixture(scope="module")
def twins():
    net = TinyTorch().eval()
    embed_fn, params = jax_twin(net)
    rng = np.random.default_rng(0)
    image_a = rng.random((SIDE, SIDE, 3), dtype=np.float32)
    # b close to a: every mask lowers the similarity below s_0, so xaitk's
    # clip of negative drops never acts and the relation holds map to map.
    image_b = np.clip(image_a + 0.05 * rng.standard_normal(image_a.shape, dtype=np.float32), 0, 1)
    return net, embed_fn, params, image_a, image_b


def test_twins_embed_alike(twins):
    net, embed_fn, params, image_a, image_b = twins
    images = np.stack([image_a, image_b])
    with torch.inference_mode():
        expected = net(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(np.asarray(embed_fn(params, jnp.asarray(images))), expected,
                               rtol=1e-5, atol=1e-5)


def test_xaitk_map_is_the_documented_transform_of_srise_pair(twins):
    net, embed_fn, params, image_a, image_b = twins
    num_masks = 96
    explainer = bench_peers.xaitk_saliency(num_masks, threads=0)
    xaitk_map = explainer(image_a, [image_b], bench_peers.torch_descriptors(net, batch_size=32))[0]
    masks = bench_peers.xaitk_masks(num_masks, image_a)
    ours = srise_jax.srise_pair(embed_fn, params, jnp.asarray(image_a), jnp.asarray(image_b),
                                jnp.asarray(masks), batch_size=32, fill=0.0)
    scores, similarity = np.asarray(ours.scores_a), float(ours.similarity)
    assert (scores < similarity).all()  # the planted pair: no clipped drop
    np.testing.assert_allclose(bench_peers.xaitk_from_scores(scores, similarity, masks), xaitk_map,
                               atol=1e-4)
    from_map = bench_peers.xaitk_from_map(np.asarray(ours.saliency_a), scores, similarity, masks)
    np.testing.assert_allclose(from_map, xaitk_map, atol=1e-4)
    assert bench_peers.spearman(from_map, xaitk_map) >= 0.99


def test_xaitk_relation_clips_masks_that_raise_the_similarity():
    # Planted scores: mask 0 raises the similarity (clipped to a zero drop),
    # mask 1 lowers it by 0.2; the map is then mask 1's occluded part, scaled to 1.
    masks = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    out = bench_peers.xaitk_from_scores(np.array([0.9, 0.6]), 0.8, masks)
    np.testing.assert_allclose(out, [[1.0, 0.0]])


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient"])
def test_gradient_maps_equal_captums(twins, method):
    net, embed_fn, params, image_a, image_b = twins
    x = torch.from_numpy(image_a.transpose(2, 0, 1)[None].copy())
    with torch.inference_mode():
        target = net(torch.from_numpy(image_b.transpose(2, 0, 1)[None].copy()))

    def similarity(inputs):
        return torch.nn.functional.cosine_similarity(net(inputs), target, dim=1)

    key = jax.random.key(0)
    if method == "integrated_gradients":
        expected = IntegratedGradients(similarity).attribute(
            x, baselines=0.0, n_steps=16, method="riemann_middle")[0].sum(0)
        ours = gradients.integrated_gradients(embed_fn, params, jnp.asarray(image_a),
                                              jnp.asarray(image_b), key, num_steps=16)
    else:
        expected = Saliency(similarity).attribute(x.requires_grad_(), abs=True)[0].amax(0)
        ours = gradients.gradient(embed_fn, params, jnp.asarray(image_a), jnp.asarray(image_b), key)
    expected = expected.detach().numpy()
    # float32 gradients of a cosine near 1 cancel to about 1e-5 of the map's scale.
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4 * np.abs(expected).max())
