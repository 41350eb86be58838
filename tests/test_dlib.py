"""dlib's face-recognition ResNet: the .dat reader, the Flax port, the cache.

Reference descriptors in tests/fixtures/dlib come from the real dlib 20.0.1 and
face_recognition_models 0.3.0 (see README.md there): dlib's chip of each
sample photo and its ``compute_face_descriptor``.
"""

import importlib.util
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from srise_jax.models import DLIB_DISTANCE_THRESHOLD, DLIB_THRESHOLD, dlib_embed_fn, load_dlib
from srise_jax.models import checkpoint, dlib_resnet, dlib_weights
from srise_jax.models.conversion import ConversionError
from srise_jax.models.dlib_dat import DatReader, dat_to_variables, read_dat

FIXTURES = Path(__file__).parent / "fixtures" / "dlib"


def _model_file():
    try:
        return dlib_weights.model_file()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        pytest.skip(f"face_recognition_models is not installed ({err}); pip install \"srise-jax[demo]\"")


@pytest.fixture(scope="module")
def chips():
    names = (FIXTURES / "names.txt").read_text().split()
    images = np.stack([np.asarray(Image.open(FIXTURES / f"{n}_chip.png").convert("RGB")) for n in names])
    return names, images.astype(np.float32) / 255.0, np.load(FIXTURES / "descriptors.npy")


@pytest.fixture(scope="module")
def dlib_model(tmp_path_factory):
    _model_file()
    return load_dlib(cache=tmp_path_factory.mktemp("cache") / "dlib")


# ------------------------------------------------------------ dlib's encodings
# Encoders written from dlib/serialize.h and dlib/float_details.h, independently
# of the reader under test.


def _encode_int(value: int) -> bytes:
    """dlib's pack_int: control byte (0x80 if negative | byte count), magnitude little endian."""
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def _encode_float(value: float, digits: int) -> bytes:
    """dlib's float_details for a type with ``digits`` mantissa bits, then two ints."""
    if math.isnan(value):
        mantissa, exponent = 0, 32002
    elif math.isinf(value):
        mantissa, exponent = 0, 32000 if value > 0 else 32001
    else:
        fraction, exp = math.frexp(value)
        mantissa, exponent = int(fraction * (1 << digits)), exp - digits
        for _ in range(8):  # drop low zero bytes, as dlib does
            if mantissa & 0xFF:
                break
            mantissa >>= 8
            exponent += 8
    return _encode_int(mantissa) + _encode_int(exponent)


@pytest.mark.parametrize("value", [0, 1, 127, 255, 256, 65535, -1, -300, 2**40, -(2**62)])
def test_integer_decoding_inverts_dlib_pack_int(value):
    data = _encode_int(value) + b"tail"
    reader = DatReader(data, "bytes")
    assert reader.int_("n") == value
    assert data[reader.pos :] == b"tail"


@pytest.mark.parametrize("value", [0.0, 1.0, -2.5, 0.04, 0.6, 122.782, 1e-30, -3.4e38])
@pytest.mark.parametrize("digits", [24, 53])  # float and double
def test_portable_float_decoding_inverts_float_details(value, digits):
    if digits == 24:
        value = float(np.float32(value))
    reader = DatReader(_encode_float(value, digits), "bytes")
    assert reader.float_("x") == value


def test_portable_float_special_values():
    data = b"".join(_encode_float(v, 24) for v in (math.inf, -math.inf, math.nan))
    reader = DatReader(data, "bytes")
    assert reader.float_("a") == math.inf
    assert reader.float_("b") == -math.inf
    assert math.isnan(reader.float_("c"))


def test_tensor_versions_1_and_2_decode_alike():
    values = np.array([0.5, -1.25, 3.0, 1e-3, 0.0, 7.0], np.float32)
    shape = b"".join(_encode_int(n) for n in (1, 2, 3, 1))
    raw = _encode_int(2) + shape + values.astype("<f4").tobytes()
    portable = _encode_int(1) + shape + b"".join(_encode_float(float(v), 24) for v in values)
    for data in (raw, portable):
        np.testing.assert_array_equal(DatReader(data, "bytes").tensor("t"), values.reshape(1, 2, 3, 1))


def test_truncated_integer_names_the_offset():
    reader = DatReader(b"\x01\x05" + b"\x03\x01", "bytes")
    reader.int_("first")
    with pytest.raises(ConversionError, match="truncated.*byte offset 3"):
        reader.int_("second")


# --------------------------------------------------------------- the .dat file


def test_reader_consumes_the_whole_model_file():
    layers = read_dat(_model_file())
    assert layers[0].kind == "input_rgb_image_sized"
    np.testing.assert_allclose(layers[0].meta["mean"], (122.782, 117.001, 104.298), atol=1e-4)
    assert layers[-1].kind == "loss_metric_2"
    assert layers[-1].meta["distance_threshold"] == pytest.approx(DLIB_DISTANCE_THRESHOLD)
    convs = [layer for layer in layers if layer.kind == "con_4"]
    assert len(convs) == 1 + 2 * 14


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_dat_raises_conversion_error_with_offset(tmp_path, keep):
    data = _model_file().read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ConversionError, match=r"truncated.*byte offset \d+"):
        dat_to_variables(cut)


def test_other_bytes_raise_conversion_error(tmp_path):
    path = tmp_path / "other.dat"
    path.write_bytes(_encode_int(1) + _encode_int(4) + b"abcd")
    with pytest.raises(ConversionError, match="expected a 'loss_metric_2' layer.*byte offset 2"):
        read_dat(path)


# ------------------------------------------------------------------- the port


