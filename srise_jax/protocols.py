"""Evaluation protocols: LFW pairs, identity folders, triplets, the bundled set.

`read_lfw_pairs` reads LFW's View 2 `pairs.txt`; `read_identity_folders`
lists a face dataset by identity, whether in one folder per identity (LFW)
or flat `name_0001.jpg` files in one folder (the official CALFW and CPLFW
releases; CPLFW numbers them without padding, `name_1.jpg`), and
`image_identity` reads the identity off an image's name in either layout;
`sample_triplets` draws (probe, mate, nonmate) triplets from that listing as
in the paper's section 4.1.3; `sample_protocol` is a small fixed protocol on
the bundled sample photos (`srise_jax.data`) and their synthetic occlusions,
and `load_protocol_face` turns its entries into aligned faces.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from srise_jax import data
from srise_jax.align import ARCFACE_112


class Pair(NamedTuple):
    """One verification pair of `read_lfw_pairs`.

    Attributes:
      path_a: first image.
      path_b: second image.
      same: True for a matched pair (one person), False for a mismatched one.
      fold: which of the file's folds (sets) the pair belongs to, from 0.
    """

    path_a: Path
    path_b: Path
    same: bool
    fold: int = 0


class Triplet(NamedTuple):
    """A probe, a mate (same identity, another image) and a nonmate."""

    probe: Any
    mate: Any
    nonmate: Any


def read_lfw_pairs(pairs_txt: str | os.PathLike, image_dir: str | os.PathLike
                   ) -> list[Pair]:
    """Read LFW's `pairs.txt` (View 2) or `pairsDevTrain/Test.txt` (View 1).

    Format (LFW README, section 3c): a header line "folds<TAB>pairs" (View 2:
    "10\\t300"; View 1 files give the pair count only, one fold), then per
    fold that many matched lines "name n1 n2" followed by as many mismatched
    lines "name1 n1 name2 n2", fields separated by tabs or spaces. Image n of
    a person is `image_dir/name/name_%04d.jpg`.

    Args:
      pairs_txt: the pairs file.
      image_dir: the folder holding one subfolder per person (e.g. `lfw/`).

    Returns:
      The pairs in file order, `fold` counted from 0.

    Raises:
      FileNotFoundError: the pairs file or an image it names is missing (the
        message names the image and the line).
      ValueError: a malformed line, a matched line where a mismatched one is
        due or the reverse, or a pair count that disagrees with the header
        (the message names the file and line number).
    """
    pairs_txt, image_dir = Path(pairs_txt), Path(image_dir)
    lines = [(number, line.split()) for number, line
             in enumerate(pairs_txt.read_text().splitlines(), start=1)
             if line.strip()]
    if not lines:
        raise ValueError(f"{pairs_txt}: empty pairs file")
    header_line, header = lines[0]
    if len(header) not in (1, 2) or not all(field.isdigit() for field in header):
        raise ValueError(f"{pairs_txt}:{header_line}: expected a header "
                         f"'folds<TAB>pairs per fold' or 'pairs', got "
                         f"{' '.join(header)!r}")
    folds, per_fold = (1, int(header[0])) if len(header) == 1 else map(int, header)
    body = lines[1:]
    if len(body) != 2 * folds * per_fold:
        raise ValueError(f"{pairs_txt}: header (line {header_line}) announces "
                         f"{folds} fold(s) of {per_fold} matched and {per_fold} "
                         f"mismatched pairs = {2 * folds * per_fold} lines, "
                         f"found {len(body)}")
    pairs = []
    for index, (number, fields) in enumerate(body):
        fold, position = divmod(index, 2 * per_fold)
        same = position < per_fold
        where = f"{pairs_txt}:{number}"
        if same:
            if len(fields) != 3:
                raise ValueError(f"{where}: expected a matched pair 'name n1 n2', "
                                 f"got {' '.join(fields)!r}")
            names_numbers = ((fields[0], fields[1]), (fields[0], fields[2]))
        else:
            if len(fields) != 4:
                raise ValueError(f"{where}: expected a mismatched pair "
                                 f"'name1 n1 name2 n2', got {' '.join(fields)!r}")
            names_numbers = ((fields[0], fields[1]), (fields[2], fields[3]))
        path_a, path_b = (_lfw_image(image_dir, name, number_text, where)
                          for name, number_text in names_numbers)
        pairs.append(Pair(path_a, path_b, same, fold))
    return pairs


def _lfw_image(image_dir: Path, name: str, number_text: str, where: str) -> Path:
    if not number_text.isdigit() or int(number_text) < 1:
        raise ValueError(f"{where}: image number {number_text!r} of {name} is "
                         f"not a positive integer")
    path = image_dir / name / f"{name}_{int(number_text):04d}.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image {path} not found")
    return path


# A flat file's identity: its name before the last "_<digits>".
_FLAT_NAME = re.compile(r"^(?P<identity>.+)_\d+$")


def image_identity(name: str | os.PathLike) -> str:
    """The identity of an image named relative to its dataset folder.

    The layouts of `read_identity_folders`: "name/name_0001.jpg" is the
    folder's identity; a flat "name_0001.jpg" the file name before the
    last "_<digits>". Triplet and result files name images this way.

    Args:
      name: an image path relative to the dataset folder, e.g. a
        triplets.csv cell.

    Returns:
      The identity.

    Raises:
      ValueError: a flat name without a "_<digits>" suffix.
    """
    path = Path(name)
    if len(path.parts) > 1:
        return path.parts[0]
    match = _FLAT_NAME.match(path.stem)
    if match is None:
        raise ValueError(f"{name}: cannot tell the identity of a flat image file not "
                         f"named <identity>_<number>")
    return match["identity"]


def read_identity_folders(root: str | os.PathLike, *,
                          extensions: Sequence[str] = (".jpg", ".jpeg", ".png")
                          ) -> dict[str, list[Path]]:
    """The images of a face dataset, grouped by identity.

    Two layouts, mixed freely: a subfolder per identity (LFW:
    `root/name/name_0001.jpg`; the folder name is the identity), or image
    files directly in `root` whose identity is the file name before the last
    `_<digits>` (CALFW `name_0001.jpg`, CPLFW `name_1.jpg`). Hidden files
    (names starting with ".") and deeper folders are ignored.

    Args:
      root: the dataset folder.
      extensions: image suffixes to keep, compared case-insensitively.

    Returns:
      {identity: image paths}, identities in sorted order and each list
      sorted; identities without images are left out.

    Raises:
      FileNotFoundError: root is not a folder.
      ValueError: a flat image whose name has no `_<digits>` suffix, or no
        images at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} not found")
    suffixes = tuple(extension.lower() for extension in extensions)

    def is_image(path: Path) -> bool:
        return (path.is_file() and not path.name.startswith(".")
                and path.suffix.lower() in suffixes)

    identities: dict[str, list[Path]] = {}
    for entry in root.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            images = [path for path in entry.iterdir() if is_image(path)]
            if images:
                identities.setdefault(entry.name, []).extend(images)
        elif is_image(entry):
            match = _FLAT_NAME.match(entry.stem)
            if match is None:
                raise ValueError(f"{entry}: cannot tell the identity of a flat "
                                 f"image file not named <identity>_<number>")
            identities.setdefault(match["identity"], []).append(entry)
    if not identities:
        raise ValueError(f"no images ({', '.join(suffixes)}) found in {root} "
                         f"or its subfolders")
    return {name: sorted(identities[name]) for name in sorted(identities)}


