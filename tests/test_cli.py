"""Tests for the srise-jax command line, run in-process through main(argv).

The model is a random iResNet-18 written as a PyTorch state dict by the
independent reference in tests/torch_iresnet.py and converted once per
test session (conftest.py), or, where only the command's plumbing is
tested, a planted 32x32 model registered with `srise_jax.models.register_model`.
The settings are tiny: 16 masks, batch 8, and a threshold of -1 with a
coarse metric step, so that Deletion never flips (9 grid points, fraction
1.0) and Insertion is undefined at once (NaN, reported as null + reason).
"""

import importlib.resources
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_error_line as _assert_one_error_line
from conftest import region_embed
from srise_jax import align, cli, explainers, images, models, presets, srise, viz
from srise_jax.cli import common, pipeline
from srise_jax.images import synthetic_faces

torch.set_num_threads(1)  # the test machine's cores are shared

TINY = ["--num-masks", "16", "--batch-size", "8", "--threshold", "-1",
        "--metric-step", "1568"]


@pytest.fixture(scope="module")
def face_files(tmp_path_factory):
    """probe, mate, nonmate PNGs of 112x112, and the mate again at 128x128."""
    directory = tmp_path_factory.mktemp("faces")
    paths = []
    for role, face in zip(("probe", "mate", "nonmate"), synthetic_faces(0)):
        image = Image.fromarray(np.round(face * 255).astype(np.uint8))
        image.save(directory / f"{role}.png")
        paths.append(directory / f"{role}.png")
        if role == "mate":
            image.resize((128, 128)).save(directory / "mate-128.png")
    return (*paths, directory / "mate-128.png")


def _explain_args(weights, faces, out=None):
    probe, mate, nonmate = faces[:3]
    return ["explain", "--weights", str(weights), "--probe", str(probe), "--mate", str(mate),
            "--nonmate", str(nonmate)] + ([] if out is None else ["--out", str(out)])


def test_explain_writes_figure_json_and_curves(tmp_path, weights, face_files, capsys):
    figure, scores, curves = tmp_path / "fig.png", tmp_path / "s.json", tmp_path / "c.png"
    probe, _, nonmate, mate_128 = face_files
    status = cli.main(_explain_args(weights, (probe, mate_128, nonmate), figure)
                      + ["--json", str(scores), "--curves", str(curves)] + TINY)
    out, err = capsys.readouterr()
    assert status == 0, err
    assert err.splitlines() == [
        f"srise-jax: warning: {mate_128}: resized from 128x128 to 112x112; S-RISE "
        "explains the model best on the aligned crops it was trained on"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "fig.png", "s.json"]
    for path in (figure, curves):
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
    report = json.loads(scores.read_text())
    assert set(report) == {"similarity", "match", "threshold", "metrics", "settings"}
    for pair in ("mate", "nonmate"):
        assert -1.0 <= report["similarity"][pair] <= 1.0
        assert report["match"][pair] is True  # every cosine is >= -1
    assert tuple(report["metrics"]) == viz.MAP_NAMES
    # At threshold -1 every image matches: no map can flip either decision,
    # so neither fraction is a number (Deletion used to report 1.0).
    for by_metric in report["metrics"].values():
        assert by_metric["deletion"]["fraction"] is None
        assert by_metric["deletion"]["reason"] == "cannot_flip"
        assert by_metric["insertion"]["fraction"] is None
        assert by_metric["insertion"]["reason"] == "already_flipped"
        assert "threshold -1" in by_metric["insertion"]["explanation"]
    settings = report["settings"]
    assert settings["arch"] == "r18" and settings["seed"] == 0
    assert settings["config"]["num_masks"] == 16 and settings["config"]["batch_size"] == 8
    assert settings["metric_step"] == 1568 and settings["mate"] == str(mate_128)
    assert "probe vs mate" in out and "n/a (cannot_flip)" in out and f"wrote {figure}" in out


def _face_model(embed_fn, params, size, *, name="planted_cli"):
    return models.FaceModel(name, "planted", embed_fn, params, size, align.ARCFACE_112, 0.2,
                            (), None, {"model": name})


