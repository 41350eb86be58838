"""Verification thresholds: ROC, equal error rate and operating points.

Scores are similarities (e.g. cosine): a pair is accepted as the same person
when its score is >= the threshold. Genuine scores come from mated pairs
(same person), impostor scores from non-mated pairs. At a threshold t:

  FAR(t) = fraction of impostor scores >= t  (false accepts)
  FRR(t) = fraction of genuine scores < t    (false rejects)

FAR falls and FRR rises as t grows. Everything here is plain NumPy on score
vectors: thresholds are chosen once, outside any jitted code.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike


class Roc(NamedTuple):
    """`roc_curve`'s result, one entry per distinct score.

    Attributes:
      thresholds: Float[ndarray, "n"] every distinct score, increasing.
      far: Float[ndarray, "n"] FAR at each threshold (non-increasing).
      frr: Float[ndarray, "n"] FRR at each threshold (non-decreasing).
    """

    thresholds: np.ndarray
    far: np.ndarray
    frr: np.ndarray


def roc_curve(genuine: ArrayLike, impostor: ArrayLike) -> Roc:
    """FAR and FRR at every distinct score of either set.

    Between two consecutive thresholds FAR and FRR are constant (equal to
    their values at the upper one), so these points are the whole curve.

    Args:
      genuine: Float[ArrayLike, "m"] scores of mated pairs (any shape, flattened).
      impostor: Float[ArrayLike, "n"] scores of non-mated pairs.

    Returns:
      Roc(thresholds, far, frr), float64 arrays sorted by threshold.

    Raises:
      ValueError: a score set is empty or holds NaN or infinite values.
    """
    genuine, impostor = _scores(genuine, "genuine"), _scores(impostor, "impostor")
    thresholds, false_accepts, false_rejects = _error_counts(genuine, impostor)
    return Roc(thresholds, false_accepts / impostor.size,
               false_rejects / genuine.size)


def equal_error_rate(genuine: ArrayLike, impostor: ArrayLike) -> tuple[float, float]:
    """The error rate and threshold where FAR and FRR cross.

    The ROC points (FAR, FRR) at consecutive thresholds are joined by straight
    segments, and the curve is closed by (FAR, FRR) = (0, 1) just above the
    highest score. The EER is where the first segment reaching FAR <= FRR
    meets the diagonal FAR = FRR; the threshold is interpolated linearly
    between the segment's two thresholds at the same fraction. When a ROC
    point lies exactly on the diagonal, that is the first such point: its
    threshold and rate are returned exactly (e.g. genuine [0.9, 0.8, 0.7],
    impostor [0.1, 0.2, 0.75] give EER 1/3 at threshold 0.75).

    Args:
      genuine: Float[ArrayLike, "m"] scores of mated pairs.
      impostor: Float[ArrayLike, "n"] scores of non-mated pairs.

    Returns:
      (eer, threshold) as floats; eer in [0, 1].

    Raises:
      ValueError: a score set is empty or holds NaN or infinite values.
    """
    genuine, impostor = _scores(genuine, "genuine"), _scores(impostor, "impostor")
    thresholds, false_accepts, false_rejects = _error_counts(genuine, impostor)
    thresholds = np.append(thresholds, _above(thresholds[-1]))
    false_accepts = np.append(false_accepts, 0)
    false_rejects = np.append(false_rejects, genuine.size)
    # FAR - FRR in integer units (counts times the other set's size), so the
    # crossing is found without rounding; it is positive at the lowest score
    # (FRR = 0 there, FAR > 0) and negative or zero at the closing point.
    gap = false_accepts * genuine.size - false_rejects * impostor.size
    i = int(np.argmax(gap <= 0))
    fraction = gap[i - 1] / (gap[i - 1] - gap[i])
    far = false_accepts / impostor.size
    eer = far[i - 1] + fraction * (far[i] - far[i - 1])
    threshold = thresholds[i - 1] + fraction * (thresholds[i] - thresholds[i - 1])
    return float(eer), float(threshold)


def calibrate_threshold(genuine: ArrayLike, impostor: ArrayLike, *, far: float | None = None) -> float:
    """A decision threshold: at the EER, or at a target false accept rate.

    Args:
      genuine: Float[ArrayLike, "m"] scores of mated pairs.
      impostor: Float[ArrayLike, "n"] scores of non-mated pairs.
      far: None for the EER threshold (`equal_error_rate`); else a target FAR
        in [0, 1]: the smallest ROC threshold (a distinct score) whose FAR is
        <= far, which has the lowest FRR among them. When only accepting
        nothing reaches it (the highest score is an impostor's and far is
        below its share), the next float above the highest score.

    Returns:
      The threshold: accept when score >= threshold.

    Raises:
      ValueError: bad scores, or far not a number in [0, 1].
    """
    if far is None:
        return equal_error_rate(genuine, impostor)[1]
    if isinstance(far, bool) or not isinstance(far, (int, float)) or not 0 <= far <= 1:
        raise ValueError(f"far must be a number in [0, 1] or None, got {far!r}")
    roc = roc_curve(genuine, impostor)
    reached = np.flatnonzero(roc.far <= far)
    if reached.size == 0:
        return _above(roc.thresholds[-1])
    return float(roc.thresholds[reached[0]])


def verification_accuracy(genuine: ArrayLike, impostor: ArrayLike, threshold: float) -> float:
    """Balanced accuracy at a threshold: the mean of the two correct rates.

    Args:
      genuine: Float[ArrayLike, "m"] scores of mated pairs.
      impostor: Float[ArrayLike, "n"] scores of non-mated pairs.
      threshold: accept when score >= threshold.

    Returns:
      (fraction of genuine accepted + fraction of impostors rejected) / 2,
      i.e. 1 - (FAR + FRR) / 2; it does not depend on the sets' sizes.

    Raises:
      ValueError: bad scores, or a threshold that is not a finite number.
    """
    genuine, impostor = _scores(genuine, "genuine"), _scores(impostor, "impostor")
    value = np.asarray(threshold)
    if (isinstance(threshold, bool) or value.ndim != 0
            or not np.issubdtype(value.dtype, np.number) or not np.isfinite(value)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    accepted = np.mean(genuine >= threshold)
    rejected = np.mean(impostor < threshold)
    return float((accepted + rejected) / 2)


def _scores(scores, name: str) -> np.ndarray:
    """Validated float64 scores, flattened."""
    try:
        scores = np.asarray(scores, dtype=np.float64).ravel()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} scores are not numbers: {err}") from None
    if scores.size == 0:
        raise ValueError(f"{name} scores are empty")
    bad = int(np.count_nonzero(~np.isfinite(scores)))
    if bad:
        raise ValueError(f"{name} scores hold {bad} NaN or infinite value(s) "
                         f"of {scores.size}")
    return scores


def _error_counts(genuine: np.ndarray, impostor: np.ndarray):
    """(distinct scores, impostors >= each, genuine < each) as arrays."""
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    false_accepts = impostor.size - np.searchsorted(np.sort(impostor), thresholds,
                                                    side="left")
    false_rejects = np.searchsorted(np.sort(genuine), thresholds, side="left")
    return thresholds, false_accepts, false_rejects


def _above(score: float) -> float:
    """The smallest threshold that rejects every score <= `score`."""
    return float(np.nextafter(score, np.inf))
