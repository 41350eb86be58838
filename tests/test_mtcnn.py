"""Tests for srise_jax.models.mtcnn (P-Net, R-Net, O-Net) and weights_conversion.mtcnn.

The reference numbers come from tests/torch_mtcnn.py, an independent PyTorch
MTCNN with facenet-pytorch's state-dict names, loaded with the bundled weights
(its layout converted back), so no facenet-pytorch wheel is needed. That the
bundled weights are facenet-pytorch's own is checked end to end in
tests/test_detect.py, against detections recorded with facenet-pytorch.
"""

import hashlib
import importlib.resources
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_mtcnn import from_npz, state_dicts_from_npz

from srise_jax.models.mtcnn import (
    abstract_variables,
    load_mtcnn,
    max_pool_ceil,
    onet_apply,
    pnet_apply,
    rnet_apply,
)
from weights_conversion.mtcnn import ConversionError, convert_file, convert_state_dicts, main

torch.set_num_threads(1)  # the test machine's cores are shared

BUNDLED = importlib.resources.files("srise_jax") / "assets" / "mtcnn.npz"
# sha256 of srise_jax/assets/mtcnn.npz as recorded in srise_jax/assets/README.md.
BUNDLED_SHA256 = "90660324725e7bd503a82f652aa8a81ef97b9e95c4a0c0f8a80849e00efaec8e"
PARITY_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def torch_nets():
    with importlib.resources.as_file(BUNDLED) as path:
        return from_npz(path)


@pytest.fixture(scope="module")
def bundled_state_dicts():
    with importlib.resources.as_file(BUNDLED) as path:
        return state_dicts_from_npz(path)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def test_bundled_weights_are_the_recorded_file():
    assert hashlib.sha256(BUNDLED.read_bytes()).hexdigest() == BUNDLED_SHA256


def test_load_mtcnn_is_cached_and_shaped_like_the_networks():
    params = load_mtcnn()
    assert load_mtcnn() is params
    shapes = jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), params)
    expected = jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), abstract_variables())
    assert shapes == expected
    # About 2 MB of float32: O-Net's dense5 (1152 x 256) dominates.
    size = sum(leaf.size for leaf in jax.tree.leaves(params))
    assert 450_000 < size < 550_000


@pytest.mark.parametrize("size", [(12, 12), (37, 45), (50, 21)])
def test_pnet_matches_pytorch(torch_nets, size):
    # Odd sizes leave a partial last window in the ceil-mode pool.
    images = np.random.default_rng(0).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
    regression, probabilities = pnet_apply(load_mtcnn()["pnet"], images)
    with torch.no_grad():
        torch_regression, torch_probabilities = torch_nets["pnet"](_nchw(images))
    assert regression.shape == _nhwc(torch_regression).shape
    assert _max_diff(regression, _nhwc(torch_regression)) <= PARITY_TOLERANCE
    assert _max_diff(probabilities, _nhwc(torch_probabilities)) <= PARITY_TOLERANCE


@pytest.mark.parametrize("net,apply,size", [("rnet", rnet_apply, 24), ("onet", onet_apply, 48)])
def test_crop_net_matches_pytorch(torch_nets, net, apply, size):
    crops = np.random.default_rng(1).uniform(-1, 1, (5, size, size, 3)).astype(np.float32)
    outputs = apply(load_mtcnn()[net], crops)
    with torch.no_grad():
        expected = torch_nets[net](_nchw(crops))
    assert len(outputs) == len(expected)
    for output, reference in zip(outputs, expected):
        assert output.shape == reference.shape
        assert _max_diff(output, reference.numpy()) <= PARITY_TOLERANCE


def test_dense_layers_read_the_map_in_facenet_order(torch_nets):
    # facenet-pytorch flattens (N, W, H, C); an NHWC flatten "runs" with the
    # same weights and gives other answers. This shows the order is tested.
    crops = np.random.default_rng(3).uniform(-1, 1, (4, 24, 24, 3)).astype(np.float32)
    transposed = np.ascontiguousarray(np.transpose(crops, (0, 2, 1, 3)))
    with torch.no_grad():
        expected = torch_nets["rnet"](_nchw(crops))[1].numpy()
    assert _max_diff(rnet_apply(load_mtcnn()["rnet"], crops)[1], expected) <= PARITY_TOLERANCE
    assert _max_diff(rnet_apply(load_mtcnn()["rnet"], transposed)[1], expected) > 1e-3


