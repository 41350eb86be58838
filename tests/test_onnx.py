"""ONNX import: parity with ONNX Runtime, gradients, explainers, sharding and clear errors.

The networks are exported here with `torch.onnx.export` (tests/onnx_nets.py);
ONNX Runtime is the independent reference for every output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the onnx package is not installed (the test extra has it)")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the test extra has it)")
torch = pytest.importorskip("torch", reason="torch is needed to export the test networks")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import onnx  # noqa: E402
import onnx.numpy_helper  # noqa: E402
from onnx import helper  # noqa: E402
from onnx_nets import (  # noqa: E402
    MobileFaceNetish,
    Normalising,
    PoolsAndPads,
    export,
    onnxruntime_embed,
    randomize_bn_,
    tiny_graph,
)
from torch_iresnet import TorchIResNet, randomize_, torch_embed  # noqa: E402

from srise_jax import explainers, models  # noqa: E402
from srise_jax.models import OnnxError, load_onnx, onnx_feature_fns, read_onnx  # noqa: E402

SMALL = 32  # MobileFaceNetish and PoolsAndPads take 32x32 crops
TINY = 16  # tiny_graph's crops: quick to compile, for the explainers and sharding


def relative_l2(ours, reference):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def crops(size, count=2, seed=0):
    return np.random.default_rng(seed).random((count, size, size, 3), dtype=np.float32)


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def mbf(onnx_dir):
    """The MobileFaceNet-shaped net, BatchNormalization nodes kept, opset 13, dynamic batch."""
    torch.manual_seed(1)  # the convolution weights: PyTorch's default init, seeded
    net = randomize_bn_(MobileFaceNetish(input_size=SMALL), seed=1)
    return net, export(net, onnx_dir / "mbf.onnx", input_size=SMALL, opset=13,
                       keep_batchnorm=True)


@pytest.fixture(scope="session")
def tiny(onnx_dir):
    """A two-convolution graph written with onnx.helper at opset 9."""
    return tiny_graph(onnx_dir / "tiny.onnx", side=TINY)


@pytest.fixture(scope="session")
def r18_onnx(onnx_dir):
    """The reference iResNet-18 (what w600k_r50 is, shallower), BatchNormalization kept."""
    net = randomize_(TorchIResNet(models.ARCH_BLOCKS["r18"]), seed=0)
    return export(net, onnx_dir / "r18.onnx", input_size=112, opset=13, keep_batchnorm=True)


# ----------------------------------------------------------------------------
# Parity with ONNX Runtime
# ----------------------------------------------------------------------------

VARIANTS = {
    # name: (opset, dynamic batch, BatchNormalization kept, fp16 initializers)
    "opset11-folded": (11, True, False, False),
    "opset13-bn": (13, True, True, False),
    "opset17-fixed-batch": (17, False, False, False),
    "opset13-fp16": (13, True, False, True),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_mobilefacenet_variants_match_onnxruntime(mbf, onnx_dir, variant):
    net, _ = mbf
    opset, dynamic, keep_bn, fp16 = VARIANTS[variant]
    path = export(net, onnx_dir / f"mbf-{variant}.onnx", input_size=SMALL, opset=opset,
                  dynamic_batch=dynamic, keep_batchnorm=keep_bn, fp16=fp16)
    images = crops(SMALL)
    embed_fn, params = load_onnx(path)
    ours = jax.jit(embed_fn)(params, jnp.asarray(images))
    assert ours.dtype == jnp.float32 and ours.shape == (2, 32)
    assert relative_l2(ours, onnxruntime_embed(path, images)) <= 1e-4
    # The variant is what it claims to be: every BatchNorm a node, or most folded away.
    kept = sum(n.op_type == "BatchNormalization" for n in onnx.load(str(path)).graph.node)
    modules = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert (kept == modules) if keep_bn else (kept < modules)
    if fp16:
        dtypes = {t.data_type for t in onnx.load(str(path)).graph.initializer}
        assert onnx.TensorProto.FLOAT16 in dtypes
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))


def test_r18_matches_onnxruntime_and_pytorch(r18_onnx):
    images = crops(112, seed=1)
    embed_fn, params = load_onnx(r18_onnx)
    ours = jax.jit(embed_fn)(params, jnp.asarray(images))
    assert relative_l2(ours, onnxruntime_embed(r18_onnx, images)) <= 1e-4
    # And the PyTorch network it was exported from (same seed, same weights).
    net = randomize_(TorchIResNet(models.ARCH_BLOCKS["r18"]), seed=0)
    assert relative_l2(ours, torch_embed(net, images)) <= 1e-4
    # The batch-norm statistics sit under "batch_stats"; every convolution
    # kernel is the file's OIHW initializer, transposed once to HWIO.
    graph, _ = read_onnx(r18_onnx)
    assert len(params["batch_stats"]) == 2 * sum(
        n.op_type == "BatchNormalization" for n in graph.nodes)
    stored = {t.name: onnx.numpy_helper.to_array(t)
              for t in onnx.load(str(r18_onnx)).graph.initializer}
    assert len(graph.conv_kernels) == sum(n.op_type == "Conv" for n in graph.nodes)
    for name in graph.conv_kernels:
        np.testing.assert_array_equal(params["params"][name],
                                      np.transpose(stored[name], (2, 3, 1, 0)))


@pytest.mark.slow
def test_r50_matches_onnxruntime(onnx_dir):
    net = randomize_(TorchIResNet(models.ARCH_BLOCKS["r50"]), seed=2)
    path = export(net, onnx_dir / "r50.onnx", input_size=112, opset=13, keep_batchnorm=True)
    images = crops(112, count=1, seed=2)
    embed_fn, params = load_onnx(path)
    assert relative_l2(jax.jit(embed_fn)(params, jnp.asarray(images)),
                       onnxruntime_embed(path, images)) <= 1e-4


def test_graph_that_normalises_itself_is_fed_255x(mbf, onnx_dir):
    net, _ = mbf
    path = export(Normalising(net), onnx_dir / "normalising.onnx", input_size=SMALL, opset=13)
    graph, _ = read_onnx(path)
    assert (graph.input_mean, graph.input_std) == (0.0, 1.0)
    images = crops(SMALL, seed=3)
    embed_fn, params = load_onnx(path)
    reference = onnxruntime_embed(path, images, mean=0.0, std=1.0)
    assert relative_l2(embed_fn(params, jnp.asarray(images)), reference) <= 1e-4
    # The same network without the Sub/Mul nodes, fed insightface's default, agrees too.
    _, plain = mbf
    embed_plain, params_plain = load_onnx(plain)
    assert relative_l2(embed_plain(params_plain, jnp.asarray(images)), reference) <= 1e-4


def test_weights_stored_as_constant_nodes_are_params_not_closed_over(mbf, tmp_path):
    _, path = mbf

    def initializers_to_constants(proto):
        moved = [t for t in proto.graph.initializer if len(t.dims) == 4]
        for tensor in moved:
            proto.graph.node.insert(0, helper.make_node("Constant", [], [tensor.name],
                                                        value=tensor))
            proto.graph.initializer.remove(tensor)

    edited = _edited(path, tmp_path, "constants.onnx", initializers_to_constants)
    graph, params = read_onnx(edited)
    _, original = read_onnx(path)
    assert sorted(params["params"]) == sorted(original["params"])
    assert graph.conv_kernels and not graph.conv_kernels & graph.constants.keys()
    images = crops(SMALL, seed=12)
    embed_fn, _ = load_onnx(edited)
    assert relative_l2(embed_fn(params, jnp.asarray(images)),
                       onnxruntime_embed(edited, images)) <= 1e-4


def test_explicit_input_conventions_override(mbf):
    _, path = mbf
    images = crops(SMALL, seed=4)
    embed_fn, params = load_onnx(path, input_mean=100.0, input_std=50.0, bgr=True)
    reference = onnxruntime_embed(path, images[..., ::-1].copy(), mean=100.0, std=50.0)
    assert relative_l2(embed_fn(params, jnp.asarray(images)), reference) <= 1e-4


def test_every_other_operator_matches_onnxruntime(onnx_dir):
    torch.manual_seed(0)
    net = PoolsAndPads().eval()
    for opset in (11, 13, 18):
        path = export(net, onnx_dir / f"pools{opset}.onnx", input_size=SMALL, opset=opset)
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert {"Pad", "MaxPool", "AveragePool", "Clip", "LeakyRelu", "Sigmoid", "Concat",
                "GlobalAveragePool", "MatMul"} <= ops
        images = crops(SMALL, seed=opset)
        embed_fn, params = load_onnx(path)
        assert relative_l2(embed_fn(params, jnp.asarray(images)),
                           onnxruntime_embed(path, images)) <= 1e-4, opset


def test_bfloat16_computes_close_to_float32(mbf):
    _, path = mbf
    images = jnp.asarray(crops(SMALL, seed=5))
    embed32, params = load_onnx(path)
    embed16, _ = load_onnx(path, dtype=jnp.bfloat16)
    low = jax.jit(embed16)(params, images)
    assert low.dtype == jnp.float32
    error = relative_l2(low, embed32(params, images))
    assert 1e-4 < error < 5e-2  # bfloat16 did compute (not silently float32), and is close


# ----------------------------------------------------------------------------
# Transformations: jit, vmap, grad, Grad-CAM's split, sharding
# ----------------------------------------------------------------------------

def test_jit_vmap_and_grad_through_the_graph(mbf, tiny):
    # vmap and parameter gradients on the tiny graph (cheap to compile).
    tiny_embed, tiny_params = load_onnx(tiny)
    images = jnp.asarray(crops(TINY, count=4, seed=6))
    whole = jax.jit(tiny_embed)(tiny_params, images)
    stacked = jax.jit(jax.vmap(tiny_embed, in_axes=(None, 0)))(
        tiny_params, images.reshape(2, 2, TINY, TINY, 3))
    np.testing.assert_allclose(stacked.reshape(4, -1), whole, rtol=1e-5, atol=1e-5)
    # The gradient with respect to the parameters flows too (a fine-tuning user needs it).
    grads = jax.jit(jax.grad(lambda p: jnp.sum(tiny_embed(p, images[:1]) ** 2)))(tiny_params)
    assert all(bool(jnp.any(g != 0)) for g in jax.tree_util.tree_leaves(grads["params"]))

    # The gradient of a score through the MobileFaceNet, against central
    # differences of its PyTorch twin in float64 (float32 differences of a
    # deep net are mostly rounding).
    _, path = mbf
    embed_fn, params = load_onnx(path)
    image = crops(SMALL, count=1, seed=6)[0]
    direction = np.random.default_rng(7).normal(size=32)

    def score(image):
        return jnp.dot(embed_fn(params, image[None])[0], jnp.asarray(direction, jnp.float32))

    gradient = np.asarray(jax.jit(jax.grad(score))(jnp.asarray(image)), np.float64)
    twin = mbf[0].double()
    try:
        def twin_score(nhwc):
            x = torch.from_numpy((255.0 * nhwc - 127.5) / 127.5).permute(2, 0, 1)[None]
            with torch.no_grad():
                return float(twin(x)[0].numpy() @ direction)

        tangent = np.random.default_rng(8).normal(size=image.shape)
        step = 1e-5
        finite = (twin_score(image + step * tangent) - twin_score(image - step * tangent)) / (
            2 * step)
    finally:
        twin.float()
    assert float(np.vdot(gradient, tangent)) == pytest.approx(finite, rel=1e-3)


def test_feature_split_reproduces_the_network(r18_onnx, mbf):
    graph, params = read_onnx(r18_onnx)
    fns = onnx_feature_fns(graph)
    images = jnp.asarray(crops(112, seed=9))
    features = fns.features_fn(params, images)
    assert features.shape == (2, 7, 7, 512)  # iResNet's last feature map, channels-last
    embed_fn = models.onnx_embed_fn(graph)
    np.testing.assert_allclose(fns.head_fn(params, features), embed_fn(params, images),
                               rtol=1e-5, atol=1e-5)
    # MobileFaceNet's GDC output is 1x1: Grad-CAM's layer is the map before it.
    _, mbf_path = mbf
    mbf_graph, _ = read_onnx(mbf_path)
    layer = models.default_feature_layer(mbf_graph)
    assert mbf_graph.shapes[layer][2:] == (SMALL // 8, SMALL // 8)
    # A layer inside a residual block (the first block's PReLU; the first
    # PReLU is the stem's) does not split the network.
    inner = [n.outputs[0] for n in graph.nodes if n.op_type == "PRelu"][1]
    with pytest.raises(OnnxError, match="does not split the network"):
        onnx_feature_fns(graph, layer=inner)


def test_opset9_graph_written_by_hand_matches_onnxruntime(tiny):
    images = crops(TINY, seed=13)
    embed_fn, params = load_onnx(tiny)
    assert relative_l2(embed_fn(params, jnp.asarray(images)),
                       onnxruntime_embed(tiny, images)) <= 1e-4


def test_every_explainer_runs_on_an_imported_model(tiny):
    # The tiny graph: the same importer as any other, a fraction of the compile time.
    model = models.load("onnx", tiny)
    assert model.threshold == models.ARCFACE_THRESHOLD and model.image_size == TINY
    # The sanity check's groups hold every parameter once: one per parameter-using node here.
    members = [m for _, group in model.layer_groups for m in group]
    assert sorted(members) == sorted(model.params["params"]) and len(model.layer_groups) == 4
    image, reference = jnp.asarray(crops(TINY, count=2, seed=10))
    small = {"srise": dict(num_masks=16, batch_size=8), "rise": dict(num_masks=16, batch_size=8),
             "corrrise_similar": dict(num_masks=16, batch_size=8),
             "corrrise_dissimilar": dict(num_masks=16, batch_size=8),
             "integrated_gradients": dict(num_steps=4), "smoothgrad": dict(num_samples=4),
             "extremal": dict(num_steps=3), "gradcam": dict(feature_fns=model.feature_fns)}
    for name in explainers.list_explainers():
        saliency = explainers.get_explainer(name)(model.embed_fn, model.params, image, reference,
                                                  jax.random.key(0), **small.get(name, {}))
        assert saliency.shape == (TINY, TINY), name
        assert bool(jnp.all(jnp.isfinite(saliency))), name


SHARD_SCRIPT = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from srise_jax import explainers
from srise_jax.models import load_onnx
embed_fn, params = load_onnx(sys.argv[1])
image, reference = jnp.asarray(np.random.default_rng(0).random((2, 16, 16, 3), np.float32))
srise = explainers.get_explainer("srise")
options = dict(num_masks=8, batch_size=2)
one = srise(embed_fn, params, image, reference, jax.random.key(1), **options)
many = srise(embed_fn, params, image, reference, jax.random.key(1),
             mesh=jax.make_mesh((4,), ("masks",)), **options)
print(json.dumps({"devices": jax.device_count(), "diff": float(jnp.max(jnp.abs(one - many))),
                  "scale": float(jnp.max(jnp.abs(one)))}))
"""


