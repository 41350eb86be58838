"""Convert facenet-pytorch's MTCNN weights (P-Net, R-Net, O-Net) into one ``.npz`` for srise-jax.

Usage::

    python -m weights_conversion.mtcnn facenet_pytorch-2.6.0-py3-none-any.whl OUT.npz [--overwrite]

The source is the facenet-pytorch wheel itself (``pip download --no-deps
facenet-pytorch==2.6.0``; no need to install it) or a directory holding
``pnet.pt``, ``rnet.pt`` and ``onet.pt`` (directly or under
``facenet_pytorch/data/``). Each is a plain state dict, read with
``torch.load(weights_only=True)`` only; torch is imported lazily. The output
holds float32 arrays in Flax layout under keys like ``pnet/conv1/kernel``,
the file ``srise_jax.models.load_mtcnn`` reads.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from srise_jax.models.conversion import (
    ConversionError,
    as_float32,
    key_list,
    to_flax_layout,
    torch_load,
    torch_shape,
)
from srise_jax.models.mtcnn import NETS, abstract_variables, npz_key
from weights_conversion.common import run_conversion

_TORCH_LEAF = {"kernel": "weight", "negative_slope": "weight", "bias": "bias"}
# Where the state dicts sit inside the wheel (and inside an unpacked wheel).
_PACKAGE_DATA = "facenet_pytorch/data"
# The zip format's earliest date: members carry no build time.
_NPZ_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


def _read_sources(source: Path) -> dict[str, tuple[str, bytes]]:
    """``net -> (where, bytes)`` of the three ``.pt`` files in a wheel or a directory."""
    found = {}
    if source.is_file():
        try:
            with zipfile.ZipFile(source) as wheel:
                members = set(wheel.namelist())
                for net in NETS:
                    member = f"{_PACKAGE_DATA}/{net}.pt"
                    if member not in members:
                        raise ConversionError(f"{source}: no {member} inside; is this the facenet-pytorch wheel?")
                    found[net] = (f"{source}:{member}", wheel.read(member))
        except zipfile.BadZipFile:
            raise ConversionError(f"{source}: not a wheel (zip) file") from None
        return found
    if not source.is_dir():
        raise ConversionError(f"{source}: no such file or directory")
    for net in NETS:
        candidates = [source / f"{net}.pt", source / _PACKAGE_DATA / f"{net}.pt"]
        path = next((path for path in candidates if path.is_file()), None)
        if path is None:
            raise ConversionError(f"{source}: no {net}.pt (looked for {candidates[0]} and {candidates[1]})")
        found[net] = (str(path), path.read_bytes())
    return found


def convert_state_dicts(state_dicts: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The ``.npz`` arrays for facenet-pytorch's three MTCNN state dicts.

    Args:
      state_dicts: ``{"pnet": ..., "rnet": ..., "onet": ...}``, each a state
        dict of torch tensors or NumPy arrays with facenet-pytorch's names.

    Returns:
      ``npz key -> float32 array`` in Flax layout (conv ``(kh, kw, in, out)``,
      dense ``(in, out)``), e.g. ``"rnet/dense4/kernel"``.

    Raises:
      ConversionError: a net is missing, a key is missing or unexpected, a
        shape differs, or a value is not floating point.
    """
    expected_leaves = traverse_util.flatten_dict(abstract_variables())
    arrays = {}
    for net in NETS:
        state = state_dicts.get(net)
        if not isinstance(state, Mapping):
            raise ConversionError(f"{net}: expected a state dict, found {type(state).__name__}")
        leaves = {path: leaf for path, leaf in expected_leaves.items() if path[0] == net}
        torch_keys = {path: f"{path[-2]}.{_TORCH_LEAF[path[-1]]}" for path in leaves}
        expected = {torch_keys[path]: torch_shape(leaf.shape) for path, leaf in leaves.items()}
        missing = [key for key in expected if key not in state]
        if missing:
            raise ConversionError(f"{net}: {key_list('missing', missing, expected)}")
        unexpected = [key for key in state if key not in expected]
        if unexpected:
            shapes = {key: tuple(getattr(state[key], "shape", ())) for key in unexpected}
            raise ConversionError(f"{net}: {key_list('unexpected', unexpected, shapes)}")
        for path, key in torch_keys.items():
            array = as_float32(state[key], f"{net}.{key}")
            if array.shape != expected[key]:
                raise ConversionError(f"{net}: key {key!r}: expected shape {expected[key]}, found {array.shape}")
            arrays[npz_key(path)] = to_flax_layout(array)
    return arrays


def _write_npz(stream: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """An ``.npz`` that ``np.load`` reads, byte for byte the same for the same arrays.

    ``np.savez`` stamps each member with the current time; fixed stamps and a
    sorted order let anyone check the bundled file's sha256 by converting again.
    """
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            member = zipfile.ZipInfo(f"{key}.npy", date_time=_NPZ_TIMESTAMP)
            with archive.open(member, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.ascontiguousarray(arrays[key]), allow_pickle=False)


def _write_atomically(arrays: Mapping[str, np.ndarray], out: Path) -> None:
    """Write the ``.npz`` beside ``out`` under a temporary name, then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            _write_npz(stream, arrays)
        os.chmod(staging, 0o644)  # mkstemp's 0600 would hide a bundled asset from other users
        os.replace(staging, out)
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def convert_file(source: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Convert the facenet-pytorch wheel (or a directory of its ``.pt`` files) into an ``.npz``.

    Args:
      source: ``facenet_pytorch-*.whl``, or a directory with ``pnet.pt``,
        ``rnet.pt``, ``onet.pt`` (directly or under ``facenet_pytorch/data/``).
      out: the ``.npz`` to write (for ``load_mtcnn(out)``).
      overwrite: replace an existing ``out``.

    Returns:
      ``out``, resolved.

    Raises:
      ConversionError: the source cannot be read or converted, or ``out``
        exists without ``overwrite``; ``out`` is then left as it was.
    """
    source = Path(source)
    out = Path(out).resolve()
    if out.exists() and not overwrite:
        raise ConversionError(f"{out}: already exists; pass --overwrite to replace it")
    state_dicts = {net: torch_load(io.BytesIO(data), where=where)
                   for net, (where, data) in _read_sources(source).items()}
    try:
        arrays = convert_state_dicts(state_dicts)
    except ConversionError as err:
        raise ConversionError(f"{source}: {err}") from None
    _write_atomically(arrays, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: convert once; prints ``error: ...`` and returns 2 on failure.

    Args:
      argv: arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
      The exit status: 0 on success, 2 on a conversion error.
    """
    parser = argparse.ArgumentParser(
        prog="python -m weights_conversion.mtcnn",
        description="Convert facenet-pytorch's MTCNN weights (pnet/rnet/onet.pt) into one .npz for srise-jax.",
    )
    parser.add_argument(
        "source", type=Path, help="facenet_pytorch-*.whl, or a directory with pnet.pt, rnet.pt, onet.pt"
    )
    parser.add_argument("out", type=Path, help="the .npz to write, e.g. srise_jax/assets/mtcnn.npz")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    return run_conversion(lambda: convert_file(args.source, args.out, overwrite=args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
