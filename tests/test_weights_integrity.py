"""Damaged, foreign and unwritable weights: each is one clear error (or a rebuilt cache), never garbage.

Covers the weights items of issue 12's probe: arrays checked against the
SHA-256 recorded at save time, the dlib .dat against the official file's hash,
orbax's teardown noise on a truncated checkpoint, and converters writing into
taken or unwritable directories.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from srise_jax import cli
from srise_jax.models import checkpoint, dlib_weights, load_arcface, load_dlib
from srise_jax.models.dlib_dat import OFFICIAL_SHA256, DatReader, dat_to_variables, read_dat
from weights_conversion import arcface as arcface_conversion
from weights_conversion import dlib as dlib_conversion

REPO_ROOT = Path(__file__).resolve().parents[1]


def _model_file():
    try:
        return dlib_weights.model_file()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        pytest.skip(f"face_recognition_models is not installed ({err})")


@pytest.fixture(scope="module")
def dlib_cache(tmp_path_factory):
    """A converted dlib cache and its variables, to copy and damage."""
    _model_file()
    cache = tmp_path_factory.mktemp("dlib") / "cache"
    _, params = load_dlib(cache=cache)
    return cache, params


def _copy(directory, tmp_path):
    return Path(shutil.copytree(directory, tmp_path / "copy"))


def _metadata(directory):
    return json.loads((directory / checkpoint.METADATA_FILE).read_text())


def _raw_variables(directory):
    """The stored arrays, read with orbax directly (no checksum check), as NumPy."""
    with ocp.StandardCheckpointer() as checkpointer:
        return jax.tree.map(np.asarray, checkpointer.restore(directory / checkpoint.VARIABLES_DIR))


def _rewrite_variables(directory, path, edit):
    """Replace the checkpoint's variables by a well-formed copy whose array at `path` is `edit`ed.

    The files stay perfectly readable for orbax, and their digests are
    re-recorded: only the array checksums can tell.
    """
    variables = _raw_variables(directory)
    flat = {jax.tree_util.keystr(p, simple=True, separator="/"): p
            for p, _ in jax.tree_util.tree_flatten_with_path(variables)[0]}
    variables = jax.tree_util.tree_map_with_path(
        lambda p, leaf: edit(leaf) if p == flat[path] else leaf, variables)
    shutil.rmtree(directory / checkpoint.VARIABLES_DIR)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / checkpoint.VARIABLES_DIR, variables)
    metadata_path = directory / checkpoint.METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    metadata[checkpoint.FILE_CHECKSUMS_KEY] = checkpoint.file_checksums(
        directory / checkpoint.VARIABLES_DIR)
    metadata_path.write_text(json.dumps(metadata))


def _flip_one_bit(array):
    flipped = array.copy()
    flipped.reshape(-1).view(np.uint32)[len(flipped.reshape(-1)) // 2] ^= 1 << 30  # an exponent bit
    return flipped


def _flip_bytes_in_largest_file(directory, count=4096):
    files = [p for p in (directory / checkpoint.VARIABLES_DIR).rglob("*") if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    largest.write_bytes(bytes(data))


def _drop_checksums(directory):
    metadata = _metadata(directory)
    del metadata[checkpoint.CHECKSUMS_KEY]
    (directory / checkpoint.METADATA_FILE).write_text(json.dumps(metadata))


def _assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


# ------------------------------------------------------------ recorded checksums


def test_every_array_has_its_sha256_in_the_metadata(weights):
    recorded = _metadata(weights)[checkpoint.CHECKSUMS_KEY]
    # Recomputed here with hashlib over each stored array's C-order bytes.
    expected = {jax.tree_util.keystr(path, simple=True, separator="/"):
                hashlib.sha256(np.ascontiguousarray(leaf).tobytes()).hexdigest()
                for path, leaf in jax.tree_util.tree_flatten_with_path(_raw_variables(weights))[0]}
    assert recorded == expected
    assert "params/fc/kernel" in recorded


def test_arcface_array_changed_on_disk_is_refused_naming_directory_and_array(weights, tmp_path):
    ckpt = _copy(weights, tmp_path)
    _rewrite_variables(ckpt, "params/layer2/0/conv1/kernel", _flip_one_bit)
    with pytest.raises(ValueError) as info:
        load_arcface(ckpt)
    message = str(info.value)
    assert message.startswith(f"{ckpt}: array params/layer2/0/conv1/kernel does not match its checksum")
    assert "\n" not in message


def test_arcface_flipped_file_bytes_never_load(weights, tmp_path):
    # Where the flipped block lands decides whether orbax fails to decode it
    # or reads garbage; either way the load must fail, naming the checkpoint.
    ckpt = _copy(weights, tmp_path)
    _flip_bytes_in_largest_file(ckpt)
    with pytest.raises(ValueError, match=f"^{ckpt}"):
        load_arcface(ckpt)


def test_arcface_checkpoint_without_checksums_loads_with_a_warning(weights, tmp_path):
    ckpt = _copy(weights, tmp_path)
    _drop_checksums(ckpt)
    with pytest.warns(UserWarning, match="records no checksums .* cannot be verified"):
        _, params = load_arcface(ckpt)
    _assert_same(params, _raw_variables(weights))


def test_dlib_cache_with_a_changed_array_is_rebuilt_with_a_warning(dlib_cache, tmp_path):
    cache, reference = dlib_cache
    damaged = _copy(cache, tmp_path)
    _rewrite_variables(damaged, "params/block5/conv2/kernel", _flip_one_bit)
    with pytest.warns(UserWarning, match="damaged cache of the dlib ResNet.*params/block5/conv2/kernel"):
        _, params = load_dlib(cache=damaged)
    _assert_same(params, reference)
    _, again = load_dlib(cache=damaged)  # the rebuilt cache is sound
    _assert_same(again, reference)


def test_dlib_cache_with_flipped_file_bytes_is_rebuilt(dlib_cache, tmp_path):
    cache, reference = dlib_cache
    damaged = _copy(cache, tmp_path)
    _flip_bytes_in_largest_file(damaged)
    with pytest.warns(UserWarning, match="damaged cache of the dlib ResNet"):
        _, params = load_dlib(cache=damaged)
    _assert_same(params, reference)


def test_dlib_cache_without_checksums_is_rebuilt(dlib_cache, tmp_path):
    cache, reference = dlib_cache
    old = _copy(cache, tmp_path)
    _drop_checksums(old)
    _, params = load_dlib(cache=old)
    assert checkpoint.CHECKSUMS_KEY in _metadata(old)
    _assert_same(params, reference)


# ------------------------------------------------------------------ the .dat


def test_official_sha256_is_that_of_the_installed_package_file():
    # face_recognition_models==0.3.0 is the pinned [demo] extra.
    assert dlib_weights.sha256_file(_model_file()) == OFFICIAL_SHA256


def _own_dat(tmp_path):
    """The official .dat with one weight changed: well formed, but not dlib's file."""
    source = _model_file()
    fc = next(layer for layer in read_dat(source) if layer.kind == "fc_2")
    data = bytearray(source.read_bytes())
    reader = DatReader(bytes(data), "dat")
    reader.pos = fc.offset
    reader.string("type")
    reader.int_("outputs")
    reader.int_("inputs")
    assert reader.int_("tensor version") == 2  # raw little-endian float32 values
    for what in ("n", "k", "nr", "nc"):
        reader.int_(what)
    data[reader.pos] ^= 0x01  # lowest mantissa byte of the fc's first raw float32
    own = tmp_path / "own.dat"
    own.write_bytes(bytes(data))
    return own


