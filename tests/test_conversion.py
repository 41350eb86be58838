"""Tests for srise_jax.models.arcface_torch (and its command line, weights_conversion.arcface) and load_arcface.

The reference numbers come from tests/torch_iresnet.py, an independent PyTorch
iResNet with insightface's state-dict names, run in eval mode.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from torch_iresnet import TorchIResNet, randomize_, torch_embed

from srise_jax.models import ARCH_BLOCKS, arcface_torch, conversion, dlib_dat, iresnet_embed_fn, load_arcface
from srise_jax.models.arcface_torch import convert_file, convert_state_dict, infer_arch
from srise_jax.models.conversion import ConversionError
from weights_conversion.arcface import main

torch.set_num_threads(1)  # the test machine's cores are shared

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((2, 112, 112, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def r18_torch():
    return randomize_(TorchIResNet(ARCH_BLOCKS["r18"]), seed=0)


@pytest.fixture(scope="module")
def r18_state(r18_torch):
    return r18_torch.state_dict()


@pytest.fixture
def r18_pth(tmp_path, r18_state):
    path = tmp_path / "backbone.pth"
    torch.save(r18_state, path)
    return path


def _embed(arch, variables, images):
    return np.asarray(jax.jit(iresnet_embed_fn(arch))(variables, images))


def _assert_parity(actual, expected):
    """Relative L2 error below 1e-4, on the embeddings and on their difference.

    The difference isolates the image-dependent part, which the biases of
    ``fc`` and ``features`` could otherwise dominate.
    """
    def relative(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    assert relative(actual, expected) < 1e-4
    assert relative(actual[0] - actual[1], expected[0] - expected[1]) < 1e-4


def _meta_state_dict(arch):
    """Keys and shapes of an ``arch`` state dict, without memory (meta device)."""
    with torch.device("meta"):
        return TorchIResNet(ARCH_BLOCKS[arch]).state_dict()


# --- parity with the PyTorch reference ---------------------------------------


@pytest.mark.parametrize("arch", ["r18", pytest.param("r50", marks=pytest.mark.slow)])
def test_converted_embeddings_match_torch(arch, images, r18_torch):
    model = r18_torch if arch == "r18" else randomize_(TorchIResNet(ARCH_BLOCKS[arch]), seed=1)
    variables = convert_state_dict(model.state_dict())
    _assert_parity(_embed(arch, variables, images), torch_embed(model, images))


def test_fp16_state_dict_matches_torch_on_rounded_weights(images, r18_state):
    half = {key: value.half() if value.is_floating_point() else value for key, value in r18_state.items()}
    # The reference runs in float32 on the same fp16-rounded weights.
    rounded = TorchIResNet(ARCH_BLOCKS["r18"])
    rounded.load_state_dict({key: value.float() if value.is_floating_point() else value for key, value in half.items()})
    rounded.eval()
    _assert_parity(_embed("r18", convert_state_dict(half), images), torch_embed(rounded, images))


def test_module_prefix_and_numpy_arrays_convert_alike(r18_state):
    direct = convert_state_dict(r18_state)
    prefixed = convert_state_dict({f"module.{key}": value for key, value in r18_state.items()})
    as_numpy = convert_state_dict({key: value.numpy() for key, value in r18_state.items()})
    for other in (prefixed, as_numpy):
        jax.tree.map(np.testing.assert_array_equal, direct, other)


@pytest.mark.parametrize("arch", list(ARCH_BLOCKS))
def test_arch_is_inferred_from_block_counts(arch):
    state = _meta_state_dict(arch)
    assert infer_arch(state) == arch
    assert infer_arch({f"module.{key}": value for key, value in state.items()}) == arch


def test_unknown_block_counts_are_refused():
    state = {key: value for key, value in _meta_state_dict("r18").items() if not key.startswith("layer4.1.")}
    with pytest.raises(ConversionError, match=r"blocks per stage \(2, 2, 2, 1\).*match none of r18"):
        infer_arch(state)


def test_explicit_arch_must_match_the_keys(r18_state):
    with pytest.raises(ConversionError, match=r"architecture r34 has blocks per stage \(3, 4, 6, 3\), .* \(2, 2, 2, 2\)"):
        convert_state_dict(r18_state, arch="r34")


# --- files: round trip -------------------------------------------------------


def test_round_trip_through_files_gives_the_same_embeddings(tmp_path, r18_pth, r18_state, images):
    out = convert_file(r18_pth, tmp_path / "r18")
    assert json.loads((out / "metadata.json").read_text())["arch"] == "r18"
    assert json.loads((out / "metadata.json").read_text())["source"] == "backbone.pth"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    embed_fn, params = load_arcface(out)
    assert embed_fn is iresnet_embed_fn("r18")
    np.testing.assert_array_equal(
        _embed("r18", params, images), _embed("r18", convert_state_dict(r18_state), images)
    )


def test_existing_output_is_kept_unless_overwrite(tmp_path, r18_pth):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match=r"out: already exists and is not empty; pass --overwrite"):
        convert_file(r18_pth, out)
    assert (out / "keep.txt").read_text() == "mine"
    convert_file(r18_pth, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "variables"]


# --- files: bad input ---------------------------------------------------------


class _Foreign:
    """A custom class: its pickle is not a state dict."""


class _RunsCode:
    """Unpickling this would create ``marker``; weights_only must refuse it first."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _truncated(path, state):
    torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bad_shape(state):
    bad = dict(state)
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    return bad


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (_truncated, r"not a readable PyTorch file \(truncated\?\)"),
        (
            lambda path, state: torch.save(_bad_shape(state), path),
            r"key 'layer1.0.conv1.weight': expected shape \(64, 64, 3, 3\), found \(64, 64, 1, 1\)",
        ),
        (
            lambda path, state: torch.save({k: v for k, v in state.items() if k != "fc.bias"}, path),
            r"missing key: 'fc.bias' expected shape \(512,\)",
        ),
        (
            lambda path, state: torch.save({**state, "head.weight": torch.zeros(3, 2)}, path),
            r"unexpected key: 'head.weight' found shape \(3, 2\)",
        ),
        (lambda path, state: torch.save(_Foreign(), path), r"refused by torch.load\(weights_only=True\)"),
        (lambda path, state: path.write_bytes(pickle.dumps(_Foreign())), r"refused by torch.load\(weights_only=True\)"),
        (lambda path, state: torch.save([state["fc.bias"]], path), r"expected a state dict .*, found list"),
    ],
    ids=["truncated", "wrong-shape", "missing-key", "unexpected-key", "foreign-torch-save", "foreign-pickle", "list"],
)
def test_bad_files_raise_one_clear_error_and_write_nothing(tmp_path, r18_state, write, message):
    pth = tmp_path / "bad.pth"
    write(pth, r18_state)
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=message) as info:
        convert_file(pth, out)
    assert str(info.value).startswith(f"{pth}: ") and "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (np.random.default_rng(0).bytes(4096), "neither the zip archive torch.save writes nor a pickle"),
        (b"layer1.0.conv1.weight 0.5 0.25\n" * 8, "neither the zip archive torch.save writes nor a pickle"),
        (b"", "an empty file"),
    ],
    ids=["random-bytes", "text", "empty"],
)
def test_files_that_are_no_pytorch_checkpoint_are_named_so(tmp_path, content, detail):
    pth = tmp_path / "backbone.pth"
    pth.write_bytes(content)
    with pytest.raises(ConversionError) as info:
        convert_file(pth, tmp_path / "out")
    # Not "holds objects other than tensors": that is for real pickles of other objects.
    assert str(info.value) == f"{pth}: not a PyTorch checkpoint ({detail})"
    assert not (tmp_path / "out").exists()