def test_sharded_srise_on_four_devices_equals_one(tiny, tmp_path):
    path = tiny
    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(script), str(path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    assert result["diff"] <= 1e-5 * max(result["scale"], 1.0), result


# ----------------------------------------------------------------------------
# Errors: one line naming the file, the node, the shape
# ----------------------------------------------------------------------------

def test_truncated_and_random_files_are_refused_naming_the_file(mbf, tmp_path):
    _, path = mbf
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    noise = tmp_path / "noise.onnx"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    for bad in (truncated, noise):
        with pytest.raises(OnnxError) as caught:
            load_onnx(bad)
        assert str(bad) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load_onnx(tmp_path / "missing.onnx")


def _edited(path, tmp_path, name, edit):
    proto = onnx.load(str(path))
    edit(proto)
    out = tmp_path / name
    onnx.save(proto, str(out))
    return out


def test_unsupported_operator_names_the_node_and_what_is_supported(mbf, tmp_path):
    _, path = mbf

    def add_lstm(proto):
        proto.graph.node.insert(0, helper.make_node("LSTM", ["input", "w", "r"], ["lstm_out"],
                                                    name="my_lstm", hidden_size=4))

    bad = _edited(path, tmp_path, "lstm.onnx", add_lstm)
    with pytest.raises(OnnxError, match=r"node 'my_lstm' has operator 'LSTM'.*supported: Add"):
        load_onnx(bad)

    def odd_attribute(proto):
        conv = next(n for n in proto.graph.node if n.op_type == "Conv")
        conv.name = "first_conv"
        conv.attribute.append(helper.make_attribute("output_padding", [1, 1]))

    bad = _edited(path, tmp_path, "attribute.onnx", odd_attribute)
    with pytest.raises(OnnxError, match=r"node 'first_conv' \(Conv\): attribute "
                                        r"'output_padding' is not supported \(supported: auto_pad"):
        load_onnx(bad)


def test_dynamic_shapes_and_wrong_sizes_are_clear_errors(mbf, tmp_path):
    _, path = mbf
    embed_fn, params = load_onnx(path)
    with pytest.raises(ValueError, match=r"expects images of shape \[B, 32, 32, 3\], got "
                                         r"\(1, 112, 112, 3\)"):
        embed_fn(params, jnp.zeros((1, 112, 112, 3)))

    def dynamic_side(proto):
        proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"

    with pytest.raises(OnnxError, match="dynamic image size"):
        load_onnx(_edited(path, tmp_path, "dynamic.onnx", dynamic_side))

    def data_dependent_reshape(proto):
        # Reshape to a shape read from the data itself: a dynamic shape.
        proto.graph.node.append(helper.make_node("Cast", ["embedding"], ["shape_f"], to=7,
                                                 name="to_int"))
        proto.graph.node.append(helper.make_node("Reshape", ["embedding", "shape_f"], ["bad"],
                                                 name="data_reshape"))
        proto.graph.output[0].name = "bad"

    with pytest.raises(OnnxError, match=r"node 'data_reshape' \(Reshape\).*dynamic shape"):
        load_onnx(_edited(path, tmp_path, "reshape.onnx", data_dependent_reshape))


def test_external_data_loads_and_a_missing_data_file_is_refused(mbf, onnx_dir, tmp_path):
    net, plain = mbf
    path = export(net, tmp_path / "external.onnx", input_size=SMALL, opset=13,
                  keep_batchnorm=True, external_data=True)
    data = tmp_path / "external.onnx.data"
    assert data.is_file() and path.stat().st_size < data.stat().st_size
    images = jnp.asarray(crops(SMALL, seed=11))
    embed_fn, params = load_onnx(path)
    embed_plain, params_plain = load_onnx(plain)
    np.testing.assert_array_equal(embed_fn(params, images), embed_plain(params_plain, images))
    data.unlink()
    with pytest.raises(OnnxError, match="external data files beside it"):
        load_onnx(path)


def test_cli_explains_with_an_onnx_model(mbf, tmp_path, capsys):
    import importlib.resources

    from srise_jax.cli import main

    _, path = mbf
    faces = importlib.resources.files("srise_jax") / "assets" / "faces"
    probe, mate = str(faces / "obama.jpg"), str(faces / "obama2.jpg")
    out = tmp_path / "explain.png"
    # A .onnx --weights picks the onnx model; its threshold is ArcFace's.
    status = main(["explain", "--weights", str(path), "--probe", probe, "--mate", mate,
                   "--num-masks", "8", "--batch-size", "8", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0 and out.is_file()
    assert f"threshold {models.ARCFACE_THRESHOLD:g}" in printed
    status = main(["explain", "--model", "onnx", "--probe", probe, "--mate", mate,
                   "--out", str(out)])
    assert status == 2
    assert "--model onnx needs --weights FILE.onnx" in capsys.readouterr().err
    assert main(["convert", str(path), str(tmp_path / "converted")]) == 2
    assert "ONNX models need no conversion" in capsys.readouterr().err
    assert not (tmp_path / "converted").exists()


def test_crops_follow_insightface_template_at_the_graphs_side():
    from srise_jax.models.templates import ARCFACE_112, arcface_template

    np.testing.assert_array_equal(arcface_template(112), ARCFACE_112)
    np.testing.assert_allclose(arcface_template(224), 2 * ARCFACE_112, rtol=1e-6)
    # insightface's other convention (estimate_norm): sides that are multiples of 128.
    np.testing.assert_allclose(arcface_template(128), ARCFACE_112 + [8, 0], rtol=1e-6)
