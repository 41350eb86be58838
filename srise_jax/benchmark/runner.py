"""The benchmark loop: every method on every triplet, scored, appended to the store.

    model = srise_jax.models.load("dlib")
    result = benchmark.run_benchmark(model, protocols.sample_protocol(),
                                     "srise@100,gradient,random", "bench")
    table = benchmark.summarize(result.rows)

A `Runner` opens a run directory (`store.start_run`, `store.open_results`),
lists the (triplet, method, metric fill) blocks still to run
(`Runner.pending`) and runs them (`Runner.run`): each triplet's faces are
loaded, each of its `Job`s (pair and side) explained by every method that
has a block to run and, for a pair the model accepts, scored under each
metric fill of those blocks; its rows (`store.result_row`) are appended
once the triplet is done.

Metric fills. `metric_fills` lists what replaces the removed pixels of
Deletion/Insertion (`metrics.METRIC_FILLS`); each map is scored under each,
one row per fill. A fill added to a finished run computes the maps again
(same job and method keys: the same maps) to score them under the new fill;
the rows already there are not touched. The "impute" fill's noise comes
from `metric_key(job key, fill)`, so a rerun gives the same rows. Progress goes to an optional callback; a triplet whose faces cannot
be loaded is skipped with a warning. Nothing here prints.

Batches. With `triplet_batch` K > 1, K consecutive triplets that need the
same methods run each job as one vmapped program sharded over the local
devices (`shard_over_triplets`), with the keys of one triplet at a time;
`seconds` is then the batch's time per triplet.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from srise_jax import align, images, protocols
from srise_jax._helpers import first_line
from srise_jax.benchmark import store
from srise_jax.benchmark.methods import (
    PAIRS,
    SIDES,
    ExplainPart,
    Method,
    MethodSet,
    job_key,
    make_score_fn,
    metric_key,
    parse_metric_fills,
    prepare_methods,
    triplet_similarities,
)
from srise_jax.benchmark.sharding import TRIPLET_AXIS, shard_over_triplets, triplet_mesh
from srise_jax.models import FaceModel

# The `data` of the bundled protocol's sample photos (`protocols.sample_protocol`).
SAMPLE = "sample"


def dataset_triplets(root: str | os.PathLike, count: int, *,
                     seed: int = 0) -> list[protocols.Triplet]:
    """A seeded draw of triplets from a folder of per-identity folders (LFW layout).

    Args:
      root: the dataset folder (`protocols.read_identity_folders`).
      count: triplets to draw (`protocols.sample_triplets`).
      seed: the draw's seed.

    Returns:
      The triplets, each entry a photo's path relative to `root` (how a
      run with ``data=root`` names its images).
    """
    root = Path(root)
    identities = protocols.read_identity_folders(root)
    return [protocols.Triplet(*(str(Path(p).relative_to(root)) for p in triplet))
            for triplet in protocols.sample_triplets(identities, count, seed=seed)]


class Job(NamedTuple):
    """One explanation of a triplet: a pair, and the side of it that is explained.

    Attributes:
      triplet: the triplet's index in the run.
      pair: one of `PAIRS`: the probe with its mate or with its nonmate.
      side: one of `SIDES`: "probe" explains the probe against the intact
        other image, "other" the other image against the intact probe.
      image: the explained face crop.
      reference: the intact face crop it is compared with.
      image_name: `image`'s entry in the triplet.
      reference_name: `reference`'s entry in the triplet.
    """

    triplet: int
    pair: str
    side: str
    image: np.ndarray
    reference: np.ndarray
    image_name: str
    reference_name: str


def make_job(triplet: int, names: protocols.Triplet, faces: Sequence[np.ndarray], *,
             pair: str, side: str) -> Job:
    """The `Job` of one pair and side of a triplet.

    Args:
      triplet: the triplet's index in the run.
      names: its (probe, mate, nonmate) entries.
      faces: its (probe, mate, nonmate) face crops.
      pair: one of `PAIRS`.
      side: one of `SIDES`.

    Returns:
      The job: its image and reference, crops and names.
    """
    probe = (faces[0], names.probe)
    other = (faces[1], names.mate) if pair == "mate" else (faces[2], names.nonmate)
    (image, image_name), (reference, reference_name) = (
        (probe, other) if side == "probe" else (other, probe))
    return Job(triplet, pair, side, image, reference, image_name, reference_name)


class Pending(NamedTuple):
    """A triplet with methods still to run.

    Attributes:
      triplet: the triplet's index in the run.
      methods: the labels with a (triplet, method, metric fill) block not
        yet in the results, in the run's order: their maps are computed.
      blocks: those blocks' (label, metric fill), in the run's order
        (methods, then fills): the maps are scored and rows written for these.
    """

    triplet: int
    methods: tuple[str, ...]
    blocks: tuple[tuple[str, str], ...]


class RunResult(NamedTuple):
    """What `Runner.run` leaves.

    Attributes:
      rows: every row of the process's results file after the run (earlier
        runs' included), as `store.read_rows` reads them.
      skipped: the triplets whose faces could not be loaded (no face found,
        an unreadable photo): their rows are missing; a rerun tries again.
    """

    rows: list[dict[str, str]]
    skipped: tuple[int, ...]


class Runner:
    """A benchmark run on a run directory, opened and ready to run what is pending.

    Opening writes run.json and triplets.csv, or checks that the directory
    holds a run with the same settings (`store.start_run`), then repairs
    and reads the results already there (`store.open_results`): `pending`
    holds the rest. `run` computes it.

    Attributes:
      model: the face model.
      triplets: the run's triplets.
      methods: the `MethodSet` run.
      metric_fills: the metric fills each map is scored with.
      out: the run directory.
      threshold: the match threshold on the cosine similarity.
      settings: run.json's settings (without the version).
      results: the results file this process appends to.
    """

    def __init__(self, model: FaceModel, triplets: Sequence[protocols.Triplet],
                 methods: MethodSet | str | Sequence[Method], out: str | os.PathLike, *,
                 data: str | os.PathLike = SAMPLE, threshold: float | None = None,
                 seed: int = 0, batch_size: int = 64, metric_batch: int = 32,
                 metric_step: int | None = None, curve_points: int = 33,
                 explain_rejected: bool = False, save_maps: int = 2,
                 triplet_batch: int = 1, process: int = 0, processes: int = 1,
                 metric_fills: str | Sequence[str] = ("mean",)):
        """Open a run directory (what `run_benchmark` runs).

        Args:
          model: the face model (`srise_jax.models.load`): its embed_fn,
            params, threshold, crop size and template, feature_fns (Grad-CAM)
            and settings (for run.json) are used.
          triplets: the run's triplets: entries of `protocols.sample_protocol`
            (``data=SAMPLE``) or paths relative to `data` (`dataset_triplets`).
          methods: labels as `parse_methods` reads them, `Method`s, or a
            `MethodSet` (`prepare_methods`, `srise_jax.ablation.prepare_grid`).
          out: the run directory (made if needed).
          data: `SAMPLE` (the bundled sample photos) or the dataset folder the
            entries are relative to; photos there are detected and aligned.
          threshold: the match threshold on the cosine similarity; None: the
            model's.
          seed: the run's key (`jax.random.key(seed)`, then `job_key`).
          batch_size: forward-pass batch of the perturbation explainers (unused
            when `methods` is a `MethodSet`).
          metric_batch: forward-pass batch of Deletion/Insertion.
          metric_step: the coarse step of the exact fractions' search; None:
            the crop's side (the square root of its pixel count).
          curve_points: points of each AUC curve.
          explain_rejected: also explain the pairs the model rejects (never
            scored; otherwise their rows hold only the similarity).
          save_maps: keep the faces and maps of the first `save_maps` triplets
            in `out`/maps/tripletNNN.npz.
          triplet_batch: triplets explained and scored at once, sharded over
            the local devices (see `shard_over_triplets` for what changes).
          process: this process's index in a distributed run: it takes the
            triplets process, process + processes, ... and appends to
            results.partI.csv (`store.merge_parts` merges the parts).
          processes: the number of processes of the run.
          metric_fills: the fills of Deletion/Insertion (`metrics.METRIC_FILLS`),
            a list or "mean,blur,impute"; default: the paper's mean fill alone.
            The "impute" noise is drawn from
            ``metric_key(job_key(jax.random.key(seed), triplet, pair, side), "impute")``
            (`metric_key`), the same for every method of a job.
        """
        self.metric_fills = parse_metric_fills(metric_fills)
        if not isinstance(methods, MethodSet):
            methods = prepare_methods(model.embed_fn, methods, feature_fns=model.feature_fns,
                                      batch_size=batch_size)
        self.model, self.triplets, self.methods = model, list(triplets), methods
        self.out = Path(out)
        self.threshold = model.threshold if threshold is None else threshold
        step = metric_step or model.image_size
        self.settings = {
            "model": model.settings, "weights": model.settings.get("weights"),
            "data": str(data), "num_triplets": len(self.triplets), "seed": seed,
            "threshold": self.threshold, "size": model.image_size, "metric_step": step,
            "curve_points": curve_points, "ablation": methods.ablation}
        self.explain_rejected, self.save_maps = explain_rejected, save_maps
        self.triplet_batch, self.process, self.processes = triplet_batch, process, processes
        self.out.mkdir(parents=True, exist_ok=True)
        store.start_run(self.out, self.settings, self.triplets, write=process == 0)
        self.results, self._finished = store.open_results(self.out, process=process,
                                                          processes=processes)
        scores = {fill: make_score_fn(model.embed_fn, step=step, batch_size=metric_batch,
                                      num_points=curve_points, fill=fill)
                  for fill in self.metric_fills}
        self._batched = _Batched.make(methods.parts, scores, triplet_batch)
        self._key = jax.random.key(seed)
        self._faces = _Faces(data, model.image_size, model.template)

    @property
    def pending(self) -> tuple[Pending, ...]:
        """This process's triplets (I, I + N, ...) with blocks not yet in the results."""
        pending = []
        for t in range(self.process, len(self.triplets), self.processes):
            blocks = tuple((label, fill) for label in self.methods.labels
                           for fill in self.metric_fills
                           if (t, label, fill) not in self._finished)
            if blocks:
                todo = tuple(dict.fromkeys(label for label, _ in blocks))
                pending.append(Pending(t, todo, blocks))
        return tuple(pending)

    def run(self, *, progress: Callable[[int], Any] | None = None) -> RunResult:
        """Run what is pending, appending each triplet's rows once it is done.

        Args:
          progress: called with the number of (triplet, method, metric fill)
            blocks each time some are done or skipped; they add up to the
            pending ones.

        Returns:
          The `RunResult`.

        Warns:
          UserWarning: a triplet skipped, its faces not loaded (the message
            says why, in one line).
        """
        skipped = []
        for batch in _batches(self.pending, self.triplet_batch):
            todo, blocks = batch[0].methods, batch[0].blocks
            loaded = []
            for t in (entry.triplet for entry in batch):
                names = self.triplets[t]
                try:
                    faces = tuple(self._faces.get(entry) for entry in names)
                except (align.NoFaceError, images.ImageError) as err:
                    warnings.warn(f"triplet {t} skipped: {first_line(err)}", stacklevel=2)
                    skipped.append(t)
                    if progress is not None:
                        progress(len(blocks))
                    continue
                loaded.append(_Loaded(t, names, faces))
            if not loaded:
                continue
            for triplet, done in zip(loaded, self._run_batch(loaded, todo, blocks)):
                store.append_rows(self.results, done.rows)
                if triplet.index < self.save_maps:
                    store.save_maps(self.out / "maps" / f"triplet{triplet.index:03d}.npz",
                                    triplet.faces, done.maps)
                self._finished.update((triplet.index, *block) for block in blocks)
                if progress is not None:
                    progress(len(blocks))
        return RunResult(store.read_rows(self.results), tuple(skipped))

    def _run_batch(self, loaded: Sequence[_Loaded], todo: tuple[str, ...],
                   blocks: tuple[tuple[str, str], ...]) -> list[_TripletOutput]:
        """Explain a batch of triplets with the methods in `todo`, score as `blocks` says.

        A pair the model rejects is not scored (see `srise_jax.benchmark`),
        so its maps are computed only with `explain_rejected`; its rows are
        written either way, with the similarity and empty metrics. In a
        batch, a job runs for all triplets if any needs it, and only the rows
        and maps a one-triplet run would write are kept. Each map is scored
        under the fills its label has in `blocks`, one row per fill.
        """
        model = self.model
        similarity = [triplet_similarities(model.embed_fn, model.params, *triplet.faces)
                      for triplet in loaded]
        needed = [(part, explain) for part, explain in zip(self.methods.parts,
                                                            self._batched.explain)
                  if set(part.labels) & set(todo)]
        outputs = [_TripletOutput([], {}) for _ in loaded]
        for pair in PAIRS:
            match = [sims[pair] >= self.threshold for sims in similarity]
            explained = [m or self.explain_rejected for m in match]
            for side in SIDES:
                jobs = [make_job(triplet.index, triplet.names, triplet.faces,
                                 pair=pair, side=side) for triplet in loaded]
                found = (self._explain(jobs, needed, todo, blocks, score=any(match))
                         if any(explained) else {})
                for i, job in enumerate(jobs):
                    row = dict(triplet=job.triplet, pair=pair, side=side,
                               image=job.image_name, reference=job.reference_name,
                               similarity=similarity[i][pair])
                    if not explained[i]:
                        outputs[i].rows.extend(
                            store.result_row(**row, method=label, metric_fill=fill,
                                             match=False,
                                             iterations=self.methods.iterations[label])
                            for label, fill in blocks)
                        continue
                    for label, maps in found.items():
                        outputs[i].maps[f"{label}/{pair}/{side}"] = maps.saliency[i]
                    for label, fill in blocks:
                        maps = found[label]
                        scores = ({name: value[i] for name, value in maps.scores[fill].items()}
                                  if match[i] else None)
                        outputs[i].rows.append(store.result_row(
                            **row, method=label, metric_fill=fill,
                            iterations=self.methods.iterations[label],
                            match=match[i], seconds=maps.seconds, scores=scores))
        return outputs

    def _explain(self, jobs: Sequence[Job], needed: Sequence[tuple[ExplainPart, Callable]],
                 todo: tuple[str, ...], blocks: tuple[tuple[str, str], ...], *,
                 score: bool) -> dict[str, _Maps]:
        """The maps of `todo` for one job of each triplet, and their `blocks`' scores if `score`."""
        params = self.model.params
        stacked = np.stack([job.image for job in jobs])
        references = np.stack([job.reference for job in jobs])
        job_keys = [job_key(self._key, job.triplet, job.pair, job.side) for job in jobs]
        keys = jnp.stack(job_keys)
        fill_keys = {fill: jnp.stack([metric_key(k, fill) for k in job_keys])
                     for fill in dict.fromkeys(fill for _, fill in blocks)}
        found = {}
        for part, explain in needed:
            start = time.perf_counter()
            part_maps = jax.block_until_ready(explain(params, stacked, references, keys))
            seconds = (time.perf_counter() - start) / len(jobs)
            for label in part.labels:
                if label not in todo:
                    continue
                saliency = part_maps[label]
                scores = ({fill: jax.tree.map(np.asarray, self._batched.score[fill](
                               params, stacked, references, saliency, self.threshold,
                               fill_keys[fill]))
                           for label_, fill in blocks if label_ == label} if score else None)
                found[label] = _Maps(np.asarray(saliency), seconds, scores)
        return found


