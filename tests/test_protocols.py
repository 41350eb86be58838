"""LFW pairs, identity folders, triplet sampling and the bundled sample protocol."""

from pathlib import Path

import numpy as np
import pytest

from srise_jax import benchmark
from srise_jax.align import DLIB_150
from srise_jax.data import OCCLUSION_KINDS, SAMPLE_NAMES
from srise_jax.protocols import (Pair, Triplet, image_identity, load_protocol_face,
                                 read_identity_folders, read_lfw_pairs, sample_protocol,
                                 sample_triplets)

LFW_DEV = Path(__file__).parents[2] / "shared/data/lfw-dev"


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def lfw_tree(tmp_path):
    """An LFW-like image folder with two people."""
    images = tmp_path / "lfw"
    for name, count in (("Ann_Lee", 3), ("Bo_Chan", 2)):
        for n in range(1, count + 1):
            _touch(images / name / f"{name}_{n:04d}.jpg")
    return images


def _pairs_file(tmp_path, text):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    return path


# Two folds of one matched and one mismatched pair, tabs and spaces mixed.
PAIRS = "2\t1\nAnn_Lee\t1\t3\nAnn_Lee\t2\tBo_Chan\t1\nBo_Chan 1 2\nBo_Chan\t2\tAnn_Lee\t1\n"


def test_read_lfw_pairs_both_line_kinds(tmp_path, lfw_tree):
    pairs = read_lfw_pairs(_pairs_file(tmp_path, PAIRS), lfw_tree)
    ann, bo = lfw_tree / "Ann_Lee", lfw_tree / "Bo_Chan"
    assert pairs == [
        Pair(ann / "Ann_Lee_0001.jpg", ann / "Ann_Lee_0003.jpg", True, 0),
        Pair(ann / "Ann_Lee_0002.jpg", bo / "Bo_Chan_0001.jpg", False, 0),
        Pair(bo / "Bo_Chan_0001.jpg", bo / "Bo_Chan_0002.jpg", True, 1),
        Pair(bo / "Bo_Chan_0002.jpg", ann / "Ann_Lee_0001.jpg", False, 1),
    ]


def test_read_lfw_pairs_single_count_header(tmp_path, lfw_tree):
    text = "1\nAnn_Lee 1 2\nAnn_Lee 3 Bo_Chan 2\n"
    pairs = read_lfw_pairs(_pairs_file(tmp_path, text), lfw_tree)
    assert [pair.same for pair in pairs] == [True, False]


@pytest.mark.parametrize("bad_line, message", [
    ("Ann_Lee 1", r"pairs.txt:4: expected a matched pair"),
    ("Ann_Lee 1 x", r"pairs.txt:4: image number 'x' of Ann_Lee"),
    ("Ann_Lee 1 Bo_Chan 2", r"pairs.txt:4: expected a matched pair"),
])
def test_read_lfw_pairs_malformed_line_names_file_and_line(tmp_path, lfw_tree,
                                                             bad_line, message):
    lines = PAIRS.splitlines()
    lines[3] = bad_line
    with pytest.raises(ValueError, match=message):
        read_lfw_pairs(_pairs_file(tmp_path, "\n".join(lines)), lfw_tree)


def test_read_lfw_pairs_mismatched_line_where_due(tmp_path, lfw_tree):
    lines = PAIRS.splitlines()
    lines[2] = "Ann_Lee 1 2"
    with pytest.raises(ValueError, match=r"pairs.txt:3: expected a mismatched pair"):
        read_lfw_pairs(_pairs_file(tmp_path, "\n".join(lines)), lfw_tree)


def test_read_lfw_pairs_bad_header_or_count(tmp_path, lfw_tree):
    with pytest.raises(ValueError, match=r"pairs.txt:1: expected a header"):
        read_lfw_pairs(_pairs_file(tmp_path, "ten 300\n"), lfw_tree)
    with pytest.raises(ValueError, match=r"announces 2 fold.*= 4 lines, found 3"):
        read_lfw_pairs(_pairs_file(tmp_path, PAIRS.rsplit("\n", 2)[0]), lfw_tree)


