"""insightface ``arcface_torch`` iResNet state dicts -> Flax variables and srise-jax checkpoints.

The ``.pth`` is read with ``torch.load(weights_only=True)`` only: a file that
holds anything but tensors and plain containers is refused, never unpickled.
torch is imported when a file is read, so the rest of srise-jax works without
it. ``python -m weights_conversion.arcface`` and ``srise-jax convert`` are
command lines over `convert_file`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
from flax import traverse_util

from srise_jax.models.arcface import save_arcface
from srise_jax.models.conversion import (
    ConversionError,
    as_float32,
    check_destination,
    key_list,
    to_flax_layout,
    torch_load,
    torch_shape,
)
from srise_jax.models.iresnet import ARCH_BLOCKS, abstract_variables

# Flax leaf name -> PyTorch leaf name (the module paths are the same).
_TORCH_LEAF = {
    "kernel": "weight",
    "scale": "weight",
    "negative_slope": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
# BatchNorm's step counter: meaningless in inference, present in every BN.
_BN_COUNTER = "num_batches_tracked"
_DATA_PARALLEL_PREFIX = "module."
_BLOCK_KEY = re.compile(r"layer([1-4])\.(\d+)\.")
# torch.save writes a zip archive (a local file header first); files of
# torch < 1.6 and plain pickles start with the PROTO opcode and a protocol number.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOLS = range(2, 6)


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict with ``nn.DataParallel``'s ``module.`` prefix removed, when every key has it."""
    keys = list(state_dict)
    bad = [key for key in keys if not isinstance(key, str)]
    if bad:
        raise ConversionError(f"state dict keys must be strings, found {bad[0]!r}")
    if keys and all(key.startswith(_DATA_PARALLEL_PREFIX) for key in keys):
        return {key[len(_DATA_PARALLEL_PREFIX) :]: value for key, value in state_dict.items()}
    return dict(state_dict)


def _blocks_per_stage(keys: Sequence[str]) -> tuple[int, int, int, int]:
    """Number of residual blocks in ``layer1``..``layer4``, counted from the keys."""
    counts = [0, 0, 0, 0]
    for key in keys:
        match = _BLOCK_KEY.match(key)
        if match:
            stage = int(match[1]) - 1
            counts[stage] = max(counts[stage], int(match[2]) + 1)
    return tuple(counts)


def infer_arch(state_dict: Mapping[str, Any]) -> str:
    """The iResNet architecture of a state dict, from its number of blocks per stage.

    Args:
      state_dict: PyTorch state dict, with or without the ``module.`` prefix.

    Returns:
      A key of ``ARCH_BLOCKS``.

    Raises:
      ConversionError: the block counts match no known architecture.
    """
    blocks = _blocks_per_stage(list(_strip_prefix(state_dict)))
    for arch, arch_blocks in ARCH_BLOCKS.items():
        if arch_blocks == blocks:
            return arch
    known = ", ".join(f"{arch} {arch_blocks}" for arch, arch_blocks in ARCH_BLOCKS.items())
    raise ConversionError(
        f"unknown architecture: blocks per stage {blocks} (from layer1..layer4 keys) match none of {known}"
    )


def _convert(state_dict: Any, arch: str | None) -> tuple[str, Any]:
    """``(arch, variables)`` for a state dict; see ``convert_state_dict``."""
    if not isinstance(state_dict, Mapping):
        raise ConversionError(
            f"expected a state dict (a mapping of parameter names to tensors), found {type(state_dict).__name__}"
        )
    state = _strip_prefix(state_dict)
    if arch is None:
        arch = infer_arch(state)
    elif arch not in ARCH_BLOCKS:
        raise ConversionError(f"unknown architecture {arch!r}; expected one of {list(ARCH_BLOCKS)}")
    elif (found := _blocks_per_stage(list(state))) != ARCH_BLOCKS[arch]:
        raise ConversionError(f"architecture {arch} has blocks per stage {ARCH_BLOCKS[arch]}, the state dict has {found}")

    flax_leaves = traverse_util.flatten_dict(abstract_variables(arch))
    torch_keys = {path: ".".join((*path[1:-1], _TORCH_LEAF[path[-1]])) for path in flax_leaves}
    expected = {torch_keys[path]: torch_shape(leaf.shape) for path, leaf in flax_leaves.items()}
    counters = {key.rsplit(".", 1)[0] + "." + _BN_COUNTER for key in expected if key.endswith(".running_mean")}

    missing = [key for key in expected if key not in state]
    if missing:
        raise ConversionError(key_list("missing", missing, expected))
    unexpected = [key for key in state if key not in expected and key not in counters]
    if unexpected:
        shapes = {key: tuple(getattr(state[key], "shape", ())) for key in unexpected}
        raise ConversionError(key_list("unexpected", unexpected, shapes))

    variables = {}
    for path, key in torch_keys.items():
        array = as_float32(state[key], key)
        if array.shape != expected[key]:
            raise ConversionError(f"key {key!r}: expected shape {expected[key]}, found {array.shape}")
        variables[path] = jnp.asarray(to_flax_layout(array))
    return arch, traverse_util.unflatten_dict(variables)


