"""A command's outputs appear together or not at all, and bad outputs fail before any work.

`srise_jax.outputs` on its own, then the commands that use it (`explain`,
`demo`), `align`'s bounds and warnings. The CLI tests use planted 32x32
models, registered with `srise_jax.models.register_model` and picked with
`--model`, so that a run that wrongly goes ahead is still fast.
"""

import importlib.resources
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_one_error_line, region_embed
from PIL import Image

from srise_jax import align, cli, images, models, outputs
from srise_jax.images import synthetic_faces

_TINY = ["--num-masks", "8", "--batch-size", "4", "--metric-step", "256"]


# ----------------------------------------------------------------------------
# srise_jax.outputs
# ----------------------------------------------------------------------------

def _listing(directory):
    return sorted(p.name for p in Path(directory).iterdir())


def test_staged_files_appear_together_only_once_the_block_succeeds(tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.json"
    with outputs.staged_outputs() as staged:
        for path in (first, second):
            staged.file(path)
        staged.file(first).write_bytes(b"figure")
        # Reserved, not yet written: only hidden temporaries exist.
        assert not first.exists() and not second.exists()
        assert all(name.startswith(".") for name in _listing(tmp_path))
        staged.file(second).write_bytes(b"scores")
    assert _listing(tmp_path) == ["a.png", "b.json"]
    assert first.read_bytes() == b"figure" and second.read_bytes() == b"scores"
    umask = os.umask(0)
    os.umask(umask)
    assert first.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_block_leaves_the_old_files_and_no_temporaries(tmp_path):
    kept = tmp_path / "a.png"
    kept.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="late failure"):
        with outputs.staged_outputs() as staged:
            staged.file(kept).write_bytes(b"new")
            staged.file(tmp_path / "b.json").write_bytes(b"scores")
            raise RuntimeError("late failure")
    assert _listing(tmp_path) == ["a.png"] and kept.read_bytes() == b"old"