@pytest.mark.parametrize("share_probe_masks", [False, True])
def test_mask_ranges_add_up_to_one_full_run(planted_region, share_probe_masks):
    embed_fn, params, _, probe, mate = planted_region
    nonmate = jnp.flip(probe, axis=0)
    # 4 * batch_size = 8 masks per range: ranges [0, 8), [8, 16), [16, 20).
    config = srise.SRiseConfig(num_masks=20, batch_size=2, num_patches=10, kernel_size=9,
                               sigma=2.0, share_probe_masks=share_probe_masks)
    key = jax.random.key(3)
    chunked = pipeline.compute_triplet(_face_model(embed_fn, params, 32),
                                       (probe, mate, nonmate), config=config, key=key,
                                       threshold=0.0, with_metrics=False).triplet
    whole = srise.srise_triplet(embed_fn, params, probe, mate, nonmate, key, config)
    for got, want in zip(jax.tree.leaves(chunked), jax.tree.leaves(whole)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _set(option, value):
    """An edit of the argument list: give `option` the value `value(tmp_path)`."""
    def edit(args, directory):
        args[args.index(option) + 1] = str(value(directory))
    return edit


def _corrupt_nonmate(args, directory):
    (directory / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _set("--nonmate", lambda d: d / "corrupt.png")(args, directory)


def _two_mates(args, directory):
    args.insert(args.index("--mate") + 2, str(directory / "extra.png"))


def _unknown_method(args, directory):
    args += ["--method", "nope"]


@pytest.mark.parametrize("edit, needle", [
    (_set("--probe", lambda d: d / "missing.png"), "missing.png: no such file"),
    (_set("--weights", lambda d: d / "nowhere"), "nowhere: no such checkpoint directory"),
    (_corrupt_nonmate, "corrupt.png: not a readable image"),
    (_set("--num-masks", lambda d: 0), "must be a positive integer"),
    (_set("--threshold", lambda d: 1.5), "in [-1, 1]"),
    (_two_mates, "unrecognized arguments"),
    (_unknown_method, "unknown explainer 'nope'"),
    (_set("--out", lambda d: d / "no" / "fig.png"), "does not exist"),
])
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, weights, face_files,
                                                           capsys, edit, needle):
    # TINY keeps a wrongly accepted run short.
    args = _explain_args(weights, face_files, tmp_path / "fig.png") + [
        "--json", str(tmp_path / "s.json")] + TINY
    edit(args, tmp_path)
    before = set(tmp_path.iterdir())
    _assert_one_error_line(cli.main(args), capsys, needle)
    assert set(tmp_path.iterdir()) == before


def test_convert_writes_a_checkpoint_and_refuses_a_bad_file(tmp_path, r18_pth, capsys):
    assert cli.main(["convert", str(r18_pth), str(tmp_path / "ok")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert json.loads((tmp_path / "ok" / "metadata.json").read_text())["arch"] == "r18"
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    status = cli.main(["convert", str(tmp_path / "bad.pth"), str(tmp_path / "out")])
    _assert_one_error_line(status, capsys, "bad.pth")
    assert not (tmp_path / "out").exists()


def _assert_demo_outputs(out_dir, model):
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "occlusion.png", "scores.json", "triplet.png"]
    for name in ("triplet.png", "occlusion.png"):
        with Image.open(out_dir / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
    report = json.loads((out_dir / "scores.json").read_text())
    assert report["model"].startswith(model)
    for triplet in ("triplet", "occlusion"):
        assert all(-1.0 <= v <= 1.0 for v in report[triplet]["similarity"].values())
        assert set(report[triplet]["metrics"]) == set(viz.MAP_NAMES)
    return report


def test_demo_with_arcface_weights_writes_both_triplets(tmp_path, weights, capsys):
    out_dir = tmp_path / "demo"
    status = cli.main(["demo", "--model", "arcface", "--weights", str(weights),
                       "--out", str(out_dir)] + TINY)
    out, err = capsys.readouterr()
    assert status == 0, err
    report = _assert_demo_outputs(out_dir, "ArcFace r18")
    assert report["threshold"] == -1.0
    assert f"wrote {out_dir / 'triplet.png'}" in out


def test_explain_preset_gives_the_library_maps(tmp_path, weights, face_files, capsys):
    # "paper", not "mean_fill": since issue 14 the latter equals the defaults
    # at 112 pixels, so it could not tell an ignored --preset from an applied
    # one. Only --save-maps: no metrics or figure to compute.
    faces = face_files[:3]
    saved = tmp_path / "maps.npz"
    status = cli.main(_explain_args(weights, faces) + [
        "--save-maps", str(saved), "--preset", "paper", "--num-masks", "8", "--batch-size", "8",
        "--threshold", "-1"])
    assert status == 0, capsys.readouterr().err
    with np.load(saved) as saved_maps:
        config = json.loads(str(saved_maps["settings"]))["config"]
        got = saved_maps["maps"][0]
    assert (config["fill"], config["normalize"], config["combine"]) == (0.0, "none", "max")
    # The maps the command computes are the library's with the preset.
    model = models.load("arcface", weights)
    loaded = [images.load_face(path) for path in faces]
    want = srise.srise_triplet(model.embed_fn, model.params, *loaded, jax.random.key(0),
                               presets.preset("paper", num_masks=8, batch_size=8))
    np.testing.assert_allclose(got, want.mate.saliency_a, rtol=1e-5, atol=1e-6)
    # The preset was applied: the defaults give other maps.
    default = srise.srise_triplet(model.embed_fn, model.params, *loaded, jax.random.key(0),
                                  srise.SRiseConfig(num_masks=8, batch_size=8))
    assert not np.allclose(default.mate.saliency_a, want.mate.saliency_a, atol=1e-4)


# ----------------------------------------------------------------------------
# explain with any method, on a pair or a triplet, with its raw maps (planted model)
# ----------------------------------------------------------------------------

_PLANTED_PARAMS = {"const": jnp.full((16,), 0.2, jnp.float32), "offset": jnp.float32(0.5)}
_PLANTED_EMBED = region_embed((8, 20, 6, 26))


@pytest.fixture(scope="module", autouse=True)
def planted_cli():
    """--model planted_cli: a region read-out on 32x32 crops, for this module's tests."""
    models.register_model("planted_cli", lambda weights, *, dtype: _face_model(
        _PLANTED_EMBED, _PLANTED_PARAMS, 32))
    yield
    models.unregister_model("planted_cli")


@pytest.fixture(scope="module")
def faces_32(tmp_path_factory):
    """probe, mate, nonmate PNGs of 32x32 and the crops the command reads from them."""
    directory = tmp_path_factory.mktemp("faces32")
    paths = []
    for role, face in zip(("probe", "mate", "nonmate"), synthetic_faces(0, size=32)):
        Image.fromarray(np.round(face * 255).astype(np.uint8)).save(directory / f"{role}.png")
        paths.append(directory / f"{role}.png")
    return paths, [images.load_face(path, size=32) for path in paths]


def _explain_planted(paths, tmp_path, *extra):
    roles = ("--probe", "--mate", "--nonmate")
    args = ["explain", "--model", "planted_cli", "--batch-size", "4", "--threshold", "0",
            "--save-maps", str(tmp_path / "maps.npz"), "--out", str(tmp_path / "fig.png"),
            "--json", str(tmp_path / "s.json")]
    for role, path in zip(roles, paths):
        args += [role, str(path)]
    return cli.main(args + list(extra))


def _saved(tmp_path):
    with np.load(tmp_path / "maps.npz") as saved:
        return {name: saved[name] for name in saved.files}


def _cosine(a, b):
    a, b = (np.asarray(_PLANTED_EMBED(_PLANTED_PARAMS, x[None]), np.float64)[0] for x in (a, b))
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


def test_explain_integrated_gradients_on_a_pair_saves_the_library_maps(tmp_path, faces_32,
                                                                       capsys):
    paths, (probe, mate, _) = faces_32
    status = _explain_planted(paths[:2], tmp_path, "--method", "integrated_gradients@8")
    out, err = capsys.readouterr()
    assert status == 0, err
    with Image.open(tmp_path / "fig.png") as figure:
        assert figure.format == "PNG"
    saved = _saved(tmp_path)
    assert list(saved["names"]) == ["probe_vs_mate", "mate_vs_probe"]
    assert saved["maps"].dtype == np.float32 and saved["maps"].shape == (2, 32, 32)
    # The key rule (srise_jax.cli.pipeline): the pair's key is split(key(seed))[0].
    key = jax.random.split(jax.random.key(0))[0]
    explainer = explainers.get_explainer("integrated_gradients")
    for got, (image, reference) in zip(saved["maps"], ((probe, mate), (mate, probe))):
        want = explainer(_PLANTED_EMBED, _PLANTED_PARAMS, image, reference, key,
                         num_steps=8, batch_size=4)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # The planted model reads only rows 8:20, columns 6:26: no gradient outside.
    assert np.all(saved["maps"][:, :8] == 0) and np.any(saved["maps"][:, 8:20, 6:26] != 0)
    assert list(saved["pairs"]) == ["mate"]
    np.testing.assert_allclose(saved["similarity"], [_cosine(probe, mate)], rtol=1e-5)
    settings = json.loads(str(saved["settings"]))
    assert settings["method"] == "integrated_gradients@8"
    assert settings["options"] == {"num_steps": 8, "batch_size": 4}
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["settings"] == settings
    assert set(report["metrics"]) == {"probe_vs_mate", "mate_vs_probe"}
    assert set(report["metrics"]["probe_vs_mate"]) == {"deletion", "insertion"}
    assert "probe vs mate" in out and "nonmate" not in out


def test_explain_srise_on_a_triplet_saves_the_kernel_maps(tmp_path, faces_32, capsys):
    paths, faces = faces_32
    status = _explain_planted(paths, tmp_path, "--num-masks", "8")
    assert status == 0, capsys.readouterr().err
    saved = _saved(tmp_path)
    assert tuple(saved["names"]) == viz.MAP_NAMES and saved["maps"].shape == (4, 32, 32)
    want = srise.srise_triplet(_PLANTED_EMBED, _PLANTED_PARAMS, *faces, jax.random.key(0),
                               srise.SRiseConfig(num_masks=8, batch_size=4))
    for got, (_, _, saliency) in zip(saved["maps"], viz.triplet_maps(*faces, want).values()):
        np.testing.assert_allclose(got, saliency, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(saved["similarity"],
                               [want.mate.similarity, want.nonmate.similarity], rtol=1e-6)
    settings = json.loads(str(saved["settings"]))
    assert settings["method"] == "srise@8" and settings["config"]["num_masks"] == 8


def test_explain_srise_on_a_pair_gives_the_triplets_mate_maps(tmp_path, faces_32, capsys):
    # A pair's maps do not change when a nonmate is added: the pair keys are
    # the triplet's (srise_jax.cli.pipeline).
    paths, faces = faces_32
    status = _explain_planted(paths[:2], tmp_path, "--method", "srise@8")
    assert status == 0, capsys.readouterr().err
    want = srise.srise_triplet(_PLANTED_EMBED, _PLANTED_PARAMS, *faces, jax.random.key(0),
                               srise.SRiseConfig(num_masks=8, batch_size=4))
    np.testing.assert_allclose(_saved(tmp_path)["maps"],
                               [want.mate.saliency_a, want.mate.saliency_b],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("extra, needle", [
    (["--method", "gradient", "--normalize", "none"], "--normalize: only with --method srise"),
    (["--method", "srise@8", "--num-masks", "8"], "give the count once"),
    (["--method", "gradient", "--num-masks", "8"], "--num-masks: gradient takes no masks"),
    (["--method", "srise[paper]", "--preset", "paper"], "give the preset once"),
    (["--method", "srise,gradient"], "expected one method"),
    (["--method", "gradcam"], "gradcam needs the model's feature maps"),
    (["--share-probe-masks"], "--share-probe-masks: only with a triplet"),
])
def test_explain_refuses_options_that_do_not_fit_the_method(tmp_path, faces_32, capsys,
                                                            extra, needle):
    paths, _ = faces_32
    _assert_one_error_line(_explain_planted(paths[:2], tmp_path, *extra), capsys, needle)
    assert list(tmp_path.iterdir()) == []


def test_explain_without_an_output_is_refused(tmp_path, faces_32, capsys):
    paths, _ = faces_32
    status = cli.main(["explain", "--model", "planted_cli", "--probe", str(paths[0]),
                       "--mate", str(paths[1])])
    _assert_one_error_line(status, capsys, "nothing to write")


@pytest.mark.parametrize("extra, needle", [
    (["--model", "arcface"], "--model arcface needs --weights"),
    (["--model", "dlib", "--weights", "somewhere"], "--weights is for --model arcface"),
])
def test_model_options_are_checked(tmp_path, capsys, extra, needle):
    status = cli.main(["demo", "--out", str(tmp_path / "demo")] + extra + TINY)
    _assert_one_error_line(status, capsys, needle)
    assert not (tmp_path / "demo").exists()


def test_every_commands_help_renders_as_written(capsys):
    """argparse %-formats option help but not descriptions: a "%%" meant as an
    escaped percent sign prints doubled in a description."""
    names = ["explain", "convert", "align", "demo", "sanity", "benchmark", "figures"]
    for argv in [[]] + [[name] for name in names]:
        assert cli.main(argv + ["--help"]) == 0
        text = capsys.readouterr().out
        assert text.startswith("usage: srise-jax"), argv
        assert "%%" not in text and "%(" not in text, (argv, text)
    assert cli.build_parser().format_usage().count("COMMAND") == 1


def test_installed_script_reports_errors_in_one_line(tmp_path):
    script = shutil.which("srise-jax")
    assert script is not None, "console script missing: pip install -e ."
    result = subprocess.run(
        [script, "explain", "--weights", str(tmp_path), "--probe", str(tmp_path / "p.png"),
         "--mate", str(tmp_path / "m.png"), "--nonmate", str(tmp_path / "n.png"),
         "--out", str(tmp_path / "fig.png")],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"srise-jax: error: {tmp_path / 'p.png'}: no such file"]
    assert list(Path(tmp_path).iterdir()) == []


def _sample_photo(name):
    return Path(str(importlib.resources.files("srise_jax") / "assets" / "faces" / f"{name}.jpg"))


@pytest.fixture(scope="module")
def bad_photos(tmp_path_factory):
    """Files that are not usable photos: the reason each must be reported."""
    directory = tmp_path_factory.mktemp("bad")
    (directory / "text.jpg").write_text("not an image, just text\n")
    (directory / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (1, 1), (128, 128, 128)).save(directory / "tiny.png")
    Image.new("RGB", (200, 160), (90, 140, 200)).save(directory / "sky.png")
    return {"text.jpg": "not a readable image", "empty.jpg": "empty",
            "tiny.png": "no face found", "sky.png": "no face found"}, directory


def test_align_writes_crops_and_reports_each_failure(tmp_path, bad_photos, capsys):
    reasons, directory = bad_photos
    photos = [_sample_photo("obama")] + [directory / name for name in reasons]
    status = cli.main(["align", *map(str, photos), "--out", str(tmp_path / "crops")])
    out, err = capsys.readouterr()
    assert status == 1
    assert err.splitlines() == ["srise-jax: 4 of 5 photos failed"]
    lines = out.splitlines()
    assert len(lines) == 5
    assert lines[0].startswith(f"{photos[0]}: 1 face, aligned the largest (score ")
    for line, (name, reason) in zip(lines[1:], reasons.items()):
        assert line.startswith(f"{directory / name}: FAILED: ") and reason in line, line
    assert [p.name for p in (tmp_path / "crops").iterdir()] == ["obama.png"]
    with Image.open(tmp_path / "crops" / "obama.png") as crop:
        assert crop.size == (112, 112) and crop.mode == "RGB"


def test_explain_align_detects_and_aligns_raw_photos(tmp_path, weights, capsys):
    photos = [_sample_photo(name) for name in ("obama", "obama2", "biden")]
    scores = tmp_path / "s.json"
    status = cli.main(_explain_args(weights, photos, tmp_path / "fig.png")
                      + ["--align", "--json", str(scores)] + TINY)
    _, err = capsys.readouterr()
    assert status == 0, err
    assert err == ""  # no resize warning: the crops are made at the model's size
    with Image.open(tmp_path / "fig.png") as figure:
        assert figure.format == "PNG"
    assert set(json.loads(scores.read_text())["similarity"]) == {"mate", "nonmate"}


def test_explain_align_without_a_face_exits_2(tmp_path, weights, bad_photos, capsys):
    _, directory = bad_photos
    photos = [_sample_photo("obama"), directory / "sky.png", _sample_photo("biden")]
    status = cli.main(_explain_args(weights, photos, tmp_path / "fig.png")
                      + ["--align"] + TINY)
    _assert_one_error_line(status, capsys, f"no face found in {directory / 'sky.png'}")
    assert list(tmp_path.iterdir()) == []


def test_compilation_cache_configured_by_the_user_is_left_alone(monkeypatch, tmp_path):
    # The command line's own cache (SRISE_JAX_CACHE/xla) is checked end to end
    # by tests/test_packaging.py; here, the user's settings win.
    before = jax.config.jax_compilation_cache_dir
    assert before  # tests/conftest.py set one
    # Their environment variable alone (JAX reads it when it starts).
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "theirs"))
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        assert common.use_compilation_cache() is None
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    # Their jax.config alone.
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("SRISE_JAX_CACHE", str(tmp_path / "ours"))
    assert common.use_compilation_cache() is None  # jax.config holds one
    assert jax.config.jax_compilation_cache_dir == before
    assert not (tmp_path / "ours").exists()
