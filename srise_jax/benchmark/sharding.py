"""A benchmark's jobs for a batch of triplets as one program over a 1-D device mesh.

Each job of a benchmark (one pair and side of a triplet) is independent of
the others, so `shard_over_triplets` runs a batch of triplets' jobs as one
vmapped program whose triplet axis is spread over `triplet_mesh`'s devices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np


# The mesh axis the triplets of a batch are spread over.
TRIPLET_AXIS = "triplets"


def triplet_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh with axis `TRIPLET_AXIS` over `devices` (default: all devices).

    In a multi-process run where each process takes its own triplets, pass
    `jax.local_devices()`.

    Args:
      devices: the devices of the mesh, in order; None: `jax.devices()`.

    Returns:
      A `jax.sharding.Mesh` of shape (len(devices),).
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.asarray(devices), (TRIPLET_AXIS,))


def shard_over_triplets(fn: Callable, mesh: jax.sharding.Mesh, *,
                        batched: Sequence[bool], multiple: int | None = None) -> Callable:
    """`fn` on a batch of triplets: vmapped, jitted, the batch axis sharded over `mesh`.

    Each job of a benchmark (one pair and side of a triplet) is independent
    of the others, so K triplets' jobs run as one vmapped program whose
    batch axis is split over the mesh (``NamedSharding(mesh, P("triplets"))``)
    while the unbatched arguments (params, threshold) are replicated. The
    returned function pads the batch by repeating its last entry, places
    the arguments with `jax.device_put`, and drops the padding's outputs.

    With at most one triplet per device the outputs are those of `fn` on
    each triplet alone, bit for bit (measured on CPU). With several per
    device, the device runs them as one vectorized program whose float
    rounding differs (maps within ~1e-7); Deletion/Insertion rank pixels by
    saliency, so near-tied pixels can swap and a fraction move by a pixel
    (an AUC by ~1e-4 on a 4-mask S-RISE map, which has many near ties).

    Example, for an `ExplainPart` and a `make_score_fn` score::

        explain = shard_over_triplets(part.fn, mesh, batched=(False, True, True, True))
        maps = explain(params, images, references, keys)   # {label: (K, h, w)}
        score = shard_over_triplets(score_fn, mesh,
                                    batched=(False, True, True, True, False, True))

    Args:
      fn: a function of positional arguments, e.g. ``ExplainPart.fn``
        ``(params, image, reference, key)`` or the score of `make_score_fn`.
      mesh: a mesh with the axis `TRIPLET_AXIS` (`triplet_mesh`).
      batched: per argument of `fn`, whether the call passes it stacked along
        a leading triplet axis (images, references, keys, maps) or once for
        all (params, threshold).
      multiple: pad every batch to a multiple of this (a multiple of the
        mesh's size; default: the mesh's size). Giving the largest batch
        size keeps one compiled program for a short last batch.

    Returns:
      ``call(*args)``: `fn`'s outputs stacked along the leading axis, one
      entry per triplet of the batch (the padding left out).
    """
    devices = mesh.shape[TRIPLET_AXIS]
    multiple = devices if multiple is None else multiple
    if multiple % devices:
        raise ValueError(f"multiple={multiple} is not a multiple of the mesh's "
                         f"{devices} devices")
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(TRIPLET_AXIS))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    shardings = tuple(split if b else whole for b in batched)
    compiled = jax.jit(jax.vmap(fn, in_axes=tuple(0 if b else None for b in batched)),
                       in_shardings=shardings, out_shardings=split)

    def call(*args):
        if len(args) != len(batched):
            raise TypeError(f"expected {len(batched)} arguments, got {len(args)}")
        count = next(jax.tree.leaves(a)[0].shape[0] for a, b in zip(args, batched) if b)
        # Repeat the last triplet: its outputs are valid, merely unused.
        rows = np.minimum(np.arange(-(-count // multiple) * multiple), count - 1)
        padded = [jax.tree.map(lambda x: x[rows], a) if b else a
                  for a, b in zip(args, batched)]
        placed = [jax.device_put(a, s) for a, s in zip(padded, shardings)]
        return jax.tree.map(lambda x: x[:count], compiled(*placed))

    return call