def run_benchmark(model: FaceModel, triplets: Sequence[protocols.Triplet],
                  methods: MethodSet | str | Sequence[Method], out: str | os.PathLike, *,
                  progress: Callable[[int], Any] | None = None, **options: Any) -> RunResult:
    """Run a benchmark into a run directory, resuming what it holds.

    Every method explains both sides of both pairs of every triplet; each
    map of a pair the model accepts is scored with Deletion, Insertion and
    their AUCs (`make_score_fn`) under each of `metric_fills`, one row per
    fill. Rows go to `out`/results.csv (`store`), one triplet at a time; a
    rerun with the same settings runs only the (triplet, method, metric fill)
    blocks missing there (the metric fills may differ between runs: a fill
    added to a finished run scores its maps, computed again, under that fill). `summarize` makes Table 1 of the
    rows, `write_reports` the run's table.md and figures.

    Args:
      model, triplets, methods, out, **options: as in `Runner` (data,
        threshold, seed, batch sizes, metric step and fills, sharding and
        processes).
      progress: called with the number of (triplet, method, metric fill)
        blocks each time some are done or skipped.

    Returns:
      The `RunResult`: the rows of the results file, the skipped triplets.

    Raises:
      ValueError: `out` holds a run with other settings, a results file
        that cannot be resumed, bad methods or an unknown metric fill.

    Warns:
      UserWarning: lines of a results file left out; a triplet skipped.
    """
    return Runner(model, triplets, methods, out, **options).run(progress=progress)