def test_read_lfw_pairs_missing_image_names_path(tmp_path, lfw_tree):
    text = PAIRS.replace("Bo_Chan 1 2", "Bo_Chan 1 7")
    with pytest.raises(FileNotFoundError, match=r"pairs.txt:4: image .*Bo_Chan_0007.jpg"):
        read_lfw_pairs(_pairs_file(tmp_path, text), lfw_tree)


def test_read_identity_folders_subfolder_layout(tmp_path, lfw_tree):
    _touch(lfw_tree / "Bo_Chan" / "notes.txt")
    _touch(lfw_tree / "Bo_Chan" / ".hidden_0001.jpg")
    (lfw_tree / "Empty_Person").mkdir()
    identities = read_identity_folders(lfw_tree)
    assert list(identities) == ["Ann_Lee", "Bo_Chan"]
    assert identities["Ann_Lee"] == [lfw_tree / "Ann_Lee" / f"Ann_Lee_{n:04d}.jpg"
                                     for n in (1, 2, 3)]
    assert len(identities["Bo_Chan"]) == 2


def test_read_identity_folders_flat_layout(tmp_path):
    # CALFW pads the number to four digits, CPLFW does not; names hold "_".
    root = tmp_path / "flat"
    names = ["Zed_A_0002.jpg", "Zed_A_0001.jpg", "Amy_Bo_1.JPG", "Amy_Bo_12.png",
             "Cy_3.jpeg"]
    for name in names:
        _touch(root / name)
    _touch(root / "README.md")
    identities = read_identity_folders(root)
    assert list(identities) == ["Amy_Bo", "Cy", "Zed_A"]
    assert identities["Zed_A"] == [root / "Zed_A_0001.jpg", root / "Zed_A_0002.jpg"]
    # Sorted as paths (by character), not by number.
    assert identities["Amy_Bo"] == [root / "Amy_Bo_1.JPG", root / "Amy_Bo_12.png"]


def test_image_identity_agrees_with_the_folder_listing(tmp_path, lfw_tree):
    # Both layouts, named relative to the root as triplets.csv names them.
    root = tmp_path / "flat"
    for name in ("Zed_A_0002.jpg", "Amy_Bo_12.png", "Cy_3.jpeg"):
        _touch(root / name)
    for folder in (lfw_tree, root):
        for identity, paths in read_identity_folders(folder).items():
            assert {image_identity(p.relative_to(folder).as_posix()) for p in paths} == \
                {identity}
    with pytest.raises(ValueError, match=r"portrait.jpg: cannot tell the identity"):
        image_identity("portrait.jpg")