def sample_triplets(identities: Mapping[str, Sequence[Any]], num_triplets: int, *,
                    seed: int) -> list[Triplet]:
    """Random (probe, mate, nonmate) triplets, as in the paper's section 4.1.3.

    The probe and mate are two different images of one identity that has at
    least two, the nonmate an image of another identity. Each triplet draws,
    uniformly at each step, the probe's identity among those with two images
    or more, the probe and mate among its images, the nonmate's identity among
    the others and the nonmate among its images; a triplet already drawn is
    drawn again, so all differ (as ordered tuples: (a, b, n) and (b, a, n)
    are two triplets). When more than half of all possible triplets are asked
    for, they are drawn uniformly without replacement from the full list
    instead, which always ends.

    Args:
      identities: {identity: images} (e.g. `read_identity_folders`); the
        identities are taken in sorted order and each list in its given
        order, so the same input and seed give the same triplets.
      num_triplets: how many triplets.
      seed: seed of `numpy.random.default_rng`.

    Returns:
      num_triplets Triplet(probe, mate, nonmate) of the given images.

    Raises:
      ValueError: num_triplets is not a non-negative int, or more triplets
        are asked for than exist (no identity with two images, a single
        identity, or too few images).
    """
    if isinstance(num_triplets, bool) or not isinstance(num_triplets, int) \
            or num_triplets < 0:
        raise ValueError(f"num_triplets must be a non-negative int, got "
                         f"{num_triplets!r}")
    names = sorted(name for name in identities if len(identities[name]) > 0)
    images = [list(identities[name]) for name in names]
    sizes = np.array([len(group) for group in images])
    total_images = int(sizes.sum())
    # Ordered (probe, mate) pairs of each identity times the images of others.
    possible = int(np.sum(sizes * (sizes - 1) * (total_images - sizes)))
    if num_triplets > possible:
        raise ValueError(f"cannot draw {num_triplets} distinct triplets: "
                         f"{len(names)} identities ({int(np.sum(sizes >= 2))} "
                         f"with two images or more, {total_images} images) "
                         f"allow {possible}")
    rng = np.random.default_rng(seed)
    if 2 * num_triplets > possible:
        every = [(i, p, m, j, n)
                 for i in range(len(names)) for p in range(sizes[i])
                 for m in range(sizes[i]) if m != p
                 for j in range(len(names)) if j != i for n in range(sizes[j])]
        chosen = [every[k] for k in rng.choice(len(every), num_triplets,
                                               replace=False)]
    else:
        probe_identities = np.flatnonzero(sizes >= 2)
        seen, chosen = set(), []
        while len(chosen) < num_triplets:
            i = int(rng.choice(probe_identities))
            p, m = (int(k) for k in rng.choice(sizes[i], 2, replace=False))
            j = int(rng.integers(len(names) - 1))
            j += j >= i  # any identity but i
            n = int(rng.integers(sizes[j]))
            if (i, p, m, j, n) not in seen:
                seen.add((i, p, m, j, n))
                chosen.append((i, p, m, j, n))
    return [Triplet(images[i][p], images[i][m], images[j][n])
            for i, p, m, j, n in chosen]


