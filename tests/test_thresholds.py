"""ROC, EER, calibrated thresholds and accuracy against hand-made and brute-force answers."""

import numpy as np
import pytest

from srise_jax.thresholds import (calibrate_threshold, equal_error_rate, roc_curve,
                                  verification_accuracy)

# Worked by hand: at t = 0.75 one impostor (0.75) is accepted and one genuine
# (0.7) rejected, FAR = FRR = 1/3; every lower threshold has FAR > FRR.
GENUINE = [0.9, 0.8, 0.7]
IMPOSTOR = [0.1, 0.2, 0.75]


def _brute_force_roc(genuine, impostor):
    """FAR/FRR by looping over every distinct score, independent of searchsorted."""
    thresholds = sorted(set(genuine) | set(impostor))
    far = [sum(s >= t for s in impostor) / len(impostor) for t in thresholds]
    frr = [sum(s < t for s in genuine) / len(genuine) for t in thresholds]
    return np.array(thresholds), np.array(far), np.array(frr)


def _random_scores(seed, *, ties=False):
    rng = np.random.default_rng(seed)
    genuine = rng.normal(0.6, 0.15, rng.integers(5, 60))
    impostor = rng.normal(0.2, 0.15, rng.integers(5, 200))
    if ties:  # rounding creates shared scores within and across the sets
        genuine, impostor = np.round(genuine, 1), np.round(impostor, 1)
    return genuine, impostor


def test_roc_curve_hand_made_scores():
    roc = roc_curve(GENUINE, IMPOSTOR)
    np.testing.assert_allclose(roc.thresholds, [0.1, 0.2, 0.7, 0.75, 0.8, 0.9])
    np.testing.assert_allclose(roc.far, [1, 2 / 3, 1 / 3, 1 / 3, 0, 0])
    np.testing.assert_allclose(roc.frr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3])


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_roc_curve_matches_brute_force(seed, ties):
    genuine, impostor = _random_scores(seed, ties=ties)
    roc = roc_curve(genuine, impostor)
    thresholds, far, frr = _brute_force_roc(genuine.tolist(), impostor.tolist())
    np.testing.assert_array_equal(roc.thresholds, thresholds)
    np.testing.assert_allclose(roc.far, far, rtol=0, atol=1e-12)
    np.testing.assert_allclose(roc.frr, frr, rtol=0, atol=1e-12)


def test_equal_error_rate_hand_made_scores():
    eer, threshold = equal_error_rate(GENUINE, IMPOSTOR)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.75)


def test_equal_error_rate_separable_scores_is_zero_at_lowest_separating_threshold():
    eer, threshold = equal_error_rate([0.9, 0.8], [0.1, 0.2])
    assert eer == 0.0
    assert threshold == pytest.approx(0.8)


def test_equal_error_rate_interpolates_between_roc_points():
    # t = 0.5: FAR 1, FRR 1/2; t = 0.9: FAR 0, FRR 1/2. The segment from
    # (1, 1/2) to (0, 1/2) meets FAR = FRR halfway: EER 1/2, threshold 0.7.
    eer, threshold = equal_error_rate([0.4, 0.9], [0.5])
    assert eer == pytest.approx(1 / 2)
    assert threshold == pytest.approx(0.7)


def test_equal_error_rate_identical_scores_is_one_half():
    eer, threshold = equal_error_rate([1.0], [1.0])
    assert eer == pytest.approx(0.5)
    assert threshold == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_equal_error_rate_lies_between_brute_force_bracket(seed):
    # Independent check: the first threshold with FAR <= FRR and the one
    # before bracket the crossing, so the EER lies between the two ROC
    # points' FAR and FRR values and the threshold between their thresholds.
    genuine, impostor = _random_scores(seed, ties=seed % 2 == 1)
    thresholds, far, frr = _brute_force_roc(genuine.tolist(), impostor.tolist())
    i = int(np.argmax(far <= frr))
    eer, threshold = equal_error_rate(genuine, impostor)
    assert thresholds[i - 1] <= threshold <= thresholds[i]
    assert min(frr[i - 1], far[i]) - 1e-12 <= eer <= max(far[i - 1], frr[i]) + 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_calibrate_threshold_far_001_is_smallest_reaching_target(seed):
    rng = np.random.default_rng(seed)
    genuine, impostor = rng.normal(0.6, 0.15, 300), rng.normal(0.2, 0.15, 2000)
    threshold = calibrate_threshold(genuine, impostor, far=0.01)
    assert np.mean(impostor >= threshold) <= 0.01
    # Every smaller candidate threshold (distinct score) misses the target.
    smaller = np.unique(np.concatenate([genuine, impostor]))
    smaller = smaller[smaller < threshold]
    assert all(np.mean(impostor >= t) > 0.01 for t in smaller[-50:])
    assert np.mean(impostor >= smaller[-1]) > 0.01


def test_calibrate_threshold_default_is_eer_threshold():
    assert calibrate_threshold(GENUINE, IMPOSTOR) == equal_error_rate(GENUINE, IMPOSTOR)[1]


def test_calibrate_threshold_zero_far_above_top_impostor():
    # The top score is an impostor's: only a threshold above it has FAR 0.
    threshold = calibrate_threshold([0.5, 0.6], [0.1, 0.9], far=0.0)
    assert threshold > 0.9 and threshold == np.nextafter(0.9, 1.0)
    assert calibrate_threshold(GENUINE, IMPOSTOR, far=0.0) == 0.8


def test_verification_accuracy_is_balanced():
    # At 0.75: genuine 2/3 accepted, impostors 2/3 rejected.
    assert verification_accuracy(GENUINE, IMPOSTOR, 0.75) == pytest.approx(2 / 3)
    # Ten times more impostors, all rejected, do not outweigh the genuine.
    assert verification_accuracy([0.9, 0.1], [0.0] * 20, 0.5) == pytest.approx(0.75)
    assert verification_accuracy(GENUINE, IMPOSTOR, 0.8) == pytest.approx(
        1 - (0 + 1 / 3) / 2)


@pytest.mark.parametrize("function", [roc_curve, equal_error_rate,
                                      calibrate_threshold])
@pytest.mark.parametrize("genuine, impostor, message", [
    ([], [0.1], "genuine scores are empty"),
    ([0.5], [], "impostor scores are empty"),
    ([0.5, np.nan], [0.1], "genuine scores hold 1 NaN"),
    ([0.5], [np.inf, 0.2], "impostor scores hold 1 NaN or infinite"),
])
def test_bad_scores_raise_clear_errors(function, genuine, impostor, message):
    with pytest.raises(ValueError, match=message):
        function(genuine, impostor)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="far must be a number in"):
        calibrate_threshold(GENUINE, IMPOSTOR, far=1.5)
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        verification_accuracy(GENUINE, IMPOSTOR, float("nan"))
    with pytest.raises(ValueError, match="genuine scores are empty"):
        verification_accuracy([], IMPOSTOR, 0.5)