@pytest.mark.parametrize("window,stride", [(2, 2), (3, 2)])
@pytest.mark.parametrize("size", [(9, 9), (10, 13), (22, 22)])
def test_max_pool_ceil_matches_torch(window, stride, size):
    x = np.random.default_rng(4).standard_normal((1, *size, 2)).astype(np.float32)
    expected = torch.nn.functional.max_pool2d(_nchw(x), window, stride, ceil_mode=True)
    actual = max_pool_ceil(jnp.asarray(x), window, stride)
    assert actual.shape == _nhwc(expected).shape
    np.testing.assert_array_equal(actual, _nhwc(expected))


def test_pnet_ignores_padding_outside_valid(torch_nets):
    rng = np.random.default_rng(5)
    image = rng.uniform(-1, 1, (1, 37, 45, 3)).astype(np.float32)
    padded = np.full((1, 48, 64, 3), 9.0, np.float32)  # loud padding
    padded[:, :37, :45] = image
    valid = np.zeros((48, 64), bool)
    valid[:37, :45] = True
    regression, probabilities = pnet_apply(load_mtcnn()["pnet"], padded, valid)
    with torch.no_grad():
        torch_regression, torch_probabilities = (_nhwc(t) for t in torch_nets["pnet"](_nchw(image)))
    rows, cols = torch_probabilities.shape[1:3]
    assert _max_diff(regression[:, :rows, :cols], torch_regression) <= PARITY_TOLERANCE
    assert _max_diff(probabilities[:, :rows, :cols], torch_probabilities) <= PARITY_TOLERANCE
    assert np.all(np.isfinite(np.asarray(probabilities)))
    # Without the mask the last row and column of cells see the padding.
    unmasked = pnet_apply(load_mtcnn()["pnet"], padded)[1]
    assert _max_diff(unmasked[:, :rows, :cols], torch_probabilities) > 1e-4


def test_pnet_images_packed_side_by_side_match_each_alone(torch_nets):
    # Two images of odd sizes at even origins, touching but for the slot rounding.
    rng = np.random.default_rng(6)
    first = rng.uniform(-1, 1, (1, 25, 31, 3)).astype(np.float32)
    second = rng.uniform(-1, 1, (1, 19, 17, 3)).astype(np.float32)
    canvas = np.full((1, 40, 56, 3), -3.0, np.float32)
    valid = np.zeros((40, 56), bool)
    for image, (top, left) in ((first, (0, 0)), (second, (0, 32))):
        canvas[:, top : top + image.shape[1], left : left + image.shape[2]] = image
        valid[top : top + image.shape[1], left : left + image.shape[2]] = True
    probabilities = np.asarray(pnet_apply(load_mtcnn()["pnet"], canvas, valid)[1])
    for image, (top, left) in ((first, (0, 0)), (second, (0, 32))):
        with torch.no_grad():
            expected = _nhwc(torch_nets["pnet"](_nchw(image))[1])
        rows, cols = expected.shape[1:3]
        cells = probabilities[:, top // 2 : top // 2 + rows, left // 2 : left // 2 + cols]
        assert _max_diff(cells, expected) <= PARITY_TOLERANCE


# ---------------------------------------------------------------- conversion


def _save_pt_files(state_dicts, directory):
    directory.mkdir(parents=True, exist_ok=True)
    for net, state_dict in state_dicts.items():
        torch.save(state_dict, directory / f"{net}.pt")
    return directory


def _bundled_arrays():
    with BUNDLED.open("rb") as stream, np.load(stream) as npz:
        return dict(npz)


def _assert_same_arrays(path, expected):
    with np.load(path) as npz:
        assert sorted(npz) == sorted(expected)
        for key, array in expected.items():
            assert npz[key].dtype == np.float32
            np.testing.assert_array_equal(npz[key], array)


def test_convert_directory_round_trips_the_bundled_weights_byte_for_byte(tmp_path, bundled_state_dicts):
    # The bundled file is what the converter writes for these state dicts:
    # converting facenet-pytorch's wheel again reproduces its sha256.
    source = _save_pt_files(bundled_state_dicts, tmp_path / "data")
    out = convert_file(source, tmp_path / "mtcnn.npz")
    _assert_same_arrays(out, _bundled_arrays())
    assert out.read_bytes() == BUNDLED.read_bytes()


def test_convert_wheel_reads_the_package_data(tmp_path, bundled_state_dicts):
    # A stand-in wheel laid out like facenet_pytorch-2.6.0-py3-none-any.whl.
    data = _save_pt_files(bundled_state_dicts, tmp_path / "pt")
    wheel = tmp_path / "facenet_pytorch-2.6.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("facenet_pytorch/__init__.py", "")
        for net in ("pnet", "rnet", "onet"):
            archive.write(data / f"{net}.pt", f"facenet_pytorch/data/{net}.pt")
    assert main([str(wheel), str(tmp_path / "out.npz")]) == 0
    _assert_same_arrays(tmp_path / "out.npz", _bundled_arrays())
    loaded = load_mtcnn(tmp_path / "out.npz")
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), loaded, load_mtcnn()))