def test_read_identity_folders_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_identity_folders(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        read_identity_folders(tmp_path / "empty")
    _touch(tmp_path / "odd" / "portrait.jpg")
    with pytest.raises(ValueError, match=r"portrait.jpg: cannot tell the identity"):
        read_identity_folders(tmp_path / "odd")


def _toy_identities():
    # Identity "c" has one image: it can only be a nonmate.
    return {"b": ["b1", "b2", "b3"], "a": ["a1", "a2"], "c": ["c1"], "d": []}


def _assert_valid(triplets, identities):
    owner = {image: name for name, images in identities.items() for image in images}
    for probe, mate, nonmate in triplets:
        assert probe != mate
        assert owner[probe] == owner[mate]
        assert owner[nonmate] != owner[probe]
    assert len(set(triplets)) == len(triplets)


@pytest.mark.parametrize("num", [0, 5, 13, 14])  # 14 of 26: drawn from the full list
def test_sample_triplets_constraints_hold(num):
    identities = _toy_identities()
    triplets = sample_triplets(identities, num, seed=0)
    assert len(triplets) == num and all(isinstance(t, Triplet) for t in triplets)
    _assert_valid(triplets, identities)


def test_sample_triplets_all_possible():
    # Ordered (probe, mate) pairs times other images: a 2*1*4 + b 3*2*3 = 26.
    identities = _toy_identities()
    triplets = sample_triplets(identities, 26, seed=1)
    _assert_valid(triplets, identities)
    with pytest.raises(ValueError, match="cannot draw 27 distinct triplets.*allow 26"):
        sample_triplets(identities, 27, seed=1)


def test_sample_triplets_deterministic_and_seeded():
    identities = _toy_identities()
    first = sample_triplets(identities, 8, seed=3)
    assert first == sample_triplets(dict(reversed(identities.items())), 8, seed=3)
    assert first != sample_triplets(identities, 8, seed=4)


def test_sample_triplets_impossible_raises():
    with pytest.raises(ValueError, match="0 with two images"):
        sample_triplets({"a": ["a1"], "b": ["b1"]}, 1, seed=0)
    with pytest.raises(ValueError, match="1 identities"):
        sample_triplets({"a": ["a1", "a2"]}, 1, seed=0)
    with pytest.raises(ValueError, match="non-negative int"):
        sample_triplets(_toy_identities(), -1, seed=0)


needs_lfw_dev = pytest.mark.skipif(
    not LFW_DEV.is_dir(), reason=f"LFW development subset not found at {LFW_DEV}")


@needs_lfw_dev
def test_lfw_dev_identity_folders_and_triplets():
    identities = read_identity_folders(LFW_DEV)
    assert len(identities) == 100
    assert sum(len(images) for images in identities.values()) == 294
    triplets = sample_triplets(identities, 50, seed=0)
    assert len(triplets) == 50
    _assert_valid(triplets, identities)
    assert all(path.is_file() for triplet in triplets for path in triplet)


def test_sample_protocol_entries_are_known():
    protocol = sample_protocol()
    assert protocol[0] == Triplet("obama", "obama2", "biden")
    for entry in {entry for triplet in protocol for entry in triplet}:
        name, _, kind = entry.partition("+")
        assert name in SAMPLE_NAMES and (not kind or kind in OCCLUSION_KINDS)
    # Self-occlusion triplets: the nonmate is the probe's photo, occluded.
    occluded = [t for t in protocol if "+" in t.nonmate]
    assert occluded and all(t.nonmate.split("+")[0] == t.probe for t in occluded)


def test_sample_protocol_entries_load_to_aligned_faces():
    entries = sorted({entry for triplet in sample_protocol() for entry in triplet})
    for entry in entries:
        face = load_protocol_face(entry, size=112)
        assert face.shape == (112, 112, 3) and face.dtype == np.float32
        assert 0.0 <= face.min() and face.max() <= 1.0 and face.std() > 0.05
    # The occluder paints over the cached crop without changing it.
    plain, masked = load_protocol_face("obama"), load_protocol_face("obama+mask")
    changed = np.any(plain != masked, axis=-1)
    assert 0.1 < changed.mean() < 0.6
    assert np.array_equal(plain, load_protocol_face("obama"))
    # Another template: the sunglasses follow its eyes (dark over both eyes).
    dlib_face = load_protocol_face("obama+sunglasses", size=150, template=DLIB_150)
    assert dlib_face.shape == (150, 150, 3)
    for x, y in DLIB_150[:2]:
        assert dlib_face[int(round(y)), int(round(x))].max() < 0.1


def test_load_protocol_face_unknown_entry():
    with pytest.raises(ValueError, match="unknown sample photo 'trump'"):
        load_protocol_face("trump")
    with pytest.raises(ValueError, match="unknown occlusion kind 'hat'"):
        load_protocol_face("obama+hat")


def test_sample_protocol_table_resamples_its_distinct_pairs():
    # (obama, obama2) and (obama2, obama3) are the mate pair of three triplets
    # each, so the 9 triplets' 18 mate rows (two sides) come from 5 distinct
    # pairs, and all 9 nonmate pairs differ: Table 1's bootstrap resamples 14.
    rng = np.random.default_rng(0)
    rows = []
    for t, triplet in enumerate(sample_protocol()):
        for pair, other in (("mate", triplet.mate), ("nonmate", triplet.nonmate)):
            for image, reference in ((triplet.probe, other), (other, triplet.probe)):
                rows.append({"triplet": t, "pair": pair, "image": image,
                             "reference": reference, "method": pair, "match": 1,
                             "deletion": rng.uniform(), "insertion": rng.uniform()})
    mate, nonmate = benchmark.summarize(rows, num_resamples=200)
    assert (mate["deletion_n"], mate["deletion_pairs"]) == (18, 5)
    assert (nonmate["deletion_n"], nonmate["deletion_pairs"]) == (18, 9)
    (both,) = benchmark.summarize([{**row, "method": "all"} for row in rows],
                                  num_resamples=200)
    assert both["average_pairs"] == 14
    assert "95% CI: bootstrap over 14 distinct pairs" in benchmark.format_table([both])