def test_code_in_a_pickle_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    pth = tmp_path / "evil.pth"
    torch.save(_RunsCode(marker), pth)
    with pytest.raises(ConversionError, match="refused by torch.load"):
        convert_file(pth, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_main_reports_one_line_and_returns_2(tmp_path, capsys):
    assert main([str(tmp_path / "absent.pth"), str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {tmp_path / 'absent.pth'}: no such file\n"
    assert not (tmp_path / "out").exists()


def test_module_command_line_exits_2_with_one_line(tmp_path):
    pth = tmp_path / "list.pth"
    torch.save([1, 2], pth)
    result = subprocess.run(
        [sys.executable, "-m", "weights_conversion.arcface", str(pth), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"},  # e.g. a double import under -m
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "found list" in result.stderr
    assert not (tmp_path / "out").exists()


# --- load_arcface on damaged directories --------------------------------------


def test_load_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such checkpoint directory"):
        load_arcface(tmp_path / "nowhere")


def test_load_directory_without_metadata_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.json: missing"):
        load_arcface(tmp_path)


def test_load_corrupt_checkpoints_raise_value_error(tmp_path, r18_pth):
    out = convert_file(r18_pth, tmp_path / "r18")
    (out / "metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match="metadata.json: corrupt metadata"):
        load_arcface(out)
    (out / "metadata.json").write_text(json.dumps({"format": "srise-jax-arcface", "format_version": 1, "arch": "r50"}))
    # An r18 checkpoint labelled r50: the stored shapes disagree with the abstract tree.
    with pytest.raises(ValueError, match=r"variables: corrupt r50 checkpoint"):
        load_arcface(out)


def test_converter_modules_keep_their_old_names():
    # The conversion moved into srise_jax.models; code that imported it from
    # weights_conversion must get the very same objects.
    import weights_conversion.arcface
    import weights_conversion.common
    import weights_conversion.dlib

    assert weights_conversion.arcface.convert_file is arcface_torch.convert_file
    assert weights_conversion.arcface.ConversionError is conversion.ConversionError
    assert weights_conversion.common.ConversionError is conversion.ConversionError
    assert weights_conversion.common.check_destination is conversion.check_destination
    assert weights_conversion.dlib.dat_to_variables is dlib_dat.dat_to_variables
    assert weights_conversion.dlib.OFFICIAL_SHA256 == dlib_dat.OFFICIAL_SHA256