def test_port_reproduces_dlib_descriptors(dlib_model, chips):
    embed_fn, params = dlib_model
    _, images, reference = chips
    out = np.asarray(jax.jit(embed_fn)(params, images))
    assert out.shape == (len(images), 128)
    errors = np.linalg.norm(out - reference, axis=1)
    assert errors.max() < 1e-3, errors


@pytest.mark.parametrize("kernel,stride,padding", [
    (7, 2, ((0, 1), (0, 0))),
    (3, 1, ((1, 1), (1, 1))),
])
def test_patch_conv_equals_flax_conv_values_and_gradients(kernel, stride, padding):
    """The stem's patch-matmul convolution against nn.Conv with the same parameters."""
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(0), (2, 17, 19, 3))
    conv = nn.Conv(5, (kernel, kernel), strides=stride, padding=padding)
    variables = conv.init(jax.random.key(1), x)
    variables = jax.tree.map(lambda v: v + 0.1, variables)  # a non-zero bias too
    patch = dlib_resnet.PatchConv(5, kernel, stride, padding)
    assert jax.tree.map(jnp.shape, patch.init(jax.random.key(1), x)) == \
        jax.tree.map(jnp.shape, variables)
    want, got = conv.apply(variables, x), patch.apply(variables, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    loss = lambda module: jax.grad(lambda v: jnp.sum(jnp.sin(module.apply(variables, v))))(x)
    np.testing.assert_allclose(np.asarray(loss(patch)), np.asarray(loss(conv)), atol=1e-5)


def test_bfloat16_compute_stays_close(dlib_model, chips):
    _, params = dlib_model
    _, images, reference = chips
    out = np.asarray(jax.jit(dlib_embed_fn(dtype=jnp.bfloat16))(params, images[:2]))
    cosine = np.sum(out * reference[:2], axis=1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference[:2], axis=1)
    assert cosine.min() > 0.99


def test_embed_fn_is_one_object_per_dtype_and_checks_shapes(dlib_model):
    embed_fn, params = dlib_model
    assert dlib_embed_fn() is embed_fn
    assert dlib_embed_fn(dtype=jnp.bfloat16) is not embed_fn
    with pytest.raises(ValueError, match=r"\[B, 150, 150, 3\]"):
        embed_fn(params, jnp.zeros((1, 112, 112, 3)))


def test_verification_rule_on_fixture_chips(dlib_model, chips):
    embed_fn, params = dlib_model
    names, images, _ = chips
    emb = dict(zip(names, np.asarray(jax.jit(embed_fn)(params, images))))

    def distance(a, b):
        return np.linalg.norm(emb[a] - emb[b])

    def cosine(a, b):
        return emb[a] @ emb[b] / np.linalg.norm(emb[a]) / np.linalg.norm(emb[b])

    for mate in ("obama2", "obama3"):
        assert distance("obama", mate) < DLIB_DISTANCE_THRESHOLD
        assert cosine("obama", mate) > DLIB_THRESHOLD
    for name in names[1:]:
        assert distance("biden", name) > DLIB_DISTANCE_THRESHOLD
        assert cosine("biden", name) < DLIB_THRESHOLD


def test_cosine_threshold_matches_distance_rule_at_descriptor_norms(chips):
    # For two descriptors of squared norm s, d**2 = 2 s (1 - cos): dlib's d = 0.6
    # is DLIB_THRESHOLD at the reference descriptors' mean squared norm.
    _, _, reference = chips
    s = np.mean(np.sum(reference**2, axis=1))
    assert 1 - DLIB_DISTANCE_THRESHOLD**2 / (2 * s) == pytest.approx(DLIB_THRESHOLD, abs=2e-3)


# ------------------------------------------------------------------- the cache


def _metadata(cache):
    return json.loads((cache / checkpoint.METADATA_FILE).read_text())


def test_cache_of_another_format_version_is_rebuilt(tmp_path, dlib_model):
    cache = tmp_path / "dlib"
    _, params = load_dlib(cache=cache)
    stale = {**_metadata(cache), "format_version": 0}
    (cache / checkpoint.METADATA_FILE).write_text(json.dumps(stale))
    _, rebuilt = load_dlib(cache=cache)
    assert _metadata(cache)["format_version"] == dlib_weights.FORMAT_VERSION
    jax.tree.map(np.testing.assert_array_equal, rebuilt, params)


def test_cache_of_other_weights_is_rebuilt(tmp_path):
    cache = tmp_path / "dlib"
    load_dlib(cache=cache)
    (cache / checkpoint.METADATA_FILE).write_text(json.dumps({**_metadata(cache), "source_sha256": "0" * 64}))
    load_dlib(cache=cache)
    assert _metadata(cache)["source_sha256"] == dlib_weights.sha256_file(_model_file())


# orbax leaves an event-loop warning behind when it meets the damaged file.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_truncated_cache_is_rebuilt(tmp_path, dlib_model, chips):
    cache = tmp_path / "dlib"
    load_dlib(cache=cache)
    files = [p for p in (cache / checkpoint.VARIABLES_DIR).rglob("*") if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    embed_fn, params = load_dlib(cache=cache)
    _, reference_params = dlib_model
    jax.tree.map(np.testing.assert_array_equal, params, reference_params)


def test_cache_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SRISE_JAX_CACHE", str(tmp_path))
    assert dlib_weights.cache_dir() == tmp_path / "dlib-resnet-v1"


def test_missing_package_names_the_extra(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "face_recognition_models" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModuleNotFoundError, match=r'pip install "srise-jax\[demo\]"'):
        load_dlib()