# ----------------------------------------------------------------------------
# The loop's pieces
# ----------------------------------------------------------------------------


class _Loaded(NamedTuple):
    """A triplet whose faces are loaded."""

    index: int
    names: protocols.Triplet
    faces: tuple[np.ndarray, ...]  # probe, mate, nonmate


class _TripletOutput(NamedTuple):
    """A triplet's rows (in a one-triplet run's order) and its maps by "label/pair/side"."""

    rows: list[dict[str, Any]]
    maps: dict[str, np.ndarray]


class _Maps(NamedTuple):
    """One method's maps for one job of each triplet of a batch, stacked."""

    saliency: np.ndarray
    seconds: float  # the part's time per triplet
    # {fill: scores}; None: no pair of the batch is scored
    scores: Mapping[str, Mapping[str, np.ndarray]] | None


class _Batched(NamedTuple):
    """The explain parts and the score as functions of a batch of triplets.

    Every argument but params and the threshold is stacked along a leading
    triplet axis, and so is every output.
    """

    explain: tuple[Callable, ...]  # per part: (params, images, references, keys)
    # per fill: (params, images, references, saliency, threshold, keys)
    score: Mapping[str, Callable]

    @classmethod
    def make(cls, parts: Sequence[ExplainPart], scores: Mapping[str, Callable],
             size: int) -> _Batched:
        """Batches of one: the parts as they are. Larger: vmapped and sharded."""
        explain_args = (False, True, True, True)
        score_args = (False, True, True, True, False, True)
        if size == 1:
            return cls(tuple(_one_at_a_time(part.fn, explain_args) for part in parts),
                       {fill: _one_at_a_time(score, score_args)
                        for fill, score in scores.items()})
        mesh = triplet_mesh(jax.local_devices())
        devices = mesh.shape[TRIPLET_AXIS]
        multiple = -(-size // devices) * devices
        explain = tuple(shard_over_triplets(part.fn, mesh, batched=explain_args,
                                            multiple=multiple)
                        for part in parts)
        return cls(explain, {fill: shard_over_triplets(score, mesh, batched=score_args,
                                                       multiple=multiple)
                             for fill, score in scores.items()})


def _one_at_a_time(fn: Callable, batched: Sequence[bool]) -> Callable:
    """`fn` called as `shard_over_triplets` would call it, on a batch of one.

    The arguments flagged in `batched` are unstacked and the outputs stacked,
    so a default run computes exactly what it did before batches existed.
    """
    def call(*args):
        out = fn(*(a[0] if b else a for a, b in zip(args, batched)))
        return jax.tree.map(lambda x: x[None], out)
    return call


def _batches(pending: Sequence[Pending], size: int) -> Iterator[list[Pending]]:
    """Runs of at most `size` consecutive pending triplets that need the same blocks."""
    batch: list[Pending] = []
    for entry in pending:
        if batch and (entry.blocks != batch[0].blocks or len(batch) == size):
            yield batch
            batch = []
        batch.append(entry)
    if batch:
        yield batch


class _Faces:
    """Aligned crops of the run's images, each detected and aligned once."""

    def __init__(self, data: str | os.PathLike, size: int, template: np.ndarray):
        self.root = None if str(data) == SAMPLE else Path(data)
        self.size, self.template = size, template
        self.faces: dict[str, np.ndarray] = {}

    def get(self, entry: str) -> np.ndarray:
        """The crop of a triplet entry: a sample photo's name or a path under the root."""
        if entry not in self.faces:
            if self.root is None:
                face = protocols.load_protocol_face(entry, size=self.size,
                                                    template=self.template)
            else:
                face = align.preprocess(self.root / entry, size=self.size,
                                        template=self.template)
            self.faces[entry] = face
        return self.faces[entry]