def test_a_directory_made_for_a_failed_block_is_removed_again(tmp_path):
    with pytest.raises(RuntimeError):
        with outputs.staged_outputs() as staged:
            out = staged.directory(tmp_path / "new" / "deeper")
            staged.file(out / "scores.json")
            raise RuntimeError
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing" / "s.json", "directory"),
    (lambda d: d, "is a directory, expected a file name"),
    (lambda d: d / ("x" * 300 + ".json"), "file name too long"),
], ids=["missing directory", "a directory", "name too long"])
def test_an_unwritable_output_fails_when_reserved(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(outputs.OutputError, match=needle):
        with outputs.staged_outputs() as staged:
            staged.file(path)
    assert _listing(tmp_path) == []


def test_an_existing_read_only_file_is_not_writable(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("{}")
    path.chmod(0o444)
    if os.access(path, os.W_OK):  # root may write any file: then so may we
        outputs.check_writable(path)
    else:
        with pytest.raises(outputs.OutputError, match="exists and is read-only"):
            outputs.check_writable(path)


def test_a_locked_directory_refuses_a_second_lock_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    with outputs.lock_directory(out):
        with pytest.raises(outputs.OutputError) as refused:
            with outputs.lock_directory(out):
                pass
        message = str(refused.value)
        assert message.startswith(f"{out}: in use by another run (pid {os.getpid()} on ")
        assert "\n" not in message
    with outputs.lock_directory(out):  # released with the block
        pass


def test_a_lock_on_a_new_directory_that_fails_removes_it(tmp_path):
    with pytest.raises(RuntimeError):
        with outputs.lock_directory(tmp_path / "run"):
            raise RuntimeError
    assert _listing(tmp_path) == []


# ----------------------------------------------------------------------------
# The commands
# ----------------------------------------------------------------------------

def _nan_embed(params, images):
    return jnp.full((images.shape[0], 8), jnp.nan, jnp.float32)


# The models each test loaded, by name: a command that fails before any work
# loads none.
_LOADS = []


def _planted_loader(name, embed_fn):
    """A `register_model` loader of `embed_fn` on 32x32 crops, labelled "planted"."""
    params = {"const": jnp.full((16,), 0.2, jnp.float32), "offset": jnp.float32(0.5)}

    def load(weights, *, dtype):
        _LOADS.append(name)
        return models.FaceModel(name, "planted", embed_fn, params, 32, align.ARCFACE_112, 0.2,
                                (), None, {"model": name})
    return load


@pytest.fixture(scope="module", autouse=True)
def planted_models():
    """--model planted (a region read-out) and --model planted_nan, for this module's tests."""
    planted = {"planted": region_embed((8, 20, 6, 26)), "planted_nan": _nan_embed}
    for name, embed_fn in planted.items():
        models.register_model(name, _planted_loader(name, embed_fn))
    yield
    for name in planted:
        models.unregister_model(name)


@pytest.fixture
def loads():
    _LOADS.clear()
    return _LOADS


@pytest.fixture
def faces_32(tmp_path_factory):
    directory = tmp_path_factory.mktemp("faces")
    paths = []
    for role, face in zip(("probe", "mate", "nonmate"), synthetic_faces(0, size=32)):
        Image.fromarray(np.round(face * 255).astype(np.uint8)).save(directory / f"{role}.png")
        paths.append(str(directory / f"{role}.png"))
    return paths


def _explain(faces, out, *extra, model="planted"):
    probe, mate, nonmate = faces
    return cli.main(["explain", "--model", model, "--probe", probe, "--mate", mate,
                     "--nonmate", nonmate, "--out", str(out), *extra, *_TINY])


def test_explain_checks_every_output_before_any_work_and_writes_nothing(
        tmp_path, loads, capsys, faces_32):
    # A name the filesystem refuses passes every check that only looks; it
    # failed after the maps were computed, with the figure already written.
    scores = tmp_path / ("s" * 300 + ".json")
    status = _explain(faces_32, tmp_path / "fig.png", "--json", str(scores))
    assert_one_error_line(status, capsys, "file name too long")
    assert loads == [] and _listing(tmp_path) == []


def test_explain_writes_all_its_outputs_together(tmp_path, capsys, faces_32):
    status = _explain(faces_32, tmp_path / "fig.png", "--json", str(tmp_path / "s.json"),
                      "--curves", str(tmp_path / "c.png"), "--save-maps",
                      str(tmp_path / "m.npz"))
    out, err = capsys.readouterr()
    assert status == 0, err
    assert _listing(tmp_path) == ["c.png", "fig.png", "m.npz", "s.json"]
    assert out.splitlines()[-1] == (f"wrote {tmp_path / 'fig.png'}, {tmp_path / 's.json'}, "
                                    f"{tmp_path / 'c.png'}, {tmp_path / 'm.npz'}")


@pytest.mark.parametrize("method", ["srise", "rise"])
def test_explain_with_a_nan_model_is_one_error_about_the_model(tmp_path, capsys, faces_32,
                                                               method):
    # It used to draw the figure, then fail writing the JSON ("Out of range
    # float values are not JSON compliant"), leaving the figure behind.
    status = _explain(faces_32, tmp_path / "fig.png", "--json", str(tmp_path / "s.json"),
                      "--save-maps", str(tmp_path / "m.npz"), "--method", method,
                      model="planted_nan")
    assert_one_error_line(status, capsys, "planted: the model returned NaN or infinite "
                                          "embeddings for the probe, mate and nonmate: "
                                          "the weights may be corrupt")
    assert _listing(tmp_path) == []


def test_demo_with_a_nan_model_leaves_no_directory(tmp_path, capsys):
    status = cli.main(["demo", "--model", "planted_nan", "--out", str(tmp_path / "demo"),
                       *_TINY])
    assert_one_error_line(status, capsys, "the model returned NaN or infinite embeddings")
    assert _listing(tmp_path) == []


def test_demo_refuses_an_out_that_is_a_file_before_any_work(tmp_path, loads, capsys):
    (tmp_path / "demo").write_text("not a directory")
    status = cli.main(["demo", "--model", "planted_nan", "--out", str(tmp_path / "demo"),
                       *_TINY])
    assert_one_error_line(status, capsys, "exists and is not a directory")
    assert loads == []


# ----------------------------------------------------------------------------
# srise-jax align
# ----------------------------------------------------------------------------

def _sample_photo(name):
    return Path(str(importlib.resources.files("srise_jax") / "assets" / "faces" / f"{name}.jpg"))


def test_align_refuses_a_crop_size_above_the_maximum_in_one_line(tmp_path, capsys):
    # --size 100000 died in XLA (RESOURCE_EXHAUSTED) with a long traceback.
    status = cli.main(["align", str(_sample_photo("obama")), "--out", str(tmp_path / "crops"),
                       "--size", str(images.MAX_CROP_SIZE + 1)])
    assert_one_error_line(status, capsys, "argument --size: must be an integer in "
                                          f"[1, {images.MAX_CROP_SIZE}], got '1025'")
    assert _listing(tmp_path) == []


def test_align_reports_a_low_detection_score_in_its_line_and_as_a_warning(tmp_path, capsys):
    source = _sample_photo("obama")
    path = tmp_path / "sideways.png"
    # As tests/test_align.py's _sideways_obama: a quarter turn, 630 wide: 0.78.
    with Image.open(source) as photo:
        turned = photo.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    turned.resize((630, round(turned.height * 630 / turned.width)),
                  Image.Resampling.BILINEAR).save(path)
    status = cli.main(["align", str(path), str(source), "--out", str(tmp_path / "crops")])
    out, err = capsys.readouterr()
    assert status == 0  # aligned, with a doubt: not a failure
    sideways, upright = out.splitlines()
    assert sideways.startswith(f"{path}: 1 face, aligned the largest (score 0.77")
    assert sideways.endswith(f", below {align.MIN_CONFIDENT_SCORE:g}: check the crop) -> "
                             f"{tmp_path / 'crops' / 'sideways.png'}")
    assert "check the crop" not in upright
    (warning,) = err.splitlines()
    assert warning.startswith(f"srise-jax: warning: {path}: the aligned face's detection "
                              "score is 0.78, below 0.9")


def test_atomic_file_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with outputs.atomic_file(path) as file:
            file.write(b"partial")
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_atomic_file_has_ordinary_permissions(tmp_path):
    path = tmp_path / "out.bin"
    with outputs.atomic_file(path) as file:
        file.write(b"new")
    assert path.read_bytes() == b"new"
    ordinary = tmp_path / "ordinary.bin"
    ordinary.write_bytes(b"")
    assert path.stat().st_mode == ordinary.stat().st_mode