def convert_state_dict(state_dict: Mapping[str, Any], *, arch: str | None = None) -> Any:
    """Flax variables for an ``arcface_torch`` iResNet state dict.

    Args:
      state_dict: parameter name -> torch tensor or NumPy array (fp16 or fp32),
        optionally with ``nn.DataParallel``'s ``module.`` prefix.
      arch: one of ``ARCH_BLOCKS``; inferred from the keys when None.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (float32) for ``iresnet_embed_fn(arch)``.

    Raises:
      ConversionError: not a state dict, unknown architecture, missing or
        unexpected keys, wrong shapes or non-float weights.
    """
    return _convert(state_dict, arch)[1]


def _looks_like_torch_file(head: bytes) -> bool:
    """Whether a file's first bytes are those of a zip archive or a pickle, the two forms torch.load reads."""
    is_pickle = len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS
    return head.startswith(_ZIP_MAGIC) or is_pickle


def load_pth(pth: str | Path) -> Any:
    """Whatever a ``.pth`` file holds, read with ``torch.load(weights_only=True)``.

    Args:
      pth: a file written by ``torch.save``.

    Returns:
      Its content, usually a state dict of CPU tensors (checked by `convert_state_dict`).

    Raises:
      ConversionError: the file is missing, unreadable, no PyTorch file,
        damaged, holds objects other than tensors, or torch is not installed.
    """
    pth = Path(pth)
    if not pth.is_file():
        raise ConversionError(f"{pth}: no such file")
    try:
        with open(pth, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
    except OSError as err:
        raise ConversionError(f"{pth}: cannot read ({err.strerror})") from None
    # Otherwise torch's unpickler meets the first stray byte and reports a
    # file "with objects other than tensors", which random bytes are not.
    if not _looks_like_torch_file(head):
        what = "an empty file" if not head else "neither the zip archive torch.save writes nor a pickle"
        raise ConversionError(f"{pth}: not a PyTorch checkpoint ({what})")
    return torch_load(pth, where=str(pth), refusal_hint=(
        " (a pickled model or a foreign pickle); save model.state_dict() instead"))


def convert_file(
    pth: str | Path, out_dir: str | Path, *, arch: str | None = None, overwrite: bool = False
) -> Path:
    """Convert a ``.pth`` state dict into a checkpoint directory for ``load_arcface``.

    Args:
      pth: PyTorch state dict saved with ``torch.save(model.state_dict(), pth)``.
      out_dir: checkpoint directory to create.
      arch: one of ``ARCH_BLOCKS``; inferred from the keys when None.
      overwrite: replace an existing non-empty ``out_dir``.

    Returns:
      ``out_dir``, resolved.

    Raises:
      ConversionError: the file cannot be converted or ``out_dir`` is taken;
        ``out_dir`` is then left as it was (absent if it was absent).
      OSError: ``out_dir`` cannot be written (the message names it); nothing
        partial is left behind.
    """
    pth = Path(pth)
    out_dir = Path(out_dir).resolve()
    check_destination(out_dir, overwrite=overwrite)
    state_dict = load_pth(pth)
    try:
        arch, variables = _convert(state_dict, arch)
    except ConversionError as err:
        raise ConversionError(f"{pth}: {err}") from None
    return save_arcface(variables, out_dir, arch=arch, source=pth.name, overwrite=overwrite)