# The bundled protocol. Entries are sample photo names (`data.SAMPLE_NAMES`),
# optionally followed by "+<kind>" for that photo aligned and then occluded by
# `data.occlude(face, kind)` ("obama+mask", "obama+sunglasses").
_SAMPLE_PROTOCOL = (
    # Identity: three frontal photos of Obama in turn against Biden, then the
    # two photos whose face is cut off at the border, a natural occlusion.
    ("obama", "obama2", "biden"),
    ("obama2", "obama3", "biden"),
    ("obama3", "obama", "biden"),
    ("obama_partial_face", "obama", "biden"),
    ("obama_partial_face2", "obama2", "biden"),
    # Self-occlusion (the paper's Fig. 5): the nonmate is the probe itself
    # with a mask or sunglasses, so what differs between the probe and the
    # "nonmate" is exactly the occluded region.
    ("obama", "obama2", "obama+mask"),
    ("obama", "obama2", "obama+sunglasses"),
    ("obama2", "obama3", "obama2+mask"),
    ("obama2", "obama3", "obama2+sunglasses"),
)


def sample_protocol() -> list[Triplet]:
    """The bundled protocol: nine triplets on the six sample photos.

    Entries are names: a sample photo ("obama", "obama2", ... "biden", as in
    `srise_jax.data.SAMPLE_NAMES`) or a photo with a synthetic occlusion,
    "<photo>+<kind>" with kind "mask" or "sunglasses" (`srise_jax.data.occlude`
    on the aligned photo). Five identity triplets: the three frontal Obama
    photos in turn and the two cut-off ones as probes, an Obama mate, Biden
    as nonmate. Four self-occlusion triplets (the paper's Fig. 5): probe
    "obama" or "obama2", the next Obama photo as mate, and the probe itself
    with a mask or sunglasses as nonmate. Load entries with
    `load_protocol_face`.

    Pairs recur: (obama, obama2) and (obama2, obama3) are the mate pair of
    three triplets each, so the nine mate pairs are five distinct ones
    (fourteen distinct pairs in all). Rows of one pair are near-copies, not
    independent samples: Table 1's bootstrap (`benchmark.summarize`)
    resamples distinct pairs (`benchmark.pair_identity`), so the recurrences
    weigh in the means but do not narrow the intervals.

    Returns:
      The triplets, in that order, of entry names.
    """
    return [Triplet(*entries) for entries in _SAMPLE_PROTOCOL]


def load_protocol_face(entry: str, *, size: int = 112,
                       template: np.ndarray = ARCFACE_112) -> np.ndarray:
    """An entry of `sample_protocol` as an aligned face crop.

    The photo is detected (MTCNN) and aligned once per (photo, size,
    template); later calls reuse the crop.

    Args:
      entry: "<photo>" or "<photo>+<kind>" (see `sample_protocol`).
      size: side of the crop in pixels.
      template: the alignment template, as in `srise_jax.align.preprocess`
        (`ARCFACE_112`, scaled to the size, or e.g. `DLIB_150`); the occluder
        follows it.

    Returns:
      Float[ndarray, "size size 3"] float32 in [0, 1], a new array.

    Raises:
      ValueError: unknown photo or occlusion kind.
    """
    name, _, kind = entry.partition("+")
    if name not in data.SAMPLE_NAMES:
        raise ValueError(f"unknown sample photo {name!r} in entry {entry!r}; "
                         f"expected one of {', '.join(data.SAMPLE_NAMES)}")
    if kind and kind not in data.OCCLUSION_KINDS:
        raise ValueError(f"unknown occlusion kind {kind!r} in entry {entry!r}; "
                         f"expected one of {', '.join(data.OCCLUSION_KINDS)}")
    face = data.aligned_sample(name, size=size, template=template)
    if kind:
        # ARCFACE_112 itself is the occluder's default frame (scaled to the size).
        occlusion_template = None if template is ARCFACE_112 else template
        face = np.asarray(data.occlude(face, kind, template=occlusion_template),
                          dtype=np.float32)
    return face