def test_convert_refuses_to_overwrite_without_the_flag(tmp_path, bundled_state_dicts, capsys):
    source = _save_pt_files(bundled_state_dicts, tmp_path / "data")
    out = tmp_path / "mtcnn.npz"
    out.write_bytes(b"keep me")
    assert main([str(source), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main([str(source), str(out), "--overwrite"]) == 0
    _assert_same_arrays(out, _bundled_arrays())


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda sd: sd["rnet"].pop("dense4.weight"), "rnet: missing key: 'dense4.weight' expected shape (128, 576)"),
        (lambda sd: sd["onet"].update({"extra.weight": torch.zeros(3)}), "onet: unexpected key: 'extra.weight'"),
        (lambda sd: sd["pnet"].update({"conv1.weight": torch.zeros(10, 3, 5, 5)}), "expected shape (10, 3, 3, 3)"),
        (lambda sd: sd["pnet"].update({"prelu1.weight": torch.zeros(10, dtype=torch.int64)}), "floating-point"),
    ],
)
def test_convert_names_what_is_wrong_and_writes_nothing(tmp_path, bundled_state_dicts, change, message):
    state_dicts = {net: dict(state_dict) for net, state_dict in bundled_state_dicts.items()}
    change(state_dicts)
    with pytest.raises(ConversionError) as info:
        convert_state_dicts(state_dicts)
    assert message in str(info.value)
    source = _save_pt_files(state_dicts, tmp_path / "data")
    with pytest.raises(ConversionError):
        convert_file(source, tmp_path / "out.npz")
    assert list(tmp_path.glob("*.npz")) == [] and list(tmp_path.glob(".*")) == []


def test_convert_reports_a_missing_network_file(tmp_path, bundled_state_dicts):
    source = _save_pt_files(bundled_state_dicts, tmp_path / "data")
    (source / "onet.pt").unlink()
    with pytest.raises(ConversionError, match="no onet.pt"):
        convert_file(source, tmp_path / "out.npz")


def test_convert_refuses_pickled_objects(tmp_path, bundled_state_dicts):
    # weights_only=True: a file holding arbitrary objects is refused, never unpickled.
    source = _save_pt_files(bundled_state_dicts, tmp_path / "data")
    with open(source / "rnet.pt", "wb") as stream:
        pickle.dump({"conv1.weight": ConversionError("not a tensor")}, stream)
    with pytest.raises(ConversionError, match="weights_only=True"):
        convert_file(source, tmp_path / "out.npz")


def test_load_mtcnn_names_a_missing_array(tmp_path):
    arrays = _bundled_arrays()
    del arrays["onet/dense6_3/kernel"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(ValueError, match="missing array 'onet/dense6_3/kernel'"):
        load_mtcnn(tmp_path / "partial.npz")


def test_convert_leaves_no_partial_file_when_writing_fails(tmp_path, bundled_state_dicts, monkeypatch):
    import weights_conversion.mtcnn as conversion

    def write_half(stream, arrays):
        stream.write(b"PK\x03\x04 half an npz")
        raise OSError("disk full")

    source = _save_pt_files(bundled_state_dicts, tmp_path / "data")
    out = tmp_path / "out" / "mtcnn.npz"
    monkeypatch.setattr(conversion, "_write_npz", write_half)
    with pytest.raises(OSError, match="disk full"):
        convert_file(source, out)
    assert list(out.parent.iterdir()) == []