def test_own_dat_converts_with_one_warning_line(tmp_path, capsys):
    own = _own_dat(tmp_path)
    assert dlib_conversion.main([str(own), str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert out == f"wrote {tmp_path / 'out'}\n"
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"warning: {own}: not the dlib_face_recognition_resnet_model_v1.dat "
                          "of face_recognition_models 0.3.0")


def test_official_dat_converts_without_warning(recwarn):
    dat_to_variables(_model_file())
    assert not [w for w in recwarn if "face_recognition_models" in str(w.message)]


# ---------------------------------------------------- truncated checkpoint noise


def test_truncated_checkpoint_gives_one_stderr_line(weights, tmp_path):
    ckpt = _copy(weights, tmp_path)
    files = [p for p in (ckpt / checkpoint.VARIABLES_DIR).rglob("*") if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    faces = []
    for i, value in enumerate((60, 120, 180)):
        faces.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((112, 112, 3), value, np.uint8)).save(faces[-1])
    figure = tmp_path / "fig.png"
    # A failed orbax restore left abandoned reads that printed up to ~1000
    # lines of asyncio tracebacks and log records from other threads and the
    # garbage collector, at times of their own; the recorded file digests now
    # stop a damaged file before orbax reads it. A separate process that waits
    # and collects before exiting would show any such noise.
    command = ("import gc, sys, time; from srise_jax.cli import main; status = main(sys.argv[1:]); "
               "time.sleep(0.5); gc.collect(); sys.exit(status)")
    result = subprocess.run(
        [sys.executable, "-c", command,
         "explain", "--weights", str(ckpt), "--probe", str(faces[0]), "--mate", str(faces[1]),
         "--nonmate", str(faces[2]), "--out", str(figure), "--num-masks", "8", "--batch-size", "8"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.splitlines()) == 1, result.stderr[-2000:]
    assert result.stderr.startswith(f"srise-jax: error: {ckpt / checkpoint.VARIABLES_DIR}: corrupt r18 checkpoint")
    assert not figure.exists()


# ------------------------------------------------------- unwritable destinations


def _one_error_line(capsys, prefix="error: "):
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(prefix)
    return err


def test_dlib_converter_refuses_a_taken_directory_in_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert dlib_conversion.main([str(_model_file()), str(out)]) == 2
    err = _one_error_line(capsys)
    assert f"{out}: already exists and is not empty; pass --overwrite" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_dlib_converter_overwrite_replaces_a_taken_directory(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert dlib_conversion.main([str(_model_file()), str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [checkpoint.METADATA_FILE, checkpoint.VARIABLES_DIR]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind


def _run_converter(kind, source, out):
    if kind == "dlib":
        return dlib_conversion.main([str(source), str(out)])
    if kind == "arcface":
        return arcface_conversion.main([str(source), str(out)])
    return cli.main(["convert", str(source), str(out)])


@pytest.mark.parametrize("kind", ["dlib", "arcface", "srise-jax convert"])
def test_destination_under_a_file_is_one_line_and_exit_2(kind, tmp_path, r18_pth, capsys):
    source = _model_file() if kind == "dlib" else r18_pth
    (tmp_path / "file").write_text("not a directory")
    out = tmp_path / "file" / "out"
    assert _run_converter(kind, source, out) == 2
    prefix = "srise-jax: error: " if kind.startswith("srise-jax") else "error: "
    err = _one_error_line(capsys, prefix)
    assert f"{out}: cannot create it ({tmp_path / 'file'} is not a directory)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
@pytest.mark.parametrize("kind", ["dlib", "arcface", "srise-jax convert"])
def test_read_only_destination_is_one_line_and_exit_2(kind, tmp_path, r18_pth, capsys):
    source = _model_file() if kind == "dlib" else r18_pth
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        assert _run_converter(kind, source, parent / "out") == 2
        err = _one_error_line(capsys, "srise-jax: error: " if kind.startswith("srise-jax") else "error: ")
        assert f"{parent / 'out'}: cannot create it (Permission denied" in err
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_unwritable_staging_directory_names_the_destination(monkeypatch, tmp_path):
    # What a read-only parent does for a user who is not root (see above).
    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(Path(dir) / ".out-x.tmp"))

    monkeypatch.setattr(checkpoint.tempfile, "mkdtemp", refuse)
    with pytest.raises(OSError, match=rf"^{tmp_path / 'out'}: cannot create it \(Permission denied: {tmp_path}\)$"):
        checkpoint.save_checkpoint({"a": np.zeros(2, np.float32)}, tmp_path / "out",
                                   metadata={"format": "x", "format_version": 1})
    assert list(tmp_path.iterdir()) == []
